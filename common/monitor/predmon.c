#include "predmon.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LINE_MAX_BYTES (1 << 20) /* one prediction: 64 items or a CAM grid */

static const char *const click_names[PMON_CLICK_DIM] = {
    "known_item", "warm_session", "share_gru", "share_covisit", "share_popular", "share_explore"};
static const char *const image_names[PMON_IMAGE_DIM] = {"grade", "expected_grade"};

int pmon_kind_parse(const char *s)
{
    if (strcmp(s, "clickstream") == 0)
        return PMON_CLICKSTREAM;
    if (strcmp(s, "images") == 0)
        return PMON_IMAGES;
    return -1;
}

const char *const *pmon_names(enum pmon_kind k, size_t *n)
{
    *n = k == PMON_CLICKSTREAM ? PMON_CLICK_DIM : PMON_IMAGE_DIM;
    return k == PMON_CLICKSTREAM ? click_names : image_names;
}

/* Index of a source name in x (after the two rates); -1 unknown. */
static int source_slot(const char *src)
{
    static const char *const src_names[] = {"gru", "covisit", "popular", "explore"};

    for (int j = 0; j < 4; j++)
        if (strcmp(src, src_names[j]) == 0)
            return 2 + j;
    return -1;
}

void pmon_click_vector(const struct click_prediction *p, float *x, double *score)
{
    x[0] = p->unknown_item ? NAN : 1.0f;
    x[1] = p->cold_start ? NAN : 1.0f;
    for (int j = 2; j < PMON_CLICK_DIM; j++)
        x[j] = 0.0f;
    for (int i = 0; i < p->n_items; i++) {
        int s = source_slot(p->items[i].source);
        if (s >= 0)
            x[s] += 1.0f / (float)p->n_items;
    }
    /* a cold start's score is a popularity relevance, not a GRU logit */
    *score = !p->cold_start && p->n_items > 0 ? p->items[0].score : NAN;
}

void pmon_image_vector(const struct image_prediction *p, float *x, double *score)
{
    x[0] = p->ok ? (float)p->grade : NAN;
    x[1] = p->ok ? (float)p->expected_grade : NAN;
    *score = p->ok ? p->referable_probability : NAN;
}

/* ---- predictions as JSON lines -> the struct fields used above ---- */

static int json_click(json_t *o, struct click_prediction *p)
{
    json_t *items = json_object_get(o, "items"), *it;
    json_t *cold = json_object_get(o, "cold_start"), *unk = json_object_get(o, "unknown_item");
    size_t i;

    if (!json_is_array(items) || !json_is_boolean(cold) || !json_is_boolean(unk) ||
        json_array_size(items) > CLICK_SHOWN_MAX)
        return -1;
    memset(p, 0, sizeof(*p));
    p->cold_start = json_is_true(cold);
    p->unknown_item = json_is_true(unk);
    json_array_foreach(items, i, it)
    {
        json_t *src = json_object_get(it, "source"), *sc = json_object_get(it, "score");
        if (!json_is_string(src) || !json_is_number(sc) ||
            strlen(json_string_value(src)) >= sizeof(p->items[i].source))
            return -1;
        snprintf(p->items[i].source, sizeof(p->items[i].source), "%s", json_string_value(src));
        p->items[i].score = json_number_value(sc);
    }
    p->n_items = (int)json_array_size(items);
    return 0;
}

static int json_image(json_t *o, struct image_prediction *p)
{
    json_t *st = json_object_get(o, "status"), *g = json_object_get(o, "grade");
    json_t *eg = json_object_get(o, "expected_grade");
    json_t *rp = json_object_get(o, "referable_probability");

    if (!json_is_string(st))
        return -1;
    memset(p, 0, sizeof(*p));
    p->ok = strcmp(json_string_value(st), "ok") == 0;
    if (!p->ok)
        return strcmp(json_string_value(st), "ungradable") == 0 ? 0 : -1;
    if (!json_is_integer(g) || json_integer_value(g) < 0 ||
        json_integer_value(g) >= IMGEV_GRADES || !json_is_number(eg) || !json_is_number(rp))
        return -1;
    p->grade = (int32_t)json_integer_value(g);
    p->expected_grade = json_number_value(eg);
    p->referable_probability = json_number_value(rp);
    return 0;
}

