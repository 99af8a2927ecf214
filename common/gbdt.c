/* common/gbdt.c: XGBoost JSON models (gbtree, binary:logistic).
 *
 * Load: jansson parses the file; every tree is checked (array lengths, index
 * ranges, each node reached once from the root) and copied breadth-first
 * into one flat node array where a node's two children are adjacent.
 *
 * Score: a leaf points to itself, so a walk of exactly `depth` steps ends on
 * the leaf whatever path it took. That lets several walks (trees of one row,
 * or rows of one tree) advance in lockstep without branches: their loads
 * overlap instead of each step waiting on the one before.
 *
 * Arithmetic is xgboost's (cpu_predictor): float feature < float threshold,
 * leaves added in tree order to a float that starts at the base margin.
 * Every model content problem is ERR_CONFIG: the file is what is wrong.
 *
 * SIMD kernels, chosen at run time (gbdt_set_isa) and compiled with target
 * attributes, so the default build needs no -march. All compare as the
 * scalar step does and add leaves in tree order, so each returns the
 * scalar walk's float margin bit for bit.
 *
 * Heaps (AVX2 batched; AVX-512F batched when the quantised forest is
 * missing): every tree copied into a complete heap of the forest's depth D,
 * shallower leaves pushed down (copied into every slot below), so a walk is
 * exactly D steps and level-local position p goes to 2p + (go right). One
 * vector holds 8 (16) rows walking one tree; a level's nodes sit in
 * registers, picked per lane by a permute; the row's value is a gather.
 *
 * Quantised (AVX-512BW, the fast path): a feature value becomes its bin,
 * the number of the feature's thresholds <= x, so nodes compare 16-bit
 * integers exactly. Batched, 64 rows go down each tree together as bitsets
 * (rows at a node, split by one 32-lane compare per half); the rows that
 * went right at each level spell each row's leaf in the heap, and its value
 * is one add per row. One row, its bins sit in two registers, each tree's 63
 * heap slots are decided by two compares, and 8 trees walk their 64-bit
 * decision words together.
 */
#include "gbdt.h"

#include <errno.h>
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* The JSON arrays of one tree, all of length n. */
struct tree_src {
    json_t *left, *right, *feat, *cond, *dflt, *type, *hess;
    size_t n, index;
};

static json_t *get_path(json_t *root, const char *const *path)
{
    for (; *path && root; path++)
        root = json_object_get(root, *path);
    return root;
}

/* xgboost writes numbers as strings ("5E-1"), 3.x base_score bracketed
 * ("[5E-1]"); plain JSON numbers are accepted too. Finite only. */
static int num_value(json_t *v, double *out)
{
    char buf[64], *end;
    const char *s;
    size_t n;

    if (json_is_number(v)) {
        *out = json_number_value(v);
        return isfinite(*out) ? 0 : -1;
    }
    s = json_string_value(v);
    if (!s)
        return -1;
    n = strlen(s);
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
        s++;
        n -= 2;
    }
    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    errno = 0;
    *out = strtod(buf, &end);
    return (end == buf || *end || errno || !isfinite(*out)) ? -1 : 0;
}

static int int_at(json_t *arr, size_t i, long long *out)
{
    json_t *v = json_array_get(arr, i);

    if (!json_is_integer(v))
        return -1;
    *out = json_integer_value(v);
    return 0;
}

/* default_left: 0/1 as xgboost >= 1.6 writes it, or JSON booleans. */
static int flag_at(json_t *arr, size_t i, long long *out)
{
    json_t *v = json_array_get(arr, i);

    if (json_is_boolean(v)) {
        *out = json_is_true(v);
        return 0;
    }
    return int_at(arr, i, out) || (*out != 0 && *out != 1) ? -1 : 0;
}

