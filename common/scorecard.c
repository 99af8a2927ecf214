#include "scorecard.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CARD_MAX_BINS 64

struct cfeature {
    char *name;
    size_t n_bins;
    double upper[CARD_MAX_BINS];   /* x < upper[i] goes to bin i; last is +inf */
    double points[CARD_MAX_BINS];
    double missing_points;
    double best;                   /* the most points this feature can give */
};

struct card {
    char *name, *version;
    double pdo, score0, odds0, min_score, max_score, base_points;
    struct cfeature *f;
    size_t n;
};

double card_score_from_prob(double p_bad, double pdo, double score0, double odds0)
{
    double factor = pdo / log(2.0), offset = score0 - factor * log(odds0);

    return offset + factor * log((1.0 - p_bad) / p_bad);
}

double card_prob_from_score(double score, double pdo, double score0, double odds0)
{
    double factor = pdo / log(2.0), offset = score0 - factor * log(odds0);

    return 1.0 / (1.0 + exp((score - offset) / factor));
}

static int num(json_t *o, const char *key, double def, double *out)
{
    json_t *v = json_object_get(o, key);

    if (!v) {
        *out = def;
        return isnan(def) ? -1 : 0;
    }
    if (!json_is_number(v))
        return -1;
    *out = json_number_value(v);
    return isfinite(*out) ? 0 : -1;
}

static int load_feature(struct cfeature *f, json_t *jf, const char *src, size_t k, struct err *e)
{
    json_t *bins = json_object_get(jf, "bins");
    const char *name = json_string_value(json_object_get(jf, "name"));
    size_t n = json_array_size(bins);

    if (!name || !*name)
        return err_set(e, ERR_DECODE, "%s: features[%zu]: name missing", src, k);
    if (!(f->name = strdup(name)))
        return err_set(e, ERR_NOMEM, "%s: out of memory", src);
    if (n < 1 || n > CARD_MAX_BINS)
        return err_set(e, ERR_DECODE, "%s: feature %s: 1..%d bins expected", src, name,
                       CARD_MAX_BINS);
    if (num(jf, "missing_points", NAN, &f->missing_points))
        return err_set(e, ERR_DECODE, "%s: feature %s: missing_points missing", src, name);
    f->n_bins = n;
    f->best = f->missing_points;
    for (size_t i = 0; i < n; i++) {
        json_t *b = json_array_get(bins, i), *u = json_object_get(b, "upper");
        if (num(b, "points", NAN, &f->points[i]))
            return err_set(e, ERR_DECODE, "%s: feature %s bin %zu: points missing", src, name, i);
        if (i + 1 == n ? !json_is_null(u) && u != NULL : !json_is_number(u))
            return err_set(e, ERR_DECODE, "%s: feature %s bin %zu: upper must be a number "
                           "(null for the last bin)", src, name, i);
        f->upper[i] = i + 1 == n ? INFINITY : json_number_value(u);
        if (i > 0 && !(f->upper[i] > f->upper[i - 1]))
            return err_set(e, ERR_DECODE, "%s: feature %s: bins not ascending", src, name);
        if (f->points[i] > f->best)
            f->best = f->points[i];
    }
    return ERR_OK;
}

static int load_header(struct card *c, json_t *root, const char *src, struct err *e)
{
    const char *fmt = json_string_value(json_object_get(root, "format"));
    const char *nm = json_string_value(json_object_get(root, "name"));
    const char *ver = json_string_value(json_object_get(root, "version"));

    if (!fmt || strcmp(fmt, "streamml-scorecard") != 0)
        return err_set(e, ERR_CONFIG, "%s: \"format\" is not \"streamml-scorecard\"", src);
    if (num(root, "pdo", 20, &c->pdo) || num(root, "score0", 600, &c->score0) ||
        num(root, "odds0", 50, &c->odds0) || num(root, "min_score", 300, &c->min_score) ||
        num(root, "max_score", 850, &c->max_score) || num(root, "base_points", 0, &c->base_points))
        return err_set(e, ERR_DECODE, "%s: scaling fields must be finite numbers", src);
    if (c->pdo <= 0 || c->odds0 <= 0 || c->min_score >= c->max_score)
        return err_set(e, ERR_DECODE, "%s: pdo and odds0 must be > 0, min_score < max_score", src);
    c->name = strdup(nm ? nm : "scorecard");
    c->version = strdup(ver ? ver : "1");
    return c->name && c->version ? ERR_OK : err_set(e, ERR_NOMEM, "%s: out of memory", src);
}

