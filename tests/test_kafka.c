/* The delivery contract of common/io/kafka.c on the in-process mock cluster:
 * an offset is committed only past messages that have every ack. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "kafka.h"
#include "log.h"
#include "mockbroker.h"

#define N_MSGS 40

struct fx {
    struct mockbroker *mb;
    struct cfg_kv props[3];
};

static int setup(void **st)
{
    static struct fx f;
    struct err e = {0};

    log_init(LOG_LVL_ERROR, 0, "test");
    memset(&f, 0, sizeof(f));
    f.mb = mockbroker_open(1, &e);
    if (!f.mb || mockbroker_create_topics(f.mb, "in:2,out:2", &e))
        return -1;
    f.props[0] = (struct cfg_kv){"bootstrap.servers", mockbroker_bootstraps(f.mb), "test"};
    f.props[1] = (struct cfg_kv){"session.timeout.ms", "6000", "test"};
    f.props[2] = (struct cfg_kv){"heartbeat.interval.ms", "500", "test"};
    *st = &f;
    return 0;
}

static int teardown(void **st)
{
    struct fx *f = *st;
    mockbroker_close(f->mb);
    return 0;
}

static struct kq *consumer(struct fx *f, const char *group)
{
    static const char *topic = "in";
    struct err e = {0};
    struct kq_opts o = {.group_id = group, .topics = &topic, .n_topics = 1, .props = f->props,
                        .n_props = 3};
    struct kq *q = kq_open(&o, &e);

    if (!q)
        fprintf(stderr, "kq_open: %s\n", e.msg);
    assert_non_null(q);
    return q;
}

static void produce_inputs(struct fx *f)
{
    struct err e = {0};
    struct kq_opts o = {.props = f->props, .n_props = 1};
    struct kq *p = kq_open(&o, &e);
    char key[16], val[16];

    assert_non_null(p);
    for (int i = 0; i < N_MSGS; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(val, sizeof(val), "v%d", i);
        assert_int_equal(kq_produce(p, "in", key, strlen(key), val, strlen(val), NULL, &e), 0);
    }
    assert_int_equal(kq_close(p, 10000, &e), ERR_OK);
}

/* Polls up to n messages (or 15 s), copying their positions. */
static int poll_n(struct kq *q, struct kq_pos *pos, int n)
{
    struct err e = {0};
    int got = 0;

    for (int tries = 0; got < n && tries < 150; tries++) {
        struct kq_msg *m;
        assert_int_equal(kq_poll(q, 100, &m, &e), ERR_OK);
        if (!m)
            continue;
        pos[got++] = m->pos;
        kq_msg_release(m);
    }
    return got;
}

/* Lowest offset re-delivered per partition to a new member of the group. */
static void first_offsets(struct fx *f, const char *group, int64_t first[2], int expect)
{
    struct kq_pos pos[N_MSGS];
    struct kq *q = consumer(f, group);
    int got = poll_n(q, pos, expect);

    first[0] = first[1] = -1;
    for (int i = 0; i < got; i++)
        if (first[pos[i].partition] < 0 || pos[i].offset < first[pos[i].partition])
            first[pos[i].partition] = pos[i].offset;
    assert_int_equal(got, expect);
    kq_close(q, 0, NULL);
}

static void test_offset_committed_only_after_state_and_delivery(void **st)
{
    struct fx *f = *st;
    struct kq_pos pos[N_MSGS];
    struct err e = {0};
    struct kq *q;
    int64_t first[2];
    int full = 0;

    produce_inputs(f);
    q = consumer(f, "g-acks");
    assert_int_equal(poll_n(q, pos, N_MSGS), N_MSGS);
    /* Per partition: the first 5 fully acked; the 6th has only its delivery
     * (no state ack); the rest fully acked. Commit must stop at the 6th, and
     * everything behind it stays in flight (offsets are stored in order). */
    int seen[2] = {0, 0};
    for (int i = 0; i < N_MSGS; i++) {
        int k = seen[pos[i].partition]++;
        assert_int_equal(kq_produce(q, "out", "k", 1, "v", 1, &pos[i], &e), ERR_OK);
        if (k != 5)
            kq_ack(q, &pos[i], KQ_ACK_STATE);
        full += k != 5;
    }
    assert_int_equal(full, N_MSGS - 2);
    for (int i = 0; i < 50 && kq_inflight(q) > N_MSGS - 10; i++)
        assert_int_equal(kq_serve(q, 100, &e), ERR_OK);
    assert_int_equal(kq_inflight(q), N_MSGS - 10);
    assert_int_equal(kq_close(q, 500, &e), ERR_TIMEOUT); /* 2 never acknowledged */
    first_offsets(f, "g-acks", first, N_MSGS - 10);
    assert_int_equal(first[0], 5);
    assert_int_equal(first[1], 5);
}

/* worker.commit_interval_ms: with librdkafka's auto-commit off and a close
 * that commits nothing (a crash, as far as offsets go), the acknowledged
 * prefix was committed anyway by the periodic commit, and not one offset
 * past it: a new member starts at the first unacknowledged message. */
