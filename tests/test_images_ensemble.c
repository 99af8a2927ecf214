/* A model set in the images worker (images.models, common/streams/grader.h):
 *
 *   - the worker, serving fundus_cnn.onnx (112 px, weight 0.7) with
 *     fundus_cnn_b.onnx (128 px, perturbed weights, weight 0.3: made by
 *     models/images/make_member.py) publishes for each sample the weighted
 *     mean of what `streamml predict` gives for each member run alone, to
 *     1e-6 (float logits), the agreement (weight of the members whose own
 *     grade is the ensemble's), model "ensemble", and the CAM of the member
 *     images.cam_model names (its 8 x 8 feature map, not the first's 7 x 7);
 *     a low-quality image is still refused (agreement -1);
 *   - a member replaced by a broken file under model.watch_ms: the reload is
 *     refused naming that member and the set keeps grading;
 *   - a set with a broken member is refused at start (exit 2, the member
 *     named).
 *
 * Before the worker took images.models it graded with images.model alone:
 * its probabilities were the first member's (off by up to 0.5 here), and it
 * had no agreement field.
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
#include <unistd.h>

#include "stack.h"

#define TOPICS "images:2,predictions.images:2,images.dlq:1"
#define SAMPLES "models/images/samples"
#define MODEL_A "models/images/fundus_cnn.onnx"
#define MODEL_B "models/images/fundus_cnn_b.onnx"
#define WA 0.7
#define WB 0.3
#define TOL 1e-6

static const char *const files[] = {
    "fundus_00_g0.png", "fundus_01_g1.png", "fundus_02_g2.png", "fundus_03_g3.png",
    "fundus_04_g4.png", "fundus_05_g0.jpg", "fundus_06_g1.jpg", "fundus_07_g2.jpg",
    "fundus_08_g3.jpg", "fundus_09_g4.jpg",
};
#define NFILES (sizeof(files) / sizeof(files[0]))

struct env {
    struct test_broker broker;
    char dir[64], root[128];
};

static int setup(void **st)
{
    struct env *v = calloc(1, sizeof(*v));

    if (!v)
        return -1;
    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-imgens-XXXXXX");
    if (!mkdtemp(v->dir))
        return -1;
    snprintf(v->root, sizeof(v->root), "%s/root", v->dir);
    if (test_sh("mkdir -p %s && cp " SAMPLES "/*.png " SAMPLES "/*.jpg %s/ && cp -r " SAMPLES
           "/lowq %s/ && cp " MODEL_A " %s/a.onnx && cp " MODEL_B " %s/b.onnx",
           v->root, v->root, v->root, v->dir, v->dir) ||
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

/* JSON lines of path, keyed by the string field key (a new reference). */
static json_t *load_by(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    char line[16384];
    json_t *all = json_object();

    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        json_error_t je;
        json_t *p;
        const char *id;
        if (line[0] != '{')
            continue;
        if (!(p = json_loads(line, 0, &je)))
            fail_msg("%s: %s", path, je.text);
        if (!(id = json_string_value(json_object_get(p, key))))
            fail_msg("%s: a line without %s", path, key);
        json_object_set_new(all, id, p);
    }
    fclose(f);
    return all;
}

/* Each member alone through `streamml predict` (the images step with one
 * model): image file name -> probabilities. */
static json_t *predict_alone(struct env *v, const char *model, const char *tag)
{
    char out[200], cmd[4096];
    size_t len;
    json_t *by_path, *by_file = json_object();
    const char *k;
    json_t *p;

    snprintf(out, sizeof(out), "%s/alone-%s.jsonl", v->dir, tag);
    len = (size_t)snprintf(cmd, sizeof(cmd), "%s predict --model %s", test_bin("streamml"), model);
    for (size_t i = 0; i < NFILES; i++)
        len += (size_t)snprintf(cmd + len, sizeof(cmd) - len, " --image %s/%s", v->root, files[i]);
    snprintf(cmd + len, sizeof(cmd) - len, " > %s 2>/dev/null", out);
    assert_int_equal(test_sh("%s", cmd), 0);
    by_path = load_by(out, "image");
    json_object_foreach(by_path, k, p)
    {
        const char *slash = strrchr(k, '/');
        json_object_set(by_file, slash ? slash + 1 : k, json_object_get(p, "probabilities"));
    }
    json_decref(by_path);
    assert_int_equal(json_object_size(by_file), NFILES);
    return by_file;
}

