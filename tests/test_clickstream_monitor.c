/* Monitoring of the clickstream worker (issue 5), end to end on the
 * embedded stack: the baseline comes from the worker's own predictions on a
 * reference topic (`streamml consume -f` | `streamml baseline --kind
 * clickstream`), then a second stream opens with undecodable messages and
 * clicks on unknown items before normal clicks. The monitoring topic gets
 * error_rate CRITICAL, then RESOLVED; missing_rate on known_item (the
 * unknown-item rate) and on warm_session (the cold-start rate) WARNING, then
 * RESOLVED; /metrics is valid Prometheus text with the monitor's gauges.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "alerts.h"
#include "promtext.h"
#include "stack.h"

#define TOPICS                                                                                     \
    "clickstream:1,reference:1,predictions.clickstream:1,predictions.reference:1,"                 \
    "clickstream.dlq:1,reference.dlq:1,monitoring:1"
#define N_REF 120    /* reference clicks: 20 sessions x 6 known items */
#define N_GARBAGE 10 /* undecodable */
#define N_UNKNOWN 20 /* clicks on unknown items, each its own session */
#define N_GOOD 80    /* then normal clicks again */

struct env {
    struct test_broker broker;
    struct test_redis redis;
    char dir[64];
    int port;
};

static int setup(void **st)
{
    struct env *v = calloc(1, sizeof(*v));

    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-clickmon-XXXXXX");
    if (!v || !mkdtemp(v->dir) || test_redis_start(&v->redis) ||
        test_broker_start(&v->broker, TOPICS))
        return -1;
    *st = v;
    return 0;
}

static int teardown(void **st)
{
    struct env *v = *st;
    char cmd[128];

    test_broker_stop(&v->broker);
    test_redis_stop(&v->redis);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", v->dir);
    if (system(cmd))
        fprintf(stderr, "could not remove %s\n", v->dir);
    free(v);
    return 0;
}

static void path_in(const struct env *v, const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", v->dir, name);
}

/* n clicks of sessions "<tag><s>" (6 clicks each, items from a walk over
 * 0..99), or of unknown items when unknown is set; appended to topic. */
static void produce(struct env *v, const char *topic, const char *tag, int n, int unknown, int raw)
{
    char path[200];
    FILE *f;

    path_in(v, "input.txt", path, sizeof(path));
    f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < n; i++) {
        if (raw)
            fprintf(f, "not avro %d\n", i);
        else
            fprintf(f,
                    "{\"event_id\":\"%s%d\",\"session_id\":\"%s%d\",\"user_id\":null,"
                    "\"item_id\":%d,\"event_type\":\"view\",\"event_time\":%lld}\n",
                    tag, i, tag, unknown ? i : i / 6, unknown ? 900000 + i : (i * 37 + 11) % 100,
                    1767225600000LL + 1000LL * i);
    }
    fclose(f);
    char *argv[16] = {(char *)test_bin("streamml"),
                      "produce",
                      "-b",
                      v->broker.bootstrap,
                      "-t",
                      (char *)topic,
                      "-i",
                      path,
                      "--log-level",
                      "warn"};
    size_t k = 10;
    if (raw) {
        argv[k++] = "--raw";
    } else {
        argv[k++] = "--schema";
        argv[k++] = "click_event";
    }
    argv[k] = NULL;
    assert_int_equal(test_run_wait(argv, NULL), 0);
}

static pid_t start_worker(struct env *v, const char *log, const char *const *extra, size_t n)
{
    static char port[64], mport[64];
    char *argv[64] = {(char *)test_bin("streamml-clickstream"),
                      "-b",
                      v->broker.bootstrap,
                      "-X",
                      port,
                      "-X",
                      mport,
                      "-X",
                      "clickstream.seed=7",
                      "-X",
                      "worker.poll_ms=20",
                      "-X",
                      "worker.batch_size=5",
                      "-X",
                      "session.timeout.ms=6000",
                      "--log-level",
                      "info"};
    size_t k = 17;

    v->port = test_free_port();
    snprintf(port, sizeof(port), "redis.port=%d", v->redis.port);
    snprintf(mport, sizeof(mport), "metrics.port=%d", v->port);
    for (size_t i = 0; i < n; i++) {
        argv[k++] = "-X";
        argv[k++] = (char *)extra[i];
    }
    argv[k] = NULL;
    return test_spawn(argv, log);
}

static void consume(struct env *v, const char *topic, const char *out)
{
    char *argv[] = {(char *)test_bin("streamml"),
                    "consume",
                    "-b",
                    v->broker.bootstrap,
                    "-t",
                    (char *)topic,
                    "-f",
                    "-e",
                    "--log-level",
                    "error",
                    NULL};

    unlink(out);
    assert_int_equal(test_run_wait(argv, out), 0);
}

