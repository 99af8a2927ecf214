/* common/streams/txn_stream.c: the transactions batch step against users' state
 * (see txn_stream.h). */
#include "txn_stream.h"

#include <stdlib.h>
#include <string.h>

#include "features.h"
#include "log.h"
#include "pipeline.h"
#include "stagetime.h"
#include "txn.h"
#include "ucache.h"

/* The invariant: an event is acknowledged (its offset may be committed)
 * only once a Redis write that contains its state update has succeeded,
 * or the state read from Redis already held it (a redelivery). What makes
 * "already held" trustworthy is the order of writes: per partition, a
 * user's state is only ever written with every earlier event of that user
 * applied. So once anything is queued (a read or a write failed), every
 * later event goes through the same FIFO queue too, whatever the store
 * answers meanwhile: no newer batch is read, scored on full state and
 * written ahead of the queue (which would make the queued events look
 * applied when their offsets are older than the stored one). Events queued
 * are scored on empty state and flagged degraded; the queue is re-applied
 * in arrival order from the tick, on a timer (never a sleep in the step),
 * and its events acknowledged chunk by chunk as their writes succeed. */
enum { EV_SKIP = 0, EV_APPLY, EV_REDELIVERED, EV_QUEUED };

#define RETRY_US 1000000 /* the next try after a failed read or write */
#define DRAIN_US 200000  /* re-applying in one tick at most (polling goes on) */
#define CONFLICT_US 10000 /* the next try after a compare-and-set conflict */
#define PREFETCH_AHEAD 8  /* users between a value's prefetch and its lookup (read_users) */

struct pending_ev {
    struct txn_event ev;
    struct kq_pos pos;
};

struct txs {
    struct txs_opts o;
    struct state *st;
    /* the batch */
    size_t n;
    const struct txn_event *evs;
    const struct kq_pos *pos;
    unsigned char *status;
    int *user_of;
    struct entset users;
    struct state_blob *blobs;
    struct feat_state *ust;
    unsigned char *udirty;
    int64_t *uoff;
    int32_t *upart;
    struct state_put *puts;
    size_t np;    /* puts of the batch (write_users_begin) */
    int put_sent; /* ... sent, outcome not read yet */
    int *applied;
    int degraded, sent;
    /* updates waiting for the store */
    struct pending_ev *pending;
    size_t npending;
    int redis_down;
    int64_t next_retry_us;
    /* partition-owned state (cache_entries > 0) */
    struct ucache *cache;
    uint64_t owner_seen, losses_seen, fenced_seen;
    struct state_base *bases; /* per put: the position its state came from */
    int32_t *bpart;           /* per user: that position */
    int64_t *boff;
    int64_t *btime;           /* per user: that position's write time (0 unknown) */
    int *uput;                /* per user: its put, -1 none */
    unsigned char *uconf;     /* per user: its put met a conflict */
    size_t nconflicts;
    const char **miss_ids;    /* users not in the cache, read from the store */
    int *miss_u;
};

void txs_opts_cfg(struct txs_opts *o, const struct cfg *cf)
{
    o->pending_max = (size_t)cfg_int(cf, "state.pending_max");
    o->budget_ms = (int)cfg_int(cf, "state.retry_budget_ms");
    o->cache_entries = (size_t)cfg_int(cf, "state.cache_entries");
}

static void ignore_partition(void *opaque, int32_t partition)
{
    (void)opaque;
    (void)partition;
}

