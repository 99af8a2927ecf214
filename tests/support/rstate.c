/* tests/support/rstate.c: see rstate.h. */
#include "rstate.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

struct state *test_rstate_open(int port, const char *prefix, int ttl_s, int layout, int buckets,
                               struct err *e)
{
    struct state_redis_opts o = {.host = "127.0.0.1", .port = port, .prefix = prefix,
                                 .timeout_ms = 2000, .ttl_s = ttl_s, .nodes = "",
                                 .layout = layout, .buckets = buckets};

    return state_open_redis(&o, e);
}

const char *test_rstate_q(redisContext *c, const char *fmt, ...)
{
    static char out[512];
    va_list ap;
    redisReply *r;

    va_start(ap, fmt);
    r = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
        r->type == REDIS_REPLY_ERROR)
        snprintf(out, sizeof(out), "%.*s", (int)r->len, r->str);
    else if (r->type == REDIS_REPLY_INTEGER)
        snprintf(out, sizeof(out), "%lld", r->integer);
    else
        snprintf(out, sizeof(out), "(nil)");
    freeReplyObject(r);
    return out;
}

int test_rstate_put1(struct state *s, const char *ent, const char *blob, int32_t p, int64_t o,
                     struct err *e)
{
    struct state_put put = {ent, (const unsigned char *)blob, strlen(blob), p, o};
    int applied = -1, rc = state_put_many(s, 1, &put, &applied, e);

    return rc ? rc : applied;
}

void test_rstate_assert_blob(struct state *s, const char *ent, const char *want, int32_t p,
                             int64_t o)
{
    struct state_blob b;
    struct err e = {0};

    assert_int_equal(state_get_many(s, 1, &ent, &b, &e), ERR_OK);
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(b.data, want, b.len);
    assert_int_equal(b.partition, p);
    assert_int_equal(b.offset, o);
}

int test_rstate_start(struct test_redis *r, redisContext **c)
{
    *c = NULL;
    if (test_redis_start(r))
        return -1;
    *c = redisConnect("127.0.0.1", r->port);
    return *c && !(*c)->err ? 0 : -1;
}

void test_rstate_stop(struct test_redis *r, redisContext *c)
{
    redisFree(c);
    test_redis_stop(r);
}
