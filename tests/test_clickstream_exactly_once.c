/* Exactly-once clickstream state across crashes (issue 6), end to end on
 * the embedded stack (`streamml broker`, redis-server, streamml-clickstream
 * as separate processes).
 *
 * 360 clicks of 30 sessions over 40 items (and some unknown items) go
 * through three workers of one group: the first SIGKILLs itself between the
 * co-visitation counts and the session states of its fifth batch
 * (clickstream.test_kill_between_writes, the window where counts used to be
 * lost), the second is SIGKILLed from outside mid-stream, the third runs to
 * the end. Offsets are committed rarely, so most clicks are redelivered.
 * Then every co-visitation set in Redis equals an offline recount of the
 * input clicks exactly (no pair lost, none counted twice), every trending
 * weight equals the recount's sum of 2^((t - t0) / half life), and every
 * session state equals the GRU run over its known items.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <hiredis.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "session.h"
#include "stack.h"
#include "state.h"

#define TOPICS "clickstream:2,predictions.clickstream:2,clickstream.dlq:1"
#define MODEL "models/clickstream/gru4rec.onnx"
#define N_SESS 30
#define N_CLICK 12
#define N_ITEMS 40
#define UNKNOWN 999999
#define HALF_LIFE_S 3600.0
#define T_START 1767225600000LL

struct env {
    struct test_broker broker;
    struct test_redis redis;
    char dir[64];
};

static int64_t g_item[N_SESS][N_CLICK];
static int64_t g_time[N_SESS][N_CLICK];

/* Deterministic clicks: a walk over 40 items with repeats (pairs recur,
 * some clicks repeat their predecessor) and one unknown item in eight. */
static void make_clicks(void)
{
    uint64_t x = 88172645463325252ULL;
    int64_t t = 0;

    for (int j = 0; j < N_CLICK; j++)
        for (int s = 0; s < N_SESS; s++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            g_item[s][j] = x % 8 == 0 ? UNKNOWN : (int64_t)((x >> 8) % N_ITEMS);
            g_time[s][j] = T_START + 1000 * t++;
        }
}

static int setup(void **st)
{
    struct env *v = calloc(1, sizeof(*v));

    make_clicks();
    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-clickeo-XXXXXX");
    if (!v || !mkdtemp(v->dir) || test_redis_start(&v->redis) ||
        test_broker_start(&v->broker, TOPICS))
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

static void produce_clicks(struct env *v)
{
    char path[200];
    FILE *f;

    snprintf(path, sizeof(path), "%s/clicks.jsonl", v->dir);
    f = fopen(path, "w");
    assert_non_null(f);
    for (int j = 0; j < N_CLICK; j++)
        for (int s = 0; s < N_SESS; s++)
            fprintf(f,
                    "{\"event_id\":\"e%d-%d\",\"session_id\":\"s%d\",\"user_id\":null,"
                    "\"item_id\":%lld,\"event_type\":\"view\",\"event_time\":%lld}\n",
                    s, j, s, (long long)g_item[s][j], (long long)g_time[s][j]);
    fclose(f);
    char *argv[] = {(char *)test_bin("streamml"), "produce", "-b", v->broker.bootstrap, "-t",
                    "clickstream", "--schema", "click_event", "-i", path, "--log-level", "warn",
                    NULL};
    assert_int_equal(test_run_wait(argv, NULL), 0);
}

/* extra: "key=value" for one more -X (NULL: none). */
static pid_t start_worker(struct env *v, const char *log, const char *extra, const char *commit_ms)
{
    static char port[64], commit[64];
    char *argv[] = {(char *)test_bin("streamml-clickstream"),
                    "-b", v->broker.bootstrap,
                    "-X", port,
                    "-X", "clickstream.seed=7",
                    "-X", "worker.poll_ms=20",
                    "-X", "worker.batch_size=8",
                    "-X", "worker.idle_exit_ms=12000",
                    "-X", "group.id=it-clickstream-eo",
                    "-X", "session.timeout.ms=6000",
                    "-X", "heartbeat.interval.ms=500",
                    "-X", commit,
                    "--log-level", "info",
                    extra ? "-X" : NULL, (char *)extra,
                    NULL};

    snprintf(port, sizeof(port), "redis.port=%d", v->redis.port);
    snprintf(commit, sizeof(commit), "auto.commit.interval.ms=%s", commit_ms);
    return test_spawn(argv, log);
}

/* Waits for pid to end by itself; its wait status. */
static int wait_exit(pid_t pid, int timeout_ms)
{
    int status;

    for (int t = 0; t < timeout_ms; t += 50) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return status;
        test_sleep_ms(50);
    }
    return test_stop_pid(pid, SIGKILL, 5000);
}

