/* worker.batch_size is bounded so that the largest batch allowed stays
 * small in memory (issue 23 case 8): at the old maximum, 100,000, the
 * transactions worker reached 330 MB resident with 50,000 users (its batch
 * arrays scale with the batch size). Now the maximum is 10,000: 100,000 is
 * refused naming the key, and the worker at the maximum batch over 50,000
 * distinct users (memory state backend: no Redis) peaks under 200 MB. */
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

#define N_USERS 50000
#define TOPICS "transactions:2,predictions.transactions:2,transactions.dlq:1"
#define BOUND_KIB (200 * 1024) /* measured: 78 MB at 1,000, 140 MB at 10,000 */

static long vm_hwm_kib(pid_t pid)
{
    char path[64], line[256];
    long kib = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "VmHWM:", 6) == 0)
            kib = strtol(line + 6, NULL, 10);
    if (f)
        fclose(f);
    return kib;
}

static void test_largest_batch_is_bounded_in_memory(void **st)
{
    struct test_broker b;
    char dir[] = "/tmp/streamml-batchmem-XXXXXX", events[128], log[128], cmd[200];
    long long t = (long long)time(NULL) * 1000 - 86400000LL;
    long hwm = -1;
    FILE *f;
    pid_t w;

    (void)st;
    assert_non_null(mkdtemp(dir));
    assert_int_equal(test_broker_start(&b, TOPICS), 0);
    snprintf(events, sizeof(events), "%s/events.jsonl", dir);
    snprintf(log, sizeof(log), "%s/worker.log", dir);
    f = fopen(events, "w");
    assert_non_null(f);
    for (int i = 0; i < N_USERS; i++)
        fprintf(f, "{\"event_id\":\"e%d\",\"user_id\":\"user-%05d\",\"event_time\":%lld,"
                   "\"amount\":%d,\"income\":100,\"expenses\":50,\"term_months\":12,"
                   "\"age\":30}\n", i, i, t + i, 100 + i % 900);
    fclose(f);
    char *prod[] = {(char *)test_bin("streamml"), "produce", "-b", b.bootstrap, "-t",
                    "transactions", "-i", events, "--log-level", "warn", NULL};
    assert_int_equal(test_run_wait(prod, NULL), 0);
    {   /* the old maximum is refused, naming the key */
        char *bad[] = {(char *)test_bin("streamml-transactions"), "-b", b.bootstrap, "-X",
                       "state.backend=memory", "-X", "worker.batch_size=100000", "-X",
                       "worker.idle_exit_ms=2000", "-X", "worker.max_messages=1", NULL};
        assert_int_equal(test_run_wait(bad, log), 2);
    }
    /* STREAMML_TEST_BATCH: measure another batch size (figures for the docs) */
    char bs[64];
    snprintf(bs, sizeof(bs), "worker.batch_size=%s",
             getenv("STREAMML_TEST_BATCH") ? getenv("STREAMML_TEST_BATCH") : "10000");
    char *argv[] = {(char *)test_bin("streamml-transactions"), "-b", b.bootstrap, "-X",
                    "state.backend=memory", "-X", bs, "-X",
                    "worker.poll_ms=20", "-X", "group.id=batchmem", "--log-level", "warn",
                    NULL};
    w = test_spawn(argv, log);
    assert_true(w > 0);
    if (test_wait_topic(b.bootstrap, "predictions.transactions", N_USERS, 60000) == 0)
        hwm = vm_hwm_kib(w);
    test_stop_pid(w, SIGTERM, 10000);
    test_broker_stop(&b);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    printf("worker peak RSS (VmHWM) %ld KiB at %s, %d users (bound %d KiB)\n", hwm, bs,
           N_USERS, BOUND_KIB);
    assert_true(hwm > 0);
#ifndef __SANITIZE_ADDRESS__ /* ASan's shadow memory and quarantine are no bound of ours */
    assert_true(hwm < BOUND_KIB);
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_largest_batch_is_bounded_in_memory),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
