/* Redis with an ACL user and the default user disabled (issue 16, "one
 * Redis connection module"): redis.username used to reach only the
 * transactions worker's state store; the clickstream worker's session state
 * and co-visitation counts authenticated with the password alone (as the
 * disabled default user) and could not start. Now every Redis user goes
 * through common/io/redis_conn.c and logs in as the configured user.
 *
 * The server: `--user alice on >s3cret ~* &* +@all --user default off`.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "cli.h"
#include "covis.h"
#include "rusers.h"
#include "stack.h"

#define TOPICS "clickstream:1,predictions.clickstream:1,clickstream.dlq:1"
#define N_CLICKS 24

struct env {
    struct test_broker broker;
    struct test_redis redis;
    char dir[64];
};

static const char *const acl_args[] = {"--user", "alice", "on", ">s3cret", "~*", "&*", "+@all",
                                       "--user", "default", "off", NULL};

static int setup(void **st)
{
    struct env *v = calloc(1, sizeof(*v));

    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-acl-XXXXXX");
    if (!v || !mkdtemp(v->dir) || test_redis_start_opts(&v->redis, 0, acl_args) ||
        test_broker_start(&v->broker, TOPICS))
        return -1;
    *st = v;
    return 0;
}

static int teardown(void **st)
{
    struct env *v = *st;
    char cmd[128];

    test_broker_stop(&v->broker);
    test_redis_stop(&v->redis);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", v->dir);
    if (system(cmd))
        fprintf(stderr, "could not remove %s\n", v->dir);
    free(v);
    return 0;
}

/* A connection authenticated as alice. */
static redisContext *as_alice(struct env *v)
{
    redisContext *c = redisConnect("127.0.0.1", v->redis.port);
    redisReply *r;

    assert_non_null(c);
    r = redisCommand(c, "AUTH alice s3cret");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
    return c;
}

/* An integer reply of cmd, run as alice. */
static long long redis_int(struct env *v, const char *cmd)
{
    redisContext *c = as_alice(v);
    redisReply *r;
    long long n;

    r = redisCommand(c, cmd);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ARRAY)
        n = (long long)r->elements;
    else {
        assert_int_equal(r->type, REDIS_REPLY_INTEGER);
        n = r->integer;
    }
    freeReplyObject(r);
    redisFree(c);
    return n;
}

/* Sessions stored under prefix, read as alice (any state layout). */
static long acl_users(struct env *v, const char *prefix)
{
    redisContext *c = as_alice(v);
    long n;

    n = test_redis_users(c, prefix);
    redisFree(c);
    return n;
}

/* The options a worker fills without a username (as the clickstream worker
 * does): the configured redis.username must be used. */
static void test_covis_logs_in_as_the_configured_user(void **st)
{
    struct env *v = *st;
    struct cfg *cf = cfg_new();
    struct err e = {0};
    struct cov *c = NULL;
    char port[32];
    struct cov_click k[] = {{-1, 5, (int64_t)time(NULL) * 1000, 0, -1, 0}};
    struct cov_opts o = {.port = v->redis.port, .password = "s3cret", .prefix = "acl1:",
                         .half_life_s = 3600, .timeout_ms = 2000};

    snprintf(port, sizeof(port), "redis.port=%d", v->redis.port);
    assert_int_equal(cfg_set_arg(cf, port, &e), ERR_OK);
    assert_int_equal(cfg_set_arg(cf, "redis.username=alice", &e), ERR_OK);
    assert_int_equal(cfg_finish(cf, &e), ERR_OK);
    cli_apply(cf); /* as every command's cli_load */
    assert_int_equal(cov_open(&c, &o, &e), ERR_OK);
    if (cov_update(c, 1, k, NULL, &e))
        fail_msg("cov_update as the configured ACL user: %s", e.msg);
    assert_int_equal(redis_int(v, "ZCARD acl1:trending"), 1);
    cov_close(c);
    cfg_free(cf);
}

static void produce_clicks(struct env *v)
{
    char path[128];
    FILE *f;
    long long now = (long long)time(NULL) * 1000;

    snprintf(path, sizeof(path), "%s/clicks.jsonl", v->dir);
    f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < N_CLICKS; i++)
        fprintf(f,
                "{\"event_id\":\"e%d\",\"session_id\":\"s%d\",\"user_id\":null,"
                "\"item_id\":%d,\"event_type\":\"view\",\"event_time\":%lld}\n",
                i, i % 4, 10 + i, now + i);
    fclose(f);
    char *a[] = {(char *)test_bin("streamml"), "produce", "-b", v->broker.bootstrap, "-t",
                 "clickstream", "--schema", "click_event", "-i", path, "--log-level", "warn",
                 NULL};
    assert_int_equal(test_run_wait(a, NULL), 0);
}

/* The clickstream worker binary with redis.username: sessions and
 * co-visitation counts are written as alice (on main it exited: AUTH as the
 * disabled default user). */
static void test_clickstream_worker_with_acl_user(void **st)
{
    struct env *v = *st;
    char port[64], log[128], cmd[256];
    pid_t pid;
    int status;

    produce_clicks(v);
    snprintf(port, sizeof(port), "redis.port=%d", v->redis.port);
    snprintf(log, sizeof(log), "%s/worker.log", v->dir);
    setenv("STREAMML_REDIS_PASSWORD", "s3cret", 1);
    char *argv[] = {(char *)test_bin("streamml-clickstream"), "-b", v->broker.bootstrap,
                    "-X", port, "-X", "redis.username=alice", "-X", "redis.require_at_start=1",
                    "-X", "redis.prefix=acl2:", "-X", "worker.poll_ms=20", "-X",
                    "group.id=it-acl", "-X", "clickstream.search=exact", "-X",
                    "session.timeout.ms=6000", "--log-level", "info", NULL};
    pid = test_spawn(argv, log);
    unsetenv("STREAMML_REDIS_PASSWORD");
    assert_true(pid > 0);
    if (test_wait_topic(v->broker.bootstrap, "predictions.clickstream", N_CLICKS, 60000)) {
        test_stop_pid(pid, SIGKILL, 1000);
        snprintf(cmd, sizeof(cmd), "tail -5 %s >&2", log);
        if (system(cmd))
            fprintf(stderr, "no log\n");
        fail_msg("the clickstream worker did not predict with redis.username set");
    }
    status = test_stop_pid(pid, SIGTERM, 20000);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(acl_users(v, "acl2:"), 4);              /* four sessions */
    assert_true(redis_int(v, "ZCARD acl2:trending") >= 20); /* counts as alice */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_covis_logs_in_as_the_configured_user),
        cmocka_unit_test(test_clickstream_worker_with_acl_user),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
