/* tests/test_replay.c: common/offline/replay.c and `streamml replay`.
 *
 * Bounds parsing; the k-way merge over container files (event-time order,
 * ties by file then record, nothing re-ordered inside a file); invalid
 * records reported, not fatal; the step against a hand run of the feature
 * module; duplicates; topic ranges on the embedded broker (offsets, times
 * through the scan fallback, unknown partitions, stopping at the range end
 * while more data follows); Redis clean-up of a run's prefix only; the
 * command's usage errors, CSV output and byte-identical reruns. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <avro.h>
#include <hiredis.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "codec.h"
#include "features.h"
#include "replay.h"
#include "stack.h"
#include "state.h"
#include "txn.h"

struct fx {
    char dir[64];
    struct codec *cd;
};

static int setup(void **st)
{
    struct fx *f = calloc(1, sizeof(*f));
    struct err e = {0};

    snprintf(f->dir, sizeof(f->dir), "/tmp/streamml-replay-XXXXXX");
    if (!mkdtemp(f->dir) || !(f->cd = codec_open("schemas", &e)))
        return -1;
    *st = f;
    return 0;
}

static int teardown(void **st)
{
    struct fx *f = *st;
    char cmd[128];

    codec_close(f->cd);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", f->dir);
    free(f);
    return 0;
}

static void ev_make(struct txn_event *ev, const char *id, const char *user, int64_t t,
                    double amount)
{
    event_txn_init(ev);
    snprintf(ev->event_id, sizeof(ev->event_id), "%s", id);
    snprintf(ev->user_id, sizeof(ev->user_id), "%s", user);
    ev->event_time_ms = t;
    ev->amount = amount;
    ev->income = 100;
    ev->age = 30;
}

/* ---- bounds ---- */

static void test_bounds_parse_iso_ms_and_offsets(void **st)
{
    struct rp_bound b;
    struct err e = {0};

    (void)st;
    assert_int_equal(rp_parse_bound("2024-03-01T12:00:00Z", &b, &e), ERR_OK);
    assert_int_equal(b.kind, RP_TIME);
    assert_true(b.v == 1709294400000LL);
    assert_int_equal(rp_parse_bound("2024-03-01T14:00:00+02:00", &b, &e), ERR_OK);
    assert_true(b.v == 1709294400000LL);
    assert_int_equal(rp_parse_bound("2024-03-01T11:30:00-00:30", &b, &e), ERR_OK);
    assert_true(b.v == 1709294400000LL);
    assert_int_equal(rp_parse_bound("2024-03-01T12:00:00.25Z", &b, &e), ERR_OK);
    assert_true(b.v == 1709294400250LL);
    assert_int_equal(rp_parse_bound("2024-03-01T12:00", &b, &e), ERR_OK);
    assert_true(b.v == 1709294400000LL);
    assert_int_equal(rp_parse_bound("2024-03-01", &b, &e), ERR_OK);
    assert_true(b.v == 1709251200000LL);
    assert_int_equal(rp_parse_bound("1709294400000", &b, &e), ERR_OK);
    assert_true(b.kind == RP_TIME && b.v == 1709294400000LL);
    assert_int_equal(rp_parse_bound("offset:42", &b, &e), ERR_OK);
    assert_true(b.kind == RP_OFFSET && b.v == 42);
    assert_int_equal(rp_parse_bound(NULL, &b, &e), ERR_OK);
    assert_int_equal(b.kind, RP_EDGE);
}

static void test_bad_bounds_are_config_errors_naming_the_value(void **st)
{
    static const char *const bad[] = {"2024-13-01",
                                      "2024-02-30x",
                                      "yesterday",
                                      "2024-03-01T25:00:00Z",
                                      "offset:-1",
                                      "offset:",
                                      "-5",
                                      "2024-03-01T12:00:00+2",
                                      "2024-03-01T12:00:00.Z"};
    struct rp_bound b;

    (void)st;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct err e = {0};
        assert_int_equal(rp_parse_bound(bad[i], &b, &e), ERR_CONFIG);
        assert_non_null(strstr(e.msg, bad[i]));
    }
}

/* ---- merge over files ---- */

