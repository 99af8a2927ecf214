/* streamml-images: grading of image references, with class-activation maps.
 *
 *   images --poll--> decode (Avro) --bad--> images.dlq
 *      |                |
 *      |      load (root / allow-listed http) + decode (JPEG, PNG)
 *      |                |        \--ungradable (too_small, corrupt, ...)--+
 *      |      preprocess (antialiased resize, normalise)                  |
 *      |                |                                                 |
 *      |      forward pass (ONNX), up to images.batch images at once      |
 *      |                |                                                 |
 *      |      softmax, grade, expected grade, referable, CAM (+ PNG)      |
 *      |                |                                                 v
 *      +--- offset stored <-- delivery report <-- predictions.images <----+
 *
 * Every decodable event gets exactly one prediction: status ok, or
 * ungradable with the reason (counted as an error), so a bad image never
 * stalls its partition. Undecodable messages go to the dead-letter topic.
 * There is no per-entity state: an offset is stored once the message's
 * prediction (or dead letter) is delivered. metrics.port serves /metrics,
 * /healthz and /readyz; with monitor.baseline set, the grade distribution,
 * P(referable), latency and the error rate (dead letters + ungradable) are
 * watched and alerts go to monitor.topic (common/predmon.h).
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cam.h"
#include "cli.h"
#include "codec.h"
#include "image.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "monitor.h"
#include "onnx.h"
#include "pipeline.h"
#include "predmon.h"

#define WORKER "images"
#define MODEL_ERROR IMG_NREASONS /* counter slot past the image reasons */

static volatile sig_atomic_t g_run = 1;

static void on_signal(int sig)
{
    (void)sig;
    g_run = 0;
}

struct counters {
    uint64_t messages, ok, ungradable, dead, referable, batches, rows, cams_written, cam_errors;
    uint64_t reasons[IMG_NREASONS + 1];
};

struct model {
    struct onnx_model *m;
    struct img_norm norm;
    size_t n_out;                  /* 1 (logits) or 2 (+ feature map) */
    char kept[256];                /* one-output model: the kept feature-map value, or "" */
    float *cam_w;                  /* IMGEV_GRADES x channels, NULL: no CAM */
    int channels, fh, fw;          /* feature map geometry */
    double threshold;
    char name[64], version[32];
};

struct worker {
    struct cfg *cf;
    struct kq *q;
    struct codec *cd;
    struct img_loader *ld;
    struct model md;
    const char *cam_dir, *out_topic, *dlq_topic;
    size_t cap;                    /* images per forward pass */
    struct kq_msg **msgs;
    struct image_prediction *preds;
    int *row;                      /* message -> row of the batch tensor, -1 none */
    unsigned char *dead;
    int64_t *t_in;
    struct img im;
    float *input;                  /* cap x 3 x H x W */
    float *scratch;                /* preprocessing; grows with the largest image */
    size_t scratch_n;
    float *cam_scratch;
    uint8_t *overlay;
    struct buf out, dlq;
    struct counters n;
    struct metrics *mx; /* NULL: metrics.port 0 */
    struct mon *mon;    /* NULL: monitor.baseline empty (monitoring off) */
    struct mon_ident mid;
};

/* ---- set-up ---- */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: streamml-images [-c FILE] [-X key=value ...] [-b HOSTS]\n\n"
            "Consumes input.topic (default images) in the consumer group kafka.group.id\n"
            "(default streamml-images). Each image event's uri is loaded (a path under\n"
            "images.root, file://, or http(s) from images.allow_hosts), decoded and graded\n"
            "by images.model (ONNX); predictions go to output.topic (default\n"
            "predictions.images), with a class-activation map PNG under images.cam_dir.\n"
            "Images that cannot be graded get status ungradable and the reason;\n"
            "undecodable messages go to dlq.topic (default images.dlq).\n"
            "SIGTERM/SIGINT: finish in-flight work, commit, leave the group, exit 0.\n"
            "Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.\n\n");
    cfg_help(out);
}

