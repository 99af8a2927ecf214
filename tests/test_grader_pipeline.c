/* The images step's decode thread (images.decode_thread, grader.h): with it,
 * images are loaded, checked and preprocessed on the grader's thread while
 * forward passes run over the rows ready so far. Its predictions equal, field
 * for field, those of the same batches decoded inline: good PNG/JPEG
 * samples, a missing file, a blurred photograph (low_quality), slots left
 * out of the batch (dead letters in the worker) untouched, the event's
 * buffer reused between grader_add calls (the job keeps a copy), several
 * batches in a row; and a model set with a CAM member.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "cfg.h"
#include "grader.h"

#define CAP 8
#define ROUNDS 3

static const char *const uris[] = {
    "fundus_00_g0.png", "fundus_05_g0.jpg", "gone.png",         "fundus_02_g2.png",
    "lowq/blurred.png", "fundus_07_g2.jpg", "fundus_03_g3.png", "fundus_09_g4.jpg",
    "fundus_04_g4.png", "fundus_06_g1.jpg", "lowq/dark.png",    "fundus_01_g1.png",
};
#define NURIS (sizeof(uris) / sizeof(uris[0]))

/* ROUNDS batches of CAP slots; slot 5 of each batch is never added. */
static void grade_all(const char *models, int decode_thread, struct image_prediction *out)
{
    struct cfg *cf = cfg_new();
    struct grader_opts o;
    struct grader *g;
    struct err e = {0};
    size_t k = 0;

    assert_non_null(cf);
    grader_opts_from_cfg(cf, &o);
    o.models = models;
    o.cam_model = "fundus_cnn.onnx";
    o.batch = CAP;
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
    grader_close(g);
    cfg_free(cf);
}

static void check_same(const char *models)
{
    static struct image_prediction a[ROUNDS * CAP], b[ROUNDS * CAP];
    int graded = 0, refused = 0;

    grade_all(models, 0, a);
    grade_all(models, 1, b);
    for (size_t i = 0; i < ROUNDS * CAP; i++) {
        if (memcmp(&a[i], &b[i], sizeof(a[i])) != 0)
            fail_msg("slot %zu (%s): the decode thread's prediction differs (%s/%s)", i,
                     a[i].image_id, a[i].reason, b[i].reason);
        if (i % CAP == 5)
            continue;
        graded += a[i].ok;
        refused += !a[i].ok;
        if (a[i].ok)
            assert_true(a[i].cam_height > 0 && a[i].agreement > 0);
    }
    printf("  %s: %d graded, %d ungradable, identical with and without the decode thread\n", models,
           graded, refused);
    assert_true(graded >= 12 && refused >= 4);
}

static void test_decode_thread_same_predictions(void **st)
{
    (void)st;
    check_same("models/images/fundus_cnn.onnx");
    check_same("models/images/fundus_cnn.onnx:2,models/images/fundus_cnn_b.onnx");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_thread_same_predictions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
