/* tools/streamml/report_fair.h: the fairness-by-outcome section of
 * `streamml report` (common/monitor/fairness.h does the arithmetic). The group of a
 * prediction is its field NAME (a top-level field of the JSON line, e.g.
 * variant) or, for predictions written with `replay --features`, the txn-v1
 * feature NAME (e.g. home_code); approved = decision "approve"; labels from
 * the report's label file (1 bad, 0 good), unknown otherwise. */
#ifndef STREAMML_REPORT_FAIR_H
#define STREAMML_REPORT_FAIR_H

#include <stdio.h>

#include "cfg.h"
#include "err.h"
#include "fairness.h"

/* Labels from the file labels or the label field of the events on
 * labels_topic (read with cf); both NULL: approval rates only. ERR_DECODE
 * naming file and line (no decision, no such field), ERR_IO. */
int report_fair_run(const char *preds, const char *labels, const char *labels_topic,
                    const struct cfg *cf, const char *field, struct fair *f, struct err *e);
void report_fair_html(FILE *o, const char *field, const struct fair *f);
void report_fair_summary(const char *field, const struct fair *f);

#endif
