/* ONNX runtime speed: median ms per forward pass of a model at a batch size
 * and BLAS thread count. A figure, not a test.
 *   usage: bench_onnx MODEL.onnx BATCH THREADS [REPS]
 * Prints: model batch threads ms/batch(median) ms/image images/s min max */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "onnx.h"

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

/* A float32 input of the model's declared shape, dynamic dims = batch. */
static int make_input(const struct onnx_model *m, long batch, struct onnx_tensor *t)
{
    unsigned s = 42;

    t->dtype = onnx_input_dtype(m, 0);
    if (t->dtype != ONNX_F32 || onnx_input_shape(m, 0, &t->ndim, t->dims))
        return -1;
    for (int d = 0; d < t->ndim; d++)
        if (t->dims[d] < 0)
            t->dims[d] = batch;
    t->data = malloc(onnx_numel(t) * sizeof(float));
    if (!t->data)
        return -1;
    for (size_t i = 0; i < onnx_numel(t); i++) {
        s = s * 1103515245u + 12345u;
        ((float *)t->data)[i] = (float)((s >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct onnx_model *m;
    struct onnx_tensor in, out;
    struct err e = {0};
    long batch, threads, reps;
    double *ms;

    if (argc < 4) {
        fprintf(stderr, "usage: bench_onnx MODEL.onnx BATCH THREADS [REPS]\n");
        return 2;
    }
    batch = strtol(argv[2], NULL, 10);
    threads = strtol(argv[3], NULL, 10);
    reps = argc > 4 ? strtol(argv[4], NULL, 10) : 20;
    if (batch < 1 || threads < 1 || reps < 1 || reps > 10000)
        return 2;
    if (onnx_open(&m, argv[1], &e) || make_input(m, batch, &in)) {
        fprintf(stderr, "error: %s\n", e.msg[0] ? e.msg : "input 0 is not float32");
        return 1;
    }
    onnx_set_threads(m, (int)threads);
    ms = calloc((size_t)reps, sizeof(double));
    for (long r = -2; r < reps; r++) { /* two warm-up runs size the buffers */
        double t0 = now_ms();
        if (onnx_run(m, &in, 1, &out, 1, &e)) {
            fprintf(stderr, "error: %s\n", e.msg);
            return 1;
        }
        if (r >= 0)
            ms[r] = now_ms() - t0;
    }
    qsort(ms, (size_t)reps, sizeof(double), cmp);
    printf("streamml %ld %ld %.2f %.2f %.1f %.2f %.2f\n", batch, threads, ms[reps / 2],
           ms[reps / 2] / (double)batch, 1000.0 * (double)batch / ms[reps / 2], ms[0],
           ms[reps - 1]);
    free(ms);
    free(in.data);
    onnx_close(m);
    return 0;
}
