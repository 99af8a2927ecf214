/* common/codec/codec_image.c: struct image_event / image_prediction <-> their schemas.
 * Split out of codec.c; codec_int.h holds what the codec*.c files share. */
#include "evtime.h"
#include "codec_int.h"

#include <string.h>

/* ---- images: struct image_event / image_prediction <-> their schemas ---- */

int get_str(avro_value_t *rec, const char *name, char *dst, size_t cap, struct err *e)
{
    avro_value_t v;
    const char *s;
    size_t size;

    if (field(rec, name, &v, e))
        return e->code;
    if (avro_value_get_string(&v, &s, &size))
        return avro_fail(e, ERR_DECODE, name);
    return copy_str(dst, cap, s, size ? size - 1 : 0, name, e);
}

int get_long(avro_value_t *rec, const char *name, int64_t *x, struct err *e)
{
    avro_value_t v;

    if (field(rec, name, &v, e))
        return e->code;
    return avro_value_get_long(&v, x) ? avro_fail(e, ERR_DECODE, name) : ERR_OK;
}

int get_int(avro_value_t *rec, const char *name, int32_t *x, struct err *e)
{
    avro_value_t v;

    if (field(rec, name, &v, e))
        return e->code;
    return avro_value_get_int(&v, x) ? avro_fail(e, ERR_DECODE, name) : ERR_OK;
}

int get_double(avro_value_t *rec, const char *name, double *x, struct err *e)
{
    avro_value_t v;

    if (field(rec, name, &v, e))
        return e->code;
    return avro_value_get_double(&v, x) ? avro_fail(e, ERR_DECODE, name) : ERR_OK;
}

int get_bool(avro_value_t *rec, const char *name, bool *x, struct err *e)
{
    avro_value_t v;
    int b;

    if (field(rec, name, &v, e))
        return e->code;
    if (avro_value_get_boolean(&v, &b))
        return avro_fail(e, ERR_DECODE, name);
    *x = b != 0;
    return ERR_OK;
}

int get_image(avro_value_t *v, struct image_event *ev, struct err *e)
{
    memset(ev, 0, sizeof(*ev));
    if (GET_STR(v, ev, image_id, e) || GET_STR(v, ev, patient_id, e) || GET_STR(v, ev, uri, e) ||
        get_long(v, "event_time", &ev->event_time_ms, e))
        goto out_clear;
    if (!ev->uri[0] || !ev->image_id[0]) {
        err_set(e, ERR_DECODE, "field %s is empty", ev->uri[0] ? "image_id" : "uri");
        goto out_clear;
    }
    if (evt_image_validate(ev, e))
        goto out_clear;
    return ERR_OK;
out_clear:
    memset(ev, 0, sizeof(*ev)); /* never hand out half an event */
    return e->code;
}

int codec_decode_image_event(struct codec *c, const void *msg, size_t len,
                             struct image_event *ev, struct err *e)
{
    struct slot *s;

    memset(ev, 0, sizeof(*ev));
    if (decode_as(c, msg, len, &c->slot[c->known[CODEC_IMAGE_EVENT]], &s, e))
        return e->code;
    return get_image(&s->value, ev, e);
}

int fill_image(struct codec *c, const struct image_event *ev, struct err *e)
{
    avro_value_t *r = &c->slot[c->known[CODEC_IMAGE_EVENT]].value;

    avro_value_reset(r);
    if (PUT_STR(r, ev, image_id, e) || PUT_STR(r, ev, patient_id, e) || PUT_STR(r, ev, uri, e) ||
        put_long(r, "event_time", ev->event_time_ms, e))
        return err_wrap(e, "encode image event %s", ev->image_id);
    return ERR_OK;
}

int codec_encode_image_event(struct codec *c, const struct image_event *ev, struct buf *out,
                             struct err *e)
{
    if (fill_image(c, ev, e))
        return e->code;
    return encode(c, &c->slot[c->known[CODEC_IMAGE_EVENT]], out, e);
}

static int put_doubles(avro_value_t *rec, const char *name, const double *x, int n,
                       struct err *e)
{
    avro_value_t arr, item;

    if (field(rec, name, &arr, e))
        return e->code;
    for (int i = 0; i < n; i++)
        if (avro_value_append(&arr, &item, NULL) || avro_value_set_double(&item, x[i]))
            return avro_fail(e, ERR_DECODE, name);
    return ERR_OK;
}

static int put_floats(avro_value_t *rec, const char *name, const float *x, int n, struct err *e)
{
    avro_value_t arr, item;

    if (field(rec, name, &arr, e))
        return e->code;
    for (int i = 0; i < n; i++)
        if (avro_value_append(&arr, &item, NULL) || avro_value_set_float(&item, x[i]))
            return avro_fail(e, ERR_DECODE, name);
    return ERR_OK;
}

static int put_status(avro_value_t *rec, bool ok, struct err *e)
{
    avro_value_t v;

    int sym;

    if (field(rec, "status", &v, e))
        return e->code;
    /* By name: a schema that reorders the symbols cannot flip the status. */
    sym = avro_schema_enum_get_by_name(avro_value_get_schema(&v), ok ? "ok" : "ungradable");
    if (sym < 0)
        return err_set(e, ERR_CONFIG, "field status: no symbol %s", ok ? "ok" : "ungradable");
    return avro_value_set_enum(&v, sym) ? avro_fail(e, ERR_DECODE, "status") : ERR_OK;
}

