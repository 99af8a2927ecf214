/* cstep_: the clickstream step of one batch (common/streams/clickstep.h). */
#include <cblas.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clickstep.h"
#include "log.h"
#include "pipeline.h"
#include "ranker.h"
#include "sources.h"

#define POPULAR_MAX 200 /* the model's popular items kept after the trending ones */

/* Per click of a batch. */
struct slot {
    const struct click_event *ev; /* NULL: skipped */
    int32_t partition;
    int64_t offset;
    int fresh, sess, row; /* row of the hidden-state matrix, -1: cold */
    int arm;              /* the experiment arm that ranks it (cstep_arms) */
    int mi;               /* the GRU of that arm (cstep_arm_models; 0: clickstream.model) */
    int has_h;            /* the session had a known item by this click */
    int n_hist;
    int64_t hist[SESS_MAX_HISTORY]; /* the session's items after this click */
    int n_cart;
    int64_t cart[SESS_MAX_CART];
};

struct cstep {
    struct state *st;
    struct cov *cov;
    struct sess_model *m;
    char *path;      /* of m */
    struct ann *ann; /* clickstream.search=ivf; NULL: exact */
    struct ann_query *annq;
    struct rec_ctx *rc;
    size_t cap, score_batch, n;
    int k, history, budget_ms, degraded;
    struct slot *sl;
    struct click_prediction *preds; /* the current batch's, borrowed */
    struct entset sessions;
    struct state_blob *blobs;
    struct sess_state *states;
    int *last_ev; /* per session: its last fresh click, -1 none */
    unsigned char (*enc)[STATE_BLOB_MAX];
    struct state_put *puts;
    int *applied;
    float *h, *block, scratch[6 * SESS_MAX_HIDDEN];
    float *h_ev;          /* per click: its session's state after it */
    struct sess_top *top; /* score_batch x ktop */
    int ktop;             /* candidates + history: enough after exclusion */
    int kbatch;           /* the GRU's items fetched for this micro-batch (gru_fetch) */
    int64_t *cov_items, *cov_out;
    int *cov_n, cov_q; /* co-visited items read per click */
    struct cov_click *clicks;
    int64_t *popular; /* trending (its quota) then POPULAR_MAX of the model's */
    size_t n_popular;
    int trend_q;
    struct src_spec sp; /* clickstream.sources */
    struct src_ctx *src;
    struct catalog *cat; /* borrowed, NULL: no catalogue */
    int64_t ids;         /* ids ranked (the catalogue's room) */
    struct cstep_counts cnt;
    int64_t kill_after, stores; /* clickstream.test_kill_between_writes */
    /* experiment arms (cstep_arms): a ranking context each, over its GRU */
    struct rec_opts ropts;
    uint64_t seed;
    struct rec_ctx *arm_rc[CSTEP_MAX_ARMS];
    size_t n_arms, shadow_from;      /* arms >= shadow_from rank every click beside it */
    struct click_prediction *shadow; /* per click x (n_arms - shadow_from) */
    struct rk_set *rks;              /* second-stage rankers (clickstream.ranker, arms') */
    struct rec_opts arm_o[CSTEP_MAX_ARMS];
    /* the GRUs: models[0] clickstream.model, then the arms' own (cstep_arm_models).
     * m, ann and annq are the model a pass of cstep_batch scores with (use_model),
     * models[0]'s between passes */
    struct sess_model *models[CSTEP_MAX_ARMS + 1];
    struct ann *anns[CSTEP_MAX_ARMS + 1];
    struct ann_query *annqs[CSTEP_MAX_ARMS + 1];
    char *mpaths[CSTEP_MAX_ARMS + 1];
    int owner[CSTEP_MAX_ARMS + 1]; /* the session state's owner tag of each (sess_state) */
    size_t n_models;
    int arm_model[CSTEP_MAX_ARMS]; /* arm a's GRU: models[arm_model[a]] */
    int pass_model, pass_arm;      /* the pass: its GRU; pass_arm >= 0: that shadow arm alone */
    struct ann_opts ao;            /* clickstream.search=ivf: every GRU gets its index */
    int ivf;
};

int cstep_advance(const struct sess_model *m, int64_t item, float *h, int *has_h, float *scratch)
{
    struct err e = {0};

    if (item < 0 || item >= sess_model_items(m) || sess_step(m, item, h, scratch, &e))
        return 0;
    *has_h = 1;
    return 1;
}

int cstep_search_open(const struct cfg *cf, const char *search, const struct sess_model *m,
                      int ktop, struct ann **ann, struct ann_query **q, struct err *e)
{
    struct ann_opts o = {.lists = (int)cfg_int(cf, "clickstream.ivf_lists"),
                         .probe = (int)cfg_int(cf, "clickstream.ivf_probe")};
    int64_t lo, hi;

    *ann = NULL;
    *q = NULL;
    if (strcmp(search ? search : cfg_str(cf, "clickstream.search"), "ivf") != 0)
        return ERR_OK;
    if (ann_open(ann, m, &o, e) || ann_query_open(q, *ann, ktop, e))
        return e->code;
    ann_list_sizes(*ann, &lo, &hi);
    log_info("IVF search: %d lists (%lld..%lld items), probe %d, built in %.0f ms", ann_lists(*ann),
             (long long)lo, (long long)hi, ann_probe(*ann), ann_build_ms(*ann));
    return ERR_OK;
}

int cstep_cov_open(const struct cfg *cf, const struct state_redis_opts *ro, struct cov **out,
                   struct err *e)
{
    struct cov_opts co = {.host = ro->host,
                          .port = ro->port,
                          .password = ro->password,
                          .username = ro->username,
                          .prefix = ro->prefix,
                          .ttl_s = (int)cfg_int(cf, "clickstream.covisit_ttl_s"),
                          .half_life_s = cfg_double(cf, "clickstream.trending_half_life_s"),
                          .timeout_ms = ro->timeout_ms};

