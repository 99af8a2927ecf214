/* common/streams/fspec_state.c: runs a compiled feature plan (common/streams/fspec.c):
 * the vector of one record, the entity state's update and its encoding.
 *
 * The order of floating-point operations is part of the contract (vectors
 * bit-identical online and offline and to the hard-coded txn-v1 module the
 * spec replaced), so sums are accumulated in slot order and never folded.
 */
#include <endian.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "fspec.h"
#include "fspec_int.h"

/* ---- evaluation ---- */

static int64_t rec_time(const struct fspec *p, const void *rec)
{
    int64_t t;

    if (p->bound == 2)
        return ((const struct fspec_row *)rec)->time_ms;
    memcpy(&t, (const char *)rec + p->time_off, sizeof(t));
    return t;
}

static double load_num(const struct load *l, const void *rec)
{
    double d;
    int v;
    int64_t i;

    switch (l->kind) {
    case FSPEC_F64:
        memcpy(&d, (const char *)rec + l->off, sizeof(d));
        return d;
    case FSPEC_TRI:
        memcpy(&v, (const char *)rec + l->off, sizeof(v));
        return v == 1 ? 1.0 : v == 0 ? 0.0 : NAN;
    case FSPEC_I64:
        memcpy(&i, (const char *)rec + l->off, sizeof(i));
        return (double)i;
    default:
        return ((const struct fspec_row *)rec)->num[l->off];
    }
}

static const char *load_str(const struct codes *cd, const void *rec)
{
    if (cd->off >= (size_t)-1 - FS_FIELD_MAX) /* a struct fspec_row */
        return ((const struct fspec_row *)rec)->str + ((size_t)-1 - cd->off) * FSPEC_NAME_MAX;
    return (const char *)rec + cd->off;
}

static void load_all(const struct fspec *p, const void *rec, double *r)
{
    const char *base = rec;
    int i;

    for (i = 0; i < p->nf64; i++) /* the common case, without a switch */
        memcpy(&r[p->loads[i].reg], base + p->loads[i].off, sizeof(double));
    for (; i < p->nload; i++)
        r[p->loads[i].reg] = load_num(&p->loads[i], rec);
    for (i = 0; i < p->nconst; i++)
        r[p->const_reg[i]] = p->const_k[i];
    r[0] = 0;
}

/* Floor division, so bucket ids stay right for times before the epoch. */
static int64_t bucket_of(int64_t t_ms, int64_t width)
{
    return t_ms >= 0 ? t_ms / width : -((-t_ms + width - 1) / width);
}

/* The same, exact, with a multiplication by 1/b and a correction instead of
 * a 64-bit division (several per event and ring: they dominated the cost). */
static inline int64_t floor_div(int64_t a, int64_t b, double inv_b)
{
    int64_t q, rem;

    if (a < 0 || a > (1LL << 52))
        return bucket_of(a, b);
    q = (int64_t)((double)a * inv_b); /* off by at most one below 2^52 */
    rem = a - q * b;
    return rem < 0 ? q - 1 : rem >= b ? q + 1 : q;
}

/* A window: the event's own bucket and the n-1 before it, from the prior
 * ring, plus the event itself (a missing value adds nothing). */
static void eval_ring_slow(const struct ring *g, const struct fspec_state *s, int64_t t, double *r);

/* The usual ring (a count and at most one sum): the same sums in the same
 * order as eval_ring, without its per-column branches. */
static void eval_ring_sum(const struct ring *g, const struct fspec_state *s, int64_t t, double *r)
{
    const union fspec_word *b = s->w + g->word0;
    int64_t cur = floor_div(t, g->width, g->inv_width);
    const size_t stride = (size_t)g->stride;
    const union fspec_word *end = b + (size_t)g->n * stride;
    const uint64_t n = (uint64_t)g->n;
    double count = 1, sum = 0;
    int has_sum = g->ncols == 1;

    if (has_sum && !isnan(r[g->cols[0].reg_v]))
        sum = r[g->cols[0].reg_v];
    if (cur < g->n) { /* near the epoch: id 0 (an empty slot) would pass the test below */
        eval_ring_slow(g, s, t, r);
        return;
    }
    /* in the window: lo < id <= cur, as one unsigned compare (an empty slot,
     * id 0, is out since cur >= n); counts saturate at UINT32_MAX */
    if (has_sum) {
        for (; b < end; b += stride)
            if ((uint64_t)(cur - b[0].i) < n) {
                count += (double)(uint32_t)b[1].u;
                sum += b[2].d;
            }
    } else {
        for (; b < end; b += stride)
            if ((uint64_t)(cur - b[0].i) < n)
                count += (double)(uint32_t)b[1].u;
    }
    if (has_sum)
        r[g->cols[0].r_sum] = sum;
    if (g->r_count >= 0)
        r[g->r_count] = count;
}

