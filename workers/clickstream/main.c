/* streamml-clickstream: next items to show after each click of a session.
 *
 *   clickstream --poll--> decode (Avro) --bad--> clickstream.dlq
 *        |                   |
 *        |        session states of the batch (Redis, one round trip)
 *        |                   |
 *        |        per click: one GRU step of the session's hidden state
 *        |        (unknown item: counted, state kept, no step)
 *        |                   |
 *        |        scores over the catalog: one sgemm per score_batch sessions
 *        |        (clickstream.search=ivf: over the probed clusters, common/ann.h)
 *        |        candidates (GRU top, co-visited, trending/popular), items of
 *        |        the session excluded, MMR, epsilon-greedy (source, propensity)
 *        |                   |
 *        +-- offset stored <-- delivered + state stored <-- predictions.clickstream
 *
 * Each decodable click gets exactly one prediction; undecodable ones go to
 * the dead-letter topic. State writes are idempotent per (partition,
 * offset) (common/state.h): a click redelivered after a crash does not
 * advance its session twice; it is answered from the stored state.
 * Co-visitation and trending counts (common/covis.h) are updated before the
 * state, idempotent per (partition, offset) too, so both are exactly once
 * across a crash; a newly assigned partition is fenced (state_fence) for
 * both. While Redis is down the
 * clicks are answered from this batch alone, flagged degraded, and their
 * state is not kept (a session recommender tolerates the gap; the
 * partition never stalls).
 */
#include <cblas.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ann.h"
#include "cli.h"
#include "codec.h"
#include "covis.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "monitor.h"
#include "pipeline.h"
#include "predmon.h"
#include "session.h"
#include "state.h"

#define WORKER "clickstream"
#define POPULAR_MAX 200

static volatile sig_atomic_t g_run = 1;

static void on_signal(int sig)
{
    (void)sig;
    g_run = 0;
}

struct counters {
    uint64_t messages, predictions, dead, degraded, cold, unknown, redelivered, bad_state, explored,
        shown, batches, rows, cov_errors, state_errors;
    uint64_t cov_redelivered, cov_fenced; /* clicks the counts skipped or refused */
};

/* Per message of a batch. */
struct slot {
    struct click_event ev;
    int dead, fresh, sess, row; /* row of the hidden-state matrix, -1: cold */
    int has_h;                  /* the session had a known item by this click */
    int n_hist;
    int64_t hist[SESS_MAX_HISTORY]; /* the session's items after this click */
    int64_t t_in;
};

struct worker {
    struct cfg *cf;
    struct kq *q;
    struct codec *cd;
    struct state *st;
    struct cov *cov;
    struct metrics *mx; /* NULL: metrics.port 0 */
    int redis_ok;
    struct sess_model *m;
    struct ann *ann; /* clickstream.search=ivf; NULL: exact */
    struct ann_query *annq;
    struct rec_ctx *rc;
    const char *out_topic, *dlq_topic;
    size_t cap, score_batch;
    int k, history, budget_ms;
    struct kq_msg **msgs;
    struct slot *sl;
    struct click_prediction *preds;
    struct entset sessions;
    struct state_blob *blobs;
    struct sess_state *states;
    int *last_ev; /* per session: its last fresh click, -1 none */
    unsigned char (*enc)[STATE_BLOB_MAX];
    struct state_put *puts;
    int *applied;
    float *h, *block, scratch[6 * SESS_MAX_HIDDEN];
    float *h_ev;          /* per message: its session's state after it */
    struct sess_top *top; /* score_batch x ktop */
    int ktop;             /* candidates + history: enough after exclusion */
    int64_t *cov_items, *cov_out;
    int *cov_n;
    struct cov_click *clicks;
    int64_t popular[POPULAR_MAX];
    size_t n_popular;
    struct buf out, dlq;
    struct counters n;
    int64_t kill_after, stores; /* clickstream.test_kill_between_writes */
    struct mon *mon;            /* NULL: monitor.baseline empty (monitoring off) */
    struct mon_ident mid;
};