/* The shared keys' defaults are the transactions worker's. */
static int images_defaults(struct cfg *cf, struct err *e)
{
    static const char *const kv[][2] = {{"input.topic", "images"},
                                        {"output.topic", "predictions.images"},
                                        {"dlq.topic", "images.dlq"}};

    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
        if (strcmp(cfg_origin(cf, kv[i][0]), "default") == 0 &&
            cfg_set(cf, kv[i][0], kv[i][1], "default", e))
            return e->code;
    return ERR_OK;
}

static int parse_threshold(const char *s, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (end == s || *end || errno || !(v >= 0.0 && v <= 1.0))
        return -1;
    *out = v;
    return 0;
}

static int model_geometry(struct model *md, const char *path, struct err *e)
{
    int ndim;
    int64_t d[8];
    const char *size = onnx_metadata(md->m, "input_size");

    if (onnx_num_inputs(md->m) != 1 || onnx_input_dtype(md->m, 0) != ONNX_F32 ||
        onnx_input_shape(md->m, 0, &ndim, d) || ndim != 4 || d[1] != 3)
        return err_set(e, ERR_CONFIG, "%s: expected one float input [N, 3, H, W]", path);
    img_norm_default(&md->norm, d[2] > 0 ? (int)d[2] : 224);
    if (d[3] > 0)
        md->norm.width = (int)d[3];
    if (img_norm_parse(&md->norm, size, onnx_metadata(md->m, "mean"),
                       onnx_metadata(md->m, "std"), e))
        return err_wrap(e, "%s: metadata", path);
    if ((d[2] > 0 && d[2] != md->norm.height) || (d[3] > 0 && d[3] != md->norm.width))
        return err_set(e, ERR_CONFIG, "%s: metadata input_size %s disagrees with the input "
                       "shape", path, size);
    md->n_out = onnx_num_outputs(md->m) >= 2 ? 2 : 1;
    return ERR_OK;
}

/* The last feature map: the second output, or for a one-output model (a
 * plain torchvision export) the intermediate value named by
 * images.cam_features or the metadata's cam_features, kept by the runtime. */
static const struct onnx_tensor *features_of(const struct model *md,
                                             const struct onnx_tensor *out)
{
    if (md->n_out == 2)
        return &out[1];
    return md->kept[0] ? onnx_value(md->m, md->kept) : NULL;
}

static int keep_features(struct model *md, const struct cfg *cf, const char *path,
                         struct err *e)
{
    const char *name = cfg_str(cf, "images.cam_features");
    const char *keep[1];

    if (!*name)
        name = onnx_metadata(md->m, "cam_features");
    if (md->n_out == 2 || !name || !*name)
        return ERR_OK;
    if (strlen(name) >= sizeof(md->kept))
        return err_set(e, ERR_CONFIG, "%s: cam_features name too long", path);
    snprintf(md->kept, sizeof(md->kept), "%s", name); /* the handle owning name goes */
    keep[0] = md->kept;
    onnx_close(md->m);
    md->m = NULL;
    if (onnx_open_keep(&md->m, path, keep, 1, e)) {
        char msg[sizeof(e->msg)];
        memcpy(msg, e->msg, sizeof(msg));
        return err_set(e, ERR_CONFIG, "%s: cam_features %s: %.150s", path, md->kept, msg);
    }
    return ERR_OK;
}

/* cam_weight names the final Linear weight: IMGEV_GRADES x C (torch
 * layout, Gemm transB=1) or C x IMGEV_GRADES ("cam_weight_layout": in_out). */
