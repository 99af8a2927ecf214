/* tests/test_avro_plan.c: the Avro plans (common/codec/codec_plan.c) against
 * avro-c: the fuzz corpora replayed (tests/fuzz/corpus/avro_plan and
 * avro), hand-made edge cases, writer schemas resolved into the reader, and
 * the plan path in its default mode (refused messages named by avro-c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <string.h>

#include "fuzz/plan_diff.h"

struct bytes {
    unsigned char d[4096];
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

    while (u > 0x7f) {
        b->d[b->n++] = (unsigned char)(u | 0x80);
        u >>= 7;
    }
    b->d[b->n++] = (unsigned char)u;
}

static void put_str(struct bytes *b, const char *s)
{
    put_varint(b, (int64_t)strlen(s));
    put_raw(b, s, strlen(s));
}

static void put_double(struct bytes *b, uint64_t bits)
{
    for (int i = 0; i < 8; i++, bits >>= 8)
        b->d[b->n++] = (unsigned char)bits;
}

static void header(struct bytes *b, unsigned id)
{
    unsigned char h[5] = {0, 0, 0, 0, (unsigned char)id};

    b->n = 0;
    put_raw(b, h, 5);
}

static int setup(void **state)
{
    static struct plan_diff d;

    if (plan_diff_open(&d))
        fail_msg("%s", d.why);
    *state = &d;
    return 0;
}

static int teardown(void **state)
{
    plan_diff_close(*state);
    return 0;
}

static void agree(struct plan_diff *d, const struct bytes *b, const char *what, int want_rc)
{
    int rc;

    if (plan_diff_decode(d, b->d, b->n, &rc))
        fail_msg("%s: %s", what, d->why);
    if (want_rc >= 0 && rc != want_rc)
        fail_msg("%s: avro-c gave %d, the case expects %d", what, rc, want_rc);
}

/* A full transaction_event body (schema id 1), every optional field set:
 * amount carries the given double bits. */
static void full_event(struct bytes *b, uint64_t amount_bits)
{
    header(b, 1);
    put_str(b, "e1");
    put_str(b, "u1");
    put_varint(b, 1700000000000LL);
    put_varint(b, 1), put_double(b, amount_bits);
    for (int i = 0; i < 8; i++)
        put_varint(b, 1), put_double(b, 0x4059000000000000ULL + (uint64_t)i); /* 100.0 + ulps */
    put_varint(b, 1), put_str(b, "rent");
    put_varint(b, 1), put_str(b, "married");
    put_varint(b, 1), put_str(b, "fixed");
    put_varint(b, 1), b->d[b->n++] = 1; /* past_records */
    for (int i = 0; i < 11; i++)
        put_varint(b, 0); /* bureau fields: null */
    put_varint(b, 1), put_varint(b, 1); /* label */
}

static void test_valid_events_decode_the_same(void **state)
{
    struct plan_diff *d = *state;
    struct bytes b;
    struct txn_event ev;
    struct err e = {0};

    full_event(&b, 0x40c3880000000000ULL); /* 10000.0 */
    agree(d, &b, "full event", ERR_OK);
    assert_int_equal(codec_decode_txn(d->plan, b.d, b.n, &ev, &e), ERR_OK);
    assert_string_equal(ev.event_id, "e1");
    assert_true(ev.amount == 10000.0);
    assert_string_equal(ev.job, "fixed");
    assert_int_equal(ev.past_records, 1);
    assert_int_equal(ev.label, 1);
    assert_true(isnan(ev.credit_limit));
    /* -0.0, a denormal and infinity keep their bits. */
    full_event(&b, 0x8000000000000000ULL);
    agree(d, &b, "-0.0", ERR_OK);
    full_event(&b, 1);
    agree(d, &b, "denormal", ERR_OK);
    full_event(&b, 0x7ff0000000000000ULL);
    agree(d, &b, "infinity", ERR_OK);
}

static void test_nan_payloads_are_refused_alike(void **state)
{
    struct plan_diff *d = *state;
    struct bytes b;

    full_event(&b, 0x7ff8000000000000ULL);
    agree(d, &b, "quiet NaN", ERR_INVALID);
    full_event(&b, 0xfff0000000000001ULL);
    agree(d, &b, "signalling NaN with a payload", ERR_INVALID);
}

