/* common/state/state_cluster.c: the Redis state backend on Redis Cluster
 * (redis.nodes; routing in redis_cluster.h). Same keys for entities as on
 * one server (<prefix>u:{<entity>}: the entity is the hash tag), the same
 * Lua script (state_redis.c), run once per chunk of puts that share a hash
 * slot, since every key of one EVALSHA must live in one slot.
 *
 * Fencing and per-offset idempotence across nodes (docs/delivery.md, "Redis
 * Cluster"): a partition's users are spread over every slot, so its epoch
 * and applied-offset keys are kept per slot: <prefix>epoch:<p>:{<tag>} and
 * <prefix>applied:<p>:{<tag>}, where <tag> (rcl_slot_tag) lands on the
 * slot of the chunk's entities. A claim INCRs the partition's one counter
 * <prefix>epoch:{<p>}; the script raises the slot's copy to the epoch a
 * put holds and refuses a put below it, exactly as on one server. A stale
 * owner is therefore refused on every slot a newer owner has written, and
 * those are the only slots where a stale write could clobber something:
 * an entity's state is written only together with its slot's epoch copy.
 *
 * Durability across a failover: a master acknowledges a write before its
 * replica has it, so a master killed just after would lose a write whose
 * offsets get committed. After each batch every master written to is sent
 * WAIT 1: the batch succeeds once one replica holds it (or the master has
 * no replica connected: then no promotion can lose it); otherwise it is
 * ERR_RETRY and the worker retries it (idempotent per offset).
 */
#include "state_backend.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "metrics.h"
#include "redis_cluster.h"
#include "redis_conn.h"

#define PREFIX_MAX 128
#define KEY_MAX (PREFIX_MAX + STATE_ENTITY_MAX + 32)
#define PARTITION_MAX 65535
#define PUT_CHUNK 1000

struct state_cluster {
    struct state base; /* first: state.c casts */
    struct rcl *cl;
    char prefix[PREFIX_MAX + 1];
    long long ttl_ms, lost_flag_ms;
    int timeout_ms;
    int marker_seen;
    char sha[41];
    int64_t *epochs;
    unsigned char *claim;
    size_t n_epochs, n_claims;
    /* per batch, reused */
    size_t *order;    /* puts sorted by slot */
    unsigned *slot;   /* slot of each put / entity */
    int *node;        /* node a command was appended to, -1 none */
    size_t cap;
    char *keys;       /* cap * KEY_MAX */
    const char **argv;
    size_t *argvlen;
    char *strs;
    size_t cap_argv, cap_strs;
};

static size_t entity_key(const struct state_cluster *r, const char *entity, char *buf)
{
    return (size_t)snprintf(buf, KEY_MAX, "%su:{%.*s}", r->prefix, STATE_ENTITY_MAX, entity);
}

static int grow(struct state_cluster *r, size_t n, struct err *e)
{
    if (n <= r->cap)
        return ERR_OK;
    size_t *o = realloc(r->order, n * sizeof(*o));
    if (o)
        r->order = o;
    unsigned *s = o ? realloc(r->slot, n * sizeof(*s)) : NULL;
    if (s)
        r->slot = s;
    int *nd = s ? realloc(r->node, n * sizeof(*nd)) : NULL;
    if (nd)
        r->node = nd;
    char *k = nd ? realloc(r->keys, n * KEY_MAX) : NULL;
    if (!k)
        return err_set(e, ERR_NOMEM, "redis cluster: out of memory for %zu entities", n);
    r->keys = k;
    r->cap = n;
    return ERR_OK;
}

/* Every connection that may hold unread replies is closed: pipelines out of
 * step are never reused; the map is asked again. */
static int lost_all(struct state_cluster *r, const char *what, struct err *e)
{
    for (size_t i = 0; i < rcl_n_nodes(r->cl); i++)
        rc_drop(rcl_rc(r->cl, i));
    rcl_invalidate(r->cl);
    if (e && !e->code)
        err_set(e, ERR_RETRY, "redis cluster %s: connection lost", what);
    return ERR_RETRY;
}

static int cmd(struct state_cluster *r, const char *key, int argc, const char **argv,
               redisReply **out, struct err *e)
{
    return rcl_command(r->cl, key, strlen(key), argc, argv, NULL, out, e);
}

