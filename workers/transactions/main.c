/* streamml-transactions: credit-risk scoring of transaction events.
 *
 *   transactions --poll--> decode (Avro) --bad--> transactions.dlq
 *        |                   |
 *        |      Redis state <-> features (common/features: the shared module)
 *        |                   |
 *        |         score: gbdt (XGBoost JSON) + scorecard (reason codes)
 *        |                   |
 *        +--- offset stored <-- delivery report <-- predictions.transactions
 *
 * A batch of messages is taken per turn so that Redis is read once and
 * written once per batch (pipelined). An offset is stored only after the
 * message's state update is applied and its prediction (or dead letter) is
 * delivered. When Redis stays unreachable past state.retry_budget_ms, events
 * are scored on empty state and flagged degraded; their state updates wait
 * in a bounded queue and are applied (idempotently) when Redis is back.
 *
 * Champion/challenger (common/abtest.h): each user is scored by its sticky
 * variant (or, in shadow mode, by the champion, the challengers' answers
 * going to experiment.shadow_topic); monitoring windows are per variant.
 * SIGHUP (or a changed file under model.watch_ms) re-reads the
 * configuration and loads the models between two batches: nothing in
 * flight is dropped, and a set that fails to load or its smoke check is
 * refused (the old one keeps serving) with an alert on monitor.topic.
 */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "abtest.h"
#include "cli.h"
#include "codec.h"
#include "features.h"
#include "kafka.h"
#include "labels.h"
#include "log.h"
#include "metrics.h"
#include "monitor.h"
#include "pipeline.h"
#include "registry.h"
#include "state.h"
#include "txn.h"

#define WORKER "transactions"

static volatile sig_atomic_t g_run = 1;
static volatile sig_atomic_t g_reload = 0;

static void on_signal(int sig)
{
    (void)sig;
    g_run = 0;
}

static void on_hup(int sig)
{
    (void)sig;
    g_reload = 1;
}

enum ev_status { EV_DEAD = 0, EV_APPLY, EV_REDELIVERED, EV_HELD };

struct pending_ev {
    struct txn_event ev;
    struct kq_pos pos;
};

struct counters {
    uint64_t messages, predictions, dead, degraded, redelivered, decisions[3];
};

struct worker {
    struct cfg *cf;
    struct kq *q;
    struct codec *cd;
    struct reg *reg;               /* schema registry, NULL: schemas/ids */
    struct state *st;
    struct ab_serving *ab;         /* variants' models (common/abtest.c -> txn.c) */
    struct cli *cl;                /* how the configuration was loaded (reloads) */
    uint64_t watch_stamp;          /* model.watch_ms: files' mtimes and sizes */
    int64_t next_watch_us;
    size_t cap;                    /* batch capacity */
    struct kq_msg **msgs;
    struct txn_event *evs;
    unsigned char *status;
    int *user_of;
    int64_t *t_in;
    struct entset users;
    struct state_blob *blobs;
    struct feat_state *ust;
    unsigned char *udirty;
    int64_t *uoff;
    int32_t *upart;
    struct state_put *puts;
    size_t np;                     /* puts of the batch (write_users_begin) */
    int put_sent;                  /* ... sent, outcome not read yet */
    int *applied;
    float *xs;                     /* the batch's feature vectors */
    struct txn_prediction *preds;  /* ... and their predictions */
    size_t *pvar;                  /* ... and the variant that scored each */
    struct buf out, scratch;
    struct pending_ev *pending;
    size_t npending, pending_max;
    int redis_down;
    int64_t next_retry_us;
    int budget_ms;
    struct counters n;
    struct mon *mon[AB_MAX_VARIANTS]; /* per variant; NULL: monitoring off */
    struct mon_ident mid[AB_MAX_VARIANTS];
    char mid_model[AB_MAX_VARIANTS][128];
    int64_t batch_ms;              /* wall clock of the batch, for the monitor */
    struct metrics *mx;            /* NULL: metrics.port = 0 */
    struct labels *lab;            /* NULL: no monitor.labels.topic (or monitoring off) */
};

