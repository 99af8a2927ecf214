/* The images worker on the worker runtime (common/worker.h): the defects of
 * its own loop that the runtime removes, each against the real worker
 * binary on the embedded stack (streamml broker, the test Schema Registry).
 *
 *   - schema registry: with schema.registry.url set, image events framed
 *     with the registry's ids are graded (the old worker opened its codec
 *     without the registry: every such event was dead-lettered as an
 *     unknown schema id) and predictions are framed with the id the worker
 *     registered under predictions.images-value;
 *   - hot reload: a broken model file under model.watch_ms is refused with
 *     a model_reload WARNING on the monitoring topic while the old model
 *     keeps grading; a good one is taken (INFO), and SIGHUP reloads too (the
 *     old worker had no reload: SIGHUP killed it);
 *   - back-pressure: with worker.max_inflight reached because deliveries
 *     stall (the broker refuses Produce for longer than
 *     max.poll.interval.ms), the worker pauses and keeps polling, so it
 *     stays in its group (the old one stopped polling and was dropped:
 *     "maximum poll interval exceeded", then a rebalance).
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
#include <unistd.h>

#include "alerts.h"
#include "codec.h"
#include "kafka.h"
#include "regserver.h"
#include "stack.h"

#define TOPICS "images:1,predictions.images:1,images.dlq:1,monitoring:1"
#define MODEL "models/images/fundus_cnn.onnx"
#define OTHER_MODEL "tests/fixtures/images/cam_net.onnx" /* model_name cam-net */
#define SAMPLE "models/images/samples/fundus_00_g0.png"

struct env {
    struct test_broker broker;
    struct test_registry *srv;
    char dir[64], root[128], control[160];
    pid_t worker;
};

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

static int make_dirs(struct env *v)
{
    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-rtimg-XXXXXX");
    if (!mkdtemp(v->dir))
        return -1;
    snprintf(v->root, sizeof(v->root), "%s/root", v->dir);
    return sh("mkdir -p %s && cp " SAMPLE " %s/a.png", v->root, v->root);
}

static int setup(void **st)
{
    struct env *v = calloc(1, sizeof(*v));

    if (!v || make_dirs(v) || test_broker_start(&v->broker, TOPICS))
        return -1;
    *st = v;
    return 0;
}

/* The broker with a fault-injection FIFO (streamml broker --control). */
static int setup_control(void **st)
{
    struct env *v = calloc(1, sizeof(*v));
    char file[200], log[200], line[300];
    FILE *f;

    if (!v || make_dirs(v))
        return -1;
    snprintf(v->broker.dir, sizeof(v->broker.dir), "%s", v->dir);
    snprintf(file, sizeof(file), "%s/bootstrap", v->dir);
    snprintf(log, sizeof(log), "%s/broker.log", v->dir);
    snprintf(v->control, sizeof(v->control), "%s/control", v->dir);
    char *argv[] = {(char *)test_bin("streamml"),
                    "broker",
                    "--topics",
                    TOPICS,
                    "--bootstrap-file",
                    file,
                    "--control",
                    v->control,
                    NULL};
    v->broker.pid = test_spawn(argv, log);
    for (int waited = 0; waited < 10000; waited += 50, test_sleep_ms(50)) {
        if (!(f = fopen(file, "r")))
            continue;
        int ok = fgets(line, sizeof(line), f) != NULL;
        fclose(f);
        if (ok) {
            line[strcspn(line, "\n")] = '\0';
            snprintf(v->broker.bootstrap, sizeof(v->broker.bootstrap), "%s", line);
            *st = v;
            return 0;
        }
    }
    return -1;
}

