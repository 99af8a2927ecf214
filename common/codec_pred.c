/* common/codec_pred.c: transaction predictions and dead letters, and the
 * field setters by name the other record files share.
 * Split out of codec.c; codec_int.h holds what the codec*.c files share. */
#include "codec_int.h"

/* ---- predictions and dead letters ---- */

/* Field setters by name: a schema that lacks the field or types it
 * differently is reported with the field's name. */
int field(avro_value_t *rec, const char *name, avro_value_t *v, struct err *e)
{
    if (avro_value_get_by_name(rec, name, v, NULL))
        return err_set(e, ERR_CONFIG, "schema has no field %s", name);
    return ERR_OK;
}

int put_str(avro_value_t *rec, const char *name, const char *s, size_t cap, struct err *e)
{
    avro_value_t v;

    if (field(rec, name, &v, e))
        return e->code;
    return set_fixed_str(&v, s ? s : "", s ? cap : 1, name, e);
}

int put_long(avro_value_t *rec, const char *name, int64_t x, struct err *e)
{
    avro_value_t v;

    if (field(rec, name, &v, e))
        return e->code;
    return avro_value_set_long(&v, x) ? avro_fail(e, ERR_DECODE, name) : ERR_OK;
}

int put_int(avro_value_t *rec, const char *name, int32_t x, struct err *e)
{
    avro_value_t v;

    if (field(rec, name, &v, e))
        return e->code;
    return avro_value_set_int(&v, x) ? avro_fail(e, ERR_DECODE, name) : ERR_OK;
}

int put_double(avro_value_t *rec, const char *name, double x, struct err *e)
{
    avro_value_t v;

    if (field(rec, name, &v, e))
        return e->code;
    return avro_value_set_double(&v, x) ? avro_fail(e, ERR_DECODE, name) : ERR_OK;
}

int put_bool(avro_value_t *rec, const char *name, bool x, struct err *e)
{
    avro_value_t v;

    if (field(rec, name, &v, e))
        return e->code;
    return avro_value_set_boolean(&v, x) ? avro_fail(e, ERR_DECODE, name) : ERR_OK;
}

static int put_reasons(avro_value_t *rec, const struct txn_prediction *p, struct err *e)
{
    avro_value_t arr, item;

    if (p->n_reasons < 0 || p->n_reasons > PRED_REASONS)
        return err_set(e, ERR_DECODE, "field reasons: n_reasons %d out of range [0, %d]",
                       p->n_reasons, PRED_REASONS);
    if (field(rec, "reasons", &arr, e))
        return e->code;
    for (int i = 0; i < p->n_reasons; i++) {
        if (avro_value_append(&arr, &item, NULL))
            return avro_fail(e, ERR_DECODE, "reasons");
        if (set_fixed_str(&item, p->reasons[i], sizeof(p->reasons[i]), "reasons", e))
            return e->code;
    }
    return ERR_OK;
}

/* An optional array of n strings (fields added by issue 18: a registered
 * schema from before it lacks them, and then they are left out). */
static int put_opt_strs(avro_value_t *rec, const char *name, const char *base, size_t stride,
                        int n, struct err *e)
{
    avro_value_t arr, item;

    if (avro_value_get_by_name(rec, name, &arr, NULL) != 0)
        return ERR_OK;
    if (n < 0 || n > PRED_REASONS)
        return err_set(e, ERR_DECODE, "field %s: %d items out of range [0, %d]", name, n,
                       PRED_REASONS);
    for (int i = 0; i < n; i++) {
        if (avro_value_append(&arr, &item, NULL))
            return avro_fail(e, ERR_DECODE, name);
        if (set_fixed_str(&item, base + (size_t)i * stride, stride, name, e))
            return e->code;
    }
    return ERR_OK;
}

/* The deciding model's reasons (features, values) and the scorecard's own. */
static int put_explanation(avro_value_t *rec, const struct txn_prediction *p, struct err *e)
{
    avro_value_t arr, item;

    if (put_opt_strs(rec, "reason_features", p->reason_features[0], sizeof(p->reason_features[0]),
                     p->n_reasons, e) ||
        put_opt_strs(rec, "scorecard_reasons", p->card_reasons[0], sizeof(p->card_reasons[0]),
                     p->n_card_reasons, e))
        return e->code;
    if (avro_value_get_by_name(rec, "reason_values", &arr, NULL) != 0)
        return ERR_OK;
    for (int i = 0; i < p->n_reasons; i++)
        if (avro_value_append(&arr, &item, NULL) ||
            avro_value_set_double(&item, p->reason_values[i]))
            return avro_fail(e, ERR_DECODE, "reason_values");
    return ERR_OK;
}