/* Sets a model error: "<file>: <what>", always ERR_CONFIG. */
static int bad(struct loader *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(struct loader *L, const char *fmt, ...)
{
    char msg[200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return err_set(L->e, ERR_CONFIG, "%s: %s", L->src, msg);
}

static int grow_scratch(struct loader *L, size_t n)
{
    if (n <= L->cap)
        return ERR_OK;
    free(L->queue);
    free(L->level);
    free(L->seen);
    L->queue = malloc(n * sizeof(*L->queue));
    L->level = malloc(n * sizeof(*L->level));
    L->seen = malloc(n);
    L->cap = L->queue && L->level && L->seen ? n : 0;
    return L->cap ? ERR_OK : err_set(L->e, ERR_NOMEM, "%s: out of memory", L->src);
}

static int grow_nodes(struct loader *L, size_t extra)
{
    struct gbdt *g = L->g;
    size_t cap = g->cap_nodes ? g->cap_nodes : 1024;
    struct node *nn;
    float *lv, *cv;

    if (g->n_nodes + extra > UINT32_MAX / 2)
        return bad(L, "more than %u nodes", UINT32_MAX / 2);
    while (cap < g->n_nodes + extra)
        cap *= 2;
    if (cap == g->cap_nodes)
        return ERR_OK;
    nn = realloc(g->nodes, cap * sizeof(*nn));
    if (nn)
        g->nodes = nn;
    lv = nn ? realloc(g->leaf, cap * sizeof(*lv)) : NULL;
    if (lv)
        g->leaf = lv;
    cv = lv ? realloc(g->cover, cap * sizeof(*cv)) : NULL;
    if (!cv)
        return err_set(L->e, ERR_NOMEM, "%s: out of memory", L->src);
    g->cover = cv;
    g->cap_nodes = cap;
    return ERR_OK;
}

static int tree_arrays(struct loader *L, json_t *t, size_t ti, struct tree_src *ts)
{
    static const char *const keys[] = {"left_children", "right_children", "split_indices",
                                       "split_conditions", "default_left"};
    json_t **dst[] = {&ts->left, &ts->right, &ts->feat, &ts->cond, &ts->dflt};
    json_t *bw = json_object_get(t, "base_weights");

    ts->index = ti;
    ts->n = json_array_size(json_object_get(t, "left_children"));
    if (!ts->n)
        return bad(L, "trees[%zu].left_children: missing or empty", ti);
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
        *dst[k] = json_object_get(t, keys[k]);
        if (!json_is_array(*dst[k]) || json_array_size(*dst[k]) != ts->n)
            return bad(L, "trees[%zu].%s: missing or not %zu long like left_children", ti, keys[k],
                       ts->n);
    }
    ts->type = json_object_get(t, "split_type");
    if (ts->type && json_array_size(ts->type) != ts->n)
        return bad(L, "trees[%zu].split_type: not %zu long like left_children", ti, ts->n);
    if (bw && json_array_size(bw) != ts->n)
        return bad(L, "trees[%zu].base_weights: not %zu long like left_children", ti, ts->n);
    ts->hess = json_object_get(t, "sum_hessian");
    if (ts->hess && json_array_size(ts->hess) != ts->n)
        return bad(L, "trees[%zu].sum_hessian: not %zu long like left_children", ti, ts->n);
    if (ts->n > UINT32_MAX / 4)
        return bad(L, "trees[%zu]: too many nodes", ti);
    return grow_scratch(L, ts->n);
}

/* Claims child c of node s for the breadth-first queue; each node may be
 * reached once, which rules out cycles and shared subtrees. */
static int claim(struct loader *L, const struct tree_src *ts, size_t s, long long c,
                 const char *side)
{
    if (c < 0 || (size_t)c >= ts->n)
        return bad(L, "trees[%zu] node %zu: %s child %lld out of range (%zu nodes)", ts->index, s,
                   side, c, ts->n);
    if (L->seen[c])
        return bad(L,
                   "trees[%zu] node %zu: %s child %lld already reached (cycle or shared "
                   "node)",
                   ts->index, s, side, c);
    L->seen[c] = 1;
    return ERR_OK;
}

/* Fills out (at index at) from source node s; appends its children to the
 * queue at *tail, so a node's children are adjacent in the output. */
static int build_node(struct loader *L, const struct tree_src *ts, size_t s, uint32_t at,
                      size_t *tail)
{
    struct node *out = &L->g->nodes[L->g->n_nodes + at];
    long long l, r, f, d = 0, type = 0;
    double v;

    if (int_at(ts->left, s, &l) || int_at(ts->right, s, &r) ||
        num_value(json_array_get(ts->cond, s), &v))
        return bad(L, "trees[%zu] node %zu: children or split_conditions not numbers", ts->index,
                   s);
    if (fabs(v) > FLT_MAX)
        return bad(L, "trees[%zu] node %zu: split_conditions %g out of float range", ts->index, s,
                   v);
    out->thr = (float)v;
    L->g->leaf[L->g->n_nodes + at] = (float)v;
    L->g->cover[L->g->n_nodes + at] = NAN;
    if (ts->hess && num_value(json_array_get(ts->hess, s), &v) == 0 && v >= 0 && v <= FLT_MAX)
        L->g->cover[L->g->n_nodes + at] = (float)v;
    if (l == -1 && r == -1) {
        out->thr = NAN;
        out->meta = 0;
        out->kids = (uint32_t)L->g->n_nodes + at;
        return ERR_OK;
    }
    if (int_at(ts->feat, s, &f) || flag_at(ts->dflt, s, &d) ||
        (ts->type && int_at(ts->type, s, &type)))
        return bad(L,
                   "trees[%zu] node %zu: split_indices/default_left/split_type not integers "
                   "(default_left 0/1)",
                   ts->index, s);
    if (type != 0)
        return bad(L, "trees[%zu] node %zu: categorical split not supported", ts->index, s);
    if (f < 0 || (size_t)f >= L->g->n_features)
        return bad(L, "trees[%zu] node %zu: split_indices %lld not below num_feature %zu",
                   ts->index, s, f, L->g->n_features);
    if (claim(L, ts, s, l, "left") || claim(L, ts, s, r, "right"))
        return L->e->code;
    L->queue[*tail] = (uint32_t)l;
    L->queue[*tail + 1] = (uint32_t)r;
    L->level[*tail] = L->level[*tail + 1] = L->level[at] + 1;
    out->meta = (uint32_t)f | (d ? 0 : NODE_DEFAULT_RIGHT);
    out->kids = (uint32_t)(L->g->n_nodes + *tail);
    *tail += 2;
    return ERR_OK;
}

/* Copies the nodes reachable from node 0 breadth-first; unreachable ones
 * (pruned, "deleted" in xgboost) are dropped. */
static int load_tree(struct loader *L, json_t *t, size_t ti)
{
    struct gbdt *g = L->g;
    struct tree_src ts;
    size_t tail = 1;
    uint32_t depth = 0;

    if (!json_is_object(t))
        return bad(L, "trees[%zu]: not an object", ti);
    if (tree_arrays(L, t, ti, &ts) || grow_nodes(L, ts.n))
        return L->e->code;
    memset(L->seen, 0, ts.n);
    L->queue[0] = 0;
    L->level[0] = 0;
    L->seen[0] = 1;
    for (size_t at = 0; at < tail; at++) {
        if (build_node(L, &ts, L->queue[at], (uint32_t)at, &tail))
            return L->e->code;
        if (L->level[at] > depth)
            depth = L->level[at];
    }
    g->roots[ti] = (uint32_t)g->n_nodes;
    g->depth[ti] = depth;
    g->n_nodes += tail;
    if (depth > g->max_depth)
        g->max_depth = depth;
    return ERR_OK;
}

/* What this runtime computes: one sigmoid output of a plain tree ensemble. */
static int check_kind(struct loader *L, json_t *learner)
{
    static const char *const obj_p[] = {"objective", "name", NULL};
    static const char *const booster_p[] = {"gradient_booster", "name", NULL};
    static const char *const class_p[] = {"learner_model_param", "num_class", NULL};
    static const char *const target_p[] = {"learner_model_param", "num_target", NULL};
    const char *obj = json_string_value(get_path(learner, obj_p));
    const char *booster = json_string_value(get_path(learner, booster_p));
    json_t *nc = get_path(learner, class_p), *nt = get_path(learner, target_p);
    double ncls = 0, ntarget = 1;

    if (!obj)
        return bad(L, "learner.objective.name missing");
    if (strcmp(obj, "binary:logistic") != 0)
        return bad(L, "objective \"%s\" not supported (binary:logistic only)", obj);
    if (!booster || strcmp(booster, "gbtree") != 0)
        return bad(L, "booster \"%s\" not supported (gbtree only)", booster ? booster : "(none)");
    if (nc && (num_value(nc, &ncls) || ncls > 1))
        return bad(L, "learner_model_param.num_class must be 0 or 1");
    if (nt && (num_value(nt, &ntarget) || ntarget != 1))
        return bad(L, "learner_model_param.num_target must be 1");
    return ERR_OK;
}

static int load_params(struct loader *L, json_t *learner)
{
    static const char *const nf_p[] = {"learner_model_param", "num_feature", NULL};
    static const char *const bs_p[] = {"learner_model_param", "base_score", NULL};
    struct gbdt *g = L->g;
    double nf, bs;

    if (num_value(get_path(learner, nf_p), &nf) || nf < 1 || nf > MAX_FEATURES || nf != floor(nf))
        return bad(L, "learner_model_param.num_feature missing or not in 1..%d", MAX_FEATURES);
    if (num_value(get_path(learner, bs_p), &bs) || !(bs > 0 && bs < 1))
        return bad(L, "learner_model_param.base_score missing or not a probability in (0, 1)");
    g->n_features = (size_t)nf;
    g->base_score = bs;
    /* xgboost's ProbToMargin, in float as xgboost does it. */
    g->base_margin = -logf(1.0f / (float)bs - 1.0f);
    return ERR_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Names must be distinct: `streamml predict` and the worker match by name. */
static int check_unique(struct loader *L, char **names, size_t n)
{
    char **s = malloc(n * sizeof(*s));
    int rc = ERR_OK;

    if (!s)
        return err_set(L->e, ERR_NOMEM, "%s: out of memory", L->src);
    memcpy(s, names, n * sizeof(*s));
    qsort(s, n, sizeof(*s), cmp_str);
    for (size_t i = 1; i < n && !rc; i++)
        if (strcmp(s[i - 1], s[i]) == 0)
            rc = bad(L, "learner.feature_names: \"%s\" appears twice", s[i]);
    free(s);
    return rc;
}

static int load_names(struct loader *L, json_t *learner)
{
    json_t *fn = json_object_get(learner, "feature_names");
    struct gbdt *g = L->g;
    size_t n = json_array_size(fn);

    if (fn && !json_is_array(fn))
        return bad(L, "learner.feature_names: not an array");
    if (!n)
        return ERR_OK; /* optional: features are then known by position */
    if (n != g->n_features)
        return bad(L, "learner.feature_names: %zu names for num_feature %zu", n, g->n_features);
    g->names = calloc(n, sizeof(char *));
    if (!g->names)
        return err_set(L->e, ERR_NOMEM, "%s: out of memory", L->src);
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(fn, i));
        if (!s || !*s)
            return bad(L, "learner.feature_names[%zu]: not a non-empty string", i);
        g->names[i] = strdup(s);
        if (!g->names[i])
            return err_set(L->e, ERR_NOMEM, "%s: out of memory", L->src);
    }
    return check_unique(L, g->names, n);
}

