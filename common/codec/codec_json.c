/* common/codec/codec_json.c: JSON: JSON -> struct txn_event, Avro value -> JSON
 * text, and JSON -> Avro value driven by the compiled schema.
 * Split out of codec.c; codec_int.h holds what the codec*.c files share. */
#include "codec_int.h"

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- JSON -> struct txn_event ---- */

static const char *json_kind(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

static int json_type_error(const char *name, const char *want, const json_t *j, struct err *e)
{
    return err_set(e, ERR_DECODE, "field %s: expected %s, got %s", name, want, json_kind(j));
}

static int txn_json_field(const struct txn_field *f, const json_t *j, struct txn_event *ev,
                          struct err *e)
{
    char *p = (char *)ev + f->off;
    json_int_t i;

    switch (f->kind) {
    case TK_ID:
    case TK_CAT:
        if (!json_is_string(j))
            return json_type_error(f->name, "a string", j, e);
        return copy_str(p, f->size, json_string_value(j), json_string_length(j), f->name, e);
    case TK_TIME:
        if (!json_is_integer(j))
            return json_type_error(f->name, "integer milliseconds since the epoch", j, e);
        *(int64_t *)(void *)p = (int64_t)json_integer_value(j);
        return ERR_OK;
    case TK_DOUBLE:
        if (!json_is_number(j))
            return json_type_error(f->name, "a number or null", j, e);
        *(double *)(void *)p = json_number_value(j);
        return ERR_OK;
    case TK_BOOL:
        if (!json_is_boolean(j))
            return json_type_error(f->name, "true, false or null", j, e);
        *(int *)(void *)p = json_is_true(j) ? 1 : 0;
        return ERR_OK;
    case TK_LABEL:
        i = json_is_integer(j) ? json_integer_value(j) : 0;
        if (!json_is_integer(j) || i < INT_MIN || i > INT_MAX)
            return json_type_error(f->name, "an integer (0 good, 1 bad) or null", j, e);
        *(int *)(void *)p = (int)i;
        return ERR_OK;
    }
    return ERR_OK;
}

static json_t *parse_object(const char *json, size_t len, struct err *e)
{
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);

    if (!root) {
        err_set(e, ERR_DECODE, "json: %s at column %d", je.text, je.column);
        return NULL;
    }
    if (!json_is_object(root)) {
        err_set(e, ERR_DECODE, "json: expected an object, got %s", json_kind(root));
        json_decref(root);
        return NULL;
    }
    return root;
}

static int txn_from_object(json_t *root, struct txn_event *ev, struct err *e)
{
    bool seen[TXN_NFIELDS] = {0};
    const char *key;
    json_t *v;

    json_object_foreach(root, key, v)
    {
        const struct txn_field *f = txn_field_by_name(key);
        if (!f)
            return err_set(e, ERR_DECODE, "unknown field \"%s\"", key);
        seen[f - txn_fields] = true;
        if (json_is_null(v) && f->kind != TK_ID && f->kind != TK_TIME)
            continue; /* null = missing */
        if (txn_json_field(f, v, ev, e))
            return e->code;
    }
    for (int i = 0; i < TXN_NFIELDS; i++) {
        enum tkind k = txn_fields[i].kind;
        if (!seen[i] && (k == TK_ID || k == TK_TIME))
            return err_set(e, ERR_DECODE, "missing required field %s", txn_fields[i].name);
    }
    return ERR_OK;
}

int codec_txn_from_json(const char *json, size_t len, struct txn_event *ev, struct err *e)
{
    json_t *root;
    int rc;

    event_txn_init(ev);
    if (!(root = parse_object(json, len, e)))
        return e->code;
    rc = txn_from_object(root, ev, e);
    json_decref(root);
    if (rc)
        event_txn_init(ev);
    return rc;
}

/* ---- Avro value -> JSON text ---- */

struct emit {
    struct buf *b;
    bool full;
};

static void put(struct emit *o, const char *s, size_t n)
{
    if (!o->full && buf_append(o->b, s, n))
        o->full = true;
}

static void puts_(struct emit *o, const char *s)
{
    put(o, s, strlen(s));
}

/* JSON string; bytes mode writes each byte as the code point of the same
 * value (Avro's JSON encoding of bytes), so codec_from_json reverses it. */
