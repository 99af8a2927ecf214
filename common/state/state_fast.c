/* common/state/state_fast.c: layout 3's writes without Lua, for the common
 * case of a worker that keeps its users in memory (private to common/state;
 * state_redis_priv.h declares it).
 *
 * Why: with the users' cache on, every put carries a base, so the script
 * read each group back (HMGET), pushed the stored values and the new ones
 * into Lua and compared them there: about 17 k redis-server instructions per
 * event, most of them in the Lua VM. A put whose base is the writer's own
 * partition (a user seen before by this owner) or nothing read just now (a
 * new user) needs no per-user read if something cheaper proves that nobody
 * else wrote the user since. Per partition and per bucket counters do:
 *   <prefix>st:{p}   raised by the script whenever it writes a user whose
 *                    stored value names partition p from another partition
 *                    (a user moving between partitions: a "steal");
 *   <prefix>cr:{b}   raised whenever a user of bucket b is created (written
 *                    where nothing, or an expired value, was stored), by
 *                    the script and by this path;
 *   <prefix>stb      raised by a script call that wrote without reading
 *                    (puts without bases: the cache off, tools).
 * The script returns st:{p} of each partition it wrote and stb; the handle
 * adopts them, and whenever one differs from what it had adopted, reports
 * the partition (stb: every partition) as moved (state_take_owner_changes),
 * so that the caller drops its cached users of it: those it keeps were
 * verified after the adopted value. A fast write then is two round trips:
 *   WATCH + MGET of epoch:{p}, st:{p}, applied:{p} of each partition, the
 *   cr:{b} of the buckets of its new users, stb, marker;
 *   if each is as expected (the epoch held, st adopted, applied below the
 *   partition's smallest offset, cr and stb as read before the users were
 *   found absent, the marker present): MULTI, one HSET per bucket, SET
 *   applied:{p}, INCR cr:{b}, EXEC; else UNWATCH.
 * A partition that fails a check, and the whole batch when EXEC answers nil
 * (a watched key changed in between), goes through the script as before.
 * docs/delivery.md ("The fast path") holds the argument.
 */
#include "state_redis_priv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define lost state_redis_lost
#define now_s state_redis_now_s

/* The read-side counters are kept for stores of at most this many buckets
 * (a bitmap of the batch's buckets; the default is 8). */
#define CR_BUCKETS_MAX 64

/* 0 marks an empty slot of the absent set. */
static uint64_t ent_hash(const char *s)
{
    uint64_t h = state_v3_hash64(s);

    return h ? h : 1;
}

void state_fast_free(struct state_fast *f)
{
    void *a[] = {f->st, f->st_known, f->rd_cr, f->absent, f->role, f->lo, f->hi, f->parts,
                 f->slow_idx, f->fast_idx, f->slow_puts, f->slow_bases, f->slow_applied};
    for (size_t i = 0; i < sizeof(a) / sizeof(a[0]); i++)
        free(a[i]);
    state_v3_cmd_free(&f->cmd);
}

static int grow_st(struct state_fast *f, size_t want)
{
    size_t n = f->n_st ? f->n_st : 64;

    if (want <= f->n_st)
        return 0;
    while (n < want)
        n *= 2;
    int64_t *st = realloc(f->st, n * sizeof(*st));
    if (!st)
        return -1;
    f->st = st;
    unsigned char *k = realloc(f->st_known, n);
    if (!k)
        return -1;
    f->st_known = k;
    memset(k + f->n_st, 0, n - f->n_st);
    f->n_st = n;
    return 0;
}

static int grow_parts(struct state_fast *f, size_t want)
{
    size_t n = f->cap_part ? f->cap_part : 64;

    if (want <= f->cap_part)
        return 0;
    while (n < want)
        n *= 2;
    unsigned char *role = realloc(f->role, n);
    if (!role)
        return -1;
    f->role = role;
    memset(role + f->cap_part, 0, n - f->cap_part);
    int64_t *lo = realloc(f->lo, n * sizeof(*lo)), *hi = lo ? realloc(f->hi, n * sizeof(*hi)) : NULL;
    if (lo)
        f->lo = lo;
    if (!hi)
        return -1;
    f->hi = hi;
    int32_t *parts = realloc(f->parts, n * sizeof(*parts));
    if (!parts)
        return -1;
    f->parts = parts;
    f->cap_part = n;
    return 0;
}

