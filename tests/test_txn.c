/* tests/test_txn.c: common/streams/txn.c, the step and scoring shared by the
 * worker, replay and featurize. */
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

#include "cfg.h"
#include "features.h"
#include "gbdt.h"
#include "reasons.h"
#include "treeshap.h"
#include "txn.h"

static struct cfg *demo_cfg(void)
{
    struct cfg *c = cfg_new();

    assert_non_null(c);
    return c; /* defaults: models/credit_gbdt.json, models/credit_scorecard.json */
}

static void make_event(struct txn_event *ev, int i)
{
    event_txn_init(ev);
    snprintf(ev->event_id, sizeof(ev->event_id), "e%d", i);
    snprintf(ev->user_id, sizeof(ev->user_id), "u%d", i % 17);
    ev->event_time_ms = 1700000000000LL + (int64_t)i * 3600000;
    ev->amount = i % 9 ? 100 + 37 * (i % 50) : NAN;
    ev->income = 50 + i % 300;
    ev->expenses = i % 5 ? 35 + i % 40 : NAN;
    ev->term_months = 12 * (1 + i % 5);
    ev->age = 20 + i % 50;
    ev->debt = i % 3 ? NAN : 10 * i % 2000;
    snprintf(ev->home, sizeof(ev->home), "%s", i % 2 ? "rent" : "owner");
}

static void test_batch_scoring_equals_one_by_one(void **st)
{
    enum { N = 300 };
    struct cfg *c = demo_cfg();
    struct err e = {0};
    struct txn_scorer *s = txn_scorer_open(c, &e);
    static float x[N][FEAT_TXN_DIM];
    static struct txn_prediction one[N], many[N];
    struct feat_state fs[17];
    uint64_t dec[3] = {0}, dec1[3] = {0};
    struct txn_event ev;

    (void)st;
    assert_non_null(s);
    for (int u = 0; u < 17; u++)
        feat_state_init(&fs[u]);
    for (int i = 0; i < N; i++) {
        make_event(&ev, i);
        feat_txn_build(&ev, &fs[i % 17], x[i]);
        feat_state_update(&fs[i % 17], &ev, &fs[i % 17]);
        txn_prediction_init(&one[i], &ev, "t", 0, i);
        many[i] = one[i];
        dec1[txn_score(s, x[i], &one[i])]++;
    }
    /* 300 rows: whole blocks, whole lanes and a ragged tail. */
    assert_int_equal(txn_score_batch(s, &x[0][0], N, many, dec), ERR_OK);
    for (int i = 0; i < N; i++) {
        assert_true(many[i].probability == one[i].probability);
        assert_true(many[i].score_probability == one[i].score_probability);
        assert_int_equal(many[i].score, one[i].score);
        assert_string_equal(many[i].decision, one[i].decision);
        assert_string_equal(many[i].feature_hash, one[i].feature_hash);
        assert_int_equal(many[i].n_reasons, one[i].n_reasons);
        for (int k = 0; k < one[i].n_reasons; k++)
            assert_string_equal(many[i].reasons[k], one[i].reasons[k]);
        assert_int_equal(txn_decision_index(one[i].decision) == 0, one[i].n_reasons == 0);
    }
    for (int d = 0; d < 3; d++)
        assert_true(dec[d] == dec1[d]);
    assert_true(dec[0] > 0 && dec[0] < N);
    txn_scorer_close(s);
    cfg_free(c);
}

static void test_step_skips_only_what_the_state_already_holds(void **st)
{
    struct feat_state s;
    struct txn_event ev;
    float x[FEAT_TXN_DIM];
    int32_t part = -1;
    int64_t off = -1;

    (void)st;
    feat_state_init(&s);
    make_event(&ev, 1);
    assert_int_equal(txn_step(&ev, 2, 10, &s, &part, &off, x), 1);
    assert_true(part == 2 && off == 10);
    assert_int_equal(txn_step(&ev, 2, 10, &s, &part, &off, x), 0); /* redelivered */
    assert_int_equal(txn_step(&ev, 2, 9, &s, &part, &off, x), 0);  /* older */
    assert_true(part == 2 && off == 10);
    assert_int_equal(feat_state_count(&s, "amount"), 1);
    make_event(&ev, 2);
    assert_int_equal(txn_step(&ev, 3, 0, &s, &part, &off, x), 1); /* another partition */
    assert_true(part == 3 && off == 0);
}

