/* common/models/gbdt_score.c: scoring: the scalar walk, one row and batches
 * through the kernel the handle's ISA picks.
 * Split out of gbdt.c; gbdt_int.h holds what the gbdt*.c files share. */
#include "gbdt_int.h"

#include <math.h>
#include <stdint.h>

/* One step down: right when x >= threshold, or x is NaN and the default is
 * right; a leaf stays where it is. No branch to mispredict. */
static inline uint32_t step(const struct node *nodes, uint32_t at, const float *x)
{
    const struct node *n = &nodes[at];
    float v = x[n->meta & NODE_FEAT_MASK];

    return n->kids + ((uint32_t)(v >= n->thr) | ((uint32_t)(v != v) & (n->meta >> 31)));
}

/* Advances LANES independent walks `steps` times. */
static inline void walk(const struct node *nodes, uint32_t *at, const float *const *x,
                        uint32_t steps)
{
    for (uint32_t s = 0; s < steps; s++) {
#pragma GCC unroll 8
        for (int l = 0; l < LANES; l++)
            at[l] = step(nodes, at[l], x[l]);
    }
}

static float leaf_of(const struct gbdt *g, size_t t, const float *x)
{
    uint32_t at = g->roots[t];

    for (uint32_t s = 0; s < g->depth[t]; s++)
        at = step(g->nodes, at, x);
    return g->leaf[at];
}

/* One row: LANES trees at a time, leaves then added in tree order. */
static float margin_scalar(const struct gbdt *g, const float *x)
{
    const float *xs[LANES];
    uint32_t at[LANES], steps;
    float sum = g->base_margin;
    size_t t = 0;

    for (int l = 0; l < LANES; l++)
        xs[l] = x;
    for (; t + LANES <= g->n_trees; t += LANES) {
        steps = 0;
        for (int l = 0; l < LANES; l++) {
            at[l] = g->roots[t + (size_t)l];
            steps = g->depth[t + (size_t)l] > steps ? g->depth[t + (size_t)l] : steps;
        }
        walk(g->nodes, at, xs, steps);
        for (int l = 0; l < LANES; l++)
            sum += g->leaf[at[l]];
    }
    for (; t < g->n_trees; t++)
        sum += leaf_of(g, t, x);
    return sum;
}

/* One row: the quantised one-row kernel at AVX-512, else the scalar walk
 * (one vector of trees with gathered nodes measured slower than the scalar
 * walk on AMD Zen 4 at both AVX2 and AVX-512: gathers cost too much). */
static float margin_row(const struct gbdt *g, const float *x)
{
#ifdef GBDT_X86
    if (g->isa == GBDT_ISA_AVX512 && g->rowq.feat)
        return rowq(g, x);
#endif
    return margin_scalar(g, x);
}

double gbdt_margin(const struct gbdt *g, const float *x)
{
    return (double)margin_row(g, x);
}

static double sigmoid(float margin)
{
    return 1.0 / (1.0 + exp(-(double)margin));
}

double gbdt_predict(const struct gbdt *g, const float *x)
{
    return sigmoid(margin_row(g, x));
}

/* A block of whole lanes (n a multiple of LANES): tree by tree, so each tree
 * stays in L1 while the block's rows walk it. Sums per row in tree order,
 * the same as margin_row. */
static void margin_block(const struct gbdt *g, const float *x, size_t n, float *sum)
{
    const float *xs[LANES];
    uint32_t at[LANES];

    for (size_t r = 0; r < n; r++)
        sum[r] = g->base_margin;
    for (size_t t = 0; t < g->n_trees; t++) {
        for (size_t r = 0; r < n; r += LANES) {
            for (int l = 0; l < LANES; l++) {
                at[l] = g->roots[t];
                xs[l] = x + (r + (size_t)l) * g->n_features;
            }
            walk(g->nodes, at, xs, g->depth[t]);
            for (int l = 0; l < LANES; l++)
                sum[r + (size_t)l] += g->leaf[at[l]];
        }
    }
}

/* Margins of n rows, n as the kernel's struct batch_kernel allows. */
typedef void block_fn(const struct gbdt *g, const float *x, size_t n, float *sum);

struct batch_kernel {
    block_fn *block;
    size_t min, max, multiple; /* rows per call; fewer than min: one by one */
};

#ifdef GBDT_X86
static void block512_rows(const struct gbdt *g, const float *x, size_t n, float *sum)
{
    block512(g, x, n / 16, sum);
}

static void block256_rows(const struct gbdt *g, const float *x, size_t n, float *sum)
{
    block256(g, x, n / 8, sum);
}
#endif

static struct batch_kernel batch_kernel(const struct gbdt *g)
{
#ifdef GBDT_X86
    const struct quant *q = &g->quant;

    if (g->isa == GBDT_ISA_AVX512 && q->inner && q->bw)
        return (struct batch_kernel){blockq, 16, QROWS, 1};
    if (g->isa >= GBDT_ISA_AVX2 && q->inner && g->heap.thr)
        return (struct batch_kernel){blockq2, 16, QROWS, 1};
    if (g->isa == GBDT_ISA_AVX512 && g->heap.thr)
        return (struct batch_kernel){block512_rows, 16, 16 * NV512, 16};
    if (g->isa >= GBDT_ISA_AVX2 && g->heap.thr)
        return (struct batch_kernel){block256_rows, 8, 8 * NV256, 8};
#endif
    return (struct batch_kernel){margin_block, LANES, BLOCK_ROWS, LANES};
}

#define SUM_MAX (16 * NV512 > BLOCK_ROWS ? 16 * NV512 : BLOCK_ROWS)

/* Blocks as the kernel takes them, the last few rows one by one. */
void gbdt_predict_batch(const struct gbdt *g, const float *x, size_t nrows, double *out)
{
    struct batch_kernel k = batch_kernel(g);
    float sum[SUM_MAX > QROWS ? SUM_MAX : QROWS];
    size_t r = 0;

    while (nrows - r >= k.min) {
        size_t n = nrows - r < k.max ? nrows - r : k.max;
        n -= n % k.multiple;
        k.block(g, x + r * g->n_features, n, sum);
        for (size_t i = 0; i < n; i++)
            out[r + i] = sigmoid(sum[i]);
        r += n;
    }
    for (; r < nrows; r++)
        out[r] = gbdt_predict(g, x + r * g->n_features);
}
