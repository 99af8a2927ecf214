/* ONNX kernels with arithmetic weight: Conv (im2col + OpenBLAS sgemm, or a
 * direct loop for depthwise), BatchNormalization, pools, Gemm, MatMul and
 * GRU. Layouts are ONNX's (NCHW; GRU [seq, batch, features]). BLAS
 * dimensions are checked before each call.
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "onnx_ops.h"

/* ---- Conv ---- */

#define LIM 65536 /* bound on kernel, stride, dilation, pad: no overflow below */

/* Spatial attributes shared by Conv and the pools. */
static int spatial_attrs(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e)
{
    int k, s, d, pd;

    if (onnx_attr_s_is(p, "auto_pad", "NOTSET") == 0 && onnx_attr_s_is(p, "auto_pad", "VALID") == 0)
        return err_set(e, ERR_CONFIG, "auto_pad SAME_UPPER/SAME_LOWER is not supported");
    k = onnx_attr_ints(p, "kernel_shape", n->a.kernel, 2, e);
    s = onnx_attr_ints(p, "strides", n->a.strides, 2, e);
    d = onnx_attr_ints(p, "dilations", n->a.dilations, 2, e);
    pd = onnx_attr_ints(p, "pads", n->a.pads, 4, e);
    if (k == -2 || s == -2 || d == -2 || pd == -2)
        return err_set(e, ERR_CONFIG, "only 2-D (NCHW) convolutions and pools are supported");
    if (k >= 0 && k != 2)
        return err_set(e, ERR_CONFIG, "kernel_shape has %d dims (2-D only)", k);
    n->a.has_kernel = k == 2;
    if (s < 0)
        n->a.strides[0] = n->a.strides[1] = 1;
    if (d < 0)
        n->a.dilations[0] = n->a.dilations[1] = 1;
    if (pd < 0)
        memset(n->a.pads, 0, sizeof(n->a.pads));
    if ((s >= 0 && s != 2) || (d >= 0 && d != 2) || (pd >= 0 && pd != 4))
        return err_set(e, ERR_CONFIG, "strides, dilations, pads must be 2-D");
    for (int i = 0; i < 2; i++)
        if (n->a.strides[i] < 1 || n->a.dilations[i] < 1 || n->a.pads[i] < 0 ||
            n->a.pads[i + 2] < 0 || (n->a.has_kernel && n->a.kernel[i] < 1) ||
            n->a.strides[i] > LIM || n->a.dilations[i] > LIM || n->a.pads[i] > LIM ||
            n->a.pads[i + 2] > LIM || n->a.kernel[i] > LIM)
            return err_set(e, ERR_CONFIG, "kernel, strides, dilations must be 1..%d, pads 0..%d",
                           LIM, LIM);
    return ERR_OK;
}

int onnx_p_conv(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e)
{
    if (onnx_attr_known(p, "auto_pad\0dilations\0group\0kernel_shape\0pads\0strides\0", e))
        return e->code;
    n->a.group = onnx_attr_i(p, "group", 1);
    if (n->a.group < 1)
        return err_set(e, ERR_CONFIG, "group %lld", (long long)n->a.group);
    return spatial_attrs(n, p, e);
}

/* Geometry of one 2-D window op. */
struct geo {
    int64_t n, c, h, w; /* input */
    int64_t m, oh, ow;  /* output channels, size */
    int64_t kh, kw, sh, sw, dh, dw, pt, pl;
};

static int out_size(int64_t in, int64_t pad0, int64_t pad1, int64_t k, int64_t s, int64_t d,
                    int ceil_mode, int64_t *out)
{
    int64_t span = in + pad0 + pad1 - (k - 1) * d - 1;

    if (span < 0)
        return -1;
    *out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
    /* torch: in ceil mode the last window must start inside the input or
     * the left padding */
    if (ceil_mode && (*out - 1) * s >= in + pad0)
        (*out)--;
    return 0;
}

static int window_geo(const struct onnx_node *n, const struct onnx_tensor *x, int64_t kh,
                      int64_t kw, int ceil_mode, struct geo *g, struct err *e)
{
    if (x->ndim != 4 || x->dtype != ONNX_F32)
        return err_set(e, ERR_INVALID, "input must be float32 NCHW (got %d dims)", x->ndim);
    *g = (struct geo){x->dims[0],
                      x->dims[1],
                      x->dims[2],
                      x->dims[3],
                      x->dims[1],
                      0,
                      0,
                      kh,
                      kw,
                      n->a.strides[0],
                      n->a.strides[1],
                      n->a.dilations[0],
                      n->a.dilations[1],
                      n->a.pads[0],
                      n->a.pads[1]};
    if (out_size(g->h, n->a.pads[0], n->a.pads[2], kh, g->sh, g->dh, ceil_mode, &g->oh) ||
        out_size(g->w, n->a.pads[1], n->a.pads[3], kw, g->sw, g->dw, ceil_mode, &g->ow))
        return err_set(e, ERR_INVALID, "kernel %lldx%lld larger than the padded %lldx%lld input",
                       (long long)kh, (long long)kw, (long long)g->h, (long long)g->w);
    return ERR_OK;
}

