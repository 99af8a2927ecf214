/* Configuration: precedence, validation, passthrough, secrets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"

static char g_path[64];

static void write_conf(const char *text)
{
    FILE *f;

    snprintf(g_path, sizeof(g_path), "/tmp/streamml-cfg-XXXXXX");
    int fd = mkstemp(g_path);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
}

static int teardown(void **st)
{
    (void)st;
    if (g_path[0])
        unlink(g_path);
    g_path[0] = '\0';
    unsetenv("STREAMML_REDIS_PORT");
    unsetenv("STREAMML_KAFKA__BOOTSTRAP_SERVERS");
    return 0;
}

static const char *kafka_value(const struct cfg *c, const char *key, const char **origin)
{
    size_t n;
    const struct cfg_kv *kv = cfg_kafka(c, &n);

    for (size_t i = 0; i < n; i++)
        if (strcmp(kv[i].key, key) == 0) {
            if (origin)
                *origin = kv[i].origin;
            return kv[i].value;
        }
    return NULL;
}

static void test_defaults_are_loaded(void **st)
{
    (void)st;
    struct cfg *c = cfg_new();
    assert_string_equal(cfg_str(c, "input.topic"), "transactions");
    assert_int_equal(cfg_int(c, "redis.port"), 6379);
    assert_string_equal(cfg_origin(c, "redis.port"), "default");
    cfg_free(c);
}

/* clickstream.mmr_lambda weighed relevance; its successor lambda_diversity
 * weighs diversity. The old key is refused with the converted value, from
 * -X, a file and the environment alike, and nothing is set. */
static void test_renamed_mmr_key_refused_with_its_conversion(void **st)
{
    struct cfg *c = cfg_new();
    struct err e = {0};
    char dir[] = "/tmp/streamml-cfg-XXXXXX", path[256];
    FILE *f;

    (void)st;
    assert_int_equal(cfg_set(c, "clickstream.mmr_lambda", "0.8", "-X", &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "clickstream.lambda_diversity=0.2 for mmr_lambda=0.8"));
    assert_int_equal(cfg_set(c, "clickstream.mmr_lambda", "x", "-X", &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "lambda_diversity = 1 - mmr_lambda"));
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/a.properties", dir);
    assert_non_null(f = fopen(path, "w"));
    fprintf(f, "clickstream.mmr_lambda=1\n");
    fclose(f);
    assert_int_equal(cfg_load_file(c, path, &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "clickstream.lambda_diversity=0 for mmr_lambda=1"));
    setenv("STREAMML_CLICKSTREAM_MMR_LAMBDA", "0.25", 1);
    assert_int_equal(cfg_load_env(c, &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "lambda_diversity=0.75 for mmr_lambda=0.25"));
    unsetenv("STREAMML_CLICKSTREAM_MMR_LAMBDA");
    assert_float_equal(cfg_double(c, "clickstream.lambda_diversity"), 0.5, 0);
    assert_string_equal(cfg_str(c, "clickstream.mmr_similarity"), "cosine");
    unlink(path);
    rmdir(dir);
    cfg_free(c);
}

static void test_file_env_and_args_in_precedence_order(void **st)
{
    (void)st;
    struct err e = {0};
    struct cfg *c = cfg_new();
    char *x[] = {"redis.host=10.0.0.9"};

    write_conf("# comment\nredis.port = 7000\nredis.host: filehost\n\nmodel.version=7\n");
    setenv("STREAMML_REDIS_PORT", "7001", 1);
    assert_int_equal(cfg_load_standard(c, g_path, x, 1, &e), ERR_OK);
    assert_int_equal(cfg_int(c, "redis.port"), 7001);           /* env beats file */
    assert_string_equal(cfg_str(c, "redis.host"), "10.0.0.9"); /* -X beats all */
    assert_string_equal(cfg_str(c, "model.version"), "7");     /* file beats default */
    assert_non_null(strstr(cfg_origin(c, "model.version"), ":5"));
    cfg_free(c);
}

static void test_bad_value_names_key_file_and_line(void **st)
{
    (void)st;
    struct err e = {0};
    struct cfg *c = cfg_new();

    write_conf("redis.port=7000\nredis.port=99999\n");
    assert_int_equal(cfg_load_file(c, g_path, &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "redis.port"));
    assert_non_null(strstr(e.msg, ":2"));
    cfg_free(c);
}

static void test_non_numeric_and_fractional_ints_refused(void **st)
{
    (void)st;
    struct err e = {0};
    struct cfg *c = cfg_new();

    assert_int_equal(cfg_set(c, "redis.port", "12ab", "-X", &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "not a number"));
    assert_int_equal(cfg_set(c, "worker.batch_size", "1.5", "-X", &e), ERR_CONFIG);
    assert_int_equal(cfg_set(c, "decision.review_threshold", "nan", "-X", &e), ERR_CONFIG);
    cfg_free(c);
}

