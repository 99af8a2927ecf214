/* common/codec/codec_plan.c: decode/encode plans for the hot records.
 *
 * avro-c's generic values cost an allocation-free but slow walk of
 * interfaces per field (about 1.9 us to decode a transaction event, 1.7 us
 * to encode a prediction). A plan is compiled once per writer schema from
 * its flattened program (struct vprog) and does the per-message work in one
 * pass over caller-owned buffers, with the bounded walk's checks inline:
 * every varint, length, count and union index is checked before use.
 *
 * avro-c stays the reference: schemas a plan cannot compile (promotions,
 * unions other than [null, T], unknown fields) are read by avro-c, said
 * once in a log line; and a message a plan refuses is decoded again by
 * avro-c, so errors name the culprit exactly as before. tests/fuzz/
 * fuzz_avro_plan.c checks both paths agree on every input.
 * Split from codec_txn.c/codec_pred.c; codec_int.h holds what they share. */
#include "codec_int.h"
#include "log.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum op_kind { OP_SKIP, OP_TXN };

struct plan_op {
    enum op_kind kind;
    int node;      /* writer node of the field (OP_SKIP: walked) */
    int txn;       /* index into txn_fields (OP_TXN) */
    bool is_union; /* writer [null, T]; else plain T */
    int null_branch, value_branch;
};

struct txn_plan {
    int nops;
    struct plan_op op[PROG_NODES];
};

/* ---- reading ---- */

struct rd {
    const unsigned char *p;
    size_t pos, end;
};

/* The walk's varint rules exactly (walk_varint in codec_schema.c). */
static int rd_varint(struct rd *r, int max_bytes, int64_t *out)
{
    uint64_t u = 0;

    /* Most varints of an event are one byte: null branches, small lengths. */
    if (r->pos < r->end && r->p[r->pos] < 0x80) {
        u = r->p[r->pos++];
        *out = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
        return ERR_OK;
    }
    for (int i = 0;; i++) {
        unsigned b;
        if (r->pos >= r->end)
            return ERR_DECODE;
        b = r->p[r->pos++];
        if (i == max_bytes - 1 && (b & 0x80))
            return ERR_DECODE;
        if (i == 9 && b > 1)
            return ERR_DECODE;
        u |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80))
            break;
    }
    *out = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
    return ERR_OK;
}

/* Notes the first extraction error by txn field order, the order
 * extract_txn reports them in; bytes that fail the walk win over it. */
static void note(int *first, int *code, int txn, int rc)
{
    if (*first < 0 || txn < *first) {
        *first = txn;
        *code = rc;
    }
}

static int rd_value(struct rd *r, const struct txn_field *f, int txn, struct txn_event *ev,
                    int *first, int *code)
{
    char *p = (char *)ev + f->off;
    int64_t v;

    switch (f->kind) {
    case TK_ID:
    case TK_CAT:
        if (rd_varint(r, 10, &v) || v < 0 || (uint64_t)v > r->end - r->pos)
            return ERR_DECODE;
        if (codec_utf8_check(r->p + r->pos, (size_t)v) < (size_t)v)
            return ERR_DECODE;
        if ((size_t)v >= f->size || memchr(r->p + r->pos, '\0', (size_t)v))
            note(first, code, txn, ERR_DECODE);
        else {
            memcpy(p, r->p + r->pos, (size_t)v);
            p[v] = '\0';
        }
        r->pos += (size_t)v;
        return ERR_OK;
    case TK_TIME:
        if (rd_varint(r, 10, &v))
            return ERR_DECODE;
        *(int64_t *)(void *)p = v;
        return ERR_OK;
    case TK_DOUBLE: {
        uint64_t u = 0;
        double d;
        if (r->end - r->pos < 8)
            return ERR_DECODE;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        memcpy(&u, r->p + r->pos, sizeof(u)); /* Avro doubles are little-endian */
#else
        for (int i = 7; i >= 0; i--)
            u = u << 8 | r->p[r->pos + (size_t)i];
#endif
        r->pos += 8;
        memcpy(&d, &u, sizeof(d));
        if (isnan(d))
            note(first, code, txn, ERR_INVALID);
        else
            *(double *)(void *)p = d;
        return ERR_OK;
    }
    case TK_BOOL:
        if (r->pos >= r->end || r->p[r->pos] > 1)
            return ERR_DECODE;
        *(int *)(void *)p = r->p[r->pos++];
        return ERR_OK;
    case TK_LABEL:
        if (rd_varint(r, 5, &v) || v < INT32_MIN || v > INT32_MAX)
            return ERR_DECODE;
        *(int *)(void *)p = (int)v;
        return ERR_OK;
    }
    return ERR_DECODE;
}