/* Output columns ox whose input column ox*s - pad + off lies in [0, w). */
static void valid_range(int64_t w, int64_t ow, int64_t s, int64_t pad, int64_t off, int64_t *lo,
                        int64_t *hi)
{
    int64_t a = pad - off;         /* ox*s >= a */
    int64_t b = w - 1 + pad - off; /* ox*s <= b */

    *lo = a <= 0 ? 0 : (a + s - 1) / s;
    *hi = b < 0 ? 0 : b / s + 1;
    if (*hi > ow)
        *hi = ow;
    if (*lo > *hi)
        *lo = *hi;
}

/* col[(c*kh + ky)*kw + kx][oy*ow + ox] = x[c][iy][ix] (0 in the padding). */
static void im2col(const float *x, int64_t c, const struct geo *g, float *col)
{
    int64_t hw = g->oh * g->ow;

    for (int64_t ch = 0; ch < c; ch++)
        for (int64_t ky = 0; ky < g->kh; ky++)
            for (int64_t kx = 0; kx < g->kw; kx++) {
                float *row = col + ((ch * g->kh + ky) * g->kw + kx) * hw;
                int64_t lo, hi;
                valid_range(g->w, g->ow, g->sw, g->pl, kx * g->dw, &lo, &hi);
                for (int64_t oy = 0; oy < g->oh; oy++) {
                    int64_t iy = oy * g->sh - g->pt + ky * g->dh;
                    float *r = row + oy * g->ow;
                    const float *src;
                    if (iy < 0 || iy >= g->h) {
                        memset(r, 0, (size_t)g->ow * sizeof(float));
                        continue;
                    }
                    src = x + (ch * g->h + iy) * g->w - g->pl + kx * g->dw;
                    memset(r, 0, (size_t)lo * sizeof(float));
                    if (g->sw == 1)
                        memcpy(r + lo, src + lo, (size_t)(hi - lo) * sizeof(float));
                    else
                        for (int64_t ox = lo; ox < hi; ox++)
                            r[ox] = src[ox * g->sw];
                    memset(r + hi, 0, (size_t)(g->ow - hi) * sizeof(float));
                }
            }
}

struct act_job {
    const struct onnx_node *n;
    float *y;
    const float *bias;
    int64_t m, hw;
};

/* Bias and fused activation over output planes [pb, pe). */
static void act_planes(void *arg, int64_t pb, int64_t pe, int tid)
{
    const struct act_job *j = arg;

    (void)tid;
    for (int64_t p = pb; p < pe; p++) {
        float *r = j->y + p * j->hw;
        if (j->bias)
            for (int64_t i = 0; i < j->hw; i++)
                r[i] += j->bias[p % j->m];
        onnx_activate(j->n->a.act, r, (size_t)j->hw, j->n->a.act_a, j->n->a.act_b);
    }
}

static void bias_act_all(const struct onnx_model *m, const struct onnx_node *n, float *y,
                         const float *bias, const struct geo *g)
{
    struct act_job j = {n, y, bias, g->m, g->oh * g->ow};

    if (bias || n->a.act != ACT_NONE)
        onnx_parallel(m, act_planes, &j, g->n * g->m);
}

#define DW_LANES ONNX_LANES /* output columns per register block */
typedef onnx_v16f v16f;

static inline __attribute__((always_inline)) void load_taps(v16f *out, const float *s,
                                                            int64_t stride)
{
    v16f v, hi;

    if (stride == 1) {
        memcpy(&v, s, sizeof(v));
    } else if (stride == 2) {
        memcpy(&v, s, sizeof(v));
        memcpy(&hi, s + DW_LANES, sizeof(hi));
        v = __builtin_shufflevector(v, hi, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28,
                                    30);
    } else {
        for (int i = 0; i < DW_LANES; i++)
            v[i] = s[i * stride];
    }
    *out = v;
}

/* One output row of a depthwise channel from its zero-padded plane P (row
 * stride wp): blocks of DW_LANES columns accumulate every tap in a register.
 * Columns past ow are computed and dropped (the plane has slack after it
 * for their reads). */
ONNX_CLONES static void dw_row(const struct geo *g, const float *P, int64_t wp, const float *wc,
                               float b, int64_t oy, float *r)
{
    for (int64_t ox0 = 0; ox0 < g->ow; ox0 += DW_LANES) {
        v16f acc = (v16f){0} + b;
        int64_t len = g->ow - ox0 < DW_LANES ? g->ow - ox0 : DW_LANES;
        for (int64_t ky = 0; ky < g->kh; ky++) {
            const float *row = P + (oy * g->sh + ky * g->dh) * wp + ox0 * g->sw;
            for (int64_t kx = 0; kx < g->kw; kx++) {
                v16f taps;
                load_taps(&taps, row + kx * g->dw, g->sw);
                acc += wc[ky * g->kw + kx] * taps;
            }
        }
        memcpy(r + ox0, &acc, (size_t)len * sizeof(float));
    }
}

