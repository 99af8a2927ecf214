/* Live disparate impact end to end on the embedded stack: `streamml broker`,
 * a real redis-server, `streamml produce`, the transactions worker with
 * monitoring on (the shipped baseline) and monitor.fairness.field=home, and
 * `streamml alerts --json` on the monitoring topic, plus /metrics.
 *
 * Events alternate home=rent and home=owner. A "risky" event (low income,
 * large amount, debt, past records) is declined or reviewed by the demo
 * model, a "safe" one approved (about 95%; checked offline with featurize +
 * predict: biased 0.95 / 0.21 approval, unbiased 0.60 / 0.61).
 *   biased:    80% of rent events risky, 5% of owner events
 *              -> WARNING fairness naming home=rent, gauges per group
 *   unbiased:  40% risky in both groups -> no fairness alert
 *   small:     the biased stream, but monitor.fairness.min_group above any
 *              group's count in a window -> no fairness alert
 * Fairness by outcome, live: the worker joins LabelEvents (monitor.labels.
 * topic) produced after the predictions, 40% risky events in both groups:
 *   biased outcomes: in one group the labels are the opposite of what the
 *              model sees (its bad outcomes approved, its good ones
 *              declined), grouped by the label record's `group` field
 *              (monitor.fairness.label_field) -> WARNING fairness_tpr and
 *              fairness_fpr naming group=A, gauges per group
 *   unbiased outcomes: labels follow the risk in both groups, grouped by
 *              home -> no fairness_tpr/fpr alert, gauges per group
 * Other checks (the synthetic events drift from the training baseline) are
 * not what this test looks at.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "promtext.h"
#include "stack.h"

#define EVENTS 3000
#define TOPICS                                                                                     \
    "transactions:4,predictions.transactions:4,transactions.dlq:1,monitoring:1,labels:1"

struct env {
    struct test_redis redis;
    struct test_broker broker;
    char dir[128], redis_port[32], metrics_port[32], min_group[64];
    const char *extra[8]; /* more -X settings for the worker */
    int port;
    pid_t worker;
};

static uint64_t g_rng;
static int g_risky[EVENTS]; /* of the last write_events */

static double uniform(void)
{
    g_rng = g_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return ((double)(g_rng >> 11) + 0.5) / 9007199254740992.0;
}

static double normal(void)
{
    return sqrt(-2 * log(uniform())) * cos(2 * M_PI * uniform());
}

/* n events alternating rent/owner; p_rent, p_owner: share of risky ones. */
static void write_events(const char *path, int n, double p_rent, double p_owner)
{
    FILE *f = fopen(path, "w");
    long long t = 1700000000000LL;

    assert_non_null(f);
    g_rng = 7;
    for (int i = 0; i < n; i++) {
        int rent = i % 2;
        int risky = uniform() < (rent ? p_rent : p_owner);
        if (i < EVENTS)
            g_risky[i] = risky;
        double income = exp((risky ? 4.3 : 5.5) + 0.3 * normal());
        double amount = exp((risky ? 7.6 : 6.5) + 0.3 * normal());
        t += 1000;
        fprintf(f,
                "{\"event_id\":\"e%06d\",\"user_id\":\"u%06d\",\"event_time\":%lld,"
                "\"income\":%.2f,\"amount\":%.2f,\"price\":%.2f,\"expenses\":50,"
                "\"term_months\":36,\"age\":35,\"seniority_years\":5,\"home\":\"%s\","
                "\"job\":\"fixed\",\"marital\":\"married\",\"past_records\":%s,"
                "\"assets\":%d,\"debt\":%d,\"label\":%d}\n",
                i, i, t, income, amount, amount * 1.3, rent ? "rent" : "owner",
                risky ? "true" : "false", risky ? 0 : 8000, risky ? 3000 : 0, risky);
    }
    fclose(f);
}

static int setup(void **st)
{
    struct env *v = calloc(1, sizeof(*v));

    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-fairit-XXXXXX");
    if (!mkdtemp(v->dir) || test_redis_start(&v->redis) || test_broker_start(&v->broker, TOPICS))
        return -1;
    snprintf(v->redis_port, sizeof(v->redis_port), "redis.port=%d", v->redis.port);
    v->port = test_free_port();
    snprintf(v->metrics_port, sizeof(v->metrics_port), "metrics.port=%d", v->port);
    snprintf(v->min_group, sizeof(v->min_group), "monitor.fairness.min_group=100");
    *st = v;
    return 0;
}

