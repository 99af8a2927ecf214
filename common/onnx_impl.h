/* common/onnx_impl.h: internals shared by onnx.c (loader, executor) and
 * onnx_ops*.c (kernels). Not part of the public API. */
#ifndef STREAMML_ONNX_IMPL_H
#define STREAMML_ONNX_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "onnx.h"
#include "onnx.pb-c.h" /* generated in $(BUILD)/gen */

#define ONNX_MAX_THREADS 16 /* onnx_set_threads' bound, onnx_parallel's jobs */
#define ONNX_MAX_IO 64                    /* inputs or outputs of one node */
#define ONNX_MAX_ELEMS (INT64_C(1) << 28) /* elements of one tensor (1 GiB of float32) */

/* A named value of the graph. Initializers and folded constants own their
 * data for the model's life; activations borrow a buffer from the pool
 * while they are live; graph inputs point at the caller's data. */
struct onnx_value {
    const char *name; /* owned by the proto */
    struct onnx_tensor t;
    void *buf;  /* owned buffer (NULL for a borrowed input) */
    size_t cap; /* bytes of buf */
    int is_const;
    int is_input;
    int is_output; /* a graph output or a kept value: never pooled, never fused away */
    int is_kept;
    int defined;  /* has a tensor in the current run */
    int uses;     /* nodes reading it */
    int last_use; /* index of the last node reading it; -1 if none */
};

/* Activation fused into a Conv or Gemm at load. */
enum onnx_act { ACT_NONE, ACT_RELU, ACT_CLIP, ACT_HSIG, ACT_HSWISH, ACT_SIGMOID, ACT_SILU };

/* Attributes of every supported op, parsed and checked at load. */
struct onnx_attrs {
    int64_t axis;
    int64_t axes[ONNX_MAX_DIMS];
    int n_axes;
    int has_axes;
    int64_t perm[ONNX_MAX_DIMS];
    int n_perm;
    int64_t kernel[2], strides[2], dilations[2], pads[4];
    int has_kernel;
    int64_t group;
    int ceil_mode, count_include_pad;
    int keepdims;
    int trans_a, trans_b;
    float alpha, beta, epsilon;
    int64_t hidden_size;
    int direction;      /* GRU: 0 forward, 1 reverse, 2 bidirectional */
    int64_t start, end; /* Shape */
    int has_end;
    int allowzero;
    int to;             /* Cast target dtype */
    int act;            /* enum onnx_act: fused activation */
    float act_a, act_b; /* its parameters (Clip min/max, HardSigmoid alpha/beta) */
    int64_t fill_i64;
    float fill_f32;
};

struct onnx_model;
struct onnx_node;
typedef int (*onnx_kernel)(struct onnx_model *m, struct onnx_node *n, struct err *e);

struct onnx_node {
    const char *op;   /* op_type, owned by the proto */
    const char *name; /* node name or "#index" */
    char label[24];   /* "#index" when the node is unnamed */
    onnx_kernel run;
    const Onnx__NodeProto *p;              /* attributes (Constant reads its value at load) */
    int in[ONNX_MAX_IO], out[ONNX_MAX_IO]; /* value indices; -1 = absent */
    int n_in, n_out;
    struct onnx_attrs a;
    int folded; /* computed at load (constant inputs) or fused away */
};

/* An op the runtime implements: arity and a prepare step that parses and
 * checks attributes (ERR_CONFIG naming the attribute) at load. */
struct onnx_opdef {
    const char *name;
    int min_in, max_in, min_out, max_out;
    int (*prep)(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e);
    onnx_kernel run;
};

struct onnx_model {
    Onnx__ModelProto *proto; /* owns names and metadata */
    int64_t opset;
    char producer[128];
    struct onnx_value *vals;
    size_t n_vals, cap_vals;
    struct onnx_node *nodes;
    size_t n_nodes;
    int *inputs, *outputs; /* value indices */
    size_t n_inputs, n_outputs;
    int (*in_shape)[ONNX_MAX_DIMS + 1]; /* per input: ndim, then dims (-1 dynamic) */
    /* Free activation buffers, reused best-fit across nodes and runs. */
    struct onnx_buf {
        void *p;
        size_t cap;
    } * pool;
    size_t n_pool, cap_pool;
    int threads;    /* for onnx_parallel */
    float *scratch; /* im2col and kernel temporaries */
    size_t scratch_cap;
};

const struct onnx_opdef *onnx_op_find(const char *name);

/* Returns v's buffer to m's pool (freed when the pool cannot grow). */
int onnx_buf_give(struct onnx_model *m, struct onnx_value *v);
/* Input k of n (NULL when absent), output k's value. */
const struct onnx_tensor *onnx_in(struct onnx_model *m, const struct onnx_node *n, int k);
/* Gives output k a buffer for dtype/shape; NULL on ERR_NOMEM/ERR_INVALID. */
void *onnx_out(struct onnx_model *m, struct onnx_node *n, int k, enum onnx_dtype dt, int ndim,
               const int64_t *dims, struct err *e);
/* A scratch area of at least n floats, owned by m. */
float *onnx_scratch(struct onnx_model *m, size_t n, struct err *e);
/* Product of dims, or -1 when it exceeds ONNX_MAX_ELEMS or a dim is < 0. */
int64_t onnx_count(int ndim, const int64_t *dims);
/* Runs fn over [0, n) split into at most m->threads contiguous chunks, one
 * per thread (the caller's included; tid 0..threads-1); returns when all
 * are done. fn must only write data owned by its chunk or its tid. */
typedef void (*onnx_chunk_fn)(void *arg, int64_t b, int64_t e, int tid);
void onnx_parallel(const struct onnx_model *m, onnx_chunk_fn fn, void *arg, int64_t n);
/* Checks tp (dtype f32/i64, dims, data length) into t and points *src at
 * its data (owned by tp). what names the tensor's role in messages. */
int onnx_proto_tensor(const Onnx__TensorProto *tp, struct onnx_tensor *t, const void **src,
                      const char *what, struct err *e);
/* Conv + activation fusion helper for the loader. */
int onnx_op_fusable_act(struct onnx_model *m, const struct onnx_node *act, int *kind, float *a,
                        float *b);

#endif
