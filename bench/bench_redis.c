/* Redis alone: the transactions worker's state traffic without the rest of
 * the worker, i.e. the ceiling Redis (and hiredis on this side) puts on it.
 * A figure, not a test.
 *
 *   bench_redis PORT N [BATCH] [USERS]
 *
 * Events i = 0..N-1 go to user (i * 7919) % USERS, as in bench/run.sh.
 * Per batch of BATCH events, exactly what the worker does through the state
 * module: one pipelined HMGET per distinct user (state_get_many), the
 * user's feature state advanced and encoded, then one pipelined EVALSHA per
 * user (state_put_many). Prints events/s and this process's CPU per event
 * (redis-server's own CPU is printed by the caller from /proc). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "features.h"
#include "pipeline.h"
#include "state.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

struct batch {
    char (*ids)[EV_ID_MAX];
    const char **ents;
    struct state_blob *blobs;
    struct state_put *puts;
    unsigned char (*enc)[FEAT_STATE_MAX];
    int *applied;
    struct state_base *bases; /* STATE_BASES=1: the users' cache's compare-and-set */
    struct entset set;
};

/* Distinct users of events [first, first + n), in first-seen order, with
 * the worker's own set (b->ids holds every event's user id). */
static size_t users_of(struct batch *b, long first, size_t n, int users)
{
    pipe_entset_clear(&b->set);
    for (size_t i = 0; i < n; i++) {
        snprintf(b->ids[i], EV_ID_MAX, "u%ld", ((first + (long)i) * 7919) % users);
        pipe_entset_add(&b->set, b->ids[i]);
    }
    return b->set.n;
}

static void ignore_partition(void *opaque, int32_t partition)
{
    (void)opaque;
    (void)partition;
}

static int one_batch(struct state *s, struct batch *b, long first, size_t n, int users,
                     struct err *e)
{
    size_t k = users_of(b, first, n, users);
    struct txn_event ev;
    struct feat_state st;

    for (size_t j = 0; j < k; j++)
        b->ents[j] = b->set.ids[j];
    /* As the worker's cache would: these bases are all read below, after
     * any partition reported moved, so nothing held is dropped. */
    (void)state_take_owner_changes(s, ignore_partition, NULL);
    if (state_get_many(s, k, b->ents, b->blobs, e))
        return e->code;
    for (size_t j = 0; j < k; j++) {
        if (!b->blobs[j].len || feat_state_decode(&st, b->blobs[j].data, b->blobs[j].len, e))
            feat_state_init(&st);
        event_txn_init(&ev);
        ev.event_time_ms = 1700000000000LL + (first + (long)j) * 1000;
        ev.amount = 500;
        feat_state_update(&st, &ev, &st);
        b->puts[j] = (struct state_put){.entity = b->ents[j], .data = b->enc[j],
                                        .partition = 0, .offset = first + (long)j};
        b->puts[j].len = (size_t)feat_state_encode(&st, b->enc[j], FEAT_STATE_MAX);
        b->bases[j] = (struct state_base){b->blobs[j].len ? b->blobs[j].partition : -1,
                                          b->blobs[j].len ? b->blobs[j].offset : -1,
                                          b->blobs[j].time_s};
    }
    if (state_put_many(s, k, b->puts, b->applied, e))
        return e->code;
    return ERR_OK;
}

int main(int argc, char **argv)
{
    struct err e = {0};
    struct batch b;
    long n;
    size_t bs;
    int users;
    double t0, c0, t, c;

    if (argc < 3) {
        fprintf(stderr, "usage: bench_redis PORT N [BATCH] [USERS]\n");
        return 2;
    }
    n = atol(argv[2]);
    bs = argc > 3 ? (size_t)atol(argv[3]) : 1000;
    users = argc > 4 ? atoi(argv[4]) : 20000;
    if (n <= 0 || bs == 0 || bs > 100000 || users <= 0) {
        fprintf(stderr, "bench_redis: N, BATCH (<= 100000) and USERS must be positive\n");
        return 2;
    }
    struct state_redis_opts o = {.port = atoi(argv[1]), .prefix = "bench:", .ttl_s = 3024000,
                                 .timeout_ms = 5000};
    /* STATE_LAYOUT=3 [STATE_BUCKETS=n]: an empty store becomes layout 3 */
    o.layout = getenv("STATE_LAYOUT") ? atoi(getenv("STATE_LAYOUT")) : 0;
    o.buckets = getenv("STATE_BUCKETS") ? atoi(getenv("STATE_BUCKETS")) : 0;
    /* STATE_FAST=0: layout 3 without its fast path (every put by the script) */
    if (getenv("STATE_FAST") && !atoi(getenv("STATE_FAST")))
        o.no_fast_path = 1;
    struct state *s = state_open_redis(&o, &e);
    b.ids = calloc(bs, sizeof(*b.ids));
    b.ents = calloc(bs, sizeof(*b.ents));
    b.blobs = calloc(bs, sizeof(*b.blobs));
    b.puts = calloc(bs, sizeof(*b.puts));
    b.enc = calloc(bs, sizeof(*b.enc));
    b.applied = calloc(bs, sizeof(*b.applied));
    b.bases = calloc(bs, sizeof(*b.bases));
    if (s && b.bases && getenv("STATE_BASES") && atoi(getenv("STATE_BASES"))) {
        state_set_put_bases(s, b.bases); /* every put checked against what was read */
        /* an owner, as the worker is (layout 3's fast path needs the epoch) */
        if (state_fence(s, 0, &e))
            fprintf(stderr, "bench_redis: %s\n", e.msg);
    }
    if (!s || pipe_entset_init(&b.set, bs) || !b.ids || !b.ents || !b.blobs || !b.puts || !b.enc || !b.applied) {
        fprintf(stderr, "bench_redis: %s\n", s ? "out of memory" : e.msg);
        return 1;
    }
    t0 = now_s();
    c0 = cpu_s();
    for (long i = 0; i < n; i += (long)bs) {
        size_t k = n - i < (long)bs ? (size_t)(n - i) : bs;
        if (one_batch(s, &b, i, k, users, &e)) {
            fprintf(stderr, "bench_redis: %s\n", e.msg);
            return 1;
        }
    }
    t = now_s() - t0;
    c = cpu_s() - c0;
    printf("redis alone: %ld events in batches of %zu: %.0f events/s, client CPU %.2f us/event\n",
           n, bs, (double)n / t, c / (double)n * 1e6);
    state_close(s);
    pipe_entset_free(&b.set);
    free(b.ids);
    free(b.ents);
    free(b.blobs);
    free(b.puts);
    free(b.enc);
    free(b.applied);
    free(b.bases);
    return 0;
}
