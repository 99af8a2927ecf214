/* tools/streamml/report_adv.c: adversarial validation in `streamml report`
 * (see report_adv.h). */
#include "report_adv.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_COLS 4096
#define MAX_ROWS 2000000

static const char *const not_features[] = {"event_id", "user_id", "event_time", "label"};

struct table {
    char *cols[MAX_COLS];
    int ncol;
    float *x; /* rows x ncol */
    size_t rows, cap;
};

static int split(char *line, char **out, int max)
{
    int n = 0;

    line[strcspn(line, "\r\n")] = '\0';
    for (char *p = line;; p++) {
        if (n == max)
            return -1;
        out[n++] = p;
        p += strcspn(p, ",");
        if (!*p)
            return n;
        *p = '\0';
    }
}

static int is_feature(const char *name);

static int add_row(struct table *t, char **cells, const char *path, long no, struct err *e)
{
    if (t->rows == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 1024;
        float *x = cap <= MAX_ROWS ? realloc(t->x, cap * (size_t)t->ncol * sizeof(float)) : NULL;
        if (!x)
            return err_set(e, ERR_NOMEM, "%s: out of memory or more than %d rows", path, MAX_ROWS);
        t->x = x;
        t->cap = cap;
    }
    for (int k = 0; k < t->ncol; k++) {
        char *end;
        double v;
        if (!*cells[k] || !is_feature(t->cols[k])) { /* ids and label: not read */
            t->x[t->rows * (size_t)t->ncol + (size_t)k] = NAN;
            continue;
        }
        errno = 0;
        v = strtod(cells[k], &end);
        if (*end || end == cells[k] || !isfinite(v))
            return err_set(e, ERR_DECODE, "%s line %ld, column %d (%s): \"%.40s\" is not a number",
                           path, no, k + 1, t->cols[k], cells[k]);
        t->x[t->rows * (size_t)t->ncol + (size_t)k] = (float)v;
    }
    t->rows++;
    return ERR_OK;
}

static int read_table(const char *path, struct table *t, struct err *e)
{
    FILE *f = fopen(path, "r");
    char *line = NULL, *cells[MAX_COLS];
    size_t cap = 0;
    long no = 1;
    int rc = ERR_OK;

    if (!f)
        return err_set(e, ERR_IO, "%s: %s", path, strerror(errno));
    if (getline(&line, &cap, f) < 0 || (t->ncol = split(line, cells, MAX_COLS)) < 1)
        rc = err_set(e, ERR_DECODE, "%s: no header line (or more than %d columns)", path, MAX_COLS);
    for (int k = 0; rc == ERR_OK && k < t->ncol; k++)
        if (!(t->cols[k] = strdup(cells[k])))
            rc = err_set(e, ERR_NOMEM, "out of memory");
    while (rc == ERR_OK && getline(&line, &cap, f) >= 0) {
        no++;
        if (split(line, cells, MAX_COLS) != t->ncol)
            rc = err_set(e, ERR_DECODE, "%s line %ld: not %d columns like the header", path, no,
                         t->ncol);
        else
            rc = add_row(t, cells, path, no, e);
    }
    free(line);
    fclose(f);
    return rc;
}

static void table_free(struct table *t)
{
    for (int k = 0; k < t->ncol; k++)
        free(t->cols[k]);
    free(t->x);
}

static int is_feature(const char *name)
{
    for (size_t i = 0; i < sizeof(not_features) / sizeof(not_features[0]); i++)
        if (strcmp(name, not_features[i]) == 0)
            return 0;
    return 1;
}

static int find_col(const struct table *t, const char *name)
{
    for (int k = 0; k < t->ncol; k++)
        if (t->cols[k] && strcmp(t->cols[k], name) == 0)
            return k;
    return -1;
}

/* The features both tables have, in the training table's order, copied
 * into dense rows. */
static int common_features(struct report_adv *a, const struct table *tr, const struct table *lv,
                           int *ct, int *cl, struct err *e)
{
    a->names = calloc(MAX_COLS, sizeof(char *));
    if (!a->names)
        return err_set(e, ERR_NOMEM, "out of memory");
    for (int k = 0; k < tr->ncol; k++) {
        int l = find_col(lv, tr->cols[k]);
        if (!is_feature(tr->cols[k]) || l < 0)
            continue;
        ct[a->n] = k;
        cl[a->n] = l;
        a->names[a->n++] = strdup(tr->cols[k]);
        if (!a->names[a->n - 1])
            return err_set(e, ERR_NOMEM, "out of memory");
    }
    return a->n
               ? ERR_OK
               : err_set(e, ERR_INVALID, "adversarial validation: no feature column in both files");
}

