/* common/treeshap.c: exact path-dependent TreeSHAP (see treeshap.h).
 *
 * For leaf l, feature i on its path, with o_j = 1 when x satisfies every
 * split on feature j along the path (else 0) and z_j the product of the
 * path's cover ratios for j, xgboost's value is
 *   phi_i += v_l (o_i - z_i) * sum_S w(|S|, d) prod_{S} o_j prod_{U\S\i} z_j
 * and w(k, d) = k! (d-1-k)! / d! = integral of t^k (1-t)^(d-1-k) on [0,1],
 * so the sum is the integral of prod_{j != i} (z_j (1-t) + o_j t): exact
 * with W Gauss-Legendre points for paths of up to 2W unique features.
 *
 * Per tree and point t_q, a pass down multiplies each node's path product
 * by its edge's factor (a = z + (1-z) t where x goes, b = z (1-t) where it
 * does not), leaves take v_l times it; a pass up sums the leaves under each
 * node (up) and credits each edge's feature with ra * up (x went there:
 * ra = w_q (1-z) / a) or rb * up (rb = -w_q / (1-t)), which divides the
 * edge's own factor back out: phi needs the product without it.
 *
 * A feature split again lower on the path is one player: its factor uses the
 * combined z and o, so the lower edge multiplies by new / old (precomputed;
 * z when the upper one was already cold), and the leaves under it are taken
 * out of the upper edge's credit (ex). Quadrature weights are folded into
 * ra and rb; the W lanes are added up once per row.
 */
#include "treeshap.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 32 /* 16 points of 4 lanes: exact for 32 unique features on a path */
#define LANES 4

typedef double v4 __attribute__((vector_size(LANES * sizeof(double))));

struct tsnode {
    float thr;      /* inner: goes right when x >= thr */
    uint32_t feat;  /* inner: split feature */
    uint32_t left;  /* inner: left child (local index), right = left + 1 */
    uint32_t parent; /* below the root */
    uint32_t pfeat;  /* below the root: the parent's split feature (credited) */
    int32_t prev;    /* below the root: the nearest edge above on pfeat, or -1 */
    uint8_t leaf, dright;
    double value; /* leaf output */
    double z;     /* cover / parent's cover */
};

struct treeshap {
    size_t nf, n_trees, max_nodes;
    size_t *off; /* n_trees + 1: first node of each tree */
    struct tsnode *node;
    v4 *vec; /* per node 3 x C vectors: factor hot, factor cold, ra */
    v4 rb[MAX_DEPTH / 2 / LANES];
    double bias;
    int C; /* vectors per node: points / LANES */
};

struct treeshap_ws {
    v4 *down, *up, *ex, *phiv;
    uint8_t *o; /* combined o of each edge: x satisfies every split on its feature */
    int C;
    size_t nf;
};

/* n-point Gauss-Legendre nodes and weights on [0, 1]. */
static void gauss_legendre(int n, double *t, double *w)
{
    for (int i = 0; i < n; i++) {
        double x = cos(M_PI * (i + 0.75) / (n + 0.5)), p0 = 1, dp = 1;

        for (int it = 0; it < 100; it++) {
            double p1 = 0, dx;

            p0 = 1;
            for (int j = 1; j <= n; j++) {
                double p2 = p1;
                p1 = p0;
                p0 = ((2.0 * j - 1) * x * p1 - (j - 1.0) * p2) / j;
            }
            dp = n * (x * p0 - p1) / (x * x - 1);
            dx = p0 / dp;
            x -= dx;
            if (fabs(dx) < 1e-16)
                break;
        }
        t[i] = (1 - x) / 2;
        w[i] = 1 / ((1 - x * x) * dp * dp);
    }
}

static void *vec_alloc(size_t n)
{
    size_t bytes = n * sizeof(v4);

    return aligned_alloc(sizeof(v4), bytes ? bytes : sizeof(v4));
}

/* Copies tree t's nodes, checks covers, finds each edge's earlier split on
 * the same feature; adds the tree's cover-weighted mean to the bias. */
