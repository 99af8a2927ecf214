/* common/cam.h: class-activation maps (prefix cam_).
 *
 * For a CNN that ends in global average pooling and one Linear layer, the
 * evidence for class k at each cell of the last feature map is
 * sum_c W[k][c] * F[c][y][x] (Zhou et al., "Learning Deep Features for
 * Discriminative Localization", 2016). We keep the positive part (ReLU),
 * scale it to [0, 1] by its maximum, upsample it bilinearly to the model's
 * input and blend a colour map over the input the model saw.
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

/* Overlay of the grid on the model input (planar normalised floats, as
 * img_preprocess wrote them, de-normalised with n): out gets n->width x
 * n->height 8-bit RGB, (1 - alpha * m) * input + alpha * m * jet(m) with m
 * the upsampled map. scratch: cam_overlay_scratch() floats. */
size_t cam_overlay_scratch(const struct img_norm *n, int gh, int gw);
void cam_overlay(const float *input, const struct img_norm *n, const float *grid, int gh, int gw,
                 float alpha, uint8_t *out, float *scratch);

#endif
