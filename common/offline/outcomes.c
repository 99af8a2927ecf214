/* common/offline/outcomes.c: event id -> label or outcome, read from files or a topic.
 * See outcomes.h. */
#include "outcomes.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "features.h"
#include "replay.h"

#define LINE_MAX_BYTES (1024 * 1024)

/* Open addressing over owned ids; slot[] holds entry indexes or -1. */
struct oc_table {
    enum oc_kind kind;
    char **id;
    double *y;
    unsigned char *joined;
    size_t n, cap, nslots;
    long *slot;
};

static const char *word(const struct oc_table *t)
{
    return t->kind == OC_LABEL ? "label" : "outcome";
}

int oc_open(struct oc_table **out, enum oc_kind kind, struct err *e)
{
    struct oc_table *t = calloc(1, sizeof(*t));

    *out = NULL;
    if (!t)
        return err_set(e, ERR_NOMEM, "out of memory");
    t->kind = kind;
    *out = t;
    return ERR_OK;
}

void oc_close(struct oc_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++)
        free(t->id[i]);
    free(t->id);
    free(t->y);
    free(t->joined);
    free(t->slot);
    free(t);
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static long find_slot(const struct oc_table *t, const char *id)
{
    size_t mask = t->nslots - 1, i = hash_str(id) & mask;

    while (t->slot[i] >= 0 && strcmp(t->id[t->slot[i]], id) != 0)
        i = (i + 1) & mask;
    return (long)i;
}

static int grow(struct oc_table *t)
{
    size_t cap = t->cap ? t->cap * 2 : 1024, nslots = cap * 2;
    char **id = realloc(t->id, cap * sizeof(*id));
    double *y = id ? realloc(t->y, cap * sizeof(*y)) : NULL;
    unsigned char *j = y ? realloc(t->joined, cap) : NULL;
    long *slot = malloc(nslots * sizeof(*slot));

    if (id)
        t->id = id;
    if (y)
        t->y = y;
    if (j)
        t->joined = j;
    if (!j || !slot) {
        free(slot);
        return ERR_NOMEM;
    }
    free(t->slot);
    t->slot = slot;
    t->nslots = nslots;
    t->cap = cap;
    memset(t->slot, 0xff, nslots * sizeof(*slot));
    for (size_t i = 0; i < t->n; i++)
        t->slot[find_slot(t, t->id[i])] = (long)i;
    return ERR_OK;
}

static int put(struct oc_table *t, const char *id, double y, const char *where, struct err *e)
{
    long s;

    if (!isfinite(y))
        return err_set(e, ERR_DECODE, "%s: %s of %s is not a finite number", where, word(t), id);
    if (t->n == t->cap && grow(t))
        return err_set(e, ERR_NOMEM, "out of memory holding %zu %ss", t->n, word(t));
    s = find_slot(t, id);
    if (t->slot[s] >= 0) {
        if (t->kind == OC_OUTCOME)
            return err_set(e, ERR_DECODE, "%s: event %s has two outcomes", where, id);
        t->y[t->slot[s]] = y; /* a corrected label */
        return ERR_OK;
    }
    if (!(t->id[t->n] = strdup(id)))
        return err_set(e, ERR_NOMEM, "out of memory");
    t->y[t->n] = y;
    t->joined[t->n] = 0;
    t->slot[s] = (long)t->n++;
    return ERR_OK;
}

/* Field col of a CSV line (unquoted), its length in *len; NULL if absent. */
static const char *csv_field(const char *line, int col, size_t *len)
{
    const char *p = line;

    for (int c = 0; c < col; c++) {
        p += strcspn(p, ",\r\n");
        if (*p != ',')
            return NULL;
        p++;
    }
    *len = strcspn(p, ",\r\n");
    return p;
}

static int csv_column(const char *line, const char *name)
{
    size_t len, n = strlen(name);
    const char *f;

    for (int c = 0; (f = csv_field(line, c, &len)); c++)
        if (len == n && memcmp(f, name, n) == 0)
            return c;
    return -1;
}

/* The value text s[0..n): 0 and *y set, 1 when it says "not known", -1 bad. */
static int parse_value(const struct oc_table *t, const char *s, size_t n, double *y)
{
    char tmp[64], *end;

    if (n == 0)
        return 1;
    if (n >= sizeof(tmp))
        return -1;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    errno = 0;
    if (t->kind == OC_LABEL) {
        long v = strtol(tmp, &end, 10);
        if (*end || errno || v < -1 || v > 1000)
            return -1;
        *y = (double)v;
        return v == -1;
    }
    *y = strtod(tmp, &end);
    return *end || errno ? -1 : 0;
}

static int line_csv(struct oc_table *t, const char *line, const int *col, const char *where,
                    struct err *e)
{
    size_t ni = 0, ny = 0;
    const char *id = csv_field(line, col[0], &ni), *ys = csv_field(line, col[1], &ny);
    char key[EV_ID_MAX];
    double y = 0;
    int r;

