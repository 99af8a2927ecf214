/* tests/fuzz/rec_diff.h: the differential check of codec_rec (a feature
 * spec's record read by position, common/codec/codec_rec.c) against avro-c
 * alone, shared by the libFuzzer target fuzz_rec.c and the corpus replay in
 * tests/test_rec_diff.c.
 *
 * Every input is the Avro body of one record of REC_DIFF_SCHEMA (the header
 * is added here). codec_rec_decode must accept, reject and decode exactly as
 * a plain avro-c read of the body (avro_value_read, then no byte left):
 * each field the spec reads present or null alike, numbers bit for bit
 * (NaN payloads included), ints and longs exactly, strings and enum
 * symbols byte for byte. The codec's bounded walk is stricter than avro-c
 * on purpose in five documented ways, the only rejections of an input
 * avro-c reads that are allowed: a string that is not UTF-8, a varint
 * longer than its type or overflowing 64 bits, an array or map block
 * whose byte size does not match its items (negative, or past the end,
 * included: avro-c reads the size and ignores it), a boolean byte other than 0
 * or 1 (the Avro specification allows only those; avro-c reads any byte),
 * and an enum index outside its symbols (avro-c 1.11 stores it unchecked:
 * a later avro_schema_enum_get reads out of bounds). The last two were
 * the first findings of the differential check (tests/test_rec_diff.c). */
#ifndef STREAMML_REC_DIFF_H
#define STREAMML_REC_DIFF_H

#include <avro.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

/* Every kind a spec reads (plain and [null, T] either way round), and
 * fields it does not read (a record, an array, a map, bytes, a fixed) that
 * the walk must skip as avro-c does. */
#define REC_DIFF_SCHEMA                                                                            \
    "{\"type\": \"record\", \"name\": \"Diff\", \"fields\": ["                                  \
    "{\"name\": \"key\", \"type\": \"string\"},"                                                 \
    "{\"name\": \"ts\", \"type\": \"long\"},"                                                    \
    "{\"name\": \"amount\", \"type\": [\"null\", \"double\"]},"                                \
    "{\"name\": \"ratio\", \"type\": \"float\"},"                                                \
    "{\"name\": \"count\", \"type\": \"int\"},"                                                  \
    "{\"name\": \"flag\", \"type\": [\"boolean\", \"null\"]},"                                 \
    "{\"name\": \"nested\", \"type\": {\"type\": \"record\", \"name\": \"Inner\", \"fields\": [" \
    "  {\"name\": \"tags\", \"type\": {\"type\": \"array\", \"items\": \"string\"}},"          \
    "  {\"name\": \"blob\", \"type\": \"bytes\"}]}},"                                            \
    "{\"name\": \"kind\", \"type\": {\"type\": \"enum\", \"name\": \"Kind\", "                  \
    "  \"symbols\": [\"a\", \"b\", \"c\"]}},"                                                     \
    "{\"name\": \"attrs\", \"type\": {\"type\": \"map\", \"values\": [\"null\", \"long\"]}},"   \
    "{\"name\": \"region\", \"type\": [\"null\", \"string\"]},"                                \
    "{\"name\": \"small\", \"type\": [\"null\", \"int\"]},"                                    \
    "{\"name\": \"digest\", \"type\": {\"type\": \"fixed\", \"name\": \"D4\", \"size\": 4}},"   \
    "{\"name\": \"big\", \"type\": [\"long\", \"null\"]}]}"

#define REC_DIFF_NF 10
static const char *const rec_diff_fields[REC_DIFF_NF] = {
    "key", "ts", "amount", "ratio", "count", "flag", "kind", "region", "small", "big"};

struct rec_diff {
    struct codec *c;
    struct codec_rec *rec;
    int32_t id;
    avro_schema_t schema;
    avro_value_iface_t *iface;
    unsigned char msg[1 << 16];
    char why[512];
    long both_ok, both_refused, stricter; /* outcomes seen */
    /* Around the reference's decode (NULL: none): the fuzz target frees
     * what avro-c leaks on a half-read input there. */
    void (*ref_begin)(void), (*ref_end)(void);
};

static int rec_diff_open(struct rec_diff *d, const char *schemas_dir)
{
    struct err e = {0};

    memset(d, 0, sizeof(*d));
    if (!(d->c = codec_open(schemas_dir, &e)) ||
        codec_add_schema(d->c, REC_DIFF_SCHEMA, strlen(REC_DIFF_SCHEMA), "diff.avsc", &d->id,
                         &e) ||
        !(d->rec = codec_rec_open(d->c, d->id, rec_diff_fields, REC_DIFF_NF, &e))) {
        snprintf(d->why, sizeof(d->why), "codec: %s", e.msg);
        return -1;
    }
    if (avro_schema_from_json_length(REC_DIFF_SCHEMA, strlen(REC_DIFF_SCHEMA), &d->schema) ||
        !(d->iface = avro_generic_class_from_schema(d->schema))) {
        snprintf(d->why, sizeof(d->why), "avro-c: %s", avro_strerror());
        return -1;
    }
    return 0;
}

static void rec_diff_close(struct rec_diff *d)
{
    codec_rec_close(d->rec);
    codec_close(d->c);
    if (d->iface)
        avro_value_iface_decref(d->iface);
    if (d->schema)
        avro_schema_decref(d->schema);
}

