/* streamml-transactions: credit-risk scoring of transaction events.
 *
 *   transactions --> decode (Avro) + validate --bad--> transactions.dlq
 *     --> Redis state <-> features (common/streams/txn_stream.h: users read once and
 *         written once per batch; a queue while Redis is away)
 *     --> score: gbdt + scorecard, by the user's variant (common/streams/abtest.h)
 *     --> predictions.transactions (+ shadows to experiment.shadow_topic)
 *
 * The program around it (Kafka, back-pressure, dead letters, metrics,
 * alerts, reload, drain) is the worker runtime (common/worker/worker.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "abtest.h"
#include "features.h"
#include "labels.h"
#include "log.h"
#include "metrics.h"
#include "monitor.h"
#include "txn.h"
#include "txn_input.h"
#include "txn_stream.h"
#include "worker.h"

struct txn {
    struct wk *w;
    const struct cfg *cf;
    struct ab_serving *ab;            /* variants' models (common/streams/abtest.c -> txn.c) */
    struct txs *ts;                   /* users' state, the queue */
    struct txi *in;                   /* TransactionEvent, or the spec's own record */
    struct labels *lab;               /* NULL: no monitor.labels.topic (or monitoring off) */
    struct mon *mon[AB_MAX_VARIANTS]; /* per variant; NULL: monitoring off */
    struct txn_event *evs; /* the batch's events, positions, live flags, vectors */
    struct kq_pos *pos;
    unsigned char *live;
    float *xs;
    struct txn_prediction *preds; /* ... their predictions */
    size_t *pvar;                 /* ... and the variant that scored each */
    int degraded, fair_field;     /* fair_field: monitor.fairness.field's index, -1 none */
    struct buf shadow; /* a challenger's prediction, encoded */
    uint64_t predictions, degraded_n, redelivered, decisions[3];
};

/* A monitor per variant (its own baseline from experiment.baselines, or
 * monitor.baseline), its alerts labelled "<model.name>/<variant>". */
static int open_monitors(struct txn *t, struct err *e)
{
    for (size_t v = 0; v < ab_serving_num_variants(t->ab); v++) {
        const char *var = ab_serving_variant(t->ab, v), *base = ab_serving_baseline(t->ab, v);
        char label[160];
        snprintf(label, sizeof(label), "%s%s%s", cfg_str(t->cf, "model.name"), *var ? "/" : "",
                 var);
        t->mon[v] = *base ? mon_open_path(t->cf, base, feat_txn_names(), feat_txn_dim(), e)
                          : mon_open_cfg(t->cf, feat_txn_names(), feat_txn_dim(), e);
        if (!t->mon[v] && e->code)
            return *var ? err_wrap(e, "variant %s", var) : e->code;
        if (t->mon[v] && wk_monitor_add(t->w, t->mon[v], label) < 0)
            t->mon[v] = NULL;
    }
    return txn_fair_field(t->cf, &t->fair_field, e); /* the fairness check's groups */
}

static void txn_close(void *self)
{
    struct txn *t = self;
    void *arrays[] = {t->evs, t->pos, t->live, t->xs, t->preds, t->pvar};

    for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++)
        free(arrays[i]);
    ab_serving_close(t->ab);
    txs_close(t->ts);
    txi_close(t->in);
    labels_close(t->lab);
    buf_free(&t->shadow);
    free(t);
}

static void *txn_open(struct wk *w, struct err *e)
{
    struct txn *t = calloc(1, sizeof(*t));
    size_t c = wk_batch_cap(w);
    struct txs_opts o = {c, 0, 0, wk_ack_state, w, 0};

    if (!t)
        return NULL;
    t->w = w;
    t->cf = wk_cfg(w);
    txs_opts_cfg(&o, t->cf);
    t->evs = calloc(c, sizeof(*t->evs));
    t->pos = calloc(c, sizeof(*t->pos));
    t->live = calloc(c, 1);
    t->xs = calloc(c * FSPEC_OUT_MAX, sizeof(float)); /* any spec's width */
    t->preds = calloc(c, sizeof(*t->preds));
    t->pvar = calloc(c, sizeof(*t->pvar));
    buf_init(&t->shadow, 0);
    if (!t->evs || !t->pos || !t->live || !t->xs || !t->preds || !t->pvar)
        err_set(e, ERR_NOMEM, "out of memory for a batch of %zu", c);
    else if (txs_open(&t->ts, wk_state(w), &o, e) == ERR_OK && (t->ab = ab_serving_open(t->cf, e)))
        ab_serving_log(t->ab, t->cf);
    if (!t->ab || !(t->in = txi_open(wk_codec(w), c, e)) || open_monitors(t, e) ||
        (!(t->lab = labels_open_cfg(t->cf, wk_group_id(w), e)) && e->code)) {
        txn_close(t);
        return NULL;
    }
    return t;
}

