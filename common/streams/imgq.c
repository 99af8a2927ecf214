/* common/streams/imgq.c: image quality values, their limits and the verdict. */
#include "imgq.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The working plane's longer side is capped so that an extreme aspect
 * ratio cannot blow the buffers up (it is then squeezed, which only
 * matters for images no fundus camera makes). */
#define MAX_LONG (4 * IMGQ_SIDE)

struct imgq {
    float *src;  /* luma at the image's size */
    size_t src_cap;
    float *dst;  /* luma at the working size */
    uint8_t *in; /* field mask at the working size */
    size_t dst_cap;
    float *scratch;
    size_t scratch_cap;
};

static const char *const CHECK_NAMES[IMGQ_NCHECKS] = {
    "ok", "dark", "bright", "field", "contrast", "sharpness",
};

static const char *const VALUE_NAMES[IMGQ_NVALUES + 1] = {
    "q_sharpness", "q_mean", "q_dark_frac", "q_bright_frac", "q_contrast", "q_field", NULL,
};

const char *imgq_check_name(enum imgq_check c)
{
    return (unsigned)c < IMGQ_NCHECKS ? CHECK_NAMES[c] : "unknown";
}

const char *const *imgq_value_names(void)
{
    return VALUE_NAMES;
}

void imgq_values_array(const struct imgq_values *v, double out[IMGQ_NVALUES])
{
    out[0] = v->sharpness;
    out[1] = v->mean;
    out[2] = v->dark_frac;
    out[3] = v->bright_frac;
    out[4] = v->contrast;
    out[5] = v->field;
}

void imgq_limits_none(struct imgq_limits *l)
{
    l->min_sharpness = 0;
    l->min_mean = 0;
    l->max_mean = 255;
    l->max_dark_frac = 1;
    l->max_bright_frac = 1;
    l->min_contrast = 0;
    l->min_field = 0;
}

int imgq_open(struct imgq **out, struct err *e)
{
    *out = calloc(1, sizeof(**out));
    if (!*out)
        return err_set(e, ERR_NOMEM, "imgq: out of memory");
    return ERR_OK;
}

void imgq_close(struct imgq *q)
{
    if (!q)
        return;
    free(q->src);
    free(q->dst);
    free(q->in);
    free(q->scratch);
    free(q);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    void *n;

    if (need <= *cap)
        return 0;
    n = realloc(*p, need * elem);
    if (!n)
        return -1;
    *p = n;
    *cap = need;
    return 0;
}

static int working_size(int w, int h, int *ow, int *oh)
{
    double s = (double)IMGQ_SIDE / (w < h ? w : h);
    long W = lround(w * s), H = lround(h * s);

    *ow = (int)(W < 1 ? 1 : W > MAX_LONG ? MAX_LONG : W);
    *oh = (int)(H < 1 ? 1 : H > MAX_LONG ? MAX_LONG : H);
    return 0;
}

