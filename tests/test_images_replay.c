/* The images stream offline: `streamml replay --stream images` against the
 * live worker, and `streamml report` on the images stream's own predictions.
 *
 * Parity: the images worker grades a topic of image events (good PNG/JPEG
 * samples, too small, corrupt, truncated, missing, forbidden, plus one
 * undecodable message); replaying that topic, and an Avro container file
 * of the same events, in batches of another size gives, image by image,
 * the same status, ungradable reason, grade, referable flag and threshold,
 * model, source position (topic), and probabilities / expected grade /
 * P(referable) / CAM grid equal to float precision.
 *
 * Report: image predictions as the stream publishes them (image_id,
 * status, grade, referable, referable_probability) joined with true grades
 * by image_id: QWK, confusion matrix, and sensitivity/specificity of the
 * published referable flag (chosen here to disagree with "grade >= 2", so
 * a report that re-derived the flag from the grade fails), checked against
 * scikit-learn's values; no credit wording in the HTML.
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

#include "codec.h"
#include "stack.h"

#define TOPICS "images:2,predictions.images:2,images.dlq:1,replayed.images:1"
#define SAMPLES "models/images/samples"
#define MODEL "models/images/fundus_cnn.onnx"
#define FIX "tests/fixtures/images"
#define PROB_TOL 1e-6 /* float precision of the model's logits */

struct env {
    struct test_broker broker;
    char dir[64], root[128], live[160];
};

static const char *const cases[][3] = {
    /* image id, uri (relative to the root), expected */
    {"g0", "fundus_00_g0.png", "ok"},        {"g1", "fundus_01_g1.png", "ok"},
    {"g2", "fundus_02_g2.png", "ok"},        {"g3", "fundus_03_g3.png", "ok"},
    {"g4", "fundus_04_g4.png", "ok"},        {"j0", "fundus_05_g0.jpg", "ok"},
    {"j2", "fundus_07_g2.jpg", "ok"},        {"j4", "fundus_09_g4.jpg", "ok"},
    {"tiny", "tiny.png", "too_small"},       {"corrupt", "corrupt.png", "corrupt"},
    {"trunc", "truncated.jpg", "truncated"}, {"gone", "gone.png", "missing"},
    {"up", "../outside.png", "forbidden"},
    /* the quality checks (images.quality's default limits) */
    {"blur", "lowq/blurred.png", "low_quality:sharpness"},
    {"dark", "lowq/dark.png", "low_quality:dark"},
};
#define N_CASES (sizeof(cases) / sizeof(cases[0]))

static void event_of(size_t i, struct image_event *ev)
{
    memset(ev, 0, sizeof(*ev));
    snprintf(ev->image_id, sizeof(ev->image_id), "%s", cases[i][0]);
    snprintf(ev->patient_id, sizeof(ev->patient_id), "p%zu", i % 5);
    snprintf(ev->uri, sizeof(ev->uri), "%s", cases[i][1]);
    ev->event_time_ms = 1767225600000LL + (long long)i;
}

