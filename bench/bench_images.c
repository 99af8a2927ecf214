/* Per-stage cost of the images pipeline, ms/image, median of REPS runs.
 * A figure, not a test.  usage: bench_images MODEL.onnx SAMPLES_DIR
 * [--forward-only]: then only the runtime's own images/s (median over REPS
 * forward passes of a batch of 8 on one thread, what the worker runs). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cam.h"
#include "image.h"
#include "onnx.h"
#include "overlay.h"

#define REPS 21
#define BATCH 8

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report(const char *stage, double *ms, int per)
{
    qsort(ms, REPS, sizeof(double), cmp);
    printf("| %-44s | %8.3f | %8.3f | %8.3f |\n", stage, ms[REPS / 2] / per, ms[0] / per,
           ms[REPS - 1] / per);
}

static void die(const char *what, const struct err *e)
{
    fprintf(stderr, "bench_images: %s: %s\n", what, e->msg);
    exit(1);
}

struct ctx {
    struct onnx_model *m;
    struct img_loader *l;
    struct img_norm n;
    struct img im;
    float *x, *scratch, *cam_scratch;
    uint8_t *overlay;
};

static void bench_load(struct ctx *c, const char *file, const char *label)
{
    double ms[REPS];
    enum img_reason why;
    struct err e = {0};

    for (int r = 0; r < REPS; r++) {
        double t0 = now_ms();
        if (img_load(c->l, file, &c->im, &why, &e))
            die(file, &e);
        ms[r] = now_ms() - t0;
    }
    report(label, ms, 1);
}

static void bench_forward(struct ctx *c, int batch)
{
    double ms[REPS];
    char label[64];
    size_t plane3 = (size_t)3 * c->n.width * c->n.height;
    struct onnx_tensor in = {ONNX_F32, 4, {batch, 3, c->n.height, c->n.width}, c->x}, out[2];
    struct err e = {0};

    for (int b = 1; b < batch; b++)
        memcpy(c->x + b * plane3, c->x, plane3 * sizeof(float));
    for (int r = 0; r < REPS; r++) {
        double t0 = now_ms();
        if (onnx_run(c->m, &in, 1, out, 2, &e))
            die("onnx_run", &e);
        ms[r] = now_ms() - t0;
    }
    snprintf(label, sizeof(label), "forward pass, batch %d (per image)", batch);
    report(label, ms, batch);
}

static void bench_cam(struct ctx *c)
{
    double ms[REPS];
    struct onnx_tensor in = {ONNX_F32, 4, {1, 3, c->n.height, c->n.width}, c->x}, out[2];
    const struct onnx_tensor *w = onnx_initializer(c->m, onnx_metadata(c->m, "cam_weight"));
    struct err e = {0};
    float grid[256];
    int ch, fh, fw;

    if (!w || onnx_run(c->m, &in, 1, out, 2, &e))
        die("cam set-up", &e);
    ch = (int)out[1].dims[1], fh = (int)out[1].dims[2], fw = (int)out[1].dims[3];
    /* the worker's overlay: over the decoded photograph, at its size */
    c->cam_scratch = malloc(ovl_scratch(c->im.width, fw) * sizeof(float));
    c->overlay = malloc((size_t)3 * c->im.width * c->im.height);
    for (int r = 0; r < REPS; r++) {
        double t0 = now_ms();
        if (cam_grid(w->data, 5, ch, out[1].data, fh, fw, 4, grid, &e) ||
            ovl_render(c->im.rgb, c->im.width, c->im.height, grid, fh, fw,
                       "grade 4  P=1.00\nreferable  P(>=2)=1.00\nCAM of grade 4", c->overlay,
                       c->cam_scratch, &e))
            die("cam_grid / ovl_render", &e);
        if (img_write_png("/tmp/streamml-bench-cam.png", c->overlay, c->im.width, c->im.height,
                          &e))
            die("png", &e);
        ms[r] = now_ms() - t0;
    }
    report("CAM grid + overlay (224x224) + PNG write", ms, 1);
}

static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Thread CPU ms per image of forward passes of 1, 2, 4 and 8 images, one
 * BLAS thread, sizes interleaved: what a pass size costs, whatever the load. */