/* ---- set-up ---- */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: streamml-clickstream [-c FILE] [-X key=value ...] [-b HOSTS]\n\n"
            "Consumes input.topic (default clickstream; click events keyed by session id)\n"
            "in the consumer group kafka.group.id (default streamml-clickstream). Each click\n"
            "advances its session's GRU state (Redis, expiring after clickstream.session_ttl_s\n"
            "of inactivity) by one step; the next clickstream.k items (GRU scores, co-visited\n"
            "and trending items; the session's items excluded; MMR re-ranked; epsilon-greedy\n"
            "exploration with source and propensity per item) go to output.topic (default\n"
            "predictions.clickstream). Undecodable messages go to dlq.topic (default\n"
            "clickstream.dlq).\n"
            "SIGTERM/SIGINT: finish in-flight work, commit, leave the group, exit 0.\n"
            "Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.\n\n");
    cfg_help(out);
}

/* The shared keys' defaults are the transactions worker's. */
static int click_defaults(struct cfg *cf, struct err *e)
{
    static const char *const kv[][2] = {{"input.topic", "clickstream"},
                                        {"output.topic", "predictions.clickstream"},
                                        {"dlq.topic", "clickstream.dlq"}};

    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
        if (strcmp(cfg_origin(cf, kv[i][0]), "default") == 0 &&
            cfg_set(cf, kv[i][0], kv[i][1], "default", e))
            return e->code;
    return ERR_OK;
}

static int open_model(struct worker *w, struct err *e)
{
    const struct cfg *cf = w->cf;
    struct rec_opts o = {.k = (int)cfg_int(cf, "clickstream.k"),
                         .candidates = (int)cfg_int(cf, "clickstream.candidates"),
                         .mmr_lambda = cfg_double(cf, "clickstream.mmr_lambda"),
                         .epsilon = cfg_double(cf, "clickstream.epsilon")};
    uint64_t seed = (uint64_t)cfg_int(cf, "clickstream.seed");
    const char *path = cfg_str(cf, "clickstream.model");

    if (sess_model_open(&w->m, path, e))
        return e->code;
    /* process-wide; one thread by default: scale out with workers (partitions) */
    openblas_set_num_threads((int)cfg_int(cf, "clickstream.blas_threads"));
    if (!seed)
        seed = (uint64_t)pipe_wall_ms() ^ ((uint64_t)getpid() << 32);
    if (rec_ctx_open(&w->rc, w->m, &o, seed, e))
        return e->code;
    w->k = o.k;
    log_info("model %s (%s %s): %lld items, hidden %d; top %d of %d candidates, MMR lambda "
             "%.2f, epsilon %.3f",
             path, sess_model_name(w->m), sess_model_version(w->m),
             (long long)sess_model_items(w->m), sess_model_hidden(w->m), o.k, o.candidates,
             o.mmr_lambda, o.epsilon);
    return ERR_OK;
}

/* clickstream.search=ivf: the IVF index over the model's output layer,
 * built at start (seeded: the same clusters every start). */
static int open_search(struct worker *w, struct err *e)
{
    struct ann_opts o = {.lists = (int)cfg_int(w->cf, "clickstream.ivf_lists"),
                         .probe = (int)cfg_int(w->cf, "clickstream.ivf_probe")};
    int64_t lo, hi;
    int ktop = (int)cfg_int(w->cf, "clickstream.candidates") + w->history;

    if (strcmp(cfg_str(w->cf, "clickstream.search"), "ivf") != 0)
        return ERR_OK;
    if (ann_open(&w->ann, w->m, &o, e) || ann_query_open(&w->annq, w->ann, ktop, e))
        return e->code;
    ann_list_sizes(w->ann, &lo, &hi);
    log_info("IVF search: %d lists (%lld..%lld items), probe %d, built in %.0f ms",
             ann_lists(w->ann), (long long)lo, (long long)hi, ann_probe(w->ann),
             ann_build_ms(w->ann));
    return ERR_OK;
}

static int open_state(struct worker *w, struct err *e)
{
    const struct cfg *cf = w->cf;
    const char *pw = *cfg_str(cf, "redis.password") ? cfg_str(cf, "redis.password") : NULL;
    struct state_redis_opts ro = {.host = cfg_str(cf, "redis.host"),
                                  .port = (int)cfg_int(cf, "redis.port"),
                                  .password = pw,
                                  .prefix = cfg_str(cf, "redis.prefix"),
                                  .ttl_s = (int)cfg_int(cf, "clickstream.session_ttl_s"),
                                  .timeout_ms = (int)cfg_int(cf, "redis.timeout_ms"),
                                  .lazy = !cfg_int(cf, "redis.require_at_start")};
    struct cov_opts co = {.host = ro.host,
                          .port = ro.port,
                          .password = pw,
                          .prefix = ro.prefix,
                          .ttl_s = (int)cfg_int(cf, "clickstream.covisit_ttl_s"),
                          .half_life_s = cfg_double(cf, "clickstream.trending_half_life_s"),
                          .timeout_ms = ro.timeout_ms};
    int memory = strcmp(cfg_str(cf, "state.backend"), "memory") == 0;

    w->st = memory ? state_open_memory() : state_open_redis(&ro, e);
    if (!w->st)
        return memory ? err_set(e, ERR_NOMEM, "out of memory") : e->code;
    if (!memory && cfg_int(cf, "clickstream.covisit") && cov_open(&w->cov, &co, e))
        return e->code;
    return ERR_OK;
}