static int load_cam_weights(struct model *md, const char *path, struct err *e)
{
    const char *name = onnx_metadata(md->m, "cam_weight");
    const char *layout = onnx_metadata(md->m, "cam_weight_layout");
    const struct onnx_tensor *t = name ? onnx_initializer(md->m, name) : NULL;
    int in_out = layout && strcmp(layout, "in_out") == 0, c = md->channels;
    const float *src;

    if ((md->n_out < 2 && !md->kept[0]) || !name) {
        log_warn("%s: no feature-map output or no cam_weight metadata: no CAMs", path);
        return ERR_OK;
    }
    if (!t || t->dtype != ONNX_F32 || t->ndim != 2 ||
        t->dims[in_out ? 1 : 0] != IMGEV_GRADES || t->dims[in_out ? 0 : 1] != c)
        return err_set(e, ERR_CONFIG, "%s: cam_weight %s must be a float %dx%d initializer "
                       "matching the %d-channel feature map", path, name, IMGEV_GRADES, c, c);
    md->cam_w = malloc(sizeof(float) * IMGEV_GRADES * (size_t)c);
    if (!md->cam_w)
        return err_set(e, ERR_NOMEM, "out of memory");
    src = t->data;
    for (int k = 0; k < IMGEV_GRADES; k++)
        for (int j = 0; j < c; j++)
            md->cam_w[k * c + j] = in_out ? src[j * IMGEV_GRADES + k] : src[k * c + j];
    return ERR_OK;
}

/* One forward pass on zeros: output shapes are checked before any input. */
static int probe_outputs(struct model *md, const char *path, struct err *e)
{
    size_t n = (size_t)3 * md->norm.width * md->norm.height;
    float *zero = calloc(n, sizeof(float));
    struct onnx_tensor in = {ONNX_F32, 4, {1, 3, md->norm.height, md->norm.width}, zero};
    struct onnx_tensor out[2];
    int rc;

    if (!zero)
        return err_set(e, ERR_NOMEM, "out of memory");
    rc = onnx_run(md->m, &in, 1, out, md->n_out, e);
    free(zero);
    if (rc)
        return err_wrap(e, "%s: trial run", path);
    if (out[0].dtype != ONNX_F32 || out[0].ndim != 2 || out[0].dims[1] != IMGEV_GRADES)
        return err_set(e, ERR_CONFIG, "%s: output %s must be float [N, %d] logits", path,
                       onnx_output_name(md->m, 0), IMGEV_GRADES);
    if (md->n_out == 2 || md->kept[0]) {
        const struct onnx_tensor *f = features_of(md, out);
        if (!f || f->dtype != ONNX_F32 || f->ndim != 4 || f->dims[0] != 1 ||
            f->dims[2] * f->dims[3] > IMGEV_CAM_MAX)
            return err_set(e, ERR_CONFIG, "%s: %s must be a float [N, C, h, w] feature map "
                           "with h x w <= %d", path,
                           md->kept[0] ? md->kept : onnx_output_name(md->m, 1), IMGEV_CAM_MAX);
        md->channels = (int)f->dims[1];
        md->fh = (int)f->dims[2];
        md->fw = (int)f->dims[3];
    }
    return ERR_OK;
}

static int open_model(struct worker *w, struct err *e)
{
    struct model *md = &w->md;
    const char *path = cfg_str(w->cf, "images.model");
    const char *name = NULL, *version = NULL, *thr;

    if (onnx_open(&md->m, path, e)) {
        char msg[sizeof(e->msg)];
        if (e->code == ERR_NOMEM)
            return e->code;
        memcpy(msg, e->msg, sizeof(msg)); /* a bad model file is a configuration error */
        return err_set(e, ERR_CONFIG, "%s", msg);
    }
    if (model_geometry(md, path, e) || keep_features(md, w->cf, path, e) ||
        probe_outputs(md, path, e) || load_cam_weights(md, path, e))
        return e->code;
    md->threshold = cfg_double(w->cf, "images.referable_threshold");
    thr = onnx_metadata(md->m, "referable_threshold");
    if (md->threshold < 0 && thr && parse_threshold(thr, &md->threshold))
        return err_set(e, ERR_CONFIG, "%s: metadata referable_threshold \"%s\" is not in "
                       "[0, 1]", path, thr);
    if (md->threshold < 0)
        md->threshold = 0.5;
    name = onnx_metadata(md->m, "model_name");
    version = onnx_metadata(md->m, "model_version");
    snprintf(md->name, sizeof(md->name), "%s", name ? name : "onnx");
    snprintf(md->version, sizeof(md->version), "%s", version ? version : "unknown");
    log_info("model %s (%s %s): input %dx%d, %s, referable above P(grade >= 2) = %.4f", path,
             md->name, md->version, md->norm.width, md->norm.height,
             md->cam_w ? "CAM from the feature map" : "no CAM", md->threshold);
    return ERR_OK;
}

