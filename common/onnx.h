/* common/onnx.h: ONNX models (torch.onnx.export, opset 13..17) run on the CPU.
 *
 * The file is parsed with protobuf-c (code generated from Debian's onnx.proto)
 * and compiled at load into a list of kernels over float32/int64 tensors:
 * convolutions through im2col + OpenBLAS sgemm (depthwise ones directly),
 * GRU with torch's semantics (linear_before_reset=1), elementwise ops with
 * NumPy broadcasting, and the shape plumbing torch exports emit. A model that
 * uses an op, attribute value or data type the runtime does not implement is
 * refused at load with the op and node named: it is never mis-run.
 *
 * A handle is not thread-safe: onnx_run writes its activations into buffers
 * owned by the handle (reused from run to run, so steady-state runs do not
 * allocate). Use one handle per thread.
 */
#ifndef STREAMML_ONNX_H
#define STREAMML_ONNX_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define ONNX_MAX_DIMS 8
#define ONNX_MAX_FILE_BYTES ((size_t)1 << 30) /* larger files are refused */

/* Values are TensorProto.DataType codes. Graph inputs are float32 or int64;
 * bool (one byte, 0 or 1) appears as the result of comparisons and may be a
 * graph output. */
enum onnx_dtype { ONNX_F32 = 1, ONNX_I64 = 7, ONNX_BOOL = 9 };

/* A dense row-major tensor. The data is borrowed: see each function. */
struct onnx_tensor {
    enum onnx_dtype dtype;
    int ndim;
    int64_t dims[ONNX_MAX_DIMS];
    void *data;
};

struct onnx_model;

/* Parses and checks path: size limit, opset 13..17 of the default domain,
 * every op supported (else ERR_CONFIG naming the op and node), initializer
 * sizes matching their dims, every node input defined before use; then runs
 * the graph once on zeros (dynamic dims taken as 1) so that shape errors
 * surface at load. 0 and *out set, or an ERR_* code with the reason in *e. */
int onnx_open(struct onnx_model **out, const char *path, struct err *e);
/* Same, and keeps the named intermediate values (e.g. the last conv
 * activations, for class-activation maps) readable with onnx_value after
 * each run: they are not fused away nor their buffers reused. A name that
 * is not a value of the graph is ERR_CONFIG. */
int onnx_open_keep(struct onnx_model **out, const char *path, const char *const *keep,
                   size_t n_keep, struct err *e);
void onnx_close(struct onnx_model *m); /* NULL-safe */

/* After a successful onnx_run: a kept value, an initializer or a graph
 * input/output by name (owned by m, valid until the next run); NULL if
 * unknown or not kept. */
const struct onnx_tensor *onnx_value(const struct onnx_model *m, const char *name);

/* Graph inputs that are not initializers, and graph outputs, in file order.
 * Names are owned by m. */
size_t onnx_num_inputs(const struct onnx_model *m);
const char *onnx_input_name(const struct onnx_model *m, size_t i);
size_t onnx_num_outputs(const struct onnx_model *m);
const char *onnx_output_name(const struct onnx_model *m, size_t i);
/* Declared shape of input i (-1 = dynamic dim); ERR_NOTFOUND past the end. */
int onnx_input_shape(const struct onnx_model *m, size_t i, int *ndim, int64_t dims[8]);
enum onnx_dtype onnx_input_dtype(const struct onnx_model *m, size_t i);

/* Threads for the runtime's own kernels (depthwise convolutions, fused
 * activations), 1..16, default 1; also sets OpenBLAS's thread count, which
 * is process-wide. Call before onnx_run, from the thread that runs m. */
void onnx_set_threads(struct onnx_model *m, int n);

/* Runs the graph. inputs are in model input order, their dtype and rank
 * must match the declaration and static dims must be equal (ERR_INVALID
 * naming the input otherwise). outputs[i] are filled with tensors whose
 * data is owned by m, valid until the next onnx_run or onnx_close. n_out
 * may be smaller than onnx_num_outputs (the first n_out are returned). */
int onnx_run(struct onnx_model *m, const struct onnx_tensor *inputs, size_t n_in,
             struct onnx_tensor *outputs, size_t n_out, struct err *e);

/* A named initializer (e.g. the final Linear weight, for class-activation
 * maps), owned by m; NULL if absent. */
const struct onnx_tensor *onnx_initializer(const struct onnx_model *m, const char *name);
/* Grad-CAM: the head after the last GlobalAveragePool, when it is a chain
 * of Gemm/MatMul/Add (constants), Relu, and Dropout/Flatten/Reshape
 * (identities at inference) up to a graph output. *feature = the pooled
 * value's name (owned by m: keep it with onnx_open_keep to read the maps),
 * layers[0..*n_layers) point into m's constants, *channels = the maps' C.
 * ERR_CONFIG naming the node that does not fit. */
struct cam_layer;
int onnx_gradcam_head(const struct onnx_model *m, const char **feature, struct cam_layer *layers,
                      size_t cap, size_t *n_layers, int *channels, struct err *e);

/* metadata_props value for key, owned by m; NULL if absent. */
const char *onnx_metadata(const struct onnx_model *m, const char *key);

/* For `model inspect`. */
int64_t onnx_opset(const struct onnx_model *m);
const char *onnx_producer(const struct onnx_model *m); /* "pytorch 1.13.0", "" if unset */
size_t onnx_num_nodes(const struct onnx_model *m);
/* Op type of node i in execution order (after load-time fusions, the
 * original op_type of each node is still reported). */
const char *onnx_node_op(const struct onnx_model *m, size_t i);
size_t onnx_num_metadata(const struct onnx_model *m);
const char *onnx_metadata_key(const struct onnx_model *m, size_t i);

/* The ops the runtime implements, in alphabetical order (for --help and
 * the README). */
size_t onnx_op_count(void);
const char *onnx_op_name(size_t i);

/* Bytes per element: 4, 8, 1. */
size_t onnx_dtype_size(enum onnx_dtype dt);
/* Elements of t (product of dims; 1 for a scalar). */
size_t onnx_numel(const struct onnx_tensor *t);

#endif
