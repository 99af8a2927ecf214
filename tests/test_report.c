/* tests/test_report.c: common/offline/backtest.c against scikit-learn / scipy
 * (tests/fixtures/report_cases.json, from make_report_fixtures.py), and
 * `streamml report` end to end: join, HTML, summary, gates. */
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

#include "backtest.h"
#include "features.h"
#include "stack.h"

#include "monitor.h"

#define FIXTURE "tests/fixtures/report_cases.json"
#define TOL 1e-9

struct fx {
    json_t *j;
    double *p;
    int *y, *gt, *gp;
    size_t n, ng;
    char dir[64];
};

static void ints(json_t *a, int **out, size_t *n)
{
    *n = json_array_size(a);
    *out = calloc(*n, sizeof(int));
    for (size_t i = 0; i < *n; i++)
        (*out)[i] = (int)json_integer_value(json_array_get(a, i));
}

static int setup(void **st)
{
    struct fx *f = calloc(1, sizeof(*f));
    json_error_t je;
    json_t *p, *g;
    size_t n2;

    if (!(f->j = json_load_file(FIXTURE, 0, &je))) {
        fprintf(stderr, "%s: %s\n", FIXTURE, je.text);
        return -1;
    }
    p = json_object_get(f->j, "p");
    f->n = json_array_size(p);
    f->p = calloc(f->n, sizeof(double));
    for (size_t i = 0; i < f->n; i++)
        f->p[i] = json_number_value(json_array_get(p, i));
    ints(json_object_get(f->j, "y"), &f->y, &n2);
    g = json_object_get(f->j, "graded");
    ints(json_object_get(g, "true"), &f->gt, &f->ng);
    ints(json_object_get(g, "pred"), &f->gp, &n2);
    snprintf(f->dir, sizeof(f->dir), "/tmp/streamml-report-XXXXXX");
    if (!mkdtemp(f->dir) || n2 != f->ng || f->n < 100)
        return -1;
    *st = f;
    return 0;
}

static int teardown(void **st)
{
    struct fx *f = *st;
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", f->dir);
    json_decref(f->j);
    free(f->p);
    free(f->y);
    free(f->gt);
    free(f->gp);
    free(f);
    return 0;
}

static double num(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    assert_non_null(v);
    return json_number_value(v);
}

static void near(double got, double want)
{
    if (!(fabs(got - want) <= TOL))
        fail_msg("got %.17g, sklearn/scipy %.17g", got, want);
}

static void test_auc_gini_ks_brier_match_sklearn_scipy(void **st)
{
    struct fx *f = *st;
    double auc = bt_auc(f->p, f->y, f->n);

    near(auc, num(f->j, "auc"));
    near(2 * auc - 1, num(f->j, "gini"));
    near(bt_ks(f->p, f->y, f->n), num(f->j, "ks"));
    near(bt_brier(f->p, f->y, f->n), num(f->j, "brier"));
}

static void test_precision_recall_approval_at_thresholds(void **st)
{
    struct fx *f = *st;
    json_t *at = json_object_get(f->j, "at");

    assert_int_equal(json_array_size(at), 2);
    for (size_t i = 0; i < json_array_size(at); i++) {
        json_t *c = json_array_get(at, i);
        struct bt_at o;
        bt_at(f->p, f->y, f->n, num(c, "threshold"), &o);
        near(o.precision, num(c, "precision"));
        near(o.recall, num(c, "recall"));
        near(o.approval, num(c, "approval"));
        assert_int_equal(o.tp + o.fp + o.fn + o.tn, f->n);
    }
}

static void test_roc_curve_matches_sklearn_point_by_point(void **st)
{
    struct fx *f = *st;
    double *fpr = calloc(f->n + 1, sizeof(double)), *tpr = calloc(f->n + 1, sizeof(double));
    json_t *wf = json_object_get(f->j, "roc_fpr"), *wt = json_object_get(f->j, "roc_tpr");
    size_t k;
    struct err e = {0};

    assert_int_equal(bt_roc(f->p, f->y, f->n, fpr, tpr, &k, &e), ERR_OK);
    assert_int_equal(k, (size_t)json_integer_value(json_object_get(f->j, "roc_points")));
    for (size_t i = 0; i < k; i++) {
        near(fpr[i], json_number_value(json_array_get(wf, i)));
        near(tpr[i], json_number_value(json_array_get(wt, i)));
    }
    free(fpr);
    free(tpr);
}

