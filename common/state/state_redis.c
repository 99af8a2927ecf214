/* common/state/state_redis.c: the Redis state backend (hiredis 0.14, blocking).
 *
 * Layout (state_layout.c): key <prefix>u:{<entity>} holds the blob and the
 * (partition, offset) of the last applied event: layout 2, a string
 * "<p>:<o>|<blob>", or in a store written before, layout 1, a hash with
 * fields s, p and o, or layout 3 (state_bucket.c), a field of a hash bucket;
 * <prefix>applied:
 * {<partition>} holds the highest offset applied for that partition (read by
 * zombie fencing). Reads are one MGET per chunk (layout 1: pipelined HMGET);
 * writes are one EVALSHA of a Lua
 * script per chunk of up to PUT_CHUNK entities, so the offset check and
 * the write are atomic per key, and the per-call cost of a script (and the
 * fencing and applied-offset keys) is paid per chunk, not per entity.
 *
 * Fencing (state.h): <prefix>epoch:{<partition>} holds the newest owner's
 * epoch. Claims are INCRs sent ahead of the next read or write; the script
 * refuses a put whose epoch is below the stored one. A stored epoch below
 * the put's (or none) means Redis lost its data (restart without
 * persistence): the put re-establishes its epoch rather than being refused
 * for ever, which is the best a store without the old value can do.
 *
 * hiredis 0.14 neither reconnects nor re-authenticates: on any I/O error the
 * context is freed and the next call connects again (once), sends AUTH and
 * reloads the script. Lua numbers are doubles: offsets are compared exactly
 * up to 2^53, far beyond any Kafka offset.
 */
#include "state_backend.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "log.h"
#include "metrics.h"
#include "redis_cluster.h"
#include "redis_conn.h"
#include "state_redis_priv.h"

/* ---- connection (common/io/redis_conn.h: connect, AUTH, SIGPIPE) ---- */

#define sigpipe_guard rc_sigpipe
#define sigpipe_block rc_sigpipe_block
#define sigpipe_restore rc_sigpipe_restore

static void drop(struct state_redis *r)
{
    rc_drop(r->rc);
}

/* The connection is unusable (I/O error, timeout, pipeline out of step):
 * free it and report ERR_RETRY; the next call reconnects. */
int state_redis_lost(struct state_redis *r, const char *cmd, const char *key, struct err *e)
{
    char what[160];

    snprintf(what, sizeof(what), "%s%s%.100s", cmd, *key ? " " : "", key);
    return rc_lost(r->rc, what, e);
}

#define lost state_redis_lost

static int reply_error_code(const char *msg)
{
    return rc_reply_code(msg);
}

/* One command outside a pipeline (argv: NUL-terminated strings); *out gets
 * a reply that is not an error reply. On an error reply the connection is
 * dropped too: the next call starts from a clean, authenticated one. */
static int simple_cmd(struct state_redis *r, const char *what, int argc, const char **argv,
                      redisReply **out, struct err *e)
{
    redisReply *rep = redisCommandArgv(rc_ctx(r->rc), argc, argv, NULL);

    if (!rep)
        return lost(r, what, "", e);
    if (rep->type == REDIS_REPLY_ERROR) {
        int code = reply_error_code(rep->str);
        err_set(e, code, "redis %s (%s:%d): %s", what, r->host, r->port, rep->str);
        freeReplyObject(rep);
        drop(r);
        return code;
    }
    *out = rep;
    return ERR_OK;
}

static int load_one(struct state_redis *r, const char *script, char *sha, struct err *e)
{
    const char *argv[] = {"SCRIPT", "LOAD", script};
    redisReply *rep = NULL;
    int rc = simple_cmd(r, "SCRIPT LOAD", 3, argv, &rep, e);

    if (rc)
        return rc;
    if (rep->type != REDIS_REPLY_STRING || rep->len != 40) {
        freeReplyObject(rep);
        drop(r);
        return err_set(e, ERR_IO, "redis SCRIPT LOAD (%s:%d): unexpected reply", r->host, r->port);
    }
    memcpy(sha, rep->str, 40);
    sha[40] = '\0';
    freeReplyObject(rep);
    return ERR_OK;
}

static int load_script(struct state_redis *r, struct err *e)
{
    const char *put = r->layout == 1   ? state_redis_put_script
                      : r->layout == 2 ? state_redis_put_script_v2
                                       : state_redis_put_script_v3;
    int rc = load_one(r, put, r->sha, e);

    if (rc == ERR_OK && r->layout == 3)
        rc = load_one(r, state_redis_sweep_script_v3, r->sha_sweep, e);
    return rc;
}

/* ---- a store that lost its data (state.h) ---- */

/* GET marker: seen or not; then the loss recorded when it is missing after
 * it was seen (or data is expected), the marker written again, and the flag
 * read back. A store without the marker that nobody expects data in is a
 * first start: the marker is written with the first put (put_end). Plain
 * commands on the connection (nothing else in flight). */
/* GET marker and EXISTS state_lost, pipelined: the worker checks once a
 * batch, and two round trips were a third of a small batch's turn (issue
 * 19: latency). *missing: no marker; *flag: the loss flag is set. */
static int marker_and_flag(struct state_redis *r, const char *mk, const char *lk, int *missing,
                           int *flag, struct err *e)
{
    const char *get[] = {"GET", mk}, *ex[] = {"EXISTS", lk};
    redisContext *c = rc_ctx(r->rc);
    redisReply *rep[2] = {NULL, NULL};
    int rc = ERR_OK;

    if (redisAppendCommandArgv(c, 2, get, NULL) != REDIS_OK ||
        redisAppendCommandArgv(c, 2, ex, NULL) != REDIS_OK)
        return lost(r, "GET marker", "", e);
    for (int k = 0; k < 2; k++)
        if (redisGetReply(c, (void **)&rep[k]) != REDIS_OK || !rep[k]) {
            if (rep[0])
                freeReplyObject(rep[0]);
            return lost(r, k ? "EXISTS state_lost" : "GET marker", "", e);
        }
    for (int k = 0; k < 2 && !rc; k++)
        if (rep[k]->type == REDIS_REPLY_ERROR) {
            rc = err_set(e, reply_error_code(rep[k]->str), "redis %s (%s:%d): %s",
                         k ? "EXISTS state_lost" : "GET marker", r->host, r->port, rep[k]->str);
            drop(r);
        }
    *missing = rep[0]->type == REDIS_REPLY_NIL;
    *flag = rep[1]->type == REDIS_REPLY_INTEGER && rep[1]->integer > 0;
    freeReplyObject(rep[0]);
    freeReplyObject(rep[1]);
    return rc;
}

