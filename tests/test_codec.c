/* tests/test_codec.c: Avro + Confluent framing, JSON, malformed input.
 * Run from the repository root: schemas are found at the relative path
 * "schemas". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

#define SCHEMAS "schemas"

struct fx {
    struct codec *c;
    struct buf out, json;
    struct err e;
    const void *row; /* malformed-input row, for the table-driven tests */
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    if (!f)
        return -1;
    f->c = codec_open(SCHEMAS, &f->e);
    if (!f->c) {
        fprintf(stderr, "codec_open: %s\n", f->e.msg);
        free(f);
        return -1;
    }
    buf_init(&f->out, 0);
    buf_init(&f->json, 8 * 1024 * 1024);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    buf_free(&f->out);
    buf_free(&f->json);
    codec_close(f->c);
    free(f);
    return 0;
}

/* A fully populated event, as a real application would send it. */
static void full_event(struct txn_event *ev)
{
    event_txn_init(ev);
    snprintf(ev->event_id, sizeof(ev->event_id), "e-000001");
    snprintf(ev->user_id, sizeof(ev->user_id), "user-42");
    ev->event_time_ms = 1700000000123LL;
    ev->amount = 800;
    ev->income = 129;
    ev->expenses = 73;
    ev->assets = 0;
    ev->debt = 0.1;
    ev->price = 846;
    ev->term_months = 60;
    ev->seniority_years = 9;
    ev->age = 30;
    snprintf(ev->home, sizeof(ev->home), "rent");
    snprintf(ev->marital, sizeof(ev->marital), "married");
    snprintf(ev->job, sizeof(ev->job), "freelance");
    ev->past_records = 0;
    ev->credit_limit = 5000;
    ev->credit_used = 1234.5;
    ev->payments_on_time = 40;
    ev->payments_late = 2;
    ev->inquiries_6m = 1;
    ev->accounts_open = 3;
    ev->accounts_opened_12m = 1;
    ev->bankruptcies = 0;
    ev->collections = 0;
    ev->oldest_account_months = 120;
    ev->avg_account_age_months = 47.25;
    ev->label = 1;
}

#define D(m) offsetof(struct txn_event, m)
static const size_t double_fields[] = {D(amount),
                                       D(income),
                                       D(expenses),
                                       D(assets),
                                       D(debt),
                                       D(price),
                                       D(term_months),
                                       D(seniority_years),
                                       D(age),
                                       D(credit_limit),
                                       D(credit_used),
                                       D(payments_on_time),
                                       D(payments_late),
                                       D(inquiries_6m),
                                       D(accounts_open),
                                       D(accounts_opened_12m),
                                       D(bankruptcies),
                                       D(collections),
                                       D(oldest_account_months),
                                       D(avg_account_age_months)};

static double dbl(const struct txn_event *ev, size_t off)
{
    double d;

    memcpy(&d, (const char *)ev + off, sizeof(d));
    return d;
}

/* Field-by-field equality; NaN equals NaN (both missing). */
static void assert_events_equal(const struct txn_event *a, const struct txn_event *b)
{
    assert_string_equal(a->event_id, b->event_id);
    assert_string_equal(a->user_id, b->user_id);
    assert_int_equal(a->event_time_ms, b->event_time_ms);
    for (size_t i = 0; i < sizeof(double_fields) / sizeof(double_fields[0]); i++) {
        double x = dbl(a, double_fields[i]), y = dbl(b, double_fields[i]);
        if (isnan(x) || isnan(y))
            assert_true(isnan(x) && isnan(y));
        else
            assert_true(x == y);
    }
    assert_string_equal(a->home, b->home);
    assert_string_equal(a->marital, b->marital);
    assert_string_equal(a->job, b->job);
    assert_int_equal(a->past_records, b->past_records);
    assert_int_equal(a->label, b->label);
}

static void test_schema_ids_follow_the_ids_file(void **state)
{
    struct fx *f = *state;

    assert_int_equal(codec_schema_id(f->c, CODEC_TXN_EVENT), 1);
    assert_int_equal(codec_schema_id(f->c, CODEC_TXN_PREDICTION), 2);
    assert_int_equal(codec_schema_id(f->c, CODEC_DEAD_LETTER), 3);
    assert_int_equal(codec_schema_id(f->c, CODEC_ALERT), 4);
}

