/* `streamml click-eval`: offline quality through a replay of a click topic on
 * the embedded broker. The held-out sessions of models/clickstream/ (written
 * by train.py) are produced interleaved across sessions and partitions, plus
 * one undecodable record and one unknown item; the command's Recall@20 and
 * MRR@20 (GRU and popularity) must equal the same figures computed session
 * by session in process, and the GRU must beat popularity. With --search
 * ivf the IVF figures (common/models/ann.h, the worker's index and defaults) must
 * equal the same computed in process through ann_topk, and the GRU through
 * IVF must still beat popularity clearly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ann.h"
#include "cfg.h"
#include "session.h"
#include "stack.h"

#define MODEL "models/clickstream/gru4rec.onnx"
#define SESSIONS "models/clickstream/sessions_heldout.jsonl"
#define MAX_SESS 256
#define MAX_LEN 32

struct figures {
    long evaluated;
    double hits, rr, phits, prr;
};

static int64_t g_sess[MAX_SESS][MAX_LEN];
static int g_len[MAX_SESS], g_n;


static void load_sessions(void)
{
    FILE *f = fopen(SESSIONS, "r");
    char line[4096];

    assert_non_null(f);
    g_n = 0;
    while (g_n < MAX_SESS && fgets(line, sizeof(line), f)) {
        json_error_t je;
        json_t *a = json_loads(line, 0, &je);
        assert_non_null(a);
        g_len[g_n] = 0;
        for (size_t i = 0; i < json_array_size(a) && i < MAX_LEN; i++)
            g_sess[g_n][g_len[g_n]++] = json_integer_value(json_array_get(a, i));
        json_decref(a);
        g_n++;
    }
    fclose(f);
    /* one more session whose second click is an unknown item */
    g_sess[g_n][0] = 5;
    g_sess[g_n][1] = 9999999;
    g_sess[g_n][2] = 6;
    g_len[g_n++] = 3;
}

/* The same definition, session by session: after each click, the next click's
 * position in the best 20 (sess_topk) and in the popularity list. */
/* ann: rank through the IVF index instead of sess_topk. */
static void in_process(const struct sess_model *m, struct ann *ann, struct figures *f)
{
    struct ann_query *q = NULL;
    int H = sess_model_hidden(m);
    size_t np;
    const int64_t *pop = sess_model_popular(m, &np);
    float h[SESS_MAX_HIDDEN], scratch[6 * SESS_MAX_HIDDEN];
    float *block = malloc(SESS_BLOCK * sizeof(float));
    struct sess_top top[20];
    struct err e = {0};

    memset(f, 0, sizeof(*f));
    assert_true(!ann || ann_query_open(&q, ann, 20, &e) == ERR_OK);
    for (int s = 0; s < g_n; s++) {
        int has_h = 0;
        memset(h, 0, (size_t)H * sizeof(float));
        for (int t = 0; t + 1 < g_len[s]; t++) {
            int64_t next = g_sess[s][t + 1];
            if (sess_step(m, g_sess[s][t], h, scratch, &e) == ERR_OK)
                has_h = 1;
            f->evaluated++;
            if (has_h) {
                if (ann)
                    assert_int_equal(ann_topk(ann, q, 1, h, 20, top, &e), ERR_OK);
                else
                    sess_topk(m, 1, h, 20, top, block);
                for (int r = 0; r < 20; r++)
                    if (top[r].item == next) {
                        f->hits++;
                        f->rr += 1.0 / (r + 1);
                    }
            }
            for (size_t r = 0; r < 20 && r < np; r++)
                if (pop[r] == next) {
                    f->phits++;
                    f->prr += 1.0 / (double)(r + 1);
                }
        }
    }
    free(block);
    ann_query_close(q);
}

