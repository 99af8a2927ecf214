#include "kafka.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "kafka_int.h"
#include "log.h"

int64_t kq_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *kq_version(void)
{
    return rd_kafka_version_str();
}

/* Packs a position into the delivery report's opaque pointer: 4 bits of
 * topic index, 16 of partition, 1 for the acknowledgement the delivery
 * gives (0: KQ_ACK_DELIVERED, 1: KQ_ACK_STATE, kq_produce_ack), 43 of
 * offset (no allocation per message). */
#define POS_OFF_BITS 43
static void *pos_pack(const struct kq_pos *p, int what)
{
    uint64_t v = ((uint64_t)p->topic_idx << 60) | ((uint64_t)(p->partition & 0xffff) << 44) |
                 ((uint64_t)(what == KQ_ACK_STATE) << POS_OFF_BITS) |
                 ((uint64_t)p->offset & ((1ULL << POS_OFF_BITS) - 1));
    return (void *)(uintptr_t)v;
}

static struct kq_pos pos_unpack(void *opaque, int *what)
{
    uint64_t v = (uint64_t)(uintptr_t)opaque;
    struct kq_pos p = {(int32_t)(v >> 60), (int32_t)((v >> 44) & 0xffff),
                       (int64_t)(v & ((1ULL << POS_OFF_BITS) - 1))};
    *what = (v >> POS_OFF_BITS) & 1 ? KQ_ACK_STATE : KQ_ACK_DELIVERED;
    return p;
}

/* librdkafka repeats a failing connection's lines every retry (9+ lines for
 * an unreachable broker, the log line and the error callback alternating):
 * a line already printed in the last 60 s (compared up to its "(after Nms
 * ..." detail; the last 8 kept) is counted, not printed; the count comes
 * with the line when it is printed again. Any thread (mutex). */
#define REP_SLOTS 8
static pthread_mutex_t rep_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char key[256];
    unsigned long count;
    int64_t since_ms;
} rep[REP_SLOTS];
static unsigned rep_next;

/* 1: suppress; else *repeated = how many were suppressed since it was shown. */
static int log_repeated(const char *fac, const char *buf, unsigned long *repeated)
{
    char key[256];
    struct timespec ts;
    int64_t now;
    int dup = 0;
    unsigned i;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    snprintf(key, sizeof(key), "%s: %.*s", fac, (int)strcspn(buf, "("), buf);
    *repeated = 0;
    pthread_mutex_lock(&rep_lock);
    for (i = 0; i < REP_SLOTS && strcmp(rep[i].key, key) != 0; i++)
        ;
    if (i < REP_SLOTS && now - rep[i].since_ms < 60000) {
        rep[i].count++;
        dup = 1;
    } else {
        if (i == REP_SLOTS)
            i = rep_next++ % REP_SLOTS;
        else
            *repeated = rep[i].count;
        snprintf(rep[i].key, sizeof(rep[i].key), "%s", key);
        rep[i].count = 0;
        rep[i].since_ms = now;
    }
    pthread_mutex_unlock(&rep_lock);
    return dup;
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    unsigned long n = 0;
    char more[64] = "";

    (void)rk;
    /* One property set serves the consumer and the producer of a worker, so
     * -X group.id is meant for the consumer: librdkafka's note that the
     * producer ignores it (and the reverse) is no warning for the user. */
    if (strcmp(fac, "CONFWARN") == 0 && (strstr(buf, "ignored by this producer instance") ||
                                         strstr(buf, "ignored by this consumer instance"))) {
        log_debug("rdkafka %s: %s", fac, buf);
        return;
    }
    if (level <= LOG_INFO && log_repeated(fac, buf, &n))
        return;
    if (n)
        snprintf(more, sizeof(more), " (and %lu times more in the last minute)", n);
    if (level <= LOG_ERR)
        log_error("rdkafka %s: %s%s", fac, buf, more);
    else if (level <= LOG_WARNING)
        log_warn("rdkafka %s: %s%s", fac, buf, more);
    else if (level <= LOG_INFO)
        log_info("rdkafka %s: %s", fac, buf);
    else
        log_debug("rdkafka %s: %s", fac, buf);
}

