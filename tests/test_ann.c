/* IVF top-k over the session model's output layer (common/models/ann.c): against
 * the exact blocked top-k (common/models/session.c) on the hidden states of the
 * held-out sessions of the committed model: probing every cluster is exact,
 * the default probe keeps a recall floor, every item is in one cluster,
 * seeded builds are identical, bad options are named, NaN never ranks, a k
 * the scratch cannot hold is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ann.h"
#include "session.h"

#define MODEL "models/clickstream/gru4rec.onnx"
#define HELDOUT "models/clickstream/sessions_heldout.jsonl"
#define K 70 /* the worker's default: candidates 50 + history 20 */
#define DEFAULT_LISTS 0 /* the worker's defaults (common/base/cfg.c) */
#define DEFAULT_PROBE 32

static struct sess_model *g_m;
static float *g_h; /* the state after every click of the held-out sessions */
static size_t g_n;

static int load_states(void)
{
    FILE *f = fopen(HELDOUT, "r");
    char line[4096];
    int H = sess_model_hidden(g_m);
    float h[SESS_MAX_HIDDEN], scratch[6 * SESS_MAX_HIDDEN];
    size_t cap = 4096;
    struct err e = {0};

    g_h = malloc(cap * (size_t)H * sizeof(float));
    if (!f || !g_h)
        return -1;
    while (fgets(line, sizeof(line), f)) {
        json_error_t je;
        json_t *s = json_loads(line, 0, &je);
        memset(h, 0, sizeof(h));
        for (size_t t = 0; s && t < json_array_size(s) && g_n < cap; t++) {
            if (sess_step(g_m, json_integer_value(json_array_get(s, t)), h, scratch, &e))
                return -1;
            memcpy(g_h + g_n++ * (size_t)H, h, (size_t)H * sizeof(float));
        }
        json_decref(s);
    }
    fclose(f);
    return g_n > 500 ? 0 : -1;
}

