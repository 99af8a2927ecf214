/* tests/test_secrets.c: credentials under faults.
 *
 * Against a real redis-server whose default user is off and whose only
 * user is an ACL user: AUTH user+password at connect and again after the
 * server was killed and restarted (hiredis 0.14 neither reconnects nor
 * re-authenticates by itself); a wrong password is a configuration error
 * that does not echo the password. Then a real worker given its secrets
 * through the environment: they appear neither in its argv nor in its log
 * (at debug level, librdkafka's included), and it does authenticate.
 * The clickstream worker authenticates as the ACL user too, for its session
 * states and for its co-visitation counts (before: the counts used the
 * password alone, were refused, and no session state was stored).
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
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "codec.h"
#include "event.h"
#include "kafka.h"
#include "stack.h"
#include "state.h"

#define USER "streamml-worker"
#define PASSWORD "pw-7f3c9e1d-s3cret"
#define KAFKA_SECRET "kafka-sasl-5b2e-s3cret"

static const char *const acl_args[] = {"--user",     "default", "off", "--user", USER, "on",
                                       ">" PASSWORD, "~*",      "&*",  "+@all",  NULL};


static struct state *open_as(int port, const char *user, const char *pw, struct err *e)
{
    struct state_redis_opts o = {
        .host = "127.0.0.1", .port = port, .username = user, .password = pw, .timeout_ms = 2000};

    return state_open_redis(&o, e);
}

static int put1(struct state *s, const char *entity, int64_t off, struct err *e)
{
    struct state_put p = {entity, (const unsigned char *)"blob", 4, 0, off};
    int applied = -1, rc = state_put_many(s, 1, &p, &applied, e);

    return rc ? rc : applied;
}

static void test_acl_user_reauthenticates_after_restart(void **st)
{
    struct test_redis r;
    struct err e = {0};
    struct state *s;
    int port = test_free_port(), rc, retries = 0;

    (void)st;
    assert_int_equal(test_redis_start_opts(&r, port, acl_args), 0);
    /* The default user is off: a password alone is refused. */
    assert_null(open_as(port, NULL, PASSWORD, &e));
    assert_int_equal(e.code, ERR_CONFIG);
    assert_null(open_as(port, USER, "wrong-password", &e));
    assert_int_equal(e.code, ERR_CONFIG);
    assert_null(strstr(e.msg, "wrong-password"));
    printf("# wrong password: %s\n", e.msg);
    assert_null(open_as(port, USER, NULL, &e));
    assert_non_null(strstr(e.msg, "without a password"));

    s = open_as(port, USER, PASSWORD, &e);
    assert_non_null(s);
    assert_int_equal(state_fence(s, 0, &e), ERR_OK);
    assert_int_equal(put1(s, "u1", 1, &e), 1);

    /* Killed and restarted where the handle expects it: the first call
     * finds the connection gone, a later one reconnects and AUTHs as the
     * ACL user again (the default user being off, nothing else works). */
    test_redis_stop(&r);
    assert_int_equal(test_redis_start_opts(&r, port, acl_args), 0);
    while ((rc = put1(s, "u1", 2, &e)) == ERR_RETRY && retries < 5)
        retries++;
    assert_int_equal(rc, 1);
    printf("# after restart: %d call(s) answered retry, then AUTH %s re-sent\n", retries, USER);
    state_close(s);
    test_redis_stop(&r);
}

/* Counts occurrences of needle in the file (binary-safe enough: text). */
static long grep_count(const char *path, const char *needle)
{
    char *line = NULL;
    size_t cap = 0;
    long n = 0;
    FILE *f = fopen(path, "r");

    if (!f)
        return -1;
    while (getline(&line, &cap, f) > 0)
        n += strstr(line, needle) != NULL;
    free(line);
    fclose(f);
    return n;
}