/* One output group: every tree_info entry is 0. */
static int check_tree_info(struct loader *L, json_t *model, size_t n_trees)
{
    json_t *info = json_object_get(model, "tree_info");
    long long v;

    if (info && json_array_size(info) != n_trees)
        return bad(L, "tree_info: %zu entries for %zu trees", json_array_size(info), n_trees);
    for (size_t i = 0; i < json_array_size(info); i++)
        if (int_at(info, i, &v) || v != 0)
            return bad(L, "tree_info[%zu]: not 0 (multi-output model)", i);
    return ERR_OK;
}

static int load_forest(struct loader *L, json_t *learner)
{
    static const char *const model_p[] = {"gradient_booster", "model", NULL};
    json_t *model = get_path(learner, model_p);
    json_t *trees = json_object_get(model, "trees");
    struct gbdt *g = L->g;

    if (!json_is_array(trees))
        return bad(L, "learner.gradient_booster.model.trees: missing or not an array");
    g->n_trees = json_array_size(trees);
    if (check_tree_info(L, model, g->n_trees))
        return L->e->code;
    g->roots = calloc(g->n_trees + 1, sizeof(*g->roots));
    g->depth = calloc(g->n_trees + 1, sizeof(*g->depth));
    if (!g->roots || !g->depth)
        return err_set(L->e, ERR_NOMEM, "%s: out of memory", L->src);
    for (size_t t = 0; t < g->n_trees; t++)
        if (load_tree(L, json_array_get(trees, t), t))
            return L->e->code;
    return ERR_OK;
}

