/* tests/fuzz/plan_diff.h: the differential check of the Avro plans
 * (common/codec/codec_plan.c) against avro-c, shared by the libFuzzer target
 * fuzz_avro_plan.c and the corpus replay in tests/test_avro_plan.c.
 *
 * Two codecs over the same schemas: one decodes/encodes by plan only
 * (CODEC_PLAN_ONLY: a message the plan refuses is an error, not retried by
 * avro-c), the other by avro-c only. They must agree on every input: same
 * error class, same event bit for bit (NaN payloads included), same bytes.
 * The schema directory adds two writers of tests/fixtures/evolution: v2
 * (added fields: the plan follows the resolution) and v0 (reordered, int
 * promotions: avro-c reads it). */
#ifndef STREAMML_PLAN_DIFF_H
#define STREAMML_PLAN_DIFF_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codec.h"
#include "event.h"

#define PLAN_DIFF_V0 20
#define PLAN_DIFF_V2 21

struct plan_diff {
    char dir[64];
    struct codec *plan, *ref;
    struct buf a, b;
    char why[512];
    long decoded, encoded; /* inputs both accepted */
};

static int plan_diff_copy(const char *from, const char *dir, const char *name)
{
    char path[256], buf[8192];
    FILE *in = fopen(from, "rb"), *out;
    size_t n;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (!in || !(out = fopen(path, "wb"))) {
        if (in)
            fclose(in);
        return -1;
    }
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        fwrite(buf, 1, n, out);
    fclose(in);
    return fclose(out);
}

/* Run from the repository root. 0, or -1 with why filled. */
static int plan_diff_open(struct plan_diff *d)
{
    static const char *const files[] = {
        "transaction_event.avsc", "transaction_prediction.avsc", "dead_letter.avsc",
        "alert_event.avsc",       "image_event.avsc",            "image_prediction.avsc",
        "click_event.avsc",       "click_prediction.avsc",       "label_event.avsc",
        "click_outcome.avsc",     "catalog_item.avsc"};
    char from[256], path[128];
    struct err e = {0};
    FILE *ids;

    memset(d, 0, sizeof(*d));
    snprintf(d->dir, sizeof(d->dir), "/tmp/plan_diff.XXXXXX");
    if (!mkdtemp(d->dir))
        return snprintf(d->why, sizeof(d->why), "mkdtemp failed"), -1;
    snprintf(path, sizeof(path), "%s/ids", d->dir);
    if (!(ids = fopen(path, "w")))
        return snprintf(d->why, sizeof(d->why), "%s: cannot write", path), -1;
    for (int i = 0; i < (int)(sizeof(files) / sizeof(files[0])); i++) {
        snprintf(from, sizeof(from), "schemas/%s", files[i]);
        if (plan_diff_copy(from, d->dir, files[i]))
            return snprintf(d->why, sizeof(d->why), "%s: cannot copy", from), -1;
        fprintf(ids, "%d %s\n", i + 1, files[i]);
    }
    fprintf(ids, "%d transaction_event_v0.avsc\n%d transaction_event_v2.avsc\n", PLAN_DIFF_V0,
            PLAN_DIFF_V2);
    fclose(ids);
    if (plan_diff_copy("tests/fixtures/evolution/transaction_event_v0.avsc", d->dir,
                       "transaction_event_v0.avsc") ||
        plan_diff_copy("tests/fixtures/evolution/transaction_event_v2.avsc", d->dir,
                       "transaction_event_v2.avsc"))
        return snprintf(d->why, sizeof(d->why), "cannot copy the evolution writers"), -1;
    if (!(d->plan = codec_open(d->dir, &e)) || !(d->ref = codec_open(d->dir, &e)))
        return snprintf(d->why, sizeof(d->why), "codec_open: %s", e.msg), -1;
    codec_set_plan(d->plan, CODEC_PLAN_ONLY);
    codec_set_plan(d->ref, CODEC_PLAN_OFF);
    buf_init(&d->a, 0);
    buf_init(&d->b, 0);
    return 0;
}

static void plan_diff_close(struct plan_diff *d)
{
    char path[128];
    static const char *const files[] = {
        "ids", "transaction_event.avsc", "transaction_prediction.avsc", "dead_letter.avsc",
        "alert_event.avsc", "image_event.avsc", "image_prediction.avsc", "click_event.avsc",
        "click_prediction.avsc", "label_event.avsc", "click_outcome.avsc", "transaction_event_v0.avsc",
        "transaction_event_v2.avsc"};

    codec_close(d->plan);
    codec_close(d->ref);
    buf_free(&d->a);
    buf_free(&d->b);
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", d->dir, files[i]);
        unlink(path);
    }
    rmdir(d->dir);
}