/* ---- set-up ---- */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: streamml-transactions [-c FILE] [-X key=value ...] [-b HOSTS]\n\n"
            "Consumes input.topic in the consumer group kafka.group.id (default\n"
            "streamml-transactions), computes txn-v1 features with per-user state in\n"
            "Redis, scores model.gbdt and model.scorecard, produces predictions to\n"
            "output.topic and undecodable or invalid input to dlq.topic.\n"
            "SIGTERM/SIGINT: finish in-flight work, commit, leave the group, exit 0.\n"
            "Exit codes: 0 ok, 1 runtime failure (e.g. a delivery failed for good:\n"
            "nothing past it is committed), 2 usage or configuration error.\n\n");
    cfg_help(out);
}

static int open_models(struct worker *w, struct err *e)
{
    const struct ab *x;

    if (!(w->ab = ab_serving_open(w->cf, e)))
        return e->code;
    if (!(x = ab_serving_experiment(w->ab))) {
        log_info("models: gbdt %s, scorecard %s, version %s", cfg_str(w->cf, "model.gbdt"),
                 cfg_str(w->cf, "model.scorecard"), ab_serving_version(w->ab));
        return ERR_OK;
    }
    log_info("experiment %s (%s, salt \"%s\"), scorecard %s, version %s", ab_id(x),
             ab_mode(x) == AB_SHADOW ? "shadow" : "split", ab_salt(x),
             cfg_str(w->cf, "model.scorecard"), ab_serving_version(w->ab));
    for (size_t v = 0; v < ab_num_variants(x); v++)
        log_info("variant %s%s: gbdt %s, share %g", ab_variant_name(x, v), v ? "" : " (champion)",
                 ab_variant_model(x, v), ab_variant_share(x, v));
    return ERR_OK;
}

/* A monitor per variant (its own baseline from experiment.baselines, or
 * monitor.baseline), its alerts labelled "<model.name>/<variant>". */
static int open_monitors(struct worker *w, struct err *e)
{
    for (size_t v = 0; v < ab_serving_num_variants(w->ab); v++) {
        const char *var = ab_serving_variant(w->ab, v);
        snprintf(w->mid_model[v], sizeof(w->mid_model[v]), "%s%s%s",
                 cfg_str(w->cf, "model.name"), *var ? "/" : "", var);
        w->mid[v] = (struct mon_ident){WORKER, w->mid_model[v], ab_serving_version(w->ab),
                                       cfg_str(w->cf, "monitor.topic")};
        w->mon[v] = *ab_serving_baseline(w->ab, v)
                        ? mon_open_path(w->cf, ab_serving_baseline(w->ab, v), feat_txn_names(),
                                        FEAT_TXN_DIM, e)
                        : mon_open_cfg(w->cf, feat_txn_names(), FEAT_TXN_DIM, e);
        if (!w->mon[v] && e->code)
            return *var ? err_wrap(e, "variant %s", var) : e->code;
    }
    return ERR_OK;
}

static int open_state(struct worker *w, struct err *e)
{
    const struct cfg *cf = w->cf;
    struct state_redis_opts ro = {
        .host = cfg_str(cf, "redis.host"), .port = (int)cfg_int(cf, "redis.port"),
        .password = *cfg_str(cf, "redis.password") ? cfg_str(cf, "redis.password") : NULL,
        .prefix = cfg_str(cf, "redis.prefix"), .ttl_s = (int)cfg_int(cf, "redis.ttl_s"),
        .timeout_ms = (int)cfg_int(cf, "redis.timeout_ms"),
        .lazy = !cfg_int(cf, "redis.require_at_start")};

    ro.username = cfg_str(cf, "redis.username"); /* reliability: Redis ACL user */

    if (strcmp(cfg_str(cf, "state.backend"), "memory") == 0)
        w->st = state_open_memory();
    else
        w->st = state_open_redis(&ro, e);
    if (!w->st)
        return e->code ? e->code : err_set(e, ERR_NOMEM, "state: out of memory");
    return ERR_OK;
}