static void test_txn_round_trip_keeps_every_field(void **state)
{
    struct fx *f = *state;
    struct txn_event in, out;

    full_event(&in);
    assert_int_equal(codec_encode_txn(f->c, &in, &f->out, &f->e), 0);
    assert_int_equal(f->out.data[0], 0);
    assert_int_equal(f->out.data[4], 1); /* schema id 1, big-endian */
    assert_int_equal(codec_decode_txn(f->c, f->out.data, f->out.len, &out, &f->e), 0);
    assert_events_equal(&in, &out);
}

static void test_txn_all_optionals_null_decode_as_missing(void **state)
{
    struct fx *f = *state;
    struct txn_event in, out;

    event_txn_init(&in);
    snprintf(in.event_id, sizeof(in.event_id), "e1");
    snprintf(in.user_id, sizeof(in.user_id), "u1");
    in.event_time_ms = 1;
    assert_int_equal(codec_encode_txn(f->c, &in, &f->out, &f->e), 0);
    /* header + 2 strings of 2 + a 1-byte long + 25 null branches */
    assert_int_equal(f->out.len, 5 + 3 + 3 + 1 + 25);
    full_event(&out); /* decode must overwrite everything */
    assert_int_equal(codec_decode_txn(f->c, f->out.data, f->out.len, &out, &f->e), 0);
    assert_events_equal(&in, &out);
    assert_true(isnan(out.income));
    assert_string_equal(out.home, "");
    assert_int_equal(out.past_records, -1);
    assert_int_equal(out.label, -1);
}

static void test_json_event_avro_event_are_equal(void **state)
{
    struct fx *f = *state;
    const char *json =
        "{\"event_id\":\"e-000001\",\"user_id\":\"user-42\",\"event_time\":1700000000123,"
        "\"amount\":800,\"income\":129.0,\"expenses\":73,\"assets\":0,\"debt\":0.1,"
        "\"price\":846,\"term_months\":60,\"seniority_years\":9,\"age\":30,\"home\":\"rent\","
        "\"marital\":\"married\",\"job\":\"freelance\",\"past_records\":false,"
        "\"credit_limit\":5000,\"credit_used\":1234.5,\"payments_on_time\":40,"
        "\"payments_late\":2,\"inquiries_6m\":1,\"accounts_open\":3,"
        "\"accounts_opened_12m\":1,\"bankruptcies\":0,\"collections\":0,"
        "\"oldest_account_months\":120,\"avg_account_age_months\":47.25,\"label\":1}";
    struct txn_event want, from_json, back;

    full_event(&want);
    assert_int_equal(codec_txn_from_json(json, strlen(json), &from_json, &f->e), 0);
    assert_events_equal(&want, &from_json);
    assert_int_equal(codec_encode_txn(f->c, &from_json, &f->out, &f->e), 0);
    assert_int_equal(codec_decode_txn(f->c, f->out.data, f->out.len, &back, &f->e), 0);
    assert_events_equal(&want, &back);
}

static void test_to_json_writes_unions_as_plain_values(void **state)
{
    struct fx *f = *state;
    struct txn_event ev;

    event_txn_init(&ev);
    snprintf(ev.event_id, sizeof(ev.event_id), "e\"1");
    snprintf(ev.user_id, sizeof(ev.user_id), "u1");
    ev.event_time_ms = 1700000000000LL;
    ev.income = 129;
    ev.debt = 0.1;
    ev.past_records = 1;
    assert_int_equal(codec_encode_txn(f->c, &ev, &f->out, &f->e), 0);
    assert_int_equal(codec_to_json(f->c, f->out.data, f->out.len, &f->json, &f->e), 0);
    assert_non_null(strstr((char *)f->json.data, "{\"event_id\":\"e\\\"1\",\"user_id\":\"u1\","
                                                 "\"event_time\":1700000000000,"
                                                 "\"amount\":null,\"income\":129.0,"));
    assert_non_null(strstr((char *)f->json.data, "\"debt\":0.1,"));
    assert_non_null(strstr((char *)f->json.data, "\"past_records\":true,"));
    assert_non_null(strstr((char *)f->json.data, "\"label\":null}"));
    assert_int_equal(strlen((char *)f->json.data), f->json.len);
}