static int open_loader(struct worker *w, struct err *e)
{
    const struct cfg *cf = w->cf;
    struct img_opts o = {.root = cfg_str(cf, "images.root"),
                         .allow_hosts = cfg_str(cf, "images.allow_hosts"),
                         .timeout_ms = cfg_int(cf, "images.http_timeout_ms"),
                         .max_bytes = (size_t)cfg_int(cf, "images.max_bytes"),
                         .max_pixels = (uint64_t)cfg_int(cf, "images.max_pixels"),
                         .min_side = (int)cfg_int(cf, "images.min_side"),
                         .max_scans = (int)cfg_int(cf, "images.max_scans"),
                         .jpeg_max_memory = (long)cfg_int(cf, "images.jpeg_max_memory")};

    return img_loader_open(&w->ld, &o, e);
}

static int alloc_batch(struct worker *w, struct err *e)
{
    const struct img_norm *nm = &w->md.norm;
    size_t c = w->cap, plane = (size_t)nm->width * nm->height;

    w->msgs = calloc(c, sizeof(*w->msgs));
    w->preds = calloc(c, sizeof(*w->preds));
    w->row = calloc(c, sizeof(int));
    w->dead = calloc(c, 1);
    w->t_in = calloc(c, sizeof(int64_t));
    w->input = calloc(c * 3 * plane, sizeof(float));
    w->cam_scratch = calloc(cam_overlay_scratch(nm, w->md.fh ? w->md.fh : 1,
                                                w->md.fw ? w->md.fw : 1), sizeof(float));
    w->overlay = malloc(3 * plane);
    img_init(&w->im);
    buf_init(&w->out, 0);
    buf_init(&w->dlq, 2 * CODEC_MAX_MESSAGE); /* the original message plus metadata */
    if (!w->msgs || !w->preds || !w->row || !w->dead || !w->t_in || !w->input ||
        !w->cam_scratch || !w->overlay)
        return err_set(e, ERR_NOMEM, "out of memory for a batch of %zu", c);
    return ERR_OK;
}

static const char *group_id(const struct cfg *cf)
{
    return cli_group_id(cf, "streamml-images");
}

static int open_kafka(struct worker *w, struct err *e)
{
    const char *topic = cfg_str(w->cf, "input.topic");
    size_t np;
    struct kq_opts ko = {.group_id = group_id(w->cf), .topics = &topic, .n_topics = 1,
                         .client_id = "streamml-images"};

    ko.props = cfg_kafka(w->cf, &np);
    ko.commit_interval_ms = (int)cfg_int(w->cf, "worker.commit_interval_ms");
    ko.n_props = np;
    ko.stats_cb = w->mx ? metrics_kafka_stats : NULL; /* consumer lag */
    ko.stats_opaque = w->mx;
    w->q = kq_open(&ko, e);
    if (!w->q)
        return e->code;
    log_info("consuming %s as group %s -> %s (dead letters: %s), up to %zu images per pass",
             topic, ko.group_id, w->out_topic, w->dlq_topic, w->cap);
    return ERR_OK;
}

/* /metrics, /healthz, /readyz on metrics.port; the monitor's values
 * (common/predmon.h: grade, expected grade, P(referable)) against
 * monitor.baseline, alerts to monitor.topic. */
static int open_observability(struct worker *w, struct err *e)
{
    struct metrics_opts mo = {(int)cfg_int(w->cf, "metrics.port"), WORKER, w->md.name,
                              w->md.version, 0, cfg_str(w->cf, "images.model")};

    if (!(w->mx = metrics_open(&mo, e)) && e->code)
        return e->code;
    w->mid = (struct mon_ident){WORKER, w->md.name, w->md.version, cfg_str(w->cf, "monitor.topic")};
    w->mon = mon_open_cfg(w->cf, pmon_names(PMON_IMAGES, &(size_t){0}), PMON_IMAGE_DIM, e);
    return !w->mon && e->code ? e->code : ERR_OK;
}

