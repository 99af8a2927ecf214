/* tests/test_state_cache.c: partition-owned state (issue 19): the bounded
 * users' cache (common/streams/ucache.h), the compare-and-set of writes
 * (state_set_put_bases) on every backend, the transactions batch step
 * with the cache on when a user's events arrive on two partitions owned by
 * two workers (every event applied exactly once), and what the cache costs
 * when users are new (their encoded state, not the decoded struct).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "event.h"
#include "features.h"
#include "kafka.h"
#include "rcluster.h"
#include "stack.h"
#include "state.h"
#include "txn.h"
#include "txn_stream.h"
#include "ucache.h"

static struct test_redis g_redis;

struct val {
    int64_t v;
    char pad[40];
};

/* Without eviction every key put and not dropped is found with its last
 * value (the backward-shift deletion keeps every probe run intact); with
 * eviction a hit still returns the last value and the size stays bounded. */
static void test_ucache_against_a_reference(void **st)
{
    enum { KEYS = 300 };
    int64_t ref[KEYS];
    char key[32];
    struct ucache_stats s;
    struct val v = {0};
    int32_t p;
    int64_t o;
    unsigned seed = 7;

    (void)st;
    for (int round = 0; round < 2; round++) {
        size_t cap = round == 0 ? KEYS : 64; /* round 1 evicts */
        struct ucache *c = ucache_open(cap, sizeof(struct val));
        assert_non_null(c);
        for (int k = 0; k < KEYS; k++)
            ref[k] = -1;
        for (int i = 0; i < 20000; i++) {
            int k = (int)((seed = seed * 1103515245u + 12345u) >> 16) % KEYS, op = i % 5;
            const struct val *got;
            snprintf(key, sizeof(key), "user-%d", k);
            if (op < 2) {
                v.v = i;
                ucache_put(c, key, &v, k % 7, i);
                ref[k] = i;
            } else if (op == 2) {
                ucache_drop(c, key);
                ref[k] = -1;
            } else {
                got = ucache_get(c, key, &p, &o);
                if (ref[k] < 0)
                    assert_null(got);
                else if (got || round == 0) {
                    assert_non_null(got);
                    assert_int_equal(got->v, ref[k]);
                    assert_int_equal(o, ref[k]);
                    assert_int_equal(p, k % 7);
                }
            }
        }
        ucache_stats(c, &s);
        assert_true(s.entries <= cap);
        if (round == 0)
            assert_int_equal(s.evictions, 0);
        else
            assert_true(s.evictions > 0);
        ucache_clear(c);
        snprintf(key, sizeof(key), "user-%d", 1);
        assert_null(ucache_get(c, key, &p, &o));
        ucache_close(c);
    }
    assert_null(ucache_open(0, 8)); /* 0 entries: no cache */
}

/* ucache_prefetch is a hint: a cache that gets every stage of it for the
 * key at hand and for another one before each operation answers, evicts and
 * counts exactly as its twin that gets none (values of several sizes, so
 * entries without a chunk and in several classes are prefetched too). */
