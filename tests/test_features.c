/* tests/test_features.c: the txn-v1 feature module (common/streams/features.c).
 *
 * Pure code, so table-driven: every formula on a hand-computed event, the
 * missing-value and division-by-zero rules, windows, state codec, hash and
 * validation. Expected values are worked out by hand in the comments.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "features.h"
#include "evtime.h"

#define D0 1699920000000LL       /* 2023-11-14T00:00:00Z, a day boundary */
#define T0 (D0 + 12 * 3600000LL) /* noon: on a 5-min, hour and day boundary */
#define MIN_MS 60000LL
#define HOUR_MS 3600000LL
#define DAY_MS 86400000LL
#define OFF(field) offsetof(struct txn_event, field)

/* Every field given, round numbers (see test_every_formula_...). */
static void full_event(struct txn_event *ev)
{
    event_txn_init(ev);
    strcpy(ev->event_id, "e1");
    strcpy(ev->user_id, "u1");
    ev->event_time_ms = T0;
    ev->amount = 1000, ev->income = 2000, ev->expenses = 500, ev->assets = 3000;
    ev->debt = 400, ev->price = 1250, ev->term_months = 20, ev->seniority_years = 5;
    ev->age = 40;
    strcpy(ev->home, "owner");
    strcpy(ev->marital, "married");
    strcpy(ev->job, "fixed");
    ev->past_records = 1;
    ev->credit_limit = 5000, ev->credit_used = 4000;
    ev->payments_on_time = 18, ev->payments_late = 2;
    ev->inquiries_6m = 3, ev->accounts_open = 5, ev->accounts_opened_12m = 2;
    ev->bankruptcies = 0, ev->collections = 1;
    ev->oldest_account_months = 120, ev->avg_account_age_months = 60;
}

/* A minimal valid event: ids, time and (optionally) an amount. */
static void small_event(struct txn_event *ev, int64_t t, double amount)
{
    event_txn_init(ev);
    strcpy(ev->event_id, "e");
    strcpy(ev->user_id, "u1");
    ev->event_time_ms = t;
    ev->amount = amount;
}

static void set_num(struct txn_event *ev, size_t off, double v)
{
    memcpy((char *)ev + off, &v, sizeof(v));
}

static double feat(const float *x, const char *name)
{
    int i = feat_txn_index(name);

    if (i < 0)
        fail_msg("no feature named %s", name);
    return x[i];
}

/* Applies events at the given times (amount 100 each) to s. */
static void history(struct feat_state *s, const int64_t *times, int n)
{
    struct txn_event ev;

    for (int i = 0; i < n; i++) {
        small_event(&ev, times[i], 100);
        feat_state_update(s, &ev, s);
    }
}

static void assert_close(double got, double want, const char *what)
{
    if (!(fabs(got - want) <= 1e-5 * fmax(1.0, fabs(want))))
        fail_msg("%s: got %.9g, want %.9g", what, got, want);
}

/* ---- names ---- */

static void test_names_are_the_documented_order(void **state)
{
    static const char *const want[FEAT_TXN_DIM] = {"debt_to_income",
                                                   "loan_to_income",
                                                   "monthly_payment_ratio",
                                                   "expense_ratio",
                                                   "loan_to_value",
                                                   "credit_utilization",
                                                   "available_credit",
                                                   "payment_history_score",
                                                   "delinquency_rate",
                                                   "avg_account_age",
                                                   "credit_history_length",
                                                   "recent_inquiries_ratio",
                                                   "new_accounts_ratio",
                                                   "has_bankruptcy",
                                                   "has_collections",
                                                   "high_utilization",
                                                   "has_records",
                                                   "seniority_years",
                                                   "age",
                                                   "term_months",
                                                   "income",
                                                   "expenses",
                                                   "assets",
                                                   "debt",
                                                   "amount",
                                                   "price",
                                                   "home_code",
                                                   "marital_code",
                                                   "job_code",
                                                   "txn_count_1h",
                                                   "txn_sum_1h",
                                                   "txn_count_24h",
                                                   "txn_sum_24h",
                                                   "txn_count_30d",
                                                   "txn_sum_30d",
                                                   "secs_since_prev",
                                                   "amount_zscore"};
    const char *const *names = feat_txn_names();

    (void)state;
    assert_string_equal(FEAT_TXN_VERSION, "txn-v1");
    for (int i = 0; i < FEAT_TXN_DIM; i++) {
        assert_string_equal(names[i], want[i]);
        assert_int_equal(feat_txn_index(want[i]), i);
    }
    assert_null(names[FEAT_TXN_DIM]);
    assert_int_equal(feat_txn_index("nope"), -1);
    assert_int_equal(feat_txn_index(NULL), -1);
}

/* ---- formulas ---- */