static void produce(const char *bootstrap, const char *dir)
{
    char path[256], garbage[256];
    FILE *f;
    long t = 0;

    snprintf(path, sizeof(path), "%s/clicks.jsonl", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    for (int j = 0; j < MAX_LEN; j++)
        for (int s = 0; s < g_n; s++)
            if (j < g_len[s])
                fprintf(f,
                        "{\"event_id\":\"e%d-%d\",\"session_id\":\"s%d\",\"user_id\":null,"
                        "\"item_id\":%lld,\"event_type\":\"view\",\"event_time\":%ld}\n",
                        s, j, s, (long long)g_sess[s][j], 1767225600000L + 1000L * t++);
    fclose(f);
    snprintf(garbage, sizeof(garbage), "%s/garbage.txt", dir);
    f = fopen(garbage, "w");
    assert_non_null(f);
    fprintf(f, "not avro\n");
    fclose(f);
    char *a1[] = {(char *)test_bin("streamml"),
                  "produce",
                  "-b",
                  (char *)bootstrap,
                  "-t",
                  "clickstream",
                  "--schema",
                  "click_event",
                  "-i",
                  path,
                  "--log-level",
                  "warn",
                  NULL};
    assert_int_equal(test_run_wait(a1, NULL), 0);
    char *a2[] = {(char *)test_bin("streamml"),
                  "produce",
                  "-b",
                  (char *)bootstrap,
                  "-t",
                  "clickstream",
                  "--raw",
                  "-i",
                  garbage,
                  "--log-level",
                  "warn",
                  NULL};
    assert_int_equal(test_run_wait(a2, NULL), 0);
}

static double num(json_t *o, const char *a, const char *b)
{
    json_t *x = json_object_get(o, a);
    return json_number_value(b ? json_object_get(x, b) : x);
}

/* The JSON object line of the command's output (stderr lines around it). */
static json_t *result_line(const char *path, json_error_t *je)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    json_t *o = NULL;

    assert_non_null(f);
    while (!o && fgets(line, sizeof(line), f))
        if (strncmp(line, "{\"model\"", 8) == 0)
            o = json_loads(line, 0, je);
    fclose(f);
    if (!o)
        fail_msg("%s: no result line", path);
    return o;
}

static void test_replayed_quality_equals_in_process(void **st)
{
    struct test_broker broker;
    struct sess_model *m = NULL;
    struct err e = {0};
    struct figures want;
    char dir[] = "/tmp/streamml-clickeval-XXXXXX", out[256];
    json_t *got;
    json_error_t je;

    (void)st;
    assert_non_null(mkdtemp(dir));
    load_sessions();
    assert_int_equal(sess_model_open(&m, MODEL, &e), ERR_OK);
    in_process(m, NULL, &want);
    assert_int_equal(test_broker_start(&broker, "clickstream:3"), 0);
    produce(broker.bootstrap, dir);
    snprintf(out, sizeof(out), "%s/eval.json", dir);
    char *a[] = {(char *)test_bin("streamml"),
                 "click-eval",
                 "-b",
                 broker.bootstrap,
                 "-t",
                 "clickstream",
                 "--log-level",
                 "warn",
                 NULL};
    assert_int_equal(test_run_wait(a, out), 0);
    got = result_line(out, &je);
    printf("# click-eval over %ld next clicks: GRU Recall@20 %.4f MRR@20 %.4f, popularity "
           "%.4f / %.4f\n",
           want.evaluated, want.hits / want.evaluated, want.rr / want.evaluated,
           want.phits / want.evaluated, want.prr / want.evaluated);
    assert_int_equal(json_integer_value(json_object_get(got, "evaluated")), want.evaluated);
    assert_int_equal(json_integer_value(json_object_get(got, "undecodable")), 1);
    assert_int_equal(json_integer_value(json_object_get(got, "unknown_items")), 1);
    assert_float_equal(num(got, "gru", "recall"), want.hits / want.evaluated, 1e-9);
    assert_float_equal(num(got, "gru", "mrr"), want.rr / want.evaluated, 1e-9);
    assert_float_equal(num(got, "popularity", "recall"), want.phits / want.evaluated, 1e-9);
    assert_float_equal(num(got, "popularity", "mrr"), want.prr / want.evaluated, 1e-9);
    assert_true(num(got, "gru", "recall") > num(got, "popularity", "recall") + 0.1);
    assert_true(num(got, "gru", "mrr") > num(got, "popularity", "mrr") + 0.05);
    json_decref(got);
    test_broker_stop(&broker);
    sess_model_close(m);
    snprintf(out, sizeof(out), "rm -rf '%s'", dir);
    assert_int_equal(system(out), 0);
}

