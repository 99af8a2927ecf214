#include "redis_cluster.h"
#include "redis_conn.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HOST_MAX 255
#define HOPS_MAX 5

struct rcl_node {
    char host[HOST_MAX + 1];
    int port;
    struct rc *rc;
};

struct rcl {
    struct rcl_node seeds[RCL_NODES_MAX];
    size_t n_seeds;
    struct rcl_node nodes[RCL_NODES_MAX]; /* masters of the current map */
    size_t n_nodes;
    int16_t slot_node[RCL_SLOTS]; /* index into nodes, -1 unknown */
    int stale;
    struct rc_opts tmpl; /* credentials and timeout; strings owned below */
    char *username, *password, *password_file;
};

/* ---- hash slots ---- */

/* CRC16/XMODEM (poly 0x1021, init 0), the one Redis Cluster uses. */
static uint16_t crc16(const char *buf, size_t len)
{
    uint16_t crc = 0;

    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)buf[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

unsigned rcl_keyslot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);

    if (open) {
        size_t s = (size_t)(open - key) + 1;
        const char *close = memchr(key + s, '}', len - s);
        if (close && close > key + s) /* "{}" is no tag: the whole key hashes */
            return crc16(key + s, (size_t)(close - (key + s))) & (RCL_SLOTS - 1);
    }
    return crc16(key, len) & (RCL_SLOTS - 1);
}

/* Tags of the form "<n>" in base 36: every slot is reached by n < 2^17 or
 * so; built once. */
static char g_tags[RCL_SLOTS][8];
static int g_tags_built;

static size_t base36(unsigned n, char *out)
{
    char tmp[8];
    size_t k = 0;

    do
        tmp[k++] = "0123456789abcdefghijklmnopqrstuvwxyz"[n % 36];
    while ((n /= 36) != 0);
    for (size_t i = 0; i < k; i++)
        out[i] = tmp[k - 1 - i];
    out[k] = '\0';
    return k;
}

const char *rcl_slot_tag(unsigned slot)
{
    if (!g_tags_built) {
        size_t left = RCL_SLOTS;
        char t[8];
        for (unsigned n = 0; left && n < 36u * 36 * 36 * 36; n++) {
            size_t k = base36(n, t);
            unsigned s = crc16(t, k) & (RCL_SLOTS - 1);
            if (!g_tags[s][0]) {
                memcpy(g_tags[s], t, k + 1);
                left--;
            }
        }
        g_tags_built = 1;
    }
    return g_tags[slot & (RCL_SLOTS - 1)];
}

/* ---- configuration ---- */

static char *g_default_nodes;

void rcl_set_default_nodes(const char *nodes)
{
    free(g_default_nodes);
    g_default_nodes = nodes && *nodes ? strdup(nodes) : NULL;
}

const char *rcl_default_nodes(void)
{
    return g_default_nodes;
}

static int node_init(struct rcl *c, struct rcl_node *n, const char *host, size_t hl, int port,
                     struct err *e)
{
    struct rc_opts o = c->tmpl;

    if (hl == 0 || hl > HOST_MAX || port <= 0 || port > 65535)
        return err_set(e, ERR_CONFIG, "redis.nodes: bad node %.*s:%d", (int)(hl > 64 ? 64 : hl),
                       host, port);
    memcpy(n->host, host, hl);
    n->host[hl] = '\0';
    n->port = port;
    o.host = n->host;
    o.port = port;
    return rc_open(&n->rc, &o, e);
}

static int dup_opt(char **dst, const char **field)
{
    *dst = NULL;
    if (!*field)
        return 0;
    *dst = strdup(*field);
    *field = *dst;
    return *dst == NULL;
}

