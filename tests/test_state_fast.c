/* tests/test_state_fast.c: layout 3's fast path (common/state/state_fast.c,
 * issue 19): a put whose base is the writer's own partition, or a new user
 * the last read found absent, is written without the script (WATCH + MGET
 * of the counters, then MULTI/HSET/EXEC), and every case the script judged
 * before still gets the script's answer:
 *   - a user written from another partition while this owner holds it: the
 *     steal counter sends the put to the script (conflict), and the
 *     partition is reported moved (its cached users dropped);
 *   - a user created by someone else between the read and the write: the
 *     creation counter does the same;
 *   - a new owner's epoch taken between the check and EXEC: EXEC is aborted,
 *     the script fences the put, nothing written;
 *   - a re-delivery below the partition's watermark: applied once;
 *   - an expired base: a conflict, as before;
 *   - a flushed store: a conflict, nothing written on it.
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

#include "rstate.h"
#include "stack.h"
#include "state.h"
#include "state_redis_priv.h" /* state_fast_set_hook */

static struct test_redis g_redis;
static redisContext *g_c;

#define q(...) test_rstate_q(g_c, __VA_ARGS__)

static void ignore(void *opaque, int32_t partition)
{
    (void)opaque;
    (void)partition;
}

/* An owner of partition p with the users' compare-and-set on, as the
 * transactions worker opens it (ttl 60 s). */
static int g_buckets = 8;

static struct state *owner(const char *prefix, int32_t p, struct state_base *bases)
{
    struct err e = {0};
    struct state *s = test_rstate_open(g_redis.port, prefix, 60, 3, g_buckets, &e);

    assert_non_null(s);
    state_set_put_bases(s, bases);
    assert_int_equal(state_fence(s, p, &e), ERR_OK);
    return s;
}

/* One put of ent at (p, o) with base b; its applied code. */
static int put(struct state *s, struct state_base *bases, const char *ent, const char *blob,
               int32_t p, int64_t o, struct state_base b)
{
    struct state_put pt = {ent, (const unsigned char *)blob, strlen(blob), p, o};
    struct err e = {0};
    int applied = -1;

    bases[0] = b;
    assert_int_equal(state_put_many(s, 1, &pt, &applied, &e), ERR_OK);
    return applied;
}

/* What the caller's cache would hold after a written put. */
static struct state_base written(const struct state *s, int32_t p, int64_t o)
{
    return (struct state_base){p, o, state_put_time(s)};
}

/* Reads ent (as the worker does for a user it does not hold): its base. */
static struct state_base read_base(struct state *s, const char *ent)
{
    struct state_blob b;
    struct err e = {0};

    assert_int_equal(state_get_many(s, 1, &ent, &b, &e), ERR_OK);
    return b.len ? (struct state_base){b.partition, b.offset, b.time_s}
                 : (struct state_base){-1, -1, 0};
}

/* A worker's step between batches: drops what the handle reported moved
 * (here: nothing is cached but the bases the test holds). Returns 1 when
 * partition p was among them. */
static int g_seen;
static int32_t g_want;
static void note(void *opaque, int32_t partition)
{
    (void)opaque;
    g_seen |= partition == g_want;
}
static int took_moved(struct state *s, int32_t p)
{
    g_seen = 0;
    g_want = p;
    return state_take_owner_changes(s, note, NULL) || g_seen;
}

/* The common case: after its first write (the script, which tells the
 * counters) an owner writes its own users, and new ones it just read
 * absent, without the script; each value as the script would write it. */
static void test_own_users_take_the_fast_path(void **st)
{
    struct state_base bases[1];
    struct state *a = owner("f1:", 0, bases);
    struct state_base b;

    (void)st;
    b = read_base(a, "u");
    assert_int_equal(put(a, bases, "u", "s1", 0, 10, b), STATE_PUT_WRITTEN);
    assert_int_equal(state_fast_puts(a), 0); /* nothing adopted yet: the script */
    (void)state_take_owner_changes(a, ignore, NULL);
    assert_int_equal(put(a, bases, "u", "s2", 0, 11, written(a, 0, 10)), STATE_PUT_WRITTEN);
    assert_int_equal(state_fast_puts(a), 1);
    test_rstate_assert_blob(a, "u", "s2", 0, 11);
    assert_string_equal(q("GET f1:applied:{0}"), "11");
    b = read_base(a, "new"); /* absent: created without the script */
    assert_int_equal(b.partition, -1);
    assert_int_equal(put(a, bases, "new", "n1", 0, 12, b), STATE_PUT_WRITTEN);
    assert_int_equal(state_fast_puts(a), 2);
    test_rstate_assert_blob(a, "new", "n1", 0, 12);
    state_close(a);
}

/* Owner A holds u (its own partition 0); owner B of partition 1 writes u
 * (the user's events arrive on both). A's next put, on its stale base,
 * must not overwrite B's: the steal counter sends it to the script, which
 * answers conflict, and A is told to drop partition 0's users. */
