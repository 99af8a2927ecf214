#include "replay.h"
#include "redis_cluster.h"
#include "redis_conn.h"
#include "txn_input.h"

#include <ctype.h>
#include <errno.h>
#include <hiredis.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define META_TIMEOUT_MS 10000
/* A partition not at its end offset that yields nothing for this long
 * fails the run: the range cannot be read completely. */
#define STALL_MS 30000

/* ---- bounds ---- */

static int parse_ms(const char *s, int64_t *out)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 0)
        return -1;
    *out = v;
    return 0;
}

/* ISO-8601: date, optional Thh:mm[:ss[.fff]], optional Z or +-hh:mm. */
static int parse_iso(const char *s, int64_t *out)
{
    struct tm tm = {0};
    int y, mo, d, h = 0, mi = 0, sec = 0, n = 0, ms = 0, tzh = 0, tzm = 0, sign = 0;
    const char *p;

    if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3 || n != 10)
        return -1;
    p = s + n;
    if (*p == 'T' || *p == ' ') {
        if (sscanf(p + 1, "%2d:%2d%n", &h, &mi, &n) != 2 || n != 5)
            return -1;
        p += 1 + n;
        if (*p == ':') {
            if (!isdigit((unsigned char)p[1]) || !isdigit((unsigned char)p[2]))
                return -1;
            sec = (p[1] - '0') * 10 + (p[2] - '0');
            p += 3;
            if (*p == '.') {
                int digits = 0;
                for (p++; isdigit((unsigned char)*p); p++, digits++)
                    if (digits < 3)
                        ms = ms * 10 + (*p - '0');
                if (digits == 0)
                    return -1;
                for (; digits < 3; digits++)
                    ms *= 10;
            }
        }
        if (*p == 'Z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            sign = *p == '-' ? -1 : 1;
            if (sscanf(p + 1, "%2d:%2d%n", &tzh, &tzm, &n) != 2 || n != 5)
                return -1;
            p += 1 + n;
        }
    }
    if (*p || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 || tzh > 23 ||
        tzm > 59 || y < 1970)
        return -1;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    *out = ((int64_t)timegm(&tm) - sign * (int64_t)(tzh * 3600 + tzm * 60)) * 1000 + ms;
    return 0;
}

int rp_parse_bound(const char *s, struct rp_bound *b, struct err *e)
{
    b->kind = RP_EDGE;
    b->v = 0;
    if (!s || !*s)
        return ERR_OK;
    if (strncmp(s, "offset:", 7) == 0) {
        b->kind = RP_OFFSET;
        if (parse_ms(s + 7, &b->v))
            return err_set(e, ERR_CONFIG, "\"%s\": expected offset:N with N >= 0", s);
        return ERR_OK;
    }
    b->kind = RP_TIME;
    if (parse_ms(s, &b->v) == 0 || parse_iso(s, &b->v) == 0)
        return ERR_OK;
    return err_set(e, ERR_CONFIG,
                   "\"%s\": expected an ISO-8601 time (2024-03-01T12:00:00Z), ms since the "
                   "epoch, or offset:N",
                   s);
}

/* ---- topic ranges ---- */

struct rp_topic {
    rd_kafka_t *rk;
    const struct cfg_kv *props; /* borrowed, for the time-scan consumer */
    size_t nprops;
    char *name;
    struct rp_part *parts;
    rd_kafka_queue_t **queues; /* one per partition, not forwarded */
    int64_t *next;             /* next offset expected per partition */
    rd_kafka_message_t **held; /* the message handed out last, per partition */
    size_t n;
};

