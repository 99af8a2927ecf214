/* rk_: the second-stage ranker of the clickstream (common/streams/ranker.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "onnx.h"
#include "ranker.h"

/* One deferred click: its input (lists dropped: the pool is built), its
 * pool at pairs[off, off + n) and its boosted items at boost[b_off, ...). */
struct entry {
    struct rec_ctx *rc;
    struct rec_input in;
    const struct catalog *cat;
    int64_t now_ms;
    size_t click, slot, off, n, b_off;
};

struct rk {
    struct onnx_model *om;
    const struct sess_model *m;
    char *path;
    char name[64], version[32];
    int hid, nf, in_h, in_x; /* the inputs' order in the graph */
    size_t keep, cap, max_pairs, max_entries;
    struct rec_cand *pairs; /* max_pairs */
    float *h, *x, *scores;  /* per pair */
    struct entry *ent;      /* max_entries */
    size_t n_ent, n_pairs, last_ent;
    int64_t *boost; /* boosted items of the pending clicks (grows) */
    size_t n_boost, boost_cap;
    struct rk_counts cnt;
};

/* The thread's CPU time: on a shared machine the wall clock also counts
 * the time other programs ran. */
static int64_t cpu_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int emb_dim(const struct sess_model *m)
{
    /* rows are contiguous (items >= 2): the distance between two is the dim */
    return (int)(sess_model_embedding(m, 1) - sess_model_embedding(m, 0));
}

int rk_num_features(const struct sess_model *m)
{
    return emb_dim(m) + RK_NFIXED + REC_NSOURCES;
}

void rk_features(const struct sess_model *m, const struct catalog *cat, int64_t last,
                 int64_t now_ms, int64_t item, float rel, unsigned sources, float *x)
{
    int E = emb_dim(m);
    float *f = x + E;

    memset(x, 0, (size_t)rk_num_features(m) * sizeof(float));
    if (item >= 0 && item < sess_model_items(m)) {
        memcpy(x, sess_model_embedding(m, item), (size_t)E * sizeof(float));
        f[1] = 1.0f;
    }
    f[0] = rel == rel ? rel : 0.0f;
    if (cat && cat_has(cat, item)) {
        int64_t created = cat_created_ms(cat, item);
        int c = cat_category(cat, item), g = cat_region(cat, item);
        f[2] = 1.0f;
        f[3] = (float)log1p(cat_price(cat, item));
        if (created > 0 && now_ms > created)
            f[4] = (float)log1p((double)(now_ms - created) / 86400000.0);
        if (last >= 0 && cat_has(cat, last)) {
            f[5] = c >= 0 && c == cat_category(cat, last);
            f[6] = g >= 0 && g == cat_region(cat, last);
        }
    }
    for (int s = 0; s < REC_NSOURCES; s++)
        f[RK_NFIXED + s] = (sources >> s) & 1u ? 1.0f : 0.0f;
}

/* Input i of the graph is float [n, want]: 0, or ERR_CONFIG. */
static int check_input(struct rk *r, size_t i, int want, const char *what, struct err *e)
{
    int nd = 0, len = 0;
    int64_t d[8];
    char dims[128] = "";

    onnx_input_shape(r->om, i, &nd, d);
    if (onnx_input_dtype(r->om, i) == ONNX_F32 && nd == 2 && (d[1] == want || d[1] < 0))
        return ERR_OK;
    for (int k = 0; k < nd && k < 8 && len < 100; k++)
        len += d[k] < 0 ? snprintf(dims + len, sizeof(dims) - (size_t)len, "%sn", k ? ", " : "")
                        : snprintf(dims + len, sizeof(dims) - (size_t)len, "%s%lld", k ? ", " : "",
                                   (long long)d[k]);
    return err_set(e, ERR_CONFIG,
                   "clickstream.ranker %s: input \"%s\" is %s [%s], expected float [n, %d] (%s)",
                   r->path, onnx_input_name(r->om, i),
                   onnx_input_dtype(r->om, i) == ONNX_F32 ? "float" : "not float", dims, want,
                   what);
}