static void test_user_written_from_another_partition(void **st)
{
    struct state_base ba[1], bb[1];
    struct state *a = owner("f2:", 0, ba), *b = owner("f2:", 1, bb);
    struct state_base held;

    (void)st;
    assert_int_equal(put(a, ba, "u", "a1", 0, 10, read_base(a, "u")), STATE_PUT_WRITTEN);
    (void)state_take_owner_changes(a, ignore, NULL);
    assert_int_equal(put(a, ba, "u", "a2", 0, 11, written(a, 0, 10)), STATE_PUT_WRITTEN);
    assert_int_equal(state_fast_puts(a), 1);
    held = written(a, 0, 11);
    /* B reads u (A's value) and writes it from partition 1 */
    assert_int_equal(put(b, bb, "u", "b1", 1, 5, read_base(b, "u")), STATE_PUT_WRITTEN);
    assert_int_equal(q("GET f2:st:{0}")[0], '1');
    (void)took_moved(a, 0);
    assert_int_equal(put(a, ba, "u", "a3", 0, 12, held), STATE_PUT_CONFLICT);
    assert_int_equal(state_fast_puts(a), 1);
    test_rstate_assert_blob(a, "u", "b1", 1, 5);
    assert_true(took_moved(a, 0)); /* the cache drops partition 0's users */
    state_close(a);
    state_close(b);
}

/* A reads v absent; B creates v before A writes: A's create must not be
 * written over B's (the creation counter of v's bucket moved). */
static void test_user_created_between_read_and_write(void **st)
{
    struct state_base ba[1], bb[1];
    struct state *a = owner("f3:", 0, ba), *b = owner("f3:", 1, bb);
    struct state_base none;

    (void)st;
    assert_int_equal(put(a, ba, "w", "a1", 0, 1, read_base(a, "w")), STATE_PUT_WRITTEN);
    (void)state_take_owner_changes(a, ignore, NULL);
    none = read_base(a, "v");
    assert_int_equal(none.partition, -1);
    assert_int_equal(put(b, bb, "v", "b1", 1, 7, read_base(b, "v")), STATE_PUT_WRITTEN);
    assert_int_equal(put(a, ba, "v", "a2", 0, 2, none), STATE_PUT_CONFLICT);
    test_rstate_assert_blob(a, "v", "b1", 1, 7);
    assert_int_equal(state_fast_puts(a), 0);
    state_close(a);
    state_close(b);
}

/* A new owner claims partition 0 between A's check and its EXEC: EXEC is
 * aborted (the epoch key is watched), the script then fences the put, and
 * nothing of it is written. */
static void claim_partition_0(void *opaque)
{
    (void)opaque;
    q("INCR f4:epoch:{0}");
}

static void test_epoch_taken_between_check_and_exec(void **st)
{
    struct state_base ba[1];
    struct state *a = owner("f4:", 0, ba);

    (void)st;
    assert_int_equal(put(a, ba, "u", "a1", 0, 10, read_base(a, "u")), STATE_PUT_WRITTEN);
    (void)state_take_owner_changes(a, ignore, NULL);
    state_fast_set_hook(claim_partition_0, NULL);
    assert_int_equal(put(a, ba, "u", "a2", 0, 11, written(a, 0, 10)), STATE_PUT_SKIPPED);
    state_fast_set_hook(NULL, NULL);
    assert_int_equal(state_fenced(a), 1);
    assert_int_equal(state_fast_puts(a), 0);
    test_rstate_assert_blob(a, "u", "a1", 0, 10);
    assert_string_equal(q("GET f4:applied:{0}"), "10");
    state_close(a);
}

/* A batch delivered again (offsets at or below applied:{p}) goes to the
 * script and is skipped; a batch half old, half new applies the new half
 * once. */
static void test_redelivery_is_applied_once(void **st)
{
    struct state_base ba[2];
    struct state *a = owner("f5:", 0, ba);
    struct state_put two[2] = {{"x", (const unsigned char *)"x2", 2, 0, 20},
                               {"y", (const unsigned char *)"y2", 2, 0, 21}};
    struct err e = {0};
    int applied[2];

    (void)st;
    assert_int_equal(put(a, ba, "x", "x1", 0, 10, read_base(a, "x")), STATE_PUT_WRITTEN);
    (void)state_take_owner_changes(a, ignore, NULL);
    ba[0] = written(a, 0, 10);
    ba[1] = read_base(a, "y");
    assert_int_equal(state_put_many(a, 2, two, applied, &e), ERR_OK);
    assert_int_equal(applied[0], STATE_PUT_WRITTEN);
    assert_int_equal(applied[1], STATE_PUT_WRITTEN);
    uint64_t fast = state_fast_puts(a);
    assert_int_equal(fast, 2);
    /* the same batch again, its bases as before (a crash before the ack) */
    ba[0] = written(a, 0, 10);
    ba[1] = (struct state_base){-1, -1, 0};
    assert_int_equal(state_put_many(a, 2, two, applied, &e), ERR_OK);
    assert_int_equal(applied[0], STATE_PUT_SKIPPED);
    assert_int_equal(applied[1], STATE_PUT_SKIPPED);
    /* x alone, on the base it now has: eligible but for the watermark */
    assert_int_equal(put(a, ba, "x", "x2", 0, 20, written(a, 0, 20)), STATE_PUT_SKIPPED);
    assert_int_equal(put(a, ba, "x", "x3", 0, 19, written(a, 0, 20)), STATE_PUT_SKIPPED);
    assert_int_equal(state_fast_puts(a), fast);
    test_rstate_assert_blob(a, "x", "x2", 0, 20);
    test_rstate_assert_blob(a, "y", "y2", 0, 21);
    state_close(a);
}