static int teardown(void **st)
{
    struct env *v = *st;
    char cmd[200];

    if (v->worker > 0)
        test_stop_pid(v->worker, SIGKILL, 1000);
    test_broker_stop(&v->broker);
    test_redis_stop(&v->redis);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", v->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", v->dir);
    free(v);
    return 0;
}

/* Windows of 1,000 events (2 slices), closed by time when input stops;
 * latency and error thresholds raised (a loaded CI machine is not what
 * this test checks). */
static void start_worker(struct env *v)
{
    char log[200];
    char *argv[64] = {(char *)test_bin("streamml-transactions"),
                    "-b",
                    v->broker.bootstrap,
                    "-X",
                    v->redis_port,
                    "-X",
                    "group.id=it-fairness",
                    "-X",
                    "worker.poll_ms=20",
                    "-X",
                    "session.timeout.ms=6000",
                    "-X",
                    "heartbeat.interval.ms=500",
                    "-X",
                    "monitor.baseline=models/credit_gbdt.baseline.json",
                    "-X",
                    "monitor.fairness.field=home",
                    "-X",
                    v->min_group,
                    "-X",
                    "monitor.window.events=1000",
                    "-X",
                    "monitor.window.slices=2",
                    "-X",
                    "monitor.window.ms=2000",
                    "-X",
                    "monitor.window.min_events=500",
                    "-X",
                    "monitor.latency_p99.warning_ms=60000",
                    "-X",
                    "monitor.latency_p99.critical_ms=60000",
                    "-X",
                    "monitor.error_rate.warning=1",
                    "-X",
                    "monitor.error_rate.critical=1",
                    "-X",
                    v->metrics_port,
                    "--log-level",
                    "warn",
                    NULL};
    int n = 0;

    while (argv[n])
        n++;
    for (int k = 0; k < 8 && v->extra[k] && n < 62; k++) {
        argv[n++] = "-X";
        argv[n++] = (char *)v->extra[k];
    }
    argv[n] = NULL;
    snprintf(log, sizeof(log), "%s/worker.log", v->dir);
    v->worker = test_spawn(argv, log);
    assert_true(v->worker > 0);
}

static void run_stream(struct env *v, double p_rent, double p_owner)
{
    char ev[200], log[200], bin[256];
    char *argv[] = {bin,           "produce",      "-b", v->broker.bootstrap,
                    "-t",          "transactions", "-i", ev,
                    "--log-level", "error",        NULL};

    snprintf(ev, sizeof(ev), "%s/events.jsonl", v->dir);
    snprintf(log, sizeof(log), "%s/produce.log", v->dir);
    write_events(ev, EVENTS, p_rent, p_owner);
    start_worker(v);
    snprintf(bin, sizeof(bin), "%s", test_bin("streamml")); /* test_bin's buffer is static */
    if (test_run_wait(argv, log) != 0)
        fail_msg("produce failed: see %s", log);
    assert_int_equal(
        test_wait_topic(v->broker.bootstrap, "predictions.transactions", EVENTS, 60000), 0);
    test_sleep_ms(3000); /* the last slice closes by time */
}

/* The alerts of a type so far (streamml alerts --json --type TYPE). */
static int alerts_of(struct env *v, const char *type, const char *feature, const char *to)
{
    char path[200], line[4096];
    char *argv[] = {(char *)test_bin("streamml"),
                    "alerts",
                    "-b",
                    v->broker.bootstrap,
                    "--json",
                    "-f",
                    "-e",
                    "--type",
                    (char *)type,
                    "--log-level",
                    "error",
                    NULL};
    FILE *f;
    int n = 0;

    snprintf(path, sizeof(path), "%s/alerts.jsonl", v->dir);
    unlink(path);
    assert_int_equal(test_run_wait(argv, path), 0);
    f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        json_t *j = line[0] == '{' ? json_loads(line, 0, NULL) : NULL;
        const char *ft = json_string_value(json_object_get(j, "feature"));
        const char *st = json_string_value(json_object_get(j, "status_to"));
        double obs = json_number_value(json_object_get(j, "observed"));
        if (j && strcmp(json_string_value(json_object_get(j, "alert_type")), type) == 0) {
            fprintf(stderr, "alert: %s", line);
            if (strcmp(st ? st : "", to) == 0 && (!feature || strcmp(ft ? ft : "", feature) == 0))
                n++;
            if (strcmp(st ? st : "", "WARNING") == 0 && strcmp(type, "fairness") == 0)
                assert_true(obs < 0.8);
            if (strcmp(st ? st : "", "WARNING") == 0 && strcmp(type, "fairness") != 0)
                assert_true(obs > 0.1); /* a gap above monitor.fairness.max_*_gap */
        }
        json_decref(j);
    }
    fclose(f);
    return n;
}

