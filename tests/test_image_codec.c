/* Avro codec of the images pipeline (common/codec/codec_image.c):
 * image_event (id 5) and image_prediction (id 6), round trips, limits,
 * and the generic JSON paths `streamml produce --schema` / `consume` use.
 * Run from the repository root (schemas/). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "click_event.h"
#include "codec.h"

struct fx {
    struct codec *cd;
    struct buf out;
};

static int setup(void **st)
{
    struct fx *f = calloc(1, sizeof(*f));
    struct err e = {0};

    f->cd = codec_open("schemas", &e);
    if (!f->cd) {
        fprintf(stderr, "codec_open: %s\n", e.msg);
        return -1;
    }
    buf_init(&f->out, 0);
    *st = f;
    return 0;
}

static int teardown(void **st)
{
    struct fx *f = *st;

    codec_close(f->cd);
    buf_free(&f->out);
    free(f);
    return 0;
}

static int32_t framed_id(const struct buf *b)
{
    return (int32_t)((uint32_t)b->data[1] << 24 | (uint32_t)b->data[2] << 16 |
                     (uint32_t)b->data[3] << 8 | b->data[4]);
}

static void sample_event(struct image_event *ev)
{
    memset(ev, 0, sizeof(*ev));
    snprintf(ev->image_id, sizeof(ev->image_id), "img-1");
    snprintf(ev->patient_id, sizeof(ev->patient_id), "p-7");
    snprintf(ev->uri, sizeof(ev->uri), "file:///data/fundus/1.jpg");
    ev->event_time_ms = 1767225600123;
}

static void test_image_event_round_trips_under_id_5(void **st)
{
    struct fx *f = *st;
    struct image_event ev, back;
    struct err e = {0};

    sample_event(&ev);
    assert_int_equal(codec_encode_image_event(f->cd, &ev, &f->out, &e), ERR_OK);
    assert_int_equal(framed_id(&f->out), 5);
    assert_int_equal(codec_schema_id(f->cd, CODEC_IMAGE_EVENT), 5);
    assert_int_equal(codec_decode_image_event(f->cd, f->out.data, f->out.len, &back, &e), ERR_OK);
    assert_memory_equal(&ev, &back, sizeof(ev));
}

static void test_image_event_with_empty_uri_or_long_id_is_refused(void **st)
{
    struct fx *f = *st;
    struct image_event back;
    struct err e = {0};
    char json[400];

    snprintf(json, sizeof(json),
             "{\"image_id\":\"a\",\"patient_id\":\"p\",\"uri\":\"\",\"event_time\":1}");
    assert_int_equal(codec_from_json(f->cd, CODEC_IMAGE_EVENT, json, strlen(json), &f->out, &e),
                     ERR_OK);
    assert_int_equal(codec_decode_image_event(f->cd, f->out.data, f->out.len, &back, &e),
                     ERR_DECODE);
    assert_non_null(strstr(e.msg, "uri"));
    assert_string_equal(back.image_id, ""); /* nothing half-filled */
    snprintf(json, sizeof(json),
             "{\"image_id\":\"%070d\",\"patient_id\":\"p\",\"uri\":\"x.png\",\"event_time\":1}", 1);
    assert_int_equal(codec_from_json(f->cd, CODEC_IMAGE_EVENT, json, strlen(json), &f->out, &e),
                     ERR_OK);
    assert_int_equal(codec_decode_image_event(f->cd, f->out.data, f->out.len, &back, &e),
                     ERR_DECODE);
    assert_non_null(strstr(e.msg, "image_id"));
}

/* Issue 23 cases 3 and 4: click and image times past the maximum future
 * skew (default 1 h) or negative are refused by the decoders, so every
 * worker dead-letters them with the reason. */
