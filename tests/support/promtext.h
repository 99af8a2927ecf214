/* tests/support/promtext.h: a checker of the Prometheus text exposition
 * format 0.0.4, for the tests of /metrics. Not a client: it validates what
 * a scraper would reject (names, label syntax, values, TYPE before samples,
 * counters named _total, histogram buckets cumulative with +Inf = _count). */
#ifndef STREAMML_TEST_PROMTEXT_H
#define STREAMML_TEST_PROMTEXT_H

#include <stddef.h>

/* 0 when text is valid; else -1 with the line and reason in why. */
int prom_check(const char *text, char *why, size_t cap);
/* Value of the sample whose name and labels are exactly series
 * ("streamml_events_total", "streamml_feature_psi{feature=\"income\"}");
 * returns 0 and sets *v, or -1 when absent. */
int prom_value(const char *text, const char *series, double *v);
/* TYPE declared for family name ("counter", ...), or NULL; static buffer. */
const char *prom_type(const char *text, const char *name);

#endif
