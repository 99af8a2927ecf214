/* Co-visitation and trending counts (common/streams/covis.c) against a real
 * redis-server: pair counts both ways, best first; forward-decayed trending
 * (a recent click outweighs older ones by 2^(dt / half life)); the rescale
 * past 2^512 keeps the ranking and finite scores; an unreachable server is
 * ERR_RETRY. Exactly once: a replayed batch, a partially overlapping one
 * and a writer with a stale epoch add nothing twice. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <hiredis.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "covis.h"
#include "stack.h"
#include "state.h"

static struct test_redis g_redis;

/* A click without an input position (never deduplicated). */
#define CK(prev, item, ms) {prev, item, ms, 0, -1, 0}

static int setup(void **st)
{
    (void)st;
    return test_redis_start(&g_redis);
}

static int teardown(void **st)
{
    (void)st;
    test_redis_stop(&g_redis);
    return 0;
}

static struct cov *open_cov(const char *prefix, double half_life)
{
    struct cov_opts o = {.port = g_redis.port,
                         .prefix = prefix,
                         .ttl_s = 100,
                         .half_life_s = half_life,
                         .timeout_ms = 2000};
    struct cov *c = NULL;
    struct err e = {0};

    assert_int_equal(cov_open(&c, &o, &e), ERR_OK);
    return c;
}

static void test_pairs_are_counted_both_ways_best_first(void **st)
{
    struct cov *c = open_cov("t1:", 3600);
    struct err e = {0};
    struct cov_click clicks[] = {CK(-1, 5, 1000), CK(5, 6, 2000), CK(6, 5, 3000),
                                 CK(5, 7, 4000),  CK(5, 5, 5000), CK(-1, 9, 6000)};
    int64_t items[3] = {5, -1, 9}, out[3 * 4];
    int counts[3];

    (void)st;
    assert_int_equal(cov_update(c, 6, clicks, NULL, &e), ERR_OK);
    assert_int_equal(cov_covisited(c, 3, items, 4, out, counts, &e), ERR_OK);
    assert_int_equal(counts[0], 2); /* 5: 6 twice, 7 once; 5->5 is no pair */
    assert_int_equal(out[0], 6);
    assert_int_equal(out[1], 7);
    assert_int_equal(counts[1], 0); /* -1: skipped */
    assert_int_equal(counts[2], 0); /* 9: never after another item */
    cov_close(c);
}

static double zscore(const char *key, const char *member)
{
    redisContext *r = redisConnect("127.0.0.1", g_redis.port);
    redisReply *x;
    double v;

    assert_non_null(r);
    x = redisCommand(r, "ZSCORE %s %s", key, member);
    assert_non_null(x);
    assert_int_equal(x->type, REDIS_REPLY_STRING);
    v = strtod(x->str, NULL);
    freeReplyObject(x);
    redisFree(r);
    return v;
}

static void test_trending_is_forward_decayed(void **st)
{
    struct cov *c = open_cov("t2:", 10); /* half life 10 s */
    struct err e = {0};
    /* item 1: three clicks at t=0; item 2: one click at t=20 s (2 half
     * lives: weight 4 > 3); item 3: one at t=10 s (weight 2) */
    struct cov_click clicks[] = {
        CK(-1, 1, 0), CK(-1, 1, 0), CK(-1, 1, 0), CK(-1, 2, 20000), CK(-1, 3, 10000)};
    int64_t top[5];
    int n;

    (void)st;
    assert_int_equal(cov_update(c, 5, clicks, NULL, &e), ERR_OK);
    assert_int_equal(cov_trending(c, 5, top, &n, &e), ERR_OK);
    assert_int_equal(n, 3);
    assert_int_equal(top[0], 2);
    assert_int_equal(top[1], 1);
    assert_int_equal(top[2], 3);
    assert_float_equal(zscore("t2:trending", "2"), 4.0, 1e-12);
    assert_float_equal(zscore("t2:trending", "1"), 3.0, 1e-12);
    cov_close(c);
}

