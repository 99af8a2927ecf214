/* common/abtest.c and `streamml abtest`: assignment against Python's
 * hashlib (the README one-liner), shares over 100,000 ids, bad experiment
 * configurations, the t distribution and Welch's test against scipy, the
 * command's report against scipy/sklearn values, and the serving set's
 * smoke check (tests/fixtures/make_abtest_fixtures.py made the fixtures).
 */
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

#include "abtest.h"
#include "cfg.h"
#include "codec.h"
#include "features.h"
#include "stack.h"
#include "txn.h"

#define FIX "tests/fixtures/abtest/"

static json_t *load(const char *name)
{
    json_error_t je;
    json_t *j = json_load_file(name, 0, &je);

    if (!j)
        fprintf(stderr, "%s: %s\n", name, je.text);
    assert_non_null(j);
    return j;
}

static double num(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);

    assert_true(json_is_number(v));
    return json_number_value(v);
}

static void assert_close(double got, double want, double tol, const char *what)
{
    double d = fabs(got - want);

    if (!(d <= tol * (1 + fabs(want)))) {
        fprintf(stderr, "%s: got %.17g, want %.17g (diff %.3g)\n", what, got, want, d);
        fail();
    }
}

/* ---- assignment ---- */

static void test_hash_matches_python_hashlib(void **st)
{
    json_t *j = load(FIX "assign.json"), *rows = json_object_get(j, "rows"), *r;
    size_t i;
    struct err e = {0};
    struct ab *a1 =
        ab_open_spec("x", "exp-2026-11", "split", "a:m.json:0.5,b:m.json:0.3,c:m.json:0.2", &e);
    struct ab *a2 = ab_open_spec("x", "s", "split", "a:m.json:0.5,b:m.json:0.3,c:m.json:0.2", &e);

    (void)st;
    assert_non_null(a1);
    assert_non_null(a2);
    assert_true(json_array_size(rows) > 400);
    json_array_foreach(rows, i, r)
    {
        const char *salt = json_string_value(json_object_get(r, "salt"));
        const char *id = json_string_value(json_object_get(r, "id"));
        char hex[17];
        snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)ab_hash(salt, id));
        assert_string_equal(hex, json_string_value(json_object_get(r, "hash")));
        /* exact: (h >> 11) / 2**53 is the same double in both languages */
        assert_true(ab_unit(salt, id) == num(r, "u"));
        assert_int_equal(ab_assign(strcmp(salt, "s") ? a1 : a2, id), (size_t)num(r, "variant"));
    }
    ab_close(a1);
    ab_close(a2);
    json_decref(j);
}

static void check_shares(const char *spec, const double *want, size_t n)
{
    struct err e = {0};
    struct ab *a = ab_open_spec("shares", "", "split", spec, &e);
    size_t count[AB_MAX_VARIANTS] = {0};
    char id[32];

    assert_non_null(a);
    assert_int_equal(ab_num_variants(a), n);
    for (int i = 0; i < 100000; i++) {
        snprintf(id, sizeof(id), "user-%d", i);
        count[ab_assign(a, id)]++;
    }
    for (size_t v = 0; v < n; v++) {
        double got = (double)count[v] / 100000;
        if (fabs(got - want[v]) > 0.01) {
            fprintf(stderr, "%s: variant %zu has %.4f of the ids, wanted %.4f +- 0.01\n", spec, v,
                    got, want[v]);
            fail();
        }
    }
    ab_close(a);
}

static void test_shares_within_one_percent_over_100000_ids(void **st)
{
    static const double s1[] = {0.5, 0.3, 0.2}, s2[] = {0.9, 0.1}, s3[] = {0.25, 0.25, 0.25, 0.25};
    static const double s4[] = {0.01, 0.99};

    (void)st;
    check_shares("a:m:0.5,b:m:0.3,c:m:0.2", s1, 3);
    check_shares("champion:m:0.9,challenger:m:0.1", s2, 2);
    check_shares("a:m:0.25,b:m:0.25,c:m:0.25,d:m:0.25", s3, 4);
    check_shares("a:m:0.01,b:m:0.99", s4, 2);
}

/* The same ids get the same variants in another process (a fresh address
 * space: nothing process-seeded can leak into the hash). */
