/* streamml profile (tools/streamml/cmd_profile.c), run as the user runs it.
 *
 * Input: the xgboost fixture cases (tests/fixtures/xgb_named_cases.csv, made
 * by make_xgb_fixtures.py) turned into a featurize-style CSV. The baseline's
 * score mean must equal the mean of xgboost's own predict_proba; feature
 * distributions must be what mon_dist_compute gives (itself checked against
 * numpy in test_monitor.c); bad input is refused naming line and column.
 * The shipped models/credit_gbdt.baseline.json must load and cover txn-v1.
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
#include <sys/wait.h>
#include <unistd.h>

#include "features.h"
#include "monitor.h"
#include "stack.h"

#define CASES "tests/fixtures/xgb_named_cases.csv"
#define MODEL "tests/fixtures/xgb_named.json"
#define MAXR 256

struct fx {
    char dir[64], csv[128], out[128], log[128];
    double x[MAXR][6], prob[MAXR];
    int label[MAXR];
    int n;
};

static double cell(char **p)
{
    char *end;
    double v = **p == ',' || **p == '\n' ? NAN : strtod(*p, &end);

    *p += strcspn(*p, ",\n");
    if (**p == ',')
        (*p)++;
    return v;
}

/* The fixture rows, written back as event_id,user_id,event_time,f_0..f_5,label
 * with label = (x1 > 0), empty when x1 is missing. */