static int setup(void **st)
{
    struct err e = {0};

    (void)st;
    if (sess_model_open(&g_m, MODEL, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return -1;
    }
    return load_states();
}

static int teardown(void **st)
{
    (void)st;
    sess_model_close(g_m);
    free(g_h);
    return 0;
}

/* The exact top-k of g_h's first n states. */
static struct sess_top *exact_topk(size_t n, int k)
{
    struct sess_top *t = malloc(n * (size_t)k * sizeof(*t));
    float *block = malloc(256 * (size_t)SESS_BLOCK * sizeof(float));

    assert_non_null(t);
    assert_non_null(block);
    sess_topk(g_m, n, g_h, k, t, block);
    free(block);
    return t;
}

static struct sess_top *ivf_topk(const struct ann *a, size_t n, const float *h, int k)
{
    struct ann_query *q = NULL;
    struct err e = {0};
    struct sess_top *t = malloc(n * (size_t)k * sizeof(*t));

    assert_non_null(t);
    assert_int_equal(ann_query_open(&q, a, K, &e), ERR_OK);
    assert_int_equal(ann_topk(a, q, n, h, k, t, &e), ERR_OK);
    assert_int_equal(ann_query_stats(q)->queries, n);
    ann_query_close(q);
    return t;
}

/* Mean |IVF top-k n exact top-k| / k. */
static double overlap(const struct sess_top *x, const struct sess_top *y, size_t n, int k)
{
    double sum = 0;

    for (size_t i = 0; i < n; i++) {
        int hit = 0;
        for (int a = 0; a < k; a++)
            for (int b = 0; b < k; b++)
                hit += x[i * k + a].item >= 0 && x[i * k + a].item == y[i * k + b].item;
        sum += (double)hit / k;
    }
    return sum / (double)n;
}

static struct ann *open_ann(int lists, int probe, uint64_t seed)
{
    struct ann *a = NULL;
    struct err e = {0};
    struct ann_opts o = {.lists = lists, .probe = probe, .seed = seed};

    if (ann_open(&a, g_m, &o, &e))
        fail_msg("ann_open: %s", e.msg);
    return a;
}

static void test_probing_every_cluster_is_exact(void **st)
{
    struct ann *a = open_ann(40, 40, 7);
    struct sess_top *x = exact_topk(g_n, K), *y = ivf_topk(a, g_n, g_h, K);
    double worst = 0;

    (void)st;
    assert_int_equal(ann_lists(a), 40);
    for (size_t i = 0; i < g_n * K; i++) {
        double d = fabs(x[i].score - y[i].score) / (1 + fabs(x[i].score));
        worst = d > worst ? d : worst;
        /* the same items in the same order, unless two scores tie to rounding */
        if (x[i].item != y[i].item)
            assert_true(d <= 1e-5);
    }
    assert_true(worst <= 1e-5);
    assert_true(overlap(x, y, g_n, K) >= 0.999);
    free(x);
    free(y);
    ann_close(a);
}

/* The floor the README quotes: the default lists/probe on real session
 * states of the trained model. */
static void test_default_probe_recall_floor(void **st)
{
    struct ann *a = open_ann(DEFAULT_LISTS, DEFAULT_PROBE, 1);
    struct sess_top *x = exact_topk(g_n, K), *y = ivf_topk(a, g_n, g_h, K);
    double r = overlap(y, x, g_n, K), r20 = 0;
    int64_t lo, hi;

    (void)st;
    for (size_t i = 0; i < g_n; i++) { /* top 20 of the IVF list vs the exact top 20 */
        int hit = 0;
        for (int p = 0; p < 20; p++)
            for (int q = 0; q < 20; q++)
                hit += y[i * K + p].item == x[i * K + q].item;
        r20 += hit / 20.0;
    }
    ann_list_sizes(a, &lo, &hi);
    printf("# %zu held-out states, %d lists (%lld..%lld items), probe %d: mean overlap with the "
           "exact top %d %.4f, top 20 %.4f; build %.1f ms\n",
           g_n, ann_lists(a), (long long)lo, (long long)hi, ann_probe(a), K, r, r20 / (double)g_n,
           ann_build_ms(a));
    assert_true(r >= 0.95);
    free(x);
    free(y);
    ann_close(a);
}

/* Recall grows with the probe; a smaller probe scores fewer items. */
static void test_recall_grows_with_probe(void **st)
{
    struct sess_top *x = exact_topk(g_n, K);
    double prev = 0;
    uint64_t prev_scored = 0;
    int probes[] = {1, 4, 16, 71};

    (void)st;
    for (size_t p = 0; p < sizeof(probes) / sizeof(probes[0]); p++) {
        struct ann *a = open_ann(71, probes[p], 1);
        struct ann_query *q = NULL;
        struct err e = {0};
        struct sess_top *y = malloc(g_n * K * sizeof(*y));
        double r;
        assert_int_equal(ann_query_open(&q, a, K, &e), ERR_OK);
        assert_int_equal(ann_topk(a, q, g_n, g_h, K, y, &e), ERR_OK);
        r = overlap(y, x, g_n, K);
        printf("# probe %d of 71: overlap %.4f, %.1f%% of the catalog scored\n", probes[p], r,
               100.0 * (double)ann_query_stats(q)->scored / ((double)g_n * 5000));
        assert_true(r >= prev);
        assert_true(ann_query_stats(q)->scored > prev_scored);
        prev = r;
        prev_scored = ann_query_stats(q)->scored;
        ann_query_close(q);
        ann_close(a);
        free(y);
    }
    assert_true(prev >= 0.999);
    free(x);
}

/* With every cluster probed and k = the catalog, each item comes back once:
 * the clusters partition the catalog; scores are the model's. */
static void test_clusters_partition_the_catalog(void **st)
{
    int N = (int)sess_model_items(g_m);
    struct ann *a = open_ann(0, 1000, 3);
    struct sess_top *y = ivf_topk(a, 2, g_h, N);
    char *seen = calloc((size_t)N, 1);

    (void)st;
    for (int s = 0; s < 2; s++) {
        memset(seen, 0, (size_t)N);
        for (int i = 0; i < N; i++) {
            int64_t it = y[s * N + i].item;
            assert_true(it >= 0 && it < N);
            assert_int_equal(seen[it], 0);
            seen[it] = 1;
            assert_float_equal(y[s * N + i].score,
                               sess_score_one(g_m, g_h + s * sess_model_hidden(g_m), it), 1e-4);
            if (i)
                assert_true(y[s * N + i].score <= y[s * N + i - 1].score);
        }
    }
    assert_int_equal(ann_probe(a), ann_lists(a)); /* probe clamped to lists */
    free(seen);
    free(y);
    ann_close(a);
}

static void test_seeded_builds_are_identical(void **st)
{
    struct ann *a = open_ann(50, 6, 42), *b = open_ann(50, 6, 42);
    struct sess_top *x = ivf_topk(a, 300, g_h, K), *y = ivf_topk(b, 300, g_h, K);

    (void)st;
    for (int i = 0; i < 300 * K; i++) { /* fields: the struct has padding */
        assert_int_equal(x[i].item, y[i].item);
        assert_true(x[i].score == y[i].score);
    }
    free(x);
    free(y);
    ann_close(a);
    ann_close(b);
}

static void test_bad_options_are_named(void **st)
{
    struct ann *a = NULL;
    struct err e = {0};
    struct ann_opts bad[] = {{.lists = 5001, .probe = 1},
                             {.lists = -1, .probe = 1},
                             {.lists = 10, .probe = 0},
                             {.lists = 10, .probe = 1, .iters = -2}};
    const char *names[] = {"clickstream.ivf_lists", "clickstream.ivf_lists",
                           "clickstream.ivf_probe", "iterations"};

    (void)st;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(ann_open(&a, g_m, &bad[i], &e), ERR_CONFIG);
        assert_null(a);
        assert_non_null(strstr(e.msg, names[i]));
    }
}

