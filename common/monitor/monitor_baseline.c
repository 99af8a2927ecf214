/* Baseline files (part of the monitor module): JSON through jansson.
 *
 * {"format": "streamml-baseline", "version": 1, "feature_version": "txn-v1",
 *  "model": "...", "rows": N, "auc": 0.83 | null,
 *  "features": [{"name", "count", "missing_rate", "mean", "std", "min", "max",
 *                "edges": [..], "proportions": [..]}, ...],
 *  "score": {same fields but name} | null}
 * mean/std/min/max are null for a feature with no value in training.
 */
#include "monitor_int.h"
#include "out.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define BASELINE_FORMAT "streamml-baseline"

struct mon_baseline *mon_baseline_new(const char *feature_version, const char *model)
{
    struct mon_baseline *b = calloc(1, sizeof(*b));

    if (!b)
        return NULL;
    snprintf(b->feature_version, sizeof(b->feature_version), "%s", feature_version);
    snprintf(b->model, sizeof(b->model), "%s", model);
    b->auc = NAN;
    return b;
}

void mon_baseline_free(struct mon_baseline *b)
{
    if (!b)
        return;
    free(b->feat);
    free(b->names);
    free(b);
}

int mon_baseline_add(struct mon_baseline *b, const char *name, const struct mon_dist *d,
                     struct err *e)
{
    struct mon_feat *f;

    if (!*name || strlen(name) >= MON_NAME_MAX)
        return err_set(e, ERR_INVALID, "feature name \"%.70s\" empty or too long", name);
    for (size_t i = 0; i < b->n; i++)
        if (strcmp(b->feat[i].name, name) == 0)
            return err_set(e, ERR_INVALID, "feature \"%s\" given twice", name);
    if (b->n == MON_MAX_FEATURES)
        return err_set(e, ERR_INVALID, "more than %d features", MON_MAX_FEATURES);
    f = realloc(b->feat, (b->n + 1) * sizeof(*f));
    if (!f)
        return err_set(e, ERR_NOMEM, "out of memory");
    b->feat = f;
    snprintf(f[b->n].name, MON_NAME_MAX, "%s", name);
    f[b->n].d = *d;
    b->n++;
    return ERR_OK;
}

void mon_baseline_set_score(struct mon_baseline *b, const struct mon_dist *d)
{
    b->score = *d;
    b->has_score = 1;
}

void mon_baseline_set_auc(struct mon_baseline *b, double auc, size_t rows)
{
    b->auc = auc;
    b->rows = rows;
}

size_t mon_baseline_num_features(const struct mon_baseline *b)
{
    return b->n;
}

const char *mon_baseline_feature(const struct mon_baseline *b, size_t i)
{
    return i < b->n ? b->feat[i].name : NULL;
}

const struct mon_dist *mon_baseline_dist(const struct mon_baseline *b, size_t i)
{
    return i < b->n ? &b->feat[i].d : NULL;
}

const struct mon_dist *mon_baseline_score(const struct mon_baseline *b)
{
    return b->has_score ? &b->score : NULL;
}

double mon_baseline_auc(const struct mon_baseline *b)
{
    return b->auc;
}

const char *mon_baseline_model(const struct mon_baseline *b)
{
    return b->model;
}

/* ---- save ---- */

