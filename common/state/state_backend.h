/* common/state/state_backend.h: what a state backend provides (private to
 * common/state*.c; workers include state.h only).
 *
 * struct state is the first member of each backend's handle, so the
 * dispatch in state.c can cast back. state.c checks the arguments (entity
 * ids, blob sizes) before a backend sees them, so every backend refuses the
 * same inputs with the same message.
 */
#ifndef STREAMML_STATE_BACKEND_H
#define STREAMML_STATE_BACKEND_H

#include <stdatomic.h>

#include "state.h"

/* Longest entity id accepted (bytes, without the terminating NUL). */
#define STATE_ENTITY_MAX 256

struct state_ops {
    const char *name; /* "redis", "memory": for messages */
    void (*close)(struct state *s);
    int (*get_many)(struct state *s, size_t n, const char *const *entities, struct state_blob *out,
                    struct err *e);
    int (*put_many)(struct state *s, size_t n, const struct state_put *puts, int *applied,
                    struct err *e);
    /* Optional split of put_many (NULL: put_many runs at put_end): begin
     * sends, end reads the outcome. */
    int (*put_begin)(struct state *s, size_t n, const struct state_put *puts, struct err *e);
    int (*put_end)(struct state *s, int *applied, struct err *e);
    int (*ping)(struct state *s, struct err *e);
    /* NULL: no fencing needed (memory). */
    int (*fence)(struct state *s, int32_t partition, struct err *e);
    int64_t (*epoch)(const struct state *s, int32_t partition);
    /* NULL: the store cannot lose data behind the process's back (memory). */
    int (*check_lost)(struct state *s, int expect_data, int *lost_now, struct err *e);
    int (*ack_lost)(struct state *s, struct err *e);
    /* Optional: bound each wait of the next calls to timeout_ms (the
     * configured timeout when larger); <= 0: drop the connection. */
    void (*clamp)(struct state *s, int timeout_ms);
};

struct state {
    const struct state_ops *ops;
    uint64_t fenced; /* puts refused by a newer owner's epoch */
    uint64_t losses; /* store found empty after holding data */
    uint64_t owner_changes; /* state_fence and state_release calls */
    int lost_flag;   /* an unacknowledged loss is recorded */
    /* state_put_begin .. state_put_end */
    const struct state_put *pend;
    size_t n_pend;
    int busy;
    _Atomic int64_t deadline_us; /* state_set_deadline (any thread); 0: none */
    const struct state_base *put_bases; /* state_set_put_bases; NULL: no check */
};

/* The Lua script of a chunk of puts (state_redis.c documents its layout);
 * the cluster backend runs it per hash slot. */
extern const char state_redis_put_script[];
/* Redis Cluster (state_cluster.c): state_open_redis with redis.nodes. */
struct state *state_open_redis_cluster(const struct state_redis_opts *o, const char *nodes,
                                       struct err *e);

/* The idempotence rule shared by every backend: a put is skipped when the
 * stored state already holds this partition at this offset or later. */
static inline int state_put_is_stale(int32_t stored_p, int64_t stored_o, int32_t p, int64_t o)
{
    return stored_p == p && stored_o >= o;
}

/* The compare-and-set of put i (state_set_put_bases): 1 when the stored
 * position (stored 0: nothing stored) is not its base. */
static inline int state_put_conflicts(const struct state *s, size_t i, int stored,
                                      int32_t stored_p, int64_t stored_o)
{
    const struct state_base *b = s->put_bases ? &s->put_bases[i] : NULL;

    if (!b)
        return 0;
    if (b->partition < 0)
        return stored;
    return !stored || stored_p != b->partition || stored_o != b->offset;
}

#endif
