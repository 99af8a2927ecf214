/* Model sets (common/models/ensemble.c): the ensemble's probabilities equal the
 * weighted average of its members run alone (each opened with onnx_open,
 * preprocessed with its own geometry and normalisation, softmax here), on
 * the demo samples; the agreement is the weight of the members that pick
 * the ensemble's grade; the CAM member is the one named; a bad entry, a
 * missing or unfit member or an unknown CAM member refuses the whole set
 * with the culprit named. Members: the demo CNN (112 px, two outputs) and
 * the CAM test net (32 px, one output, ImageNet normalisation). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ensemble.h"
#include "image.h"
#include "onnx.h"

#define A "models/images/fundus_cnn.onnx"
#define B "tests/fixtures/images/cam_net.onnx"
#define SAMPLES "models/images/samples"
#define NIMG 4

static const char *const FILES[NIMG] = {"fundus_00_g0.png", "fundus_02_g2.png",
                                        "fundus_04_g4.png", "fundus_07_g2.jpg"};

static void load_samples(struct img im[NIMG])
{
    struct img_opts o = {.root = SAMPLES};
    struct img_loader *l;
    struct err e = {0};
    enum img_reason why;

    assert_int_equal(img_loader_open(&l, &o, &e), ERR_OK);
    for (int i = 0; i < NIMG; i++) {
        img_init(&im[i]);
        if (img_load(l, FILES[i], &im[i], &why, &e))
            fail_msg("%s", e.msg);
    }
    img_loader_close(l);
}

/* A member run alone: its own geometry and normalisation, one image per
 * run, softmax in double. */