static int worker_open(struct worker *w, struct err *e)
{
    w->cap = (size_t)cfg_int(w->cf, "images.batch");
    w->cam_dir = cfg_str(w->cf, "images.cam_dir");
    w->out_topic = cfg_str(w->cf, "output.topic");
    w->dlq_topic = cfg_str(w->cf, "dlq.topic");
    w->cd = codec_open(cfg_str(w->cf, "schemas.dir"), e);
    if (!w->cd || open_model(w, e) || open_loader(w, e) || alloc_batch(w, e) ||
        open_observability(w, e) || open_kafka(w, e))
        return e->code;
    return ERR_OK;
}

static void worker_close(struct worker *w)
{
    void *arrays[] = {w->msgs, w->preds, w->row, w->dead, w->t_in, w->input, w->scratch,
                      w->cam_scratch, w->overlay, w->md.cam_w};

    for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++)
        free(arrays[i]);
    img_free(&w->im);
    buf_free(&w->out);
    buf_free(&w->dlq);
    img_loader_close(w->ld);
    mon_close(w->mon);
    metrics_close(w->mx);
    onnx_close(w->md.m);
    codec_close(w->cd);
}

/* ---- one batch: load, preprocess ---- */

static void ungradable(struct worker *w, size_t i, int reason, const char *detail)
{
    struct image_prediction *p = &w->preds[i];

    p->ok = false;
    snprintf(p->reason, sizeof(p->reason), "%s",
             reason == MODEL_ERROR ? "model_error" : img_reason_name((enum img_reason)reason));
    snprintf(p->detail, sizeof(p->detail), "%s", detail);
    p->grade = -1;
    p->expected_grade = -1;
    p->referable_probability = -1;
    w->row[i] = -1;
}

static void dead_letter(struct worker *w, size_t i, const struct err *why)
{
    struct err e = {0};

    w->dead[i] = 1;
    w->n.dead++;
    metrics_add(w->mx, METRICS_DEAD_LETTERS, 1);
    if (w->mon)
        mon_observe_dead(w->mon, pipe_wall_ms());
    if (pipe_dead_letter(w->q, w->cd, &w->dlq, w->dlq_topic, WORKER, w->msgs[i], why, &e))
        log_error("dead letter not sent (offset will not be committed): %s", e.msg);
}

static int ensure_scratch(struct worker *w, size_t n)
{
    float *p;

    if (n <= w->scratch_n)
        return ERR_OK;
    p = realloc(w->scratch, n * sizeof(float));
    if (!p)
        return ERR_NOMEM;
    w->scratch = p;
    w->scratch_n = n;
    return ERR_OK;
}

static void init_prediction(struct worker *w, size_t i, const struct image_event *ev)
{
    struct image_prediction *p = &w->preds[i];
    const struct kq_msg *m = w->msgs[i];

    memset(p, 0, sizeof(*p));
    memcpy(p->image_id, ev->image_id, sizeof(p->image_id));
    memcpy(p->patient_id, ev->patient_id, sizeof(p->patient_id));
    p->event_time_ms = ev->event_time_ms;
    p->ok = true;
    p->referable_threshold = w->md.threshold;
    snprintf(p->model_name, sizeof(p->model_name), "%s", w->md.name);
    snprintf(p->model_version, sizeof(p->model_version), "%s", w->md.version);
    snprintf(p->src_topic, sizeof(p->src_topic), "%s", m->topic);
    p->src_partition = m->partition;
    p->src_offset = m->offset;
}

