/* common/streams/ucache.h: a bounded in-memory cache of users' state (prefix
 * ucache_).
 *
 * The owner of a partition keeps its users' decoded state here between
 * batches (state.cache_entries), so a user seen again is neither read from
 * Redis nor decoded. Every entry is a copy of what the store acknowledged:
 * the caller puts a state only after the write that holds it succeeded (or
 * after reading it), so an entry is always clean and eviction never loses
 * anything. Each entry remembers the store position (partition, offset) of
 * the state it holds: the base of the compare-and-set of the next write
 * (state.h, struct state_put.has_base).
 *
 * Fixed capacity, reserved at open: no allocation per event. Keys are ids
 * shorter than UCACHE_KEY_MAX. Values are of any length up to the size
 * given at open: each is kept in a chunk of the smallest power of two (from
 * 64 bytes) that holds it, chunks of one size packed together, so a small
 * value costs its chunk and not the largest value's room (a user's encoded
 * state is ~90 bytes after one event, up to ~1.4 kB for a busy user).
 * Eviction: CLOCK (second chance). Not thread-safe.
 */
#ifndef STREAMML_UCACHE_H
#define STREAMML_UCACHE_H

#include <stddef.h>
#include <stdint.h>

#define UCACHE_KEY_MAX 64 /* bytes with the terminating NUL (EV_ID_MAX) */

struct ucache;

struct ucache_stats {
    uint64_t hits, misses, evictions, drops, clears;
    size_t entries, capacity;
    size_t bytes; /* the chunks the entries' values take */
};

/* entries entries of values of at most value_size bytes; NULL when out of
 * memory (address space is reserved for every chunk size, touched only as
 * used) or entries is 0 (no cache). */
struct ucache *ucache_open(size_t entries, size_t value_size);
void ucache_close(struct ucache *c); /* NULL-safe */

/* The value stored for key (valid until the next put, drop or clear) and
 * its store position, or NULL (counted as a miss). NULL-safe c: a miss. */
const void *ucache_get(struct ucache *c, const char *key, int32_t *partition, int64_t *offset);
/* The same with the value's length in *len and the time the store stamped
 * on it in *time_s (state_base's time_s; 0: unknown; NULL: not wanted). */
const void *ucache_getv(struct ucache *c, const char *key, size_t *len, int32_t *partition,
                        int64_t *offset, int64_t *time_s);
/* Stores a copy of value (value_size bytes) for key (replacing it, or
 * taking a free slot, or evicting the least recently used one). A key too
 * long is not cached. */
void ucache_put(struct ucache *c, const char *key, const void *value, int32_t partition,
                int64_t offset);
/* The same for len bytes (1..value_size) stamped time_s (ucache_put: 0);
 * a longer value is not cached (and the key's entry, if any, dropped). */
void ucache_putv(struct ucache *c, const char *key, const void *value, size_t len,
                 int32_t partition, int64_t offset, int64_t time_s);
/* Starts loading, without waiting for it, what a lookup of key will touch:
 * stage 0 its index entry, stage 1 its slot, stage 2 its value. Each stage
 * reads only what the stage before brought in, so a batch of lookups runs
 * stage 0 over all its keys, then 1, then 2 a few keys ahead of the
 * lookups: their cache misses overlap instead of following one another.
 * Only a hint: no effect on any result. NULL-safe c. */
void ucache_prefetch(const struct ucache *c, const char *key, int stage);
void ucache_drop(struct ucache *c, const char *key); /* absent: nothing */
void ucache_clear(struct ucache *c);                 /* NULL-safe */
/* Drops every entry whose store position is on partition (a partition
 * revoked or assigned: only its users go); returns how many. NULL-safe. */
size_t ucache_drop_partition(struct ucache *c, int32_t partition);
void ucache_stats(const struct ucache *c, struct ucache_stats *s);

#endif
