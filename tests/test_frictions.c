/* tests/test_frictions.c: a new user's first hour (issue 22), each friction
 * that was seen, run as the user ran it:
 *   - a typo in one of our keys (-X redis.prot=1) was a librdkafka error about
 *     "kafka.redis.prot"; in a file, the same; no suggestion;
 *   - a typo in an environment variable (STREAMML_REDIS_PROT) was ignored;
 *   - a mistyped subcommand or option printed up to 232 lines of help and
 *     never the right name; `config shwo` was not named;
 *   - `streamml --help` listed only the transactions worker;
 *   - `alerts --type model_reload` was refused;
 *   - `click-eval` without -t read the transactions topic and exited 0;
 *   - replay of a misspelt topic gave 0 predictions and exit 0;
 *   - an unreachable broker printed 11 repeated librdkafka lines;
 *   - -X group.id warned (a producer CONFWARN) on every start.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "stack.h"

static char dir[64], logp[128], sm[512];

/* Runs a shell line with stdout+stderr into dir/log; the exit code. */
static int sh(const char *fmt, ...)
{
    char cmd[2048], full[2300];
    va_list ap;
    int rc;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    snprintf(full, sizeof(full), "( %s ) >%s 2>&1", cmd, logp);
    rc = system(full);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static char *slurp(void)
{
    static char buf[65536];
    FILE *f = fopen(logp, "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;

    if (f)
        fclose(f);
    buf[n] = '\0';
    return buf;
}

static int lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static int count(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

static int setup(void **st)
{
    (void)st;
    snprintf(dir, sizeof(dir), "/tmp/streamml-fric-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(logp, sizeof(logp), "%s/log", dir);
    /* absolute: some runs start from another directory */
    if (!realpath(test_bin("streamml"), sm))
        return -1;
    return 0;
}

static int teardown(void **st)
{
    char cmd[128];

    (void)st;
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir); /* our own mkdtemp directory */
    return system(cmd) == 0 ? 0 : -1;
}

static void test_mistyped_keys_are_ours_with_a_suggestion(void **st)
{
    char *out;

    (void)st;
    assert_int_equal(sh("%s config show -X redis.prot=1", sm), 2);
    out = slurp();
    assert_non_null(strstr(out, "did you mean redis.port?"));
    assert_null(strstr(out, "kafka.redis.prot"));
    /* in a file too */
    assert_int_equal(sh("printf 'monitor.psi.warnin=0.1\\n' > %s/x.conf && %s config show -c "
                        "%s/x.conf", dir, sm, dir), 2);
    assert_non_null(strstr(slurp(), "did you mean monitor.psi.warning?"));
    /* a librdkafka property is still passed through */
    assert_int_equal(sh("%s config show -X queue.buffering.max.ms=7", sm), 0);
    assert_non_null(strstr(slurp(), "kafka.queue.buffering.max.ms"));
    /* an environment variable that names no key */
    assert_int_equal(sh("STREAMML_REDIS_PROT=1 %s config show", sm), 2);
    out = slurp();
    assert_non_null(strstr(out, "STREAMML_REDIS_PROT"));
    assert_non_null(strstr(out, "STREAMML_REDIS_PORT"));
    assert_int_equal(sh("STREAMML_REDIS_PORT=6380 STREAMML_KAFKA__CLIENT_ID=x %s config show",
                        sm), 0);
}

/* The docs say a Java client .properties file works: its Java-only keys were
 * refused by librdkafka. */
static void test_java_client_properties_file(void **st)
{
    char *out;

    (void)st;
    {
        char path[160];
        FILE *f;
        snprintf(path, sizeof(path), "%s/java.properties", dir);
        f = fopen(path, "w");
        assert_non_null(f);
        fputs("bootstrap.servers=broker:9092\n"
              "key.serializer=org.apache.kafka.common.serialization.StringSerializer\n"
              "value.serializer=io.confluent.kafka.serializers.KafkaAvroSerializer\n"
              "security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\n"
              "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule "
              "required username=\"alice\" password=\"s3cret\";\n",
              f);
        fclose(f);
        assert_int_equal(sh("%s config show -c %s", sm, path), 0);
    }
    out = slurp();
    assert_non_null(strstr(out, "kafka.sasl.username"));
    assert_non_null(strstr(out, "alice"));
    assert_non_null(strstr(out, "kafka.sasl.password"));
    assert_null(strstr(out, "s3cret")); /* masked */
    assert_null(strstr(out, "kafka.key.serializer"));
}

static void test_usage_errors_are_short_and_suggest(void **st)
{
    char *out;

    (void)st;
    assert_int_equal(sh("%s consme", sm), 2);
    out = slurp();
    assert_non_null(strstr(out, "did you mean consume?"));
    assert_true(lines(out) <= 2);
    assert_int_equal(sh("%s config shwo", sm), 2);
    out = slurp();
    assert_non_null(strstr(out, "did you mean show?"));
    assert_true(lines(out) <= 2);
    assert_int_equal(sh("%s featurize --outptu x.csv", sm), 2);
    out = slurp();
    assert_non_null(strstr(out, "did you mean --output?"));
    assert_non_null(strstr(out, "--help"));
    assert_true(lines(out) <= 2);
    assert_int_equal(sh("%s replay --dry-rnu", sm), 2);
    assert_true(lines(slurp()) <= 2);
    assert_int_equal(sh("%s-transactions --bogus", sm), 2);
    assert_true(lines(slurp()) <= 2);
    assert_int_equal(sh("%s --help", sm), 0);
    out = slurp();
    assert_non_null(strstr(out, "streamml-transactions"));
    assert_non_null(strstr(out, "streamml-clickstream"));
    assert_non_null(strstr(out, "streamml-images"));
}

static void test_wrong_inputs_are_not_success(void **st)
{
    struct test_broker b;
    char *out, cwd[512];

    (void)st;
    /* --type model_reload is accepted (an unreachable broker then fails: not 2) */
    assert_int_equal(sh("%s alerts --type model_reload,data_drift --help", sm), 0);
    assert_int_not_equal(sh("timeout 20 %s alerts --type model_reload -b 127.0.0.1:1 -e "
                            "-X socket.timeout.ms=2000", sm), 2);
    assert_null(strstr(slurp(), "unknown value"));
    assert_int_equal(sh("%s alerts --type data_drif", sm), 2);
    assert_non_null(strstr(slurp(), "did you mean data_drift?"));
    /* click-eval must be told the click topic */
    assert_int_equal(sh("%s click-eval -b 127.0.0.1:1", sm), 2);
    assert_non_null(strstr(slurp(), "-t TOPIC"));
    /* replay of a misspelt or empty topic */
    assert_int_equal(test_broker_start(&b, "transactions:2,empty:1"), 0);
    /* produce says what the broker acknowledged; run from outside the
     * repository, the schemas are found beside the program */
    assert_int_equal(sh("cd %s && head -n 5 %s/tests/fixtures/featurize_events.jsonl > ev.jsonl"
                        " && %s produce -b %s -i ev.jsonl",
                        dir, getcwd(cwd, sizeof(cwd)), sm, b.bootstrap),
                     0);
    assert_non_null(strstr(slurp(), "produced 5 of 5 record(s)"));
    assert_int_equal(sh("%s replay -b %s -t transactoins -o %s/r.jsonl", sm, b.bootstrap, dir), 1);
    out = slurp();
    assert_non_null(strstr(out, "no events read from topic \"transactoins\""));
    {
        char p[160];
        snprintf(p, sizeof(p), "%s/r.jsonl", dir);
        assert_int_not_equal(access(p, F_OK), 0); /* no empty backtest left behind */
    }
    assert_int_equal(sh("%s replay -b %s -t empty -o -", sm, b.bootstrap), 1);
    test_broker_stop(&b);
}

/* featurize showed nothing for seconds on a terminal; a pipe gets no
 * progress lines. script(1) gives the command a terminal. */
static void test_featurize_progress_on_a_terminal(void **st)
{
    (void)st;
    assert_int_equal(sh("for i in 1 2 3 4 5; do cat models/demo_events.jsonl; done > %s/big.jsonl"
                        " && script -qec '%s featurize -i %s/big.jsonl -o %s/big.csv' %s/tty.out",
                        dir, sm, dir, dir, dir),
                     0);
    assert_int_equal(sh("grep -a -q 'rows/s' %s/tty.out", dir), 0);
    assert_int_equal(sh("%s featurize -i %s/big.jsonl -o %s/big.csv", sm, dir, dir), 0);
    assert_null(strstr(slurp(), "rows/s"));
}

static void test_unreachable_broker_lines_collapse(void **st)
{
    char *out;
    int n;

    (void)st;
    /* consume gives up after the metadata timeout; librdkafka's connect
     * failures used to fill 11 lines, the same text each time */
    sh("timeout 60 %s consume -b 127.0.0.1:1 -t x -f", sm);
    out = slurp();
    n = count(out, "Connect to ipv4#127.0.0.1:1 failed");
    printf("# consume against an unreachable broker: %d connect-failure line(s), %d line(s)\n", n,
           lines(out));
    assert_true(n >= 1 && n <= 3);
    /* produce to an unreachable broker: bounded, one error line naming it */
    {
        int64_t t0, t1;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        t0 = ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
        assert_int_equal(sh("%s produce -b 127.0.0.1:1 --timeout 2000 -i "
                            "tests/fixtures/featurize_events.jsonl", sm), 1);
        clock_gettime(CLOCK_MONOTONIC, &ts);
        t1 = ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
        out = slurp();
        printf("# produce to an unreachable broker: exit 1 after %lld ms\n", (long long)(t1 - t0));
        assert_non_null(strstr(out, "not delivered to 127.0.0.1:1 within 2000 ms"));
        assert_non_null(strstr(out, "produced 0 of "));
        assert_true(t1 - t0 < 10000);
    }
    /* -X group.id: no producer CONFWARN */
    sh("timeout 4 %s-transactions -b 127.0.0.1:1 -X group.id=g1 -X redis.port=1", sm);
    assert_null(strstr(slurp(), "CONFWARN"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mistyped_keys_are_ours_with_a_suggestion),
        cmocka_unit_test(test_java_client_properties_file),
        cmocka_unit_test(test_usage_errors_are_short_and_suggest),
        cmocka_unit_test(test_wrong_inputs_are_not_success),
        cmocka_unit_test(test_featurize_progress_on_a_terminal),
        cmocka_unit_test(test_unreachable_broker_lines_collapse),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
