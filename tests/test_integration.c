/* End to end on the embedded stack: `streamml broker` (librdkafka's mock
 * cluster, real Kafka protocol), a real redis-server, `streamml produce`,
 * the transactions worker and `streamml consume` as separate processes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "features.h"
#include "kafka.h"
#include "stack.h"
#include "state.h"

#define N_EVENTS 20000
#define N_USERS 1000
#define TOPICS "transactions:8,predictions.transactions:8,transactions.dlq:2"

struct env {
    struct test_redis redis;
    struct test_broker broker;
    char dir[128];
    char events[200];
    char redis_port[32];
    char bootstrap[300];
    int n_with_amount[N_USERS];
};


/* Deterministic synthetic events: N_USERS users, increasing event times,
 * some fields missing as in real application data. */
static void write_events(struct env *v)
{
    FILE *f = fopen(v->events, "w");
    int64_t t = 1700000000000LL;

    assert_non_null(f);
    memset(v->n_with_amount, 0, sizeof(v->n_with_amount));
    for (int i = 0; i < N_EVENTS; i++) {
        int u = (int)((i * 7919L) % N_USERS);
        t += 1000 + (i % 17) * 1000;
        fprintf(f, "{\"event_id\":\"e%06d\",\"user_id\":\"u%04d\",\"event_time\":%lld", i, u,
                (long long)t);
        if (i % 10 != 3) {
            fprintf(f, ",\"amount\":%d", 500 + (i * 37) % 2000);
            v->n_with_amount[u]++;
        }
        fprintf(f, ",\"income\":%d,\"expenses\":%d,\"term_months\":%d,\"age\":%d", 80 + i % 200,
                35 + i % 60, 12 + 12 * (i % 5), 20 + i % 50);
        if (i % 4 == 0)
            fprintf(f, ",\"debt\":%d,\"home\":\"rent\",\"job\":\"fixed\"", (i * 13) % 3000);
        if (i % 5 == 0)
            fprintf(f, ",\"credit_limit\":5000,\"credit_used\":%d", (i * 31) % 5000);
        fprintf(f, ",\"past_records\":%s}\n", i % 9 == 0 ? "true" : "false");
    }
    fclose(f);
}


static int setup(void **st)
{
    struct env *v = calloc(1, sizeof(*v));

    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-it-XXXXXX");
    if (!mkdtemp(v->dir) || test_redis_start(&v->redis) || test_broker_start(&v->broker, TOPICS))
        return -1;
    snprintf(v->events, sizeof(v->events), "%s/events.jsonl", v->dir);
    snprintf(v->redis_port, sizeof(v->redis_port), "redis.port=%d", v->redis.port);
    snprintf(v->bootstrap, sizeof(v->bootstrap), "%s", v->broker.bootstrap);
    write_events(v);
    *st = v;
    return 0;
}

static int teardown(void **st)
{
    struct env *v = *st;
    char cmd[200];

    test_broker_stop(&v->broker);
    test_redis_stop(&v->redis);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", v->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", v->dir);
    free(v);
    return 0;
}

static int produce_file(struct env *v, const char *file, int raw)
{
    char log[200];
    char *argv[] = {(char *)test_bin("streamml"), "produce", "-b", v->bootstrap, "-t",
                    "transactions", "-i", (char *)file, raw ? "--raw" : NULL, NULL};

    snprintf(log, sizeof(log), "%s/produce.log", v->dir);
    int rc = test_run_wait(argv, NULL);
    if (rc != 0) {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "tail -5 '%s' >&2", log);
        if (system(cmd) != 0)
            fprintf(stderr, "produce failed, no log\n");
    }
    return rc;
}

/* Produces file in the background at rate records/s. */
static pid_t produce_async(struct env *v, const char *file, const char *rate)
{
    char *argv[] = {(char *)test_bin("streamml"), "produce", "-b", v->bootstrap, "-t",
                    "transactions", "-i", (char *)file, "--rate", (char *)rate,
                    "--log-level", "error", NULL};

    return test_spawn(argv, "/dev/null");
}

