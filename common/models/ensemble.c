/* common/models/ensemble.c: parse the model set, open and check every member,
 * run them on the same images and average. */
#include "ensemble.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cam.h"

#define PATH_MAX_LEN 1024

struct member {
    char path[PATH_MAX_LEN];
    double weight;
    struct onnx_model *m;
    struct img_norm norm;
    size_t n_out;
    float *input;   /* batch x 3 x H x W */
    float *scratch; /* img_preprocess scratch, grown */
    size_t scratch_cap;
    struct onnx_tensor out[2];
    int have_out;
    char kept[256]; /* the CAM member's kept feature map, "" none */
};

struct ens {
    struct member mb[ENS_MAX_MEMBERS];
    size_t n, batch, cam;
};

/* "path[:weight]" -> member path and weight: the text after the last ':'
 * must be a number (bounded strtod, finite, in (0, 1e6]). */
static int parse_entry(const char *s, size_t len, struct member *m, struct err *e)
{
    const char *colon = NULL;
    double w = 1.0;

    for (const char *c = s + len; c > s && !colon; c--) /* the last ':' */
        if (c[-1] == ':')
            colon = c - 1;
    if (colon) {
        char num[64], *end;
        size_t nl = (size_t)(s + len - colon - 1);

        if (nl == 0 || nl >= sizeof(num))
            return err_set(e, ERR_CONFIG, "images.models: bad weight in '%.*s'", (int)len, s);
        memcpy(num, colon + 1, nl);
        num[nl] = 0;
        errno = 0;
        w = strtod(num, &end);
        if (end == num || *end || errno || !isfinite(w) || w <= 0 || w > 1e6)
            return err_set(e, ERR_CONFIG,
                           "images.models: weight '%s' of '%.*s' is not a number in (0, 1e6]", num,
                           (int)(colon - s), s);
        len = (size_t)(colon - s);
    }
    while (len && (*s == ' ' || *s == '\t'))
        s++, len--;
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (len == 0)
        return err_set(e, ERR_CONFIG, "images.models: empty member");
    if (len >= PATH_MAX_LEN)
        return err_set(e, ERR_CONFIG, "images.models: member path over %d bytes", PATH_MAX_LEN - 1);
    memcpy(m->path, s, len);
    m->path[len] = 0;
    m->weight = w;
    return ERR_OK;
}

static int parse_models(struct ens *s, const char *spec, struct err *e)
{
    const char *p = spec;
    double total = 0;

    if (!spec || !*spec)
        return err_set(e, ERR_CONFIG, "images.models: no model");
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        int rc;

        if (s->n == ENS_MAX_MEMBERS)
            return err_set(e, ERR_CONFIG, "images.models: more than %d members", ENS_MAX_MEMBERS);
        if ((rc = parse_entry(p, len, &s->mb[s->n], e)))
            return rc;
        total += s->mb[s->n++].weight;
        if (!comma)
            break;
        p = comma + 1;
    }
    for (size_t i = 0; i < s->n; i++)
        s->mb[i].weight /= total;
    return ERR_OK;
}

static int member_geometry(struct member *m, struct err *e)
{
    int ndim;
    int64_t d[8];
    const char *size = onnx_metadata(m->m, "input_size");

    if (onnx_num_inputs(m->m) != 1 || onnx_input_dtype(m->m, 0) != ONNX_F32 ||
        onnx_input_shape(m->m, 0, &ndim, d) || ndim != 4 || d[1] != 3)
        return err_set(e, ERR_CONFIG, "%s: expected one float input [N, 3, H, W]", m->path);
    img_norm_default(&m->norm, d[2] > 0 ? (int)d[2] : 224);
    if (d[3] > 0)
        m->norm.width = (int)d[3];
    if (img_norm_parse(&m->norm, size, onnx_metadata(m->m, "mean"), onnx_metadata(m->m, "std"), e))
        return err_wrap(e, "%s: metadata", m->path);
    if ((d[2] > 0 && d[2] != m->norm.height) || (d[3] > 0 && d[3] != m->norm.width))
        return err_set(e, ERR_CONFIG, "%s: metadata input_size disagrees with the input shape",
                       m->path);
    m->n_out = onnx_num_outputs(m->m) >= 2 ? 2 : 1;
    return ERR_OK;
}