    *out = NULL;
    if (!cfg_int(cf, "clickstream.covisit"))
        return ERR_OK;
    return cov_open(out, &co, e);
}

/* ---- set-up ---- */

/* e's message after a prefix naming where it comes from. */
static void err_prefix(struct err *e, const char *prefix)
{
    char why[sizeof(e->msg)];

    snprintf(why, sizeof(why), "%s", e->msg);
    err_set(e, e->code, "%s%s", prefix, why);
}

static int open_model(struct cstep *c, const struct cfg *cf, struct err *e)
{
    struct rec_opts o = {.k = (int)cfg_int(cf, "clickstream.k"),
                         .candidates = (int)cfg_int(cf, "clickstream.candidates"),
                         .lambda_diversity = cfg_double(cf, "clickstream.lambda_diversity"),
                         .epsilon = cfg_double(cf, "clickstream.epsilon")};
    uint64_t seed = (uint64_t)cfg_int(cf, "clickstream.seed");
    const char *path = cfg_str(cf, "clickstream.model");
    const char *sim = cfg_str(cf, "clickstream.mmr_similarity");
    struct src_opts so = {(int)cfg_int(cf, "clickstream.recent_items"),
                          cfg_int(cf, "clickstream.new_item_age_s") * 1000,
                          (uint32_t)cfg_int(cf, "clickstream.new_item_impressions")};

    if (strcmp(sim, "cosine") && strcmp(sim, "dot"))
        return err_set(e, ERR_CONFIG, "clickstream.mmr_similarity \"%s\": expected cosine or dot",
                       sim);
    o.mmr_dot = strcmp(sim, "dot") == 0;
    if (!(c->path = strdup(path)))
        return err_set(e, ERR_NOMEM, "out of memory");
    if (sess_model_open(&c->m, path, e))
        return e->code;
    /* process-wide; one thread by default: scale out with workers (partitions) */
    openblas_set_num_threads((int)cfg_int(cf, "clickstream.blas_threads"));
    if (!seed)
        seed = (uint64_t)pipe_wall_ms() ^ ((uint64_t)getpid() << 32);
    if (src_parse(cfg_str(cf, "clickstream.sources"), o.candidates, o.k, &c->sp, e) ||
        src_open(&c->src, &c->sp, &so, e))
        return e->code;
    c->ids = cstep_catalog_ids(cf, sess_model_items(c->m));
    if (!c->sp.legacy) { /* by quota: the pool, new items, boosted exploration */
        o.candidates = src_quota(&c->sp, REC_GRU);
        o.pool = c->sp.pool;
        o.ids = c->ids;
        o.mmr_pool = (int)cfg_int(cf, "clickstream.mmr_candidates");
        o.new_epsilon = cfg_double(cf, "clickstream.new_item_epsilon");
    }
    c->ktop = o.candidates + c->history;
    c->cov_q = src_quota(&c->sp, REC_COVISIT);
    c->cov_q = c->cov_q > COV_KEEP ? COV_KEEP : c->cov_q;
    c->trend_q = c->sp.legacy ? 2 * o.k : src_quota(&c->sp, REC_POPULAR);
    c->trend_q = c->trend_q > COV_TRENDING_KEEP ? COV_TRENDING_KEEP : c->trend_q;
    if (rec_ctx_open(&c->rc, c->m, &o, seed, e) || rk_set_open(&c->rks, cf, c->m, e))
        return e->code;
    c->k = o.k;
    c->ropts = o;
    c->seed = seed;
    log_info("model %s (%s %s): %lld items, hidden %d; top %d of %d candidates (%s), MMR "
             "lambda_diversity %.2f (%s), epsilon %.3f",
             path, sess_model_name(c->m), sess_model_version(c->m),
             (long long)sess_model_items(c->m), sess_model_hidden(c->m), o.k,
             c->sp.legacy ? o.candidates : c->sp.pool,
             c->sp.legacy ? "gru, covisit, popular" : cfg_str(cf, "clickstream.sources"),
             o.lambda_diversity, sim, o.epsilon);
    return ERR_OK;
}

static int alloc_batch(struct cstep *c, struct err *e)
{
    size_t n = c->cap, sb = c->score_batch, hid = (size_t)sess_model_hidden(c->m);

    c->sl = calloc(n, sizeof(*c->sl));
    c->blobs = calloc(n, sizeof(*c->blobs));
    c->states = calloc(n, sizeof(*c->states));
    c->last_ev = calloc(n, sizeof(int));
    c->enc = calloc(n, sizeof(*c->enc));
    c->puts = calloc(n, sizeof(*c->puts));
    c->applied = calloc(n, sizeof(int));
    c->h = calloc(n * hid, sizeof(float));
    c->h_ev = calloc(n * hid, sizeof(float));
    c->block = calloc((sb < 256 ? sb : 256) * SESS_BLOCK, sizeof(float));
    c->top = calloc(sb * (size_t)c->ktop, sizeof(*c->top));
    c->cov_items = calloc(n, sizeof(int64_t));
    c->cov_out = calloc(n * (size_t)(c->cov_q ? c->cov_q : 1), sizeof(int64_t));
    c->popular = calloc((size_t)c->trend_q + POPULAR_MAX, sizeof(int64_t));
    c->cov_n = calloc(n, sizeof(int));
    c->clicks = calloc(n, sizeof(*c->clicks));
    if (!c->sl || !c->blobs || !c->states || !c->last_ev || !c->enc || !c->puts || !c->applied ||
        !c->h || !c->h_ev || !c->block || !c->top || !c->cov_items || !c->cov_out || !c->cov_n ||
        !c->clicks || !c->popular || pipe_entset_init(&c->sessions, n))
        return err_set(e, ERR_NOMEM, "out of memory for a batch of %zu", n);
    return ERR_OK;
}