static int marker_check(struct state_redis *r, int expect_data, int *lost_now, struct err *e)
{
    char mk[PREFIX_MAX + 16], lk[PREFIX_MAX + 16], now[32], px[32];
    redisReply *rep = NULL;
    int rc, missing = 0, flag = 0, found = 0;

    snprintf(mk, sizeof(mk), "%smarker", r->prefix);
    snprintf(lk, sizeof(lk), "%sstate_lost", r->prefix);
    snprintf(now, sizeof(now), "%lld", (long long)time(NULL) * 1000);
    snprintf(px, sizeof(px), "%lld", r->lost_flag_ms);
    if ((rc = marker_and_flag(r, mk, lk, &missing, &flag, e)))
        return rc;
    if (missing && (r->marker_seen || expect_data)) {
        const char *set_lost[] = {"SET", lk, now, "PX", px};
        if ((rc = simple_cmd(r, "SET state_lost", r->lost_flag_ms > 0 ? 5 : 3, set_lost, &rep,
                             e)))
            return rc;
        freeReplyObject(rep);
        r->base.losses++;
        *lost_now = found = 1;
        metrics_note_state_lost();
        log_error("state store %s:%d lost its data (%smarker missing%s): every aggregate "
                  "restarted empty; predictions are flagged until acknowledged "
                  "(streamml config ack-state-loss, or DEL %s)",
                  r->host, r->port, r->prefix,
                  r->marker_seen ? " since this worker saw it" : ", committed offsets exist", lk);
    }
    if (missing && (r->marker_seen || expect_data)) {
        const char *set_mk[] = {"SET", mk, now, "NX"};
        char layk[PREFIX_MAX + 16], lv[24];
        const char *set_l[] = {"SET", layk, lv, "NX"};
        if ((rc = simple_cmd(r, "SET marker", 4, set_mk, &rep, e)))
            return rc;
        freeReplyObject(rep);
        /* A store flushed under a live connection lost its layout key too:
         * set again, so that a later connect does not take the marker for
         * a store written before layouts (layout 1). */
        snprintf(layk, sizeof(layk), "%slayout", r->prefix);
        if (r->layout == 3)
            snprintf(lv, sizeof(lv), "3:%u", (unsigned)r->buckets);
        else
            snprintf(lv, sizeof(lv), "%d", r->layout);
        if (r->layout > 0 && (rc = simple_cmd(r, "SET layout", 4, set_l, &rep, e)))
            return rc;
        if (r->layout > 0)
            freeReplyObject(rep);
    }
    if (!missing || expect_data)
        r->marker_seen = 1;
    /* a loss just found has just set the flag (read before it was set) */
    r->base.lost_flag = flag || found;
    metrics_set_state_lost_flag(r->base.lost_flag);
    return ERR_OK;
}

/* The store's layout (state_layout.c): <prefix>layout, set once (NX) when
 * missing: 1 when the store already holds data (its marker), else 2. Asked
 * at every connect (a restarted or flushed store may be a new one). */
static int layout_check(struct state_redis *r, struct err *e)
{
    char lk[PREFIX_MAX + 16], mk[PREFIX_MAX + 16];
    const char *get[] = {"GET", lk}, *ex[] = {"EXISTS", mk};
    char l3[24];
    const char *set[] = {"SET", lk, "2", "NX"};
    redisReply *rep = NULL;
    int rc;

    snprintf(lk, sizeof(lk), "%slayout", r->prefix);
    snprintf(mk, sizeof(mk), "%smarker", r->prefix);
    for (int pass = 0; pass < 2; pass++) {
        if ((rc = simple_cmd(r, "GET layout", 2, get, &rep, e)))
            return rc;
        if (rep->type == REDIS_REPLY_STRING &&
            (r->buckets = (uint32_t)state_v3_buckets_of(rep->str, rep->len)) != (uint32_t)-1) {
            freeReplyObject(rep); /* layout 3: "3:<buckets>" (state_bucket.c) */
            r->layout = 3;
            return ERR_OK;
        }
        if (rep->type == REDIS_REPLY_STRING || pass == 1) {
            r->layout = state_layout_decide(rep->type == REDIS_REPLY_STRING ? rep->str : NULL,
                                            rep->len, 0);
            if (r->layout < 0)
                err_set(e, ERR_CONFIG,
                        "redis (%s:%d): %slayout is '%.20s': this build reads state layouts 1, "
                        "2 and 3:<buckets> only (a newer version wrote this store?)",
                        r->host, r->port, r->prefix, rep->str);
            freeReplyObject(rep);
            if (r->layout < 0) {
                drop(r);
                return ERR_CONFIG;
            }
            return ERR_OK;
        }
        freeReplyObject(rep);
        if ((rc = simple_cmd(r, "EXISTS marker", 2, ex, &rep, e)))
            return rc;
        snprintf(l3, sizeof(l3), "3:%u", (unsigned)r->buckets_new);
        set[2] = rep->type == REDIS_REPLY_INTEGER && rep->integer > 0 ? "1"
                 : r->layout_new == 3                                  ? l3
                                                                       : "2";
        freeReplyObject(rep);
        if ((rc = simple_cmd(r, "SET layout", 4, set, &rep, e)))
            return rc;
        freeReplyObject(rep);
    }
    return ERR_OK;
}

/* rc_connect authenticates after every connect; the script is reloaded
 * too (a restarted server has lost it). */
int state_redis_ensure(struct state_redis *r, struct err *e)
{
    int rc, lost_now = 0;

    if (rc_ctx(r->rc))
        return ERR_OK;
    if ((rc = rc_connect(r->rc, e)) || (rc = layout_check(r, e)))
        return rc;
    /* A restarted server always means a reconnect: the marker is checked
     * here, whatever the caller does. */
    if ((rc = marker_check(r, r->expect_pending, &lost_now, e)))
        return rc;
    r->lost_pending |= lost_now;
    return load_script(r, e);
}