static void set_fatal(struct kq *q, const char *what, const char *why)
{
    if (q->fatal)
        return;
    q->fatal = 1;
    snprintf(q->fatal_msg, sizeof(q->fatal_msg), "%s: %s", what, why);
    log_error("kafka fatal: %s", q->fatal_msg);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct kq *q = opaque;
    char buf[256];

    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        rd_kafka_fatal_error(rk, buf, sizeof(buf));
        set_fatal(q, "librdkafka", buf);
        return;
    }
    q->st.consumer_errors++;
    {
        unsigned long n = 0;
        const char *name = rd_kafka_err2name((rd_kafka_resp_err_t)err);
        if (!log_repeated(name, reason, &n))
            log_warn("kafka %s: %s%s", name, reason, n ? " (repeated in the last minute)" : "");
    }
}

/* ---- offset tracking ---- */

static struct track *track_find(struct kq *q, int32_t tidx, int32_t part, int create)
{
    size_t h = q->track_hint;

    if (h < q->n_tracks && q->tracks[h].partition == part && q->tracks[h].topic_idx == tidx)
        return &q->tracks[h];
    for (size_t i = 0; i < q->n_tracks; i++)
        if (q->tracks[i].partition == part && q->tracks[i].topic_idx == tidx) {
            q->track_hint = i;
            return &q->tracks[i];
        }
    if (!create)
        return NULL;
    if (q->n_tracks == q->cap_tracks) {
        size_t nc = q->cap_tracks ? q->cap_tracks * 2 : 16;
        struct track *nt = realloc(q->tracks, nc * sizeof(*nt));
        if (!nt)
            return NULL;
        q->tracks = nt;
        q->cap_tracks = nc;
    }
    struct track *t = &q->tracks[q->n_tracks++];
    memset(t, 0, sizeof(*t));
    t->topic_idx = tidx;
    t->partition = part;
    t->store_next = -1;
    return t;
}

/* Ring position of the i-th offset from the head. The capacity is a power
 * of two (track_grow): a mask, not a division, per step of every search. */
static inline size_t ring_at(const struct track *t, size_t i)
{
    return (t->head + i) & (t->cap - 1);
}

static int track_grow(struct track *t)
{
    size_t nc = t->cap ? t->cap * 2 : 1024; /* a power of two: ring_at */
    int64_t *no = malloc(nc * sizeof(*no));
    unsigned char *nf = malloc(nc);

    if (!no || !nf) {
        free(no);
        free(nf);
        return ERR_NOMEM;
    }
    for (size_t i = 0; i < t->count; i++) {
        no[i] = t->offs[ring_at(t, i)];
        nf[i] = t->flags[ring_at(t, i)];
    }
    free(t->offs);
    free(t->flags);
    t->offs = no;
    t->flags = nf;
    t->cap = nc;
    t->head = 0;
    return ERR_OK;
}

static int track_push(struct kq *q, const struct kq_pos *p)
{
    struct track *t = track_find(q, p->topic_idx, p->partition, 1);

    if (!t || (t->count == t->cap && track_grow(t)))
        return ERR_NOMEM;
    t->offs[ring_at(t, t->count)] = p->offset;
    t->flags[ring_at(t, t->count)] = 0;
    t->count++;
    q->inflight++;
    return ERR_OK;
}

/* Offsets in the ring are strictly increasing: off is at most once in it.
 * Usually they are consecutive, and off sits off - head's offset from the
 * head; else a binary search. */