static int grow_puts(struct state_fast *f, size_t n)
{
    if (n <= f->cap_puts)
        return 0;
    size_t *si = realloc(f->slow_idx, n * sizeof(*si));
    if (si)
        f->slow_idx = si;
    size_t *fi = si ? realloc(f->fast_idx, n * sizeof(*fi)) : NULL;
    if (fi)
        f->fast_idx = fi;
    struct state_put *sp = fi ? realloc(f->slow_puts, n * sizeof(*sp)) : NULL;
    if (sp)
        f->slow_puts = sp;
    struct state_base *sb = sp ? realloc(f->slow_bases, n * sizeof(*sb)) : NULL;
    if (sb)
        f->slow_bases = sb;
    int *sa = sb ? realloc(f->slow_applied, n * sizeof(*sa)) : NULL;
    if (!sa)
        return -1;
    f->slow_applied = sa;
    f->cap_puts = n;
    return 0;
}

/* ---- argument vectors (f->cmd: argv into strs, reserved up front) ---- */

/* The shared reserve (state_bucket.c), then an empty command list. */
static int cmd_reserve(struct state_v3_cmd *c, size_t nargv, size_t nstrs, size_t nkeys)
{
    if (state_v3_cmd_reserve(c, nargv, nstrs, nkeys, 0))
        return -1;
    c->argc = 0;
    c->used = 0;
    c->ngroups = 0;
    return 0;
}

static void cmd_start(struct state_v3_cmd *c)
{
    c->groups[c->ngroups++] = c->argc;
}

static void arg(struct state_v3_cmd *c, const char *s, size_t len)
{
    c->argv[c->argc] = s;
    c->argvlen[c->argc++] = len;
}

/* <prefix><name>{<n>} into buf (KEY_MAX of room); its length. */
static size_t fmt_key(char *buf, const char *prefix, const char *name, long long n)
{
    size_t pl = strlen(prefix), nl = strlen(name), k;

    memcpy(buf, prefix, pl);
    memcpy(buf + pl, name, nl);
    k = pl + nl;
    buf[k++] = '{';
    k += state_put_ll(buf + k, n);
    buf[k++] = '}';
    return k;
}

static void arg_key(struct state_v3_cmd *c, const char *prefix, const char *name, long long n)
{
    char *at = c->strs + c->used;
    size_t k = fmt_key(at, prefix, name, n);

    c->used += k;
    arg(c, at, k);
}

static void arg_name(struct state_v3_cmd *c, const char *prefix, const char *name)
{
    char *at = c->strs + c->used;
    size_t pl = strlen(prefix), nl = strlen(name);

    memcpy(at, prefix, pl);
    memcpy(at + pl, name, nl);
    c->used += pl + nl;
    arg(c, at, pl + nl);
}

/* Appends command g of c to the connection. */
static int append_cmd(struct state_redis *r, const struct state_v3_cmd *c, size_t g,
                      struct err *e)
{
    size_t a = c->groups[g], end = g + 1 < c->ngroups ? c->groups[g + 1] : c->argc;

    if (redisAppendCommandArgv(rc_ctx(r->rc), (int)(end - a), c->argv + a, c->argvlen + a) !=
        REDIS_OK)
        return lost(r, c->argv[a], end - a > 1 ? c->argv[a + 1] : "", e);
    return ERR_OK;
}

/* A reply's integer (a number, or a decimal string); nil reads as dflt. */
static int reply_int(const redisReply *x, long long dflt, long long *v)
{
    char tmp[24], *end;

    if (x->type == REDIS_REPLY_NIL) {
        *v = dflt;
        return 0;
    }
    if (x->type == REDIS_REPLY_INTEGER) {
        *v = x->integer;
        return 0;
    }
    if (x->type != REDIS_REPLY_STRING || x->len == 0 || x->len >= sizeof(tmp))
        return -1;
    memcpy(tmp, x->str, x->len);
    tmp[x->len] = '\0';
    errno = 0;
    *v = strtoll(tmp, &end, 10);
    return errno || *end ? -1 : 0;
}

/* ---- adoption: the counters the script returns ---- */