/* The reference run: predictions of normal clicks -> baseline.json. */
static void make_baseline(struct env *v, char *baseline, size_t cap)
{
    static const char *const extra[] = {"input.topic=reference",
                                        "output.topic=predictions.reference",
                                        "dlq.topic=reference.dlq", "group.id=ref"};
    char log[200], preds[200];
    pid_t w;

    path_in(v, "reference.log", log, sizeof(log));
    path_in(v, "reference.jsonl", preds, sizeof(preds));
    path_in(v, "baseline.json", baseline, cap);
    produce(v, "reference", "r", N_REF, 0, 0);
    w = start_worker(v, log, extra, 4);
    assert_int_equal(test_wait_topic(v->broker.bootstrap, "predictions.reference", N_REF, 40000),
                     0);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w, SIGTERM, 15000)), 0);
    consume(v, "predictions.reference", preds);
    char *argv[] = {(char *)test_bin("streamml"),
                    "baseline",
                    "--kind",
                    "clickstream",
                    "-i",
                    preds,
                    "-o",
                    baseline,
                    NULL};
    assert_int_equal(test_run_wait(argv, NULL), 0);
}

/* Every alert on the monitoring topic (tests/support/alerts.h). */
static void read_alerts(struct env *v, struct test_alerts *out)
{
    char path[200];

    path_in(v, "alerts.jsonl", path, sizeof(path));
    test_alerts_read(v->broker.bootstrap, path, out);
}

static void check_metrics(struct env *v)
{
    char cmd[300], path[200], why[256], *text;
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
        fail_msg("/metrics: %s", why);
    assert_int_equal(prom_value(text, "streamml_dead_letters_total", &x), 0);
    assert_true(x == N_GARBAGE);
    assert_int_equal(prom_value(text, "streamml_alerts_total", &x), 0);
    assert_true(x >= 4);
    assert_int_equal(prom_value(text, "streamml_feature_missing_rate{feature=\"known_item\"}", &x),
                     0);
    assert_true(x == 0); /* the last window: known items only */
    assert_int_equal(prom_value(text, "streamml_feature_psi{feature=\"share_gru\"}", &x), 0);
    free(text);
}

static void test_error_and_unknown_item_alerts_raise_then_resolve(void **st)
{
    struct env *v = *st;
    char baseline[200], log[200], bl[260];
    const char *extra[] = {bl,
                           "group.id=live",
                           "monitor.window.events=20",
                           "monitor.window.slices=2",
                           "monitor.window.min_events=10",
                           "monitor.window.ms=3600000"};
    struct test_alerts a;
    int err_up, err_down, unk_up, unk_down, cold_up, cold_down;
    pid_t w;

    make_baseline(v, baseline, sizeof(baseline));
    snprintf(bl, sizeof(bl), "monitor.baseline=%s", baseline);
    produce(v, "clickstream", "g", N_GARBAGE, 0, 1);
    produce(v, "clickstream", "u", N_UNKNOWN, 1, 0);
    produce(v, "clickstream", "k", N_GOOD, 0, 0);
    path_in(v, "worker.log", log, sizeof(log));
    w = start_worker(v, log, extra, sizeof(extra) / sizeof(extra[0]));
    if (test_wait_topic(v->broker.bootstrap, "predictions.clickstream", N_UNKNOWN + N_GOOD,
                        40000)) {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "tail -n 5 %s >&2", log);
        if (system(cmd))
            fprintf(stderr, "no log\n");
        fail_msg("no %d predictions within 40 s", N_UNKNOWN + N_GOOD);
    }
    test_sleep_ms(1500); /* the last slice's alerts */
    check_metrics(v);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w, SIGTERM, 15000)), 0);
    read_alerts(v, &a);
    err_up = test_alert_find(&a, 0, "error_rate", NULL, "CRITICAL");
    err_down = test_alert_find(&a, err_up, "error_rate", NULL, "OK");
    unk_up = test_alert_find(&a, 0, "missing_rate", "known_item", "WARNING");
    unk_down = test_alert_find(&a, unk_up, "missing_rate", "known_item", "OK");
    cold_up = test_alert_find(&a, 0, "missing_rate", "warm_session", "WARNING");
    cold_down = test_alert_find(&a, cold_up, "missing_rate", "warm_session", "OK");
    assert_true(err_up >= 0 && err_down > err_up);
    assert_true(unk_up >= 0 && unk_down > unk_up);
    assert_true(cold_up >= 0 && cold_down > cold_up);
    assert_string_equal(test_alert_field(a.a[err_up], "worker"), "clickstream");
    assert_string_equal(test_alert_field(a.a[err_up], "model"), "gru4rec");
    test_alerts_free(&a);
}

/* `streamml replay` of a click topic as transactions says how clicks are
 * replayed (--stream clickstream) and evaluated (click-eval). */
static void test_replay_of_clicks_points_to_click_eval(void **st)
{
    struct env *v = *st;
    char log[200], cmd[300];
    char *argv[] = {(char *)test_bin("streamml"),
                    "replay",
                    "-b",
                    v->broker.bootstrap,
                    "-t",
                    "reference",
                    "-o",
                    "/dev/null",
                    "-q",
                    "--log-level",
                    "error",
                    NULL};

    path_in(v, "replay.log", log, sizeof(log));
    assert_int_equal(test_run_wait(argv, log), 1); /* every record invalid */
    snprintf(
        cmd, sizeof(cmd),
        "grep -c 'holds click events.*--stream clickstream.*streamml click-eval' %s | grep -qx 1",
        log);
    if (system(cmd)) {
        snprintf(cmd, sizeof(cmd), "head -n 5 %s >&2", log);
        if (system(cmd))
            fprintf(stderr, "no log\n");
        fail_msg("replay did not point to click-eval once");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_and_unknown_item_alerts_raise_then_resolve),
        cmocka_unit_test(test_replay_of_clicks_points_to_click_eval),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