static int alloc_batch(struct worker *w, struct err *e)
{
    size_t c = w->cap, sb = w->score_batch, hid = (size_t)sess_model_hidden(w->m);
    w->msgs = calloc(c, sizeof(*w->msgs));
    w->sl = calloc(c, sizeof(*w->sl));
    w->preds = calloc(c, sizeof(*w->preds));
    w->blobs = calloc(c, sizeof(*w->blobs));
    w->states = calloc(c, sizeof(*w->states));
    w->last_ev = calloc(c, sizeof(int));
    w->enc = calloc(c, sizeof(*w->enc));
    w->puts = calloc(c, sizeof(*w->puts));
    w->applied = calloc(c, sizeof(int));
    w->h = calloc(c * hid, sizeof(float));
    w->h_ev = calloc(c * hid, sizeof(float));
    w->ktop = (int)cfg_int(w->cf, "clickstream.candidates") + w->history;
    w->block = calloc((sb < 256 ? sb : 256) * SESS_BLOCK, sizeof(float));
    w->top = calloc(sb * (size_t)w->ktop, sizeof(*w->top));
    w->cov_items = calloc(c, sizeof(int64_t));
    w->cov_out = calloc(c * (size_t)w->k, sizeof(int64_t));
    w->cov_n = calloc(c, sizeof(int));
    w->clicks = calloc(c, sizeof(*w->clicks));
    buf_init(&w->out, 0);
    buf_init(&w->dlq, 2 * CODEC_MAX_MESSAGE); /* the original message plus metadata */
    if (!w->msgs || !w->sl || !w->preds || !w->blobs || !w->states || !w->last_ev || !w->enc ||
        !w->puts || !w->applied || !w->h || !w->h_ev || !w->block || !w->top || !w->cov_items ||
        !w->cov_out || !w->cov_n || !w->clicks || pipe_entset_init(&w->sessions, c))
        return err_set(e, ERR_NOMEM, "out of memory for a batch of %zu", c);
    return ERR_OK;
}

static const char *group_id(const struct cfg *cf)
{
    return cli_group_id(cf, "streamml-clickstream");
}

/* Zombie fencing (as the transactions worker): a newly assigned partition
 * takes a new epoch, so a former owner stalled past a rebalance can write
 * neither session states nor counts of it. */
static int fence_partition(const char *topic, int32_t partition, void *opaque)
{
    struct err e = {0};

    if (state_fence(opaque, partition, &e)) {
        log_error("fencing %s [%d]: %s", topic, (int)partition, e.msg);
        return e.code;
    }
    return ERR_OK;
}

static int open_kafka(struct worker *w, struct err *e)
{
    const char *topic = cfg_str(w->cf, "input.topic");
    size_t np;
    struct kq_opts ko = {.group_id = group_id(w->cf),
                         .topics = &topic,
                         .n_topics = 1,
                         .client_id = "streamml-clickstream"};

    ko.props = cfg_kafka(w->cf, &np);
    ko.commit_interval_ms = (int)cfg_int(w->cf, "worker.commit_interval_ms");
    ko.n_props = np;
    ko.stats_cb = w->mx ? metrics_kafka_stats : NULL; /* consumer lag */
    ko.stats_opaque = w->mx;
    ko.on_assign = fence_partition;
    ko.assign_opaque = w->st;
    w->q = kq_open(&ko, e);
    if (!w->q)
        return e->code;
    log_info("consuming %s as group %s -> %s (dead letters: %s), batches of %zu", topic,
             ko.group_id, w->out_topic, w->dlq_topic, w->cap);
    return ERR_OK;
}

