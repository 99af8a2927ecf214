/* common/streams/grader.c: the images stream's step (see grader.h). */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cam.h"
#include "grader.h"
#include "imgq.h"
#include "log.h"
#include "onnx.h"
#include "overlay.h"

#define MODEL_ERROR "model_error"
#define LOW_QUALITY "low_quality:" /* + imgq_check_name */

struct grader {
    struct onnx_model *m;
    struct img_norm norm;
    size_t n_out;         /* 1 (logits) or 2 (+ feature map) */
    char kept[256];       /* one-output model: the kept feature-map value, or "" */
    float *cam_w;         /* IMGEV_GRADES x channels: plain CAM; NULL: none */
    int channels, fh, fw; /* feature map geometry */

    struct cam_layer head[CAM_MAX_LAYERS]; /* Grad-CAM's head (into m's constants) */
    size_t n_head;                         /* 0: no Grad-CAM */
    float *head_scratch;

    double threshold;
    char name[64], version[32];
    char cam_dir[512];
    struct img_loader *ld;
    struct imgq *q; /* NULL: no quality checks */
    struct imgq_limits qlim;
    size_t cap; /* images per forward pass */
    int *row;   /* slot -> row of the batch tensor, -1 none */
    int rows;
    struct img im;
    float *input;   /* cap x 3 x H x W */
    float *scratch; /* preprocessing; grows with the largest image */
    size_t scratch_n;
    struct img *photos; /* per row, the decoded image for its overlay; NULL: none */
    float *cam_scratch;
    uint8_t *overlay;
    size_t cam_scratch_n, overlay_n;
    struct grader_counts n;
};

void grader_opts_from_cfg(const struct cfg *cf, struct grader_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->model = cfg_str(cf, "images.model");
    o->cam_features = cfg_str(cf, "images.cam_features");
    o->threshold = cfg_double(cf, "images.referable_threshold");
    o->cam_dir = cfg_str(cf, "images.cam_dir");
    o->batch = (size_t)cfg_int(cf, "images.batch");
    o->load = (struct img_opts){.root = cfg_str(cf, "images.root"),
                                .allow_hosts = cfg_str(cf, "images.allow_hosts"),
                                .timeout_ms = cfg_int(cf, "images.http_timeout_ms"),
                                .max_bytes = (size_t)cfg_int(cf, "images.max_bytes"),
                                .max_pixels = (uint64_t)cfg_int(cf, "images.max_pixels"),
                                .min_side = (int)cfg_int(cf, "images.min_side"),
                                .max_scans = (int)cfg_int(cf, "images.max_scans"),
                                .jpeg_max_memory = (long)cfg_int(cf, "images.jpeg_max_memory")};
    o->quality = cfg_str(cf, "images.quality");
}

/* ---- the model ---- */

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

static int model_geometry(struct grader *g, const char *path, struct err *e)
{
    int ndim;
    int64_t d[8];
    const char *size = onnx_metadata(g->m, "input_size");

    if (onnx_num_inputs(g->m) != 1 || onnx_input_dtype(g->m, 0) != ONNX_F32 ||
        onnx_input_shape(g->m, 0, &ndim, d) || ndim != 4 || d[1] != 3)
        return err_set(e, ERR_CONFIG, "%s: expected one float input [N, 3, H, W]", path);
    img_norm_default(&g->norm, d[2] > 0 ? (int)d[2] : 224);
    if (d[3] > 0)
        g->norm.width = (int)d[3];
    if (img_norm_parse(&g->norm, size, onnx_metadata(g->m, "mean"), onnx_metadata(g->m, "std"), e))
        return err_wrap(e, "%s: metadata", path);
    if ((d[2] > 0 && d[2] != g->norm.height) || (d[3] > 0 && d[3] != g->norm.width))
        return err_set(e, ERR_CONFIG,
                       "%s: metadata input_size %s disagrees with the input "
                       "shape",
                       path, size);
    g->n_out = onnx_num_outputs(g->m) >= 2 ? 2 : 1;
    return ERR_OK;
}

/* The last feature map: the second output, or for a one-output model (a
 * plain torchvision export) the intermediate value named by
 * images.cam_features or the metadata's cam_features, kept by the runtime. */
static const struct onnx_tensor *features_of(const struct grader *g, const struct onnx_tensor *out)
{
    if (g->kept[0])
        return onnx_value(g->m, g->kept);
    return g->n_out == 2 ? &out[1] : NULL;
}

