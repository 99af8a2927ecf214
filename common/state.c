/* common/state.c: dispatch to the backend, with the argument checks every
 * backend shares (see state_backend.h). */
#include "state_backend.h"

#include <string.h>

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
    if (s)
        s->ops->close(s);
}

int state_get_many(struct state *s, size_t n, const char *const *entities, struct state_blob *out,
                   struct err *e)
{
    for (size_t i = 0; i < n; i++) {
        int rc = check_entity(s, entities[i], i, e);
        if (rc)
            return rc;
    }
    if (n == 0)
        return ERR_OK;
    return s->ops->get_many(s, n, entities, out, e);
}

int state_put_many(struct state *s, size_t n, const struct state_put *puts, int *applied,
                   struct err *e)
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
    if (n == 0)
        return ERR_OK;
    return s->ops->put_many(s, n, puts, applied, e);
}

int state_ping(struct state *s, struct err *e)
{
    return s->ops->ping(s, e);
}

int state_fence(struct state *s, int32_t partition, struct err *e)
{
    if (partition < 0)
        return err_set(e, ERR_INVALID, "state %s: cannot fence partition %d", s->ops->name,
                       (int)partition);
    return s->ops->fence ? s->ops->fence(s, partition, e) : ERR_OK;
}

uint64_t state_fenced(const struct state *s)
{
    return s->fenced;
}

int64_t state_epoch(const struct state *s, int32_t partition)
{
    return s->ops->epoch ? s->ops->epoch(s, partition) : 0;
}
