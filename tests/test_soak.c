/* tests/test_soak.c: a transactions worker SIGKILLed every few seconds while
 * 200,000 events flow (issue 8).
 *
 * Real processes on the embedded stack: `streamml broker`, redis-server,
 * `streamml produce` at a steady rate, and a killer loop: one worker at a
 * time, SIGKILLed at a varying moment 0.5-2.5 s after it got its partitions
 * (mid-batch, mid-Redis-write, mid-commit: wherever it is), and a new one
 * started at once. The dead member's session must expire before the new one
 * gets the partitions (the 2.0.2 mock cluster has no static membership: it
 * reads group.instance.id but does not use it), so the session is short:
 * 3.5 s, the shortest the mock allows, since it holds a first JoinGroup 3 s
 * (group.initial.rebalance.delay) and expires a member that has been silent
 * for a session meanwhile. A restart then takes ~5.5 s. Once the input is
 * all produced, the last worker finishes the backlog and is stopped with
 * SIGTERM.
 *
 * Criterion: every event has a prediction (0 missing), every user's Welford
 * count in Redis equals its events with an amount (each state update applied
 * exactly once despite the replays), and no event is predicted more often
 * than once per worker life (duplicates come only from re-delivery of the
 * uncommitted window of each killed worker). Figures are printed.
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
#include <time.h>
#include <unistd.h>

#include "stack.h"
#include "txn_group.h"

#define SOAK_EVENTS 200000
/* 200,000 inputs (~180 B) and their predictions plus duplicates: 24
 * partitions keep each under the mock's 5 MB per partition. */
#define SOAK_TOPICS "transactions:24,predictions.transactions:24,transactions.dlq:2"
#define SOAK_RATE "3000"

static const char *const soak_props[] = {"session.timeout.ms=3500", "heartbeat.interval.ms=250",
                                         "max.poll.interval.ms=6000", NULL};

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Peak RSS (VmHWM, KiB) of a live process; -1 if gone. */
static long vm_hwm_kib(pid_t pid)
{
    char path[64], line[256];
    long kib = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    if (!(f = fopen(path, "r")))
        return -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "VmHWM:", 6) == 0)
            kib = strtol(line + 6, NULL, 10);
    fclose(f);
    return kib;
}

static int setup(void **st)
{
    return tg_setup_n(st, SOAK_EVENTS, SOAK_TOPICS);
}

static pid_t start(struct tg_env *v, int life, char *log, size_t cap)
{
    char name[32];

    snprintf(name, sizeof(name), "w%03d", life);
    tg_log_path(v, name, log, cap);
    return tg_start_worker_x(v, name, "500", soak_props);
}

static void test_worker_killed_every_few_seconds(void **st)
{
    struct tg_env *v = *st;
    int64_t t0 = now_ms();
    unsigned seed = 12345;
    long kills = 0, hwm = 0, life_ms = 0, loop_ms, drain_ms;
    int status = 0, lives = 0;
    char log[200];
    pid_t prod, w;
    struct tg_tally t;

    prod = tg_produce(v, SOAK_RATE);
    w = start(v, lives++, log, sizeof(log));
    /* The killer loop: while input is still being produced. */
    while (waitpid(prod, &status, WNOHANG) == 0) {
        int64_t assigned;
        int delay;
        if (tg_wait_log(log, "rebalance: assigned", 1, 30000) != 0) {
            fprintf(stderr, "# worker %s never got its partitions\n", log);
            fail();
        }
        assigned = now_ms();
        seed = seed * 1103515245u + 12345u;
        delay = 500 + (int)((seed >> 8) % 2000); /* 0.5-2.5 s, deterministic */
        test_sleep_ms(delay);
        hwm = vm_hwm_kib(w) > hwm ? vm_hwm_kib(w) : hwm;
        kill(w, SIGKILL);
        assert_int_equal(waitpid(w, NULL, 0), w);
        life_ms += now_ms() - assigned;
        kills++;
        w = start(v, lives++, log, sizeof(log));
    }
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    loop_ms = (long)(now_ms() - t0);
    /* The last worker takes the backlog: wait until the output has them all
     * and stops growing (cheap: end offsets), then read it (slow: 230,000+
     * records decoded). */
    {
        int64_t last = -1, n;
        int still = 0;
        assert_int_equal(
            test_wait_topic(v->broker.bootstrap, "predictions.transactions", SOAK_EVENTS, 90000),
            0);
        while (still < 10 && now_ms() - t0 < 240000) {
            test_sleep_ms(200);
            n = test_topic_size(v->broker.bootstrap, "predictions.transactions");
            still = n == last ? still + 1 : 0;
            last = n;
        }
    }
    t = tg_wait_all_predicted(v, 30000);
    drain_ms = (long)(now_ms() - t0) - loop_ms;
    hwm = vm_hwm_kib(w) > hwm ? vm_hwm_kib(w) : hwm;
    assert_int_equal(WEXITSTATUS(test_stop_pid(w, SIGTERM, 15000)), 0);
    t = tg_read_predictions(v);
    printf("# soak: %d events at %s/s for %.0f s, %ld SIGKILLs (one every %.1f s: %.1f s after "
           "the assignment, the rest is the restart) -> %ld predictions: %ld missing, %ld "
           "duplicates (%.1f%%, max %ld copies); users with wrong state: %ld; peak worker RSS "
           "%.1f MB; last worker's backlog %.0f s; wall %.0f s\n",
           SOAK_EVENTS, SOAK_RATE, (double)loop_ms / 1000.0, kills,
           kills ? (double)loop_ms / 1000.0 / (double)kills : 0,
           kills ? (double)life_ms / 1000.0 / (double)kills : 0, t.records, t.missing, t.duplicates,
           100.0 * (double)t.duplicates / SOAK_EVENTS, t.worst, tg_users_wrong(v),
           (double)hwm / 1024.0, (double)drain_ms / 1000.0, (double)(now_ms() - t0) / 1000.0);
    assert_int_equal(t.missing, 0);
    assert_int_equal(tg_users_wrong(v), 0);
    /* An event is re-delivered only by a restart that finds its offset
     * uncommitted: at most one copy per worker life. */
    assert_true(t.worst <= lives);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_worker_killed_every_few_seconds, setup, tg_teardown),
    };
    return cmocka_run_group_tests_name("soak", tests, NULL, NULL);
}