static int keep_features(struct grader *g, const char *name, const char *path, struct err *e)
{
    const char *keep[1];

    if (!name || !*name)
        name = onnx_metadata(g->m, "cam_features");
    if (g->n_out == 2 && name && *name)
        return ERR_OK;
    if ((!name || !*name) && !onnx_metadata(g->m, "cam_weight")) {
        /* Grad-CAM: the value the head pools, unless the second output is it */
        struct err ignored = {0};
        size_t n;
        int c;
        if (onnx_gradcam_head(g->m, &name, g->head, CAM_MAX_LAYERS, &n, &c, &ignored) ||
            (g->n_out == 2 && strcmp(onnx_output_name(g->m, 1), name) == 0))
            return ERR_OK;
    }
    if (!name || !*name)
        return ERR_OK;
    if (strlen(name) >= sizeof(g->kept))
        return err_set(e, ERR_CONFIG, "%s: cam_features name too long", path);
    snprintf(g->kept, sizeof(g->kept), "%s", name); /* the handle owning name goes */
    keep[0] = g->kept;
    onnx_close(g->m);
    g->m = NULL;
    if (onnx_open_keep(&g->m, path, keep, 1, e)) {
        char msg[sizeof(e->msg)];
        memcpy(msg, e->msg, sizeof(msg));
        return err_set(e, ERR_CONFIG, "%s: cam_features %s: %.150s", path, g->kept, msg);
    }
    return ERR_OK;
}

/* Without cam_weight: the head read from the graph (onnx_gradcam_head). One
 * Linear layer is plain CAM (the fast path), a deeper head Grad-CAM. A
 * graph without such a head is served without CAMs. */
static int load_head(struct grader *g, const char *path, struct err *e)
{
    const char *f;
    int c;
    struct cam_layer *l = g->head;

    if (onnx_gradcam_head(g->m, &f, g->head, CAM_MAX_LAYERS, &g->n_head, &c, e)) {
        log_warn("%s: no CAMs: %s", path, e->msg);
        g->n_head = 0;
        err_clear(e);
        return ERR_OK;
    }
    if (c != g->channels || l[g->n_head - 1].out != IMGEV_GRADES)
        return err_set(e, ERR_CONFIG,
                       "%s: the head takes %d channels to %d classes, the feature "
                       "map has %d channels and the logits %d",
                       path, c, l[g->n_head - 1].out, g->channels, IMGEV_GRADES);
    if (g->n_head == 1) { /* plain CAM: the weights as IMGEV_GRADES x C */
        g->cam_w = malloc(sizeof(float) * IMGEV_GRADES * (size_t)c);
        if (!g->cam_w)
            return err_set(e, ERR_NOMEM, "out of memory");
        for (int k = 0; k < IMGEV_GRADES; k++)
            for (int j = 0; j < c; j++)
                g->cam_w[k * c + j] = l->transposed ? l->w[j * IMGEV_GRADES + k] : l->w[k * c + j];
        g->n_head = 0;
        return ERR_OK;
    }
    g->head_scratch = malloc(cam_gradcam_scratch(l, g->n_head, c) * sizeof(float));
    return g->head_scratch ? ERR_OK : err_set(e, ERR_NOMEM, "out of memory");
}

/* cam_weight names the final Linear weight: IMGEV_GRADES x C (torch
 * layout, Gemm transB=1) or C x IMGEV_GRADES ("cam_weight_layout": in_out). */
static int load_cam_weights(struct grader *g, const char *path, struct err *e)
{
    const char *name = onnx_metadata(g->m, "cam_weight");
    const char *layout = onnx_metadata(g->m, "cam_weight_layout");
    const struct onnx_tensor *t = name ? onnx_initializer(g->m, name) : NULL;
    int in_out = layout && strcmp(layout, "in_out") == 0, c = g->channels;
    const float *src;

    if (!name && (g->n_out == 2 || g->kept[0]))
        return load_head(g, path, e);
    if ((g->n_out < 2 && !g->kept[0]) || !name) {
        log_warn("%s: no feature-map output or no cam_weight metadata: no CAMs", path);
        return ERR_OK;
    }
    if (!t || t->dtype != ONNX_F32 || t->ndim != 2 || t->dims[in_out ? 1 : 0] != IMGEV_GRADES ||
        t->dims[in_out ? 0 : 1] != c)
        return err_set(e, ERR_CONFIG,
                       "%s: cam_weight %s must be a float %dx%d initializer "
                       "matching the %d-channel feature map",
                       path, name, IMGEV_GRADES, c, c);
    g->cam_w = malloc(sizeof(float) * IMGEV_GRADES * (size_t)c);
    if (!g->cam_w)
        return err_set(e, ERR_NOMEM, "out of memory");
    src = t->data;
    for (int k = 0; k < IMGEV_GRADES; k++)
        for (int j = 0; j < c; j++)
            g->cam_w[k * c + j] = in_out ? src[j * IMGEV_GRADES + k] : src[k * c + j];
    return ERR_OK;
}

