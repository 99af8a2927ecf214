/* `streamml config show|check` as a user runs it: separate processes against
 * a real redis-server and the embedded broker; exit codes and lines checked. */
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

#include "stack.h"

struct env {
    struct test_redis redis;
    struct test_broker broker;
    char out[256];
    char text[16384];
};

static int setup(void **st)
{
    static struct env v;

    memset(&v, 0, sizeof(v));
    if (test_redis_start(&v.redis) || test_broker_start(&v.broker, "transactions:2"))
        return -1;
    snprintf(v.out, sizeof(v.out), "%s/out.txt", v.redis.dir);
    *st = &v;
    return 0;
}

static int teardown(void **st)
{
    struct env *v = *st;

    test_broker_stop(&v->broker);
    test_redis_stop(&v->redis);
    return 0;
}

/* Runs `streamml config ...` with extra -X settings; returns its exit code
 * and leaves stdout+stderr in v->text. */
static int run_config(struct env *v, const char *verb, const char *const *xs)
{
    char *argv[32] = {(char *)test_bin("streamml"), "config", (char *)verb};
    int argc = 3, status;
    pid_t pid;
    FILE *f;
    size_t n;

    for (; xs && *xs && argc < 29; xs++) {
        argv[argc++] = "-X";
        argv[argc++] = (char *)*xs;
    }
    argv[argc] = NULL;
    unlink(v->out);
    pid = test_spawn(argv, v->out);
    assert_true(pid > 0);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    f = fopen(v->out, "r");
    assert_non_null(f);
    n = fread(v->text, 1, sizeof(v->text) - 1, f);
    v->text[n] = '\0';
    fclose(f);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_check_passes_against_a_working_stack(void **st)
{
    struct env *v = *st;
    char boot[300], port[32];
    const char *xs[] = {boot, port, NULL};

    snprintf(boot, sizeof(boot), "bootstrap.servers=%s", v->broker.bootstrap);
    snprintf(port, sizeof(port), "redis.port=%d", v->redis.port);
    assert_int_equal(run_config(v, "check", xs), 0);
    assert_non_null(strstr(v->text, "configuration: ok"));
    assert_non_null(strstr(v->text, "kafka: ok"));
    assert_non_null(strstr(v->text, "redis: ok"));
    assert_non_null(strstr(v->text, "model.gbdt: ok"));
    assert_non_null(strstr(v->text, "model.scorecard: ok"));
}

static void test_check_names_each_failing_part(void **st)
{
    struct env *v = *st;
    char boot[300], port[32];
    const char *xs[] = {boot, port, "model.gbdt=/nonexistent/model.json", NULL};

    snprintf(boot, sizeof(boot), "bootstrap.servers=%s", v->broker.bootstrap);
    snprintf(port, sizeof(port), "redis.port=%d", test_free_port()); /* nobody there */
    assert_int_equal(run_config(v, "check", xs), 1);
    assert_non_null(strstr(v->text, "kafka: ok"));
    assert_non_null(strstr(v->text, "redis: FAIL"));
    assert_non_null(strstr(v->text, "model.gbdt: FAIL"));
    assert_non_null(strstr(v->text, "/nonexistent/model.json"));
    assert_non_null(strstr(v->text, "model.scorecard: ok"));
}

static void test_bad_value_is_one_line_and_exit_2(void **st)
{
    struct env *v = *st;
    const char *xs[] = {"redis.port=99999", NULL};

    assert_int_equal(run_config(v, "check", xs), 2);
    assert_non_null(strstr(v->text, "redis.port"));
    assert_non_null(strstr(v->text, "99999"));
    assert_null(strchr(strchr(v->text, '\n') + 1, '\n')); /* one line */
}

/* A typo of one of our keys (our namespace, close to a key) is named as ours
 * with a suggestion (issue 22: it used to be librdkafka's "kafka.redis.prot");
 * any other unknown key is a librdkafka property (kcat-style passthrough),
 * caught by librdkafka's own check, with its origin, before any connection. */
static void test_unknown_key_is_refused(void **st)
{
    struct env *v = *st;
    const char *xs[] = {"redis.prot=6379", NULL};
    const char *ks[] = {"queue.buffering.max.mss=5", NULL};

    assert_int_equal(run_config(v, "check", xs), 2);
    assert_non_null(strstr(v->text, "redis.prot"));
    assert_non_null(strstr(v->text, "did you mean redis.port?"));
    assert_null(strstr(v->text, "kafka.redis.prot"));
    assert_non_null(strstr(v->text, "-X"));
    assert_null(strstr(v->text, "configuration: ok"));
    assert_int_equal(run_config(v, "check", ks), 2);
    assert_non_null(strstr(v->text, "No such configuration property"));
    assert_null(strstr(v->text, "configuration: ok"));
}

static void test_show_masks_secrets_and_names_origins(void **st)
{
    struct env *v = *st;
    const char *xs[] = {"redis.port=7000", NULL};

    setenv("STREAMML_REDIS_PASSWORD", "hunter2-secret", 1);
    assert_int_equal(run_config(v, "show", xs), 0);
    unsetenv("STREAMML_REDIS_PASSWORD");
    assert_null(strstr(v->text, "hunter2-secret"));
    assert_non_null(strstr(v->text, "redis.password"));
    assert_non_null(strstr(v->text, "7000"));
    assert_non_null(strstr(v->text, "# default"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_passes_against_a_working_stack),
        cmocka_unit_test(test_check_names_each_failing_part),
        cmocka_unit_test(test_bad_value_is_one_line_and_exit_2),
        cmocka_unit_test(test_unknown_key_is_refused),
        cmocka_unit_test(test_show_masks_secrets_and_names_origins),
    };
    return cmocka_run_group_tests_name("config command", tests, setup, teardown);
}
