/* ONNX loader and executor (common/onnx.h).
 *
 * Load: the file is read whole (size-limited) and unpacked by protobuf-c;
 * initializers are copied into owned tensors after their byte counts are
 * checked against their dims; every node is bound to a kernel whose prepare
 * step checks its attributes; node inputs must be defined earlier (ONNX
 * graphs are topologically sorted). Nodes whose inputs are all constant are
 * computed once at load, activations are fused into the Conv before them,
 * and a dry run on zeros checks every shape.
 *
 * Run: nodes execute in order; each output takes a buffer from a pool and
 * each value returns its buffer after its last reader, so memory is that of
 * the live activations, not of the whole graph, and steady-state runs reuse
 * the same buffers.
 */
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "onnx_impl.h"

#define OPSET_MIN 13
#define OPSET_MAX 17

void onnx_set_threads(struct onnx_model *m, int n)
{
    m->threads = n < 1 ? 1 : n > ONNX_MAX_THREADS ? ONNX_MAX_THREADS : n;
    openblas_set_num_threads(m->threads);
}

/* ---- values and buffers ---- */

static int find_value(const struct onnx_model *m, const char *name)
{
    for (size_t i = m->n_vals; i-- > 0;)
        if (strcmp(m->vals[i].name, name) == 0)
            return (int)i;
    return -1;
}

static int add_value(struct onnx_model *m, const char *name, struct err *e)
{
    if (m->n_vals == m->cap_vals) {
        size_t cap = m->cap_vals ? 2 * m->cap_vals : 256;
        struct onnx_value *v = realloc(m->vals, cap * sizeof(*v));
        if (!v)
            return err_set(e, ERR_NOMEM, "onnx: out of memory for values");
        m->vals = v;
        m->cap_vals = cap;
    }
    memset(&m->vals[m->n_vals], 0, sizeof(m->vals[0]));
    m->vals[m->n_vals].name = name;
    m->vals[m->n_vals].last_use = -1;
    return (int)m->n_vals++;
}

/* ---- initializers ---- */

static int tensor_from_proto(struct onnx_value *v, const Onnx__TensorProto *tp, const char *what,
                             struct err *e)
{
    const void *src;
    size_t bytes;

    if (onnx_proto_tensor(tp, &v->t, &src, what, e))
        return e->code;
    bytes = onnx_numel(&v->t) * onnx_dtype_size(v->t.dtype);
    v->buf = malloc(bytes ? bytes : 1);
    if (!v->buf)
        return err_set(e, ERR_NOMEM, "onnx: out of memory for %s '%s'", what, tp->name);
    if (bytes)
        memcpy(v->buf, src, bytes);
    v->cap = bytes;
    /* A NaN weight is never meant: it would turn outputs to NaN silently.
     * (Infinities are kept: masks use -inf.) */
    for (size_t i = 0; v->t.dtype == ONNX_F32 && i < bytes / sizeof(float); i++)
        if (isnan(((const float *)v->buf)[i]))
            return err_set(e, ERR_CONFIG, "onnx: %s '%s' element %zu is NaN", what, tp->name, i);
    v->t.data = v->buf;
    v->is_const = 1;
    v->defined = 1;
    return ERR_OK;
}

static int load_initializers(struct onnx_model *m, const Onnx__GraphProto *g, struct err *e)
{
    for (size_t i = 0; i < g->n_initializer; i++) {
        const Onnx__TensorProto *tp = g->initializer[i];
        int k;

        if (!tp->name || !*tp->name)
            return err_set(e, ERR_CONFIG, "onnx: initializer %zu has no name", i);
        if (find_value(m, tp->name) >= 0)
            return err_set(e, ERR_CONFIG, "onnx: initializer '%s' defined twice", tp->name);
        k = add_value(m, tp->name, e);
        if (k < 0 || tensor_from_proto(&m->vals[k], tp, "initializer", e))
            return e->code;
    }
    if (g->n_sparse_initializer)
        return err_set(e, ERR_CONFIG, "onnx: sparse initializers are not supported");
    return ERR_OK;
}

/* ---- graph inputs and outputs ---- */