static void eval_ring(const struct ring *g, const struct fspec_state *s, int64_t t, double *r)
{
    if (g->ncols == 0 || (g->ncols == 1 && g->cols[0].flags == C_SUM))
        eval_ring_sum(g, s, t, r);
    else
        eval_ring_slow(g, s, t, r);
}

static void eval_ring_slow(const struct ring *g, const struct fspec_state *s, int64_t t, double *r)
{
    const union fspec_word *b = s->w + g->word0;
    int64_t cur = bucket_of(t, g->width);
    double count = 1;

    for (int k = 0; k < g->ncols; k++) {
        const struct col *c = &g->cols[k];
        double v = r[c->reg_v];
        int miss = isnan(v);
        if (c->r_sum >= 0)
            r[c->r_sum] = miss ? 0 : v;
        if (c->r_n >= 0)
            r[c->r_n] = miss ? 0 : 1;
        if (c->r_sq >= 0)
            r[c->r_sq] = miss ? 0 : v * v;
        if (c->r_min >= 0)
            r[c->r_min] = v;
        if (c->r_max >= 0)
            r[c->r_max] = v;
    }
    for (int i = 0; i < g->n; i++, b += g->stride) {
        const union fspec_word *w;
        if (!(b[0].i != 0 && b[0].i <= cur && b[0].i > cur - g->n))
            continue;
        count += (double)(uint32_t)b[1].u;
        w = b + 2;
        for (int k = 0; k < g->ncols; k++) {
            const struct col *c = &g->cols[k];
            if (c->flags & C_SUM)
                r[c->r_sum] += (w++)->d;
            if (c->flags & C_N)
                r[c->r_n] += (w++)->d;
            if (c->flags & C_SQ)
                r[c->r_sq] += (w++)->d;
            if (c->flags & C_MIN)
                r[c->r_min] = fmin(r[c->r_min], (w++)->d);
            if (c->flags & C_MAX)
                r[c->r_max] = fmax(r[c->r_max], (w++)->d);
        }
    }
    if (g->r_count >= 0)
        r[g->r_count] = count;
}

static double codes_of(const struct codes *cd, const void *rec)
{
    const char *s = load_str(cd, rec);

    if (s[0] == '\0')
        return cd->missing;
    /* bounded by the field's size: safe on an unterminated field */
    for (int i = 0; i < cd->ncats; i++)
        if (strncasecmp(s, cd->cats[i], cd->cap) == 0)
            return cd->code[i];
    return cd->unknown;
}

/* The operations that are not plain arithmetic, out of the hot loop. */
static double run_rare(const struct fspec *p, const struct ins *in, const double *r,
                       const void *rec, const struct fspec_state *s, int64_t t)
{
    double a = r[in->a], b = r[in->b];

    switch (in->op) {
    case OP_LOG:
        return isnan(a) || a <= 0 ? NAN : log(a);
    case OP_LOG1P:
        return isnan(a) || a <= -1 ? NAN : log1p(a);
    case OP_ABS:
        return fabs(a);
    case OP_SQRT:
        return isnan(a) || a < 0 ? NAN : sqrt(a);
    case OP_CLIP:
        return isnan(a) ? NAN : a < b ? b : a > r[in->c] ? r[in->c] : a;
    case OP_MIN:
        return isnan(a) || isnan(b) ? NAN : a < b ? a : b;
    case OP_MAX:
        return isnan(a) || isnan(b) ? NAN : a > b ? a : b;
    case OP_COALESCE:
        return isnan(a) ? b : a;
    case OP_ISMISSING:
        return isnan(a) ? 1.0 : 0.0;
    case OP_CODES:
        return codes_of(&p->codes[in->aux], rec);
    case OP_MEAN2: /* sum / present count */
        return b > 0 ? a / b : NAN;
    case OP_STD3: { /* sample std from n, sum, sum of squares */
        double n = a, v;
        if (n < 2)
            return NAN;
        v = (r[in->c] - b * b / n) / (n - 1);
        return v > 0 ? sqrt(v) : 0;
    }
    case OP_SINCE:
        return s->last_event_ms == 0 ? NAN
                                     : fmax(0.0, (double)(t - s->last_event_ms) / 1000.0);
    case OP_ZSCORE: {
        const union fspec_word *m = s->w + p->moms[in->aux].word0;
        double sd = NAN;
        if (m[0].u >= 2)
            sd = sqrt(m[2].d / (double)(m[0].u - 1));
        return !isnan(a) && sd > 0 ? (a - m[1].d) / sd : NAN;
    }
    case OP_LAST: /* present flag, value */
        return s->w[p->lasts[in->aux].word0].u ? s->w[p->lasts[in->aux].word0 + 1].d : NAN;
    default:
        return NAN;
    }
}