static void write_file(struct fx *f, const char *name, const struct txn_event *evs, size_t n,
                       char *path)
{
    struct err e = {0};
    struct codec_file *w;

    sprintf(path, "%s/%s", f->dir, name);
    w = codec_file_open_write(f->cd, path, &e);
    assert_non_null(w);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(codec_file_write_txn(w, &evs[i], &e), ERR_OK);
    assert_int_equal(codec_file_records(w), (long)n);
    assert_int_equal(codec_file_close(w, &e), ERR_OK);
}

static void test_files_merge_by_event_time_with_deterministic_ties(void **st)
{
    struct fx *f = *st;
    struct txn_event a[4], b[3];
    char pa[128], pb[128];
    const char *paths[2] = {pa, pb};
    /* File a holds an out-of-order record (a3 at t=15 after a2 at t=40):
     * it stays after a2. Ties at t=20 and t=40: file a first. */
    static const char *const want[] = {"b0", "a0", "a1", "b1", "a2", "a3", "b2"};
    struct err e = {0};
    const struct rp_rec *r;
    struct rp_input *in;
    size_t k = 0;

    ev_make(&a[0], "a0", "x", 10, 1);
    ev_make(&a[1], "a1", "x", 20, 1);
    ev_make(&a[2], "a2", "x", 40, 1);
    ev_make(&a[3], "a3", "x", 15, 1);
    ev_make(&b[0], "b0", "y", 5, 1);
    ev_make(&b[1], "b1", "y", 20, 1);
    ev_make(&b[2], "b2", "y", 40, 1);
    for (size_t i = 0; i < 4; i++)
        a[i].event_time_ms += 1700000000000LL;
    for (size_t i = 0; i < 3; i++)
        b[i].event_time_ms += 1700000000000LL;
    write_file(f, "a.avro", a, 4, pa);
    write_file(f, "b.avro", b, 3, pb);
    in = rp_input_files(f->cd, paths, 2, &e);
    assert_non_null(in);
    while (rp_input_next(in, &r, &e) == 1) {
        assert_true(k < 7);
        assert_string_equal(r->ev.event_id, want[k]);
        assert_int_equal(r->rc, ERR_OK);
        assert_int_equal(r->partition, want[k][0] == 'a' ? 0 : 1);
        assert_int_equal(r->offset, want[k][1] - '0');
        k++;
    }
    assert_int_equal(k, 7);
    assert_int_equal(rp_input_next(in, &r, &e), 0); /* stays at the end */
    rp_input_close(in);
}

static void test_invalid_record_is_reported_and_the_rest_flows(void **st)
{
    struct fx *f = *st;
    struct txn_event a[3];
    char pa[128];
    const char *paths[1] = {pa};
    struct err e = {0};
    const struct rp_rec *r;
    struct rp_input *in;
    int n = 0, bad = 0;

    ev_make(&a[0], "a0", "x", 1700000000000LL, 1);
    ev_make(&a[1], "a1", "x", 1700000001000LL, -5); /* negative amount */
    ev_make(&a[2], "a2", "x", 1700000002000LL, 1);
    write_file(f, "bad.avro", a, 3, pa);
    in = rp_input_files(f->cd, paths, 1, &e);
    assert_non_null(in);
    while (rp_input_next(in, &r, &e) == 1) {
        n++;
        if (r->rc != ERR_OK) {
            bad++;
            assert_string_equal(r->ev.event_id, "a1");
            assert_non_null(strstr(r->err.msg, "amount"));
        }
    }
    assert_int_equal(n, 3);
    assert_int_equal(bad, 1);
    rp_input_close(in);
}

