/* `streamml click-eval`: offline quality through a replay of a click topic on
 * the embedded broker. The held-out sessions of models/clickstream/ (written
 * by train.py) are produced interleaved across sessions and partitions, plus
 * one undecodable record and one unknown item; the command's Recall@20 and
 * MRR@20 (GRU and popularity) must equal the same figures computed session
 * by session in process, and the GRU must beat popularity. With --search
 * ivf the IVF figures (common/ann.h, the worker's index and defaults) must
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replayed_quality_equals_in_process),
        cmocka_unit_test(test_replayed_ivf_quality_equals_in_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