int txs_open(struct txs **out, struct state *st, const struct txs_opts *o, struct err *e)
{
    struct txs *t;
    size_t c = o->cap;

    *out = NULL;
    if (o->pending_max < o->cap)
        return err_set(e, ERR_CONFIG,
                       "config: state.pending_max=%zu must be >= worker.batch_size=%zu",
                       o->pending_max, o->cap);
    if (!(t = calloc(1, sizeof(*t))))
        return err_set(e, ERR_NOMEM, "out of memory");
    t->o = *o;
    t->st = st;
    t->status = calloc(c, 1);
    t->user_of = calloc(c, sizeof(int));
    t->blobs = calloc(c, sizeof(*t->blobs));
    t->ust = calloc(c, sizeof(*t->ust));
    t->udirty = calloc(c, 1);
    t->uoff = calloc(c, sizeof(int64_t));
    t->upart = calloc(c, sizeof(int32_t));
    t->puts = calloc(c, sizeof(*t->puts));
    t->applied = calloc(c, sizeof(int));
    t->pending = calloc(o->pending_max, sizeof(*t->pending));
    t->bases = calloc(c, sizeof(*t->bases));
    t->bpart = calloc(c, sizeof(*t->bpart));
    t->boff = calloc(c, sizeof(*t->boff));
    t->btime = calloc(c, sizeof(*t->btime));
    t->uput = calloc(c, sizeof(*t->uput));
    t->uconf = calloc(c, 1);
    t->miss_ids = calloc(c, sizeof(*t->miss_ids));
    t->miss_u = calloc(c, sizeof(*t->miss_u));
    if (!t->status || !t->user_of || !t->blobs || !t->ust || !t->udirty || !t->uoff || !t->upart ||
        !t->puts || !t->applied || !t->pending || !t->bases || !t->bpart || !t->boff ||
        !t->btime || !t->uput || !t->uconf || !t->miss_ids || !t->miss_u || pipe_entset_init(&t->users, c)) {
        txs_close(t);
        return err_set(e, ERR_NOMEM, "out of memory for a batch of %zu", c);
    }
    /* The memory backend is in this process already: nothing to save. */
    if (o->cache_entries && strcmp(state_backend(st), "memory") != 0) {
        /* Entries hold the encoded state (the blob the store holds, ~90
         * bytes for a user seen once), not struct feat_state (2.7 kB): a
         * user the cache only fills with costs a small copy. */
        if (!(t->cache = ucache_open(o->cache_entries, FEAT_STATE_MAX))) {
            txs_close(t);
            return err_set(e, ERR_NOMEM,
                           "out of memory for state.cache_entries=%zu (up to %d bytes each)",
                           o->cache_entries, FEAT_STATE_MAX);
        }
        /* Every write becomes a compare-and-set against its state's origin. */
        state_set_put_bases(st, t->bases);
        t->owner_seen = state_owner_changes(st);
        (void)state_take_owner_changes(st, ignore_partition, NULL); /* nothing cached yet */
        t->losses_seen = state_losses(st);
        t->fenced_seen = state_fenced(st);
    }
    *out = t;
    return ERR_OK;
}

void txs_close(struct txs *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->npending; i++) /* copies of spec records */
        free((void *)t->pending[i].ev.rec);
    void *arrays[] = {t->status, t->user_of, t->blobs, t->ust,      t->udirty, t->uoff,
                      t->upart,  t->puts,    t->applied, t->pending, t->bases,  t->bpart,
                      t->boff,   t->btime,   t->uput,    t->uconf, (void *)t->miss_ids,
                      t->miss_u};
    for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++)
        free(arrays[i]);
    pipe_entset_free(&t->users);
    if (t->cache) {
        struct ucache_stats cs;
        ucache_stats(t->cache, &cs);
        log_info("state cache: %llu hits, %llu misses, %llu evicted, %llu dropped, emptied %llu "
                 "time(s), %zu of %zu users held",
                 (unsigned long long)cs.hits, (unsigned long long)cs.misses,
                 (unsigned long long)cs.evictions, (unsigned long long)cs.drops,
                 (unsigned long long)cs.clears, cs.entries, cs.capacity);
        state_set_put_bases(t->st, NULL);
    }
    ucache_close(t->cache);
    free(t);
}

void txs_cache_stats(const struct txs *t, struct ucache_stats *s)
{
    ucache_stats(t->cache, s);
}

int txs_redelivered(const struct txs *t, size_t i)
{
    return t->status[i] == EV_REDELIVERED;
}

int txs_room(const struct txs *t)
{
    return t->npending + t->o.cap <= t->o.pending_max;
}

int txs_state_ok(const struct txs *t)
{
    return !t->redis_down;
}

size_t txs_queued(const struct txs *t)
{
    return t->npending;
}

/* ---- state: read once per batch, write once per batch ---- */

/* User u's state from the blob read for it (NULL: empty), and the store
 * position it came from (the base of its next write). */
static void load_user(struct txs *t, size_t u, const struct state_blob *b)
{
    struct err e = {0};
    size_t len = b ? b->len : 0;

    t->udirty[u] = 0;
    t->bpart[u] = len ? b->partition : -1;
    t->boff[u] = len ? b->offset : -1;
    t->btime[u] = len ? b->time_s : 0;
    if (txn_state_load(&t->ust[u], &t->upart[u], &t->uoff[u], len ? b->data : NULL, len,
                       t->bpart[u], t->boff[u], &e))
        log_error("state of user %s unreadable (%s): starting it afresh", t->users.ids[u], e.msg);
}

static void load_user_states(struct txs *t, size_t nusers, int ok)
{
    for (size_t u = 0; u < nusers; u++)
        load_user(t, u, ok ? &t->blobs[u] : NULL);
}

