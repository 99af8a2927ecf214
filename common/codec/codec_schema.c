/* common/codec/codec_schema.c: compiling a schema into a vprog, and the bounded
 * pre-decode walk of Avro binary that it drives.
 * Split out of codec.c; codec_int.h holds what the codec*.c files share. */
#include "codec_int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- compiled schemas ---- */

static int kind_of(avro_type_t t, enum vkind *k)
{
    static const struct {
        avro_type_t t;
        enum vkind k;
    } map[] = {{AVRO_NULL, VK_NULL},     {AVRO_BOOLEAN, VK_BOOLEAN}, {AVRO_INT32, VK_INT},
               {AVRO_INT64, VK_LONG},    {AVRO_FLOAT, VK_FLOAT},     {AVRO_DOUBLE, VK_DOUBLE},
               {AVRO_STRING, VK_STRING}, {AVRO_BYTES, VK_BYTES},     {AVRO_FIXED, VK_FIXED},
               {AVRO_ENUM, VK_ENUM},     {AVRO_RECORD, VK_RECORD},   {AVRO_UNION, VK_UNION},
               {AVRO_ARRAY, VK_ARRAY},   {AVRO_MAP, VK_MAP}};

    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        if (map[i].t == t) {
            *k = map[i].k;
            return 0;
        }
    }
    return -1;
}

/* The JSON object defining record `name` anywhere inside a schema document
 * (needed for field defaults, which avro-c does not keep). */
static json_t *find_record_doc(json_t *j, const char *name, int depth)
{
    const char *key, *nm, *dot;
    json_t *v, *r;
    size_t i;

    if (depth > PROG_DEPTH)
        return NULL;
    if (json_is_array(j)) {
        for (i = 0; i < json_array_size(j); i++)
            if ((r = find_record_doc(json_array_get(j, i), name, depth + 1)))
                return r;
        return NULL;
    }
    if (!json_is_object(j))
        return NULL;
    nm = json_string_value(json_object_get(j, "name"));
    if (nm && json_object_get(j, "fields")) {
        dot = strrchr(nm, '.');
        if (strcmp(dot ? dot + 1 : nm, name) == 0)
            return j;
    }
    json_object_foreach(j, key, v)
    {
        if ((r = find_record_doc(v, name, depth + 1)))
            return r;
    }
    return NULL;
}

static json_t *field_default(json_t *rec_doc, const char *field)
{
    json_t *f;
    size_t i;

    json_array_foreach(json_object_get(rec_doc, "fields"), i, f)
    {
        const char *nm = json_string_value(json_object_get(f, "name"));
        if (nm && strcmp(nm, field) == 0)
            return json_object_get(f, "default");
    }
    return NULL;
}

/* Reserves n contiguous kid slots for a record's fields or a union's branches. */
static int compile_kids(struct vprog *g, json_t *doc, int at, int depth, struct err *e)
{
    struct vnode *nd = &g->node[at];
    json_t *rec_doc = NULL;
    int first = g->nkid, k;

    if (nd->n > PROG_NODES - g->nkid)
        return err_set(e, ERR_CONFIG, "schema has more than %d fields and branches", PROG_NODES);
    g->nkid += (int)nd->n;
    nd->first = first;
    if (nd->kind == VK_RECORD)
        rec_doc = find_record_doc(doc, avro_schema_name(nd->schema), 0);
    for (int i = 0; i < (int)nd->n; i++) {
        avro_schema_t c = nd->kind == VK_RECORD
                              ? avro_schema_record_field_get_by_index(nd->schema, i)
                              : avro_schema_union_branch(nd->schema, i);
        g->fname[first + i] = NULL;
        g->dflt[first + i] = NULL;
        if (nd->kind == VK_RECORD) {
            g->fname[first + i] = avro_schema_record_field_name(nd->schema, i);
            g->dflt[first + i] = field_default(rec_doc, g->fname[first + i]);
        }
        if ((k = compile(g, doc, c, depth + 1, e)) < 0)
            return k;
        g->kid[first + i] = k;
    }
    return ERR_OK;
}