/* x[i] = (float)d[i]: cvtpd2ps rounds like the scalar conversion (by
 * MXCSR, round to nearest) and keeps NaN as NaN, so the bits are equal. */
static void to_float(const double *d, int n, float *x)
{
    int i = 0;

#ifdef __SSE2__
    for (; i + 2 <= n; i += 2)
        _mm_storel_pi((__m64 *)(void *)(x + i), _mm_cvtpd_ps(_mm_loadu_pd(d + i)));
#endif
    for (; i < n; i++)
        x[i] = (float)d[i];
}

void fspec_build(const struct fspec *p, const void *rec, const struct fspec_state *prior, float *x)
{
    double r[REG_MAX];
    int64_t t = rec_time(p, rec);
    const struct ins *in = p->ins, *end = p->ins + p->nins;

    load_all(p, rec, r);
    for (int g = 0; g < p->nring; g++)
        eval_ring(&p->rings[g], prior, t, r);
    /* Threaded dispatch (labels as values, GCC and clang): one indirect jump
     * per operation, predicted per site; a quarter of the plan's cost. */
    static const void *const jump[OP_LAST + 1] = {
        [OP_FIELD] = &&rare, [OP_CONST] = &&rare, [OP_ADD] = &&add,  [OP_SUB] = &&sub,
        [OP_MUL] = &&mul,    [OP_DIV] = &&div,    [OP_NEG] = &&neg,  [OP_GT] = &&gt,
        [OP_GE] = &&ge,      [OP_LT] = &&lt,      [OP_LE] = &&le,    [OP_EQ] = &&eq,
        [OP_NE] = &&ne,      [OP_LOG] = &&rare,   [OP_LOG1P] = &&rare, [OP_ABS] = &&rare,
        [OP_SQRT] = &&rare,  [OP_CLIP] = &&rare,  [OP_MIN] = &&rare, [OP_MAX] = &&rare,
        [OP_COALESCE] = &&rare, [OP_ISMISSING] = &&rare, [OP_CODES] = &&rare,
        [OP_MEAN2] = &&rare, [OP_STD3] = &&rare,  [OP_SINCE] = &&rare, [OP_ZSCORE] = &&rare,
        [OP_LAST] = &&rare};
    double a, b;

#define A_B (a = r[in->a], b = r[in->b]) /* register 0 for an unused operand */
#define NEXT                                                                                       \
    do {                                                                                           \
        if (++in == end)                                                                           \
            goto done;                                                                             \
        goto *jump[in->op];                                                                        \
    } while (0)
    if (in == end)
        goto done;
    goto *jump[in->op];
add:
    A_B, r[in->dst] = a + b;
    NEXT;
sub:
    A_B, r[in->dst] = a - b;
    NEXT;
mul:
    A_B, r[in->dst] = a * b;
    NEXT;
div: /* no ratio exists: NaN, never Inf */
    A_B, r[in->dst] = isnan(a) || isnan(b) || b == 0 ? NAN : a / b;
    NEXT;
neg:
    r[in->dst] = -r[in->a];
    NEXT;
gt:
    A_B, r[in->dst] = isnan(a) || isnan(b) ? NAN : a > b ? 1.0 : 0.0;
    NEXT;
ge:
    A_B, r[in->dst] = isnan(a) || isnan(b) ? NAN : a >= b ? 1.0 : 0.0;
    NEXT;
lt:
    A_B, r[in->dst] = isnan(a) || isnan(b) ? NAN : a < b ? 1.0 : 0.0;
    NEXT;
le:
    A_B, r[in->dst] = isnan(a) || isnan(b) ? NAN : a <= b ? 1.0 : 0.0;
    NEXT;
eq:
    A_B, r[in->dst] = isnan(a) || isnan(b) ? NAN : a == b ? 1.0 : 0.0;
    NEXT;
ne:
    A_B, r[in->dst] = isnan(a) || isnan(b) ? NAN : a != b ? 1.0 : 0.0;
    NEXT;
rare:
    r[in->dst] = run_rare(p, in, r, rec, prior, t);
    NEXT;
#undef A_B
#undef NEXT
done:
    if (p->out_direct) /* outputs in registers 1..dim: converted two at a time */
        to_float(r + 1, p->dim, x);
    else
        for (int i = 0; i < p->dim; i++)
            x[i] = (float)r[p->out_reg[i]];
}

