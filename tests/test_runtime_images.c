/* The images worker's hot reload on the worker runtime (common/worker/worker.h),
 * beyond tests/test_runtime.c's images row (back-pressure, schema registry,
 * SIGHUP alive): against the real worker binary on the embedded broker,
 *
 *   - a broken model file under model.watch_ms is refused (the start-up
 *     checks and trial run of common/streams/grader.h) with a model_reload WARNING
 *     on the monitoring topic, while the old model keeps grading;
 *   - another model is taken on the file change (INFO), and SIGHUP reloads
 *     too; the predictions after it carry the new model's name.
 *
 * The old images worker had no reload at all (SIGHUP killed it).
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

#include "alerts.h"
#include "codec.h"
#include "kafka.h"
#include "stack.h"

#define TOPICS "images:1,predictions.images:1,images.dlq:1,monitoring:1"
#define MODEL "models/images/fundus_cnn.onnx"
#define OTHER_MODEL "tests/fixtures/images/cam_net.onnx" /* model_name cam-net */
#define SAMPLE "models/images/samples/fundus_00_g0.png"

struct env {
    struct test_broker broker;
    char dir[64], root[128];
    pid_t worker;
};

static int make_dirs(struct env *v)
{
    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-rtimg-XXXXXX");
    if (!mkdtemp(v->dir))
        return -1;
    snprintf(v->root, sizeof(v->root), "%s/root", v->dir);
    return test_sh("mkdir -p %s && cp " SAMPLE " %s/a.png", v->root, v->root);
}

static int setup(void **st)
{
    struct env *v = calloc(1, sizeof(*v));

    if (!v || make_dirs(v) || test_broker_start(&v->broker, TOPICS))
        return -1;
    *st = v;
    return 0;
}

static int teardown(void **st)
{
    struct env *v = *st;

    if (v->worker > 0)
        test_stop_pid(v->worker, SIGKILL, 5000);
    test_broker_stop(&v->broker);
    if (getenv("STREAMML_KEEP_TEST_DIR"))
        fprintf(stderr, "kept %s\n", v->dir);
    else if (test_sh("rm -rf '%s'", v->dir))
        fprintf(stderr, "could not remove %s\n", v->dir);
    free(v);
    return 0;
}

/* streamml-images with the common settings and up to 8 extra -X values. */
static pid_t start_worker(struct env *v, const char *const *extra)
{
    static char root[200], log[200];
    char *argv[40] = {(char *)test_bin("streamml-images"),
                      "-b",
                      v->broker.bootstrap,
                      "-X",
                      root,
                      "-X",
                      "images.min_side=16",
                      "-X",
                      "worker.poll_ms=20",
                      "-X",
                      "session.timeout.ms=6000",
                      "-X",
                      "heartbeat.interval.ms=500",
                      "--log-level",
                      "info"};
    int n = 15;

    snprintf(root, sizeof(root), "images.root=%s", v->root);
    snprintf(log, sizeof(log), "%s/worker.log", v->dir);
    for (int i = 0; extra && extra[i] && n < 36; i++) {
        argv[n++] = "-X";
        argv[n++] = (char *)extra[i];
    }
    argv[n] = NULL;
    return v->worker = test_spawn(argv, log);
}

/* n image events (all the same good image). */
static void produce_images(struct env *v, int from, int n)
{
    struct err e = {0};
    struct codec *cd = codec_open("schemas", &e);
    struct cfg_kv kv = {"bootstrap.servers", v->broker.bootstrap, "test"};
    struct kq_opts o = {.props = &kv, .n_props = 1, .client_id = "test"};
    struct kq *q = kq_open(&o, &e);
    struct buf b;

    assert_non_null(cd);
    assert_non_null(q);
    buf_init(&b, 0);
    for (int i = from; i < from + n; i++) {
        struct image_event ev = {.event_time_ms = 1767225600000LL + i};
        snprintf(ev.image_id, sizeof(ev.image_id), "img%04d", i);
        snprintf(ev.patient_id, sizeof(ev.patient_id), "p%d", i % 3);
        snprintf(ev.uri, sizeof(ev.uri), "a.png");
        buf_reset(&b);
        assert_int_equal(codec_encode_image_event(cd, &ev, &b, &e), ERR_OK);
        assert_int_equal(
            kq_produce(q, "images", ev.patient_id, strlen(ev.patient_id), b.data, b.len, NULL, &e),
            ERR_OK);
    }
    assert_int_equal(kq_close(q, 10000, &e), ERR_OK);
    buf_free(&b);
    codec_close(cd);
}

