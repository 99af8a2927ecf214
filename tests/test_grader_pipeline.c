/* The images step's decode thread (images.decode_thread, grader.h): with it,
 * images are loaded, checked and preprocessed on the grader's thread while
 * forward passes run over the rows ready so far. Its predictions equal, field
 * for field, those of the same batches decoded inline: good PNG/JPEG
 * samples, a missing file, a blurred photograph (low_quality), slots left
 * out of the batch (dead letters in the worker) untouched, the event's
 * buffer reused between grader_add calls (the job keeps a copy), several
 * batches in a row; and a model set with a CAM member (plain CAM, and a
 * Grad-CAM member of the seed's head). Overlays are written in both modes:
 * one per referable prediction, none for the others, each at the decoded
 * photograph's size (the decode thread keeps the batch's photographs until
 * the pass that draws them). With more slots than rows per pass (the
 * worker's images.take over images.batch) no pass exceeds its rows and the
 * predictions are still the same.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "grader.h"
#include "image.h"

#define CAP 8
#define ROUNDS 3

static const char *const uris[] = {
    "fundus_00_g0.png", "fundus_05_g0.jpg", "gone.png",         "fundus_02_g2.png",
    "lowq/blurred.png", "fundus_07_g2.jpg", "fundus_03_g3.png", "fundus_09_g4.jpg",
    "fundus_04_g4.png", "fundus_06_g1.jpg", "lowq/dark.png",    "fundus_01_g1.png",
};
#define NURIS (sizeof(uris) / sizeof(uris[0]))

/* ROUNDS batches of CAP slots; slot 5 of each batch is never added. */
static void grade_all(const char *models, const char *cam_model, double threshold,
                      const char *cam_dir, int decode_thread, size_t pass,
                      struct image_prediction *out, struct grader_counts *counts)
{
    struct cfg *cf = cfg_new();
    struct grader_opts o;
    struct grader *g;
    struct err e = {0};
    size_t k = 0;

    assert_non_null(cf);
    grader_opts_from_cfg(cf, &o);
    o.models = models;
    o.cam_model = cam_model;
    o.threshold = threshold;
    o.cam_dir = cam_dir;
    o.batch = CAP;
    o.pass = pass;
    o.decode_thread = decode_thread;
    o.load.root = "models/images/samples";
    if (!(g = grader_open(&o, &e)))
        fail_msg("%s", e.msg);
    for (int r = 0; r < ROUNDS; r++) {
        struct image_prediction *p = out + (size_t)r * CAP;
        struct image_event ev;
        grader_begin(g);
        for (size_t i = 0; i < CAP; i++) {
            if (i == 5) {
                memset(&p[i], 0x5a, sizeof(p[i])); /* must stay as it is */
                continue;
            }
            memset(&ev, 0, sizeof(ev));
            snprintf(ev.image_id, sizeof(ev.image_id), "img%zu", k);
            snprintf(ev.uri, sizeof(ev.uri), "%s", uris[k++ % NURIS]);
            grader_add(g, i, &ev, "images", 0, (int64_t)k, &p[i]);
            memset(&ev, 0xee, sizeof(ev)); /* the caller's buffer is reused at once */
        }
        grader_run(g, p, CAP);
    }
    if (counts)
        *counts = *grader_counts(g);
    grader_close(g);
    cfg_free(cf);
}

static void load_rgb(const char *root, const char *path, struct img *im)
{
    struct img_loader *l = NULL;
    enum img_reason why;
    struct err e = {0};

    assert_int_equal(img_loader_open(&l, &(struct img_opts){.root = root}, &e), ERR_OK);
    img_init(im);
    if (img_load(l, path, im, &why, &e))
        fail_msg("%s: %s", path, e.msg);
    img_loader_close(l);
}

/* The overlay of a referable prediction: the photograph's size. */
static void check_overlay(const struct image_prediction *p, const char *dir, size_t k)
{
    struct img ov, photo;

    assert_true(strncmp(p->cam_path, dir, strlen(dir)) == 0);
    load_rgb(dir, p->cam_path + strlen(dir) + 1, &ov);
    load_rgb("models/images/samples", uris[k % NURIS], &photo);
    assert_int_equal(ov.width, photo.width);
    assert_int_equal(ov.height, photo.height);
    img_free(&ov);
    img_free(&photo);
}

/* a and b byte for byte, except that the probabilities (and what follows
 * from them) may differ by tol and the map by 100 tol: a forward pass over
 * one row and one over several may sum in another order in BLAS. */