static void test_ucache_prefetch_changes_nothing(void **st)
{
    enum { KEYS = 300 };
    static unsigned char val[200];
    char key[32], other[32];
    struct ucache_stats s1, s2;
    unsigned seed = 11;

    (void)st;
    ucache_prefetch(NULL, "user-1", 0); /* NULL-safe */
    for (size_t cap = 64; cap <= KEYS; cap += KEYS - 64) {
        struct ucache *c1 = ucache_open(cap, sizeof(val)), *c2 = ucache_open(cap, sizeof(val));
        assert_true(c1 && c2);
        for (int i = 0; i < 20000; i++) {
            int k = (int)((seed = seed * 1103515245u + 12345u) >> 16) % KEYS, op = i % 5;
            size_t len = 1 + (size_t)(seed >> 8) % sizeof(val), l1 = 0, l2 = 0;
            int32_t p1 = 0, p2 = 0;
            int64_t o1 = 0, o2 = 0;
            snprintf(key, sizeof(key), "user-%d", k);
            snprintf(other, sizeof(other), "user-%d", (k * 7 + 3) % KEYS);
            for (int stage = 0; stage < 3; stage++) {
                ucache_prefetch(c1, key, stage);
                ucache_prefetch(c1, other, stage);
            }
            memset(val, i & 0xff, len);
            if (op < 2) {
                ucache_putv(c1, key, val, len, k % 7, i, 0);
                ucache_putv(c2, key, val, len, k % 7, i, 0);
            } else if (op == 2) {
                ucache_drop(c1, key);
                ucache_drop(c2, key);
            } else {
                const unsigned char *g1 = ucache_getv(c1, key, &l1, &p1, &o1, NULL);
                const unsigned char *g2 = ucache_getv(c2, key, &l2, &p2, &o2, NULL);
                assert_true(!g1 == !g2);
                if (g1) {
                    assert_true(l1 == l2 && p1 == p2 && o1 == o2);
                    assert_memory_equal(g1, g2, l1);
                }
            }
        }
        ucache_stats(c1, &s1);
        ucache_stats(c2, &s2);
        assert_memory_equal(&s1, &s2, sizeof(s1));
        if (cap == 64)
            assert_true(s1.evictions > 0);
        ucache_close(c1);
        ucache_close(c2);
    }
}

/* The compare-and-set of a write: refused (STATE_PUT_CONFLICT) unless the
 * store holds the base position; "nothing stored" is a base too. */
static void check_cas(struct state *s, const char *ent)
{
    struct state_base b[1];
    struct state_put put = {ent, (const unsigned char *)"x", 1, 0, 5};
    struct err e = {0};
    int applied[1];

    assert_int_equal(state_put_many(s, 1, &put, applied, &e), ERR_OK); /* no bases: written */
    assert_int_equal(applied[0], STATE_PUT_WRITTEN);
    state_set_put_bases(s, b);
    b[0] = (struct state_base){0, 5, 0};
    put.offset = 6;
    assert_int_equal(state_put_many(s, 1, &put, applied, &e), ERR_OK);
    assert_int_equal(applied[0], STATE_PUT_WRITTEN);
    put.offset = 7; /* base (0, 5), the store holds (0, 6): someone wrote */
    assert_int_equal(state_put_many(s, 1, &put, applied, &e), ERR_OK);
    assert_int_equal(applied[0], STATE_PUT_CONFLICT);
    b[0] = (struct state_base){-1, -1, 0}; /* "nothing stored", but there is */
    assert_int_equal(state_put_many(s, 1, &put, applied, &e), ERR_OK);
    assert_int_equal(applied[0], STATE_PUT_CONFLICT);
    put.offset = 6; /* the idempotence check comes first: skipped */
    assert_int_equal(state_put_many(s, 1, &put, applied, &e), ERR_OK);
    assert_int_equal(applied[0], STATE_PUT_SKIPPED);
    put.entity = "fresh-user"; /* nothing stored, base "nothing": written */
    assert_int_equal(state_put_many(s, 1, &put, applied, &e), ERR_OK);
    assert_int_equal(applied[0], STATE_PUT_WRITTEN);
    state_set_put_bases(s, NULL);
}

static void test_cas_memory(void **st)
{
    struct state *s = state_open_memory();

    (void)st;
    check_cas(s, "u1");
    state_close(s);
}

static int g_layout; /* of the stores open_redis creates (0: the library's, 2) */

static struct state *open_redis(int port, const char *prefix, const char *nodes)
{
    struct state_redis_opts o = {.host = "127.0.0.1", .port = port, .prefix = prefix,
                                 .timeout_ms = 5000, .nodes = nodes, .layout = g_layout};
    struct err e = {0};
    struct state *s = state_open_redis(&o, &e);

    if (!s)
        fprintf(stderr, "state_open_redis: %s\n", e.msg);
    assert_non_null(s);
    return s;
}

static void test_cas_redis(void **st)
{
    struct state *s = open_redis(g_redis.port, "cas:", "");

    (void)st;
    check_cas(s, "u1");
    state_close(s);
}