static int teardown(void **st)
{
    struct env *v = *st;

    if (v->worker > 0)
        test_stop_pid(v->worker, SIGKILL, 5000);
    if (v->control[0]) { /* started here: stop it by its pid */
        test_stop_pid(v->broker.pid, SIGTERM, 5000);
    } else {
        test_broker_stop(&v->broker);
    }
    test_registry_free(v->srv);
    if (getenv("STREAMML_KEEP_TEST_DIR"))
        fprintf(stderr, "kept %s\n", v->dir);
    else if (sh("rm -rf '%s'", v->dir))
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

static int log_has(struct env *v, const char *text)
{
    return sh("grep -q '%s' %s/worker.log", text, v->dir) == 0;
}

/* n image events (all the same good image) framed with schema id `id`. */
static void produce_images(struct env *v, int from, int n, int32_t id)
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
        if (id > 0) { /* Confluent framing: byte 0 magic, 1-4 the id */
            b.data[1] = (unsigned char)(id >> 24);
            b.data[2] = (unsigned char)(id >> 16);
            b.data[3] = (unsigned char)(id >> 8);
            b.data[4] = (unsigned char)id;
        }
        assert_int_equal(
            kq_produce(q, "images", ev.patient_id, strlen(ev.patient_id), b.data, b.len, NULL, &e),
            ERR_OK);
    }
    assert_int_equal(kq_close(q, 10000, &e), ERR_OK);
    buf_free(&b);
    codec_close(cd);
}

/* Lines of the topic (decoded with the registry when url is set) that
 * contain needle. */
static long count_lines(struct env *v, const char *topic, const char *url, const char *needle)
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
                    url ? "-r" : NULL,
                    (char *)url,
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

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = calloc(1, 64 * 1024);
    size_t n;

    assert_non_null(f);
    assert_non_null(buf);
    n = fread(buf, 1, 64 * 1024 - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void test_images_use_the_schema_registry(void **st)
{
    struct env *v = *st;
    char url[200], *text = slurp("schemas/image_event.avsc");
    int id;

    assert_non_null(v->srv = test_registry_start(0, NULL, NULL));
    /* Another producer registered the image event schema: it gets the
     * registry's id (1), which is not its local id (5). */
    id = test_registry_add(v->srv, "images-value", text);
    free(text);
    assert_true(id > 0 && id != 5);
    snprintf(url, sizeof(url), "schema.registry.url=%s", test_registry_url(v->srv));
    produce_images(v, 0, 5, id);
    const char *extra[] = {url, "group.id=rt-images-reg", NULL};
    assert_true(start_worker(v, extra) > 0);
    if (test_wait_topic(v->broker.bootstrap, "predictions.images", 5, 45000)) {
        sh("tail -5 %s/worker.log >&2", v->dir);
        fail_msg("no 5 predictions (dead letters: %lld)",
                 (long long)test_topic_size(v->broker.bootstrap, "images.dlq"));
    }
    assert_int_equal(WEXITSTATUS(test_stop_pid(v->worker, SIGTERM, 15000)), 0);
    v->worker = 0;
    assert_int_equal(test_topic_size(v->broker.bootstrap, "images.dlq"), 0);
    /* framed with the id registered under predictions.images-value */
    assert_int_equal(
        count_lines(v, "predictions.images", test_registry_url(v->srv), "\"status\":\"ok\""), 5);
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
    sh("tail -5 %s/worker.log >&2", v->dir);
    fail_msg("no model_reload %s alert with \"%s\"", severity, text);
}

static void test_images_reload_on_file_change_and_sighup(void **st)
{
    struct env *v = *st;
    char model[200], set_model[240];

    snprintf(model, sizeof(model), "%s/model.onnx", v->dir);
    snprintf(set_model, sizeof(set_model), "images.model=%s", model);
    assert_int_equal(sh("cp " MODEL " %s", model), 0);
    const char *extra[] = {set_model, "model.watch_ms=200", "group.id=rt-images-reload", NULL};
    assert_true(start_worker(v, extra) > 0);
    produce_images(v, 0, 3, 0);
    assert_int_equal(test_wait_topic(v->broker.bootstrap, "predictions.images", 3, 45000), 0);

    /* A broken file: refused, the old model keeps grading. */
    assert_int_equal(sh("echo not a model > %s.tmp && mv %s.tmp %s", model, model, model), 0);
    wait_reload_alert(v, "WARNING", "refused", 1);
    produce_images(v, 3, 3, 0);
    assert_int_equal(test_wait_topic(v->broker.bootstrap, "predictions.images", 6, 30000), 0);
    assert_int_equal(count_lines(v, "predictions.images", NULL, "\"model_name\":\"fundus-cnn\""),
                     6);

    /* Another model: taken on the file change, then again on SIGHUP. */
    assert_int_equal(sh("cp " OTHER_MODEL " %s.tmp && mv %s.tmp %s", model, model, model), 0);
    wait_reload_alert(v, "INFO", "file change", 1);
    assert_int_equal(kill(v->worker, SIGHUP), 0);
    wait_reload_alert(v, "INFO", "SIGHUP", 1);
    produce_images(v, 6, 3, 0);
    assert_int_equal(test_wait_topic(v->broker.bootstrap, "predictions.images", 9, 30000), 0);
    assert_int_equal(count_lines(v, "predictions.images", NULL, "\"model_name\":\"cam-net\""), 3);
    assert_int_equal(WEXITSTATUS(test_stop_pid(v->worker, SIGTERM, 15000)), 0);
    v->worker = 0;
}

/* One command to the broker's FIFO; waits for its "ok" in the broker log. */
static void inject(struct env *v, const char *cmd)
{
    int fd = open(v->control, O_WRONLY);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, cmd, strlen(cmd)), (ssize_t)strlen(cmd));
    assert_int_equal(write(fd, "\n", 1), 1);
    close(fd);
    for (int i = 0; i < 100; i++, test_sleep_ms(100))
        if (sh("grep -q 'control: %s: ok' %s/broker.log", cmd, v->dir) == 0)
            return;
    fail_msg("the broker did not take \"%s\"", cmd);
}

