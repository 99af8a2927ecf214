/* common/models/gbdt_simd.c: the SIMD kernels (AVX-512F and AVX2 over heaps,
 * AVX-512BW and AVX2 over quantised features), compiled with target
 * attributes so the default build needs no -march.
 * Split out of gbdt.c; gbdt_int.h holds what the gbdt*.c files share. */
#include "gbdt_int.h"

#include <stdint.h>

#ifdef GBDT_X86
/* ---- AVX-512F: 16 lanes ---- */

/* One step of 16 walks at level-local positions pos whose nodes are
 * (thr, meta): right when x >= thr, or x is NaN and the default is right
 * (the threshold is never NaN); then pos = 2 pos + right. Row i's features
 * start at x + off[i]. */
A512 static inline __m512i step512(const float *x, __m512i off, __m512 thr, __m512i meta,
                                   __m512i pos)
{
    __m512i f = _mm512_add_epi32(off, _mm512_and_epi32(meta, _mm512_set1_epi32(NODE_FEAT_MASK)));
    __m512 v = _mm512_i32gather_ps(f, x, 4);
    __mmask16 dr = _mm512_test_epi32_mask(meta, _mm512_set1_epi32((int)NODE_DEFAULT_RIGHT));
    __mmask16 right =
        _mm512_cmp_ps_mask(v, thr, _CMP_GE_OQ) | _mm512_mask_cmp_ps_mask(dr, v, thr, _CMP_UNORD_Q);

    pos = _mm512_add_epi32(pos, pos);
    return _mm512_mask_add_epi32(pos, right, pos, _mm512_set1_epi32(1));
}

/* A table of n 32-bit entries (one heap level) for lookups by position:
 * up to 64 entries in registers, more gathered from p. */
struct tab512 {
    const void *p;
    uint32_t n;
    __m512i r[4];
};

A512 static inline void tab512_load(struct tab512 *t, const void *p, uint32_t n)
{
    t->p = p;
    t->n = n;
    for (uint32_t i = 0; i < 4 && 16 * i < n; i++)
        t->r[i] = _mm512_loadu_si512((const char *)p + 64 * i); /* HEAP_PAD covers it */
}

A512 static inline __m512i tab512_get(const struct tab512 *t, __m512i pos)
{
    __m512i lo, hi;

    if (t->n <= 16)
        return _mm512_permutexvar_epi32(pos, t->r[0]);
    if (t->n <= 32)
        return _mm512_permutex2var_epi32(t->r[0], pos, t->r[1]);
    if (t->n > 64)
        return _mm512_i32gather_epi32(pos, t->p, 4);
    lo = _mm512_permutex2var_epi32(t->r[0], pos, t->r[1]);
    hi = _mm512_permutex2var_epi32(t->r[2], pos, t->r[3]);
    return _mm512_mask_blend_epi32(_mm512_test_epi32_mask(pos, _mm512_set1_epi32(32)), lo, hi);
}

/* nv vectors of 16 rows (rows of nf floats from x) walk tree t; their sums
 * in acc get its leaves. Level by level, so a level's nodes are loaded once
 * and the nv walks' gathers overlap. */
A512 static void tree512(const struct gbdt *g, size_t t, const float *x, size_t nv, __m512 *acc)
{
    const struct heap *h = &g->heap;
    __m512i off =
        _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                           _mm512_set1_epi32((int)g->n_features));
    __m512i pos[NV512];
    struct tab512 thr, meta;

    for (size_t v = 0; v < nv; v++)
        pos[v] = _mm512_setzero_si512();
    for (uint32_t d = 0; d < h->depth; d++) {
        size_t at = t * h->n_inner + (1u << d) - 1;
        tab512_load(&thr, h->thr + at, 1u << d);
        tab512_load(&meta, h->meta + at, 1u << d);
        for (size_t v = 0; v < nv; v++)
            pos[v] = step512(x + v * 16 * g->n_features, off,
                             _mm512_castsi512_ps(tab512_get(&thr, pos[v])),
                             tab512_get(&meta, pos[v]), pos[v]);
    }
    tab512_load(&thr, h->leaf + t * h->n_leaves, h->n_leaves);
    for (size_t v = 0; v < nv; v++)
        acc[v] = _mm512_add_ps(acc[v], _mm512_castsi512_ps(tab512_get(&thr, pos[v])));
}

