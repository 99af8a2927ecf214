/* tests/test_state.c: the state store (common/state*.c).
 *
 * One behaviour suite run against both backends: the memory one, and Redis
 * through a real redis-server started by the group setup (no mock). The
 * Redis-only behaviours (TTL, prefixes, the applied-offset key, AUTH, a
 * server killed and restarted) follow. Keys are inspected with redis-cli so
 * the test, like the workers, sees our headers only.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "features.h"
#include "stack.h"
#include "state.h"

#define BATCH 1000

static struct test_redis g_redis; /* the group's server */
static int g_prefix_seq;          /* each Redis test gets its own key prefix */

struct fx {
    struct state *s;
    int redis;
    char prefix[32];
    struct state_blob *blobs; /* BATCH slots: 4 KiB each, off the stack */
};

static struct state_redis_opts opts_for(const struct test_redis *r, const char *prefix)
{
    return (struct state_redis_opts){
        .host = "127.0.0.1", .port = r->port, .prefix = prefix, .timeout_ms = 2000};
}

static struct fx *fx_new(void)
{
    struct fx *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    f->blobs = calloc(BATCH, sizeof(*f->blobs));
    assert_non_null(f->blobs);
    return f;
}

static int setup_memory(void **state)
{
    struct fx *f = fx_new();

    f->s = state_open_memory();
    *state = f;
    return f->s ? 0 : -1;
}

static int setup_redis(void **state)
{
    struct fx *f = fx_new();
    struct err e = {0};
    struct state_redis_opts o;

    f->redis = 1;
    snprintf(f->prefix, sizeof(f->prefix), "t%d:", ++g_prefix_seq);
    o = opts_for(&g_redis, f->prefix);
    f->s = state_open_redis(&o, &e);
    if (!f->s)
        fprintf(stderr, "state_open_redis: %s\n", e.msg);
    *state = f;
    return f->s ? 0 : -1;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    state_close(f->s);
    free(f->blobs);
    free(f);
    return 0;
}

static int group_setup(void **state)
{
    (void)state;
    return test_redis_start(&g_redis);
}

static int group_teardown(void **state)
{
    (void)state;
    test_redis_stop(&g_redis);
    return 0;
}

/* First line of `redis-cli -p port ARGS` (ARGS already shell-quoted). */
static void cli(int port, const char *args, char *out, size_t cap)
{
    char cmd[512];
    FILE *p;

    snprintf(cmd, sizeof(cmd), "redis-cli -p %d %s 2>&1", port, args);
    p = popen(cmd, "r");
    assert_non_null(p);
    out[0] = '\0';
    if (!fgets(out, (int)cap, p))
        out[0] = '\0';
    out[strcspn(out, "\r\n")] = '\0';
    pclose(p);
}

static int put1(struct state *s, const char *ent, const char *blob, int32_t p, int64_t o,
                struct err *e)
{
    struct state_put put = {ent, (const unsigned char *)blob, strlen(blob), p, o};
    int applied = -1, rc = state_put_many(s, 1, &put, &applied, e);

    return rc ? rc : applied;
}

static void assert_blob(struct state *s, const char *ent, const char *want, int32_t p, int64_t o)
{
    struct state_blob *b = calloc(1, sizeof(*b));
    struct err e = {0};

    assert_non_null(b);
    assert_int_equal(state_get_many(s, 1, &ent, b, &e), ERR_OK);
    assert_int_equal(b->len, strlen(want));
    assert_memory_equal(b->data, want, b->len);
    assert_int_equal(b->partition, p);
    assert_int_equal(b->offset, o);
    free(b);
}

/* ---- both backends ---- */

static void test_get_of_absent_entity_is_empty(void **state)
{
    struct fx *f = *state;
    const char *ent = "nobody";
    struct err e = {0};

    f->blobs[0].len = 99;
    assert_int_equal(state_get_many(f->s, 1, &ent, f->blobs, &e), ERR_OK);
    assert_int_equal(f->blobs[0].len, 0);
    assert_int_equal(f->blobs[0].partition, -1);
    assert_int_equal(f->blobs[0].offset, -1);
}