static void test_event_times_in_the_future_or_negative_are_refused(void **st)
{
    struct fx *f = *st;
    struct image_event iev;
    struct click_event cev;
    struct err e = {0};
    char json[400];
    static const char *const times[] = {"253402214400000", "-1", "4102444799999"};

    for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
        const char *why = times[i][0] == '-' ? "negative" : "event_in_future";
        snprintf(json, sizeof(json),
                 "{\"image_id\":\"a\",\"patient_id\":\"p\",\"uri\":\"x.png\",\"event_time\":%s}",
                 times[i]);
        assert_int_equal(codec_from_json(f->cd, CODEC_IMAGE_EVENT, json, strlen(json), &f->out,
                                         &e), ERR_OK);
        assert_int_not_equal(codec_decode_image_event(f->cd, f->out.data, f->out.len, &iev, &e),
                             ERR_OK);
        assert_non_null(strstr(e.msg, why));
        assert_string_equal(iev.image_id, "");
        snprintf(json, sizeof(json),
                 "{\"event_id\":\"c1\",\"session_id\":\"s1\",\"user_id\":null,\"item_id\":7,"
                 "\"event_type\":\"view\",\"event_time\":%s}", times[i]);
        assert_int_equal(codec_from_json(f->cd, CODEC_CLICK_EVENT, json, strlen(json), &f->out,
                                         &e), ERR_OK);
        assert_int_not_equal(codec_decode_click_event(f->cd, f->out.data, f->out.len, &cev, &e),
                             ERR_OK);
        assert_non_null(strstr(e.msg, why));
        assert_string_equal(cev.event_id, "");
    }
    /* a time of now is accepted by both */
    snprintf(json, sizeof(json),
             "{\"event_id\":\"c1\",\"session_id\":\"s1\",\"user_id\":null,\"item_id\":7,"
             "\"event_type\":\"view\",\"event_time\":%lld}", (long long)time(NULL) * 1000);
    assert_int_equal(codec_from_json(f->cd, CODEC_CLICK_EVENT, json, strlen(json), &f->out, &e),
                     ERR_OK);
    assert_int_equal(codec_decode_click_event(f->cd, f->out.data, f->out.len, &cev, &e), ERR_OK);
}

static void test_transaction_message_is_not_an_image_event(void **st)
{
    struct fx *f = *st;
    struct txn_event t;
    struct image_event back;
    struct err e = {0};

    event_txn_init(&t);
    snprintf(t.event_id, sizeof(t.event_id), "e1");
    snprintf(t.user_id, sizeof(t.user_id), "u1");
    assert_int_equal(codec_encode_txn(f->cd, &t, &f->out, &e), ERR_OK);
    assert_int_equal(codec_decode_image_event(f->cd, f->out.data, f->out.len, &back, &e),
                     ERR_DECODE);
    assert_non_null(strstr(e.msg, "image_event.avsc"));
}

static void sample_prediction(struct image_prediction *p)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->image_id, sizeof(p->image_id), "img-1");
    snprintf(p->patient_id, sizeof(p->patient_id), "p-7");
    p->event_time_ms = 1767225600123;
    p->ok = true;
    p->n_probabilities = 5;
    for (int k = 0; k < 5; k++)
        p->probabilities[k] = 0.1 * (k + 1) / 1.5;
    p->grade = 4;
    p->expected_grade = 2.6667;
    p->referable = true;
    p->referable_probability = 0.8;
    p->referable_threshold = 0.3;
    snprintf(p->model_name, sizeof(p->model_name), "fundus-cnn");
    snprintf(p->model_version, sizeof(p->model_version), "1");
    p->latency_us = 1234;
    snprintf(p->cam_path, sizeof(p->cam_path), "/var/cam/img-1.png");
    p->cam_height = p->cam_width = 7;
    for (int i = 0; i < 49; i++)
        p->cam_grid[i] = (float)i / 48.0f;
    snprintf(p->src_topic, sizeof(p->src_topic), "images");
    p->src_partition = 2;
    p->src_offset = 99;
}

static void test_image_prediction_round_trips_under_id_6(void **st)
{
    struct fx *f = *st;
    struct image_prediction p, back;
    struct err e = {0};

    sample_prediction(&p);
    assert_int_equal(codec_encode_image_prediction(f->cd, &p, &f->out, &e), ERR_OK);
    assert_int_equal(framed_id(&f->out), 6);
    assert_int_equal(codec_decode_image_prediction(f->cd, f->out.data, f->out.len, &back, &e),
                     ERR_OK);
    assert_memory_equal(&p, &back, sizeof(p));
}

static void test_ungradable_prediction_has_reason_and_empty_arrays(void **st)
{
    struct fx *f = *st;
    struct image_prediction p, back;
    struct err e = {0};

    sample_prediction(&p);
    p.ok = false;
    snprintf(p.reason, sizeof(p.reason), "truncated");
    snprintf(p.detail, sizeof(p.detail), "truncated: JPEG: Premature end of JPEG file");
    p.n_probabilities = 0;
    p.grade = -1;
    p.cam_height = p.cam_width = 0;
    p.cam_path[0] = '\0';
    assert_int_equal(codec_encode_image_prediction(f->cd, &p, &f->out, &e), ERR_OK);
    assert_int_equal(codec_decode_image_prediction(f->cd, f->out.data, f->out.len, &back, &e),
                     ERR_OK);
    assert_false(back.ok);
    assert_string_equal(back.reason, "truncated");
    assert_int_equal(back.n_probabilities, 0);
    assert_int_equal(back.cam_height * back.cam_width, 0);
    buf_reset(&f->out);
    assert_int_equal(codec_encode_image_prediction(f->cd, &p, &f->out, &e), ERR_OK);
    {
        struct buf js;
        buf_init(&js, 0);
        assert_int_equal(codec_to_json(f->cd, f->out.data, f->out.len, &js, &e), ERR_OK);
        assert_non_null(strstr((char *)js.data, "\"status\":\"ungradable\""));
        assert_non_null(strstr((char *)js.data, "\"reason\":\"truncated\""));
        buf_free(&js);
    }
}

