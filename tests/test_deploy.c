/* Deployment files, checked without a Docker engine or a cluster:
 * docker-compose.yml and deploy/k8s through tools/check_deploy.py (YAML,
 * structure, probes, labels, selectors, KEDA caps, `docker-compose config
 * -q` when Debian's docker-compose is installed), the configuration files
 * through streamml's own loader, and the transactions command line of
 * deploy/commands.txt (the one compose and the manifests run) run as it is
 * against the embedded stack and the test Schema Registry. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kafka.h"
#include "regserver.h"
#include "stack.h"

#define PY "/usr/bin/python3"
#define SKIPPED 77


/* Runs one check of tools/check_deploy.py; its output is shown on failure. */
static void check(const char *what)
{
    char log[] = "/tmp/streamml-deploy-XXXXXX", cmd[300];
    int fd = mkstemp(log), rc;
    char *argv[] = {PY, "tools/check_deploy.py", (char *)what, NULL};

    assert_true(fd >= 0);
    close(fd);
    rc = test_run_wait(argv, log);
    if (rc != 0) {
        snprintf(cmd, sizeof(cmd), "cat '%s' >&2", log);
        if (system(cmd) != 0)
            fprintf(stderr, "no output\n");
    }
    unlink(log);
    if (rc == SKIPPED)
        skip();
    assert_int_equal(rc, 0);
}

static void test_compose_file_is_well_formed(void **state)
{
    (void)state;
    check("compose");
}

static void test_compose_file_validates_with_docker_compose(void **state)
{
    (void)state;
    check("compose-config");
}

static void test_k8s_manifests_are_well_formed(void **state)
{
    (void)state;
    check("k8s");
}

static void test_command_lines_are_those_of_commands_txt(void **state)
{
    (void)state;
    check("commands");
}

static void test_dockerfile_is_multi_stage_non_root(void **state)
{
    (void)state;
    check("dockerfile");
}

static void test_dashboard_and_scrape_configuration(void **state)
{
    (void)state;
    check("dashboard");
}

/* The image's streamml.conf and the ConfigMap's load with streamml's own
 * loader (unknown keys, ranges, types). The secret files they name exist
 * only in a pod, so they are blanked through the environment here. */
static void test_config_files_load(void **state)
{
    char dir[] = "/tmp/streamml-deploy-XXXXXX", file[200], cmd[300];
    static const char *const which[] = {"compose.conf", "k8s.conf"};

    (void)state;
    assert_non_null(mkdtemp(dir));
    char *gen[] = {PY, "tools/check_deploy.py", "conf-files", dir, NULL};
    assert_int_equal(test_run_wait(gen, "/dev/null"), 0);
    setenv("STREAMML_REDIS_PASSWORD_FILE", "", 1);
    setenv("STREAMML_SCHEMA_REGISTRY_PASSWORD_FILE", "", 1);
    for (size_t i = 0; i < 2; i++) {
        snprintf(file, sizeof(file), "%s/%s", dir, which[i]);
        char *argv[] = {(char *)test_bin("streamml"), "config", "show", "-c", file, NULL};
        if (test_run_wait(argv, "/dev/null") != 0)
            fail_msg("streamml config show -c %s (%s) failed", which[i], file);
    }
    unsetenv("STREAMML_REDIS_PASSWORD_FILE");
    unsetenv("STREAMML_SCHEMA_REGISTRY_PASSWORD_FILE");
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* deploy/commands.txt's line for service, split; /etc/streamml/ (the image's
 * configuration directory) mapped to deploy/config/, the program to build/. */
static int command_line(const char *service, char *buf, size_t cap, char **argv, int max)
{
    FILE *f = fopen("deploy/commands.txt", "r");
    size_t n = strlen(service);
    int argc = 0;

    assert_non_null(f);
    while (fgets(buf, (int)cap, f))
        if (strncmp(buf, service, n) == 0 && buf[n] == ' ')
            break;
    fclose(f);
    if (strncmp(buf, service, n) != 0)
        return -1;
    buf[strcspn(buf, "\n")] = '\0';
    for (char *tok = strtok(buf + n, " "); tok && argc < max - 1; tok = strtok(NULL, " ")) {
        static char mapped[4][300];
        if (argc == 0)
            tok = (char *)test_bin(tok);
        if (strncmp(tok, "/etc/streamml/", 14) == 0 && argc < 4) {
            snprintf(mapped[argc], sizeof(mapped[argc]), "deploy/config/%s", tok + 14);
            tok = mapped[argc];
        }
        argv[argc] = argc == 0 ? strdup(tok) : tok;
        argc++;
    }
    argv[argc] = NULL;
    return argc;
}


