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
    /* Optional (layout 3 of Redis): state_sweep. */
    int (*sweep)(struct state *s, int full, size_t *deleted, struct err *e);
};

struct state {
    const struct state_ops *ops;
    uint64_t fenced; /* puts refused by a newer owner's epoch */
    uint64_t losses; /* store found empty after holding data */
    uint64_t owner_changes; /* state_fence and state_release calls */
    uint64_t *moved;        /* bitmap of the partitions fenced or released since the
                               last state_take_owner_changes (state.c) */
    size_t moved_words;
    int moved_unknown;      /* the record could not be kept: every partition moved */
    int lost_flag;   /* an unacknowledged loss is recorded */
    /* state_put_begin .. state_put_end */
    const struct state_put *pend;
    size_t n_pend;
    int busy;
    _Atomic int64_t deadline_us; /* state_set_deadline (any thread); 0: none */
    const struct state_base *put_bases; /* state_set_put_bases; NULL: no check */
    int64_t put_time_s;                 /* state_put_time */
    uint64_t fast_puts;                 /* state_fast_puts */
};

/* Reports partition (or, below 0, every partition) as moved through
 * state_take_owner_changes, so that a users' cache drops its users: the
 * ownership changed, or (layout 3) a user of it was written from another
 * partition (state_fast.c). */
void state_note_moved(struct state *s, int32_t partition);
/* 1 while partition's move (or a move of every partition) is not yet
 * taken by state_take_owner_changes. */
int state_moved_pending(const struct state *s, int32_t partition);

/* Decimal digits of v into buf (no NUL); returns their count (state_layout.c). */
size_t state_put_ll(char *buf, long long v);

/* The Lua scripts of a chunk of puts (state_redis.c documents their
 * arguments), per layout of the user keys (state_layout.c): 1, a hash per
 * user; 2, a string "<partition>:<offset>|<blob>" per user. The cluster
 * backend runs them per hash slot. */
extern const char state_redis_put_script[];
extern const char state_redis_put_script_v2[];
/* Longest layout-2 value: the position and its separators, then the blob. */
#define STATE_V2_HEAD_MAX 40
/* Writes the layout-2 value of a put into buf (STATE_V2_HEAD_MAX + len
 * bytes of room); returns its length. */
size_t state_v2_value(char *buf, int32_t partition, int64_t offset, const unsigned char *data,
                      size_t len);
/* Reads a layout-2 value into b; -1 when v is not one (a foreign string). */
int state_v2_parse(const char *v, size_t len, struct state_blob *b);
/* The layout a store holds: its <prefix>layout value (NULL: none) and
 * whether its <prefix>marker exists (data written before layouts were
 * versioned: 1). Returns 1 or 2, or -1 for a layout this build cannot read. */
int state_layout_decide(const char *layout, size_t layout_len, int marker_present);
/* Layout 3 (state_bucket.c): users as fields of hash buckets
 * <prefix>ub:{<b>}, the value "<p>:<o>@<t>|<blob>" (t: seconds). */
extern const char state_redis_put_script_v3[];
extern const char state_redis_sweep_script_v3[];
#define STATE_V3_HEAD_MAX 72
#define STATE_V3_BUCKETS_MAX 65536
/* The bucket of an entity among nbuckets. */
uint32_t state_v3_bucket(const char *entity, uint32_t nbuckets);
/* The value of a put (STATE_V3_HEAD_MAX + len bytes of room); its length. */
size_t state_v3_value(char *buf, int32_t partition, int64_t offset, int64_t now_s,
                      const unsigned char *data, size_t len);
/* A put's base as the script compares it, "<p>:<o>@" (40 bytes of room). */
size_t state_v3_base(char *buf, int32_t partition, int64_t offset);
/* Reads a value into b: 0; 1 when it is older than ttl_s at now_s (ttl_s >
 * 0): absent, b empty; -1 when v is not a layout-3 value. */
int state_v3_parse(const char *v, size_t len, int64_t now_s, int64_t ttl_s, struct state_blob *b);
/* The bucket count of a <prefix>layout value "3:<buckets>"; -1 if not one. */
int state_v3_buckets_of(const char *layout, size_t len);

/* One layout-3 command (EVALSHA of a chunk, or HMGETs of a read), built in
 * storage reused across calls. */
struct state_v3_cmd {
    const char **argv;
    size_t *argvlen;
    size_t cap_argv, argc;
    char *strs;
    size_t cap_strs, used;
    uint64_t *keys; /* sort keys: slot, bucket, index */
    int32_t *slot_part;
    size_t cap_keys;
    int32_t *bidx; /* per bucket: its KEYS index in the chunk, -1 none */
    uint32_t cap_bidx;
    size_t *groups; /* a read: the argv start of each bucket's HMGET */
    size_t ngroups;
};
void state_v3_cmd_free(struct state_v3_cmd *c);
/* Room for nargv arguments, nstrs bytes of strings, nkeys keys and nbuckets
 * bucket slots (contents kept); ERR_NOMEM. */
int state_v3_cmd_reserve(struct state_v3_cmd *c, size_t nargv, size_t nstrs, size_t nkeys,
                         uint32_t nbuckets);
/* FNV-1a 64 of an entity id (a chunk's duplicate check, the fast path's
 * set of users read absent). */
uint64_t state_v3_hash64(const char *s);
/* The EVALSHA of puts[0..k) (no entity twice: state_v3_chunk_len), its
 * bases (NULL: no check), the epochs held (indexed by partition), into
 * c->argv[0..c->argc); order[g] gets the put index of the g-th code of the
 * reply. ERR_NOMEM. */
int state_v3_put_cmd(struct state_v3_cmd *c, const char *sha, const char *prefix,
                     uint32_t nbuckets, int64_t now_s, int64_t ttl_s,
                     const struct state_put *puts, size_t k, const struct state_base *bases,
                     const int64_t *epochs, size_t n_epochs, size_t *order);
/* The HMGETs of entities[0..n): c->ngroups commands, command g's argv from
 * c->groups[g] (argc to the next, or c->argc); order[i] is the entity of
 * the i-th field across them. ERR_NOMEM. */
int state_v3_get_cmds(struct state_v3_cmd *c, const char *prefix, uint32_t nbuckets, size_t n,
                      const char *const *entities, size_t *order);
/* How many of puts[0..n) (at most max) make a chunk without an entity
 * twice. */
size_t state_v3_chunk_len(struct state_v3_cmd *c, const struct state_put *puts, size_t n,
                          size_t max);

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
