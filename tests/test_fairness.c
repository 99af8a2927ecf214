/* Fairness by outcome (common/monitor/fairness.c): per-group approval rate, TPR and
 * FPR of the adverse decision, disparate impact against the best-approved
 * group and the 80% rule, on a hand-counted table; unknown labels count for
 * approval only; too many groups are refused by name. The live outcome
 * counts (fair_outcomes_*): a ring of slices summed into TPR/FPR per
 * group, a cleared slice forgotten, the TPR and FPR gaps between groups. */
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

#include "fairness.h"
#include "stack.h"

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

/* The live monitor's window counts (fair_add_counts) with a minimum group
 * size: a small group's rate is shown but it neither sets the highest rate
 * nor counts as the lowest; one group left is no ratio at all. */
static void test_min_group_leaves_small_groups_out(void **st)
{
    struct fair f;
    struct err e = {0};

    (void)st;
    fair_init(&f);
    assert_int_equal(fair_add_counts(&f, "tiny", 5, 5, &e), ERR_OK); /* 100%, too few */
    assert_int_equal(fair_add_counts(&f, "rent", 100, 30, &e), ERR_OK);
    assert_int_equal(fair_add_counts(&f, "owner", 100, 60, &e), ERR_OK);
    fair_finish_min(&f, 30);
    assert_int_equal(f.eligible, 2);
    assert_float_equal(f.g[0].approval, 1.0, 1e-12);
    assert_true(isnan(f.g[0].disparate_impact));
    assert_float_equal(f.g[1].disparate_impact, 0.5, 1e-12); /* 0.3 / 0.6, not / 1.0 */
    assert_int_equal(f.worst, 1);
    assert_float_equal(fair_disparate_impact(&f), 0.5, 1e-12);
    fair_finish_min(&f, 101);
    assert_true(isnan(fair_disparate_impact(&f)));
    fair_finish(&f); /* the report's: every group counts */
    assert_float_equal(fair_disparate_impact(&f), 0.3, 1e-12);
}

/* streamml report --fairness-field: groups from a field of the predictions,
 * labels joined by event id, a redelivered duplicate counted once, the
 * failing group flagged in the summary and the HTML. */
