/* The clickstream worker end to end on the embedded stack (`streamml
 * broker`, redis-server, `streamml produce --schema click_event`,
 * streamml-clickstream, `streamml consume`, all separate processes).
 *
 * N decodable clicks (sessions of known items, a session that starts with
 * unknown items, a negative item id) + 1 undecodable message -> exactly one
 * prediction per event id and 1 dead letter; no shown item is already in
 * its session; sources and propensities are consistent with epsilon; the
 * session state in Redis equals the GRU run over the session's known items
 * and expires after clickstream.session_ttl_s; co-visitation and trending
 * counts are in Redis. A second run of the same group finds nothing to do.
 * The same with clickstream.search=ivf (candidates from the IVF index,
 * common/models/ann.h), on a fresh stack.
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
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "kafka.h"
#include "promtext.h"
#include "session.h"
#include "stack.h"
#include "state.h"

#define TOPICS "clickstream:2,predictions.clickstream:2,clickstream.dlq:1"
#define MODEL "models/clickstream/gru4rec.onnx"
#define N_SESS 6
#define MAX_CLICKS 8
#define EPSILON 0.1

struct env {
    struct test_broker broker;
    struct test_redis redis;
    char dir[64];
    int metrics_port;
};

/* Session s's clicks; -1 ends it. s3 starts with unknown items (cold),
 * s4 has a negative id in the middle. */
static const int64_t sessions[N_SESS][MAX_CLICKS] = {
    {10, 20, 30, 40, 50, -1},   {7, 7, 3, 4999, 0, 1, 2, -1}, {100, 200, -1},
    {999999, 5000, 42, 43, -1}, {12, -5, 13, 14, -1},         {1, -1},
};

static int n_clicks(void)
{
    int n = 0;
    for (int s = 0; s < N_SESS; s++)
        for (int j = 0; j < MAX_CLICKS && sessions[s][j] != -1; j++)
            n++;
    return n;
}



static int setup(void **st)
{
    struct env *v = calloc(1, sizeof(*v));

    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-clickit-XXXXXX");
    if (!v || !mkdtemp(v->dir) || test_redis_start(&v->redis) ||
        test_broker_start(&v->broker, TOPICS))
        return -1;
    *st = v;
    return 0;
}

static int teardown(void **st)
{
    struct env *v = *st;

    test_broker_stop(&v->broker);
    test_redis_stop(&v->redis);
    if (test_sh("rm -rf '%s'", v->dir))
        fprintf(stderr, "could not remove %s\n", v->dir);
    free(v);
    return 0;
}