/* Margins of nv * 16 rows (nv <= NV512): the block stays in L1 while the
 * forest streams past it tree by tree, each row's sum in tree order. */
A512 void block512(const struct gbdt *g, const float *x, size_t nv, float *sum)
{
    __m512 acc[NV512];

    for (size_t v = 0; v < nv; v++)
        acc[v] = _mm512_set1_ps(g->base_margin);
    for (size_t t = 0; t < g->n_trees; t++)
        tree512(g, t, x, nv, acc);
    for (size_t v = 0; v < nv; v++)
        _mm512_storeu_ps(sum + 16 * v, acc[v]);
}

/* ---- AVX2: 8 lanes ---- */

/* step512's step: blendv picks the NaN-aware compare where the sign bit of
 * meta (NODE_DEFAULT_RIGHT) is set; right is then -1, and pos - right. */
A2 static inline __m256i step256(const float *x, __m256i off, __m256 thr, __m256i meta, __m256i pos)
{
    __m256i f = _mm256_add_epi32(off, _mm256_and_si256(meta, _mm256_set1_epi32(NODE_FEAT_MASK)));
    __m256 v = _mm256_i32gather_ps(x, f, 4);
    __m256 ge = _mm256_cmp_ps(v, thr, _CMP_GE_OQ), nlt = _mm256_cmp_ps(v, thr, _CMP_NLT_UQ);
    __m256i right = _mm256_castps_si256(_mm256_blendv_ps(ge, nlt, _mm256_castsi256_ps(meta)));

    return _mm256_sub_epi32(_mm256_add_epi32(pos, pos), right);
}

/* tab512 with 8 lanes: up to 16 entries in registers, more gathered. */
struct tab256 {
    const void *p;
    uint32_t n;
    __m256i r[2];
};

A2 static inline void tab256_load(struct tab256 *t, const void *p, uint32_t n)
{
    t->p = p;
    t->n = n;
    t->r[0] = _mm256_loadu_si256((const __m256i *)p); /* HEAP_PAD covers it */
    if (n > 8)
        t->r[1] = _mm256_loadu_si256((const __m256i *)p + 1);
}

A2 static inline __m256i tab256_get(const struct tab256 *t, __m256i pos)
{
    __m256i lo, hi, upper;

    if (t->n <= 8)
        return _mm256_permutevar8x32_epi32(t->r[0], pos);
    if (t->n > 16)
        return _mm256_i32gather_epi32(t->p, pos, 4);
    lo = _mm256_permutevar8x32_epi32(t->r[0], pos); /* uses the low 3 bits */
    hi = _mm256_permutevar8x32_epi32(t->r[1], pos);
    upper = _mm256_slli_epi32(pos, 28); /* bit 3 to the sign bit */
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(lo), _mm256_castsi256_ps(hi),
                                                _mm256_castsi256_ps(upper)));
}

/* tree512 with 8 rows per vector. */
A2 static void tree256(const struct gbdt *g, size_t t, const float *x, size_t nv, __m256 *acc)
{
    const struct heap *h = &g->heap;
    __m256i off = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                     _mm256_set1_epi32((int)g->n_features));
    __m256i pos[NV256];
    struct tab256 thr, meta;

    for (size_t v = 0; v < nv; v++)
        pos[v] = _mm256_setzero_si256();
    for (uint32_t d = 0; d < h->depth; d++) {
        size_t at = t * h->n_inner + (1u << d) - 1;
        tab256_load(&thr, h->thr + at, 1u << d);
        tab256_load(&meta, h->meta + at, 1u << d);
        for (size_t v = 0; v < nv; v++)
            pos[v] = step256(x + v * 8 * g->n_features, off,
                             _mm256_castsi256_ps(tab256_get(&thr, pos[v])),
                             tab256_get(&meta, pos[v]), pos[v]);
    }
    tab256_load(&thr, h->leaf + t * h->n_leaves, h->n_leaves);
    for (size_t v = 0; v < nv; v++)
        acc[v] = _mm256_add_ps(acc[v], _mm256_castsi256_ps(tab256_get(&thr, pos[v])));
}

