#include "covis.h"
#include "pipeline.h"
#include "evtime.h"
#include "redis_cluster.h"
#include "redis_conn.h"

#include <errno.h>
#include <hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 256

/* KEYS: trending, trending:t0, then per partition j = 1..np cvapplied:{p},
 * epoch:{p}, then per click cv:<prev>, cv:<item>.
 * ARGV: half life (s), ttl, keep, trending keep, np, the np epochs, then per
 * click prev, item, time (s), partition index (1..np; 0: none) and offset.
 * A partition whose stored epoch is newer than the caller's is fenced (its
 * clicks refused); a click at or below its partition's applied offset is
 * skipped; the applied offsets move up to the highest counted click.
 * Weights 2^((t - t0) / half life); past 2^512 the set is scaled down and
 * t0 moved, so no weight overflows a double. t0 never moves past the
 * server's clock (TIME) and the exponent is capped at 1000: one event dated
 * far ahead cannot move t0 beyond the clicks that follow it (issue 23 case
 * 3; cov_update also clamps each time to the wall clock + the maximum
 * future skew, common/codec/evtime.h). Returns {counted, skipped, fenced}. */
static const char update_script[] =
    "local hl, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
    "local keep, tkeep = tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "local np = tonumber(ARGV[5])\n"
    "local base = 5 + np\n"
    "local n = (#ARGV - base) / 5\n"
    "local ok, from, top = {}, {}, {}\n"
    "for j = 1, np do\n"
    "  local ep = tonumber(ARGV[5 + j])\n"
    "  ok[j] = true\n"
    "  if ep > 0 then\n"
    "    local held = tonumber(redis.call('GET', KEYS[2 + 2 * j]))\n"
    "    if held and held > ep then ok[j] = false\n"
    "    elseif not held or held < ep then redis.call('SET', KEYS[2 + 2 * j], ARGV[5 + j]) end\n"
    "  end\n"
    "  from[j] = tonumber(redis.call('GET', KEYS[1 + 2 * j])) or -1\n"
    "end\n"
    "local t0 = tonumber(redis.call('GET', KEYS[2]))\n"
    "local now = tonumber(redis.call('TIME')[1])\n"
    "local counted, dup, fenced = 0, 0, 0\n"
    "for i = 0, n - 1 do\n"
    "  local a = base + 5 * i\n"
    "  local prev, item, t = ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])\n"
    "  local pj, off = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])\n"
    "  if pj > 0 and not ok[pj] then\n"
    "    fenced = fenced + 1\n"
    "  elseif pj > 0 and off <= from[pj] then\n"
    "    dup = dup + 1\n"
    "  else\n"
    "    if pj > 0 and (not top[pj] or off > tonumber(top[pj])) then top[pj] = ARGV[a + 5] end\n"
    "    if not t0 then t0 = t; redis.call('SET', KEYS[2], ARGV[a + 3]) end\n"
    "    local x = (t - t0) / hl\n"
    "    if x > 512 then\n"
    "      local shift = math.min(math.floor(x), math.floor((now - t0) / hl)) - 1\n"
    "      if shift > 0 then\n"
    "        redis.call('ZUNIONSTORE', KEYS[1], 1, KEYS[1], 'WEIGHTS', string.format('%.17g', 2 ^ "
    "-shift))\n"
    "        t0 = t0 + shift * hl\n"
    "        redis.call('SET', KEYS[2], string.format('%.17g', t0))\n"
    "      end\n"
    "      x = math.min((t - t0) / hl, 1000)\n"
    "    end\n"
    "    redis.call('ZINCRBY', KEYS[1], string.format('%.17g', 2 ^ x), item)\n"
    "    if prev ~= '-1' and prev ~= item then\n"
    "      local ka, kb = KEYS[3 + 2 * np + 2 * i], KEYS[4 + 2 * np + 2 * i]\n"
    "      redis.call('ZINCRBY', ka, 1, item)\n"
    "      redis.call('ZINCRBY', kb, 1, prev)\n"
    "      redis.call('ZREMRANGEBYRANK', ka, 0, -keep - 1)\n"
    "      redis.call('ZREMRANGEBYRANK', kb, 0, -keep - 1)\n"
    "      if ttl > 0 then redis.call('EXPIRE', ka, ttl); redis.call('EXPIRE', kb, ttl) end\n"
    "    end\n"
    "    counted = counted + 1\n"
    "  end\n"
    "end\n"
    "for j, o in pairs(top) do redis.call('SET', KEYS[1 + 2 * j], o) end\n"
    "if counted > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tkeep - 1) end\n"
    "return {counted, dup, fenced}\n";

