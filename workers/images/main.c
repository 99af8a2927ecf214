/* streamml-images: grading of image references, with class-activation maps.
 *
 *   images --> decode (Avro) --bad--> images.dlq
 *     --> load (root / allow-listed http) + decode (JPEG, PNG)
 *         \--> ungradable (too_small, corrupt, ...) with the reason
 *     --> preprocess (antialiased resize, normalise) into the batch tensor
 *     --> forward pass (ONNX), up to images.batch images at once, while the
 *         decode thread already loads the next take (a pipelined step)
 *     --> softmax, grade, expected grade, referable, CAM (+ PNG)
 *     --> predictions.images
 *
 * The step (model set-up, loading, grading, CAM) is common/streams/grader.h, which
 * `streamml replay --stream images` runs too. Every decodable event gets
 * exactly one prediction: status ok, or ungradable with the reason
 * (counted as an error), so a bad image never stalls its partition. There
 * is no per-entity state. With monitor.baseline set, the grade
 * distribution, P(referable), latency and the error rate (dead letters +
 * ungradable) are watched (common/monitor/predmon.h); with
 * images.quality_baseline, the quality values of every measured image (refused
 * ones too) drift-alert like features (PSI of q_sharpness, q_mean, ...).
 *
 * The program around it (Kafka, back-pressure, dead letters, metrics,
 * alerts, reload, drain) is the worker runtime (common/worker/worker.h).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grader.h"
#include "imgq.h"
#include "log.h"
#include "metrics.h"
#include "monitor.h"
#include "predmon.h"
#include "worker.h"

struct images {
    struct wk *w;
    struct grader *gr; /* model, loader, batch tensor */
    struct mon *mon;   /* NULL: monitoring off */
    struct mon *qmon;  /* the quality values' drift (images.quality_baseline); NULL: off */
    struct image_event *evs;
    struct image_prediction *preds;
    uint64_t ok, ungradable, referable, reasons[GRADER_NREASONS];
    struct grader_counts done; /* of the graders replaced by reloads */
};

/* The shared keys' defaults are the transactions worker's. */
static const char *const images_defaults[][2] = {
    {"input.topic", "images"},
    {"output.topic", "predictions.images"},
    {"dlq.topic", "images.dlq"},
};

/* The batch capacity is the runtime's (images.take messages), whatever
 * images.take says now; forward passes are of images.batch. Two takes are
 * in flight (the runtime's pipelined step): two sets of slots. */
static struct grader *open_grader(const struct cfg *cf, size_t cap, struct err *e)
{
    struct grader_opts o;

    grader_opts_from_cfg(cf, &o);
    o.batch = cap;
    o.sets = 2;
    return grader_open(&o, e);
}

static void images_close(void *self)
{
    struct images *s = self;

    if (!s)
        return;
    grader_close(s->gr);
    free(s->evs);
    free(s->preds);
    free(s);
}

static void *images_open(struct wk *w, struct err *e)
{
    struct images *s = calloc(1, sizeof(*s));
    const struct cfg *cf = wk_cfg(w);
    size_t c = 2 * wk_batch_cap(w); /* two takes in flight */

    if (!s)
        return NULL;
    s->w = w;
    s->evs = calloc(c, sizeof(*s->evs));
    s->preds = calloc(c, sizeof(*s->preds));
    if (!s->evs || !s->preds)
        err_set(e, ERR_NOMEM, "out of memory for a batch of %zu", c);
    else if ((s->gr = open_grader(cf, wk_batch_cap(w), e)))
        s->mon = mon_open_cfg(cf, pmon_names(PMON_IMAGES, &(size_t){0}), PMON_IMAGE_DIM, e);
    if (!s->gr || (!s->mon && e->code)) {
        images_close(s);
        return NULL;
    }
    if (s->mon && wk_monitor_add(w, s->mon, NULL) < 0)
        s->mon = NULL;
    if (*cfg_str(cf, "images.quality_baseline")) {
        s->qmon = mon_open_path(cf, cfg_str(cf, "images.quality_baseline"), imgq_value_names(),
                                IMGQ_NVALUES, e);
        if (!s->qmon) {
            err_wrap(e, "images.quality_baseline");
            images_close(s);
            return NULL;
        }
        if (wk_monitor_add(w, s->qmon, "images-quality") < 0)
            s->qmon = NULL;
    }
    return s;
}