/* The index the worker builds with its defaults (clickstream.ivf_*). */
static struct ann *default_index(const struct sess_model *m)
{
    struct cfg *cf = cfg_new();
    struct ann_opts o = {.lists = (int)cfg_int(cf, "clickstream.ivf_lists"),
                         .probe = (int)cfg_int(cf, "clickstream.ivf_probe")};
    struct ann *a = NULL;
    struct err e = {0};

    assert_int_equal(ann_open(&a, m, &o, &e), ERR_OK);
    cfg_free(cf);
    return a;
}

static void test_replayed_ivf_quality_equals_in_process(void **st)
{
    struct test_broker broker;
    struct sess_model *m = NULL;
    struct ann *ann;
    struct err e = {0};
    struct figures ex, iv;
    char dir[] = "/tmp/streamml-clickeval-XXXXXX", out[256];
    json_t *got;
    json_error_t je;

    (void)st;
    assert_non_null(mkdtemp(dir));
    load_sessions();
    assert_int_equal(sess_model_open(&m, MODEL, &e), ERR_OK);
    ann = default_index(m);
    in_process(m, NULL, &ex);
    in_process(m, ann, &iv);
    assert_int_equal(test_broker_start(&broker, "clickstream:3"), 0);
    produce(broker.bootstrap, dir);
    snprintf(out, sizeof(out), "%s/eval.json", dir);
    char *a[] = {(char *)test_bin("streamml"), "click-eval", "-b", broker.bootstrap, "-t",
                 "clickstream", "--search", "ivf", "--log-level", "warn", NULL};
    assert_int_equal(test_run_wait(a, out), 0);
    got = result_line(out, &je);
    printf("# click-eval --search ivf (%d lists, probe %d) over %ld next clicks: GRU exact "
           "Recall@20 %.4f MRR@20 %.4f, GRU IVF %.4f / %.4f, popularity %.4f / %.4f; top-20 "
           "overlap %.4f\n",
           ann_lists(ann), ann_probe(ann), iv.evaluated, ex.hits / ex.evaluated,
           ex.rr / ex.evaluated, iv.hits / iv.evaluated, iv.rr / iv.evaluated,
           iv.phits / iv.evaluated, iv.prr / iv.evaluated, num(got, "ivf", "overlap"));
    assert_string_equal(json_string_value(json_object_get(got, "search")), "ivf");
    assert_int_equal(json_integer_value(json_object_get(got, "evaluated")), iv.evaluated);
    assert_float_equal(num(got, "gru", "recall"), ex.hits / ex.evaluated, 1e-9);
    assert_float_equal(num(got, "gru", "mrr"), ex.rr / ex.evaluated, 1e-9);
    assert_float_equal(num(got, "gru_ivf", "recall"), iv.hits / iv.evaluated, 1e-9);
    assert_float_equal(num(got, "gru_ivf", "mrr"), iv.rr / iv.evaluated, 1e-9);
    assert_int_equal((int)num(got, "ivf", "lists"), ann_lists(ann));
    assert_int_equal((int)num(got, "ivf", "probe"), ann_probe(ann));
    assert_true(num(got, "ivf", "overlap") >= 0.9);
    assert_true(num(got, "gru_ivf", "recall") > num(got, "popularity", "recall") + 0.1);
    assert_true(num(got, "gru_ivf", "mrr") > num(got, "popularity", "mrr") + 0.05);
    json_decref(got);
    /* bad values are usage errors naming the option */
    char *bad1[] = {(char *)test_bin("streamml"), "click-eval", "-b", broker.bootstrap,
                    "-t", "clickstream", "--search", "hnsw", NULL};
    char *bad2[] = {(char *)test_bin("streamml"), "click-eval", "-b", broker.bootstrap,
                    "-t", "clickstream", "--search", "ivf", "-X", "clickstream.ivf_lists=6000",
                    NULL};
    snprintf(out, sizeof(out), "%s/bad.log", dir);
    assert_int_equal(test_run_wait(bad1, out), 2);
    assert_int_equal(test_run_wait(bad2, out), 2);
    {
        char log[4096] = {0};
        FILE *f = fopen(out, "r");
        assert_non_null(f);
        assert_true(fread(log, 1, sizeof(log) - 1, f) > 0);
        fclose(f);
        assert_non_null(strstr(log, "--search hnsw"));
        assert_non_null(strstr(log, "clickstream.ivf_lists"));
    }
    test_broker_stop(&broker);
    ann_close(ann);
    sess_model_close(m);
    snprintf(out, sizeof(out), "rm -rf '%s'", dir);
    assert_int_equal(system(out), 0);
}