static int check_graph(struct rk *r, struct err *e)
{
    const char *feat = onnx_metadata(r->om, "ranker_features");
    float h[2 * SESS_MAX_HIDDEN] = {0}, *x = calloc(2 * (size_t)r->nf, sizeof(float)), s[2];
    int rc;

    r->in_h = r->in_x = -1;
    for (size_t i = 0; i < onnx_num_inputs(r->om); i++) {
        const char *n = onnx_input_name(r->om, i);
        if (!strcmp(n, "h"))
            r->in_h = (int)i;
        else if (!strcmp(n, "x"))
            r->in_x = (int)i;
    }
    if (!x)
        return err_set(e, ERR_NOMEM, "out of memory");
    if (onnx_num_inputs(r->om) != 2 || r->in_h < 0 || r->in_x < 0)
        rc = err_set(e, ERR_CONFIG,
                     "clickstream.ranker %s: %zu inputs (%s%s%s), expected two: \"h\" [n, %d] "
                     "and \"x\" [n, %d]",
                     r->path, onnx_num_inputs(r->om), onnx_input_name(r->om, 0),
                     onnx_num_inputs(r->om) > 1 ? ", " : "",
                     onnx_num_inputs(r->om) > 1 ? onnx_input_name(r->om, 1) : "", r->hid, r->nf);
    else if (!feat || strcmp(feat, "v1"))
        rc = err_set(e, ERR_CONFIG,
                     "clickstream.ranker %s: metadata ranker_features is %s%s%s, expected v1 (the "
                     "features of docs/clickstream.md)",
                     r->path, feat ? "\"" : "missing", feat ? feat : "", feat ? "\"" : "");
    else if (check_input(r, (size_t)r->in_h, r->hid, "the GRU model's hidden size", e) ||
             check_input(r, (size_t)r->in_x, r->nf, "features v1 of the GRU model's embedding",
                         e))
        rc = e->code;
    else if ((rc = rk_score(r, 2, h, x, s, e)) == ERR_OK && !(isfinite(s[0]) && isfinite(s[1])))
        rc = err_set(e, ERR_CONFIG, "clickstream.ranker %s: a non-finite score on zeros",
                     r->path);
    free(x);
    return rc;
}