static rd_kafka_t *open_consumer(const struct cfg_kv *props, size_t nprops, struct err *e)
{
    char es[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* No group: assign() only, nothing committed anywhere. A start offset
     * that retention removed is an error, not a silent jump. */
    static const char *const fixed[][2] = {{"enable.auto.commit", "false"},
                                           {"enable.auto.offset.store", "false"},
                                           {"enable.partition.eof", "false"},
                                           {"auto.offset.reset", "error"},
                                           {"client.id", "streamml-replay"},
                                           /* assign() wants a group id; nothing
                                            * joins it or commits to it. */
                                           {"group.id", "streamml-replay-assign-only"}};
    rd_kafka_t *rk;

    for (size_t i = 0; i < nprops; i++) {
        if (strcmp(props[i].key, "group.id") == 0)
            continue; /* a replay never joins the worker's group */
        if (rd_kafka_conf_set(conf, props[i].key, props[i].value, es, sizeof(es))) {
            err_set(e, ERR_CONFIG, "kafka: %s (%s)", es, props[i].origin);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (rd_kafka_conf_set(conf, fixed[i][0], fixed[i][1], es, sizeof(es))) {
            err_set(e, ERR_CONFIG, "kafka: %s", es);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    if (!(rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, es, sizeof(es)))) {
        err_set(e, ERR_CONFIG, "kafka: %s", es);
        return NULL;
    }
    return rk;
}

/* Partition ids of topic, ascending. */
static int list_partitions(rd_kafka_t *rk, const char *topic, int32_t **ids, size_t *n,
                           struct err *e)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t err;
    int rc = ERR_OK;

    if (!rkt)
        return err_set(e, ERR_NOMEM, "topic %s: %s", topic,
                       rd_kafka_err2str(rd_kafka_last_error()));
    err = rd_kafka_metadata(rk, 0, rkt, &md, META_TIMEOUT_MS);
    rd_kafka_topic_destroy(rkt);
    if (err)
        return err_set(e, ERR_IO, "topic %s: metadata: %s", topic, rd_kafka_err2str(err));
    if (md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt == 0) {
        rc = err_set(e, ERR_CONFIG, "topic %s: %s", topic,
                     md->topic_cnt == 1 && md->topics[0].err ? rd_kafka_err2str(md->topics[0].err)
                                                             : "no partitions");
    } else {
        *n = (size_t)md->topics[0].partition_cnt;
        *ids = calloc(*n, sizeof(**ids));
        if (!*ids)
            rc = err_set(e, ERR_NOMEM, "out of memory");
        for (size_t i = 0; *ids && i < *n; i++)
            (*ids)[i] = md->topics[0].partitions[i].id;
    }
    rd_kafka_metadata_destroy(md);
    if (rc == ERR_OK) {
        /* Ascending ids: the merge's tie-break order. */
        for (size_t i = 1; i < *n; i++)
            for (size_t j = i; j > 0 && (*ids)[j - 1] > (*ids)[j]; j--) {
                int32_t tmp = (*ids)[j];
                (*ids)[j] = (*ids)[j - 1];
                (*ids)[j - 1] = tmp;
            }
    }
    return rc;
}

/* One message of partition i at offset, read with a throw-away simple
 * consumer (the main handle is not assigned yet); its timestamp in *ts. */
static int read_ts(struct rp_topic *t, rd_kafka_t *rk, rd_kafka_topic_t *rkt, size_t i,
                   int64_t offset, int64_t *ts, int64_t *got, struct err *e)
{
    const struct rp_part *p = &t->parts[i];
    rd_kafka_message_t *m = NULL;
    int waited = 0;

    (void)rk;
    while (!m && waited < STALL_MS) {
        m = rd_kafka_consume(rkt, p->partition, 100);
        waited += 100;
        if (m && (m->err || m->offset < offset)) {
            int bad = m->err != 0;
            if (bad)
                err_set(e, ERR_IO, "topic %s [%d] @ %lld: %s", t->name, (int)p->partition,
                        (long long)offset, rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            m = NULL;
            if (bad)
                return e->code;
        }
    }
    if (!m)
        return err_set(e, ERR_TIMEOUT, "topic %s [%d]: no message at offset %lld", t->name,
                       (int)p->partition, (long long)offset);
    *ts = rd_kafka_message_timestamp(m, NULL);
    *got = m->offset; /* past offset where compaction left a gap */
    rd_kafka_message_destroy(m);
    return ERR_OK;
}

/* The broker said no message has a timestamp >= ms (offset -1). Real
 * brokers are right (checked on the last message: then the bound is the
 * high watermark, nothing scanned); librdkafka's mock cluster, the
 * embedded broker, answers -1 to every time query, and then the partition
 * is scanned from its start for the first timestamp >= ms. */
static int check_none_after(struct rp_topic *t, size_t i, int64_t ms, int64_t *out, struct err *e)
{
    const struct rp_part *p = &t->parts[i];
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;
    int64_t ts = -1, off, got = -1;
    int rc;

    *out = p->high;
    if (p->low >= p->high)
        return ERR_OK;
    if (!(rk = open_consumer(t->props, t->nprops, e)))
        return e->code;
    if (!(rkt = rd_kafka_topic_new(rk, t->name, NULL))) {
        rd_kafka_destroy(rk);
        return err_set(e, ERR_NOMEM, "topic %s: out of memory", t->name);
    }
    off = p->high - 1;
    rc = rd_kafka_consume_start(rkt, p->partition, off) ? ERR_IO : ERR_OK;
    if (rc == ERR_OK && (rc = read_ts(t, rk, rkt, i, off, &ts, &got, e)) == ERR_OK && ts >= ms) {
        rd_kafka_consume_stop(rkt, p->partition);
        rc = rd_kafka_consume_start(rkt, p->partition, p->low) ? ERR_IO : ERR_OK;
        for (off = p->low; rc == ERR_OK && off < p->high; off = got + 1)
            if ((rc = read_ts(t, rk, rkt, i, off, &ts, &got, e)) == ERR_OK && ts >= ms)
                break;
        *out = rc == ERR_OK && off < p->high ? got : p->high;
    }
    if (rc == ERR_IO && !e->msg[0])
        err_set(e, ERR_IO, "topic %s [%d]: %s", t->name, (int)p->partition,
                rd_kafka_err2str(rd_kafka_last_error()));
    rd_kafka_consume_stop(rkt, p->partition);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    return rc;
}

/* The offset of a time bound in every partition: the first offset whose
 * timestamp is >= the time (offsetsForTimes), the high watermark if none. */
static int offsets_for_time(struct rp_topic *t, int64_t ms, int64_t *out, struct err *e)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)t->n);
    rd_kafka_resp_err_t err;
    int rc = ERR_OK;

    for (size_t i = 0; i < t->n; i++)
        rd_kafka_topic_partition_list_add(l, t->name, t->parts[i].partition)->offset = ms;
    err = rd_kafka_offsets_for_times(t->rk, l, META_TIMEOUT_MS);
    if (err)
        rc = err_set(e, ERR_IO, "topic %s: offsets for time %lld: %s", t->name, (long long)ms,
                     rd_kafka_err2str(err));
    for (size_t i = 0; rc == ERR_OK && i < t->n; i++) {
        const rd_kafka_topic_partition_t *p = &l->elems[i];
        if (p->err)
            rc = err_set(e, ERR_IO, "topic %s [%d]: offsets for time %lld: %s", t->name,
                         (int)p->partition, (long long)ms, rd_kafka_err2str(p->err));
        else if (p->offset >= 0)
            out[i] = p->offset;
        else
            rc = check_none_after(t, i, ms, &out[i], e);
    }
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

static int64_t clamp(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* Bound -> offset per partition, into start (from) or end (to). */
static int resolve_bound(struct rp_topic *t, const struct rp_bound *b, int is_end, struct err *e)
{
    int64_t *tmp = calloc(t->n + 1, sizeof(*tmp));
    int rc = ERR_OK;

    if (!tmp)
        return err_set(e, ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < t->n; i++)
        tmp[i] = b->kind == RP_OFFSET ? b->v : is_end ? t->parts[i].high : t->parts[i].low;
    if (b->kind == RP_TIME)
        rc = offsets_for_time(t, b->v, tmp, e);
    for (size_t i = 0; rc == ERR_OK && i < t->n; i++) {
        struct rp_part *p = &t->parts[i];
        int64_t v = clamp(tmp[i], p->low, p->high);
        if (is_end)
            p->end = v;
        else
            p->start = v;
    }
    free(tmp);
    return rc;
}

static int resolve(struct rp_topic *t, const int32_t *only, size_t nonly, struct err *e)
{
    int32_t *ids = NULL;
    size_t n = 0;
    int rc;

    if ((rc = list_partitions(t->rk, t->name, &ids, &n, e)))
        return rc;
    t->parts = calloc(n, sizeof(*t->parts));
    if (!t->parts) {
        free(ids);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        int keep = nonly == 0;
        for (size_t j = 0; j < nonly; j++)
            keep |= only[j] == ids[i];
        if (keep)
            t->parts[t->n++].partition = ids[i];
    }
    for (size_t j = 0; j < nonly; j++) {
        size_t i = 0;
        while (i < n && ids[i] != only[j])
            i++;
        if (i == n)
            rc = err_set(e, ERR_CONFIG, "topic %s has no partition %d (it has %zu)", t->name,
                         (int)only[j], n);
    }
    free(ids);
    for (size_t i = 0; rc == ERR_OK && i < t->n; i++) {
        struct rp_part *p = &t->parts[i];
        rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
            t->rk, t->name, p->partition, &p->low, &p->high, META_TIMEOUT_MS);
        if (err)
            rc = err_set(e, ERR_IO, "topic %s [%d]: watermarks: %s", t->name, (int)p->partition,
                         rd_kafka_err2str(err));
    }
    return rc;
}

static int assign(struct rp_topic *t, struct err *e)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)t->n);
    rd_kafka_resp_err_t err;

    t->queues = calloc(t->n, sizeof(*t->queues));
    t->next = calloc(t->n, sizeof(*t->next));
    t->held = calloc(t->n, sizeof(*t->held));
    if (!t->queues || !t->next || !t->held) {
        rd_kafka_topic_partition_list_destroy(l);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < t->n; i++) {
        t->next[i] = t->parts[i].start;
        if (t->parts[i].start < t->parts[i].end)
            rd_kafka_topic_partition_list_add(l, t->name, t->parts[i].partition)->offset =
                t->parts[i].start;
    }
    /* Each partition is read from its own queue, so the merge pulls the
     * partition whose head it needs. The queues stop forwarding to the
     * consumer queue before assign(): nothing fetched can land elsewhere
     * (an application-set forward is kept by librdkafka at fetch start). */
    for (size_t i = 0; i < t->n; i++) {
        if (t->parts[i].start >= t->parts[i].end)
            continue;
        t->queues[i] = rd_kafka_queue_get_partition(t->rk, t->name, t->parts[i].partition);
        if (!t->queues[i]) {
            rd_kafka_topic_partition_list_destroy(l);
            return err_set(e, ERR_IO, "topic %s [%d]: no partition queue", t->name,
                           (int)t->parts[i].partition);
        }
        rd_kafka_queue_forward(t->queues[i], NULL);
    }
    if (l->cnt && (err = rd_kafka_assign(t->rk, l))) {
        rd_kafka_topic_partition_list_destroy(l);
        return err_set(e, ERR_IO, "topic %s: assign: %s", t->name, rd_kafka_err2str(err));
    }
    rd_kafka_topic_partition_list_destroy(l);
    return ERR_OK;
}

