/* The images worker end to end on the embedded stack (`streamml broker`,
 * `streamml produce --schema image_event`, streamml-images, `streamml
 * consume`, all separate processes), and the demo model against torch.
 *
 * N decodable image events (good PNG/JPEG, too small, corrupt, truncated,
 * missing, not an image, "..", a symlink escape, http to an allow-listed
 * host with nothing listening, a metadata address) + 1 undecodable message ->
 * exactly N predictions (the bad ones ungradable with the right reason) and
 * 1 dead letter. The PNG samples' probabilities equal torch's (the
 * references models/images/train.py wrote) within 1e-4.
 *
 * The pipelined step (the next take decoded while this one's forward passes
 * run): a SIGTERM while a take is prepared answers it and commits (a restart
 * answers the rest: every image exactly once); a SIGHUP with a new model
 * file while a take is prepared answers every image exactly once, the old
 * model's answers before the new one's on each partition; a second member
 * joining the group while a take is prepared loses no image, and answers
 * one again only after a revocation whose commit was refused.
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
#include "image.h"
#include "kafka.h"
#include "onnx.h"
#include "stack.h"

#define TOPICS "images:2,predictions.images:2,images.dlq:1"
#define SAMPLES "models/images/samples"
#define MODEL "models/images/fundus_cnn.onnx"
#define OTHER_MODEL FIX "/cam_net.onnx" /* model_name cam-net */
#define REF "tests/fixtures/images_model_ref.json"
#define FIX "tests/fixtures/images"
#define TORCH_TOL 1e-4

struct env {
    struct test_broker broker;
    char dir[64], root[128], cam[128];
};

/* What each event's prediction must say: "ok" or the ungradable reason. */
static const char *const cases[][3] = {
    /* image id, uri (relative to the root), expected */
    {"g0", "fundus_00_g0.png", "ok"},   {"g1", "fundus_01_g1.png", "ok"},
    {"g2", "fundus_02_g2.png", "ok"},   {"g3", "fundus_03_g3.png", "ok"},
    {"g4", "fundus_04_g4.png", "ok"},   {"j0", "fundus_05_g0.jpg", "ok"},
    {"j2", "fundus_07_g2.jpg", "ok"},   {"j4", "fundus_09_g4.jpg", "ok"},
    {"tiny", "tiny.png", "too_small"},  {"corrupt", "corrupt.png", "corrupt"},
    {"trunc", "truncated.jpg", "truncated"}, {"gone", "gone.png", "missing"},
    {"gif", "not_image.gif", "unsupported_type"}, {"up", "../outside.png", "forbidden"},
    {"link", "escape.png", "forbidden"}, {"etc", "/etc/passwd", "forbidden"},
    {"ftp", "ftp://example.com/x.png", "forbidden"},
    {"http", "http://127.0.0.1:%d/x.png", "fetch_failed"}, /* allow-listed, nobody listening */
    {"meta", "http://169.254.169.254/latest/meta-data/", "forbidden"},
};
#define N_CASES (sizeof(cases) / sizeof(cases[0]))



static int setup(void **st)
{
    struct env *v = calloc(1, sizeof(*v));

    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-imgit-XXXXXX");
    if (!v || !mkdtemp(v->dir))
        return -1;
    snprintf(v->root, sizeof(v->root), "%s/root", v->dir);
    snprintf(v->cam, sizeof(v->cam), "%s/cam", v->dir);
    if (test_sh("mkdir -p %s %s && cp " SAMPLES "/*.png " SAMPLES "/*.jpg %s/ && cp " FIX
           "/tiny.png " FIX "/corrupt.png " FIX "/truncated.jpg " FIX "/not_image.gif %s/ && "
           "cp " FIX "/rgb.png %s/outside.png && ln -s ../outside.png %s/escape.png",
           v->root, v->cam, v->root, v->root, v->dir, v->root) ||
        test_broker_start(&v->broker, TOPICS))
        return -1;
    *st = v;
    return 0;
}

static int teardown(void **st)
{
    struct env *v = *st;

    test_broker_stop(&v->broker);
    if (getenv("STREAMML_KEEP_TEST_DIR"))
        fprintf(stderr, "kept %s\n", v->dir);
    else if (test_sh("rm -rf '%s'", v->dir))
        fprintf(stderr, "could not remove %s\n", v->dir);
    free(v);
    return 0;
}

