/* Labels end to end: the transactions worker (monitor.labels.topic=labels)
 * with the shipped baseline (holdout AUC 0.842) scores the demo events;
 * their true outcomes arrive later on `labels` as LabelEvents, produced by
 * `streamml produce -s label_event`. The first half carries the true labels:
 * no AUC alert. The second half carries the same labels shuffled (a model
 * that stopped working): a CRITICAL `auc` alert on `monitoring`, read back
 * with `streamml alerts --json --type auc`. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "kafka.h"
#include "stack.h"

#define EVENTS "models/demo_events.jsonl"
#define MAXEV 5000
#define TOPICS "transactions:4,predictions.transactions:4,transactions.dlq:1,monitoring:1,labels:2"

struct env {
    struct test_redis redis;
    struct test_broker broker;
    char dir[128], redis_port[32];
    char ids[MAXEV][16];
    int label[MAXEV], n;
};



static void read_events(struct env *v)
{
    FILE *f = fopen(EVENTS, "r");
    char line[4096];

    assert_non_null(f);
    while (v->n < MAXEV && fgets(line, sizeof(line), f)) {
        json_t *j = json_loads(line, 0, NULL);
        assert_non_null(j);
        snprintf(v->ids[v->n], sizeof(v->ids[0]), "%s",
                 json_string_value(json_object_get(j, "event_id")));
        v->label[v->n++] = (int)json_integer_value(json_object_get(j, "label"));
        json_decref(j);
    }
    fclose(f);
}

static int setup(void **st)
{
    struct env *v = calloc(1, sizeof(*v));

    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-labit-XXXXXX");
    if (!mkdtemp(v->dir) || test_redis_start(&v->redis) || test_broker_start(&v->broker, TOPICS))
        return -1;
    snprintf(v->redis_port, sizeof(v->redis_port), "redis.port=%d", v->redis.port);
    read_events(v);
    *st = v;
    return 0;
}

static int teardown(void **st)
{
    struct env *v = *st;
    char cmd[200];

    test_broker_stop(&v->broker);
    test_redis_stop(&v->redis);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", v->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", v->dir);
    free(v);
    return 0;
}


static int wait_topic(struct env *v, const char *topic, int64_t want, int timeout_ms)
{
    return test_wait_topic(v->broker.bootstrap, topic, want, timeout_ms);
}

static void produce(struct env *v, const char *topic, const char *schema, const char *file)
{
    char *argv[] = {(char *)test_bin("streamml"), "produce", "-b", v->broker.bootstrap, "-t",
                    (char *)topic, "-s", (char *)schema, "-i", (char *)file, "--log-level",
                    "error", NULL};

    assert_int_equal(test_run_wait(argv, "/dev/null"), 0);
}

/* Labels of events [from, to) into a file; shuffled: a permutation of
 * those labels (same bad rate, no relation to the events). */
static void write_labels(struct env *v, const char *path, int from, int to, int shuffled)
{
    FILE *f = fopen(path, "w");
    int *lab = malloc((size_t)(to - from) * sizeof(int));
    unsigned r = 99;

    assert_non_null(f);
    for (int i = from; i < to; i++)
        lab[i - from] = v->label[i];
    for (int i = to - from - 1; shuffled && i > 0; i--) {
        int j, t;
        r = r * 1103515245u + 12345u;
        j = (int)((r >> 8) % (unsigned)(i + 1));
        t = lab[i];
        lab[i] = lab[j];
        lab[j] = t;
    }
    for (int i = from; i < to; i++)
        fprintf(f, "{\"event_id\":\"%s\",\"label\":%d,\"label_time\":1}\n", v->ids[i],
                lab[i - from]);
    fclose(f);
    free(lab);
}

static int auc_alerts(struct env *v, const char *to)
{
    char path[200], line[4096], want[40];
    char *argv[] = {(char *)test_bin("streamml"), "alerts", "-b", v->broker.bootstrap, "--json",
                    "--type", "auc", "-f", "-e", "--log-level", "error", NULL};
    FILE *f;
    int n = 0;

    snprintf(path, sizeof(path), "%s/alerts.jsonl", v->dir);
    snprintf(want, sizeof(want), "\"status_to\":\"%s\"", to);
    unlink(path);
    assert_int_equal(test_run_wait(argv, path), 0);
    f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f))
        n += line[0] == '{' && strstr(line, "\"alert_type\":\"auc\"") && strstr(line, want);
    fclose(f);
    return n;
}

static void test_decayed_labels_raise_the_auc_alert(void **st)
{
    struct env *v = *st;
    char good[200], bad[200], log[200];
    int half = v->n / 2;
    char *argv[] = {(char *)test_bin("streamml-transactions"), "-b", v->broker.bootstrap,
                    "-X", v->redis_port, "-X", "group.id=it-labels", "-X", "worker.poll_ms=20",
                    "-X", "monitor.baseline=models/credit_gbdt.baseline.json",
                    "-X", "monitor.labels.topic=labels", "-X", "monitor.auc.window=1500",
                    "-X", "monitor.auc.min_labels=1000", "-X", "monitor.window.ms=1500",
                    "-X", "monitor.window.slices=1", "-X", "monitor.window.min_events=100",
                    "--log-level", "warn", NULL};
    pid_t w;

    assert_true(v->n > 4000);
    snprintf(good, sizeof(good), "%s/good.jsonl", v->dir);
    snprintf(bad, sizeof(bad), "%s/bad.jsonl", v->dir);
    snprintf(log, sizeof(log), "%s/worker.log", v->dir);
    write_labels(v, good, 0, half, 0);
    write_labels(v, bad, half, v->n, 1);
    w = test_spawn(argv, log);
    produce(v, "transactions", "transaction_event", EVENTS);
    assert_int_equal(wait_topic(v, "predictions.transactions", v->n, 45000), 0);
    produce(v, "labels", "label_event", good);
    test_sleep_ms(4000); /* joined, then evaluated once the slice time (1.5 s) has passed */
    assert_int_equal(auc_alerts(v, "CRITICAL") + auc_alerts(v, "WARNING"), 0);
    produce(v, "labels", "label_event", bad);
    test_sleep_ms(4000);
    assert_int_equal(auc_alerts(v, "CRITICAL"), 1);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w, SIGTERM, 15000)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_decayed_labels_raise_the_auc_alert, setup, teardown),
    };
    return cmocka_run_group_tests_name("labels integration", tests, NULL, NULL);
}