/* 10,000 half lives later: without the rescale 2^10000 would be inf. */
static void test_trending_rescales_before_overflow(void **st)
{
    struct cov *c = open_cov("t3:", 1);
    struct err e = {0};
    struct cov_click a[] = {CK(-1, 1, 0), CK(-1, 1, 0), CK(-1, 2, 1000)};
    struct cov_click b[] = {CK(-1, 3, 10000LL * 1000)};
    struct cov_click d[] = {CK(-1, 4, 10000LL * 1000 - 1000)};
    int64_t top[5];
    int n;
    double s3, s4;

    (void)st;
    assert_int_equal(cov_update(c, 3, a, NULL, &e), ERR_OK);
    assert_int_equal(cov_update(c, 1, b, NULL, &e), ERR_OK);
    assert_int_equal(cov_update(c, 1, d, NULL, &e), ERR_OK);
    assert_int_equal(cov_trending(c, 5, top, &n, &e), ERR_OK);
    assert_int_equal(n, 4);
    assert_int_equal(top[0], 3);
    assert_int_equal(top[1], 4);
    s3 = zscore("t3:trending", "3");
    s4 = zscore("t3:trending", "4");
    assert_true(isfinite(s3) && s3 > 0);
    assert_float_equal(s3 / s4, 2.0, 1e-9); /* one half life apart */
    cov_close(c);
}

/* Issue 23 case 3: one click dated 9999-12-31 rescaled the set by 2^-shift
 * and moved t0 to year 9999: 200 positive scores became 1, and every later
 * click added 0. Now the time is clamped and t0 never passes the clock. */
static void test_click_far_in_the_future_does_not_wipe_trending(void **st)
{
    struct cov *c = open_cov("t9:", 3600);
    struct err e = {0};
    struct cov_click many[200], attack[] = {CK(-1, 9999, 253402214400000LL)}, later[20];
    int64_t now = (int64_t)time(NULL) * 1000;
    redisContext *r = redisConnect("127.0.0.1", g_redis.port);
    redisReply *rep;

    (void)st;
    for (int i = 0; i < 200; i++)
        many[i] = (struct cov_click)CK(-1, 1000 + i, now);
    for (int i = 0; i < 20; i++)
        later[i] = (struct cov_click)CK(-1, 5000, now + 1000);
    assert_int_equal(cov_update(c, 200, many, NULL, &e), ERR_OK);
    assert_int_equal(cov_update(c, 1, attack, NULL, &e), ERR_OK);
    assert_int_equal(cov_update(c, 20, later, NULL, &e), ERR_OK);
    rep = redisCommand(r, "ZCOUNT t9:trending (0 +inf");
    assert_non_null(rep);
    if (rep->integer < 201)
        fail_msg("%lld positive trending scores after the attack, want >= 201", rep->integer);
    freeReplyObject(rep);
    assert_true(zscore("t9:trending", "5000") > 10 * zscore("t9:trending", "1000"));
    redisFree(r);
    cov_close(c);
}

/* ---- exactly once per (partition, offset), fenced by epoch ---- */

/* Click at partition p, offset o, written under epoch ep. */
#define AT(prev, item, p, o, ep) {prev, item, 1000 * (o), p, o, ep}

static long long zcount(const char *key, const char *member)
{
    redisContext *r = redisConnect("127.0.0.1", g_redis.port);
    redisReply *x;
    long long v = 0;

    assert_non_null(r);
    x = redisCommand(r, "ZSCORE %s %s", key, member);
    assert_non_null(x);
    if (x->type == REDIS_REPLY_STRING)
        v = strtoll(x->str, NULL, 10);
    freeReplyObject(x);
    redisFree(r);
    return v;
}

static void redis_set(const char *key, const char *value)
{
    redisContext *r = redisConnect("127.0.0.1", g_redis.port);
    redisReply *x;

    assert_non_null(r);
    x = redisCommand(r, "SET %s %s", key, value);
    assert_non_null(x);
    freeReplyObject(x);
    redisFree(r);
}

/* The same batch twice (a crash after the counts, before the commit): the
 * second call counts nothing, and the pair counts are those of one call. */
static void test_replayed_batch_is_counted_once(void **st)
{
    struct cov *c = open_cov("x1:", 3600);
    struct err e = {0};
    struct cov_click b[] = {AT(-1, 1, 0, 10, 0), AT(1, 2, 0, 11, 0), AT(2, 1, 0, 12, 0),
                            AT(-1, 7, 1, 3, 0)};
    struct cov_result r;

    (void)st;
    assert_int_equal(cov_update(c, 4, b, &r, &e), ERR_OK);
    assert_int_equal(r.counted, 4);
    assert_int_equal(r.redelivered, 0);
    assert_int_equal(cov_update(c, 4, b, &r, &e), ERR_OK);
    assert_int_equal(r.counted, 0);
    assert_int_equal(r.redelivered, 4);
    assert_int_equal(zcount("x1:cv:1", "2"), 2); /* 1->2 and 2->1 once each */
    assert_int_equal(zcount("x1:cv:2", "1"), 2);
    assert_float_equal(zscore("x1:trending", "1"), 1.0 + pow(2, 2.0 / 3600), 1e-9);
    cov_close(c);
}