/* Issue 23 case 5: the same event_id produced twice (a producer retry, an
 * upstream replay) was applied twice: every user 40 events instead of 20. */
static void test_same_event_id_is_applied_once(void **st)
{
    struct feat_state s;
    struct txn_event ev;
    float x[FEAT_TXN_DIM];
    int32_t part = -1;
    int64_t off = -1;
    int applied = 0;

    (void)st;
    feat_state_init(&s);
    for (int i = 0; i < 20; i++) {
        make_event(&ev, i);
        applied += txn_step(&ev, 0, 2 * i, &s, &part, &off, x);
        applied += txn_step(&ev, 0, 2 * i + 1, &s, &part, &off, x); /* produced again */
    }
    assert_int_equal(applied, 20);
    assert_int_equal(feat_state_count(&s, "amount"), 20 - 3); /* events 0, 9, 18 have no amount */
    /* past the horizon the id is forgotten (bounded memory) */
    feat_set_dedup_horizon_ms(1000);
    make_event(&ev, 0);
    assert_int_equal(txn_step(&ev, 0, 100, &s, &part, &off, x), 1);
    feat_set_dedup_horizon_ms(-1);
    assert_true(s.n_ids <= FEAT_IDS_MAX);
}

/* Issue 23 case 5: a user whose events sit in two partitions was applied
 * again on redelivery (the state held only the last partition's offset). The
 * per-partition offsets travel in the stored blob. */
static void test_user_on_two_partitions_is_not_double_applied(void **st)
{
    struct feat_state s;
    struct txn_event ev;
    float x[FEAT_TXN_DIM];
    unsigned char blob[FEAT_STATE_MAX];
    int32_t part = -1;
    int64_t off = -1;
    struct err e = {0};
    int applied = 0, n;

    (void)st;
    feat_state_init(&s);
    for (int i = 0; i < 10; i++) { /* alternately from partitions 0 and 1 */
        make_event(&ev, i);
        applied += txn_step(&ev, i % 2, 100 + i, &s, &part, &off, x);
    }
    assert_int_equal(applied, 10);
    n = feat_state_encode(&s, blob, sizeof(blob));
    assert_true(n > 0);
    assert_int_equal(txn_state_load(&s, &part, &off, blob, (size_t)n, part, off, &e), ERR_OK);
    for (int i = 0; i < 10; i++) { /* both partitions redelivered */
        make_event(&ev, i);
        snprintf(ev.event_id, sizeof(ev.event_id), "other-id-%d", i); /* ids do not help */
        applied += txn_step(&ev, i % 2, 100 + i, &s, &part, &off, x);
    }
    assert_int_equal(applied, 10);
}

static void test_state_load_replaces_a_corrupt_blob(void **st)
{
    struct feat_state s;
    unsigned char blob[FEAT_STATE_MAX];
    int32_t part;
    int64_t off;
    struct err e = {0};
    int n;

    (void)st;
    feat_state_init(&s);
    s.last_event_ms = 1700000000000LL;
    n = feat_state_encode(&s, blob, sizeof(blob));
    assert_true(n > 0);
    assert_int_equal(txn_state_load(&s, &part, &off, blob, (size_t)n, 4, 77, &e), ERR_OK);
    assert_true(part == 4 && off == 77 && s.last_event_ms == 1700000000000LL);
    assert_int_equal(txn_state_load(&s, &part, &off, blob, 0, 4, 77, &e), ERR_OK);
    assert_true(part == -1 && off == -1 && s.last_event_ms == 0);
    blob[0] = 99; /* a version nobody wrote */
    assert_int_equal(txn_state_load(&s, &part, &off, blob, (size_t)n, 4, 77, &e), ERR_DECODE);
    assert_true(part == -1 && off == -1 && s.last_event_ms == 0);
}

/* txn_state_load leaves the clearing to the decoder: a state loaded over
 * one holding another user's data (the batch's slots are reused) must equal
 * the same blob loaded over a cleared one, byte for byte. */