static pid_t start_worker_x(struct env *v, const char *group, const char *extra);

static pid_t start_worker(struct env *v, const char *group)
{
    return start_worker_x(v, group, "worker.batch_size=1000");
}

static pid_t start_worker_x(struct env *v, const char *group, const char *extra)
{
    char log[200];
    static char grp[100];
    snprintf(grp, sizeof(grp), "group.id=%s", group);
    static char xs[1024];
    char *argv[40] = {(char *)test_bin("streamml-transactions"), "-b", v->bootstrap, "-X",
                      v->redis_port, "-X", grp, "-X", "worker.poll_ms=20", "-X",
                      "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500",
                      "--log-level", "info"};
    int argc = 15;

    /* extra: one or more key=value, newline-separated, each its own -X. */
    snprintf(xs, sizeof(xs), "%s", extra);
    for (char *s = strtok(xs, "\n"); s && argc < 38; s = strtok(NULL, "\n")) {
        argv[argc++] = "-X";
        argv[argc++] = s;
    }
    argv[argc] = NULL;
    snprintf(log, sizeof(log), "%s/worker.log", v->dir);
    return test_spawn(argv, log);
}

/* Reads every prediction with `streamml consume` and counts, per event id,
 * how often it was predicted. Returns the number of records read. */
static long read_predictions(struct env *v, int *seen, int *degraded)
{
    char out[200], line[4096];
    long n = 0;
    FILE *f;
    char *argv[] = {(char *)test_bin("streamml"), "consume", "-b", v->bootstrap, "-t",
                    "predictions.transactions", "-f", "-e", "--log-level", "error", NULL};

    snprintf(out, sizeof(out), "%s/predictions.jsonl", v->dir);
    unlink(out);
    assert_int_equal(test_run_wait(argv, out), 0);
    memset(seen, 0, sizeof(int) * N_EVENTS);
    *degraded = 0;
    f = fopen(out, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        const char *p = strstr(line, "\"event_id\"");
        long id;
        if (!p || !(p = strchr(p + 10, 'e')))
            continue;
        id = strtol(p + 1, NULL, 10);
        if (id >= 0 && id < N_EVENTS)
            seen[id]++;
        if (strstr(line, "\"degraded\": true") || strstr(line, "\"degraded\":true"))
            (*degraded)++;
        n++;
    }
    fclose(f);
    return n;
}

static int64_t topic_size(struct env *v, const char *topic)
{
    return test_topic_size(v->bootstrap, topic);
}

static int wait_topic(struct env *v, const char *topic, int64_t want, int timeout_ms)
{
    return test_wait_topic(v->bootstrap, topic, want, timeout_ms);
}

/* Every user's stored state must hold each of its events exactly once: the
 * Welford count equals the number of that user's events with an amount. */
static void assert_state_applied_once_upto(struct env *v, int n_events);

static void assert_state_applied_once(struct env *v)
{
    assert_state_applied_once_upto(v, N_EVENTS);
}

/* The same for the first n_events of the file (as write_events made them). */
static void assert_state_applied_once_upto(struct env *v, int n_events)
{
    struct err e = {0};
    struct state_redis_opts ro = {.host = "127.0.0.1", .port = v->redis.port, .prefix = "",
                                  .timeout_ms = 2000};
    struct state *s = state_open_redis(&ro, &e);
    static struct state_blob blobs[N_USERS];
    static char ids[N_USERS][16];
    const char *ents[N_USERS];
    long wrong = 0;

    assert_non_null(s);
    for (int u = 0; u < N_USERS; u++) {
        snprintf(ids[u], sizeof(ids[u]), "u%04d", u);
        ents[u] = ids[u];
    }
    assert_int_equal(state_get_many(s, N_USERS, ents, blobs, &e), ERR_OK);
    for (int u = 0; u < N_USERS; u++) {
        struct feat_state fs;
        assert_int_equal(feat_state_decode(&fs, blobs[u].data, blobs[u].len, &e), ERR_OK);
        int want = 0;
        for (int i = 0; i < n_events; i++)
            want += (int)((i * 7919L) % N_USERS) == u && i % 10 != 3;
        if ((int)feat_state_count(&fs, "amount") != want)
            wrong++;
    }
    state_close(s);
    assert_int_equal(wrong, 0);
}