/* ---- fencing ---- */

static int cl_fence(struct state *s, int32_t partition, struct err *e)
{
    struct state_cluster *r = (struct state_cluster *)s;

    if (partition < 0 || partition > PARTITION_MAX)
        return err_set(e, ERR_INVALID, "redis: cannot fence partition %d (max %d)",
                       (int)partition, PARTITION_MAX);
    if ((size_t)partition >= r->n_epochs) {
        size_t n = r->n_epochs ? r->n_epochs : 16;
        while (n <= (size_t)partition)
            n *= 2;
        int64_t *ep = realloc(r->epochs, n * sizeof(*ep));
        if (ep)
            r->epochs = ep;
        unsigned char *cl = ep ? realloc(r->claim, n) : NULL;
        if (!cl)
            return err_set(e, ERR_NOMEM, "redis: out of memory for %zu partition epochs", n);
        r->claim = cl;
        memset(r->epochs + r->n_epochs, 0, (n - r->n_epochs) * sizeof(*ep));
        memset(r->claim + r->n_epochs, 0, n - r->n_epochs);
        r->n_epochs = n;
    }
    if (!r->claim[partition])
        r->n_claims++;
    r->claim[partition] = 1;
    return ERR_OK;
}

static int64_t cl_epoch(const struct state *s, int32_t partition)
{
    const struct state_cluster *r = (const struct state_cluster *)s;

    return partition >= 0 && (size_t)partition < r->n_epochs ? r->epochs[partition] : 0;
}

static int wait_replica(struct state_cluster *r, struct rc *rc, struct err *e);

/* The claims (INCR of each partition's counter), one by one: rare. Each is
 * on a replica before it is used (WAIT): a counter lost in a failover
 * could hand the same epoch to two owners. */
static int ready(struct state_cluster *r, struct err *e)
{
    char key[KEY_MAX];

    for (size_t p = 0; p < r->n_epochs && r->n_claims; p++) {
        const char *argv[] = {"INCR", key};
        redisReply *rep = NULL;
        int code;
        if (!r->claim[p])
            continue;
        snprintf(key, sizeof(key), "%sepoch:{%zu}", r->prefix, p);
        if ((code = cmd(r, key, 2, argv, &rep, e)))
            return code;
        if (rep->type != REDIS_REPLY_INTEGER || rep->integer <= 0) {
            freeReplyObject(rep);
            return err_set(e, ERR_DECODE, "redis INCR %s: not a positive integer", key);
        }
        {
            struct rc *rc;
            unsigned slot = rcl_keyslot(key, strlen(key));
            int64_t got = rep->integer;
            freeReplyObject(rep);
            if ((code = rcl_node(r->cl, slot, &rc, e)) || (code = wait_replica(r, rc, e)))
                return code; /* claimed again next time: an epoch skipped */
            r->epochs[p] = got;
        }
        r->claim[p] = 0;
        r->n_claims--;
    }
    return ERR_OK;
}

/* The store's layout (state_layout.c): the cluster reads and writes layout
 * 1 (a hash per user) and says so in <prefix>layout; a store of another
 * layout is refused, never read as this one. */
static int layout_check(struct state_cluster *r, struct err *e)
{
    char lk[PREFIX_MAX + 16];
    const char *set[] = {"SET", lk, "1", "NX"}, *get[] = {"GET", lk};
    redisReply *rep = NULL;
    int code, layout;

    snprintf(lk, sizeof(lk), "%slayout", r->prefix);
    if ((code = cmd(r, lk, 4, set, &rep, e)))
        return code;
    freeReplyObject(rep);
    if ((code = cmd(r, lk, 2, get, &rep, e)))
        return code;
    layout = state_layout_decide(rep->type == REDIS_REPLY_STRING ? rep->str : NULL, rep->len, 1);
    if (layout != 1)
        code = err_set(e, ERR_CONFIG,
                       "redis cluster: %slayout is '%.20s': Redis Cluster reads state layout 1 "
                       "only",
                       r->prefix, rep->type == REDIS_REPLY_STRING ? rep->str : "");
    freeReplyObject(rep);
    return code;
}