static void produce_events(struct env *v)
{
    char path[200], garbage[200];
    FILE *f;

    snprintf(path, sizeof(path), "%s/events.jsonl", v->dir);
    f = fopen(path, "w");
    assert_non_null(f);
    for (size_t i = 0; i < N_CASES; i++) {
        char uri[200];
        snprintf(uri, sizeof(uri), cases[i][1], test_free_port()); /* %d: a closed port */
        fprintf(f, "{\"image_id\":\"%s\",\"patient_id\":\"p%zu\",\"uri\":\"%s\","
                "\"event_time\":%lld}\n", cases[i][0], i % 5, uri,
                1767225600000LL + (long long)i);
    }
    fclose(f);
    snprintf(garbage, sizeof(garbage), "%s/garbage.txt", v->dir);
    f = fopen(garbage, "w");
    assert_non_null(f);
    fprintf(f, "this is not avro\n");
    fclose(f);
    char *a1[] = {(char *)test_bin("streamml"), "produce", "-b", v->broker.bootstrap, "-t",
                  "images", "--schema", "image_event", "-i", path, "--log-level", "warn", NULL};
    char *a2[] = {(char *)test_bin("streamml"), "produce", "-b", v->broker.bootstrap, "-t",
                  "images", "--raw", "-i", garbage, "--log-level", "warn", NULL};
    assert_int_equal(test_run_wait(a1, NULL), 0);
    assert_int_equal(test_run_wait(a2, NULL), 0);
}

/* images.decode_thread of the next worker: with it (the default) each forward
 * pass takes the rows decoded so far, so passes per batch depend on timing;
 * the micro-batching check runs without it (one pass per batch). */
static int decode_thread = 1;

static pid_t start_worker(struct env *v, char *log, const char *model)
{
    static char root[200], cam[200], mod[200], dec[64];
    char *argv[] = {(char *)test_bin("streamml-images"), "-b", v->broker.bootstrap, "-X",
                    root, "-X", cam, "-X", mod, "-X", "images.min_side=16", "-X",
                    "images.batch=4", "-X", "images.allow_hosts=127.0.0.1", "-X",
                    "images.http_timeout_ms=2000", "-X",
                    "worker.poll_ms=20", "-X", "group.id=it-images", "-X",
                    "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500", "-X",
                    dec,  "--log-level", "info", NULL};

    snprintf(root, sizeof(root), "images.root=%s", v->root);
    snprintf(cam, sizeof(cam), "images.cam_dir=%s", v->cam);
    snprintf(mod, sizeof(mod), "images.model=%s", model);
    snprintf(dec, sizeof(dec), "images.decode_thread=%d", decode_thread);
    return test_spawn(argv, log);
}

static int64_t topic_size(struct env *v, const char *topic)
{
    return test_topic_size(v->broker.bootstrap, topic);
}

static int wait_topic(struct env *v, const char *topic, int64_t want, int timeout_ms)
{
    return test_wait_topic(v->broker.bootstrap, topic, want, timeout_ms);
}

/* torch's probabilities for a sample file, from the reference JSON. */
static json_t *ref_cases(void)
{
    json_error_t je;
    json_t *root = json_load_file(REF, 0, &je);

    if (!root)
        fail_msg("%s:%d: %s", REF, je.line, je.text);
    return root;
}

static double max_diff_to_torch(json_t *ref, const char *file, const double *p)
{
    json_t *c;
    size_t i;

    json_array_foreach(json_object_get(ref, "cases"), i, c) {
        double worst = 0;
        if (strcmp(json_string_value(json_object_get(c, "file")), file) != 0)
            continue;
        for (int k = 0; k < 5; k++)
            worst = fmax(worst, fabs(p[k] - json_number_value(
                                                json_array_get(json_object_get(c, "probabilities"),
                                                               (size_t)k))));
        return worst;
    }
    return -1;
}

/* What a graded prediction of the model in use must carry. */
struct expect {
    size_t grid_cells;  /* CAM grid */
    int torch;          /* compare with the demo model's torch references */
    int mixed;          /* some predictions referable, some not */
    const char *cam_ref; /* torch's Grad-CAM per sample file (gradcam_net_ref.json) */
};

/* What check_ok_prediction saw. */
struct seen_cams {
    int referable, other;
    double worst_cam; /* max |grid - torch's Grad-CAM| */
};

