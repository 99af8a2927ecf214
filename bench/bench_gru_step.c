/* Per-event cost of a GRU session model as the clickstream worker runs it:
 * batch 1, one step, the hidden state fed back as h0 each event. A figure,
 * not a test. Median of 5 runs of N events.
 *   usage: bench_gru_step MODEL.onnx [N]
 * The model takes (items int64 [batch, steps], h0 float32 [layers, batch,
 * hidden]) and returns (logits, hn), as tests/fixtures/onnx/gru_session.onnx. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "onnx.h"

#define REPS 5
#define MAX_STATE 4096

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    static float h[MAX_STATE];
    struct onnx_model *m;
    struct onnx_tensor in[2] = {{ONNX_I64, 2, {1, 1}, NULL}, {ONNX_F32, 3, {0}, h}}, out[2];
    struct err e = {0};
    int64_t item = 1;
    long n = argc > 2 ? strtol(argv[2], NULL, 10) : 20000;
    double ns[REPS];
    int nd;

    if (argc < 2 || n < 1 || onnx_open(&m, argv[1], &e)) {
        fprintf(stderr, "usage: bench_gru_step MODEL.onnx [N]%s%s\n", e.msg[0] ? ": " : "", e.msg);
        return 2;
    }
    onnx_set_threads(m, 1);
    in[0].data = &item;
    if (onnx_num_inputs(m) != 2 || onnx_input_shape(m, 1, &nd, in[1].dims) || nd != 3) {
        fprintf(stderr, "error: expected inputs (items, h0 [layers, batch, hidden])\n");
        return 2;
    }
    in[1].dims[1] = 1;
    if (in[1].dims[0] < 1 || in[1].dims[2] < 1 || in[1].dims[0] * in[1].dims[2] > MAX_STATE)
        return 2;
    for (int r = 0; r < REPS; r++) {
        double t0 = now_ns();
        for (long i = 0; i < n; i++) {
            if (onnx_run(m, in, 2, out, 2, &e)) {
                fprintf(stderr, "error: %s\n", e.msg);
                return 1;
            }
            memcpy(h, out[1].data, onnx_numel(&out[1]) * sizeof(float));
            item = (item * 7 + 3) % 50;
        }
        ns[r] = (now_ns() - t0) / (double)n;
    }
    qsort(ns, REPS, sizeof(double), cmp);
    printf("%s: one event (batch 1, one step, state fed back): median %.0f ns, min %.0f, max "
           "%.0f\n",
           argv[1], ns[REPS / 2], ns[0], ns[REPS - 1]);
    onnx_close(m);
    return 0;
}
