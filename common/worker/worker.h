/* common/worker/worker.h: the worker runtime (prefix wk_).
 *
 * One program for every streaming worker; a stream (transactions,
 * clickstream, images) is a table of callbacks and its main() is
 *
 *     int main(int argc, char **argv) { return wk_main(argc, argv, &txn_stream); }
 *
 * The runtime owns, the same for every stream:
 *   - the command line and configuration (common/worker/cli.h: -c, -X, -b, --help
 *     printing the stream's usage and the keys), the stream's defaults of
 *     the shared keys (input.topic, ...), exit codes: 0 ok (SIGTERM, idle
 *     exit, max_messages), 1 runtime failure (a delivery failed for good,
 *     nothing past it committed; the drain timed out), 2 usage or
 *     configuration error;
 *   - signals: SIGTERM/SIGINT set a flag (the loop stops between two
 *     steps), SIGHUP asks for a reload, SIGPIPE is ignored process-wide (a
 *     dropped Redis connection is an error return, never a kill);
 *   - the state store (common/state/state.h) when the stream keeps state
 *     (state_ttl_key set): Redis with redis.* (ACL user, password, timeout)
 *     or state.backend=memory, and zombie fencing of each assigned partition
 *     (state_fence) before any of its messages is handed out; a store that
 *     lost its data (state_check_lost: after each fence, with the group's
 *     committed offsets as the evidence data should be there, and once a
 *     batch) is alerted on monitor.topic ("state_lost", CRITICAL) and the
 *     predictions are flagged (wk_batch.state_lost) until acknowledged;
 *   - the codec through pipe_codec_open for every stream, so
 *     schema.registry.url works everywhere (the stream's prediction schema
 *     and the dead-letter schema registered under "<topic>-value"); a
 *     message whose schema the registry cannot give yet is held (retried
 *     with back-off while deliveries are served) until it decodes, fails
 *     for good or SIGTERM arrives (then it stays unacknowledged);
 *   - the consumer group and producer (common/io/kafka.h) and taking a batch
 *     with pause-while-polling back-pressure: when worker.max_inflight
 *     messages are in flight or the stream's room() says no, fetching is
 *     paused but kq_poll goes on, so the member stays in its group however
 *     long the stall;
 *   - produce and acknowledge: the one record per input message goes to
 *     output.topic tied to the message (KQ_ACK_DELIVERED); bad input goes to
 *     dlq.topic with the reason; the state part (KQ_ACK_STATE) is acked by
 *     the runtime for stateless streams and by the stream (wk_ack_state)
 *     once the message's state update is applied for stateful ones;
 *   - /metrics /healthz /readyz (common/monitor/metrics.h): events, predictions,
 *     dead letters, degraded, latency, alerts, lag; readiness from the
 *     assignment and wk_set_state_ok;
 *   - monitor ticks and alert publishing for the monitors a stream hands
 *     over (wk_monitor_add), on monitor.topic;
 *   - hot reload: SIGHUP, or a changed file (the configuration and the
 *     stream's files()) polled every model.watch_ms: the configuration is
 *     read again and the stream's reload() called between two batches; a
 *     refusal keeps the old models serving, is logged and published on
 *     monitor.topic as a "model_reload" WARNING event (INFO on success);
 *   - timers: the stream's tick() runs every turn of the loop (at least
 *     every worker.poll_ms, also while paused), where it retries deferred
 *     work whose time has come instead of sleeping inside a step;
 *   - a bounded drain: after SIGTERM every call is bounded by
 *     worker.shutdown_timeout_ms (wk_deadline_us; the state store's calls
 *     are clamped to it by the runtime), then deliveries are served, offsets
 *     committed, the group left (kq_close).
 *
 * One turn of the loop:
 *     tick(); [reload()]; take a batch (or only poll, paused);
 *     for each message: decode() -> WK_LIVE, or dead-lettered, or WK_HELD;
 *     process(batch)         state read, features, score: one call a batch
 *     emit(batch, i)         per WK_LIVE message, in order -> output.topic
 *     store(batch)           state write, wk_ack_state per applied message
 * With prepare() (pipelined streams): take and decode batch N+1, prepare(N+1),
 * then process/emit/store batch N.
 * Messages are released after store(); a stream copies what it must keep
 * (e.g. a queue of updates to re-apply) and acks later by position.
 *
 * Threads: one; every wk_ function is called from the worker thread.
 * The API grows additively: new callbacks and fields are optional (NULL/0
 * keeps the old behaviour).
 */
