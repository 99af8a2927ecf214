/* common/streams/txn.h: the transactions scoring step (prefix txn_).
 *
 * What the live worker, `streamml replay` and `streamml featurize` share
 * beyond the feature module: one event's step against its user's state
 * (features from the state before it, then the state advanced unless it
 * already holds that event) and the scoring of a feature vector into a
 * prediction (gbdt P(bad), scorecard points and reason codes, decision,
 * feature hash). There is no other implementation of either anywhere.
 *
 * Ordering policy (online and offline alike): a user's state is advanced in
 * the order its events arrive on their partition (offset order); an event
 * older than the user's newest one is a late event and follows the late
 * policy of feat_state_update (common/streams/FEATURES.md). Nothing is re-sorted
 * inside a partition, so a replay reproduces the worker's features exactly.
 */
#ifndef STREAMML_TXN_H
#define STREAMML_TXN_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "err.h"
#include "event.h"
#include "features.h"

/* x = features of ev from the state before it. Then, unless the state
 * already holds the event (a redelivery: same partition, offset not newer
 * than the last one applied from that partition, or the same event_id
 * within the dedup horizon: feat_state_seen), the state advances and its
 * position moves there. Returns 1 when applied, 0 for a redelivery or a
 * duplicate. Pure but for the process-wide dedup horizon. */
int txn_step(const struct txn_event *ev, int32_t partition, int64_t offset, struct feat_state *s,
             int32_t *s_partition, int64_t *s_offset, float *x);

/* A user's state and the position of the last event applied to it from
 * its stored blob (len 0: none, position -1/-1). A corrupt blob gives a
 * fresh state and ERR_DECODE with the reason (the caller logs it). */
int txn_state_load(struct feat_state *s, int32_t *s_partition, int64_t *s_offset,
                   const unsigned char *blob, size_t len, int32_t partition, int64_t offset,
                   struct err *e);

struct txn_scorer;

/* Loads model.gbdt and model.scorecard, maps their features to txn-v1 by
 *  name (by position when unnamed: then the width must be the spec's) and
 * reads model.name, model.version and the decision.* thresholds. NULL with
 * the culprit in *e (ERR_CONFIG for an unknown feature name). */
struct txn_scorer *txn_scorer_open(const struct cfg *cf, struct err *e);
/* The same with the gbdt model from gbdt instead of model.gbdt (a variant
 * of an experiment, common/streams/abtest.h). */
struct txn_scorer *txn_scorer_open_gbdt(const struct cfg *cf, const char *gbdt, struct err *e);
void txn_scorer_close(struct txn_scorer *s); /* NULL-safe */
struct metrics;
/* Explanations then count in m (streamml_explanations_total and
 * streamml_explain_seconds_total); m NULL: not counted. Before scoring. */
void txn_scorer_set_metrics(struct txn_scorer *s, struct metrics *m);
/* Explanations made so far and their total cost in ns (any thread may read
 * these approximately; the scorer's thread writes them). */
void txn_scorer_explain_stats(const struct txn_scorer *s, uint64_t *explained, uint64_t *ns);
size_t txn_scorer_num_trees(const struct txn_scorer *s);

/* Fills p's model part from x[feat_txn_dim()]: model name and version,
 * feature version, probability, score, score_probability, decision,
 * feature_hash; for the decisions in explain.decisions (review, decline by
 * default) the reasons of the gbdt that decided: its PRED_REASONS largest
 * positive TreeSHAP values (features pushing towards bad), their texts from
 * model.reasons and values; for review/decline the scorecard's own reason
 * codes in card_reasons. Returns the decision index
 * (0 approve, 1 review, 2 decline). Not thread-safe (scratch rows). */
int txn_score(struct txn_scorer *s, const float *x, struct txn_prediction *p);

/* The same for n vectors x[n][feat_txn_dim()] into p[0..n) (ids already
 * set), the trees walked a block of rows at a time (gbdt_predict_batch,
 * which equals gbdt_predict bit for bit); decisions_out[d] += 1 per
 * decision. ERR_NOMEM if the scratch rows cannot grow. */
int txn_score_batch(struct txn_scorer *s, const float *x, size_t n, struct txn_prediction *p,
                    uint64_t decisions_out[3]);

/* p zeroed, then the event's ids, time and source position. */
void txn_prediction_init(struct txn_prediction *p, const struct txn_event *ev,
                         const char *src_topic, int32_t src_partition, int64_t src_offset);

/* "approve", "review", "decline" for 0..2, and back (0 for anything else). */
const char *txn_decision_name(int d);
int txn_decision_index(const char *name);

/* monitor.fairness.field: the TransactionEvent field whose value groups
 * decisions in the monitor's fairness check, resolved once: *field is its
 * index, or -1 when the key is empty. ERR_CONFIG naming the key and the
 * fields for an unknown one. */
int txn_fair_field(const struct cfg *cf, int *field, struct err *e);
/* ev's fairness group into buf[0..cap): the field's value as text,
 * "missing" when it has none (as `streamml report --fairness-field` names
 * a null); NULL when field < 0. */
const char *txn_fair_group(int field, const struct txn_event *ev, char *buf, size_t cap);
struct mon;
/* The decision made for ev (vector x) into the monitor's fairness check:
 * its group by field (txn_fair_field; -1: the monitor's own feature, if
 * any), approved when decision is "approve". */
void txn_observe_decision(struct mon *m, int field, const struct txn_event *ev, const float *x,
                          const char *decision);
struct labels;
/* The prediction of ev (vector x) remembered for its label
 * (labels_remember_decision): score, decision and m's fairness group
 * (mon_fair_group; none when m is NULL), for TPR/FPR per group live. */
void txn_remember(struct labels *l, const struct mon *m, int field, const struct txn_event *ev,
                  const float *x, const char *event_id, double score, const char *decision);

#endif
