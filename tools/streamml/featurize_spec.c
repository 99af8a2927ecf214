/* tools/streamml/featurize_spec.c: `streamml featurize --spec SPEC` for a
 * spec on any Avro record schema (not TransactionEvent): JSON lines whose
 * keys are the schema's field names -> the feature CSV.
 *
 * No feature is computed here: each record goes through fspec_build and
 * fspec_update (common/streams/fspec.h) with its entity's state, exactly as a
 * replay of the worker would; records are sorted by event time (stable).
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "featurize_spec.h"
#include "fspec.h"

struct grow {
    char key[FSPEC_NAME_MAX];
    int64_t time;
    size_t seq;
    double *num;
    char *str;
    char label[32];
};

struct ent {
    char key[FSPEC_NAME_MAX];
    struct fspec_state *s;
};

static int by_time(const void *a, const void *b)
{
    const struct grow *x = a, *y = b;

    if (x->time != y->time)
        return x->time < y->time ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static uint64_t hash(const char *s)
{
    uint64_t h = 14695981039346656037ULL;

    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
    return h;
}

/* The entity's state (open addressing; cap a power of two, never full). */
static struct fspec_state *state_of(struct ent *t, size_t cap, const char *key)
{
    size_t i = hash(key) & (cap - 1);

    while (t[i].s && strcmp(t[i].key, key) != 0)
        i = (i + 1) & (cap - 1);
    if (!t[i].s) {
        if (!(t[i].s = malloc(sizeof(*t[i].s))))
            return NULL;
        fspec_state_init(t[i].s);
        snprintf(t[i].key, sizeof(t[i].key), "%s", key);
    }
    return t[i].s;
}

/* One JSON object into g: the spec's fields by name; others are ignored. */
static int read_record(const struct fspec *p, json_t *o, struct grow *g, const char *label,
                       char *why, size_t cap)
{
    size_t nf = fspec_num_fields(p);
    json_t *k = json_object_get(o, fspec_key_field(p)), *t = json_object_get(o, fspec_time_field(p));

    if (json_is_string(k) && *json_string_value(k) &&
        strlen(json_string_value(k)) < sizeof(g->key))
        snprintf(g->key, sizeof(g->key), "%s", json_string_value(k));
    else if (json_is_integer(k))
        snprintf(g->key, sizeof(g->key), "%lld", (long long)json_integer_value(k));
    else
        return snprintf(why, cap, "%s: missing, empty, or not a string of at most %d bytes",
                        fspec_key_field(p), FSPEC_NAME_MAX - 1);
    if (!json_is_integer(t))
        return snprintf(why, cap, "%s: missing or not an integer (ms)", fspec_time_field(p));
    g->time = json_integer_value(t);
    for (size_t i = 0; i < nf; i++) {
        json_t *v = json_object_get(o, fspec_field_name(p, i));
        g->num[i] = NAN;
        g->str[i * FSPEC_NAME_MAX] = '\0';
        if (!v || json_is_null(v))
            continue;
        if (fspec_field_is_string(p, i)) {
            if (!json_is_string(v) || strlen(json_string_value(v)) >= FSPEC_NAME_MAX)
                return snprintf(why, cap, "%s: not a string of at most %d bytes",
                                fspec_field_name(p, i), FSPEC_NAME_MAX - 1);
            snprintf(g->str + i * FSPEC_NAME_MAX, FSPEC_NAME_MAX, "%s", json_string_value(v));
        } else if (json_is_number(v)) {
            g->num[i] = json_number_value(v);
            if (!isfinite(g->num[i]))
                return snprintf(why, cap, "%s: not finite", fspec_field_name(p, i));
        } else if (json_is_boolean(v)) {
            g->num[i] = json_is_true(v) ? 1 : 0;
        } else {
            return snprintf(why, cap, "%s: not a number", fspec_field_name(p, i));
        }
    }
    g->label[0] = '\0';
    if (label) {
        json_t *l = json_object_get(o, label);
        if (json_is_number(l))
            snprintf(g->label, sizeof(g->label), "%.17g", json_number_value(l));
        else if (json_is_boolean(l))
            snprintf(g->label, sizeof(g->label), "%d", json_is_true(l) ? 1 : 0);
    }
    return 0;
}

static void csv_cell(FILE *out, const char *s)
{
    if (!strpbrk(s, ",\"\n")) {
        fputs(s, out);
        return;
    }
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', out);
        fputc(*s, out);
    }
    fputc('"', out);
}