struct dw_job {
    const struct onnx_node *n;
    const struct geo *g;
    const float *x, *w, *b;
    float *y;
    float *pad;            /* one padded plane (+ slack) per thread */
    int64_t hp, wp, plane; /* padded height, width; floats per thread */
};

/* The zero-padded copy of one input plane. */
static void pad_plane(const struct geo *g, const float *xc, int64_t hp, int64_t wp, float *P)
{
    memset(P, 0, (size_t)(g->pt * wp) * sizeof(float));
    for (int64_t iy = 0; iy < g->h; iy++) {
        float *d = P + (g->pt + iy) * wp;
        memset(d, 0, (size_t)g->pl * sizeof(float));
        memcpy(d + g->pl, xc + iy * g->w, (size_t)g->w * sizeof(float));
        memset(d + g->pl + g->w, 0, (size_t)(wp - g->pl - g->w) * sizeof(float));
    }
    memset(P + (g->pt + g->h) * wp, 0, (size_t)((hp - g->pt - g->h) * wp) * sizeof(float));
}

/* Planes [pb, pe) of a depthwise conv (plane = image * channels + c). */
static void dw_planes(void *arg, int64_t pb, int64_t pe, int tid)
{
    const struct dw_job *j = arg;
    const struct geo *g = j->g;
    int64_t hw = g->oh * g->ow;
    float *P = j->pad + tid * j->plane;

    for (int64_t p = pb; p < pe; p++) {
        int64_t c = p % g->c;
        const float *wc = j->w + c * g->kh * g->kw;
        float *yc = j->y + p * hw;
        pad_plane(g, j->x + p * g->h * g->w, j->hp, j->wp, P);
        for (int64_t oy = 0; oy < g->oh; oy++) {
            dw_row(g, P, j->wp, wc, j->b ? j->b[c] : 0.0f, oy, yc + oy * g->ow);
            onnx_activate(j->n->a.act, yc + oy * g->ow, (size_t)g->ow, j->n->a.act_a,
                          j->n->a.act_b);
        }
    }
}

/* A depthwise conv (group == channels == outputs) over the whole batch,
 * planes split among the threads. The padded plane makes the taps branch-
 * free; its bottom rows cover every window (hp >= (oh-1)*sh + (kh-1)*dh + 1). */
static int depthwise(struct onnx_model *m, const struct onnx_node *n, const float *x,
                     const float *w, const float *b, const struct geo *g, float *y, struct err *e)
{
    struct dw_job j = {n, g, x, w, b, y, NULL, 0, 0, 0};
    int64_t hneed = (g->oh - 1) * g->sh + (g->kh - 1) * g->dh + 1;
    int64_t wneed = (g->ow - 1) * g->sw + (g->kw - 1) * g->dw + 1;

    j.hp = g->pt + g->h > hneed ? g->pt + g->h : hneed;
    j.wp = g->pl + g->w > wneed ? g->pl + g->w : wneed;
    j.plane = j.hp * j.wp + 2 * DW_LANES * (g->sw > 2 ? g->sw : 2); /* load_taps overreach */
    j.pad = onnx_scratch(m, (size_t)(j.plane * (m->threads > 0 ? m->threads : 1)), e);
    if (!j.pad)
        return e->code;
    onnx_parallel(m, dw_planes, &j, g->n * g->c);
    return ERR_OK;
}

static int conv_check(const struct onnx_node *n, const struct onnx_tensor *x,
                      const struct onnx_tensor *w, const struct onnx_tensor *b, struct err *e)
{
    if (w->ndim != 4 || w->dtype != ONNX_F32 || x->ndim != 4)
        return err_set(e, ERR_INVALID, "2-D float32 convolution expected (X %d dims, W %d dims)",
                       x->ndim, w->ndim);
    if (x->dims[1] != w->dims[1] * n->a.group || w->dims[0] % n->a.group)
        return err_set(e, ERR_INVALID, "X has %lld channels, W %lldx%lld, group %lld",
                       (long long)x->dims[1], (long long)w->dims[0], (long long)w->dims[1],
                       (long long)n->a.group);
    if (n->a.has_kernel && (n->a.kernel[0] != w->dims[2] || n->a.kernel[1] != w->dims[3]))
        return err_set(e, ERR_INVALID, "kernel_shape differs from W");
    if (b && (b->dtype != ONNX_F32 || b->ndim != 1 || b->dims[0] != w->dims[0]))
        return err_set(e, ERR_INVALID, "B must be float32 [%lld]", (long long)w->dims[0]);
    return ERR_OK;
}

