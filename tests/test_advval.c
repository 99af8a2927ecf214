/* Adversarial validation (common/advval.c): the cross-validated AUC of the
 * training-vs-live classifier equals sklearn's LogisticRegression on the
 * same one-hot decile design and the same folds, fold by fold
 * (tests/fixtures/make_advval_fixtures.py); the shifted feature and the one
 * whose missingness changed come first; identical data scores about 0.5;
 * bad input is refused. */
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
#include <unistd.h>

#include "advval.h"
#include "stack.h"

static float *rows(json_t *a, size_t *n, size_t *nf)
{
    float *x;

    *n = json_array_size(a);
    *nf = json_array_size(json_array_get(a, 0));
    x = malloc(*n * *nf * sizeof(float));
    assert_non_null(x);
    for (size_t i = 0; i < *n; i++)
        for (size_t j = 0; j < *nf; j++) {
            json_t *c = json_array_get(json_array_get(a, i), j);
            x[i * *nf + j] = json_is_null(c) ? NAN : (float)json_number_value(c);
        }
    return x;
}

static void test_auc_equals_sklearn_on_the_same_folds(void **st)
{
    json_error_t je;
    json_t *r = json_load_file("tests/fixtures/advval_ref.json", 0, &je);
    size_t nt, nl, nf, nf2;
    float *train, *live;
    struct advval_result res;
    struct err e = {0};

    (void)st;
    assert_non_null(r);
    train = rows(json_object_get(r, "train"), &nt, &nf);
    live = rows(json_object_get(r, "live"), &nl, &nf2);
    assert_int_equal(nf, nf2);
    assert_int_equal(advval_run(train, nt, live, nl, nf, &res, &e), ERR_OK);
    for (int k = 0; k < ADVVAL_FOLDS; k++) {
        double want = json_number_value(json_array_get(json_object_get(r, "fold_auc"), (size_t)k));
        printf("fold %d: ours %.6f sklearn %.6f\n", k, res.fold_auc[k], want);
        assert_true(fabs(res.fold_auc[k] - want) < 1e-4);
    }
    assert_true(fabs(res.auc - json_number_value(json_object_get(r, "auc"))) < 1e-4);
    assert_true(res.auc > 0.6); /* the seed's WARNING level */
    /* feature 1 shifted, feature 2's missingness changed */
    assert_int_equal(res.top[0], 1);
    assert_int_equal(res.top[1], 2);
    for (int k = 0; k < res.n_top; k++) {
        double want =
            json_number_value(json_array_get(json_object_get(r, "separation"), (size_t)res.top[k]));
        assert_true(fabs(res.separation[k] - want) < 1e-9);
    }
    free(train);
    free(live);
    json_decref(r);
}

static void test_same_distribution_scores_about_one_half(void **st)
{
    enum { N = 600, NF = 3 };
    static float a[N * NF], b[N * NF];
    struct advval_result res;
    struct err e = {0};

    (void)st;
    srand(7);
    for (size_t i = 0; i < N * NF; i++) {
        a[i] = (float)rand() / RAND_MAX;
        b[i] = (float)rand() / RAND_MAX;
    }
    assert_int_equal(advval_run(a, N, b, N, NF, &res, &e), ERR_OK);
    printf("same distribution: AUC %.3f\n", res.auc);
    assert_true(fabs(res.auc - 0.5) < 0.05);
}

static void test_bad_input_is_refused(void **st)
{
    float a[10 * 2] = {0}, b[10 * 2] = {0};
    struct advval_result res;
    struct err e = {0};

    (void)st;
    assert_int_equal(advval_run(a, 3, b, 10, 2, &res, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "3 training"));
    b[7] = INFINITY;
    assert_int_equal(advval_run(a, 10, b, 10, 2, &res, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "live row 3 feature 1"));
}

static void write_csv(const char *path, json_t *rows)
{
    FILE *f = fopen(path, "w");
    size_t nf = json_array_size(json_array_get(rows, 0));

    assert_non_null(f);
    fputs("event_id", f);
    for (size_t j = 0; j < nf; j++)
        fprintf(f, ",f%zu", j);
    fputs(",label\n", f);
    for (size_t i = 0; i < json_array_size(rows); i++) {
        fprintf(f, "e%zu", i);
        for (size_t j = 0; j < nf; j++) {
            json_t *c = json_array_get(json_array_get(rows, i), j);
            if (json_is_null(c))
                fputs(",", f);
            else
                fprintf(f, ",%.9g", json_number_value(c));
        }
        fputs(",0\n", f);
    }
    fclose(f);
}

/* streamml report --train-features --live-features: the section in the
 * HTML, WARNING above 0.6, the AUC on stdout equal to sklearn's. */
static void test_report_section_and_summary(void **st)
{
    json_error_t je;
    json_t *r = json_load_file("tests/fixtures/advval_ref.json", 0, &je);
    char dir[] = "/tmp/advval.XXXXXX", p[8][300], cmd[2048], line[512];
    FILE *f;
    double auc = -1;
    int html = 0;

    (void)st;
    assert_non_null(r);
    assert_non_null(mkdtemp(dir));
    for (int i = 0; i < 6; i++)
        snprintf(p[i], sizeof(p[i]), "%s/%s", dir,
                 (const char *[]){"train.csv", "live.csv", "p.jsonl", "l.csv", "out.html",
                                  "summary.txt"}[i]);
    write_csv(p[0], json_object_get(r, "train"));
    write_csv(p[1], json_object_get(r, "live"));
    f = fopen(p[2], "w");
    assert_non_null(f);
    for (int i = 0; i < 20; i++)
        fprintf(f, "{\"event_id\":\"x%d\",\"probability\":%.2f}\n", i, i / 20.0);
    fclose(f);
    f = fopen(p[3], "w");
    assert_non_null(f);
    fputs("event_id,label\n", f);
    for (int i = 0; i < 20; i++)
        fprintf(f, "x%d,%d\n", i, i % 3 == 0);
    fclose(f);
    snprintf(cmd, sizeof(cmd),
             "%s report -p %s -l %s --train-features %s --live-features %s -o %s > %s 2>&1",
             test_bin("streamml"), p[2], p[3], p[0], p[1], p[4], p[5]);
    if (system(cmd) != 0) {
        snprintf(cmd, sizeof(cmd), "cat %s", p[5]);
        assert_int_equal(system(cmd), 0);
        fail();
    }
    f = fopen(p[5], "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "adversarial validation: auc ", 28) == 0) {
            auc = strtod(line + 28, NULL);
            assert_non_null(strstr(line, "WARNING"));
        }
    fclose(f);
    assert_true(fabs(auc - json_number_value(json_object_get(r, "auc"))) < 1e-4);
    f = fopen(p[4], "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f))
        html |= strstr(line, "<h2>Adversarial validation</h2>") != NULL;
    fclose(f);
    assert_true(html);
    for (int i = 0; i < 6; i++)
        unlink(p[i]);
    rmdir(dir);
    json_decref(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auc_equals_sklearn_on_the_same_folds),
        cmocka_unit_test(test_same_distribution_scores_about_one_half),
        cmocka_unit_test(test_bad_input_is_refused),
        cmocka_unit_test(test_report_section_and_summary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
