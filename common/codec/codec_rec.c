/* common/codec/codec_rec.c: fields of a caller's record read by position.
 *
 * A feature spec names its input fields; they are matched to the record's
 * schema here once (index, type, which union branch is null), so decoding
 * a message is the bounded walk, one avro-c read and one indexed get per
 * field: no name is looked up per message. */
#include "codec_int.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct rfield {
    int index;       /* in the record */
    enum vkind kind; /* of the value (the non-null branch of a union) */
    int is_union, null_branch;
};

struct codec_rec {
    struct codec *c;
    int32_t id; /* the slot, found again by schema: a registry may renumber it */
    avro_schema_t schema;
    size_t n;
    struct rfield f[];
};

static struct slot *slot_of(struct codec *c, int32_t id)
{
    for (int i = 0; i < c->nslots; i++)
        if (c->slot[i].id == id)
            return &c->slot[i];
    return NULL;
}

static int usable(enum vkind k)
{
    return k == VK_BOOLEAN || k == VK_INT || k == VK_LONG || k == VK_FLOAT || k == VK_DOUBLE ||
           k == VK_STRING || k == VK_ENUM;
}

static int bind_field(const struct vprog *g, const char *name, struct rfield *f, struct err *e)
{
    const struct vnode *rec = &g->node[0];

    for (int i = 0; i < (int)rec->n; i++) {
        const struct vnode *t;
        if (strcmp(g->fname[rec->first + i], name) != 0)
            continue;
        t = &g->node[g->kid[rec->first + i]];
        f->index = i;
        f->null_branch = -1;
        if (t->kind == VK_UNION) {
            const struct vnode *v = NULL;
            f->is_union = 1;
            for (int b = 0; b < (int)t->n; b++) {
                const struct vnode *u = &g->node[g->kid[t->first + b]];
                if (u->kind == VK_NULL)
                    f->null_branch = b;
                else if (v)
                    return err_set(e, ERR_CONFIG, "field %s: a union of two types", name);
                else
                    v = u;
            }
            if (!v)
                return err_set(e, ERR_CONFIG, "field %s: a union of null only", name);
            t = v;
        }
        if (!usable(t->kind))
            return err_set(e, ERR_CONFIG,
                           "field %s: not a number, boolean, string or enum", name);
        f->kind = t->kind;
        return ERR_OK;
    }
    return err_set(e, ERR_CONFIG, "field %s: not in the schema", name);
}

struct codec_rec *codec_rec_open(struct codec *c, int32_t id, const char *const *fields, size_t n,
                                 struct err *e)
{
    struct slot *s = slot_of(c, id);
    struct codec_rec *r;

    if (!s) {
        err_set(e, ERR_CONFIG, "schema id %" PRId32 ": not loaded", id);
        return NULL;
    }
    if (!(r = calloc(1, sizeof(*r) + n * sizeof(r->f[0])))) {
        err_set(e, ERR_NOMEM, "out of memory");
        return NULL;
    }
    r->c = c;
    r->id = id;
    r->schema = s->schema;
    r->n = n;
    for (size_t i = 0; i < n; i++) {
        if (bind_field(s->prog, fields[i], &r->f[i], e)) {
            err_wrap(e, "%s", s->file);
            free(r);
            return NULL;
        }
    }
    return r;
}

void codec_rec_close(struct codec_rec *r)
{
    free(r);
}

enum codec_val_kind codec_rec_kind(const struct codec_rec *r, size_t i)
{
    switch (r->f[i].kind) {
    case VK_STRING:
    case VK_ENUM:
        return CODEC_VAL_STR;
    case VK_INT:
    case VK_LONG:
        return CODEC_VAL_LONG;
    default:
        return CODEC_VAL_NUM;
    }
}

/* One field's value (v is the field, or the union's current branch). */
static int get_value(const struct rfield *f, avro_value_t *v, struct codec_val *o)
{
    int32_t i32;
    float fl;
    int b;

    o->present = 1;
    switch (f->kind) {
    case VK_BOOLEAN:
        if (avro_value_get_boolean(v, &b))
            return -1;
        o->num = b ? 1 : 0;
        return 0;
    case VK_INT:
        if (avro_value_get_int(v, &i32))
            return -1;
        o->i = i32;
        o->num = i32;
        return 0;
    case VK_LONG:
        if (avro_value_get_long(v, &o->i))
            return -1;
        o->num = (double)o->i;
        return 0;
    case VK_FLOAT:
        if (avro_value_get_float(v, &fl))
            return -1;
        o->num = fl;
        return 0;
    case VK_DOUBLE:
        return avro_value_get_double(v, &o->num) ? -1 : 0;
    case VK_STRING:
        if (avro_value_get_string(v, &o->str, &o->len))
            return -1;
        o->len = o->len ? o->len - 1 : 0; /* avro-c counts the NUL */
        return 0;
    case VK_ENUM: {
        avro_schema_t es = avro_value_get_schema(v);
        if (avro_value_get_enum(v, &i32) || !(o->str = avro_schema_enum_get(es, i32)))
            return -1;
        o->len = strlen(o->str);
        return 0;
    }
    default:
        return -1;
    }
}

int codec_rec_decode(struct codec_rec *r, const void *msg, size_t len, struct codec_val *out,
                     struct err *e)
{
    struct slot *want = NULL, *w;

    for (int i = 0; i < r->c->nslots && !want; i++)
        if (r->c->slot[i].schema == r->schema)
            want = &r->c->slot[i];
    if (!want)
        return err_set(e, ERR_CONFIG, "record schema no longer loaded");
    if (decode_as(r->c, msg, len, want, &w, e))
        return e->code;
    for (size_t k = 0; k < r->n; k++) {
        const struct rfield *f = &r->f[k];
        avro_value_t fv, bv, *v = &fv;
        memset(&out[k], 0, sizeof(out[k]));
        out[k].num = NAN;
        if (avro_value_get_by_index(&w->value, (size_t)f->index, &fv, NULL))
            return avro_fail(e, ERR_DECODE, want->file);
        if (f->is_union) {
            int d;
            if (avro_value_get_discriminant(&fv, &d) || avro_value_get_current_branch(&fv, &bv))
                return avro_fail(e, ERR_DECODE, want->file);
            if (d == f->null_branch)
                continue;
            v = &bv;
        }
        if (get_value(f, v, &out[k]))
            return avro_fail(e, ERR_DECODE, want->file);
    }
    return ERR_OK;
}