/* One pass over the body: 0, or the error class avro-c would give. */
static int run_txn_plan(const struct txn_plan *pl, const struct vprog *g, const unsigned char *msg,
                        size_t len, struct txn_event *ev)
{
    struct rd r = {.p = msg, .pos = HDR, .end = len};
    int first = -1, code = ERR_OK;
    struct err scratch = {0};

    for (int i = 0; i < pl->nops; i++) {
        const struct plan_op *op = &pl->op[i];
        if (op->kind == OP_SKIP) {
            struct walk w = {.p = msg, .pos = r.pos, .end = len, .g = g, .e = &scratch};
            if (walk_node(&w, op->node))
                return ERR_DECODE;
            r.pos = w.pos;
            continue;
        }
        if (op->is_union) {
            int64_t b;
            if (rd_varint(&r, 10, &b) || b < 0 || b > 1)
                return ERR_DECODE;
            if (b == op->null_branch)
                continue; /* stays missing */
        }
        if (rd_value(&r, &txn_fields[op->txn], op->txn, ev, &first, &code))
            return ERR_DECODE;
    }
    if (r.pos != r.end)
        return ERR_DECODE;
    return code;
}

/* ---- compiling ---- */

/* The writer's record w, fields matched by name to struct txn_event (the
 * resolution avro-c did: extra writer fields skipped, missing ones stay
 * missing). Refuses (fallback to avro-c) what needs more than that. */
static int compile_txn_plan(const struct vprog *g, struct txn_plan *pl, char *why, size_t cap)
{
    const struct vnode *root = &g->node[0];
    bool seen[TXN_NFIELDS] = {0};

    pl->nops = 0;
    for (int i = 0; i < (int)root->n; i++) {
        int kid = root->first + i, node = g->kid[kid];
        const struct txn_field *f = txn_field_by_name(g->fname[kid]);
        const struct vnode *nd = &g->node[node];
        struct plan_op *op = &pl->op[pl->nops++];
        enum vkind want;

        *op = (struct plan_op){.kind = OP_SKIP, .node = node};
        if (!f)
            continue;
        want = txn_value_kind(f->kind);
        op->kind = OP_TXN;
        op->txn = (int)(f - txn_fields);
        seen[op->txn] = true;
        if (nd->kind == want)
            continue;
        if (nd->kind == VK_UNION && nd->n == 2 && f->kind != TK_ID && f->kind != TK_TIME) {
            enum vkind k0 = g->node[g->kid[nd->first]].kind;
            enum vkind k1 = g->node[g->kid[nd->first + 1]].kind;
            if ((k0 == VK_NULL && k1 == want) || (k1 == VK_NULL && k0 == want)) {
                op->is_union = true;
                op->null_branch = k0 == VK_NULL ? 0 : 1;
                op->value_branch = 1 - op->null_branch;
                continue;
            }
        }
        snprintf(why, cap, "field %s needs avro-c's resolution", f->name);
        return -1;
    }
    for (int i = 0; i < TXN_NFIELDS; i++)
        if (!seen[i] && (txn_fields[i].kind == TK_ID || txn_fields[i].kind == TK_TIME)) {
            snprintf(why, cap, "field %s is missing", txn_fields[i].name);
            return -1;
        }
    return 0;
}

/* The plan of writer slot w, compiled on first use; NULL: avro-c reads it. */
static const struct txn_plan *txn_plan_of(struct slot *w)
{
    char why[160];

    if (w->tplan_state == 0) {
        w->tplan = calloc(1, sizeof(*w->tplan));
        if (!w->tplan) {
            snprintf(why, sizeof(why), "out of memory");
        } else if (compile_txn_plan(w->prog, w->tplan, why, sizeof(why)) == 0) {
            w->tplan_state = 1;
            log_info("codec: schema id %" PRId32 " (%s): transaction events decoded by a plan",
                     w->id, w->file);
            return w->tplan;
        }
        free(w->tplan);
        w->tplan = NULL;
        w->tplan_state = -1;
        log_info("codec: schema id %" PRId32 " (%s): transaction events decoded by avro-c: %s",
                 w->id, w->file, why);
    }
    return w->tplan_state > 0 ? w->tplan : NULL;
}

void plan_free(struct slot *s)
{
    free(s->tplan);
    s->tplan = NULL;
    free(s->eplan);
    s->eplan = NULL;
}

/* 1: decoded by the plan (*rc its result); 0: the caller uses avro-c. A
 * plan that refuses a message leaves it to avro-c too (outside
 * CODEC_PLAN_ONLY), whose error names the byte or the field. */
int plan_decode_txn(struct codec *c, struct slot *w, const void *msg, size_t len,
                    struct txn_event *ev, struct err *e, int *rc)
{
    const struct txn_plan *pl;

