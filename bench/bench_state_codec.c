/* The users' state blob (fspec_state_encode / fspec_state_decode of the
 * active spec, txn-v1): ns per encode and decode, for a busy user (an event
 * every 40 minutes for 30 days: every window bucket in use) and a user seen
 * once, the cases the worker's users' cache decodes on each hit (issue 19).
 * Thread CPU time, best of 5 rounds of 100,000. A figure, not a test.
 *
 *   bench_state_codec
 */
#include <stdio.h>
#include <time.h>

#include "event.h"
#include "features.h"

static double cpu_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Best ns per decode of blob[0..n) over rounds. */
static double time_decode(const unsigned char *blob, int n)
{
    struct feat_state back;
    struct err e = {0};
    double best = 1e9;

    for (int r = 0; r < 5; r++) {
        double t = cpu_s();
        for (int i = 0; i < 100000; i++)
            if (feat_state_decode(&back, blob, (size_t)n, &e))
                return -1;
        t = cpu_s() - t;
        best = t < best ? t : best;
    }
    return best * 1e4;
}

int main(void)
{
    static struct feat_state busy, once;
    unsigned char b_busy[FEAT_STATE_MAX], b_once[FEAT_STATE_MAX], out[FEAT_STATE_MAX];
    struct txn_event ev;
    double best_e = 1e9;
    int n_busy, n_once;

    feat_state_init(&busy);
    for (int i = 0; i < 30 * 36; i++) {
        event_txn_init(&ev);
        ev.event_time_ms = 1700000000000LL + (long long)i * 2400000LL;
        ev.amount = 100 + i % 50;
        feat_state_update(&busy, &ev, &busy);
        feat_state_mark(&busy, i % 4, i, &ev);
    }
    feat_state_init(&once);
    event_txn_init(&ev);
    ev.event_time_ms = 1700000000000LL;
    ev.amount = 5;
    feat_state_update(&once, &ev, &once);
    feat_state_mark(&once, 0, 0, &ev);
    n_busy = feat_state_encode(&busy, b_busy, sizeof(b_busy));
    n_once = feat_state_encode(&once, b_once, sizeof(b_once));
    if (n_busy < 0 || n_once < 0)
        return 1;
    for (int r = 0; r < 5; r++) {
        double t = cpu_s();
        for (int i = 0; i < 100000; i++)
            if (feat_state_encode(&busy, out, sizeof(out)) != n_busy)
                return 1;
        t = cpu_s() - t;
        best_e = t < best_e ? t : best_e;
    }
    printf("state blob: busy user %d bytes, decode %.0f ns, encode %.0f ns; user seen once %d "
           "bytes, decode %.0f ns (sizeof struct feat_state %zu)\n",
           n_busy, time_decode(b_busy, n_busy), best_e * 1e4, n_once, time_decode(b_once, n_once),
           sizeof(struct feat_state));
    return 0;
}