static void test_images_keep_polling_while_deliveries_stall(void **st)
{
    struct env *v = *st;
    const char *extra[] = {"group.id=rt-images-bp",     "worker.max_inflight=2", "images.batch=1",
                           "max.poll.interval.ms=6000", "retry.backoff.ms=500",  NULL};

    /* The input first (its producer must not meet the refusals); then the
     * broker refuses the next 24 Produce requests, the worker's: with 0.5 s
     * between retries its deliveries stall for about 12 s, twice
     * max.poll.interval.ms, with worker.max_inflight reached at once. */
    produce_images(v, 0, 12, 0);
    inject(v, "errors Produce 24 NOT_ENOUGH_REPLICAS");
    assert_true(start_worker(v, extra) > 0);
    test_sleep_ms(12000);
    assert_int_equal(waitpid(v->worker, NULL, WNOHANG), 0);
    assert_int_equal(test_wait_topic(v->broker.bootstrap, "predictions.images", 12, 60000), 0);
    assert_int_equal(WEXITSTATUS(test_stop_pid(v->worker, SIGTERM, 15000)), 0);
    v->worker = 0;
    if (log_has(v, "maximum poll interval"))
        fail_msg("the worker stopped polling and was dropped from its group");
    /* one assignment: never left the group, never rejoined */
    assert_int_equal(sh("test $(grep -c 'rebalance: assigned' %s/worker.log) -eq 1", v->dir), 0);
    assert_true(log_has(v, "consumption paused"));
    assert_int_equal(count_lines(v, "predictions.images", NULL, "\"image_id\""), 12);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_images_use_the_schema_registry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_images_reload_on_file_change_and_sighup, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_images_keep_polling_while_deliveries_stall,
                                        setup_control, teardown),
    };
    if (getenv("TEST_FILTER")) /* e.g. "*registry*" */
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