static void test_to_json_output_feeds_back_into_from_json(void **state)
{
    struct fx *f = *state;
    struct txn_event in, out;
    struct buf again;

    full_event(&in);
    buf_init(&again, 0);
    assert_int_equal(codec_encode_txn(f->c, &in, &f->out, &f->e), 0);
    assert_int_equal(codec_to_json(f->c, f->out.data, f->out.len, &f->json, &f->e), 0);
    /* both the generic and the event-specific JSON readers take it */
    assert_int_equal(
        codec_from_json(f->c, CODEC_TXN_EVENT, (char *)f->json.data, f->json.len, &again, &f->e),
        0);
    assert_int_equal(again.len, f->out.len);
    assert_memory_equal(again.data, f->out.data, f->out.len);
    assert_int_equal(codec_txn_from_json((char *)f->json.data, f->json.len, &out, &f->e), 0);
    assert_events_equal(&in, &out);
    buf_free(&again);
}

static void test_prediction_round_trip_through_json(void **state)
{
    struct fx *f = *state;
    struct txn_prediction p = {.event_time_ms = 1700000000000LL,
                               .probability = 0.731,
                               .score = 512,
                               .score_probability = 0.64,
                               .n_reasons = 2,
                               .reason_values = {0.5, 0.25},
                               .n_card_reasons = 1,
                               .degraded = true,
                               .latency_us = 1234,
                               .src_partition = 3,
                               .src_offset = 99};
    struct buf again;
    const char *j;

    snprintf(p.event_id, sizeof(p.event_id), "e1");
    snprintf(p.user_id, sizeof(p.user_id), "u1");
    snprintf(p.model_name, sizeof(p.model_name), "credit-gbdt");
    snprintf(p.model_version, sizeof(p.model_version), "3");
    snprintf(p.feature_version, sizeof(p.feature_version), "txn-v1");
    snprintf(p.decision, sizeof(p.decision), "decline");
    snprintf(p.reasons[0], sizeof(p.reasons[0]), "debt_to_income");
    snprintf(p.reasons[1], sizeof(p.reasons[1]), "has_records");
    snprintf(p.reason_features[0], sizeof(p.reason_features[0]), "debt_to_income");
    snprintf(p.reason_features[1], sizeof(p.reason_features[1]), "has_records");
    snprintf(p.card_reasons[0], sizeof(p.card_reasons[0]), "job_code");
    snprintf(p.feature_hash, sizeof(p.feature_hash), "0123456789abcdef");
    snprintf(p.src_topic, sizeof(p.src_topic), "transactions");
    assert_int_equal(codec_encode_prediction(f->c, &p, &f->out, &f->e), 0);
    assert_int_equal(f->out.data[4], 2);
    assert_int_equal(codec_to_json(f->c, f->out.data, f->out.len, &f->json, &f->e), 0);
    j = (const char *)f->json.data;
    assert_non_null(strstr(j, "\"probability\":0.731,\"score\":512,"));
    assert_non_null(strstr(j, "\"reasons\":[\"debt_to_income\",\"has_records\"]"));
    assert_non_null(strstr(j, "\"degraded\":true,\"redelivered\":false,\"latency_us\":1234,"));
    assert_non_null(strstr(j, "\"src_partition\":3,\"src_offset\":99,\"experiment_id\":\"\","
                              "\"variant\":\"\","));
    /* the deciding model's reasons with their values; the scorecard's apart */
    assert_non_null(strstr(j, "\"reason_features\":[\"debt_to_income\",\"has_records\"],"
                              "\"reason_values\":[0.5,0.25],\"scorecard_reasons\":[\"job_code\"]}"));
    buf_init(&again, 0);
    assert_int_equal(codec_from_json(f->c, CODEC_TXN_PREDICTION, j, f->json.len, &again, &f->e), 0);
    assert_memory_equal(again.data, f->out.data, f->out.len);
    buf_free(&again);
}

