/* Monitoring end to end on the embedded stack: `streamml broker`, a real
 * redis-server, and as separate processes `streamml featurize` + `streamml
 * profile` (the baseline), `streamml produce`, the transactions worker with
 * monitoring and metrics on, and `streamml alerts --json`.
 *
 * Events have one user each, so the per-user aggregates are stationary and
 * only the row fields carry the distribution. Drift: income halved and
 * amount x2.5. The drift test streams in phases (each one processed before
 * the next is produced, so partitions cannot interleave phases):
 *   6,000 normal          -> no alert
 *   3,000 drifted (1 window) -> CRITICAL data drift on income
 *   3,000 drifted + 9,000 normal -> RESOLVED for income
 * The stable test streams STABLE_EVENTS events like the training ones and
 * expects no data or prediction alert at all.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "kafka.h"
#include "promtext.h"
#include "stack.h"

#define TRAIN_EVENTS 20000
#define STABLE_EVENTS 100000
#define WINDOW "3000" /* events; 3 slices of 1,000 */
#define TOPICS "transactions:12,predictions.transactions:12,transactions.dlq:1,monitoring:1"

struct env {
    struct test_redis redis;
    struct test_broker broker;
    char dir[128], baseline[200], redis_port[32], bootstrap[300], metrics_port[32];
    char baseline_x[240];
    int port;
    long produced;
    pid_t worker;
};


/* ---- events ---- */

static uint64_t g_rng;

static double uniform(void)
{
    g_rng = g_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return ((double)(g_rng >> 11) + 0.5) / 9007199254740992.0;
}

static double normal(void)
{
    return sqrt(-2 * log(uniform())) * cos(2 * M_PI * uniform());
}

/* n events into path; drift shifts income and amount. User ids are unique
 * (prefix tag). */
static void write_events(const char *path, const char *tag, int n, int drift, uint64_t seed)
{
    static const char *const homes[] = {"rent", "owner", "parents", "other"};
    static const char *const jobs[] = {"fixed", "freelance", "partime", "others"};
    FILE *f = fopen(path, "w");
    int64_t t = 1700000000000LL;

    assert_non_null(f);
    g_rng = seed;
    for (int i = 0; i < n; i++) {
        double income = exp(5.0 + 0.4 * normal()) * (drift ? 0.5 : 1.0);
        double amount = exp(6.9 + 0.4 * normal()) * (drift ? 2.5 : 1.0);
        t += 1000;
        fprintf(f,
                "{\"event_id\":\"%s%07d\",\"user_id\":\"%s%07d\",\"event_time\":%lld,"
                "\"income\":%.2f,\"amount\":%.2f,\"price\":%.2f,\"expenses\":%d,"
                "\"term_months\":%d,\"age\":%d,\"seniority_years\":%d,\"home\":\"%s\","
                "\"job\":\"%s\",\"marital\":\"married\",\"past_records\":%s",
                tag, i, tag, i, (long long)t, income, amount, amount * (1.1 + 0.4 * uniform()),
                35 + (int)(60 * uniform()), 12 * (1 + (int)(5 * uniform())),
                20 + (int)(50 * uniform()), (int)(30 * uniform()), homes[(int)(4 * uniform())],
                jobs[(int)(4 * uniform())], uniform() < 0.15 ? "true" : "false");
        if (uniform() < 0.8)
            fprintf(f, ",\"assets\":%d,\"debt\":%d", (int)(10000 * uniform()),
                    (int)(2000 * uniform()));
        fprintf(f, "}\n");
    }
    fclose(f);
}

/* ---- processes ---- */


static void path_in(const struct env *v, const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", v->dir, name);
}

