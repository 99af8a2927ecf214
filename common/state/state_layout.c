/* common/state/state_layout.c: how the Redis backends lay a user's state out
 * (private to common/state; state_backend.h declares it).
 *
 * Layout 2 (this build writes it on an empty store): <prefix>u:{<entity>} is
 * a string "<partition>:<offset>|<blob>", written with one SET ... PX (the
 * value and its expiry in one command). Layout 1 (stores written before):
 * a hash with fields s (blob), p and o, written with HSET then PEXPIRE.
 * Layout 2 costs redis-server about a third less per put and a fifth of the
 * read (one MGET per chunk instead of an HMGET per user): bench/results.md,
 * "Issue 19: Redis CPU per event".
 *
 * Layout 3 (state_bucket.c, state.layout=3): users as fields of hash
 * buckets, "3:<buckets>" in <prefix>layout; its script is below too.
 *
 * A store says which it holds in <prefix>layout ("1" or "2"), decided once:
 * a store with data (its <prefix>marker present) and no layout key is one
 * written before layouts were versioned, layout 1, and is read and written
 * as such; an empty store becomes layout 2. Any other value is refused, so
 * a state is never read with the wrong layout. Within a layout-2 store a key
 * of another type (a hash some older worker created) is refused per key
 * (WRONGTYPE from GET), never taken for "nothing stored".
 */
#include "state_backend.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Layout 1: one EVALSHA per chunk of puts (state_redis.c documents the
 * argument layout, shared by both scripts).
 * Per put, the same rule as a script per put would apply: refused (2) when
 * the partition's stored epoch is newer than the one held; skipped (0) when
 * the entity already holds this partition at this offset or later; else
 * refused as a conflict (3) when it has a base and the stored position is
 * not that base; else written (1). An error on one key (WRONGTYPE) is that
 * put's reply and the others still apply. applied:{p} keeps the highest
 * offset written. Numbers go to Redis as the strings they came in (a Lua
 * number would be formatted with snprintf per call), and the stored
 * partition is compared as the decimal string both sides write. */
#define SCRIPT_FENCE                                                                               \
    "local n, m, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]\n"                          \
    "local expire = tonumber(ttl) > 0\n"                                                           \
    "local fenced, top, topstr, res = {}, {}, {}, {}\n"                                            \
    "for j = 1, m do\n"                                                                            \
    "  local ep = tonumber(ARGV[3 + 2 * j])\n"                                                     \
    "  if ep > 0 then\n"                                                                           \
    "    local ek = KEYS[n + 2 * j]\n"                                                             \
    "    local held = tonumber(redis.call('GET', ek))\n"                                           \
    "    if held and held > ep then fenced[j] = true\n"                                            \
    "    elseif not held or held < ep then redis.call('SET', ek, ARGV[3 + 2 * j]) end\n"           \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "local base = 3 + 2 * m\n"
#define SCRIPT_APPLIED                                                                             \
    "for j = 1, m do\n"                                                                            \
    "  if top[j] then\n"                                                                           \
    "    local ak = KEYS[n + 2 * j - 1]\n"                                                         \
    "    local a = tonumber(redis.call('GET', ak))\n"                                              \
    "    if not a or top[j] > a then redis.call('SET', ak, topstr[j]) end\n"                       \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "return res\n"

const char state_redis_put_script[] = SCRIPT_FENCE
    "for i = 1, n do\n"
    "  local a = base + 4 * (i - 1)\n"
    "  local j = tonumber(ARGV[a + 2])\n"
    "  if fenced[j] then\n"
    "    res[i] = 2\n"
    "  else\n"
    "    local k, ps, os = KEYS[i], ARGV[2 + 2 * j], ARGV[a + 3]\n"
    "    local o = tonumber(os)\n"
    "    local cur = redis.pcall('HMGET', k, 'p', 'o')\n"
    "    if cur.err then\n"
    "      res[i] = cur\n"
    "    elseif cur[1] == ps and cur[2] and tonumber(cur[2]) >= o then\n"
    "      res[i] = 0\n"
    "    elseif ARGV[a + 4] ~= '' and ARGV[a + 4] ~=\n"
    "        (cur[1] and (cur[1] .. ':' .. (cur[2] or '')) or '-') then\n"
    "      res[i] = 3\n"
    "    else\n"
    "      redis.call('HSET', k, 's', ARGV[a + 1], 'p', ps, 'o', os)\n"
    "      if expire then redis.call('PEXPIRE', k, ttl) end\n"
    "      if not top[j] or o > top[j] then top[j], topstr[j] = o, os end\n"
    "      res[i] = 1\n"
    "    end\n"
    "  end\n"
    "end\n" SCRIPT_APPLIED;

