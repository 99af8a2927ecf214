/* tests/support/txn_group.c: see txn_group.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "features.h"
#include "state.h"
#include "txn_group.h"

/* Deterministic synthetic events over TG_USERS users; every tenth has no
 * amount (so the Welford count differs from the event count). */
static void tg_write_events(struct tg_env *v)
{
    FILE *f = fopen(v->events, "w");
    int64_t t = 1700000000000LL;

    assert_non_null(f);
    for (int i = 0; i < v->n_events; i++) {
        int u = (int)((i * 7919L) % TG_USERS);
        t += 1000 + (i % 13) * 1000;
        fprintf(f, "{\"event_id\":\"e%06d\",\"user_id\":\"u%04d\",\"event_time\":%lld", i, u,
                (long long)t);
        if (i % 10 != 7) {
            fprintf(f, ",\"amount\":%d", 300 + (i * 41) % 2500);
            v->want_amounts[u]++;
        }
        fprintf(f, ",\"income\":%d,\"expenses\":%d,\"term_months\":%d,\"age\":%d", 90 + i % 150,
                40 + i % 50, 12 + 12 * (i % 5), 21 + i % 45);
        fprintf(f, ",\"past_records\":%s}\n", i % 7 == 0 ? "true" : "false");
    }
    fclose(f);
}

int tg_setup(void **st)
{
    return tg_setup_n(st, TG_EVENTS, TG_TOPICS);
}

int tg_setup_n(void **st, int n_events, const char *topics)
{
    struct tg_env *v = calloc(1, sizeof(*v));

    if (!v || n_events <= 0 || n_events > 1000000)
        return -1;
    v->n_events = n_events;
    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-rel-XXXXXX");
    if (!mkdtemp(v->dir) || test_redis_start(&v->redis) || test_broker_start(&v->broker, topics))
        return -1;
    snprintf(v->events, sizeof(v->events), "%s/events.jsonl", v->dir);
    snprintf(v->redis_port, sizeof(v->redis_port), "redis.port=%d", v->redis.port);
    tg_write_events(v);
    *st = v;
    return 0;
}

int tg_setup_cluster(void **st)
{
    struct tg_env *v = calloc(1, sizeof(*v));

    if (!v)
        return -1;
    v->n_events = TG_EVENTS;
    v->cluster = calloc(1, sizeof(*v->cluster));
    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-rel-XXXXXX");
    if (!v->cluster || !mkdtemp(v->dir) || test_rcluster_start(v->cluster) ||
        test_broker_start(&v->broker, TG_TOPICS))
        return -1;
    snprintf(v->events, sizeof(v->events), "%s/events.jsonl", v->dir);
    snprintf(v->redis_port, sizeof(v->redis_port), "redis.nodes=%s", v->cluster->nodes);
    tg_write_events(v);
    *st = v;
    return 0;
}

int tg_teardown(void **st)
{
    struct tg_env *v = *st;
    char cmd[200];

    test_broker_stop(&v->broker);
    if (v->cluster)
        test_rcluster_stop(v->cluster);
    else
        test_redis_stop(&v->redis);
    free(v->cluster);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", v->dir);
    if (getenv("STREAMML_KEEP_TEST_DIR")) /* debugging: keep the workers' logs */
        fprintf(stderr, "kept %s\n", v->dir);
    else if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", v->dir);
    free(v);
    return 0;
}

pid_t tg_produce(struct tg_env *v, const char *rate)
{
    char *argv[] = {(char *)test_bin("streamml"),
                    "produce",
                    "-b",
                    v->broker.bootstrap,
                    "-t",
                    "transactions",
                    "-i",
                    v->events,
                    "--log-level",
                    "error",
                    rate ? "--rate" : NULL,
                    (char *)rate,
                    NULL};

    return test_spawn(argv, "/dev/null");
}

void tg_log_path(const struct tg_env *v, const char *name, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s.log", v->dir, name);
}

/* A worker of group "rel", logging to <dir>/<name>.log. The group timeouts
 * are short so that a stalled member is noticed within seconds. */
pid_t tg_start_worker(struct tg_env *v, const char *name, const char *batch)
{
    return tg_start_worker_x(v, name, batch, NULL);
}

