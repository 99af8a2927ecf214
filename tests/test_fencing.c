/* tests/test_fencing.c: zombie fencing in the state store (state_fence).
 *
 * Two handles play two consumers of one partition against a real
 * redis-server: the former owner (stalled, then resumed) and the new owner
 * the group gave the partition to. The former owner's late writes must be
 * refused even when their offset is newer than the stored one (the case
 * the per-entity offset check alone lets through). Keys are inspected with
 * redis-cli.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stack.h"
#include "state.h"

static struct test_redis g_redis;
static int g_seq; /* each test its own key prefix */

struct fx {
    char prefix[32];
    struct state *old_owner, *new_owner;
};

static struct state *open_handle(int port, const char *prefix, int lazy)
{
    struct state_redis_opts o = {
        .host = "127.0.0.1", .port = port, .prefix = prefix, .timeout_ms = 2000, .lazy = lazy};
    struct err e = {0};
    struct state *s = state_open_redis(&o, &e);

    if (!s)
        fprintf(stderr, "state_open_redis: %s\n", e.msg);
    return s;
}

static int setup(void **st)
{
    struct fx *f = calloc(1, sizeof(*f));

    if (!f)
        return -1;
    snprintf(f->prefix, sizeof(f->prefix), "f%d:", ++g_seq);
    f->old_owner = open_handle(g_redis.port, f->prefix, 0);
    f->new_owner = open_handle(g_redis.port, f->prefix, 0);
    *st = f;
    return f->old_owner && f->new_owner ? 0 : -1;
}

