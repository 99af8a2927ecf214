/* tests/test_state_layout.c: the Redis state layouts (issue 19,
 * common/state/state_layout.c). A store written before layouts were
 * versioned (a hash per user) is read and written as layout 1; an empty
 * store becomes layout 2 (a string per user, one SET PX per write); a
 * layout this build does not know is refused at open; a hash inside a
 * layout-2 store (an older worker's) is refused per key, never read as
 * "nothing stored"; two puts of one user in one call are judged in order.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

#define open_prefix(prefix, ttl_s, e) test_rstate_open(g_redis.port, prefix, ttl_s, 0, 0, e)

/* Written by the code before layouts: marker and hashes, no layout key. */
static void test_old_store_is_read_and_written_as_layout_1(void **st)
{
    struct err e = {0};
    struct state *s;
    const char *ents[2] = {"a", "new"};
    struct state_blob b[2];

    (void)st;
    q("SET old:marker 1700000000000");
    q("HSET old:u:{a} s blobA p 3 o 17");
    s = open_prefix("old:", 60, &e);
    assert_non_null(s);
    assert_string_equal(q("GET old:layout"), "1");
    assert_int_equal(state_get_many(s, 2, ents, b, &e), ERR_OK);
    assert_int_equal(b[0].len, 5);
    assert_memory_equal(b[0].data, "blobA", 5);
    assert_int_equal(b[0].partition, 3);
    assert_int_equal(b[0].offset, 17);
    assert_int_equal(b[1].len, 0);
    assert_int_equal(put1(s, "a", "B2", 3, 17, &e), 0); /* already applied */
    assert_int_equal(put1(s, "a", "B2", 3, 18, &e), 1);
    assert_int_equal(put1(s, "new", "N", 0, 1, &e), 1);
    assert_string_equal(q("TYPE old:u:{a}"), "hash"); /* still a hash */
    assert_string_equal(q("TYPE old:u:{new}"), "hash");
    assert_string_equal(q("HGET old:u:{a} s"), "B2");
    assert_blob(s, "a", "B2", 3, 18);
    state_close(s);
}

static void test_empty_store_becomes_layout_2(void **st)
{
    struct err e = {0};
    struct state *s = open_prefix("l2:", 60, &e);
    long long pttl;

    (void)st;
    assert_non_null(s);
    assert_string_equal(q("GET l2:layout"), "2");
    assert_int_equal(put1(s, "u", "state|with:separators", 4, 99, &e), 1);
    assert_string_equal(q("TYPE l2:u:{u}"), "string");
    assert_string_equal(q("GET l2:u:{u}"), "4:99|state|with:separators");
    pttl = atoll(q("PTTL l2:u:{u}"));
    assert_true(pttl > 0 && pttl <= 60000); /* value and expiry in one SET */
    assert_blob(s, "u", "state|with:separators", 4, 99);
    assert_int_equal(put1(s, "u", "x", 4, 99, &e), 0);
    assert_int_equal(put1(s, "u", "x", 4, 98, &e), 0);
    assert_int_equal(put1(s, "u", "y", 5, 1, &e), 1); /* another partition */
    assert_blob(s, "u", "y", 5, 1);
    state_close(s);
    /* reopened: still layout 2 */
    s = open_prefix("l2:", 0, &e);
    assert_non_null(s);
    assert_blob(s, "u", "y", 5, 1);
    state_close(s);
}

static void test_unknown_layout_is_refused(void **st)
{
    struct err e = {0};

    (void)st;
    q("SET l3:layout 3");
    assert_null(open_prefix("l3:", 0, &e));
    assert_int_equal(e.code, ERR_CONFIG);
    assert_non_null(strstr(e.msg, "l3:layout is '3'"));
}

/* An older worker that does not know layouts creates a hash for a user new
 * to a layout-2 store: it is refused, never read as nothing stored, and the
 * other users of the read and the write are served. */
