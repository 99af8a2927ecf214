#include "backtest.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct scored {
    double p;
    int y;
};

static int by_score_asc(const void *a, const void *b)
{
    double x = ((const struct scored *)a)->p, z = ((const struct scored *)b)->p;

    return x < z ? -1 : x > z;
}

/* (score, label) pairs in ascending score order; NULL on ENOMEM. */
static struct scored *sorted(const double *p, const int *y, size_t n)
{
    struct scored *s = malloc((n ? n : 1) * sizeof(*s));

    if (!s)
        return NULL;
    for (size_t i = 0; i < n; i++)
        s[i] = (struct scored){p[i], y[i] != 0};
    qsort(s, n, sizeof(*s), by_score_asc);
    return s;
}

static void count_classes(const int *y, size_t n, size_t *pos, size_t *neg)
{
    *pos = 0;
    for (size_t i = 0; i < n; i++)
        *pos += y[i] != 0;
    *neg = n - *pos;
}

double bt_auc(const double *p, const int *y, size_t n)
{
    size_t pos, neg, neg_below = 0;
    double num = 0;
    struct scored *s;

    count_classes(y, n, &pos, &neg);
    if (!pos || !neg || !(s = sorted(p, y, n)))
        return NAN;
    /* Mann-Whitney: each bad outranks the goods below it, half the ties. */
    for (size_t i = 0; i < n;) {
        size_t j = i, pg = 0, ng = 0;
        for (; j < n && s[j].p == s[i].p; j++)
            s[j].y ? pg++ : ng++;
        num += (double)pg * ((double)neg_below + 0.5 * (double)ng);
        neg_below += ng;
        i = j;
    }
    free(s);
    return num / ((double)pos * (double)neg);
}

double bt_ks(const double *p, const int *y, size_t n)
{
    size_t pos, neg, cp = 0, cn = 0;
    double best = 0;
    struct scored *s;

    count_classes(y, n, &pos, &neg);
    if (!pos || !neg || !(s = sorted(p, y, n)))
        return NAN;
    /* The two empirical CDFs compared after each distinct score. */
    for (size_t i = 0; i < n;) {
        size_t j = i;
        for (; j < n && s[j].p == s[i].p; j++)
            s[j].y ? cp++ : cn++;
        double d = fabs((double)cp / (double)pos - (double)cn / (double)neg);
        best = d > best ? d : best;
        i = j;
    }
    free(s);
    return best;
}

double bt_brier(const double *p, const int *y, size_t n)
{
    double sum = 0;

    if (!n)
        return NAN;
    for (size_t i = 0; i < n; i++) {
        double d = p[i] - (y[i] != 0);
        sum += d * d;
    }
    return sum / (double)n;
}

void bt_at(const double *p, const int *y, size_t n, double t, struct bt_at *o)
{
    memset(o, 0, sizeof(*o));
    o->threshold = t;
    for (size_t i = 0; i < n; i++) {
        int flag = p[i] >= t, bad = y[i] != 0;
        o->tp += flag && bad;
        o->fp += flag && !bad;
        o->fn += !flag && bad;
        o->tn += !flag && !bad;
    }
    o->precision = o->tp + o->fp ? (double)o->tp / (double)(o->tp + o->fp) : NAN;
    o->recall = o->tp + o->fn ? (double)o->tp / (double)(o->tp + o->fn) : NAN;
    o->approval = n ? (double)(o->fn + o->tn) / (double)n : NAN;
}

int bt_roc(const double *p, const int *y, size_t n, double *fpr, double *tpr, size_t *npoints,
           struct err *e)
{
    size_t pos, neg, tp = 0, fp = 0, k = 0;
    struct scored *s;

    *npoints = 0;
    count_classes(y, n, &pos, &neg);
    if (!pos || !neg)
        return err_set(e, ERR_INVALID, "ROC: needs both bad and good labels (%zu bad, %zu good)",
                       pos, neg);
    if (!(s = sorted(p, y, n)))
        return err_set(e, ERR_NOMEM, "ROC: out of memory");
    fpr[k] = 0;
    tpr[k++] = 0;
    for (size_t i = n; i > 0;) { /* highest score first */
        size_t j = i;
        for (; j > 0 && s[j - 1].p == s[i - 1].p; j--)
            s[j - 1].y ? tp++ : fp++;
        fpr[k] = (double)fp / (double)neg;
        tpr[k++] = (double)tp / (double)pos;
        i = j;
    }
    free(s);
    *npoints = k;
    return ERR_OK;
}

