/* common/models/font.h: a 5x7 bitmap font for text drawn on images (prefix font_).
 *
 * Printable ASCII (32..126) in the classic 5x7 dot-matrix shapes plus a
 * descender row (g, p, q, y), one cell 6 x 9 dots (a blank column and row
 * between glyphs), scaled by an integer
 * factor. Other bytes draw as '?'. No library, no allocation: what the CAM
 * overlays (overlay.h) write their grade and legend with.
 */
#ifndef STREAMML_FONT_H
#define STREAMML_FONT_H

#include <stdint.h>

#define FONT_W 5      /* glyph dots */
#define FONT_H 8      /* 7 above the baseline, 1 descender row */
#define FONT_CELL_W 6 /* advance per character, in dots */
#define FONT_CELL_H 9 /* line height, in dots */

/* 1 if the glyph of ch has its dot at column x (0..4), row y (0..7, top
 * down); 0 outside the glyph. */
int font_dot(unsigned char ch, int x, int y);

/* Width and height in pixels of s (one line; '\n' is not special) at scale. */
int font_text_width(const char *s, int scale);
int font_text_height(int scale);

/* Draws s with its top-left corner at (x, y) into rgb (width x height,
 * interleaved 8-bit RGB), each dot a scale x scale square of colour;
 * dots falling outside the image are clipped. */
void font_draw(uint8_t *rgb, int width, int height, int x, int y, const char *s, int scale,
               const uint8_t colour[3]);

#endif