static int alloc_batch(struct worker *w)
{
    size_t c = w->cap;

    w->msgs = calloc(c, sizeof(*w->msgs));
    w->evs = calloc(c, sizeof(*w->evs));
    w->status = calloc(c, 1);
    w->user_of = calloc(c, sizeof(int));
    w->t_in = calloc(c, sizeof(int64_t));
    w->blobs = calloc(c, sizeof(*w->blobs));
    w->ust = calloc(c, sizeof(*w->ust));
    w->udirty = calloc(c, 1);
    w->uoff = calloc(c, sizeof(int64_t));
    w->upart = calloc(c, sizeof(int32_t));
    w->puts = calloc(c, sizeof(*w->puts));
    w->applied = calloc(c, sizeof(int));
    w->xs = calloc(c * FEAT_TXN_DIM, sizeof(float));
    w->preds = calloc(c, sizeof(*w->preds));
    w->pvar = calloc(c, sizeof(*w->pvar));
    w->pending = calloc(w->pending_max, sizeof(*w->pending));
    buf_init(&w->out, 0);
    /* A dead letter carries the original message plus metadata. */
    buf_init(&w->scratch, 2 * CODEC_MAX_MESSAGE);
    return !w->msgs || !w->evs || !w->status || !w->user_of || !w->t_in || !w->blobs ||
                   !w->ust || !w->udirty || !w->uoff || !w->upart || !w->puts || !w->applied || !w->xs ||
                   !w->preds || !w->pvar ||
                   !w->pending || pipe_entset_init(&w->users, c)
               ? ERR_NOMEM
               : ERR_OK;
}

static const char *group_id(const struct cfg *cf)
{
    return cli_group_id(cf, "streamml-transactions");
}

/* reliability: zombie fencing. A newly assigned partition takes a new
 * epoch in the state store, so a former owner that was stalled past
 * max.poll.interval.ms cannot overwrite state when it wakes up. */
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
    struct kq_opts ko = {.group_id = group_id(w->cf), .topics = &topic, .n_topics = 1,
                         .client_id = "streamml-transactions"};

    ko.props = cfg_kafka(w->cf, &np);
    ko.commit_interval_ms = (int)cfg_int(w->cf, "worker.commit_interval_ms");
    ko.n_props = np;
    ko.stats_cb = w->mx ? metrics_kafka_stats : NULL; /* consumer lag */
    ko.stats_opaque = w->mx;
    ko.on_assign = fence_partition; /* reliability: zombie fencing */
    ko.assign_opaque = w->st;
    w->q = kq_open(&ko, e);
    if (!w->q)
        return e->code;
    log_info("consuming %s as group %s -> %s (dead letters: %s)", topic, ko.group_id,
             cfg_str(w->cf, "output.topic"), cfg_str(w->cf, "dlq.topic"));
    return ERR_OK;
}

/* Predictions and dead letters are framed with registry ids when a
 * registry is configured (registered under <topic>-value). */
static struct codec *open_codec(struct worker *w, struct err *e)
{
    static const enum codec_schema outs[] = {CODEC_TXN_PREDICTION, CODEC_DEAD_LETTER};
    const char *topics[] = {cfg_str(w->cf, "output.topic"), cfg_str(w->cf, "dlq.topic")};

    return pipe_codec_open(w->cf, &w->reg, outs, topics, 2, e);
}

static int worker_open(struct worker *w, struct err *e)
{
    w->cap = (size_t)cfg_int(w->cf, "worker.batch_size");
    w->pending_max = (size_t)cfg_int(w->cf, "state.pending_max");
    w->budget_ms = (int)cfg_int(w->cf, "state.retry_budget_ms");
    if (w->pending_max < w->cap)
        return err_set(e, ERR_CONFIG,
                       "config: state.pending_max=%zu must be >= worker.batch_size=%zu (%s)",
                       w->pending_max, w->cap, cfg_origin(w->cf, "state.pending_max"));
    if (alloc_batch(w))
        return err_set(e, ERR_NOMEM, "out of memory for a batch of %zu", w->cap);
    w->cd = open_codec(w, e);
    struct metrics_opts mo = {(int)cfg_int(w->cf, "metrics.port"), WORKER,
                              cfg_str(w->cf, "model.name"), cfg_str(w->cf, "model.version"), 0,
                              cfg_str(w->cf, "model.gbdt")};
    if (!w->cd || open_models(w, e) || open_state(w, e))
        return e->code;
    if (!(w->mx = metrics_open(&mo, e)) && e->code)
        return e->code;
    if (open_kafka(w, e))
        return e->code;
    if (open_monitors(w, e))
        return e->code;
    w->lab = labels_open_cfg(w->cf, group_id(w->cf), e);
    return w->lab || !e->code ? ERR_OK : e->code;
}

