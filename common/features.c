/* common/features.c: the txn-v1 feature vector and the per-user state.
 *
 * Pure functions only (see features.h): the worker, `streamml featurize` and
 * replays must get bit-identical vectors from the same events. Formulas and
 * missing-value rules are listed in common/FEATURES.md.
 */
#include "features.h"
#include "evtime.h"

#include <math.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#define MS_5MIN 300000LL
#define MS_1H 3600000LL
#define MS_1D 86400000LL

/* 2000-01-01T00:00:00Z and 2100-01-01T00:00:00Z in ms. */
#define TIME_MIN_MS 946684800000LL
#define TIME_MAX_MS 4102444800000LL

#define MONEY_MAX 1e12
#define COUNT_MAX 1e6
#define MONTHS_MAX 1560.0 /* 130 years */

#define STATE_VERSION 2 /* 1: without the idempotence trailer */

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
_Static_assert(F_COUNT == FEAT_TXN_DIM, "feature enum and FEAT_TXN_DIM disagree");

static const char *const names[FEAT_TXN_DIM + 1] = {"debt_to_income",
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
    {offsetof(struct feat_state, w1h), FEAT_W1H_BUCKETS, MS_5MIN},
    {offsetof(struct feat_state, w24h), FEAT_W24H_BUCKETS, MS_1H},
    {offsetof(struct feat_state, w30d), FEAT_W30D_BUCKETS, MS_1D},
};

static const struct feat_bucket *ring_c(const struct feat_state *s, int r)
{
    return (const struct feat_bucket *)((const char *)s + rings[r].off);
}

static struct feat_bucket *ring_m(struct feat_state *s, int r)
{
    return (struct feat_bucket *)((char *)s + rings[r].off);
}

const char *const *feat_txn_names(void)
{
    return names;
}

int feat_txn_index(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < FEAT_TXN_DIM; i++)
        if (strcmp(names[i], name) == 0)
            return i;
    return -1;
}

/* ---- validation ---- */

struct num_rule {
    const char *name;
    size_t off;
    double min, max;
};

#define RULE(field, lo, hi)                                                                        \
    {                                                                                              \
#field, offsetof(struct txn_event, field), lo, hi                                          \
    }

static const struct num_rule num_rules[] = {
    RULE(amount, 0, MONEY_MAX),
    RULE(income, 0, MONEY_MAX),
    RULE(expenses, 0, MONEY_MAX),
    RULE(assets, 0, MONEY_MAX),
    RULE(debt, 0, MONEY_MAX),
    RULE(price, 0, MONEY_MAX),
    RULE(term_months, 0, 600),
    RULE(seniority_years, 0, 100),
    RULE(age, 14, 130),
    RULE(credit_limit, 0, MONEY_MAX),
    RULE(credit_used, 0, MONEY_MAX),
    RULE(payments_on_time, 0, COUNT_MAX),
    RULE(payments_late, 0, COUNT_MAX),
    RULE(inquiries_6m, 0, COUNT_MAX),
    RULE(accounts_open, 0, COUNT_MAX),
    RULE(accounts_opened_12m, 0, COUNT_MAX),
    RULE(bankruptcies, 0, COUNT_MAX),
    RULE(collections, 0, COUNT_MAX),
    RULE(oldest_account_months, 0, MONTHS_MAX),
    RULE(avg_account_age_months, 0, MONTHS_MAX),
};

/* NaN is how "missing" is stored, so it passes; Inf cannot be missing. */
static int check_num(const struct txn_event *ev, const struct num_rule *r, struct err *e)
{
    double v;

    memcpy(&v, (const char *)ev + r->off, sizeof(v));
    if (isnan(v))
        return ERR_OK;
    if (isinf(v))
        return err_set(e, ERR_INVALID, "%s: not finite (%g)", r->name, v);
    if (v < 0 && r->min >= 0)
        return err_set(e, ERR_INVALID, "%s: negative (%g)", r->name, v);
    if (v < r->min || v > r->max)
        return err_set(e, ERR_INVALID, "%s: out of range [%g, %g] (%g)", r->name, r->min, r->max,
                       v);
    return ERR_OK;
}