static void test_every_event_gets_exactly_one_prediction(void **st)
{
    struct env *v = *st;
    static int seen[N_EVENTS];
    int degraded, missing = 0, dup = 0;
    pid_t w;

    assert_int_equal(produce_file(v, v->events, 0), 0);
    w = start_worker(v, "it-once");
    assert_int_equal(wait_topic(v, "predictions.transactions", N_EVENTS, 60000), 0);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w, SIGTERM, 15000)), 0);
    assert_int_equal(read_predictions(v, seen, &degraded), N_EVENTS);
    for (int i = 0; i < N_EVENTS; i++) {
        missing += seen[i] == 0;
        dup += seen[i] > 1;
    }
    printf("# %d events -> %d missing, %d duplicated, %d degraded\n", N_EVENTS, missing, dup,
           degraded);
    assert_int_equal(missing, 0);
    assert_int_equal(dup, 0);
    assert_int_equal(degraded, 0);
    assert_state_applied_once(v);
}

/* Waits until the topic has at least want records and has stopped growing. */
static void test_garbage_goes_to_dead_letter_and_worker_carries_on(void **st)
{
    struct env *v = *st;
    char garbage[200], bad[200], good[200];
    FILE *f;
    pid_t w;

    snprintf(garbage, sizeof(garbage), "%s/garbage.txt", v->dir);
    snprintf(bad, sizeof(bad), "%s/bad.jsonl", v->dir);
    snprintf(good, sizeof(good), "%s/good.jsonl", v->dir);
    f = fopen(garbage, "w");
    fprintf(f, "this is not avro\n");
    /* Near librdkafka's message.max.bytes: its dead letter (bytes plus
     * metadata) would not fit unless truncated, and would stall the
     * partition. */
    for (int i = 0; i < 990000; i++)
        fputc('x', f);
    fputc('\n', f);
    fclose(f);
    f = fopen(bad, "w");
    fprintf(f, "{\"event_id\":\"neg\",\"user_id\":\"u1\",\"event_time\":1700000000000,"
               "\"amount\":-5}\n");
    fclose(f);
    f = fopen(good, "w");
    for (int i = 0; i < 10; i++)
        fprintf(f, "{\"event_id\":\"g%d\",\"user_id\":\"u%d\",\"event_time\":1700000%03d000,"
                   "\"amount\":100,\"income\":50}\n", i, i % 3, i);
    fclose(f);
    assert_int_equal(produce_file(v, garbage, 1), 0);
    assert_int_equal(produce_file(v, bad, 0), 0);
    assert_int_equal(produce_file(v, good, 0), 0);
    w = start_worker(v, "it-dlq");
    assert_int_equal(wait_topic(v, "predictions.transactions", 10, 30000), 0);
    assert_int_equal(wait_topic(v, "transactions.dlq", 3, 10000), 0);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w, SIGTERM, 15000)), 0);
    assert_int_equal(topic_size(v, "transactions.dlq"), 3);
    assert_int_equal(topic_size(v, "predictions.transactions"), 10);
    {
        char out[200], cmd[400];
        char *argv[] = {(char *)test_bin("streamml"), "consume", "-b", v->bootstrap, "-t",
                        "transactions.dlq", "-f", "-e", "--log-level", "error", NULL};
        snprintf(out, sizeof(out), "%s/dlq.jsonl", v->dir);
        assert_int_equal(test_run_wait(argv, out), 0);
        snprintf(cmd, sizeof(cmd), "grep -c '\"payload_size\": *990000' %s", out);
        assert_int_equal(system(cmd), 0); /* the truncated one says its real size */
    }
}

/* Waits until every one of the first n event ids has a prediction (the
 * topic's size alone can look settled while a restarted worker still waits
 * for the dead member's session to expire: duplicates inflate it). Returns
 * the number of prediction records read, or -1 at the timeout. */