static void emit_string(struct emit *o, const unsigned char *s, size_t n, bool bytes)
{
    static const char hex[] = "0123456789abcdef";
    size_t i = 0, run;

    put(o, "\"", 1);
    while (i < n) {
        for (run = i; run < n && s[run] >= 0x20 && s[run] != '"' && s[run] != '\\' &&
                      !(bytes && s[run] >= 0x7f);
             run++)
            ;
        put(o, (const char *)s + i, run - i);
        if (run == n)
            break;
        if (s[run] == '"' || s[run] == '\\') {
            char esc[2] = {'\\', (char)s[run]};
            put(o, esc, 2);
        } else {
            char esc[6] = {'\\', 'u', '0', '0', hex[s[run] >> 4], hex[s[run] & 15]};
            put(o, esc, 6);
        }
        i = run + 1;
    }
    put(o, "\"", 1);
}

/* Shortest text that reads back as the same value; NaN/Inf have no JSON
 * form and come out as null. */
static void emit_real(struct emit *o, double d, bool is_float)
{
    char s[40];

    if (!isfinite(d)) {
        puts_(o, "null");
        return;
    }
    for (int prec = is_float ? 6 : 15; prec <= 17; prec++) {
        snprintf(s, sizeof(s), "%.*g", prec, d);
        if (is_float ? strtof(s, NULL) == (float)d : strtod(s, NULL) == d)
            break;
    }
    if (!strpbrk(s, ".eE"))
        strcat(s, ".0");
    puts_(o, s);
}

static int emit_value(struct emit *o, avro_value_t *v);

static int emit_compound(struct emit *o, avro_value_t *v, avro_type_t t)
{
    size_t n, i;
    avro_value_t child;
    const char *name;

    if (avro_value_get_size(v, &n))
        return -1;
    put(o, t == AVRO_ARRAY ? "[" : "{", 1);
    for (i = 0; i < n; i++) {
        if (avro_value_get_by_index(v, i, &child, &name))
            return -1;
        if (i)
            put(o, ",", 1);
        if (t != AVRO_ARRAY) {
            emit_string(o, (const unsigned char *)name, strlen(name), false);
            put(o, ":", 1);
        }
        if (emit_value(o, &child))
            return -1;
    }
    put(o, t == AVRO_ARRAY ? "]" : "}", 1);
    return 0;
}

static int emit_number(struct emit *o, avro_value_t *v, avro_type_t t)
{
    char num[32];
    int32_t i;
    int64_t l;
    float f;
    double d;
    int b, rc = -1;

    if (t == AVRO_BOOLEAN && !(rc = avro_value_get_boolean(v, &b)))
        puts_(o, b ? "true" : "false");
    if (t == AVRO_INT32 && !(rc = avro_value_get_int(v, &i))) {
        snprintf(num, sizeof(num), "%" PRId32, i);
        puts_(o, num);
    }
    if (t == AVRO_INT64 && !(rc = avro_value_get_long(v, &l))) {
        snprintf(num, sizeof(num), "%" PRId64, l);
        puts_(o, num);
    }
    if (t == AVRO_FLOAT && !(rc = avro_value_get_float(v, &f)))
        emit_real(o, f, true);
    if (t == AVRO_DOUBLE && !(rc = avro_value_get_double(v, &d)))
        emit_real(o, d, false);
    return rc;
}

static int emit_scalar(struct emit *o, avro_value_t *v, avro_type_t t)
{
    const void *p;
    const char *str;
    size_t n;
    int rc;

    switch (t) {
    case AVRO_NULL:
        puts_(o, "null");
        return 0;
    case AVRO_STRING:
        if ((rc = avro_value_get_string(v, &str, &n)) == 0)
            emit_string(o, (const unsigned char *)str, n ? n - 1 : 0, false);
        return rc;
    case AVRO_BYTES:
    case AVRO_FIXED:
        rc = t == AVRO_BYTES ? avro_value_get_bytes(v, &p, &n) : avro_value_get_fixed(v, &p, &n);
        if (rc == 0)
            emit_string(o, p, n, true);
        return rc;
    default:
        return emit_number(o, v, t);
    }
}

