/* SIMD scoring kernels of common/models/gbdt_simd.c against its scalar walk.
 *
 * Every kernel level this machine runs (gbdt_set_isa) must give the scalar
 * walk's probabilities bit for bit: on the xgboost fixture models, on random
 * forests written here (shallow, deep, unbalanced, leaf-only trees, few and
 * many distinct thresholds, wide rows), on rows full of NaN, infinities,
 * signed zeros and values equal to a threshold or one float away from it,
 * and on batch sizes around the kernels' block sizes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gbdt.h"

#define FIX "tests/fixtures/"
#define NF_FIX 6
#define ROWS 1000

static const enum gbdt_isa levels[] = {GBDT_ISA_SCALAR, GBDT_ISA_AVX2, GBDT_ISA_AVX512};

/* ---- deterministic random numbers (xorshift64*) ---- */

static uint64_t rng_state = 88172645463325252ull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}

static float rnd_unit(void) /* [0, 1) */
{
    return (float)(rnd() >> 8) / (float)(1u << 24);
}

/* ---- a growable text buffer for model JSON ---- */

struct text {
    char *s;
    size_t len, cap;
};

static void put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct text *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(t->s + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        assert_true(n >= 0);
        if (t->len + (size_t)n < t->cap)
            break;
        t->cap = (t->cap + (size_t)n) * 2 + 4096;
        t->s = realloc(t->s, t->cap);
        assert_non_null(t->s);
    }
    t->len += (size_t)n;
}

/* ---- random forests in xgboost's JSON layout ---- */

struct spec {
    int trees, depth, nf;
    int cuts;     /* distinct thresholds per feature to draw from */
    int leaf_pct; /* chance that a node above the last level is a leaf */
    int unique;   /* every threshold distinct (feature 0 only) */
    float *pool;  /* nf x cuts thresholds, made by make_model */
};

/* One tree's arrays, nodes numbered in depth-first order as they are made. */
struct tree {
    int n, cap;
    int *left, *right, *feat, *dflt;
    float *cond;
};

static int unique_next; /* running threshold for spec.unique */

static int grow(struct tree *t, const struct spec *sp, int level)
{
    int id = t->n++;
    int leaf = level == sp->depth || (level > 0 && (int)(rnd() % 100) < sp->leaf_pct);

    assert_true(id < t->cap);
    t->left[id] = t->right[id] = -1;
    t->feat[id] = 0;
    t->dflt[id] = 0;
    t->cond[id] = (rnd() % 16 == 0) ? -0.0f : (rnd_unit() - 0.5f) * 0.2f; /* leaf value */
    if (leaf)
        return id;
    t->feat[id] = sp->unique ? 0 : (int)(rnd() % (uint32_t)sp->nf);
    t->cond[id] = sp->unique ? (float)unique_next++ * 0.25f
                             : sp->pool[t->feat[id] * sp->cuts + (int)(rnd() % (uint32_t)sp->cuts)];
    t->dflt[id] = (int)(rnd() % 2);
    t->left[id] = grow(t, sp, level + 1);
    t->right[id] = grow(t, sp, level + 1);
    return id;
}

static void put_ints(struct text *j, const char *key, const int *v, int n)
{
    put(j, "\"%s\":[", key);
    for (int i = 0; i < n; i++)
        put(j, "%s%d", i ? "," : "", v[i]);
    put(j, "],");
}

static void put_tree(struct text *j, const struct tree *t)
{
    put(j, "{");
    put_ints(j, "left_children", t->left, t->n);
    put_ints(j, "right_children", t->right, t->n);
    put_ints(j, "split_indices", t->feat, t->n);
    put_ints(j, "default_left", t->dflt, t->n);
    put(j, "\"split_conditions\":[");
    for (int i = 0; i < t->n; i++)
        put(j, "%s%.9g", i ? "," : "", (double)t->cond[i]);
    put(j, "]}");
}

/* Thresholds: feature f's pool of `cuts` values, 0 and -0 both in it. */
static void make_pool(struct spec *sp)
{
    sp->pool = malloc(sizeof(float) * (size_t)(sp->nf * sp->cuts));
    assert_non_null(sp->pool);
    for (int i = 0; i < sp->nf * sp->cuts; i++)
        sp->pool[i] = (rnd_unit() - 0.5f) * 8.0f;
    sp->pool[0] = 0.0f;
    if (sp->cuts > 1)
        sp->pool[1] = -0.0f;
}

static struct gbdt *make_model(struct spec *sp)
{
    struct text j = {0};
    struct tree t = {.cap = (2 << sp->depth) + 1};
    struct err e = {0};
    struct gbdt *g;

