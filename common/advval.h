/* common/advval.h: adversarial validation (prefix advval_).
 *
 * Can a classifier tell the training rows from the rows seen live? It is
 * trained to separate them with stratified 5-fold cross-validation and its
 * out-of-fold AUC reported: about 0.5 when live data looks like training
 * data, the seed's WARNING above 0.6.
 *
 * The classifier: L2-regularised logistic regression (C = 1, intercept not
 * penalised) on one-hot deciles of every feature, missing values a bin of
 * their own, fitted by Newton's method to convergence. Why: the optimum is
 * unique, so the AUC is checkable against sklearn's LogisticRegression on
 * the same design and folds (tests/test_advval.c); bins catch shifts in
 * shape and in missingness that a linear model on raw values misses; and it
 * needs no tuning. Folds: rows of each class dealt round-robin in input
 * order (fold = rank within its class mod 5). Per feature, the separation
 * reported is |2 AUC - 1| of its raw value alone (missing lowest).
 */
#ifndef STREAMML_ADVVAL_H
#define STREAMML_ADVVAL_H

#include <stddef.h>

#include "err.h"

#define ADVVAL_FOLDS 5
#define ADVVAL_BINS 10 /* deciles; missing is bin ADVVAL_BINS */
#define ADVVAL_TOP 5

struct advval_result {
    double auc; /* mean of the folds' AUCs */
    double fold_auc[ADVVAL_FOLDS];
    int top[ADVVAL_TOP];           /* features separating most, most first */
    double separation[ADVVAL_TOP]; /* their |2 AUC - 1| */
    int n_top;
};

/* train: n_train x nf, live: n_live x nf, row-major floats (NaN missing).
 * Each side needs at least ADVVAL_FOLDS rows. ERR_INVALID naming the
 * culprit (too few rows, an infinite value), ERR_NOMEM. */
int advval_run(const float *train, size_t n_train, const float *live, size_t n_live, size_t nf,
               struct advval_result *r, struct err *e);

/* AUC of scores s (n) against labels y (0/1); ties count one half. */
double advval_auc(const double *s, const int *y, size_t n);

#endif