static int emit_value(struct emit *o, avro_value_t *v)
{
    avro_type_t t = avro_value_get_type(v);
    avro_value_t br;
    int sym;
    const char *name;

    switch (t) {
    case AVRO_UNION:
        /* Plain value, not {"double": 1.0}: consume output feeds produce. */
        if (avro_value_get_current_branch(v, &br))
            return -1;
        return emit_value(o, &br);
    case AVRO_ENUM:
        if (avro_value_get_enum(v, &sym))
            return -1;
        name = avro_schema_enum_get(avro_value_get_schema(v), sym);
        if (!name)
            return -1;
        emit_string(o, (const unsigned char *)name, strlen(name), false);
        return 0;
    case AVRO_RECORD:
    case AVRO_MAP:
    case AVRO_ARRAY:
        return emit_compound(o, v, t);
    default:
        return emit_scalar(o, v, t);
    }
}

int codec_to_json(struct codec *c, const void *msg, size_t len, struct buf *out, struct err *e)
{
    struct emit o = {.b = out};
    struct slot *s;

    buf_reset(out);
    if (decode(c, msg, len, &s, e))
        return e->code;
    if (emit_value(&o, &s->value))
        return avro_fail(e, ERR_DECODE, s->file);
    if (o.full) {
        buf_reset(out);
        return err_set(e, ERR_NOMEM, "%s record as JSON exceeds the %zu-byte output limit", s->file,
                       out->max);
    }
    if (!out->data) /* never return a NULL string */
        return buf_append(out, "", 0) ? err_set(e, ERR_NOMEM, "out of memory") : ERR_OK;
    return ERR_OK;
}

/* ---- JSON -> Avro value, driven by the compiled schema ---- */

struct fill {
    struct codec *c;
    const struct vprog *g;
    const char *field;
    struct err *e;
};

