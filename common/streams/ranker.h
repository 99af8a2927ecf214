/* common/streams/ranker.h: the second-stage ranker of the clickstream (prefix rk_).
 *
 * An ONNX model (clickstream.ranker, or an experiment arm's ranker=PATH)
 * scoring (session state, candidate) pairs: graph inputs "h" float [n, H]
 * (the session's GRU hidden state, H the GRU model's) and "x" float [n, F]
 * (the candidate's features, below), one output of n scores ([n] or
 * [n, 1]); metadata ranker_features=v1. Names, types and dims are checked
 * at open, and one run on two pairs must give two finite scores: a model
 * that does not fit is refused with one line naming what mismatches.
 *
 * Features "v1" (F = E + 17, E the GRU model's embedding size), built by
 * rk_features and by models/clickstream/train_ranker.py alike:
 *   [0, E)  the item's embedding row of the GRU model (zeros: a new item)
 *   E + 0   first-stage relevance (GRU logit; a new item: the pool's lowest)
 *   E + 1   1: the model has a row for the item
 *   E + 2   1: the item is in the catalogue
 *   E + 3   log1p(price), E + 4 log1p(age in days at the click) (catalogue)
 *   E + 5   1: same category as the session's last item (catalogue)
 *   E + 6   1: same region as the session's last item (catalogue)
 *   E + 7.. one flag per source that proposed it (REC_NSOURCES, in the
 *           order of enum rec_source)
 * Category and region enter as matches with the session's last item, not
 * as codes: the catalogue numbers them in arrival order, per worker.
 *
 * Batching: the clickstream step defers each warm click's ranking
 * (rk_defer: its candidate pool is built and kept, common/models/session.h
 * rec_pool_build), and rk_flush scores every kept pair of a micro-batch in
 * one run per ranker model, then finishes each click in order
 * (rec_rank_pool: MMR on the ranker's scores, exploration) and hands its
 * items to the caller. Cold clicks (no hidden state) are not re-scored.
 */
#ifndef STREAMML_RANKER_H
#define STREAMML_RANKER_H

#include <stddef.h>
#include <stdint.h>

#include "catalog.h"
#include "cfg.h"
#include "err.h"
#include "session.h"

#define RK_NFIXED 7 /* features after the embedding, before the source flags */

/* Features per candidate for model m: E + RK_NFIXED + REC_NSOURCES. */
int rk_num_features(const struct sess_model *m);
/* x[0..rk_num_features) of item for a session whose last item is last (-1
 * none) at now_ms; cat may be NULL (catalogue features 0). */
void rk_features(const struct sess_model *m, const struct catalog *cat, int64_t last,
                 int64_t now_ms, int64_t item, float rel, unsigned sources, float *x);

/* One ranker model and its pending pairs. */
struct rk;

/* Options of every ranker of a step. */
struct rk_opts {
    int candidates; /* clickstream.ranker_candidates: pool kept per click (0: all) */
    int batch;      /* clickstream.ranker_batch: pairs per run (at least one pool) */
};

/* Opens and checks path against m (see above): ERR_CONFIG naming the file
 * and what mismatches. */
int rk_open(struct rk **out, const char *path, const struct sess_model *m,
            const struct rk_opts *o, struct err *e);
void rk_close(struct rk *r); /* NULL-safe */
const char *rk_path(const struct rk *r);
const char *rk_name(const struct rk *r);    /* metadata model_name, else "ranker" */
const char *rk_version(const struct rk *r); /* metadata model_version, else "0" */

/* Scores n pairs (h: n x H, x: n x F, row-major) in one run. */
int rk_score(struct rk *r, size_t n, const float *h, const float *x, float *scores,
             struct err *e);

/* The finished ranking of one deferred click: slot is the caller's (its
 * arm), items are valid during the call. */
typedef void (*rk_emit_fn)(void *opaque, size_t click, size_t slot, const struct rec_item *items,
                           size_t n);

/* One warm click to rank: in as for rec_rank (in->h set); the fields
 * rec_rank_pool reads (exclude, h, present, boosted) must stay valid until
 * rk_flush, except boosted (copied). */
struct rk_click {
    struct rec_ctx *rc;
    const struct rec_input *in;
    const struct catalog *cat; /* NULL: none */
    int64_t now_ms;
    size_t click, slot;
};

/* Builds the click's pool and keeps it; flushes first (emit) when the
 * pending pairs would pass the batch. */
void rk_defer(struct rk *r, const struct rk_click *k, rk_emit_fn emit, void *opaque);
/* Scores the pending pairs in one run and emits each deferred click in
 * the order deferred. A failed run (logged, counted) finishes them on the
 * first-stage relevance. */
void rk_flush(struct rk *r, rk_emit_fn emit, void *opaque);

/* After the last flush: pairs scored, runs, failed runs, CPU microseconds
 * (the thread's) in features + runs. */
struct rk_counts {
    uint64_t pairs, runs, failed, clicks, us;
};
const struct rk_counts *rk_counts(const struct rk *r);
/* The last flush's pool of deferred click i (in order deferred), its
 * score the ranker's, for tests; 0 past the end. */
size_t rk_last_pool(const struct rk *r, size_t i, const struct rec_cand **pool);

/* ---- the rankers of a step: clickstream.ranker and the arms' ---- */

#define RK_MAX_ARMS 8
struct rk_set;
/* clickstream.ranker (empty: none), ranker_candidates and ranker_batch
 * for model m; ERR_CONFIG naming the key or the file. */
int rk_set_open(struct rk_set **out, const struct cfg *cf, const struct sess_model *m,
                struct err *e);
void rk_set_close(struct rk_set *s); /* NULL-safe */
/* Arm a's ranker: path NULL or "" keeps clickstream.ranker, "-" none; a
 * file already open (the default's, another arm's) over the same GRU is
 * shared. m: the arm's GRU (its embeddings are features; NULL: the set's);
 * another GRU gets its own copy of the file, checked against it. */
int rk_set_arm(struct rk_set *s, size_t a, const char *path, const struct sess_model *m,
               struct err *e);
/* The ranker of arm a (a < 0: without arms); NULL: none. */
struct rk *rk_set_get(const struct rk_set *s, int a);
/* rk_flush of every ranker. */
void rk_set_flush(struct rk_set *s, rk_emit_fn emit, void *opaque);
/* The open rankers' files (hot reload watches them); how many written. */
size_t rk_set_files(const struct rk_set *s, const char **paths, size_t cap);
/* One summary line per ranker: clicks, pairs, runs, microseconds per click. */
void rk_set_log(const struct rk_set *s);

#endif