static void drop_partition(void *opaque, int32_t partition)
{
    ucache_drop_partition(((struct txs *)opaque)->cache, partition);
}

/* The cache holds what the store acknowledged to this owner: the users of
 * a partition assigned, revoked or lost are dropped (only theirs: the
 * others' entries stay valid, and every write is a compare-and-set); it is
 * emptied when a put was fenced or the store was found empty. */
static int check_cache(struct txs *t)
{
    uint64_t own = state_owner_changes(t->st), lost = state_losses(t->st);
    uint64_t fenced = state_fenced(t->st);

    if (!t->cache || (own == t->owner_seen && lost == t->losses_seen && fenced == t->fenced_seen))
        return 0;
    if (state_take_owner_changes(t->st, drop_partition, t) || lost != t->losses_seen ||
        fenced != t->fenced_seen)
        ucache_clear(t->cache);
    t->owner_seen = own;
    t->losses_seen = lost;
    t->fenced_seen = fenced;
    return 1;
}

/* Reads the batch's users: from the cache, the others from the store under
 * the retry budget. Returns 1 when the store could not be read (the batch
 * is then queued, see txs_features). */
static int read_users(struct txs *t)
{
    struct err e = {0};
    size_t nmiss = 0;
    int rc = ERR_OK;

    (void)check_cache(t);
    /* The users are spread over the cache: their lookups' misses overlap
     * (ucache_prefetch), the values PREFETCH_AHEAD users ahead. */
    for (int stage = 0; t->cache && stage < 2; stage++)
        for (size_t u = 0; u < t->users.n; u++)
            ucache_prefetch(t->cache, t->users.ids[u], stage);
    for (size_t u = 0; u < t->users.n; u++) {
        size_t len = 0;
        if (u + PREFETCH_AHEAD < t->users.n)
            ucache_prefetch(t->cache, t->users.ids[u + PREFETCH_AHEAD], 2);
        const unsigned char *c = ucache_getv(t->cache, t->users.ids[u], &len, &t->bpart[u],
                                             &t->boff[u], &t->btime[u]);
        t->udirty[u] = 0;
        /* Its own encoding, written by this process: decoded as a blob read
         * from the store would be (one that fails is read again). */
        if (c && txn_state_load(&t->ust[u], &t->upart[u], &t->uoff[u], c, len, t->bpart[u],
                                t->boff[u], &e) == ERR_OK)
            continue;
        if (c)
            ucache_drop(t->cache, t->users.ids[u]);
        t->miss_ids[nmiss] = t->users.ids[u];
        t->miss_u[nmiss++] = (int)u;
    }
    if (nmiss) {
        int64_t t0 = stt_enabled() ? pipe_now_us() : 0;
        rc = pipe_state_get(t->st, t->o.budget_ms, nmiss, t->miss_ids, t->blobs, &e);
        if (t0)
            stt_add(STT_READ, pipe_now_us() - t0);
    }
    if (rc) {
        log_error("state read failed, scoring degraded, updates queued: %s", e.msg);
        t->redis_down = 1;
        t->next_retry_us = pipe_now_us() + RETRY_US;
        ucache_clear(t->cache);
        load_user_states(t, t->users.n, 0);
        return 1;
    }
    for (size_t k = 0; k < nmiss; k++) /* miss k was read into blobs[k] */
        load_user(t, (size_t)t->miss_u[k], &t->blobs[k]);
    return 0;
}

/* Encodes the dirty users' states and sends them (state_put_begin): Redis
 * applies them while the worker scores and produces the batch, and
 * write_users_end reads the outcome. Sets t->np (0: nothing to write). */
static int write_users_begin(struct txs *t)
{
    unsigned char enc[FEAT_STATE_MAX];
    struct err e = {0};
    size_t np = 0;

    t->np = 0;
    t->put_sent = 0;
    t->nconflicts = 0;
    for (size_t u = 0; u < t->users.n; u++) {
        t->uput[u] = -1;
        t->uconf[u] = 0;
        if (!t->udirty[u])
            continue;
        int len = feat_state_encode(&t->ust[u], enc, sizeof(enc));
        if (len < 0 || (size_t)len > STATE_BLOB_MAX)
            return ERR_NOMEM;
        memcpy(t->blobs[u].data, enc, (size_t)len);
        t->bases[np] = (struct state_base){t->bpart[u], t->boff[u], t->btime[u]};
        t->uput[u] = (int)np;
        t->puts[np++] = (struct state_put){t->users.ids[u], t->blobs[u].data, (size_t)len,
                                           t->upart[u], t->uoff[u]};
    }
    t->np = np;
    /* A send that fails is retried, under the budget, by write_users_end. */
    int64_t t0 = stt_enabled() ? pipe_now_us() : 0;
    t->put_sent = np && state_put_begin(t->st, np, t->puts, &e) == ERR_OK;
    if (t0 && np)
        stt_add(STT_PUT_SEND, pipe_now_us() - t0);
    return ERR_OK;
}

