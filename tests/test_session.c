/* Session GRU and ranking (common/models/session.c, common/streams/rec.c): the one-click
 * GRU step against torch's GRU over whole sessions (fixtures from
 * tests/fixtures/make_click_fixtures.py) and against the ONNX graph run by
 * the shared runtime; candidates, exclusion, MMR, exploration propensities,
 * cold start; the state blob. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "onnx.h"
#include "session.h"

#define MODEL "models/clickstream/gru4rec.onnx"
#define REF "tests/fixtures/clickstream_ref.json"

static struct sess_model *g_m;
static json_t *g_ref;

static int setup(void **st)
{
    struct err e = {0};
    json_error_t je;

    (void)st;
    if (sess_model_open(&g_m, MODEL, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return -1;
    }
    g_ref = json_load_file(REF, 0, &je);
    return g_ref ? 0 : -1;
}

static int teardown(void **st)
{
    (void)st;
    sess_model_close(g_m);
    json_decref(g_ref);
    return 0;
}

static void test_model_shapes_match_the_fixture(void **st)
{
    size_t np;

    (void)st;
    assert_int_equal(sess_model_items(g_m), json_integer_value(json_object_get(g_ref, "items")));
    assert_int_equal(sess_model_hidden(g_m), json_integer_value(json_object_get(g_ref, "hidden")));
    sess_model_popular(g_m, &np);
    assert_int_equal(np, 100);
    assert_string_equal(sess_model_name(g_m), "gru4rec");
}

/* Each click advances the state by one step; after every click the state
 * equals torch's GRU output for the whole prefix. */
static void test_incremental_state_equals_torch_whole_session(void **st)
{
    size_t i, t;
    json_t *c;
    int H = sess_model_hidden(g_m);
    float *h = calloc((size_t)H, sizeof(float)), *scratch = calloc(6 * (size_t)H, sizeof(float));
    float *scores = malloc((size_t)sess_model_items(g_m) * sizeof(float));
    double worst = 0, worst_score = 0;
    struct err e = {0};

    (void)st;
    json_array_foreach(json_object_get(g_ref, "cases"), i, c)
    {
        json_t *items = json_object_get(c, "items"), *hs = json_object_get(c, "h");
        json_t *pi = json_object_get(c, "probe_items"), *ps = json_object_get(c, "probe_scores");
        memset(h, 0, (size_t)H * sizeof(float));
        for (t = 0; t < json_array_size(items); t++) {
            json_t *row = json_array_get(hs, t);
            assert_int_equal(
                sess_step(g_m, json_integer_value(json_array_get(items, t)), h, scratch, &e),
                ERR_OK);
            for (int j = 0; j < H; j++) {
                double d = fabs(h[j] - json_real_value(json_array_get(row, (size_t)j)));
                worst = d > worst ? d : worst;
            }
        }
        sess_scores(g_m, 1, h, scores);
        for (t = 0; t < json_array_size(pi); t++) {
            double ref = json_real_value(json_array_get(ps, t));
            double d = fabs(scores[json_integer_value(json_array_get(pi, t))] - ref);
            worst_score = d / (1 + fabs(ref)) > worst_score ? d / (1 + fabs(ref)) : worst_score;
        }
    }
    printf("# incremental GRU vs torch, 5 sessions of 1..20 clicks: max |dh| = %.2e, max "
           "relative |dscore| = %.2e\n", worst, worst_score);
    assert_true(i == 5);
    assert_true(worst <= 1e-5);
    assert_true(worst_score <= 1e-5);
    free(h);
    free(scratch);
    free(scores);
}

/* The same sessions through the ONNX graph (Gather, GRU, MatMul) of the
 * shared runtime: hidden state and last-step scores agree with the step. */