A2 void block256(const struct gbdt *g, const float *x, size_t nv, float *sum)
{
    __m256 acc[NV256];

    for (size_t v = 0; v < nv; v++)
        acc[v] = _mm256_set1_ps(g->base_margin);
    for (size_t t = 0; t < g->n_trees; t++)
        tree256(g, t, x, nv, acc);
    for (size_t v = 0; v < nv; v++)
        _mm256_storeu_ps(sum + 8 * v, acc[v]);
}

/* ---- AVX-512BW over quantised features: 64 rows, one bit each ---- */

#define AQ __attribute__((target("avx512f,avx512bw,popcnt")))

/* bin_of by the search tree: per level, one compare of x against a node of
 * 16 keys counts the keys <= x; that count picks the node below. Keys
 * before the node are <= x, keys after it > x, so counts add up. */
AQ static inline uint32_t bin_tree(const float *st, const struct qfeat *qf, float x)
{
    __m512 v = _mm512_set1_ps(x);
    uint32_t c = 0;

    for (uint32_t l = qf->n_levels; l-- > 0;) {
        uint32_t node = c ? c - 1 : 0;
        __m512 keys = _mm512_loadu_ps(st + qf->level[l] + 16 * node);
        c = 16 * node + (uint32_t)__builtin_popcount(_mm512_cmp_ps_mask(keys, v, _CMP_LE_OQ));
    }
    return c;
}

/* Bins of n rows (n <= QROWS) of x, column-major: column f (NaN -> 0) and
 * column nf + f (NaN -> QNAN_HIGH), QROWS bins each; rows past n are 0. */
AQ static void quantise(const struct gbdt *g, const float *x, size_t n, uint16_t *qb)
{
    const struct quant *q = &g->quant;
    size_t nf = g->n_features;

    for (size_t f = 0; f < nf; f++) {
        uint16_t *lo = qb + f * QROWS, *hi = qb + (nf + f) * QROWS;
        for (size_t r = 0; r < n; r++) {
            float v = x[r * nf + f];
            uint16_t b = (uint16_t)bin_tree(q->stree, &q->feat[f], v);
            lo[r] = v != v ? 0 : b;
            hi[r] = v != v ? QNAN_HIGH : b;
        }
        for (size_t r = n; r < QROWS; r++)
            lo[r] = hi[r] = 0;
    }
}

/* Splits the rows that reach inner nodes [k, end) of a tree between their
 * children: at[i] = the rows (bits) at local node i; parents come first.
 * Returns the rows that went right. */
AQ static inline uint64_t splitq(const struct qnode *in, uint32_t k, uint32_t end,
                                 const uint16_t *qb, uint64_t *at)
{
    uint64_t all = 0;

    for (; k < end; k++) {
        const uint16_t *col = qb + (in[k].col & 0xffff);
        __m512i thr = _mm512_set1_epi32((int)in[k].thr2);
        uint64_t right = (uint64_t)_mm512_cmpge_epu16_mask(_mm512_load_si512(col), thr) |
                         (uint64_t)_mm512_cmpge_epu16_mask(_mm512_load_si512(col + 32), thr) << 32;
        uint64_t a = at[in[k].col >> 16];
        at[2 * k + 1] = a & ~right;
        at[2 * k + 2] = a & right;
        all |= a & right;
    }
    return all;
}

/* Writes `val` into the lanes of the rows in bitset a. */
AQ static inline void fill_rows(__m512 *v, uint64_t a, __m512 val)
{
#pragma GCC unroll 4
    for (int j = 0; j < QROWS / 16; j++)
        v[j] = _mm512_mask_mov_ps(v[j], (__mmask16)(a >> 16 * j), val);
}

