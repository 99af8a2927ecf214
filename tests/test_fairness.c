/* Fairness by outcome (common/fairness.c): per-group approval rate, TPR and
 * FPR of the adverse decision, disparate impact against the best-approved
 * group and the 80% rule, on a hand-counted table; unknown labels count for
 * approval only; too many groups are refused by name. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "fairness.h"

static void test_rates_disparate_impact_and_the_80_percent_rule(void **st)
{
    /* group, approved, label */
    static const struct {
        const char *g;
        int a, y;
    } rows[] = {
        {"owner", 1, 0}, {"owner", 1, 0}, {"owner", 1, 1}, {"owner", 0, 1}, {"owner", 1, -1},
        {"rent", 1, 0},  {"rent", 0, 0},  {"rent", 0, 1},  {"rent", 0, 1},  {"rent", 1, -1},
    };
    struct fair f;
    struct err e = {0};

    (void)st;
    fair_init(&f);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        assert_int_equal(fair_add(&f, rows[i].g, rows[i].a, rows[i].y, &e), ERR_OK);
    fair_finish(&f);
    assert_int_equal(f.n_groups, 2);
    /* owner: 4 of 5 approved; bad 2, 1 flagged; good 2, 0 flagged */
    assert_string_equal(f.g[0].name, "owner");
    assert_float_equal(f.g[0].approval, 0.8, 1e-12);
    assert_float_equal(f.g[0].tpr, 0.5, 1e-12);
    assert_float_equal(f.g[0].fpr, 0.0, 1e-12);
    assert_float_equal(f.g[0].disparate_impact, 1.0, 1e-12);
    /* rent: 2 of 5 approved; bad 2, 2 flagged; good 2, 1 flagged */
    assert_float_equal(f.g[1].approval, 0.4, 1e-12);
    assert_float_equal(f.g[1].tpr, 1.0, 1e-12);
    assert_float_equal(f.g[1].fpr, 0.5, 1e-12);
    assert_float_equal(f.g[1].disparate_impact, 0.5, 1e-12);
    assert_int_equal(f.worst, 1);
    assert_true(fair_violates(&f));
}

static void test_unlabelled_group_has_undefined_rates_and_passes_when_equal(void **st)
{
    struct fair f;
    struct err e = {0};

    (void)st;
    fair_init(&f);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(fair_add(&f, "a", i % 2, -1, &e), ERR_OK);
        assert_int_equal(fair_add(&f, "b", i % 2, -1, &e), ERR_OK);
    }
    fair_finish(&f);
    assert_true(isnan(f.g[0].tpr) && isnan(f.g[0].fpr));
    assert_float_equal(f.g[1].disparate_impact, 1.0, 1e-12);
    assert_false(fair_violates(&f));
}

static void test_too_many_groups_are_refused_by_name(void **st)
{
    struct fair f;
    struct err e = {0};
    char name[16];

    (void)st;
    fair_init(&f);
    for (int i = 0; i < FAIR_MAX_GROUPS; i++) {
        snprintf(name, sizeof(name), "g%d", i);
        assert_int_equal(fair_add(&f, name, 1, 0, &e), ERR_OK);
    }
    assert_int_equal(fair_add(&f, "one-too-many", 1, 0, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "one-too-many"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rates_disparate_impact_and_the_80_percent_rule),
        cmocka_unit_test(test_unlabelled_group_has_undefined_rates_and_passes_when_equal),
        cmocka_unit_test(test_too_many_groups_are_refused_by_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