/* Groups of one image through sgemm: Y_g[M/g, OH*OW] = W_g[M/g, K] col_g[K, OH*OW]. */
static int conv_gemm(struct onnx_model *m, const struct onnx_node *n, const float *x,
                     const float *w, const struct geo *g, float *y, struct err *e)
{
    int64_t grp = n->a.group, cg = g->c / grp, mg = g->m / grp, k = cg * g->kh * g->kw;
    int64_t hw = g->oh * g->ow;
    int direct = g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->pt == 0 && g->pl == 0 &&
                 n->a.pads[2] == 0 && n->a.pads[3] == 0;
    float *col = direct ? NULL : onnx_scratch(m, (size_t)(k * hw), e);

    if (!direct && !col)
        return e->code;
    if (k > INT32_MAX || hw > INT32_MAX || mg > INT32_MAX)
        return err_set(e, ERR_INVALID, "convolution too large for BLAS");
    for (int64_t gi = 0; gi < grp; gi++) {
        const float *xg = x + gi * cg * g->h * g->w;
        if (!direct)
            im2col(xg, cg, g, col);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)mg, (int)hw, (int)k, 1.0f,
                    w + gi * mg * k, (int)k, direct ? xg : col, (int)hw, 0.0f, y + gi * mg * hw,
                    (int)hw);
    }
    return ERR_OK;
}

int onnx_k_conv(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    const struct onnx_tensor *x = onnx_in(m, n, 0), *w = onnx_in(m, n, 1), *b = onnx_in(m, n, 2);
    struct geo g = {0};
    int64_t dims[4];
    float *y;

    if (conv_check(n, x, w, b, e) || window_geo(n, x, w->dims[2], w->dims[3], 0, &g, e))
        return e->code;
    g.m = w->dims[0];
    dims[0] = g.n;
    dims[1] = g.m;
    dims[2] = g.oh;
    dims[3] = g.ow;
    y = onnx_out(m, n, 0, ONNX_F32, 4, dims, e);
    if (!y)
        return e->code;
    if (n->a.group == g.c && g.m == g.c)
        return depthwise(m, n, x->data, w->data, b ? b->data : NULL, &g, y, e);
    for (int64_t i = 0; i < g.n; i++) {
        const float *xi = (const float *)x->data + i * g.c * g.h * g.w;
        float *yi = y + i * g.m * g.oh * g.ow;
        if (conv_gemm(m, n, xi, w->data, &g, yi, e))
            return e->code;
    }
    bias_act_all(m, n, y, b ? b->data : NULL, &g);
    return ERR_OK;
}

/* ---- BatchNormalization (inference) ---- */

int onnx_p_batchnorm(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e)
{
    if (onnx_attr_known(p, "epsilon\0momentum\0training_mode\0", e))
        return e->code;
    if (onnx_attr_i(p, "training_mode", 0) != 0)
        return err_set(e, ERR_CONFIG, "training_mode=1 (export the model in eval mode)");
    n->a.epsilon = onnx_attr_f(p, "epsilon", 1e-5f);
    return ERR_OK;
}

int onnx_k_batchnorm(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    const struct onnx_tensor *x = onnx_in(m, n, 0);
    const float *par[4];
    int64_t c, inner = 1;
    float *y;

    if (x->dtype != ONNX_F32 || x->ndim < 2)
        return err_set(e, ERR_INVALID, "float32 input of rank >= 2 expected");
    c = x->dims[1];
    for (int k = 0; k < 4; k++) {
        const struct onnx_tensor *t = onnx_in(m, n, k + 1);
        if (t->dtype != ONNX_F32 || t->ndim != 1 || t->dims[0] != c)
            return err_set(e, ERR_INVALID, "input %d must be float32 [%lld]", k + 1, (long long)c);
        par[k] = t->data;
    }
    for (int i = 2; i < x->ndim; i++)
        inner *= x->dims[i];
    y = onnx_out(m, n, 0, ONNX_F32, x->ndim, x->dims, e);
    if (!y)
        return e->code;
    for (int64_t i = 0; i < x->dims[0]; i++)
        for (int64_t j = 0; j < c; j++) {
            float s = par[0][j] / sqrtf(par[3][j] + n->a.epsilon);
            float t = par[1][j] - par[2][j] * s;
            const float *src = (const float *)x->data + (i * c + j) * inner;
            float *dst = y + (i * c + j) * inner;
            for (int64_t k = 0; k < inner; k++)
                dst[k] = src[k] * s + t;
        }
    return ERR_OK;
}

/* ---- pools ---- */

int onnx_p_pool(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e)
{
    int max = strcmp(n->op, "MaxPool") == 0;

    if (onnx_attr_known(p,
                        max ? "auto_pad\0ceil_mode\0dilations\0kernel_shape\0pads\0strides\0"
                              "storage_order\0"
                            : "auto_pad\0ceil_mode\0count_include_pad\0kernel_shape\0pads\0"
                              "strides\0",
                        e))
        return e->code;
    if (onnx_attr_i(p, "storage_order", 0) != 0)
        return err_set(e, ERR_CONFIG, "storage_order=1 is not supported");
    if (spatial_attrs(n, p, e))
        return e->code;
    if (!n->a.has_kernel)
        return err_set(e, ERR_CONFIG, "kernel_shape is required");
    n->a.ceil_mode = (int)onnx_attr_i(p, "ceil_mode", 0);
    n->a.count_include_pad = (int)onnx_attr_i(p, "count_include_pad", 0);
    return ERR_OK;
}

