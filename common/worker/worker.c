/* common/worker/worker.c: the worker runtime (see worker.h). */
#include "worker.h"

#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "abtest.h"
#include "cli.h"
#include "log.h"
#include "metrics.h"
#include "monitor.h"
#include "pipeline.h"
#include "registry.h"
#include "stagetime.h"
#include "state.h"

#define WK_MAX_MONITORS 8
#define WK_GRACE_US 500000 /* past the deadline, the watchdog ends the process */

static volatile sig_atomic_t g_run = 1;
static volatile sig_atomic_t g_reload = 0;
static sem_t g_stop;                  /* posted on SIGTERM/SIGINT and at the loop's end */
static _Atomic int64_t g_deadline_us; /* the shutdown deadline, once known */
static atomic_int g_done;             /* wk_main is returning */

/* Flag-only handlers: the loop acts on them between two steps (sem_post
 * is async-signal-safe: it wakes the shutdown watchdog). */
static void on_stop(int sig)
{
    (void)sig;
    g_run = 0;
    sem_post(&g_stop);
}

static void on_hup(int sig)
{
    (void)sig;
    g_reload = 1;
}

struct wk {
    const struct wk_stream *s;
    void *self;
    struct cli cl;
    struct cfg *cf;
    struct kq *q;
    struct codec *cd;
    struct reg *reg;
    struct state *st;
    struct metrics *mx;
    struct mon *mon[WK_MAX_MONITORS];
    struct mon_ident mid[WK_MAX_MONITORS];
    char mlabel[WK_MAX_MONITORS][128];
    int nmon;
    size_t cap;
    struct kq_msg **msgs;
    unsigned char *status;
    int64_t *t_in;
    struct buf out, dlq, alert;
    int state_ok;
    int expect_data;    /* the group has committed offsets the store has not been checked against */
    uint64_t lost_alerts; /* losses detected, alerts still to publish */
    uint64_t messages, dead, unsent;
    uint64_t watch_stamp;
    int64_t next_watch_us;
    int64_t deadline_us;
    char group_dflt[96];
    int64_t stt_wait_us; /* worker.stage_times: this turn's poll wait */
    /* pipelined streams (prepare): msgs/status/t_in are the half being taken
     * (or finished) of 2 x cap; pend is the batch prepared the turn before */
    struct wk_batch pend;
    int half;
    size_t taking; /* messages of the batch being taken so far (the revoke hook's) */
};

/* ---- accessors ---- */

const struct cfg *wk_cfg(const struct wk *w)
{
    return w->cf;
}
struct codec *wk_codec(struct wk *w)
{
    return w->cd;
}
struct state *wk_state(struct wk *w)
{
    return w->st;
}
struct metrics *wk_metrics(struct wk *w)
{
    return w->mx;
}
size_t wk_batch_cap(const struct wk *w)
{
    return w->cap;
}
const char *wk_name(const struct wk *w)
{
    return w->s->name;
}
const char *wk_group_id(const struct wk *w)
{
    return cli_group_id(w->cf, w->group_dflt);
}
int wk_running(const struct wk *w)
{
    return g_run && !w->deadline_us;
}
int64_t wk_deadline_us(const struct wk *w)
{
    (void)w;
    return atomic_load(&g_deadline_us);
}
void wk_set_state_ok(struct wk *w, int ok)
{
    w->state_ok = ok;
}

void wk_redis_opts(const struct wk *w, struct state_redis_opts *ro)
{
    const struct cfg *cf = w->cf;

    memset(ro, 0, sizeof(*ro));
    ro->host = cfg_str(cf, "redis.host");
    ro->port = (int)cfg_int(cf, "redis.port");
    ro->password = *cfg_str(cf, "redis.password") ? cfg_str(cf, "redis.password") : NULL;
    ro->username = cfg_str(cf, "redis.username");
    ro->prefix = cfg_str(cf, "redis.prefix");
    ro->timeout_ms = (int)cfg_int(cf, "redis.timeout_ms");
    ro->lazy = !cfg_int(cf, "redis.require_at_start");
}

static void model_info(const struct wk *w, struct wk_model_info *mi)
{
    memset(mi, 0, sizeof(*mi));
    if (w->s->model && w->self)
        w->s->model(w->self, mi);
    mi->name = mi->name ? mi->name : w->s->name;
    mi->version = mi->version ? mi->version : "unknown";
}