/* A state with NaN scores nothing; padding is item -1; a sane state in the
 * same batch is unaffected. */
static void test_nan_state_never_ranks(void **st)
{
    int H = sess_model_hidden(g_m);
    float *h = malloc(2 * (size_t)H * sizeof(float));
    struct ann *a = open_ann(0, DEFAULT_PROBE, 1);
    struct sess_top *y, *x = ivf_topk(a, 1, g_h, K);

    (void)st;
    memcpy(h, g_h, (size_t)H * sizeof(float));
    memcpy(h + H, g_h, (size_t)H * sizeof(float));
    h[H + 3] = NAN;
    y = ivf_topk(a, 2, h, K);
    for (int i = 0; i < K; i++) {
        assert_int_equal(y[K + i].item, -1);
        assert_int_equal(y[i].item, x[i].item);
    }
    free(h);
    free(x);
    free(y);
    ann_close(a);
}

/* A k the scratch cannot hold, or another index's scratch: refused, out
 * untouched. */
static void test_query_limits_are_checked(void **st)
{
    struct ann *a = open_ann(0, 4, 1), *b = open_ann(0, 4, 2);
    struct ann_query *q = NULL;
    struct err e = {0};
    struct sess_top out[4] = {{7, 1.0f}};

    (void)st;
    assert_int_equal(ann_query_open(&q, a, 1, &e), ERR_OK); /* room for 2 x 1024 entries */
    assert_int_equal(ann_topk(a, q, 1, g_h, 2000, out, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "IVF top 2000"));
    assert_int_equal(ann_topk(a, q, 1, g_h, 0, out, &e), ERR_INVALID);
    assert_int_equal(ann_topk(b, q, 1, g_h, 1, out, &e), ERR_INVALID);
    assert_int_equal(out[0].item, 7);
    assert_int_equal(ann_topk(a, q, 1, g_h, 4, out, &e), ERR_OK);
    assert_true(out[0].item >= 0 && out[3].item >= 0);
    ann_query_close(q);
    ann_close(a);
    ann_close(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_probing_every_cluster_is_exact),
        cmocka_unit_test(test_default_probe_recall_floor),
        cmocka_unit_test(test_recall_grows_with_probe),
        cmocka_unit_test(test_clusters_partition_the_catalog),
        cmocka_unit_test(test_seeded_builds_are_identical),
        cmocka_unit_test(test_bad_options_are_named),
        cmocka_unit_test(test_nan_state_never_ranks),
        cmocka_unit_test(test_query_limits_are_checked),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
