/* A state store restarted empty is detected (issue 23 case 6): Redis lost
 * every aggregate (restart without persistence, FLUSHALL) and nothing said
 * so; the epoch keys were re-created silently. Now <prefix>marker, written
 * with the first put, is checked at every reconnect and by
 * state_check_lost; a loss is recorded in <prefix>state_lost, counted, and
 * flagged until acknowledged (or for lost_flag_ms). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stack.h"
#include "state.h"

static struct test_redis g_redis;

static int setup(void **st)
{
    (void)st;
    return test_redis_start(&g_redis);
}

static int teardown(void **st)
{
    (void)st;
    test_redis_stop(&g_redis);
    return 0;
}

static struct state *open_state(const char *prefix, int64_t flag_ms)
{
    struct state_redis_opts o = {.port = g_redis.port, .prefix = prefix, .timeout_ms = 2000,
                                 .lost_flag_ms = flag_ms, .lazy = 1};
    struct err e = {0};
    struct state *s = state_open_redis(&o, &e);

    if (!s)
        fail_msg("state_open_redis: %s", e.msg);
    return s;
}

static void put_one(struct state *s, const char *entity, int64_t offset)
{
    struct state_put p = {entity, (const unsigned char *)"x", 1, 0, offset};
    int applied = 0;
    struct err e = {0};

    if (state_put_many(s, 1, &p, &applied, &e))
        fail_msg("put: %s", e.msg);
}

static void redis_cmd(const char *cmd)
{
    redisContext *c = redisConnect("127.0.0.1", g_redis.port);
    redisReply *r = redisCommand(c, cmd);

    assert_non_null(r);
    freeReplyObject(r);
    redisFree(c);
}

static long long redis_exists(const char *key)
{
    redisContext *c = redisConnect("127.0.0.1", g_redis.port);
    redisReply *r = redisCommand(c, "EXISTS %s", key);
    long long n = r ? r->integer : -1;

    freeReplyObject(r);
    redisFree(c);
    return n;
}

static void restart_empty(void)
{
    int port = g_redis.port;

    test_redis_stop(&g_redis);
    assert_int_equal(test_redis_start_opts(&g_redis, port, NULL), 0);
}

static void check(struct state *s, int expect, int want_lost)
{
    struct err e = {0};
    int lost = -1, rc;

    for (int i = 0; i < 3 && (rc = state_check_lost(s, expect, &lost, &e)) == ERR_RETRY; i++)
        test_sleep_ms(100);
    if (rc)
        fail_msg("state_check_lost: %s", e.msg);
    if (lost != want_lost)
        fail_msg("state_check_lost: lost %d, want %d", lost, want_lost);
}

static void test_first_start_is_not_a_loss_and_restart_empty_is(void **st)
{
    struct state *s = open_state("a:", 0);
    struct state_blob b;
    const char *ent = "u1";
    struct err e = {0};

    (void)st;
    check(s, 0, 0);
    assert_int_equal(state_lost_flag(s), 0);
    put_one(s, "u1", 5);
    assert_int_equal(redis_exists("a:marker"), 1);
    restart_empty();
    /* the worker's next read reconnects: the loss is found there */
    for (int i = 0; i < 3 && state_get_many(s, 1, &ent, &b, &e) == ERR_RETRY; i++)
        test_sleep_ms(100);
    check(s, 0, 1);
    assert_int_equal(state_losses(s), 1);
    assert_int_equal(state_lost_flag(s), 1);
    assert_int_equal(redis_exists("a:state_lost"), 1);
    assert_int_equal(redis_exists("a:marker"), 1); /* written again */
    check(s, 0, 0);                               /* reported once */
    assert_int_equal(state_lost_flag(s), 1);      /* flagged until acknowledged */
    assert_int_equal(state_ack_lost(s, &e), ERR_OK);
    assert_int_equal(state_lost_flag(s), 0);
    check(s, 0, 0);
    assert_int_equal(state_lost_flag(s), 0);
    state_close(s);
}

/* A worker starting on an empty store while its group has committed
 * offsets: the store held data before this process. */
static void test_expected_data_missing_at_start_is_a_loss(void **st)
{
    struct state *s = open_state("b:", 0), *t;

    (void)st;
    check(s, 1, 1);
    assert_int_equal(state_lost_flag(s), 1);
    state_close(s);
    {   /* the operator's acknowledgement from the command line */
        char port[32];
        char *argv[] = {(char *)test_bin("streamml"), "config", "ack-state-loss", "-X", port,
                        "-X", "redis.prefix=b:", NULL};
        snprintf(port, sizeof(port), "redis.port=%d", g_redis.port);
        assert_int_equal(redis_exists("b:state_lost"), 1);
        assert_int_equal(test_run_wait(argv, NULL), 0);
        assert_int_equal(redis_exists("b:state_lost"), 0);
    }
    t = open_state("c:", 0);
    put_one(t, "u", 1);
    state_close(t);
    t = open_state("c:", 0); /* a restart of the worker, the store kept */
    check(t, 1, 0);
    assert_int_equal(state_lost_flag(t), 0);
    state_close(t);
}

/* FLUSHALL on a live connection: the per-batch check finds it; a
 * configured flag time lets the flag expire by itself. */
static void test_flush_on_a_live_connection_and_flag_policy(void **st)
{
    struct state *s = open_state("d:", 300);

    (void)st;
    put_one(s, "u", 1);
    check(s, 0, 0);
    redis_cmd("FLUSHALL");
    check(s, 0, 1);
    assert_int_equal(state_lost_flag(s), 1);
    test_sleep_ms(500);
    check(s, 0, 0);
    assert_int_equal(state_lost_flag(s), 0);
    state_close(s);
}

static void test_memory_backend_never_reports_a_loss(void **st)
{
    struct state *s = state_open_memory();
    struct err e = {0};
    int lost = -1;

    (void)st;
    assert_int_equal(state_check_lost(s, 1, &lost, &e), ERR_OK);
    assert_int_equal(lost, 0);
    assert_int_equal(state_lost_flag(s), 0);
    state_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_start_is_not_a_loss_and_restart_empty_is),
        cmocka_unit_test(test_expected_data_missing_at_start_is_a_loss),
        cmocka_unit_test(test_flush_on_a_live_connection_and_flag_policy),
        cmocka_unit_test(test_memory_backend_never_reports_a_loss),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
