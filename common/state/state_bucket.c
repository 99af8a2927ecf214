/* common/state/state_bucket.c: layout 3 of the Redis state, users as fields
 * of hash buckets (private to common/state; state_backend.h declares it).
 *
 * A user lives in the field <entity> of the hash <prefix>ub:{<b>}, b = FNV-1a
 * of the entity modulo the store's bucket count (fixed when the store is
 * created: <prefix>layout is "3:<buckets>"). The value is
 * "<partition>:<offset>@<t>|<blob>", t the writer's clock in seconds.
 *
 * Why: layout 2 paid, per user, a key and four script arguments, a SET and
 * its PX (about 30 k redis-server instructions per new user). Here a chunk
 * of puts is one EVALSHA whose per-user arguments are two (field, value)
 * plus the base only when the caller checks one, the writes are one HSET
 * per bucket and partition, and no user has an expiry of its own:
 *   - idempotence: <prefix>applied:{p} (the highest offset written for p,
 *     updated in the same script) is the watermark. A group of puts of
 *     partition p whose smallest offset is above it cannot hold a stale put
 *     (every stored position of p is at most the watermark), so nothing of
 *     it is read; otherwise (a re-delivery) each put is judged as in layout
 *     2 on its stored value;
 *   - fencing: once per partition and chunk, as in layouts 1 and 2;
 *   - compare-and-set (state_set_put_bases): one HMGET per group, and a
 *     string.find of the base at the head of each stored value;
 *   - expiry: a stored value older than state.ttl_s is read as absent (a
 *     read, and a put's base '-', see nothing), and an owner-run sweep
 *     (state_sweep, paced by the handle) deletes those fields.
 * With bases, puts the writer may judge itself (its own users, new users
 * just read absent) skip the script: state_fast.c.
 * docs/delivery.md holds the argument; bench/results.md the figures.
 */
#include "state_redis_priv.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

uint32_t state_v3_bucket(const char *entity, uint32_t nbuckets)
{
    uint32_t h = 2166136261u;

    for (const unsigned char *p = (const unsigned char *)entity; *p; p++)
        h = (h ^ *p) * 16777619u;
    return nbuckets ? h % nbuckets : 0;
}

size_t state_v3_value(char *buf, int32_t partition, int64_t offset, int64_t now_s,
                      const unsigned char *data, size_t len)
{
    size_t n = state_put_ll(buf, partition);

    buf[n++] = ':';
    n += state_put_ll(buf + n, offset);
    buf[n++] = '@';
    n += state_put_ll(buf + n, now_s);
    buf[n++] = '|';
    memcpy(buf + n, data, len);
    return n + len;
}

size_t state_v3_base(char *buf, int32_t partition, int64_t offset)
{
    size_t n = state_put_ll(buf, partition);

    buf[n++] = ':';
    n += state_put_ll(buf + n, offset);
    buf[n++] = '@';
    return n;
}

/* A decimal integer of [s, end) in [lo, hi]. */
static int parse_ll(const char *s, const char *end, long long lo, long long hi, long long *v)
{
    char tmp[24], *stop;

    if (end <= s || end - s >= (long)sizeof(tmp))
        return -1;
    memcpy(tmp, s, (size_t)(end - s));
    tmp[end - s] = '\0';
    errno = 0;
    *v = strtoll(tmp, &stop, 10);
    return errno || *stop || *v < lo || *v > hi ? -1 : 0;
}

int state_v3_parse(const char *v, size_t len, int64_t now_s, int64_t ttl_s, struct state_blob *b)
{
    const char *bar = memchr(v, '|', len < 72 ? len : 72), *col, *at;
    long long p, o, t;

    b->len = 0;
    b->partition = -1;
    b->offset = -1;
    col = bar ? memchr(v, ':', (size_t)(bar - v)) : NULL;
    at = col ? memchr(col, '@', (size_t)(bar - col)) : NULL;
    if (!at || parse_ll(v, col, INT32_MIN, INT32_MAX, &p) ||
        parse_ll(col + 1, at, LLONG_MIN, LLONG_MAX, &o) || parse_ll(at + 1, bar, 0, LLONG_MAX, &t))
        return -1;
    len -= (size_t)(bar + 1 - v);
    if (len == 0 || len > STATE_BLOB_MAX)
        return -1;
    if (ttl_s > 0 && t + ttl_s <= now_s)
        return 1; /* expired, not yet swept: absent */
    memcpy(b->data, bar + 1, len);
    b->len = len;
    b->partition = (int32_t)p;
    b->offset = o;
    b->time_s = t;
    return 0;
}