static void test_hostile_bodies_are_refused_alike(void **state)
{
    struct plan_diff *d = *state;
    struct bytes b;

    full_event(&b, 0);
    for (size_t n = 0; n < b.n; n++) { /* every truncation */
        struct bytes t = b;
        t.n = n;
        agree(d, &t, "truncated", -1);
    }
    header(&b, 1);
    put_raw(&b, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11); /* 11-byte varint */
    agree(d, &b, "overlong varint", ERR_DECODE);
    header(&b, 1);
    put_raw(&b, "\x80\x80", 2); /* varint cut short */
    agree(d, &b, "truncated varint", ERR_DECODE);
    header(&b, 1);
    put_varint(&b, -3);
    agree(d, &b, "negative length", ERR_DECODE);
    header(&b, 1);
    put_varint(&b, INT64_MAX);
    put_raw(&b, "abc", 3);
    agree(d, &b, "huge length", ERR_DECODE);
    header(&b, 1);
    put_str(&b, "e1"), put_str(&b, "u1"), put_varint(&b, 1);
    put_varint(&b, 2); /* union index 2 of [null, double] */
    agree(d, &b, "bad union index", ERR_DECODE);
    header(&b, 1);
    put_str(&b, "e1"), put_str(&b, "u1"), put_varint(&b, 1);
    put_varint(&b, -1);
    agree(d, &b, "negative union index", ERR_DECODE);
    full_event(&b, 0);
    b.d[b.n - 1] = 0x80; /* label varint never ends */
    agree(d, &b, "label varint", ERR_DECODE);
    full_event(&b, 0);
    put_raw(&b, "x", 1);
    agree(d, &b, "trailing byte", ERR_DECODE);
    header(&b, 1);
    put_str(&b, "\xc3\x28"); /* invalid UTF-8 */
    agree(d, &b, "invalid UTF-8", ERR_DECODE);
    header(&b, 1);
    put_varint(&b, 3), put_raw(&b, "a\0b", 3); /* NUL inside an id */
    put_str(&b, "u1"), put_varint(&b, 1);
    for (int i = 0; i < 25; i++)
        put_varint(&b, 0);
    agree(d, &b, "NUL in an id", ERR_DECODE);
    header(&b, 1);
    put_str(&b, "0123456789012345678901234567890123456789012345678901234567890123456789");
    put_str(&b, "u1"), put_varint(&b, 1);
    for (int i = 0; i < 25; i++)
        put_varint(&b, 0);
    agree(d, &b, "id over the struct's 63 bytes", ERR_DECODE);
}

/* A writer with added fields (v2: merchant_id first among them) is read by
 * the plan following avro-c's resolution; v0 (reordered, int fields read
 * as double) is left to avro-c. Both agree with the reference. */
static void test_writers_resolved_into_the_reader(void **state)
{
    struct plan_diff *d = *state;
    static const char *const rows[] = {
        "{\"event_id\":\"e2\",\"user_id\":\"u2\",\"event_time\":5,\"merchant_id\":\"m\","
        "\"amount\":12.5,\"job\":\"fixed\",\"label\":0,\"channel\":\"web\",\"device_score\":0.5}",
        "{\"event_id\":\"e3\",\"user_id\":\"u3\",\"event_time\":6,\"age\":40,\"term_months\":12,"
        "\"amount\":1.25,\"past_records\":false}"};
    const int32_t ids[] = {PLAN_DIFF_V2, PLAN_DIFF_V0};
    struct err e = {0};

    for (int i = 0; i < 2; i++) {
        struct bytes b;
        struct txn_event ev;
        buf_reset(&d->a);
        if (codec_from_json_id(d->ref, ids[i], rows[i], strlen(rows[i]), NULL, NULL, 0, &d->a,
                               &e))
            fail_msg("row %d: %s", i, e.msg);
        memcpy(b.d, d->a.data, d->a.len);
        b.n = d->a.len;
        agree(d, &b, "resolved writer", ERR_OK);
        assert_int_equal(codec_decode_txn(d->plan, b.d, b.n, &ev, &e), ERR_OK);
        assert_true(ev.amount == (i ? 1.25 : 12.5));
        if (i == 1)
            assert_true(ev.age == 40.0 && ev.term_months == 12.0 && ev.past_records == 0);
        /* Cut anywhere: refused alike. */
        for (size_t n = 5; n < b.n; n++) {
            struct bytes t = b;
            t.n = n;
            agree(d, &t, "truncated resolved writer", -1);
        }
    }
}

