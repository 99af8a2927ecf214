/* The transactions worker reading registry-framed messages, on the embedded
 * stack (streamml broker, redis-server) plus the test Schema Registry:
 * events written by an older and a newer producer schema are all scored;
 * an incompatible writer and an unknown id go to the DLQ with their reason;
 * while the registry is down, messages under a schema id the worker has not
 * cached yet are held (neither scored nor dead-lettered) and are scored once
 * it is back. Predictions are framed with the id the worker registered
 * under predictions.transactions-value, which `streamml consume -r` reads. */
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
#include <time.h>
#include <unistd.h>

#include "codec.h"
#include "kafka.h"
#include "registry.h"
#include "regserver.h"
#include "stack.h"

#define TOPICS "transactions:4,predictions.transactions:4,transactions.dlq:2"
#define N_OLD 300 /* written with the older schema (v0), before the outage */
#define N_NEW 200 /* written with the newer schema (v2), during the outage */

struct env {
    struct test_redis redis;
    struct test_broker broker;
    struct test_registry *srv;
    char dir[64], bootstrap[300], redis_port[40], registry[120];
    int id_v0, id_v2, id_bad;
};


static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    static char buf[64 * 1024];
    size_t n;

    assert_non_null(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strdup(buf);
}

static int add_schema(struct env *v, const char *file)
{
    char *text = slurp(file);
    int id = test_registry_add(v->srv, "transactions-value", text);

    free(text);
    return id;
}

static int setup(void **st)
{
    struct env *v = calloc(1, sizeof(*v));

    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-regw-XXXXXX");
    if (!v || !mkdtemp(v->dir) || test_redis_start(&v->redis) ||
        test_broker_start(&v->broker, TOPICS) || !(v->srv = test_registry_start(0, NULL, NULL)))
        return -1;
    snprintf(v->bootstrap, sizeof(v->bootstrap), "%s", v->broker.bootstrap);
    snprintf(v->redis_port, sizeof(v->redis_port), "redis.port=%d", v->redis.port);
    snprintf(v->registry, sizeof(v->registry), "schema.registry.url=%s", test_registry_url(v->srv));
    /* Other producers registered their schemas under transactions-value. */
    v->id_v0 = add_schema(v, "tests/fixtures/evolution/transaction_event_v0.avsc");
    v->id_v2 = add_schema(v, "tests/fixtures/evolution/transaction_event_v2.avsc");
    v->id_bad = add_schema(v, "tests/fixtures/evolution/transaction_event_badtype.avsc");
    *st = v;
    return v->id_v0 > 0 && v->id_v2 > 0 && v->id_bad > 0 ? 0 : -1;
}

static int teardown(void **st)
{
    struct env *v = *st;
    char cmd[200];

    test_broker_stop(&v->broker);
    test_redis_stop(&v->redis);
    test_registry_free(v->srv);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", v->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", v->dir);
    free(v);
    return 0;
}


/* One event as JSON in the v0 (int term/age, no job) or v2 (merchant_id,
 * channel) writer's shape. */
static int event_json(char *out, size_t cap, int i, int v2)
{
    int n = snprintf(out, cap,
                     "{\"event_id\":\"e%05d\",\"user_id\":\"u%03d\",\"event_time\":%lld,"
                     "\"amount\":%d.5,\"income\":%d,\"expenses\":%d,\"term_months\":%d,"
                     "\"age\":%d,\"home\":\"rent\",\"past_records\":false",
                     i, i % 97, 1700000000000LL + i * 60000LL, 500 + i % 900, 100 + i % 300,
                     40 + i % 50, 12 * (1 + i % 5), 20 + i % 50);
    if (v2)
        n += snprintf(out + n, cap - (size_t)n, ",\"merchant_id\":\"m%d\",\"channel\":\"web\"",
                      i % 13);
    return n + snprintf(out + n, cap - (size_t)n, "}");
}

/* `streamml produce -r URL --schema-id ID` of the old producer's events, an
 * incompatible writer's event, and (raw) a message under an unknown id. */