static void test_state_load_over_a_used_state_keeps_nothing_of_it(void **st)
{
    struct feat_state a, b;
    struct txn_event ev;
    float x[FEAT_TXN_DIM];
    unsigned char blob[FEAT_STATE_MAX];
    int32_t part = -1;
    int64_t off = -1;
    struct err e = {0};
    int n;

    (void)st;
    feat_state_init(&a);
    make_event(&ev, 0);
    txn_step(&ev, 0, 5, &a, &part, &off, x);
    n = feat_state_encode(&a, blob, sizeof(blob));
    assert_true(n > 0);
    feat_state_init(&b);
    for (int i = 1; i < 40; i++) { /* b: more buckets, partitions and ids than a */
        make_event(&ev, i);
        ev.event_time_ms += (int64_t)i * 3600 * 1000;
        txn_step(&ev, i % 5, 100 + i, &b, &part, &off, x);
    }
    memset(&a, 0x5a, sizeof(a)); /* and garbage where b has none */
    assert_int_equal(txn_state_load(&a, &part, &off, blob, (size_t)n, 0, 5, &e), ERR_OK);
    assert_int_equal(txn_state_load(&b, &part, &off, blob, (size_t)n, 0, 5, &e), ERR_OK);
    assert_memory_equal(&a, &b, sizeof(a));
    feat_state_init(&a);
    assert_int_equal(txn_state_load(&a, &part, &off, blob, (size_t)n, 0, 5, &e), ERR_OK);
    assert_memory_equal(&a, &b, sizeof(a));
}

static void test_model_with_unknown_feature_is_a_config_error(void **st)
{
    struct cfg *c = demo_cfg();
    struct err e = {0};

    (void)st;
    assert_int_equal(cfg_set(c, "model.gbdt", "tests/fixtures/xgb_named.json", "test", &e), 0);
    assert_null(txn_scorer_open(c, &e));
    assert_int_equal(e.code, ERR_CONFIG);
    assert_non_null(strstr(e.msg, "f_0"));
    err_clear(&e);
    assert_int_equal(cfg_set(c, "model.gbdt", "/nonexistent/model.json", "test", &e), 0);
    assert_null(txn_scorer_open(c, &e));
    assert_non_null(strstr(e.msg, "/nonexistent/model.json"));
    cfg_free(c);
}

/* Scores N demo events; decisions counted in dec. */
enum { NX = 300 };
static void score_demo(struct txn_scorer *s, float (*x)[FEAT_TXN_DIM], struct txn_prediction *p,
                       int dec[3])
{
    struct feat_state fs[17];
    struct txn_event ev;

    for (int u = 0; u < 17; u++)
        feat_state_init(&fs[u]);
    for (int i = 0; i < NX; i++) {
        make_event(&ev, i);
        feat_txn_build(&ev, &fs[i % 17], x[i]);
        feat_state_update(&fs[i % 17], &ev, &fs[i % 17]);
        txn_prediction_init(&p[i], &ev, "t", 0, i);
        dec[txn_score(s, x[i], &p[i])]++;
    }
}

/* Issue 18: a review or decline carries the reasons of the model that
 * decided (the gbdt): its largest positive TreeSHAP values, computed here
 * apart, worst first, with the texts shipped next to the model; the
 * scorecard's own codes come apart, in card_reasons. */