/* Copies source node src into heap slot pos (level-local) of tree t at
 * `level`; a leaf above the last level fills both subtrees with itself. */
static void heap_fill(struct gbdt *g, size_t t, uint32_t level, uint32_t pos, uint32_t src)
{
    struct heap *h = &g->heap;
    const struct node *n = &g->nodes[src];
    size_t at = t * h->n_inner + (1u << level) - 1 + pos;
    int leaf = n->kids == src;

    if (level == h->depth) {
        h->leaf[t * h->n_leaves + pos] = g->leaf[src]; /* src is a leaf: depth <= D */
        return;
    }
    h->thr[at] = leaf ? 0.0f : n->thr;
    h->meta[at] = leaf ? 0 : n->meta;
    heap_fill(g, t, level + 1, 2 * pos, leaf ? src : n->kids);
    heap_fill(g, t, level + 1, 2 * pos + 1, leaf ? src : n->kids + 1);
}

static enum gbdt_isa cpu_isa(void)
{
#ifdef GBDT_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return GBDT_ISA_AVX512;
    if (__builtin_cpu_supports("avx2"))
        return GBDT_ISA_AVX2;
#endif
    return GBDT_ISA_SCALAR;
}

/* Builds the heaps when the CPU has a SIMD kernel and the forest is shallow
 * and small enough; otherwise the handle stays on the scalar walk. */