/* ---- reads: HMGET pipelined per node ---- */

static int parse_blob(const redisReply *rep, struct state_blob *b, const char *key,
                      struct err *e)
{
    char buf[32];
    long long v[2];

    b->len = 0;
    b->partition = -1;
    b->offset = -1;
    if (rep->type == REDIS_REPLY_ERROR)
        return err_set(e, rc_reply_code(rep->str), "redis HMGET %s: %s", key, rep->str);
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3)
        return err_set(e, ERR_DECODE, "redis HMGET %s: unexpected reply type %d", key, rep->type);
    if (rep->element[0]->type == REDIS_REPLY_NIL)
        return ERR_OK;
    if (rep->element[0]->type != REDIS_REPLY_STRING || rep->element[0]->len == 0 ||
        rep->element[0]->len > STATE_BLOB_MAX)
        return err_set(e, ERR_DECODE, "redis HMGET %s: field s is not a blob of 1..%d bytes", key,
                       STATE_BLOB_MAX);
    for (int i = 0; i < 2; i++) {
        const redisReply *x = rep->element[1 + i];
        char *end;
        if (x->type != REDIS_REPLY_STRING || x->len == 0 || x->len >= sizeof(buf))
            return err_set(e, ERR_DECODE, "redis HMGET %s: fields p/o are not integers", key);
        memcpy(buf, x->str, x->len);
        buf[x->len] = '\0';
        v[i] = strtoll(buf, &end, 10);
        if (*end)
            return err_set(e, ERR_DECODE, "redis HMGET %s: fields p/o are not integers", key);
    }
    memcpy(b->data, rep->element[0]->str, rep->element[0]->len);
    b->len = rep->element[0]->len;
    b->partition = (int32_t)v[0];
    b->offset = v[1];
    return ERR_OK;
}

static int cl_get_many(struct state *s, size_t n, const char *const *entities,
                       struct state_blob *out, struct err *e)
{
    struct state_cluster *r = (struct state_cluster *)s;
    const char *argv[5] = {"HMGET", NULL, "s", "p", "o"};
    size_t argvlen[5] = {5, 0, 1, 1, 1};
    struct rc_sigpipe g;
    int code, first = ERR_OK;

    if ((code = grow(r, n, e)) || (code = ready(r, e)))
        return code;
    rc_sigpipe_block(&g);
    for (size_t i = 0; i < n; i++) {
        char *key = r->keys + i * KEY_MAX;
        struct rc *rc;
        argv[1] = key;
        argvlen[1] = entity_key(r, entities[i], key);
        r->slot[i] = rcl_keyslot(key, argvlen[1]);
        r->node[i] = -1;
        if ((code = rcl_node(r->cl, r->slot[i], &rc, e)))
            break;
        if (redisAppendCommandArgv(rc_ctx(rc), 5, argv, argvlen) != REDIS_OK) {
            code = lost_all(r, "HMGET", e);
            break;
        }
        r->node[i] = rcl_node_index(r->cl, r->slot[i]);
    }
    /* Each node answers in the order it was sent to: reading in the order
     * of the entities reads every node's pipeline in order. */
    for (size_t i = 0; i < n && !code; i++) {
        redisReply *rep = NULL;
        struct err tmp = {0};
        const char *key = r->keys + i * KEY_MAX;
        char host[256];
        int port;
        if (redisGetReply(rc_ctx(rcl_rc(r->cl, (size_t)r->node[i])), (void **)&rep) !=
                REDIS_OK ||
            !rep) {
            code = lost_all(r, "HMGET", e);
            break;
        }
        if (rep->type == REDIS_REPLY_ERROR &&
            (rcl_redirect(r->cl, rep->str, host, sizeof(host), &port) ||
             strncmp(rep->str, "TRYAGAIN", 8) == 0)) {
            r->node[i] = -2; /* asked again once every pipeline is read */
        } else if (parse_blob(rep, &out[i], key, &tmp) && first == ERR_OK) {
            first = tmp.code;
            if (e)
                *e = tmp;
        }
        freeReplyObject(rep);
    }
    /* Moved or migrating keys, on their own, redirections followed. */
    for (size_t i = 0; i < n && !code; i++) {
        redisReply *rep = NULL;
        struct err tmp = {0};
        const char *key = r->keys + i * KEY_MAX;
        if (r->node[i] != -2)
            continue;
        argv[1] = key;
        argvlen[1] = strlen(key);
        if ((code = rcl_command(r->cl, key, argvlen[1], 5, argv, argvlen, &rep, e)))
            break;
        if (parse_blob(rep, &out[i], key, &tmp) && first == ERR_OK) {
            first = tmp.code;
            if (e)
                *e = tmp;
        }
        freeReplyObject(rep);
    }
    if (code) /* replies may be left unread */
        lost_all(r, "HMGET", NULL);
    rc_sigpipe_restore(&g);
    return code ? code : first;
}