/* Decoded events get a prediction slot; good images a row of the tensor. */
static void prepare(struct worker *w, size_t i, int *rows)
{
    const struct kq_msg *m = w->msgs[i];
    const struct img_norm *nm = &w->md.norm;
    struct image_event ev;
    enum img_reason why;
    struct err e = {0};
    float *x = w->input + (size_t)*rows * 3 * nm->width * nm->height;

    w->t_in[i] = pipe_now_us();
    w->dead[i] = 0;
    w->row[i] = -1;
    if (codec_decode_image_event(w->cd, m->payload, m->len, &ev, &e)) {
        dead_letter(w, i, &e);
        return;
    }
    init_prediction(w, i, &ev);
    if (img_load(w->ld, ev.uri, &w->im, &why, &e)) {
        ungradable(w, i, why, e.msg);
        return;
    }
    if (ensure_scratch(w, img_preprocess_scratch(&w->im, nm))) {
        ungradable(w, i, IMG_TOO_LARGE, "out of memory for preprocessing");
        return;
    }
    if (img_preprocess(&w->im, nm, x, w->scratch, &e)) {
        ungradable(w, i, IMG_CORRUPT, e.msg);
        return;
    }
    w->row[i] = (*rows)++;
}

/* ---- one batch: forward pass, scores, CAM ---- */

/* Softmax in double, max-shifted; non-finite logits are refused. */
static int score(struct image_prediction *p, const float *logits, double threshold)
{
    double top = -INFINITY, sum = 0.0, pr[IMGEV_GRADES];

    for (int k = 0; k < IMGEV_GRADES; k++) {
        if (!isfinite(logits[k]))
            return -1;
        top = logits[k] > top ? logits[k] : top;
    }
    for (int k = 0; k < IMGEV_GRADES; k++)
        sum += pr[k] = exp((double)logits[k] - top);
    p->n_probabilities = IMGEV_GRADES;
    p->grade = 0;
    p->expected_grade = 0.0;
    p->referable_probability = 0.0;
    for (int k = 0; k < IMGEV_GRADES; k++) {
        p->probabilities[k] = pr[k] / sum;
        p->expected_grade += k * p->probabilities[k];
        if (k >= 2)
            p->referable_probability += p->probabilities[k];
        if (pr[k] > pr[p->grade])
            p->grade = k;
    }
    p->referable = p->referable_probability > threshold;
    return 0;
}

/* File name from the image id: [A-Za-z0-9._-] kept, the rest '_', plus
 * partition and offset (unique, and stable across a redelivery). */
static void cam_file(const struct worker *w, const struct image_prediction *p, char *out,
                     size_t cap)
{
    char id[IMGEV_ID_MAX];
    size_t j = 0;

    for (const char *s = p->image_id; *s && j + 1 < sizeof(id); s++, j++) {
        int keep = isalnum((unsigned char)*s) || *s == '-' || *s == '_' || (*s == '.' && j > 0);
        id[j] = keep ? *s : '_'; /* never a leading '.': no "..", no hidden file */
    }
    id[j] = '\0';
    snprintf(out, cap, "%s/%s-%d-%lld.png", w->cam_dir, id, (int)p->src_partition,
             (long long)p->src_offset);
}

static void add_cam(struct worker *w, struct image_prediction *p, const float *features,
                    const float *x)
{
    const struct model *md = &w->md;
    struct err e = {0};
    char path[sizeof(p->cam_path)];

    if (!md->cam_w)
        return;
    if (cam_grid(md->cam_w, IMGEV_GRADES, md->channels, features, md->fh, md->fw, p->grade,
                 p->cam_grid, &e)) {
        log_warn("image %s: no CAM: %s", p->image_id, e.msg);
        return;
    }
    p->cam_height = md->fh;
    p->cam_width = md->fw;
    if (!*w->cam_dir)
        return;
    cam_overlay(x, &md->norm, p->cam_grid, md->fh, md->fw, 0.5f, w->overlay, w->cam_scratch);
    cam_file(w, p, path, sizeof(path));
    if (img_write_png(path, w->overlay, md->norm.width, md->norm.height, &e)) {
        w->n.cam_errors++;
        log_warn("image %s: CAM overlay not written: %s", p->image_id, e.msg);
        return;
    }
    w->n.cams_written++;
    snprintf(p->cam_path, sizeof(p->cam_path), "%s", path);
}