static int ffail(struct fill *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int ffail(struct fill *f, const char *fmt, ...)
{
    char msg[200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (f->field)
        return err_set(f->e, ERR_DECODE, "field %s: %s", f->field, msg);
    return err_set(f->e, ERR_DECODE, "%s", msg);
}

static int fill_node(struct fill *f, int node, json_t *j, avro_value_t *v);

/* A JSON string whose code points are all <= 0xff, as bytes in scratch. */
static int json_bytes(struct fill *f, json_t *j, size_t *n)
{
    const unsigned char *s = (const unsigned char *)json_string_value(j);
    size_t len = json_string_length(j);

    buf_reset(&f->c->scratch);
    for (size_t i = 0; i < len; i++) {
        unsigned char b = s[i];
        if (b >= 0x80) {
            /* Only U+0080..U+00FF (C2/C3 lead bytes) map to one byte. */
            if ((b != 0xc2 && b != 0xc3) || i + 1 == len)
                return ffail(f, "bytes as a string may only hold code points up to U+00FF");
            b = (unsigned char)((b & 0x03) << 6 | (s[++i] & 0x3f));
        }
        if (buf_append(&f->c->scratch, &b, 1))
            return ffail(f, "bytes longer than %zu", f->c->scratch.max);
    }
    *n = f->c->scratch.len;
    return ERR_OK;
}

static int fill_bytes(struct fill *f, const struct vnode *nd, json_t *j, avro_value_t *v)
{
    static const char none[1];
    size_t n = 0;
    const void *p;

    if (!json_is_string(j))
        return ffail(f, "expected bytes as a string, got %s", json_kind(j));
    if (json_bytes(f, j, &n))
        return ERR_DECODE;
    p = n ? (const void *)f->c->scratch.data : none;
    if (nd->kind == VK_FIXED && (int64_t)n != nd->n)
        return ffail(f, "fixed needs %" PRId64 " bytes, got %zu", nd->n, n);
    if (nd->kind == VK_FIXED ? avro_value_set_fixed(v, (void *)p, n)
                             : avro_value_set_bytes(v, (void *)p, n))
        return avro_fail(f->e, ERR_DECODE, f->field ? f->field : "bytes");
    return ERR_OK;
}

static int fill_array(struct fill *f, const struct vnode *nd, json_t *j, avro_value_t *v)
{
    avro_value_t child;
    json_t *item;
    size_t i;

    if (!json_is_array(j))
        return ffail(f, "expected an array, got %s", json_kind(j));
    json_array_foreach(j, i, item)
    {
        if (avro_value_append(v, &child, NULL))
            return avro_fail(f->e, ERR_DECODE, f->field ? f->field : "array");
        if (fill_node(f, nd->first, item, &child))
            return ERR_DECODE;
    }
    return ERR_OK;
}

static int fill_map(struct fill *f, const struct vnode *nd, json_t *j, avro_value_t *v)
{
    avro_value_t child;
    const char *key;
    json_t *item;

    if (!json_is_object(j))
        return ffail(f, "expected an object, got %s", json_kind(j));
    json_object_foreach(j, key, item)
    {
        if (avro_value_add(v, key, &child, NULL, NULL))
            return avro_fail(f->e, ERR_DECODE, f->field ? f->field : "map");
        if (fill_node(f, nd->first, item, &child))
            return ERR_DECODE;
    }
    return ERR_OK;
}

static int fill_record(struct fill *f, const struct vnode *nd, json_t *j, avro_value_t *v)
{
    const char *outer = f->field, *key;
    json_t *item;
    avro_value_t child;

    if (!json_is_object(j))
        return ffail(f, "expected an object, got %s", json_kind(j));
    json_object_foreach(j, key, item)
    {
        if (avro_schema_record_field_get_index(nd->schema, key) < 0)
            return ffail(f, "unknown field \"%s\"", key);
    }
    for (int64_t i = 0; i < nd->n; i++) {
        int k = nd->first + (int)i;
        f->field = f->g->fname[k];
        item = json_object_get(j, f->field);
        if (!item && !(item = f->g->dflt[k]))
            return err_set(f->e, ERR_DECODE, "missing required field %s", f->field);
        if (avro_value_get_by_index(v, (size_t)i, &child, NULL))
            return avro_fail(f->e, ERR_DECODE, f->field);
        if (fill_node(f, f->g->kid[k], item, &child))
            return ERR_DECODE;
    }
    f->field = outer;
    return ERR_OK;
}

/* Whether a plain JSON value could be of kind k (shallow). */
static bool json_fits(const struct vnode *nd, const json_t *j)
{
    switch (nd->kind) {
    case VK_NULL:
        return json_is_null(j);
    case VK_BOOLEAN:
        return json_is_boolean(j);
    case VK_INT:
        return json_is_integer(j) && json_integer_value(j) >= INT32_MIN &&
               json_integer_value(j) <= INT32_MAX;
    case VK_LONG:
        return json_is_integer(j);
    case VK_FLOAT:
    case VK_DOUBLE:
        return json_is_number(j);
    case VK_STRING:
    case VK_BYTES:
    case VK_FIXED:
        return json_is_string(j);
    case VK_ENUM:
        return json_is_string(j) &&
               avro_schema_enum_get_by_name(nd->schema, json_string_value(j)) >= 0;
    case VK_ARRAY:
        return json_is_array(j);
    case VK_MAP:
    case VK_RECORD:
        return json_is_object(j);
    case VK_UNION:
        return false;
    }
    return false;
}

/* Avro's own JSON encoding tags union values ({"double": 1.5}); accept it
 * when no branch is itself an object, so the tag cannot be a map key. */
static int tagged_branch(const struct fill *f, const struct vnode *nd, json_t **j)
{
    const char *key;
    json_t *inner;

    if (!json_is_object(*j) || json_object_size(*j) != 1)
        return -1;
    for (int b = 0; b < (int)nd->n; b++) {
        enum vkind k = f->g->node[f->g->kid[nd->first + b]].kind;
        if (k == VK_MAP || k == VK_RECORD)
            return -1;
    }
    json_object_foreach(*j, key, inner)
    {
        for (int b = 0; b < (int)nd->n; b++) {
            avro_schema_t bs = f->g->node[f->g->kid[nd->first + b]].schema;
            const char *name = avro_schema_type_name(bs), *ns = avro_schema_namespace(bs);
            size_t nl = ns ? strlen(ns) : 0;
            if (strcmp(key, name) == 0 || (ns && strncmp(key, ns, nl) == 0 && key[nl] == '.' &&
                                           !strcmp(key + nl + 1, name))) {
                *j = inner;
                return b;
            }
        }
    }
    return -1;
}

static int fill_union(struct fill *f, const struct vnode *nd, json_t *j, avro_value_t *v)
{
    avro_value_t br;
    int b = tagged_branch(f, nd, &j);

    for (int i = 0; b < 0 && i < (int)nd->n; i++)
        if (json_fits(&f->g->node[f->g->kid[nd->first + i]], j))
            b = i;
    if (b < 0)
        return ffail(f, "no branch of the union takes %s", json_kind(j));
    if (avro_value_set_branch(v, b, &br))
        return avro_fail(f->e, ERR_DECODE, f->field ? f->field : "union");
    return fill_node(f, f->g->kid[nd->first + b], j, &br);
}

static int fill_scalar(struct fill *f, const struct vnode *nd, json_t *j, avro_value_t *v)
{
    int rc;

    if (nd->kind == VK_INT && json_is_integer(j) && !json_fits(nd, j))
        return ffail(f, "integer %" JSON_INTEGER_FORMAT " out of int range", json_integer_value(j));
    if (!json_fits(nd, j))
        return ffail(f, "expected %s, got %s",
                     nd->kind == VK_ENUM ? "an enum symbol" : avro_schema_type_name(nd->schema),
                     json_kind(j));
    switch (nd->kind) {
    case VK_NULL:
        rc = avro_value_set_null(v);
        break;
    case VK_BOOLEAN:
        rc = avro_value_set_boolean(v, json_is_true(j));
        break;
    case VK_INT:
        rc = avro_value_set_int(v, (int32_t)json_integer_value(j));
        break;
    case VK_LONG:
        rc = avro_value_set_long(v, (int64_t)json_integer_value(j));
        break;
    case VK_FLOAT:
        rc = avro_value_set_float(v, (float)json_number_value(j));
        break;
    case VK_DOUBLE:
        rc = avro_value_set_double(v, json_number_value(j));
        break;
    case VK_STRING:
        rc = avro_value_set_string_len(v, json_string_value(j), json_string_length(j) + 1);
        break;
    case VK_ENUM:
        rc = avro_value_set_enum(v, avro_schema_enum_get_by_name(nd->schema, json_string_value(j)));
        break;
    default:
        return ffail(f, "unsupported type");
    }
    return rc ? avro_fail(f->e, ERR_DECODE, f->field ? f->field : "value") : ERR_OK;
}

static int fill_node(struct fill *f, int node, json_t *j, avro_value_t *v)
{
    const struct vnode *nd = &f->g->node[node];

    switch (nd->kind) {
    case VK_RECORD:
        return fill_record(f, nd, j, v);
    case VK_UNION:
        return fill_union(f, nd, j, v);
    case VK_ARRAY:
        return fill_array(f, nd, j, v);
    case VK_MAP:
        return fill_map(f, nd, j, v);
    case VK_BYTES:
    case VK_FIXED:
        return fill_bytes(f, nd, j, v);
    default:
        return fill_scalar(f, nd, j, v);
    }
}

int codec_from_json(struct codec *c, enum codec_schema which, const char *json, size_t len,
                    struct buf *out, struct err *e)
{
    struct slot *s;
    struct fill f = {.c = c, .e = e};
    json_t *root;
    int rc;

    if ((int)which < 0 || which >= CODEC_NSCHEMAS)
        return err_set(e, ERR_CONFIG, "unknown schema %d", (int)which);
    s = &c->slot[c->known[which]];
    f.g = s->prog;
    if (!(root = parse_object(json, len, e)))
        return e->code;
    avro_value_reset(&s->value);
    rc = fill_node(&f, 0, root, &s->value);
    json_decref(root);
    if (rc)
        return e->code;
    return encode(c, s, out, e);
}

int codec_from_json_id(struct codec *c, int32_t id, const char *json, size_t len,
                       const char *key_field, char *key, size_t key_cap, struct buf *out,
                       struct err *e)
{
    struct slot *s;
    struct fill f = {.c = c, .e = e};
    json_t *root;
    const char *k;
    int rc;

    if (key_cap)
        key[0] = '\0';
    if (find_writer(c, id, &s, e))
        return e->code;
    f.g = s->prog;
    if (!(root = parse_object(json, len, e)))
        return e->code;
    k = key_field ? json_string_value(json_object_get(root, key_field)) : NULL;
    if (k && key_cap)
        snprintf(key, key_cap, "%s", k);
    avro_value_reset(&s->value);
    rc = fill_node(&f, 0, root, &s->value);
    json_decref(root);
    if (rc)
        return e->code;
    return encode(c, s, out, e);
}