/* One framed message through both decoders. 0: they agree. *rc_out: the
 * reference's result. */
static int plan_diff_decode(struct plan_diff *d, const uint8_t *data, size_t size, int *rc_out)
{
    struct txn_event x, y;
    struct err ex = {0}, ey = {0};
    int rx = codec_decode_txn(d->plan, data, size, &x, &ex);
    int ry = codec_decode_txn(d->ref, data, size, &y, &ey);

    if (rc_out)
        *rc_out = ry;
    if (rx != ry)
        return snprintf(d->why, sizeof(d->why), "decode: plan %d (%s), avro-c %d (%s)", rx, ex.msg,
                        ry, ey.msg),
               -1;
    if (memcmp(&x, &y, sizeof(x)))
        return snprintf(d->why, sizeof(d->why), "decode: events differ (rc %d)", rx), -1;
    d->decoded += rx == ERR_OK;
    return 0;
}

/* A prediction made of the input's bytes (cycled): strings mostly
 * terminated at a position the bytes pick, doubles any bit pattern. */
static void plan_diff_prediction(const uint8_t *data, size_t size, struct txn_prediction *p)
{
    unsigned char *q = (unsigned char *)p;
    char *strs[] = {p->event_id,         p->user_id,          p->model_name,
                    p->model_version,    p->feature_version,  p->decision,
                    p->reasons[0],       p->reasons[1],       p->reasons[2],
                    p->reasons[3],       p->feature_hash,     p->src_topic,
                    p->experiment_id,    p->variant,          p->reason_features[0],
                    p->reason_features[1], p->reason_features[2], p->reason_features[3],
                    p->card_reasons[0],  p->card_reasons[1],  p->card_reasons[2],
                    p->card_reasons[3]};
    size_t caps[] = {sizeof(p->event_id),      sizeof(p->user_id),
                     sizeof(p->model_name),    sizeof(p->model_version),
                     sizeof(p->feature_version), sizeof(p->decision),
                     sizeof(p->reasons[0]),    sizeof(p->reasons[0]),
                     sizeof(p->reasons[0]),    sizeof(p->reasons[0]),
                     sizeof(p->feature_hash),  sizeof(p->src_topic),
                     sizeof(p->experiment_id), sizeof(p->variant),
                     sizeof(p->reason_features[0]), sizeof(p->reason_features[0]),
                     sizeof(p->reason_features[0]), sizeof(p->reason_features[0]),
                     sizeof(p->card_reasons[0]), sizeof(p->card_reasons[0]),
                     sizeof(p->card_reasons[0]), sizeof(p->card_reasons[0])};

    memset(p, 0, sizeof(*p));
    for (size_t i = 0; i < sizeof(*p) && size; i++)
        q[i] = data[i % size];
    for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
        unsigned k = size ? data[(i * 7 + 3) % size] : 0;
        if (k != 0xff) /* 0xff: left unterminated, both must refuse */
            strs[i][k % caps[i]] = '\0';
    }
    p->degraded = size ? data[0] & 1 : 0;
    p->redelivered = size ? (data[0] >> 1) & 1 : 0;
    p->n_reasons = size ? (int)(data[size - 1] % 7) - 1 : 0; /* -1 .. 5: out of range too */
    p->n_card_reasons = size ? (int)(data[size / 2] % 7) - 1 : 0;
}

static int plan_diff_encode(struct plan_diff *d, const uint8_t *data, size_t size)
{
    struct txn_prediction p;
    struct err ex = {0}, ey = {0};
    int rx, ry;

    plan_diff_prediction(data, size, &p);
    rx = codec_encode_prediction(d->plan, &p, &d->a, &ex);
    ry = codec_encode_prediction(d->ref, &p, &d->b, &ey);
    if (rx != ry)
        return snprintf(d->why, sizeof(d->why), "encode: plan %d (%s), avro-c %d (%s)", rx, ex.msg,
                        ry, ey.msg),
               -1;
    if (!rx && (d->a.len != d->b.len || memcmp(d->a.data, d->b.data, d->a.len)))
        return snprintf(d->why, sizeof(d->why), "encode: %zu vs %zu bytes differ", d->a.len,
                        d->b.len),
               -1;
    d->encoded += rx == ERR_OK;
    return 0;
}

#endif
