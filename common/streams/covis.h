/* common/streams/covis.h: co-visitation counts and trending items in Redis (prefix cov_).
 *
 * Co-visitation: for consecutive clicks a -> b of a session, both
 * <prefix>cv:<a> and <prefix>cv:<b> (sorted sets) gain 1 for the other item;
 * each set keeps its COV_KEEP best members and expires after ttl_s without
 * updates. Trending: <prefix>trending (sorted set) gains 2^((t - t0) / half
 * life) per click at event time t (forward decay: ranking by the sum equals
 * ranking by exponentially decayed counts); t0 lives in <prefix>trending:t0
 * and moves forward (the set rescaled) before weights could overflow. Both
 * updates run in one Lua script per batch, so they are atomic.
 *
 * Exactly once per (partition, offset): the script keeps, per input
 * partition, the highest offset whose click it counted
 * (<prefix>cvapplied:{<partition>}) and skips a click at or below it, in
 * the same atomic call as the increments; so a click redelivered after a
 * crash or a rebalance is not counted twice. The worker counts a batch
 * BEFORE it stores the session states of those clicks: a crash between the
 * two writes redelivers clicks whose counts are skipped here and whose
 * session state (not yet written) advances once, so neither is lost.
 * Fencing: a click carries the epoch its writer holds for its partition
 * (state_epoch; the same <prefix>epoch:{<partition>} key as the session
 * state, common/state/state.h); the clicks of a partition whose stored epoch is
 * newer are refused (a zombie's counts), epoch 0 is not checked.
 *
 * Every call is pipelined (one round trip for a batch). ERR_RETRY when
 * Redis is unreachable (the next call reconnects). Not thread-safe.
 */
#ifndef STREAMML_COVIS_H
#define STREAMML_COVIS_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define COV_KEEP 200 /* members kept per co-visitation set */
#define COV_TRENDING_KEEP 10000

struct cov;

struct cov_opts {
    const char *host;     /* default 127.0.0.1 */
    int port;             /* default 6379 */
    const char *password; /* NULL = no AUTH */
    const char *username; /* ACL user; NULL: redis.username of the configuration */
    const char *prefix;   /* key prefix */
    int ttl_s;            /* expiry of a co-visitation set; 0 = none */
    double half_life_s;   /* trending decay, > 0 */
    int timeout_ms;
};

/* Connects lazily: an unreachable server is not an error here. */
int cov_open(struct cov **out, const struct cov_opts *o, struct err *e);
void cov_close(struct cov *c); /* NULL-safe */

struct cov_click {
    int64_t prev; /* previous known item of the session, -1 none */
    int64_t item;
    int64_t time_ms;   /* event time */
    int32_t partition; /* input position: counted once per (partition, */
    int64_t offset;    /* offset); offset < 0: not deduplicated (tools) */
    int64_t epoch;     /* the writer's epoch of partition; 0: unfenced */
};

/* What one cov_update did with its clicks. */
struct cov_result {
    size_t counted;     /* clicks whose counts were added */
    size_t redelivered; /* skipped: at or below their partition's applied offset */
    size_t fenced;      /* refused: a newer owner holds their partition's epoch */
};

/* Adds n clicks (co-visitation pairs and trending weight), each with an
 * offset at most once per (partition, offset), atomically per call of the
 * script (one per COV_MAX_PARTITIONS distinct partitions, in click order).
 * res may be NULL. ERR_RETRY when Redis is unreachable: the call may be
 * repeated as it is (idempotent for the clicks with an offset). */
#define COV_MAX_PARTITIONS 256
int cov_update(struct cov *c, size_t n, const struct cov_click *clicks, struct cov_result *res,
               struct err *e);

/* For each of n items, up to k co-visited items, best first, into
 * out[i * k ...] with counts[i]; items < 0 are skipped (count 0). */
int cov_covisited(struct cov *c, size_t n, const int64_t *items, int k, int64_t *out, int *counts,
                  struct err *e);

/* Up to k trending items, best first. */
int cov_trending(struct cov *c, int k, int64_t *out, int *n, struct err *e);

#endif