int cstep_open(struct cstep **out, const struct cfg *cf, size_t cap, struct state *st,
               struct cov *cov, struct err *e)
{
    struct cstep *c = calloc(1, sizeof(*c));

    *out = NULL;
    if (!c)
        return err_set(e, ERR_NOMEM, "out of memory");
    c->st = st;
    c->cov = cov;
    c->cap = cap ? cap : 1;
    c->score_batch = (size_t)cfg_int(cf, "clickstream.score_batch");
    c->history = (int)cfg_int(cf, "clickstream.history");
    c->budget_ms = (int)cfg_int(cf, "state.retry_budget_ms");
    c->kill_after = cfg_int(cf, "clickstream.test_kill_between_writes");
    if (open_model(c, cf, e) || cstep_search_open(cf, NULL, c->m, c->ktop, &c->ann, &c->annq, e))
        goto fail;
    c->models[0] = c->m;
    c->anns[0] = c->ann;
    c->annqs[0] = c->annq;
    c->n_models = 1;
    c->pass_arm = -1;
    c->ivf = c->ann != NULL;
    c->ao = (struct ann_opts){.lists = (int)cfg_int(cf, "clickstream.ivf_lists"),
                              .probe = (int)cfg_int(cf, "clickstream.ivf_probe")};
    /* a session's state must fit one blob: header, history, hidden state */
    if (36 + 8 * (size_t)c->history + 4 * (size_t)sess_model_hidden(c->m) + 8 * SESS_MAX_CART >
        STATE_BLOB_MAX) {
        err_set(e, ERR_CONFIG,
                "clickstream.history %d with hidden size %d: the session state exceeds %d bytes",
                c->history, sess_model_hidden(c->m), STATE_BLOB_MAX);
        goto fail;
    }
    if (alloc_batch(c, e))
        goto fail;
    *out = c;
    return ERR_OK;
fail:
    cstep_close(c);
    return e->code;
}

void cstep_close(struct cstep *c)
{
    if (!c)
        return;
    void *arrays[] = {c->sl,   c->blobs,     c->states,  c->last_ev, c->enc,
                      c->puts, c->applied,   c->h,       c->h_ev,    c->block,
                      c->top,  c->cov_items, c->cov_out, c->cov_n,   c->clicks, c->popular};
    for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++)
        free(arrays[i]);
    pipe_entset_free(&c->sessions);
    for (size_t a = 0; a < c->n_arms; a++)
        rec_ctx_close(c->arm_rc[a]);
    free(c->shadow);
    for (size_t g = 1; g < c->n_models; g++) { /* the arms' own GRUs */
        ann_query_close(c->annqs[g]);
        ann_close(c->anns[g]);
        sess_model_close(c->models[g]);
        free(c->mpaths[g]);
    }
    if (c->n_models) { /* models[0] is m between passes; never closed twice */
        c->m = c->models[0];
        c->ann = c->anns[0];
        c->annq = c->annqs[0];
    }
    rk_set_close(c->rks);
    src_close(c->src);
    rec_ctx_close(c->rc);
    ann_query_close(c->annq);
    ann_close(c->ann);
    sess_model_close(c->m);
    free(c->path);
    free(c);
}

static void use_model(struct cstep *c, size_t g)
{
    c->m = c->models[g];
    c->ann = c->anns[g];
    c->annq = c->annqs[g];
    c->pass_model = (int)g;
}

static int smoke_one(struct cstep *c, struct err *e);

int cstep_smoke(struct cstep *c, struct err *e)
{
    int rc = ERR_OK;

    for (size_t g = 0; g < c->n_models && rc == ERR_OK; g++) {
        use_model(c, g);
        if ((rc = smoke_one(c, e)) && g) { /* an arm's own GRU: name its file */
            char pre[300];
            snprintf(pre, sizeof(pre), "clickstream.arms: model=%s: ", c->mpaths[g]);
            err_prefix(e, pre);
        }
    }
    use_model(c, 0);
    return rc;
}

static int smoke_one(struct cstep *c, struct err *e)
{
    size_t np, hid = (size_t)sess_model_hidden(c->m);
    const int64_t *pop = sess_model_popular(c->m, &np);
    int64_t item = np ? pop[0] : 0;
    int has_h = 0;

    memset(c->h, 0, hid * sizeof(float));
    if (!cstep_advance(c->m, item, c->h, &has_h, c->scratch))
        return err_set(e, ERR_CONFIG, "model %s: its popular item %lld is not in its catalog",
                       sess_model_name(c->m), (long long)item);
    for (size_t j = 0; j < hid; j++)
        if (!isfinite(c->h[j]))
            return err_set(e, ERR_CONFIG, "model %s: one GRU step gives a non-finite state",
                           sess_model_name(c->m));
    sess_topk(c->m, 1, c->h, c->ktop, c->top, c->block);
    if (c->top[0].item < 0 || !isfinite(c->top[0].score))
        return err_set(e, ERR_CONFIG, "model %s: no item with a finite score after one click",
                       sess_model_name(c->m));
    return ERR_OK;
}

void cstep_carry(struct cstep *to, const struct cstep *from)
{
    to->cnt = from->cnt;
    to->stores = from->stores;
}

const struct sess_model *cstep_model(const struct cstep *c)
{
    return c->m;
}

const char *cstep_model_path(const struct cstep *c)
{
    return c->path;
}

const struct cstep_counts *cstep_counts(const struct cstep *c)
{
    return &c->cnt;
}

int cstep_ivf(const struct cstep *c)
{
    return c->ann != NULL;
}