/* Appends the node for s (and its children); returns its index or an error. */
int compile(struct vprog *g, json_t *doc, avro_schema_t s, int depth, struct err *e)
{
    struct vnode *nd;
    int at, k, rc = ERR_OK;

    while (s && is_avro_link(s))
        s = avro_schema_link_target(s);
    if (depth > PROG_DEPTH)
        return err_set(e, ERR_CONFIG,
                       "schema nested deeper than %d (recursive types are "
                       "not supported)",
                       PROG_DEPTH);
    if (!s || g->nnode == PROG_NODES)
        return err_set(e, ERR_CONFIG, "schema has more than %d nodes", PROG_NODES);
    at = g->nnode++;
    nd = &g->node[at];
    memset(nd, 0, sizeof(*nd));
    nd->schema = s;
    if (kind_of(avro_typeof(s), &nd->kind))
        return err_set(e, ERR_CONFIG, "unsupported Avro type %s", avro_schema_type_name(s));
    switch (nd->kind) {
    case VK_FIXED:
        nd->n = avro_schema_fixed_size(s);
        break;
    case VK_ENUM:
        nd->n = avro_schema_enum_number_of_symbols(s);
        break;
    case VK_RECORD:
        nd->n = (int64_t)avro_schema_record_size(s);
        break;
    case VK_UNION:
        nd->n = (int64_t)avro_schema_union_size(s);
        break;
    case VK_ARRAY:
    case VK_MAP:
        k = compile(g, doc,
                    nd->kind == VK_ARRAY ? avro_schema_array_items(s) : avro_schema_map_values(s),
                    depth + 1, e);
        if (k < 0)
            return k;
        g->node[at].first = k;
        return at;
    default:
        return at;
    }
    if (nd->kind == VK_RECORD || nd->kind == VK_UNION)
        rc = compile_kids(g, doc, at, depth, e);
    return rc < 0 ? rc : at;
}

/* ---- the bounded pre-decode walk ---- */

static int wfail(struct walk *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int wfail(struct walk *w, const char *fmt, ...)
{
    char msg[200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (w->field)
        return err_set(w->e, ERR_DECODE, "%s (field %s)", msg, w->field);
    return err_set(w->e, ERR_DECODE, "%s", msg);
}

/* Zig-zag varint of at most max_bytes bytes. */
static int walk_varint(struct walk *w, int max_bytes, int64_t *out)
{
    size_t start = w->pos;
    uint64_t u = 0;

    for (int i = 0;; i++) {
        unsigned b;
        if (w->pos >= w->end)
            return wfail(w, "truncated at byte %zu", w->pos);
        b = w->p[w->pos++];
        if (i == max_bytes - 1 && (b & 0x80))
            return wfail(w, "varint longer than %d bytes at byte %zu", max_bytes, start);
        if (i == 9 && b > 1)
            return wfail(w, "varint overflows 64 bits at byte %zu", start);
        u |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80))
            break;
    }
    *out = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
    return ERR_OK;
}

static size_t remaining(const struct walk *w)
{
    return w->end - w->pos;
}

/* A length prefix: 0 <= len <= bytes left. */
static int walk_len(struct walk *w, const char *what, int64_t *len)
{
    size_t at = w->pos;

    if (walk_varint(w, 10, len))
        return ERR_DECODE;
    if (*len < 0)
        return wfail(w, "negative %s length %" PRId64 " at byte %zu", what, *len, at);
    if ((uint64_t)*len > remaining(w))
        return wfail(w, "%s length %" PRId64 " exceeds remaining %zu bytes at byte %zu", what, *len,
                     remaining(w), at);
    return ERR_OK;
}