/* ---- counterfactual estimates (--predictions) ---- */

#define OPE_SESS 6
#define OPE_CLICKS 5
#define OPE_SHOWN 4
#define OPE_K 20

/* One hand-made impression: its weights per policy and its outcome. */
struct imp {
    double w[3]; /* logged, gru, popularity */
    int y;
};

static int listed(const int64_t *l, size_t k, int64_t it)
{
    for (size_t r = 0; r < k; r++)
        if (l[r] == it)
            return 1;
    return 0;
}

static void check_ope(json_t *o, const struct imp *im, int n, int pol)
{
    double sw = 0, swy = 0, ips, var = 0, snips, v2 = 0;

    for (int i = 0; i < n; i++) {
        sw += im[i].w[pol];
        swy += im[i].w[pol] * im[i].y;
    }
    ips = swy / n;
    for (int i = 0; i < n; i++)
        var += (im[i].w[pol] * im[i].y - ips) * (im[i].w[pol] * im[i].y - ips);
    double se = sqrt(var / (n - 1) / n);
    assert_float_equal(json_number_value(json_object_get(o, "ips")), ips, 1e-9);
    assert_float_equal(json_number_value(json_array_get(json_object_get(o, "ips_ci"), 0)),
                       ips - 1.96 * se, 1e-9);
    assert_float_equal(json_number_value(json_array_get(json_object_get(o, "ips_ci"), 1)),
                       ips + 1.96 * se, 1e-9);
    snips = swy / sw;
    for (int i = 0; i < n; i++)
        v2 += im[i].w[pol] * im[i].w[pol] * (im[i].y - snips) * (im[i].y - snips);
    se = sqrt(v2) / sw;
    assert_float_equal(json_number_value(json_object_get(o, "snips")), snips, 1e-9);
    assert_float_equal(json_number_value(json_array_get(json_object_get(o, "snips_ci"), 0)),
                       snips - 1.96 * se, 1e-9);
    assert_float_equal(json_number_value(json_array_get(json_object_get(o, "snips_ci"), 1)),
                       snips + 1.96 * se, 1e-9);
}

/* A small hand-made log: 6 sessions of 5 clicks 60 s apart; after the
 * first three clicks of each, a prediction of 4 items: the model's best
 * item after that click (propensity 0.95), the session's next click (0.9,
 * clicked 60 s later: a click-through within the 90 s horizon), the click
 * after that (0.5, 120 s later: outside it) and an explored item (0.002).
 * Plus one prediction of an unknown click and one with propensity 0. The
 * command's IPS/SNIPS and intervals for the logged policy, the GRU top 20
 * and popularity must equal the same computed here, impression by
 * impression. */