static long track_index(const struct track *t, int64_t off)
{
    size_t lo = 0, hi = t->count;

    if (t->count && off >= t->offs[t->head]) {
        uint64_t d = (uint64_t)(off - t->offs[t->head]);
        if (d < t->count && t->offs[ring_at(t, (size_t)d)] == off)
            return (long)d;
    }
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int64_t v = t->offs[ring_at(t, mid)];
        if (v == off)
            return (long)mid;
        if (v < off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

void kq_ack(struct kq *q, const struct kq_pos *pos, int what)
{
    struct track *t = track_find(q, pos->topic_idx, pos->partition, 0);
    long i;

    if (!t || (i = track_index(t, pos->offset)) < 0)
        return; /* partition revoked meanwhile: its offsets are not ours */
    t->flags[ring_at(t, (size_t)i)] |= (unsigned char)what;
    while (t->count && t->flags[t->head] == KQ_ACK_ALL) {
        t->store_next = t->offs[t->head] + 1;
        q->n_dirty += !t->dirty;
        t->dirty = 1;
        t->head = ring_at(t, 1);
        t->count--;
        q->inflight--;
    }
}

/* Stores the contiguous-done offsets of every dirty partition. */
void kq_store_offsets(struct kq *q)
{
    rd_kafka_topic_partition_list_t *l = NULL;
    rd_kafka_resp_err_t err;

    /* Called at every poll (once per message): nothing acknowledged since
     * the last call is the usual case, and costs no walk of the tracks. */
    if (!q->n_dirty)
        return;
    q->n_dirty = 0;
    for (size_t i = 0; i < q->n_tracks; i++) {
        struct track *t = &q->tracks[i];
        if (!t->dirty)
            continue;
        if (!l)
            l = rd_kafka_topic_partition_list_new((int)q->n_tracks);
        rd_kafka_topic_partition_list_add(l, q->topics[t->topic_idx], t->partition)->offset =
            t->store_next;
        t->dirty = 0;
    }
    if (!l || !q->cons)
        goto out;
    err = rd_kafka_offsets_store(q->cons, l);
    for (int i = 0; i < l->cnt; i++) {
        if (l->elems[i].err)
            log_warn("offsets_store %s [%d] @ %lld: %s", l->elems[i].topic,
                     (int)l->elems[i].partition, (long long)l->elems[i].offset,
                     rd_kafka_err2str(l->elems[i].err));
        else
            q->st.stored++, q->stored_uncommitted = 1;
    }
    if (err && err != RD_KAFKA_RESP_ERR__STATE)
        log_warn("offsets_store: %s", rd_kafka_err2str(err));
out:
    if (l)
        rd_kafka_topic_partition_list_destroy(l);
}

/* Commits the stored offsets (async) when they advanced and the interval
 * has passed. Only offsets stored after their acknowledgements exist, so
 * this never commits past unfinished work; librdkafka commits the current
 * assignment only, with the current generation (a member that lost its
 * partitions is refused by the broker). */
static void maybe_commit(struct kq *q)
{
    rd_kafka_resp_err_t err;
    int64_t now;

    if (!q->commit_interval_ms || !q->cons || q->assign_all || !q->stored_uncommitted)
        return;
    now = kq_mono_ms();
    if (now - q->last_commit_ms < q->commit_interval_ms)
        return;
    q->last_commit_ms = now;
    q->stored_uncommitted = 0;
    err = rd_kafka_commit(q->cons, NULL, 1);
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        log_debug("commit (async): %s", rd_kafka_err2str(err));
}

static void track_drop(struct kq *q, const char *topic, int32_t part)
{
    for (size_t i = 0; i < q->n_tracks; i++) {
        struct track *t = &q->tracks[i];
        if (t->partition != part || strcmp(q->topics[t->topic_idx], topic) != 0)
            continue;
        q->inflight -= t->count;
        free(t->offs);
        free(t->flags);
        q->tracks[i] = q->tracks[--q->n_tracks];
        return;
    }
}

/* ---- callbacks ---- */

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct kq *q = opaque;
    struct kq_pos p;
    int what;

    (void)rk;
    if (m->err) {
        q->st.delivery_failed++;
        set_fatal(q, "delivery failed", rd_kafka_err2str(m->err));
        return;
    }
    q->st.delivered++;
    if (m->_private == KQ_UNTRACKED)
        return;
    p = pos_unpack(m->_private, &what);
    kq_ack(q, &p, what);
}

/* Every commit's outcome (auto, async, sync): counted; a refusal is
 * normal during a rebalance (REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION):
 * those offsets are re-delivered, never skipped. */
static void commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    struct kq *q = opaque;

    (void)rk;
    (void)offsets;
    if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
        return;
    q->st.commits++;
    if (err) {
        q->st.commits_failed++;
        log_debug("offset commit refused: %s", rd_kafka_err2str(err));
    }
}