int wk_monitor_add(struct wk *w, struct mon *m, const char *model_label)
{
    if (!m)
        return -1;
    if (w->nmon == WK_MAX_MONITORS) {
        mon_close(m);
        return -1;
    }
    /* "": the model's name, looked up at each tick (the stream may still be opening) */
    snprintf(w->mlabel[w->nmon], sizeof(w->mlabel[0]), "%s", model_label ? model_label : "");
    w->mon[w->nmon] = m;
    w->mid[w->nmon] =
        (struct mon_ident){w->s->name, w->mlabel[w->nmon], NULL, cfg_str(w->cf, "monitor.topic")};
    return w->nmon++;
}

struct mon *wk_monitor(struct wk *w, int idx)
{
    return idx >= 0 && idx < w->nmon ? w->mon[idx] : NULL;
}

/* ---- produce and acknowledge ---- */

void wk_ack_state(struct wk *w, const struct kq_pos *pos)
{
    if (w->q)
        kq_ack(w->q, pos, KQ_ACK_STATE);
}

int wk_produce(struct wk *w, const char *topic, const void *key, size_t key_len, const void *val,
               size_t val_len, struct err *e)
{
    return kq_produce(w->q, topic, key, key_len, val, val_len, NULL, e);
}

int wk_flush(struct wk *w, int timeout_ms, struct err *e)
{
    return kq_flush(w->q, timeout_ms, e);
}

int wk_produce_state(struct wk *w, const char *topic, const void *key, size_t key_len,
                     const void *val, size_t val_len, const struct kq_pos *pos, struct err *e)
{
    return kq_produce_ack(w->q, topic, key, key_len, val, val_len, pos, KQ_ACK_STATE, e);
}

static void dead_letter(struct wk *w, size_t i, const struct err *why, int64_t now_ms)
{
    struct err e = {0};

    w->status[i] = WK_DEAD;
    w->dead++;
    metrics_add(w->mx, METRICS_DEAD_LETTERS, 1);
    if (w->mon[0]) /* no model answered yet: the main window */
        mon_observe_dead(w->mon[0], now_ms);
    if (pipe_dead_letter(w->q, w->cd, &w->dlq, cfg_str(w->cf, "dlq.topic"), w->s->name, w->msgs[i],
                         why, &e))
        log_error("dead letter not sent (offset will not be committed): %s", e.msg);
}

void wk_dead_letter(struct wk *w, struct wk_batch *b, size_t i, const struct err *why)
{
    dead_letter(w, i, why, b->wall_ms);
}

/* ---- set-up ---- */

static int apply_defaults(const struct wk_stream *s, struct cfg *cf, struct err *e)
{
    for (size_t i = 0; i < s->n_defaults; i++)
        if (strcmp(cfg_origin(cf, s->defaults[i][0]), "default") == 0 &&
            cfg_set(cf, s->defaults[i][0], s->defaults[i][1], "default", e))
            return e->code;
    return ERR_OK;
}

static struct cfg *load_cfg(struct wk *w, struct err *e)
{
    struct cfg *cf = cli_load(&w->cl, w->s->name);

    if (!cf) {
        err_set(e, ERR_CONFIG, "the configuration does not load (see the log)");
        return NULL;
    }
    if (apply_defaults(w->s, cf, e)) {
        cfg_free(cf);
        return NULL;
    }
    return cf;
}

static int open_state(struct wk *w, struct err *e)
{
    struct state_redis_opts ro;

    if (!w->s->state_ttl_key)
        return ERR_OK;
    wk_redis_opts(w, &ro);
    ro.ttl_s = (int)cfg_int(w->cf, w->s->state_ttl_key);
    ro.lost_flag_ms = cfg_int(w->cf, "state.lost_flag_ms");
    ro.layout = (int)cfg_int(w->cf, "state.layout");
    ro.buckets = (int)cfg_int(w->cf, "state.buckets");
    if (strcmp(cfg_str(w->cf, "state.backend"), "memory") == 0)
        w->st = state_open_memory();
    else
        w->st = state_open_redis(&ro, e);
    if (!w->st)
        return e->code ? e->code : err_set(e, ERR_NOMEM, "state: out of memory");
    w->state_ok = 1;
    return ERR_OK;
}

/* A state store that lost its data (state_check_lost): the loss is
 * counted for an alert, published from the loop (the check also runs
 * inside the rebalance callback). expect_data is remembered until a check
 * gets through: an unreachable store is checked again with the next
 * batch. The error itself is left to the state read that follows. */