static int input_type(struct onnx_model *m, size_t i, const Onnx__ValueInfoProto *vi, struct err *e)
{
    const Onnx__TypeProto *tp = vi->type;
    const Onnx__TensorShapeProto *sh;
    int *s = m->in_shape[i];

    if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type)
        return err_set(e, ERR_CONFIG, "onnx: input '%s' is not a tensor", vi->name);
    if (tp->tensor_type->elem_type != ONNX_F32 && tp->tensor_type->elem_type != ONNX_I64)
        return err_set(e, ERR_CONFIG,
                       "onnx: input '%s' has element type %d (float32 or int64 only)", vi->name,
                       tp->tensor_type->elem_type);
    sh = tp->tensor_type->shape;
    if (!sh || sh->n_dim > ONNX_MAX_DIMS)
        return err_set(e, ERR_CONFIG, "onnx: input '%s' has no shape or more than %d dims",
                       vi->name, ONNX_MAX_DIMS);
    m->vals[m->inputs[i]].t.dtype = (enum onnx_dtype)tp->tensor_type->elem_type;
    s[0] = (int)sh->n_dim;
    for (size_t d = 0; d < sh->n_dim; d++) {
        const Onnx__TensorShapeProto__Dimension *dim = sh->dim[d];
        int dyn = dim->value_case != ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
        if (!dyn && (dim->dim_value < 0 || dim->dim_value > INT32_MAX))
            return err_set(e, ERR_CONFIG, "onnx: input '%s' dim %zu is %lld", vi->name, d,
                           (long long)dim->dim_value);
        s[d + 1] = dyn ? -1 : (int)dim->dim_value;
    }
    return ERR_OK;
}

static int load_inputs(struct onnx_model *m, const Onnx__GraphProto *g, struct err *e)
{
    m->inputs = calloc(g->n_input + 1, sizeof(int));
    m->in_shape = calloc(g->n_input + 1, sizeof(*m->in_shape));
    if (!m->inputs || !m->in_shape)
        return err_set(e, ERR_NOMEM, "onnx: out of memory");
    for (size_t i = 0; i < g->n_input; i++) {
        const Onnx__ValueInfoProto *vi = g->input[i];
        int k;

        if (!vi->name || !*vi->name)
            return err_set(e, ERR_CONFIG, "onnx: graph input %zu has no name", i);
        if (find_value(m, vi->name) >= 0)
            continue; /* an initializer listed as input (IR < 4): a constant */
        k = add_value(m, vi->name, e);
        if (k < 0)
            return e->code;
        m->vals[k].is_input = 1;
        m->inputs[m->n_inputs] = k;
        if (input_type(m, m->n_inputs++, vi, e))
            return e->code;
    }
    return ERR_OK;
}

static int load_outputs(struct onnx_model *m, const Onnx__GraphProto *g, struct err *e)
{
    if (g->n_output == 0)
        return err_set(e, ERR_CONFIG, "onnx: the graph has no outputs");
    m->outputs = calloc(g->n_output, sizeof(int));
    if (!m->outputs)
        return err_set(e, ERR_NOMEM, "onnx: out of memory");
    for (size_t i = 0; i < g->n_output; i++) {
        int k = g->output[i]->name ? find_value(m, g->output[i]->name) : -1;
        if (k < 0)
            return err_set(e, ERR_CONFIG, "onnx: graph output '%s' is not produced by any node",
                           g->output[i]->name ? g->output[i]->name : "");
        m->vals[k].is_output = 1;
        m->outputs[m->n_outputs++] = k;
    }
    return ERR_OK;
}

/* ---- nodes ---- */

static int bind_inputs(struct onnx_model *m, struct onnx_node *n, const Onnx__NodeProto *p,
                       struct err *e)
{
    for (size_t k = 0; k < p->n_input; k++) {
        int v = -1;
        if (p->input[k] && *p->input[k]) {
            v = find_value(m, p->input[k]);
            if (v < 0)
                return err_set(e, ERR_CONFIG,
                               "onnx: node %s (%s): input '%s' is not defined before use", n->name,
                               n->op, p->input[k]);
            m->vals[v].uses++;
            m->vals[v].last_use = (int)(n - m->nodes);
        }
        n->in[k] = v;
    }
    n->n_in = (int)p->n_input;
    return ERR_OK;
}

static int bind_outputs(struct onnx_model *m, struct onnx_node *n, const Onnx__NodeProto *p,
                        struct err *e)
{
    for (size_t k = 0; k < p->n_output; k++) {
        int v = -1;
        if (p->output[k] && *p->output[k]) {
            if (find_value(m, p->output[k]) >= 0)
                return err_set(e, ERR_CONFIG, "onnx: node %s (%s): output '%s' defined twice",
                               n->name, n->op, p->output[k]);
            v = add_value(m, p->output[k], e);
            if (v < 0)
                return e->code;
        }
        n->out[k] = v;
    }
    n->n_out = (int)p->n_output;
    return ERR_OK;
}