/* ---- keys and replies ---- */

/* e may be NULL, as for every err_set. */
static void copy_err(struct err *e, const struct err *tmp)
{
    if (e)
        *e = *tmp;
}

/* <prefix>u:{<entity>}: lengths are bounded (PREFIX_MAX, STATE_ENTITY_MAX,
 * checked before any call), so KEY_MAX always holds it; copied rather than
 * formatted, as it is built for every entity of every batch. */
static size_t entity_key(const struct state_redis *r, const char *entity, char *buf)
{
    size_t pl = strlen(r->prefix), el = strnlen(entity, STATE_ENTITY_MAX);

    memcpy(buf, r->prefix, pl);
    memcpy(buf + pl, "u:{", 3);
    memcpy(buf + pl + 3, entity, el);
    buf[pl + 3 + el] = '}';
    buf[pl + 4 + el] = '\0';
    return pl + 4 + el;
}

static size_t epoch_key(const struct state_redis *r, int32_t partition, char *buf)
{
    return (size_t)snprintf(buf, KEY_MAX, "%sepoch:{%d}", r->prefix, (int)partition);
}

static int64_t held_epoch(const struct state_redis *r, int32_t partition)
{
    return partition >= 0 && (size_t)partition < r->n_epochs ? r->epochs[partition] : 0;
}

/* A decimal integer field of an HMGET reply, checked for range. */
static int reply_ll(const redisReply *x, long long lo, long long hi, long long *v)
{
    char buf[32], *end;

    if (x->type != REDIS_REPLY_STRING || x->len == 0 || x->len >= sizeof(buf))
        return -1;
    memcpy(buf, x->str, x->len);
    buf[x->len] = '\0';
    errno = 0;
    *v = strtoll(buf, &end, 10);
    if (errno || *end || *v < lo || *v > hi)
        return -1;
    return 0;
}

/* The common cases first; the key is formatted only for an error message. */
static int parse_get(const redisReply *rep, struct state_blob *b, const struct state_redis *r,
                     const char *entity, struct err *e)
{
    const redisReply *blob = NULL;
    char key[KEY_MAX];
    long long p, o;

    b->len = 0;
    b->partition = -1;
    b->offset = -1;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 3) {
        blob = rep->element[0];
        if (blob->type == REDIS_REPLY_NIL)
            return ERR_OK; /* nothing stored */
        if (blob->type == REDIS_REPLY_STRING && blob->len > 0 && blob->len <= STATE_BLOB_MAX &&
            !reply_ll(rep->element[1], INT32_MIN, INT32_MAX, &p) &&
            !reply_ll(rep->element[2], LLONG_MIN, LLONG_MAX, &o)) {
            memcpy(b->data, blob->str, blob->len);
            b->len = blob->len;
            b->partition = (int32_t)p;
            b->offset = o;
            return ERR_OK;
        }
    }
    entity_key(r, entity, key);
    if (rep->type == REDIS_REPLY_ERROR)
        return err_set(e, reply_error_code(rep->str), "redis HMGET %s: %s", key, rep->str);
    if (!blob)
        return err_set(e, ERR_DECODE, "redis HMGET %s: unexpected reply type %d", key, rep->type);
    if (blob->type != REDIS_REPLY_STRING || blob->len == 0 || blob->len > STATE_BLOB_MAX)
        return err_set(e, ERR_DECODE, "redis HMGET %s: field s is not a blob of 1..%d bytes", key,
                       STATE_BLOB_MAX);
    return err_set(e, ERR_DECODE, "redis HMGET %s: fields p/o are not integers", key);
}

/* ---- fencing ---- */

static int grow_epochs(struct state_redis *r, size_t want, struct err *e)
{
    size_t n = r->n_epochs ? r->n_epochs : 16;
    int64_t *ep;
    unsigned char *cl;

    while (n < want)
        n *= 2;
    ep = realloc(r->epochs, n * sizeof(*ep));
    if (ep)
        r->epochs = ep;
    cl = ep ? realloc(r->claim, n) : NULL;
    if (!cl)
        return err_set(e, ERR_NOMEM, "redis: out of memory for %zu partition epochs", n);
    r->claim = cl;
    memset(r->epochs + r->n_epochs, 0, (n - r->n_epochs) * sizeof(*ep));
    memset(r->claim + r->n_epochs, 0, n - r->n_epochs);
    r->n_epochs = n;
    return ERR_OK;
}

static int redis_fence(struct state *s, int32_t partition, struct err *e)
{
    struct state_redis *r = (struct state_redis *)s;

    if (partition > PARTITION_MAX)
        return err_set(e, ERR_INVALID, "redis: cannot fence partition %d (max %d)",
                       (int)partition, PARTITION_MAX);
    if ((size_t)partition >= r->n_epochs && grow_epochs(r, (size_t)partition + 1, e))
        return ERR_NOMEM;
    if (!r->claim[partition])
        r->n_claims++;
    r->claim[partition] = 1;
    return ERR_OK;
}

static int64_t redis_epoch(const struct state *s, int32_t partition)
{
    return held_epoch((const struct state_redis *)s, partition);
}

/* Sends the pending claims (pipelined INCRs) on a connected handle. A claim
 * whose reply was not read stays pending: claiming twice only skips an
 * epoch. */
static int send_claims(struct state_redis *r, struct err *e)
{
    char key[KEY_MAX];

    for (size_t p = 0; p < r->n_epochs && r->n_claims; p++) {
        if (r->claim[p] && redisAppendCommand(rc_ctx(r->rc), "INCR %b", key,
                                              epoch_key(r, (int32_t)p, key)) != REDIS_OK)
            return lost(r, "INCR", key, e);
    }
    for (size_t p = 0; p < r->n_epochs && r->n_claims; p++) {
        redisReply *rep = NULL;
        if (!r->claim[p])
            continue;
        epoch_key(r, (int32_t)p, key);
        if (redisGetReply(rc_ctx(r->rc), (void **)&rep) != REDIS_OK || !rep)
            return lost(r, "INCR", key, e);
        if (rep->type != REDIS_REPLY_INTEGER || rep->integer <= 0) {
            int code = rep->type == REDIS_REPLY_ERROR ? reply_error_code(rep->str) : ERR_DECODE;
            err_set(e, code, "redis INCR %s: %s", key,
                    rep->type == REDIS_REPLY_ERROR ? rep->str : "not a positive integer");
            freeReplyObject(rep);
            drop(r); /* replies of later claims are still unread */
            return code;
        }
        r->epochs[p] = rep->integer;
        r->claim[p] = 0;
        r->n_claims--;
        freeReplyObject(rep);
    }
    return ERR_OK;
}