static void test_dead_letter_round_trip_keeps_binary_payload(void **state)
{
    struct fx *f = *state;
    const unsigned char payload[] = {0x00, 0x01, 0x7f, 0x80, 0xff, '"', '\\', 'a'};
    struct dlq_record r = {.reason = "magic byte 1",
                           .error_code = "decode",
                           .worker = "transactions",
                           .src_topic = "transactions",
                           .src_partition = 1,
                           .src_offset = 7,
                           .src_timestamp_ms = 123,
                           .key = "u1",
                           .key_len = 2,
                           .payload = payload,
                           .payload_len = sizeof(payload),
                           .failed_at_ms = 456};
    struct buf again;
    const char *j;

    assert_int_equal(codec_encode_dlq(f->c, &r, &f->out, &f->e), 0);
    assert_int_equal(f->out.data[4], 3);
    assert_int_equal(codec_to_json(f->c, f->out.data, f->out.len, &f->json, &f->e), 0);
    j = (const char *)f->json.data;
    assert_non_null(strstr(j, "\"key\":\"u1\",\"payload\":\"\\u0000\\u0001\\u007f\\u0080"
                              "\\u00ff\\\"\\\\a\",\"failed_at\":456,\"payload_size\":8,\"key_size\":2}"));
    buf_init(&again, 0);
    assert_int_equal(codec_from_json(f->c, CODEC_DEAD_LETTER, j, f->json.len, &again, &f->e), 0);
    assert_int_equal(again.len, f->out.len);
    assert_memory_equal(again.data, f->out.data, f->out.len);
    buf_free(&again);
}

static void test_dead_letter_without_key_has_null_key(void **state)
{
    struct fx *f = *state;
    struct dlq_record r = {.reason = "x",
                           .error_code = "decode",
                           .worker = "w",
                           .src_topic = "t",
                           .payload = "abc",
                           .payload_len = 3};

    assert_int_equal(codec_encode_dlq(f->c, &r, &f->out, &f->e), 0);
    assert_int_equal(codec_to_json(f->c, f->out.data, f->out.len, &f->json, &f->e), 0);
    assert_non_null(strstr((char *)f->json.data, "\"key\":null,\"payload\":\"abc\""));
}

static void test_alert_round_trip_with_defaults(void **state)
{
    struct fx *f = *state;
    const char *in = "{\"alert_type\":\"psi\",\"severity\":\"WARNING\",\"status_from\":\"OK\","
                     "\"status_to\":\"WARNING\",\"worker\":\"transactions\",\"model\":\"gbdt\","
                     "\"model_version\":\"3\",\"observed\":0.27,\"threshold\":0.2,"
                     "\"window_start\":1,\"window_end\":2,\"emitted_at\":3,\"message\":\"m\"}";

    assert_int_equal(codec_from_json(f->c, CODEC_ALERT, in, strlen(in), &f->out, &f->e), 0);
    assert_int_equal(f->out.data[4], 4);
    assert_int_equal(codec_to_json(f->c, f->out.data, f->out.len, &f->json, &f->e), 0);
    assert_string_equal((char *)f->json.data,
                        "{\"alert_type\":\"psi\",\"severity\":\"WARNING\",\"status_from\":\"OK\","
                        "\"status_to\":\"WARNING\",\"worker\":\"transactions\","
                        "\"model\":\"gbdt\",\"model_version\":\"3\",\"feature\":null,"
                        "\"observed\":0.27,\"threshold\":0.2,\"baseline\":null,"
                        "\"window_start\":1,\"window_end\":2,\"emitted_at\":3,\"message\":\"m\","
                        /* added by monitoring, defaulted: old records still encode */
                        "\"transition\":null,\"window_events\":null}");
}