static long wait_all_predicted(struct env *v, int n, int *seen, int timeout_ms)
{
    int degraded;

    for (int waited = 0; waited < timeout_ms; waited += 1000) {
        long total = read_predictions(v, seen, &degraded);
        int missing = 0;
        for (int i = 0; i < n; i++)
            missing += seen[i] == 0;
        if (missing == 0)
            return total;
        test_sleep_ms(1000);
    }
    return -1;
}

static void test_sigkill_mid_stream_loses_nothing_and_applies_state_once(void **st)
{
    struct env *v = *st;
    static int seen[N_EVENTS];
    int degraded, missing = 0, dup = 0, kills = 0;
    int64_t total;
    pid_t w;

    /* Input keeps arriving (4,000/s for 5 s) while the worker is killed twice,
     * each time after some more output. */
    pid_t prod = produce_async(v, v->events, "4000");
    for (int64_t at = 4000; at <= 12000; at += 8000) {
        w = start_worker(v, "it-kill");
        assert_int_equal(wait_topic(v, "predictions.transactions", at, 60000), 0);
        kill(w, SIGKILL);
        waitpid(w, NULL, 0);
        kills++;
    }
    w = start_worker(v, "it-kill");
    assert_int_equal(waitpid(prod, NULL, 0), prod);
    assert_true(wait_all_predicted(v, N_EVENTS, seen, 120000) >= N_EVENTS);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w, SIGTERM, 15000)), 0);
    total = read_predictions(v, seen, &degraded);
    for (int i = 0; i < N_EVENTS; i++) {
        missing += seen[i] == 0;
        dup += seen[i] > 1 ? seen[i] - 1 : 0;
    }
    printf("# %d events, %d SIGKILLs -> %lld predictions: %d missing, %d duplicates "
           "(re-delivered, marked redelivered), %d degraded\n",
           N_EVENTS, kills, (long long)total, missing, dup, degraded);
    assert_int_equal(missing, 0);
    assert_state_applied_once(v);
}

/* Redis killed mid-stream: predictions keep flowing, flagged degraded; the
 * queued state updates are applied once Redis is back; nothing is lost. */
static void test_redis_down_degrades_then_recovers(void **st)
{
    struct env *v = *st;
    static int seen[N_EVENTS];
    int degraded, missing = 0, port = v->redis.port, status;
    char part1[200], part2[200], line[1024];
    FILE *in, *a, *b;
    pid_t w;

    snprintf(part1, sizeof(part1), "%s/part1.jsonl", v->dir);
    snprintf(part2, sizeof(part2), "%s/part2.jsonl", v->dir);
    in = fopen(v->events, "r");
    a = fopen(part1, "w");
    b = fopen(part2, "w");
    for (int i = 0; i < 4000 && fgets(line, sizeof(line), in); i++)
        fputs(line, i < 2000 ? a : b);
    fclose(in);
    fclose(a);
    fclose(b);
    w = start_worker_x(v, "it-redis", "state.retry_budget_ms=200");
    assert_int_equal(produce_file(v, part1, 0), 0);
    assert_int_equal(wait_topic(v, "predictions.transactions", 2000, 60000), 0);
    test_redis_stop(&v->redis);
    assert_int_equal(produce_file(v, part2, 0), 0);
    assert_int_equal(wait_topic(v, "predictions.transactions", 4000, 60000), 0);
    assert_int_equal(test_redis_start_opts(&v->redis, port, NULL), 0);
    test_sleep_ms(3000); /* the worker retries the queued updates every second */
    status = test_stop_pid(w, SIGTERM, 15000);
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(read_predictions(v, seen, &degraded), 4000);
    for (int i = 0; i < 4000; i++)
        missing += seen[i] == 0;
    printf("# redis down for 2000 of 4000 events: %d missing, %d degraded predictions\n",
           missing, degraded);
    assert_int_equal(missing, 0);
    assert_true(degraded > 0);
}

/* Redis unreachable when the worker starts (a compose stack starting in any
 * order): the worker starts, scores degraded, and applies every queued update
 * once Redis answers. */