static void load_rgb(const char *path, struct img *im)
{
    struct img_loader *l = NULL;
    enum img_reason why;
    struct err e = {0};

    assert_int_equal(img_loader_open(&l, &(struct img_opts){.root = "/tmp"}, &e), ERR_OK);
    img_init(im);
    if (img_load(l, path, im, &why, &e))
        fail_msg("%s: %s", path, e.msg);
    img_loader_close(l);
}

/* A referable prediction: its grid, and its overlay PNG at the size of the
 * photograph (not the model's input) showing the photograph where the map
 * is cold; against torch's Grad-CAM when x names references. Any other: no
 * grid, no overlay. */
static void check_cam(struct env *v, json_t *pr, const char *uri, const struct expect *x,
                      struct seen_cams *s)
{
    json_t *grid = json_object_get(pr, "cam_grid"), *c;
    const char *cam = json_string_value(json_object_get(pr, "cam_path"));
    char src[300];
    struct img im, photo;
    size_t i;

    if (!json_is_true(json_object_get(pr, "referable"))) {
        s->other++;
        assert_int_equal(json_array_size(grid), 0);
        assert_string_equal(cam, "");
        return;
    }
    s->referable++;
    assert_int_equal(json_array_size(grid), x->grid_cells);
    assert_non_null(strstr(cam, v->cam));
    snprintf(src, sizeof(src), "%s/%s", v->root, uri);
    load_rgb(cam, &im);
    load_rgb(src, &photo);
    assert_int_equal(im.width, photo.width);
    assert_int_equal(im.height, photo.height);
    assert_true(im.width > 112); /* the samples are 224 px, the models' inputs 112 or 32 */
    img_free(&im);
    img_free(&photo);
    if (x->cam_ref) {
        json_error_t je;
        json_t *ref = json_load_file(x->cam_ref, 0, &je);
        int found = 0;
        assert_non_null(ref);
        json_array_foreach(json_object_get(ref, "cases"), i, c) {
            json_t *want = json_object_get(c, "cam");
            if (strcmp(json_string_value(json_object_get(c, "file")), uri) != 0)
                continue;
            found = 1;
            assert_true(json_is_true(json_object_get(c, "referable")));
            assert_int_equal(json_array_size(want), x->grid_cells);
            for (size_t k = 0; k < x->grid_cells; k++)
                s->worst_cam = fmax(s->worst_cam,
                                    fabs(json_number_value(json_array_get(grid, k)) -
                                         json_number_value(json_array_get(want, k))));
        }
        assert_true(found);
        json_decref(ref);
    }
}

static void check_ok_prediction(json_t *pr, const char *uri, json_t *ref, double *worst,
                                const struct expect *x)
{
    (void)x;
    json_t *probs = json_object_get(pr, "probabilities");
    double p[5], sum = 0, expected = 0;
    int grade = 0;

    assert_int_equal(json_array_size(probs), 5);
    for (int k = 0; k < 5; k++) {
        p[k] = json_number_value(json_array_get(probs, (size_t)k));
        sum += p[k];
        expected += k * p[k];
        grade = p[k] > p[grade] ? k : grade;
    }
    assert_float_equal(sum, 1.0, 1e-9);
    assert_int_equal(json_integer_value(json_object_get(pr, "grade")), grade);
    assert_float_equal(json_number_value(json_object_get(pr, "expected_grade")), expected, 1e-9);
    assert_int_equal(json_is_true(json_object_get(pr, "referable")),
                     p[2] + p[3] + p[4] >
                         json_number_value(json_object_get(pr, "referable_threshold")));
    if (x->torch && strstr(uri, ".png")) {
        double d = max_diff_to_torch(ref, uri, p);
        assert_true(d >= 0);
        *worst = fmax(*worst, d);
    }
}

static size_t case_index(const char *id)
{
    for (size_t i = 0; i < N_CASES; i++)
        if (strcmp(cases[i][0], id) == 0)
            return i;
    fail_msg("unexpected image id %s", id);
    return N_CASES;
}