static void check_lost(struct wk *w, int expect_data)
{
    struct err e = {0};
    int lost_now = 0;

    w->expect_data |= expect_data;
    if (state_check_lost(w->st, w->expect_data, &lost_now, &e) == ERR_OK)
        w->expect_data = 0;
    w->lost_alerts += (uint64_t)(lost_now != 0);
}

/* Zombie fencing: a newly assigned partition takes a new epoch in the
 * state store, so a former owner that was stalled past
 * max.poll.interval.ms cannot overwrite state when it wakes up. */
static int fence_partition(const char *topic, int32_t partition, void *opaque)
{
    struct wk *w = opaque;
    struct err e = {0};

    if (state_fence(w->st, partition, &e)) {
        log_error("fencing %s [%d]: %s", topic, (int)partition, e.msg);
        return e.code;
    }
    /* Committed offsets for the partition: the store must hold data. */
    check_lost(w, w->q && kq_assign_committed(w->q, topic, partition) == 1);
    return ERR_OK;
}

/* The live messages of topic/partition among msgs[0..n) turn WK_HELD. */
static size_t hold_partition(struct kq_msg *const *msgs, unsigned char *status, size_t n,
                             const char *topic, int32_t partition)
{
    size_t held = 0;

    for (size_t i = 0; i < n; i++)
        if (status[i] == WK_LIVE && msgs[i]->partition == partition &&
            strcmp(msgs[i]->topic, topic) == 0) {
            status[i] = WK_HELD;
            held++;
        }
    return held;
}

/* A partition revoked or lost: what the stream kept in memory for it goes
 * (state_owner_changes), and so do its messages in the prepared batch: they
 * are re-delivered to the partition's owner, so emitting them here would
 * answer them twice. */
static void release_partition(const char *topic, int32_t partition, void *opaque)
{
    struct wk *w = opaque;
    size_t dropped;

    if (w->st)
        state_release(w->st, partition);
    dropped = hold_partition(w->pend.msgs, w->pend.status, w->pend.n, topic, partition) +
              hold_partition(w->msgs, w->status, w->taking, topic, partition);
    if (dropped)
        log_info("rebalance: %zu message(s) of %s [%d] taken before its revocation dropped "
                 "(re-delivered to the partition's owner)",
                 dropped, topic, (int)partition);
}

static int open_kafka(struct wk *w, struct err *e)
{
    const char *topic = cfg_str(w->cf, "input.topic");
    size_t np;
    struct kq_opts ko = {
        .group_id = wk_group_id(w), .topics = &topic, .n_topics = 1, .client_id = w->group_dflt};

    ko.props = cfg_kafka(w->cf, &np);
    ko.n_props = np;
    ko.commit_interval_ms = (int)cfg_int(w->cf, "worker.commit_interval_ms");
    /* librdkafka's prefetch defaults stay: bounding it to ten batches cut
     * page faults but, measured on an idle machine, also cut one worker's
     * events/s 3-5x (the fetcher stalls between refills). Users bound the
     * memory with kafka.queued.min.messages / queued.max.messages.kbytes. */
    ko.prefetch_messages = 0;
    ko.stats_cb = w->mx ? metrics_kafka_stats : NULL; /* consumer lag */
    ko.stats_opaque = w->mx;
    ko.on_assign = w->st ? fence_partition : NULL;
    ko.on_revoke = release_partition; /* every stream: drops what a revocation took away */
    ko.assign_opaque = w;
    if (!(w->q = kq_open(&ko, e)))
        return e->code;
    log_info("consuming %s as group %s -> %s (dead letters: %s), batches of %zu", topic,
             ko.group_id, cfg_str(w->cf, "output.topic"), cfg_str(w->cf, "dlq.topic"), w->cap);
    return ERR_OK;
}