static void test_worker_starts_while_redis_is_down(void **st)
{
    struct env *v = *st;
    static int seen[N_EVENTS];
    int degraded, missing = 0, port = v->redis.port, status;
    char part[200], line[1024];
    FILE *in, *a;
    pid_t w;

    snprintf(part, sizeof(part), "%s/part.jsonl", v->dir);
    in = fopen(v->events, "r");
    a = fopen(part, "w");
    for (int i = 0; i < 2000 && fgets(line, sizeof(line), in); i++)
        fputs(line, a);
    fclose(in);
    fclose(a);
    test_redis_stop(&v->redis);
    w = start_worker_x(v, "it-redis-late", "state.retry_budget_ms=200");
    assert_int_equal(produce_file(v, part, 0), 0);
    assert_int_equal(wait_topic(v, "predictions.transactions", 2000, 60000), 0);
    assert_int_equal(waitpid(w, &status, WNOHANG), 0); /* still running */
    assert_int_equal(test_redis_start_opts(&v->redis, port, NULL), 0);
    test_sleep_ms(3000); /* the worker retries the queued updates every second */
    status = test_stop_pid(w, SIGTERM, 15000);
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(read_predictions(v, seen, &degraded), 2000);
    for (int i = 0; i < 2000; i++)
        missing += seen[i] != 1;
    printf("# redis down at worker start, 2000 events: %d missing or duplicated, %d degraded\n",
           missing, degraded);
    assert_int_equal(missing, 0);
    assert_int_equal(degraded, 2000);
    assert_state_applied_once_upto(v, 2000);
}

/* Redis away far longer than max.poll.interval.ms with a small pending
 * queue: the worker pauses its partitions but keeps polling, so it stays in
 * the group: no redelivery (0 duplicates), nothing missing, state once. */
static void test_long_outage_pauses_without_leaving_the_group(void **st)
{
    struct env *v = *st;
    static int seen[N_EVENTS];
    int degraded, bad = 0, port = v->redis.port, status;
    char part[200], line[1024], grep[400];
    FILE *in, *a;
    pid_t w;

    snprintf(part, sizeof(part), "%s/part.jsonl", v->dir);
    in = fopen(v->events, "r");
    a = fopen(part, "w");
    for (int i = 0; i < 3000 && fgets(line, sizeof(line), in); i++)
        fputs(line, a);
    fclose(in);
    fclose(a);
    test_redis_stop(&v->redis);
    w = start_worker_x(v, "it-pause",
                       "state.retry_budget_ms=100\nworker.batch_size=200\n"
                       "state.pending_max=600\nmax.poll.interval.ms=6000");
    assert_int_equal(produce_file(v, part, 0), 0);
    test_sleep_ms(9000); /* paused for longer than max.poll.interval.ms */
    assert_int_equal(waitpid(w, &status, WNOHANG), 0);
    assert_true(topic_size(v, "predictions.transactions") < 3000);
    assert_int_equal(test_redis_start_opts(&v->redis, port, NULL), 0);
    assert_int_equal(wait_topic(v, "predictions.transactions", 3000, 60000), 0);
    test_sleep_ms(2000);
    status = test_stop_pid(w, SIGTERM, 15000);
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(read_predictions(v, seen, &degraded), 3000);
    for (int i = 0; i < 3000; i++)
        bad += seen[i] != 1;
    snprintf(grep, sizeof(grep), "grep -q 'consumption paused' %s/worker.log", v->dir);
    printf("# redis down 9 s, pending_max 600: 3000 events, %d missing or duplicated, "
           "%d degraded\n", bad, degraded);
    assert_int_equal(system(grep), 0);
    assert_int_equal(bad, 0);
    assert_state_applied_once_upto(v, 3000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_every_event_gets_exactly_one_prediction, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_garbage_goes_to_dead_letter_and_worker_carries_on,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_sigkill_mid_stream_loses_nothing_and_applies_state_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_down_degrades_then_recovers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_starts_while_redis_is_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_outage_pauses_without_leaving_the_group, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("integration", tests, NULL, NULL);
}