/* ---- the offline recount ---- */

struct recount {
    long long cv[N_ITEMS][N_ITEMS];
    double trending[N_ITEMS]; /* sum of 2^((t - t0) / half life) */
};

/* Per session in click order: a known item after the last known one (not
 * the same) is one pair, both ways; every known click is trending weight. */
static void recount(struct recount *r, double t0_s)
{
    memset(r, 0, sizeof(*r));
    for (int s = 0; s < N_SESS; s++) {
        int64_t prev = -1;
        for (int j = 0; j < N_CLICK; j++) {
            int64_t it = g_item[s][j];
            if (it == UNKNOWN)
                continue;
            r->trending[it] += pow(2.0, ((double)g_time[s][j] / 1000.0 - t0_s) / HALF_LIFE_S);
            if (prev >= 0 && prev != it) {
                r->cv[prev][it]++;
                r->cv[it][prev]++;
            }
            prev = it;
        }
    }
}

static redisReply *cmd(redisContext *c, const char *fmt, const char *arg)
{
    redisReply *x = redisCommand(c, fmt, arg);

    assert_non_null(x);
    assert_int_not_equal(x->type, REDIS_REPLY_ERROR);
    return x;
}

/* Each cv:<item> set, member by member, against the recount. */
static void check_covisitation(redisContext *c, const struct recount *r)
{
    char key[32];
    long long pairs = 0;

    for (int a = 0; a < N_ITEMS; a++) {
        long long want = 0, got = 0;
        redisReply *x;
        for (int b = 0; b < N_ITEMS; b++)
            want += r->cv[a][b] > 0;
        snprintf(key, sizeof(key), "cv:%d", a);
        x = cmd(c, "ZRANGE %s 0 -1 WITHSCORES", key);
        for (size_t k = 0; k + 1 < x->elements; k += 2) {
            int b = atoi(x->element[k]->str);
            long long n = strtoll(x->element[k + 1]->str, NULL, 10);
            assert_true(b >= 0 && b < N_ITEMS);
            if (n != r->cv[a][b])
                fail_msg("cv:%d member %d: %lld in Redis, %lld in the recount", a, b, n,
                         r->cv[a][b]);
            got++;
            pairs += n;
        }
        if (got != want)
            fail_msg("cv:%d: %lld members in Redis, %lld in the recount", a, got, want);
        freeReplyObject(x);
    }
    printf("# %lld co-visitation counts equal the recount\n", pairs);
    assert_true(pairs > 300);
}

static void check_trending(redisContext *c)
{
    redisReply *x = cmd(c, "GET %s", "trending:t0");
    struct recount *r = malloc(sizeof(*r));
    char item[16];

    assert_non_null(r);
    assert_int_equal(x->type, REDIS_REPLY_STRING);
    recount(r, strtod(x->str, NULL));
    freeReplyObject(x);
    check_covisitation(c, r);
    for (int a = 0; a < N_ITEMS; a++) {
        snprintf(item, sizeof(item), "%d", a);
        x = cmd(c, "ZSCORE trending %s", item);
        if (r->trending[a] == 0) {
            assert_int_equal(x->type, REDIS_REPLY_NIL);
        } else {
            double got = strtod(x->str, NULL);
            if (fabs(got - r->trending[a]) > 1e-9 * r->trending[a])
                fail_msg("trending %d: %.12g in Redis, %.12g in the recount", a, got,
                         r->trending[a]);
        }
        freeReplyObject(x);
    }
    free(r);
}

