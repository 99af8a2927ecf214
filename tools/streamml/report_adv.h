/* tools/streamml/report_adv.h: the adversarial-validation section of
 * `streamml report` (common/advval.h does the work): the training feature
 * CSV against the replayed or live-captured one (`streamml featurize` CSVs,
 * columns matched by name; event_id, user_id, event_time and label are not
 * features). */
#ifndef STREAMML_REPORT_ADV_H
#define STREAMML_REPORT_ADV_H

#include <stdio.h>

#include "advval.h"
#include "err.h"

#define REPORT_ADV_WARN 0.6 /* the seed's WARNING level */

struct report_adv {
    struct advval_result r;
    char **names; /* the features compared, n */
    size_t n, n_train, n_live;
};

/* Reads both CSVs and runs the classifier. ERR_IO / ERR_DECODE naming the
 * file, line and column; ERR_INVALID when they share no feature. */
int report_adv_run(const char *train_csv, const char *live_csv, struct report_adv *a,
                   struct err *e);
void report_adv_free(struct report_adv *a);
/* The report's section (HTML) and the summary's lines (stdout). */
void report_adv_html(FILE *o, const struct report_adv *a);
void report_adv_summary(const struct report_adv *a);

#endif