    make_pool(sp);
    unique_next = 0;
    t.left = malloc(sizeof(int) * (size_t)t.cap);
    t.right = malloc(sizeof(int) * (size_t)t.cap);
    t.feat = malloc(sizeof(int) * (size_t)t.cap);
    t.dflt = malloc(sizeof(int) * (size_t)t.cap);
    t.cond = malloc(sizeof(float) * (size_t)t.cap);
    assert_true(t.left && t.right && t.feat && t.dflt && t.cond);
    put(&j,
        "{\"learner\":{\"objective\":{\"name\":\"binary:logistic\"},"
        "\"learner_model_param\":{\"base_score\":\"3.7E-1\",\"num_feature\":\"%d\"},"
        "\"gradient_booster\":{\"name\":\"gbtree\",\"model\":{\"trees\":[",
        sp->nf);
    for (int k = 0; k < sp->trees; k++) {
        t.n = 0;
        grow(&t, sp, 0);
        if (k)
            put(&j, ",");
        put_tree(&j, &t);
    }
    put(&j, "]}}}}");
    g = gbdt_open_string(j.s, &e);
    if (!g)
        fail_msg("%s", e.msg);
    free(j.s);
    free(t.left);
    free(t.right);
    free(t.feat);
    free(t.dflt);
    free(t.cond);
    return g;
}

/* Rows that probe the splits: NaN, exact thresholds and their neighbours,
 * infinities, signed zeros, huge values, plain values. */
static float *make_rows(const struct spec *sp, int n)
{
    float *x = malloc(sizeof(float) * (size_t)(n * sp->nf));

    assert_non_null(x);
    for (int i = 0; i < n * sp->nf; i++) {
        int f = i % sp->nf, k = (int)(rnd() % 100);
        float cut = sp->unique ? (float)(rnd() % 70000) * 0.25f
                               : sp->pool[f * sp->cuts + (int)(rnd() % (uint32_t)sp->cuts)];
        x[i] = k < 20   ? NAN
               : k < 45 ? cut
               : k < 55 ? nextafterf(cut, k % 2 ? INFINITY : -INFINITY)
               : k < 58 ? (k % 2 ? INFINITY : -INFINITY)
               : k < 61 ? (k % 2 ? 0.0f : -0.0f)
               : k < 63 ? (k % 2 ? 3e38f : -3e38f)
                        : (rnd_unit() - 0.5f) * 10.0f;
    }
    return x;
}

/* ---- comparisons ---- */

static int level_ok(struct gbdt *g, enum gbdt_isa isa)
{
    struct err e = {0};

    return gbdt_set_isa(g, isa, &e) == ERR_OK;
}

/* Probabilities of n rows, batched and one by one, at every level this
 * machine and model allow: bit for bit those of the scalar walk. */
static int check_levels(struct gbdt *g, const float *x, size_t n)
{
    size_t nf = gbdt_num_features(g);
    double *want = malloc(n * sizeof(double)), *got = malloc(n * sizeof(double));
    int tested = 0;

    assert_true(want && got);
    assert_true(level_ok(g, GBDT_ISA_SCALAR));
    gbdt_predict_batch(g, x, n, want);
    for (size_t r = 0; r < n; r++) {
        double one = gbdt_predict(g, x + r * nf);
        assert_memory_equal(&one, &want[r], sizeof(double));
    }
    for (size_t l = 1; l < sizeof(levels) / sizeof(levels[0]); l++) {
        if (!level_ok(g, levels[l]))
            continue;
        memset(got, 0xff, n * sizeof(double));
        gbdt_predict_batch(g, x, n, got);
        for (size_t r = 0; r < n; r++)
            if (memcmp(&got[r], &want[r], sizeof(double)) != 0)
                fail_msg("%s: row %zu of %zu: %.17g, scalar %.17g", gbdt_isa_name(levels[l]), r, n,
                         got[r], want[r]);
        for (size_t r = 0; r < n; r++) {
            double one = gbdt_predict(g, x + r * nf);
            if (memcmp(&one, &want[r], sizeof(double)) != 0)
                fail_msg("%s, one row: row %zu: %.17g, scalar %.17g", gbdt_isa_name(levels[l]), r,
                         one, want[r]);
        }
        tested |= 1 << l;
    }
    gbdt_set_isa(g, gbdt_isa_best(g), &(struct err){0});
    free(want);
    free(got);
    return tested;
}

static void check_spec(struct spec sp, int rows)
{
    struct gbdt *g = make_model(&sp);
    float *x = make_rows(&sp, rows);
    int tested = check_levels(g, x, (size_t)rows);

    printf("# %d trees depth <= %d, %d features, %s cuts: best %s, levels tested beyond "
           "scalar: %s%s\n",
           sp.trees, sp.depth, sp.nf, sp.unique ? "all distinct" : "pooled",
           gbdt_isa_name(gbdt_isa_best(g)), tested & 2 ? "avx2 " : "", tested & 4 ? "avx512" : "");
    free(x);
    free(sp.pool);
    gbdt_close(g);
}

