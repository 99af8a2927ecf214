/* common/streams/fspec_parse.c: a feature spec's YAML (libyaml), its expressions
 * and its Avro schema (.avsc, jansson) into struct fs_ast.
 *
 * Strict on purpose: an unknown key is an error (a typo must not silently
 * drop a feature) and every message names file:line and the field. All
 * sizes are bounded (file, features, nodes, expression depth).
 */
#include "fspec_int.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "registry.h"

#define EXPR_DEPTH 64

struct ps {
    struct fs_ast *a;
    yaml_document_t *doc;
    struct err *e;
};

static int fail(struct ps *p, int line, const char *fmt, ...)
{
    char msg[400];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return err_set(p->e, ERR_CONFIG, "%s:%d: %s", p->a->file, line, msg);
}

static int line_of(const yaml_node_t *n)
{
    return n ? (int)n->start_mark.line + 1 : 0;
}

static yaml_node_t *node(struct ps *p, int id)
{
    return yaml_document_get_node(p->doc, id);
}

static const char *scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* Copies a scalar that must be a name: [A-Za-z_][A-Za-z0-9_.-]*, bounded. */
static int get_name(struct ps *p, const yaml_node_t *n, const char *what, char *out)
{
    const char *s = scalar(n);
    size_t len = s ? strlen(s) : 0;

    if (!s || len == 0)
        return fail(p, line_of(n), "%s: expected a name", what);
    if (len >= FSPEC_NAME_MAX)
        return fail(p, line_of(n), "%s: name longer than %d bytes", what, FSPEC_NAME_MAX - 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(isalpha(c) || c == '_' || (i && (isdigit(c) || c == '.' || c == '-'))))
            return fail(p, line_of(n), "%s: \"%s\" is not a name ([A-Za-z_][A-Za-z0-9_.-]*)",
                        what, s);
    }
    memcpy(out, s, len + 1);
    return ERR_OK;
}

static int get_number(struct ps *p, const yaml_node_t *n, const char *what, double *out)
{
    const char *s = scalar(n);
    char *end;

    if (!s)
        return fail(p, line_of(n), "%s: expected a number", what);
    if (strcasecmp(s, "nan") == 0 || strcasecmp(s, ".nan") == 0) {
        *out = NAN;
        return ERR_OK;
    }
    errno = 0;
    *out = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(*out))
        return fail(p, line_of(n), "%s: \"%s\" is not a finite number", what, s);
    return ERR_OK;
}

/* "5m", "1h", "30d", "90s", "250ms" -> ms; whole positive amounts only. */
static int get_duration(struct ps *p, const yaml_node_t *n, const char *what, int64_t *ms)
{
    static const struct {
        const char *u;
        int64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    const char *s = scalar(n);
    char *end;
    long long v;

    if (!s)
        return fail(p, line_of(n), "%s: expected a duration like 5m, 1h or 30d", what);
    errno = 0;
    v = strtoll(s, &end, 10);
    if (end == s || errno || v <= 0 || v > 100000000)
        return fail(p, line_of(n), "%s: \"%s\" is not a duration like 5m, 1h or 30d", what, s);
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(end, units[i].u) == 0) {
            *ms = v * units[i].ms;
            if (*ms > 3650LL * 86400000)
                return fail(p, line_of(n), "%s: %s is longer than 10 years", what, s);
            return ERR_OK;
        }
    }
    return fail(p, line_of(n), "%s: \"%s\": unit must be ms, s, m, h or d", what, s);
}

/* ---- expressions: a small recursive-descent parser into a node pool ---- */

struct lex {
    struct ps *p;
    const char *s, *at;
    int line, depth;
    const char *what;
};

static void skip_ws(struct lex *l)
{
    while (*l->at == ' ' || *l->at == '\t' || *l->at == '\n' || *l->at == '\r')
        l->at++;
}

static int lex_fail(struct lex *l, const char *why)
{
    return fail(l->p, l->line, "%s: %s at column %d of \"%s\"", l->what, why,
                (int)(l->at - l->s) + 1, l->s);
}

