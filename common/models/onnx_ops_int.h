/* common/models/onnx_ops_int.h: internal: only onnx_ops*.c include it. The
 * kernels and helpers the op table (onnx_ops.c) shares with the files
 * onnx_ops.c was split into. Not for other modules: onnx_ops.h is the
 * runtime's internal interface. */
#ifndef STREAMML_ONNX_OPS_INT_H
#define STREAMML_ONNX_OPS_INT_H

#include "onnx_impl.h"

/* Helpers and kernels shared by the onnx_ops*.c files (were static in one
 * onnx_ops.c); the op table in onnx_ops.c names the kernels. */

/* onnx_ops.c */
void bstrides(const struct onnx_tensor *t, int nd, const int64_t *odims, int64_t *st);

/* onnx_ops_data.c */
int k_identity(struct onnx_model *m, struct onnx_node *n, struct err *e);
int p_reshape(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e);
int k_reshape(struct onnx_model *m, struct onnx_node *n, struct err *e);
int p_axis(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e);
int k_flatten(struct onnx_model *m, struct onnx_node *n, struct err *e);
int axes_flags(const int64_t *axes, int len, int rank, int *flags, struct err *e);
int k_squeeze(struct onnx_model *m, struct onnx_node *n, struct err *e);
int k_unsqueeze(struct onnx_model *m, struct onnx_node *n, struct err *e);
int p_shape(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e);
int k_shape(struct onnx_model *m, struct onnx_node *n, struct err *e);
int k_gather(struct onnx_model *m, struct onnx_node *n, struct err *e);
int k_concat(struct onnx_model *m, struct onnx_node *n, struct err *e);
void contiguous_strides(int nd, const int64_t *dims, int64_t *st);
int p_transpose(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e);
int k_transpose(struct onnx_model *m, struct onnx_node *n, struct err *e);
int k_slice(struct onnx_model *m, struct onnx_node *n, struct err *e);
int k_expand(struct onnx_model *m, struct onnx_node *n, struct err *e);
int p_pad(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e);
int k_pad(struct onnx_model *m, struct onnx_node *n, struct err *e);
int p_cast(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e);
double elem_f64(const struct onnx_tensor *t, size_t i);
int k_cast(struct onnx_model *m, struct onnx_node *n, struct err *e);
int p_constant(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e);
int k_constant(struct onnx_model *m, struct onnx_node *n, struct err *e);
int p_const_of_shape(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e);
int k_const_of_shape(struct onnx_model *m, struct onnx_node *n, struct err *e);

/* onnx_ops_reduce.c */
int k_softmax(struct onnx_model *m, struct onnx_node *n, struct err *e);
int k_logsoftmax(struct onnx_model *m, struct onnx_node *n, struct err *e);
int p_reduce(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e);
int k_reduce_mean(struct onnx_model *m, struct onnx_node *n, struct err *e);

#endif