static void test_calibration_matches_sklearn(void **st)
{
    struct fx *f = *st;
    json_t *c = json_object_get(f->j, "calibration");
    json_t *fp = json_object_get(c, "frac_pos"), *mp = json_object_get(c, "mean_pred");
    double frac[10], mean[10];
    size_t cnt[10], k, total = 0;
    struct err e = {0};

    assert_int_equal(bt_calibration(f->p, f->y, f->n, 10, frac, mean, cnt, &k, &e), ERR_OK);
    assert_int_equal(k, json_array_size(fp));
    for (size_t i = 0; i < k; i++) {
        near(frac[i], json_number_value(json_array_get(fp, i)));
        near(mean[i], json_number_value(json_array_get(mp, i)));
        total += cnt[i];
    }
    assert_int_equal(total, f->n);
}

static void test_graded_qwk_confusion_referable_match_sklearn(void **st)
{
    struct fx *f = *st;
    json_t *g = json_object_get(f->j, "graded"), *cm = json_object_get(g, "confusion");
    int labels[BT_MAX_GRADES];
    size_t k, m[BT_MAX_GRADES * BT_MAX_GRADES];
    double sens, spec;
    struct err e = {0};

    near(bt_qwk(f->gt, f->gp, f->ng, &e), num(g, "qwk"));
    assert_int_equal(bt_grades(f->gt, f->gp, f->ng, labels, &k, &e), ERR_OK);
    assert_int_equal(k, json_array_size(json_object_get(g, "labels")));
    assert_int_equal(bt_confusion(f->gt, f->gp, f->ng, labels, k, m, &e), ERR_OK);
    for (size_t i = 0; i < k; i++)
        for (size_t j = 0; j < k; j++)
            assert_int_equal(m[i * k + j],
                             json_integer_value(json_array_get(json_array_get(cm, i), j)));
    bt_referable(f->gt, f->gp, f->ng, (int)num(g, "referable"), &sens, &spec);
    near(sens, num(g, "sensitivity"));
    near(spec, num(g, "specificity"));
}

static void test_undefined_metrics_are_nan_not_garbage(void **st)
{
    static const double p[] = {0.2, 0.4, 0.9};
    static const int y[] = {1, 1, 1};
    static const int same[] = {2, 2, 2};
    double fpr[4], tpr[4];
    size_t k;
    struct bt_at o;
    struct err e = {0};

    (void)st;
    assert_true(isnan(bt_auc(p, y, 3)));
    assert_true(isnan(bt_ks(p, y, 3)));
    assert_int_equal(bt_roc(p, y, 3, fpr, tpr, &k, &e), ERR_INVALID);
    bt_at(p, y, 3, 0.95, &o);
    assert_true(isnan(o.precision));               /* nothing flagged */
    assert_true(isnan(bt_qwk(same, same, 3, &e))); /* one grade: no expected disagreement */
    assert_true(isnan(bt_brier(p, y, 0)));
}

/* ---- the command ---- */

static int run(const char *args, const char *out)
{
    char cmd[2048];
    int rc;

    snprintf(cmd, sizeof(cmd), "%s report %s > '%s' 2>&1", test_bin("streamml"), args, out);
    rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *s;
    long n;

    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    s = calloc((size_t)n + 1, 1);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return s;
}

/* ---- the page's tables, parsed ---- */

#define MAX_ROWS 64
#define MAX_COLS 8

struct table {
    size_t n;                          /* data rows (header rows left out) */
    char cls[MAX_ROWS][32];            /* each row's class attribute */
    char cell[MAX_ROWS][MAX_COLS][96]; /* cell text, tags stripped */
    size_t ncell[MAX_ROWS];
};

/* Text of one cell from p (just past "<td...>") to "</td>", tags stripped. */
static const char *cell_text(const char *p, char *out, size_t cap)
{
    size_t k = 0;
    int in_tag = 0;

    for (; *p && strncmp(p, "</td>", 5) != 0; p++) {
        if (*p == '<')
            in_tag = 1;
        else if (*p == '>')
            in_tag = 0;
        else if (!in_tag && k + 1 < cap)
            out[k++] = *p;
    }
    out[k] = '\0';
    return p;
}