int64_t cstep_catalog_ids(const struct cfg *cf, int64_t model_items)
{
    int64_t n = cfg_int(cf, "clickstream.catalog_max_items");

    return n ? n : 2 * model_items;
}

int cstep_set_catalog(struct cstep *c, struct catalog *cat, struct err *e)
{
    if (cat && (c->sp.legacy || cat_max_items(cat) > c->ids))
        return err_set(e, ERR_CONFIG,
                       c->sp.legacy ? "a catalogue needs clickstream.sources (the quotas)"
                                    : "the catalogue's %lld ids exceed the ranking's %lld",
                       (long long)cat_max_items(cat), (long long)c->ids);
    c->cat = cat;
    return ERR_OK;
}

/* ---- state: read, advance ---- */

/* Reads the batch's sessions; 1 if the store could not be read (degraded). */
static int read_states(struct cstep *c)
{
    int hid = sess_model_hidden(c->m);
    struct err e = {0};
    int degraded = 0;

    if (c->sessions.n && pipe_state_get(c->st, c->budget_ms, c->sessions.n,
                                        (const char *const *)c->sessions.ids, c->blobs, &e)) {
        log_error("session state read failed, recommending degraded: %s", e.msg);
        degraded = 1;
    }
    for (size_t s = 0; s < c->sessions.n; s++) {
        c->last_ev[s] = -1;
        if (degraded) {
            c->blobs[s].len = 0;
            c->blobs[s].partition = -1;
        }
        if (!c->blobs[s].len) {
            sess_state_init(&c->states[s], hid);
        } else if (sess_state_decode(&c->states[s], c->blobs[s].data, c->blobs[s].len, hid, &e)) {
            /* another model's or a corrupt state: the session restarts */
            c->cnt.bad_state++;
            log_warn("session %s: stored state ignored: %s", c->sessions.ids[s], e.msg);
        }
    }
    return degraded;
}

/* The session's state h recomputed by the GRU models[g] over its stored
 * items from a zero state (its last clickstream.history ones: older clicks
 * are not kept); has_h: one of them known. */
static void replay_hist(struct cstep *c, size_t g, const int64_t *hist, int n, float *h,
                        int *has_h)
{
    memset(h, 0, (size_t)sess_model_hidden(c->models[g]) * sizeof(float));
    *has_h = 0;
    for (int j = 0; j < n; j++)
        cstep_advance(c->models[g], hist[j], h, has_h, c->scratch);
}

/* A click newer than the session's stored state advances it by one step.
 * A state whose h is another GRU's (the session's arm changed: new shares,
 * a user signing in) is first recomputed by this arm's GRU. */
static void advance(struct cstep *c, size_t i)
{
    struct slot *s = &c->sl[i];
    struct sess_state *st = &c->states[s->sess];
    const struct state_blob *b = &c->blobs[s->sess];
    struct click_prediction *p = &c->preds[i];
    int64_t prev = st->n_hist ? st->hist[st->n_hist - 1] : -1, item = s->ev->item_id;

    if (st->owner != c->owner[s->mi]) {
        if (st->has_h || st->n_hist)
            c->cnt.reassigned++;
        replay_hist(c, (size_t)s->mi, st->hist, st->n_hist, st->h, &st->has_h);
        st->owner = c->owner[s->mi];
    }

    s->fresh = !(b->partition == s->partition && s->offset <= b->offset);
    p->unknown_item = item < 0 || item >= sess_model_items(c->m);
    if (!s->fresh) {
        c->cnt.redelivered++;
    } else {
        st->clicks++;
        st->last_ms = s->ev->event_time_ms;
        if (cstep_advance(c->models[s->mi], item, st->h, &st->has_h, c->scratch))
            sess_state_push(st, item, c->history);
        else
            st->unknown++;
        if (s->ev->type != CLICK_VIEW && item >= 0 && item < c->ids)
            sess_state_cart(st, item, s->ev->type == CLICK_PURCHASE);
        if (c->cat) {
            cat_click(c->cat, item);
            if (src_is_new(c->src, c->cat, item, s->ev->event_time_ms)) {
                cat_count_new(c->cat, item, 0, 1);
                c->cnt.new_clicks++;
            }
        }
        c->last_ev[s->sess] = (int)i;
        c->clicks[i] = (struct cov_click){p->unknown_item ? -1 : prev,
                                          p->unknown_item ? -1 : item,
                                          s->ev->event_time_ms,
                                          s->partition,
                                          s->offset,
                                          0};
    }
    c->cnt.unknown += (uint64_t)p->unknown_item;
    /* a snapshot: later clicks of the session in this batch move st on */
    s->has_h = st->has_h;
    if (st->has_h)
        memcpy(c->h_ev + i * (size_t)st->hidden, st->h, (size_t)st->hidden * sizeof(float));
    s->n_hist = st->n_hist;
    memcpy(s->hist, st->hist, (size_t)st->n_hist * sizeof(int64_t));
    s->n_cart = st->n_cart;
    memcpy(s->cart, st->cart, (size_t)st->n_cart * sizeof(int64_t));
    p->session_clicks = st->clicks;
}

/* ---- candidates from the co-visitation store ---- */

static void fetch_popular(struct cstep *c)
{
    size_t np;
    const int64_t *mp = sess_model_popular(c->m, &np);
    int nt = 0;
    struct err e = {0};

    c->n_popular = 0;
    if (c->cov && c->trend_q && cov_trending(c->cov, c->trend_q, c->popular, &nt, &e)) {
        c->cnt.cov_errors++;
        log_warn("trending items not read (the model's popular items are used): %s", e.msg);
        nt = 0;
    }
    c->n_popular = (size_t)nt;
    for (size_t j = 0; j < np && c->n_popular < (size_t)c->trend_q + POPULAR_MAX; j++)
        c->popular[c->n_popular++] = mp[j]; /* duplicates are skipped by rec_rank */
}