static void test_from_json_takes_avro_tagged_unions(void **state)
{
    struct fx *f = *state;
    const char *in = "{\"event_id\":\"e\",\"user_id\":\"u\",\"event_time\":5,"
                     "\"income\":{\"double\":2.5},\"home\":{\"string\":\"rent\"}}";
    struct txn_event ev;

    assert_int_equal(codec_from_json(f->c, CODEC_TXN_EVENT, in, strlen(in), &f->out, &f->e), 0);
    assert_int_equal(codec_decode_txn(f->c, f->out.data, f->out.len, &ev, &f->e), 0);
    assert_true(ev.income == 2.5);
    assert_string_equal(ev.home, "rent");
    assert_true(isnan(ev.amount));
}

static void test_from_json_bad_enum_symbol_is_named(void **state)
{
    struct fx *f = *state;
    const char *in = "{\"alert_type\":\"psi\",\"severity\":\"LOUD\"}";

    assert_int_equal(codec_from_json(f->c, CODEC_ALERT, in, strlen(in), &f->out, &f->e),
                     ERR_DECODE);
    assert_non_null(strstr(f->e.msg, "field severity: expected an enum symbol, got a string"));
}

static void test_from_json_unknown_field_is_named(void **state)
{
    struct fx *f = *state;
    const char *in = "{\"reason\":\"x\",\"reasn\":\"y\"}";

    assert_int_equal(codec_from_json(f->c, CODEC_DEAD_LETTER, in, strlen(in), &f->out, &f->e),
                     ERR_DECODE);
    assert_string_equal(f->e.msg, "unknown field \"reasn\"");
}

static void test_from_json_missing_required_field_is_named(void **state)
{
    struct fx *f = *state;
    const char *in = "{\"reason\":\"x\",\"error_code\":\"decode\"}";

    assert_int_equal(codec_from_json(f->c, CODEC_DEAD_LETTER, in, strlen(in), &f->out, &f->e),
                     ERR_DECODE);
    assert_string_equal(f->e.msg, "missing required field worker");
}

static void test_json_unknown_key_is_named(void **state)
{
    struct fx *f = *state;
    const char *in = "{\"event_id\":\"e\",\"user_id\":\"u\",\"event_time\":1,\"incme\":5}";
    struct txn_event ev;

    assert_int_equal(codec_txn_from_json(in, strlen(in), &ev, &f->e), ERR_DECODE);
    assert_string_equal(f->e.msg, "unknown field \"incme\"");
}

static void test_json_wrong_type_is_named(void **state)
{
    struct fx *f = *state;
    const char *in = "{\"event_id\":\"e\",\"user_id\":\"u\",\"event_time\":1,\"income\":\"5\"}";
    struct txn_event ev;

    assert_int_equal(codec_txn_from_json(in, strlen(in), &ev, &f->e), ERR_DECODE);
    assert_string_equal(f->e.msg, "field income: expected a number or null, got a string");
}

static void test_json_missing_required_field_is_named(void **state)
{
    struct fx *f = *state;
    const char *in = "{\"event_id\":\"e\",\"event_time\":1}";
    struct txn_event ev;

    assert_int_equal(codec_txn_from_json(in, strlen(in), &ev, &f->e), ERR_DECODE);
    assert_string_equal(f->e.msg, "missing required field user_id");
}

static void test_json_event_time_must_be_integer_ms(void **state)
{
    struct fx *f = *state;
    const char *in = "{\"event_id\":\"e\",\"user_id\":\"u\",\"event_time\":\"2023-11-14\"}";
    struct txn_event ev;

    assert_int_equal(codec_txn_from_json(in, strlen(in), &ev, &f->e), ERR_DECODE);
    assert_non_null(strstr(f->e.msg, "field event_time: expected integer milliseconds"));
}

static void test_json_null_and_absent_optionals_are_missing(void **state)
{
    struct fx *f = *state;
    const char *in = "{\"event_id\":\"e\",\"user_id\":\"u\",\"event_time\":1,\"income\":null,"
                     "\"home\":null,\"past_records\":null,\"label\":null}";
    struct txn_event ev;

    assert_int_equal(codec_txn_from_json(in, strlen(in), &ev, &f->e), 0);
    assert_true(isnan(ev.income) && isnan(ev.amount));
    assert_string_equal(ev.home, "");
    assert_int_equal(ev.past_records, -1);
    assert_int_equal(ev.label, -1);
}