static int worker_open(struct worker *w, struct err *e)
{
    w->cap = (size_t)cfg_int(w->cf, "worker.batch_size");
    w->score_batch = (size_t)cfg_int(w->cf, "clickstream.score_batch");
    w->history = (int)cfg_int(w->cf, "clickstream.history");
    w->budget_ms = (int)cfg_int(w->cf, "state.retry_budget_ms");
    w->out_topic = cfg_str(w->cf, "output.topic");
    w->dlq_topic = cfg_str(w->cf, "dlq.topic");
    w->redis_ok = 1;
    w->kill_after = cfg_int(w->cf, "clickstream.test_kill_between_writes");
    w->cd = codec_open(cfg_str(w->cf, "schemas.dir"), e);
    if (!w->cd || open_model(w, e) || open_search(w, e))
        return e->code;
    /* a session's state must fit one blob: header, history, hidden state */
    if (36 + 8 * (size_t)w->history + 4 * (size_t)sess_model_hidden(w->m) > STATE_BLOB_MAX)
        return err_set(e, ERR_CONFIG,
                       "clickstream.history %d with hidden size %d: the session "
                       "state exceeds %d bytes",
                       w->history, sess_model_hidden(w->m), STATE_BLOB_MAX);
    if (open_state(w, e) || alloc_batch(w, e))
        return e->code;
    struct metrics_opts mo = {(int)cfg_int(w->cf, "metrics.port"),
                              WORKER,
                              sess_model_name(w->m),
                              sess_model_version(w->m),
                              0,
                              cfg_str(w->cf, "clickstream.model")};
    if (!(w->mx = metrics_open(&mo, e)) && e->code)
        return e->code;
    /* monitoring: the values of common/predmon.h against monitor.baseline */
    w->mid = (struct mon_ident){WORKER, sess_model_name(w->m), sess_model_version(w->m),
                                cfg_str(w->cf, "monitor.topic")};
    w->mon = mon_open_cfg(w->cf, pmon_names(PMON_CLICKSTREAM, &(size_t){0}), PMON_CLICK_DIM, e);
    if (!w->mon && e->code)
        return e->code;
    return open_kafka(w, e);
}

static void worker_close(struct worker *w)
{
    void *arrays[] = {w->msgs,      w->sl,      w->preds,   w->blobs,  w->states, w->last_ev,
                      w->enc,       w->puts,    w->applied, w->h,      w->block,  w->top,
                      w->cov_items, w->cov_out, w->cov_n,   w->clicks, w->h_ev};

    for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++)
        free(arrays[i]);
    pipe_entset_free(&w->sessions);
    buf_free(&w->out);
    buf_free(&w->dlq);
    metrics_close(w->mx);
    mon_close(w->mon);
    rec_ctx_close(w->rc);
    ann_query_close(w->annq);
    ann_close(w->ann);
    sess_model_close(w->m);
    cov_close(w->cov);
    state_close(w->st);
    codec_close(w->cd);
}

/* ---- one batch: decode, read state, advance sessions ---- */

static void dead_letter(struct worker *w, size_t i, const struct err *why)
{
    struct err e = {0};

    w->sl[i].dead = 1;
    w->n.dead++;
    metrics_add(w->mx, METRICS_DEAD_LETTERS, 1);
    if (w->mon)
        mon_observe_dead(w->mon, pipe_wall_ms());
    if (pipe_dead_letter(w->q, w->cd, &w->dlq, w->dlq_topic, WORKER, w->msgs[i], why, &e))
        log_error("dead letter not sent (offset will not be committed): %s", e.msg);
}

static void decode(struct worker *w, size_t n)
{
    pipe_entset_clear(&w->sessions);
    for (size_t i = 0; i < n; i++) {
        struct slot *s = &w->sl[i];
        struct err e = {0};
        s->t_in = pipe_now_us();
        s->dead = 0;
        s->row = -1;
        if (codec_decode_click_event(w->cd, w->msgs[i]->payload, w->msgs[i]->len, &s->ev, &e)) {
            dead_letter(w, i, &e);
            continue;
        }
        s->sess = pipe_entset_add(&w->sessions, s->ev.session_id);
    }
}