/* Fixed-size fields filled by a decoder must still be terminated strings. */
static int check_str(const char *s, size_t cap, const char *name, int required, struct err *e)
{
    if (!memchr(s, '\0', cap))
        return err_set(e, ERR_INVALID, "%s: not terminated within %zu bytes", name, cap);
    if (required && s[0] == '\0')
        return err_set(e, ERR_INVALID, "%s: empty", name);
    return ERR_OK;
}

static int check_strings(const struct txn_event *ev, struct err *e)
{
    if (check_str(ev->event_id, sizeof(ev->event_id), "event_id", 1, e) ||
        check_str(ev->user_id, sizeof(ev->user_id), "user_id", 1, e) ||
        check_str(ev->home, sizeof(ev->home), "home", 0, e) ||
        check_str(ev->marital, sizeof(ev->marital), "marital", 0, e) ||
        check_str(ev->job, sizeof(ev->job), "job", 0, e))
        return ERR_INVALID;
    return ERR_OK;
}

int feat_txn_validate(const struct txn_event *ev, struct err *e)
{
    int rc = check_strings(ev, e);

    if (rc)
        return rc;
    if (ev->event_time_ms < TIME_MIN_MS || ev->event_time_ms >= TIME_MAX_MS)
        return err_set(e, ERR_INVALID, "event_time: outside [2000-01-01, 2100-01-01) (%lld ms)",
                       (long long)ev->event_time_ms);
    /* A date far ahead would freeze the user's velocity windows. */
    if ((rc = evt_check(ev->event_time_ms, e)))
        return rc;
    for (size_t i = 0; i < sizeof(num_rules) / sizeof(num_rules[0]); i++) {
        rc = check_num(ev, &num_rules[i], e);
        if (rc)
            return rc;
    }
    if (ev->past_records < -1 || ev->past_records > 1)
        return err_set(e, ERR_INVALID, "past_records: not -1, 0 or 1 (%d)", ev->past_records);
    if (ev->label < -1 || ev->label > 1)
        return err_set(e, ERR_INVALID, "label: not -1, 0 or 1 (%d)", ev->label);
    return ERR_OK;
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
    return FEAT_CAT_UNKNOWN;
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
static void window(const struct feat_state *prior, int r, const struct txn_event *ev, double *count,
                   double *sum)
{
    const struct feat_bucket *b = ring_c(prior, r);
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

static void history(const struct txn_event *ev, const struct feat_state *prior, double *f)
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

void feat_txn_build(const struct txn_event *ev, const struct feat_state *prior, float *x)
{
    double f[FEAT_TXN_DIM];

    ratios(ev, f);
    flags_and_raw(ev, f);
    history(ev, prior, f);
    for (int i = 0; i < FEAT_TXN_DIM; i++)
        x[i] = (float)f[i];
}

/* ---- state ---- */

void feat_state_init(struct feat_state *s)
{
    memset(s, 0, sizeof(*s));
}

/* Adds the event to its bucket of ring r, unless the bucket has already
 * left the ring (see the late-event policy in features.h). */
static void ring_add(struct feat_state *s, int r, const struct txn_event *ev)
{
    struct feat_bucket *b = ring_m(s, r);
    int n = rings[r].n;
    int64_t id = bucket_of(ev->event_time_ms, rings[r].width_ms);
    int64_t newest = bucket_of(s->last_event_ms, rings[r].width_ms);
    struct feat_bucket *slot = &b[((id % n) + n) % n];

    if (s->last_event_ms != 0 && id <= newest - n)
        return;
    if (slot->id > id)
        return; /* only in a corrupt state: never overwrite newer data */
    if (slot->id != id)
        *slot = (struct feat_bucket){.id = id, .count = 0, .sum = 0};
    if (slot->count < UINT32_MAX)
        slot->count++;
    if (!isnan(ev->amount))
        slot->sum += ev->amount;
}

void feat_state_update(const struct feat_state *prior, const struct txn_event *ev,
                       struct feat_state *next)
{
    struct feat_state s = *prior; /* prior and next may alias */

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

/* ---- idempotence: per-partition offsets and recent event ids ---- */

static int64_t g_horizon_ms = FEAT_DEDUP_HORIZON_MS;

void feat_set_dedup_horizon_ms(int64_t ms)
{
    g_horizon_ms = ms > 0 ? ms : FEAT_DEDUP_HORIZON_MS;
}

static uint64_t id_hash(const struct txn_event *ev)
{
    uint64_t h = 14695981039346656037ULL;
    size_t n = strnlen(ev->event_id, EV_ID_MAX);

    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)ev->event_id[i];
        h *= 1099511628211ULL;
    }
    return h ? h : 1;
}

int feat_state_seen(const struct feat_state *s, int32_t partition, int64_t offset,
                    const struct txn_event *ev)
{
    uint64_t h = id_hash(ev);

    for (int i = 0; i < s->n_parts; i++)
        if (s->parts[i].partition == partition && s->parts[i].offset >= offset)
            return 1;
    for (int i = 0; i < s->n_ids; i++)
        if (s->ids[i].id_hash == h &&
            s->ids[i].time_ms >= s->last_event_ms - g_horizon_ms)
            return 1;
    return 0;
}

void feat_state_mark(struct feat_state *s, int32_t partition, int64_t offset,
                     const struct txn_event *ev)
{
    int i, keep = 0;
    int64_t oldest = s->last_event_ms - g_horizon_ms;
    struct feat_pos pos = {partition, offset};

    /* the partition moves to the end (most recently applied) */
    for (i = 0; i < s->n_parts && s->parts[i].partition != partition; i++)
        ;
    if (i < s->n_parts) {
        if (s->parts[i].offset > offset)
            pos.offset = s->parts[i].offset;
        memmove(&s->parts[i], &s->parts[i + 1], (size_t)(s->n_parts - i - 1) * sizeof(pos));
        s->n_parts--;
    } else if (s->n_parts == FEAT_PARTS_MAX) {
        memmove(&s->parts[0], &s->parts[1], (size_t)(FEAT_PARTS_MAX - 1) * sizeof(pos));
        s->n_parts--;
    }
    s->parts[s->n_parts++] = pos;
    /* ids past the horizon leave; then the oldest when full */
    for (i = 0; i < s->n_ids; i++)
        if (s->ids[i].time_ms >= oldest)
            s->ids[keep++] = s->ids[i];
    s->n_ids = keep;
    if (s->n_ids == FEAT_IDS_MAX) {
        memmove(&s->ids[0], &s->ids[1], (size_t)(FEAT_IDS_MAX - 1) * sizeof(s->ids[0]));
        s->n_ids--;
    }
    s->ids[s->n_ids++] = (struct feat_seen){id_hash(ev), ev->event_time_ms};
}

/* ---- encoding: version byte, then little-endian fields ----
 *
 *   u8 version (2) | i64 last_event_ms | u64 n_amounts | f64 mean | f64 m2 |
 *   per ring (1 h, 24 h, 30 d): u8 k, then k x (i64 id | u32 count | f64 sum) |
 *   u8 np, np x (i32 partition | i64 offset) | u8 ni, ni x (u64 hash | i64 time)
 *
 * Version 1 (no trailer) is still read: its users start with no ids.
 *
 * Only non-empty buckets are written; a bucket's slot is id % N, so it is
 * not stored. Written byte by byte: the same blob on any host.
 */

#define HEAD_LEN (1 + 8 + 8 + 8 + 8)
#define BUCKET_LEN (8 + 4 + 8)
#define POS_LEN (4 + 8)
#define SEEN_LEN (8 + 8)
_Static_assert(HEAD_LEN + 3 +
                       (FEAT_W1H_BUCKETS + FEAT_W24H_BUCKETS + FEAT_W30D_BUCKETS) * BUCKET_LEN +
                       2 + FEAT_PARTS_MAX * POS_LEN + FEAT_IDS_MAX * SEEN_LEN <=
                   FEAT_STATE_MAX,
               "FEAT_STATE_MAX too small for a full state");

static unsigned char *put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        *p++ = (unsigned char)(v >> (8 * i));
    return p;
}