/* Value lookup in a table of n <= 64 floats (4 registers) by index. */
AQ static inline __m512 lookup64(const __m512 *tab, uint32_t n, __m512i i)
{
    __m512 lo, hi;

    if (n <= 16)
        return _mm512_permutexvar_ps(i, tab[0]);
    lo = _mm512_permutex2var_ps(tab[0], i, tab[1]);
    if (n <= 32)
        return lo;
    hi = _mm512_permutex2var_ps(tab[2], i, tab[3]);
    return _mm512_mask_blend_ps(_mm512_test_epi32_mask(i, _mm512_set1_epi32(32)), lo, hi);
}

/* Adds to each row's sum the value at its byte in slot, from the table of
 * n <= 64 floats at val (HEAP_PAD covers whole-register loads). */
AQ static inline void add_slots(__m512 *acc, __m512i slot, const float *val, uint32_t n)
{
    __m512 tab[4];

#pragma GCC unroll 4
    for (int j = 0; j < 4; j++)
        tab[j] = _mm512_loadu_ps(val + 16 * j);
    acc[0] =
        _mm512_add_ps(acc[0], lookup64(tab, n, _mm512_cvtepu8_epi32(_mm512_castsi512_si128(slot))));
    acc[1] = _mm512_add_ps(
        acc[1], lookup64(tab, n, _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(slot, 1))));
    acc[2] = _mm512_add_ps(
        acc[2], lookup64(tab, n, _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(slot, 2))));
    acc[3] = _mm512_add_ps(
        acc[3], lookup64(tab, n, _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(slot, 3))));
}

/* Up to 64 leaves: each row's leaf number as a byte (two chains, alternate
 * leaves, OR-ed: the leaves' rows are disjoint), then its value added. */
AQ static inline void leaves64(const struct quant *q, size_t t, const uint64_t *at, __m512 *acc)
{
    const uint32_t *self = q->leaf_self + q->leaf_off[t];
    uint32_t n = q->leaf_off[t + 1] - q->leaf_off[t], k = 0;
    __m512i even = _mm512_setzero_si512(), odd = even;

    for (; k + 2 <= n; k += 2) {
        even = _mm512_mask_set1_epi8(even, _cvtu64_mask64(at[self[k]]), (char)k);
        odd = _mm512_mask_set1_epi8(odd, _cvtu64_mask64(at[self[k + 1]]), (char)(k + 1));
    }
    if (k < n)
        even = _mm512_mask_set1_epi8(even, _cvtu64_mask64(at[self[k]]), (char)k);
    add_slots(acc, _mm512_or_si512(even, odd), q->leaf_val + q->leaf_off[t], n);
}

/* More leaves: each row's leaf value written lane by lane, same two chains. */
AQ static inline void leaves_any(const struct quant *q, size_t t, const uint64_t *at, __m512 *acc)
{
    const uint32_t *self = q->leaf_self + q->leaf_off[t];
    const float *val = q->leaf_val + q->leaf_off[t];
    uint32_t n = q->leaf_off[t + 1] - q->leaf_off[t], k = 0;
    __m512 even[QROWS / 16], odd[QROWS / 16];

#pragma GCC unroll 4
    for (int j = 0; j < QROWS / 16; j++)
        even[j] = odd[j] = _mm512_setzero_ps();
    for (; k + 2 <= n; k += 2) {
        fill_rows(even, at[self[k]], _mm512_set1_ps(val[k]));
        fill_rows(odd, at[self[k + 1]], _mm512_set1_ps(val[k + 1]));
    }
    if (k < n)
        fill_rows(even, at[self[k]], _mm512_set1_ps(val[k]));
#pragma GCC unroll 4
    for (int j = 0; j < QROWS / 16; j++)
        acc[j] =
            _mm512_add_ps(acc[j], _mm512_castsi512_ps(_mm512_or_si512(
                                      _mm512_castps_si512(even[j]), _mm512_castps_si512(odd[j]))));
}

/* Tree t over one block: the rows split down to the leaves, then each row
 * gets its leaf's value added to its sum. */