/* Reads the batch's sessions; 1 if Redis could not be read (degraded). */
static int read_states(struct worker *w)
{
    int hid = sess_model_hidden(w->m);
    struct err e = {0};
    int degraded = 0;

    if (w->sessions.n && pipe_state_get(w->st, w->budget_ms, w->sessions.n,
                                        (const char *const *)w->sessions.ids, w->blobs, &e)) {
        log_error("session state read failed, recommending degraded: %s", e.msg);
        degraded = 1;
    }
    for (size_t s = 0; s < w->sessions.n; s++) {
        w->last_ev[s] = -1;
        if (degraded) {
            w->blobs[s].len = 0;
            w->blobs[s].partition = -1;
        }
        if (!w->blobs[s].len) {
            sess_state_init(&w->states[s], hid);
        } else if (sess_state_decode(&w->states[s], w->blobs[s].data, w->blobs[s].len, hid, &e)) {
            /* another model's or a corrupt state: the session restarts */
            w->n.bad_state++;
            log_warn("session %s: stored state ignored: %s", w->sessions.ids[s], e.msg);
        }
    }
    return degraded;
}

/* A click newer than the session's stored state advances it by one step. */
static void advance(struct worker *w, size_t i)
{
    struct slot *s = &w->sl[i];
    struct sess_state *st = &w->states[s->sess];
    const struct state_blob *b = &w->blobs[s->sess];
    const struct kq_msg *m = w->msgs[i];
    struct err e = {0};
    int64_t prev = st->n_hist ? st->hist[st->n_hist - 1] : -1;

    s->fresh = !(b->partition == m->partition && m->offset <= b->offset);
    w->preds[i].unknown_item = s->ev.item_id < 0 || s->ev.item_id >= sess_model_items(w->m);
    if (!s->fresh) {
        w->n.redelivered++;
    } else {
        st->clicks++;
        st->last_ms = s->ev.event_time_ms;
        if (w->preds[i].unknown_item) {
            st->unknown++;
        } else if (sess_step(w->m, s->ev.item_id, st->h, w->scratch, &e) == ERR_OK) {
            st->has_h = 1;
            sess_state_push(st, s->ev.item_id, w->history);
        }
        w->last_ev[s->sess] = (int)i;
        w->clicks[i] = (struct cov_click){w->preds[i].unknown_item ? -1 : prev,
                                          w->preds[i].unknown_item ? -1 : s->ev.item_id,
                                          s->ev.event_time_ms,
                                          m->partition,
                                          m->offset,
                                          0};
    }
    w->n.unknown += (uint64_t)w->preds[i].unknown_item;
    /* a snapshot: later clicks of the session in this batch move st on */
    s->has_h = st->has_h;
    if (st->has_h)
        memcpy(w->h_ev + i * (size_t)st->hidden, st->h, (size_t)st->hidden * sizeof(float));
    s->n_hist = st->n_hist;
    memcpy(s->hist, st->hist, (size_t)st->n_hist * sizeof(int64_t));
    w->preds[i].session_clicks = st->clicks;
}

/* ---- candidates from Redis ---- */

static void fetch_popular(struct worker *w)
{
    size_t np;
    const int64_t *mp = sess_model_popular(w->m, &np);
    int nt = 0;
    struct err e = {0};

    w->n_popular = 0;
    if (w->cov && cov_trending(w->cov, w->k * 2, w->popular, &nt, &e)) {
        w->n.cov_errors++;
        log_warn("trending items not read (the model's popular items are used): %s", e.msg);
        nt = 0;
    }
    w->n_popular = (size_t)nt;
    for (size_t j = 0; j < np && w->n_popular < POPULAR_MAX; j++)
        w->popular[w->n_popular++] = mp[j]; /* duplicates are skipped by rec_rank */
}

static void fetch_covisited(struct worker *w, size_t n)
{
    struct err e = {0};

    for (size_t i = 0; i < n; i++) {
        const struct slot *s = &w->sl[i];
        w->cov_items[i] = !s->dead && s->n_hist ? s->hist[s->n_hist - 1] : -1;
        w->cov_n[i] = 0;
    }
    if (w->cov && cov_covisited(w->cov, n, w->cov_items, w->k, w->cov_out, w->cov_n, &e)) {
        w->n.cov_errors++;
        memset(w->cov_n, 0, n * sizeof(int));
        log_warn("co-visited items not read: %s", e.msg);
    }
}

/* ---- ranking ---- */

