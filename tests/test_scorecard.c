/* Points scorecard (common/models/scorecard.c): scaling (PDO 20, 600 at 50:1),
 * binning, missing bins, rounding and clipping, reason codes, refusal of
 * bad files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "scorecard.h"

#define HDR "{\"format\":\"streamml-scorecard\",\"name\":\"t\",\"version\":\"3\","
#define ONE_BIN(name, missing, pts)                                                                \
    "{\"name\":\"" name "\",\"missing_points\":" #missing ",\"bins\":[{\"upper\":null,"            \
    "\"points\":" #pts "}]}"

/* Five features; the most each can give: a 40, b 30, c 20, d 3, e 1. */
static const char *card_json =
    HDR "\"pdo\":20,\"score0\":600,\"odds0\":50,\"base_points\":500,\"features\":["
        "{\"name\":\"a\",\"missing_points\":0,\"bins\":[{\"upper\":1,\"points\":10},"
        "{\"upper\":null,\"points\":40}]},"
        "{\"name\":\"b\",\"missing_points\":5,\"bins\":[{\"upper\":0,\"points\":30},"
        "{\"upper\":null,\"points\":0}]}," ONE_BIN("c", 0, 20) "," ONE_BIN("d", 2, 3) "," ONE_BIN(
            "e", 0, 1) "]}";

static int setup(void **st)
{
    struct err e = {0};

    *st = card_open_string(card_json, &e);
    if (!*st)
        fprintf(stderr, "%s\n", e.msg);
    return *st ? 0 : -1;
}

static int teardown(void **st)
{
    card_close(*st);
    return 0;
}

/* Loads a card that must be refused with `why` in the message. */
static void assert_refused(const char *json, const char *why)
{
    struct err e = {0};
    struct card *c = card_open_string(json, &e);

    if (c || !strstr(e.msg, why))
        fail_msg("expected refusal with \"%s\", got: %s", why, c ? "(loaded)" : e.msg);
    assert_int_equal(e.code, ERR_CONFIG);
}

static void test_600_points_at_odds_50_to_1(void **st)
{
    (void)st;
    assert_float_equal(card_score_from_prob(1.0 / 51.0, 20, 600, 50), 600.0, 1e-9);
    assert_float_equal(card_prob_from_score(600, 20, 600, 50), 1.0 / 51.0, 1e-12);
}

static void test_620_points_at_odds_100_to_1(void **st)
{
    (void)st;
    assert_float_equal(card_score_from_prob(1.0 / 101.0, 20, 600, 50), 620.0, 1e-9);
    assert_float_equal(card_prob_from_score(580, 20, 600, 50), 1.0 / 26.0, 1e-12);
}

static void test_prob_score_round_trip(void **st)
{
    (void)st;
    for (double p = 0.001; p < 1; p += 0.0737) {
        double s = card_score_from_prob(p, 20, 600, 50);
        assert_float_equal(card_prob_from_score(s, 20, 600, 50), p, 1e-12);
        assert_float_equal(card_score_from_prob(card_prob_from_score(s, 25, 500, 20), 25, 500, 20),
                           s, 1e-9);
    }
}

static void test_points_are_base_plus_each_feature_bin(void **st)
{
    struct card_result r;
    float x[5] = {0.5f, 2, 0, 0, 0}; /* a bin 0 (10), b bin 1 (0) */

    card_score(*st, x, &r);
    assert_float_equal(r.points, 500 + 10 + 0 + 20 + 3 + 1, 1e-9);
    assert_int_equal(r.score, 534);
}

static void test_value_at_upper_bound_goes_to_next_bin(void **st)
{
    struct card_result lo, at;
    float below[5] = {0.999f, -1, 0, 0, 0}, edge[5] = {1, -1, 0, 0, 0};

    card_score(*st, below, &lo);
    card_score(*st, edge, &at);
    assert_float_equal(at.points - lo.points, 40 - 10, 1e-9); /* x < upper is false at 1 */
}

static void test_nan_takes_missing_points(void **st)
{
    struct card_result r;
    float x[5] = {NAN, NAN, NAN, NAN, NAN};

    card_score(*st, x, &r);
    assert_float_equal(r.points, 500 + 0 + 5 + 0 + 2 + 0, 1e-9);
}

static void test_score_rounds_points(void **st)
{
    struct err e = {0};
    struct card_result r;
    float x[1] = {0};
    struct card *c =
        card_open_string(HDR "\"base_points\":600.5,\"features\":[" ONE_BIN("a", 0, 0.25) "]}", &e);

    (void)st;
    assert_non_null(c);
    card_score(c, x, &r);
    assert_float_equal(r.points, 600.75, 1e-12);
    assert_int_equal(r.score, 601);
    card_close(c);
}

