/* common/models/onnx_ops_reduce.c: Softmax, LogSoftmax and ReduceMean.
 * Split out of onnx_ops.c; onnx_ops_int.h holds what the onnx_ops*.c
 * files share. Built with -O3 -ffp-contract=fast like onnx_ops.c.
 */
#include <math.h>
#include <string.h>

#include "onnx_impl.h"
#include "onnx_ops.h"
#include "onnx_ops_int.h"

/* ---- softmax and reductions ---- */

static int run_softmax(struct onnx_model *m, struct onnx_node *n, int log_out, struct err *e)
{
    const struct onnx_tensor *x = onnx_in(m, n, 0);
    int axis = onnx_axis(n->a.axis, x->ndim);
    int64_t outer = 1, len, inner = 1;
    const float *in = x->data;
    float *o;

    if (axis < 0 || x->dtype != ONNX_F32)
        return err_set(e, ERR_INVALID, "axis %lld out of range or non-float input",
                       (long long)n->a.axis);
    o = onnx_out(m, n, 0, ONNX_F32, x->ndim, x->dims, e);
    if (!o)
        return e->code;
    len = x->dims[axis];
    for (int i = 0; i < axis; i++)
        outer *= x->dims[i];
    for (int i = axis + 1; i < x->ndim; i++)
        inner *= x->dims[i];
    for (int64_t a = 0; a < outer; a++)
        for (int64_t c = 0; c < inner; c++) {
            const float *v = in + a * len * inner + c;
            float *w = o + a * len * inner + c, mx = -INFINITY;
            double sum = 0;
            for (int64_t k = 0; k < len; k++)
                mx = fmaxf(mx, v[k * inner]);
            for (int64_t k = 0; k < len; k++)
                sum += exp((double)(v[k * inner] - mx));
            for (int64_t k = 0; k < len; k++)
                w[k * inner] = log_out ? (float)(v[k * inner] - mx - log(sum))
                                       : (float)(exp((double)(v[k * inner] - mx)) / sum);
        }
    return ERR_OK;
}

int k_softmax(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    return run_softmax(m, n, 0, e);
}

int k_logsoftmax(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    return run_softmax(m, n, 1, e);
}

int p_reduce(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e)
{
    if (onnx_attr_known(p, "axes\0keepdims\0", e))
        return e->code;
    n->a.n_axes = onnx_attr_ints(p, "axes", n->a.axes, ONNX_MAX_DIMS, e);
    if (n->a.n_axes == -2)
        return e->code;
    n->a.keepdims = (int)onnx_attr_i(p, "keepdims", 1);
    return ERR_OK;
}

int k_reduce_mean(struct onnx_model *m, struct onnx_node *n, struct err *e)
{
    const struct onnx_tensor *x = onnx_in(m, n, 0);
    int flags[ONNX_MAX_DIMS], nd = 0;
    int64_t dims[ONNX_MAX_DIMS], kd[ONNX_MAX_DIMS], ost[ONNX_MAX_DIMS], st[ONNX_MAX_DIMS];
    int64_t idx[ONNX_MAX_DIMS] = {0}, cnt = 1, total = (int64_t)onnx_numel(x), off = 0;
    float *o;

    if (x->dtype != ONNX_F32)
        return err_set(e, ERR_INVALID, "float32 input expected");
    if (n->a.n_axes < 0) {
        for (int i = 0; i < ONNX_MAX_DIMS; i++)
            flags[i] = i < x->ndim;
    } else if (axes_flags(n->a.axes, n->a.n_axes, x->ndim, flags, e)) {
        return e->code;
    }
    for (int i = 0; i < x->ndim; i++) {
        kd[i] = flags[i] ? 1 : x->dims[i];
        cnt *= flags[i] ? x->dims[i] : 1;
        if (!flags[i] || n->a.keepdims)
            dims[nd++] = kd[i];
    }
    o = onnx_out(m, n, 0, ONNX_F32, nd, dims, e);
    if (!o)
        return e->code;
    contiguous_strides(x->ndim, kd, ost);
    for (int i = 0; i < x->ndim; i++)
        st[i] = flags[i] ? 0 : ost[i];
    memset(o, 0, (size_t)onnx_count(x->ndim, kd) * sizeof(float));
    for (int64_t i = 0; i < total; i++) {
        o[off] += ((const float *)x->data)[i];
        for (int d = x->ndim - 1; d >= 0; d--) {
            off += st[d];
            if (++idx[d] < x->dims[d])
                break;
            off -= st[d] * x->dims[d];
            idx[d] = 0;
        }
    }
    for (int64_t i = 0, no = onnx_count(x->ndim, kd); i < no && cnt > 0; i++)
        o[i] /= (float)cnt;
    return ERR_OK;
}