static long cmdline_has(pid_t pid, const char *needle)
{
    char path[64], buf[8192];
    size_t n;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    f = fopen(path, "r");
    assert_non_null(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    for (size_t i = 0; i < n; i++)
        if (!buf[i])
            buf[i] = ' ';
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

static void produce_events(const char *bootstrap, int n)
{
    struct cfg_kv kv = {"bootstrap.servers", bootstrap, "test"};
    struct kq_opts o = {.props = &kv, .n_props = 1, .client_id = "test-secrets"};
    struct err e = {0};
    struct kq *q = kq_open(&o, &e);
    struct codec *cd = codec_open("schemas", &e);
    struct buf b;

    assert_non_null(q);
    assert_non_null(cd);
    buf_init(&b, 0);
    for (int i = 0; i < n; i++) {
        struct txn_event ev;
        event_txn_init(&ev);
        snprintf(ev.event_id, sizeof(ev.event_id), "s%04d", i);
        snprintf(ev.user_id, sizeof(ev.user_id), "u%02d", i % 10);
        ev.event_time_ms = 1700000000000LL + i;
        ev.amount = 100 + i;
        buf_reset(&b);
        assert_int_equal(codec_encode_txn(cd, &ev, &b, &e), ERR_OK);
        assert_int_equal(
            kq_produce(q, "transactions", ev.user_id, strlen(ev.user_id), b.data, b.len, NULL, &e),
            ERR_OK);
    }
    buf_free(&b);
    codec_close(cd);
    assert_int_equal(kq_close(q, 10000, &e), ERR_OK);
}

static void test_worker_keeps_secrets_out_of_argv_and_logs(void **st)
{
    struct test_redis r;
    struct test_broker b;
    char dir[64] = "/tmp/streamml-secrets-XXXXXX", log[128], rport[32], cmd[128];
    struct err e = {0};
    struct state *s;
    static struct state_blob blob;
    const char *ent = "u03";
    pid_t w;
    long in_log, in_argv;

    (void)st;
    assert_non_null(mkdtemp(dir));
    assert_int_equal(test_redis_start_opts(&r, 0, acl_args), 0);
    assert_int_equal(test_broker_start(&b, "transactions:2,predictions.transactions:2,"
                                           "transactions.dlq:1"),
                     0);
    produce_events(b.bootstrap, 50);
    snprintf(rport, sizeof(rport), "redis.port=%d", r.port);
    snprintf(log, sizeof(log), "%s/worker.log", dir);
    /* Secrets through the environment (the child inherits it). */
    setenv("STREAMML_REDIS_PASSWORD", PASSWORD, 1);
    setenv("STREAMML_KAFKA__SASL_PASSWORD", KAFKA_SECRET, 1);
    {
        char *argv[] = {(char *)test_bin("streamml-transactions"),
                        "-b",
                        b.bootstrap,
                        "-X",
                        rport,
                        "-X",
                        "redis.username=" USER,
                        "-X",
                        "group.id=secrets",
                        "-X",
                        "worker.poll_ms=20",
                        "-X",
                        "worker.max_messages=50",
                        "-X",
                        "debug=broker,conf,security",
                        "--log-level",
                        "debug",
                        NULL};
        w = test_spawn(argv, log);
    }
    unsetenv("STREAMML_REDIS_PASSWORD");
    unsetenv("STREAMML_KAFKA__SASL_PASSWORD");
    test_sleep_ms(300);
    in_argv = cmdline_has(w, PASSWORD) + cmdline_has(w, KAFKA_SECRET);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w, 0, 60000)), 0); /* max_messages: exits */

    /* It authenticated: the state of u03 is in Redis. */
    s = open_as(r.port, USER, PASSWORD, &e);
    assert_non_null(s);
    assert_int_equal(state_get_many(s, 1, &ent, &blob, &e), ERR_OK);
    assert_true(blob.len > 0);
    state_close(s);

    in_log = grep_count(log, PASSWORD) + grep_count(log, KAFKA_SECRET) + grep_count(log, "s3cret");
    printf("# worker at debug level: %ld log lines, secrets in argv: %ld, in log: %ld\n",
           grep_count(log, ""), in_argv, in_log);
    assert_true(grep_count(log, "") > 10); /* the log was written */
    assert_int_equal(in_argv, 0);
    assert_int_equal(in_log, 0);
    test_broker_stop(&b);
    test_redis_stop(&r);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* Clicks of 2 sessions as JSON lines, produced to topic clickstream. */