/* Layout 2: the same arguments and rules, except that a put's first
 * argument is the whole value "<p>:<o>|<blob>" (built by the client, so
 * the script concatenates nothing). The chunk's keys are read with one
 * MGET; a key MGET answers nil for is either absent or of another type, so
 * when EXISTS finds any of those, each is read again with GET and a
 * WRONGTYPE error becomes that put's reply (as in layout 1). A value that
 * is not "<p>:<o>|..." is refused the same way. A key written earlier in
 * the chunk is judged on what was written (now). The head is parsed with
 * one string.match and a put's slot found by its string (slot[]): each
 * tonumber is a strtod, each string.sub a new Lua string (about a fifth of
 * the script's instructions for users already stored). */
const char state_redis_put_script_v2[] = SCRIPT_FENCE
    "local cur = redis.call('MGET', unpack(KEYS, 1, n))\n"
    "local nils = {}\n"
    "for i = 1, n do if not cur[i] then nils[#nils + 1] = KEYS[i] end end\n"
    "if #nils > 0 and redis.call('EXISTS', unpack(nils)) > 0 then\n"
    "  for i = 1, n do\n"
    "    if not cur[i] then cur[i] = redis.pcall('GET', KEYS[i]) end\n"
    "  end\n"
    "end\n"
    "local now, slot = {}, {}\n"
    "for j = 1, m do slot[tostring(j)] = j end\n"
    "for i = 1, n do\n"
    "  local a = base + 4 * (i - 1)\n"
    "  local j = slot[ARGV[a + 2]]\n"
    "  if fenced[j] then\n"
    "    res[i] = 2\n"
    "  else\n"
    "    local k, ps, os = KEYS[i], ARGV[2 + 2 * j], ARGV[a + 3]\n"
    "    local c = now[k] or cur[i]\n"
    "    local pos, cp, cs = '-', nil, nil\n"
    "    if type(c) == 'string' then\n"
    "      cp, cs = string.match(c, '^(%-?%d+):(%-?%d+)|')\n"
    "      if cp then pos = cp .. ':' .. cs\n"
    "      else c = {err = 'WRONGTYPE the key holds a string that is not a state value of "
    "layout 2'} end\n"
    "    end\n"
    "    local o = tonumber(os)\n"
    "    if type(c) == 'table' then\n"
    "      res[i] = c\n"
    "    elseif cp == ps and tonumber(cs) >= o then\n"
    "      res[i] = 0\n"
    "    elseif ARGV[a + 4] ~= '' and ARGV[a + 4] ~= pos then\n"
    "      res[i] = 3\n"
    "    else\n"
    "      if expire then redis.call('SET', k, ARGV[a + 1], 'PX', ttl)\n"
    "      else redis.call('SET', k, ARGV[a + 1]) end\n"
    "      now[k] = ARGV[a + 1]\n"
    "      if not top[j] or o > top[j] then top[j], topstr[j] = o, os end\n"
    "      res[i] = 1\n"
    "    end\n"
    "  end\n"
    "end\n" SCRIPT_APPLIED;

/* Layout 3 (state_bucket.c: users as fields of hash buckets). */
/* Arguments of one chunk (state_bucket_cmd builds them):
 *   KEYS: the chunk's bucket keys 1..nb, then per partition slot j its
 *         applied key and its epoch key (SCRIPT_FENCE's layout, n = nb).
 *   ARGV: nb, m, ttl_s; per slot its partition and the epoch held; then
 *         now_s, the number of groups g; per group its bucket (key index),
 *         slot, count c, smallest and largest offset, whether it has bases;
 *         then per group its c (field, value) pairs, then (with bases) its c
 *         bases: "" (no check), "-" (nothing stored) or "<p>:<o>@"; last the
 *         key prefix.
 * Reply: { codes, counters, err... }: one character per put in the chunk's
 * group order, '0' skipped, '1' written, '2' fenced, '3' conflict, 'E' an
 * error (its message next in err..., in order); counters: per slot its
 * partition and <prefix>st:{p}, then <prefix>stb. The script raises
 * st:{q} when it writes a user stored from another partition q, cr:{b}
 * when it creates a user of bucket b, stb when it writes without reading
 * (state_fast.c: what lets a writer skip it). */