static int open_all(struct wk *w, struct err *e)
{
    const enum codec_schema outs[] = {w->s->out_schema, CODEC_DEAD_LETTER};
    const char *topics[] = {cfg_str(w->cf, "output.topic"), cfg_str(w->cf, "dlq.topic")};
    struct wk_model_info mi;
    struct metrics_opts mo;
    size_t np;

    w->cap = (size_t)cfg_int(w->cf, w->s->batch_key ? w->s->batch_key : "worker.batch_size");
    np = w->s->prepare ? 2 : 1; /* pipelined: two batches in flight */
    w->msgs = calloc(np * w->cap, sizeof(*w->msgs));
    w->status = calloc(np * w->cap, 1);
    w->t_in = calloc(np * w->cap, sizeof(*w->t_in));
    buf_init(&w->out, 0);
    buf_init(&w->dlq, 2 * CODEC_MAX_MESSAGE); /* the original message plus metadata */
    buf_init(&w->alert, 0);
    if (!w->msgs || !w->status || !w->t_in)
        return err_set(e, ERR_NOMEM, "out of memory for a batch of %zu", w->cap);
    if (!(w->cd = pipe_codec_open(w->cf, &w->reg, outs, topics, 2, e)) || open_state(w, e))
        return e->code;
    if (w->st) /* an unacknowledged loss recorded before this start flags at once */
        check_lost(w, 0);
    if (!(w->self = w->s->open(w, e)))
        return e->code ? e->code : err_set(e, ERR_NOMEM, "%s: out of memory", w->s->name);
    model_info(w, &mi);
    mo = (struct metrics_opts){
        (int)cfg_int(w->cf, "metrics.port"), w->s->name, mi.name, mi.version, 0, mi.file};
    if (!(w->mx = metrics_open(&mo, e)) && e->code)
        return e->code;
    stt_enable(cfg_str(w->cf, "worker.stage_times"));
    return open_kafka(w, e);
}

static void flip_half(struct wk *w);

static void close_all(struct wk *w)
{
    if (w->half)
        flip_half(w); /* the arrays' start */
    if (w->self)
        w->s->close(w->self);
    for (int i = 0; i < w->nmon; i++)
        mon_close(w->mon[i]);
    metrics_close(w->mx);
    state_close(w->st);
    codec_close(w->cd);
    reg_close(w->reg);
    free(w->msgs);
    free(w->status);
    free(w->t_in);
    buf_free(&w->out);
    buf_free(&w->dlq);
    buf_free(&w->alert);
}

/* ---- reload ---- */

/* An alert event (JSON from the monitor) encoded by the codec and
 * produced to monitor.topic, keyed by the worker's name. */
static int publish_alert(void *opaque, const char *json, struct err *e)
{
    struct wk *w = opaque;

    buf_reset(&w->alert);
    if (codec_from_json(w->cd, CODEC_ALERT, json, strlen(json), &w->alert, e))
        return e->code;
    return kq_produce(w->q, cfg_str(w->cf, "monitor.topic"), w->s->name, strlen(w->s->name),
                      w->alert.data, w->alert.len, NULL, e);
}

static void reload_alert(struct wk *w, const char *severity, const char *msg)
{
    struct wk_model_info mi;
    struct mon_ident id;
    struct err e = {0};
    char json[2048];

    model_info(w, &mi);
    id = (struct mon_ident){w->s->name, mi.name, mi.version, cfg_str(w->cf, "monitor.topic")};
    if (mon_event_json(&id, "model_reload", severity, msg, pipe_wall_ms(), json, sizeof(json),
                       &e) ||
        publish_alert(w, json, &e))
        log_error("model reload alert not sent to %s: %s", id.topic, e.msg);
}

static void publish_lost_alerts(struct wk *w)
{
    struct wk_model_info mi;
    struct mon_ident id;
    struct err e = {0};
    char json[2048], msg[600];

    if (!w->lost_alerts)
        return;
    w->lost_alerts = 0;
    model_info(w, &mi);
    id = (struct mon_ident){w->s->name, mi.name, mi.version, cfg_str(w->cf, "monitor.topic")};
    snprintf(msg, sizeof(msg),
             "state store %s:%lld lost its data (restarted empty or flushed): every aggregate "
             "restarted empty; predictions are flagged degraded until acknowledged "
             "(streamml config ack-state-loss)%s",
             cfg_str(w->cf, "redis.host"), (long long)cfg_int(w->cf, "redis.port"),
             cfg_int(w->cf, "state.lost_flag_ms") ? " or state.lost_flag_ms passes" : "");
    if (mon_event_json(&id, "state_lost", "CRITICAL", msg, pipe_wall_ms(), json, sizeof(json),
                       &e) ||
        publish_alert(w, json, &e))
        log_error("state loss alert not sent to %s: %s", id.topic, e.msg);
    else
        metrics_add(w->mx, METRICS_ALERTS, 1);
}

static void finish_pending(struct wk *w);

/* Between two batches: the batch before was scored by the old set, the
 * next one by the new set, whole (never a mix, never a gap; a prepared
 * batch is finished by the set that prepared it first). */
