/* common/models/session.h: session-based recommendations with a GRU (prefixes sess_, rec_).
 *
 * The model is a GRU4Rec-style ONNX file written by models/clickstream/train.py
 * (item embedding -> one GRU layer -> Linear over the catalog). It is opened
 * with the shared ONNX runtime (onnx_open: ops, opset and shapes checked),
 * then its weights are read BY NAME from the initializers: emb.weight
 * [items, E], gru.W [1, 3H, E], gru.R [1, 3H, H], gru.B [1, 6H] (ONNX gate
 * order z, r, h; the runtime refuses a GRU without linear_before_reset=1, so
 * these are torch's semantics), out.weight ([H, items] or [items, H] per the
 * out_weight_layout metadata) and out.bias [items]. The graph itself is not
 * run per click: a click advances a session's hidden state by one GRU step
 * (sess_step, O(E*H + H*H), independent of the session's length), and the
 * scores of many sessions' states are one OpenBLAS sgemm (sess_scores).
 *
 * rec_rank turns scores into the items shown: candidates (top GRU scores,
 * co-visited and popular items; items already in the session excluded),
 * MMR re-ranking over the similarity (cosine or dot product) of item
 * embeddings, then
 * epsilon-greedy exploration, each shown item with its source and its
 * propensity (the probability the policy shows that item in that slot,
 * given the earlier slots), for counterfactual evaluation.
 *
 * A model is read-only after open: one may be shared by threads.
 */
#ifndef STREAMML_SESSION_H
#define STREAMML_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define SESS_MAX_HIDDEN 1024
#define SESS_MAX_HISTORY 64 /* items kept per session (state and exclusion) */
#define SESS_MAX_CART 16    /* cart items kept per session (the cart source) */
#define REC_MAX_K 64        /* items shown per recommendation */
#define REC_MAX_CANDIDATES 5000 /* GRU candidates (clickstream.candidates or its quota) */
#define REC_MAX_POOL 5000       /* candidates of all sources together */

struct sess_model;

/* Opens and checks path: the initializers above with consistent shapes,
 * finite weights, items >= 2, hidden <= SESS_MAX_HIDDEN. ERR_CONFIG naming
 * the file and the initializer on a mismatch. */
int sess_model_open(struct sess_model **out, const char *path, struct err *e);
void sess_model_close(struct sess_model *m); /* NULL-safe */

int64_t sess_model_items(const struct sess_model *m);
int sess_model_hidden(const struct sess_model *m);
const char *sess_model_name(const struct sess_model *m);
const char *sess_model_version(const struct sess_model *m);
/* Row i of the unit-normalised embedding (for MMR); i must be in range. */
const float *sess_model_unit_embedding(const struct sess_model *m, int64_t i);
/* Row i of the embedding as trained (MMR's dot-product similarity). */
const float *sess_model_embedding(const struct sess_model *m, int64_t i);
/* Most clicked training items (metadata "popular"), the cold-start list of
 * last resort; *n = 0 if the model has none. */
const int64_t *sess_model_popular(const struct sess_model *m, size_t *n);

/* One GRU step: h (hidden floats) <- GRU(embedding[item], h). Scratch
 * needs 6 * hidden floats. ERR_INVALID if item is outside the catalog (h
 * unchanged). */
int sess_step(const struct sess_model *m, int64_t item, float *h, float *scratch, struct err *e);

/* scores (n x items, row-major) = h (n x hidden) . out.weight + out.bias,
 * one sgemm for the n sessions. */
void sess_scores(const struct sess_model *m, size_t n, const float *h, float *scores);

/* The best k items of each of n sessions by score, best first, into
 * out[i * k ...]: blocked over the catalog (SESS_BLOCK items at a time, one
 * sgemm per block for the n sessions) with the top-k kept on the fly, so
 * the n x items score matrix is never written out. block needs
 * min(n, 256) * SESS_BLOCK floats. Ties go to the lower item id; NaN never ranks. */
#define SESS_BLOCK 2048
struct sess_top {
    int64_t item;
    float score;
};
void sess_topk(const struct sess_model *m, size_t n, const float *h, int k, struct sess_top *out,
               float *block);
/* The k-best heap behind sess_topk, for other searches over the same
 * scores (common/models/ann.c): hp holds *hn <= k entries, its root the worst kept
 * (lower score, or equal score and higher id). Callers may skip x when *hn
 * == k and x.score < hp[0].score (most items): it would not be kept. */
