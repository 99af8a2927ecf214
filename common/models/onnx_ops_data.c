/* common/models/onnx_ops_data.c: the shape and data-movement ops of torch exports
 * (Identity, Reshape, Flatten, Squeeze, Shape, Gather, Concat, Transpose,
 * Slice, Expand, Pad, Cast, Constant, ConstantOfShape).
 * Split out of onnx_ops.c; onnx_ops_int.h holds what the onnx_ops*.c
 * files share. Built with -O3 -ffp-contract=fast like onnx_ops.c.
 */
#include <math.h>
#include <string.h>

#include "onnx_impl.h"
#include "onnx_ops.h"
#include "onnx_ops_int.h"

/* ---- data movement ---- */

static int copy_to_out(struct onnx_model *m, struct onnx_node *n, const struct onnx_tensor *x,
                       int ndim, const int64_t *dims, struct err *e)
{
    void *o = onnx_out(m, n, 0, x->dtype, ndim, dims, e);

    if (!o)
        return e->code;
    if (onnx_count(ndim, dims) != (int64_t)onnx_numel(x))
        return err_set(e, ERR_INVALID, "element count changes (%zu -> %lld)", onnx_numel(x),
                       (long long)onnx_count(ndim, dims));
    memcpy(o, x->data, onnx_numel(x) * onnx_dtype_size(x->dtype));
    return ERR_OK;
}

int k_identity(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    const struct onnx_tensor *x = onnx_in(m, n, 0);

    return copy_to_out(m, n, x, x->ndim, x->dims, e);
}

/* An int64 1-D input (shape, axes, pads...) of at most max values. */
static int i64_list(const struct onnx_tensor *t, const char *what, int max, const int64_t **v,
                    int *len, struct err *e)
{
    *v = NULL;
    *len = 0;
    if (t->dtype != ONNX_I64 || t->ndim > 1 || onnx_numel(t) > (size_t)max)
        return err_set(e, ERR_INVALID, "%s must be a 1-D int64 tensor of at most %d values", what,
                       max);
    *v = t->data;
    *len = (int)onnx_numel(t);
    return ERR_OK;
}

int p_reshape(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e)
{
    if (onnx_attr_known(p, "allowzero\0", e))
        return e->code;
    n->a.allowzero = (int)onnx_attr_i(p, "allowzero", 0);
    return ERR_OK;
}

int k_reshape(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    const struct onnx_tensor *x = onnx_in(m, n, 0);
    const int64_t *s;
    int64_t dims[ONNX_MAX_DIMS], known = 1;
    int len, infer = -1;

    if (i64_list(onnx_in(m, n, 1), "shape", ONNX_MAX_DIMS, &s, &len, e))
        return e->code;
    for (int i = 0; i < len; i++) {
        dims[i] = s[i];
        if (s[i] == 0 && !n->a.allowzero) {
            if (i >= x->ndim)
                return err_set(e, ERR_INVALID, "shape[%d] = 0 copies a missing dim", i);
            dims[i] = x->dims[i];
        }
        if (dims[i] == -1 && infer < 0)
            infer = i;
        else if (dims[i] < 0 || dims[i] > ONNX_MAX_ELEMS || known > ONNX_MAX_ELEMS)
            return err_set(e, ERR_INVALID, "shape[%d] = %lld", i, (long long)s[i]);
        else
            known *= dims[i];
    }
    if (infer >= 0) {
        if (known == 0 || (int64_t)onnx_numel(x) % known)
            return err_set(e, ERR_INVALID, "cannot infer dim %d: %zu elements into %lld", infer,
                           onnx_numel(x), (long long)known);
        dims[infer] = (int64_t)onnx_numel(x) / known;
    }
    return copy_to_out(m, n, x, len, dims, e);
}