/* ---- writes: one EVALSHA per chunk of puts sharing a slot ---- */

static int load_script(struct state_cluster *r, unsigned slot, struct err *e)
{
    const char *argv[] = {"SCRIPT", "LOAD", state_redis_put_script};
    redisReply *rep = NULL;
    int code = rcl_command_slot(r->cl, slot, 3, argv, NULL, &rep, e);

    if (code)
        return code;
    if (rep->type == REDIS_REPLY_STRING && rep->len == 40) {
        memcpy(r->sha, rep->str, 40);
        r->sha[40] = '\0';
    } else {
        code = err_set(e, ERR_IO, "redis SCRIPT LOAD: unexpected reply");
    }
    freeReplyObject(rep);
    return code;
}

static const unsigned *g_sort_slot; /* qsort has no context argument */

static int by_slot(const void *a, const void *b)
{
    size_t i = *(const size_t *)a, j = *(const size_t *)b;

    if (g_sort_slot[i] != g_sort_slot[j])
        return g_sort_slot[i] < g_sort_slot[j] ? -1 : 1;
    return i < j ? -1 : i > j; /* stable: puts of one entity keep their order */
}

static int reserve_args(struct state_cluster *r, size_t nargv, size_t nstrs, struct err *e)
{
    if (nargv > r->cap_argv) {
        const char **v = realloc(r->argv, nargv * sizeof(*v));
        if (v)
            r->argv = v;
        size_t *l = v ? realloc(r->argvlen, nargv * sizeof(*l)) : NULL;
        if (!l)
            return err_set(e, ERR_NOMEM, "redis cluster: out of memory");
        r->argvlen = l;
        r->cap_argv = nargv;
    }
    if (nstrs > r->cap_strs) {
        char *p = realloc(r->strs, nstrs);
        if (!p)
            return err_set(e, ERR_NOMEM, "redis cluster: out of memory");
        r->strs = p;
        r->cap_strs = nstrs;
    }
    return ERR_OK;
}

/* Builds EVALSHA for the puts order[0..k) (one slot): the argv the script
 * of state_redis.c expects, with the slot's own epoch and applied keys.
 * Returns the argument count. */
static int build_chunk(struct state_cluster *r, const struct state_put *puts, const size_t *ord,
                       size_t k, unsigned slot, struct err *e)
{
    int32_t part[PUT_CHUNK];
    int pslot[PUT_CHUNK];
    size_t m = 0, at, used = 0, nargv = 3 + 3 * k + 3 + 6 * k;
    const char *tag = rcl_slot_tag(slot);

    if (reserve_args(r, nargv, k * (2 * KEY_MAX + 96) + 128, e))
        return -1;
#define STR(...)                                                                                  \
    (r->argvlen[at] = (size_t)snprintf(r->strs + used, r->cap_strs - used, __VA_ARGS__),        \
     r->argv[at] = r->strs + used, used += r->argvlen[at] + 1, at++)
    for (size_t i = 0; i < k; i++) {
        int32_t p = puts[ord[i]].partition;
        size_t j = 0;
        while (j < m && part[j] != p)
            j++;
        if (j == m)
            part[m++] = p;
        pslot[i] = (int)j;
    }
    r->argv[0] = "EVALSHA";
    r->argvlen[0] = 7;
    r->argv[1] = r->sha;
    r->argvlen[1] = 40;
    at = 2;
    STR("%zu", k + 2 * m);
    for (size_t i = 0; i < k; i++)
        STR("%su:{%.*s}", r->prefix, STATE_ENTITY_MAX, puts[ord[i]].entity);
    for (size_t j = 0; j < m; j++) {
        STR("%sapplied:%d:{%s}", r->prefix, (int)part[j], tag);
        STR("%sepoch:%d:{%s}", r->prefix, (int)part[j], tag);
    }
    STR("%zu", k);
    STR("%zu", m);
    STR("%lld", r->ttl_ms);
    for (size_t j = 0; j < m; j++) {
        STR("%d", (int)part[j]);
        STR("%lld", (long long)cl_epoch(&r->base, part[j]));
    }
    for (size_t i = 0; i < k; i++) {
        r->argv[at] = (const char *)puts[ord[i]].data;
        r->argvlen[at++] = puts[ord[i]].len;
        STR("%d", pslot[i] + 1);
        STR("%lld", (long long)puts[ord[i]].offset);
        const struct state_base *b = r->base.put_bases ? &r->base.put_bases[ord[i]] : NULL;
        if (!b)
            STR("%s", "");
        else if (b->partition < 0)
            STR("%s", "-");
        else
            STR("%d:%lld", (int)b->partition, (long long)b->offset);
    }
#undef STR
    return (int)at;
}