void sess_top_offer(struct sess_top *hp, int *hn, int k, struct sess_top x);
/* Sorts the hn kept entries best first and pads hp[hn..k) with item -1. */
void sess_top_finish(struct sess_top *hp, int hn, int k);
/* Keeps the k best of t[0..*n) (sess_topk's order: a higher score, then a
 * lower id; no NaN) in t[0..k), in no particular order, sets *n = k and
 * returns the k-th best score (nothing below it can enter any more); with
 * *n <= k it keeps all and returns the lowest; k < 1 keeps none (+inf).
 * scratch: *n floats. A float
 * selection, one filtering pass and no sort: what a pool of thousands of
 * candidates needs (the qsort of sess_top_finish was a quarter of a click). */
float sess_top_keep(struct sess_top *t, int *n, int k, float *scratch);
/* The output layer, read-only, for searches over it (common/models/ann.c):
 * out.weight (*out_in 1: items rows of hidden floats; 0: hidden rows of
 * items floats) and out.bias [items]; they live as long as m. */
void sess_model_output(const struct sess_model *m, const float **w, const float **b, int *out_in);
/* One item's score for one hidden state (h . out.weight[item] + bias). */
float sess_score_one(const struct sess_model *m, const float *h, int64_t item);
/* out[i] = sess_score_one(m, h, items[i]) for n items, NaN for an id
 * outside the model (a new item): the rows are prefetched a few items
 * ahead, for a pool of candidates scattered over a catalogue that does not
 * fit in the cache. */
void sess_score_many(const struct sess_model *m, const float *h, const int64_t *items, size_t n,
                     float *out);

/* ---- ranking ---- */

/* Where a shown item came from. The first four are the sources of the
 * first release (their numbers are kept); REC_EXPLORE_NEW is the boosted
 * exploration of new items. */
enum rec_source {
    REC_GRU = 0,
    REC_COVISIT,
    REC_POPULAR, /* trending, then the model's popular items */
    REC_EXPLORE,
    REC_CATEGORY,    /* most clicked items of the session's recent items' categories */
    REC_REGION,      /* most clicked items of the session's region */
    REC_CART,        /* the session's cart (event_type cart, not purchased) */
    REC_NEW,         /* new arrivals */
    REC_CONTENT,     /* content neighbours (catalogue embeddings) never seen by the GRU */
    REC_EXPLORE_NEW, /* boosted exploration of new items */
    REC_NSOURCES
};
const char *rec_source_name(enum rec_source s); /* "gru", "covisit", ... */
/* The source named name (aliases: covis, trending); -1 unknown. */
int rec_source_by_name(const char *name);

struct rec_opts {
    int k;             /* items shown, 1..REC_MAX_K (default 10) */
    int candidates;    /* top GRU scores considered (the GRU's quota), 1..REC_MAX_CANDIDATES */
    double lambda_diversity; /* MMR's weight of the diversity term: 0 = relevance
                                only, 1 = diversity only (default 0.5) */
    int mmr_dot;             /* MMR similarity: 0 cosine (default), 1 dot product */
    double epsilon;    /* exploration probability per slot, 0..1 (default 0.05) */
    /* Sources and pools (0: the first release's behaviour) */
    int64_t ids;        /* item ids ranked: 0..ids-1, >= the model's items (new items
                           have ids past the model's); 0: the model's items */
    int pool;           /* most candidates of one union, <= REC_MAX_POOL; 0: candidates + 2k */
    int mmr_pool;       /* MMR re-ranks the mmr_pool most relevant candidates; 0: all */
    double new_epsilon; /* per slot, the share drawn from the boosted new items */
};

struct rec_item {
    int64_t item;
    float score; /* the GRU score (logit); popularity relevance 0..1 when cold */
    enum rec_source source; /* the first source that proposed it */
    double propensity;
    unsigned sources; /* bit (1 << source) per source that proposed it */
};

/* One more candidate source: up to quota of its usable items, best first. */
struct rec_list {
    enum rec_source source;
    const int64_t *items;
    size_t n;
    int quota;
};

