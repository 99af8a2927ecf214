/* ONNX kernels: the op table, attribute parsing, elementwise ops with NumPy
 * broadcasting; the shape/data-movement ops of torch exports are in
 * onnx_ops_data.c, Softmax and reductions in onnx_ops_reduce.c. The
 * numeric heavy ops (Conv, pools, Gemm, MatMul, GRU...) are in
 * onnx_nn.c. Semantics follow the ONNX operator docs for opset 13..17.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx_impl.h"
#include "onnx_ops.h"
#include "onnx_ops_int.h"

/* ---- attributes ---- */

static const Onnx__AttributeProto *attr(const Onnx__NodeProto *p, const char *name)
{
    for (size_t i = 0; i < p->n_attribute; i++)
        if (p->attribute[i]->name && strcmp(p->attribute[i]->name, name) == 0)
            return p->attribute[i];
    return NULL;
}

/* Refuses attributes not in the NUL-separated list known (double-NUL end):
 * an attribute we ignore could change the result. */
int onnx_attr_known(const Onnx__NodeProto *p, const char *known, struct err *e)
{
    for (size_t i = 0; i < p->n_attribute; i++) {
        const char *name = p->attribute[i]->name ? p->attribute[i]->name : "";
        const char *k = known;
        while (*k && strcmp(k, name) != 0)
            k += strlen(k) + 1;
        if (!*k)
            return err_set(e, ERR_CONFIG, "attribute '%s' is not supported", name);
    }
    return ERR_OK;
}

int64_t onnx_attr_i(const Onnx__NodeProto *p, const char *name, int64_t def)
{
    const Onnx__AttributeProto *a = attr(p, name);

    return a && a->has_i ? a->i : def;
}

float onnx_attr_f(const Onnx__NodeProto *p, const char *name, float def)
{
    const Onnx__AttributeProto *a = attr(p, name);

    return a && a->has_f ? a->f : def;
}

/* Up to max ints into out; -1 if absent, ERR_CONFIG if longer. */
int onnx_attr_ints(const Onnx__NodeProto *p, const char *name, int64_t *out, int max, struct err *e)
{
    const Onnx__AttributeProto *a = attr(p, name);

    if (!a)
        return -1;
    if (a->n_ints > (size_t)max) {
        err_set(e, ERR_CONFIG, "attribute %s has %zu values (at most %d)", name, a->n_ints, max);
        return -2;
    }
    if (a->n_ints) /* an empty list may have a NULL array (fuzzing: UBSan) */
        memcpy(out, a->ints, a->n_ints * sizeof(int64_t));
    return (int)a->n_ints;
}

/* String attribute equal to want (or absent and want is def). */
int onnx_attr_s_is(const Onnx__NodeProto *p, const char *name, const char *want)
{
    const Onnx__AttributeProto *a = attr(p, name);

    if (!a || !a->has_s)
        return -1;
    return a->s.len == strlen(want) && memcmp(a->s.data, want, a->s.len) == 0;
}

const Onnx__AttributeProto *onnx_attr(const Onnx__NodeProto *p, const char *name)
{
    return attr(p, name);
}

/* ---- shape helpers ---- */

/* Normalises axis (negative counts from the end) for a rank; -1 if out. */
int onnx_axis(int64_t axis, int rank)
{
    if (axis < -rank || axis >= rank)
        return -1;
    return (int)(axis < 0 ? axis + rank : axis);
}

/* NumPy broadcast of two shapes into out; ERR_INVALID if incompatible. */
int onnx_broadcast(const struct onnx_tensor *a, const struct onnx_tensor *b, int *nd, int64_t *out,
                   struct err *e)
{
    int n = a->ndim > b->ndim ? a->ndim : b->ndim;

    for (int i = 0; i < n; i++) {
        int ia = i - (n - a->ndim), ib = i - (n - b->ndim);
        int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return err_set(e, ERR_INVALID, "shapes do not broadcast (dim %d: %lld vs %lld)", i,
                           (long long)da, (long long)db);
        out[i] = da == 1 ? db : da;
    }
    *nd = n;
    return ERR_OK;
}