static void reload(struct wk *w, const char *why)
{
    struct wk_model_info mi;
    struct err e = {0};
    char old[128], msg[700];
    struct cfg *cf;
    int rc;

    finish_pending(w);
    model_info(w, &mi);
    snprintf(old, sizeof(old), "%s", mi.version);
    if (!w->s->reload)
        rc = err_set(&e, ERR_CONFIG, "this stream does not reload its models");
    else if (!(cf = load_cfg(w, &e)))
        rc = e.code;
    else {
        rc = w->s->reload(w->self, cf, &e);
        cfg_free(cf);
    }
    model_info(w, &mi);
    if (rc) {
        snprintf(msg, sizeof(msg), "model reload (%s) refused: %s; still serving version %s", why,
                 e.msg, old);
        log_error("%s", msg);
        reload_alert(w, "WARNING", msg);
        return;
    }
    snprintf(msg, sizeof(msg), "model reloaded (%s): version %s -> %s", why, old, mi.version);
    log_info("%s", msg);
    reload_alert(w, "INFO", msg);
}

/* model.watch_ms: a stamp of the configuration file's and the stream's
 * files' mtimes and sizes; 1 when it changed since the last call. */
static int watch_files(struct wk *w, int init)
{
    const char *paths[34];
    size_t n = w->s->files ? w->s->files(w->self, paths, 32) : 0;
    const char *conf = w->cl.config_path ? w->cl.config_path : getenv("STREAMML_CONFIG");
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

static void maybe_reload(struct wk *w)
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

/* ---- one batch ---- */

/* worker.stage_times: the batch's poll wait and take, and each event's
 * age when taken, from its record's timestamp (the producer's clock, in
 * ms: ages are within a millisecond). */
static void stage_take(struct wk *w, size_t n, int64_t t0, int64_t t1)
{
    int64_t now = pipe_now_us(), wall = stt_wall_us();

    w->stt_wait_us = t1 - t0;
    stt_add(STT_WAIT, t1 - t0);
    stt_add(STT_TAKE, now - t1);
    stt_add(STT_BATCH_N, (int64_t)n);
    for (size_t i = 0; i < n; i++)
        if (w->msgs[i]->timestamp_ms >= 0)
            stt_add(STT_AGE_TAKE, wall - w->msgs[i]->timestamp_ms * 1000);
}

static void stage_ages(struct wk *w, size_t n, enum stt_stage s)
{
    int64_t wall = stt_wall_us();

    for (size_t i = 0; i < n; i++)
        if (w->msgs[i]->timestamp_ms >= 0)
            stt_add(s, wall - w->msgs[i]->timestamp_ms * 1000);
}

/* Takes what is waiting, up to the capacity: waits for the first message
 * only, so a lone message is processed at once. Paused, it only polls. */
static size_t take_batch(struct wk *w, struct err *e)
{
    size_t n = 0;
    struct kq_msg *m;
    /* a prepared batch waits for no input: taken with nothing waiting, it is finished */
    int timeout = w->pend.n ? 0 : (int)cfg_int(w->cf, "worker.poll_ms");
    int64_t t0 = stt_enabled() ? pipe_now_us() : 0, t1 = t0;

    while (n < w->cap) {
        if (kq_poll(w->q, n ? 0 : timeout, &m, e) || !m)
            break;
        if (!n && t0)
            t1 = pipe_now_us();
        w->status[n] = WK_LIVE; /* WK_HELD if its partition is revoked in a later poll */
        w->msgs[n++] = m;
        w->taking = n;
    }
    if (t0 && n)
        stage_take(w, n, t0, t1);
    w->taking = 0;
    return n;
}

/* While the registry cannot be asked (ERR_RETRY) the message is held:
 * retried with back-off (100 ms doubling to 5 s) while deliveries are
 * served, until it decodes, fails for good or the worker stops. */
static int decode_held(struct wk *w, const struct wk_batch *b, size_t i, struct err *e)
{
    const struct kq_msg *m = w->msgs[i];
    int backoff = 100, rc;
    int64_t next_log = 0;
    struct err se = {0};

    while ((rc = w->s->decode(w->self, b, i, e)) == ERR_RETRY && g_run) {
        if (pipe_now_us() >= next_log) {
            log_warn("holding %s [%d] @ %lld until the schema registry answers: %s", m->topic,
                     (int)m->partition, (long long)m->offset, e->msg);
            next_log = pipe_now_us() + 30 * 1000000LL;
        }
        for (int64_t end = pipe_now_us() + backoff * 1000LL, left;
             (left = end - pipe_now_us()) > 0 && g_run;)
            if (kq_serve(w->q, (int)((left + 999) / 1000), &se) == ERR_FATAL)
                return err_set(e, ERR_FATAL, "%s", se.msg);
        backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
    }
    return rc;
}

static void decode_batch(struct wk *w, struct wk_batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        struct err e = {0};
        int rc;
        w->t_in[i] = pipe_now_us();
        if (w->status[i] == WK_HELD) /* its partition was revoked while the batch was taken */
            continue;
        rc = decode_held(w, b, i, &e);
        if (rc == ERR_RETRY || rc == ERR_FATAL) {
            log_error("stopping with %zu message(s) unprocessed: %s", b->n - i, e.msg);
            for (; i < b->n; i++)
                w->status[i] = WK_HELD;
            g_run = 0;
            break;
        }
        if (rc)
            dead_letter(w, i, &e, b->wall_ms);
    }
}

