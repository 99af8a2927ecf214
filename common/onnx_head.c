/* common/onnx_head.c: the classifier head after a CNN's last feature map,
 * read from the graph for Grad-CAM (onnx_gradcam_head in onnx.h). */
#include <stdio.h>
#include <string.h>

#include "cam.h"
#include "onnx_impl.h"

/* The one live node reading value v; NULL (with why in *e) when none or
 * several do. */
static const struct onnx_node *consumer(const struct onnx_model *m, int v, struct err *e)
{
    const struct onnx_node *found = NULL;
    int n = 0;

    for (size_t i = 0; i < m->n_nodes; i++) {
        const struct onnx_node *nd = &m->nodes[i];
        for (int k = 0; !nd->folded && k < nd->n_in; k++)
            if (nd->in[k] == v) {
                found = nd;
                n++;
                break;
            }
    }
    if (n != 1)
        err_set(e, ERR_CONFIG, "gradcam: head value '%s' feeds %d nodes (a chain is needed)",
                m->vals[v].name, n);
    return n == 1 ? found : NULL;
}

static const struct onnx_tensor *const_in(const struct onnx_model *m, const struct onnx_node *n,
                                          int k)
{
    int v = k < n->n_in ? n->in[k] : -1;

    return v >= 0 && m->vals[v].is_const && m->vals[v].t.dtype == ONNX_F32 ? &m->vals[v].t : NULL;
}

/* Gemm or MatMul of the chain value by a constant matrix. */
static int dense(const struct onnx_model *m, const struct onnx_node *n, int cur,
                 struct cam_layer *l, struct err *e)
{
    int gemm = strcmp(n->op, "Gemm") == 0;
    const struct onnx_tensor *w = const_in(m, n, 1), *b = gemm ? const_in(m, n, 2) : NULL;
    int tb = gemm && n->a.trans_b;

    if (n->in[0] != cur || !w || w->ndim != 2 || (gemm && (n->a.trans_a || n->a.alpha != 1.0f)) ||
        (gemm && n->n_in > 2 && n->in[2] >= 0 && (!b || n->a.beta != 1.0f)))
        return err_set(e, ERR_CONFIG,
                       "gradcam: %s node %s is not the chain value times a constant matrix "
                       "(plus a constant bias, alpha = beta = 1)",
                       n->op, n->name);
    l->kind = CAM_DENSE;
    l->w = w->data;
    l->in = (int)(tb ? w->dims[1] : w->dims[0]);
    l->out = (int)(tb ? w->dims[0] : w->dims[1]);
    l->transposed = !tb;
    l->b = b ? b->data : NULL;
    if (b && onnx_numel(b) != (size_t)l->out)
        return err_set(e, ERR_CONFIG, "gradcam: Gemm node %s: bias of %zu values for %d outputs",
                       n->name, onnx_numel(b), l->out);
    return ERR_OK;
}

/* One node of the chain into l; 0 = a pass-through (no layer), 1 = a layer. */
static int head_node(const struct onnx_model *m, const struct onnx_node *n, int cur, int width,
                     struct cam_layer *l, struct err *e)
{
    static const char *const pass[] = {"Flatten", "Reshape", "Squeeze", "Dropout", "Identity"};
    const struct onnx_tensor *b;

    for (size_t i = 0; i < sizeof(pass) / sizeof(pass[0]); i++)
        if (strcmp(n->op, pass[i]) == 0)
            return n->in[0] == cur ? 0
                                   : err_set(e, ERR_CONFIG, "gradcam: %s node %s", n->op, n->name);
    memset(l, 0, sizeof(*l));
    if (strcmp(n->op, "Gemm") == 0 || strcmp(n->op, "MatMul") == 0)
        return dense(m, n, cur, l, e) ? e->code : 1;
    if (width <= 0)
        return err_set(e, ERR_CONFIG, "gradcam: %s node %s before the first Gemm/MatMul", n->op,
                       n->name);
    l->in = l->out = width;
    if (strcmp(n->op, "Relu") == 0) {
        l->kind = CAM_RELU;
        return 1;
    }
    b = const_in(m, n, n->in[0] == cur ? 1 : 0);
    if (strcmp(n->op, "Add") == 0 && b && onnx_numel(b) == (size_t)width) {
        l->kind = CAM_ADD;
        l->b = b->data;
        return 1;
    }
    return err_set(e, ERR_CONFIG,
                   "gradcam: head node %s (%s) is not Gemm, MatMul, Add of a constant, Relu, "
                   "Dropout or a reshape",
                   n->name, n->op);
}

static int is_graph_output(const struct onnx_model *m, int v)
{
    for (size_t i = 0; i < m->n_outputs; i++)
        if (m->outputs[i] == v)
            return 1;
    return 0;
}

int onnx_gradcam_head(const struct onnx_model *m, const char **feature, struct cam_layer *layers,
                      size_t cap, size_t *n_layers, int *channels, struct err *e)
{
    const struct onnx_node *gap = NULL;
    int cur, width = -1, rc;

    for (size_t i = 0; i < m->n_nodes; i++)
        if (!m->nodes[i].folded && strcmp(m->nodes[i].op, "GlobalAveragePool") == 0)
            gap = &m->nodes[i];
    if (!gap)
        return err_set(e, ERR_CONFIG, "gradcam: no GlobalAveragePool node in the graph");
    *feature = m->vals[gap->in[0]].name;
    *n_layers = 0;
    *channels = -1;
    for (cur = gap->out[0]; !is_graph_output(m, cur);) {
        const struct onnx_node *n = consumer(m, cur, e);
        if (!n)
            return e->code;
        if (*n_layers == cap)
            return err_set(e, ERR_CONFIG, "gradcam: head of more than %zu layers", cap);
        rc = head_node(m, n, cur, width, &layers[*n_layers], e);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            if (*channels < 0)
                *channels = layers[*n_layers].in;
            if (layers[*n_layers].in != (width < 0 ? layers[*n_layers].in : width))
                return err_set(e, ERR_CONFIG, "gradcam: node %s takes %d values, the head has %d",
                               n->name, layers[*n_layers].in, width);
            width = layers[*n_layers].out;
            (*n_layers)++;
        }
        cur = n->out[0];
    }
    if (!*n_layers)
        return err_set(e, ERR_CONFIG, "gradcam: no Gemm/MatMul between the pooling and the output");
    return ERR_OK;
}
