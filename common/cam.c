#include "cam.h"

#include <math.h>

int cam_grid(const float *weights, int n_classes, int channels, const float *features, int h,
             int w, int k, float *grid, struct err *e)
{
    const float *wk = weights + (size_t)k * channels;
    size_t cells = (size_t)h * w;
    float top = 0.0f;

    if (k < 0 || k >= n_classes || channels <= 0 || h <= 0 || w <= 0)
        return err_set(e, ERR_INVALID, "cam: class %d of %d, %d channels, %dx%d map", k,
                       n_classes, channels, h, w);
    for (size_t i = 0; i < cells; i++) {
        float acc = 0.0f;
        for (int c = 0; c < channels; c++)
            acc += wk[c] * features[(size_t)c * cells + i];
        if (!isfinite(acc))
            return err_set(e, ERR_INVALID, "cam: non-finite activation at cell %zu", i);
        grid[i] = acc > 0.0f ? acc : 0.0f;
        top = grid[i] > top ? grid[i] : top;
    }
    for (size_t i = 0; i < cells && top > 0.0f; i++)
        grid[i] /= top;
    return ERR_OK;
}

size_t cam_overlay_scratch(const struct img_norm *n, int gh, int gw)
{
    return (size_t)n->width * n->height + img_resize_scratch(gw, gh, 1, n->width, n->height);
}

/* The classic "jet" colour map: blue (0) - cyan - yellow - red (1). */
static void jet(float m, float rgb[3])
{
    float r = 1.5f - fabsf(4.0f * m - 3.0f), g = 1.5f - fabsf(4.0f * m - 2.0f);
    float b = 1.5f - fabsf(4.0f * m - 1.0f);

    rgb[0] = r < 0 ? 0 : r > 1 ? 1 : r;
    rgb[1] = g < 0 ? 0 : g > 1 ? 1 : g;
    rgb[2] = b < 0 ? 0 : b > 1 ? 1 : b;
}

static uint8_t to_u8(float v)
{
    v = v * 255.0f + 0.5f;
    return (uint8_t)(v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v);
}

void cam_overlay(const float *input, const struct img_norm *n, const float *grid, int gh, int gw,
                 float alpha, uint8_t *out, float *scratch)
{
    size_t plane = (size_t)n->width * n->height;
    float *map = scratch;

    img_resize_planes(grid, gw, gh, 1, map, n->width, n->height, scratch + plane);
    for (size_t i = 0; i < plane; i++) {
        float m = map[i] < 0 ? 0 : map[i] > 1 ? 1 : map[i], col[3];
        jet(m, col);
        for (int c = 0; c < 3; c++) {
            float x = input[c * plane + i] * n->std[c] + n->mean[c];
            out[i * 3 + c] = to_u8((1.0f - alpha * m) * x + alpha * m * col[c]);
        }
    }
}
