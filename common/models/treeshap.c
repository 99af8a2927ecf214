/* common/models/treeshap.c: exact path-dependent TreeSHAP (see treeshap.h).
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

/* One node as loaded (open only). */
struct tsnode {
    float thr;                      /* inner: goes right when x >= thr */
    uint32_t feat;                  /* inner: split feature */
    uint32_t left;                  /* inner: left child (local index), right = left + 1 */
    uint32_t parent;                /* below the root */
    uint32_t pfeat;                 /* below the root: the parent's split feature (credited) */
    int32_t prev;                   /* below the root: the nearest edge above on pfeat, or -1 */
    uint8_t leaf, dright, reoccurs; /* reoccurs: pfeat split again below */
    double value;                   /* leaf output */
    double z;                       /* cover / parent's cover */
};

/* A split as explained (16 bytes). */
struct inner {
    float thr;     /* goes right when x >= thr */
    uint32_t meta; /* feature | M_DRIGHT */
    uint32_t self; /* its local index */
    uint32_t left; /* left child, right = left + 1 */
};
#define M_DRIGHT 0x80000000u
#define M_FEAT 0x7fffffffu

/* The edge into a node, with no branch a row could mispredict: where its
 * feature was split above, o_prev is that edge and ex_prev too; where not,
 * o_prev is the tree's size (a slot whose o is always 1) and ex_prev the
 * edge itself (written after it was read: no chain through one slot). */
struct edge {
    uint32_t o_prev, ex_prev;
    float value; /* leaf output; 0 for an inner node */
};

typedef float v4f __attribute__((vector_size(LANES * sizeof(float))));

/* The pair kernel (trees up to 8 deep, one vector of 4 points per node):
 * both children of a split in one 8-lane vector, left child in lanes 0-3.
 * Children are adjacent, so their workspace rows are one (unaligned) load. */
typedef double v8 __attribute__((vector_size(2 * LANES * sizeof(double)), aligned(8)));
typedef float v8f __attribute__((vector_size(2 * LANES * sizeof(float)), aligned(32)));
typedef int32_t v8i __attribute__((vector_size(2 * LANES * sizeof(int32_t)), aligned(32)));

/* A split as the pair kernel explains it. Its children share the gate: the
 * nearest edge above on the split's feature (o_prev; the tree's size, whose
 * o is always 1, when none), and so the case of the split for a row:
 * 0 x goes left, 1 right (the gate hot), 2 the gate cold (both children z). */
struct pinner {
    float thr;       /* goes right when x >= thr */
    uint32_t meta;   /* feature | M_DRIGHT */
    uint16_t self;   /* its local index (trees of the pair kernel: < 512 nodes) */
    uint16_t left;   /* left child, right = left + 1 */
    uint16_t o_prev; /* the gate */
    uint16_t ex0;    /* where the left child's leaves are taken out (ex_prev) */
    uint16_t ex1;    /* the same for the right child */
    uint16_t pad;
    uint32_t cold;   /* its case-2 factors in pcold (0 when it has no gate: never read) */
    float v0, v1;    /* the children's leaf outputs (0 for an inner child) */
};

/* Per split: the children's factors in cases 0 and 1 (hot child a, cold b,
 * each divided by the gate's hot factor) and the hot children's credit
 * weights ra (left's in lanes 0-3, right's in 4-7); a cold child's is rb,
 * the same for all, so it is blended in per row rather than stored. With
 * its pinner, 128 bytes a split on two cache lines (what streams through
 * the cache per row, in one stream): the pass up reads only the first.
 * Case 2 is in pcold and rb2. */
struct pvec {
    struct pinner p; /* 32 bytes */
    v8f ra;
    v8f f[2];
};