void state_fast_adopt(struct state_redis *r, const redisReply *sv)
{
    struct state_fast *f = &r->fast;
    long long p, v;

    if (!sv || sv->type != REDIS_REPLY_ARRAY || sv->elements % 2 != 1) {
        f->stb_known = 0; /* no fast write until a reply says */
        return;
    }
    for (size_t i = 0; i + 1 < sv->elements; i += 2) {
        if (reply_int(sv->element[i], -1, &p) || reply_int(sv->element[i + 1], 0, &v) || p < 0 ||
            p > PARTITION_MAX)
            continue;
        if (grow_st(f, (size_t)p + 1))
            continue; /* not known: never fast */
        if (!f->st_known[p] || f->st[p] != v) {
            /* Users of p may have been written from elsewhere since they
             * were cached: the caller drops them (those just written come
             * back in after the drop, verified by this very call). */
            f->st[p] = v;
            f->st_known[p] = 1;
            state_note_moved(&r->base, (int32_t)p);
        }
    }
    if (reply_int(sv->element[sv->elements - 1], 0, &v)) {
        f->stb_known = 0;
    } else if (!f->stb_known || f->stb != v) {
        f->stb = v;
        f->stb_known = 1;
        state_note_moved(&r->base, -1);
    }
}

/* ---- the read side: which users were found absent, and when ---- */

int state_fast_read_begin(struct state_redis *r, size_t n, struct err *e)
{
    struct state_fast *f = &r->fast;
    struct state_v3_cmd *c = &f->cmd;
    size_t cap = 16, pl = strlen(r->prefix);

    f->rd_valid = 0;
    f->rd_pending = 0;
    if (!f->enabled || r->layout != 3 || !r->base.put_bases || r->buckets > CR_BUCKETS_MAX)
        return ERR_OK;
    while (cap < 2 * n)
        cap *= 2;
    if (cap > f->cap_absent) {
        uint64_t *a = realloc(f->absent, cap * sizeof(*a));
        if (!a)
            return ERR_OK; /* no fast creates for this read */
        f->absent = a;
        f->cap_absent = cap;
    }
    memset(f->absent, 0, f->cap_absent * sizeof(*f->absent));
    if (r->buckets > f->cap_cr) {
        int64_t *cr = realloc(f->rd_cr, r->buckets * sizeof(*cr));
        if (!cr)
            return ERR_OK;
        f->rd_cr = cr;
        f->cap_cr = r->buckets;
    }
    if (cmd_reserve(c, r->buckets + 3, (r->buckets + 2) * (pl + 32), 0))
        return ERR_OK;
    cmd_start(c);
    arg(c, "MGET", 4);
    for (uint32_t b = 0; b < r->buckets; b++)
        arg_key(c, r->prefix, "cr:", b);
    arg_name(c, r->prefix, "stb");
    if (append_cmd(r, c, 0, e))
        return ERR_RETRY;
    f->rd_pending = 1;
    return ERR_OK;
}

int state_fast_read_counters(struct state_redis *r, struct err *e)
{
    struct state_fast *f = &r->fast;
    redisReply *rep = NULL;
    long long v;
    int ok;

    f->rd_pending = 0;
    if (redisGetReply(rc_ctx(r->rc), (void **)&rep) != REDIS_OK || !rep)
        return lost(r, "MGET", "cr", e);
    ok = rep->type == REDIS_REPLY_ARRAY && rep->elements == (size_t)r->buckets + 1;
    for (size_t i = 0; ok && i < rep->elements; i++) {
        ok = reply_int(rep->element[i], 0, &v) == 0;
        if (ok && i < r->buckets)
            f->rd_cr[i] = v;
        else if (ok)
            f->rd_stb = v;
    }
    f->rd_valid = ok;
    freeReplyObject(rep);
    return ERR_OK;
}

void state_fast_note_absent(struct state_redis *r, const char *entity)
{
    struct state_fast *f = &r->fast;
    uint64_t h;
    size_t i, mask = f->cap_absent - 1;

    if (!f->rd_valid)
        return;
    h = ent_hash(entity);
    for (i = (size_t)h & mask; f->absent[i] && f->absent[i] != h; i = (i + 1) & mask)
        ;
    f->absent[i] = h;
}

/* 1 when the last read found entity absent. A 64-bit hash stands for the
 * id: two users would have to collide (about 2^-64 per pair) for a fast
 * create to be judged on the other's read. */
static int read_absent(const struct state_fast *f, const char *entity)
{
    uint64_t h = ent_hash(entity);
    size_t mask = f->cap_absent - 1;

    for (size_t i = (size_t)h & mask; f->absent[i]; i = (i + 1) & mask)
        if (f->absent[i] == h)
            return 1;
    return 0;
}

