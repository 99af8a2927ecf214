/* tests/test_runtime.c: what the worker runtime (common/worker/worker.h) gives
 * every stream, checked per stream on the embedded stack (streamml broker,
 * redis-server, the test Schema Registry). One row per stream; each row
 * runs the same three checks (issue 16):
 *   - back-pressure: with worker.max_inflight reached and deliveries held
 *     back (linger.ms 8 s) longer than max.poll.interval.ms (6 s), the
 *     worker pauses fetching but keeps polling, so it never exceeds the poll
 *     interval (no "maximum poll interval" in its log) and every event is
 *     answered;
 *   - schema registry: with schema.registry.url set, the input written by a
 *     registry producer is read, and the predictions are framed with the id
 *     the worker registered under "<output topic>-value": a consumer that
 *     asks the registry decodes every one;
 *   - hot reload: SIGHUP reloads the stream's models (the worker lives on,
 *     logs "model reloaded (SIGHUP)") and events after it are answered.
 * The clickstream and images rows were added as those streams moved onto
 * the runtime. Each check failed on the clickstream worker before it moved
 * (it stopped polling at max_inflight, opened its codec without the
 * registry, and had no SIGHUP handler: the signal killed it); the images
 * row's reload refusal and model switch are in test_runtime_images.c.
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

#define N_EVENTS 60

struct row {
    const char *stream;    /* worker binary streamml-<stream> */
    const char *topics;    /* for the broker */
    const char *in, *out;  /* input and output topics */
    const char *in_schema; /* `streamml produce -s` */
    const char *id_field;  /* a field every output record carries */
    void (*events)(FILE *f, int n);
    const char *const *extra; /* -X settings the stream needs (NULL-terminated) */
};

static void txn_events(FILE *f, int n)
{
    for (int i = 0; i < n; i++)
        fprintf(f,
                "{\"event_id\":\"rt%04d\",\"user_id\":\"u%03d\",\"event_time\":%lld,"
                "\"amount\":%d,\"income\":120,\"expenses\":60,\"term_months\":24,\"age\":40,"
                "\"past_records\":false}\n",
                i, i % 17, 1700000000000LL + i * 1000LL, 100 + i);
}

/* Sessions of known items (the GRU model's catalog), keyed by session. */
static void click_events(FILE *f, int n)
{
    for (int i = 0; i < n; i++)
        fprintf(f,
                "{\"event_id\":\"rc%04d\",\"session_id\":\"s%02d\",\"user_id\":null,"
                "\"item_id\":%d,\"event_type\":\"view\",\"event_time\":%lld}\n",
                i, i % 7, 10 + i, 1700000000000LL + i * 1000LL);
}

/* Image events: the PNG samples in turn, under images.root. */
static void image_events(FILE *f, int n)
{
    for (int i = 0; i < n; i++)
        fprintf(f,
                "{\"image_id\":\"rt%04d\",\"patient_id\":\"p%02d\",\"uri\":\"fundus_0%d_g%d.png\","
                "\"event_time\":%lld}\n",
                i, i % 7, i % 5, i % 5, 1767225600000LL + i * 1000LL);
}

static const char *const image_settings[] = {"images.root=models/images/samples",
                                             "images.model=models/images/fundus_cnn.onnx", NULL};

static const struct row rows[] = {
    {"transactions", "transactions:4,predictions.transactions:4,transactions.dlq:1,monitoring:1",
     "transactions", "predictions.transactions", "transaction_event", "\"event_id\"", txn_events,
     NULL},
    {"clickstream", "clickstream:4,predictions.clickstream:4,clickstream.dlq:1,monitoring:1",
     "clickstream", "predictions.clickstream", "click_event", "\"event_id\"", click_events, NULL},
    {"images", "images:2,predictions.images:2,images.dlq:1,monitoring:1", "images",
     "predictions.images", "image_event", "\"image_id\"", image_events, image_settings},
};