/* One run on zeros: logits [1, 5], finite. */
static int smoke(struct member *m, struct err *e)
{
    size_t per = (size_t)3 * m->norm.height * m->norm.width;
    struct onnx_tensor in = {ONNX_F32, 4, {1, 3, m->norm.height, m->norm.width}, m->input};
    struct onnx_tensor out[2];
    int rc;

    memset(m->input, 0, per * sizeof(float));
    m->have_out = 0;
    if ((rc = onnx_run(m->m, &in, 1, out, m->n_out, e)))
        return err_wrap(e, "%s: smoke run", m->path);
    if (out[0].dtype != ONNX_F32 || out[0].ndim != 2 || out[0].dims[0] != 1 ||
        out[0].dims[1] != ENS_GRADES)
        return err_set(e, ERR_CONFIG, "%s: first output is not logits [N, %d]", m->path,
                       ENS_GRADES);
    for (int k = 0; k < ENS_GRADES; k++)
        if (!isfinite(((const float *)out[0].data)[k]))
            return err_set(e, ERR_CONFIG, "%s: smoke run gives non-finite logits", m->path);
    memcpy(m->out, out, sizeof(m->out));
    m->have_out = 1; /* the caller may check the feature map's shape */
    return ERR_OK;
}

/* The CAM member keeps its last feature map, named by cam_features or its
 * metadata (a plain one-output export), so that the runtime does not recycle
 * it; without cam_weight metadata, the value the graph's head pools
 * (onnx_gradcam_head: CAM or Grad-CAM from the head), unless the second
 * output is it. */
static int keep_features(struct member *m, const char *name, struct err *e)
{
    const char *keep[1];
    int rc;

    if (!name || !*name)
        name = onnx_metadata(m->m, "cam_features");
    if (m->n_out == 2 && name && *name)
        return ERR_OK;
    if ((!name || !*name) && !onnx_metadata(m->m, "cam_weight")) {
        struct cam_layer head[CAM_MAX_LAYERS];
        struct err ignored = {0};
        size_t n;
        int c;
        if (onnx_gradcam_head(m->m, &name, head, CAM_MAX_LAYERS, &n, &c, &ignored) ||
            (m->n_out == 2 && strcmp(onnx_output_name(m->m, 1), name) == 0))
            return ERR_OK;
    }
    if (!name || !*name)
        return ERR_OK;
    if (strlen(name) >= sizeof(m->kept))
        return err_set(e, ERR_CONFIG, "%s: cam_features name too long", m->path);
    snprintf(m->kept, sizeof(m->kept), "%s", name); /* the handle owning name goes */
    keep[0] = m->kept;
    onnx_close(m->m);
    m->m = NULL;
    if ((rc = onnx_open_keep(&m->m, m->path, keep, 1, e))) {
        char msg[sizeof(e->msg)];
        memcpy(msg, e->msg, sizeof(msg));
        return err_set(e, rc == ERR_NOMEM ? rc : ERR_CONFIG, "%s: cam_features %s: %.150s", m->path,
                       m->kept, msg);
    }
    return ERR_OK;
}

