/* Monitoring (common/monitor/monitor.c, common/monitor/monitor_baseline.c).
 *
 * Reference values: decile edges, proportions, moments and PSI from numpy,
 * AUC from sklearn (tests/fixtures/make_monitor_fixtures.py ->
 * monitor_ref.json). The PSI of a window is checked through the whole
 * rolling monitor, not only mon_psi. Then the alert state machine: one
 * alert per level change, RESOLVED on return, hysteresis, each check.
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
#include <unistd.h>

#include "codec.h"
#include "monitor.h"

#define FIX "tests/fixtures/monitor_ref.json"

static json_t *g_ref;

static int load_ref(void **state)
{
    json_error_t je;

    (void)state;
    g_ref = json_load_file(FIX, 0, &je);
    if (!g_ref)
        fprintf(stderr, "%s: %s\n", FIX, je.text);
    return g_ref ? 0 : -1;
}

static int free_ref(void **state)
{
    (void)state;
    json_decref(g_ref);
    return 0;
}

/* JSON array of numbers/nulls -> doubles (null = NaN); malloc'd. */
static double *values(json_t *a, size_t *n)
{
    double *v = malloc((json_array_size(a) + 1) * sizeof(double));
    json_t *x;
    size_t i;

    assert_non_null(v);
    json_array_foreach(a, i, x) v[i] = json_is_null(x) ? NAN : json_number_value(x);
    *n = json_array_size(a);
    return v;
}

static void assert_close(double got, double want, double tol, const char *what)
{
    if (!(fabs(got - want) <= tol * (1 + fabs(want)))) {
        fprintf(stderr, "%s: got %.17g, numpy %.17g\n", what, got, want);
        fail();
    }
}

static void default_opts(struct mon_opts *o)
{
    *o = (struct mon_opts){.window_events = 1000, .window_ms = 1000000, .slices = 1,
                           .min_events = 10, .psi_warn = 0.1, .psi_crit = 0.2,
                           .score_psi_warn = 0.1, .score_psi_crit = 0.2,
                           .score_mean_warn = 0.1, .score_mean_crit = 0.15,
                           .missing_warn = 0.1, .latency_warn_s = 0.1,
                           .latency_crit_s = 0.5, .error_warn = 0.01, .error_crit = 0.05,
                           .auc_warn = 0.05, .auc_crit = 0.1, .auc_window = 1000,
                           .auc_min_labels = 100, .hysteresis = 0.1};
}

static void test_dist_matches_numpy(void **state)
{
    json_t *c;
    size_t i;

    (void)state;
    json_array_foreach(json_object_get(g_ref, "psi_cases"), i, c) {
        size_t n, ne, np_;
        double *x = values(json_object_get(c, "expected"), &n);
        double *edges = values(json_object_get(c, "edges"), &ne);
        double *prop = values(json_object_get(c, "proportions"), &np_);
        struct mon_dist d;
        struct err e = {0};

        assert_int_equal(mon_dist_compute(x, n, &d, &e), ERR_OK);
        assert_int_equal(d.nedges, (int)ne);
        for (size_t k = 0; k < ne; k++)
            assert_close(d.edges[k], edges[k], 1e-12, "edge");
        for (size_t k = 0; k < np_; k++)
            assert_close(d.prop[k], prop[k], 1e-12, "proportion");
        assert_close(d.mean, json_number_value(json_object_get(c, "mean")), 1e-12, "mean");
        assert_close(d.std, json_number_value(json_object_get(c, "std")), 1e-10, "std");
        assert_close(d.min, json_number_value(json_object_get(c, "min")), 0, "min");
        assert_close(d.max, json_number_value(json_object_get(c, "max")), 0, "max");
        assert_close(d.missing_rate, json_number_value(json_object_get(c, "missing_rate")), 0,
                     "missing rate");
        free(x);
        free(edges);
        free(prop);
    }
}