int rcl_open(struct rcl **out, const char *nodes, const struct rc_opts *o, struct err *e)
{
    struct rcl *c = calloc(1, sizeof(*c));
    const char *p = nodes;

    *out = NULL;
    if (!c)
        return err_set(e, ERR_NOMEM, "redis cluster: out of memory");
    c->tmpl = *o;
    if (dup_opt(&c->username, &c->tmpl.username) || dup_opt(&c->password, &c->tmpl.password) ||
        dup_opt(&c->password_file, &c->tmpl.password_file)) {
        rcl_close(c);
        return err_set(e, ERR_NOMEM, "redis cluster: out of memory");
    }
    c->tmpl.host = NULL;
    for (size_t i = 0; i < RCL_SLOTS; i++)
        c->slot_node[i] = -1;
    c->stale = 1;
    while (p && *p) {
        size_t len = strcspn(p, ",");
        const char *colon = memchr(p, ':', len);
        char *end;
        long port = colon ? strtol(colon + 1, &end, 10) : 0;
        if (!colon || end != p + len || c->n_seeds == RCL_NODES_MAX) {
            err_set(e, ERR_CONFIG, "redis.nodes: \"%.*s\" is not host:port (at most %d nodes)",
                    (int)(len > 64 ? 64 : len), p, RCL_NODES_MAX);
            rcl_close(c);
            return ERR_CONFIG;
        }
        if (node_init(c, &c->seeds[c->n_seeds], p, (size_t)(colon - p), (int)port, e)) {
            rcl_close(c);
            return e ? e->code : ERR_CONFIG;
        }
        c->n_seeds++;
        p += len + (p[len] == ',');
    }
    if (!c->n_seeds) {
        rcl_close(c);
        return err_set(e, ERR_CONFIG, "redis.nodes: no node given");
    }
    *out = c;
    return ERR_OK;
}

static void drop_nodes(struct rcl *c)
{
    for (size_t i = 0; i < c->n_nodes; i++)
        rc_close(c->nodes[i].rc);
    c->n_nodes = 0;
}

void rcl_close(struct rcl *c)
{
    if (!c)
        return;
    drop_nodes(c);
    for (size_t i = 0; i < c->n_seeds; i++)
        rc_close(c->seeds[i].rc);
    free(c->username);
    if (c->password)
        memset(c->password, 0, strlen(c->password));
    free(c->password);
    free(c->password_file);
    free(c);
}

/* ---- the slot map ---- */

/* Index of host:port among the masters, added (or reused) when missing. */
static int node_find_add(struct rcl *c, const char *host, size_t hl, int port, struct err *e)
{
    for (size_t i = 0; i < c->n_nodes; i++)
        if (c->nodes[i].port == port && strlen(c->nodes[i].host) == hl &&
            memcmp(c->nodes[i].host, host, hl) == 0)
            return (int)i;
    if (c->n_nodes == RCL_NODES_MAX) {
        err_set(e, ERR_IO, "redis cluster: more than %d masters", RCL_NODES_MAX);
        return -1;
    }
    if (node_init(c, &c->nodes[c->n_nodes], host, hl, port, e))
        return -1;
    return (int)c->n_nodes++;
}

/* Applies a CLUSTER SLOTS reply: [[start, end, [host, port, id], replicas...]...].
 * Connections to masters still in the map are kept. */
static int apply_slots(struct rcl *c, const redisReply *r, struct err *e)
{
    size_t covered = 0;

    if (r->type != REDIS_REPLY_ARRAY)
        return err_set(e, ERR_IO, "redis CLUSTER SLOTS: unexpected reply type %d", r->type);
    for (size_t i = 0; i < RCL_SLOTS; i++)
        c->slot_node[i] = -1;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *x = r->element[i], *m;
        int idx;
        if (x->type != REDIS_REPLY_ARRAY || x->elements < 3 ||
            x->element[0]->type != REDIS_REPLY_INTEGER ||
            x->element[1]->type != REDIS_REPLY_INTEGER ||
            (m = x->element[2])->type != REDIS_REPLY_ARRAY || m->elements < 2 ||
            m->element[0]->type != REDIS_REPLY_STRING ||
            m->element[1]->type != REDIS_REPLY_INTEGER)
            return err_set(e, ERR_IO, "redis CLUSTER SLOTS: malformed entry %zu", i);
        long long lo = x->element[0]->integer, hi = x->element[1]->integer;
        if (lo < 0 || hi >= RCL_SLOTS || lo > hi)
            return err_set(e, ERR_IO, "redis CLUSTER SLOTS: bad range %lld-%lld", lo, hi);
        idx = node_find_add(c, m->element[0]->str, m->element[0]->len,
                            (int)m->element[1]->integer, e);
        if (idx < 0)
            return e ? e->code : ERR_IO;
        for (long long s = lo; s <= hi; s++)
            c->slot_node[s] = (int16_t)idx;
        covered += (size_t)(hi - lo + 1);
    }
    if (covered < RCL_SLOTS)
        return err_set(e, ERR_RETRY, "redis cluster: only %zu of %d slots served", covered,
                       RCL_SLOTS);
    return ERR_OK;
}

