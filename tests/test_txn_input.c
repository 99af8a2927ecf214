/* The transactions stream's input with a spec on its own record
 * (common/streams/txn_input.h, common/codec/codec_rec.c): the Grunfeld
 * spec's FirmYear records decoded by field position into the rows the plan
 * reads; bad events refused naming the field; fields matched once at open. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "codec.h"
#include "features.h"
#include "fspec.h"
#include "txn_input.h"

struct env {
    struct codec *cd;
    struct txi *in;
    struct buf b;
};

static int setup(void **st)
{
    static struct env v;
    struct err e = {0};

    if (feat_txn_use("models/grunfeld/grunfeld-v1.yaml", &e) || !(v.cd = codec_open("schemas", &e)) ||
        !(v.in = txi_open(v.cd, 4, &e))) {
        fprintf(stderr, "setup: %s\n", e.msg);
        return -1;
    }
    buf_init(&v.b, 0);
    *st = &v;
    return 0;
}

static int teardown(void **st)
{
    struct env *v = *st;

    txi_close(v->in);
    codec_close(v->cd);
    buf_free(&v->b);
    feat_txn_freeze(0);
    return 0;
}

/* JSON -> framed FirmYear -> event in slot i; the decode's return code. */
static int decode(struct env *v, size_t i, const char *json, struct txn_event *ev, struct err *e)
{
    struct err pe = {0};

    assert_int_equal(codec_from_json_id(v->cd, txi_schema_id(v->in), json, strlen(json), NULL,
                                        NULL, 0, &v->b, &pe),
                     ERR_OK);
    return txi_decode(v->in, i, v->b.data, v->b.len, ev, e);
}

static void test_record_fields_reach_the_plan(void **st)
{
    struct env *v = *st;
    struct txn_event ev;
    struct err e = {0};
    const struct fspec *p = feat_txn_spec();
    const struct fspec_row *r;

    assert_true(txi_schema_id(v->in) >= CODEC_USER_ID_BASE);
    assert_int_equal(decode(v, 1, "{\"firm\": \"IBM\", \"year_start\": -1104537600000, "
                                  "\"invest\": 2.5, \"capital\": null, \"value\": 40.0}",
                            &ev, &e),
                     ERR_OK);
    assert_string_equal(ev.user_id, "IBM");
    assert_string_equal(ev.event_id, "IBM@-1104537600000");
    assert_int_equal(ev.event_time_ms, -1104537600000LL); /* 1935: before 1970 is data */
    r = ev.rec;
    assert_non_null(r);
    assert_int_equal(r->time_ms, -1104537600000LL);
    assert_true(r->num[fspec_field_index(p, "invest")] == 2.5);
    assert_true(r->num[fspec_field_index(p, "value")] == 40.0);
    assert_true(isnan(r->num[fspec_field_index(p, "capital")])); /* null: missing */
    assert_true(isnan(r->num[fspec_field_index(p, "label")]));   /* absent: its default */
}

static void test_bad_events_name_the_field(void **st)
{
    struct env *v = *st;
    struct txn_event ev;
    struct err e = {0};
    char json[300];

    assert_int_equal(decode(v, 0, "{\"firm\": \"\", \"year_start\": 0}", &ev, &e), ERR_INVALID);
    assert_string_equal(e.msg, "firm: empty (the entity key)");
    snprintf(json, sizeof(json), "{\"firm\": \"%070d\", \"year_start\": 0}", 7);
    assert_int_equal(decode(v, 0, json, &ev, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "firm: longer than 63 bytes"));
    assert_int_equal(decode(v, 0, "{\"firm\": \"GM\", \"year_start\": 7258118400000}", &ev, &e),
                     ERR_INVALID); /* 2200 */
    assert_non_null(strstr(e.msg, "year_start"));
    assert_int_equal(decode(v, 0, "{\"firm\": \"GM\", \"year_start\": -99999999999999999}", &ev,
                            &e),
                     ERR_INVALID);
    assert_non_null(strstr(e.msg, "year_start: before year 1"));
}

static void test_other_records_are_refused(void **st)
{
    struct env *v = *st;
    struct txn_event ev, txn;
    struct err e = {0};
    static const char *const names[] = {"firm", "no_such"};

    event_txn_init(&txn);
    snprintf(txn.event_id, sizeof(txn.event_id), "e1");
    snprintf(txn.user_id, sizeof(txn.user_id), "u1");
    txn.event_time_ms = 1700000000000LL;
    assert_int_equal(codec_encode_txn(v->cd, &txn, &v->b, &e), ERR_OK);
    assert_int_equal(txi_decode(v->in, 0, v->b.data, v->b.len, &ev, &e), ERR_DECODE);
    assert_non_null(strstr(e.msg, "transaction_event.avsc"));
    assert_null(codec_rec_open(v->cd, txi_schema_id(v->in), names, 2, &e));
    assert_non_null(strstr(e.msg, "field no_such: not in the schema"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_fields_reach_the_plan),
        cmocka_unit_test(test_bad_events_name_the_field),
        cmocka_unit_test(test_other_records_are_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
