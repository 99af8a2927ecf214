/* common/state/state.h: per-entity state store (prefix state_).
 *
 * Stores an opaque blob per entity (a user id) together with the
 * (partition, offset) of the last event applied to it. Two backends behind
 * one interface: Redis (online, shared between worker restarts) and memory
 * (featurize, replays, tests). Writes are idempotent: a put whose offset is
 * not newer than the stored one for that entity changes nothing, so an event
 * re-delivered after a crash is applied once.
 *
 * Not thread-safe: one handle per thread.
 */
#ifndef STREAMML_STATE_H
#define STREAMML_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define STATE_BLOB_MAX 4096

struct state;

struct state_redis_opts {
    const char *host;          /* default 127.0.0.1 */
    int port;                  /* default 6379 */
    const char *password;      /* NULL = no AUTH */
    const char *username;      /* ACL user (AUTH user password); NULL = default */
    const char *prefix;        /* key prefix, e.g. "" or "bt:run42:" */
    int ttl_s;                 /* expiry of an entity's key; 0 = none */
    int timeout_ms;            /* connect and command timeout */
    int64_t lost_flag_ms;      /* state.lost_flag_ms: a detected loss flags
                                  predictions this long; 0: until acknowledged
                                  (state_ack_lost) */
    const char *nodes;         /* Redis Cluster seeds "host:port,..."; NULL: the
                                  configured redis.nodes; "": single server */
    int lazy;                  /* an unreachable server is not an error at open:
                                  the first call connects (a wrong password or
                                  a refused script still is) */
    int layout;                /* state.layout: the layout an empty store gets,
                                  2 (a string per user) or 3 (users as fields of
                                  hash buckets); 0: 2. A store keeps the layout
                                  it was created with. */
    int buckets;               /* state.buckets: a new layout-3 store's bucket
                                  count (0: 8) */
    int no_fast_path;          /* 1: layout 3 writes every put with its script
                                  (docs/delivery.md, "fast path"; for A/B runs
                                  and tests) */
};

/* Caller-owned result slot for state_get_many. */
struct state_blob {
    unsigned char data[STATE_BLOB_MAX];
    size_t len;                /* 0 = no state stored for this entity */
    int32_t partition;         /* of the last applied event; -1 if none */
    int64_t offset;            /* of the last applied event; -1 if none */
    int64_t time_s;            /* layout 3: when it was written (the writer's
                                  clock, s); 0 unknown */
};

struct state_put {
    const char *entity;
    const unsigned char *data;
    size_t len;
    int32_t partition;
    int64_t offset;
};

/* applied[i] of state_put_many: */
enum {
    STATE_PUT_SKIPPED = 0, /* the store already holds this offset (or fenced) */
    STATE_PUT_WRITTEN = 1,
    STATE_PUT_CONFLICT = 3 /* with bases: the stored position is not the put's base */
};

/* The store position a put's blob was derived from (partition -1: nothing
 * was stored). */
struct state_base {
    int32_t partition;
    int64_t offset;
    int64_t time_s; /* the stored value's write time (state_blob.time_s, or
                       state_put_time of the put that wrote it); 0: unknown,
                       which keeps the put off layout 3's fast path */
};

/* New handle, or NULL with the reason in *e. Free with state_close(). */
struct state *state_open_redis(const struct state_redis_opts *o, struct err *e);
struct state *state_open_memory(void);
void state_close(struct state *s); /* NULL-safe */

/* Reads n entities' blobs in one round trip (pipelined). ERR_RETRY when the
 * backend is unreachable (the handle reconnects on the next call). */
int state_get_many(struct state *s, size_t n, const char *const *entities,
                   struct state_blob *out, struct err *e)
    __attribute__((warn_unused_result));

/* Applies n puts in one round trip, atomically per entity (Lua on Redis):
 * a put is skipped when the stored (partition, offset) has the same
 * partition and an offset >= the put's. applied[i] = 1 if written, 0 if
 * skipped, STATE_PUT_CONFLICT (only with state_set_put_bases) if refused
 * because the stored position is not its base. ERR_RETRY when unreachable: then nothing is known to be applied
 * and the caller retries the whole batch (safe: idempotent). */
int state_put_many(struct state *s, size_t n, const struct state_put *puts, int *applied,
                   struct err *e) __attribute__((warn_unused_result));

/* state_put_many in two halves, so that the caller works while the store
 * applies the puts: begin sends them (Redis: the EVALSHAs are written to
 * the socket) and returns; end waits for and reads the outcome into
 * applied[0..n) with state_put_many's meaning and errors. Between the two
 * the caller keeps puts (and the blobs they point to) alive and makes no
 * other call on the handle but state_put_end (state_get_many refuses with
 * ERR_INVALID). A failed begin leaves nothing in flight (end is not called);
 * an ERR_RETRY from end means the outcome is unknown: retry the whole batch
 * (idempotent). */
int state_put_begin(struct state *s, size_t n, const struct state_put *puts, struct err *e)
    __attribute__((warn_unused_result));
int state_put_end(struct state *s, int *applied, struct err *e) __attribute__((warn_unused_result));
/* Compare-and-set (state.cache_entries: a worker that keeps its users'
 * state in memory). From now on put i of every state_put_many and
 * state_put_begin on this handle is refused with STATE_PUT_CONFLICT unless
 * the store still holds the position bases[i] (or nothing, partition -1):
 * someone else wrote the entity since its state was read (another worker
 * owning another partition of the user, an expired key, a flush). The
 * caller keeps bases alive, indexed like its puts; NULL: no check (the
 * default). */
