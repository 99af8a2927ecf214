/* Outcomes of the clickstream joined exactly once across SIGKILLs, the
 * experiment's sticky arms, and `streamml abtest` on the outcome records
 * (issue 20), end to end on the embedded stack (`streamml broker`,
 * redis-server, streamml-clickstream as separate processes).
 *
 * 40 sessions of 20 users click twice; from the published recommendations
 * the test writes each session's next six events: views, a repeated view,
 * a cart and a purchase (with a price) of shown items, a view of another
 * item, events of an unknown item, and, for some sessions, events past
 * the outcome horizon. Four workers of one group go through them: the first
 * is SIGKILLed before it commits anything (every click comes back), the
 * second SIGKILLs itself between an outcome join and the publishing of its
 * records (clickstream.test_kill_after_outcomes), the third is SIGKILLed
 * from outside mid-stream, the fourth runs to the end. Exploration is off
 * and co-visitation too, so a redelivered click is ranked as it was the
 * first time and the expected outcomes can be computed directly from the
 * input and the recommendations. Then:
 *   - the distinct outcome records equal that computation exactly: each
 *     impression, click-through, cart and purchase once, joined to the
 *     recommendation that led to it (event, position, arm, revenue); the
 *     re-published duplicates carry the same outcome_id and content;
 *   - every prediction's arm is the test's own SHA-256 assignment of its
 *     user (sticky: a user's two sessions share it);
 *   - `streamml abtest --outcome-records` prints the four metrics per arm,
 *     and its JSON equals the direct computation (sums, ratios, delta-method
 *     standard errors).
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

#include "abtest.h"
#include "click_event.h"
#include "codec.h"
#include "stack.h"

#define TOPICS "clickstream:2,predictions.clickstream:2,clickstream.dlq:1,clickstream.outcomes:2"
#define N_SESS 40
#define N_USERS 20
#define N_EV 8 /* per session: 2 clicks, then 6 events written from their recommendations */
#define UNKNOWN 999999
#define T_START 1767225600000LL
#define HORIZON_MS 1800000LL
#define VARIANTS "control:-:0.5,treatment:-:0.5"

struct ev {
    char id[32];
    int64_t item, time;
    int type; /* 0 view, 1 cart, 2 purchase */
    double price;
};

/* What the test expects of one event. */
struct want {
    int type; /* -1: no outcome; else 1 click, 2 cart, 3 purchase */
    int rec_j, pos;
    double revenue;
};

#define MAX_VERSIONS 8
struct pred {
    char variant[32];
    int n;
    int64_t items[64]; /* the recommendation remembered for the join (Redis) */
    int seen, nv;      /* published versions: a redelivered click is answered again, */
    int vn[MAX_VERSIONS];                /* from its session's latest state */
    int64_t vitems[MAX_VERSIONS][CLICK_SHOWN_MAX];
};

struct env {
    struct test_broker broker;
    struct test_redis redis;
    char dir[64];
    struct ev ev[N_SESS][N_EV];
    struct pred pred[N_SESS][N_EV];
    struct want want[N_SESS][N_EV];
    char outcomes[200];
};

static struct env *g_env;

