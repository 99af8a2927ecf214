/* Cost of champion/challenger on the worker's hot path, ns per event,
 * median of 5 runs: the sticky assignment alone (SHA-256 of salt:id) and
 * a whole prediction scored through the experiment (assignment + the
 * variant's txn_score) against txn_score without one. A figure, not a test.
 * usage (from the repository root): bench_abtest [EVENTS] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "abtest.h"
#include "cfg.h"
#include "features.h"
#include "txn.h"

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

static double median(double *v)
{
    qsort(v, REPS, sizeof(*v), cmp);
    return v[REPS / 2];
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 200000;
    struct cfg *c = cfg_new(), *plain = cfg_new();
    struct err e = {0};
    struct ab_serving *s, *one;
    struct txn_prediction p;
    float x[FEAT_TXN_DIM];
    double t_assign[REPS], t_exp[REPS], t_plain[REPS], t0;
    volatile size_t sink = 0;
    char id[32];
    size_t v;

    if (!c || !plain || n < 1 || cfg_set(c, "experiment.id", "bench", "bench", &e) ||
        cfg_set(c, "experiment.variants",
                "champion:models/credit_gbdt.json:0.9,challenger:models/credit_gbdt.json:0.1",
                "bench", &e) ||
        !(s = ab_serving_open(c, &e)) || !(one = ab_serving_open(plain, &e))) {
        fprintf(stderr, "bench_abtest: %s\n", e.msg);
        return 1;
    }
    for (int j = 0; j < FEAT_TXN_DIM; j++)
        x[j] = (float)(j % 7) * 0.3f;
    for (int r = 0; r < REPS; r++) {
        t0 = now_ns();
        for (long i = 0; i < n; i++) {
            snprintf(id, sizeof(id), "user-%ld", i);
            sink += ab_assign(ab_serving_experiment(s), id);
        }
        t_assign[r] = (now_ns() - t0) / (double)n;
        t0 = now_ns();
        for (long i = 0; i < n; i++) {
            snprintf(id, sizeof(id), "user-%ld", i);
            sink += (size_t)ab_serving_score(s, id, x, &p, &v);
        }
        t_exp[r] = (now_ns() - t0) / (double)n;
        t0 = now_ns();
        for (long i = 0; i < n; i++) {
            snprintf(id, sizeof(id), "user-%ld", i);
            sink += (size_t)ab_serving_score(one, id, x, &p, &v);
        }
        t_plain[r] = (now_ns() - t0) / (double)n;
    }
    printf("abtest: %ld events x %d runs, median ns/event (ids formatted in each loop)\n", n, REPS);
    printf("  assignment (SHA-256 of salt:id)       %8.0f\n", median(t_assign));
    printf("  score with a 2-variant experiment     %8.0f\n", median(t_exp));
    printf("  score without an experiment           %8.0f\n", median(t_plain));
    printf("  experiment overhead                   %8.1f%%\n",
           100 * (median(t_exp) / median(t_plain) - 1));
    ab_serving_close(s);
    ab_serving_close(one);
    cfg_free(c);
    cfg_free(plain);
    return sink == (size_t)-1;
}
