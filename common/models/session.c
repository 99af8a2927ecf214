#include "session.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "onnx.h"

#define POPULAR_MAX 1000

struct sess_model {
    int64_t items;
    int emb, hidden;
    float *emb_w; /* items x E */
    float *unit;  /* items x E, rows scaled to unit length (zero rows stay 0) */
    float *w;     /* 3H x E, gates z, r, h */
    float *r;     /* 3H x H */
    float *b;     /* 6H: Wb (z, r, h), Rb (z, r, h) */
    float *out_w; /* H x items ("in_out") or items x H ("out_in") */
    int out_in;
    float *out_rows; /* in_out: out.weight transposed, items x H: one item's score reads
                        one row (sess_score_one), not H cache lines items apart */
    float *out_b; /* items */
    int64_t popular[POPULAR_MAX];
    size_t n_popular;
    char name[64], version[32];
};

/* ---- loading ---- */

static int get_init(struct onnx_model *om, const char *path, const char *name, int ndim,
                    const int64_t *dims, float **dst, struct err *e)
{
    const struct onnx_tensor *t = onnx_initializer(om, name);
    size_t n;
    const float *src;

    if (!t)
        return err_set(e, ERR_CONFIG, "%s: no initializer %s (not a train.py GRU4Rec export?)",
                       path, name);
    if (t->dtype != ONNX_F32 || t->ndim != ndim)
        return err_set(e, ERR_CONFIG, "%s: initializer %s must be float with %d dims", path, name,
                       ndim);
    for (int i = 0; i < ndim; i++)
        if (t->dims[i] != dims[i])
            return err_set(e, ERR_CONFIG, "%s: initializer %s dim %d is %lld, expected %lld", path,
                           name, i, (long long)t->dims[i], (long long)dims[i]);
    n = onnx_numel(t);
    src = t->data;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(src[i]))
            return err_set(e, ERR_CONFIG, "%s: initializer %s has a non-finite value at %zu", path,
                           name, i);
    *dst = malloc(n * sizeof(float));
    if (!*dst)
        return err_set(e, ERR_NOMEM, "out of memory for %s", name);
    memcpy(*dst, src, n * sizeof(float));
    return ERR_OK;
}

/* Shapes come from emb.weight and gru.R; everything else must agree. */
static int read_shapes(struct sess_model *m, struct onnx_model *om, const char *path, struct err *e)
{
    const struct onnx_tensor *emb = onnx_initializer(om, "emb.weight");
    const struct onnx_tensor *r = onnx_initializer(om, "gru.R");

    if (!emb || emb->ndim != 2 || !r || r->ndim != 3)
        return err_set(e, ERR_CONFIG,
                       "%s: initializers emb.weight [items, E] and gru.R "
                       "[1, 3H, H] are required (not a train.py GRU4Rec export?)",
                       path);
    m->items = emb->dims[0];
    m->emb = (int)emb->dims[1];
    m->hidden = (int)r->dims[2];
    if (m->items < 2 || m->emb < 1 || emb->dims[1] > 65536 || m->hidden < 1 ||
        m->hidden > SESS_MAX_HIDDEN || r->dims[1] != 3 * (int64_t)m->hidden)
        return err_set(e, ERR_CONFIG,
                       "%s: %lld items, embedding %lld, hidden %lld: out of "
                       "range (hidden at most %d)",
                       path, (long long)m->items, (long long)emb->dims[1], (long long)r->dims[2],
                       SESS_MAX_HIDDEN);
    return ERR_OK;
}

static int read_popular(struct sess_model *m, const char *s, const char *path, struct err *e)
{
    while (s && *s && m->n_popular < POPULAR_MAX) {
        char *end;
        long long v;
        errno = 0;
        v = strtoll(s, &end, 10);
        if (end == s || errno || v < 0 || v >= m->items || (*end && *end != ','))
            return err_set(e, ERR_CONFIG, "%s: metadata popular: bad item id at \"%.20s\"", path,
                           s);
        m->popular[m->n_popular++] = v;
        s = *end ? end + 1 : end;
    }
    return ERR_OK;
}

static void normalise(struct sess_model *m)
{
    for (int64_t i = 0; i < m->items; i++) {
        const float *x = m->emb_w + i * m->emb;
        float *u = m->unit + i * m->emb;
        double ss = 0;
        for (int j = 0; j < m->emb; j++)
            ss += (double)x[j] * x[j];
        for (int j = 0; j < m->emb; j++)
            u[j] = ss > 0 ? (float)(x[j] / sqrt(ss)) : 0.0f;
    }
}