static void test_score_clipped_to_300_850(void **st)
{
    struct err e = {0};
    struct card_result r;
    float x[1] = {0};
    struct card *hi =
        card_open_string(HDR "\"base_points\":2000,\"features\":[" ONE_BIN("a", 0, 0) "]}", &e);
    struct card *lo =
        card_open_string(HDR "\"base_points\":-50,\"features\":[" ONE_BIN("a", 0, 0) "]}", &e);

    (void)st;
    assert_non_null(hi);
    assert_non_null(lo);
    card_score(hi, x, &r);
    assert_int_equal(r.score, 850);
    assert_float_equal(r.points, 2000, 1e-9); /* points stay unclipped */
    card_score(lo, x, &r);
    assert_int_equal(r.score, 300);
    card_close(hi);
    card_close(lo);
}

static void test_probability_from_unclipped_points(void **st)
{
    struct err e = {0};
    struct card_result r;
    float x[1] = {0};
    struct card *c =
        card_open_string(HDR "\"base_points\":900,\"features\":[" ONE_BIN("a", 0, 0) "]}", &e);

    (void)st;
    assert_non_null(c);
    card_score(c, x, &r);
    assert_float_equal(r.probability, card_prob_from_score(900, 20, 600, 50), 1e-15);
    card_close(c);
}

static void test_scaling_defaults_when_absent(void **st)
{
    struct err e = {0};
    struct card_scaling s;
    struct card *c = card_open_string(HDR "\"features\":[" ONE_BIN("a", 0, 0) "]}", &e);

    (void)st;
    assert_non_null(c);
    card_get_scaling(c, &s);
    assert_true(s.pdo == 20 && s.score0 == 600 && s.odds0 == 50);
    assert_true(s.min_score == 300 && s.max_score == 850 && s.base_points == 0);
    card_close(c);
}

static void test_reason_codes_worst_first(void **st)
{
    struct card_result r;
    float x[5] = {2, 2, 0, NAN, NAN}; /* lose a 0, b 30, c 0, d 1, e 1 */

    card_score(*st, x, &r);
    assert_int_equal(r.n_reasons, 3);
    assert_string_equal(r.reasons[0], "b");
    assert_float_equal(r.lost[0], 30, 1e-12);
    assert_string_equal(r.reasons[1], "d");
    assert_string_equal(r.reasons[2], "e");
}

static void test_reason_codes_at_most_four(void **st)
{
    struct card_result r;
    float x[5] = {0.5f, 1, NAN, NAN, NAN}; /* lose 30, 30, 20, 1, 1 */

    card_score(*st, x, &r);
    assert_int_equal(r.n_reasons, CARD_MAX_REASONS);
    assert_string_equal(r.reasons[2], "c");
    assert_string_equal(r.reasons[3], "d"); /* e lost as much as d, but comes later */
}

static void test_reason_code_ties_keep_feature_order(void **st)
{
    struct card_result r;
    float x[5] = {0.5f, 1, 0, 0, 0}; /* a and b both lose 30 */

    card_score(*st, x, &r);
    assert_int_equal(r.n_reasons, 2);
    assert_string_equal(r.reasons[0], "a");
    assert_string_equal(r.reasons[1], "b");
}

static void test_no_reasons_at_best_bins(void **st)
{
    struct card_result r;
    float x[5] = {2, -1, 0, 0, 0};

    card_score(*st, x, &r);
    assert_int_equal(r.n_reasons, 0);
}

/* The best bin may be the missing one: then a present value loses points. */
static void test_missing_bin_counts_as_best_bin(void **st)
{
    struct err e = {0};
    struct card_result r;
    float x[1] = {0};
    struct card *c = card_open_string(HDR "\"features\":[" ONE_BIN("a", 9, 4) "]}", &e);

    (void)st;
    assert_non_null(c);
    card_score(c, x, &r);
    assert_int_equal(r.n_reasons, 1);
    assert_float_equal(r.lost[0], 5, 1e-12);
    card_close(c);
}

static void test_bins_and_names_exposed(void **st)
{
    const double *upper, *points;
    double missing;

    assert_int_equal(card_num_features(*st), 5);
    assert_string_equal(card_feature_name(*st, 1), "b");
    assert_null(card_feature_name(*st, 5));
    assert_string_equal(card_name(*st), "t");
    assert_string_equal(card_version(*st), "3");
    assert_int_equal(card_feature_bins(*st, 0, &upper, &points, &missing), 2);
    assert_true(upper[0] == 1 && isinf(upper[1]) && points[1] == 40 && missing == 0);
    assert_int_equal(card_feature_bins(*st, 5, &upper, &points, &missing), 0);
}

static void test_other_format_refused(void **st)
{
    (void)st;
    assert_refused("{\"format\":\"other\"}", "expected \"streamml-scorecard\"");
    assert_refused("{\"learner\":{}}", "format");
}

static void test_malformed_json_refused(void **st)
{
    (void)st;
    assert_refused("{\"format\": \"streamml-scorecard\", ", "line 1");
}