static void test_bad_files_fail_with_the_path_named(void **st)
{
    struct fx *f = *st;
    char p[128], junk[128];
    const char *paths[1] = {p};
    struct err e = {0};
    FILE *fp;
    avro_schema_t other;
    avro_file_writer_t w;

    snprintf(p, sizeof(p), "%s/missing.avro", f->dir);
    assert_null(rp_input_files(f->cd, paths, 1, &e));
    assert_non_null(strstr(e.msg, "missing.avro"));

    snprintf(junk, sizeof(junk), "%s/junk.avro", f->dir);
    fp = fopen(junk, "w");
    fputs("not avro at all\n", fp);
    fclose(fp);
    paths[0] = junk;
    err_clear(&e);
    assert_null(rp_input_files(f->cd, paths, 1, &e));
    assert_int_equal(e.code, ERR_CONFIG);
    assert_non_null(strstr(e.msg, "not an Avro container file"));

    /* A container file of another schema. */
    snprintf(p, sizeof(p), "%s/other.avro", f->dir);
    assert_int_equal(avro_schema_from_json_literal(
                         "{\"type\":\"record\",\"name\":\"x\",\"fields\":[{\"name\":\"a\","
                         "\"type\":\"long\"}]}",
                         &other),
                     0);
    assert_int_equal(avro_file_writer_create(p, other, &w), 0);
    avro_file_writer_close(w);
    avro_schema_decref(other);
    paths[0] = p;
    err_clear(&e);
    assert_null(rp_input_files(f->cd, paths, 1, &e));
    assert_non_null(strstr(e.msg, "another schema"));
}

/* Several blocks, the last one cut short: the records of the intact blocks
 * come out, then an I/O error naming the file. (A file cut inside its first
 * block already fails to open; avro-c leaks a little on that path, so it is
 * not exercised under the leak checker.) */
static void test_truncated_file_is_an_io_error_not_a_crash(void **st)
{
    struct fx *f = *st;
    enum { N = 20000 };
    struct txn_event *a = calloc(N, sizeof(*a));
    char p[128], cmd[300];
    const char *paths[1] = {p};
    struct err e = {0};
    const struct rp_rec *r;
    struct rp_input *in;
    int rc, n = 0;

    assert_non_null(a);
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof(id), "t%d", i);
        ev_make(&a[i], id, "x", 1700000000000LL + i, (i * 7919) % 10007);
    }
    write_file(f, "trunc.avro", a, N, p);
    free(a);
    snprintf(cmd, sizeof(cmd), "truncate -s -40 '%s'", p);
    assert_int_equal(system(cmd), 0);
    in = rp_input_files(f->cd, paths, 1, &e);
    if (!in)
        fail_msg("%s", e.msg);
    while ((rc = rp_input_next(in, &r, &e)) == 1)
        n++;
    assert_int_equal(rc, ERR_IO);
    assert_true(n > 0 && n < N);
    assert_non_null(strstr(e.msg, "trunc.avro"));
    rp_input_close(in);
}

/* ---- the step ---- */

static void test_step_equals_the_feature_module_and_skips_duplicates(void **st)
{
    struct fx *f = *st;
    struct state *s = state_open_memory();
    struct err e = {0};
    struct rp_engine *g = rp_engine_open(s, NULL, &e), *own = rp_engine_open(NULL, NULL, &e);
    struct feat_state ref;
    struct rp_rec rec;
    float x[FEAT_TXN_DIM], want[FEAT_TXN_DIM], x2[FEAT_TXN_DIM];
    static const int64_t t[] = {0, 60000, 30000, 7200000, 86400000LL * 31};

    (void)f;
    assert_non_null(g);
    feat_state_init(&ref);
    memset(&rec, 0, sizeof(rec));
    rec.source = "t";
    for (int i = 0; i < 5; i++) {
        char id[8];
        snprintf(id, sizeof(id), "s%d", i);
        ev_make(&rec.ev, id, "u", 1700000000000LL + t[i], 100 * (i + 1));
        rec.partition = 0;
        rec.offset = i;
        assert_int_equal(rp_engine_step(g, &rec, x, NULL, &e), 1);
        assert_int_equal(rp_engine_step(own, &rec, x2, NULL, &e), 1);
        feat_txn_build(&rec.ev, &ref, want);
        feat_state_update(&ref, &rec.ev, &ref);
        assert_int_equal(feat_hash(x, FEAT_TXN_DIM), feat_hash(want, FEAT_TXN_DIM));
        assert_int_equal(feat_hash(x2, FEAT_TXN_DIM), feat_hash(want, FEAT_TXN_DIM));
    }
    /* The same (partition, offset) again: features from the state that
     * already holds it, and the state is not advanced a second time. */
    assert_int_equal(rp_engine_step(g, &rec, x, NULL, &e), 0);
    assert_int_equal(rp_engine_step(own, &rec, x2, NULL, &e), 0);
    feat_txn_build(&rec.ev, &ref, want);
    assert_int_equal(feat_hash(x, FEAT_TXN_DIM), feat_hash(want, FEAT_TXN_DIM));
    assert_int_equal(feat_hash(x2, FEAT_TXN_DIM), feat_hash(want, FEAT_TXN_DIM));
    /* Many users: the engine's table grows and keeps every state apart. */
    for (int i = 0; i < 10000; i++) {
        char user[16];
        snprintf(user, sizeof(user), "m%d", i);
        ev_make(&rec.ev, "m", user, 1700000000000LL + i, 1);
        rec.offset = 100 + i;
        assert_int_equal(rp_engine_step(own, &rec, x2, NULL, &e), 1);
    }
    for (int i = 0; i < 10000; i += 997) {
        char user[16];
        snprintf(user, sizeof(user), "m%d", i);
        ev_make(&rec.ev, "m", user, 1700000000000LL + i + 60000, 1);
        rec.offset = 100 + i; /* same position again: a duplicate */
        assert_int_equal(rp_engine_step(own, &rec, x2, NULL, &e), 0);
    }
    rp_engine_close(own);
    rp_engine_close(g);
    state_close(s);
}