/* Issue 23 case 8: strtod took hex, exponents and octal-looking values. */
static void test_numbers_must_be_plain_decimal(void **st)
{
    (void)st;
    struct err e = {0};
    struct cfg *c = cfg_new();
    const char *bad_int[] = {"0x10", "1e3", "010", " 16", "+16", "16 ", "-", "", "1.0"};
    const char *bad_dbl[] = {"0x0.1p0", "inf", ".", "1e", "0.5x", "00.5"};

    for (size_t i = 0; i < sizeof(bad_int) / sizeof(bad_int[0]); i++) {
        assert_int_equal(cfg_set(c, "redis.port", bad_int[i], "-X", &e), ERR_CONFIG);
        assert_non_null(strstr(e.msg, "redis.port"));
    }
    for (size_t i = 0; i < sizeof(bad_dbl) / sizeof(bad_dbl[0]); i++)
        assert_int_equal(cfg_set(c, "decision.review_threshold", bad_dbl[i], "-X", &e),
                         ERR_CONFIG);
    assert_int_equal(cfg_set(c, "redis.port", "16", "-X", &e), ERR_OK);
    assert_int_equal(cfg_int(c, "redis.port"), 16);
    assert_int_equal(cfg_set(c, "worker.max_messages", "999999999999999", "-X", &e), ERR_OK);
    assert_true(cfg_int(c, "worker.max_messages") == 999999999999999LL);
    assert_int_equal(cfg_set(c, "decision.review_threshold", "0.25", "-X", &e), ERR_OK);
    assert_int_equal(cfg_set(c, "decision.review_threshold", ".25", "-X", &e), ERR_OK);
    assert_int_equal(cfg_set(c, "decision.review_threshold", "2.5e-1", "-X", &e), ERR_OK);
    assert_int_equal(cfg_set(c, "monitor.hysteresis", "0", "-X", &e), ERR_OK);
    cfg_free(c);
}

/* Issue 23 case 8: a NUL byte was reported as "line too long". */
static void test_nul_byte_is_named(void **st)
{
    (void)st;
    struct err e = {0};
    struct cfg *c = cfg_new();
    FILE *f;

    write_conf("");
    f = fopen(g_path, "w");
    fwrite("redis.host=a\0b\nredis.port=7000\n", 1, 31, f);
    fclose(f);
    assert_int_equal(cfg_load_file(c, g_path, &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "NUL"));
    assert_non_null(strstr(e.msg, ":1)"));
    assert_null(strstr(e.msg, "too long"));
    cfg_free(c);
}

/* Issue 23 case 8: the maximum batch size is bounded (memory: 3.3 kB a slot). */
static void test_batch_size_bounded(void **st)
{
    (void)st;
    struct err e = {0};
    struct cfg *c = cfg_new();

    assert_int_equal(cfg_set(c, "worker.batch_size", "100000", "-X", &e), ERR_CONFIG);
    assert_int_equal(cfg_set(c, "worker.batch_size", "10000", "-X", &e), ERR_OK);
    assert_int_equal(cfg_int(c, "worker.max_future_skew_ms"), 3600000);
    cfg_free(c);
}

static void test_line_without_separator_is_an_error(void **st)
{
    (void)st;
    struct err e = {0};
    struct cfg *c = cfg_new();

    write_conf("redis.port 7000\n");
    assert_int_equal(cfg_load_file(c, g_path, &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "key=value"));
    cfg_free(c);
}

static void test_unknown_file_keys_pass_to_kafka(void **st)
{
    (void)st;
    struct err e = {0};
    struct cfg *c = cfg_new();
    const char *origin = NULL;

    /* A Java client .properties file works as it is. */
    write_conf("bootstrap.servers=broker:9092\nkafka.linger.ms=20\n");
    assert_int_equal(cfg_load_file(c, g_path, &e), ERR_OK);
    assert_string_equal(kafka_value(c, "bootstrap.servers", &origin), "broker:9092");
    assert_non_null(strstr(origin, ":1"));
    assert_string_equal(kafka_value(c, "linger.ms", NULL), "20");
    cfg_free(c);
}

static void test_env_kafka_property(void **st)
{
    (void)st;
    struct err e = {0};
    struct cfg *c = cfg_new();

    setenv("STREAMML_KAFKA__BOOTSTRAP_SERVERS", "h:1", 1);
    assert_int_equal(cfg_load_env(c, &e), ERR_OK);
    assert_string_equal(kafka_value(c, "bootstrap.servers", NULL), "h:1");
    cfg_free(c);
}

static void test_unknown_arg_key_is_kafka_and_unknown_dotted_own_key_fails(void **st)
{
    (void)st;
    struct err e = {0};
    struct cfg *c = cfg_new();

    assert_int_equal(cfg_set_arg(c, "fetch.wait.max.ms=5", &e), ERR_OK);
    assert_string_equal(kafka_value(c, "fetch.wait.max.ms", NULL), "5");
    assert_int_equal(cfg_set(c, "redis.hots", "x", "-X", &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "redis.hots"));
    assert_int_equal(cfg_set_arg(c, "novalue", &e), ERR_CONFIG);
    cfg_free(c);
}

