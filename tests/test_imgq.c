/* Image quality checks (common/streams/imgq.c).
 *
 * Synthetic fundus photographs drawn here (a bright disc on black, an optic
 * disc, vessels, lesions, sensor noise, a slight blur, as the demo model's
 * training images) give the baseline limits (imgq_limits_from); then every
 * check refuses its bad image and good images pass:
 *   blurred -> sharpness, dark -> underexposed, over-exposed -> overexposed,
 *   flattened -> contrast, a third of the field cut off -> field.
 * The committed limits (models/images/quality.json, `streamml quality` over
 * the training generator's images) pass the sample images and refuse their
 * damaged copies. The limits file is checked on load (culprit named).
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
#include <time.h>
#include <unistd.h>

#include "image.h"
#include "imgq.h"

#define S 224
#define QUALITY_JSON "models/images/quality.json"
#define SAMPLES "models/images/samples"

static uint64_t rng_state;

static double urand(void)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

static double nrand(void)
{
    double s = 0;
    for (int i = 0; i < 12; i++)
        s += urand();
    return s - 6.0;
}

static void disc(float *px, double cx, double cy, double r, const float rgb[3])
{
    for (int y = (int)(cy - r) - 1; y <= (int)(cy + r) + 1; y++)
        for (int x = (int)(cx - r) - 1; x <= (int)(cx + r) + 1; x++) {
            if (x < 0 || y < 0 || x >= S || y >= S)
                continue;
            if ((x - cx) * (x - cx) + (y - cy) * (y - cy) <= r * r)
                memcpy(px + 3 * (y * S + x), rgb, 3 * sizeof(float));
        }
}

static void box_blur(float *px, int radius)
{
    static float tmp[S * S * 3];

    for (int pass = 0; pass < 2; pass++) { /* horizontal then vertical */
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++)
                for (int c = 0; c < 3; c++) {
                    double s = 0;
                    int n = 0;
                    for (int d = -radius; d <= radius; d++) {
                        int xx = pass ? x : x + d, yy = pass ? y + d : y;
                        if (xx < 0 || yy < 0 || xx >= S || yy >= S)
                            continue;
                        s += px[3 * (yy * S + xx) + c];
                        n++;
                    }
                    tmp[3 * (y * S + x) + c] = (float)(s / n);
                }
        memcpy(px, tmp, sizeof(tmp));
    }
}

/* A good synthetic fundus image (float RGB, S x S). */
static void fundus(float *px, uint64_t seed)
{
    double c = S / 2.0, r = S * (0.42 + 0.05 * urand()), u = 0.8 + 0.3 * urand();
    double side = urand() < 0.5 ? -1 : 1, odx, ody;
    const float base[3] = {(float)(200 * u), (float)(90 * u), (float)(40 * u)};
    const float od[3] = {250, 220, 150}, vessel[3] = {120, 30, 20}, dot[3] = {90, 10, 10};

    (void)seed; /* seeded by the caller, before the draws above */
    memset(px, 0, sizeof(float) * S * S * 3);
    disc(px, c, c, r, base);
    odx = c + side * r * 0.45;
    ody = c;
    disc(px, odx, ody, r * 0.14, od);
    for (int v = 0; v < 7; v++) {
        double x = odx, y = ody, a = urand() * 2 * M_PI;
        for (int s = 0; s < 60; s++) {
            a += 0.06 * nrand();
            x += 2 * cos(a);
            y += 2 * sin(a);
            if ((x - c) * (x - c) + (y - c) * (y - c) > r * r * 0.9)
                break;
            disc(px, x, y, 1.3, vessel);
        }
    }
    for (int d = 0; d < 6; d++) {
        double a = urand() * 2 * M_PI, rr = r * sqrt(0.8 * urand());
        disc(px, c + rr * cos(a), c + rr * sin(a), 2.0, dot);
    }
    box_blur(px, 1);
    for (int i = 0; i < S * S * 3; i++)
        px[i] += (float)(4 * nrand());
}