static int build_heap(struct loader *L)
{
    struct gbdt *g = L->g;
    struct heap *h = &g->heap;
    size_t slots;

    if (cpu_isa() == GBDT_ISA_SCALAR || g->max_depth > GBDT_HEAP_MAX_DEPTH)
        return ERR_OK;
    h->depth = (uint32_t)g->max_depth;
    h->n_leaves = 1u << h->depth;
    h->n_inner = h->n_leaves - 1;
    slots = g->n_trees * h->n_leaves;
    if (slots > HEAP_MAX_SLOTS)
        return ERR_OK;
    h->thr = calloc(slots + HEAP_PAD, sizeof(*h->thr)); /* all-zero bits: 0.0f */
    h->meta = calloc(slots + HEAP_PAD, sizeof(*h->meta));
    h->leaf = calloc(slots + HEAP_PAD, sizeof(*h->leaf));
    if (!h->thr || !h->meta || !h->leaf)
        return err_set(L->e, ERR_NOMEM, "%s: out of memory", L->src);
    for (size_t t = 0; t < g->n_trees; t++)
        heap_fill(g, t, 0, 0, g->roots[t]);
    return ERR_OK;
}

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

static void rowq_free(struct rowq *rq)
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

static void quant_free(struct quant *q)
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
static int build_quant(struct loader *L)
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

/* Why level isa cannot score this model on this CPU, or NULL. AVX-512
 * needs the quantised forest with AVX-512BW or the heaps, AVX2 the heaps
 * (and uses the quantised forest when there is one). */