/* The script's reply for a chunk into applied[]. */
static int read_result(struct state_cluster *r, const redisReply *rep, const struct state_put *puts,
                       const size_t *ord, size_t k, int *applied, struct err *e)
{
    int code = ERR_OK;

    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != k)
        return err_set(e, rep->type == REDIS_REPLY_ERROR ? rc_reply_code(rep->str) : ERR_DECODE,
                       "redis EVALSHA u:{%s} (+%zu): %s", puts[ord[0]].entity, k - 1,
                       rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
    for (size_t i = 0; i < k; i++) {
        const redisReply *x = rep->element[i];
        applied[ord[i]] = 0;
        if (x->type == REDIS_REPLY_INTEGER &&
            (x->integer == 0 || x->integer == 1 || x->integer == STATE_PUT_CONFLICT))
            applied[ord[i]] = (int)x->integer;
        else if (x->type == REDIS_REPLY_INTEGER && x->integer == 2)
            r->base.fenced++;
        else if (code == ERR_OK)
            code = err_set(e, x->type == REDIS_REPLY_ERROR ? rc_reply_code(x->str) : ERR_DECODE,
                           "redis EVALSHA u:{%s}: %s", puts[ord[i]].entity,
                           x->type == REDIS_REPLY_ERROR ? x->str : "unexpected reply");
    }
    return code;
}

/* A chunk refused by its node (moved, migrating, script missing): sent
 * again on its own, redirections followed, as EVAL (the script's text: the
 * node it lands on, an importing one included, may not have it cached). */
static int redo_chunk(struct state_cluster *r, const struct state_put *puts, const size_t *ord,
                      size_t k, unsigned slot, int *applied, struct err *e)
{
    redisReply *rep = NULL;
    int argc = build_chunk(r, puts, ord, k, slot, e), code;

    if (argc < 0)
        return ERR_NOMEM;
    r->argv[0] = "EVAL";
    r->argvlen[0] = 4;
    r->argv[1] = state_redis_put_script;
    r->argvlen[1] = strlen(state_redis_put_script);
    code = rcl_command_slot(r->cl, slot, argc, r->argv, r->argvlen, &rep, e);
    if (code == ERR_OK) {
        code = read_result(r, rep, puts, ord, k, applied, e);
        freeReplyObject(rep);
    }
    return code;
}

/* A master written to: ERR_OK once a replica holds the writes (WAIT 1), or
 * at once when it has no replica connected (ROLE first: a WAIT there would
 * block for its whole timeout, e.g. on a replica just promoted). */