/* The same on a Redis Cluster (its own argument building, per slot). */
static void test_cas_redis_cluster(void **st)
{
    struct test_rcluster c;
    struct state *s;

    (void)st;
    assert_int_equal(test_rcluster_start(&c), 0);
    s = open_redis(0, "cas:", c.nodes);
    check_cas(s, "u1");
    state_close(s);
    test_rcluster_stop(&c);
}

/* ---- two owners, one user on both of their partitions ---- */

static int g_acks[2][64];

static void ack(struct wk *opaque, const struct kq_pos *pos)
{
    int *acks = (int *)(void *)opaque;

    acks[pos->offset]++;
}

static void make_event(struct txn_event *ev, int i)
{
    event_txn_init(ev);
    snprintf(ev->event_id, sizeof(ev->event_id), "e%d", i);
    snprintf(ev->user_id, sizeof(ev->user_id), "shared-user");
    ev->event_time_ms = 1700000000000LL + (int64_t)i * 60000;
    ev->amount = 100 + i;
    ev->income = 50;
    ev->expenses = 30;
    ev->term_months = 12;
    ev->age = 30;
    snprintf(ev->home, sizeof(ev->home), "rent");
}

/* One batch of one event of partition p (offset off) through owner t. */
static void one_batch(struct txs *t, int p, int64_t off, int i)
{
    struct txn_event ev;
    struct kq_pos pos = {0, p, off};
    unsigned char live = 1;
    float x[FEAT_TXN_DIM];

    make_event(&ev, i);
    txs_features(t, 1, &ev, &pos, &live, x);
    txs_store(t);
}

/* How many amounts the stored state of id has applied. */
static uint64_t amounts_of(struct state *s, const char *id)
{
    struct state_blob blob;
    struct feat_state fs;
    struct err e = {0};
    int32_t part;
    int64_t off;

    assert_int_equal(state_get_many(s, 1, &id, &blob, &e), ERR_OK);
    assert_int_equal(txn_state_load(&fs, &part, &off, blob.data, blob.len, blob.partition,
                                    blob.offset, &e),
                     ERR_OK);
    return feat_state_count(&fs, "amount");
}

/* Owners of partitions 0 and 1 (fenced) on one store under prefix. */
static void open_two_owners(const char *prefix, struct state *s[2], struct txs *t[2])
{
    struct err e = {0};

    for (int w = 0; w < 2; w++) {
        struct txs_opts o = {8, 64, 0, ack, (struct wk *)(void *)g_acks[w], 1000};
        s[w] = open_redis(g_redis.port, prefix, "");
        assert_int_equal(state_fence(s[w], w, &e), ERR_OK);
        assert_int_equal(txs_open(&t[w], s[w], &o, &e), ERR_OK);
    }
}

/* Worker A owns partition 0, worker B partition 1; the user's events
 * alternate between them. With the cache each keeps the user's state; the
 * write's compare-and-set sees the other's writes, so the user ends with
 * every event applied once (without it, each owner overwrote the other's
 * updates with its cached state: about half the events lost). */
static void two_owners_lose_nothing(const char *prefix)
{
    struct state *s[2];
    struct txs *t[2];
    const char *id = "shared-user";
    enum { ROUNDS = 20 };

    memset(g_acks, 0, sizeof(g_acks));
    open_two_owners(prefix, s, t);
    for (int i = 0; i < ROUNDS; i++) {
        int w = i % 2;
        one_batch(t[w], w, i / 2, i);
        /* the owner of the other partition drains what conflicted */
        for (int k = 0; k < 2; k++)
            txs_tick(t[k], INT64_MAX / 2);
    }
    for (int k = 0; k < 2; k++)
        txs_tick(t[k], INT64_MAX / 2);
    for (int w = 0; w < 2; w++) {
        assert_int_equal(txs_queued(t[w]), 0);
        for (int off_i = 0; off_i < ROUNDS / 2; off_i++)
            assert_int_equal(g_acks[w][off_i], 1);
    }
    assert_int_equal(amounts_of(s[0], id), ROUNDS);
    for (int w = 0; w < 2; w++) {
        txs_close(t[w]);
        state_close(s[w]);
    }
}