int p_axis(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e)
{
    int soft = strstr(n->op, "Softmax") != NULL;

    if (onnx_attr_known(p, "axis\0", e))
        return e->code;
    n->a.axis = onnx_attr_i(p, "axis", soft ? -1 : strcmp(n->op, "Flatten") == 0 ? 1 : 0);
    return ERR_OK;
}

int k_flatten(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    const struct onnx_tensor *x = onnx_in(m, n, 0);
    int64_t dims[2] = {1, 1};
    int axis = n->a.axis == x->ndim ? x->ndim : onnx_axis(n->a.axis, x->ndim);

    if (axis < 0)
        return err_set(e, ERR_INVALID, "axis %lld out of range", (long long)n->a.axis);
    for (int i = 0; i < x->ndim; i++)
        dims[i >= axis] *= x->dims[i];
    return copy_to_out(m, n, x, 2, dims, e);
}

/* Marks axes (normalised for rank) in flags; ERR_INVALID on repeats. */
int axes_flags(const int64_t *axes, int len, int rank, int *flags, struct err *e)
{
    memset(flags, 0, sizeof(int) * ONNX_MAX_DIMS);
    for (int i = 0; i < len; i++) {
        int a = onnx_axis(axes[i], rank);
        if (a < 0 || flags[a])
            return err_set(e, ERR_INVALID, "axis %lld out of range or repeated",
                           (long long)axes[i]);
        flags[a] = 1;
    }
    return ERR_OK;
}

int k_squeeze(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    const struct onnx_tensor *x = onnx_in(m, n, 0), *ax = onnx_in(m, n, 1);
    int flags[ONNX_MAX_DIMS], nd = 0, len = 0;
    int64_t dims[ONNX_MAX_DIMS];
    const int64_t *axes = NULL;

    if (ax && i64_list(ax, "axes", ONNX_MAX_DIMS, &axes, &len, e))
        return e->code;
    if (axes_flags(axes, len, x->ndim, flags, e))
        return e->code;
    for (int i = 0; i < x->ndim; i++) {
        int drop = ax ? flags[i] : x->dims[i] == 1;
        if (drop && x->dims[i] != 1)
            return err_set(e, ERR_INVALID, "cannot squeeze dim %d of size %lld", i,
                           (long long)x->dims[i]);
        if (!drop)
            dims[nd++] = x->dims[i];
    }
    return copy_to_out(m, n, x, nd, dims, e);
}

int k_unsqueeze(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    const struct onnx_tensor *x = onnx_in(m, n, 0);
    int flags[ONNX_MAX_DIMS], len, nd;
    int64_t dims[ONNX_MAX_DIMS];
    const int64_t *axes;

    if (i64_list(onnx_in(m, n, 1), "axes", ONNX_MAX_DIMS, &axes, &len, e))
        return e->code;
    nd = x->ndim + len;
    if (nd > ONNX_MAX_DIMS)
        return err_set(e, ERR_INVALID, "result has %d dims (at most %d)", nd, ONNX_MAX_DIMS);
    if (axes_flags(axes, len, nd, flags, e))
        return e->code;
    for (int i = 0, j = 0; i < nd; i++)
        dims[i] = flags[i] ? 1 : x->dims[j++];
    return copy_to_out(m, n, x, nd, dims, e);
}