static void fetch_covisited(struct cstep *c)
{
    struct err e = {0};

    for (size_t i = 0; i < c->n; i++) {
        const struct slot *s = &c->sl[i];
        c->cov_items[i] = s->ev && s->n_hist ? s->hist[s->n_hist - 1] : -1;
        c->cov_n[i] = 0;
    }
    if (c->cov && c->cov_q &&
        cov_covisited(c->cov, c->n, c->cov_items, c->cov_q, c->cov_out, c->cov_n, &e)) {
        c->cnt.cov_errors++;
        memset(c->cov_n, 0, c->n * sizeof(int));
        log_warn("co-visited items not read: %s", e.msg);
    }
}

/* ---- ranking ---- */

/* The items of out[0..n) into p; counted when count. */
/* now < 0: a shadow ranking, logged and never shown, so not counted. */
static void put_items(struct cstep *c, struct click_prediction *p, const struct rec_item *out,
                      size_t n, int64_t now)
{
    p->n_items = (int)n;
    for (size_t j = 0; j < n; j++) {
        p->items[j].item_id = out[j].item;
        p->items[j].score = out[j].score;
        p->items[j].propensity = out[j].propensity;
        snprintf(p->items[j].source, sizeof(p->items[j].source), "%s",
                 rec_source_name(out[j].source));
        if (now < 0)
            continue;
        c->cnt.explored += out[j].source == REC_EXPLORE || out[j].source == REC_EXPLORE_NEW;
        c->cnt.by_source[out[j].source]++;
        if (c->cat && src_is_new(c->src, c->cat, out[j].item, now)) {
            cat_count_new(c->cat, out[j].item, 1, 0); /* toward the end of its boost */
            c->cnt.new_shown++;
        }
    }
    c->cnt.shown += now >= 0 ? n : 0;
}

/* The items of click i ranked by arm a (0 without arms): its prediction
 * or, for a shadow arm, the logged one. */
static void ranked(void *opaque, size_t i, size_t a, const struct rec_item *out, size_t n)
{
    struct cstep *c = opaque;

    if (c->n_arms && a >= c->shadow_from)
        put_items(c, &c->shadow[i * (c->n_arms - c->shadow_from) + a - c->shadow_from], out, n,
                  -1);
    else
        put_items(c, &c->preds[i], out, n, c->sl[i].ev->event_time_ms);
}

/* Click i ranked by arm a: at once, or with a second-stage ranker (warm
 * clicks only) when the micro-batch's pairs are scored (rk_set_flush). */
static void rank_arm(struct cstep *c, size_t i, size_t a, int warm, const struct rec_input *in,
                     int64_t now)
{
    struct rec_ctx *rc = c->n_arms ? c->arm_rc[a] : c->rc;
    struct rk *rk = warm ? rk_set_get(c->rks, c->n_arms ? (int)a : -1) : NULL;
    struct rec_item out[REC_MAX_K];
    size_t n;

    if (rk) {
        rk_defer(rk, &(struct rk_click){rc, in, c->cat, now, i, a}, ranked, c);
        return;
    }
    rec_rank(rc, in, out, &n);
    ranked(c, i, a, out, n);
}

/* A ranker's prediction names both models: "<GRU version>+<ranker>.<version>". */
static void label_model(const struct cstep *c, struct click_prediction *p, int arm)
{
    const struct rk *rk = rk_set_get(c->rks, arm);
    const struct sess_model *m = c->models[c->arm_model[arm < 0 ? 0 : arm]];

    if (rk)
        snprintf(p->model_version, sizeof(p->model_version), "%.12s+%.12s.%.4s",
                 sess_model_version(m), rk_name(rk), rk_version(rk));
}

/* top: the session's best items (NULL: cold start), h its hidden state. */
static void rank(struct cstep *c, size_t i, const struct sess_top *top, const float *h)
{
    struct slot *s = &c->sl[i];
    struct click_prediction *p = &c->preds[i];
    struct rec_list lists[REC_NSOURCES];
    int64_t now = s->ev->event_time_ms;
    struct src_session ss = {s->hist,
                             s->n_hist,
                             s->cart,
                             s->n_cart,
                             now,
                             c->cov_out + i * (size_t)c->cov_q,
                             (size_t)c->cov_n[i],
                             c->popular,
                             c->n_popular};
    struct rec_input in = {.top = top,
                           .n_top = top ? (size_t)c->kbatch : 0,
                           .h = top ? h : NULL,
                           .exclude = s->hist,
                           .n_exclude = (size_t)s->n_hist,
                           .covisit = ss.covisit,
                           .n_covisit = ss.n_covisit,
                           .popular = c->popular,
                           .n_popular = c->n_popular};

    if (!c->sp.legacy) { /* the sources by quota, the catalogue's new items */
        in.n_lists = src_lists(c->src, c->cat, &ss, lists);
        in.lists = lists;
        if (c->cat) {
            in.present = cat_present(c->cat);
            in.n_present = cat_count_unseen(c->cat);
            in.n_boosted = src_boosted(c->src, c->cat, now, &in.boosted);
        }
    }
    if (c->pass_arm >= 0) { /* a shadow arm with its own GRU: its pass ranks it alone */
        rank_arm(c, i, (size_t)c->pass_arm, top != NULL, &in, now);
        return;
    }
    rank_arm(c, i, (size_t)s->arm, top != NULL, &in, now);
    if (top)
        label_model(c, p, c->n_arms ? s->arm : -1);
    /* shadow arms of this GRU: the same candidates ranked by each, logged, never shown */
    for (size_t a = c->shadow_from; a < c->n_arms; a++)
        if (c->arm_model[a] == c->pass_model)
            rank_arm(c, i, a, top != NULL, &in, now);
}