/* Connects if needed, then claims what state_fence asked for. */
static int ready(struct state_redis *r, struct err *e)
{
    int rc = state_redis_ensure(r, e);

    if (rc == ERR_OK && r->n_claims)
        rc = send_claims(r, e);
    return rc;
}

/* ---- operations ---- */

static int get_pipelined(struct state_redis *r, size_t n, const char *const *entities,
                         struct state_blob *out, struct err *e)
{
    static const char *const fields[] = {"s", "p", "o"};
    const char *argv[5] = {"HMGET", NULL, fields[0], fields[1], fields[2]};
    size_t argvlen[5] = {5, 0, 1, 1, 1};
    char key[KEY_MAX];
    int first = ERR_OK;

    for (size_t i = 0; i < n; i++) {
        argv[1] = key;
        argvlen[1] = entity_key(r, entities[i], key);
        if (redisAppendCommandArgv(rc_ctx(r->rc), 5, argv, argvlen) != REDIS_OK)
            return lost(r, "HMGET", key, e);
    }
    /* Every reply is read even after a bad one, to keep the pipeline in
     * step; the first error is the one reported. */
    for (size_t i = 0; i < n; i++) {
        redisReply *rep = NULL;
        struct err tmp;
        if (redisGetReply(rc_ctx(r->rc), (void **)&rep) != REDIS_OK || !rep) {
            entity_key(r, entities[i], key);
            return lost(r, "HMGET", key, e);
        }
        if (parse_get(rep, &out[i], r, entities[i], &tmp) && first == ERR_OK) {
            first = tmp.code;
            copy_err(e, &tmp);
        }
        freeReplyObject(rep);
    }
    return first;
}

static const char *args_key(struct put_args *a, size_t *len, const struct state_redis *r,
                            const char *entity);

/* Layout 2, a chunk of up to PUT_CHUNK entities: one MGET. MGET answers
 * nil for a key of another type as for an absent one, so when any nil
 * entity exists (EXISTS), those are read again with GET, which names a
 * WRONGTYPE key: a hash is refused, never read as "nothing stored". */
static int get_chunk_v2(struct state_redis *r, size_t n, const char *const *entities,
                        struct state_blob *out, struct err *e)
{
    struct put_args *a = &r->pa;
    redisReply *rep = NULL, *ex = NULL;
    char key[KEY_MAX];
    size_t nnil = 0;
    int first = ERR_OK;

    if (state_args_reserve(a, n + 1, n * KEY_MAX + 16, 0))
        return err_set(e, ERR_NOMEM, "redis: out of memory for a read of %zu keys", n);
    a->used = 0;
    a->argv[0] = "MGET";
    a->argvlen[0] = 4;
    for (size_t i = 0; i < n; i++)
        a->argv[1 + i] = args_key(a, &a->argvlen[1 + i], r, entities[i]);
    rep = redisCommandArgv(rc_ctx(r->rc), (int)n + 1, a->argv, a->argvlen);
    if (!rep)
        return lost(r, "MGET", a->argv[1], e);
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != n) {
        int code = rep->type == REDIS_REPLY_ERROR ? reply_error_code(rep->str) : ERR_DECODE;
        err_set(e, code, "redis MGET %s (+%zu): %s", a->argv[1], n - 1,
                rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
        freeReplyObject(rep);
        return code;
    }
    for (size_t i = 0; i < n; i++) {
        const redisReply *x = rep->element[i];
        out[i].len = 0;
        out[i].partition = -1;
        out[i].offset = -1;
        if (x->type == REDIS_REPLY_NIL) {
            a->argv[1 + nnil] = a->argv[1 + i]; /* in place: nnil <= i */
            a->argvlen[1 + nnil++] = a->argvlen[1 + i];
        } else if ((x->type != REDIS_REPLY_STRING || state_v2_parse(x->str, x->len, &out[i])) &&
                   first == ERR_OK) {
            first = err_set(e, ERR_IO,
                            "redis GET %s: WRONGTYPE the key holds a string that is not a state "
                            "value of layout 2 (<partition>:<offset>|<blob>)",
                            a->argv[1 + i]);
        }
    }
    freeReplyObject(rep);
    if (nnil == 0)
        return first;
    a->argv[0] = "EXISTS";
    a->argvlen[0] = 6;
    ex = redisCommandArgv(rc_ctx(r->rc), (int)nnil + 1, a->argv, a->argvlen);
    if (!ex)
        return lost(r, "EXISTS", a->argv[1], e);
    if (ex->type == REDIS_REPLY_INTEGER && ex->integer == 0) {
        freeReplyObject(ex);
        return first;
    }
    freeReplyObject(ex);
    for (size_t i = 0; i < n; i++) { /* rare: one by one */
        const char *get[] = {"GET", key};
        entity_key(r, entities[i], key);
        if (out[i].len)
            continue;
        rep = redisCommandArgv(rc_ctx(r->rc), 2, get, NULL);
        if (!rep)
            return lost(r, "GET", key, e);
        if (rep->type == REDIS_REPLY_ERROR && first == ERR_OK)
            first = err_set(e, reply_error_code(rep->str), "redis GET %s: %s", key, rep->str);
        else if (rep->type == REDIS_REPLY_STRING && state_v2_parse(rep->str, rep->len, &out[i]) &&
                 first == ERR_OK)
            first = err_set(e, ERR_IO, "redis GET %s: WRONGTYPE not a state value", key);
        freeReplyObject(rep);
    }
    return first;
}

