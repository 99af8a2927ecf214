/* Class-activation maps (common/cam.c): the weighted sum of the feature
 * map, ReLU, normalisation, refusal of bad input, and the overlay. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cam.h"

/* 2 classes x 3 channels; features 3 x (2 x 2). */
static const float W[6] = {1.0f, -1.0f, 0.5f, /* class 0 */
                           -2.0f, 0.0f, 1.0f /* class 1 */};
static const float F[12] = {1, 2, 3, 4, /* channel 0 */
                            4, 1, 0, 0, /* channel 1 */
                            2, 2, 2, 2 /* channel 2 */};

static void test_grid_is_relu_of_weighted_sum_scaled_by_its_max(void **st)
{
    float g[4];
    struct err e = {0};

    (void)st;
    /* class 0: 1 - 4 + 1 = -2, 2 - 1 + 1 = 2, 3 + 1 = 4, 4 + 1 = 5 */
    assert_int_equal(cam_grid(W, 2, 3, F, 2, 2, 0, g, &e), ERR_OK);
    assert_float_equal(g[0], 0.0f, 1e-7);
    assert_float_equal(g[1], 2.0f / 5.0f, 1e-7);
    assert_float_equal(g[2], 4.0f / 5.0f, 1e-7);
    assert_float_equal(g[3], 1.0f, 1e-7);
    /* class 1: -2 + 2 = 0, -4 + 2 = -2, -6 + 2 = -4, -8 + 2 = -6: no evidence */
    assert_int_equal(cam_grid(W, 2, 3, F, 2, 2, 1, g, &e), ERR_OK);
    for (int i = 0; i < 4; i++)
        assert_float_equal(g[i], 0.0f, 0.0);
}

static void test_bad_class_or_non_finite_features_are_refused(void **st)
{
    float g[4], bad[12];
    struct err e = {0};

    (void)st;
    assert_int_equal(cam_grid(W, 2, 3, F, 2, 2, 2, g, &e), ERR_INVALID);
    assert_int_equal(cam_grid(W, 2, 3, F, 2, 2, -1, g, &e), ERR_INVALID);
    memcpy(bad, F, sizeof(bad));
    bad[5] = NAN;
    assert_int_equal(cam_grid(W, 2, 3, bad, 2, 2, 0, g, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "cell 1"));
}

static void test_overlay_colours_hot_cells_and_keeps_cold_ones(void **st)
{
    struct img_norm n;
    float grid[4] = {1.0f, 0.0f, 0.0f, 0.0f}, *input, *scratch;
    uint8_t *out;
    size_t plane;

    (void)st;
    img_norm_default(&n, 16);
    plane = (size_t)n.width * n.height;
    input = malloc(3 * plane * sizeof(float));
    out = malloc(3 * plane);
    scratch = malloc(cam_overlay_scratch(&n, 2, 2) * sizeof(float));
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < plane; i++)
            input[c * plane + i] = (0.5f - n.mean[c]) / n.std[c]; /* mid grey */
    cam_overlay(input, &n, grid, 2, 2, 0.6f, out, scratch);
    /* top-left: the hottest cell (m = 1 after edge-clamped upsampling):
     * 0.4 x grey 0.5 + 0.6 x jet(1) = (0.5, 0, 0) -> (128, 51, 51) */
    assert_int_equal(out[0], 128);
    assert_int_equal(out[1], 51);
    assert_int_equal(out[2], 51);
    /* bottom-right: no evidence, the input itself (0.5 -> 128) */
    for (int c = 0; c < 3; c++)
        assert_int_equal(out[(plane - 1) * 3 + c], 128);
    free(input);
    free(out);
    free(scratch);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grid_is_relu_of_weighted_sum_scaled_by_its_max),
        cmocka_unit_test(test_bad_class_or_non_finite_features_are_refused),
        cmocka_unit_test(test_overlay_colours_hot_cells_and_keeps_cold_ones),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
