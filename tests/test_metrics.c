/* Metrics endpoint (common/monitor/metrics.c), over real HTTP (libcurl) on a free
 * port: /metrics parses as Prometheus text with the right names and types,
 * counters and the histogram add up, monitor gauges come from the monitor's
 * snapshot, consumer lag from a librdkafka statistics document, /healthz and
 * /readyz answer by state; a scrape running while the worker thread
 * updates stays consistent (run under ASan in make sanitize). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <curl/curl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "metrics.h"
#include "monitor.h"
#include "promtext.h"
#include "stack.h"

struct fx {
    struct metrics *m;
    int port;
};

struct body {
    char *p;
    size_t n;
};

static size_t on_data(char *d, size_t sz, size_t nm, void *u)
{
    struct body *b = u;
    char *q = realloc(b->p, b->n + sz * nm + 1);

    if (!q)
        return 0;
    memcpy(q + b->n, d, sz * nm);
    b->n += sz * nm;
    q[b->n] = '\0';
    b->p = q;
    return sz * nm;
}

/* GET path; returns the status, body in *out (caller frees). */
static long get(int port, const char *path, char **out)
{
    CURL *c = curl_easy_init();
    struct body b = {calloc(1, 1), 0};
    char url[128];
    long code = -1;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 5L);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    *out = b.p;
    return code;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    struct err e = {0};
    struct metrics_opts o = {0, "transactions", "credit-risk", "7", 200, "models/credit_gbdt.json"};

    f->port = o.port = test_free_port();
    f->m = metrics_open(&o, &e);
    if (!f->m) {
        fprintf(stderr, "%s\n", e.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    metrics_close(f->m);
    free(f);
    return 0;
}

/* A monitor with two features that has evaluated one drifted window. */
static struct mon *drifted_monitor(void)
{
    struct mon_baseline *b = mon_baseline_new("t", "m");
    struct mon_opts o = {.window_events = 100, .window_ms = 100000, .slices = 1,
                         .min_events = 10, .psi_warn = 0.1, .psi_crit = 0.2,
                         .score_psi_warn = 0.1, .score_psi_crit = 0.2, .score_mean_warn = 0.1,
                         .score_mean_crit = 0.15, .missing_warn = 0.1, .latency_warn_s = 0.1,
                         .latency_crit_s = 0.5, .error_warn = 0.01, .error_crit = 0.05,
                         .auc_warn = 0.05, .auc_crit = 0.1, .auc_window = 10,
                         .auc_min_labels = 5, .hysteresis = 0.1};
    const char *names[] = {"income", "amount"};
    double v[100];
    struct mon_dist d;
    struct err e = {0};
    struct mon *m;

    for (int i = 0; i < 100; i++)
        v[i] = i;
    assert_int_equal(mon_dist_compute(v, 100, &d, &e), 0);
    assert_int_equal(mon_baseline_add(b, "income", &d, &e), 0);
    assert_int_equal(mon_baseline_add(b, "amount", &d, &e), 0);
    for (int i = 0; i < 100; i++)
        v[i] = i / 100.0;
    assert_int_equal(mon_dist_compute(v, 100, &d, &e), 0);
    mon_baseline_set_score(b, &d);
    m = mon_open(&o, b, names, 2, &e);
    assert_non_null(m);
    for (int i = 0; i < 100; i++) {
        float x[2] = {(float)(i + 50), (float)i}; /* income shifted */
        mon_observe(m, x, i / 100.0, 1500, 0, i);
    }
    mon_tick(m, 100);
    return m;
}

static void test_metrics_parse_as_prometheus_text(void **state)
{
    struct fx *f = *state;
    struct mon *mon = drifted_monitor();
    char *text, why[256];
    double v;

    metrics_add(f->m, METRICS_EVENTS, 10);
    metrics_add(f->m, METRICS_PREDICTIONS, 9);
    metrics_add(f->m, METRICS_DEAD_LETTERS, 1);
    metrics_observe_latency(f->m, 50);      /* 50 us */
    metrics_observe_latency(f->m, 200000);  /* 0.2 s */
    metrics_worker_tick(f->m, mon, 4, 1, 1);
    assert_int_equal(get(f->port, "/metrics", &text), 200);
    if (prom_check(text, why, sizeof(why)))
        fprintf(stderr, "%s\n%s", why, text);
    assert_int_equal(prom_check(text, why, sizeof(why)), 0);
    assert_string_equal(prom_type(text, "streamml_events_total"), "counter");
    assert_string_equal(prom_type(text, "streamml_processing_latency_seconds"), "histogram");
    assert_string_equal(prom_type(text, "streamml_feature_psi"), "gauge");
    assert_string_equal(prom_type(text, "streamml_build_info"), "gauge");
    assert_int_equal(prom_value(text, "streamml_events_total", &v), 0);
    assert_true(v == 10);
    assert_int_equal(prom_value(text, "streamml_dead_letters_total", &v), 0);
    assert_true(v == 1);
    assert_int_equal(prom_value(text, "streamml_processing_latency_seconds_bucket{le=\"0.0001\"}",
                                &v), 0);
    assert_true(v == 1);
    assert_int_equal(prom_value(text, "streamml_processing_latency_seconds_bucket{le=\"0.25\"}",
                                &v), 0);
    assert_true(v == 2);
    assert_int_equal(prom_value(text, "streamml_processing_latency_seconds_sum", &v), 0);
    assert_true(fabs(v - 0.20005) < 1e-9);
    assert_int_equal(prom_value(text, "streamml_feature_psi{feature=\"income\"}", &v), 0);
    assert_true(v > 0.2);
    assert_int_equal(prom_value(text, "streamml_feature_psi{feature=\"amount\"}", &v), 0);
    assert_true(v == 0);
    assert_int_equal(prom_value(text, "streamml_monitor_status", &v), 0);
    assert_true(v == 1); /* income is CRITICAL: DEGRADED */
    assert_int_equal(prom_value(text, "streamml_monitor_check_level{check=\"data_drift\"}", &v),
                     0);
    assert_true(v == 2);
    assert_int_equal(prom_value(text, "streamml_consumer_lag", &v), 0);
    assert_true(isnan(v)); /* no statistics yet */
    {
        /* model_sha is what sha256sum says of the model file. */
        char want[512], sum[65] = "";
        FILE *p = popen("sha256sum models/credit_gbdt.json", "r");
        assert_non_null(p);
        assert_int_equal(fscanf(p, "%64s", sum), 1);
        pclose(p);
        snprintf(want, sizeof(want),
                 "streamml_build_info{version=\"" STREAMML_VERSION "\",worker=\"transactions\","
                 "model=\"credit-risk\",model_version=\"7\",model_sha=\"%s\"} 1\n",
                 sum);
        assert_int_equal(strlen(sum), 64);
        assert_non_null(strstr(text, want));
    }
    free(text);
    mon_close(mon);
}

static void test_consumer_lag_from_librdkafka_statistics(void **state)
{
    struct fx *f = *state;
    /* The shape of librdkafka's statistics (STATISTICS.md), trimmed. */
    const char *stats =
        "{\"name\":\"c#consumer-1\",\"type\":\"consumer\",\"topics\":{\"transactions\":"
        "{\"topic\":\"transactions\",\"partitions\":{"
        "\"0\":{\"partition\":0,\"consumer_lag\":120},"
        "\"1\":{\"partition\":1,\"consumer_lag\":30},"
        "\"2\":{\"partition\":2,\"consumer_lag\":-1},"
        "\"-1\":{\"partition\":-1,\"consumer_lag\":-1}}}}}";
    char *text;
    double v;

    metrics_kafka_stats(stats, strlen(stats), f->m);
    metrics_kafka_stats("not json", 8, f->m); /* ignored, lag kept */
    assert_int_equal(get(f->port, "/metrics", &text), 200);
    assert_int_equal(prom_value(text, "streamml_consumer_lag", &v), 0);
    assert_true(v == 150);
    free(text);
}

static void test_health_and_readiness(void **state)
{
    struct fx *f = *state;
    char *text;

    metrics_worker_tick(f->m, NULL, 0, 1, 1);
    assert_int_equal(get(f->port, "/healthz", &text), 200);
    free(text);
    assert_int_equal(get(f->port, "/readyz", &text), 503);
    assert_non_null(strstr(text, "no partition assigned"));
    free(text);
    metrics_worker_tick(f->m, NULL, 2, 0, 1);
    assert_int_equal(get(f->port, "/readyz", &text), 503);
    assert_non_null(strstr(text, "Redis"));
    free(text);
    metrics_worker_tick(f->m, NULL, 2, 1, 1);
    assert_int_equal(get(f->port, "/readyz", &text), 200);
    free(text);
    usleep(300 * 1000); /* past stale_ms (200) without a beat */
    assert_int_equal(get(f->port, "/healthz", &text), 503);
    free(text);
    assert_int_equal(get(f->port, "/nope", &text), 404);
    free(text);
}

static void test_port_zero_is_off_and_busy_port_named(void **state)
{
    struct fx *f = *state;
    struct metrics_opts o = {0, "w", "m", "1", 0, NULL};
    struct err e = {0};

    assert_null(metrics_open(&o, &e));
    assert_int_equal(e.code, 0);
    o.port = f->port; /* already served by the fixture */
    assert_null(metrics_open(&o, &e));
    assert_int_equal(e.code, ERR_CONFIG);
    assert_non_null(strstr(e.msg, "metrics.port"));
}

struct hammer {
    struct metrics *m;
    struct mon *mon;
    volatile int stop;
};

static void *hammer(void *arg)
{
    struct hammer *h = arg;

    while (!h->stop) {
        metrics_add(h->m, METRICS_EVENTS, 1);
        metrics_observe_latency(h->m, 1000);
        metrics_worker_tick(h->m, h->mon, 1, 1, 1);
    }
    return NULL;
}

static void test_scrapes_while_worker_updates(void **state)
{
    struct fx *f = *state;
    struct hammer h = {f->m, drifted_monitor(), 0};
    pthread_t t;
    char *text, why[256];

    assert_int_equal(pthread_create(&t, NULL, hammer, &h), 0);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(get(f->port, "/metrics", &text), 200);
        if (prom_check(text, why, sizeof(why)))
            fprintf(stderr, "%s\n", why);
        assert_int_equal(prom_check(text, why, sizeof(why)), 0);
        free(text);
    }
    h.stop = 1;
    pthread_join(t, NULL);
    mon_close(h.mon);
}

static void test_checker_rejects_bad_text(void **state)
{
    char why[256];

    (void)state;
    assert_int_equal(prom_check("x_total 1\n", why, sizeof(why)), -1); /* no TYPE */
    assert_int_equal(prom_check("# TYPE x counter\nx 1\n", why, sizeof(why)), -1);
    assert_int_equal(prom_check("# TYPE x gauge\nx{a=b} 1\n", why, sizeof(why)), -1);
    assert_int_equal(prom_check("# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"
                                "h_bucket{le=\"+Inf\"} 1\nh_count 1\n", why, sizeof(why)), -1);
    assert_int_equal(prom_check("# TYPE g gauge\ng NaN\n", why, sizeof(why)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_metrics_parse_as_prometheus_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consumer_lag_from_librdkafka_statistics, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_health_and_readiness, setup, teardown),
        cmocka_unit_test_setup_teardown(test_port_zero_is_off_and_busy_port_named, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_scrapes_while_worker_updates, setup, teardown),
        cmocka_unit_test(test_checker_rejects_bad_text),
    };
    int rc;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