static void check_predictions(struct env *v, const char *path, const struct expect *x)
{
    FILE *f = fopen(path, "r");
    char line[8192];
    int seen[N_CASES] = {0};
    double worst = 0;
    json_t *ref = ref_cases();
    struct seen_cams cams = {0};
    char cmd[300];

    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        json_error_t je;
        if (line[0] != '{')
            continue; /* consume's own summary line on stderr */
        json_t *pr = json_loads(line, 0, &je);
        size_t i;
        const char *status, *reason;
        assert_non_null(pr);
        i = case_index(json_string_value(json_object_get(pr, "image_id")));
        seen[i]++;
        status = json_string_value(json_object_get(pr, "status"));
        reason = json_string_value(json_object_get(pr, "reason"));
        if (strcmp(cases[i][2], "ok") == 0) {
            if (strcmp(status, "ok") != 0)
                fail_msg("%s: %s %s", cases[i][0], reason,
                         json_string_value(json_object_get(pr, "detail")));
            check_ok_prediction(pr, cases[i][1], ref, &worst, x);
            check_cam(v, pr, cases[i][1], x, &cams);
        } else {
            assert_string_equal(status, "ungradable");
            if (strcmp(reason, cases[i][2]) != 0)
                fail_msg("%s: reason %s, expected %s", cases[i][0], reason, cases[i][2]);
            assert_int_equal(json_integer_value(json_object_get(pr, "grade")), -1);
            assert_int_equal(json_array_size(json_object_get(pr, "probabilities")), 0);
            assert_string_equal(json_string_value(json_object_get(pr, "cam_path")), "");
        }
        json_decref(pr);
    }
    fclose(f);
    json_decref(ref);
    for (size_t i = 0; i < N_CASES; i++)
        if (seen[i] != 1)
            fail_msg("%s: %d predictions", cases[i][0], seen[i]);
    if (x->torch)
        printf("# worker vs torch, PNG samples: max |dp| = %.2e\n", worst);
    assert_true(worst <= TORCH_TOL);
    /* one overlay per referable prediction, none for the others */
    snprintf(cmd, sizeof(cmd), "test $(ls %s | wc -l) -eq %d", v->cam, cams.referable);
    if (test_sh("%s", cmd))
        fail_msg("%d referable predictions, the overlay directory differs", cams.referable);
    printf("# %d referable predictions with overlays, %d graded without\n", cams.referable,
           cams.other);
    if (x->mixed)
        assert_true(cams.referable > 0 && cams.other > 0);
    if (x->cam_ref) {
        printf("# worker Grad-CAM vs torch autograd: max |d| = %.2e\n", cams.worst_cam);
        assert_true(cams.worst_cam <= 1e-3);
    }
}

/* "forward passes (x images each)" from the worker's summary line. */
static double images_per_pass(const char *log)
{
    FILE *f = fopen(log, "r");
    char line[4096];
    double x = 0;

    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        const char *p = strstr(line, "forward passes (");
        if (p)
            x = strtod(p + strlen("forward passes ("), NULL);
    }
    fclose(f);
    return x;
}

/* Produces the cases, runs the worker on model until every prediction is
 * out, checks them; returns the worker's images per forward pass. */
static double run_cases(struct env *v, const char *model, const struct expect *x)
{
    char log[200], out[200];
    pid_t w;

    snprintf(log, sizeof(log), "%s/worker.log", v->dir);
    snprintf(out, sizeof(out), "%s/predictions.jsonl", v->dir);
    produce_events(v); /* all waiting before the worker starts: batches fill up */
    w = start_worker(v, log, model);
    assert_true(w > 0);
    if (wait_topic(v, "predictions.images", (int64_t)N_CASES, 60000)) {
        test_sh("tail -5 %s >&2", log);
        fail_msg("no %zu predictions within 60 s", N_CASES);
    }
    assert_int_equal(wait_topic(v, "images.dlq", 1, 10000), 0);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w, SIGTERM, 15000)), 0);
    assert_int_equal(topic_size(v, "predictions.images"), (int64_t)N_CASES);
    assert_int_equal(topic_size(v, "images.dlq"), 1);
    char *consume[] = {(char *)test_bin("streamml"), "consume", "-b", v->broker.bootstrap,
                       "-t", "predictions.images", "-f", "-e", "--log-level", "error", NULL};
    assert_int_equal(test_run_wait(consume, out), 0); /* test_bin's buffer is static: built here */
    check_predictions(v, out, x);
    return images_per_pass(log);
}

static void test_every_event_gets_one_prediction_bad_ones_ungradable(void **st)
{
    const struct expect x = {.grid_cells = 49, .torch = 1, .mixed = 1}; /* 7 x 7 */
    double per_pass;

    decode_thread = 0;
    per_pass = run_cases(*st, MODEL, &x);
    decode_thread = 1;

    printf("# micro-batching: %.2f images per forward pass (images.batch=4)\n", per_pass);
    assert_true(per_pass > 1.3); /* 1.0 without batching */
}