/* A base older than the ttl is not written on from the cache: the script
 * reads the value as expired, a conflict. One inside the ttl but within its
 * last quarter (the margin for the clocks of the workers that sweep) goes
 * to the script too, which writes it; a fresh one takes the fast path. */
static void test_expired_base_is_a_conflict(void **st)
{
    struct state_base ba[1];
    struct state *a;
    long long now = (long long)time(NULL);

    (void)st;
    g_buckets = 1; /* the raw HSETs below name the bucket */
    a = owner("f6:", 0, ba);
    g_buckets = 8;
    assert_int_equal(put(a, ba, "w", "w1", 0, 1, read_base(a, "w")), STATE_PUT_WRITTEN);
    (void)state_take_owner_changes(a, ignore, NULL);
    q("HSET f6:ub:{0} u 0:5@%lld|u1", now - 61);
    q("HSET f6:ub:{0} v 0:5@%lld|v1", now - 50);
    q("HSET f6:ub:{0} x 0:5@%lld|x1", now - 20);
    assert_int_equal(put(a, ba, "u", "u2", 0, 6, (struct state_base){0, 5, now - 61}),
                     STATE_PUT_CONFLICT);
    assert_int_equal(put(a, ba, "v", "v2", 0, 7, (struct state_base){0, 5, now - 50}),
                     STATE_PUT_WRITTEN);
    assert_int_equal(state_fast_puts(a), 0);
    assert_int_equal(put(a, ba, "x", "x2", 0, 8, (struct state_base){0, 5, now - 20}),
                     STATE_PUT_WRITTEN);
    assert_int_equal(state_fast_puts(a), 1);
    test_rstate_assert_blob(a, "v", "v2", 0, 7);
    test_rstate_assert_blob(a, "x", "x2", 0, 8);
    state_close(a);
}

/* The store lost everything (FLUSHALL): a put from the cache is not
 * written on the empty store (its epoch, counters and marker are gone: the
 * script answers conflict), and the loss is found by the marker check. */
static void test_flushed_store_is_not_written_from_the_cache(void **st)
{
    struct state_base ba[1];
    struct state *a = owner("f7:", 0, ba);
    struct err e = {0};
    int lost = 0;

    (void)st;
    assert_int_equal(put(a, ba, "u", "u1", 0, 10, read_base(a, "u")), STATE_PUT_WRITTEN);
    (void)state_take_owner_changes(a, ignore, NULL);
    assert_int_equal(put(a, ba, "u", "u2", 0, 11, written(a, 0, 10)), STATE_PUT_WRITTEN);
    assert_int_equal(state_fast_puts(a), 1);
    q("FLUSHALL");
    assert_int_equal(put(a, ba, "u", "u3", 0, 12, written(a, 0, 11)), STATE_PUT_CONFLICT);
    assert_int_equal(state_fast_puts(a), 1);
    assert_string_equal(q("HGET f7:ub:{0} u"), "(nil)");
    assert_int_equal(state_check_lost(a, 1, &lost, &e), ERR_OK);
    assert_int_equal(lost, 1);
    state_close(a);
}

/* A put without bases (the cache off, a tool) writes without reading: the
 * blind counter makes every owner with bases go through the script. */
static void test_blind_write_sends_owners_to_the_script(void **st)
{
    struct state_base ba[1];
    struct state *a = owner("f8:", 0, ba);
    struct err e = {0};
    struct state *tool = test_rstate_open(g_redis.port, "f8:", 60, 3, 8, &e);

    (void)st;
    assert_non_null(tool);
    assert_int_equal(put(a, ba, "u", "u1", 0, 10, read_base(a, "u")), STATE_PUT_WRITTEN);
    (void)state_take_owner_changes(a, ignore, NULL);
    assert_int_equal(test_rstate_put1(tool, "u", "t1", 3, 1, &e), STATE_PUT_WRITTEN);
    assert_int_equal(put(a, ba, "u", "u2", 0, 11, written(a, 0, 10)), STATE_PUT_CONFLICT);
    assert_int_equal(state_fast_puts(a), 0);
    test_rstate_assert_blob(a, "u", "t1", 3, 1);
    state_close(tool);
    state_close(a);
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
        cmocka_unit_test(test_own_users_take_the_fast_path),
        cmocka_unit_test(test_user_written_from_another_partition),
        cmocka_unit_test(test_user_created_between_read_and_write),
        cmocka_unit_test(test_epoch_taken_between_check_and_exec),
        cmocka_unit_test(test_redelivery_is_applied_once),
        cmocka_unit_test(test_expired_base_is_a_conflict),
        cmocka_unit_test(test_flushed_store_is_not_written_from_the_cache),
        cmocka_unit_test(test_blind_write_sends_owners_to_the_script),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
