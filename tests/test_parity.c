/* Online/offline parity: one event stream through the live worker (embedded
 * broker + real Redis) and through `streamml replay` (memory and Redis
 * state, topic and Avro container file) and `streamml featurize --topic`.
 * Feature vectors must be bit-identical and scores equal, event by event.
 *
 * The stream has several events per user, arrivals out of event-time order
 * (late by minutes to days) and gaps that cross the 1 h / 24 h / 30 d
 * window boundaries, plus one invalid event that both sides must refuse. */
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
#include "features.h"
#include "kafka.h"
#include "rusers.h"
#include "stack.h"

#define N_USERS 48
#define PER_USER 25
#define N_EVENTS (N_USERS * PER_USER)
#define BAD_ID N_EVENTS /* the invalid event's number */
#define TOPICS "transactions:4,predictions.transactions:4,transactions.dlq:1"

struct pred {
    int seen;
    double probability, score_probability;
    long score;
    char decision[16], hash[17];
    float x[FEAT_TXN_DIM];
    int has_x;
};

struct env {
    struct test_redis redis;
    struct test_broker broker;
    char dir[128], events[200], redis_port[32];
    int n_late;
    struct pred worker[N_EVENTS + 1], replay[N_EVENTS + 1], redis_replay[N_EVENTS + 1],
        file_replay[N_EVENTS + 1], featurize[N_EVENTS + 1];
};


/* Gaps between a user's events, chosen to cross every window boundary. */
static const int64_t gaps_s[] = {20,        180,       3300,       3700,       5 * 3600, 23 * 3600,
                                 25 * 3600, 2 * 86400, 29 * 86400, 31 * 86400, 420,      86400};
/* How late an out-of-order event is: inside and outside each ring. */
static const int64_t late_s[] = {600, 5400, 26 * 3600, 3 * 86400, 40 * 86400};

/* Round-robin over users, so each user's arrival order is its generation
 * order; every 6th event of a user arrives late (older than its previous). */
static void write_events(struct env *v)
{
    FILE *f = fopen(v->events, "w");
    int64_t t[N_USERS];

    assert_non_null(f);
    for (int u = 0; u < N_USERS; u++)
        t[u] = 1700000000000LL + (int64_t)u * 7919;
    for (int k = 0; k < PER_USER; k++) {
        for (int u = 0; u < N_USERS; u++) {
            int i = k * N_USERS + u;
            int64_t when;
            t[u] += gaps_s[(k + u) % 12] * 1000;
            when = t[u];
            if (k % 6 == 5) {
                when -= late_s[(k + u) % 5] * 1000;
                v->n_late++;
            }
            fprintf(f, "{\"event_id\":\"e%05d\",\"user_id\":\"u%03d\",\"event_time\":%lld", i, u,
                    (long long)when);
            if (i % 7 != 3)
                fprintf(f, ",\"amount\":%d", 300 + (i * 37) % 4000);
            fprintf(f, ",\"income\":%d,\"expenses\":%d,\"term_months\":%d,\"age\":%d", 60 + i % 250,
                    30 + i % 70, 12 + 12 * (i % 5), 19 + i % 60);
            if (i % 3 == 0)
                fprintf(f, ",\"debt\":%d,\"home\":\"owner\",\"job\":\"freelance\"",
                        (i * 13) % 3000);
            if (i % 4 == 0)
                fprintf(f, ",\"credit_limit\":6000,\"credit_used\":%d,\"inquiries_6m\":%d",
                        (i * 31) % 6000, i % 5);
            fprintf(f, ",\"past_records\":%s}\n", i % 11 == 0 ? "true" : "false");
        }
    }
    /* Refused online (dead letter) and offline (reported, left out). */
    fprintf(f,
            "{\"event_id\":\"e%05d\",\"user_id\":\"u000\",\"event_time\":%lld,"
            "\"amount\":-5}\n",
            BAD_ID, (long long)t[0]);
    fclose(f);
}