static void test_put_then_get_returns_blob_partition_offset(void **state)
{
    struct fx *f = *state;
    struct err e = {0};

    assert_int_equal(put1(f->s, "u1", "hello", 3, 42, &e), 1);
    assert_blob(f->s, "u1", "hello", 3, 42);
}

static void test_put_with_same_offset_is_skipped(void **state)
{
    struct fx *f = *state;
    struct err e = {0};

    assert_int_equal(put1(f->s, "u1", "first", 0, 5, &e), 1);
    assert_int_equal(put1(f->s, "u1", "second", 0, 5, &e), 0);
    assert_blob(f->s, "u1", "first", 0, 5);
}

static void test_put_with_older_offset_is_skipped(void **state)
{
    struct fx *f = *state;
    struct err e = {0};

    assert_int_equal(put1(f->s, "u1", "first", 0, 5, &e), 1);
    assert_int_equal(put1(f->s, "u1", "older", 0, 4, &e), 0);
    assert_blob(f->s, "u1", "first", 0, 5);
}

static void test_put_with_newer_offset_applies(void **state)
{
    struct fx *f = *state;
    struct err e = {0};

    assert_int_equal(put1(f->s, "u1", "first", 0, 5, &e), 1);
    assert_int_equal(put1(f->s, "u1", "newer", 0, 6, &e), 1);
    assert_blob(f->s, "u1", "newer", 0, 6);
}

/* After a repartition another partition's offsets are not comparable. */
static void test_put_from_other_partition_applies(void **state)
{
    struct fx *f = *state;
    struct err e = {0};

    assert_int_equal(put1(f->s, "u1", "first", 0, 5, &e), 1);
    assert_int_equal(put1(f->s, "u1", "moved", 1, 2, &e), 1);
    assert_blob(f->s, "u1", "moved", 1, 2);
}

/* The worker's read-update-write of one event, done twice (a redelivery):
 * the stored feature state holds the event once. */
static void apply_event(struct state *s, const struct txn_event *ev, int64_t offset, int *applied)
{
    struct state_blob *b = calloc(1, sizeof(*b));
    unsigned char enc[FEAT_STATE_MAX];
    const char *ent = ev->user_id;
    struct feat_state fs;
    struct err e = {0};
    struct state_put put;
    int n;

    assert_non_null(b);
    assert_int_equal(state_get_many(s, 1, &ent, b, &e), ERR_OK);
    feat_state_init(&fs);
    if (b->len)
        assert_int_equal(feat_state_decode(&fs, b->data, b->len, &e), ERR_OK);
    feat_state_update(&fs, ev, &fs);
    n = feat_state_encode(&fs, enc, sizeof(enc));
    assert_true(n > 0);
    put = (struct state_put){ent, enc, (size_t)n, 0, offset};
    assert_int_equal(state_put_many(s, 1, &put, applied, &e), ERR_OK);
    free(b);
}

static void test_apply_twice_changes_state_once(void **state)
{
    struct fx *f = *state;
    const char *ent = "u7";
    struct txn_event ev;
    struct feat_state fs;
    struct err e = {0};
    uint32_t count = 0;
    int applied;

    event_txn_init(&ev);
    strcpy(ev.event_id, "e1");
    strcpy(ev.user_id, ent);
    ev.event_time_ms = 1700000000000LL;
    ev.amount = 250;
    apply_event(f->s, &ev, 10, &applied);
    assert_int_equal(applied, 1);
    apply_event(f->s, &ev, 10, &applied); /* redelivered after a crash */
    assert_int_equal(applied, 0);
    assert_int_equal(state_get_many(f->s, 1, &ent, f->blobs, &e), ERR_OK);
    assert_int_equal(feat_state_decode(&fs, f->blobs[0].data, f->blobs[0].len, &e), ERR_OK);
    assert_int_equal(feat_state_count(&fs, "amount"), 1);
    {
        float x[FEAT_TXN_DIM]; /* the state holds one event: the next one counts 2 */
        feat_txn_build(&ev, &fs, x);
        count = (uint32_t)x[feat_txn_index("txn_count_1h")];
    }
    assert_int_equal(count, 2);
}

