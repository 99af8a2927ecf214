/* Class-activation maps (common/models/cam.c): the weighted sum of the feature
 * map, ReLU, normalisation, refusal of bad input, the overlay; and against
 * torch on tests/fixtures/images/cam_net.onnx (a one-output export whose
 * feature map is kept by the ONNX runtime): every class's grid and its
 * bilinear upsampling equal torch's (einsum + relu, F.interpolate). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cam.h"
#include "npy.h"
#include "onnx.h"
#include "stack.h"

#define FIX "tests/fixtures/images"
#define TORCH_TOL 1e-5

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

static double max_diff(const float *got, json_t *want, size_t n)
{
    double worst = 0;

    assert_int_equal(json_array_size(want), n);
    for (size_t i = 0; i < n; i++)
        worst = fmax(worst, fabs((double)got[i] - json_number_value(json_array_get(want, i))));
    return worst;
}

/* Runs cam_net on rgb.png as the worker would; features via onnx_value. */
static const struct onnx_tensor *run_cam_net(struct onnx_model *m, json_t *ref, float *x,
                                             const float **logits)
{
    struct img_loader *l = NULL;
    struct img im;
    struct img_norm n;
    struct err e = {0};
    enum img_reason why;
    struct onnx_tensor in = {ONNX_F32, 4, {1, 3, 32, 32}, x}, out[1];
    float *scratch;

    assert_int_equal(img_loader_open(&l, &(struct img_opts){.root = FIX}, &e), ERR_OK);
    img_init(&im);
    assert_int_equal(img_load(l, json_string_value(json_object_get(ref, "image")), &im, &why,
                              &e), ERR_OK);
    img_norm_default(&n, 32);
    scratch = malloc(img_preprocess_scratch(&im, &n) * sizeof(float));
    assert_int_equal(img_preprocess(&im, &n, x, scratch, &e), ERR_OK);
    assert_int_equal(onnx_run(m, &in, 1, out, 1, &e), ERR_OK);
    *logits = out[0].data;
    free(scratch);
    img_free(&im);
    img_loader_close(l);
    return onnx_value(m, json_string_value(json_object_get(json_object_get(ref, "meta"),
                                                           "cam_features")));
}

static void test_grids_and_upsampling_match_torch(void **st)
{
    json_error_t je;
    json_t *ref = json_load_file(FIX "/cam_net_ref.json", 0, &je), *meta;
    struct onnx_model *m = NULL;
    struct err e = {0};
    const char *keep[1];
    const struct onnx_tensor *f, *wt;
    const float *logits;
    float x[3 * 32 * 32], grid[64], up[32 * 32], *scratch;
    double worst_grid = 0, worst_up = 0, worst_logit;
    int gh, gw;

    (void)st;
    assert_non_null(ref);
    meta = json_object_get(ref, "meta");
    keep[0] = json_string_value(json_object_get(meta, "cam_features"));
    assert_int_equal(onnx_open_keep(&m, FIX "/cam_net.onnx", keep, 1, &e), ERR_OK);
    f = run_cam_net(m, ref, x, &logits);
    assert_non_null(f);
    wt = onnx_initializer(m, json_string_value(json_object_get(meta, "cam_weight")));
    assert_non_null(wt);
    gh = (int)json_integer_value(json_object_get(ref, "grid_h"));
    gw = (int)json_integer_value(json_object_get(ref, "grid_w"));
    assert_int_equal(f->dims[2], gh);
    assert_int_equal(f->dims[3], gw);
    worst_logit = max_diff(logits, json_object_get(ref, "logits"), 5);
    scratch = malloc(img_resize_scratch(gw, gh, 1, 32, 32) * sizeof(float));
    for (int k = 0; k < 5; k++) {
        assert_int_equal(cam_grid(wt->data, 5, (int)f->dims[1], f->data, gh, gw, k, grid, &e),
                         ERR_OK);
        worst_grid = fmax(worst_grid, max_diff(grid, json_array_get(json_object_get(ref, "grids"),
                                                                    (size_t)k), (size_t)gh * gw));
        img_resize_planes(grid, gw, gh, 1, up, 32, 32, scratch);
        worst_up = fmax(worst_up, max_diff(up, json_array_get(json_object_get(ref, "upsampled"),
                                                              (size_t)k), 32 * 32));
    }
    printf("# vs torch: logits %.1e, CAM grids %.1e, upsampled %.1e\n", worst_logit,
           worst_grid, worst_up);
    assert_true(worst_logit <= TORCH_TOL && worst_grid <= TORCH_TOL && worst_up <= TORCH_TOL);
    free(scratch);
    onnx_close(m);
    json_decref(ref);
}

/* A JSON array of numbers into a new float array of exactly n. */
static float *jfloats(json_t *root, const char *key, size_t n)
{
    json_t *a = json_object_get(root, key);
    float *v = malloc(n * sizeof(float));

    assert_non_null(v);
    assert_int_equal(json_array_size(a), n);
    for (size_t i = 0; i < n; i++)
        v[i] = (float)json_number_value(json_array_get(a, i));
    return v;
}

/* Grad-CAM through the seed's head (Dropout - Linear - ReLU - Dropout -
 * Linear; dropout is the identity) equals torch autograd's for every class
 * (tests/fixtures/make_gradcam_fixtures.py; some hidden units are cut by
 * the ReLU, so its mask matters); the same head written as MatMul + Add
 * (transposed weights, separate bias) gives the same maps. */
