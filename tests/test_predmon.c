/* What the monitor sees of clickstream and images predictions
 * (common/monitor/predmon.c): the values of one prediction; baselines from
 * predictions as JSON lines equal numpy's deciles, proportions, missing
 * rates and moments (tests/fixtures/make_predmon_fixtures.py); a shifted
 * grade distribution raises data drift on grade, which resolves when the
 * reference distribution comes back; bad input names the line.
 */
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

#include "predmon.h"

#define FIX "tests/fixtures/"

static void test_click_vector_rates_shares_and_top_score(void **st)
{
    struct click_prediction p = {0};
    const char *src[] = {"gru", "gru", "covisit", "gru", "explore"};
    float x[PMON_CLICK_DIM];
    double score;

    (void)st;
    p.n_items = 5;
    for (int i = 0; i < 5; i++) {
        snprintf(p.items[i].source, sizeof(p.items[i].source), "%s", src[i]);
        p.items[i].score = 3.5 - i;
    }
    pmon_click_vector(&p, x, &score);
    assert_float_equal(x[0], 1, 0);
    assert_float_equal(x[1], 1, 0);
    assert_float_equal(x[2], 0.6, 1e-6); /* gru */
    assert_float_equal(x[3], 0.2, 1e-6); /* covisit */
    assert_float_equal(x[4], 0.0, 0);    /* popular */
    assert_float_equal(x[5], 0.2, 1e-6); /* explore */
    assert_float_equal(score, 3.5, 0);
    p.unknown_item = true;
    p.cold_start = true;
    pmon_click_vector(&p, x, &score);
    assert_true(isnan(x[0]) && isnan(x[1]) && isnan(score));
}

static void test_image_vector_is_missing_when_ungradable(void **st)
{
    struct image_prediction p = {0};
    float x[PMON_IMAGE_DIM];
    double score;

    (void)st;
    p.ok = true;
    p.grade = 3;
    p.expected_grade = 2.25;
    p.referable_probability = 0.75;
    pmon_image_vector(&p, x, &score);
    assert_float_equal(x[0], 3, 0);
    assert_float_equal(x[1], 2.25, 0);
    assert_float_equal(score, 0.75, 0);
    p.ok = false;
    pmon_image_vector(&p, x, &score);
    assert_true(isnan(x[0]) && isnan(x[1]) && isnan(score));
}

static void check_dist(const struct mon_dist *d, json_t *ref, const char *name)
{
    json_t *edges = json_object_get(ref, "edges"), *prop = json_object_get(ref, "proportions");

    if (d->nedges != (int)json_array_size(edges))
        fail_msg("%s: %d edges, numpy %zu", name, d->nedges, json_array_size(edges));
    for (int k = 0; k < d->nedges; k++)
        assert_float_equal(d->edges[k], json_real_value(json_array_get(edges, (size_t)k)), 1e-12);
    for (int k = 0; k <= d->nedges; k++)
        assert_float_equal(d->prop[k], json_real_value(json_array_get(prop, (size_t)k)), 1e-12);
    assert_float_equal(d->missing_rate, json_real_value(json_object_get(ref, "missing_rate")),
                       1e-12);
    assert_float_equal(d->mean, json_real_value(json_object_get(ref, "mean")), 1e-12);
    assert_float_equal(d->std, json_real_value(json_object_get(ref, "std")), 1e-12);
}

static struct mon_baseline *read_fixture(enum pmon_kind k, const char *file, size_t *rows)
{
    FILE *f = fopen(file, "r");
    struct err e = {0};
    struct mon_baseline *b;

    assert_non_null(f);
    b = pmon_baseline_read(k, f, file, "m", rows, &e);
    fclose(f);
    if (!b)
        fail_msg("%s", e.msg);
    return b;
}

static void check_baseline(enum pmon_kind k, const char *file, const char *key, size_t want)
{
    json_t *ref = json_load_file(FIX "predmon_ref.json", 0, NULL), *r;
    size_t rows, n;
    const char *const *names = pmon_names(k, &n);
    struct mon_baseline *b = read_fixture(k, file, &rows);

    assert_non_null(ref);
    r = json_object_get(ref, key);
    assert_int_equal(rows, want);
    assert_int_equal(mon_baseline_num_features(b), n);
    for (size_t j = 0; j < n; j++) {
        assert_string_equal(mon_baseline_feature(b, j), names[j]);
        check_dist(mon_baseline_dist(b, j), json_object_get(r, names[j]), names[j]);
    }
    assert_non_null(mon_baseline_score(b));
    check_dist(mon_baseline_score(b), json_object_get(r, "score"), "score");
    mon_baseline_free(b);
    json_decref(ref);
}

static void test_images_baseline_equals_numpy(void **st)
{
    (void)st;
    check_baseline(PMON_IMAGES, FIX "predmon_images.jsonl", "images", 120);
}

static void test_clicks_baseline_equals_numpy(void **st)
{
    (void)st;
    check_baseline(PMON_CLICKSTREAM, FIX "predmon_clicks.jsonl", "clicks", 80);
}