/* Lines of the topic that contain needle. */
static long count_lines(struct env *v, const char *topic, const char *needle)
{
    char out[200], line[16384];
    long n = 0;
    FILE *f;
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

    snprintf(out, sizeof(out), "%s/%s.jsonl", v->dir, topic);
    unlink(out);
    assert_int_equal(test_run_wait(argv, out), 0);
    assert_non_null(f = fopen(out, "r"));
    while (fgets(line, sizeof(line), f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

static int count_reload_alerts(struct env *v, const char *severity, const char *text)
{
    char path[200];
    struct test_alerts a = {0};
    int n = 0;

    snprintf(path, sizeof(path), "%s/alerts.jsonl", v->dir);
    test_alerts_read(v->broker.bootstrap, path, &a);
    for (int i = 0; i < a.n; i++)
        n += strcmp(test_alert_field(a.a[i], "alert_type"), "model_reload") == 0 &&
             strcmp(test_alert_field(a.a[i], "severity"), severity) == 0 &&
             strstr(test_alert_field(a.a[i], "message"), text) != NULL;
    test_alerts_free(&a);
    return n;
}

/* Waits (up to 10 s) until the reload alerts of severity with text reach want. */
static void wait_reload_alert(struct env *v, const char *severity, const char *text, int want)
{
    for (int i = 0; i < 40; i++) {
        if (count_reload_alerts(v, severity, text) >= want)
            return;
        test_sleep_ms(250);
    }
    test_sh("tail -5 %s/worker.log >&2", v->dir);
    fail_msg("no model_reload %s alert with \"%s\"", severity, text);
}

static void test_images_reload_on_file_change_and_sighup(void **st)
{
    struct env *v = *st;
    char model[200], set_model[240];

    snprintf(model, sizeof(model), "%s/model.onnx", v->dir);
    snprintf(set_model, sizeof(set_model), "images.model=%s", model);
    assert_int_equal(test_sh("cp " MODEL " %s", model), 0);
    const char *extra[] = {set_model, "model.watch_ms=200", "group.id=rt-images-reload", NULL};
    assert_true(start_worker(v, extra) > 0);
    produce_images(v, 0, 3);
    assert_int_equal(test_wait_topic(v->broker.bootstrap, "predictions.images", 3, 45000), 0);

    /* A broken file: refused, the old model keeps grading. */
    assert_int_equal(test_sh("echo not a model > %s.tmp && mv %s.tmp %s", model, model, model), 0);
    wait_reload_alert(v, "WARNING", "refused", 1);
    produce_images(v, 3, 3);
    assert_int_equal(test_wait_topic(v->broker.bootstrap, "predictions.images", 6, 30000), 0);
    assert_int_equal(count_lines(v, "predictions.images", "\"model_name\":\"fundus-cnn\""), 6);

    /* Another model: taken on the file change, then again on SIGHUP. */
    assert_int_equal(test_sh("cp " OTHER_MODEL " %s.tmp && mv %s.tmp %s", model, model, model), 0);
    wait_reload_alert(v, "INFO", "file change", 1);
    assert_int_equal(kill(v->worker, SIGHUP), 0);
    wait_reload_alert(v, "INFO", "SIGHUP", 1);
    produce_images(v, 6, 3);
    assert_int_equal(test_wait_topic(v->broker.bootstrap, "predictions.images", 9, 30000), 0);
    assert_int_equal(count_lines(v, "predictions.images", "\"model_name\":\"cam-net\""), 3);
    assert_int_equal(WEXITSTATUS(test_stop_pid(v->worker, SIGTERM, 15000)), 0);
    v->worker = 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_images_reload_on_file_change_and_sighup, setup,
                                        teardown),
    };
    if (getenv("TEST_FILTER")) /* e.g. "*registry*" */
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
