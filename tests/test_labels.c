/* Labels joined to predictions (common/monitor/labels.c) against a real redis-server
 * and the embedded broker: predictions kept under pending:{model}:{id} with
 * a TTL, LabelEvents produced as Avro on the labels topic, joined by event
 * id into the monitor's rolling AUC. Labels that show decay (unrelated to
 * the scores) raise the CRITICAL AUC alert; labels that follow the scores do
 * not. Unknown, repeated and malformed labels are counted, never joined. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "kafka.h"
#include "labels.h"
#include "monitor.h"
#include "stack.h"

#define N 600

struct env {
    struct test_redis redis;
    struct test_broker broker;
    struct labels *l;
    struct kq *prod;
    struct codec *cd;
    struct cfg_kv kv;
};

static int setup(void **st)
{
    struct env *v = calloc(1, sizeof(*v));
    struct err e = {0};
    struct labels_opts o = {.topic = "labels", .group = "test-labels", .schemas_dir = "schemas",
                            .model = "credit-risk", .ttl_s = 3600};
    struct kq_opts po = {.client_id = "test"};

    if (!v || test_redis_start(&v->redis) || test_broker_start(&v->broker, "labels:2"))
        return -1;
    v->kv = (struct cfg_kv){"bootstrap.servers", v->broker.bootstrap, "test"};
    o.props = po.props = &v->kv;
    o.n_props = po.n_props = 1;
    o.redis = (struct state_redis_opts){.host = "127.0.0.1", .port = v->redis.port,
                                        .prefix = "t:", .timeout_ms = 2000};
    v->l = labels_open(&o, &e);
    v->prod = kq_open(&po, &e);
    v->cd = codec_open("schemas", &e);
    if (!v->l || !v->prod || !v->cd) {
        fprintf(stderr, "setup: %s\n", e.msg);
        return -1;
    }
    *st = v;
    return 0;
}

static int teardown(void **st)
{
    struct env *v = *st;

    labels_close(v->l);
    kq_close(v->prod, 5000, NULL);
    codec_close(v->cd);
    test_broker_stop(&v->broker);
    test_redis_stop(&v->redis);
    free(v);
    return 0;
}

static void produce_json(struct env *v, const char *json)
{
    struct buf out;
    struct err e = {0};

    buf_init(&out, 0);
    if (codec_from_json(v->cd, CODEC_LABEL, json, strlen(json), &out, &e))
        fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(e.code, 0);
    assert_int_equal(kq_produce(v->prod, "labels", "k", 1, out.data, out.len, NULL, &e), 0);
    buf_free(&out);
}

static void produce_label(struct env *v, const char *id, int label)
{
    char json[256];

    snprintf(json, sizeof(json), "{\"event_id\":\"%s\",\"label\":%d,\"label_time\":1}", id,
             label);
    produce_json(v, json);
}

/* Polls until `want` labels have been read (joined or not) or 20 s pass. */
static void poll_until(struct env *v, struct mon *m, uint64_t want)
{
    struct labels_stats s;
    struct err e = {0};

    kq_serve(v->prod, 0, &e);
    for (int i = 0; i < 400; i++) {
        labels_poll(v->l, m, 50, 1000);
        labels_get_stats(v->l, &s);
        if (s.labels >= want)
            return;
    }
    fail_msg("only %llu of %llu labels read", (unsigned long long)s.labels,
             (unsigned long long)want);
}

static struct mon *auc_monitor(double base_auc)
{
    struct mon_baseline *b = mon_baseline_new("t", "m");
    struct mon_opts o = {.window_events = N, .window_ms = 1000000, .slices = 1,
                         .min_events = 10, .psi_warn = 10, .psi_crit = 20,
                         .score_psi_warn = 10, .score_psi_crit = 20, .score_mean_warn = 10,
                         .score_mean_crit = 20, .missing_warn = 1, .latency_warn_s = 10,
                         .latency_crit_s = 20, .error_warn = 1, .error_crit = 1,
                         .auc_warn = 0.05, .auc_crit = 0.1, .auc_window = 5000,
                         .auc_min_labels = 500, .hysteresis = 0.1};
    struct err e = {0};
    struct mon *m;