static void to_img(const float *px, struct img *im)
{
    im->width = im->height = S;
    for (int i = 0; i < S * S * 3; i++) {
        float v = px[i];
        im->rgb[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : lrintf(v));
    }
}

enum damage { GOOD, BLURRED, DARK, BRIGHT, FLAT, CROPPED, NDAMAGE };

static const enum imgq_check EXPECT[NDAMAGE] = {IMGQ_OK, IMGQ_SHARPNESS, IMGQ_UNDEREXPOSED,
                                                IMGQ_OVEREXPOSED, IMGQ_CONTRAST, IMGQ_FIELD};
static const char *const DAMAGE_NAMES[NDAMAGE] = {"good", "blurred", "dark", "over-exposed",
                                                  "low-contrast", "cropped"};

/* What each fault does to a photograph (on 8-bit RGB, in place). */
static void damage(struct img *im, enum damage d)
{
    size_t n = (size_t)im->width * im->height;
    static float f[S * S * 3];

    switch (d) {
    case GOOD:
        break;
    case BLURRED: /* defocus: a 7-pixel box twice (sigma ~ 2.8 px) */
        assert_int_equal(im->width, S);
        for (size_t i = 0; i < 3 * n; i++)
            f[i] = im->rgb[i];
        box_blur(f, 3);
        to_img(f, im);
        break;
    case DARK: /* an eighth of the light */
        for (size_t i = 0; i < 3 * n; i++)
            im->rgb[i] = (uint8_t)lrint(im->rgb[i] * 0.12);
        break;
    case BRIGHT: /* over-exposed: gain and offset, clipped */
        for (size_t i = 0; i < 3 * n; i++) {
            double v = im->rgb[i] * 2.2 + 40;
            im->rgb[i] = (uint8_t)(v > 255 ? 255 : lrint(v));
        }
        break;
    case FLAT: { /* haze: every channel pulled 85% of the way to its mean */
        double m[3] = {0};
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (im->rgb[3 * i] > 40) {
                for (int c = 0; c < 3; c++)
                    m[c] += im->rgb[3 * i + c];
                k++;
            }
        for (size_t i = 0; i < n; i++)
            if (im->rgb[3 * i] > 40)
                for (int c = 0; c < 3; c++)
                    im->rgb[3 * i + c] =
                        (uint8_t)lrint(m[c] / k + 0.15 * (im->rgb[3 * i + c] - m[c] / k));
        break;
    }
    case CROPPED: /* the camera missed: the right 35% of the frame is black */
        for (int y = 0; y < im->height; y++)
            for (int x = (int)(im->width * 0.65); x < im->width; x++)
                memset(im->rgb + 3 * ((size_t)y * im->width + x), 0, 3);
        break;
    case NDAMAGE:
        break;
    }
}

static struct imgq *open_q(void)
{
    struct imgq *q;
    struct err e = {0};
    if (imgq_open(&q, &e))
        fail_msg("imgq_open: %s", e.msg);
    return q;
}

static void synthetic(struct img *im, uint64_t seed)
{
    static float px[S * S * 3];
    static uint8_t buf[S * S * 3];

    im->rgb = buf;
    im->cap = sizeof(buf);
    rng_state = seed * 2654435761ULL + 1;
    fundus(px, seed);
    to_img(px, im);
}

static void print_values(const char *what, const struct imgq_values *v)
{
    printf("  %-13s sharpness %8.2f mean %6.2f dark %.3f bright %.3f contrast %6.2f "
           "field %.3f\n",
           what, v->sharpness, v->mean, v->dark_frac, v->bright_frac, v->contrast, v->field);
}

