/* common/streams/imgq.h: image quality checks before grading (prefix imgq_).
 *
 * A grade on a blurred, dark, over-exposed, flat or badly framed fundus
 * photograph must not pass as a real one. The checks run on the decoded
 * image (struct img), before preprocessing:
 *
 *   luma      Y = 0.299 R + 0.587 G + 0.114 B, resized (antialiased
 *             bilinear, image.h's kernel) so that the shorter side is
 *             IMGQ_SIDE pixels: the values do not depend on the camera's
 *             resolution, and the baseline's images and live ones compare.
 *   disc      the circle centred in the frame with radius IMGQ_DISC x the
 *             shorter side: where a fundus camera puts the retina.
 *   field     the pixels of the disc brighter than IMGQ_FIELD_REL x the
 *             disc's 95th luma percentile (at least IMGQ_FIELD_MIN): relative,
 *             so a dark photograph still has its field and is called dark.
 *
 * and the values, all over the field:
 *
 *   sharpness   variance of the 4-neighbour Laplacian at field pixels whose
 *               neighbours are all in the field (the rim is not detail)
 *   mean        mean luma (0..255)
 *   dark_frac   fraction of field pixels with luma < IMGQ_DARK
 *   bright_frac fraction of field pixels with luma > IMGQ_BRIGHT (clipped)
 *   contrast    standard deviation of luma
 *   field       field pixels / disc pixels (1 = the whole disc visible)
 *
 * Limits come from a baseline over training images (imgq_limits_from,
 * `streamml quality`), saved as JSON. imgq_judge names the first check
 * that fails, in the order dark (under-exposed), bright (over-exposed),
 * field, contrast, sharpness: the broad faults first, since a dark image also looks flat
 * and soft, and reporting "sharpness" for it would mislead.
 *
 * An imgq handle holds the scratch buffers (grown, never per message) and
 * is used by one thread at a time; limits are plain values, shared freely.
 */
#ifndef STREAMML_IMGQ_H
#define STREAMML_IMGQ_H

#include <stddef.h>

#include "err.h"
#include "image.h"

#define IMGQ_SIDE 224
#define IMGQ_DISC 0.40
#define IMGQ_FIELD_REL 0.25
#define IMGQ_FIELD_MIN 4.0
#define IMGQ_DARK 25.0
#define IMGQ_BRIGHT 250.0

enum imgq_check {
    IMGQ_OK = 0,
    IMGQ_UNDEREXPOSED, /* mean too low or too many dark pixels */
    IMGQ_OVEREXPOSED,  /* mean too high or too many clipped pixels */
    IMGQ_FIELD,        /* too little of the circular field visible */
    IMGQ_CONTRAST,     /* luma spread too small */
    IMGQ_SHARPNESS,    /* Laplacian variance too small (blur, defocus) */
    IMGQ_NCHECKS
};

/* "ok", "dark", "bright", "field", "contrast", "sharpness": short, so that
 * "low_quality:<name>" fits a prediction's reason (23 characters). */
const char *imgq_check_name(enum imgq_check c);

#define IMGQ_NVALUES 6
struct imgq_values {
    double sharpness, mean, dark_frac, bright_frac, contrast, field;
};
/* "q_sharpness", "q_mean", ... in the order of imgq_values_array: the
 * names the quality values carry as monitored features. */
const char *const *imgq_value_names(void);
void imgq_values_array(const struct imgq_values *v, double out[IMGQ_NVALUES]);

struct imgq_limits {
    double min_sharpness;
    double min_mean, max_mean;
    double max_dark_frac, max_bright_frac;
    double min_contrast;
    double min_field;
};
/* Limits that refuse nothing (quality checks off). */
void imgq_limits_none(struct imgq_limits *l);

/* Limits from the values of n (>= 10) good training images, with margins:
 * the lower limits are a fraction of the 1st percentile (sharpness and
 * contrast 0.5, mean 0.5, field 0.85), the upper ones lie beyond the 99th
 * (mean: halfway to 255; dark and bright fractions: +0.2). ERR_INVALID
 * when n is too small or a value is not finite. */
int imgq_limits_from(const struct imgq_values *v, size_t n, struct imgq_limits *l,
                     struct err *e);
/* JSON {"version":1,"images":n,"limits":{...}} written via a temporary
 * file renamed into place; loading checks every field (finite, ordered)
 * and names the file and the culprit (ERR_CONFIG). */
int imgq_limits_save(const struct imgq_limits *l, size_t n_images, const char *path,
                     struct err *e);
int imgq_limits_load(struct imgq_limits *l, const char *path, struct err *e);

struct imgq;
int imgq_open(struct imgq **out, struct err *e);
void imgq_close(struct imgq *q); /* NULL-safe */

/* Measures im. ERR_INVALID for an empty image; ERR_NOMEM. */
int imgq_measure(struct imgq *q, const struct img *im, struct imgq_values *v, struct err *e);
/* The first failing check, or IMGQ_OK. A non-finite value fails its check. */
enum imgq_check imgq_judge(const struct imgq_limits *l, const struct imgq_values *v);
/* The detail of a verdict for the ungradable prediction and logs: the
 * failing value against its limit, then all the values, e.g.
 * "sharpness 2.67 < 75.86; sharpness=2.67 mean=100.9 dark=0.000 bright=0.000
 * contrast=12.80 field=1.000". Always NUL-terminated (truncated to cap). */
void imgq_detail(const struct imgq_limits *l, const struct imgq_values *v, enum imgq_check c,
                 char *buf, size_t cap);

#endif