int imgq_measure(struct imgq *q, const struct img *im, struct imgq_values *v, struct err *e)
{
    size_t npix, nw, need_scratch, hist[256] = {0}, ndisc = 0, nfield = 0, nlap = 0;
    size_t ndark = 0, nbright = 0;
    int W, H, p95 = 0;
    double cx, cy, r2, thr, sum = 0, sum2 = 0, lsum = 0, lsum2 = 0;

    memset(v, 0, sizeof(*v));
    if (!im || !im->rgb || im->width < 1 || im->height < 1)
        return err_set(e, ERR_INVALID, "imgq: empty image");
    npix = (size_t)im->width * (size_t)im->height;
    working_size(im->width, im->height, &W, &H);
    nw = (size_t)W * (size_t)H;
    need_scratch = img_resize_scratch(im->width, im->height, 1, W, H);
    if (grow((void **)&q->src, &q->src_cap, npix, sizeof(float)) ||
        grow((void **)&q->scratch, &q->scratch_cap, need_scratch, sizeof(float)))
        return err_set(e, ERR_NOMEM, "imgq: out of memory for %dx%d", im->width, im->height);
    if (nw > q->dst_cap) {
        float *d = realloc(q->dst, nw * sizeof(float));
        uint8_t *m;

        if (!d)
            return err_set(e, ERR_NOMEM, "imgq: out of memory");
        q->dst = d;
        if (!(m = realloc(q->in, nw)))
            return err_set(e, ERR_NOMEM, "imgq: out of memory");
        q->in = m;
        q->dst_cap = nw;
    }
    for (size_t i = 0; i < npix; i++) {
        const uint8_t *p = im->rgb + 3 * i;
        q->src[i] = 0.299f * p[0] + 0.587f * p[1] + 0.114f * p[2];
    }
    if (W == im->width && H == im->height) /* the kernel at scale 1 is the identity */
        memcpy(q->dst, q->src, nw * sizeof(float));
    else
        img_resize_planes(q->src, im->width, im->height, 1, q->dst, W, H, q->scratch);

    /* the disc and its luma histogram */
    cx = (W - 1) / 2.0;
    cy = (H - 1) / 2.0;
    r2 = IMGQ_DISC * (W < H ? W : H);
    r2 *= r2;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            double dx = x - cx, dy = y - cy;
            size_t i = (size_t)y * W + x;
            float l = q->dst[i];

            q->in[i] = 0;
            if (dx * dx + dy * dy > r2)
                continue;
            q->in[i] = 1; /* in the disc; 2 below: in the field */
            l = l < 0 ? 0 : l > 255 ? 255 : l;
            hist[(int)l]++;
            ndisc++;
        }
    for (size_t c = 0, k = 0; k < 256; k++) {
        c += hist[k];
        if (c * 100 >= ndisc * 95) {
            p95 = (int)k;
            break;
        }
    }
    thr = IMGQ_FIELD_REL * p95;
    if (thr < IMGQ_FIELD_MIN)
        thr = IMGQ_FIELD_MIN;
    for (size_t i = 0; i < nw; i++) {
        double l = q->dst[i];

        if (!q->in[i] || l <= thr)
            continue;
        q->in[i] = 2;
        nfield++;
        sum += l;
        sum2 += l * l;
        ndark += l < IMGQ_DARK;
        nbright += l > IMGQ_BRIGHT;
    }
    /* Laplacian where the whole neighbourhood is field */
    for (int y = 1; y + 1 < H; y++)
        for (int x = 1; x + 1 < W; x++) {
            size_t i = (size_t)y * W + x;
            double lap;

            if (q->in[i] != 2 || q->in[i - 1] != 2 || q->in[i + 1] != 2 || q->in[i - W] != 2 ||
                q->in[i + W] != 2)
                continue;
            lap = q->dst[i - 1] + q->dst[i + 1] + q->dst[i - W] + q->dst[i + W] - 4.0 * q->dst[i];
            lsum += lap;
            lsum2 += lap * lap;
            nlap++;
        }
    if (nfield) {
        double m = sum / nfield, var = sum2 / nfield - m * m;

        v->mean = m;
        v->contrast = sqrt(var > 0 ? var : 0);
        v->dark_frac = (double)ndark / nfield;
        v->bright_frac = (double)nbright / nfield;
    } else {
        v->dark_frac = 1; /* nothing above the floor: all of it is dark */
    }
    if (nlap) {
        double m = lsum / nlap, var = lsum2 / nlap - m * m;
        v->sharpness = var > 0 ? var : 0;
    }
    v->field = ndisc ? (double)nfield / ndisc : 0;
    return ERR_OK;
}