/* Element strides of t aligned right to an nd-rank output; 0 where t is
 * broadcast. */
void bstrides(const struct onnx_tensor *t, int nd, const int64_t *odims, int64_t *st)
{
    int64_t s = 1;

    for (int i = nd - 1; i >= 0; i--) {
        int it = i - (nd - t->ndim);
        int64_t d = it >= 0 ? t->dims[it] : 1;
        st[i] = (d == 1 && odims[i] != 1) ? 0 : s;
        s *= d;
    }
}

/* Merges adjacent dims that are contiguous in every operand, so that
 * [N,C,H,W] * [N,C,1,1] runs as [N*C, H*W] rows. */
static int coalesce(int nd, int64_t *dims, int64_t *sa, int64_t *sb)
{
    int k = 0;

    for (int i = 1; i < nd; i++) {
        if (sa[k] == sa[i] * dims[i] && sb[k] == sb[i] * dims[i]) {
            dims[k] *= dims[i];
            sa[k] = sa[i];
            sb[k] = sb[i];
        } else {
            k++;
            dims[k] = dims[i];
            sa[k] = sa[i];
            sb[k] = sb[i];
        }
    }
    return nd ? k + 1 : 0;
}

/* ---- elementwise binary ---- */

enum binop { B_ADD, B_SUB, B_MUL, B_DIV, B_POW };

#define ROW(EXPR)                                                                                  \
    do {                                                                                           \
        if (sa && sb)                                                                              \
            for (int64_t i = 0; i < n; i++) {                                                      \
                float x = a[i], y = b[i];                                                          \
                o[i] = (EXPR);                                                                     \
            }                                                                                      \
        else if (sa)                                                                               \
            for (int64_t i = 0; i < n; i++) {                                                      \
                float x = a[i], y = b[0];                                                          \
                o[i] = (EXPR);                                                                     \
            }                                                                                      \
        else if (sb)                                                                               \
            for (int64_t i = 0; i < n; i++) {                                                      \
                float x = a[0], y = b[i];                                                          \
                o[i] = (EXPR);                                                                     \
            }                                                                                      \
        else                                                                                       \
            for (int64_t i = 0; i < n; i++) {                                                      \
                float x = a[0], y = b[0];                                                          \
                o[i] = (EXPR);                                                                     \
            }                                                                                      \
    } while (0)

static void row_f32(enum binop op, float *o, const float *a, int64_t sa, const float *b, int64_t sb,
                    int64_t n)
{
    switch (op) {
    case B_ADD:
        ROW(x + y);
        break;
    case B_SUB:
        ROW(x - y);
        break;
    case B_MUL:
        ROW(x * y);
        break;
    case B_DIV:
        ROW(x / y);
        break;
    case B_POW:
        ROW(powf(x, y));
        break;
    }
}

static int binop_i64(enum binop op, int64_t *o, int64_t x, int64_t y, struct err *e)
{
    switch (op) {
    case B_ADD:
        *o = (int64_t)((uint64_t)x + (uint64_t)y);
        return ERR_OK;
    case B_SUB:
        *o = (int64_t)((uint64_t)x - (uint64_t)y);
        return ERR_OK;
    case B_MUL:
        *o = (int64_t)((uint64_t)x * (uint64_t)y);
        return ERR_OK;
    case B_DIV:
        if (y == 0 || (x == INT64_MIN && y == -1))
            return err_set(e, ERR_INVALID, "integer division by %lld", (long long)y);
        *o = x / y;
        return ERR_OK;
    default:
        return err_set(e, ERR_INVALID, "Pow is float32 only");
    }
}

/* Broadcast operands over nd coalesced dims cd with element strides sa, sb:
 * one call of the row kernel per step of an odometer over all dims but the
 * last. */
static int binary_rows(enum binop op, const struct onnx_tensor *a, const struct onnx_tensor *b,
                       void *out, int cn, const int64_t *cd, const int64_t *sa, const int64_t *sb,
                       struct err *e)
{
    int64_t idx[ONNX_MAX_DIMS] = {0}, len = cd[cn - 1];

