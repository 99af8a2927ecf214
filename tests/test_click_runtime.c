/* The clickstream worker's defects of issue 16, each a row run against
 * streamml-clickstream on the embedded stack (`streamml broker`, the test
 * Schema Registry; state in memory, so no Redis):
 *
 *   back-pressure   worker.max_inflight reached while deliveries stall (the
 *                   producer holds records for linger.ms, longer than
 *                   max.poll.interval.ms): the worker must keep polling, so
 *                   it is never dropped from its group (one assignment, no
 *                   "maximum poll interval" warning) and answers every click;
 *   schema registry clicks framed with the registry's id of click_event are
 *                   read through schema.registry.url (not dead-lettered as
 *                   local id 1, transaction_event), and the predictions are
 *                   framed with the id registered under
 *                   <output.topic>-value;
 *   hot reload      SIGHUP swaps in a new GRU model file (version 1 -> 2,
 *                   the next clicks carry it, INFO model_reload alert); a
 *                   corrupt file is refused (WARNING model_reload alert),
 *                   version 2 serves on and the worker keeps running.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "regserver.h"
#include "stack.h"

/* each row its own input and output topics: one broker for the three */
#define TOPICS                                                                                     \
    "bp.in:2,bp.out:2,reg.in:2,reg.out:2,reload.in:2,reload.out:2,clickstream.dlq:1,"              \
    "monitoring:1"
#define MODEL "models/clickstream/gru4rec.onnx"

struct env {
    struct test_broker broker;
    char dir[64];
    int next; /* clicks produced so far */
};

static int setup(void **st)
{
    struct env *v = calloc(1, sizeof(*v));

    if (!v)
        return -1;
    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-clickrt-XXXXXX");
    if (!mkdtemp(v->dir) || test_broker_start(&v->broker, TOPICS))
        return -1;
    *st = v;
    return 0;
}

static int teardown(void **st)
{
    struct env *v = *st;
    char cmd[128];

    test_broker_stop(&v->broker);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", v->dir);
    if (system(cmd))
        fprintf(stderr, "could not remove %s\n", v->dir);
    free(v);
    return 0;
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

/* n more clicks of 3 sessions; with a registry, framed with its schema_id
 * (keyed by user_id, which is the session id here). */
static void produce(struct env *v, const char *topic, int n, const char *registry, int schema_id)
{
    char path[128], id[16];
    FILE *f;

    snprintf(path, sizeof(path), "%s/clicks-%d.jsonl", v->dir, v->next);
    assert_non_null(f = fopen(path, "w"));
    for (int i = v->next; i < v->next + n; i++)
        fprintf(f,
                "{\"event_id\":\"c%d\",\"session_id\":\"s%d\",\"user_id\":\"s%d\","
                "\"item_id\":%d,\"event_type\":\"view\",\"event_time\":%lld}\n",
                i, i % 3, i % 3, 10 + i, 1767225600000LL + 1000LL * i);
    fclose(f);
    v->next += n;
    snprintf(id, sizeof(id), "%d", schema_id);
    char *argv[] = {(char *)test_bin("streamml"),
                    "produce",
                    "-b",
                    v->broker.bootstrap,
                    "-t",
                    (char *)topic,
                    "-i",
                    path,
                    "--log-level",
                    "warn",
                    registry ? "-r" : "--schema",
                    registry ? (char *)registry : "click_event",
                    registry ? "--schema-id" : NULL,
                    id,
                    NULL};
    assert_int_equal(test_run_wait(argv, NULL), 0);
}

/* The worker on <row>.in -> <row>.out with the given -X settings
 * (NULL-terminated). */
static pid_t start_worker(struct env *v, const char *row, const char *log, const char *const *xs)
{
    static char in[64], out[64];
    char *argv[64];
    int n = 0;

    snprintf(in, sizeof(in), "input.topic=%s.in", row);
    snprintf(out, sizeof(out), "output.topic=%s.out", row);
    argv[n++] = (char *)test_bin("streamml-clickstream");
    argv[n++] = "-b";
    argv[n++] = v->broker.bootstrap;
    argv[n++] = "-X";
    argv[n++] = in;
    argv[n++] = "-X";
    argv[n++] = out;
    for (const char *const *x = xs; *x && n < 58; x++) {
        argv[n++] = "-X";
        argv[n++] = (char *)*x;
    }
    argv[n++] = "--log-level";
    argv[n++] = "info";
    argv[n] = NULL;
    return test_spawn(argv, log);
}

static void wait_or_fail(struct env *v, const char *topic, int64_t want, pid_t w, const char *log)
{
    if (test_wait_topic(v->broker.bootstrap, topic, want, 30000) == 0)
        return;
    test_stop_pid(w, SIGKILL, 1000);
    if (sh("tail -n 15 '%s' >&2", log))
        fprintf(stderr, "no log %s\n", log);
    fail_msg("%s: not %lld records within 30 s", topic, (long long)want);
}

static void stop_ok(pid_t w, const char *log)
{
    int st = test_stop_pid(w, SIGTERM, 20000);

    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        if (sh("tail -n 15 '%s' >&2", log))
            fprintf(stderr, "no log %s\n", log);
        fail_msg("worker status %d (log %s)", st, log);
    }
}