static int open_member(struct member *m, size_t batch, const char *keep, struct err *e)
{
    int rc;

    if ((rc = onnx_open(&m->m, m->path, e))) {
        char msg[sizeof(e->msg)];
        if (rc == ERR_NOMEM)
            return rc;
        memcpy(msg, e->msg, sizeof(msg)); /* a bad member is a configuration error */
        return err_set(e, ERR_CONFIG, "%s", msg);
    }
    if ((rc = member_geometry(m, e)))
        return rc;
    if (keep && (rc = keep_features(m, keep, e)))
        return rc;
    m->input = malloc(batch * 3 * (size_t)m->norm.height * m->norm.width * sizeof(float));
    if (!m->input)
        return err_set(e, ERR_NOMEM, "%s: out of memory for a batch of %zu", m->path, batch);
    return smoke(m, e);
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

int ens_open(struct ens **out, const struct ens_opts *o, struct err *e)
{
    struct ens *s = calloc(1, sizeof(*s));
    int rc;

    *out = NULL;
    if (!s)
        return err_set(e, ERR_NOMEM, "ensemble: out of memory");
    s->batch = o->batch ? o->batch : 1;
    if ((rc = parse_models(s, o->models, e)))
        goto fail;
    if (o->cam_member && *o->cam_member) {
        size_t i;
        for (i = 0; i < s->n; i++)
            if (strcmp(s->mb[i].path, o->cam_member) == 0 ||
                strcmp(base_name(s->mb[i].path), o->cam_member) == 0)
                break;
        if (i == s->n) {
            rc = err_set(e, ERR_CONFIG, "images.cam_model: '%s' is not a member of '%s'",
                         o->cam_member, o->models);
            goto fail;
        }
        s->cam = i;
    }
    for (size_t i = 0; i < s->n; i++)
        if ((rc = open_member(&s->mb[i], s->batch,
                              i == s->cam ? (o->cam_features ? o->cam_features : "") : NULL, e)))
            goto fail;
    *out = s;
    return ERR_OK;
fail:
    ens_close(s);
    return rc;
}

void ens_close(struct ens *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        onnx_close(s->mb[i].m);
        free(s->mb[i].input);
        free(s->mb[i].scratch);
    }
    free(s);
}

size_t ens_size(const struct ens *s)
{
    return s->n;
}
size_t ens_batch(const struct ens *s)
{
    return s->batch;
}
const char *ens_member_path(const struct ens *s, size_t i)
{
    return s->mb[i].path;
}
double ens_member_weight(const struct ens *s, size_t i)
{
    return s->mb[i].weight;
}
const struct img_norm *ens_member_norm(const struct ens *s, size_t i)
{
    return &s->mb[i].norm;
}
struct onnx_model *ens_member_model(const struct ens *s, size_t i)
{
    return s->mb[i].m;
}
size_t ens_cam_member(const struct ens *s)
{
    return s->cam;
}
const float *ens_member_input(const struct ens *s, size_t i)
{
    return s->mb[i].input;
}
const char *ens_member_kept(const struct ens *s, size_t i)
{
    return s->mb[i].kept;
}

const struct onnx_tensor *ens_member_features(const struct ens *s, size_t i)
{
    const struct member *m = &s->mb[i];

    if (!m->have_out)
        return NULL;
    if (m->kept[0])
        return onnx_value(m->m, m->kept);
    return m->n_out == 2 ? &m->out[1] : NULL;
}

const struct onnx_tensor *ens_member_output(const struct ens *s, size_t i, size_t k)
{
    if (i >= s->n || !s->mb[i].have_out || k >= s->mb[i].n_out)
        return NULL;
    return &s->mb[i].out[k];
}

/* Softmax in double, max-shifted; -1 if a logit is not finite. */
static int softmax(const float *logits, double *p)
{
    double top = -INFINITY, sum = 0;

    for (int k = 0; k < ENS_GRADES; k++) {
        if (!isfinite(logits[k]))
            return -1;
        top = logits[k] > top ? logits[k] : top;
    }
    for (int k = 0; k < ENS_GRADES; k++)
        sum += p[k] = exp((double)logits[k] - top);
    for (int k = 0; k < ENS_GRADES; k++)
        p[k] /= sum;
    return 0;
}