static void worker_close(struct worker *w)
{
    void *arrays[] = {w->msgs, w->evs, w->status, w->user_of, w->t_in, w->blobs, w->ust,
                      w->udirty, w->uoff, w->upart, w->puts, w->applied, w->pending, w->xs,
                      w->preds, w->pvar};

    for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++)
        free(arrays[i]);
    pipe_entset_free(&w->users);
    buf_free(&w->out);
    buf_free(&w->scratch);
    ab_serving_close(w->ab);
    state_close(w->st);
    codec_close(w->cd);
    labels_close(w->lab);
    for (size_t v = 0; v < AB_MAX_VARIANTS; v++)
        mon_close(w->mon[v]);
    metrics_close(w->mx);
    reg_close(w->reg);
}

/* ---- state: read once per batch, write once per batch ---- */

static void load_user_states(struct worker *w, size_t nusers, int ok)
{
    struct err e = {0};

    for (size_t u = 0; u < nusers; u++) {
        w->udirty[u] = 0;
        if (txn_state_load(&w->ust[u], &w->upart[u], &w->uoff[u], w->blobs[u].data,
                           ok ? w->blobs[u].len : 0, w->blobs[u].partition, w->blobs[u].offset,
                           &e))
            log_error("state of user %s unreadable (%s): starting it afresh", w->users.ids[u],
                      e.msg);
    }
}

/* Reads the batch's users. Returns 1 when Redis could not be read and the
 * batch is to be scored degraded (on empty state). */
static int read_users(struct worker *w)
{
    struct err e = {0};
    int rc;

    if (w->redis_down && pipe_now_us() < w->next_retry_us) {
        load_user_states(w, w->users.n, 0);
        return 1;
    }
    rc = pipe_state_get(w->st, w->redis_down ? 0 : w->budget_ms, w->users.n, w->users.ids,
                        w->blobs, &e);
    if (rc) {
        if (!w->redis_down)
            log_error("state read failed, scoring degraded: %s", e.msg);
        w->redis_down = 1;
        w->next_retry_us = pipe_now_us() + 1000000;
    } else if (w->redis_down) {
        log_info("state store reachable again");
        w->redis_down = 0;
    }
    load_user_states(w, w->users.n, rc == ERR_OK);
    return rc != ERR_OK;
}

/* Encodes the dirty users' states and sends them (state_put_begin): Redis
 * applies them while the worker scores and produces the batch, and
 * write_users_end reads the outcome. Sets w->np (0: nothing to write). */
static int write_users_begin(struct worker *w)
{
    unsigned char enc[FEAT_STATE_MAX];
    struct err e = {0};
    size_t np = 0;

    w->np = 0;
    w->put_sent = 0;
    for (size_t u = 0; u < w->users.n; u++) {
        if (!w->udirty[u])
            continue;
        int len = feat_state_encode(&w->ust[u], enc, sizeof(enc));
        if (len < 0 || (size_t)len > STATE_BLOB_MAX)
            return ERR_NOMEM;
        memcpy(w->blobs[u].data, enc, (size_t)len);
        w->puts[np++] = (struct state_put){w->users.ids[u], w->blobs[u].data, (size_t)len,
                                           w->upart[u], w->uoff[u]};
    }
    w->np = np;
    /* A send that fails is retried, under the budget, by write_users_end. */
    w->put_sent = np && state_put_begin(w->st, np, w->puts, &e) == ERR_OK;
    return ERR_OK;
}

/* The outcome of write_users_begin; when the connection was lost (on send
 * or since), the whole batch is sent again under state.retry_budget_ms
 * (idempotent). */
