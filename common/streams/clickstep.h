/* common/streams/clickstep.h: the clickstream step of one batch (prefix cstep_).
 *
 * What the live worker (workers/clickstream), `streamml replay` and
 * `streamml click-eval` share: a click advancing its session (one GRU step
 * of the hidden state; an unknown item is counted and keeps the state), and
 * for the worker and replay the whole decision for a batch of clicks:
 *
 *   session states of the batch (one state_get_many, pipelined)
 *     -> per click, unless the state already holds it (a redelivery, same
 *        partition and offset not newer): the session advances
 *     -> candidates: trending (co-visitation store) then the model's popular
 *        items, the co-visited items of each session's last item
 *     -> scores over the catalog, score_batch sessions per sgemm (or the IVF
 *        index, clickstream.search=ivf), the session's items excluded, an
 *        optional second-stage ranker re-scoring each micro-batch's pools in
 *        one run (common/streams/ranker.h), MMR, epsilon-greedy exploration
 *        (source and propensity per item)
 *   then, apart (after the caller has sent the predictions):
 *     co-visitation and trending counts of the fresh clicks, then one state
 *     put per session that moved, at its last click's position.
 *
 * There is no other implementation of this step. Each click's answer
 * depends on its session's clicks before it, the candidate lists read for
 * its batch and (epsilon > 0) the random draws, not on which other
 * sessions share its batch: with clickstream.epsilon 0 and no co-visitation
 * store, a replay gives the worker's items in the worker's order.
 */
#ifndef STREAMML_CLICKSTEP_H
#define STREAMML_CLICKSTEP_H

#include <stddef.h>
#include <stdint.h>

#include "ann.h"
#include "cfg.h"
#include "click_event.h"
#include "covis.h"
#include "err.h"
#include "session.h"
#include "state.h"

/* A fresh click on item: a known item takes one GRU step of h, sets
 * *has_h and returns 1; an item outside the catalog leaves h as it is and
 * returns 0 (the caller counts it). scratch: 6 * hidden floats. */
int cstep_advance(const struct sess_model *m, int64_t item, float *h, int *has_h, float *scratch);

/* clickstream.search=ivf (or search, when not NULL: "exact" or "ivf"): the
 * IVF index over m's output layer from clickstream.ivf_lists/ivf_probe
 * (seeded: the same clusters every time) with a query scratch for ktop
 * items, logged once; *ann and *q stay NULL for exact search. */
int cstep_search_open(const struct cfg *cf, const char *search, const struct sess_model *m,
                      int ktop, struct ann **ann, struct ann_query **q, struct err *e);

/* The co-visitation store (common/streams/covis.h) on the Redis of ro (host,
 * port, ACL user, password, prefix, timeout) with clickstream.covisit_ttl_s and
 * trending_half_life_s; *out NULL when clickstream.covisit is 0. */
int cstep_cov_open(const struct cfg *cf, const struct state_redis_opts *ro, struct cov **out,
                   struct err *e);

struct cstep;

/* What the steps did since open, for the caller's summary. */
struct cstep_counts {
    uint64_t cold, unknown, redelivered, bad_state, explored, shown, batches, rows, cov_errors,
        state_errors;
    uint64_t cov_redelivered, cov_fenced; /* clicks the counts skipped or refused */
    uint64_t by_source[REC_NSOURCES];     /* items shown, per (first) source */
    uint64_t new_shown, new_clicks;       /* impressions and clicks of new items */
    uint64_t reassigned; /* stored states recomputed by another arm's GRU (the arm changed) */
};

/* The model (clickstream.model), ranking (clickstream.k, candidates,
 * lambda_diversity, mmr_similarity, epsilon, seed: 0 draws one), search and batch scratch for up
 * to cap clicks; st (required) and cov (NULL: no co-visitation, trending
 * from the model's popular list only) are borrowed. Reads
 * clickstream.history, score_batch, blas_threads, state.retry_budget_ms.
 * ERR_CONFIG naming the option. */
int cstep_open(struct cstep **out, const struct cfg *cf, size_t cap, struct state *st,
               struct cov *cov, struct err *e);
void cstep_close(struct cstep *c); /* NULL-safe */

/* Before a newly opened step serves (a model reload): one session of the
 * model's most popular item (item 0 without a popular list) stepped from a
 * zero state and ranked over the catalog. ERR_CONFIG naming the model when
 * the state or a score is not finite, or no item comes out. */
int cstep_smoke(struct cstep *c, struct err *e);
/* to's counts continue from's (a reloaded step keeps the totals). */
void cstep_carry(struct cstep *to, const struct cstep *from);

