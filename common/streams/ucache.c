/* common/streams/ucache.c: bounded cache of users' state (see ucache.h).
 *
 * Entries live in one array of fixed-size slots; an open-addressing index
 * (linear probing, at most half full, deletion by backward shift: no
 * tombstones) maps a key's hash to its slot. CLOCK picks the victim when
 * every slot is taken: the hand skips slots used since it last passed.
 * Values live apart, in chunks of a power-of-two size class: one array per
 * class with room for every entry (reserved address space, touched only as
 * chunks are used: lowest chunks first), so no put can fail for want of a
 * chunk and what is touched follows the values' own sizes.
 */
#include "ucache.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define UC_MIN_CHUNK 64
#define UC_CLASSES 16
#define UC_NONE 0xff

struct uc_slot {
    char key[UCACHE_KEY_MAX]; /* "" = free */
    uint64_t hash;
    int32_t partition;
    int64_t offset;
    int64_t time_s;
    uint32_t len, chunk; /* the value: len bytes in chunk of class cls */
    unsigned char cls;   /* UC_NONE: no chunk */
    unsigned char ref;
};

struct uc_class {
    unsigned char *base; /* chunk i at i * size */
    size_t size, map_len;
    uint32_t *free_chunks, n_free;
    uint32_t fresh; /* chunks [fresh, n) never handed out since the last clear */
};

struct ucache {
    struct uc_slot *slots;
    size_t n, vsize, used, hand;
    int32_t *index; /* slot number or -1 */
    size_t mask;
    size_t *free_list, n_free;
    struct uc_class cls[UC_CLASSES];
    int ncls;
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

/* A class's array is large (20,000 entries x 4 kB chunks = 80 MB of
 * address space for the largest class) and touched only where chunks are
 * used: reserved without commitment (MAP_NORESERVE), and advised to use
 * transparent huge pages (THP "madvise" mode: one fault per 2 MB instead of
 * one per 4 kB page while the cache fills; where the kernel declines, they
 * are ordinary pages). NULL when the space cannot be had. */
#define UC_HUGE ((size_t)2 << 20)
static void *big_map(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);

    if (p == MAP_FAILED)
        return NULL;
#ifdef MADV_HUGEPAGE
    if (size >= UC_HUGE)
        (void)madvise(p, size, MADV_HUGEPAGE);
#endif
    return p;
}

struct ucache *ucache_open(size_t entries, size_t value_size)
{
    struct ucache *c;
    size_t cap = 16, csize = UC_MIN_CHUNK;

    if (!entries || !value_size || entries > UINT32_MAX / 4 || value_size > UINT32_MAX / 4 ||
        entries > SIZE_MAX / 8 / value_size || entries > SIZE_MAX / 4 / sizeof(struct uc_slot))
        return NULL;
    while (cap < 2 * entries)
        cap *= 2;
    if (!(c = calloc(1, sizeof(*c))))
        return NULL;
    c->n = entries;
    c->vsize = value_size;
    c->mask = cap - 1;
    c->slots = calloc(entries, sizeof(*c->slots));
    c->index = malloc(cap * sizeof(*c->index));
    c->free_list = malloc(entries * sizeof(*c->free_list));
    if (!c->slots || !c->index || !c->free_list) {
        ucache_close(c);
        return NULL;
    }
    for (;;) { /* classes 64, 128, ... up to the first that holds value_size */
        struct uc_class *k = &c->cls[c->ncls++];
        k->size = csize < value_size ? csize : value_size;
        k->map_len = entries * k->size;
        k->base = big_map(k->map_len);
        k->free_chunks = malloc(entries * sizeof(*k->free_chunks));
        if (!k->base || !k->free_chunks) {
            ucache_close(c);
            return NULL;
        }
        if (k->size >= value_size || c->ncls == UC_CLASSES)
            break;
        csize *= 2;
    }
    if (c->cls[c->ncls - 1].size < value_size) { /* past UC_CLASSES: too large */
        ucache_close(c);
        return NULL;
    }
    c->st.capacity = entries;
    ucache_clear(c);
    c->st.clears = 0;
    return c;
}

