/* Cost of exactly-once co-visitation/trending counts and of the clickstream
 * monitor. A figure, not a test.
 *
 *   bench_covis PORT [BATCHES] [PREDICTIONS]
 *
 * Against the redis-server on PORT: BATCHES (default 200) batches of 256
 * clicks (two partitions, 2,000 items, sessions of 8), each through
 * cov_update three ways, median ms per batch: with offsets and epochs (the
 * worker's path: applied-offset check and fencing in the script), without
 * offsets (no deduplication: the script's work before exactly-once), and
 * the same batch again (a redelivery: every click skipped). Then
 * pmon_click_vector + mon_observe + mon_tick per prediction, the baseline
 * built from PREDICTIONS (reference predictions as JSON lines, default the
 * test fixture's). Prints markdown. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "covis.h"
#include "predmon.h"

#define B 256

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp);
    return v[n / 2];
}

static void fill(struct cov_click *c, int batch, int with_offsets)
{
    for (int i = 0; i < B; i++) {
        int64_t k = (int64_t)batch * B + i;
        c[i] = (struct cov_click){i % 8 ? (k * 7919 + 13) % 2000 : -1, (k * 7919) % 2000,
                                  1700000000000LL + 1000 * k, (int32_t)(i % 2),
                                  with_offsets ? k : -1, with_offsets ? 1 : 0};
    }
}

static int bench_counts(int port, int batches)
{
    struct cov_opts o = {.port = port, .prefix = "bench:", .ttl_s = 3600, .half_life_s = 3600,
                         .timeout_ms = 5000};
    struct cov *c = NULL;
    struct cov_click *clk = malloc(B * sizeof(*clk));
    double *t[3] = {malloc(batches * sizeof(double)), malloc(batches * sizeof(double)),
                    malloc(batches * sizeof(double))};
    struct cov_result r;
    struct err e = {0};

    if (!clk || !t[0] || !t[1] || !t[2] || cov_open(&c, &o, &e))
        return fprintf(stderr, "bench_covis: %s\n", e.msg[0] ? e.msg : "out of memory"), 1;
    for (int b = 0; b < batches; b++) {
        for (int w = 0; w < 3; w++) {
            double t0;
            fill(clk, w == 1 ? batches + b : b, w != 1);
            t0 = now_s();
            if (cov_update(c, B, clk, &r, &e))
                return fprintf(stderr, "bench_covis: %s\n", e.msg), 1;
            t[w][b] = (now_s() - t0) * 1e3;
            if (w == 2 && r.redelivered != B)
                return fprintf(stderr, "bench_covis: redelivery counted %zu\n", r.counted), 1;
        }
    }
    printf("| co-visitation/trending update, %d clicks (median of %d batches) | ms/batch | us/click |\n"
           "|---|---:|---:|\n", B, batches);
    static const char *const what[3] = {"exactly once (offsets + epoch checked)",
                                        "no deduplication (the script before)",
                                        "redelivered batch (all skipped)"};
    for (int w = 0; w < 3; w++) {
        double m = median(t[w], batches);
        printf("| %s | %.2f | %.2f |\n", what[w], m, m * 1e3 / B);
    }
    cov_close(c);
    free(clk);
    for (int w = 0; w < 3; w++)
        free(t[w]);
    return 0;
}

static int bench_monitor(const char *path)
{
    FILE *f = fopen(path, "r");
    struct err e = {0};
    size_t rows, n;
    struct mon_baseline *b = f ? pmon_baseline_read(PMON_CLICKSTREAM, f, path, "b", &rows, &e) : NULL;
    const char *const *names = pmon_names(PMON_CLICKSTREAM, &n);
    struct mon_opts o = {.window_events = 10000, .window_ms = 300000, .min_events = 500,
                         .slices = 5, .psi_warn = 0.1, .psi_crit = 0.2, .score_psi_warn = 0.1,
                         .score_psi_crit = 0.2, .score_mean_warn = 0.1, .score_mean_crit = 0.15,
                         .missing_warn = 0.1, .latency_warn_s = 0.1, .latency_crit_s = 0.5,
                         .error_warn = 0.01, .error_crit = 0.05, .auc_warn = 0.05,
                         .auc_crit = 0.1, .auc_window = 100, .auc_min_labels = 100,
                         .hysteresis = 0.1};
    struct mon *m;
    static struct click_prediction p[20]; /* the period of the pattern below */
    double t[5];
    const int N = 200000;

    if (f)
        fclose(f);
    if (!b || !(m = mon_open(&o, b, names, n, &e)))
        return fprintf(stderr, "bench_covis: %s: %s\n", path, e.msg), 1;
    for (int i = 0; i < 20; i++) {
        p[i].n_items = 10;
        for (int j = 0; j < 10; j++) {
            snprintf(p[i].items[j].source, sizeof(p[i].items[j].source), "%s",
                     (i + j) % 10 == 0 ? "explore" : (i + j) % 4 ? "gru" : "covisit");
            p[i].items[j].score = (double)((i * 31 + j) % 100) / 25.0;
        }
        p[i].cold_start = i % 9 == 0;
        p[i].unknown_item = i % 7 == 3;
    }
    for (int r = 0; r < 5; r++) {
        double t0 = now_s();
        for (int i = 0; i < N; i++) {
            float x[PMON_CLICK_DIM];
            double score;
            pmon_click_vector(&p[i % 20], x, &score);
            mon_observe(m, x, score, 500 + i % 300, 0, 1000 + i / 10);
            mon_tick(m, 1000 + i / 10);
            mon_alerts_clear(m);
        }
        t[r] = (now_s() - t0) * 1e9 / N;
    }
    printf("\n| clickstream monitor per prediction (%d, median of 5) | ns/event |\n|---|---:|\n"
           "| pmon_click_vector + mon_observe + mon_tick | %.0f |\n", N, median(t, 5));
    mon_close(m);
    return 0;
}

int main(int argc, char **argv)
{
    char *end1 = "", *end2 = "";
    long port = argc > 1 ? strtol(argv[1], &end1, 10) : 0;
    long batches = argc > 2 ? strtol(argv[2], &end2, 10) : 200;

    if (port <= 0 || port > 65535 || *end1 || batches < 1 || batches > 100000 || *end2) {
        fprintf(stderr, "usage: bench_covis PORT [BATCHES] [BASELINE]\n");
        return 2;
    }
    if (bench_counts((int)port, (int)batches))
        return 1;
    return bench_monitor(argc > 3 ? argv[3] : "tests/fixtures/predmon_clicks.jsonl");
}