static int new_node(struct lex *l, int op, int a, int b, int c, double k)
{
    struct fs_ast *A = l->p->a;
    struct fs_node *n;

    if (A->nnode >= FS_NODE_MAX)
        return lex_fail(l, "too many expression nodes"), -1;
    n = &A->nodes[A->nnode];
    *n = (struct fs_node){.op = op, .a = a, .b = b, .c = c, .k = k};
    return A->nnode++;
}

static int parse_expr(struct lex *l);

static const struct {
    const char *name;
    int op, argc;
} funcs[] = {{"log", OP_LOG, 1},   {"log1p", OP_LOG1P, 1}, {"abs", OP_ABS, 1},
             {"sqrt", OP_SQRT, 1}, {"clip", OP_CLIP, 3},   {"min", OP_MIN, 2},
             {"max", OP_MAX, 2},   {"coalesce", OP_COALESCE, 2}, {"is_missing", OP_ISMISSING, 1}};

static int parse_call(struct lex *l, const char *fname)
{
    int args[3] = {-1, -1, -1}, argc = 0;

    for (size_t i = 0; i < sizeof(funcs) / sizeof(funcs[0]); i++) {
        if (strcmp(funcs[i].name, fname) != 0)
            continue;
        l->at++; /* '(' */
        for (;;) {
            if (argc == 3)
                return lex_fail(l, "too many arguments"), -1;
            if ((args[argc++] = parse_expr(l)) < 0)
                return -1;
            skip_ws(l);
            if (*l->at == ',') {
                l->at++;
                continue;
            }
            if (*l->at != ')')
                return lex_fail(l, "expected ',' or ')'"), -1;
            l->at++;
            break;
        }
        if (argc != funcs[i].argc) {
            char why[96];
            snprintf(why, sizeof(why), "%s() takes %d argument(s), got %d", fname, funcs[i].argc,
                     argc);
            return lex_fail(l, why), -1;
        }
        return new_node(l, funcs[i].op, args[0], args[1], args[2], 0);
    }
    return lex_fail(l, "unknown function (log, log1p, abs, sqrt, clip, min, max, coalesce, "
                       "is_missing)"),
           -1;
}

static int parse_primary(struct lex *l)
{
    skip_ws(l);
    if (*l->at == '(') {
        int n;
        l->at++;
        if ((n = parse_expr(l)) < 0)
            return -1;
        skip_ws(l);
        if (*l->at != ')')
            return lex_fail(l, "expected ')'"), -1;
        l->at++;
        return n;
    }
    if (isdigit((unsigned char)*l->at) || *l->at == '.') {
        char *end;
        double v = strtod(l->at, &end);
        if (end == l->at || !isfinite(v))
            return lex_fail(l, "bad number"), -1;
        l->at = end;
        return new_node(l, OP_CONST, -1, -1, -1, v);
    }
    if (isalpha((unsigned char)*l->at) || *l->at == '_') {
        const char *b = l->at;
        int n;
        size_t len;
        char name[FSPEC_NAME_MAX];
        while (isalnum((unsigned char)*l->at) || *l->at == '_')
            l->at++;
        len = (size_t)(l->at - b);
        if (len >= FSPEC_NAME_MAX)
            return lex_fail(l, "name too long"), -1;
        memcpy(name, b, len);
        name[len] = '\0';
        skip_ws(l);
        if (*l->at == '(')
            return parse_call(l, name);
        if ((n = new_node(l, OP_FIELD, -1, -1, -1, 0)) >= 0)
            memcpy(l->p->a->nodes[n].name, name, len + 1);
        return n;
    }
    return lex_fail(l, *l->at ? "unexpected character" : "unexpected end"), -1;
}

