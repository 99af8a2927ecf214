/* common/models/gbdt_quant.c: quantising the forest at load: per-feature cuts,
 * quantised trees, the cut search trees, the one-row kernel's tables.
 * Split out of gbdt.c; gbdt_int.h holds what the gbdt*.c files share. */
#include "gbdt_int.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;

    return (x > y) - (x < y);
}

static size_t tree_size(const struct gbdt *g, size_t t)
{
    return (t + 1 < g->n_trees ? g->roots[t + 1] : g->n_nodes) - g->roots[t];
}

/* Sorted distinct thresholds per feature; 1 when one feature has more than
 * QMAX_CUTS (not quantised), ERR_NOMEM. Equal floats (0 and -0) are one cut: they compare alike. */
static int quant_cuts(struct gbdt *g)
{
    struct quant *q = &g->quant;
    uint32_t *fill;

    for (size_t i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].kids != i)
            q->cut_off[(g->nodes[i].meta & NODE_FEAT_MASK) + 1]++;
    for (size_t f = 0; f < g->n_features; f++)
        q->cut_off[f + 1] += q->cut_off[f];
    fill = calloc(g->n_features, sizeof(*fill));
    if (!fill)
        return ERR_NOMEM;
    for (size_t i = 0; i < g->n_nodes; i++) {
        uint32_t f = g->nodes[i].meta & NODE_FEAT_MASK;
        if (g->nodes[i].kids != i)
            q->cuts[q->cut_off[f] + fill[f]++] = g->nodes[i].thr;
    }
    for (size_t f = 0; f < g->n_features; f++) {
        float *c = q->cuts + q->cut_off[f];
        size_t m = 0;
        qsort(c, fill[f], sizeof(*c), cmp_float);
        for (size_t i = 0; i < fill[f]; i++)
            if (m == 0 || c[m - 1] < c[i])
                c[m++] = c[i];
        fill[f] = (uint32_t)m;
    }
    /* Compact: feature f's distinct cuts from cut_off[f] to cut_off[f + 1]. */
    for (size_t f = 0, at = 0, start = 0; f < g->n_features; f++) {
        size_t next = q->cut_off[f + 1];
        memmove(q->cuts + at, q->cuts + start, fill[f] * sizeof(float));
        q->cut_off[f] = (uint32_t)at;
        at += fill[f];
        q->cut_off[f + 1] = (uint32_t)at;
        start = next;
        if (fill[f] > QMAX_CUTS) {
            free(fill);
            return 1;
        }
    }
    free(fill);
    return ERR_OK;
}

/* Number of the m sorted cuts c[] that are <= x, without a branch to
 * mispredict (meaningless for NaN: the caller replaces it). */
static inline uint32_t bin_of(const float *c, uint32_t m, float x)
{
    const float *b = c;

    if (m == 0)
        return 0;
    while (m > 1) {
        uint32_t half = m / 2;
        b = b[half] <= x ? b + half : b;
        m -= half;
    }
    return (uint32_t)(b - c) + (*b <= x);
}

/* Tree t's nodes as qnode / qleaf; -1 if the breadth-first layout is not
 * the one the kernel assumes (it always is: load_tree builds it). */
static int quant_tree(struct gbdt *g, size_t t, size_t *ni, size_t *nl)
{
    struct quant *q = &g->quant;
    uint32_t root = g->roots[t], k = 0, n = (uint32_t)tree_size(g, t);
    uint8_t level[QMAX_TREE_NODES], inner_level[QMAX_TREE_NODES];

    q->inner_off[t] = (uint32_t)*ni;
    q->leaf_off[t] = (uint32_t)*nl;
    level[0] = 0; /* children get their parent's + 1; deeper than 255: lstart is unused */
    for (uint32_t i = 0; i < n; i++) {
        const struct node *nd = &g->nodes[root + i];
        uint32_t f = nd->meta & NODE_FEAT_MASK, b;
        size_t col = f + (nd->meta & NODE_DEFAULT_RIGHT ? g->n_features : 0);
        if (nd->kids == root + i) {
            q->leaf_self[*nl] = i;
            q->leaf_val[(*nl)++] = g->leaf[root + i];
            continue;
        }
        if (nd->kids != root + 1 + 2 * k++)
            return -1;
        level[2 * k - 1] = level[2 * k] = (uint8_t)(level[i] + 1);
        inner_level[k - 1] = level[i];
        /* the node's own cut: bin = its index + 1 */
        b = bin_of(q->cuts + q->cut_off[f], q->cut_off[f + 1] - q->cut_off[f], nd->thr);
        q->inner[(*ni)++] = (struct qnode){(uint32_t)(col * QROWS) | i << 16, b | b << 16};
    }
    q->inner_off[t + 1] = (uint32_t)*ni;
    q->leaf_off[t + 1] = (uint32_t)*nl;
    for (uint32_t d = 0, j = 0; d < QLSTARTS; d++) {
        while (j < k && inner_level[j] < d)
            j++;
        q->kstart[t * QLSTARTS + d] = (uint16_t)j;
    }
    return 0;
}

/* Size of one level over n keys: whole nodes of 16. */
static size_t st_size(size_t n)
{
    return (n + 15) / 16 * 16;
}

