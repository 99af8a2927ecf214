/* common/codec/codec_txn.c: struct txn_event <-> the transaction_event schema,
 * resolving writer schemas into our reader.
 * Split out of codec.c; codec_int.h holds what the codec*.c files share. */
#include "codec_int.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- struct txn_event <-> the transaction_event schema ---- */

#define TF(name, kind, member)                                                                     \
    {                                                                                              \
        name, kind, offsetof(struct txn_event, member), sizeof(((struct txn_event *)0)->member)    \
    }

/* The one table mapping schema fields to struct members: decode, encode and
 * JSON all go through it, so they cannot disagree. */
const struct txn_field txn_fields[TXN_NFIELDS] = {
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

const struct txn_field *txn_field_by_name(const char *name)
{
    for (int i = 0; i < TXN_NFIELDS; i++)
        if (strcmp(txn_fields[i].name, name) == 0)
            return &txn_fields[i];
    return NULL;
}

int codec_txn_field(const char *name)
{
    const struct txn_field *f = txn_field_by_name(name);

    return f ? (int)(f - txn_fields) : -1;
}

void codec_txn_field_text(const struct txn_event *ev, int idx, char *out, size_t cap)
{
    const struct txn_field *f;
    const char *p;
    double d;
    int b;

    out[0] = '\0';
    if (idx < 0 || idx >= TXN_NFIELDS || cap == 0)
        return;
    f = &txn_fields[idx];
    p = (const char *)ev + f->off;
    switch (f->kind) {
    case TK_ID:
    case TK_CAT: { /* per event (the fairness group): no printf */
        size_t n = strnlen(p, f->size);
        n = n < cap - 1 ? n : cap - 1;
        memcpy(out, p, n);
        out[n] = '\0';
        break;
    }
    case TK_TIME:
        snprintf(out, cap, "%" PRId64, *(const int64_t *)(const void *)p);
        break;
    case TK_DOUBLE:
        memcpy(&d, p, sizeof(d));
        if (!isnan(d))
            snprintf(out, cap, "%g", d);
        break;
    case TK_BOOL:
    case TK_LABEL:
        memcpy(&b, p, sizeof(b));
        if (f->kind == TK_BOOL && (b == 0 || b == 1))
            snprintf(out, cap, "%s", b ? "true" : "false");
        else if (f->kind == TK_LABEL && b >= 0)
            snprintf(out, cap, "%d", b);
        break;
    }
}

enum vkind txn_value_kind(enum tkind k)
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
    enum vkind want = txn_value_kind(f->kind);
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

int map_txn_schema(struct codec *c, struct err *e)
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
int copy_str(char *dst, size_t cap, const char *s, size_t len, const char *name,
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

int extract_txn(const struct txn_slot *txn, avro_value_t *rec, struct txn_event *ev,
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
    if (c->plan_mode != CODEC_PLAN_OFF) {
        /* The plan follows avro-c's resolution of this writer: it runs only
         * once resolve() accepted the writer; else avro-c says why. */
        struct err ignored = {0};
        int rc;
        if (unframe(c, msg, len, &s, e))
            return e->code;
        if ((s == &c->slot[c->known[CODEC_TXN_EVENT]] || resolve(c, s, &ignored) == ERR_OK) &&
            plan_decode_txn(c, s, msg, len, ev, e, &rc))
            return rc;
    }
    if (frame_walk(c, msg, len, &s, e) || read_txn(c, s, &rec, &map, e))
        return e->code;
    if (extract_txn(map, rec, ev, e)) {
        event_txn_init(ev); /* never hand out half an event */
        return e->code;
    }
    return ERR_OK;
}

/* A fixed struct string as an Avro string; it must be NUL-terminated. */
int set_fixed_str(avro_value_t *v, const char *s, size_t cap, const char *name,
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

int codec_encode_txn(struct codec *c, const struct txn_event *ev, struct buf *out, struct err *e)
{
    struct slot *s = &c->slot[c->known[CODEC_TXN_EVENT]];

    if (fill_txn(c, ev, e))
        return e->code;
    return encode(c, s, out, e);
}

/* Fills the transaction_event slot's value from ev (shared with encoding). */
int fill_txn(struct codec *c, const struct txn_event *ev, struct err *e)
{
    struct slot *s = &c->slot[c->known[CODEC_TXN_EVENT]];

    avro_value_reset(&s->value);
    for (int i = 0; i < TXN_NFIELDS; i++) {
        avro_value_t v;
        if (avro_value_get_by_index(&s->value, (size_t)c->txn[i].index, &v, NULL))
            return avro_fail(e, ERR_DECODE, txn_fields[i].name);
        if (put_txn_field(&txn_fields[i], &c->txn[i], &v, ev, e))
            return err_wrap(e, "encode %.*s", (int)strnlen(ev->event_id, sizeof(ev->event_id)),
                            ev->event_id);
    }
    return ERR_OK;
}