static void test_psi_formula_matches_numpy(void **state)
{
    json_t *c;
    size_t i;

    (void)state;
    json_array_foreach(json_object_get(g_ref, "psi_cases"), i, c) {
        size_t n, na;
        double *e = values(json_object_get(c, "proportions"), &n);
        double *a = values(json_object_get(c, "actual_proportions"), &na);

        assert_int_equal(n, na);
        assert_close(mon_psi(e, a, n), json_number_value(json_object_get(c, "psi")), 1e-12,
                     json_string_value(json_object_get(c, "name")));
        free(e);
        free(a);
    }
}

/* One-feature monitor over the case's training sample. */
static struct mon *one_feature_monitor(const struct mon_opts *o, double *train, size_t n,
                                       const char *name)
{
    struct mon_baseline *b = mon_baseline_new("test", "model");
    struct mon_dist d;
    struct err e = {0};
    const char *names[] = {"other", name};
    struct mon *m;

    assert_non_null(b);
    assert_int_equal(mon_dist_compute(train, n, &d, &e), ERR_OK);
    assert_int_equal(mon_baseline_add(b, name, &d, &e), ERR_OK);
    m = mon_open(o, b, names, 2, &e);
    if (!m)
        fprintf(stderr, "mon_open: %s\n", e.msg);
    assert_non_null(m);
    return m;
}

static void feed(struct mon *m, const double *v, size_t n, int64_t t0)
{
    for (size_t i = 0; i < n; i++) {
        float x[2] = {0, (float)v[i]};
        mon_observe(m, x, NAN, 1000, 0, t0 + (int64_t)i);
    }
}

static double snapshot_psi(const struct mon *m, double *missing)
{
    double psi[1], miss[1];
    struct mon_snapshot s = {.nfeat = 1, .psi = psi, .missing = miss};

    mon_snapshot(m, &s);
    if (missing)
        *missing = miss[0];
    return psi[0];
}

static void test_window_psi_matches_numpy(void **state)
{
    json_t *c;
    size_t i;

    (void)state;
    json_array_foreach(json_object_get(g_ref, "psi_cases"), i, c) {
        size_t n, na;
        double *train = values(json_object_get(c, "expected"), &n);
        double *act = values(json_object_get(c, "actual"), &na);
        struct mon_opts o;
        struct mon *m;

        default_opts(&o);
        o.window_events = (int64_t)na; /* one window = the actual sample */
        m = one_feature_monitor(&o, train, n, "f");
        feed(m, act, na, 1000);
        mon_tick(m, 1000 + (int64_t)na);
        assert_close(snapshot_psi(m, NULL), json_number_value(json_object_get(c, "psi")), 1e-12,
                     json_string_value(json_object_get(c, "name")));
        mon_close(m);
        free(train);
        free(act);
    }
}

static void test_auc_matches_sklearn(void **state)
{
    json_t *c;
    size_t i;

    (void)state;
    json_array_foreach(json_object_get(g_ref, "auc_cases"), i, c) {
        size_t n, nl;
        double *s = values(json_object_get(c, "scores"), &n);
        double *l = values(json_object_get(c, "labels"), &nl);
        int *y = malloc(n * sizeof(int));

        for (size_t k = 0; k < n; k++)
            y[k] = (int)l[k];
        assert_close(mon_auc(s, y, n), json_number_value(json_object_get(c, "auc")), 1e-12,
                     "auc");
        free(s);
        free(l);
        free(y);
    }
}

static void test_auc_one_class_is_nan(void **state)
{
    double s[3] = {0.1, 0.2, 0.3};
    int y[3] = {1, 1, 1};

    (void)state;
    assert_true(isnan(mon_auc(s, y, 3)));
}

/* ---- alert state machine ---- */

static double *normal_sample(size_t n, double mu, unsigned seed)
{
    double *v = malloc(n * sizeof(double));

    srand(seed);
    for (size_t i = 0; i < n; i += 2) {
        double u1 = (rand() + 1.0) / (RAND_MAX + 2.0), u2 = (rand() + 1.0) / (RAND_MAX + 2.0);
        double r = sqrt(-2 * log(u1));
        v[i] = mu + r * cos(2 * M_PI * u2);
        if (i + 1 < n)
            v[i + 1] = mu + r * sin(2 * M_PI * u2);
    }
    return v;
}

