/* tests/test_redis_cluster.c: the Redis Cluster routing layer (common/
 * redis_cluster.h) and the state store on a real cluster (3 masters, one
 * replica each; tests/support/rcluster.h).
 *   - hash slots: CRC16 and {hash tags} against CLUSTER KEYSLOT;
 *   - slot tags: every slot reached, as the server computes it;
 *   - the state store: users spread over every master, exact round trip;
 *   - fencing per slot: a stale owner refused where a newer one wrote;
 *   - a slot migrated mid-use (ASK, TRYAGAIN, then MOVED): nothing lost.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "covis.h"
#include "redis_conn.h"
#include "rcluster.h"
#include "redis_cluster.h"
#include "state.h"

static int setup(void **st)
{
    struct test_rcluster *c = calloc(1, sizeof(*c));

    if (!c || test_rcluster_start(c))
        return -1;
    *st = c;
    return 0;
}

static int teardown(void **st)
{
    struct test_rcluster *c = *st;

    test_rcluster_stop(c);
    free(c);
    return 0;
}

static void test_crc16_vector(void **st)
{
    (void)st;
    /* CRC16/XMODEM("123456789") = 0x31C3, the check value Redis documents */
    assert_int_equal(rcl_keyslot("123456789", 9), 0x31C3 & 16383);
    /* the tag alone is hashed; "{}" is no tag; the first '{' counts */
    assert_int_equal(rcl_keyslot("{user1000}.following", 20), rcl_keyslot("user1000", 8));
    assert_int_equal(rcl_keyslot("foo{}{bar}", 10), rcl_keyslot("foo{}{bar}", 10));
    assert_int_not_equal(rcl_keyslot("foo{}{bar}", 10), rcl_keyslot("bar", 3));
    assert_int_equal(rcl_keyslot("foo{{bar}}zap", 13), rcl_keyslot("{bar", 4));
}

/* CLUSTER KEYSLOT of each key, from one redis-cli fed a file of commands
 * (one process, not one per key; no key holds '"' or '\'). */
static void server_slots(const struct test_rcluster *c, size_t n, char keys[][40], int *slots)
{
    char path[] = "/tmp/streamml-keyslot-XXXXXX", cmd[200], line[64];
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL, *p;
    size_t i = 0;

    assert_non_null(f);
    for (size_t k = 0; k < n; k++)
        fprintf(f, "CLUSTER KEYSLOT \"%s\"\n", keys[k]);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "redis-cli -p %d < %s", c->node[0].port, path);
    p = popen(cmd, "r");
    assert_non_null(p);
    while (i < n && fgets(line, sizeof(line), p))
        slots[i++] = atoi(line[0] == '(' ? strchr(line, ')') + 2 : line);
    pclose(p);
    unlink(path);
    assert_int_equal(i, n);
}

static void test_keyslot_matches_server(void **st)
{
    struct test_rcluster *c = *st;
    static const char *const fixed[] = {
        "a", "foo", "123456789", "{user1000}.following", "foo{}{bar}", "foo{{bar}}zap",
        "foo{bar}{zap}", "u:{u0001}", "u:{}", "}{", "{", "}", "x{y", "epoch:3:{a1}",
        "applied:0:{zz}", "trending", "cv:{item42}", "lbl:{e000123}", "h\xc3\xa9llo{w\xc3\xb6rld}",
        NULL};
    static char keys[400][40];
    static int slots[400];
    size_t n = 0;

    for (; fixed[n]; n++)
        snprintf(keys[n], sizeof(keys[n]), "%s", fixed[n]);
    for (int i = 0; i < 300; i++, n++) /* generated: u:{uNNNN}, plain keys, tags */
        snprintf(keys[n], sizeof(keys[n]), i % 3 == 0 ? "u:{u%04d}" : i % 3 == 1 ? "k%d" : "x{%d}y",
                 i * 37);
    for (unsigned s = 0; s < RCL_SLOTS; s += 997, n++)
        snprintf(keys[n], sizeof(keys[n]), "x:{%s}", rcl_slot_tag(s));
    server_slots(c, n, keys, slots);
    for (size_t k = 0; k < n; k++)
        if ((int)rcl_keyslot(keys[k], strlen(keys[k])) != slots[k]) {
            fprintf(stderr, "key %s: ours %u, server %d\n", keys[k],
                    rcl_keyslot(keys[k], strlen(keys[k])), slots[k]);
            fail();
        }
}

