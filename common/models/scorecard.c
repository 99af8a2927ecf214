/* common/models/scorecard.c: points scorecard (format in models/README.md).
 *
 * The card is loaded once and read-only after: per feature, ascending bin
 * upper bounds (x < upper goes to that bin, the last bin is unbounded), the
 * points of each bin and of the missing bin, and the most points the feature
 * can give (for reason codes). Every file problem is ERR_CONFIG, naming the
 * file and the JSON path.
 */
#include "scorecard.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CARD_FORMAT "streamml-scorecard"
#define MAX_BINS 64
#define MAX_FEATURES 4096

struct cfeature {
    char *name;
    size_t n_bins;
    double upper[MAX_BINS]; /* upper[n_bins - 1] = +inf */
    double points[MAX_BINS];
    double missing_points;
    double best; /* the most points this feature can give */
};

struct card {
    char *name, *version;
    struct card_scaling s;
    struct cfeature *f;
    size_t n;
};

/* factor = pdo / ln 2, offset = score0 - factor * ln(odds0). */
static void scaling(double pdo, double score0, double odds0, double *factor, double *offset)
{
    *factor = pdo / log(2.0);
    *offset = score0 - *factor * log(odds0);
}

double card_score_from_prob(double p_bad, double pdo, double score0, double odds0)
{
    double factor, offset;

    scaling(pdo, score0, odds0, &factor, &offset);
    return offset + factor * log((1.0 - p_bad) / p_bad);
}

double card_prob_from_score(double score, double pdo, double score0, double odds0)
{
    double factor, offset;

    scaling(pdo, score0, odds0, &factor, &offset);
    return 1.0 / (1.0 + exp((score - offset) / factor));
}

struct ctx {
    const char *src; /* file name for messages */
    struct err *e;
};

static int bad(const struct ctx *cx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(const struct ctx *cx, const char *fmt, ...)
{
    char msg[200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return err_set(cx->e, ERR_CONFIG, "%s: %s", cx->src, msg);
}

/* A finite JSON number; def when absent (NAN = required). */
static int number(json_t *obj, const char *key, double def, double *out)
{
    json_t *v = json_object_get(obj, key);

    if (!v) {
        *out = def;
        return isnan(def) ? -1 : 0;
    }
    if (!json_is_number(v))
        return -1;
    *out = json_number_value(v);
    return isfinite(*out) ? 0 : -1;
}

/* Typos (say "missing_point") would otherwise silently change scores. */
static int known_keys(const struct ctx *cx, json_t *obj, const char *const *keys, const char *where)
{
    const char *k;
    json_t *v;

    json_object_foreach(obj, k, v)
    {
        size_t i = 0;
        while (keys[i] && strcmp(keys[i], k) != 0)
            i++;
        if (!keys[i])
            return bad(cx, "%s: unknown key \"%s\"", where, k);
    }
    return ERR_OK;
}

static int load_bin(const struct ctx *cx, struct cfeature *f, json_t *b, size_t i, size_t k)
{
    static const char *const keys[] = {"upper", "points", NULL};
    json_t *u = json_object_get(b, "upper");
    int last = i + 1 == f->n_bins;
    char where[96];

    snprintf(where, sizeof(where), "features[%zu].bins[%zu]", k, i);
    if (!json_is_object(b))
        return bad(cx, "%s: not an object", where);
    if (known_keys(cx, b, keys, where))
        return cx->e->code;
    if (number(b, "points", NAN, &f->points[i]))
        return bad(cx, "%s.points: missing or not a finite number", where);
    if (last && u && !json_is_null(u))
        return bad(cx, "%s.upper: the last bin is unbounded (null)", where);
    if (!last && !(json_is_number(u) && isfinite(json_number_value(u))))
        return bad(cx, "%s.upper: missing or not a finite number", where);
    f->upper[i] = last ? INFINITY : json_number_value(u);
    if (i > 0 && !(f->upper[i] > f->upper[i - 1]))
        return bad(cx, "%s.upper: bins not in ascending order", where);
    if (f->points[i] > f->best)
        f->best = f->points[i];
    return ERR_OK;
}

static int load_feature(const struct ctx *cx, struct cfeature *f, json_t *jf, size_t k)
{
    static const char *const keys[] = {"name", "missing_points", "bins", "description", NULL};
    char where[64];
    json_t *bins = json_object_get(jf, "bins");
    const char *name = json_string_value(json_object_get(jf, "name"));

    snprintf(where, sizeof(where), "features[%zu]", k);
    if (!json_is_object(jf))
        return bad(cx, "%s: not an object", where);
    if (known_keys(cx, jf, keys, where))
        return cx->e->code;
    if (!name || !*name)
        return bad(cx, "%s.name: missing or empty", where);
    f->name = strdup(name);
    if (!f->name)
        return err_set(cx->e, ERR_NOMEM, "%s: out of memory", cx->src);
    if (number(jf, "missing_points", NAN, &f->missing_points))
        return bad(cx, "%s.missing_points: missing or not a finite number", where);
    f->n_bins = json_array_size(bins);
    if (!json_is_array(bins) || f->n_bins < 1 || f->n_bins > MAX_BINS)
        return bad(cx, "%s.bins: 1 to %d bins expected", where, MAX_BINS);
    f->best = f->missing_points;
    for (size_t i = 0; i < f->n_bins; i++)
        if (load_bin(cx, f, json_array_get(bins, i), i, k))
            return cx->e->code;
    return ERR_OK;
}

static int load_scaling(const struct ctx *cx, struct card_scaling *s, json_t *root)
{
    /* Defaults as in scorecard.h: PDO 20, 600 at 50:1, 300..850. */
    if (number(root, "pdo", 20, &s->pdo) || number(root, "score0", 600, &s->score0) ||
        number(root, "odds0", 50, &s->odds0) || number(root, "min_score", 300, &s->min_score) ||
        number(root, "max_score", 850, &s->max_score) ||
        number(root, "base_points", 0, &s->base_points))
        return bad(cx, "pdo, score0, odds0, min_score, max_score and base_points must be "
                       "finite numbers");
    if (!(s->pdo > 0) || !(s->odds0 > 0))
        return bad(cx, "pdo and odds0 must be > 0");
    if (!(s->min_score < s->max_score) || fabs(s->min_score) > 1e9 || fabs(s->max_score) > 1e9)
        return bad(cx, "min_score must be below max_score (both within +-1e9)");
    return ERR_OK;
}

static int load_header(const struct ctx *cx, struct card *c, json_t *root)
{
    static const char *const keys[] = {"format",    "version",     "name",     "description",
                                       "pdo",       "score0",      "odds0",    "min_score",
                                       "max_score", "base_points", "features", NULL};
    const char *fmt = json_string_value(json_object_get(root, "format"));
    json_t *nm = json_object_get(root, "name"), *ver = json_object_get(root, "version");

    if (!json_is_object(root))
        return bad(cx, "not a JSON object");
    if (!fmt || strcmp(fmt, CARD_FORMAT) != 0)
        return bad(cx, "format is \"%s\", expected \"" CARD_FORMAT "\"", fmt ? fmt : "(none)");
    if (known_keys(cx, root, keys, "scorecard"))
        return cx->e->code;
    if ((nm && !json_is_string(nm)) || (ver && !json_is_string(ver)))
        return bad(cx, "name and version must be strings");
    c->name = strdup(nm ? json_string_value(nm) : "scorecard");
    c->version = strdup(ver ? json_string_value(ver) : "1");
    if (!c->name || !c->version)
        return err_set(cx->e, ERR_NOMEM, "%s: out of memory", cx->src);
    return load_scaling(cx, &c->s, root);
}

static int load_features(const struct ctx *cx, struct card *c, json_t *fs)
{
    c->n = json_array_size(fs);
    if (!json_is_array(fs) || c->n < 1 || c->n > MAX_FEATURES)
        return bad(cx, "features: 1 to %d features expected", MAX_FEATURES);
    c->f = calloc(c->n, sizeof(*c->f));
    if (!c->f)
        return err_set(cx->e, ERR_NOMEM, "%s: out of memory", cx->src);
    for (size_t i = 0; i < c->n; i++) {
        if (load_feature(cx, &c->f[i], json_array_get(fs, i), i))
            return cx->e->code;
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->f[j].name, c->f[i].name) == 0)
                return bad(cx, "features[%zu]: \"%s\" appears twice", i, c->f[i].name);
    }
    return ERR_OK;
}