    if (c->plan_mode == CODEC_PLAN_OFF || !(pl = txn_plan_of(w)))
        return 0;
    *rc = run_txn_plan(pl, w->prog, msg, len, ev);
    if (*rc == ERR_OK)
        return 1;
    event_txn_init(ev);
    if (c->plan_mode != CODEC_PLAN_ONLY)
        return 0;
    err_set(e, *rc, "plan refused the message");
    return 1;
}

/* ---- encoding transaction predictions ---- */

/* EK_STRS, EK_DOUBLES: arrays of [PRED_REASONS][size] strings or of
 * doubles, as many as the int at count (checked in [0, PRED_REASONS]). */
enum ekind { EK_STR, EK_LONG, EK_INT, EK_DOUBLE, EK_BOOL, EK_STRS, EK_DOUBLES };

struct pred_field {
    const char *name;
    enum ekind kind;
    size_t off, size;
    bool optional; /* left out of older registered schemas */
    size_t count;  /* EK_STRS, EK_DOUBLES: offset of the int count */
};

#define PF(name, kind, member, opt)                                                               \
    {                                                                                              \
        name, kind, offsetof(struct txn_prediction, member),                                       \
            sizeof(((struct txn_prediction *)0)->member), opt, 0                                   \
    }
#define PA(name, kind, member, n)                                                                  \
    {                                                                                              \
        name, kind, offsetof(struct txn_prediction, member),                                       \
            sizeof(((struct txn_prediction *)0)->member[0]), true,                                 \
            offsetof(struct txn_prediction, n)                                                     \
    }

static const struct pred_field pred_fields[] = {
    PF("event_id", EK_STR, event_id, false),
    PF("user_id", EK_STR, user_id, false),
    PF("event_time", EK_LONG, event_time_ms, false),
    PF("model_name", EK_STR, model_name, false),
    PF("model_version", EK_STR, model_version, false),
    PF("feature_version", EK_STR, feature_version, false),
    PF("probability", EK_DOUBLE, probability, false),
    PF("score", EK_INT, score, false),
    PF("score_probability", EK_DOUBLE, score_probability, false),
    PF("decision", EK_STR, decision, false),
    {"reasons", EK_STRS, offsetof(struct txn_prediction, reasons),
     sizeof(((struct txn_prediction *)0)->reasons[0]), false,
     offsetof(struct txn_prediction, n_reasons)},
    PF("feature_hash", EK_STR, feature_hash, false),
    PF("degraded", EK_BOOL, degraded, false),
    PF("redelivered", EK_BOOL, redelivered, false),
    PF("latency_us", EK_LONG, latency_us, false),
    PF("src_topic", EK_STR, src_topic, false),
    PF("src_partition", EK_INT, src_partition, false),
    PF("src_offset", EK_LONG, src_offset, false),
    PF("experiment_id", EK_STR, experiment_id, true),
    PF("variant", EK_STR, variant, true),
    PA("reason_features", EK_STRS, reason_features, n_reasons),
    PA("reason_values", EK_DOUBLES, reason_values, n_reasons),
    PA("scorecard_reasons", EK_STRS, card_reasons, n_card_reasons),
};
enum { PRED_NFIELDS = sizeof(pred_fields) / sizeof(pred_fields[0]) };

struct enc_plan {
    int nops;
    const struct pred_field *op[PRED_NFIELDS];
    size_t bound; /* bytes a record can take at most, header included */
};

static enum vkind ekind_value(enum ekind k)
{
    switch (k) {
    case EK_STR:
        return VK_STRING;
    case EK_LONG:
        return VK_LONG;
    case EK_INT:
        return VK_INT;
    case EK_DOUBLE:
        return VK_DOUBLE;
    case EK_BOOL:
        return VK_BOOLEAN;
    case EK_STRS:
    case EK_DOUBLES:
        return VK_ARRAY;
    }
    return VK_NULL;
}

static int compile_enc_plan(const struct vprog *g, struct enc_plan *pl, char *why, size_t cap)
{
    const struct vnode *root = &g->node[0];
    bool seen[PRED_NFIELDS] = {0};

    pl->nops = 0;
    pl->bound = HDR;
    for (int i = 0; i < (int)root->n; i++) {
        int kid = root->first + i;
        const struct vnode *nd = &g->node[g->kid[kid]];
        const struct pred_field *f = NULL;

        for (int j = 0; j < PRED_NFIELDS && !f; j++)
            if (strcmp(pred_fields[j].name, g->fname[kid]) == 0 && !seen[j]) {
                f = &pred_fields[j];
                seen[j] = true;
            }
        if (!f || nd->kind != ekind_value(f->kind) ||
            (f->kind == EK_STRS && g->node[nd->first].kind != VK_STRING) ||
            (f->kind == EK_DOUBLES && g->node[nd->first].kind != VK_DOUBLE)) {
            snprintf(why, cap, "field %s is not one the plan writes", g->fname[kid]);
            return -1;
        }
        pl->op[pl->nops++] = f;
        pl->bound += f->kind == EK_STRS      ? 10 + PRED_REASONS * (10 + f->size) + 1
                     : f->kind == EK_DOUBLES ? 10 + PRED_REASONS * 8 + 1
                                             : 10 + f->size;
    }
    for (int j = 0; j < PRED_NFIELDS; j++)
        if (!seen[j] && !pred_fields[j].optional) {
            snprintf(why, cap, "field %s is missing", pred_fields[j].name);
            return -1;
        }
    return 0;
}