static void make_batch(char (*ids)[16], const char **ents, struct state_put *puts, int64_t offset)
{
    for (int i = 0; i < BATCH; i++) {
        snprintf(ids[i], 16, "user%04d", i);
        ents[i] = ids[i];
        puts[i] = (struct state_put){ents[i], (const unsigned char *)ids[i], strlen(ids[i]), i % 4,
                                     offset};
    }
}

static void test_batch_of_1000_entities_round_trips(void **state)
{
    struct fx *f = *state;
    static char ids[BATCH][16];
    static const char *ents[BATCH];
    static struct state_put puts[BATCH];
    static int applied[BATCH];
    struct err e = {0};

    make_batch(ids, ents, puts, 100);
    assert_int_equal(state_put_many(f->s, BATCH, puts, applied, &e), ERR_OK);
    for (int i = 0; i < BATCH; i++)
        assert_int_equal(applied[i], 1);
    assert_int_equal(state_get_many(f->s, BATCH, ents, f->blobs, &e), ERR_OK);
    for (int i = 0; i < BATCH; i++) {
        assert_int_equal(f->blobs[i].len, strlen(ids[i]));
        assert_memory_equal(f->blobs[i].data, ids[i], f->blobs[i].len);
        assert_int_equal(f->blobs[i].partition, i % 4);
        assert_int_equal(f->blobs[i].offset, 100);
    }
    assert_int_equal(state_put_many(f->s, BATCH, puts, applied, &e), ERR_OK);
    for (int i = 0; i < BATCH; i++)
        assert_int_equal(applied[i], 0); /* the whole batch again: nothing changes */
}

static void test_batch_mixes_applied_and_skipped(void **state)
{
    struct fx *f = *state;
    struct state_put puts[3] = {
        {"a", (const unsigned char *)"A2", 2, 0, 9},  /* older: skipped */
        {"b", (const unsigned char *)"B2", 2, 0, 11}, /* newer: applied */
        {"c", (const unsigned char *)"C1", 2, 0, 1},  /* new entity: applied */
    };
    int applied[3];
    struct err e = {0};

    assert_int_equal(put1(f->s, "a", "A1", 0, 10, &e), 1);
    assert_int_equal(put1(f->s, "b", "B1", 0, 10, &e), 1);
    assert_int_equal(state_put_many(f->s, 3, puts, applied, &e), ERR_OK);
    assert_int_equal(applied[0], 0);
    assert_int_equal(applied[1], 1);
    assert_int_equal(applied[2], 1);
    assert_blob(f->s, "a", "A1", 0, 10);
    assert_blob(f->s, "b", "B2", 0, 11);
}

/* One entity three times in one batch: the replayed offset and the older
 * one are skipped, as if they had come in later batches. */
static void test_replayed_offset_inside_a_batch_is_skipped(void **state)
{
    struct fx *f = *state;
    struct state_put puts[4] = {
        {"u", (const unsigned char *)"U5", 2, 1, 5},
        {"u", (const unsigned char *)"U5again", 7, 1, 5}, /* replay */
        {"u", (const unsigned char *)"U4", 2, 1, 4},      /* older */
        {"u", (const unsigned char *)"U6", 2, 1, 6},
    };
    int applied[4];
    struct err e = {0};

    assert_int_equal(state_put_many(f->s, 4, puts, applied, &e), ERR_OK);
    assert_int_equal(applied[0], 1);
    assert_int_equal(applied[1], 0);
    assert_int_equal(applied[2], 0);
    assert_int_equal(applied[3], 1);
    assert_blob(f->s, "u", "U6", 1, 6);
}

/* Entities of several partitions in one batch, in the order a consumer of
 * several partitions takes them: each put is judged against its own
 * entity's (partition, offset). */
