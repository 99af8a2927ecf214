/* XGBoost JSON runtime (common/models/gbdt.c).
 *
 * Parity: predictions and margins equal xgboost's own on the fixtures made
 * by tests/fixtures/make_xgb_fixtures.py (xgboost 1.7.4, NaNs in the input).
 * Format: the variants of xgboost 1.x-3.x files, written here by hand.
 * Refusals: every malformed model is refused with the reason.
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

#include "gbdt.h"

#define FIX "tests/fixtures/"
#define NF 6 /* features of the fixture models */
#define MAX_ROWS 200

/* One fixture: inputs and xgboost's predict_proba[:, 1] and margin. */
struct cases {
    float x[MAX_ROWS][NF];
    double prob[MAX_ROWS], margin[MAX_ROWS];
    int n;
};

/* Reads the next comma-separated cell; empty = NaN. */
static double cell(char **p)
{
    char *end;
    double v = **p == ',' || **p == '\n' ? NAN : strtod(*p, &end);

    *p += strcspn(*p, ",\n");
    if (**p == ',')
        (*p)++;
    return v;
}

static void read_cases(const char *path, struct cases *c)
{
    FILE *f = fopen(path, "r");
    char line[1024];

    assert_non_null(f);
    assert_non_null(fgets(line, sizeof(line), f)); /* header */
    c->n = 0;
    while (c->n < MAX_ROWS && fgets(line, sizeof(line), f)) {
        char *p = line;
        for (int i = 0; i < NF; i++)
            c->x[c->n][i] = (float)cell(&p);
        c->prob[c->n] = cell(&p);
        c->margin[c->n] = cell(&p);
        c->n++;
    }
    fclose(f);
    assert_true(c->n >= 100);
}

static struct gbdt *must_open(const char *path)
{
    struct err e = {0};
    struct gbdt *g = gbdt_open(path, &e);

    if (!g)
        fail_msg("%s", e.msg);
    return g;
}

/* Max |ours - xgboost| of the probabilities (which = 0) or margins (1). */
static double max_diff(const char *name, int which)
{
    char model[256], csv[256];
    struct cases *c = malloc(sizeof(*c));
    struct gbdt *g;
    double worst = 0;

    assert_non_null(c);
    snprintf(model, sizeof(model), FIX "xgb_%s.json", name);
    snprintf(csv, sizeof(csv), FIX "xgb_%s_cases.csv", name);
    g = must_open(model);
    read_cases(csv, c);
    assert_int_equal(gbdt_num_features(g), NF);
    for (int r = 0; r < c->n; r++) {
        double got = which ? gbdt_margin(g, c->x[r]) : gbdt_predict(g, c->x[r]);
        double want = which ? c->margin[r] : c->prob[r];
        worst = fmax(worst, fabs(got - want));
    }
    printf("# %s: max |%s - xgboost| = %.3g over %d rows\n", name, which ? "margin" : "prob", worst,
           c->n);
    gbdt_close(g);
    free(c);
    return worst;
}

static void test_named_model_matches_xgboost_predict_proba(void **st)
{
    (void)st;
    assert_true(max_diff("named", 0) <= 1e-6);
}

static void test_named_model_margin_matches_xgboost(void **st)
{
    (void)st;
    assert_true(max_diff("named", 1) <= 1e-6);
}

static void test_unnamed_model_matches_xgboost(void **st)
{
    (void)st;
    assert_true(max_diff("unnamed", 0) <= 1e-6);
    assert_true(max_diff("unnamed", 1) <= 1e-6);
}

static void test_non_default_base_score_matches_xgboost(void **st)
{
    (void)st;
    assert_true(max_diff("base03", 0) <= 1e-6);
    assert_true(max_diff("base03", 1) <= 1e-6);
}

/* The pruner leaves "deleted" nodes in the arrays, unreachable from the root. */
static void test_pruned_model_with_deleted_nodes_matches_xgboost(void **st)
{
    (void)st;
    assert_true(max_diff("pruned", 0) <= 1e-6);
}