/* A redelivery that overlaps the counted part and goes on past it: only
 * the new offsets count; another partition's offsets are independent. */
static void test_overlapping_batch_counts_only_new_offsets(void **st)
{
    struct cov *c = open_cov("x2:", 3600);
    struct err e = {0};
    struct cov_click a[] = {AT(-1, 1, 0, 0, 0), AT(1, 2, 0, 1, 0), AT(2, 3, 0, 2, 0)};
    struct cov_click b[] = {AT(1, 2, 0, 1, 0), AT(2, 3, 0, 2, 0), AT(3, 4, 0, 3, 0),
                            AT(4, 5, 0, 4, 0), AT(9, 8, 1, 0, 0)};
    struct cov_result r;

    (void)st;
    assert_int_equal(cov_update(c, 3, a, &r, &e), ERR_OK);
    assert_int_equal(r.counted, 3);
    assert_int_equal(cov_update(c, 5, b, &r, &e), ERR_OK);
    assert_int_equal(r.counted, 3); /* offsets 3, 4 of partition 0; 0 of partition 1 */
    assert_int_equal(r.redelivered, 2);
    assert_int_equal(zcount("x2:cv:2", "3"), 1);
    assert_int_equal(zcount("x2:cv:3", "4"), 1);
    assert_int_equal(zcount("x2:cv:4", "5"), 1);
    assert_int_equal(zcount("x2:cv:9", "8"), 1);
    assert_int_equal(zcount("x2:cv:1", "2"), 1);
    cov_close(c);
}

/* A writer whose epoch is older than the stored one (a zombie that lost its
 * partition) is refused for that partition only; the owner's epoch, or a
 * newer one, is accepted and becomes the stored one. */
static void test_stale_epoch_is_fenced(void **st)
{
    struct cov *c = open_cov("x3:", 3600);
    struct err e = {0};
    struct cov_click old[] = {AT(1, 2, 0, 5, 3), AT(4, 5, 1, 5, 3)};
    struct cov_click own[] = {AT(1, 2, 0, 5, 4)};
    struct cov_click newer[] = {AT(2, 3, 0, 6, 6)};
    struct cov_result r;

    (void)st;
    redis_set("x3:epoch:{0}", "4"); /* the new owner of partition 0 claimed epoch 4 */
    assert_int_equal(cov_update(c, 2, old, &r, &e), ERR_OK);
    assert_int_equal(r.fenced, 1);
    assert_int_equal(r.counted, 1); /* partition 1 is not fenced */
    assert_int_equal(zcount("x3:cv:1", "2"), 0);
    assert_int_equal(zcount("x3:cv:4", "5"), 1);
    assert_int_equal(cov_update(c, 1, own, &r, &e), ERR_OK);
    assert_int_equal(r.counted, 1); /* the fenced offset is still free for the owner */
    assert_int_equal(zcount("x3:cv:1", "2"), 1);
    assert_int_equal(cov_update(c, 1, newer, &r, &e), ERR_OK);
    assert_int_equal(r.counted, 1);
    assert_int_equal(cov_update(c, 1, own, &r, &e), ERR_OK);
    assert_int_equal(r.fenced, 1); /* epoch 4 < 6 now */
    cov_close(c);
}

/* The counts and the session state share one epoch per partition: a
 * worker whose state handle was fenced by a newer owner (state_fence) has
 * its counts refused too. */
static void test_state_fence_fences_counts(void **st)
{
    struct state_redis_opts so = {.port = g_redis.port, .prefix = "x4:", .timeout_ms = 2000};
    struct err e = {0};
    struct state *old = state_open_redis(&so, &e), *owner = state_open_redis(&so, &e);
    const char *ids[1] = {"s"};
    static struct state_blob b[1];
    struct cov *c = open_cov("x4:", 3600);
    struct cov_click zombie[] = {AT(1, 2, 3, 7, 0)}, own[] = {AT(1, 2, 3, 7, 0)};
    struct cov_result r;

    (void)st;
    assert_non_null(old);
    assert_non_null(owner);
    assert_int_equal(state_fence(old, 3, &e), ERR_OK);
    assert_int_equal(state_get_many(old, 1, ids, b, &e), ERR_OK); /* claims */
    assert_int_equal(state_fence(owner, 3, &e), ERR_OK);          /* a rebalance */
    assert_int_equal(state_get_many(owner, 1, ids, b, &e), ERR_OK);
    assert_true(state_epoch(owner, 3) > state_epoch(old, 3));
    zombie[0].epoch = state_epoch(old, 3);
    own[0].epoch = state_epoch(owner, 3);
    assert_int_equal(cov_update(c, 1, zombie, &r, &e), ERR_OK);
    assert_int_equal(r.fenced, 1);
    assert_int_equal(cov_update(c, 1, own, &r, &e), ERR_OK);
    assert_int_equal(r.counted, 1);
    assert_int_equal(zcount("x4:cv:1", "2"), 1);
    cov_close(c);
    state_close(old);
    state_close(owner);
}