struct rp_topic *rp_topic_open(const struct cfg_kv *props, size_t nprops, const char *topic,
                               const struct rp_bound *from, const struct rp_bound *to,
                               const int32_t *only, size_t nonly, int dry_run, struct err *e)
{
    struct rp_topic *t = calloc(1, sizeof(*t));

    if (!t || !(t->name = strdup(topic))) {
        free(t);
        err_set(e, ERR_NOMEM, "out of memory");
        return NULL;
    }
    t->props = props;
    t->nprops = nprops;
    if (!(t->rk = open_consumer(props, nprops, e)) || resolve(t, only, nonly, e) ||
        resolve_bound(t, from, 0, e) || resolve_bound(t, to, 1, e))
        goto fail;
    for (size_t i = 0; i < t->n; i++)
        if (t->parts[i].end < t->parts[i].start)
            t->parts[i].end = t->parts[i].start; /* an empty range, not an error */
    if (!dry_run && assign(t, e))
        goto fail;
    return t;
fail:
    rp_topic_close(t);
    return NULL;
}

void rp_topic_close(struct rp_topic *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++) {
        if (t->held && t->held[i])
            rd_kafka_message_destroy(t->held[i]);
        if (t->queues && t->queues[i])
            rd_kafka_queue_destroy(t->queues[i]);
    }
    if (t->rk) {
        rd_kafka_assign(t->rk, NULL);
        rd_kafka_consumer_close(t->rk);
        rd_kafka_destroy(t->rk);
    }
    free(t->queues);
    free(t->next);
    free(t->held);
    free(t->parts);
    free(t->name);
    free(t);
}