    for (int64_t oi = 0, ai = 0, bi = 0;;) {
        if (a->dtype == ONNX_F32) {
            row_f32(op, (float *)out + oi, (const float *)a->data + ai, sa[cn - 1],
                    (const float *)b->data + bi, sb[cn - 1], len);
        } else {
            for (int64_t i = 0; i < len; i++)
                if (binop_i64(op, (int64_t *)out + oi + i,
                              ((const int64_t *)a->data)[ai + i * sa[cn - 1]],
                              ((const int64_t *)b->data)[bi + i * sb[cn - 1]], e))
                    return e->code;
        }
        oi += len;
        int d = cn - 2;
        for (; d >= 0; d--) {
            ai += sa[d];
            bi += sb[d];
            if (++idx[d] < cd[d])
                break;
            ai -= sa[d] * cd[d];
            bi -= sb[d] * cd[d];
            idx[d] = 0;
        }
        if (d < 0)
            return ERR_OK;
    }
}

static int run_binary(struct onnx_model *m, struct onnx_node *n, enum binop op, struct err *e)
{
    const struct onnx_tensor *a = onnx_in(m, n, 0), *b = onnx_in(m, n, 1);
    int64_t dims[ONNX_MAX_DIMS], cd[ONNX_MAX_DIMS], sa[ONNX_MAX_DIMS], sb[ONNX_MAX_DIMS];
    int nd, cn;
    void *out;

    if (a->dtype != b->dtype || a->dtype == ONNX_BOOL)
        return err_set(e, ERR_INVALID, "operands must be both float32 or both int64");
    if (onnx_broadcast(a, b, &nd, dims, e))
        return e->code;
    out = onnx_out(m, n, 0, a->dtype, nd, dims, e);
    if (!out)
        return e->code;
    if (onnx_count(nd, dims) == 0)
        return ERR_OK;
    bstrides(a, nd, dims, sa);
    bstrides(b, nd, dims, sb);
    memcpy(cd, dims, sizeof(dims));
    cn = coalesce(nd, cd, sa, sb);
    if (cn == 0) { /* scalars */
        cn = 1;
        cd[0] = 1;
        sa[0] = sb[0] = 1;
    }
    return binary_rows(op, a, b, out, cn, cd, sa, sb, e);
}

static int k_add(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    return run_binary(m, n, B_ADD, e);
}

static int k_sub(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    return run_binary(m, n, B_SUB, e);
}

static int k_mul(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    return run_binary(m, n, B_MUL, e);
}

static int k_div(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    return run_binary(m, n, B_DIV, e);
}

static int k_pow(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    return run_binary(m, n, B_POW, e);
}

/* ---- elementwise unary (float32) ---- */

enum unop {
    U_RELU,
    U_SIGMOID,
    U_TANH,
    U_ERF,
    U_SQRT,
    U_EXP,
    U_LOG,
    U_NEG,
    U_ABS,
    U_RECIP,
    U_LEAKY,
    U_CLIP,
    U_HSIG,
    U_HSWISH
};

/* min(max(x, lo), hi) as selects (fminf/fmaxf are calls that stop
 * vectorisation; NaN passes through). */
static inline float clampf(float x, float lo, float hi)
{
    x = x < lo ? lo : x;
    return x > hi ? hi : x;
}

/* expf without calls or branches, so that loops over it vectorise: Cephes'
 * reduction x = n ln2 + r and degree-5 polynomial (about 1 ulp on the
 * clamped range; below -87 the result is ~1e-38 instead of smaller). */
