/* common/streams/clickout.h: outcomes of published recommendations, joined in Redis (prefix cout_).
 *
 * Each published recommendation is remembered per session
 * (<prefix>cos:<session>, a list, newest first, at most keep_recs entries,
 * expiring horizon after its last push): the click it answered (event id,
 * time), the experiment, arm and assignment unit, the items shown and their
 * propensities. A later event of the session on a shown item whose event
 * time is within horizon_ms of the recommendation's is its outcome: a view
 * is a click-through, a cart event an add-to-cart, a purchase a purchase
 * with the event's price as revenue. An event joins the most recent
 * recommendation that showed its item; each (recommendation, item, type)
 * joins once (a second view of the same shown item is no second
 * click-through). Each published recommendation is also an impression.
 *
 * Exactly once per (partition, offset), as the co-visitation counts
 * (common/streams/covis.h): one Lua script per batch keeps, per input
 * partition, the highest offset it applied (<prefix>coapplied:{<p>}) and,
 * in the same atomic call, the outcomes each applied click made
 * (<prefix>codone:{<p>}, a sorted set by offset, the last COUT_KEEP_OFFSETS
 * offsets of the partition). A click at or below the applied offset (a
 * redelivery after a crash or a rebalance) joins nothing again: the script
 * hands back the outcomes it made the first time, with the same ids, so
 * the caller can publish them again (an outcome whose record was lost is
 * never lost; one that was delivered comes twice with the same
 * outcome_id). A redelivered click is answered again, from its session's
 * latest stored state (common/streams/clickstep.h), so its items may differ
 * from the first answer's: while nothing has been joined to the remembered
 * recommendation, it is replaced by the one published again. Fenced by the state's epochs like covis.h: the clicks of a
 * partition whose stored epoch is newer than the caller's are refused.
 *
 * Redis Cluster (redis.nodes): every key carries the hash tag {co}.
 * ERR_RETRY when Redis is unreachable (the call may be repeated as it is).
 * Not thread-safe.
 */
#ifndef STREAMML_CLICKOUT_H
#define STREAMML_CLICKOUT_H

#include <stddef.h>
#include <stdint.h>

#include "click_event.h"
#include "err.h"

#define COUT_KEEP_OFFSETS 20000 /* applied clicks' outcomes kept per partition for redelivery */
#define COUT_MAX_PARTITIONS 256

struct cout;

struct cout_opts {
    const char *host; /* default 127.0.0.1 */
    int port;
    const char *username, *password; /* as cov_opts */
    const char *prefix;
    int64_t horizon_ms; /* > 0 */
    int keep_recs;      /* recommendations remembered per session, >= 1 */
    int timeout_ms;
};

/* Connects lazily. ERR_CONFIG for a horizon or keep out of range. */
int cout_open(struct cout **out, const struct cout_opts *o, struct err *e);
void cout_close(struct cout *c); /* NULL-safe */

/* One click of a batch, in input order. */
struct cout_click {
    const struct click_event *ev;
    const struct click_prediction *rec; /* its published recommendation; NULL: none */
    const char *unit_id;                /* the experiment's assignment id */
    const char *topic;
    int32_t partition;
    int64_t offset; /* < 0: not deduplicated (tools) */
    int64_t epoch;  /* the writer's epoch of partition; 0: unfenced */
};

/* What one cout_join did with its clicks. */
struct cout_result {
    size_t applied;     /* clicks joined now */
    size_t redelivered; /* at or below their partition's applied offset: outcomes handed back */
    size_t fenced;      /* refused: a newer owner holds their partition */
};

/* Joins n clicks: each click's outcomes (at most 2: an earlier
 * recommendation's click-through/cart/purchase, then its own impression)
 * into out[first[i] .. first[i + 1]), first having n + 1 entries; out
 * needs room for 2 n. res may be NULL. */
int cout_join(struct cout *c, size_t n, const struct cout_click *in, struct click_outcome *out,
              size_t *first, struct cout_result *res, struct err *e);

#endif