static int parse_unary(struct lex *l)
{
    int n;

    skip_ws(l);
    if (*l->at != '-')
        return parse_primary(l);
    l->at++;
    if (++l->depth > EXPR_DEPTH)
        return lex_fail(l, "nested too deep"), -1;
    n = parse_unary(l);
    l->depth--;
    return n < 0 ? -1 : new_node(l, OP_NEG, n, -1, -1, 0);
}

static int parse_mul(struct lex *l)
{
    int a = parse_unary(l);

    while (a >= 0) {
        int op, b;
        skip_ws(l);
        if (*l->at != '*' && *l->at != '/')
            break;
        op = *l->at++ == '*' ? OP_MUL : OP_DIV;
        if ((b = parse_unary(l)) < 0)
            return -1;
        a = new_node(l, op, a, b, -1, 0);
    }
    return a;
}

static int parse_add(struct lex *l)
{
    int a = parse_mul(l);

    while (a >= 0) {
        int op, b;
        skip_ws(l);
        if (*l->at != '+' && *l->at != '-')
            break;
        op = *l->at++ == '+' ? OP_ADD : OP_SUB;
        if ((b = parse_mul(l)) < 0)
            return -1;
        a = new_node(l, op, a, b, -1, 0);
    }
    return a;
}

static int parse_expr(struct lex *l)
{
    static const struct {
        const char *tok;
        int op;
    } cmps[] = {{">=", OP_GE}, {"<=", OP_LE}, {"==", OP_EQ}, {"!=", OP_NE}, {">", OP_GT},
                {"<", OP_LT}};
    int a, b;

    if (++l->depth > EXPR_DEPTH)
        return lex_fail(l, "nested too deep"), -1;
    if ((a = parse_add(l)) < 0)
        return -1;
    skip_ws(l);
    for (size_t i = 0; i < sizeof(cmps) / sizeof(cmps[0]); i++) {
        size_t n = strlen(cmps[i].tok);
        if (strncmp(l->at, cmps[i].tok, n) == 0) {
            l->at += n;
            if ((b = parse_add(l)) < 0)
                return -1;
            a = new_node(l, cmps[i].op, a, b, -1, 0);
            break;
        }
    }
    l->depth--;
    return a;
}

static int parse_expr_text(struct ps *p, const yaml_node_t *n, const char *what, int *root)
{
    struct lex l = {.p = p, .s = scalar(n), .line = line_of(n), .what = what};

    if (!l.s)
        return fail(p, line_of(n), "%s: expected an expression", what);
    l.at = l.s;
    if ((*root = parse_expr(&l)) < 0)
        return ERR_CONFIG;
    skip_ws(&l);
    if (*l.at)
        return lex_fail(&l, "unexpected text after the expression");
    return ERR_OK;
}

/* ---- the YAML structure ---- */

/* Walks a mapping: for each pair, key text and value node. */
#define FOR_PAIRS(p, map, k, v)                                                                    \
    for (yaml_node_pair_t *pr_ = (map)->data.mapping.pairs.start;                                  \
         pr_ < (map)->data.mapping.pairs.top &&                                                    \
         ((k) = scalar(node(p, pr_->key)), (v) = node(p, pr_->value), 1);                          \
         pr_++)

static int want(struct ps *p, const yaml_node_t *n, yaml_node_type_t t, const char *what)
{
    static const char *const tn[] = {"", "a value", "a list", "a mapping"};

    if (!n || n->type != t)
        return fail(p, line_of(n), "%s: expected %s", what, tn[t]);
    return ERR_OK;
}