static int write_users_end(struct worker *w)
{
    struct err e = {0};
    int rc = ERR_OK;

    if (w->np == 0)
        return ERR_OK;
    if (w->put_sent)
        rc = state_put_end(w->st, w->applied, &e);
    if (!w->put_sent || rc == ERR_RETRY)
        rc = pipe_state_put(w->st, w->budget_ms, w->np, w->puts, w->applied, &e);
    w->np = 0;
    w->put_sent = 0;
    if (rc) {
        log_error("state write failed, updates queued for re-apply: %s", e.msg);
        w->redis_down = 1;
        w->next_retry_us = pipe_now_us() + 1000000;
    }
    return rc;
}

static int write_users(struct worker *w)
{
    int rc = write_users_begin(w);

    return rc ? rc : write_users_end(w);
}

static void queue_pending(struct worker *w, size_t i)
{
    /* Room was checked before the batch was taken (see room_for_batch). */
    w->pending[w->npending].ev = w->evs[i];
    w->pending[w->npending].pos = w->msgs[i]->pos;
    w->npending++;
}

/* Re-applies queued updates in arrival order, a chunk at a time, once Redis
 * answers; the offset check makes a second application a no-op. */
static void drain_pending(struct worker *w)
{
    struct err e = {0};

    while (w->npending && !(w->redis_down && pipe_now_us() < w->next_retry_us)) {
        size_t n = w->npending < w->cap ? w->npending : w->cap;
        pipe_entset_clear(&w->users);
        for (size_t i = 0; i < n; i++)
            w->user_of[i] = pipe_entset_add(&w->users, w->pending[i].ev.user_id);
        if (pipe_state_get(w->st, 0, w->users.n, w->users.ids, w->blobs, &e)) {
            w->next_retry_us = pipe_now_us() + 1000000;
            return;
        }
        load_user_states(w, w->users.n, 1);
        for (size_t i = 0; i < n; i++) {
            const struct pending_ev *p = &w->pending[i];
            int u = w->user_of[i];
            float x[FEAT_TXN_DIM];
            if (txn_step(&p->ev, p->pos.partition, p->pos.offset, &w->ust[u], &w->upart[u],
                         &w->uoff[u], x))
                w->udirty[u] = 1;
        }
        if (write_users(w))
            return;
        w->redis_down = 0;
        for (size_t i = 0; i < n; i++)
            kq_ack(w->q, &w->pending[i].pos, KQ_ACK_STATE);
        memmove(w->pending, w->pending + n, (w->npending - n) * sizeof(*w->pending));
        w->npending -= n;
        log_info("re-applied %zu queued state update(s), %zu left", n, w->npending);
    }
}

/* ---- one batch ---- */

static void dead_letter(struct worker *w, size_t i, const struct err *why)
{
    struct err e = {0};

    w->status[i] = EV_DEAD;
    w->n.dead++;
    if (w->mon[0]) /* no variant yet: the champion's window */
        mon_observe_dead(w->mon[0], w->batch_ms);
    metrics_add(w->mx, METRICS_DEAD_LETTERS, 1);
    if (pipe_dead_letter(w->q, w->cd, &w->scratch, cfg_str(w->cf, "dlq.topic"), WORKER,
                         w->msgs[i], why, &e))
        log_error("dead letter not sent (offset will not be committed): %s", e.msg);
}

/* Decode and validate; bad input goes to the dead-letter topic. A message
 * whose schema the registry cannot give yet is held (see
 * pipe_decode_txn_held); on shutdown it and the rest of the batch stay
 * unacknowledged, to be re-delivered. */
static void decode_batch(struct worker *w, size_t n)
{
    struct err e = {0};
    int rc;

    pipe_entset_clear(&w->users);
    for (size_t i = 0; i < n; i++) {
        const struct kq_msg *m = w->msgs[i];
        w->t_in[i] = pipe_now_us();
        w->status[i] = EV_APPLY;
        rc = pipe_decode_txn_held(w->cd, w->q, m, &g_run, &w->evs[i], &e);
        if (rc == ERR_RETRY || rc == ERR_FATAL) {
            log_error("stopping with %zu message(s) unprocessed: %s", n - i, e.msg);
            for (; i < n; i++)
                w->status[i] = EV_HELD;
            g_run = 0;
            break;
        }
        if (rc || feat_txn_validate(&w->evs[i], &e)) {
            dead_letter(w, i, &e);
            continue;
        }
        w->user_of[i] = pipe_entset_add(&w->users, w->evs[i].user_id);
    }
}