static void test_bins_not_ascending_refused(void **st)
{
    (void)st;
    assert_refused(HDR "\"features\":[{\"name\":\"a\",\"missing_points\":0,\"bins\":["
                       "{\"upper\":2,\"points\":1},{\"upper\":2,\"points\":1},"
                       "{\"upper\":null,\"points\":0}]}]}",
                   "features[0].bins[1].upper: bins not in ascending order");
}

static void test_bounded_last_bin_refused(void **st)
{
    (void)st;
    assert_refused(HDR "\"features\":[{\"name\":\"a\",\"missing_points\":0,\"bins\":["
                       "{\"upper\":1,\"points\":1},{\"upper\":2,\"points\":0}]}]}",
                   "last bin is unbounded");
    assert_refused(HDR "\"features\":[{\"name\":\"a\",\"missing_points\":0,\"bins\":["
                       "{\"upper\":null,\"points\":1},{\"upper\":null,\"points\":0}]}]}",
                   "bins[0].upper");
}

static void test_points_not_numbers_refused(void **st)
{
    (void)st;
    assert_refused(HDR "\"features\":[{\"name\":\"a\",\"missing_points\":0,\"bins\":["
                       "{\"upper\":null,\"points\":\"7\"}]}]}",
                   "bins[0].points");
    assert_refused(HDR "\"features\":[{\"name\":\"a\",\"bins\":[{\"upper\":null,\"points\":1}]}]}",
                   "missing_points");
}

static void test_bad_scaling_refused(void **st)
{
    (void)st;
    assert_refused(HDR "\"pdo\":0,\"features\":[" ONE_BIN("a", 0, 0) "]}", "pdo and odds0");
    assert_refused(HDR "\"odds0\":-2,\"features\":[" ONE_BIN("a", 0, 0) "]}", "pdo and odds0");
    assert_refused(HDR "\"min_score\":900,\"features\":[" ONE_BIN("a", 0, 0) "]}", "min_score");
}

static void test_unknown_key_refused(void **st)
{
    (void)st;
    assert_refused(HDR "\"features\":[{\"name\":\"a\",\"missing_point\":0,\"bins\":["
                       "{\"upper\":null,\"points\":1}]}]}",
                   "unknown key \"missing_point\"");
}

static void test_duplicate_feature_refused(void **st)
{
    (void)st;
    assert_refused(HDR "\"features\":[" ONE_BIN("a", 0, 0) "," ONE_BIN("a", 0, 0) "]}",
                   "\"a\" appears twice");
    assert_refused(HDR "\"features\":[]}", "features");
}

static void test_missing_file_error_names_path(void **st)
{
    struct err e = {0};

    (void)st;
    assert_null(card_open("/nonexistent/card.json", &e));
    assert_non_null(strstr(e.msg, "/nonexistent/card.json"));
}

/* The card train.py writes loads, and its scale is PDO 20 / 600 at 50:1. */
static void test_demo_scorecard_loads(void **st)
{
    struct err e = {0};
    struct card *c = card_open("models/credit_scorecard.json", &e);
    struct card_scaling s;

    (void)st;
    if (!c)
        fail_msg("%s", e.msg);
    card_get_scaling(c, &s);
    assert_true(card_num_features(c) >= 4);
    assert_true(s.pdo == 20 && s.score0 == 600 && s.odds0 == 50);
    card_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_600_points_at_odds_50_to_1),
        cmocka_unit_test(test_620_points_at_odds_100_to_1),
        cmocka_unit_test(test_prob_score_round_trip),
        cmocka_unit_test_setup_teardown(test_points_are_base_plus_each_feature_bin, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_value_at_upper_bound_goes_to_next_bin, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_nan_takes_missing_points, setup, teardown),
        cmocka_unit_test(test_score_rounds_points),
        cmocka_unit_test(test_score_clipped_to_300_850),
        cmocka_unit_test(test_probability_from_unclipped_points),
        cmocka_unit_test(test_scaling_defaults_when_absent),
        cmocka_unit_test_setup_teardown(test_reason_codes_worst_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reason_codes_at_most_four, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reason_code_ties_keep_feature_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_reasons_at_best_bins, setup, teardown),
        cmocka_unit_test(test_missing_bin_counts_as_best_bin),
        cmocka_unit_test_setup_teardown(test_bins_and_names_exposed, setup, teardown),
        cmocka_unit_test(test_other_format_refused),
        cmocka_unit_test(test_malformed_json_refused),
        cmocka_unit_test(test_bins_not_ascending_refused),
        cmocka_unit_test(test_bounded_last_bin_refused),
        cmocka_unit_test(test_points_not_numbers_refused),
        cmocka_unit_test(test_bad_scaling_refused),
        cmocka_unit_test(test_unknown_key_refused),
        cmocka_unit_test(test_duplicate_feature_refused),
        cmocka_unit_test(test_missing_file_error_names_path),
        cmocka_unit_test(test_demo_scorecard_loads),
    };
    return cmocka_run_group_tests_name("scorecard", tests, NULL, NULL);
}
