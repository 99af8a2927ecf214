/* XGBoost JSON runtime: predictions equal xgboost's own predict_proba on
 * fixtures made by tests/fixtures/make_xgb_fixtures.py, and bad models are
 * refused with the reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gbdt.h"

#define NF 6

/* Max |ours - xgboost| over a fixture's rows; asserts at least 100 rows. */
static double max_diff(const char *model, const char *cases)
{
    struct err e = {0};
    struct gbdt *g = gbdt_open(model, &e);
    FILE *f = fopen(cases, "r");
    char line[1024];
    double worst = 0;
    int rows = 0;

    if (!g)
        fprintf(stderr, "%s\n", e.msg);
    assert_non_null(g);
    assert_non_null(f);
    assert_int_equal(gbdt_num_features(g), NF);
    while (fgets(line, sizeof(line), f)) {
        float x[NF];
        char *p = line, *end;
        for (int i = 0; i < NF; i++) {
            x[i] = *p == ',' ? NAN : strtof(p, &end);
            p = strchr(p, ',') + 1;
        }
        double want = strtod(p, &end), got = gbdt_predict(g, x);
        worst = fmax(worst, fabs(got - want));
        rows++;
    }
    fclose(f);
    gbdt_close(g);
    assert_true(rows >= 100);
    return worst;
}

static void test_named_model_matches_xgboost(void **st)
{
    (void)st;
    double d = max_diff("tests/fixtures/xgb_named.json", "tests/fixtures/xgb_named_cases.csv");
    printf("# max |diff| vs xgboost: %.3g\n", d);
    assert_true(d <= 1e-6);
}

static void test_unnamed_model_matches_xgboost(void **st)
{
    (void)st;
    assert_true(max_diff("tests/fixtures/xgb_unnamed.json",
                         "tests/fixtures/xgb_unnamed_cases.csv") <= 1e-6);
}

static void test_base_score_and_depth6_match_xgboost(void **st)
{
    (void)st;
    assert_true(max_diff("tests/fixtures/xgb_base03.json",
                         "tests/fixtures/xgb_base03_cases.csv") <= 1e-6);
}

static void test_feature_names_are_read(void **st)
{
    (void)st;
    struct err e = {0};
    struct gbdt *g = gbdt_open("tests/fixtures/xgb_named.json", &e);
    struct gbdt *u = gbdt_open("tests/fixtures/xgb_unnamed.json", &e);

    assert_non_null(g);
    assert_non_null(u);
    assert_string_equal(gbdt_feature_name(g, 2), "f_2");
    assert_null(gbdt_feature_name(u, 2));
    assert_int_equal(gbdt_num_trees(g), 20);
    gbdt_close(g);
    gbdt_close(u);
}

/* A one-split model written by hand, in the text form xgboost 2.x/3.x use. */
static const char *tiny(const char *objective, const char *base, const char *dflt,
                        const char *right)
{
    static char buf[1024];
    snprintf(buf, sizeof(buf),
             "{\"learner\":{\"objective\":{\"name\":\"%s\"},"
             "\"learner_model_param\":{\"base_score\":\"%s\",\"num_feature\":\"1\"},"
             "\"gradient_booster\":{\"name\":\"gbtree\",\"model\":{\"trees\":[{"
             "\"left_children\":[1,-1,-1],\"right_children\":[%s,-1,-1],"
             "\"split_indices\":[0,0,0],\"split_conditions\":[0.5,-1.0,1.0],"
             "\"default_left\":%s}]}}}}",
             objective, base, right, dflt);
    return buf;
}

static void test_bracketed_base_score_and_int_default_left(void **st)
{
    (void)st;
    struct err e = {0};
    struct gbdt *g = gbdt_open_string(tiny("binary:logistic", "[5E-1]", "[1,0,0]", "2"), &e);
    float lo = 0.1f, hi = 0.9f, miss = NAN;

    assert_non_null(g);
    assert_float_equal(gbdt_base_score(g), 0.5, 1e-12);
    assert_float_equal(gbdt_margin(g, &lo), -1.0, 1e-12);
    assert_float_equal(gbdt_margin(g, &hi), 1.0, 1e-12);
    assert_float_equal(gbdt_margin(g, &miss), -1.0, 1e-12); /* default left */
    gbdt_close(g);
    g = gbdt_open_string(tiny("binary:logistic", "0.5", "[false,false,false]", "2"), &e);
    assert_non_null(g);
    assert_float_equal(gbdt_margin(g, &miss), 1.0, 1e-12); /* default right */
    gbdt_close(g);
}

static void test_bad_models_are_refused_with_reason(void **st)
{
    (void)st;
    struct err e = {0};
    FILE *f;

    assert_null(gbdt_open_string(tiny("reg:squarederror", "0.5", "[1,0,0]", "2"), &e));
    assert_non_null(strstr(e.msg, "reg:squarederror"));
    assert_null(gbdt_open_string(tiny("binary:logistic", "0.5", "[1,0,0]", "7"), &e));
    assert_non_null(strstr(e.msg, "child index"));
    assert_null(gbdt_open_string(tiny("binary:logistic", "1.5", "[1,0,0]", "2"), &e));
    assert_non_null(strstr(e.msg, "base_score"));
    assert_null(gbdt_open_string("{\"learner\": ", &e));
    assert_int_equal(e.code, ERR_DECODE);
    f = fopen("/tmp/streamml-test-model.ubj", "wb");
    fwrite("{L\x00\x00\x00\x07learner{", 1, 15, f);
    fclose(f);
    assert_null(gbdt_open("/tmp/streamml-test-model.ubj", &e));
    assert_non_null(strstr(e.msg, "save_model('model.json')"));
    remove("/tmp/streamml-test-model.ubj");
    assert_null(gbdt_open("/nonexistent/model.json", &e));
    assert_non_null(strstr(e.msg, "/nonexistent/model.json"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_named_model_matches_xgboost),
        cmocka_unit_test(test_unnamed_model_matches_xgboost),
        cmocka_unit_test(test_base_score_and_depth6_match_xgboost),
        cmocka_unit_test(test_feature_names_are_read),
        cmocka_unit_test(test_bracketed_base_score_and_int_default_left),
        cmocka_unit_test(test_bad_models_are_refused_with_reason),
    };
    return cmocka_run_group_tests_name("gbdt", tests, NULL, NULL);
}