static int run_pool(struct onnx_model *m, struct onnx_node *n, int max, struct err *e)
{
    const struct onnx_tensor *x = onnx_in(m, n, 0);
    struct geo g = {0};
    int64_t dims[4];
    float *y;

    if (window_geo(n, x, n->a.kernel[0], n->a.kernel[1], n->a.ceil_mode, &g, e))
        return e->code;
    memcpy(dims, (int64_t[]){g.n, g.c, g.oh, g.ow}, sizeof(dims));
    y = onnx_out(m, n, 0, ONNX_F32, 4, dims, e);
    if (!y)
        return e->code;
    for (int64_t p = 0; p < g.n * g.c; p++) {
        const float *xc = (const float *)x->data + p * g.h * g.w;
        for (int64_t oy = 0; oy < g.oh; oy++)
            for (int64_t ox = 0; ox < g.ow; ox++) {
                int64_t y0 = oy * g.sh - g.pt, x0 = ox * g.sw - g.pl, cnt = 0;
                int64_t y1 = y0 + (g.kh - 1) * g.dh + 1, x1 = x0 + (g.kw - 1) * g.dw + 1;
                float acc = max ? -INFINITY : 0.0f;
                for (int64_t iy = y0; iy < y1; iy += g.dh)
                    for (int64_t ix = x0; ix < x1; ix += g.dw) {
                        if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w)
                            continue;
                        float v = xc[iy * g.w + ix];
                        acc = max ? fmaxf(acc, v) : acc + v;
                        cnt++;
                    }
                if (!max) {
                    /* torch: padded positions count, positions past the padding do not */
                    int64_t ye = y1 < g.h + n->a.pads[2] ? y1 : g.h + n->a.pads[2];
                    int64_t xe = x1 < g.w + n->a.pads[3] ? x1 : g.w + n->a.pads[3];
                    int64_t div = n->a.count_include_pad ? (ye - y0) * (xe - x0) : cnt;
                    acc = div > 0 ? acc / (float)div : 0.0f;
                }
                y[(p * g.oh + oy) * g.ow + ox] = acc;
            }
    }
    return ERR_OK;
}

int onnx_k_maxpool(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    return run_pool(m, n, 1, e);
}

int onnx_k_avgpool(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    return run_pool(m, n, 0, e);
}

/* Sum of n floats: 16 lanes of float partial sums (each adds at most
 * n/16 terms), then the lanes and the tail in double. */
ONNX_CLONES static double plane_sum(const float *x, int64_t n)
{
    v16f acc = {0}, v;
    double s = 0;
    int64_t i = 0;

    for (; i + DW_LANES <= n; i += DW_LANES) {
        memcpy(&v, x + i, sizeof(v));
        acc += v;
    }
    for (int k = 0; k < DW_LANES; k++)
        s += acc[k];
    for (; i < n; i++)
        s += x[i];
    return s;
}

int onnx_k_gap(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    const struct onnx_tensor *x = onnx_in(m, n, 0);
    int64_t dims[ONNX_MAX_DIMS], inner = 1, planes;
    float *y;

    if (x->dtype != ONNX_F32 || x->ndim < 3)
        return err_set(e, ERR_INVALID, "float32 input of rank >= 3 expected");
    for (int i = 0; i < x->ndim; i++) {
        dims[i] = i < 2 ? x->dims[i] : 1;
        inner *= i < 2 ? 1 : x->dims[i];
    }
    y = onnx_out(m, n, 0, ONNX_F32, x->ndim, dims, e);
    if (!y)
        return e->code;
    planes = x->dims[0] * x->dims[1];
    for (int64_t p = 0; p < planes; p++)
        y[p] = inner ? (float)(plane_sum((const float *)x->data + p * inner, inner) / (double)inner)
                     : 0.0f;
    return ERR_OK;
}

/* ---- Gemm, MatMul ---- */

int onnx_p_gemm(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e)
{
    if (onnx_attr_known(p, "alpha\0beta\0transA\0transB\0", e))
        return e->code;
    n->a.alpha = onnx_attr_f(p, "alpha", 1.0f);
    n->a.beta = onnx_attr_f(p, "beta", 1.0f);
    n->a.trans_a = (int)onnx_attr_i(p, "transA", 0);
    n->a.trans_b = (int)onnx_attr_i(p, "transB", 0);
    return ERR_OK;
}

/* out[M,N] = beta * C broadcast (unidirectionally) to [M,N]. */
static int gemm_c(const struct onnx_tensor *c, float beta, int64_t mm, int64_t nn, float *out,
                  struct err *e)
{
    int64_t cm, cn;