/* A plain export with only the logits as output: the CAM comes from the
 * intermediate value the metadata's cam_features names. */
static void test_one_output_model_gets_cams_from_a_kept_value(void **st)
{
    const struct expect x = {.grid_cells = 16, .torch = 0}; /* 4 x 4 */

    run_cases(*st, FIX "/cam_net.onnx", &x);
}

/* The seed's head (Dropout - Linear - ReLU - Dropout - Linear) after the
 * pooling, no CAM metadata: the worker reads the head from the graph and
 * draws Grad-CAM for each referable prediction, equal to torch autograd's
 * (tests/fixtures/make_gradcam_net.py; its threshold makes half of the
 * samples referable, each with grade 0 and the map of grade 4). */
static void test_seed_head_gets_gradcam_for_referable_predictions(void **st)
{
    const struct expect x = {.grid_cells = 16, .mixed = 1, .cam_ref = FIX "/gradcam_net_ref.json"};

    run_cases(*st, FIX "/gradcam_net.onnx", &x);
}

/* In process: decode, preprocess per the model's metadata, run, softmax. */
static void test_demo_model_probabilities_match_torch(void **st)
{
    json_t *ref = ref_cases(), *c;
    struct onnx_model *m = NULL;
    struct img_loader *l = NULL;
    struct img_norm n;
    struct img im;
    struct err e = {0};
    enum img_reason why;
    size_t i;
    double worst = 0;
    float *x, *scratch = NULL;

    (void)st;
    assert_int_equal(onnx_open(&m, MODEL, &e), ERR_OK);
    assert_int_equal(img_loader_open(&l, &(struct img_opts){.root = SAMPLES}, &e), ERR_OK);
    img_norm_default(&n, 224);
    assert_int_equal(img_norm_parse(&n, onnx_metadata(m, "input_size"), onnx_metadata(m, "mean"),
                                    onnx_metadata(m, "std"), &e), ERR_OK);
    x = calloc((size_t)3 * n.width * n.height, sizeof(float));
    img_init(&im);
    json_array_foreach(json_object_get(ref, "cases"), i, c) {
        struct onnx_tensor in = {ONNX_F32, 4, {1, 3, n.height, n.width}, x}, out[2];
        const float *lg;
        double top = -INFINITY, sum = 0, p[5];
        assert_int_equal(img_load(l, json_string_value(json_object_get(c, "file")), &im, &why,
                                  &e), ERR_OK);
        scratch = realloc(scratch, img_preprocess_scratch(&im, &n) * sizeof(float));
        assert_int_equal(img_preprocess(&im, &n, x, scratch, &e), ERR_OK);
        assert_int_equal(onnx_run(m, &in, 1, out, 2, &e), ERR_OK);
        lg = out[0].data;
        for (int k = 0; k < 5; k++)
            top = fmax(top, lg[k]);
        for (int k = 0; k < 5; k++)
            sum += p[k] = exp(lg[k] - top);
        for (int k = 0; k < 5; k++) {
            double want = json_number_value(
                json_array_get(json_object_get(c, "probabilities"), (size_t)k));
            worst = fmax(worst, fabs(p[k] / sum - want));
        }
    }
    printf("# streamml vs torch on %zu samples: max |dp| = %.2e\n",
           json_array_size(json_object_get(ref, "cases")), worst);
    assert_true(json_array_size(json_object_get(ref, "cases")) >= 5);
    assert_true(worst <= TORCH_TOL);
    free(x);
    free(scratch);
    img_free(&im);
    img_loader_close(l);
    onnx_close(m);
    json_decref(ref);
}

static void expect_config_error(const char *model, const char *needle)
{
    char log[] = "/tmp/streamml-imgcfg-XXXXXX", x[300], cmd[400];
    int fd = mkstemp(log), status;
    char *argv[] = {(char *)test_bin("streamml-images"), "-b", "127.0.0.1:1", "-X", x,
                    "--log-level", "error", NULL};
    pid_t pid;

    assert_true(fd >= 0);
    close(fd);
    snprintf(x, sizeof(x), "images.model=%s", model);
    pid = test_spawn(argv, log);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 2);
    snprintf(cmd, sizeof(cmd), "grep -q '%s' %s", needle, log);
    if (system(cmd) != 0)
        fail_msg("%s: the error does not mention \"%s\"", model, needle);
    unlink(log);
}