static int wait_replica(struct state_cluster *r, struct rc *rc, struct err *e)
{
    char ms[24];
    redisReply *rep;
    long long got;
    struct rc_sigpipe g;

    rc_sigpipe_block(&g);
    rep = redisCommand(rc_ctx(rc), "ROLE");
    rc_sigpipe_restore(&g);
    if (!rep)
        return rc_lost(rc, "ROLE", e);
    got = rep->type == REDIS_REPLY_ARRAY && rep->elements >= 3 &&
                  rep->element[2]->type == REDIS_REPLY_ARRAY
              ? (long long)rep->element[2]->elements
              : -1;
    freeReplyObject(rep);
    if (got == 0)
        return ERR_OK;
    snprintf(ms, sizeof(ms), "%d", r->timeout_ms);
    rc_sigpipe_block(&g);
    rep = redisCommand(rc_ctx(rc), "WAIT 1 %s", ms);
    rc_sigpipe_restore(&g);
    if (!rep)
        return rc_lost(rc, "WAIT", e);
    got = rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1;
    freeReplyObject(rep);
    if (got >= 1)
        return ERR_OK;
    rcl_invalidate(r->cl);
    return err_set(e, ERR_RETRY, "redis WAIT (%s:%d): no replica acknowledged the batch in %d ms",
                   rc_host(rc), rc_port(rc), r->timeout_ms);
}

static int cl_put_many(struct state *s, size_t n, const struct state_put *puts, int *applied,
                       struct err *e)
{
    struct state_cluster *r = (struct state_cluster *)s;
    unsigned char touched[RCL_NODES_MAX] = {0};
    uint64_t fenced0 = r->base.fenced;
    struct rc_sigpipe g;
    size_t nchunks = 0;
    int code, first = ERR_OK;

    if ((code = grow(r, n, e)) || (code = ready(r, e)))
        return code;
    if (!r->sha[0] && (code = load_script(r, 0, e)))
        return code;
    for (size_t i = 0; i < n; i++) {
        char key[KEY_MAX];
        r->order[i] = i;
        r->slot[i] = rcl_keyslot(key, entity_key(r, puts[i].entity, key));
        applied[i] = 0;
    }
    g_sort_slot = r->slot;
    qsort(r->order, n, sizeof(*r->order), by_slot);
    /* Chunks: runs of one slot, at most PUT_CHUNK; node[c] the node chunk
     * c went to (its start in order[] is found again by walking). */
    rc_sigpipe_block(&g);
    for (size_t c = 0; c < n && !code;) {
        unsigned slot = r->slot[r->order[c]];
        size_t k = 0;
        struct rc *rc;
        int argc;
        while (c + k < n && k < PUT_CHUNK && r->slot[r->order[c + k]] == slot)
            k++;
        argc = build_chunk(r, puts, r->order + c, k, slot, e);
        if (argc < 0)
            code = ERR_NOMEM;
        else if ((code = rcl_node(r->cl, slot, &rc, e)) == ERR_OK &&
                 redisAppendCommandArgv(rc_ctx(rc), argc, r->argv, r->argvlen) != REDIS_OK)
            code = lost_all(r, "EVALSHA", e);
        if (!code) {
            r->node[nchunks++] = rcl_node_index(r->cl, slot);
            touched[rcl_node_index(r->cl, slot)] = 1;
        }
        c += k;
    }
    for (size_t c = 0, ci = 0; c < n && !code; ci++) {
        unsigned slot = r->slot[r->order[c]];
        size_t k = 0;
        redisReply *rep = NULL;
        struct err tmp = {0};
        int rr;
        while (c + k < n && k < PUT_CHUNK && r->slot[r->order[c + k]] == slot)
            k++;
        if (redisGetReply(rc_ctx(rcl_rc(r->cl, (size_t)r->node[ci])), (void **)&rep) !=
                REDIS_OK ||
            !rep) {
            code = lost_all(r, "EVALSHA", e);
            break;
        }
        if (rep->type == REDIS_REPLY_ERROR) {
            char host[256];
            int port;
            if (rcl_redirect(r->cl, rep->str, host, sizeof(host), &port) ||
                strncmp(rep->str, "TRYAGAIN", 8) == 0 || strncmp(rep->str, "NOSCRIPT", 8) == 0)
                r->node[ci] = -2, rr = ERR_OK; /* sent again once every pipeline is read */
            else
                rr = err_set(&tmp, rc_reply_code(rep->str), "redis EVALSHA u:{%s} (+%zu): %s",
                             puts[r->order[c]].entity, k - 1, rep->str);
        } else {
            rr = read_result(r, rep, puts, r->order + c, k, applied, &tmp);
        }
        freeReplyObject(rep);
        if (rr && first == ERR_OK) {
            first = rr;
            if (e)
                *e = tmp;
        }
        c += k;
    }
    for (size_t c = 0, ci = 0; c < n && !code; ci++) {
        unsigned slot = r->slot[r->order[c]];
        size_t k = 0;
        while (c + k < n && k < PUT_CHUNK && r->slot[r->order[c + k]] == slot)
            k++;
        if (r->node[ci] == -2) {
            struct err tmp = {0};
            int rr = redo_chunk(r, puts, r->order + c, k, slot, applied, &tmp);
            if (rr == ERR_OK && rcl_node_index(r->cl, slot) >= 0)
                touched[rcl_node_index(r->cl, slot)] = 1;
            if (rr && first == ERR_OK) {
                first = rr;
                if (e)
                    *e = tmp;
            }
        }
        c += k;
    }
    for (size_t i = 0; i < RCL_NODES_MAX && !code && !first; i++) {
        struct rc *rc = rcl_rc(r->cl, i);
        if (!touched[i] || !rc)
            continue;
        if (!rc_ctx(rc)) { /* written, but not known to be on a replica */
            rcl_invalidate(r->cl);
            first = err_set(e, ERR_RETRY, "redis WAIT (%s:%d): connection lost", rc_host(rc),
                            rc_port(rc));
        } else {
            first = wait_replica(r, rc, e);
        }
    }
    if (!code && !first && n && !r->marker_seen) {
        char mk[PREFIX_MAX + 16], now[32];
        const char *argv[] = {"SET", mk, now, "NX"};
        redisReply *rep = NULL;
        struct err tmp = {0};
        snprintf(mk, sizeof(mk), "%smarker", r->prefix);
        snprintf(now, sizeof(now), "%lld", (long long)time(NULL) * 1000);
        if (cmd(r, mk, 4, argv, &rep, &tmp) == ERR_OK) {
            freeReplyObject(rep);
            r->marker_seen = 1;
        }
    }
    if (code)
        lost_all(r, "EVALSHA", NULL);
    rc_sigpipe_restore(&g);
    if (r->base.fenced > fenced0)
        log_warn("state: %llu write(s) fenced: a newer consumer owns their partition (this "
                 "handle was stalled past a rebalance); not applied",
                 (unsigned long long)(r->base.fenced - fenced0));
    return code ? code : first;
}

