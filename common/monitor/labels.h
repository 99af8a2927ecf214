/* common/monitor/labels.h: labels joined to predictions (prefix labels_).
 *
 * Outcomes arrive later than predictions, on a `labels` topic (Avro
 * LabelEvent, schemas/label_event.avsc: event_id, label 0/1, label_time).
 * Each prediction's score is kept in Redis under
 * <redis.prefix>pending:{model}:{event_id} with a TTL (the label horizon,
 * monitor.labels.ttl_s); a label takes its prediction with GETDEL and the
 * (score, label) pair goes to the monitor's rolling AUC (mon_observe_label).
 * A label without a pending prediction (expired, never scored, or already
 * joined) is counted as unmatched. Labels are monitoring data: one whose
 * join fails because Redis is down is counted as lost and its offset still
 * committed; predictions are never affected.
 *
 * Fairness by outcome: a prediction remembered with its decision and its
 * fairness group (labels_remember_decision) is stored as "score approved
 * group"; its label then also goes to mon_observe_outcome (TPR and FPR per
 * group), in the group of the label record's field when
 * monitor.fairness.label_field names one (a protected attribute known only
 * at labelling time; a field of schemas/label_event.avsc, else refused at
 * open), else in the decision's group.
 *
 * The labels consumer joins its own group (monitor.labels.group, default
 * "<group.id>-labels"), so worker instances share the topic.
 * One thread uses a handle (the worker's).
 */
#ifndef STREAMML_LABELS_H
#define STREAMML_LABELS_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "err.h"
#include "monitor.h"
#include "state.h"

struct labels_opts {
    const char *topic, *group, *schemas_dir, *model;
    const struct cfg_kv *props;          /* librdkafka passthrough */
    size_t n_props;
    struct state_redis_opts redis;       /* host, port, password, prefix, timeout_ms */
    int ttl_s;                           /* of a pending prediction */
    const char *label_field;             /* NULL/"" or the LabelEvent field of the groups */
};

struct labels_stats {
    uint64_t remembered, labels, joined, unmatched, bad, lost;
};

struct labels;

/* NULL with the reason in *e. */
struct labels *labels_open(const struct labels_opts *o, struct err *e);
/* From monitor.labels.* and redis.* keys: NULL with e->code == ERR_OK when
 * monitor.labels.topic is empty (off). */
struct labels *labels_open_cfg(const struct cfg *c, const char *group_id, struct err *e);
void labels_close(struct labels *l); /* NULL-safe */

/* Queues a prediction's score; written by labels_flush. */
void labels_remember(struct labels *l, const char *event_id, double score);
/* The same with its decision (approved 0/1; -1 none) and fairness group
 * (mon_fair_group; NULL: none, or the label record's field names it). */
void labels_remember_decision(struct labels *l, const char *event_id, double score,
                              const char *group, int approved);
/* Writes the queued predictions in one round trip (pipelined SET .. EX).
 * On failure they are dropped, counted as lost and logged (once until it
 * works again); returns the error (e may be NULL). */
int labels_flush(struct labels *l, struct err *e);
/* Takes up to max labels that have arrived (waiting at most timeout_ms for
 * the first), joins them and feeds m. Returns the number joined. */
size_t labels_poll(struct labels *l, struct mon *m, int timeout_ms, size_t max);
void labels_get_stats(const struct labels *l, struct labels_stats *s);

#endif