static void test_unusable_models_are_refused_at_start_naming_the_problem(void **st)
{
    (void)st;
    expect_config_error("/nonexistent/model.onnx", "/nonexistent/model.onnx");
    expect_config_error("tests/fixtures/onnx/conv_net.onnx", "logits");
    expect_config_error("tests/fixtures/onnx/unsupported_op.onnx", "unsupported_op.onnx");
}

/* N_FLOW good images (the samples in turn, ids f0..), all waiting. */
#define N_FLOW 320
static void produce_flow(struct env *v)
{
    static const char *const files[] = {"fundus_00_g0.png", "fundus_01_g1.png", "fundus_05_g0.jpg",
                                        "fundus_07_g2.jpg"};
    char path[200];
    FILE *f;

    snprintf(path, sizeof(path), "%s/flow.jsonl", v->dir);
    f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < N_FLOW; i++)
        fprintf(f,
                "{\"image_id\":\"f%d\",\"patient_id\":\"p%d\",\"uri\":\"%s\","
                "\"event_time\":%lld}\n",
                i, i % 7, files[i % 4], 1767225600000LL + i);
    fclose(f);
    char *a[] = {(char *)test_bin("streamml"), "produce", "-b", v->broker.bootstrap, "-t",
                 "images", "--schema", "image_event", "-i", path, "--log-level", "warn", NULL};
    assert_int_equal(test_run_wait(a, NULL), 0);
}

