/* tests/test_state_lost_worker.c: a state store that lost its data, seen by
 * a running transactions worker (issue 23 case 6, the runtime's part).
 *
 * Events flow at 500/s through one worker; 2 s in, Redis loses every key
 * while the worker stays connected (FLUSHALL: nothing reconnects, so only
 * the runtime's once-a-batch check can see it). Then:
 *   - a "state_lost" CRITICAL alert is on the monitoring topic;
 *   - predictions scored after the loss are flagged degraded;
 *   - `streamml config ack-state-loss` clears the flag: a second pass of
 *     the events is scored without the flag.
 * Before the runtime wired state_check_lost in, nothing was published and
 * nothing flagged: every aggregate silently restarted from zero.
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
#include <unistd.h>

#include "alerts.h"
#include "stack.h"
#include "txn_group.h"

#define N_EVENTS 3000
#define TOPICS TG_TOPICS ",monitoring:1"

static int setup(void **st)
{
    return tg_setup_n(st, N_EVENTS, TOPICS);
}

static void redis_cmd(int port, const char *cmd)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    redisReply *r = c && !c->err ? redisCommand(c, cmd) : NULL;

    assert_non_null(r);
    assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
    redisFree(c);
}

/* Predictions on the output topic, and how many of them are degraded. */
static void count_predictions(struct tg_env *v, long *records, long *degraded)
{
    char out[200], line[4096];
    FILE *f;
    char *argv[] = {(char *)test_bin("streamml"),
                    "consume",
                    "-b",
                    v->broker.bootstrap,
                    "-t",
                    "predictions.transactions",
                    "-f",
                    "-e",
                    "--log-level",
                    "error",
                    NULL};

    snprintf(out, sizeof(out), "%s/flagged.jsonl", v->dir);
    unlink(out);
    assert_int_equal(test_run_wait(argv, out), 0);
    assert_non_null(f = fopen(out, "r"));
    *records = *degraded = 0;
    while (fgets(line, sizeof(line), f)) {
        if (!strstr(line, "\"event_id\""))
            continue;
        (*records)++;
        *degraded += strstr(line, "\"degraded\": true") || strstr(line, "\"degraded\":true");
    }
    fclose(f);
}

static void wait_records(struct tg_env *v, long want, long *records, long *degraded)
{
    count_predictions(v, records, degraded);
    for (int waited = 0; *records < want && waited < 30000; waited += 1000) {
        test_sleep_ms(1000);
        count_predictions(v, records, degraded);
    }
    assert_int_equal(*records, want);
}

static void test_flushall_alerted_flagged_until_acknowledged(void **st)
{
    static const char *const extra[] = {"fetch.wait.max.ms=10", NULL};
    struct tg_env *v = *st;
    struct test_alerts a = {0};
    char log[200], alerts[200], acklog[200];
    long records, degraded, degraded2;
    pid_t w, p;
    int status, i;
    char *ack[] = {(char *)test_bin("streamml"), "config", "ack-state-loss", "-X", v->redis_port,
                   NULL};

    w = tg_start_worker_x(v, "lost", "100", extra);
    assert_true(w > 0);
    tg_log_path(v, "lost", log, sizeof(log));
    assert_int_equal(tg_wait_log(log, "rebalance: assigned", 1, 20000), 0);
    p = tg_produce(v, "500");
    assert_true(p > 0);
    test_sleep_ms(2000); /* the store holds data (and its marker) by now */
    redis_cmd(v->redis.port, "FLUSHALL");
    assert_int_equal(waitpid(p, &status, 0), p);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    wait_records(v, N_EVENTS, &records, &degraded);
    assert_int_equal(tg_wait_log(log, "lost its data", 1, 5000), 0);

    snprintf(alerts, sizeof(alerts), "%s/alerts.jsonl", v->dir);
    test_alerts_read(v->broker.bootstrap, alerts, &a);
    i = test_alert_find(&a, 0, "state_lost", NULL, "CRITICAL");
    printf("# FLUSHALL 2 s into %d events at 500/s: %ld predictions, %ld flagged degraded, "
           "state_lost alert %s\n",
           N_EVENTS, records, degraded, i >= 0 ? "published" : "MISSING");
    assert_true(i >= 0);
    assert_string_equal(test_alert_field(a.a[i], "worker"), "transactions");
    test_alerts_free(&a);
    /* everything after the flush (about 2/3 of the events) is flagged */
    assert_true(degraded >= N_EVENTS / 2);
    assert_true(degraded < N_EVENTS);

    /* The operator acknowledges: the next pass is not flagged. */
    snprintf(acklog, sizeof(acklog), "%s/ack.log", v->dir);
    assert_int_equal(test_run_wait(ack, acklog), 0);
    p = tg_produce(v, NULL);
    assert_true(p > 0);
    assert_int_equal(waitpid(p, &status, 0), p);
    wait_records(v, 2 * N_EVENTS, &records, &degraded2);
    printf("# after ack-state-loss: %ld more predictions, %ld more flagged\n",
           records - N_EVENTS, degraded2 - degraded);
    assert_int_equal(degraded2, degraded);
    assert_int_equal(test_stop_pid(w, SIGTERM, 15000), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_flushall_alerted_flagged_until_acknowledged, setup,
                                        tg_teardown),
    };

    return cmocka_run_group_tests_name("state loss in the worker", tests, NULL, NULL);
}