size_t rp_topic_parts(const struct rp_topic *t, const struct rp_part **parts)
{
    *parts = t->parts;
    return t->n;
}

int64_t rp_topic_total(const struct rp_topic *t)
{
    int64_t n = 0;

    for (size_t i = 0; i < t->n; i++)
        n += t->parts[i].end - t->parts[i].start;
    return n;
}

/* Next message of partition i, or NULL at its end offset. */
static int topic_next(struct rp_topic *t, size_t i, rd_kafka_message_t **out, struct err *e)
{
    const struct rp_part *p = &t->parts[i];
    int waited = 0;

    if (t->held[i]) {
        rd_kafka_message_destroy(t->held[i]);
        t->held[i] = NULL;
    }
    *out = NULL;
    while (t->next[i] < p->end) {
        rd_kafka_message_t *m = rd_kafka_consume_queue(t->queues[i], 100);
        if (!m) {
            if ((waited += 100) >= STALL_MS)
                return err_set(e, ERR_TIMEOUT,
                               "topic %s [%d]: nothing past offset %lld within %d s (range "
                               "end %lld)",
                               t->name, (int)p->partition, (long long)t->next[i], STALL_MS / 1000,
                               (long long)p->end);
            continue;
        }
        if (m->err) {
            int rc = err_set(e, ERR_IO, "topic %s [%d] @ %lld: %s", t->name, (int)p->partition,
                             (long long)t->next[i], rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            return rc;
        }
        if (m->offset < t->next[i]) { /* a re-fetch: already handed out */
            rd_kafka_message_destroy(m);
            continue;
        }
        t->next[i] = m->offset + 1;
        if (m->offset >= p->end) {
            rd_kafka_message_destroy(m);
            break;
        }
        t->held[i] = *out = m;
        return ERR_OK;
    }
    t->next[i] = p->end;
    return ERR_OK;
}

/* ---- merged input ---- */

struct stream {
    struct rp_rec rec; /* the head, when has_head */
    int has_head, done;
    struct codec_file *file;
    char *path;
    int64_t nread;
};

struct rp_input {
    struct codec *cd;
    enum rp_stream kind;
    struct rp_topic *topic;
    struct stream *s;
    size_t n;
    size_t *heap; /* stream indices with a head, min-heap */
    size_t nheap;
    size_t last; /* the stream handed out last: refilled on the next call */
    int pending;
    struct txi *txi; /* a spec on its own record: slot = stream (its head's row) */
};

static int64_t key_time(const struct rp_input *in, const struct rp_rec *r)
{
    if (r->rc != ERR_OK)
        return INT64_MIN;
    switch (in->kind) {
    case RP_CLICKSTREAM:
        return r->click.event_time_ms;
    case RP_IMAGES:
        return r->img.event_time_ms;
    default:
        return r->ev.event_time_ms;
    }
}

static int rec_less(const struct rp_input *in, size_t a, size_t b)
{
    const struct rp_rec *x = &in->s[a].rec, *y = &in->s[b].rec;
    int64_t tx = key_time(in, x), ty = key_time(in, y);

    if (tx != ty)
        return tx < ty;
    if (a != b)
        return a < b; /* stream index = partition (file) order */
    return x->offset < y->offset;
}

static void heap_push(struct rp_input *in, size_t si)
{
    size_t i = in->nheap++;

    in->heap[i] = si;
    while (i > 0 && rec_less(in, in->heap[i], in->heap[(i - 1) / 2])) {
        size_t p = (i - 1) / 2, tmp = in->heap[p];
        in->heap[p] = in->heap[i];
        in->heap[i] = tmp;
        i = p;
    }
}

static size_t heap_pop(struct rp_input *in)
{
    size_t top = in->heap[0], i = 0;

    in->heap[0] = in->heap[--in->nheap];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < in->nheap && rec_less(in, in->heap[l], in->heap[m]))
            m = l;
        if (r < in->nheap && rec_less(in, in->heap[r], in->heap[m]))
            m = r;
        if (m == i)
            break;
        size_t tmp = in->heap[m];
        in->heap[m] = in->heap[i];
        in->heap[i] = tmp;
        i = m;
    }
    return top;
}