int bt_calibration(const double *p, const int *y, size_t n, size_t nbins, double *frac_pos,
                   double *mean_pred, size_t *count, size_t *nout, struct err *e)
{
    double *sum_p = calloc(nbins + 1, sizeof(double)), *sum_y = calloc(nbins + 1, sizeof(double));
    size_t *cnt = calloc(nbins + 1, sizeof(size_t));

    *nout = 0;
    if (!sum_p || !sum_y || !cnt || nbins == 0) {
        free(sum_p);
        free(sum_y);
        free(cnt);
        return err_set(e, nbins ? ERR_NOMEM : ERR_INVALID, "calibration: %s",
                       nbins ? "out of memory" : "no bins");
    }
    for (size_t i = 0; i < n; i++) {
        /* numpy searchsorted(inner edges k / nbins, p, side="left"): the
         * number of inner edges strictly below p. */
        size_t b = 0;
        while (b + 1 < nbins && (double)(b + 1) * (1.0 / (double)nbins) < p[i])
            b++;
        sum_p[b] += p[i];
        sum_y[b] += y[i] != 0;
        cnt[b]++;
    }
    for (size_t b = 0; b < nbins; b++) {
        if (!cnt[b])
            continue;
        frac_pos[*nout] = sum_y[b] / (double)cnt[b];
        mean_pred[*nout] = sum_p[b] / (double)cnt[b];
        count[*nout] = cnt[b];
        (*nout)++;
    }
    free(sum_p);
    free(sum_y);
    free(cnt);
    return ERR_OK;
}

static int add_grade(int *labels, size_t *k, int g, struct err *e)
{
    size_t i = 0;

    while (i < *k && labels[i] < g)
        i++;
    if (i < *k && labels[i] == g)
        return ERR_OK;
    if (*k == BT_MAX_GRADES)
        return err_set(e, ERR_INVALID, "more than %d distinct grades", BT_MAX_GRADES);
    memmove(labels + i + 1, labels + i, (*k - i) * sizeof(int));
    labels[i] = g;
    (*k)++;
    return ERR_OK;
}

int bt_grades(const int *t, const int *p, size_t n, int *labels, size_t *k, struct err *e)
{
    *k = 0;
    for (size_t i = 0; i < n; i++)
        if (add_grade(labels, k, t[i], e) || add_grade(labels, k, p[i], e))
            return e->code;
    return ERR_OK;
}

static size_t index_of(const int *labels, size_t k, int g)
{
    size_t i = 0;

    while (i < k && labels[i] != g)
        i++;
    return i;
}

int bt_confusion(const int *t, const int *p, size_t n, const int *labels, size_t k, size_t *m,
                 struct err *e)
{
    memset(m, 0, k * k * sizeof(*m));
    for (size_t i = 0; i < n; i++) {
        size_t a = index_of(labels, k, t[i]), b = index_of(labels, k, p[i]);
        if (a == k || b == k)
            return err_set(e, ERR_INVALID, "grade %d is not in the label set",
                           a == k ? t[i] : p[i]);
        m[a * k + b]++;
    }
    return ERR_OK;
}

double bt_qwk(const int *t, const int *p, size_t n, struct err *e)
{
    int labels[BT_MAX_GRADES];
    size_t k, m[BT_MAX_GRADES * BT_MAX_GRADES];
    double rows[BT_MAX_GRADES] = {0}, cols[BT_MAX_GRADES] = {0}, obs = 0, exp_ = 0;

    if (!n || bt_grades(t, p, n, labels, &k, e) || bt_confusion(t, p, n, labels, k, m, e))
        return NAN;
    for (size_t i = 0; i < k; i++)
        for (size_t j = 0; j < k; j++) {
            rows[i] += (double)m[i * k + j];
            cols[j] += (double)m[i * k + j];
        }
    /* 1 - sum(w * observed) / sum(w * expected), expected from the margins. */
    for (size_t i = 0; i < k; i++)
        for (size_t j = 0; j < k; j++) {
            double w = ((double)i - (double)j) * ((double)i - (double)j);
            obs += w * (double)m[i * k + j];
            exp_ += w * rows[i] * cols[j] / (double)n;
        }
    return exp_ > 0 ? 1 - obs / exp_ : NAN;
}

void bt_referable(const int *t, const int *p, size_t n, int referable, double *sensitivity,
                  double *specificity)
{
    size_t tp = 0, fn = 0, tn = 0, fp = 0;

    for (size_t i = 0; i < n; i++) {
        int truth = t[i] >= referable, flag = p[i] >= referable;
        tp += truth && flag;
        fn += truth && !flag;
        tn += !truth && !flag;
        fp += !truth && flag;
    }
    *sensitivity = tp + fn ? (double)tp / (double)(tp + fn) : NAN;
    *specificity = tn + fp ? (double)tn / (double)(tn + fp) : NAN;
}