static int parse_codes(struct ps *p, const yaml_node_t *m, struct fs_feat *f, const char *what)
{
    const char *k;
    yaml_node_t *v, *map = NULL;
    char w[160];
    int have_field = 0;

    if (want(p, m, YAML_MAPPING_NODE, what))
        return ERR_CONFIG;
    f->unknown = 0;
    f->missing = NAN;
    FOR_PAIRS(p, m, k, v)
    {
        snprintf(w, sizeof(w), "%s.%s", what, k ? k : "?");
        if (k && strcmp(k, "field") == 0) {
            if (get_name(p, v, w, f->field))
                return ERR_CONFIG;
            have_field = 1;
        } else if (k && strcmp(k, "map") == 0) {
            map = v;
        } else if (k && strcmp(k, "unknown") == 0) {
            if (get_number(p, v, w, &f->unknown))
                return ERR_CONFIG;
        } else if (k && strcmp(k, "missing") == 0) {
            if (get_number(p, v, w, &f->missing))
                return ERR_CONFIG;
        } else {
            return fail(p, line_of(v), "%s: unknown key (field, map, unknown, missing)", w);
        }
    }
    if (!have_field || !map)
        return fail(p, line_of(m), "%s: needs field and map", what);
    snprintf(w, sizeof(w), "%s.map", what);
    if (map->type == YAML_SEQUENCE_NODE) {
        f->ncats = (int)(map->data.sequence.items.top - map->data.sequence.items.start);
    } else if (map->type == YAML_MAPPING_NODE) {
        f->ncats = (int)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
    } else {
        return fail(p, line_of(map), "%s: expected a list or a mapping of categories", w);
    }
    if (f->ncats < 1 || f->ncats > FS_CAT_MAX)
        return fail(p, line_of(map), "%s: 1 to %d categories", w, FS_CAT_MAX);
    f->cats = calloc((size_t)f->ncats, sizeof(*f->cats));
    f->codes = calloc((size_t)f->ncats, sizeof(double));
    if (!f->cats || !f->codes)
        return err_set(p->e, ERR_NOMEM, "out of memory");
    for (int i = 0; i < f->ncats; i++) {
        yaml_node_t *c, *code = NULL;
        const char *s;
        if (map->type == YAML_SEQUENCE_NODE) {
            c = node(p, map->data.sequence.items.start[i]);
            f->codes[i] = i + 1;
        } else {
            c = node(p, map->data.mapping.pairs.start[i].key);
            code = node(p, map->data.mapping.pairs.start[i].value);
            if (get_number(p, code, w, &f->codes[i]))
                return ERR_CONFIG;
        }
        s = scalar(c);
        if (!s || !*s || strlen(s) >= FSPEC_NAME_MAX)
            return fail(p, line_of(c), "%s: a category must be 1 to %d bytes", w,
                        FSPEC_NAME_MAX - 1);
        for (int j = 0; j < i; j++)
            if (strcasecmp(f->cats[j], s) == 0)
                return fail(p, line_of(c), "%s: category \"%s\" listed twice", w, s);
        snprintf(f->cats[i], FSPEC_NAME_MAX, "%s", s);
    }
    return ERR_OK;
}

static int parse_agg_name(struct ps *p, const yaml_node_t *v, const char *w, int *agg)
{
    const char *s = scalar(v);

    for (int a = AG_COUNT; s && a <= AG_ZSCORE; a++)
        if (strcmp(s, fs_agg_name(a)) == 0) {
            *agg = a;
            return ERR_OK;
        }
    return fail(p, line_of(v),
                "%s: \"%s\" is not an aggregate (count, sum, mean, min, max, std, last, "
                "since_prev, zscore)",
                w, s ? s : "?");
}

