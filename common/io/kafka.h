/* common/io/kafka.h: Kafka consumer group + producer (prefix kq_).
 *
 * The delivery contract (librdkafka's at-least-once recipe): auto offset
 * store is off; an input message's offset is stored for commit only once
 * every acknowledgement it needs has arrived: KQ_ACK_STATE (its Redis update
 * is applied) and KQ_ACK_DELIVERED (the delivery report of the one record
 * produced for it, prediction or dead letter). Offsets are stored in order:
 * a partition's committed offset never passes an unacknowledged message.
 * A permanently failed delivery makes the handle fatal (kq_serve returns
 * ERR_FATAL): the worker must stop without committing past it.
 *
 * Commits: besides librdkafka's auto-commit (auto.commit.interval.ms),
 * stored offsets are committed asynchronously at most every
 * commit_interval_ms as they advance, so that what a crash or a refused
 * rebalance commit re-delivers is a fraction of a second of input, not a
 * whole auto-commit interval.
 *
 * Rebalance: on revoke, in-flight work is flushed, stored offsets are
 * committed synchronously, then the partitions are released; when the
 * assignment was lost, nothing is committed. Both rebalance protocols are
 * served: EAGER (range, roundrobin: everything is revoked, then assigned)
 * and COOPERATIVE (partition.assignment.strategy=cooperative-sticky: only
 * the partitions that move are revoked; incremental assign/unassign).
 *
 * One thread uses a handle.
 */
#ifndef STREAMML_KAFKA_H
#define STREAMML_KAFKA_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "err.h"

struct kq;

struct kq_opts {
    const char *group_id;        /* NULL: producer only, or assign_all */
    const char *const *topics;   /* consumed topics (subscribe) */
    size_t n_topics;
    int assign_all;              /* no group: read every partition of topics */
    int from_beginning;          /* with assign_all: from the start, else the end */
    const struct cfg_kv *props;  /* librdkafka passthrough (from cfg_kafka) */
    size_t n_props;
    const char *client_id;
    /* Optional: librdkafka's statistics JSON of the consumer, every
     * statistics.interval.ms (default 5000 when set), on the polling thread. */
    void (*stats_cb)(const char *json, size_t len, void *opaque);
    void *stats_opaque;
    /* Optional: called for each partition a rebalance assigns, before any
     * of its messages is returned (zombie fencing: state_fence). A non-zero
     * return makes the handle fatal: processing the partition unfenced
     * could let a stalled former owner overwrite its state. */
    int (*on_assign)(const char *topic, int32_t partition, void *opaque);
    /* Optional: called for each partition revoked or lost, before it is
     * released (state kept for it in memory is dropped). Same opaque. */
    void (*on_revoke)(const char *topic, int32_t partition, void *opaque);
    void *assign_opaque;
    /* Group consumers: commit stored offsets (async) at most this often as
     * they advance; 0 = leave it to librdkafka's auto-commit. */
    int commit_interval_ms;
    /* Consumers: librdkafka's prefetch bound (queued.min.messages, and
     * queued.max.messages.kbytes 16 MB), unless the props set them; 0 =
     * librdkafka's defaults (100,000 messages, 64 MB). */
    size_t prefetch_messages;
};

/* Position of an input message, enough to acknowledge it after release. */
struct kq_pos {
    int32_t topic_idx;
    int32_t partition;
    int64_t offset;
};

struct kq_msg {
    const char *topic;
    int32_t partition;
    int64_t offset;
    int64_t timestamp_ms;        /* message timestamp, -1 if none */
    const void *key;
    size_t key_len;
    const void *payload;
    size_t len;
    struct kq_pos pos;
    void *priv;                  /* the librdkafka message */
};

enum { KQ_ACK_STATE = 1, KQ_ACK_DELIVERED = 2, KQ_ACK_ALL = 3 };

/* NULL with the reason in *e; librdkafka's text names the property and its
 * origin (file:line, env, -X). */
struct kq *kq_open(const struct kq_opts *o, struct err *e);

/* Next message, or *out = NULL on timeout. Consumer errors that are not
 * fatal are logged and counted; a fatal one returns ERR_FATAL. A returned
 * message is tracked: it must be acknowledged (kq_ack) unless dropped by a
 * rebalance. Release it with kq_msg_release once its bytes are not needed,
 * and before kq_close (its wrapper goes back to the handle, for the next
 * kq_poll: no allocation per message). */