static int teardown(void **st)
{
    struct fx *f = *st;

    state_close(f->old_owner);
    state_close(f->new_owner);
    free(f);
    return 0;
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

/* One put; returns applied (0/1), or the error code. */
static int put1(struct state *s, const char *entity, const char *blob, int32_t p, int64_t o)
{
    struct state_put put = {entity, (const unsigned char *)blob, strlen(blob), p, o};
    struct err e = {0};
    int applied = -9, rc = state_put_many(s, 1, &put, &applied, &e);

    if (rc)
        fprintf(stderr, "put %s: %s\n", entity, e.msg);
    return rc ? rc : applied;
}

static void assert_blob(struct state *s, const char *entity, const char *blob, int64_t off)
{
    static struct state_blob b;
    struct err e = {0};

    assert_int_equal(state_get_many(s, 1, &entity, &b, &e), ERR_OK);
    assert_int_equal(b.len, strlen(blob));
    assert_memory_equal(b.data, blob, b.len);
    assert_int_equal(b.offset, off);
}

static void redis_cli(int port, const char *args, char *out, size_t cap)
{
    char cmd[300];
    FILE *p;

    snprintf(cmd, sizeof(cmd), "redis-cli -p %d %s 2>&1", port, args);
    p = popen(cmd, "r");
    assert_non_null(p);
    if (!fgets(out, (int)cap, p))
        out[0] = '\0';
    out[strcspn(out, "\n")] = '\0';
    pclose(p);
}

static void ping(struct state *s)
{
    struct err e = {0};
    const char *ent = "nobody";
    static struct state_blob b;

    /* Any read sends the pending claim. */
    assert_int_equal(state_get_many(s, 1, &ent, &b, &e), ERR_OK);
}

/* The zombie scenario: the new owner's claim makes every later write of the
 * former owner a no-op, whatever its offset. */
static void test_stale_owner_is_refused_after_new_claim(void **st)
{
    struct fx *f = *st;
    struct err e = {0};

    assert_int_equal(state_fence(f->old_owner, 3, &e), ERR_OK);
    assert_int_equal(state_epoch(f->old_owner, 3), 0); /* claimed lazily */
    assert_int_equal(put1(f->old_owner, "u1", "old@10", 3, 10), 1);
    assert_int_equal(state_epoch(f->old_owner, 3), 1);

    /* Rebalance: the partition moves; the new owner reads (and claims). */
    assert_int_equal(state_fence(f->new_owner, 3, &e), ERR_OK);
    ping(f->new_owner);
    assert_int_equal(state_epoch(f->new_owner, 3), 2);

    /* The former owner wakes up with a batch it had already computed. */
    assert_int_equal(put1(f->old_owner, "u1", "old@20", 3, 20), 0);
    assert_int_equal(put1(f->old_owner, "u2", "old@21", 3, 21), 0);
    assert_int_equal(state_fenced(f->old_owner), 2);
    assert_blob(f->new_owner, "u1", "old@10", 10);

    /* The new owner replays from the committed offset: applied once. */
    assert_int_equal(put1(f->new_owner, "u1", "new@11", 3, 11), 1);
    assert_int_equal(put1(f->new_owner, "u1", "new@20", 3, 20), 1);
    assert_int_equal(put1(f->new_owner, "u1", "new@20", 3, 20), 0); /* redelivery */
    assert_int_equal(state_fenced(f->new_owner), 0);
    assert_blob(f->old_owner, "u1", "new@20", 20);
    printf("# former owner: epoch %lld, %llu write(s) refused; new owner: epoch %lld\n",
           (long long)state_epoch(f->old_owner, 3), (unsigned long long)state_fenced(f->old_owner),
           (long long)state_epoch(f->new_owner, 3));
}

/* Control: without fencing, the same late write (newer offset) is applied
 * by the offset check: the fence is what refuses it. */
static void test_without_fence_late_write_is_applied(void **st)
{
    struct fx *f = *st;

    assert_int_equal(put1(f->old_owner, "u1", "old@10", 3, 10), 1);
    assert_int_equal(put1(f->new_owner, "u1", "new@11", 3, 11), 1);
    assert_int_equal(put1(f->old_owner, "u1", "old@20", 3, 20), 1);
    assert_blob(f->new_owner, "u1", "old@20", 20);
    assert_int_equal(state_fenced(f->old_owner), 0);
}

/* Fencing is per partition: the former owner still writes the partitions
 * it keeps; taking a partition back gives a newer epoch again. */
static void test_fence_is_per_partition_and_reclaimable(void **st)
{
    struct fx *f = *st;
    struct err e = {0};

    assert_int_equal(state_fence(f->old_owner, 0, &e), ERR_OK);
    assert_int_equal(state_fence(f->old_owner, 1, &e), ERR_OK);
    assert_int_equal(put1(f->old_owner, "a", "x", 0, 1), 1);
    assert_int_equal(state_fence(f->new_owner, 1, &e), ERR_OK);
    ping(f->new_owner);
    assert_int_equal(put1(f->old_owner, "a", "y", 0, 2), 1); /* partition 0: still its own */
    assert_int_equal(put1(f->old_owner, "b", "y", 1, 2), 0); /* partition 1: moved */
    assert_int_equal(put1(f->new_owner, "b", "z", 1, 2), 1);

    /* The partition comes back to the first handle (another rebalance). */
    assert_int_equal(state_fence(f->old_owner, 1, &e), ERR_OK);
    assert_int_equal(put1(f->old_owner, "b", "w", 1, 3), 1);
    assert_int_equal(put1(f->new_owner, "b", "v", 1, 4), 0);
    assert_true(state_epoch(f->old_owner, 1) > state_epoch(f->new_owner, 1));
    assert_int_equal(state_fenced(f->old_owner), 1);
    assert_int_equal(state_fenced(f->new_owner), 1);
}

/* The claim is kept while Redis is away and sent with the first call that
 * reaches it: fencing needs no connection at assignment time. */
static void test_claim_waits_for_redis(void **st)
{
    struct test_redis r;
    struct state *s, *other;
    struct err e = {0};
    int port = test_free_port();
    char pfx[] = "";
    const char *ent = "u1";
    static struct state_blob b;

    (void)st;
    s = open_handle(port, pfx, 1);
    assert_non_null(s);
    assert_int_equal(state_fence(s, 5, &e), ERR_OK);
    assert_int_equal(state_get_many(s, 1, &ent, &b, &e), ERR_RETRY);
    assert_int_equal(test_redis_start_opts(&r, port, NULL), 0);
    other = open_handle(port, pfx, 0);
    assert_non_null(other);
    assert_int_equal(state_fence(other, 5, &e), ERR_OK);
    assert_int_equal(put1(other, "u1", "other", 5, 1), 1); /* epoch 1 */
    assert_int_equal(put1(s, "u1", "s", 5, 2), 1);         /* claims epoch 2 first */
    assert_int_equal(state_epoch(s, 5), 2);
    assert_int_equal(put1(other, "u1", "other", 5, 3), 0);
    state_close(other);
    state_close(s);
    test_redis_stop(&r);
}

/* Redis lost its data (restart without persistence): the holder's epoch is
 * written back by its next put instead of being refused for ever, and a
 * later claim still goes above it. */
static void test_lost_epoch_key_is_reestablished(void **st)
{
    struct fx *f = *st;
    struct err e = {0};
    char out[64], args[96];

    assert_int_equal(state_fence(f->old_owner, 2, &e), ERR_OK);
    assert_int_equal(state_fence(f->old_owner, 2, &e), ERR_OK); /* twice: one claim */
    assert_int_equal(put1(f->old_owner, "u", "a", 2, 1), 1);
    assert_int_equal(state_fence(f->old_owner, 2, &e), ERR_OK);
    assert_int_equal(put1(f->old_owner, "u", "b", 2, 2), 1);
    assert_int_equal(state_epoch(f->old_owner, 2), 2);
    snprintf(args, sizeof(args), "DEL '%sepoch:{2}'", f->prefix);
    redis_cli(g_redis.port, args, out, sizeof(out));
    assert_string_equal(out, "1");
    assert_int_equal(put1(f->old_owner, "u", "c", 2, 3), 1);
    snprintf(args, sizeof(args), "GET '%sepoch:{2}'", f->prefix);
    redis_cli(g_redis.port, args, out, sizeof(out));
    assert_string_equal(out, "2");
    assert_int_equal(state_fence(f->new_owner, 2, &e), ERR_OK);
    ping(f->new_owner);
    assert_int_equal(state_epoch(f->new_owner, 2), 3);
    assert_int_equal(put1(f->old_owner, "u", "d", 2, 4), 0);
}

/* One batch (one script call) of the former owner spanning a partition it
 * lost, one it kept and one it never fenced: only the lost partition's
 * puts are refused, wherever they sit in the batch. */
static void test_stale_epoch_inside_a_batch_refuses_only_its_partition(void **st)
{
    struct fx *f = *st;
    struct err e = {0};
    struct state_put puts[6] = {
        {"a", (const unsigned char *)"a@5", 3, 1, 5}, /* kept */
        {"b", (const unsigned char *)"b@6", 3, 2, 6}, /* lost */
        {"c", (const unsigned char *)"c@7", 3, 4, 7}, /* never fenced */
        {"d", (const unsigned char *)"d@8", 3, 2, 8}, /* lost */
        {"a", (const unsigned char *)"a@9", 3, 1, 9}, /* kept, same entity again */
        {"b", (const unsigned char *)"b@9", 3, 1, 9}, /* b on a kept partition */
    };
    int applied[6];
    char out[64], args[96];

    assert_int_equal(state_fence(f->old_owner, 1, &e), ERR_OK);
    assert_int_equal(state_fence(f->old_owner, 2, &e), ERR_OK);
    assert_int_equal(put1(f->old_owner, "b", "b@1", 2, 1), 1);
    assert_int_equal(state_fence(f->new_owner, 2, &e), ERR_OK);
    ping(f->new_owner);
    assert_int_equal(state_put_many(f->old_owner, 6, puts, applied, &e), ERR_OK);
    assert_int_equal(applied[0], 1);
    assert_int_equal(applied[1], 0);
    assert_int_equal(applied[2], 1);
    assert_int_equal(applied[3], 0);
    assert_int_equal(applied[4], 1);
    assert_int_equal(applied[5], 1);
    assert_int_equal(state_fenced(f->old_owner), 2);
    assert_blob(f->new_owner, "a", "a@9", 9);
    assert_blob(f->new_owner, "b", "b@9", 9);
    assert_blob(f->new_owner, "c", "c@7", 7);
    /* d was never written; the lost partition's applied offset stays. */
    snprintf(args, sizeof(args), "EXISTS '%su:{d}'", f->prefix);
    redis_cli(g_redis.port, args, out, sizeof(out));
    assert_string_equal(out, "0");
    snprintf(args, sizeof(args), "GET '%sapplied:{2}'", f->prefix);
    redis_cli(g_redis.port, args, out, sizeof(out));
    assert_string_equal(out, "1");
    snprintf(args, sizeof(args), "GET '%sapplied:{1}'", f->prefix);
    redis_cli(g_redis.port, args, out, sizeof(out));
    assert_string_equal(out, "9");
}

static void test_bad_partitions_refused(void **st)
{
    struct fx *f = *st;
    struct err e = {0};
    struct state *m = state_open_memory();

    assert_int_equal(state_fence(f->old_owner, -1, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "partition -1"));
    assert_int_equal(state_fence(f->old_owner, 70000, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "70000"));
    /* Memory: one process, nothing to fence; accepted, no epoch. */
    assert_non_null(m);
    assert_int_equal(state_fence(m, 4, &e), ERR_OK);
    assert_int_equal(state_epoch(m, 4), 0);
    assert_int_equal(put1(m, "u", "x", 4, 1), 1);
    state_close(m);
}

int main(void)
{
#define T(t) cmocka_unit_test_setup_teardown(t, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_stale_owner_is_refused_after_new_claim),
        T(test_without_fence_late_write_is_applied),
        T(test_fence_is_per_partition_and_reclaimable),
        cmocka_unit_test(test_claim_waits_for_redis),
        T(test_lost_epoch_key_is_reestablished),
        T(test_bad_partitions_refused),
        T(test_stale_epoch_inside_a_batch_refuses_only_its_partition),
    };
#undef T
    return cmocka_run_group_tests_name("fencing", tests, group_setup, group_teardown);
}