    if (!c) {
        memset(out, 0, (size_t)(mm * nn) * sizeof(float));
        return ERR_OK;
    }
    cm = c->ndim == 2 ? c->dims[0] : 1;
    cn = c->ndim >= 1 ? c->dims[c->ndim - 1] : 1;
    if (c->dtype != ONNX_F32 || c->ndim > 2 || (cm != 1 && cm != mm) || (cn != 1 && cn != nn))
        return err_set(e, ERR_INVALID, "C does not broadcast to [%lld, %lld]", (long long)mm,
                       (long long)nn);
    for (int64_t i = 0; i < mm; i++)
        for (int64_t j = 0; j < nn; j++)
            out[i * nn + j] =
                beta * ((const float *)c->data)[(cm == 1 ? 0 : i) * cn + (cn == 1 ? 0 : j)];
    return ERR_OK;
}

int onnx_k_gemm(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    const struct onnx_tensor *a = onnx_in(m, n, 0), *b = onnx_in(m, n, 1), *c = onnx_in(m, n, 2);
    int64_t mm, kk, nn, kb, dims[2];
    float *y;

    if (a->ndim != 2 || b->ndim != 2 || a->dtype != ONNX_F32 || b->dtype != ONNX_F32)
        return err_set(e, ERR_INVALID, "A and B must be float32 matrices");
    mm = a->dims[n->a.trans_a ? 1 : 0];
    kk = a->dims[n->a.trans_a ? 0 : 1];
    kb = b->dims[n->a.trans_b ? 1 : 0];
    nn = b->dims[n->a.trans_b ? 0 : 1];
    if (kk != kb || mm > INT32_MAX || nn > INT32_MAX || kk > INT32_MAX)
        return err_set(e, ERR_INVALID, "A is %lldx%lld, B %lldx%lld", (long long)a->dims[0],
                       (long long)a->dims[1], (long long)b->dims[0], (long long)b->dims[1]);
    dims[0] = mm;
    dims[1] = nn;
    y = onnx_out(m, n, 0, ONNX_F32, 2, dims, e);
    if (!y || gemm_c(c, n->a.beta, mm, nn, y, e))
        return e->code;
    if (mm && nn && kk)
        cblas_sgemm(CblasRowMajor, n->a.trans_a ? CblasTrans : CblasNoTrans,
                    n->a.trans_b ? CblasTrans : CblasNoTrans, (int)mm, (int)nn, (int)kk, n->a.alpha,
                    a->data, (int)a->dims[1], b->data, (int)b->dims[1], 1.0f, y, (int)nn);
    onnx_activate(n->a.act, y, (size_t)(mm * nn), n->a.act_a, n->a.act_b);
    return ERR_OK;
}

/* Matrix index of batch i in t (batch dims of rank t->ndim, aligned right
 * to the broadcast batch shape bd of rank nd; broadcast dims repeat). */
static int64_t batch_offset(const struct onnx_tensor *t, int nd, const int64_t *bd, int64_t i)
{
    int64_t off = 0, stride = 1;

    for (int d = nd - 1; d >= 0; d--) {
        int64_t idx = i % bd[d];
        int dt = d - (nd - t->ndim);
        i /= bd[d];
        if (dt >= 0) {
            off += (t->dims[dt] == 1 ? 0 : idx) * stride;
            stride *= t->dims[dt];
        }
    }
    return off;
}

/* 1-D operands promoted as NumPy does: a [K] -> [1, K], b [K] -> [K, 1]. */
static void promote_1d(struct onnx_tensor *a, struct onnx_tensor *b)
{
    if (a->ndim == 1) {
        a->dims[1] = a->dims[0];
        a->dims[0] = 1;
        a->ndim = 2;
    }
    if (b->ndim == 1) {
        b->dims[1] = 1;
        b->ndim = 2;
    }
}

/* MatMul with NumPy semantics: 1-D operands promoted, batch dims broadcast. */
int onnx_k_matmul(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    struct onnx_tensor a = *onnx_in(m, n, 0), b = *onnx_in(m, n, 1), ab, bb;
    int a1 = a.ndim == 1, b1 = b.ndim == 1, nd, od;
    int64_t bd[ONNX_MAX_DIMS], dims[ONNX_MAX_DIMS], mm, kk, nn;
    float *y;

    if (a.dtype != ONNX_F32 || b.dtype != ONNX_F32 || a.ndim < 1 || b.ndim < 1)
        return err_set(e, ERR_INVALID, "float32 operands of rank >= 1 expected");
    promote_1d(&a, &b);
    mm = a.dims[a.ndim - 2];
    kk = a.dims[a.ndim - 1];
    nn = b.dims[b.ndim - 1];
    if (b.dims[b.ndim - 2] != kk || mm > INT32_MAX || nn > INT32_MAX || kk > INT32_MAX)
        return err_set(e, ERR_INVALID, "inner dims differ (%lld vs %lld)", (long long)kk,
                       (long long)b.dims[b.ndim - 2]);
    ab = a;
    ab.ndim -= 2;
    bb = b;
    bb.ndim -= 2;
    if (onnx_broadcast(&ab, &bb, &nd, bd, e))
        return e->code;
    memcpy(dims, bd, (size_t)nd * sizeof(int64_t));
    od = nd;
    if (!a1)
        dims[od++] = mm;
    if (!b1)
        dims[od++] = nn;
    y = onnx_out(m, n, 0, ONNX_F32, od, dims, e);
    if (!y)
        return e->code;
    for (int64_t i = 0, batch = onnx_count(nd, bd); i < batch; i++) {
        float *yi = y + i * mm * nn;
        if (!mm || !nn || !kk) {
            memset(yi, 0, (size_t)(mm * nn) * sizeof(float));
            continue;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)mm, (int)nn, (int)kk, 1.0f,
                    (const float *)a.data + batch_offset(&ab, nd, bd, i) * mm * kk, (int)kk,
                    (const float *)b.data + batch_offset(&bb, nd, bd, i) * kk * nn, (int)nn, 0.0f,
                    yi, (int)nn);
    }
    return ERR_OK;
}