static inline float vexpf(float x)
{
    float n, r, y;
    int32_t bits;

    if (x != x) /* NaN in, NaN out (and no float-to-int conversion of it) */
        return x;
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    /* round to nearest by the 1.5 * 2^23 trick: no libm call, vectorises */
    n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    r = x - n * 0.693359375f + n * 2.12194440e-4f;
    y = 1.9875691500E-4f;
    y = y * r + 1.3981999507E-3f;
    y = y * r + 8.3334519073E-3f;
    y = y * r + 4.1665795894E-2f;
    y = y * r + 1.6666665459E-1f;
    y = y * r + 5.0000001201E-1f;
    y = y * r * r + r + 1.0f;
    bits = (int32_t)((uint32_t)((int32_t)n + 127) << 23);
    float scale;
    memcpy(&scale, &bits, sizeof(scale));
    return y * scale;
}

float onnx_sigmoid(float x)
{
    return 1.0f / (1.0f + vexpf(-x));
}

/* vexpf on 16 lanes; the clamp is a bitwise select so that the compiler
 * cannot split the polynomial into per-branch copies. */
static inline __attribute__((always_inline)) void vexp16(onnx_v16f *px)
{
    onnx_v16f x = *px, n, r, y, scale;
    onnx_v16i lo = x<-87.0f, hi = x> 88.0f, nan = x != x, bits;

    /* NaN lanes compute exp(0) and get their NaN back at the end */
    x = (onnx_v16f)((onnx_v16i)x & ~nan);
    x = (onnx_v16f)(((onnx_v16i)x & ~lo) | ((onnx_v16i)((onnx_v16f){0} - 87.0f) & lo));
    x = (onnx_v16f)(((onnx_v16i)x & ~hi) | ((onnx_v16i)((onnx_v16f){0} + 88.0f) & hi));
    n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    r = x - n * 0.693359375f + n * 2.12194440e-4f;
    y = r * 1.9875691500E-4f + 1.3981999507E-3f;
    y = y * r + 8.3334519073E-3f;
    y = y * r + 4.1665795894E-2f;
    y = y * r + 1.6666665459E-1f;
    y = y * r + 5.0000001201E-1f;
    y = y * r * r + r + 1.0f;
    bits = (onnx_v16i)((onnx_v16u)(__builtin_convertvector(n, onnx_v16i) + 127) << 23);
    memcpy(&scale, &bits, sizeof(scale));
    y = y * scale;
    *px = (onnx_v16f)(((onnx_v16i)y & ~nan) | ((onnx_v16i)*px & nan));
}

ONNX_CLONES static void sigmoid_loop(float *o, const float *x, size_t n)
{
    size_t i = 0;

    for (; i + ONNX_LANES <= n; i += ONNX_LANES) {
        onnx_v16f v, t;
        memcpy(&v, x + i, sizeof(v));
        t = -v;
        vexp16(&t);
        v = 1.0f / (1.0f + t);
        memcpy(o + i, &v, sizeof(v));
    }
    for (; i < n; i++)
        o[i] = 1.0f / (1.0f + vexpf(-x[i]));
}

void onnx_sigmoid_vec(float *o, const float *x, size_t n)
{
    sigmoid_loop(o, x, n);
}

ONNX_CLONES static void silu_loop(float *x, size_t n)
{
    size_t i = 0;

    for (; i + ONNX_LANES <= n; i += ONNX_LANES) {
        onnx_v16f v, t;
        memcpy(&v, x + i, sizeof(v));
        t = -v;
        vexp16(&t);
        v = v / (1.0f + t);
        memcpy(x + i, &v, sizeof(v));
    }
    for (; i < n; i++)
        x[i] = x[i] / (1.0f + vexpf(-x[i]));
}