int state_v3_buckets_of(const char *layout, size_t len)
{
    long long b;

    if (len < 3 || layout[0] != '3' || layout[1] != ':' ||
        parse_ll(layout + 2, layout + len, 1, STATE_V3_BUCKETS_MAX, &b))
        return -1;
    return (int)b;
}

/* ---- chunk plans ---- */

uint64_t state_v3_hash64(const char *s)
{
    uint64_t h = 14695981039346656037ull;

    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return h;
}

int state_v3_cmd_reserve(struct state_v3_cmd *c, size_t nargv, size_t nstrs, size_t nkeys,
                         uint32_t nbuckets)
{
    if (nargv > c->cap_argv) {
        const char **v = realloc(c->argv, nargv * sizeof(*v));
        size_t *l = v ? realloc(c->argvlen, nargv * sizeof(*l)) : NULL;
        size_t *g = l ? realloc(c->groups, nargv * sizeof(*g)) : NULL;
        if (v)
            c->argv = v;
        if (l)
            c->argvlen = l;
        if (!g)
            return ERR_NOMEM;
        c->groups = g;
        c->cap_argv = nargv;
    }
    if (nstrs > c->cap_strs) {
        char *p = realloc(c->strs, nstrs);
        if (!p)
            return ERR_NOMEM;
        c->strs = p;
        c->cap_strs = nstrs;
    }
    if (nkeys > c->cap_keys) {
        uint64_t *k = realloc(c->keys, nkeys * sizeof(*k));
        int32_t *sp = k ? realloc(c->slot_part, nkeys * sizeof(*sp)) : NULL;
        if (k)
            c->keys = k;
        if (!sp)
            return ERR_NOMEM;
        c->slot_part = sp;
        c->cap_keys = nkeys;
    }
    if (nbuckets > c->cap_bidx) {
        int32_t *b = realloc(c->bidx, nbuckets * sizeof(*b));
        if (!b)
            return ERR_NOMEM;
        c->bidx = b;
        for (uint32_t i = c->cap_bidx; i < nbuckets; i++)
            b[i] = -1;
        c->cap_bidx = nbuckets;
    }
    return ERR_OK;
}

void state_v3_cmd_free(struct state_v3_cmd *c)
{
    free(c->argv);
    free(c->argvlen);
    free(c->groups);
    free(c->strs);
    free(c->keys);
    free(c->slot_part);
    free(c->bidx);
    memset(c, 0, sizeof(*c));
}

/* Appends s (len bytes) to the strings and the argument vector. */
static void arg_mem(struct state_v3_cmd *c, const char *s, size_t len)
{
    char *at = c->strs + c->used;

    memcpy(at, s, len);
    c->used += len;
    c->argv[c->argc] = at;
    c->argvlen[c->argc++] = len;
}

static void arg_int(struct state_v3_cmd *c, long long v)
{
    char tmp[24];

    arg_mem(c, tmp, state_put_ll(tmp, v));
}