/* The rows of <table id="id"> in html (rows with <td> cells only). */
static void parse_table(const char *html, const char *id, struct table *t)
{
    char want[64];
    const char *p, *end;

    memset(t, 0, sizeof(*t));
    snprintf(want, sizeof(want), "<table id=\"%s\">", id);
    p = strstr(html, want);
    if (!p)
        fail_msg("no table %s in the page", id);
    end = strstr(p, "</table>");
    assert_non_null(end);
    while ((p = strstr(p, "<tr")) && p < end && t->n < MAX_ROWS) {
        const char *close = strstr(p, "</tr>"), *c = strstr(p, " class=\""), *td = p;
        size_t k = 0;
        if (c && c < strchr(p, '>'))
            sscanf(c, " class=\"%31[^\"]\"", t->cls[t->n]);
        while ((td = strstr(td, "<td")) && td < close && k < MAX_COLS) {
            td = strchr(td, '>') + 1;
            td = cell_text(td, t->cell[t->n][k++], sizeof(t->cell[0][0]));
        }
        t->ncell[t->n] = k;
        if (k)
            t->n++;
        p = close;
    }
}

/* Predictions as `streamml replay` writes them, labels as CSV, from the
 * fixture; a duplicate prediction, an unlabelled one, a label without
 * prediction. */
static void write_inputs(struct fx *f, const char *preds, const char *labels)
{
    FILE *p = fopen(preds, "w"), *l = fopen(labels, "w");

    assert_non_null(p);
    assert_non_null(l);
    fprintf(l, "event_id,label\n");
    for (size_t i = 0; i < f->n; i++) {
        fprintf(p,
                "{\"event_id\":\"r%zu\",\"user_id\":\"u\",\"probability\":%.17g,"
                "\"score\":600,\"decision\":\"approve\",\"features\":[1,null]}\n",
                i, f->p[i]);
        fprintf(l, "r%zu,%d\n", i, f->y[i]);
    }
    fprintf(p, "{\"event_id\":\"r0\",\"probability\":%.17g}\n", f->p[0]); /* duplicate */
    fprintf(p, "{\"event_id\":\"nolabel\",\"probability\":0.5}\n");
    fprintf(l, "nopred,1\n");
    fclose(p);
    fclose(l);
}

static void test_report_command_summary_html_and_gates(void **st)
{
    struct fx *f = *st;
    char preds[128], labels[128], html[128], log[128], args[1024], want[64];
    char *text;

    snprintf(preds, sizeof(preds), "%s/p.jsonl", f->dir);
    snprintf(labels, sizeof(labels), "%s/l.csv", f->dir);
    snprintf(html, sizeof(html), "%s/r.html", f->dir);
    snprintf(log, sizeof(log), "%s/log", f->dir);
    write_inputs(f, preds, labels);

    snprintf(args, sizeof(args), "-p %s -l %s -o %s --gate 'auc>=0.7' --gate 'brier<0.5'", preds,
             labels, html);
    assert_int_equal(run(args, log), 0);
    text = slurp(log);
    snprintf(want, sizeof(want), "auc %.6f", num(f->j, "auc"));
    assert_non_null(strstr(text, want));
    assert_non_null(strstr(text, "joined 600"));
    assert_non_null(strstr(text, "1 duplicate"));
    assert_non_null(strstr(text, "1 unlabelled"));
    assert_non_null(strstr(text, "gate auc>=0.7: pass"));
    free(text);
    text = slurp(html);
    assert_non_null(strstr(text, "<svg"));
    assert_non_null(strstr(text, "ROC"));
    assert_non_null(strstr(text, "Calibration"));
    /* Self-contained: nothing fetched, nothing run. */
    assert_null(strstr(text, "http"));
    assert_null(strstr(text, "src="));
    assert_null(strstr(text, "<link"));
    assert_null(strstr(text, "<script"));
    free(text);

    snprintf(args, sizeof(args), "-p %s -l %s -o %s --gate 'auc>=0.9'", preds, labels, html);
    assert_int_equal(run(args, log), 3);
    text = slurp(log);
    assert_non_null(strstr(text, "gate auc>=0.9: FAIL"));
    free(text);

    snprintf(args, sizeof(args), "-p %s -l %s -o %s --gate 'auc>=x'", preds, labels, html);
    assert_int_equal(run(args, log), 2);
    snprintf(args, sizeof(args), "-p %s -l %s -o %s --gate 'lift>=1'", preds, labels, html);
    assert_int_equal(run(args, log), 2);
    snprintf(args, sizeof(args), "-p %s/missing.jsonl -l %s -o %s", f->dir, labels, html);
    assert_int_equal(run(args, log), 2);
    text = slurp(log);
    assert_non_null(strstr(text, "missing.jsonl"));
    free(text);
}