/* Feeds one full window from v and evaluates; returns the alerts made. */
static size_t window(struct mon *m, const double *v, size_t n, int64_t *t)
{
    size_t na;

    feed(m, v, n, *t);
    *t += (int64_t)n;
    na = mon_tick(m, *t);
    return na;
}

static void test_drift_alerts_once_and_resolves(void **state)
{
    double *train = normal_sample(5000, 0, 1), *same = normal_sample(1000, 0, 2);
    double *shifted = normal_sample(1000, 1.0, 3);
    struct mon_opts o;
    struct mon *m;
    const struct mon_alert *a;
    size_t n;
    int64_t t = 0;

    (void)state;
    default_opts(&o);
    m = one_feature_monitor(&o, train, 5000, "income");
    assert_int_equal(window(m, same, 1000, &t), 0);
    assert_int_equal(window(m, shifted, 1000, &t), 1);
    a = mon_alerts(m, &n);
    assert_int_equal(a[0].check, MON_DATA_DRIFT);
    assert_string_equal(a[0].feature, "income");
    assert_int_equal(a[0].from, MON_OK);
    assert_int_equal(a[0].to, MON_CRITICAL);
    assert_true(a[0].observed > 0.2);
    assert_true(a[0].threshold == 0.2);
    assert_int_equal(a[0].window_events, 1000);
    assert_true(mon_degraded(m));
    mon_alerts_clear(m);
    /* Still drifted: no new alert (no storm). */
    assert_int_equal(window(m, shifted, 1000, &t), 0);
    assert_int_equal(window(m, same, 1000, &t), 1);
    a = mon_alerts(m, &n);
    assert_int_equal(a[0].from, MON_CRITICAL);
    assert_int_equal(a[0].to, MON_OK);
    assert_false(mon_degraded(m));
    mon_alerts_clear(m);
    mon_close(m);
    free(train);
    free(same);
    free(shifted);
}

static void test_sliding_window_needs_drift_in_most_slices(void **state)
{
    double *train = normal_sample(5000, 0, 1), *same = normal_sample(1000, 0, 2);
    double *shifted = normal_sample(1000, 1.5, 3);
    struct mon_opts o;
    struct mon *m;
    int64_t t = 0;
    size_t n;

    (void)state;
    default_opts(&o);
    o.window_events = 1000;
    o.slices = 4; /* evaluated every 250 events over the last 1000 */
    m = one_feature_monitor(&o, train, 5000, "amount");
    for (int k = 0; k < 4; k++)
        assert_int_equal(window(m, same + 250 * k, 250, &t), 0);
    /* The first drifted slice is a quarter of the window: not yet critical. */
    window(m, shifted, 250, &t);
    assert_int_not_equal(mon_level_of(m, MON_DATA_DRIFT, 0), MON_CRITICAL);
    for (int k = 1; k < 4; k++)
        window(m, shifted + 250 * k, 250, &t);
    assert_int_equal(mon_level_of(m, MON_DATA_DRIFT, 0), MON_CRITICAL);
    mon_alerts(m, &n);
    assert_true(n >= 1 && n <= 2); /* OK -> (WARNING ->) CRITICAL, nothing more */
    mon_close(m);
    free(train);
    free(same);
    free(shifted);
}

static void test_hysteresis_holds_level_near_threshold(void **state)
{
    struct mon_opts o;
    struct mon_baseline *b = mon_baseline_new("t", "m");
    struct mon_dist d = {.missing_rate = 0, .count = 0, .mean = NAN};
    struct err e = {0};
    const char *names[] = {"f"};
    struct mon *m;
    int64_t t = 0;

    (void)state;
    default_opts(&o);
    o.window_events = 200;
    assert_int_equal(mon_baseline_add(b, "f", &d, &e), ERR_OK);
    m = mon_open(&o, b, names, 1, &e);
    assert_non_null(m);
    /* Missing rate 15% (> 10%): WARNING; then 9.5%: inside the hysteresis
     * band (> 9%), stays WARNING; then 5%: RESOLVED. Windows of 200. */
    for (int k = 0; k < 3; k++) {
        static const int nmiss[3] = {30, 19, 10};
        for (int rep = 0; rep < 3; rep++) {
            for (int i = 0; i < 200; i++) {
                float x[1] = {i < nmiss[k] ? NAN : 1.0f};
                mon_observe(m, x, NAN, 10, 0, t++);
            }
            mon_tick(m, t);
        }
        assert_int_equal(mon_level_of(m, MON_MISSING, 0), k < 2 ? MON_WARNING : MON_OK);
    }
    {
        size_t n;
        const struct mon_alert *a = mon_alerts(m, &n);
        assert_int_equal(n, 2);
        assert_int_equal(a[0].check, MON_MISSING);
        assert_int_equal(a[0].to, MON_WARNING);
        assert_int_equal(a[1].to, MON_OK);
    }
    mon_close(m);
}

