#include "promtext.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXFAM 256

struct fam {
    char name[128], type[16];
};

struct checker {
    struct fam fam[MAXFAM];
    int nfam, line;
    char *why;
    size_t cap;
    double last_bucket, inf_bucket;
    char hist[128];
};

static int failf(struct checker *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int failf(struct checker *c, const char *fmt, ...)
{
    va_list ap;
    int n = snprintf(c->why, c->cap, "line %d: ", c->line);

    va_start(ap, fmt);
    vsnprintf(c->why + n, c->cap - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static size_t name_len(const char *s)
{
    size_t n = 0;

    if (!(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':'))
        return 0;
    while (isalnum((unsigned char)s[n]) || s[n] == '_' || s[n] == ':')
        n++;
    return n;
}

static const struct fam *find_fam(const struct checker *c, const char *name, size_t n)
{
    for (int i = 0; i < c->nfam; i++)
        if (strlen(c->fam[i].name) == n && strncmp(c->fam[i].name, name, n) == 0)
            return &c->fam[i];
    return NULL;
}

static int comment(struct checker *c, const char *l)
{
    char name[128], type[16];

    if (strncmp(l, "# TYPE ", 7) != 0)
        return 0; /* HELP and other comments */
    if (sscanf(l + 7, "%127s %15s", name, type) != 2 || name_len(name) != strlen(name))
        return failf(c, "bad TYPE line");
    if (strcmp(type, "counter") && strcmp(type, "gauge") && strcmp(type, "histogram") &&
        strcmp(type, "summary") && strcmp(type, "untyped"))
        return failf(c, "unknown type %s", type);
    if (find_fam(c, name, strlen(name)))
        return failf(c, "second TYPE for %s", name);
    if (c->nfam == MAXFAM)
        return failf(c, "too many families");
    snprintf(c->fam[c->nfam].name, sizeof(c->fam[0].name), "%s", name);
    snprintf(c->fam[c->nfam++].type, sizeof(c->fam[0].type), "%s", type);
    return 0;
}

/* {a="x",b="y"}: returns characters used, -1 on a syntax error. */
static int labels(const char *s)
{
    const char *p = s + 1;

    while (*p != '}') {
        size_t n = name_len(p);
        if (!n || p[n] != '=' || p[n + 1] != '"')
            return -1;
        p += n + 2;
        while (*p && *p != '"') {
            if (*p == '\\' && !(p[1] == '\\' || p[1] == '"' || p[1] == 'n'))
                return -1;
            p += *p == '\\' ? 2 : 1;
        }
        if (*p++ != '"')
            return -1;
        if (*p == ',')
            p++;
        else if (*p != '}')
            return -1;
    }
    return (int)(p + 1 - s);
}

static int parse_value(const char *s, double *v)
{
    char *end;

    if (strcmp(s, "+Inf") == 0 || strcmp(s, "-Inf") == 0) {
        *v = s[0] == '-' ? -INFINITY : INFINITY;
        return 0;
    }
    if (strcmp(s, "NaN") == 0) {
        *v = NAN;
        return 0;
    }
    *v = strtod(s, &end);
    return end != s && (*end == '\0' || *end == ' ') ? 0 : -1;
}

static int histogram_sample(struct checker *c, const char *name, size_t n, const char *lab,
                            double v)
{
    if (n > 7 && strncmp(name + n - 7, "_bucket", 7) == 0) {
        if (!lab || !strstr(lab, "le=\""))
            return failf(c, "bucket without le");
        if (v < c->last_bucket)
            return failf(c, "buckets not cumulative");
        c->last_bucket = v;
        if (strstr(lab, "le=\"+Inf\""))
            c->inf_bucket = v;
    } else if (n > 6 && strncmp(name + n - 6, "_count", 6) == 0) {
        if (v != c->inf_bucket)
            return failf(c, "_count %g differs from the +Inf bucket %g", v, c->inf_bucket);
        c->last_bucket = 0;
    }
    return 0;
}

static int sample(struct checker *c, const char *l)
{
    size_t n = name_len(l), base = n;
    const struct fam *f;
    const char *lab = NULL, *p = l + n;
    double v;

    if (!n)
        return failf(c, "bad metric name");
    if (*p == '{') {
        int k = labels(p);
        if (k < 0)
            return failf(c, "bad labels");
        lab = p;
        p += k;
    }
    if (*p++ != ' ' || parse_value(p, &v))
        return failf(c, "bad value");
    f = find_fam(c, l, n);
    for (const char *suf = "_bucket\0_sum\0_count\0"; !f && *suf; suf += strlen(suf) + 1)
        if (n > strlen(suf) && strncmp(l + n - strlen(suf), suf, strlen(suf)) == 0) {
            base = n - strlen(suf);
            f = find_fam(c, l, base);
        }
    if (!f)
        return failf(c, "sample %.*s before its TYPE", (int)n, l);
    if (strcmp(f->type, "counter") == 0 && (n < 6 || strncmp(l + n - 6, "_total", 6) != 0))
        return failf(c, "counter %.*s not named _total", (int)n, l);
    if (strcmp(f->type, "counter") == 0 && !(v >= 0))
        return failf(c, "counter %.*s negative or NaN", (int)n, l);
    if (strcmp(f->type, "histogram") == 0)
        return histogram_sample(c, l, n, lab, v);
    return 0;
}

int prom_check(const char *text, char *why, size_t cap)
{
    struct checker *c = calloc(1, sizeof(*c));
    const char *p = text;
    char line[4096];
    int rc = 0;

    c->why = why;
    c->cap = cap;
    while (rc == 0 && *p) {
        size_t n = strcspn(p, "\n");
        c->line++;
        if (n >= sizeof(line) || p[n] != '\n') {
            rc = failf(c, n >= sizeof(line) ? "too long" : "no final newline");
            break;
        }
        memcpy(line, p, n);
        line[n] = '\0';
        p += n + 1;
        if (n == 0)
            continue;
        rc = line[0] == '#' ? comment(c, line) : sample(c, line);
    }
    free(c);
    return rc;
}

int prom_value(const char *text, const char *series, double *v)
{
    size_t n = strlen(series);

    for (const char *p = text; *p; p += strcspn(p, "\n") + (p[strcspn(p, "\n")] == '\n')) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ') {
            char val[64];
            size_t k = strcspn(p + n + 1, "\n");
            snprintf(val, sizeof(val), "%.*s", (int)(k < 63 ? k : 63), p + n + 1);
            return parse_value(val, v);
        }
    }
    return -1;
}

const char *prom_type(const char *text, const char *name)
{
    static char type[16];
    char want[160];
    const char *p;

    snprintf(want, sizeof(want), "# TYPE %s ", name);
    if (!(p = strstr(text, want)))
        return NULL;
    sscanf(p + strlen(want), "%15s", type);
    return type;
}
