/* tests/test_broker_faults.c: broker faults on the embedded stack.
 *
 * `streamml broker --brokers 3 --control FIFO` (librdkafka's mock cluster)
 * takes fault-injection commands while 20,000 events flow through a real
 * transactions worker and a real redis-server: injected errors on
 * InitProducerId (the idempotent producer's), Produce, Fetch, OffsetCommit,
 * JoinGroup and Heartbeat requests, and brokers taken down and up again
 * (rd_kafka_mock_broker_set_down/up). Criterion: every event has a
 * prediction (duplicates counted and printed), every user's Welford count
 * in Redis equals its events with an amount. A second test takes every
 * broker down as the worker is told to stop: its shutdown must stay within
 * worker.shutdown_timeout_ms, and nothing may be lost.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
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
/* librdkafka 2.0.2's mock cluster checks the sequence numbers of a
 * transactional producer only (rd_kafka_mock_validate_records returns at
 * once without a TransactionalId): after a batch refused with an injected
 * error, the next batch in flight on that partition is written anyway, where
 * a real broker answers OUT_OF_ORDER_SEQUENCE_NUMBER. librdkafka's idempotent
 * producer, rightly for a real broker, takes a later batch's success as proof
 * that the earlier ones were written and reports them delivered: 2-8 records
 * of 20,000 were lost that way (seen with the producer's debug log: batch
 * MsgId 599 refused twice, 603 written, 599-602 reported delivered). One
 * request in flight per connection leaves no later batch to overtake: the
 * producers of this test use it; nothing else changes. */
#define MOCK_INFLIGHT "max.in.flight.requests.per.connection=1"

struct env {
    struct test_redis redis;
    struct test_broker broker; /* pid, bootstrap and dir: started here, with --control */
    char control[300];
    char dir[128];
    char events[200];
    char redis_port[32];
    int want_amounts[N_USERS];       /* per user: events on the input topic with an amount */
    unsigned char present[N_EVENTS]; /* event i is on the input topic */
    long input_dups;                 /* input records whose event id came before */
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

static pid_t produce(struct env *v, const char *rate)
{
    char *argv[] = {(char *)test_bin("streamml"), "produce", "-b", v->broker.bootstrap, "-t",
                    "transactions", "-i", v->events, "--log-level", "error",
                    /* The brokers go down for seconds: records wait for them, as
                     * with librdkafka's default message.timeout.ms (produce's own
                     * default of 10 s is for a user facing a wrong address). */
                    "--timeout", "300000",
                    /* See MOCK_INFLIGHT. */
                    "-X", MOCK_INFLIGHT, rate ? "--rate" : NULL, (char *)rate, NULL};

    return test_spawn(argv, "/dev/null");
}

static void log_path(const struct env *v, const char *name, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s.log", v->dir, name);
}

/* A worker of group "rel", logging to <dir>/<name>.log. The group timeouts
 * are short so that a stalled member is noticed within seconds. */
static pid_t start_worker(struct env *v, const char *name, const char *batch, const char *extra)
{
    char log[200], bs[64];
    /* Redis is not the fault here; a generous timeout keeps it out of the way. */
    static char timeout[] = "redis.timeout_ms=30000";
    char *argv[] = {(char *)test_bin("streamml-transactions"),
                    "-b",
                    v->broker.bootstrap,
                    "-X",
                    v->redis_port,
                    "-X",
                    "group.id=rel",
                    "-X",
                    "worker.poll_ms=20",
                    "-X",
                    bs,
                    "-X",
                    "session.timeout.ms=6000",
                    "-X",
                    "max.poll.interval.ms=6000",
                    "-X",
                    "heartbeat.interval.ms=500",
                    "-X",
                    timeout,
                    "-X",
                    "auto.commit.interval.ms=1000",
                    "-X",
                    MOCK_INFLIGHT,
                    "--log-level",
                    "info",
                    extra ? "-X" : NULL,
                    (char *)extra,
                    NULL};

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
/* Which events the input topic holds (the criterion is every input that
 * reached Kafka gets a prediction), and each user's expected Welford count
 * over those. Returns how many are present. */
static long read_inputs(struct env *v)
{
    char out[200], line[4096];
    long n = 0;
    FILE *f;
    char *argv[] = {(char *)test_bin("streamml"),
                    "consume",
                    "-b",
                    v->broker.bootstrap,
                    "-t",
                    "transactions",
                    "-f",
                    "-e",
                    "--log-level",
                    "error",
                    NULL};

    snprintf(out, sizeof(out), "%s/inputs.jsonl", v->dir);
    unlink(out);
    assert_int_equal(test_run_wait(argv, out), 0);
    memset(v->present, 0, sizeof(v->present));
    memset(v->want_amounts, 0, sizeof(v->want_amounts));
    v->input_dups = 0;
    f = fopen(out, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        const char *p = strstr(line, "\"event_id\"");
        long id;
        if (!p || !(p = strchr(p + 10, 'e')) || (id = strtol(p + 1, NULL, 10)) < 0 ||
            id >= N_EVENTS)
            continue;
        /* State is applied once per event id. A record the producer wrote
         * twice (a retry after a broker went down with the first write done:
         * the mock does not deduplicate an idempotent producer's batches,
         * see MOCK_INFLIGHT) is two records of one event, and the user's
         * recent event ids (docs/delivery.md, state.dedup_horizon_ms) skip
         * the second: counting it twice failed the bounded-shutdown test
         * whenever the mock wrote a record twice (seen with 2 such records:
         * "users with wrong state: 1", the other one an event without an
         * amount). */
        if (v->present[id]) {
            v->input_dups++;
            continue;
        }
        v->present[id] = 1;
        v->want_amounts[(id * 7919L) % N_USERS] += id % 10 != 7;
        n++;
    }
    fclose(f);
    if (v->input_dups)
        printf("# the input topic holds %ld record(s) written twice by the producer's retries\n",
               v->input_dups);
    return n;
}

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
        t.missing += v->present[i] && seen[i] == 0;
        t.duplicates += seen[i] > 1 ? seen[i] - 1 : 0;
        t.worst = seen[i] > t.worst ? seen[i] : t.worst;
    }
    return t;
}

