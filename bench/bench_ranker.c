/* What the second-stage ranker (clickstream.ranker) costs per click: the
 * clickstream step in process (in-memory state, no Redis: no co-visitation)
 * with candidate sources and the demo catalogue, without a ranker and with
 * it re-scoring 100, 500 and 2000 candidates per click. The four steps run
 * interleaved, round by round (5 rounds), so that the load of a shared
 * machine hits them alike; batches of 1000 clicks over 2000 sessions,
 * exact search, one BLAS thread. Figures, not tests.
 *   usage: bench_ranker [MODEL.onnx CATALOG.jsonl RANKER.onnx SOURCES [CLICKS]]
 * (defaults: the committed demo model, catalogue and ranker). Prints a
 * markdown table: median CPU us/click, min, max, and the median of the
 * per-round differences to the step without a ranker. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_clicks.h"
#include "catalog.h"
#include "cfg.h"
#include "clickstep.h"
#include "ranker.h"
#include "state.h"

#define BATCH 1000
#define ROUNDS 5
#define NCONF 4

static double now_us(void) /* process CPU time (one thread) */
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct conf {
    const char *label, *ranker, *cands;
    struct cfg *cf;
    struct state *st;
    struct cstep *cs;
    struct catalog *cat;
    double us[ROUNDS];
};

static int open_conf(struct conf *k, const char *model, const char *catalog, const char *sources)
{
    struct err e = {0};
    char kv[1024];
    size_t ok, bad;
    int64_t items;

    k->cf = cfg_new();
    k->st = state_open_memory();
    if (!k->cf || !k->st)
        return 1;
    const char *set[] = {"clickstream.seed=1", "clickstream.search=exact",
                         "clickstream.mmr_candidates=100"};
    for (size_t i = 0; i < sizeof(set) / sizeof(set[0]); i++)
        if (cfg_set_arg(k->cf, set[i], &e))
            goto fail;
    snprintf(kv, sizeof(kv), "clickstream.model=%s", model);
    if (cfg_set_arg(k->cf, kv, &e))
        goto fail;
    snprintf(kv, sizeof(kv), "clickstream.sources=%s", sources);
    if (cfg_set_arg(k->cf, kv, &e))
        goto fail;
    snprintf(kv, sizeof(kv), "clickstream.ranker=%s", k->ranker);
    if (cfg_set_arg(k->cf, kv, &e))
        goto fail;
    snprintf(kv, sizeof(kv), "clickstream.ranker_candidates=%s", k->cands);
    if (cfg_set_arg(k->cf, kv, &e) || cfg_finish(k->cf, &e) ||
        cstep_open(&k->cs, k->cf, BATCH, k->st, NULL, &e))
        goto fail;
    items = sess_model_items(cstep_model(k->cs));
    if (cat_open(&k->cat, cstep_catalog_ids(k->cf, items), items, &e) ||
        cat_load_file(k->cat, catalog, &ok, &bad, NULL, NULL, &e) ||
        cstep_set_catalog(k->cs, k->cat, &e))
        goto fail;
    return 0;
fail:
    fprintf(stderr, "bench_ranker: %s: %s\n", k->label, e.msg);
    return 1;
}

/* One round of clicks through k's step; its CPU us per click. */
static double round_of(struct conf *k, int r, long clicks, int64_t items)
{
    static struct click_event ev[BATCH];
    static struct cstep_click in[BATCH];
    static struct click_prediction out[BATCH];
    uint64_t x = 88172645463325252ull + (uint64_t)r; /* the same clicks for every step */
    double t0 = now_us();

    for (long done = 0; done < clicks; done += BATCH) {
        bench_clicks(ev, in, BATCH, done, items, r * clicks + done, &x);
        cstep_batch(k->cs, BATCH, in, out);
        cstep_store(k->cs);
    }
    return (now_us() - t0) / (double)clicks;
}

int main(int argc, char **argv)
{
    const char *model = argc > 1 ? argv[1] : "models/clickstream/gru4rec.onnx";
    const char *catalog = argc > 2 ? argv[2] : "models/clickstream/catalog.jsonl";
    const char *ranker = argc > 3 ? argv[3] : "models/clickstream/ranker.onnx";
    const char *sources =
        argc > 4 ? argv[4] : "gru:500,category:200,popular:200,region:50,cart:20,new:30";
    long clicks = argc > 5 ? atol(argv[5]) : 4000;
    struct conf k[NCONF] = {{"no ranker", "", "100", NULL, NULL, NULL, NULL, {0}},
                            {"ranker, 100 candidates per click", ranker, "100", NULL, NULL, NULL,
                             NULL, {0}},
                            {"ranker, 500 candidates per click", ranker, "500", NULL, NULL, NULL,
                             NULL, {0}},
                            {"ranker, 2000 candidates per click", ranker, "2000", NULL, NULL, NULL,
                             NULL, {0}}};
    double diff[NCONF][ROUNDS];
    int64_t items;

    openblas_set_num_threads(1);
    for (int c = 0; c < NCONF; c++)
        if (open_conf(&k[c], model, catalog, sources))
            return 1;
    items = sess_model_items(cstep_model(k[0].cs));
    for (int r = 0; r < ROUNDS; r++)
        for (int c = 0; c < NCONF; c++)
            k[c].us[r] = round_of(&k[c], r, clicks, items);
    printf("sources %s, %ld clicks per round, %d rounds interleaved\n\n", sources, clicks, ROUNDS);
    printf("| step | CPU us/click (median) | min | max | ranker's cost (median of round "
           "differences) |\n|---|---:|---:|---:|---:|\n");
    for (int c = 0; c < NCONF; c++) /* paired by round, before sorting */
        for (int r = 0; r < ROUNDS; r++)
            diff[c][r] = k[c].us[r] - k[0].us[r];
    for (int c = 0; c < NCONF; c++) {
        qsort(diff[c], ROUNDS, sizeof(double), cmp);
        qsort(k[c].us, ROUNDS, sizeof(double), cmp);
        printf("| %s | %.1f | %.1f | %.1f | %.1f |\n", k[c].label, k[c].us[ROUNDS / 2],
               k[c].us[0], k[c].us[ROUNDS - 1], diff[c][ROUNDS / 2]);
    }
    for (int c = 0; c < NCONF; c++) {
        struct rk *rk = cstep_ranker(k[c].cs, -1);
        const struct rk_counts *n = rk ? rk_counts(rk) : NULL;
        if (n && n->clicks && n->runs)
            printf("\n%s: %.1f CPU us per click in features and ONNX runs, %.0f pairs per run",
                   k[c].label, (double)n->us / (double)n->clicks,
                   (double)n->pairs / (double)n->runs);
        cstep_close(k[c].cs);
        cat_close(k[c].cat);
        state_close(k[c].st);
        cfg_free(k[c].cf);
    }
    printf("\n");
    return 0;
}