static int parse_feature(struct ps *p, const yaml_node_t *m, int idx)
{
    struct fs_feat *f = &p->a->feats[idx];
    const char *k;
    yaml_node_t *v, *expr = NULL;
    char what[96], w[160];
    int kinds = 0;

    snprintf(what, sizeof(what), "features[%d]", idx);
    if (want(p, m, YAML_MAPPING_NODE, what))
        return ERR_CONFIG;
    f->line = line_of(m);
    FOR_PAIRS(p, m, k, v)
    {
        if (k && strcmp(k, "name") == 0) {
            if (get_name(p, v, what, f->name))
                return ERR_CONFIG;
            snprintf(what, sizeof(what), "features[%d] (%s)", idx, f->name);
        }
    }
    if (!f->name[0])
        return fail(p, f->line, "%s: needs a name", what);
    FOR_PAIRS(p, m, k, v)
    {
        snprintf(w, sizeof(w), "%s.%s", what, k ? k : "?");
        if (!k) {
            return fail(p, line_of(v), "%s: a key must be text", what);
        } else if (strcmp(k, "name") == 0 || strcmp(k, "doc") == 0) {
            continue;
        } else if (strcmp(k, "expr") == 0) {
            f->kind = FK_EXPR, kinds++;
            expr = v;
        } else if (strcmp(k, "codes") == 0) {
            f->kind = FK_CODES, kinds++;
            if (parse_codes(p, v, f, w))
                return ERR_CONFIG;
        } else if (strcmp(k, "agg") == 0) {
            f->kind = FK_AGG, kinds++;
            if (parse_agg_name(p, v, w, &f->agg))
                return ERR_CONFIG;
        } else if (strcmp(k, "of") == 0) {
            if (get_name(p, v, w, f->of))
                return ERR_CONFIG;
        } else if (strcmp(k, "window") == 0) {
            if (get_duration(p, v, w, &f->window_ms))
                return ERR_CONFIG;
        } else if (strcmp(k, "bucket") == 0) {
            if (get_duration(p, v, w, &f->bucket_ms))
                return ERR_CONFIG;
        } else {
            return fail(p, line_of(v), "%s: unknown key (name, doc, expr, codes, agg, of, "
                                       "window, bucket)", w);
        }
    }
    if (kinds != 1)
        return fail(p, f->line, "%s: needs exactly one of expr, codes or agg", what);
    if (f->kind != FK_AGG && (f->of[0] || f->window_ms || f->bucket_ms))
        return fail(p, f->line, "%s: of, window and bucket belong to an agg", what);
    if (expr) {
        snprintf(w, sizeof(w), "%s.expr", what);
        return parse_expr_text(p, expr, w, &f->root);
    }
    return ERR_OK;
}

/* input.version: a whole number >= 1, or latest (0). */
static int get_version(struct ps *p, const yaml_node_t *v, int *version)
{
    const char *s = scalar(v);
    char *end;
    long n;

    if (s && strcmp(s, "latest") == 0) {
        *version = 0;
        return ERR_OK;
    }
    errno = 0;
    n = s ? strtol(s, &end, 10) : 0;
    if (!s || end == s || *end || errno || n < 1 || n > INT32_MAX)
        return fail(p, line_of(v), "input.version: \"%s\" is not a version (1, 2, ... or latest)",
                    s ? s : "?");
    *version = (int)n;
    return ERR_OK;
}

static int parse_input_key(struct ps *p, const char *k, const yaml_node_t *v, int *have_version)
{
    struct fs_ast *a = p->a;
    const char *s = scalar(v);

    if (k && strcmp(k, "schema") == 0) {
        if (!s || !*s || strlen(s) >= sizeof(a->schema))
            return fail(p, line_of(v), "input.schema: expected a path to an .avsc");
        snprintf(a->schema, sizeof(a->schema), "%s", s);
        a->schema_line = line_of(v);
    } else if (k && strcmp(k, "subject") == 0) {
        if (!s || !*s || strlen(s) >= sizeof(a->subject))
            return fail(p, line_of(v), "input.subject: expected a Schema Registry subject");
        snprintf(a->subject, sizeof(a->subject), "%s", s);
        a->subject_line = line_of(v);
    } else if (k && strcmp(k, "version") == 0) {
        *have_version = line_of(v);
        return get_version(p, v, &a->version);
    } else if (k && strcmp(k, "key") == 0) {
        if (get_name(p, v, "input.key", a->key))
            return ERR_CONFIG;
        a->key_line = line_of(v);
    } else if (k && strcmp(k, "time") == 0) {
        if (get_name(p, v, "input.time", a->time))
            return ERR_CONFIG;
        a->time_line = line_of(v);
    } else if (k && strcmp(k, "event_id") == 0) {
        if (get_name(p, v, "input.event_id", a->event_id))
            return ERR_CONFIG;
        a->event_id_line = line_of(v);
    } else {
        return fail(p, line_of(v),
                    "input.%s: unknown key (schema, subject, version, key, time, event_id)",
                    k ? k : "?");
    }
    return ERR_OK;
}

