/* cout_: outcomes of published recommendations (common/streams/clickout.h). */
#include "clickout.h"
#include "pipeline.h"
#include "redis_cluster.h"
#include "redis_conn.h"

#include <errno.h>
#include <hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 256
#define NUM_MAX 32
#define CSV_MAX (CLICK_SHOWN_MAX * 26) /* 64 items of up to 25 characters and a comma */
#define F 13                           /* arguments per click */

/* KEYS: per partition j = 1..np coapplied:{p}, epoch:{p}, codone:{p}; then
 * per click cos:<session>.
 * ARGV: horizon (ms), keep_recs, keep_offsets, np, the np epochs, then per
 * click: partition index (1..np; 0: none), offset, event time (ms), type
 * (0 view, 1 cart, 2 purchase), item, price, event id, has a
 * recommendation (1/0), experiment, arm, unit, items and propensities
 * (comma-separated).
 * A redelivered click's recommendation, answered again (possibly from a
 * newer session state), replaces the remembered one while nothing has been
 * joined to it: the items remembered are the ones published last.
 * Per click it returns {status, outcome...}: status 0 applied now, 1
 * redelivered (the outcomes stored the first time), 2 fenced; an outcome
 * is {type, rec event id, rec time, experiment, arm, unit, item, position,
 * propensity, items shown, revenue}. Everything it keeps is strings, so no
 * number passes through Lua's doubles but the times and offsets it
 * compares (exact below 2^53). */
static const char join_script[] =
    "local H, KR, KO = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local np = tonumber(ARGV[4])\n"
    "local base, F = 4 + np, 13\n"
    "local n = (#ARGV - base) / F\n"
    "local TN = {'click', 'cart', 'purchase'}\n"
    "local ok, from, top = {}, {}, {}\n"
    "for j = 1, np do\n"
    "  local ep = tonumber(ARGV[4 + j])\n"
    "  ok[j] = true\n"
    "  if ep > 0 then\n"
    "    local held = tonumber(redis.call('GET', KEYS[3 * j - 1]))\n"
    "    if held and held > ep then ok[j] = false\n"
    "    elseif not held or held < ep then redis.call('SET', KEYS[3 * j - 1], ARGV[4 + j]) end\n"
    "  end\n"
    "  from[j] = tonumber(redis.call('GET', KEYS[3 * j - 2])) or -1\n"
    "end\n"
    "local function split(s)\n"
    "  local r = {}\n"
    "  for x in string.gmatch(s, '[^,]+') do r[#r + 1] = x end\n"
    "  return r\n"
    "end\n"
    "local out = {}\n"
    "for i = 0, n - 1 do\n"
    "  local a = base + F * i\n"
    "  local pj, off = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])\n"
    "  if pj > 0 and not ok[pj] then\n"
    "    out[#out + 1] = {2}\n"
    "  elseif pj > 0 and off <= from[pj] then\n"
    "    if ARGV[a + 8] == '1' then\n"
    "      local sk = KEYS[3 * np + 1 + i]\n"
    "      for k, s in ipairs(redis.call('LRANGE', sk, 0, -1)) do\n"
    "        local q = cjson.decode(s)\n"
    "        if q.e == ARGV[a + 7] then\n"
    "          if next(q.d) == nil then\n"
    "            q.i, q.p = split(ARGV[a + 12]), split(ARGV[a + 13])\n"
    "            redis.call('LSET', sk, k - 1, cjson.encode(q))\n"
    "          end\n"
    "          break\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "    local r = {1}\n"
    "    local got = redis.call('ZRANGEBYSCORE', KEYS[3 * pj], off, off)\n"
    "    if #got > 0 then\n"
    "      local s = got[1]\n"
    "      local js = string.sub(s, string.find(s, '|', 1, true) + 1)\n"
    "      for _, o in ipairs(cjson.decode(js)) do r[#r + 1] = o end\n"
    "    end\n"
    "    out[#out + 1] = r\n"
    "  else\n"
    "    local t, typ, item = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), ARGV[a + 5]\n"
    "    local sk, res = KEYS[3 * np + 1 + i], {}\n"
    "    for k, s in ipairs(redis.call('LRANGE', sk, 0, -1)) do\n"
    "      local r = cjson.decode(s)\n"
    "      local rt, pos = tonumber(r.t), nil\n"
    "      if rt <= t and t - rt <= H then\n"
    "        for q, it in ipairs(r.i) do if it == item then pos = q; break end end\n"
    "      end\n"
    "      if pos then\n"
    "        local mark = item .. ':' .. typ\n"
    "        if not r.d[mark] then\n"
    "          r.d[mark] = 1\n"
    "          redis.call('LSET', sk, k - 1, cjson.encode(r))\n"
    "          res[#res + 1] = {TN[typ + 1], r.e, r.t, r.x, r.v, r.u, item, tostring(pos - 1),\n"
    "                           r.p[pos] or '0', tostring(#r.i), typ == 2 and ARGV[a + 6] or '0'}\n"
    "        end\n"
    "        break\n"
    "      end\n"
    "    end\n"
    "    if ARGV[a + 8] == '1' then\n"
    "      local r = {e = ARGV[a + 7], t = ARGV[a + 3], x = ARGV[a + 9], v = ARGV[a + 10],\n"
    "                 u = ARGV[a + 11], i = split(ARGV[a + 12]), p = split(ARGV[a + 13]), d = {}}\n"
    "      redis.call('LPUSH', sk, cjson.encode(r))\n"
    "      redis.call('LTRIM', sk, 0, KR - 1)\n"
    "      redis.call('PEXPIRE', sk, H)\n"
    "      res[#res + 1] = {'impression', r.e, r.t, r.x, r.v, r.u, '-1', '-1', '1',\n"
    "                       tostring(#r.i), '0'}\n"
    "    end\n"
    "    if pj > 0 then\n"
    "      redis.call('ZADD', KEYS[3 * pj], off, ARGV[a + 2] .. '|' .. cjson.encode(res))\n"
    "      if not top[pj] or off > tonumber(top[pj]) then top[pj] = ARGV[a + 2] end\n"
    "    end\n"
    "    local r = {0}\n"
    "    for _, o in ipairs(res) do r[#r + 1] = o end\n"
    "    out[#out + 1] = r\n"
    "  end\n"
    "end\n"
    "for j, o in pairs(top) do\n"
    "  redis.call('SET', KEYS[3 * j - 2], o)\n"
    "  redis.call('ZREMRANGEBYSCORE', KEYS[3 * j], '-inf', '(' .. string.format('%.0f', "
    "tonumber(o) - KO))\n"
    "end\n"
    "return out\n";