struct env {
    const struct row *r;
    struct test_redis redis;
    struct test_broker broker;
    struct test_registry *srv;
    char dir[64], redis_port[40], events[128];
};

/* cmocka prestate: *st is the row. */
static int setup(void **st)
{
    const struct row *r = *st;
    struct env *v = calloc(1, sizeof(*v));
    FILE *f;

    if (!v)
        return -1;
    v->r = r;
    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-rt-XXXXXX");
    if (!mkdtemp(v->dir) || test_redis_start(&v->redis) || test_broker_start(&v->broker, r->topics))
        return -1;
    snprintf(v->redis_port, sizeof(v->redis_port), "redis.port=%d", v->redis.port);
    snprintf(v->events, sizeof(v->events), "%s/events.jsonl", v->dir);
    if (!(f = fopen(v->events, "w")))
        return -1;
    r->events(f, N_EVENTS);
    fclose(f);
    *st = v;
    return 0;
}

static int teardown(void **st)
{
    struct env *v = *st;
    char cmd[128];

    test_broker_stop(&v->broker);
    test_redis_stop(&v->redis);
    test_registry_free(v->srv);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", v->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", v->dir);
    free(v);
    return 0;
}

/* The stream's worker with the row's settings, then extra (NULL-terminated). */
static pid_t start_worker(struct env *v, const char *name, const char *const *extra)
{
    char bin[64], log[128];
    const char *argv[48] = {NULL,
                            "-b",
                            v->broker.bootstrap,
                            "-X",
                            v->redis_port,
                            "-X",
                            "worker.poll_ms=20",
                            "-X",
                            "metrics.port=0",
                            "--log-level",
                            "info"};
    size_t n = 11;

    snprintf(bin, sizeof(bin), "streamml-%s", v->r->stream);
    argv[0] = test_bin(bin);
    for (size_t i = 0; v->r->extra && v->r->extra[i] && n < 44; i++) {
        argv[n++] = "-X";
        argv[n++] = v->r->extra[i];
    }
    for (size_t i = 0; extra && extra[i] && n < 44; i++) {
        argv[n++] = "-X";
        argv[n++] = extra[i];
    }
    snprintf(log, sizeof(log), "%s/%s.log", v->dir, name);
    return test_spawn((char *const *)argv, log);
}

static void produce(struct env *v, const char *registry)
{
    const char *argv[] = {test_bin("streamml"),
                          "produce",
                          "-b",
                          v->broker.bootstrap,
                          "-t",
                          v->r->in,
                          "-s",
                          v->r->in_schema,
                          "-i",
                          v->events,
                          "--log-level",
                          "error",
                          registry ? "-r" : NULL,
                          registry,
                          NULL};

    assert_int_equal(test_run_wait((char *const *)argv, NULL), 0);
}

/* Output records decoded (through the registry when given) that carry the
 * row's id field. */
static int count_output(struct env *v, const char *registry)
{
    char out[128], line[8192];
    const char *argv[] = {test_bin("streamml"),
                          "consume",
                          "-b",
                          v->broker.bootstrap,
                          "-t",
                          v->r->out,
                          "-f",
                          "-e",
                          "--log-level",
                          "error",
                          registry ? "-r" : NULL,
                          registry,
                          NULL};
    FILE *f;
    int n = 0;

    snprintf(out, sizeof(out), "%s/out.jsonl", v->dir);
    unlink(out);
    if (test_run_wait((char *const *)argv, out) != 0 || !(f = fopen(out, "r")))
        return -1;
    while (fgets(line, sizeof(line), f))
        n += strstr(line, v->r->id_field) != NULL;
    fclose(f);
    return n;
}

static int wait_output(struct env *v, const char *registry, int want, int timeout_ms)
{
    int n = 0;

    for (int waited = 0; waited <= timeout_ms; waited += 500) {
        if ((n = count_output(v, registry)) >= want)
            break;
        test_sleep_ms(500);
    }
    return n;
}