static void test_incremental_state_equals_the_onnx_graph(void **st)
{
    struct onnx_model *om = NULL;
    struct err e = {0};
    int H = sess_model_hidden(g_m);
    int64_t N = sess_model_items(g_m);
    int64_t items[12] = {3, 17, 4999, 0, 17, 250, 1024, 8, 8, 77, 3000, 42};
    float h0[1024] = {0}, h[1024] = {0}, scratch[6 * 1024];
    float *scores = malloc((size_t)N * sizeof(float));
    struct onnx_tensor in[2] = {{ONNX_I64, 2, {1, 12}, items}, {ONNX_F32, 3, {1, 1, H}, h0}};
    struct onnx_tensor out[2];
    const float *gs, *gh;

    (void)st;
    assert_int_equal(onnx_open(&om, MODEL, &e), ERR_OK);
    assert_int_equal(onnx_run(om, in, 2, out, 2, &e), ERR_OK);
    assert_int_equal(out[0].dims[2], N);
    for (int t = 0; t < 12; t++)
        assert_int_equal(sess_step(g_m, items[t], h, scratch, &e), ERR_OK);
    sess_scores(g_m, 1, h, scores);
    gs = (const float *)out[0].data + 11 * N;
    gh = out[1].data;
    for (int j = 0; j < H; j++)
        assert_float_equal(h[j], gh[j], 1e-5);
    for (int64_t k = 0; k < N; k++)
        assert_float_equal(scores[k], gs[k], 1e-4 * (1 + fabsf(gs[k])));
    onnx_close(om);
    free(scores);
}

/* sgemm over many sessions equals one session at a time. */
static void test_batched_scores_equal_single(void **st)
{
    int H = sess_model_hidden(g_m);
    int64_t N = sess_model_items(g_m);
    float *h = calloc(3 * (size_t)H, sizeof(float)), scratch[6 * 1024];
    float *batch = malloc(3 * (size_t)N * sizeof(float)), *one = malloc((size_t)N * sizeof(float));
    struct err e = {0};

    (void)st;
    for (int s = 0; s < 3; s++)
        for (int t = 0; t <= s; t++)
            assert_int_equal(sess_step(g_m, 100 * s + t, h + s * H, scratch, &e), ERR_OK);
    sess_scores(g_m, 3, h, batch);
    for (int s = 0; s < 3; s++) {
        sess_scores(g_m, 1, h + s * H, one);
        for (int64_t k = 0; k < N; k++)
            assert_float_equal(one[k], batch[s * N + k], 1e-4);
    }
    free(h);
    free(batch);
    free(one);
}

/* Blocked top-k equals sorting the full scores; ranking from it equals
 * ranking from the full scores (exclusion, co-visited and popular items
 * scored by one dot product). */
static void test_blocked_topk_equals_full_scores(void **st)
{
    int H = sess_model_hidden(g_m), k = 70;
    int64_t N = sess_model_items(g_m);
    float *h = calloc(5 * (size_t)H, sizeof(float)), scratch[6 * 1024];
    float *full = malloc(5 * (size_t)N * sizeof(float));
    float *block = malloc(5 * (size_t)SESS_BLOCK * sizeof(float));
    struct sess_top *top = malloc(5 * (size_t)k * sizeof(*top));
    struct rec_opts o = {.k = 10, .candidates = 50, .lambda_diversity = 0.5, .epsilon = 0.0};
    struct rec_ctx *c = NULL;
    struct err e = {0};
    int64_t ex[3] = {0, 0, 0}, cov[2] = {17, 4000}, pop[3] = {1, 2, 3};

    (void)st;
    for (int s = 0; s < 5; s++)
        for (int t = 0; t <= s; t++)
            assert_int_equal(sess_step(g_m, 37 * s + 11 * t, h + s * H, scratch, &e), ERR_OK);
    sess_scores(g_m, 5, h, full);
    sess_topk(g_m, 5, h, k, top, block);
    assert_int_equal(rec_ctx_open(&c, g_m, &o, 1, &e), ERR_OK);
    for (int s = 0; s < 5; s++) {
        const float *sc = full + s * N;
        struct rec_item a[REC_MAX_K], b[REC_MAX_K];
        size_t na, nb;
        for (int j = 0; j < k; j++) {
            int64_t it = top[s * k + j].item, better = 0;
            assert_true(it >= 0 && it < N);
            assert_float_equal(top[s * k + j].score, sc[it], 1e-4);
            for (int64_t q = 0; q < N; q++)
                better += sc[q] > sc[it] + 1e-4f;
            assert_true(better <= j); /* at most j items clearly better than the j-th */
        }
        for (int j = 0; j < 3; j++)
            ex[j] = top[s * k + 2 * j].item; /* the session "has" some of its best items */
        struct rec_input fi = {.scores = sc,
                               .exclude = ex,
                               .n_exclude = 3,
                               .covisit = cov,
                               .n_covisit = 2,
                               .popular = pop,
                               .n_popular = 3};
        struct rec_input ti = {.top = top + s * k,
                               .n_top = (size_t)k,
                               .h = h + s * H,
                               .exclude = ex,
                               .n_exclude = 3,
                               .covisit = cov,
                               .n_covisit = 2,
                               .popular = pop,
                               .n_popular = 3};
        rec_rank(c, &fi, a, &na);
        rec_rank(c, &ti, b, &nb);
        assert_int_equal(na, nb);
        for (size_t j = 0; j < na; j++) {
            assert_int_equal(a[j].item, b[j].item);
            assert_int_equal(a[j].source, b[j].source);
            assert_float_equal(a[j].score, b[j].score, 1e-4);
            for (int q = 0; q < 3; q++)
                assert_true(b[j].item != ex[q]);
        }
    }
    rec_ctx_close(c);
    free(h);
    free(full);
    free(block);
    free(top);
}