AQ static inline void treeq(const struct gbdt *g, size_t t, const uint16_t *qb, uint64_t *at,
                            uint64_t live, __m512 *acc)
{
    const struct quant *q = &g->quant;
    const struct qnode *in = q->inner + q->inner_off[t];
    uint32_t depth = g->heap.depth;
    __m512i slot = _mm512_setzero_si512();

    at[0] = live;
    if (!g->heap.thr || g->heap.n_leaves > 64) {
        splitq(in, 0, q->inner_off[t + 1] - q->inner_off[t], qb, at);
        if (q->leaf_off[t + 1] - q->leaf_off[t] <= 64)
            leaves64(q, t, at, acc);
        else
            leaves_any(q, t, at, acc);
        return;
    }
    /* As treeq2: the rows going right per level spell each row's heap leaf. */
    for (uint32_t d = 0; d < depth; d++) {
        const uint16_t *ks = q->kstart + t * QLSTARTS;
        uint64_t right = splitq(in, ks[d], ks[d + 1], qb, at);
        slot = _mm512_or_si512(
            slot, _mm512_maskz_set1_epi8(_cvtu64_mask64(right), (char)(1u << (depth - 1 - d))));
    }
    add_slots(acc, slot, g->heap.leaf + t * g->heap.n_leaves, g->heap.n_leaves);
}

/* Margins of n <= QROWS rows: quantised once, then the forest tree by tree,
 * each row getting one leaf per tree in tree order. */
AQ void blockq(const struct gbdt *g, const float *x, size_t n, float *sum)
{
    _Alignas(64) uint16_t qb[2 * QMAX_FEATURES * QROWS];
    uint64_t at[QMAX_TREE_NODES];
    uint64_t live = n >= QROWS ? ~0ull : (1ull << n) - 1;
    __m512 acc[QROWS / 16];

    quantise(g, x, n, qb);
#pragma GCC unroll 4
    for (int j = 0; j < QROWS / 16; j++)
        acc[j] = _mm512_set1_ps(g->base_margin);
    for (size_t t = 0; t < g->n_trees; t++)
        treeq(g, t, qb, at, live, acc);
#pragma GCC unroll 4
    for (int j = 0; j < QROWS / 16; j++)
        _mm512_storeu_ps(sum + 16 * j, acc[j]);
}

/* Tree t's 64 decisions for the row whose bins are (b0, b1): bit i set
 * when slot i sends the row right. */
AQ static inline uint64_t decide(const struct rowq *rq, size_t t, __m512i b0, __m512i b1)
{
    uint64_t d = 0;

    for (int half = 0; half < 2; half++) {
        size_t at = t * 64 + 32 * (size_t)half;
        __m512i v = _mm512_permutex2var_epi16(b0, _mm512_loadu_si512(rq->feat + at), b1);
        __mmask32 ge = _mm512_cmpge_epu16_mask(v, _mm512_loadu_si512(rq->thr + at));
        __mmask32 nan = _mm512_cmpeq_epi16_mask(v, _mm512_set1_epi16((short)QNAN));
        uint32_t left = (uint32_t)(rq->dl[t] >> (32 * half));
        d |= (uint64_t)(_cvtmask32_u32(ge) & ~(_cvtmask32_u32(nan) & left)) << (32 * half);
    }
    return d;
}

/* The leaf values of trees [t, t + n), n <= RQ_CHUNK, for one row: all
 * decided first, then walked 8 at a time (independent walks, no chain
 * through the loop), slot i -> 2i + 1 + decision. */
AQ static void leaves_rowq(const struct gbdt *g, size_t t, size_t n, __m512i b0, __m512i b1,
                           float *out)
{
    const struct heap *h = &g->heap;
    _Alignas(64) uint64_t w[RQ_CHUNK], slot[RQ_CHUNK];
    const __m512i one = _mm512_set1_epi64(1);

    for (size_t i = 0; i < n; i++)
        w[i] = decide(&g->rowq, t + i, b0, b1);
    for (size_t i = n; i < (n + 7) / 8 * 8; i++)
        w[i] = 0;
    for (size_t i = 0; i < n; i += 8) {
        __m512i wv = _mm512_load_si512(w + i), at = _mm512_setzero_si512();
        for (uint32_t d = 0; d < h->depth; d++) {
            __m512i right = _mm512_and_si512(_mm512_srlv_epi64(wv, at), one);
            at = _mm512_add_epi64(_mm512_add_epi64(at, at), _mm512_add_epi64(one, right));
        }
        _mm512_store_si512(slot + i, at);
    }
    for (size_t i = 0; i < n; i++)
        out[i] = h->leaf[(t + i) * h->n_leaves + slot[i] - h->n_inner];
}