static void test_gradcam_through_a_deep_head_matches_torch(void **st)
{
    json_error_t je;
    json_t *r = json_load_file(FIX "/gradcam_head.json", 0, &je);
    int C, H, W_, HID, K;
    float *f, *w1, *b1, *w2, *b2, *w1t, grid[64], grid2[64], *scratch;
    struct err e = {0};

    (void)st;
    assert_non_null(r);
    C = (int)json_integer_value(json_object_get(r, "channels"));
    H = (int)json_integer_value(json_object_get(r, "h"));
    W_ = (int)json_integer_value(json_object_get(r, "w"));
    HID = (int)json_integer_value(json_object_get(r, "hidden"));
    K = (int)json_integer_value(json_object_get(r, "classes"));
    assert_true(H * W_ <= 64 && json_integer_value(json_object_get(r, "hidden_negative")) > 0);
    f = jfloats(r, "features", (size_t)C * H * W_);
    w1 = jfloats(r, "w1", (size_t)HID * C);
    b1 = jfloats(r, "b1", (size_t)HID);
    w2 = jfloats(r, "w2", (size_t)K * HID);
    b2 = jfloats(r, "b2", (size_t)K);
    w1t = malloc((size_t)HID * C * sizeof(float));
    assert_non_null(w1t);
    for (int o = 0; o < HID; o++)
        for (int j = 0; j < C; j++)
            w1t[(size_t)j * HID + o] = w1[(size_t)o * C + j];
    {
        const struct cam_layer seed[] = {{CAM_DENSE, w1, b1, C, HID, 0},
                                         {CAM_RELU, NULL, NULL, HID, HID, 0},
                                         {CAM_DENSE, w2, b2, HID, K, 0}};
        const struct cam_layer matmul[] = {{CAM_DENSE, w1t, NULL, C, HID, 1},
                                           {CAM_ADD, NULL, b1, HID, HID, 0},
                                           {CAM_RELU, NULL, NULL, HID, HID, 0},
                                           {CAM_DENSE, w2, b2, HID, K, 0}};
        scratch = malloc(cam_gradcam_scratch(matmul, 4, C) * sizeof(float));
        assert_non_null(scratch);
        for (int k = 0; k < K; k++) {
            json_t *m = json_array_get(json_object_get(r, "maps"), (size_t)k);
            assert_int_equal(cam_gradcam(seed, 3, C, f, H, W_, k, grid, scratch, &e), ERR_OK);
            assert_int_equal(cam_gradcam(matmul, 4, C, f, H, W_, k, grid2, scratch, &e), ERR_OK);
            for (int i = 0; i < H * W_; i++) {
                assert_float_equal(grid[i], json_number_value(json_array_get(m, (size_t)i)),
                                   1e-5);
                assert_float_equal(grid2[i], grid[i], 1e-6);
            }
        }
        /* a head whose sizes do not chain, and a class past the end */
        assert_int_equal(cam_gradcam(seed + 1, 2, C, f, H, W_, 0, grid, scratch, &e),
                         ERR_INVALID);
        assert_non_null(strstr(e.msg, "head layer 0"));
        assert_int_equal(cam_gradcam(seed, 3, C, f, H, W_, K, grid, scratch, &e), ERR_INVALID);
    }
    free(scratch);
    free(f);
    free(w1);
    free(b1);
    free(w2);
    free(b2);
    free(w1t);
    json_decref(r);
}

/* streamml predict --gradcam on a torchvision EfficientNet-B0 with the
 * seed's head (tests/fixtures/make_gradcam_effnet.py, made here: ~19 MB):
 * the (N, h, w) maps equal torch autograd's Grad-CAM to 1e-3. */
static void test_gradcam_efficientnet_b0_matches_torch_autograd(void **st)
{
    char dir[] = "/tmp/gradcam.XXXXXX", cmd[1024], path[300];
    struct onnx_tensor got = {0}, want = {0};
    struct err e = {0};
    int k = -1;
    FILE *f;
    double worst = 0;

    (void)st;
    assert_non_null(mkdtemp(dir));
    snprintf(cmd, sizeof(cmd),
             "timeout 120 /usr/bin/python3 tests/fixtures/make_gradcam_effnet.py %s 3", dir);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof(path), "%s/k.txt", dir);
    f = fopen(path, "r");
    assert_non_null(f);
    assert_int_equal(fscanf(f, "%d", &k), 1);
    fclose(f);
    snprintf(cmd, sizeof(cmd),
             "%s predict --model %s/effnet_b0.onnx --input %s/x.npy --gradcam %d --output "
             "%s/cam.npy",
             test_bin("streamml"), dir, dir, k, dir);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof(path), "%s/cam.npy", dir);
    assert_int_equal(npy_read(path, &got, &e), ERR_OK);
    snprintf(path, sizeof(path), "%s/cam_ref.npy", dir);
    assert_int_equal(npy_read(path, &want, &e), ERR_OK);
    assert_int_equal(got.ndim, 3);
    assert_memory_equal(got.dims, want.dims, sizeof(got.dims[0]) * 3);
    for (size_t i = 0; i < onnx_numel(&got); i++)
        worst = fmax(worst, fabs((double)((float *)got.data)[i] - ((float *)want.data)[i]));
    printf("gradcam EfficientNet-B0 class %d, maps %lldx%lld: max |ours - torch| = %.3g\n", k,
           (long long)got.dims[1], (long long)got.dims[2], worst);
    assert_true(worst < 1e-3);
    npy_free(&got);
    npy_free(&want);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grid_is_relu_of_weighted_sum_scaled_by_its_max),
        cmocka_unit_test(test_bad_class_or_non_finite_features_are_refused),
        cmocka_unit_test(test_grids_and_upsampling_match_torch),
        cmocka_unit_test(test_gradcam_through_a_deep_head_matches_torch),
        cmocka_unit_test(test_gradcam_efficientnet_b0_matches_torch_autograd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
