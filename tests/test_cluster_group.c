/* tests/test_cluster_group.c: the transactions worker's consumer group with
 * its state on a real Redis Cluster (3 masters, one replica each), faults
 * mid-run:
 *   - three workers over 6 partitions, one SIGKILLed;
 *   - a master SIGKILLed (its replica promoted; writes acknowledged by WAIT
 *     before their offsets commit, so none is lost);
 * Criterion: every event predicted, no event's state applied twice or
 * lost: every user's Welford count equals its events with an amount. The
 * migration and zombie cases are in test_cluster_moves.c (each binary
 * stays near a minute).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "txn_group.h"

static const char *const extra[] = {"redis.timeout_ms=3000", NULL};

static void wait_predicted(struct tg_env *v, int64_t n)
{
    for (int waited = 0; test_topic_size(v->broker.bootstrap, "predictions.transactions") < n;
         waited += 100) {
        assert_true(waited < 60000);
        test_sleep_ms(100);
    }
}

static void check(struct tg_env *v, const char *what)
{
    struct tg_tally t = tg_read_predictions(v);
    long wrong = tg_users_wrong(v);

    printf("# cluster, %s: %d events -> %ld predictions: %ld missing, %ld duplicates (max %ld "
           "copies); users with wrong state: %ld\n",
           what, TG_EVENTS, t.records, t.missing, t.duplicates, t.worst, wrong);
    assert_int_equal(t.missing, 0);
    assert_true(t.worst <= 10);
    assert_int_equal(wrong, 0);
}

static void test_cluster_worker_sigkill(void **st)
{
    struct tg_env *v = *st;
    char name[16], log[200];
    pid_t w[3], prod = tg_produce(v, "4000");

    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof(name), "w%d", i);
        w[i] = tg_start_worker_x(v, name, "500", extra);
        tg_log_path(v, name, log, sizeof(log));
        assert_int_equal(tg_wait_log(log, "rebalance: assigned", 1, 30000), 0);
    }
    wait_predicted(v, TG_EVENTS / 3);
    kill(w[1], SIGKILL);
    waitpid(w[1], NULL, 0);
    assert_int_equal(waitpid(prod, NULL, 0), prod);
    assert_int_equal(tg_wait_all_predicted(v, 60000).missing, 0);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w[0], SIGTERM, 15000)), 0);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w[2], SIGTERM, 15000)), 0);
    check(v, "3 workers, 1 SIGKILL");
}

static void test_cluster_master_killed(void **st)
{
    struct tg_env *v = *st;
    char log[200];
    pid_t w[2], prod = tg_produce(v, "4000");
    int port, idx;

    for (int i = 0; i < 2; i++) {
        char name[16];
        snprintf(name, sizeof(name), "w%d", i);
        w[i] = tg_start_worker_x(v, name, "500", extra);
        tg_log_path(v, name, log, sizeof(log));
        assert_int_equal(tg_wait_log(log, "rebalance: assigned", 1, 30000), 0);
    }
    wait_predicted(v, TG_EVENTS / 3);
    port = test_rcluster_master_of(v->cluster, 0);
    idx = test_rcluster_index(v->cluster, port);
    assert_true(idx >= 0);
    kill(v->cluster->node[idx].pid, SIGKILL);
    waitpid(v->cluster->node[idx].pid, NULL, 0);
    v->cluster->node[idx].pid = 0;
    /* its replica takes slot 0 over within a few node timeouts */
    assert_int_equal(test_rcluster_wait_ok(v->cluster, 30000), 0);
    assert_int_not_equal(test_rcluster_master_of(v->cluster, 0), port);
    assert_int_equal(waitpid(prod, NULL, 0), prod);
    assert_int_equal(tg_wait_all_predicted(v, 60000).missing, 0);
    /* Events scored while their master was away were predicted degraded;
     * their state updates wait in the workers' queue until it is back. */
    for (int waited = 0; tg_users_wrong(v) && waited < 30000; waited += 500)
        test_sleep_ms(500);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w[0], SIGTERM, 15000)), 0);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w[1], SIGTERM, 15000)), 0);
    check(v, "2 workers, a master SIGKILLed (replica promoted)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cluster_worker_sigkill, tg_setup_cluster,
                                        tg_teardown),
        cmocka_unit_test_setup_teardown(test_cluster_master_killed, tg_setup_cluster,
                                        tg_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