/* ---- the write ---- */

static void (*g_hook)(void *);
static void *g_hook_opaque;

void state_fast_set_hook(void (*fn)(void *opaque), void *opaque)
{
    g_hook = fn;
    g_hook_opaque = opaque;
}

/* Whether put i may take the fast path, its partition's other puts aside. */
static int eligible(const struct state_redis *r, const struct state_put *p,
                    const struct state_base *b, int64_t now, int rd)
{
    const struct state_fast *f = &r->fast;
    int64_t ttl = r->ttl_ms / 1000, margin = ttl / 4 > 1 ? ttl / 4 : 1;
    int32_t q = p->partition;

    if ((size_t)q >= r->n_epochs || r->epochs[q] <= 0 || (size_t)q >= f->n_st || !f->st_known[q] ||
        state_moved_pending(&r->base, q))
        return 0;
    if (b->partition < 0) /* a new user: found absent by the last read */
        return rd && read_absent(f, p->entity);
    /* Its own partition's value, not about to expire (the margin covers
     * the clocks of the workers that sweep). */
    return b->partition == q && b->offset >= 0 &&
           (ttl <= 0 || (b->time_s > 0 && b->time_s + ttl - margin > now));
}

/* Marks the partitions of the puts, and their roles: 1 fast, 2 slow.
 * Returns the number of fast ones. */
static size_t plan(struct state_redis *r, size_t n, const struct state_put *puts,
                   const struct state_base *bases, int rd, uint64_t *crmask)
{
    struct state_fast *f = &r->fast;
    int64_t now = now_s();
    size_t nfast = 0;

    f->nparts = 0;
    *crmask = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t q = puts[i].partition;
        if (f->role[q] == 0) {
            f->role[q] = 1;
            f->lo[q] = INT64_MAX;
            f->hi[q] = INT64_MIN;
            f->parts[f->nparts++] = q;
        }
        f->lo[q] = puts[i].offset < f->lo[q] ? puts[i].offset : f->lo[q];
        f->hi[q] = puts[i].offset > f->hi[q] ? puts[i].offset : f->hi[q];
        if (f->role[q] == 1 && !eligible(r, &puts[i], &bases[i], now, rd))
            f->role[q] = 2;
    }
    for (size_t i = 0; i < n; i++)
        if (bases[i].partition < 0 && f->role[puts[i].partition] == 1)
            *crmask |= 1ull << state_v3_bucket(puts[i].entity, r->buckets);
    for (size_t k = 0; k < f->nparts; k++)
        nfast += f->role[f->parts[k]] == 1;
    return nfast;
}

/* Demotes to the script the partitions with a new user in bucket b (b < 0:
 * in any bucket). */
static void demote_creates(struct state_redis *r, size_t n, const struct state_put *puts,
                           const struct state_base *bases, int b)
{
    for (size_t i = 0; i < n; i++)
        if (bases[i].partition < 0 &&
            (b < 0 || state_v3_bucket(puts[i].entity, r->buckets) == (uint32_t)b))
            r->fast.role[puts[i].partition] = 2;
}

/* WATCH + MGET of the counters; the partitions whose counters are not as
 * expected become slow. */
