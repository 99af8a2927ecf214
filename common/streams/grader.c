/* common/streams/grader.c: the images stream's step (see grader.h). */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cam.h"
#include "ensemble.h"
#include "grader.h"
#include "imgq.h"
#include "log.h"
#include "onnx.h"
#include "overlay.h"

#define MODEL_ERROR "model_error"
#define LOW_QUALITY "low_quality:" /* + imgq_check_name */

/* An image to load, check and preprocess (the decode thread's input). */
struct job {
    size_t slot;
    struct image_event ev; /* copies: the caller's may be reused before grader_run */
    char topic[128];
    int32_t partition;
    int64_t offset;
    struct image_prediction *p;
};

/* One batch of cap slots: its rows of the batch tensors are [first_row,
 * first_row + cap), so two batches in flight (opts.sets 2) never share a
 * row. decoded/ready/queued are guarded by mu. */
struct gset {
    struct job *jobs; /* cap */
    size_t njobs;
    int first_row;
    int rows;       /* rows added so far (by whoever decodes) */
    size_t decoded; /* jobs done */
    int ready;      /* rows published to the forward passes */
    int started;    /* handed to the decode thread (since grader_begin_set) */
    int queued;     /* handed and not finished */
};

struct grader {
    struct ens *ens;              /* the model set (one member: the plain model) */
    size_t cam;                   /* the CAM member */
    const struct img_norm *cnorm; /* its geometry */
    float *cam_w;                 /* IMGEV_GRADES x channels: plain CAM; NULL: none */
    int channels, fh, fw;         /* feature map geometry */

    struct cam_layer head[CAM_MAX_LAYERS]; /* Grad-CAM's head (into the member's constants) */
    size_t n_head;                         /* 0: no Grad-CAM */
    float *head_scratch;

    double threshold;
    char name[64], version[32];
    char cam_dir[512];
    struct img_loader *ld;
    struct imgq *q; /* NULL: no quality checks */
    struct imgq_limits qlim;
    struct imgq_values *qv; /* per slot: the quality values measured */
    unsigned char *qmeasured;
    size_t cap;   /* slots of a batch */
    size_t nsets; /* batches in flight: slots and rows are nsets x cap */
    size_t pass;  /* rows per forward pass at most */
    int *row;     /* slot -> row of the batch tensors, -1 none */
    struct gset set[2];
    struct img im; /* the decoded image (whoever decodes: one at a time) */
    struct ens_result *res;
    struct img *photos; /* per row, the decoded image for its overlay; NULL: none */
    float *cam_scratch;
    uint8_t *overlay;
    size_t cam_scratch_n, overlay_n;
    struct grader_counts n;
    /* decode thread (images.decode_thread): it loads, checks and preprocesses
     * the started sets' images in order while this thread runs forward passes
     * on the rows already ready; mu guards quit, queue and the sets' counts */
    struct job *jobs;
    struct image_prediction **pred_of_row;
    int threaded, quit;
    int queue[2], nqueued; /* started sets, oldest first */
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv_go, cv_done;
};

static void start_decoder(struct grader *g);

void grader_opts_from_cfg(const struct cfg *cf, struct grader_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->model = cfg_str(cf, "images.model");
    o->models = cfg_str(cf, "images.models");
    o->cam_model = cfg_str(cf, "images.cam_model");
    o->cam_features = cfg_str(cf, "images.cam_features");
    o->threshold = cfg_double(cf, "images.referable_threshold");
    o->cam_dir = cfg_str(cf, "images.cam_dir");
    o->batch = (size_t)cfg_int(cf, "images.batch");
    o->pass = o->batch;
    o->load = (struct img_opts){.root = cfg_str(cf, "images.root"),
                                .allow_hosts = cfg_str(cf, "images.allow_hosts"),
                                .timeout_ms = cfg_int(cf, "images.http_timeout_ms"),
                                .max_bytes = (size_t)cfg_int(cf, "images.max_bytes"),
                                .max_pixels = (uint64_t)cfg_int(cf, "images.max_pixels"),
                                .min_side = (int)cfg_int(cf, "images.min_side"),
                                .max_scans = (int)cfg_int(cf, "images.max_scans"),
                                .jpeg_max_memory = (long)cfg_int(cf, "images.jpeg_max_memory")};
    o->quality = cfg_str(cf, "images.quality");
    o->decode_thread = (int)cfg_int(cf, "images.decode_thread");
}

