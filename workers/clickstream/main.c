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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "clickstep.h"
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

static volatile sig_atomic_t g_run = 1;

static void on_signal(int sig)
{
    (void)sig;
    g_run = 0;
}

struct counters {
    uint64_t messages, predictions, dead, degraded;
};

/* Per message of a batch. */
struct slot {
    struct click_event ev;
    int dead;
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
    struct cstep *cs; /* the step: common/clickstep.h */
    const struct sess_model *m;
    const char *out_topic, *dlq_topic;
    size_t cap;
    struct kq_msg **msgs;
    struct slot *sl;
    struct cstep_click *in;
    struct click_prediction *preds;
    struct buf out, dlq;
    struct counters n;
    struct mon *mon; /* NULL: monitor.baseline empty (monitoring off) */
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
    int memory = strcmp(cfg_str(cf, "state.backend"), "memory") == 0;

    w->st = memory ? state_open_memory() : state_open_redis(&ro, e);
    if (!w->st)
        return memory ? err_set(e, ERR_NOMEM, "out of memory") : e->code;
    if (!memory && cstep_cov_open(cf, &ro, &w->cov, e))
        return e->code;
    return ERR_OK;
}

static int alloc_batch(struct worker *w, struct err *e)
{
    size_t c = w->cap;

    w->msgs = calloc(c, sizeof(*w->msgs));
    w->sl = calloc(c, sizeof(*w->sl));
    w->in = calloc(c, sizeof(*w->in));
    w->preds = calloc(c, sizeof(*w->preds));
    buf_init(&w->out, 0);
    buf_init(&w->dlq, 2 * CODEC_MAX_MESSAGE); /* the original message plus metadata */
    if (!w->msgs || !w->sl || !w->in || !w->preds)
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
    w->out_topic = cfg_str(w->cf, "output.topic");
    w->dlq_topic = cfg_str(w->cf, "dlq.topic");
    w->redis_ok = 1;
    w->cd = codec_open(cfg_str(w->cf, "schemas.dir"), e);
    if (!w->cd || open_state(w, e) || cstep_open(&w->cs, w->cf, w->cap, w->st, w->cov, e) ||
        alloc_batch(w, e))
        return e->code;
    w->m = cstep_model(w->cs);
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
    free(w->msgs);
    free(w->sl);
    free(w->in);
    free(w->preds);
    buf_free(&w->out);
    buf_free(&w->dlq);
    metrics_close(w->mx);
    mon_close(w->mon);
    cstep_close(w->cs);
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
    for (size_t i = 0; i < n; i++) {
        struct slot *s = &w->sl[i];
        const struct kq_msg *m = w->msgs[i];
        struct err e = {0};
        s->t_in = pipe_now_us();
        s->dead = 0;
        w->in[i] = (struct cstep_click){&s->ev, m->topic, m->partition, m->offset};
        if (codec_decode_click_event(w->cd, m->payload, m->len, &s->ev, &e)) {
            w->in[i].ev = NULL;
            dead_letter(w, i, &e);
        }
    }
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

static void process_batch(struct worker *w, size_t n)
{
    decode(w, n);
    w->redis_ok = !cstep_batch(w->cs, n, w->in, w->preds);
    for (size_t i = 0; i < n; i++)
        if (!w->sl[i].dead)
            emit(w, i);
    cstep_store(w->cs);
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
    const struct cstep_counts *k = cstep_counts(w->cs);

    log_info("summary: %llu messages in %.1f s: %llu predictions (%llu cold start, %llu unknown "
             "item, %llu redelivered, %llu degraded), %llu dead-lettered; %llu items shown, %llu "
             "explored; %llu sessions scored in %llu %s batches; %llu stored states ignored, "
             "%llu state write failures, %llu co-visitation errors",
             (unsigned long long)c->messages, secs, (unsigned long long)c->predictions,
             (unsigned long long)k->cold, (unsigned long long)k->unknown,
             (unsigned long long)k->redelivered, (unsigned long long)c->degraded,
             (unsigned long long)c->dead, (unsigned long long)k->shown,
             (unsigned long long)k->explored, (unsigned long long)k->rows,
             (unsigned long long)k->batches, cstep_ivf(w->cs) ? "IVF" : "sgemm",
             (unsigned long long)k->bad_state, (unsigned long long)k->state_errors,
             (unsigned long long)k->cov_errors);
    log_info("counts: %llu redelivered click(s) skipped (already counted), %llu fenced",
             (unsigned long long)k->cov_redelivered, (unsigned long long)k->cov_fenced);
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
