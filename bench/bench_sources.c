/* The clickstream step with candidate sources in process: what one click
 * costs with clickstream.sources (pools of thousands) and a catalogue,
 * against the first release's candidates, with in-memory session state (no
 * Redis: no co-visitation, trending from the model's popular list).
 * Batches of 1000 clicks over 2000 sessions (items skewed to the popular
 * ones, 5% cart events), IVF search, one BLAS thread. Figures, not tests.
 *   usage: bench_sources MODEL.onnx CATALOG.jsonl SOURCES [CLICKS]
 * Prints a markdown table: candidates, median CPU us/click of 5 runs, min, max.
 * BENCH_SOURCES_DUMP=FILE (with BENCH_SOURCES_ONLY): no exploration
 * (epsilon and new_item_epsilon 0) and the last run's shown items, one line
 * per click (event id, then item:source ...), into FILE, so that two
 * builds' final lists can be compared (tools: diff, or a line-by-line comparison).
 * BENCH_SOURCES_SET=key=value sets one more setting (clickstream.ivf_probe=32).
 * BENCH_SOURCES_HELDOUT=FILE (sessions_heldout.jsonl of the trained model, a JSON
 * list of item ids per line): instead of timing, replays those sessions without
 * exploration and prints Recall@k / MRR@k of the shown list (the final top-k,
 * sources, MMR and all) for the session's next item: the quality of what is
 * shown, where click-eval measures the GRU's own top 20. */
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
    const char *dump = getenv("BENCH_SOURCES_DUMP"), *set = getenv("BENCH_SOURCES_SET");
    set = set && *set ? set : NULL;
    FILE *df = NULL;
    size_t ok, bad;
    int64_t items;
    uint64_t x = 88172645463325252ull;

    snprintf(kv, sizeof(kv), "clickstream.model=%s", model);
    if (!cf || !st || cfg_set_arg(cf, kv, &e) ||
        (snprintf(kv, sizeof(kv), "clickstream.sources=%s", sources),
         cfg_set_arg(cf, kv, &e)) ||
        cfg_set_arg(cf, "clickstream.seed=1", &e) || (set && cfg_set_arg(cf, set, &e)) ||
        (dump && (cfg_set_arg(cf, "clickstream.epsilon=0", &e) ||
                  cfg_set_arg(cf, "clickstream.new_item_epsilon=0", &e))) ||
        cfg_finish(cf, &e) ||
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
            for (int i = 0; df && i < BATCH; i++) {
                fprintf(df, "%s", out[i].event_id);
                for (int j = 0; j < out[i].n_items; j++)
                    fprintf(df, " %lld:%s", (long long)out[i].items[j].item_id,
                            out[i].items[j].source);
                fputc('\n', df);
            }
        }
        runs[r] = (now_us() - t0) / (double)clicks;
        if (dump && r == 3 && !(df = fopen(dump, "w"))) {
            fprintf(stderr, "bench_sources: cannot write %s\n", dump);
            return 1;
        }
    }
    if (df)
        fclose(df);
    qsort(runs, 5, sizeof(double), cmp);
    printf("| %s | %.1f | %.1f | %.1f |\n", label, runs[2], runs[0], runs[4]);
    cstep_close(cs);
    cat_close(cat);
    state_close(st);
    cfg_free(cf);
    return 0;
}

#define HELD_SESSIONS 1000
#define HELD_LEN 64

