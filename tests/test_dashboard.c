/* tests/test_dashboard.c: the deployment queries what the code exports
 * (issue 16, "deploy drift").
 *
 * The Grafana dashboard used to query streamml_messages_total,
 * streamml_latency_seconds_bucket, streamml_psi, streamml_redelivered_total
 * and a severity label, none of which exist; the k8s Deployment of
 * `streamml alerts` probed /healthz on a port nothing served. Here a real
 * transactions worker (monitoring on, so the drift gauges exist) and a real
 * `streamml alerts` run on the embedded stack with metrics.port set, and
 * `tools/check_deploy.py dashboard-metrics` checks every metric and label of
 * every dashboard expression against their /metrics. The alerts process must
 * answer /healthz and /readyz like the workers, and both must export the
 * process_* metrics and streamml_monitor_windows_total as a counter.
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

#include "stack.h"

#define PY "/usr/bin/python3"

static int sh(const char *cmd)
{
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* GET url with retries for up to 15 s; 0 when it answered 200. */
static int http_ok(const char *url)
{
    char cmd[600];

    snprintf(cmd, sizeof(cmd),
             PY " -c \"import time,urllib.request\n"
                "for i in range(150):\n"
                "  try:\n"
                "    urllib.request.urlopen('%s', timeout=2); raise SystemExit(0)\n"
                "  except SystemExit: raise\n"
                "  except Exception: time.sleep(0.1)\n"
                "raise SystemExit(1)\"",
             url);
    return sh(cmd);
}

static void test_dashboard_queries_only_exported_names(void **st)
{
    struct test_broker b;
    struct test_redis r;
    char rport[16], mw[48], ma[48], url_w[96], url_a[96], cmd[1024], events[256], dir[64];
    pid_t worker, alerts;
    int mpw = test_free_port(), mpa = test_free_port();

    (void)st;
    snprintf(dir, sizeof(dir), "/tmp/streamml-dash-XXXXXX");
    assert_non_null(mkdtemp(dir));
    assert_int_equal(test_redis_start(&r), 0);
    assert_int_equal(test_broker_start(&b, "transactions:2,predictions.transactions:2,"
                                           "transactions.dlq:1,monitoring:1,labels:1"),
                     0);
    snprintf(rport, sizeof(rport), "redis.port=%d", r.port);
    snprintf(mw, sizeof(mw), "metrics.port=%d", mpw);
    snprintf(ma, sizeof(ma), "metrics.port=%d", mpa);
    char *wargv[] = {(char *)test_bin("streamml-transactions"), "-b", b.bootstrap, "-X", rport,
                     "-X", mw, "-X", "monitor.baseline=models/credit_gbdt.baseline.json",
                     "-X", "monitor.window.events=300", "-X", "monitor.window.min_events=100",
                     "-X", "fetch.wait.max.ms=5", "--log-level", "warn", NULL};
    worker = test_spawn(wargv, NULL);
    assert_true(worker > 0);
    char *aargv[] = {strdup(test_bin("streamml")), "alerts", "-b", b.bootstrap, "-X", ma,
                     "--log-level", "warn", NULL};
    snprintf(events, sizeof(events), "%s/alerts.log", dir);
    alerts = test_spawn(aargv, events);
    assert_true(alerts > 0);

    snprintf(events, sizeof(events), "%s/events.jsonl", dir);
    snprintf(cmd, sizeof(cmd), "head -n 900 models/demo_events.jsonl > %s && %s produce -b %s "
             "-i %s --log-level warn", events, test_bin("streamml"), b.bootstrap, events);
    assert_int_equal(sh(cmd), 0);
    assert_int_equal(test_wait_topic(b.bootstrap, "predictions.transactions", 900, 60000), 0);

    snprintf(url_w, sizeof(url_w), "http://127.0.0.1:%d/metrics", mpw);
    snprintf(url_a, sizeof(url_a), "http://127.0.0.1:%d/metrics", mpa);
    assert_int_equal(http_ok(url_w), 0);
    snprintf(cmd, sizeof(cmd), "http://127.0.0.1:%d/healthz", mpa);
    assert_int_equal(http_ok(cmd), 0);
    snprintf(cmd, sizeof(cmd), "http://127.0.0.1:%d/readyz", mpa);
    assert_int_equal(http_ok(cmd), 0);
    /* The monitor evaluates on its tick: wait until the window's gauges are there. */
    snprintf(cmd, sizeof(cmd),
             PY " -c \"import time,urllib.request\n"
                "for i in range(100):\n"
                "  t=urllib.request.urlopen('%s', timeout=2).read().decode()\n"
                "  if 'streamml_feature_psi{' in t and '# TYPE streamml_monitor_windows_total "
                "counter' in t and 'process_resident_memory_bytes ' in t and "
                "'process_open_fds ' in t and 'process_cpu_seconds_total ' in t: raise "
                "SystemExit(0)\n"
                "  time.sleep(0.2)\n"
                "raise SystemExit(1)\"",
             url_w);
    assert_int_equal(sh(cmd), 0);
    snprintf(cmd, sizeof(cmd), PY " tools/check_deploy.py dashboard-metrics %s %s", url_w, url_a);
    assert_int_equal(sh(cmd), 0);

    assert_int_equal(test_stop_pid(alerts, SIGTERM, 10000), 0);
    test_stop_pid(worker, SIGTERM, 20000); /* its exit codes are other tests' business */
    free(aargv[0]);
    test_broker_stop(&b);
    test_redis_stop(&r);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir); /* our own mkdtemp directory */
    assert_int_equal(sh(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dashboard_queries_only_exported_names),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