static void produce(struct env *v, const char *prefix, int lowq)
{
    char path[200];
    FILE *f;

    snprintf(path, sizeof(path), "%s/events-%s.jsonl", v->dir, prefix);
    assert_non_null(f = fopen(path, "w"));
    for (size_t i = 0; i < NFILES; i++)
        fprintf(f,
                "{\"image_id\":\"%s-%s\",\"patient_id\":\"p%zu\",\"uri\":\"%s\","
                "\"event_time\":%lld}\n",
                prefix, files[i], i, files[i], 1767225600000LL + (long long)i);
    if (lowq)
        fprintf(f,
                "{\"image_id\":\"%s-blur\",\"patient_id\":\"p\",\"uri\":\"lowq/blurred.png\","
                "\"event_time\":1767225600000}\n",
                prefix);
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

/* The topic's predictions as JSON lines, by image id. */
static json_t *consume(struct env *v)
{
    char out[200];
    char *a[] = {(char *)test_bin("streamml"),
                 "consume",
                 "-b",
                 v->broker.bootstrap,
                 "-t",
                 "predictions.images",
                 "-f",
                 "-e",
                 "--log-level",
                 "error",
                 NULL};

    snprintf(out, sizeof(out), "%s/live.jsonl", v->dir);
    assert_int_equal(test_run_wait(a, out), 0);
    return load_by(out, "image_id");
}

static int argmax(json_t *pr)
{
    int g = 0;
    for (int k = 1; k < 5; k++)
        if (json_number_value(json_array_get(pr, (size_t)k)) >
            json_number_value(json_array_get(pr, (size_t)g)))
            g = k;
    return g;
}

static void check_ensemble(json_t *live, const char *prefix, json_t *pa, json_t *pb)
{
    double worst = 0;
    int disagree = 0, referable = 0;

    for (size_t i = 0; i < NFILES; i++) {
        char id[128];
        json_t *p, *pr, *a = json_object_get(pa, files[i]), *b = json_object_get(pb, files[i]);
        double agree = 0;
        int g, ref;

        snprintf(id, sizeof(id), "%s-%s", prefix, files[i]);
        if (!(p = json_object_get(live, id)))
            fail_msg("%s: no prediction", id);
        assert_string_equal(json_string_value(json_object_get(p, "status")), "ok");
        assert_string_equal(json_string_value(json_object_get(p, "model_name")), "ensemble");
        pr = json_object_get(p, "probabilities");
        assert_int_equal(json_array_size(pr), 5);
        for (size_t k = 0; k < 5; k++) {
            double want = WA * json_number_value(json_array_get(a, k)) +
                          WB * json_number_value(json_array_get(b, k));
            double d = fabs(json_number_value(json_array_get(pr, k)) - want);
            if (!(d <= TOL))
                fail_msg("%s: p[%zu] %.9f, members alone give %.9f", id, k,
                         json_number_value(json_array_get(pr, k)), want);
            worst = fmax(worst, d);
        }
        g = (int)json_integer_value(json_object_get(p, "grade"));
        assert_int_equal(g, argmax(pr));
        agree = (argmax(a) == g ? WA : 0) + (argmax(b) == g ? WB : 0);
        disagree += argmax(a) != argmax(b);
        if (fabs(json_number_value(json_object_get(p, "agreement")) - agree) > 1e-12)
            fail_msg("%s: agreement %g, by hand %g", id,
                     json_number_value(json_object_get(p, "agreement")), agree);
        /* the CAM member's map, for referable predictions only: fundus_cnn_b
         * at 128 px has 8 x 8 */
        ref = json_is_true(json_object_get(p, "referable"));
        referable += ref;
        assert_int_equal(json_integer_value(json_object_get(p, "cam_height")), ref ? 8 : 0);
        assert_int_equal(json_integer_value(json_object_get(p, "cam_width")), ref ? 8 : 0);
    }
    printf("  %s: %zu images, max |worker - (%.1f a + %.1f b alone)| = %.3g; members disagree "
           "on %d; %d referable with the CAM member's map\n",
           prefix, NFILES, WA, WB, worst, disagree, referable);
    assert_true(disagree > 0); /* the agreement is exercised below 1 */
    assert_true(referable > 0);
}

static void test_worker_ensemble_equals_members_and_reload(void **st)
{
    struct env *v = *st;
    char root[200], models[300], log[200], bin[512];
    json_t *pa = predict_alone(v, MODEL_A, "a"), *pb = predict_alone(v, MODEL_B, "b");
    char *argv[] = {bin,
                    "-b",
                    v->broker.bootstrap,
                    "-X",
                    root,
                    "-X",
                    models,
                    "-X",
                    "images.cam_model=b.onnx",
                    "-X",
                    "images.referable_threshold=0.5",
                    "-X",
                    "images.batch=4",
                    "-X",
                    "model.watch_ms=200",
                    "-X",
                    "worker.poll_ms=20",
                    "-X",
                    "group.id=it-imgens",
                    "-X",
                    "session.timeout.ms=6000",
                    "-X",
                    "heartbeat.interval.ms=500",
                    "--log-level",
                    "warn",
                    NULL};
    json_t *live, *blur;
    pid_t w;

    snprintf(bin, sizeof(bin), "%s", test_bin("streamml-images")); /* test_bin's buffer is reused */
    snprintf(root, sizeof(root), "images.root=%s", v->root);
    snprintf(models, sizeof(models), "images.models=%s/a.onnx:%g,%s/b.onnx:%g", v->dir, WA, v->dir,
             WB);
    snprintf(log, sizeof(log), "%s/worker.log", v->dir);
    produce(v, "one", 1);
    assert_true((w = test_spawn(argv, log)) > 0);
    if (test_wait_topic(v->broker.bootstrap, "predictions.images", NFILES + 1, 60000)) {
        test_sh("tail -5 %s >&2", log);
        fail_msg("no %zu predictions within 60 s", NFILES + 1);
    }
    live = consume(v);
    check_ensemble(live, "one", pa, pb);
    blur = json_object_get(live, "one-blur");
    assert_non_null(blur);
    assert_string_equal(json_string_value(json_object_get(blur, "reason")),
                        "low_quality:sharpness");
    assert_true(json_number_value(json_object_get(blur, "agreement")) == -1.0);
    json_decref(live);

    /* A member broken in place: the reload is refused naming it; the set
     * keeps grading. */
    assert_int_equal(test_sh("head -c 1000 %s/a.onnx > %s/b.tmp && mv %s/b.tmp %s/b.onnx", v->dir,
                        v->dir, v->dir, v->dir),
                     0);
    for (int i = 0; i < 100 && test_sh("grep -q 'b.onnx' %s", log) != 0; i++)
        test_sleep_ms(100);
    if (test_sh("grep 'refused' %s | grep -q 'b.onnx'", log) != 0) {
        test_sh("tail -5 %s >&2", log);
        fail_msg("no refused reload naming b.onnx");
    }
    produce(v, "two", 0);
    if (test_wait_topic(v->broker.bootstrap, "predictions.images", 2 * NFILES + 1, 60000))
        fail_msg("the set stopped grading after the refused reload");
    live = consume(v);
    check_ensemble(live, "two", pa, pb);
    json_decref(live);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w, SIGTERM, 15000)), 0);

    /* At start: a broken member stops the worker (exit 2) naming it. */
    w = test_spawn(argv, log);
    assert_true(w > 0);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w, 0, 30000)), 2);
    if (test_sh("grep -q 'b.onnx' %s", log) != 0)
        fail_msg("the start-up error does not name b.onnx");
    json_decref(pa);
    json_decref(pb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_worker_ensemble_equals_members_and_reload, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