static const char *isa_missing(const struct gbdt *g, enum gbdt_isa isa)
{
    if (isa == GBDT_ISA_SCALAR)
        return NULL;
    if (cpu_isa() < isa)
        return "this CPU lacks it";
    if (g->heap.thr || (isa == GBDT_ISA_AVX512 && g->quant.inner && g->quant.bw))
        return NULL;
    return "the model is deeper than GBDT_HEAP_MAX_DEPTH or too large for its layouts";
}

/* The highest level with a kernel for this model: AVX-512 batched needs the
 * quantised forest or the heaps, AVX2 the heaps. */
static void pick_isa(struct gbdt *g)
{
    enum gbdt_isa cpu = cpu_isa();

    g->best = GBDT_ISA_SCALAR;
    for (int isa = GBDT_ISA_AVX2; isa <= (int)cpu; isa++)
        if (!isa_missing(g, (enum gbdt_isa)isa))
            g->best = (enum gbdt_isa)isa;
    g->isa = g->best;
}

static struct gbdt *load(json_t *root, const char *src, struct err *e)
{
    struct loader L = {.src = src, .e = e};
    json_t *learner = json_object_get(root, "learner");
    int rc;

    L.g = calloc(1, sizeof(*L.g));
    if (!L.g) {
        err_set(e, ERR_NOMEM, "%s: out of memory", src);
        return NULL;
    }
    if (!json_is_object(learner))
        rc = bad(&L, "no \"learner\" object: not an XGBoost JSON model");
    else
        rc = check_kind(&L, learner) || load_params(&L, learner) || load_names(&L, learner) ||
             load_forest(&L, learner) || build_heap(&L) || build_quant(&L);
    free(L.queue);
    free(L.level);
    free(L.seen);
    if (rc) {
        gbdt_close(L.g);
        return NULL;
    }
    pick_isa(L.g);
    return L.g;
}

/* JSON starts with '{' then whitespace, '"' or '}'; xgboost's UBJSON (the
 * default of save_model since 2.1) with '{' then a type marker such as 'L';
 * its old binary format with "binf" or raw bytes. */
static int sniff(const unsigned char *head, size_t n, const char *src, struct err *e)
{
    size_t i = 0;

    while (i < n && (head[i] == ' ' || head[i] == '\t' || head[i] == '\r' || head[i] == '\n'))
        i++;
    if (i < n && head[i] == '{' &&
        (i + 1 >= n || (head[i + 1] && strchr(" \t\r\n\"}", head[i + 1]))))
        return ERR_OK;
    if (i < n && head[i] == '{')
        return err_set(e, ERR_CONFIG, "%s: UBJSON model, not JSON: %s", src, UBJ_HINT);
    if (n >= 4 && memcmp(head, "binf", 4) == 0)
        return err_set(e, ERR_CONFIG, "%s: binary model, not JSON: %s", src, UBJ_HINT);
    for (size_t k = 0; k < n; k++)
        if ((head[k] < 0x20 && !strchr("\t\r\n", head[k])) || head[k] == 0x7f)
            return err_set(e, ERR_CONFIG, "%s: binary model, not JSON: %s", src, UBJ_HINT);
    return err_set(e, ERR_CONFIG, "%s: not an XGBoost JSON model (no '{' at the start)", src);
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);

    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int sniff_file(const char *path, struct err *e)
{
    unsigned char head[64];
    size_t n;
    FILE *f;

    if (has_suffix(path, ".ubj"))
        return err_set(e, ERR_CONFIG, "%s: UBJSON model (.ubj): %s", path, UBJ_HINT);
    f = fopen(path, "rb");
    if (!f)
        return err_set(e, ERR_CONFIG, "%s: %s", path, strerror(errno));
    n = fread(head, 1, sizeof(head), f);
    fclose(f);
    if (n == 0)
        return err_set(e, ERR_CONFIG, "%s: empty file", path);
    return sniff(head, n, path, e);
}

struct gbdt *gbdt_open_string(const char *json, struct err *e)
{
    json_error_t je;
    json_t *root;
    struct gbdt *g;

    if (sniff((const unsigned char *)json, strlen(json), "model", e))
        return NULL;
    root = json_loads(json, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        err_set(e, ERR_CONFIG, "model: bad JSON at line %d column %d: %s", je.line, je.column,
                je.text);
        return NULL;
    }
    g = load(root, "model", e);
    json_decref(root);
    return g;
}