struct rec_input {
    const float *scores;        /* the session's catalog scores; NULL: see top */
    const struct sess_top *top; /* or its best items (sess_topk; any order) ... */
    size_t n_top;
    const float *h;         /* ... and its hidden state (other items' scores);
                               scores, top and h all NULL: cold start */
    const int64_t *exclude; /* items already in the session */
    size_t n_exclude;
    const int64_t *covisit; /* co-visited with the last item, best first (may be 0) */
    size_t n_covisit;
    const int64_t *popular; /* popular/trending items, best first */
    size_t n_popular;
    /* Sources by quota (o.ids and o.pool set): when n_lists > 0 these
     * replace covisit and popular above. REC_CART items may be in the
     * session (they are not excluded). */
    const struct rec_list *lists;
    size_t n_lists;
    /* Ids >= the model's items: present[id] 1 for an item of the catalogue
     * (candidates, exploration pool); NULL: none. n_present of them. */
    const unsigned char *present;
    int64_t n_present;
    /* New items in their boost period: o.new_epsilon of each slot */
    const int64_t *boosted;
    size_t n_boosted;
};

struct rec_ctx;
/* Scratch for rec_rank, sized for m and o (checked: ERR_CONFIG naming the
 * option). seed makes exploration reproducible. */
int rec_ctx_open(struct rec_ctx **out, const struct sess_model *m, const struct rec_opts *o,
                 uint64_t seed, struct err *e);
void rec_ctx_close(struct rec_ctx *c); /* NULL-safe */

/* Fills out[0..*n) (*n <= k; fewer only when the catalog minus the session
 * has fewer items). Ids in covisit/popular outside the catalog are skipped. */
void rec_rank(struct rec_ctx *c, const struct rec_input *in, struct rec_item *out, size_t *n);

/* rec_rank in two halves, for a second-stage ranker that re-scores the
 * pools of many clicks at once (common/streams/ranker.h): the union of in's
 * candidates, the keep most relevant kept (0: all), copied to pool (at most
 * cap); then the ranking of such a pool, its rel as relevance (MMR's, after
 * rec_opts.mmr_pool) and its score as the items' score. With the pool
 * unchanged and keep 0, the two give rec_rank's items. */
struct rec_cand {
    int64_t item;
    float rel, score;
    enum rec_source src;
    unsigned mask;
};
size_t rec_pool_build(struct rec_ctx *c, const struct rec_input *in, size_t keep,
                      struct rec_cand *pool, size_t cap);
void rec_rank_pool(struct rec_ctx *c, const struct rec_input *in, const struct rec_cand *pool,
                   size_t n_pool, struct rec_item *out, size_t *n);
/* Candidates of one union at most (rec_pool_build's cap for keep 0). */
size_t rec_ctx_pool_cap(const struct rec_ctx *c);

/* ---- session state (the Redis blob) ---- */

struct sess_state {
    int n_hist; /* items in hist, oldest first */
    int64_t hist[SESS_MAX_HISTORY];
    int has_h; /* 0: no known item yet (cold) */
    int owner; /* which GRU h is of, 0..127: 0 clickstream.model, else an arm's own */
    int hidden;
    float h[SESS_MAX_HIDDEN];
    int64_t last_ms;         /* event time of the last click */
    int64_t clicks, unknown; /* clicks seen, of which unknown items */
    int n_cart;              /* items put in the cart and not bought since, oldest first */
    int64_t cart[SESS_MAX_CART];
};

void sess_state_init(struct sess_state *s, int hidden);
/* Appends item to the history (the oldest falls out past max_hist). */
void sess_state_push(struct sess_state *s, int64_t item, int max_hist);
/* A cart event puts item in the cart (the newest; the oldest falls out past
 * SESS_MAX_CART), a purchase takes it out. */
void sess_state_cart(struct sess_state *s, int64_t item, int purchased);
/* Compact little-endian encoding; returns the length, or 0 if cap is too
 * small. The cart's count is the header's byte 7 (0 in states written
 * before carts: they decode as before), its items follow the hidden state.
 * Byte 6 is has_h | owner << 1 (owner 0 in states written before arms had
 * their own GRU: they decode as before). */
size_t sess_state_encode(const struct sess_state *s, unsigned char *buf, size_t cap);
/* ERR_DECODE naming the problem for a blob that is truncated, from another
 * format, or whose hidden size differs from `hidden` (a new model). */
int sess_state_decode(struct sess_state *s, const unsigned char *buf, size_t len, int hidden,
                      struct err *e);

#endif