static void flush_and_commit(struct kq *q, int timeout_ms)
{
    rd_kafka_resp_err_t err;

    if (q->prod && rd_kafka_flush(q->prod, timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR)
        log_warn("flush: %d records still in flight after %d ms", rd_kafka_outq_len(q->prod),
                 timeout_ms);
    kq_store_offsets(q);
    err = rd_kafka_commit(q->cons, NULL, 0);
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        log_warn("commit: %s", rd_kafka_err2str(err));
}

static int is_cooperative(rd_kafka_t *rk)
{
    return strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
}

/* Takes the partitions: the whole new assignment (EAGER) or the added
 * ones (COOPERATIVE). Their fences are claimed before any message. */
static void rebalance_assign(struct kq *q, rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts)
{
    int coop = is_cooperative(rk);

    log_info("rebalance: assigned %d partition(s)%s%s", parts->cnt, coop ? " more" : "",
             q->paused ? ", paused" : "");
    /* The hook may ask whether the group committed offsets for a partition
     * (kq_assign_committed: a state store found empty then lost its data).
     * One bounded round trip to the coordinator per rebalance. */
    if (q->on_assign && parts->cnt > 0) {
        q->assign_committed = rd_kafka_topic_partition_list_copy(parts);
        if (rd_kafka_committed(rk, q->assign_committed, KQ_COMMITTED_TIMEOUT_MS)) {
            rd_kafka_topic_partition_list_destroy(q->assign_committed);
            q->assign_committed = NULL;
        }
    }
    for (int i = 0; q->on_assign && i < parts->cnt; i++)
        if (q->on_assign(parts->elems[i].topic, parts->elems[i].partition, q->assign_opaque))
            set_fatal(q, "assignment hook failed for", parts->elems[i].topic);
    if (q->assign_committed) {
        rd_kafka_topic_partition_list_destroy(q->assign_committed);
        q->assign_committed = NULL;
    }
    if (coop) {
        rd_kafka_error_t *er = rd_kafka_incremental_assign(rk, parts);
        if (er) {
            set_fatal(q, "incremental assign", rd_kafka_error_string(er));
            rd_kafka_error_destroy(er);
        }
        q->n_assigned += (size_t)parts->cnt;
    } else {
        rd_kafka_assign(rk, parts);
        q->n_assigned = (size_t)parts->cnt;
    }
    if (q->paused)
        rd_kafka_pause_partitions(rk, parts);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct kq *q = opaque;
    int coop = is_cooperative(rk);

    q->st.rebalances++;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        rebalance_assign(q, rk, parts);
        return;
    }
    if (rd_kafka_assignment_lost(rk)) {
        /* Another member may own these already: committing would be wrong. */
        log_warn("rebalance: assignment lost (%d partitions), not committing", parts->cnt);
    } else {
        /* Before the partitions are released: commit needs them assigned. */
        log_info("rebalance: revoking %d partition(s), committing", parts->cnt);
        flush_and_commit(q, 10000);
    }
    for (int i = 0; i < parts->cnt; i++) {
        track_drop(q, parts->elems[i].topic, parts->elems[i].partition);
        if (q->on_revoke)
            q->on_revoke(parts->elems[i].topic, parts->elems[i].partition, q->assign_opaque);
    }
    if (coop) {
        rd_kafka_error_t *er = rd_kafka_incremental_unassign(rk, parts);
        if (er) {
            log_warn("rebalance: incremental unassign: %s", rd_kafka_error_string(er));
            rd_kafka_error_destroy(er);
        }
        q->n_assigned -= (size_t)parts->cnt <= q->n_assigned ? (size_t)parts->cnt : q->n_assigned;
    } else {
        rd_kafka_assign(rk, NULL);
        q->n_assigned = 0;
    }
}

/* librdkafka statistics (statistics.interval.ms), served on the polling
 * thread; handed to the owner's callback (monitoring: consumer lag). */
static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    struct kq *q = opaque;

    (void)rk;
    if (q->stats_cb)
        q->stats_cb(json, len, q->stats_opaque);
    return 0; /* librdkafka frees json */
}

/* ---- open ---- */

static int conf_set(rd_kafka_conf_t *conf, const char *k, const char *v, const char *origin,
                    struct err *e)
{
    char es[256];

    if (rd_kafka_conf_set(conf, k, v, es, sizeof(es)) != RD_KAFKA_CONF_OK)
        return err_set(e, ERR_CONFIG, "config: kafka.%s (%s): %s", k, origin, es);
    return ERR_OK;
}