static float *dense(const struct table *t, const int *cols, size_t n)
{
    float *x = malloc((t->rows ? t->rows : 1) * n * sizeof(float));

    for (size_t i = 0; x && i < t->rows; i++)
        for (size_t j = 0; j < n; j++)
            x[i * n + j] = t->x[i * (size_t)t->ncol + (size_t)cols[j]];
    return x;
}

int report_adv_run(const char *train_csv, const char *live_csv, struct report_adv *a, struct err *e)
{
    static struct table tr, lv;
    static int ct[MAX_COLS], cl[MAX_COLS];
    float *xt = NULL, *xl = NULL;
    int rc;

    memset(a, 0, sizeof(*a));
    memset(&tr, 0, sizeof(tr));
    memset(&lv, 0, sizeof(lv));
    rc = read_table(train_csv, &tr, e);
    if (rc == ERR_OK)
        rc = read_table(live_csv, &lv, e);
    if (rc == ERR_OK)
        rc = common_features(a, &tr, &lv, ct, cl, e);
    if (rc == ERR_OK) {
        xt = dense(&tr, ct, a->n);
        xl = dense(&lv, cl, a->n);
        rc = xt && xl ? advval_run(xt, tr.rows, xl, lv.rows, a->n, &a->r, e)
                      : err_set(e, ERR_NOMEM, "out of memory");
        a->n_train = tr.rows;
        a->n_live = lv.rows;
    }
    free(xt);
    free(xl);
    table_free(&tr);
    table_free(&lv);
    return rc;
}

void report_adv_free(struct report_adv *a)
{
    for (size_t i = 0; a->names && i < a->n; i++)
        free(a->names[i]);
    free(a->names);
}

static void escape(FILE *o, const char *s)
{
    for (; *s; s++) {
        if (*s == '<')
            fputs("&lt;", o);
        else if (*s == '>')
            fputs("&gt;", o);
        else if (*s == '&')
            fputs("&amp;", o);
        else
            fputc(*s, o);
    }
}

void report_adv_html(FILE *o, const struct report_adv *a)
{
    int warn = a->r.auc > REPORT_ADV_WARN;

    fprintf(o,
            "<h2>Adversarial validation</h2>\n<p>Can a classifier tell the %zu training rows "
            "from the %zu live rows? Out-of-fold AUC <b%s>%.3f</b>%s (stratified 5-fold; "
            "folds %.3f %.3f %.3f %.3f %.3f). About 0.5: live data looks like training "
            "data.</p>\n",
            a->n_train, a->n_live, warn ? " style=\"color:#c0392b\"" : "", a->r.auc,
            warn ? " &mdash; WARNING: above 0.6, live data differs from training data" : "",
            a->r.fold_auc[0], a->r.fold_auc[1], a->r.fold_auc[2], a->r.fold_auc[3],
            a->r.fold_auc[4]);
    fputs("<table><tr><th>feature separating them most</th><th>|2 AUC - 1| alone</th></tr>\n", o);
    for (int k = 0; k < a->r.n_top; k++) {
        fputs("<tr><td>", o);
        escape(o, a->names[a->r.top[k]]);
        fprintf(o, "</td><td>%.3f</td></tr>\n", a->r.separation[k]);
    }
    fputs("</table>\n<p>Classifier: L2 logistic regression on one-hot deciles of every feature "
          "(missing values a bin of their own), fitted exactly, so its AUC can be checked "
          "against sklearn.</p>\n",
          o);
}

void report_adv_summary(const struct report_adv *a)
{
    printf("adversarial validation: auc %.6f over %zu features (%zu training, %zu live rows)%s\n",
           a->r.auc, a->n, a->n_train, a->n_live,
           a->r.auc > REPORT_ADV_WARN ? "  WARNING: above 0.6" : "");
    for (int k = 0; k < a->r.n_top; k++)
        printf("  separates: %s %.6f\n", a->names[a->r.top[k]], a->r.separation[k]);
}