/* The default mode: a message the plan refuses is named by avro-c. */
static void test_default_mode_names_the_culprit(void **state)
{
    struct plan_diff *d = *state;
    struct err e = {0};
    struct txn_event ev;
    struct bytes b;
    struct codec *c = codec_open(d->dir, &e);

    assert_non_null(c);
    header(&b, 1);
    put_varint(&b, -3);
    assert_int_equal(codec_decode_txn(c, b.d, b.n, &ev, &e), ERR_DECODE);
    assert_non_null(strstr(e.msg, "negative string length -3 at byte 5"));
    full_event(&b, 0x7ff8000000000000ULL);
    assert_int_equal(codec_decode_txn(c, b.d, b.n, &ev, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "amount: NaN"));
    assert_true(isnan(ev.income)); /* never half an event */
    codec_close(c);
}

static void test_predictions_encode_byte_for_byte(void **state)
{
    struct plan_diff *d = *state;
    uint8_t seed[64];
    long before = d->encoded;

    for (unsigned r = 0; r < 2000; r++) {
        for (size_t i = 0; i < sizeof(seed); i++)
            seed[i] = (uint8_t)((r * 2654435761u + i * 40503u) >> (i % 13));
        if (plan_diff_encode(d, seed, 1 + r % sizeof(seed)))
            fail_msg("seed %u: %s", r, d->why);
    }
    /* Most are valid (some refused: unterminated strings, n_reasons). */
    if (d->encoded - before < 500)
        fail_msg("only %ld of 2000 predictions encoded", d->encoded - before);
}

/* Found by fuzz_avro_plan: a prediction whose event_id fills its array
 * (no NUL) was refused, but the error message read the id with %s, past
 * the array (ASan: stack-buffer-overflow in err_wrap); here, into user_id. */
static void test_unterminated_id_is_not_read_past_its_array(void **state)
{
    struct plan_diff *d = *state;
    struct txn_prediction p;
    struct txn_event ev;
    struct err e = {0};

    (void)d;
    memset(&p, 0, sizeof(p));
    memset(p.event_id, 'a', sizeof(p.event_id));
    snprintf(p.user_id, sizeof(p.user_id), "zz-user");
    assert_int_equal(codec_encode_prediction(d->ref, &p, &d->b, &e), ERR_DECODE);
    assert_non_null(strstr(e.msg, "event_id is not NUL-terminated"));
    assert_null(strstr(e.msg, "zz-user"));
    assert_int_equal(codec_encode_prediction(d->plan, &p, &d->a, &e), ERR_DECODE);
    event_txn_init(&ev);
    memset(ev.event_id, 'a', sizeof(ev.event_id));
    snprintf(ev.user_id, sizeof(ev.user_id), "zz-user");
    assert_int_equal(codec_encode_txn(d->ref, &ev, &d->b, &e), ERR_DECODE);
    assert_null(strstr(e.msg, "zz-user"));
}

/* Every input the fuzzers kept, through both decoders and encoders. */
static void replay(struct plan_diff *d, const char *dir)
{
    DIR *dp = opendir(dir);
    struct dirent *de;
    static uint8_t data[CODEC_MAX_MESSAGE];
    int n = 0;

    if (!dp)
        fail_msg("%s: cannot open", dir);
    while ((de = readdir(dp))) {
        char path[512];
        FILE *f;
        size_t len;
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (!(f = fopen(path, "rb")))
            continue;
        len = fread(data, 1, sizeof(data), f);
        fclose(f);
        if (plan_diff_decode(d, data, len, NULL) || plan_diff_encode(d, data, len))
            fail_msg("%s: %s", path, d->why);
        n++;
    }
    closedir(dp);
    assert_true(n > 0);
}

static void test_fuzz_corpora_replay(void **state)
{
    replay(*state, "tests/fuzz/corpus/avro_plan");
    replay(*state, "tests/fuzz/corpus/avro");
    print_message("replayed: %ld decoded, %ld encoded by both\n",
                  ((struct plan_diff *)*state)->decoded, ((struct plan_diff *)*state)->encoded);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_events_decode_the_same),
        cmocka_unit_test(test_nan_payloads_are_refused_alike),
        cmocka_unit_test(test_hostile_bodies_are_refused_alike),
        cmocka_unit_test(test_writers_resolved_into_the_reader),
        cmocka_unit_test(test_default_mode_names_the_culprit),
        cmocka_unit_test(test_predictions_encode_byte_for_byte),
        cmocka_unit_test(test_unterminated_id_is_not_read_past_its_array),
        cmocka_unit_test(test_fuzz_corpora_replay),
    };
    return cmocka_run_group_tests_name("avro_plan", tests, setup, teardown);
}
