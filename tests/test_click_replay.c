/* `streamml replay --stream clickstream` against the live clickstream worker
 * (parity), on the embedded stack (`streamml broker`, redis-server, separate
 * processes).
 *
 * The worker (Redis state, clickstream.epsilon=0, no co-visitation, small
 * batches) answers a topic of interleaved sessions (known, repeated and
 * unknown items, a negative id, one undecodable message); then the topic
 * is replayed with in-memory state and with per-run Redis state. Each click
 * must get exactly the worker's recommendation: same items in the same
 * order, same sources and propensities, same flags and session counts, and
 * scores equal to float precision. The replay's Redis keys are gone after
 * it; the worker's are untouched. The same clicks from two Avro container
 * files (each session in one) give the same answers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <hiredis.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "codec.h"
#include "stack.h"

#define TOPICS "clickstream:3,predictions.clickstream:2,clickstream.dlq:1"
#define N_SESS 24
#define N_CLICKS 240

struct env {
    struct test_broker broker;
    struct test_redis redis;
    char dir[64];
};

static int setup(void **st)
{
    struct env *v = calloc(1, sizeof(*v));

    if (!v)
        return -1;
    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-clickrp-XXXXXX");
    if (!mkdtemp(v->dir) || test_redis_start(&v->redis) || test_broker_start(&v->broker, TOPICS))
        return -1;
    *st = v;
    return 0;
}

static int teardown(void **st)
{
    struct env *v = *st;
    char cmd[128];

    test_broker_stop(&v->broker);
    test_redis_stop(&v->redis);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", v->dir);
    if (system(cmd))
        fprintf(stderr, "could not remove %s\n", v->dir);
    free(v);
    return 0;
}

static struct click_event g_clicks[N_CLICKS];

/* Clicks of N_SESS sessions, interleaved; items drawn from a small range
 * (so sessions repeat items and share them), some unknown (>= the catalog)
 * and one negative. Deterministic. */
static void make_clicks(void)
{
    uint64_t x = 42;

    for (int i = 0; i < N_CLICKS; i++) {
        struct click_event *c = &g_clicks[i];
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        snprintf(c->event_id, sizeof(c->event_id), "c%d", i);
        snprintf(c->session_id, sizeof(c->session_id), "s%d", (int)((x >> 33) % N_SESS));
        c->item_id = (int64_t)((x >> 17) % 300);
        if (i % 37 == 5)
            c->item_id = 1000000 + i; /* unknown */
        if (i == 77)
            c->item_id = -3;
        c->type = CLICK_VIEW;
        c->event_time_ms = 1767225600000LL + 500LL * i;
    }
}

static void produce_clicks(struct env *v)
{
    char path[128], garbage[128];
    FILE *f;

    make_clicks();
    snprintf(path, sizeof(path), "%s/clicks.jsonl", v->dir);
    assert_non_null(f = fopen(path, "w"));
    for (int i = 0; i < N_CLICKS; i++)
        fprintf(f,
                "{\"event_id\":\"%s\",\"session_id\":\"%s\",\"user_id\":null,"
                "\"item_id\":%lld,\"event_type\":\"view\",\"event_time\":%lld}\n",
                g_clicks[i].event_id, g_clicks[i].session_id, (long long)g_clicks[i].item_id,
                (long long)g_clicks[i].event_time_ms);
    fclose(f);
    snprintf(garbage, sizeof(garbage), "%s/garbage.txt", v->dir);
    assert_non_null(f = fopen(garbage, "w"));
    fprintf(f, "not avro\n");
    fclose(f);
    char *a1[] = {(char *)test_bin("streamml"),
                  "produce",
                  "-b",
                  v->broker.bootstrap,
                  "-t",
                  "clickstream",
                  "--schema",
                  "click_event",
                  "-i",
                  path,
                  "--log-level",
                  "warn",
                  NULL};
    assert_int_equal(test_run_wait(a1, NULL), 0);
    char *a2[] = {(char *)test_bin("streamml"),
                  "produce",
                  "-b",
                  v->broker.bootstrap,
                  "-t",
                  "clickstream",
                  "--raw",
                  "-i",
                  garbage,
                  "--log-level",
                  "warn",
                  NULL};
    assert_int_equal(test_run_wait(a2, NULL), 0);
}