static void test_every_formula_on_a_hand_computed_event(void **state)
{
    static const struct {
        const char *name;
        double want;
    } table[] = {
        {"debt_to_income", 0.2},          /* 400 / 2000 */
        {"loan_to_income", 0.5},          /* 1000 / 2000 */
        {"monthly_payment_ratio", 0.025}, /* (1000 / 20) / 2000 */
        {"expense_ratio", 0.25},          /* 500 / 2000 */
        {"loan_to_value", 0.8},           /* 1000 / 1250 */
        {"credit_utilization", 0.8},      /* 4000 / 5000 */
        {"available_credit", 1000},       /* 5000 - 4000 */
        {"payment_history_score", 0.9},   /* 18 / (18 + 2) */
        {"delinquency_rate", 0.1},        /* 2 / (18 + 2) */
        {"avg_account_age", 60},
        {"credit_history_length", 120},
        {"recent_inquiries_ratio", 0.5}, /* 3 / (5 + 1) */
        {"new_accounts_ratio", 0.4},     /* 2 / 5 */
        {"has_bankruptcy", 0},           /* bankruptcies 0 */
        {"has_collections", 1},          /* collections 1 */
        {"high_utilization", 1},         /* 0.8 > 0.7 */
        {"has_records", 1},
        {"seniority_years", 5},
        {"age", 40},
        {"term_months", 20},
        {"income", 2000},
        {"expenses", 500},
        {"assets", 3000},
        {"debt", 400},
        {"amount", 1000},
        {"price", 1250},
        {"home_code", 2},    /* owner */
        {"marital_code", 2}, /* married */
        {"job_code", 1},     /* fixed */
        {"txn_count_1h", 1},
        {"txn_sum_1h", 1000}, /* the event itself */
        {"txn_count_24h", 1},
        {"txn_sum_24h", 1000},
        {"txn_count_30d", 1},
        {"txn_sum_30d", 1000},
        {"secs_since_prev", NAN}, /* no previous event */
        {"amount_zscore", NAN},   /* no previous amounts */
    };
    struct txn_event ev;
    struct feat_state s;
    float x[FEAT_TXN_DIM];

    (void)state;
    assert_int_equal(sizeof(table) / sizeof(table[0]), FEAT_TXN_DIM);
    full_event(&ev);
    feat_state_init(&s);
    feat_txn_build(&ev, &s, x);
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        double got = feat(x, table[i].name);
        if (isnan(table[i].want))
            assert_true(isnan(got));
        else
            assert_close(got, table[i].want, table[i].name);
    }
}

/* A prior with two amounts (500, 1500) an hour before, so the history
 * features have values that a missing input must turn into NaN. */
static void prior_with_history(struct feat_state *s)
{
    struct txn_event ev;

    feat_state_init(s);
    small_event(&ev, T0 - HOUR_MS, 500);
    feat_state_update(s, &ev, s);
    small_event(&ev, T0 - HOUR_MS + MIN_MS, 1500);
    feat_state_update(s, &ev, s);
}

static void test_each_feature_is_nan_when_any_of_its_inputs_is_missing(void **state)
{
    static const struct {
        const char *name;
        size_t in[3];
        int n;
    } table[] = {
        {"debt_to_income", {OFF(debt), OFF(income)}, 2},
        {"loan_to_income", {OFF(amount), OFF(income)}, 2},
        {"monthly_payment_ratio", {OFF(amount), OFF(term_months), OFF(income)}, 3},
        {"expense_ratio", {OFF(expenses), OFF(income)}, 2},
        {"loan_to_value", {OFF(amount), OFF(price)}, 2},
        {"credit_utilization", {OFF(credit_used), OFF(credit_limit)}, 2},
        {"available_credit", {OFF(credit_limit), OFF(credit_used)}, 2},
        {"payment_history_score", {OFF(payments_on_time), OFF(payments_late)}, 2},
        {"delinquency_rate", {OFF(payments_on_time), OFF(payments_late)}, 2},
        {"avg_account_age", {OFF(avg_account_age_months)}, 1},
        {"credit_history_length", {OFF(oldest_account_months)}, 1},
        {"recent_inquiries_ratio", {OFF(inquiries_6m), OFF(accounts_open)}, 2},
        {"new_accounts_ratio", {OFF(accounts_opened_12m), OFF(accounts_open)}, 2},
        {"has_bankruptcy", {OFF(bankruptcies)}, 1},
        {"has_collections", {OFF(collections)}, 1},
        {"high_utilization", {OFF(credit_used), OFF(credit_limit)}, 2},
        {"seniority_years", {OFF(seniority_years)}, 1},
        {"age", {OFF(age)}, 1},
        {"term_months", {OFF(term_months)}, 1},
        {"income", {OFF(income)}, 1},
        {"expenses", {OFF(expenses)}, 1},
        {"assets", {OFF(assets)}, 1},
        {"debt", {OFF(debt)}, 1},
        {"amount", {OFF(amount)}, 1},
        {"price", {OFF(price)}, 1},
        {"amount_zscore", {OFF(amount)}, 1},
    };
    struct txn_event ev;
    struct feat_state s;
    float x[FEAT_TXN_DIM];

    (void)state;
    prior_with_history(&s);
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        full_event(&ev);
        feat_txn_build(&ev, &s, x);
        if (isnan(feat(x, table[i].name)))
            fail_msg("%s is NaN with every input given", table[i].name);
        for (int k = 0; k < table[i].n; k++) {
            full_event(&ev);
            set_num(&ev, table[i].in[k], NAN);
            feat_txn_build(&ev, &s, x);
            if (!isnan(feat(x, table[i].name)))
                fail_msg("%s not NaN with input %d missing", table[i].name, k);
        }
    }
}