/* ---- topic ranges ---- */

/* n messages per partition of topic with timestamps base + 1000 * i. */
static void produce_timed(const char *bootstrap, const char *topic, int parts, int n, int64_t base)
{
    char es[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    struct txn_event ev;
    struct buf out;
    struct err e = {0};
    struct codec *cd = codec_open("schemas", &e);
    rd_kafka_t *rk;

    assert_non_null(cd);
    buf_init(&out, 0);
    assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, es, sizeof(es)), 0);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, es, sizeof(es));
    assert_non_null(rk);
    for (int p = 0; p < parts; p++)
        for (int i = 0; i < n; i++) {
            char id[32], user[16];
            snprintf(id, sizeof(id), "p%d-%d", p, i);
            snprintf(user, sizeof(user), "u%d", p);
            ev_make(&ev, id, user, base + 1000 * i, 10 + i);
            assert_int_equal(codec_encode_txn(cd, &ev, &out, &e), ERR_OK);
            assert_int_equal(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(p),
                                               RD_KAFKA_V_VALUE(out.data, out.len),
                                               RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                               RD_KAFKA_V_TIMESTAMP(base + 1000 * i),
                                               RD_KAFKA_V_END),
                             0);
        }
    assert_int_equal(rd_kafka_flush(rk, 10000), 0);
    rd_kafka_destroy(rk);
    buf_free(&out);
    codec_close(cd);
}

static int count_lines(const char *path, const char *needle)
{
    char line[8192];
    int n = 0;
    FILE *fp = fopen(path, "r");

    assert_non_null(fp);
    while (fgets(line, sizeof(line), fp))
        n += strstr(line, needle) != NULL;
    fclose(fp);
    return n;
}

/* `replay --output-topic`: the predictions land on the backtest topic; and
 * the replay's group id holds no committed offset afterwards. */
static void check_backtest_topic_and_no_commit(struct fx *f, const char *bootstrap)
{
    char cmd[1024], out[128], es[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(3);
    rd_kafka_t *rk;

    snprintf(out, sizeof(out), "%s/bt.jsonl", f->dir);
    snprintf(cmd, sizeof(cmd),
             "%s replay -b %s -t hist --from offset:5 --to offset:15 --output-topic bt -q "
             "--log-level error 2>/dev/null && %s consume -b %s -t bt -f -e --log-level error "
             "> %s 2>/dev/null",
             test_bin("streamml"), bootstrap, test_bin("streamml"), bootstrap, out);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(count_lines(out, "\"src_topic\":\"hist\""), 30);

    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, es, sizeof(es));
    rd_kafka_conf_set(conf, "group.id", "streamml-replay-assign-only", es, sizeof(es));
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, es, sizeof(es));
    assert_non_null(rk);
    for (int p = 0; p < 3; p++)
        rd_kafka_topic_partition_list_add(l, "hist", p);
    assert_int_equal(rd_kafka_committed(rk, l, 10000), 0);
    for (int p = 0; p < 3; p++)
        assert_true(l->elems[p].offset < 0); /* RD_KAFKA_OFFSET_INVALID: never committed */
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