/* 100 rows: a full block of 64, lanes of 8, then 4 rows one by one. */
static void test_batch_equals_row_by_row(void **st)
{
    struct cases *c = malloc(sizeof(*c));
    struct gbdt *g = must_open(FIX "xgb_base03.json");
    double out[MAX_ROWS];

    (void)st;
    assert_non_null(c);
    read_cases(FIX "xgb_base03_cases.csv", c);
    gbdt_predict_batch(g, &c->x[0][0], (size_t)c->n, out);
    for (int r = 0; r < c->n; r++)
        assert_true(out[r] == gbdt_predict(g, c->x[r]));
    gbdt_close(g);
    free(c);
}

static void test_feature_names_read_when_present(void **st)
{
    struct gbdt *g = must_open(FIX "xgb_named.json");

    (void)st;
    assert_string_equal(gbdt_feature_name(g, 0), "f_0");
    assert_string_equal(gbdt_feature_name(g, 5), "f_5");
    assert_null(gbdt_feature_name(g, 6));
    gbdt_close(g);
}

static void test_feature_names_null_when_absent(void **st)
{
    struct gbdt *g = must_open(FIX "xgb_unnamed.json");

    (void)st;
    assert_null(gbdt_feature_name(g, 0));
    gbdt_close(g);
}

static void test_trees_depth_and_base_score_reported(void **st)
{
    struct gbdt *g = must_open(FIX "xgb_base03.json");

    (void)st;
    assert_int_equal(gbdt_num_trees(g), 20);
    assert_true(gbdt_max_depth(g) >= 1 && gbdt_max_depth(g) <= 5);
    assert_float_equal(gbdt_base_score(g), 0.3, 1e-12);
    gbdt_close(g);
}

/* ---- hand-written models, in the shapes xgboost 1.x-3.x write ---- */

/* One split on feature 0 at 0.5: left leaf -1, right leaf +1. */
#define SPLIT_TREE                                                                                 \
    "{\"left_children\":[1,-1,-1],\"right_children\":[2,-1,-1],"                                   \
    "\"split_indices\":[0,0,0],\"split_conditions\":[0.5,-1.0,1.0],"                               \
    "\"default_left\":%s,\"base_weights\":[0,-1,1]}"

/* A model of num_feature 2 around the given trees (a JSON array body). */
static const char *model(const char *objective, const char *base, const char *trees)
{
    static char buf[4096];

    snprintf(buf, sizeof(buf),
             "{\"version\":[3,0,0],\"learner\":{\"objective\":{\"name\":\"%s\"},"
             "\"feature_names\":[],"
             "\"learner_model_param\":{\"base_score\":\"%s\",\"num_class\":\"0\","
             "\"num_feature\":\"2\",\"num_target\":\"1\"},"
             "\"gradient_booster\":{\"name\":\"gbtree\",\"model\":{\"trees\":[%s]}}}}",
             objective, base, trees);
    return buf;
}

static const char *split_tree(const char *default_left)
{
    static char buf[512];

    snprintf(buf, sizeof(buf), SPLIT_TREE, default_left);
    return buf;
}

/* Opens a hand-written model that must load. */
static struct gbdt *must_load(const char *json)
{
    struct err e = {0};
    struct gbdt *g = gbdt_open_string(json, &e);

    if (!g)
        fail_msg("%s", e.msg);
    return g;
}

/* Loads a model that must be refused with `why` in the message. */
static void assert_refused(const char *json, const char *why)
{
    struct err e = {0};
    struct gbdt *g = gbdt_open_string(json, &e);

    if (g || !strstr(e.msg, why))
        fail_msg("expected refusal with \"%s\", got: %s", why, g ? "(loaded)" : e.msg);
    assert_int_equal(e.code, ERR_CONFIG);
}

static void test_split_goes_left_below_threshold_right_at_it(void **st)
{
    struct gbdt *g = must_load(model("binary:logistic", "5E-1", split_tree("[1,0,0]")));
    float lo[2] = {0.4999f, 0}, at[2] = {0.5f, 0}, hi[2] = {7, 0};

    (void)st;
    assert_true(gbdt_margin(g, lo) == -1.0);
    assert_true(gbdt_margin(g, at) == 1.0); /* x < threshold is false at the threshold */
    assert_true(gbdt_margin(g, hi) == 1.0);
    assert_float_equal(gbdt_predict(g, hi), 1.0 / (1.0 + exp(-1.0)), 1e-7);
    gbdt_close(g);
}