static struct mon *score_monitor(struct mon_opts *o, double auc)
{
    struct mon_baseline *b = mon_baseline_new("t", "m");
    double *scores = normal_sample(2000, 0.3, 9);
    struct mon_dist d;
    struct err e = {0};
    struct mon *m;

    for (int i = 0; i < 2000; i++)
        scores[i] = fabs(scores[i]) * 0.3; /* mean ~0.11 > 0 */
    assert_int_equal(mon_dist_compute(scores, 2000, &d, &e), ERR_OK);
    mon_baseline_set_score(b, &d);
    mon_baseline_set_auc(b, auc, 2000);
    m = mon_open(o, b, NULL, 0, &e);
    assert_non_null(m);
    free(scores);
    return m;
}

static void test_score_mean_shift_is_critical(void **state)
{
    struct mon_opts o;
    struct mon *m;
    const struct mon_alert *a;
    size_t n, i;

    (void)state;
    default_opts(&o);
    o.window_events = 500;
    m = score_monitor(&o, NAN);
    for (int k = 0; k < 500; k++)
        mon_observe(m, NULL, 0.35, 10, 0, k);
    mon_tick(m, 500);
    a = mon_alerts(m, &n);
    for (i = 0; i < n && a[i].check != MON_SCORE_MEAN; i++)
        ;
    assert_true(i < n);
    assert_int_equal(a[i].to, MON_CRITICAL);
    assert_true(a[i].observed > a[i].threshold && a[i].threshold > a[i].baseline);
    assert_int_equal(mon_level_of(m, MON_SCORE_PSI, 0), MON_CRITICAL);
    mon_close(m);
}

static void test_latency_p99_and_error_rate(void **state)
{
    struct mon_opts o;
    struct mon *m;
    double p99;
    double psi[1], miss[1];
    struct mon_snapshot s = {.nfeat = 0, .psi = psi, .missing = miss};

    (void)state;
    default_opts(&o);
    o.window_events = 1000;
    m = score_monitor(&o, NAN);
    /* 2% of events take 200 ms (p99 > 100 ms: WARNING); 3% dead-lettered
     * and 1% degraded (error rate 4%: WARNING). */
    for (int k = 0; k < 1000; k++) {
        if (k % 100 < 3) {
            mon_observe_dead(m, k);
            continue;
        }
        mon_observe(m, NULL, 0.1, k % 100 < 5 ? 200000 : 2000, k % 100 == 5, k);
    }
    mon_tick(m, 1000);
    mon_snapshot(m, &s);
    p99 = s.latency_p99_s;
    assert_true(p99 >= 0.2 && p99 <= 0.2 * 1.125);
    assert_int_equal(mon_level_of(m, MON_LATENCY, 0), MON_WARNING);
    assert_close(s.error_rate, 0.04, 1e-12, "error rate");
    assert_int_equal(mon_level_of(m, MON_ERROR_RATE, 0), MON_WARNING);
    /* A constant score is far from the baseline's spread: score PSI is
     * CRITICAL, so the worker is DEGRADED. */
    assert_int_equal(mon_level_of(m, MON_SCORE_PSI, 0), MON_CRITICAL);
    assert_true(s.degraded);
    mon_close(m);
}