static struct gbdt *must_open(const char *path)
{
    struct err e = {0};
    struct gbdt *g = gbdt_open(path, &e);

    if (!g)
        fail_msg("%s", e.msg);
    return g;
}

static enum gbdt_isa cpu_level(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return GBDT_ISA_AVX512;
    return __builtin_cpu_supports("avx2") ? GBDT_ISA_AVX2 : GBDT_ISA_SCALAR;
}

/* ---- tests ---- */

/* Each level up to what the CPU has can be forced and is then in use;
 * levels above it are refused with the reason. */
static void test_every_level_the_cpu_has_can_be_forced(void **st)
{
    struct gbdt *g = must_open(FIX "xgb_base03.json");
    enum gbdt_isa cpu = cpu_level();

    (void)st;
    printf("# CPU level %s, model best %s\n", gbdt_isa_name(cpu), gbdt_isa_name(gbdt_isa_best(g)));
    assert_int_equal(gbdt_isa_best(g), cpu);
    assert_int_equal(gbdt_isa(g), cpu);
    for (size_t l = 0; l < sizeof(levels) / sizeof(levels[0]); l++) {
        struct err e = {0};
        int rc = gbdt_set_isa(g, levels[l], &e);
        if (levels[l] <= cpu) {
            assert_int_equal(rc, ERR_OK);
            assert_int_equal(gbdt_isa(g), levels[l]);
        } else {
            assert_int_equal(rc, ERR_CONFIG);
            assert_non_null(strstr(e.msg, gbdt_isa_name(levels[l])));
            assert_non_null(strstr(e.msg, "CPU lacks it"));
        }
    }
    gbdt_close(g);
}

static void test_unknown_level_refused(void **st)
{
    struct gbdt *g = must_open(FIX "xgb_named.json");
    struct err e = {0};

    (void)st;
    assert_int_equal(gbdt_set_isa(g, (enum gbdt_isa)7, &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "level 7 does not exist"));
    assert_string_equal(gbdt_isa_name((enum gbdt_isa)7), "?");
    assert_string_equal(gbdt_isa_name(GBDT_ISA_AVX512), "avx512");
    gbdt_close(g);
}

/* One line of a fixture: NF_FIX inputs (empty = NaN), prob, margin. */
static int read_case(FILE *f, float *x, double *prob)
{
    char line[1024], *p = line, *end;

    if (!fgets(line, sizeof(line), f))
        return 0;
    for (int i = 0; i < NF_FIX; i++) {
        x[i] = *p == ',' ? NAN : (float)strtod(p, &end);
        p += strcspn(p, ",");
        p++;
    }
    *prob = strtod(p, &end);
    return 1;
}

/* The xgboost fixtures, batched at every level: within the existing 1e-6 of
 * xgboost's predict_proba, and equal to the scalar walk. */
static void test_fixtures_match_xgboost_at_every_level(void **st)
{
    static const char *const names[] = {"named", "unnamed", "base03", "pruned"};

    (void)st;
    for (size_t m = 0; m < sizeof(names) / sizeof(names[0]); m++) {
        char path[256];
        float x[200 * NF_FIX];
        double want[200], got[200];
        size_t n = 0;
        FILE *f;
        struct gbdt *g;

        snprintf(path, sizeof(path), FIX "xgb_%s_cases.csv", names[m]);
        f = fopen(path, "r");
        assert_non_null(f);
        assert_non_null(fgets(path, sizeof(path), f)); /* header */
        while (n < 200 && read_case(f, x + n * NF_FIX, &want[n]))
            n++;
        fclose(f);
        snprintf(path, sizeof(path), FIX "xgb_%s.json", names[m]);
        g = must_open(path);
        for (size_t l = 0; l < sizeof(levels) / sizeof(levels[0]); l++) {
            double worst = 0;
            if (!level_ok(g, levels[l]))
                continue;
            gbdt_predict_batch(g, x, n, got);
            for (size_t r = 0; r < n; r++)
                worst = fmax(worst, fabs(got[r] - want[r]));
            printf("# %s, %s: max |prob - xgboost| = %.3g over %zu rows\n", names[m],
                   gbdt_isa_name(levels[l]), worst, n);
            assert_true(worst <= 1e-6);
        }
        check_levels(g, x, n);
        gbdt_close(g);
    }
}

/* The fixtures on 1,000 random rows with NaNs (their thresholds are near 0
 * and 0.5: the rows are drawn around them). */
