/* The clickstream worker's model reload beyond what tests/test_runtime.c
 * checks for every stream (SIGHUP reloads, the worker lives on): on the
 * embedded stack (`streamml broker`, state in memory), SIGHUP swaps in a
 * new GRU model file (version 1 -> 2: the next clicks carry it; an INFO
 * model_reload alert on monitor.topic); a corrupt file is refused (a
 * WARNING model_reload alert naming the refusal), version 2 serves on and
 * the worker keeps running. Before the runtime, SIGHUP killed the worker.
 * The watch covers every experiment arm's second-stage ranker: a changed
 * arm's ranker file is reloaded by itself (model.watch_ms, no SIGHUP), and
 * so is an arm's own GRU (clickstream.arms model=), a corrupt one refused
 * naming the arm and file while the old one serves on.
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

#include "stack.h"

#define TOPICS                                                                                     \
    "reload.in:2,reload.out:2,clickstream.dlq:1,monitoring:1,arms.in:2,arms.out:2,arms.shadow:1," \
    "armg.in:2,armg.out:2,armg.shadow:1"
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

/* n more clicks of 3 sessions. */
static void produce(struct env *v, const char *topic, int n)
{
    char path[128];
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
                    "--schema",
                    "click_event",
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
    if (test_sh("tail -n 15 '%s' >&2", log))
        fprintf(stderr, "no log %s\n", log);
    fail_msg("%s: not %lld records within 30 s", topic, (long long)want);
}

static void stop_ok(pid_t w, const char *log)
{
    int st = test_stop_pid(w, SIGTERM, 20000);

    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        if (test_sh("tail -n 15 '%s' >&2", log))
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

/* topic as JSON lines into path. */
static void consume(struct env *v, const char *topic, const char *path)
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
                    NULL};
    assert_int_equal(test_run_wait(argv, path), 0);
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

/* dst not a model any more, in one step: a watch (model.watch_ms) that
 * saw the file truncated and then written would refuse it twice. */