static void test_unknown_item_is_refused_and_state_unchanged(void **st)
{
    float h[1024], scratch[6 * 1024];
    struct err e = {0};

    (void)st;
    for (int j = 0; j < 1024; j++)
        h[j] = 0.25f;
    assert_int_equal(sess_step(g_m, sess_model_items(g_m), h, scratch, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "not in the catalog"));
    assert_int_equal(sess_step(g_m, -1, h, scratch, &e), ERR_INVALID);
    for (int j = 0; j < sess_model_hidden(g_m); j++)
        assert_true(h[j] == 0.25f);
}

static void test_bad_model_files_are_config_errors(void **st)
{
    struct sess_model *m = NULL;
    struct err e = {0};

    (void)st;
    assert_int_equal(sess_model_open(&m, "models/images/fundus_cnn.onnx", &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "emb.weight"));
    assert_null(m);
    assert_int_equal(sess_model_open(&m, "tests/fixtures/nope.onnx", &e), ERR_CONFIG);
    assert_null(m);
}

/* Synthetic scores: item i scores -i, so the ranking is known. */
static float *ramp_scores(void)
{
    int64_t N = sess_model_items(g_m);
    float *s = malloc((size_t)N * sizeof(float));
    for (int64_t i = 0; i < N; i++)
        s[i] = (float)-i;
    return s;
}

static void test_relevance_only_is_top_k_without_session_items(void **st)
{
    struct rec_opts o = {.k = 10, .candidates = 50, .lambda_diversity = 0.0, .epsilon = 0.0};
    struct rec_ctx *c = NULL;
    struct err e = {0};
    float *s = ramp_scores();
    int64_t ex[3] = {0, 2, 5};
    int64_t want[10] = {1, 3, 4, 6, 7, 8, 9, 10, 11, 12};
    struct rec_input in = {.scores = s, .exclude = ex, .n_exclude = 3};
    struct rec_item out[REC_MAX_K];
    size_t n;

    (void)st;
    assert_int_equal(rec_ctx_open(&c, g_m, &o, 1, &e), ERR_OK);
    rec_rank(c, &in, out, &n);
    assert_int_equal(n, 10);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(out[i].item, want[i]);
        assert_int_equal(out[i].source, REC_GRU);
        assert_true(out[i].propensity == 1.0);
        assert_float_equal(out[i].score, -(float)want[i], 0);
    }
    rec_ctx_close(c);
    free(s);
}

static double max_pair_cosine(const struct rec_item *it, size_t n)
{
    double worst = -1;
    int dim = (int)(sess_model_unit_embedding(g_m, 1) - sess_model_unit_embedding(g_m, 0));
    for (size_t a = 0; a < n; a++)
        for (size_t b = a + 1; b < n; b++) {
            const float *x = sess_model_unit_embedding(g_m, it[a].item);
            const float *y = sess_model_unit_embedding(g_m, it[b].item);
            double s = 0;
            for (int j = 0; j < dim; j++)
                s += x[j] * y[j];
            worst = s > worst ? s : worst;
        }
    return worst;
}

/* Items 0..49 are the candidates; MMR at lambda 0 picks a more diverse list
 * than lambda 1 (its most similar pair is less similar), and keeps the top
 * item first. */