static void test_report_refuses_bad_rows_naming_the_line(void **st)
{
    struct fx *f = *st;
    char preds[128], labels[128], html[128], log[128], args[1024];
    FILE *p;
    char *text;

    snprintf(preds, sizeof(preds), "%s/bad.jsonl", f->dir);
    snprintf(labels, sizeof(labels), "%s/l.csv", f->dir);
    snprintf(html, sizeof(html), "%s/r2.html", f->dir);
    snprintf(log, sizeof(log), "%s/log2", f->dir);
    p = fopen(preds, "w");
    fprintf(p, "{\"event_id\":\"r1\",\"probability\":0.2}\n{\"event_id\":\"r2\","
               "\"probability\":1.5}\n");
    fclose(p);
    snprintf(args, sizeof(args), "-p %s -l %s -o %s", preds, labels, html);
    assert_int_equal(run(args, log), 1);
    text = slurp(log);
    assert_non_null(strstr(text, "line 2"));
    assert_non_null(strstr(text, "probability"));
    free(text);
}

/* Graded outputs end to end: grades in the predictions, true grades as
 * labels; QWK and the referable flag's figures equal sklearn's. */
static void test_report_graded_outputs(void **st)
{
    struct fx *f = *st;
    json_t *g = json_object_get(f->j, "graded");
    char preds[128], labels[128], html[128], log[128], args[1024];
    double qwk, sens, spec;
    FILE *p, *l;
    char *text, *at;

    snprintf(preds, sizeof(preds), "%s/g.jsonl", f->dir);
    snprintf(labels, sizeof(labels), "%s/g.jsonl.labels", f->dir);
    snprintf(html, sizeof(html), "%s/g.html", f->dir);
    snprintf(log, sizeof(log), "%s/g.log", f->dir);
    p = fopen(preds, "w");
    l = fopen(labels, "w");
    for (size_t i = 0; i < f->ng; i++) {
        /* P(referable) rises with the predicted grade. */
        fprintf(p, "{\"event_id\":\"g%zu\",\"probability\":%.3f,\"grade\":%d}\n", i,
                0.1 + 0.2 * f->gp[i], f->gp[i]);
        fprintf(l, "{\"event_id\":\"g%zu\",\"label\":%d}\n", i, f->gt[i]);
    }
    fclose(p);
    fclose(l);
    snprintf(args, sizeof(args), "-p %s -l %s -o %s --gate 'qwk>=0.7' --gate 'sensitivity>=0.99'",
             preds, labels, html);
    assert_int_equal(run(args, log), 3); /* sensitivity is below 0.99 */
    text = slurp(log);
    at = strstr(text, "qwk ");
    assert_non_null(at);
    assert_int_equal(sscanf(at, "qwk %lf sensitivity %lf specificity %lf", &qwk, &sens, &spec), 3);
    assert_true(fabs(qwk - num(g, "qwk")) < 1e-6); /* printed with 6 decimals */
    assert_true(fabs(sens - num(g, "sensitivity")) < 1e-6);
    assert_true(fabs(spec - num(g, "specificity")) < 1e-6);
    assert_non_null(strstr(text, "gate qwk>=0.7: pass"));
    assert_non_null(strstr(text, "gate sensitivity>=0.99: FAIL"));
    free(text);
    text = slurp(html);
    assert_non_null(strstr(text, "Confusion matrix"));
    free(text);
}

static double *doubles(json_t *a, size_t *n)
{
    double *v;

    *n = json_array_size(a);
    v = calloc(*n + 1, sizeof(double));
    for (size_t i = 0; i < *n; i++)
        v[i] = json_number_value(json_array_get(a, i));
    return v;
}

/* A baseline made with the monitoring module from the fixture's training
 * sample; the report's PSI of a drifted and a stable feature and of the
 * score equal numpy's (make_report_fixtures.py) to 1e-9. */