static void test_report_fairness_section(void **st)
{
    char dir[] = "/tmp/fair.XXXXXX", p[3][300], out[300], cmd[2048];
    static char buf[1 << 20];
    FILE *f;
    size_t n;

    (void)st;
    assert_non_null(mkdtemp(dir));
    snprintf(p[0], sizeof(p[0]), "%s/p.jsonl", dir);
    snprintf(p[1], sizeof(p[1]), "%s/l.csv", dir);
    snprintf(p[2], sizeof(p[2]), "%s/o.html", dir);
    snprintf(out, sizeof(out), "%s/summary.txt", dir);
    f = fopen(p[0], "w");
    assert_non_null(f);
    fputs("{\"event_id\":\"a\",\"probability\":0.1,\"decision\":\"approve\",\"home\":\"own\"}\n"
          "{\"event_id\":\"b\",\"probability\":0.7,\"decision\":\"decline\",\"home\":\"rent\"}\n"
          "{\"event_id\":\"b\",\"probability\":0.7,\"decision\":\"decline\",\"home\":\"rent\"}\n"
          "{\"event_id\":\"c\",\"probability\":0.2,\"decision\":\"approve\",\"home\":\"rent\"}\n"
          "{\"event_id\":\"d\",\"probability\":0.5,\"decision\":\"review\",\"home\":\"own\"}\n"
          "{\"event_id\":\"e\",\"probability\":0.1,\"decision\":\"approve\",\"home\":\"own\"}\n"
          "{\"event_id\":\"f\",\"probability\":0.9,\"decision\":\"decline\",\"home\":\"rent\"}\n",
          f);
    fclose(f);
    f = fopen(p[1], "w");
    assert_non_null(f);
    fputs("event_id,label\na,0\nb,1\nc,0\nd,1\ne,0\nf,0\n", f);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "%s report -p %s -l %s --fairness-field home -o %s > %s 2>&1",
             test_bin("streamml"), p[0], p[1], p[2], out);
    assert_int_equal(system(cmd), 0);
    f = fopen(out, "r");
    assert_non_null(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    assert_non_null(strstr(buf, "fairness home=own: n 3  approval 0.666667  tpr 1.000000  fpr "
                                "0.000000  disparate_impact 1.000000\n"));
    assert_non_null(strstr(buf, "fairness home=rent: n 3  approval 0.333333  tpr 1.000000  fpr "
                                "0.500000  disparate_impact 0.500000  FAIL (80% rule)\n"));
    f = fopen(p[2], "r");
    assert_non_null(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    assert_non_null(strstr(buf, "<h2>Fairness by outcome</h2>"));
    assert_non_null(strstr(buf, "0.500 FAIL"));
    for (int i = 0; i < 3; i++)
        unlink(p[i]);
    unlink(out);
    rmdir(dir);
}

static void test_outcome_ring_and_gaps(void **st)
{
    struct fair_outcomes *o = fair_outcomes_open(2);
    struct fair f;
    size_t lo, hi;
    char name[16];

    (void)st;
    assert_non_null(o);
    /* slice 0: A 4 bad (1 flagged), 4 good (3 flagged); B 4 bad (4 flagged), 4 good (0) */
    for (int i = 0; i < 4; i++) {
        assert_int_equal(fair_outcomes_add(o, 0, "A", i != 0, 1), 0);
        assert_int_equal(fair_outcomes_add(o, 0, "A", i == 0, 0), 0);
        assert_int_equal(fair_outcomes_add(o, 0, "B", 0, 1), 0);
        assert_int_equal(fair_outcomes_add(o, 0, "B", 1, 0), 0);
    }
    /* slice 1: C, one bad flagged (under min_n 2 below) */
    assert_int_equal(fair_outcomes_add(o, 1, "C", 0, 1), 0);
    fair_outcomes_sum(o, &f);
    assert_int_equal(f.n_groups, 3);
    assert_string_equal(f.g[0].name, "A");
    assert_true(fabs(f.g[0].tpr - 0.25) < 1e-12 && fabs(f.g[0].fpr - 0.75) < 1e-12);
    assert_true(fabs(f.g[1].tpr - 1) < 1e-12 && fabs(f.g[1].fpr - 0) < 1e-12);
    assert_true(isnan(f.g[2].fpr));
    assert_true(fabs(fair_gap(&f, 0, 2, &lo, &hi) - 0.75) < 1e-12);
    assert_int_equal(lo, 0);
    assert_int_equal(hi, 1);
    assert_true(fabs(fair_gap(&f, 1, 2, &lo, &hi) - 0.75) < 1e-12);
    assert_int_equal(hi, 0); /* A's good applicants flagged most */
    assert_true(fabs(fair_gap(&f, 0, 1, &lo, &hi) - 0.75) < 1e-12); /* C's TPR 1 ties B's */
    /* the slice of A and B reused: only C is left, one group: no gap */
    fair_outcomes_clear(o, 0);
    fair_outcomes_sum(o, &f);
    assert_int_equal(f.g[0].bad + f.g[1].bad, 0);
    assert_true(isnan(fair_gap(&f, 0, 1, &lo, &hi)));
    /* a 17th group is not counted */
    for (int k = 3; k < FAIR_OUT_GROUPS; k++) {
        snprintf(name, sizeof(name), "g%d", k);
        assert_int_equal(fair_outcomes_add(o, 1, name, 1, 0), 0);
    }
    assert_int_equal(fair_outcomes_add(o, 1, "one-more", 1, 0), 1);
    fair_outcomes_close(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rates_disparate_impact_and_the_80_percent_rule),
        cmocka_unit_test(test_unlabelled_group_has_undefined_rates_and_passes_when_equal),
        cmocka_unit_test(test_too_many_groups_are_refused_by_name),
        cmocka_unit_test(test_min_group_leaves_small_groups_out),
        cmocka_unit_test(test_report_fairness_section),
        cmocka_unit_test(test_outcome_ring_and_gaps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
