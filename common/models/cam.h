/* common/models/cam.h: class-activation maps (prefix cam_).
 *
 * For a CNN that ends in global average pooling and one Linear layer, the
 * evidence for class k at each cell of the last feature map is
 * sum_c W[k][c] * F[c][y][x] (Zhou et al., "Learning Deep Features for
 * Discriminative Localization", 2016). We keep the positive part (ReLU)
 * and scale it to [0, 1] by its maximum; a deeper head gets Grad-CAM
 * (cam_gradcam). The overlay on the photograph is common/models/overlay.h's.
 *
 * Pure functions over caller-owned buffers: no allocation, any thread.
 */
#ifndef STREAMML_CAM_H
#define STREAMML_CAM_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "image.h"

/* grid[h * w] = normalised ReLU(W[k] . F). weights: n_classes x channels,
 * row-major (torch Linear / ONNX Gemm transB=1 layout); features:
 * channels x h x w. A map with no positive cell stays all zero.
 * ERR_INVALID if k is out of range or a value is not finite. */
int cam_grid(const float *weights, int n_classes, int channels, const float *features, int h,
             int w, int k, float *grid, struct err *e);

/* Grad-CAM (Selvaraju et al. 2017) for a head of global average pooling
 * then any chain of these layers (Dropout is the identity at inference and
 * is left out; Flatten/Reshape of the pooled vector too): */
enum cam_layer_kind {
    CAM_DENSE, /* y = W a (+ b): Gemm, MatMul with a constant, Linear */
    CAM_ADD,   /* y = a + b: a separate bias Add */
    CAM_RELU   /* y = max(a, 0) */
};
#define CAM_MAX_LAYERS 16
struct cam_layer {
    enum cam_layer_kind kind;
    const float *w; /* CAM_DENSE: out x in row-major (Gemm transB=1), or in x out when
                     * transposed (MatMul's B, Gemm transB=0) */
    const float *b; /* CAM_DENSE (may be NULL), CAM_ADD: out values */
    int in, out;    /* sizes; CAM_ADD and CAM_RELU: in == out */
    int transposed;
};
/* Floats of scratch cam_gradcam needs. */
size_t cam_gradcam_scratch(const struct cam_layer *layers, size_t n, int channels);
/* grid[h * w]: the score of class k back-propagated through the head to the
 * pooled vector weights the feature maps (alpha_c = d y_k / d F[c] averaged
 * over the cells); ReLU of the weighted sum, minus its minimum, divided by
 * (its maximum + 1e-8), as the seed computes it. features: channels x h x w.
 * ERR_INVALID naming the culprit: sizes that do not chain (layer i's in is
 * not the width so far), k out of the last layer's range, a non-finite
 * value. Plain CAM (cam_grid) is the fast path for a one-Linear head. */
int cam_gradcam(const struct cam_layer *layers, size_t n_layers, int channels,
                const float *features, int h, int w, int k, float *grid, float *scratch,
                struct err *e);

#endif
