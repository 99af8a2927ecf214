/* common/codec/image.h: image references -> decoded pixels -> model input (prefix img_).
 *
 * Loading: a plain path or a file:// URI is confined to a configured root
 * (no "..", symlinks resolved with realpath and the result must stay under
 * the root); http(s):// goes through libcurl only to allow-listed hosts
 * (exact, case-insensitive match), with a timeout and a size limit, no
 * redirects, and no connection to a loopback, link-local, private or
 * metadata address unless that address itself is allow-listed (so a name
 * that resolves there is refused too).
 *
 * Decoding: libjpeg-turbo and libpng into 8-bit RGB (grayscale expanded,
 * alpha dropped as PIL's convert("RGB") does, 16-bit reduced to its high
 * byte, palettes expanded). Limits against bombs are checked before any
 * pixel buffer is allocated: a pixel-count cap, libjpeg's max_memory_to_use,
 * a cap on progressive JPEG scans, png_set_user_limits and
 * png_set_chunk_malloc_max. Library errors unwind with setjmp into cleanup
 * that frees everything (no leak on any path).
 *
 * Every failure carries a reason (img_reason_name) for monitoring and the
 * "ungradable" predictions, plus a message naming the culprit.
 *
 * Preprocessing: resize with antialiased bilinear interpolation (PIL's and
 * torchvision's Resize(antialias=True) on float tensors), then normalise
 * with the model's mean/std into planar CHW floats.
 *
 * A loader and an img are used by one thread at a time.
 */
#ifndef STREAMML_IMAGE_H
#define STREAMML_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

enum img_reason {
    IMG_OK = 0,
    IMG_TOO_SMALL,        /* below the configured minimum side (thumbnails) */
    IMG_CORRUPT,          /* not decodable, or decoded with data errors */
    IMG_TRUNCATED,        /* the encoded data ends early */
    IMG_MISSING,          /* no such file, HTTP 404 */
    IMG_UNSUPPORTED_TYPE, /* neither JPEG nor PNG, CMYK JPEG, not a regular file */
    IMG_TOO_LARGE,        /* bytes, pixels, scans or decoder memory over the limits */
    IMG_FORBIDDEN,        /* outside the root, "..", host not allow-listed */
    IMG_FETCH_FAILED,     /* I/O error, timeout, HTTP error other than 404 */
    IMG_NREASONS
};

/* "too_small", "corrupt", ... ("ok" for IMG_OK). */
const char *img_reason_name(enum img_reason r);

#define IMG_MAX_HOSTS 16

struct img_opts {
    const char *root;             /* file references confined here; NULL/"" refuses files */
    const char *allow_hosts;      /* comma-separated exact host names/addresses; "" = none */
    long timeout_ms;              /* whole HTTP transfer; 0 = 10000 */
    size_t max_bytes;             /* encoded size; 0 = 20 MiB */
    uint64_t max_pixels;          /* width x height; 0 = 50 million */
    int min_side;                 /* smaller width or height is too_small; 0 = none */
    int max_scans;                /* progressive JPEG scans; 0 = 64 */
    long jpeg_max_memory;         /* libjpeg max_memory_to_use; 0 = 256 MiB */
};

/* Decoded image: 8-bit RGB, interleaved, rows top to bottom. The buffer is
 * reused (grown) across loads; free with img_free. */
struct img {
    int width, height;
    uint8_t *rgb;
    size_t cap;
};
void img_init(struct img *im);
void img_free(struct img *im); /* NULL-safe */

struct img_loader;

/* ERR_CONFIG naming the option (unresolvable root, too many hosts). */
int img_loader_open(struct img_loader **out, const struct img_opts *o, struct err *e);
void img_loader_close(struct img_loader *l); /* NULL-safe */

/* Fetches ref (path, file:// or http(s)://) and decodes it into im.
 * ERR_OK, or an error code with *why set and e naming the reference. */
int img_load(struct img_loader *l, const char *ref, struct img *im, enum img_reason *why,
             struct err *e);
/* Decodes JPEG or PNG bytes (type from the magic bytes) into im, with the
 * loader's limits. */
int img_decode(struct img_loader *l, const void *data, size_t len, struct img *im,
               enum img_reason *why, struct err *e);

/* Model input geometry and normalisation. */
struct img_norm {
    int width, height;
    float mean[3], std[3];
};
/* ImageNet mean/std at size x size. */
void img_norm_default(struct img_norm *n, int size);
/* Overrides from model metadata strings (NULL/"" keeps the current value):
 * size "224" or "224x192" (width x height), mean/std "r,g,b". ERR_CONFIG
 * naming the string on a bad value (std <= 0, size outside 1..4096). */
int img_norm_parse(struct img_norm *n, const char *size, const char *mean, const char *std,
                   struct err *e);

/* Resizes im to n's size (antialiased bilinear) and writes (x - mean) / std
 * per channel as planar floats: out[c * h * w + y * w + x], 3 * w * h
 * values. scratch: at least img_preprocess_scratch(im, n) floats. */
size_t img_preprocess_scratch(const struct img *im, const struct img_norm *n);
int img_preprocess(const struct img *im, const struct img_norm *n, float *out, float *scratch,
                   struct err *e);

/* Resizes planar float channels (antialiased bilinear, the same kernel);
 * scratch: img_resize_scratch() floats. */
size_t img_resize_scratch(int src_w, int src_h, int nch, int dst_w, int dst_h);
void img_resize_planes(const float *src, int src_w, int src_h, int nch, float *dst, int dst_w,
                       int dst_h, float *scratch);

/* Writes 8-bit RGB to path as PNG (via a temporary file renamed into place,
 * so readers never see half a file). */
int img_write_png(const char *path, const uint8_t *rgb, int width, int height, struct err *e);

#endif
