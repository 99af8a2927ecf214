/* tests/test_kafka_security.c: a bad Kafka TLS/SASL setup is refused, by
 * `streamml config check` and by a worker, with an error naming the key,
 * and the secrets given with it never reach the output.
 *
 * librdkafka accepts some of these settings one by one and refuses them only
 * when the client is created (a CA file that cannot be read, an unknown SASL
 * mechanism); kq_open names the property and where it was set. The secrets
 * (sasl.password, ssl.key.password) come from the environment, as a
 * deployment would pass them. librdkafka 2.0.2's mock cluster has no SASL
 * or TLS listener, so authentication itself cannot be exercised here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stack.h"

#define SASL_SECRET "sasl-pw-7f3a-do-not-print"
#define KEY_SECRET "ssl-key-pw-91c2-do-not-print"

struct sec_env {
    char dir[64];
    char log[128];
};

static int setup(void **st)
{
    struct sec_env *v = calloc(1, sizeof(*v));

    if (!v)
        return -1;
    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-sec-XXXXXX");
    if (!mkdtemp(v->dir))
        return -1;
    snprintf(v->log, sizeof(v->log), "%s/out.log", v->dir);
    setenv("STREAMML_KAFKA__SASL_PASSWORD", SASL_SECRET, 1);
    setenv("STREAMML_KAFKA__SSL_KEY_PASSWORD", KEY_SECRET, 1);
    *st = v;
    return 0;
}

static int teardown(void **st)
{
    struct sec_env *v = *st;

    unsetenv("STREAMML_KAFKA__SASL_PASSWORD");
    unsetenv("STREAMML_KAFKA__SSL_KEY_PASSWORD");
    unlink(v->log);
    rmdir(v->dir);
    free(v);
    return 0;
}

/* The whole output of the last run. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf = calloc(1, 1 << 20);
    size_t n;

    assert_non_null(f);
    assert_non_null(buf);
    n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Runs argv, output to v->log; returns its exit code. */
static int run(struct sec_env *v, char *const argv[])
{
    unlink(v->log);
    return test_run_wait(argv, v->log);
}

/* Output names want, and neither secret appears. */
static void assert_names_no_secret(struct sec_env *v, const char *want)
{
    char *out = slurp(v->log);

    if (!strstr(out, want))
        fprintf(stderr, "expected \"%s\" in:\n%s\n", want, out);
    assert_non_null(strstr(out, want));
    assert_null(strstr(out, SASL_SECRET));
    assert_null(strstr(out, KEY_SECRET));
    free(out);
}

static void test_check_refuses_unreadable_ca(void **st)
{
    struct sec_env *v = *st;
    char *argv[] = {(char *)test_bin("streamml"),
                    "config",
                    "check",
                    "-X",
                    "bootstrap.servers=127.0.0.1:1",
                    "-X",
                    "security.protocol=ssl",
                    "-X",
                    "ssl.ca.location=/nonexistent/streamml-ca.pem",
                    "-X",
                    "state.backend=memory",
                    "--log-level",
                    "debug",
                    NULL};

    assert_int_not_equal(run(v, argv), 0);
    assert_names_no_secret(v, "kafka: FAIL");
    assert_names_no_secret(v, "(kafka.ssl.ca.location, -X)");
}

static void test_check_refuses_unknown_sasl_mechanism(void **st)
{
    struct sec_env *v = *st;
    char *argv[] = {(char *)test_bin("streamml"),
                    "config",
                    "check",
                    "-X",
                    "bootstrap.servers=127.0.0.1:1",
                    "-X",
                    "security.protocol=sasl_plaintext",
                    "-X",
                    "sasl.mechanisms=NOT-A-MECHANISM",
                    "-X",
                    "sasl.username=streamml",
                    "-X",
                    "state.backend=memory",
                    "--log-level",
                    "debug",
                    NULL};

    assert_int_not_equal(run(v, argv), 0);
    assert_names_no_secret(v, "Unsupported SASL mechanism");
    assert_names_no_secret(v, "(kafka.sasl.mechanisms, -X)");
}

/* A value librdkafka refuses at once: a configuration error, before any
 * connection, naming key and origin. */
static void test_check_refuses_unknown_protocol(void **st)
{
    struct sec_env *v = *st;
    char *argv[] = {(char *)test_bin("streamml"),
                    "config",
                    "check",
                    "-X",
                    "bootstrap.servers=127.0.0.1:1",
                    "-X",
                    "security.protocol=sasl_tls",
                    "-X",
                    "state.backend=memory",
                    NULL};

    assert_int_not_equal(run(v, argv), 0);
    assert_names_no_secret(v, "kafka.security.protocol (-X)");
}

/* A TLS client key file that is missing, with its password in the
 * environment: refused, the key named, the password not printed. */
static void test_worker_refuses_missing_client_key(void **st)
{
    struct sec_env *v = *st;
    char *argv[] = {(char *)test_bin("streamml-transactions"),
                    "-b",
                    "127.0.0.1:1",
                    "-X",
                    "security.protocol=ssl",
                    "-X",
                    "ssl.key.location=/nonexistent/streamml-client.key",
                    "-X",
                    "ssl.certificate.location=/nonexistent/streamml-client.pem",
                    "-X",
                    "state.backend=memory",
                    "--log-level",
                    "debug",
                    NULL};
    int rc = run(v, argv);

    assert_int_not_equal(rc, 0);
    assert_true(rc != 128 + 6 && rc != 128 + 11); /* refused, not crashed */
    assert_names_no_secret(v, "ssl.");
    assert_names_no_secret(v, "(kafka.ssl.");
}

static void test_worker_refuses_unknown_sasl_mechanism(void **st)
{
    struct sec_env *v = *st;
    char *argv[] = {(char *)test_bin("streamml-transactions"),
                    "-b",
                    "127.0.0.1:1",
                    "-X",
                    "security.protocol=sasl_ssl",
                    "-X",
                    "sasl.mechanisms=NOT-A-MECHANISM",
                    "-X",
                    "sasl.username=streamml",
                    "-X",
                    "state.backend=memory",
                    "--log-level",
                    "debug",
                    NULL};

    assert_int_equal(run(v, argv), 2); /* a configuration error */
    assert_names_no_secret(v, "(kafka.sasl.mechanisms, -X)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_check_refuses_unreadable_ca, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_refuses_unknown_sasl_mechanism, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_refuses_unknown_protocol, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_refuses_missing_client_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_refuses_unknown_sasl_mechanism, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("kafka_security", tests, NULL, NULL);
}