static unsigned char *put_varint(unsigned char *o, int64_t v)
{
    uint64_t u = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);

    while (u > 0x7f) {
        *o++ = (unsigned char)(u | 0x80);
        u >>= 7;
    }
    *o++ = (unsigned char)u;
    return o;
}

/* NULL when s is not NUL-terminated within cap (avro-c's path names it). */
static unsigned char *put_string(unsigned char *o, const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);

    if (n == cap)
        return NULL;
    o = put_varint(o, (int64_t)n);
    memcpy(o, s, n);
    return o + n;
}

static int run_enc_plan(const struct enc_plan *pl, int32_t id, const struct txn_prediction *p,
                        struct buf *out)
{
    unsigned char *o;

    if (id == 0)
        return ERR_CONFIG;
    buf_reset(out);
    if (buf_reserve(out, pl->bound))
        return ERR_NOMEM;
    o = out->data;
    *o++ = 0;
    *o++ = (unsigned char)((uint32_t)id >> 24);
    *o++ = (unsigned char)((uint32_t)id >> 16);
    *o++ = (unsigned char)((uint32_t)id >> 8);
    *o++ = (unsigned char)id;
    for (int i = 0; i < pl->nops && o; i++) {
        const struct pred_field *f = pl->op[i];
        const char *v = (const char *)p + f->off;
        int n = f->count ? *(const int *)(const void *)((const char *)p + f->count) : 0;
        uint64_t u;
        switch (f->kind) {
        case EK_STR:
            o = put_string(o, v, f->size);
            break;
        case EK_LONG:
            o = put_varint(o, *(const int64_t *)(const void *)v);
            break;
        case EK_INT:
            o = put_varint(o, *(const int32_t *)(const void *)v);
            break;
        case EK_DOUBLE:
            memcpy(&u, v, sizeof(u));
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            memcpy(o, &u, sizeof(u));
            o += sizeof(u);
#else
            for (int b = 0; b < 8; b++, u >>= 8)
                *o++ = (unsigned char)u;
#endif
            break;
        case EK_BOOL:
            *o++ = *(const bool *)(const void *)v ? 1 : 0;
            break;
        case EK_STRS:
        case EK_DOUBLES:
            if (n < 0 || n > PRED_REASONS)
                return ERR_DECODE;
            if (n > 0)
                o = put_varint(o, n);
            for (int r = 0; r < n && o; r++) {
                const char *item = v + (size_t)r * f->size;
                if (f->kind == EK_STRS) {
                    o = put_string(o, item, f->size);
                } else {
                    memcpy(&u, item, sizeof(u));
                    for (int b = 0; b < 8; b++, u >>= 8)
                        *o++ = (unsigned char)u;
                }
            }
            if (o)
                *o++ = 0;
            break;
        }
    }
    if (!o)
        return ERR_DECODE;
    out->len = (size_t)(o - out->data);
    out->data[out->len] = '\0';
    return ERR_OK;
}

/* 1: encoded by the plan (*rc its result); 0: the caller uses avro-c. */
int plan_encode_prediction(struct codec *c, struct slot *s, const struct txn_prediction *p,
                           struct buf *out, struct err *e, int *rc)
{
    char why[160];

    if (c->plan_mode == CODEC_PLAN_OFF)
        return 0;
    if (s->eplan_state == 0) {
        if (!(s->eplan = calloc(1, sizeof(*s->eplan))))
            snprintf(why, sizeof(why), "out of memory");
        else if (compile_enc_plan(s->prog, s->eplan, why, sizeof(why)) == 0)
            s->eplan_state = 1;
        if (s->eplan_state != 1) {
            free(s->eplan);
            s->eplan = NULL;
            s->eplan_state = -1;
            log_info("codec: %s: predictions encoded by avro-c: %s", s->file, why);
        } else {
            log_info("codec: %s: predictions encoded by a plan", s->file);
        }
    }
    if (s->eplan_state < 0)
        return 0;
    *rc = run_enc_plan(s->eplan, s->id, p, out);
    if (*rc == ERR_OK)
        return 1;
    buf_reset(out);
    if (c->plan_mode != CODEC_PLAN_ONLY)
        return 0;
    err_set(e, *rc, "plan refused the prediction");
    return 1;
}

void codec_set_plan(struct codec *c, enum codec_plan_mode mode)
{
    c->plan_mode = mode;
}