static void test_mmr_diversifies(void **st)
{
    struct rec_opts o = {.k = 10, .candidates = 50, .lambda_diversity = 0.0, .epsilon = 0.0};
    struct rec_ctx *c1 = NULL, *c0 = NULL;
    struct err e = {0};
    float *s = ramp_scores();
    struct rec_input in = {.scores = s};
    struct rec_item a[REC_MAX_K], b[REC_MAX_K];
    size_t na, nb;

    (void)st;
    assert_int_equal(rec_ctx_open(&c1, g_m, &o, 1, &e), ERR_OK);
    o.lambda_diversity = 0.7;
    assert_int_equal(rec_ctx_open(&c0, g_m, &o, 1, &e), ERR_OK);
    rec_rank(c1, &in, a, &na);
    rec_rank(c0, &in, b, &nb);
    assert_int_equal(na, 10);
    assert_int_equal(nb, 10);
    assert_int_equal(b[0].item, 0);
    for (size_t i = 0; i < nb; i++)
        assert_true(b[i].item < 50);
    assert_true(max_pair_cosine(b, nb) < max_pair_cosine(a, na));
    rec_ctx_close(c1);
    rec_ctx_close(c0);
    free(s);
}

/* The seed's MMR, computed here item by item: candidates 0..49 (ramp
 * scores), relevance (49 - i) / 49 as the code scales it, then greedily
 * argmax (1 - ld) * rel - ld * max sim(picked), ties to the more relevant
 * item; sim the cosine (unit rows) or the dot product (raw rows). */
static void mmr_reference(double ld, int dot, int64_t *want, int k)
{
    int used[50] = {0};
    float maxsim[50] = {0}, rel[50];
    int dim = (int)(sess_model_unit_embedding(g_m, 1) - sess_model_unit_embedding(g_m, 0));

    for (int i = 0; i < 50; i++)
        rel[i] = ((float)-i - -49.0f) / (0.0f - -49.0f);
    for (int n = 0; n < k; n++) {
        int best = -1;
        double bv = -INFINITY;
        for (int i = 0; i < 50; i++) {
            double v = (1.0 - ld) * rel[i] - (n ? ld * maxsim[i] : 0.0);
            if (!used[i] && (v > bv || (v == bv && rel[i] > rel[best])))
                bv = v, best = i;
        }
        used[best] = 1;
        want[n] = best;
        for (int i = 0; i < 50; i++) {
            const float *x = dot ? sess_model_embedding(g_m, i) : sess_model_unit_embedding(g_m, i);
            const float *y =
                dot ? sess_model_embedding(g_m, best) : sess_model_unit_embedding(g_m, best);
            double s = 0;
            for (int j = 0; j < dim; j++)
                s += (double)x[j] * y[j];
            maxsim[i] = n == 0 || (float)s > maxsim[i] ? (float)s : maxsim[i];
        }
    }
}

/* lambda_diversity has the seed's meaning: 0 = relevance only (the top
 * scores in order), 1 = diversity only (after the most relevant item, each
 * pick is the least similar to those picked, whatever its relevance), and
 * in between the weighted sum; for cosine and dot product alike. */
static void test_lambda_diversity_has_the_seeds_meaning(void **st)
{
    const double lds[] = {0.0, 0.5, 1.0};
    float *s = ramp_scores();
    struct rec_input in = {.scores = s};
    struct err e = {0};

    (void)st;
    for (int dot = 0; dot < 2; dot++)
        for (size_t l = 0; l < sizeof(lds) / sizeof(lds[0]); l++) {
            struct rec_opts o = {.k = 10, .candidates = 50, .lambda_diversity = lds[l],
                                 .mmr_dot = dot, .epsilon = 0.0};
            struct rec_ctx *c = NULL;
            struct rec_item out[REC_MAX_K];
            int64_t want[10];
            size_t n;
            assert_int_equal(rec_ctx_open(&c, g_m, &o, 1, &e), ERR_OK);
            rec_rank(c, &in, out, &n);
            mmr_reference(lds[l], dot, want, 10);
            assert_int_equal(n, 10);
            for (int i = 0; i < 10; i++) {
                if (out[i].item != want[i])
                    fail_msg("%s, lambda_diversity %.1f: slot %d is %lld, want %lld",
                             dot ? "dot" : "cosine", lds[l], i, (long long)out[i].item,
                             (long long)want[i]);
                if (lds[l] == 0.0)
                    assert_int_equal(out[i].item, i); /* pure relevance: the ramp's top */
            }
            if (lds[l] == 1.0) { /* pure diversity: not the top ten by relevance */
                assert_int_equal(out[0].item, 0);
                assert_true(out[9].item > 9);
            }
            rec_ctx_close(c);
        }
    free(s);
}