static void test_missing_categories_and_records_give_nan(void **state)
{
    struct txn_event ev;
    struct feat_state s;
    float x[FEAT_TXN_DIM];

    (void)state;
    full_event(&ev);
    ev.home[0] = ev.marital[0] = ev.job[0] = '\0';
    ev.past_records = -1;
    feat_state_init(&s);
    feat_txn_build(&ev, &s, x);
    assert_true(isnan(feat(x, "home_code")));
    assert_true(isnan(feat(x, "marital_code")));
    assert_true(isnan(feat(x, "job_code")));
    assert_true(isnan(feat(x, "has_records")));
}

/* Nothing but ids and time: every input-derived feature is NaN, never 0. */
static void test_an_empty_event_gives_nan_not_zero(void **state)
{
    struct txn_event ev;
    struct feat_state s;
    float x[FEAT_TXN_DIM];
    int c1 = feat_txn_index("txn_count_1h");

    (void)state;
    small_event(&ev, T0, NAN);
    feat_state_init(&s);
    feat_txn_build(&ev, &s, x);
    for (int i = 0; i < FEAT_TXN_DIM; i++) {
        if (i >= c1 && i < c1 + 6)
            continue; /* the windows still count the event */
        if (!isnan(x[i]))
            fail_msg("%s = %g, want NaN", feat_txn_names()[i], x[i]);
    }
    assert_close(feat(x, "txn_count_1h"), 1, "count");
    assert_close(feat(x, "txn_sum_1h"), 0, "sum"); /* missing amount adds 0 */
}

static void test_division_by_zero_gives_nan(void **state)
{
    static const struct {
        size_t field;
        const char *nan[4];
    } table[] = {
        {OFF(income),
         {"debt_to_income", "loan_to_income", "monthly_payment_ratio", "expense_ratio"}},
        {OFF(term_months), {"monthly_payment_ratio"}},
        {OFF(price), {"loan_to_value"}},
        {OFF(credit_limit), {"credit_utilization", "high_utilization"}},
        {OFF(accounts_open), {"new_accounts_ratio"}},
    };
    struct txn_event ev;
    struct feat_state s;
    float x[FEAT_TXN_DIM];

    (void)state;
    feat_state_init(&s);
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        full_event(&ev);
        set_num(&ev, table[i].field, 0);
        feat_txn_build(&ev, &s, x);
        for (int k = 0; k < 4 && table[i].nan[k]; k++)
            if (!isnan(feat(x, table[i].nan[k])))
                fail_msg("%s not NaN on a zero denominator", table[i].nan[k]);
    }
    full_event(&ev);
    ev.accounts_open = 0; /* 3 / (0 + 1): the +1 keeps it defined */
    feat_txn_build(&ev, &s, x);
    assert_close(feat(x, "recent_inquiries_ratio"), 3, "recent_inquiries_ratio");
}

static void test_no_payments_gives_nan_history_scores(void **state)
{
    struct txn_event ev;
    struct feat_state s;
    float x[FEAT_TXN_DIM];

    (void)state;
    full_event(&ev);
    ev.payments_on_time = ev.payments_late = 0;
    feat_state_init(&s);
    feat_txn_build(&ev, &s, x);
    assert_true(isnan(feat(x, "payment_history_score")));
    assert_true(isnan(feat(x, "delinquency_rate")));
}

static void test_flags_follow_their_thresholds(void **state)
{
    static const struct {
        size_t field;
        double v;
        const char *flag;
        double want;
    } table[] = {
        {OFF(credit_used), 3500, "high_utilization", 0}, /* 0.7 is not > 0.7 */
        {OFF(credit_used), 3550, "high_utilization", 1}, /* 0.71 */
        {OFF(bankruptcies), 0, "has_bankruptcy", 0},
        {OFF(bankruptcies), 2, "has_bankruptcy", 1},
        {OFF(collections), 0, "has_collections", 0},
        {OFF(collections), 3, "has_collections", 1},
    };
    struct txn_event ev;
    struct feat_state s;
    float x[FEAT_TXN_DIM];

    (void)state;
    feat_state_init(&s);
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        full_event(&ev);
        set_num(&ev, table[i].field, table[i].v);
        feat_txn_build(&ev, &s, x);
        assert_close(feat(x, table[i].flag), table[i].want, table[i].flag);
    }
    full_event(&ev);
    ev.past_records = 0;
    feat_txn_build(&ev, &s, x);
    assert_close(feat(x, "has_records"), 0, "has_records");
}

static void test_category_codes_are_fixed(void **state)
{
    static const struct {
        size_t field;
        const char *v;
        const char *name;
        double code;
    } table[] = {
        {OFF(home), "rent", "home_code", 1},
        {OFF(home), "owner", "home_code", 2},
        {OFF(home), "parents", "home_code", 3},
        {OFF(home), "priv", "home_code", 4},
        {OFF(home), "ignore", "home_code", 5},
        {OFF(home), "other", "home_code", 6},
        {OFF(home), "OWNER", "home_code", 2},
        {OFF(home), "castle", "home_code", 0},
        {OFF(marital), "single", "marital_code", 1},
        {OFF(marital), "married", "marital_code", 2},
        {OFF(marital), "widow", "marital_code", 3},
        {OFF(marital), "separated", "marital_code", 4},
        {OFF(marital), "divorced", "marital_code", 5},
        {OFF(marital), "complicated", "marital_code", 0},
        {OFF(job), "fixed", "job_code", 1},
        {OFF(job), "freelance", "job_code", 2},
        {OFF(job), "partime", "job_code", 3},
        {OFF(job), "others", "job_code", 4},
        {OFF(job), "astronaut", "job_code", 0},
    };
    struct txn_event ev;
    struct feat_state s;
    float x[FEAT_TXN_DIM];

    (void)state;
    feat_state_init(&s);
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        full_event(&ev);
        strcpy((char *)&ev + table[i].field, table[i].v);
        feat_txn_build(&ev, &s, x);
        assert_close(feat(x, table[i].name), table[i].code, table[i].v);
    }
}