static void images_model(void *self, struct wk_model_info *mi)
{
    const struct images *s = self;

    *mi = (struct wk_model_info){grader_model_name(s->gr), grader_model_version(s->gr),
                                 grader_member_path(s->gr, 0)};
}

static int images_decode(void *self, const struct wk_batch *b, size_t i, struct err *e)
{
    struct images *s = self;
    const struct kq_msg *m = b->msgs[i];

    return codec_decode_image_event(wk_codec(s->w), m->payload, m->len, &s->evs[b->base + i], e);
}

/* Decoded events get a prediction slot and good images a row of the batch
 * tensor, decoded from now on by the grader's thread (while the take
 * before runs its forward passes). */
static void images_prepare(void *self, struct wk_batch *b)
{
    struct images *s = self;
    int set = b->base != 0;

    grader_begin_set(s->gr, set);
    for (size_t i = 0, k = b->base; i < b->n; i++, k++) {
        const struct kq_msg *m = b->msgs[i];
        if (b->status[i] == WK_LIVE)
            grader_add(s->gr, k, &s->evs[k], m->topic, m->partition, m->offset, &s->preds[k]);
    }
    grader_start(s->gr, set);
}

/* The take's forward passes as its rows get ready. */
static void images_process(void *self, struct wk_batch *b)
{
    struct images *s = self;

    grader_run_set(s->gr, b->base != 0);
}

static void count(struct images *s, const struct image_prediction *p)
{
    if (p->ok) {
        s->ok++;
        s->referable += p->referable;
        return;
    }
    s->ungradable++;
    s->reasons[grader_reason_index(p)]++;
}

/* An ungradable image counts as an error (mon_observe's degraded flag). */
static int images_emit(void *self, const struct wk_batch *b, size_t i, struct wk_record *r,
                       struct err *e)
{
    struct images *s = self;
    struct image_prediction *p = &s->preds[b->base + i];
    float x[PMON_IMAGE_DIM], qx[IMGQ_NVALUES];
    double score, q[IMGQ_NVALUES];

    p->latency_us = r->latency_us;
    r->key = p->patient_id;
    r->key_len = strlen(p->patient_id);
    if (codec_encode_image_prediction(wk_codec(s->w), p, r->val, e))
        return e->code;
    count(s, p);
    metrics_add(wk_metrics(s->w), METRICS_UNGRADABLE, !p->ok);
    if (s->mon) {
        pmon_image_vector(p, x, &score);
        mon_observe(s->mon, x, score, p->latency_us, !p->ok, b->wall_ms);
    }
    if (s->qmon && grader_quality(s->gr, b->base + i, q)) { /* refused images too: that is drift */
        for (int k = 0; k < IMGQ_NVALUES; k++)
            qx[k] = (float)q[k];
        mon_observe(s->qmon, qx, NAN, p->latency_us, 0, b->wall_ms);
    }
    return ERR_OK;
}

/* A new model or model set (images.model / images.models, the CAM member,
 * the threshold, the loader's limits) opened and checked like at start-up,
 * every member's trial run on zeros included; the old one keeps serving
 * when anything is wrong (the error names the member). */
static int images_reload(void *self, const struct cfg *cf, struct err *e)
{
    struct images *s = self;
    struct grader *ng = open_grader(cf, wk_batch_cap(s->w), e);
    const struct grader_counts *c;

    if (!ng)
        return e->code;
    c = grader_counts(s->gr);
    s->done.batches += c->batches;
    s->done.rows += c->rows;
    s->done.cams_written += c->cams_written;
    s->done.cam_errors += c->cam_errors;
    grader_close(s->gr);
    s->gr = ng;
    return ERR_OK;
}