static int parse_input(struct ps *p, const yaml_node_t *m)
{
    struct fs_ast *a = p->a;
    const char *k;
    yaml_node_t *v;
    int have_version = 0;

    if (want(p, m, YAML_MAPPING_NODE, "input"))
        return ERR_CONFIG;
    FOR_PAIRS(p, m, k, v)
    {
        if (parse_input_key(p, k, v, &have_version))
            return ERR_CONFIG;
    }
    if (a->schema[0] && a->subject[0])
        return fail(p, a->subject_line, "input: schema (a file) or subject (a registry), not both");
    if (have_version && !a->subject[0])
        return fail(p, have_version, "input.version: belongs to a subject");
    if (a->subject[0])
        a->schema_line = a->subject_line;
    if ((!a->schema[0] && !a->subject[0]) || !a->key[0] || !a->time[0])
        return fail(p, line_of(m), "input: needs schema (or subject), key and time");
    return ERR_OK;
}

static int parse_output(struct ps *p, const yaml_node_t *s)
{
    struct fs_ast *a = p->a;
    int n;

    if (want(p, s, YAML_SEQUENCE_NODE, "output"))
        return ERR_CONFIG;
    n = (int)(s->data.sequence.items.top - s->data.sequence.items.start);
    if (n < 1 || n > FSPEC_OUT_MAX)
        return fail(p, line_of(s), "output: 1 to %d names", FSPEC_OUT_MAX);
    a->out = calloc((size_t)n, sizeof(*a->out));
    a->out_line = calloc((size_t)n, sizeof(int));
    if (!a->out || !a->out_line)
        return err_set(p->e, ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        yaml_node_t *v = node(p, s->data.sequence.items.start[i]);
        char w[32];
        snprintf(w, sizeof(w), "output[%d]", i);
        if (get_name(p, v, w, a->out[i]))
            return ERR_CONFIG;
        a->out_line[i] = line_of(v);
        a->nout++;
    }
    return ERR_OK;
}

static int parse_features(struct ps *p, const yaml_node_t *s)
{
    struct fs_ast *a = p->a;
    int n;

    if (want(p, s, YAML_SEQUENCE_NODE, "features"))
        return ERR_CONFIG;
    n = (int)(s->data.sequence.items.top - s->data.sequence.items.start);
    if (n < 1 || n > FS_FEAT_MAX)
        return fail(p, line_of(s), "features: 1 to %d features", FS_FEAT_MAX);
    if (!(a->feats = calloc((size_t)n, sizeof(*a->feats))))
        return err_set(p->e, ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        a->nfeat = i + 1;
        if (parse_feature(p, node(p, s->data.sequence.items.start[i]), i))
            return ERR_CONFIG;
    }
    return ERR_OK;
}

static int parse_root(struct ps *p, const yaml_node_t *root)
{
    struct fs_ast *a = p->a;
    const char *k;
    yaml_node_t *v;

    if (!root)
        return fail(p, 1, "empty spec");
    if (want(p, root, YAML_MAPPING_NODE, "spec"))
        return ERR_CONFIG;
    FOR_PAIRS(p, root, k, v)
    {
        int rc = ERR_OK;
        if (k && strcmp(k, "name") == 0)
            rc = get_name(p, v, "name", a->name);
        else if (k && strcmp(k, "doc") == 0)
            continue;
        else if (k && strcmp(k, "input") == 0)
            rc = parse_input(p, v);
        else if (k && strcmp(k, "features") == 0)
            rc = a->feats ? fail(p, line_of(v), "features: given twice") : parse_features(p, v);
        else if (k && strcmp(k, "output") == 0)
            rc = a->out ? fail(p, line_of(v), "output: given twice") : parse_output(p, v);
        else
            rc = fail(p, line_of(v), "%s: unknown key (name, doc, input, features, output)",
                      k ? k : "?");
        if (rc)
            return rc;
    }
    if (!a->name[0])
        return fail(p, line_of(root), "name: missing (the vector's name and version, e.g. txn-v1)");
    if (!a->schema[0] && !a->subject[0])
        return fail(p, line_of(root), "input: missing");
    if (!a->feats)
        return fail(p, line_of(root), "features: missing");
    return ERR_OK;
}

