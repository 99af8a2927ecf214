/* The clickstream step with candidate sources in process: what one click
 * costs with clickstream.sources (pools of thousands) and a catalogue,
 * against the first release's candidates, with in-memory session state (no
 * Redis: no co-visitation, trending from the model's popular list).
 * Batches of 1000 clicks over 2000 sessions (items skewed to the popular
 * ones, 5% cart events), IVF search, one BLAS thread. Figures, not tests.
 *   usage: bench_sources MODEL.onnx CATALOG.jsonl SOURCES [CLICKS]
 * Prints a markdown table: candidates, median CPU us/click of 5 runs, min, max. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_clicks.h"
#include "catalog.h"
#include "cfg.h"
#include "clickstep.h"
#include "state.h"

#define BATCH 1000

/* CPU time of the process (one thread: one BLAS thread): on a shared
 * machine the wall clock also counts the time other programs ran. */
static double now_us(void)
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

/* us per click of `clicks` clicks, medians of 5 runs, one row. */
static int run(const char *label, const char *model, const char *catalog, const char *sources,
               long clicks)
{
    struct cfg *cf = cfg_new();
    struct err e = {0};
    struct state *st = state_open_memory();
    struct cstep *cs = NULL;
    struct catalog *cat = NULL;
    static struct click_event ev[BATCH];
    static struct cstep_click in[BATCH];
    static struct click_prediction out[BATCH];
    char kv[1024];
    double runs[5];
    size_t ok, bad;
    int64_t items;
    uint64_t x = 88172645463325252ull;

    snprintf(kv, sizeof(kv), "clickstream.model=%s", model);
    if (!cf || !st || cfg_set_arg(cf, kv, &e) ||
        (snprintf(kv, sizeof(kv), "clickstream.sources=%s", sources),
         cfg_set_arg(cf, kv, &e)) ||
        cfg_set_arg(cf, "clickstream.seed=1", &e) || cfg_finish(cf, &e) ||
        cstep_open(&cs, cf, BATCH, st, NULL, &e)) {
        fprintf(stderr, "bench_sources: %s\n", e.msg);
        return 1;
    }
    items = sess_model_items(cstep_model(cs));
    if (*sources) {
        if (cat_open(&cat, cstep_catalog_ids(cf, items), items, &e) ||
            cat_load_file(cat, catalog, &ok, &bad, NULL, NULL, &e) ||
            cstep_set_catalog(cs, cat, &e)) {
            fprintf(stderr, "bench_sources: %s\n", e.msg);
            return 1;
        }
    }
    for (int r = 0; r < 5; r++) {
        double t0 = now_us();
        for (long done = 0; done < clicks; done += BATCH) {
            bench_clicks(ev, in, BATCH, done, items, r * clicks + done, &x);
            cstep_batch(cs, BATCH, in, out);
            cstep_store(cs);
        }
        runs[r] = (now_us() - t0) / (double)clicks;
    }
    qsort(runs, 5, sizeof(double), cmp);
    printf("| %s | %.1f | %.1f | %.1f |\n", label, runs[2], runs[0], runs[4]);
    cstep_close(cs);
    cat_close(cat);
    state_close(st);
    cfg_free(cf);
    return 0;
}

int main(int argc, char **argv)
{
    long clicks = argc > 4 ? atol(argv[4]) : 5000;

    if (argc < 4) {
        fprintf(stderr, "usage: bench_sources MODEL.onnx CATALOG.jsonl SOURCES [CLICKS]\n");
        return 2;
    }
    openblas_set_num_threads(1);
    printf("| candidates | CPU us/click (median of 5) | min | max |\n|---|---:|---:|---:|\n");
    if (getenv("BENCH_SOURCES_ONLY")) /* profiling one of them */
        return run(argv[3], argv[1], argv[2], argv[3], clicks);
    return run("first release (gru:50, covisit:10, popular:10)", argv[1], argv[2], "", clicks) ||
           run(argv[3], argv[1], argv[2], argv[3], clicks);
}
