/* Cost of monitoring per event, ns, median of 5 runs. A figure, not a test.
 *   usage: bench_monitor BASELINE.json METRICS_PORT [N]
 * mon_observe (37 txn-v1 features binned, score, latency histogram) with a
 * mon_tick every 1,000 events (windows of 10,000 in 5 slices: the default),
 * then the metrics counters and histogram the worker updates per event. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "features.h"
#include "metrics.h"
#include "monitor.h"

#define REPS 5

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

static void report(const char *stage, double *ns)
{
    qsort(ns, REPS, sizeof(double), cmp);
    printf("| %-44s | %9.1f | %9.1f | %9.1f |\n", stage, ns[REPS / 2], ns[0], ns[REPS - 1]);
}

/* Vectors spread over each feature's training range, 10% missing. */
static float *make_vectors(const struct mon_baseline *b, int n)
{
    float *xs = malloc((size_t)n * FEAT_TXN_DIM * sizeof(float));
    unsigned s = 12345;

    for (int i = 0; xs && i < n; i++)
        for (int f = 0; f < FEAT_TXN_DIM; f++) {
            const struct mon_dist *d = mon_baseline_dist(b, (size_t)f);
            double u;
            s = s * 1103515245u + 12345u;
            u = (double)(s >> 8) / 16777216.0;
            xs[(size_t)i * FEAT_TXN_DIM + f] =
                u < 0.1 || !isfinite(d->min) ? NAN : (float)(d->min + (d->max - d->min) * u);
        }
    return xs;
}

int main(int argc, char **argv)
{
    struct err e = {0};
    int n = argc > 3 ? atoi(argv[3]) : 200000;
    struct mon_opts o = {.window_events = 10000, .window_ms = 300000, .slices = 5,
                         .min_events = 500, .psi_warn = 0.1, .psi_crit = 0.2,
                         .score_psi_warn = 0.1, .score_psi_crit = 0.2, .score_mean_warn = 0.1,
                         .score_mean_crit = 0.15, .missing_warn = 0.1, .latency_warn_s = 0.1,
                         .latency_crit_s = 0.5, .error_warn = 0.01, .error_crit = 0.05,
                         .auc_warn = 0.05, .auc_crit = 0.1, .auc_window = 5000,
                         .auc_min_labels = 500, .hysteresis = 0.1};
    struct metrics_opts mo = {argc > 2 ? atoi(argv[2]) : 0, "bench", "m", "1", 0, NULL};
    struct mon_baseline *b;
    struct metrics *mx;
    struct mon *m;
    double t_mon[REPS], t_mx[REPS];
    float *xs;

    if (argc < 3 || !(b = mon_baseline_load(argv[1], &e)) || !(xs = make_vectors(b, n))) {
        fprintf(stderr, "usage: bench_monitor BASELINE.json METRICS_PORT [N] (%s)\n", e.msg);
        return 2;
    }
    if (!(m = mon_open(&o, b, feat_txn_names(), FEAT_TXN_DIM, &e)) ||
        !(mx = metrics_open(&mo, &e))) {
        fprintf(stderr, "error: %s\n", e.msg);
        return 1;
    }
    for (int r = 0; r < REPS; r++) {
        double t0 = now_ns();
        for (int i = 0; i < n; i++) {
            mon_observe(m, xs + (size_t)i * FEAT_TXN_DIM, (i % 100) / 100.0, 2000 + i % 5000, 0,
                        i / 10);
            if (i % 1000 == 999) {
                mon_tick(m, i / 10);
                mon_alerts_clear(m);
            }
        }
        t_mon[r] = (now_ns() - t0) / n;
        t0 = now_ns();
        for (int i = 0; i < n; i++) {
            metrics_add(mx, METRICS_PREDICTIONS, 1);
            metrics_add(mx, METRICS_DEGRADED, 0);
            metrics_observe_latency(mx, 2000 + i % 5000);
            if (i % 1000 == 999)
                metrics_worker_tick(mx, m, 32, 1, 1);
        }
        t_mx[r] = (now_ns() - t0) / n;
    }
    printf("| stage | median ns/event | min | max |\n|---|---:|---:|---:|\n");
    report("monitor: observe (37 features) + tick/1,000", t_mon);
    report("metrics: counters + histogram + tick/1,000", t_mx);
    metrics_close(mx);
    mon_close(m);
    free(xs);
    return 0;
}