static void test_transactions_command_line_runs(void **state)
{
    struct test_redis redis;
    struct test_broker broker;
    struct test_registry *srv;
    char line[512], port[16], events[] = "/tmp/streamml-deploy-XXXXXX", cmd[300], log[64];
    char *argv[16];
    int fd, status;
    pid_t w;

    (void)state;
    assert_true(command_line("transactions", line, sizeof(line), argv, 16) > 0);
    assert_int_equal(test_redis_start(&redis), 0);
    assert_int_equal(test_broker_start(&broker, "transactions:6,predictions.transactions:6,"
                                                "transactions.dlq:2"),
                     0);
    assert_non_null(srv = test_registry_start(0, NULL, NULL));
    assert_true((fd = mkstemp(events)) >= 0);
    close(fd);
    snprintf(cmd, sizeof(cmd), "head -n 200 models/demo_events.jsonl > '%s'", events);
    assert_int_equal(system(cmd), 0);
    char *produce[] = {(char *)test_bin("streamml"),
                       "produce",
                       "-b",
                       broker.bootstrap,
                       "-r",
                       (char *)test_registry_url(srv),
                       "-i",
                       events,
                       "--log-level",
                       "warn",
                       NULL};
    assert_int_equal(test_run_wait(produce, NULL), 0);

    /* What compose and the pod do, with addresses from the environment. */
    snprintf(port, sizeof(port), "%d", redis.port);
    setenv("STREAMML_KAFKA__BOOTSTRAP_SERVERS", broker.bootstrap, 1);
    setenv("STREAMML_REDIS_HOST", "127.0.0.1", 1);
    setenv("STREAMML_REDIS_PORT", port, 1);
    setenv("STREAMML_SCHEMA_REGISTRY_URL", test_registry_url(srv), 1);
    setenv("STREAMML_WORKER_MAX_MESSAGES", "200", 1);
    setenv("STREAMML_WORKER_IDLE_EXIT_MS", "20000", 1); /* a safety net */
    snprintf(log, sizeof(log), "%s.log", events);
    w = test_spawn(argv, log);
    unsetenv("STREAMML_KAFKA__BOOTSTRAP_SERVERS");
    unsetenv("STREAMML_REDIS_HOST");
    unsetenv("STREAMML_REDIS_PORT");
    unsetenv("STREAMML_SCHEMA_REGISTRY_URL");
    unsetenv("STREAMML_WORKER_MAX_MESSAGES");
    unsetenv("STREAMML_WORKER_IDLE_EXIT_MS");
    assert_int_equal(waitpid(w, &status, 0), w);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(cmd, sizeof(cmd), "tail -20 '%s' >&2", log);
        if (system(cmd) != 0)
            fprintf(stderr, "no worker log\n");
        fail_msg("the transactions command line exited with status %d", status);
    }
    unlink(log);
    assert_int_equal(test_topic_size(broker.bootstrap, "predictions.transactions"), 200);
    free(argv[0]);
    unlink(events);
    test_registry_free(srv);
    test_broker_stop(&broker);
    test_redis_stop(&redis);
}

/* The other command lines, where their programs exist on this branch:
 * `--help` appended must exit 0 (the program and its options parse). */
static void test_other_command_lines_parse(void **state)
{
    static const char *const services[] = {"clickstream", "images", "alerts"};
    int ran = 0;

    (void)state;
    for (size_t i = 0; i < sizeof(services) / sizeof(services[0]); i++) {
        char line[512], *argv[16];
        int argc = command_line(services[i], line, sizeof(line), argv, 15);
        assert_true(argc > 0);
        if (access(argv[0], X_OK) != 0) {
            printf("note: %s: %s is not built on this branch\n", services[i], argv[0]);
            free(argv[0]);
            continue;
        }
        argv[argc] = "--help";
        argv[argc + 1] = NULL;
        int rc = test_run_wait(argv, "/dev/null");
        if (rc == 2 && argc > 1 && strcmp(argv[1], "--config") != 0)
            printf("note: %s: `%s %s` is not a command on this branch\n", services[i], argv[0],
                   argv[1]);
        else if (rc != 0)
            fail_msg("%s: %s ... --help exited %d", services[i], argv[0], rc);
        else
            ran++;
        free(argv[0]);
    }
    if (!ran)
        skip();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compose_file_is_well_formed),
        cmocka_unit_test(test_compose_file_validates_with_docker_compose),
        cmocka_unit_test(test_k8s_manifests_are_well_formed),
        cmocka_unit_test(test_command_lines_are_those_of_commands_txt),
        cmocka_unit_test(test_dashboard_and_scrape_configuration),
        cmocka_unit_test(test_dockerfile_is_multi_stage_non_root),
        cmocka_unit_test(test_config_files_load),
        cmocka_unit_test(test_transactions_command_line_runs),
        cmocka_unit_test(test_other_command_lines_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