ONNX_CLONES static void apply_unary(enum unop op, float *o, const float *x, size_t n, float p,
                                    float q)
{
    switch (op) {
    case U_RELU:
        for (size_t i = 0; i < n; i++)
            o[i] = x[i] > 0.0f ? x[i] : 0.0f;
        break;
    case U_SIGMOID:
        sigmoid_loop(o, x, n);
        break;
    case U_TANH:
        for (size_t i = 0; i < n; i++)
            o[i] = tanhf(x[i]);
        break;
    case U_ERF:
        for (size_t i = 0; i < n; i++)
            o[i] = erff(x[i]);
        break;
    case U_SQRT:
        for (size_t i = 0; i < n; i++)
            o[i] = sqrtf(x[i]);
        break;
    case U_EXP:
        for (size_t i = 0; i < n; i++)
            o[i] = expf(x[i]);
        break;
    case U_LOG:
        for (size_t i = 0; i < n; i++)
            o[i] = logf(x[i]);
        break;
    case U_NEG:
        for (size_t i = 0; i < n; i++)
            o[i] = -x[i];
        break;
    case U_ABS:
        for (size_t i = 0; i < n; i++)
            o[i] = fabsf(x[i]);
        break;
    case U_RECIP:
        for (size_t i = 0; i < n; i++)
            o[i] = 1.0f / x[i];
        break;
    case U_LEAKY:
        for (size_t i = 0; i < n; i++)
            o[i] = x[i] >= 0.0f ? x[i] : p * x[i];
        break;
    case U_CLIP:
        for (size_t i = 0; i < n; i++)
            o[i] = clampf(x[i], p, q);
        break;
    case U_HSIG:
        for (size_t i = 0; i < n; i++)
            o[i] = clampf(p * x[i] + q, 0.0f, 1.0f);
        break;
    case U_HSWISH:
        for (size_t i = 0; i < n; i++)
            o[i] = x[i] * clampf(x[i] / 6.0f + 0.5f, 0.0f, 1.0f);
        break;
    }
}

/* The fused activation of a Conv, over n contiguous values. */
void onnx_activate(int act, float *x, size_t n, float p, float q)
{
    switch (act) {
    case ACT_RELU:
        apply_unary(U_RELU, x, x, n, 0, 0);
        break;
    case ACT_CLIP:
        apply_unary(U_CLIP, x, x, n, p, q);
        break;
    case ACT_HSIG:
        apply_unary(U_HSIG, x, x, n, p, q);
        break;
    case ACT_HSWISH:
        apply_unary(U_HSWISH, x, x, n, 0, 0);
        break;
    case ACT_SIGMOID:
        apply_unary(U_SIGMOID, x, x, n, 0, 0);
        break;
    case ACT_SILU:
        silu_loop(x, n);
        break;
    default:
        break;
    }
}

static int run_unary(struct onnx_model *m, struct onnx_node *n, enum unop op, float p, float q,
                     struct err *e)
{
    const struct onnx_tensor *x = onnx_in(m, n, 0);
    float *o;

    if (x->dtype != ONNX_F32)
        return err_set(e, ERR_INVALID, "float32 input expected");
    o = onnx_out(m, n, 0, ONNX_F32, x->ndim, x->dims, e);
    if (!o)
        return e->code;
    apply_unary(op, o, x->data, onnx_numel(x), p, q);
    return ERR_OK;
}

#define UNARY(fn, op)                                                                              \
    static int fn(struct onnx_model *m, struct onnx_node *n, struct err *e)                        \
    {                                                                                              \
        return run_unary(m, n, op, n->a.alpha, n->a.beta, e);                                      \
    }
UNARY(k_relu, U_RELU)
UNARY(k_sigmoid, U_SIGMOID)
UNARY(k_tanh, U_TANH)
UNARY(k_erf, U_ERF)
UNARY(k_sqrt, U_SQRT)
UNARY(k_exp, U_EXP)
UNARY(k_log, U_LOG)
UNARY(k_neg, U_NEG)
UNARY(k_abs, U_ABS)
UNARY(k_recip, U_RECIP)
UNARY(k_leaky, U_LEAKY)
UNARY(k_hsig, U_HSIG)
UNARY(k_hswish, U_HSWISH)

static int p_alpha_beta(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e)
{
    int hsig = strcmp(n->op, "HardSigmoid") == 0;

    if (onnx_attr_known(p, "alpha\0beta\0", e))
        return e->code;
    n->a.alpha = onnx_attr_f(p, "alpha", hsig ? 0.2f : 0.01f);
    n->a.beta = onnx_attr_f(p, "beta", 0.5f);
    return ERR_OK;
}