static void emit_batch(struct wk *w, struct wk_batch *b)
{
    const char *topic = cfg_str(w->cf, "output.topic");

    for (size_t i = 0; i < b->n; i++) {
        const struct kq_msg *m = w->msgs[i];
        struct wk_record r = {0};
        struct err e = {0};
        if (b->status[i] != WK_LIVE)
            continue;
        buf_reset(&w->out);
        r.val = &w->out;
        r.latency_us = pipe_now_us() - w->t_in[i];
        if (w->s->emit(w->self, b, i, &r, &e) ||
            kq_produce(w->q, topic, r.key, r.key_len, w->out.data, w->out.len, &m->pos, &e)) {
            log_error("prediction for %s [%d] @ %lld not sent (offset will not be committed): "
                      "%s",
                      m->topic, (int)m->partition, (long long)m->offset, e.msg);
            w->unsent++;
            continue;
        }
        metrics_add(w->mx, METRICS_PREDICTIONS, 1);
        metrics_add(w->mx, METRICS_DEGRADED, (uint64_t)(r.degraded != 0));
        metrics_observe_latency(w->mx, r.latency_us);
        if (!w->st)
            kq_ack(w->q, &m->pos, KQ_ACK_STATE); /* no state to apply */
    }
}

static void begin_batch(struct wk *w, struct wk_batch *b, size_t n)
{
    int64_t t0;

    *b = (struct wk_batch){
        n, w->msgs, w->status, w->t_in, pipe_wall_ms(), 0, (size_t)w->half * w->cap};

    /* Once a batch (one round trip): a FLUSHALL on a live connection is
     * seen by nothing else. While the store is away the reconnect checks. */
    t0 = stt_enabled() ? pipe_now_us() : 0;
    if (w->st && w->state_ok && wk_running(w))
        check_lost(w, 0);
    if (t0 && w->st)
        stt_add(STT_CHECK, pipe_now_us() - t0);
    publish_lost_alerts(w);
    b->state_lost = w->st && state_lost_flag(w->st);
    t0 = t0 ? pipe_now_us() : 0;
    decode_batch(w, b);
    if (t0)
        stt_add(STT_DECODE, pipe_now_us() - t0);
}

/* finish_batch's steps, timed (worker.stage_times). */
static void stage_finish(struct wk *w, struct wk_batch *b)
{
    int64_t t1 = pipe_now_us(), t2, t3;

    w->s->process(w->self, b);
    t2 = pipe_now_us();
    emit_batch(w, b);
    stage_ages(w, b->n, STT_AGE_EMIT);
    t3 = pipe_now_us();
    if (w->s->store)
        w->s->store(w->self, b);
    stage_ages(w, b->n, STT_AGE_DONE);
    stt_add(STT_PROCESS, t2 - t1);
    stt_add(STT_EMIT, t3 - t2);
    stt_add(STT_STORE, pipe_now_us() - t3);
}

static void finish_batch(struct wk *w, struct wk_batch *b)
{
    if (stt_enabled()) {
        stage_finish(w, b);
    } else {
        w->s->process(w->self, b);
        emit_batch(w, b);
        if (w->s->store)
            w->s->store(w->self, b);
    }
    for (size_t i = 0; i < b->n; i++)
        kq_msg_release(b->msgs[i]);
    w->messages += b->n;
    b->n = 0;
}

static void process_batch(struct wk *w, size_t n)
{
    struct wk_batch b;

    begin_batch(w, &b, n);
    finish_batch(w, &b);
}

/* Pipelined streams: msgs, status and t_in move to the other half (the
 * functions above work on the batch they point at). */
static void flip_half(struct wk *w)
{
    ptrdiff_t d = w->half ? -(ptrdiff_t)w->cap : (ptrdiff_t)w->cap;

    w->msgs += d;
    w->status += d;
    w->t_in += d;
    w->half ^= 1;
}