static struct card *load(json_t *root, const char *src, struct err *e)
{
    struct card *c = calloc(1, sizeof(*c));
    json_t *fs = json_object_get(root, "features");

    if (!c) {
        err_set(e, ERR_NOMEM, "%s: out of memory", src);
        return NULL;
    }
    if (load_header(c, root, src, e))
        goto fail;
    c->n = json_array_size(fs);
    if (!c->n) {
        err_set(e, ERR_DECODE, "%s: no features", src);
        goto fail;
    }
    if (!(c->f = calloc(c->n, sizeof(*c->f)))) {
        err_set(e, ERR_NOMEM, "%s: out of memory", src);
        goto fail;
    }
    for (size_t i = 0; i < c->n; i++)
        if (load_feature(&c->f[i], json_array_get(fs, i), src, i, e))
            goto fail;
    return c;
fail:
    card_close(c);
    return NULL;
}

struct card *card_open_string(const char *text, struct err *e)
{
    json_error_t je;
    json_t *root = json_loads(text, 0, &je);
    struct card *c;

    if (!root) {
        err_set(e, ERR_DECODE, "scorecard: not JSON (line %d: %s)", je.line, je.text);
        return NULL;
    }
    c = load(root, "scorecard", e);
    json_decref(root);
    return c;
}

struct card *card_open(const char *path, struct err *e)
{
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    struct card *c;

    if (!root) {
        err_set(e, ERR_CONFIG, "scorecard %s: %s (line %d)", path, je.text, je.line);
        return NULL;
    }
    c = load(root, path, e);
    json_decref(root);
    return c;
}

void card_close(struct card *c)
{
    if (!c)
        return;
    for (size_t i = 0; c->f && i < c->n; i++)
        free(c->f[i].name);
    free(c->f);
    free(c->name);
    free(c->version);
    free(c);
}

size_t card_num_features(const struct card *c)
{
    return c->n;
}

const char *card_feature_name(const struct card *c, size_t i)
{
    return i < c->n ? c->f[i].name : NULL;
}

const char *card_name(const struct card *c)
{
    return c->name;
}

const char *card_version(const struct card *c)
{
    return c->version;
}

static double feature_points(const struct cfeature *f, float x)
{
    if (isnan(x))
        return f->missing_points;
    for (size_t i = 0; i < f->n_bins; i++)
        if ((double)x < f->upper[i])
            return f->points[i];
    return f->points[f->n_bins - 1];
}

/* Keeps the CARD_MAX_REASONS largest losses, worst first; ties keep the
 * earlier feature (stable). */
static void add_reason(struct card_result *r, const char *name, double lost)
{
    int i = r->n_reasons < CARD_MAX_REASONS ? r->n_reasons++ : CARD_MAX_REASONS;

    if (i == CARD_MAX_REASONS && lost <= r->lost[CARD_MAX_REASONS - 1])
        return;
    if (i == CARD_MAX_REASONS)
        i = CARD_MAX_REASONS - 1;
    while (i > 0 && r->lost[i - 1] < lost) {
        r->lost[i] = r->lost[i - 1];
        r->reasons[i] = r->reasons[i - 1];
        i--;
    }
    r->lost[i] = lost;
    r->reasons[i] = name;
}

void card_score(const struct card *c, const float *x, struct card_result *r)
{
    double s;

    memset(r, 0, sizeof(*r));
    r->points = c->base_points;
    for (size_t i = 0; i < c->n; i++) {
        double p = feature_points(&c->f[i], x[i]);
        r->points += p;
        if (c->f[i].best - p > 1e-9)
            add_reason(r, c->f[i].name, c->f[i].best - p);
    }
    s = floor(r->points + 0.5);
    r->score = (int)(s < c->min_score ? c->min_score : s > c->max_score ? c->max_score : s);
    r->probability = card_prob_from_score(r->points, c->pdo, c->score0, c->odds0);
}
