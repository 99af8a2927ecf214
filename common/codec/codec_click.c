/* common/codec/codec_click.c: struct click_event / click_prediction <-> their schemas.
 * Split out of codec.c; codec_int.h holds what the codec*.c files share. */
#include "evtime.h"
#include "codec_int.h"

#include <inttypes.h>
#include <string.h>

/* ---- clickstream: struct click_event / click_prediction <-> their schemas ---- */

const char *click_type_name(enum click_type t)
{
    static const char *const names[] = {"view", "cart", "purchase"};
    return (unsigned)t < 3 ? names[t] : "?";
}

/* ["null", "string"]: the branch picked by its type, not its position. */
static int put_opt_str(avro_value_t *rec, const char *name, const char *s, size_t cap,
                       struct err *e)
{
    avro_value_t v, br;
    avro_schema_t u;
    int want = s ? AVRO_STRING : AVRO_NULL, b = 0;

    if (field(rec, name, &v, e))
        return e->code;
    u = avro_value_get_schema(&v);
    while (b < (int)avro_schema_union_size(u) &&
           (int)avro_typeof(avro_schema_union_branch(u, b)) != want)
        b++;
    if (avro_value_set_branch(&v, b, &br))
        return avro_fail(e, ERR_DECODE, name);
    if (!s)
        return avro_value_set_null(&br) ? avro_fail(e, ERR_DECODE, name) : ERR_OK;
    return set_fixed_str(&br, s, cap, name, e);
}

static int get_opt_str(avro_value_t *rec, const char *name, char *dst, size_t cap, bool *has,
                       struct err *e)
{
    avro_value_t v, br;
    const char *s;
    size_t size;

    *has = false;
    dst[0] = '\0';
    if (field(rec, name, &v, e))
        return e->code;
    if (avro_value_get_current_branch(&v, &br))
        return avro_fail(e, ERR_DECODE, name);
    if (avro_value_get_type(&br) == AVRO_NULL)
        return ERR_OK;
    if (avro_value_get_string(&br, &s, &size))
        return avro_fail(e, ERR_DECODE, name);
    *has = true;
    return copy_str(dst, cap, s, size ? size - 1 : 0, name, e);
}

static int get_click_type(avro_value_t *rec, enum click_type *t, struct err *e)
{
    avro_value_t v;
    int sym;
    const char *name;

    if (field(rec, "event_type", &v, e))
        return e->code;
    if (avro_value_get_enum(&v, &sym))
        return avro_fail(e, ERR_DECODE, "event_type");
    name = avro_schema_enum_get(avro_value_get_schema(&v), sym);
    for (int k = 0; k < 3; k++)
        if (name && strcmp(name, click_type_name((enum click_type)k)) == 0) {
            *t = (enum click_type)k;
            return ERR_OK;
        }
    return err_set(e, ERR_DECODE, "field event_type: unknown symbol %s", name ? name : "?");
}

const char *click_outcome_type_name(enum click_outcome_type t)
{
    static const char *const names[] = {"impression", "click", "cart", "purchase"};
    return (unsigned)t < 4 ? names[t] : "?";
}

/* price: absent from a container file of click_event_v1.avsc (messages are
 * resolved to the current schema, its default 0); a price that is not a
 * finite amount in [0, 1e9] is refused by name. */
static int get_price(avro_value_t *v, double *price, struct err *e)
{
    avro_value_t f;

    *price = 0;
    if (avro_value_get_by_name(v, "price", &f, NULL))
        return ERR_OK;
    if (avro_value_get_double(&f, price))
        return avro_fail(e, ERR_DECODE, "price");
    if (!(*price >= 0 && *price <= 1e9))
        return err_set(e, ERR_DECODE, "field price: %g is not an amount in [0, 1e9]", *price);
    return ERR_OK;
}