/* Clicks interleaved across sessions (round robin), as a shop's stream is. */
static void produce_events(struct env *v)
{
    char path[200], garbage[200];
    FILE *f;
    int t = 0;

    snprintf(path, sizeof(path), "%s/clicks.jsonl", v->dir);
    f = fopen(path, "w");
    assert_non_null(f);
    for (int j = 0; j < MAX_CLICKS; j++)
        for (int s = 0; s < N_SESS; s++) {
            int ended = 0;
            for (int k = 0; k <= j; k++)
                ended |= sessions[s][k] == -1;
            if (ended)
                continue;
            fprintf(f,
                    "{\"event_id\":\"e%d-%d\",\"session_id\":\"s%d\",\"user_id\":%s,"
                    "\"item_id\":%lld,\"event_type\":\"%s\",\"event_time\":%lld}\n",
                    s, j, s, s == 0 ? "\"u0\"" : "null", (long long)sessions[s][j],
                    j % 3 == 2 ? "cart" : "view", 1767225600000LL + 1000LL * t++);
        }
    fclose(f);
    snprintf(garbage, sizeof(garbage), "%s/garbage.txt", v->dir);
    f = fopen(garbage, "w");
    assert_non_null(f);
    fprintf(f, "this is not avro\n");
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

static const char *g_search = "clickstream.search=exact";

static pid_t start_worker(struct env *v, const char *log)
{
    static char port[64], mport[64];
    char *argv[] = {(char *)test_bin("streamml-clickstream"),
                    "-b",
                    v->broker.bootstrap,
                    "-X",
                    port,
                    "-X",
                    "clickstream.epsilon=0.1",
                    "-X",
                    "clickstream.seed=7",
                    "-X",
                    "clickstream.session_ttl_s=600",
                    "-X", /* the session's key and its TTL are read below: layout 2 */
                    "state.layout=2",
                    "-X",
                    "worker.poll_ms=20",
                    "-X",
                    "worker.batch_size=8",
                    "-X",
                    "group.id=it-clickstream",
                    "-X",
                    "session.timeout.ms=6000",
                    "-X",
                    "heartbeat.interval.ms=500",
                    "-X",
                    mport,
                    "-X",
                    (char *)g_search,
                    "--log-level",
                    "info",
                    NULL};

    v->metrics_port = test_free_port();
    snprintf(port, sizeof(port), "redis.port=%d", v->redis.port);
    snprintf(mport, sizeof(mport), "metrics.port=%d", v->metrics_port);
    return test_spawn(argv, log);
}

static int64_t topic_size(struct env *v, const char *topic)
{
    return test_topic_size(v->broker.bootstrap, topic);
}

static int wait_topic(struct env *v, const char *topic, int64_t want, int timeout_ms)
{
    return test_wait_topic(v->broker.bootstrap, topic, want, timeout_ms);
}

/* Known items of session s up to and including click j. */
static int history(int s, int j, int64_t *out, int64_t items)
{
    int n = 0;
    for (int t = 0; t <= j; t++)
        if (sessions[s][t] >= 0 && sessions[s][t] < items)
            out[n++] = sessions[s][t];
    return n;
}

/* Every shown item's score is the GRU score of the session's state right
 * after this click (not of a later click of the same batch). */
static void check_items(json_t *pr, int s, int j, const struct sess_model *m, int *explored)
{
    json_t *arr = json_object_get(pr, "items"), *it;
    int64_t hist[MAX_CLICKS], items = sess_model_items(m);
    int nh = history(s, j, hist, items);
    float h[SESS_MAX_HIDDEN] = {0}, scratch[6 * SESS_MAX_HIDDEN];
    struct err e = {0};
    size_t i;

    for (int t = 0; t < nh; t++)
        assert_int_equal(sess_step(m, hist[t], h, scratch, &e), ERR_OK);

    assert_int_equal(json_array_size(arr), 10);
    assert_int_equal(json_is_true(json_object_get(pr, "cold_start")), nh == 0);
    assert_int_equal(json_is_true(json_object_get(pr, "unknown_item")),
                     sessions[s][j] < 0 || sessions[s][j] >= items);
    assert_false(json_is_true(json_object_get(pr, "degraded")));
    assert_int_equal(json_integer_value(json_object_get(pr, "session_clicks")), j + 1);
    json_array_foreach(arr, i, it)
    {
        int64_t item = json_integer_value(json_object_get(it, "item_id"));
        const char *src = json_string_value(json_object_get(it, "source"));
        double prop = json_number_value(json_object_get(it, "propensity"));
        assert_true(item >= 0 && item < items);
        if (nh > 0)
            assert_float_equal(json_number_value(json_object_get(it, "score")),
                               sess_score_one(m, h, item), 1e-4);
        for (int q = 0; q < nh; q++)
            if (hist[q] == item)
                fail_msg("s%d click %d: item %lld shown again", s, j, (long long)item);
        if (strcmp(src, "explore") == 0) {
            (*explored)++;
            assert_true(prop > 0 && prop < EPSILON / (double)(items - 30));
        } else {
            assert_float_equal(prop, 1.0 - EPSILON, 1e-12);
            if (nh == 0)
                assert_string_equal(src, "popular");
            else
                assert_true(strcmp(src, "gru") == 0 || strcmp(src, "covisit") == 0 ||
                            strcmp(src, "popular") == 0);
        }
    }
}

static void check_predictions(const char *path, const struct sess_model *m)
{
    FILE *f = fopen(path, "r");
    char line[16384];
    int seen[N_SESS][MAX_CLICKS] = {{0}}, explored = 0, total = 0;

    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        json_error_t je;
        json_t *pr;
        int s, j;
        if (line[0] != '{')
            continue;
        pr = json_loads(line, 0, &je);
        assert_non_null(pr);
        assert_int_equal(
            sscanf(json_string_value(json_object_get(pr, "event_id")), "e%d-%d", &s, &j), 2);
        assert_true(s >= 0 && s < N_SESS && j >= 0 && j < MAX_CLICKS);
        seen[s][j]++;
        total++;
        assert_string_equal(json_string_value(json_object_get(pr, "src_topic")), "clickstream");
        assert_string_equal(json_string_value(json_object_get(pr, "model_name")), "gru4rec");
        assert_true(json_integer_value(json_object_get(pr, "latency_us")) > 0);
        check_items(pr, s, j, m, &explored);
        json_decref(pr);
    }
    fclose(f);
    for (int s = 0; s < N_SESS; s++)
        for (int j = 0; j < MAX_CLICKS && sessions[s][j] != -1; j++)
            if (seen[s][j] != 1)
                fail_msg("e%d-%d: %d predictions", s, j, seen[s][j]);
    assert_int_equal(total, n_clicks());
    /* 10 slots x N clicks at epsilon 0.1: some explored, most not */
    printf("# %d of %d shown items explored (epsilon %.2f)\n", explored, 10 * total, EPSILON);
    assert_true(explored > 0 && explored < 10 * total / 4);
}