static void write_input(struct fx *f)
{
    FILE *in = fopen(CASES, "r"), *out = fopen(f->csv, "w");
    char line[1024];

    assert_non_null(in);
    assert_non_null(out);
    assert_non_null(fgets(line, sizeof(line), in));
    fprintf(out, "event_id,user_id,event_time,f_0,f_1,f_2,f_3,f_4,f_5,label\n");
    while (f->n < MAXR && fgets(line, sizeof(line), in)) {
        char *p = line;
        int r = f->n++;
        for (int k = 0; k < 6; k++)
            f->x[r][k] = cell(&p);
        f->prob[r] = cell(&p);
        f->label[r] = isnan(f->x[r][1]) ? -1 : f->x[r][1] > 0;
        fprintf(out, "\"e,%d\",u%d,%d", r, r % 7, r);
        for (int k = 0; k < 6; k++)
            isnan(f->x[r][k]) ? fprintf(out, ",") : fprintf(out, ",%.9g", f->x[r][k]);
        f->label[r] < 0 ? fprintf(out, ",\n") : fprintf(out, ",%d\n", f->label[r]);
    }
    fclose(in);
    fclose(out);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    snprintf(f->dir, sizeof(f->dir), "/tmp/streamml-profile-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->csv, sizeof(f->csv), "%s/in.csv", f->dir);
    snprintf(f->out, sizeof(f->out), "%s/baseline.json", f->dir);
    snprintf(f->log, sizeof(f->log), "%s/stderr", f->dir);
    write_input(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char cmd[256];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", f->dir);
    free(f);
    return 0;
}

/* Runs `streamml profile args...`; returns its exit code, stderr in f->log. */
static int profile(struct fx *f, const char *args)
{
    char cmd[1024];
    int st;

    snprintf(cmd, sizeof(cmd), "%s profile %s 2>%s", test_bin("streamml"), args, f->log);
    st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int log_has(const struct fx *f, const char *needle)
{
    char buf[2048] = {0};
    FILE *in = fopen(f->log, "r");
    size_t n = in ? fread(buf, 1, sizeof(buf) - 1, in) : 0;

    if (in)
        fclose(in);
    buf[n] = '\0';
    if (!strstr(buf, needle))
        fprintf(stderr, "wanted \"%s\" in: %s\n", needle, buf);
    return strstr(buf, needle) != NULL;
}

static void test_profile_matches_xgboost_scores(void **state)
{
    struct fx *f = *state;
    char args[512];
    struct err e = {0};
    struct mon_baseline *b;
    double sum = 0, v[MAXR], s[MAXR];
    struct mon_dist d;

    snprintf(args, sizeof(args), "-m %s -i %s -o %s", MODEL, f->csv, f->out);
    assert_int_equal(profile(f, args), 0);
    b = mon_baseline_load(f->out, &e);
    assert_non_null(b);
    assert_int_equal(mon_baseline_num_features(b), 6);
    assert_string_equal(mon_baseline_feature(b, 2), "f_2");
    for (int r = 0; r < f->n; r++) {
        sum += f->prob[r];
        v[r] = (double)(float)f->x[r][2];
        s[r] = f->prob[r];
    }
    /* Score: the worker's runtime equals xgboost to 1e-6. */
    assert_true(fabs(mon_baseline_score(b)->mean - sum / f->n) < 1e-6);
    assert_int_equal(mon_baseline_score(b)->count, f->n);
    /* A feature: what the monitor computes (numpy-checked elsewhere). */
    assert_int_equal(mon_dist_compute(v, (size_t)f->n, &d, &e), ERR_OK);
    assert_memory_equal(mon_baseline_dist(b, 2)->edges, d.edges, sizeof(d.edges));
    assert_true(mon_baseline_dist(b, 2)->missing_rate == d.missing_rate);
    /* AUC of xgboost's scores against the labels, unlabelled rows left out. */
    assert_true(fabs(mon_baseline_auc(b) - mon_auc(s, f->label, (size_t)f->n)) < 1e-4);
    mon_baseline_free(b);
}

static void test_no_label_column_means_no_auc(void **state)
{
    struct fx *f = *state;
    char args[512];
    struct err e = {0};
    struct mon_baseline *b;

    snprintf(args, sizeof(args), "-m %s -i %s -o %s --label none --ignore event_id,user_id,"
             "event_time,label", MODEL, f->csv, f->out);
    assert_int_equal(profile(f, args), 0);
    b = mon_baseline_load(f->out, &e);
    assert_non_null(b);
    assert_true(isnan(mon_baseline_auc(b)));
    mon_baseline_free(b);
}

static void write_file(const char *path, const char *text)
{
    FILE *out = fopen(path, "w");

    assert_non_null(out);
    fputs(text, out);
    fclose(out);
}

static void test_bad_cell_names_line_and_column(void **state)
{
    struct fx *f = *state;
    char args[512];

    write_file(f->csv, "event_id,f_0,f_1,f_2,f_3,f_4,f_5,label\n"
                       "a,1,2,3,4,5,6,0\n"
                       "b,1,2,x3,4,5,6,1\n");
    snprintf(args, sizeof(args), "-m %s -i %s -o %s", MODEL, f->csv, f->out);
    assert_int_equal(profile(f, args), 2);
    assert_true(log_has(f, "line 3: column f_2: \"x3\" is not a finite number"));
    write_file(f->csv, "event_id,f_0,f_1,f_2,f_3,f_4,f_5,label\na,1,2,3,4,5,6,2\n");
    assert_int_equal(profile(f, args), 2);
    assert_true(log_has(f, "line 2: column label: \"2\" is not 0, 1 or empty"));
    write_file(f->csv, "event_id,f_0,f_1,f_2,f_3,f_4,f_5,label\na,1,2,3\n");
    assert_int_equal(profile(f, args), 2);
    assert_true(log_has(f, "line 2: 4 columns, the header has 8"));
    write_file(f->csv, "event_id,f_0,f_1,label\na,1,2,1\n");
    assert_int_equal(profile(f, args), 2);
    assert_true(log_has(f, "model feature \"f_2\" has no column"));
    assert_int_equal(access(f->out, F_OK), -1); /* nothing half-written */
}

static void test_usage_errors(void **state)
{
    struct fx *f = *state;

    assert_int_equal(profile(f, "-m x.json"), 2);
    assert_true(log_has(f, "required"));
    assert_int_equal(profile(f, "-m /nonexistent.json -i /dev/null -o /tmp/x"), 2);
    assert_true(log_has(f, "/nonexistent.json"));
}

static void test_shipped_baseline_covers_txn_v1(void **state)
{
    struct err e = {0};
    struct mon_baseline *b = mon_baseline_load("models/credit_gbdt.baseline.json", &e);
    struct mon_opts o = {.window_events = 100, .window_ms = 1000, .slices = 1,
                         .min_events = 1, .auc_window = 10, .psi_warn = 0.1, .psi_crit = 0.2};
    struct mon *m;

    (void)state;
    if (!b)
        fprintf(stderr, "%s\n", e.msg);
    assert_non_null(b);
    assert_int_equal(mon_baseline_num_features(b), FEAT_TXN_DIM);
    assert_true(mon_baseline_auc(b) > 0.75);
    m = mon_open(&o, b, feat_txn_names(), FEAT_TXN_DIM, &e);
    assert_non_null(m);
    mon_close(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_profile_matches_xgboost_scores, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_label_column_means_no_auc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_cell_names_line_and_column, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usage_errors, setup, teardown),
        cmocka_unit_test(test_shipped_baseline_covers_txn_v1),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