static void test_batch_mixes_partitions(void **state)
{
    struct fx *f = *state;
    struct state_put puts[5] = {
        {"a", (const unsigned char *)"A", 1, 0, 7},  {"b", (const unsigned char *)"B", 1, 3, 2},
        {"c", (const unsigned char *)"C", 1, 1, 40}, /* c holds 2@40: other partition */
        {"d", (const unsigned char *)"D", 1, 3, 9},  /* d holds 3@9: replay */
        {"a", (const unsigned char *)"A2", 2, 2, 1}, /* moved to partition 2 */
    };
    int applied[5];
    struct err e = {0};

    assert_int_equal(put1(f->s, "c", "C0", 2, 40, &e), 1);
    assert_int_equal(put1(f->s, "d", "D0", 3, 9, &e), 1);
    assert_int_equal(state_put_many(f->s, 5, puts, applied, &e), ERR_OK);
    assert_int_equal(applied[0], 1);
    assert_int_equal(applied[1], 1);
    assert_int_equal(applied[2], 1);
    assert_int_equal(applied[3], 0);
    assert_int_equal(applied[4], 1);
    assert_blob(f->s, "a", "A2", 2, 1);
    assert_blob(f->s, "b", "B", 3, 2);
    assert_blob(f->s, "c", "C", 1, 40);
    assert_blob(f->s, "d", "D0", 3, 9);
}

/* state_put_begin / state_put_end: the outcome arrives at end; meanwhile
 * the handle refuses a read (it would overtake the writes' replies). */
static void test_put_begin_end_and_read_refused_meanwhile(void **state)
{
    struct fx *f = *state;
    struct state_put puts[2] = {
        {"x", (const unsigned char *)"X1", 2, 0, 3},
        {"y", (const unsigned char *)"Y1", 2, 0, 4},
    };
    const char *ent = "x";
    int applied[2] = {-1, -1};
    struct err e = {0};

    assert_int_equal(state_put_begin(f->s, 2, puts, &e), ERR_OK);
    assert_true(state_busy(f->s));
    assert_int_equal(state_get_many(f->s, 1, &ent, f->blobs, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "in flight"));
    assert_int_equal(state_put_begin(f->s, 2, puts, &e), ERR_INVALID);
    assert_int_equal(state_put_end(f->s, applied, &e), ERR_OK);
    assert_false(state_busy(f->s));
    assert_int_equal(applied[0], 1);
    assert_int_equal(applied[1], 1);
    assert_int_equal(state_put_end(f->s, applied, &e), ERR_INVALID); /* nothing in flight */
    assert_blob(f->s, "x", "X1", 0, 3);
    assert_blob(f->s, "y", "Y1", 0, 4);
}

static void test_binary_blob_of_max_size_round_trips(void **state)
{
    struct fx *f = *state;
    static unsigned char big[STATE_BLOB_MAX];
    struct state_put put = {"bin", big, sizeof(big), 0, 1};
    const char *ent = "bin";
    struct err e = {0};
    int applied;

    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (unsigned char)(i * 7); /* NUL bytes included */
    assert_int_equal(state_put_many(f->s, 1, &put, &applied, &e), ERR_OK);
    assert_int_equal(state_get_many(f->s, 1, &ent, f->blobs, &e), ERR_OK);
    assert_int_equal(f->blobs[0].len, sizeof(big));
    assert_memory_equal(f->blobs[0].data, big, sizeof(big));
}

static void test_oversized_blob_is_refused(void **state)
{
    struct fx *f = *state;
    static unsigned char big[STATE_BLOB_MAX + 1];
    struct state_put put = {"bin", big, sizeof(big), 0, 1};
    struct err e = {0};
    int applied;

    assert_int_equal(state_put_many(f->s, 1, &put, &applied, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "bin"));
    put.len = 0;
    assert_int_equal(state_put_many(f->s, 1, &put, &applied, &e), ERR_INVALID);
}