/* A click_event value (a message's or a container file's) into ev. */
int get_click(avro_value_t *v, struct click_event *ev, struct err *e)
{
    memset(ev, 0, sizeof(*ev));
    if (GET_STR(v, ev, event_id, e) || GET_STR(v, ev, session_id, e) ||
        get_opt_str(v, "user_id", ev->user_id, sizeof(ev->user_id), &ev->has_user, e) ||
        get_long(v, "item_id", &ev->item_id, e) || get_click_type(v, &ev->type, e) ||
        get_long(v, "event_time", &ev->event_time_ms, e) || get_price(v, &ev->price, e))
        goto out_clear;
    if (!ev->event_id[0] || !ev->session_id[0]) {
        err_set(e, ERR_DECODE, "field %s is empty", ev->event_id[0] ? "session_id" : "event_id");
        goto out_clear;
    }
    if (evt_click_validate(ev, e)) /* dead-lettered, never counted */
        goto out_clear;
    return ERR_OK;
out_clear:
    memset(ev, 0, sizeof(*ev)); /* never hand out half an event */
    return e->code;
}

int codec_decode_click_event(struct codec *c, const void *msg, size_t len,
                             struct click_event *ev, struct err *e)
{
    struct slot *s;

    const struct slot *want = &c->slot[c->known[CODEC_CLICK_EVENT]];

    memset(ev, 0, sizeof(*ev));
    /* the current schema, or an earlier ClickEvent (click_event_v1.avsc: no
     * price), read by field name: a field it lacks takes its default */
    if (frame_walk(c, msg, len, &s, e))
        return e->code;
    if (s != want && !avro_schema_equal(s->schema, want->schema) &&
        strcmp(avro_schema_name(s->schema), avro_schema_name(want->schema)))
        return err_set(e, ERR_DECODE, "schema id %" PRId32 " is %s, expected %s", s->id, s->file,
                       want->file);
    if (avro_value_read(c->reader, &s->value))
        return avro_fail(e, ERR_DECODE, s->file);
    return get_click(&s->value, ev, e);
}

/* Fills the click_event slot's value from ev (a message or a file record). */
int fill_click(struct codec *c, const struct click_event *ev, struct err *e)
{
    struct slot *s = &c->slot[c->known[CODEC_CLICK_EVENT]];
    avro_value_t *r = &s->value, v;
    int sym;

    avro_value_reset(r);
    if (field(r, "event_type", &v, e))
        return e->code;
    sym = avro_schema_enum_get_by_name(avro_value_get_schema(&v), click_type_name(ev->type));
    if (sym < 0)
        return err_set(e, ERR_DECODE, "encode click %s: event_type %d", ev->event_id,
                       (int)ev->type);
    if (PUT_STR(r, ev, event_id, e) || PUT_STR(r, ev, session_id, e) ||
        put_opt_str(r, "user_id", ev->has_user ? ev->user_id : NULL, sizeof(ev->user_id), e) ||
        put_long(r, "item_id", ev->item_id, e) ||
        (avro_value_set_enum(&v, sym) && avro_fail(e, ERR_DECODE, "event_type")) ||
        put_long(r, "event_time", ev->event_time_ms, e) ||
        (avro_value_get_by_name(r, "price", &v, NULL) == 0 && put_double(r, "price", ev->price, e)))
        return err_wrap(e, "encode click %.*s", (int)strnlen(ev->event_id, sizeof(ev->event_id)),
                        ev->event_id);
    return ERR_OK;
}

int codec_encode_click_event(struct codec *c, const struct click_event *ev, struct buf *out,
                             struct err *e)
{
    if (fill_click(c, ev, e))
        return e->code;
    return encode(c, &c->slot[c->known[CODEC_CLICK_EVENT]], out, e);
}

static int put_shown(avro_value_t *rec, const struct click_prediction *p, struct err *e)
{
    avro_value_t arr, item;

    if (p->n_items < 0 || p->n_items > CLICK_SHOWN_MAX)
        return err_set(e, ERR_DECODE, "field items: %d values, at most %d", p->n_items,
                       CLICK_SHOWN_MAX);
    if (field(rec, "items", &arr, e))
        return e->code;
    for (int i = 0; i < p->n_items; i++) {
        const struct click_shown *it = &p->items[i];
        if (avro_value_append(&arr, &item, NULL))
            return avro_fail(e, ERR_DECODE, "items");
        if (put_long(&item, "item_id", it->item_id, e) || put_double(&item, "score", it->score, e) ||
            PUT_STR(&item, it, source, e) || put_double(&item, "propensity", it->propensity, e))
            return e->code;
    }
    return ERR_OK;
}