    mon_baseline_set_auc(b, base_auc, 1000);
    m = mon_open(&o, b, NULL, 0, &e);
    assert_non_null(m);
    return m;
}

/* N predictions with score i/N; labels: follow the score (good) or are
 * unrelated to it (decayed). Returns the AUC level after a window. */
static enum mon_level run_labels(struct env *v, int decayed)
{
    struct mon *m = auc_monitor(0.80);
    char id[32];
    struct labels_stats s;
    enum mon_level lvl;
    unsigned r = 7;

    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "%c%d", decayed ? 'd' : 'g', i);
        labels_remember(v->l, id, (double)i / N);
        mon_observe(m, NULL, (double)i / N, 100, 0, i);
    }
    assert_int_equal(labels_flush(v->l, NULL), 0);
    for (int i = 0; i < N; i++) {
        r = r * 1103515245u + 12345u;
        snprintf(id, sizeof(id), "%c%d", decayed ? 'd' : 'g', i);
        produce_label(v, id, decayed ? (int)((r >> 16) % 3 == 0)
                                     : ((r >> 16) % 100) < (unsigned)(i * 100 / N));
    }
    poll_until(v, m, N);
    labels_get_stats(v->l, &s);
    assert_int_equal(s.joined, N);
    mon_tick(m, N);
    lvl = mon_level_of(m, MON_AUC, 0);
    mon_close(m);
    return lvl;
}

static void test_decayed_labels_raise_critical_auc(void **st)
{
    assert_int_equal(run_labels(*st, 1), MON_CRITICAL);
}

static void test_labels_that_follow_scores_raise_nothing(void **st)
{
    assert_int_equal(run_labels(*st, 0), MON_OK);
}

static long long redis_ttl(struct env *v, const char *key)
{
    char cmd[256], out[64] = {0};
    FILE *p;

    snprintf(cmd, sizeof(cmd), "redis-cli -p %d TTL '%s'", v->redis.port, key);
    p = popen(cmd, "r");
    assert_non_null(p);
    assert_non_null(fgets(out, sizeof(out), p));
    pclose(p);
    return strtoll(out, NULL, 10);
}

static void test_pending_kept_with_ttl_and_taken_once(void **st)
{
    struct env *v = *st;
    struct mon *m = auc_monitor(0.8);
    struct labels_stats s;
    long long ttl;

    labels_remember(v->l, "e1", 0.25);
    assert_int_equal(labels_flush(v->l, NULL), 0);
    ttl = redis_ttl(v, "t:pending:credit-risk:e1");
    assert_true(ttl > 3500 && ttl <= 3600);
    produce_label(v, "e1", 1);
    produce_label(v, "e1", 1);          /* the second finds nothing */
    produce_label(v, "never-scored", 0);
    produce_json(v, "{\"event_id\":\"e2\",\"label\":7,\"label_time\":1}");
    poll_until(v, m, 4);
    labels_get_stats(v->l, &s);
    assert_int_equal(s.joined, 1);
    assert_int_equal(s.unmatched, 2);
    assert_int_equal(s.bad, 1);
    assert_int_equal(redis_ttl(v, "t:pending:credit-risk:e1"), -2); /* taken */
    mon_close(m);
}

static void test_redis_down_counts_lost_and_keeps_going(void **st)
{
    struct env *v = *st;
    struct labels_stats s;
    struct err e = {0};

    test_redis_stop(&v->redis);
    labels_remember(v->l, "x1", 0.5);
    assert_int_equal(labels_flush(v->l, &e), ERR_RETRY);
    assert_non_null(strstr(e.msg, "redis"));
    labels_get_stats(v->l, &s);
    assert_int_equal(s.lost, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_decayed_labels_raise_critical_auc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_labels_that_follow_scores_raise_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pending_kept_with_ttl_and_taken_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_redis_down_counts_lost_and_keeps_going, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("labels", tests, NULL, NULL);
}
