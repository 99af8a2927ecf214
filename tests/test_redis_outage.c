/* tests/test_redis_outage.c: Redis faults while input keeps flowing.
 *
 * Events are produced at a steady 500/s for 8 s; 2 s in, Redis fails for
 * 3 s and comes back while events still arrive:
 *   - killed (SIGKILL) and restarted with its data (append-only file,
 *     fsync always): every write it acknowledged survives;
 *   - stopped (SIGSTOP .. SIGCONT): every call times out, then it answers;
 *   - out of memory (CONFIG SET maxmemory 1mb, noeviction): reads succeed
 *     while every write fails.
 * Afterwards every event has a prediction and every user's stored Welford
 * count equals the number of its events with an amount: no state update
 * was acknowledged without being applied, whatever the order of reads,
 * writes and retries around the outage (issue 23, case 1: the queued
 * updates used to be skipped as "already applied" when a newer batch was
 * written first).
 *
 * And the shutdown deadline with Redis hung (issue 23, case 7): SIGTERM
 * while the worker waits on a stopped Redis with redis.timeout_ms=20000;
 * the worker must be gone within worker.shutdown_timeout_ms (3 s) plus a
 * second, not after the Redis timeout.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "stack.h"
#include "txn_group.h"

#define N_EVENTS 4000
#define RATE "500"

static const char *const aof[] = {"--appendonly", "yes", "--appendfsync", "always", NULL};

static int setup(void **st)
{
    return tg_setup_n(st, N_EVENTS, TG_TOPICS);
}

/* One command to the test's Redis; 0 when it answered without an error. */
static int redis_cmd(int port, const char *cmd)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    redisReply *r;
    int rc = -1;

    if (!c || c->err) {
        redisFree(c);
        return -1;
    }
    r = redisCommand(c, cmd);
    if (r && r->type != REDIS_REPLY_ERROR)
        rc = 0;
    else
        fprintf(stderr, "redis %s: %s\n", cmd, r ? r->str : c->errstr);
    freeReplyObject(r);
    redisFree(c);
    return rc;
}

enum fault { KILL_RESTART, STOP_CONT, OOM };

static char g_old_dir[256]; /* KILL_RESTART: the killed server's data */

static void fault_begin(struct tg_env *v, enum fault f)
{
    switch (f) {
    case KILL_RESTART:
        snprintf(g_old_dir, sizeof(g_old_dir), "%s", v->redis.dir);
        assert_int_equal(kill(v->redis.pid, SIGKILL), 0);
        assert_int_equal(waitpid(v->redis.pid, NULL, 0), v->redis.pid);
        break;
    case STOP_CONT:
        assert_int_equal(kill(v->redis.pid, SIGSTOP), 0);
        break;
    case OOM:
        assert_int_equal(redis_cmd(v->redis.port, "CONFIG SET maxmemory-policy noeviction"), 0);
        assert_int_equal(redis_cmd(v->redis.port, "CONFIG SET maxmemory 1mb"), 0);
        break;
    }
}

static void fault_end(struct tg_env *v, enum fault f)
{
    const char *args[8];
    int port = v->redis.port;

    switch (f) {
    case KILL_RESTART:
        memcpy(args, aof, 4 * sizeof(*args));
        args[4] = "--dir";
        args[5] = g_old_dir;
        args[6] = NULL;
        assert_int_equal(test_redis_start_opts(&v->redis, port, args), 0);
        break;
    case STOP_CONT:
        assert_int_equal(kill(v->redis.pid, SIGCONT), 0);
        break;
    case OOM:
        assert_int_equal(redis_cmd(v->redis.port, "CONFIG SET maxmemory 0"), 0);
        break;
    }
}

