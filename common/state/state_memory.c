/* common/state/state_memory.c: the in-process state backend (featurize, replays,
 * tests). An open-addressing hash table (linear probing) from entity id to
 * (blob, partition, offset); it only grows, entries are never removed.
 */
#include "state_backend.h"

#include <stdlib.h>
#include <string.h>

struct mem_entry {
    char *entity; /* NULL = empty slot */
    unsigned char *blob;
    size_t len, blob_cap;
    int32_t partition;
    int64_t offset;
};

struct state_mem {
    struct state base; /* first: state.c casts */
    struct mem_entry *tab;
    size_t cap; /* power of two */
    size_t used;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 14695981039346656037ULL;

    while (*s) {
        h ^= (unsigned char)*s++;
        h *= 1099511628211ULL;
    }
    return h;
}

/* The slot holding entity, or the empty slot where it would go. */
static struct mem_entry *find_slot(struct mem_entry *tab, size_t cap, const char *entity)
{
    size_t i = (size_t)hash_str(entity) & (cap - 1);

    while (tab[i].entity && strcmp(tab[i].entity, entity) != 0)
        i = (i + 1) & (cap - 1);
    return &tab[i];
}

static int grow(struct state_mem *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 64;
    struct mem_entry *ntab = calloc(ncap, sizeof(*ntab));

    if (!ntab)
        return ERR_NOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->tab[i].entity)
            *find_slot(ntab, ncap, m->tab[i].entity) = m->tab[i];
    }
    free(m->tab);
    m->tab = ntab;
    m->cap = ncap;
    return ERR_OK;
}

static void mem_close(struct state *s)
{
    struct state_mem *m = (struct state_mem *)s;

    for (size_t i = 0; i < m->cap; i++) {
        free(m->tab[i].entity);
        free(m->tab[i].blob);
    }
    free(m->tab);
    free(m);
}

static int mem_get_many(struct state *s, size_t n, const char *const *entities,
                        struct state_blob *out, struct err *e)
{
    struct state_mem *m = (struct state_mem *)s;

    (void)e;
    for (size_t i = 0; i < n; i++) {
        const struct mem_entry *x = find_slot(m->tab, m->cap, entities[i]);
        out[i].len = x->entity ? x->len : 0;
        out[i].partition = x->entity ? x->partition : -1;
        out[i].offset = x->entity ? x->offset : -1;
        if (x->entity && x->len)
            memcpy(out[i].data, x->blob, x->len);
    }
    return ERR_OK;
}

/* A new entry for entity, growing the table first to keep the load <= 1/2. */
static struct mem_entry *insert(struct state_mem *m, const char *entity, struct err *e)
{
    struct mem_entry *x;
    char *key = strdup(entity);

    if (!key || ((m->used + 1) * 2 > m->cap && grow(m))) {
        free(key);
        err_set(e, ERR_NOMEM, "state memory: out of memory adding %s", entity);
        return NULL;
    }
    x = find_slot(m->tab, m->cap, entity);
    *x = (struct mem_entry){.entity = key, .partition = -1, .offset = -1};
    m->used++;
    return x;
}

/* Blobs are sized to fit (not STATE_BLOB_MAX each: featurize may hold
 * millions of users) and only grow. */
static int store(struct mem_entry *x, const struct state_put *p, struct err *e)
{
    if (p->len > x->blob_cap) {
        unsigned char *b = realloc(x->blob, p->len);
        if (!b)
            return err_set(e, ERR_NOMEM, "state memory: out of memory storing %s", p->entity);
        x->blob = b;
        x->blob_cap = p->len;
    }
    memcpy(x->blob, p->data, p->len);
    x->len = p->len;
    x->partition = p->partition;
    x->offset = p->offset;
    return ERR_OK;
}

static int mem_put_many(struct state *s, size_t n, const struct state_put *puts, int *applied,
                        struct err *e)
{
    struct state_mem *m = (struct state_mem *)s;

    for (size_t i = 0; i < n; i++) {
        const struct state_put *p = &puts[i];
        struct mem_entry *x = find_slot(m->tab, m->cap, p->entity);
        applied[i] = 0;
        if (x->entity && state_put_is_stale(x->partition, x->offset, p->partition, p->offset))
            continue;
        if (state_put_conflicts(s, i, x->entity != NULL, x->partition, x->offset)) {
            applied[i] = STATE_PUT_CONFLICT;
            continue;
        }
        if (!x->entity)
            x = insert(m, p->entity, e);
        if (!x || store(x, p, e))
            return ERR_NOMEM;
        applied[i] = 1;
    }
    return ERR_OK;
}

static int mem_ping(struct state *s, struct err *e)
{
    (void)s;
    (void)e;
    return ERR_OK;
}

static const struct state_ops mem_ops = {
    .name = "memory",
    .close = mem_close,
    .get_many = mem_get_many,
    .put_many = mem_put_many,
    .ping = mem_ping,
};

struct state *state_open_memory(void)
{
    struct state_mem *m = calloc(1, sizeof(*m));

    if (!m)
        return NULL;
    m->base.ops = &mem_ops;
    if (grow(m)) {
        free(m);
        return NULL;
    }
    return &m->base;
}