/* ---- GRU ---- */

int onnx_p_gru(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e)
{
    const Onnx__AttributeProto *acts = onnx_attr(p, "activations");

    if (onnx_attr_known(p, "activations\0direction\0hidden_size\0layout\0linear_before_reset\0", e))
        return e->code;
    if (onnx_attr_i(p, "linear_before_reset", 0) != 1)
        return err_set(e, ERR_CONFIG,
                       "linear_before_reset=0 is not supported: torch.nn.GRU exports "
                       "linear_before_reset=1, and the other recurrence would give different "
                       "answers");
    if (onnx_attr_i(p, "layout", 0) != 0)
        return err_set(e, ERR_CONFIG, "layout=1 is not supported (torch exports layout=0)");
    n->a.hidden_size = onnx_attr_i(p, "hidden_size", 0);
    if (n->a.hidden_size < 1 || n->a.hidden_size > (1 << 16))
        return err_set(e, ERR_CONFIG, "hidden_size %lld", (long long)n->a.hidden_size);
    n->a.direction = onnx_attr_s_is(p, "direction", "reverse") == 1         ? 1
                     : onnx_attr_s_is(p, "direction", "bidirectional") == 1 ? 2
                                                                            : 0;
    if (onnx_attr_s_is(p, "direction", "forward") == 0 && n->a.direction == 0)
        return err_set(e, ERR_CONFIG, "unknown direction");
    for (size_t i = 0; acts && i < acts->n_strings; i++) {
        const char *want = i % 2 ? "Tanh" : "Sigmoid";
        if (acts->strings[i].len != strlen(want) ||
            memcmp(acts->strings[i].data, want, acts->strings[i].len) != 0)
            return err_set(e, ERR_CONFIG, "activations other than Sigmoid, Tanh");
    }
    if (n->n_in > 4 && n->in[4] >= 0)
        return err_set(e, ERR_CONFIG, "sequence_lens is not supported (pad or split batches)");
    return ERR_OK;
}

struct gru_dims {
    int64_t t, b, in, h, nd;
};

static int gru_check(struct onnx_model *m, struct onnx_node *n, struct gru_dims *d, struct err *e)
{
    const struct onnx_tensor *x = onnx_in(m, n, 0), *w = onnx_in(m, n, 1), *r = onnx_in(m, n, 2);
    const struct onnx_tensor *b = onnx_in(m, n, 3), *h0 = onnx_in(m, n, 5);

    memset(d, 0, sizeof(*d));
    d->nd = n->a.direction == 2 ? 2 : 1;
    d->h = n->a.hidden_size;
    if (x->ndim != 3 || x->dtype != ONNX_F32)
        return err_set(e, ERR_INVALID, "X must be float32 [seq, batch, input]");
    d->t = x->dims[0];
    d->b = x->dims[1];
    d->in = x->dims[2];
    if (w->ndim != 3 || w->dims[0] != d->nd || w->dims[1] != 3 * d->h || w->dims[2] != d->in ||
        w->dtype != ONNX_F32)
        return err_set(e, ERR_INVALID, "W must be float32 [%lld, %lld, %lld]", (long long)d->nd,
                       (long long)(3 * d->h), (long long)d->in);
    if (r->ndim != 3 || r->dims[0] != d->nd || r->dims[1] != 3 * d->h || r->dims[2] != d->h ||
        r->dtype != ONNX_F32)
        return err_set(e, ERR_INVALID, "R must be float32 [%lld, %lld, %lld]", (long long)d->nd,
                       (long long)(3 * d->h), (long long)d->h);
    if (b &&
        (b->ndim != 2 || b->dims[0] != d->nd || b->dims[1] != 6 * d->h || b->dtype != ONNX_F32))
        return err_set(e, ERR_INVALID, "B must be float32 [%lld, %lld]", (long long)d->nd,
                       (long long)(6 * d->h));
    if (h0 && (h0->ndim != 3 || h0->dims[0] != d->nd || h0->dims[1] != d->b ||
               h0->dims[2] != d->h || h0->dtype != ONNX_F32))
        return err_set(e, ERR_INVALID, "initial_h must be float32 [%lld, %lld, %lld]",
                       (long long)d->nd, (long long)d->b, (long long)d->h);
    if (d->t * d->b * 3 * d->h > INT32_MAX || d->in > INT32_MAX)
        return err_set(e, ERR_INVALID, "GRU too large");
    return ERR_OK;
}

