/* The second-stage ranker (common/streams/ranker.h): the worker's features
 * and scores against torch's (models/clickstream/train_ranker.py wrote the
 * fixtures), models that do not fit refused at load, the ranking following
 * the ranker's scores, and two experiment arms with two ranker models. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "catalog.h"
#include "clickexp.h"
#include "clickstep.h"
#include "ranker.h"
#include "session.h"
#include "state.h"

#define MODEL "models/clickstream/gru4rec.onnx"
#define RANKER "models/clickstream/ranker.onnx"
#define PRICE "tests/fixtures/ranker_price.onnx"
#define BAD "tests/fixtures/ranker_bad.onnx"
#define CATALOG "models/clickstream/catalog.jsonl"
#define PAIRS "tests/fixtures/ranker_pairs.txt"
#define NOW_MS 1767225600000LL

static const int64_t SESSION[] = {1885, 155, 3000, 4380}; /* a held-out session */

static struct catalog *load_catalog(const struct sess_model *m)
{
    struct catalog *cat;
    struct err e = {0};
    size_t ok = 0, bad = 0;

    assert_int_equal(cat_open(&cat, 2 * sess_model_items(m), sess_model_items(m), &e), ERR_OK);
    if (cat_load_file(cat, CATALOG, &ok, &bad, NULL, NULL, &e))
        fail_msg("%s: %s", CATALOG, e.msg);
    assert_int_equal(bad, 0);
    return cat;
}

/* The fixture's pairs: features rebuilt here equal torch's, and one run of
 * the worker's ranker gives torch's scores. */
static void test_parity_with_torch(void **st)
{
    struct sess_model *m;
    struct catalog *cat;
    struct rk *r;
    struct err e = {0};
    struct rk_opts o = {100, 8192};
    FILE *f = fopen(PAIRS, "r");
    int n, H, F;
    long long now;

    (void)st;
    assert_non_null(f);
    assert_int_equal(fscanf(f, "%d %d %d %lld", &n, &H, &F, &now), 4);
    assert_int_equal(sess_model_open(&m, MODEL, &e), ERR_OK);
    assert_int_equal(H, sess_model_hidden(m));
    assert_int_equal(F, rk_num_features(m));
    cat = load_catalog(m);
    if (rk_open(&r, RANKER, m, &o, &e))
        fail_msg("%s", e.msg);
    float *h = calloc((size_t)n * (size_t)H, sizeof(float));
    float *x = calloc((size_t)n * (size_t)F, sizeof(float)), *mine = calloc((size_t)F, 4);
    float *want = calloc((size_t)n, sizeof(float)), *got = calloc((size_t)n, sizeof(float));
    assert_true(h && x && mine && want && got);
    for (int i = 0; i < n; i++) {
        long long item, last;
        unsigned mask = 0;
        int E = F - RK_NFIXED - REC_NSOURCES;
        assert_int_equal(fscanf(f, "%lld %lld %f", &item, &last, &want[i]), 3);
        for (int j = 0; j < H; j++)
            assert_int_equal(fscanf(f, "%f", &h[(size_t)i * H + j]), 1);
        for (int j = 0; j < F; j++)
            assert_int_equal(fscanf(f, "%f", &x[(size_t)i * F + j]), 1);
        for (int s = 0; s < REC_NSOURCES; s++)
            mask |= x[(size_t)i * F + E + RK_NFIXED + s] > 0.5f ? 1u << s : 0u;
        rk_features(m, cat, last, now, item, x[(size_t)i * F + E], mask, mine);
        for (int j = 0; j < F; j++)
            if (fabsf(mine[j] - x[(size_t)i * F + j]) > 1e-5f)
                fail_msg("pair %d (item %lld): feature %d is %g here, %g in torch", i, item, j,
                         (double)mine[j], (double)x[(size_t)i * F + j]);
    }
    if (rk_score(r, (size_t)n, h, x, got, &e))
        fail_msg("%s", e.msg);
    for (int i = 0; i < n; i++)
        if (fabsf(got[i] - want[i]) > 1e-5f * fmaxf(1.0f, fabsf(want[i])))
            fail_msg("pair %d: score %.7g, torch %.7g", i, (double)got[i], (double)want[i]);
    assert_string_equal(rk_name(r), "ranker");
    assert_string_equal(rk_version(r), "1");
    free(h), free(x), free(mine), free(want), free(got);
    fclose(f);
    rk_close(r);
    cat_close(cat);
    sess_model_close(m);
}