static void infer(struct worker *w, size_t n, int rows)
{
    const struct model *md = &w->md;
    size_t plane3 = (size_t)3 * md->norm.width * md->norm.height;
    size_t fcells = (size_t)md->channels * md->fh * md->fw;
    struct onnx_tensor in = {ONNX_F32, 4, {rows, 3, md->norm.height, md->norm.width}, w->input};
    struct onnx_tensor out[2];
    const struct onnx_tensor *feat = NULL;
    struct err e = {0};

    w->n.batches++;
    w->n.rows += (uint64_t)rows;
    if (onnx_run(md->m, &in, 1, out, md->n_out, &e) == ERR_OK && out[0].dims[0] != rows)
        err_set(&e, ERR_INVALID, "model returned %lld rows for %d", (long long)out[0].dims[0],
                rows);
    if (e.code)
        log_error("forward pass of %d image(s) failed: %s", rows, e.msg);
    else if ((feat = features_of(md, out)) && feat->dims[0] != rows)
        feat = NULL; /* checked at start-up; never index past the map */
    for (size_t i = 0; i < n; i++) {
        int r = w->row[i];
        if (r < 0)
            continue;
        if (e.code) {
            ungradable(w, i, MODEL_ERROR, e.msg);
        } else if (score(&w->preds[i], (const float *)out[0].data + r * IMGEV_GRADES,
                         md->threshold)) {
            ungradable(w, i, MODEL_ERROR, "non-finite logits");
        } else if (feat) {
            add_cam(w, &w->preds[i], (const float *)feat->data + (size_t)r * fcells,
                    w->input + (size_t)r * plane3);
        }
    }
}

static void count(struct worker *w, const struct image_prediction *p)
{
    int r;

    if (p->ok) {
        w->n.ok++;
        w->n.referable += p->referable;
        return;
    }
    w->n.ungradable++;
    for (r = 0; r < IMG_NREASONS; r++)
        if (strcmp(p->reason, img_reason_name((enum img_reason)r)) == 0)
            break;
    w->n.reasons[r]++; /* r == IMG_NREASONS: model_error */
}

/* Metrics and the monitor's view of one prediction; an ungradable image
 * counts as an error (mon_observe's degraded flag). */
static void observe(struct worker *w, const struct image_prediction *p)
{
    float x[PMON_IMAGE_DIM];
    double score;

    metrics_add(w->mx, METRICS_PREDICTIONS, 1);
    metrics_add(w->mx, METRICS_UNGRADABLE, !p->ok);
    metrics_observe_latency(w->mx, p->latency_us);
    if (!w->mon)
        return;
    pmon_image_vector(p, x, &score);
    mon_observe(w->mon, x, score, p->latency_us, !p->ok, pipe_wall_ms());
}

static void emit(struct worker *w, size_t i)
{
    const struct kq_msg *m = w->msgs[i];
    struct image_prediction *p = &w->preds[i];
    struct err e = {0};

    p->latency_us = pipe_now_us() - w->t_in[i];
    if (codec_encode_image_prediction(w->cd, p, &w->out, &e) ||
        kq_produce(w->q, w->out_topic, p->patient_id, strlen(p->patient_id), w->out.data,
                   w->out.len, &m->pos, &e)) {
        log_error("prediction for %s not sent (offset will not be committed): %s", p->image_id,
                  e.msg);
        return;
    }
    count(w, p);
    observe(w, p);
    kq_ack(w->q, &m->pos, KQ_ACK_STATE); /* no state to apply */
}

static void process_batch(struct worker *w, size_t n)
{
    int rows = 0;

    for (size_t i = 0; i < n; i++)
        prepare(w, i, &rows);
    if (rows)
        infer(w, n, rows);
    for (size_t i = 0; i < n; i++)
        if (!w->dead[i])
            emit(w, i);
}

/* ---- the loop ---- */

/* Waits for the first message only: the rest of a batch is what is already
 * waiting, so a lone image is graded at once. */
static size_t take_batch(struct worker *w, struct err *e)
{
    size_t n = 0;
    struct kq_msg *m;
    int timeout = (int)cfg_int(w->cf, "worker.poll_ms");

    while (n < w->cap) {
        if (kq_poll(w->q, n ? 0 : timeout, &m, e) || !m)
            break;
        w->msgs[n++] = m;
    }
    return n;
}