/* One forward pass on zeros: output shapes are checked before any input. */
static int probe_outputs(struct grader *g, const char *path, struct err *e)
{
    size_t n = (size_t)3 * g->norm.width * g->norm.height;
    float *zero = calloc(n, sizeof(float));
    struct onnx_tensor in = {ONNX_F32, 4, {1, 3, g->norm.height, g->norm.width}, zero};
    struct onnx_tensor out[2];
    int rc;

    if (!zero)
        return err_set(e, ERR_NOMEM, "out of memory");
    rc = onnx_run(g->m, &in, 1, out, g->n_out, e);
    free(zero);
    if (rc)
        return err_wrap(e, "%s: trial run", path);
    if (out[0].dtype != ONNX_F32 || out[0].ndim != 2 || out[0].dims[1] != IMGEV_GRADES)
        return err_set(e, ERR_CONFIG, "%s: output %s must be float [N, %d] logits", path,
                       onnx_output_name(g->m, 0), IMGEV_GRADES);
    if (g->n_out == 2 || g->kept[0]) {
        const struct onnx_tensor *f = features_of(g, out);
        if (!f || f->dtype != ONNX_F32 || f->ndim != 4 || f->dims[0] != 1 ||
            f->dims[2] * f->dims[3] > IMGEV_CAM_MAX)
            return err_set(e, ERR_CONFIG,
                           "%s: %s must be a float [N, C, h, w] feature map "
                           "with h x w <= %d",
                           path, g->kept[0] ? g->kept : onnx_output_name(g->m, 1), IMGEV_CAM_MAX);
        g->channels = (int)f->dims[1];
        g->fh = (int)f->dims[2];
        g->fw = (int)f->dims[3];
    }
    return ERR_OK;
}

static int open_model(struct grader *g, const struct grader_opts *o, struct err *e)
{
    const char *path = o->model, *name, *version, *thr;

    if (onnx_open(&g->m, path, e)) {
        char msg[sizeof(e->msg)];
        if (e->code == ERR_NOMEM)
            return e->code;
        memcpy(msg, e->msg, sizeof(msg)); /* a bad model file is a configuration error */
        return err_set(e, ERR_CONFIG, "%s", msg);
    }
    if (model_geometry(g, path, e) || keep_features(g, o->cam_features, path, e) ||
        probe_outputs(g, path, e) || load_cam_weights(g, path, e))
        return e->code;
    g->threshold = o->threshold;
    thr = onnx_metadata(g->m, "referable_threshold");
    if (g->threshold < 0 && thr && parse_threshold(thr, &g->threshold))
        return err_set(e, ERR_CONFIG,
                       "%s: metadata referable_threshold \"%s\" is not in "
                       "[0, 1]",
                       path, thr);
    if (g->threshold < 0)
        g->threshold = 0.5;
    name = onnx_metadata(g->m, "model_name");
    version = onnx_metadata(g->m, "model_version");
    snprintf(g->name, sizeof(g->name), "%s", name ? name : "onnx");
    snprintf(g->version, sizeof(g->version), "%s", version ? version : "unknown");
    log_info("model %s (%s %s): input %dx%d, %s, referable above P(grade >= 2) = %.4f", path,
             g->name, g->version, g->norm.width, g->norm.height,
             g->n_head  ? "Grad-CAM of referable grades"
             : g->cam_w ? "CAM of referable grades"
                        : "no CAM",
             g->threshold);
    return ERR_OK;
}

static int alloc_batch(struct grader *g, struct err *e)
{
    const struct img_norm *nm = &g->norm;
    size_t c = g->cap, plane = (size_t)nm->width * nm->height;

    g->row = calloc(c, sizeof(int));
    g->input = calloc(c * 3 * plane, sizeof(float));
    if (g->cam_dir[0] && grader_has_cam(g)) { /* overlays at the photographs' size */
        g->photos = calloc(c, sizeof(*g->photos));
        for (size_t i = 0; g->photos && i < c; i++)
            img_init(&g->photos[i]);
    }
    if (!g->row || !g->input || (g->cam_dir[0] && grader_has_cam(g) && !g->photos))
        return err_set(e, ERR_NOMEM, "out of memory for a batch of %zu", c);
    grader_begin(g);
    return ERR_OK;
}