/* Decodes and validates; a bad record keeps its reason, never stops the run. */
static void check_rec(const struct rp_input *in, struct rp_rec *r, int rc)
{
    if (rc == ERR_OK && in->kind == RP_TRANSACTIONS && !in->txi) /* txi_decode validates */
        rc = feat_txn_validate(&r->ev, &r->err);
    r->rc = rc;
}

static int decode_msg(struct rp_input *in, size_t si, struct rp_rec *r, const void *msg,
                      size_t len)
{
    if (in->txi)
        return txi_decode(in->txi, si, msg, len, &r->ev, &r->err);
    switch (in->kind) {
    case RP_CLICKSTREAM:
        return codec_decode_click_event(in->cd, msg, len, &r->click, &r->err);
    case RP_IMAGES:
        return codec_decode_image_event(in->cd, msg, len, &r->img, &r->err);
    default:
        return codec_decode_txn(in->cd, msg, len, &r->ev, &r->err);
    }
}

static int read_file(struct rp_input *in, struct stream *s, struct rp_rec *r)
{
    switch (in->kind) {
    case RP_CLICKSTREAM:
        return codec_file_read_click(s->file, &r->click, &r->err);
    case RP_IMAGES:
        return codec_file_read_image_event(s->file, &r->img, &r->err);
    default:
        return codec_file_read_txn(s->file, &r->ev, &r->err);
    }
}

/* The container schema of a stream's files. */
static enum codec_schema file_schema(enum rp_stream kind)
{
    switch (kind) {
    case RP_CLICKSTREAM:
        return CODEC_CLICK_EVENT;
    case RP_IMAGES:
        return CODEC_IMAGE_EVENT;
    default:
        return CODEC_TXN_EVENT;
    }
}