void state_set_put_bases(struct state *s, const struct state_base *bases);
/* The write time stamped in the values of the last state_put_begin or
 * state_put_many (layout 3, the writer's clock in seconds; a lower bound
 * when chunks were stamped later): the time_s of a base taken from a put
 * that was written. 0 for other backends and layouts. */
int64_t state_put_time(const struct state *s);
/* Puts written since open by layout 3's fast path (without the script,
 * docs/delivery.md); 0 for other backends and layouts. */
uint64_t state_fast_puts(const struct state *s);

/* 1 between a successful state_put_begin and its state_put_end. */
int state_busy(const struct state *s);

/* Zombie fencing. A consumer that is assigned a partition calls
 * state_fence(s, partition) (from its rebalance hook, before any message of
 * the partition is processed): the next read or write takes a new epoch for
 * the partition (Redis INCR of <prefix>epoch:{partition}); from then on each
 * put of that partition carries the epoch, and the Lua script refuses a put
 * whose epoch is older than the stored one. A worker that was stopped
 * (SIGSTOP, a long GC-like stall) past max.poll.interval.ms and lost the
 * partition to another member therefore cannot overwrite the new owner's
 * state when it wakes up. A refused put is reported as skipped (applied[i]
 * = 0: the new owner applies that event from its committed offset) and
 * counted in state_fenced(). Puts of a partition never fenced by this
 * handle are not checked (replays, featurize, tools). The memory backend is
 * per-process and needs no fence (no-op). The claim needs no connection:
 * it is retried with the next call if Redis is away. */
int state_fence(struct state *s, int32_t partition, struct err *e)
    __attribute__((warn_unused_result));
/* The partition was revoked or lost: this handle no longer owns it. */
void state_release(struct state *s, int32_t partition);
/* Fences and releases since open: a change of what this handle owns (a
 * cache of its users' state is emptied when it moves). */
uint64_t state_owner_changes(const struct state *s);
/* The partitions whose ownership moved (state_fence, state_release) since
 * the last call: fn(opaque, partition) for each, in ascending order, and the
 * record is cleared. Returns 1, with fn not called, when the handle could
 * not keep the record (out of memory, a partition above 65535): take every
 * partition as moved. A users' cache drops only those partitions' users.
 * Layout 3 also reports a partition one of whose users was written from
 * another partition (and every partition after a write without bases):
 * with bases, a caller must drop those users before its next put, and not
 * put back a user read before the report; until it has taken the report,
 * the partition's puts all go through the script (docs/delivery.md, "The
 * fast path"). */
int state_take_owner_changes(struct state *s, void (*fn)(void *opaque, int32_t partition),
                             void *opaque);
/* Puts refused since open because a newer owner fenced their partition. */
uint64_t state_fenced(const struct state *s);
/* The epoch this handle holds for partition (0: none claimed yet). */
int64_t state_epoch(const struct state *s, int32_t partition);

/* From now on every call ends by deadline_us (CLOCK_MONOTONIC, us): each
 * wait is clamped to the time left, and a call made past it fails at once
 * with ERR_TIMEOUT (a write in flight is abandoned: its outcome is unknown,
 * as after ERR_RETRY). Used after SIGTERM (worker.shutdown_timeout_ms).
 * The one call that may come from another thread than the handle's. */
void state_set_deadline(struct state *s, int64_t deadline_us);

/* Layout 3 of Redis (users as fields of hash buckets, state.layout=3):
 * deletes the users whose last write is ttl_s or more ago (they read as
 * absent from then on already). full = 0: one bounded step (HSCAN of up to
 * 1,000 fields of one bucket), as each handle does by itself at most once a
 * second after a write; 1: every bucket. *deleted: the users removed. Other
 * layouts and backends expire by themselves: nothing to do (0). */
int state_sweep(struct state *s, int full, size_t *deleted, struct err *e)
    __attribute__((warn_unused_result));

/* "redis", "redis-cluster" or "memory". */
const char *state_backend(const struct state *s);

/* Checks the backend answers (PING on Redis). */
int state_ping(struct state *s, struct err *e);

/* ---- a store that lost its data (issue 23 case 6) ----
 *
 * Redis keeps <prefix>marker, written at the first start on an empty store.
 * The marker missing when this handle saw it before (checked at every
 * reconnect by itself: a restarted server always means one), or when the
 * caller expects data (expect_data: its group has committed offsets for
 * the partitions it owns) means the store restarted empty (no
 * persistence) or was flushed: every aggregate was reset. The loss is then
 * recorded in <prefix>state_lost (its detection time in ms; it expires after
 * lost_flag_ms when that is set in state_redis_opts, else it stays until
 * an operator acknowledges it with `streamml config ack-state-loss` or
 * DEL), counted
 * (state_losses, and streamml_state_lost_total on /metrics), logged as an
 * error, and the marker is written again.
 *
 * The runtime calls state_check_lost at open and after each fence (with
 * expect_data) and once per batch (expect_data 0; one round trip: catches a
 * FLUSHALL on a live connection), flags its predictions while
 * state_lost_flag() is 1, and publishes an alert when *lost_now is 1.
 * The memory backend never reports a loss. ERR_RETRY when unreachable. */
int state_check_lost(struct state *s, int expect_data, int *lost_now, struct err *e);
/* 1 while an unacknowledged loss is recorded (as of the last check). */
int state_lost_flag(const struct state *s);
/* Losses detected by this handle since open. */
uint64_t state_losses(const struct state *s);
/* The operator's acknowledgement: removes <prefix>state_lost. */
int state_ack_lost(struct state *s, struct err *e);

#endif