/* Features from each user's state as it stood before the event; state
 * advanced in the batch's (= partition) order. */
static void featurize_batch(struct worker *w, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct kq_msg *m = w->msgs[i];
        int u = w->user_of[i];
        float *x = w->xs + i * FEAT_TXN_DIM;

        if (w->status[i] == EV_DEAD || w->status[i] == EV_HELD)
            continue;
        /* Degraded: empty state at position -1, so never a redelivery. */
        if (txn_step(&w->evs[i], m->partition, m->offset, &w->ust[u], &w->upart[u],
                     &w->uoff[u], x))
            w->udirty[u] = 1;
        else
            w->status[i] = EV_REDELIVERED; /* already in the stored state */
    }
}

/* Shadow mode: each challenger's prediction of the event, logged to
 * experiment.shadow_topic (not tied to the offset: the champion's answer
 * is what is served) and watched by the challenger's monitor. */
static void emit_shadows(struct worker *w, const struct txn_prediction *served, const float *x)
{
    struct txn_prediction p;
    struct err e = {0};

    for (size_t k = 1; k <= ab_serving_shadows(w->ab); k++) {
        p = *served;
        ab_serving_score_shadow(w->ab, k, x, &p);
        buf_reset(&w->out);
        if (codec_encode_prediction(w->cd, &p, &w->out, &e) ||
            kq_produce(w->q, cfg_str(w->cf, "experiment.shadow_topic"), p.user_id,
                       strlen(p.user_id), w->out.data, w->out.len, NULL, &e)) {
            log_error("shadow prediction of %s (%s) not sent: %s", p.event_id, p.variant, e.msg);
            continue;
        }
        if (w->mon[k])
            mon_observe(w->mon[k], x, p.probability, p.latency_us, p.degraded, w->batch_ms);
    }
}

/* Every row of the batch scored in one call (the trees walked a block of
 * rows at a time); rows of dead or held messages are scored too and
 * ignored (cheaper than compacting the rare batch that has some). */
static void score_batch(struct worker *w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        txn_prediction_init(&w->preds[i], &w->evs[i], w->msgs[i]->topic, w->msgs[i]->partition,
                            w->msgs[i]->offset);
    ab_serving_score_batch(w->ab, w->xs, n, w->preds, w->pvar);
}

static void emit(struct worker *w, size_t i, int degraded, int state_done)
{
    const struct kq_msg *m = w->msgs[i];
    const float *x = w->xs + i * FEAT_TXN_DIM;
    struct txn_prediction *p = &w->preds[i];
    struct err e = {0};
    size_t v = w->pvar[i];

    w->n.decisions[txn_decision_index(p->decision)]++;
    p->degraded = degraded;
    p->redelivered = w->status[i] == EV_REDELIVERED;
    p->latency_us = pipe_now_us() - w->t_in[i];
    buf_reset(&w->out);
    if (codec_encode_prediction(w->cd, p, &w->out, &e) ||
        kq_produce(w->q, cfg_str(w->cf, "output.topic"), p->user_id, strlen(p->user_id),
                   w->out.data, w->out.len, &m->pos, &e)) {
        log_error("prediction for %s not sent (offset will not be committed): %s", p->event_id,
                  e.msg);
        return;
    }
    w->n.predictions++;
    if (w->mon[v]) {
        mon_observe(w->mon[v], x, p->probability, p->latency_us, degraded, w->batch_ms);
        mon_observe_decision(w->mon[v], x, strcmp(p->decision, "approve") == 0);
    }
    /* The rolling AUC is the champion's (variant 0): per-variant AUC comes
     * from `streamml abtest`, which joins outcomes by variant. */
    if (w->lab && v == 0)
        labels_remember(w->lab, p->event_id, p->probability);
    emit_shadows(w, p, x);
    metrics_add(w->mx, METRICS_PREDICTIONS, 1);
    metrics_add(w->mx, METRICS_DEGRADED, (uint64_t)degraded);
    metrics_observe_latency(w->mx, p->latency_us);
    w->n.degraded += (uint64_t)degraded;
    w->n.redelivered += (uint64_t)p->redelivered;
    if (state_done)
        kq_ack(w->q, &m->pos, KQ_ACK_STATE);
}

