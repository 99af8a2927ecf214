/* Exact TreeSHAP (common/treeshap.c) and `streamml predict --contribs`.
 *
 * Parity: contributions equal xgboost's pred_contribs to 1e-5 on the models
 * made by tests/fixtures/make_shap_fixtures.py (xgboost 1.7.4, trained and
 * explained with missing values, features split several times per path;
 * depth 6 and depth 12, the two kernels). Each row sums to the margin.
 * Refusals: a model without covers is refused with the tree and node.
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
#include "stack.h"
#include "treeshap.h"

#define FIX "tests/fixtures/"
#define NF 5 /* features of the fixture models */
#define MAX_ROWS 100
#define TOL 1e-5

/* One fixture: inputs, xgboost's contributions (NF + bias) and margin. */
struct cases {
    float x[MAX_ROWS][NF];
    double phi[MAX_ROWS][NF + 1], margin[MAX_ROWS];
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
    char line[4096];

    assert_non_null(f);
    assert_non_null(fgets(line, sizeof(line), f)); /* header */
    c->n = 0;
    while (c->n < MAX_ROWS && fgets(line, sizeof(line), f)) {
        char *p = line;
        for (int i = 0; i < NF; i++)
            c->x[c->n][i] = (float)cell(&p);
        for (int i = 0; i <= NF; i++)
            c->phi[c->n][i] = cell(&p);
        c->margin[c->n] = cell(&p);
        c->n++;
    }
    fclose(f);
    assert_true(c->n >= 50);
}

static struct gbdt *must_open(const char *path)
{
    struct err e = {0};
    struct gbdt *g = gbdt_open(path, &e);

    if (!g)
        fail_msg("%s", e.msg);
    return g;
}

/* Our values against xgboost's on every row of fixture name; max |diff|. */
static double max_diff(const char *name, size_t min_depth)
{
    char model[256], csv[256];
    struct cases *c = malloc(sizeof(*c));
    struct err e = {0};
    struct gbdt *g;
    struct treeshap *ts;
    struct treeshap_ws *w;
    double phi[NF + 1], worst = 0;

    assert_non_null(c);
    snprintf(model, sizeof(model), FIX "xgb_shap_%s.json", name);
    snprintf(csv, sizeof(csv), FIX "xgb_shap_%s_cases.csv", name);
    read_cases(csv, c);
    g = must_open(model);
    assert_true(gbdt_max_depth(g) >= min_depth);
    ts = treeshap_open(g, &e);
    if (!ts)
        fail_msg("%s", e.msg);
    w = treeshap_ws_open(ts);
    assert_non_null(w);
    assert_int_equal(treeshap_num_values(ts), NF + 1);
    for (int r = 0; r < c->n; r++) {
        double sum = 0;
        treeshap_explain(ts, w, c->x[r], phi);
        for (int i = 0; i <= NF; i++) {
            double d = fabs(phi[i] - c->phi[r][i]);
            if (d > worst)
                worst = d;
            if (d > TOL)
                fprintf(stderr, "%s row %d value %d: ours %.9g xgboost %.9g\n", name, r, i, phi[i],
                        c->phi[r][i]);
            sum += phi[i];
        }
        assert_true(fabs(sum - gbdt_margin(g, c->x[r])) < TOL);
        assert_true(fabs(sum - c->margin[r]) < TOL);
    }
    treeshap_ws_close(w);
    treeshap_close(ts);
    gbdt_close(g);
    free(c);
    return worst;
}

static void test_contribs_equal_xgboost_depth6(void **state)
{
    (void)state;
    double d = max_diff("d6", 6);
    printf("depth 6: max |ours - xgboost| = %.3g\n", d);
    assert_true(d < TOL);
}

static void test_contribs_equal_xgboost_depth12(void **state)
{
    (void)state;
    double d = max_diff("d12", 9);
    printf("depth 12: max |ours - xgboost| = %.3g\n", d);
    assert_true(d < TOL);
}

/* A stump with one cover missing: refused, naming tree and node. */
static void test_model_without_covers_is_refused(void **state)
{
    static const char json[] =
        "{\"learner\":{\"learner_model_param\":{\"base_score\":\"5E-1\",\"num_feature\":\"2\"},"
        "\"objective\":{\"name\":\"binary:logistic\"},\"gradient_booster\":{\"name\":\"gbtree\","
        "\"model\":{\"gbtree_model_param\":{\"num_trees\":\"1\"},\"tree_info\":[0],\"trees\":[{"
        "\"left_children\":[1,-1,-1],\"right_children\":[2,-1,-1],\"split_indices\":[1,0,0],"
        "\"split_conditions\":[0.5,-0.2,0.3],\"default_left\":[1,0,0]}]}}}}";
    struct err e = {0};
    struct gbdt *g = gbdt_open_string(json, &e);

    (void)state;
    if (!g)
        fail_msg("%s", e.msg);
    assert_null(treeshap_open(g, &e));
    assert_int_equal(e.code, ERR_CONFIG);
    assert_non_null(strstr(e.msg, "tree 0 node 0: sum_hessian"));
    gbdt_close(g);
}

/* streamml predict --contribs: header of feature names then bias, one row
 * per input row, equal to xgboost's. */
static void test_predict_contribs_cli(void **state)
{
    char dir[] = "/tmp/treeshap.XXXXXX", in[300], out[300], line[4096];
    struct cases *c = malloc(sizeof(*c));
    FILE *f, *src;
    int rows = 0;

    (void)state;
    assert_non_null(c);
    assert_non_null(mkdtemp(dir));
    snprintf(in, sizeof(in), "%s/in.csv", dir);
    snprintf(out, sizeof(out), "%s/out.csv", dir);
    read_cases(FIX "xgb_shap_d6_cases.csv", c);
    /* the cases' first NF columns are the inputs */
    src = fopen(FIX "xgb_shap_d6_cases.csv", "r");
    f = fopen(in, "w");
    assert_non_null(src);
    assert_non_null(f);
    while (fgets(line, sizeof(line), src)) {
        char *p = line;
        for (int i = 0; i < NF; i++)
            p += strcspn(p, ",") + 1;
        p[-1] = '\0';
        fprintf(f, "%s\n", line);
    }
    fclose(src);
    fclose(f);
    {
        char *const argv[] = {(char *)test_bin("streamml"),
                              "predict",
                              "--model",
                              FIX "xgb_shap_d6.json",
                              "-i",
                              in,
                              "--contribs",
                              NULL};
        char cmd[1024];
        snprintf(cmd, sizeof(cmd), "%s predict --model %s -i %s --contribs > %s", argv[0], argv[3],
                 in, out);
        assert_int_equal(system(cmd), 0);
    }
    f = fopen(out, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof(line), f));
    assert_string_equal(line, "g_0,g_1,g_2,g_3,g_4,bias\n");
    while (fgets(line, sizeof(line), f)) {
        char *p = line;
        assert_true(rows < c->n);
        for (int i = 0; i <= NF; i++)
            assert_true(fabs(cell(&p) - c->phi[rows][i]) < TOL);
        rows++;
    }
    assert_int_equal(rows, c->n);
    fclose(f);
    unlink(in);
    unlink(out);
    rmdir(dir);
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_contribs_equal_xgboost_depth6),
        cmocka_unit_test(test_contribs_equal_xgboost_depth12),
        cmocka_unit_test(test_model_without_covers_is_refused),
        cmocka_unit_test(test_predict_contribs_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