/* Bytes that are not a framed event, between two events: reported with the
 * decoder's reason, the events around it flow. */
static void check_garbage_is_reported_not_fatal(struct fx *f, const char *bootstrap)
{
    char es[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    struct cfg_kv kv = {"bootstrap.servers", bootstrap, "test"};
    struct rp_bound edge = {RP_EDGE, 0};
    struct txn_event ev;
    struct buf out;
    struct err e = {0};
    const struct rp_rec *r;
    struct rp_topic *t;
    struct rp_input *in;
    rd_kafka_t *rk;
    int n = 0, bad = 0;

    buf_init(&out, 0);
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, es, sizeof(es));
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, es, sizeof(es));
    assert_non_null(rk);
    for (int i = 0; i < 3; i++) {
        static char garbage[] = "garbage";
        void *val = garbage;
        size_t len = 7;
        ev_make(&ev, i == 0 ? "g0" : "g2", "u", 1700000000000LL + i, 5);
        assert_int_equal(codec_encode_txn(f->cd, &ev, &out, &e), ERR_OK);
        if (i != 1) {
            val = out.data;
            len = out.len;
        }
        assert_int_equal(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("junk"), RD_KAFKA_V_PARTITION(0),
                                           RD_KAFKA_V_VALUE(val, len),
                                           RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                           RD_KAFKA_V_END),
                         0);
    }
    assert_int_equal(rd_kafka_flush(rk, 10000), 0);
    rd_kafka_destroy(rk);
    buf_free(&out);
    t = rp_topic_open(&kv, 1, "junk", &edge, &edge, NULL, 0, 0, &e);
    assert_non_null(t);
    in = rp_input_topic(f->cd, t, &e);
    assert_non_null(in);
    while (rp_input_next(in, &r, &e) == 1) {
        n++;
        if (r->rc != ERR_OK) {
            bad++;
            assert_int_equal(r->offset, 1);
            assert_non_null(strstr(r->err.msg, "magic byte"));
        }
    }
    assert_int_equal(n, 3);
    assert_int_equal(bad, 1);
    rp_input_close(in);
}

static void test_topic_ranges_by_offset_and_time_stop_at_the_end(void **st)
{
    struct fx *f = *st;
    struct test_broker b;
    struct cfg_kv kv = {"bootstrap.servers", NULL, "test"};
    struct rp_bound from, to;
    struct err e = {0};
    const struct rp_part *p;
    const struct rp_rec *r;
    struct rp_topic *t;
    struct rp_input *in;
    int32_t only[] = {1};
    int64_t last_time = 0;
    int n = 0;

    assert_int_equal(test_broker_start(&b, "hist:3,bt:2,junk:1"), 0);
    kv.value = b.bootstrap;
    produce_timed(b.bootstrap, "hist", 3, 20, 1700000000000LL);

    /* Offsets 5..15 of every partition. */
    rp_parse_bound("offset:5", &from, &e);
    rp_parse_bound("offset:15", &to, &e);
    t = rp_topic_open(&kv, 1, "hist", &from, &to, NULL, 0, 0, &e);
    assert_non_null(t);
    assert_int_equal(rp_topic_parts(t, &p), 3);
    assert_true(p[0].start == 5 && p[0].end == 15 && p[2].high == 20);
    assert_int_equal(rp_topic_total(t), 30);
    in = rp_input_topic(f->cd, t, &e);
    if (!in)
        fail_msg("%s", e.msg);
    while (rp_input_next(in, &r, &e) == 1) {
        assert_true(r->offset >= 5 && r->offset < 15);
        assert_true(r->ev.event_time_ms >= last_time); /* merged by event time */
        last_time = r->ev.event_time_ms;
        n++;
    }
    assert_int_equal(n, 30);
    rp_input_close(in);

    /* Times: [t0 + 3 s, t0 + 7 s) = offsets 3..6, on partition 1 only. */
    rp_parse_bound("1700000003000", &from, &e);
    rp_parse_bound("2023-11-14T22:13:27Z", &to, &e); /* = 1700000007000 */
    assert_true(to.v == 1700000007000LL);
    t = rp_topic_open(&kv, 1, "hist", &from, &to, only, 1, 1, &e);
    assert_non_null(t);
    assert_int_equal(rp_topic_parts(t, &p), 1);
    assert_int_equal(p[0].partition, 1);
    assert_true(p[0].start == 3 && p[0].end == 7);
    rp_topic_close(t);

    /* After every message: an empty range, not an error. */
    rp_parse_bound("2030-01-01", &from, &e);
    rp_parse_bound(NULL, &to, &e);
    t = rp_topic_open(&kv, 1, "hist", &from, &to, NULL, 0, 1, &e);
    assert_non_null(t);
    assert_int_equal(rp_topic_total(t), 0);
    rp_topic_close(t);

    only[0] = 7;
    err_clear(&e);
    assert_null(rp_topic_open(&kv, 1, "hist", &from, &to, only, 1, 1, &e));
    assert_int_equal(e.code, ERR_CONFIG);
    assert_non_null(strstr(e.msg, "no partition 7"));

    check_backtest_topic_and_no_commit(f, b.bootstrap);
    check_garbage_is_reported_not_fatal(f, b.bootstrap);
    test_broker_stop(&b);
}