static void test_entity_id_longer_than_256_bytes_is_refused(void **state)
{
    struct fx *f = *state;
    char id[300];
    const char *ent = id;
    struct err e = {0};

    memset(id, 'k', 256);
    id[256] = '\0';
    assert_int_equal(put1(f->s, id, "ok", 0, 1, &e), 1); /* 256: the limit itself */
    assert_blob(f->s, id, "ok", 0, 1);
    memset(id, 'k', 257);
    id[257] = '\0';
    assert_int_equal(put1(f->s, id, "no", 0, 1, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "longer than 256"));
    assert_int_equal(state_get_many(f->s, 1, &ent, f->blobs, &e), ERR_INVALID);
    ent = "";
    assert_int_equal(state_get_many(f->s, 1, &ent, f->blobs, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "empty"));
}

static void test_ping_answers(void **state)
{
    struct fx *f = *state;
    struct err e = {0};

    assert_int_equal(state_ping(f->s, &e), ERR_OK);
}

/* ---- Redis only ---- */

static void test_ttl_is_set_on_the_entity_key(void **state)
{
    struct fx *f = *state;
    struct state_redis_opts o = opts_for(&g_redis, "ttl:");
    struct err e = {0};
    struct state *s;
    char out[64];

    o.ttl_s = 60;
    s = state_open_redis(&o, &e);
    assert_non_null(s);
    assert_int_equal(put1(s, "u1", "x", 0, 1, &e), 1);
    cli(g_redis.port, "PTTL 'ttl:u:{u1}'", out, sizeof(out));
    assert_true(atol(out) > 0 && atol(out) <= 60000);
    state_close(s);
    assert_int_equal(put1(f->s, "u1", "x", 0, 1, &e), 1); /* ttl_s 0: no expiry */
    snprintf(out, sizeof(out), "PTTL '%su:{u1}'", f->prefix);
    cli(g_redis.port, out, out, sizeof(out));
    assert_string_equal(out, "-1");
}

static void test_prefixes_do_not_see_each_other(void **state)
{
    struct fx *f = *state;
    struct state_redis_opts o = opts_for(&g_redis, "other:");
    struct err e = {0};
    struct state *s = state_open_redis(&o, &e);
    const char *ent = "u1";

    assert_non_null(s);
    assert_int_equal(put1(f->s, "u1", "mine", 0, 1, &e), 1);
    assert_int_equal(state_get_many(s, 1, &ent, f->blobs, &e), ERR_OK);
    assert_int_equal(f->blobs[0].len, 0);
    assert_int_equal(put1(s, "u1", "theirs", 0, 1, &e), 1); /* same offset, other prefix */
    assert_blob(f->s, "u1", "mine", 0, 1);
    state_close(s);
}

static void test_applied_offset_per_partition_is_the_max(void **state)
{
    struct fx *f = *state;
    struct err e = {0};
    char q[64], out[64];

    assert_int_equal(put1(f->s, "a", "x", 2, 50, &e), 1);
    assert_int_equal(put1(f->s, "b", "x", 2, 30, &e), 1); /* other entity, lower */
    assert_int_equal(put1(f->s, "c", "x", 3, 7, &e), 1);
    snprintf(q, sizeof(q), "GET '%sapplied:{2}'", f->prefix);
    cli(g_redis.port, q, out, sizeof(out));
    assert_string_equal(out, "50");
    snprintf(q, sizeof(q), "GET '%sapplied:{3}'", f->prefix);
    cli(g_redis.port, q, out, sizeof(out));
    assert_string_equal(out, "7");
}

static void test_script_flush_is_survived(void **state)
{
    struct fx *f = *state;
    struct err e = {0};
    char out[64];

    cli(g_redis.port, "SCRIPT FLUSH", out, sizeof(out));
    assert_string_equal(out, "OK");
    assert_int_equal(put1(f->s, "u1", "after", 0, 1, &e), 1); /* NOSCRIPT: reload, retry */
    assert_blob(f->s, "u1", "after", 0, 1);
}