static int setup(void **st)
{
    struct env *v = calloc(1, sizeof(*v));

    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-clickout-XXXXXX");
    if (!v || !mkdtemp(v->dir) || test_redis_start(&v->redis) ||
        test_broker_start(&v->broker, TOPICS))
        return -1;
    g_env = v;
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

static void produce(struct env *v, int from, int to, const char *name)
{
    static const char *const types[] = {"view", "cart", "purchase"};
    char path[200];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s.jsonl", v->dir, name);
    assert_non_null(f = fopen(path, "w"));
    for (int j = from; j < to; j++)
        for (int s = 0; s < N_SESS; s++) {
            const struct ev *e = &v->ev[s][j];
            fprintf(f,
                    "{\"event_id\":\"%s\",\"session_id\":\"s%d\",\"user_id\":\"u%d\","
                    "\"item_id\":%lld,\"event_type\":\"%s\",\"event_time\":%lld,\"price\":%.2f}\n",
                    e->id, s, s % N_USERS, (long long)e->item, types[e->type],
                    (long long)e->time, e->price);
        }
    fclose(f);
    char *argv[] = {(char *)test_bin("streamml"), "produce", "-b", v->broker.bootstrap, "-t",
                    "clickstream", "--schema", "click_event", "-i", path, "--log-level", "warn",
                    NULL};
    assert_int_equal(test_run_wait(argv, NULL), 0);
}

static pid_t start_worker(struct env *v, const char *log, const char *extra, const char *commit_ms)
{
    static char port[64], commit[64];
    char *argv[] = {(char *)test_bin("streamml-clickstream"),
                    "-b", v->broker.bootstrap,
                    "-X", port,
                    "-X", "clickstream.seed=7",
                    "-X", "clickstream.epsilon=0",
                    "-X", "clickstream.covisit=0",
                    "-X", "clickstream.outcomes_topic=clickstream.outcomes",
                    "-X", "experiment.id=exp-click",
                    "-X", "experiment.variants=" VARIANTS,
                    "-X", "clickstream.arms=treatment:lambda_diversity=0.9",
                    "-X", "worker.poll_ms=20",
                    "-X", "worker.batch_size=8",
                    "-X", "worker.idle_exit_ms=12000",
                    "-X", "group.id=it-clickstream-outcomes",
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

/* The whole topic as JSON lines in path. */
static void dump_topic(struct env *v, const char *topic, const char *path)
{
    char n[32];
    int64_t size = test_topic_size(v->broker.bootstrap, topic);
    char *argv[] = {(char *)test_bin("streamml"), "consume", "-b", v->broker.bootstrap, "-t",
                    (char *)topic, "-f", "-n", n, "--log-level", "error", NULL};

    char raw[300], cmd[700];

    snprintf(n, sizeof(n), "%lld", (long long)size);
    snprintf(raw, sizeof(raw), "%s.raw", path);
    unlink(raw);
    assert_int_equal(test_run_wait(argv, raw), 0);
    /* the records only, as `streamml consume ... > FILE` writes them (the count goes to stderr) */
    snprintf(cmd, sizeof(cmd), "grep '^{' '%s' > '%s'", raw, path);
    assert_int_equal(system(cmd), 0);
}

/* "s<s>-<j>" -> s, j. */
static int parse_id(const char *id, int *s, int *j)
{
    return sscanf(id, "s%d-%d", s, j) == 2 && *s >= 0 && *s < N_SESS && *j >= 0 && *j < N_EV;
}

/* Every prediction: its published versions (one, or more after a
 * redelivery), its arm the test's own assignment of its user (the same in
 * every version). */
static void read_predictions(struct env *v, const char *path)
{
    struct err e = {0};
    struct ab *a = ab_open_spec("exp-click", "", "split", VARIANTS, &e);
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    long dups = 0;

    assert_non_null(a);
    assert_non_null(f);
    while (getline(&line, &cap, f) > 0) {
        json_t *j = line[0] == '{' ? json_loads(line, 0, NULL) : NULL, *items;
        struct pred p = {0};
        char user[16];
        int s, k;
        if (!j)
            continue;
        assert_true(parse_id(json_string_value(json_object_get(j, "event_id")), &s, &k));
        snprintf(p.variant, sizeof(p.variant), "%s",
                 json_string_value(json_object_get(j, "variant")));
        items = json_object_get(j, "items");
        p.n = (int)json_array_size(items);
        for (int q = 0; q < p.n && q < 64; q++)
            p.items[q] = json_integer_value(json_object_get(json_array_get(items, q), "item_id"));
        snprintf(user, sizeof(user), "u%d", s % N_USERS);
        assert_string_equal(p.variant, ab_variant_name(a, ab_assign(a, user)));
        assert_string_equal(json_string_value(json_object_get(j, "experiment_id")), "exp-click");
        if (v->pred[s][k].seen) {
            dups++;
            assert_string_equal(p.variant, v->pred[s][k].variant);
        }
        v->pred[s][k].seen = 1;
        snprintf(v->pred[s][k].variant, sizeof(p.variant), "%s", p.variant);
        if (v->pred[s][k].nv < MAX_VERSIONS) {
            int q = v->pred[s][k].nv++;
            v->pred[s][k].vn[q] = p.n;
            memcpy(v->pred[s][k].vitems[q], p.items, sizeof(v->pred[s][k].vitems[q]));
        }
        json_decref(j);
    }
    free(line);
    fclose(f);
    ab_close(a);
    for (int s = 0; s < N_SESS; s++)
        for (int k = 0; k < N_EV; k++)
            if (!v->pred[s][k].seen)
                fail_msg("no prediction for s%d-%d", s, k);
    printf("# %d predictions (+%ld redelivered duplicates), arms = the test's assignment of "
           "each user\n",
           N_SESS * N_EV, dups);
}

/* The recommendations the join remembers (Redis cos:<session>), each one
 * of the published versions of its click's prediction. */
static void read_remembered(struct env *v)
{
    redisContext *c = redisConnect("127.0.0.1", v->redis.port);
    long changed = 0;

    assert_non_null(c);
    assert_int_equal(c->err, 0);
    for (int s = 0; s < N_SESS; s++) {
        redisReply *x = redisCommand(c, "LRANGE cos:s%d 0 -1", s);
        assert_non_null(x);
        assert_int_equal(x->type, REDIS_REPLY_ARRAY);
        for (size_t m = 0; m < x->elements; m++) {
            json_t *j = json_loads(x->element[m]->str, 0, NULL), *items;
            struct pred *p;
            int ss, k, match = 0;
            assert_non_null(j);
            assert_true(parse_id(json_string_value(json_object_get(j, "e")), &ss, &k));
            assert_int_equal(ss, s);
            p = &v->pred[s][k];
            items = json_object_get(j, "i");
            p->n = (int)json_array_size(items);
            for (int q = 0; q < p->n && q < 64; q++)
                p->items[q] = strtoll(json_string_value(json_array_get(items, q)), NULL, 10);
            for (int q = 0; q < p->nv && !match; q++)
                match = p->vn[q] == p->n &&
                        !memcmp(p->vitems[q], p->items, (size_t)p->n * sizeof(int64_t));
            if (!match)
                fail_msg("s%d-%d: the remembered recommendation is none of the %d published", s,
                         k, p->nv);
            changed += p->nv > 1;
            json_decref(j);
        }
        assert_int_equal(x->elements, N_EV);
        freeReplyObject(x);
    }
    redisFree(c);
    printf("# every remembered recommendation was published (%ld clicks answered more than "
           "once)\n",
           changed);
}

/* Phase 1: two views of known items per session. */
static void make_phase1(struct env *v)
{
    for (int s = 0; s < N_SESS; s++)
        for (int j = 0; j < 2; j++) {
            struct ev *e = &v->ev[s][j];
            snprintf(e->id, sizeof(e->id), "s%d-%d", s, j);
            e->item = (s * 7 + j * 3) % 200 + 1;
            e->time = T_START + 1000LL * (j * N_SESS + s);
        }
}

/* Phase 2, from the recommendations of the first two clicks. */
static void make_phase2(struct env *v)
{
    for (int s = 0; s < N_SESS; s++) {
        const struct pred *p0 = &v->pred[s][0], *p1 = &v->pred[s][1];
        int64_t hit = p1->items[s % 5], other = p0->items[(s + 1) % 7];
        int64_t late = s % 10 == 9 ? 2 * HORIZON_MS : 0; /* past the horizon: no outcome */
        struct {
            int64_t item;
            int type;
            double price;
        } plan[6] = {{hit, 0, 0}, {hit, 0, 0}, {hit, 1, 0}, {hit, 2, 10.0 + s},
                     {other, 0, 0}, {UNKNOWN, 2, 5.0}};
        if (s % 4 == 1) /* users who act on nothing shown */
            for (int q = 0; q < 4; q++)
                plan[q].item = (s * 13 + q * 17) % 300 + 400;
        if (s % 3 != 0) /* only some purchase */
            plan[3].type = 0, plan[3].price = 0;
        for (int q = 0; q < 6; q++) {
            struct ev *e = &v->ev[s][2 + q];
            snprintf(e->id, sizeof(e->id), "s%d-%d", s, 2 + q);
            e->item = plan[q].item;
            e->type = plan[q].type;
            e->price = plan[q].price;
            e->time = T_START + 100000 + late + 1000LL * (q * N_SESS + s);
        }
    }
}

/* The join as docs/clickstream.md states it, event by event per session. */
static void expect(struct env *v)
{
    for (int s = 0; s < N_SESS; s++) {
        char marks[N_EV][64][3] = {{{0}}};
        for (int k = 0; k < N_EV; k++) {
            const struct ev *e = &v->ev[s][k];
            struct want *w = &v->want[s][k];
            w->type = -1;
            for (int r = k - 1; r >= 0; r--) { /* newest first */
                const struct pred *p = &v->pred[s][r];
                int pos = -1;
                if (v->ev[s][r].time > e->time || e->time - v->ev[s][r].time > HORIZON_MS)
                    continue;
                for (int q = 0; q < p->n; q++)
                    if (p->items[q] == e->item) {
                        pos = q;
                        break;
                    }
                if (pos < 0)
                    continue;
                if (!marks[r][pos][e->type]) {
                    marks[r][pos][e->type] = 1;
                    *w = (struct want){e->type + 1, r, pos, e->type == 2 ? e->price : 0};
                }
                break;
            }
        }
    }
}

static const char *const type_names[] = {"impression", "click", "cart", "purchase"};

/* The outcome records: distinct ones equal the expectation; duplicates identical. */
static void check_outcomes(struct env *v)
{
    static char seen[N_SESS][N_EV][4];
    static char ids[N_SESS][N_EV][4][200];
    FILE *f = fopen(v->outcomes, "r");
    char *line = NULL;
    size_t cap = 0;
    long recs = 0, dups = 0, joined = 0, expected = 0;

    assert_non_null(f);
    while (getline(&line, &cap, f) > 0) {
        json_t *j = line[0] == '{' ? json_loads(line, 0, NULL) : NULL;
        const char *ty, *oid;
        int s, k, rs, rk, t;
        char user[16];
        if (!j)
            continue;
        recs++;
        ty = json_string_value(json_object_get(j, "outcome_type"));
        oid = json_string_value(json_object_get(j, "outcome_id"));
        assert_non_null(ty);
        assert_non_null(oid);
        for (t = 0; t < 4 && strcmp(ty, type_names[t]); t++)
            ;
        assert_true(t < 4);
        assert_true(parse_id(json_string_value(json_object_get(j, "event_id")), &s, &k));
        assert_true(parse_id(json_string_value(json_object_get(j, "rec_event_id")), &rs, &rk));
        assert_int_equal(rs, s);
        snprintf(user, sizeof(user), "u%d", s % N_USERS);
        assert_string_equal(json_string_value(json_object_get(j, "unit_id")), user);
        assert_string_equal(json_string_value(json_object_get(j, "variant")),
                            v->pred[s][rk].variant);
        if (seen[s][k][t]) {
            dups++;
            if (strcmp(ids[s][k][t], oid))
                fail_msg("%s of s%d-%d published as %s and %s", ty, s, k, ids[s][k][t], oid);
            json_decref(j);
            continue;
        }
        seen[s][k][t] = 1;
        snprintf(ids[s][k][t], sizeof(ids[s][k][t]), "%s", oid);
        if (t == 0) {
            assert_int_equal(rk, k);
            assert_int_equal(json_integer_value(json_object_get(j, "n_items")), v->pred[s][k].n);
        } else {
            const struct want *w = &v->want[s][k];
            if (w->type != t)
                fail_msg("s%d-%d: a %s outcome, the direct join says %s", s, k, ty,
                         w->type < 0 ? "none" : type_names[w->type]);
            assert_int_equal(rk, w->rec_j);
            assert_int_equal(json_integer_value(json_object_get(j, "position")), w->pos);
            assert_int_equal(json_integer_value(json_object_get(j, "item_id")), v->ev[s][k].item);
            assert_float_equal(json_number_value(json_object_get(j, "revenue")), w->revenue,
                               1e-9);
            joined++;
        }
        json_decref(j);
    }
    free(line);
    fclose(f);
    for (int s = 0; s < N_SESS; s++)
        for (int k = 0; k < N_EV; k++) {
            const struct want *w = &v->want[s][k];
            if (!seen[s][k][0])
                fail_msg("no impression for s%d-%d", s, k);
            if (w->type > 0) {
                expected++;
                if (!seen[s][k][w->type])
                    fail_msg("s%d-%d: its %s outcome is missing", s, k, type_names[w->type]);
            }
        }
    printf("# %ld outcome records: %d impressions and %ld joined outcomes, each once as the "
           "direct join says, + %ld re-published duplicates (same ids)\n",
           recs, N_SESS * N_EV, joined, dups);
    assert_int_equal(joined, expected);
    assert_true(expected >= 40);
}

static void test_outcomes_joined_exactly_once_across_sigkill(void **st)
{
    struct env *v = *st;
    char log[4][200], preds[200], grep[900];
    int n1 = 2 * N_SESS, status;
    int64_t seen;
    pid_t w;

    for (int i = 0; i < 4; i++)
        snprintf(log[i], sizeof(log[i]), "%s/worker%d.log", v->dir, i + 1);
    snprintf(preds, sizeof(preds), "%s/predictions.jsonl", v->dir);
    snprintf(v->outcomes, sizeof(v->outcomes), "%s/outcomes.jsonl", v->dir);
    make_phase1(v);
    produce(v, 0, 2, "phase1");
    /* 1: answers the first clicks, killed before any commit */
    w = start_worker(v, log[0], NULL, "600000");
    if (test_wait_topic(v->broker.bootstrap, "predictions.clickstream", n1, 40000))
        fail_msg("worker 1: no %d predictions within 40 s (see %s)", n1, log[0]);
    assert_int_equal(test_wait_topic(v->broker.bootstrap, "clickstream.outcomes", n1, 20000), 0);
    status = test_stop_pid(w, SIGKILL, 5000);
    assert_true(WIFSIGNALED(status));
    dump_topic(v, "predictions.clickstream", preds);
    memset(v->pred, 0, sizeof(v->pred));
    {
        /* the first two clicks' recommendations give the next events */
        FILE *f = fopen(preds, "r");
        char *line = NULL;
        size_t cap = 0;
        assert_non_null(f);
        while (getline(&line, &cap, f) > 0) {
            json_t *j = line[0] == '{' ? json_loads(line, 0, NULL) : NULL, *items;
            int s, k;
            if (!j)
                continue;
            assert_true(parse_id(json_string_value(json_object_get(j, "event_id")), &s, &k));
            items = json_object_get(j, "items");
            v->pred[s][k].n = (int)json_array_size(items);
            for (int q = 0; q < v->pred[s][k].n && q < 64; q++)
                v->pred[s][k].items[q] =
                    json_integer_value(json_object_get(json_array_get(items, q), "item_id"));
            json_decref(j);
        }
        free(line);
        fclose(f);
    }
    make_phase2(v);
    produce(v, 2, N_EV, "phase2");
    /* 2: dies between an outcome join and publishing its records */
    w = start_worker(v, log[1], "clickstream.test_kill_after_outcomes=16", "600000");
    status = wait_exit(w, 40000);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    /* 3: killed from outside mid-stream, some offsets committed */
    seen = test_topic_size(v->broker.bootstrap, "predictions.clickstream");
    w = start_worker(v, log[2], NULL, "300");
    if (test_wait_topic(v->broker.bootstrap, "predictions.clickstream", seen + 120, 40000)) {
        snprintf(grep, sizeof(grep), "grep -v debug %s %s | tail -n 12 | cut -c1-300 >&2", log[1],
                 log[2]);
        if (system(grep))
            fprintf(stderr, "no logs\n");
        fail_msg("worker 3: no %lld predictions within 40 s (see %s)", (long long)seen + 120,
                 log[2]);
    }
    status = test_stop_pid(w, SIGKILL, 5000);
    assert_true(WIFSIGNALED(status));
    /* 4: to the end */
    w = start_worker(v, log[3], NULL, "300");
    status = wait_exit(w, 60000);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    snprintf(grep, sizeof(grep), "cat %s %s %s | grep -q 'already joined'", log[1], log[2],
             log[3]);
    if (system(grep))
        fail_msg("no worker met an already-joined click (see %s)", v->dir);
    dump_topic(v, "predictions.clickstream", preds);
    memset(v->pred, 0, sizeof(v->pred));
    read_predictions(v, preds);
    read_remembered(v);
    expect(v);
    dump_topic(v, "clickstream.outcomes", v->outcomes);
    check_outcomes(v);
}

/* ---- abtest on the outcome records against the direct computation ---- */

struct sums {
    double imp[N_USERS], cnt[3][N_USERS], rev[N_USERS];
    int used[N_USERS];
};

static void direct(const struct env *v, const char *arm, struct sums *m)
{
    memset(m, 0, sizeof(*m));
    for (int s = 0; s < N_SESS; s++)
        for (int k = 0; k < N_EV; k++) {
            int u = s % N_USERS;
            const struct want *w = &v->want[s][k];
            if (!strcmp(v->pred[s][k].variant, arm)) {
                m->imp[u]++;
                m->used[u] = 1;
            }
            if (w->type > 0 && !strcmp(v->pred[s][w->rec_j].variant, arm)) {
                m->cnt[w->type - 1][u]++;
                m->rev[u] += w->revenue;
            }
        }
}

/* sum x / sum n and its delta-method standard error over the used units. */
static void ratio(const struct sums *m, const double *x, const double *n, double *r, double *se)
{
    double sx = 0, sn = 0, N = 0, vxx = 0, vnn = 0, vxn = 0;

    for (int u = 0; u < N_USERS; u++)
        if (m->used[u])
            sx += x[u], sn += n[u], N++;
    *r = sx / sn;
    for (int u = 0; u < N_USERS; u++)
        if (m->used[u]) {
            double dx = x[u] - sx / N, dn = n[u] - sn / N;
            vxx += dx * dx;
            vnn += dn * dn;
            vxn += dx * dn;
        }
    *se = sqrt((vxx - 2 * *r * vxn + *r * *r * vnn) / (N - 1) / (N * (sn / N) * (sn / N)));
}

static void test_abtest_prints_four_metrics_per_arm(void **st)
{
    struct env *v = *st;
    static const char *const arms[] = {"control", "treatment"};
    static const char *const metrics[] = {"ctr", "add_to_cart", "conversion", "revenue_per_user"};
    char out[200], table[200], *argv[] = {(char *)test_bin("streamml"), "abtest",
                                          "--outcome-records", v->outcomes, "--json", NULL};
    json_t *root, *list;
    FILE *f;
    char line[512];
    int rows = 0, header = 0;

    if (!v->outcomes[0])
        skip();
    snprintf(out, sizeof(out), "%s/abtest.json", v->dir);
    snprintf(table, sizeof(table), "%s/abtest.txt", v->dir);
    assert_int_equal(test_run_wait(argv, out), 0);
    argv[4] = NULL;
    assert_int_equal(test_run_wait(argv, table), 0);
    assert_non_null(f = fopen(table, "r"));
    while (fgets(line, sizeof(line), f)) {
        printf("# %s", line);
        header += strstr(line, "CTR") && strstr(line, "add-to-cart") &&
                  strstr(line, "conversion") && strstr(line, "revenue/user");
        rows += (!strncmp(line, "control ", 8) || !strncmp(line, "treatment ", 10)) &&
                strchr(line, '[') != NULL;
    }
    fclose(f);
    assert_int_equal(header, 1);
    assert_int_equal(rows, 2);
    assert_non_null(root = json_load_file(out, 0, NULL));
    list = json_object_get(root, "variants");
    assert_int_equal(json_array_size(list), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *a = json_array_get(list, i);
        struct sums m;
        double one[N_USERS], tot = 0, units = 0;
        const char *name = json_string_value(json_object_get(a, "variant"));
        assert_string_equal(name, arms[i]);
        direct(v, name, &m);
        for (int u = 0; u < N_USERS; u++) {
            one[u] = 1;
            tot += m.imp[u];
            units += m.used[u];
        }
        assert_int_equal(json_integer_value(json_object_get(a, "users")), (json_int_t)units);
        assert_float_equal(json_number_value(json_object_get(a, "impressions")), tot, 0);
        for (int q = 0; q < 4; q++) {
            json_t *mj = json_object_get(a, metrics[q]);
            double r, se;
            ratio(&m, q < 3 ? m.cnt[q] : m.rev, q < 3 ? m.imp : one, &r, &se);
            assert_float_equal(json_number_value(json_object_get(mj, "value")), r, 1e-12);
            assert_float_equal(json_number_value(json_object_get(mj, "se")), se, 1e-12);
            printf("# %-9s %-16s %.6f (se %.6f) = the direct computation\n", name, metrics[q], r,
                   se);
        }
    }
    json_decref(root);
}

/* price: read from the current schema (id 10), 0 from the previous one
 * (id 7: the same bytes without the trailing double), and a price that is
 * no amount dead-lettered naming the field. */
static void test_click_price_compatible_and_checked(void **st)
{
    struct err e = {0};
    struct codec *c = codec_open("schemas", &e);
    struct click_event ev = {.event_id = "e1", .session_id = "s1", .item_id = 42,
                             .type = CLICK_PURCHASE, .event_time_ms = T_START, .price = 12.5};
    struct click_event got;
    struct buf b;
    unsigned char old[256];

    (void)st;
    assert_non_null(c);
    buf_init(&b, 0);
    assert_int_equal(codec_encode_click_event(c, &ev, &b, &e), ERR_OK);
    assert_int_equal(b.data[4], 10);
    assert_int_equal(codec_decode_click_event(c, b.data, b.len, &got, &e), ERR_OK);
    assert_float_equal(got.price, 12.5, 0);
    assert_true(b.len - 8 <= sizeof(old));
    memcpy(old, b.data, b.len - 8);
    old[4] = 7;
    if (codec_decode_click_event(c, old, b.len - 8, &got, &e))
        fail_msg("previous schema: %s", e.msg);
    assert_float_equal(got.price, 0, 0);
    assert_int_equal(got.item_id, 42);
    assert_int_equal(got.type, CLICK_PURCHASE);
    for (int k = 0; k < 3; k++) {
        double bad[] = {NAN, -1, 1e12};
        ev.price = bad[k];
        buf_reset(&b);
        assert_int_equal(codec_encode_click_event(c, &ev, &b, &e), ERR_OK);
        assert_int_equal(codec_decode_click_event(c, b.data, b.len, &got, &e), ERR_DECODE);
        assert_non_null(strstr(e.msg, "price"));
    }
    buf_free(&b);
    codec_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outcomes_joined_exactly_once_across_sigkill),
        cmocka_unit_test(test_abtest_prints_four_metrics_per_arm),
        cmocka_unit_test(test_click_price_compatible_and_checked),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