struct treeshap {
    size_t nf, n_trees, max_nodes;
    size_t *off;  /* n_trees + 1: first node of each tree */
    size_t *ioff; /* n_trees + 1: first split of each tree */
    struct inner *inner;
    struct edge *edge;
    /* per node 4 x C: factor when x goes there, when not, when the earlier
     * split on the feature was already cold (z), and ra; floats, halving
     * what streams through the cache per row */
    v4f *vec;
    v4f rb[MAX_DEPTH / 2 / LANES]; /* -w / (1 - t) */
    double bias;
    int C; /* vectors per node: points / LANES */
    /* the pair kernel's copy (C == 1 only; NULL otherwise) */
    struct pvec *pvec; /* parallel to inner */
    v8f *pcold;         /* [0] unused, then one per split with a gate */
    size_t n_cold;
    v8f rb2; /* rb in both halves: the credit of case 2 */
};

struct treeshap_ws {
    v4 *down, *up, *ex, *phiv;
    uint8_t *o; /* combined o of each edge: x satisfies every split on its feature */
    uint8_t *k; /* pair kernel: the case of each split */
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

/* Copies tree t's nodes into nd, checks covers, finds each edge's earlier
 * split on the same feature; adds the tree's cover-weighted mean (xgboost's
 * node mean) to the bias. */
static int load_tree(struct treeshap *ts, const struct gbdt *g, size_t t, struct tsnode *nd,
                     double *zc, double *mean, struct err *e)
{
    size_t n = gbdt_tree_size(g, t);
    struct gbdt_node gn;

    memset(nd, 0, n * sizeof(*nd));
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
                           "tree %zu node %zu: sum_hessian missing or unusable (%g; TreeSHAP "
                           "needs the covers xgboost saves with save_model)",
                           t, i, (double)gn.cover);
        if (gn.feature > M_FEAT)
            return err_set(e, ERR_CONFIG, "tree %zu node %zu: feature %u too large", t, i,
                           gn.feature);
        for (int s = 0; !gn.leaf && s < 2; s++) {
            nd[gn.left + s].parent = (uint32_t)i;
            nd[gn.left + s].pfeat = gn.feature;
        }
    }
    for (size_t i = n; i-- > 0;) {
        const struct tsnode *l = &nd[nd[i].left], *r = l + 1;
        mean[i] = nd[i].leaf ? nd[i].value
                             : (mean[nd[i].left] * l->z + mean[nd[i].left + 1] * r->z) / nd[i].z;
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
        if (prev >= 0)
            nd[prev].reoccurs = 1;
        zc[c] = nd[c].z * (prev < 0 ? 1 : zc[prev]);
    }
    return ERR_OK;
}

/* Node c's edge: the factors (divided by the earlier split's hot factor
 * when the feature repeats), z, ra. */
static void edge_vectors(struct treeshap *ts, size_t at, const struct tsnode *nd, size_t c,
                         const double *zc, const double *tq, const double *wq)
{
    size_t C = (size_t)ts->C;
    v4f *v = ts->vec + at * 4 * C;

    for (size_t q = 0; q < C * LANES; q++) {
        double zn = zc[c], t = tq[q];
        double a = zn + (1 - zn) * t, b = zn * (1 - t), old = 1;

        if (nd[c].prev >= 0)
            old = zc[nd[c].prev] + (1 - zc[nd[c].prev]) * t;
        v[q / LANES][q % LANES] = (float)(a / old);
        v[C + q / LANES][q % LANES] = (float)(b / old);
        v[2 * C + q / LANES][q % LANES] = (float)nd[c].z;
        v[3 * C + q / LANES][q % LANES] = (float)(wq[q] * (1 - zn) / a);
    }
}