static void test_wrong_type_key_is_named_and_batch_stays_in_step(void **state)
{
    struct fx *f = *state;
    const char *ents[2] = {"str", "ok"};
    struct err e = {0};
    char q[64], out[64];

    snprintf(q, sizeof(q), "SET '%su:{str}' plain", f->prefix);
    cli(g_redis.port, q, out, sizeof(out));
    assert_int_equal(put1(f->s, "ok", "fine", 0, 1, &e), 1);
    assert_int_equal(state_get_many(f->s, 2, ents, f->blobs, &e), ERR_IO);
    assert_non_null(strstr(e.msg, "u:{str}"));
    assert_non_null(strstr(e.msg, "WRONGTYPE"));
    assert_blob(f->s, "ok", "fine", 0, 1); /* the connection is still usable */
}

/* More puts than one script call takes (PUT_CHUNK, 1,000): 2,500 in one
 * call, after SCRIPT FLUSH so that every chunk is refused once and resent. */
static void test_batch_of_2500_over_chunks_survives_script_flush(void **state)
{
    enum { N = 2500 };
    struct fx *f = *state;
    static char ids[N][16];
    static struct state_put puts[N];
    static int applied[N];
    struct err e = {0};
    char out[64];

    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof(ids[i]), "k%d", i);
        puts[i] = (struct state_put){ids[i], (const unsigned char *)ids[i], strlen(ids[i]), i % 3,
                                     1000 + i};
    }
    cli(g_redis.port, "SCRIPT FLUSH", out, sizeof(out));
    assert_int_equal(state_put_many(f->s, N, puts, applied, &e), ERR_OK);
    for (int i = 0; i < N; i++)
        assert_int_equal(applied[i], 1);
    assert_blob(f->s, "k0", "k0", 0, 1000);
    assert_blob(f->s, "k1234", "k1234", 1234 % 3, 2234);
    assert_blob(f->s, "k2499", "k2499", 2499 % 3, 3499);
    snprintf(out, sizeof(out), "GET '%sapplied:{0}'", f->prefix);
    cli(g_redis.port, out, out, sizeof(out));
    assert_string_equal(out, "3499"); /* the last of partition 0: i = 2499 */
    assert_int_equal(state_put_many(f->s, N, puts, applied, &e), ERR_OK);
    for (int i = 0; i < N; i++)
        assert_int_equal(applied[i], 0);
}

/* A key of the wrong type fails its own put, named; the rest of the batch
 * (one script call) is applied. */
static void test_wrong_type_key_in_a_write_fails_only_its_put(void **state)
{
    struct fx *f = *state;
    struct state_put puts[3] = {
        {"p", (const unsigned char *)"P", 1, 0, 1},
        {"str2", (const unsigned char *)"S", 1, 0, 2},
        {"q", (const unsigned char *)"Q", 1, 0, 3},
    };
    int applied[3];
    struct err e = {0};
    char q[64], out[64];

    snprintf(q, sizeof(q), "SET '%su:{str2}' plain", f->prefix);
    cli(g_redis.port, q, out, sizeof(out));
    assert_int_equal(state_put_many(f->s, 3, puts, applied, &e), ERR_IO);
    assert_non_null(strstr(e.msg, "u:{str2}"));
    assert_non_null(strstr(e.msg, "WRONGTYPE"));
    assert_int_equal(applied[0], 1);
    assert_int_equal(applied[2], 1);
    assert_blob(f->s, "p", "P", 0, 1);
    assert_blob(f->s, "q", "Q", 0, 3);
}

static void test_unreachable_server_is_retry_at_open(void **state)
{
    struct test_redis none = {.port = test_free_port()};
    struct state_redis_opts o = opts_for(&none, "");
    struct err e = {0};

    (void)state;
    assert_null(state_open_redis(&o, &e));
    assert_int_equal(e.code, ERR_RETRY);
    assert_non_null(strstr(e.msg, "redis connect 127.0.0.1:"));
}

/* A lazy handle opens without a server, answers ERR_RETRY until one is up,
 * then connects by itself; a wrong password still fails at open. */