void fspec_state_init(struct fspec_state *s)
{
    memset(s, 0, sizeof(*s));
}

/* Adds the event to its bucket of ring g, unless the bucket has already
 * left the ring (the late-event policy, FEATURES.md). */
static void ring_add(const struct ring *g, struct fspec_state *s, int64_t t, const double *r)
{
    int64_t id = floor_div(t, g->width, g->inv_width);
    int64_t newest = floor_div(s->last_event_ms, g->width, g->inv_width);
    int64_t slot = id >= 0 ? id - floor_div(id, g->n, g->inv_n) * g->n : ((id % g->n) + g->n) % g->n;
    union fspec_word *b = s->w + g->word0 + (size_t)slot * g->stride;
    union fspec_word *w = b + 2;

    if (s->last_event_ms != 0 && id <= newest - g->n)
        return;
    if (b[0].i != 0 && b[0].i > id)
        return; /* only in a corrupt state: never overwrite newer data */
    if (b[0].i != id) {
        b[0].i = id;
        b[1].u = 0;
        for (int k = 2; k < g->stride; k++)
            b[k].d = 0;
        for (int k = 0; k < g->ncols; k++) {
            const struct col *c = &g->cols[k];
            union fspec_word *cw = w;
            cw += !!(c->flags & C_SUM) + !!(c->flags & C_N) + !!(c->flags & C_SQ);
            if (c->flags & C_MIN)
                (cw++)->d = NAN;
            if (c->flags & C_MAX)
                (cw++)->d = NAN;
            w += c->nw;
        }
        w = b + 2;
    }
    if (b[1].u < UINT32_MAX)
        b[1].u++;
    for (int k = 0; k < g->ncols; k++) {
        const struct col *c = &g->cols[k];
        double v = r[c->reg_v];
        if (!isnan(v)) {
            union fspec_word *cw = w;
            if (c->flags & C_SUM)
                (cw++)->d += v;
            if (c->flags & C_N)
                (cw++)->d += 1;
            if (c->flags & C_SQ)
                (cw++)->d += v * v;
            if (c->flags & C_MIN)
                cw->d = fmin(cw->d, v), cw++;
            if (c->flags & C_MAX)
                cw->d = fmax(cw->d, v);
        }
        w += c->nw;
    }
}

void fspec_update(const struct fspec *p, const void *rec, const struct fspec_state *prior,
                  struct fspec_state *next)
{
    double r[REG_MAX]; /* only the loaded fields' registers are used */
    int64_t t = rec_time(p, rec);

