/* common/state/state_redis_priv.h: the Redis backend's handle, shared by
 * state_redis.c (layouts 1 and 2, connection, fencing) and state_bucket.c
 * (layout 3). Private to common/state.
 */
#ifndef STREAMML_STATE_REDIS_PRIV_H
#define STREAMML_STATE_REDIS_PRIV_H

#include <hiredis/hiredis.h>

#include "redis_conn.h"
#include "state_backend.h"

#define PREFIX_MAX 128
#define HOST_MAX 255
#define KEY_MAX (PREFIX_MAX + STATE_ENTITY_MAX + 32)
/* Kafka positions are packed with 16 bits of partition (kafka.c). */
#define PARTITION_MAX 65535

/* Results per put: 0 skipped (already applied), 1 written, 2 fenced. */
enum { PUT_SKIPPED = 0, PUT_WRITTEN = 1, PUT_FENCED = 2, PUT_CONFLICT = 3 };

/* Puts per EVALSHA: bounds the time one script call holds Redis (about
 * 3 ms for 1,000 users) and the size of one command. */
#define PUT_CHUNK 1000

/* One call applies a chunk of puts, in order, so that the per-call cost of
 * EVALSHA (argument tables, the Lua call) and the fencing and applied-offset
 * bookkeeping are paid once per partition and chunk instead of per user.
 *   KEYS: the n entity keys, then per partition slot j = 1..m its applied
 *         key and its epoch key.
 *   ARGV: n, m, ttl_ms; per slot j its partition and the epoch held; per put
 *         its blob (layout 2: its whole value), slot, offset and base: ""
 *         (no check), "-" (nothing stored) or "<partition>:<offset>"
 *         (state.h, has_base).
 * The scripts, one per layout, and their rules are in state_layout.c. */

/* The argument vector of one chunk, reused across calls (no allocation per
 * batch once grown). */
struct put_args {
    const char **argv;
    size_t *argvlen;
    size_t cap_argv;
    char *strs; /* keys and numbers the argv points into */
    size_t cap_strs, used;
    int32_t *slot_part; /* partition of each slot */
    int *slot;          /* slot of each put */
    size_t cap_puts;
};

/* state_args.c: room for nargv arguments, nstrs bytes of strings and nputs
 * slots (ERR_NOMEM); the vector's memory freed; a string (printf format)
 * or a decimal appended to the strings, returning where it starts (room
 * was reserved). */
