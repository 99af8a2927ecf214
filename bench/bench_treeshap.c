/* Exact TreeSHAP cost, us per explained row, median of 5 runs, and the
 * largest difference from xgboost's exact pred_contribs on the rows it
 * explained. A figure, not a test (tests/test_treeshap.c checks values).
 * usage: bench_treeshap MODEL.json X.npy XGB_CONTRIBS.npy
 *   X.npy: float32 (N, features); XGB_CONTRIBS.npy: float32 (M, features + 1),
 *   M <= N, xgboost's values for the first M rows.
 * Time is this thread's CPU time, as in bench_stages. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "gbdt.h"
#include "npy.h"
#include "treeshap.h"

#define REPS 5

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    struct err e = {0};
    struct onnx_tensor x = {0}, ref = {0};
    struct gbdt *g;
    struct treeshap *ts;
    struct treeshap_ws *w;
    double us[REPS], ref_us[REPS], worst = 0, open_ms, *phi;
    size_t nf, n, m;

    if (argc != 4) {
        fprintf(stderr, "usage: bench_treeshap MODEL.json X.npy XGB_CONTRIBS.npy\n");
        return 2;
    }
    g = gbdt_open(argv[1], &e);
    if (!g || npy_read(argv[2], &x, &e) || npy_read(argv[3], &ref, &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        return 1;
    }
    nf = gbdt_num_features(g);
    n = (size_t)x.dims[0];
    m = (size_t)ref.dims[0];
    if (x.ndim != 2 || (size_t)x.dims[1] != nf || ref.ndim != 2 || (size_t)ref.dims[1] != nf + 1 ||
        m > n) {
        fprintf(stderr, "error: shapes do not match the model's %zu features\n", nf);
        return 1;
    }
    open_ms = now_ns();
    ts = treeshap_open(g, &e);
    open_ms = (now_ns() - open_ms) / 1e6;
    w = ts ? treeshap_ws_open(ts) : NULL;
    phi = malloc((nf + 1) * sizeof(double));
    if (!ts || !w || !phi) {
        fprintf(stderr, "error: %s\n", ts ? "out of memory" : e.msg);
        return 1;
    }
    /* the node-at-a-time kernel the pair kernel replaced, alternating with
     * it so that both see the same load */
    for (int r = 0; r < REPS; r++) {
        double t0 = now_ns();
        for (size_t i = 0; i < n; i++)
            treeshap_explain_ref(ts, w, (const float *)x.data + i * nf, phi);
        ref_us[r] = (now_ns() - t0) / 1e3 / (double)n;
        t0 = now_ns();
        for (size_t i = 0; i < n; i++)
            treeshap_explain(ts, w, (const float *)x.data + i * nf, phi);
        us[r] = (now_ns() - t0) / 1e3 / (double)n;
    }
    for (size_t i = 0; i < m; i++) {
        treeshap_explain(ts, w, (const float *)x.data + i * nf, phi);
        for (size_t f = 0; f <= nf; f++) {
            double d = fabs(phi[f] - ((const float *)ref.data)[i * (nf + 1) + f]);
            worst = d > worst ? d : worst;
        }
    }
    qsort(us, REPS, sizeof(double), cmp);
    qsort(ref_us, REPS, sizeof(double), cmp);
    printf("| streamml exact TreeSHAP (%zu trees, depth %zu), one row at a time | %.1f | %.1f | "
           "%.1f |\n",
           gbdt_num_trees(g), gbdt_max_depth(g), us[REPS / 2], us[0], us[REPS - 1]);
    printf("| streamml, node-at-a-time kernel (before the pair kernel), same rows | %.1f | %.1f | "
           "%.1f |\n",
           ref_us[REPS / 2], ref_us[0], ref_us[REPS - 1]);
    printf("\nstreamml: precomputation at load %.0f ms; max |streamml - xgboost exact| over %zu "
           "rows: %.2g\n",
           open_ms, m, worst);
    free(phi);
    treeshap_ws_close(w);
    treeshap_close(ts);
    gbdt_close(g);
    npy_free(&x);
    npy_free(&ref);
    return 0;
}