/* Lines of path that contain every one of the needles (NULL-terminated). */
static int count(const char *path, ...)
{
    FILE *f = fopen(path, "r");
    char line[16384];
    int n = 0;

    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        va_list ap;
        const char *s;
        int all = 1;
        va_start(ap, path);
        while ((s = va_arg(ap, const char *)))
            all &= strstr(line, s) != NULL;
        va_end(ap);
        n += all;
    }
    fclose(f);
    return n;
}

/* topic as JSON lines into path (-r: read through the registry). */
static void consume(struct env *v, const char *topic, const char *registry, const char *path)
{
    char *argv[] = {(char *)test_bin("streamml"),
                    "consume",
                    "-b",
                    v->broker.bootstrap,
                    "-t",
                    (char *)topic,
                    "-f",
                    "-e",
                    "--log-level",
                    "error",
                    registry ? "-r" : NULL,
                    (char *)registry,
                    NULL};
    assert_int_equal(test_run_wait(argv, path), 0);
}

static void test_back_pressure_keeps_polling(void **st)
{
    struct env *v = *st;
    char log[128];
    static const char *const xs[] = {"state.backend=memory", "worker.max_inflight=4",
                                     "worker.batch_size=4", "worker.poll_ms=20",
                                     "group.id=rt-click-backpressure", "session.timeout.ms=6000",
                                     "heartbeat.interval.ms=500", "max.poll.interval.ms=6000",
                                     /* each delivery waits 9 s: a stall past the poll interval */
                                     "linger.ms=9000", NULL};
    pid_t w;

    snprintf(log, sizeof(log), "%s/backpressure.log", v->dir);
    produce(v, "bp.in", 8, NULL, 7);
    w = start_worker(v, "bp", log, xs);
    assert_true(w > 0);
    wait_or_fail(v, "bp.out", 8, w, log);
    stop_ok(w, log);
    printf("# assignments: %d, poll-interval warnings: %d\n",
           count(log, "rebalance: assigned", NULL), count(log, "maximum poll interval", NULL));
    assert_int_equal(count(log, "maximum poll interval", NULL), 0);
    assert_int_equal(count(log, "rebalance: assigned", NULL), 1);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    static char buf[64 * 1024];
    size_t n;

    assert_non_null(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static void test_schema_registry_is_used(void **st)
{
    struct env *v = *st;
    struct test_registry *r = test_registry_start(0, NULL, NULL);
    char log[128], out[128], url[160], dlq[128];
    const char *xs[] = {"state.backend=memory", "worker.poll_ms=20", "group.id=rt-click-registry",
                        url, NULL};
    int id;
    pid_t w;

    assert_non_null(r);
    /* the registry's first id is 1: locally, 1 is transaction_event */
    id = test_registry_add(r, "clickstream-value", slurp("schemas/click_event.avsc"));
    assert_int_equal(id, 1);
    snprintf(url, sizeof(url), "schema.registry.url=%s", test_registry_url(r));
    snprintf(log, sizeof(log), "%s/registry.log", v->dir);
    snprintf(out, sizeof(out), "%s/registry-predictions.jsonl", v->dir);
    snprintf(dlq, sizeof(dlq), "%s/registry-dlq.jsonl", v->dir);
    produce(v, "reg.in", 6, test_registry_url(r), id);
    w = start_worker(v, "reg", log, xs);
    assert_true(w > 0);
    if (test_wait_topic(v->broker.bootstrap, "reg.out", 6, 20000)) {
        consume(v, "clickstream.dlq", NULL, dlq);
        if (sh("head -c 600 '%s' >&2", dlq))
            fprintf(stderr, "no dead letters\n");
    }
    wait_or_fail(v, "reg.out", 6, w, log);
    stop_ok(w, log);
    assert_int_equal(test_topic_size(v->broker.bootstrap, "clickstream.dlq"), 0);
    /* framed with the registered id: read through the registry */
    consume(v, "reg.out", test_registry_url(r), out);
    assert_int_equal(count(out, "\"event_id\":\"c", "\"items\":[{", NULL), 6);
    test_registry_free(r);
}

/* src with its "model_version" metadata value ("1") set to version. */
static void write_model(const char *src, const char *dst, char version)
{
    static const char key[] = "model_version\x12\x01";
    FILE *f = fopen(src, "rb");
    char tmp[200], *buf, *p;
    long n;

    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    rewind(f);
    assert_non_null(buf = malloc((size_t)n));
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    assert_non_null(p = memmem(buf, (size_t)n, key, sizeof(key) - 1));
    p[sizeof(key) - 1] = version;
    snprintf(tmp, sizeof(tmp), "%s.tmp", dst);
    assert_non_null(f = fopen(tmp, "wb"));
    assert_int_equal(fwrite(buf, 1, (size_t)n, f), (size_t)n);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(rename(tmp, dst), 0); /* the worker never sees half a file */
    free(buf);
}

static void test_sighup_reloads_the_model_or_refuses(void **st)
{
    struct env *v = *st;
    char log[128], out[128], alerts[128], model[128], mx[180];
    const char *xs[] = {"state.backend=memory", "worker.poll_ms=20", "group.id=rt-click-reload", mx,
                        NULL};
    int base = v->next;
    pid_t w;
    FILE *f;

    snprintf(model, sizeof(model), "%s/model.onnx", v->dir);
    snprintf(mx, sizeof(mx), "clickstream.model=%s", model);
    snprintf(log, sizeof(log), "%s/reload.log", v->dir);
    snprintf(out, sizeof(out), "%s/reload-predictions.jsonl", v->dir);
    snprintf(alerts, sizeof(alerts), "%s/reload-alerts.jsonl", v->dir);
    write_model(MODEL, model, '1');
    w = start_worker(v, "reload", log, xs);
    assert_true(w > 0);
    produce(v, "reload.in", 4, NULL, 7);
    wait_or_fail(v, "reload.out", 4, w, log);

    write_model(MODEL, model, '2');
    assert_int_equal(kill(w, SIGHUP), 0);
    test_sleep_ms(1500);
    produce(v, "reload.in", 4, NULL, 7);
    wait_or_fail(v, "reload.out", 8, w, log);

    assert_non_null(f = fopen(model, "w")); /* not a model any more */
    fputs("garbage\n", f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(kill(w, SIGHUP), 0);
    test_sleep_ms(1500);
    produce(v, "reload.in", 4, NULL, 7);
    wait_or_fail(v, "reload.out", 12, w, log);
    stop_ok(w, log);

    consume(v, "reload.out", NULL, out);
    for (int i = base; i < v->next; i++) {
        char id[32];
        snprintf(id, sizeof(id), "\"event_id\":\"c%d\"", i);
        assert_int_equal(count(out, id,
                               i < base + 4 ? "\"model_version\":\"1\"" : "\"model_version\":\"2\"",
                               NULL),
                         1);
    }
    consume(v, "monitoring", NULL, alerts);
    assert_int_equal(count(alerts, "model_reload", "INFO", "version 1 -> 2", NULL), 1);
    assert_int_equal(count(alerts, "model_reload", "WARNING", "refused", NULL), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_back_pressure_keeps_polling),
        cmocka_unit_test(test_schema_registry_is_used),
        cmocka_unit_test(test_sighup_reloads_the_model_or_refuses),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