struct grader *grader_open(const struct grader_opts *o, struct err *e)
{
    struct grader *g = calloc(1, sizeof(*g));

    if (!g) {
        err_set(e, ERR_NOMEM, "out of memory");
        return NULL;
    }
    img_init(&g->im);
    g->cap = o->batch ? o->batch : 1;
    if ((size_t)snprintf(g->cam_dir, sizeof(g->cam_dir), "%s", o->cam_dir ? o->cam_dir : "") >=
        sizeof(g->cam_dir)) {
        err_set(e, ERR_CONFIG, "images.cam_dir: longer than %zu bytes", sizeof(g->cam_dir) - 1);
        goto fail;
    }
    if (open_model(g, o, e) || img_loader_open(&g->ld, &o->load, e) || alloc_batch(g, e))
        goto fail;
    if (o->quality && *o->quality) {
        if (imgq_limits_load(&g->qlim, o->quality, e)) {
            err_wrap(e, "images.quality (empty: no quality checks)");
            goto fail;
        }
        if (imgq_open(&g->q, e))
            goto fail;
    }
    return g;
fail:
    grader_close(g);
    return NULL;
}

void grader_close(struct grader *g)
{
    if (!g)
        return;
    free(g->row);
    free(g->input);
    free(g->scratch);
    free(g->cam_scratch);
    free(g->overlay);
    free(g->cam_w);
    free(g->head_scratch);
    for (size_t i = 0; g->photos && i < g->cap; i++)
        img_free(&g->photos[i]);
    free(g->photos);
    img_free(&g->im);
    img_loader_close(g->ld);
    imgq_close(g->q);
    onnx_close(g->m);
    free(g);
}

const char *grader_model_name(const struct grader *g)
{
    return g->name;
}

const char *grader_model_version(const struct grader *g)
{
    return g->version;
}

double grader_threshold(const struct grader *g)
{
    return g->threshold;
}

size_t grader_batch(const struct grader *g)
{
    return g->cap;
}

int grader_has_cam(const struct grader *g)
{
    return g->cam_w != NULL || g->n_head > 0;
}

const struct img_norm *grader_norm(const struct grader *g)
{
    return &g->norm;
}

const struct grader_counts *grader_counts(const struct grader *g)
{
    return &g->n;
}

/* ---- per image ---- */

void grader_ungradable(struct image_prediction *p, const char *reason, const char *detail)
{
    p->ok = false;
    snprintf(p->reason, sizeof(p->reason), "%s", reason);
    snprintf(p->detail, sizeof(p->detail), "%s", detail);
    p->n_probabilities = 0;
    p->grade = -1;
    p->expected_grade = -1;
    p->referable = false;
    p->referable_probability = -1;
}

int grader_reason_index(const struct image_prediction *p)
{
    if (p->ok)
        return -1;
    for (int r = 0; r < IMG_NREASONS; r++)
        if (strcmp(p->reason, img_reason_name((enum img_reason)r)) == 0)
            return r;
    if (strncmp(p->reason, LOW_QUALITY, strlen(LOW_QUALITY)) == 0)
        return GRADER_LOW_QUALITY;
    return GRADER_MODEL_ERROR;
}

void grader_begin(struct grader *g)
{
    for (size_t i = 0; i < g->cap; i++)
        g->row[i] = -1;
    g->rows = 0;
}

static int ensure_scratch(struct grader *g, size_t n)
{
    float *p;

    if (n <= g->scratch_n)
        return ERR_OK;
    p = realloc(g->scratch, n * sizeof(float));
    if (!p)
        return ERR_NOMEM;
    g->scratch = p;
    g->scratch_n = n;
    return ERR_OK;
}