struct gbdt *gbdt_open(const char *path, struct err *e)
{
    json_error_t je;
    json_t *root;
    struct gbdt *g;

    if (sniff_file(path, e))
        return NULL;
    root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        err_set(e, ERR_CONFIG, "%s: bad JSON at line %d column %d: %s", path, je.line, je.column,
                je.text);
        return NULL;
    }
    g = load(root, path, e);
    json_decref(root);
    return g;
}

void gbdt_close(struct gbdt *g)
{
    if (!g)
        return;
    for (size_t i = 0; g->names && i < g->n_features; i++)
        free(g->names[i]);
    free(g->names);
    free(g->nodes);
    free(g->leaf);
    free(g->cover);
    free(g->roots);
    free(g->depth);
    free(g->heap.thr);
    free(g->heap.meta);
    free(g->heap.leaf);
    quant_free(&g->quant);
    rowq_free(&g->rowq);
    free(g);
}

size_t gbdt_num_features(const struct gbdt *g)
{
    return g->n_features;
}

size_t gbdt_num_trees(const struct gbdt *g)
{
    return g->n_trees;
}

size_t gbdt_max_depth(const struct gbdt *g)
{
    return g->max_depth;
}

const char *gbdt_feature_name(const struct gbdt *g, size_t i)
{
    return g->names && i < g->n_features ? g->names[i] : NULL;
}

double gbdt_base_score(const struct gbdt *g)
{
    return g->base_score;
}

double gbdt_base_margin(const struct gbdt *g)
{
    return g->base_margin;
}

size_t gbdt_tree_size(const struct gbdt *g, size_t t)
{
    return t < g->n_trees ? tree_size(g, t) : 0;
}

void gbdt_tree_node(const struct gbdt *g, size_t t, size_t i, struct gbdt_node *out)
{
    uint32_t root = g->roots[t], at = root + (uint32_t)i;
    const struct node *n = &g->nodes[at];
    int leaf = n->kids == at;

    out->leaf = leaf;
    out->feature = leaf ? 0 : n->meta & NODE_FEAT_MASK;
    out->default_left = !(n->meta & NODE_DEFAULT_RIGHT);
    out->thr = n->thr;
    out->left = leaf ? 0 : n->kids - root;
    out->value = g->leaf[at];
    out->cover = g->cover[at];
}

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
A512 static void block512(const struct gbdt *g, const float *x, size_t nv, float *sum)
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

A2 static void block256(const struct gbdt *g, const float *x, size_t nv, float *sum)
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
AQ static void blockq(const struct gbdt *g, const float *x, size_t n, float *sum)
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
AQ static float rowq(const struct gbdt *g, const float *x)
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
AQ2 static void blockq2(const struct gbdt *g, const float *x, size_t n, float *sum)
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

enum gbdt_isa gbdt_isa(const struct gbdt *g)
{
    return g->isa;
}

enum gbdt_isa gbdt_isa_best(const struct gbdt *g)
{
    return g->best;
}

const char *gbdt_isa_name(enum gbdt_isa isa)
{
    switch (isa) {
    case GBDT_ISA_SCALAR:
        return "scalar";
    case GBDT_ISA_AVX2:
        return "avx2";
    case GBDT_ISA_AVX512:
        return "avx512";
    }
    return "?";
}

int gbdt_set_isa(struct gbdt *g, enum gbdt_isa isa, struct err *e)
{
    const char *why;

    if (isa != GBDT_ISA_SCALAR && isa != GBDT_ISA_AVX2 && isa != GBDT_ISA_AVX512)
        return err_set(e, ERR_CONFIG, "gbdt: kernel level %d does not exist", (int)isa);
    why = isa_missing(g, isa);
    if (why)
        return err_set(e, ERR_CONFIG, "gbdt: %s kernel not available: %s", gbdt_isa_name(isa), why);
    g->isa = isa;
    return ERR_OK;
}