/* ---- marker, ping ---- */

static int cl_check_lost(struct state *s, int expect_data, int *lost_now, struct err *e)
{
    struct state_cluster *r = (struct state_cluster *)s;
    char mk[PREFIX_MAX + 16], lk[PREFIX_MAX + 16], now[32], px[32];
    const char *get[] = {"GET", mk}, *ex[] = {"EXISTS", lk};
    redisReply *rep = NULL;
    int code, missing;

    snprintf(mk, sizeof(mk), "%smarker", r->prefix);
    snprintf(lk, sizeof(lk), "%sstate_lost", r->prefix);
    snprintf(now, sizeof(now), "%lld", (long long)time(NULL) * 1000);
    snprintf(px, sizeof(px), "%lld", r->lost_flag_ms);
    if ((code = cmd(r, mk, 2, get, &rep, e)))
        return code;
    missing = rep->type == REDIS_REPLY_NIL;
    freeReplyObject(rep);
    if (missing && (r->marker_seen || expect_data)) {
        const char *set_lost[] = {"SET", lk, now, "PX", px};
        const char *set_mk[] = {"SET", mk, now, "NX"};
        if ((code = cmd(r, lk, r->lost_flag_ms > 0 ? 5 : 3, set_lost, &rep, e)))
            return code;
        freeReplyObject(rep);
        if ((code = cmd(r, mk, 4, set_mk, &rep, e)))
            return code;
        freeReplyObject(rep);
        r->base.losses++;
        *lost_now = 1;
        metrics_note_state_lost();
        log_error("state store (Redis Cluster) lost its data (%smarker missing): every "
                  "aggregate restarted empty; predictions are flagged until acknowledged "
                  "(streamml config ack-state-loss, or DEL %s)",
                  r->prefix, lk);
    }
    if (!missing || expect_data)
        r->marker_seen = 1;
    if ((code = cmd(r, lk, 2, ex, &rep, e)))
        return code;
    r->base.lost_flag = rep->type == REDIS_REPLY_INTEGER && rep->integer > 0;
    freeReplyObject(rep);
    metrics_set_state_lost_flag(r->base.lost_flag);
    return ERR_OK;
}

