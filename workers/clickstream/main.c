/* streamml-clickstream: next items to show after each click of a session.
 *
 *   clickstream --> decode (Avro) --bad--> clickstream.dlq
 *     --> session states of the batch (one read), a GRU step per fresh click
 *         (unknown item: counted, state kept, no step)
 *     --> candidates by source and quota (clickstream.sources: GRU top, one
 *         sgemm per score_batch sessions or the IVF index; co-visited,
 *         trending, catalogue category/region/new/content, cart); the
 *         session's items excluded, MMR, epsilon-greedy and the new items'
 *         boosted exploration (source, propensity per item), by the arm of
 *         the user's experiment variant (clickstream.arms; shadow arms logged)
 *     --> predictions.clickstream
 *     --> co-visitation/trending counts, then session states (both
 *         idempotent per partition and offset, fenced per partition)
 *     --> outcomes joined to the recommendations that led to them, once
 *         (clickstream.outcomes_topic; common/streams/clickexp.h)
 *
 * The step is common/streams/clickstep.h (the same code `streamml replay --stream
 * clickstream` runs); the program around it (Kafka, back-pressure, dead
 * letters, metrics, alerts, reload, drain) is the worker runtime
 * (common/worker/worker.h). While Redis is down the clicks are answered from
 * their batch alone, flagged degraded, and their state is not kept (a
 * session recommender tolerates the gap; the partition never stalls).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clickexp.h"
#include "catfeed.h"
#include "clickstep.h"
#include "log.h"
#include "monitor.h"
#include "predmon.h"
#include "state.h"
#include "worker.h"

struct click {
    struct wk *w;
    struct cstep *cs;
    struct cov *cov; /* NULL: clickstream.covisit=0 or state.backend=memory */
    struct cx *cx;   /* experiment arms, outcome join (common/streams/clickexp.h) */
    struct cfeed *feed; /* the item catalogue; NULL: none configured */
    struct mon *mon; /* NULL: monitoring off */
    struct click_event *evs;
    struct cstep_click *in;
    struct click_prediction *preds;
    struct kq_pos *pos;
    int degraded;
    uint64_t predictions, degraded_n;
};

static void click_close(void *self)
{
    struct click *c = self;

    if (!c)
        return;
    cstep_close(c->cs);
    cfeed_close(c->feed);
    cov_close(c->cov);
    cx_close(c->cx);
    free(c->evs);
    free(c->in);
    free(c->preds);
    free(c->pos);
    free(c);
}

static void *click_open(struct wk *w, struct err *e)
{
    struct click *c = calloc(1, sizeof(*c));
    const struct cfg *cf = wk_cfg(w);
    size_t n = wk_batch_cap(w), dim;
    struct state_redis_opts ro;

    if (!c) {
        err_set(e, ERR_NOMEM, "out of memory");
        return NULL;
    }
    c->w = w;
    wk_redis_opts(w, &ro);
    c->evs = calloc(n, sizeof(*c->evs));
    c->in = calloc(n, sizeof(*c->in));
    c->preds = calloc(n, sizeof(*c->preds));
    c->pos = calloc(n, sizeof(*c->pos));
    if (!c->evs || !c->in || !c->preds || !c->pos)
        err_set(e, ERR_NOMEM, "out of memory for a batch of %zu", n);
    else if ((strcmp(cfg_str(cf, "state.backend"), "memory") == 0 ||
              cstep_cov_open(cf, &ro, &c->cov, e) == ERR_OK) &&
             cstep_open(&c->cs, cf, n, wk_state(w), c->cov, e) == ERR_OK &&
             cx_open(&c->cx, cf, c->cov || strcmp(cfg_str(cf, "state.backend"), "memory") ? &ro : NULL,
                     wk_state(w), n, e) == ERR_OK &&
             cx_arms(c->cx, c->cs, e) == ERR_OK &&
             /* the catalogue: file, Redis copy, topic (catfeed.h) */
             cfeed_open_cstep(&c->feed, cf, c->cov ? &ro : NULL, wk_codec(w), c->cs, e) == ERR_OK)
        /* monitoring: the values of common/monitor/predmon.h against monitor.baseline */
        c->mon = mon_open_cfg(cf, pmon_names(PMON_CLICKSTREAM, &dim), PMON_CLICK_DIM, e);
    if (!c->cs || !c->cx || (!c->mon && e->code)) {
        click_close(c);
        return NULL;
    }
    if (c->mon && wk_monitor_add(w, c->mon, sess_model_name(cstep_model(c->cs))) < 0)
        c->mon = NULL;
    return c;
}

