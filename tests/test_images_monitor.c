/* Metrics and monitoring of the images worker (issue 5), end to end on the
 * embedded stack: /metrics is valid Prometheus text (tests/support/promtext)
 * with the images' counters and the latency histogram, /healthz and /readyz
 * answer 200; the baseline comes from the worker's predictions on a
 * reference topic (`streamml baseline --kind images`), then a stream that
 * opens with undecodable messages and missing images raises error_rate
 * CRITICAL and missing_rate on grade (the ungradable rate) WARNING, both
 * RESOLVED once good images follow.
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
    "images:1,reference:1,predictions.images:1,predictions.reference:1,images.dlq:1,"              \
    "reference.dlq:1,monitoring:1"
#define SAMPLES "models/images/samples"
#define N_REF 30     /* the 10 samples, three times */
#define N_GARBAGE 10 /* undecodable */
#define N_MISSING 10 /* ungradable: no such file */
#define N_GOOD 40

struct env {
    struct test_broker broker;
    char dir[64], root[128];
    int port;
};

static int setup(void **st)
{
    struct env *v = calloc(1, sizeof(*v));
    char cmd[400];

    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-imgmon-XXXXXX");
    if (!v || !mkdtemp(v->dir))
        return -1;
    snprintf(v->root, sizeof(v->root), "%s/root", v->dir);
    snprintf(cmd, sizeof(cmd), "mkdir -p %s && cp " SAMPLES "/*.png " SAMPLES "/*.jpg %s/", v->root,
             v->root);
    if (system(cmd) || test_broker_start(&v->broker, TOPICS))
        return -1;
    *st = v;
    return 0;
}

static int teardown(void **st)
{
    struct env *v = *st;
    char cmd[128];

    test_broker_stop(&v->broker);
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

/* n events "<tag><i>": the samples in turn, or files that do not exist
 * (missing), or undecodable lines (raw). */
static void produce(struct env *v, const char *topic, const char *tag, int n, int missing, int raw)
{
    static const char *const samples[] = {
        "fundus_00_g0.png", "fundus_01_g1.png", "fundus_02_g2.png", "fundus_03_g3.png",
        "fundus_04_g4.png", "fundus_05_g0.jpg", "fundus_06_g1.jpg", "fundus_07_g2.jpg",
        "fundus_08_g3.jpg", "fundus_09_g4.jpg"};
    char path[200];
    FILE *f;

    path_in(v, "input.txt", path, sizeof(path));
    f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < n; i++) {
        if (raw)
            fprintf(f, "not avro %d\n", i);
        else if (missing)
            fprintf(f,
                    "{\"image_id\":\"%s%d\",\"patient_id\":\"p%d\",\"uri\":\"gone%d.png\","
                    "\"event_time\":%lld}\n",
                    tag, i, i % 7, i, 1767225600000LL + i);
        else
            fprintf(f,
                    "{\"image_id\":\"%s%d\",\"patient_id\":\"p%d\",\"uri\":\"%s\","
                    "\"event_time\":%lld}\n",
                    tag, i, i % 7, samples[i % 10], 1767225600000LL + i);
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
        argv[k++] = "image_event";
    }
    argv[k] = NULL;
    assert_int_equal(test_run_wait(argv, NULL), 0);
}