static void compile_tree(struct treeshap *ts, size_t t, const struct tsnode *nd, const double *zc,
                         const double *tq, const double *wq)
{
    size_t n = ts->off[t + 1] - ts->off[t];
    struct inner *in = ts->inner + ts->ioff[t];
    struct edge *ed = ts->edge + ts->off[t];

    for (size_t i = 0; i < n; i++) {
        ed[i].o_prev = nd[i].prev >= 0 && i ? (uint32_t)nd[i].prev : (uint32_t)n;
        ed[i].ex_prev = nd[i].prev >= 0 && i ? (uint32_t)nd[i].prev : (uint32_t)i;
        ed[i].value = nd[i].leaf ? (float)nd[i].value : 0;
        edge_vectors(ts, ts->off[t] + i, nd, i, zc, tq, wq);
        if (nd[i].leaf)
            continue;
        in->thr = nd[i].thr;
        in->meta = nd[i].feat | (nd[i].dright ? M_DRIGHT : 0);
        in->self = (uint32_t)i;
        in->left = nd[i].left;
        in++;
    }
    ts->ioff[t + 1] = (size_t)(in - ts->inner);
}

/* The pair kernel's records of tree t's splits, from the per-edge vectors
 * compile_tree wrote (after it: the children come after their split). */
static void compile_pairs(struct treeshap *ts, size_t t, const struct tsnode *nd)
{
    const struct inner *in = ts->inner + ts->ioff[t], *end = ts->inner + ts->ioff[t + 1];
    const v4f *vec = ts->vec + ts->off[t] * 4;
    const struct edge *ed = ts->edge + ts->off[t];
    size_t n = ts->off[t + 1] - ts->off[t];

    for (; in < end; in++) {
        size_t i = (size_t)(in - ts->inner), c0 = in->left, c1 = c0 + 1;
        struct pinner *pi = &ts->pvec[i].p;
        struct pvec *pv = &ts->pvec[i];

        pi->thr = in->thr;
        pi->meta = in->meta;
        pi->self = (uint16_t)in->self;
        pi->left = (uint16_t)in->left;
        pi->o_prev = (uint16_t)ed[c0].o_prev; /* the same for both children */
        pi->ex0 = (uint16_t)ed[c0].ex_prev;
        pi->ex1 = (uint16_t)ed[c1].ex_prev;
        pi->pad = 0;
        pi->v0 = ed[c0].value;
        pi->v1 = ed[c1].value;
        pi->cold = 0;
        for (int l = 0; l < LANES; l++) {
            /* case 0: left hot (a), right cold (b); case 1 the other way */
            pv->f[0][l] = vec[c0 * 4 + 0][l];
            pv->f[0][LANES + l] = vec[c1 * 4 + 1][l];
            pv->f[1][l] = vec[c0 * 4 + 1][l];
            pv->f[1][LANES + l] = vec[c1 * 4 + 0][l];
            pv->ra[l] = vec[c0 * 4 + 3][l];
            pv->ra[LANES + l] = vec[c1 * 4 + 3][l];
        }
        if (pi->o_prev != n) {
            v8f *cz = &ts->pcold[++ts->n_cold];
            pi->cold = (uint32_t)ts->n_cold;
            for (int l = 0; l < LANES; l++) {
                (*cz)[l] = vec[c0 * 4 + 2][l];
                (*cz)[LANES + l] = vec[c1 * 4 + 2][l];
            }
        }
        (void)nd;
    }
}