/* The prepared batch (if any) processed, emitted, stored and released. */
static void finish_pending(struct wk *w)
{
    if (!w->pend.n)
        return;
    flip_half(w); /* its half */
    finish_batch(w, &w->pend);
}

/* Pipelined streams (prepare): the batch just taken is decoded and
 * prepared, then the one taken the turn before is finished, so that the
 * stream's work on the new one (its images decoded on the stream's own
 * thread) overlaps the old one's process (the forward passes). The next
 * batch is taken into the half just freed. */
static void pipelined_batch(struct wk *w, size_t n)
{
    struct wk_batch b = {0};

    if (n) {
        begin_batch(w, &b, n);
        w->s->prepare(w->self, &b);
    }
    if (w->pend.n)
        finish_pending(w);
    else if (n)
        flip_half(w);
    w->pend = b;
}

/* ---- the loop ---- */

/* Input is taken only while the in-flight bound and the stream's own
 * queues have room. No room: fetching stops but polling goes on, so the
 * member stays in its group however long the stall. */
static int room_for_batch(struct wk *w)
{
    return kq_inflight(w->q) < (size_t)cfg_int(w->cf, "worker.max_inflight") &&
           (!w->s->room || w->s->room(w->self));
}

static void tick_monitors(struct wk *w, size_t n)
{
    struct wk_model_info mi;

    model_info(w, &mi);
    for (int i = 0; i < w->nmon; i++) {
        w->mid[i].model_version = mi.version; /* alerts name the model serving now */
        w->mid[i].model = *w->mlabel[i] ? w->mlabel[i] : mi.name;
        metrics_add(w->mx, METRICS_ALERTS,
                    mon_tick_alerts(w->mon[i], &w->mid[i], pipe_wall_ms(), publish_alert, w));
    }
    metrics_add(w->mx, METRICS_EVENTS, n);
    metrics_worker_tick(w->mx, w->mon[0], kq_assigned(w->q), !w->st || w->state_ok, 1);
}

/* The shutdown deadline: SIGTERM (or the loop's end) + shutdown_timeout_ms,
 * set once by whichever thread gets there first; the state store's calls
 * are clamped to it from then on. */
static int64_t arm_deadline(struct wk *w)
{
    int64_t want = pipe_now_us() + cfg_int(w->cf, "worker.shutdown_timeout_ms") * 1000, none = 0;

    if (!atomic_compare_exchange_strong(&g_deadline_us, &none, want))
        want = none;
    if (w->st)
        state_set_deadline(w->st, want);
    return want;
}

/* The shutdown watchdog: a call in flight when SIGTERM arrives (a Redis
 * read waiting out redis.timeout_ms on a hung server, a produce blocked on
 * a full queue) cannot be cut short from the worker thread, so past the
 * deadline (and a grace for the close) the process ends here, exit code 1.
 * Nothing is lost: what was not committed is re-delivered, and state
 * updates are idempotent. */
static void *watchdog(void *arg)
{
    struct wk *w = arg;
    int64_t deadline, left;

    while (sem_wait(&g_stop) != 0)
        ;
    if (atomic_load(&g_done))
        return NULL;
    deadline = arm_deadline(w);
    while ((left = deadline + WK_GRACE_US - pipe_now_us()) > 0 && !atomic_load(&g_done)) {
        struct timespec ts = {0, (left < 50000 ? left : 50000) * 1000};
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&g_done))
        return NULL;
    log_error("shutdown: still busy %lld ms past worker.shutdown_timeout_ms: exiting now "
              "(what is not committed is re-delivered)",
              (long long)((pipe_now_us() - deadline) / 1000));
    _exit(1);
}

/* The turn's end: the delivery reports served after the batch, and the
 * turn less the poll's wait (what the next batch waited behind). */
static void stage_turn(const struct wk *w, int64_t turn0, int64_t serve0)
{
    int64_t now = pipe_now_us();

    stt_add(STT_SERVE, now - serve0);
    stt_add(STT_TURN, now - turn0 - w->stt_wait_us);
}