static void test_latency_histogram_bounds(void **state)
{
    uint32_t h[MON_LAT_BUCKETS] = {0};

    (void)state;
    for (int64_t us = 0; us < 100000000; us = us * 3 / 2 + 1) {
        int b = mon_lat_bucket(us);
        assert_true(mon_lat_upper_us(b) >= us);
        assert_true(b == 0 || mon_lat_upper_us(b - 1) < us);
        assert_true((double)mon_lat_upper_us(b) <= (double)us * 1.125 + 1);
    }
    for (int i = 1; i <= 1000; i++)
        h[mon_lat_bucket(i * 1000)]++; /* 1..1000 ms */
    assert_true(mon_lat_quantile(h, 0.99) >= 990000);
    assert_true(mon_lat_quantile(h, 0.99) <= 990000 * 1.125);
    assert_int_equal(mon_lat_bucket(INT64_MAX), MON_LAT_BUCKETS - 1);
}

static void test_auc_drop_raises_alert(void **state)
{
    struct mon_opts o;
    struct mon *m;
    const struct mon_alert *a;
    size_t n;

    (void)state;
    default_opts(&o);
    o.window_events = 200;
    m = score_monitor(&o, 0.80);
    /* Labels that show decay: scores no better than chance. */
    for (int k = 0; k < 400; k++) {
        mon_observe(m, NULL, 0.1, 10, 0, k);
        mon_observe_label(m, (k * 37 % 100) / 100.0, k % 3 == 0);
    }
    mon_tick(m, 400);
    assert_int_equal(mon_level_of(m, MON_AUC, 0), MON_CRITICAL);
    a = mon_alerts(m, &n);
    for (size_t i = 0; i < n; i++)
        if (a[i].check == MON_AUC) {
            assert_true(a[i].baseline == 0.80);
            assert_close(a[i].threshold, 0.72, 1e-12, "auc threshold");
            assert_true(a[i].observed < 0.72);
        }
    mon_close(m);
}

static void test_labels_after_the_stream_stops_are_evaluated(void **state)
{
    struct mon_opts o;
    struct mon *m;

    (void)state;
    default_opts(&o);
    o.window_events = 200;
    o.window_ms = 10000;
    m = score_monitor(&o, 0.80);
    for (int k = 0; k < 200; k++)
        mon_observe(m, NULL, 0.1, 10, 0, k);
    mon_tick(m, 200);
    assert_int_equal(mon_level_of(m, MON_AUC, 0), MON_OK);
    /* Input stopped; labels keep arriving. */
    for (int k = 0; k < 400; k++)
        mon_observe_label(m, (k * 37 % 100) / 100.0, k % 3 == 0);
    mon_tick(m, 5000);
    assert_int_equal(mon_level_of(m, MON_AUC, 0), MON_OK); /* not a slice time yet */
    mon_tick(m, 10300);
    assert_int_equal(mon_level_of(m, MON_AUC, 0), MON_CRITICAL);
    mon_close(m);
}

/* Groups from a category code; approval rates 60% vs 40%: disparate impact
 * 0.67 < 0.8 is WARNING; equal rates resolve it. Codes out of range and
 * small groups are not counted. */
