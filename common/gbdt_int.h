/* common/gbdt_int.h: internal: only gbdt*.c include it. The gbdt
 * module's limits, the forest (nodes, heaps, quantised forest) and the
 * loader, shared by the files gbdt.c was split into. Not for other modules. */
#ifndef STREAMML_GBDT_INT_H
#define STREAMML_GBDT_INT_H

#include "gbdt.h"

#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define GBDT_X86 1
#define A2 __attribute__((target("avx2")))
#define A512 __attribute__((target("avx512f")))
#endif

#define NODE_FEAT_MASK 0x7fffffffu
#define NODE_DEFAULT_RIGHT 0x80000000u /* a missing value goes right */
#define MAX_FEATURES 1000000           /* far below NODE_FEAT_MASK */
#define LANES 8                        /* walks advanced together */
#define BLOCK_ROWS 64                  /* rows scored against one tree while it is in L1 */
#define UBJ_HINT "re-save with save_model('model.json')"
#define HEAP_MAX_SLOTS (1u << 24) /* trees x 2^D: above it (200 MB), scalar only */
#define HEAP_PAD 64               /* slack after each heap array: whole-register loads */
#define NV512 8                   /* 16-row vectors of one block (AVX-512) */
#define NV256 8                   /* 8-row vectors of one block (AVX2) */
#define QROWS 64                  /* rows of one quantised block: one bit each in a uint64_t */
#define QMAX_FEATURES 128         /* quantised block: 2 x 128 x 64 bins on the stack (32 KB) */
#define QMAX_TREE_NODES 4096      /* rows-at-node bitsets on the stack (32 KB) */
#define QMAX_CUTS 65534           /* distinct thresholds per feature: bins fit uint16 */
#define QNAN_HIGH 0xffffu         /* bin of NaN where the default is right */
#define QLEVELS 4                 /* 16^4 > QMAX_CUTS */
#define QLSTARTS (GBDT_HEAP_MAX_DEPTH + 2)
#define RQ_MAX_DEPTH 6     /* one-row kernel: 63 inner slots, one bit each */
#define RQ_MAX_FEATURES 64 /* the row's bins in two registers of 32 */
#define QNAN 0xffffu       /* one-row kernel: bin of NaN */
#define RQ_CHUNK 64        /* one-row kernel: trees decided before walking */

/* A leaf has threshold NaN (every comparison false), feature 0, default
 * left and kids = itself: a step from a leaf stays on it. Its value is in
 * the parallel array leaf[], read once per walk. */
struct node {
    float thr;
    uint32_t meta; /* feature index | NODE_DEFAULT_RIGHT */
    uint32_t kids; /* left child (right = kids + 1); a leaf: its own index */
};

/* The forest as complete heaps of depth D for the SIMD kernels: tree t's
 * inner slots at t * n_inner (level d from 2^d - 1 on, 2^d slots), its
 * leaves at t * n_leaves. A pushed-down leaf's inner slots compare feature
 * 0 against 0: either way ends on a copy of the leaf. */
struct heap {
    float *thr, *leaf;
    uint32_t *meta; /* as struct node's */
    uint32_t depth, n_inner, n_leaves;
};

/* The forest over quantised features for the AVX-512BW kernel. A row's
 * feature f becomes bin(x) = number of feature-f thresholds <= x, so
 * x >= cut[k] iff bin(x) >= k + 1: an exact integer compare. NaN becomes 0
 * (below every node: left) in column f, QNAN_HIGH (right) in column
 * nf + f, and each node reads the column of its default direction. */
struct qnode {
    uint32_t col;  /* column * QROWS | own local index << 16 */
    uint32_t thr2; /* k + 1 in both 16-bit halves: broadcast by a 32-bit load */
};

struct qfeat {
    uint32_t level[QLEVELS]; /* start of each level in stree */
    uint32_t n_levels;       /* 0: no cuts, every value is bin 0 */
};

struct quant {
    float *cuts;         /* feature f's sorted distinct thresholds from cut_off[f] */
    uint32_t *cut_off;   /* n_features + 1 */
    struct qnode *inner; /* per tree, breadth-first: the k-th has children 2k + 1, 2k + 2 */
    uint32_t *leaf_self; /* per tree: each leaf's local index */
    float *leaf_val;     /* and its value; HEAP_PAD slack for whole-register loads */
    uint32_t *inner_off, *leaf_off; /* n_trees + 1 */
    /* Search trees over the cuts, 16 keys a node (one register compare):
     * level 0 = the cuts, level l + 1 = every 16th key of level l, each
     * padded with NaN (never <= x) to whole nodes, up to a single node. */
    float *stree;
    struct qfeat *feat; /* n_features */
    /* Per tree, QLSTARTS entries: the inner node (k) where level d starts
     * (the AVX2 kernel; trees of depth <= GBDT_HEAP_MAX_DEPTH). */
    uint16_t *kstart;
    int bw; /* the CPU has AVX-512BW: blockq; else blockq2 (AVX2) */
};

/* One row over quantised features, trees as heaps of depth <= 6 (inner
 * slots fit a 64-bit word): the row's bins sit in two registers, a tree's
 * 63 slots are decided 32 at a time (feature bin by permute, compare), and
 * 8 trees walk their words together. */
struct rowq {
    uint16_t *feat, *thr; /* per tree 64 slots: feature, cut index + 1 (0: unused) */
    uint64_t *dl;         /* per tree: bit i set when slot i sends NaN left */
};

struct gbdt {
    struct node *nodes;
    float *leaf; /* leaf[i]: value of node i when it is a leaf */
    float *cover; /* cover[i]: node i's sum_hessian (NaN when the file has none): explainers */
    size_t n_nodes, cap_nodes;
    uint32_t *roots, *depth; /* per tree */
    size_t n_trees, n_features, max_depth;
    char **names; /* NULL when the model has no feature_names */
    double base_score;
    float base_margin;
    struct heap heap;   /* thr NULL: scalar only */
    struct quant quant; /* inner NULL: not quantised */
    struct rowq rowq;   /* feat NULL: no quantised one-row kernel */
    enum gbdt_isa isa, best;
};

/* Per-tree scratch of the loader, grown to the largest tree. */
struct loader {
    struct gbdt *g;
    const char *src; /* file name for messages */
    struct err *e;
    uint32_t *queue; /* source node ids in breadth-first (= output) order */
    uint32_t *level;
    unsigned char *seen;
    size_t cap;
};

/* Helpers shared by the gbdt*.c files (were static in one gbdt.c). */

/* gbdt.c */
enum gbdt_isa cpu_isa(void);

/* gbdt_quant.c */
void rowq_free(struct rowq *rq);
void quant_free(struct quant *q);
int build_quant(struct loader *L);

/* gbdt_simd.c (each defined with its target attribute) */
#ifdef GBDT_X86
void block512(const struct gbdt *g, const float *x, size_t nv, float *sum);
void block256(const struct gbdt *g, const float *x, size_t nv, float *sum);
void blockq(const struct gbdt *g, const float *x, size_t n, float *sum);
float rowq(const struct gbdt *g, const float *x);
void blockq2(const struct gbdt *g, const float *x, size_t n, float *sum);
#endif

#endif