static void write_garbage(const char *dst)
{
    char tmp[200];
    FILE *f;

    snprintf(tmp, sizeof(tmp), "%s.tmp", dst);
    assert_non_null(f = fopen(tmp, "w"));
    fputs("garbage\n", f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(rename(tmp, dst), 0);
}

static void test_sighup_reloads_the_model_or_refuses(void **st)
{
    struct env *v = *st;
    char log[128], out[128], alerts[128], model[128], mx[180];
    const char *xs[] = {"state.backend=memory", "worker.poll_ms=20", "group.id=rt-click-reload", mx,
                        NULL};
    int base = v->next;
    pid_t w;

    snprintf(model, sizeof(model), "%s/model.onnx", v->dir);
    snprintf(mx, sizeof(mx), "clickstream.model=%s", model);
    snprintf(log, sizeof(log), "%s/reload.log", v->dir);
    snprintf(out, sizeof(out), "%s/reload-predictions.jsonl", v->dir);
    snprintf(alerts, sizeof(alerts), "%s/reload-alerts.jsonl", v->dir);
    write_model(MODEL, model, '1');
    w = start_worker(v, "reload", log, xs);
    assert_true(w > 0);
    produce(v, "reload.in", 4);
    wait_or_fail(v, "reload.out", 4, w, log);

    write_model(MODEL, model, '2');
    assert_int_equal(kill(w, SIGHUP), 0);
    test_sleep_ms(1500);
    produce(v, "reload.in", 4);
    wait_or_fail(v, "reload.out", 8, w, log);

    write_garbage(model);
    assert_int_equal(kill(w, SIGHUP), 0);
    test_sleep_ms(1500);
    produce(v, "reload.in", 4);
    wait_or_fail(v, "reload.out", 12, w, log);
    stop_ok(w, log);

    consume(v, "reload.out", out);
    for (int i = base; i < v->next; i++) {
        char id[32];
        snprintf(id, sizeof(id), "\"event_id\":\"c%d\"", i);
        assert_int_equal(count(out, id,
                               i < base + 4 ? "\"model_version\":\"1\"" : "\"model_version\":\"2\"",
                               NULL),
                         1);
    }
    consume(v, "monitoring", alerts);
    assert_int_equal(count(alerts, "model_reload", "INFO", "version 1 -> 2", NULL), 1);
    assert_int_equal(count(alerts, "model_reload", "WARNING", "refused", NULL), 1);
}

/* A shadow-mode worker on <name>.in: arm a serves clickstream.model on
 * <name>.out, arm b ranks every click too, logged on <name>.shadow; arms:
 * the clickstream.arms setting. Files are watched (model.watch_ms). */
struct shadow {
    const char *name;
    char log[128], out[128], shadow[128];
    pid_t w;
};

static void start_shadow(struct env *v, struct shadow *r, const char *name, const char *exp,
                         const char *arms)
{
    char group[64], id[64], topic[64];
    const char *xs[] = {"state.backend=memory",
                        "worker.poll_ms=20",
                        "model.watch_ms=100",
                        group,
                        id,
                        "experiment.mode=shadow",
                        "experiment.variants=a:-:0.5,b:-:0.5",
                        topic,
                        "clickstream.model=" MODEL,
                        arms,
                        NULL};

    r->name = name;
    snprintf(group, sizeof(group), "group.id=rt-click-%s", name);
    snprintf(id, sizeof(id), "experiment.id=%s", exp);
    snprintf(topic, sizeof(topic), "experiment.shadow_topic=%s.shadow", name);
    snprintf(r->log, sizeof(r->log), "%s/%s.log", v->dir, name);
    snprintf(r->out, sizeof(r->out), "%s/%s-predictions.jsonl", v->dir, name);
    snprintf(r->shadow, sizeof(r->shadow), "%s/%s-shadow.jsonl", v->dir, name);
    r->w = start_worker(v, name, r->log, xs);
    assert_true(r->w > 0);
}

/* 4 more clicks, answered on both outputs (want records on each so far). */
static void shadow_clicks(struct env *v, const struct shadow *r, int want)
{
    char in[64], out[64], sh[64];

    snprintf(in, sizeof(in), "%s.in", r->name);
    snprintf(out, sizeof(out), "%s.out", r->name);
    snprintf(sh, sizeof(sh), "%s.shadow", r->name);
    produce(v, in, 4);
    wait_or_fail(v, out, want, r->w, r->log);
    wait_or_fail(v, sh, want, r->w, r->log);
}

/* The worker stopped (exit 0) and both outputs read into r->out, r->shadow. */
static void stop_shadow(struct env *v, const struct shadow *r)
{
    char out[64], sh[64];

    snprintf(out, sizeof(out), "%s.out", r->name);
    snprintf(sh, sizeof(sh), "%s.shadow", r->name);
    stop_ok(r->w, r->log);
    consume(v, out, r->out);
    consume(v, sh, r->shadow);
}

/* Click i answered once by arm a on the output with serving version sv,
 * once by arm b on the shadow topic with version bv. */
static void check_arms(const struct shadow *r, int i, const char *sv, const char *bv)
{
    char id[32], a[64], b[64];

    snprintf(id, sizeof(id), "\"event_id\":\"c%d\"", i);
    snprintf(a, sizeof(a), "\"model_version\":\"%s\"", sv);
    snprintf(b, sizeof(b), "\"model_version\":\"%s\"", bv);
    assert_int_equal(count(r->out, id, "\"variant\":\"a\"", a, NULL), 1);
    assert_int_equal(count(r->shadow, id, "\"variant\":\"b\"", b, NULL), 1);
}

/* Shadow mode: arm a serves with ranker ra, arm b ranks every click too
 * with rb, logged; rb replaced on disk is picked up by the file watch. */
static void test_watch_reloads_an_arms_ranker(void **st)
{
    struct env *v = *st;
    char ra[128], rb[128], arms[400];
    struct shadow r;
    int base = v->next;

    snprintf(ra, sizeof(ra), "%s/ra.onnx", v->dir);
    snprintf(rb, sizeof(rb), "%s/rb.onnx", v->dir);
    snprintf(arms, sizeof(arms), "clickstream.arms=a:ranker=%s,b:ranker=%s", ra, rb);
    write_model("models/clickstream/ranker.onnx", ra, '1');
    write_model("models/clickstream/ranker.onnx", rb, '1');
    start_shadow(v, &r, "arms", "rk", arms);
    shadow_clicks(v, &r, 4);

    write_model("tests/fixtures/ranker_price.onnx", rb, '1'); /* another model, same path */
    test_sleep_ms(1500);
    shadow_clicks(v, &r, 8);
    stop_shadow(v, &r);

    for (int i = base; i < v->next; i++)
        check_arms(&r, i, "1+ranker.1", i < base + 4 ? "1+ranker.1" : "1+ranker_price.1");
}

/* Shadow mode: arm a serves with clickstream.model, arm b ranks every click
 * with its own GRU gb; gb version 2 on disk is picked up by the watch, a
 * corrupt gb is refused (an alert naming arm b's file) and version 2 ranks
 * on; the served predictions stay clickstream.model's. */
static void test_watch_reloads_an_arms_gru(void **st)
{
    struct env *v = *st;
    char alerts[128], gb[128], arms[300];
    struct shadow r;
    int base = v->next;

    snprintf(gb, sizeof(gb), "%s/gb.onnx", v->dir);
    snprintf(arms, sizeof(arms), "clickstream.arms=b:model=%s", gb);
    snprintf(alerts, sizeof(alerts), "%s/armg-alerts.jsonl", v->dir);
    write_model(MODEL, gb, '1');
    start_shadow(v, &r, "armg", "gru", arms);
    shadow_clicks(v, &r, 4);

    write_model(MODEL, gb, '2'); /* arm b's GRU alone changes */
    test_sleep_ms(1500);
    shadow_clicks(v, &r, 8);

    write_garbage(gb);
    test_sleep_ms(1500);
    shadow_clicks(v, &r, 12);
    stop_shadow(v, &r);

    for (int i = base; i < v->next; i++)
        check_arms(&r, i, "1", i < base + 4 ? "1" : "2");
    consume(v, "monitoring", alerts);
    assert_int_equal(
        count(alerts, "model_reload", "WARNING", "clickstream.arms: b: model=", gb, NULL), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sighup_reloads_the_model_or_refuses),
        cmocka_unit_test(test_watch_reloads_an_arms_ranker),
        cmocka_unit_test(test_watch_reloads_an_arms_gru),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