/* One row: bins once (two registers), leaves a chunk of trees at a time,
 * added in tree order. */
AQ float rowq(const struct gbdt *g, const float *x)
{
    _Alignas(64) uint16_t bins[64] = {0};
    float sum = g->base_margin, leaf[RQ_CHUNK];
    __m512i b0, b1;

    for (size_t f = 0; f < g->n_features; f++)
        bins[f] = x[f] != x[f] ? QNAN : (uint16_t)bin_tree(g->quant.stree, &g->quant.feat[f], x[f]);
    b0 = _mm512_load_si512(bins);
    b1 = _mm512_load_si512(bins + 32);
    for (size_t t = 0; t < g->n_trees; t += RQ_CHUNK) {
        size_t n = g->n_trees - t < RQ_CHUNK ? g->n_trees - t : RQ_CHUNK;
        leaves_rowq(g, t, n, b0, b1, leaf);
        for (size_t i = 0; i < n; i++)
            sum += leaf[i];
    }
    return sum;
}

/* ---- AVX2 over quantised features: 64 rows, one bit each ---- */

/* bin_tree with two 8-key compares per node. */
A2 static inline uint32_t bin_tree2(const float *st, const struct qfeat *qf, float x)
{
    __m256 v = _mm256_set1_ps(x);
    uint32_t c = 0;

    for (uint32_t l = qf->n_levels; l-- > 0;) {
        uint32_t node = c ? c - 1 : 0;
        const float *k = st + qf->level[l] + 16 * node;
        int lo = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(k), v, _CMP_LE_OQ));
        int hi = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(k + 8), v, _CMP_LE_OQ));
        c = 16 * node + (uint32_t)__builtin_popcount((unsigned)(lo | hi << 8));
    }
    return c;
}

/* Where row r of a 32-row half goes in a column so that packs + movemask
 * (which interleave 8-word groups of two registers) give bit r for row r. */
static inline size_t q2pos(size_t r)
{
    size_t j = r % 32, p = j < 8 ? j : j < 16 ? j + 8 : j < 24 ? j - 8 : j;

    return r - j + p;
}

/* quantise() for blockq2: bins biased by 0x8000 (signed compares order
 * them as unsigned), rows placed by q2pos. */
#define AQ2 __attribute__((target("avx2,popcnt")))
AQ2 static void quantise2(const struct gbdt *g, const float *x, size_t n, uint16_t *qb)
{
    const struct quant *q = &g->quant;
    size_t nf = g->n_features;

    for (size_t f = 0; f < nf; f++) {
        uint16_t *lo = qb + f * QROWS, *hi = qb + (nf + f) * QROWS;
        for (size_t r = 0; r < QROWS; r++) {
            float v = r < n ? x[r * nf + f] : 0.0f;
            uint16_t b = (uint16_t)(bin_tree2(q->stree, &q->feat[f], v) ^ 0x8000u);
            lo[q2pos(r)] = v != v ? 0x8000u : b;
            hi[q2pos(r)] = v != v ? (uint16_t)(QNAN_HIGH ^ 0x8000u) : b;
        }
    }
}

/* 32 rows (two registers of a column) below the biased cut: bit r set. */
A2 static inline uint32_t below2(const uint16_t *col, __m256i thr)
{
    __m256i a = _mm256_cmpgt_epi16(thr, _mm256_load_si256((const __m256i *)col));
    __m256i b = _mm256_cmpgt_epi16(thr, _mm256_load_si256((const __m256i *)col + 1));

    return (uint32_t)_mm256_movemask_epi8(_mm256_packs_epi16(a, b));
}