/* Column-wise values: dim columns + the score, grown by doubling. */
struct cols {
    size_t dim, n, cap;
    double *v; /* (dim + 1) x cap */
};

static int cols_push(struct cols *c, const float *x, double score)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 1024;
        double *v = malloc((c->dim + 1) * cap * sizeof(double));
        if (!v)
            return ERR_NOMEM;
        for (size_t j = 0; j <= c->dim && c->v; j++)
            memcpy(v + j * cap, c->v + j * c->cap, c->n * sizeof(double));
        free(c->v);
        c->v = v;
        c->cap = cap;
    }
    for (size_t j = 0; j < c->dim; j++)
        c->v[j * c->cap + c->n] = x[j];
    c->v[c->dim * c->cap + c->n] = isfinite(score) ? score : NAN;
    c->n++;
    return ERR_OK;
}

/* One prediction's scratch: either kind. */
struct pred {
    struct click_prediction c;
    struct image_prediction i;
};

static int read_line(enum pmon_kind k, const char *line, size_t lineno, const char *what,
                     struct pred *p, struct cols *c, struct err *e)
{
    json_error_t je;
    json_t *o = json_loads(line, 0, &je);
    float x[PMON_CLICK_DIM];
    double score;
    int bad;

    if (!o)
        return err_set(e, ERR_DECODE, "%s:%zu: not JSON: %s", what, lineno, je.text);
    bad = k == PMON_CLICKSTREAM ? json_click(o, &p->c) : json_image(o, &p->i);
    json_decref(o);
    if (bad)
        return err_set(e, ERR_DECODE, "%s:%zu: not a %s prediction (fields %s)", what, lineno,
                       k == PMON_CLICKSTREAM ? "clickstream" : "images",
                       k == PMON_CLICKSTREAM ? "items[].source/score, cold_start, unknown_item"
                                             : "status, grade, expected_grade, "
                                               "referable_probability");
    if (k == PMON_CLICKSTREAM)
        pmon_click_vector(&p->c, x, &score);
    else
        pmon_image_vector(&p->i, x, &score);
    return cols_push(c, x, score) ? err_set(e, ERR_NOMEM, "out of memory") : ERR_OK;
}

static struct mon_baseline *build(enum pmon_kind k, struct cols *c, const char *model,
                                  struct err *e)
{
    size_t n;
    const char *const *names = pmon_names(k, &n);
    struct mon_baseline *b = mon_baseline_new(k == PMON_CLICKSTREAM ? "clickstream-pred-v1"
                                                                    : "images-pred-v1",
                                              model);
    struct mon_dist d;

    if (!b) {
        err_set(e, ERR_NOMEM, "out of memory");
        return NULL;
    }
    for (size_t j = 0; j <= n; j++) {
        if (mon_dist_compute(c->v + j * c->cap, c->n, &d, e) ||
            (j < n && mon_baseline_add(b, names[j], &d, e))) {
            mon_baseline_free(b);
            return NULL;
        }
        if (j == n && d.count > 0)
            mon_baseline_set_score(b, &d);
    }
    mon_baseline_set_auc(b, NAN, c->n);
    return b;
}

struct mon_baseline *pmon_baseline_read(enum pmon_kind k, FILE *in, const char *what,
                                        const char *model, size_t *rows, struct err *e)
{
    struct cols c = {.dim = k == PMON_CLICKSTREAM ? PMON_CLICK_DIM : PMON_IMAGE_DIM};
    struct mon_baseline *b = NULL;
    char *line = malloc(LINE_MAX_BYTES);
    struct pred *p = malloc(sizeof(*p));
    size_t lineno = 0;

    *rows = 0;
    if (!line || !p) {
        err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    while (fgets(line, LINE_MAX_BYTES, in)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(in)) {
            err_set(e, ERR_DECODE, "%s:%zu: line longer than %d bytes", what, lineno,
                    LINE_MAX_BYTES);
            goto out;
        }
        if (line[0] == '{' && read_line(k, line, lineno, what, p, &c, e))
            goto out;
    }
    if (c.n < 10) {
        err_set(e, ERR_INVALID, "%s: %zu prediction(s): at least 10 are needed for deciles", what,
                c.n);
        goto out;
    }
    *rows = c.n;
    b = build(k, &c, model, e);
out:
    free(line);
    free(p);
    free(c.v);
    return b;
}
