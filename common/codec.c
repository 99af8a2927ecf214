/* common/codec.c: Avro with Confluent framing, over avro-c and jansson.
 *
 * Decoding is three steps: unframe (magic byte, schema id), validate (a
 * bounded walk of the Avro binary driven by a compiled copy of the schema),
 * then avro_value_read into a value the handle reuses. The walk exists
 * because avro-c 1.11 mallocs whatever a length or count prefix claims:
 * only bytes that passed it reach avro-c.
 */
#include "codec.h"
#include "out.h"
#include "registry.h"

#include <avro.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define HDR 5          /* magic byte + 4-byte schema id */
#define MAX_SLOTS 16   /* schemas listed in ids */
#define PROG_NODES 512 /* nodes and record fields/union branches per schema */
#define PROG_DEPTH 32  /* nesting; deeper (or recursive) schemas are refused */
#define SCHEMA_FILE_MAX (256 * 1024)
#define MAX_WRITERS 256 /* writer schemas fetched from a registry */

/* ---- buffers ---- */

void buf_init(struct buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max ? max : CODEC_MAX_MESSAGE;
}

void buf_free(struct buf *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void buf_reset(struct buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

/* Room for n more bytes plus a NUL, so data is always a C string too. */
static int buf_reserve(struct buf *b, size_t n)
{
    size_t max = b->max ? b->max : CODEC_MAX_MESSAGE;
    size_t need, cap;
    unsigned char *p;

    if (n > max || b->len > max - n)
        return ERR_NOMEM;
    need = b->len + n + 1;
    if (need <= b->cap)
        return ERR_OK;
    cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    if (cap > max + 1)
        cap = max + 1;
    p = realloc(b->data, cap);
    if (!p)
        return ERR_NOMEM;
    b->data = p;
    b->cap = cap;
    return ERR_OK;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    if (buf_reserve(b, n))
        return ERR_NOMEM;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return ERR_OK;
}

/* ---- compiled schemas ---- */

enum vkind {
    VK_NULL,
    VK_BOOLEAN,
    VK_INT,
    VK_LONG,
    VK_FLOAT,
    VK_DOUBLE,
    VK_STRING,
    VK_BYTES,
    VK_FIXED,
    VK_ENUM,
    VK_RECORD,
    VK_UNION,
    VK_ARRAY,
    VK_MAP
};

struct vnode {
    enum vkind kind;
    int64_t n;            /* fields, branches, symbols; fixed: size */
    int first;            /* record/union: first entry in kid[]; array/map: item node */
    avro_schema_t schema; /* borrowed from the slot's schema */
};

/* A schema flattened into an array, walked without touching avro-c. */
struct vprog {
    struct vnode node[PROG_NODES];
    int kid[PROG_NODES];           /* node of each record field / union branch */
    const char *fname[PROG_NODES]; /* record field names (NULL for branches) */
    json_t *dflt[PROG_NODES];      /* record field defaults (borrowed), NULL if none */
    int nnode, nkid;
};

/* Where each struct txn_event field sits in a transaction_event schema;
 * index -1: the writer lacks the field, so it takes its default (missing). */
struct txn_slot {
    int index;
    bool nullable;
    int null_branch, value_branch;
};

enum { TXN_NFIELDS = 28 };

/* A writer schema resolved into our transaction_event reader schema. avro-c
 * 1.11's resolver refuses reader fields the writer lacks (it has no
 * defaults), so the reader is first projected onto the writer's fields; the
 * fields left out take their (null) default, i.e. stay missing. */
struct resolved {
    bool incompatible;
    char why[200];
    bool identical;     /* writer == reader: read directly */
    char partial[160];  /* fields with a writer union branch we cannot read */
    avro_schema_t proj; /* reader restricted to the writer's fields */
    avro_value_iface_t *proj_iface, *rw_iface;
    avro_value_t proj_value, rw_value;
    bool has_proj_value, has_rw_value;
    struct txn_slot txn[TXN_NFIELDS];
};

struct slot {
    int32_t id;    /* 0: none yet (registry mode, unregistered) */
    char file[64]; /* file name, or "registry schema N" */
    char *text;    /* the schema as given (registering) */
    avro_schema_t schema;
    json_t *doc; /* the .avsc as JSON: avro-c drops defaults */
    avro_value_iface_t *iface;
    avro_value_t value; /* reused for every message of this schema */
    bool has_value;
    struct vprog *prog;
    struct resolved *res; /* into the txn reader, made on first use */
};

struct codec {
    struct slot slot[MAX_SLOTS];
    int nslots;
    struct reg *reg;              /* borrowed; NULL: ids from schemas/ids */
    struct slot *wr[MAX_WRITERS]; /* fetched from the registry, by id */
    int nwr;
    int known[CODEC_NSCHEMAS]; /* slot index of each well-known schema */
    avro_reader_t reader;
    avro_writer_t writer;
    struct txn_slot txn[TXN_NFIELDS];
    struct buf scratch; /* bytes decoded from JSON strings */
};

static const char *const known_files[CODEC_NSCHEMAS] = {"transaction_event.avsc",
                                                        "transaction_prediction.avsc",
                                                        "dead_letter.avsc", "alert_event.avsc",
                                                        "image_event.avsc",
                                                        "image_prediction.avsc",
                                                        "label_event.avsc",
                                                        "click_event.avsc",
                                                        "click_prediction.avsc"};

static int avro_fail(struct err *e, int code, const char *what)
{
    return err_set(e, code, "%s: %s", what, avro_strerror());
}

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

static int compile(struct vprog *g, json_t *doc, avro_schema_t s, int depth, struct err *e);

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
static int compile(struct vprog *g, json_t *doc, avro_schema_t s, int depth, struct err *e)
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

struct walk {
    const unsigned char *p; /* the whole framed message: offsets are message bytes */
    size_t pos, end;
    const struct vprog *g;
    const char *field; /* innermost record field, for messages */
    struct err *e;
};

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
static size_t utf8_check(const unsigned char *s, size_t n)
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
    bad = utf8_check(w->p + w->pos, (size_t)len);
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

static int walk_node(struct walk *w, int node);

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

static int walk_node(struct walk *w, int node)
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

/* ---- writer schemas: schemas/ids, or a registry ---- */

static int load_schema_text(struct slot *s, char *text, size_t len, const char *path,
                            struct err *e);
static void slot_free(struct slot *s);

/* A schema the registry holds under id, compiled and kept. Registry
 * trouble (unreachable, auth) is ERR_RETRY: the message is fine, it must
 * wait; an id the registry does not have, or a schema we cannot use, is
 * ERR_DECODE: the message itself is bad. */
static int fetch_writer(struct codec *c, int32_t id, struct slot **out, struct err *e)
{
    const char *text;
    struct slot *s;
    char *copy;
    int rc = reg_schema_by_id(c->reg, id, &text, e);

    if (rc) {
        err_wrap(e, "schema id %" PRId32, id);
        e->code = rc == ERR_NOTFOUND || rc == ERR_DECODE ? ERR_DECODE : ERR_RETRY;
        return e->code;
    }
    if (c->nwr == MAX_WRITERS)
        return err_set(e, ERR_DECODE, "schema id %" PRId32 ": more than %d writer schemas", id,
                       MAX_WRITERS);
    if (!(s = calloc(1, sizeof(*s))) || !(copy = strdup(text))) {
        free(s);
        return err_set(e, ERR_RETRY, "schema id %" PRId32 ": out of memory", id);
    }
    s->id = id;
    snprintf(s->file, sizeof(s->file), "registry schema %" PRId32, id);
    if (load_schema_text(s, copy, strlen(copy), s->file, e)) {
        slot_free(s);
        free(s);
        e->code = ERR_DECODE;
        return e->code;
    }
    c->wr[c->nwr++] = s;
    *out = s;
    return ERR_OK;
}

static int find_writer(struct codec *c, int32_t id, struct slot **out, struct err *e)
{
    for (int i = 0; i < c->nslots; i++) {
        if (c->slot[i].id == id && id != 0) {
            *out = &c->slot[i];
            return ERR_OK;
        }
    }
    for (int i = 0; i < c->nwr; i++) {
        if (c->wr[i]->id == id) {
            *out = c->wr[i];
            return ERR_OK;
        }
    }
    if (!c->reg)
        return err_set(e, ERR_DECODE, "unknown schema id %" PRId32 " (not in schemas/ids)", id);
    return fetch_writer(c, id, out, e);
}

/* ---- framing ---- */

static int unframe(struct codec *c, const unsigned char *m, size_t len, struct slot **out,
                   struct err *e)
{
    int32_t id;

    if (len > CODEC_MAX_MESSAGE)
        return err_set(e, ERR_DECODE, "message of %zu bytes exceeds the %d-byte limit", len,
                       CODEC_MAX_MESSAGE);
    if (len == 0)
        return err_set(e, ERR_DECODE, "empty message");
    if (m[0] != 0)
        return err_set(e, ERR_DECODE,
                       "magic byte %d: producer uses header schema ids or no "
                       "Confluent framing (expected 0)",
                       m[0]);
    if (len < HDR)
        return err_set(e, ERR_DECODE,
                       "truncated at byte %zu: the Confluent header takes %d "
                       "bytes",
                       len, HDR);
    id = (int32_t)((uint32_t)m[1] << 24 | (uint32_t)m[2] << 16 | (uint32_t)m[3] << 8 | m[4]);
    return find_writer(c, id, out, e);
}

/* Unframe, then walk the body with the WRITER's schema: only bytes that
 * pass reach avro-c. */
static int frame_walk(struct codec *c, const void *msg, size_t len, struct slot **out,
                      struct err *e)
{
    struct walk w = {.p = msg, .pos = HDR, .end = len, .e = e};
    struct slot *s = NULL;

    if (unframe(c, msg, len, &s, e))
        return e->code;
    w.g = s->prog;
    if (walk_node(&w, 0))
        return e->code;
    if (w.pos != w.end)
        return err_set(e, ERR_DECODE, "trailing %zu bytes after the %s record at byte %zu",
                       w.end - w.pos, s->file, w.pos);
    avro_reader_memory_set_source(c->reader, (const char *)msg + HDR, (int64_t)(len - HDR));
    *out = s;
    return ERR_OK;
}

/* Unframe, walk, then let avro-c read the (now known to be sane) body into
 * a value of the writer's schema. */
static int decode(struct codec *c, const void *msg, size_t len, struct slot **out, struct err *e)
{
    if (frame_walk(c, msg, len, out, e))
        return e->code;
    if (avro_value_read(c->reader, &(*out)->value))
        return avro_fail(e, ERR_DECODE, (*out)->file);
    return ERR_OK;
}

/* The same, accepting only the schema `want` (no writer->reader resolution:
 * records other than transaction events must be written with our schema). */
static int decode_as(struct codec *c, const void *msg, size_t len, const struct slot *want,
                     struct slot **out, struct err *e)
{
    if (frame_walk(c, msg, len, out, e))
        return e->code;
    /* A registry id whose schema is ours exactly (another producer
     * registered the same .avsc): its fields are read by name, as ours. */
    if (*out != want && !avro_schema_equal((*out)->schema, want->schema))
        return err_set(e, ERR_DECODE, "schema id %" PRId32 " is %s, expected %s", (*out)->id,
                       (*out)->file, want->file);
    if (avro_value_read(c->reader, &(*out)->value))
        return avro_fail(e, ERR_DECODE, (*out)->file);
    return ERR_OK;
}

/* Writes s->value, framed with s's id, into out (replacing its content). */
static int encode(struct codec *c, struct slot *s, struct buf *out, struct err *e)
{
    size_t size;

    if (s->id == 0)
        return err_set(e, ERR_CONFIG,
                       "%s has no schema id: it is not registered in the schema registry", s->file);
    if (avro_value_sizeof(&s->value, &size))
        return avro_fail(e, ERR_DECODE, s->file);
    buf_reset(out);
    if (buf_reserve(out, HDR + size))
        return err_set(e, ERR_NOMEM, "%s record of %zu bytes exceeds the %zu-byte buffer", s->file,
                       HDR + size, out->max);
    out->data[0] = 0;
    out->data[1] = (unsigned char)((uint32_t)s->id >> 24);
    out->data[2] = (unsigned char)((uint32_t)s->id >> 16);
    out->data[3] = (unsigned char)((uint32_t)s->id >> 8);
    out->data[4] = (unsigned char)s->id;
    avro_writer_memory_set_dest(c->writer, (const char *)out->data + HDR, (int64_t)size);
    if (avro_value_write(c->writer, &s->value))
        return avro_fail(e, ERR_DECODE, s->file);
    out->len = HDR + size;
    out->data[out->len] = '\0';
    return ERR_OK;
}

/* ---- loading ---- */

/* Reads a whole small file; caller frees. */
static char *slurp(const char *path, size_t *len, struct err *e)
{
    FILE *f = fopen(path, "rb");
    char *p;

    if (!f) {
        err_set(e, ERR_CONFIG, "%s: %s", path, strerror(errno));
        return NULL;
    }
    p = malloc(SCHEMA_FILE_MAX + 1);
    if (!p) {
        fclose(f);
        err_set(e, ERR_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    *len = fread(p, 1, SCHEMA_FILE_MAX + 1, f);
    if (ferror(f) || *len > SCHEMA_FILE_MAX) {
        err_set(e, ERR_CONFIG, "%s: %s", path, ferror(f) ? "read error" : "file too large");
        free(p);
        p = NULL;
    } else {
        p[*len] = '\0';
    }
    fclose(f);
    return p;
}

/* Parses, compiles and instantiates one schema; takes text (malloc'd).
 * path names it in errors. */
static int load_schema_text(struct slot *s, char *text, size_t len, const char *path, struct err *e)
{
    json_error_t je;
    int rc = ERR_OK;

    s->text = text;
    if (avro_schema_from_json_length(text, len, &s->schema)) {
        s->schema = NULL;
        rc = err_set(e, ERR_CONFIG, "%s: %s", path, avro_strerror());
    } else if (!(s->doc = json_loadb(text, len, 0, &je))) {
        rc = err_set(e, ERR_CONFIG, "%s:%d: %s", path, je.line, je.text);
    } else if (!(s->prog = calloc(1, sizeof(*s->prog)))) {
        rc = err_set(e, ERR_NOMEM, "%s: out of memory", path);
    } else if (compile(s->prog, s->doc, s->schema, 0, e) < 0) {
        rc = err_wrap(e, "%s", path);
    } else if (s->prog->node[0].kind != VK_RECORD) {
        rc = err_set(e, ERR_CONFIG, "%s: top-level type must be a record", path);
    } else if (!(s->iface = avro_generic_class_from_schema(s->schema)) ||
               avro_generic_value_new(s->iface, &s->value)) {
        rc = err_set(e, ERR_CONFIG, "%s: %s", path, avro_strerror());
    } else {
        s->has_value = true;
    }
    return rc;
}

static int load_schema(struct slot *s, const char *dir, struct err *e)
{
    char path[4096];
    size_t len;
    char *text;

    snprintf(path, sizeof(path), "%s/%s", dir, s->file);
    if (!(text = slurp(path, &len, e)))
        return e->code;
    return load_schema_text(s, text, len, path, e);
}

/* One "<id> <file.avsc>" line of schemas/ids into a new slot. */
static int parse_ids_line(struct codec *c, char *line, const char *where, struct err *e)
{
    char *end, *file;
    long id;
    struct slot *s;

    errno = 0;
    id = strtol(line, &end, 10);
    if (end == line || errno || id < 1 || id > INT32_MAX || (*end != ' ' && *end != '\t'))
        return err_set(e, ERR_CONFIG, "%s: expected \"<id> <file.avsc>\" with id >= 1", where);
    file = end + strspn(end, " \t");
    file[strcspn(file, " \t\r")] = '\0';
    if (!*file || strchr(file, '/') || strlen(file) >= sizeof(c->slot[0].file))
        return err_set(e, ERR_CONFIG, "%s: bad schema file name \"%s\"", where, file);
    for (int i = 0; i < c->nslots; i++)
        if (c->slot[i].id == id || strcmp(c->slot[i].file, file) == 0)
            return err_set(e, ERR_CONFIG, "%s: id %ld or %s listed twice", where, id, file);
    if (c->nslots == MAX_SLOTS)
        return err_set(e, ERR_CONFIG, "%s: more than %d schemas", where, MAX_SLOTS);
    s = &c->slot[c->nslots++];
    s->id = (int32_t)id;
    snprintf(s->file, sizeof(s->file), "%s", file);
    return ERR_OK;
}

static int load_ids(struct codec *c, const char *dir, struct err *e)
{
    char path[4096], where[4200], *text, *line, *next;
    size_t len;
    int lineno = 0, rc = ERR_OK;

    snprintf(path, sizeof(path), "%s/ids", dir);
    if (!(text = slurp(path, &len, e)))
        return e->code;
    for (line = text; line && !rc; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        lineno++;
        line += strspn(line, " \t");
        if (*line == '#' || *line == '\0' || *line == '\r')
            continue;
        snprintf(where, sizeof(where), "%s:%d", path, lineno);
        rc = parse_ids_line(c, line, where, e);
    }
    free(text);
    return rc;
}

static int find_known(struct codec *c, const char *dir, struct err *e)
{
    for (int k = 0; k < CODEC_NSCHEMAS; k++) {
        c->known[k] = -1;
        for (int i = 0; i < c->nslots; i++)
            if (strcmp(c->slot[i].file, known_files[k]) == 0)
                c->known[k] = i;
        if (c->known[k] < 0)
            return err_set(e, ERR_CONFIG, "%s/ids: no id for %s", dir, known_files[k]);
    }
    return ERR_OK;
}

static int map_txn_schema(struct codec *c, struct err *e);

struct codec *codec_open(const char *schema_dir, struct err *e)
{
    struct codec *c = calloc(1, sizeof(*c));
    static const char empty[1];

    if (!c) {
        err_set(e, ERR_NOMEM, "codec: out of memory");
        return NULL;
    }
    buf_init(&c->scratch, 0);
    if (!schema_dir || !*schema_dir)
        schema_dir = "schemas";
    if (load_ids(c, schema_dir, e) || find_known(c, schema_dir, e))
        goto out_close;
    for (int i = 0; i < c->nslots; i++)
        if (load_schema(&c->slot[i], schema_dir, e))
            goto out_close;
    if (map_txn_schema(c, e)) {
        err_wrap(e, "%s/%s", schema_dir, known_files[CODEC_TXN_EVENT]);
        goto out_close;
    }
    c->reader = avro_reader_memory(empty, 0);
    c->writer = avro_writer_memory(empty, 0);
    if (!c->reader || !c->writer) {
        err_set(e, ERR_NOMEM, "codec: avro reader/writer: %s", avro_strerror());
        goto out_close;
    }
    return c;
out_close:
    codec_close(c);
    return NULL;
}

static void resolved_free(struct resolved *r)
{
    if (!r)
        return;
    if (r->has_rw_value)
        avro_value_decref(&r->rw_value);
    if (r->has_proj_value)
        avro_value_decref(&r->proj_value);
    if (r->rw_iface)
        avro_value_iface_decref(r->rw_iface);
    if (r->proj_iface)
        avro_value_iface_decref(r->proj_iface);
    if (r->proj)
        avro_schema_decref(r->proj);
    free(r);
}

static void slot_free(struct slot *s)
{
    resolved_free(s->res);
    if (s->has_value)
        avro_value_decref(&s->value);
    if (s->iface)
        avro_value_iface_decref(s->iface);
    if (s->schema)
        avro_schema_decref(s->schema);
    json_decref(s->doc);
    free(s->prog);
    free(s->text);
}

void codec_close(struct codec *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->nslots; i++)
        slot_free(&c->slot[i]);
    for (int i = 0; i < c->nwr; i++) {
        slot_free(c->wr[i]);
        free(c->wr[i]);
    }
    if (c->reader)
        avro_reader_free(c->reader);
    if (c->writer)
        avro_writer_free(c->writer);
    buf_free(&c->scratch);
    free(c);
}

int32_t codec_schema_id(const struct codec *c, enum codec_schema which)
{
    if (!c || (int)which < 0 || which >= CODEC_NSCHEMAS)
        return -1;
    return c->slot[c->known[which]].id;
}

/* ---- struct txn_event <-> the transaction_event schema ---- */

enum tkind { TK_ID, TK_TIME, TK_DOUBLE, TK_CAT, TK_BOOL, TK_LABEL };

struct txn_field {
    const char *name;
    enum tkind kind;
    size_t off, size;
};

#define TF(name, kind, member)                                                                     \
    {                                                                                              \
        name, kind, offsetof(struct txn_event, member), sizeof(((struct txn_event *)0)->member)    \
    }

/* The one table mapping schema fields to struct members: decode, encode and
 * JSON all go through it, so they cannot disagree. */
static const struct txn_field txn_fields[TXN_NFIELDS] = {
    TF("event_id", TK_ID, event_id),
    TF("user_id", TK_ID, user_id),
    TF("event_time", TK_TIME, event_time_ms),
    TF("amount", TK_DOUBLE, amount),
    TF("income", TK_DOUBLE, income),
    TF("expenses", TK_DOUBLE, expenses),
    TF("assets", TK_DOUBLE, assets),
    TF("debt", TK_DOUBLE, debt),
    TF("price", TK_DOUBLE, price),
    TF("term_months", TK_DOUBLE, term_months),
    TF("seniority_years", TK_DOUBLE, seniority_years),
    TF("age", TK_DOUBLE, age),
    TF("home", TK_CAT, home),
    TF("marital", TK_CAT, marital),
    TF("job", TK_CAT, job),
    TF("past_records", TK_BOOL, past_records),
    TF("credit_limit", TK_DOUBLE, credit_limit),
    TF("credit_used", TK_DOUBLE, credit_used),
    TF("payments_on_time", TK_DOUBLE, payments_on_time),
    TF("payments_late", TK_DOUBLE, payments_late),
    TF("inquiries_6m", TK_DOUBLE, inquiries_6m),
    TF("accounts_open", TK_DOUBLE, accounts_open),
    TF("accounts_opened_12m", TK_DOUBLE, accounts_opened_12m),
    TF("bankruptcies", TK_DOUBLE, bankruptcies),
    TF("collections", TK_DOUBLE, collections),
    TF("oldest_account_months", TK_DOUBLE, oldest_account_months),
    TF("avg_account_age_months", TK_DOUBLE, avg_account_age_months),
    TF("label", TK_LABEL, label),
};

static const struct txn_field *txn_field_by_name(const char *name)
{
    for (int i = 0; i < TXN_NFIELDS; i++)
        if (strcmp(txn_fields[i].name, name) == 0)
            return &txn_fields[i];
    return NULL;
}

static enum vkind tkind_value(enum tkind k)
{
    switch (k) {
    case TK_ID:
    case TK_CAT:
        return VK_STRING;
    case TK_TIME:
        return VK_LONG;
    case TK_DOUBLE:
        return VK_DOUBLE;
    case TK_BOOL:
        return VK_BOOLEAN;
    case TK_LABEL:
        return VK_INT;
    }
    return VK_NULL;
}

/* Checks one schema field against the table: required ids/time are plain,
 * every other field is a ["null", T] union. */
static int map_txn_field(const struct vprog *g, int kid, const struct txn_field *f,
                         struct txn_slot *ts, struct err *e)
{
    const struct vnode *nd = &g->node[g->kid[kid]];
    enum vkind want = tkind_value(f->kind);
    bool required = f->kind == TK_ID || f->kind == TK_TIME;

    ts->index = kid - g->node[0].first;
    ts->nullable = !required;
    if (required) {
        if (nd->kind != want)
            return err_set(e, ERR_CONFIG, "field %s has the wrong type", f->name);
        return ERR_OK;
    }
    if (nd->kind != VK_UNION || nd->n != 2)
        return err_set(e, ERR_CONFIG, "field %s must be a [\"null\", T] union", f->name);
    for (int b = 0; b < 2; b++) {
        enum vkind k = g->node[g->kid[nd->first + b]].kind;
        if (k == VK_NULL)
            ts->null_branch = b;
        else if (k == want)
            ts->value_branch = b;
        else
            return err_set(e, ERR_CONFIG, "field %s has the wrong type", f->name);
    }
    if (ts->null_branch == ts->value_branch)
        return err_set(e, ERR_CONFIG, "field %s must be a [\"null\", T] union", f->name);
    return ERR_OK;
}

/* Maps the record g onto struct txn_event. allow_absent: a projection of
 * the reader, whose absent fields stay missing (index -1). */
static int map_txn(const struct vprog *g, struct txn_slot *txn, bool allow_absent, struct err *e)
{
    const struct vnode *root = &g->node[0];
    bool seen[TXN_NFIELDS] = {0};

    for (int i = 0; i < (int)root->n; i++) {
        const char *name = g->fname[root->first + i];
        const struct txn_field *f = txn_field_by_name(name);
        if (!f)
            return err_set(e, ERR_CONFIG, "field %s is not in struct txn_event", name);
        if (map_txn_field(g, root->first + i, f, &txn[f - txn_fields], e))
            return e->code;
        seen[f - txn_fields] = true;
    }
    for (int i = 0; i < TXN_NFIELDS; i++) {
        if (!seen[i] && !allow_absent)
            return err_set(e, ERR_CONFIG, "field %s is missing", txn_fields[i].name);
        if (!seen[i])
            txn[i].index = -1;
    }
    return ERR_OK;
}

static int map_txn_schema(struct codec *c, struct err *e)
{
    return map_txn(c->slot[c->known[CODEC_TXN_EVENT]].prog, c->txn, false, e);
}

/* ---- writer schema -> the transaction_event reader ---- */

/* The reader's document keeping only the fields the writer has. A reader
 * field the writer lacks needs a default, and only null (= missing) is
 * supported: every optional field of transaction_event.avsc has it. */
static int project(const struct slot *rd, const struct slot *w, struct resolved *r, struct err *e)
{
    json_t *doc, *kept, *f;
    char *text = NULL;
    size_t i;
    int rc = ERR_OK;

    if (avro_typeof(w->schema) != AVRO_RECORD)
        return err_set(e, ERR_DECODE, "the writer's top-level type is not a record");
    /* Avro's rule: records resolve only under the same (unqualified) name. */
    if (strcmp(avro_schema_name(w->schema), avro_schema_name(rd->schema)) != 0)
        return err_set(e, ERR_DECODE, "record %s is not %s", avro_schema_name(w->schema),
                       avro_schema_name(rd->schema));
    if (!(doc = json_deep_copy(rd->doc)) || !(kept = json_array())) {
        json_decref(doc);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    json_array_foreach(json_object_get(doc, "fields"), i, f)
    {
        const char *name = json_string_value(json_object_get(f, "name"));
        json_t *dflt = json_object_get(f, "default");
        if (name && avro_schema_record_field_get_index(w->schema, name) >= 0)
            json_array_append(kept, f);
        else if (!dflt)
            rc = err_set(e, ERR_DECODE, "reader field %s is not in the writer and has no default",
                         name);
        else if (!json_is_null(dflt))
            rc = err_set(e, ERR_DECODE,
                         "reader field %s is not in the writer; only null defaults are applied",
                         name);
        if (rc)
            break;
    }
    json_object_set_new(doc, "fields", kept);
    if (!rc && !(text = json_dumps(doc, JSON_COMPACT)))
        rc = err_set(e, ERR_NOMEM, "out of memory");
    if (!rc && avro_schema_from_json_length(text, strlen(text), &r->proj)) {
        r->proj = NULL;
        rc = avro_fail(e, ERR_DECODE, "projected reader");
    }
    free(text);
    json_decref(doc);
    return rc;
}

/* The projection's field positions, and avro-c's resolved writer into it
 * (which refuses type mismatches and reads promotions such as int->long). */
static int instantiate(const struct slot *w, struct resolved *r, struct err *e)
{
    struct vprog *g = calloc(1, sizeof(*g));
    int rc;

    if (!g)
        return err_set(e, ERR_NOMEM, "out of memory");
    rc = compile(g, NULL, r->proj, 0, e) < 0 ? e->code : map_txn(g, r->txn, true, e);
    free(g);
    if (rc)
        return rc;
    if (!(r->proj_iface = avro_generic_class_from_schema(r->proj)) ||
        avro_generic_value_new(r->proj_iface, &r->proj_value))
        return avro_fail(e, ERR_DECODE, "projected reader");
    r->has_proj_value = true;
    if (!(r->rw_iface = avro_resolved_writer_new(w->schema, r->proj)))
        return err_set(e, ERR_DECODE, "%s", avro_strerror());
    if (avro_resolved_writer_new_value(r->rw_iface, &r->rw_value))
        return avro_fail(e, ERR_DECODE, "resolved writer");
    r->has_rw_value = true;
    avro_resolved_writer_set_dest(&r->rw_value, &r->proj_value);
    return ERR_OK;
}

/* avro-c, like Java's resolving decoder, fails on a writer union branch
 * with no reader counterpart only when a message uses it; these fields are
 * named when that happens. */
static void note_partial_fields(const struct slot *w, struct resolved *r)
{
    size_t n = avro_schema_record_size(r->proj), used = 0;

    for (size_t i = 0; i < n; i++) {
        const char *name = avro_schema_record_field_name(r->proj, (int)i);
        avro_schema_t rf = avro_schema_record_field_get_by_index(r->proj, (int)i);
        avro_schema_t wf = avro_schema_record_field_get(w->schema, name);
        bool bad = false;

        if (!wf || avro_typeof(wf) != AVRO_UNION)
            continue;
        for (size_t b = 0; b < avro_schema_union_size(wf) && !bad; b++) {
            avro_value_iface_t *it =
                avro_resolved_writer_new(avro_schema_union_branch(wf, (int)b), rf);
            bad = it == NULL;
            if (it)
                avro_value_iface_decref(it);
        }
        if (bad && used + strlen(name) + 3 < sizeof(r->partial))
            used += (size_t)snprintf(r->partial + used, sizeof(r->partial) - used, "%s%s",
                                     used ? ", " : "", name);
    }
}

/* Resolves writer w into the txn reader once; the verdict is kept, so an
 * incompatible writer costs one attempt, then a lookup per message. */
static int resolve(struct codec *c, struct slot *w, struct err *e)
{
    const struct slot *rd = &c->slot[c->known[CODEC_TXN_EVENT]];
    struct resolved *r = w->res;
    struct err why = {0};

    if (!r) {
        if (!(r = calloc(1, sizeof(*r))))
            return err_set(e, ERR_RETRY, "out of memory");
        w->res = r;
        if (avro_schema_equal(w->schema, rd->schema))
            r->identical = true;
        else if (!project(rd, w, r, &why) && !instantiate(w, r, &why))
            note_partial_fields(w, r);
        else {
            r->incompatible = true;
            snprintf(r->why, sizeof(r->why),
                     "writer schema id %" PRId32 " (%s) cannot be read as %s: %s", w->id, w->file,
                     rd->file, why.msg);
        }
    }
    if (r->incompatible)
        return err_set(e, ERR_DECODE, "%s", r->why);
    return ERR_OK;
}

/* Copies an Avro string into a fixed struct field: too long is an error. */
static int copy_str(char *dst, size_t cap, const char *s, size_t len, const char *name,
                    struct err *e)
{
    if (len >= cap)
        return err_set(e, ERR_DECODE, "field %s: %zu bytes exceeds the %zu-byte limit", name, len,
                       cap - 1);
    if (memchr(s, '\0', len))
        return err_set(e, ERR_DECODE, "field %s contains a NUL byte", name);
    memcpy(dst, s, len);
    dst[len] = '\0';
    return ERR_OK;
}

static int get_txn_field(const struct txn_field *f, avro_value_t *v, struct txn_event *ev,
                         struct err *e)
{
    char *p = (char *)ev + f->off;
    const char *s;
    size_t size;
    int32_t i32;
    int b;
    int rc = 0;

    switch (f->kind) {
    case TK_ID:
    case TK_CAT:
        if ((rc = avro_value_get_string(v, &s, &size)))
            break;
        return copy_str(p, f->size, s, size ? size - 1 : 0, f->name, e);
    case TK_TIME:
        rc = avro_value_get_long(v, (int64_t *)(void *)p);
        break;
    case TK_DOUBLE:
        rc = avro_value_get_double(v, (double *)(void *)p);
        /* reliability: NaN is how a missing value is held in memory; on the
         * wire missing is the null branch, so a NaN there is refused rather
         * than silently read as missing. */
        if (!rc && isnan(*(double *)(void *)p))
            return err_set(e, ERR_INVALID, "field %s: NaN (a missing value is sent as null)",
                           f->name);
        break;
    case TK_BOOL:
        if (!(rc = avro_value_get_boolean(v, &b)))
            *(int *)(void *)p = b ? 1 : 0;
        break;
    case TK_LABEL:
        if (!(rc = avro_value_get_int(v, &i32)))
            *(int *)(void *)p = i32;
        break;
    }
    return rc ? avro_fail(e, ERR_DECODE, f->name) : ERR_OK;
}

static int extract_txn(const struct txn_slot *txn, avro_value_t *rec, struct txn_event *ev,
                       struct err *e)
{
    for (int i = 0; i < TXN_NFIELDS; i++) {
        const struct txn_slot *ts = &txn[i];
        avro_value_t v, br;
        int disc;

        if (ts->index < 0)
            continue; /* not in the writer: its null default, missing */
        if (avro_value_get_by_index(rec, (size_t)ts->index, &v, NULL))
            return avro_fail(e, ERR_DECODE, txn_fields[i].name);
        if (ts->nullable) {
            if (avro_value_get_discriminant(&v, &disc) || avro_value_get_current_branch(&v, &br))
                return avro_fail(e, ERR_DECODE, txn_fields[i].name);
            if (disc == ts->null_branch)
                continue; /* stays missing from event_txn_init */
            v = br;
        }
        if (get_txn_field(&txn_fields[i], &v, ev, e))
            return e->code;
    }
    return ERR_OK;
}

/* The writer's bytes (already walked) into a txn reader value. */
static int read_txn(struct codec *c, struct slot *w, avro_value_t **rec,
                    const struct txn_slot **map, struct err *e)
{
    struct slot *rd = &c->slot[c->known[CODEC_TXN_EVENT]];

    *rec = &rd->value;
    *map = c->txn;
    if (w != rd) {
        if (resolve(c, w, e))
            return e->code;
        if (!w->res->identical) {
            *rec = &w->res->proj_value;
            *map = w->res->txn;
            if (avro_value_read(c->reader, &w->res->rw_value))
                return err_set(e, ERR_DECODE,
                               "writer schema id %" PRId32 " (%s) cannot be read as %s%s%s: %s",
                               w->id, w->file, rd->file, *w->res->partial ? ", field " : "",
                               w->res->partial, avro_strerror());
            return ERR_OK;
        }
    }
    if (avro_value_read(c->reader, &rd->value))
        return avro_fail(e, ERR_DECODE, rd->file);
    return ERR_OK;
}

int codec_decode_txn(struct codec *c, const void *msg, size_t len, struct txn_event *ev,
                     struct err *e)
{
    const struct txn_slot *map;
    avro_value_t *rec;
    struct slot *s;

    event_txn_init(ev);
    if (frame_walk(c, msg, len, &s, e) || read_txn(c, s, &rec, &map, e))
        return e->code;
    if (extract_txn(map, rec, ev, e)) {
        event_txn_init(ev); /* never hand out half an event */
        return e->code;
    }
    return ERR_OK;
}

/* A fixed struct string as an Avro string; it must be NUL-terminated. */
static int set_fixed_str(avro_value_t *v, const char *s, size_t cap, const char *name,
                         struct err *e)
{
    size_t n = strnlen(s, cap);

    if (n == cap)
        return err_set(e, ERR_DECODE, "field %s is not NUL-terminated", name);
    if (avro_value_set_string_len(v, s, n + 1))
        return avro_fail(e, ERR_DECODE, name);
    return ERR_OK;
}

static bool txn_missing(const struct txn_field *f, const char *p)
{
    switch (f->kind) {
    case TK_DOUBLE:
        return isnan(*(const double *)(const void *)p);
    case TK_CAT:
        return p[0] == '\0';
    case TK_BOOL:
        return *(const int *)(const void *)p < 0;
    case TK_LABEL:
        return *(const int *)(const void *)p == -1;
    default:
        return false;
    }
}

static int put_txn_field(const struct txn_field *f, const struct txn_slot *ts, avro_value_t *v,
                         const struct txn_event *ev, struct err *e)
{
    const char *p = (const char *)ev + f->off;
    avro_value_t br;
    int rc = 0;

    if (ts->nullable) {
        bool missing = txn_missing(f, p);
        if (avro_value_set_branch(v, missing ? ts->null_branch : ts->value_branch, &br))
            return avro_fail(e, ERR_DECODE, f->name);
        if (missing)
            return avro_value_set_null(&br) ? avro_fail(e, ERR_DECODE, f->name) : ERR_OK;
        *v = br;
    }
    switch (f->kind) {
    case TK_ID:
    case TK_CAT:
        return set_fixed_str(v, p, f->size, f->name, e);
    case TK_TIME:
        rc = avro_value_set_long(v, *(const int64_t *)(const void *)p);
        break;
    case TK_DOUBLE:
        rc = avro_value_set_double(v, *(const double *)(const void *)p);
        break;
    case TK_BOOL:
        rc = avro_value_set_boolean(v, *(const int *)(const void *)p != 0);
        break;
    case TK_LABEL:
        rc = avro_value_set_int(v, *(const int *)(const void *)p);
        break;
    }
    return rc ? avro_fail(e, ERR_DECODE, f->name) : ERR_OK;
}

static int fill_txn(struct codec *c, const struct txn_event *ev, struct err *e);

int codec_encode_txn(struct codec *c, const struct txn_event *ev, struct buf *out, struct err *e)
{
    struct slot *s = &c->slot[c->known[CODEC_TXN_EVENT]];

    if (fill_txn(c, ev, e))
        return e->code;
    return encode(c, s, out, e);
}

/* ---- predictions and dead letters ---- */

/* Field setters by name: a schema that lacks the field or types it
 * differently is reported with the field's name. */
static int field(avro_value_t *rec, const char *name, avro_value_t *v, struct err *e)
{
    if (avro_value_get_by_name(rec, name, v, NULL))
        return err_set(e, ERR_CONFIG, "schema has no field %s", name);
    return ERR_OK;
}

static int put_str(avro_value_t *rec, const char *name, const char *s, size_t cap, struct err *e)
{
    avro_value_t v;

    if (field(rec, name, &v, e))
        return e->code;
    return set_fixed_str(&v, s ? s : "", s ? cap : 1, name, e);
}

static int put_long(avro_value_t *rec, const char *name, int64_t x, struct err *e)
{
    avro_value_t v;

    if (field(rec, name, &v, e))
        return e->code;
    return avro_value_set_long(&v, x) ? avro_fail(e, ERR_DECODE, name) : ERR_OK;
}

static int put_int(avro_value_t *rec, const char *name, int32_t x, struct err *e)
{
    avro_value_t v;

    if (field(rec, name, &v, e))
        return e->code;
    return avro_value_set_int(&v, x) ? avro_fail(e, ERR_DECODE, name) : ERR_OK;
}

static int put_double(avro_value_t *rec, const char *name, double x, struct err *e)
{
    avro_value_t v;

    if (field(rec, name, &v, e))
        return e->code;
    return avro_value_set_double(&v, x) ? avro_fail(e, ERR_DECODE, name) : ERR_OK;
}

static int put_bool(avro_value_t *rec, const char *name, bool x, struct err *e)
{
    avro_value_t v;

    if (field(rec, name, &v, e))
        return e->code;
    return avro_value_set_boolean(&v, x) ? avro_fail(e, ERR_DECODE, name) : ERR_OK;
}

static int put_reasons(avro_value_t *rec, const struct txn_prediction *p, struct err *e)
{
    avro_value_t arr, item;

    if (p->n_reasons < 0 || p->n_reasons > PRED_REASONS)
        return err_set(e, ERR_DECODE, "field reasons: n_reasons %d out of range [0, %d]",
                       p->n_reasons, PRED_REASONS);
    if (field(rec, "reasons", &arr, e))
        return e->code;
    for (int i = 0; i < p->n_reasons; i++) {
        if (avro_value_append(&arr, &item, NULL))
            return avro_fail(e, ERR_DECODE, "reasons");
        if (set_fixed_str(&item, p->reasons[i], sizeof(p->reasons[i]), "reasons", e))
            return e->code;
    }
    return ERR_OK;
}

#define PUT_STR(rec, p, m, e) put_str(rec, #m, (p)->m, sizeof((p)->m), e)

static int put_prediction(avro_value_t *r, const struct txn_prediction *p, struct err *e)
{
    avro_value_t v;

    if (PUT_STR(r, p, event_id, e) || PUT_STR(r, p, user_id, e) ||
        put_long(r, "event_time", p->event_time_ms, e) || PUT_STR(r, p, model_name, e) ||
        PUT_STR(r, p, model_version, e) || PUT_STR(r, p, feature_version, e) ||
        put_double(r, "probability", p->probability, e) || put_int(r, "score", p->score, e) ||
        put_double(r, "score_probability", p->score_probability, e) || PUT_STR(r, p, decision, e) ||
        put_reasons(r, p, e) || PUT_STR(r, p, feature_hash, e) ||
        put_bool(r, "degraded", p->degraded, e) || put_bool(r, "redelivered", p->redelivered, e) ||
        put_long(r, "latency_us", p->latency_us, e) || PUT_STR(r, p, src_topic, e) ||
        put_int(r, "src_partition", p->src_partition, e) ||
        put_long(r, "src_offset", p->src_offset, e))
        return e->code;
    /* Added by the champion/challenger issue: a registered schema from
     * before it (lookup only) lacks them, and then they are left out. */
    if (avro_value_get_by_name(r, "experiment_id", &v, NULL) == 0 &&
        set_fixed_str(&v, p->experiment_id, sizeof(p->experiment_id), "experiment_id", e))
        return e->code;
    if (avro_value_get_by_name(r, "variant", &v, NULL) == 0 &&
        set_fixed_str(&v, p->variant, sizeof(p->variant), "variant", e))
        return e->code;
    return ERR_OK;
}

int codec_encode_prediction(struct codec *c, const struct txn_prediction *p, struct buf *out,
                            struct err *e)
{
    struct slot *s = &c->slot[c->known[CODEC_TXN_PREDICTION]];

    avro_value_reset(&s->value);
    if (put_prediction(&s->value, p, e))
        return err_wrap(e, "encode prediction %s", p->event_id);
    return encode(c, s, out, e);
}

/* Bytes, or null when nullable and p is NULL. */
static int put_bytes(avro_value_t *rec, const char *name, const void *p, size_t n, struct err *e)
{
    avro_value_t v, br;
    static const char none[1];

    if (field(rec, name, &v, e))
        return e->code;
    if (avro_value_get_type(&v) == AVRO_UNION) {
        /* ["null", "bytes"]: pick the branch by its type, not its position. */
        avro_schema_t u = avro_value_get_schema(&v);
        int want = p ? AVRO_BYTES : AVRO_NULL, b = 0;
        while (b < (int)avro_schema_union_size(u) &&
               (int)avro_typeof(avro_schema_union_branch(u, b)) != want)
            b++;
        if (avro_value_set_branch(&v, b, &br))
            return avro_fail(e, ERR_DECODE, name);
        if (!p)
            return avro_value_set_null(&br) ? avro_fail(e, ERR_DECODE, name) : ERR_OK;
        v = br;
    }
    if (avro_value_set_bytes(&v, (void *)(p ? p : none), p ? n : 0))
        return avro_fail(e, ERR_DECODE, name);
    return ERR_OK;
}

static int put_dlq(avro_value_t *r, const struct dlq_record *d, struct err *e)
{
    if (put_str(r, "reason", d->reason, SIZE_MAX, e) ||
        put_str(r, "error_code", d->error_code, SIZE_MAX, e) ||
        put_str(r, "worker", d->worker, SIZE_MAX, e) ||
        put_str(r, "src_topic", d->src_topic, SIZE_MAX, e) ||
        put_int(r, "src_partition", d->src_partition, e) ||
        put_long(r, "src_offset", d->src_offset, e) ||
        put_long(r, "src_timestamp", d->src_timestamp_ms, e) ||
        put_bytes(r, "key", d->key, d->key_len, e) ||
        put_bytes(r, "payload", d->payload ? d->payload : "", d->payload ? d->payload_len : 0, e) ||
        put_long(r, "failed_at", d->failed_at_ms, e) ||
        put_long(r, "payload_size",
                 (int64_t)(d->payload_size ? d->payload_size : d->payload ? d->payload_len : 0),
                 e) ||
        put_long(r, "key_size",
                 d->key ? (int64_t)(d->key_size ? d->key_size : d->key_len) : -1, e))
        return e->code;
    return ERR_OK;
}

int codec_encode_dlq(struct codec *c, const struct dlq_record *r, struct buf *out, struct err *e)
{
    struct slot *s = &c->slot[c->known[CODEC_DEAD_LETTER]];

    avro_value_reset(&s->value);
    if (put_dlq(&s->value, r, e))
        return err_wrap(e, "encode dead letter");
    return encode(c, s, out, e);
}

/* ---- images: struct image_event / image_prediction <-> their schemas ---- */

static int get_str(avro_value_t *rec, const char *name, char *dst, size_t cap, struct err *e)
{
    avro_value_t v;
    const char *s;
    size_t size;

    if (field(rec, name, &v, e))
        return e->code;
    if (avro_value_get_string(&v, &s, &size))
        return avro_fail(e, ERR_DECODE, name);
    return copy_str(dst, cap, s, size ? size - 1 : 0, name, e);
}

static int get_long(avro_value_t *rec, const char *name, int64_t *x, struct err *e)
{
    avro_value_t v;

    if (field(rec, name, &v, e))
        return e->code;
    return avro_value_get_long(&v, x) ? avro_fail(e, ERR_DECODE, name) : ERR_OK;
}

static int get_int(avro_value_t *rec, const char *name, int32_t *x, struct err *e)
{
    avro_value_t v;

    if (field(rec, name, &v, e))
        return e->code;
    return avro_value_get_int(&v, x) ? avro_fail(e, ERR_DECODE, name) : ERR_OK;
}

static int get_double(avro_value_t *rec, const char *name, double *x, struct err *e)
{
    avro_value_t v;

    if (field(rec, name, &v, e))
        return e->code;
    return avro_value_get_double(&v, x) ? avro_fail(e, ERR_DECODE, name) : ERR_OK;
}

static int get_bool(avro_value_t *rec, const char *name, bool *x, struct err *e)
{
    avro_value_t v;
    int b;

    if (field(rec, name, &v, e))
        return e->code;
    if (avro_value_get_boolean(&v, &b))
        return avro_fail(e, ERR_DECODE, name);
    *x = b != 0;
    return ERR_OK;
}

#define GET_STR(rec, p, m, e) get_str(rec, #m, (p)->m, sizeof((p)->m), e)

/* A decoded image_event record -> ev (messages and container files). */
static int extract_image_event(avro_value_t *r, struct image_event *ev, struct err *e)
{
    memset(ev, 0, sizeof(*ev));
    if (GET_STR(r, ev, image_id, e) || GET_STR(r, ev, patient_id, e) || GET_STR(r, ev, uri, e) ||
        get_long(r, "event_time", &ev->event_time_ms, e))
        goto out_clear;
    if (!ev->uri[0] || !ev->image_id[0]) {
        err_set(e, ERR_DECODE, "field %s is empty", ev->uri[0] ? "image_id" : "uri");
        goto out_clear;
    }
    return ERR_OK;
out_clear:
    memset(ev, 0, sizeof(*ev)); /* never hand out half an event */
    return e->code;
}

int codec_decode_image_event(struct codec *c, const void *msg, size_t len, struct image_event *ev,
                             struct err *e)
{
    struct slot *s;

    memset(ev, 0, sizeof(*ev));
    if (decode_as(c, msg, len, &c->slot[c->known[CODEC_IMAGE_EVENT]], &s, e))
        return e->code;
    return extract_image_event(&s->value, ev, e);
}

int codec_encode_image_event(struct codec *c, const struct image_event *ev, struct buf *out,
                             struct err *e)
{
    struct slot *s = &c->slot[c->known[CODEC_IMAGE_EVENT]];
    avro_value_t *r = &s->value;

    avro_value_reset(r);
    if (PUT_STR(r, ev, image_id, e) || PUT_STR(r, ev, patient_id, e) || PUT_STR(r, ev, uri, e) ||
        put_long(r, "event_time", ev->event_time_ms, e))
        return err_wrap(e, "encode image event %s", ev->image_id);
    return encode(c, s, out, e);
}

static int put_doubles(avro_value_t *rec, const char *name, const double *x, int n,
                       struct err *e)
{
    avro_value_t arr, item;

    if (field(rec, name, &arr, e))
        return e->code;
    for (int i = 0; i < n; i++)
        if (avro_value_append(&arr, &item, NULL) || avro_value_set_double(&item, x[i]))
            return avro_fail(e, ERR_DECODE, name);
    return ERR_OK;
}

static int put_floats(avro_value_t *rec, const char *name, const float *x, int n, struct err *e)
{
    avro_value_t arr, item;

    if (field(rec, name, &arr, e))
        return e->code;
    for (int i = 0; i < n; i++)
        if (avro_value_append(&arr, &item, NULL) || avro_value_set_float(&item, x[i]))
            return avro_fail(e, ERR_DECODE, name);
    return ERR_OK;
}

static int put_status(avro_value_t *rec, bool ok, struct err *e)
{
    avro_value_t v;

    int sym;

    if (field(rec, "status", &v, e))
        return e->code;
    /* By name: a schema that reorders the symbols cannot flip the status. */
    sym = avro_schema_enum_get_by_name(avro_value_get_schema(&v), ok ? "ok" : "ungradable");
    if (sym < 0)
        return err_set(e, ERR_CONFIG, "field status: no symbol %s", ok ? "ok" : "ungradable");
    return avro_value_set_enum(&v, sym) ? avro_fail(e, ERR_DECODE, "status") : ERR_OK;
}

static int check_image_prediction(const struct image_prediction *p, struct err *e)
{
    int cells = p->cam_height * p->cam_width;

    if (p->n_probabilities < 0 || p->n_probabilities > IMGEV_GRADES)
        return err_set(e, ERR_DECODE, "field probabilities: %d values, at most %d",
                       p->n_probabilities, IMGEV_GRADES);
    if (p->cam_height < 0 || p->cam_width < 0 || cells > IMGEV_CAM_MAX)
        return err_set(e, ERR_DECODE, "field cam_grid: %dx%d cells, at most %d", p->cam_height,
                       p->cam_width, IMGEV_CAM_MAX);
    return ERR_OK;
}

static int put_image_prediction(avro_value_t *r, const struct image_prediction *p, struct err *e)
{
    if (check_image_prediction(p, e) || PUT_STR(r, p, image_id, e) ||
        PUT_STR(r, p, patient_id, e) || put_long(r, "event_time", p->event_time_ms, e) ||
        put_status(r, p->ok, e) || PUT_STR(r, p, reason, e) || PUT_STR(r, p, detail, e) ||
        put_doubles(r, "probabilities", p->probabilities, p->n_probabilities, e) ||
        put_int(r, "grade", p->grade, e) || put_double(r, "expected_grade", p->expected_grade, e) ||
        put_bool(r, "referable", p->referable, e) ||
        put_double(r, "referable_probability", p->referable_probability, e) ||
        put_double(r, "referable_threshold", p->referable_threshold, e) ||
        PUT_STR(r, p, model_name, e) || PUT_STR(r, p, model_version, e) ||
        put_long(r, "latency_us", p->latency_us, e) || PUT_STR(r, p, cam_path, e) ||
        put_int(r, "cam_height", p->cam_height, e) || put_int(r, "cam_width", p->cam_width, e) ||
        put_floats(r, "cam_grid", p->cam_grid, p->cam_height * p->cam_width, e) ||
        PUT_STR(r, p, src_topic, e) || put_int(r, "src_partition", p->src_partition, e) ||
        put_long(r, "src_offset", p->src_offset, e))
        return e->code;
    return ERR_OK;
}

int codec_encode_image_prediction(struct codec *c, const struct image_prediction *p,
                                  struct buf *out, struct err *e)
{
    struct slot *s = &c->slot[c->known[CODEC_IMAGE_PREDICTION]];

    avro_value_reset(&s->value);
    if (put_image_prediction(&s->value, p, e))
        return err_wrap(e, "encode image prediction %s", p->image_id);
    return encode(c, s, out, e);
}

/* An array field into at most cap values (doubles or floats). */
static int get_array(avro_value_t *rec, const char *name, double *d, float *f, int cap, int *n,
                     struct err *e)
{
    avro_value_t arr, item;
    size_t count;

    if (field(rec, name, &arr, e))
        return e->code;
    if (avro_value_get_size(&arr, &count))
        return avro_fail(e, ERR_DECODE, name);
    if (count > (size_t)cap)
        return err_set(e, ERR_DECODE, "field %s: %zu values, at most %d", name, count, cap);
    for (size_t i = 0; i < count; i++) {
        if (avro_value_get_by_index(&arr, i, &item, NULL) ||
            (d ? avro_value_get_double(&item, &d[i]) : avro_value_get_float(&item, &f[i])))
            return avro_fail(e, ERR_DECODE, name);
    }
    *n = (int)count;
    return ERR_OK;
}

static int get_image_prediction(avro_value_t *r, struct image_prediction *p, struct err *e)
{
    avro_value_t v;
    int st, cells = 0;

    if (GET_STR(r, p, image_id, e) || GET_STR(r, p, patient_id, e) ||
        get_long(r, "event_time", &p->event_time_ms, e) || field(r, "status", &v, e) ||
        avro_value_get_enum(&v, &st) || GET_STR(r, p, reason, e) || GET_STR(r, p, detail, e) ||
        get_array(r, "probabilities", p->probabilities, NULL, IMGEV_GRADES, &p->n_probabilities,
                  e) ||
        get_int(r, "grade", &p->grade, e) || get_double(r, "expected_grade", &p->expected_grade, e) ||
        get_bool(r, "referable", &p->referable, e) ||
        get_double(r, "referable_probability", &p->referable_probability, e) ||
        get_double(r, "referable_threshold", &p->referable_threshold, e) ||
        GET_STR(r, p, model_name, e) || GET_STR(r, p, model_version, e) ||
        get_long(r, "latency_us", &p->latency_us, e) || GET_STR(r, p, cam_path, e) ||
        get_int(r, "cam_height", &p->cam_height, e) || get_int(r, "cam_width", &p->cam_width, e) ||
        get_array(r, "cam_grid", NULL, p->cam_grid, IMGEV_CAM_MAX, &cells, e) ||
        GET_STR(r, p, src_topic, e) || get_int(r, "src_partition", &p->src_partition, e) ||
        get_long(r, "src_offset", &p->src_offset, e))
        return e->code ? e->code : avro_fail(e, ERR_DECODE, "status");
    p->ok = st == avro_schema_enum_get_by_name(avro_value_get_schema(&v), "ok");
    if ((int64_t)p->cam_height * p->cam_width != cells)
        return err_set(e, ERR_DECODE, "field cam_grid: %d values for %dx%d", cells,
                       p->cam_height, p->cam_width);
    return ERR_OK;
}

int codec_decode_image_prediction(struct codec *c, const void *msg, size_t len,
                                  struct image_prediction *p, struct err *e)
{
    struct slot *s;

    memset(p, 0, sizeof(*p));
    err_clear(e);
    if (decode_as(c, msg, len, &c->slot[c->known[CODEC_IMAGE_PREDICTION]], &s, e))
        return e->code;
    if (get_image_prediction(&s->value, p, e)) {
        memset(p, 0, sizeof(*p));
        return e->code;
    }
    return ERR_OK;
}

/* ---- clickstream: struct click_event / click_prediction <-> their schemas ---- */

const char *click_type_name(enum click_type t)
{
    static const char *const names[] = {"view", "cart", "purchase"};
    return (unsigned)t < 3 ? names[t] : "?";
}

/* ["null", "string"]: the branch picked by its type, not its position. */
static int put_opt_str(avro_value_t *rec, const char *name, const char *s, size_t cap,
                       struct err *e)
{
    avro_value_t v, br;
    avro_schema_t u;
    int want = s ? AVRO_STRING : AVRO_NULL, b = 0;

    if (field(rec, name, &v, e))
        return e->code;
    u = avro_value_get_schema(&v);
    while (b < (int)avro_schema_union_size(u) &&
           (int)avro_typeof(avro_schema_union_branch(u, b)) != want)
        b++;
    if (avro_value_set_branch(&v, b, &br))
        return avro_fail(e, ERR_DECODE, name);
    if (!s)
        return avro_value_set_null(&br) ? avro_fail(e, ERR_DECODE, name) : ERR_OK;
    return set_fixed_str(&br, s, cap, name, e);
}

static int get_opt_str(avro_value_t *rec, const char *name, char *dst, size_t cap, bool *has,
                       struct err *e)
{
    avro_value_t v, br;
    const char *s;
    size_t size;

    *has = false;
    dst[0] = '\0';
    if (field(rec, name, &v, e))
        return e->code;
    if (avro_value_get_current_branch(&v, &br))
        return avro_fail(e, ERR_DECODE, name);
    if (avro_value_get_type(&br) == AVRO_NULL)
        return ERR_OK;
    if (avro_value_get_string(&br, &s, &size))
        return avro_fail(e, ERR_DECODE, name);
    *has = true;
    return copy_str(dst, cap, s, size ? size - 1 : 0, name, e);
}

static int get_click_type(avro_value_t *rec, enum click_type *t, struct err *e)
{
    avro_value_t v;
    int sym;
    const char *name;

    if (field(rec, "event_type", &v, e))
        return e->code;
    if (avro_value_get_enum(&v, &sym))
        return avro_fail(e, ERR_DECODE, "event_type");
    name = avro_schema_enum_get(avro_value_get_schema(&v), sym);
    for (int k = 0; k < 3; k++)
        if (name && strcmp(name, click_type_name((enum click_type)k)) == 0) {
            *t = (enum click_type)k;
            return ERR_OK;
        }
    return err_set(e, ERR_DECODE, "field event_type: unknown symbol %s", name ? name : "?");
}

int codec_decode_click_event(struct codec *c, const void *msg, size_t len,
                             struct click_event *ev, struct err *e)
{
    struct slot *s;

    memset(ev, 0, sizeof(*ev));
    if (decode_as(c, msg, len, &c->slot[c->known[CODEC_CLICK_EVENT]], &s, e))
        return e->code;
    if (GET_STR(&s->value, ev, event_id, e) || GET_STR(&s->value, ev, session_id, e) ||
        get_opt_str(&s->value, "user_id", ev->user_id, sizeof(ev->user_id), &ev->has_user, e) ||
        get_long(&s->value, "item_id", &ev->item_id, e) || get_click_type(&s->value, &ev->type, e) ||
        get_long(&s->value, "event_time", &ev->event_time_ms, e))
        goto out_clear;
    if (!ev->event_id[0] || !ev->session_id[0]) {
        err_set(e, ERR_DECODE, "field %s is empty", ev->event_id[0] ? "session_id" : "event_id");
        goto out_clear;
    }
    return ERR_OK;
out_clear:
    memset(ev, 0, sizeof(*ev)); /* never hand out half an event */
    return e->code;
}

int codec_encode_click_event(struct codec *c, const struct click_event *ev, struct buf *out,
                             struct err *e)
{
    struct slot *s = &c->slot[c->known[CODEC_CLICK_EVENT]];
    avro_value_t *r = &s->value, v;
    int sym;

    avro_value_reset(r);
    if (field(r, "event_type", &v, e))
        return e->code;
    sym = avro_schema_enum_get_by_name(avro_value_get_schema(&v), click_type_name(ev->type));
    if (sym < 0)
        return err_set(e, ERR_DECODE, "encode click %s: event_type %d", ev->event_id,
                       (int)ev->type);
    if (PUT_STR(r, ev, event_id, e) || PUT_STR(r, ev, session_id, e) ||
        put_opt_str(r, "user_id", ev->has_user ? ev->user_id : NULL, sizeof(ev->user_id), e) ||
        put_long(r, "item_id", ev->item_id, e) ||
        (avro_value_set_enum(&v, sym) && avro_fail(e, ERR_DECODE, "event_type")) ||
        put_long(r, "event_time", ev->event_time_ms, e))
        return err_wrap(e, "encode click %s", ev->event_id);
    return encode(c, s, out, e);
}

static int put_shown(avro_value_t *rec, const struct click_prediction *p, struct err *e)
{
    avro_value_t arr, item;

    if (p->n_items < 0 || p->n_items > CLICK_SHOWN_MAX)
        return err_set(e, ERR_DECODE, "field items: %d values, at most %d", p->n_items,
                       CLICK_SHOWN_MAX);
    if (field(rec, "items", &arr, e))
        return e->code;
    for (int i = 0; i < p->n_items; i++) {
        const struct click_shown *it = &p->items[i];
        if (avro_value_append(&arr, &item, NULL))
            return avro_fail(e, ERR_DECODE, "items");
        if (put_long(&item, "item_id", it->item_id, e) || put_double(&item, "score", it->score, e) ||
            PUT_STR(&item, it, source, e) || put_double(&item, "propensity", it->propensity, e))
            return e->code;
    }
    return ERR_OK;
}

int codec_encode_click_prediction(struct codec *c, const struct click_prediction *p,
                                  struct buf *out, struct err *e)
{
    struct slot *s = &c->slot[c->known[CODEC_CLICK_PREDICTION]];
    avro_value_t *r = &s->value;

    avro_value_reset(r);
    if (PUT_STR(r, p, session_id, e) || PUT_STR(r, p, event_id, e) ||
        put_long(r, "event_time", p->event_time_ms, e) || put_shown(r, p, e) ||
        put_bool(r, "cold_start", p->cold_start, e) ||
        put_bool(r, "unknown_item", p->unknown_item, e) || put_bool(r, "degraded", p->degraded, e) ||
        put_long(r, "session_clicks", p->session_clicks, e) || PUT_STR(r, p, model_name, e) ||
        PUT_STR(r, p, model_version, e) || put_long(r, "latency_us", p->latency_us, e) ||
        PUT_STR(r, p, src_topic, e) || put_int(r, "src_partition", p->src_partition, e) ||
        put_long(r, "src_offset", p->src_offset, e))
        return err_wrap(e, "encode click prediction %s", p->event_id);
    return encode(c, s, out, e);
}

static int get_shown(avro_value_t *rec, struct click_prediction *p, struct err *e)
{
    avro_value_t arr, item;
    size_t count;

    if (field(rec, "items", &arr, e))
        return e->code;
    if (avro_value_get_size(&arr, &count))
        return avro_fail(e, ERR_DECODE, "items");
    if (count > CLICK_SHOWN_MAX)
        return err_set(e, ERR_DECODE, "field items: %zu values, at most %d", count,
                       CLICK_SHOWN_MAX);
    for (size_t i = 0; i < count; i++) {
        struct click_shown *it = &p->items[i];
        if (avro_value_get_by_index(&arr, i, &item, NULL))
            return avro_fail(e, ERR_DECODE, "items");
        if (get_long(&item, "item_id", &it->item_id, e) ||
            get_double(&item, "score", &it->score, e) || GET_STR(&item, it, source, e) ||
            get_double(&item, "propensity", &it->propensity, e))
            return e->code;
    }
    p->n_items = (int)count;
    return ERR_OK;
}

int codec_decode_click_prediction(struct codec *c, const void *msg, size_t len,
                                  struct click_prediction *p, struct err *e)
{
    struct slot *s;
    avro_value_t *r;

    memset(p, 0, sizeof(*p));
    err_clear(e);
    if (decode_as(c, msg, len, &c->slot[c->known[CODEC_CLICK_PREDICTION]], &s, e))
        return e->code;
    r = &s->value;
    if (GET_STR(r, p, session_id, e) || GET_STR(r, p, event_id, e) ||
        get_long(r, "event_time", &p->event_time_ms, e) || get_shown(r, p, e) ||
        get_bool(r, "cold_start", &p->cold_start, e) ||
        get_bool(r, "unknown_item", &p->unknown_item, e) ||
        get_bool(r, "degraded", &p->degraded, e) ||
        get_long(r, "session_clicks", &p->session_clicks, e) || GET_STR(r, p, model_name, e) ||
        GET_STR(r, p, model_version, e) || get_long(r, "latency_us", &p->latency_us, e) ||
        GET_STR(r, p, src_topic, e) || get_int(r, "src_partition", &p->src_partition, e) ||
        get_long(r, "src_offset", &p->src_offset, e)) {
        memset(p, 0, sizeof(*p));
        return e->code;
    }
    return ERR_OK;
}

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

/* ---- object container files (codec_file_) ---- */

struct codec_file {
    struct codec *c;
    enum codec_schema which; /* CODEC_TXN_EVENT or CODEC_IMAGE_EVENT */
    FILE *fp;        /* reader: owned by avro-c, kept for progress */
    int64_t size;    /* reader: bytes, -1 unknown (stdin) */
    avro_file_reader_t rd;
    avro_file_writer_t wr;
    struct out *out; /* writer: common/out.h (renamed into place on close) */
    avro_value_iface_t *iface; /* reader: values of the writer schema */
    avro_value_t value;
    bool has_value;
    long n;
    char path[256];
};

static struct codec_file *file_new(struct codec *c, const char *path, struct err *e)
{
    struct codec_file *f = calloc(1, sizeof(*f));

    if (!f) {
        err_set(e, ERR_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    f->c = c;
    snprintf(f->path, sizeof(f->path), "%s", path);
    return f;
}

struct codec_file *codec_file_open_read(struct codec *c, const char *path, struct err *e)
{
    return codec_file_open_read_as(c, path, CODEC_TXN_EVENT, e);
}

static bool file_schema_ok(enum codec_schema which)
{
    return which == CODEC_TXN_EVENT || which == CODEC_IMAGE_EVENT;
}

struct codec_file *codec_file_open_read_as(struct codec *c, const char *path,
                                           enum codec_schema which, struct err *e)
{
    struct slot *s = &c->slot[c->known[which]];
    bool std = strcmp(path, "-") == 0;
    struct codec_file *f = file_new(c, std ? "stdin" : path, e);
    FILE *fp;
    avro_schema_t ws;
    int same;

    if (!f)
        return NULL;
    f->which = which;
    if (!file_schema_ok(which)) {
        err_set(e, ERR_CONFIG, "%s: container files hold transaction or image events", f->path);
        goto fail;
    }
    if (!(fp = std ? stdin : fopen(path, "rb"))) {
        err_set(e, ERR_CONFIG, "%s: %s", path, strerror(errno));
        goto fail;
    }
    /* The container magic checked first: avro-c leaks on its own failure
     * path for non-Avro input (stdin cannot be rewound: left to avro-c). */
    if (!std) {
        unsigned char magic[4] = {0};
        size_t got = fread(magic, 1, sizeof(magic), fp);
        if (got != 4 || memcmp(magic, "Obj\x01", 4) != 0 || fseek(fp, 0, SEEK_SET) != 0) {
            fclose(fp);
            err_set(e, ERR_CONFIG, "%s: not an Avro container file (no \"Obj\\1\" magic)",
                    f->path);
            goto fail;
        }
    }
    f->fp = fp;
    f->size = -1;
    if (!std) {
        struct stat sb;
        if (fstat(fileno(fp), &sb) == 0 && S_ISREG(sb.st_mode))
            f->size = (int64_t)sb.st_size;
    }
    if (avro_file_reader_fp(fp, f->path, !std, &f->rd)) {
        f->rd = NULL;
        err_set(e, ERR_CONFIG, "%s: not an Avro container file: %s", f->path, avro_strerror());
        goto fail;
    }
    ws = avro_file_reader_get_writer_schema(f->rd); /* a new reference */
    same = avro_schema_equal(ws, s->schema);
    avro_schema_decref(ws);
    /* Same schema: our field indices hold for the file's records. */
    if (!same) {
        err_set(e, ERR_CONFIG, "%s: written with another schema than %s", f->path, s->file);
        goto fail;
    }
    if (avro_generic_value_new(s->iface, &f->value)) {
        err_set(e, ERR_NOMEM, "%s: %s", f->path, avro_strerror());
        goto fail;
    }
    f->has_value = true;
    return f;
fail:
    codec_file_close(f, NULL);
    return NULL;
}

int codec_file_read_txn(struct codec_file *f, struct txn_event *ev, struct err *e)
{
    int rc;

    event_txn_init(ev);
    if (!f->rd || f->which != CODEC_TXN_EVENT)
        return err_set(e, ERR_CONFIG, "%s: not open for reading transaction events", f->path);
    rc = avro_file_reader_read_value(f->rd, &f->value);
    if (rc == EOF)
        return 0;
    f->n++;
    if (rc)
        return err_set(e, ERR_IO, "%s: record %ld: %s", f->path, f->n, avro_strerror());
    /* Files are written with exactly our schema (checked at open): the
     * reader's own field map applies. */
    if (extract_txn(f->c->txn, &f->value, ev, e)) {
        event_txn_init(ev);
        return err_wrap(e, "%s: record %ld", f->path, f->n);
    }
    return 1;
}

int codec_file_read_image_event(struct codec_file *f, struct image_event *ev, struct err *e)
{
    int rc;

    memset(ev, 0, sizeof(*ev));
    if (!f->rd || f->which != CODEC_IMAGE_EVENT)
        return err_set(e, ERR_CONFIG, "%s: not open for reading image events", f->path);
    rc = avro_file_reader_read_value(f->rd, &f->value);
    if (rc == EOF)
        return 0;
    f->n++;
    if (rc)
        return err_set(e, ERR_IO, "%s: record %ld: %s", f->path, f->n, avro_strerror());
    if (extract_image_event(&f->value, ev, e))
        return err_wrap(e, "%s: record %ld", f->path, f->n);
    return 1;
}

struct codec_file *codec_file_open_write(struct codec *c, const char *path, struct err *e)
{
    return codec_file_open_write_as(c, path, CODEC_TXN_EVENT, e);
}

struct codec_file *codec_file_open_write_as(struct codec *c, const char *path,
                                            enum codec_schema which, struct err *e)
{
    struct slot *s = &c->slot[c->known[which]];
    struct codec_file *f = file_new(c, path, e);

    if (!f)
        return NULL;
    f->which = which;
    if (!file_schema_ok(which)) {
        err_set(e, ERR_CONFIG, "%s: container files hold transaction or image events", path);
        codec_file_close(f, NULL);
        return NULL;
    }
    /* Never remove the path first (it may be /dev/null): common/out.h writes a
     * file as PATH.partial renamed on close, and a device or FIFO directly;
     * avro-c writes to that stream. */
    if (out_open(&f->out, path, e)) {
        codec_file_close(f, NULL);
        return NULL;
    }
    if (avro_file_writer_create_with_codec_fp(out_file(f->out), path, 0, s->schema, &f->wr,
                                              "deflate", 0)) {
        f->wr = NULL;
        err_set(e, ERR_CONFIG, "%s: cannot create: %s", path, avro_strerror());
        codec_file_close(f, NULL);
        return NULL;
    }
    return f;
}

/* Fills the transaction_event slot's value from ev (shared with encoding). */
static int fill_txn(struct codec *c, const struct txn_event *ev, struct err *e)
{
    struct slot *s = &c->slot[c->known[CODEC_TXN_EVENT]];

    avro_value_reset(&s->value);
    for (int i = 0; i < TXN_NFIELDS; i++) {
        avro_value_t v;
        if (avro_value_get_by_index(&s->value, (size_t)c->txn[i].index, &v, NULL))
            return avro_fail(e, ERR_DECODE, txn_fields[i].name);
        if (put_txn_field(&txn_fields[i], &c->txn[i], &v, ev, e))
            return err_wrap(e, "encode %s", ev->event_id);
    }
    return ERR_OK;
}

/* avro-c says "Cannot write file block"; the stream's errno says why. */
static const char *write_cause(const struct codec_file *f)
{
    if (f->out && ferror(out_file(f->out)) && errno)
        return strerror(errno);
    return avro_strerror();
}

int codec_file_write_txn(struct codec_file *f, const struct txn_event *ev, struct err *e)
{
    struct slot *s = &f->c->slot[f->c->known[CODEC_TXN_EVENT]];

    if (!f->wr || f->which != CODEC_TXN_EVENT)
        return err_set(e, ERR_CONFIG, "%s: not open for writing transaction events", f->path);
    if (fill_txn(f->c, ev, e))
        return e->code;
    if (avro_file_writer_append_value(f->wr, &s->value))
        return err_set(e, ERR_IO, "%s: record %ld: %s", f->path, f->n + 1, write_cause(f));
    f->n++;
    return ERR_OK;
}

int codec_file_write_image_event(struct codec_file *f, const struct image_event *ev, struct err *e)
{
    struct slot *s = &f->c->slot[f->c->known[CODEC_IMAGE_EVENT]];
    avro_value_t *r = &s->value;

    if (!f->wr || f->which != CODEC_IMAGE_EVENT)
        return err_set(e, ERR_CONFIG, "%s: not open for writing image events", f->path);
    avro_value_reset(r);
    if (PUT_STR(r, ev, image_id, e) || PUT_STR(r, ev, patient_id, e) || PUT_STR(r, ev, uri, e) ||
        put_long(r, "event_time", ev->event_time_ms, e))
        return err_wrap(e, "%s: image event %s", f->path, ev->image_id);
    if (avro_file_writer_append_value(f->wr, r))
        return err_set(e, ERR_IO, "%s: record %ld: %s", f->path, f->n + 1, avro_strerror());
    f->n++;
    return ERR_OK;
}

long codec_file_records(const struct codec_file *f)
{
    return f ? f->n : 0;
}

int codec_file_progress(const struct codec_file *f, int64_t *done, int64_t *total)
{
    long pos = f && f->rd && f->size >= 0 ? ftell(f->fp) : -1;

    if (pos < 0)
        return -1;
    *done = pos;
    *total = f->size;
    return 0;
}

int codec_file_close(struct codec_file *f, struct err *e)
{
    int rc = ERR_OK;

    if (!f)
        return ERR_OK;
    if (f->wr && avro_file_writer_close(f->wr))
        rc = err_set(e, ERR_IO, "%s: %s", f->path, write_cause(f));
    if (f->out && (rc != ERR_OK || !f->wr))
        out_abort(f->out);
    else if (f->out)
        rc = out_commit(f->out, e);
    if (f->rd)
        avro_file_reader_close(f->rd);
    if (f->has_value)
        avro_value_decref(&f->value);
    free(f);
    return rc;
}

/* ---- registry ---- */

void codec_use_registry(struct codec *c, struct reg *r)
{
    c->reg = r;
    /* Local ids mean nothing to the registry: ours get the ids it assigns. */
    for (int i = 0; i < c->nslots; i++)
        c->slot[i].id = 0;
}

int codec_register(struct codec *c, enum codec_schema which, const char *topic, int register_new,
                   struct err *e)
{
    char subject[512];
    struct slot *s;
    int32_t id;

    if ((int)which < 0 || which >= CODEC_NSCHEMAS)
        return err_set(e, ERR_CONFIG, "unknown schema %d", (int)which);
    if (!c->reg)
        return err_set(e, ERR_CONFIG, "no schema registry configured");
    s = &c->slot[c->known[which]];
    if (reg_subject(topic, subject, sizeof(subject), e) ||
        reg_schema_id(c->reg, subject, s->text, register_new, &id, e))
        return err_wrap(e, "%s", s->file);
    for (int i = 0; i < c->nslots; i++)
        if (&c->slot[i] != s && c->slot[i].id == id)
            c->slot[i].id = 0; /* the same text registered twice: one id */
    s->id = id;
    return ERR_OK;
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