static void run_worker(struct env *v)
{
    char log[128], port[64];
    pid_t w;

    snprintf(log, sizeof(log), "%s/worker.log", v->dir);
    snprintf(port, sizeof(port), "redis.port=%d", v->redis.port);
    char *argv[] = {(char *)test_bin("streamml-clickstream"),
                    "-b",
                    v->broker.bootstrap,
                    "-X",
                    port,
                    "-X",
                    "clickstream.epsilon=0",
                    "-X",
                    "clickstream.covisit=0",
                    "-X",
                    "worker.batch_size=7",
                    "-X",
                    "clickstream.score_batch=3",
                    "-X",
                    "worker.poll_ms=20",
                    "-X",
                    "group.id=it-click-replay",
                    "--log-level",
                    "info",
                    NULL};
    w = test_spawn(argv, log);
    assert_true(w > 0);
    if (test_wait_topic(v->broker.bootstrap, "predictions.clickstream", N_CLICKS, 60000)) {
        test_stop_pid(w, SIGKILL, 1000);
        fail_msg("no %d predictions within 60 s (log %s)", N_CLICKS, log);
    }
    assert_int_equal(WEXITSTATUS(test_stop_pid(w, SIGTERM, 15000)), 0);
}

static void consume(struct env *v, const char *out)
{
    char *argv[] = {(char *)test_bin("streamml"),
                    "consume",
                    "-b",
                    v->broker.bootstrap,
                    "-t",
                    "predictions.clickstream",
                    "-f",
                    "-e",
                    "--log-level",
                    "error",
                    NULL};
    assert_int_equal(test_run_wait(argv, out), 0);
}

/* event_id -> prediction, from JSON lines (other lines ignored). */
static json_t *load(const char *path)
{
    FILE *f = fopen(path, "r");
    json_t *all = json_object();
    char line[65536];

    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        json_error_t je;
        json_t *p;
        if (line[0] != '{')
            continue;
        assert_non_null(p = json_loads(line, 0, &je));
        assert_null(json_object_get(all, json_string_value(json_object_get(p, "event_id"))));
        json_object_set_new(all, json_string_value(json_object_get(p, "event_id")), p);
    }
    fclose(f);
    return all;
}

static void same_field(json_t *a, json_t *b, const char *id, const char *k)
{
    if (!json_equal(json_object_get(a, k), json_object_get(b, k)))
        fail_msg("%s: %s differs", id, k);
}

/* The clicks into two container files, each session's in one of them (in
 * order): the partitions of the files' replay. */
static void write_files(struct env *v, char paths[2][128])
{
    struct err e = {0};
    struct codec *cd = codec_open("schemas", &e);
    struct codec_file *f[2];

    assert_non_null(cd);
    for (int k = 0; k < 2; k++) {
        snprintf(paths[k], 128, "%s/clicks-%d.avro", v->dir, k);
        assert_non_null(f[k] = codec_file_open_write_as(cd, paths[k], CODEC_CLICK_EVENT, &e));
    }
    for (int i = 0; i < N_CLICKS; i++)
        assert_int_equal(
            codec_file_write_click(f[atoi(g_clicks[i].session_id + 1) % 2], &g_clicks[i], &e),
            ERR_OK);
    for (int k = 0; k < 2; k++)
        assert_int_equal(codec_file_close(f[k], &e), ERR_OK);
    codec_close(cd);
}

/* Every click: the replay's answer is the worker's (files: but for the
 * source position). */
static void check_parity(const char *live_path, const char *replay_path, int files)
{
    json_t *live = load(live_path), *rp = load(replay_path), *a;
    const char *id;
    int shown = 0, gru = 0, cold = 0;

    assert_int_equal(json_object_size(live), N_CLICKS);
    assert_int_equal(json_object_size(rp), N_CLICKS);
    json_object_foreach(live, id, a)
    {
        json_t *b = json_object_get(rp, id), *ia, *ib;
        static const char *const same[] = {"src_topic",    "src_partition", "src_offset",
                                           "session_id",   "event_time",    "cold_start",
                                           "unknown_item", "degraded",      "session_clicks",
                                           "model_name",   "model_version"};
        if (!b)
            fail_msg("%s: not replayed", id);
        for (size_t k = files ? 3 : 0; k < sizeof(same) / sizeof(same[0]); k++)
            same_field(a, b, id, same[k]);
        ia = json_object_get(a, "items");
        ib = json_object_get(b, "items");
        assert_int_equal(json_array_size(ia), json_array_size(ib));
        cold += json_is_true(json_object_get(a, "cold_start"));
        for (size_t j = 0; j < json_array_size(ia); j++) {
            json_t *x = json_array_get(ia, j), *y = json_array_get(ib, j);
            double sx = json_number_value(json_object_get(x, "score"));
            double sy = json_number_value(json_object_get(y, "score"));
            same_field(x, y, id, "item_id");
            same_field(x, y, id, "source");
            same_field(x, y, id, "propensity");
            if (!(fabs(sx - sy) <= 1e-5 * fmax(1.0, fabs(sx))))
                fail_msg("%s slot %zu: score %.9g live, %.9g replayed", id, j, sx, sy);
            gru += strcmp(json_string_value(json_object_get(x, "source")), "gru") == 0;
            shown++;
        }
    }
    printf("# %zu clicks, %d items shown (%d from the GRU), %d cold: same as the worker\n",
           json_object_size(live), shown, gru, cold);
    assert_true(gru > shown / 2 && cold > 0);
    json_decref(live);
    json_decref(rp);
}