/* The outcome of write_users_begin; when the connection was lost (on send
 * or since), the whole batch is sent again under state.retry_budget_ms
 * (idempotent). */
static int write_users_end(struct txs *t, int budget_ms)
{
    struct err e = {0};
    int rc = ERR_OK;

    if (t->np == 0)
        return ERR_OK;
    if (t->put_sent)
        rc = state_put_end(t->st, t->applied, &e);
    if (!t->put_sent || rc == ERR_RETRY)
        rc = pipe_state_put(t->st, budget_ms, t->np, t->puts, t->applied, &e);
    t->np = 0;
    t->put_sent = 0;
    if (rc) {
        log_error("state write failed, updates queued for re-apply: %s", e.msg);
        t->redis_down = 1;
        t->next_retry_us = pipe_now_us() + RETRY_US;
        return rc;
    }
    for (size_t u = 0; t->cache && u < t->users.n; u++)
        if (t->uput[u] >= 0 && t->applied[t->uput[u]] == STATE_PUT_CONFLICT) {
            t->uconf[u] = 1;
            t->nconflicts++;
        }
    return rc;
}

/* After the batch's write succeeded: the cache takes each user's state as
 * the store now holds it; a user whose put was not written (skipped,
 * fenced, conflict) is dropped, read again next time. */
static void cache_batch(struct txs *t)
{
    /* A put fenced: everything goes. Partitions reported moved (also when a
     * user of theirs was written from elsewhere: state_fast.c) lose their
     * users, and an unchanged user is then not put back: its state was
     * read before the report and may be stale; the users written now were
     * verified by the very write that reported it. */
    int moved = check_cache(t);
    int64_t put_t = state_put_time(t->st);

    for (size_t u = 0; t->cache && u < t->users.n; u++) {
        int k = t->uput[u];
        if (k < 0 && moved) {
            ucache_drop(t->cache, t->users.ids[u]);
        } else if (k < 0) { /* unchanged: still the state read (rare: redeliveries only) */
            unsigned char enc[FEAT_STATE_MAX];
            int len = feat_state_encode(&t->ust[u], enc, sizeof(enc));
            if (len > 0)
                ucache_putv(t->cache, t->users.ids[u], enc, (size_t)len, t->bpart[u],
                            t->boff[u], t->btime[u]);
            else
                ucache_drop(t->cache, t->users.ids[u]);
        } else if (t->applied[k] == STATE_PUT_WRITTEN) { /* the blob the store now holds */
            ucache_putv(t->cache, t->users.ids[u], t->puts[k].data, t->puts[k].len,
                        t->upart[u], t->uoff[u], put_t);
        } else {
            ucache_drop(t->cache, t->users.ids[u]);
        }
    }
}

static int write_users(struct txs *t, int budget_ms)
{
    int rc = write_users_begin(t);

    return rc ? rc : write_users_end(t, budget_ms);
}

static void queue_pending(struct txs *t, size_t i)
{
    struct txn_event *ev = &t->pending[t->npending].ev;

    /* Room was checked before the batch was taken (see txs_room). */
    *ev = t->evs[i];
    /* A spec's own record lives in the batch: the queue keeps a copy. */
    if (ev->rec && !(ev->rec = feat_rec_dup(ev->rec))) {
        log_error("out of memory queueing the update of %s: not applied", ev->user_id);
        return;
    }
    t->pending[t->npending].pos = t->pos[i];
    t->npending++;
}

/* Re-applies queued updates in arrival order, a chunk at a time, once the
 * retry is due; each chunk's events are acknowledged when its write
 * succeeded. The offset check (txn_step) skips an event whose update a
 * write of unknown outcome did apply. */