static rd_kafka_conf_t *make_conf(struct kq *q, const struct kq_opts *o, int consumer,
                                  struct err *e)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int rc = 0;

    rc |= conf_set(conf, "client.id", o->client_id ? o->client_id : "streamml", "default", e);
    if (consumer) {
        rc |= conf_set(conf, "auto.offset.reset", "earliest", "default", e);
        rc |= conf_set(conf, "enable.auto.commit", o->assign_all ? "false" : "true", "default", e);
        if (o->stats_cb)
            rc |= conf_set(conf, "statistics.interval.ms", "5000", "default", e);
        /* A backlog prefetched whole grows the fetch thread's heap in fresh
         * pages: with a 50,000-event backlog 0.1 page fault per event, 0.008
         * with this bound (issue 19). */
        if (o->prefetch_messages) {
            char v[32];
            snprintf(v, sizeof(v), "%zu", o->prefetch_messages);
            rc |= conf_set(conf, "queued.min.messages", v, "default", e);
            rc |= conf_set(conf, "queued.max.messages.kbytes", "16384", "default", e);
        }
    } else {
        rc |= conf_set(conf, "enable.idempotence", "true", "default", e);
        /* A worker produces a whole batch of records at once: waiting longer
         * for more only delays them (issue 19: latency). */
        rc |= conf_set(conf, "linger.ms", "1", "default", e);
    }
    for (size_t i = 0; !rc && i < o->n_props; i++)
        rc |= conf_set(conf, o->props[i].key, o->props[i].value, o->props[i].origin, e);
    /* Never negotiable: the offset is stored by us, after the acks. */
    if (consumer)
        rc |= conf_set(conf, "enable.auto.offset.store", "false", "streamml", e);
    if (consumer && o->assign_all)
        rc |= conf_set(conf, "enable.partition.eof", "true", "streamml", e);
    if (consumer && o->group_id)
        rc |= conf_set(conf, "group.id", o->group_id, "streamml", e);
    /* assign() needs a group id even though it never joins or commits. */
    if (consumer && !o->group_id && o->assign_all)
        rc |= conf_set(conf, "group.id", "streamml-assign-only", "streamml", e);
    if (rc) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_opaque(conf, q);
    if (consumer && !o->assign_all) {
        rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
        rd_kafka_conf_set_offset_commit_cb(conf, commit_cb);
    }
    if (!consumer)
        rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    if (consumer && o->stats_cb)
        rd_kafka_conf_set_stats_cb(conf, stats_cb);
    return conf;
}

/* Secret values are never compared (nor printed): only their keys. */
static int is_secret_key(const char *k)
{
    return strstr(k, "password") || strstr(k, "secret") || strstr(k, ".key") ||
           strstr(k, "token");
}

/* librdkafka refuses some settings only when the handle is created (an SSL
 * file that cannot be read, an unknown SASL mechanism), and its text may
 * name the value but not the key ("Unsupported SASL mechanism: FOO"): names
 * the property (and where it was set) whose key or value the text quotes.
 * Returns "" when none does. */
static const char *culprit(const struct kq_opts *o, const char *why, char *buf, size_t cap)
{
    for (int by_value = 0; by_value < 2; by_value++) /* a quoted key first */
        for (size_t i = 0; i < o->n_props; i++) {
            const char *k = o->props[i].key, *v = o->props[i].value;
            if (by_value ? !is_secret_key(k) && v && strlen(v) >= 3 && strstr(why, v)
                         : strstr(why, k) != NULL) {
                snprintf(buf, cap, " (kafka.%s, %s)", k, o->props[i].origin);
                return buf;
            }
        }
    return "";
}

static rd_kafka_t *make_handle(struct kq *q, const struct kq_opts *o, int consumer,
                               struct err *e)
{
    char es[512];
    rd_kafka_conf_t *conf = make_conf(q, o, consumer, e);
    rd_kafka_t *rk;

    if (!conf)
        return NULL;
    rk = rd_kafka_new(consumer ? RD_KAFKA_CONSUMER : RD_KAFKA_PRODUCER, conf, es, sizeof(es));
    if (!rk) {
        char who[300];
        rd_kafka_conf_destroy(conf);
        err_set(e, ERR_CONFIG, "kafka: %s%s", es, culprit(o, es, who, sizeof(who)));
        return NULL;
    }
    /* conf is now owned by rk */
    return rk;
}

int kq_check_props(const struct cfg_kv *props, size_t n, struct err *e)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int rc = ERR_OK;

    for (size_t i = 0; i < n && !rc; i++)
        rc = conf_set(conf, props[i].key, props[i].value, props[i].origin, e);
    rd_kafka_conf_destroy(conf);
    return rc;
}

