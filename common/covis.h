/* common/covis.h: co-visitation counts and trending items in Redis (prefix cov_).
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
 * Counts are updated after the session state of those clicks is stored, so
 * a click redelivered after a crash is never counted twice (one lost
 * between the two writes is not counted: counts are at most once).
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
    int64_t time_ms; /* event time */
};

/* Adds n clicks (co-visitation pairs and trending weight). */
int cov_update(struct cov *c, size_t n, const struct cov_click *clicks, struct err *e);

/* For each of n items, up to k co-visited items, best first, into
 * out[i * k ...] with counts[i]; items < 0 are skipped (count 0). */
int cov_covisited(struct cov *c, size_t n, const int64_t *items, int k, int64_t *out, int *counts,
                  struct err *e);

/* Up to k trending items, best first. */
int cov_trending(struct cov *c, int k, int64_t *out, int *n, struct err *e);

#endif