static json_t *num_or_null(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

static json_t *reals(const double *x, int n)
{
    json_t *a = json_array();

    for (int i = 0; a && i < n; i++)
        json_array_append_new(a, json_real(x[i]));
    return a;
}

static json_t *dist_json(const char *name, const struct mon_dist *d)
{
    json_t *o = json_object();

    if (!o)
        return NULL;
    if (name)
        json_object_set_new(o, "name", json_string(name));
    json_object_set_new(o, "count", json_integer((json_int_t)d->count));
    json_object_set_new(o, "missing_rate", num_or_null(d->missing_rate));
    json_object_set_new(o, "mean", num_or_null(d->mean));
    json_object_set_new(o, "std", num_or_null(d->std));
    json_object_set_new(o, "min", num_or_null(d->min));
    json_object_set_new(o, "max", num_or_null(d->max));
    json_object_set_new(o, "edges", reals(d->edges, d->nedges));
    json_object_set_new(o, "proportions", reals(d->prop, d->count ? d->nedges + 1 : 0));
    return o;
}

static json_t *baseline_json(const struct mon_baseline *b)
{
    json_t *root = json_object(), *fs = json_array();

    if (!root || !fs) {
        json_decref(root);
        json_decref(fs);
        return NULL;
    }
    json_object_set_new(root, "format", json_string(BASELINE_FORMAT));
    json_object_set_new(root, "version", json_integer(1));
    json_object_set_new(root, "feature_version", json_string(b->feature_version));
    json_object_set_new(root, "model", json_string(b->model));
    json_object_set_new(root, "rows", json_integer((json_int_t)b->rows));
    json_object_set_new(root, "psi_epsilon", json_real(MON_PSI_EPS));
    json_object_set_new(root, "auc", num_or_null(b->auc));
    for (size_t i = 0; i < b->n; i++)
        json_array_append_new(fs, dist_json(b->feat[i].name, &b->feat[i].d));
    json_object_set_new(root, "features", fs);
    json_object_set_new(root, "score", b->has_score ? dist_json(NULL, &b->score) : json_null());
    return root;
}

int mon_baseline_save(const struct mon_baseline *b, const char *path, struct err *e)
{
    json_t *root = baseline_json(b);
    struct out *o;
    int rc;

    if (!root)
        return err_set(e, ERR_NOMEM, "out of memory");
    /* common/base/out.h: a file appears whole, a device or FIFO is written as it is. */
    if (out_open(&o, path, e)) {
        json_decref(root);
        return e->code;
    }
    errno = 0;
    rc = json_dumpf(root, out_file(o), JSON_INDENT(1) | JSON_REAL_PRECISION(17));
    json_decref(root);
    if (rc) { /* name the cause (ENOSPC ...) when it was the stream */
        int saved = errno ? errno : fflush(out_file(o)) ? errno : 0;
        out_abort(o);
        return err_set(e, ERR_IO, "%s: write failed: %s", path,
                       saved ? strerror(saved) : "cannot write");
    }
    return out_commit(o, e);
}

/* ---- load ---- */

struct ld {
    const char *what;
    struct err *e;
};

static int bad(struct ld *l, const char *path, const char *why)
{
    return err_set(l->e, ERR_CONFIG, "%s: %s: %s", l->what, path, why);
}

/* A number, or NaN for null when nullable. */
static int get_num(struct ld *l, json_t *o, const char *key, const char *path, int nullable,
                   double *out)
{
    json_t *v = json_object_get(o, key);
    char p[160];

    snprintf(p, sizeof(p), "%s.%s", path, key);
    if (nullable && (!v || json_is_null(v))) {
        *out = NAN;
        return ERR_OK;
    }
    if (!json_is_number(v))
        return bad(l, p, v ? "not a number" : "missing");
    *out = json_number_value(v);
    return isfinite(*out) ? ERR_OK : bad(l, p, "not finite");
}

static int get_reals(struct ld *l, json_t *o, const char *key, const char *path, double *out,
                     int max, int *n)
{
    json_t *a = json_object_get(o, key), *v;
    char p[160];
    size_t i;

    snprintf(p, sizeof(p), "%s.%s", path, key);
    if (!json_is_array(a))
        return bad(l, p, "missing or not an array");
    if (json_array_size(a) > (size_t)max)
        return bad(l, p, "too many values");
    json_array_foreach(a, i, v) {
        if (!json_is_number(v) || !isfinite(json_number_value(v)))
            return bad(l, p, "holds a value that is not a finite number");
        out[i] = json_number_value(v);
    }
    *n = (int)json_array_size(a);
    return ERR_OK;
}

static int check_dist(struct ld *l, const char *path, const struct mon_dist *d, int nprop)
{
    double sum = 0;

    for (int k = 1; k < d->nedges; k++)
        if (!(d->edges[k] > d->edges[k - 1]))
            return bad(l, path, "edges not strictly increasing");
    if (d->count && nprop != d->nedges + 1)
        return bad(l, path, "proportions must number edges + 1");
    if (!d->count && nprop)
        return bad(l, path, "proportions given for a feature with no value");
    for (int k = 0; k < nprop; k++) {
        if (d->prop[k] < 0 || d->prop[k] > 1)
            return bad(l, path, "a proportion is outside [0, 1]");
        sum += d->prop[k];
    }
    if (nprop && fabs(sum - 1) > 1e-6)
        return bad(l, path, "proportions do not sum to 1");
    if (!(d->missing_rate >= 0 && d->missing_rate <= 1))
        return bad(l, path, "missing_rate outside [0, 1]");
    if (d->count && !isfinite(d->mean))
        return bad(l, path, "mean is null for a feature with values");
    return ERR_OK;
}

static int load_dist(struct ld *l, json_t *o, const char *path, struct mon_dist *d)
{
    json_t *c = json_object_get(o, "count");
    int nprop = 0;
    char p[160];

    memset(d, 0, sizeof(*d));
    if (!json_is_object(o))
        return bad(l, path, "not an object");
    snprintf(p, sizeof(p), "%s.count", path);
    if (!json_is_integer(c) || json_integer_value(c) < 0)
        return bad(l, p, "missing or not a count");
    d->count = (size_t)json_integer_value(c);
    if (get_num(l, o, "missing_rate", path, 0, &d->missing_rate) ||
        get_num(l, o, "mean", path, 1, &d->mean) || get_num(l, o, "std", path, 1, &d->std) ||
        get_num(l, o, "min", path, 1, &d->min) || get_num(l, o, "max", path, 1, &d->max) ||
        get_reals(l, o, "edges", path, d->edges, MON_BINS - 1, &d->nedges) ||
        get_reals(l, o, "proportions", path, d->prop, MON_BINS, &nprop))
        return l->e->code;
    return check_dist(l, path, d, nprop);
}

static int load_features(struct ld *l, json_t *root, struct mon_baseline *b)
{
    json_t *fs = json_object_get(root, "features"), *f;
    size_t i;

    if (!json_is_array(fs))
        return bad(l, "features", "missing or not an array");
    json_array_foreach(fs, i, f) {
        char path[64];
        struct mon_dist d;
        const char *name = json_string_value(json_object_get(f, "name"));
        snprintf(path, sizeof(path), "features[%zu]", i);
        if (!name)
            return bad(l, path, "no \"name\" string");
        if (load_dist(l, f, path, &d))
            return l->e->code;
        if (mon_baseline_add(b, name, &d, l->e))
            return err_wrap(l->e, "%s: %s", l->what, path);
    }
    return ERR_OK;
}

static int load_header(struct ld *l, json_t *root, struct mon_baseline *b)
{
    const char *fmt = json_string_value(json_object_get(root, "format"));
    const char *fv = json_string_value(json_object_get(root, "feature_version"));
    const char *model = json_string_value(json_object_get(root, "model"));
    json_t *rows = json_object_get(root, "rows");

    if (!json_is_object(root))
        return bad(l, "(root)", "not a JSON object");
    if (!fmt || strcmp(fmt, BASELINE_FORMAT) != 0)
        return bad(l, "format", "not \"" BASELINE_FORMAT "\" (made by streamml profile?)");
    if (json_integer_value(json_object_get(root, "version")) != 1)
        return bad(l, "version", "only version 1 is known");
    snprintf(b->feature_version, sizeof(b->feature_version), "%s", fv ? fv : "");
    snprintf(b->model, sizeof(b->model), "%s", model ? model : "");
    b->rows = json_is_integer(rows) && json_integer_value(rows) > 0
                  ? (size_t)json_integer_value(rows)
                  : 0;
    if (get_num(l, root, "auc", "(root)", 1, &b->auc))
        return l->e->code;
    if (!isnan(b->auc) && (b->auc < 0 || b->auc > 1))
        return bad(l, "auc", "outside [0, 1]");
    return ERR_OK;
}

static struct mon_baseline *from_json(json_t *root, struct ld *l)
{
    struct mon_baseline *b = mon_baseline_new("", "");
    json_t *s;

    if (!b) {
        err_set(l->e, ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (load_header(l, root, b) || load_features(l, root, b))
        goto fail;
    s = json_object_get(root, "score");
    if (s && !json_is_null(s)) {
        if (load_dist(l, s, "score", &b->score))
            goto fail;
        b->has_score = 1;
    }
    return b;
fail:
    mon_baseline_free(b);
    return NULL;
}

struct mon_baseline *mon_baseline_parse(const char *json, const char *what, struct err *e)
{
    struct ld l = {what, e};
    json_error_t je;
    json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &je);
    struct mon_baseline *b;

    if (!root) {
        err_set(e, ERR_CONFIG, "%s: line %d: %s", what, je.line, je.text);
        return NULL;
    }
    b = from_json(root, &l);
    json_decref(root);
    return b;
}

struct mon_baseline *mon_baseline_load(const char *path, struct err *e)
{
    struct ld l = {path, e};
    struct stat st;
    json_error_t je;
    json_t *root;
    struct mon_baseline *b;

    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
        err_set(e, ERR_CONFIG, "%s: not a readable file", path);
        return NULL;
    }
    if (st.st_size > MON_BASELINE_MAX) {
        err_set(e, ERR_CONFIG, "%s: %lld bytes, over the %d-byte limit of a baseline", path,
                (long long)st.st_size, MON_BASELINE_MAX);
        return NULL;
    }
    if (!(root = json_load_file(path, JSON_REJECT_DUPLICATES, &je))) {
        err_set(e, ERR_CONFIG, "%s: line %d: %s", path, je.line, je.text);
        return NULL;
    }
    b = from_json(root, &l);
    json_decref(root);
    return b;
}
