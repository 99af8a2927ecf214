/* common/models/overlay.c: class-activation overlays (see overlay.h). */
#include "overlay.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "font.h"

#define HIGH "high"
#define LOW "low"

/* The classic jet: blue (0) - cyan - yellow - red (1), piecewise linear. */
static void jet(float m, float rgb[3])
{
    float r = 1.5f - fabsf(4.0f * m - 3.0f), g = 1.5f - fabsf(4.0f * m - 2.0f);
    float b = 1.5f - fabsf(4.0f * m - 1.0f);

    rgb[0] = r < 0 ? 0 : r > 1 ? 1 : r;
    rgb[1] = g < 0 ? 0 : g > 1 ? 1 : g;
    rgb[2] = b < 0 ? 0 : b > 1 ? 1 : b;
}

static float clamp01(float m)
{
    return m < 0.0f ? 0.0f : m > 1.0f ? 1.0f : m;
}

static uint8_t to_u8(float v)
{
    v = v * 255.0f + 0.5f;
    return (uint8_t)(v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v);
}

void ovl_colour(float m, uint8_t rgb[3])
{
    float c[3];

    jet(clamp01(m), c);
    for (int i = 0; i < 3; i++)
        rgb[i] = to_u8(c[i]);
}

size_t ovl_scratch(int width, int gw)
{
    return (size_t)(gw > 0 ? gw : 0) + 3 * (size_t)(width > 0 ? width : 0);
}

/* Source coordinate of output pixel i of n over a side of src cells, with
 * centres aligned (align_corners=False) and clamped to the edge cells. */
static void source(int i, int n, int src, int *lo, int *hi, float *w)
{
    float s = ((float)i + 0.5f) * (float)src / (float)n - 0.5f;

    if (s < 0.0f)
        s = 0.0f;
    *lo = (int)s;
    if (*lo > src - 1)
        *lo = src - 1;
    *hi = *lo + 1 < src ? *lo + 1 : src - 1;
    *w = s - (float)*lo;
}

/* scratch: [0, gw) the row interpolated vertically; then per output column
 * its left cell and weight (the cell as a float: exact below 2^24). */
static void prepare_columns(int gw, int width, float *scratch)
{
    float *x0 = scratch + gw, *wx = x0 + width;

    for (int x = 0; x < width; x++) {
        int lo, hi;
        source(x, width, gw, &lo, &hi, &wx[x]);
        x0[x] = (float)lo;
    }
}

/* The map's row y (width values) into dst. */
static void map_row(const float *grid, int gh, int gw, int width, int height, int y, float *scratch,
                    float *dst)
{
    const float *x0 = scratch + gw, *wx = x0 + width;
    int lo, hi;
    float wy;

    source(y, height, gh, &lo, &hi, &wy);
    for (int x = 0; x < gw; x++)
        scratch[x] = grid[(size_t)lo * gw + x] * (1.0f - wy) + grid[(size_t)hi * gw + x] * wy;
    for (int x = 0; x < width; x++) {
        int a = (int)x0[x], b = a + 1 < gw ? a + 1 : gw - 1;
        dst[x] = scratch[a] * (1.0f - wx[x]) + scratch[b] * wx[x];
    }
}

void ovl_upsample(const float *grid, int gh, int gw, float *map, int width, int height,
                  float *scratch)
{
    prepare_columns(gw, width, scratch);
    for (int y = 0; y < height; y++)
        map_row(grid, gh, gw, width, height, y, scratch, map + (size_t)y * width);
}

int ovl_text_scale(int width, int height)
{
    int side = width < height ? width : height;

    return side < 384 ? 1 : (side + 128) / 256;
}

/* Splits label into at most OVL_MAX_LINES lines of at most cap - 1 bytes. */
static int split_lines(const char *label, char lines[][96], int cap)
{
    int n = 0;

    while (label && *label && n < OVL_MAX_LINES) {
        const char *end = strchr(label, '\n');
        size_t len = end ? (size_t)(end - label) : strlen(label);
        snprintf(lines[n++], (size_t)cap, "%.*s", (int)len, label);
        label += len + (end ? 1 : 0);
    }
    return n;
}

/* The bar itself: its top-left corner and size (inside its frame). */
static void bar_rect(int width, int height, struct ovl_box *bar)
{
    int s = ovl_text_scale(width, height), pad = 4 * s;

    bar->w = 8 * s;
    bar->h = height * 2 / 5 > 2 ? height * 2 / 5 : 2;
    bar->x = width - pad - bar->w;
    bar->y = pad;
}