static int load(struct sess_model *m, struct onnx_model *om, const char *path, struct err *e)
{
    const char *layout = onnx_metadata(om, "out_weight_layout");
    const char *nm = onnx_metadata(om, "model_name"), *ver = onnx_metadata(om, "model_version");
    int64_t h = 0, g3 = 0;

    if (read_shapes(m, om, path, e))
        return e->code;
    h = m->hidden;
    g3 = 3 * h;
    if (!layout || (strcmp(layout, "in_out") && strcmp(layout, "out_in")))
        return err_set(e, ERR_CONFIG, "%s: metadata out_weight_layout must be in_out or out_in",
                       path);
    m->out_in = strcmp(layout, "out_in") == 0;
    {
        int64_t d_emb[2] = {m->items, m->emb}, d_w[3] = {1, g3, m->emb}, d_r[3] = {1, g3, h},
                d_b[2] = {1, 2 * g3},
                d_out[2] = {m->out_in ? m->items : h, m->out_in ? h : m->items},
                d_ob[1] = {m->items};
        if (get_init(om, path, "emb.weight", 2, d_emb, &m->emb_w, e) ||
            get_init(om, path, "gru.W", 3, d_w, &m->w, e) ||
            get_init(om, path, "gru.R", 3, d_r, &m->r, e) ||
            get_init(om, path, "gru.B", 2, d_b, &m->b, e) ||
            get_init(om, path, "out.weight", 2, d_out, &m->out_w, e) ||
            get_init(om, path, "out.bias", 1, d_ob, &m->out_b, e))
            return e->code;
    }
    if (read_popular(m, onnx_metadata(om, "popular"), path, e))
        return e->code;
    if (!m->out_in) {
        if (!(m->out_rows = malloc((size_t)m->items * (size_t)h * sizeof(float))))
            return err_set(e, ERR_NOMEM, "out of memory for the output rows");
        for (int j = 0; j < h; j++)
            for (int64_t i = 0; i < m->items; i++)
                m->out_rows[(size_t)i * (size_t)h + (size_t)j] =
                    m->out_w[(size_t)j * (size_t)m->items + (size_t)i];
    }
    m->unit = malloc((size_t)m->items * m->emb * sizeof(float));
    if (!m->unit)
        return err_set(e, ERR_NOMEM, "out of memory for the unit embeddings");
    normalise(m);
    snprintf(m->name, sizeof(m->name), "%s", nm ? nm : "gru4rec");
    snprintf(m->version, sizeof(m->version), "%s", ver ? ver : "unknown");
    return ERR_OK;
}