    if (next != prior)
        *next = *prior;
    for (int i = 0; i < p->nagg_load; i++) /* only the fields the aggregates read */
        r[p->loads[p->agg_load[i]].reg] = load_num(&p->loads[p->agg_load[i]], rec);
    for (int g = 0; g < p->nring; g++)
        ring_add(&p->rings[g], next, t, r);
    for (int i = 0; i < p->nmom; i++) {
        union fspec_word *m = next->w + p->moms[i].word0;
        double v = r[p->moms[i].reg_v];
        if (!isnan(v)) {
            /* Welford: stable running mean and sum of squared deviations. */
            double delta = v - m[1].d;
            m[0].u++;
            m[1].d += delta / (double)m[0].u;
            m[2].d += delta * (v - m[1].d);
        }
    }
    for (int i = 0; i < p->nlast; i++) {
        union fspec_word *m = next->w + p->lasts[i].word0;
        double v = r[p->lasts[i].reg_v];
        if (!isnan(v) && (t >= next->last_event_ms || next->last_event_ms == 0)) {
            /* a late event is not the last */
            m[0].u = 1;
            m[1].d = v;
        }
    }
    /* 0 means "no event yet": the first event sets it even before 1970 */
    if (t > next->last_event_ms || next->last_event_ms == 0)
        next->last_event_ms = t;
}

/* ---- encoding: version, layout hash, then little-endian fields ----
 *
 *   u8 version (2) | u32 layout hash | varint last_event_ms |
 *   per z-scored field: varint n | f64 mean | f64 m2 |
 *   per last-value field: u8 present [| f64 value] |
 *   per ring: u8 k, then k x (varint newest bucket - id | varint count | f64 x columns)
 *
 * Only used buckets are written; a bucket's id is stored as its distance
 * from the newest bucket (one byte in practice) and its slot is id % n.
 * Written byte by byte: the same blob on any host.
 */