#ifndef STREAMML_WORKER_H
#define STREAMML_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "codec.h"
#include "err.h"
#include "kafka.h"

struct wk;
struct mon;
struct metrics;
struct state;
struct state_redis_opts;

/* Status of one message of a batch (struct wk_batch.status). */
enum wk_status {
    WK_LIVE = 0, /* decoded: process, emit and store it */
    WK_DEAD,     /* dead-lettered (by the runtime, or wk_dead_letter): skip it */
    WK_HELD      /* left unacknowledged at shutdown (re-delivered): skip it */
};

/* One batch, owned by the runtime, valid from decode to store. */
struct wk_batch {
    size_t n;                   /* messages, <= wk_batch_cap() */
    struct kq_msg *const *msgs; /* msgs[i]: bytes, topic, partition, offset, pos */
    unsigned char *status;      /* enum wk_status per message */
    const int64_t *t_in_us;     /* monotonic time each message was taken */
    int64_t wall_ms;            /* wall clock of the batch (for monitors) */
    int state_lost;             /* the state store lost its data and no operator
                                   acknowledged it yet (state_lost_flag): a stateful
                                   stream flags the batch's predictions degraded */
    size_t base;                /* pipelined streams (prepare): the stream's slot of
                                   message 0, 0 or wk_batch_cap() (two batches in
                                   flight); 0 for the others */
};

/* What emit() hands back for one message. */
struct wk_record {
    int64_t latency_us; /* in: taken -> now; put it in the prediction */
    struct buf *val;    /* in: empty buffer; out: the encoded record */
    const void *key;    /* out: the record's key (e.g. the entity id) */
    size_t key_len;
    int degraded; /* out: scored without its state (metrics) */
};

/* The model a stream serves: build_info, alert idents, reload messages. */
struct wk_model_info {
    const char *name, *version;
    const char *file; /* its SHA-256 is /metrics' model_sha; may be NULL */
};

struct wk_stream {
    const char *name;                 /* "transactions": logs, metrics, dead letters,
                                         the default group and client id streamml-<name> */
    const char *usage;                /* --help text before the keys */
    const char *const (*defaults)[2]; /* {key, value} overriding cfg defaults */
    size_t n_defaults;
    enum codec_schema out_schema; /* the prediction record's schema */
    const char *batch_key;        /* batch capacity key; NULL: worker.batch_size */
    const char *state_ttl_key;    /* keeps state: TTL key of its entities (e.g.
                                     "redis.ttl_s"); NULL: no state store, no
                                     fencing, the runtime acks KQ_ACK_STATE */

    /* Models, stream state and settings (typed, read once). Called after
     * the codec and the state store are open, before Kafka. NULL with the
     * reason in *e (ERR_CONFIG: exit 2). */
    void *(*open)(struct wk *w, struct err *e);
    void (*close)(void *self); /* NULL-safe self */
    void (*model)(void *self, struct wk_model_info *mi);

    /* msgs[i] -> the stream's event slot i, validated. ERR_OK: live;
     * ERR_RETRY: the registry cannot be asked yet (held, retried);
     * anything else: dead-lettered with e as the reason. */
    int (*decode)(void *self, const struct wk_batch *b, size_t i, struct err *e);
    /* The batch's WK_LIVE messages: state read, features, score. May
     * dead-letter a message (wk_dead_letter). */
    void (*process)(void *self, struct wk_batch *b);
    /* One WK_LIVE message's record into r (produced by the runtime to
     * output.topic, tied to the message). Non-zero: not sent (logged; its
     * offset is not committed). The stream observes its monitors here. */
    int (*emit)(void *self, const struct wk_batch *b, size_t i, struct wk_record *r, struct err *e);
    /* After the emits: state write; wk_ack_state for each message whose
     * state update is applied (now or later). NULL for stateless streams. */
    void (*store)(void *self, struct wk_batch *b);