static void test_hash_in_a_layout_2_store_is_refused(void **st)
{
    struct err e = {0};
    struct state *s = open_prefix("mix:", 0, &e);
    const char *ents[3] = {"fresh", "h", "ok"};
    struct state_blob b[3];
    struct state_put puts[3] = {{"fresh", (const unsigned char *)"F", 1, 0, 7},
                                {"h", (const unsigned char *)"H", 1, 0, 7},
                                {"ok", (const unsigned char *)"O", 1, 0, 7}};
    int applied[3] = {-1, -1, -1};

    (void)st;
    assert_non_null(s);
    assert_int_equal(put1(s, "ok", "o", 0, 1, &e), 1);
    q("HSET mix:u:{h} s old p 0 o 3");
    assert_int_equal(state_get_many(s, 3, ents, b, &e), ERR_IO);
    assert_non_null(strstr(e.msg, "mix:u:{h}"));
    assert_non_null(strstr(e.msg, "WRONGTYPE"));
    assert_int_equal(state_put_many(s, 3, puts, applied, &e), ERR_IO);
    assert_non_null(strstr(e.msg, "mix:u:{h}"));
    assert_int_equal(applied[0], 1);
    assert_int_equal(applied[2], 1);
    assert_string_equal(q("HGET mix:u:{h} s"), "old"); /* untouched */
    assert_blob(s, "fresh", "F", 0, 7);
    assert_blob(s, "ok", "O", 0, 7);
    /* a string that is not a state value: refused the same way */
    q("SET mix:u:{plain} 12345");
    ents[0] = "plain";
    assert_int_equal(state_get_many(s, 1, ents, b, &e), ERR_IO);
    assert_non_null(strstr(e.msg, "WRONGTYPE"));
    state_close(s);
}

/* The script reads a chunk's keys once (MGET): a user put twice in one call
 * is judged on what the first put wrote. */
static void test_one_user_twice_in_one_call(void **st)
{
    struct err e = {0};
    struct state *s = open_prefix("dup:", 0, &e);
    struct state_put up[2] = {{"d", (const unsigned char *)"five", 4, 0, 5},
                              {"d", (const unsigned char *)"six", 3, 0, 6}};
    struct state_put down[2] = {{"e", (const unsigned char *)"six", 3, 0, 6},
                                {"e", (const unsigned char *)"five", 4, 0, 5}};
    struct state_base bases[2] = {{-1, -1, 0}, {0, 5, 0}}, stale[2] = {{-1, -1, 0}, {-1, -1, 0}};
    int applied[2];

    (void)st;
    assert_non_null(s);
    assert_int_equal(state_put_many(s, 2, up, applied, &e), ERR_OK);
    assert_int_equal(applied[0], 1);
    assert_int_equal(applied[1], 1);
    assert_blob(s, "d", "six", 0, 6);
    assert_int_equal(state_put_many(s, 2, down, applied, &e), ERR_OK);
    assert_int_equal(applied[0], 1);
    assert_int_equal(applied[1], 0);
    assert_blob(s, "e", "six", 0, 6);
    up[0].entity = up[1].entity = "f";
    state_set_put_bases(s, bases); /* the second put's base is the first's write */
    assert_int_equal(state_put_many(s, 2, up, applied, &e), ERR_OK);
    assert_int_equal(applied[0], 1);
    assert_int_equal(applied[1], 1);
    up[0].entity = up[1].entity = "g";
    up[1].offset = 7;
    state_set_put_bases(s, stale); /* the second expects nothing stored: a conflict */
    assert_int_equal(state_put_many(s, 2, up, applied, &e), ERR_OK);
    assert_int_equal(applied[0], 1);
    assert_int_equal(applied[1], STATE_PUT_CONFLICT);
    state_set_put_bases(s, NULL);
    assert_blob(s, "g", "five", 0, 5);
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
        cmocka_unit_test(test_old_store_is_read_and_written_as_layout_1),
        cmocka_unit_test(test_empty_store_becomes_layout_2),
        cmocka_unit_test(test_unknown_layout_is_refused),
        cmocka_unit_test(test_hash_in_a_layout_2_store_is_refused),
        cmocka_unit_test(test_one_user_twice_in_one_call),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