static int load_node(struct onnx_model *m, size_t i, const Onnx__NodeProto *p, struct err *e)
{
    struct onnx_node *n = &m->nodes[i];
    const struct onnx_opdef *def;

    n->op = p->op_type ? p->op_type : "";
    snprintf(n->label, sizeof(n->label), "#%zu", i);
    n->name = p->name && *p->name ? p->name : n->label;
    if (p->domain && *p->domain && strcmp(p->domain, "ai.onnx") != 0)
        return err_set(e, ERR_CONFIG, "onnx: node %s: op %s of domain '%s' is not supported",
                       n->name, n->op, p->domain);
    def = onnx_op_find(n->op);
    if (!def)
        return err_set(e, ERR_CONFIG, "onnx: unsupported op %s (node %s)", n->op, n->name);
    if ((int)p->n_input < def->min_in || (int)p->n_input > def->max_in ||
        (int)p->n_output < def->min_out || (int)p->n_output > def->max_out)
        return err_set(e, ERR_CONFIG,
                       "onnx: node %s (%s): %zu inputs, %zu outputs (expected %d..%d, %d..%d)",
                       n->name, n->op, p->n_input, p->n_output, def->min_in, def->max_in,
                       def->min_out, def->max_out);
    n->run = def->run;
    n->p = p;
    if (bind_inputs(m, n, p, e) || bind_outputs(m, n, p, e))
        return e->code;
    /* An empty name ("") omits an optional input; a required one cannot be
     * omitted (fuzzing: a Conv without W reached its kernel). */
    for (int k = 0; k < def->min_in; k++)
        if (n->in[k] < 0)
            return err_set(e, ERR_CONFIG, "onnx: node %s (%s): required input %d is empty",
                           n->name, n->op, k);
    if (def->prep && def->prep(n, p, e))
        return err_wrap(e, "onnx: node %s (%s)", n->name, n->op);
    return ERR_OK;
}

static int load_nodes(struct onnx_model *m, const Onnx__GraphProto *g, struct err *e)
{
    m->nodes = calloc(g->n_node + 1, sizeof(*m->nodes));
    if (!m->nodes)
        return err_set(e, ERR_NOMEM, "onnx: out of memory for %zu nodes", g->n_node);
    m->n_nodes = g->n_node;
    for (size_t i = 0; i < g->n_node; i++)
        if (load_node(m, i, g->node[i], e))
            return e->code;
    return ERR_OK;
}

/* ---- the model file ---- */

static int read_file(const char *path, uint8_t **buf, size_t *len, struct err *e)
{
    struct stat st;
    FILE *f = fopen(path, "rb");

    if (!f)
        return err_set(e, ERR_IO, "onnx: %s: %s", path, strerror(errno));
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return err_set(e, ERR_IO, "onnx: %s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > ONNX_MAX_FILE_BYTES || st.st_size == 0) {
        fclose(f);
        return err_set(e, ERR_CONFIG, "onnx: %s: %lld bytes (1..%zu accepted)", path,
                       (long long)st.st_size, ONNX_MAX_FILE_BYTES);
    }
    *len = (size_t)st.st_size;
    *buf = malloc(*len);
    if (!*buf || fread(*buf, 1, *len, f) != *len) {
        fclose(f);
        free(*buf);
        *buf = NULL;
        return err_set(e, ERR_IO, "onnx: %s: read failed", path);
    }
    fclose(f);
    return ERR_OK;
}

static int check_opset(struct onnx_model *m, const Onnx__ModelProto *p, struct err *e)
{
    m->opset = -1;
    for (size_t i = 0; i < p->n_opset_import; i++) {
        const char *d = p->opset_import[i]->domain;
        if (!d || !*d || strcmp(d, "ai.onnx") == 0)
            m->opset = p->opset_import[i]->version;
    }
    if (m->opset < 0)
        return err_set(e, ERR_CONFIG, "onnx: no opset import for the default domain");
    if (m->opset < OPSET_MIN || m->opset > OPSET_MAX)
        return err_set(e, ERR_CONFIG,
                       "onnx: opset %lld is not supported (%d..%d; re-export with "
                       "torch.onnx.export(..., opset_version=17))",
                       (long long)m->opset, OPSET_MIN, OPSET_MAX);
    return ERR_OK;
}