    /* Optional (NULL: never refuses / no-op). */
    int (*room)(void *self); /* 0: no room for a batch (fetching paused) */
    void (*tick)(void *self, int64_t now_us);
    /* New models from cf (already loaded, defaults applied), smoke-checked,
     * swapped in only if all is well; else the old ones keep serving and
     * the reason is in *e. NULL: reload is refused ("not supported"). */
    int (*reload)(void *self, const struct cfg *cf, struct err *e);
    /* The model files watched under model.watch_ms (the config is added). */
    size_t (*files)(void *self, const char **paths, size_t cap);
    void (*summary)(void *self, double secs, uint64_t messages);
    /* Pipelined step: called with a batch just decoded, before process()
     * of the batch taken the turn before, to start its work (the images
     * stream's decode thread loads its images while the batch before runs
     * its forward passes). process/emit for it come one turn later, or at
     * once when no input waits, before a reload and at the end (SIGTERM
     * drains it). Two batches are in flight: per-message slots of the
     * stream are 2 x wk_batch_cap(), b->base + i. A message whose partition
     * is revoked in between turns WK_HELD (not emitted, re-delivered to the
     * partition's owner). NULL: the plain loop. */
    void (*prepare)(void *self, struct wk_batch *b);
};

/* The whole of a worker's main(): returns the exit code. */
int wk_main(int argc, char **argv, const struct wk_stream *s);

/* ---- for the stream's callbacks ---- */

const struct cfg *wk_cfg(const struct wk *w);
struct codec *wk_codec(struct wk *w);
struct state *wk_state(struct wk *w);     /* NULL: stateless stream */
struct metrics *wk_metrics(struct wk *w); /* NULL: metrics.port 0 (metrics_* are NULL-safe) */
size_t wk_batch_cap(const struct wk *w);
const char *wk_group_id(const struct wk *w);
const char *wk_name(const struct wk *w);
/* The redis.* connection options (host, port, ACL user, password,
 * timeout, prefix, lazy) for a stream's own Redis users (co-visitation,
 * labels); ttl_s is 0. Strings are the configuration's. */
void wk_redis_opts(const struct wk *w, struct state_redis_opts *ro);

/* Running: 0 once SIGTERM/SIGINT arrived or the loop is ending. */
int wk_running(const struct wk *w);
/* After SIGTERM: the monotonic time (us) every call must end by; 0 before. */
int64_t wk_deadline_us(const struct wk *w);

/* Monitoring: the runtime takes m (closes it), ticks it every turn and
 * publishes its alerts on monitor.topic labelled model_label (NULL: the
 * model's name) and the model's current version. Index 0 is the stream's
 * main monitor: it sees dead letters and feeds /metrics. Returns the index,
 * -1 when full (m is closed). m NULL (monitoring off) is accepted: -1. */
int wk_monitor_add(struct wk *w, struct mon *m, const char *model_label);
struct mon *wk_monitor(struct wk *w, int idx); /* NULL: none */

/* The state part of message pos is applied: its offset is stored once its
 * record is delivered too. */
void wk_ack_state(struct wk *w, const struct kq_pos *pos);
/* Dead-letters b->msgs[i] with why (during process) and marks it WK_DEAD. */
void wk_dead_letter(struct wk *w, struct wk_batch *b, size_t i, const struct err *why);
/* An extra, untracked record (e.g. shadow predictions). */
int wk_produce(struct wk *w, const char *topic, const void *key, size_t key_len, const void *val,
               size_t val_len, struct err *e);
/* Waits up to timeout_ms for every record produced so far to be delivered
 * (e.g. a batch's predictions, before a join remembers them as published). */
int wk_flush(struct wk *w, int timeout_ms, struct err *e);
/* A record whose delivery report acknowledges the state part of pos
 * (instead of wk_ack_state): the input's offset is not committed before it
 * is delivered. Of several for one message, the last one produced carries
 * pos (one key: one partition, delivered in order). */
int wk_produce_state(struct wk *w, const char *topic, const void *key, size_t key_len,
                     const void *val, size_t val_len, const struct kq_pos *pos, struct err *e);
/* Whether the state store answered the last time (/readyz, degraded). */
void wk_set_state_ok(struct wk *w, int ok);

#endif