int sess_model_open(struct sess_model **out, const char *path, struct err *e)
{
    struct onnx_model *om = NULL;
    struct sess_model *m;
    int rc;

    *out = NULL;
    if ((rc = onnx_open(&om, path, e)))
        return rc == ERR_NOMEM ? rc : err_set(e, ERR_CONFIG, "%s", e->msg);
    m = calloc(1, sizeof(*m));
    if (!m) {
        onnx_close(om);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    rc = load(m, om, path, e);
    onnx_close(om); /* the weights are copied: the graph's buffers are not kept */
    if (rc) {
        sess_model_close(m);
        return rc;
    }
    *out = m;
    return ERR_OK;
}

void sess_model_close(struct sess_model *m)
{
    if (!m)
        return;
    free(m->emb_w);
    free(m->unit);
    free(m->w);
    free(m->r);
    free(m->b);
    free(m->out_w);
    free(m->out_rows);
    free(m->out_b);
    free(m);
}

int64_t sess_model_items(const struct sess_model *m)
{
    return m->items;
}
int sess_model_hidden(const struct sess_model *m)
{
    return m->hidden;
}
const char *sess_model_name(const struct sess_model *m)
{
    return m->name;
}
const char *sess_model_version(const struct sess_model *m)
{
    return m->version;
}

const float *sess_model_embedding(const struct sess_model *m, int64_t i)
{
    return m->emb_w + i * m->emb;
}

const float *sess_model_unit_embedding(const struct sess_model *m, int64_t i)
{
    return m->unit + i * m->emb;
}

const int64_t *sess_model_popular(const struct sess_model *m, size_t *n)
{
    *n = m->n_popular;
    return m->popular;
}

/* ---- the GRU step and the scores ---- */

static float sigmoid(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

/* ONNX GRU, linear_before_reset=1 (torch):
 *   z = s(Wz x + Wbz + Rz h + Rbz)    r = s(Wr x + Wbr + Rr h + Rbr)
 *   n = tanh(Wh x + Wbh + r * (Rh h + Rbh))    h' = (1 - z) * n + z * h */
int sess_step(const struct sess_model *m, int64_t item, float *h, float *scratch, struct err *e)
{
    int H = m->hidden;
    float *gx = scratch, *gh = scratch + 3 * H;

    if (item < 0 || item >= m->items)
        return err_set(e, ERR_INVALID, "item %lld is not in the catalog (0..%lld)", (long long)item,
                       (long long)m->items - 1);
    memcpy(gx, m->b, 3 * H * sizeof(float));
    memcpy(gh, m->b + 3 * H, 3 * H * sizeof(float));
    cblas_sgemv(CblasRowMajor, CblasNoTrans, 3 * H, m->emb, 1.0f, m->w, m->emb,
                m->emb_w + item * m->emb, 1, 1.0f, gx, 1);
    cblas_sgemv(CblasRowMajor, CblasNoTrans, 3 * H, H, 1.0f, m->r, H, h, 1, 1.0f, gh, 1);
    for (int j = 0; j < H; j++) {
        float z = sigmoid(gx[j] + gh[j]);
        float r = sigmoid(gx[H + j] + gh[H + j]);
        float n = tanhf(gx[2 * H + j] + r * gh[2 * H + j]);
        h[j] = (1.0f - z) * n + z * h[j];
    }
    return ERR_OK;
}

void sess_scores(const struct sess_model *m, size_t n, const float *h, float *scores)
{
    int N = (int)m->items, H = m->hidden;

    for (size_t i = 0; i < n; i++)
        memcpy(scores + i * (size_t)N, m->out_b, (size_t)N * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, m->out_in ? CblasTrans : CblasNoTrans, (int)n, N, H,
                1.0f, h, H, m->out_w, m->out_in ? H : N, 1.0f, scores, N);
}

void sess_model_output(const struct sess_model *m, const float **w, const float **b, int *out_in)
{
    *w = m->out_w;
    *b = m->out_b;
    *out_in = m->out_in;
}

/* Eight independent sums (vectorised by the compiler): a call of
 * cblas_sdot cost more than its hidden-128 product, and a pool of
 * thousands of candidates makes a thousand of them per click. */
static float dot(const float *a, const float *b, int n)
{
    float s[8] = {0};
    int i = 0;

    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            s[j] += a[i + j] * b[i + j];
    for (; i < n; i++)
        s[0] += a[i] * b[i];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

float sess_score_one(const struct sess_model *m, const float *h, int64_t item)
{
    int H = m->hidden;
    float s = m->out_b[item];

    if (m->out_in)
        return s + dot(h, m->out_w + item * H, H);
    return s + dot(h, m->out_rows + item * H, H);
}

#define PREFETCH_AHEAD 4 /* items: the rows of a 128-wide model are 8 cache lines */

void sess_score_many(const struct sess_model *m, const float *h, const int64_t *items, size_t n,
                     float *out)
{
    int H = m->hidden;
    const float *w = m->out_in ? m->out_w : m->out_rows;

    for (size_t i = 0; i < n; i++) {
        int64_t it = items[i];
        if (i + PREFETCH_AHEAD < n && items[i + PREFETCH_AHEAD] >= 0 &&
            items[i + PREFETCH_AHEAD] < m->items) {
            const char *r = (const char *)(w + items[i + PREFETCH_AHEAD] * H);
            for (size_t o = 0; o < (size_t)H * sizeof(float); o += 64)
                __builtin_prefetch(r + o);
        }
        out[i] = it >= 0 && it < m->items ? m->out_b[it] + dot(h, w + it * H, H) : NAN;
    }
}

/* Min-heap of the k best (item, score) so far, root = the worst kept.
 * a is worse than b: a lower score, or the same score and a higher id. */
static int worse(struct sess_top a, struct sess_top b)
{
    return a.score < b.score || (a.score == b.score && a.item > b.item);
}

void sess_top_offer(struct sess_top *hp, int *hn, int k, struct sess_top x)
{
    int i;

    if (*hn < k) {
        for (i = (*hn)++; i > 0 && worse(x, hp[(i - 1) / 2]); i = (i - 1) / 2)
            hp[i] = hp[(i - 1) / 2];
        hp[i] = x;
        return;
    }
    if (!worse(hp[0], x))
        return;
    for (i = 0;;) { /* replace the root, sift down */
        int c = 2 * i + 1;
        if (c >= k)
            break;
        if (c + 1 < k && worse(hp[c + 1], hp[c]))
            c++;
        if (!worse(hp[c], x))
            break;
        hp[i] = hp[c];
        i = c;
    }
    hp[i] = x;
}

static int by_score_desc(const void *a, const void *b)
{
    const struct sess_top *x = a, *y = b;
    return worse(*x, *y) ? 1 : worse(*y, *x) ? -1 : 0;
}

void sess_top_finish(struct sess_top *hp, int hn, int k)
{
    qsort(hp, (size_t)hn, sizeof(struct sess_top), by_score_desc);
    for (int j = hn; j < k; j++)
        hp[j] = (struct sess_top){-1, 0.0f}; /* fewer items than k */
}

/* The k-th largest of f[lo..hi] (want: its index; f is reordered):
 * quickselect, Hoare partition around a median of three. */
static float kth_hoare(float *f, int lo, int hi, int want)
{
    while (lo < hi) {
        float a = f[lo], b = f[lo + (hi - lo) / 2], c = f[hi], p, x;
        int i = lo, j = hi;
        p = a > b ? (b > c ? b : (a > c ? c : a)) : (a > c ? a : (b > c ? c : b));
        while (i <= j) { /* descending: > p to the left */
            while (f[i] > p)
                i++;
            while (f[j] < p)
                j--;
            if (i <= j) {
                x = f[i];
                f[i++] = f[j];
                f[j--] = x;
            }
        }
        if (want <= j)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            break; /* between j and i: all equal to p */
    }
    return f[want];
}

/* The k-th largest of f[0..n) (1 <= k <= n; f is reordered). Lomuto
 * partitions without a branch (every element swapped, the boundary moved
 * by the comparison): the scores near a threshold are in random order, and
 * a branchy partition mispredicted about every other element (most of the
 * IVF top-k's time, bench/results.md). Many equal scores make Lomuto
 * quadratic: past a few rounds the rest goes to the Hoare partition. */
static float kth_largest(float *f, int n, int k)
{
    int lo = 0, hi = n - 1, want = k - 1;

    for (int round = 0; hi - lo > 16 && round < 48; round++) {
        int mid = lo + (hi - lo) / 2, m = lo;
        float a = f[lo], b = f[mid], c = f[hi], p, x;
        int pi = a > b ? (b > c ? mid : (a > c ? hi : lo)) : (a > c ? lo : (b > c ? hi : mid));
        p = f[pi];
        f[pi] = f[hi];
        f[hi] = p;
        for (int i = lo; i < hi; i++) { /* [lo, m) > p, [m, i) <= p */
            x = f[i];
            f[i] = f[m];
            f[m] = x;
            m += x > p;
        }
        f[hi] = f[m];
        f[m] = p;
        if (want == m)
            return p;
        if (want < m)
            hi = m - 1;
        else
            lo = m + 1;
    }
    return kth_hoare(f, lo, hi, want);
}

#define KEEP_TIES 64 /* ties at the k-th score handled on the fast path */

float sess_top_keep(struct sess_top *t, int *n, int k, float *scratch)
{
    struct sess_top tie[KEEP_TIES];
    int nn = *n, m = 0, nt = 0, need;
    float th;

    if (k < 1) {
        *n = 0;
        return INFINITY;
    }
    if (nn <= k) {
        th = nn ? t[0].score : -INFINITY;
        for (int i = 1; i < nn; i++)
            th = t[i].score < th ? t[i].score : th;
        return th;
    }
    for (int i = 0; i < nn; i++)
        scratch[i] = t[i].score;
    th = kth_largest(scratch, nn, k);
    for (int i = 0; i < nn; i++)
        nt += t[i].score == th;
    if (nt > KEEP_TIES) { /* many equal scores (a degenerate model): sort them all */
        qsort(t, (size_t)nn, sizeof(*t), by_score_desc);
        *n = k;
        return th;
    }
    nt = 0;
    for (int i = 0; i < nn; i++) { /* in place and without a branch: m <= i */
        struct sess_top x = t[i];
        if (x.score == th)
            tie[nt++] = x;
        t[m] = x;
        m += x.score > th;
    }
    need = k - m; /* 1..nt (fewer than k are above th): the ties of the lowest ids */
    if (nt > need)
        qsort(tie, (size_t)nt, sizeof(*tie), by_score_desc); /* equal scores: by id */
    memcpy(t + m, tie, (size_t)need * sizeof(*t));
    *n = k;
    return th;
}

#define TOPK_CHUNK 256 /* sessions per pass over the catalog */

static void topk_chunk(const struct sess_model *m, size_t nb, const float *h, int k,
                       struct sess_top *o, float *block)
{
    int N = (int)m->items, H = m->hidden, cnt[TOPK_CHUNK] = {0};

    for (int b0 = 0; b0 < N; b0 += SESS_BLOCK) {
        int bw = N - b0 < SESS_BLOCK ? N - b0 : SESS_BLOCK;
        for (size_t i = 0; i < nb; i++)
            memcpy(block + i * (size_t)bw, m->out_b + b0, (size_t)bw * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, m->out_in ? CblasTrans : CblasNoTrans, (int)nb, bw,
                    H, 1.0f, h, H, m->out_in ? m->out_w + (size_t)b0 * H : m->out_w + b0,
                    m->out_in ? H : N, 1.0f, block, bw);
        for (size_t i = 0; i < nb; i++) {
            const float *sc = block + i * (size_t)bw;
            struct sess_top *hp = o + i * (size_t)k;
            for (int j = 0; j < bw; j++) {
                float s = sc[j];
                if (s != s || (cnt[i] == k && s < hp[0].score))
                    continue; /* NaN, or below the worst kept: most items */
                sess_top_offer(hp, &cnt[i], k, (struct sess_top){b0 + j, s});
            }
        }
    }
    for (size_t i = 0; i < nb; i++)
        sess_top_finish(o + i * (size_t)k, cnt[i], k);
}

void sess_topk(const struct sess_model *m, size_t n, const float *h, int k, struct sess_top *out,
               float *block)
{
    for (size_t d = 0; d < n; d += TOPK_CHUNK) {
        size_t nb = n - d < TOPK_CHUNK ? n - d : TOPK_CHUNK;
        topk_chunk(m, nb, h + d * (size_t)m->hidden, k, out + d * (size_t)k, block);
    }
}

/* ---- state blob ---- */

#define STATE_MAGIC 0x31534343u /* "CCS1" little-endian */

void sess_state_init(struct sess_state *s, int hidden)
{
    memset(s, 0, sizeof(*s));
    s->hidden = hidden;
}

void sess_state_push(struct sess_state *s, int64_t item, int max_hist)
{
    if (max_hist > SESS_MAX_HISTORY)
        max_hist = SESS_MAX_HISTORY;
    if (max_hist < 1)
        return;
    if (s->n_hist >= max_hist) {
        memmove(s->hist, s->hist + (s->n_hist - max_hist + 1),
                (size_t)(max_hist - 1) * sizeof(int64_t));
        s->n_hist = max_hist - 1;
    }
    s->hist[s->n_hist++] = item;
}

void sess_state_cart(struct sess_state *s, int64_t item, int purchased)
{
    for (int i = 0; i < s->n_cart; i++)
        if (s->cart[i] == item) {
            memmove(s->cart + i, s->cart + i + 1, (size_t)(s->n_cart - i - 1) * sizeof(int64_t));
            s->n_cart--;
            break;
        }
    if (purchased)
        return;
    if (s->n_cart == SESS_MAX_CART) {
        memmove(s->cart, s->cart + 1, (SESS_MAX_CART - 1) * sizeof(int64_t));
        s->n_cart--;
    }
    s->cart[s->n_cart++] = item;
}

static unsigned char *put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        *p++ = (unsigned char)(v >> (8 * i));
    return p;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* magic u32, n_hist u16, has_h u8, pad u8, hidden u32, last_ms, clicks,
 * unknown (u64 each), hist (u64 each), h (f32 each, if has_h) */
#define HEADER_BYTES 36

size_t sess_state_encode(const struct sess_state *s, unsigned char *buf, size_t cap)
{
    size_t need = HEADER_BYTES + 8 * (size_t)s->n_hist + (s->has_h ? 4 * (size_t)s->hidden : 0) +
                  8 * (size_t)s->n_cart;
    unsigned char *p = buf;
    uint32_t magic = STATE_MAGIC, hid = (uint32_t)s->hidden;

    if (need > cap)
        return 0;
    for (int i = 0; i < 4; i++)
        *p++ = (unsigned char)(magic >> (8 * i));
    *p++ = (unsigned char)(s->n_hist & 0xff);
    *p++ = (unsigned char)(s->n_hist >> 8);
    *p++ = (unsigned char)((s->has_h != 0) | (s->owner & 0x7f) << 1);
    *p++ = (unsigned char)s->n_cart;
    for (int i = 0; i < 4; i++)
        *p++ = (unsigned char)(hid >> (8 * i));
    p = put_u64(p, (uint64_t)s->last_ms);
    p = put_u64(p, (uint64_t)s->clicks);
    p = put_u64(p, (uint64_t)s->unknown);
    for (int i = 0; i < s->n_hist; i++)
        p = put_u64(p, (uint64_t)s->hist[i]);
    if (s->has_h)
        memcpy(p, s->h, 4 * (size_t)s->hidden); /* float32, host order (little-endian) */
    p += s->has_h ? 4 * (size_t)s->hidden : 0;
    for (int i = 0; i < s->n_cart; i++)
        p = put_u64(p, (uint64_t)s->cart[i]);
    return need;
}

int sess_state_decode(struct sess_state *s, const unsigned char *buf, size_t len, int hidden,
                      struct err *e)
{
    uint32_t magic = 0, hid = 0;
    int n, has_h, n_cart;
    size_t need;

    sess_state_init(s, hidden);
    if (len < HEADER_BYTES)
        return err_set(e, ERR_DECODE, "session state: %zu bytes, header needs %d", len,
                       HEADER_BYTES);
    for (int i = 0; i < 4; i++) {
        magic |= (uint32_t)buf[i] << (8 * i);
        hid |= (uint32_t)buf[8 + i] << (8 * i);
    }
    n = buf[4] | buf[5] << 8;
    has_h = buf[6] & 1;
    n_cart = buf[7];
    if (magic != STATE_MAGIC)
        return err_set(e, ERR_DECODE, "session state: not a clickstream state (magic %08x)",
                       (unsigned)magic);
    if (n > SESS_MAX_HISTORY)
        return err_set(e, ERR_DECODE, "session state: %d history items, at most %d", n,
                       SESS_MAX_HISTORY);
    if (has_h && hid != (uint32_t)hidden)
        return err_set(e, ERR_DECODE, "session state: hidden size %u, the model's is %d",
                       (unsigned)hid, hidden);
    if (n_cart > SESS_MAX_CART)
        return err_set(e, ERR_DECODE, "session state: %d cart items, at most %d", n_cart,
                       SESS_MAX_CART);
    need = HEADER_BYTES + 8 * (size_t)n + (has_h ? 4 * (size_t)hidden : 0) + 8 * (size_t)n_cart;
    if (len != need)
        return err_set(e, ERR_DECODE, "session state: %zu bytes, expected %zu", len, need);
    s->last_ms = (int64_t)get_u64(buf + 12);
    s->clicks = (int64_t)get_u64(buf + 20);
    s->unknown = (int64_t)get_u64(buf + 28);
    for (int i = 0; i < n; i++)
        s->hist[i] = (int64_t)get_u64(buf + HEADER_BYTES + 8 * (size_t)i);
    s->n_hist = n;
    s->has_h = has_h;
    s->owner = buf[6] >> 1;
    if (has_h) {
        memcpy(s->h, buf + HEADER_BYTES + 8 * (size_t)n, 4 * (size_t)hidden);
        for (int j = 0; j < hidden; j++)
            if (!isfinite(s->h[j])) {
                sess_state_init(s, hidden);
                return err_set(e, ERR_DECODE, "session state: non-finite hidden value %d", j);
            }
    }
    for (int i = 0; i < n_cart; i++)
        s->cart[i] = (int64_t)get_u64(buf + need - 8 * (size_t)(n_cart - i));
    s->n_cart = n_cart;
    return ERR_OK;
}