static void test_counterfactual_estimates_equal_direct(void **st)
{
    struct test_broker broker;
    struct sess_model *m = NULL;
    struct err e = {0};
    char dir[] = "/tmp/streamml-clickeval-XXXXXX", out[256], cpath[256], ppath[256];
    static struct imp im[OPE_SESS * 3 * OPE_SHOWN];
    int ni = 0, clicked = 0, H, first = -1;
    size_t np;
    const int64_t *pop;
    float h[SESS_MAX_HIDDEN], scratch[6 * SESS_MAX_HIDDEN];
    float *block = malloc(SESS_BLOCK * sizeof(float));
    struct sess_top top[OPE_K];
    FILE *fc, *fp;
    json_t *got, *cf;
    json_error_t je;

    (void)st;
    assert_non_null(mkdtemp(dir));
    load_sessions();
    assert_int_equal(sess_model_open(&m, MODEL, &e), ERR_OK);
    H = sess_model_hidden(m);
    pop = sess_model_popular(m, &np);
    snprintf(cpath, sizeof(cpath), "%s/clicks.jsonl", dir);
    snprintf(ppath, sizeof(ppath), "%s/preds.jsonl", dir);
    assert_non_null(fc = fopen(cpath, "w"));
    assert_non_null(fp = fopen(ppath, "w"));
    for (int s = 0, used = 0; used < OPE_SESS; s++) {
        assert_true(s < g_n);
        if (g_len[s] < OPE_CLICKS)
            continue;
        used++;
        first = first < 0 ? s : first;
        memset(h, 0, (size_t)H * sizeof(float));
        for (int j = 0; j < OPE_CLICKS; j++) {
            long t = 1767225600000L + 60000L * j;
            fprintf(fc,
                    "{\"event_id\":\"o%d-%d\",\"session_id\":\"o%d\",\"user_id\":null,"
                    "\"item_id\":%lld,\"event_type\":\"view\",\"event_time\":%ld}\n",
                    s, j, s, (long long)g_sess[s][j], t);
            assert_int_equal(sess_step(m, g_sess[s][j], h, scratch, &e), ERR_OK);
            if (j >= 3)
                continue;
            sess_topk(m, 1, h, OPE_K, top, block);
            int64_t items[OPE_SHOWN] = {top[0].item, g_sess[s][j + 1], g_sess[s][j + 2],
                                        4000 + s};
            double prop[OPE_SHOWN] = {0.95, 0.9, 0.5, 0.002};
            int64_t tl[OPE_K];
            for (int r = 0; r < OPE_K; r++)
                tl[r] = top[r].item;
            fprintf(fp, "{\"session_id\":\"o%d\",\"event_id\":\"o%d-%d\",\"event_time\":%ld,"
                        "\"items\":[", s, s, j, t);
            for (int i = 0; i < OPE_SHOWN; i++) {
                int y = 0;
                for (int l = j + 1; l < OPE_CLICKS && l <= j + 1; l++) /* 90 s: one click */
                    y |= g_sess[s][l] == items[i];
                fprintf(fp, "%s{\"item_id\":%lld,\"score\":1.0,\"source\":\"gru\","
                            "\"propensity\":%.17g}", i ? "," : "", (long long)items[i], prop[i]);
                im[ni].w[0] = 1.0;
                im[ni].w[1] = listed(tl, OPE_K, items[i]) / prop[i];
                im[ni].w[2] = listed(pop, OPE_K < np ? OPE_K : np, items[i]) / prop[i];
                im[ni++].y = y;
                clicked += y;
            }
            fprintf(fp, "],\"cold_start\":false,\"unknown_item\":false,\"degraded\":false,"
                        "\"session_clicks\":%d,\"model_name\":\"m\",\"model_version\":\"1\","
                        "\"latency_us\":1,\"src_topic\":\"clickstream\",\"src_partition\":0,"
                        "\"src_offset\":0}\n", j + 1);
        }
    }
    /* no such click; a propensity of 0 */
    fprintf(fp, "{\"session_id\":\"nobody\",\"event_id\":\"x\",\"event_time\":0,\"items\":[],"
                "\"cold_start\":false,\"unknown_item\":false,\"degraded\":false,"
                "\"session_clicks\":1,\"model_name\":\"m\",\"model_version\":\"1\","
                "\"latency_us\":1,\"src_topic\":\"clickstream\",\"src_partition\":0,"
                "\"src_offset\":0}\n");
    fprintf(fp, "{\"session_id\":\"o%d\",\"event_id\":\"o%d-4\",\"event_time\":0,\"items\":["
                "{\"item_id\":1,\"score\":1.0,\"source\":\"gru\",\"propensity\":0.0}],"
                "\"cold_start\":false,\"unknown_item\":false,\"degraded\":false,"
                "\"session_clicks\":1,\"model_name\":\"m\",\"model_version\":\"1\","
                "\"latency_us\":1,\"src_topic\":\"clickstream\",\"src_partition\":0,"
                "\"src_offset\":0}\n",
            first, first);
    fclose(fc);
    fclose(fp);
    assert_true(clicked > 0);
    assert_int_equal(test_broker_start(&broker, "clickstream:3,predictions:2"), 0);
    char *a1[] = {(char *)test_bin("streamml"), "produce", "-b", broker.bootstrap, "-t",
                  "clickstream", "--schema", "click_event", "-i", cpath, "--log-level", "warn",
                  NULL};
    assert_int_equal(test_run_wait(a1, NULL), 0);
    char *a2[] = {(char *)test_bin("streamml"), "produce", "-b", broker.bootstrap, "-t",
                  "predictions", "--schema", "click_prediction", "-i", ppath, "--log-level",
                  "warn", NULL};
    assert_int_equal(test_run_wait(a2, NULL), 0);
    snprintf(out, sizeof(out), "%s/eval.json", dir);
    char *a[] = {(char *)test_bin("streamml"), "click-eval", "-b", broker.bootstrap, "-t",
                 "clickstream", "--predictions", "predictions", "--horizon", "90",
                 "--search", "exact", "--log-level", "warn", NULL};
    assert_int_equal(test_run_wait(a, out), 0);
    got = result_line(out, &je);
    cf = json_object_get(got, "counterfactual");
    assert_non_null(cf);
    assert_int_equal(json_integer_value(json_object_get(cf, "predictions")), OPE_SESS * 3 + 2);
    assert_int_equal(json_integer_value(json_object_get(cf, "unmatched")), 1);
    assert_int_equal(json_integer_value(json_object_get(cf, "bad_propensity")), 1);
    assert_int_equal(json_integer_value(json_object_get(cf, "impressions")), ni);
    assert_int_equal(json_integer_value(json_object_get(cf, "clicked_through")), clicked);
    check_ope(json_object_get(cf, "logged"), im, ni, 0);
    check_ope(json_object_get(cf, "gru"), im, ni, 1);
    check_ope(json_object_get(cf, "popularity"), im, ni, 2);
    printf("# click-eval counterfactual over %d impressions: logged CTR %.4f, GRU IPS %.4f "
           "SNIPS %.4f\n",
           ni, (double)clicked / ni, num(cf, "gru", "ips"), num(cf, "gru", "snips"));
    json_decref(got);
    test_broker_stop(&broker);
    sess_model_close(m);
    free(block);
    snprintf(out, sizeof(out), "rm -rf '%s'", dir);
    assert_int_equal(system(out), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replayed_quality_equals_in_process),
        cmocka_unit_test(test_replayed_ivf_quality_equals_in_process),
        cmocka_unit_test(test_counterfactual_estimates_equal_direct),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