static void init_prediction(const struct grader *g, struct image_prediction *p,
                            const struct image_event *ev, const char *topic, int32_t partition,
                            int64_t offset)
{
    memset(p, 0, sizeof(*p));
    memcpy(p->image_id, ev->image_id, sizeof(p->image_id));
    memcpy(p->patient_id, ev->patient_id, sizeof(p->patient_id));
    p->event_time_ms = ev->event_time_ms;
    p->ok = true;
    p->referable_threshold = g->threshold;
    snprintf(p->model_name, sizeof(p->model_name), "%s", g->name);
    snprintf(p->model_version, sizeof(p->model_version), "%s", g->version);
    snprintf(p->src_topic, sizeof(p->src_topic), "%s", topic);
    p->src_partition = partition;
    p->src_offset = offset;
}

/* The quality checks on the decoded image, before preprocessing: a blurred
 * or badly exposed photograph is refused rather than given a grade that
 * would pass for a real one. 0 with p ungradable when it fails. */
static int quality_ok(struct grader *g, struct image_prediction *p)
{
    struct imgq_values v;
    enum imgq_check c;
    char reason[sizeof(p->reason)], detail[sizeof(p->detail)];
    struct err e = {0};

    if (imgq_measure(g->q, &g->im, &v, &e)) {
        grader_ungradable(p, img_reason_name(e.code == ERR_NOMEM ? IMG_TOO_LARGE : IMG_CORRUPT),
                          e.msg);
        return 0;
    }
    c = imgq_judge(&g->qlim, &v);
    if (c == IMGQ_OK)
        return 1;
    snprintf(reason, sizeof(reason), LOW_QUALITY "%s", imgq_check_name(c));
    imgq_detail(&g->qlim, &v, c, detail, sizeof(detail));
    grader_ungradable(p, reason, detail);
    return 0;
}

void grader_add(struct grader *g, size_t i, const struct image_event *ev, const char *topic,
                int32_t partition, int64_t offset, struct image_prediction *p)
{
    const struct img_norm *nm = &g->norm;
    float *x = g->input + (size_t)g->rows * 3 * nm->width * nm->height;
    enum img_reason why;
    struct err e = {0};

    init_prediction(g, p, ev, topic, partition, offset);
    g->row[i] = -1;
    if (img_load(g->ld, ev->uri, &g->im, &why, &e)) {
        grader_ungradable(p, img_reason_name(why), e.msg);
        return;
    }
    if (g->q && !quality_ok(g, p))
        return;
    if (ensure_scratch(g, img_preprocess_scratch(&g->im, nm))) {
        grader_ungradable(p, img_reason_name(IMG_TOO_LARGE), "out of memory for preprocessing");
        return;
    }
    if (img_preprocess(&g->im, nm, x, g->scratch, &e)) {
        grader_ungradable(p, img_reason_name(IMG_CORRUPT), e.msg);
        return;
    }
    if (g->photos) { /* kept for the overlay; the buffers trade places */
        struct img t = g->photos[g->rows];
        g->photos[g->rows] = g->im;
        g->im = t;
    }
    g->row[i] = g->rows++;
}

/* ---- per batch ---- */

int grader_score(struct image_prediction *p, const float *logits, double threshold)
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
static void cam_file(const struct grader *g, const struct image_prediction *p, char *out,
                     size_t cap)
{
    char id[IMGEV_ID_MAX];
    size_t j = 0;

    for (const char *s = p->image_id; *s && j + 1 < sizeof(id); s++, j++) {
        int keep = isalnum((unsigned char)*s) || *s == '-' || *s == '_' || (*s == '.' && j > 0);
        id[j] = keep ? *s : '_'; /* never a leading '.': no "..", no hidden file */
    }
    id[j] = '\0';
    snprintf(out, cap, "%s/%s-%d-%lld.png", g->cam_dir, id, (int)p->src_partition,
             (long long)p->src_offset);
}

/* The grade a referable prediction's map explains: its grade when that is
 * referable (>= 2), else the likeliest referable grade (the referral comes
 * from P(grade >= 2) while grade 1 has the top probability); -1 when the
 * prediction is not referable: no map. */
static int cam_class(const struct image_prediction *p)
{
    int k = 2;

    if (!p->referable || p->n_probabilities != IMGEV_GRADES)
        return -1;
    if (p->grade >= 2)
        return p->grade;
    for (int j = 3; j < IMGEV_GRADES; j++)
        k = p->probabilities[j] > p->probabilities[k] ? j : k;
    return k;
}

/* buf with room for need elements (itself when it has); NULL when out of
 * memory, buf then still the caller's. */
static void *grow(void *buf, size_t *have, size_t need, size_t size)
{
    void *q;

    if (need <= *have)
        return buf;
    q = realloc(buf, need * size);
    if (q)
        *have = need;
    return q;
}