static int parse_model(struct onnx_model *m, const char *path, struct err *e)
{
    uint8_t *buf = NULL;
    size_t len = 0;

    if (read_file(path, &buf, &len, e))
        return e->code;
    m->proto = onnx__model_proto__unpack(NULL, len, buf);
    free(buf);
    if (!m->proto)
        return err_set(e, ERR_DECODE,
                       "onnx: %s: not an ONNX model (protobuf decoding failed: "
                       "truncated or not a ModelProto)",
                       path);
    if (!m->proto->graph)
        return err_set(e, ERR_DECODE, "onnx: %s: no graph in the file (not an ONNX model?)", path);
    snprintf(m->producer, sizeof(m->producer), "%s%s%s",
             m->proto->producer_name ? m->proto->producer_name : "",
             m->proto->producer_version ? " " : "",
             m->proto->producer_version ? m->proto->producer_version : "");
    if (check_opset(m, m->proto, e))
        return err_wrap(e, "%s", path);
    return ERR_OK;
}

/* ---- load-time passes ---- */

static void release_dead(struct onnx_model *m, size_t i)
{
    const struct onnx_node *n = &m->nodes[i];

    for (int k = 0; k < n->n_in; k++) {
        struct onnx_value *v = n->in[k] >= 0 ? &m->vals[n->in[k]] : NULL;
        if (v && v->last_use == (int)i && !v->is_const && !v->is_output && !v->is_input) {
            onnx_buf_give(m, v);
            v->defined = 0;
        }
    }
}

static int all_inputs_const(const struct onnx_model *m, const struct onnx_node *n)
{
    for (int k = 0; k < n->n_in; k++)
        if (n->in[k] >= 0 && !m->vals[n->in[k]].is_const)
            return 0;
    return 1;
}

/* Runs nodes whose inputs are all constants (Constant, Identity of weights,
 * shape arithmetic on constants) once; their outputs become constants. */
static int fold_constants(struct onnx_model *m, struct err *e)
{
    for (size_t i = 0; i < m->n_nodes; i++) {
        struct onnx_node *n = &m->nodes[i];
        if (!all_inputs_const(m, n))
            continue;
        if (n->run(m, n, e))
            return err_wrap(e, "onnx: node %s (%s)", n->name, n->op);
        n->folded = 1;
        for (int k = 0; k < n->n_out; k++)
            if (n->out[k] >= 0)
                m->vals[n->out[k]].is_const = 1;
    }
    return ERR_OK;
}

/* Conv -> activation, when the Conv output feeds only that activation:
 * the activation is applied while the Conv output is still in cache. The
 * SiLU pattern x * sigmoid(x) (EfficientNet) counts as one activation. */
static void fuse_activations(struct onnx_model *m)
{
    for (size_t i = 0; i + 1 < m->n_nodes; i++) {
        struct onnx_node *c = &m->nodes[i], *a = &m->nodes[i + 1], *mul = NULL;
        int kind;
        float pa, pb;
        int y = c->out[0];

        if (c->folded || strcmp(c->op, "Conv") != 0 || c->a.act != ACT_NONE || y < 0 ||
            m->vals[y].is_output || a->folded || a->n_in < 1 || a->in[0] != y)
            continue;
        if (strcmp(a->op, "Sigmoid") == 0 && m->vals[y].uses == 2 && i + 2 < m->n_nodes) {
            mul = &m->nodes[i + 2];
            int s = a->out[0];
            if (strcmp(mul->op, "Mul") != 0 || m->vals[s].uses != 1 || m->vals[s].is_output ||
                !((mul->in[0] == y && mul->in[1] == s) || (mul->in[0] == s && mul->in[1] == y)))
                continue;
            c->a.act = ACT_SILU;
            c->out[0] = mul->out[0];
            a->folded = mul->folded = 1;
            continue;
        }
        if (m->vals[y].uses != 1 || !onnx_op_fusable_act(m, a, &kind, &pa, &pb))
            continue;
        c->a.act = kind;
        c->a.act_a = pa;
        c->a.act_b = pb;
        c->out[0] = a->out[0];
        a->folded = 1;
    }
}

/* Inputs of zeros (dynamic dims = 1) through the whole graph: every shape
 * and index is checked once at load. */