static size_t images_files(void *self, const char **paths, size_t cap)
{
    struct images *s = self;
    size_t n = grader_members(s->gr);

    for (size_t i = 0; i < n && i < cap; i++)
        paths[i] = grader_member_path(s->gr, i); /* every member of a set */
    return n < cap ? n : cap;
}

static void images_summary(void *self, double secs, uint64_t messages)
{
    const struct images *s = self;
    const struct grader_counts *g = grader_counts(s->gr);
    uint64_t batches = s->done.batches + g->batches, rows = s->done.rows + g->rows;
    const uint64_t *n = s->reasons;

    log_info("summary: %llu messages in %.1f s: %llu graded (%llu referable), %llu ungradable "
             "(too_small %llu, corrupt %llu, truncated %llu, missing %llu, unsupported_type "
             "%llu, too_large %llu, forbidden %llu, fetch_failed %llu, low_quality %llu, "
             "model_error %llu); "
             "%llu "
             "forward passes (%.2f images each), %llu CAM overlays written, %llu failed",
             (unsigned long long)messages, secs, (unsigned long long)s->ok,
             (unsigned long long)s->referable, (unsigned long long)s->ungradable,
             (unsigned long long)n[IMG_TOO_SMALL], (unsigned long long)n[IMG_CORRUPT],
             (unsigned long long)n[IMG_TRUNCATED], (unsigned long long)n[IMG_MISSING],
             (unsigned long long)n[IMG_UNSUPPORTED_TYPE], (unsigned long long)n[IMG_TOO_LARGE],
             (unsigned long long)n[IMG_FORBIDDEN], (unsigned long long)n[IMG_FETCH_FAILED],
             (unsigned long long)n[GRADER_LOW_QUALITY], (unsigned long long)n[GRADER_MODEL_ERROR],
             (unsigned long long)batches, batches ? (double)rows / (double)batches : 0.0,
             (unsigned long long)(s->done.cams_written + g->cams_written),
             (unsigned long long)(s->done.cam_errors + g->cam_errors));
}

static const struct wk_stream images_stream = {
    .name = "images",
    .usage = "usage: streamml-images [-c FILE] [-X key=value ...] [-b HOSTS]\n\n"
             "Consumes input.topic (default images) in the consumer group kafka.group.id\n"
             "(default streamml-images). Each image event's uri is loaded (a path under\n"
             "images.root, file://, or http(s) from images.allow_hosts), decoded and graded\n"
             "by images.model (ONNX), or by the model set images.models (a.onnx:w,b.onnx:w:\n"
             "probabilities averaged, with the members' agreement); predictions go to\n"
             "output.topic (default predictions.images); a referable image also gets the\n"
             "class-activation map of images.cam_model (Grad-CAM, or CAM for a one-Linear\n"
             "head) and, under images.cam_dir, an overlay PNG at the photograph's size\n"
             "with a colour legend and the grade.\n"
             "Images that cannot be graded get status ungradable and the reason;\n"
             "undecodable messages go to dlq.topic (default images.dlq).\n"
             "SIGTERM/SIGINT: finish in-flight work, commit, leave the group, exit 0.\n"
             "SIGHUP (or a changed model file under model.watch_ms): reload the model\n"
             "(set), each member checked with a trial run first; a refused one keeps the\n"
             "old model serving.\n"
             "Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.\n\n",
    .defaults = images_defaults,
    .n_defaults = sizeof(images_defaults) / sizeof(images_defaults[0]),
    .out_schema = CODEC_IMAGE_PREDICTION,
    .batch_key = "images.take",
    .open = images_open,
    .close = images_close,
    .model = images_model,
    .decode = images_decode,
    .process = images_process,
    .emit = images_emit,
    .reload = images_reload,
    .files = images_files,
    .summary = images_summary,
    .prepare = images_prepare,
};

int main(int argc, char **argv)
{
    return wk_main(argc, argv, &images_stream);
}