/* epsilon 1: every slot explores; propensity eps / |pool|, the pool
 * shrinking by the shown items; nothing from the session, no duplicates. */
static void test_exploration_propensities(void **st)
{
    struct rec_opts o = {.k = 10, .candidates = 50, .lambda_diversity = 0.5, .epsilon = 1.0};
    struct rec_ctx *c = NULL;
    struct err e = {0};
    float *s = ramp_scores();
    int64_t ex[2] = {7, 9}, N = sess_model_items(g_m);
    struct rec_input in = {.scores = s, .exclude = ex, .n_exclude = 2};
    struct rec_item out[REC_MAX_K];
    size_t n, explored = 0;

    (void)st;
    assert_int_equal(rec_ctx_open(&c, g_m, &o, 42, &e), ERR_OK);
    rec_rank(c, &in, out, &n);
    assert_int_equal(n, 10);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(out[i].source, REC_EXPLORE);
        assert_float_equal(out[i].propensity, 1.0 / (double)(N - 2 - 10 - (int64_t)i), 1e-15);
        assert_true(out[i].item != 7 && out[i].item != 9);
        for (size_t j = 0; j < i; j++)
            assert_true(out[i].item != out[j].item);
    }
    rec_ctx_close(c);
    /* epsilon 0.2 over many draws: about 20% of slots explored */
    o.epsilon = 0.2;
    assert_int_equal(rec_ctx_open(&c, g_m, &o, 7, &e), ERR_OK);
    for (int r = 0; r < 500; r++) {
        rec_rank(c, &in, out, &n);
        for (size_t i = 0; i < n; i++) {
            explored += out[i].source == REC_EXPLORE;
            if (out[i].source != REC_EXPLORE)
                assert_float_equal(out[i].propensity, 0.8, 1e-12);
        }
    }
    assert_true(explored > 850 && explored < 1150); /* 1000 expected, sd 12.6 */
    rec_ctx_close(c);
    free(s);
}

/* No scores: popular items in order, minus the session's; unknown ids in
 * the popular list are skipped. */
static void test_cold_start_is_popular_items(void **st)
{
    struct rec_opts o = {.k = 5, .candidates = 50, .lambda_diversity = 0.0, .epsilon = 0.0};
    struct rec_ctx *c = NULL;
    struct err e = {0};
    int64_t pop[8] = {40, -3, 41, 99999999, 42, 43, 44, 45}, ex[1] = {42};
    struct rec_input in = {.exclude = ex, .n_exclude = 1, .popular = pop, .n_popular = 8};
    struct rec_item out[REC_MAX_K];
    int64_t want[5] = {40, 41, 43, 44, 45};
    size_t n;

    (void)st;
    assert_int_equal(rec_ctx_open(&c, g_m, &o, 1, &e), ERR_OK);
    rec_rank(c, &in, out, &n);
    assert_int_equal(n, 5);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(out[i].item, want[i]);
        assert_int_equal(out[i].source, REC_POPULAR);
    }
    rec_ctx_close(c);
}

static void test_covisited_items_join_the_candidates(void **st)
{
    struct rec_opts o = {.k = 10, .candidates = 10, .lambda_diversity = 0.0, .epsilon = 0.0};
    struct rec_ctx *c = NULL;
    struct err e = {0};
    float *s = ramp_scores();
    int64_t cov[2] = {3000, 4000};
    struct rec_input in = {.scores = s, .covisit = cov, .n_covisit = 2};
    struct rec_item out[REC_MAX_K];
    size_t n;

    (void)st;
    s[4000] = 0.5f; /* the best score of all: ranked first, found via co-visitation */
    s[0] = -0.5f;
    assert_int_equal(rec_ctx_open(&c, g_m, &o, 1, &e), ERR_OK);
    rec_rank(c, &in, out, &n);
    /* 4000 is in the top 10 scores itself: source gru; 3000 is not */
    assert_int_equal(out[0].item, 4000);
    assert_int_equal(out[0].source, REC_GRU);
    for (size_t i = 0; i < n; i++)
        assert_true(out[i].item != 3000);
    rec_ctx_close(c);
    /* one GRU candidate: the co-visited item is still shown, labelled so */
    o.k = 3;
    o.candidates = 1;
    assert_int_equal(rec_ctx_open(&c, g_m, &o, 1, &e), ERR_OK);
    rec_rank(c, &in, out, &n);
    assert_int_equal(n, 3);
    assert_int_equal(out[0].item, 4000);
    assert_int_equal(out[2].item, 3000);
    assert_int_equal(out[2].source, REC_COVISIT);
    rec_ctx_close(c);
    free(s);
}

