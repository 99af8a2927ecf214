/* common/codec/codec.c: Avro with Confluent framing, over avro-c and jansson.
 *
 * Decoding is three steps: unframe (magic byte, schema id), validate (a
 * bounded walk of the Avro binary driven by a compiled copy of the schema),
 * then avro_value_read into a value the handle reuses. The walk exists
 * because avro-c 1.11 mallocs whatever a length or count prefix claims:
 * only bytes that passed it reach avro-c.
 */
#include "codec.h"
#include "codec_int.h"
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
int buf_reserve(struct buf *b, size_t n)
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

static const char *const known_files[CODEC_NSCHEMAS] = {"transaction_event.avsc",
                                                        "transaction_prediction.avsc",
                                                        "dead_letter.avsc", "alert_event.avsc",
                                                        "image_event.avsc",
                                                        "image_prediction.avsc",
                                                        "label_event.avsc",
                                                        "click_event.avsc",
                                                        "click_prediction.avsc",
                                                        "click_outcome.avsc",
                                                        "catalog_item.avsc"};

int avro_fail(struct err *e, int code, const char *what)
{
    return err_set(e, code, "%s: %s", what, avro_strerror());
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

int find_writer(struct codec *c, int32_t id, struct slot **out, struct err *e)
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

int unframe(struct codec *c, const unsigned char *m, size_t len, struct slot **out, struct err *e)
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
int frame_walk(struct codec *c, const void *msg, size_t len, struct slot **out,
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
int decode(struct codec *c, const void *msg, size_t len, struct slot **out, struct err *e)
{
    if (frame_walk(c, msg, len, out, e))
        return e->code;
    if (avro_value_read(c->reader, &(*out)->value))
        return avro_fail(e, ERR_DECODE, (*out)->file);
    return ERR_OK;
}

/* The same, accepting only the schema `want`, under its local or any
 * registry id (no writer->reader resolution: records other than
 * transaction events must be written with our schema). */
int decode_as(struct codec *c, const void *msg, size_t len, const struct slot *want,
                     struct slot **out, struct err *e)
{
    if (frame_walk(c, msg, len, out, e))
        return e->code;
    /* our schema under a registry's id (another producer registered it) */
    if (*out != want && !avro_schema_equal((*out)->schema, want->schema))
        return err_set(e, ERR_DECODE, "schema id %" PRId32 " is %s, expected %s", (*out)->id,
                       (*out)->file, want->file);
    if (avro_value_read(c->reader, &(*out)->value))
        return avro_fail(e, ERR_DECODE, (*out)->file);
    return ERR_OK;
}

/* Writes s->value, framed with s's id, into out (replacing its content). */
int encode(struct codec *c, struct slot *s, struct buf *out, struct err *e)
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
    plan_free(s);
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

/* ---- a caller's record schema (a feature spec's input) ---- */

/* FNV-1a 32 of the schema as compact JSON with sorted keys: the same id
 * in every process that loads the same schema, whatever its layout. */
static int32_t derived_id(const json_t *doc)
{
    char *s = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    uint32_t h = 2166136261u;

    for (const char *p = s ? s : ""; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    free(s);
    return (int32_t)(CODEC_USER_ID_BASE | (h & 0x3fffffffu));
}

int codec_add_schema(struct codec *c, const char *text, size_t len, const char *name,
                     int32_t *id, struct err *e)
{
    struct slot tmp = {0}, *s;
    char *copy = malloc(len + 1);

    if (!copy)
        return err_set(e, ERR_NOMEM, "%s: out of memory", name);
    memcpy(copy, text, len);
    copy[len] = '\0';
    snprintf(tmp.file, sizeof(tmp.file), "%s", name);
    if (load_schema_text(&tmp, copy, len, name, e)) {
        slot_free(&tmp);
        return e->code;
    }
    for (int i = 0; i < c->nslots; i++) {
        if (avro_schema_equal(c->slot[i].schema, tmp.schema) && c->slot[i].id) {
            *id = c->slot[i].id; /* already loaded (a reload, or one of ours) */
            slot_free(&tmp);
            return ERR_OK;
        }
    }
    if (c->nslots == MAX_SLOTS) {
        slot_free(&tmp);
        return err_set(e, ERR_CONFIG, "%s: more than %d schemas", name, MAX_SLOTS);
    }
    tmp.id = derived_id(tmp.doc);
    for (int i = 0; i < c->nslots; i++)
        if (c->slot[i].id == tmp.id) {
            slot_free(&tmp);
            return err_set(e, ERR_CONFIG, "%s: derived schema id %" PRId32 " is taken", name,
                           c->slot[i].id);
        }
    s = &c->slot[c->nslots++];
    *s = tmp;
    *id = s->id;
    return ERR_OK;
}

int codec_register_id(struct codec *c, int32_t local_id, const char *subject, int register_new,
                      int32_t *id, struct err *e)
{
    struct slot *s = NULL;

    for (int i = 0; i < c->nslots && !s; i++)
        if (c->slot[i].id == local_id)
            s = &c->slot[i];
    if (!s)
        return err_set(e, ERR_CONFIG, "schema id %" PRId32 ": not loaded", local_id);
    if (!c->reg)
        return err_set(e, ERR_CONFIG, "no schema registry configured");
    if (reg_schema_id(c->reg, subject, s->text, register_new, id, e))
        return err_wrap(e, "%s (subject %s)", s->file, subject);
    for (int i = 0; i < c->nslots; i++)
        if (&c->slot[i] != s && c->slot[i].id == *id)
            c->slot[i].id = 0;
    s->id = *id;
    return ERR_OK;
}