/* splitq with AVX2 for inner nodes [k, end): rows below the cut go left.
 * Returns the rows that went right. */
A2 static inline uint64_t splitq2(const struct qnode *in, uint32_t k, uint32_t end,
                                  const uint16_t *qb, uint64_t *at)
{
    uint64_t right = 0;

    for (; k < end; k++) {
        const uint16_t *col = qb + (in[k].col & 0xffff);
        __m256i thr = _mm256_set1_epi32((int)(in[k].thr2 ^ 0x80008000u));
        uint64_t left = below2(col, thr) | (uint64_t)below2(col + 32, thr) << 32;
        uint64_t a = at[in[k].col >> 16];
        at[2 * k + 1] = a & left;
        at[2 * k + 2] = a & ~left;
        right |= a & ~left;
    }
    return right;
}

/* 32 bits to 32 bytes: 0xff where the bit is set. */
A2 static inline __m256i bytes_of(uint32_t m)
{
    const __m256i pick = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
                                          2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)m), pick);

    return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

/* Tree t over one block: rows split level by level as in treeq; the rows
 * that went right at each level are the bits, MSB first, of each row's
 * leaf in the heap (padded with lefts below a shallow leaf, whose copies
 * fill that part of the heap). The leaf values are gathered from it. */
A2 static inline void treeq2(const struct gbdt *g, size_t t, const uint16_t *qb, uint64_t *at,
                             uint64_t live, __m256 *acc)
{
    const struct quant *q = &g->quant;
    const struct qnode *in = q->inner + q->inner_off[t];
    const uint16_t *ks = q->kstart + t * QLSTARTS;
    const float *leaf = g->heap.leaf + t * g->heap.n_leaves;
    uint32_t depth = g->heap.depth;
    __m256i lo = _mm256_setzero_si256(), hi = lo;
    __m128i s[4];

    at[0] = live;
    for (uint32_t d = 0; d < depth; d++) {
        uint64_t right = splitq2(in, ks[d], ks[d + 1], qb, at);
        __m256i b = _mm256_set1_epi8((char)(1u << (depth - 1 - d)));
        lo = _mm256_or_si256(lo, _mm256_and_si256(bytes_of((uint32_t)right), b));
        hi = _mm256_or_si256(hi, _mm256_and_si256(bytes_of((uint32_t)(right >> 32)), b));
    }
    s[0] = _mm256_castsi256_si128(lo);
    s[1] = _mm256_extracti128_si256(lo, 1);
    s[2] = _mm256_castsi256_si128(hi);
    s[3] = _mm256_extracti128_si256(hi, 1);
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        __m256i i0 = _mm256_cvtepu8_epi32(s[j]), i1 = _mm256_cvtepu8_epi32(_mm_srli_si128(s[j], 8));
        acc[2 * j] = _mm256_add_ps(acc[2 * j], _mm256_i32gather_ps(leaf, i0, 4));
        acc[2 * j + 1] = _mm256_add_ps(acc[2 * j + 1], _mm256_i32gather_ps(leaf, i1, 4));
    }
}

/* blockq with AVX2 (any depth up to GBDT_HEAP_MAX_DEPTH: leaves from the
 * heap, by byte index). */
AQ2 void blockq2(const struct gbdt *g, const float *x, size_t n, float *sum)
{
    _Alignas(64) uint16_t qb[2 * QMAX_FEATURES * QROWS];
    uint64_t at[QMAX_TREE_NODES];
    uint64_t live = n >= QROWS ? ~0ull : (1ull << n) - 1;
    __m256 acc[QROWS / 8];

    quantise2(g, x, n, qb);
#pragma GCC unroll 8
    for (int j = 0; j < QROWS / 8; j++)
        acc[j] = _mm256_set1_ps(g->base_margin);
    for (size_t t = 0; t < g->n_trees; t++)
        treeq2(g, t, qb, at, live, acc);
#pragma GCC unroll 8
    for (int j = 0; j < QROWS / 8; j++)
        _mm256_storeu_ps(sum + 8 * j, acc[j]);
}
#endif /* GBDT_X86 */
