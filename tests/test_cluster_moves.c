/* tests/test_cluster_moves.c: the transactions worker's consumer group on a
 * real Redis Cluster (3 masters, one replica each), the cluster changing
 * under it:
 *   - slots migrated mid-run (`redis-cli --cluster reshard`: 1,500 slots
 *     moved key by key, so writes meet ASK, TRYAGAIN and then MOVED);
 *   - a zombie: a worker SIGSTOPped past its session timeout holding a
 *     batch, its partitions taken by an heir, then resumed: its late writes
 *     are refused on every slot the heir has written (per-slot epochs).
 * Criterion: every event predicted, every user's Welford count exact.
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

static long fenced_in_log(const char *path)
{
    char line[2048];
    long n = 0;
    FILE *f = fopen(path, "r");

    while (f && fgets(line, sizeof(line), f)) {
        const char *p = strstr(line, "state: ");
        if (p && strstr(line, "write(s) fenced"))
            n += strtol(p + 7, NULL, 10);
    }
    if (f)
        fclose(f);
    return n;
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

static void test_cluster_reshard_mid_run(void **st)
{
    struct tg_env *v = *st;
    struct test_rcluster *c = v->cluster;
    char log[200], cmd[600], from_id[64], to_id[64];
    pid_t w[2], prod = tg_produce(v, "4000");
    int from = test_rcluster_master_of(c, 0), to = test_rcluster_master_of(c, 16383);

    for (int i = 0; i < 2; i++) {
        char name[16];
        snprintf(name, sizeof(name), "w%d", i);
        w[i] = tg_start_worker_x(v, name, "500", extra);
        tg_log_path(v, name, log, sizeof(log));
        assert_int_equal(tg_wait_log(log, "rebalance: assigned", 1, 30000), 0);
    }
    wait_predicted(v, TG_EVENTS / 4);
    test_rcluster_cli(from, "CLUSTER MYID", from_id, sizeof(from_id));
    test_rcluster_cli(to, "CLUSTER MYID", to_id, sizeof(to_id));
    snprintf(cmd, sizeof(cmd),
             "redis-cli --cluster reshard 127.0.0.1:%d --cluster-from %s --cluster-to %s "
             "--cluster-slots 1500 --cluster-yes --cluster-pipeline 4 >%s/reshard.log 2>&1",
             from, from_id, to_id, v->dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(test_rcluster_master_of(c, 0), to); /* slot 0 did move */
    assert_int_equal(waitpid(prod, NULL, 0), prod);
    assert_int_equal(tg_wait_all_predicted(v, 60000).missing, 0);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w[0], SIGTERM, 15000)), 0);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w[1], SIGTERM, 15000)), 0);
    check(v, "2 workers, 1,500 slots resharded mid-run");
}

/* Every master's answer to args (CLIENT PAUSE, CLIENT KILL, ...). */
static void on_masters(const struct test_rcluster *c, const char *args)
{
    char out[64];

    for (int i = 0; i < RCLUSTER_NODES; i++) {
        if (c->node[i].pid <= 0)
            continue;
        test_rcluster_cli(c->node[i].port, "ROLE", out, sizeof(out));
        if (strcmp(out, "master") == 0)
            test_rcluster_cli(c->node[i].port, args, out, sizeof(out));
    }
}

static void test_cluster_zombie(void **st)
{
    struct tg_env *v = *st;
    char zlog[200], hlog[200];
    pid_t zombie, heir, prod = tg_produce(v, "2000");
    long fenced;

    tg_log_path(v, "zombie", zlog, sizeof(zlog));
    tg_log_path(v, "heir", hlog, sizeof(hlog));
    zombie = tg_start_worker_x(v, "zombie", "500", extra);
    assert_int_equal(tg_wait_log(zlog, "rebalance: assigned", 1, 30000), 0);
    wait_predicted(v, 1000);
    /* Stopped mid-write: CLIENT PAUSE WRITE on every master holds its next
     * batch's scripts, SIGSTOP lands while it waits, its connections are
     * killed (the held writes dropped) and the pause lifted. */
    on_masters(v->cluster, "CLIENT PAUSE 10000 WRITE");
    test_sleep_ms(500);
    kill(zombie, SIGSTOP);
    on_masters(v->cluster, "CLIENT KILL TYPE normal");
    on_masters(v->cluster, "CLIENT UNPAUSE");
    /* The heir takes every partition and, with the input flowing, writes
     * the users' slots with its newer epoch. */
    heir = tg_start_worker_x(v, "heir", "500", extra);
    assert_int_equal(tg_wait_log(hlog, "rebalance: assigned 6 partition", 1, 30000), 0);
    assert_int_equal(waitpid(prod, NULL, 0), prod);
    assert_int_equal(tg_wait_all_predicted(v, 60000).missing, 0);
    /* The zombie wakes and applies its batch again with its old epoch:
     * refused on every slot the heir has written since. */
    kill(zombie, SIGCONT);
    tg_wait_log(zlog, "write(s) fenced", 1, 15000);
    assert_int_equal(WEXITSTATUS(test_stop_pid(zombie, SIGTERM, 15000)), 0);
    assert_int_equal(WEXITSTATUS(test_stop_pid(heir, SIGTERM, 15000)), 0);
    fenced = fenced_in_log(zlog);
    printf("# cluster zombie: late writes fenced: %ld\n", fenced);
    check(v, "a zombie stopped mid-write past its session, then resumed");
    assert_true(fenced > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cluster_reshard_mid_run, tg_setup_cluster,
                                        tg_teardown),
        cmocka_unit_test_setup_teardown(test_cluster_zombie, tg_setup_cluster, tg_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
