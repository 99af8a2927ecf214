/* tests/test_state_bucket.c: layout 3 of the Redis state, users as fields
 * of hash buckets (issue 19, common/state/state_bucket.c). An empty store
 * opened with state.layout=3 keeps its users in <prefix>ub:{<b>}; a
 * re-delivered batch is applied once (the applied watermark, then the
 * per-user rule); a zombie's batch is refused by the new owner's epoch; a
 * put's base is checked (compare-and-set); a user older than the ttl reads
 * as absent and the sweep deletes exactly those; stores written in layouts
 * 1 and 2 stay in their layout; a field that is not a state value is
 * refused, never read as nothing stored.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "stack.h"
#include "rstate.h"
#include "state.h"

static struct test_redis g_redis;
static redisContext *g_c;

#define q(...) test_rstate_q(g_c, __VA_ARGS__)
#define put1 test_rstate_put1
#define assert_blob test_rstate_assert_blob

#define open3(prefix, ttl_s, layout, buckets, e)                                                   \
    test_rstate_open(g_redis.port, prefix, ttl_s, layout, buckets, e)

static void assert_absent(struct state *s, const char *ent)
{
    struct state_blob b;
    struct err e = {0};

    assert_int_equal(state_get_many(s, 1, &ent, &b, &e), ERR_OK);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.partition, -1);
}

static void test_empty_store_becomes_layout_3(void **st)
{
    struct err e = {0};
    struct state *s = open3("b3:", 60, 3, 1, &e);
    char want[64];

    (void)st;
    assert_non_null(s);
    assert_string_equal(q("GET b3:layout"), "3:1");
    assert_int_equal(put1(s, "u", "state|with:separators@", 4, 99, &e), 1);
    assert_string_equal(q("TYPE b3:ub:{0}"), "hash");
    assert_string_equal(q("EXISTS b3:u:{u}"), "0"); /* no key per user */
    assert_string_equal(q("TTL b3:ub:{0}"), "-1");  /* no expiry per user either */
    snprintf(want, sizeof(want), "4:99@%lld|", (long long)time(NULL));
    assert_memory_equal(q("HGET b3:ub:{0} u"), want, strlen(want) - 3); /* the second may tick */
    assert_non_null(strstr(q("HGET b3:ub:{0} u"), "|state|with:separators@"));
    assert_blob(s, "u", "state|with:separators@", 4, 99);
    assert_int_equal(put1(s, "u", "x", 4, 99, &e), 0);
    assert_int_equal(put1(s, "u", "x", 4, 98, &e), 0);
    assert_int_equal(put1(s, "u", "y", 5, 1, &e), 1); /* another partition */
    assert_blob(s, "u", "y", 5, 1);
    state_close(s);
    /* reopened with another setting: the store keeps its layout and buckets */
    s = open3("b3:", 60, 2, 16, &e);
    assert_non_null(s);
    assert_string_equal(q("GET b3:layout"), "3:1");
    assert_blob(s, "u", "y", 5, 1);
    state_close(s);
}

#define NB 40

/* A batch applied, then delivered again after a crash (the same puts), and
 * then again mixed with newer events: each put is applied once. */
static void test_redelivered_batch_applied_once(void **st)
{
    struct err e = {0};
    struct state *s = open3("rd:", 0, 3, 8, &e);
    char ents[NB][16], blobs[NB][16], want[16];
    struct state_put puts[NB];
    int applied[NB];

    (void)st;
    assert_non_null(s);
    for (int i = 0; i < NB; i++) {
        snprintf(ents[i], sizeof(ents[i]), "user%d", i);
        snprintf(blobs[i], sizeof(blobs[i]), "v1-%d", i);
        puts[i] = (struct state_put){ents[i], (const unsigned char *)blobs[i], strlen(blobs[i]),
                                     0, 100 + i};
    }
    assert_int_equal(state_put_many(s, NB, puts, applied, &e), ERR_OK);
    for (int i = 0; i < NB; i++)
        assert_int_equal(applied[i], STATE_PUT_WRITTEN);
    assert_string_equal(q("GET rd:applied:{0}"), "139");
    /* re-delivered: the same batch with other blobs (a re-scoring) */
    for (int i = 0; i < NB; i++)
        snprintf(blobs[i], sizeof(blobs[i]), "v2-%d", i);
    assert_int_equal(state_put_many(s, NB, puts, applied, &e), ERR_OK);
    for (int i = 0; i < NB; i++) {
        assert_int_equal(applied[i], STATE_PUT_SKIPPED);
        snprintf(want, sizeof(want), "v1-%d", i);
        assert_blob(s, ents[i], want, 0, 100 + i);
    }
    /* the second half newer: only those are written */
    for (int i = NB / 2; i < NB; i++)
        puts[i].offset += 1000;
    assert_int_equal(state_put_many(s, NB, puts, applied, &e), ERR_OK);
    for (int i = 0; i < NB; i++)
        assert_int_equal(applied[i], i < NB / 2 ? STATE_PUT_SKIPPED : STATE_PUT_WRITTEN);
    assert_blob(s, ents[0], "v1-0", 0, 100);
    assert_blob(s, ents[NB - 1], "v2-39", 0, 1139);
    assert_string_equal(q("GET rd:applied:{0}"), "1139");
    /* an offset below the watermark for a user never written: written (the
     * per-user rule, not the watermark, decides when they disagree) */
    assert_int_equal(put1(s, "late", "L", 0, 5, &e), STATE_PUT_WRITTEN);
    assert_blob(s, "late", "L", 0, 5);
    assert_string_equal(q("GET rd:applied:{0}"), "1139");
    state_close(s);
}