struct cov {
    struct rc *rc;  /* one server */
    struct rcl *cl; /* or a cluster (redis.nodes) */
    struct rc *cur; /* the connection in use */
    char *prefix;
    int ttl_s;
    double half_life_s;
    /* argv scratch, grown to the largest batch */
    const char **argv;
    size_t *argvlen;
    char (*keys)[KEY_MAX];
    char (*nums)[32];
    size_t cap;
    /* distinct partitions of one call, and the epoch sent for each */
    int32_t part[COV_MAX_PARTITIONS];
    int64_t part_epoch[COV_MAX_PARTITIONS];
    int *pidx; /* per click: 1 + its index in part, 0: no partition */
};

static char *dup_or(const char *s, const char *def)
{
    return strdup(s && *s ? s : def);
}

int cov_open(struct cov **out, const struct cov_opts *o, struct err *e)
{
    struct cov *c = calloc(1, sizeof(*c));

    *out = NULL;
    if (!(o->half_life_s > 0))
        return free(c),
               err_set(e, ERR_CONFIG, "trending half life %g s: must be > 0", o->half_life_s);
    struct rc_opts ro = {.host = o->host, .port = o->port, .username = o->username,
                         .password = o->password, .timeout_ms = o->timeout_ms};
    const char *nodes = rcl_default_nodes();
    char tagged[KEY_MAX];

    /* Redis Cluster: one update is one script over the global trending set,
     * the items' sets and the partitions' applied offsets, so every key
     * shares the hash tag {cv} (after the prefix): all live on one master,
     * and the epoch key there is that slot's copy (docs/delivery.md). */
    snprintf(tagged, sizeof(tagged), "%.200s{cv}", o->prefix ? o->prefix : "");
    if (!c || !(c->prefix = dup_or(nodes ? tagged : o->prefix, ""))) {
        cov_close(c);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    if (nodes ? rcl_open(&c->cl, nodes, &ro, e) : rc_open(&c->rc, &ro, e)) {
        cov_close(c);
        return e ? e->code : ERR_CONFIG;
    }
    c->ttl_s = o->ttl_s;
    c->half_life_s = o->half_life_s;
    *out = c;
    return ERR_OK;
}

void cov_close(struct cov *c)
{
    if (!c)
        return;
    rc_close(c->rc);
    rcl_close(c->cl);
    free(c->prefix);
    free(c->argv);
    free(c->argvlen);
    free(c->keys);
    free(c->nums);
    free(c->pidx);
    free(c);
}

/* ---- connection: common/io/redis_conn.h (connect, ACL user, SIGPIPE) ---- */

static int lost(struct cov *c, const char *what, struct err *e)
{
    if (c->cl)
        rcl_invalidate(c->cl);
    return rc_lost(c->cur, what, e);
}

/* The connection: the server's, or the master of the {cv} slot. */
static int connect_once(struct cov *c, struct err *e)
{
    if (c->cl) {
        char key[KEY_MAX];
        int n = snprintf(key, sizeof(key), "%strending", c->prefix);
        return rcl_node(c->cl, rcl_keyslot(key, (size_t)n), &c->cur, e);
    }
    c->cur = c->rc;
    return rc_connect(c->rc, e);
}

/* Room for the arguments of n clicks over up to COV_MAX_PARTITIONS
 * partitions (10 + 3 np + 7 n in all). */
static int grow(struct cov *c, size_t n, struct err *e)
{
    size_t need = 16 + 3 * (size_t)COV_MAX_PARTITIONS + 7 * n;

    if (need <= c->cap)
        return ERR_OK;
    free(c->argv);
    free(c->argvlen);
    free(c->keys);
    free(c->nums);
    free(c->pidx);
    c->argv = malloc(need * sizeof(*c->argv));
    c->argvlen = malloc(need * sizeof(*c->argvlen));
    c->keys = malloc(need * sizeof(*c->keys));
    c->nums = malloc(need * sizeof(*c->nums));
    c->pidx = malloc(need * sizeof(*c->pidx));
    c->cap = c->argv && c->argvlen && c->keys && c->nums && c->pidx ? need : 0;
    return c->cap ? ERR_OK : err_set(e, ERR_NOMEM, "out of memory for %zu clicks", n);
}

static void arg(struct cov *c, size_t *k, const char *s)
{
    c->argv[*k] = s;
    c->argvlen[*k] = strlen(s);
    (*k)++;
}

/* A reply that is an error: ERR_CONFIG (the script or a key type is wrong,
 * retrying will not help), naming the command. */
static int reply_error(struct cov *c, redisReply *r, const char *what, struct err *e)
{
    char host[256];
    int port, code = ERR_CONFIG;

    /* a cluster's slot moved or migrating, a failover under way: retry */
    if (c->cl && (rcl_redirect(c->cl, r->str, host, sizeof(host), &port) ||
                  rc_reply_code(r->str) == ERR_RETRY)) {
        code = ERR_RETRY;
        rcl_invalidate(c->cl);
    }
    err_set(e, code, "redis %s (%s:%d): %s", what, rc_host(c->cur), rc_port(c->cur), r->str);
    freeReplyObject(r);
    return code;
}

static void build_keys(struct cov *c, size_t n, const struct cov_click *clicks, size_t np,
                       size_t *k)
{
    size_t nk = 0;

    snprintf(c->keys[nk], KEY_MAX, "%strending", c->prefix);
    arg(c, k, c->keys[nk++]);
    snprintf(c->keys[nk], KEY_MAX, "%strending:t0", c->prefix);
    arg(c, k, c->keys[nk++]);
    for (size_t j = 0; j < np; j++) {
        snprintf(c->keys[nk], KEY_MAX, "%scvapplied:{%d}", c->prefix, (int)c->part[j]);
        arg(c, k, c->keys[nk++]);
        /* the session state's epoch key (state_redis.c): one owner for both */
        snprintf(c->keys[nk], KEY_MAX, "%sepoch:{%d}", c->prefix, (int)c->part[j]);
        arg(c, k, c->keys[nk++]);
    }
    for (size_t i = 0; i < n; i++) {
        snprintf(c->keys[nk], KEY_MAX, "%scv:%" PRId64, c->prefix, clicks[i].prev);
        arg(c, k, c->keys[nk++]);
        snprintf(c->keys[nk], KEY_MAX, "%scv:%" PRId64, c->prefix, clicks[i].item);
        arg(c, k, c->keys[nk++]);
    }
}

static void build_args(struct cov *c, size_t n, const struct cov_click *clicks, size_t np,
                       size_t *k)
{
    size_t nn = 1; /* nums[0] is the key count */
    /* No click weighs as if later than the admissible future (the decoders
     * refuse such clicks; this protects the set from other callers too). */
    int64_t tmax = evt_now_ms() + evt_max_future_skew_ms();

#define NUM(...)                                                                                  \
    do {                                                                                          \
        snprintf(c->nums[nn], 32, __VA_ARGS__);                                                   \
        arg(c, k, c->nums[nn++]);                                                                 \
    } while (0)
    NUM("%.17g", c->half_life_s);
    NUM("%d", c->ttl_s);
    NUM("%d", COV_KEEP);
    NUM("%d", COV_TRENDING_KEEP);
    NUM("%zu", np);
    for (size_t j = 0; j < np; j++)
        NUM("%" PRId64, c->part_epoch[j] > 0 ? c->part_epoch[j] : 0);
    for (size_t i = 0; i < n; i++) {
        NUM("%" PRId64, clicks[i].prev < 0 ? -1 : clicks[i].prev);
        NUM("%" PRId64, clicks[i].item);
        NUM("%.3f", (double)(clicks[i].time_ms < tmax ? clicks[i].time_ms : tmax) / 1000.0);
        NUM("%d", c->pidx[i]);
        NUM("%" PRId64, clicks[i].offset);
    }
#undef NUM
}

static void add_result(const redisReply *r, struct cov_result *res)
{
    size_t *f[3] = {&res->counted, &res->redelivered, &res->fenced};

    for (size_t j = 0; j < 3 && r->type == REDIS_REPLY_ARRAY && j < r->elements; j++)
        if (r->element[j]->type == REDIS_REPLY_INTEGER && r->element[j]->integer >= 0)
            *f[j] += (size_t)r->element[j]->integer;
}

/* One script call for the first *taken clicks (as many as fit
 * COV_MAX_PARTITIONS partitions). */
static int update_chunk(struct cov *c, size_t n, const struct cov_click *clicks, size_t *taken,
                        struct cov_result *res, struct err *e)
{
    size_t k = 0, np = 0;
    redisReply *r;

    n = *taken = pipe_index_partitions(clicks, n, PIPE_PART_REF(struct cov_click),
                                       COV_MAX_PARTITIONS, c->part, c->part_epoch, c->pidx, &np);
    arg(c, &k, "EVAL");
    arg(c, &k, update_script);
    snprintf(c->nums[0], 32, "%zu", 2 + 2 * np + 2 * n);
    arg(c, &k, c->nums[0]);
    build_keys(c, n, clicks, np, &k);
    build_args(c, n, clicks, np, &k);
    r = redisCommandArgv(rc_ctx(c->cur), (int)k, c->argv, c->argvlen);
    if (!r)
        return lost(c, "EVAL (co-visitation update)", e);
    if (r->type == REDIS_REPLY_ERROR)
        return reply_error(c, r, "EVAL (co-visitation update)", e);
    add_result(r, res);
    freeReplyObject(r);
    return ERR_OK;
}

/* A batch over more than COV_MAX_PARTITIONS partitions takes several
 * calls, in click order: a partition's clicks split over two calls keep
 * their offset order, so the applied offsets stay exact even if a crash
 * falls between the calls. */
static int update_unguarded(struct cov *c, size_t n, const struct cov_click *clicks,
                            struct cov_result *res, struct err *e)
{
    struct cov_result dummy;
    size_t done = 0;
    int rc;

    res = res ? res : &dummy;
    *res = (struct cov_result){0};
    if (!n)
        return ERR_OK;
    if ((rc = grow(c, n, e)) || (rc = connect_once(c, e)))
        return rc;
    while (done < n) {
        size_t taken;
        if ((rc = update_chunk(c, n - done, clicks + done, &taken, res, e)))
            return rc;
        done += taken;
    }
    return ERR_OK;
}

/* Members of a ZREVRANGE reply as item ids; non-numeric members skipped. */
static int members(const redisReply *r, int64_t *out, int k)
{
    int n = 0;

    for (size_t j = 0; r->type == REDIS_REPLY_ARRAY && j < r->elements && n < k; j++) {
        const redisReply *m = r->element[j];
        char *end;
        long long v;
        if (m->type != REDIS_REPLY_STRING)
            continue;
        errno = 0;
        v = strtoll(m->str, &end, 10);
        if (end != m->str && !*end && !errno && v >= 0)
            out[n++] = v;
    }
    return n;
}

static int covisited_unguarded(struct cov *c, size_t n, const int64_t *items, int k,
                               int64_t *out, int *counts, struct err *e)
{
    char key[KEY_MAX];
    int rc;

    if ((rc = connect_once(c, e)))
        return rc;
    for (size_t i = 0; i < n; i++) {
        counts[i] = 0;
        if (items[i] < 0)
            continue;
        snprintf(key, sizeof(key), "%scv:%" PRId64, c->prefix, items[i]);
        if (redisAppendCommand(rc_ctx(c->cur), "ZREVRANGE %s 0 %d", key, k - 1) != REDIS_OK)
            return lost(c, "ZREVRANGE", e);
    }
    for (size_t i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (items[i] < 0)
            continue;
        if (redisGetReply(rc_ctx(c->cur), (void **)&r) != REDIS_OK || !r)
            return lost(c, "ZREVRANGE", e);
        if (r->type == REDIS_REPLY_ERROR) {
            rc = reply_error(c, r, "ZREVRANGE", e);
            rc_drop(c->cur); /* replies of the rest are still queued */
            return rc;
        }
        counts[i] = members(r, out + i * (size_t)k, k);
        freeReplyObject(r);
    }
    return ERR_OK;
}

static int trending_unguarded(struct cov *c, int k, int64_t *out, int *n, struct err *e)
{
    char key[KEY_MAX];
    redisReply *r;
    int rc;

    *n = 0;
    if ((rc = connect_once(c, e)))
        return rc;
    snprintf(key, sizeof(key), "%strending", c->prefix);
    r = redisCommand(rc_ctx(c->cur), "ZREVRANGE %s 0 %d", key, k - 1);
    if (!r)
        return lost(c, "ZREVRANGE trending", e);
    if (r->type == REDIS_REPLY_ERROR)
        return reply_error(c, r, "ZREVRANGE trending", e);
    *n = members(r, out, k);
    freeReplyObject(r);
    return ERR_OK;
}

/* ---- public calls: SIGPIPE blocked around each (redis_conn.h) ---- */

int cov_update(struct cov *c, size_t n, const struct cov_click *clicks, struct cov_result *res,
               struct err *e)
{
    struct rc_sigpipe g;
    int rc;

    rc_sigpipe_block(&g);
    rc = update_unguarded(c, n, clicks, res, e);
    rc_sigpipe_restore(&g);
    return rc;
}

int cov_covisited(struct cov *c, size_t n, const int64_t *items, int k, int64_t *out, int *counts,
                  struct err *e)
{
    struct rc_sigpipe g;
    int rc;

    rc_sigpipe_block(&g);
    rc = covisited_unguarded(c, n, items, k, out, counts, e);
    rc_sigpipe_restore(&g);
    return rc;
}

int cov_trending(struct cov *c, int k, int64_t *out, int *n, struct err *e)
{
    struct rc_sigpipe g;
    int rc;

    rc_sigpipe_block(&g);
    rc = trending_unguarded(c, k, out, n, e);
    rc_sigpipe_restore(&g);
    return rc;
}