static unsigned char *put_varint(unsigned char *q, uint64_t v)
{
    while (v >= 0x80) {
        *q++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *q++ = (unsigned char)v;
    return q;
}

/* Little-endian on every host (htole64/le64toh), one 8-byte copy. */
static unsigned char *put_u64(unsigned char *q, uint64_t v)
{
    v = htole64(v);
    memcpy(q, &v, sizeof(v));
    return q + 8;
}

static unsigned char *put_f64(unsigned char *q, double d)
{
    uint64_t v;

    memcpy(&v, &d, sizeof(v));
    return put_u64(q, v);
}

static size_t encoded_size(const struct fspec *p, const struct fspec_state *s)
{
    size_t n = 1 + 4 + 10 + (size_t)p->nmom * 26 + (size_t)p->nlast * 9 + FS_TRAILER_MAX;

    for (int g = 0; g < p->nring; g++) {
        const struct ring *r = &p->rings[g];
        n += 1;
        for (int i = 0; i < r->n; i++)
            if (s->w[r->word0 + i * r->stride].i != 0)
                n += 10 + 5 + 8 * (size_t)(r->stride - 2);
    }
    return n; /* an upper bound: varints are counted at their longest */
}

int fspec_state_encode(const struct fspec *p, const struct fspec_state *s, unsigned char *buf,
                       size_t cap)
{
    unsigned char tmp[FSPEC_STATE_MAX + 64], *q = tmp;

    if (encoded_size(p, s) > sizeof(tmp))
        return ERR_NOMEM;
    *q++ = FS_STATE_VERSION;
    for (int i = 0; i < 4; i++)
        *q++ = (unsigned char)(p->layout_hash >> (8 * i));
    q = put_varint(q, (uint64_t)s->last_event_ms);
    for (int i = 0; i < p->nmom; i++) {
        const union fspec_word *m = s->w + p->moms[i].word0;
        q = put_varint(q, m[0].u);
        q = put_f64(put_f64(q, m[1].d), m[2].d);
    }
    for (int i = 0; i < p->nlast; i++) {
        const union fspec_word *m = s->w + p->lasts[i].word0;
        *q++ = (unsigned char)(m[0].u != 0);
        if (m[0].u)
            q = put_f64(q, m[1].d);
    }
    for (int g = 0; g < p->nring; g++) {
        const struct ring *r = &p->rings[g];
        int64_t newest = bucket_of(s->last_event_ms, r->width);
        unsigned char *k = q++;
        *k = 0;
        for (int i = 0; i < r->n; i++) {
            const union fspec_word *b = s->w + r->word0 + i * r->stride;
            if (b[0].i == 0)
                continue;
            (*k)++;
            q = put_varint(q, (uint64_t)(newest - b[0].i));
            q = put_varint(q, b[1].u);
            for (int j = 2; j < r->stride; j++)
                q = put_f64(q, b[j].d);
        }
    }
    /* delivery trailer: u8 np, np x (i32 partition | i64 offset), u8 ni, ni x (u64 | i64) */
    *q++ = (unsigned char)s->n_parts;
    for (int i = 0; i < s->n_parts; i++) {
        for (int j = 0; j < 4; j++)
            *q++ = (unsigned char)((uint32_t)s->parts[i].partition >> (8 * j));
        q = put_u64(q, (uint64_t)s->parts[i].offset);
    }
    *q++ = (unsigned char)s->n_ids;
    for (int i = 0; i < s->n_ids; i++) {
        q = put_u64(q, s->ids[i].id_hash);
        q = put_u64(q, (uint64_t)s->ids[i].time_ms);
    }
    if ((size_t)(q - tmp) > cap)
        return ERR_NOMEM;
    memcpy(buf, tmp, (size_t)(q - tmp));
    return (int)(q - tmp);
}

struct rd {
    const unsigned char *b;
    size_t len, pos;
    int bad;
};

static uint64_t get_varint(struct rd *r)
{
    uint64_t v = 0;

    for (int sh = 0; sh < 64; sh += 7) {
        unsigned char c;
        if (r->pos >= r->len)
            break;
        c = r->b[r->pos++];
        v |= (uint64_t)(c & 0x7f) << sh;
        if (!(c & 0x80))
            return v;
    }
    r->bad = 1;
    return 0;
}

static double get_f64(struct rd *r)
{
    uint64_t v = 0;
    double d;

    if (r->pos + 8 > r->len) {
        r->bad = 1;
        return 0;
    }
    memcpy(&v, r->b + r->pos, sizeof(v));
    v = le64toh(v);
    r->pos += 8;
    memcpy(&d, &v, sizeof(d));
    return d;
}

static int get_ring(const struct fspec *p, int g, struct fspec_state *s, struct rd *r,
                    struct err *e)
{
    const struct ring *rg = &p->rings[g];
    int64_t newest = bucket_of(s->last_event_ms, rg->width);
    /* newest's slot, once: a bucket d behind it (d < n, as encoded) is at
     * newest_slot - d modulo n, without two divisions per bucket */
    int64_t newest_slot = ((newest % rg->n) + rg->n) % rg->n;
    int k;

    if (r->pos >= r->len)
        return err_set(e, ERR_DECODE, "feature state: truncated at byte %zu", r->pos);
    k = r->b[r->pos++];
    if (k > rg->n || (k && s->last_event_ms == 0))
        return err_set(e, ERR_DECODE, "feature state: ring %d claims %d buckets", g, k);
    for (int i = 0; i < k; i++) {
        uint64_t d = get_varint(r), c = get_varint(r);
        int64_t id = d < (1ULL << 62) ? newest - (int64_t)d : 0;
        int64_t slot = d < (uint64_t)rg->n
                           ? newest_slot - (int64_t)d + (newest_slot < (int64_t)d ? rg->n : 0)
                           : ((id % rg->n) + rg->n) % rg->n;
        union fspec_word *b = id != 0 ? s->w + rg->word0 + slot * rg->stride : NULL;
        if (r->bad || !b || b[0].i != 0 || c > UINT32_MAX)
            return err_set(e, ERR_DECODE, "feature state: bad bucket %d of ring %d", i, g);
        b[0].i = id;
        b[1].u = c;
        for (int j = 2, kc = 0; kc < rg->ncols; kc++)
            for (int f = 0; f < 5; f++) {
                if (!(rg->cols[kc].flags & (1 << f)))
                    continue;
                b[j].d = get_f64(r);
                /* only min and max may be NaN (no value in the bucket yet) */
                if (isinf(b[j].d) || (isnan(b[j].d) && (1 << f) < C_MIN))
                    r->bad = 1;
                j++;
            }
        if (r->bad)
            return err_set(e, ERR_DECODE, "feature state: bad bucket %d of ring %d", i, g);
    }
    return ERR_OK;
}

static uint64_t get_u64(struct rd *r)
{
    uint64_t v = 0;

    if (r->pos + 8 > r->len) {
        r->bad = 1;
        return 0;
    }
    memcpy(&v, r->b + r->pos, sizeof(v));
    r->pos += 8;
    return le64toh(v);
}

/* The delivery bookkeeping after the aggregates (fspec_state_encode). */
static int get_trailer(struct fspec_state *s, struct rd *r, struct err *e)
{
    int k;

    if (r->pos >= r->len || (k = r->b[r->pos++]) > FSPEC_PARTS_MAX)
        return err_set(e, ERR_DECODE, "feature state: bad partition offsets at byte %zu", r->pos);
    for (int i = 0; i < k; i++) {
        uint32_t part = 0;
        for (int j = 0; j < 4 && r->pos < r->len; j++)
            part |= (uint32_t)r->b[r->pos++] << (8 * j);
        s->parts[i].partition = (int32_t)part;
        s->parts[i].offset = (int64_t)get_u64(r);
    }
    s->n_parts = k;
    if (r->bad || r->pos >= r->len || (k = r->b[r->pos++]) > FSPEC_IDS_MAX)
        return err_set(e, ERR_DECODE, "feature state: bad event ids at byte %zu", r->pos);
    for (int i = 0; i < k; i++) {
        s->ids[i].id_hash = get_u64(r);
        s->ids[i].time_ms = (int64_t)get_u64(r);
    }
    s->n_ids = k;
    if (r->bad)
        return err_set(e, ERR_DECODE, "feature state: truncated event ids");
    return ERR_OK;
}

int fspec_state_decode(const struct fspec *p, struct fspec_state *s, const unsigned char *buf,
                       size_t len, struct err *e)
{
    struct rd r = {.b = buf, .len = len, .pos = 5};
    uint32_t h = 0;

    fspec_state_init(s);
    if (len < 6)
        return err_set(e, ERR_DECODE, "feature state: %zu bytes, need at least 6", len);
    if (buf[0] != FS_STATE_VERSION)
        return err_set(e, ERR_DECODE, "feature state: version %u, expected %d", buf[0],
                       FS_STATE_VERSION);
    for (int i = 0; i < 4; i++)
        h |= (uint32_t)buf[1 + i] << (8 * i);
    if (h != p->layout_hash)
        return err_set(e, ERR_DECODE,
                       "feature state: written under state layout %08x, %s has %08x (its "
                       "aggregates changed: the entity starts afresh)",
                       h, p->a.name, p->layout_hash);
    s->last_event_ms = (int64_t)get_varint(&r);
    for (int i = 0; i < p->nmom && !r.bad; i++) {
        union fspec_word *m = s->w + p->moms[i].word0;
        m[0].u = get_varint(&r);
        m[1].d = get_f64(&r);
        m[2].d = get_f64(&r);
        if (!isfinite(m[1].d) || !(m[2].d >= 0) || !isfinite(m[2].d))
            r.bad = 1;
    }
    for (int i = 0; i < p->nlast && !r.bad; i++) {
        union fspec_word *m = s->w + p->lasts[i].word0;
        if (r.pos >= r.len || r.b[r.pos] > 1) {
            r.bad = 1;
            break;
        }
        if ((m[0].u = r.b[r.pos++]) && !isfinite(m[1].d = get_f64(&r)))
            r.bad = 1;
    }
    if (r.bad) /* last_event_ms may be negative: events before 1970 */
        return err_set(e, ERR_DECODE, "feature state: impossible header values");
    for (int g = 0; g < p->nring; g++)
        if (get_ring(p, g, s, &r, e))
            return ERR_DECODE;
    if (get_trailer(s, &r, e))
        return ERR_DECODE;
    if (r.pos != len)
        return err_set(e, ERR_DECODE, "feature state: %zu trailing bytes", len - r.pos);
    return ERR_OK;
}

int fspec_state_moments(const struct fspec *p, const struct fspec_state *s, const char *field,
                        uint64_t *n, double *mean, double *m2)
{
    for (int i = 0; i < p->nmom; i++) {
        const union fspec_word *m = s->w + p->moms[i].word0;
        if (strcmp(p->a.fields[p->moms[i].field].name, field) != 0)
            continue;
        *n = m[0].u;
        *mean = m[1].d;
        *m2 = m[2].d;
        return ERR_OK;
    }
    return ERR_NOTFOUND;
}