/* Recall@k and MRR@k of the shown lists on held-out sessions (see above). */
static int heldout(const char *path, const char *model, const char *catalog, const char *sources)
{
    static int64_t sess[HELD_SESSIONS][HELD_LEN];
    static int len[HELD_SESSIONS];
    static struct click_event ev[BATCH];
    static struct cstep_click in[BATCH];
    static struct click_prediction out[BATCH];
    static int who[BATCH];
    const char *set = getenv("BENCH_SOURCES_SET");
    set = set && *set ? set : NULL;
    struct cfg *cf = cfg_new();
    struct err e = {0};
    struct state *st = state_open_memory();
    struct cstep *cs = NULL;
    struct catalog *cat = NULL;
    FILE *f = fopen(path, "r");
    char line[8192], kv[1024];
    int ns = 0, maxlen = 0;
    long asked = 0, hits = 0, c = 0;
    double rr = 0;
    size_t ok, bad;

    while (f && ns < HELD_SESSIONS && fgets(line, sizeof(line), f)) {
        char *p = line, *q;
        for (len[ns] = 0; len[ns] < HELD_LEN;) {
            while (*p && (*p < '0' || *p > '9'))
                p++;
            if (!*p)
                break;
            sess[ns][len[ns]++] = strtoll(p, &q, 10);
            p = q;
        }
        maxlen = len[ns] > maxlen ? len[ns] : maxlen;
        ns++;
    }
    if (f)
        fclose(f);
    snprintf(kv, sizeof(kv), "clickstream.model=%s", model);
    if (!f || !cf || !st || cfg_set_arg(cf, kv, &e) ||
        (snprintf(kv, sizeof(kv), "clickstream.sources=%s", sources), cfg_set_arg(cf, kv, &e)) ||
        cfg_set_arg(cf, "clickstream.seed=1", &e) || (set && cfg_set_arg(cf, set, &e)) ||
        cfg_set_arg(cf, "clickstream.epsilon=0", &e) ||
        cfg_set_arg(cf, "clickstream.new_item_epsilon=0", &e) || cfg_finish(cf, &e) ||
        cstep_open(&cs, cf, BATCH, st, NULL, &e) ||
        (*sources && (cat_open(&cat, cstep_catalog_ids(cf, sess_model_items(cstep_model(cs))),
                               sess_model_items(cstep_model(cs)), &e) ||
                      cat_load_file(cat, catalog, &ok, &bad, NULL, NULL, &e) ||
                      cstep_set_catalog(cs, cat, &e)))) {
        fprintf(stderr, "bench_sources: %s\n", f ? e.msg : path);
        return 1;
    }
    /* position t of every session at once: a session's clicks stay in order */
    for (int t = 0; t + 1 < maxlen; t++) {
        int n = 0;
        for (int i = 0; i < ns && n < BATCH; i++) {
            if (len[i] <= t + 1)
                continue;
            snprintf(ev[n].event_id, sizeof(ev[n].event_id), "h%ld", c);
            snprintf(ev[n].session_id, sizeof(ev[n].session_id), "h%d", i);
            ev[n].item_id = sess[i][t];
            ev[n].type = CLICK_VIEW;
            ev[n].event_time_ms = 1767225600000LL + c * 100;
            in[n] = (struct cstep_click){&ev[n], "heldout", 0, c++, 0};
            who[n++] = i;
        }
        cstep_batch(cs, (size_t)n, in, out);
        cstep_store(cs);
        for (int j = 0; j < n; j++) {
            asked++;
            for (int r = 0; r < out[j].n_items; r++)
                if (out[j].items[r].item_id == sess[who[j]][t + 1]) {
                    hits++;
                    rr += 1.0 / (r + 1);
                    break;
                }
        }
    }
    printf("| %s%s%s | %ld | %.4f | %.4f |\n", sources, set ? ", " : "", set ? set : "", asked,
           asked ? (double)hits / asked : 0.0, asked ? rr / asked : 0.0);
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
    if (getenv("BENCH_SOURCES_HELDOUT")) {
        printf("| candidates | predictions | Recall@k of the shown list | MRR@k |\n"
               "|---|---:|---:|---:|\n");
        return heldout(getenv("BENCH_SOURCES_HELDOUT"), argv[1], argv[2], argv[3]);
    }
    printf("| candidates | CPU us/click (median of 5) | min | max |\n|---|---:|---:|---:|\n");
    if (getenv("BENCH_SOURCES_ONLY")) /* profiling one of them */
        return run(argv[3], argv[1], argv[2], argv[3], clicks);
    return run("first release (gru:50, covisit:10, popular:10)", argv[1], argv[2], "", clicks) ||
           run(argv[3], argv[1], argv[2], argv[3], clicks);
}