static void test_bad_options_are_named(void **st)
{
    struct rec_opts o = {.k = 10, .candidates = 0, .lambda_diversity = 0.5, .epsilon = 0.1};
    struct rec_ctx *c = NULL;
    struct err e = {0};

    (void)st;
    assert_int_equal(rec_ctx_open(&c, g_m, &o, 1, &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "clickstream.candidates"));
    o.candidates = 50;
    o.lambda_diversity = NAN;
    assert_int_equal(rec_ctx_open(&c, g_m, &o, 1, &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "clickstream.lambda_diversity"));
    o.lambda_diversity = 0.5;
    o.epsilon = 1.5;
    assert_int_equal(rec_ctx_open(&c, g_m, &o, 1, &e), ERR_CONFIG);
    assert_null(c);
}

static void test_state_round_trip_and_bad_blobs(void **st)
{
    struct sess_state a, b;
    unsigned char buf[8192];
    size_t len;
    struct err e = {0};

    (void)st;
    sess_state_init(&a, 64);
    for (int i = 0; i < 30; i++)
        sess_state_push(&a, 1000 + i, 20);
    assert_int_equal(a.n_hist, 20);
    assert_int_equal(a.hist[0], 1010);
    a.has_h = 1;
    for (int j = 0; j < 64; j++)
        a.h[j] = (float)j / 7.0f;
    a.last_ms = 1700000000123;
    a.clicks = 30;
    a.unknown = 2;
    len = sess_state_encode(&a, buf, sizeof(buf));
    assert_int_equal(len, 36 + 8 * 20 + 4 * 64);
    assert_int_equal(sess_state_encode(&a, buf, len - 1), 0);
    assert_int_equal(sess_state_decode(&b, buf, len, 64, &e), ERR_OK);
    assert_int_equal(b.n_hist, 20);
    assert_memory_equal(b.hist, a.hist, 20 * sizeof(int64_t));
    assert_memory_equal(b.h, a.h, 64 * sizeof(float));
    assert_int_equal(b.last_ms, a.last_ms);
    assert_int_equal(b.unknown, 2);
    assert_int_equal(sess_state_decode(&b, buf, len - 1, 64, &e), ERR_DECODE);
    assert_int_equal(sess_state_decode(&b, buf, len, 128, &e), ERR_DECODE);
    assert_non_null(strstr(e.msg, "hidden size 64"));
    buf[0] ^= 1;
    assert_int_equal(sess_state_decode(&b, buf, len, 64, &e), ERR_DECODE);
    assert_non_null(strstr(e.msg, "magic"));
    buf[0] ^= 1;
    memset(buf + 36 + 8 * 20, 0xff, 4); /* a NaN hidden value */
    assert_int_equal(sess_state_decode(&b, buf, len, 64, &e), ERR_DECODE);
    assert_int_equal(b.n_hist, 0);
}

/* Offline quality through the C path: every next click of the held-out
 * sessions (models/clickstream/sessions_heldout.jsonl, written by train.py)
 * ranked by the incremental GRU vs the model's popularity list. The GRU
 * must beat popularity on Recall@20 and MRR@20. */
