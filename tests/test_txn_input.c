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
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "features.h"
#include "fspec.h"
#include "stack.h"
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

/* ---- input.event_id: the record's own id field ---- */

/* The Grunfeld spec on FirmYear plus an id (string) and a sequence number
 * (long), in a directory of its own; event_id names id_field. */
static const char *id_spec(const char *dir, const char *id_field)
{
    static char spec[200];
    char avsc[200];
    FILE *f;

    snprintf(avsc, sizeof(avsc), "%s/firm_year_id.avsc", dir);
    f = fopen(avsc, "w");
    assert_non_null(f);
    fputs("{\"type\": \"record\", \"name\": \"FirmYearId\", \"fields\": ["
          "{\"name\": \"obs_id\", \"type\": [\"null\", \"string\"], \"default\": null},"
          "{\"name\": \"seq\", \"type\": \"long\"},"
          "{\"name\": \"firm\", \"type\": \"string\"},"
          "{\"name\": \"year_start\", \"type\": [\"null\", \"long\"], \"default\": null},"
          "{\"name\": \"invest\", \"type\": [\"null\", \"double\"], \"default\": null}]}\n",
          f);
    fclose(f);
    snprintf(spec, sizeof(spec), "%s/%s.yaml", dir, id_field);
    f = fopen(spec, "w");
    assert_non_null(f);
    fprintf(f, "name: ids-v1\ninput:\n  schema: firm_year_id.avsc\n  key: firm\n"
               "  time: year_start\n  event_id: %s\nfeatures:\n"
               "  - {name: invest, expr: invest}\n"
               "  - {name: n_3y, agg: count, window: 1095d, bucket: 365d}\n",
            id_field);
    fclose(f);
    return spec;
}

static void enc(struct codec *cd, const struct txi *in, struct buf *b, const char *json)
{
    struct err e = {0};

    if (codec_from_json_id(cd, txi_schema_id(in), json, strlen(json), NULL, NULL, 0, b, &e))
        fail_msg("%s: %s", json, e.msg);
}

/* The spec's id names the event: the prediction's id, the dedup key (two
 * events at one millisecond of one firm are two events; one id twice is
 * one), and the dead letter of a bad event says which event it was. */
static void test_the_event_id_field_names_the_event(void **st)
{
    struct env *v = *st;
    char dir[] = "/tmp/streamml-evid-XXXXXX";
    struct err e = {0};
    struct codec *cd;
    struct txi *in;
    struct txn_event a, b, c;
    struct feat_state s;

    assert_non_null(mkdtemp(dir));
    feat_txn_freeze(0);
    assert_int_equal(feat_txn_use(id_spec(dir, "obs_id"), &e), ERR_OK);
    assert_string_equal(fspec_event_id_field(feat_txn_spec()), "obs_id");
    cd = codec_open("schemas", &e);
    assert_non_null(cd);
    in = txi_open(cd, 4, &e);
    assert_non_null(in);
    enc(cd, in, &v->b,
        "{\"obs_id\": \"ev-1\", \"seq\": 7, \"firm\": \"IBM\", "
        "\"year_start\": 1000, \"invest\": 1.5}");
    assert_int_equal(txi_decode(in, 0, v->b.data, v->b.len, &a, &e), ERR_OK);
    assert_string_equal(a.event_id, "ev-1");
    assert_string_equal(a.user_id, "IBM");
    /* same firm and millisecond, another id: another event */
    enc(cd, in, &v->b,
        "{\"obs_id\": \"ev-2\", \"seq\": 8, \"firm\": \"IBM\", "
        "\"year_start\": 1000, \"invest\": 2.5}");
    assert_int_equal(txi_decode(in, 1, v->b.data, v->b.len, &b, &e), ERR_OK);
    assert_string_equal(b.event_id, "ev-2");
    feat_state_init(&s);
    feat_state_update(&s, &a, &s);
    feat_state_mark(&s, 0, 10, &a);
    assert_false(feat_state_seen(&s, 1, 11, &b));
    /* the id again, later and from another partition: the same event */
    c = b;
    snprintf(c.event_id, sizeof(c.event_id), "ev-1");
    c.event_time_ms = 5000;
    assert_true(feat_state_seen(&s, 1, 12, &c));

    /* null id: refused naming the field; a bad time: the dead letter names the event */
    enc(cd, in, &v->b,
        "{\"obs_id\": null, \"seq\": 9, \"firm\": \"IBM\", "
        "\"year_start\": 2000}");
    assert_int_equal(txi_decode(in, 2, v->b.data, v->b.len, &c, &e), ERR_INVALID);
    assert_string_equal(e.msg, "obs_id: null (the event id)");
    enc(cd, in, &v->b,
        "{\"obs_id\": \"ev-3\", \"seq\": 9, \"firm\": \"IBM\", "
        "\"year_start\": null}");
    assert_int_equal(txi_decode(in, 2, v->b.data, v->b.len, &c, &e), ERR_INVALID);
    assert_string_equal(e.msg, "event ev-3: year_start: null (the event time)");
    txi_close(in);

    /* a long id reads in decimal */
    feat_txn_freeze(0);
    assert_int_equal(feat_txn_use(id_spec(dir, "seq"), &e), ERR_OK);
    in = txi_open(cd, 4, &e);
    assert_non_null(in);
    enc(cd, in, &v->b,
        "{\"obs_id\": null, \"seq\": -42, \"firm\": \"IBM\", "
        "\"year_start\": 1000}");
    assert_int_equal(txi_decode(in, 0, v->b.data, v->b.len, &a, &e), ERR_OK);
    assert_string_equal(a.event_id, "-42");
    txi_close(in);

    /* an unknown field, or a number that is not a long: one line naming the spec line */
    feat_txn_freeze(0);
    assert_int_not_equal(feat_txn_use(id_spec(dir, "nope"), &e), ERR_OK);
    assert_non_null(strstr(e.msg, "nope.yaml:6: input.event_id: unknown field \"nope\""));
    assert_int_not_equal(feat_txn_use(id_spec(dir, "invest"), &e), ERR_OK);
    assert_non_null(strstr(e.msg, "invest.yaml:6: type mismatch: input.event_id \"invest\" must "
                                  "be a string or a long"));
    codec_close(cd);
    test_sh("rm -rf '%s'", dir);
    assert_int_equal(feat_txn_use("models/grunfeld/grunfeld-v1.yaml", &e), ERR_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_fields_reach_the_plan),
        cmocka_unit_test(test_bad_events_name_the_field),
        cmocka_unit_test(test_other_records_are_refused),
        cmocka_unit_test(test_the_event_id_field_names_the_event),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
