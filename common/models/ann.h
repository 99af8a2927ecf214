/* common/models/ann.h: approximate top-k over a session model's output layer
 * (prefix ann_): an IVF index for maximum inner product search.
 *
 * A session's item scores are h . W_i + b_i (common/models/session.h). Each item is
 * the augmented vector x_i = [W_i, b_i] and a query is q = [h, 1], so a score
 * is one inner product q . x_i and the bias needs no special case. At open,
 * seeded k-means (Euclidean; the assignment step one OpenBLAS sgemm per
 * block of points, a sample of at most ANN_SAMPLE_PER_LIST points per list
 * for the iterations, then every item) cuts the catalog into `lists`
 * clusters, whose centroids are the mean of their items: q . centroid is the
 * mean score of the cluster. The items are stored again, grouped by
 * cluster, so a cluster's rows are contiguous. A mean hides a cluster's
 * outliers (on a trained catalog, the session-specific items a query
 * points at directly): each cluster's ANN_LEADERS longest [W_i, b_i] are its
 * leaders, scored for every query, and a cluster's probe score is the
 * larger of its centroid's and its best leader's.
 *
 * A query of n sessions (micro-batched, ANN_CHUNK at a time): one sgemm
 * scores every centroid and one every leader for every session (the leaders
 * are candidates too); each session probes its best `probe` clusters; the sessions are grouped by probed cluster, and each
 * cluster's items are scored by one sgemm over the sessions that probe it,
 * exactly (the same score as sess_topk); a score at or above the session's
 * k-th best so far goes to its buffer of 2k, cut back to the k best by a
 * float selection when full (sess_top_keep).
 * The result is exact over the probed items; the items of unprobed clusters
 * are missed, which is the approximation (recall is measured in
 * tests/test_ann.c and by `streamml click-eval --search ivf`).
 *
 * An index is read-only after open and may be shared by threads; the
 * scratch (struct ann_query) is per caller.
 */
#ifndef STREAMML_ANN_H
#define STREAMML_ANN_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "session.h"

#define ANN_MAX_LISTS 65536
#define ANN_CHUNK 1024           /* sessions per call's centroid sgemm and grouping */
#define ANN_BLOCK 512            /* a cluster's items scored per sgemm */
#define ANN_SAMPLE_PER_LIST 64   /* k-means iterations run on at most this many points per list */
#define ANN_LEADERS 8            /* longest items per cluster, scored for every query */

struct ann_opts {
    int lists;     /* clusters, 1..ANN_MAX_LISTS and <= items; 0: round(sqrt(items)) */
    int probe;     /* clusters probed per query, 1..lists (clamped to lists when larger) */
    int iters;     /* k-means iterations (0: 10) */
    uint64_t seed; /* k-means initialisation and sample (0: 1) */
};

struct ann;

/* Builds the index over m's output layer (m must outlive it). ERR_CONFIG
 * naming the option for lists/probe out of range, ERR_NOMEM. */
int ann_open(struct ann **out, const struct sess_model *m, const struct ann_opts *o,
             struct err *e);
void ann_close(struct ann *a); /* NULL-safe */

int ann_lists(const struct ann *a);
int ann_probe(const struct ann *a);
double ann_build_ms(const struct ann *a); /* wall time ann_open took */
/* Items of the largest and of the smallest cluster. */
void ann_list_sizes(const struct ann *a, int64_t *smallest, int64_t *largest);

/* Per-caller scratch of ann_topk, with the time spent in each stage. */
struct ann_stats {
    double centroid_us; /* centroid and leader sgemm + choosing the probed clusters */
    double score_us;    /* grouping sessions, gathering, the per-cluster sgemm */
    double select_us;   /* threshold checks, candidate buffers, the final sort */
    uint64_t queries, scored; /* sessions, item scores computed */
};
struct ann_query;
/* Scratch for queries of up to kmax items (about ANN_CHUNK x 2 kmax x 16
 * bytes); a larger k (at most ANN_CHUNK x kmax) works on fewer sessions at
 * a time. ERR_NOMEM. */
int ann_query_open(struct ann_query **out, const struct ann *a, int kmax, struct err *e);
void ann_query_close(struct ann_query *q); /* NULL-safe */
const struct ann_stats *ann_query_stats(const struct ann_query *q);
void ann_query_reset_stats(struct ann_query *q);

/* The best k (1..ANN_CHUNK x the scratch's kmax) probed items of each of n
 * sessions (h: n x hidden), best first, into out[i * k ...], as sess_topk
 * does (ties to the lower id, NaN never ranks, item -1 pads when the probed
 * clusters hold fewer than k items). ERR_INVALID (out untouched) for a k
 * out of range or a scratch of another index. */
int ann_topk(const struct ann *a, struct ann_query *q, size_t n, const float *h, int k,
             struct sess_top *out, struct err *e);
/* The same items as ann_topk, in no particular order (item -1 pads at the
 * end): no final sort, for a caller that takes them as a set (the
 * clickstream's GRU source of hundreds of candidates, rec_rank). */
int ann_topk_unordered(const struct ann *a, struct ann_query *q, size_t n, const float *h, int k,
                       struct sess_top *out, struct err *e);

#endif