#define SCRIPT_V3_SLOW                                                                             \
    "local function slow(k, a, c, hasb, bb, cur, codes, errs, hs, j)\n"                            \
    "  for i = 1, c do\n"                                                                          \
    "    local f, v = ARGV[a + 2 * i - 1], ARGV[a + 2 * i]\n"                                    \
    "    local b = hasb and ARGV[bb + i] or ''\n"                                                  \
    "    local ps, os = string.match(v, '^(%-?%d+):(%-?%d+)@')\n"                                 \
    "    local cv, cp, co, ct = cur and cur[i]\n"                                                  \
    "    local bad, sp\n"                                                                          \
    "    if cv then\n"                                                                             \
    "      cp, co, ct = string.match(cv, '^(%-?%d+):(%-?%d+)@(%d+)|')\n"                          \
    "      sp = cp\n"                                                                              \
    "      if not cp then bad = 'WRONGTYPE field ' .. f .. ' of ' .. k .. ' is not a state value "  \
    "of layout 3'\n"                                                                               \
    "      elseif ttl_s > 0 and tonumber(ct) + ttl_s <= now then cv, cp = nil, nil end\n"          \
    "    end\n"                                                                                    \
    "    if bad then\n"                                                                            \
    "      codes[#codes + 1] = 'E'; errs[#errs + 1] = bad\n"                                       \
    "    elseif cp and cp == ps and tonumber(co) >= tonumber(os) then\n"                           \
    "      codes[#codes + 1] = '0'\n"                                                              \
    "    elseif b ~= '' and b ~= (cp and (cp .. ':' .. co .. '@') or '-') then\n"                  \
    "      codes[#codes + 1] = '3'\n"                                                              \
    "    else\n"                                                                                   \
    "      hs[#hs + 1] = f; hs[#hs + 1] = v\n"                                                     \
    "      if not cp then created[k] = true end\n"                                                 \
    "      if sp and sp ~= ps then steal[sp] = true end\n"                                         \
    "      codes[#codes + 1] = '1'\n"                                                              \
    "      local o = tonumber(os)\n"                                                               \
    "      if not top[j] or o > top[j] then top[j], topstr[j] = o, os end\n"                       \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "end\n"

const char state_redis_put_script_v3[] =
    SCRIPT_FENCE "local now, g = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])\n"
                 "local ttl_s = tonumber(ttl)\n"
                 "local pfx = ARGV[#ARGV]\n"
                 "local steal, created, blind = {}, {}, false\n" SCRIPT_V3_SLOW
                 "local codes, errs = {}, {}\n"
                 "local ga, a = base + 2, base + 2 + 6 * g\n"
                 "local applied = {}\n"
                 "for q = 1, g do\n"
                 "  local d = ga + 6 * (q - 1)\n"
                 "  local k, j, c = KEYS[tonumber(ARGV[d + 1])], tonumber(ARGV[d + 2]), "
                 "tonumber(ARGV[d + 3])\n"
                 "  local hasb = ARGV[d + 6] == '1'\n"
                 "  local bb = a + 2 * c\n"
                 "  if fenced[j] then\n"
                 "    codes[#codes + 1] = string.rep('2', c)\n"
                 "  else\n"
                 "    if applied[j] == nil then\n"
                 "      applied[j] = tonumber(redis.call('GET', KEYS[n + 2 * j - 1])) or -1\n"
                 "    end\n"
                 "    local fresh = tonumber(ARGV[d + 4]) > applied[j]\n"
                 "    local cur, ok = nil, fresh and not hasb\n"
                 "    if not ok then\n"
                 "      local fs = {}\n"
                 "      for i = 1, c do fs[i] = ARGV[a + 2 * i - 1] end\n"
                 "      cur = redis.pcall('HMGET', k, unpack(fs))\n"
                 "      if cur.err then\n"
                 "        codes[#codes + 1] = string.rep('E', c)\n"
                 "        for i = 1, c do errs[#errs + 1] = cur.err end\n"
                 "        cur = false\n"
                 "      elseif fresh then\n"
                 "        ok = true\n"
                 "        for i = 1, c do\n"
                 "          local b, cv = ARGV[bb + i], cur[i]\n"
                 "          if b == '-' then ok = not cv\n"
                 "          elseif b ~= '' then ok = cv and string.find(cv, b, 1, true) == 1\n"
                 "            if ok and ttl_s > 0 then\n"
                 "              ok = tonumber(string.match(cv, '^[^@]*@(%d+)|') or 0) + ttl_s > now\n"
                 "            end\n"
                 "          end\n"
                 "          if not ok then break end\n"
                 "        end\n"
                 "      end\n"
                 "    end\n"
                 "    if cur == false then\n"
                 "    elseif ok then\n"
                 "      local r = redis.pcall('HSET', k, unpack(ARGV, a + 1, a + 2 * c))\n"
                 "      if type(r) == 'table' and r.err then\n"
                 "        codes[#codes + 1] = string.rep('E', c)\n"
                 "        for i = 1, c do errs[#errs + 1] = r.err end\n"
                 "      else\n"
                 "        codes[#codes + 1] = string.rep('1', c)\n"
                 "        if not hasb then blind = true\n"
                 "        else\n"
                 "          local own = ARGV[2 + 2 * j] .. ':'\n"
                 "          for i = 1, c do\n"
                 "            local b = ARGV[bb + i]\n"
                 "            if b == '-' then created[k] = true\n"
                 "            elseif string.find(b, own, 1, true) ~= 1 then\n"
                 "              steal[string.match(b, '^(%-?%d+):')] = true\n"
                 "            end\n"
                 "          end\n"
                 "        end\n"
                 "        local o = tonumber(ARGV[d + 5])\n"
                 "        if not top[j] or o > top[j] then top[j], topstr[j] = o, ARGV[d + 5] end\n"
                 "      end\n"
                 "    else\n"
                 "      local hs = {}\n"
                 "      slow(k, a, c, hasb, bb, cur, codes, errs, hs, j)\n"
                 "      if #hs > 0 then redis.call('HSET', k, unpack(hs)) end\n"
                 "    end\n"
                 "  end\n"
                 "  a = a + 2 * c + (hasb and c or 0)\n"
                 "end\n"
                 "res[1] = table.concat(codes)\n"
                 "for q in pairs(steal) do redis.call('INCR', pfx .. 'st:{' .. q .. '}') end\n"
                 "for bk in pairs(created) do\n"
                 "  redis.call('INCR', pfx .. 'cr' .. string.sub(bk, #pfx + 3))\n"
                 "end\n"
                 "if blind then redis.call('INCR', pfx .. 'stb') end\n"
                 "local sv = {}\n"
                 "for j = 1, m do\n"
                 "  sv[2 * j - 1] = ARGV[2 + 2 * j]\n"
                 "  sv[2 * j] = redis.call('GET', pfx .. 'st:{' .. ARGV[2 + 2 * j] .. '}') or '0'\n"
                 "end\n"
                 "sv[2 * m + 1] = redis.call('GET', pfx .. 'stb') or '0'\n"
                 "res[2] = sv\n"
                 "for i = 1, #errs do res[i + 2] = errs[i] end\n" SCRIPT_APPLIED;