static int check(struct state_redis *r, size_t n, const struct state_put *puts,
                 const struct state_base *bases, uint64_t crmask, struct err *e)
{
    struct state_fast *f = &r->fast;
    struct state_v3_cmd *c = &f->cmd;
    size_t pl = strlen(r->prefix), nk = 0, at;
    redisReply *w = NULL, *rep = NULL;
    long long v;
    int rc = ERR_OK;

    for (size_t k = 0; k < f->nparts; k++)
        nk += f->role[f->parts[k]] == 1 ? 3 : 0;
    nk += (size_t)__builtin_popcountll(crmask) + 2;
    if (cmd_reserve(c, 2 * nk + 2, 2 * nk * (pl + 32), 0))
        return err_set(e, ERR_NOMEM, "redis: out of memory for a fast write");
    for (int g = 0; g < 2; g++) {
        cmd_start(c);
        arg(c, g ? "MGET" : "WATCH", g ? 4 : 5);
        for (size_t k = 0; k < f->nparts; k++) {
            int32_t q = f->parts[k];
            if (f->role[q] != 1)
                continue;
            arg_key(c, r->prefix, "epoch:", q);
            arg_key(c, r->prefix, "st:", q);
            arg_key(c, r->prefix, "applied:", q);
        }
        for (uint32_t b = 0; b < CR_BUCKETS_MAX; b++)
            if (crmask >> b & 1)
                arg_key(c, r->prefix, "cr:", b);
        arg_name(c, r->prefix, "stb");
        arg_name(c, r->prefix, "marker");
    }
    if (append_cmd(r, c, 0, e) || append_cmd(r, c, 1, e))
        return ERR_RETRY;
    if (redisGetReply(rc_ctx(r->rc), (void **)&w) != REDIS_OK || !w ||
        redisGetReply(rc_ctx(r->rc), (void **)&rep) != REDIS_OK || !rep) {
        if (w)
            freeReplyObject(w);
        return lost(r, "MGET", "", e);
    }
    if (w->type == REDIS_REPLY_ERROR || rep->type != REDIS_REPLY_ARRAY || rep->elements != nk) {
        rc = err_set(e, ERR_IO, "redis WATCH/MGET of the fast path: %s",
                     w->type == REDIS_REPLY_ERROR     ? w->str
                     : rep->type == REDIS_REPLY_ERROR ? rep->str
                                                      : "unexpected reply");
        goto out;
    }
    at = 0;
    for (size_t k = 0; k < f->nparts; k++) {
        int32_t q = f->parts[k];
        long long ep, st, ap;
        if (f->role[q] != 1)
            continue;
        if (reply_int(rep->element[at], 0, &ep) || reply_int(rep->element[at + 1], 0, &st) ||
            reply_int(rep->element[at + 2], -1, &ap) || ep != r->epochs[q] || st != f->st[q] ||
            ap >= f->lo[q])
            f->role[q] = 2; /* fenced, stolen from, or a re-delivery: the script judges */
        at += 3;
    }
    for (uint32_t b = 0; b < CR_BUCKETS_MAX; b++) {
        if (!(crmask >> b & 1))
            continue;
        if (reply_int(rep->element[at++], 0, &v) || v != f->rd_cr[b])
            demote_creates(r, n, puts, bases, (int)b); /* a user of b created since the read */
    }
    if (reply_int(rep->element[at], 0, &v) || v != f->stb || !f->stb_known) {
        for (size_t k = 0; k < f->nparts; k++)
            f->role[f->parts[k]] = 2;
    } else if (crmask && v != f->rd_stb) {
        demote_creates(r, n, puts, bases, -1);
    }
    if (rep->element[at + 1]->type != REDIS_REPLY_STRING) /* flushed: the script and the */
        for (size_t k = 0; k < f->nparts; k++)            /* marker check find it */
            f->role[f->parts[k]] = 2;
out:
    freeReplyObject(w);
    freeReplyObject(rep);
    return rc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

#define IDX_BITS 32

/* ---- the transaction, written as RESP directly ----
 * One buffer (c->strs) holds MULTI ... EXEC as the protocol bytes, handed
 * to hiredis once (redisAppendFormattedCommand): a value is copied once,
 * from the blob into the buffer, where building an argv and letting hiredis
 * format it copied it three times and formatted each length with printf. */

static char *resp_uint(char *at, char kind, size_t v)
{
    *at++ = kind;
    at += state_put_ll(at, (long long)v);
    *at++ = '\r';
    *at++ = '\n';
    return at;
}

static char *resp_bulk(char *at, const char *s, size_t len)
{
    at = resp_uint(at, '$', len);
    memcpy(at, s, len);
    at += len;
    *at++ = '\r';
    *at++ = '\n';
    return at;
}

/* <prefix><name>{<n>} as a bulk string. */
static char *resp_key(char *at, const char *prefix, const char *name, long long n)
{
    char key[KEY_MAX];

    return resp_bulk(at, key, fmt_key(key, prefix, name, n));
}

static char *resp_cmd(char *at, size_t argc, const char *name)
{
    at = resp_uint(at, '*', argc);
    return resp_bulk(at, name, strlen(name));
}

/* MULTI, one HSET per bucket, SET applied:{p}, INCR cr:{b}, EXEC. */
static int send_multi(struct state_redis *r, const struct state_put *puts,
                      const struct state_base *bases, struct err *e)
{
    struct state_fast *f = &r->fast;
    struct state_v3_cmd *c = &f->cmd;
    size_t pl = strlen(r->prefix), room = 64, nf = f->n_fast;
    int64_t now = r->base.put_time_s;
    uint64_t crmask = 0;
    char *at;

    for (size_t j = 0; j < nf; j++) { /* entity, head and blob, each with its header */
        const struct state_put *p = &puts[f->fast_idx[j]];
        room += strlen(p->entity) + STATE_V3_HEAD_MAX + p->len + 48;
    }
    room += (f->nparts + 2 * CR_BUCKETS_MAX) * (pl + 96);
    if (cmd_reserve(c, 0, room, nf))
        return err_set(e, ERR_NOMEM, "redis: out of memory for a fast write of %zu puts", nf);
    for (size_t j = 0; j < nf; j++) {
        size_t i = f->fast_idx[j];
        c->keys[j] = (uint64_t)state_v3_bucket(puts[i].entity, r->buckets) << IDX_BITS | i;
        if (bases[i].partition < 0)
            crmask |= 1ull << (c->keys[j] >> IDX_BITS);
    }
    qsort(c->keys, nf, sizeof(*c->keys), cmp_u64);
    at = resp_cmd(c->strs, 1, "MULTI");
    f->ncmds = 0;
    for (size_t j = 0; j < nf;) {
        uint64_t b = c->keys[j] >> IDX_BITS;
        size_t k = j;
        while (k < nf && c->keys[k] >> IDX_BITS == b)
            k++;
        at = resp_cmd(at, 2 + 2 * (k - j), "HSET");
        at = resp_key(at, r->prefix, "ub:", (long long)b);
        for (; j < k; j++) {
            const struct state_put *p = &puts[c->keys[j] & 0xffffffffu];
            char head[STATE_V3_HEAD_MAX];
            /* the value's head alone: state_v3_value with no blob */
            size_t hl = state_v3_value(head, p->partition, p->offset, now, p->data, 0);
            at = resp_bulk(at, p->entity, strlen(p->entity));
            at = resp_uint(at, '$', hl + p->len);
            memcpy(at, head, hl);
            memcpy(at + hl, p->data, p->len);
            at += hl + p->len;
            *at++ = '\r';
            *at++ = '\n';
        }
        f->ncmds++;
    }
    for (size_t q = 0; q < f->nparts; q++) {
        int32_t p = f->parts[q];
        char num[24];
        if (f->role[p] != 1)
            continue;
        at = resp_cmd(at, 3, "SET");
        at = resp_key(at, r->prefix, "applied:", p);
        at = resp_bulk(at, num, state_put_ll(num, f->hi[p]));
        f->ncmds++;
    }
    for (uint32_t b = 0; b < CR_BUCKETS_MAX; b++) {
        if (!(crmask >> b & 1))
            continue;
        at = resp_cmd(at, 2, "INCR");
        at = resp_key(at, r->prefix, "cr:", b);
        f->ncmds++;
    }
    at = resp_cmd(at, 1, "EXEC");
    if (redisAppendFormattedCommand(rc_ctx(r->rc), c->strs, (size_t)(at - c->strs)) != REDIS_OK)
        return lost(r, "MULTI", "", e);
    return ERR_OK;
}

int state_fast_begin(struct state_redis *r, size_t n, const struct state_put *puts, int *used,
                     struct err *e)
{
    struct state_fast *f = &r->fast;
    const struct state_base *bases = r->base.put_bases;
    int rd = f->rd_valid, rc;
    uint64_t crmask;

    *used = 0;
    f->sent = 0;
    f->rd_valid = 0; /* a read serves the one write after it */
    if (!f->enabled || r->layout != 3 || !bases || !f->stb_known || n == 0 ||
        r->buckets > CR_BUCKETS_MAX || r->base.moved_unknown)
        return ERR_OK;
    if (state_v3_chunk_len(&r->v3, puts, n, n) != n) /* an entity twice: the script's chunks */
        return ERR_OK;
    int32_t maxp = 0;
    for (size_t i = 0; i < n; i++) {
        if (puts[i].partition < 0 || puts[i].partition > PARTITION_MAX)
            return ERR_OK;
        maxp = puts[i].partition > maxp ? puts[i].partition : maxp;
    }
    if (grow_puts(f, n) || grow_parts(f, (size_t)maxp + 1))
        return ERR_OK; /* out of memory: the script */
    rc = ERR_OK;
    if (plan(r, n, puts, bases, rd, &crmask) == 0)
        goto out;
    if ((rc = check(r, n, puts, bases, crmask, e)))
        goto out;
    f->n_fast = f->n_slow = 0;
    for (size_t i = 0; i < n; i++) {
        if (f->role[puts[i].partition] == 1) {
            f->fast_idx[f->n_fast++] = i;
        } else {
            f->slow_idx[f->n_slow] = i;
            f->slow_puts[f->n_slow] = puts[i];
            f->slow_bases[f->n_slow++] = bases[i];
        }
    }
    if (f->n_fast && g_hook)
        g_hook(g_hook_opaque);
    if (f->n_fast) {
        rc = send_multi(r, puts, bases, e);
        f->sent = 2;
    } else {
        static const char *unwatch[] = {"UNWATCH"};
        static const size_t len[] = {7};
        if (redisAppendCommandArgv(rc_ctx(r->rc), 1, unwatch, len) != REDIS_OK)
            rc = lost(r, "UNWATCH", "", e);
        f->sent = 1;
    }
    if (rc == ERR_OK) {
        *used = 1;
        f->orig = puts;
        f->orig_bases = bases;
        f->orig_n = n;
    }
out:
    for (size_t k = 0; k < f->nparts; k++)
        f->role[f->parts[k]] = 0;
    f->nparts = 0;
    return rc;
}

/* Reads the replies of send_multi (or UNWATCH): *aborted when EXEC found a
 * watched key changed (nothing of it was written). */
int state_fast_end(struct state_redis *r, int *aborted, struct err *e)
{
    struct state_fast *f = &r->fast;
    redisReply *rep = NULL;
    int rc = ERR_OK;

    *aborted = 0;
    for (size_t k = 0; k < (f->sent == 2 ? f->ncmds + 1 : 1); k++) { /* MULTI, QUEUED... */
        if (redisGetReply(rc_ctx(r->rc), (void **)&rep) != REDIS_OK || !rep)
            return lost(r, "EXEC", "", e);
        if (rep->type == REDIS_REPLY_ERROR && rc == ERR_OK)
            rc = err_set(e, ERR_IO, "redis MULTI of a fast write: %s", rep->str);
        freeReplyObject(rep);
    }
    if (f->sent != 2)
        return rc;
    if (redisGetReply(rc_ctx(r->rc), (void **)&rep) != REDIS_OK || !rep)
        return lost(r, "EXEC", "", e);
    if (rep->type == REDIS_REPLY_NIL) {
        *aborted = 1;
        f->n_aborts++;
    } else if (rep->type == REDIS_REPLY_ARRAY) {
        /* An error inside (a bucket that is not a hash) leaves the other
         * commands applied: the batch is reported failed and re-applied;
         * its offsets are then below applied:{p}, so the script reads each
         * user and writes what is missing. */
        for (size_t i = 0; i < rep->elements && rc == ERR_OK; i++)
            if (rep->element[i]->type == REDIS_REPLY_ERROR)
                rc = err_set(e, rc_reply_code(rep->element[i]->str), "redis EXEC (%s): %s",
                             f->orig[f->fast_idx[0]].entity, rep->element[i]->str);
    } else if (rc == ERR_OK) {
        rc = err_set(e, ERR_IO, "redis EXEC: %s",
                     rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
    }
    freeReplyObject(rep);
    return rc;
}

void state_fast_merge(struct state_redis *r, int *applied, int aborted)
{
    struct state_fast *f = &r->fast;

    for (size_t j = 0; j < f->n_slow; j++)
        applied[f->slow_idx[j]] = f->slow_applied[j];
    f->n_slow_puts += f->n_slow;
    if (aborted)
        return;
    for (size_t j = 0; j < f->n_fast; j++)
        applied[f->fast_idx[j]] = STATE_PUT_WRITTEN;
    f->n_fast_puts += f->n_fast;
    r->base.fast_puts += f->n_fast;
}

void state_fast_requeue(struct state_redis *r)
{
    struct state_fast *f = &r->fast;

    for (size_t j = 0; j < f->n_fast; j++) {
        size_t i = f->fast_idx[j];
        f->slow_idx[j] = i;
        f->slow_puts[j] = f->orig[i];
        f->slow_bases[j] = f->orig_bases[i];
    }
    f->n_slow = f->n_fast;
    f->n_fast = 0;
}