/* A model whose inputs do not fit is refused at load, naming the culprit. */
static void test_wrong_inputs_refused(void **st)
{
    struct sess_model *m;
    struct rk *r = NULL;
    struct err e = {0};
    struct rk_opts o = {100, 8192};
    struct cfg *cf;
    struct state *s;
    struct cstep *cs = NULL;

    (void)st;
    assert_int_equal(sess_model_open(&m, MODEL, &e), ERR_OK);
    assert_int_equal(rk_open(&r, BAD, m, &o, &e), ERR_CONFIG);
    assert_null(r);
    assert_non_null(strstr(e.msg, "input \"x\""));
    assert_non_null(strstr(e.msg, "[n, 80], expected float [n, 81]"));
    memset(&e, 0, sizeof(e));
    assert_int_equal(rk_open(&r, MODEL, m, &o, &e), ERR_CONFIG); /* the GRU is no ranker */
    assert_non_null(strstr(e.msg, "expected two: \"h\""));
    memset(&e, 0, sizeof(e));
    assert_int_not_equal(rk_open(&r, "tests/fixtures/no_such_ranker.onnx", m, &o, &e), ERR_OK);
    assert_non_null(strstr(e.msg, "clickstream.ranker"));
    sess_model_close(m);
    /* the same through the step's configuration */
    assert_non_null(cf = cfg_new());
    assert_int_equal(cfg_set_arg(cf, "clickstream.model=" MODEL, &e), ERR_OK);
    assert_int_equal(cfg_set_arg(cf, "clickstream.ranker=" BAD, &e), ERR_OK);
    assert_int_equal(cfg_finish(cf, &e), ERR_OK);
    assert_non_null(s = state_open_memory());
    memset(&e, 0, sizeof(e));
    assert_int_equal(cstep_open(&cs, cf, 4, s, NULL, &e), ERR_CONFIG);
    assert_null(cs);
    assert_non_null(strstr(e.msg, BAD));
    state_close(s);
    cfg_free(cf);
}

struct env {
    struct cfg *cf;
    struct state *st;
    struct cstep *cs;
    struct cx *cx;
    struct catalog *cat;
    long clicks;
};

static void open_env(struct env *v, const char *const *args, size_t n)
{
    struct err e = {0};
    const char *base[] = {"clickstream.model=" MODEL, "clickstream.epsilon=0",
                          "clickstream.seed=7", "clickstream.search=exact",
                          "clickstream.lambda_diversity=0", "clickstream.new_item_epsilon=0",
                          "clickstream.sources=gru:60,popular:20"};

    memset(v, 0, sizeof(*v));
    assert_non_null(v->cf = cfg_new());
    for (size_t i = 0; i < sizeof(base) / sizeof(base[0]); i++)
        assert_int_equal(cfg_set_arg(v->cf, base[i], &e), ERR_OK);
    for (size_t i = 0; i < n; i++)
        if (cfg_set_arg(v->cf, args[i], &e))
            fail_msg("%s: %s", args[i], e.msg);
    assert_int_equal(cfg_finish(v->cf, &e), ERR_OK);
    assert_non_null(v->st = state_open_memory());
    if (cstep_open(&v->cs, v->cf, 8, v->st, NULL, &e))
        fail_msg("cstep_open: %s", e.msg);
    v->cat = load_catalog(cstep_model(v->cs));
    assert_int_equal(cstep_set_catalog(v->cs, v->cat, &e), ERR_OK);
    if (cx_open(&v->cx, v->cf, NULL, NULL, 8, &e) || cx_arms(v->cx, v->cs, &e))
        fail_msg("arms: %s", e.msg);
}

static void close_env(struct env *v)
{
    cx_close(v->cx);
    cstep_close(v->cs);
    cat_close(v->cat);
    state_close(v->st);
    cfg_free(v->cf);
}

/* The held-out session's clicks, in sessions sid[0..ns) (arm arms[j]) in
 * one batch per click; p[j]: session j's last prediction. */