/* Keys matching pattern, a state bucket of layout 3 (`...ub:{b}`) counted
 * as its fields: one per session, as a key per session was in layout 2. */
static long redis_keys(struct env *v, const char *pattern)
{
    redisContext *c = redisConnect("127.0.0.1", v->redis.port);
    redisReply *r, *h;
    long n;

    assert_true(c && !c->err);
    r = redisCommand(c, "KEYS %s", pattern);
    assert_non_null(r);
    n = (long)r->elements;
    for (size_t i = 0; i < r->elements; i++) {
        if (!strstr(r->element[i]->str, "ub:{"))
            continue;
        h = redisCommand(c, "HLEN %s", r->element[i]->str);
        assert_true(h && h->type == REDIS_REPLY_INTEGER);
        n += (long)h->integer - 1;
        freeReplyObject(h);
    }
    freeReplyObject(r);
    redisFree(c);
    return n;
}

/* The topic, or files[0..1] when files is not NULL. */
static int replay(struct env *v, const char *state, const char *out, const char *log,
                  char files[2][128])
{
    char port[64];

    snprintf(port, sizeof(port), "redis.port=%d", v->redis.port);
    char *argv[] = {(char *)test_bin("streamml"),
                    "replay",
                    "--stream",
                    "clickstream",
                    "-b",
                    v->broker.bootstrap,
                    "-X",
                    port,
                    "-X",
                    "clickstream.epsilon=0",
                    "-X",
                    "clickstream.covisit=0",
                    files ? "--avro-file" : "-X",
                    files ? files[0] : "clickstream.k=10",
                    files ? "--avro-file" : "-X",
                    files ? files[1] : "clickstream.k=10",
                    "--state",
                    (char *)state,
                    "--skip-invalid",
                    "-o",
                    (char *)out,
                    "--log-level",
                    "warn",
                    NULL};
    return test_run_wait(argv, log);
}

static void test_replay_gives_the_workers_recommendations(void **st)
{
    struct env *v = *st;
    char live[128], mem[128], red[128], log[128];
    long worker_keys;

    produce_clicks(v);
    run_worker(v);
    snprintf(live, sizeof(live), "%s/live.jsonl", v->dir);
    consume(v, live);
    worker_keys = redis_keys(v, "*");
    assert_true(worker_keys >= N_SESS);

    snprintf(log, sizeof(log), "%s/replay.log", v->dir);
    snprintf(mem, sizeof(mem), "%s/replay-memory.jsonl", v->dir);
    assert_int_equal(replay(v, "memory", mem, log, NULL), 0);
    check_parity(live, mem, 0);

    snprintf(red, sizeof(red), "%s/replay-redis.jsonl", v->dir);
    assert_int_equal(replay(v, "redis", red, log, NULL), 0);
    check_parity(live, red, 0);
    /* the run's keys were dropped; the worker's are as they were */
    assert_int_equal(redis_keys(v, "*replay:*"), 0);
    assert_int_equal(redis_keys(v, "*"), worker_keys);

    char files[2][128];
    write_files(v, files);
    assert_int_equal(replay(v, "memory", mem, log, files), 0);
    check_parity(live, mem, 1);

    /* the undecodable message is reported, and fails the run without --skip-invalid */
    char *strict[] = {(char *)test_bin("streamml"),
                      "replay",
                      "--stream",
                      "clickstream",
                      "-b",
                      v->broker.bootstrap,
                      "-o",
                      mem,
                      "--log-level",
                      "warn",
                      NULL};
    assert_int_equal(test_run_wait(strict, log), 1);
}

/* Options that do not apply to clicks are refused by name. */
static void test_click_replay_usage(void **st)
{
    char log[128];
    struct env *v = *st;

    snprintf(log, sizeof(log), "%s/usage.log", v->dir);
    char *a1[] = {(char *)test_bin("streamml"), "replay", "--stream", "ads", NULL};
    assert_int_equal(test_run_wait(a1, log), 2);
    char *a4[] = {
        (char *)test_bin("streamml"), "replay", "--stream", "clickstream", "--cam-dir", "x", NULL};
    assert_int_equal(test_run_wait(a4, log), 2);
    char *a2[] = {
        (char *)test_bin("streamml"), "replay", "--stream", "clickstream", "--format", "csv", NULL};
    assert_int_equal(test_run_wait(a2, log), 2);
    char *a3[] = {
        (char *)test_bin("streamml"), "replay", "--stream", "clickstream", "--features", NULL};
    assert_int_equal(test_run_wait(a3, log), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replay_gives_the_workers_recommendations),
        cmocka_unit_test(test_click_replay_usage),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
