/* tests/test_backpressure.c: input far beyond the worker's capacity.
 *
 * 20,000 events arrive at 4,000/s while Redis is made slow (a CLIENT PAUSE
 * of 380 ms every 400 ms for 6 s: every state read and write waits), far
 * beyond what the worker can then process. The worker must not buffer without bound: its peak RSS
 * (VmHWM) is measured against the bound its settings imply, the consumer lag grows while Redis is
 * slow (sampled: produced - predicted), and once Redis is fast again every event has its prediction
 * and every user's Welford count is exact: nothing was dropped.
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

#include "cfg.h"
#include "features.h"
#include "kafka.h"
#include "stack.h"
#include "state.h"

#define N_EVENTS 20000
#define N_USERS 1000
#define TOPICS "transactions:6,predictions.transactions:6,transactions.dlq:2"
/* The bound asserted on the worker's peak RSS (see the README). Under
 * AddressSanitizer (make sanitize) shadow memory and the free quarantine
 * (256 MB by default) come on top: measured 240 MB there, 21 MB without. */
#if defined(__SANITIZE_ADDRESS__)
#define RSS_BOUND_KIB (1024 * 1024)
#else
#define RSS_BOUND_KIB (256 * 1024)
#endif

struct env {
    struct test_redis redis;
    struct test_broker broker;
    char dir[128];
    char events[200];
    char redis_port[32];
    int want_amounts[N_USERS]; /* per user: events with an amount */
};


/* Deterministic synthetic events over N_USERS users; every tenth has no
 * amount (so the Welford count differs from the event count). */
static void write_events(struct env *v)
{
    FILE *f = fopen(v->events, "w");
    int64_t t = 1700000000000LL;

    assert_non_null(f);
    for (int i = 0; i < N_EVENTS; i++) {
        int u = (int)((i * 7919L) % N_USERS);
        t += 1000 + (i % 13) * 1000;
        fprintf(f, "{\"event_id\":\"e%06d\",\"user_id\":\"u%04d\",\"event_time\":%lld", i, u,
                (long long)t);
        if (i % 10 != 7) {
            fprintf(f, ",\"amount\":%d", 300 + (i * 41) % 2500);
            v->want_amounts[u]++;
        }
        fprintf(f, ",\"income\":%d,\"expenses\":%d,\"term_months\":%d,\"age\":%d", 90 + i % 150,
                40 + i % 50, 12 + 12 * (i % 5), 21 + i % 45);
        fprintf(f, ",\"past_records\":%s}\n", i % 7 == 0 ? "true" : "false");
    }
    fclose(f);
}

static int setup(void **st)
{
    struct env *v = calloc(1, sizeof(*v));

    if (!v)
        return -1;
    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-rel-XXXXXX");
    if (!mkdtemp(v->dir) || test_redis_start(&v->redis) || test_broker_start(&v->broker, TOPICS))
        return -1;
    snprintf(v->events, sizeof(v->events), "%s/events.jsonl", v->dir);
    snprintf(v->redis_port, sizeof(v->redis_port), "redis.port=%d", v->redis.port);
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
    if (getenv("STREAMML_KEEP_TEST_DIR")) /* debugging: keep the workers' logs */
        fprintf(stderr, "kept %s\n", v->dir);
    else if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", v->dir);
    free(v);
    return 0;
}


static pid_t produce(struct env *v, const char *rate)
{
    char *argv[] = {(char *)test_bin("streamml"),
                    "produce",
                    "-b",
                    v->broker.bootstrap,
                    "-t",
                    "transactions",
                    "-i",
                    v->events,
                    "--log-level",
                    "error",
                    rate ? "--rate" : NULL,
                    (char *)rate,
                    NULL};

    return test_spawn(argv, "/dev/null");
}

static void log_path(const struct env *v, const char *name, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s.log", v->dir, name);
}

/* A worker of group "rel", logging to <dir>/<name>.log. The group timeouts
 * are short so that a stalled member is noticed within seconds. */
static pid_t start_worker(struct env *v, const char *name, const char *batch)
{
    char log[200], bs[64];
    /* Long enough to sit out the CLIENT PAUSEs that slow Redis down. */
    static char timeout[] = "redis.timeout_ms=30000";
    char *argv[] = {(char *)test_bin("streamml-transactions"), "-b", v->broker.bootstrap, "-X",
                    v->redis_port, "-X", "group.id=rel", "-X", "worker.poll_ms=20", "-X", bs, "-X",
                    "session.timeout.ms=6000", "-X", "max.poll.interval.ms=6000", "-X",
                    "heartbeat.interval.ms=500", "-X", timeout, "-X",
                    "auto.commit.interval.ms=1000",
                    /* librdkafka's prefetch: 1 MB, a quarter of the backlog */
                    "-X", "queued.max.messages.kbytes=1024", "-X", "worker.max_inflight=5000",
                    "--log-level", "info", NULL};

    snprintf(bs, sizeof(bs), "worker.batch_size=%s", batch);
    log_path(v, name, log, sizeof(log));
    return test_spawn(argv, log);
}