static int fairness_alerts(struct env *v, const char *feature, const char *to)
{
    return alerts_of(v, "fairness", feature, to);
}

static char *scrape(struct env *v)
{
    char cmd[300], path[200], why[256];
    char *text;
    FILE *f;
    long n;

    snprintf(path, sizeof(path), "%s/metrics.txt", v->dir);
    snprintf(cmd, sizeof(cmd), "curl -sf http://127.0.0.1:%d/metrics > %s", v->port, path);
    assert_int_equal(system(cmd), 0);
    f = fopen(path, "r");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    text = calloc(1, (size_t)n + 1);
    assert_int_equal(fread(text, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    if (prom_check(text, why, sizeof(why)))
        fprintf(stderr, "/metrics: %s\n", why);
    assert_int_equal(prom_check(text, why, sizeof(why)), 0);
    return text;
}

static void test_biased_stream_raises_fairness_warning_naming_the_group(void **st)
{
    struct env *v = *st;
    double rent, owner, di, di_all;
    char *text;

    run_stream(v, 0.8, 0.05);
    assert_true(fairness_alerts(v, "home=rent", "WARNING") >= 1);
    text = scrape(v);
    assert_string_equal(prom_type(text, "streamml_fairness_approval_rate"), "gauge");
    assert_int_equal(prom_value(text, "streamml_fairness_approval_rate{group=\"rent\"}", &rent), 0);
    assert_int_equal(prom_value(text, "streamml_fairness_approval_rate{group=\"owner\"}", &owner),
                     0);
    assert_int_equal(prom_value(text, "streamml_fairness_disparate_impact{group=\"rent\"}", &di),
                     0);
    assert_int_equal(prom_value(text, "streamml_disparate_impact", &di_all), 0);
    fprintf(stderr, "approval rent %.3f owner %.3f, disparate impact %.3f (%.3f)\n", rent, owner,
            di, di_all);
    assert_true(rent < 0.5 && owner > 0.8);
    assert_true(fabs(di - rent / owner) < 1e-9); /* the worst group's is the check's */
    assert_true(fabs(di - di_all) < 1e-9);
    free(text);
}

static void test_unbiased_stream_raises_no_fairness_alert(void **st)
{
    struct env *v = *st;
    double di;
    char *text;

    run_stream(v, 0.4, 0.4);
    assert_int_equal(fairness_alerts(v, NULL, "WARNING"), 0);
    text = scrape(v);
    assert_int_equal(prom_value(text, "streamml_disparate_impact", &di), 0);
    fprintf(stderr, "disparate impact %.3f\n", di);
    assert_true(di > 0.8);
    free(text);
}

/* The biased stream with min_group above what a group can have in any
 * window (1,500 events each in all): too small a sample, no alert. */
static void test_small_groups_do_not_alert(void **st)
{
    struct env *v = *st;

    snprintf(v->min_group, sizeof(v->min_group), "monitor.fairness.min_group=1501");
    run_stream(v, 0.8, 0.05);
    assert_int_equal(fairness_alerts(v, NULL, "WARNING"), 0);
}

/* The labels of the last stream on the labels topic, after its
 * predictions. Group A is the rent half (odd events), B the owner half.
 * biased: group A's labels are the opposite of its risk (the model misses
 * A's bad outcomes and declines its good applicants); else they follow the
 * risk everywhere. */
static void produce_labels(struct env *v, int biased)
{
    char path[200], bin[256];
    char *argv[] = {bin,   "produce", "-b", v->broker.bootstrap, "-t",          "labels",
                    "-s",  "label_event", "-i", path,          "--log-level", "error",
                    NULL};
    FILE *f;

    snprintf(path, sizeof(path), "%s/labels.jsonl", v->dir);
    f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < EVENTS; i++) {
        int a = i % 2;
        fprintf(f, "{\"event_id\":\"e%06d\",\"label\":%d,\"label_time\":1,"
                   "\"group\":{\"string\":\"%s\"}}\n",
                i, biased && a ? !g_risky[i] : g_risky[i], a ? "A" : "B");
    }
    fclose(f);
    snprintf(bin, sizeof(bin), "%s", test_bin("streamml"));
    if (test_run_wait(argv, "/dev/null") != 0)
        fail_msg("produce of the labels failed");
    test_sleep_ms(4000); /* joined, then evaluated once a slice time (1 s) has passed */
}

static void test_biased_outcomes_by_label_field_raise_tpr_and_fpr_gaps(void **st)
{
    struct env *v = *st;
    double a, b;
    char *text;

    v->extra[0] = "monitor.labels.topic=labels";
    v->extra[1] = "monitor.fairness.label_field=group";
    v->extra[2] = "monitor.fairness.max_tpr_gap=0.2";
    v->extra[3] = "monitor.fairness.max_fpr_gap=0.2";
    run_stream(v, 0.4, 0.4);
    produce_labels(v, 1);
    assert_int_equal(alerts_of(v, "fairness_tpr", "group=A", "WARNING"), 1);
    assert_int_equal(alerts_of(v, "fairness_fpr", "group=A", "WARNING"), 1);
    text = scrape(v);
    assert_string_equal(prom_type(text, "streamml_fairness_tpr"), "gauge");
    assert_int_equal(prom_value(text, "streamml_fairness_tpr{group=\"A\"}", &a), 0);
    assert_int_equal(prom_value(text, "streamml_fairness_tpr{group=\"B\"}", &b), 0);
    fprintf(stderr, "TPR A %.3f B %.3f\n", a, b);
    assert_true(a < 0.2 && b > 0.8);
    assert_int_equal(prom_value(text, "streamml_fairness_fpr{group=\"A\"}", &a), 0);
    assert_int_equal(prom_value(text, "streamml_fairness_fpr{group=\"B\"}", &b), 0);
    fprintf(stderr, "FPR A %.3f B %.3f\n", a, b);
    assert_true(a > 0.8 && b < 0.2);
    assert_int_equal(prom_value(text, "streamml_fairness_tpr_gap", &a), 0);
    assert_true(a > 0.6);
    free(text);
}

static void test_unbiased_outcomes_raise_no_tpr_or_fpr_alert(void **st)
{
    struct env *v = *st;
    double rent, owner, gap;
    char *text;

    v->extra[0] = "monitor.labels.topic=labels";
    v->extra[1] = "monitor.fairness.max_tpr_gap=0.2";
    v->extra[2] = "monitor.fairness.max_fpr_gap=0.2";
    run_stream(v, 0.4, 0.4);
    produce_labels(v, 0);
    assert_int_equal(alerts_of(v, "fairness_tpr", NULL, "WARNING"), 0);
    assert_int_equal(alerts_of(v, "fairness_fpr", NULL, "WARNING"), 0);
    text = scrape(v);
    assert_int_equal(prom_value(text, "streamml_fairness_tpr{group=\"rent\"}", &rent), 0);
    assert_int_equal(prom_value(text, "streamml_fairness_tpr{group=\"owner\"}", &owner), 0);
    assert_int_equal(prom_value(text, "streamml_fairness_tpr_gap", &gap), 0);
    fprintf(stderr, "TPR rent %.3f owner %.3f gap %.3f\n", rent, owner, gap);
    assert_true(rent > 0.8 && owner > 0.8 && gap < 0.2);
    free(text);
}

/* `streamml report --fairness-field` with the labels from the events'
 * topic (--labels-topic): TPR and FPR per group are measured, not NaN
 * (the fairness section used to read labels from a file only). */
static void test_report_fairness_takes_labels_from_the_topic(void **st)
{
    struct env *v = *st;
    char ev[200], preds[200], html[200], out[200], bin[256], buf[8192];
    char *produce[] = {bin,           "produce",      "-b", v->broker.bootstrap,
                       "-t",          "transactions", "-i", ev,
                       "--log-level", "error",        NULL};
    char *replay[] = {bin,          "replay", "-b",  v->broker.bootstrap, "-t",    "transactions",
                      "--features", "-o",     preds, "--log-level",       "error", NULL};
    char *report[] = {bin,
                      "report",
                      "-b",
                      v->broker.bootstrap,
                      "-p",
                      preds,
                      "--labels-topic",
                      "transactions",
                      "--fairness-field",
                      "home_code",
                      "-o",
                      html,
                      "--log-level",
                      "error",
                      NULL};
    FILE *f;
    size_t n;

    snprintf(bin, sizeof(bin), "%s", test_bin("streamml"));
    snprintf(ev, sizeof(ev), "%s/events.jsonl", v->dir);
    snprintf(preds, sizeof(preds), "%s/preds.jsonl", v->dir);
    snprintf(html, sizeof(html), "%s/report.html", v->dir);
    snprintf(out, sizeof(out), "%s/report.txt", v->dir);
    write_events(ev, 600, 0.8, 0.05);
    assert_int_equal(test_run_wait(produce, "/dev/null"), 0);
    assert_int_equal(test_run_wait(replay, "/dev/null"), 0);
    assert_int_equal(test_run_wait(report, out), 0);
    f = fopen(out, "r");
    assert_non_null(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    fprintf(stderr, "%s", strstr(buf, "fairness") ? strstr(buf, "fairness") : buf);
    assert_non_null(strstr(buf, "fairness home_code="));
    assert_null(strstr(buf, "tpr nan"));
    assert_null(strstr(buf, "fpr nan"));
}

/* A field the event does not have, or both ways of grouping: one line
 * naming the key, exit 2, before any broker is needed. */
static void test_bad_fairness_settings_are_refused(void **st)
{
    char dir[] = "/tmp/streamml-fairbad-XXXXXX", log[128], buf[4096];
    char *bad_field[] = {(char *)test_bin("streamml-transactions"),
                         "-b",
                         "127.0.0.1:1",
                         "-X",
                         "monitor.baseline=models/credit_gbdt.baseline.json",
                         "-X",
                         "monitor.fairness.field=religion",
                         NULL};
    char *both[] = {(char *)test_bin("streamml-transactions"),
                    "-b",
                    "127.0.0.1:1",
                    "-X",
                    "monitor.baseline=models/credit_gbdt.baseline.json",
                    "-X",
                    "monitor.fairness.field=home",
                    "-X",
                    "monitor.fairness.feature=home_code",
                    NULL};
    char *bad_label[] = {(char *)test_bin("streamml-transactions"),
                         "-b",
                         "127.0.0.1:1",
                         "-X",
                         "monitor.baseline=models/credit_gbdt.baseline.json",
                         "-X",
                         "monitor.labels.topic=labels",
                         "-X",
                         "monitor.fairness.label_field=religion",
                         NULL};
    FILE *f;
    size_t n;

    (void)st;
    assert_non_null(mkdtemp(dir));
    snprintf(log, sizeof(log), "%s/log", dir);
    assert_int_equal(test_run_wait(bad_field, log), 2);
    assert_int_equal(test_run_wait(both, log), 2);
    f = fopen(log, "r");
    assert_non_null(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    assert_non_null(strstr(buf, "monitor.fairness.field=religion is not a TransactionEvent field"));
    assert_non_null(strstr(buf, "monitor.fairness.field=home and monitor.fairness.feature="
                                "home_code: set one of them"));
    assert_int_equal(test_run_wait(bad_label, log), 2);
    f = fopen(log, "r");
    assert_non_null(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    assert_non_null(strstr(buf, "monitor.fairness.label_field=religion is not a LabelEvent field"));
    unlink(log);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_fairness_settings_are_refused),
        cmocka_unit_test_setup_teardown(test_biased_stream_raises_fairness_warning_naming_the_group,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_unbiased_stream_raises_no_fairness_alert, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_small_groups_do_not_alert, setup, teardown),
        cmocka_unit_test_setup_teardown(test_biased_outcomes_by_label_field_raise_tpr_and_fpr_gaps,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_unbiased_outcomes_raise_no_tpr_or_fpr_alert, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_report_fairness_takes_labels_from_the_topic, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