/* Training events -> featurize -> profile with the demo model. */
static int make_baseline(struct env *v)
{
    char ev[200], csv[200], log[200];
    char *fz[] = {(char *)test_bin("streamml"), "featurize", "-i", ev, "-o", csv, NULL};
    char *pf[] = {(char *)test_bin("streamml"), "profile", "-m", "models/credit_gbdt.json",
                  "-i", csv, "-o", v->baseline, NULL};

    path_in(v, "train.jsonl", ev, sizeof(ev));
    path_in(v, "train.csv", csv, sizeof(csv));
    path_in(v, "profile.log", log, sizeof(log));
    write_events(ev, "t", TRAIN_EVENTS, 0, 1);
    return test_run_wait(fz, log) || test_run_wait(pf, log) ? -1 : 0;
}

static int setup(void **st)
{
    struct env *v = calloc(1, sizeof(*v));

    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-monit-XXXXXX");
    if (!mkdtemp(v->dir) || test_redis_start(&v->redis) || test_broker_start(&v->broker, TOPICS))
        return -1;
    path_in(v, "baseline.json", v->baseline, sizeof(v->baseline));
    snprintf(v->baseline_x, sizeof(v->baseline_x), "monitor.baseline=%s", v->baseline);
    snprintf(v->redis_port, sizeof(v->redis_port), "redis.port=%d", v->redis.port);
    snprintf(v->bootstrap, sizeof(v->bootstrap), "%s", v->broker.bootstrap);
    v->port = test_free_port();
    snprintf(v->metrics_port, sizeof(v->metrics_port), "metrics.port=%d", v->port);
    *st = v;
    return make_baseline(v);
}

static int teardown(void **st)
{
    struct env *v = *st;
    char cmd[200];

    if (v->worker > 0)
        test_stop_pid(v->worker, SIGKILL, 1000);
    test_broker_stop(&v->broker);
    test_redis_stop(&v->redis);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", v->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", v->dir);
    free(v);
    return 0;
}

/* The worker: windows of WINDOW events (3 slices), time bound 3 s so the
 * last partial slice closes when input stops. Latency and error-rate
 * thresholds are raised: on a shared 2-core CI machine a loaded scheduler
 * is not what this test is about (those checks have their unit tests). */
static void start_worker(struct env *v)
{
    char log[200];
    char *argv[] = {(char *)test_bin("streamml-transactions"), "-b", v->bootstrap,
                    "-X", v->redis_port, "-X", "group.id=it-monitoring",
                    "-X", "worker.poll_ms=20", "-X", "session.timeout.ms=6000",
                    "-X", "heartbeat.interval.ms=500", "-X", v->baseline_x,
                    "-X", "monitor.window.events=" WINDOW, "-X", "monitor.window.slices=3",
                    "-X", "monitor.window.ms=3000", "-X", "monitor.window.min_events=1000",
                    "-X", "monitor.latency_p99.warning_ms=60000",
                    "-X", "monitor.latency_p99.critical_ms=60000",
                    "-X", v->metrics_port, "-X", "statistics.interval.ms=500",
                    "--log-level", "warn", NULL};

    path_in(v, "worker.log", log, sizeof(log));
    v->worker = test_spawn(argv, log);
    assert_true(v->worker > 0);
}

static int64_t topic_size(struct env *v, const char *topic)
{
    return test_topic_size(v->bootstrap, topic);
}

static int wait_topic(struct env *v, const char *topic, int64_t want, int timeout_ms)
{
    return test_wait_topic(v->bootstrap, topic, want, timeout_ms);
}

/* Produces a phase and waits until the worker has predicted all of it. */
static void phase(struct env *v, const char *tag, int n, int drift, uint64_t seed)
{
    char ev[200];
    char *argv[] = {(char *)test_bin("streamml"), "produce", "-b", v->bootstrap, "-t",
                    "transactions", "-i", ev, "--log-level", "error", NULL};

    snprintf(ev, sizeof(ev), "%s/%s.jsonl", v->dir, tag);
    write_events(ev, tag, n, drift, seed);
    assert_int_equal(test_run_wait(argv, "/dev/null"), 0);
    v->produced += n;
    assert_int_equal(wait_topic(v, "predictions.transactions", v->produced, 45000), 0);
}

/* ---- alerts ---- */

struct alerts {
    json_t *a[256];
    int n;
};

