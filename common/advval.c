/* common/advval.c: adversarial validation (see advval.h). */
#include "advval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NEWTON_MAX 50
#define NEWTON_TOL 1e-10
#define NB (ADVVAL_BINS + 1) /* bins per feature, the last for missing */

struct ranked {
    double s;
    int y;
};

static int cmp_ranked(const void *a, const void *b)
{
    double x = ((const struct ranked *)a)->s, y = ((const struct ranked *)b)->s;
    return (x > y) - (x < y);
}

double advval_auc(const double *s, const int *y, size_t n)
{
    struct ranked *r = malloc((n ? n : 1) * sizeof(*r));
    double pos = 0, rank_sum = 0;

    if (!r)
        return NAN;
    for (size_t i = 0; i < n; i++) {
        r[i] = (struct ranked){s[i], y[i]};
        pos += y[i];
    }
    qsort(r, n, sizeof(*r), cmp_ranked);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && r[j].s == r[i].s)
            j++;
        for (size_t k = i; k < j; k++) /* ties: the mean of their ranks (1-based) */
            rank_sum += r[k].y * ((double)(i + 1 + j) / 2.0);
        i = j;
    }
    free(r);
    if (pos == 0 || pos == (double)n)
        return NAN;
    return (rank_sum - pos * (pos + 1) / 2) / (pos * ((double)n - pos));
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Deciles of feature j over the pooled rows: the bin of each row. */
static int bin_feature(const float *x, size_t n, size_t nf, size_t j, unsigned char *bin,
                       float *tmp)
{
    size_t m = 0;
    float cut[ADVVAL_BINS - 1];

    for (size_t i = 0; i < n; i++)
        if (!isnan(x[i * nf + j]))
            tmp[m++] = x[i * nf + j];
    qsort(tmp, m, sizeof(float), cmp_float);
    for (int k = 1; k < ADVVAL_BINS; k++)
        cut[k - 1] = m ? tmp[m * (size_t)k / ADVVAL_BINS] : 0;
    for (size_t i = 0; i < n; i++) {
        float v = x[i * nf + j];
        int b = 0;
        if (isnan(v)) {
            bin[i * nf + j] = ADVVAL_BINS;
            continue;
        }
        while (b < ADVVAL_BINS - 1 && cut[b] <= v)
            b++;
        bin[i * nf + j] = (unsigned char)b;
    }
    return 0;
}

/* Solves H d = g in place (H: d x d, symmetric positive definite) by
 * Cholesky; g becomes d. 0, or -1 when H is not positive definite. */
static int cholesky_solve(double *h, double *g, size_t d)
{
    for (size_t j = 0; j < d; j++) {
        double s = h[j * d + j];
        for (size_t k = 0; k < j; k++)
            s -= h[j * d + k] * h[j * d + k];
        if (!(s > 0))
            return -1;
        h[j * d + j] = sqrt(s);
        for (size_t i = j + 1; i < d; i++) {
            double t = h[i * d + j];
            for (size_t k = 0; k < j; k++)
                t -= h[i * d + k] * h[j * d + k];
            h[i * d + j] = t / h[j * d + j];
        }
    }
    for (size_t i = 0; i < d; i++) { /* L y = g */
        for (size_t k = 0; k < i; k++)
            g[i] -= h[i * d + k] * g[k];
        g[i] /= h[i * d + i];
    }
    for (size_t i = d; i-- > 0;) { /* L^T d = y */
        for (size_t k = i + 1; k < d; k++)
            g[i] -= h[k * d + i] * g[k];
        g[i] /= h[i * d + i];
    }
    return 0;
}

struct fit {
    const unsigned char *bin;
    const int *y, *fold;
    size_t n, nf, d; /* d = nf * NB + 1, the intercept last */
    double *w, *h, *g;
};

static double margin(const struct fit *f, size_t i)
{
    double z = f->w[f->d - 1];

    for (size_t j = 0; j < f->nf; j++)
        z += f->w[j * NB + f->bin[i * f->nf + j]];
    return z;
}

/* One Newton step on the rows outside fold k; the step's largest size. */
static double newton_step(struct fit *f, int k)
{
    size_t d = f->d, col[256 + 1];
    double step = 0;

    memset(f->h, 0, d * d * sizeof(double));
    for (size_t c = 0; c + 1 < d; c++) { /* the L2 term, intercept free */
        f->g[c] = f->w[c];
        f->h[c * d + c] = 1;
    }
    f->g[d - 1] = 0;
    for (size_t i = 0; i < f->n; i++) {
        double p, wt;
        if (f->fold[i] == k)
            continue;
        p = 1 / (1 + exp(-margin(f, i)));
        wt = p * (1 - p);
        for (size_t j = 0; j < f->nf; j++)
            col[j] = j * NB + f->bin[i * f->nf + j];
        col[f->nf] = d - 1;
        for (size_t a = 0; a <= f->nf; a++) {
            f->g[col[a]] += p - f->y[i];
            for (size_t b = 0; b <= f->nf; b++)
                f->h[col[a] * d + col[b]] += wt;
        }
    }
    if (cholesky_solve(f->h, f->g, d))
        return NAN;
    for (size_t c = 0; c < d; c++) {
        f->w[c] -= f->g[c];
        step = fabs(f->g[c]) > step ? fabs(f->g[c]) : step;
    }
    return step;
}

