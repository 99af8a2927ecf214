/* streamml profile: training feature CSV + model -> baseline JSON.
 *
 * The baseline is what the workers' monitor compares live windows with
 * (common/monitor/monitor.h): per feature, decile edges and proportions, moments and
 * missing rate; the model's score distribution over the same rows; and the
 * AUC of the score against the label column when there is one. Every
 * number comes from common/monitor/monitor.c (mon_dist_compute, mon_auc), the same
 * code the worker's checks use, and the score from common/models/gbdt.c, the
 * worker's runtime.
 */
#include <errno.h>
#include <float.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmds.h"
#include "features.h"
#include "gbdt.h"
#include "monitor.h"

#define MAX_COLS 4096
#define MAX_LINE (1024 * 1024)

static const char default_ignore[] = "event_id,user_id,event_time";

struct prof_args {
    const char *model, *input, *output, *ignore, *label, *auc_input;
    long long max_rows;
    const char *spec; /* --spec: the feature set (default the built-in txn-v1) */
    char spec_ignore[2 * FSPEC_NAME_MAX + 2];
};

/* The table read from the CSV: one column of doubles per kept column. */
struct table {
    int ncols;                  /* columns in the file */
    char *names[MAX_COLS];
    int keep[MAX_COLS];         /* 1 feature, 2 label, 0 ignored */
    int nkeep, label_col;
    double **col;               /* per file column (kept ones only) */
    int *label;                 /* -1 unknown */
    size_t nrows, cap;
};

static void profile_usage(FILE *out)
{
    fprintf(out,
            "usage: streamml profile --model FILE --input FEATURES.csv --output BASELINE.json\n"
            "                        [--label COL] [--ignore COLS] [--auc-input CSV]\n\n"
            "Writes the monitoring baseline of a model: for every feature column of the\n"
            "CSV (what `streamml featurize` writes), decile bin edges and the share of\n"
            "rows in each bin, mean, std, min, max and missing rate; the same for the\n"
            "model's score over these rows; and the AUC of the score against the label\n"
            "column when it is present (rows with an empty label are left out). Point a\n"
            "worker's monitor.baseline at the file.\n\n"
            "  -m, --model FILE      XGBoost JSON model (binary:logistic), the one the\n"
            "                        worker scores with (required)\n"
            "  -i, --input FILE      feature CSV with a header (required)\n"
            "  -o, --output FILE     baseline JSON to write (required)\n"
            "      --label COL       label column, 0/1 (default: label; absent = no AUC)\n"
            "      --ignore COLS     columns that are not features (default: %s)\n"
            "      --auc-input FILE  compute the AUC on this CSV instead (a holdout: the\n"
            "                        training rows' AUC is optimistic)\n"
            "      --max-rows N      refuse inputs longer than this (default 5000000)\n"
            "      --spec SPEC       the feature spec the CSV was made with (`streamml\n"
            "                        featurize --spec SPEC`): the baseline carries its name,\n"
            "                        every feature column must be one of its outputs, and\n"
            "                        --ignore defaults to its key and time fields\n\n"
            "Exit codes: 0 ok; 1 a write error; 2 usage, a bad model, or a bad CSV (the\n"
            "line and column are named).\n",
            default_ignore);
}