void txs_tick(struct txs *t, int64_t now_us)
{
    int64_t until = now_us + DRAIN_US;
    struct err e = {0};
    size_t done = 0;

    if (!t->npending || now_us < t->next_retry_us)
        return;
    while (t->npending && pipe_now_us() < until) {
        size_t n = t->npending < t->o.cap ? t->npending : t->o.cap;
        pipe_entset_clear(&t->users);
        for (size_t i = 0; i < n; i++)
            t->user_of[i] = pipe_entset_add(&t->users, t->pending[i].ev.user_id);
        if (pipe_state_get(t->st, 0, t->users.n, t->users.ids, t->blobs, &e)) {
            t->redis_down = 1;
            t->next_retry_us = pipe_now_us() + RETRY_US;
            break;
        }
        load_user_states(t, t->users.n, 1);
        for (size_t i = 0; i < n; i++) {
            const struct pending_ev *p = &t->pending[i];
            int u = t->user_of[i];
            float x[FSPEC_OUT_MAX];
            if (txn_step(&p->ev, p->pos.partition, p->pos.offset, &t->ust[u], &t->upart[u],
                         &t->uoff[u], x))
                t->udirty[u] = 1;
        }
        int rc = write_users(t, 0);
        /* Written behind the cache's back: those users are read again. */
        for (size_t u = 0; t->cache && u < t->users.n; u++)
            ucache_drop(t->cache, t->users.ids[u]);
        if (rc) { /* as a failed read: the next try in a second */
            t->redis_down = 1;
            t->next_retry_us = pipe_now_us() + RETRY_US;
            break;
        }
        if (t->nconflicts) { /* another writer in between: read and apply again */
            t->next_retry_us = pipe_now_us() + CONFLICT_US;
            break;
        }
        t->redis_down = 0;
        for (size_t i = 0; i < n; i++) {
            t->o.ack(t->o.opaque, &t->pending[i].pos);
            free((void *)t->pending[i].ev.rec);
        }
        memmove(t->pending, t->pending + n, (t->npending - n) * sizeof(*t->pending));
        t->npending -= n;
        done += n;
    }
    if (done)
        log_info("re-applied %zu queued state update(s), %zu left", done, t->npending);
}

/* ---- one batch ---- */

int txs_features(struct txs *t, size_t n, const struct txn_event *evs, const struct kq_pos *pos,
                 const unsigned char *live, float *xs)
{
    size_t dim = feat_txn_dim();

    t->n = n;
    t->evs = evs;
    t->pos = pos;
    pipe_entset_clear(&t->users);
    for (size_t i = 0; i < n; i++) {
        t->status[i] = live[i] ? EV_APPLY : EV_SKIP;
        if (live[i])
            t->user_of[i] = pipe_entset_add(&t->users, evs[i].user_id);
    }
    /* Something queued: this batch queues behind it, unread (see the
     * invariant above). Else the store is read, and a failure queues. */
    if (t->npending)
        load_user_states(t, t->users.n, 0);
    t->degraded = t->npending || (t->users.n && read_users(t));
    /* Features from each user's state as it stood before the event. */
    for (size_t i = 0; i < n; i++) {
        int u = t->user_of[i];
        if (t->status[i] == EV_SKIP)
            continue;
        if (t->degraded) { /* empty state at position -1: never a redelivery */
            txn_step(&evs[i], pos[i].partition, pos[i].offset, &t->ust[u], &t->upart[u],
                     &t->uoff[u], xs + i * dim);
            t->status[i] = EV_QUEUED;
        } else if (txn_step(&evs[i], pos[i].partition, pos[i].offset, &t->ust[u], &t->upart[u],
                            &t->uoff[u], xs + i * dim)) {
            t->udirty[u] = 1;
        } else {
            t->status[i] = EV_REDELIVERED; /* already in the stored state */
        }
    }
    t->put_sent = 0;
    t->np = 0;
    t->sent = !t->degraded && write_users_begin(t) == ERR_OK;
    return t->degraded;
}

/* Acknowledged: redeliveries (the read state holds them) and, when the
 * batch's write succeeded, its updates. Queued: the rest, in order. */
void txs_store(struct txs *t)
{
    int written = t->sent && write_users_end(t, t->o.budget_ms) == ERR_OK;

    if (written)
        t->redis_down = 0;
    /* A conflict (another writer since the cached state): the user's events
     * of the batch are applied again on the state the store holds. */
    for (size_t i = 0; i < t->n; i++) {
        int st = t->status[i];
        if (st == EV_REDELIVERED || (st == EV_APPLY && written && !t->uconf[t->user_of[i]]))
            t->o.ack(t->o.opaque, &t->pos[i]);
        else if (st == EV_APPLY || st == EV_QUEUED)
            queue_pending(t, i);
    }
    if (written)
        cache_batch(t);
    else if (!t->degraded) /* the write's outcome is unknown */
        ucache_clear(t->cache);
    if (written && t->nconflicts) {
        log_warn("state of %zu user(s) written by another owner since it was cached: their "
                 "events are applied again on the stored state",
                 t->nconflicts);
        t->next_retry_us = pipe_now_us();
    }
}
