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
#include "gbdt_int.h"

#include <errno.h>
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

enum gbdt_isa cpu_isa(void)
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
    if (t >= g->n_trees)
        return 0;
    return (t + 1 < g->n_trees ? g->roots[t + 1] : g->n_nodes) - g->roots[t];
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