const struct sess_model *cstep_model(const struct cstep *c);
const char *cstep_model_path(const struct cstep *c); /* the file it was opened from */
const struct cstep_counts *cstep_counts(const struct cstep *c);
int cstep_ivf(const struct cstep *c); /* 1: candidates from the IVF index */

/* Item ids the ranking has room for: clickstream.catalog_max_items, 0
 * meaning twice the model's items (the catalogue's new items past them). */
int64_t cstep_catalog_ids(const struct cfg *cf, int64_t model_items);
/* The item catalogue the sources read (borrowed; NULL: none). It needs
 * clickstream.sources and at most cstep_catalog_ids ids: ERR_CONFIG. */
struct catalog;
int cstep_set_catalog(struct cstep *c, struct catalog *cat, struct err *e);

/* One click of a batch; ev NULL: not a click (dead-lettered), skipped. */
struct cstep_click {
    const struct click_event *ev;
    const char *topic; /* the source, for the prediction */
    int32_t partition;
    int64_t offset;
    int arm; /* the arm that ranks it (cstep_arms; 0 without arms) */
};

/* Experiment arms (the clickstream's variants, common/streams/clickexp.h):
 * n ranking contexts over the same model and candidates, arm a with its
 * own MMR weight and exploration rate (and its own seeded draws); a click
 * is ranked by its cstep_click.arm. Arms >= shadow_from (shadow mode) rank
 * every click too, beside the served one: cstep_shadow(c, i, a) after
 * cstep_batch. Call once after cstep_open (a reloaded step again). */
#define CSTEP_MAX_ARMS 8
int cstep_arms(struct cstep *c, size_t n, const double *lambda_diversity, const double *epsilon,
               size_t shadow_from, struct err *e);
/* Arm a's own GRU (paths[a]; NULL, "", "-" or clickstream.model's path:
 * clickstream.model), after cstep_arms and before cstep_arm_rankers. It
 * must have clickstream.model's items and hidden size, else ERR_CONFIG
 * naming the arm (names[a]) and the file. A session is served by one arm
 * (sticky), so its one stored state is its arm's GRU's, tagged by the arm
 * (sess_state.owner): a state tagged by another GRU (the arm split or a
 * user id changed) is recomputed by the new arm's GRU from the session's
 * stored items (the last clickstream.history; counted as reassigned). A
 * shadow arm with its own GRU ranks each click from a state recomputed the
 * same way, never stored. Arms sharing a file share the model; with IVF
 * each GRU gets its own index. cstep_smoke checks every GRU. */
int cstep_arm_models(struct cstep *c, size_t n, const char *const *paths,
                     const char *const *names, struct err *e);
/* Arm a's second-stage ranker (common/streams/ranker.h): paths[a] NULL or
 * "" keeps clickstream.ranker, "-" none; its features from the arm's GRU.
 * After cstep_arm_models; ERR_CONFIG naming the file that does not fit. */
int cstep_arm_rankers(struct cstep *c, size_t n, const char *const *paths, struct err *e);
/* Arm a's ranker (a < 0: without arms), NULL none; for tests and tools. */
struct rk;
struct rk *cstep_ranker(const struct cstep *c, int a);
/* The model files a reload watches: the GRU's, the arms' own GRUs', then
 * the rankers'. */
size_t cstep_files(const struct cstep *c, const char **paths, size_t cap);
/* Shadow arm a's ranking of click i of the last batch (ids and flags as
 * the served one); NULL when a is not a shadow arm or i not a click. */
const struct click_prediction *cstep_shadow(const struct cstep *c, size_t i, size_t a);

/* Decides the batch's n clicks (n <= cap): out[i] filled for each click
 * with ev (ids, source, model, items, flags; latency_us left 0). Returns 1
 * when the states could not be read (the batch is answered from itself
 * alone, flagged degraded, and cstep_store keeps nothing), else 0. */
int cstep_batch(struct cstep *c, size_t n, const struct cstep_click *in,
                struct click_prediction *out);

/* Stores what the last cstep_batch moved: the counts of its fresh clicks
 * of known items, then (only if they were counted) one put per session at
 * its last click's position. Failures are logged and counted: the clicks
 * are then answered again from the old state after a restart. */
void cstep_store(struct cstep *c);

/* The worker's summary lines: messages in secs, predictions (degraded of
 * them) as published, and the step's counts. */
void cstep_log_summary(const struct cstep *c, double secs, uint64_t messages,
                       uint64_t predictions, uint64_t degraded);

#endif