/* Waits until the file contains needle (count times); 0 or -1 on timeout. */
static int wait_log(const char *path, const char *needle, int count, int timeout_ms)
{
    char line[2048];

    for (int waited = 0; waited < timeout_ms; waited += 20) {
        FILE *f = fopen(path, "r");
        int n = 0;
        while (f && fgets(line, sizeof(line), f))
            n += strstr(line, needle) != NULL;
        if (f)
            fclose(f);
        if (n >= count)
            return 0;
        test_sleep_ms(20);
    }
    return -1;
}

static int64_t topic_size(struct env *v, const char *topic)
{
    return test_topic_size(v->broker.bootstrap, topic);
}

struct tally {
    long records, missing, duplicates, worst; /* worst: most copies of one event */
};

/* Reads every prediction and counts copies per event id. */
static struct tally read_predictions(struct env *v)
{
    static int seen[N_EVENTS];
    char out[200], line[4096];
    struct tally t = {0};
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

    snprintf(out, sizeof(out), "%s/predictions.jsonl", v->dir);
    unlink(out);
    assert_int_equal(test_run_wait(argv, out), 0);
    memset(seen, 0, sizeof(seen));
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
        t.records++;
    }
    fclose(f);
    for (int i = 0; i < N_EVENTS; i++) {
        t.missing += seen[i] == 0;
        t.duplicates += seen[i] > 1 ? seen[i] - 1 : 0;
        t.worst = seen[i] > t.worst ? seen[i] : t.worst;
    }
    return t;
}

/* Users whose stored Welford count differs from their events with an
 * amount (0 = every event applied exactly once). */
/* Waits until every event has a prediction (a member's partitions are
 * idle until its session expires, so output can pause for seconds). */
static struct tally wait_all_predicted(struct env *v, int timeout_ms)
{
    struct tally t = read_predictions(v);

    for (int waited = 0; t.missing && waited < timeout_ms; waited += 1000) {
        test_sleep_ms(1000);
        t = read_predictions(v);
    }
    return t;
}

static long users_wrong(struct env *v)
{
    struct err e = {0};
    struct state_redis_opts ro = {.host = "127.0.0.1", .port = v->redis.port, .timeout_ms = 2000};
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
        if (feat_state_decode(&fs, blobs[u].data, blobs[u].len, &e) ||
            (int)fs.n_amounts != v->want_amounts[u])
            wrong++;
    }
    state_close(s);
    return wrong;
}

/* Peak resident set of a live process, from /proc (KiB), -1 if gone. */
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

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_slow_redis_backlog_is_bounded_and_lossless(void **st)
{
    struct env *v = *st;
    struct timeval tv = {2, 0};
    redisContext *rc = redisConnectWithTimeout("127.0.0.1", v->redis.port, tv);
    int64_t t0, produced, predicted, max_lag = 0, lag_at_end_of_slow = 0, first_lag = -1;
    char log[200];
    long hwm;
    int pauses = 0;
    struct tally t;
    pid_t w, prod;

    assert_true(rc && !rc->err);
    w = start_worker(v, "worker", "50");
    log_path(v, "worker", log, sizeof(log));
    assert_int_equal(wait_log(log, "rebalance: assigned", 1, 30000), 0);
    prod = produce(v, "4000"); /* 5 s of input at 4,000/s */
    /* Redis slow for 6 s: paused 380 ms of every 400. */
    t0 = now_ms();
    while (now_ms() - t0 < 6000) {
        redisReply *r = redisCommand(rc, "CLIENT PAUSE 380 ALL");
        assert_non_null(r);
        freeReplyObject(r);
        pauses++;
        test_sleep_ms(400);
        if (pauses % 3 == 0) {
            produced = topic_size(v, "transactions");
            predicted = topic_size(v, "predictions.transactions");
            lag_at_end_of_slow = produced - predicted;
            printf("#   t=%.1f s: produced %lld, predicted %lld, lag %lld\n",
                   (double)(now_ms() - t0) / 1e3, (long long)produced, (long long)predicted,
                   (long long)lag_at_end_of_slow);
            max_lag = lag_at_end_of_slow > max_lag ? lag_at_end_of_slow : max_lag;
            first_lag = first_lag < 0 ? lag_at_end_of_slow : first_lag;
        }
    }
    redisFree(rc);
    assert_int_equal(waitpid(prod, NULL, 0), prod);
    t = wait_all_predicted(v, 60000);
    hwm = vm_hwm_kib(w);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w, SIGTERM, 15000)), 0);
    t = read_predictions(v);
    printf("# backpressure: %d events at 4,000/s, Redis paused %d x 380 ms over 6 s -> sampled "
           "lag %lld, max %lld events; worker peak RSS (VmHWM) %ld KiB (bound %d KiB); %ld "
           "predictions, %ld missing, %ld duplicates; users with wrong state: %ld\n",
           N_EVENTS, pauses, (long long)first_lag, (long long)max_lag, hwm, RSS_BOUND_KIB,
           t.records, t.missing, t.duplicates, users_wrong(v));
    /* The worker fell behind (lag grew) rather than dropping or buffering. */
    assert_true(max_lag > first_lag && max_lag > 5000);
    assert_true(hwm > 0 && hwm < RSS_BOUND_KIB);
    assert_int_equal(t.missing, 0);
    assert_int_equal(users_wrong(v), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_slow_redis_backlog_is_bounded_and_lossless, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("backpressure", tests, NULL, NULL);
}