static int log_has(const struct env *v, const char *name, const char *needle)
{
    char path[128], line[4096];
    FILE *f;
    int found = 0;

    snprintf(path, sizeof(path), "%s/%s.log", v->dir, name);
    if (!(f = fopen(path, "r")))
        return 0;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

static void stop_worker(pid_t w)
{
    int status = test_stop_pid(w, SIGTERM, 15000);

    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_backpressure_keeps_polling(void **st)
{
    static const char *const extra[] = {"worker.max_inflight=20",
                                        "worker.batch_size=10",
                                        "linger.ms=8000",
                                        "max.poll.interval.ms=6000",
                                        "session.timeout.ms=6000",
                                        "group.id=rt-bp",
                                        NULL};
    struct env *v = *st;
    pid_t w = start_worker(v, "bp", extra);
    int n;

    assert_true(w > 0);
    produce(v, NULL);
    n = wait_output(v, NULL, N_EVENTS, 45000);
    stop_worker(w);
    printf("# %s: max_inflight 20, deliveries held 8 s, max.poll.interval 6 s: %d of %d "
           "answered, poll interval %s\n",
           v->r->stream, n, N_EVENTS,
           log_has(v, "bp", "maximum poll interval") ? "EXCEEDED" : "kept");
    assert_int_equal(n, N_EVENTS);
    assert_false(log_has(v, "bp", "maximum poll interval"));
}

static void test_schema_registry_is_used(void **st)
{
    struct env *v = *st;
    char url[160];
    const char *extra[] = {url, "group.id=rt-reg", NULL};
    pid_t w;
    int n;

    assert_non_null(v->srv = test_registry_start(0, NULL, NULL));
    snprintf(url, sizeof(url), "schema.registry.url=%s", test_registry_url(v->srv));
    w = start_worker(v, "reg", extra);
    assert_true(w > 0);
    produce(v, test_registry_url(v->srv));
    n = wait_output(v, test_registry_url(v->srv), N_EVENTS, 30000);
    stop_worker(w);
    printf("# %s with schema.registry.url: %d of %d predictions decoded through the registry\n",
           v->r->stream, n, N_EVENTS);
    assert_int_equal(n, N_EVENTS);
}

static void test_sighup_reloads_the_models(void **st)
{
    static const char *const extra[] = {"group.id=rt-hup", NULL};
    struct env *v = *st;
    pid_t w = start_worker(v, "hup", extra);
    int n, alive, reloaded = 0;

    assert_true(w > 0);
    test_sleep_ms(1500); /* set up, signal handlers in place */
    assert_int_equal(kill(w, SIGHUP), 0);
    for (int i = 0; i < 100 && !(reloaded = log_has(v, "hup", "model reloaded (SIGHUP)")); i++)
        test_sleep_ms(100);
    alive = waitpid(w, NULL, WNOHANG) == 0;
    produce(v, NULL);
    n = alive ? wait_output(v, NULL, N_EVENTS, 30000) : 0;
    printf("# %s: SIGHUP -> %s, %s; %d of %d events after it answered\n", v->r->stream,
           alive ? "alive" : "DEAD", reloaded ? "models reloaded" : "NO reload", n, N_EVENTS);
    if (alive)
        stop_worker(w);
    assert_true(alive);
    assert_true(reloaded);
    assert_int_equal(n, N_EVENTS);
}

/* The three checks of row i. */
#define ROW(i)                                                                                     \
    cmocka_unit_test_prestate_setup_teardown(test_backpressure_keeps_polling, setup, teardown,     \
                                             (void *)&rows[i]),                                    \
        cmocka_unit_test_prestate_setup_teardown(test_schema_registry_is_used, setup, teardown,    \
                                                 (void *)&rows[i]),                                \
        cmocka_unit_test_prestate_setup_teardown(test_sighup_reloads_the_models, setup, teardown,  \
                                                 (void *)&rows[i])

int main(void)
{
    const struct CMUnitTest tests[] = {ROW(0), ROW(1)};

    return cmocka_run_group_tests(tests, NULL, NULL);
}
