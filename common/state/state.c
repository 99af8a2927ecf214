/* common/state/state.c: dispatch to the backend, with the argument checks every
 * backend shares (see state_backend.h). */
#include "state_backend.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

void state_set_deadline(struct state *s, int64_t deadline_us)
{
    atomic_store(&s->deadline_us, deadline_us);
}

/* With a deadline: the backend's waits clamped to what is left of it, and
 * nothing started once it has passed. */
static int within_deadline(struct state *s, struct err *e)
{
    int64_t deadline = atomic_load(&s->deadline_us), left_ms;
    struct timespec ts;

    if (!deadline)
        return ERR_OK;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    left_ms = (deadline - ((int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000)) / 1000;
    if (s->ops->clamp)
        s->ops->clamp(s, left_ms > 0 ? (int)(left_ms < 600000 ? left_ms : 600000) : 0);
    if (left_ms <= 0)
        return err_set(e, ERR_TIMEOUT, "state %s: shutdown deadline passed", s->ops->name);
    return ERR_OK;
}

static int check_entity(const struct state *s, const char *entity, size_t i, struct err *e)
{
    size_t len;

    if (!entity)
        return err_set(e, ERR_INVALID, "state %s: entity %zu is NULL", s->ops->name, i);
    len = strnlen(entity, STATE_ENTITY_MAX + 1);
    if (len == 0)
        return err_set(e, ERR_INVALID, "state %s: entity %zu is empty", s->ops->name, i);
    if (len > STATE_ENTITY_MAX)
        return err_set(e, ERR_INVALID, "state %s: entity %zu (%.32s...) longer than %d bytes",
                       s->ops->name, i, entity, STATE_ENTITY_MAX);
    return ERR_OK;
}

void state_close(struct state *s)
{
    if (s) {
        free(s->moved);
        s->ops->close(s);
    }
}

static int check_idle(const struct state *s, struct err *e)
{
    if (s->busy)
        return err_set(e, ERR_INVALID, "state %s: a write is in flight (state_put_end first)",
                       s->ops->name);
    return ERR_OK;
}

int state_get_many(struct state *s, size_t n, const char *const *entities, struct state_blob *out,
                   struct err *e)
{
    if (check_idle(s, e))
        return ERR_INVALID;
    for (size_t i = 0; i < n; i++) {
        int rc = check_entity(s, entities[i], i, e);
        if (rc)
            return rc;
        out[i].time_s = 0; /* layout 3 sets it */
    }
    if (n == 0)
        return ERR_OK;
    if (within_deadline(s, e))
        return ERR_TIMEOUT;
    return s->ops->get_many(s, n, entities, out, e);
}

static int check_puts(const struct state *s, size_t n, const struct state_put *puts, struct err *e)
{
    for (size_t i = 0; i < n; i++) {
        int rc = check_entity(s, puts[i].entity, i, e);
        if (rc)
            return rc;
        /* An empty blob would read back as "nothing stored": refused. */
        if (puts[i].len == 0 || !puts[i].data)
            return err_set(e, ERR_INVALID, "state %s: blob of %s is empty", s->ops->name,
                           puts[i].entity);
        if (puts[i].len > STATE_BLOB_MAX)
            return err_set(e, ERR_INVALID, "state %s: blob of %s is %zu bytes (max %d)",
                           s->ops->name, puts[i].entity, puts[i].len, STATE_BLOB_MAX);
    }
    return ERR_OK;
}

int state_put_begin(struct state *s, size_t n, const struct state_put *puts, struct err *e)
{
    int rc = check_idle(s, e);

    if (rc || (rc = check_puts(s, n, puts, e)))
        return rc;
    if (n && within_deadline(s, e))
        return ERR_TIMEOUT;
    if (n && s->ops->put_begin && (rc = s->ops->put_begin(s, n, puts, e)))
        return rc;
    s->pend = puts;
    s->n_pend = n;
    s->busy = 1;
    return ERR_OK;
}

int state_put_end(struct state *s, int *applied, struct err *e)
{
    if (!s->busy)
        return err_set(e, ERR_INVALID, "state %s: no write in flight", s->ops->name);
    s->busy = 0;
    if (s->n_pend == 0)
        return ERR_OK;
    if (within_deadline(s, e)) /* the replies are not read: the connection goes */
        return ERR_TIMEOUT;
    if (s->ops->put_end)
        return s->ops->put_end(s, applied, e);
    return s->ops->put_many(s, s->n_pend, s->pend, applied, e);
}

int state_put_many(struct state *s, size_t n, const struct state_put *puts, int *applied,
                   struct err *e)
{
    int rc = state_put_begin(s, n, puts, e);

    return rc ? rc : state_put_end(s, applied, e);
}

void state_set_put_bases(struct state *s, const struct state_base *bases)
{
    s->put_bases = bases;
}

int state_busy(const struct state *s)
{
    return s->busy;
}

const char *state_backend(const struct state *s)
{
    return s->ops->name;
}

int state_ping(struct state *s, struct err *e)
{
    if (check_idle(s, e))
        return ERR_INVALID;
    if (within_deadline(s, e))
        return ERR_TIMEOUT;
    return s->ops->ping(s, e);
}

int state_sweep(struct state *s, int full, size_t *deleted, struct err *e)
{
    *deleted = 0;
    if (check_idle(s, e))
        return ERR_INVALID;
    if (within_deadline(s, e))
        return ERR_TIMEOUT;
    return s->ops->sweep ? s->ops->sweep(s, full, deleted, e) : ERR_OK;
}

/* Marks partition as moved (state_take_owner_changes). Kafka partitions
 * are packed in 16 bits (kafka.c): a bitmap of at most 8 KB. */
static void note_moved(struct state *s, int32_t partition)
{
    size_t w = (size_t)partition / 64;

    s->owner_changes++;
    if (partition < 0 || partition > 65535) {
        s->moved_unknown = 1;
        return;
    }
    if (w >= s->moved_words) {
        size_t n = w + 1 > 16 ? w + 1 : 16;
        uint64_t *m = realloc(s->moved, n * sizeof(*m));
        if (!m) {
            s->moved_unknown = 1;
            return;
        }
        memset(m + s->moved_words, 0, (n - s->moved_words) * sizeof(*m));
        s->moved = m;
        s->moved_words = n;
    }
    s->moved[w] |= 1ULL << (partition % 64);
}

void state_note_moved(struct state *s, int32_t partition)
{
    if (partition < 0) {
        s->owner_changes++;
        s->moved_unknown = 1;
        return;
    }
    note_moved(s, partition);
}

int state_moved_pending(const struct state *s, int32_t partition)
{
    size_t w = (size_t)partition / 64;

    if (s->moved_unknown || partition < 0)
        return 1;
    return w < s->moved_words && (s->moved[w] >> (partition % 64) & 1);
}

int64_t state_put_time(const struct state *s)
{
    return s->put_time_s;
}

uint64_t state_fast_puts(const struct state *s)
{
    return s->fast_puts;
}

int state_take_owner_changes(struct state *s, void (*fn)(void *opaque, int32_t partition),
                             void *opaque)
{
    int unknown = s->moved_unknown;

    for (size_t w = 0; w < s->moved_words; w++) {
        for (int b = 0; b < 64 && s->moved[w] && !unknown; b++)
            if (s->moved[w] & (1ULL << b))
                fn(opaque, (int32_t)(w * 64 + (size_t)b));
        s->moved[w] = 0;
    }
    s->moved_unknown = 0;
    return unknown;
}

int state_fence(struct state *s, int32_t partition, struct err *e)
{
    if (partition < 0)
        return err_set(e, ERR_INVALID, "state %s: cannot fence partition %d", s->ops->name,
                       (int)partition);
    note_moved(s, partition);
    return s->ops->fence ? s->ops->fence(s, partition, e) : ERR_OK;
}

void state_release(struct state *s, int32_t partition)
{
    /* the epoch stays held: a stale write is refused by the new owner's */
    note_moved(s, partition);
}

uint64_t state_owner_changes(const struct state *s)
{
    return s->owner_changes;
}

uint64_t state_fenced(const struct state *s)
{
    return s->fenced;
}

int64_t state_epoch(const struct state *s, int32_t partition)
{
    return s->ops->epoch ? s->ops->epoch(s, partition) : 0;
}

int state_check_lost(struct state *s, int expect_data, int *lost_now, struct err *e)
{
    *lost_now = 0;
    return s->ops->check_lost ? s->ops->check_lost(s, expect_data, lost_now, e) : ERR_OK;
}

int state_lost_flag(const struct state *s)
{
    return s->lost_flag;
}

uint64_t state_losses(const struct state *s)
{
    return s->losses;
}

int state_ack_lost(struct state *s, struct err *e)
{
    return s->ops->ack_lost ? s->ops->ack_lost(s, e) : ERR_OK;
}