static void play(struct env *v, size_t ns, const char *const *sid, const int *arms,
                 struct click_prediction *p)
{
    for (size_t c = 0; c < sizeof(SESSION) / sizeof(SESSION[0]); c++) {
        struct click_event ev[4];
        struct cstep_click in[4];
        memset(ev, 0, sizeof(ev));
        for (size_t j = 0; j < ns; j++) {
            snprintf(ev[j].event_id, sizeof(ev[j].event_id), "e%ld", v->clicks);
            snprintf(ev[j].session_id, sizeof(ev[j].session_id), "%s", sid[j]);
            ev[j].item_id = SESSION[c];
            ev[j].type = CLICK_VIEW;
            ev[j].event_time_ms = NOW_MS + v->clicks;
            in[j] = (struct cstep_click){&ev[j], "clickstream", 0, v->clicks++, arms[j]};
        }
        assert_int_equal(cstep_batch(v->cs, ns, in, p), 0);
        cstep_store(v->cs);
    }
    for (size_t j = 0; j < ns; j++)
        cx_label(v->cx, arms[j], &p[j]);
}

static int same_items(const struct click_prediction *a, const struct click_prediction *b)
{
    if (a->n_items != b->n_items)
        return 0;
    for (int j = 0; j < a->n_items; j++)
        if (a->items[j].item_id != b->items[j].item_id)
            return 0;
    return 1;
}

static int by_score_desc(const void *a, const void *b)
{
    const struct rec_cand *x = a, *y = b;
    return (x->score < y->score) - (x->score > y->score);
}

/* With the ranker (here: score = log1p(price)), MMR at lambda_diversity 0
 * and no exploration show the pool's best items by the ranker's score, in
 * its order; without it the GRU's order. */
static void test_order_follows_ranker(void **st)
{
    const char *with[] = {"clickstream.ranker=" PRICE};
    const char *sid[] = {"s1"};
    const int arm0[] = {0};
    struct env v;
    struct click_prediction p, q;
    const struct rec_cand *pool;
    struct rec_cand sorted[200];
    size_t n;

    (void)st;
    open_env(&v, with, 1);
    play(&v, 1, sid, arm0, &p);
    assert_non_null(cstep_ranker(v.cs, -1));
    n = rk_last_pool(cstep_ranker(v.cs, -1), 0, &pool);
    assert_true(n >= 60 && n <= 100);
    memcpy(sorted, pool, n * sizeof(*pool));
    for (size_t j = 0; j < n; j++) /* the worker's scores: the model's formula */
        assert_float_equal(pool[j].score, log1p(cat_price(v.cat, pool[j].item)), 1e-5);
    qsort(sorted, n, sizeof(*sorted), by_score_desc);
    assert_int_equal(p.n_items, 10);
    for (int j = 0; j < p.n_items; j++) {
        assert_int_equal(p.items[j].item_id, sorted[j].item);
        assert_float_equal(p.items[j].score, sorted[j].score, 1e-6);
    }
    assert_string_equal(p.model_version, "1+ranker_price.1");
    close_env(&v);

    open_env(&v, NULL, 0); /* off by default */
    assert_null(cstep_ranker(v.cs, -1));
    play(&v, 1, sid, arm0, &q);
    assert_string_equal(q.model_version, "1");
    assert_false(same_items(&p, &q));
    for (int j = 1; j < q.n_items; j++) /* the GRU's relevance order */
        assert_true(q.items[j].score <= q.items[j - 1].score);
    close_env(&v);
}

/* Two arms, two ranker models: different rankings, each prediction naming
 * its arm and models; one batch holding both arms gives the same answers;
 * a reload watches every arm's file. */
static void test_arm_models(void **st)
{
    const char *args[] = {"experiment.id=exp-rk", "experiment.variants=price:-:0.5,learnt:-:0.5",
                          "clickstream.arms=price:ranker=" PRICE ",learnt:ranker=" RANKER};
    const char *sid[] = {"sa", "sb"}, *sid2[] = {"sc", "sd"};
    const int arms[] = {0, 1};
    const char *files[8];
    struct env v;
    struct click_prediction p[2], q[2];

    (void)st;
    open_env(&v, args, 3);
    play(&v, 1, sid, arms, &p[0]);
    play(&v, 1, sid + 1, arms + 1, &p[1]);
    assert_false(same_items(&p[0], &p[1]));
    assert_string_equal(p[0].variant, "price");
    assert_string_equal(p[0].model_version, "1+ranker_price.1");
    assert_string_equal(p[1].variant, "learnt");
    assert_string_equal(p[1].model_version, "1+ranker.1");
    play(&v, 2, sid2, arms, q); /* both arms in every micro-batch */
    assert_true(same_items(&p[0], &q[0]));
    assert_true(same_items(&p[1], &q[1]));
    assert_string_equal(q[1].model_version, "1+ranker.1");
    assert_int_equal(cstep_files(v.cs, files, 8), 3);
    assert_string_equal(files[0], MODEL);
    assert_string_equal(files[1], PRICE);
    assert_string_equal(files[2], RANKER);
    close_env(&v);
}