/* Lines of log containing needle (0 while it does not exist yet). */
static int log_count(const char *log, const char *needle)
{
    FILE *f = fopen(log, "r");
    char line[4096];
    int n = 0;

    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

/* What predictions.images says of image fk: how many answers, the input
 * partition and offset, the model that answered and its probabilities (the
 * last copy's). */
struct answer {
    int copies, partition, n_prob;
    int64_t offset;
    char model[64];
    double prob[8];
};

static void read_answer(const char *line, struct answer *a)
{
    json_error_t je;
    json_t *pr = json_loads(line, 0, &je);
    const char *id;
    struct answer *x;
    int k;

    assert_non_null(pr);
    id = json_string_value(json_object_get(pr, "image_id"));
    assert_true(id && id[0] == 'f');
    k = atoi(id + 1);
    assert_true(k >= 0 && k < N_FLOW);
    x = &a[k];
    x->copies++;
    x->partition = (int)json_integer_value(json_object_get(pr, "src_partition"));
    x->offset = json_integer_value(json_object_get(pr, "src_offset"));
    snprintf(x->model, sizeof(x->model), "%s",
             json_string_value(json_object_get(pr, "model_name")));
    x->n_prob = (int)json_array_size(json_object_get(pr, "probabilities"));
    for (int j = 0; j < x->n_prob && j < 8; j++)
        x->prob[j] = json_real_value(json_array_get(json_object_get(pr, "probabilities"), j));
    assert_string_equal(json_string_value(json_object_get(pr, "status")), "ok");
    json_decref(pr);
}

/* Every image's predictions in predictions.images into a[0..N_FLOW); the total. */
static int read_flow(struct env *v, struct answer *a)
{
    char out[200], line[8192];
    int total = 0;
    FILE *f;

    snprintf(out, sizeof(out), "%s/flow-predictions.jsonl", v->dir);
    char *consume[] = {(char *)test_bin("streamml"), "consume", "-b", v->broker.bootstrap,
                       "-t", "predictions.images", "-f", "-e", "--log-level", "error", NULL};
    assert_int_equal(test_run_wait(consume, out), 0);
    f = fopen(out, "r");
    assert_non_null(f);
    memset(a, 0, N_FLOW * sizeof(*a));
    while (fgets(line, sizeof(line), f))
        if (line[0] == '{') {
            read_answer(line, a);
            total++;
        }
    fclose(f);
    return total;
}

/* The flow waiting and worker A started on model; A logs to la, B will to lb. */
static pid_t start_flow(struct env *v, char *la, char *lb, const char *model)
{
    pid_t a;

    snprintf(la, 200, "%s/worker-a.log", v->dir);
    snprintf(lb, 200, "%s/worker-b.log", v->dir);
    produce_flow(v);
    a = start_worker(v, la, model);
    assert_true(a > 0);
    return a;
}

static void wait_flow(struct env *v, const char *la, const char *lb)
{
    if (wait_topic(v, "predictions.images", N_FLOW, 120000)) {
        test_sh("tail -5 %s %s >&2", la, lb);
        fail_msg("no %d predictions within 120 s", N_FLOW);
    }
}

/* SIGTERM while a take is prepared (its images decoding on the grader's
 * thread) and one is in its forward passes: both are answered, their
 * offsets committed, and a restarted worker answers the rest: every image
 * exactly once. */
static void test_sigterm_drains_the_prepared_take_exactly_once(void **st)
{
    struct env *v = *st;
    char la[200], lb[200];
    struct answer ans[N_FLOW];
    int total;
    pid_t a, b;

    a = start_flow(v, la, lb, MODEL);
    assert_int_equal(wait_topic(v, "predictions.images", 60, 60000), 0);
    assert_int_equal(WEXITSTATUS(test_stop_pid(a, SIGTERM, 15000)), 0);
    assert_true(topic_size(v, "predictions.images") < N_FLOW); /* stopped mid-flow */
    b = start_worker(v, lb, MODEL);
    assert_true(b > 0);
    wait_flow(v, la, lb);
    usleep(1500 * 1000); /* a duplicate would come now */
    assert_int_equal(WEXITSTATUS(test_stop_pid(b, SIGTERM, 15000)), 0);
    total = read_flow(v, ans);
    printf("# SIGTERM mid-flow, then a restart: %d predictions for %d images\n", total, N_FLOW);
    for (int k = 0; k < N_FLOW; k++)
        if (ans[k].copies != 1)
            fail_msg("image f%d answered %d times", k, ans[k].copies);
}

/* Image fk (file k % 4) was run through its model: the same probabilities
 * as every other image of that file answered by that model (an answer the
 * forward pass never reached has none, or another image's). */
static void check_same_grades(const struct answer *a)
{
    for (int k = 0; k < N_FLOW; k++) {
        if (a[k].n_prob < 2 || a[k].n_prob > 8)
            fail_msg("image f%d: %d probabilities from %s", k, a[k].n_prob, a[k].model);
        for (int i = k % 4; i < k; i += 4) {
            if (strcmp(a[i].model, a[k].model))
                continue;
            assert_int_equal(a[i].n_prob, a[k].n_prob);
            for (int j = 0; j < a[k].n_prob; j++)
                if (fabs(a[i].prob[j] - a[k].prob[j]) > 1e-6)
                    fail_msg("images f%d and f%d (one file, model %s): p[%d] %g != %g", i, k,
                             a[k].model, j, a[i].prob[j], a[k].prob[j]);
        }
    }
}

/* Per input partition, the answers of `from` all precede (by offset) those
 * of `to`, and each model answered at least one image. */
static void check_one_switch(const struct answer *a, const char *from, const char *to)
{
    int64_t last_from[2] = {-1, -1}, first_to[2] = {INT64_MAX, INT64_MAX};
    int n_from = 0, n_to = 0;

    for (int k = 0; k < N_FLOW; k++) {
        int p = a[k].partition;
        assert_true(p == 0 || p == 1);
        if (strcmp(a[k].model, from) == 0) {
            n_from++;
            last_from[p] = a[k].offset > last_from[p] ? a[k].offset : last_from[p];
        } else if (strcmp(a[k].model, to) == 0) {
            n_to++;
            first_to[p] = a[k].offset < first_to[p] ? a[k].offset : first_to[p];
        } else
            fail_msg("image f%d answered by \"%s\"", k, a[k].model);
    }
    printf("# reload mid-flow: %d images answered by %s, then %d by %s\n", n_from, from, n_to,
           to);
    assert_true(n_from > 0 && n_to > 0);
    for (int p = 0; p < 2; p++)
        if (last_from[p] > first_to[p])
            fail_msg("partition %d: %s answered offset %lld after %s answered %lld", p, from,
                     (long long)last_from[p], to, (long long)first_to[p]);
}

/* SIGHUP with a new model file while the flow runs: a take is prepared
 * (its rows added to the old model's grader, decoding on its thread) at
 * every turn's end, where the reload is served. The rule (worker.c,
 * reload): the prepared take is finished first, by the model that
 * prepared it, then the new model serves from the next take on. So every
 * image is answered exactly once, by the model in force when it was both
 * prepared and finished (its forward pass run: the probabilities of its
 * file under that model), and per input partition the old model's answers
 * all precede the new one's. */
static void test_reload_under_a_prepared_take_answers_each_image_once(void **st)
{
    struct env *v = *st;
    char la[200], lb[200], model[200];
    struct answer ans[N_FLOW];
    pid_t a;

    snprintf(model, sizeof(model), "%s/model.onnx", v->dir);
    assert_int_equal(test_sh("cp " MODEL " %s", model), 0);
    a = start_flow(v, la, lb, model);
    assert_int_equal(wait_topic(v, "predictions.images", 24, 60000), 0);
    assert_int_equal(test_sh("cp " OTHER_MODEL " %s.tmp && mv %s.tmp %s", model, model, model), 0);
    assert_int_equal(kill(a, SIGHUP), 0);
    assert_true(topic_size(v, "predictions.images") < N_FLOW); /* reloaded mid-flow */
    wait_flow(v, la, lb);
    usleep(1500 * 1000); /* a duplicate would come now */
    assert_int_equal(WEXITSTATUS(test_stop_pid(a, SIGTERM, 15000)), 0);
    assert_int_equal(log_count(la, "model reloaded (SIGHUP)"), 1);
    assert_int_equal(read_flow(v, ans), N_FLOW);
    for (int k = 0; k < N_FLOW; k++)
        if (ans[k].copies != 1)
            fail_msg("image f%d answered %d times", k, ans[k].copies);
    check_one_switch(ans, "fundus-cnn", "cam-net");
    check_same_grades(ans);
}

/* Revocations in a worker's log whose offsets were not committed: the
 * commit made on revoke (after a flush, so it covers every answer
 * acknowledged) was refused, or the assignment was lost (nothing
 * committed). Only these send answered input back to its new owner. */
static int uncommitted_revocations(const char *log)
{
    return log_count(log, "\"msg\":\"commit: ") + log_count(log, "assignment lost");
}

/* A second member joins while A holds a prepared take: A's partitions are
 * revoked under it, and what A took before the revocation is dropped (its
 * new owner answers it), never lost. Predictions are at least once across a
 * rebalance, and exactly once when the revoking member's commit is taken:
 * an image is answered again only after a revocation whose commit was
 * refused (the mock broker refuses every commit while the group rebalances,
 * a real broker takes the current generation's), at most once more per
 * such revocation. The images stream keeps no state, so nothing makes a
 * repeated answer idempotent: consumers de-duplicate on the input's
 * topic/partition/offset that every prediction carries (docs/delivery.md,
 * docs/reliability.md). */
static void test_rebalance_under_a_prepared_take_loses_nothing(void **st)
{
    struct env *v = *st;
    char la[200], lb[200];
    struct answer ans[N_FLOW];
    int total, twice = 0, refused;
    pid_t a, b;

    a = start_flow(v, la, lb, MODEL);
    assert_int_equal(wait_topic(v, "predictions.images", 24, 60000), 0);
    b = start_worker(v, lb, MODEL); /* the group rebalances under A's pipeline */
    assert_true(b > 0);
    wait_flow(v, la, lb);
    usleep(1500 * 1000);
    assert_int_equal(WEXITSTATUS(test_stop_pid(a, SIGTERM, 15000)), 0);
    assert_int_equal(WEXITSTATUS(test_stop_pid(b, SIGTERM, 15000)), 0);
    total = read_flow(v, ans);
    refused = uncommitted_revocations(la) + uncommitted_revocations(lb);
    printf("# rebalance: %d predictions for %d images, %d revocation(s) not committed; "
           "messages taken before a revocation dropped: %d time(s) in A, %d in B\n",
           total, N_FLOW, refused, log_count(la, "taken before its revocation dropped"),
           log_count(lb, "taken before its revocation dropped"));
    for (int k = 0; k < N_FLOW; k++) {
        if (!ans[k].copies)
            fail_msg("image f%d never answered", k);
        if (ans[k].copies > 1 + refused)
            fail_msg("image f%d answered %d times after %d revocation(s) not committed", k,
                     ans[k].copies, refused);
        twice += ans[k].copies > 1;
    }
    printf("# %d image(s) answered more than once\n", twice);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_demo_model_probabilities_match_torch),
        cmocka_unit_test(test_unusable_models_are_refused_at_start_naming_the_problem),
        cmocka_unit_test_setup_teardown(test_every_event_gets_one_prediction_bad_ones_ungradable,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_output_model_gets_cams_from_a_kept_value, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_seed_head_gets_gradcam_for_referable_predictions,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_drains_the_prepared_take_exactly_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reload_under_a_prepared_take_answers_each_image_once,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_rebalance_under_a_prepared_take_loses_nothing, setup,
                                        teardown),
    };
    if (getenv("TEST_FILTER")) /* e.g. "*reload*" */
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