static void test_fixtures_simd_equals_scalar_on_random_rows(void **st)
{
    static const char *const names[] = {"named", "unnamed", "base03", "pruned"};
    float *x = malloc(sizeof(float) * ROWS * NF_FIX);

    (void)st;
    assert_non_null(x);
    for (int i = 0; i < ROWS * NF_FIX; i++) {
        int k = (int)(rnd() % 10);
        x[i] = k < 2 ? NAN : k < 3 ? 0.5f : (rnd_unit() - 0.5f) * 6.0f;
    }
    for (size_t m = 0; m < sizeof(names) / sizeof(names[0]); m++) {
        char path[256];
        struct gbdt *g;
        snprintf(path, sizeof(path), FIX "xgb_%s.json", names[m]);
        g = must_open(path);
        check_levels(g, x, ROWS);
        gbdt_close(g);
    }
    free(x);
}

/* The benchmark's shape: 500 trees of depth 6 over 37 features. */
static void test_500_trees_depth_6_simd_equals_scalar(void **st)
{
    (void)st;
    check_spec((struct spec){.trees = 500, .depth = 6, .nf = 37, .cuts = 60, .leaf_pct = 15}, ROWS);
}

/* Unbalanced trees: leaves at every level, pushed down in the heap layout. */
static void test_unbalanced_and_leaf_only_trees(void **st)
{
    (void)st;
    check_spec((struct spec){.trees = 120, .depth = 5, .nf = 5, .cuts = 7, .leaf_pct = 45}, ROWS);
    check_spec((struct spec){.trees = 40, .depth = 0, .nf = 3, .cuts = 2}, 100);
    check_spec((struct spec){.trees = 7, .depth = 1, .nf = 1, .cuts = 1}, 100);
}

/* Depth 8 (256 leaves: the leaf tables leave registers) and a depth beyond
 * GBDT_HEAP_MAX_DEPTH (no heap: AVX2 is refused, AVX-512 uses the
 * quantised forest). */
static void test_deep_trees(void **st)
{
    struct spec deep = {
        .trees = 6, .depth = GBDT_HEAP_MAX_DEPTH + 2, .nf = 9, .cuts = 50, .leaf_pct = 10};
    struct gbdt *g;
    struct err e = {0};

    (void)st;
    check_spec((struct spec){.trees = 30, .depth = 8, .nf = 12, .cuts = 300, .leaf_pct = 5}, ROWS);
    check_spec(deep, ROWS);
    g = make_model(&deep);
    free(deep.pool);
    if (cpu_level() >= GBDT_ISA_AVX2) {
        assert_int_equal(gbdt_set_isa(g, GBDT_ISA_AVX2, &e), ERR_CONFIG);
        assert_non_null(strstr(e.msg, "deeper than GBDT_HEAP_MAX_DEPTH"));
    }
    gbdt_close(g);
}

/* More features than the quantised kernel takes, and more distinct
 * thresholds on one feature than 16-bit bins hold: the heap kernels. */
static void test_wide_rows_and_many_thresholds(void **st)
{
    (void)st;
    check_spec((struct spec){.trees = 60, .depth = 6, .nf = 130, .cuts = 20, .leaf_pct = 10}, 300);
    check_spec((struct spec){.trees = 1100, .depth = 6, .nf = 2, .unique = 1, .cuts = 1}, 300);
}

/* Batch sizes around the kernels' vectors (8, 16) and blocks (64, 128),
 * rows taken at an odd offset of the matrix. */
static void test_odd_batch_sizes(void **st)
{
    static const size_t sizes[] = {1, 7, 8, 15, 16, 17, 63, 64, 65, 129, 1000};
    struct spec sp = {.trees = 50, .depth = 6, .nf = 11, .cuts = 30, .leaf_pct = 20};
    struct gbdt *g = make_model(&sp);
    float *x = make_rows(&sp, 1003);

    (void)st;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        check_levels(g, x + 3 * 11, sizes[i]);
    free(x);
    free(sp.pool);
    gbdt_close(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_level_the_cpu_has_can_be_forced),
        cmocka_unit_test(test_unknown_level_refused),
        cmocka_unit_test(test_fixtures_match_xgboost_at_every_level),
        cmocka_unit_test(test_fixtures_simd_equals_scalar_on_random_rows),
        cmocka_unit_test(test_500_trees_depth_6_simd_equals_scalar),
        cmocka_unit_test(test_unbalanced_and_leaf_only_trees),
        cmocka_unit_test(test_deep_trees),
        cmocka_unit_test(test_wide_rows_and_many_thresholds),
        cmocka_unit_test(test_odd_batch_sizes),
    };
    return cmocka_run_group_tests_name("gbdt_simd", tests, NULL, NULL);
}