static int alloc_model(struct treeshap *ts, const struct gbdt *g, struct err *e)
{
    size_t total = 0;

    ts->nf = gbdt_num_features(g);
    ts->n_trees = gbdt_num_trees(g);
    ts->off = malloc((ts->n_trees + 1) * sizeof(*ts->off));
    ts->ioff = calloc(ts->n_trees + 1, sizeof(*ts->ioff));
    if (!ts->off || !ts->ioff)
        return err_set(e, ERR_NOMEM, "treeshap: out of memory");
    for (size_t t = 0; t < ts->n_trees; t++) {
        size_t n = gbdt_tree_size(g, t);
        ts->off[t] = total;
        total += n;
        if (n > ts->max_nodes)
            ts->max_nodes = n;
    }
    ts->off[ts->n_trees] = total;
    ts->inner = calloc(total ? total : 1, sizeof(*ts->inner));
    ts->edge = calloc(total ? total : 1, sizeof(*ts->edge));
    ts->vec = aligned_alloc(sizeof(v4f), (total ? total : 1) * 4 * (size_t)ts->C * sizeof(v4f));
    if (!ts->inner || !ts->edge || !ts->vec)
        return err_set(e, ERR_NOMEM, "treeshap: out of memory (%zu nodes)", total);
    if (ts->C == 1 && ts->max_nodes < UINT16_MAX) { /* pinner's 16-bit indices */
        size_t v8b = (total + 1) * sizeof(v8f);
        ts->pvec = aligned_alloc(64, (total + 1) * sizeof(*ts->pvec)); /* cache lines */
        ts->pcold = aligned_alloc(sizeof(v8f), v8b);
        if (!ts->pvec || !ts->pcold)
            return err_set(e, ERR_NOMEM, "treeshap: out of memory (%zu nodes)", total);
    }
    return ERR_OK;
}

/* Quadrature points and the vectors built from them. */
static void set_points(struct treeshap *ts, double *tq, double *wq)
{
    gauss_legendre(ts->C * LANES, tq, wq);
    for (int q = 0; q < ts->C * LANES; q++)
        ts->rb[q / LANES][q % LANES] = (float)(-wq[q] / (1 - tq[q]));
    for (int l = 0; l < 2 * LANES; l++)
        ts->rb2[l] = ts->rb[0][l % LANES];
}

struct treeshap *treeshap_open(const struct gbdt *g, struct err *e)
{
    /* rb is read with aligned vector loads */
    struct treeshap *ts =
        aligned_alloc(sizeof(v4), (sizeof(*ts) + sizeof(v4) - 1) / sizeof(v4) * sizeof(v4));
    double tq[MAX_DEPTH / 2], wq[MAX_DEPTH / 2], *zc = NULL, *mean = NULL;
    struct tsnode *nd = NULL;
    size_t depth = gbdt_max_depth(g);

    if (!ts) {
        err_set(e, ERR_NOMEM, "treeshap: out of memory");
        return NULL;
    }
    memset(ts, 0, sizeof(*ts));
    if (depth > MAX_DEPTH) {
        err_set(e, ERR_CONFIG, "treeshap: trees %zu deep, at most %d supported", depth, MAX_DEPTH);
        goto out_close;
    }
    ts->C = depth <= 2 * LANES ? 1 : depth <= 4 * LANES ? 2 : 4;
    set_points(ts, tq, wq);
    if (alloc_model(ts, g, e))
        goto out_close;
    zc = malloc((ts->max_nodes + 1) * sizeof(*zc));
    mean = malloc((ts->max_nodes + 1) * sizeof(*mean));
    nd = malloc((ts->max_nodes + 1) * sizeof(*nd));
    if (!zc || !mean || !nd) {
        err_set(e, ERR_NOMEM, "treeshap: out of memory");
        goto out_close;
    }
    ts->bias = gbdt_base_margin(g);
    for (size_t t = 0; t < ts->n_trees; t++)
        if (load_tree(ts, g, t, nd, zc, mean, e))
            goto out_close;
        else {
            compile_tree(ts, t, nd, zc, tq, wq);
            if (ts->pvec)
                compile_pairs(ts, t, nd);
        }
    free(zc);
    free(mean);
    free(nd);
    return ts;
out_close:
    free(zc);
    free(mean);
    free(nd);
    treeshap_close(ts);
    return NULL;
}

void treeshap_close(struct treeshap *t)
{
    if (!t)
        return;
    free(t->off);
    free(t->ioff);
    free(t->inner);
    free(t->edge);
    free(t->vec);
    free(t->pvec);
    free(t->pcold);
    free(t);
}

struct treeshap_ws *treeshap_ws_open(const struct treeshap *t)
{
    struct treeshap_ws *w = calloc(1, sizeof(*w));
    size_t nv = (t->max_nodes + 1) * (size_t)t->C;

