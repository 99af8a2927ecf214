/* The images worker's quality values monitored like features
 * (images.quality_baseline), end to end on the embedded stack:
 *
 *   - the baseline is `streamml quality --monitor` over ten reference
 *     photographs (the demo samples: one per decile bin);
 *   - the worker grades those photographs four times each: the window
 *     matches the baseline, no data_drift alert;
 *   - then the same photographs under-exposed (brightness x 0.6, a camera
 *     drifting darker, still gradable by the limits): data_drift on q_mean
 *     goes CRITICAL on the monitoring topic, labelled with the worker and
 *     the model images-quality.
 *
 * Before the quality values were monitored, the worker refused
 * images.quality_baseline as an unknown key, and nothing watched them.
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
#include "stack.h"

#define TOPICS "images:1,predictions.images:1,images.dlq:1,monitoring:1"
#define SAMPLES "models/images/samples"
#define N_EACH 4 /* events per photograph and phase */
#define N_PHOTOS 10

static const char *const photos[N_PHOTOS] = {
    "fundus_00_g0.png", "fundus_01_g1.png", "fundus_02_g2.png", "fundus_03_g3.png",
    "fundus_04_g4.png", "fundus_05_g0.jpg", "fundus_06_g1.jpg", "fundus_07_g2.jpg",
    "fundus_08_g3.jpg", "fundus_09_g4.jpg"};

struct env {
    struct test_broker broker;
    char dir[64], root[128];
};

static int setup(void **st)
{
    struct env *v = calloc(1, sizeof(*v));

    if (!v)
        return -1;
    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-imgqd-XXXXXX");
    if (!mkdtemp(v->dir))
        return -1;
    snprintf(v->root, sizeof(v->root), "%s/root", v->dir);
    /* dim/: the same photographs under-exposed (PIL, as quality_images.py) */
    if (test_sh("mkdir -p %s/ref %s/dim && cp " SAMPLES "/*.png " SAMPLES "/*.jpg %s/ref/ && "
           "/usr/bin/python3 -c \"import sys, os; from PIL import Image, ImageEnhance\n"
           "for f in os.listdir(sys.argv[1]):\n"
           "    im = Image.open(os.path.join(sys.argv[1], f)).convert('RGB')\n"
           "    ImageEnhance.Brightness(im).enhance(0.6).save(os.path.join(sys.argv[2], f), "
           "quality=92)\" %s/ref %s/dim",
           v->root, v->root, v->root, v->root, v->root) ||
        test_broker_start(&v->broker, TOPICS))
        return -1;
    *st = v;
    return 0;
}

static int teardown(void **st)
{
    struct env *v = *st;

    test_broker_stop(&v->broker);
    if (test_sh("rm -rf '%s'", v->dir))
        fprintf(stderr, "could not remove %s\n", v->dir);
    free(v);
    return 0;
}

static void produce(struct env *v, const char *sub)
{
    char path[200];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s.jsonl", v->dir, sub);
    assert_non_null(f = fopen(path, "w"));
    for (int i = 0; i < N_EACH * N_PHOTOS; i++)
        fprintf(f,
                "{\"image_id\":\"%s%d\",\"patient_id\":\"p%d\",\"uri\":\"%s/%s\","
                "\"event_time\":%lld}\n",
                sub, i, i % 7, sub, photos[i % N_PHOTOS], 1767225600000LL + i);
    fclose(f);
    char *a[] = {(char *)test_bin("streamml"),
                 "produce",
                 "-b",
                 v->broker.bootstrap,
                 "-t",
                 "images",
                 "--schema",
                 "image_event",
                 "-i",
                 path,
                 "--log-level",
                 "warn",
                 NULL};
    assert_int_equal(test_run_wait(a, NULL), 0);
}

static void wait_predictions(struct env *v, int64_t n, const char *log)
{
    if (test_wait_topic(v->broker.bootstrap, "predictions.images", n, 60000)) {
        test_sh("tail -5 %s >&2", log);
        fail_msg("no %lld predictions within 60 s", (long long)n);
    }
    test_sleep_ms(1500); /* the last slice's evaluation and its alerts */
}

static int count_drift(struct env *v, struct test_alerts *a)
{
    char path[200];
    int n = 0;

    snprintf(path, sizeof(path), "%s/alerts.jsonl", v->dir);
    test_alerts_read(v->broker.bootstrap, path, a);
    for (int i = 0; i < a->n; i++)
        n += strcmp(test_alert_field(a->a[i], "alert_type"), "data_drift") == 0;
    return n;
}

static void test_darker_stream_raises_quality_drift(void **st)
{
    struct env *v = *st;
    char limits[200], baseline[200], qb[260], root[200], log[200], bin[512];
    char *argv[] = {bin,
                    "-b",
                    v->broker.bootstrap,
                    "-X",
                    root,
                    "-X",
                    qb,
                    "-X",
                    "monitor.window.events=40",
                    "-X",
                    "monitor.window.slices=2",
                    "-X",
                    "monitor.window.min_events=20",
                    "-X",
                    "monitor.window.ms=3600000",
                    "-X",
                    "images.batch=4",
                    "-X",
                    "worker.poll_ms=20",
                    "-X",
                    "group.id=it-imgqd",
                    "--log-level",
                    "warn",
                    NULL};
    struct test_alerts a;
    int up;
    pid_t w;

    snprintf(limits, sizeof(limits), "%s/limits.json", v->dir);
    snprintf(baseline, sizeof(baseline), "%s/quality_baseline.json", v->dir);
    assert_int_equal(test_sh("%s quality --images %s/ref --output %s --monitor %s >/dev/null",
                        test_bin("streamml"), v->root, limits, baseline),
                     0);
    snprintf(bin, sizeof(bin), "%s", test_bin("streamml-images"));
    snprintf(root, sizeof(root), "images.root=%s", v->root);
    snprintf(qb, sizeof(qb), "images.quality_baseline=%s", baseline);
    snprintf(log, sizeof(log), "%s/worker.log", v->dir);

    produce(v, "ref");
    assert_true((w = test_spawn(argv, log)) > 0);
    wait_predictions(v, N_EACH * N_PHOTOS, log);
    assert_int_equal(count_drift(v, &a), 0); /* the reference photographs: no drift */
    test_alerts_free(&a);

    produce(v, "dim");
    wait_predictions(v, 2 * N_EACH * N_PHOTOS, log);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w, SIGTERM, 15000)), 0);
    assert_true(count_drift(v, &a) > 0);
    up = test_alert_find(&a, 0, "data_drift", "q_mean", "CRITICAL");
    if (up < 0)
        fail_msg("no data_drift CRITICAL alert on q_mean");
    assert_string_equal(test_alert_field(a.a[up], "worker"), "images");
    assert_string_equal(test_alert_field(a.a[up], "model"), "images-quality");
    test_alerts_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_darker_stream_raises_quality_drift, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
