/* common/gbdt.h: gradient-boosted trees from XGBoost's JSON model format.
 *
 * Loads `booster.save_model("model.json")` files (gbtree, binary:logistic),
 * compiles the forest into a flat array of nodes, and scores float vectors
 * (NaN = missing, which takes the node's default direction). Split test is
 * `x < threshold` as in XGBoost. Read-only after load (gbdt_set_isa aside):
 * one handle may be shared by threads.
 *
 * Scoring kernels: the portable scalar walk, and AVX2 / AVX-512 ones (over
 * quantised features, or trees padded to complete heaps), picked at load
 * time from what the CPU supports (no -march needed). Every kernel returns
 * the scalar walk's margin bit for bit: same comparisons, leaves added in
 * tree order. README "Tree scoring kernels" has the layouts and figures.
 */
#ifndef STREAMML_GBDT_H
#define STREAMML_GBDT_H

#include <stddef.h>

#include "err.h"

struct gbdt;

/* Loads and validates a model file. UBJSON files are refused with a hint to
 * re-save as JSON; objectives other than binary:logistic are refused.
 * NULL on failure with the reason (file and JSON path) in *e. */
struct gbdt *gbdt_open(const char *path, struct err *e);
/* Same from a NUL-terminated JSON text already in memory (tests, fuzzing). */
struct gbdt *gbdt_open_string(const char *json, struct err *e);
void gbdt_close(struct gbdt *g); /* NULL-safe */

size_t gbdt_num_features(const struct gbdt *g);
size_t gbdt_num_trees(const struct gbdt *g);
/* Longest root-to-leaf path over the trees (0 for a leaf-only forest). */
size_t gbdt_max_depth(const struct gbdt *g);
/* Model feature name i, or NULL when the model has no feature_names. */
const char *gbdt_feature_name(const struct gbdt *g, size_t i);
double gbdt_base_score(const struct gbdt *g); /* as a probability */
/* The base margin every row starts from (log-odds of the base score, in
 * float as the kernels add it). */
double gbdt_base_margin(const struct gbdt *g);

/* Read-only view of one tree for explainers (common/treeshap.c). Nodes are
 * numbered 0 (the root) to gbdt_tree_size() - 1 breadth-first; an inner
 * node's children are adjacent, left then right, and come after it. */
struct gbdt_node {
    int leaf;            /* 1: a leaf, value holds its output */
    int default_left;    /* a missing value goes left */
    unsigned feature;    /* split feature (inner nodes) */
    unsigned left;       /* index of the left child; right is left + 1 */
    float thr;           /* goes right when x >= thr */
    float value;         /* leaf output */
    float cover;         /* the file's sum_hessian; NaN when it has none */
};
/* Nodes of tree t (t < gbdt_num_trees()); 0 for t out of range. */
size_t gbdt_tree_size(const struct gbdt *g, size_t t);
/* Fills *out with node i of tree t; both must be in range. */
void gbdt_tree_node(const struct gbdt *g, size_t t, size_t i, struct gbdt_node *out);

/* Sum of leaves + base margin for one row of gbdt_num_features() floats. */
double gbdt_margin(const struct gbdt *g, const float *x);
/* sigmoid(margin): equals xgboost's predict_proba[:, 1]. */
double gbdt_predict(const struct gbdt *g, const float *x);
/* Batched: rows are contiguous, stride = gbdt_num_features(). Any nrows;
 * the SIMD kernels take 64 rows at a time and use about 64 KB of stack. */
void gbdt_predict_batch(const struct gbdt *g, const float *x, size_t nrows, double *out);

/* Kernel levels, lowest first. */
enum gbdt_isa { GBDT_ISA_SCALAR, GBDT_ISA_AVX2, GBDT_ISA_AVX512 };

/* Deepest forest copied into complete heaps (the AVX2 kernels and the
 * one-row AVX-512 kernel need them; deeper: the scalar walk there). */
#define GBDT_HEAP_MAX_DEPTH 8

/* The level in use: gbdt_isa_best() unless gbdt_set_isa() chose another. */
enum gbdt_isa gbdt_isa(const struct gbdt *g);
/* The highest level this CPU runs and this model allows: AVX2 needs the
 * heaps, AVX-512 the heaps or the quantised forest with AVX-512BW. */
enum gbdt_isa gbdt_isa_best(const struct gbdt *g);
/* Pins a level at or below gbdt_isa_best() (tests, benchmarks, a user who
 * wants the scalar walk). Call before the handle is shared with other
 * threads. ERR_CONFIG naming the level and why when it is not available. */
int gbdt_set_isa(struct gbdt *g, enum gbdt_isa isa, struct err *e);
/* "scalar", "avx2", "avx512"; "?" for a value outside the enum. */
const char *gbdt_isa_name(enum gbdt_isa isa);

#endif