/* ---- the model set ---- */

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

/* Without cam_weight: the head read from the graph (onnx_gradcam_head). One
 * Linear layer is plain CAM (the fast path), a deeper head Grad-CAM. A
 * graph without such a head is served without CAMs. */
static int load_head(struct grader *g, struct onnx_model *m, const char *path,
                     struct err *e)
{
    const char *f;
    int c;
    struct cam_layer *l = g->head;

    if (onnx_gradcam_head(m, &f, g->head, CAM_MAX_LAYERS, &g->n_head, &c, e)) {
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

/* cam_weight names the CAM member's final Linear weight: IMGEV_GRADES x C
 * (torch layout, Gemm transB=1) or C x IMGEV_GRADES ("cam_weight_layout":
 * in_out). The feature map's shape is the smoke run's (ens_open). */
static int load_cam_weights(struct grader *g, struct err *e)
{
    struct onnx_model *m = ens_member_model(g->ens, g->cam);
    const char *path = ens_member_path(g->ens, g->cam);
    const char *name = onnx_metadata(m, "cam_weight");
    const char *layout = onnx_metadata(m, "cam_weight_layout");
    const struct onnx_tensor *t = name ? onnx_initializer(m, name) : NULL;
    const struct onnx_tensor *f = ens_member_features(g->ens, g->cam);
    int in_out = layout && strcmp(layout, "in_out") == 0, c;
    const float *src;

    if (!f) {
        log_warn("%s: no feature-map output and no head to read: no CAMs", path);
        return ERR_OK;
    }
    if (f->dtype != ONNX_F32 || f->ndim != 4 || f->dims[0] != 1 ||
        f->dims[2] * f->dims[3] > IMGEV_CAM_MAX)
        return err_set(e, ERR_CONFIG,
                       "%s: %s must be a float [N, C, h, w] feature map with h x w <= %d", path,
                       ens_member_kept(g->ens, g->cam)[0] ? ens_member_kept(g->ens, g->cam)
                                                          : onnx_output_name(m, 1),
                       IMGEV_CAM_MAX);
    c = g->channels = (int)f->dims[1];
    g->fh = (int)f->dims[2];
    g->fw = (int)f->dims[3];
    if (!name)
        return load_head(g, m, path, e);
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

/* Name and version: the model's metadata; a set is "ensemble" with the
 * members' versions joined by '+' (cut to the field). */
static void name_set(struct grader *g)
{
    size_t n = ens_size(g->ens), len = 0;

    for (size_t i = 0; i < n; i++) {
        struct onnx_model *m = ens_member_model(g->ens, i);
        const char *name = onnx_metadata(m, "model_name"), *v = onnx_metadata(m, "model_version");
        if (n == 1)
            snprintf(g->name, sizeof(g->name), "%s", name ? name : "onnx");
        if (len < sizeof(g->version))
            len += (size_t)snprintf(g->version + len, sizeof(g->version) - len, "%s%s",
                                    i ? "+" : "", v ? v : "unknown");
    }
    if (n > 1)
        snprintf(g->name, sizeof(g->name), "ensemble");
}

/* The set is opened and smoke-run member by member (ens_open), so a bad
 * member refuses the whole set naming its file. The threshold: the key, or
 * the first member's metadata (with a set, set images.referable_threshold:
 * averaged probabilities are calibrated differently), or 0.5. */
static int open_model(struct grader *g, const struct grader_opts *o, struct err *e)
{
    const char *models = o->models && *o->models ? o->models : o->model, *thr;
    struct ens_opts eo = {.models = models,
                          .cam_member = o->cam_model,
                          .cam_features = o->cam_features,
                          .batch = g->cap * g->nsets};
    char one[1100];

    if (!o->models || !*o->models) {
        /* one model: its path as is (a ':' or ',' in it is not a weight or a member) */
        if (!models || !*models)
            return err_set(e, ERR_CONFIG, "images.model: empty");
        if (strchr(models, ',') || strchr(models, ':')) {
            if ((size_t)snprintf(one, sizeof(one), "%s:1", models) >= sizeof(one) ||
                strchr(models, ','))
                return err_set(e, ERR_CONFIG, "images.model: '%s': use images.models for a set",
                               models);
            eo.models = one;
        }
    }
    if (ens_open(&g->ens, &eo, e))
        return e->code;
    g->cam = ens_cam_member(g->ens);
    g->cnorm = ens_member_norm(g->ens, g->cam);
    if (load_cam_weights(g, e))
        return e->code;
    g->threshold = o->threshold;
    thr = onnx_metadata(ens_member_model(g->ens, 0), "referable_threshold");
    if (g->threshold < 0 && thr && parse_threshold(thr, &g->threshold))
        return err_set(e, ERR_CONFIG, "%s: metadata referable_threshold \"%s\" is not in [0, 1]",
                       ens_member_path(g->ens, 0), thr);
    if (g->threshold < 0)
        g->threshold = 0.5;
    name_set(g);
    for (size_t i = 0; i < ens_size(g->ens); i++) {
        const struct img_norm *nm = ens_member_norm(g->ens, i);
        log_info("model %s (weight %.3f): input %dx%d%s", ens_member_path(g->ens, i),
                 ens_member_weight(g->ens, i), nm->width, nm->height,
                 i != g->cam      ? ""
                 : g->n_head ? ", Grad-CAM of referable grades"
                 : g->cam_w  ? ", CAM of referable grades"
                             : ", no CAM");
    }
    log_info("grading with %s %s, referable above P(grade >= 2) = %.4f", g->name, g->version,
             g->threshold);
    return ERR_OK;
}

static int alloc_batch(struct grader *g, struct err *e)
{
    size_t c = g->cap * g->nsets;

    g->row = calloc(c, sizeof(int));
    g->res = calloc(g->cap, sizeof(*g->res));
    g->qv = calloc(c, sizeof(*g->qv));
    g->qmeasured = calloc(c, 1);
    g->jobs = calloc(c, sizeof(*g->jobs));
    g->pred_of_row = calloc(c, sizeof(*g->pred_of_row));
    if (g->cam_dir[0] && grader_has_cam(g)) { /* overlays at the photographs' size */
        g->photos = calloc(c, sizeof(*g->photos));
        for (size_t i = 0; g->photos && i < c; i++)
            img_init(&g->photos[i]);
    }
    if (!g->row || !g->res || !g->qv || !g->qmeasured || !g->jobs || !g->pred_of_row ||
        (g->cam_dir[0] && grader_has_cam(g) && !g->photos))
        return err_set(e, ERR_NOMEM, "out of memory for a batch of %zu", c);
    for (size_t k = 0; k < g->nsets; k++) {
        g->set[k].jobs = g->jobs + k * g->cap;
        g->set[k].first_row = (int)(k * g->cap);
        grader_begin_set(g, (int)k);
    }
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
    g->nsets = o->sets == 2 ? 2 : 1;
    g->pass = o->pass && o->pass < g->cap ? o->pass : g->cap;
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
    if (o->decode_thread)
        start_decoder(g);
    /* One BLAS thread, decode thread or not: OpenBLAS' spinning threads would
     * take the decode thread's core, and the sums' order (so the last bits of
     * the probabilities) would depend on the mode. */
    for (size_t i = 0; i < ens_size(g->ens); i++)
        onnx_set_threads(ens_member_model(g->ens, i), 1);
    return g;
fail:
    grader_close(g);
    return NULL;
}

void grader_close(struct grader *g)
{
    if (!g)
        return;
    if (g->threaded) {
        pthread_mutex_lock(&g->mu);
        g->quit = 1;
        pthread_cond_signal(&g->cv_go);
        pthread_mutex_unlock(&g->mu);
        pthread_join(g->th, NULL);
        pthread_mutex_destroy(&g->mu);
        pthread_cond_destroy(&g->cv_go);
        pthread_cond_destroy(&g->cv_done);
    }
    free(g->jobs);
    free(g->pred_of_row);
    free(g->row);
    free(g->res);
    free(g->qv);
    free(g->qmeasured);
    free(g->cam_scratch);
    free(g->overlay);
    free(g->cam_w);
    free(g->head_scratch);
    for (size_t i = 0; g->photos && i < g->cap * g->nsets; i++)
        img_free(&g->photos[i]);
    free(g->photos);
    img_free(&g->im);
    img_loader_close(g->ld);
    imgq_close(g->q);
    ens_close(g->ens);
    free(g);
}

size_t grader_members(const struct grader *g)
{
    return ens_size(g->ens);
}

const char *grader_member_path(const struct grader *g, size_t i)
{
    return ens_member_path(g->ens, i);
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
    return g->cnorm;
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
    p->agreement = -1;
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

int grader_quality(const struct grader *g, size_t i, double v[IMGQ_NVALUES])
{
    if (i >= g->cap * g->nsets || !g->qmeasured[i])
        return 0;
    imgq_values_array(&g->qv[i], v);
    return 1;
}

void grader_begin_set(struct grader *g, int set)
{
    struct gset *s = &g->set[set];
    size_t base = (size_t)set * g->cap;

    if (g->threaded) { /* a set still being decoded is finished first */
        pthread_mutex_lock(&g->mu);
        while (s->queued)
            pthread_cond_wait(&g->cv_done, &g->mu);
        pthread_mutex_unlock(&g->mu);
    }
    for (size_t i = base; i < base + g->cap; i++) {
        g->row[i] = -1;
        g->qmeasured[i] = 0;
    }
    s->rows = 0;
    s->njobs = 0;
    s->decoded = 0;
    s->ready = 0;
    s->started = 0;
}

void grader_begin(struct grader *g)
{
    grader_begin_set(g, 0);
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
static int quality_ok(struct grader *g, size_t slot, struct image_prediction *p)
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
    g->qv[slot] = v;
    g->qmeasured[slot] = 1;
    c = imgq_judge(&g->qlim, &v);
    if (c == IMGQ_OK)
        return 1;
    snprintf(reason, sizeof(reason), LOW_QUALITY "%s", imgq_check_name(c));
    imgq_detail(&g->qlim, &v, c, detail, sizeof(detail));
    grader_ungradable(p, reason, detail);
    return 0;
}

static void add_now(struct grader *g, size_t i, const struct image_event *ev, const char *topic,
                    int32_t partition, int64_t offset, struct image_prediction *p)
{
    enum img_reason why;
    struct err e = {0};

    struct gset *s = &g->set[i / g->cap];
    int r;

    init_prediction(g, p, ev, topic, partition, offset);
    g->row[i] = -1;
    g->qmeasured[i] = 0;
    if (img_load(g->ld, ev->uri, &g->im, &why, &e)) {
        grader_ungradable(p, img_reason_name(why), e.msg);
        return;
    }
    if (g->q && !quality_ok(g, i, p))
        return;
    r = s->first_row + s->rows;
    if (ens_add(g->ens, (size_t)r, &g->im, &e)) {
        grader_ungradable(p, img_reason_name(e.code == ERR_NOMEM ? IMG_TOO_LARGE : IMG_CORRUPT),
                          e.msg);
        return;
    }
    if (g->photos) { /* kept for the overlay; the buffers trade places */
        struct img t = g->photos[r];
        g->photos[r] = g->im;
        g->im = t;
    }
    g->pred_of_row[r] = p;
    g->row[i] = r;
    s->rows++;
}

/* The decode thread: the started sets in order, each one's jobs in order,
 * publishing after each how many are done and how many rows are ready. A
 * set started while the forward passes of the one before run is decoded
 * meanwhile (the pipelined worker: take N+1 beside take N's passes). */
static void *decoder_main(void *arg)
{
    struct grader *g = arg;

    pthread_mutex_lock(&g->mu);
    for (;;) {
        struct gset *s;
        while (!g->nqueued && !g->quit)
            pthread_cond_wait(&g->cv_go, &g->mu);
        if (g->quit)
            break;
        s = &g->set[g->queue[0]];
        for (size_t j = 0; j < s->njobs; j++) {
            struct job *b = &s->jobs[j];
            pthread_mutex_unlock(&g->mu);
            add_now(g, b->slot, &b->ev, b->topic, b->partition, b->offset, b->p);
            pthread_mutex_lock(&g->mu);
            s->decoded = j + 1;
            s->ready = s->rows;
            pthread_cond_broadcast(&g->cv_done);
        }
        s->queued = 0;
        g->queue[0] = g->queue[1];
        g->nqueued--;
        pthread_cond_broadcast(&g->cv_done);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

/* Without a thread (it cannot start, or images.decode_thread=0) images are
 * decoded in grader_add, before the batch's one forward pass. */
static void start_decoder(struct grader *g)
{
    if (pthread_mutex_init(&g->mu, NULL))
        return;
    if (pthread_cond_init(&g->cv_go, NULL)) {
        pthread_mutex_destroy(&g->mu);
        return;
    }
    if (pthread_cond_init(&g->cv_done, NULL)) {
        pthread_cond_destroy(&g->cv_go);
        pthread_mutex_destroy(&g->mu);
        return;
    }
    if (pthread_create(&g->th, NULL, decoder_main, g)) {
        log_warn("no decode thread: images are decoded before each forward pass");
        pthread_cond_destroy(&g->cv_done);
        pthread_cond_destroy(&g->cv_go);
        pthread_mutex_destroy(&g->mu);
        return;
    }
    pthread_setname_np(g->th, "img-decode"); /* its CPU apart in top, perf, bench/images.sh */
    g->threaded = 1;
}

void grader_add(struct grader *g, size_t i, const struct image_event *ev, const char *topic,
                int32_t partition, int64_t offset, struct image_prediction *p)
{
    struct gset *s;
    struct job *b;

    if (i >= g->cap * g->nsets)
        return;
    s = &g->set[i / g->cap];
    if (!g->threaded) {
        add_now(g, i, ev, topic, partition, offset, p);
        return;
    }
    if (s->started || s->njobs >= g->cap) { /* never on the caller's thread: the
                                               loader and scratch are the thread's */
        init_prediction(g, p, ev, topic, partition, offset);
        grader_ungradable(p, MODEL_ERROR, "added to a batch already handed to the decode thread");
        return;
    }
    b = &s->jobs[s->njobs++];
    b->slot = i;
    b->ev = *ev;
    snprintf(b->topic, sizeof(b->topic), "%s", topic);
    b->partition = partition;
    b->offset = offset;
    b->p = p;
    g->row[i] = -1;
}

/* ---- per batch ---- */

/* p graded from the set's probabilities (each member's softmax in double,
 * weighted mean: common/models/ensemble.h). */
static void score_probs(struct image_prediction *p, const double *pr, double agreement,
                        double threshold)
{
    p->n_probabilities = IMGEV_GRADES;
    p->grade = 0;
    p->expected_grade = 0.0;
    p->referable_probability = 0.0;
    for (int k = 0; k < IMGEV_GRADES; k++) {
        p->probabilities[k] = pr[k];
        p->expected_grade += k * pr[k];
        if (k >= 2)
            p->referable_probability += pr[k];
        if (pr[k] > pr[p->grade])
            p->grade = k;
    }
    p->agreement = agreement;
    p->referable = p->referable_probability > threshold;
}

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
    for (int k = 0; k < IMGEV_GRADES; k++)
        pr[k] /= sum;
    score_probs(p, pr, 1.0, threshold);
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

/* One forward pass over rows [first, first + count) and their predictions
 * (p indexed by slot). */
static void forward_rows(struct grader *g, int first, int count)
{
    size_t fcells = (size_t)g->channels * g->fh * g->fw;
    const struct onnx_tensor *feat = NULL;
    struct err e = {0};

    g->n.batches++;
    g->n.rows += (uint64_t)count;
    if ((uint64_t)count > g->n.largest)
        g->n.largest = (uint64_t)count;
    if (ens_forward(g->ens, (size_t)first, (size_t)count, g->res, NULL, &e))
        log_error("forward pass of %d image(s) failed: %s", count, e.msg);
    else if (grader_has_cam(g) && (feat = ens_member_features(g->ens, g->cam)) &&
             (feat->dims[0] != count ||
              (size_t)(feat->dims[1] * feat->dims[2] * feat->dims[3]) != fcells))
        feat = NULL; /* checked at start-up; never index past the map */
    for (int j = 0; j < count; j++) {
        int r = first + j;
        struct image_prediction *q = g->pred_of_row[r];
        if (e.code) {
            grader_ungradable(q, MODEL_ERROR, e.msg);
            continue;
        }
        score_probs(q, g->res[j].probs, g->res[j].agreement, g->threshold);
        if (feat)
            add_cam(g, q, (const float *)feat->data + (size_t)j * fcells,
                    g->photos ? &g->photos[r] : NULL);
    }
}

void grader_start(struct grader *g, int set)
{
    struct gset *s = &g->set[set];

    if (!g->threaded || s->started || !s->njobs)
        return;
    pthread_mutex_lock(&g->mu);
    s->started = 1;
    s->queued = 1;
    g->queue[g->nqueued++] = set;
    pthread_cond_signal(&g->cv_go);
    pthread_mutex_unlock(&g->mu);
}

/* Pipelined: the decode thread works through the jobs while each forward
 * pass takes the rows ready so far (at most g->pass), so decoding images
 * k+1.. overlaps the pass over image k... (the first pass waits for one
 * image; with more jobs than a pass holds, the thread runs ahead and the
 * later passes find their rows ready; with a second set started, it goes
 * on with that set's images while this one's last passes run). */
void grader_run_set(struct grader *g, int set)
{
    struct gset *s = &g->set[set];
    int done = 0, pass = (int)g->pass;

    if (g->threaded && s->njobs) {
        grader_start(g, set);
        pthread_mutex_lock(&g->mu);
        for (;;) {
            int ready;
            while (s->ready == done && s->decoded < s->njobs)
                pthread_cond_wait(&g->cv_done, &g->mu);
            ready = s->ready;
            pthread_mutex_unlock(&g->mu);
            if (ready > done) {
                int count = ready - done < pass ? ready - done : pass;
                forward_rows(g, s->first_row + done, count);
                done += count;
            }
            pthread_mutex_lock(&g->mu);
            if (s->decoded == s->njobs && s->ready == done)
                break;
        }
        while (s->queued) /* the thread has left the set */
            pthread_cond_wait(&g->cv_done, &g->mu);
        s->njobs = 0;
        pthread_mutex_unlock(&g->mu);
        return;
    }
    for (; done < s->rows; done += pass)
        forward_rows(g, s->first_row + done, s->rows - done < pass ? s->rows - done : pass);
}

void grader_run(struct grader *g, struct image_prediction *p, size_t n)
{
    (void)p; /* the rows know their predictions */
    (void)n;
    grader_run_set(g, 0);
}