/* Every session's state: all its clicks, its known items, its GRU state. */
static void check_sessions(struct env *v)
{
    struct state_redis_opts o = {.port = v->redis.port, .timeout_ms = 2000};
    struct sess_model *m = NULL;
    struct err e = {0};
    struct state *st = state_open_redis(&o, &e);
    static struct state_blob b[N_SESS];
    char names[N_SESS][8];
    const char *ids[N_SESS];
    float h[SESS_MAX_HIDDEN], scratch[6 * SESS_MAX_HIDDEN];

    assert_non_null(st);
    assert_int_equal(sess_model_open(&m, MODEL, &e), ERR_OK);
    for (int s = 0; s < N_SESS; s++) {
        snprintf(names[s], sizeof(names[s]), "s%d", s);
        ids[s] = names[s];
    }
    assert_int_equal(state_get_many(st, N_SESS, ids, b, &e), ERR_OK);
    for (int s = 0; s < N_SESS; s++) {
        struct sess_state ss;
        int nh = 0;
        assert_int_equal(sess_state_decode(&ss, b[s].data, b[s].len, sess_model_hidden(m), &e),
                         ERR_OK);
        assert_int_equal(ss.clicks, N_CLICK);
        memset(h, 0, sizeof(h));
        for (int j = 0; j < N_CLICK; j++) {
            if (g_item[s][j] == UNKNOWN)
                continue;
            assert_int_equal(sess_step(m, g_item[s][j], h, scratch, &e), ERR_OK);
            assert_int_equal(ss.hist[nh++], g_item[s][j]);
        }
        assert_int_equal(ss.n_hist, nh);
        assert_int_equal(ss.unknown, N_CLICK - nh);
        for (int k = 0; k < sess_model_hidden(m); k++)
            assert_float_equal(ss.h[k], h[k], 1e-5);
    }
    sess_model_close(m);
    state_close(st);
}

static void test_counts_and_sessions_survive_sigkill_exactly_once(void **st)
{
    struct env *v = *st;
    char log1[200], log2[200], log3[200], grep[600];
    int n = N_SESS * N_CLICK, status;
    int64_t first;
    redisContext *c;
    pid_t w;

    snprintf(log1, sizeof(log1), "%s/worker1.log", v->dir);
    snprintf(log2, sizeof(log2), "%s/worker2.log", v->dir);
    snprintf(log3, sizeof(log3), "%s/worker3.log", v->dir);
    produce_clicks(v);
    /* 1: dies between the counts and the states of its fifth batch */
    w = start_worker(v, log1, "clickstream.test_kill_between_writes=5", "600000");
    status = wait_exit(w, 40000);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    first = test_topic_size(v->broker.bootstrap, "predictions.clickstream");
    printf("# worker 1 killed itself after %lld predictions\n", (long long)first);
    assert_true(first < n);
    /* 2: killed from outside, mid-stream, some offsets committed */
    w = start_worker(v, log2, NULL, "300");
    if (test_wait_topic(v->broker.bootstrap, "predictions.clickstream", first + n / 2, 40000)) {
        snprintf(grep, sizeof(grep), "tail -n 5 %s %s >&2", log1, log2);
        if (system(grep))
            fprintf(stderr, "no logs\n");
        fail_msg("worker 2: no %lld predictions within 40 s", (long long)(first + n / 2));
    }
    status = test_stop_pid(w, SIGKILL, 5000);
    assert_true(WIFSIGNALED(status));
    /* the clicks of the fifth batch came back: counted already, skipped */
    snprintf(grep, sizeof(grep), "grep -q 'already counted, skipped' %s", log2);
    if (system(grep))
        fail_msg("worker 2 skipped no already-counted click (see %s)", log2);
    /* 3: to the end */
    w = start_worker(v, log3, NULL, "300");
    status = wait_exit(w, 60000);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    printf("# %lld predictions for %d clicks (redeliveries answered again)\n",
           (long long)test_topic_size(v->broker.bootstrap, "predictions.clickstream"), n);
    assert_true(test_topic_size(v->broker.bootstrap, "predictions.clickstream") >= n);
    c = redisConnect("127.0.0.1", v->redis.port);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    check_trending(c);
    redisFree(c);
    check_sessions(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_and_sessions_survive_sigkill_exactly_once),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