static void test_json_id_too_long_is_refused_not_cut(void **state)
{
    struct fx *f = *state;
    char in[300];
    struct txn_event ev;

    snprintf(in, sizeof(in), "{\"event_id\":\"%0100d\",\"user_id\":\"u\",\"event_time\":1}", 0);
    assert_int_equal(codec_txn_from_json(in, strlen(in), &ev, &f->e), ERR_DECODE);
    assert_string_equal(f->e.msg, "field event_id: 100 bytes exceeds the 63-byte limit");
}

static void test_json_syntax_error_gives_position(void **state)
{
    struct fx *f = *state;
    const char *in = "{\"event_id\":\"e\",}";
    struct txn_event ev;

    assert_int_equal(codec_txn_from_json(in, strlen(in), &ev, &f->e), ERR_DECODE);
    assert_non_null(strstr(f->e.msg, "json: "));
    assert_non_null(strstr(f->e.msg, "column"));
}

static void test_buf_append_refuses_past_its_limit(void **state)
{
    struct buf b;

    (void)state;
    buf_init(&b, 10);
    assert_int_equal(buf_append(&b, "0123456789", 10), 0);
    assert_int_equal(buf_append(&b, "x", 1), ERR_NOMEM);
    assert_int_equal(b.len, 10);
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    buf_free(&b);
}

static void test_codec_open_names_the_missing_file(void **state)
{
    struct err e = {0};

    (void)state;
    assert_null(codec_open("/nonexistent-schemas", &e));
    assert_int_equal(e.code, ERR_CONFIG);
    assert_non_null(strstr(e.msg, "/nonexistent-schemas/ids"));
}

/* ---- malformed input: one named test per row ---- */

struct bytes {
    unsigned char d[256];
    size_t n;
};

static void put_raw(struct bytes *b, const void *p, size_t n)
{
    memcpy(b->d + b->n, p, n);
    b->n += n;
}

static void put_varint(struct bytes *b, int64_t v)
{
    uint64_t u = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);

    do {
        unsigned char c = u & 0x7f;
        u >>= 7;
        b->d[b->n++] = (unsigned char)(c | (u ? 0x80 : 0));
    } while (u);
}

static void put_str(struct bytes *b, const char *s)
{
    put_varint(b, (int64_t)strlen(s));
    put_raw(b, s, strlen(s));
}

static void header(struct bytes *b, unsigned id)
{
    unsigned char h[5] = {0, 0, 0, 0, (unsigned char)id};

    b->n = 0;
    put_raw(b, h, 5);
}

/* A valid event body: ids, time, then n_nulls null branches. */
static void event_body(struct bytes *b, const char *id, int n_nulls)
{
    header(b, 1);
    put_str(b, id);
    put_str(b, "u1");
    put_varint(b, 1700000000000LL);
    for (int i = 0; i < n_nulls; i++)
        put_varint(b, 0);
}