static void test_periodic_commit_covers_acked_prefix_only(void **st)
{
    static const char *topic = "in";
    struct fx *f = *st;
    struct kq_pos pos[N_MSGS];
    struct err e = {0};
    struct cfg_kv props[4] = {f->props[0], f->props[1], f->props[2],
                              {"enable.auto.commit", "false", "test"}};
    struct kq_opts o = {.group_id = "g-periodic", .topics = &topic, .n_topics = 1,
                        .props = props, .n_props = 4, .commit_interval_ms = 100};
    struct kq_stats ks;
    struct kq *q;
    int64_t first[2];
    int seen[2] = {0, 0};

    produce_inputs(f);
    q = kq_open(&o, &e);
    assert_non_null(q);
    assert_int_equal(poll_n(q, pos, N_MSGS), N_MSGS);
    /* Per partition: the first 7 fully acknowledged, the rest only delivered. */
    for (int i = 0; i < N_MSGS; i++) {
        assert_int_equal(kq_produce(q, "out", "k", 1, "v", 1, &pos[i], &e), ERR_OK);
        if (seen[pos[i].partition]++ < 7)
            kq_ack(q, &pos[i], KQ_ACK_STATE);
    }
    for (int i = 0; i < 20; i++) { /* 2 s: deliveries, stores, periodic commits */
        struct kq_msg *m = NULL;
        assert_int_equal(kq_serve(q, 50, &e), ERR_OK);
        assert_int_equal(kq_poll(q, 50, &m, &e), ERR_OK);
        assert_null(m);
    }
    kq_get_stats(q, &ks);
    assert_true(ks.commits >= 1);
    assert_int_equal(kq_inflight(q), N_MSGS - 14);
    kq_close(q, 0, NULL); /* no commit at close */
    first_offsets(f, "g-periodic", first, N_MSGS - 14);
    assert_int_equal(first[0], 7);
    assert_int_equal(first[1], 7);
}

static void test_nothing_acked_means_everything_redelivered(void **st)
{
    struct fx *f = *st;
    struct kq_pos pos[N_MSGS];
    struct err e = {0};
    struct kq *q;
    int64_t first[2];

    produce_inputs(f);
    q = consumer(f, "g-none");
    assert_int_equal(poll_n(q, pos, N_MSGS), N_MSGS);
    for (int i = 0; i < N_MSGS; i++)
        kq_ack(q, &pos[i], KQ_ACK_STATE); /* state done, but nothing delivered */
    kq_close(q, 200, &e);
    first_offsets(f, "g-none", first, N_MSGS);
    assert_int_equal(first[0], 0);
    assert_int_equal(first[1], 0);
}

/* Paused past max.poll.interval.ms while polling: no message, no rebalance
 * (the member stayed in the group); resumed: the rest, no gap, no repeat. */
static void test_pause_keeps_membership_and_loses_nothing(void **st)
{
    struct fx *f = *st;
    static const char *topic = "in";
    struct cfg_kv props[4] = {f->props[0], f->props[1], f->props[2],
                              {"max.poll.interval.ms", "6000", "test"}};
    struct kq_opts o = {.group_id = "g-pause", .topics = &topic, .n_topics = 1,
                        .props = props, .n_props = 4};
    struct kq_pos pos[N_MSGS];
    struct kq_stats s0, s1;
    struct err e = {0};
    struct kq *q;
    int seen[2][N_MSGS] = {{0}}, got, rest;

    produce_inputs(f);
    q = kq_open(&o, &e);
    assert_non_null(q);
    got = poll_n(q, pos, 10);
    assert_int_equal(got, 10);
    kq_get_stats(q, &s0);
    assert_int_equal(kq_pause(q, 1, &e), ERR_OK);
    assert_true(kq_paused(q));
    for (int i = 0; i < 80; i++) { /* 8 s > max.poll.interval.ms */
        struct kq_msg *m;
        assert_int_equal(kq_poll(q, 100, &m, &e), ERR_OK);
        assert_null(m);
    }
    kq_get_stats(q, &s1);
    assert_int_equal(s1.rebalances, s0.rebalances);
    assert_int_equal(kq_pause(q, 0, &e), ERR_OK);
    rest = poll_n(q, pos + got, N_MSGS - got);
    assert_int_equal(rest, N_MSGS - got);
    for (int i = 0; i < N_MSGS; i++)
        seen[pos[i].partition][pos[i].offset]++;
    for (int p = 0; p < 2; p++)
        for (int k = 0; k < N_MSGS; k++)
            assert_true(seen[p][k] <= 1);
    kq_get_stats(q, &s1);
    assert_int_equal(s1.rebalances, s0.rebalances);
    kq_close(q, 0, NULL);
}

static void test_bad_kafka_property_names_its_origin(void **st)
{
    struct fx *f = *st;
    struct err e = {0};
    struct cfg_kv bad[2] = {f->props[0], {"no.such.property", "1", "streamml.conf:7"}};
    struct kq_opts o = {.props = bad, .n_props = 2};

    assert_null(kq_open(&o, &e));
    assert_int_equal(e.code, ERR_CONFIG);
    assert_non_null(strstr(e.msg, "no.such.property"));
    assert_non_null(strstr(e.msg, "streamml.conf:7"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_periodic_commit_covers_acked_prefix_only, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_offset_committed_only_after_state_and_delivery,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_nothing_acked_means_everything_redelivered, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pause_keeps_membership_and_loses_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_kafka_property_names_its_origin, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("kafka", tests, NULL, NULL);
}
