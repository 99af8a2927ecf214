/* common/streams/txn_input.c: TransactionEvent, or the active spec's own
 * record, into the events the transactions stream scores (txn_input.h). */
#include "txn_input.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evtime.h"
#include "features.h"
#include "fspec.h"

#define TIME_MIN_MS (-62135596800000LL) /* 0001-01-01T00:00:00Z */

struct txi {
    struct codec *c;
    const struct fspec *p; /* NULL: TransactionEvent */
    struct codec_rec *rec;
    int32_t id;
    size_t cap, nf;
    int key, time; /* field indices */
    int eid;       /* input.event_id's index, -1: <key>@<time ms> */
    struct fspec_row *rows;
    struct codec_val *vals;
};

void txi_close(struct txi *t)
{
    if (!t)
        return;
    for (size_t i = 0; t->rows && i < t->cap; i++)
        fspec_row_free(&t->rows[i]);
    free(t->rows);
    free(t->vals);
    codec_rec_close(t->rec);
    free(t);
}

static int open_rec(struct txi *t, struct err *e)
{
    const char *path = fspec_schema_source(t->p), *text = fspec_schema_text(t->p);
    const char *names[FSPEC_OUT_MAX];

    t->nf = fspec_num_fields(t->p);
    if (t->nf > FSPEC_OUT_MAX)
        return err_set(e, ERR_CONFIG, "%s: more than %d fields", path, FSPEC_OUT_MAX);
    /* The schema the spec was compiled from (a file or a registry subject),
     * not the file read again: both read one schema. Messages framed with
     * the registry's id decode through the codec's registry (same schema). */
    if (codec_add_schema(t->c, text, strlen(text), path, &t->id, e))
        return e->code;
    for (size_t i = 0; i < t->nf; i++)
        names[i] = fspec_field_name(t->p, i);
    if (!(t->rec = codec_rec_open(t->c, t->id, names, t->nf, e)))
        return e->code;
    t->key = fspec_field_index(t->p, fspec_key_field(t->p));
    t->time = fspec_field_index(t->p, fspec_time_field(t->p));
    t->eid = *fspec_event_id_field(t->p) ? fspec_field_index(t->p, fspec_event_id_field(t->p))
                                         : -1;
    if (t->key < 0 || t->time < 0 || codec_rec_kind(t->rec, (size_t)t->time) != CODEC_VAL_LONG)
        return err_set(e, ERR_CONFIG, "%s: key %s or time %s (a long) not usable", path,
                       fspec_key_field(t->p), fspec_time_field(t->p));
    t->rows = calloc(t->cap, sizeof(*t->rows));
    t->vals = calloc(t->nf ? t->nf : 1, sizeof(*t->vals));
    if (!t->rows || !t->vals)
        return err_set(e, ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < t->cap; i++)
        if (fspec_row_init(t->p, &t->rows[i]))
            return err_set(e, ERR_NOMEM, "out of memory");
    return ERR_OK;
}

struct txi *txi_open(struct codec *c, size_t cap, struct err *e)
{
    struct txi *t = calloc(1, sizeof(*t));

    if (!t) {
        err_set(e, ERR_NOMEM, "out of memory");
        return NULL;
    }
    t->c = c;
    t->cap = cap ? cap : 1;
    feat_txn_freeze(1); /* rows, states and scorers are made for this plan */
    if (feat_txn_reads_rec()) {
        t->p = feat_txn_spec();
        if (open_rec(t, e)) {
            err_wrap(e, "features.spec %s", fspec_name(t->p));
            txi_close(t);
            return NULL;
        }
    }
    return t;
}

int32_t txi_schema_id(const struct txi *t)
{
    return t->p ? t->id : 0;
}

static int fill_values(struct txi *t, struct fspec_row *r, struct txn_event *ev, const char *id,
                       struct err *e);

/* input.event_id's value into id[EV_ID_MAX]: a string as it is, a long in
 * decimal. Null, empty, a NUL inside or too long is refused, named. */