static int get_v2(struct state_redis *r, size_t n, const char *const *entities,
                  struct state_blob *out, struct err *e)
{
    int first = ERR_OK;

    for (size_t c = 0; c < n; c += PUT_CHUNK) {
        struct err tmp = {0};
        size_t k = n - c < PUT_CHUNK ? n - c : PUT_CHUNK;
        int rc = r->layout == 3 ? state_v3_get_chunk(r, k, entities + c, out + c, &tmp)
                                : get_chunk_v2(r, k, entities + c, out + c, &tmp);
        if (rc && (!rc_ctx(r->rc) || first == ERR_OK)) {
            first = rc;
            copy_err(e, &tmp);
        }
        if (rc && !rc_ctx(r->rc))
            break;
    }
    return first;
}

int64_t state_redis_now_s(void)
{
    return (int64_t)time(NULL);
}

int state_redis_grow_order(struct state_redis *r, size_t n)
{
    if (n <= r->cap_order)
        return ERR_OK;
    size_t *o = realloc(r->order, n * sizeof(*o)), *c = o ? realloc(r->chunks, n * sizeof(*c))
                                                          : NULL;
    if (o)
        r->order = o;
    if (!c)
        return ERR_NOMEM;
    r->chunks = c;
    r->cap_order = n;
    return ERR_OK;
}

static int redis_get_many(struct state *s, size_t n, const char *const *entities,
                          struct state_blob *out, struct err *e)
{
    struct state_redis *r = (struct state_redis *)s;
    struct sigpipe_guard g;
    int rc;

    sigpipe_block(&g);
    rc = ready(r, e);
    if (rc == ERR_OK && r->layout == 3) /* the counters a fast create checks */
        rc = state_fast_read_begin(r, n, e);
    if (rc == ERR_OK && r->layout >= 2)
        rc = get_v2(r, n, entities, out, e);
    else if (rc == ERR_OK)
        rc = get_pipelined(r, n, entities, out, e);
    if (rc != ERR_OK) /* a partial read proves nothing absent */
        r->fast.rd_valid = 0;
    sigpipe_restore(&g);
    return rc;
}

/* ---- writes: one EVALSHA per chunk of puts ---- */

/* Appends <prefix>u:{<entity>} (entity_key). */
static const char *args_key(struct put_args *a, size_t *len, const struct state_redis *r,
                            const char *entity)
{
    char *at = a->strs + a->used;

    *len = entity_key(r, entity, at);
    a->used += *len + 1;
    return at;
}

/* Slot of partition p among the chunk's first *m slots, adding it. Chunks
 * hold few partitions (one consumer's share), so a scan is enough. */
static int slot_of(struct put_args *a, size_t *m, int32_t p)
{
    for (size_t j = 0; j < *m; j++)
        if (a->slot_part[j] == p)
            return (int)j;
    a->slot_part[*m] = p;
    return (int)(*m)++;
}

/* Appends EVALSHA for puts[0..k), the batch's puts first.. (see put_script
 * for the layout; their bases are put_bases[first..]). */
static int append_chunk(struct state_redis *r, const struct state_put *puts, size_t first,
                        size_t k, struct err *e)
{
    struct put_args *a = &r->pa;

    if (r->layout == 3) /* state_bucket.c */
        return state_v3_append(r, puts, first, k, e);
    size_t m = 0, at, nkeys, nargv = 3 + 3 * k + 3 + 6 * k; /* m <= k */

    size_t vals = 0; /* layout 2: the values are built here */

    for (size_t i = 0; r->layout == 2 && i < k; i++)
        vals += STATE_V2_HEAD_MAX + puts[i].len;
    /* Room for the worst case: every put on its own partition. */
    if (state_args_reserve(a, nargv, k * (3 * KEY_MAX + 128) + 128 + vals, k))
        return err_set(e, ERR_NOMEM, "redis: out of memory for a batch of %zu puts", k);
    a->used = 0;
    for (size_t i = 0; i < k; i++)
        a->slot[i] = slot_of(a, &m, puts[i].partition);
    nkeys = k + 2 * m;
    a->argv[0] = "EVALSHA";
    a->argvlen[0] = 7;
    a->argv[1] = r->sha;
    a->argvlen[1] = 40;
    a->argv[2] = state_args_str(a, &a->argvlen[2], "%zu", nkeys);
    for (size_t i = 0; i < k; i++)
        a->argv[3 + i] = args_key(a, &a->argvlen[3 + i], r, puts[i].entity);
    at = 3 + k;
    for (size_t j = 0; j < m; j++, at += 2) {
        a->argv[at] =
            state_args_str(a, &a->argvlen[at], "%sapplied:{%d}", r->prefix, (int)a->slot_part[j]);
        a->argv[at + 1] =
            state_args_str(a, &a->argvlen[at + 1], "%sepoch:{%d}", r->prefix, (int)a->slot_part[j]);
    }
    a->argv[at] = state_args_str(a, &a->argvlen[at], "%zu", k);
    a->argv[at + 1] = state_args_str(a, &a->argvlen[at + 1], "%zu", m);
    a->argv[at + 2] = state_args_str(a, &a->argvlen[at + 2], "%lld", r->ttl_ms);
    at += 3;
    for (size_t j = 0; j < m; j++, at += 2) {
        a->argv[at] = state_args_str(a, &a->argvlen[at], "%d", (int)a->slot_part[j]);
        a->argv[at + 1] =
            state_args_str(a, &a->argvlen[at + 1], "%lld", (long long)held_epoch(r, a->slot_part[j]));
    }
    for (size_t i = 0; i < k; i++, at += 4) {
        if (r->layout == 2) {
            char *v = a->strs + a->used;
            a->argvlen[at] = state_v2_value(v, puts[i].partition, puts[i].offset, puts[i].data,
                                            puts[i].len);
            a->argv[at] = v;
            a->used += a->argvlen[at];
        } else {
            a->argv[at] = (const char *)puts[i].data;
            a->argvlen[at] = puts[i].len;
        }
        a->argv[at + 1] = state_args_int(a, &a->argvlen[at + 1], a->slot[i] + 1);
        a->argv[at + 2] = state_args_int(a, &a->argvlen[at + 2], (long long)puts[i].offset);
        const struct state_base *b = r->base.put_bases ? &r->base.put_bases[first + i] : NULL;
        if (!b || b->partition < 0) { /* no check / nothing stored */
            a->argv[at + 3] = b ? "-" : "";
            a->argvlen[at + 3] = b ? 1 : 0;
        } else {
            a->argv[at + 3] = state_args_str(a, &a->argvlen[at + 3], "%d:%lld", (int)b->partition,
                                       (long long)b->offset);
        }
    }
    if (redisAppendCommandArgv(rc_ctx(r->rc), (int)at, a->argv, a->argvlen) != REDIS_OK)
        return lost(r, "EVALSHA", a->argv[3], e); /* the chunk's first key */
    return ERR_OK;
}