void ovl_layout(int width, int height, const char *label, struct ovl_box *legend,
                struct ovl_box *label_box)
{
    int s = ovl_text_scale(width, height), pad = 4 * s, in = 2 * s, widest = 0, n;
    struct ovl_box bar;
    char lines[OVL_MAX_LINES][96];

    bar_rect(width, height, &bar);
    legend->x = bar.x - 3 * s - font_text_width(HIGH, s);
    legend->y = bar.y - s;
    legend->w = bar.x + bar.w + s - legend->x;
    legend->h = bar.h + 2 * s;
    n = split_lines(label, lines, (int)sizeof(lines[0]));
    for (int i = 0; i < n; i++) {
        int w = font_text_width(lines[i], s);
        widest = w > widest ? w : widest;
    }
    label_box->x = pad;
    label_box->y = pad;
    label_box->w = n ? widest + 2 * in : 0;
    label_box->h = n ? n * FONT_CELL_H * s - s + 2 * in : 0;
}

static void shade(uint8_t *out, int width, int height, const struct ovl_box *b, float keep)
{
    for (int y = b->y < 0 ? 0 : b->y; y < b->y + b->h && y < height; y++)
        for (int x = b->x < 0 ? 0 : b->x; x < b->x + b->w && x < width; x++)
            for (int c = 0; c < 3; c++) {
                uint8_t *p = out + ((size_t)y * width + x) * 3 + c;
                *p = (uint8_t)((float)*p * keep + 0.5f);
            }
}

/* White text with a one-dot dark shadow: readable on any photograph. */
static void text(uint8_t *out, int width, int height, int x, int y, const char *s, int scale)
{
    static const uint8_t black[3] = {0, 0, 0}, white[3] = {255, 255, 255};

    font_draw(out, width, height, x + scale, y + scale, s, scale, black);
    font_draw(out, width, height, x, y, s, scale, white);
}

static void draw_legend(uint8_t *out, int width, int height)
{
    int s = ovl_text_scale(width, height);
    struct ovl_box bar, frame;

    bar_rect(width, height, &bar);
    frame = (struct ovl_box){bar.x - s, bar.y - s, bar.w + 2 * s, bar.h + 2 * s};
    shade(out, width, height, &frame, 0.0f);
    for (int y = 0; y < bar.h && bar.y + y < height; y++) {
        uint8_t col[3];
        ovl_colour(1.0f - (float)y / (float)(bar.h - 1), col);
        for (int x = bar.x < 0 ? 0 : bar.x; x < bar.x + bar.w && x < width; x++)
            memcpy(out + ((size_t)(bar.y + y) * width + x) * 3, col, 3);
    }
    text(out, width, height, bar.x - 3 * s - font_text_width(HIGH, s), bar.y, HIGH, s);
    text(out, width, height, bar.x - 3 * s - font_text_width(LOW, s),
         bar.y + bar.h - font_text_height(s) - s, LOW, s);
}

static void draw_label(uint8_t *out, int width, int height, const char *label)
{
    int s = ovl_text_scale(width, height), in = 2 * s, n;
    struct ovl_box legend, box;
    char lines[OVL_MAX_LINES][96];

    ovl_layout(width, height, label, &legend, &box);
    n = split_lines(label, lines, (int)sizeof(lines[0]));
    shade(out, width, height, &box, 0.25f);
    for (int i = 0; i < n; i++)
        text(out, width, height, box.x + in, box.y + in + i * FONT_CELL_H * s, lines[i], s);
}

int ovl_render(const uint8_t *photo, int width, int height, const float *grid, int gh, int gw,
               const char *label, uint8_t *out, float *scratch, struct err *e)
{
    float *m = scratch + gw + 2 * (size_t)width; /* the map's current row */

    if (width <= 0 || height <= 0 || gh <= 0 || gw <= 0)
        return err_set(e, ERR_INVALID, "overlay: image %dx%d, map %dx%d", width, height, gw, gh);
    for (size_t i = 0; i < (size_t)gh * gw; i++)
        if (!isfinite(grid[i]))
            return err_set(e, ERR_INVALID, "overlay: map cell %zu is not finite", i);
    prepare_columns(gw, width, scratch);
    for (int y = 0; y < height; y++) {
        size_t at = (size_t)y * width * 3;
        map_row(grid, gh, gw, width, height, y, scratch, m);
        for (int x = 0; x < width; x++, at += 3) {
            float v = clamp01(m[x]), a = OVL_ALPHA * v, col[3];
            jet(v, col);
            for (int c = 0; c < 3; c++)
                out[at + c] = to_u8((1.0f - a) * (float)photo[at + c] / 255.0f + a * col[c]);
        }
    }
    draw_label(out, width, height, label);
    draw_legend(out, width, height);
    return ERR_OK;
}