static void test_missing_value_takes_default_direction(void **st)
{
    struct gbdt *l = must_load(model("binary:logistic", "5E-1", split_tree("[1,0,0]")));
    struct gbdt *r = must_load(model("binary:logistic", "5E-1", split_tree("[0,0,0]")));
    float miss[2] = {NAN, 0};

    (void)st;
    assert_true(gbdt_margin(l, miss) == -1.0);
    assert_true(gbdt_margin(r, miss) == 1.0);
    gbdt_close(l);
    gbdt_close(r);
}

static void test_default_left_as_bools_equals_ints(void **st)
{
    struct gbdt *b = must_load(model("binary:logistic", "5E-1", split_tree("[true,false,false]")));
    struct gbdt *f = must_load(model("binary:logistic", "5E-1", split_tree("[false,false,false]")));
    float miss[2] = {NAN, 0};

    (void)st;
    assert_true(gbdt_margin(b, miss) == -1.0);
    assert_true(gbdt_margin(f, miss) == 1.0);
    gbdt_close(b);
    gbdt_close(f);
}

/* xgboost 3.x writes base_score as a bracketed vector of one. */
static void test_bracketed_base_score_accepted(void **st)
{
    struct gbdt *h = must_load(model("binary:logistic", "[5E-1]", split_tree("[1,0,0]")));
    struct gbdt *q = must_load(model("binary:logistic", "[2.5E-1]", split_tree("[1,0,0]")));
    float hi[2] = {1, 0};

    (void)st;
    assert_float_equal(gbdt_base_score(h), 0.5, 1e-12);
    assert_float_equal(gbdt_margin(h, hi), 1.0, 1e-12);
    assert_float_equal(gbdt_base_score(q), 0.25, 1e-12);
    assert_float_equal(gbdt_margin(q, hi), 1.0 + log(0.25 / 0.75), 1e-6);
    gbdt_close(h);
    gbdt_close(q);
}

static void test_leaf_only_tree_adds_its_value(void **st)
{
    const char *leaf = "{\"left_children\":[-1],\"right_children\":[-1],\"split_indices\":[0],"
                       "\"split_conditions\":[0.25],\"default_left\":[0],\"base_weights\":[0]}";
    char trees[1024];
    struct gbdt *g;
    float x[2] = {0, 0};

    (void)st;
    snprintf(trees, sizeof(trees), "%s,%s", leaf, split_tree("[1,0,0]"));
    g = must_load(model("binary:logistic", "5E-1", trees));
    assert_int_equal(gbdt_num_trees(g), 2);
    assert_float_equal(gbdt_margin(g, x), 0.25 - 1.0, 1e-7);
    gbdt_close(g);
}

static void test_model_without_trees_predicts_base_score(void **st)
{
    struct gbdt *g = must_load(model("binary:logistic", "2E-1", ""));
    float x[2] = {0, 0};

    (void)st;
    assert_int_equal(gbdt_num_trees(g), 0);
    assert_float_equal(gbdt_predict(g, x), 0.2, 1e-7);
    gbdt_close(g);
}

static void test_malformed_json_refused_with_position(void **st)
{
    (void)st;
    assert_refused("{\"learner\": {\"objective\": ", "line 1");
    assert_refused("{\"learner\": 1, \"learner\": 2}", "bad JSON");
}

static void test_wrong_objective_refused_naming_it(void **st)
{
    (void)st;
    assert_refused(model("reg:squarederror", "5E-1", split_tree("[1,0,0]")), "reg:squarederror");
    assert_refused(model("multi:softprob", "5E-1", split_tree("[1,0,0]")), "multi:softprob");
}

static void test_not_an_xgboost_model_refused(void **st)
{
    (void)st;
    assert_refused("{\"format\":\"streamml-scorecard\"}", "learner");
}

