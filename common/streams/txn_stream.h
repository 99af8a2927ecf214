/* common/streams/txn_stream.h: the transactions stream's batch step against its
 * users' state (prefix txs_).
 *
 * Per batch: each user is read once and written once (pipelined); features
 * come from the user's state as it stood before the event (common/streams/txn.h,
 * txn_step) and the state advances in the batch's (= partition) order.
 * The write is sent before scoring and its outcome read after
 * (txs_features .. txs_store), so Redis applies it while the worker scores
 * and produces. When the store cannot be read or written, the events'
 * updates wait in a bounded queue, re-applied in arrival order when it
 * answers; their predictions are flagged degraded.
 *
 * Acknowledgement: the caller's ack(opaque, pos) is called for an event
 * only once the Redis write that contains its update has succeeded (or the
 * stored state already held it: a redelivery).
 *
 * Partition-owned state (cache_entries > 0): the users' states that Redis
 * acknowledged stay in memory (common/streams/ucache.h), so a user seen
 * again is not read; each write is a compare-and-set against the position
 * the cached state came from (state_set_put_bases), and a conflict sends
 * the user's events of the batch to the queue, re-applied on the state
 * read from Redis. The cache is emptied when the handle's ownership moves
 * (state_owner_changes), a loss is detected, a put is fenced, or a read or
 * write fails (docs/delivery.md: partition-owned state).
 */
#ifndef STREAMML_TXN_STREAM_H
#define STREAMML_TXN_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "err.h"
#include "event.h"
#include "kafka.h"
#include "state.h"

struct wk; /* the worker runtime, opaque here */

struct txs_opts {
    size_t cap;         /* events per batch */
    size_t pending_max; /* queued updates at most (>= cap) */
    int budget_ms;      /* state.retry_budget_ms: a read's or write's retries */
    void (*ack)(struct wk *opaque, const struct kq_pos *pos); /* e.g. wk_ack_state */
    struct wk *opaque;
    size_t cache_entries; /* state.cache_entries: users kept in memory; 0: none */
};

/* The state.* settings of cf: pending_max, retry_budget_ms, cache_entries. */
void txs_opts_cfg(struct txs_opts *o, const struct cfg *cf);

struct txs;

/* NULL st is refused. ERR_CONFIG when pending_max < cap. */
int txs_open(struct txs **out, struct state *st, const struct txs_opts *o, struct err *e);
void txs_close(struct txs *t); /* NULL-safe */

/* The batch's live events (live[i] != 0; evs[i] and pos[i] of each):
 * reads their users, fills xs[i * feat_txn_dim()] and sends the write.
 * Returns 1 when the batch is scored degraded (not on its users' full
 * state), else 0. */
int txs_features(struct txs *t, size_t n, const struct txn_event *evs, const struct kq_pos *pos,
                 const unsigned char *live, float *xs);
/* 1 when event i of the batch was already in the stored state. */
int txs_redelivered(const struct txs *t, size_t i);
/* After the emits: the write's outcome; each event acknowledged or queued. */
void txs_store(struct txs *t);

/* Between batches: re-applies queued updates when their retry is due. */
void txs_tick(struct txs *t, int64_t now_us);
/* 1 while the queue has room for a whole batch. */
int txs_room(const struct txs *t);
/* 1 while the state store answered the last call. */
int txs_state_ok(const struct txs *t);
size_t txs_queued(const struct txs *t);
/* The cache's counters (all 0 without one). */
struct ucache_stats;
void txs_cache_stats(const struct txs *t, struct ucache_stats *s);

#endif
