/* IVF quality against speed on real session states: the hidden state after
 * every click of held-out sessions (one JSON array of item ids per line, as
 * models/clickstream/train.py writes them), the exact top 70 of each
 * (sess_topk), then per probe: the mean overlap of the IVF top 70 (and top
 * 20) with the exact ones, the share of the catalog scored, and the IVF
 * search's us/click over all the states at once (one BLAS thread).
 *   usage: bench_ivf_recall MODEL.onnx SESSIONS.jsonl [LISTS [PROBE,PROBE,...]]
 * Prints markdown. Figures, not tests (tests/test_ann.c holds the floor). */
#include <cblas.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ann.h"
#include "session.h"

#define K 70
#define MAX_STATES 4096

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* h (MAX_STATES x hidden): the state after each click; returns how many. */
static size_t load_states(const struct sess_model *m, const char *path, float *h)
{
    FILE *f = fopen(path, "r");
    char line[8192];
    size_t n = 0, hid = (size_t)sess_model_hidden(m);
    float cur[SESS_MAX_HIDDEN], scratch[6 * SESS_MAX_HIDDEN];
    struct err e = {0};

    if (!f)
        return 0;
    while (n < MAX_STATES && fgets(line, sizeof(line), f)) {
        json_error_t je;
        json_t *s = json_loads(line, 0, &je);
        memset(cur, 0, sizeof(cur));
        for (size_t t = 0; s && t < json_array_size(s) && n < MAX_STATES; t++)
            if (sess_step(m, json_integer_value(json_array_get(s, t)), cur, scratch, &e) == 0)
                memcpy(h + n++ * hid, cur, hid * sizeof(float));
        json_decref(s);
    }
    fclose(f);
    return n;
}

static double overlap(const struct sess_top *x, const struct sess_top *y, size_t n, int k)
{
    double sum = 0;

    for (size_t i = 0; i < n; i++)
        for (int a = 0; a < k; a++)
            for (int b = 0; b < k; b++)
                sum += x[i * K + a].item >= 0 && x[i * K + a].item == y[i * K + b].item;
    return sum / ((double)n * k);
}

static int one_probe(const struct sess_model *m, int lists, int probe, const float *h, size_t n,
                     const struct sess_top *exact, struct sess_top *top)
{
    struct ann_opts o = {.lists = lists, .probe = probe};
    struct ann *a = NULL;
    struct ann_query *q = NULL;
    struct err e = {0};
    double t0;

    if (ann_open(&a, m, &o, &e) || ann_query_open(&q, a, K, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        ann_close(a);
        return 1;
    }
    t0 = now_us();
    if (ann_topk(a, q, n, h, K, top, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        ann_query_close(q);
        ann_close(a);
        return 1;
    }
    printf("| %d | %d | %.1f%% | %.3f | %.3f | %.1f |\n", ann_lists(a), ann_probe(a),
           100.0 * (double)ann_query_stats(q)->scored / ((double)n * sess_model_items(m)),
           overlap(top, exact, n, K), overlap(top, exact, n, 20), (now_us() - t0) / (double)n);
    ann_query_close(q);
    ann_close(a);
    return 0;
}

int main(int argc, char **argv)
{
    struct sess_model *m = NULL;
    struct err e = {0};
    const char *probes = argc > 4 ? argv[4] : "4,8,16,32,64";
    int lists = argc > 3 ? atoi(argv[3]) : 0, rc = 0;
    float *h, *block;
    struct sess_top *exact, *top;
    size_t n;
    double t0;

    if (argc < 3) {
        fprintf(stderr, "usage: bench_ivf_recall MODEL.onnx SESSIONS.jsonl [LISTS [PROBES]]\n");
        return 2;
    }
    openblas_set_num_threads(1);
    if (sess_model_open(&m, argv[1], &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    h = malloc(MAX_STATES * (size_t)sess_model_hidden(m) * sizeof(float));
    block = malloc(256 * (size_t)SESS_BLOCK * sizeof(float));
    exact = malloc(MAX_STATES * K * sizeof(*exact));
    top = malloc(MAX_STATES * K * sizeof(*top));
    if (!h || !block || !exact || !top || !(n = load_states(m, argv[2], h))) {
        fprintf(stderr, "%s: no session states\n", argv[2]);
        return 1;
    }
    t0 = now_us();
    sess_topk(m, n, h, K, exact, block);
    printf("%lld items, hidden %d, %zu session states (every click of %s); exact top %d: %.1f "
           "us/click\n\n| lists | probe | catalog scored | overlap top 70 | overlap top 20 | IVF "
           "us/click |\n|---:|---:|---:|---:|---:|---:|\n",
           (long long)sess_model_items(m), sess_model_hidden(m), n, argv[2], K,
           (now_us() - t0) / (double)n);
    for (const char *p = probes; *p && !rc; p = strchr(p, ',') ? strchr(p, ',') + 1 : "")
        rc = one_probe(m, lists, atoi(p), h, n, exact, top);
    free(h);
    free(block);
    free(exact);
    free(top);
    sess_model_close(m);
    return rc;
}