static void txn_model(void *self, struct wk_model_info *mi)
{
    const struct txn *t = self;

    *mi = (struct wk_model_info){cfg_str(t->cf, "model.name"), ab_serving_version(t->ab),
                                 cfg_str(t->cf, "model.gbdt")};
}

/* Decode and validate: anything else goes to the dead-letter topic. */
static int txn_decode(void *self, const struct wk_batch *b, size_t i, struct err *e)
{
    struct txn *t = self;
    const struct kq_msg *m = b->msgs[i];

    return txi_decode(t->in, i, m->payload, m->len, &t->evs[i], e);
}

/* State, features, then every row of the batch scored in one call (rows
 * of dead or held messages are scored too and ignored: cheaper than
 * compacting the rare batch that has some). */
static void txn_process(void *self, struct wk_batch *b)
{
    struct txn *t = self;

    ab_serving_set_metrics(t->ab, wk_metrics(t->w)); /* explanations' cost (open, reload) */
    for (size_t i = 0; i < b->n; i++) {
        t->live[i] = b->status[i] == WK_LIVE;
        t->pos[i] = b->msgs[i]->pos;
    }
    /* degraded: scored without its state, or on aggregates that restarted empty */
    t->degraded = txs_features(t->ts, b->n, t->evs, t->pos, t->live, t->xs) | b->state_lost;
    wk_set_state_ok(t->w, txs_state_ok(t->ts));
    for (size_t i = 0; i < b->n; i++)
        txn_prediction_init(&t->preds[i], &t->evs[i], b->msgs[i]->topic, b->msgs[i]->partition,
                            b->msgs[i]->offset);
    ab_serving_score_batch(t->ab, t->xs, b->n, t->preds, t->pvar);
}

/* Shadow mode: each challenger's prediction, to experiment.shadow_topic (not
 * tied to the offset: the champion's is served), watched by its monitor. */
static void emit_shadows(struct txn *t, const struct txn_prediction *served, const float *x,
                         int64_t now_ms)
{
    struct txn_prediction p;
    struct err e = {0};

    for (size_t k = 1; k <= ab_serving_shadows(t->ab); k++) {
        p = *served;
        ab_serving_score_shadow(t->ab, k, x, &p);
        buf_reset(&t->shadow);
        if (codec_encode_prediction(wk_codec(t->w), &p, &t->shadow, &e) ||
            wk_produce(t->w, cfg_str(t->cf, "experiment.shadow_topic"), p.user_id,
                       strlen(p.user_id), t->shadow.data, t->shadow.len, &e)) {
            log_error("shadow prediction of %s (%s) not sent: %s", p.event_id, p.variant, e.msg);
            continue;
        }
        if (t->mon[k])
            mon_observe(t->mon[k], x, p.probability, p.latency_us, p.degraded, now_ms);
    }
}

static int txn_emit(void *self, const struct wk_batch *b, size_t i, struct wk_record *r,
                    struct err *e)
{
    struct txn *t = self;
    struct txn_prediction *p = &t->preds[i];
    const float *x = t->xs + i * feat_txn_dim();
    size_t v = t->pvar[i];

    r->degraded = t->degraded;
    p->degraded = t->degraded;
    p->redelivered = txs_redelivered(t->ts, i);
    p->latency_us = r->latency_us;
    r->key = p->user_id;
    r->key_len = strlen(p->user_id);
    if (codec_encode_prediction(wk_codec(t->w), p, r->val, e))
        return e->code;
    t->predictions++;
    t->decisions[txn_decision_index(p->decision)]++;
    t->degraded_n += (uint64_t)p->degraded;
    t->redelivered += (uint64_t)p->redelivered;
    if (t->mon[v]) {
        mon_observe(t->mon[v], x, p->probability, p->latency_us, p->degraded, b->wall_ms);
        txn_observe_decision(t->mon[v], t->fair_field, &t->evs[i], x, p->decision);
    }
    /* The rolling AUC is the champion's (per variant: `streamml abtest`). */
    if (t->lab && v == 0)
        txn_remember(t->lab, t->mon[0], t->fair_field, &t->evs[i], x, p->event_id,
                     p->probability, p->decision);
    emit_shadows(t, p, x, b->wall_ms);
    return ERR_OK;
}

