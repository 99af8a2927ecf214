/* common/streams/clickexp.h: experiments and outcomes of the clickstream (prefix cx_).
 *
 * Experiments through the shared experiment module (common/streams/abtest.h):
 * experiment.id / salt / mode / variants name the arms and their shares;
 * a click is assigned by clickstream.experiment_unit (user: its user id,
 * or its session id for an anonymous click; session: its session id),
 * sticky (the same SHA-256 assignment as the transactions worker). An arm
 * is a ranking variant: clickstream.arms gives an arm its own GRU (model=,
 * or the variant's model in experiment.variants; the same items and
 * hidden size as clickstream.model), MMR weight, exploration rate and
 * second-stage ranker model (common/streams/ranker.h; "-": none)
 *
 *   clickstream.arms=explore:epsilon=0.2:lambda_diversity=0.3,calm:ranker=r2.onnx,b:model=g2.onnx
 *
 * (an arm not listed ranks with clickstream.model/lambda_diversity/epsilon/
 * ranker). A session's one state is its serving arm's GRU's: see
 * cstep_arm_models (clickstep.h) for re-assignment and shadow arms. split: each click is
 * ranked by its arm; shadow: the first arm serves every click and the
 * others rank it too, logged to experiment.shadow_topic. The prediction
 * carries experiment_id and variant (the serving arm).
 *
 * Outcomes (clickstream.outcomes_topic non-empty, Redis state): each
 * published recommendation and the session's later events on its items are
 * joined by common/streams/clickout.h, exactly once per input offset, into
 * outcome records (schemas/click_outcome.avsc) for the worker to publish.
 */
#ifndef STREAMML_CLICKEXP_H
#define STREAMML_CLICKEXP_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "click_event.h"
#include "clickstep.h"
#include "err.h"
#include "state.h"

struct cx;

/* The experiment, arms and outcome join of cf (ro: the Redis of the
 * worker, st its state store for the partitions' epochs; both may be NULL
 * when outcomes are off). ERR_CONFIG naming the key. *out is never NULL on
 * success (no experiment, no outcomes: a pass-through). */
int cx_open(struct cx **out, const struct cfg *cf, const struct state_redis_opts *ro,
            struct state *st, size_t cap, struct err *e);
void cx_close(struct cx *x); /* NULL-safe */

/* Gives cs the arms (cstep_arms); a step without arms is left as it is. */
int cx_arms(const struct cx *x, struct cstep *cs, struct err *e);
/* The arm that ranks ev (0 without an experiment; shadow: 0). */
int cx_assign(const struct cx *x, const struct click_event *ev);
/* p's experiment_id and variant: the serving arm's. */
void cx_label(const struct cx *x, int arm, struct click_prediction *p);
size_t cx_num_arms(const struct cx *x);
size_t cx_shadow_from(const struct cx *x); /* == cx_num_arms without shadow arms */
const char *cx_arm_name(const struct cx *x, size_t a);
const char *cx_shadow_topic(const struct cx *x); /* NULL: no shadow arms */

/* Outcomes: NULL when off. */
const char *cx_outcomes_topic(const struct cx *x);

/* How cx_put is asked to send: a record whose delivery acknowledges click
 * i's state part, an untracked record, or no record (acknowledge i now). */
enum { CX_ACKS = 0, CX_UNTRACKED, CX_ACK_NOW };
typedef int (*cx_put_fn)(void *opaque, const char *topic, const char *key, const void *val,
                         size_t len, size_t i, int how, struct err *e);

/* Outcomes off: returns 0 (the caller acknowledges the clicks). Else joins
 * the batch's n clicks (in[i].ev NULL: skipped; preds[i]: the published
 * recommendation of click i, none when degraded) and sends each click's
 * outcome records, key session id, to the outcomes topic, the last one
 * CX_ACKS (the click's offset is committed only once its outcomes are
 * delivered), or CX_ACK_NOW for a click without any; returns 1. A failed
 * join or send is logged and the click acknowledged: a partition never
 * stalls (those outcomes are lost, counted in errors). */
struct codec;
int cx_publish(struct cx *x, struct codec *cd, size_t n, const struct cstep_click *in,
               const struct click_prediction *preds, cx_put_fn put, void *opaque);
/* Shadow arms: each one's ranking of each click (cstep_shadow) to
 * cx_shadow_topic, CX_UNTRACKED (best effort). No-op without shadow arms. */
void cx_shadow(struct cx *x, struct codec *cd, const struct cstep *cs, size_t n,
               const struct cstep_click *in, cx_put_fn put, void *opaque);

/* Outcome counts since open, for the summary. */
struct cx_counts {
    uint64_t joined, impressions, clicks, carts, purchases, redelivered, fenced, errors;
};
const struct cx_counts *cx_counts(const struct cx *x);
/* The outcome counts in one log line (the worker's summary); nothing when
 * outcomes are off. */
void cx_log_counts(const struct cx *x);

#endif