/* How many of the GRU's best items to fetch per session: its quota (plus
 * the history, which rec_rank skips), or, with sources, when rec_rank keeps
 * only the mmr_candidates most relevant of the union for MMR and no
 * second-stage ranker reads the pool, mmr_candidates (plus the history):
 * a GRU item past the GRU's own mmr_candidates best can never be among the
 * union's. Fetching 800 to keep 100 made the IVF selection (buffers of 2k,
 * a threshold that rises late) the largest cost of a pool of 2,000
 * (bench/results.md). What the 700 others changed: another source's
 * quota did not count them (they were in the pool already), so that
 * source reached a little further down its list. */
static int gru_fetch(const struct cstep *c)
{
    const char *files[1];
    int need = c->ropts.mmr_pool;

    if (c->sp.legacy || need <= 0 || need >= c->ropts.candidates ||
        rk_set_files(c->rks, files, 1))
        return c->ktop;
    return need + c->history;
}

/* Ranks the clicks [from, to) whose rows are in the current micro-batch. */
static void rank_rows(struct cstep *c, size_t from, size_t to, size_t rows)
{
    size_t hid = (size_t)sess_model_hidden(c->m), nb = (rows - 1) % c->score_batch + 1;

    c->kbatch = gru_fetch(c);
    /* IVF, or exact (also if the IVF scratch refused: cannot happen, it is sized for ktop);
     * rec_rank takes the top as a set: IVF leaves it unsorted */
    if (!c->ann || ann_topk_unordered(c->ann, c->annq, nb, c->h, c->kbatch, c->top, NULL))
        sess_topk(c->m, nb, c->h, c->kbatch, c->top, c->block);
    c->cnt.batches++;
    for (size_t j = from; j < to; j++) {
        const struct slot *s = &c->sl[j];
        size_t r;
        if (!s->ev || s->row < 0)
            continue;
        r = (size_t)s->row % c->score_batch;
        rank(c, j, c->top + r * (size_t)c->kbatch, c->h + r * hid);
    }
    rk_set_flush(c->rks, ranked, c); /* before c->top and c->h move on */
}

/* One pass: the clicks served by the GRU c->m (pass_arm < 0), or ranked
 * by shadow arm pass_arm whose GRU is not their serving one (its state
 * recomputed from the session's items: shadow states are never stored,
 * so nothing of them reaches the serving arm's). Sessions with a hidden
 * state are scored score_batch at a time (blocked sgemm + top-k over the
 * catalog); cold ones rank popular items. */
static void rank_pass(struct cstep *c)
{
    size_t hid = (size_t)sess_model_hidden(c->m);
    size_t rows = 0, i, start = 0;

    for (i = 0; i < c->n; i++) {
        struct slot *s = &c->sl[i];
        float *h = c->h + (rows % c->score_batch) * hid;
        int warm;
        s->row = -1;
        if (!s->ev || (c->arm_model[s->arm] == c->pass_model) != (c->pass_arm < 0))
            continue;
        if (c->pass_arm < 0) {
            warm = s->has_h;
            c->preds[i].cold_start = !warm;
            c->cnt.cold += !warm;
            if (warm)
                memcpy(h, c->h_ev + i * hid, hid * sizeof(float));
        } else {
            replay_hist(c, (size_t)c->pass_model, s->hist, s->n_hist, h, &warm);
        }
        if (!warm) {
            rank(c, i, NULL, NULL);
            continue;
        }
        s->row = (int)rows++;
        if (rows % c->score_batch == 0) {
            rank_rows(c, start, i + 1, rows);
            start = i + 1;
        }
    }
    if (rows % c->score_batch)
        rank_rows(c, start, c->n, rows);
    c->cnt.rows += rows;
}

/* A pass per GRU over the clicks it serves, then one per shadow arm whose
 * GRU differs from a click's serving one; one pass without arms' GRUs. */
static void rank_all(struct cstep *c)
{
    c->pass_arm = -1;
    for (size_t g = 0; g < c->n_models; g++) {
        use_model(c, g);
        rank_pass(c);
    }
    for (size_t a = c->shadow_from; a < c->n_arms && c->n_models > 1; a++) {
        use_model(c, (size_t)c->arm_model[a]);
        c->pass_arm = (int)a;
        rank_pass(c);
    }
    c->pass_arm = -1;
    use_model(c, 0);
}

static void init_prediction(struct cstep *c, size_t i, const struct cstep_click *in)
{
    struct click_prediction *p = &c->preds[i];
    const struct click_event *ev = in->ev;

    memset(p, 0, sizeof(*p));
    memcpy(p->session_id, ev->session_id, sizeof(p->session_id));
    memcpy(p->event_id, ev->event_id, sizeof(p->event_id));
    p->event_time_ms = ev->event_time_ms;
    p->degraded = c->degraded;
    const struct sess_model *m = c->models[c->sl[i].mi];

    snprintf(p->model_name, sizeof(p->model_name), "%s", sess_model_name(m));
    snprintf(p->model_version, sizeof(p->model_version), "%s", sess_model_version(m));
    snprintf(p->src_topic, sizeof(p->src_topic), "%s", in->topic);
    p->src_partition = in->partition;
    p->src_offset = in->offset;
}