/* The stored state of every session equals the GRU over its known items. */
static void check_state(struct env *v, const struct sess_model *m)
{
    struct state_redis_opts o = {.port = v->redis.port, .timeout_ms = 2000};
    struct err e = {0};
    struct state *st = state_open_redis(&o, &e);
    const char *ids[N_SESS] = {"s0", "s1", "s2", "s3", "s4", "s5"};
    static struct state_blob b[N_SESS];
    int hid = sess_model_hidden(m);
    float h[SESS_MAX_HIDDEN], scratch[6 * SESS_MAX_HIDDEN];

    assert_non_null(st);
    assert_int_equal(state_get_many(st, N_SESS, ids, b, &e), ERR_OK);
    for (int s = 0; s < N_SESS; s++) {
        struct sess_state ss;
        int64_t hist[MAX_CLICKS];
        int last = 0, nh;
        while (last + 1 < MAX_CLICKS && sessions[s][last + 1] != -1)
            last++;
        nh = history(s, last, hist, sess_model_items(m));
        assert_true(b[s].len > 0);
        assert_int_equal(sess_state_decode(&ss, b[s].data, b[s].len, hid, &e), ERR_OK);
        assert_int_equal(ss.clicks, last + 1);
        assert_int_equal(ss.n_hist, nh);
        assert_memory_equal(ss.hist, hist, (size_t)nh * sizeof(int64_t));
        memset(h, 0, sizeof(h));
        for (int t = 0; t < nh; t++)
            assert_int_equal(sess_step(m, hist[t], h, scratch, &e), ERR_OK);
        assert_int_equal(ss.has_h, 1);
        for (int k = 0; k < hid; k++)
            assert_float_equal(ss.h[k], h[k], 1e-6);
    }
    state_close(st);
}

static long long redis_int(redisContext *c, const char *fmt, const char *arg)
{
    redisReply *r = redisCommand(c, fmt, arg);
    long long x;

    assert_non_null(r);
    if (r->type == REDIS_REPLY_STRING)
        x = (long long)strtod(r->str, NULL);
    else
        x = r->type == REDIS_REPLY_INTEGER ? r->integer : -999;
    freeReplyObject(r);
    return x;
}