static void test_two_owners_lose_nothing(void **st)
{
    (void)st;
    g_layout = 0;
    two_owners_lose_nothing("two:");
}

/* The same in layout 3, whose owners write their cached users without the
 * script (state_fast.c) unless the steal counter says the other wrote. */
static void test_two_owners_lose_nothing_layout3(void **st)
{
    (void)st;
    g_layout = 3;
    two_owners_lose_nothing("two3:");
    g_layout = 0;
}

/* One batch of two events (user, partition, offset, event number each). */
static void two_events(struct txs *t, const char *u0, int p0, int64_t o0, int i0, const char *u1,
                       int p1, int64_t o1, int i1)
{
    struct txn_event ev[2];
    struct kq_pos pos[2] = {{0, p0, o0}, {0, p1, o1}};
    unsigned char live[2] = {1, 1};
    float x[2 * FEAT_TXN_DIM];

    make_event(&ev[0], i0);
    snprintf(ev[0].user_id, sizeof(ev[0].user_id), "%s", u0);
    make_event(&ev[1], i1);
    snprintf(ev[1].user_id, sizeof(ev[1].user_id), "%s", u1);
    txs_features(t, 2, ev, pos, live, x);
    txs_store(t);
}

/* Owner A holds the shared user (partition 0); B writes it from partition
 * 1. A's next batch re-delivers the user's event (so it is not written)
 * beside a new user, whose write tells A that partition 0's users were
 * written from elsewhere: A must then not put the shared user back in its
 * cache from the state it read before (it would be written from that stale
 * state next time, without the script: B's event lost). */
static void test_stale_user_is_not_put_back(void **st)
{
    struct state *s[2];
    struct txs *t[2];
    const char *id = "shared-user";

    (void)st;
    memset(g_acks, 0, sizeof(g_acks));
    g_layout = 3;
    open_two_owners("stale3:", s, t);
    g_layout = 0;
    one_batch(t[0], 0, 0, 0);
    one_batch(t[0], 0, 1, 1);
    one_batch(t[1], 1, 0, 2);                                   /* B writes the user */
    two_events(t[0], id, 0, 1, 1, "other-user", 0, 2, 3);      /* a re-delivery, a new user */
    one_batch(t[0], 0, 3, 4);
    for (int k = 0; k < 2; k++)
        txs_tick(t[k], INT64_MAX / 2);
    assert_int_equal(amounts_of(s[0], id), 4); /* events 0, 1, 2 and 4 */
    for (int w = 0; w < 2; w++) {
        txs_close(t[w]);
        state_close(s[w]);
    }
}

/* One owner, its users seen again batch after batch: after the first
 * write (the script, which tells the counters) they are written without
 * it, and every event is applied once. */
static void test_one_owner_takes_the_fast_path(void **st)
{
    struct state *s;
    struct txs *t;
    const char *id = "shared-user";
    struct err e = {0};
    enum { ROUNDS = 12 };
    struct txs_opts o = {8, 64, 0, ack, (struct wk *)(void *)g_acks[0], 1000};

    (void)st;
    memset(g_acks, 0, sizeof(g_acks));
    g_layout = 3;
    s = open_redis(g_redis.port, "one3:", "");
    g_layout = 0;
    assert_int_equal(state_fence(s, 0, &e), ERR_OK);
    assert_int_equal(txs_open(&t, s, &o, &e), ERR_OK);
    for (int i = 0; i < ROUNDS; i++)
        one_batch(t, 0, i, i);
    for (int i = 0; i < ROUNDS; i++)
        assert_int_equal(g_acks[0][i], 1);
    assert_true(state_fast_puts(s) >= ROUNDS - 3);
    assert_int_equal(amounts_of(s, id), ROUNDS);
    txs_close(t);
    state_close(s);
}

/* ---- users seen once: what filling the cache costs ---- */

static size_t g_fill_acks;

static void count_ack(struct wk *opaque, const struct kq_pos *pos)
{
    (void)opaque;
    (void)pos;
    g_fill_acks++;
}