static void m_empty(struct bytes *b)
{
    b->n = 0;
}
static void m_one_byte(struct bytes *b)
{
    b->n = 1;
    b->d[0] = 0;
}
static void m_wrong_magic(struct bytes *b)
{
    event_body(b, "e1", 25);
    b->d[0] = 1;
}
static void m_unknown_id(struct bytes *b)
{
    event_body(b, "e1", 25);
    b->d[4] = 99; /* no schemas/ids line (7 is click_event.avsc since issue 6) */
}
static void m_truncated(struct bytes *b)
{
    event_body(b, "e1", 25);
    b->n -= 10;
}
static void m_trailing(struct bytes *b)
{
    event_body(b, "e1", 25);
    put_raw(b, "xy", 2);
}
static void m_id_too_long(struct bytes *b)
{
    char id[101];

    memset(id, 'a', 100);
    id[100] = '\0';
    event_body(b, id, 25);
}
static void m_huge_string(struct bytes *b)
{
    header(b, 1);
    put_varint(b, 1000000000);
    put_raw(b, "abcde", 5);
}
static void m_negative_length(struct bytes *b)
{
    header(b, 1);
    put_varint(b, -1);
}
static void m_branch_out_of_range(struct bytes *b)
{
    event_body(b, "e1", 0);
    put_varint(b, 5);
}
static void m_varint_too_long(struct bytes *b)
{
    header(b, 1);
    put_str(b, "e1");
    put_str(b, "u1");
    memset(b->d + b->n, 0xff, 11);
    b->n += 11;
}
static void m_bad_utf8(struct bytes *b)
{
    event_body(b, "e\xff", 25);
}
static void m_bad_boolean(struct bytes *b)
{
    event_body(b, "e1", 12);
    put_varint(b, 1); /* past_records: boolean branch */
    b->d[b->n++] = 2;
    for (int i = 0; i < 12; i++)
        put_varint(b, 0);
}
static void m_huge_array(struct bytes *b)
{
    double d = 0.5;

    header(b, 2);
    put_str(b, "e1");
    put_str(b, "u1");
    put_varint(b, 1);
    put_str(b, "m");
    put_str(b, "1");
    put_str(b, "txn-v1");
    put_raw(b, &d, 8);
    put_varint(b, 500);
    put_raw(b, &d, 8);
    put_str(b, "decline");
    put_varint(b, 1000000000); /* reasons: block count */
    put_str(b, "x");
}

struct malformed {
    const char *name;
    void (*make)(struct bytes *b);
    int to_json;      /* 1: through codec_to_json (any schema) */
    const char *want; /* substring of the error */
};

static const struct malformed malformed[] = {
    {"malformed_empty_message", m_empty, 0, "empty message"},
    {"malformed_one_byte", m_one_byte, 0, "truncated at byte 1"},
    {"malformed_wrong_magic_byte", m_wrong_magic, 0,
     "magic byte 1: producer uses header schema ids"},
    {"malformed_unknown_schema_id", m_unknown_id, 0, "unknown schema id 99"},
    {"malformed_truncated_body", m_truncated, 0, "truncated at byte"},
    {"malformed_huge_string_length", m_huge_string, 0,
     "string length 1000000000 exceeds remaining 5 bytes at byte 5 (field event_id)"},
    {"malformed_huge_array_count", m_huge_array, 1,
     "array block count 1000000000 exceeds remaining 2 bytes"},
    {"malformed_negative_length", m_negative_length, 0,
     "negative string length -1 at byte 5 (field event_id)"},
    {"malformed_trailing_garbage", m_trailing, 0, "trailing 2 bytes"},
    {"malformed_id_field_too_long", m_id_too_long, 0,
     "field event_id: 100 bytes exceeds the 63-byte limit"},
    {"malformed_union_branch_out_of_range", m_branch_out_of_range, 0,
     "union branch index 5 out of range [0, 2)"},
    {"malformed_varint_too_long", m_varint_too_long, 0, "varint longer than 10 bytes"},
    {"malformed_invalid_utf8", m_bad_utf8, 0, "invalid UTF-8 at byte 7 (field event_id)"},
    {"malformed_boolean_not_0_or_1", m_bad_boolean, 0, "boolean byte 2"},
    /* Walked with the writer's (the prediction's) schema, before resolution. */
    {"malformed_prediction_walked_with_its_own_schema", m_huge_array, 0,
     "array block count 1000000000 exceeds remaining 2 bytes"},
};

static void test_malformed_row(void **state)
{
    struct fx *f = *state;
    const struct malformed *row = f->row;
    struct bytes b = {.n = 0};
    struct txn_event ev;
    int rc;

    row->make(&b);
    rc = row->to_json ? codec_to_json(f->c, b.d, b.n, &f->json, &f->e)
                      : codec_decode_txn(f->c, b.d, b.n, &ev, &f->e);
    assert_int_equal(rc, ERR_DECODE);
    if (!strstr(f->e.msg, row->want))
        fail_msg("%s: got \"%s\", want \"%s\"", row->name, f->e.msg, row->want);
    if (!row->to_json)
        assert_string_equal(ev.event_id, ""); /* never half an event */
}