int featurize_spec(const char *spec, struct reg *rg, FILE *in, FILE *out, const char *label,
                   int header, long *invalid)
{
    struct err e = {0};
    struct fspec *p = fspec_open_reg(spec, rg, &e);
    struct grow *rows = NULL;
    struct ent *ents = NULL;
    size_t n = 0, cap = 0, nf, ecap = 1024, line = 0;
    char *buf = NULL, why[200];
    size_t bcap = 0;
    struct fspec_row r;
    float x[FSPEC_OUT_MAX];
    int rc = 0;

    *invalid = 0;
    if (!p || fspec_bind_row(p, &e) || fspec_row_init(p, &r)) {
        fprintf(stderr, "error: --spec: %s\n", e.msg[0] ? e.msg : "out of memory");
        fspec_close(p);
        return 2;
    }
    if (fspec_schema_id(p))
        fprintf(stderr, "featurize: %s: input schema %s\n", spec, fspec_schema_source(p));
    nf = fspec_num_fields(p);
    if (!label && fspec_field_index(p, "label") >= 0)
        label = "label";
    while (getline(&buf, &bcap, in) > 0) {
        json_error_t je;
        json_t *o;
        line++;
        if (strspn(buf, " \t\r\n") == strlen(buf))
            continue;
        if (!(o = json_loads(buf, 0, &je)) || !json_is_object(o)) {
            fprintf(stderr, "line %zu: json: %s\n", line, o ? "not an object" : je.text);
            json_decref(o);
            (*invalid)++;
            continue;
        }
        if (n == cap) {
            struct grow *v = realloc(rows, (cap = cap ? cap * 2 : 1024) * sizeof(*v));
            if (!v)
                break;
            rows = v;
        }
        rows[n].num = malloc((nf + 1) * sizeof(double));
        rows[n].str = malloc((nf + 1) * FSPEC_NAME_MAX);
        if (!rows[n].num || !rows[n].str) {
            free(rows[n].num);
            free(rows[n].str);
            json_decref(o);
            break;
        }
        rows[n].seq = n;
        if (read_record(p, o, &rows[n], label, why, sizeof(why))) {
            fprintf(stderr, "line %zu: %s\n", line, why);
            free(rows[n].num);
            free(rows[n].str);
            (*invalid)++;
        } else {
            n++;
        }
        json_decref(o);
    }
    free(buf);
    qsort(rows, n, sizeof(*rows), by_time);
    while (ecap < 2 * n)
        ecap *= 2;
    if (!(ents = calloc(ecap, sizeof(*ents))))
        rc = 1;
    if (header && !rc) {
        fprintf(out, "%s,%s", fspec_key_field(p), fspec_time_field(p));
        for (size_t i = 0; i < fspec_dim(p); i++)
            fprintf(out, ",%s", fspec_names(p)[i]);
        fprintf(out, label ? ",%s\n" : "\n", label);
    }
    for (size_t i = 0; i < n && !rc; i++) {
        struct fspec_state *s = state_of(ents, ecap, rows[i].key);
        if (!s) {
            rc = 1;
            break;
        }
        memcpy(r.num, rows[i].num, nf * sizeof(double));
        memcpy(r.str, rows[i].str, nf * FSPEC_NAME_MAX);
        r.time_ms = rows[i].time;
        fspec_build(p, &r, s, x);
        fspec_update(p, &r, s, s);
        csv_cell(out, rows[i].key);
        fprintf(out, ",%lld", (long long)rows[i].time);
        for (size_t k = 0; k < fspec_dim(p); k++) {
            if (isnan(x[k]))
                fputc(',', out);
            else
                fprintf(out, ",%.9g", x[k]);
        }
        if (label)
            fprintf(out, ",%s", rows[i].label);
        fputc('\n', out);
    }
    fprintf(stderr, "featurize: %zu row(s), %ld invalid record(s) skipped (spec %s)\n", n,
            *invalid, fspec_name(p));
    for (size_t i = 0; i < n; i++) {
        free(rows[i].num);
        free(rows[i].str);
    }
    for (size_t i = 0; ents && i < ecap; i++)
        free(ents[i].s);
    free(ents);
    free(rows);
    fspec_row_free(&r);
    fspec_close(p);
    return rc;
}