/* A worker stalled past a rebalance (a zombie) wakes up and writes its
 * batch: the new owner's epoch refuses every put of it. */
static void test_zombie_is_refused(void **st)
{
    struct err e = {0};
    struct state *old = open3("zb:", 0, 3, 4, &e), *cur = open3("zb:", 0, 3, 4, &e);
    struct state_put puts[3] = {{"a", (const unsigned char *)"old-a", 5, 2, 10},
                                {"b", (const unsigned char *)"old-b", 5, 2, 11},
                                {"c", (const unsigned char *)"old-c", 5, 3, 1}};
    int applied[3];

    (void)st;
    assert_non_null(old);
    assert_non_null(cur);
    assert_int_equal(state_fence(old, 2, &e), ERR_OK);
    assert_int_equal(put1(old, "a", "first", 2, 5, &e), 1);
    assert_int_equal(state_fence(cur, 2, &e), ERR_OK); /* the rebalance */
    assert_int_equal(put1(cur, "a", "new-a", 2, 9, &e), 1);
    assert_int_equal(state_put_many(old, 3, puts, applied, &e), ERR_OK);
    assert_int_equal(applied[0], STATE_PUT_SKIPPED);
    assert_int_equal(applied[1], STATE_PUT_SKIPPED);
    assert_int_equal(applied[2], STATE_PUT_WRITTEN); /* partition 3 was never fenced */
    assert_int_equal(state_fenced(old), 2);
    assert_blob(cur, "a", "new-a", 2, 9);
    assert_absent(cur, "b");
    state_close(old);
    state_close(cur);
}

/* state_set_put_bases on layout 3: the stored position must be the base. */
static void test_compare_and_set(void **st)
{
    struct err e = {0};
    struct state *s = open3("cas:", 0, 3, 2, &e);
    struct state_put puts[3] = {{"x", (const unsigned char *)"x2", 2, 0, 20},
                                {"y", (const unsigned char *)"y2", 2, 0, 21},
                                {"z", (const unsigned char *)"z1", 2, 0, 22}};
    struct state_base bases[3] = {{0, 10, 0}, {0, 10, 0}, {-1, -1, 0}};
    int applied[3];

    (void)st;
    assert_non_null(s);
    assert_int_equal(put1(s, "x", "x1", 0, 10, &e), 1);
    assert_int_equal(put1(s, "y", "y1", 0, 11, &e), 1);
    state_set_put_bases(s, bases);
    assert_int_equal(state_put_many(s, 3, puts, applied, &e), ERR_OK);
    assert_int_equal(applied[0], STATE_PUT_WRITTEN);
    assert_int_equal(applied[1], STATE_PUT_CONFLICT); /* y holds 0:11, not 0:10 */
    assert_int_equal(applied[2], STATE_PUT_WRITTEN);  /* nothing stored, as expected */
    /* z exists now: a put expecting nothing conflicts */
    puts[2].offset = 30;
    puts[0].offset = 31;
    bases[0] = (struct state_base){0, 20, 0};
    assert_int_equal(state_put_many(s, 3, puts, applied, &e), ERR_OK);
    assert_int_equal(applied[0], STATE_PUT_WRITTEN);
    assert_int_equal(applied[2], STATE_PUT_CONFLICT);
    state_set_put_bases(s, NULL);
    assert_blob(s, "x", "x2", 0, 31);
    assert_blob(s, "y", "y1", 0, 11);
    assert_blob(s, "z", "z1", 0, 22);
    state_close(s);
}