/* top: the session's best items (NULL: cold start), h its hidden state. */
static void rank(struct worker *w, size_t i, const struct sess_top *top, const float *h)
{
    struct slot *s = &w->sl[i];
    struct click_prediction *p = &w->preds[i];
    struct rec_item out[REC_MAX_K];
    struct rec_input in = {.top = top,
                           .n_top = top ? (size_t)w->ktop : 0,
                           .h = top ? h : NULL,
                           .exclude = s->hist,
                           .n_exclude = (size_t)s->n_hist,
                           .covisit = w->cov_out + i * (size_t)w->k,
                           .n_covisit = (size_t)w->cov_n[i],
                           .popular = w->popular,
                           .n_popular = w->n_popular};
    size_t n;

    rec_rank(w->rc, &in, out, &n);
    p->n_items = (int)n;
    for (size_t j = 0; j < n; j++) {
        p->items[j].item_id = out[j].item;
        p->items[j].score = out[j].score;
        p->items[j].propensity = out[j].propensity;
        snprintf(p->items[j].source, sizeof(p->items[j].source), "%s",
                 rec_source_name(out[j].source));
        w->n.explored += out[j].source == REC_EXPLORE;
    }
    w->n.shown += n;
}

/* Ranks the events [from, to) whose rows are in the current micro-batch. */
static void rank_rows(struct worker *w, size_t from, size_t to, size_t rows)
{
    size_t hid = (size_t)sess_model_hidden(w->m), nb = (rows - 1) % w->score_batch + 1;

    /* IVF, or exact (also if the IVF scratch refused: cannot happen, it is sized for ktop) */
    if (!w->ann || ann_topk(w->ann, w->annq, nb, w->h, w->ktop, w->top, NULL))
        sess_topk(w->m, nb, w->h, w->ktop, w->top, w->block);
    w->n.batches++;
    for (size_t j = from; j < to; j++) {
        const struct slot *s = &w->sl[j];
        size_t r;
        if (s->dead || s->row < 0)
            continue;
        r = (size_t)s->row % w->score_batch;
        rank(w, j, w->top + r * (size_t)w->ktop, w->h + r * hid);
    }
}

/* Sessions with a hidden state are scored score_batch at a time (blocked
 * sgemm + top-k over the catalog); cold ones rank popular items. */
static void rank_all(struct worker *w, size_t n)
{
    size_t hid = (size_t)sess_model_hidden(w->m);
    size_t rows = 0, i, start = 0;

    for (i = 0; i < n; i++) {
        struct slot *s = &w->sl[i];
        if (s->dead)
            continue;
        w->preds[i].cold_start = !s->has_h;
        if (w->preds[i].cold_start) {
            w->n.cold++;
            rank(w, i, NULL, NULL);
            continue;
        }
        memcpy(w->h + (rows % w->score_batch) * hid, w->h_ev + i * hid, hid * sizeof(float));
        s->row = (int)rows++;
        if (rows % w->score_batch == 0) {
            rank_rows(w, start, i + 1, rows);
            start = i + 1;
        }
    }
    if (rows % w->score_batch)
        rank_rows(w, start, n, rows);
    w->n.rows += rows;
}

/* ---- output, state, counts ---- */

static void init_prediction(struct worker *w, size_t i, int degraded)
{
    struct click_prediction *p = &w->preds[i];
    const struct click_event *ev = &w->sl[i].ev;
    const struct kq_msg *m = w->msgs[i];

    memcpy(p->session_id, ev->session_id, sizeof(p->session_id));
    memcpy(p->event_id, ev->event_id, sizeof(p->event_id));
    p->event_time_ms = ev->event_time_ms;
    p->degraded = degraded;
    snprintf(p->model_name, sizeof(p->model_name), "%s", sess_model_name(w->m));
    snprintf(p->model_version, sizeof(p->model_version), "%s", sess_model_version(w->m));
    snprintf(p->src_topic, sizeof(p->src_topic), "%s", m->topic);
    p->src_partition = m->partition;
    p->src_offset = m->offset;
}

/* The monitor's view of one prediction (common/predmon.h). */
static void observe(struct worker *w, const struct click_prediction *p)
{
    float x[PMON_CLICK_DIM];
    double score;

    if (!w->mon)
        return;
    pmon_click_vector(p, x, &score);
    mon_observe(w->mon, x, score, p->latency_us, p->degraded, pipe_wall_ms());
}