/* ---- Redis clean-up ---- */

static void test_drop_prefix_removes_only_the_runs_keys(void **st)
{
    struct test_redis rs;
    struct err e = {0};
    redisContext *c;
    redisReply *rep;
    long deleted = 0;
    struct state_redis_opts o = {.host = "127.0.0.1", .timeout_ms = 2000};

    (void)st;
    assert_int_equal(test_redis_start(&rs), 0);
    o.port = rs.port;
    c = redisConnect("127.0.0.1", rs.port);
    assert_non_null(c);
    for (int i = 0; i < 2500; i++)
        freeReplyObject(redisCommand(c, "SET replay:r*1:u:{%d} x", i));
    freeReplyObject(redisCommand(c, "SET replay:r21:u:{1} keep")); /* glob would match */
    freeReplyObject(redisCommand(c, "SET u:{1} production"));
    o.prefix = "replay:r*1:";
    assert_int_equal(rp_redis_drop_prefix(&o, &deleted, &e), ERR_OK);
    assert_int_equal(deleted, 2500);
    rep = redisCommand(c, "DBSIZE");
    assert_int_equal(rep->integer, 2);
    freeReplyObject(rep);
    o.prefix = "";
    assert_int_equal(rp_redis_drop_prefix(&o, &deleted, &e), ERR_CONFIG);
    redisFree(c);
    test_redis_stop(&rs);
}

/* ---- the command ---- */