/* ---- windows ---- */

struct win_case {
    const char *what;
    int64_t prior[4]; /* event times applied before, 0-terminated */
    int64_t t;        /* the event scored */
    double c1h, c24h, c30d;
};

static void test_windows_count_by_bucket(void **state)
{
    static const struct win_case table[] = {
        {"3 min apart", {T0, T0 + 3 * MIN_MS}, T0 + 6 * MIN_MS, 3, 3, 3},
        {"2 h apart", {T0}, T0 + 2 * HOUR_MS, 1, 2, 2},
        {"2 days apart", {T0}, T0 + 2 * DAY_MS, 1, 1, 2},
        {"31 days apart", {T0}, T0 + 31 * DAY_MS, 1, 1, 1},
        /* 1 h = this 5-min bucket and the 11 before: 59 min on is bucket +11 */
        {"bucket +11", {T0}, T0 + 59 * MIN_MS, 2, 2, 2},
        {"bucket +12", {T0}, T0 + 60 * MIN_MS, 1, 2, 2},
        /* bucket-aligned: 1 ms before the hour is the previous hour bucket */
        {"24 h edge in", {T0}, T0 + 23 * HOUR_MS + 59 * MIN_MS, 1, 2, 2},
        {"24 h edge out", {T0 - 1}, T0 + 23 * HOUR_MS, 1, 1, 2},
        {"30 d edge", {D0}, D0 + 30 * DAY_MS - 1, 1, 1, 2},
        {"30 d out", {D0}, D0 + 30 * DAY_MS, 1, 1, 1},
    };
    struct txn_event ev;
    struct feat_state s;
    float x[FEAT_TXN_DIM];

    (void)state;
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        int n = 0;
        while (n < 4 && table[i].prior[n])
            n++;
        feat_state_init(&s);
        history(&s, table[i].prior, n);
        small_event(&ev, table[i].t, 7);
        feat_txn_build(&ev, &s, x);
        assert_close(feat(x, "txn_count_1h"), table[i].c1h, table[i].what);
        assert_close(feat(x, "txn_count_24h"), table[i].c24h, table[i].what);
        assert_close(feat(x, "txn_count_30d"), table[i].c30d, table[i].what);
        /* prior events carry 100 each, the scored one 7 */
        assert_close(feat(x, "txn_sum_30d"), 7 + 100 * (table[i].c30d - 1), table[i].what);
    }
}

static void test_missing_amount_counts_but_adds_nothing(void **state)
{
    struct txn_event ev;
    struct feat_state s;
    float x[FEAT_TXN_DIM];

    (void)state;
    feat_state_init(&s);
    small_event(&ev, T0, NAN);
    feat_state_update(&s, &ev, &s);
    small_event(&ev, T0 + MIN_MS, 50);
    feat_txn_build(&ev, &s, x);
    assert_close(feat(x, "txn_count_1h"), 2, "count");
    assert_close(feat(x, "txn_sum_1h"), 50, "sum");
    assert_int_equal(feat_state_count(&s, "amount"), 0);
}

/* A late event inside the ring is scored on its own past only, and then
 * counts for later events. */
static void test_late_event_within_ring_is_added(void **state)
{
    const int64_t times[] = {T0, T0 + 30 * MIN_MS};
    struct txn_event ev;
    struct feat_state s;
    float x[FEAT_TXN_DIM];

    (void)state;
    feat_state_init(&s);
    history(&s, times, 2);
    small_event(&ev, T0 + 10 * MIN_MS, 100);
    feat_txn_build(&ev, &s, x);
    assert_close(feat(x, "txn_count_1h"), 2, "late sees T0 only, not its future");
    assert_close(feat(x, "secs_since_prev"), 0, "clamped");
    feat_state_update(&s, &ev, &s);
    assert_int_equal(s.last_event_ms, T0 + 30 * MIN_MS); /* never moves back */
    small_event(&ev, T0 + 31 * MIN_MS, 100);
    feat_txn_build(&ev, &s, x);
    assert_close(feat(x, "txn_count_1h"), 4, "after the late one");
}

static void test_late_event_beyond_ring_is_left_out_of_that_ring(void **state)
{
    const int64_t times[] = {T0, T0 + 2 * HOUR_MS};
    struct txn_event ev;
    struct feat_state s;
    float x[FEAT_TXN_DIM];

    (void)state;
    feat_state_init(&s);
    history(&s, times, 2);
    /* 90 min before the newest: out of the 1 h ring, inside the 24 h one */
    small_event(&ev, T0 + 30 * MIN_MS, 100);
    feat_state_update(&s, &ev, &s);
    assert_int_equal(feat_state_count(&s, "amount"), 3); /* moments still take it */
    small_event(&ev, T0 + 2 * HOUR_MS + MIN_MS, 100);
    feat_txn_build(&ev, &s, x);
    assert_close(feat(x, "txn_count_1h"), 2, "1 h ring");
    assert_close(feat(x, "txn_count_24h"), 4, "24 h ring");
    assert_close(feat(x, "txn_count_30d"), 4, "30 d ring");
}