static void test_report_psi_against_a_baseline_matches_numpy(void **st)
{
    struct fx *f = *st;
    json_t *ps = json_object_get(f->j, "psi"), *tr = json_object_get(ps, "train"),
           *te = json_object_get(ps, "test");
    static const char *const names[] = {"amount", "age"};
    struct mon_baseline *b = mon_baseline_new(FEAT_TXN_VERSION, "test");
    struct mon_dist d;
    struct err e = {0};
    char base[128], preds[128], labels[128], html[128], log[128], args[1024];
    double *amount, *age, *score, got_score, got_max;
    int *label;
    size_t n, m;
    FILE *p, *l;
    char *text, *at, name[64];

    assert_non_null(b);
    for (int k = 0; k < 2; k++) {
        double *v = doubles(json_object_get(tr, names[k]), &n);
        assert_int_equal(mon_dist_compute(v, n, &d, &e), ERR_OK);
        assert_int_equal(mon_baseline_add(b, names[k], &d, &e), ERR_OK);
        free(v);
    }
    score = doubles(json_object_get(tr, "score"), &n);
    assert_int_equal(mon_dist_compute(score, n, &d, &e), ERR_OK);
    mon_baseline_set_score(b, &d);
    free(score);
    snprintf(base, sizeof(base), "%s/baseline.json", f->dir);
    assert_int_equal(mon_baseline_save(b, base, &e), ERR_OK);
    mon_baseline_free(b);

    amount = doubles(json_object_get(te, "amount"), &m);
    age = doubles(json_object_get(te, "age"), &n);
    score = doubles(json_object_get(te, "score"), &n);
    ints(json_object_get(te, "label"), &label, &n);
    snprintf(preds, sizeof(preds), "%s/psi.jsonl", f->dir);
    snprintf(labels, sizeof(labels), "%s/psi.csv", f->dir);
    p = fopen(preds, "w");
    l = fopen(labels, "w");
    fprintf(l, "event_id,label\n");
    for (size_t i = 0; i < m; i++) {
        fprintf(p, "{\"event_id\":\"s%zu\",\"probability\":%.17g,\"features\":[", i, score[i]);
        for (int k = 0; k < FEAT_TXN_DIM; k++) {
            const char *nm = feat_txn_names()[k];
            if (k)
                fputc(',', p);
            if (strcmp(nm, "amount") == 0)
                fprintf(p, "%.17g", amount[i]);
            else if (strcmp(nm, "age") == 0)
                fprintf(p, "%.17g", age[i]);
            else
                fputs("null", p);
        }
        fputs("]}\n", p);
        fprintf(l, "s%zu,%d\n", i, label[i]);
    }
    fclose(p);
    fclose(l);
    snprintf(html, sizeof(html), "%s/psi.html", f->dir);
    snprintf(log, sizeof(log), "%s/psi.log", f->dir);
    snprintf(args, sizeof(args), "-p %s -l %s -o %s --baseline %s --gate 'psi_max<0.2'", preds,
             labels, html, base);
    assert_int_equal(run(args, log), 3); /* amount drifted: the gate fails */
    text = slurp(log);
    at = strstr(text, "psi score ");
    assert_non_null(at);
    assert_int_equal(
        sscanf(at, "psi score %lf max feature %lf (%63[^)])", &got_score, &got_max, name), 3);
    near(got_score, num(ps, "score"));
    near(got_max, num(ps, "amount"));
    assert_string_equal(name, "amount");
    free(text);
    text = slurp(html);
    {
        /* score first, then features by PSI, largest first, each coloured by
         * the 0.1 / 0.2 thresholds */
        struct table t;
        parse_table(text, "psi", &t);
        assert_int_equal(t.n, 3);
        assert_string_equal(t.cell[0][0], "(model score)");
        assert_true(fabs(strtod(t.cell[0][1], NULL) - num(ps, "score")) < 1e-6); /* %.6f */
        assert_string_equal(t.cell[1][0], "amount");
        assert_string_equal(t.cell[2][0], "age");
        assert_true(strtod(t.cell[1][1], NULL) >= strtod(t.cell[2][1], NULL));
        for (size_t i = 0; i < t.n; i++) {
            double v = strtod(t.cell[i][1], NULL);
            assert_string_equal(t.cls[i], v >= 0.2 ? "psi-crit" : v >= 0.1 ? "psi-warn" : "psi-ok");
        }
        assert_string_equal(t.cls[1], "psi-crit"); /* amount drifted */
    }
    free(text);
    free(amount);
    free(age);
    free(score);
    free(label);
}