static int ask_slots(struct rcl *c, struct rc *rc, struct err *e)
{
    const char *argv[] = {"CLUSTER", "SLOTS"};
    redisReply *r;
    struct rc_sigpipe g;
    int code;

    if ((code = rc_connect(rc, e)))
        return code;
    rc_sigpipe_block(&g);
    r = redisCommandArgv(rc_ctx(rc), 2, argv, NULL);
    rc_sigpipe_restore(&g);
    if (!r)
        return rc_lost(rc, "CLUSTER SLOTS", e);
    code = r->type == REDIS_REPLY_ERROR
               ? err_set(e, rc_reply_code(r->str), "redis CLUSTER SLOTS (%s:%d): %s",
                         rc_host(rc), rc_port(rc), r->str)
               : apply_slots(c, r, e);
    freeReplyObject(r);
    return code;
}

int rcl_refresh(struct rcl *c, struct err *e)
{
    struct err first = {0};
    int code = ERR_RETRY;

    /* Known masters first (their connections are open), then the seeds. */
    for (size_t i = 0; i < c->n_nodes + c->n_seeds; i++) {
        struct rc *rc = i < c->n_nodes ? c->nodes[i].rc : c->seeds[i - c->n_nodes].rc;
        struct err tmp = {0};
        if ((code = ask_slots(c, rc, &tmp)) == ERR_OK) {
            c->stale = 0;
            return ERR_OK;
        }
        if (!first.code)
            first = tmp;
    }
    if (e)
        *e = first;
    return first.code ? first.code : code;
}

void rcl_invalidate(struct rcl *c)
{
    c->stale = 1;
}

int rcl_node_index(const struct rcl *c, unsigned slot)
{
    return c->slot_node[slot & (RCL_SLOTS - 1)];
}

size_t rcl_n_nodes(const struct rcl *c)
{
    return c->n_nodes;
}

struct rc *rcl_rc(struct rcl *c, size_t idx)
{
    return idx < c->n_nodes ? c->nodes[idx].rc : NULL;
}

int rcl_node(struct rcl *c, unsigned slot, struct rc **out, struct err *e)
{
    int code, idx;

    *out = NULL;
    if (c->stale && (code = rcl_refresh(c, e)))
        return code;
    idx = rcl_node_index(c, slot);
    if (idx < 0) {
        c->stale = 1;
        return err_set(e, ERR_RETRY, "redis cluster: slot %u has no master", slot);
    }
    if ((code = rc_connect(c->nodes[idx].rc, e))) {
        c->stale = 1; /* a failover may have moved its slots */
        return code;
    }
    *out = c->nodes[idx].rc;
    return ERR_OK;
}

