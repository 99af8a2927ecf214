/* Clickstream stages in process: what one click costs in the GRU step, the
 * catalog scores (one sgemm per micro-batch of sessions) and the ranking
 * (top candidates over the catalog, MMR, exploration). Figures, not tests.
 * The IVF rows (common/models/ann.h): the index build, then its stages at the
 * worker's micro-batch sizes over the states of 256 sessions of 5 clicks
 * each, and the mean overlap of its top 70 with the exact top 70.
 *   usage: bench_clickstream MODEL.onnx [CLICKS [IVF_PROBE [IVF_LISTS]]]
 * Prints a markdown table: stage, median us/click of 5 runs, min, max. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ann.h"
#include "session.h"

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void row(const char *stage, double *runs)
{
    qsort(runs, 5, sizeof(double), cmp);
    printf("| %s | %.2f | %.2f | %.2f |\n", stage, runs[2], runs[0], runs[4]);
}

/* 1024 sessions of 5 clicks each: states spread like the worker's. */
static void session_states(const struct sess_model *m, float *h)
{
    size_t hid = (size_t)sess_model_hidden(m);
    int64_t items = sess_model_items(m);
    float scratch[6 * SESS_MAX_HIDDEN];
    struct err e = {0};

    memset(h, 0, 1024 * hid * sizeof(float));
    for (int64_t r = 0; r < 1024; r++)
        for (int64_t t = 0; t < 5; t++)
            sess_step(m, (r * 7919 + t * 104729 + r * t) % items, h + r * hid, scratch, &e);
}

static double overlap(const struct sess_top *x, const struct sess_top *y, int n, int k)
{
    double sum = 0;

    for (int i = 0; i < n; i++)
        for (int a = 0; a < k; a++)
            for (int b = 0; b < k; b++)
                sum += x[i * k + a].item >= 0 && x[i * k + a].item == y[i * k + b].item;
    return sum / ((double)n * k);
}

/* The IVF stages per click at b sessions per call, medians of 5 runs. */
static void ivf_rows(const struct ann *a, struct ann_query *q, const float *h, size_t hid, int b,
                     long clicks, struct sess_top *top)
{
    double runs[4][5];
    long reps = clicks / b > 0 ? clicks / b : 1;
    const char *what[] = {"total", "centroid and leader scores + probe choice",
                          "probed items scored (grouped sgemm, gather)", "top 70 selection (threshold, buffer, quickselect) + sort"};
    char name[128];

    for (int r = 0; r < 5; r++) {
        double t0 = now_us();
        const struct ann_stats *st = ann_query_stats(q);
        ann_query_reset_stats(q);
        for (long i = 0; i < reps; i++)
            if (ann_topk(a, q, (size_t)b, h + (size_t)((i % (1024 / b)) * b) * hid, 70, top, NULL))
                return;
        runs[0][r] = (now_us() - t0) / (double)(reps * b);
        runs[1][r] = st->centroid_us / (double)st->queries;
        runs[2][r] = st->score_us / (double)st->queries;
        runs[3][r] = st->select_us / (double)st->queries;
    }
    for (int s = 0; s < 4; s++) {
        snprintf(name, sizeof(name), "IVF top 70, %d sessions: %s", b, what[s]);
        row(name, runs[s]);
    }
}

static int ivf_bench(const struct sess_model *m, long clicks, int probe, int lists)
{
    struct ann_opts o = {.lists = lists, .probe = probe};
    struct ann *a = NULL;
    struct ann_query *q = NULL;
    struct err e = {0};
    size_t hid = (size_t)sess_model_hidden(m);
    float *h = malloc(1024 * hid * sizeof(float)), *block = malloc(256 * SESS_BLOCK * sizeof(float));
    struct sess_top *x = malloc(1024 * 70 * sizeof(*x)), *y = malloc(1024 * 70 * sizeof(*y));
    int64_t lo, hi;

    if (!h || !block || !x || !y || ann_open(&a, m, &o, &e) || ann_query_open(&q, a, 70, &e)) {
        fprintf(stderr, "IVF: %s\n", e.msg);
        return 1;
    }
    session_states(m, h);
    ivf_rows(a, q, h, hid, 64, clicks, y);
    ivf_rows(a, q, h, hid, 256, clicks, y);
    ivf_rows(a, q, h, hid, 1024, clicks, y);
    sess_topk(m, 256, h, 70, x, block);
    ann_query_reset_stats(q);
    if (ann_topk(a, q, 256, h, 70, y, &e)) {
        fprintf(stderr, "IVF: %s\n", e.msg);
        return 1;
    }
    ann_list_sizes(a, &lo, &hi);
    printf("\nIVF index: %d lists (%lld..%lld items), probe %d, built in %.0f ms; %.1f%% of the "
           "catalog scored per click; mean overlap of the IVF top 70 with the exact top 70 over "
           "256 synthetic states (5 arbitrary clicks each; bench_ivf_recall measures real "
           "sessions): %.3f\n",
           ann_lists(a), (long long)lo, (long long)hi, ann_probe(a), ann_build_ms(a),
           100.0 * (double)ann_query_stats(q)->scored / (256.0 * (double)sess_model_items(m)),
           overlap(y, x, 256, 70));
    ann_query_close(q);
    ann_close(a);
    free(h);
    free(block);
    free(x);
    free(y);
    return 0;
}