static void run_outage(struct tg_env *v, enum fault f, const char *what)
{
    static const char *const extra[] = {"state.retry_budget_ms=200", "redis.timeout_ms=500",
                                        "fetch.wait.max.ms=10", NULL};
    struct tg_tally t;
    pid_t w, p;
    long wrong = -1;
    int status;

    if (f == KILL_RESTART) { /* the same port, now with an append-only file */
        int port = v->redis.port;
        test_redis_stop(&v->redis);
        assert_int_equal(test_redis_start_opts(&v->redis, port, aof), 0);
    }
    w = tg_start_worker_x(v, what, "100", extra);
    p = tg_produce(v, RATE);
    assert_true(w > 0 && p > 0);
    test_sleep_ms(2000);
    fault_begin(v, f);
    test_sleep_ms(3000);
    fault_end(v, f);
    assert_int_equal(waitpid(p, &status, 0), p);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    t = tg_wait_all_predicted(v, 30000);
    /* Queued updates are re-applied on a timer: give them time to land. */
    for (int waited = 0; waited <= 10000 && (wrong = tg_users_wrong(v)) != 0; waited += 500)
        test_sleep_ms(500);
    assert_int_equal(test_stop_pid(w, SIGTERM, 15000), 0);
    printf("# %s for 3 s at %s events/s: %d events, %ld missing predictions, %ld of %d users "
           "with a stored count different from their input\n",
           what, RATE, N_EVENTS, t.missing, wrong, TG_USERS);
    if (f == KILL_RESTART && g_old_dir[0] && strncmp(g_old_dir, "/tmp/streamml-", 14) == 0) {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_old_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", g_old_dir);
    }
    assert_int_equal(t.missing, 0);
    assert_int_equal(wrong, 0);
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_sigterm_deadline_bounds_a_hung_redis(void **st)
{
    static const char *const extra[] = {"redis.timeout_ms=20000", "worker.shutdown_timeout_ms=3000",
                                        NULL};
    struct tg_env *v = *st;
    pid_t w, p;
    int64_t t0, took = -1;
    int status = 0;

    w = tg_start_worker_x(v, "deadline", "100", extra);
    p = tg_produce(v, RATE);
    assert_true(w > 0 && p > 0);
    /* scoring (so reading and writing Redis) before Redis stops */
    assert_int_equal(test_wait_topic(v->broker.bootstrap, "predictions.transactions", 200, 20000),
                     0);
    assert_int_equal(kill(v->redis.pid, SIGSTOP), 0);
    test_sleep_ms(1000); /* the worker is now waiting on Redis */
    t0 = now_ms();
    assert_int_equal(kill(w, SIGTERM), 0);
    for (int i = 0; i < 3000 && took < 0; i++) {
        if (waitpid(w, &status, WNOHANG) == w)
            took = now_ms() - t0;
        else
            test_sleep_ms(10);
    }
    assert_int_equal(kill(v->redis.pid, SIGCONT), 0);
    if (took < 0) {
        test_stop_pid(w, SIGKILL, 1000);
        took = now_ms() - t0;
    }
    test_stop_pid(p, SIGTERM, 5000);
    printf("# SIGTERM with Redis stopped (redis.timeout_ms 20000, shutdown_timeout_ms 3000): "
           "worker gone after %lld ms, exit code %d\n",
           (long long)took, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    assert_true(took <= 4000);
}

static void test_redis_killed_and_restarted_with_its_data(void **st)
{
    run_outage(*st, KILL_RESTART, "redis killed -9, restarted with its data");
}

static void test_redis_stopped_then_continued(void **st)
{
    run_outage(*st, STOP_CONT, "redis stopped (SIGSTOP)");
}

static void test_redis_out_of_memory(void **st)
{
    run_outage(*st, OOM, "redis out of memory (writes fail, reads work)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_redis_killed_and_restarted_with_its_data, setup,
                                        tg_teardown),
        cmocka_unit_test_setup_teardown(test_redis_stopped_then_continued, setup, tg_teardown),
        cmocka_unit_test_setup_teardown(test_redis_out_of_memory, setup, tg_teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_deadline_bounds_a_hung_redis, setup,
                                        tg_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