static int p_none(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e)
{
    (void)n;
    return onnx_attr_known(p, "\0", e);
}

/* Clip (opset >= 11): min and max are optional scalar inputs. */
static int clip_bounds(struct onnx_model *m, const struct onnx_node *n, float *lo, float *hi,
                       struct err *e)
{
    *lo = -INFINITY;
    *hi = INFINITY;
    for (int k = 1; k < 3; k++) {
        const struct onnx_tensor *t = onnx_in(m, n, k);
        if (!t)
            continue;
        if (t->dtype != ONNX_F32 || onnx_numel(t) != 1)
            return err_set(e, ERR_INVALID, "Clip %s must be a float32 scalar",
                           k == 1 ? "min" : "max");
        *(k == 1 ? lo : hi) = *(const float *)t->data;
    }
    return ERR_OK;
}

static int k_clip(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    float lo, hi;

    if (clip_bounds(m, n, &lo, &hi, e))
        return e->code;
    return run_unary(m, n, U_CLIP, lo, hi, e);
}

static int all_const_bounds(const struct onnx_model *m, const struct onnx_node *n)
{
    for (int k = 1; k < n->n_in; k++)
        if (n->in[k] >= 0 && !m->vals[n->in[k]].is_const)
            return 0;
    return 1;
}

/* Tells the loader whether act can be folded into the Conv before it. */
int onnx_op_fusable_act(struct onnx_model *m, const struct onnx_node *act, int *kind, float *a,
                        float *b)
{
    struct err e = {0};

    *a = act->a.alpha;
    *b = act->a.beta;
    if (act->run == k_relu)
        *kind = ACT_RELU;
    else if (act->run == k_hsig)
        *kind = ACT_HSIG;
    else if (act->run == k_hswish)
        *kind = ACT_HSWISH;
    else if (act->run == k_sigmoid)
        *kind = ACT_SIGMOID;
    else if (act->run == k_clip && all_const_bounds(m, act) && !clip_bounds(m, act, a, b, &e))
        *kind = ACT_CLIP;
    else
        return 0;
    return 1;
}

/* ---- comparisons, Not, Where (bool results) ---- */

/* Odometer over an output shape carrying the element offsets of up to three
 * broadcast operands. */
struct walk {
    int nd, k;
    int64_t dims[ONNX_MAX_DIMS], st[3][ONNX_MAX_DIMS], idx[ONNX_MAX_DIMS], off[3];
};

static void walk_init(struct walk *w, int nd, const int64_t *dims,
                      const struct onnx_tensor *const *ops, int k)
{
    memset(w, 0, sizeof(*w));
    w->nd = nd;
    w->k = k;
    memcpy(w->dims, dims, (size_t)nd * sizeof(int64_t));
    for (int j = 0; j < k; j++)
        bstrides(ops[j], nd, dims, w->st[j]);
}

static void walk_next(struct walk *w)
{
    for (int d = w->nd - 1; d >= 0; d--) {
        for (int j = 0; j < w->k; j++)
            w->off[j] += w->st[j][d];
        if (++w->idx[d] < w->dims[d])
            return;
        for (int j = 0; j < w->k; j++)
            w->off[j] -= w->st[j][d] * w->dims[d];
        w->idx[d] = 0;
    }
}

enum cmpop { C_EQ, C_LT, C_GT };

static int cmp_elem(enum cmpop op, const struct onnx_tensor *a, int64_t i,
                    const struct onnx_tensor *b, int64_t j)
{
    if (a->dtype == ONNX_I64) {
        int64_t x = ((const int64_t *)a->data)[i], y = ((const int64_t *)b->data)[j];
        return op == C_EQ ? x == y : op == C_LT ? x < y : x > y;
    }
    double x = elem_f64(a, (size_t)i), y = elem_f64(b, (size_t)j);
    return op == C_EQ ? x == y : op == C_LT ? x < y : x > y;
}