/* One step: xw = X_t W^T + Wb (precomputed), rh = H R^T + Rb; gates z, r
 * and the candidate in tmp (3 * hs floats), each gate over a whole vector
 * at once; tanh(x) = 2 sigmoid(2x) - 1 (abs error ~1e-7). */
static void gru_step(const float *xw, const float *rh, float *h, int64_t hs, float *tmp)
{
    float *z = tmp, *r = tmp + hs, *c = tmp + 2 * hs;

    for (int64_t j = 0; j < 2 * hs; j++)
        tmp[j] = xw[j] + rh[j];
    onnx_sigmoid_vec(tmp, tmp, (size_t)(2 * hs));
    for (int64_t j = 0; j < hs; j++)
        c[j] = 2.0f * (xw[2 * hs + j] + r[j] * rh[2 * hs + j]);
    onnx_sigmoid_vec(c, c, (size_t)hs);
    for (int64_t j = 0; j < hs; j++)
        h[j] = (1.0f - z[j]) * (2.0f * c[j] - 1.0f) + z[j] * h[j];
}

/* Direction dir over the whole sequence; writes Y (if any) and leaves H. */
static void gru_dir(struct onnx_model *m, struct onnx_node *n, const struct gru_dims *d, int dir,
                    float *xw, float *rh, float *h, float *y)
{
    const float *x = onnx_in(m, n, 0)->data;
    const float *w = (const float *)onnx_in(m, n, 1)->data + dir * 3 * d->h * d->in;
    const float *r = (const float *)onnx_in(m, n, 2)->data + dir * 3 * d->h * d->h;
    const struct onnx_tensor *bt = onnx_in(m, n, 3), *h0 = onnx_in(m, n, 5);
    const float *bw = bt ? (const float *)bt->data + dir * 6 * d->h : NULL;
    int64_t g3 = 3 * d->h, tb = d->t * d->b;
    int reverse = n->a.direction == 1 || dir == 1;

    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)tb, (int)g3, (int)d->in, 1.0f, x,
                (int)d->in, w, (int)d->in, 0.0f, xw, (int)g3);
    for (int64_t i = 0; bw && i < tb; i++)
        for (int64_t j = 0; j < g3; j++)
            xw[i * g3 + j] += bw[j];
    if (h0)
        memcpy(h, (const float *)h0->data + dir * d->b * d->h, (size_t)(d->b * d->h) * 4);
    else
        memset(h, 0, (size_t)(d->b * d->h) * sizeof(float));
    for (int64_t s = 0; s < d->t; s++) {
        int64_t t = reverse ? d->t - 1 - s : s;
        for (int64_t i = 0; i < d->b; i++) {
            if (bw)
                memcpy(rh + i * g3, bw + g3, (size_t)g3 * sizeof(float));
            else
                memset(rh + i * g3, 0, (size_t)g3 * sizeof(float));
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)d->b, (int)g3, (int)d->h, 1.0f, h,
                    (int)d->h, r, (int)d->h, 1.0f, rh, (int)g3);
        for (int64_t i = 0; i < d->b; i++)
            gru_step(xw + (t * d->b + i) * g3, rh + i * g3, h + i * d->h, d->h, h + d->b * d->h);
        if (y)
            memcpy(y + ((t * d->nd + dir) * d->b) * d->h, h, (size_t)(d->b * d->h) * sizeof(float));
    }
}

int onnx_k_gru(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    struct gru_dims d;
    int64_t ydims[4], hdims[3];
    float *y = NULL, *yh = NULL, *xw, *rh, *h;

    if (gru_check(m, n, &d, e))
        return e->code;
    memcpy(ydims, (int64_t[]){d.t, d.nd, d.b, d.h}, sizeof(ydims));
    memcpy(hdims, (int64_t[]){d.nd, d.b, d.h}, sizeof(hdims));
    if (n->n_out > 0 && n->out[0] >= 0 && !(y = onnx_out(m, n, 0, ONNX_F32, 4, ydims, e)))
        return e->code;
    if (n->n_out > 1 && n->out[1] >= 0 && !(yh = onnx_out(m, n, 1, ONNX_F32, 3, hdims, e)))
        return e->code;
    /* xw [T*B, 3H], rh [B, 3H], h [B, H], gate temporaries [3H] */
    xw = onnx_scratch(m, (size_t)(d.t * d.b * 3 * d.h + d.b * 3 * d.h + d.b * d.h + 3 * d.h), e);
    if (!xw)
        return e->code;
    rh = xw + d.t * d.b * 3 * d.h;
    h = rh + d.b * 3 * d.h;
    for (int dir = 0; dir < d.nd; dir++) {
        gru_dir(m, n, &d, dir, xw, rh, h, y);
        if (yh)
            memcpy(yh + dir * d.b * d.h, h, (size_t)(d.b * d.h) * sizeof(float));
    }
    return ERR_OK;
}