int state_args_reserve(struct put_args *a, size_t nargv, size_t nstrs, size_t nputs);
void state_args_free(struct put_args *a);
const char *state_args_str(struct put_args *a, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *state_args_int(struct put_args *a, size_t *len, long long v);

/* Layout 3's fast path (state_fast.c): a batch's puts written without
 * Lua, WATCH + MGET of the partitions' counters, then MULTI ... EXEC. */
struct state_fast {
    int enabled;          /* state.fast_path (default on) */
    /* Adopted from the script's replies, indexed by partition: the steal
     * counter <prefix>st:{p}; and the blind writers' <prefix>stb. */
    int64_t *st;
    unsigned char *st_known;
    size_t n_st;
    int64_t stb;
    int stb_known;
    /* The last read (state_get_many): the creation counters <prefix>cr:{b}
     * and stb before it, and the hashes of the entities it found absent. */
    int rd_pending, rd_valid;
    int64_t *rd_cr;
    uint32_t cap_cr;
    int64_t rd_stb;
    uint64_t *absent;     /* open addressing, 0 = empty */
    size_t cap_absent;
    /* One batch: per partition its role and offsets; the slow puts. */
    unsigned char *role;  /* 0 none, 1 fast, 2 slow */
    int64_t *lo, *hi;
    size_t cap_part;
    int32_t *parts;       /* the batch's partitions */
    size_t nparts;
    size_t *slow_idx, *fast_idx;
    struct state_put *slow_puts;
    struct state_base *slow_bases;
    int *slow_applied;
    size_t cap_puts, n_slow, n_fast;
    struct state_v3_cmd cmd;  /* the MULTI's commands */
    size_t ncmds;             /* commands queued between MULTI and EXEC */
    int sent;                 /* 0 nothing, 1 UNWATCH, 2 MULTI .. EXEC */
    int active;               /* a batch in flight took this path */
    const struct state_put *orig;
    const struct state_base *orig_bases;
    size_t orig_n;
    uint64_t n_fast_puts, n_slow_puts, n_aborts; /* counts, for tests and logs */
};

struct state_redis {
    struct state base; /* first: state.c casts */
    struct rc *rc;     /* disconnected: the next call reconnects */
    char host[HOST_MAX + 1];
    int port;
    char prefix[PREFIX_MAX + 1];
    long long ttl_ms;
    long long lost_flag_ms;
    int timeout_ms;  /* of the next connect and waits */
    int timeout_cfg; /* as configured (state_set_deadline clamps below it) */
    int marker_seen;    /* this handle has seen or written <prefix>marker */
    int expect_pending; /* the next connect's check expects data */
    int lost_pending;   /* a loss found by a connect, not yet reported */
    char sha[41]; /* of the layout's put script, from SCRIPT LOAD */
    int layout;   /* of the store's user keys (state_layout.c), read at connect */
    int layout_new;     /* state.layout: what an empty store becomes (2 or 3) */
    uint32_t buckets;   /* layout 3: the store's bucket count; buckets_new: a new one's */
    uint32_t buckets_new;
    char sha_sweep[41]; /* layout 3's sweep script */
    struct state_v3_cmd v3;
    size_t *order, *chunks; /* layout 3: reply order; the chunk lengths of a batch */
    size_t cap_order, nchunks;
    uint32_t sweep_b;       /* the sweep's bucket and HSCAN cursor */
    char sweep_cur[24];
    int64_t next_sweep_ms;
    uint64_t sweep_puts;    /* puts since the last paced step */
    /* Fencing, indexed by partition: the epoch held (0 = none) and whether
     * a new one is to be claimed before the next read or write. */
    int64_t *epochs;
    unsigned char *claim;
    size_t n_epochs;
    size_t n_claims;
    struct put_args pa;
    struct state_fast fast;
    /* state_put_begin .. state_put_end: the puts sent, replies unread. */
    const struct state_put *inflight;
    size_t n_inflight;
};

/* state_redis.c */
int state_redis_lost(struct state_redis *r, const char *cmd, const char *key, struct err *e);
int state_redis_ensure(struct state_redis *r, struct err *e);
int64_t state_redis_now_s(void);
int state_redis_grow_order(struct state_redis *r, size_t n);
/* state_fast.c */
int state_fast_begin(struct state_redis *r, size_t n, const struct state_put *puts, int *used,
                     struct err *e);
/* Reads the fast write's replies (before the script's): *aborted when a
 * watched counter changed and nothing of it was written. */
int state_fast_end(struct state_redis *r, int *aborted, struct err *e);
/* applied[] of the batch from the script's results of the slow puts and,
 * unless aborted, the fast ones (written). */
void state_fast_merge(struct state_redis *r, int *applied, int aborted);
/* After an abort: the fast puts become the slow ones, for the script. */
void state_fast_requeue(struct state_redis *r);
void state_fast_adopt(struct state_redis *r, const redisReply *sv);
int state_fast_read_begin(struct state_redis *r, size_t n, struct err *e);
int state_fast_read_counters(struct state_redis *r, struct err *e);
void state_fast_note_absent(struct state_redis *r, const char *entity);
void state_fast_free(struct state_fast *f);
/* Tests: fn runs between a fast write's check and its MULTI (a race made
 * deterministic); NULL: none. Not for production code. */
void state_fast_set_hook(void (*fn)(void *opaque), void *opaque);
/* state_bucket.c: layout 3's reads, writes and sweep on the handle */
int state_v3_get_chunk(struct state_redis *r, size_t n, const char *const *entities,
                       struct state_blob *out, struct err *e);
int state_v3_append(struct state_redis *r, const struct state_put *puts, size_t first, size_t k,
                    struct err *e);
int state_v3_read_chunk(struct state_redis *r, const struct state_put *puts, size_t k,
                        int *applied, const size_t *order, struct err *e);
int state_v3_sweep(struct state *s, int full, size_t *deleted, struct err *e);
void state_v3_sweep_paced(struct state_redis *r);

#endif