struct cout {
    struct rc *rc;
    struct rcl *cl;
    struct rc *cur;
    char *prefix;
    int64_t horizon_ms;
    int keep_recs;
    const char **argv;
    size_t *argvlen;
    char (*keys)[KEY_MAX];
    char (*nums)[NUM_MAX];
    char (*csv)[CSV_MAX];
    size_t cap; /* clicks the scratch holds */
    int32_t part[COUT_MAX_PARTITIONS];
    int64_t part_epoch[COUT_MAX_PARTITIONS];
    int *pidx;
};

int cout_open(struct cout **out, const struct cout_opts *o, struct err *e)
{
    struct cout *c;
    struct rc_opts ro = {.host = o->host, .port = o->port, .username = o->username,
                         .password = o->password, .timeout_ms = o->timeout_ms};
    const char *nodes = rcl_default_nodes();
    char tagged[KEY_MAX];

    *out = NULL;
    if (o->horizon_ms <= 0 || o->keep_recs < 1)
        return err_set(e, ERR_CONFIG, "outcomes: horizon %" PRId64 " ms and %d remembered "
                                      "recommendations: both must be > 0",
                       o->horizon_ms, o->keep_recs);
    if (!(c = calloc(1, sizeof(*c))))
        return err_set(e, ERR_NOMEM, "out of memory");
    /* one script over sessions and partitions: on a cluster every key in one slot ({co}) */
    snprintf(tagged, sizeof(tagged), "%.200s%s", o->prefix ? o->prefix : "", nodes ? "{co}" : "");
    if (!(c->prefix = strdup(tagged))) {
        free(c);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    if (nodes ? rcl_open(&c->cl, nodes, &ro, e) : rc_open(&c->rc, &ro, e)) {
        cout_close(c);
        return e->code;
    }
    c->horizon_ms = o->horizon_ms;
    c->keep_recs = o->keep_recs;
    *out = c;
    return ERR_OK;
}

static void free_scratch(struct cout *c)
{
    free(c->argv);
    free(c->argvlen);
    free(c->keys);
    free(c->nums);
    free(c->csv);
    free(c->pidx);
}

void cout_close(struct cout *c)
{
    if (!c)
        return;
    rc_close(c->rc);
    rcl_close(c->cl);
    free(c->prefix);
    free_scratch(c);
    free(c);
}

/* Scratch for n clicks over up to COUT_MAX_PARTITIONS partitions. */
static int grow(struct cout *c, size_t n, struct err *e)
{
    size_t nargs = 8 + 4 * (size_t)COUT_MAX_PARTITIONS + (F + 1) * n;

    if (n <= c->cap)
        return ERR_OK;
    free_scratch(c);
    c->argv = malloc(nargs * sizeof(*c->argv));
    c->argvlen = malloc(nargs * sizeof(*c->argvlen));
    c->keys = malloc((3 * (size_t)COUT_MAX_PARTITIONS + n) * sizeof(*c->keys));
    c->nums = malloc((8 + (size_t)COUT_MAX_PARTITIONS + 8 * n) * sizeof(*c->nums));
    c->csv = malloc(2 * n * sizeof(*c->csv));
    c->pidx = malloc(n * sizeof(*c->pidx));
    c->cap = c->argv && c->argvlen && c->keys && c->nums && c->csv && c->pidx ? n : 0;
    return c->cap ? ERR_OK : err_set(e, ERR_NOMEM, "out of memory for %zu clicks", n);
}

static int lost(struct cout *c, const char *what, struct err *e)
{
    if (c->cl)
        rcl_invalidate(c->cl);
    return rc_lost(c->cur, what, e);
}

static int connect_once(struct cout *c, struct err *e)
{
    if (c->cl) {
        char key[KEY_MAX];
        int n = snprintf(key, sizeof(key), "%scoapplied:{0}", c->prefix);
        return rcl_node(c->cl, rcl_keyslot(key, (size_t)n), &c->cur, e);
    }
    c->cur = c->rc;
    return rc_connect(c->rc, e);
}

static int reply_error(struct cout *c, redisReply *r, struct err *e)
{
    char host[256];
    int port, code = ERR_CONFIG;

    if (c->cl && (rcl_redirect(c->cl, r->str, host, sizeof(host), &port) ||
                  rc_reply_code(r->str) == ERR_RETRY)) {
        code = ERR_RETRY;
        rcl_invalidate(c->cl);
    }
    err_set(e, code, "redis EVAL (outcome join) (%s:%d): %s", rc_host(c->cur), rc_port(c->cur),
            r->str);
    freeReplyObject(r);
    return code;
}

static void arg(struct cout *c, size_t *k, const char *s)
{
    c->argv[*k] = s;
    c->argvlen[*k] = strlen(s);
    (*k)++;
}

/* The items and propensities of rec as two comma-separated lists. */
static void rec_csv(const struct click_prediction *p, char *items, char *props)
{
    size_t a = 0, b = 0;

    items[0] = props[0] = '\0';
    for (int j = 0; p && j < p->n_items && j < CLICK_SHOWN_MAX; j++) {
        a += (size_t)snprintf(items + a, CSV_MAX - a, "%s%" PRId64, j ? "," : "",
                              p->items[j].item_id);
        b += (size_t)snprintf(props + b, CSV_MAX - b, "%s%.17g", j ? "," : "",
                              p->items[j].propensity);
    }
}

static void build(struct cout *c, size_t n, const struct cout_click *in, size_t np, size_t *k)
{
    size_t nk = 0, nn = 0;

#define NUM(...)                                                                                  \
    do {                                                                                          \
        snprintf(c->nums[nn], NUM_MAX, __VA_ARGS__);                                              \
        arg(c, k, c->nums[nn++]);                                                                 \
    } while (0)
    arg(c, k, "EVAL");
    arg(c, k, join_script);
    NUM("%zu", 3 * np + n);
    for (size_t j = 0; j < np; j++) {
        static const char *const kinds[] = {"coapplied", "epoch", "codone"};
        for (int q = 0; q < 3; q++) {
            /* epoch: the session state's key (state_redis.c), one owner for all */
            snprintf(c->keys[nk], KEY_MAX, "%s%s:{%d}", c->prefix, kinds[q], (int)c->part[j]);
            arg(c, k, c->keys[nk++]);
        }
    }
    for (size_t i = 0; i < n; i++) {
        snprintf(c->keys[nk], KEY_MAX, "%scos:%s", c->prefix, in[i].ev->session_id);
        arg(c, k, c->keys[nk++]);
    }
    NUM("%" PRId64, c->horizon_ms);
    NUM("%d", c->keep_recs);
    NUM("%d", COUT_KEEP_OFFSETS);
    NUM("%zu", np);
    for (size_t j = 0; j < np; j++)
        NUM("%" PRId64, c->part_epoch[j] > 0 ? c->part_epoch[j] : 0);
    for (size_t i = 0; i < n; i++) {
        const struct cout_click *x = &in[i];
        const struct click_prediction *p = x->rec;
        NUM("%d", c->pidx[i]);
        NUM("%" PRId64, x->offset);
        NUM("%" PRId64, x->ev->event_time_ms);
        NUM("%d", (int)x->ev->type);
        NUM("%" PRId64, x->ev->item_id);
        NUM("%.17g", x->ev->price);
        arg(c, k, x->ev->event_id);
        arg(c, k, p ? "1" : "0");
        arg(c, k, p ? p->experiment_id : "");
        arg(c, k, p ? p->variant : "");
        arg(c, k, x->unit_id ? x->unit_id : x->ev->session_id);
        rec_csv(p, c->csv[2 * i], c->csv[2 * i + 1]);
        arg(c, k, c->csv[2 * i]);
        arg(c, k, c->csv[2 * i + 1]);
    }
#undef NUM
}

/* A reply element as text (the script returns strings; counts may be integers). */
static const char *text(const redisReply *r, char *tmp, size_t cap)
{
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
        return r->str;
    if (r->type == REDIS_REPLY_INTEGER) {
        snprintf(tmp, cap, "%lld", r->integer);
        return tmp;
    }
    return "";
}

/* One outcome {type, rec event id, rec time, experiment, arm, unit, item,
 * position, propensity, items shown, revenue} of click x into o. */
static int fill(const redisReply *r, const struct cout_click *x, struct click_outcome *o,
                struct err *e)
{
    char t[11][NUM_MAX];
    const char *f[11];
    enum click_outcome_type ty;

    if (r->type != REDIS_REPLY_ARRAY || r->elements != 11)
        return err_set(e, ERR_IO, "outcome join: a malformed outcome for %s", x->ev->event_id);
    for (int j = 0; j < 11; j++)
        f[j] = text(r->element[j], t[j], sizeof(t[j]));
    for (ty = OUT_IMPRESSION; ty <= OUT_PURCHASE; ty++)
        if (strcmp(f[0], click_outcome_type_name(ty)) == 0)
            break;
    if (ty > OUT_PURCHASE)
        return err_set(e, ERR_IO, "outcome join: unknown outcome type \"%.20s\"", f[0]);
    memset(o, 0, sizeof(*o));
    o->type = ty;
    snprintf(o->outcome_id, sizeof(o->outcome_id), "%s:%d:%" PRId64 ":%s", x->topic,
             (int)x->partition, x->offset, f[0]);
    snprintf(o->rec_event_id, sizeof(o->rec_event_id), "%s", f[1]);
    o->rec_time_ms = strtoll(f[2], NULL, 10);
    snprintf(o->experiment_id, sizeof(o->experiment_id), "%s", f[3]);
    snprintf(o->variant, sizeof(o->variant), "%s", f[4]);
    snprintf(o->unit_id, sizeof(o->unit_id), "%s", f[5]);
    o->item_id = strtoll(f[6], NULL, 10);
    o->position = (int32_t)strtol(f[7], NULL, 10);
    o->propensity = strtod(f[8], NULL);
    o->n_items = (int32_t)strtol(f[9], NULL, 10);
    o->revenue = strtod(f[10], NULL);
    memcpy(o->session_id, x->ev->session_id, sizeof(o->session_id));
    memcpy(o->event_id, x->ev->event_id, sizeof(o->event_id));
    o->event_time_ms = x->ev->event_time_ms;
    snprintf(o->src_topic, sizeof(o->src_topic), "%s", x->topic ? x->topic : "");
    o->src_partition = x->partition;
    o->src_offset = x->offset;
    return ERR_OK;
}

static int chunk(struct cout *c, size_t n, const struct cout_click *in, struct click_outcome *out,
                 size_t *first, size_t *taken, struct cout_result *res, struct err *e)
{
    size_t k = 0, np = 0, no = first[0];
    redisReply *r;
    int rc = ERR_OK;

    n = *taken = pipe_index_partitions(in, n, PIPE_PART_REF(struct cout_click),
                                       COUT_MAX_PARTITIONS, c->part, c->part_epoch, c->pidx, &np);
    build(c, n, in, np, &k);
    r = redisCommandArgv(rc_ctx(c->cur), (int)k, c->argv, c->argvlen);
    if (!r)
        return lost(c, "EVAL (outcome join)", e);
    if (r->type == REDIS_REPLY_ERROR)
        return reply_error(c, r, e);
    if (r->type != REDIS_REPLY_ARRAY || r->elements != n) {
        rc = err_set(e, ERR_IO, "outcome join: %zu answers for %zu clicks",
                     r->type == REDIS_REPLY_ARRAY ? r->elements : 0, n);
        freeReplyObject(r);
        return rc;
    }
    for (size_t i = 0; i < n && !rc; i++) {
        const redisReply *ci = r->element[i];
        long long st = ci->type == REDIS_REPLY_ARRAY && ci->elements &&
                               ci->element[0]->type == REDIS_REPLY_INTEGER
                           ? ci->element[0]->integer
                           : -1;
        first[i] = no;
        if (st < 0 || st > 2 || ci->elements > 3) {
            rc = err_set(e, ERR_IO, "outcome join: a malformed answer for %s", in[i].ev->event_id);
            break;
        }
        *(st == 0 ? &res->applied : st == 1 ? &res->redelivered : &res->fenced) += 1;
        for (size_t j = 1; j < ci->elements && !rc; j++)
            rc = fill(ci->element[j], &in[i], &out[no++], e);
    }
    first[n] = no;
    freeReplyObject(r);
    return rc;
}

static int join_unguarded(struct cout *c, size_t n, const struct cout_click *in,
                          struct click_outcome *out, size_t *first, struct cout_result *res,
                          struct err *e)
{
    size_t done = 0;
    int rc;

    first[0] = 0;
    if (!n)
        return ERR_OK;
    if ((rc = grow(c, n, e)) || (rc = connect_once(c, e)))
        return rc;
    /* several calls only past COUT_MAX_PARTITIONS partitions, in click order */
    while (done < n) {
        size_t taken;
        if ((rc = chunk(c, n - done, in + done, out, first + done, &taken, res, e)))
            return rc;
        done += taken;
    }
    return ERR_OK;
}

int cout_join(struct cout *c, size_t n, const struct cout_click *in, struct click_outcome *out,
              size_t *first, struct cout_result *res, struct err *e)
{
    struct cout_result dummy;
    struct rc_sigpipe g;
    int rc;

    res = res ? res : &dummy;
    *res = (struct cout_result){0};
    rc_sigpipe_block(&g);
    rc = join_unguarded(c, n, in, out, first, res, e);
    rc_sigpipe_restore(&g);
    return rc;
}