int p_shape(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e)
{
    if (onnx_attr_known(p, "start\0end\0", e))
        return e->code;
    n->a.start = onnx_attr_i(p, "start", 0);
    n->a.has_end = onnx_attr(p, "end") != NULL;
    n->a.end = onnx_attr_i(p, "end", 0);
    return ERR_OK;
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

int k_shape(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    const struct onnx_tensor *x = onnx_in(m, n, 0);
    int64_t r = x->ndim, s = n->a.start, t = n->a.has_end ? n->a.end : r, len;
    int64_t *o;

    s = clamp64(s < 0 ? s + r : s, 0, r);
    t = clamp64(t < 0 ? t + r : t, 0, r);
    len = t > s ? t - s : 0;
    o = onnx_out(m, n, 0, ONNX_I64, 1, &len, e);
    if (!o)
        return e->code;
    for (int64_t i = 0; i < len; i++)
        o[i] = x->dims[s + i];
    return ERR_OK;
}

int k_gather(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    const struct onnx_tensor *x = onnx_in(m, n, 0), *ix = onnx_in(m, n, 1);
    int axis = onnx_axis(n->a.axis, x->ndim), nd = 0;
    int64_t dims[ONNX_MAX_DIMS], outer = 1, inner = 1, ni = (int64_t)onnx_numel(ix);
    size_t es = onnx_dtype_size(x->dtype);
    const int64_t *idx = ix->data;
    char *o;

    if (axis < 0 || ix->dtype != ONNX_I64 || x->ndim - 1 + ix->ndim > ONNX_MAX_DIMS)
        return err_set(e, ERR_INVALID, "bad axis %lld or non-int64 indices", (long long)n->a.axis);
    for (int i = 0; i < axis; i++)
        outer *= (dims[nd++] = x->dims[i]);
    for (int i = 0; i < ix->ndim; i++)
        dims[nd++] = ix->dims[i];
    for (int i = axis + 1; i < x->ndim; i++)
        inner *= (dims[nd++] = x->dims[i]);
    o = onnx_out(m, n, 0, x->dtype, nd, dims, e);
    if (!o)
        return e->code;
    for (int64_t j = 0; j < ni; j++)
        if (idx[j] < -x->dims[axis] || idx[j] >= x->dims[axis])
            return err_set(e, ERR_INVALID, "index %lld out of range 0..%lld", (long long)idx[j],
                           (long long)x->dims[axis] - 1);
    for (int64_t a = 0; a < outer; a++)
        for (int64_t j = 0; j < ni; j++) {
            int64_t k = idx[j] < 0 ? idx[j] + x->dims[axis] : idx[j];
            memcpy(o + ((a * ni + j) * inner) * (int64_t)es,
                   (const char *)x->data + ((a * x->dims[axis] + k) * inner) * (int64_t)es,
                   (size_t)inner * es);
        }
    return ERR_OK;
}

int k_concat(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    const struct onnx_tensor *x0 = onnx_in(m, n, 0);
    int axis = onnx_axis(n->a.axis, x0->ndim);
    int64_t dims[ONNX_MAX_DIMS], outer = 1, inner = 1, total = 0;
    size_t es = onnx_dtype_size(x0->dtype);
    char *o;

    if (axis < 0)
        return err_set(e, ERR_INVALID, "axis %lld out of range", (long long)n->a.axis);
    for (int k = 0; k < n->n_in; k++) {
        const struct onnx_tensor *x = onnx_in(m, n, k);
        if (!x || x->dtype != x0->dtype || x->ndim != x0->ndim)
            return err_set(e, ERR_INVALID, "input %d: type or rank differs from input 0", k);
        for (int i = 0; i < x->ndim; i++)
            if (i != axis && x->dims[i] != x0->dims[i])
                return err_set(e, ERR_INVALID, "input %d: dim %d is %lld, input 0 has %lld", k, i,
                               (long long)x->dims[i], (long long)x0->dims[i]);
        total += x->dims[axis];
    }
    memcpy(dims, x0->dims, sizeof(dims));
    dims[axis] = total;
    for (int i = 0; i < axis; i++)
        outer *= dims[i];
    for (int i = axis + 1; i < x0->ndim; i++)
        inner *= dims[i];
    o = onnx_out(m, n, 0, x0->dtype, x0->ndim, dims, e);
    if (!o)
        return e->code;
    for (int64_t a = 0, off = 0; a < outer; a++)
        for (int k = 0; k < n->n_in; k++) {
            const struct onnx_tensor *x = onnx_in(m, n, k);
            size_t bytes = (size_t)(x->dims[axis] * inner) * es;
            memcpy(o + off, (const char *)x->data + (size_t)a * bytes, bytes);
            off += (int64_t)bytes;
        }
    return ERR_OK;
}

/* Strided copy: out[i...] = x[start + i*step...] over nd dims (elements). */
static void strided_copy(char *o, const char *x, size_t es, int nd, const int64_t *odims,
                         const int64_t *xstride, int64_t base)
{
    int64_t idx[ONNX_MAX_DIMS] = {0}, total = onnx_count(nd, odims), off = base;

    for (int64_t i = 0; i < total; i++) {
        memcpy(o + (size_t)i * es, x + (size_t)off * es, es);
        for (int d = nd - 1; d >= 0; d--) {
            off += xstride[d];
            if (++idx[d] < odims[d])
                break;
            off -= xstride[d] * odims[d];
            idx[d] = 0;
        }
    }
}

void contiguous_strides(int nd, const int64_t *dims, int64_t *st)
{
    int64_t s = 1;

    for (int i = nd - 1; i >= 0; i--) {
        st[i] = s;
        s *= dims[i];
    }
}

int p_transpose(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e)
{
    if (onnx_attr_known(p, "perm\0", e))
        return e->code;
    n->a.n_perm = onnx_attr_ints(p, "perm", n->a.perm, ONNX_MAX_DIMS, e);
    return n->a.n_perm == -2 ? e->code : ERR_OK;
}

int k_transpose(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    const struct onnx_tensor *x = onnx_in(m, n, 0);
    int64_t dims[ONNX_MAX_DIMS], xs[ONNX_MAX_DIMS], st[ONNX_MAX_DIMS];
    int seen[ONNX_MAX_DIMS] = {0};
    void *o;

    if (n->a.n_perm >= 0 && n->a.n_perm != x->ndim)
        return err_set(e, ERR_INVALID, "perm has %d values for rank %d", n->a.n_perm, x->ndim);
    contiguous_strides(x->ndim, x->dims, xs);
    for (int i = 0; i < x->ndim; i++) {
        int64_t p = n->a.n_perm >= 0 ? n->a.perm[i] : x->ndim - 1 - i;
        if (p < 0 || p >= x->ndim || seen[p]++)
            return err_set(e, ERR_INVALID, "perm is not a permutation");
        dims[i] = x->dims[p];
        st[i] = xs[p];
    }
    o = onnx_out(m, n, 0, x->dtype, x->ndim, dims, e);
    if (!o)
        return e->code;
    strided_copy(o, x->data, onnx_dtype_size(x->dtype), x->ndim, dims, st, 0);
    return ERR_OK;
}

/* One axis of Slice: clamps start/end as the ONNX spec says. A step past
 * the dim selects at most one element; it is clamped (in *step too) so that
 * no arithmetic here or in the copy overflows. */
static int slice_axis(int64_t dim, int64_t start, int64_t end, int64_t *step, int64_t *first,
                      int64_t *count)
{
    int64_t s = *step;

    if (s == 0)
        return -1;
    s = s > dim ? dim + 1 : s < -dim ? -dim - 1 : s;
    *step = s;
    if (start < 0)
        start += dim;
    if (end < 0)
        end += dim;
    if (s > 0) {
        start = clamp64(start, 0, dim);
        end = clamp64(end, 0, dim);
        *count = end > start ? (end - start - 1) / s + 1 : 0;
    } else {
        start = clamp64(start, 0, dim - 1);
        end = clamp64(end, -1, dim - 1);
        *count = start > end ? (start - end - 1) / -s + 1 : 0;
    }
    *first = start;
    return 0;
}

int k_slice(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    const struct onnx_tensor *x = onnx_in(m, n, 0), *t;
    const int64_t *st, *en, *ax = NULL, *sp = NULL;
    int ns, ne, na, np, flags[ONNX_MAX_DIMS];
    int64_t dims[ONNX_MAX_DIMS], xs[ONNX_MAX_DIMS], step[ONNX_MAX_DIMS], base = 0;
    void *o;

    if (i64_list(onnx_in(m, n, 1), "starts", ONNX_MAX_DIMS, &st, &ns, e) ||
        i64_list(onnx_in(m, n, 2), "ends", ONNX_MAX_DIMS, &en, &ne, e))
        return e->code;
    na = np = ns;
    t = onnx_in(m, n, 3);
    if (t && i64_list(t, "axes", ONNX_MAX_DIMS, &ax, &na, e))
        return e->code;
    t = onnx_in(m, n, 4);
    if (t && i64_list(t, "steps", ONNX_MAX_DIMS, &sp, &np, e))
        return e->code;
    if (ne != ns || na != ns || np != ns)
        return err_set(e, ERR_INVALID, "starts, ends, axes, steps differ in length");
    memcpy(dims, x->dims, sizeof(dims));
    contiguous_strides(x->ndim, x->dims, xs);
    memcpy(step, xs, sizeof(step));
    memset(flags, 0, sizeof(flags));
    for (int i = 0; i < ns; i++) {
        int a = onnx_axis(ax ? ax[i] : i, x->ndim);
        int64_t first, cnt, s = sp ? sp[i] : 1;
        if (a < 0 || flags[a]++ || slice_axis(x->dims[a], st[i], en[i], &s, &first, &cnt))
            return err_set(e, ERR_INVALID, "slice %d: bad axis or zero step", i);
        dims[a] = cnt;
        step[a] = xs[a] * s;
        base += first * xs[a];
    }
    o = onnx_out(m, n, 0, x->dtype, x->ndim, dims, e);
    if (!o)
        return e->code;
    if (onnx_count(x->ndim, dims) > 0)
        strided_copy(o, x->data, onnx_dtype_size(x->dtype), x->ndim, dims, step, base);
    return ERR_OK;
}

int k_expand(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    const struct onnx_tensor *x = onnx_in(m, n, 0);
    struct onnx_tensor shape = {.dtype = x->dtype};
    const int64_t *s;
    int64_t dims[ONNX_MAX_DIMS], st[ONNX_MAX_DIMS];
    int len, nd;
    void *o;

    if (i64_list(onnx_in(m, n, 1), "shape", ONNX_MAX_DIMS, &s, &len, e))
        return e->code;
    shape.ndim = len;
    memcpy(shape.dims, s, (size_t)len * sizeof(int64_t));
    if (onnx_broadcast(x, &shape, &nd, dims, e))
        return e->code;
    o = onnx_out(m, n, 0, x->dtype, nd, dims, e);
    if (!o)
        return e->code;
    bstrides(x, nd, dims, st);
    if (onnx_count(nd, dims) > 0)
        strided_copy(o, x->data, onnx_dtype_size(x->dtype), nd, dims, st, 0);
    return ERR_OK;
}

int p_pad(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e)
{
    (void)n;
    if (onnx_attr_known(p, "mode\0", e))
        return e->code;
    if (onnx_attr_s_is(p, "mode", "constant") == 0)
        return err_set(e, ERR_CONFIG, "only mode=constant is supported");
    return ERR_OK;
}

/* Copies x into o at element offset base with o's strides os (the
 * interior of a padded tensor). */
static void scatter(char *o, const struct onnx_tensor *x, const int64_t *os, int64_t base)
{
    int64_t idx[ONNX_MAX_DIMS] = {0}, off = base, nx = (int64_t)onnx_numel(x);
    size_t es = onnx_dtype_size(x->dtype);

    for (int64_t i = 0; i < nx; i++) {
        memcpy(o + (size_t)off * es, (const char *)x->data + (size_t)i * es, es);
        for (int d = x->ndim - 1; d >= 0; d--) {
            off += os[d];
            if (++idx[d] < x->dims[d])
                break;
            off -= os[d] * x->dims[d];
            idx[d] = 0;
        }
    }
}

int k_pad(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    const struct onnx_tensor *x = onnx_in(m, n, 0), *cv = onnx_in(m, n, 2);
    const int64_t *pads;
    int len;
    int64_t dims[ONNX_MAX_DIMS], os[ONNX_MAX_DIMS], base = 0;
    size_t es = onnx_dtype_size(x->dtype), total;
    char *o;

    if (i64_list(onnx_in(m, n, 1), "pads", 2 * ONNX_MAX_DIMS, &pads, &len, e))
        return e->code;
    if (len != 2 * x->ndim || n->n_in > 3)
        return err_set(e, ERR_INVALID, "pads has %d values for rank %d (axes input unsupported)",
                       len, x->ndim);
    if (cv && (cv->dtype != x->dtype || onnx_numel(cv) != 1))
        return err_set(e, ERR_INVALID, "constant_value must be one value of the data's type");
    for (int i = 0; i < x->ndim; i++) {
        if (pads[i] > ONNX_MAX_ELEMS || pads[i + x->ndim] > ONNX_MAX_ELEMS)
            return err_set(e, ERR_INVALID, "pads over %lld", (long long)ONNX_MAX_ELEMS);
        dims[i] = x->dims[i] + pads[i] + pads[i + x->ndim];
        if (pads[i] < 0 || pads[i + x->ndim] < 0 || dims[i] < 0)
            return err_set(e, ERR_INVALID, "negative pads are not supported");
    }
    o = onnx_out(m, n, 0, x->dtype, x->ndim, dims, e);
    if (!o)
        return e->code;
    total = (size_t)onnx_count(x->ndim, dims);
    for (size_t i = 0; i < total; i++)
        memcpy(o + i * es, cv ? cv->data : (const void *)"\0\0\0\0\0\0\0\0", es);
    contiguous_strides(x->ndim, dims, os);
    for (int i = 0; i < x->ndim; i++)
        base += pads[i] * os[i];
    scatter(o, x, os, base);
    return ERR_OK;
}

int p_cast(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e)
{
    if (onnx_attr_known(p, "to\0saturate\0", e))
        return e->code;
    n->a.to = (int)onnx_attr_i(p, "to", 0);
    if (n->a.to != ONNX_F32 && n->a.to != ONNX_I64 && n->a.to != ONNX_BOOL)
        return err_set(e, ERR_CONFIG, "cast to data type %d (float32=1, int64=7, bool=9 only)",
                       n->a.to);
    return ERR_OK;
}

/* Element i of t as a double (exact for float32, bool, int64 below 2^53). */
double elem_f64(const struct onnx_tensor *t, size_t i)
{
    if (t->dtype == ONNX_F32)
        return ((const float *)t->data)[i];
    if (t->dtype == ONNX_BOOL)
        return ((const uint8_t *)t->data)[i] != 0;
    return (double)((const int64_t *)t->data)[i];
}

static int cast_elem(const struct onnx_tensor *x, size_t i, enum onnx_dtype to, void *o,
                     struct err *e)
{
    double v = elem_f64(x, i);

    if (to == ONNX_F32) {
        ((float *)o)[i] = (float)v;
    } else if (to == ONNX_BOOL) {
        ((uint8_t *)o)[i] = x->dtype == ONNX_I64 ? ((const int64_t *)x->data)[i] != 0 : v != 0;
    } else if (x->dtype == ONNX_I64) {
        ((int64_t *)o)[i] = ((const int64_t *)x->data)[i];
    } else {
        if (!(fabs(v) < 9.2e18))
            return err_set(e, ERR_INVALID, "cannot cast %g to int64", v);
        ((int64_t *)o)[i] = (int64_t)v;
    }
    return ERR_OK;
}

int k_cast(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    const struct onnx_tensor *x = onnx_in(m, n, 0);
    void *o = onnx_out(m, n, 0, (enum onnx_dtype)n->a.to, x->ndim, x->dims, e);
    size_t cnt = onnx_numel(x);

    if (!o)
        return e->code;
    if ((int)x->dtype == n->a.to) {
        memcpy(o, x->data, cnt * onnx_dtype_size(x->dtype));
        return ERR_OK;
    }
    for (size_t i = 0; i < cnt; i++)
        if (cast_elem(x, i, (enum onnx_dtype)n->a.to, o, e))
            return e->code;
    return ERR_OK;
}

int p_constant(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e)
{
    const Onnx__AttributeProto *a = onnx_attr(p, "value");
    struct onnx_tensor t;
    const void *src;

    (void)n;
    if (onnx_attr_known(p, "value\0value_float\0value_int\0value_floats\0value_ints\0", e))
        return e->code;
    if (p->n_attribute != 1)
        return err_set(e, ERR_CONFIG, "exactly one value attribute expected");
    if (a && (!a->t || onnx_proto_tensor(a->t, &t, &src, "Constant value", e)))
        return a->t ? e->code : err_set(e, ERR_CONFIG, "value is not a tensor");
    return ERR_OK;
}

int k_constant(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    const Onnx__AttributeProto *a = n->p->attribute[0];
    struct onnx_tensor t = {0};
    const void *src = NULL;
    void *o;

    if (a->t) {
        if (onnx_proto_tensor(a->t, &t, &src, "Constant value", e))
            return e->code;
    } else if (a->has_f || a->has_i) {
        t.dtype = a->has_f ? ONNX_F32 : ONNX_I64;
        src = a->has_f ? (const void *)&a->f : (const void *)&a->i;
    } else {
        t.dtype = a->n_floats ? ONNX_F32 : ONNX_I64;
        t.ndim = 1;
        t.dims[0] = (int64_t)(a->n_floats ? a->n_floats : a->n_ints);
        src = a->n_floats ? (const void *)a->floats : (const void *)a->ints;
    }
    o = onnx_out(m, n, 0, t.dtype, t.ndim, t.dims, e);
    if (!o)
        return e->code;
    if (onnx_numel(&t))
        memcpy(o, src, onnx_numel(&t) * onnx_dtype_size(t.dtype));
    return ERR_OK;
}

int p_const_of_shape(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e)
{
    const Onnx__AttributeProto *a = onnx_attr(p, "value");
    struct onnx_tensor t;
    const void *src;

    if (onnx_attr_known(p, "value\0", e))
        return e->code;
    n->a.to = ONNX_F32;
    if (!a)
        return ERR_OK;
    if (!a->t || onnx_proto_tensor(a->t, &t, &src, "value", e) || onnx_numel(&t) != 1)
        return e->code ? e->code : err_set(e, ERR_CONFIG, "value must be one element");
    n->a.to = t.dtype;
    if (t.dtype == ONNX_F32)
        memcpy(&n->a.fill_f32, src, sizeof(float));
    else if (t.dtype == ONNX_I64)
        memcpy(&n->a.fill_i64, src, sizeof(int64_t));
    else
        n->a.fill_i64 = *(const uint8_t *)src != 0;
    return ERR_OK;
}

int k_const_of_shape(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    const int64_t *s;
    int len;
    void *o;

    if (i64_list(onnx_in(m, n, 0), "shape", ONNX_MAX_DIMS, &s, &len, e))
        return e->code;
    o = onnx_out(m, n, 0, (enum onnx_dtype)n->a.to, len, s, e);
    if (!o)
        return e->code;
    for (int64_t i = 0, cnt = onnx_count(len, s); i < cnt; i++) {
        if (n->a.to == ONNX_F32)
            ((float *)o)[i] = n->a.fill_f32;
        else if (n->a.to == ONNX_I64)
            ((int64_t *)o)[i] = n->a.fill_i64;
        else
            ((uint8_t *)o)[i] = (uint8_t)n->a.fill_i64;
    }
    return ERR_OK;
}