static void test_assignment_is_sticky_across_processes(void **st)
{
    struct err e = {0};
    struct ab *a = ab_open_spec("sticky", "salt-1", "split", "a:m:0.34,b:m:0.33,c:m:0.33", &e);
    unsigned char mine[2000], theirs[2000];
    int fd[2], status;
    pid_t pid;
    char id[32];

    (void)st;
    assert_non_null(a);
    assert_int_equal(pipe(fd), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* A new image of this test binary (see main): not a forked copy. */
        dup2(fd[1], 1);
        execl("/proc/self/exe", "test_abtest", "--assign-child", (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    size_t got = 0;
    ssize_t r;
    while (got < sizeof(theirs) && (r = read(fd[0], theirs + got, sizeof(theirs) - got)) > 0)
        got += (size_t)r;
    close(fd[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(got, sizeof(theirs));
    for (int i = 0; i < 2000; i++) {
        snprintf(id, sizeof(id), "customer-%d", i * 7919);
        mine[i] = (unsigned char)ab_assign(a, id);
    }
    assert_memory_equal(mine, theirs, sizeof(mine));
    ab_close(a);
}

static int assign_child(void)
{
    struct err e = {0};
    struct ab *a = ab_open_spec("sticky", "salt-1", "split", "a:m:0.34,b:m:0.33,c:m:0.33", &e);
    char id[32];

    if (!a)
        return 1;
    for (int i = 0; i < 2000; i++) {
        unsigned char v;
        snprintf(id, sizeof(id), "customer-%d", i * 7919);
        v = (unsigned char)ab_assign(a, id);
        if (fwrite(&v, 1, 1, stdout) != 1)
            return 1;
    }
    ab_close(a);
    return 0;
}

static void test_salt_changes_assignment_and_shadow_serves_champion(void **st)
{
    struct err e = {0};
    struct ab *a = ab_open_spec("e", "one", "split", "a:m:0.5,b:m:0.5", &e);
    struct ab *b = ab_open_spec("e", "two", "split", "a:m:0.5,b:m:0.5", &e);
    struct ab *s = ab_open_spec("e", "one", "shadow", "a:m:0.5,b:m:0.5", &e);
    struct ab *d = ab_open_spec("exp-9", "", "split", "a:m:0.5,b:m:0.5", &e);
    int differ = 0;
    char id[32];

    (void)st;
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(s);
    assert_non_null(d);
    assert_string_equal(ab_salt(d), "exp-9"); /* default salt: the id */
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof(id), "u%d", i);
        differ += ab_assign(a, id) != ab_assign(b, id);
        assert_int_equal(ab_assign(s, id), 0);
        assert_int_equal(ab_assign_split(s, id), ab_assign(a, id));
    }
    assert_true(differ > 400 && differ < 600); /* independent halves */
    ab_close(a);
    ab_close(b);
    ab_close(s);
    ab_close(d);
}

static void test_bad_experiments_are_refused_naming_the_culprit(void **st)
{
    static const struct {
        const char *id, *mode, *variants, *msg;
    } bad[] = {
        {"", "split", "a:m:1", "experiment.id"},
        {"e", "ab", "a:m:1", "experiment.mode: \"ab\""},
        {"e", "split", "", "experiment.variants: empty"},
        {"e", "split", "a:m:0.5,b:m:0.4", "sum to 0.9"},
        {"e", "split", "a:m:0.5,a:n:0.5", "variant a named twice"},
        {"e", "split", "a:m:1.5", "share \"1.5\""},
        {"e", "split", "a:m:-0.1,b:m:1.1", "share \"-0.1\""},
        {"e", "split", "a:m:x", "share \"x\""},
        {"e", "split", "a:m:nan", "share \"nan\""},
        {"e", "split", "a:m", "not name:model_file:share"},
        {"e", "split", "a b:m:1", "variant name \"a b\""},
        {"e", "split", ":m:1", "variant name \"\""},
        {"e", "split", "a:m:0.1,b:m:0.1,c:m:0.1,d:m:0.1,e:m:0.1,f:m:0.1,g:m:0.1,h:m:0.2,i:m:0.1",
         "more than 8"},
    };
    struct err e;

    (void)st;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err_clear(&e);
        assert_null(ab_open_spec(bad[i].id, "", bad[i].mode, bad[i].variants, &e));
        assert_int_equal(e.code, ERR_CONFIG);
        if (!strstr(e.msg, bad[i].msg)) {
            fprintf(stderr, "case %zu: \"%s\" lacks \"%s\"\n", i, e.msg, bad[i].msg);
            fail();
        }
    }
}

static void test_model_path_may_hold_colons(void **st)
{
    struct err e = {0};
    struct ab *a = ab_open_spec("e", "", "split", "a:/m/x:y.json:0.25, b:c.json:0.75", &e);

    (void)st;
    assert_non_null(a);
    assert_string_equal(ab_variant_model(a, 0), "/m/x:y.json");
    assert_string_equal(ab_variant_name(a, 1), "b");
    assert_true(ab_variant_share(a, 1) == 0.75);
    ab_close(a);
}

static void test_variant_baselines_from_config(void **st)
{
    struct cfg *c = cfg_new();
    struct err e = {0};
    struct ab *a;

    (void)st;
    assert_non_null(c);
    assert_null(ab_open_cfg(c, &e)); /* no experiment.id: none, and no error */
    assert_int_equal(e.code, 0);
    assert_int_equal(cfg_set(c, "experiment.id", "b", "test", &e), 0);
    assert_int_equal(cfg_set(c, "experiment.variants", "ch:m:0.5,cl:m:0.5", "test", &e), 0);
    assert_int_equal(cfg_set(c, "experiment.baselines", "cl:/b/cl.json", "test", &e), 0);
    a = ab_open_cfg(c, &e);
    assert_non_null(a);
    assert_string_equal(ab_variant_baseline(a, 0), "");
    assert_string_equal(ab_variant_baseline(a, 1), "/b/cl.json");
    assert_int_equal(ab_set_baselines(a, "nope:/x.json", &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "\"nope\" is no variant"));
    assert_int_equal(ab_set_baselines(a, "cl", &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "not name:baseline_file"));
    ab_close(a);
    assert_int_equal(cfg_set(c, "experiment.baselines", "x:/b.json", "test", &e), 0);
    assert_null(ab_open_cfg(c, &e));
    assert_int_equal(e.code, ERR_CONFIG);
    cfg_free(c);
}

/* ---- statistics ---- */

static void test_betainc_and_t_distribution_match_scipy(void **st)
{
    json_t *j = load(FIX "tdist.json"), *r;
    size_t i;

    (void)st;
    json_array_foreach(json_object_get(j, "betainc"), i, r) assert_close(
        ab_betainc(num(r, "a"), num(r, "b"), num(r, "x")), num(r, "v"), 1e-9, "betainc");
    json_array_foreach(json_object_get(j, "cdf"), i, r)
    {
        double v = ab_t_cdf(num(r, "t"), num(r, "df"));
        if (!(fabs(v - num(r, "v")) <= 1e-9)) {
            fprintf(stderr, "t.cdf(%g, %g) = %.17g, scipy %.17g\n", num(r, "t"), num(r, "df"), v,
                    num(r, "v"));
            fail();
        }
    }
    /* scipy's stdtrit is itself only good to about 1e-9 relative far in
     * the tails (t.ppf(0.9995, 1): scipy 636.61924943, exact (mpmath, or
     * tan(pi * (q - 1/2))) 636.61924876879, ours 636.61924876879). */
    json_array_foreach(json_object_get(j, "ppf"), i, r)
        assert_close(ab_t_ppf(num(r, "q"), num(r, "df")), num(r, "v"), 1e-8, "t.ppf");
    assert_close(ab_t_ppf(0.9995, 1), tan(M_PI * 0.4995), 1e-13, "t.ppf(0.9995, 1) = Cauchy");
    assert_true(isnan(ab_betainc(-1, 1, 0.5)));
    assert_true(isnan(ab_t_cdf(1, 0)));
    assert_true(isnan(ab_t_ppf(1, 3)));
    json_decref(j);
}

static double *array(json_t *a, size_t *n)
{
    double *x = malloc(json_array_size(a) * sizeof(*x));
    json_t *v;
    size_t i;

    assert_non_null(x);
    json_array_foreach(a, i, v) x[i] = json_number_value(v);
    *n = json_array_size(a);
    return x;
}

static void test_welch_matches_scipy_ttest_ind(void **st)
{
    json_t *j = load(FIX "welch.json"), *c;
    size_t i;

    (void)st;
    json_array_foreach(json_object_get(j, "cases"), i, c)
    {
        size_t na, nb;
        double *a = array(json_object_get(c, "a"), &na), *b = array(json_object_get(c, "b"), &nb);
        struct ab_welch w;
        struct err e = {0};
        assert_int_equal(ab_welch_test(a, na, b, nb, num(c, "conf"), &w, &e), 0);
        assert_close(w.t, num(c, "t"), 1e-9, "t");
        assert_close(w.df, num(c, "df"), 1e-9, "df");
        assert_close(w.p, num(c, "p"), 1e-9, "p");
        assert_close(w.diff, num(c, "diff"), 1e-9, "diff");
        assert_close(w.lo, num(c, "lo"), 1e-9, "lo");
        assert_close(w.hi, num(c, "hi"), 1e-9, "hi");
        free(a);
        free(b);
    }
    json_decref(j);
}

static void test_welch_refuses_degenerate_groups(void **st)
{
    double one[] = {1}, same[] = {2, 2, 2}, other[] = {3, 3};
    struct ab_welch w;
    struct err e = {0};

    (void)st;
    assert_int_equal(ab_welch_test(one, 1, same, 3, 0.95, &w, &e), ERR_INVALID);
    assert_int_equal(ab_welch_test(same, 3, other, 2, 0.95, &w, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "no variance"));
    assert_int_equal(ab_welch_test(same, 3, other, 2, 1.0, &w, &e), ERR_INVALID);
}

/* ---- the command ---- */

static json_t *run_abtest(const char *extra, int *rc)
{
    char cmd[600];
    FILE *f;
    json_error_t je;
    json_t *j;
    int status;

    snprintf(cmd, sizeof(cmd),
             "%s abtest -p " FIX "predictions.jsonl -l " FIX "outcomes.csv --json %s "
             "--log-level error 2>/dev/null",
             test_bin("streamml"), extra);
    f = popen(cmd, "r");
    assert_non_null(f);
    j = json_loadf(f, 0, &je);
    status = pclose(f);
    *rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return j;
}

static void test_command_report_matches_scipy_and_sklearn(void **st)
{
    json_t *want = load(FIX "report.json"), *got, *w, *g;
    const char *keys[] = {"mean", "auc", "lift", "diff", "t", "df", "p", "lo", "hi"};
    size_t i;
    int rc;

    (void)st;
    got = run_abtest("", &rc);
    assert_int_equal(rc, 0);
    assert_non_null(got);
    assert_string_equal(json_string_value(json_object_get(got, "experiment")), "exp-1");
    assert_string_equal(json_string_value(json_object_get(got, "control")), "champion");
    assert_int_equal(num(got, "duplicates"), 1);
    assert_int_equal(num(got, "other_experiments"), 1);
    assert_int_equal(json_array_size(json_object_get(got, "variants")), 3);
    json_array_foreach(json_object_get(want, "variants"), i, w)
    {
        g = json_array_get(json_object_get(got, "variants"), i);
        assert_string_equal(json_string_value(json_object_get(g, "variant")),
                            json_string_value(json_object_get(w, "variant")));
        assert_string_equal(json_string_value(json_object_get(g, "status")),
                            json_string_value(json_object_get(w, "status")));
        assert_int_equal(num(g, "predictions"), num(w, "predictions"));
        assert_int_equal(num(g, "outcomes"), num(w, "outcomes"));
        for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
            assert_int_equal(json_object_get(g, keys[k]) != NULL,
                             json_object_get(w, keys[k]) != NULL);
            if (json_object_get(w, keys[k]))
                assert_close(num(g, keys[k]), num(w, keys[k]), 1e-9, keys[k]);
        }
    }
    json_decref(got);
    json_decref(want);
}

static void test_command_refuses_bad_input(void **st)
{
    char cmd[600];
    int rc;
    json_t *j;

    (void)st;
    j = run_abtest("--control nobody", &rc);
    assert_int_equal(rc, 2);
    json_decref(j);
    j = run_abtest("--experiment exp-404", &rc);
    assert_int_equal(rc, 1);
    json_decref(j);
    snprintf(
        cmd, sizeof(cmd),
        "printf 'event_id,outcome\\ne1,abc\\n' > /tmp/abtest-bad-$$.csv && "
        "%s abtest -p " FIX "predictions.jsonl -l /tmp/abtest-bad-$$.csv 2>&1 | "
        "grep -q 'line 2: outcome \"abc\" is not a number'; r=$?; rm -f /tmp/abtest-bad-$$.csv;"
        " exit $r",
        test_bin("streamml"));
    assert_int_equal(system(cmd), 0);
}

/* ---- serving ---- */

static struct cfg *serving_cfg(const char *variants, const char *gbdt)
{
    struct cfg *c = cfg_new();
    struct err e = {0};

    assert_non_null(c);
    if (variants) {
        assert_int_equal(cfg_set(c, "experiment.id", "exp-s", "test", &e), 0);
        assert_int_equal(cfg_set(c, "experiment.variants", variants, "test", &e), 0);
    }
    if (gbdt)
        assert_int_equal(cfg_set(c, "model.gbdt", gbdt, "test", &e), 0);
    return c;
}

static void test_serving_scores_with_the_assigned_variant(void **st)
{
    struct cfg *c = serving_cfg("champion:models/credit_gbdt.json:0.5,"
                                "challenger:models/credit_gbdt.json:0.5",
                                NULL);
    struct err e = {0};
    struct ab_serving *s = ab_serving_open(c, &e);
    float x[FEAT_TXN_DIM];
    struct txn_prediction p;
    size_t v, seen[2] = {0, 0};
    char id[32];

    (void)st;
    if (!s)
        fprintf(stderr, "%s\n", e.msg);
    assert_non_null(s);
    for (int j = 0; j < FEAT_TXN_DIM; j++)
        x[j] = NAN;
    for (int i = 0; i < 200; i++) {
        snprintf(id, sizeof(id), "u%d", i);
        memset(&p, 0, sizeof(p));
        ab_serving_score(s, id, x, &p, &v);
        assert_int_equal(v, ab_assign(ab_serving_experiment(s), id));
        assert_string_equal(p.variant, v ? "challenger" : "champion");
        assert_string_equal(p.experiment_id, "exp-s");
        seen[v]++;
    }
    assert_true(seen[0] > 50 && seen[1] > 50);
    assert_int_equal(ab_serving_shadows(s), 0);
    ab_serving_close(s);
    cfg_free(c);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* A model with base_score "nan", one that does not parse, one with a
 * feature outside txn-v1, a missing file: each refused, the error naming
 * the variant and the culprit. */
static void test_bad_models_are_refused(void **st)
{
    char cmd[400];
    const char *nan_model = "/tmp/abtest-nan-model.json", *garbage = "/tmp/abtest-garbage.json";
    struct err e = {0};
    struct cfg *c;

    (void)st;
    snprintf(cmd, sizeof(cmd),
             "sed 's/\"base_score\":\"[^\"]*\"/\"base_score\":\"nan\"/' models/credit_gbdt.json "
             "> %s",
             nan_model);
    assert_int_equal(system(cmd), 0);
    write_file(garbage, "{\"learner\": tr");

    c = serving_cfg(
        "champion:models/credit_gbdt.json:0.5,challenger:/tmp/abtest-nan-model.json:0.5", NULL);
    assert_null(ab_serving_open(c, &e));
    assert_non_null(strstr(e.msg, "variant challenger"));
    assert_non_null(strstr(e.msg, "base_score"));
    cfg_free(c);

    err_clear(&e);
    c = serving_cfg(NULL, garbage);
    assert_null(ab_serving_open(c, &e));
    assert_non_null(strstr(e.msg, "model.gbdt"));
    cfg_free(c);

    /* A feature the feature set does not have. */
    snprintf(cmd, sizeof(cmd),
             "sed 's/\"debt_to_income\"/\"debt_to_incomeX\"/' models/credit_gbdt.json > %s",
             nan_model);
    assert_int_equal(system(cmd), 0);
    err_clear(&e);
    c = serving_cfg(
        "champion:models/credit_gbdt.json:0.5,challenger:/tmp/abtest-nan-model.json:0.5", NULL);
    assert_null(ab_serving_open(c, &e));
    assert_int_equal(e.code, ERR_CONFIG);
    assert_non_null(strstr(e.msg, "variant challenger"));
    assert_non_null(strstr(e.msg, "debt_to_incomeX"));
    cfg_free(c);

    err_clear(&e);
    c = serving_cfg("champion:models/credit_gbdt.json:0.5,b:/nonexistent/model.json:0.5", NULL);
    assert_null(ab_serving_open(c, &e));
    assert_non_null(strstr(e.msg, "variant b"));
    cfg_free(c);
    unlink(nan_model);
    unlink(garbage);
}

static void test_smoke_passes_the_demo_models(void **st)
{
    struct cfg *c = serving_cfg(NULL, NULL);
    struct err e = {0};
    struct ab_serving *s = ab_serving_open(c, &e);
    const char *paths[4];

    (void)st;
    assert_non_null(s);
    assert_null(ab_serving_experiment(s));
    assert_string_equal(ab_serving_variant(s, 0), "");
    assert_int_equal(ab_serving_files(s, paths, 4), 2);
    assert_string_equal(paths[1], "models/credit_gbdt.json");
    ab_serving_close(s);
    cfg_free(c);
}

/* A prediction encodes with the current schema (both fields written) and
 * with the schema from before them (a registry still holding the old one:
 * the fields are left out, nothing fails). */
static void test_prediction_fields_old_and_new_schema(void **st)
{
    char dir[] = "/tmp/abtest-schemas-XXXXXX", cmd[600];
    struct txn_prediction p;
    struct err e = {0};
    struct buf out, json;
    struct codec *cd;

    (void)st;
    assert_non_null(mkdtemp(dir));
    memset(&p, 0, sizeof(p));
    snprintf(p.event_id, sizeof(p.event_id), "e1");
    snprintf(p.experiment_id, sizeof(p.experiment_id), "exp-7");
    snprintf(p.variant, sizeof(p.variant), "challenger");
    snprintf(p.decision, sizeof(p.decision), "approve");
    buf_init(&out, 0);
    buf_init(&json, 0);
    cd = codec_open("schemas", &e);
    assert_non_null(cd);
    assert_int_equal(codec_encode_prediction(cd, &p, &out, &e), 0);
    assert_int_equal(codec_to_json(cd, out.data, out.len, &json, &e), 0);
    assert_non_null(
        strstr((const char *)json.data, "\"experiment_id\":\"exp-7\",\"variant\":\"challenger\","));
    codec_close(cd);
    snprintf(cmd, sizeof(cmd),
             "cp schemas/* %s/ && grep -v '\"experiment_id\"\\|\"variant\"\\|\"reason_\\|\"scorecard_reasons' "
             "schemas/transaction_prediction.avsc | sed 's/\"src_offset\", \"type\": "
             "\"long\"},/\"src_offset\", \"type\": \"long\"}/' > "
             "%s/transaction_prediction.avsc",
             dir, dir);
    assert_int_equal(system(cmd), 0);
    cd = codec_open(dir, &e);
    if (!cd)
        fprintf(stderr, "%s\n", e.msg);
    assert_non_null(cd);
    buf_reset(&out);
    assert_int_equal(codec_encode_prediction(cd, &p, &out, &e), 0);
    assert_int_equal(codec_to_json(cd, out.data, out.len, &json, &e), 0);
    assert_null(strstr((const char *)json.data, "experiment_id"));
    assert_non_null(strstr((const char *)json.data, "\"src_offset\":0}"));
    codec_close(cd);
    buf_free(&out);
    buf_free(&json);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_matches_python_hashlib),
        cmocka_unit_test(test_shares_within_one_percent_over_100000_ids),
        cmocka_unit_test(test_assignment_is_sticky_across_processes),
        cmocka_unit_test(test_salt_changes_assignment_and_shadow_serves_champion),
        cmocka_unit_test(test_bad_experiments_are_refused_naming_the_culprit),
        cmocka_unit_test(test_model_path_may_hold_colons),
        cmocka_unit_test(test_variant_baselines_from_config),
        cmocka_unit_test(test_betainc_and_t_distribution_match_scipy),
        cmocka_unit_test(test_welch_matches_scipy_ttest_ind),
        cmocka_unit_test(test_welch_refuses_degenerate_groups),
        cmocka_unit_test(test_command_report_matches_scipy_and_sklearn),
        cmocka_unit_test(test_command_refuses_bad_input),
        cmocka_unit_test(test_serving_scores_with_the_assigned_variant),
        cmocka_unit_test(test_bad_models_are_refused),
        cmocka_unit_test(test_smoke_passes_the_demo_models),
        cmocka_unit_test(test_prediction_fields_old_and_new_schema),
    };

    if (argc == 2 && strcmp(argv[1], "--assign-child") == 0)
        return assign_child();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
