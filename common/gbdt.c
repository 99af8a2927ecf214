#include "gbdt.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One flat array of nodes for the whole forest: a leaf has feat = -1 and
 * its value in thr. Children are absolute indices into the array. */
struct node {
    float thr;
    int32_t feat;
    int32_t left, right;
    int32_t dflt;        /* child taken when the feature is missing */
};

struct gbdt {
    struct node *nodes;
    size_t n_nodes;
    int32_t *roots;
    size_t n_trees, n_features;
    char **names;        /* NULL when the model has no feature_names */
    double base_score, base_margin;
};

static json_t *path_get(json_t *root, const char *const *path)
{
    for (; *path && root; path++)
        root = json_object_get(root, *path);
    return root;
}

/* xgboost keeps numbers as strings, base_score maybe bracketed "[5E-1]". */
static int number_of(json_t *v, double *out)
{
    const char *s;
    char buf[64], *end;
    size_t n;

    if (json_is_number(v)) {
        *out = json_number_value(v);
        return 0;
    }
    if (!json_is_string(v))
        return -1;
    s = json_string_value(v);
    n = strlen(s);
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
        if (n - 2 >= sizeof(buf))
            return -1;
        memcpy(buf, s + 1, n - 2);
        buf[n - 2] = '\0';
        s = buf;
    }
    errno = 0;
    *out = strtod(s, &end);
    return (end == s || *end || errno || !isfinite(*out)) ? -1 : 0;
}

static int int_at(json_t *arr, size_t i, long *out)
{
    json_t *v = json_array_get(arr, i);

    if (json_is_integer(v)) {
        *out = (long)json_integer_value(v);
        return 0;
    }
    if (json_is_boolean(v)) {
        *out = json_is_true(v);
        return 0;
    }
    return -1;
}

static int load_tree(struct gbdt *g, json_t *t, size_t ti, const char *src, struct err *e)
{
    json_t *lc = json_object_get(t, "left_children"), *rc = json_object_get(t, "right_children");
    json_t *si = json_object_get(t, "split_indices"), *sc = json_object_get(t, "split_conditions");
    json_t *dl = json_object_get(t, "default_left");
    size_t n = json_array_size(lc), base = g->n_nodes;

    if (!n || json_array_size(rc) != n || json_array_size(si) != n || json_array_size(sc) != n ||
        json_array_size(dl) != n)
        return err_set(e, ERR_DECODE, "%s: tree %zu: node arrays missing or of unequal length",
                       src, ti);
    struct node *nn = realloc(g->nodes, (base + n) * sizeof(*nn));
    if (!nn)
        return err_set(e, ERR_NOMEM, "%s: out of memory", src);
    g->nodes = nn;
    for (size_t i = 0; i < n; i++) {
        long l, r, f, d;
        double thr;
        if (int_at(lc, i, &l) || int_at(rc, i, &r) || int_at(si, i, &f) || int_at(dl, i, &d) ||
            number_of(json_array_get(sc, i), &thr))
            return err_set(e, ERR_DECODE, "%s: tree %zu node %zu: bad value", src, ti, i);
        struct node *x = &g->nodes[base + i];
        x->thr = (float)thr;
        if (l == -1) {
            x->feat = -1;
            x->left = x->right = x->dflt = -1;
            continue;
        }
        /* Children after their parent: no cycles, bounded walk. */
        if (l <= (long)i || r <= (long)i || l >= (long)n || r >= (long)n)
            return err_set(e, ERR_DECODE, "%s: tree %zu node %zu: child index out of range",
                           src, ti, i);
        if (f < 0 || (size_t)f >= g->n_features)
            return err_set(e, ERR_DECODE, "%s: tree %zu node %zu: feature %ld >= num_feature %zu",
                           src, ti, i, f, g->n_features);
        x->feat = (int32_t)f;
        x->left = (int32_t)(base + (size_t)l);
        x->right = (int32_t)(base + (size_t)r);
        x->dflt = d ? x->left : x->right;
    }
    g->roots[ti] = (int32_t)base;
    g->n_nodes = base + n;
    return ERR_OK;
}

static int load_names(struct gbdt *g, json_t *learner, const char *src, struct err *e)
{
    json_t *fn = json_object_get(learner, "feature_names");
    size_t n = json_array_size(fn);

    if (!n)
        return ERR_OK;
    if (n != g->n_features)
        return err_set(e, ERR_DECODE, "%s: %zu feature_names for num_feature %zu", src, n,
                       g->n_features);
    g->names = calloc(n, sizeof(char *));
    if (!g->names)
        return err_set(e, ERR_NOMEM, "%s: out of memory", src);
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(fn, i));
        if (!s || !(g->names[i] = strdup(s)))
            return err_set(e, ERR_DECODE, "%s: feature_names[%zu] is not a string", src, i);
    }
    return ERR_OK;
}