/* Users whose stored Welford count differs from their input records with an
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
            (int)feat_state_count(&fs, "amount") != v->want_amounts[u])
            wrong++;
    }
    state_close(s);
    return wrong;
}

static int broker_start(struct env *v)
{
    char file[300], log[300], line[300];
    FILE *f;

    snprintf(v->broker.dir, sizeof(v->broker.dir), "%s", v->dir);
    snprintf(file, sizeof(file), "%s/bootstrap", v->dir);
    snprintf(log, sizeof(log), "%s/broker.log", v->dir);
    snprintf(v->control, sizeof(v->control), "%s/control", v->dir);
    char *argv[] = {
        (char *)test_bin("streamml"), "broker", "--topics",  TOPICS,     "--brokers", "3",
        "--bootstrap-file",           file,     "--control", v->control, NULL};
    v->broker.pid = test_spawn(argv, log);
    for (int waited = 0; waited < 10000; waited += 50) {
        if ((f = fopen(file, "r"))) {
            int ok = fgets(line, sizeof(line), f) != NULL;
            fclose(f);
            if (ok) {
                line[strcspn(line, "\n")] = '\0';
                snprintf(v->broker.bootstrap, sizeof(v->broker.bootstrap), "%s", line);
                return 0;
            }
        }
        test_sleep_ms(50);
    }
    return -1;
}

static int setup(void **st)
{
    struct env *v = calloc(1, sizeof(*v));

    if (!v)
        return -1;
    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-bf-XXXXXX");
    if (!mkdtemp(v->dir) || test_redis_start(&v->redis) || broker_start(v))
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

    test_stop_pid(v->broker.pid, SIGTERM, 10000);
    test_redis_stop(&v->redis);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", v->dir);
    if (getenv("STREAMML_KEEP_TEST_DIR"))
        fprintf(stderr, "kept %s\n", v->dir);
    else if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", v->dir);
    free(v);
    return 0;
}

/* Sends one command to the broker and waits for its "ok" in the log. */
static void inject(struct env *v, const char *cmd)
{
    char log[300], want[200];
    int fd = open(v->control, O_WRONLY);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, cmd, strlen(cmd)), (ssize_t)strlen(cmd));
    assert_int_equal(write(fd, "\n", 1), 1);
    close(fd);
    snprintf(log, sizeof(log), "%s/broker.log", v->dir);
    snprintf(want, sizeof(want), "control: %s: ok", cmd);
    assert_int_equal(wait_log(log, want, 1, 10000), 0);
}