/* Reads stream si's next record into its head; done at its end. */
static int refill(struct rp_input *in, size_t si, struct err *e)
{
    struct stream *s = &in->s[si];
    struct rp_rec *r = &s->rec;
    int rc;

    s->has_head = 0;
    if (s->done)
        return ERR_OK;
    err_clear(&r->err);
    if (in->topic) {
        rd_kafka_message_t *m;
        if ((rc = topic_next(in->topic, si, &m, e)))
            return rc;
        if (!m) {
            s->done = 1;
            return ERR_OK;
        }
        r->source = in->topic->name;
        r->partition = m->partition;
        r->offset = m->offset;
        r->timestamp_ms = rd_kafka_message_timestamp(m, NULL);
        check_rec(in, r, decode_msg(in, si, r, m->payload, m->len));
    } else {
        rc = read_file(in, s, r);
        if (rc == 0) {
            s->done = 1;
            return ERR_OK;
        }
        if (rc == ERR_IO)
            return err_set(e, ERR_IO, "%s", r->err.msg);
        r->source = s->path;
        r->partition = (int32_t)si;
        r->offset = s->nread++;
        r->timestamp_ms = -1;
        check_rec(in, r, rc < 0 ? rc : ERR_OK);
    }
    s->has_head = 1;
    heap_push(in, si);
    return ERR_OK;
}

static struct rp_input *input_new(struct codec *cd, enum rp_stream kind, size_t n, struct err *e)
{
    struct rp_input *in = calloc(1, sizeof(*in));