int codec_encode_click_prediction(struct codec *c, const struct click_prediction *p,
                                  struct buf *out, struct err *e)
{
    struct slot *s = &c->slot[c->known[CODEC_CLICK_PREDICTION]];
    avro_value_t *r = &s->value;

    avro_value_reset(r);
    if (PUT_STR(r, p, session_id, e) || PUT_STR(r, p, event_id, e) ||
        put_long(r, "event_time", p->event_time_ms, e) || put_shown(r, p, e) ||
        put_bool(r, "cold_start", p->cold_start, e) ||
        put_bool(r, "unknown_item", p->unknown_item, e) || put_bool(r, "degraded", p->degraded, e) ||
        put_long(r, "session_clicks", p->session_clicks, e) || PUT_STR(r, p, model_name, e) ||
        PUT_STR(r, p, model_version, e) || put_long(r, "latency_us", p->latency_us, e) ||
        PUT_STR(r, p, src_topic, e) || put_int(r, "src_partition", p->src_partition, e) ||
        put_long(r, "src_offset", p->src_offset, e) || PUT_STR(r, p, experiment_id, e) ||
        PUT_STR(r, p, variant, e))
        return err_wrap(e, "encode click prediction %.*s",
                        (int)strnlen(p->event_id, sizeof(p->event_id)), p->event_id);
    return encode(c, s, out, e);
}

static int get_shown(avro_value_t *rec, struct click_prediction *p, struct err *e)
{
    avro_value_t arr, item;
    size_t count;

    if (field(rec, "items", &arr, e))
        return e->code;
    if (avro_value_get_size(&arr, &count))
        return avro_fail(e, ERR_DECODE, "items");
    if (count > CLICK_SHOWN_MAX)
        return err_set(e, ERR_DECODE, "field items: %zu values, at most %d", count,
                       CLICK_SHOWN_MAX);
    for (size_t i = 0; i < count; i++) {
        struct click_shown *it = &p->items[i];
        if (avro_value_get_by_index(&arr, i, &item, NULL))
            return avro_fail(e, ERR_DECODE, "items");
        if (get_long(&item, "item_id", &it->item_id, e) ||
            get_double(&item, "score", &it->score, e) || GET_STR(&item, it, source, e) ||
            get_double(&item, "propensity", &it->propensity, e))
            return e->code;
    }
    p->n_items = (int)count;
    return ERR_OK;
}

int codec_decode_click_prediction(struct codec *c, const void *msg, size_t len,
                                  struct click_prediction *p, struct err *e)
{
    struct slot *s;
    avro_value_t *r;

    memset(p, 0, sizeof(*p));
    err_clear(e);
    if (decode_as(c, msg, len, &c->slot[c->known[CODEC_CLICK_PREDICTION]], &s, e))
        return e->code;
    r = &s->value;
    if (GET_STR(r, p, session_id, e) || GET_STR(r, p, event_id, e) ||
        get_long(r, "event_time", &p->event_time_ms, e) || get_shown(r, p, e) ||
        get_bool(r, "cold_start", &p->cold_start, e) ||
        get_bool(r, "unknown_item", &p->unknown_item, e) ||
        get_bool(r, "degraded", &p->degraded, e) ||
        get_long(r, "session_clicks", &p->session_clicks, e) || GET_STR(r, p, model_name, e) ||
        GET_STR(r, p, model_version, e) || get_long(r, "latency_us", &p->latency_us, e) ||
        GET_STR(r, p, src_topic, e) || get_int(r, "src_partition", &p->src_partition, e) ||
        get_long(r, "src_offset", &p->src_offset, e) || GET_STR(r, p, experiment_id, e) ||
        GET_STR(r, p, variant, e)) {
        memset(p, 0, sizeof(*p));
        return e->code;
    }
    return ERR_OK;
}