static void emit(struct worker *w, size_t i)
{
    struct click_prediction *p = &w->preds[i];
    struct err e = {0};

    p->latency_us = pipe_now_us() - w->sl[i].t_in;
    if (codec_encode_click_prediction(w->cd, p, &w->out, &e) ||
        kq_produce(w->q, w->out_topic, p->session_id, strlen(p->session_id), w->out.data,
                   w->out.len, &w->msgs[i]->pos, &e)) {
        log_error("prediction for %s not sent (offset will not be committed): %s", p->event_id,
                  e.msg);
        return;
    }
    w->n.predictions++;
    w->n.degraded += (uint64_t)p->degraded;
    metrics_add(w->mx, METRICS_PREDICTIONS, 1);
    metrics_add(w->mx, METRICS_DEGRADED, (uint64_t)p->degraded);
    metrics_observe_latency(w->mx, p->latency_us);
    observe(w, p);
}

/* Co-visitation and trending counts of the batch's fresh clicks of known
 * items, idempotent per (partition, offset) and fenced by the state's
 * epochs (common/covis.h). 0 when counted (or nothing to count). */
static int count_clicks(struct worker *w, size_t n)
{
    size_t nc = 0;
    struct cov_result r = {0};
    struct err e = {0};
    int rc;

    for (size_t i = 0; i < n; i++) {
        const struct slot *s = &w->sl[i];
        if (s->dead || !s->fresh || w->clicks[i].item < 0)
            continue;
        w->clicks[nc] = w->clicks[i];
        w->clicks[nc++].epoch = state_epoch(w->st, w->clicks[i].partition);
    }
    if (!w->cov || !nc)
        return ERR_OK;
    rc = cov_update(w->cov, nc, w->clicks, &r, &e);
    if (rc == ERR_RETRY) /* the handle reconnects once; the call is idempotent */
        rc = cov_update(w->cov, nc, w->clicks, &r, &e);
    if (rc) {
        w->n.cov_errors++;
        log_error("co-visitation/trending counts of %zu click(s) not updated, their session "
                  "states not stored either: %s",
                  nc, e.msg);
        return rc;
    }
    w->n.cov_redelivered += r.redelivered;
    w->n.cov_fenced += r.fenced;
    if (r.redelivered || r.fenced) /* rare: after a crash or a rebalance */
        log_info("counts: %zu redelivered click(s) already counted, skipped; %zu fenced",
                 r.redelivered, r.fenced);
    return ERR_OK;
}

/* Counts first, then one put per session that moved, at its last click's
 * offset. In that order a crash between the two writes redelivers clicks
 * whose counts are skipped (applied offset) and whose states advance once;
 * the other order would lose their counts. */
static void store(struct worker *w, size_t n)
{
    size_t np = 0;
    struct err e = {0};

    if (count_clicks(w, n))
        return; /* not half-applied: the batch keeps neither (as when Redis is down) */
    if (w->kill_after && ++w->stores == w->kill_after)
        raise(SIGKILL); /* test hook: a crash between the two writes */
    for (size_t s = 0; s < w->sessions.n; s++) {
        int i = w->last_ev[s];
        size_t len;
        if (i < 0)
            continue;
        len = sess_state_encode(&w->states[s], w->enc[np], STATE_BLOB_MAX);
        if (!len)
            continue; /* cannot happen: the size is checked at start-up */
        w->puts[np] = (struct state_put){w->sessions.ids[s], w->enc[np], len, w->msgs[i]->partition,
                                         w->msgs[i]->offset};
        np++;
    }
    memset(w->applied, 0, np * sizeof(int));
    if (np && pipe_state_put(w->st, w->budget_ms, np, w->puts, w->applied, &e)) {
        w->n.state_errors++;
        log_error("session state of %zu session(s) not stored: %s", np, e.msg);
    }
}

static void process_batch(struct worker *w, size_t n)
{
    int degraded;

    decode(w, n);
    degraded = read_states(w);
    w->redis_ok = !degraded;
    for (size_t i = 0; i < n; i++)
        if (!w->sl[i].dead) {
            memset(&w->preds[i], 0, sizeof(w->preds[i]));
            init_prediction(w, i, degraded);
            advance(w, i);
        }
    fetch_popular(w);
    fetch_covisited(w, n);
    rank_all(w, n);
    for (size_t i = 0; i < n; i++)
        if (!w->sl[i].dead)
            emit(w, i);
    if (!degraded)
        store(w, n);
    for (size_t i = 0; i < n; i++)
        if (!w->sl[i].dead)
            kq_ack(w->q, &w->msgs[i]->pos, KQ_ACK_STATE);
}