static void produce_clicks(const char *bootstrap, const char *dir, int n)
{
    char path[128];
    FILE *f;

    snprintf(path, sizeof(path), "%s/clicks.jsonl", dir);
    assert_non_null(f = fopen(path, "w"));
    for (int i = 0; i < n; i++)
        fprintf(f,
                "{\"event_id\":\"c%d\",\"session_id\":\"s%d\",\"user_id\":null,"
                "\"item_id\":%d,\"event_type\":\"view\",\"event_time\":%lld}\n",
                i, i % 2, 10 + i, 1767225600000LL + 1000LL * i);
    fclose(f);
    char *argv[] = {(char *)test_bin("streamml"),
                    "produce",
                    "-b",
                    (char *)bootstrap,
                    "-t",
                    "clickstream",
                    "--schema",
                    "click_event",
                    "-i",
                    path,
                    "--log-level",
                    "warn",
                    NULL};
    assert_int_equal(test_run_wait(argv, NULL), 0);
}

static void test_clickstream_worker_authenticates_as_the_acl_user(void **st)
{
    struct test_redis r;
    struct test_broker b;
    char dir[64] = "/tmp/streamml-secretsc-XXXXXX", log[128], rport[32], cmd[160];
    struct err e = {0};
    struct state *s;
    static struct state_blob blob[2];
    const char *ents[2] = {"s0", "s1"};
    pid_t w;

    (void)st;
    assert_non_null(mkdtemp(dir));
    assert_int_equal(test_redis_start_opts(&r, 0, acl_args), 0);
    assert_int_equal(test_broker_start(&b, "clickstream:2,predictions.clickstream:2,"
                                           "clickstream.dlq:1"),
                     0);
    produce_clicks(b.bootstrap, dir, 10);
    snprintf(rport, sizeof(rport), "redis.port=%d", r.port);
    snprintf(log, sizeof(log), "%s/clickstream.log", dir);
    char *argv[] = {(char *)test_bin("streamml-clickstream"),
                    "-b",
                    b.bootstrap,
                    "-X",
                    rport,
                    "-X",
                    "redis.username=" USER,
                    "-X",
                    "group.id=secrets-clicks",
                    "-X",
                    "worker.poll_ms=20",
                    "-X",
                    "worker.max_messages=10",
                    "--log-level",
                    "info",
                    NULL};
    setenv("STREAMML_REDIS_PASSWORD", PASSWORD, 1); /* the child inherits it */
    w = test_spawn(argv, log);
    unsetenv("STREAMML_REDIS_PASSWORD");
    assert_int_equal(WEXITSTATUS(test_stop_pid(w, 0, 60000)), 0); /* max_messages: exits */

    /* both sessions' states were stored, and the counts were written */
    s = open_as(r.port, USER, PASSWORD, &e);
    assert_non_null(s);
    assert_int_equal(state_get_many(s, 2, ents, blob, &e), ERR_OK);
    state_close(s);
    printf("# clickstream worker as ACL user: states %zu + %zu bytes, %ld co-visitation "
           "error line(s)\n",
           blob[0].len, blob[1].len, grep_count(log, "co-visitation/trending counts"));
    assert_true(blob[0].len > 0 && blob[1].len > 0);
    assert_int_equal(grep_count(log, "co-visitation/trending counts"), 0);
    assert_int_equal(grep_count(log, PASSWORD), 0);
    test_broker_stop(&b);
    test_redis_stop(&r);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_acl_user_reauthenticates_after_restart),
        cmocka_unit_test(test_worker_keeps_secrets_out_of_argv_and_logs),
        cmocka_unit_test(test_clickstream_worker_authenticates_as_the_acl_user),
    };
    return cmocka_run_group_tests_name("secrets", tests, NULL, NULL);
}