static int profile_args(int argc, char **argv, struct prof_args *a)
{
    static const struct option lo[] = {
        {"model", required_argument, NULL, 'm'},  {"input", required_argument, NULL, 'i'},
        {"output", required_argument, NULL, 'o'}, {"label", required_argument, NULL, 1000},
        {"ignore", required_argument, NULL, 1001}, {"auc-input", required_argument, NULL, 1002},
        {"max-rows", required_argument, NULL, 1003}, {"spec", required_argument, NULL, 1004},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},      {NULL, 0, NULL, 0}};
    int opt;
    char *end;

    while ((opt = getopt_long(argc, argv, "m:i:o:hV", lo, NULL)) != -1) {
        switch (opt) {
        case 'm': a->model = optarg; break;
        case 'i': a->input = optarg; break;
        case 'o': a->output = optarg; break;
        case 1000: a->label = optarg; break;
        case 1001: a->ignore = optarg; break;
        case 1002: a->auc_input = optarg; break;
        case 1003:
            errno = 0;
            a->max_rows = strtoll(optarg, &end, 10);
            if (end == optarg || *end || errno || a->max_rows < 1) {
                fprintf(stderr, "error: --max-rows %s: expected a positive integer\n", optarg);
                return EXIT_USAGE;
            }
            break;
        case 1004: a->spec = optarg; break;
        case 'h': profile_usage(stdout); return -1;
        case 'V': cli_version(stdout); return -1;
        default: cli_usage_error("streamml profile", lo, argv); return EXIT_USAGE;
        }
    }
    if (optind < argc || !a->model || !a->input || !a->output) {
        fprintf(stderr, "error: %s (see streamml profile --help)\n",
                optind < argc ? "unexpected argument" : "--model, --input and --output are required");
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

/* ---- CSV: RFC 4180 fields on one line (featurize never writes newlines
 * inside a field; a record spanning lines is refused, named). ---- */

static int split(char *line, char **cols, int max, const char *where, struct err *e)
{
    int n = 0;
    char *p = line;

    for (;;) {
        char *w = p;
        if (n == max)
            return err_set(e, ERR_CONFIG, "%s: more than %d columns", where, max);
        cols[n++] = p;
        if (*p == '"') {
            char *r = p + 1;
            for (;;) {
                if (!*r)
                    return err_set(e, ERR_CONFIG, "%s: column %d: quote not closed on its line",
                                   where, n);
                if (*r == '"' && r[1] != '"')
                    break;
                *w++ = *r;
                r += *r == '"' ? 2 : 1;
            }
            p = r + 1;
            if (*p && *p != ',')
                return err_set(e, ERR_CONFIG, "%s: column %d: text after a closing quote", where,
                               n);
        } else {
            p += strcspn(p, ",");
            w = p;
        }
        if (!*p) {
            *w = '\0';
            return n;
        }
        *w = '\0';
        p++;
    }
}

static int in_list(const char *list, const char *name)
{
    size_t n = strlen(name);

    for (const char *p = list; *p;) {
        size_t k = strcspn(p, ",");
        if (k == n && strncmp(p, name, n) == 0)
            return 1;
        p += k + (p[k] == ',');
    }
    return 0;
}

/* Reads a line without its newline into buf[MAX_LINE]: 1, 0 at the end, -1 too long. */
static int read_line(FILE *f, char *buf)
{
    size_t n;

    if (!fgets(buf, MAX_LINE, f))
        return 0;
    n = strlen(buf);
    if (n == MAX_LINE - 1 && buf[n - 1] != '\n')
        return -1;
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    return 1;
}

static int parse_header(struct table *t, char *line, const struct prof_args *a,
                        const char *path, struct err *e)
{
    char *cols[MAX_COLS];
    char where[600];
    int n;

    snprintf(where, sizeof(where), "%s: line 1", path);
    if ((n = split(line, cols, MAX_COLS, where, e)) < 0)
        return e->code;
    t->ncols = n;
    t->label_col = -1;
    for (int k = 0; k < n; k++) {
        if (!(t->names[k] = strdup(cols[k])))
            return err_set(e, ERR_NOMEM, "out of memory");
        for (int j = 0; j < k; j++)
            if (strcmp(t->names[j], cols[k]) == 0)
                return err_set(e, ERR_CONFIG, "%s: column \"%s\" appears twice", where, cols[k]);
        t->keep[k] = strcmp(cols[k], a->label) == 0 ? 2 : in_list(a->ignore, cols[k]) ? 0 : 1;
        if (t->keep[k] == 2)
            t->label_col = k;
        t->nkeep += t->keep[k] == 1;
    }
    if (!t->nkeep)
        return err_set(e, ERR_CONFIG, "%s: no feature column", where);
    return ERR_OK;
}

static int grow(struct table *t, long long max_rows, struct err *e)
{
    size_t cap = t->cap ? 2 * t->cap : 4096;

    if (t->nrows == (size_t)max_rows)
        return err_set(e, ERR_CONFIG, "more than %lld rows (--max-rows)", max_rows);
    if (!t->col && !(t->col = calloc((size_t)t->ncols, sizeof(double *))))
        return err_set(e, ERR_NOMEM, "out of memory");
    for (int k = 0; k < t->ncols; k++) {
        double *c;
        if (t->keep[k] != 1)
            continue;
        if (!(c = realloc(t->col[k], cap * sizeof(double))))
            return err_set(e, ERR_NOMEM, "out of memory for %zu rows", cap);
        t->col[k] = c;
    }
    if (!(t->label = realloc(t->label, cap * sizeof(int))))
        return err_set(e, ERR_NOMEM, "out of memory for %zu rows", cap);
    t->cap = cap;
    return ERR_OK;
}

/* A feature cell: empty = missing; else a finite number that fits a float
 * (the worker's vectors are float: the value is rounded the same way). */
static int parse_value(const char *s, double *out)
{
    char *end;
    double d;

    if (!*s) {
        *out = NAN;
        return 0;
    }
    d = strtod(s, &end);
    if (end == s || *end || !isfinite(d) || fabs(d) > FLT_MAX)
        return -1;
    *out = (double)(float)d;
    return 0;
}

static int parse_label(const char *s, int *out)
{
    if (!*s)
        *out = -1;
    else if (strcmp(s, "0") == 0 || strcmp(s, "1") == 0)
        *out = s[0] - '0';
    else
        return -1;
    return 0;
}

static int add_row(struct table *t, char *line, long line_no, const char *path, struct err *e)
{
    char *cols[MAX_COLS];
    char where[600];
    int n;
    size_t r = t->nrows;

    snprintf(where, sizeof(where), "%s: line %ld", path, line_no);
    if ((n = split(line, cols, MAX_COLS, where, e)) < 0)
        return e->code;
    if (n != t->ncols)
        return err_set(e, ERR_CONFIG, "%s: %d columns, the header has %d", where, n, t->ncols);
    t->label[r] = -1;
    for (int k = 0; k < n; k++) {
        if (t->keep[k] == 1 && parse_value(cols[k], &t->col[k][r]))
            return err_set(e, ERR_CONFIG, "%s: column %s: \"%.40s\" is not a finite number",
                           where, t->names[k], cols[k]);
        if (t->keep[k] == 2 && parse_label(cols[k], &t->label[r]))
            return err_set(e, ERR_CONFIG, "%s: column %s: \"%.40s\" is not 0, 1 or empty",
                           where, t->names[k], cols[k]);
    }
    t->nrows++;
    return ERR_OK;
}

static int read_table(struct table *t, const char *path, const struct prof_args *a,
                      struct err *e)
{
    FILE *f = fopen(path, "r");
    char *line = malloc(MAX_LINE);
    long no = 0;
    int rc = ERR_OK, got;

    if (!f || !line) {
        free(line);
        if (f)
            fclose(f);
        return err_set(e, ERR_CONFIG, "%s: %s", path, f ? "out of memory" : strerror(errno));
    }
    while (rc == ERR_OK && (got = read_line(f, line)) != 0) {
        no++;
        if (got < 0)
            rc = err_set(e, ERR_CONFIG, "%s: line %ld longer than %d bytes", path, no, MAX_LINE);
        else if (no == 1)
            rc = parse_header(t, line, a, path, e);
        else if (t->nrows < t->cap || (rc = grow(t, a->max_rows, e)) == ERR_OK)
            rc = add_row(t, line, no, path, e);
    }
    if (rc == ERR_OK && no == 0)
        rc = err_set(e, ERR_CONFIG, "%s: empty (no header)", path);
    if (rc == ERR_OK && t->nrows == 0)
        rc = err_set(e, ERR_CONFIG, "%s: no rows after the header", path);
    fclose(f);
    free(line);
    return rc;
}

static void table_free(struct table *t)
{
    for (int k = 0; k < t->ncols; k++) {
        free(t->names[k]);
        if (t->col)
            free(t->col[k]);
    }
    free(t->col);
    free(t->label);
}

/* ---- scoring and the baseline ---- */

/* Model feature j -> table column; by name, or in order of the feature
 * columns when the model has no names. */
static int map_model(const struct gbdt *g, const struct table *t, int *map, struct err *e)
{
    size_t nf = gbdt_num_features(g);
    int next = 0;

    for (size_t j = 0; j < nf; j++) {
        const char *nm = gbdt_feature_name(g, j);
        int k = -1;
        if (nm) {
            for (k = 0; k < t->ncols && !(t->keep[k] == 1 && strcmp(t->names[k], nm) == 0); k++)
                ;
            if (k == t->ncols)
                return err_set(e, ERR_CONFIG, "model feature \"%s\" has no column", nm);
        } else {
            while (next < t->ncols && t->keep[next] != 1)
                next++;
            if (next == t->ncols)
                return err_set(e, ERR_CONFIG, "model has %zu features, the CSV fewer", nf);
            k = next++;
        }
        map[j] = k;
    }
    return ERR_OK;
}

static int score_rows(const struct gbdt *g, const struct table *t, double *score, struct err *e)
{
    size_t nf = gbdt_num_features(g);
    int *map = calloc(nf + 1, sizeof(int));
    float *x = calloc(nf + 1, sizeof(float));
    int rc = ERR_OK;

    if (!map || !x)
        rc = err_set(e, ERR_NOMEM, "out of memory");
    else if ((rc = map_model(g, t, map, e)) == ERR_OK)
        for (size_t r = 0; r < t->nrows; r++) {
            for (size_t j = 0; j < nf; j++)
                x[j] = (float)t->col[map[j]][r];
            score[r] = gbdt_predict(g, x);
        }
    free(map);
    free(x);
    return rc;
}

static int add_features(struct mon_baseline *b, const struct table *t, struct err *e)
{
    double *v = malloc(t->nrows * sizeof(double));
    struct mon_dist d;

    if (!v)
        return err_set(e, ERR_NOMEM, "out of memory");
    for (int k = 0; k < t->ncols; k++) {
        if (t->keep[k] != 1)
            continue;
        memcpy(v, t->col[k], t->nrows * sizeof(double));
        if (mon_dist_compute(v, t->nrows, &d, e) || mon_baseline_add(b, t->names[k], &d, e)) {
            free(v);
            return err_wrap(e, "column %s", t->names[k]);
        }
    }
    free(v);
    return ERR_OK;
}

/* AUC of the model's score on t's labelled rows; NaN without both classes. */
static double table_auc(const struct table *t, const double *score)
{
    return t->label_col < 0 ? NAN : mon_auc(score, t->label, t->nrows);
}

static int auc_from_file(const struct gbdt *g, const struct prof_args *a, double *auc,
                         struct err *e)
{
    struct table t = {0};
    double *s = NULL;
    int rc = read_table(&t, a->auc_input, a, e);

    if (rc == ERR_OK && t.label_col < 0)
        rc = err_set(e, ERR_CONFIG, "%s: no label column \"%s\"", a->auc_input, a->label);
    if (rc == ERR_OK && !(s = malloc(t.nrows * sizeof(double))))
        rc = err_set(e, ERR_NOMEM, "out of memory");
    if (rc == ERR_OK && (rc = score_rows(g, &t, s, e)) == ERR_OK)
        *auc = table_auc(&t, s);
    free(s);
    table_free(&t);
    return rc;
}

static int build(const struct prof_args *a, const struct gbdt *g, struct table *t,
                 struct mon_baseline *b, struct err *e)
{
    double *score = malloc(t->nrows * sizeof(double));
    struct mon_dist d;
    double auc;
    int rc;

    if (!score)
        return err_set(e, ERR_NOMEM, "out of memory");
    rc = add_features(b, t, e);
    if (rc == ERR_OK)
        rc = score_rows(g, t, score, e);
    auc = rc == ERR_OK ? table_auc(t, score) : NAN;
    if (rc == ERR_OK && a->auc_input)
        rc = auc_from_file(g, a, &auc, e);
    if (rc == ERR_OK && (rc = mon_dist_compute(score, t->nrows, &d, e)) == ERR_OK) {
        mon_baseline_set_score(b, &d);
        mon_baseline_set_auc(b, auc, t->nrows);
        fprintf(stderr, "profile: %zu rows, %d features, mean score %.4f, AUC %s%.4f\n",
                t->nrows, t->nkeep, d.mean, a->auc_input ? "(holdout) " : "", auc);
    }
    free(score);
    return rc;
}

/* --spec: the active feature set (names, version) for the baseline; its
 * key and time columns are not features unless --ignore says otherwise. */
static int use_spec(struct prof_args *a, struct err *e)
{
    const struct fspec *p;

    if (feat_txn_use(a->spec, e))
        return err_wrap(e, "--spec");
    p = feat_txn_spec();
    if (a->ignore == default_ignore && feat_txn_reads_rec()) {
        snprintf(a->spec_ignore, sizeof(a->spec_ignore), "%s,%s", fspec_key_field(p),
                 fspec_time_field(p));
        a->ignore = a->spec_ignore;
    }
    return ERR_OK;
}

/* Every feature column is an output of the feature set: a baseline of
 * another set's names would be refused by the worker's monitor later. */
static int check_columns(const struct table *t, struct err *e)
{
    for (int k = 0; k < t->ncols; k++)
        if (t->keep[k] == 1 && feat_txn_index(t->names[k]) < 0)
            return err_set(e, ERR_CONFIG,
                           "column %s is not a feature of %s (--ignore it, or give the --spec "
                           "the CSV was made with)",
                           t->names[k], feat_txn_version());
    return ERR_OK;
}

int cmd_profile(int argc, char **argv)
{
    struct prof_args a = {NULL, NULL, NULL, default_ignore, "label", NULL, 5000000, NULL, ""};
    struct table t = {0};
    struct err e = {0};
    struct gbdt *g = NULL;
    struct mon_baseline *b = NULL;
    int rc = profile_args(argc, argv, &a);

    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    rc = EXIT_USAGE;
    if (a.spec && use_spec(&a, &e))
        goto out;
    if (!(g = gbdt_open(a.model, &e)) || read_table(&t, a.input, &a, &e) ||
        (a.spec && check_columns(&t, &e)))
        goto out;
    if (!(b = mon_baseline_new(feat_txn_version(), a.model))) {
        err_set(&e, ERR_NOMEM, "out of memory");
        goto out;
    }
    if (build(&a, g, &t, b, &e))
        goto out;
    rc = EXIT_RUNTIME;
    if (mon_baseline_save(b, a.output, &e)) {
        if (e.code == ERR_CONFIG) /* an output path that cannot be one */
            rc = EXIT_USAGE;
        goto out;
    }
    rc = EXIT_OK;
out:
    if (rc != EXIT_OK)
        fprintf(stderr, "error: %s\n", e.msg);
    mon_baseline_free(b);
    table_free(&t);
    gbdt_close(g);
    return rc;
}