static int argmax(const double *p)
{
    int g = 0;
    for (int k = 1; k < ENS_GRADES; k++)
        g = p[k] > p[g] ? k : g;
    return g;
}

static int grow_scratch(struct member *m, size_t need, struct err *e)
{
    float *ns;

    if (need <= m->scratch_cap)
        return ERR_OK;
    if (!(ns = realloc(m->scratch, need * sizeof(float))))
        return err_set(e, ERR_NOMEM, "ensemble: out of memory for preprocessing");
    m->scratch = ns;
    m->scratch_cap = need;
    return ERR_OK;
}

int ens_add(struct ens *s, size_t row, const struct img *im, struct err *e)
{
    if (row >= s->batch)
        return err_set(e, ERR_INVALID, "ensemble: row %zu of a batch of %zu", row, s->batch);
    for (size_t i = 0; i < s->n; i++) {
        struct member *m = &s->mb[i];
        size_t per = (size_t)3 * m->norm.height * m->norm.width;
        int rc;

        if ((rc = grow_scratch(m, img_preprocess_scratch(im, &m->norm), e)) ||
            (rc = img_preprocess(im, &m->norm, m->input + row * per, m->scratch, e)))
            return rc;
    }
    return ERR_OK;
}

int ens_forward(struct ens *s, size_t first, size_t n, struct ens_result *out, double *member_probs,
                struct err *e)
{
    if (n == 0 || first + n > s->batch)
        return err_set(e, ERR_INVALID, "ensemble: rows %zu..%zu of a batch of %zu", first,
                       first + n, s->batch);
    memset(out, 0, n * sizeof(*out));
    for (size_t i = 0; i < s->n; i++) {
        struct member *m = &s->mb[i];
        size_t per = (size_t)3 * m->norm.height * m->norm.width;
        struct onnx_tensor in = {
            ONNX_F32, 4, {(int64_t)n, 3, m->norm.height, m->norm.width}, m->input + first * per};
        int rc;

        m->have_out = 0;
        if ((rc = onnx_run(m->m, &in, 1, m->out, m->n_out, e)))
            return err_wrap(e, "%s", m->path);
        if (m->out[0].ndim != 2 || m->out[0].dims[0] != (int64_t)n ||
            m->out[0].dims[1] != ENS_GRADES)
            return err_set(e, ERR_INVALID, "%s: logits are not [%zu, %d]", m->path, n, ENS_GRADES);
        m->have_out = 1;
        for (size_t j = 0; j < n; j++) {
            double p[ENS_GRADES];

            if (softmax((const float *)m->out[0].data + j * ENS_GRADES, p))
                return err_set(e, ERR_INVALID, "%s: non-finite logits for image %zu", m->path, j);
            for (int k = 0; k < ENS_GRADES; k++) {
                out[j].probs[k] += m->weight * p[k];
                if (member_probs)
                    member_probs[(j * s->n + i) * ENS_GRADES + k] = p[k];
            }
        }
    }
    for (size_t j = 0; j < n; j++) {
        out[j].grade = argmax(out[j].probs);
        for (size_t i = 0; i < s->n; i++) {
            const struct member *m = &s->mb[i];
            double p[ENS_GRADES];

            softmax((const float *)m->out[0].data + j * ENS_GRADES, p); /* checked above */
            if (argmax(p) == out[j].grade)
                out[j].agreement += m->weight;
        }
    }
    return ERR_OK;
}

int ens_run(struct ens *s, const struct img *const *ims, size_t n, struct ens_result *out,
            double *member_probs, struct err *e)
{
    int rc;

    if (n == 0 || n > s->batch)
        return err_set(e, ERR_INVALID, "ensemble: %zu images for a batch of %zu", n, s->batch);
    for (size_t j = 0; j < n; j++)
        if ((rc = ens_add(s, j, ims[j], e)))
            return rc;
    return ens_forward(s, 0, n, out, member_probs, e);
}