static void click_model(void *self, struct wk_model_info *mi)
{
    const struct click *c = self;
    const struct sess_model *m = cstep_model(c->cs);

    *mi =
        (struct wk_model_info){sess_model_name(m), sess_model_version(m), cstep_model_path(c->cs)};
}

static int click_decode(void *self, const struct wk_batch *b, size_t i, struct err *e)
{
    struct click *c = self;
    const struct kq_msg *m = b->msgs[i];

    return codec_decode_click_event(wk_codec(c->w), m->payload, m->len, &c->evs[i], e);
}

/* States read and advanced, candidates fetched and ranked: one call. */
static void click_process(void *self, struct wk_batch *b)
{
    struct click *c = self;

    for (size_t i = 0; i < b->n; i++) {
        const struct kq_msg *m = b->msgs[i];
        const struct click_event *ev = b->status[i] == WK_LIVE ? &c->evs[i] : NULL;
        c->in[i] = (struct cstep_click){ev, m->topic, m->partition, m->offset,
                                        ev ? cx_assign(c->cx, ev) : 0};
        c->pos[i] = m->pos;
    }
    cfeed_poll(c->feed, 1024); /* catalogue records seen by this batch's clicks */
    c->degraded = cstep_batch(c->cs, b->n, c->in, c->preds);
    for (size_t i = 0; i < b->n; i++)
        if (c->in[i].ev)
            cx_label(c->cx, c->in[i].arm, &c->preds[i]);
    wk_set_state_ok(c->w, !c->degraded);
    for (size_t i = 0; b->state_lost && i < b->n; i++)
        c->preds[i].degraded = 1; /* sessions that restarted empty */
}

static int click_emit(void *self, const struct wk_batch *b, size_t i, struct wk_record *r,
                      struct err *e)
{
    struct click *c = self;
    struct click_prediction *p = &c->preds[i];
    float x[PMON_CLICK_DIM];
    double score;

    p->latency_us = r->latency_us;
    r->key = p->session_id;
    r->key_len = strlen(p->session_id);
    r->degraded = p->degraded;
    if (codec_encode_click_prediction(wk_codec(c->w), p, r->val, e))
        return e->code;
    c->predictions++;
    c->degraded_n += (uint64_t)p->degraded;
    if (c->mon) {
        pmon_click_vector(p, x, &score);
        mon_observe(c->mon, x, score, p->latency_us, p->degraded, b->wall_ms);
    }
    return ERR_OK;
}

/* Records of the clickstream's experiment and outcomes (clickexp.h's cx_put). */
static int click_put(void *self, const char *topic, const char *key, const void *val,
                     size_t len, size_t i, int how, struct err *e)
{
    struct click *c = self;

    if (how == CX_ACK_NOW) {
        wk_ack_state(c->w, &c->pos[i]);
        return ERR_OK;
    }
    if (how == CX_UNTRACKED)
        return wk_produce(c->w, topic, key, strlen(key), val, len, e);
    return wk_produce_state(c->w, topic, key, strlen(key), val, len, &c->pos[i], e);
}

/* Counts, then states (cstep_store: the order that survives a crash
 * between the two); a failed write is logged, and the clicks' offsets are
 * stored anyway: the sessions lose a step, the partition never stalls.
 * Then the outcomes, whose delivery acknowledges the clicks. */