/* Reads the reply of one chunk into applied[0..k): 0/1 from the script (0
 * also when fenced: counted), or -1 for every put when the server had lost
 * the script (NOSCRIPT: nothing was done). Returns the first error, named
 * by its entity's key. */
static int read_chunk(struct state_redis *r, const struct state_put *puts, size_t k, int *applied,
                      struct err *e)
{
    redisReply *rep = NULL;
    char key[KEY_MAX];
    int rc = ERR_OK;

    if (redisGetReply(rc_ctx(r->rc), (void **)&rep) != REDIS_OK || !rep) {
        entity_key(r, puts[0].entity, key);
        return lost(r, "EVALSHA", key, e);
    }
    for (size_t i = 0; i < k; i++)
        applied[i] =
            rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0 ? -1 : 0;
    if (rep->type == REDIS_REPLY_ERROR && applied[0] != -1) {
        entity_key(r, puts[0].entity, key);
        rc = err_set(e, reply_error_code(rep->str), "redis EVALSHA %s (+%zu): %s", key, k - 1,
                     rep->str);
    } else if (rep->type == REDIS_REPLY_ARRAY && rep->elements == k) {
        for (size_t i = 0; i < k; i++) {
            const redisReply *x = rep->element[i];
            if (x->type == REDIS_REPLY_INTEGER &&
                (x->integer == PUT_SKIPPED || x->integer == PUT_WRITTEN ||
                 x->integer == PUT_CONFLICT))
                applied[i] = (int)x->integer;
            else if (x->type == REDIS_REPLY_INTEGER && x->integer == PUT_FENCED)
                r->base.fenced++;
            else if (rc == ERR_OK) {
                entity_key(r, puts[i].entity, key);
                rc = x->type == REDIS_REPLY_ERROR
                         ? err_set(e, reply_error_code(x->str), "redis EVALSHA %s: %s", key, x->str)
                         : err_set(e, ERR_DECODE, "redis EVALSHA %s: unexpected reply type %d", key,
                                   x->type);
            }
        }
    } else if (rep->type != REDIS_REPLY_ERROR) {
        rc = err_set(e, ERR_DECODE, "redis EVALSHA: reply of type %d, %zu elements, %zu puts",
                     rep->type, rep->elements, k);
    }
    freeReplyObject(rep);
    return rc;
}

/* The chunk lengths of puts[0..n) (layout 3: no entity twice in a chunk,
 * so that a group's HMGET sees what is stored). */
static int plan_chunks(struct state_redis *r, size_t n, const struct state_put *puts,
                       struct err *e)
{
    if (state_redis_grow_order(r, n ? n : 1))
        return err_set(e, ERR_NOMEM, "redis: out of memory for a batch of %zu puts", n);
    r->nchunks = 0;
    for (size_t c = 0; c < n;) {
        size_t k = r->layout == 3 ? state_v3_chunk_len(&r->v3, puts + c, n - c, PUT_CHUNK)
                                  : (n - c < PUT_CHUNK ? n - c : PUT_CHUNK);
        r->chunks[r->nchunks++] = k;
        c += k;
    }
    return ERR_OK;
}

/* Appends the chunks of puts[0..n) (with retry: only those refused with
 * NOSCRIPT, whose applied[] are all -1). */
static int send_pass(struct state_redis *r, size_t n, const struct state_put *puts,
                     const int *applied, int retry, struct err *e)
{
    if (!retry && plan_chunks(r, n, puts, e))
        return ERR_NOMEM;
    for (size_t q = 0, c = 0; q < r->nchunks; c += r->chunks[q++]) {
        size_t k = r->chunks[q];
        if ((!retry || applied[c] == -1) && append_chunk(r, puts + c, c, k, e))
            return e ? e->code : ERR_RETRY;
    }
    return ERR_OK;
}

/* Reads the replies of what send_pass sent. Returns the first error; *nosc
 * counts the puts refused with NOSCRIPT. */
static int recv_pass(struct state_redis *r, size_t n, const struct state_put *puts, int *applied,
                     int retry, size_t *nosc, struct err *e)
{
    int first = ERR_OK;

    *nosc = 0;
    (void)n;
    for (size_t q = 0, c = 0; q < r->nchunks; c += r->chunks[q++]) {
        size_t k = r->chunks[q];
        struct err tmp;
        int rc;
        if (retry && applied[c] != -1)
            continue;
        rc = r->layout == 3 ? state_v3_read_chunk(r, puts + c, k, applied + c, r->order + c, &tmp)
                            : read_chunk(r, puts + c, k, applied + c, &tmp);
        if (rc && !rc_ctx(r->rc)) { /* connection gone: nothing more to read */
            copy_err(e, &tmp);
            return rc;
        }
        if (rc && first == ERR_OK) {
            first = rc;
            copy_err(e, &tmp);
        }
        *nosc += applied[c] == -1 ? k : 0;
    }
    return first;
}

/* Writes the output buffer out, so Redis works on the puts while the
 * caller does something else. */
static int flush_out(struct state_redis *r, const char *what, struct err *e)
{
    int done = 0;

    while (!done)
        if (redisBufferWrite(rc_ctx(r->rc), &done) != REDIS_OK)
            return lost(r, what, "", e);
    return ERR_OK;
}