/* Users written more than ttl_s ago read as absent at once; the sweep
 * deletes exactly those fields, and a put expecting nothing is written over
 * one not yet swept. */
static void test_sweep_expires_exactly_the_stale_users(void **st)
{
    struct err e = {0};
    struct state *s = open3("sw:", 60, 3, 1, &e);
    char ent[16], val[64];
    struct state_base none = {-1, -1, 0};
    size_t deleted = 0;
    long long old = (long long)time(NULL) - 61, young = (long long)time(NULL) - 30;

    (void)st;
    assert_non_null(s);
    assert_int_equal(put1(s, "fresh", "F", 0, 100, &e), 1);
    for (int i = 0; i < 30; i++) { /* 10 stale, 20 young */
        snprintf(ent, sizeof(ent), "%s%d", i < 10 ? "stale" : "young", i);
        snprintf(val, sizeof(val), "0:%d@%lld|blob%d", i, i < 10 ? old : young, i);
        q("HSET sw:ub:{0} %s %s", ent, val);
    }
    assert_absent(s, "stale3"); /* expired: absent before any sweep */
    assert_blob(s, "young12", "blob12", 0, 12);
    assert_string_equal(q("HLEN sw:ub:{0}"), "31");
    /* a put expecting nothing stored, over a stale field: written */
    state_set_put_bases(s, &none);
    assert_int_equal(put1(s, "stale0", "again", 1, 1, &e), 1);
    state_set_put_bases(s, NULL);
    /* (a paced step may have run with that put when a second went by) */
    assert_int_equal(state_sweep(s, 1, &deleted, &e), ERR_OK);
    assert_true(deleted <= 9);
    assert_string_equal(q("HLEN sw:ub:{0}"), "22");
    for (int i = 0; i < 30; i++) {
        snprintf(ent, sizeof(ent), "%s%d", i < 10 ? "stale" : "young", i);
        assert_string_equal(q("HEXISTS sw:ub:{0} %s", ent), i >= 10 || i == 0 ? "1" : "0");
    }
    assert_blob(s, "stale0", "again", 1, 1);
    assert_blob(s, "fresh", "F", 0, 100);
    assert_int_equal(state_sweep(s, 1, &deleted, &e), ERR_OK);
    assert_int_equal(deleted, 0);
    state_close(s);
    /* without a ttl nothing expires */
    s = open3("sw:", 0, 3, 1, &e);
    assert_non_null(s);
    q("HSET sw:ub:{0} ancient 0:1@1|a");
    assert_blob(s, "ancient", "a", 0, 1);
    assert_int_equal(state_sweep(s, 1, &deleted, &e), ERR_OK);
    assert_int_equal(deleted, 0);
    state_close(s);
}

/* A cached base pointing at a value older than the ttl is a conflict, as a
 * key expired by its TTL was: the writer starts the user afresh rather than
 * writing on from state the store has already expired. */
static void test_expired_base_conflicts(void **st)
{
    struct err e = {0};
    struct state *s = open3("xb:", 60, 3, 1, &e);
    struct state_base base = {0, 5, 0};
    struct state_put put = {"u", (const unsigned char *)"u2", 2, 0, 6};
    int applied = -1;

    (void)st;
    assert_non_null(s);
    q("HSET xb:ub:{0} u 0:5@%lld|u1", (long long)time(NULL) - 61);
    q("HSET xb:ub:{0} v 0:5@%lld|v1", (long long)time(NULL) - 30);
    state_set_put_bases(s, &base);
    assert_int_equal(state_put_many(s, 1, &put, &applied, &e), ERR_OK);
    assert_int_equal(applied, STATE_PUT_CONFLICT);
    put.entity = "v"; /* the same base, not expired: written */
    assert_int_equal(state_put_many(s, 1, &put, &applied, &e), ERR_OK);
    assert_int_equal(applied, STATE_PUT_WRITTEN);
    state_set_put_bases(s, NULL);
    assert_absent(s, "u");
    assert_blob(s, "v", "u2", 0, 6);
    state_close(s);
}

/* Stores written before keep their layout under state.layout=3. */
static void test_older_layouts_are_still_read(void **st)
{
    struct err e = {0};
    struct state *s;

    (void)st;
    q("SET o1:marker 1700000000000");
    q("HSET o1:u:{a} s blobA p 3 o 17");
    s = open3("o1:", 60, 3, 8, &e);
    assert_non_null(s);
    assert_string_equal(q("GET o1:layout"), "1");
    assert_blob(s, "a", "blobA", 3, 17);
    assert_int_equal(put1(s, "a", "B", 3, 18, &e), 1);
    assert_string_equal(q("HGET o1:u:{a} s"), "B");
    state_close(s);
    s = open3("o2:", 60, 0, 0, &e); /* the default: layout 2 */
    assert_non_null(s);
    assert_int_equal(put1(s, "a", "two", 1, 1, &e), 1);
    state_close(s);
    s = open3("o2:", 60, 3, 8, &e);
    assert_non_null(s);
    assert_string_equal(q("GET o2:layout"), "2");
    assert_blob(s, "a", "two", 1, 1);
    assert_int_equal(put1(s, "a", "three", 1, 2, &e), 1);
    assert_string_equal(q("TYPE o2:u:{a}"), "string");
    state_close(s);
}