/* ---- the Avro schema ---- */

/* One field's type: "double", ["null", "double"], {"type": "long", ...}. */
static int avro_type(json_t *t, struct fs_field *f)
{
    const char *s;

    if (json_is_array(t)) {
        json_t *x = NULL;
        for (size_t i = 0; i < json_array_size(t); i++) {
            json_t *u = json_array_get(t, i);
            if (json_is_string(u) && strcmp(json_string_value(u), "null") == 0)
                continue;
            if (x)
                return -1; /* a union of two real types */
            x = u;
        }
        return x ? avro_type(x, f) : -1;
    }
    if (json_is_object(t)) {
        json_t *tt = json_object_get(t, "type");
        if (json_is_string(tt) && strcmp(json_string_value(tt), "enum") == 0) {
            f->is_string = 1;
            return 0;
        }
        return tt && !json_is_object(tt) ? avro_type(tt, f) : -1;
    }
    if (!(s = json_string_value(t)))
        return -1;
    if (strcmp(s, "string") == 0)
        f->is_string = 1;
    else if (strcmp(s, "long") == 0)
        f->is_long = 1;
    else if (strcmp(s, "boolean") == 0)
        f->is_bool = 1;
    else if (strcmp(s, "double") != 0 && strcmp(s, "float") != 0 && strcmp(s, "int") != 0)
        return -1;
    return 0;
}

/* input.subject: the schema's text from the registry, at start-up only.
 * One line naming the spec's line, the subject and the registry. */
static int fetch_schema(struct ps *p, struct reg *r, const char **text)
{
    struct fs_ast *a = p->a;
    char ver[16], why[sizeof(p->e->msg)];

    snprintf(ver, sizeof(ver), a->version ? "%d" : "latest", a->version);
    if (!r)
        return fail(p, a->subject_line,
                    "input.subject %s: no schema registry configured (set schema.registry.url)",
                    a->subject);
    if (reg_subject_version(r, a->subject, a->version, &a->schema_id, &a->schema_version, text,
                            p->e)) {
        snprintf(why, sizeof(why), "%s", p->e->msg);
        return fail(p, a->subject_line, "input.subject %s version %s at %s: %s", a->subject, ver,
                    reg_urls(r), why);
    }
    snprintf(a->schema_src, sizeof(a->schema_src), "subject %s version %d (schema id %d) at %s",
             a->subject, a->schema_version, (int)a->schema_id, reg_urls(r));
    return ERR_OK;
}

