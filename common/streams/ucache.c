/* common/streams/ucache.c: bounded cache of users' state (see ucache.h).
 *
 * Entries live in one array of fixed-size slots; an open-addressing index
 * (linear probing, at most half full, deletion by backward shift: no
 * tombstones) maps a key's hash to its slot. CLOCK picks the victim when
 * every slot is taken: the hand skips slots used since it last passed.
 */
#include "ucache.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

struct uc_slot {
    char key[UCACHE_KEY_MAX]; /* "" = free */
    uint64_t hash;
    int32_t partition;
    int64_t offset;
    unsigned char ref;
};

struct ucache {
    struct uc_slot *slots;
    unsigned char *values; /* slot i's value at i * vsize */
    size_t n, vsize, used, hand;
    int32_t *index; /* slot number or -1 */
    size_t mask;
    size_t *free_list, n_free;
    struct ucache_stats st;
};

static uint64_t hash_key(const char *s)
{
    uint64_t h = 14695981039346656037ULL;

    while (*s) {
        h ^= (unsigned char)*s++;
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

/* The value array is large (20,000 users x 1.6 kB = 32 MB by default) and
 * touched at random: in 4 kB pages each new user's first write took a page
 * fault (about a third of the worker's CPU while the cache filled, on this
 * VM) and each lookup a TLB miss. Arrays of 2 MB and more are aligned for
 * transparent huge pages and advised to use them (THP "madvise" mode);
 * where the kernel declines, they are ordinary memory. Freed with free(). */
#define UC_HUGE ((size_t)2 << 20)
static void *big_alloc(size_t size)
{
    void *p;

    if (size < UC_HUGE)
        return malloc(size);
    size = (size + UC_HUGE - 1) / UC_HUGE * UC_HUGE;
    if (posix_memalign(&p, UC_HUGE, size))
        return NULL;
#ifdef MADV_HUGEPAGE
    (void)madvise(p, size, MADV_HUGEPAGE);
#endif
    return p;
}

struct ucache *ucache_open(size_t entries, size_t value_size)
{
    struct ucache *c;
    size_t cap = 16;

    if (!entries || !value_size || entries > SIZE_MAX / 4 / value_size ||
        entries > SIZE_MAX / 4 / sizeof(struct uc_slot))
        return NULL;
    while (cap < 2 * entries)
        cap *= 2;
    if (!(c = calloc(1, sizeof(*c))))
        return NULL;
    c->n = entries;
    c->vsize = value_size;
    c->mask = cap - 1;
    c->slots = big_alloc(entries * sizeof(*c->slots));
    c->values = big_alloc(entries * value_size);
    c->index = malloc(cap * sizeof(*c->index));
    c->free_list = malloc(entries * sizeof(*c->free_list));
    if (!c->slots || !c->values || !c->index || !c->free_list) {
        ucache_close(c);
        return NULL;
    }
    memset(c->slots, 0, entries * sizeof(*c->slots)); /* small: touched by the clear anyway */
    c->st.capacity = entries;
    ucache_clear(c);
    c->st.clears = 0;
    return c;
}

void ucache_close(struct ucache *c)
{
    if (!c)
        return;
    free(c->slots);
    free(c->values);
    free(c->index);
    free(c->free_list);
    free(c);
}

void ucache_clear(struct ucache *c)
{
    if (!c)
        return;
    memset(c->index, 0xff, (c->mask + 1) * sizeof(*c->index));
    for (size_t i = 0; i < c->n; i++) {
        c->slots[i].key[0] = '\0';
        c->free_list[i] = c->n - 1 - i;
    }
    c->n_free = c->n;
    c->used = 0;
    c->hand = 0;
    c->st.clears++;
}

/* The index position holding key, or the empty one where it would go. */
static size_t find(const struct ucache *c, const char *key, uint64_t h)
{
    size_t i = (size_t)h & c->mask;

    while (c->index[i] >= 0) {
        const struct uc_slot *s = &c->slots[c->index[i]];
        if (s->hash == h && strcmp(s->key, key) == 0)
            break;
        i = (i + 1) & c->mask;
    }
    return i;
}

const void *ucache_get(struct ucache *c, const char *key, int32_t *partition, int64_t *offset)
{
    size_t i;
    struct uc_slot *s;

    if (!c)
        return NULL;
    i = find(c, key, hash_key(key));
    if (c->index[i] < 0) {
        c->st.misses++;
        return NULL;
    }
    s = &c->slots[c->index[i]];
    s->ref = 1;
    *partition = s->partition;
    *offset = s->offset;
    c->st.hits++;
    return c->values + (size_t)c->index[i] * c->vsize;
}

/* Removes index position i (backward shift: each later entry of the probe
 * run moves up when its home allows it) and frees its slot. */
static void remove_at(struct ucache *c, size_t i)
{
    size_t slot = (size_t)c->index[i], j = i;

    for (;;) {
        size_t home;
        j = (j + 1) & c->mask;
        if (c->index[j] < 0)
            break;
        home = (size_t)c->slots[c->index[j]].hash & c->mask;
        /* the entry at j may move to i when its home is not in (i, j] */
        if (((j - home) & c->mask) >= ((j - i) & c->mask)) {
            c->index[i] = c->index[j];
            i = j;
        }
    }
    c->index[i] = -1;
    c->slots[slot].key[0] = '\0';
    c->free_list[c->n_free++] = slot;
    c->used--;
}

/* CLOCK: the first slot not used since the hand last passed. */
static void evict_one(struct ucache *c)
{
    for (;;) {
        struct uc_slot *s = &c->slots[c->hand];
        c->hand = (c->hand + 1) % c->n;
        if (!s->key[0])
            continue;
        if (s->ref) {
            s->ref = 0;
            continue;
        }
        remove_at(c, find(c, s->key, s->hash));
        c->st.evictions++;
        return;
    }
}

void ucache_put(struct ucache *c, const char *key, const void *value, int32_t partition,
                int64_t offset)
{
    uint64_t h;
    size_t i, len;
    struct uc_slot *s;

    if (!c || (len = strnlen(key, UCACHE_KEY_MAX)) == UCACHE_KEY_MAX || len == 0)
        return;
    h = hash_key(key);
    i = find(c, key, h);
    if (c->index[i] < 0) {
        if (!c->n_free) {
            evict_one(c);
            i = find(c, key, h); /* the shift may have moved the empty position */
        }
        c->index[i] = (int32_t)c->free_list[--c->n_free];
        s = &c->slots[c->index[i]];
        memcpy(s->key, key, len + 1);
        s->hash = h;
        c->used++;
    }
    s = &c->slots[c->index[i]];
    s->partition = partition;
    s->offset = offset;
    s->ref = 1;
    memcpy(c->values + (size_t)c->index[i] * c->vsize, value, c->vsize);
}

void ucache_drop(struct ucache *c, const char *key)
{
    size_t i;

    if (!c)
        return;
    i = find(c, key, hash_key(key));
    if (c->index[i] >= 0) {
        remove_at(c, i);
        c->st.drops++;
    }
}

size_t ucache_drop_partition(struct ucache *c, int32_t partition)
{
    size_t dropped = 0;

    for (size_t i = 0; c && i < c->n; i++) {
        struct uc_slot *s = &c->slots[i];
        if (s->key[0] && s->partition == partition) {
            remove_at(c, find(c, s->key, s->hash));
            dropped++;
        }
    }
    if (c)
        c->st.drops += dropped;
    return dropped;
}

void ucache_stats(const struct ucache *c, struct ucache_stats *s)
{
    memset(s, 0, sizeof(*s));
    if (!c)
        return;
    *s = c->st;
    s->entries = c->used;
}