/* More partitions in one batch than one script call takes: several calls,
 * the same result; replayed, nothing counts again. */
static void test_batch_over_many_partitions_is_counted_once(void **st)
{
    enum { N = 2 * COV_MAX_PARTITIONS + 10 };
    struct cov *c = open_cov("x5:", 3600);
    static struct cov_click b[N];
    struct cov_result r;
    struct err e = {0};

    (void)st;
    for (int i = 0; i < N; i++) /* partition i % 300, two clicks in most */
        b[i] = (struct cov_click)AT(1, 2, i % 300, i, 0);
    assert_int_equal(cov_update(c, N, b, &r, &e), ERR_OK);
    assert_int_equal(r.counted, N);
    assert_int_equal(zcount("x5:cv:1", "2"), N);
    assert_int_equal(cov_update(c, N, b, &r, &e), ERR_OK);
    assert_int_equal(r.redelivered, N);
    assert_int_equal(zcount("x5:cv:1", "2"), N);
    cov_close(c);
}

static void test_unreachable_server_is_retry(void **st)
{
    struct cov_opts o = {.port = test_free_port(), .half_life_s = 1, .timeout_ms = 200};
    struct cov *c = NULL;
    struct err e = {0};
    struct cov_click k = CK(-1, 1, 0);
    int64_t top[1];
    int n;

    (void)st;
    assert_int_equal(cov_open(&c, &o, &e), ERR_OK);
    assert_int_equal(cov_update(c, 1, &k, NULL, &e), ERR_RETRY);
    assert_non_null(strstr(e.msg, "127.0.0.1"));
    assert_int_equal(cov_trending(c, 1, top, &n, &e), ERR_RETRY);
    cov_close(c);
    o.half_life_s = 0;
    assert_int_equal(cov_open(&c, &o, &e), ERR_CONFIG);
    assert_null(c);
}

/* An ACL-only server (default user off): the counts authenticate as the
 * configured user; the password alone is refused as a configuration error. */
static void test_acl_user_authenticates(void **st)
{
    static const char *const acl[] = {"--user",    "default", "off", "--user", "clicks", "on",
                                      ">pw-c0v1s", "~*",      "&*",  "+@all",  NULL};
    struct test_redis r;
    struct cov_opts o = {.password = "pw-c0v1s",
                         .username = "clicks",
                         .half_life_s = 60,
                         .timeout_ms = 2000};
    struct cov *c = NULL;
    struct err e = {0};
    struct cov_click k[2] = {CK(-1, 1, 0), CK(1, 2, 1)};
    int64_t top[2];
    int n;

    (void)st;
    assert_int_equal(test_redis_start_opts(&r, 0, acl), 0);
    o.port = r.port;
    assert_int_equal(cov_open(&c, &o, &e), ERR_OK);
    assert_int_equal(cov_update(c, 2, k, NULL, &e), ERR_OK);
    assert_int_equal(cov_trending(c, 2, top, &n, &e), ERR_OK);
    assert_int_equal(n, 2);
    cov_close(c);
    o.username = NULL;
    assert_int_equal(cov_open(&c, &o, &e), ERR_OK);
    assert_int_equal(cov_update(c, 2, k, NULL, &e), ERR_CONFIG);
    assert_null(strstr(e.msg, "pw-c0v1s"));
    cov_close(c);
    test_redis_stop(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pairs_are_counted_both_ways_best_first),
        cmocka_unit_test(test_trending_is_forward_decayed),
        cmocka_unit_test(test_trending_rescales_before_overflow),
        cmocka_unit_test(test_click_far_in_the_future_does_not_wipe_trending),
        cmocka_unit_test(test_replayed_batch_is_counted_once),
        cmocka_unit_test(test_overlapping_batch_counts_only_new_offsets),
        cmocka_unit_test(test_stale_epoch_is_fenced),
        cmocka_unit_test(test_state_fence_fences_counts),
        cmocka_unit_test(test_batch_over_many_partitions_is_counted_once),
        cmocka_unit_test(test_unreachable_server_is_retry),
        cmocka_unit_test(test_acl_user_authenticates),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