static int load_tree(struct treeshap *ts, const struct gbdt *g, size_t t, double *zc,
                     double *mean, struct err *e)
{
    size_t n = gbdt_tree_size(g, t);
    struct tsnode *nd = ts->node + ts->off[t];
    struct gbdt_node gn;

    for (size_t i = 0; i < n; i++) {
        gbdt_tree_node(g, t, i, &gn);
        nd[i].leaf = (uint8_t)gn.leaf;
        nd[i].dright = (uint8_t)!gn.default_left;
        nd[i].thr = gn.thr;
        nd[i].feat = gn.feature;
        nd[i].left = gn.left;
        nd[i].value = gn.value;
        nd[i].z = gn.cover; /* the cover for now: ratio below */
        if (!(gn.cover >= 0 && gn.cover <= 3e38f) || (!gn.leaf && !(gn.cover > 0)))
            return err_set(e, ERR_CONFIG,
                           "tree %zu node %zu: sum_hessian %g missing or unusable (TreeSHAP "
                           "needs the covers xgboost saves with save_model)",
                           t, i, (double)gn.cover);
        for (int s = 0; !gn.leaf && s < 2; s++) {
            nd[gn.left + s].parent = (uint32_t)i;
            nd[gn.left + s].pfeat = gn.feature;
        }
    }
    for (size_t i = n; i-- > 0;) {
        if (nd[i].leaf) {
            mean[i] = nd[i].value;
            continue;
        }
        mean[i] = (mean[nd[i].left] * nd[nd[i].left].z + mean[nd[i].left + 1] * nd[nd[i].left + 1].z) /
                  nd[i].z;
    }
    ts->bias += mean[0];
    for (size_t i = n; i-- > 1;)
        nd[i].z /= nd[nd[i].parent].z;
    nd[0].z = 1;
    zc[0] = 1;
    for (size_t c = 1; c < n; c++) {
        int32_t prev = -1;
        for (uint32_t a = nd[c].parent; a != 0 && prev < 0; a = nd[a].parent)
            if (nd[a].pfeat == nd[c].pfeat)
                prev = (int32_t)a;
        nd[c].prev = prev;
        zc[c] = nd[c].z * (prev < 0 ? 1 : zc[prev]);
    }
    return ERR_OK;
}

/* Edge c's vectors (local index c, tree at node offset base): factors when
 * x goes there or not, divided by the earlier split's hot factor when the
 * feature repeats, and ra. */
static void edge_vectors(struct treeshap *ts, size_t base, size_t c, const double *zc,
                         const double *tq, const double *wq)
{
    const struct tsnode *nd = &ts->node[base + c];
    v4 *v = ts->vec + (base + c) * 3 * (size_t)ts->C;

    for (int q = 0; q < ts->C * LANES; q++) {
        double zn = zc[c], t = tq[q];
        double a = zn + (1 - zn) * t, b = zn * (1 - t), old = 1;

        if (nd->prev >= 0)
            old = zc[nd->prev] + (1 - zc[nd->prev]) * t;
        v[q / LANES][q % LANES] = a / old;
        v[ts->C + q / LANES][q % LANES] = b / old;
        v[2 * ts->C + q / LANES][q % LANES] = wq[q] * (1 - zn) / a;
    }
}

static int alloc_model(struct treeshap *ts, const struct gbdt *g, struct err *e)
{
    size_t total = 0;

    ts->nf = gbdt_num_features(g);
    ts->n_trees = gbdt_num_trees(g);
    ts->off = malloc((ts->n_trees + 1) * sizeof(*ts->off));
    if (!ts->off)
        return err_set(e, ERR_NOMEM, "treeshap: out of memory");
    for (size_t t = 0; t < ts->n_trees; t++) {
        size_t n = gbdt_tree_size(g, t);
        ts->off[t] = total;
        total += n;
        if (n > ts->max_nodes)
            ts->max_nodes = n;
    }
    ts->off[ts->n_trees] = total;
    ts->node = calloc(total ? total : 1, sizeof(*ts->node));
    ts->vec = vec_alloc(total * 3 * (size_t)ts->C);
    if (!ts->node || !ts->vec)
        return err_set(e, ERR_NOMEM, "treeshap: out of memory (%zu nodes)", total);
    return ERR_OK;
}

struct treeshap *treeshap_open(const struct gbdt *g, struct err *e)
{
    struct treeshap *ts = calloc(1, sizeof(*ts));
    double tq[MAX_DEPTH / 2], wq[MAX_DEPTH / 2], *zc = NULL, *mean = NULL;
    size_t depth = gbdt_max_depth(g);
    int rc;

    if (!ts) {
        err_set(e, ERR_NOMEM, "treeshap: out of memory");
        return NULL;
    }
    if (depth > MAX_DEPTH) {
        err_set(e, ERR_CONFIG, "treeshap: trees %zu deep, at most %d supported", depth, MAX_DEPTH);
        goto out_close;
    }
    ts->C = depth <= 2 * LANES ? 1 : depth <= 4 * LANES ? 2 : 4;
    gauss_legendre(ts->C * LANES, tq, wq);
    for (int q = 0; q < ts->C * LANES; q++)
        ts->rb[q / LANES][q % LANES] = -wq[q] / (1 - tq[q]);
    if (alloc_model(ts, g, e))
        goto out_close;
    zc = malloc((ts->max_nodes + 1) * sizeof(*zc));
    mean = malloc((ts->max_nodes + 1) * sizeof(*mean));
    if (!zc || !mean) {
        err_set(e, ERR_NOMEM, "treeshap: out of memory");
        goto out_close;
    }
    ts->bias = gbdt_base_margin(g);
    for (size_t t = 0; t < ts->n_trees; t++) {
        rc = load_tree(ts, g, t, zc, mean, e);
        if (rc)
            goto out_close;
        for (size_t c = 1; c < ts->off[t + 1] - ts->off[t]; c++)
            edge_vectors(ts, ts->off[t], c, zc, tq, wq);
    }
    free(zc);
    free(mean);
    return ts;
out_close:
    free(zc);
    free(mean);
    treeshap_close(ts);
    return NULL;
}