static void produce_old_and_bad(struct env *v)
{
    char path[200], line[600], id[16], bad_id[16];
    FILE *f;

    snprintf(path, sizeof(path), "%s/old.jsonl", v->dir);
    assert_non_null(f = fopen(path, "w"));
    for (int i = 0; i < N_OLD; i++) {
        event_json(line, sizeof(line), i, 0);
        fprintf(f, "%s\n", line);
    }
    fclose(f);
    snprintf(id, sizeof(id), "%d", v->id_v0);
    char *argv[] = {(char *)test_bin("streamml"),
                    "produce",
                    "-b",
                    v->bootstrap,
                    "-t",
                    "transactions",
                    "-r",
                    (char *)test_registry_url(v->srv),
                    "--schema-id",
                    id,
                    "-i",
                    path,
                    "--log-level",
                    "warn",
                    NULL};
    assert_int_equal(test_run_wait(argv, NULL), 0);

    snprintf(path, sizeof(path), "%s/bad.jsonl", v->dir);
    assert_non_null(f = fopen(path, "w"));
    fprintf(f, "{\"event_id\":\"bad1\",\"user_id\":\"u1\",\"event_time\":1,\"amount\":\"12\"}\n");
    fclose(f);
    snprintf(bad_id, sizeof(bad_id), "%d", v->id_bad);
    argv[9] = bad_id;
    assert_int_equal(test_run_wait(argv, NULL), 0);

    /* Schema id 4242 (0x1092), which the registry does not have. */
    snprintf(path, sizeof(path), "%s/unknown.bin", v->dir);
    assert_non_null(f = fopen(path, "wb"));
    fwrite("\0\0\0\x10\x92xyz\n", 1, 9, f);
    fclose(f);
    char *raw[] = {(char *)test_bin("streamml"),
                   "produce",
                   "-b",
                   v->bootstrap,
                   "-t",
                   "transactions",
                   "--raw",
                   "-i",
                   path,
                   "--log-level",
                   "warn",
                   NULL};
    assert_int_equal(test_run_wait(raw, NULL), 0);
}

static struct kq *producer(struct env *v)
{
    struct err e = {0};
    struct cfg_kv kv = {"bootstrap.servers", v->bootstrap, "test"};
    struct kq_opts o = {.props = &kv, .n_props = 1, .client_id = "test"};
    struct kq *q = kq_open(&o, &e);

    if (!q)
        fail_msg("kq_open: %s", e.msg);
    return q;
}

static int64_t topic_size(struct env *v, const char *topic)
{
    return test_topic_size(v->bootstrap, topic);
}

static int wait_topic(struct env *v, const char *topic, int64_t want, int timeout_ms)
{
    return test_wait_topic(v->bootstrap, topic, want, timeout_ms);
}

/* The newer producer's events, encoded while the registry is up (the
 * producer has the schema), then sent while it is down. */
static void produce_new(struct env *v, struct codec *cd)
{
    struct kq *q = producer(v);
    struct err e = {0};
    struct buf out;
    char line[600], key[64];

    buf_init(&out, 0);
    for (int i = N_OLD; i < N_OLD + N_NEW; i++) {
        int n = event_json(line, sizeof(line), i, 1);
        if (codec_from_json_id(cd, v->id_v2, line, (size_t)n, "user_id", key, sizeof(key), &out,
                               &e) ||
            kq_produce(q, "transactions", key, strlen(key), out.data, out.len, NULL, &e))
            fail_msg("event %d: %s", i, e.msg);
    }
    buf_free(&out);
    assert_int_equal(kq_close(q, 10000, &e), 0);
}