/* Every alert so far, through `streamml alerts --json`. */
static void read_alerts(struct env *v, struct alerts *out)
{
    char path[200], line[4096];
    char *argv[] = {(char *)test_bin("streamml"), "alerts", "-b", v->bootstrap, "--json", "-f",
                    "-e", "--log-level", "error", NULL};
    FILE *f;

    path_in(v, "alerts.jsonl", path, sizeof(path));
    unlink(path);
    assert_int_equal(test_run_wait(argv, path), 0);
    f = fopen(path, "r");
    assert_non_null(f);
    out->n = 0;
    while (out->n < 256 && fgets(line, sizeof(line), f)) {
        json_t *j = line[0] == '{' ? json_loads(line, 0, NULL) : NULL;
        if (j)
            out->a[out->n++] = j;
    }
    fclose(f);
}

static void free_alerts(struct alerts *a)
{
    for (int i = 0; i < a->n; i++)
        json_decref(a->a[i]);
    a->n = 0;
}

static const char *field(json_t *j, const char *k)
{
    const char *s = json_string_value(json_object_get(j, k));
    return s ? s : "";
}

static int count(const struct alerts *a, const char *type, const char *feature, const char *to)
{
    int n = 0;

    for (int i = 0; i < a->n; i++)
        n += strcmp(field(a->a[i], "alert_type"), type) == 0 &&
             (!feature || strcmp(field(a->a[i], "feature"), feature) == 0) &&
             strcmp(field(a->a[i], "status_to"), to) == 0;
    return n;
}

/* Alerts are published when a slice closes; the last one by time (1 s). */
static void settle(void)
{
    test_sleep_ms(2500);
}

/* `streamml alerts --severity CRITICAL --type data_drift --exec CMD`: CMD
 * gets each matching alert's JSON on stdin, once; the readable lines (not a
 * terminal: no colour) name the transition. Returns the alerts CMD saw. */
static int exec_alerts(struct env *v)
{
    char out[200], lines[200], cmd[300], buf[4096];
    char *argv[] = {(char *)test_bin("streamml"), "alerts", "-b", v->bootstrap, "-f", "-e",
                    "--severity", "CRITICAL", "--type", "data_drift", "--exec", cmd,
                    "--log-level", "error", NULL};
    FILE *f;
    int n = 0, shown = 0;

    path_in(v, "exec.jsonl", out, sizeof(out));
    path_in(v, "lines.txt", lines, sizeof(lines));
    snprintf(cmd, sizeof(cmd), "cat >> '%s'", out);
    assert_int_equal(test_run_wait(argv, lines), 0);
    f = fopen(out, "r");
    assert_non_null(f);
    while (fgets(buf, sizeof(buf), f)) {
        json_t *j = json_loads(buf, 0, NULL);
        assert_non_null(j);
        assert_string_equal(field(j, "severity"), "CRITICAL");
        assert_string_equal(field(j, "alert_type"), "data_drift");
        json_decref(j);
        n++;
    }
    fclose(f);
    f = fopen(lines, "r");
    assert_non_null(f);
    while (fgets(buf, sizeof(buf), f)) {
        assert_null(strchr(buf, '\033'));
        shown += strstr(buf, " CRITICAL ") && strstr(buf, " -> CRITICAL]") ? 1 : 0;
    }
    fclose(f);
    assert_int_equal(shown, n);
    return n;
}