/* TTLs and the co-visitation/trending sets, straight from Redis. */
static void check_redis_keys(struct env *v)
{
    redisContext *c = redisConnect("127.0.0.1", v->redis.port);
    long long ttl;

    assert_non_null(c);
    assert_int_equal(c->err, 0);
    ttl = redis_int(c, "TTL %s", "u:{s1}");
    assert_true(ttl > 500 && ttl <= 600); /* clickstream.session_ttl_s=600 */
    /* s0: 10 -> 20 -> 30 ...: both directions counted once */
    assert_int_equal(redis_int(c, "ZSCORE cv:10 %s", "20"), 1);
    assert_int_equal(redis_int(c, "ZSCORE cv:20 %s", "10"), 1);
    assert_int_equal(redis_int(c, "ZSCORE cv:30 %s", "20"), 1);
    /* s4: 12, -5 (unknown), 13: the unknown click does not break the pair */
    assert_int_equal(redis_int(c, "ZSCORE cv:12 %s", "13"), 1);
    assert_int_equal(redis_int(c, "ZCARD %s", "trending"), 18); /* distinct known items */
    assert_true(redis_int(c, "TTL %s", "cv:10") > 0);
    redisFree(c);
}

/* /metrics of the running worker: valid exposition, the counts of the run. */
static void check_metrics(struct env *v, int n)
{
    char path[200], why[256], *text;
    double x;
    FILE *f;
    long len;

    snprintf(path, sizeof(path), "%s/metrics.txt", v->dir);
    assert_int_equal(test_sh("curl -sf http://127.0.0.1:%d/metrics > %s", v->metrics_port, path), 0);
    f = fopen(path, "r");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    rewind(f);
    text = calloc((size_t)len + 1, 1);
    assert_int_equal(fread(text, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    if (prom_check(text, why, sizeof(why)))
        fail_msg("/metrics: %s", why);
    assert_int_equal(prom_value(text, "streamml_predictions_total", &x), 0);
    assert_int_equal((int)x, n);
    assert_int_equal(prom_value(text, "streamml_dead_letters_total", &x), 0);
    assert_int_equal((int)x, 1);
    assert_int_equal(prom_value(text, "streamml_events_total", &x), 0);
    assert_int_equal((int)x, n + 1);
    free(text);
}

static void test_every_click_gets_one_recommendation(void **st)
{
    struct env *v = *st;
    char log[200], out[200], log2[200];
    struct sess_model *m = NULL;
    struct err e = {0};
    int n = n_clicks();
    pid_t w;

    assert_int_equal(sess_model_open(&m, MODEL, &e), ERR_OK);
    snprintf(log, sizeof(log), "%s/worker.log", v->dir);
    snprintf(log2, sizeof(log2), "%s/worker2.log", v->dir);
    snprintf(out, sizeof(out), "%s/predictions.jsonl", v->dir);
    produce_events(v);
    w = start_worker(v, log);
    assert_true(w > 0);
    if (wait_topic(v, "predictions.clickstream", n, 40000)) {
        test_sh("tail -5 %s >&2", log);
        fail_msg("no %d predictions within 40 s", n);
    }
    assert_int_equal(wait_topic(v, "clickstream.dlq", 1, 10000), 0);
    check_metrics(v, n);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w, SIGTERM, 15000)), 0);
    /* the same group again: every offset was committed, nothing is redone */
    w = start_worker(v, log2);
    test_sleep_ms(3000);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w, SIGTERM, 15000)), 0);
    assert_int_equal(topic_size(v, "predictions.clickstream"), n);
    assert_int_equal(topic_size(v, "clickstream.dlq"), 1);
    char *consume[] = {(char *)test_bin("streamml"),
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
    assert_int_equal(test_run_wait(consume, out), 0);
    check_predictions(out, m);
    check_state(v, m);
    check_redis_keys(v);
    sess_model_close(m);
}

/* Redis unreachable: a new group re-reads the same clicks; every click is
 * still answered once, flagged degraded, from its own batch alone. */