int main(int argc, char **argv)
{
    struct sess_model *m = NULL;
    struct rec_ctx *rc = NULL;
    struct err e = {0};
    struct rec_opts o = {.k = 10, .candidates = 50, .lambda_diversity = 0.5, .epsilon = 0.05};
    long clicks = argc > 2 ? strtol(argv[2], NULL, 10) : 2048;
    int batches[] = {1, 16, 64, 256};
    /* full-score rows: the last path of the table, the plain alternative */
    double runs[5];
    size_t hid, items;
    float *h, *scores, scratch[6 * SESS_MAX_HIDDEN];
    struct rec_item out[REC_MAX_K];
    int64_t hist[20];
    size_t n;

    if (argc < 2) {
        fprintf(stderr, "usage: bench_clickstream MODEL.onnx [CLICKS]\n");
        return 2;
    }
    openblas_set_num_threads(1); /* per worker: one BLAS thread, as the worker runs */
    if (sess_model_open(&m, argv[1], &e) || rec_ctx_open(&rc, m, &o, 1, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    hid = (size_t)sess_model_hidden(m);
    items = (size_t)sess_model_items(m);
    h = calloc(256 * hid, sizeof(float));
    scores = malloc(256 * items * sizeof(float));
    if (!h || !scores)
        return 1;
    printf("%zu items, hidden %zu, one BLAS thread, %ld clicks per run\n\n", items, hid, clicks);
    printf("| stage | median us/click | min | max |\n|---|---:|---:|---:|\n");
    for (int r = 0; r < 5; r++) {
        double t0 = now_us();
        for (long i = 0; i < clicks; i++)
            sess_step(m, (int64_t)((i * 7919) % (long)items), h, scratch, &e);
        runs[r] = (now_us() - t0) / (double)clicks;
    }
    row("GRU step (one click)", runs);
    for (size_t b = 0; b < sizeof(batches) / sizeof(batches[0]); b++) {
        char name[64];
        long reps = clicks / batches[b] > 0 ? clicks / batches[b] : 1;
        for (int r = 0; r < 5; r++) {
            double t0 = now_us();
            for (long i = 0; i < reps; i++)
                sess_scores(m, (size_t)batches[b], h, scores);
            runs[r] = (now_us() - t0) / (double)(reps * batches[b]);
        }
        snprintf(name, sizeof(name), "catalog scores, sgemm of %d sessions", batches[b]);
        row(name, runs);
    }
    {
        float *block = malloc(256 * (size_t)SESS_BLOCK * sizeof(float));
        struct sess_top *top = malloc(256 * 70 * sizeof(*top));
        for (size_t b = 1; b < sizeof(batches) / sizeof(batches[0]); b++) {
            char name[96];
            long reps = clicks / batches[b] > 0 ? clicks / batches[b] : 1;
            for (int r = 0; r < 5; r++) {
                double t0 = now_us();
                for (long i = 0; i < reps; i++)
                    sess_topk(m, (size_t)batches[b], h, 70, top, block);
                runs[r] = (now_us() - t0) / (double)(reps * batches[b]);
            }
            snprintf(name, sizeof(name), "blocked scores + top 70, %d sessions (the worker's path)",
                     batches[b]);
            row(name, runs);
        }
        for (int j = 0; j < 20; j++)
            hist[j] = top[j].item; /* excluded: some of the best items */
        for (int r = 0; r < 5; r++) {
            double t0 = now_us();
            for (long i = 0; i < clicks; i++) {
                struct rec_input in = {.top = top + (i % 256) * 70,
                                       .n_top = 70,
                                       .h = h + (size_t)(i % 256) * hid,
                                       .exclude = hist,
                                       .n_exclude = 20};
                rec_rank(rc, &in, out, &n);
            }
            runs[r] = (now_us() - t0) / (double)clicks;
        }
        row("ranking from the top 70 (MMR to 10, epsilon-greedy; the worker's path)", runs);
        free(block);
        free(top);
    }
    for (int j = 0; j < 20; j++)
        hist[j] = j * 31;
    for (int r = 0; r < 5; r++) {
        double t0 = now_us();
        for (long i = 0; i < clicks; i++) {
            struct rec_input in = {
                .scores = scores + (size_t)(i % 256) * items, .exclude = hist, .n_exclude = 20};
            rec_rank(rc, &in, out, &n);
        }
        runs[r] = (now_us() - t0) / (double)clicks;
    }
    row("ranking from full scores (top 50 of the catalog, MMR, epsilon-greedy)", runs);
    if (ivf_bench(m, clicks, argc > 3 ? atoi(argv[3]) : 16, argc > 4 ? atoi(argv[4]) : 0))
        return 1;
    rec_ctx_close(rc);
    sess_model_close(m);
    free(h);
    free(scores);
    return 0;
}