static void test_each_check_refuses_its_bad_image_and_good_ones_pass(void **st)
{
    enum { NBASE = 40, NTEST = 8 };
    struct imgq_values base[NBASE], v;
    struct imgq_limits lim;
    struct imgq *q = open_q();
    struct img im;
    struct err e = {0};

    (void)st;
    double ms = 0;

    for (int i = 0; i < NBASE; i++) {
        struct timespec t0, t1;

        synthetic(&im, 1000 + i);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        assert_int_equal(imgq_measure(q, &im, &base[i], &e), ERR_OK);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        ms += (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    }
    printf("  imgq_measure: %.3f ms per 224x224 image (mean of %d)\n", ms / NBASE, NBASE);
    assert_int_equal(imgq_limits_from(base, NBASE, &lim, &e), ERR_OK);
    printf("  limits: sharpness >= %.2f, mean %.2f..%.2f, dark <= %.3f, bright <= %.3f, "
           "contrast >= %.2f, field >= %.3f\n",
           lim.min_sharpness, lim.min_mean, lim.max_mean, lim.max_dark_frac,
           lim.max_bright_frac, lim.min_contrast, lim.min_field);
    for (int i = 0; i < NTEST; i++) /* images the baseline never saw */
        for (int d = 0; d < NDAMAGE; d++) {
            synthetic(&im, 5000 + i);
            damage(&im, (enum damage)d);
            assert_int_equal(imgq_measure(q, &im, &v, &e), ERR_OK);
            if (i == 0)
                print_values(DAMAGE_NAMES[d], &v);
            if (imgq_judge(&lim, &v) != EXPECT[d])
                fail_msg("image %d %s: judged %s, expected %s", i, DAMAGE_NAMES[d],
                         imgq_check_name(imgq_judge(&lim, &v)), imgq_check_name(EXPECT[d]));
        }
    imgq_close(q);
}

static void test_black_image_is_underexposed_and_bad_values_fail(void **st)
{
    static uint8_t black[64 * 48 * 3];
    struct img im = {.width = 64, .height = 48, .rgb = black, .cap = sizeof(black)};
    struct imgq_values v;
    struct imgq_limits none;
    struct imgq *q = open_q();
    struct err e = {0};

    (void)st;
    imgq_limits_none(&none);
    assert_int_equal(imgq_measure(q, &im, &v, &e), ERR_OK);
    assert_true(v.field == 0.0 && v.dark_frac == 1.0);
    assert_int_equal(imgq_judge(&none, &v), IMGQ_OK); /* no limits: nothing refused */
    none.min_mean = 1;
    assert_int_equal(imgq_judge(&none, &v), IMGQ_UNDEREXPOSED);
    imgq_limits_none(&none);
    synthetic(&im, 7);
    assert_int_equal(imgq_measure(q, &im, &v, &e), ERR_OK);
    v.sharpness = NAN; /* a non-finite value never passes */
    assert_int_equal(imgq_judge(&none, &v), IMGQ_SHARPNESS);
    {
        char d[256];
        none.min_sharpness = 80;
        v.sharpness = 2.5;
        imgq_detail(&none, &v, IMGQ_SHARPNESS, d, sizeof(d));
        assert_non_null(strstr(d, "sharpness 2.50 < 80.00; sharpness=2.50 mean="));
        imgq_detail(&none, &v, IMGQ_SHARPNESS, d, 8); /* truncated, terminated */
        assert_true(strlen(d) < 8);
        imgq_limits_none(&none);
    }
    im.width = 0;
    assert_int_equal(imgq_measure(q, &im, &v, &e), ERR_INVALID);
    assert_int_equal(imgq_limits_from(&v, 3, &none, &e), ERR_INVALID);
    imgq_close(q);
}

static void test_values_do_not_depend_on_resolution(void **st)
{
    static uint8_t big[2 * S * 2 * S * 3];
    struct img im, im2 = {.width = 2 * S, .height = 2 * S, .rgb = big, .cap = sizeof(big)};
    struct imgq_values a, b;
    struct imgq *q = open_q();
    struct err e = {0};

    (void)st;
    synthetic(&im, 11);
    for (int y = 0; y < 2 * S; y++) /* pixel-doubled copy */
        for (int x = 0; x < 2 * S; x++)
            memcpy(big + 3 * (y * 2 * S + x), im.rgb + 3 * ((y / 2) * S + x / 2), 3);
    assert_int_equal(imgq_measure(q, &im, &a, &e), ERR_OK);
    assert_int_equal(imgq_measure(q, &im2, &b, &e), ERR_OK);
    assert_true(fabs(a.mean - b.mean) < 1.0);
    assert_true(fabs(a.field - b.field) < 0.01);
    assert_true(fabs(a.contrast - b.contrast) < 0.1 * a.contrast);
    imgq_close(q);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_limits_file_round_trip_and_bad_files_named(void **st)
{
    char dir[] = "/tmp/imgqXXXXXX", path[64];
    struct imgq_limits a, b;
    struct err e = {0};
    static const char *const bad[] = {
        "{",
        "{\"version\":2,\"limits\":{}}",
        "{\"version\":1,\"limits\":{\"min_sharpness\":1}}",
        "{\"version\":1,\"limits\":{\"min_sharpness\":1,\"min_mean\":10,\"max_mean\":300,"
        "\"max_dark_frac\":0.1,\"max_bright_frac\":0.1,\"min_contrast\":1,\"min_field\":0.8}}",
        "{\"version\":1,\"limits\":{\"min_sharpness\":1,\"min_mean\":100,\"max_mean\":50,"
        "\"max_dark_frac\":0.1,\"max_bright_frac\":0.1,\"min_contrast\":1,\"min_field\":0.8}}",
    };

    (void)st;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/q.json", dir);
    a = (struct imgq_limits){12.5, 20, 200, 0.3, 0.25, 5, 0.8};
    assert_int_equal(imgq_limits_save(&a, 40, path, &e), ERR_OK);
    assert_int_equal(imgq_limits_load(&b, path, &e), ERR_OK);
    assert_memory_equal(&a, &b, sizeof(a));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        write_file(path, bad[i]);
        b = a;
        assert_int_equal(imgq_limits_load(&b, path, &e), ERR_CONFIG);
        assert_non_null(strstr(e.msg, path));
        assert_memory_equal(&a, &b, sizeof(a)); /* nothing half-applied */
    }
    assert_non_null(strstr(e.msg, "min_mean"));
    unlink(path);
    rmdir(dir);
}

static void test_committed_limits_pass_samples_and_refuse_damaged_copies(void **st)
{
    static const char *const samples[] = {"fundus_00_g0.png", "fundus_01_g1.png",
                                          "fundus_02_g2.png", "fundus_03_g3.png",
                                          "fundus_04_g4.png", "fundus_05_g0.jpg",
                                          "fundus_07_g2.jpg"};
    struct img_opts o = {.root = SAMPLES};
    struct img_loader *l;
    struct imgq_limits lim;
    struct imgq_values v;
    struct imgq *q = open_q();
    struct img im;
    struct err e = {0};
    enum img_reason why;

    (void)st;
    if (imgq_limits_load(&lim, QUALITY_JSON, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(img_loader_open(&l, &o, &e), ERR_OK);
    img_init(&im);
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++)
        for (int d = 0; d < NDAMAGE; d++) {
            if (img_load(l, samples[i], &im, &why, &e))
                fail_msg("%s", e.msg);
            assert_int_equal(im.width, S);
            damage(&im, (enum damage)d);
            assert_int_equal(imgq_measure(q, &im, &v, &e), ERR_OK);
            if (imgq_judge(&lim, &v) != EXPECT[d]) {
                print_values(DAMAGE_NAMES[d], &v);
                fail_msg("%s %s: judged %s, expected %s", samples[i], DAMAGE_NAMES[d],
                         imgq_check_name(imgq_judge(&lim, &v)), imgq_check_name(EXPECT[d]));
            }
        }
    img_free(&im);
    img_loader_close(l);
    imgq_close(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_check_refuses_its_bad_image_and_good_ones_pass),
        cmocka_unit_test(test_black_image_is_underexposed_and_bad_values_fail),
        cmocka_unit_test(test_values_do_not_depend_on_resolution),
        cmocka_unit_test(test_limits_file_round_trip_and_bad_files_named),
        cmocka_unit_test(test_committed_limits_pass_samples_and_refuse_damaged_copies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
