/* Clickstream stages in process: what one click costs in the GRU step, the
 * catalog scores (one sgemm per micro-batch of sessions) and the ranking
 * (top candidates over the catalog, MMR, exploration). Figures, not tests.
 *   usage: bench_clickstream MODEL.onnx [CLICKS]
 * Prints a markdown table: stage, median us/click of 5 runs, min, max. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

int main(int argc, char **argv)
{
    struct sess_model *m = NULL;
    struct rec_ctx *rc = NULL;
    struct err e = {0};
    struct rec_opts o = {.k = 10, .candidates = 50, .mmr_lambda = 0.5, .epsilon = 0.05};
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
    rec_ctx_close(rc);
    sess_model_close(m);
    free(h);
    free(scores);
    return 0;
}