static void test_fairness_disparate_impact(void **state)
{
    struct mon_opts o;
    struct mon_baseline *b = mon_baseline_new("t", "m");
    struct err e = {0};
    const char *names[] = {"amount", "marital_code"};
    double di[1], miss[1];
    struct mon_snapshot s = {.nfeat = 0, .psi = di, .missing = miss};
    struct mon *m;
    int64_t t = 0;

    (void)state;
    default_opts(&o);
    o.window_events = 1000;
    o.fair_feature = "marital_code";
    o.fair_warn = 0.8;
    o.fair_min_group = 30;
    m = mon_open(&o, b, names, 2, &e);
    assert_non_null(m);
    for (int rep = 0; rep < 2; rep++) {
        for (int i = 0; i < 1000; i++, t++) {
            int g = i % 2 ? 1 : 2;
            int ok = rep == 0 ? (i % 10) < (g == 1 ? 6 : 4) : (i / 2) % 2 == 0;
            float x[2] = {1, (float)g};
            if (i < 10) /* a code beyond the groups and a tiny group: ignored */
                x[1] = i < 5 ? 99.0f : 7.0f;
            mon_observe(m, x, NAN, 10, 0, t);
            mon_observe_decision(m, x, NULL, i < 5 ? 0 : ok);
        }
        mon_tick(m, t);
        mon_snapshot(m, &s);
        if (rep == 0) {
            assert_int_equal(mon_level_of(m, MON_FAIRNESS, 0), MON_WARNING);
            assert_true(s.disparate_impact > 0.6 && s.disparate_impact < 0.7);
        }
    }
    assert_int_equal(mon_level_of(m, MON_FAIRNESS, 0), MON_OK);
    assert_true(s.disparate_impact > 0.95);
    mon_close(m);
    o.fair_feature = "religion";
    assert_null(mon_open(&o, mon_baseline_new("t", "m"), names, 2, &e));
    assert_non_null(strstr(e.msg, "monitor.fairness.feature=religion"));
}

/* TPR/FPR gaps from labelled decisions (mon_observe_outcome): group A's
 * bad outcomes missed -> WARNING fairness_tpr naming it; outcomes that
 * follow the decisions in both groups -> RESOLVED. */
static void test_fairness_outcome_gaps(void **state)
{
    struct mon_opts o;
    const char *names[] = {"amount"};
    double psi[1], miss[1];
    struct mon_snapshot s = {.nfeat = 0, .psi = psi, .missing = miss};
    struct err e = {0};
    struct mon *m;
    size_t na;
    const struct mon_alert *a;
    int64_t t = 0;

    (void)state;
    default_opts(&o);
    o.window_events = 200;
    o.fair_label_field = "group";
    o.fair_tpr_gap = o.fair_fpr_gap = 0.2;
    o.fair_min_group = 20; /* 25 bad and 75 good labels a group */
    m = mon_open(&o, mon_baseline_new("t", "m"), names, 1, &e);
    assert_non_null(m);
    for (int rep = 0; rep < 2; rep++) {
        for (int i = 0; i < 200; i++, t++) {
            float x[1] = {1};
            int bad = (i / 2) % 4 == 0, approved = !bad;
            mon_observe(m, x, 0.5, 10, 0, t);
            /* rep 0: group A's bad outcomes were approved */
            mon_observe_outcome(m, i % 2 ? "A" : "B", rep == 0 && i % 2 ? 1 : approved, bad);
        }
        mon_tick(m, t);
        mon_snapshot(m, &s);
        a = mon_alerts(m, &na);
        assert_int_equal(na, 1);
        assert_int_equal(a[0].check, MON_TPR_GAP);
        if (rep == 0)
            assert_string_equal(a[0].feature, "group=A");
        assert_int_equal(a[0].to, rep == 0 ? MON_WARNING : MON_OK);
        assert_true(fabs(s.tpr_gap - (rep == 0 ? 1.0 : 0.0)) < 1e-12);
        assert_int_equal(s.nogroups, 2);
        mon_alerts_clear(m);
    }
    assert_int_equal(mon_level_of(m, MON_FPR_GAP, 0), MON_OK);
    mon_close(m);
}

static void test_time_closes_a_slice(void **state)
{
    double *train = normal_sample(2000, 0, 1), *shifted = normal_sample(600, 3, 2);
    struct mon_opts o;
    struct mon *m;

    (void)state;
    default_opts(&o);
    o.window_events = 1000000;
    o.window_ms = 60000;
    m = one_feature_monitor(&o, train, 2000, "f");
    feed(m, shifted, 600, 0);
    assert_int_equal(mon_tick(m, 59000), 0); /* not old enough, far from full */
    assert_int_equal(mon_tick(m, 60001), 1);
    mon_close(m);
    free(train);
    free(shifted);
}