static int run_compare(struct onnx_model *m, struct onnx_node *n, enum cmpop op, struct err *e)
{
    const struct onnx_tensor *ops[2] = {onnx_in(m, n, 0), onnx_in(m, n, 1)};
    int64_t dims[ONNX_MAX_DIMS];
    struct walk w;
    uint8_t *o;
    int nd;

    if (ops[0]->dtype != ops[1]->dtype || (op != C_EQ && ops[0]->dtype == ONNX_BOOL))
        return err_set(e, ERR_INVALID, "operands of different (or bool) data types");
    if (onnx_broadcast(ops[0], ops[1], &nd, dims, e))
        return e->code;
    o = onnx_out(m, n, 0, ONNX_BOOL, nd, dims, e);
    if (!o)
        return e->code;
    walk_init(&w, nd, dims, ops, 2);
    for (int64_t i = 0, total = onnx_count(nd, dims); i < total; i++, walk_next(&w))
        o[i] = (uint8_t)cmp_elem(op, ops[0], w.off[0], ops[1], w.off[1]);
    return ERR_OK;
}

static int k_equal(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    return run_compare(m, n, C_EQ, e);
}

static int k_less(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    return run_compare(m, n, C_LT, e);
}

static int k_greater(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    return run_compare(m, n, C_GT, e);
}

static int k_not(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    const struct onnx_tensor *x = onnx_in(m, n, 0);
    uint8_t *o;

    if (x->dtype != ONNX_BOOL)
        return err_set(e, ERR_INVALID, "bool input expected");
    o = onnx_out(m, n, 0, ONNX_BOOL, x->ndim, x->dims, e);
    if (!o)
        return e->code;
    for (size_t i = 0, cnt = onnx_numel(x); i < cnt; i++)
        o[i] = !((const uint8_t *)x->data)[i];
    return ERR_OK;
}

static int k_where(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    const struct onnx_tensor *ops[3] = {onnx_in(m, n, 0), onnx_in(m, n, 1), onnx_in(m, n, 2)};
    int64_t d1[ONNX_MAX_DIMS], dims[ONNX_MAX_DIMS];
    struct onnx_tensor t1 = {.dtype = ONNX_BOOL};
    size_t es = onnx_dtype_size(ops[1]->dtype);
    struct walk w;
    char *o;
    int n1, nd;

    if (ops[0]->dtype != ONNX_BOOL || ops[1]->dtype != ops[2]->dtype)
        return err_set(e, ERR_INVALID, "condition must be bool, X and Y of one data type");
    if (onnx_broadcast(ops[0], ops[1], &n1, d1, e))
        return e->code;
    t1.ndim = n1;
    memcpy(t1.dims, d1, sizeof(d1));
    if (onnx_broadcast(&t1, ops[2], &nd, dims, e))
        return e->code;
    o = onnx_out(m, n, 0, ops[1]->dtype, nd, dims, e);
    if (!o)
        return e->code;
    walk_init(&w, nd, dims, ops, 3);
    for (int64_t i = 0, total = onnx_count(nd, dims); i < total; i++, walk_next(&w)) {
        int k = ((const uint8_t *)ops[0]->data)[w.off[0]] ? 1 : 2;
        memcpy(o + (size_t)i * es, (const char *)ops[k]->data + (size_t)w.off[k] * es, es);
    }
    return ERR_OK;
}

/* ---- the table ---- */

