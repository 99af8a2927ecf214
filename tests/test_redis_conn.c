/* common/io/redis_conn.c against a real redis-server with an ACL user and the
 * default user off: AUTH as the user, the password file re-read at every
 * connect (rotation), refused credentials are ERR_CONFIG, an unreachable
 * server ERR_RETRY, reconnect after the server closed the connection, and
 * no SIGPIPE reaching the process on a write to a closed socket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "redis_conn.h"
#include "stack.h"

static struct test_redis g_redis;
static char g_pwfile[64];

static const char *const acl_args[] = {"--user", "alice", "on", ">s3cret", ">n3w", "~*", "&*",
                                       "+@all", "--user", "default", "off", NULL};

static int setup(void **st)
{
    int fd;

    (void)st;
    snprintf(g_pwfile, sizeof(g_pwfile), "/tmp/streamml-rcpw-XXXXXX");
    fd = mkstemp(g_pwfile);
    if (fd < 0)
        return -1;
    close(fd);
    return test_redis_start_opts(&g_redis, 0, acl_args);
}

static int teardown(void **st)
{
    (void)st;
    test_redis_stop(&g_redis);
    unlink(g_pwfile);
    return 0;
}

static void write_pw(const char *pw)
{
    FILE *f = fopen(g_pwfile, "w");

    assert_non_null(f);
    fprintf(f, "%s\n", pw);
    fclose(f);
}

static void ping(struct rc *c)
{
    redisReply *r = redisCommand(rc_ctx(c), "PING");

    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
}

static void test_acl_user_and_password_file(void **st)
{
    struct rc_opts o = {.port = g_redis.port, .username = "alice", .password_file = g_pwfile,
                        .timeout_ms = 2000};
    struct rc *c = NULL;
    struct err e = {0};
    redisReply *r;

    (void)st;
    write_pw("s3cret");
    assert_int_equal(rc_open(&c, &o, &e), ERR_OK);
    assert_int_equal(rc_connect(c, &e), ERR_OK);
    ping(c);
    /* the server closes the connection: the next connect is a new login
     * with the file's current password */
    r = redisCommand(rc_ctx(c), "CLIENT KILL TYPE normal");
    freeReplyObject(r);
    write_pw("n3w");
    r = redisCommand(rc_ctx(c), "PING");
    if (!r)
        rc_lost(c, "PING", &e);
    freeReplyObject(r);
    rc_drop(c);
    assert_int_equal(rc_connect(c, &e), ERR_OK);
    ping(c);
    write_pw("wrong");
    rc_drop(c);
    assert_int_equal(rc_connect(c, &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "as alice"));
    assert_null(strstr(e.msg, "wrong"));
    rc_close(c);
}

static void test_default_user_refused_and_unreachable_is_retry(void **st)
{
    struct rc_opts o = {.port = g_redis.port, .username = "", .password = "s3cret",
                        .timeout_ms = 2000};
    struct rc *c = NULL;
    struct err e = {0};

    (void)st;
    assert_int_equal(rc_open(&c, &o, &e), ERR_OK);
    assert_int_equal(rc_connect(c, &e), ERR_CONFIG);
    rc_close(c);
    o.port = test_free_port();
    assert_int_equal(rc_open(&c, &o, &e), ERR_OK);
    assert_int_equal(rc_connect(c, &e), ERR_RETRY);
    rc_close(c);
    o.username = "alice";
    o.password = NULL;
    assert_int_equal(rc_open(&c, &o, &e), ERR_CONFIG); /* user without a password */
}

/* A write to a connection the server closed: an error return, not a
 * process killed by SIGPIPE (default disposition kept). */
static void test_write_to_closed_socket_is_not_fatal(void **st)
{
    struct rc_opts o = {.port = g_redis.port, .username = "alice", .password = "s3cret",
                        .timeout_ms = 2000};
    struct rc *c = NULL;
    struct err e = {0};
    struct rc_sigpipe g;
    redisReply *r;
    char big[65536];

    (void)st;
    signal(SIGPIPE, SIG_DFL);
    assert_int_equal(rc_open(&c, &o, &e), ERR_OK);
    assert_int_equal(rc_connect(c, &e), ERR_OK);
    r = redisCommand(rc_ctx(c), "CLIENT KILL TYPE normal");
    freeReplyObject(r);
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    usleep(100000);
    rc_sigpipe_block(&g);
    for (int i = 0; i < 4; i++) {
        r = redisCommand(rc_ctx(c), "SET k %s", big);
        if (!r)
            break;
        freeReplyObject(r);
    }
    rc_sigpipe_restore(&g);
    rc_lost(c, "SET", &e);
    assert_int_equal(e.code, ERR_RETRY);
    assert_int_equal(rc_connect(c, &e), ERR_OK); /* reconnects */
    ping(c);
    rc_close(c);
}

/* A shortened timeout bounds the next wait (the runtime's shutdown deadline). */
static void test_set_timeout_bounds_a_wait(void **st)
{
    struct rc_opts o = {.port = g_redis.port, .username = "alice", .password = "s3cret",
                        .timeout_ms = 5000};
    struct rc *c = NULL;
    struct err e = {0};
    struct timespec a, b;
    redisReply *r;
    long ms;

    (void)st;
    assert_int_equal(rc_open(&c, &o, &e), ERR_OK);
    assert_int_equal(rc_connect(c, &e), ERR_OK);
    r = redisCommand(rc_ctx(c), "CLIENT PAUSE 1500");
    freeReplyObject(r);
    rc_set_timeout(c, 200);
    clock_gettime(CLOCK_MONOTONIC, &a);
    r = redisCommand(rc_ctx(c), "SET k v");
    clock_gettime(CLOCK_MONOTONIC, &b);
    ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
    assert_null(r);
    assert_int_equal(rc_lost(c, "SET", &e), ERR_RETRY);
    assert_non_null(strstr(e.msg, "timed out"));
    assert_true(ms < 1000);
    test_sleep_ms(1500);
    rc_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_acl_user_and_password_file),
        cmocka_unit_test(test_default_user_refused_and_unreachable_is_retry),
        cmocka_unit_test(test_write_to_closed_socket_is_not_fatal),
        cmocka_unit_test(test_set_timeout_bounds_a_wait),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
