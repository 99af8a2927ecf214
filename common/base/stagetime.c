/* common/base/stagetime.c: per-stage histograms (see stagetime.h). */
#include "stagetime.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define STT_SUB 8  /* buckets per octave */
#define STT_OCT 40 /* octaves: up to 2^40 us */
#define STT_BUCKETS (STT_SUB * STT_OCT)

static const char *const stt_names[STT_N] = {"wait (poll, to the first message)",
                                             "take (the rest of the batch)",
                                             "batch size (messages)",
                                             "check (state store's loss check)",
                                             "decode",
                                             "process (state read, features, score)",
                                             "  of which: state read round trip",
                                             "  of which: state write sent",
                                             "emit (produce calls)",
                                             "store (write reply, acks)",
                                             "tick (monitors, metrics, reload check)",
                                             "serve (delivery reports)",
                                             "loop turn less the wait",
                                             "event age at take",
                                             "event age at produce",
                                             "event age at batch stored"};

static struct {
    int on;
    char path[512];
    uint64_t n[STT_N], b[STT_N][STT_BUCKETS];
    int64_t max[STT_N];
    double sum[STT_N];
} g;

void stt_enable(const char *path)
{
    memset(&g, 0, sizeof(g));
    snprintf(g.path, sizeof(g.path), "%s", path);
    g.on = path && *path;
}

int stt_enabled(void)
{
    return g.on;
}

int64_t stt_wall_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Values below STT_SUB are exact; above, an eighth of an octave. */
static int bucket_of(uint64_t v)
{
    int oct, sub;

    if (v < STT_SUB)
        return (int)v;
    oct = 63 - __builtin_clzll(v); /* >= 3 */
    sub = (int)((v >> (oct - 3)) & (STT_SUB - 1));
    oct -= 2; /* octave 3 is bucket row 1 */
    return oct >= STT_OCT ? STT_BUCKETS - 1 : oct * STT_SUB + sub;
}

static double bucket_mid(int k)
{
    int oct = k / STT_SUB, sub = k % STT_SUB;
    double lo;

    if (oct == 0)
        return sub;
    lo = (double)(1ULL << (oct + 2)) * (1.0 + sub / 8.0);
    return lo * (1.0 + 1.0 / 16.0);
}

void stt_add(enum stt_stage s, int64_t v)
{
    if (!g.on || s < 0 || s >= STT_N)
        return;
    if (v < 0)
        v = 0;
    g.n[s]++;
    g.sum[s] += (double)v;
    g.max[s] = v > g.max[s] ? v : g.max[s];
    g.b[s][bucket_of((uint64_t)v)]++;
}

static double pct(enum stt_stage s, double p)
{
    uint64_t want = (uint64_t)((double)g.n[s] * p), seen = 0;

    for (int k = 0; k < STT_BUCKETS; k++)
        if ((seen += g.b[s][k]) > want)
            return bucket_mid(k) < (double)g.max[s] ? bucket_mid(k) : (double)g.max[s];
    return (double)g.max[s];
}

int stt_report(void)
{
    FILE *f;

    if (!g.on)
        return 0;
    if (!(f = fopen(g.path, "w"))) {
        log_error("worker.stage_times: cannot write %s: %s", g.path, strerror(errno));
        return -1;
    }
    fprintf(f, "| stage (us; batch size in messages) | count | mean | p50 | p90 | p99 | p99.9 | "
               "max |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int s = 0; s < STT_N; s++)
        if (g.n[s])
            fprintf(f, "| %s | %llu | %.0f | %.0f | %.0f | %.0f | %.0f | %lld |\n", stt_names[s],
                    (unsigned long long)g.n[s], g.sum[s] / (double)g.n[s], pct(s, 0.5), pct(s, 0.9),
                    pct(s, 0.99), pct(s, 0.999), (long long)g.max[s]);
    if (fclose(f)) {
        log_error("worker.stage_times: cannot write %s: %s", g.path, strerror(errno));
        return -1;
    }
    return 0;
}