static int setup(void **st)
{
    struct env *v = calloc(1, sizeof(*v));

    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-parity-XXXXXX");
    if (!mkdtemp(v->dir) || test_redis_start(&v->redis) || test_broker_start(&v->broker, TOPICS))
        return -1;
    snprintf(v->events, sizeof(v->events), "%s/events.jsonl", v->dir);
    snprintf(v->redis_port, sizeof(v->redis_port), "redis.port=%d", v->redis.port);
    write_events(v);
    *st = v;
    return 0;
}

static int teardown(void **st)
{
    struct env *v = *st;
    char cmd[200];

    test_broker_stop(&v->broker);
    test_redis_stop(&v->redis);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", v->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", v->dir);
    free(v);
    return 0;
}

static char *path(struct env *v, const char *name)
{
    static char buf[4][300];
    static int k;
    char *p = buf[k++ % 4];

    snprintf(p, 300, "%s/%s", v->dir, name);
    return p;
}

static int64_t topic_size(struct env *v, const char *topic)
{
    return test_topic_size(v->broker.bootstrap, topic);
}

static int event_no(const char *id)
{
    long n = id && id[0] == 'e' ? strtol(id + 1, NULL, 10) : -1;
    return n >= 0 && n <= N_EVENTS ? (int)n : -1;
}

static void parse_vector(json_t *a, struct pred *p)
{
    assert_true(json_is_array(a));
    assert_int_equal(json_array_size(a), FEAT_TXN_DIM);
    for (int i = 0; i < FEAT_TXN_DIM; i++) {
        json_t *x = json_array_get(a, (size_t)i);
        /* %.9g round-trips a float exactly: strtof gives the same bits. */
        if (json_is_null(x)) {
            p->x[i] = NAN;
        } else {
            char s[64];
            snprintf(s, sizeof(s), "%.17g", json_number_value(x));
            p->x[i] = strtof(s, NULL);
        }
    }
    p->has_x = 1;
}

/* Predictions (worker's via consume, or replay's) by event number. */
static long read_preds(const char *file, struct pred *out)
{
    char *line = NULL;
    size_t cap = 0;
    long n = 0;
    FILE *f = fopen(file, "r");

    assert_non_null(f);
    memset(out, 0, sizeof(*out) * (N_EVENTS + 1));
    while (getline(&line, &cap, f) > 0) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        int id;
        struct pred *p;
        if (line[0] != '{') { /* the tool's stderr shares the log */
            json_decref(j);
            continue;
        }
        assert_non_null(j);
        id = event_no(json_string_value(json_object_get(j, "event_id")));
        assert_true(id >= 0);
        p = &out[id];
        p->seen++;
        p->probability = json_number_value(json_object_get(j, "probability"));
        p->score_probability = json_number_value(json_object_get(j, "score_probability"));
        p->score = (long)json_integer_value(json_object_get(j, "score"));
        snprintf(p->decision, sizeof(p->decision), "%s",
                 json_string_value(json_object_get(j, "decision")));
        snprintf(p->hash, sizeof(p->hash), "%s",
                 json_string_value(json_object_get(j, "feature_hash")));
        if (json_object_get(j, "features"))
            parse_vector(json_object_get(j, "features"), p);
        json_decref(j);
        n++;
    }
    free(line);
    fclose(f);
    return n;
}

/* featurize CSV: event_id,user_id,event_time,<features>,label. */
static long read_featurize(const char *file, struct pred *out)
{
    char *line = NULL;
    size_t cap = 0;
    long n = 0;
    FILE *f = fopen(file, "r");

    assert_non_null(f);
    memset(out, 0, sizeof(*out) * (N_EVENTS + 1));
    assert_true(getline(&line, &cap, f) > 0); /* header */
    while (getline(&line, &cap, f) > 0) {
        char *p = line, *comma;
        int id = event_no(line);
        assert_true(id >= 0);
        for (int skip = 0; skip < 3; skip++)
            p = strchr(p, ',') + 1;
        for (int i = 0; i < FEAT_TXN_DIM; i++) {
            comma = strchr(p, ',');
            assert_non_null(comma);
            out[id].x[i] = comma == p ? NAN : strtof(p, NULL);
            p = comma + 1;
        }
        out[id].has_x = 1;
        out[id].seen++;
        n++;
    }
    free(line);
    fclose(f);
    return n;
}