static void test_slot_tags(void **st)
{
    char key[32];

    (void)st;
    for (unsigned s = 0; s < RCL_SLOTS; s++) { /* the server agrees: above */
        size_t n = (size_t)snprintf(key, sizeof(key), "x:{%s}", rcl_slot_tag(s));
        assert_true(strlen(rcl_slot_tag(s)) > 0);
        assert_int_equal(rcl_keyslot(key, n), s);
    }
}

#define USERS 600

static struct state *open_state(const struct test_rcluster *c)
{
    struct err e = {0};
    struct state_redis_opts o = {.nodes = c->nodes, .timeout_ms = 3000, .prefix = "t:"};
    struct state *s = state_open_redis(&o, &e);

    if (!s)
        fprintf(stderr, "open: %s\n", e.msg);
    assert_non_null(s);
    return s;
}

/* Puts value v for users [0, n) of partition p at offset off (one batch). */
static int put_all(struct state *s, int n, int32_t p, int64_t off, int v, int *applied)
{
    static char ids[USERS][16];
    static unsigned char data[USERS][8];
    struct state_put puts[USERS];
    struct err e = {0};
    int rc;

    for (int i = 0; i < n; i++) {
        snprintf(ids[i], sizeof(ids[i]), "u%04d", i);
        memcpy(data[i], &v, sizeof(v));
        memcpy(data[i] + 4, &i, sizeof(i));
        puts[i] = (struct state_put){ids[i], data[i], 8, p, off};
    }
    rc = state_put_many(s, (size_t)n, puts, applied, &e);
    if (rc)
        fprintf(stderr, "put: %s\n", e.msg);
    return rc;
}

/* Users whose stored value is not v. */
static int count_wrong(struct state *s, int n, int v)
{
    static char ids[USERS][16];
    static struct state_blob b[USERS];
    const char *ents[USERS];
    struct err e = {0};
    int wrong = 0;

    for (int i = 0; i < n; i++) {
        snprintf(ids[i], sizeof(ids[i]), "u%04d", i);
        ents[i] = ids[i];
    }
    assert_int_equal(state_get_many(s, (size_t)n, ents, b, &e), ERR_OK);
    for (int i = 0; i < n; i++) {
        int got = -1;
        if (b[i].len == 8)
            memcpy(&got, b[i].data, sizeof(got));
        wrong += got != v;
    }
    return wrong;
}

static void test_state_spread_over_masters(void **st)
{
    struct test_rcluster *c = *st;
    struct state *s = open_state(c);
    int applied[USERS], masters = 0, n_applied = 0;
    char out[64];
    struct err e = {0};

    assert_int_equal(put_all(s, USERS, 0, 10, 7, applied), ERR_OK);
    for (int i = 0; i < USERS; i++)
        n_applied += applied[i];
    assert_int_equal(n_applied, USERS);
    assert_int_equal(count_wrong(s, USERS, 7), 0);
    /* the same offset again: skipped everywhere (per-offset idempotence) */
    assert_int_equal(put_all(s, USERS, 0, 10, 8, applied), ERR_OK);
    for (int i = 0; i < USERS; i++)
        assert_int_equal(applied[i], 0);
    assert_int_equal(count_wrong(s, USERS, 7), 0);
    for (int i = 0; i < RCLUSTER_NODES; i++) {
        test_rcluster_cli(c->node[i].port, "ROLE", out, sizeof(out));
        if (strcmp(out, "master") == 0) {
            test_rcluster_cli(c->node[i].port, "DBSIZE", out, sizeof(out));
            masters += atoi(out) > USERS / 6;
        }
    }
    assert_int_equal(masters, 3); /* one partition's users on every master */
    assert_int_equal(state_ping(s, &e), ERR_OK);
    state_close(s);
}

static void test_fencing_per_slot(void **st)
{
    struct test_rcluster *c = *st;
    struct state *a = open_state(c), *b = open_state(c);
    int applied[USERS], n = 0;
    struct err e = {0};

    assert_int_equal(state_fence(a, 3, &e), ERR_OK);
    assert_int_equal(put_all(a, USERS, 3, 100, 1, applied), ERR_OK);
    /* b takes partition 3 over and writes every user */
    assert_int_equal(state_fence(b, 3, &e), ERR_OK);
    assert_int_equal(put_all(b, USERS, 3, 200, 2, applied), ERR_OK);
    assert_true(state_epoch(b, 3) > state_epoch(a, 3));
    /* a, stalled, writes a later offset with its old epoch: refused on
     * every slot b wrote, on every node */
    assert_int_equal(put_all(a, USERS, 3, 300, 3, applied), ERR_OK);
    for (int i = 0; i < USERS; i++)
        n += applied[i];
    assert_int_equal(n, 0);
    assert_int_equal(state_fenced(a), USERS);
    assert_int_equal(count_wrong(b, USERS, 2), 0);
    state_close(a);
    state_close(b);
}