static void test_gru_beats_popularity_on_held_out_sessions(void **st)
{
    FILE *f = fopen("models/clickstream/sessions_heldout.jsonl", "r");
    char line[4096];
    int H = sess_model_hidden(g_m);
    int64_t N = sess_model_items(g_m);
    float *h = calloc((size_t)H, sizeof(float)), scratch[6 * 1024];
    float *scores = malloc((size_t)N * sizeof(float));
    size_t np;
    const int64_t *pop = sess_model_popular(g_m, &np);
    double hits = 0, rr = 0, phits = 0, prr = 0;
    long n = 0;
    struct err e = {0};

    (void)st;
    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        json_error_t je;
        json_t *sess = json_loads(line, 0, &je);
        assert_non_null(sess);
        memset(h, 0, (size_t)H * sizeof(float));
        for (size_t t = 0; t + 1 < json_array_size(sess); t++) {
            int64_t next = json_integer_value(json_array_get(sess, t + 1));
            int rank = 0;
            assert_int_equal(
                sess_step(g_m, json_integer_value(json_array_get(sess, t)), h, scratch, &e),
                ERR_OK);
            sess_scores(g_m, 1, h, scores);
            for (int64_t k = 0; k < N; k++) /* rank of the next item: items scoring higher */
                rank += scores[k] > scores[next];
            if (rank < 20) {
                hits++;
                rr += 1.0 / (rank + 1);
            }
            for (size_t k = 0; k < 20 && k < np; k++)
                if (pop[k] == next) {
                    phits++;
                    prr += 1.0 / (double)(k + 1);
                }
            n++;
        }
        json_decref(sess);
    }
    fclose(f);
    printf("# held-out next clicks: %ld; GRU Recall@20 %.4f MRR@20 %.4f; popularity Recall@20 "
           "%.4f MRR@20 %.4f\n",
           n, hits / n, rr / n, phits / n, prr / n);
    assert_true(n > 500);
    assert_true(hits / n > phits / n + 0.1);
    assert_true(rr / n > prr / n + 0.05);
    free(h);
    free(scores);
}

static int cmp_top(const void *a, const void *b)
{
    const struct sess_top *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? 1 : -1;
    return (x->item > y->item) - (x->item < y->item);
}

static int cmp_id(const void *a, const void *b)
{
    const struct sess_top *x = a, *y = b;
    return (x->item > y->item) - (x->item < y->item);
}

/* sess_top_keep keeps exactly the first k of the sorted order (higher
 * score, then lower id), with few distinct scores (ties at the threshold,
 * past KEEP_TIES too) and with distinct ones, for k from 1 to n. */
static void test_top_keep_is_the_sorted_prefix(void **st)
{
    enum { N = 600 };
    static struct sess_top t[N], ref[N];
    static float scratch[N];
    uint64_t x = 12345;

    (void)st;
    for (int levels = 3; levels <= 100000; levels *= 40)
        for (int k = 1; k <= N; k += k < 20 ? 1 : 37) {
            int n = N;
            float th;
            for (int i = 0; i < N; i++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                t[i] = (struct sess_top){(int64_t)(x % 100000), (float)(x % (uint64_t)levels)};
                t[i].item = t[i].item * N + i; /* distinct ids */
            }
            memcpy(ref, t, sizeof(t));
            qsort(ref, N, sizeof(*ref), cmp_top);
            th = sess_top_keep(t, &n, k, scratch);
            assert_int_equal(n, k);
            assert_true(th == ref[k - 1].score);
            qsort(t, (size_t)k, sizeof(*t), cmp_id);
            qsort(ref, (size_t)k, sizeof(*ref), cmp_id);
            for (int i = 0; i < k; i++) /* fields: the padding is not compared */
                assert_true(t[i].item == ref[i].item && t[i].score == ref[i].score);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_shapes_match_the_fixture),
        cmocka_unit_test(test_incremental_state_equals_torch_whole_session),
        cmocka_unit_test(test_incremental_state_equals_the_onnx_graph),
        cmocka_unit_test(test_batched_scores_equal_single),
        cmocka_unit_test(test_blocked_topk_equals_full_scores),
        cmocka_unit_test(test_top_keep_is_the_sorted_prefix),
        cmocka_unit_test(test_unknown_item_is_refused_and_state_unchanged),
        cmocka_unit_test(test_bad_model_files_are_config_errors),
        cmocka_unit_test(test_relevance_only_is_top_k_without_session_items),
        cmocka_unit_test(test_mmr_diversifies),
        cmocka_unit_test(test_lambda_diversity_has_the_seeds_meaning),
        cmocka_unit_test(test_exploration_propensities),
        cmocka_unit_test(test_cold_start_is_popular_items),
        cmocka_unit_test(test_covisited_items_join_the_candidates),
        cmocka_unit_test(test_bad_options_are_named),
        cmocka_unit_test(test_state_round_trip_and_bad_blobs),
        cmocka_unit_test(test_gru_beats_popularity_on_held_out_sessions),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