static void test_adverse_decisions_carry_the_deciding_models_reasons(void **st)
{
    struct cfg *c = demo_cfg();
    struct err e = {0};
    struct txn_scorer *s = txn_scorer_open(c, &e);
    static float x[NX][FEAT_TXN_DIM];
    static struct txn_prediction p[NX];
    struct gbdt *g = gbdt_open("models/credit_gbdt.json", &e);
    struct treeshap *ts = g ? treeshap_open(g, &e) : NULL;
    struct treeshap_ws *w = ts ? treeshap_ws_open(ts) : NULL;
    struct reasons *texts = g ? reasons_open("models/credit_gbdt.reasons.json", g, &e) : NULL;
    int dec[3] = {0}, adverse = 0;
    uint64_t explained, ns;
    float xg[256];
    double phi[257];

    (void)st;
    assert_non_null(s);
    assert_non_null(w);
    assert_non_null(texts);
    assert_true(gbdt_num_features(g) < 256);
    score_demo(s, x, p, dec);
    for (int i = 0; i < NX; i++) {
        int d = txn_decision_index(p[i].decision), top = -1;
        if (d == 0) {
            assert_int_equal(p[i].n_reasons, 0);
            assert_int_equal(p[i].n_card_reasons, 0);
            continue;
        }
        adverse++;
        for (size_t j = 0; j < gbdt_num_features(g); j++)
            xg[j] = x[i][feat_txn_index(gbdt_feature_name(g, j))];
        treeshap_explain(ts, w, xg, phi);
        for (size_t j = 0; j < gbdt_num_features(g); j++)
            if (top < 0 || phi[j] > phi[top])
                top = (int)j;
        assert_true(p[i].n_reasons >= 1);
        assert_string_equal(p[i].reason_features[0], gbdt_feature_name(g, (size_t)top));
        assert_string_equal(p[i].reasons[0], reasons_text(texts, (size_t)top));
        assert_true(p[i].reason_values[0] == phi[top]);
        for (int k = 1; k < p[i].n_reasons; k++)
            assert_true(p[i].reason_values[k] > 0 &&
                        p[i].reason_values[k] <= p[i].reason_values[k - 1]);
        assert_true(p[i].n_card_reasons >= 1);
    }
    assert_true(adverse > 0);
    txn_scorer_explain_stats(s, &explained, &ns);
    assert_true(explained == (uint64_t)adverse);
    assert_true(ns > 0);
    reasons_close(texts);
    treeshap_ws_close(w);
    treeshap_close(ts);
    gbdt_close(g);
    txn_scorer_close(s);
    cfg_free(c);
}

/* explain.decisions picks what is explained; a bad word is named. */
static void test_explained_decisions_are_configurable(void **st)
{
    struct cfg *c = demo_cfg();
    struct err e = {0};
    struct txn_scorer *s;
    static float x[NX][FEAT_TXN_DIM];
    static struct txn_prediction p[NX];
    int dec[3] = {0};
    uint64_t explained, ns;

    (void)st;
    assert_int_equal(cfg_set(c, "explain.decisions", "decline", "test", &e), 0);
    s = txn_scorer_open(c, &e);
    assert_non_null(s);
    score_demo(s, x, p, dec);
    assert_true(dec[1] > 0 && dec[2] > 0);
    for (int i = 0; i < NX; i++)
        assert_int_equal(p[i].n_reasons > 0, txn_decision_index(p[i].decision) == 2);
    txn_scorer_explain_stats(s, &explained, &ns);
    assert_true(explained == (uint64_t)dec[2]);
    txn_scorer_close(s);
    assert_int_equal(cfg_set(c, "explain.decisions", "decline,sometimes", "test", &e), 0);
    assert_null(txn_scorer_open(c, &e));
    assert_int_equal(e.code, ERR_CONFIG);
    assert_non_null(strstr(e.msg, "\"sometimes\""));
    cfg_free(c);
}

/* A reason table for another model is refused, naming the feature. */
static void test_reason_table_for_another_model_is_refused(void **st)
{
    struct cfg *c = demo_cfg();
    struct err e = {0};
    char dir[] = "/tmp/txnreasons.XXXXXX", path[300];
    FILE *f;

    (void)st;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/r.json", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"format\": \"streamml-reasons\", \"reasons\": {\"shoe_size\": \"Feet\"}}", f);
    fclose(f);
    assert_int_equal(cfg_set(c, "model.reasons", path, "test", &e), 0);
    assert_null(txn_scorer_open(c, &e));
    assert_int_equal(e.code, ERR_CONFIG);
    assert_non_null(strstr(e.msg, "reasons.shoe_size"));
    unlink(path);
    rmdir(dir);
    cfg_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_scoring_equals_one_by_one),
        cmocka_unit_test(test_step_skips_only_what_the_state_already_holds),
        cmocka_unit_test(test_same_event_id_is_applied_once),
        cmocka_unit_test(test_user_on_two_partitions_is_not_double_applied),
        cmocka_unit_test(test_state_load_replaces_a_corrupt_blob),
        cmocka_unit_test(test_state_load_over_a_used_state_keeps_nothing_of_it),
        cmocka_unit_test(test_model_with_unknown_feature_is_a_config_error),
        cmocka_unit_test(test_adverse_decisions_carry_the_deciding_models_reasons),
        cmocka_unit_test(test_explained_decisions_are_configurable),
        cmocka_unit_test(test_reason_table_for_another_model_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