/* The batch's state write is sent before scoring and its outcome read
 * after: Redis applies it while the worker scores and produces. An offset
 * is still stored only once both its state (acknowledged here) and its
 * delivery report have arrived. */
static void process_batch(struct worker *w, size_t n)
{
    int degraded, sent, state_ok;

    w->batch_ms = pipe_wall_ms();
    decode_batch(w, n);
    degraded = w->users.n ? read_users(w) : 0;
    featurize_batch(w, n);
    sent = !degraded && write_users_begin(w) == ERR_OK;
    score_batch(w, n);
    for (size_t i = 0; i < n; i++) {
        if (w->status[i] == EV_DEAD || w->status[i] == EV_HELD)
            continue;
        emit(w, i, degraded, w->status[i] == EV_REDELIVERED);
    }
    state_ok = sent && write_users_end(w) == ERR_OK;
    for (size_t i = 0; i < n; i++) {
        if (w->status[i] != EV_APPLY)
            continue;
        /* Not applied yet: re-applied from the queue, acknowledged then. */
        if (state_ok)
            kq_ack(w->q, &w->msgs[i]->pos, KQ_ACK_STATE);
        else
            queue_pending(w, i);
    }
}

/* ---- model reload ---- */

/* The variant names must stay: the monitors are per variant. */
static int same_variants(const struct ab_serving *a, const struct ab_serving *b)
{
    if (ab_serving_num_variants(a) != ab_serving_num_variants(b))
        return 0;
    for (size_t v = 0; v < ab_serving_num_variants(a); v++)
        if (strcmp(ab_serving_variant(a, v), ab_serving_variant(b, v)) != 0)
            return 0;
    return 1;
}

static void reload_alert(struct worker *w, const char *severity, const char *msg)
{
    struct mon_ident id = w->mid[0];
    struct err e = {0};

    id.model = cfg_str(w->cf, "model.name");
    id.model_version = ab_serving_version(w->ab);
    if (mon_publish_event(w->q, w->cd, &id, "model_reload", severity, msg, pipe_wall_ms(), &e))
        log_error("model reload alert not sent to %s: %s", id.topic, e.msg);
}

/* Runs between batches: the batch before was scored by the old set, the
 * next one is by the new set, whole (never a mix, never a gap). */
static void reload(struct worker *w, const char *why)
{
    struct cfg *cf = cli_load(w->cl, WORKER);
    struct ab_serving *ns = NULL;
    struct err e = {0};
    char msg[600];

    if (!cf)
        err_set(&e, ERR_CONFIG, "the configuration does not load (see the log)");
    else if ((ns = ab_serving_open(cf, &e)) && !same_variants(ns, w->ab)) {
        ab_serving_close(ns);
        ns = NULL;
        err_set(&e, ERR_CONFIG, "experiment variants added, removed or renamed: that needs a "
                                "restart (monitors are per variant)");
    }
    cfg_free(cf);
    if (!ns) {
        snprintf(msg, sizeof(msg), "model reload (%s) refused: %s; still serving version %s",
                 why, e.msg, ab_serving_version(w->ab));
        log_error("%s", msg);
        reload_alert(w, "WARNING", msg);
        return;
    }
    snprintf(msg, sizeof(msg), "model reloaded (%s): version %s -> %s", why,
             ab_serving_version(w->ab), ab_serving_version(ns));
    ab_serving_close(w->ab);
    w->ab = ns;
    for (size_t v = 0; v < ab_serving_num_variants(ns); v++)
        w->mid[v].model_version = ab_serving_version(ns); /* alerts name the new one */
    log_info("%s", msg);
    reload_alert(w, "INFO", msg);
}

/* model.watch_ms: a stamp of the configuration file's and the model
 * files' mtimes and sizes; returns 1 when it changed since the last call. */