/* Each malformed row runs as its own test; cmocka hands the row to setup
 * as the initial state. */
static int setup_row(void **state)
{
    const struct malformed *row = *state;

    if (setup(state))
        return -1;
    ((struct fx *)*state)->row = row;
    return 0;
}

static void test_oversize_message_is_refused_before_work(void **state)
{
    struct fx *f = *state;
    size_t n = CODEC_MAX_MESSAGE + 1;
    unsigned char *m = calloc(1, n);
    struct txn_event ev;

    assert_non_null(m);
    assert_int_equal(codec_decode_txn(f->c, m, n, &ev, &f->e), ERR_DECODE);
    assert_non_null(strstr(f->e.msg, "exceeds the 1048576-byte limit"));
    free(m);
}

/* Random corruption of a valid message: every outcome is a clean return. */
static void test_mutated_messages_never_crash(void **state)
{
    struct fx *f = *state;
    struct txn_event in, ev;
    unsigned char m[512];
    size_t n;
    unsigned seed = 12345;

    full_event(&in);
    assert_int_equal(codec_encode_txn(f->c, &in, &f->out, &f->e), 0);
    n = f->out.len;
    for (int round = 0; round < 20000; round++) {
        memcpy(m, f->out.data, n);
        for (int k = 0; k < 1 + round % 4; k++) {
            seed = seed * 1103515245u + 12345u;
            m[5 + (seed >> 8) % (n - 5)] = (unsigned char)(seed >> 20);
        }
        seed = seed * 1103515245u + 12345u;
        size_t len = round % 3 ? n : 5 + (seed >> 8) % (n - 4);
        int rc = codec_decode_txn(f->c, m, len, &ev, &f->e);
        assert_true(rc == 0 || rc == ERR_DECODE);
        /* what the walk lets through, avro-c must read: its errors are
         * prefixed with the schema file */
        if (rc && strstr(f->e.msg, ".avsc: "))
            fail_msg("avro-c refused what the walk accepted: %s", f->e.msg);
        assert_true(codec_to_json(f->c, m, len, &f->json, &f->e) <= 0);
    }
}

int main(void)
{
    static struct CMUnitTest tests[64];
    const struct CMUnitTest fixed[] = {
        cmocka_unit_test_setup_teardown(test_schema_ids_follow_the_ids_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_round_trip_keeps_every_field, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_all_optionals_null_decode_as_missing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_json_event_avro_event_are_equal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_to_json_writes_unions_as_plain_values, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_to_json_output_feeds_back_into_from_json, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_prediction_round_trip_through_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_letter_round_trip_keeps_binary_payload, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_dead_letter_without_key_has_null_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alert_round_trip_with_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_from_json_takes_avro_tagged_unions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_from_json_bad_enum_symbol_is_named, setup, teardown),
        cmocka_unit_test_setup_teardown(test_from_json_unknown_field_is_named, setup, teardown),
        cmocka_unit_test_setup_teardown(test_from_json_missing_required_field_is_named, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_json_unknown_key_is_named, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_wrong_type_is_named, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_missing_required_field_is_named, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_event_time_must_be_integer_ms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_null_and_absent_optionals_are_missing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_json_id_too_long_is_refused_not_cut, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_syntax_error_gives_position, setup, teardown),
        cmocka_unit_test(test_buf_append_refuses_past_its_limit),
        cmocka_unit_test(test_codec_open_names_the_missing_file),
        cmocka_unit_test_setup_teardown(test_oversize_message_is_refused_before_work, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_mutated_messages_never_crash, setup, teardown),
    };
    size_t n = 0, nrows = sizeof(malformed) / sizeof(malformed[0]);

    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        tests[n++] = fixed[i];
    for (size_t i = 0; i < nrows && n < sizeof(tests) / sizeof(tests[0]); i++) {
        struct CMUnitTest t = {malformed[i].name, test_malformed_row, setup_row, teardown,
                               (void *)&malformed[i]};
        tests[n++] = t;
    }
    return _cmocka_run_group_tests("codec", tests, n, NULL, NULL);
}