static int same_bits(const float *a, const float *b)
{
    for (int i = 0; i < FEAT_TXN_DIM; i++) {
        if (isnan(a[i]) && isnan(b[i]))
            continue;
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0) {
            fprintf(stderr, "feature %s: %.9g vs %.9g\n", feat_txn_names()[i], (double)a[i],
                    (double)b[i]);
            return 0;
        }
    }
    return 1;
}

static void run_worker(struct env *v)
{
    char bin[300];
    char *argv[] = {bin,
                    "-b",
                    v->broker.bootstrap,
                    "-X",
                    v->redis_port,
                    "-X",
                    "group.id=parity",
                    "-X",
                    "worker.poll_ms=20",
                    "--log-level",
                    "warn",
                    NULL};
    pid_t pid;
    int waited = 0;

    snprintf(bin, sizeof(bin), "%s", test_bin("streamml-transactions")); /* static buffer */
    assert_int_equal(
        test_run_wait((char *[]){(char *)test_bin("streamml"), "produce", "-b", v->broker.bootstrap,
                            "-t", "transactions", "-i", v->events, "--log-level", "error", NULL},
                 "/dev/null"),
        0); /* the invalid event encodes: the worker refuses it */
    pid = test_spawn(argv, path(v, "worker.log"));
    assert_true(pid > 0);
    while (topic_size(v, "predictions.transactions") < N_EVENTS && waited < 40000) {
        test_sleep_ms(200);
        waited += 200;
    }
    if (test_stop_pid(pid, SIGTERM, 10000) != 0 || waited >= 40000) {
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "tail -5 '%s' >&2", path(v, "worker.log"));
        if (system(cmd) != 0)
            fprintf(stderr, "no worker log\n");
        fail_msg("the worker did not predict every event");
    }
}

static void replay(struct env *v, const char *out, const char *const *extra)
{
    char *argv[32] = {(char *)test_bin("streamml"),
                      "replay",
                      "-b",
                      v->broker.bootstrap,
                      "-X",
                      v->redis_port,
                      "--features",
                      "--skip-invalid",
                      "-q",
                      "-o",
                      (char *)out,
                      "--log-level",
                      "error"};
    int n = 13;

    for (; extra && *extra; extra++)
        argv[n++] = (char *)*extra;
    argv[n] = NULL;
    assert_int_equal(test_run_wait(argv, path(v, "replay.log")), 0);
}

static int files_equal(const char *a, const char *b)
{
    char cmd[700];

    snprintf(cmd, sizeof(cmd), "cmp -s '%s' '%s'", a, b);
    return system(cmd) == 0;
}

/* Users in the worker's store (unprefixed), whatever its layout. */
static long redis_users(struct env *v)
{
    redisContext *c = redisConnect("127.0.0.1", v->redis.port);
    long n;

    assert_true(c && !c->err);
    n = test_redis_users(c, "");
    redisFree(c);
    return n;
}