static struct card *load(json_t *root, const char *src, struct err *e)
{
    struct ctx cx = {src, e};
    struct card *c = calloc(1, sizeof(*c));

    if (!c) {
        err_set(e, ERR_NOMEM, "%s: out of memory", src);
        return NULL;
    }
    if (load_header(&cx, c, root) || load_features(&cx, c, json_object_get(root, "features"))) {
        card_close(c);
        return NULL;
    }
    return c;
}

struct card *card_open_string(const char *json, struct err *e)
{
    json_error_t je;
    json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &je);
    struct card *c;

    if (!root) {
        err_set(e, ERR_CONFIG, "scorecard: bad JSON at line %d column %d: %s", je.line, je.column,
                je.text);
        return NULL;
    }
    c = load(root, "scorecard", e);
    json_decref(root);
    return c;
}

struct card *card_open(const char *path, struct err *e)
{
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    struct card *c;

    if (!root) {
        /* jansson says "unable to open ...: <strerror>" for a missing file. */
        err_set(e, ERR_CONFIG, "%s: line %d column %d: %s", path, je.line, je.column, je.text);
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

void card_get_scaling(const struct card *c, struct card_scaling *s)
{
    *s = c->s;
}

size_t card_feature_bins(const struct card *c, size_t i, const double **upper,
                         const double **points, double *missing_points)
{
    if (i >= c->n)
        return 0;
    *upper = c->f[i].upper;
    *points = c->f[i].points;
    *missing_points = c->f[i].missing_points;
    return c->f[i].n_bins;
}

static double feature_points(const struct cfeature *f, float x)
{
    size_t i = 0;

    if (isnan(x))
        return f->missing_points;
    while (i + 1 < f->n_bins && !((double)x < f->upper[i]))
        i++;
    return f->points[i];
}

/* Keeps the CARD_MAX_REASONS largest losses, worst first; a tie keeps the
 * earlier feature first (it goes after the equal ones already kept). */
static void add_reason(struct card_result *r, const char *name, double lost)
{
    int i = r->n_reasons;

    if (i == CARD_MAX_REASONS) {
        if (lost <= r->lost[CARD_MAX_REASONS - 1])
            return;
        i = CARD_MAX_REASONS - 1;
    } else {
        r->n_reasons++;
    }
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
    r->points = c->s.base_points;
    for (size_t i = 0; i < c->n; i++) {
        double p = feature_points(&c->f[i], x[i]);
        r->points += p;
        if (c->f[i].best - p > 0)
            add_reason(r, c->f[i].name, c->f[i].best - p);
    }
    /* Clip before converting: the unclipped sum may not fit an int. */
    s = r->points < c->s.min_score ? c->s.min_score : r->points;
    s = s > c->s.max_score ? c->s.max_score : s;
    r->score = (int)floor(s + 0.5);
    r->probability = card_prob_from_score(r->points, c->s.pdo, c->s.score0, c->s.odds0);
}