static pid_t start_worker(struct env *v, const char *log, const char *const *extra, size_t n)
{
    static char root[200], mport[64];
    char *argv[64] = {(char *)test_bin("streamml-images"),
                      "-b",
                      v->broker.bootstrap,
                      "-X",
                      root,
                      "-X",
                      mport,
                      "-X",
                      "images.min_side=16",
                      "-X",
                      "images.take=5", /* five messages per monitor tick */
                      "-X",
                      "worker.poll_ms=20",
                      "-X",
                      "session.timeout.ms=6000",
                      "--log-level",
                      "info"};
    size_t k = 17;

    v->port = test_free_port();
    snprintf(root, sizeof(root), "images.root=%s", v->root);
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
    assert_int_equal(test_wait_topic(v->broker.bootstrap, "predictions.reference", N_REF, 60000),
                     0);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w, SIGTERM, 15000)), 0);
    consume(v, "predictions.reference", preds);
    char *argv[] = {(char *)test_bin("streamml"),
                    "baseline",
                    "--kind",
                    "images",
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

static int http_ok(const struct env *v, const char *what)
{
    char cmd[200];

    snprintf(cmd, sizeof(cmd), "curl -sf -o /dev/null http://127.0.0.1:%d/%s", v->port, what);
    return system(cmd) == 0;
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
    assert_string_equal(prom_type(text, "streamml_ungradable_total"), "counter");
    assert_string_equal(prom_type(text, "streamml_processing_latency_seconds"), "histogram");
    assert_int_equal(prom_value(text, "streamml_events_total", &x), 0);
    assert_true(x == N_GARBAGE + N_MISSING + N_GOOD);
    assert_int_equal(prom_value(text, "streamml_predictions_total", &x), 0);
    assert_true(x == N_MISSING + N_GOOD);
    assert_int_equal(prom_value(text, "streamml_dead_letters_total", &x), 0);
    assert_true(x == N_GARBAGE);
    assert_int_equal(prom_value(text, "streamml_ungradable_total", &x), 0);
    assert_true(x == N_MISSING);
    assert_int_equal(prom_value(text, "streamml_processing_latency_seconds_count", &x), 0);
    assert_true(x == N_MISSING + N_GOOD);
    assert_int_equal(prom_value(text, "streamml_alerts_total", &x), 0);
    assert_true(x >= 4);
    assert_int_equal(prom_value(text, "streamml_feature_missing_rate{feature=\"grade\"}", &x), 0);
    assert_true(x == 0); /* the last window: good images only */
    assert_int_equal(prom_value(text, "streamml_feature_psi{feature=\"grade\"}", &x), 0);
    free(text);
    assert_true(http_ok(v, "healthz"));
    assert_true(http_ok(v, "readyz"));
}

static void test_ungradable_images_raise_then_resolve_alerts_with_metrics(void **st)
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
    int err_up, err_down, miss_up, miss_down;
    pid_t w;

    make_baseline(v, baseline, sizeof(baseline));
    snprintf(bl, sizeof(bl), "monitor.baseline=%s", baseline);
    produce(v, "images", "x", N_GARBAGE, 0, 1);
    produce(v, "images", "m", N_MISSING, 1, 0);
    produce(v, "images", "g", N_GOOD, 0, 0);
    path_in(v, "worker.log", log, sizeof(log));
    w = start_worker(v, log, extra, sizeof(extra) / sizeof(extra[0]));
    if (test_wait_topic(v->broker.bootstrap, "predictions.images", N_MISSING + N_GOOD, 60000)) {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "tail -n 5 %s >&2", log);
        if (system(cmd))
            fprintf(stderr, "no log\n");
        fail_msg("no %d predictions within 60 s", N_MISSING + N_GOOD);
    }
    test_sleep_ms(1500); /* the last slice's alerts, a metrics tick */
    check_metrics(v);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w, SIGTERM, 15000)), 0);
    read_alerts(v, &a);
    err_up = test_alert_find(&a, 0, "error_rate", NULL, "CRITICAL");
    err_down = test_alert_find(&a, err_up, "error_rate", NULL, "OK");
    miss_up = test_alert_find(&a, 0, "missing_rate", "grade", "WARNING");
    miss_down = test_alert_find(&a, miss_up, "missing_rate", "grade", "OK");
    assert_true(err_up >= 0 && err_down > err_up);
    assert_true(miss_up >= 0 && miss_down > miss_up);
    assert_string_equal(test_alert_field(a.a[err_up], "worker"), "images");
    test_alerts_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ungradable_images_raise_then_resolve_alerts_with_metrics),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
