/* Points scorecard: scaling (PDO 20, 600 at 50:1), clipping, missing bins,
 * reason codes, refusal of bad files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "scorecard.h"

static const char *card_json =
    "{\"format\":\"streamml-scorecard\",\"name\":\"t\",\"version\":\"3\",\"base_points\":500,"
    "\"features\":["
    "{\"name\":\"a\",\"missing_points\":0,\"bins\":[{\"upper\":1,\"points\":10},"
    "{\"upper\":null,\"points\":40}]},"
    "{\"name\":\"b\",\"missing_points\":5,\"bins\":[{\"upper\":0,\"points\":30},"
    "{\"upper\":null,\"points\":0}]},"
    "{\"name\":\"c\",\"missing_points\":0,\"bins\":[{\"upper\":null,\"points\":20}]},"
    "{\"name\":\"d\",\"missing_points\":2,\"bins\":[{\"upper\":null,\"points\":3}]},"
    "{\"name\":\"e\",\"missing_points\":0,\"bins\":[{\"upper\":null,\"points\":1}]}]}";

static void test_scaling_600_at_50_to_1_and_pdo_20(void **st)
{
    (void)st;
    double p50 = 1.0 / 51.0, p100 = 1.0 / 101.0;

    assert_float_equal(card_score_from_prob(p50, 20, 600, 50), 600.0, 1e-9);
    assert_float_equal(card_score_from_prob(p100, 20, 600, 50), 620.0, 1e-6);
    assert_float_equal(card_prob_from_score(580, 20, 600, 50), 1.0 / 26.0, 1e-12);
    for (double p = 0.01; p < 1; p += 0.07)
        assert_float_equal(card_prob_from_score(card_score_from_prob(p, 20, 600, 50), 20, 600, 50),
                           p, 1e-12);
}

static void test_points_bins_and_missing(void **st)
{
    (void)st;
    struct err e = {0};
    struct card *c = card_open_string(card_json, &e);
    struct card_result r;
    float best[5] = {2, -1, 0, 0, 0}, x[5] = {0.5f, NAN, 0, NAN, 0};

    assert_non_null(c);
    assert_string_equal(card_version(c), "3");
    card_score(c, best, &r);
    assert_float_equal(r.points, 500 + 40 + 30 + 20 + 3 + 1, 1e-9);
    assert_int_equal(r.n_reasons, 0);
    card_score(c, x, &r);
    assert_float_equal(r.points, 500 + 10 + 5 + 20 + 2 + 1, 1e-9);
    assert_int_equal(r.score, 538);
    assert_float_equal(r.probability, card_prob_from_score(538, 20, 600, 50), 1e-12);
    card_close(c);
}

static void test_reason_codes_worst_first_at_most_four(void **st)
{
    (void)st;
    struct err e = {0};
    struct card *c = card_open_string(card_json, &e);
    struct card_result r;
    float x[5] = {0.5f, 1, NAN, NAN, NAN}; /* lose 30, 30, 20, 1, 1 */

    card_score(c, x, &r);
    assert_int_equal(r.n_reasons, 4);
    assert_string_equal(r.reasons[0], "a"); /* tie 30/30: earlier feature first */
    assert_string_equal(r.reasons[1], "b");
    assert_string_equal(r.reasons[2], "c");
    assert_string_equal(r.reasons[3], "d");
    assert_float_equal(r.lost[0], 30, 1e-9);
    card_close(c);
}

static void test_score_clipped_to_300_850(void **st)
{
    (void)st;
    struct err e = {0};
    struct card_result r;
    float x[1] = {0};
    struct card *hi = card_open_string(
        "{\"format\":\"streamml-scorecard\",\"base_points\":2000,\"features\":[{\"name\":\"a\","
        "\"missing_points\":0,\"bins\":[{\"upper\":null,\"points\":0}]}]}", &e);
    struct card *lo = card_open_string(
        "{\"format\":\"streamml-scorecard\",\"base_points\":-50,\"features\":[{\"name\":\"a\","
        "\"missing_points\":0,\"bins\":[{\"upper\":null,\"points\":0}]}]}", &e);

    card_score(hi, x, &r);
    assert_int_equal(r.score, 850);
    assert_float_equal(r.points, 2000, 1e-9);
    card_score(lo, x, &r);
    assert_int_equal(r.score, 300);
    card_close(hi);
    card_close(lo);
}

static void test_bad_cards_refused(void **st)
{
    (void)st;
    struct err e = {0};

    assert_null(card_open_string("{\"format\":\"other\"}", &e));
    assert_non_null(strstr(e.msg, "streamml-scorecard"));
    assert_null(card_open_string("{\"format\":\"streamml-scorecard\",\"features\":[{\"name\":"
                                 "\"a\",\"missing_points\":0,\"bins\":[{\"upper\":2,\"points\":1},"
                                 "{\"upper\":1,\"points\":1},{\"upper\":null,\"points\":0}]}]}", &e));
    assert_non_null(strstr(e.msg, "ascending"));
    assert_null(card_open_string("{\"format\":\"streamml-scorecard\",\"pdo\":-1,\"features\":[]}",
                                 &e));
    assert_null(card_open("/nonexistent/card.json", &e));
    assert_non_null(strstr(e.msg, "/nonexistent/card.json"));
}

static void test_demo_scorecard_loads(void **st)
{
    (void)st;
    struct err e = {0};
    struct card *c = card_open("models/credit_scorecard.json", &e);

    assert_non_null(c);
    assert_true(card_num_features(c) > 3);
    card_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scaling_600_at_50_to_1_and_pdo_20),
        cmocka_unit_test(test_points_bins_and_missing),
        cmocka_unit_test(test_reason_codes_worst_first_at_most_four),
        cmocka_unit_test(test_score_clipped_to_300_850),
        cmocka_unit_test(test_bad_cards_refused),
        cmocka_unit_test(test_demo_scorecard_loads),
    };
    return cmocka_run_group_tests_name("scorecard", tests, NULL, NULL);
}
