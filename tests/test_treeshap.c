/* Exact TreeSHAP (common/models/treeshap.c) and `streamml predict --contribs`.
 *
 * Parity: contributions equal xgboost's pred_contribs to 1e-5 on the models
 * made by tests/fixtures/make_shap_fixtures.py (xgboost 1.7.4, trained and
 * explained with missing values, features split several times per path;
 * depth 6 and depth 12, the two kernels). Each row sums to the margin.
 * The pair kernel equals the node-at-a-time one it replaced on random
 * forests with missing values (differential).
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

/* ---- the pair kernel against the node-at-a-time one (issue 18) ---- */

#define RF_NF 4          /* few features: many split again on a path */
#define RF_MAX_NODES 511 /* a full tree of depth 8 */

struct rtree {
    int n, left[RF_MAX_NODES], right[RF_MAX_NODES], feat[RF_MAX_NODES], dleft[RF_MAX_NODES];
    double cond[RF_MAX_NODES], cover[RF_MAX_NODES];
};

static uint64_t g_rng = 88172645463325252ULL;
static double urand(void) /* xorshift64, [0, 1) */
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / 9007199254740992.0;
}

/* A random node with its subtree (preorder ids): thresholds on a coarse
 * grid (rows hit them exactly), random default directions, covers split
 * unevenly, leaves anywhere from depth 1. */
static int rand_node(struct rtree *t, int depth, int max_depth, double cover)
{
    int id = t->n++;

    t->cover[id] = cover;
    t->dleft[id] = urand() < 0.5;
    if (depth == max_depth || (depth > 0 && urand() < 0.25)) {
        t->left[id] = t->right[id] = -1;
        t->feat[id] = 0;
        t->cond[id] = (urand() - 0.5) * 0.6; /* leaf output */
        return id;
    }
    double u = 0.03 + 0.94 * urand();
    t->feat[id] = (int)(urand() * RF_NF);
    t->cond[id] = (double)((int)(urand() * 7) - 3) * 0.5;
    t->left[id] = rand_node(t, depth + 1, max_depth, cover * u);
    t->right[id] = rand_node(t, depth + 1, max_depth, cover * (1 - u));
    return id;
}

static void put_ints(char **p, const char *name, const int *v, int n)
{
    *p += sprintf(*p, "\"%s\":[", name);
    for (int i = 0; i < n; i++)
        *p += sprintf(*p, "%s%d", i ? "," : "", v[i]);
    *p += sprintf(*p, "],");
}

static void put_reals(char **p, const char *name, const double *v, int n)
{
    *p += sprintf(*p, "\"%s\":[", name);
    for (int i = 0; i < n; i++)
        *p += sprintf(*p, "%s%.9g", i ? "," : "", v[i]);
    *p += sprintf(*p, "]");
}

/* An xgboost JSON model of n_trees random trees up to max_depth deep. */
static char *rand_model(int n_trees, int max_depth)
{
    char *json = malloc((size_t)n_trees * 40000 + 1000), *p = json;
    struct rtree *t = malloc(sizeof(*t));

    assert_non_null(json);
    assert_non_null(t);
    p += sprintf(p,
                 "{\"learner\":{\"learner_model_param\":{\"base_score\":\"%.6f\","
                 "\"num_feature\":\"%d\"},\"objective\":{\"name\":\"binary:logistic\"},"
                 "\"gradient_booster\":{\"name\":\"gbtree\",\"model\":{\"tree_info\":[",
                 0.2 + 0.6 * urand(), RF_NF);
    for (int i = 0; i < n_trees; i++)
        p += sprintf(p, "%s0", i ? "," : "");
    p += sprintf(p, "],\"trees\":[");
    for (int i = 0; i < n_trees; i++) {
        t->n = 0;
        rand_node(t, 0, 1 + (int)(urand() * max_depth), 10 + 1000 * urand());
        p += sprintf(p, "%s{", i ? "," : "");
        put_ints(&p, "left_children", t->left, t->n);
        put_ints(&p, "right_children", t->right, t->n);
        put_ints(&p, "split_indices", t->feat, t->n);
        put_ints(&p, "default_left", t->dleft, t->n);
        put_reals(&p, "split_conditions", t->cond, t->n);
        *p++ = ',';
        put_reals(&p, "sum_hessian", t->cover, t->n);
        *p++ = '}';
    }
    sprintf(p, "]}}}}");
    free(t);
    return json;
}

/* The pair kernel (treeshap_explain, trees up to 8 deep) gives the
 * node-at-a-time kernel's values on 300 random forests (1-8 deep, 4
 * features split again and again on a path, 30% missing, values on the
 * thresholds), and every row still sums to the margin. */
static void test_pair_kernel_equals_reference_on_random_trees(void **state)
{
    double worst = 0, worst_sum = 0;
    long rows = 0;

    (void)state;
    for (int m = 0; m < 300; m++) {
        char *json = rand_model(1 + (int)(urand() * 12), 8);
        struct err e = {0};
        struct gbdt *g = gbdt_open_string(json, &e);
        struct treeshap *ts;
        struct treeshap_ws *w;

        if (!g)
            fail_msg("random model %d: %s", m, e.msg);
        ts = treeshap_open(g, &e);
        if (!ts)
            fail_msg("random model %d: %s", m, e.msg);
        w = treeshap_ws_open(ts);
        assert_non_null(w);
        for (int r = 0; r < 40; r++, rows++) {
            float x[RF_NF];
            double a[RF_NF + 1], b[RF_NF + 1], sum = 0;
            for (int i = 0; i < RF_NF; i++)
                x[i] = urand() < 0.3   ? NAN
                       : urand() < 0.3 ? (float)((int)(urand() * 7) - 3) * 0.5f
                                       : (float)((urand() - 0.5) * 4);
            treeshap_explain(ts, w, x, a);
            treeshap_explain_ref(ts, w, x, b);
            for (int i = 0; i <= RF_NF; i++) {
                double d = fabs(a[i] - b[i]);
                if (d > 1e-9)
                    fail_msg("random model %d (depth %zu) row %d value %d: pair %.12g, "
                             "reference %.12g",
                             m, gbdt_max_depth(g), r, i, a[i], b[i]);
                worst = fmax(worst, d);
                sum += a[i];
            }
            worst_sum = fmax(worst_sum, fabs(sum - gbdt_margin(g, x)));
        }
        assert_true(worst_sum < TOL);
        treeshap_ws_close(w);
        treeshap_close(ts);
        gbdt_close(g);
        free(json);
    }
    printf("pair vs reference kernel: %ld rows of 300 random forests, max |diff| %.3g, "
           "max |sum - margin| %.3g\n",
           rows, worst, worst_sum);
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
        cmocka_unit_test(test_pair_kernel_equals_reference_on_random_trees),
        cmocka_unit_test(test_model_without_covers_is_refused),
        cmocka_unit_test(test_predict_contribs_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