static int run_cmd(const char *args, const char *out)
{
    char cmd[1024];
    int rc;

    snprintf(cmd, sizeof(cmd), "%s replay %s > '%s' 2>&1", test_bin("streamml"), args, out);
    rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int grep_file(const char *path, const char *needle)
{
    char line[4096];
    FILE *f = fopen(path, "r");
    int found = 0;

    assert_non_null(f);
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

static void test_command_usage_csv_and_identical_reruns(void **st)
{
    struct fx *f = *st;
    struct txn_event a[50];
    char pa[128], args[512], log[128], o1[128], o2[128], cmd[400];

    snprintf(log, sizeof(log), "%s/log", f->dir);
    assert_int_equal(run_cmd("--from yesterday --dry-run -b 127.0.0.1:1", log), 2);
    assert_true(grep_file(log, "--from"));
    assert_int_equal(run_cmd("--avro-file x.avro --topic t", log), 2);
    assert_int_equal(run_cmd("--state disk", log), 2);
    assert_int_equal(run_cmd("--partitions 1,x", log), 2);
    assert_int_equal(run_cmd("--avro-file /nonexistent.avro -o /dev/null", log), 2);
    assert_true(grep_file(log, "/nonexistent.avro"));

    for (int i = 0; i < 50; i++) {
        char id[16], user[16];
        snprintf(id, sizeof(id), "c%d", i);
        snprintf(user, sizeof(user), "u%d", i % 7);
        ev_make(&a[i], id, user, 1700000000000LL + 60000LL * (i % 13) * i, 50 + i);
    }
    a[20].amount = NAN;                                              /* missing: a NaN feature */
    snprintf(a[3].event_id, sizeof(a[3].event_id), "q\"b\\s\x01,x"); /* JSON and CSV escapes */
    write_file(f, "cmd.avro", a, 50, pa);
    snprintf(o1, sizeof(o1), "%s/o1.csv", f->dir);
    snprintf(o2, sizeof(o2), "%s/o2.csv", f->dir);
    snprintf(args, sizeof(args), "--avro-file %s -o %s --features", pa, o1);
    assert_int_equal(run_cmd(args, log), 0);
    assert_true(grep_file(log, "replay: 50 predictions"));
    assert_true(grep_file(o1, "event_id,user_id,event_time,src_topic,src_partition"));
    assert_true(grep_file(o1, ",debt_to_income"));
    snprintf(args, sizeof(args), "--avro-file %s -o %s --features", pa, o2);
    assert_int_equal(run_cmd(args, log), 0);
    snprintf(cmd, sizeof(cmd), "cmp -s %s %s", o1, o2);
    assert_int_equal(system(cmd), 0);
    assert_true(grep_file(o1, "\"q\"\"b\\s\x01,x\","));

    /* A run that fails half way (a corrupt last block) leaves no output. */
    {
        enum { N = 20000 };
        struct txn_event *big = calloc(N, sizeof(*big));
        char pb[128], o3[160];
        assert_non_null(big);
        for (int i = 0; i < N; i++) {
            char id[16];
            snprintf(id, sizeof(id), "b%d", i);
            ev_make(&big[i], id, "u", 1700000000000LL + i, (i * 7919) % 10007);
        }
        write_file(f, "cut.avro", big, N, pb);
        free(big);
        snprintf(cmd, sizeof(cmd), "truncate -s -40 '%s'", pb);
        assert_int_equal(system(cmd), 0);
        snprintf(o3, sizeof(o3), "%s/cut.jsonl", f->dir);
        snprintf(args, sizeof(args), "--avro-file %s -o %s", pb, o3);
        assert_int_equal(run_cmd(args, log), 1);
        assert_true(grep_file(log, "incomplete output removed"));
        assert_int_equal(access(o3, F_OK), -1);
        strcat(o3, ".partial");
        assert_int_equal(access(o3, F_OK), -1);
    }

    /* JSON lines: every line parses and the odd id comes back intact. */
    snprintf(o2, sizeof(o2), "%s/o.jsonl", f->dir);
    snprintf(args, sizeof(args), "--avro-file %s -o %s", pa, o2);
    assert_int_equal(run_cmd(args, log), 0);
    {
        FILE *fp = fopen(o2, "r");
        char line[8192];
        int n = 0, odd = 0;
        assert_non_null(fp);
        while (fgets(line, sizeof(line), fp)) {
            json_error_t je;
            json_t *j = json_loads(line, 0, &je);
            assert_non_null(j);
            odd += strcmp(json_string_value(json_object_get(j, "event_id")), "q\"b\\s\x01,x") == 0;
            json_decref(j);
            n++;
        }
        fclose(fp);
        assert_int_equal(n, 50);
        assert_int_equal(odd, 1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounds_parse_iso_ms_and_offsets),
        cmocka_unit_test(test_bad_bounds_are_config_errors_naming_the_value),
        cmocka_unit_test(test_files_merge_by_event_time_with_deterministic_ties),
        cmocka_unit_test(test_invalid_record_is_reported_and_the_rest_flows),
        cmocka_unit_test(test_bad_files_fail_with_the_path_named),
        cmocka_unit_test(test_truncated_file_is_an_io_error_not_a_crash),
        cmocka_unit_test(test_step_equals_the_feature_module_and_skips_duplicates),
        cmocka_unit_test(test_topic_ranges_by_offset_and_time_stop_at_the_end),
        cmocka_unit_test(test_drop_prefix_removes_only_the_runs_keys),
        cmocka_unit_test(test_command_usage_csv_and_identical_reruns),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