static int dry_run(struct onnx_model *m, struct err *e)
{
    struct onnx_tensor in[64], out[1];
    void *data[64] = {0};
    int rc = ERR_OK;

    if (m->n_inputs > 64)
        return err_set(e, ERR_CONFIG, "onnx: %zu inputs (at most 64)", m->n_inputs);
    for (size_t i = 0; i < m->n_inputs; i++) {
        in[i].dtype = m->vals[m->inputs[i]].t.dtype;
        in[i].ndim = m->in_shape[i][0];
        for (int d = 0; d < in[i].ndim; d++)
            in[i].dims[d] = m->in_shape[i][d + 1] < 0 ? 1 : m->in_shape[i][d + 1];
        data[i] = calloc(onnx_numel(&in[i]) + 1, onnx_dtype_size(in[i].dtype));
        in[i].data = data[i];
        if (!data[i])
            rc = err_set(e, ERR_NOMEM, "onnx: out of memory for the dry run");
    }
    if (rc == ERR_OK && onnx_run(m, in, m->n_inputs, out, 1, e))
        rc = err_wrap(e, "onnx: dry run on zeros");
    for (size_t i = 0; i < m->n_inputs; i++)
        free(data[i]);
    return rc;
}

/* Kept values are treated as graph outputs by the passes and the pool. */
static int mark_kept(struct onnx_model *m, const char *const *keep, size_t n_keep, struct err *e)
{
    for (size_t i = 0; i < n_keep; i++) {
        int k = find_value(m, keep[i]);
        if (k < 0)
            return err_set(e, ERR_CONFIG, "onnx: no value named '%s' to keep", keep[i]);
        m->vals[k].is_output = 1;
        m->vals[k].is_kept = 1;
    }
    return ERR_OK;
}

int onnx_open(struct onnx_model **out, const char *path, struct err *e)
{
    return onnx_open_keep(out, path, NULL, 0, e);
}

int onnx_open_keep(struct onnx_model **out, const char *path, const char *const *keep,
                   size_t n_keep, struct err *e)
{
    struct onnx_model *m = calloc(1, sizeof(*m));
    const Onnx__GraphProto *g;

    *out = NULL;
    if (!m)
        return err_set(e, ERR_NOMEM, "onnx: out of memory");
    m->threads = 1;
    if (parse_model(m, path, e))
        goto fail;
    g = m->proto->graph;
    if (load_initializers(m, g, e) || load_inputs(m, g, e) || load_nodes(m, g, e) ||
        load_outputs(m, g, e) || mark_kept(m, keep, n_keep, e)) {
        err_wrap(e, "%s", path);
        goto fail;
    }
    if (fold_constants(m, e))
        goto fail_wrap;
    fuse_activations(m);
    if (dry_run(m, e))
        goto fail_wrap;
    *out = m;
    return ERR_OK;
fail_wrap:
    err_wrap(e, "%s", path);
fail:
    onnx_close(m);
    return e->code;
}

void onnx_close(struct onnx_model *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_vals; i++)
        free(m->vals[i].buf);
    for (size_t i = 0; i < m->n_pool; i++)
        free(m->pool[i].p);
    free(m->pool);
    free(m->vals);
    free(m->nodes);
    free(m->inputs);
    free(m->outputs);
    free(m->in_shape);
    free(m->scratch);
    if (m->proto)
        onnx__model_proto__free_unpacked(m->proto, NULL);
    free(m);
}

/* ---- running ---- */

static int check_input(const struct onnx_model *m, size_t i, const struct onnx_tensor *t,
                       struct err *e)
{
    const struct onnx_value *v = &m->vals[m->inputs[i]];
    const int *s = m->in_shape[i];

    if (t->dtype != v->t.dtype)
        return err_set(e, ERR_INVALID, "onnx: input '%s' must be %s", v->name,
                       v->t.dtype == ONNX_F32 ? "float32" : "int64");
    if (t->ndim != s[0])
        return err_set(e, ERR_INVALID, "onnx: input '%s' has %d dims, the model expects %d",
                       v->name, t->ndim, s[0]);
    for (int d = 0; d < t->ndim; d++)
        if ((s[d + 1] >= 0 && t->dims[d] != s[d + 1]) || t->dims[d] < 0)
            return err_set(e, ERR_INVALID, "onnx: input '%s' dim %d is %lld, the model expects %d",
                           v->name, d, (long long)t->dims[d], s[d + 1]);
    if (onnx_count(t->ndim, t->dims) < 0 || (!t->data && onnx_numel(t)))
        return err_set(e, ERR_INVALID, "onnx: input '%s' is too large or has no data", v->name);
    if (t->dtype == ONNX_F32) {
        const float *x = t->data;
        for (size_t j = 0, n = onnx_numel(t); j < n; j++)
            if (!isfinite(x[j]))
                return err_set(e, ERR_INVALID, "onnx: input '%s' element %zu is %g", v->name, j,
                               (double)x[j]);
    }
    return ERR_OK;
}