/* A slot holding an older bucket id is reset before reuse. */
static void test_ring_slot_reuse_resets_old_bucket(void **state)
{
    const int64_t times[] = {T0, T0 + 5 * MIN_MS};
    struct txn_event ev;
    struct feat_state s;
    float x[FEAT_TXN_DIM];

    (void)state;
    feat_state_init(&s);
    history(&s, times, 2);
    /* exactly 12 buckets after T0: same slot as T0, which must be dropped */
    small_event(&ev, T0 + 60 * MIN_MS, 100);
    feat_state_update(&s, &ev, &s);
    small_event(&ev, T0 + 61 * MIN_MS, 100);
    feat_txn_build(&ev, &s, x);
    assert_close(feat(x, "txn_count_1h"), 3, "T0+5m, T0+60m and itself");
    assert_close(feat(x, "txn_sum_1h"), 300, "sum");
}

static void test_secs_since_prev(void **state)
{
    struct txn_event ev;
    struct feat_state s;
    float x[FEAT_TXN_DIM];

    (void)state;
    feat_state_init(&s);
    small_event(&ev, T0, 1);
    feat_txn_build(&ev, &s, x);
    assert_true(isnan(feat(x, "secs_since_prev")));
    feat_state_update(&s, &ev, &s);
    small_event(&ev, T0 + 90500, 1);
    feat_txn_build(&ev, &s, x);
    assert_close(feat(x, "secs_since_prev"), 90.5, "90.5 s later");
    small_event(&ev, T0 - 5000, 1);
    feat_txn_build(&ev, &s, x);
    assert_close(feat(x, "secs_since_prev"), 0, "late event");
}

static void test_amount_zscore_uses_prior_sample_std(void **state)
{
    struct txn_event ev;
    struct feat_state s;
    float x[FEAT_TXN_DIM];

    (void)state;
    prior_with_history(&s); /* 500, 1500: mean 1000, sample std sqrt(500000) */
    small_event(&ev, T0, 2000);
    feat_txn_build(&ev, &s, x);
    assert_close(feat(x, "amount_zscore"), 1000 / sqrt(500000.0), "zscore");
    {
        uint64_t n;
        double mean, m2;
        assert_int_equal(fspec_state_moments(feat_txn_spec(), &s, "amount", &n, &mean, &m2),
                         ERR_OK);
        assert_close(mean, 1000, "mean");
        assert_close(m2, 500000, "m2");
    }
}

static void test_amount_zscore_is_nan_without_spread(void **state)
{
    const double amounts[][2] = {{700, NAN}, {700, 700}};
    struct txn_event ev;
    struct feat_state s;
    float x[FEAT_TXN_DIM];

    (void)state;
    for (int i = 0; i < 2; i++) { /* one amount; two equal amounts (std 0) */
        feat_state_init(&s);
        for (int k = 0; k < 2; k++) {
            small_event(&ev, T0 + k * MIN_MS, amounts[i][k]);
            feat_state_update(&s, &ev, &s);
        }
        small_event(&ev, T0 + HOUR_MS, 900);
        feat_txn_build(&ev, &s, x);
        assert_true(isnan(feat(x, "amount_zscore")));
    }
}

/* ---- purity ---- */

static void test_build_and_update_leave_prior_untouched(void **state)
{
    struct txn_event ev;
    struct feat_state s, copy, next;
    float x[FEAT_TXN_DIM], y[FEAT_TXN_DIM];

    (void)state;
    prior_with_history(&s);
    memcpy(&copy, &s, sizeof(s));
    full_event(&ev);
    feat_txn_build(&ev, &s, x);
    assert_memory_equal(&s, &copy, sizeof(s));
    feat_state_update(&s, &ev, &next);
    assert_memory_equal(&s, &copy, sizeof(s));
    feat_txn_build(&ev, &s, y);
    assert_memory_equal(x, y, sizeof(x)); /* same inputs, same bits */
    assert_int_equal(feat_state_count(&next, "amount"), 3);
}

/* ---- validation ---- */

static void test_valid_and_missing_values_pass(void **state)
{
    struct txn_event ev;
    struct err e = {0};

    (void)state;
    full_event(&ev);
    assert_int_equal(feat_txn_validate(&ev, &e), ERR_OK);
    small_event(&ev, T0, NAN); /* everything optional missing */
    assert_int_equal(feat_txn_validate(&ev, &e), ERR_OK);
}