static int assign_all(struct kq *q, struct err *e)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(64);
    int rc = ERR_OK;

    for (size_t t = 0; t < q->n_topics && !rc; t++) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(q->cons, q->topics[t], NULL);
        rd_kafka_resp_err_t err = rd_kafka_metadata(q->cons, 0, rkt, &md, 10000);

        if (err || md->topic_cnt != 1 || md->topics[0].err)
            rc = err_set(e, ERR_IO, "kafka: metadata for topic %s: %s", q->topics[t],
                         rd_kafka_err2str(err ? err : md->topic_cnt ? md->topics[0].err
                                                                     : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC));
        for (int p = 0; !rc && p < md->topics[0].partition_cnt; p++)
            rd_kafka_topic_partition_list_add(l, q->topics[t], md->topics[0].partitions[p].id)
                ->offset = q->from_beginning ? RD_KAFKA_OFFSET_BEGINNING : RD_KAFKA_OFFSET_END;
        if (md)
            rd_kafka_metadata_destroy(md);
        rd_kafka_topic_destroy(rkt);
    }
    q->n_assigned = (size_t)l->cnt;
    if (!rc) {
        rd_kafka_resp_err_t err = rd_kafka_assign(q->cons, l);
        if (err)
            rc = err_set(e, ERR_IO, "kafka: assign: %s", rd_kafka_err2str(err));
    }
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