static int bind_run_inputs(struct onnx_model *m, const struct onnx_tensor *inputs, size_t n_in,
                           struct err *e)
{
    if (n_in != m->n_inputs)
        return err_set(e, ERR_INVALID, "onnx: %zu inputs given, the model has %zu", n_in,
                       m->n_inputs);
    for (size_t i = 0; i < n_in; i++) {
        struct onnx_value *v = &m->vals[m->inputs[i]];
        if (check_input(m, i, &inputs[i], e))
            return e->code;
        v->t = inputs[i];
        v->defined = 1;
    }
    return ERR_OK;
}

int onnx_run(struct onnx_model *m, const struct onnx_tensor *inputs, size_t n_in,
             struct onnx_tensor *outputs, size_t n_out, struct err *e)
{
    if (n_out > m->n_outputs)
        return err_set(e, ERR_INVALID, "onnx: %zu outputs asked, the model has %zu", n_out,
                       m->n_outputs);
    if (bind_run_inputs(m, inputs, n_in, e))
        return e->code;
    for (size_t i = 0; i < m->n_nodes; i++) {
        struct onnx_node *n = &m->nodes[i];
        if (n->folded)
            continue;
        if (n->run(m, n, e))
            return err_wrap(e, "onnx: node %s (%s)", n->name, n->op);
        release_dead(m, i);
    }
    for (size_t i = 0; i < n_out; i++)
        outputs[i] = m->vals[m->outputs[i]].t;
    return ERR_OK;
}

/* ---- accessors ---- */

size_t onnx_num_inputs(const struct onnx_model *m)
{
    return m->n_inputs;
}

const char *onnx_input_name(const struct onnx_model *m, size_t i)
{
    return i < m->n_inputs ? m->vals[m->inputs[i]].name : NULL;
}

size_t onnx_num_outputs(const struct onnx_model *m)
{
    return m->n_outputs;
}

const char *onnx_output_name(const struct onnx_model *m, size_t i)
{
    return i < m->n_outputs ? m->vals[m->outputs[i]].name : NULL;
}

int onnx_input_shape(const struct onnx_model *m, size_t i, int *ndim, int64_t dims[8])
{
    if (i >= m->n_inputs)
        return ERR_NOTFOUND;
    *ndim = m->in_shape[i][0];
    for (int d = 0; d < *ndim; d++)
        dims[d] = m->in_shape[i][d + 1];
    return ERR_OK;
}

enum onnx_dtype onnx_input_dtype(const struct onnx_model *m, size_t i)
{
    return i < m->n_inputs ? m->vals[m->inputs[i]].t.dtype : ONNX_F32;
}

const struct onnx_tensor *onnx_value(const struct onnx_model *m, const char *name)
{
    int k = find_value(m, name);
    const struct onnx_value *v = k >= 0 ? &m->vals[k] : NULL;

    if (!v || !(v->is_const || v->is_input || v->is_output) || !v->defined)
        return NULL;
    return &v->t;
}

const struct onnx_tensor *onnx_initializer(const struct onnx_model *m, const char *name)
{
    const Onnx__GraphProto *g = m->proto->graph;

    for (size_t i = 0; i < g->n_initializer; i++)
        if (strcmp(g->initializer[i]->name, name) == 0)
            return &m->vals[find_value(m, name)].t;
    return NULL;
}

const char *onnx_metadata(const struct onnx_model *m, const char *key)
{
    for (size_t i = 0; i < m->proto->n_metadata_props; i++) {
        const Onnx__StringStringEntryProto *p = m->proto->metadata_props[i];
        if (p->key && strcmp(p->key, key) == 0)
            return p->value ? p->value : "";
    }
    return NULL;
}

size_t onnx_num_metadata(const struct onnx_model *m)
{
    return m->proto->n_metadata_props;
}

const char *onnx_metadata_key(const struct onnx_model *m, size_t i)
{
    if (i >= m->proto->n_metadata_props || !m->proto->metadata_props[i]->key)
        return NULL;
    return m->proto->metadata_props[i]->key;
}

int64_t onnx_opset(const struct onnx_model *m)
{
    return m->opset;
}

const char *onnx_producer(const struct onnx_model *m)
{
    return m->producer;
}

size_t onnx_num_nodes(const struct onnx_model *m)
{
    return m->n_nodes;
}

const char *onnx_node_op(const struct onnx_model *m, size_t i)
{
    return i < m->n_nodes ? m->nodes[i].op : NULL;
}
