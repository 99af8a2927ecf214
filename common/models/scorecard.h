/* common/models/scorecard.h: points scorecard with reason codes (prefix card_).
 *
 * JSON model: per-feature bins, each with points (see models/README.md);
 * binned logistic regression on WoE exports to this form. Scaling:
 *   score = offset + factor * ln(odds_good),  factor = PDO / ln 2,
 * with PDO 20 and 600 points at odds 50:1 by default, clipped to 300..850.
 * Reason codes: the features that lost the most points against their best
 * bin, worst first (adverse-action reasons). Read-only after load.
 */
#ifndef STREAMML_SCORECARD_H
#define STREAMML_SCORECARD_H

#include <stddef.h>

#include "err.h"

#define CARD_MAX_REASONS 4

struct card;

struct card_result {
    double points;      /* unclipped sum of points */
    int score;          /* rounded and clipped to [min_score, max_score] */
    double probability; /* P(bad) implied by the unclipped points */
    int n_reasons;
    const char *reasons[CARD_MAX_REASONS]; /* feature names, static in the card */
    double lost[CARD_MAX_REASONS];         /* points lost against the best bin */
};

struct card *card_open(const char *path, struct err *e);
struct card *card_open_string(const char *json, struct err *e);
void card_close(struct card *c); /* NULL-safe */

size_t card_num_features(const struct card *c);
const char *card_feature_name(const struct card *c, size_t i);
const char *card_name(const struct card *c);
const char *card_version(const struct card *c);

/* Scaling of the card (for `streamml model inspect`). */
struct card_scaling {
    double pdo, score0, odds0, min_score, max_score, base_points;
};
void card_get_scaling(const struct card *c, struct card_scaling *s);
/* Bins of feature i: returns their number n (0 when i is out of range) and
 * sets *upper and *points to arrays of n owned by the card; a value x goes to
 * the first bin with x < upper[b] (upper[n - 1] = +inf). */
size_t card_feature_bins(const struct card *c, size_t i, const double **upper,
                         const double **points, double *missing_points);

/* x is indexed like card_feature_name(); NaN goes to the feature's missing
 * bin. */
void card_score(const struct card *c, const float *x, struct card_result *r);

/* The scaling, both ways (pdo, score0 at odds0 good:bad). */
double card_score_from_prob(double p_bad, double pdo, double score0, double odds0);
double card_prob_from_score(double score, double pdo, double score0, double odds0);

#endif