static void alone(const char *path, const struct img *im, double p[ENS_GRADES])
{
    struct onnx_model *m;
    struct img_norm n;
    struct err e = {0};
    int ndim;
    int64_t d[8];
    float *x, *scratch;
    struct onnx_tensor out[1];
    double top = -INFINITY, sum = 0;

    if (onnx_open(&m, path, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(onnx_input_shape(m, 0, &ndim, d), ERR_OK);
    img_norm_default(&n, (int)d[2]);
    assert_int_equal(img_norm_parse(&n, onnx_metadata(m, "input_size"), onnx_metadata(m, "mean"),
                                    onnx_metadata(m, "std"), &e),
                     ERR_OK);
    x = malloc(3 * sizeof(float) * n.width * n.height);
    scratch = malloc(sizeof(float) * img_preprocess_scratch(im, &n));
    assert_int_equal(img_preprocess(im, &n, x, scratch, &e), ERR_OK);
    {
        struct onnx_tensor in = {ONNX_F32, 4, {1, 3, n.height, n.width}, x};
        if (onnx_run(m, &in, 1, out, 1, &e))
            fail_msg("%s", e.msg);
    }
    assert_int_equal(out[0].dims[1], ENS_GRADES);
    for (int k = 0; k < ENS_GRADES; k++)
        top = fmax(top, ((const float *)out[0].data)[k]);
    for (int k = 0; k < ENS_GRADES; k++)
        sum += p[k] = exp(((const float *)out[0].data)[k] - top);
    for (int k = 0; k < ENS_GRADES; k++)
        p[k] /= sum;
    free(x);
    free(scratch);
    onnx_close(m);
}

static int argmax(const double *p)
{
    int g = 0;
    for (int k = 1; k < ENS_GRADES; k++)
        g = p[k] > p[g] ? k : g;
    return g;
}

static void test_probabilities_are_the_weighted_average_of_members_alone(void **st)
{
    struct img im[NIMG];
    const struct img *ims[NIMG];
    struct ens_opts o = {.models = A ":2, " B, .cam_member = "cam_net.onnx", .batch = NIMG};
    struct ens *s;
    struct ens_result r[NIMG];
    double mp[NIMG * 2 * ENS_GRADES], pa[ENS_GRADES], pb[ENS_GRADES], maxdiff = 0;
    struct err e = {0};

    (void)st;
    load_samples(im);
    for (int i = 0; i < NIMG; i++)
        ims[i] = &im[i];
    if (ens_open(&s, &o, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(ens_size(s), 2);
    assert_string_equal(ens_member_path(s, 0), A);
    assert_string_equal(ens_member_path(s, 1), B);
    assert_float_equal(ens_member_weight(s, 0), 2.0 / 3.0, 1e-15);
    assert_int_equal(ens_member_norm(s, 1)->width, 32);
    assert_int_equal(ens_cam_member(s), 1);
    /* the smoke run's outputs: a batch of one, the CAM member's feature map kept */
    assert_int_equal(ens_member_output(s, 1, 0)->dims[0], 1);
    assert_null(ens_member_output(s, 1, 1)); /* cam_net has one output */
    assert_non_null(ens_member_features(s, 1));
    if (ens_run(s, ims, NIMG, r, mp, &e))
        fail_msg("%s", e.msg);
    for (int i = 0; i < NIMG; i++) {
        double agree = 0;

        alone(A, &im[i], pa);
        alone(B, &im[i], pb);
        for (int k = 0; k < ENS_GRADES; k++) {
            double want = (2.0 * pa[k] + pb[k]) / 3.0;
            maxdiff = fmax(maxdiff, fabs(r[i].probs[k] - want));
            assert_float_equal(mp[(i * 2 + 0) * ENS_GRADES + k], pa[k], 1e-6);
            assert_float_equal(mp[(i * 2 + 1) * ENS_GRADES + k], pb[k], 1e-6);
        }
        assert_int_equal(r[i].grade, argmax(r[i].probs));
        agree += argmax(pa) == r[i].grade ? 2.0 / 3.0 : 0;
        agree += argmax(pb) == r[i].grade ? 1.0 / 3.0 : 0;
        assert_float_equal(r[i].agreement, agree, 1e-12);
        printf("  %s: ensemble grade %d (agreement %.3f), alone %d and %d\n", FILES[i],
               r[i].grade, r[i].agreement, argmax(pa), argmax(pb));
    }
    printf("  max |ensemble - weighted mean of members alone| = %.3g\n", maxdiff);
    /* batched vs one at a time: the runtime's float rounding only */
    assert_true(maxdiff < 1e-6);
    assert_non_null(ens_member_output(s, 1, 0));
    assert_null(ens_member_output(s, 1, 1)); /* cam_net has one output */
    assert_non_null(ens_member_output(s, 0, 1));
    ens_close(s);
    for (int i = 0; i < NIMG; i++)
        img_free(&im[i]);
}

static void test_one_member_is_the_plain_model(void **st)
{
    struct img im[NIMG];
    const struct img *ims[1];
    struct ens_opts o = {.models = A, .batch = 1};
    struct ens *s;
    struct ens_result r;
    double pa[ENS_GRADES];
    struct err e = {0};

    (void)st;
    load_samples(im);
    assert_int_equal(ens_open(&s, &o, &e), ERR_OK);
    ims[0] = &im[2];
    assert_int_equal(ens_run(s, ims, 1, &r, NULL, &e), ERR_OK);
    alone(A, &im[2], pa);
    for (int k = 0; k < ENS_GRADES; k++)
        assert_float_equal(r.probs[k], pa[k], 1e-6);
    assert_float_equal(r.agreement, 1.0, 0);
    assert_int_equal(ens_run(s, ims, 2, &r, NULL, &e), ERR_INVALID); /* over the batch */
    ens_close(s);
    for (int i = 0; i < NIMG; i++)
        img_free(&im[i]);
}

static void test_bad_sets_are_refused_naming_the_culprit(void **st)
{
    static const struct {
        const char *models, *cam, *culprit;
    } bad[] = {
        {"", NULL, "no model"},
        {A ",", NULL, "empty member"},
        {A ":0", NULL, "weight '0'"},
        {A ":-1", NULL, "weight '-1'"},
        {A ":x", NULL, "weight 'x'"},
        {A ":nan", NULL, "weight 'nan'"},
        {A "," B ",tests/fixtures/images/no_such.onnx", NULL, "no_such.onnx"},
        {A ",tests/fixtures/images/corrupt.png", NULL, "corrupt.png"},
        {A "," A "," A "," A "," A "," A "," A "," A "," A, NULL, "more than 8"},
        {A "," B, "other.onnx", "other.onnx"},
    };
    struct ens *s = (struct ens *)&s;
    struct err e;

    (void)st;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ens_opts o = {.models = bad[i].models, .cam_member = bad[i].cam, .batch = 2};

        memset(&e, 0, sizeof(e));
        assert_int_not_equal(ens_open(&s, &o, &e), ERR_OK);
        assert_null(s); /* nothing half-opened */
        if (!strstr(e.msg, bad[i].culprit))
            fail_msg("'%s': message '%s' does not name '%s'", bad[i].models, e.msg,
                     bad[i].culprit);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_probabilities_are_the_weighted_average_of_members_alone),
        cmocka_unit_test(test_one_member_is_the_plain_model),
        cmocka_unit_test(test_bad_sets_are_refused_naming_the_culprit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