static void test_unknown_feature_is_config_error(void **state)
{
    struct mon_opts o;
    struct mon_baseline *b = mon_baseline_new("t", "m");
    struct mon_dist d = {.mean = NAN};
    struct err e = {0};
    const char *names[] = {"income"};

    (void)state;
    default_opts(&o);
    assert_int_equal(mon_baseline_add(b, "salary", &d, &e), ERR_OK);
    assert_null(mon_open(&o, b, names, 1, &e));
    assert_int_equal(e.code, ERR_CONFIG);
    assert_non_null(strstr(e.msg, "salary"));
}

/* ---- baseline files ---- */

static void test_baseline_round_trip(void **state)
{
    double v[8] = {1, 2, 3, NAN, 5, 6, 7, 8};
    char path[] = "/tmp/streamml-baseline-XXXXXX";
    int fd = mkstemp(path);
    struct mon_baseline *b = mon_baseline_new("txn-v1", "credit.json"), *r;
    struct mon_dist d, s;
    struct err e = {0};

    (void)state;
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(mon_dist_compute(v, 8, &d, &e), ERR_OK);
    s = d;
    assert_int_equal(mon_baseline_add(b, "income", &d, &e), ERR_OK);
    assert_int_equal(mon_baseline_add(b, "income", &d, &e), ERR_INVALID);
    mon_baseline_set_score(b, &s);
    mon_baseline_set_auc(b, 0.75, 8);
    assert_int_equal(mon_baseline_save(b, path, &e), ERR_OK);
    r = mon_baseline_load(path, &e);
    assert_non_null(r);
    assert_int_equal(mon_baseline_num_features(r), 1);
    assert_string_equal(mon_baseline_feature(r, 0), "income");
    assert_memory_equal(mon_baseline_dist(r, 0)->edges, d.edges, sizeof(d.edges));
    assert_memory_equal(mon_baseline_dist(r, 0)->prop, d.prop, sizeof(d.prop));
    assert_true(mon_baseline_dist(r, 0)->mean == d.mean);
    assert_true(mon_baseline_auc(r) == 0.75);
    assert_non_null(mon_baseline_score(r));
    assert_string_equal(mon_baseline_model(r), "credit.json");
    mon_baseline_free(b);
    mon_baseline_free(r);
    unlink(path);
}

static void expect_refused(const char *json, const char *needle)
{
    struct err e = {0};
    struct mon_baseline *b = mon_baseline_parse(json, "b.json", &e);

    if (b || !strstr(e.msg, needle)) {
        fprintf(stderr, "wanted \"%s\" in: %s\n", needle, e.msg);
        fail();
    }
    assert_int_equal(e.code, ERR_CONFIG);
}

#define HDR "{\"format\":\"streamml-baseline\",\"version\":1,"
#define FEAT(body) HDR "\"features\":[{\"name\":\"f\",\"count\":4," body "}]}"

static void test_bad_baselines_name_the_culprit(void **state)
{
    (void)state;
    expect_refused("{", "b.json: line");
    expect_refused("[]", "not a JSON object");
    expect_refused("{\"format\":\"x\"}", "format");
    expect_refused(HDR "\"features\":3}", "features");
    expect_refused(FEAT("\"missing_rate\":0,\"mean\":1,\"edges\":[2,1],\"proportions\":[0.5,0,0.5]"),
                   "features[0]: edges not strictly increasing");
    expect_refused(FEAT("\"missing_rate\":0,\"mean\":1,\"edges\":[1],\"proportions\":[0.5,0.6]"),
                   "do not sum to 1");
    expect_refused(FEAT("\"missing_rate\":0,\"mean\":1,\"edges\":[1],\"proportions\":[1]"),
                   "edges + 1");
    expect_refused(FEAT("\"missing_rate\":2,\"mean\":1,\"edges\":[],\"proportions\":[1]"),
                   "missing_rate");
    expect_refused(FEAT("\"missing_rate\":0,\"mean\":\"x\",\"edges\":[],\"proportions\":[1]"),
                   "features[0].mean: not a number");
    expect_refused(FEAT("\"missing_rate\":0,\"mean\":1,\"edges\":[1,2,3,4,5,6,7,8,9,10],"
                        "\"proportions\":[1]"),
                   "too many values");
    expect_refused(HDR "\"auc\":1.5,\"features\":[]}", "auc");
}