/* The fixture's predictions with a model name, version, event times ten
 * hours apart and (points != 0) scorecard points falling as P(bad) rises. */
static void write_scored(struct fx *f, const char *preds, int points)
{
    FILE *p = fopen(preds, "w");

    assert_non_null(p);
    for (size_t i = 0; i < f->n; i++)
        fprintf(p,
                "{\"event_id\":\"r%zu\",\"event_time\":%lld,\"model_name\":\"credit-risk\","
                "\"model_version\":\"7\",\"probability\":%.17g,\"score\":%d,"
                "\"decision\":\"approve\"}\n",
                i, 1700000000000LL + (long long)i * 60000, f->p[i],
                points ? 300 + (int)((1 - f->p[i]) * 550) : 0);
    fclose(p);
}

static double pct_cell(const char *s)
{
    return strtod(s, NULL) / 100;
}

/* Row k of a band table against the test's own count of band [lo, hi). */
static void check_band(struct fx *f, const struct table *t, size_t k, int points, double lo,
                       double hi, size_t *cn, size_t *cb, size_t bads)
{
    size_t n = 0, bad = 0;

    for (size_t i = 0; i < f->n; i++) {
        double v = points ? 300 + (int)((1 - f->p[i]) * 550) : f->p[i];
        int in = v >= lo && (v < hi || (!points && hi == 1.0 && v <= 1.0));
        n += in;
        bad += in && f->y[i];
    }
    *cn += n;
    *cb += bad;
    assert_int_equal(strtoul(t->cell[k][1], NULL, 10), n);
    assert_int_equal(strtoul(t->cell[k][2], NULL, 10), bad);
    if (n)
        assert_true(fabs(pct_cell(t->cell[k][3]) - (double)bad / n) < 6e-5);
    assert_int_equal(strtoul(t->cell[k][4], NULL, 10), *cn);
    assert_true(fabs(pct_cell(t->cell[k][5]) - (double)*cn / f->n) < 6e-5);
    assert_true(fabs(pct_cell(t->cell[k][6]) - (double)*cb / bads) < 6e-5);
}

/* The analyst's page: model, version and dates on top, the gates, the
 * score-band table (scorecard points when every prediction has them,
 * P(bad) bands otherwise), counted again here from the inputs. */
static void test_report_page_header_gates_and_score_bands(void **st)
{
    struct fx *f = *st;
    char preds[128], labels[128], html[128], log[128], args[1024];
    struct table t;
    size_t cn = 0, cb = 0, bads = 0, lo = 1000, hi = 0;
    char *text, *head;

    for (size_t i = 0; i < f->n; i++) {
        size_t pts = (size_t)(300 + (int)((1 - f->p[i]) * 550));
        bads += (size_t)f->y[i];
        lo = pts < lo ? pts : lo;
        hi = pts > hi ? pts : hi;
    }
    snprintf(preds, sizeof(preds), "%s/page.jsonl", f->dir);
    snprintf(labels, sizeof(labels), "%s/page.csv", f->dir);
    snprintf(html, sizeof(html), "%s/page.html", f->dir);
    snprintf(log, sizeof(log), "%s/page.log", f->dir);
    write_inputs(f, preds, labels); /* the labels */
    write_scored(f, preds, 1);
    snprintf(args, sizeof(args), "-p %s -l %s -o %s --gate 'auc>=0.7' --gate 'auc>=0.99'", preds,
             labels, html);
    assert_int_equal(run(args, log), 3);
    text = slurp(html);
    head = strstr(text, "<table class=\"head\" id=\"model\">");
    assert_non_null(head);
    assert_true(head < strstr(text, "<table id=\"gates\">")); /* on top */
    assert_non_null(strstr(head, "<b>credit-risk</b> version <b>7</b> (600 predictions)"));
    assert_non_null(strstr(head, "2023-11-14 22:13 to 2023-11-15 08:12"));
    parse_table(text, "gates", &t);
    assert_int_equal(t.n, 2);
    assert_string_equal(t.cell[0][0], "auc&gt;=0.7");
    assert_string_equal(t.cell[0][2], "pass");
    assert_string_equal(t.cell[1][2], "FAIL");
    assert_true(fabs(strtod(t.cell[0][1], NULL) - num(f->j, "auc")) < 1e-6);

    parse_table(text, "bands", &t);
    assert_int_equal(t.n, (hi - lo / 50 * 50) / 50 + 2); /* bands and the total */
    for (size_t k = 0; k + 1 < t.n; k++) {
        double b = (double)(lo / 50 * 50 + 50 * k);
        check_band(f, &t, k, 1, b, b + 50, &cn, &cb, bads);
    }
    assert_int_equal(cn, f->n);
    assert_string_equal(t.cell[t.n - 1][0], "all");
    assert_non_null(strstr(text, "Score points distribution"));
    free(text);

    write_scored(f, preds, 0); /* no scorecard: P(bad) bands, riskiest first */
    snprintf(args, sizeof(args), "-p %s -l %s -o %s", preds, labels, html);
    assert_int_equal(run(args, log), 0);
    text = slurp(html);
    parse_table(text, "bands", &t);
    assert_int_equal(t.n, 11);
    assert_string_equal(t.cell[0][0], "0.9-1.0");
    cn = cb = 0;
    for (size_t k = 0; k < 10; k++)
        check_band(f, &t, k, 0, (9 - (double)k) / 10, (10 - (double)k) / 10, &cn, &cb, bads);
    assert_null(strstr(text, "Score points distribution"));
    free(text);
}