    if (in) {
        in->cd = cd;
        in->kind = kind;
        in->n = n;
        in->s = calloc(n + 1, sizeof(*in->s));
        in->heap = calloc(n + 1, sizeof(*in->heap));
    }
    if (!in || !in->s || !in->heap) {
        rp_input_close(in);
        err_set(e, ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (kind == RP_TRANSACTIONS && feat_txn_reads_rec() && !(in->txi = txi_open(cd, n + 1, e))) {
        rp_input_close(in);
        return NULL;
    }
    return in;
}

static int prime(struct rp_input *in, struct err *e)
{
    for (size_t i = 0; i < in->n; i++)
        if (refill(in, i, e))
            return e->code;
    return ERR_OK;
}

struct rp_input *rp_input_topic(struct codec *cd, struct rp_topic *t, struct err *e)
{
    return rp_input_topic_of(cd, t, RP_TRANSACTIONS, e);
}

struct rp_input *rp_input_topic_of(struct codec *cd, struct rp_topic *t, enum rp_stream kind,
                                   struct err *e)
{
    struct rp_input *in = input_new(cd, kind, t->n, e);

    if (!in) {
        rp_topic_close(t);
        return NULL;
    }
    in->topic = t;
    if (prime(in, e)) {
        rp_input_close(in);
        return NULL;
    }
    return in;
}

struct rp_input *rp_input_files(struct codec *cd, const char *const *paths, size_t n, struct err *e)
{
    return rp_input_files_of(cd, paths, n, RP_TRANSACTIONS, e);
}

struct rp_input *rp_input_files_of(struct codec *cd, const char *const *paths, size_t n,
                                   enum rp_stream kind, struct err *e)
{
    struct rp_input *in;

    if (!(in = input_new(cd, kind, n, e)))
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (!(in->s[i].path = strdup(paths[i]))) {
            err_set(e, ERR_NOMEM, "out of memory");
            goto fail;
        }
        if (!(in->s[i].file = codec_file_open_read_as(cd, paths[i], file_schema(kind), e)))
            goto fail;
    }
    if (prime(in, e))
        goto fail;
    return in;
fail:
    rp_input_close(in);
    return NULL;
}

int rp_input_next(struct rp_input *in, const struct rp_rec **out, struct err *e)
{
    size_t si;

    /* The previous record's stream is refilled only now: its head stayed
     * valid for the caller until this call. */
    if (in->pending) {
        in->pending = 0;
        if (refill(in, in->last, e))
            return e->code;
    }
    if (in->nheap == 0)
        return 0;
    si = heap_pop(in);
    in->last = si;
    in->pending = 1;
    *out = &in->s[si].rec;
    return 1;
}

double rp_input_fraction(const struct rp_input *in)
{
    int64_t done = 0, total = 0;

    if (!in || in->topic)
        return -1;
    for (size_t i = 0; i < in->n; i++) {
        int64_t d, t;
        if (codec_file_progress(in->s[i].file, &d, &t))
            return -1;
        done += d;
        total += t;
    }
    return total > 0 ? (double)done / (double)total : -1;
}

void rp_input_close(struct rp_input *in)
{
    if (!in)
        return;
    for (size_t i = 0; in->s && i < in->n; i++) {
        codec_file_close(in->s[i].file, NULL);
        free(in->s[i].path);
    }
    rp_topic_close(in->topic);
    txi_close(in->txi);
    free(in->s);
    free(in->heap);
    free(in);
}

/* ---- the step ---- */

/* Engine-owned state (st == NULL): users' states kept decoded, so a step
 * is one hash lookup and no encode/decode (which is lossless: a state read
 * back from a backend equals the one written). About 1.7 KB per user. */
struct ustate {
    char id[EV_ID_MAX];
    struct feat_state s;
    int32_t partition;
    int64_t offset;
};

struct rp_engine {
    struct state *st;
    struct txn_scorer *sc;
    struct state_blob blob;
    struct feat_state fs;
    unsigned char enc[FEAT_STATE_MAX];
    struct ustate *u; /* st == NULL */
    size_t nu, capu;
    long *slot; /* open addressing into u, -1 empty */
    size_t nslots;
};

static uint64_t hash_id(const char *p)
{
    uint64_t h = 1469598103934665603ULL;

    for (; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return h;
}

static size_t user_slot(const struct rp_engine *g, const char *id)
{
    size_t mask = g->nslots - 1, i = hash_id(id) & mask;

    while (g->slot[i] >= 0 && strcmp(g->u[g->slot[i]].id, id) != 0)
        i = (i + 1) & mask;
    return i;
}

static int users_grow(struct rp_engine *g)
{
    size_t cap = g->capu ? g->capu * 2 : 4096;
    struct ustate *u = realloc(g->u, cap * sizeof(*u));
    long *slot = malloc(cap * 2 * sizeof(*slot));

    if (u)
        g->u = u;
    if (!u || !slot) {
        free(slot);
        return ERR_NOMEM;
    }
    free(g->slot);
    g->slot = slot;
    g->nslots = cap * 2;
    g->capu = cap;
    memset(g->slot, 0xff, g->nslots * sizeof(*g->slot));
    for (size_t i = 0; i < g->nu; i++)
        g->slot[user_slot(g, g->u[i].id)] = (long)i;
    return ERR_OK;
}

/* The user's entry, created (empty state, position -1/-1) if new. */
static struct ustate *user_get(struct rp_engine *g, const char *id, struct err *e)
{
    size_t i;
    struct ustate *u;

    if (g->nu == g->capu && users_grow(g)) {
        err_set(e, ERR_NOMEM, "out of memory holding the state of %zu users", g->nu);
        return NULL;
    }
    i = user_slot(g, id);
    if (g->slot[i] >= 0)
        return &g->u[g->slot[i]];
    u = &g->u[g->nu];
    memset(u->id, 0, sizeof(u->id));
    memcpy(u->id, id, strnlen(id, EV_ID_MAX - 1));
    feat_state_init(&u->s);
    u->partition = -1;
    u->offset = -1;
    g->slot[i] = (long)g->nu++;
    return u;
}

struct rp_engine *rp_engine_open(struct state *st, struct txn_scorer *sc, struct err *e)
{
    struct rp_engine *g = calloc(1, sizeof(*g));

    if (!g || (!st && users_grow(g))) {
        rp_engine_close(g);
        err_set(e, ERR_NOMEM, "out of memory");
        return NULL;
    }
    g->st = st;
    g->sc = sc;
    return g;
}

void rp_engine_close(struct rp_engine *g)
{
    if (!g)
        return;
    free(g->u);
    free(g->slot);
    free(g);
}

/* The step against a state backend: read, step, write back. */
static int step_backend(struct rp_engine *g, const struct rp_rec *r, float *x, struct err *e)
{
    const char *user = r->ev.user_id;
    struct state_put put = {.entity = user, .data = g->enc};
    int32_t part;
    int64_t off;
    int written, n;

    if (state_get_many(g->st, 1, &user, &g->blob, e))
        return err_wrap(e, "state of %s", user);
    /* A corrupt stored state is started afresh, as in the worker. */
    txn_state_load(&g->fs, &part, &off, g->blob.data, g->blob.len, g->blob.partition,
                   g->blob.offset, e);
    err_clear(e);
    if (!txn_step(&r->ev, r->partition, r->offset, &g->fs, &part, &off, x))
        return 0;
    if ((n = feat_state_encode(&g->fs, g->enc, sizeof(g->enc))) < 0)
        return err_set(e, ERR_NOMEM, "feature state of %s does not fit %d bytes", user,
                       FEAT_STATE_MAX);
    put.len = (size_t)n;
    put.partition = part;
    put.offset = off;
    if (state_put_many(g->st, 1, &put, &written, e))
        return err_wrap(e, "state of %s", user);
    return 1;
}

int rp_engine_step(struct rp_engine *g, const struct rp_rec *r, float *x, struct txn_prediction *p,
                   struct err *e)
{
    int applied;

    if (g->st) {
        applied = step_backend(g, r, x, e);
    } else {
        struct ustate *u = user_get(g, r->ev.user_id, e);
        applied = u ? txn_step(&r->ev, r->partition, r->offset, &u->s, &u->partition, &u->offset, x)
                    : e->code;
    }
    if (applied < 0)
        return applied;
    if (g->sc && p) {
        txn_prediction_init(p, &r->ev, r->source, r->partition, r->offset);
        txn_score(g->sc, x, p);
        p->redelivered = !applied;
    }
    return applied;
}

/* ---- Redis clean-up ---- */

/* The connection of redis_conn.h (ACL user, password, timeouts, SIGPIPE). */
static struct rc *redis_connect(const struct state_redis_opts *o, struct err *e)
{
    struct rc_opts ro = {.host = o->host, .port = o->port, .username = o->username,
                         .password = o->password, .timeout_ms = o->timeout_ms};
    struct rc *c = NULL;

    if (rc_open(&c, &ro, e))
        return NULL;
    if (rc_connect(c, e)) {
        rc_close(c);
        return NULL;
    }
    return c;
}

/* Redis glob metacharacters in the prefix are escaped for MATCH. */
static void glob_escape(const char *s, char *out, size_t cap)
{
    size_t j = 0;

    for (; *s && j + 3 < cap; s++) {
        if (strchr("*?[]\\", *s))
            out[j++] = '\\';
        out[j++] = *s;
    }
    out[j++] = '*';
    out[j] = '\0';
}

/* SCAN MATCH + UNLINK on one server. */
static int drop_on(redisContext *c, const char *pattern, long *deleted, struct err *e)
{
    char cursor[32] = "0";
    int rc = ERR_OK;

    do {
        redisReply *r = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            rc = err_set(e, ERR_IO, "redis SCAN: %s",
                         r && r->type == REDIS_REPLY_ERROR ? r->str : c->errstr);
            freeReplyObject(r);
            break;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            redisReply *d = redisCommand(c, "UNLINK %b", r->element[1]->element[i]->str,
                                         r->element[1]->element[i]->len);
            if (d && d->type == REDIS_REPLY_INTEGER)
                *deleted += (long)d->integer;
            freeReplyObject(d);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    return rc;
}

/* Redis Cluster: every master scanned (a key lives on its slot's master). */
static int drop_on_cluster(const struct state_redis_opts *o, const char *nodes,
                           const char *pattern, long *deleted, struct err *e)
{
    struct rc_opts ro = {.username = o->username, .password = o->password,
                         .timeout_ms = o->timeout_ms};
    struct rcl *cl = NULL;
    int rc = rcl_open(&cl, nodes, &ro, e);

    if (rc == ERR_OK)
        rc = rcl_refresh(cl, e);
    for (size_t i = 0; rc == ERR_OK && i < rcl_n_nodes(cl); i++) {
        int serves = 0;
        for (unsigned s = 0; s < RCL_SLOTS && !serves; s++)
            serves = rcl_node_index(cl, s) == (int)i;
        if (!serves) /* a master of the past */
            continue;
        if ((rc = rc_connect(rcl_rc(cl, i), e)) == ERR_OK)
            rc = drop_on(rc_ctx(rcl_rc(cl, i)), pattern, deleted, e);
    }
    rcl_close(cl);
    return rc;
}

int rp_redis_drop_prefix(const struct state_redis_opts *o, long *deleted, struct err *e)
{
    char pattern[600];
    struct rc_sigpipe g;
    struct rc *conn;
    const char *nodes = o->nodes ? o->nodes : rcl_default_nodes();
    int rc;

    *deleted = 0;
    if (!o->prefix || !*o->prefix)
        return err_set(e, ERR_CONFIG, "refusing to drop an empty Redis prefix");
    glob_escape(o->prefix, pattern, sizeof(pattern));
    if (nodes && *nodes) {
        rc_sigpipe_block(&g);
        rc = drop_on_cluster(o, nodes, pattern, deleted, e);
        rc_sigpipe_restore(&g);
        return rc;
    }
    if (!(conn = redis_connect(o, e)))
        return e->code;
    rc_sigpipe_block(&g);
    rc = drop_on(rc_ctx(conn), pattern, deleted, e);
    rc_sigpipe_restore(&g);
    rc_close(conn);
    return rc;
}