static int pass_sizes(struct ctx *c)
{
    static const int sizes[] = {1, 2, 4, 8};
    double ms[4][REPS];
    struct err e = {0};

    onnx_set_threads(c->m, 1);
    c->x = calloc((size_t)BATCH * 3 * c->n.width * c->n.height, sizeof(float));
    for (int r = 0; r < REPS; r++)
        for (int k = 0; k < 4; k++) {
            struct onnx_tensor in = {ONNX_F32, 4, {sizes[k], 3, c->n.height, c->n.width}, c->x},
                               out[2];
            double t0 = cpu_ms();
            if (onnx_run(c->m, &in, 1, out, 2, &e))
                die("onnx_run", &e);
            ms[k][r] = cpu_ms() - t0;
        }
    for (int k = 0; k < 4; k++) {
        char label[64];
        snprintf(label, sizeof(label), "forward pass of %d, thread CPU (per image)", sizes[k]);
        report(label, ms[k], sizes[k]);
    }
    free(c->x);
    img_loader_close(c->l);
    onnx_close(c->m);
    return 0;
}

int main(int argc, char **argv)
{
    struct ctx c = {0};
    struct err e = {0};
    double ms[REPS];

    if (argc < 3) {
        fprintf(stderr, "usage: bench_images MODEL.onnx SAMPLES_DIR\n");
        return 2;
    }
    if (onnx_open(&c.m, argv[1], &e))
        die(argv[1], &e);
    if (img_loader_open(&c.l, &(struct img_opts){.root = argv[2]}, &e))
        die(argv[2], &e);
    img_norm_default(&c.n, 224);
    if (img_norm_parse(&c.n, onnx_metadata(c.m, "input_size"), onnx_metadata(c.m, "mean"),
                       onnx_metadata(c.m, "std"), &e))
        die("metadata", &e);
    img_init(&c.im);
    onnx_set_threads(c.m, 1); /* as the worker (one BLAS thread beside its decode thread) */
    if (argc > 3 && strcmp(argv[3], "--pass-sizes") == 0)
        return pass_sizes(&c);
    if (argc > 3 && strcmp(argv[3], "--forward-only") == 0) {
        struct onnx_tensor in, out[2];
        onnx_set_threads(c.m, 1); /* as the worker with its decode thread */
        c.x = calloc((size_t)BATCH * 3 * c.n.width * c.n.height, sizeof(float));
        in = (struct onnx_tensor){ONNX_F32, 4, {BATCH, 3, c.n.height, c.n.width}, c.x};
        for (int r = 0; r < REPS; r++) {
            double t0 = now_ms();
            if (onnx_run(c.m, &in, 1, out, 2, &e))
                die("onnx_run", &e);
            ms[r] = now_ms() - t0;
        }
        qsort(ms, REPS, sizeof(double), cmp);
        printf("%.1f\n", 1000.0 * BATCH / ms[REPS / 2]);
        free(c.x);
        img_loader_close(c.l);
        onnx_close(c.m);
        return 0;
    }
    bench_load(&c, "fundus_04_g4.png", "load + decode PNG 224x224");
    bench_load(&c, "fundus_09_g4.jpg", "load + decode JPEG 224x224");
    c.x = calloc((size_t)BATCH * 3 * c.n.width * c.n.height, sizeof(float));
    c.scratch = malloc(img_preprocess_scratch(&c.im, &c.n) * sizeof(float));
    for (int r = 0; r < REPS; r++) {
        double t0 = now_ms();
        if (img_preprocess(&c.im, &c.n, c.x, c.scratch, &e))
            die("preprocess", &e);
        ms[r] = now_ms() - t0;
    }
    report("resize 224 -> 112 (antialiased) + normalise", ms, 1);
    bench_forward(&c, 1);
    bench_forward(&c, BATCH);
    bench_cam(&c);
    unlink("/tmp/streamml-bench-cam.png");
    free(c.x);
    free(c.scratch);
    free(c.cam_scratch);
    free(c.overlay);
    img_free(&c.im);
    img_loader_close(c.l);
    onnx_close(c.m);
    return 0;
}