/* ---- the loop ---- */

static size_t take_batch(struct worker *w, struct err *e)
{
    size_t n = 0;
    struct kq_msg *m;
    int timeout = (int)cfg_int(w->cf, "worker.poll_ms");

    while (n < w->cap) {
        if (kq_poll(w->q, n ? 0 : timeout, &m, e) || !m)
            break;
        w->msgs[n++] = m;
    }
    return n;
}

static void log_summary(struct worker *w, double secs)
{
    const struct counters *c = &w->n;

    log_info("summary: %llu messages in %.1f s: %llu predictions (%llu cold start, %llu unknown "
             "item, %llu redelivered, %llu degraded), %llu dead-lettered; %llu items shown, %llu "
             "explored; %llu sessions scored in %llu %s batches; %llu stored states ignored, "
             "%llu state write failures, %llu co-visitation errors",
             (unsigned long long)c->messages, secs, (unsigned long long)c->predictions,
             (unsigned long long)c->cold, (unsigned long long)c->unknown,
             (unsigned long long)c->redelivered, (unsigned long long)c->degraded,
             (unsigned long long)c->dead, (unsigned long long)c->shown,
             (unsigned long long)c->explored, (unsigned long long)c->rows,
             (unsigned long long)c->batches, w->ann ? "IVF" : "sgemm",
             (unsigned long long)c->bad_state, (unsigned long long)c->state_errors,
             (unsigned long long)c->cov_errors);
    log_info("counts: %llu redelivered click(s) skipped (already counted), %llu fenced",
             (unsigned long long)c->cov_redelivered, (unsigned long long)c->cov_fenced);
}

static int run(struct worker *w)
{
    struct err e = {0};
    int64_t t0 = pipe_now_us(), last_input = t0;
    int64_t idle_us = cfg_int(w->cf, "worker.idle_exit_ms") * 1000;
    uint64_t max_msgs = (uint64_t)cfg_int(w->cf, "worker.max_messages");
    size_t max_inflight = (size_t)cfg_int(w->cf, "worker.max_inflight");

    while (g_run) {
        size_t n = 0;
        if (kq_inflight(w->q) < max_inflight)
            n = take_batch(w, &e);
        if (e.code == ERR_FATAL)
            break;
        if (n) {
            process_batch(w, n);
            for (size_t i = 0; i < n; i++)
                kq_msg_release(w->msgs[i]);
            w->n.messages += n;
            metrics_add(w->mx, METRICS_EVENTS, n);
            last_input = pipe_now_us();
        }
        if (w->mon)
            metrics_add(w->mx, METRICS_ALERTS,
                        mon_tick_publish(w->mon, w->q, w->cd, &w->mid, pipe_wall_ms()));
        metrics_worker_tick(w->mx, w->mon, kq_assigned(w->q), w->redis_ok, 1);
        if (kq_serve(w->q, n ? 0 : 10, &e) == ERR_FATAL)
            break;
        if ((max_msgs && w->n.messages >= max_msgs) ||
            (idle_us && pipe_now_us() - last_input > idle_us))
            break;
    }
    log_summary(w, (double)(pipe_now_us() - t0) / 1e6);
    if (e.code == ERR_FATAL) {
        log_error("stopping: %s", e.msg);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct cli cl = {0};
    struct worker w = {0};
    struct err e = {0};
    int rc = cli_parse(&cl, argc, argv, usage);

    if (rc >= 0)
        return rc;
    if (!(w.cf = cli_load(&cl, WORKER)))
        return 2;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN); /* a dropped Redis connection is an error return, not a kill */
    if (click_defaults(w.cf, &e) || worker_open(&w, &e)) {
        log_error("%s", e.msg);
        fprintf(stderr, "error: %s\n", e.msg);
        rc = e.code == ERR_CONFIG ? 2 : 1;
    } else {
        rc = run(&w);
        /* Drain: deliveries, then commit, leave the group. */
        if (kq_close(w.q, (int)cfg_int(w.cf, "worker.shutdown_timeout_ms"), &e)) {
            log_error("close: %s", e.msg);
            rc = rc ? rc : 1;
        }
        w.q = NULL;
    }
    kq_close(w.q, 0, NULL);
    worker_close(&w);
    cfg_free(w.cf);
    return rc;
}