static int check_image_prediction(const struct image_prediction *p, struct err *e)
{
    int cells = p->cam_height * p->cam_width;

    if (p->n_probabilities < 0 || p->n_probabilities > IMGEV_GRADES)
        return err_set(e, ERR_DECODE, "field probabilities: %d values, at most %d",
                       p->n_probabilities, IMGEV_GRADES);
    if (p->cam_height < 0 || p->cam_width < 0 || cells > IMGEV_CAM_MAX)
        return err_set(e, ERR_DECODE, "field cam_grid: %dx%d cells, at most %d", p->cam_height,
                       p->cam_width, IMGEV_CAM_MAX);
    return ERR_OK;
}

static int put_image_prediction(avro_value_t *r, const struct image_prediction *p, struct err *e)
{
    if (check_image_prediction(p, e) || PUT_STR(r, p, image_id, e) ||
        PUT_STR(r, p, patient_id, e) || put_long(r, "event_time", p->event_time_ms, e) ||
        put_status(r, p->ok, e) || PUT_STR(r, p, reason, e) || PUT_STR(r, p, detail, e) ||
        put_doubles(r, "probabilities", p->probabilities, p->n_probabilities, e) ||
        put_int(r, "grade", p->grade, e) || put_double(r, "expected_grade", p->expected_grade, e) ||
        put_bool(r, "referable", p->referable, e) ||
        put_double(r, "referable_probability", p->referable_probability, e) ||
        put_double(r, "referable_threshold", p->referable_threshold, e) ||
        put_double(r, "agreement", p->agreement, e) ||
        PUT_STR(r, p, model_name, e) || PUT_STR(r, p, model_version, e) ||
        put_long(r, "latency_us", p->latency_us, e) || PUT_STR(r, p, cam_path, e) ||
        put_int(r, "cam_height", p->cam_height, e) || put_int(r, "cam_width", p->cam_width, e) ||
        put_floats(r, "cam_grid", p->cam_grid, p->cam_height * p->cam_width, e) ||
        PUT_STR(r, p, src_topic, e) || put_int(r, "src_partition", p->src_partition, e) ||
        put_long(r, "src_offset", p->src_offset, e))
        return e->code;
    return ERR_OK;
}

int codec_encode_image_prediction(struct codec *c, const struct image_prediction *p,
                                  struct buf *out, struct err *e)
{
    struct slot *s = &c->slot[c->known[CODEC_IMAGE_PREDICTION]];

    avro_value_reset(&s->value);
    if (put_image_prediction(&s->value, p, e))
        return err_wrap(e, "encode image prediction %s", p->image_id);
    return encode(c, s, out, e);
}

/* An array field into at most cap values (doubles or floats). */
static int get_array(avro_value_t *rec, const char *name, double *d, float *f, int cap, int *n,
                     struct err *e)
{
    avro_value_t arr, item;
    size_t count;

    if (field(rec, name, &arr, e))
        return e->code;
    if (avro_value_get_size(&arr, &count))
        return avro_fail(e, ERR_DECODE, name);
    if (count > (size_t)cap)
        return err_set(e, ERR_DECODE, "field %s: %zu values, at most %d", name, count, cap);
    for (size_t i = 0; i < count; i++) {
        if (avro_value_get_by_index(&arr, i, &item, NULL) ||
            (d ? avro_value_get_double(&item, &d[i]) : avro_value_get_float(&item, &f[i])))
            return avro_fail(e, ERR_DECODE, name);
    }
    *n = (int)count;
    return ERR_OK;
}

static int get_image_prediction(avro_value_t *r, struct image_prediction *p, struct err *e)
{
    avro_value_t v;
    int st, cells = 0;

    if (GET_STR(r, p, image_id, e) || GET_STR(r, p, patient_id, e) ||
        get_long(r, "event_time", &p->event_time_ms, e) || field(r, "status", &v, e) ||
        avro_value_get_enum(&v, &st) || GET_STR(r, p, reason, e) || GET_STR(r, p, detail, e) ||
        get_array(r, "probabilities", p->probabilities, NULL, IMGEV_GRADES, &p->n_probabilities,
                  e) ||
        get_int(r, "grade", &p->grade, e) || get_double(r, "expected_grade", &p->expected_grade, e) ||
        get_bool(r, "referable", &p->referable, e) ||
        get_double(r, "referable_probability", &p->referable_probability, e) ||
        get_double(r, "referable_threshold", &p->referable_threshold, e) ||
        get_double(r, "agreement", &p->agreement, e) ||
        GET_STR(r, p, model_name, e) || GET_STR(r, p, model_version, e) ||
        get_long(r, "latency_us", &p->latency_us, e) || GET_STR(r, p, cam_path, e) ||
        get_int(r, "cam_height", &p->cam_height, e) || get_int(r, "cam_width", &p->cam_width, e) ||
        get_array(r, "cam_grid", NULL, p->cam_grid, IMGEV_CAM_MAX, &cells, e) ||
        GET_STR(r, p, src_topic, e) || get_int(r, "src_partition", &p->src_partition, e) ||
        get_long(r, "src_offset", &p->src_offset, e))
        return e->code ? e->code : avro_fail(e, ERR_DECODE, "status");
    p->ok = st == avro_schema_enum_get_by_name(avro_value_get_schema(&v), "ok");
    if ((int64_t)p->cam_height * p->cam_width != cells)
        return err_set(e, ERR_DECODE, "field cam_grid: %d values for %dx%d", cells,
                       p->cam_height, p->cam_width);
    return ERR_OK;
}

int codec_decode_image_prediction(struct codec *c, const void *msg, size_t len,
                                  struct image_prediction *p, struct err *e)
{
    struct slot *s;

    memset(p, 0, sizeof(*p));
    err_clear(e);
    if (decode_as(c, msg, len, &c->slot[c->known[CODEC_IMAGE_PREDICTION]], &s, e))
        return e->code;
    if (get_image_prediction(&s->value, p, e)) {
        memset(p, 0, sizeof(*p));
        return e->code;
    }
    return ERR_OK;
}