static int load_header(struct gbdt *g, json_t *root, const char *src, struct err *e)
{
    static const char *const obj_p[] = {"learner", "objective", "name", NULL};
    static const char *const nf_p[] = {"learner", "learner_model_param", "num_feature", NULL};
    static const char *const bs_p[] = {"learner", "learner_model_param", "base_score", NULL};
    static const char *const bo_p[] = {"learner", "gradient_booster", "name", NULL};
    const char *obj = json_string_value(path_get(root, obj_p));
    const char *booster = json_string_value(path_get(root, bo_p));
    double nf;

    if (!obj || strcmp(obj, "binary:logistic") != 0)
        return err_set(e, ERR_CONFIG, "%s: objective \"%s\" is not supported (binary:logistic only)",
                       src, obj ? obj : "(none)");
    if (!booster || strcmp(booster, "gbtree") != 0)
        return err_set(e, ERR_CONFIG, "%s: booster \"%s\" is not supported (gbtree only)", src,
                       booster ? booster : "(none)");
    if (number_of(path_get(root, nf_p), &nf) || nf < 1 || nf > 1e6 || nf != floor(nf))
        return err_set(e, ERR_DECODE, "%s: learner_model_param.num_feature missing or bad", src);
    if (number_of(path_get(root, bs_p), &g->base_score) || g->base_score <= 0 ||
        g->base_score >= 1)
        return err_set(e, ERR_DECODE, "%s: base_score missing or not in (0, 1)", src);
    g->n_features = (size_t)nf;
    g->base_margin = log(g->base_score / (1.0 - g->base_score));
    return load_names(g, json_object_get(root, "learner"), src, e);
}

static struct gbdt *load(json_t *root, const char *src, struct err *e)
{
    static const char *const trees_p[] = {"learner", "gradient_booster", "model", "trees", NULL};
    struct gbdt *g = calloc(1, sizeof(*g));
    json_t *trees = path_get(root, trees_p);

    if (!g) {
        err_set(e, ERR_NOMEM, "%s: out of memory", src);
        return NULL;
    }
    if (load_header(g, root, src, e))
        goto fail;
    g->n_trees = json_array_size(trees);
    if (!g->n_trees) {
        err_set(e, ERR_DECODE, "%s: no trees", src);
        goto fail;
    }
    g->roots = calloc(g->n_trees, sizeof(*g->roots));
    if (!g->roots) {
        err_set(e, ERR_NOMEM, "%s: out of memory", src);
        goto fail;
    }
    for (size_t t = 0; t < g->n_trees; t++)
        if (load_tree(g, json_array_get(trees, t), t, src, e))
            goto fail;
    return g;
fail:
    gbdt_close(g);
    return NULL;
}

struct gbdt *gbdt_open_string(const char *text, struct err *e)
{
    json_error_t je;
    json_t *root = json_loads(text, 0, &je);
    struct gbdt *g;

    if (!root) {
        err_set(e, ERR_DECODE, "model: not JSON (line %d: %s)", je.line, je.text);
        return NULL;
    }
    g = load(root, "model", e);
    json_decref(root);
    return g;
}

struct gbdt *gbdt_open(const char *path, struct err *e)
{
    json_error_t je;
    FILE *f = fopen(path, "rb");
    int c;
    json_t *root;
    struct gbdt *g;

    if (!f) {
        err_set(e, ERR_CONFIG, "model %s: %s", path, strerror(errno));
        return NULL;
    }
    c = fgetc(f);
    c = c == '{' ? fgetc(f) : -2;
    fclose(f);
    /* UBJSON starts '{' then a type marker ('i', 'U', 'L', '#', '$'). */
    if (c != -2 && c != EOF && c != '"' && c != ' ' && c != '\n' && c != '\r' && c != '\t' &&
        c != '}') {
        err_set(e, ERR_CONFIG,
                "model %s: looks like UBJSON; re-save with save_model('model.json')", path);
        return NULL;
    }
    root = json_load_file(path, 0, &je);
    if (!root) {
        err_set(e, ERR_CONFIG, "model %s: not JSON (line %d: %s)", path, je.line, je.text);
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
    free(g->roots);
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

const char *gbdt_feature_name(const struct gbdt *g, size_t i)
{
    return g->names && i < g->n_features ? g->names[i] : NULL;
}

double gbdt_base_score(const struct gbdt *g)
{
    return g->base_score;
}

/* xgboost compares float features with float thresholds and sums leaves in
 * float; doing the same reproduces its predictions. */
double gbdt_margin(const struct gbdt *g, const float *x)
{
    float sum = 0.0f;

    for (size_t t = 0; t < g->n_trees; t++) {
        const struct node *n = &g->nodes[g->roots[t]];
        while (n->feat >= 0) {
            float v = x[n->feat];
            n = &g->nodes[isnan(v) ? n->dflt : v < n->thr ? n->left : n->right];
        }
        sum += n->thr;
    }
    return (double)sum + g->base_margin;
}

double gbdt_predict(const struct gbdt *g, const float *x)
{
    return 1.0 / (1.0 + exp(-gbdt_margin(g, x)));
}

void gbdt_predict_batch(const struct gbdt *g, const float *x, size_t nrows, double *out)
{
    for (size_t r = 0; r < nrows; r++)
        out[r] = gbdt_predict(g, x + r * g->n_features);
}
