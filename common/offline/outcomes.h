/* common/offline/outcomes.h: what happened to each event, by event id (prefix oc_).
 *
 * The offline tools join predictions with later truth: `streamml report`
 * (labels: 1 bad, 0 good, or a grade) and `streamml abtest` (an outcome:
 * any finite number, e.g. a conversion or an amount). Both read the same
 * sources, so both read them here:
 *
 *   - a CSV file with a header naming event_id and the value column
 *     (unquoted fields), or JSON lines {"event_id": .., "<column>": ..};
 *   - the label field of the transaction events on a topic (every
 *     partition, oldest to newest, never a consumer group).
 *
 * Lines are bounded (1 MiB); an error names the file and the line.
 */
#ifndef STREAMML_OUTCOMES_H
#define STREAMML_OUTCOMES_H

#include <stddef.h>

#include "cfg.h"
#include "err.h"

enum oc_kind {
    /* Column "label": an integer -1..1000; -1, empty or null = not known yet.
     * A later label for the same event replaces the earlier one (labels get
     * corrected). */
    OC_LABEL,
    /* Column "outcome" (else "label"): a finite number; empty or null = none.
     * Two outcomes for one event are an error: which one would count? */
    OC_OUTCOME,
};

struct oc_table;

int oc_open(struct oc_table **out, enum oc_kind kind, struct err *e);
void oc_close(struct oc_table *t); /* NULL-safe */

/* CSV or JSON lines (told apart by the first non-empty line). */
int oc_read_file(struct oc_table *t, const char *path, struct err *e);
/* The label field of the transaction events on topic (cfg: Kafka, schemas). */
int oc_read_topic(struct oc_table *t, const char *topic, const struct cfg *cf, struct err *e);

size_t oc_count(const struct oc_table *t);
/* The entry of event id, or -1. */
long oc_find(const struct oc_table *t, const char *id);
double oc_value(const struct oc_table *t, long k);
/* Marks entry k joined to a prediction; 1 if it already was (a redelivered
 * duplicate: the first prediction counts), 0 if not. */
int oc_join(struct oc_table *t, long k);
/* Entries no prediction was joined to. */
size_t oc_unjoined(const struct oc_table *t);

#endif