#define MANY ONNX_MAX_IO
static const struct onnx_opdef ops[] = {
    {"Abs", 1, 1, 1, 1, p_none, k_abs},
    {"Add", 2, 2, 1, 1, p_none, k_add},
    {"AveragePool", 1, 1, 1, 1, onnx_p_pool, onnx_k_avgpool},
    {"BatchNormalization", 5, 5, 1, 1, onnx_p_batchnorm, onnx_k_batchnorm},
    {"Cast", 1, 1, 1, 1, p_cast, k_cast},
    {"Clip", 1, 3, 1, 1, p_none, k_clip},
    {"Concat", 1, MANY, 1, 1, p_axis, k_concat},
    {"Constant", 0, 0, 1, 1, p_constant, k_constant},
    {"ConstantOfShape", 1, 1, 1, 1, p_const_of_shape, k_const_of_shape},
    {"Conv", 2, 3, 1, 1, onnx_p_conv, onnx_k_conv},
    {"Div", 2, 2, 1, 1, p_none, k_div},
    {"Dropout", 1, 2, 1, 1, p_none, k_identity}, /* inference: no training_mode, no mask */
    {"Equal", 2, 2, 1, 1, p_none, k_equal},
    {"Erf", 1, 1, 1, 1, p_none, k_erf},
    {"Exp", 1, 1, 1, 1, p_none, k_exp},
    {"Expand", 2, 2, 1, 1, p_none, k_expand},
    {"Flatten", 1, 1, 1, 1, p_axis, k_flatten},
    {"GRU", 3, 6, 0, 2, onnx_p_gru, onnx_k_gru},
    {"Gather", 2, 2, 1, 1, p_axis, k_gather},
    {"Gemm", 2, 3, 1, 1, onnx_p_gemm, onnx_k_gemm},
    {"GlobalAveragePool", 1, 1, 1, 1, p_none, onnx_k_gap},
    {"Greater", 2, 2, 1, 1, p_none, k_greater},
    {"HardSigmoid", 1, 1, 1, 1, p_alpha_beta, k_hsig},
    {"HardSwish", 1, 1, 1, 1, p_none, k_hswish},
    {"Identity", 1, 1, 1, 1, p_none, k_identity},
    {"LeakyRelu", 1, 1, 1, 1, p_alpha_beta, k_leaky},
    {"Less", 2, 2, 1, 1, p_none, k_less},
    {"Log", 1, 1, 1, 1, p_none, k_log},
    {"LogSoftmax", 1, 1, 1, 1, p_axis, k_logsoftmax},
    {"MatMul", 2, 2, 1, 1, p_none, onnx_k_matmul},
    {"MaxPool", 1, 1, 1, 1, onnx_p_pool, onnx_k_maxpool},
    {"Mul", 2, 2, 1, 1, p_none, k_mul},
    {"Neg", 1, 1, 1, 1, p_none, k_neg},
    {"Not", 1, 1, 1, 1, p_none, k_not},
    {"Pad", 2, 3, 1, 1, p_pad, k_pad},
    {"Pow", 2, 2, 1, 1, p_none, k_pow},
    {"Reciprocal", 1, 1, 1, 1, p_none, k_recip},
    {"ReduceMean", 1, 1, 1, 1, p_reduce, k_reduce_mean},
    {"Relu", 1, 1, 1, 1, p_none, k_relu},
    {"Reshape", 2, 2, 1, 1, p_reshape, k_reshape},
    {"Shape", 1, 1, 1, 1, p_shape, k_shape},
    {"Sigmoid", 1, 1, 1, 1, p_none, k_sigmoid},
    {"Slice", 3, 5, 1, 1, p_none, k_slice},
    {"Softmax", 1, 1, 1, 1, p_axis, k_softmax},
    {"Sqrt", 1, 1, 1, 1, p_none, k_sqrt},
    {"Squeeze", 1, 2, 1, 1, p_none, k_squeeze},
    {"Sub", 2, 2, 1, 1, p_none, k_sub},
    {"Tanh", 1, 1, 1, 1, p_none, k_tanh},
    {"Transpose", 1, 1, 1, 1, p_transpose, k_transpose},
    {"Unsqueeze", 2, 2, 1, 1, p_none, k_unsqueeze},
    {"Where", 3, 3, 1, 1, p_none, k_where},
};

const struct onnx_opdef *onnx_op_find(const char *name)
{
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
        if (strcmp(ops[i].name, name) == 0)
            return &ops[i];
    return NULL;
}

size_t onnx_op_count(void)
{
    return sizeof(ops) / sizeof(ops[0]);
}

const char *onnx_op_name(size_t i)
{
    return i < sizeof(ops) / sizeof(ops[0]) ? ops[i].name : NULL;
}