static int watch_files(struct worker *w, int init)
{
    const char *paths[AB_MAX_VARIANTS + 3];
    size_t n = ab_serving_files(w->ab, paths, AB_MAX_VARIANTS + 2);
    const char *conf = w->cl->config_path ? w->cl->config_path : getenv("STREAMML_CONFIG");
    uint64_t stamp;

    if (conf && *conf)
        paths[n++] = conf;
    stamp = ab_files_stamp(paths, n);
    if (init || stamp == w->watch_stamp) {
        w->watch_stamp = stamp;
        return 0;
    }
    w->watch_stamp = stamp;
    return 1;
}

static void maybe_reload(struct worker *w)
{
    int64_t every = cfg_int(w->cf, "model.watch_ms") * 1000, now = pipe_now_us();

    if (g_reload) {
        g_reload = 0;
        reload(w, "SIGHUP");
        watch_files(w, 1);
    } else if (every && now >= w->next_watch_us) {
        w->next_watch_us = now + every;
        if (watch_files(w, 0))
            reload(w, "file change");
    }
}

/* ---- the loop ---- */

static size_t take_batch(struct worker *w, struct err *e)
{
    size_t n = 0;
    struct kq_msg *m;
    int timeout = (int)cfg_int(w->cf, "worker.poll_ms");

    while (n < w->cap) {
        if (kq_poll(w->q, n ? 0 : timeout, &m, e))
            break;
        if (!m)
            break;
        w->msgs[n++] = m;
    }
    return n;
}

/* Input is taken only while the bounded queues have room for a batch. */
static int room_for_batch(struct worker *w)
{
    return w->npending + w->cap <= w->pending_max &&
           kq_inflight(w->q) < (size_t)cfg_int(w->cf, "worker.max_inflight");
}

static void log_summary(struct worker *w, double secs)
{
    log_info("summary: %llu messages in %.1f s (%.0f/s): %llu predictions (approve %llu, "
             "review %llu, decline %llu), %llu dead-lettered, %llu degraded, %llu redelivered, "
             "%zu state updates still queued",
             (unsigned long long)w->n.messages, secs, secs > 0 ? (double)w->n.messages / secs : 0,
             (unsigned long long)w->n.predictions, (unsigned long long)w->n.decisions[0],
             (unsigned long long)w->n.decisions[1], (unsigned long long)w->n.decisions[2],
             (unsigned long long)w->n.dead, (unsigned long long)w->n.degraded,
             (unsigned long long)w->n.redelivered, w->npending);
}

static int run(struct worker *w)
{
    struct err e = {0};
    int64_t t0 = pipe_now_us(), last_input = t0;
    int64_t idle_us = cfg_int(w->cf, "worker.idle_exit_ms") * 1000;
    uint64_t max_msgs = (uint64_t)cfg_int(w->cf, "worker.max_messages");

    watch_files(w, 1);
    while (g_run) {
        size_t n = 0;
        int room;
        drain_pending(w);
        room = room_for_batch(w);
        /* No room: fetching stops but polling goes on, so the member stays
         * in the group however long Redis is away. */
        if (kq_paused(w->q) == room && kq_pause(w->q, !room, &e))
            log_error("%s", e.msg);
        if (room || kq_paused(w->q))
            n = take_batch(w, &e); /* paused: serves the group, takes nothing */
        if (e.code == ERR_FATAL)
            break;
        if (n) {
            process_batch(w, n);
            for (size_t i = 0; i < n; i++)
                kq_msg_release(w->msgs[i]);
            w->n.messages += n;
            last_input = pipe_now_us();
        }
        if (w->lab && labels_flush(w->lab, NULL) == ERR_OK)
            labels_poll(w->lab, w->mon[0], 0, 1000);
        for (size_t v = 0; v < AB_MAX_VARIANTS; v++)
            if (w->mon[v])
                metrics_add(w->mx, METRICS_ALERTS,
                            mon_tick_publish(w->mon[v], w->q, w->cd, &w->mid[v], pipe_wall_ms()));
        metrics_add(w->mx, METRICS_EVENTS, n);
        metrics_worker_tick(w->mx, w->mon[0], kq_assigned(w->q), !w->redis_down, 1);
        maybe_reload(w);
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
    w.cl = &cl;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_hup);
    if (worker_open(&w, &e)) {
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