/* "MOVED 3999 127.0.0.1:6381" / "ASK 3999 127.0.0.1:6381". */
int rcl_redirect(struct rcl *c, const char *msg, char *ask_host, size_t cap, int *ask_port)
{
    int moved = strncmp(msg, "MOVED ", 6) == 0, ask = strncmp(msg, "ASK ", 4) == 0;
    const char *p, *colon;
    unsigned long slot;
    char *end;
    long port;

    if (!moved && !ask)
        return 0;
    slot = strtoul(msg + (moved ? 6 : 4), &end, 10);
    if (*end != ' ' || slot >= RCL_SLOTS)
        return 0;
    p = end + 1;
    colon = strrchr(p, ':');
    if (!colon || colon == p || (size_t)(colon - p) >= cap)
        return 0;
    port = strtol(colon + 1, &end, 10);
    if (*end || port <= 0 || port > 65535)
        return 0;
    if (ask) {
        memcpy(ask_host, p, (size_t)(colon - p));
        ask_host[colon - p] = '\0';
        *ask_port = (int)port;
        return 2;
    }
    {
        int idx = node_find_add(c, p, (size_t)(colon - p), (int)port, NULL);
        if (idx >= 0)
            c->slot_node[slot] = (int16_t)idx;
    }
    c->stale = 1;
    return 1;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* One command on rc, with ASKING first when asked; *out any reply. */
static int send_one(struct rc *rc, int asking, int argc, const char **argv, const size_t *argvlen,
                    redisReply **out, struct err *e)
{
    redisReply *r;
    struct rc_sigpipe g;
    int code;

    if ((code = rc_connect(rc, e)))
        return code;
    rc_sigpipe_block(&g);
    if (asking) {
        r = redisCommand(rc_ctx(rc), "ASKING");
        if (r)
            freeReplyObject(r);
    }
    r = rc_ctx(rc) ? redisCommandArgv(rc_ctx(rc), argc, argv, argvlen) : NULL;
    rc_sigpipe_restore(&g);
    if (!r)
        return rc_lost(rc, argv[0], e);
    *out = r;
    return ERR_OK;
}

int rcl_command_slot(struct rcl *c, unsigned slot, int argc, const char **argv,
                     const size_t *argvlen, struct redisReply **out, struct err *e)
{
    char host[HOST_MAX + 1];
    struct rc *rc = NULL, *ask_rc = NULL;
    int port = 0, asking = 0, code = ERR_OK;

    *out = NULL;
    for (int hop = 0; hop <= HOPS_MAX; hop++) {
        redisReply *r = NULL;
        if (asking) {
            int idx = node_find_add(c, host, strlen(host), port, e);
            if (idx < 0)
                return e ? e->code : ERR_IO;
            ask_rc = c->nodes[idx].rc;
        } else if ((code = rcl_node(c, slot, &rc, e))) {
            return code;
        }
        if ((code = send_one(asking ? ask_rc : rc, asking, argc, argv, argvlen, &r, e))) {
            c->stale = 1;
            return code;
        }
        asking = 0;
        if (r->type != REDIS_REPLY_ERROR) {
            *out = r;
            return ERR_OK;
        }
        switch (rcl_redirect(c, r->str, host, sizeof(host), &port)) {
        case 2:
            asking = 1;
            break;
        case 1:
            break;
        default:
            if (strncmp(r->str, "TRYAGAIN", 8) == 0 && hop < HOPS_MAX) {
                sleep_ms(20 << hop); /* a migration moves the rest of the keys */
                break;
            }
            code = err_set(e, rc_reply_code(r->str), "redis %s (slot %u): %s", argv[0], slot,
                           r->str);
            freeReplyObject(r);
            return code;
        }
        freeReplyObject(r);
    }
    c->stale = 1;
    return err_set(e, ERR_RETRY, "redis %s (slot %u): still redirected after %d hops", argv[0],
                   slot, HOPS_MAX);
}

int rcl_command(struct rcl *c, const char *key, size_t keylen, int argc, const char **argv,
                const size_t *argvlen, struct redisReply **out, struct err *e)
{
    return rcl_command_slot(c, rcl_keyslot(key, keylen), argc, argv, argvlen, out, e);
}

static void drop_all(struct rcl *c)
{
    for (size_t i = 0; i < c->n_nodes; i++)
        rc_drop(c->nodes[i].rc);
    c->stale = 1;
}

int rcl_pipeline(struct rcl *c, size_t n, rcl_cmd_fn cmd, rcl_reply_fn reply, void *ctx,
                 size_t *done, struct err *e)
{
    int *node = malloc((n ? n : 1) * sizeof(*node));
    const char *argv[RCL_ARGS_MAX];
    size_t argvlen[RCL_ARGS_MAX];
    struct rc_sigpipe g;
    int code = ERR_OK;

    *done = 0;
    if (!node)
        return err_set(e, ERR_NOMEM, "redis cluster: out of memory for %zu commands", n);
    rc_sigpipe_block(&g);
    for (size_t i = 0; i < n && !code; i++) {
        int argc = cmd(ctx, i, argv, argvlen);
        unsigned slot = rcl_keyslot(argv[1], argvlen[1]);
        struct rc *rc;
        if ((code = rcl_node(c, slot, &rc, e)) == ERR_OK &&
            redisAppendCommandArgv(rc_ctx(rc), argc, argv, argvlen) != REDIS_OK)
            code = err_set(e, ERR_RETRY, "redis %s: connection lost", argv[0]);
        node[i] = rcl_node_index(c, slot);
    }
    for (size_t i = 0; i < n && !code; i++) {
        redisReply *r = NULL;
        char host[HOST_MAX + 1];
        int port;
        if (redisGetReply(rc_ctx(c->nodes[node[i]].rc), (void **)&r) != REDIS_OK || !r) {
            code = rc_lost(c->nodes[node[i]].rc, "pipeline", e);
            break;
        }
        if (r->type == REDIS_REPLY_ERROR && (rcl_redirect(c, r->str, host, sizeof(host), &port) ||
                                             strncmp(r->str, "TRYAGAIN", 8) == 0)) {
            node[i] = -1; /* again, on its own, below */
        } else {
            reply(ctx, i, r);
            ++*done;
        }
        freeReplyObject(r);
    }
    if (code)
        drop_all(c);
    for (size_t i = 0; i < n && !code; i++) {
        redisReply *r = NULL;
        int argc;
        if (node[i] != -1)
            continue;
        argc = cmd(ctx, i, argv, argvlen);
        if ((code = rcl_command(c, argv[1], argvlen[1], argc, argv, argvlen, &r, e)))
            break;
        reply(ctx, i, r);
        ++*done;
        freeReplyObject(r);
    }
    rc_sigpipe_restore(&g);
    free(node);
    return code;
}