static int start_consumer(struct kq *q, const struct kq_opts *o, struct err *e)
{
    rd_kafka_topic_partition_list_t *l;
    rd_kafka_resp_err_t err;

    q->cons = make_handle(q, o, 1, e);
    if (!q->cons)
        return e->code;
    rd_kafka_poll_set_consumer(q->cons);
    if (o->assign_all)
        return assign_all(q, e);
    l = rd_kafka_topic_partition_list_new((int)q->n_topics);
    for (size_t i = 0; i < q->n_topics; i++)
        rd_kafka_topic_partition_list_add(l, q->topics[i], RD_KAFKA_PARTITION_UA);
    err = rd_kafka_subscribe(q->cons, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (err)
        return err_set(e, ERR_IO, "kafka: subscribe: %s", rd_kafka_err2str(err));
    return ERR_OK;
}

struct kq *kq_open(const struct kq_opts *o, struct err *e)
{
    struct kq *q = calloc(1, sizeof(*q));

    if (!q) {
        err_set(e, ERR_NOMEM, "kafka: out of memory");
        return NULL;
    }
    if (o->n_topics > KQ_MAX_TOPICS) {
        err_set(e, ERR_CONFIG, "kafka: at most %d input topics", KQ_MAX_TOPICS);
        goto fail;
    }
    q->assign_all = o->assign_all;
    q->from_beginning = o->from_beginning;
    q->stats_cb = o->stats_cb;
    q->stats_opaque = o->stats_opaque;
    q->on_assign = o->on_assign;
    q->on_revoke = o->on_revoke;
    q->assign_opaque = o->assign_opaque;
    q->commit_interval_ms = o->commit_interval_ms > 0 ? o->commit_interval_ms : 0;
    for (size_t i = 0; i < o->n_topics; i++)
        if (!(q->topics[q->n_topics++] = strdup(o->topics[i])))
            goto fail;
    q->prod = make_handle(q, o, 0, e);
    if (!q->prod)
        goto fail;
    if (o->n_topics && start_consumer(q, o, e))
        goto fail;
    return q;
fail:
    kq_close(q, 0, NULL);
    return NULL;
}

/* ---- the loop ---- */

static int topic_index(const struct kq *q, const char *topic)
{
    for (size_t i = 0; i < q->n_topics; i++)
        if (strcmp(q->topics[i], topic) == 0)
            return (int)i;
    return -1;
}

/* A consumer-side event delivered as a message: EOF or an error. */
static int handle_event(struct kq *q, rd_kafka_message_t *rm, struct err *e)
{
    int rc = ERR_OK;

    if (rm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        q->n_eof++;
    } else if (rm->err == RD_KAFKA_RESP_ERR__FATAL) {
        rc = err_set(e, ERR_FATAL, "kafka: fatal consumer error: %s",
                     rd_kafka_message_errstr(rm));
    } else {
        q->st.consumer_errors++;
        log_warn("kafka consumer: %s [%d]: %s",
                 rm->rkt ? rd_kafka_topic_name(rm->rkt) : "-", (int)rm->partition,
                 rd_kafka_message_errstr(rm));
    }
    rd_kafka_message_destroy(rm);
    return rc;
}

static struct kq_msg *wrap(struct kq *q, rd_kafka_message_t *rm, int tidx)
{
    struct kq_box *b = q->boxes;
    struct kq_msg *m;

    if (b)
        q->boxes = b->next;
    else if (!(b = malloc(sizeof(*b))))
        return NULL;
    b->q = q;
    m = &b->m;
    m->topic = rd_kafka_topic_name(rm->rkt);
    m->partition = rm->partition;
    m->offset = rm->offset;
    m->timestamp_ms = rd_kafka_message_timestamp(rm, NULL);
    m->key = rm->key;
    m->key_len = rm->key_len;
    m->payload = rm->payload;
    m->len = rm->len;
    m->pos.topic_idx = tidx;
    m->pos.partition = rm->partition;
    m->pos.offset = rm->offset;
    m->priv = rm;
    return m;
}

int kq_poll(struct kq *q, int timeout_ms, struct kq_msg **out, struct err *e)
{
    rd_kafka_message_t *rm;
    int tidx;

    *out = NULL;
    if (q->fatal)
        return err_set(e, ERR_FATAL, "kafka: %s", q->fatal_msg);
    kq_store_offsets(q);
    maybe_commit(q);
    rm = rd_kafka_consumer_poll(q->cons, timeout_ms);
    if (!rm)
        return ERR_OK;
    if (rm->err)
        return handle_event(q, rm, e);
    if (q->paused && !q->assign_all) {
        /* librdkafka drops what was fetched before the pause; should a
         * message slip through anyway, rewind to it so that it is fetched
         * again after the resume, rather than take it without room. */
        rd_kafka_seek(rm->rkt, rm->partition, rm->offset, 0);
        rd_kafka_message_destroy(rm);
        return ERR_OK;
    }
    tidx = topic_index(q, rd_kafka_topic_name(rm->rkt));
    *out = wrap(q, rm, tidx < 0 ? 0 : tidx);
    if (!*out) {
        rd_kafka_message_destroy(rm);
        return err_set(e, ERR_NOMEM, "kafka: out of memory");
    }
    q->st.polled++;
    if (!q->assign_all && track_push(q, &(*out)->pos)) {
        kq_msg_release(*out);
        *out = NULL;
        return err_set(e, ERR_NOMEM, "kafka: out of memory tracking offsets");
    }
    return ERR_OK;
}

void kq_msg_release(struct kq_msg *m)
{
    struct kq_box *b = (struct kq_box *)m;

    if (!m)
        return;
    rd_kafka_message_destroy(m->priv);
    b->next = b->q->boxes;
    b->q->boxes = b;
}

int kq_produce(struct kq *q, const char *topic, const void *key, size_t key_len,
               const void *val, size_t val_len, const struct kq_pos *src, struct err *e)
{
    return kq_produce_ack(q, topic, key, key_len, val, val_len, src, KQ_ACK_DELIVERED, e);
}

/* The producer's handle of topic (made once; NULL when out of room or
 * memory: the record is then produced by name). */
static rd_kafka_topic_t *prod_topic(struct kq *q, const char *topic)
{
    rd_kafka_topic_t *rkt;
    char *name;

    for (size_t i = 0; i < q->n_ptopics; i++)
        if (strcmp(q->ptopics[i].name, topic) == 0)
            return q->ptopics[i].rkt;
    if (q->n_ptopics == KQ_MAX_TOPICS || !(name = strdup(topic)))
        return NULL;
    if (!(rkt = rd_kafka_topic_new(q->prod, topic, NULL))) {
        free(name);
        return NULL;
    }
    q->ptopics[q->n_ptopics].name = name;
    q->ptopics[q->n_ptopics++].rkt = rkt;
    return rkt;
}

void kq_prod_topics_free(struct kq *q)
{
    for (size_t i = 0; i < q->n_ptopics; i++) {
        rd_kafka_topic_destroy(q->ptopics[i].rkt);
        free(q->ptopics[i].name);
    }
    q->n_ptopics = 0;
}

int kq_produce_ack(struct kq *q, const char *topic, const void *key, size_t key_len,
                   const void *val, size_t val_len, const struct kq_pos *src, int what,
                   struct err *e)
{
    void *opaque = src && !q->assign_all ? pos_pack(src, what) : KQ_UNTRACKED;
    rd_kafka_topic_t *rkt = prod_topic(q, topic);

    for (;;) {
        /* RD_KAFKA_MSG_F_COPY: librdkafka allocates the record with its
         * payload inline (one allocation either way), so F_FREE would only
         * move that allocation here. */
        rd_kafka_resp_err_t err =
            rkt ? rd_kafka_producev(q->prod, RD_KAFKA_V_RKT(rkt),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                    RD_KAFKA_V_KEY((void *)key, key_len),
                                    RD_KAFKA_V_VALUE((void *)val, val_len),
                                    RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END)
                : rd_kafka_producev(q->prod, RD_KAFKA_V_TOPIC(topic),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                    RD_KAFKA_V_KEY((void *)key, key_len),
                                    RD_KAFKA_V_VALUE((void *)val, val_len),
                                    RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
        if (!err) {
            q->st.produced++;
            return ERR_OK;
        }
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            return err_set(e, ERR_IO, "kafka: produce to %s: %s", topic, rd_kafka_err2str(err));
        /* Back-pressure: wait for delivery reports to make room. */
        rd_kafka_poll(q->prod, 100);
        if (q->fatal)
            return err_set(e, ERR_FATAL, "kafka: %s", q->fatal_msg);
    }
}

int kq_flush(struct kq *q, int timeout_ms, struct err *e)
{
    if (q->prod && rd_kafka_flush(q->prod, timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return err_set(e, ERR_RETRY, "kafka: %d record(s) still in flight after %d ms",
                       rd_kafka_outq_len(q->prod), timeout_ms);
    if (q->fatal)
        return err_set(e, ERR_FATAL, "kafka: %s", q->fatal_msg);
    return ERR_OK;
}

int kq_serve(struct kq *q, int timeout_ms, struct err *e)
{
    rd_kafka_poll(q->prod, timeout_ms);
    kq_store_offsets(q);
    maybe_commit(q);
    if (q->fatal)
        return err_set(e, ERR_FATAL, "kafka: %s", q->fatal_msg);
    return ERR_OK;
}

int kq_pause(struct kq *q, int paused, struct err *e)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    rd_kafka_resp_err_t err;

    paused = !!paused;
    if (q->paused == paused)
        return ERR_OK;
    err = rd_kafka_assignment(q->cons, &parts);
    if (!err)
        err = paused ? rd_kafka_pause_partitions(q->cons, parts)
                     : rd_kafka_resume_partitions(q->cons, parts);
    if (parts)
        rd_kafka_topic_partition_list_destroy(parts);
    if (err)
        return err_set(e, ERR_IO, "kafka: %s: %s", paused ? "pause" : "resume",
                       rd_kafka_err2str(err));
    q->paused = paused;
    log_info("consumption %s", paused ? "paused (queues full)" : "resumed");
    return ERR_OK;
}

int kq_paused(const struct kq *q)
{
    return q->paused;
}

int kq_assign_committed(const struct kq *q, const char *topic, int32_t partition)
{
    const rd_kafka_topic_partition_t *tp;

    if (!q->assign_committed)
        return -1;
    tp = rd_kafka_topic_partition_list_find(q->assign_committed, topic, partition);
    if (!tp || tp->err)
        return -1;
    return tp->offset >= 0;
}

size_t kq_assigned(const struct kq *q)
{
    return q->n_assigned;
}

size_t kq_inflight(const struct kq *q)
{
    return q->inflight;
}

int kq_at_end(const struct kq *q)
{
    return q->assign_all && q->n_eof >= q->n_assigned;
}

void kq_get_stats(const struct kq *q, struct kq_stats *s)
{
    *s = q->st;
}

int64_t kq_topic_size(struct kq *q, const char *topic, int timeout_ms, struct err *e)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_t *rk = q->prod;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
    int64_t total = 0;

    if (err || md->topic_cnt != 1 || md->topics[0].err) {
        err_set(e, ERR_IO, "kafka: metadata for %s: %s", topic,
                rd_kafka_err2str(err ? err : md->topics[0].err));
        total = -1;
    }
    for (int p = 0; total >= 0 && p < md->topics[0].partition_cnt; p++) {
        int64_t lo, hi;
        err = rd_kafka_query_watermark_offsets(rk, topic, md->topics[0].partitions[p].id, &lo,
                                               &hi, timeout_ms);
        if (err) {
            err_set(e, ERR_IO, "kafka: watermarks %s [%d]: %s", topic, p, rd_kafka_err2str(err));
            total = -1;
        } else {
            total += hi;
        }
    }
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return total;
}