static void test_secrets_refused_on_command_line_and_masked(void **st)
{
    (void)st;
    struct err e = {0};
    struct cfg *c = cfg_new();
    static char buf[32768];
    FILE *f;

    assert_int_equal(cfg_set_arg(c, "redis.password=hunter2", &e), ERR_CONFIG);
    assert_int_equal(cfg_set_arg(c, "sasl.password=hunter2", &e), ERR_CONFIG);
    write_conf("hunter2\n");
    assert_int_equal(cfg_set(c, "redis.password_file", g_path, "test", &e), ERR_OK);
    assert_int_equal(cfg_finish(c, &e), ERR_OK);
    assert_string_equal(cfg_str(c, "redis.password"), "hunter2");
    f = fmemopen(buf, sizeof(buf) - 1, "w");
    cfg_dump(c, f);
    fclose(f);
    assert_null(strstr(buf, "hunter2"));
    assert_non_null(strstr(buf, "********"));
    cfg_free(c);

    /* Issue 23 case 8: credentials inside a URL were printed as they are. */
    c = cfg_new();
    assert_int_equal(cfg_set(c, "schema.registry.url",
                             "http://alice:s3cret@reg1:8081,https://bob:pw2@reg2/x,http://reg3",
                             "test", &e), ERR_OK);
    memset(buf, 0, sizeof(buf));
    f = fmemopen(buf, sizeof(buf) - 1, "w");
    cfg_dump(c, f);
    fclose(f);
    assert_null(strstr(buf, "s3cret"));
    assert_null(strstr(buf, "pw2"));
    assert_non_null(strstr(buf, "http://alice:********@reg1:8081,https://bob:********@reg2/x,"
                                "http://reg3"));
    cfg_free(c);
}

static void test_cross_key_checks(void **st)
{
    (void)st;
    struct err e = {0};
    struct cfg *c = cfg_new();

    assert_int_equal(cfg_set(c, "decision.review_threshold", "0.9", "-X", &e), ERR_OK);
    assert_int_equal(cfg_finish(c, &e), ERR_CONFIG);
    assert_int_equal(cfg_set(c, "decision.review_threshold", "0.1", "-X", &e), ERR_OK);
    assert_int_equal(cfg_set(c, "state.backend", "sqlite", "-X", &e), ERR_OK);
    assert_int_equal(cfg_finish(c, &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "state.backend"));
    cfg_free(c);
}

/* clickstream.search is exact or ivf; the IVF sizes are ranged ints. */
static void test_clickstream_search_values(void **st)
{
    (void)st;
    struct err e = {0};
    struct cfg *c = cfg_new();

    assert_string_equal(cfg_str(c, "clickstream.search"), "ivf");
    assert_int_equal(cfg_set(c, "clickstream.search", "exact", "-X", &e), ERR_OK);
    assert_int_equal(cfg_finish(c, &e), ERR_OK);
    assert_int_equal(cfg_set(c, "clickstream.search", "annoy", "-X", &e), ERR_OK);
    assert_int_equal(cfg_finish(c, &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "clickstream.search"));
    assert_int_equal(cfg_set(c, "clickstream.ivf_probe", "0", "-X", &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "clickstream.ivf_probe"));
    assert_int_equal(cfg_set(c, "clickstream.ivf_lists", "-3", "-X", &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "clickstream.ivf_lists"));
    cfg_free(c);
}

static void test_missing_file_is_config_error(void **st)
{
    (void)st;
    struct err e = {0};
    struct cfg *c = cfg_new();

    assert_int_equal(cfg_load_file(c, "/nonexistent/streamml.conf", &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "/nonexistent/streamml.conf"));
    cfg_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_defaults_are_loaded, teardown),
        cmocka_unit_test_teardown(test_renamed_mmr_key_refused_with_its_conversion, teardown),
        cmocka_unit_test_teardown(test_file_env_and_args_in_precedence_order, teardown),
        cmocka_unit_test_teardown(test_bad_value_names_key_file_and_line, teardown),
        cmocka_unit_test_teardown(test_non_numeric_and_fractional_ints_refused, teardown),
        cmocka_unit_test_teardown(test_numbers_must_be_plain_decimal, teardown),
        cmocka_unit_test_teardown(test_nul_byte_is_named, teardown),
        cmocka_unit_test_teardown(test_batch_size_bounded, teardown),
        cmocka_unit_test_teardown(test_line_without_separator_is_an_error, teardown),
        cmocka_unit_test_teardown(test_unknown_file_keys_pass_to_kafka, teardown),
        cmocka_unit_test_teardown(test_env_kafka_property, teardown),
        cmocka_unit_test_teardown(test_unknown_arg_key_is_kafka_and_unknown_dotted_own_key_fails,
                                  teardown),
        cmocka_unit_test_teardown(test_secrets_refused_on_command_line_and_masked, teardown),
        cmocka_unit_test_teardown(test_cross_key_checks, teardown),
        cmocka_unit_test_teardown(test_clickstream_search_values, teardown),
        cmocka_unit_test_teardown(test_missing_file_is_config_error, teardown),
    };
    return cmocka_run_group_tests_name("cfg", tests, NULL, NULL);
}