pid_t tg_start_worker_x(struct tg_env *v, const char *name, const char *batch,
                        const char *const *extra)
{
    char log[200], bs[64];
    /* Long enough to sit out a CLIENT PAUSE (zombie and backpressure tests). */
    char timeout[] = "redis.timeout_ms=30000";
    char *argv[] = {(char *)test_bin("streamml-transactions"),
                    "-b",
                    v->broker.bootstrap,
                    "-X",
                    v->redis_port,
                    "-X",
                    "group.id=rel",
                    "-X",
                    "worker.poll_ms=20",
                    "-X",
                    bs,
                    "-X",
                    "session.timeout.ms=6000",
                    "-X",
                    "max.poll.interval.ms=6000",
                    "-X",
                    "heartbeat.interval.ms=500",
                    "-X",
                    timeout,
                    "-X",
                    "auto.commit.interval.ms=1000",
                    "--log-level",
                    "info",
                    /* room for extra: 8 "-X", value pairs, then the terminator */
                    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                    NULL, NULL, NULL, NULL, NULL};
    size_t n = sizeof(argv) / sizeof(argv[0]) - 17; /* the first NULL */

    for (size_t i = 0; extra && extra[i]; i++) {
        assert_true(i < 8);
        argv[n++] = "-X";
        argv[n++] = (char *)extra[i];
    }
    snprintf(bs, sizeof(bs), "worker.batch_size=%s", batch);
    tg_log_path(v, name, log, sizeof(log));
    return test_spawn(argv, log);
}

/* Waits until the file contains needle (count times); 0 or -1 on timeout. */
int tg_wait_log(const char *path, const char *needle, int count, int timeout_ms)
{
    char line[2048];

    for (int waited = 0; waited < timeout_ms; waited += 20) {
        FILE *f = fopen(path, "r");
        int n = 0;
        while (f && fgets(line, sizeof(line), f))
            n += strstr(line, needle) != NULL;
        if (f)
            fclose(f);
        if (n >= count)
            return 0;
        test_sleep_ms(20);
    }
    return -1;
}

/* Reads every prediction and counts copies per event id. */
struct tg_tally tg_read_predictions(struct tg_env *v)
{
    int *seen = calloc((size_t)v->n_events, sizeof(*seen));
    char out[200], line[4096];
    struct tg_tally t = {0};
    FILE *f;
    char *argv[] = {(char *)test_bin("streamml"),
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

    snprintf(out, sizeof(out), "%s/predictions.jsonl", v->dir);
    unlink(out);
    assert_non_null(seen);
    assert_int_equal(test_run_wait(argv, out), 0);
    f = fopen(out, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        const char *p = strstr(line, "\"event_id\"");
        long id;
        if (!p || !(p = strchr(p + 10, 'e')))
            continue;
        id = strtol(p + 1, NULL, 10);
        if (id >= 0 && id < v->n_events)
            seen[id]++;
        t.records++;
    }
    fclose(f);
    for (int i = 0; i < v->n_events; i++) {
        t.missing += seen[i] == 0;
        t.duplicates += seen[i] > 1 ? seen[i] - 1 : 0;
        t.worst = seen[i] > t.worst ? seen[i] : t.worst;
    }
    free(seen);
    return t;
}

/* Waits until every event has a prediction (a member's partitions are
 * idle until its session expires, so output can pause for seconds). */
struct tg_tally tg_wait_all_predicted(struct tg_env *v, int timeout_ms)
{
    struct tg_tally t = tg_read_predictions(v);

    for (int waited = 0; t.missing && waited < timeout_ms; waited += 1000) {
        test_sleep_ms(1000);
        t = tg_read_predictions(v);
    }
    return t;
}

long tg_users_wrong(struct tg_env *v)
{
    struct err e = {0};
    struct state_redis_opts ro = {.host = "127.0.0.1", .port = v->redis.port, .timeout_ms = 2000,
                                  .nodes = v->cluster ? v->cluster->nodes : ""};
    struct state *s = state_open_redis(&ro, &e);
    struct state_blob blobs[TG_USERS];
    char ids[TG_USERS][16];
    const char *ents[TG_USERS];
    long wrong = 0;

    assert_non_null(s);
    for (int u = 0; u < TG_USERS; u++) {
        snprintf(ids[u], sizeof(ids[u]), "u%04d", u);
        ents[u] = ids[u];
    }
    assert_int_equal(state_get_many(s, TG_USERS, ents, blobs, &e), ERR_OK);
    for (int u = 0; u < TG_USERS; u++) {
        struct feat_state fs;
        if (feat_state_decode(&fs, blobs[u].data, blobs[u].len, &e) ||
            (int)feat_state_count(&fs, "amount") != v->want_amounts[u])
            wrong++;
    }
    state_close(s);
    return wrong;
}