/* Fits on the other folds, scores fold k: its AUC. */
static double fold_auc(struct fit *f, int k, double *s, int *ys)
{
    size_t m = 0;

    memset(f->w, 0, f->d * sizeof(double));
    for (int it = 0; it < NEWTON_MAX; it++) {
        double st = newton_step(f, k);
        if (isnan(st))
            return NAN;
        if (st < NEWTON_TOL)
            break;
    }
    for (size_t i = 0; i < f->n; i++) {
        if (f->fold[i] != k)
            continue;
        s[m] = margin(f, i);
        ys[m++] = f->y[i];
    }
    return advval_auc(s, ys, m);
}

/* Per feature |2 AUC - 1| of its raw value (missing lowest): the top ones. */
static void separation(const float *x, const int *y, size_t n, size_t nf, double *s,
                       struct advval_result *r)
{
    r->n_top = 0;
    for (size_t j = 0; j < nf; j++) {
        double sep;
        int at;
        for (size_t i = 0; i < n; i++)
            s[i] = isnan(x[i * nf + j]) ? -INFINITY : x[i * nf + j];
        sep = fabs(2 * advval_auc(s, y, n) - 1);
        for (at = r->n_top; at > 0 && r->separation[at - 1] < sep; at--)
            if (at < ADVVAL_TOP) {
                r->top[at] = r->top[at - 1];
                r->separation[at] = r->separation[at - 1];
            }
        if (at < ADVVAL_TOP) {
            r->top[at] = (int)j;
            r->separation[at] = sep;
        }
        r->n_top += r->n_top < ADVVAL_TOP;
    }
}

int advval_run(const float *train, size_t n_train, const float *live, size_t n_live, size_t nf,
               struct advval_result *r, struct err *e)
{
    size_t n = n_train + n_live, d = nf * NB + 1, seen[2] = {0, 0};
    float *x = NULL, *tmp = NULL;
    unsigned char *bin = NULL;
    int *y = NULL, *fold = NULL, *ys = NULL, rc = ERR_NOMEM;
    double *s = NULL;
    struct fit f = {0};

    memset(r, 0, sizeof(*r));
    if (n_train < ADVVAL_FOLDS || n_live < ADVVAL_FOLDS || nf == 0 || nf > 256)
        return err_set(e, ERR_INVALID,
                       "adversarial validation: %zu training and %zu live rows of %zu features "
                       "(at least %d rows each, 1..256 features)",
                       n_train, n_live, nf, ADVVAL_FOLDS);
    x = malloc(n * nf * sizeof(float));
    tmp = malloc(n * sizeof(float));
    bin = malloc(n * nf);
    y = malloc(n * sizeof(int));
    fold = malloc(n * sizeof(int));
    ys = malloc(n * sizeof(int));
    s = malloc(n * sizeof(double));
    f.w = malloc(d * sizeof(double));
    f.g = malloc(d * sizeof(double));
    f.h = malloc(d * d * sizeof(double));
    if (!x || !tmp || !bin || !y || !fold || !ys || !s || !f.w || !f.g || !f.h)
        goto out;
    memcpy(x, train, n_train * nf * sizeof(float));
    memcpy(x + n_train * nf, live, n_live * nf * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        y[i] = i >= n_train;
        fold[i] = (int)(seen[y[i]]++ % ADVVAL_FOLDS);
    }
    for (size_t i = 0; i < n * nf; i++)
        if (isinf(x[i])) {
            rc = err_set(e, ERR_INVALID,
                         "adversarial validation: %s row %zu feature %zu is infinite",
                         i / nf < n_train ? "training" : "live",
                         i / nf < n_train ? i / nf : i / nf - n_train, i % nf);
            goto out;
        }
    for (size_t j = 0; j < nf; j++)
        bin_feature(x, n, nf, j, bin, tmp);
    f = (struct fit){bin, y, fold, n, nf, d, f.w, f.h, f.g};
    for (int k = 0; k < ADVVAL_FOLDS; k++) {
        r->fold_auc[k] = fold_auc(&f, k, s, ys);
        r->auc += r->fold_auc[k] / ADVVAL_FOLDS;
    }
    separation(x, y, n, nf, s, r);
    rc = isnan(r->auc) ? err_set(e, ERR_INVALID, "adversarial validation: the fit diverged")
                       : ERR_OK;
out:
    if (rc == ERR_NOMEM)
        err_set(e, ERR_NOMEM, "adversarial validation: out of memory");
    free(x);
    free(tmp);
    free(bin);
    free(y);
    free(fold);
    free(ys);
    free(s);
    free(f.w);
    free(f.g);
    free(f.h);
    return rc;
}
