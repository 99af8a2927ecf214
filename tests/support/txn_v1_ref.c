/* tests/support/txn_v1_ref.c: the hard-coded txn-v1 module as it was before
 * features became a spec (common/streams/features.c at the commit before issue 17),
 * kept only as the reference of tests/test_spec_parity.c. Do not change it.
 *
 *
 * Pure functions only (see features.h): the worker, `streamml featurize` and
 * replays must get bit-identical vectors from the same events. Formulas and
 * missing-value rules are listed in common/streams/FEATURES.md.
 */
#include "txn_v1_ref.h"

#include <math.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#define MS_5MIN 300000LL
#define MS_1H 3600000LL
#define MS_1D 86400000LL




enum {
    F_DEBT_TO_INCOME,
    F_LOAN_TO_INCOME,
    F_MONTHLY_PAYMENT_RATIO,
    F_EXPENSE_RATIO,
    F_LOAN_TO_VALUE,
    F_CREDIT_UTILIZATION,
    F_AVAILABLE_CREDIT,
    F_PAYMENT_HISTORY_SCORE,
    F_DELINQUENCY_RATE,
    F_AVG_ACCOUNT_AGE,
    F_CREDIT_HISTORY_LENGTH,
    F_RECENT_INQUIRIES_RATIO,
    F_NEW_ACCOUNTS_RATIO,
    F_HAS_BANKRUPTCY,
    F_HAS_COLLECTIONS,
    F_HIGH_UTILIZATION,
    F_HAS_RECORDS,
    F_SENIORITY_YEARS,
    F_AGE,
    F_TERM_MONTHS,
    F_INCOME,
    F_EXPENSES,
    F_ASSETS,
    F_DEBT,
    F_AMOUNT,
    F_PRICE,
    F_HOME_CODE,
    F_MARITAL_CODE,
    F_JOB_CODE,
    F_TXN_COUNT_1H,
    F_TXN_SUM_1H,
    F_TXN_COUNT_24H,
    F_TXN_SUM_24H,
    F_TXN_COUNT_30D,
    F_TXN_SUM_30D,
    F_SECS_SINCE_PREV,
    F_AMOUNT_ZSCORE,
    F_COUNT
};
_Static_assert(F_COUNT == REF_TXN_DIM, "feature enum and REF_TXN_DIM disagree");

static const char *const names[REF_TXN_DIM + 1] = {"debt_to_income",
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
                                                    "amount_zscore",
                                                    NULL};

static const char *const home_cats[] = {"rent",   "owner", "parents", "priv",
                                        "ignore", "other", NULL};
static const char *const marital_cats[] = {"single",    "married",  "widow",
                                           "separated", "divorced", NULL};
static const char *const job_cats[] = {"fixed", "freelance", "partime", "others", NULL};

/* The three rings, in one table so build, update and the codec walk them
 * the same way. */
struct ring_def {
    size_t off;
    int n;
    int64_t width_ms;
};

static const struct ring_def rings[3] = {
    {offsetof(struct ref_state, w1h), REF_W1H_BUCKETS, MS_5MIN},
    {offsetof(struct ref_state, w24h), REF_W24H_BUCKETS, MS_1H},
    {offsetof(struct ref_state, w30d), REF_W30D_BUCKETS, MS_1D},
};

static const struct ref_bucket *ring_c(const struct ref_state *s, int r)
{
    return (const struct ref_bucket *)((const char *)s + rings[r].off);
}

static struct ref_bucket *ring_m(struct ref_state *s, int r)
{
    return (struct ref_bucket *)((char *)s + rings[r].off);
}

const char *const *ref_txn_names(void)
{
    return names;
}

int ref_txn_index(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < REF_TXN_DIM; i++)
        if (strcmp(names[i], name) == 0)
            return i;
    return -1;
}

/* ---- the vector ---- */

/* a/b, NaN when either is missing or b is 0 (no ratio exists). */
static double ratio(double a, double b)
{
    if (isnan(a) || isnan(b) || b == 0)
        return NAN;
    return a / b;
}

static double flag_positive(double v)
{
    if (isnan(v))
        return NAN;
    return v > 0 ? 1.0 : 0.0;
}

static double cat_code(const char *s, const char *const *cats)
{
    if (s[0] == '\0')
        return NAN;
    /* strncasecmp bounded by EV_CAT_MAX: safe on an unterminated field. */
    for (int i = 0; cats[i]; i++)
        if (strncasecmp(s, cats[i], EV_CAT_MAX) == 0)
            return i + 1;
    return REF_CAT_UNKNOWN;
}

/* Floor division, so bucket ids stay right for times before the epoch. */
static int64_t bucket_of(int64_t t_ms, int64_t width)
{
    return t_ms >= 0 ? t_ms / width : -((-t_ms + width - 1) / width);
}

static void ratios(const struct txn_event *ev, double *f)
{
    double paid = ev->payments_on_time + ev->payments_late;

    f[F_DEBT_TO_INCOME] = ratio(ev->debt, ev->income);
    f[F_LOAN_TO_INCOME] = ratio(ev->amount, ev->income);
    f[F_MONTHLY_PAYMENT_RATIO] = ratio(ratio(ev->amount, ev->term_months), ev->income);
    f[F_EXPENSE_RATIO] = ratio(ev->expenses, ev->income);
    f[F_LOAN_TO_VALUE] = ratio(ev->amount, ev->price);
    f[F_CREDIT_UTILIZATION] = ratio(ev->credit_used, ev->credit_limit);
    f[F_AVAILABLE_CREDIT] = ev->credit_limit - ev->credit_used; /* NaN propagates */
    f[F_PAYMENT_HISTORY_SCORE] = ratio(ev->payments_on_time, paid);
    f[F_DELINQUENCY_RATE] = ratio(ev->payments_late, paid);
    f[F_AVG_ACCOUNT_AGE] = ev->avg_account_age_months;
    f[F_CREDIT_HISTORY_LENGTH] = ev->oldest_account_months;
    f[F_RECENT_INQUIRIES_RATIO] = ratio(ev->inquiries_6m, ev->accounts_open + 1);
    f[F_NEW_ACCOUNTS_RATIO] = ratio(ev->accounts_opened_12m, ev->accounts_open);
}