static void test_bad_numbers_are_refused_naming_the_field(void **state)
{
    static const struct {
        size_t field;
        double v;
        const char *msg;
    } table[] = {
        {OFF(amount), -5, "amount: negative (-5)"},
        {OFF(income), INFINITY, "income: not finite (inf)"},
        {OFF(credit_limit), -INFINITY, "credit_limit: not finite (-inf)"},
        {OFF(age), 200, "age: out of range [14, 130] (200)"},
        {OFF(age), 10, "age: out of range [14, 130] (10)"},
        {OFF(term_months), 601, "term_months: out of range"},
        {OFF(price), 2e12, "price: out of range"},
        {OFF(debt), -1, "debt: negative"},
        {OFF(payments_late), 2e6, "payments_late: out of range"},
        {OFF(accounts_open), -1, "accounts_open: negative"},
        {OFF(oldest_account_months), -3, "oldest_account_months: negative"},
        {OFF(seniority_years), -1, "seniority_years: negative"},
    };
    struct txn_event ev;
    struct err e = {0};

    (void)state;
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        full_event(&ev);
        set_num(&ev, table[i].field, table[i].v);
        assert_int_equal(feat_txn_validate(&ev, &e), ERR_INVALID);
        if (strncmp(e.msg, table[i].msg, strlen(table[i].msg)) != 0)
            fail_msg("got \"%s\", want \"%s...\"", e.msg, table[i].msg);
    }
}

static void test_bad_ids_time_and_codes_are_refused(void **state)
{
    static const struct {
        int which;
        const char *msg;
    } table[] = {
        {0, "user_id: empty"},
        {1, "event_id: empty"},
        {2, "event_time: outside"},
        {3, "event_time: outside"},
        {4, "label: not -1, 0 or 1 (2)"},
        {5, "past_records: not -1, 0 or 1 (7)"},
        {6, "user_id: not terminated"},
    };
    struct txn_event ev;
    struct err e = {0};

    (void)state;
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        full_event(&ev);
        switch (table[i].which) {
        case 0:
            ev.user_id[0] = '\0';
            break;
        case 1:
            ev.event_id[0] = '\0';
            break;
        case 2:
            ev.event_time_ms = 0;
            break;
        case 3:
            ev.event_time_ms = 4102444800000LL;
            break; /* 2100-01-01 */
        case 4:
            ev.label = 2;
            break;
        case 5:
            ev.past_records = 7;
            break;
        case 6:
            memset(ev.user_id, 'x', sizeof(ev.user_id));
            break;
        }
        assert_int_equal(feat_txn_validate(&ev, &e), ERR_INVALID);
        if (strncmp(e.msg, table[i].msg, strlen(table[i].msg)) != 0)
            fail_msg("got \"%s\", want \"%s...\"", e.msg, table[i].msg);
    }
}

static void test_time_bounds_are_half_open(void **state)
{
    struct txn_event ev;
    struct err e = {0};

    (void)state;
    full_event(&ev);
    ev.event_time_ms = 946684800000LL; /* 2000-01-01T00:00:00Z */
    assert_int_equal(feat_txn_validate(&ev, &e), ERR_OK);
    evt_set_max_future_skew_ms(INT64_MAX / 2); /* the range alone */
    ev.event_time_ms = 4102444800000LL - 1;
    assert_int_equal(feat_txn_validate(&ev, &e), ERR_OK);
    evt_set_max_future_skew_ms(-1);
    ev.event_time_ms = 946684800000LL - 1;
    assert_int_equal(feat_txn_validate(&ev, &e), ERR_INVALID);
}

/* Issue 23 case 4: an event dated 2099 was accepted, and every later event
 * of its user then scored txn_count_1h = 1, secs_since_prev = 0. Now it is
 * refused (dead-lettered) past the maximum future skew (default 1 h). */
static void test_future_event_refused_past_the_skew(void **state)
{
    struct txn_event ev;
    struct err e = {0};
    int64_t now = evt_now_ms();

    (void)state;
    assert_int_equal(evt_max_future_skew_ms(), 3600000);
    full_event(&ev);
    ev.event_time_ms = 4102444800000LL - 1; /* 2099-12-31T23:59:59.999Z */
    assert_int_equal(feat_txn_validate(&ev, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "event_in_future"));
    assert_non_null(strstr(e.msg, "worker.max_future_skew_ms=3600000"));
    ev.event_time_ms = now + 3500000; /* inside the skew */
    assert_int_equal(feat_txn_validate(&ev, &e), ERR_OK);
    ev.event_time_ms = now + 3700000;
    assert_int_equal(feat_txn_validate(&ev, &e), ERR_INVALID);
    evt_set_max_future_skew_ms(7200000);
    assert_int_equal(feat_txn_validate(&ev, &e), ERR_OK);
    evt_set_max_future_skew_ms(-1);
    assert_int_equal(evt_check_at(1000, 0, 1000, &e), ERR_OK);
    assert_int_equal(evt_check_at(1001, 0, 1000, &e), ERR_INVALID);
    assert_int_equal(evt_check_at(-1, 0, 1000, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "negative"));
}

/* ---- state codec ---- */

/* Equal in every word the plan uses (last_event_ms, then its words). */
static void assert_state_equal(const struct feat_state *a, const struct feat_state *b)
{
    assert_memory_equal(a, b, sizeof(int64_t) + fspec_state_words(feat_txn_spec()) * 8);
}

/* One event per 5-min bucket for 30 days' worth of hours and days: every
 * slot of every ring used. */
static void full_state(struct feat_state *s)
{
    struct txn_event ev;

    feat_state_init(s);
    for (int d = 0; d < 30; d++) {
        small_event(&ev, T0 + d * DAY_MS, 10.5 + d);
        feat_state_update(s, &ev, s);
    }
    for (int h = 1; h < 24; h++) {
        small_event(&ev, T0 + 29 * DAY_MS + h * HOUR_MS - 60 * MIN_MS + 5 * MIN_MS, 1);
        feat_state_update(s, &ev, s);
    }
    for (int m = 0; m < 12; m++) {
        small_event(&ev, T0 + 29 * DAY_MS + 23 * HOUR_MS + m * 5 * MIN_MS, NAN);
        feat_state_update(s, &ev, s);
    }
}