static void test_slot_migration_mid_use(void **st)
{
    struct test_rcluster *c = *st;
    struct state *s = open_state(c);
    int applied[USERS];
    unsigned slot = rcl_keyslot("t:u:{u0000}", 11);
    int from = test_rcluster_master_of(c, slot), to = 0;

    assert_int_equal(put_all(s, USERS, 1, 1, 11, applied), ERR_OK);
    for (int i = 0; i < RCLUSTER_NODES && !to; i++) {
        char out[32];
        test_rcluster_cli(c->node[i].port, "ROLE", out, sizeof(out));
        if (strcmp(out, "master") == 0 && c->node[i].port != from)
            to = c->node[i].port;
    }
    assert_true(from && to);
    /* half-way: the slot MIGRATING/IMPORTING, its keys split over two
     * nodes; the store must still read and write every user exactly */
    {
        char args[200], out[64], from_id[64], to_id[64];
        test_rcluster_cli(from, "CLUSTER MYID", from_id, sizeof(from_id));
        test_rcluster_cli(to, "CLUSTER MYID", to_id, sizeof(to_id));
        snprintf(args, sizeof(args), "CLUSTER SETSLOT %u IMPORTING %s", slot, from_id);
        test_rcluster_cli(to, args, out, sizeof(out));
        assert_string_equal(out, "OK");
        snprintf(args, sizeof(args), "CLUSTER SETSLOT %u MIGRATING %s", slot, to_id);
        test_rcluster_cli(from, args, out, sizeof(out));
        assert_string_equal(out, "OK");
        snprintf(args, sizeof(args), "MIGRATE 127.0.0.1 %d 't:u:{u0000}' 0 5000", to);
        test_rcluster_cli(from, args, out, sizeof(out));
        assert_string_equal(out, "OK");
    }
    assert_int_equal(count_wrong(s, USERS, 11), 0); /* u0000 read through ASK */
    /* A script's keys split over two nodes: Redis answers TRYAGAIN until the
     * slot is moved; the batch is ERR_RETRY (the worker retries it), the
     * other slots' puts applied, that slot's left whole at its old value. */
    assert_int_equal(put_all(s, USERS, 1, 2, 12, applied), ERR_RETRY);
    assert_int_equal(applied[0], 0);
    assert_int_equal(count_wrong(s, 1, 11), 0);
    /* the rest of the slot moves; the handle's map is now stale: MOVED */
    assert_int_equal(test_rcluster_move_slot(c, slot, to, 100, 0), 0);
    assert_int_equal(test_rcluster_master_of(c, slot), to);
    assert_int_equal(put_all(s, USERS, 1, 3, 13, applied), ERR_OK);
    for (int i = 0; i < USERS; i++)
        assert_int_equal(applied[i], 1);
    assert_int_equal(count_wrong(s, USERS, 13), 0);
    state_close(s);
}

/* rcl_pipeline (labels): SET then GET of 300 keys over every master, one
 * of them in a slot half migrated (ASK), one in a slot whose map is stale
 * (MOVED); every reply in the order of the commands. */
struct pctx {
    char key[32], val[32];
    int get, got[300];
};

static int pcmd(void *ctx, size_t i, const char **argv, size_t *argvlen)
{
    struct pctx *x = ctx;

    snprintf(x->key, sizeof(x->key), "pl:%zu", i);
    snprintf(x->val, sizeof(x->val), "%zu", i * 3);
    argv[0] = x->get ? "GET" : "SET";
    argv[1] = x->key;
    argv[2] = x->val;
    for (int k = 0; k < 3; k++)
        argvlen[k] = strlen(argv[k]);
    return x->get ? 2 : 3;
}

static void preply(void *ctx, size_t i, const struct redisReply *r)
{
    struct pctx *x = ctx;

    x->got[i] = r->type == REDIS_REPLY_STRING ? atoi(r->str) : r->type == REDIS_REPLY_STATUS ? 0
                                                                                            : -1;
}