int rk_open(struct rk **out, const char *path, const struct sess_model *m,
            const struct rk_opts *o, struct err *e)
{
    struct rk *r = calloc(1, sizeof(*r));
    const char *v;

    *out = NULL;
    if (!r || !(r->path = strdup(path))) {
        free(r);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    r->m = m;
    r->hid = sess_model_hidden(m);
    r->nf = rk_num_features(m);
    r->keep = o->candidates > 0 ? (size_t)o->candidates : 0;
    r->cap = r->keep ? r->keep : REC_MAX_POOL + 2 * REC_MAX_K;
    r->max_pairs = o->batch > 0 && (size_t)o->batch > r->cap ? (size_t)o->batch : r->cap;
    r->max_entries = r->max_pairs; /* a click has at least one candidate */
    if (onnx_open(&r->om, path, e)) {
        err_set(e, e->code, "clickstream.ranker %s: %s", path, e->msg);
        goto fail;
    }
    if (check_graph(r, e))
        goto fail;
    snprintf(r->name, sizeof(r->name), "%s",
             (v = onnx_metadata(r->om, "model_name")) && *v ? v : "ranker");
    snprintf(r->version, sizeof(r->version), "%s",
             (v = onnx_metadata(r->om, "model_version")) && *v ? v : "0");
    r->pairs = calloc(r->max_pairs, sizeof(*r->pairs));
    r->h = calloc(r->max_pairs * (size_t)r->hid, sizeof(float));
    r->x = calloc(r->max_pairs * (size_t)r->nf, sizeof(float));
    r->scores = calloc(r->max_pairs, sizeof(float));
    r->ent = calloc(r->max_entries, sizeof(*r->ent));
    if (!r->pairs || !r->h || !r->x || !r->scores || !r->ent) {
        err_set(e, ERR_NOMEM, "clickstream.ranker %s: out of memory for %zu pairs", path,
                r->max_pairs);
        goto fail;
    }
    log_info("ranker %s (%s %s): %d features, %zu candidates per click, %zu pairs per run", path,
             r->name, r->version, r->nf, r->keep, r->max_pairs);
    *out = r;
    return ERR_OK;
fail:
    rk_close(r);
    return e->code;
}

void rk_close(struct rk *r)
{
    if (!r)
        return;
    onnx_close(r->om);
    free(r->pairs);
    free(r->h);
    free(r->x);
    free(r->scores);
    free(r->ent);
    free(r->boost);
    free(r->path);
    free(r);
}

const char *rk_path(const struct rk *r)
{
    return r->path;
}

const char *rk_name(const struct rk *r)
{
    return r->name;
}

const char *rk_version(const struct rk *r)
{
    return r->version;
}

const struct rk_counts *rk_counts(const struct rk *r)
{
    return &r->cnt;
}

int rk_score(struct rk *r, size_t n, const float *h, const float *x, float *scores,
             struct err *e)
{
    struct onnx_tensor in[2], out[1];
    size_t got;

    in[r->in_h] = (struct onnx_tensor){ONNX_F32, 2, {(int64_t)n, r->hid}, (void *)h};
    in[r->in_x] = (struct onnx_tensor){ONNX_F32, 2, {(int64_t)n, r->nf}, (void *)x};
    if (onnx_run(r->om, in, 2, out, 1, e))
        return err_set(e, e->code, "clickstream.ranker %s: %s", r->path, e->msg);
    got = onnx_numel(&out[0]);
    if (out[0].dtype != ONNX_F32 || got != n || out[0].ndim < 1 || out[0].ndim > 2)
        return err_set(e, ERR_CONFIG,
                       "clickstream.ranker %s: output \"%s\" gives %zu values of rank %d for %zu "
                       "pairs, expected float [n] or [n, 1]",
                       r->path, onnx_output_name(r->om, 0), got, out[0].ndim, n);
    memcpy(scores, out[0].data, n * sizeof(float));
    return ERR_OK;
}

void rk_defer(struct rk *r, const struct rk_click *k, rk_emit_fn emit, void *opaque)
{
    struct entry *en;

    if (r->n_pairs + r->cap > r->max_pairs || r->n_ent == r->max_entries)
        rk_flush(r, emit, opaque);
    if (r->n_ent == 0)
        r->n_pairs = r->n_boost = 0; /* the last flush's pools are kept until here */
    if (k->in->n_boosted > r->boost_cap - r->n_boost) {
        size_t nc = 2 * (r->n_boost + k->in->n_boosted);
        int64_t *nb = realloc(r->boost, nc * sizeof(int64_t));
        if (!nb) { /* ranked at once, without the ranker */
            struct rec_item out[REC_MAX_K];
            size_t n;
            rec_rank(k->rc, k->in, out, &n);
            emit(opaque, k->click, k->slot, out, n);
            return;
        }
        r->boost = nb;
        r->boost_cap = nc;
    }
    en = &r->ent[r->n_ent++];
    *en = (struct entry){k->rc, *k->in, k->cat, k->now_ms, k->click, k->slot, r->n_pairs, 0,
                         r->n_boost};
    if (k->in->n_boosted)
        memcpy(r->boost + r->n_boost, k->in->boosted, k->in->n_boosted * sizeof(int64_t));
    r->n_boost += k->in->n_boosted;
    en->in.lists = NULL; /* used by the pool only: they belong to the next click now */
    en->in.n_lists = 0;
    en->in.covisit = en->in.popular = NULL;
    en->in.n_covisit = en->in.n_popular = 0;
    en->n = rec_pool_build(k->rc, k->in, r->keep, r->pairs + r->n_pairs, r->cap);
    r->n_pairs += en->n;
}

void rk_flush(struct rk *r, rk_emit_fn emit, void *opaque)
{
    int64_t t0 = cpu_us();
    struct err e = {0};
    int failed;

    if (!r->n_ent)
        return;
    for (size_t i = 0; i < r->n_ent; i++) {
        const struct entry *en = &r->ent[i];
        int64_t last = en->in.n_exclude ? en->in.exclude[en->in.n_exclude - 1] : -1;
        for (size_t j = en->off; j < en->off + en->n; j++) {
            memcpy(r->h + j * (size_t)r->hid, en->in.h, (size_t)r->hid * sizeof(float));
            rk_features(r->m, en->cat, last, en->now_ms, r->pairs[j].item, r->pairs[j].rel,
                        r->pairs[j].mask, r->x + j * (size_t)r->nf);
        }
    }
    failed = r->n_pairs && rk_score(r, r->n_pairs, r->h, r->x, r->scores, &e);
    r->cnt.us += (uint64_t)(cpu_us() - t0);
    if (failed) {
        r->cnt.failed++;
        log_error("ranker: %zu pairs not scored, ranked by the first stage: %s", r->n_pairs,
                  e.msg);
    }
    for (size_t i = 0; i < r->n_ent; i++) {
        struct entry *en = &r->ent[i];
        struct rec_item out[REC_MAX_K];
        float lo = INFINITY;
        size_t n;
        for (size_t j = en->off; !failed && j < en->off + en->n; j++)
            lo = isfinite(r->scores[j]) && r->scores[j] < lo ? r->scores[j] : lo;
        for (size_t j = en->off; !failed && j < en->off + en->n; j++) /* NaN: the floor */
            r->pairs[j].rel = r->pairs[j].score =
                isfinite(r->scores[j]) ? r->scores[j] : (lo < INFINITY ? lo : 0.0f);
        en->in.boosted = en->in.n_boosted ? r->boost + en->b_off : NULL;
        rec_rank_pool(en->rc, &en->in, r->pairs + en->off, en->n, out, &n);
        emit(opaque, en->click, en->slot, out, n);
    }
    r->cnt.pairs += r->n_pairs;
    r->cnt.runs += r->n_pairs > 0;
    r->cnt.clicks += r->n_ent;
    r->last_ent = r->n_ent;
    r->n_ent = 0;
}

size_t rk_last_pool(const struct rk *r, size_t i, const struct rec_cand **pool)
{
    if (r->n_ent || i >= r->last_ent)
        return 0;
    *pool = r->pairs + r->ent[i].off;
    return r->ent[i].n;
}

/* ---- the set ---- */

struct rk_set {
    const struct sess_model *m;
    char *def_path; /* clickstream.ranker ("": none), for an arm with its own GRU */
    struct rk_opts o;
    struct rk *all[RK_MAX_ARMS + 1]; /* distinct files */
    size_t n;
    struct rk *def, *arm[RK_MAX_ARMS];
    int armed[RK_MAX_ARMS]; /* 1: arm[a] was set */
};

/* The ranker of file path over GRU m: one already open, or opened. */
static int set_find(struct rk_set *s, const char *path, const struct sess_model *m,
                    struct rk **out, struct err *e)
{
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(rk_path(s->all[i]), path) && s->all[i]->m == m) {
            *out = s->all[i];
            return ERR_OK;
        }
    if (s->n == RK_MAX_ARMS + 1)
        return err_set(e, ERR_CONFIG, "more than %d ranker models", RK_MAX_ARMS + 1);
    if (rk_open(out, path, m, &s->o, e))
        return e->code;
    s->all[s->n++] = *out;
    return ERR_OK;
}