static void test_redis_down_answers_degraded(void **st)
{
    struct env *v = *st;
    char log[200], out[200], port[64];
    int n = n_clicks(), degraded = 0, total = 0;
    char line[16384];
    FILE *f;
    pid_t w;

    snprintf(log, sizeof(log), "%s/worker-degraded.log", v->dir);
    snprintf(out, sizeof(out), "%s/predictions-all.jsonl", v->dir);
    snprintf(port, sizeof(port), "redis.port=%d", test_free_port()); /* nobody listens */
    char *argv[] = {(char *)test_bin("streamml-clickstream"),
                    "-b",
                    v->broker.bootstrap,
                    "-X",
                    port,
                    "-X",
                    "state.retry_budget_ms=50",
                    "-X",
                    "redis.timeout_ms=100",
                    "-X",
                    "worker.poll_ms=20",
                    "-X",
                    "group.id=it-clickstream-degraded",
                    "-X",
                    "session.timeout.ms=6000",
                    "--log-level",
                    "info",
                    NULL};
    w = test_spawn(argv, log);
    assert_true(w > 0);
    if (wait_topic(v, "predictions.clickstream", 2 * n, 40000)) {
        test_sh("tail -5 %s >&2", log);
        fail_msg("no %d more predictions within 40 s", n);
    }
    assert_int_equal(WEXITSTATUS(test_stop_pid(w, SIGTERM, 15000)), 0);
    char *consume[] = {(char *)test_bin("streamml"),
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
    assert_int_equal(test_run_wait(consume, out), 0);
    f = fopen(out, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        json_error_t je;
        json_t *pr;
        if (line[0] != '{')
            continue;
        pr = json_loads(line, 0, &je);
        assert_non_null(pr);
        total++;
        if (json_is_true(json_object_get(pr, "degraded"))) {
            degraded++;
            assert_int_equal(json_array_size(json_object_get(pr, "items")), 10);
        }
        json_decref(pr);
    }
    fclose(f);
    assert_int_equal(total, 2 * n);
    assert_int_equal(degraded, n);
    assert_int_equal(test_sh("grep -q 'recommending degraded' %s", log), 0);
}

/* Candidates from the IVF index: the same guarantees (one recommendation
 * per click, session items excluded, scores = the GRU's for the state,
 * propensities, state in Redis). */
static void test_ivf_search_keeps_the_guarantees(void **st)
{
    struct env *v = *st;
    char log[200], out[200];
    struct sess_model *m = NULL;
    struct err e = {0};
    int n = n_clicks();
    pid_t w;

    g_search = "clickstream.search=ivf";
    assert_int_equal(sess_model_open(&m, MODEL, &e), ERR_OK);
    snprintf(log, sizeof(log), "%s/worker-ivf.log", v->dir);
    snprintf(out, sizeof(out), "%s/predictions-ivf.jsonl", v->dir);
    produce_events(v);
    w = start_worker(v, log);
    assert_true(w > 0);
    if (wait_topic(v, "predictions.clickstream", n, 40000)) {
        test_sh("tail -5 %s >&2", log);
        fail_msg("no %d predictions within 40 s", n);
    }
    assert_int_equal(wait_topic(v, "clickstream.dlq", 1, 10000), 0);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w, SIGTERM, 15000)), 0);
    assert_int_equal(topic_size(v, "predictions.clickstream"), n);
    assert_int_equal(test_sh("grep -q 'IVF search: 71 lists' %s", log), 0);
    assert_int_equal(test_sh("grep -q 'in [0-9]* IVF batches' %s", log), 0);
    char *consume[] = {(char *)test_bin("streamml"),
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
    assert_int_equal(test_run_wait(consume, out), 0);
    check_predictions(out, m);
    check_state(v, m);
    sess_model_close(m);
    g_search = "clickstream.search=exact";
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_click_gets_one_recommendation),
        cmocka_unit_test(test_redis_down_answers_degraded),
        cmocka_unit_test_setup_teardown(test_ivf_search_keeps_the_guarantees, setup, teardown),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