static void test_state_round_trips(void **state)
{
    struct feat_state s, back;
    unsigned char buf[FEAT_STATE_MAX];
    struct err e = {0};
    int n;

    (void)state;
    feat_state_init(&s);
    n = feat_state_encode(&s, buf, sizeof(buf));
    assert_true(n > 0);
    assert_int_equal(feat_state_decode(&back, buf, (size_t)n, &e), ERR_OK);
    assert_state_equal(&s, &back);
    full_state(&s);
    n = feat_state_encode(&s, buf, sizeof(buf));
    /* every slot of every ring in use: version 1, layout hash 4, last_event_ms 6
     * (varint), moments 1 + 16, then per ring a count byte and per bucket its
     * distance from the newest (1), its count (1) and its sum (8); the
     * hard-coded module wrote 33 + 3 + 66 * 20 = 1356 bytes */
    assert_int_equal(n, 1 + 4 + 6 + 17 + 3 + 66 * 10 + 2); /* + empty trailer */
    assert_int_equal(feat_state_decode(&back, buf, (size_t)n, &e), ERR_OK);
    assert_state_equal(&s, &back);
}

static void test_state_encoding_is_versioned_little_endian(void **state)
{
    struct feat_state s;
    unsigned char buf[FEAT_STATE_MAX];

    (void)state;
    feat_state_init(&s);
    s.last_event_ms = 0x0102030405060708LL;
    /* version, layout hash, last_event_ms as a 9-byte varint, moments, empty rings,
     * empty delivery trailer (2) */
    assert_int_equal(feat_state_encode(&s, buf, sizeof(buf)), 1 + 4 + 9 + 17 + 3 + 2);
    assert_int_equal(buf[0], 3);
    assert_int_equal(buf[1] | buf[2] << 8 | buf[3] << 16 | (uint32_t)buf[4] << 24,
                     fspec_layout_hash(feat_txn_spec()));
    assert_int_equal(buf[5], 0x08 | 0x80); /* low 7 bits first */
    assert_int_equal(feat_state_encode(&s, buf, 35), ERR_NOMEM);
}

static void test_corrupt_state_is_refused(void **state)
{
    struct feat_state s, back;
    unsigned char buf[FEAT_STATE_MAX], bad[FEAT_STATE_MAX];
    struct err e = {0};
    int n;

    (void)state;
    prior_with_history(&s);
    n = feat_state_encode(&s, buf, sizeof(buf));
    assert_true(n > 40);
    memcpy(bad, buf, (size_t)n);
    bad[0] = 4; /* unknown version (1 and 2: the hard-coded module) */
    assert_int_equal(feat_state_decode(&back, bad, (size_t)n, &e), ERR_DECODE);
    assert_non_null(strstr(e.msg, "version 4"));
    bad[0] = 3;
    bad[1] ^= 1; /* written under another state layout: refused, never misread */
    assert_int_equal(feat_state_decode(&back, bad, (size_t)n, &e), ERR_DECODE);
    assert_non_null(strstr(e.msg, "state layout"));
    bad[1] ^= 1;
    assert_int_equal(feat_state_decode(&back, buf, (size_t)n - 1, &e), ERR_DECODE);
    bad[n] = 0; /* one trailing byte */
    assert_int_equal(feat_state_decode(&back, bad, (size_t)n + 1, &e), ERR_DECODE);
    assert_int_equal(feat_state_decode(&back, buf, 0, &e), ERR_DECODE);
    assert_int_equal(feat_state_decode(&back, buf, 10, &e), ERR_DECODE);
    /* the 1 h ring's count byte: after version, hash, last_event_ms (6), moments (17) */
    assert_int_equal(bad[28], 1); /* both events in one 5-min bucket */
    bad[28] = 200; /* the 1 h ring claims more buckets than it has */
    assert_int_equal(feat_state_decode(&back, bad, (size_t)n, &e), ERR_DECODE);
}

static void test_state_with_two_buckets_in_one_slot_is_refused(void **state)
{
    struct feat_state s, back;
    unsigned char buf[FEAT_STATE_MAX];
    struct err e = {0};
    int n;

    (void)state;
    feat_state_init(&s);
    s.last_event_ms = T0;
    /* words 3.. hold the 1 h ring, 3 words a bucket (`streamml features check`) */
    s.w[3].i = 12, s.w[4].u = 1, s.w[5].d = 1;
    s.w[6].i = 24, s.w[7].u = 1, s.w[8].d = 1; /* 24 % 12 == 0 too */
    n = feat_state_encode(&s, buf, sizeof(buf));
    assert_true(n > 0);
    assert_int_equal(feat_state_decode(&back, buf, (size_t)n, &e), ERR_DECODE);
}

/* ---- hash ---- */

static void test_hash_is_fnv1a_over_little_endian_floats(void **state)
{
    const float x[] = {1.0f, NAN, 0.0f, -2.5f};

    (void)state;
    /* Reference values computed independently (Python, struct.pack('<f')). */
    assert_true(feat_hash(x, 0) == 0xcbf29ce484222325ULL);
    assert_true(feat_hash(x, 4) == 0xc1b5b102f89134f5ULL);
}

