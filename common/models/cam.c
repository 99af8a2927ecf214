#include "cam.h"

#include <math.h>
#include <string.h>

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

size_t cam_gradcam_scratch(const struct cam_layer *layers, size_t n, int channels)
{
    size_t total = (size_t)channels * 2, widest = (size_t)channels;

    for (size_t i = 0; i < n; i++) {
        total += (size_t)layers[i].out;
        if ((size_t)layers[i].out > widest)
            widest = (size_t)layers[i].out;
    }
    return total + 2 * widest;
}

static int check_chain(const struct cam_layer *l, size_t n, int channels, int k, struct err *e)
{
    int width = channels;

    for (size_t i = 0; i < n; i++) {
        if (l[i].in != width || l[i].out <= 0 || (l[i].kind != CAM_DENSE && l[i].out != l[i].in) ||
            ((l[i].kind == CAM_DENSE && !l[i].w) || (l[i].kind == CAM_ADD && !l[i].b)))
            return err_set(e, ERR_INVALID, "gradcam: head layer %zu takes %d values, has %d", i,
                           width, l[i].in);
        width = l[i].out;
    }
    if (k < 0 || k >= width)
        return err_set(e, ERR_INVALID, "gradcam: class %d of %d", k, width);
    return ERR_OK;
}

/* a[i + 1] = layer i (a[i]); the activations stay for the pass back. */
static void head_forward(const struct cam_layer *l, size_t n, float *const *a)
{
    for (size_t i = 0; i < n; i++) {
        for (int o = 0; o < l[i].out; o++) {
            double acc = l[i].b ? l[i].b[o] : 0.0;
            if (l[i].kind == CAM_RELU) {
                a[i + 1][o] = a[i][o] > 0 ? a[i][o] : 0.0f;
                continue;
            }
            if (l[i].kind == CAM_ADD) {
                a[i + 1][o] = (float)(a[i][o] + acc);
                continue;
            }
            for (int j = 0; j < l[i].in; j++)
                acc += (double)(l[i].transposed ? l[i].w[(size_t)j * l[i].out + o]
                                                : l[i].w[(size_t)o * l[i].in + j]) *
                       a[i][j];
            a[i + 1][o] = (float)acc;
        }
    }
}

/* d y_k / d a[0] into g (a[0]'s width), through ReLU masks and W^T. */
static void head_backward(const struct cam_layer *l, size_t n, float *const *a, int k, float *g,
                          float *tmp)
{
    int width = n ? l[n - 1].out : 0;

    for (int o = 0; o < width; o++)
        g[o] = o == k ? 1.0f : 0.0f;
    for (size_t i = n; i-- > 0;) {
        if (l[i].kind == CAM_RELU) {
            for (int o = 0; o < l[i].out; o++)
                g[o] = a[i][o] > 0 ? g[o] : 0.0f;
            continue;
        }
        if (l[i].kind == CAM_ADD)
            continue;
        for (int j = 0; j < l[i].in; j++) {
            double acc = 0;
            for (int o = 0; o < l[i].out; o++)
                acc += (double)(l[i].transposed ? l[i].w[(size_t)j * l[i].out + o]
                                                : l[i].w[(size_t)o * l[i].in + j]) *
                       g[o];
            tmp[j] = (float)acc;
        }
        memcpy(g, tmp, (size_t)l[i].in * sizeof(float));
    }
}

int cam_gradcam(const struct cam_layer *layers, size_t n_layers, int channels,
                const float *features, int h, int w, int k, float *grid, float *scratch,
                struct err *e)
{
    size_t cells = (size_t)h * w, widest = (size_t)channels;
    float *act[CAM_MAX_LAYERS + 1], *g, *tmp, *p = scratch, lo = INFINITY, hi;

    if (channels <= 0 || h <= 0 || w <= 0 || n_layers > CAM_MAX_LAYERS)
        return err_set(e, ERR_INVALID, "gradcam: %d channels, %dx%d map, %zu head layers", channels,
                       h, w, n_layers);
    if (check_chain(layers, n_layers, channels, k, e))
        return e->code;
    act[0] = p;
    p += channels;
    for (size_t i = 0; i < n_layers; i++) {
        act[i + 1] = p;
        p += layers[i].out;
        widest = (size_t)layers[i].out > widest ? (size_t)layers[i].out : widest;
    }
    g = p;
    tmp = g + widest;
    for (int c = 0; c < channels; c++) {
        double s = 0;
        for (size_t i = 0; i < cells; i++)
            s += features[(size_t)c * cells + i];
        act[0][c] = (float)(s / (double)cells);
        if (!isfinite(act[0][c]))
            return err_set(e, ERR_INVALID, "gradcam: non-finite feature map, channel %d", c);
    }
    head_forward(layers, n_layers, act);
    head_backward(layers, n_layers, act, k, g, tmp);
    for (size_t i = 0; i < cells; i++) {
        double acc = 0;
        for (int c = 0; c < channels; c++)
            acc += (double)g[c] / (double)cells * features[(size_t)c * cells + i];
        grid[i] = acc > 0 ? (float)acc : 0.0f;
        lo = grid[i] < lo ? grid[i] : lo;
    }
    hi = 0.0f;
    for (size_t i = 0; i < cells; i++) {
        grid[i] -= lo;
        hi = grid[i] > hi ? grid[i] : hi;
    }
    for (size_t i = 0; i < cells; i++)
        grid[i] /= hi + 1e-8f;
    return ERR_OK;
}