static void test_missing_baseline_file_is_named(void **state)
{
    struct err e = {0};

    (void)state;
    assert_null(mon_baseline_load("/nonexistent/b.json", &e));
    assert_int_equal(e.code, ERR_CONFIG);
    assert_non_null(strstr(e.msg, "/nonexistent/b.json"));
}

static void test_infinite_value_refused(void **state)
{
    double v[3] = {1, INFINITY, 2};
    struct mon_dist d;
    struct err e = {0};

    (void)state;
    assert_int_equal(mon_dist_compute(v, 3, &d, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "value 1"));
}

/* ---- alert events ---- */

static void test_alert_encodes_as_avro_alert_event(void **state)
{
    struct mon_alert a = {.check = MON_DATA_DRIFT, .feature = "income", .from = MON_WARNING,
                          .to = MON_OK, .observed = 0.05, .threshold = 0.1, .baseline = NAN,
                          .window_start_ms = 1000, .window_end_ms = 2000, .window_events = 42};
    char json[2048];
    struct err e = {0};
    struct codec *cd = codec_open("schemas", &e);
    struct buf out, back;
    json_t *j;
    json_error_t je;

    (void)state;
    assert_non_null(cd);
    assert_int_equal(mon_alert_json(&a, "transactions", "credit-risk", "1", 3000, json,
                                    sizeof(json), &e),
                     ERR_OK);
    buf_init(&out, 0);
    buf_init(&back, 0);
    if (codec_from_json(cd, CODEC_ALERT, json, strlen(json), &out, &e))
        fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(e.code, 0);
    assert_int_equal(codec_to_json(cd, out.data, out.len, &back, &e), ERR_OK);
    j = json_loads((const char *)back.data, 0, &je);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "alert_type")), "data_drift");
    assert_string_equal(json_string_value(json_object_get(j, "severity")), "INFO");
    assert_string_equal(json_string_value(json_object_get(j, "status_from")), "WARNING");
    assert_string_equal(json_string_value(json_object_get(j, "status_to")), "OK");
    assert_string_equal(json_string_value(json_object_get(j, "transition")), "RESOLVED");
    assert_string_equal(json_string_value(json_object_get(j, "feature")), "income");
    assert_true(json_is_null(json_object_get(j, "baseline")));
    assert_int_equal(json_integer_value(json_object_get(j, "window_events")), 42);
    assert_int_equal(json_integer_value(json_object_get(j, "emitted_at")), 3000);
    json_decref(j);
    buf_free(&out);
    buf_free(&back);
    codec_close(cd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dist_matches_numpy),
        cmocka_unit_test(test_psi_formula_matches_numpy),
        cmocka_unit_test(test_window_psi_matches_numpy),
        cmocka_unit_test(test_auc_matches_sklearn),
        cmocka_unit_test(test_auc_one_class_is_nan),
        cmocka_unit_test(test_drift_alerts_once_and_resolves),
        cmocka_unit_test(test_sliding_window_needs_drift_in_most_slices),
        cmocka_unit_test(test_hysteresis_holds_level_near_threshold),
        cmocka_unit_test(test_score_mean_shift_is_critical),
        cmocka_unit_test(test_latency_p99_and_error_rate),
        cmocka_unit_test(test_latency_histogram_bounds),
        cmocka_unit_test(test_auc_drop_raises_alert),
        cmocka_unit_test(test_labels_after_the_stream_stops_are_evaluated),
        cmocka_unit_test(test_fairness_disparate_impact),
        cmocka_unit_test(test_fairness_outcome_gaps),
        cmocka_unit_test(test_time_closes_a_slice),
        cmocka_unit_test(test_unknown_feature_is_config_error),
        cmocka_unit_test(test_baseline_round_trip),
        cmocka_unit_test(test_bad_baselines_name_the_culprit),
        cmocka_unit_test(test_missing_baseline_file_is_named),
        cmocka_unit_test(test_infinite_value_refused),
        cmocka_unit_test(test_alert_encodes_as_avro_alert_event),
    };
    return cmocka_run_group_tests(tests, load_ref, free_ref);
}