void treeshap_close(struct treeshap *t)
{
    if (!t)
        return;
    free(t->off);
    free(t->node);
    free(t->vec);
    free(t);
}

struct treeshap_ws *treeshap_ws_open(const struct treeshap *t)
{
    struct treeshap_ws *w = calloc(1, sizeof(*w));
    size_t nv = (t->max_nodes + 1) * (size_t)t->C;

    if (!w)
        return NULL;
    w->C = t->C;
    w->nf = t->nf;
    w->down = vec_alloc(nv);
    w->up = vec_alloc(nv);
    w->ex = vec_alloc(nv);
    w->phiv = vec_alloc((t->nf + 1) * (size_t)t->C);
    w->o = malloc(t->max_nodes + 1);
    if (!w->down || !w->up || !w->ex || !w->phiv || !w->o) {
        treeshap_ws_close(w);
        return NULL;
    }
    return w;
}

void treeshap_ws_close(struct treeshap_ws *w)
{
    if (!w)
        return;
    free(w->down);
    free(w->up);
    free(w->ex);
    free(w->phiv);
    free(w->o);
    free(w);
}

size_t treeshap_num_values(const struct treeshap *t)
{
    return t->nf + 1;
}

/* One tree, C vectors per node (a constant once inlined). The pass down
 * also clears up and ex of the children it reaches; nodes come breadth-
 * first, so a parent is done before its children and, going back, every
 * child before its parent. */
static inline __attribute__((always_inline)) void explain_tree(const struct treeshap *ts,
                                                               struct treeshap_ws *w, size_t t,
                                                               const float *x, const int C)
{
    const struct tsnode *n = ts->node + ts->off[t];
    const v4 *vec = ts->vec + ts->off[t] * 3 * (size_t)C;
    size_t nn = ts->off[t + 1] - ts->off[t];
    v4 *down = w->down, *up = w->up, *ex = w->ex;
    uint8_t *o = w->o;

    for (int k = 0; k < C; k++)
        down[k] = (v4){1, 1, 1, 1};
    for (size_t p = 0; p < nn; p++) {
        if (n[p].leaf) {
            for (int k = 0; k < C; k++)
                up[p * C + k] = n[p].value * down[p * C + k];
            continue;
        }
        float v = x[n[p].feat];
        uint32_t right = (uint32_t)(v >= n[p].thr) | ((uint32_t)(v != v) & n[p].dright);
        for (uint32_t s = 0; s < 2; s++) {
            uint32_t c = n[p].left + s;
            int32_t pv = n[c].prev;
            int hot = s == right, po = pv < 0 || o[pv];
            const v4 *m = vec + ((size_t)c * 3 + (hot ? 0 : 1)) * C;
            o[c] = (uint8_t)(hot & po);
            for (int k = 0; k < C; k++) {
                down[c * C + k] = po ? down[p * C + k] * m[k] : down[p * C + k] * n[c].z;
                up[c * C + k] = (v4){0, 0, 0, 0};
                ex[c * C + k] = (v4){0, 0, 0, 0};
            }
        }
    }
    for (size_t c = nn - 1; c > 0; c--) {
        uint32_t par = n[c].parent;
        int32_t pv = n[c].prev;
        const v4 *r = o[c] ? vec + (c * 3 + 2) * C : ts->rb;
        v4 *ph = w->phiv + (size_t)n[c].pfeat * C;
        for (int k = 0; k < C; k++) {
            v4 u = up[c * C + k];
            ph[k] += r[k] * (u - ex[c * C + k]);
            up[par * C + k] += u;
            if (pv >= 0)
                ex[(size_t)pv * C + k] += u;
        }
    }
}

#define FOREST(name, C)                                                                           \
    __attribute__((target_clones("avx2", "default"))) static void name(                           \
        const struct treeshap *ts, struct treeshap_ws *w, const float *x)                         \
    {                                                                                             \
        for (size_t t = 0; t < ts->n_trees; t++)                                                  \
            explain_tree(ts, w, t, x, C);                                                         \
    }
FOREST(forest1, 1)
FOREST(forest2, 2)
FOREST(forest4, 4)

void treeshap_explain(const struct treeshap *t, struct treeshap_ws *w, const float *x,
                      double *phi)
{
    memset(w->phiv, 0, t->nf * (size_t)t->C * sizeof(v4));
    if (t->C == 1)
        forest1(t, w, x);
    else if (t->C == 2)
        forest2(t, w, x);
    else
        forest4(t, w, x);
    for (size_t f = 0; f < t->nf; f++) {
        double s = 0;
        for (int k = 0; k < t->C; k++)
            for (int l = 0; l < LANES; l++)
                s += w->phiv[f * (size_t)t->C + (size_t)k][l];
        phi[f] = s;
    }
    phi[t->nf] = t->bias;
}