    if (strchr(line, '"'))
        return err_set(e, ERR_DECODE, "%s: quoted CSV fields are not supported", where);
    if (!id || !ys || ni == 0 || ni >= sizeof(key))
        return err_set(e, ERR_DECODE, "%s: missing or over-long event_id or %s", where, word(t));
    if ((r = parse_value(t, ys, ny, &y)) < 0)
        return err_set(e, ERR_DECODE, "%s: %s \"%.*s\" is not %s", where, word(t),
                       (int)(ny < 64 ? ny : 64), ys,
                       t->kind == OC_LABEL ? "an integer in -1..1000" : "a number");
    if (r == 1)
        return ERR_OK;
    memcpy(key, id, ni);
    key[ni] = '\0';
    return put(t, key, y, where, e);
}

static int line_json(struct oc_table *t, const char *line, size_t len, const char *where,
                     struct err *e)
{
    json_error_t je;
    json_t *j = json_loadb(line, len, 0, &je), *id, *y;
    int label = t->kind == OC_LABEL, rc = ERR_OK;

    if (!j)
        return err_set(e, ERR_DECODE, "%s: %s", where, je.text);
    id = json_object_get(j, "event_id");
    if (!id) /* the images stream's events are keyed by image id */
        id = json_object_get(j, "image_id");
    y = json_object_get(j, word(t));
    if (!y && !label)
        y = json_object_get(j, "label");
    if (!json_is_string(id) ||
        (!(label ? json_is_integer(y) || !y : json_is_number(y)) && !json_is_null(y)))
        rc = err_set(e, ERR_DECODE, "%s: needs event_id (string) and %s (%s)", where, word(t),
                     label ? "integer" : "number");
    else if (label && json_is_integer(y) && json_integer_value(y) != -1)
        rc = put(t, json_string_value(id), (double)json_integer_value(y), where, e);
    else if (!label && json_is_number(y))
        rc = put(t, json_string_value(id), json_number_value(y), where, e);
    json_decref(j);
    return rc;
}

/* The header line: col[0] event_id, col[1] the value column. */
static int header(const struct oc_table *t, const char *line, int *col, const char *path,
                  struct err *e)
{
    col[0] = csv_column(line, "event_id");
    if (col[0] < 0) /* the images stream's events are keyed by image id */
        col[0] = csv_column(line, "image_id");
    col[1] = csv_column(line, word(t));
    if (col[1] < 0 && t->kind == OC_OUTCOME)
        col[1] = csv_column(line, "label");
    if (col[0] < 0 || col[1] < 0)
        return err_set(e, ERR_CONFIG,
                       "%s: the CSV header needs event_id and %s columns (image_id for images)",
                       path, t->kind == OC_LABEL ? "label" : "outcome (or label)");
    return ERR_OK;
}

int oc_read_file(struct oc_table *t, const char *path, struct err *e)
{
    FILE *f = fopen(path, "r");
    char *line = NULL, where[300];
    size_t cap = 0;
    ssize_t len;
    long no = 0;
    int rc = ERR_OK, csv = -1, col[2] = {-1, -1};

    if (!f)
        return err_set(e, ERR_CONFIG, "%s: %s", path, strerror(errno));
    while (rc == ERR_OK && (len = getline(&line, &cap, f)) >= 0) {
        snprintf(where, sizeof(where), "%s: line %ld", path, ++no);
        if (len > LINE_MAX_BYTES) {
            rc = err_set(e, ERR_DECODE, "%s longer than %d bytes", where, LINE_MAX_BYTES);
            break;
        }
        if (len == 0 || line[0] == '\n' || line[0] == '\r')
            continue;
        if (csv < 0 && (csv = line[0] != '{')) {
            rc = header(t, line, col, path, e);
            continue;
        }
        rc = csv ? line_csv(t, line, col, where, e) : line_json(t, line, (size_t)len, where, e);
    }
    free(line);
    fclose(f);
    return rc;
}

int oc_read_topic(struct oc_table *t, const char *topic, const struct cfg *cf, struct err *e)
{
    struct rp_bound edge = {RP_EDGE, 0};
    struct codec *cd = NULL;
    struct rp_topic *tp;
    struct rp_input *in = NULL;
    const struct rp_rec *r;
    size_t np;
    const struct cfg_kv *kv = cfg_kafka(cf, &np);
    int rc = ERR_OK;

    if (!(cd = codec_open(cfg_str(cf, "schemas.dir"), e)) ||
        !(tp = rp_topic_open(kv, np, topic, &edge, &edge, NULL, 0, 0, e)) ||
        !(in = rp_input_topic(cd, tp, e)))
        rc = e->code;
    while (rc == ERR_OK && (rc = rp_input_next(in, &r, e)) == 1) {
        rc = ERR_OK;
        if (r->rc == ERR_OK && r->ev.label >= 0)
            rc = put(t, r->ev.event_id, r->ev.label, topic, e);
    }
    rp_input_close(in);
    codec_close(cd);
    return rc;
}

size_t oc_count(const struct oc_table *t)
{
    return t->n;
}

long oc_find(const struct oc_table *t, const char *id)
{
    return t->n ? t->slot[find_slot(t, id)] : -1;
}

double oc_value(const struct oc_table *t, long k)
{
    return t->y[k];
}

int oc_join(struct oc_table *t, long k)
{
    int was = t->joined[k];

    t->joined[k] = 1;
    return was;
}

size_t oc_unjoined(const struct oc_table *t)
{
    size_t n = 0;

    for (size_t i = 0; i < t->n; i++)
        n += !t->joined[i];
    return n;
}
