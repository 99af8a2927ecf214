/* common/onnx_exec.c: what the ONNX kernels call back into (onnx_impl.h):
 * sizes, the thread helper, values' buffers from the pool, node inputs and
 * outputs, scratch, tensors from protos. Split from onnx.c (the loader and
 * executor) so that the calls go one way: onnx.c -> onnx_ops*.c ->
 * onnx_exec.c, and onnx.c -> onnx_exec.c, with no circle (issue 16). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx_impl.h"

size_t onnx_dtype_size(enum onnx_dtype dt)
{
    return dt == ONNX_I64 ? sizeof(int64_t) : dt == ONNX_BOOL ? 1 : sizeof(float);
}

int64_t onnx_count(int ndim, const int64_t *dims)
{
    int64_t n = 1;

    for (int i = 0; i < ndim; i++) {
        if (dims[i] < 0 || (dims[i] > 0 && n > ONNX_MAX_ELEMS / dims[i]))
            return -1;
        n *= dims[i];
    }
    return n;
}

size_t onnx_numel(const struct onnx_tensor *t)
{
    int64_t n = onnx_count(t->ndim, t->dims);

    return n < 0 ? 0 : (size_t)n;
}

/* ---- threads ---- */

struct par_job {
    onnx_chunk_fn fn;
    void *arg;
    int64_t b, e;
    int tid;
};

static void *par_main(void *p)
{
    struct par_job *j = p;

    j->fn(j->arg, j->b, j->e, j->tid);
    return NULL;
}

/* Threads are started per call: a layer is ~0.1-10 ms, a start ~20 us. A
 * thread that cannot be started runs its chunk on the caller. */
void onnx_parallel(const struct onnx_model *m, onnx_chunk_fn fn, void *arg, int64_t n)
{
    struct par_job jobs[ONNX_MAX_THREADS];
    pthread_t th[ONNX_MAX_THREADS];
    int started[ONNX_MAX_THREADS] = {0};
    int t = m->threads < n ? m->threads : (int)n;

    if (t <= 1) {
        fn(arg, 0, n, 0);
        return;
    }
    for (int i = 0; i < t; i++)
        jobs[i] = (struct par_job){fn, arg, n * i / t, n * (i + 1) / t, i};
    for (int i = 1; i < t; i++)
        started[i] = pthread_create(&th[i], NULL, par_main, &jobs[i]) == 0;
    for (int i = 0; i < t; i++)
        if (i == 0 || !started[i])
            par_main(&jobs[i]);
    for (int i = 1; i < t; i++)
        if (started[i])
            pthread_join(th[i], NULL);
}

/* ---- values and buffers ---- */

/* Best fit from the pool, else a fresh buffer; v->buf must be NULL. */
static int take_buffer(struct onnx_model *m, struct onnx_value *v, size_t bytes, struct err *e)
{
    size_t best = m->n_pool;

    for (size_t i = 0; i < m->n_pool; i++)
        if (m->pool[i].cap >= bytes && (best == m->n_pool || m->pool[i].cap < m->pool[best].cap))
            best = i;
    if (best == m->n_pool && m->n_pool > 0) {
        /* Nothing large enough: grow the largest free one. */
        best = 0;
        for (size_t i = 1; i < m->n_pool; i++)
            if (m->pool[i].cap > m->pool[best].cap)
                best = i;
        void *p = realloc(m->pool[best].p, bytes);
        if (!p)
            return err_set(e, ERR_NOMEM, "onnx: out of memory (%zu bytes)", bytes);
        m->pool[best].p = p;
        m->pool[best].cap = bytes;
    }
    if (best < m->n_pool) {
        v->buf = m->pool[best].p;
        v->cap = m->pool[best].cap;
        m->pool[best] = m->pool[--m->n_pool];
        return ERR_OK;
    }
    v->buf = malloc(bytes ? bytes : 1);
    if (!v->buf)
        return err_set(e, ERR_NOMEM, "onnx: out of memory (%zu bytes)", bytes);
    v->cap = bytes;
    return ERR_OK;
}

int onnx_buf_give(struct onnx_model *m, struct onnx_value *v)
{
    if (!v->buf)
        return ERR_OK;
    if (m->n_pool == m->cap_pool) {
        size_t cap = m->cap_pool ? 2 * m->cap_pool : 64;
        struct onnx_buf *p = realloc(m->pool, cap * sizeof(*p));
        if (!p) {
            free(v->buf); /* lose the reuse, not the memory */
            v->buf = NULL;
            return ERR_NOMEM;
        }
        m->pool = p;
        m->cap_pool = cap;
    }
    m->pool[m->n_pool].p = v->buf;
    m->pool[m->n_pool++].cap = v->cap;
    v->buf = NULL;
    v->cap = 0;
    return ERR_OK;
}