static int event_id_of(const struct txi *t, char *id, struct err *e)
{
    const struct codec_val *v = &t->vals[t->eid];
    const char *f = fspec_event_id_field(t->p);

    if (!v->present)
        return err_set(e, ERR_INVALID, "%s: null (the event id)", f);
    if (codec_rec_kind(t->rec, (size_t)t->eid) == CODEC_VAL_LONG) {
        snprintf(id, EV_ID_MAX, "%lld", (long long)v->i);
        return ERR_OK;
    }
    if (v->len == 0)
        return err_set(e, ERR_INVALID, "%s: empty (the event id)", f);
    if (v->len >= EV_ID_MAX || memchr(v->str, '\0', v->len))
        return err_set(e, ERR_INVALID, "%s: longer than %d bytes or holding a NUL (the event id)",
                       f, EV_ID_MAX - 1);
    memcpy(id, v->str, v->len);
    id[v->len] = '\0';
    return ERR_OK;
}

/* The decoded values into row r and ev's ids; the first bad one named
 * (with the event's id once it is known: the dead letter says which). */
static int fill(struct txi *t, struct fspec_row *r, struct txn_event *ev, struct err *e)
{
    const struct codec_val *k = &t->vals[t->key];
    char id[EV_ID_MAX];

    if (!k->present || k->len == 0)
        return err_set(e, ERR_INVALID, "%s: empty (the entity key)", fspec_key_field(t->p));
    if (k->len >= EV_ID_MAX)
        return err_set(e, ERR_INVALID, "%s: longer than %d bytes (the entity key)",
                       fspec_key_field(t->p), EV_ID_MAX - 1);
    if (t->eid < 0)
        return fill_values(t, r, ev, NULL, e);
    if (event_id_of(t, id, e))
        return e->code;
    if (fill_values(t, r, ev, id, e))
        return err_wrap(e, "event %s", id);
    return ERR_OK;
}

/* The time and the fields into r, then ev (id NULL: <key>@<time ms>). */
static int fill_values(struct txi *t, struct fspec_row *r, struct txn_event *ev, const char *id,
                       struct err *e)
{
    const struct codec_val *k = &t->vals[t->key], *tm = &t->vals[t->time];

    if (!tm->present)
        return err_set(e, ERR_INVALID, "%s: null (the event time)", fspec_time_field(t->p));
    /* Years before 1970 are data too (a panel from the 1930s): only the far
     * past (overflow in window arithmetic) and the future are refused. */
    if (tm->i < TIME_MIN_MS)
        return err_set(e, ERR_INVALID, "%s: before year 1 (%lld ms)", fspec_time_field(t->p),
                       (long long)tm->i);
    if (tm->i >= 0 && evt_check(tm->i, e))
        return err_wrap(e, "%s", fspec_time_field(t->p));
    fspec_row_clear(t->p, r);
    r->time_ms = tm->i;
    for (size_t i = 0; i < t->nf; i++) {
        const struct codec_val *v = &t->vals[i];
        if (!v->present)
            continue;
        if (fspec_field_is_string(t->p, i)) {
            if (v->len >= FSPEC_NAME_MAX || memchr(v->str, '\0', v->len))
                return err_set(e, ERR_INVALID, "%s: longer than %d bytes", fspec_field_name(t->p, i),
                               FSPEC_NAME_MAX - 1);
            memcpy(r->str + i * FSPEC_NAME_MAX, v->str, v->len);
            r->str[i * FSPEC_NAME_MAX + v->len] = '\0';
        } else if (isinf(v->num)) {
            return err_set(e, ERR_INVALID, "%s: not finite (%g)", fspec_field_name(t->p, i), v->num);
        } else {
            r->num[i] = v->num;
        }
    }
    event_txn_init(ev);
    memcpy(ev->user_id, k->str, k->len);
    ev->user_id[k->len] = '\0';
    ev->event_time_ms = tm->i;
    if (id)
        snprintf(ev->event_id, sizeof(ev->event_id), "%s", id);
    else
        snprintf(ev->event_id, sizeof(ev->event_id), "%.40s@%lld", ev->user_id, (long long)tm->i);
    ev->rec = r;
    return ERR_OK;
}

int txi_decode(struct txi *t, size_t i, const void *msg, size_t len, struct txn_event *ev,
               struct err *e)
{
    int rc;

    if (!t->p) {
        rc = codec_decode_txn(t->c, msg, len, ev, e);
        return rc ? rc : feat_txn_validate(ev, e);
    }
    if (i >= t->cap)
        return err_set(e, ERR_INVALID, "batch slot %zu past %zu", i, t->cap);
    if (codec_rec_decode(t->rec, msg, len, t->vals, e))
        return e->code;
    return fill(t, &t->rows[i], ev, e);
}