/* Offset of the first byte that is not valid UTF-8, or n. */
size_t codec_utf8_check(const unsigned char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned c = s[i];
        size_t k = c < 0x80                 ? 0
                   : c >= 0xc2 && c <= 0xdf ? 1
                   : c >= 0xe0 && c <= 0xef ? 2
                   : c >= 0xf0 && c <= 0xf4 ? 3
                                            : 4;
        uint32_t cp = c & (0x7fu >> k);

        if (k == 4 || n - i <= k)
            return i;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return i;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if ((k == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (k == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return i;
        i += k + 1;
    }
    return n;
}

static int walk_string(struct walk *w)
{
    int64_t len;
    size_t bad;

    if (walk_len(w, "string", &len))
        return ERR_DECODE;
    bad = codec_utf8_check(w->p + w->pos, (size_t)len);
    if (bad < (size_t)len)
        return wfail(w, "invalid UTF-8 at byte %zu", w->pos + bad);
    w->pos += (size_t)len;
    return ERR_OK;
}

static int walk_fixed(struct walk *w, size_t n)
{
    if (n > remaining(w))
        return wfail(w, "truncated at byte %zu (%zu more bytes needed)", w->end, n - remaining(w));
    w->pos += n;
    return ERR_OK;
}

/* An index (union branch, enum symbol) in [0, n). */
static int walk_index(struct walk *w, const char *what, int64_t n, int64_t *idx)
{
    size_t at = w->pos;

    if (walk_varint(w, 10, idx))
        return ERR_DECODE;
    if (*idx < 0 || *idx >= n)
        return wfail(w, "%s index %" PRId64 " out of range [0, %" PRId64 ") at byte %zu", what,
                     *idx, n, at);
    return ERR_OK;
}

/* One block header of an array or map; *count = 0 ends the sequence. */
static int walk_block_header(struct walk *w, const char *what, int64_t *count, int64_t *size)
{
    size_t at = w->pos;

    *size = -1;
    if (walk_varint(w, 10, count))
        return ERR_DECODE;
    if (*count < 0) {
        if (*count == INT64_MIN)
            return wfail(w, "%s block count out of range at byte %zu", what, at);
        *count = -*count;
        if (walk_len(w, "block", size))
            return ERR_DECODE;
    }
    /* Every element of our schemas takes at least one byte, so a count
     * beyond the bytes left is a lie: refuse it before avro-c allocates. */
    if ((uint64_t)*count > remaining(w))
        return wfail(w, "%s block count %" PRId64 " exceeds remaining %zu bytes at byte %zu", what,
                     *count, remaining(w), at);
    return ERR_OK;
}

static int walk_blocks(struct walk *w, const struct vnode *nd)
{
    const char *what = nd->kind == VK_MAP ? "map" : "array";
    int64_t count, size;

    for (;;) {
        size_t start;
        if (walk_block_header(w, what, &count, &size))
            return ERR_DECODE;
        if (count == 0)
            return ERR_OK;
        start = w->pos;
        for (int64_t i = 0; i < count; i++) {
            if (nd->kind == VK_MAP && walk_string(w))
                return ERR_DECODE;
            if (walk_node(w, nd->first))
                return ERR_DECODE;
        }
        if (size >= 0 && (size_t)size != w->pos - start)
            return wfail(w, "%s block size %" PRId64 " but its items take %zu bytes at byte %zu",
                         what, size, w->pos - start, start);
    }
}

static int walk_record(struct walk *w, const struct vnode *nd)
{
    const char *outer = w->field;

    for (int64_t i = 0; i < nd->n; i++) {
        w->field = w->g->fname[nd->first + i];
        if (walk_node(w, w->g->kid[nd->first + i]))
            return ERR_DECODE;
    }
    w->field = outer;
    return ERR_OK;
}

int walk_node(struct walk *w, int node)
{
    const struct vnode *nd = &w->g->node[node];
    int64_t v;
    size_t at = w->pos;

    switch (nd->kind) {
    case VK_NULL:
        return ERR_OK;
    case VK_BOOLEAN:
        if (walk_fixed(w, 1))
            return ERR_DECODE;
        if (w->p[at] > 1)
            return wfail(w, "boolean byte %u at byte %zu", w->p[at], at);
        return ERR_OK;
    case VK_INT:
        if (walk_varint(w, 5, &v))
            return ERR_DECODE;
        if (v < INT32_MIN || v > INT32_MAX)
            return wfail(w, "int %" PRId64 " out of range at byte %zu", v, at);
        return ERR_OK;
    case VK_LONG:
        return walk_varint(w, 10, &v);
    case VK_FLOAT:
        return walk_fixed(w, 4);
    case VK_DOUBLE:
        return walk_fixed(w, 8);
    case VK_STRING:
        return walk_string(w);
    case VK_BYTES:
        if (walk_len(w, "bytes", &v))
            return ERR_DECODE;
        return walk_fixed(w, (size_t)v);
    case VK_FIXED:
        return walk_fixed(w, (size_t)nd->n);
    case VK_ENUM:
        return walk_index(w, "enum", nd->n, &v);
    case VK_UNION:
        if (walk_index(w, "union branch", nd->n, &v))
            return ERR_DECODE;
        return walk_node(w, w->g->kid[nd->first + v]);
    case VK_RECORD:
        return walk_record(w, nd);
    case VK_ARRAY:
    case VK_MAP:
        return walk_blocks(w, nd);
    }
    return wfail(w, "unsupported type at byte %zu", at);
}