static void log_summary(struct worker *w, double secs)
{
    const struct counters *c = &w->n;

    log_info("summary: %llu messages in %.1f s: %llu graded (%llu referable), %llu ungradable "
             "(too_small %llu, corrupt %llu, truncated %llu, missing %llu, unsupported_type "
             "%llu, too_large %llu, forbidden %llu, fetch_failed %llu, model_error %llu), %llu "
             "dead-lettered; %llu forward passes (%.2f images each), %llu CAM overlays written, "
             "%llu failed",
             (unsigned long long)c->messages, secs, (unsigned long long)c->ok,
             (unsigned long long)c->referable, (unsigned long long)c->ungradable,
             (unsigned long long)c->reasons[IMG_TOO_SMALL],
             (unsigned long long)c->reasons[IMG_CORRUPT],
             (unsigned long long)c->reasons[IMG_TRUNCATED],
             (unsigned long long)c->reasons[IMG_MISSING],
             (unsigned long long)c->reasons[IMG_UNSUPPORTED_TYPE],
             (unsigned long long)c->reasons[IMG_TOO_LARGE],
             (unsigned long long)c->reasons[IMG_FORBIDDEN],
             (unsigned long long)c->reasons[IMG_FETCH_FAILED],
             (unsigned long long)c->reasons[MODEL_ERROR], (unsigned long long)c->dead,
             (unsigned long long)c->batches, c->batches ? (double)c->rows / c->batches : 0.0,
             (unsigned long long)c->cams_written, (unsigned long long)c->cam_errors);
}

static int run(struct worker *w)
{
    struct err e = {0};
    int64_t t0 = pipe_now_us(), last_input = t0;
    int64_t idle_us = cfg_int(w->cf, "worker.idle_exit_ms") * 1000;
    uint64_t max_msgs = (uint64_t)cfg_int(w->cf, "worker.max_messages");
    size_t max_inflight = (size_t)cfg_int(w->cf, "worker.max_inflight");

    while (g_run) {
        size_t n = 0;
        if (kq_inflight(w->q) < max_inflight)
            n = take_batch(w, &e);
        if (e.code == ERR_FATAL)
            break;
        if (n) {
            process_batch(w, n);
            for (size_t i = 0; i < n; i++)
                kq_msg_release(w->msgs[i]);
            w->n.messages += n;
            metrics_add(w->mx, METRICS_EVENTS, n);
            last_input = pipe_now_us();
        }
        if (w->mon)
            metrics_add(w->mx, METRICS_ALERTS,
                        mon_tick_publish(w->mon, w->q, w->cd, &w->mid, pipe_wall_ms()));
        metrics_worker_tick(w->mx, w->mon, kq_assigned(w->q), 1, 1); /* no Redis */
        if (kq_serve(w->q, n ? 0 : 10, &e) == ERR_FATAL)
            break;
        if ((max_msgs && w->n.messages >= max_msgs) ||
            (idle_us && pipe_now_us() - last_input > idle_us))
            break;
    }
    log_summary(w, (double)(pipe_now_us() - t0) / 1e6);
    if (e.code == ERR_FATAL) {
        log_error("stopping: %s", e.msg);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct cli cl = {0};
    struct worker w = {0};
    struct err e = {0};
    int rc = cli_parse(&cl, argc, argv, usage);

    if (rc >= 0)
        return rc;
    if (!(w.cf = cli_load(&cl, WORKER)))
        return 2;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (images_defaults(w.cf, &e) || worker_open(&w, &e)) {
        log_error("%s", e.msg);
        fprintf(stderr, "error: %s\n", e.msg);
        rc = e.code == ERR_CONFIG ? 2 : 1;
    } else {
        rc = run(&w);
        /* Drain: deliveries, then commit, leave the group. */
        if (kq_close(w.q, (int)cfg_int(w.cf, "worker.shutdown_timeout_ms"), &e)) {
            log_error("close: %s", e.msg);
            rc = rc ? rc : 1;
        }
        w.q = NULL;
    }
    kq_close(w.q, 0, NULL);
    worker_close(&w);
    cfg_free(w.cf);
    return rc;
}