static unsigned char *put_f64(unsigned char *p, double d)
{
    uint64_t v;

    memcpy(&v, &d, sizeof(v));
    return put_u64(p, v);
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static double get_f64(const unsigned char *p)
{
    uint64_t v = get_u64(p);
    double d;

    memcpy(&d, &v, sizeof(d));
    return d;
}

static int ring_used(const struct feat_state *s, int r)
{
    int k = 0;

    for (int i = 0; i < rings[r].n; i++)
        k += ring_c(s, r)[i].id != 0;
    return k;
}

static unsigned char *put_ring(unsigned char *p, const struct feat_state *s, int r)
{
    const struct feat_bucket *b = ring_c(s, r);

    *p++ = (unsigned char)ring_used(s, r);
    for (int i = 0; i < rings[r].n; i++) {
        if (b[i].id == 0)
            continue;
        p = put_u64(p, (uint64_t)b[i].id);
        for (int j = 0; j < 4; j++)
            *p++ = (unsigned char)(b[i].count >> (8 * j));
        p = put_f64(p, b[i].sum);
    }
    return p;
}

int feat_state_encode(const struct feat_state *s, unsigned char *buf, size_t cap)
{
    size_t need = HEAD_LEN;
    unsigned char *p = buf;

    for (int r = 0; r < 3; r++)
        need += 1 + (size_t)ring_used(s, r) * BUCKET_LEN;
    need += 2 + (size_t)s->n_parts * POS_LEN + (size_t)s->n_ids * SEEN_LEN;
    if (need > cap)
        return ERR_NOMEM;
    *p++ = STATE_VERSION;
    p = put_u64(p, (uint64_t)s->last_event_ms);
    p = put_u64(p, s->n_amounts);
    p = put_f64(p, s->mean_amount);
    p = put_f64(p, s->m2_amount);
    for (int r = 0; r < 3; r++)
        p = put_ring(p, s, r);
    *p++ = (unsigned char)s->n_parts;
    for (int i = 0; i < s->n_parts; i++) {
        for (int j = 0; j < 4; j++)
            *p++ = (unsigned char)((uint32_t)s->parts[i].partition >> (8 * j));
        p = put_u64(p, (uint64_t)s->parts[i].offset);
    }
    *p++ = (unsigned char)s->n_ids;
    for (int i = 0; i < s->n_ids; i++) {
        p = put_u64(p, s->ids[i].id_hash);
        p = put_u64(p, (uint64_t)s->ids[i].time_ms);
    }
    return (int)(p - buf);
}

/* Reads ring r at *pos; each bucket must land in a free slot of its own. */
static int get_ring(struct feat_state *s, int r, const unsigned char *buf, size_t len, size_t *pos,
                    struct err *e)
{
    struct feat_bucket *b = ring_m(s, r);
    int n = rings[r].n, k;

    if (*pos + 1 > len)
        return err_set(e, ERR_DECODE, "feature state: truncated at byte %zu", *pos);
    k = buf[(*pos)++];
    if (k > n || *pos + (size_t)k * BUCKET_LEN > len)
        return err_set(e, ERR_DECODE, "feature state: ring %d claims %d buckets in %zu bytes", r, k,
                       len - *pos);
    for (int i = 0; i < k; i++, *pos += BUCKET_LEN) {
        const unsigned char *q = buf + *pos;
        int64_t id = (int64_t)get_u64(q);
        uint32_t c =
            (uint32_t)q[8] | (uint32_t)q[9] << 8 | (uint32_t)q[10] << 16 | (uint32_t)q[11] << 24;
        double sum = get_f64(q + 12);
        struct feat_bucket *slot = id > 0 ? &b[id % n] : NULL;
        if (!slot || slot->id != 0 || !isfinite(sum))
            return err_set(e, ERR_DECODE, "feature state: bad bucket %d of ring %d", i, r);
        *slot = (struct feat_bucket){.id = id, .count = c, .sum = sum};
    }
    return ERR_OK;
}

static int get_trailer(struct feat_state *s, const unsigned char *buf, size_t len, size_t *pos,
                       struct err *e)
{
    int k;

    if (*pos + 1 > len || (k = buf[*pos]) > FEAT_PARTS_MAX ||
        *pos + 1 + (size_t)k * POS_LEN + 1 > len)
        return err_set(e, ERR_DECODE, "feature state: bad partition offsets at byte %zu", *pos);
    (*pos)++;
    for (int i = 0; i < k; i++, *pos += POS_LEN) {
        const unsigned char *q = buf + *pos;
        s->parts[i].partition = (int32_t)((uint32_t)q[0] | (uint32_t)q[1] << 8 |
                                          (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24);
        s->parts[i].offset = (int64_t)get_u64(q + 4);
    }
    s->n_parts = k;
    k = buf[(*pos)++];
    if (k > FEAT_IDS_MAX || *pos + (size_t)k * SEEN_LEN > len)
        return err_set(e, ERR_DECODE, "feature state: bad event ids at byte %zu", *pos);
    for (int i = 0; i < k; i++, *pos += SEEN_LEN) {
        s->ids[i].id_hash = get_u64(buf + *pos);
        s->ids[i].time_ms = (int64_t)get_u64(buf + *pos + 8);
    }
    s->n_ids = k;
    return ERR_OK;
}

int feat_state_decode(struct feat_state *s, const unsigned char *buf, size_t len, struct err *e)
{
    size_t pos = HEAD_LEN;

    feat_state_init(s);
    if (len < HEAD_LEN)
        return err_set(e, ERR_DECODE, "feature state: %zu bytes, need at least %d", len, HEAD_LEN);
    if (buf[0] != STATE_VERSION && buf[0] != 1)
        return err_set(e, ERR_DECODE, "feature state: version %u, expected 1 or %d", buf[0],
                       STATE_VERSION);
    s->last_event_ms = (int64_t)get_u64(buf + 1);
    s->n_amounts = get_u64(buf + 9);
    s->mean_amount = get_f64(buf + 17);
    s->m2_amount = get_f64(buf + 25);
    if (s->last_event_ms < 0 || !isfinite(s->mean_amount) || !(s->m2_amount >= 0) ||
        !isfinite(s->m2_amount))
        return err_set(e, ERR_DECODE, "feature state: impossible header values");
    for (int r = 0; r < 3; r++) {
        if (get_ring(s, r, buf, len, &pos, e))
            return ERR_DECODE;
    }
    if (buf[0] != 1 && get_trailer(s, buf, len, &pos, e))
        return ERR_DECODE;
    if (pos != len)
        return err_set(e, ERR_DECODE, "feature state: %zu trailing bytes", len - pos);
    return ERR_OK;
}

/* ---- hash ---- */

uint64_t feat_hash(const float *x, size_t n)
{
    uint64_t h = 14695981039346656037ULL; /* FNV-1a 64 offset basis */

    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        float v = x[i];
        if (isnan(v))
            bits = 0x7fc00000u; /* every NaN (any sign or payload) hashes alike */
        else if (v == 0)
            bits = 0; /* -0 == +0, so they hash alike too */
        else
            memcpy(&bits, &v, sizeof(bits));
        for (int j = 0; j < 4; j++) { /* little-endian bytes: same hash on any host */
            h ^= (bits >> (8 * j)) & 0xffu;
            h *= 1099511628211ULL; /* FNV-1a 64 prime */
        }
    }
    return h;
}