static int cl_ack_lost(struct state *s, struct err *e)
{
    struct state_cluster *r = (struct state_cluster *)s;
    char lk[PREFIX_MAX + 16];
    const char *argv[] = {"DEL", lk};
    redisReply *rep = NULL;
    int code;

    snprintf(lk, sizeof(lk), "%sstate_lost", r->prefix);
    if ((code = cmd(r, lk, 2, argv, &rep, e)))
        return code;
    freeReplyObject(rep);
    r->base.lost_flag = 0;
    metrics_set_state_lost_flag(0);
    return ERR_OK;
}

/* Every master answers: a cluster with a slot down is not healthy. */
static int cl_ping(struct state *s, struct err *e)
{
    struct state_cluster *r = (struct state_cluster *)s;
    int code = rcl_refresh(r->cl, e);

    for (size_t i = 0; i < rcl_n_nodes(r->cl) && !code; i++) {
        struct rc *rc;
        redisReply *rep;
        struct rc_sigpipe g;
        int has = 0;
        for (unsigned sl = 0; sl < RCL_SLOTS && !has; sl++)
            has = rcl_node_index(r->cl, sl) == (int)i;
        if (!has) /* a master of the past, no slot now */
            continue;
        rc = rcl_rc(r->cl, i);
        if ((code = rc_connect(rc, e)))
            break;
        rc_sigpipe_block(&g);
        rep = redisCommand(rc_ctx(rc), "PING");
        rc_sigpipe_restore(&g);
        if (!rep)
            code = rc_lost(rc, "PING", e);
        else
            freeReplyObject(rep);
    }
    if (code)
        rcl_invalidate(r->cl);
    return code;
}

static void cl_close(struct state *s)
{
    struct state_cluster *r = (struct state_cluster *)s;

    rcl_close(r->cl);
    free(r->epochs);
    free(r->claim);
    free(r->order);
    free(r->slot);
    free(r->node);
    free(r->keys);
    free(r->argv);
    free(r->argvlen);
    free(r->strs);
    free(r);
}

static const struct state_ops cluster_ops = {
    .name = "redis-cluster",
    .close = cl_close,
    .get_many = cl_get_many,
    .put_many = cl_put_many,
    .ping = cl_ping,
    .fence = cl_fence,
    .epoch = cl_epoch,
    .check_lost = cl_check_lost,
    .ack_lost = cl_ack_lost,
};

struct state *state_open_redis_cluster(const struct state_redis_opts *o, const char *nodes,
                                       struct err *e)
{
    struct state_cluster *r = calloc(1, sizeof(*r));
    const char *prefix = o->prefix ? o->prefix : "";
    struct rc_opts ro = {.username = o->username, .password = o->password,
                         .timeout_ms = o->timeout_ms};
    int code;

    if (!r) {
        err_set(e, ERR_NOMEM, "redis: out of memory");
        return NULL;
    }
    r->base.ops = &cluster_ops;
    if (strlen(prefix) > PREFIX_MAX || o->ttl_s < 0) {
        err_set(e, ERR_CONFIG, "redis: prefix longer than %d bytes or negative ttl_s",
                PREFIX_MAX);
        free(r);
        return NULL;
    }
    strcpy(r->prefix, prefix);
    r->ttl_ms = (long long)o->ttl_s * 1000;
    r->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 1000;
    r->lost_flag_ms = o->lost_flag_ms > 0 ? o->lost_flag_ms : 0;
    if (rcl_open(&r->cl, nodes, &ro, e)) {
        free(r);
        return NULL;
    }
    code = rcl_refresh(r->cl, e);
    if (code == ERR_OK)
        code = layout_check(r, e);
    if (code == ERR_OK)
        code = load_script(r, 0, e);
    if (code == ERR_RETRY && o->lazy)
        code = ERR_OK;
    if (code) {
        cl_close(&r->base);
        return NULL;
    }
    return &r->base;
}