static void test_broker_faults_lose_nothing(void **st)
{
    static const char *const errors[] = {"errors Produce 8 NOT_LEADER_FOR_PARTITION",
                                         "errors Produce 4 REQUEST_TIMED_OUT",
                                         "errors Fetch 8 NOT_LEADER_FOR_PARTITION",
                                         "errors OffsetCommit 4 COORDINATOR_NOT_AVAILABLE",
                                         "errors OffsetCommit 2 NOT_COORDINATOR",
                                         "errors Heartbeat 3 COORDINATOR_NOT_AVAILABLE",
                                         "errors JoinGroup 2 COORDINATOR_LOAD_IN_PROGRESS"};
    static const char *const pid_errors[] = {"errors InitProducerId 2 COORDINATOR_NOT_AVAILABLE",
                                             "errors InitProducerId 1 NOT_COORDINATOR"};
    char wlog[300];
    struct env *v = *st;
    struct tally t;
    pid_t w, prod;
    int n_errors = 0, n_down = 0;

    /* The idempotent producer's InitProducerId (the transactional-family
     * request the workers make) fails first: injected before the worker
     * starts, so that its producer, the first client to ask, gets them. */
    for (size_t i = 0; i < sizeof(pid_errors) / sizeof(pid_errors[0]); i++) {
        inject(v, pid_errors[i]);
        n_errors += atoi(strchr(strchr(pid_errors[i], ' ') + 1, ' ') + 1);
    }
    w = start_worker(v, "worker", "500", NULL);
    log_path(v, "worker", wlog, sizeof(wlog));
    assert_int_equal(wait_log(wlog, "rebalance: assigned", 1, 30000), 0);
    /* The refusals are librdkafka's "retrying" warning in the worker's log,
     * shown once: repeats of a librdkafka line within a minute are collapsed
     * (common/io/kafka.c log_repeated). */
    assert_int_equal(wait_log(wlog, "Failed to acquire idempotence PID", 1, 10000), 0);
    prod = produce(v, "4000");
    for (int waited = 0; topic_size(v, "predictions.transactions") < 2000; waited += 100) {
        assert_true(waited < 60000);
        test_sleep_ms(100);
    }
    for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++) {
        inject(v, errors[i]);
        n_errors += atoi(strchr(strchr(errors[i], ' ') + 1, ' ') + 1);
    }
    for (int id = 1; id <= 3; id++) {
        char cmd[16];
        snprintf(cmd, sizeof(cmd), "down %d", id);
        inject(v, cmd);
        test_sleep_ms(1500);
        snprintf(cmd, sizeof(cmd), "up %d", id);
        inject(v, cmd);
        n_down++;
        test_sleep_ms(500);
    }
    {
        /* Every input must be on the topic (the producer retries through the
         * faults and exits 0), or a missing prediction would say nothing
         * about the worker. */
        int status;
        long in;
        assert_int_equal(waitpid(prod, &status, 0), prod);
        for (int waited = 0; (in = read_inputs(v)) < N_EVENTS && waited < 10000; waited += 500)
            test_sleep_ms(500);
        /* With MOCK_INFLIGHT, every record reported delivered is there. */
        printf("# producer exit %d, %ld of %d events on the input topic\n",
               WIFEXITED(status) ? WEXITSTATUS(status) : -1, in, N_EVENTS);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        assert_int_equal(in, N_EVENTS);
    }
    t = wait_all_predicted(v, 90000);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w, SIGTERM, 15000)), 0);
    t = read_predictions(v);
    printf(
        "# broker faults: %d events, %d injected request errors (InitProducerId, Produce, "
        "Fetch, OffsetCommit, Heartbeat, JoinGroup), %d broker down/up cycles -> %ld predictions: "
        "%ld missing, %ld duplicates (max %ld copies); users with wrong state: %ld\n",
        N_EVENTS, n_errors, n_down, t.records, t.missing, t.duplicates, t.worst, users_wrong(v));
    assert_int_equal(t.missing, 0);
    assert_int_equal(users_wrong(v), 0);
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Every broker goes down at the moment the worker is told to stop: its
 * deliveries cannot be acknowledged and the group cannot be left. The
 * worker must still exit within worker.shutdown_timeout_ms (+0.5 s for
 * leaving the group), non-zero, with a line naming what did not finish;
 * nothing it acknowledged is lost: once the brokers are back, a new worker
 * gets the uncommitted input again, and every event ends up predicted and
 * applied exactly once. */