static long redis_count(struct env *v, const char *pattern)
{
    redisContext *c = redisConnect("127.0.0.1", v->redis.port);
    char cursor[32] = "0";
    long n = 0;

    assert_non_null(c);
    assert_int_equal(c->err, 0);
    do {
        redisReply *r = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        assert_non_null(r);
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        n += (long)r->element[1]->elements;
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    redisFree(c);
    return n;
}

static void test_worker_and_replay_agree_bit_for_bit(void **st)
{
    struct env *v = *st;
    char avro[300], csv[300];
    static const char *const redis_args[] = {"--state", "redis", "--run-id", "parity", NULL};
    char *consume[] = {(char *)test_bin("streamml"),
                       "consume",
                       "-b",
                       v->broker.bootstrap,
                       "-t",
                       "predictions.transactions",
                       "-f",
                       "-e",
                       "--log-level",
                       "error",
                       NULL};
    char *archive[] = {(char *)test_bin("streamml"),
                       "consume",
                       "-b",
                       v->broker.bootstrap,
                       "-t",
                       "transactions",
                       "-f",
                       "-e",
                       "--avro-file",
                       avro,
                       "--log-level",
                       "error",
                       NULL};
    char *featurize[] = {(char *)test_bin("streamml"),
                         "featurize",
                         "-b",
                         v->broker.bootstrap,
                         "-t",
                         "transactions",
                         "-o",
                         csv,
                         "--skip-invalid",
                         "--log-level",
                         "error",
                         NULL};
    const char *file_args[] = {"--avro-file", avro, NULL};
    long users_before, checked = 0;

    snprintf(avro, sizeof(avro), "%s", path(v, "events.avro"));
    snprintf(csv, sizeof(csv), "%s", path(v, "features.csv"));

    assert_true(v->n_late >= 100);
    run_worker(v);
    assert_int_equal(test_run_wait(consume, path(v, "worker.jsonl")), 0);
    assert_int_equal(read_preds(path(v, "worker.jsonl"), v->worker), N_EVENTS);
    users_before = redis_users(v);
    assert_int_equal(users_before, N_USERS);

    replay(v, path(v, "replay1.jsonl"), NULL);
    replay(v, path(v, "replay2.jsonl"), NULL);
    assert_true(files_equal(path(v, "replay1.jsonl"), path(v, "replay2.jsonl")));
    replay(v, path(v, "replay_redis.jsonl"), redis_args);
    /* Same bytes whatever the state backend; the run's keys are gone and
     * production state is untouched. */
    assert_true(files_equal(path(v, "replay1.jsonl"), path(v, "replay_redis.jsonl")));
    assert_int_equal(redis_count(v, "replay:*"), 0);
    assert_int_equal(redis_users(v), users_before);

    assert_int_equal(test_run_wait(archive, "/dev/null"), 0); /* archived as it is, invalid one too */
    replay(v, path(v, "replay_file.jsonl"), file_args);
    assert_int_equal(test_run_wait(featurize, "/dev/null"), 0);

    assert_int_equal(read_preds(path(v, "replay1.jsonl"), v->replay), N_EVENTS);
    assert_int_equal(read_preds(path(v, "replay_file.jsonl"), v->file_replay), N_EVENTS);
    assert_int_equal(read_featurize(csv, v->featurize), N_EVENTS);
    for (int i = 0; i < N_EVENTS; i++) {
        const struct pred *w = &v->worker[i], *r = &v->replay[i];
        char hash[17];
        assert_int_equal(w->seen, 1);
        assert_int_equal(r->seen, 1);
        assert_true(r->has_x);
        /* The worker publishes the vector's hash; the replay's vector hashes
         * to it, and equals featurize's and the file replay's bit for bit. */
        snprintf(hash, sizeof(hash), "%016llx", (unsigned long long)feat_hash(r->x, FEAT_TXN_DIM));
        assert_string_equal(hash, w->hash);
        assert_string_equal(r->hash, w->hash);
        assert_true(same_bits(r->x, v->featurize[i].x));
        assert_true(same_bits(r->x, v->file_replay[i].x));
        assert_true(r->probability == w->probability);
        assert_true(r->score_probability == w->score_probability);
        assert_int_equal(r->score, w->score);
        assert_string_equal(r->decision, w->decision);
        assert_true(v->file_replay[i].probability == w->probability);
        checked++;
    }
    assert_int_equal(v->worker[BAD_ID].seen + v->replay[BAD_ID].seen, 0);
    assert_int_equal(checked, N_EVENTS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_worker_and_replay_agree_bit_for_bit),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