static int run(struct wk *w)
{
    struct err e = {0};
    int64_t t0 = pipe_now_us(), last_input = t0;
    int64_t idle_us = cfg_int(w->cf, "worker.idle_exit_ms") * 1000;
    uint64_t max_msgs = (uint64_t)cfg_int(w->cf, "worker.max_messages");

    watch_files(w, 1);
    while (g_run) {
        size_t n = 0;
        int room;
        int64_t turn0 = stt_enabled() ? pipe_now_us() : 0, serve0, tick0;
        if (w->s->tick)
            w->s->tick(w->self, pipe_now_us());
        room = room_for_batch(w);
        if (kq_paused(w->q) == room && kq_pause(w->q, !room, &e))
            log_error("%s", e.msg);
        n = take_batch(w, &e); /* paused: serves the group, takes nothing */
        if (e.code == ERR_FATAL)
            break;
        if (n)
            last_input = pipe_now_us();
        if (w->s->prepare)
            pipelined_batch(w, n);
        else if (n)
            process_batch(w, n);
        tick0 = turn0 ? pipe_now_us() : 0;
        tick_monitors(w, n);
        maybe_reload(w);
        if (n && turn0)
            stt_add(STT_TICK, pipe_now_us() - tick0);
        /* No wait here: take_batch already waited (worker.poll_ms) in the
         * consumer's poll, which returns as soon as input arrives; a wait
         * on the producer's queue would hold that input back. */
        serve0 = turn0 ? pipe_now_us() : 0;
        if (kq_serve(w->q, 0, &e) == ERR_FATAL)
            break;
        if (n && turn0)
            stage_turn(w, turn0, serve0);
        if ((max_msgs && w->messages >= max_msgs) ||
            (idle_us && pipe_now_us() - last_input > idle_us))
            break;
    }
    /* The prepared batch is in flight like a batch in hand: drained (on a
     * fatal delivery error only released: nothing past it is committed). */
    if (e.code == ERR_FATAL)
        for (; w->pend.n; w->pend.n--)
            kq_msg_release(w->pend.msgs[w->pend.n - 1]);
    finish_pending(w);
    /* From here every call is bounded by the shutdown deadline (counted
     * from SIGTERM when that is what stopped the loop). */
    w->deadline_us = arm_deadline(w);
    sem_post(&g_stop);
    stt_report();
    log_info("%s: %llu messages, %llu dead-lettered, %llu records not sent", w->s->name,
             (unsigned long long)w->messages, (unsigned long long)w->dead,
             (unsigned long long)w->unsent);
    if (w->s->summary)
        w->s->summary(w->self, (double)(pipe_now_us() - t0) / 1e6, w->messages);
    if (e.code == ERR_FATAL) {
        log_error("stopping: %s", e.msg);
        return 1;
    }
    return 0;
}

static void usage_of(const struct wk_stream *s, FILE *out)
{
    fputs(s->usage, out);
    cfg_help(out);
}

static const struct wk_stream *g_stream; /* for cli_parse's usage callback */

static void usage(FILE *out)
{
    usage_of(g_stream, out);
}

int wk_main(int argc, char **argv, const struct wk_stream *s)
{
    struct wk w = {0};
    struct err e = {0};
    pthread_t dog;
    int rc, left_ms;

    g_stream = s;
    w.s = s;
    snprintf(w.group_dflt, sizeof(w.group_dflt), "streamml-%s", s->name);
    if ((rc = cli_parse(&w.cl, argc, argv, usage)) >= 0)
        return rc;
    if (!(w.cf = load_cfg(&w, &e))) {
        if (e.code && strcmp(e.msg, "the configuration does not load (see the log)") != 0)
            fprintf(stderr, "error: %s\n", e.msg);
        return 2;
    }
    sem_init(&g_stop, 0, 0);
    signal(SIGINT, on_stop);
    signal(SIGTERM, on_stop);
    signal(SIGHUP, on_hup);
    signal(SIGPIPE, SIG_IGN); /* a dropped connection is an error return, not a kill */
    if (open_all(&w, &e)) {
        log_error("%s", e.msg);
        fprintf(stderr, "error: %s\n", e.msg);
        rc = e.code == ERR_CONFIG ? 2 : 1;
    } else if (pthread_create(&dog, NULL, watchdog, &w)) {
        log_error("cannot start the shutdown watchdog");
        rc = 1;
    } else {
        rc = run(&w);
        /* Drain: deliveries, then commit, leave the group, within what is
         * left of the deadline (at least 1 ms: 0 would mean unbounded). */
        left_ms = (int)((w.deadline_us - pipe_now_us()) / 1000);
        if (kq_close(w.q, left_ms > 0 ? left_ms : 1, &e)) {
            log_error("close: %s", e.msg);
            rc = rc ? rc : 1;
        }
        w.q = NULL;
        atomic_store(&g_done, 1);
        sem_post(&g_stop);
        pthread_join(dog, NULL);
    }
    kq_close(w.q, 0, NULL);
    close_all(&w);
    cfg_free(w.cf);
    return rc;
}