static void test_lazy_open_connects_when_server_comes_up(void **state)
{
    const char *const args[] = {"--requirepass", "pw", NULL};
    struct test_redis r = {.port = test_free_port()};
    struct state_redis_opts o = opts_for(&r, "");
    struct err e = {0};
    struct state *s;

    (void)state;
    o.lazy = 1;
    s = state_open_redis(&o, &e);
    assert_non_null(s);
    assert_int_equal(put1(s, "u1", "early", 0, 1, &e), ERR_RETRY);
    assert_int_equal(state_ping(s, &e), ERR_RETRY);
    assert_int_equal(test_redis_start_opts(&r, o.port, NULL), 0);
    assert_int_equal(put1(s, "u1", "late", 0, 2, &e), 1);
    assert_blob(s, "u1", "late", 0, 2);
    state_close(s);
    test_redis_stop(&r);
    assert_int_equal(test_redis_start_opts(&r, o.port, args), 0);
    o.password = "wrong";
    assert_null(state_open_redis(&o, &e)); /* lazy forgives absence, not a bad password */
    assert_int_equal(e.code, ERR_CONFIG);
    test_redis_stop(&r);
}

static void test_wrong_password_fails_with_clear_error(void **state)
{
    const char *const args[] = {"--requirepass", "s3cret", NULL};
    struct test_redis r;
    struct state_redis_opts o;
    struct err e = {0};
    struct state *s;

    (void)state;
    assert_int_equal(test_redis_start_opts(&r, 0, args), 0);
    o = opts_for(&r, "");
    o.password = "wrong";
    assert_null(state_open_redis(&o, &e));
    assert_int_equal(e.code, ERR_CONFIG);
    assert_non_null(strstr(e.msg, "redis AUTH"));
    assert_non_null(strstr(e.msg, "WRONGPASS"));
    assert_null(strstr(e.msg, "wrong")); /* the password is never echoed */
    o.password = NULL;
    assert_null(state_open_redis(&o, &e));
    assert_non_null(strstr(e.msg, "NOAUTH"));
    o.password = "s3cret";
    s = state_open_redis(&o, &e);
    assert_non_null(s);
    assert_int_equal(put1(s, "u1", "ok", 0, 1, &e), 1);
    assert_blob(s, "u1", "ok", 0, 1);
    state_close(s);
    test_redis_stop(&r);
}

/* Kills r's server, checks s answers ERR_RETRY (and does not crash on the
 * dead socket), then restarts a server on the same port with args. */
static void kill_and_restart(struct test_redis *r, struct state *s, const char *const *args)
{
    const char *ent = "u1";
    struct state_blob *b = calloc(1, sizeof(*b));
    struct err e = {0};
    int port = r->port;

    assert_non_null(b);
    test_stop_pid(r->pid, SIGKILL, 1000);
    r->pid = 0;
    test_redis_stop(r);
    assert_int_equal(put1(s, "u1", "lost", 0, 2, &e), ERR_RETRY);
    assert_int_equal(state_get_many(s, 1, &ent, b, &e), ERR_RETRY);
    assert_non_null(strstr(e.msg, "redis"));
    assert_int_equal(state_ping(s, &e), ERR_RETRY);
    assert_int_equal(test_redis_start_opts(r, port, args), 0);
    free(b);
}

static void test_killed_server_gives_retry_then_reconnects(void **state)
{
    struct test_redis r;
    struct state_redis_opts o;
    struct err e = {0};
    struct state *s;

    (void)state;
    assert_int_equal(test_redis_start(&r), 0);
    o = opts_for(&r, "");
    s = state_open_redis(&o, &e);
    assert_non_null(s);
    assert_int_equal(put1(s, "u1", "before", 0, 1, &e), 1);
    kill_and_restart(&r, s, NULL);
    assert_int_equal(put1(s, "u1", "after", 0, 3, &e), 1); /* reconnected by itself */
    assert_blob(s, "u1", "after", 0, 3);
    state_close(s);
    test_redis_stop(&r);
}