/* Lays out feature f's search tree at *at (see struct quant). */
static void stree_feature(struct quant *q, size_t f, size_t *at)
{
    const float *c = q->cuts + q->cut_off[f];
    size_t n = q->cut_off[f + 1] - q->cut_off[f], stride = 1;
    struct qfeat *qf = &q->feat[f];

    qf->n_levels = 0;
    while (n > 0) {
        float *lv = q->stree + *at;
        qf->level[qf->n_levels++] = (uint32_t)*at;
        for (size_t i = 0; i < st_size(n); i++)
            lv[i] = i < n ? c[i * stride] : NAN;
        *at += st_size(n);
        if (n <= 16)
            break;
        n = (n + 15) / 16;
        stride *= 16;
    }
}

static int quant_stree(struct gbdt *g)
{
    struct quant *q = &g->quant;
    size_t total = 0, at = 0;

    for (size_t f = 0; f < g->n_features; f++)
        for (size_t n = q->cut_off[f + 1] - q->cut_off[f]; n > 0; n = n > 16 ? (n + 15) / 16 : 0)
            total += st_size(n);
    q->stree = malloc((total + 1) * sizeof(*q->stree));
    q->feat = calloc(g->n_features, sizeof(*q->feat));
    if (!q->stree || !q->feat)
        return ERR_NOMEM;
    for (size_t f = 0; f < g->n_features; f++)
        stree_feature(q, f, &at);
    return ERR_OK;
}

void rowq_free(struct rowq *rq)
{
    free(rq->feat);
    free(rq->thr);
    free(rq->dl);
    memset(rq, 0, sizeof(*rq));
}

/* The one-row kernel's slots from the heaps and the cuts (needs both). A
 * pushed-down leaf's slot gets any decision: both ways lead to it. */
static int build_rowq(struct gbdt *g)
{
    const struct heap *h = &g->heap;
    const struct quant *q = &g->quant;
    struct rowq *rq = &g->rowq;

    if (!h->thr || h->depth > RQ_MAX_DEPTH || g->n_features > RQ_MAX_FEATURES)
        return ERR_OK;
    rq->feat = calloc(g->n_trees * 64 + 1, sizeof(*rq->feat));
    rq->thr = calloc(g->n_trees * 64 + 1, sizeof(*rq->thr));
    rq->dl = calloc(g->n_trees + 1, sizeof(*rq->dl));
    if (!rq->feat || !rq->thr || !rq->dl) {
        rowq_free(rq);
        return ERR_NOMEM;
    }
    for (size_t t = 0; t < g->n_trees; t++) {
        for (uint32_t i = 0; i < h->n_inner; i++) {
            size_t at = t * h->n_inner + i;
            uint32_t f = h->meta[at] & NODE_FEAT_MASK;
            rq->feat[t * 64 + i] = (uint16_t)f;
            rq->thr[t * 64 + i] = (uint16_t)bin_of(q->cuts + q->cut_off[f],
                                                   q->cut_off[f + 1] - q->cut_off[f], h->thr[at]);
            if (!(h->meta[at] & NODE_DEFAULT_RIGHT))
                rq->dl[t] |= 1ull << i;
        }
    }
    return ERR_OK;
}

void quant_free(struct quant *q)
{
    free(q->cuts);
    free(q->cut_off);
    free(q->inner);
    free(q->leaf_self);
    free(q->leaf_val);
    free(q->inner_off);
    free(q->leaf_off);
    free(q->stree);
    free(q->feat);
    free(q->kstart);
    memset(q, 0, sizeof(*q));
}

static int cpu_avx512bw(void)
{
#ifdef GBDT_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
#else
    return 0;
#endif
}

/* Builds the quantised forest when the CPU has AVX2 and the model is within
 * the kernels' limits; otherwise those kernels are not used. */
int build_quant(struct loader *L)
{
    struct gbdt *g = L->g;
    struct quant *q = &g->quant;
    size_t n_inner = 0, ni = 0, nl = 0;
    int rc;

    if (cpu_isa() < GBDT_ISA_AVX2 || g->n_features > QMAX_FEATURES)
        return ERR_OK;
    q->bw = cpu_avx512bw();
    for (size_t t = 0; t < g->n_trees; t++)
        if (tree_size(g, t) > QMAX_TREE_NODES)
            return ERR_OK;
    for (size_t i = 0; i < g->n_nodes; i++)
        n_inner += g->nodes[i].kids != i;
    q->cuts = malloc((n_inner + 1) * sizeof(*q->cuts));
    q->cut_off = calloc(g->n_features + 1, sizeof(*q->cut_off));
    q->inner = malloc((n_inner + 1) * sizeof(*q->inner));
    q->leaf_self = malloc((g->n_nodes - n_inner + 1) * sizeof(*q->leaf_self));
    q->leaf_val = calloc(g->n_nodes - n_inner + HEAP_PAD, sizeof(*q->leaf_val));
    q->inner_off = calloc(g->n_trees + 1, sizeof(*q->inner_off));
    q->leaf_off = calloc(g->n_trees + 1, sizeof(*q->leaf_off));
    q->kstart = calloc(g->n_trees * QLSTARTS + 1, sizeof(*q->kstart));
    rc = q->cuts && q->cut_off && q->inner && q->leaf_self && q->leaf_val && q->inner_off &&
                 q->leaf_off && q->kstart
             ? quant_cuts(g)
             : ERR_NOMEM;
    for (size_t t = 0; rc == ERR_OK && t < g->n_trees; t++)
        rc = quant_tree(g, t, &ni, &nl);
    if (rc == ERR_OK)
        rc = quant_stree(g);
    if (rc == ERR_OK && q->bw)
        rc = build_rowq(g);
    if (rc != ERR_OK)
        quant_free(q);
    return rc == ERR_NOMEM ? err_set(L->e, ERR_NOMEM, "%s: out of memory", L->src) : ERR_OK;
}