    if (!w)
        return NULL;
    w->down = vec_alloc(nv);
    w->up = vec_alloc(nv);
    w->ex = vec_alloc(nv);
    w->phiv = vec_alloc((t->nf + 1) * (size_t)t->C);
    w->o = malloc(t->max_nodes + 1);
    w->k = malloc(t->max_nodes + 1);
    if (!w->down || !w->up || !w->ex || !w->phiv || !w->o || !w->k) {
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
    free(w->k);
    free(w);
}

size_t treeshap_num_values(const struct treeshap *t)
{
    return t->nf + 1;
}

#define INLINE static inline __attribute__((always_inline))

/* One tree, C vectors per node (a constant once inlined). Splits come
 * breadth-first: going down a parent is done before its children; going
 * back up every child before its parent. */
INLINE void explain_tree(const struct treeshap *ts, struct treeshap_ws *w, size_t t, const float *x,
                         const int C)
{
    const struct inner *in = ts->inner + ts->ioff[t], *end = ts->inner + ts->ioff[t + 1];
    const struct edge *ed = ts->edge + ts->off[t];
    const v4f *vec = ts->vec + ts->off[t] * 4 * (size_t)C;
    v4 *down = w->down, *up = w->up, *ex = w->ex;
    uint8_t *o = w->o;

    o[ts->off[t + 1] - ts->off[t]] = 1;
    for (int k = 0; k < C; k++)
        down[k] = (v4){1, 1, 1, 1};
    for (const struct inner *p = in; p < end; p++) {
        float v = x[p->meta & M_FEAT];
        uint32_t right = (uint32_t)(v >= p->thr) | ((uint32_t)(v != v) & (p->meta >> 31));
        for (uint32_t s = 0; s < 2; s++) {
            size_t c = p->left + s;
            uint32_t hot = s == right, po = o[ed[c].o_prev];
            const v4f *m = vec + (c * 4 + (po ? 1 - hot : 2)) * C;
            o[c] = (uint8_t)(hot & po);
            for (int k = 0; k < C; k++) {
                v4 d = down[p->self * C + k] * __builtin_convertvector(m[k], v4);
                down[c * C + k] = d;
                up[c * C + k] = ed[c].value * d;
                ex[c * C + k] = (v4){0, 0, 0, 0};
            }
        }
    }
    for (const struct inner *p = end; p-- > in;) {
        v4 *ph = w->phiv + (size_t)(p->meta & M_FEAT) * C;
        size_t c0 = p->left, c1 = c0 + 1;
        /* a pointer select (cmov), not a branch on the row's path */
        const v4f *r0 = o[c0] ? vec + (c0 * 4 + 3) * C : ts->rb;
        const v4f *r1 = o[c1] ? vec + (c1 * 4 + 3) * C : ts->rb;
        for (int k = 0; k < C; k++) {
            v4 u0 = up[c0 * C + k], u1 = up[c1 * C + k];
            ph[k] += __builtin_convertvector(r0[k], v4) * (u0 - ex[c0 * C + k]) +
                     __builtin_convertvector(r1[k], v4) * (u1 - ex[c1 * C + k]);
            up[p->self * C + k] = u0 + u1;
            ex[ed[c0].ex_prev * C + k] += u0;
            ex[ed[c1].ex_prev * C + k] += u1;
        }
    }
}

#define LO(v) __builtin_shufflevector(v, v, 0, 1, 2, 3)
#define HI(v) __builtin_shufflevector(v, v, 4, 5, 6, 7)

/* One tree, both children of a split at once (C == 1): the same sums as
 * explain_tree's, with the same factors, in half the vector operations. */
INLINE void explain_tree_pairs(const struct treeshap *ts, struct treeshap_ws *w, size_t t,
                               const float *x)
{
    size_t i0 = ts->ioff[t], i1 = ts->ioff[t + 1];
    const struct pvec *pvec = ts->pvec;
    v4 *down = w->down, *up = w->up, *ex = w->ex;
    uint8_t *o = w->o, *kk = w->k;

    o[ts->off[t + 1] - ts->off[t]] = 1;
    down[0] = (v4){1, 1, 1, 1};
    for (size_t i = i0; i < i1; i++) {
        const struct pinner *p = &pvec[i].p;
        float v = x[p->meta & M_FEAT];
        uint32_t right = (uint32_t)(v >= p->thr) | ((uint32_t)(v != v) & (p->meta >> 31));
        uint32_t po = o[p->o_prev];
        /* a pointer select (cmov), not a branch on the row's path */
        const v8f *f = po ? &pvec[i].f[right] : &ts->pcold[p->cold];
        v4 d = down[p->self];
        v8 dn =
            __builtin_shufflevector(d, d, 0, 1, 2, 3, 0, 1, 2, 3) * __builtin_convertvector(*f, v8);
        o[p->left] = (uint8_t)(po & (right ^ 1));
        o[p->left + 1] = (uint8_t)(po & right);
        kk[p->self] = (uint8_t)(po ? right : 2);
        *(v8 *)&down[p->left] = dn;
        *(v8 *)&up[p->left] = dn * (v8){p->v0, p->v0, p->v0, p->v0, p->v1, p->v1, p->v1, p->v1};
        *(v8 *)&ex[p->left] = (v8){0, 0, 0, 0, 0, 0, 0, 0};
    }
    for (size_t i = i1; i-- > i0;) {
        const struct pinner *p = &pvec[i].p;
        int32_t k = kk[p->self];
        /* the hot child's lanes from ra, the cold one's (all in case 2) rb */
        v8i hot = (v8i){k, k, k, k, k, k, k, k} == (v8i){0, 0, 0, 0, 1, 1, 1, 1};
        v8f r = (v8f)(((v8i)pvec[i].ra & hot) | ((v8i)ts->rb2 & ~hot));
        v8 u = *(const v8 *)&up[p->left];
        v8 c = __builtin_convertvector(r, v8) * (u - *(const v8 *)&ex[p->left]);
        v4 *ph = w->phiv + (p->meta & M_FEAT);
        *ph += LO(c) + HI(c);
        up[p->self] = LO(u) + HI(u);
        ex[p->ex0] += LO(u);
        ex[p->ex1] += HI(u);
    }
}

__attribute__((target_clones("avx512f", "avx2", "default"))) static void
forest_pairs(const struct treeshap *ts, struct treeshap_ws *w, const float *x)
{
    for (size_t t = 0; t < ts->n_trees; t++)
        explain_tree_pairs(ts, w, t, x);
}

#define FOREST(name, C)                                                                            \
    __attribute__((target_clones("avx2", "default"))) static void name(                            \
        const struct treeshap *ts, struct treeshap_ws *w, const float *x)                          \
    {                                                                                              \
        for (size_t t = 0; t < ts->n_trees; t++)                                                   \
            explain_tree(ts, w, t, x, C);                                                          \
    }
FOREST(forest1, 1)
FOREST(forest2, 2)
FOREST(forest4, 4)

static void explain(const struct treeshap *t, struct treeshap_ws *w, const float *x, double *phi,
                    int pairs)
{
    memset(w->phiv, 0, t->nf * (size_t)t->C * sizeof(v4));
    if (t->pvec && pairs)
        forest_pairs(t, w, x);
    else if (t->C == 1)
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

void treeshap_explain(const struct treeshap *t, struct treeshap_ws *w, const float *x, double *phi)
{
    explain(t, w, x, phi, 1);
}

void treeshap_explain_ref(const struct treeshap *t, struct treeshap_ws *w, const float *x,
                          double *phi)
{
    explain(t, w, x, phi, 0);
}