static void test_reconnect_authenticates_again(void **state)
{
    const char *const args[] = {"--requirepass", "s3cret", NULL};
    struct test_redis r;
    struct state_redis_opts o;
    struct err e = {0};
    struct state *s;

    (void)state;
    assert_int_equal(test_redis_start_opts(&r, 0, args), 0);
    o = opts_for(&r, "");
    o.password = "s3cret";
    s = state_open_redis(&o, &e);
    assert_non_null(s);
    kill_and_restart(&r, s, args);
    assert_int_equal(state_ping(s, &e), ERR_OK);
    assert_int_equal(put1(s, "u1", "after", 0, 3, &e), 1);
    assert_blob(s, "u1", "after", 0, 3);
    state_close(s);
    test_redis_stop(&r);
}

#define BOTH(t) cmocka_unit_test_setup_teardown(t, SETUP, teardown)

int main(void)
{
#define SETUP setup_memory
    const struct CMUnitTest memory[] = {
        BOTH(test_get_of_absent_entity_is_empty),
        BOTH(test_put_then_get_returns_blob_partition_offset),
        BOTH(test_put_with_same_offset_is_skipped),
        BOTH(test_put_with_older_offset_is_skipped),
        BOTH(test_put_with_newer_offset_applies),
        BOTH(test_put_from_other_partition_applies),
        BOTH(test_apply_twice_changes_state_once),
        BOTH(test_batch_of_1000_entities_round_trips),
        BOTH(test_batch_mixes_applied_and_skipped),
        BOTH(test_replayed_offset_inside_a_batch_is_skipped),
        BOTH(test_batch_mixes_partitions),
        BOTH(test_put_begin_end_and_read_refused_meanwhile),
        BOTH(test_binary_blob_of_max_size_round_trips),
        BOTH(test_oversized_blob_is_refused),
        BOTH(test_entity_id_longer_than_256_bytes_is_refused),
        BOTH(test_ping_answers),
    };
#undef SETUP
#define SETUP setup_redis
    const struct CMUnitTest redis[] = {
        BOTH(test_get_of_absent_entity_is_empty),
        BOTH(test_put_then_get_returns_blob_partition_offset),
        BOTH(test_put_with_same_offset_is_skipped),
        BOTH(test_put_with_older_offset_is_skipped),
        BOTH(test_put_with_newer_offset_applies),
        BOTH(test_put_from_other_partition_applies),
        BOTH(test_apply_twice_changes_state_once),
        BOTH(test_batch_of_1000_entities_round_trips),
        BOTH(test_batch_mixes_applied_and_skipped),
        BOTH(test_replayed_offset_inside_a_batch_is_skipped),
        BOTH(test_batch_mixes_partitions),
        BOTH(test_put_begin_end_and_read_refused_meanwhile),
        BOTH(test_binary_blob_of_max_size_round_trips),
        BOTH(test_oversized_blob_is_refused),
        BOTH(test_entity_id_longer_than_256_bytes_is_refused),
        BOTH(test_ping_answers),
        BOTH(test_ttl_is_set_on_the_entity_key),
        BOTH(test_prefixes_do_not_see_each_other),
        BOTH(test_applied_offset_per_partition_is_the_max),
        BOTH(test_script_flush_is_survived),
        BOTH(test_wrong_type_key_is_named_and_batch_stays_in_step),
        BOTH(test_batch_of_2500_over_chunks_survives_script_flush),
        BOTH(test_wrong_type_key_in_a_write_fails_only_its_put),
        cmocka_unit_test(test_unreachable_server_is_retry_at_open),
        cmocka_unit_test(test_wrong_password_fails_with_clear_error),
        cmocka_unit_test(test_lazy_open_connects_when_server_comes_up),
        cmocka_unit_test(test_killed_server_gives_retry_then_reconnects),
        cmocka_unit_test(test_reconnect_authenticates_again),
    };
#undef SETUP
    int failed = 0;

    failed += cmocka_run_group_tests_name("state_memory", memory, NULL, NULL);
    failed += cmocka_run_group_tests_name("state_redis", redis, group_setup, group_teardown);
    return failed ? 1 : 0;
}
