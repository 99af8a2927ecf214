/* common/models/treeshap.h: exact path-dependent TreeSHAP for common/models/gbdt.c models.
 *
 * The values xgboost returns with predict(..., pred_contribs=True): one
 * Shapley value per feature plus the bias (the base margin and every tree's
 * cover-weighted mean), in margin (log-odds) units; a row's values sum to its
 * margin. Cover is each node's sum_hessian; a missing value follows the
 * node's default direction, as in scoring.
 *
 * Not xgboost's O(L D^2) recursion: for a leaf l with unique path features
 * U, a feature i's value is v_l (o_i - z_i) * integral over t in [0,1] of
 * prod_{j in U, j != i} (z_j + (o_j - z_j) t), a polynomial of degree < D,
 * so Gauss-Legendre quadrature with D/2 points is exact (the idea of Linear
 * TreeShap, Yu et al. 2022). Everything per edge that depends only on the
 * model (cover ratios, their quadrature factors) is computed at open, so a
 * row costs one pass down and one pass up each tree with a few vector
 * operations per node, and no division. docs/performance.md "Exact TreeSHAP" has figures.
 *
 * The handle is read-only after open and may be shared by threads; each
 * thread explains with its own workspace.
 */
#ifndef STREAMML_TREESHAP_H
#define STREAMML_TREESHAP_H

#include <stddef.h>

#include "err.h"
#include "gbdt.h"

struct treeshap;
struct treeshap_ws;

/* Precomputes the explainer of g, which must outlive it. ERR_CONFIG naming
 * the tree and node when a node has no usable sum_hessian (models saved
 * without it) or the forest is deeper than 32; ERR_NOMEM. */
struct treeshap *treeshap_open(const struct gbdt *g, struct err *e);
void treeshap_close(struct treeshap *t); /* NULL-safe */

/* Scratch for one thread's calls; NULL when out of memory. */
struct treeshap_ws *treeshap_ws_open(const struct treeshap *t);
void treeshap_ws_close(struct treeshap_ws *w); /* NULL-safe */

/* Values written by treeshap_explain(): gbdt_num_features() + 1, the last
 * one the bias. */
size_t treeshap_num_values(const struct treeshap *t);

/* Explains one row of gbdt_num_features() floats (NaN = missing) into phi;
 * no allocation. */
void treeshap_explain(const struct treeshap *t, struct treeshap_ws *w, const float *x, double *phi);

/* The same values from the node-at-a-time kernel that treeshap_explain's
 * pair kernel (trees up to 8 deep) replaced; deeper forests use it in both.
 * Kept as the reference of tests/test_treeshap.c's differential test and of
 * the bench. */
void treeshap_explain_ref(const struct treeshap *t, struct treeshap_ws *w, const float *x,
                          double *phi);

#endif
