/* common/models/npy.h: NumPy .npy files (format 1.0, 2.0, 3.0) of float32, int64 or bool,
 * little-endian, C order, so that model inputs and outputs can be exchanged
 * with numpy/torch (`np.save`, `np.load`).
 *
 * The header is parsed with bounds (at most NPY_MAX_HEADER bytes, at most
 * ONNX_MAX_DIMS dims, element count checked for overflow) and the data size
 * must match the shape exactly. */
#ifndef STREAMML_NPY_H
#define STREAMML_NPY_H

#include "err.h"
#include "onnx.h"

#define NPY_MAX_HEADER 65536

/* Reads path into *t; t->data is malloc'd and owned by the caller
 * (npy_free). ERR_IO, ERR_DECODE (not a valid .npy: the reason names the
 * file) or ERR_CONFIG (a dtype other than '<f4'/'<i8', Fortran order). */
int npy_read(const char *path, struct onnx_tensor *t, struct err *e);
/* Writes t as a version 1.0 .npy (the header padded to 64 bytes). */
int npy_write(const char *path, const struct onnx_tensor *t, struct err *e);
void npy_free(struct onnx_tensor *t); /* frees t->data; NULL-safe */

#endif