int rk_set_open(struct rk_set **out, const struct cfg *cf, const struct sess_model *m,
                struct err *e)
{
    struct rk_set *s = calloc(1, sizeof(*s));
    const char *path = cfg_str(cf, "clickstream.ranker");

    *out = NULL;
    if (!s)
        return err_set(e, ERR_NOMEM, "out of memory");
    s->m = m;
    s->o = (struct rk_opts){(int)cfg_int(cf, "clickstream.ranker_candidates"),
                            (int)cfg_int(cf, "clickstream.ranker_batch")};
    if (!(s->def_path = strdup(strcmp(path, "-") ? path : ""))) {
        free(s);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    if (*path && strcmp(path, "-") && set_find(s, path, m, &s->def, e)) {
        rk_set_close(s);
        return e->code;
    }
    *out = s;
    return ERR_OK;
}

void rk_set_close(struct rk_set *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        rk_close(s->all[i]);
    free(s->def_path);
    free(s);
}

int rk_set_arm(struct rk_set *s, size_t a, const char *path, const struct sess_model *m,
               struct err *e)
{
    if (a >= RK_MAX_ARMS)
        return err_set(e, ERR_CONFIG, "arm %zu: at most %d arms", a, RK_MAX_ARMS);
    s->armed[a] = 1;
    s->arm[a] = NULL;
    m = m ? m : s->m;
    if ((!path || !*path) && m == s->m) {
        s->arm[a] = s->def;
        return ERR_OK;
    }
    path = path && *path ? path : s->def_path; /* another GRU: the default's file over it */
    return *path && strcmp(path, "-") ? set_find(s, path, m, &s->arm[a], e) : ERR_OK;
}

struct rk *rk_set_get(const struct rk_set *s, int a)
{
    if (a < 0 || a >= RK_MAX_ARMS || !s->armed[a])
        return s->def;
    return s->arm[a];
}

void rk_set_flush(struct rk_set *s, rk_emit_fn emit, void *opaque)
{
    for (size_t i = 0; i < s->n; i++)
        rk_flush(s->all[i], emit, opaque);
}

size_t rk_set_files(const struct rk_set *s, const char **paths, size_t cap)
{
    size_t n = 0;

    for (size_t i = 0; i < s->n && n < cap; i++)
        paths[n++] = rk_path(s->all[i]);
    return n;
}

void rk_set_log(const struct rk_set *s)
{
    for (size_t i = 0; i < s->n; i++) {
        const struct rk_counts *k = rk_counts(s->all[i]);
        log_info("ranker %s (%s %s): %llu clicks re-ranked, %llu pairs in %llu runs (%llu "
                 "failed), %.1f CPU us per click in features and runs",
                 rk_path(s->all[i]), rk_name(s->all[i]), rk_version(s->all[i]),
                 (unsigned long long)k->clicks, (unsigned long long)k->pairs,
                 (unsigned long long)k->runs, (unsigned long long)k->failed,
                 k->clicks ? (double)k->us / (double)k->clicks : 0.0);
    }
}
