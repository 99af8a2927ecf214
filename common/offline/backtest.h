/* common/offline/backtest.h: offline model metrics for backtest reports (prefix bt_).
 *
 * Pure functions over arrays, each defined as the reference tool computes
 * it (tests/test_report.c checks every one against scikit-learn / scipy
 * values from tests/fixtures/make_report_fixtures.py):
 *
 *   bt_auc          sklearn roc_auc_score (tied scores get half credit)
 *   bt_ks           scipy ks_2samp(scores of bad, scores of good).statistic
 *   bt_brier        sklearn brier_score_loss
 *   bt_at           precision_score / recall_score of (p >= t), approval
 *                   rate = share with p < t
 *   bt_roc          sklearn roc_curve(drop_intermediate=False)
 *   bt_calibration  sklearn calibration_curve(strategy="uniform")
 *   bt_qwk          sklearn cohen_kappa_score(weights="quadratic")
 *   bt_confusion    sklearn confusion_matrix
 *
 * Scores are P(bad) in [0, 1] and finite; labels are 1 (bad) or 0 (good).
 * Graded outputs use sklearn's label set: the sorted union of the values
 * seen in truth and prediction. A metric that is undefined (one class
 * absent, nothing flagged) is NaN.
 */
#ifndef STREAMML_BACKTEST_H
#define STREAMML_BACKTEST_H

#include <stddef.h>

#include "err.h"

#define BT_MAX_GRADES 32

double bt_auc(const double *p, const int *y, size_t n);
double bt_ks(const double *p, const int *y, size_t n);
double bt_brier(const double *p, const int *y, size_t n);

/* At a decision threshold t: flagged = p >= t. */
struct bt_at {
    double threshold;
    double precision, recall, approval;
    size_t tp, fp, fn, tn;
};
void bt_at(const double *p, const int *y, size_t n, double t, struct bt_at *out);

/* ROC curve: (0, 0) then one point per distinct score, highest first;
 * fpr and tpr hold n + 1 entries. *npoints = points written. */
int bt_roc(const double *p, const int *y, size_t n, double *fpr, double *tpr, size_t *npoints,
           struct err *e);

/* Uniform bins [0, 1/nbins), ...; only non-empty bins are written, in
 * order: observed share of bad, mean score, count. Each array holds nbins. */
int bt_calibration(const double *p, const int *y, size_t n, size_t nbins, double *frac_pos,
                   double *mean_pred, size_t *count, size_t *nout, struct err *e);

/* Sorted union of the grades in t and p (at most BT_MAX_GRADES). */
int bt_grades(const int *t, const int *p, size_t n, int *labels, size_t *k, struct err *e);
/* m[i * k + j] = events with truth labels[i] predicted labels[j]. */
int bt_confusion(const int *t, const int *p, size_t n, const int *labels, size_t k, size_t *m,
                 struct err *e);
/* Quadratic weighted kappa, weights (i - j)^2 over label indices. */
double bt_qwk(const int *t, const int *p, size_t n, struct err *e);
/* A referable flag (grade >= referable): sensitivity and specificity. */
void bt_referable(const int *t, const int *p, size_t n, int referable, double *sensitivity,
                  double *specificity);

#endif
