/* common/models/overlay.h: readable class-activation overlays (prefix ovl_).
 *
 * What a grader reads next to a referable grade: the photograph at its own
 * resolution with the map (a coarse h x w grid in [0, 1], e.g. 7 x 7 from
 * cam.h) upsampled bilinearly to every pixel and blended over it in the jet
 * colour scale (blue 0 - cyan - yellow - red 1, the scale of the seed's
 * cv2.COLORMAP_JET); a legend bar of that scale on the right, marked "high"
 * and "low"; and a label (e.g. "grade 3  P=0.91") in a dark box at the top
 * left, drawn with the built-in 5x7 font (font.h). The blend weight grows
 * with the map, OVL_ALPHA x m, so a cell without evidence shows the
 * photograph untouched.
 *
 * Rendering only, into a caller-owned RGB buffer: no allocation, no file
 * (the caller writes the PNG), any thread.
 */
#ifndef STREAMML_OVERLAY_H
#define STREAMML_OVERLAY_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define OVL_ALPHA 0.6f  /* blend weight of the colour where the map is 1 */
#define OVL_MAX_LINES 4 /* label lines ('\n'-separated) drawn */

/* The jet colour of m (clamped to [0, 1]) as 8-bit RGB. */
void ovl_colour(float m, uint8_t rgb[3]);

/* Bilinear upsampling of grid (gh x gw, row-major) to map (height x width),
 * pixel centres aligned as torch's F.interpolate(align_corners=False) and
 * cv2.resize, edges clamped. scratch: ovl_scratch(width, gw) floats. */
size_t ovl_scratch(int width, int gw);
void ovl_upsample(const float *grid, int gh, int gw, float *map, int width, int height,
                  float *scratch);

/* Pixel rectangles of the decorations, for callers and tests. */
struct ovl_box {
    int x, y, w, h;
};
/* Text scale (dots per font dot) for an image: 1 up to 383 px on the
 * shorter side, then one more per 256 px. */
int ovl_text_scale(int width, int height);
/* Where ovl_render puts the legend (the bar and its "high"/"low" marks)
 * and the label box (w = h = 0 for an empty label). */
void ovl_layout(int width, int height, const char *label, struct ovl_box *legend,
                struct ovl_box *label_box);

/* out (width x height x 3) = photo (the decoded image, interleaved 8-bit
 * RGB) with the map of grid blended in, the legend, and label (may be NULL
 * or ""; '\n' separates lines). ERR_INVALID naming the culprit: a size not
 * positive, a grid cell not finite. scratch: ovl_scratch(width, gw) floats. */
int ovl_render(const uint8_t *photo, int width, int height, const float *grid, int gh, int gw,
               const char *label, uint8_t *out, float *scratch, struct err *e);

#endif