int cstep_batch(struct cstep *c, size_t n, const struct cstep_click *in,
                struct click_prediction *out)
{
    c->n = n < c->cap ? n : c->cap;
    c->preds = out;
    pipe_entset_clear(&c->sessions);
    for (size_t i = 0; i < c->n; i++) {
        struct slot *s = &c->sl[i];
        s->ev = in[i].ev;
        s->partition = in[i].partition;
        s->offset = in[i].offset;
        s->arm = c->n_arms && (size_t)in[i].arm < c->n_arms ? in[i].arm : 0;
        s->mi = c->arm_model[s->arm];
        s->row = -1;
        if (s->ev)
            s->sess = pipe_entset_add(&c->sessions, s->ev->session_id);
    }
    c->degraded = read_states(c);
    for (size_t i = 0; i < c->n; i++)
        if (c->sl[i].ev) {
            init_prediction(c, i, &in[i]);
            advance(c, i);
        }
    fetch_popular(c);
    fetch_covisited(c);
    rank_all(c);
    for (size_t i = 0; c->shadow && i < c->n; i++)
        for (size_t a = 0; c->sl[i].ev && a < c->n_arms - c->shadow_from; a++) {
            struct click_prediction *q = &c->shadow[i * (c->n_arms - c->shadow_from) + a];
            int n_items = q->n_items;
            struct click_shown items[CLICK_SHOWN_MAX];
            memcpy(items, q->items, sizeof(items));
            const struct sess_model *m = c->models[c->arm_model[a + c->shadow_from]];
            *q = c->preds[i]; /* ids, flags; its own items and model */
            q->n_items = n_items;
            memcpy(q->items, items, sizeof(items));
            snprintf(q->model_name, sizeof(q->model_name), "%s", sess_model_name(m));
            snprintf(q->model_version, sizeof(q->model_version), "%s", sess_model_version(m));
            if (!q->cold_start)
                label_model(c, q, (int)(a + c->shadow_from));
        }
    return c->degraded;
}

int cstep_arms(struct cstep *c, size_t n, const double *lambda_diversity, const double *epsilon,
               size_t shadow_from, struct err *e)
{
    if (n > CSTEP_MAX_ARMS || shadow_from > n)
        return err_set(e, ERR_CONFIG, "%zu arms (at most %d)", n, CSTEP_MAX_ARMS);
    for (size_t a = 0; a < n; a++) {
        struct rec_opts o = c->ropts;
        o.lambda_diversity = lambda_diversity[a];
        o.epsilon = epsilon[a];
        c->arm_o[a] = o;
        /* each arm its own draws, reproducible from clickstream.seed */
        if (rec_ctx_open(&c->arm_rc[a], c->m, &o, c->seed + 0x9e3779b97f4a7c15ULL * (a + 1), e))
            return e->code;
        c->n_arms = a + 1;
    }
    c->shadow_from = shadow_from;
    if (shadow_from < n && !(c->shadow = calloc(c->cap * (n - shadow_from), sizeof(*c->shadow))))
        return err_set(e, ERR_NOMEM, "out of memory for the shadow arms' rankings");
    return ERR_OK;
}

/* The state's owner tag of an arm's own GRU: 1..127 from the arm's name
 * (FNV-1a), so that it survives restarts, reloads and other arms' changes. */
static int owner_tag(const char *name)
{
    uint32_t h = 2166136261u;

    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 16777619u;
    return 1 + (int)(h % 127);
}

/* Opens arm a's GRU (path) as models[c->n_models]: the same catalogue and
 * hidden size as clickstream.model, or ERR_CONFIG naming the arm and file. */
static int open_arm_model(struct cstep *c, const char *name, const char *path, struct err *e)
{
    size_t g = c->n_models;
    const struct sess_model *m0 = c->models[0];
    struct sess_model *m;

    if (sess_model_open(&m, path, e)) {
        char pre[400];
        snprintf(pre, sizeof(pre), "clickstream.arms: %s: model=%s: ", name, path);
        err_prefix(e, pre);
        return e->code;
    }
    c->models[g] = m;
    c->n_models++;
    if (!(c->mpaths[g] = strdup(path)))
        return err_set(e, ERR_NOMEM, "out of memory");
    if (sess_model_items(m) != sess_model_items(m0) ||
        sess_model_hidden(m) != sess_model_hidden(m0))
        return err_set(e, ERR_CONFIG,
                       "clickstream.arms: %s: model=%s: %lld items, hidden size %d; "
                       "clickstream.model has %lld items, hidden size %d (an arm's GRU shares "
                       "the catalogue's item ids and the session state's size)",
                       name, path, (long long)sess_model_items(m), sess_model_hidden(m),
                       (long long)sess_model_items(m0), sess_model_hidden(m0));
    c->owner[g] = owner_tag(name);
    for (size_t k = 1; k < g; k++)
        if (c->owner[k] == c->owner[g])
            return err_set(e, ERR_CONFIG,
                           "clickstream.arms: %s: its state tag collides with another arm's "
                           "GRU (rename the arm)",
                           name);
    if (c->ivf && (ann_open(&c->anns[g], m, &c->ao, e) ||
                   ann_query_open(&c->annqs[g], c->anns[g], c->ktop, e)))
        return e->code;
    return ERR_OK;
}

int cstep_arm_models(struct cstep *c, size_t n, const char *const *paths,
                     const char *const *names, struct err *e)
{
    for (size_t a = 0; a < n && a < c->n_arms; a++) {
        const char *path = paths[a];
        size_t g = 1;
        c->arm_model[a] = 0;
        if (!path || !*path || !strcmp(path, "-") || !strcmp(path, c->path))
            continue;
        while (g < c->n_models && strcmp(c->mpaths[g], path))
            g++;
        if (g == c->n_models && open_arm_model(c, names[a], path, e))
            return e->code;
        c->arm_model[a] = (int)g;
        rec_ctx_close(c->arm_rc[a]); /* its ranking over its own GRU, the same draws */
        c->arm_rc[a] = NULL;
        if (rec_ctx_open(&c->arm_rc[a], c->models[g], &c->arm_o[a],
                         c->seed + 0x9e3779b97f4a7c15ULL * (a + 1), e))
            return e->code;
        log_info("arm %s: its own GRU %s (%s %s)", names[a], path,
                 sess_model_name(c->models[g]), sess_model_version(c->models[g]));
    }
    return ERR_OK;
}