static void test_shutdown_bounded_when_brokers_die(void **st)
{
    struct env *v = *st;
    char wlog[300];
    int status = 0, exited = 0;
    int64_t t0, took;
    pid_t w, prod;
    struct tally t;

    prod = produce(v, "4000");
    w = start_worker(v, "first", "500", "worker.shutdown_timeout_ms=2000");
    log_path(v, "first", wlog, sizeof(wlog));
    for (int waited = 0; topic_size(v, "predictions.transactions") < 4000; waited += 100) {
        assert_true(waited < 60000);
        test_sleep_ms(100);
    }
    inject(v, "down 1");
    inject(v, "down 2");
    inject(v, "down 3");
    t0 = now_ms();
    kill(w, SIGTERM);
    for (int waited = 0; waited < 30000 && !exited; waited += 20) {
        exited = waitpid(w, &status, WNOHANG) == w;
        if (!exited)
            test_sleep_ms(20);
    }
    took = now_ms() - t0;
    if (!exited)
        test_stop_pid(w, SIGKILL, 5000);
    printf("# brokers down at SIGTERM: worker exited %s after %lld ms (shutdown_timeout_ms "
           "2000), exit code %d\n",
           exited ? "by itself" : "NOT (killed)", (long long)took,
           exited && WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    assert_true(exited);
    assert_true(took < 2000 + 500 + 2500); /* deadline + grace + a loaded machine */
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) != 0);
    /* The Kafka close reports the deadline it hit; on a slow run (make
     * sanitize under load: 2,845 ms once) the runtime's watchdog, 0.5 s
     * later, may end the process first, with its own line: both are the
     * bounded shutdown. */
    if (wait_log(wlog, "shutdown deadline passed during", 1, 1000) &&
        wait_log(wlog, "past worker.shutdown_timeout_ms: exiting now", 1, 100)) {
        test_run_wait((char *[]){"tail", "-5", wlog, NULL}, NULL);
        fail_msg("no shutdown deadline line in the worker's log");
    }

    inject(v, "up 1");
    inject(v, "up 2");
    inject(v, "up 3");
    assert_int_equal(waitpid(prod, &status, 0), prod);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    {
        /* Read the input topic again until it is whole: just after the
         * brokers come back a partition may not answer yet, and an input
         * missed here would be missed by the state check too. */
        long in;
        for (int waited = 0; (in = read_inputs(v)) < N_EVENTS && waited < 10000; waited += 500)
            test_sleep_ms(500);
        printf("# brokers back: %ld of %d events on the input topic\n", in, N_EVENTS);
        assert_int_equal(in, N_EVENTS);
    }
    w = start_worker(v, "second", "500", NULL);
    t = wait_all_predicted(v, 90000);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w, SIGTERM, 15000)), 0);
    t = read_predictions(v);
    printf("# after the restart: %ld predictions: %ld missing, %ld duplicates (max %ld "
           "copies); users with wrong state: %ld\n",
           t.records, t.missing, t.duplicates, t.worst, users_wrong(v));
    assert_int_equal(t.missing, 0);
    assert_int_equal(users_wrong(v), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_broker_faults_lose_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_bounded_when_brokers_die, setup, teardown),
    };
    return cmocka_run_group_tests_name("broker_faults", tests, NULL, NULL);
}