/* The overlay PNG at the photograph's own size (overlay.h): the map, the
 * colour scale, the grade and its probability on the picture. */
static void write_overlay(struct grader *g, struct image_prediction *p, int k,
                          const struct img *photo)
{
    char path[sizeof(p->cam_path)], label[160];
    size_t px = (size_t)photo->width * photo->height;
    uint8_t *rgb = grow(g->overlay, &g->overlay_n, 3 * px, 1);
    float *scratch = rgb ? grow(g->cam_scratch, &g->cam_scratch_n, ovl_scratch(photo->width, g->fw),
                                sizeof(float))
                         : NULL;
    struct err e = {0};

    snprintf(label, sizeof(label), "grade %d  P=%.2f\nreferable  P(>=2)=%.2f\n%s of grade %d",
             p->grade, p->probabilities[p->grade], p->referable_probability,
             g->n_head ? "Grad-CAM" : "CAM", k);
    g->overlay = rgb ? rgb : g->overlay;
    g->cam_scratch = scratch ? scratch : g->cam_scratch;
    if (!rgb || !scratch)
        err_set(&e, ERR_NOMEM, "out of memory for a %dx%d overlay", photo->width, photo->height);
    else if (ovl_render(photo->rgb, photo->width, photo->height, p->cam_grid, g->fh, g->fw, label,
                        g->overlay, g->cam_scratch, &e) == ERR_OK) {
        cam_file(g, p, path, sizeof(path));
        if (img_write_png(path, g->overlay, photo->width, photo->height, &e) == ERR_OK) {
            g->n.cams_written++;
            snprintf(p->cam_path, sizeof(p->cam_path), "%s", path);
            return;
        }
    }
    g->n.cam_errors++;
    log_warn("image %s: CAM overlay not written: %s", p->image_id, e.msg);
}

/* Referable predictions only: the map of cam_class, plain CAM for a
 * one-Linear head, Grad-CAM for a deeper one; its overlay with cam_dir. */
static void add_cam(struct grader *g, struct image_prediction *p, const float *features,
                    const struct img *photo)
{
    struct err e = {0};
    int k = cam_class(p), rc;

    if (!grader_has_cam(g) || k < 0)
        return;
    rc = g->n_head ? cam_gradcam(g->head, g->n_head, g->channels, features, g->fh, g->fw, k,
                                 p->cam_grid, g->head_scratch, &e)
                   : cam_grid(g->cam_w, IMGEV_GRADES, g->channels, features, g->fh, g->fw, k,
                              p->cam_grid, &e);
    if (rc) {
        log_warn("image %s: no CAM: %s", p->image_id, e.msg);
        return;
    }
    p->cam_height = g->fh;
    p->cam_width = g->fw;
    if (g->cam_dir[0] && photo)
        write_overlay(g, p, k, photo);
}

void grader_run(struct grader *g, struct image_prediction *p, size_t n)
{
    int rows = g->rows;
    size_t fcells = (size_t)g->channels * g->fh * g->fw;
    struct onnx_tensor in = {ONNX_F32, 4, {rows, 3, g->norm.height, g->norm.width}, g->input};
    struct onnx_tensor out[2];
    const struct onnx_tensor *feat = NULL;
    struct err e = {0};

    if (!rows)
        return;
    g->n.batches++;
    g->n.rows += (uint64_t)rows;
    if (onnx_run(g->m, &in, 1, out, g->n_out, &e) == ERR_OK && out[0].dims[0] != rows)
        err_set(&e, ERR_INVALID, "model returned %lld rows for %d", (long long)out[0].dims[0],
                rows);
    if (e.code)
        log_error("forward pass of %d image(s) failed: %s", rows, e.msg);
    else if ((feat = features_of(g, out)) && feat->dims[0] != rows)
        feat = NULL; /* checked at start-up; never index past the map */
    for (size_t i = 0; i < n && i < g->cap; i++) {
        int r = g->row[i];
        if (r < 0)
            continue;
        if (e.code)
            grader_ungradable(&p[i], MODEL_ERROR, e.msg);
        else if (grader_score(&p[i], (const float *)out[0].data + r * IMGEV_GRADES, g->threshold))
            grader_ungradable(&p[i], MODEL_ERROR, "non-finite logits");
        else if (feat)
            add_cam(g, &p[i], (const float *)feat->data + (size_t)r * fcells,
                    g->photos ? &g->photos[r] : NULL);
    }
}