/* A field that is not a state value, a bucket of another type, a layout
 * value with a bad bucket count: refused with their names. */
static void test_foreign_values_are_refused(void **st)
{
    struct err e = {0};
    struct state *s = open3("fv:", 0, 3, 1, &e);
    const char *ents[2] = {"junk", "ok"};
    struct state_blob b[2];
    struct state_put puts[2] = {{"junk", (const unsigned char *)"J", 1, 0, 7},
                                {"ok", (const unsigned char *)"O", 1, 0, 7}};
    int applied[2] = {-1, -1};

    (void)st;
    assert_non_null(s);
    assert_int_equal(put1(s, "ok", "o", 0, 1, &e), 1);
    q("HSET fv:ub:{0} junk 12345");
    assert_int_equal(state_get_many(s, 2, ents, b, &e), ERR_IO);
    assert_non_null(strstr(e.msg, "junk"));
    assert_non_null(strstr(e.msg, "WRONGTYPE"));
    assert_int_equal(b[1].len, 1); /* the other user is served */
    /* a re-delivery (offset 7 <= the watermark is not the case here: 1 < 7,
     * so the put is fresh) overwrites nothing it cannot read when bases are
     * checked */
    struct state_base bases[2] = {{-1, -1, 0}, {0, 1, 0}};
    state_set_put_bases(s, bases);
    assert_int_not_equal(state_put_many(s, 2, puts, applied, &e), ERR_OK);
    assert_non_null(strstr(e.msg, "junk"));
    assert_int_equal(applied[1], STATE_PUT_WRITTEN);
    state_set_put_bases(s, NULL);
    assert_string_equal(q("HGET fv:ub:{0} junk"), "12345"); /* untouched */
    state_close(s);
    q("SET bad:layout 3:0");
    assert_null(open3("bad:", 0, 3, 1, &e));
    assert_int_equal(e.code, ERR_CONFIG);
    q("SET bad2:layout 3:x");
    assert_null(open3("bad2:", 0, 3, 1, &e));
    assert_int_equal(e.code, ERR_CONFIG);
}

/* A store emptied under a live connection (FLUSHALL, here its keys
 * deleted): the loss is detected and the layout key written again with the
 * marker, so a later open does not take it for a store of layout 1. */
static void test_flushed_store_keeps_its_layout(void **st)
{
    struct err e = {0};
    struct state *s = open3("fl:", 0, 3, 1, &e);
    int lost_now = 0;

    (void)st;
    assert_non_null(s);
    assert_int_equal(put1(s, "u", "U", 0, 1, &e), 1);
    q("DEL fl:layout fl:marker fl:ub:{0} fl:applied:{0}");
    assert_int_equal(state_check_lost(s, 0, &lost_now, &e), ERR_OK);
    assert_int_equal(lost_now, 1);
    assert_string_equal(q("GET fl:layout"), "3:1");
    state_close(s);
    s = open3("fl:", 0, 2, 0, &e);
    assert_non_null(s);
    assert_string_equal(q("GET fl:layout"), "3:1");
    assert_int_equal(put1(s, "u", "V", 0, 2, &e), 1);
    assert_string_equal(q("HEXISTS fl:ub:{0} u"), "1");
    state_close(s);
}

static int group_setup(void **st)
{
    (void)st;
    return test_rstate_start(&g_redis, &g_c);
}

static int group_teardown(void **st)
{
    (void)st;
    test_rstate_stop(&g_redis, g_c);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_store_becomes_layout_3),
        cmocka_unit_test(test_redelivered_batch_applied_once),
        cmocka_unit_test(test_zombie_is_refused),
        cmocka_unit_test(test_compare_and_set),
        cmocka_unit_test(test_sweep_expires_exactly_the_stale_users),
        cmocka_unit_test(test_expired_base_conflicts),
        cmocka_unit_test(test_older_layouts_are_still_read),
        cmocka_unit_test(test_foreign_values_are_refused),
        cmocka_unit_test(test_flushed_store_keeps_its_layout),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