/* avro-c's value of one field as codec_rec reports it. */
static int ref_field(avro_value_t *rec, const char *name, struct codec_val *o)
{
    avro_value_t f, b, *v = &f;
    int32_t i32;
    float fl;
    int bo;

    memset(o, 0, sizeof(*o));
    o->num = NAN;
    if (avro_value_get_by_name(rec, name, &f, NULL))
        return -1;
    if (avro_value_get_type(&f) == AVRO_UNION) {
        if (avro_value_get_current_branch(&f, &b))
            return -1;
        if (avro_value_get_type(&b) == AVRO_NULL)
            return 0;
        v = &b;
    }
    o->present = 1;
    switch (avro_value_get_type(v)) {
    case AVRO_STRING:
        if (avro_value_get_string(v, &o->str, &o->len))
            return -1;
        o->len = o->len ? o->len - 1 : 0;
        return 0;
    case AVRO_ENUM:
        if (avro_value_get_enum(v, &i32))
            return -1;
        o->str = avro_schema_enum_get(avro_value_get_schema(v), i32);
        o->len = o->str ? strlen(o->str) : 0;
        return o->str ? 0 : -1;
    case AVRO_INT64:
        if (avro_value_get_long(v, &o->i))
            return -1;
        o->num = (double)o->i;
        return 0;
    case AVRO_INT32:
        if (avro_value_get_int(v, &i32))
            return -1;
        o->i = i32;
        o->num = i32;
        return 0;
    case AVRO_FLOAT:
        if (avro_value_get_float(v, &fl))
            return -1;
        o->num = fl;
        return 0;
    case AVRO_DOUBLE:
        return avro_value_get_double(v, &o->num) ? -1 : 0;
    case AVRO_BOOLEAN:
        if (avro_value_get_boolean(v, &bo))
            return -1;
        o->num = bo ? 1 : 0;
        return 0;
    default:
        return -1;
    }
}

static int same_val(const struct codec_val *a, const struct codec_val *b)
{
    if (a->present != b->present)
        return 0;
    if (!a->present)
        return 1;
    if (a->str || b->str)
        return a->str && b->str && a->len == b->len && memcmp(a->str, b->str, a->len) == 0;
    return memcmp(&a->num, &b->num, sizeof(double)) == 0 && a->i == b->i;
}

/* avro-c alone: the whole body read as one record, nothing left over. */
static int ref_decode(const uint8_t *body, size_t n, avro_value_t *v)
{
    avro_reader_t r = avro_reader_memory((const char *)body, (int64_t)n);
    char extra;
    int ok;

    if (!r)
        return -1;
    ok = avro_value_read(r, v) == 0 && avro_read(r, &extra, 1) != 0;
    avro_reader_free(r);
    return ok ? 0 : -1;
}

/* The walk's documented rules beyond avro-c (see the top of this file). */
static int stricter_rule(const char *msg)
{
    return strstr(msg, "invalid UTF-8") || strstr(msg, "varint longer than") ||
           strstr(msg, "varint overflows") || strstr(msg, "block size") ||
           strstr(msg, "block length") || /* a block size below 0 or past the end */
           strstr(msg, "boolean byte") || (strstr(msg, "index") && strstr(msg, "out of range"));
}

/* 0 when codec_rec and avro-c agree on body (or the codec applied one of
 * its stricter rules); -1 with why. */
static int rec_diff_check(struct rec_diff *d, const uint8_t *body, size_t n)
{
    struct codec_val got[REC_DIFF_NF], want;
    struct err e = {0};
    avro_value_t v;
    int rc_codec, rc_ref;

    if (n + 5 > sizeof(d->msg))
        return 0;
    d->msg[0] = 0;
    d->msg[1] = (unsigned char)((uint32_t)d->id >> 24);
    d->msg[2] = (unsigned char)((uint32_t)d->id >> 16);
    d->msg[3] = (unsigned char)((uint32_t)d->id >> 8);
    d->msg[4] = (unsigned char)d->id;
    memcpy(d->msg + 5, body, n);
    rc_codec = codec_rec_decode(d->rec, d->msg, n + 5, got, &e);
    if (d->ref_begin)
        d->ref_begin();
    if (avro_generic_value_new(d->iface, &v)) {
        snprintf(d->why, sizeof(d->why), "avro-c: %s", avro_strerror());
        if (d->ref_end)
            d->ref_end();
        return -1;
    }
    rc_ref = ref_decode(body, n, &v);
    d->why[0] = '\0';
    if (rc_codec && rc_ref) {
        d->both_refused++;
    } else if (rc_codec && stricter_rule(e.msg)) {
        d->stricter++;
    } else if (rc_codec) {
        snprintf(d->why, sizeof(d->why), "codec_rec refused what avro-c reads: %s", e.msg);
    } else if (rc_ref) {
        snprintf(d->why, sizeof(d->why), "codec_rec read what avro-c refuses (%s)",
                 avro_strerror());
    } else {
        for (size_t k = 0; k < REC_DIFF_NF && !d->why[0]; k++)
            if (ref_field(&v, rec_diff_fields[k], &want) || !same_val(&got[k], &want))
                snprintf(d->why, sizeof(d->why), "field %s: codec_rec %s %.17g %lld, avro-c %s "
                         "%.17g %lld", rec_diff_fields[k], got[k].present ? "present" : "null",
                         got[k].num, (long long)got[k].i, want.present ? "present" : "null",
                         want.num, (long long)want.i);
        d->both_ok += !d->why[0];
    }
    avro_value_decref(&v);
    if (d->ref_end)
        d->ref_end();
    return d->why[0] ? -1 : 0;
}

#endif