int cstep_arm_rankers(struct cstep *c, size_t n, const char *const *paths, struct err *e)
{
    for (size_t a = 0; a < n && a < c->n_arms; a++)
        if (rk_set_arm(c->rks, a, paths[a], c->models[c->arm_model[a]], e))
            return e->code;
    return ERR_OK;
}

struct rk *cstep_ranker(const struct cstep *c, int a)
{
    return rk_set_get(c->rks, a);
}

size_t cstep_files(const struct cstep *c, const char **paths, size_t cap)
{
    size_t n = 0;

    if (!cap)
        return 0;
    paths[n++] = c->path;
    for (size_t g = 1; g < c->n_models && n < cap; g++) /* the arms' own GRUs */
        paths[n++] = c->mpaths[g];
    return n + rk_set_files(c->rks, paths + n, cap - n);
}

const struct click_prediction *cstep_shadow(const struct cstep *c, size_t i, size_t k)
{
    if (!c->shadow || k < c->shadow_from || k >= c->n_arms || i >= c->n)
        return NULL;
    return &c->shadow[i * (c->n_arms - c->shadow_from) + k - c->shadow_from];
}

/* ---- counts and states ---- */

/* Co-visitation and trending counts of the batch's fresh clicks of known
 * items, idempotent per (partition, offset) and fenced by the state's
 * epochs (common/streams/covis.h). 0 when counted (or nothing to count). */
static int count_clicks(struct cstep *c)
{
    size_t nc = 0;
    struct cov_result r = {0};
    struct err e = {0};
    int rc;

    for (size_t i = 0; i < c->n; i++) {
        const struct slot *s = &c->sl[i];
        if (!s->ev || !s->fresh || c->clicks[i].item < 0)
            continue;
        c->clicks[nc] = c->clicks[i];
        c->clicks[nc++].epoch = state_epoch(c->st, c->clicks[i].partition);
    }
    if (!c->cov || !nc)
        return ERR_OK;
    rc = cov_update(c->cov, nc, c->clicks, &r, &e);
    if (rc == ERR_RETRY) /* the handle reconnects once; the call is idempotent */
        rc = cov_update(c->cov, nc, c->clicks, &r, &e);
    if (rc) {
        c->cnt.cov_errors++;
        log_error("co-visitation/trending counts of %zu click(s) not updated, their session "
                  "states not stored either: %s",
                  nc, e.msg);
        return rc;
    }
    c->cnt.cov_redelivered += r.redelivered;
    c->cnt.cov_fenced += r.fenced;
    if (r.redelivered || r.fenced) /* rare: after a crash or a rebalance */
        log_info("counts: %zu redelivered click(s) already counted, skipped; %zu fenced",
                 r.redelivered, r.fenced);
    return ERR_OK;
}

/* Counts first, then one put per session that moved, at its last click's
 * offset. In that order a crash between the two writes redelivers clicks
 * whose counts are skipped (applied offset) and whose states advance once;
 * the other order would lose their counts. */
void cstep_store(struct cstep *c)
{
    size_t np = 0;
    struct err e = {0};

    if (c->degraded || count_clicks(c))
        return; /* not half-applied: the batch keeps neither (as when Redis is down) */
    if (c->kill_after && ++c->stores == c->kill_after)
        raise(SIGKILL); /* test hook: a crash between the two writes */
    for (size_t s = 0; s < c->sessions.n; s++) {
        int i = c->last_ev[s];
        size_t len;
        if (i < 0)
            continue;
        len = sess_state_encode(&c->states[s], c->enc[np], STATE_BLOB_MAX);
        if (!len)
            continue; /* cannot happen: the size is checked at open */
        c->puts[np] = (struct state_put){c->sessions.ids[s], c->enc[np], len, c->sl[i].partition,
                                         c->sl[i].offset};
        np++;
    }
    memset(c->applied, 0, np * sizeof(int));
    if (np && pipe_state_put(c->st, c->budget_ms, np, c->puts, c->applied, &e)) {
        c->cnt.state_errors++;
        log_error("session state of %zu session(s) not stored: %s", np, e.msg);
    }
}

void cstep_log_summary(const struct cstep *c, double secs, uint64_t messages,
                       uint64_t predictions, uint64_t degraded)
{
    const struct cstep_counts *k = cstep_counts(c);

    log_info("summary: %llu messages in %.1f s: %llu predictions (%llu cold start, %llu unknown "
             "item, %llu redelivered, %llu degraded); %llu items shown, %llu explored; %llu "
             "sessions scored in %llu %s batches; %llu stored states ignored, %llu recomputed for "
             "another arm's GRU, %llu state write failures, %llu co-visitation errors",
             (unsigned long long)messages, secs, (unsigned long long)predictions,
             (unsigned long long)k->cold, (unsigned long long)k->unknown,
             (unsigned long long)k->redelivered, (unsigned long long)degraded,
             (unsigned long long)k->shown, (unsigned long long)k->explored,
             (unsigned long long)k->rows, (unsigned long long)k->batches,
             cstep_ivf(c) ? "IVF" : "sgemm", (unsigned long long)k->bad_state,
             (unsigned long long)k->reassigned, (unsigned long long)k->state_errors,
             (unsigned long long)k->cov_errors);
    log_info("counts: %llu redelivered click(s) skipped (already counted), %llu fenced; new "
             "items: %llu impressions, %llu clicks",
             (unsigned long long)k->cov_redelivered, (unsigned long long)k->cov_fenced,
             (unsigned long long)k->new_shown, (unsigned long long)k->new_clicks);
    rk_set_log(c->rks);
}