/* <prefix>ub:{<b>} */
static void arg_bucket(struct state_v3_cmd *c, const char *prefix, uint32_t b)
{
    char tmp[STATE_V3_HEAD_MAX + 160];
    size_t pl = strlen(prefix);

    memcpy(tmp, prefix, pl);
    memcpy(tmp + pl, "ub:{", 4);
    pl += 4 + state_put_ll(tmp + pl + 4, b);
    tmp[pl++] = '}';
    arg_mem(c, tmp, pl);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

#define IDX_BITS 20 /* a chunk's index (PUT_CHUNK <= 2^20) */
#define IDX_MASK ((1ull << IDX_BITS) - 1)

int state_v3_put_cmd(struct state_v3_cmd *c, const char *sha, const char *prefix,
                     uint32_t nbuckets, int64_t now_s, int64_t ttl_s,
                     const struct state_put *puts, size_t k, const struct state_base *bases,
                     const int64_t *epochs, size_t n_epochs, size_t *order)
{
    size_t m = 0, nb = 0, g = 0, vals = 0, pl = strlen(prefix);
    size_t nargv = 3 + 5 * k + 5 + 6 * k + 3 * k + 1; /* + 1: the prefix, last */

    for (size_t i = 0; i < k; i++)
        vals += STATE_V3_HEAD_MAX + puts[i].len + 48;
    if (state_v3_cmd_reserve(c, nargv, k * (3 * (pl + 32) + 200) + vals + 256, k + 1, nbuckets))
        return ERR_NOMEM;
    c->argc = 0;
    c->used = 0;
    /* Sort by (slot, bucket): a group is one partition's puts in one
     * bucket, written with one HSET. */
    for (size_t i = 0; i < k; i++) {
        size_t j = 0;
        while (j < m && c->slot_part[j] != puts[i].partition)
            j++;
        if (j == m)
            c->slot_part[m++] = puts[i].partition;
        c->keys[i] = (uint64_t)j << 40 | (uint64_t)state_v3_bucket(puts[i].entity, nbuckets)
                                             << IDX_BITS | i;
    }
    qsort(c->keys, k, sizeof(*c->keys), cmp_u64);
    c->argv[c->argc] = "EVALSHA";
    c->argvlen[c->argc++] = 7;
    c->argv[c->argc] = sha;
    c->argvlen[c->argc++] = 40;
    size_t nkeys_at = c->argc++; /* filled below */
    for (size_t i = 0; i < k; i++) { /* the bucket keys, first use order */
        uint32_t b = (uint32_t)(c->keys[i] >> IDX_BITS) & 0xfffff;
        if (c->bidx[b] < 0) {
            c->bidx[b] = (int32_t)++nb;
            arg_bucket(c, prefix, b);
        }
    }
    for (size_t j = 0; j < m; j++) {
        char tmp[320];
        size_t n = (size_t)snprintf(tmp, sizeof(tmp), "%sapplied:{%d}", prefix,
                                    (int)c->slot_part[j]);
        arg_mem(c, tmp, n);
        n = (size_t)snprintf(tmp, sizeof(tmp), "%sepoch:{%d}", prefix, (int)c->slot_part[j]);
        arg_mem(c, tmp, n);
    }
    {
        char tmp[24];
        size_t n = state_put_ll(tmp, (long long)(nb + 2 * m));
        char *at = c->strs + c->used;
        memcpy(at, tmp, n);
        c->used += n;
        c->argv[nkeys_at] = at;
        c->argvlen[nkeys_at] = n;
    }
    arg_int(c, (long long)nb);
    arg_int(c, (long long)m);
    arg_int(c, ttl_s);
    for (size_t j = 0; j < m; j++) {
        int32_t p = c->slot_part[j];
        arg_int(c, p);
        arg_int(c, p >= 0 && (size_t)p < n_epochs ? epochs[p] : 0);
    }
    arg_int(c, now_s);
    size_t ng_at = c->argc++;
    /* Groups: bucket key index, slot, count, smallest and largest offset,
     * whether bases follow. */
    for (size_t i = 0; i < k;) {
        uint64_t grp = c->keys[i] >> IDX_BITS;
        size_t e = i;
        int64_t lo = INT64_MAX, hi = INT64_MIN;
        while (e < k && c->keys[e] >> IDX_BITS == grp) {
            const struct state_put *p = &puts[c->keys[e] & IDX_MASK];
            lo = p->offset < lo ? p->offset : lo;
            hi = p->offset > hi ? p->offset : hi;
            e++;
        }
        arg_int(c, c->bidx[grp & 0xfffff]);
        arg_int(c, (long long)(grp >> 20) + 1);
        arg_int(c, (long long)(e - i));
        arg_int(c, lo);
        arg_int(c, hi);
        arg_mem(c, bases ? "1" : "0", 1);
        g++;
        i = e;
    }
    {
        char tmp[24];
        size_t n = state_put_ll(tmp, (long long)g);
        char *at = c->strs + c->used;
        memcpy(at, tmp, n);
        c->used += n;
        c->argv[ng_at] = at;
        c->argvlen[ng_at] = n;
    }
    for (size_t i = 0; i < k;) {
        uint64_t grp = c->keys[i] >> IDX_BITS;
        size_t e = i;
        while (e < k && c->keys[e] >> IDX_BITS == grp) {
            size_t x = (size_t)(c->keys[e] & IDX_MASK);
            const struct state_put *p = &puts[x];
            char *at = c->strs + c->used;
            order[e] = x;
            c->argv[c->argc] = p->entity;
            c->argvlen[c->argc++] = strlen(p->entity);
            c->argv[c->argc] = at;
            c->argvlen[c->argc] = state_v3_value(at, p->partition, p->offset, now_s, p->data,
                                                 p->len);
            c->used += c->argvlen[c->argc++];
            e++;
        }
        for (size_t q = i; bases && q < e; q++) {
            const struct state_base *b = &bases[c->keys[q] & IDX_MASK];
            if (b->partition < 0) {
                arg_mem(c, "-", 1);
            } else {
                char *at = c->strs + c->used;
                c->argv[c->argc] = at;
                c->argvlen[c->argc] = state_v3_base(at, b->partition, b->offset);
                c->used += c->argvlen[c->argc++];
            }
        }
        i = e;
    }
    arg_mem(c, prefix, pl); /* the script names the counters it raises */
    for (size_t i = 0; i < k; i++) /* bidx back to -1 for the next chunk */
        c->bidx[(c->keys[i] >> IDX_BITS) & 0xfffff] = -1;
    return ERR_OK;
}

int state_v3_get_cmds(struct state_v3_cmd *c, const char *prefix, uint32_t nbuckets, size_t n,
                      const char *const *entities, size_t *order)
{
    size_t pl = strlen(prefix);

    if (state_v3_cmd_reserve(c, 3 * n + 2, n * (pl + 32) + 64, n + 1, 0))
        return ERR_NOMEM;
    c->argc = 0;
    c->used = 0;
    c->ngroups = 0;
    for (size_t i = 0; i < n; i++)
        c->keys[i] = (uint64_t)state_v3_bucket(entities[i], nbuckets) << IDX_BITS | i;
    qsort(c->keys, n, sizeof(*c->keys), cmp_u64);
    for (size_t i = 0; i < n; i++) {
        uint64_t b = c->keys[i] >> IDX_BITS;
        size_t x = (size_t)(c->keys[i] & IDX_MASK);
        if (i == 0 || b != c->keys[i - 1] >> IDX_BITS) {
            c->groups[c->ngroups++] = c->argc;
            c->argv[c->argc] = "HMGET";
            c->argvlen[c->argc++] = 5;
            arg_bucket(c, prefix, (uint32_t)b);
        }
        order[i] = x;
        c->argv[c->argc] = entities[x];
        c->argvlen[c->argc++] = strlen(entities[x]);
    }
    return ERR_OK;
}

size_t state_v3_chunk_len(struct state_v3_cmd *c, const struct state_put *puts, size_t n,
                          size_t max)
{
    size_t k = n < max ? n : max, cap = 16, mask;

    while (cap < 2 * k)
        cap *= 2;
    if (state_v3_cmd_reserve(c, 0, 0, cap, 0))
        return k < 1 ? k : 1; /* out of memory: one put per chunk is always safe */
    mask = cap - 1;
    memset(c->keys, 0, cap * sizeof(*c->keys));
    for (size_t i = 0; i < k; i++) {
        size_t h = (size_t)state_v3_hash64(puts[i].entity) & mask;
        while (c->keys[h]) {
            if (strcmp(puts[c->keys[h] - 1].entity, puts[i].entity) == 0)
                return i; /* the second write of an entity starts the next chunk */
            h = (h + 1) & mask;
        }
        c->keys[h] = i + 1;
    }
    return k;
}

/* ---- on the Redis handle (state_redis_priv.h) ---- */

#define lost state_redis_lost
#define now_s state_redis_now_s

int state_v3_append(struct state_redis *r, const struct state_put *puts, size_t first, size_t k,
                    struct err *e)
{
    struct state_v3_cmd *c = &r->v3;

    if (state_v3_put_cmd(c, r->sha, r->prefix, r->buckets, now_s(), r->ttl_ms / 1000, puts, k,
                         r->base.put_bases ? r->base.put_bases + first : NULL, r->epochs,
                         r->n_epochs, r->order + first))
        return err_set(e, ERR_NOMEM, "redis: out of memory for a batch of %zu puts", k);
    if (redisAppendCommandArgv(rc_ctx(r->rc), (int)c->argc, c->argv, c->argvlen) != REDIS_OK)
        return lost(r, "EVALSHA", puts[0].entity, e);
    return ERR_OK;
}

/* Layout 3, a chunk: one HMGET per bucket, pipelined; a value older than
 * the ttl reads as absent (state_bucket.c). */
int state_v3_get_chunk(struct state_redis *r, size_t n, const char *const *entities,
                        struct state_blob *out, struct err *e)
{
    struct state_v3_cmd *c = &r->v3;
    int64_t now = now_s();
    size_t at = 0;
    int first = ERR_OK;

    if (state_redis_grow_order(r, n) || state_v3_get_cmds(c, r->prefix, r->buckets, n, entities, r->order))
        return err_set(e, ERR_NOMEM, "redis: out of memory for a read of %zu keys", n);
    for (size_t g = 0; g < c->ngroups; g++) {
        size_t a = c->groups[g], end = g + 1 < c->ngroups ? c->groups[g + 1] : c->argc;
        if (redisAppendCommandArgv(rc_ctx(r->rc), (int)(end - a), c->argv + a,
                                   c->argvlen + a) != REDIS_OK)
            return lost(r, "HMGET", c->argv[a + 1], e);
    }
    if (r->fast.rd_pending && state_fast_read_counters(r, e)) /* sent before the HMGETs */
        return e->code;
    for (size_t g = 0; g < c->ngroups; g++) {
        size_t a = c->groups[g], end = g + 1 < c->ngroups ? c->groups[g + 1] : c->argc;
        size_t k = end - a - 2;
        redisReply *rep = NULL;
        if (redisGetReply(rc_ctx(r->rc), (void **)&rep) != REDIS_OK || !rep)
            return lost(r, "HMGET", c->argv[a + 1], e);
        for (size_t i = 0; i < k; i++) {
            struct state_blob *b = &out[r->order[at + i]];
            const redisReply *x = rep->type == REDIS_REPLY_ARRAY && rep->elements == k
                                      ? rep->element[i] : NULL;
            b->len = 0;
            b->partition = -1;
            b->offset = -1;
            int pr = x && x->type == REDIS_REPLY_STRING
                         ? state_v3_parse(x->str, x->len, now, r->ttl_ms / 1000, b) : -1;
            if ((x && x->type == REDIS_REPLY_NIL) || pr == 1) {
                state_fast_note_absent(r, c->argv[a + 2 + i]);
                continue;
            }
            if (pr == 0)
                continue;
            if (first == ERR_OK)
                first = err_set(e, rep->type == REDIS_REPLY_ERROR ? rc_reply_code(rep->str)
                                                                  : ERR_IO,
                                "redis HMGET %.*s %.*s: %s", (int)c->argvlen[a + 1],
                                c->argv[a + 1], (int)c->argvlen[a + 2 + i], c->argv[a + 2 + i],
                                rep->type == REDIS_REPLY_ERROR
                                    ? rep->str
                                    : "WRONGTYPE not a state value of layout 3 "
                                      "(<partition>:<offset>@<time>|<blob>)");
        }
        at += k;
        freeReplyObject(rep);
    }
    return first;
}

/* Layout 3: the reply of a chunk, codes in the order the script judged the
 * puts (order[g]: the put of code g), then the message of each 'E'. */
int state_v3_read_chunk(struct state_redis *r, const struct state_put *puts, size_t k,
                         int *applied, const size_t *order, struct err *e)
{
    redisReply *rep = NULL;
    int rc = ERR_OK, nosc;
    size_t ne = 2;

    if (redisGetReply(rc_ctx(r->rc), (void **)&rep) != REDIS_OK || !rep)
        return lost(r, "EVALSHA", puts[0].entity, e);
    nosc = rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0;
    for (size_t i = 0; i < k; i++)
        applied[i] = nosc ? -1 : 0;
    if (rep->type == REDIS_REPLY_ERROR && !nosc)
        rc = err_set(e, rc_reply_code(rep->str), "redis EVALSHA %s (+%zu): %s", puts[0].entity,
                     k - 1, rep->str);
    else if (rep->type != REDIS_REPLY_ERROR &&
             (rep->type != REDIS_REPLY_ARRAY || rep->elements < 2 ||
              rep->element[0]->type != REDIS_REPLY_STRING || rep->element[0]->len != k))
        rc = err_set(e, ERR_DECODE, "redis EVALSHA %s (+%zu): unexpected reply", puts[0].entity,
                     k - 1);
    int shape = rc == ERR_OK && rep->type == REDIS_REPLY_ARRAY;

    if (shape) /* the steal counters of the chunk's partitions (state_fast.c) */
        state_fast_adopt(r, rep->element[1]);

    for (size_t g = 0; shape && g < k; g++) {
        char code = rep->element[0]->str[g];
        size_t i = order[g];
        if (code == '0' || code == '1' || code == '3') {
            applied[i] = code - '0';
        } else if (code == '2') {
            r->base.fenced++;
        } else {
            const redisReply *x = ne < rep->elements ? rep->element[ne] : NULL;
            const char *msg = x && x->type == REDIS_REPLY_STRING ? x->str : "unexpected code";
            ne++;
            if (rc == ERR_OK)
                rc = err_set(e, rc_reply_code(msg), "redis EVALSHA (user %s): %s",
                             puts[i].entity, msg);
        }
    }
    freeReplyObject(rep);
    return rc;
}

/* Layout 3's expiry: one HSCAN step (COUNT SWEEP_COUNT) of the sweep's
 * bucket, deleting the fields older than the ttl (state_bucket.c); the
 * cursor moves on, to the next bucket when this one is done (*wrapped: past
 * the last). */
#define SWEEP_COUNT "1000"
#define SWEEP_EVERY_PUTS 1000 /* SWEEP_COUNT as a number */
static int sweep_step(struct state_redis *r, size_t *deleted, int *wrapped, struct err *e)
{
    char key[KEY_MAX], now[24], ttl[24];
    const char *argv[] = {"EVALSHA", r->sha_sweep, "1", key, r->sweep_cur, SWEEP_COUNT, now, ttl};
    redisReply *rep;
    int rc = ERR_OK;

    snprintf(key, sizeof(key), "%sub:{%u}", r->prefix, (unsigned)r->sweep_b);
    snprintf(now, sizeof(now), "%lld", (long long)now_s());
    snprintf(ttl, sizeof(ttl), "%lld", r->ttl_ms / 1000);
    if (!(rep = redisCommandArgv(rc_ctx(r->rc), 8, argv, NULL)))
        return lost(r, "EVALSHA sweep", key, e);
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
        rep->element[0]->type == REDIS_REPLY_STRING && rep->element[0]->len < 24 &&
        rep->element[1]->type == REDIS_REPLY_INTEGER) {
        *deleted += (size_t)rep->element[1]->integer;
        memcpy(r->sweep_cur, rep->element[0]->str, rep->element[0]->len);
        r->sweep_cur[rep->element[0]->len] = '\0';
    } else {
        rc = err_set(e, rep->type == REDIS_REPLY_ERROR ? rc_reply_code(rep->str) : ERR_DECODE,
                     "redis sweep of %s: %s", key,
                     rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
        strcpy(r->sweep_cur, "0"); /* that bucket is skipped this round */
    }
    freeReplyObject(rep);
    *wrapped = 0;
    if (strcmp(r->sweep_cur, "0") == 0) {
        r->sweep_b = (r->sweep_b + 1) % r->buckets;
        *wrapped = r->sweep_b == 0;
    }
    return rc;
}

/* state_sweep: one step, or (full) every bucket from the first. */
int state_v3_sweep(struct state *s, int full, size_t *deleted, struct err *e)
{
    struct state_redis *r = (struct state_redis *)s;
    struct rc_sigpipe g;
    int rc, wrapped = 0;

    *deleted = 0;
    rc_sigpipe_block(&g);
    rc = state_redis_ensure(r, e);
    if (rc == ERR_OK && r->layout == 3 && r->ttl_ms > 0) {
        if (full) {
            r->sweep_b = 0;
            strcpy(r->sweep_cur, "0");
        }
        do
            rc = sweep_step(r, deleted, &wrapped, e);
        while (full && !wrapped && rc_ctx(r->rc));
    }
    rc_sigpipe_restore(&g);
    return rc;
}

/* The handle's own pace: a step at most once a second, after a write, and
 * at most one per SWEEP_EVERY_PUTS puts: the fields scanned never outnumber the
 * puts (each HSCAN step pushes up to 1,000 whole values into Lua, so a step
 * a second cost a slow or idle worker's Redis more per event than its
 * writes), and still keep up with expiry, since no more users expire than
 * puts created. */
void state_v3_sweep_paced(struct state_redis *r)
{
    struct timespec ts;
    struct err tmp = {0};
    size_t deleted = 0;
    int wrapped;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (r->layout != 3 || r->ttl_ms <= 0 || ms < r->next_sweep_ms ||
        r->sweep_puts < SWEEP_EVERY_PUTS)
        return;
    r->next_sweep_ms = ms + 1000;
    r->sweep_puts = 0;
    if (sweep_step(r, &deleted, &wrapped, &tmp))
        log_warn("state: %s", tmp.msg);
}