static void test_out_of_range_counts_are_refused(void **st)
{
    struct fx *f = *st;
    struct image_prediction p;
    struct err e = {0};

    sample_prediction(&p);
    p.n_probabilities = 6;
    assert_int_equal(codec_encode_image_prediction(f->cd, &p, &f->out, &e), ERR_DECODE);
    assert_non_null(strstr(e.msg, "probabilities"));
    sample_prediction(&p);
    p.cam_height = p.cam_width = 17;
    assert_int_equal(codec_encode_image_prediction(f->cd, &p, &f->out, &e), ERR_DECODE);
    assert_non_null(strstr(e.msg, "cam_grid"));
}

static void test_json_line_produces_a_decodable_event(void **st)
{
    struct fx *f = *st;
    struct image_event back;
    struct err e = {0};
    const char *line = "{\"image_id\":\"img-9\",\"patient_id\":\"p-1\",\"uri\":\"a/b.png\","
                       "\"event_time\":1700000000000}";
    const char *bad = "{\"image_id\":\"img-9\",\"patient_id\":\"p-1\",\"url\":\"a/b.png\","
                      "\"event_time\":1700000000000}";

    assert_int_equal(codec_from_json(f->cd, CODEC_IMAGE_EVENT, line, strlen(line), &f->out, &e),
                     ERR_OK);
    assert_int_equal(codec_decode_image_event(f->cd, f->out.data, f->out.len, &back, &e), ERR_OK);
    assert_string_equal(back.uri, "a/b.png");
    assert_int_equal(back.event_time_ms, 1700000000000LL);
    assert_int_not_equal(codec_from_json(f->cd, CODEC_IMAGE_EVENT, bad, strlen(bad), &f->out, &e),
                         ERR_OK);
}

/* Container files: one open pair for every event kind; an image file is
 * read back whole, and is refused as any other kind's file. */
static void test_image_event_file_round_trips_and_is_no_other_kind(void **st)
{
    struct fx *f = *st;
    struct image_event ev, back;
    struct click_event ck = {0};
    struct err e = {0};
    char dir[] = "/tmp/test_image_codec.XXXXXX", path[64];
    struct codec_file *cf;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/img.avro", dir);
    sample_event(&ev);
    assert_non_null(cf = codec_file_open_write_as(f->cd, path, CODEC_IMAGE_EVENT, &e));
    assert_int_equal(codec_file_write_click(cf, &ck, &e), ERR_CONFIG);
    for (int i = 0; i < 3; i++) {
        ev.event_time_ms = 1767225600000LL + i;
        assert_int_equal(codec_file_write_image_event(cf, &ev, &e), ERR_OK);
    }
    assert_int_equal(codec_file_close(cf, &e), ERR_OK);

    assert_non_null(cf = codec_file_open_read_as(f->cd, path, CODEC_IMAGE_EVENT, &e));
    assert_int_equal(codec_file_read_click(cf, &ck, &e), ERR_CONFIG);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(codec_file_read_image_event(cf, &back, &e), 1);
        assert_string_equal(back.uri, ev.uri);
        assert_int_equal(back.event_time_ms, 1767225600000LL + i);
    }
    assert_int_equal(codec_file_read_image_event(cf, &back, &e), 0);
    assert_int_equal(codec_file_records(cf), 3);
    codec_file_close(cf, NULL);

    assert_null(codec_file_open_read_as(f->cd, path, CODEC_CLICK_EVENT, &e));
    assert_non_null(strstr(e.msg, "another schema"));
    assert_null(codec_file_open_read(f->cd, path, &e));
    assert_null(codec_file_open_read_as(f->cd, path, CODEC_IMAGE_PREDICTION, &e));
    assert_non_null(strstr(e.msg, "transaction, click or image events only"));
    remove(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_image_event_round_trips_under_id_5, setup, teardown),
        cmocka_unit_test_setup_teardown(test_image_event_with_empty_uri_or_long_id_is_refused,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_times_in_the_future_or_negative_are_refused,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_transaction_message_is_not_an_image_event, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_image_prediction_round_trips_under_id_6, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_ungradable_prediction_has_reason_and_empty_arrays,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_range_counts_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_line_produces_a_decodable_event, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_image_event_file_round_trips_and_is_no_other_kind,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
