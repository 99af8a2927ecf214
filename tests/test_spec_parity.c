/* tests/test_spec_parity.c: the spec-driven txn-v1 (models/txn-v1.yaml,
 * compiled by common/streams/fspec.c) against the hard-coded module it replaced
 * (tests/support/txn_v1_ref.c), bit for bit.
 *
 * Random streams over a few hundred users with late events (inside and
 * beyond every ring), missing and zero inputs, every category in odd case
 * and unknown ones: each vector must have the same bits (NaNs included),
 * also when the state goes through the encoding between events.
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
#include "txn_v1_ref.h"

#define USERS 300
#define EVENTS 200000
#define T0 1699963200000LL

static uint64_t rng = 88172645463325252ULL;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double unit(void)
{
    return (double)(next() >> 11) / 9007199254740992.0;
}

/* A value that is missing 20% of the time, 0 10%, else in [0, scale). */
static double value(double scale)
{
    double u = unit();

    if (u < 0.2)
        return NAN;
    if (u < 0.3)
        return 0;
    return floor(unit() * scale * 100) / 100;
}

static void pick(char *dst, size_t cap, const char *const *opts, int n)
{
    snprintf(dst, cap, "%s", opts[next() % (uint64_t)n]);
}

static void random_event(struct txn_event *ev, int64_t *clock)
{
    static const char *const home[] = {"", "rent", "OWNER", "Parents", "priv", "ignore",
                                       "other", "castle"};
    static const char *const marital[] = {"", "single", "Married", "widow", "separated",
                                          "DIVORCED", "x"};
    static const char *const job[] = {"", "fixed", "freelance", "partime", "Others", "none"};
    double *nums[] = {&ev->amount,         &ev->income,           &ev->expenses,
                      &ev->assets,         &ev->debt,             &ev->price,
                      &ev->term_months,    &ev->seniority_years,  &ev->age,
                      &ev->credit_limit,   &ev->credit_used,      &ev->payments_on_time,
                      &ev->payments_late,  &ev->inquiries_6m,     &ev->accounts_open,
                      &ev->accounts_opened_12m, &ev->bankruptcies, &ev->collections,
                      &ev->oldest_account_months, &ev->avg_account_age_months};
    static const double scale[] = {5000, 3000, 2000, 20000, 5000, 8000, 60, 30, 80, 10000,
                                   10000, 40, 5, 6, 8, 4, 2, 2, 400, 200};
    uint64_t r = next() % 100;

    event_txn_init(ev);
    snprintf(ev->event_id, sizeof(ev->event_id), "e%llu", (unsigned long long)(next() % 1000000));
    snprintf(ev->user_id, sizeof(ev->user_id), "u%d", (int)(next() % USERS));
    /* mostly forward by up to 20 min; some late by minutes, hours or weeks */
    *clock += (int64_t)(next() % 1200000);
    ev->event_time_ms = *clock;
    if (r < 5)
        ev->event_time_ms -= (int64_t)(next() % 3600000);
    else if (r < 8)
        ev->event_time_ms -= (int64_t)(next() % (40LL * 86400000));
    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++)
        *nums[i] = value(scale[i]);
    if (next() % 4 == 0)
        ev->credit_used = ev->credit_limit * unit(); /* utilization near 0.7 too */
    pick(ev->home, sizeof(ev->home), home, 8);
    pick(ev->marital, sizeof(ev->marital), marital, 7);
    pick(ev->job, sizeof(ev->job), job, 6);
    ev->past_records = (int)(next() % 3) - 1;
}

static int user_of(const struct txn_event *ev)
{
    return atoi(ev->user_id + 1);
}

static void test_spec_vectors_equal_the_hard_coded_module_bit_for_bit(void **state)
{
    struct ref_state *ref = calloc(USERS, sizeof(*ref));
    struct feat_state *st = calloc(USERS, sizeof(*st));
    unsigned char buf[FEAT_STATE_MAX];
    int64_t clock = T0;
    long nan_seen = 0, late = 0, newest[USERS] = {0};
    struct err e = {0};

    (void)state;
    assert_non_null(ref);
    assert_non_null(st);
    for (int u = 0; u < USERS; u++) {
        ref_state_init(&ref[u]);
        feat_state_init(&st[u]);
    }
    for (long i = 0; i < EVENTS; i++) {
        struct txn_event ev;
        float a[REF_TXN_DIM], b[FEAT_TXN_DIM];
        int u;
        random_event(&ev, &clock);
        u = user_of(&ev);
        late += ev.event_time_ms < newest[u];
        if (ev.event_time_ms > newest[u])
            newest[u] = (long)ev.event_time_ms;
        ref_txn_build(&ev, &ref[u], a);
        feat_txn_build(&ev, &st[u], b);
        if (memcmp(a, b, sizeof(a)) != 0) {
            for (int k = 0; k < FEAT_TXN_DIM; k++)
                if (memcmp(&a[k], &b[k], sizeof(float)))
                    fail_msg("event %ld: %s differs: hard-coded %.9g, spec %.9g", i,
                             ref_txn_names()[k], a[k], b[k]);
        }
        for (int k = 0; k < FEAT_TXN_DIM; k++)
            nan_seen += isnan(b[k]);
        ref_state_update(&ref[u], &ev, &ref[u]);
        feat_state_update(&st[u], &ev, &st[u]);
        if (i % 7 == 0) { /* through the store's bytes and back */
            int n = feat_state_encode(&st[u], buf, sizeof(buf));
            assert_true(n > 0);
            assert_int_equal(feat_state_decode(&st[u], buf, (size_t)n, &e), ERR_OK);
        }
    }
    printf("spec parity: %d events, %ld late, %ld NaN features, all %d features bit-identical\n",
           EVENTS, late, nan_seen, FEAT_TXN_DIM);
    assert_true(late > EVENTS / 50);
    free(ref);
    free(st);
}

static void test_names_and_order_equal_the_hard_coded_module(void **state)
{
    (void)state;
    for (int k = 0; k < FEAT_TXN_DIM; k++)
        assert_string_equal(feat_txn_names()[k], ref_txn_names()[k]);
    assert_null(feat_txn_names()[FEAT_TXN_DIM]);
    assert_string_equal(feat_txn_version(), REF_TXN_VERSION);
}

/* The state the spec keeps per user is no larger than the struct it
 * replaces (the plan's words; the struct itself has room for bigger specs). */
static void test_state_per_user_is_no_larger(void **state)
{
    const struct fspec *p = feat_txn_spec();

    (void)state;
    assert_true(sizeof(int64_t) + fspec_state_words(p) * 8 <= sizeof(struct ref_state));
    printf("state per user: %zu bytes in memory (hard-coded %zu), at most %zu encoded\n",
           sizeof(int64_t) + fspec_state_words(p) * 8, sizeof(struct ref_state),
           fspec_state_max_bytes(p));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_vectors_equal_the_hard_coded_module_bit_for_bit),
        cmocka_unit_test(test_names_and_order_equal_the_hard_coded_module),
        cmocka_unit_test(test_state_per_user_is_no_larger),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
