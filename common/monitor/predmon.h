/* common/monitor/predmon.h: what the monitor watches of the clickstream and images
 * workers' predictions (prefix pmon_).
 *
 * The monitor (common/monitor/monitor.h) compares named per-event values with a
 * baseline. The transactions worker feeds its feature vector; the other two
 * workers have no tabular features, so they feed a few values of each
 * prediction instead, defined once here for the worker and for the offline
 * baseline (`streamml baseline`), so both see the same numbers:
 *
 *   clickstream  known_item     1, or missing (NaN) for an unknown item: the
 *                               monitor's missing_rate check is the
 *                               unknown-item rate
 *                warm_session   1, or missing for a cold start (no known item
 *                               in the session yet): the cold-start rate
 *                share_gru, share_covisit, share_popular, share_explore
 *                               share of the shown items from each source:
 *                               PSI against the baseline is policy drift
 *                score          the top item's GRU score (warm sessions only)
 *   images       grade          0..4, missing when ungradable
 *                expected_grade sum k p_k, missing when ungradable
 *                score          P(grade >= 2) (gradable images only)
 *
 * Dead letters and degraded/ungradable predictions are the error rate
 * (mon_observe_dead, mon_observe's degraded flag).
 */
#ifndef STREAMML_PREDMON_H
#define STREAMML_PREDMON_H

#include <stddef.h>
#include <stdio.h>

#include "click_event.h"
#include "err.h"
#include "image_event.h"
#include "monitor.h"

#define PMON_CLICK_DIM 6
#define PMON_IMAGE_DIM 2

enum pmon_kind { PMON_CLICKSTREAM = 0, PMON_IMAGES };

/* "clickstream" / "images" -> kind; -1 for anything else. */
int pmon_kind_parse(const char *s);
const char *const *pmon_names(enum pmon_kind k, size_t *n);

/* x[PMON_CLICK_DIM] and the score (NaN: none) of one prediction. */
void pmon_click_vector(const struct click_prediction *p, float *x, double *score);
/* x[PMON_IMAGE_DIM] and the score (NaN: none); ungradable: all NaN. */
void pmon_image_vector(const struct image_prediction *p, float *x, double *score);

/* A baseline from predictions as JSON lines (what `streamml consume -f`
 * prints of predictions.clickstream / predictions.images): per value its
 * deciles, proportions and missing rate, and the score's. Lines not
 * starting with '{' are skipped. ERR_DECODE naming `what` and the line for
 * a line that is not such a prediction; ERR_INVALID for fewer than 10
 * predictions. *rows: the predictions read. */
struct mon_baseline *pmon_baseline_read(enum pmon_kind k, FILE *in, const char *what,
                                        const char *model, size_t *rows, struct err *e);

#endif