/* !(a >= b) rather than a < b: NaN fails. */
enum imgq_check imgq_judge(const struct imgq_limits *l, const struct imgq_values *v)
{
    if (!(v->mean >= l->min_mean) || !(v->dark_frac <= l->max_dark_frac))
        return IMGQ_UNDEREXPOSED;
    if (!(v->mean <= l->max_mean) || !(v->bright_frac <= l->max_bright_frac))
        return IMGQ_OVEREXPOSED;
    if (!(v->field >= l->min_field))
        return IMGQ_FIELD;
    if (!(v->contrast >= l->min_contrast))
        return IMGQ_CONTRAST;
    if (!(v->sharpness >= l->min_sharpness))
        return IMGQ_SHARPNESS;
    return IMGQ_OK;
}

void imgq_detail(const struct imgq_limits *l, const struct imgq_values *v, enum imgq_check c,
                 char *buf, size_t cap)
{
    int n = 0;

    if (cap == 0)
        return;
    switch (c) {
    case IMGQ_UNDEREXPOSED:
        n = !(v->mean >= l->min_mean)
                ? snprintf(buf, cap, "mean %.1f < %.1f; ", v->mean, l->min_mean)
                : snprintf(buf, cap, "dark %.3f > %.3f; ", v->dark_frac, l->max_dark_frac);
        break;
    case IMGQ_OVEREXPOSED:
        n = !(v->mean <= l->max_mean)
                ? snprintf(buf, cap, "mean %.1f > %.1f; ", v->mean, l->max_mean)
                : snprintf(buf, cap, "bright %.3f > %.3f; ", v->bright_frac, l->max_bright_frac);
        break;
    case IMGQ_FIELD:
        n = snprintf(buf, cap, "field %.3f < %.3f; ", v->field, l->min_field);
        break;
    case IMGQ_CONTRAST:
        n = snprintf(buf, cap, "contrast %.2f < %.2f; ", v->contrast, l->min_contrast);
        break;
    case IMGQ_SHARPNESS:
        n = snprintf(buf, cap, "sharpness %.2f < %.2f; ", v->sharpness, l->min_sharpness);
        break;
    default:
        buf[0] = 0;
        break;
    }
    if (n < 0 || (size_t)n >= cap)
        return;
    snprintf(buf + n, cap - (size_t)n,
             "sharpness=%.2f mean=%.1f dark=%.3f bright=%.3f contrast=%.2f field=%.3f",
             v->sharpness, v->mean, v->dark_frac, v->bright_frac, v->contrast, v->field);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted s[n]. */
static double pct(const double *s, size_t n, double p)
{
    size_t k = (size_t)ceil(p / 100.0 * n);
    return s[k ? k - 1 : 0];
}

int imgq_limits_from(const struct imgq_values *v, size_t n, struct imgq_limits *l,
                     struct err *e)
{
    double *col, lo[IMGQ_NVALUES], hi[IMGQ_NVALUES];

    if (n < 10)
        return err_set(e, ERR_INVALID, "imgq: %zu image(s) in the baseline, at least 10 needed",
                       n);
    if (!(col = malloc(n * sizeof(*col))))
        return err_set(e, ERR_NOMEM, "imgq: out of memory");
    for (int k = 0; k < IMGQ_NVALUES; k++) {
        for (size_t i = 0; i < n; i++) {
            double a[IMGQ_NVALUES];

            imgq_values_array(&v[i], a);
            if (!isfinite(a[k])) {
                free(col);
                return err_set(e, ERR_INVALID, "imgq: %s of baseline image %zu is not finite",
                               VALUE_NAMES[k], i);
            }
            col[i] = a[k];
        }
        qsort(col, n, sizeof(*col), cmp_double);
        lo[k] = pct(col, n, 1);
        hi[k] = pct(col, n, 99);
    }
    free(col);
    l->min_sharpness = 0.5 * lo[0];
    l->min_mean = 0.5 * lo[1];
    l->max_mean = hi[1] + 0.5 * (255.0 - hi[1]);
    l->max_dark_frac = fmin(1.0, hi[2] + 0.2);
    l->max_bright_frac = fmin(1.0, hi[3] + 0.2);
    l->min_contrast = 0.5 * lo[4];
    l->min_field = 0.85 * lo[5];
    return ERR_OK;
}

/* name, offset, bounds: one table for saving and loading. */
static const struct {
    const char *name;
    size_t off;
    double min, max;
} FIELDS[] = {
    {"min_sharpness", offsetof(struct imgq_limits, min_sharpness), 0, 1e9},
    {"min_mean", offsetof(struct imgq_limits, min_mean), 0, 255},
    {"max_mean", offsetof(struct imgq_limits, max_mean), 0, 255},
    {"max_dark_frac", offsetof(struct imgq_limits, max_dark_frac), 0, 1},
    {"max_bright_frac", offsetof(struct imgq_limits, max_bright_frac), 0, 1},
    {"min_contrast", offsetof(struct imgq_limits, min_contrast), 0, 255},
    {"min_field", offsetof(struct imgq_limits, min_field), 0, 1},
};
#define NFIELDS (sizeof(FIELDS) / sizeof(FIELDS[0]))

int imgq_limits_save(const struct imgq_limits *l, size_t n_images, const char *path,
                     struct err *e)
{
    json_t *root = json_object(), *lim = json_object();
    char tmp[4096];
    int rc = ERR_OK;

    if (!root || !lim) {
        json_decref(root);
        json_decref(lim);
        return err_set(e, ERR_NOMEM, "imgq: out of memory");
    }
    json_object_set_new(root, "version", json_integer(1));
    json_object_set_new(root, "images", json_integer((json_int_t)n_images));
    for (size_t k = 0; k < NFIELDS; k++)
        json_object_set_new(lim, FIELDS[k].name,
                            json_real(*(const double *)((const char *)l + FIELDS[k].off)));
    json_object_set_new(root, "limits", lim);
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= sizeof(tmp)) {
        json_decref(root);
        return err_set(e, ERR_CONFIG, "imgq: path too long: %.200s", path);
    }
    if (json_dump_file(root, tmp, JSON_INDENT(2) | JSON_SORT_KEYS) != 0)
        rc = err_set(e, ERR_IO, "imgq: cannot write %s", tmp);
    else if (rename(tmp, path) != 0)
        rc = err_set(e, ERR_IO, "imgq: rename to %s: %s", path, strerror(errno));
    if (rc)
        unlink(tmp);
    json_decref(root);
    return rc;
}