static void txn_store(void *self, struct wk_batch *b)
{
    struct txn *t = self;

    (void)b;
    txs_store(t->ts);
    wk_set_state_ok(t->w, txs_state_ok(t->ts));
}

static int txn_room(void *self)
{
    return txs_room(((struct txn *)self)->ts);
}

static void txn_tick(void *self, int64_t now_us)
{
    struct txn *t = self;

    txs_tick(t->ts, now_us);
    wk_set_state_ok(t->w, txs_state_ok(t->ts));
    if (t->lab && labels_flush(t->lab, NULL) == ERR_OK)
        labels_poll(t->lab, t->mon[0], 0, 1000);
}

/* A new model set from the re-read configuration; the variant names must
 * stay (the monitors are per variant). */
static int txn_reload(void *self, const struct cfg *cf, struct err *e)
{
    struct txn *t = self;
    struct ab_serving *ns = ab_serving_open(cf, e);
    size_t nv = ns ? ab_serving_num_variants(ns) : 0;
    int same = ns && nv == ab_serving_num_variants(t->ab);

    for (size_t v = 0; same && v < nv; v++)
        same = strcmp(ab_serving_variant(ns, v), ab_serving_variant(t->ab, v)) == 0;
    if (!ns)
        return e->code;
    if (!same) {
        ab_serving_close(ns);
        return err_set(e, ERR_CONFIG,
                       "experiment variants added, removed or renamed: that needs "
                       "a restart (monitors are per variant)");
    }
    ab_serving_close(t->ab);
    t->ab = ns;
    return ERR_OK;
}

static size_t txn_files(void *self, const char **paths, size_t cap)
{
    return ab_serving_files(((struct txn *)self)->ab, paths, cap);
}

static void txn_summary(void *self, double secs, uint64_t messages)
{
    const struct txn *t = self;

    log_info("summary: %llu messages in %.1f s (%.0f/s): %llu predictions (approve %llu, review "
             "%llu, decline %llu), %llu degraded, %llu redelivered, %zu state updates queued",
             (unsigned long long)messages, secs, secs > 0 ? (double)messages / secs : 0,
             (unsigned long long)t->predictions, (unsigned long long)t->decisions[0],
             (unsigned long long)t->decisions[1], (unsigned long long)t->decisions[2],
             (unsigned long long)t->degraded_n, (unsigned long long)t->redelivered,
             txs_queued(t->ts));
}

static const struct wk_stream txn_stream = {
    .name = "transactions",
    .usage = "usage: streamml-transactions [-c FILE] [-X key=value ...] [-b HOSTS]\n\n"
             "Consumes input.topic in the consumer group kafka.group.id (default\n"
             "streamml-transactions), computes txn-v1 features (or features.spec's, on\n"
             "its own record schema) with per-entity state in Redis, scores model.gbdt\n"
             "and model.scorecard (optional), produces predictions to output.topic\n"
             "and undecodable or invalid input (naming the field) to dlq.topic.\n"
             "SIGTERM/SIGINT: finish in-flight work, commit, leave the group, exit 0.\n"
             "SIGHUP (or a changed file under model.watch_ms): reload the models.\n"
             "Exit codes: 0 ok, 1 runtime failure (e.g. a delivery failed for good:\n"
             "nothing past it is committed), 2 usage or configuration error.\n\n",
    .out_schema = CODEC_TXN_PREDICTION,
    .state_ttl_key = "redis.ttl_s",
    .open = txn_open,
    .close = txn_close,
    .model = txn_model,
    .decode = txn_decode,
    .process = txn_process,
    .emit = txn_emit,
    .store = txn_store,
    .room = txn_room,
    .tick = txn_tick,
    .reload = txn_reload,
    .files = txn_files,
    .summary = txn_summary,
};

int main(int argc, char **argv)
{
    return wk_main(argc, argv, &txn_stream);
}