static void test_hash_equal_for_equal_vectors_and_any_nan(void **state)
{
    float a[FEAT_TXN_DIM], b[FEAT_TXN_DIM];
    uint32_t nan1 = 0x7fc00000u, nan2 = 0xffc00001u;
    float neg0 = -0.0f;

    (void)state;
    for (int i = 0; i < FEAT_TXN_DIM; i++)
        a[i] = b[i] = (float)i * 0.5f;
    memcpy(&a[3], &nan1, 4);
    memcpy(&b[3], &nan2, 4);
    b[0] = neg0; /* -0 == +0 */
    assert_true(feat_hash(a, FEAT_TXN_DIM) == feat_hash(b, FEAT_TXN_DIM));
    b[5] = 2.5001f;
    assert_true(feat_hash(a, FEAT_TXN_DIM) != feat_hash(b, FEAT_TXN_DIM));
}

/* feat_hash_rows (the batch path, four rows' chains interleaved) against a
 * plain FNV-1a written here, on random rows: any count of rows (the tail
 * after the groups of four), widths, NaNs of any payload, +-0, infinities. */
static uint64_t fnv_ref(const float *x, size_t n)
{
    uint64_t h = 14695981039346656037ULL;

    for (size_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, &x[i], 4);
        if ((b & 0x7f800000u) == 0x7f800000u && (b & 0x7fffffu))
            b = 0x7fc00000u;
        else if ((b & 0x7fffffffu) == 0)
            b = 0;
        for (int j = 0; j < 4; j++) {
            h ^= (b >> (8 * j)) & 0xffu;
            h *= 1099511628211ULL;
        }
    }
    return h;
}

static void test_hash_rows_equal_the_row_hash(void **state)
{
    enum { ROWS = 23, WIDE = FEAT_TXN_DIM + 7 };
    static float x[ROWS * WIDE];
    uint64_t h[ROWS + 1];
    const size_t dims[] = {0, 1, 3, FEAT_TXN_DIM, WIDE};
    uint32_t seed = 12345;

    (void)state;
    for (int round = 0; round < 200; round++) {
        size_t dim = dims[round % 5], n = (size_t)(round % (ROWS + 1));
        for (size_t i = 0; i < n * dim; i++) {
            uint32_t b;
            seed = seed * 1664525u + 1013904223u;
            b = seed;
            switch (seed >> 29) {
            case 0: b = (b & 0x807fffffu) | 0x7f800000u | 1; break; /* a NaN */
            case 1: b &= 0x80000000u; break;                         /* +-0 */
            case 2: b = (b & 0x80000000u) | 0x7f800000u; break;      /* +-Inf */
            default: break;                                          /* any bits */
            }
            memcpy(&x[i], &b, 4);
        }
        h[n] = 42; /* nothing written past n */
        feat_hash_rows(x, n, dim, h);
        assert_true(h[n] == 42);
        for (size_t i = 0; i < n; i++) {
            assert_true(h[i] == fnv_ref(x + i * dim, dim));
            assert_true(h[i] == feat_hash(x + i * dim, dim));
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_are_the_documented_order),
        cmocka_unit_test(test_every_formula_on_a_hand_computed_event),
        cmocka_unit_test(test_each_feature_is_nan_when_any_of_its_inputs_is_missing),
        cmocka_unit_test(test_missing_categories_and_records_give_nan),
        cmocka_unit_test(test_an_empty_event_gives_nan_not_zero),
        cmocka_unit_test(test_division_by_zero_gives_nan),
        cmocka_unit_test(test_no_payments_gives_nan_history_scores),
        cmocka_unit_test(test_flags_follow_their_thresholds),
        cmocka_unit_test(test_category_codes_are_fixed),
        cmocka_unit_test(test_windows_count_by_bucket),
        cmocka_unit_test(test_missing_amount_counts_but_adds_nothing),
        cmocka_unit_test(test_late_event_within_ring_is_added),
        cmocka_unit_test(test_late_event_beyond_ring_is_left_out_of_that_ring),
        cmocka_unit_test(test_ring_slot_reuse_resets_old_bucket),
        cmocka_unit_test(test_secs_since_prev),
        cmocka_unit_test(test_amount_zscore_uses_prior_sample_std),
        cmocka_unit_test(test_amount_zscore_is_nan_without_spread),
        cmocka_unit_test(test_build_and_update_leave_prior_untouched),
        cmocka_unit_test(test_valid_and_missing_values_pass),
        cmocka_unit_test(test_bad_numbers_are_refused_naming_the_field),
        cmocka_unit_test(test_bad_ids_time_and_codes_are_refused),
        cmocka_unit_test(test_time_bounds_are_half_open),
        cmocka_unit_test(test_future_event_refused_past_the_skew),
        cmocka_unit_test(test_state_round_trips),
        cmocka_unit_test(test_state_encoding_is_versioned_little_endian),
        cmocka_unit_test(test_corrupt_state_is_refused),
        cmocka_unit_test(test_state_with_two_buckets_in_one_slot_is_refused),
        cmocka_unit_test(test_hash_is_fnv1a_over_little_endian_floats),
        cmocka_unit_test(test_hash_equal_for_equal_vectors_and_any_nan),
        cmocka_unit_test(test_hash_rows_equal_the_row_hash),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