static int redis_put_begin(struct state *s, size_t n, const struct state_put *puts, struct err *e)
{
    struct state_redis *r = (struct state_redis *)s;
    struct sigpipe_guard g;
    int rc;

    const struct state_base *keep = r->base.put_bases;
    int fast = 0;

    sigpipe_block(&g);
    rc = ready(r, e);
    r->base.put_time_s = state_redis_now_s(); /* at or before each chunk's stamp */
    if (rc == ERR_OK && r->layout == 3) /* state_fast.c: what needs no script */
        rc = state_fast_begin(r, n, puts, &fast, e);
    if (fast) {
        puts = r->fast.slow_puts;
        n = r->fast.n_slow;
        r->base.put_bases = r->fast.slow_bases;
    }
    if (rc == ERR_OK)
        rc = send_pass(r, n, puts, NULL, 0, e);
    r->base.put_bases = keep;
    if (rc == ERR_OK)
        rc = flush_out(r, "EVALSHA", e);
    if (rc && rc != ERR_RETRY && rc_ctx(r->rc))
        drop(r); /* e.g. out of memory half-way: commands may be buffered */
    sigpipe_restore(&g);
    r->fast.active = rc == ERR_OK && fast;
    r->inflight = rc ? NULL : puts;
    r->n_inflight = rc ? 0 : n;
    return rc;
}

/* The fast puts of a batch whose EXEC was aborted, through the script. */
static int fast_retry(struct state_redis *r, int *applied, struct err *e)
{
    size_t nosc = 0;
    int rc;

    state_fast_requeue(r);
    r->base.put_bases = r->fast.slow_bases;
    rc = send_pass(r, r->fast.n_slow, r->fast.slow_puts, NULL, 0, e);
    if (rc == ERR_OK)
        rc = flush_out(r, "EVALSHA", e);
    if (rc == ERR_OK)
        rc = recv_pass(r, r->fast.n_slow, r->fast.slow_puts, r->fast.slow_applied, 0, &nosc, e);
    if (rc == ERR_OK && nosc)
        rc = err_set(e, ERR_IO, "redis EVALSHA: script missing after a fast write");
    if (rc == ERR_OK)
        state_fast_merge(r, applied, 1);
    return rc;
}

static void write_marker(struct state_redis *r);

static int redis_put_end(struct state *s, int *applied, struct err *e)
{
    struct state_redis *r = (struct state_redis *)s;
    const struct state_put *puts = r->inflight;
    size_t n = r->n_inflight, nosc = 0;
    uint64_t fenced0 = r->base.fenced;
    struct sigpipe_guard g;
    const struct state_base *keep = r->base.put_bases;
    int fast = r->fast.active, aborted = 0, rc_fast = ERR_OK;
    int *out = fast ? r->fast.slow_applied : applied;
    struct err tmp = {0};
    int rc;

    r->inflight = NULL;
    r->n_inflight = 0;
    r->fast.active = 0;
    if (!rc_ctx(r->rc)) /* lost since begin */
        return err_set(e, ERR_RETRY, "redis EVALSHA (%s:%d): connection lost", r->host, r->port);
    sigpipe_block(&g);
    if (fast) { /* its replies come first; the script's are read even after an error */
        rc_fast = state_fast_end(r, &aborted, &tmp);
        r->base.put_bases = r->fast.slow_bases;
    }
    rc = rc_ctx(r->rc) ? recv_pass(r, n, puts, out, 0, &nosc, e) : rc_fast;
    if (rc_fast && (rc == ERR_OK || rc == rc_fast)) {
        rc = rc_fast;
        copy_err(e, &tmp);
    }
    if (rc == ERR_OK && nosc) {
        /* The script cache was emptied (SCRIPT FLUSH, a failover): load the
         * script again and resend only the chunks it refused, once. */
        rc = load_script(r, e);
        if (rc == ERR_OK)
            rc = send_pass(r, n, puts, out, 1, e);
        if (rc == ERR_OK)
            rc = recv_pass(r, n, puts, out, 1, &nosc, e);
        if (rc == ERR_OK && nosc)
            rc = err_set(e, ERR_IO, "redis EVALSHA: script missing again after SCRIPT LOAD");
    }
    if (rc == ERR_OK && fast)
        state_fast_merge(r, applied, aborted);
    if (rc == ERR_OK && fast && aborted) /* a watched counter moved: the script judges */
        rc = fast_retry(r, applied, e);
    r->base.put_bases = keep;
    if (rc == ERR_OK && !r->marker_seen && n)
        write_marker(r);
    r->sweep_puts += fast ? r->fast.orig_n : n;
    if (rc == ERR_OK && rc_ctx(r->rc))
        state_v3_sweep_paced(r);
    sigpipe_restore(&g);
    if (r->base.fenced > fenced0)
        log_warn("state: %llu write(s) fenced: a newer consumer owns their partition (this "
                 "handle was stalled past a rebalance); not applied",
                 (unsigned long long)(r->base.fenced - fenced0));
    return rc;
}

static int redis_ping(struct state *s, struct err *e)
{
    struct state_redis *r = (struct state_redis *)s;
    const char *argv[] = {"PING"};
    struct sigpipe_guard g;
    redisReply *rep = NULL;
    int rc;

    sigpipe_block(&g);
    rc = state_redis_ensure(r, e);
    if (rc == ERR_OK)
        rc = simple_cmd(r, "PING", 1, argv, &rep, e);
    if (rc == ERR_OK && (rep->type != REDIS_REPLY_STATUS || strcmp(rep->str, "PONG") != 0))
        rc = err_set(e, ERR_IO, "redis PING (%s:%d): unexpected reply", r->host, r->port);
    if (rep)
        freeReplyObject(rep);
    sigpipe_restore(&g);
    return rc;
}

/* The store holds data from now on: a later empty store is a loss. A
 * failure is left for the next put (the puts themselves were applied). */
static void write_marker(struct state_redis *r)
{
    char mk[PREFIX_MAX + 16], now[32];
    const char *argv[] = {"SET", mk, now, "NX"};
    struct err tmp = {0};
    redisReply *rep = NULL;

    snprintf(mk, sizeof(mk), "%smarker", r->prefix);
    snprintf(now, sizeof(now), "%lld", (long long)time(NULL) * 1000);
    if (simple_cmd(r, "SET marker", 4, argv, &rep, &tmp) == ERR_OK) {
        freeReplyObject(rep);
        r->marker_seen = 1;
    }
}