/* KEYS[1] a bucket; ARGV: cursor, count, now_s, ttl_s. Deletes the fields
 * of one HSCAN step whose write time is ttl_s or more ago (the rule reads
 * use); returns { next cursor, fields deleted }. A field that is not a
 * layout-3 value is left alone (reads name it). */
const char state_redis_sweep_script_v3[] =
    "local r = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])\n"
    "local lim = tonumber(ARGV[3]) - tonumber(ARGV[4])\n"
    "local kv, del = r[2], {}\n"
    "for i = 1, #kv, 2 do\n"
    "  local t = string.match(kv[i + 1], '^%-?%d+:%-?%d+@(%d+)|')\n"
    "  if t and tonumber(t) <= lim then del[#del + 1] = kv[i] end\n"
    "end\n"
    "if #del > 0 then redis.call('HDEL', KEYS[1], unpack(del)) end\n"
    "return { r[1], #del }\n";

/* Decimal digits of v into buf (no NUL); returns their count. */
size_t state_put_ll(char *buf, long long v)
{
    char tmp[24];
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    size_t n = 0, k = 0;

    do
        tmp[n++] = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    if (v < 0)
        buf[k++] = '-';
    while (n)
        buf[k++] = tmp[--n];
    return k;
}

size_t state_v2_value(char *buf, int32_t partition, int64_t offset, const unsigned char *data,
                      size_t len)
{
    size_t n = state_put_ll(buf, partition);

    buf[n++] = ':';
    n += state_put_ll(buf + n, offset);
    buf[n++] = '|';
    memcpy(buf + n, data, len);
    return n + len;
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

int state_v2_parse(const char *v, size_t len, struct state_blob *b)
{
    const char *bar = memchr(v, '|', len < 48 ? len : 48), *col;
    long long p, o;

    b->len = 0;
    b->partition = -1;
    b->offset = -1;
    col = bar ? memchr(v, ':', (size_t)(bar - v)) : NULL;
    if (!col || parse_ll(v, col, INT32_MIN, INT32_MAX, &p) ||
        parse_ll(col + 1, bar, LLONG_MIN, LLONG_MAX, &o))
        return -1;
    len -= (size_t)(bar + 1 - v);
    if (len == 0 || len > STATE_BLOB_MAX)
        return -1;
    memcpy(b->data, bar + 1, len);
    b->len = len;
    b->partition = (int32_t)p;
    b->offset = o;
    return 0;
}

int state_layout_decide(const char *layout, size_t layout_len, int marker_present)
{
    if (!layout)
        return marker_present ? 1 : 2;
    if (layout_len == 1 && (layout[0] == '1' || layout[0] == '2'))
        return layout[0] - '0';
    return -1;
}