static void test_child_index_out_of_range_refused(void **st)
{
    const char *t = "{\"left_children\":[1,-1,-1],\"right_children\":[7,-1,-1],"
                    "\"split_indices\":[0,0,0],\"split_conditions\":[0.5,-1,1],"
                    "\"default_left\":[1,0,0]}";

    (void)st;
    assert_refused(model("binary:logistic", "5E-1", t), "right child 7 out of range");
}

static void test_cycle_refused(void **st)
{
    const char *t = "{\"left_children\":[1,0,-1],\"right_children\":[2,2,-1],"
                    "\"split_indices\":[0,0,0],\"split_conditions\":[0.5,0.5,1],"
                    "\"default_left\":[1,0,0]}";

    (void)st;
    assert_refused(model("binary:logistic", "5E-1", t), "already reached");
}

static void test_feature_index_beyond_num_feature_refused(void **st)
{
    const char *t = "{\"left_children\":[1,-1,-1],\"right_children\":[2,-1,-1],"
                    "\"split_indices\":[2,0,0],\"split_conditions\":[0.5,-1,1],"
                    "\"default_left\":[1,0,0]}";

    (void)st;
    assert_refused(model("binary:logistic", "5E-1", t), "split_indices 2 not below num_feature 2");
}

static void test_arrays_of_unequal_length_refused(void **st)
{
    const char *t = "{\"left_children\":[1,-1,-1],\"right_children\":[2,-1],"
                    "\"split_indices\":[0,0,0],\"split_conditions\":[0.5,-1,1],"
                    "\"default_left\":[1,0,0]}";

    (void)st;
    assert_refused(model("binary:logistic", "5E-1", t), "trees[0].right_children");
}

static void test_categorical_split_refused(void **st)
{
    const char *t = "{\"left_children\":[1,-1,-1],\"right_children\":[2,-1,-1],"
                    "\"split_indices\":[0,0,0],\"split_conditions\":[0.5,-1,1],"
                    "\"default_left\":[1,0,0],\"split_type\":[1,0,0]}";

    (void)st;
    assert_refused(model("binary:logistic", "5E-1", t), "categorical");
}

static void test_base_score_outside_0_1_refused(void **st)
{
    (void)st;
    assert_refused(model("binary:logistic", "1.5", split_tree("[1,0,0]")), "base_score");
    assert_refused(model("binary:logistic", "[5E-1,3E-1]", split_tree("[1,0,0]")), "base_score");
}

static void test_multi_output_tree_info_refused(void **st)
{
    const char *m = "{\"learner\":{\"objective\":{\"name\":\"binary:logistic\"},"
                    "\"learner_model_param\":{\"base_score\":\"0.5\",\"num_feature\":\"2\"},"
                    "\"gradient_booster\":{\"name\":\"gbtree\",\"model\":{\"tree_info\":[1],"
                    "\"trees\":[" SPLIT_TREE "]}}}}";
    char buf[1024];

    (void)st;
    snprintf(buf, sizeof(buf), m, "[1,0,0]");
    assert_refused(buf, "tree_info[0]");
}

static void test_duplicate_feature_names_refused(void **st)
{
    const char *m = "{\"learner\":{\"objective\":{\"name\":\"binary:logistic\"},"
                    "\"feature_names\":[\"a\",\"a\"],"
                    "\"learner_model_param\":{\"base_score\":\"0.5\",\"num_feature\":\"2\"},"
                    "\"gradient_booster\":{\"name\":\"gbtree\",\"model\":{\"trees\":[]}}}}";

    (void)st;
    assert_refused(m, "\"a\" appears twice");
}

/* Writes bytes to a temporary file with the given suffix; returns its path. */
static const char *temp_file(const char *suffix, const void *bytes, size_t n)
{
    static char path[64];
    int fd;

    snprintf(path, sizeof(path), "/tmp/streamml-gbdt-XXXXXX%s", suffix);
    fd = mkstemps(path, (int)strlen(suffix));
    assert_true(fd >= 0);
    assert_int_equal(write(fd, bytes, n), (ssize_t)n);
    close(fd);
    return path;
}