/* An arm's ranker "-" ranks without one; a bad arm model is refused. */
static void test_arm_without_ranker(void **st)
{
    const char *args[] = {"experiment.id=exp-rk", "experiment.variants=a:-:0.5,b:-:0.5",
                          "clickstream.ranker=" RANKER, "clickstream.arms=b:ranker=-"};
    const char *sid[] = {"sa", "sb"};
    const int arms[] = {0, 1};
    struct env v;
    struct click_prediction p[2];
    struct cx *x;
    struct err e = {0};

    (void)st;
    open_env(&v, args, 4);
    play(&v, 2, sid, arms, p);
    assert_string_equal(p[0].model_version, "1+ranker.1");
    assert_string_equal(p[1].model_version, "1");
    assert_null(cstep_ranker(v.cs, 1));
    assert_int_equal(cfg_set_arg(v.cf, "clickstream.arms=b:ranker=" BAD, &e), ERR_OK);
    assert_int_equal(cx_open(&x, v.cf, NULL, NULL, 8, &e), ERR_OK);
    cstep_close(v.cs);
    assert_int_equal(cstep_open(&v.cs, v.cf, 8, v.st, NULL, &e), ERR_OK);
    assert_int_equal(cx_arms(x, v.cs, &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, BAD));
    cx_close(x);
    close_env(&v);
}

/* rec_rank's two halves (keep 0, the pool unchanged) give rec_rank's
 * items, sources and propensities, draws included. */
static void test_halves_equal_rec_rank(void **st)
{
    struct sess_model *m;
    struct rec_ctx *a, *b;
    struct err e = {0};
    struct rec_opts o = {.k = 10, .candidates = 50, .lambda_diversity = 0.5, .epsilon = 0.3};
    static struct sess_top top[70];
    static float block[SESS_BLOCK], h[SESS_MAX_HIDDEN], scratch[6 * SESS_MAX_HIDDEN];
    static struct rec_cand pool[200];
    struct rec_item x[REC_MAX_K], y[REC_MAX_K];
    size_t nx, ny, np, npop;

    (void)st;
    assert_int_equal(sess_model_open(&m, MODEL, &e), ERR_OK);
    assert_int_equal(rec_ctx_open(&a, m, &o, 11, &e), ERR_OK);
    assert_int_equal(rec_ctx_open(&b, m, &o, 11, &e), ERR_OK);
    for (size_t c = 0; c < 3; c++)
        assert_int_equal(sess_step(m, SESSION[c], h, scratch, &e), ERR_OK);
    sess_topk(m, 1, h, 70, top, block);
    struct rec_input in = {.top = top, .n_top = 70, .h = h, .exclude = SESSION, .n_exclude = 3};
    in.popular = sess_model_popular(m, &npop);
    in.n_popular = npop;
    for (int r = 0; r < 20; r++) {
        rec_rank(a, &in, x, &nx);
        np = rec_pool_build(b, &in, 0, pool, 200);
        assert_true(np >= 50 && np <= rec_ctx_pool_cap(b));
        rec_rank_pool(b, &in, pool, np, y, &ny);
        assert_int_equal(nx, ny);
        for (size_t j = 0; j < nx; j++) {
            assert_int_equal(x[j].item, y[j].item);
            assert_int_equal(x[j].source, y[j].source);
            assert_int_equal(x[j].sources, y[j].sources);
            assert_float_equal(x[j].propensity, y[j].propensity, 0);
        }
    }
    rec_ctx_close(a);
    rec_ctx_close(b);
    sess_model_close(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parity_with_torch),
        cmocka_unit_test(test_halves_equal_rec_rank),
        cmocka_unit_test(test_wrong_inputs_refused),
        cmocka_unit_test(test_order_follows_ranker),
        cmocka_unit_test(test_arm_models),
        cmocka_unit_test(test_arm_without_ranker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