/* ---- outcomes (schemas/click_outcome.avsc) ---- */

int codec_encode_click_outcome(struct codec *c, const struct click_outcome *o, struct buf *out,
                               struct err *e)
{
    struct slot *s = &c->slot[c->known[CODEC_CLICK_OUTCOME]];
    avro_value_t *r = &s->value, v;
    int sym;

    avro_value_reset(r);
    if (field(r, "outcome_type", &v, e))
        return e->code;
    sym = avro_schema_enum_get_by_name(avro_value_get_schema(&v), click_outcome_type_name(o->type));
    if (sym < 0 || avro_value_set_enum(&v, sym))
        return err_set(e, ERR_DECODE, "encode outcome %s: outcome_type %d", o->outcome_id,
                       (int)o->type);
    if (PUT_STR(r, o, outcome_id, e) || PUT_STR(r, o, experiment_id, e) ||
        PUT_STR(r, o, variant, e) || PUT_STR(r, o, unit_id, e) || PUT_STR(r, o, session_id, e) ||
        PUT_STR(r, o, rec_event_id, e) || put_long(r, "rec_time", o->rec_time_ms, e) ||
        PUT_STR(r, o, event_id, e) || put_long(r, "event_time", o->event_time_ms, e) ||
        put_long(r, "item_id", o->item_id, e) || put_int(r, "position", o->position, e) ||
        put_double(r, "propensity", o->propensity, e) || put_int(r, "n_items", o->n_items, e) ||
        put_double(r, "revenue", o->revenue, e) || PUT_STR(r, o, src_topic, e) ||
        put_int(r, "src_partition", o->src_partition, e) ||
        put_long(r, "src_offset", o->src_offset, e))
        return err_wrap(e, "encode outcome %.*s",
                        (int)strnlen(o->outcome_id, sizeof(o->outcome_id)), o->outcome_id);
    return encode(c, s, out, e);
}

int codec_decode_click_outcome(struct codec *c, const void *msg, size_t len,
                               struct click_outcome *o, struct err *e)
{
    struct slot *s;
    avro_value_t *r, v;
    int sym;
    const char *name;

    memset(o, 0, sizeof(*o));
    err_clear(e);
    if (decode_as(c, msg, len, &c->slot[c->known[CODEC_CLICK_OUTCOME]], &s, e))
        return e->code;
    r = &s->value;
    if (field(r, "outcome_type", &v, e) || avro_value_get_enum(&v, &sym))
        return e->code ? e->code : avro_fail(e, ERR_DECODE, "outcome_type");
    name = avro_schema_enum_get(avro_value_get_schema(&v), sym);
    for (o->type = OUT_IMPRESSION; o->type <= OUT_PURCHASE; o->type++)
        if (name && strcmp(name, click_outcome_type_name(o->type)) == 0)
            break;
    if (o->type > OUT_PURCHASE)
        return err_set(e, ERR_DECODE, "field outcome_type: unknown symbol %s", name ? name : "?");
    if (GET_STR(r, o, outcome_id, e) || GET_STR(r, o, experiment_id, e) ||
        GET_STR(r, o, variant, e) || GET_STR(r, o, unit_id, e) || GET_STR(r, o, session_id, e) ||
        GET_STR(r, o, rec_event_id, e) || get_long(r, "rec_time", &o->rec_time_ms, e) ||
        GET_STR(r, o, event_id, e) || get_long(r, "event_time", &o->event_time_ms, e) ||
        get_long(r, "item_id", &o->item_id, e) || get_int(r, "position", &o->position, e) ||
        get_double(r, "propensity", &o->propensity, e) || get_int(r, "n_items", &o->n_items, e) ||
        get_double(r, "revenue", &o->revenue, e) || GET_STR(r, o, src_topic, e) ||
        get_int(r, "src_partition", &o->src_partition, e) ||
        get_long(r, "src_offset", &o->src_offset, e)) {
        memset(o, 0, sizeof(*o));
        return e->code;
    }
    return ERR_OK;
}