static int put_prediction(avro_value_t *r, const struct txn_prediction *p, struct err *e)
{
    avro_value_t v;

    if (PUT_STR(r, p, event_id, e) || PUT_STR(r, p, user_id, e) ||
        put_long(r, "event_time", p->event_time_ms, e) || PUT_STR(r, p, model_name, e) ||
        PUT_STR(r, p, model_version, e) || PUT_STR(r, p, feature_version, e) ||
        put_double(r, "probability", p->probability, e) || put_int(r, "score", p->score, e) ||
        put_double(r, "score_probability", p->score_probability, e) || PUT_STR(r, p, decision, e) ||
        put_reasons(r, p, e) || PUT_STR(r, p, feature_hash, e) ||
        put_bool(r, "degraded", p->degraded, e) || put_bool(r, "redelivered", p->redelivered, e) ||
        put_long(r, "latency_us", p->latency_us, e) || PUT_STR(r, p, src_topic, e) ||
        put_int(r, "src_partition", p->src_partition, e) ||
        put_long(r, "src_offset", p->src_offset, e))
        return e->code;
    /* Added by the champion/challenger issue: a registered schema from
     * before it (lookup only) lacks them, and then they are left out. */
    if (avro_value_get_by_name(r, "experiment_id", &v, NULL) == 0 &&
        set_fixed_str(&v, p->experiment_id, sizeof(p->experiment_id), "experiment_id", e))
        return e->code;
    if (avro_value_get_by_name(r, "variant", &v, NULL) == 0 &&
        set_fixed_str(&v, p->variant, sizeof(p->variant), "variant", e))
        return e->code;
    return put_explanation(r, p, e);
}

int codec_encode_prediction(struct codec *c, const struct txn_prediction *p, struct buf *out,
                            struct err *e)
{
    struct slot *s = &c->slot[c->known[CODEC_TXN_PREDICTION]];

    avro_value_reset(&s->value);
    if (put_prediction(&s->value, p, e))
        return err_wrap(e, "encode prediction %s", p->event_id);
    return encode(c, s, out, e);
}

/* Bytes, or null when nullable and p is NULL. */
static int put_bytes(avro_value_t *rec, const char *name, const void *p, size_t n, struct err *e)
{
    avro_value_t v, br;
    static const char none[1];

    if (field(rec, name, &v, e))
        return e->code;
    if (avro_value_get_type(&v) == AVRO_UNION) {
        /* ["null", "bytes"]: pick the branch by its type, not its position. */
        avro_schema_t u = avro_value_get_schema(&v);
        int want = p ? AVRO_BYTES : AVRO_NULL, b = 0;
        while (b < (int)avro_schema_union_size(u) &&
               (int)avro_typeof(avro_schema_union_branch(u, b)) != want)
            b++;
        if (avro_value_set_branch(&v, b, &br))
            return avro_fail(e, ERR_DECODE, name);
        if (!p)
            return avro_value_set_null(&br) ? avro_fail(e, ERR_DECODE, name) : ERR_OK;
        v = br;
    }
    if (avro_value_set_bytes(&v, (void *)(p ? p : none), p ? n : 0))
        return avro_fail(e, ERR_DECODE, name);
    return ERR_OK;
}

static int put_dlq(avro_value_t *r, const struct dlq_record *d, struct err *e)
{
    if (put_str(r, "reason", d->reason, SIZE_MAX, e) ||
        put_str(r, "error_code", d->error_code, SIZE_MAX, e) ||
        put_str(r, "worker", d->worker, SIZE_MAX, e) ||
        put_str(r, "src_topic", d->src_topic, SIZE_MAX, e) ||
        put_int(r, "src_partition", d->src_partition, e) ||
        put_long(r, "src_offset", d->src_offset, e) ||
        put_long(r, "src_timestamp", d->src_timestamp_ms, e) ||
        put_bytes(r, "key", d->key, d->key_len, e) ||
        put_bytes(r, "payload", d->payload ? d->payload : "", d->payload ? d->payload_len : 0, e) ||
        put_long(r, "failed_at", d->failed_at_ms, e) ||
        put_long(r, "payload_size",
                 (int64_t)(d->payload_size ? d->payload_size : d->payload ? d->payload_len : 0),
                 e) ||
        put_long(r, "key_size",
                 d->key ? (int64_t)(d->key_size ? d->key_size : d->key_len) : -1, e))
        return e->code;
    return ERR_OK;
}

int codec_encode_dlq(struct codec *c, const struct dlq_record *r, struct buf *out, struct err *e)
{
    struct slot *s = &c->slot[c->known[CODEC_DEAD_LETTER]];

    avro_value_reset(&s->value);
    if (put_dlq(&s->value, r, e))
        return err_wrap(e, "encode dead letter");
    return encode(c, s, out, e);
}