static void click_store(void *self, struct wk_batch *b)
{
    struct click *c = self;
    struct err e = {0};

    cstep_store(c->cs);
    cfeed_flush(c->feed); /* new items' impressions and clicks */
    cx_shadow(c->cx, wk_codec(c->w), c->cs, b->n, c->in, click_put, c);
    /* outcomes join only recommendations that are out (a crash cannot leave one
     * remembered and never published) */
    if (cx_outcomes_topic(c->cx) && wk_flush(c->w, 30000, &e))
        log_warn("outcomes joined with predictions in flight: %s", e.msg);
    if (cx_publish(c->cx, wk_codec(c->w), b->n, c->in, c->preds, click_put, c))
        return; /* acknowledged by the outcomes' deliveries */
    for (size_t i = 0; i < b->n; i++)
        if (b->status[i] == WK_LIVE)
            wk_ack_state(c->w, &c->pos[i]);
}

/* A new GRU model, the arms' own GRUs and rankers (and ranking settings)
 * from the re-read configuration, smoke-checked before they serve; the old
 * ones serve on if anything fails. Stored states of another hidden size are
 * ignored (sessions restart). */
static int click_reload(void *self, const struct cfg *cf, struct err *e)
{
    struct click *c = self;
    struct cstep *ns;

    if (cstep_open(&ns, cf, wk_batch_cap(c->w), wk_state(c->w), c->cov, e))
        return e->code;
    if (cstep_set_catalog(ns, cfeed_catalog(c->feed), e) || cx_arms(c->cx, ns, e) ||
        cstep_smoke(ns, e)) { /* every arm's GRU smoke-checked */
        cstep_close(ns);
        return e->code;
    }
    cstep_carry(ns, c->cs);
    cstep_close(c->cs);
    c->cs = ns;
    return ERR_OK;
}

static size_t click_files(void *self, const char **paths, size_t cap)
{
    const struct click *c = self;

    return cstep_files(c->cs, paths, cap); /* a reload may have moved them; rankers too */
}

static void click_summary(void *self, double secs, uint64_t messages)
{
    const struct click *c = self;

    cstep_log_summary(c->cs, secs, messages, c->predictions, c->degraded_n);
    cx_log_counts(c->cx);
    cfeed_log_counts(c->feed);
}

static const char *const click_defaults[][2] = {{"input.topic", "clickstream"},
                                                {"output.topic", "predictions.clickstream"},
                                                {"dlq.topic", "clickstream.dlq"},
                                                {"experiment.shadow_topic",
                                                 "predictions.clickstream.shadow"}};

static const struct wk_stream click_stream = {
    .name = "clickstream",
    .usage = "usage: streamml-clickstream [-c FILE] [-X key=value ...] [-b HOSTS]\n\n"
             "Consumes input.topic (default clickstream; click events keyed by session id)\n"
             "in the consumer group kafka.group.id (default streamml-clickstream). Each click\n"
             "advances its session's GRU state (Redis, expiring after clickstream.session_ttl_s\n"
             "of inactivity) by one step; the next clickstream.k items (GRU scores, co-visited\n"
             "and trending items, or the sources of clickstream.sources with the item\n"
             "catalogue of clickstream.catalog / catalog_topic; the session's items excluded;\n"
             "re-scored by the ONNX ranker of clickstream.ranker, or an experiment arm's, if\n"
             "any; MMR re-ranked; epsilon-greedy exploration and the new items' boost, with source\n"
             "and propensity per item) go to output.topic (default\n"
             "predictions.clickstream). Undecodable messages go to dlq.topic (default\n"
             "clickstream.dlq).\n"
             "SIGTERM/SIGINT: finish in-flight work, commit, leave the group, exit 0.\n"
             "SIGHUP (or a changed clickstream.model or ranker under model.watch_ms):\n"
             "reload the models, smoke-checked; a refused one keeps the old serving.\n"
             "Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.\n\n",
    .open = click_open,
    .decode = click_decode,
    .process = click_process,
    .emit = click_emit,
    .store = click_store,
    .state_ttl_key = "clickstream.session_ttl_s", /* keeps session states, fenced */
    .reload = click_reload,
    .files = click_files,
    .model = click_model,
    .summary = click_summary,
    .close = click_close,
    .n_defaults = sizeof(click_defaults) / sizeof(click_defaults[0]),
    .defaults = click_defaults,
    .out_schema = CODEC_CLICK_PREDICTION,
};

int main(int argc, char **argv)
{
    return wk_main(argc, argv, &click_stream);
}
