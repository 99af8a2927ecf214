/* common/streams/catfeed.h: where the item catalogue comes from (prefix cfeed_).
 *
 * At open, in this order (a later record of an id replaces an earlier one):
 *   1. clickstream.catalog, a file of records (JSON lines or CSV);
 *   2. Redis: <prefix>catalog, a hash of id -> record (JSON), every record
 *      the topic brought before, so a restarted worker ranks with the
 *      whole catalogue at once; and the new items' impressions and clicks
 *      (<prefix>catalog:imps, <prefix>catalog:clicks: hashes of id -> count);
 *   3. then, while the worker runs, clickstream.catalog_topic: a compacted
 *      topic of Avro records (schemas/catalog_item.avsc) read from its
 *      beginning on every partition (no consumer group), a bounded number
 *      per batch (cfeed_poll), each accepted record written to the Redis hash.
 * A bad record (file line or topic message) is logged naming the field and
 * its position (file:line, or topic/partition/offset), counted, and
 * skipped: the item keeps its previous record. A bad topic record is also
 * dead-lettered on dlq.topic (worker "clickstream", the reason naming the
 * field, the record's bytes); the topic is read from its beginning at every
 * start, so a record still there is dead-lettered again after a restart.
 *
 * Redis is a single server here (not Redis Cluster); while it is down the
 * catalogue goes on from the file and the topic, and the writes are
 * counted as errors. Not thread-safe.
 */
#ifndef STREAMML_CATFEED_H
#define STREAMML_CATFEED_H

#include <stddef.h>
#include <stdint.h>

#include "catalog.h"
#include "clickstep.h"
#include "cfg.h"
#include "codec.h"
#include "err.h"
#include "state.h"

struct cfeed;

struct cfeed_counts {
    uint64_t file_ok, file_bad, redis_loaded, topic_ok, topic_bad, redis_errors;
    uint64_t dlq_errors; /* refused topic records whose dead letter was not sent */
};

/* The catalogue for a model of model_items items (ids up to
 * cstep_catalog_ids). ro: the Redis of the state (NULL: none); cd: the
 * codec of the topic's records (NULL: the topic is not read, e.g. replay: the
 * file only). *out NULL and ERR_OK when
 * neither clickstream.catalog nor clickstream.catalog_topic is set. A
 * missing file or a topic that cannot be opened is ERR_CONFIG. */
int cfeed_open(struct cfeed **out, const struct cfg *cf, const struct state_redis_opts *ro,
               struct codec *cd, int64_t max_items, int64_t model_items, struct err *e);
void cfeed_close(struct cfeed *f); /* NULL-safe */
/* cfeed_open sized for cs's model, then the catalogue handed to cs
 * (cstep_set_catalog): the clickstream worker's one call. */
int cfeed_open_cstep(struct cfeed **out, const struct cfg *cf, const struct state_redis_opts *ro,
                     struct codec *cd, struct cstep *cs, struct err *e);

struct catalog *cfeed_catalog(const struct cfeed *f);
/* Applies up to max records waiting on the topic (no wait); how many. */
size_t cfeed_poll(struct cfeed *f, size_t max);
/* The new items' impressions and clicks counted since the last call, to
 * Redis (HINCRBY, pipelined); the totals that come back (every worker's)
 * replace the local counts, so the boost ends for all workers together. */
void cfeed_flush(struct cfeed *f);
const struct cfeed_counts *cfeed_counts(const struct cfeed *f);
/* The catalogue's size and counts in one log line (the worker's summary);
 * NULL-safe. */
void cfeed_log_counts(const struct cfeed *f);

#endif