const struct onnx_tensor *onnx_in(struct onnx_model *m, const struct onnx_node *n, int k)
{
    if (k >= n->n_in || n->in[k] < 0)
        return NULL;
    return &m->vals[n->in[k]].t;
}

void *onnx_out(struct onnx_model *m, struct onnx_node *n, int k, enum onnx_dtype dt, int ndim,
               const int64_t *dims, struct err *e)
{
    struct onnx_value *v;
    int64_t count = onnx_count(ndim, dims);
    size_t bytes;

    if (k >= n->n_out || n->out[k] < 0)
        return NULL;
    if (count < 0 || ndim > ONNX_MAX_DIMS) {
        err_set(e, ERR_INVALID, "output %d: shape too large or negative", k);
        return NULL;
    }
    v = &m->vals[n->out[k]];
    bytes = (size_t)count * onnx_dtype_size(dt);
    if (v->buf && v->cap < bytes)
        onnx_buf_give(m, v);
    if (!v->buf && take_buffer(m, v, bytes, e))
        return NULL;
    v->t.dtype = dt;
    v->t.ndim = ndim;
    memcpy(v->t.dims, dims, (size_t)ndim * sizeof(int64_t));
    v->t.data = v->buf;
    v->defined = 1;
    return v->buf;
}

float *onnx_scratch(struct onnx_model *m, size_t n, struct err *e)
{
    /* The tensor limit holds for scratch too (fuzzing: a Conv whose im2col
     * buffer wanted 1.3 GB at load time). */
    if (n > (size_t)ONNX_MAX_ELEMS) {
        err_set(e, ERR_CONFIG, "onnx: scratch of %zu floats exceeds the %lld-element limit", n,
                (long long)ONNX_MAX_ELEMS);
        return NULL;
    }
    if (n > m->scratch_cap) {
        float *p = realloc(m->scratch, n * sizeof(float));
        if (!p) {
            err_set(e, ERR_NOMEM, "onnx: out of memory for %zu scratch floats", n);
            return NULL;
        }
        m->scratch = p;
        m->scratch_cap = n;
    }
    return m->scratch;
}

/* ---- initializers ---- */

static int tensor_dims(struct onnx_tensor *t, const Onnx__TensorProto *tp, const char *what,
                       struct err *e)
{
    if (tp->n_dims > ONNX_MAX_DIMS)
        return err_set(e, ERR_CONFIG, "onnx: %s '%s' has %zu dims (at most %d)", what, tp->name,
                       tp->n_dims, ONNX_MAX_DIMS);
    t->ndim = (int)tp->n_dims;
    for (size_t i = 0; i < tp->n_dims; i++)
        t->dims[i] = tp->dims[i];
    if (onnx_count(t->ndim, t->dims) < 0)
        return err_set(e, ERR_CONFIG, "onnx: %s '%s': dims negative or over %lld elements", what,
                       tp->name, (long long)ONNX_MAX_ELEMS);
    return ERR_OK;
}

/* Checks tp (dtype, dims, data length) and points *src at its data. */
int onnx_proto_tensor(const Onnx__TensorProto *tp, struct onnx_tensor *t, const void **src,
                      const char *what, struct err *e)
{
    int dt = tp->has_data_type ? tp->data_type : 0;
    const char *name = tp->name ? tp->name : "";
    size_t n, es, have;

    if (dt != ONNX_F32 && dt != ONNX_I64 && dt != ONNX_BOOL)
        return err_set(e, ERR_CONFIG,
                       "onnx: %s '%s' has data type %d (float32=1, int64=7, bool=9 supported)",
                       what, name, dt);
    t->dtype = (enum onnx_dtype)dt;
    if (tensor_dims(t, tp, what, e))
        return e->code;
    if (tp->has_data_location && tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)
        return err_set(e, ERR_CONFIG, "onnx: %s '%s' uses external data (not supported)", what,
                       name);
    n = onnx_numel(t);
    es = onnx_dtype_size(t->dtype);
    if (tp->has_raw_data) {
        *src = tp->raw_data.data;
        have = tp->raw_data.len;
    } else if (t->dtype == ONNX_F32) {
        *src = tp->float_data;
        have = tp->n_float_data * es;
    } else if (t->dtype == ONNX_BOOL) {
        if (tp->n_int32_data) /* legal ONNX, but not what torch or onnx.helper write */
            return err_set(e, ERR_CONFIG, "onnx: %s '%s': bools in int32_data (raw_data only)",
                           what, name);
        *src = NULL;
        have = 0;
    } else {
        *src = tp->int64_data;
        have = tp->n_int64_data * es;
    }
    if (have != n * es)
        return err_set(e, ERR_CONFIG, "onnx: %s '%s': %zu bytes of data for %zu elements", what,
                       name, have, n);
    return ERR_OK;
}

/* A TensorProto (initializer) as an owned onnx_tensor. */