static long rss_kb(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    assert_non_null(f);
    assert_int_equal(fscanf(f, "%ld %ld", &pages, &rss), 2);
    fclose(f);
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Batches of new users (round 0), then the same users again (round 1). */
static void fill_round(struct txs *t, int round, int users, int batch)
{
    static struct txn_event ev[500];
    static struct kq_pos pos[500];
    static unsigned char live[500];
    static float x[500 * FEAT_TXN_DIM];

    assert_true(batch <= 500);
    for (int b = 0; b < users / batch; b++) {
        for (int i = 0; i < batch; i++) {
            int k = b * batch + i;
            event_txn_init(&ev[i]);
            snprintf(ev[i].event_id, sizeof(ev[i].event_id), "f%d-%d", round, k);
            snprintf(ev[i].user_id, sizeof(ev[i].user_id), "fill-u%d", k);
            ev[i].event_time_ms = 1700000000000LL + (int64_t)round * 60000;
            ev[i].amount = 100 + k % 50;
            pos[i] = (struct kq_pos){0, 0, (int64_t)round * users + k};
            live[i] = 1;
        }
        assert_int_equal(txs_features(t, (size_t)batch, ev, pos, live, x), 0);
        txs_store(t);
    }
}

/* Every event is a user the cache has not seen (limits.sh's 20,000 users
 * seen once): before, each one's decoded state (struct feat_state, 2.7 kB)
 * was copied into the cache, 13.5 MB of fresh memory for 5,000 users, and
 * filling cost the worker more than the cache ever saved it. Entries now
 * hold the encoded state the store acknowledged (~90 bytes here): the
 * process grows by a few hundred kB, and a user seen again is served from
 * the cache with its state exact. */
static void test_cache_fill_is_small(void **st)
{
    enum { USERS = 5000, BATCH = 500 };
    struct txs_opts o = {BATCH, BATCH, 1000, count_ack, NULL, USERS};
    struct ucache_stats cs;
    struct state *s = open_redis(g_redis.port, "fill:", "");
    struct txs *t;
    struct err e = {0};
    const char *id = "fill-u4321";
    long rss0, grown;

    (void)st;
    g_fill_acks = 0;
    assert_int_equal(state_fence(s, 0, &e), ERR_OK);
    assert_int_equal(txs_open(&t, s, &o, &e), ERR_OK);
    /* One batch first: the batch's own buffers are touched by then. */
    fill_round(t, 0, BATCH, BATCH);
    rss0 = rss_kb();
    fill_round(t, 0, USERS, BATCH); /* its first batch again: redeliveries, from memory */
    grown = rss_kb() - rss0;
    txs_cache_stats(t, &cs);
    assert_int_equal(cs.entries, USERS);
    assert_true(cs.bytes <= (size_t)USERS * 256);
    fprintf(stderr, "cache of %d new users: process grew %ld kB, values %zu kB\n", USERS, grown,
            cs.bytes / 1024);
    assert_true(grown < 4096); /* 4,500 decoded states: 11,900 kB */
    fill_round(t, 1, USERS, BATCH);
    txs_cache_stats(t, &cs);
    assert_int_equal(cs.hits, BATCH + USERS); /* round 1: every user from memory */
    assert_int_equal(g_fill_acks, BATCH + 2 * USERS);
    assert_int_equal(amounts_of(s, id), 2);
    txs_close(t);
    state_close(s);
}

static int group_setup(void **st)
{
    (void)st;
    return test_redis_start(&g_redis);
}

static int group_teardown(void **st)
{
    (void)st;
    test_redis_stop(&g_redis);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ucache_against_a_reference),
        cmocka_unit_test(test_ucache_prefetch_changes_nothing),
        cmocka_unit_test(test_cas_memory),
        cmocka_unit_test(test_cas_redis),
        cmocka_unit_test(test_two_owners_lose_nothing),
        cmocka_unit_test(test_two_owners_lose_nothing_layout3),
        cmocka_unit_test(test_one_owner_takes_the_fast_path),
        cmocka_unit_test(test_stale_user_is_not_put_back),
        cmocka_unit_test(test_cache_fill_is_small),
        cmocka_unit_test(test_cas_redis_cluster),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