static void produce_events(struct env *v)
{
    char path[200], garbage[200];
    FILE *f;

    snprintf(path, sizeof(path), "%s/events.jsonl", v->dir);
    f = fopen(path, "w");
    assert_non_null(f);
    for (size_t i = 0; i < N_CASES; i++) {
        struct image_event ev;
        event_of(i, &ev);
        fprintf(f,
                "{\"image_id\":\"%s\",\"patient_id\":\"%s\",\"uri\":\"%s\",\"event_time\":%lld}\n",
                ev.image_id, ev.patient_id, ev.uri, (long long)ev.event_time_ms);
    }
    fclose(f);
    snprintf(garbage, sizeof(garbage), "%s/garbage.txt", v->dir);
    f = fopen(garbage, "w");
    assert_non_null(f);
    fprintf(f, "this is not avro\n");
    fclose(f);
    char *a1[] = {(char *)test_bin("streamml"),
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
    assert_int_equal(test_run_wait(a1, NULL), 0);
    char *a2[] = {(char *)test_bin("streamml"),
                  "produce",
                  "-b",
                  v->broker.bootstrap,
                  "-t",
                  "images",
                  "--raw",
                  "-i",
                  garbage,
                  "--log-level",
                  "warn",
                  NULL};
    assert_int_equal(test_run_wait(a2, NULL), 0);
}

/* The live worker over the topic; its published predictions as JSON lines
 * in v->live. */
static void run_worker(struct env *v)
{
    char root[200], log[200];
    char *argv[] = {(char *)test_bin("streamml-images"),
                    "-b",
                    v->broker.bootstrap,
                    "-X",
                    root,
                    "-X",
                    "images.model=" MODEL,
                    "-X",
                    "images.min_side=16",
                    "-X",
                    "images.batch=4",
                    "-X",
                    "worker.poll_ms=20",
                    "-X",
                    "group.id=it-imgreplay",
                    "-X",
                    "session.timeout.ms=6000",
                    "-X",
                    "heartbeat.interval.ms=500",
                    "--log-level",
                    "warn",
                    NULL};
    pid_t w;

    snprintf(root, sizeof(root), "images.root=%s", v->root);
    snprintf(log, sizeof(log), "%s/worker.log", v->dir);
    w = test_spawn(argv, log);
    assert_true(w > 0);
    if (test_wait_topic(v->broker.bootstrap, "predictions.images", (int64_t)N_CASES, 60000)) {
        test_sh("tail -5 %s >&2", log);
        fail_msg("no %zu predictions within 60 s", N_CASES);
    }
    assert_int_equal(WEXITSTATUS(test_stop_pid(w, SIGTERM, 15000)), 0);
    char *consume[] = {(char *)test_bin("streamml"),
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
    snprintf(v->live, sizeof(v->live), "%s/live.jsonl", v->dir);
    assert_int_equal(test_run_wait(consume, v->live), 0);
}

static int setup(void **st)
{
    struct env *v = calloc(1, sizeof(*v));

    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-imgrp-XXXXXX");
    if (!v || !mkdtemp(v->dir))
        return -1;
    snprintf(v->root, sizeof(v->root), "%s/root", v->dir);
    if (test_sh("mkdir -p %s && cp " SAMPLES "/*.png " SAMPLES "/*.jpg %s/ && cp -r " SAMPLES
           "/lowq %s/ && cp " FIX "/tiny.png " FIX "/corrupt.png " FIX
           "/truncated.jpg %s/ && cp " FIX "/rgb.png %s/outside.png",
           v->root, v->root, v->root, v->root, v->dir) ||
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

/* image id -> its prediction (a new reference), from JSON lines. */
static json_t *load_by_id(const char *path)
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
            continue; /* consume's own summary line */
        p = json_loads(line, 0, &je);
        if (!p)
            fail_msg("%s: %s", path, je.text);
        id = json_string_value(json_object_get(p, "image_id"));
        assert_non_null(id);
        if (json_object_get(all, id))
            fail_msg("%s: two predictions for %s", path, id);
        json_object_set_new(all, id, p);
    }
    fclose(f);
    return all;
}

static void same_string(json_t *a, json_t *b, const char *id, const char *field)
{
    const char *x = json_string_value(json_object_get(a, field));
    const char *y = json_string_value(json_object_get(b, field));

    if (!x || !y || strcmp(x, y) != 0)
        fail_msg("%s: %s live \"%s\", replay \"%s\"", id, field, x ? x : "(none)",
                 y ? y : "(none)");
}

static void same_number(json_t *a, json_t *b, const char *id, const char *field, double tol,
                        double *worst)
{
    json_t *x = json_object_get(a, field), *y = json_object_get(b, field);
    double d;

    if (json_is_array(x) || json_is_array(y)) {
        if (json_array_size(x) != json_array_size(y))
            fail_msg("%s: %s has %zu values live, %zu replayed", id, field, json_array_size(x),
                     json_array_size(y));
        for (size_t k = 0; k < json_array_size(x); k++) {
            d = fabs(json_number_value(json_array_get(x, k)) -
                     json_number_value(json_array_get(y, k)));
            if (!(d <= tol))
                fail_msg("%s: %s[%zu] differs by %g", id, field, k, d);
            *worst = fmax(*worst, d);
        }
        return;
    }
    if (!json_is_number(x) || !json_is_number(y))
        fail_msg("%s: %s is not a number in both", id, field);
    d = fabs(json_number_value(x) - json_number_value(y));
    if (!(d <= tol))
        fail_msg("%s: %s live %.17g, replay %.17g", id, field, json_number_value(x),
                 json_number_value(y));
    *worst = fmax(*worst, d);
}

/* Every case once in both, graded alike. from_topic: the source position
 * must match too. */
static void check_parity(const char *live, const char *replay, int from_topic)
{
    json_t *a = load_by_id(live), *b = load_by_id(replay);
    double worst = 0;

    assert_int_equal(json_object_size(a), N_CASES);
    assert_int_equal(json_object_size(b), N_CASES);
    for (size_t i = 0; i < N_CASES; i++) {
        const char *id = cases[i][0];
        json_t *x = json_object_get(a, id), *y = json_object_get(b, id);
        if (!x || !y)
            fail_msg("%s: missing from the %s predictions", id, x ? "replayed" : "live");
        same_string(x, y, id, "status");
        same_string(x, y, id, "reason");
        same_string(x, y, id, "model_name");
        same_string(x, y, id, "model_version");
        same_string(x, y, id, "patient_id");
        if (strcmp(cases[i][2], json_string_value(json_object_get(x, "status"))) != 0 &&
            strcmp(cases[i][2], json_string_value(json_object_get(x, "reason"))) != 0)
            fail_msg("%s: expected %s", id, cases[i][2]);
        assert_true(json_equal(json_object_get(x, "grade"), json_object_get(y, "grade")));
        assert_true(json_equal(json_object_get(x, "referable"), json_object_get(y, "referable")));
        assert_true(json_equal(json_object_get(x, "event_time"), json_object_get(y, "event_time")));
        same_number(x, y, id, "referable_threshold", 0, &worst);
        same_number(x, y, id, "probabilities", PROB_TOL, &worst);
        same_number(x, y, id, "expected_grade", 4 * PROB_TOL, &worst);
        same_number(x, y, id, "referable_probability", 3 * PROB_TOL, &worst);
        same_number(x, y, id, "cam_grid", 1e-5, &worst);
        if (from_topic) {
            same_string(x, y, id, "src_topic");
            assert_true(json_equal(json_object_get(x, "src_partition"),
                                   json_object_get(y, "src_partition")));
            assert_true(
                json_equal(json_object_get(x, "src_offset"), json_object_get(y, "src_offset")));
        }
    }
    printf("# replay vs live worker: %zu images, max |difference| %.2e\n", N_CASES, worst);
    json_decref(a);
    json_decref(b);
}

/* `streamml replay --stream images` of input (-t TOPIC or --avro-file FILE)
 * to out, batches of 3; out_topic: also the Avro records there. */
static int replay(struct env *v, const char *input_opt, const char *input, const char *out,
                  const char *log, const char *out_topic)
{
    char root[200];
    char *argv[] = {(char *)test_bin("streamml"),
                    "replay",
                    "--stream",
                    "images",
                    "-b",
                    v->broker.bootstrap,
                    (char *)input_opt,
                    (char *)input,
                    "-X",
                    root,
                    "-X",
                    "images.model=" MODEL,
                    "-X",
                    "images.min_side=16",
                    "-X",
                    "images.batch=3",
                    "-o",
                    (char *)out,
                    "-q",
                    "--skip-invalid",
                    "--log-level",
                    "warn",
                    out_topic ? "--output-topic" : NULL,
                    (char *)out_topic,
                    NULL};

    snprintf(root, sizeof(root), "images.root=%s", v->root);
    return test_run_wait(argv, log);
}

static void test_replaying_the_topic_gives_the_live_workers_grades(void **st)
{
    struct env *v = *st;
    char out[200], log[200];

    produce_events(v);
    run_worker(v);
    snprintf(out, sizeof(out), "%s/replay.jsonl", v->dir);
    snprintf(log, sizeof(log), "%s/replay.log", v->dir);
    if (replay(v, "-t", "images", out, log, "replayed.images") != 0) {
        test_sh("cat %s >&2", log);
        fail_msg("replay failed");
    }
    /* the undecodable message is reported, not graded */
    assert_int_equal(test_sh("grep -q 'image predictions in' %s && grep -q '1 invalid' %s", log, log),
                     0);
    check_parity(v->live, out, 1);
    /* --output-topic: the same records, as Avro, which consume decodes */
    assert_int_equal(test_topic_size(v->broker.bootstrap, "replayed.images"), (int64_t)N_CASES);
    char *consume[] = {(char *)test_bin("streamml"),
                       "consume",
                       "-b",
                       v->broker.bootstrap,
                       "-t",
                       "replayed.images",
                       "-f",
                       "-e",
                       "--log-level",
                       "error",
                       NULL};
    snprintf(out, sizeof(out), "%s/replayed_topic.jsonl", v->dir);
    assert_int_equal(test_run_wait(consume, out), 0);
    check_parity(v->live, out, 1);

    /* The same events from an Avro container file. */
    struct err e = {0};
    struct codec *cd = codec_open("schemas", &e);
    char file[200];
    struct codec_file *f;
    assert_non_null(cd);
    snprintf(file, sizeof(file), "%s/events.avro", v->dir);
    f = codec_file_open_write_as(cd, file, CODEC_IMAGE_EVENT, &e);
    assert_non_null(f);
    for (size_t i = 0; i < N_CASES; i++) {
        struct image_event ev;
        event_of(i, &ev);
        assert_int_equal(codec_file_write_image_event(f, &ev, &e), ERR_OK);
    }
    assert_int_equal(codec_file_close(f, &e), ERR_OK);
    /* a transaction reader refuses the file, naming the schema */
    assert_null(codec_file_open_read(cd, file, &e));
    assert_non_null(strstr(e.msg, "another schema"));
    codec_close(cd);
    snprintf(out, sizeof(out), "%s/replay_file.jsonl", v->dir);
    if (replay(v, "--avro-file", file, out, log, NULL) != 0) {
        test_sh("cat %s >&2", log);
        fail_msg("replay of the file failed");
    }
    check_parity(v->live, out, 0);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

/* A line of the images stream's predictions, as `streamml consume` shows them. */
static void pred(FILE *f, const char *id, int grade, int referable, double p)
{
    if (grade < 0) {
        fprintf(f,
                "{\"image_id\":\"%s\",\"patient_id\":\"p\",\"status\":\"ungradable\","
                "\"reason\":\"too_small\",\"grade\":-1,\"referable\":false,"
                "\"referable_probability\":-1,\"probabilities\":[]}\n",
                id);
        return;
    }
    fprintf(f,
            "{\"image_id\":\"%s\",\"patient_id\":\"p\",\"status\":\"ok\",\"reason\":\"\","
            "\"grade\":%d,\"referable\":%s,\"referable_probability\":%g,"
            "\"probabilities\":[0.2,0.2,0.2,0.2,0.2]}\n",
            id, grade, referable ? "true" : "false", p);
}

static void test_report_reads_image_predictions_as_published(void **st)
{
    char dir[] = "/tmp/streamml-imgrep-XXXXXX", preds[128], labels[128], html[128], out[128];
    FILE *f;
    (void)st;

    assert_non_null(mkdtemp(dir));
    snprintf(preds, sizeof(preds), "%s/preds.jsonl", dir);
    snprintf(labels, sizeof(labels), "%s/labels.csv", dir);
    snprintf(html, sizeof(html), "%s/report.html", dir);
    snprintf(out, sizeof(out), "%s/out.txt", dir);
    f = fopen(preds, "w");
    assert_non_null(f);
    /* The flags disagree with "grade >= 2" for b and d (a threshold on
     * P(referable), not on the grade). */
    pred(f, "a", 0, 0, 0.1);
    pred(f, "b", 1, 1, 0.6);
    pred(f, "c", 3, 1, 0.9);
    pred(f, "d", 2, 0, 0.4);
    pred(f, "e", -1, 0, 0);
    pred(f, "f", 4, 1, 0.95); /* no label */
    fclose(f);
    write_file(labels, "image_id,label\na,0\nb,0\nc,3\nd,2\ne,1\n");
    char *argv[] = {(char *)test_bin("streamml"),
                    "report",
                    "-p",
                    preds,
                    "-l",
                    labels,
                    "-o",
                    html,
                    "--gate",
                    "qwk>=0.9",
                    "--gate",
                    "sensitivity>=0.5",
                    NULL};
    int rc = test_run_wait(argv, out);
    test_sh("cat %s", out);
    assert_int_equal(rc, 0);
    /* sklearn: cohen_kappa_score([0,0,3,2], [0,1,3,2], weights="quadratic")
     * = 0.9166666666666666; the flags [0,1,1,0] against truth [0,0,1,1]:
     * sensitivity 0.5, specificity 0.5; roc_auc_score 0.75, brier 0.185. */
    assert_int_equal(test_sh("grep -q 'joined 4 graded image predictions' %s", out), 0);
    assert_int_equal(test_sh("grep -q '1 ungradable (too_small 1)' %s", out), 0);
    assert_int_equal(test_sh("grep -q 'qwk 0.916667  sensitivity 0.500000  specificity 0.500000 "
                        "(published referable flag)' %s",
                        out),
                     0);
    assert_int_equal(test_sh("grep -q 'auc 0.750000  brier 0.185000' %s", out), 0);
    assert_int_equal(test_sh("grep -q '^3: 0 0 0 1' %s", out), 0); /* truth 3 graded 3 */
    assert_int_equal(test_sh("grep -q 'Image grading report' %s", html), 0);
    /* no credit wording */
    assert_int_equal(WEXITSTATUS(test_sh("grep -Eiq 'approv|P\\(bad\\)|>good|>bad|decline|review' "
                                    "%s %s",
                                    html, out)),
                     1);
    /* a gate on the published flag fails as it should */
    char *gated[] = {
        (char *)test_bin("streamml"), "report", "-p", preds, "-l", labels, "-o", html, "--gate",
        "specificity>=0.9",           NULL};
    assert_int_equal(test_run_wait(gated, out), 3);
    test_sh("rm -rf '%s'", dir);
}

/* `streamml predict --image` runs the same step on files: the PNG samples'
 * probabilities equal torch's (the references models/images/train.py
 * wrote) within 1e-4, as the worker's do; a missing file is ungradable. */
static void test_predict_image_grades_files_like_the_worker(void **st)
{
    char dir[] = "/tmp/streamml-imgpred-XXXXXX", out[128], line[8192];
    json_error_t je;
    json_t *ref = json_load_file("tests/fixtures/images_model_ref.json", 0, &je), *c;
    char *argv[40] = {(char *)test_bin("streamml"), "predict", "--model", MODEL};
    char paths[16][128];
    int n = 4, nimg = 0, seen = 0;
    size_t i;
    FILE *f;
    (void)st;

    assert_non_null(ref);
    assert_non_null(mkdtemp(dir));
    snprintf(out, sizeof(out), "%s/out.jsonl", dir);
    json_array_foreach(json_object_get(ref, "cases"), i, c)
    {
        const char *file = json_string_value(json_object_get(c, "file"));
        if (!strstr(file, ".png") || nimg == 15)
            continue;
        snprintf(paths[nimg], sizeof(paths[nimg]), SAMPLES "/%s", file);
        argv[n++] = "--image";
        argv[n++] = paths[nimg++];
    }
    argv[n++] = "--image";
    argv[n++] = "/nonexistent/x.png";
    argv[n] = NULL;
    assert_true(nimg >= 3);
    assert_int_equal(test_run_wait(argv, out), 1); /* one ungradable */
    assert_non_null(f = fopen(out, "r"));
    while (fgets(line, sizeof(line), f)) {
        json_t *p = json_loads(line, 0, &je);
        const char *img;
        if (!p)
            continue; /* the log line */
        img = json_string_value(json_object_get(p, "image"));
        if (strcmp(img, "/nonexistent/x.png") == 0) {
            assert_string_equal(json_string_value(json_object_get(p, "reason")), "missing");
        } else {
            json_array_foreach(json_object_get(ref, "cases"), i, c)
            {
                if (!strstr(img, json_string_value(json_object_get(c, "file"))))
                    continue;
                for (size_t k = 0; k < 5; k++)
                    assert_float_equal(
                        json_number_value(json_array_get(json_object_get(p, "probabilities"), k)),
                        json_number_value(json_array_get(json_object_get(c, "probabilities"), k)),
                        1e-4);
                seen++;
            }
        }
        json_decref(p);
    }
    fclose(f);
    assert_int_equal(seen, nimg);
    json_decref(ref);
    test_sh("rm -rf '%s'", dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_report_reads_image_predictions_as_published),
        cmocka_unit_test(test_predict_image_grades_files_like_the_worker),
        cmocka_unit_test_setup_teardown(test_replaying_the_topic_gives_the_live_workers_grades,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