static int read_schema(struct ps *p, const char *dir, const char *schema_json, struct reg *r)
{
    struct fs_ast *a = p->a;
    char path[FS_PATH_MAX * 2];
    json_error_t je;
    json_t *root, *fields;
    int rc = ERR_OK;

    if (a->subject[0]) {
        if (fetch_schema(p, r, &schema_json))
            return ERR_CONFIG;
        snprintf(path, sizeof(path), "subject %s", a->subject);
    } else if (a->schema[0] == '/' || !dir || !*dir) {
        snprintf(path, sizeof(path), "%s", a->schema);
    } else {
        snprintf(path, sizeof(path), "%s/%s", dir, a->schema);
    }
    if (schema_json) {
        root = json_loads(schema_json, JSON_REJECT_DUPLICATES, &je);
    } else {
        root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
        snprintf(a->schema_path, sizeof(a->schema_path), "%s", path);
        snprintf(a->schema_src, sizeof(a->schema_src), "%s", path);
    }
    if (!root)
        return fail(p, a->schema_line, "input.%s: %s: %s", a->subject[0] ? "subject" : "schema",
                    path, je.text);
    /* The text every reader of this spec decodes with: read once, here. */
    if (!(a->schema_text = json_dumps(root, JSON_COMPACT))) {
        json_decref(root);
        return err_set(p->e, ERR_NOMEM, "out of memory");
    }
    if (json_is_string(json_object_get(root, "name")))
        snprintf(a->record, sizeof(a->record), "%s",
                 json_string_value(json_object_get(root, "name")));
    fields = json_object_get(root, "fields");
    if (!json_is_array(fields) || json_array_size(fields) > FS_FIELD_MAX) {
        rc = fail(p, a->schema_line, "input.schema: %s: not a record with at most %d fields",
                  path, FS_FIELD_MAX);
        goto out;
    }
    for (size_t i = 0; i < json_array_size(fields); i++) {
        json_t *fd = json_array_get(fields, i);
        const char *nm = json_string_value(json_object_get(fd, "name"));
        struct fs_field *f = &a->fields[a->nfield];
        if (!nm || strlen(nm) >= FSPEC_NAME_MAX) {
            rc = fail(p, a->schema_line, "input.schema: %s: field %zu has no usable name", path, i);
            goto out;
        }
        memset(f, 0, sizeof(*f));
        snprintf(f->name, sizeof(f->name), "%s", nm);
        /* Fields of other types (records, arrays, bytes) stay out of reach. */
        if (avro_type(json_object_get(fd, "type"), f) == 0)
            a->nfield++;
    }
out:
    json_decref(root);
    return rc;
}

int fs_parse(struct fs_ast *a, const char *text, size_t len, const char *name, const char *dir,
             const char *schema_json, struct reg *r, struct err *e)
{
    struct ps p = {.a = a, .e = e};
    yaml_parser_t parser;
    yaml_document_t doc;
    int rc;

    snprintf(a->file, sizeof(a->file), "%s", name ? name : "spec");
    if (len > FSPEC_FILE_MAX)
        return fail(&p, 0, "larger than %d bytes", FSPEC_FILE_MAX);
    if (!(a->nodes = calloc(FS_NODE_MAX, sizeof(*a->nodes))))
        return err_set(e, ERR_NOMEM, "out of memory");
    if (!yaml_parser_initialize(&parser))
        return err_set(e, ERR_NOMEM, "out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        rc = fail(&p, (int)parser.problem_mark.line + 1, "YAML: %s",
                  parser.problem ? parser.problem : "unreadable");
        yaml_parser_delete(&parser);
        return rc;
    }
    p.doc = &doc;
    rc = parse_root(&p, yaml_document_get_root_node(&doc));
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc ? rc : read_schema(&p, dir, schema_json, r);
}

void fs_ast_free(struct fs_ast *a)
{
    for (int i = 0; a->feats && i < a->nfeat; i++) {
        free(a->feats[i].cats);
        free(a->feats[i].codes);
    }
    free(a->feats);
    free(a->nodes);
    free(a->out);
    free(a->out_line);
    free(a->schema_text);
}

const char *fs_op_name(int op)
{
    static const char *const n[OP_COUNT_] = {
        "field", "const", "add",  "sub",  "mul",  "div", "neg", "gt",       "ge",
        "lt",    "le",    "eq",   "ne",   "log",  "log1p", "abs", "sqrt", "clip",
        "min",   "max",   "coalesce", "is_missing"};
    return op >= 0 && op < OP_COUNT_ ? n[op] : "?";
}

const char *fs_agg_name(int agg)
{
    static const char *const n[] = {"none", "count", "sum",  "mean",       "min",
                                    "max",  "std",   "last", "since_prev", "zscore"};
    return agg >= 0 && agg <= AG_ZSCORE ? n[agg] : "?";
}