static long count_lines(struct env *v, const char *topic, const char *needle, char *first,
                        size_t cap)
{
    char out[200], line[8192];
    long n = 0;
    FILE *f;
    char *argv[] = {(char *)test_bin("streamml"),
                    "consume",
                    "-b",
                    v->bootstrap,
                    "-t",
                    (char *)topic,
                    "-f",
                    "-e",
                    "-r",
                    (char *)test_registry_url(v->srv),
                    "--log-level",
                    "error",
                    NULL};

    snprintf(out, sizeof(out), "%s/%s.jsonl", v->dir, topic);
    unlink(out);
    assert_int_equal(test_run_wait(argv, out), 0);
    assert_non_null(f = fopen(out, "r"));
    while (fgets(line, sizeof(line), f)) {
        if (!strstr(line, needle))
            continue;
        if (first && n == 0)
            snprintf(first, cap, "%s", line);
        n++;
    }
    fclose(f);
    return n;
}

static void test_worker_reads_old_and_new_writers_and_waits_out_the_registry(void **st)
{
    struct env *v = *st;
    char log[200], dlq[8192] = "", cmd[300];
    struct err e = {0};
    struct reg_opts ro = {.urls = test_registry_url(v->srv), .timeout_ms = 2000};
    struct reg *reg = reg_open(&ro, &e);
    struct codec *cd = codec_open("schemas", &e);
    pid_t w;
    int status;

    assert_non_null(reg);
    assert_non_null(cd);
    codec_use_registry(cd, reg);
    produce_old_and_bad(v);
    snprintf(log, sizeof(log), "%s/worker.log", v->dir);
    char *argv[] = {(char *)test_bin("streamml-transactions"),
                    "-b",
                    v->bootstrap,
                    "-X",
                    v->redis_port,
                    "-X",
                    v->registry,
                    "-X",
                    "group.id=regw",
                    "-X",
                    "worker.poll_ms=20",
                    "-X",
                    "schema.registry.retries=0",
                    "--log-level",
                    "info",
                    NULL};
    w = test_spawn(argv, log);
    assert_int_equal(wait_topic(v, "predictions.transactions", N_OLD, 30000), 0);
    assert_int_equal(wait_topic(v, "transactions.dlq", 2, 10000), 0);

    /* The newer producer has its schema (encoding one event fetches it)... */
    struct buf warm;
    char line[600], key[64];
    buf_init(&warm, 0);
    int n = event_json(line, sizeof(line), 0, 1);
    assert_int_equal(codec_from_json_id(cd, v->id_v2, line, (size_t)n, NULL, key, 0, &warm, &e), 0);
    buf_free(&warm);
    /* ...then the registry goes away; the worker has not cached that id. */
    test_registry_stop_serving(v->srv);
    produce_new(v, cd);
    test_sleep_ms(3000);
    assert_int_equal(topic_size(v, "predictions.transactions"), N_OLD);
    assert_int_equal(topic_size(v, "transactions.dlq"), 2);
    assert_int_equal(waitpid(w, &status, WNOHANG), 0); /* still running, holding */

    assert_int_equal(test_registry_restart(v->srv), 0);
    assert_int_equal(wait_topic(v, "predictions.transactions", N_OLD + N_NEW, 30000), 0);
    status = test_stop_pid(w, SIGTERM, 15000);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) != 0) {
        snprintf(cmd, sizeof(cmd), "tail -20 '%s' >&2", log);
        if (system(cmd) != 0)
            fprintf(stderr, "no worker log\n");
    }
    assert_int_equal(WEXITSTATUS(status), 0);
    snprintf(cmd, sizeof(cmd), "grep -q 'until the schema registry answers' '%s'", log);
    assert_int_equal(system(cmd), 0);

    /* Predictions are framed with the registered id: consume -r reads them. */
    assert_int_equal(count_lines(v, "predictions.transactions", "\"event_id\":\"e", NULL, 0),
                     N_OLD + N_NEW);
    assert_int_equal(topic_size(v, "transactions.dlq"), 2);
    assert_int_equal(count_lines(v, "transactions.dlq", "cannot be read as transaction_event.avsc",
                                 dlq, sizeof(dlq)),
                     1);
    assert_non_null(strstr(dlq, "field amount"));
    assert_int_equal(count_lines(v, "transactions.dlq", "schema id 4242", NULL, 0), 1);
    codec_close(cd);
    reg_close(reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_worker_reads_old_and_new_writers_and_waits_out_the_registry, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