static void flags_and_raw(const struct txn_event *ev, double *f)
{
    double util = f[F_CREDIT_UTILIZATION];

    f[F_HAS_BANKRUPTCY] = flag_positive(ev->bankruptcies);
    f[F_HAS_COLLECTIONS] = flag_positive(ev->collections);
    f[F_HIGH_UTILIZATION] = isnan(util) ? NAN : (util > 0.7 ? 1.0 : 0.0);
    f[F_HAS_RECORDS] = ev->past_records == 1 ? 1.0 : ev->past_records == 0 ? 0.0 : NAN;
    f[F_SENIORITY_YEARS] = ev->seniority_years;
    f[F_AGE] = ev->age;
    f[F_TERM_MONTHS] = ev->term_months;
    f[F_INCOME] = ev->income;
    f[F_EXPENSES] = ev->expenses;
    f[F_ASSETS] = ev->assets;
    f[F_DEBT] = ev->debt;
    f[F_AMOUNT] = ev->amount;
    f[F_PRICE] = ev->price;
    f[F_HOME_CODE] = cat_code(ev->home, home_cats);
    f[F_MARITAL_CODE] = cat_code(ev->marital, marital_cats);
    f[F_JOB_CODE] = cat_code(ev->job, job_cats);
}

/* Count and sum over the event's bucket and the n-1 before it, from the
 * prior ring, plus the event itself (a missing amount adds 0). */
static void window(const struct ref_state *prior, int r, const struct txn_event *ev, double *count,
                   double *sum)
{
    const struct ref_bucket *b = ring_c(prior, r);
    int64_t cur = bucket_of(ev->event_time_ms, rings[r].width_ms);
    double c = 1, s = isnan(ev->amount) ? 0 : ev->amount;

    for (int i = 0; i < rings[r].n; i++) {
        if (b[i].id != 0 && b[i].id <= cur && b[i].id > cur - rings[r].n) {
            c += b[i].count;
            s += b[i].sum;
        }
    }
    *count = c;
    *sum = s;
}

static void history(const struct txn_event *ev, const struct ref_state *prior, double *f)
{
    double sd = NAN;

    window(prior, 0, ev, &f[F_TXN_COUNT_1H], &f[F_TXN_SUM_1H]);
    window(prior, 1, ev, &f[F_TXN_COUNT_24H], &f[F_TXN_SUM_24H]);
    window(prior, 2, ev, &f[F_TXN_COUNT_30D], &f[F_TXN_SUM_30D]);
    f[F_SECS_SINCE_PREV] = NAN;
    if (prior->last_event_ms != 0)
        f[F_SECS_SINCE_PREV] =
            fmax(0.0, (double)(ev->event_time_ms - prior->last_event_ms) / 1000.0);
    if (prior->n_amounts >= 2)
        sd = sqrt(prior->m2_amount / (double)(prior->n_amounts - 1));
    f[F_AMOUNT_ZSCORE] = NAN;
    if (!isnan(ev->amount) && sd > 0)
        f[F_AMOUNT_ZSCORE] = (ev->amount - prior->mean_amount) / sd;
}

void ref_txn_build(const struct txn_event *ev, const struct ref_state *prior, float *x)
{
    double f[REF_TXN_DIM];

    ratios(ev, f);
    flags_and_raw(ev, f);
    history(ev, prior, f);
    for (int i = 0; i < REF_TXN_DIM; i++)
        x[i] = (float)f[i];
}

/* ---- state ---- */

void ref_state_init(struct ref_state *s)
{
    memset(s, 0, sizeof(*s));
}

/* Adds the event to its bucket of ring r, unless the bucket has already
 * left the ring (see the late-event policy in features.h). */
static void ring_add(struct ref_state *s, int r, const struct txn_event *ev)
{
    struct ref_bucket *b = ring_m(s, r);
    int n = rings[r].n;
    int64_t id = bucket_of(ev->event_time_ms, rings[r].width_ms);
    int64_t newest = bucket_of(s->last_event_ms, rings[r].width_ms);
    struct ref_bucket *slot = &b[((id % n) + n) % n];

    if (s->last_event_ms != 0 && id <= newest - n)
        return;
    if (slot->id > id)
        return; /* only in a corrupt state: never overwrite newer data */
    if (slot->id != id)
        *slot = (struct ref_bucket){.id = id, .count = 0, .sum = 0};
    if (slot->count < UINT32_MAX)
        slot->count++;
    if (!isnan(ev->amount))
        slot->sum += ev->amount;
}

void ref_state_update(const struct ref_state *prior, const struct txn_event *ev,
                       struct ref_state *next)
{
    struct ref_state s = *prior; /* prior and next may alias */

    for (int r = 0; r < 3; r++)
        ring_add(&s, r, ev);
    if (!isnan(ev->amount)) {
        /* Welford: stable running mean and sum of squared deviations. */
        double delta = ev->amount - s.mean_amount;
        s.n_amounts++;
        s.mean_amount += delta / (double)s.n_amounts;
        s.m2_amount += delta * (ev->amount - s.mean_amount);
    }
    if (ev->event_time_ms > s.last_event_ms)
        s.last_event_ms = ev->event_time_ms;
    *next = s;
}