int imgq_limits_load(struct imgq_limits *l, const char *path, struct err *e)
{
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je), *lim;
    struct imgq_limits t;
    int rc = ERR_OK;

    if (!root)
        return err_set(e, ERR_CONFIG, "imgq: %s:%d: %s", path, je.line, je.text);
    lim = json_object_get(root, "limits");
    if (json_integer_value(json_object_get(root, "version")) != 1 || !json_is_object(lim)) {
        rc = err_set(e, ERR_CONFIG, "imgq: %s: not a version 1 quality limits file", path);
        goto out;
    }
    for (size_t k = 0; k < NFIELDS; k++) {
        json_t *x = json_object_get(lim, FIELDS[k].name);
        double d = json_number_value(x);

        if (!json_is_number(x) || !isfinite(d) || d < FIELDS[k].min || d > FIELDS[k].max) {
            rc = err_set(e, ERR_CONFIG, "imgq: %s: limits.%s missing or outside %g..%g", path,
                         FIELDS[k].name, FIELDS[k].min, FIELDS[k].max);
            goto out;
        }
        *(double *)((char *)&t + FIELDS[k].off) = d;
    }
    if (t.min_mean > t.max_mean) {
        rc = err_set(e, ERR_CONFIG, "imgq: %s: limits.min_mean %g > max_mean %g", path,
                     t.min_mean, t.max_mean);
        goto out;
    }
    *l = t;
out:
    json_decref(root);
    return rc;
}