static void check_metrics(struct env *v, double events)
{
    char cmd[300], path[200], why[256];
    char *text;
    double x;
    FILE *f;
    long n;

    path_in(v, "metrics.txt", path, sizeof(path));
    snprintf(cmd, sizeof(cmd), "curl -sf http://127.0.0.1:%d/metrics > %s", v->port, path);
    assert_int_equal(system(cmd), 0);
    f = fopen(path, "r");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    text = calloc(1, (size_t)n + 1);
    assert_int_equal(fread(text, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    if (prom_check(text, why, sizeof(why)))
        fprintf(stderr, "/metrics: %s\n", why);
    assert_int_equal(prom_check(text, why, sizeof(why)), 0);
    assert_string_equal(prom_type(text, "streamml_predictions_total"), "counter");
    assert_string_equal(prom_type(text, "streamml_processing_latency_seconds"), "histogram");
    assert_string_equal(prom_type(text, "streamml_feature_psi"), "gauge");
    assert_int_equal(prom_value(text, "streamml_predictions_total", &x), 0);
    assert_true(x == events);
    assert_int_equal(prom_value(text, "streamml_processing_latency_seconds_count", &x), 0);
    assert_true(x == events);
    assert_int_equal(prom_value(text, "streamml_feature_psi{feature=\"income\"}", &x), 0);
    assert_true(x >= 0 && x < 0.1); /* back to normal */
    assert_int_equal(prom_value(text, "streamml_consumer_lag", &x), 0);
    assert_int_equal(prom_value(text, "streamml_assigned_partitions", &x), 0);
    assert_true(x == 12);
    free(text);
    snprintf(cmd, sizeof(cmd), "curl -sf -o /dev/null http://127.0.0.1:%d/readyz", v->port);
    assert_int_equal(system(cmd), 0);
}

static void test_drift_raises_critical_then_resolved(void **st)
{
    struct env *v = *st;
    struct alerts a;

    start_worker(v);
    phase(v, "a", 6000, 0, 2);
    settle();
    assert_int_equal(topic_size(v, "monitoring"), 0);
    /* One window of drifted events. */
    phase(v, "b", 3000, 1, 3);
    settle();
    read_alerts(v, &a);
    assert_true(count(&a, "data_drift", "income", "CRITICAL") == 1);
    assert_true(count(&a, "data_drift", "amount", "CRITICAL") == 1);
    free_alerts(&a);
    phase(v, "c", 3000, 1, 4);
    phase(v, "d", 9000, 0, 5);
    settle();
    read_alerts(v, &a);
    /* Still one CRITICAL each (no storm), then RESOLVED when back. */
    assert_int_equal(count(&a, "data_drift", "income", "CRITICAL"), 1);
    assert_int_equal(count(&a, "data_drift", "income", "OK"), 1);
    assert_int_equal(count(&a, "data_drift", "amount", "OK"), 1);
    {
        int crit = 0;
        for (int i = 0; i < a.n; i++)
            crit += strcmp(field(a.a[i], "alert_type"), "data_drift") == 0 &&
                    strcmp(field(a.a[i], "severity"), "CRITICAL") == 0;
        assert_true(crit >= 2);
        assert_int_equal(exec_alerts(v), crit);
    }
    for (int i = 0; i < a.n; i++) {
        assert_string_equal(field(a.a[i], "worker"), "transactions");
        assert_string_equal(field(a.a[i], "model"), "credit-risk");
    }
    fprintf(stderr, "drift: %d alert events for %ld events:\n", a.n, v->produced);
    for (int i = 0; i < a.n; i++)
        fprintf(stderr, "  %s\n", field(a.a[i], "message"));
    free_alerts(&a);
    check_metrics(v, (double)v->produced);
    assert_int_equal(WEXITSTATUS(test_stop_pid(v->worker, SIGTERM, 15000)), 0);
    v->worker = 0;
}

static void test_stable_stream_raises_no_alert(void **st)
{
    struct env *v = *st;
    struct alerts a;

    start_worker(v);
    phase(v, "s", STABLE_EVENTS, 0, 6);
    settle();
    read_alerts(v, &a);
    for (int i = 0; i < a.n; i++)
        fprintf(stderr, "unexpected: %s\n", field(a.a[i], "message"));
    assert_int_equal(a.n, 0);
    free_alerts(&a);
    assert_int_equal(WEXITSTATUS(test_stop_pid(v->worker, SIGTERM, 15000)), 0);
    v->worker = 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_drift_raises_critical_then_resolved, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stable_stream_raises_no_alert, setup, teardown),
    };
    return cmocka_run_group_tests_name("monitoring integration", tests, NULL, NULL);
}
