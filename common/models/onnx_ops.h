/* common/models/onnx_ops.h: helpers and kernels shared by onnx_ops.c and
 * onnx_nn.c. Internal to the ONNX runtime. */
#ifndef STREAMML_ONNX_OPS_H
#define STREAMML_ONNX_OPS_H

#include "onnx_impl.h"

/* Attributes of a node (ONNX AttributeProto). */
const Onnx__AttributeProto *onnx_attr(const Onnx__NodeProto *p, const char *name);
int onnx_attr_known(const Onnx__NodeProto *p, const char *known, struct err *e);
int64_t onnx_attr_i(const Onnx__NodeProto *p, const char *name, int64_t def);
float onnx_attr_f(const Onnx__NodeProto *p, const char *name, float def);
int onnx_attr_ints(const Onnx__NodeProto *p, const char *name, int64_t *out, int max,
                   struct err *e);
int onnx_attr_s_is(const Onnx__NodeProto *p, const char *name, const char *want);

/* Hot loops are compiled for AVX-512, AVX2+FMA and baseline x86-64, the
 * best chosen at load time (GCC function multi-versioning). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ONNX_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define ONNX_CLONES
#endif

/* 16 floats as one value: a zmm register with AVX-512, two ymm or four xmm
 * otherwise (GCC/clang vector extensions; memcpy gives unaligned loads). */
#define ONNX_LANES 16
typedef float onnx_v16f __attribute__((vector_size(ONNX_LANES * sizeof(float))));
typedef int32_t onnx_v16i __attribute__((vector_size(ONNX_LANES * sizeof(int32_t))));
typedef uint32_t onnx_v16u __attribute__((vector_size(ONNX_LANES * sizeof(uint32_t))));

int onnx_axis(int64_t axis, int rank);
int onnx_broadcast(const struct onnx_tensor *a, const struct onnx_tensor *b, int *nd, int64_t *out,
                   struct err *e);
float onnx_sigmoid(float x);
void onnx_sigmoid_vec(float *o, const float *x, size_t n); /* o may be x */
void onnx_activate(int act, float *x, size_t n, float p, float q);

/* onnx_nn.c */
int onnx_p_conv(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e);
int onnx_k_conv(struct onnx_model *m, struct onnx_node *n, struct err *e);
int onnx_p_batchnorm(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e);
int onnx_k_batchnorm(struct onnx_model *m, struct onnx_node *n, struct err *e);
int onnx_p_pool(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e);
int onnx_k_maxpool(struct onnx_model *m, struct onnx_node *n, struct err *e);
int onnx_k_avgpool(struct onnx_model *m, struct onnx_node *n, struct err *e);
int onnx_k_gap(struct onnx_model *m, struct onnx_node *n, struct err *e);
int onnx_p_gemm(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e);
int onnx_k_gemm(struct onnx_model *m, struct onnx_node *n, struct err *e);
int onnx_k_matmul(struct onnx_model *m, struct onnx_node *n, struct err *e);
int onnx_p_gru(struct onnx_node *n, const Onnx__NodeProto *p, struct err *e);
int onnx_k_gru(struct onnx_model *m, struct onnx_node *n, struct err *e);

#endif