/* Fairness compares credit decisions by group: on the images stream's
 * predictions (grades, no decision) --fairness-field is one usage line
 * naming the option, not a decode error; without it the same file reports. */
static void test_report_fairness_refused_on_image_predictions(void **st)
{
    struct fx *f = *st;
    char preds[128], labels[128], html[128], log[128], args[1024];
    FILE *p, *l;
    char *text;

    snprintf(preds, sizeof(preds), "%s/img.jsonl", f->dir);
    snprintf(labels, sizeof(labels), "%s/img.csv", f->dir);
    snprintf(html, sizeof(html), "%s/img.html", f->dir);
    snprintf(log, sizeof(log), "%s/logimg", f->dir);
    p = fopen(preds, "w");
    l = fopen(labels, "w");
    assert_non_null(p);
    assert_non_null(l);
    fprintf(l, "image_id,label\n");
    for (int i = 0; i < 4; i++) {
        fprintf(p,
                "{\"image_id\":\"i%d\",\"status\":\"ok\",\"grade\":%d,\"referable\":%s,"
                "\"referable_probability\":%.2f}\n",
                i, i, i >= 2 ? "true" : "false", 0.1 + 0.25 * i);
        fprintf(l, "i%d,%d\n", i, i);
    }
    fclose(p);
    fclose(l);
    snprintf(args, sizeof(args), "-p %s -l %s -o %s --fairness-field sex", preds, labels, html);
    assert_int_equal(run(args, log), 2);
    text = slurp(log);
    assert_non_null(strstr(text, "--fairness-field sex"));
    assert_non_null(strstr(text, "image predictions"));
    free(text);
    snprintf(args, sizeof(args), "-p %s -l %s -o %s", preds, labels, html);
    assert_int_equal(run(args, log), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auc_gini_ks_brier_match_sklearn_scipy),
        cmocka_unit_test(test_precision_recall_approval_at_thresholds),
        cmocka_unit_test(test_roc_curve_matches_sklearn_point_by_point),
        cmocka_unit_test(test_calibration_matches_sklearn),
        cmocka_unit_test(test_graded_qwk_confusion_referable_match_sklearn),
        cmocka_unit_test(test_undefined_metrics_are_nan_not_garbage),
        cmocka_unit_test(test_report_command_summary_html_and_gates),
        cmocka_unit_test(test_report_refuses_bad_rows_naming_the_line),
        cmocka_unit_test(test_report_graded_outputs),
        cmocka_unit_test(test_report_psi_against_a_baseline_matches_numpy),
        cmocka_unit_test(test_report_fairness_refused_on_image_predictions),
        cmocka_unit_test(test_report_page_header_gates_and_score_bands),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