int kq_poll(struct kq *q, int timeout_ms, struct kq_msg **out, struct err *e);
void kq_msg_release(struct kq_msg *m); /* NULL-safe */

/* Produces one record. src = the input it answers (its delivery report
 * acknowledges KQ_ACK_DELIVERED for src), or NULL for an untracked record.
 * Blocks (serving delivery reports) while librdkafka's queue is full. */
int kq_produce(struct kq *q, const char *topic, const void *key, size_t key_len,
               const void *val, size_t val_len, const struct kq_pos *src, struct err *e);
/* kq_produce whose delivery report acknowledges what (KQ_ACK_DELIVERED or
 * KQ_ACK_STATE) for src: a side record the input must not be committed
 * without (the clickstream's outcome records ack the state part). */
int kq_produce_ack(struct kq *q, const char *topic, const void *key, size_t key_len,
                   const void *val, size_t val_len, const struct kq_pos *src, int what,
                   struct err *e);
void kq_ack(struct kq *q, const struct kq_pos *pos, int what);

/* Waits up to timeout_ms until every record produced so far is delivered
 * (their reports served): ERR_RETRY naming how many are still in flight. */
int kq_flush(struct kq *q, int timeout_ms, struct err *e);
/* Serves delivery reports (and the consumer's callbacks) for up to
 * timeout_ms. ERR_FATAL if a delivery failed for good. */
int kq_serve(struct kq *q, int timeout_ms, struct err *e);
/* Stops (paused = 1) or resumes (0) fetching on every assigned partition.
 * The caller keeps calling kq_poll while paused: that keeps the member in
 * the group (max.poll.interval.ms) and serves rebalances, but returns no
 * message; partitions assigned while paused start paused. Used when the
 * worker's own bounded queues are full (e.g. a long Redis outage). */
int kq_pause(struct kq *q, int paused, struct err *e);
int kq_paused(const struct kq *q);
/* Partitions currently assigned to the consumer. */
size_t kq_assigned(const struct kq *q);
/* Only inside on_assign: 1 if the group has a committed offset for that
 * partition, 0 if it has none, -1 when unknown (the coordinator did not
 * answer within KQ_COMMITTED_TIMEOUT_MS, or outside the hook). */
#define KQ_COMMITTED_TIMEOUT_MS 5000
int kq_assign_committed(const struct kq *q, const char *topic, int32_t partition);
/* Input messages polled but not fully acknowledged yet. */
size_t kq_inflight(const struct kq *q);
/* With assign_all: 1 once every partition has reached its end. */
int kq_at_end(const struct kq *q);
/* Sum of the end offsets of the partitions of topic (Metadata +
 * watermarks), for tests and tools; -1 on error. */
int64_t kq_topic_size(struct kq *q, const char *topic, int timeout_ms, struct err *e);

struct kq_stats {
    uint64_t polled, produced, delivered, delivery_failed, stored, rebalances, consumer_errors;
    uint64_t commits, commits_failed; /* offset commits answered (any kind), refused */
};
void kq_get_stats(const struct kq *q, struct kq_stats *s);

/* Drains: serves delivery reports until nothing is in flight or timeout,
 * stores and commits offsets, leaves the group, destroys. NULL-safe.
 * Returns ERR_TIMEOUT if work was still in flight at the deadline (its
 * offsets are not committed: it will be re-delivered).
 * With timeout_ms > 0 the whole close is bounded: the commit, leaving the
 * group and destroying the handles run on a thread, and if they have not
 * finished by the deadline (at least 0.5 s after the drain) kq_close returns
 * ERR_TIMEOUT naming the stage that hung (e.g. "consumer close (leaving the
 * group)" when the broker died at the same moment), leaving that thread and
 * the handles to the process exit: the caller must then exit. Nothing
 * acknowledged is lost: uncommitted offsets are re-delivered. */
int kq_close(struct kq *q, int timeout_ms, struct err *e);

/* Checks that librdkafka accepts every passthrough property (name and value)
 * without connecting: ERR_CONFIG naming the first bad one and its origin. */
int kq_check_props(const struct cfg_kv *props, size_t n, struct err *e);

/* librdkafka's version string. */
const char *kq_version(void);

#endif