static void feed_grade(struct mon *m, int grade, int64_t *now)
{
    struct image_prediction p = {.ok = true, .grade = grade, .expected_grade = grade,
                                 .referable_probability = grade >= 2 ? 0.9 : 0.1};
    float x[PMON_IMAGE_DIM];
    double score;

    pmon_image_vector(&p, x, &score);
    mon_observe(m, x, score, 1000, 0, (*now)++);
    mon_tick(m, *now);
}

/* Everything graded 4 (a camera fault, a model gone wrong): data drift on
 * grade goes CRITICAL; the reference grades again: RESOLVED. */
static void test_grade_shift_raises_then_resolves_drift(void **st)
{
    size_t rows, na, n;
    json_t *ref = json_load_file(FIX "predmon_ref.json", 0, NULL);
    json_t *grades = json_object_get(ref, "image_grades");
    struct mon_opts o;
    struct err e = {0};
    struct mon *m;
    const struct mon_alert *a;
    const char *const *names = pmon_names(PMON_IMAGES, &n);
    int64_t now = 1000;
    int up = 0, down = 0;

    (void)st;
    memset(&o, 0, sizeof(o));
    o = (struct mon_opts){.window_events = 100, .window_ms = 1000000, .min_events = 50,
                          .slices = 2, .psi_warn = 0.1, .psi_crit = 0.2, .score_psi_warn = 10,
                          .score_psi_crit = 10, .score_mean_warn = 10, .score_mean_crit = 10,
                          .missing_warn = 0.5, .latency_warn_s = 10, .latency_crit_s = 10,
                          .error_warn = 0.5, .error_crit = 0.9, .auc_warn = 1, .auc_crit = 1,
                          .auc_window = 10, .auc_min_labels = 10, .hysteresis = 0.1};
    m = mon_open(&o, read_fixture(PMON_IMAGES, FIX "predmon_images.jsonl", &rows), names, n, &e);
    assert_non_null(m);
    for (int i = 0; i < 100; i++)
        feed_grade(m, 4, &now);
    a = mon_alerts(m, &na);
    for (size_t i = 0; i < na; i++)
        up += a[i].check == MON_DATA_DRIFT && strcmp(a[i].feature, "grade") == 0 &&
              a[i].to == MON_CRITICAL;
    assert_int_equal(up, 1);
    mon_alerts_clear(m);
    for (int r = 0; r < 2; r++)
        for (size_t i = 0; i < json_array_size(grades); i++)
            feed_grade(m, (int)json_integer_value(json_array_get(grades, i)), &now);
    a = mon_alerts(m, &na);
    for (size_t i = 0; i < na; i++)
        down += a[i].check == MON_DATA_DRIFT && strcmp(a[i].feature, "grade") == 0 &&
                a[i].to == MON_OK;
    assert_int_equal(down, 1);
    assert_int_equal(mon_level_of(m, MON_DATA_DRIFT, 0), MON_OK);
    mon_close(m);
    json_decref(ref);
}

static void expect_refused(enum pmon_kind k, const char *text, int code, const char *needle)
{
    FILE *f = fmemopen((void *)text, strlen(text), "r");
    struct err e = {0};
    size_t rows;

    assert_non_null(f);
    assert_null(pmon_baseline_read(k, f, "in.jsonl", "m", &rows, &e));
    fclose(f);
    assert_int_equal(e.code, code);
    if (!strstr(e.msg, needle))
        fail_msg("\"%s\" does not name \"%s\"", e.msg, needle);
}

static void test_bad_input_is_refused_naming_the_line(void **st)
{
    (void)st;
    expect_refused(PMON_IMAGES, "# comment\n{\"status\":\"ok\",\"grade\":7}\n", ERR_DECODE,
                   "in.jsonl:2: not a images prediction");
    expect_refused(PMON_IMAGES, "{\"status\":\"ok\", nope\n", ERR_DECODE, "in.jsonl:1: not JSON");
    expect_refused(PMON_CLICKSTREAM, "{\"items\":[{\"source\":1}],\"cold_start\":false,"
                   "\"unknown_item\":false}\n", ERR_DECODE, "in.jsonl:1");
    expect_refused(PMON_IMAGES, "{\"status\":\"ungradable\"}\n", ERR_INVALID,
                   "1 prediction(s): at least 10");
    assert_int_equal(pmon_kind_parse("clickstream"), PMON_CLICKSTREAM);
    assert_int_equal(pmon_kind_parse("images"), PMON_IMAGES);
    assert_int_equal(pmon_kind_parse("transactions"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_click_vector_rates_shares_and_top_score),
        cmocka_unit_test(test_image_vector_is_missing_when_ungradable),
        cmocka_unit_test(test_images_baseline_equals_numpy),
        cmocka_unit_test(test_clicks_baseline_equals_numpy),
        cmocka_unit_test(test_grade_shift_raises_then_resolves_drift),
        cmocka_unit_test(test_bad_input_is_refused_naming_the_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