/* save_model("m.ubj") output begins '{', 'L', int64 length, key... */
static void test_ubjson_content_refused_with_resave_hint(void **st)
{
    static const char ubj[] = "{L\0\0\0\0\0\0\0\x07learner{L";
    const char *path = temp_file(".json", ubj, sizeof(ubj) - 1);
    struct err e = {0};

    (void)st;
    assert_null(gbdt_open(path, &e));
    assert_non_null(strstr(e.msg, "UBJSON"));
    assert_non_null(strstr(e.msg, "re-save with save_model('model.json')"));
    assert_non_null(strstr(e.msg, path));
    unlink(path);
}

static void test_ubj_extension_refused_with_resave_hint(void **st)
{
    const char *json = model("binary:logistic", "5E-1", split_tree("[1,0,0]"));
    const char *path = temp_file(".ubj", json, strlen(json));
    struct err e = {0};

    (void)st;
    assert_null(gbdt_open(path, &e));
    assert_non_null(strstr(e.msg, "save_model('model.json')"));
    unlink(path);
}

static void test_binary_model_refused_with_resave_hint(void **st)
{
    static const char bin[] = "binf\0\0\0\x3f\x01\0\0\0";
    const char *path = temp_file(".bin", bin, sizeof(bin) - 1);
    struct err e = {0};

    (void)st;
    assert_null(gbdt_open(path, &e));
    assert_non_null(strstr(e.msg, "save_model('model.json')"));
    unlink(path);
}

static void test_missing_file_error_names_path(void **st)
{
    struct err e = {0};

    (void)st;
    assert_null(gbdt_open("/nonexistent/model.json", &e));
    assert_non_null(strstr(e.msg, "/nonexistent/model.json"));
    assert_int_equal(e.code, ERR_CONFIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_named_model_matches_xgboost_predict_proba),
        cmocka_unit_test(test_named_model_margin_matches_xgboost),
        cmocka_unit_test(test_unnamed_model_matches_xgboost),
        cmocka_unit_test(test_non_default_base_score_matches_xgboost),
        cmocka_unit_test(test_pruned_model_with_deleted_nodes_matches_xgboost),
        cmocka_unit_test(test_batch_equals_row_by_row),
        cmocka_unit_test(test_feature_names_read_when_present),
        cmocka_unit_test(test_feature_names_null_when_absent),
        cmocka_unit_test(test_trees_depth_and_base_score_reported),
        cmocka_unit_test(test_split_goes_left_below_threshold_right_at_it),
        cmocka_unit_test(test_missing_value_takes_default_direction),
        cmocka_unit_test(test_default_left_as_bools_equals_ints),
        cmocka_unit_test(test_bracketed_base_score_accepted),
        cmocka_unit_test(test_leaf_only_tree_adds_its_value),
        cmocka_unit_test(test_model_without_trees_predicts_base_score),
        cmocka_unit_test(test_malformed_json_refused_with_position),
        cmocka_unit_test(test_wrong_objective_refused_naming_it),
        cmocka_unit_test(test_not_an_xgboost_model_refused),
        cmocka_unit_test(test_child_index_out_of_range_refused),
        cmocka_unit_test(test_cycle_refused),
        cmocka_unit_test(test_feature_index_beyond_num_feature_refused),
        cmocka_unit_test(test_arrays_of_unequal_length_refused),
        cmocka_unit_test(test_categorical_split_refused),
        cmocka_unit_test(test_base_score_outside_0_1_refused),
        cmocka_unit_test(test_multi_output_tree_info_refused),
        cmocka_unit_test(test_duplicate_feature_names_refused),
        cmocka_unit_test(test_ubjson_content_refused_with_resave_hint),
        cmocka_unit_test(test_ubj_extension_refused_with_resave_hint),
        cmocka_unit_test(test_binary_model_refused_with_resave_hint),
        cmocka_unit_test(test_missing_file_error_names_path),
    };
    return cmocka_run_group_tests_name("gbdt", tests, NULL, NULL);
}