void ucache_close(struct ucache *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->ncls; i++) {
        if (c->cls[i].base)
            munmap(c->cls[i].base, c->cls[i].map_len);
        free(c->cls[i].free_chunks);
    }
    free(c->slots);
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
        c->slots[i].cls = UC_NONE;
        c->free_list[i] = c->n - 1 - i;
    }
    for (int i = 0; i < c->ncls; i++)
        c->cls[i].n_free = c->cls[i].fresh = 0;
    c->n_free = c->n;
    c->used = 0;
    c->hand = 0;
    c->st.bytes = 0;
    c->st.clears++;
}

/* Slot s's chunk back to its class (the most recently freed is reused
 * first: its memory is warm). */
static void free_chunk(struct ucache *c, struct uc_slot *s)
{
    struct uc_class *k;

    if (s->cls == UC_NONE)
        return;
    k = &c->cls[s->cls];
    k->free_chunks[k->n_free++] = s->chunk;
    c->st.bytes -= k->size;
    s->cls = UC_NONE;
}

/* A chunk of class i for slot s: a freed one, else the lowest never used
 * (at most c->n chunks per class are ever held: one per entry). */
static void take_chunk(struct ucache *c, struct uc_slot *s, int i)
{
    struct uc_class *k = &c->cls[i];

    s->chunk = k->n_free ? k->free_chunks[--k->n_free] : k->fresh++;
    s->cls = (unsigned char)i;
    c->st.bytes += k->size;
}

static unsigned char *chunk_of(const struct ucache *c, const struct uc_slot *s)
{
    return c->cls[s->cls].base + (size_t)s->chunk * c->cls[s->cls].size;
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

/* The key's home position only (an entry moved along its probe run is not
 * prefetched, just found as before). */
void ucache_prefetch(const struct ucache *c, const char *key, int stage)
{
    uint64_t h;
    const struct uc_slot *s;
    const unsigned char *v;
    int32_t k;

    if (!c)
        return;
    h = hash_key(key);
    if (stage == 0) {
        __builtin_prefetch(&c->index[h & c->mask]);
        return;
    }
    if ((k = c->index[h & c->mask]) < 0)
        return;
    s = &c->slots[k];
    if (stage == 1) {
        __builtin_prefetch(s);
        __builtin_prefetch((const char *)s + sizeof(*s) - 1);
        return;
    }
    if (s->hash != h || s->cls == UC_NONE)
        return;
    v = chunk_of(c, s);
    for (uint32_t at = 0; at < s->len; at += 64)
        __builtin_prefetch(v + at);
}

const void *ucache_getv(struct ucache *c, const char *key, size_t *len, int32_t *partition,
                        int64_t *offset, int64_t *time_s)
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
    if (time_s)
        *time_s = s->time_s;
    *len = s->len;
    c->st.hits++;
    return chunk_of(c, s);
}

const void *ucache_get(struct ucache *c, const char *key, int32_t *partition, int64_t *offset)
{
    size_t len;

    return ucache_getv(c, key, &len, partition, offset, NULL);
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
    free_chunk(c, &c->slots[slot]);
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

void ucache_putv(struct ucache *c, const char *key, const void *value, size_t len,
                 int32_t partition, int64_t offset, int64_t time_s)
{
    uint64_t h;
    size_t i, klen;
    int k = 0;
    struct uc_slot *s;

    if (!c || (klen = strnlen(key, UCACHE_KEY_MAX)) == UCACHE_KEY_MAX || klen == 0)
        return;
    if (len == 0 || len > c->vsize) { /* not cached: no older value may stay */
        ucache_drop(c, key);
        return;
    }
    while (c->cls[k].size < len)
        k++;
    h = hash_key(key);
    i = find(c, key, h);
    if (c->index[i] < 0) {
        if (!c->n_free) {
            evict_one(c);
            i = find(c, key, h); /* the shift may have moved the empty position */
        }
        c->index[i] = (int32_t)c->free_list[--c->n_free];
        s = &c->slots[c->index[i]];
        memcpy(s->key, key, klen + 1);
        s->hash = h;
        s->cls = UC_NONE;
        c->used++;
    }
    s = &c->slots[c->index[i]];
    if (s->cls != k) {
        free_chunk(c, s);
        take_chunk(c, s, k);
    }
    s->partition = partition;
    s->offset = offset;
    s->time_s = time_s;
    s->ref = 1;
    s->len = (uint32_t)len;
    memcpy(chunk_of(c, s), value, len);
}

void ucache_put(struct ucache *c, const char *key, const void *value, int32_t partition,
                int64_t offset)
{
    if (c)
        ucache_putv(c, key, value, c->vsize, partition, offset, 0);
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