static int redis_check_lost(struct state *s, int expect_data, int *lost_now, struct err *e)
{
    struct state_redis *r = (struct state_redis *)s;
    struct sigpipe_guard g;
    int rc, was = rc_ctx(r->rc) != NULL;

    sigpipe_block(&g);
    r->expect_pending = expect_data;
    rc = state_redis_ensure(r, e);
    r->expect_pending = 0;
    if (rc == ERR_OK && was)
        rc = marker_check(r, expect_data, lost_now, e);
    *lost_now |= r->lost_pending;
    r->lost_pending = 0;
    sigpipe_restore(&g);
    return rc;
}

static int redis_ack_lost(struct state *s, struct err *e)
{
    struct state_redis *r = (struct state_redis *)s;
    char lk[PREFIX_MAX + 16];
    const char *argv[] = {"DEL", lk};
    struct sigpipe_guard g;
    redisReply *rep = NULL;
    int rc;

    snprintf(lk, sizeof(lk), "%sstate_lost", r->prefix);
    sigpipe_block(&g);
    rc = state_redis_ensure(r, e);
    if (rc == ERR_OK)
        rc = simple_cmd(r, "DEL state_lost", 2, argv, &rep, e);
    if (rep)
        freeReplyObject(rep);
    if (rc == ERR_OK) {
        r->base.lost_flag = 0;
        metrics_set_state_lost_flag(0);
        log_info("state store loss acknowledged (%s removed)", lk);
    }
    sigpipe_restore(&g);
    return rc;
}

static void redis_close(struct state *s)
{
    struct state_redis *r = (struct state_redis *)s;

    rc_close(r->rc);
    free(r->epochs);
    free(r->claim);
    state_args_free(&r->pa);
    state_v3_cmd_free(&r->v3);
    state_fast_free(&r->fast);
    free(r->order);
    free(r->chunks);
    free(r);
}

static void redis_clamp(struct state *s, int timeout_ms)
{
    struct state_redis *r = (struct state_redis *)s;

    if (timeout_ms <= 0) {
        drop(r); /* a reply may still be on its way: the pipeline is out of step */
        return;
    }
    r->timeout_ms = timeout_ms < r->timeout_cfg ? timeout_ms : r->timeout_cfg;
    rc_set_timeout(r->rc, r->timeout_ms);
}

static const struct state_ops redis_ops = {
    .name = "redis",
    .close = redis_close,
    .get_many = redis_get_many,
    .put_begin = redis_put_begin,
    .put_end = redis_put_end,
    .ping = redis_ping,
    .fence = redis_fence,
    .epoch = redis_epoch,
    .check_lost = redis_check_lost,
    .ack_lost = redis_ack_lost,
    .clamp = redis_clamp,
    .sweep = state_v3_sweep,
};

static int copy_opts(struct state_redis *r, const struct state_redis_opts *o, struct err *e)
{
    const char *host = o->host && *o->host ? o->host : "127.0.0.1";
    const char *prefix = o->prefix ? o->prefix : "";

    if (strlen(host) > HOST_MAX)
        return err_set(e, ERR_CONFIG, "redis: host longer than %d bytes", HOST_MAX);
    if (strlen(prefix) > PREFIX_MAX)
        return err_set(e, ERR_CONFIG, "redis: prefix longer than %d bytes", PREFIX_MAX);
    if (o->port < 0 || o->port > 65535)
        return err_set(e, ERR_CONFIG, "redis: port %d out of range", o->port);
    if (o->ttl_s < 0)
        return err_set(e, ERR_CONFIG, "redis: ttl_s %d is negative", o->ttl_s);
    if (o->layout != 0 && o->layout != 2 && o->layout != 3)
        return err_set(e, ERR_CONFIG, "redis: state.layout %d: a new store is 2 or 3", o->layout);
    if (o->buckets < 0 || o->buckets > STATE_V3_BUCKETS_MAX)
        return err_set(e, ERR_CONFIG, "redis: state.buckets %d out of 1..%d", o->buckets,
                       STATE_V3_BUCKETS_MAX);
    r->layout_new = o->layout ? o->layout : 2;
    r->buckets_new = o->buckets ? (uint32_t)o->buckets : 8;
    r->fast.enabled = !o->no_fast_path;
    strcpy(r->sweep_cur, "0");
    strcpy(r->host, host);
    strcpy(r->prefix, prefix);
    r->port = o->port ? o->port : 6379;
    r->ttl_ms = (long long)o->ttl_s * 1000;
    r->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 1000;
    r->lost_flag_ms = o->lost_flag_ms > 0 ? o->lost_flag_ms : 0;
    r->timeout_cfg = r->timeout_ms;
    {
        struct rc_opts ro = {.host = r->host, .port = r->port, .username = o->username,
                             .password = o->password, .timeout_ms = r->timeout_ms};
        return rc_open(&r->rc, &ro, e);
    }
}

struct state *state_open_redis(const struct state_redis_opts *o, struct err *e)
{
    static const struct state_redis_opts defaults = {0};
    struct state_redis *r;
    struct sigpipe_guard g;
    int rc;
    const char *nodes = o && o->nodes ? o->nodes : rcl_default_nodes();

    if (nodes && *nodes) /* redis.nodes: Redis Cluster (state_cluster.c) */
        return state_open_redis_cluster(o ? o : &defaults, nodes, e);
    r = calloc(1, sizeof(*r));

    if (!r) {
        err_set(e, ERR_NOMEM, "redis: out of memory");
        return NULL;
    }
    r->base.ops = &redis_ops;
    if (copy_opts(r, o ? o : &defaults, e)) {
        redis_close(&r->base);
        return NULL;
    }
    /* Connect now, so a wrong host or password shows at start-up; a lazy
     * handle accepts a server that is not up yet (workers start before
     * Redis in a compose stack, and must then score degraded, not exit). */
    sigpipe_block(&g);
    rc = state_redis_ensure(r, e);
    sigpipe_restore(&g);
    if (rc == ERR_RETRY && o && o->lazy)
        rc = ERR_OK;
    if (rc) {
        redis_close(&r->base);
        return NULL;
    }
    return &r->base;
}