static void test_pipeline_per_master(void **st)
{
    struct test_rcluster *c = *st;
    struct rc_opts o = {.timeout_ms = 3000};
    struct pctx x = {0};
    struct err e = {0};
    struct rcl *cl;
    size_t done;
    unsigned slot = rcl_keyslot("pl:7", 4);
    int from = test_rcluster_master_of(c, slot), to = test_rcluster_master_of(c, (slot + 8192) % 16384);
    char args[200], out[64], from_id[64], to_id[64];

    if (to == from)
        to = test_rcluster_master_of(c, (slot + 5461) % 16384);
    assert_int_equal(rcl_open(&cl, c->nodes, &o, &e), ERR_OK);
    assert_int_equal(rcl_pipeline(cl, 300, pcmd, preply, &x, &done, &e), ERR_OK);
    assert_int_equal(done, 300);
    /* pl:7's slot half-way to another master: pl:7 moved, the rest not */
    test_rcluster_cli(from, "CLUSTER MYID", from_id, sizeof(from_id));
    test_rcluster_cli(to, "CLUSTER MYID", to_id, sizeof(to_id));
    snprintf(args, sizeof(args), "CLUSTER SETSLOT %u IMPORTING %s", slot, from_id);
    test_rcluster_cli(to, args, out, sizeof(out));
    snprintf(args, sizeof(args), "CLUSTER SETSLOT %u MIGRATING %s", slot, to_id);
    test_rcluster_cli(from, args, out, sizeof(out));
    snprintf(args, sizeof(args), "MIGRATE 127.0.0.1 %d pl:7 0 5000", to);
    test_rcluster_cli(from, args, out, sizeof(out));
    assert_string_equal(out, "OK");
    x.get = 1;
    assert_int_equal(rcl_pipeline(cl, 300, pcmd, preply, &x, &done, &e), ERR_OK);
    assert_int_equal(done, 300);
    for (int i = 0; i < 300; i++)
        assert_int_equal(x.got[i], i * 3);
    /* the slot finished moving: the handle's map is stale, MOVED follows */
    assert_int_equal(test_rcluster_move_slot(c, slot, to, 100, 0), 0);
    memset(x.got, 0, sizeof(x.got));
    assert_int_equal(rcl_pipeline(cl, 300, pcmd, preply, &x, &done, &e), ERR_OK);
    for (int i = 0; i < 300; i++)
        assert_int_equal(x.got[i], i * 3);
    rcl_close(cl);
}

/* Co-visitation and trending: every key under the {cv} tag, one master;
 * the same answers as on one server, the idempotence per offset kept. */
static void test_covis_on_cluster(void **st)
{
    struct test_rcluster *c = *st;
    struct cov_opts o = {.prefix = "cvt:", .half_life_s = 3600, .timeout_ms = 3000};
    struct cov_click clicks[4] = {{-1, 10, 1000000, 0, 1, 0}, {10, 11, 1000001, 0, 2, 0},
                                  {11, 12, 1000002, 1, 1, 0}, {10, 11, 1000003, 1, 2, 0}};
    struct cov_result res = {0};
    struct err e = {0};
    int64_t out[8];
    int n = 0, counts[1];
    struct cov *cv;
    int64_t item = 10;
    char key[64], args[128], port_s[16];
    int port;

    rcl_set_default_nodes(c->nodes);
    assert_int_equal(cov_open(&cv, &o, &e), ERR_OK);
    assert_int_equal(cov_update(cv, 4, clicks, &res, &e), ERR_OK);
    assert_int_equal(res.counted, 4);
    memset(&res, 0, sizeof(res));
    assert_int_equal(cov_update(cv, 4, clicks, &res, &e), ERR_OK); /* redelivered */
    assert_int_equal(res.counted, 0);
    assert_int_equal(res.redelivered, 4);
    assert_int_equal(cov_trending(cv, 8, out, &n, &e), ERR_OK);
    assert_int_equal(n, 3);
    assert_int_equal(out[0], 11); /* clicked twice */
    assert_int_equal(cov_covisited(cv, 1, &item, 8, out, counts, &e), ERR_OK);
    assert_int_equal(counts[0], 1);
    assert_int_equal(out[0], 11);
    /* the trending key lives where its {cv} tag says */
    snprintf(key, sizeof(key), "cvt:{cv}trending");
    port = test_rcluster_master_of(c, rcl_keyslot(key, strlen(key)));
    snprintf(args, sizeof(args), "ZCARD '%s'", key);
    test_rcluster_cli(port, args, port_s, sizeof(port_s));
    assert_int_equal(atoi(port_s), 3);
    cov_close(cv);
    rcl_set_default_nodes(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc16_vector),
        cmocka_unit_test(test_keyslot_matches_server),
        cmocka_unit_test(test_slot_tags),
        cmocka_unit_test(test_state_spread_over_masters),
        cmocka_unit_test(test_fencing_per_slot),
        cmocka_unit_test(test_slot_migration_mid_use),
        cmocka_unit_test(test_pipeline_per_master),
        cmocka_unit_test(test_covis_on_cluster),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
