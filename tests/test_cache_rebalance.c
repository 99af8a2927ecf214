/* tests/test_cache_rebalance.c: a rebalance drops from the users' cache
 * only the users of the partitions that moved (issue 19). Before, any
 * assignment or revocation emptied the whole cache, so every member of a
 * group re-read all its users after each cooperative rebalance.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "event.h"
#include "features.h"
#include "kafka.h"
#include "stack.h"
#include "state.h"
#include "txn_stream.h"
#include "ucache.h"

static struct test_redis g_redis;

struct val {
    int64_t v;
};

static void test_ucache_drops_one_partition(void **st)
{
    struct ucache *c = ucache_open(64, sizeof(struct val));
    struct ucache_stats s;
    struct val v = {0};
    char key[16];
    int32_t p;
    int64_t o;

    (void)st;
    assert_non_null(c);
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof(key), "u%d", i);
        v.v = i;
        ucache_put(c, key, &v, i % 3, i);
    }
    assert_int_equal(ucache_drop_partition(c, 1), 10);
    assert_int_equal(ucache_drop_partition(c, 7), 0);
    for (int i = 0; i < 30; i++) {
        const struct val *got;
        snprintf(key, sizeof(key), "u%d", i);
        got = ucache_get(c, key, &p, &o);
        if (i % 3 == 1) {
            assert_null(got);
        } else {
            assert_non_null(got);
            assert_int_equal(got->v, i);
            assert_int_equal(p, i % 3);
        }
    }
    ucache_stats(c, &s);
    assert_int_equal(s.entries, 20);
    assert_int_equal(s.drops, 10);
    ucache_close(c);
}

static int32_t g_got[8];
static size_t g_n;

static void collect(void *opaque, int32_t partition)
{
    (void)opaque;
    if (g_n < 8)
        g_got[g_n++] = partition;
}

static void test_take_owner_changes(void **st)
{
    struct state *s = state_open_memory();
    struct err e = {0};

    (void)st;
    assert_non_null(s);
    assert_int_equal(state_fence(s, 5, &e), ERR_OK);
    state_release(s, 2);
    assert_int_equal(state_fence(s, 64, &e), ERR_OK);
    g_n = 0;
    assert_int_equal(state_take_owner_changes(s, collect, NULL), 0);
    assert_int_equal(g_n, 3);
    assert_int_equal(g_got[0], 2);
    assert_int_equal(g_got[1], 5);
    assert_int_equal(g_got[2], 64);
    g_n = 0;
    assert_int_equal(state_take_owner_changes(s, collect, NULL), 0);
    assert_int_equal(g_n, 0); /* taken */
    state_close(s);
}

/* ---- the transactions batch step ---- */

static void ack(struct wk *opaque, const struct kq_pos *pos)
{
    (void)opaque;
    (void)pos;
}

/* One batch: user "a" on partition 0, user "b" on partition 1. */
static void batch(struct txs *t, int64_t off)
{
    struct txn_event ev[2];
    struct kq_pos pos[2] = {{0, 0, off}, {0, 1, off}};
    unsigned char live[2] = {1, 1};
    float x[2 * FEAT_TXN_DIM];

    for (int i = 0; i < 2; i++) {
        event_txn_init(&ev[i]);
        snprintf(ev[i].event_id, sizeof(ev[i].event_id), "e%d-%lld", i, (long long)off);
        snprintf(ev[i].user_id, sizeof(ev[i].user_id), "%s", i ? "b" : "a");
        ev[i].event_time_ms = 1700000000000LL + off * 60000;
        ev[i].amount = 100;
        ev[i].income = 50;
        ev[i].expenses = 30;
        ev[i].term_months = 12;
        ev[i].age = 30;
        snprintf(ev[i].home, sizeof(ev[i].home), "rent");
    }
    txs_features(t, 2, ev, pos, live, x);
    txs_store(t);
}

/* Partition 1 revoked: user b (partition 1) is read again, user a
 * (partition 0, still owned) is served from memory. */
static void test_revoke_drops_only_that_partitions_users(void **st)
{
    struct state_redis_opts ro = {.host = "127.0.0.1", .port = g_redis.port, .prefix = "rb:",
                                  .timeout_ms = 5000, .nodes = ""};
    struct txs_opts o = {8, 64, 1000, ack, NULL, 100};
    struct ucache_stats cs0, cs1;
    struct err e = {0};
    struct state *s = state_open_redis(&ro, &e);
    struct txs *t;

    (void)st;
    assert_non_null(s);
    assert_int_equal(state_fence(s, 0, &e), ERR_OK);
    assert_int_equal(state_fence(s, 1, &e), ERR_OK);
    assert_int_equal(txs_open(&t, s, &o, &e), ERR_OK);
    batch(t, 1);
    batch(t, 2);
    txs_cache_stats(t, &cs0);
    assert_int_equal(cs0.hits, 2); /* the second batch: both from memory */
    state_release(s, 1);
    batch(t, 3);
    txs_cache_stats(t, &cs1);
    assert_int_equal(cs1.hits - cs0.hits, 1);     /* a */
    assert_int_equal(cs1.misses - cs0.misses, 1); /* b, read again */
    assert_int_equal(txs_queued(t), 0);
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
        cmocka_unit_test(test_ucache_drops_one_partition),
        cmocka_unit_test(test_take_owner_changes),
        cmocka_unit_test(test_revoke_drops_only_that_partitions_users),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