static int same(const struct image_prediction *a, const struct image_prediction *b, double tol)
{
    struct image_prediction t = *a;

    for (int k = 0; k < IMGEV_GRADES; k++)
        if (fabs(t.probabilities[k] - b->probabilities[k]) <= tol)
            t.probabilities[k] = b->probabilities[k];
    if (fabs(t.expected_grade - b->expected_grade) <= 4 * tol)
        t.expected_grade = b->expected_grade;
    if (fabs(t.referable_probability - b->referable_probability) <= 3 * tol)
        t.referable_probability = b->referable_probability;
    for (size_t k = 0; k < IMGEV_CAM_MAX; k++)
        if (fabs((double)t.cam_grid[k] - b->cam_grid[k]) <= 100 * tol)
            t.cam_grid[k] = b->cam_grid[k];
    return memcmp(&t, b, sizeof(t)) == 0;
}

static void check_same(const char *models, const char *cam_model, double threshold,
                       double tol)
{
    static struct image_prediction a[ROUNDS * CAP], b[ROUNDS * CAP];
    int graded = 0, refused = 0, referable = 0;
    char dir[] = "/tmp/grader_pipeline_XXXXXX";

    assert_non_null(mkdtemp(dir));
    grade_all(models, cam_model, threshold, dir, 0, CAP, a, NULL);
    grade_all(models, cam_model, threshold, dir, 1, CAP, b, NULL); /* same files, same names */
    for (size_t i = 0; i < ROUNDS * CAP; i++) {
        if (!same(&a[i], &b[i], tol))
            fail_msg("slot %zu (%s): the decode thread's prediction differs (%s/%s, P(>=2) "
                     "%.17g/%.17g)",
                     i, a[i].image_id, a[i].reason, b[i].reason, a[i].referable_probability,
                     b[i].referable_probability);
        if (i % CAP == 5)
            continue;
        graded += a[i].ok;
        refused += !a[i].ok;
        if (a[i].ok)
            assert_true(a[i].agreement > 0);
        if (a[i].ok && a[i].referable) { /* the slot's image: the k-th added */
            referable++;
            assert_true(a[i].cam_height > 0 && a[i].cam_path[0]);
            check_overlay(&b[i], dir, i - i / CAP - (i % CAP > 5));
            unlink(a[i].cam_path);
        } else {
            assert_true(a[i].cam_height == 0 && !a[i].cam_path[0]);
        }
    }
    printf("  %s (CAM: %s): %d graded (%d referable, overlays at the photograph's size), %d "
           "ungradable, identical with and without the decode thread\n",
           models, cam_model, graded, referable, refused);
    assert_true(graded >= 12 && refused >= 4 && referable >= 2);
    assert_int_equal(rmdir(dir), 0); /* every overlay was a referable prediction's */
}

static void test_decode_thread_same_predictions(void **st)
{
    (void)st;
    check_same("models/images/fundus_cnn.onnx", "fundus_cnn.onnx", -1, 0);
    check_same("models/images/fundus_cnn.onnx:2,models/images/fundus_cnn_b.onnx",
               "fundus_cnn.onnx", -1, 0);
    /* gradcam_net's Linear head runs as a matrix-vector product on one row:
     * its last bits differ from a pass over several */
    check_same("models/images/fundus_cnn.onnx,tests/fixtures/images/gradcam_net.onnx",
               "gradcam_net.onnx", 0.5, 1e-6);
}

/* Passes of at most 3 rows over batches of CAP slots (the worker's
 * images.take over images.batch): inline, each batch's rows in passes of 3,
 * 3, rest; with the thread, no pass above 3; the predictions equal those of
 * one pass per batch. */
static void test_passes_within_batch(void **st)
{
    static struct image_prediction a[ROUNDS * CAP], b[ROUNDS * CAP], c[ROUNDS * CAP];
    struct grader_counts nb, nc;
    uint64_t want = 0;
    const char *m = "models/images/fundus_cnn.onnx";

    (void)st;
    grade_all(m, "", -1, "", 0, CAP, a, NULL);
    grade_all(m, "", -1, "", 0, 3, b, &nb);
    grade_all(m, "", -1, "", 1, 3, c, &nc);
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t rows = 0;
        for (size_t i = 0; i < CAP; i++)
            rows += i != 5 && a[r * CAP + i].ok;
        want += (rows + 2) / 3;
    }
    for (size_t i = 0; i < ROUNDS * CAP; i++)
        if (!same(&a[i], &b[i], 0) || !same(&a[i], &c[i], 0))
            fail_msg("slot %zu (%s): passes of 3 grade differently", i, a[i].image_id);
    printf("  passes of 3: inline %llu passes (largest %llu), thread %llu passes (largest "
           "%llu) for %llu rows\n",
           (unsigned long long)nb.batches, (unsigned long long)nb.largest,
           (unsigned long long)nc.batches, (unsigned long long)nc.largest,
           (unsigned long long)nb.rows);
    assert_int_equal(nb.batches, want);
    assert_int_equal(nb.largest, 3);
    assert_true(nc.largest <= 3 && nc.rows == nb.rows && nc.batches >= want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_thread_same_predictions),
        cmocka_unit_test(test_passes_within_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
