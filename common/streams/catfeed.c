/* cfeed_: the item catalogue's file, Redis copy and topic (common/streams/catfeed.h). */
#include <hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catfeed.h"
#include "kafka.h"
#include "log.h"
#include "pipeline.h"
#include "redis_conn.h"

#define KEY_MAX 320
#define FLUSH_MAX 4096 /* counts sent per round trip */

struct cfeed {
    struct catalog *cat;
    struct rc *rc; /* NULL: no Redis */
    struct kq *kq; /* NULL: no topic */
    struct codec *cd;
    char key[KEY_MAX], key_imps[KEY_MAX], key_clicks[KEY_MAX];
    struct buf json;
    struct buf dlq;                 /* a dead letter's encoding */
    char dlq_topic[256];            /* dlq.topic: refused topic records go there */
    char line[CAT_LINE_MAX];
    struct cat_item it;
    int64_t ids[FLUSH_MAX];
    uint32_t imps[FLUSH_MAX], clicks[FLUSH_MAX];
    struct cfeed_counts cnt;
};

/* ---- Redis ---- */

static int redis_ok(struct cfeed *f, struct err *e)
{
    return f->rc && rc_connect(f->rc, e) == ERR_OK;
}

static void redis_failed(struct cfeed *f, const char *what, const redisReply *r)
{
    struct err e = {0};

    f->cnt.redis_errors++;
    if (!r)
        rc_lost(f->rc, what, &e);
    log_warn("catalogue: redis %s failed: %s", what,
             r && r->type == REDIS_REPLY_ERROR ? r->str : e.msg);
}

/* One hash's fields and values (HGETALL); calls fn per pair. */
static void redis_hash(struct cfeed *f, const char *key,
                       void (*fn)(struct cfeed *f, const char *k, const char *v, size_t vlen))
{
    struct rc_sigpipe g;
    redisReply *r;

    rc_sigpipe_block(&g);
    r = redisCommand(rc_ctx(f->rc), "HGETALL %s", key);
    rc_sigpipe_restore(&g);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        redis_failed(f, "HGETALL", r);
        if (r)
            freeReplyObject(r);
        return;
    }
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (r->element[i]->type == REDIS_REPLY_STRING &&
            r->element[i + 1]->type == REDIS_REPLY_STRING)
            fn(f, r->element[i]->str, r->element[i + 1]->str, r->element[i + 1]->len);
    freeReplyObject(r);
}

static void load_record(struct cfeed *f, const char *k, const char *v, size_t vlen)
{
    struct err e = {0};

    if (cat_parse_json(v, vlen, &f->it, &e) || cat_upsert(f->cat, &f->it, &e)) {
        log_warn("catalogue: redis record %s refused: %s", k, e.msg);
        return;
    }
    f->cnt.redis_loaded++;
}

static void load_imps(struct cfeed *f, const char *k, const char *v, size_t vlen)
{
    int64_t id = strtoll(k, NULL, 10);
    (void)vlen;
    cat_set_counts(f->cat, id, (uint32_t)strtoul(v, NULL, 10), cat_new_clicks(f->cat, id));
}

static void load_clicks(struct cfeed *f, const char *k, const char *v, size_t vlen)
{
    int64_t id = strtoll(k, NULL, 10);
    (void)vlen;
    cat_set_counts(f->cat, id, cat_impressions(f->cat, id), (uint32_t)strtoul(v, NULL, 10));
}

static void redis_store(struct cfeed *f, const struct cat_item *it)
{
    struct err e = {0};
    struct rc_sigpipe g;
    redisReply *r;
    size_t n = cat_to_json(it, f->line, sizeof(f->line));

    if (!n || !redis_ok(f, &e)) {
        if (f->rc)
            f->cnt.redis_errors++;
        return;
    }
    rc_sigpipe_block(&g);
    r = redisCommand(rc_ctx(f->rc), "HSET %s %lld %b", f->key, (long long)it->id, f->line, n);
    rc_sigpipe_restore(&g);
    if (!r || r->type == REDIS_REPLY_ERROR)
        redis_failed(f, "HSET", r);
    if (r)
        freeReplyObject(r);
}

/* ---- open ---- */

static int open_topic(struct cfeed *f, const struct cfg *cf, const char *topic, struct err *e)
{
    const char *topics[1] = {topic};
    size_t np;
    struct kq_opts o = {.topics = topics,
                        .n_topics = 1,
                        .assign_all = 1,
                        .from_beginning = 1,
                        .client_id = "streamml-clickstream-catalog"};

    o.props = cfg_kafka(cf, &np);
    o.n_props = np;
    if (!(f->kq = kq_open(&o, e)))
        return err_wrap(e, "clickstream.catalog_topic %s", topic);
    return ERR_OK;
}

int cfeed_open(struct cfeed **out, const struct cfg *cf, const struct state_redis_opts *ro,
               struct codec *cd, int64_t max_items, int64_t model_items, struct err *e)
{
    const char *file = cfg_str(cf, "clickstream.catalog");
    const char *topic = cfg_str(cf, "clickstream.catalog_topic");
    struct cfeed *f;
    size_t ok = 0, bad = 0;
    struct err re = {0};

    *out = NULL;
    if (!*file && !*topic)
        return ERR_OK;
    if (!(f = calloc(1, sizeof(*f))))
        return err_set(e, ERR_NOMEM, "out of memory");
    buf_init(&f->json, 0);
    buf_init(&f->dlq, 0);
    snprintf(f->dlq_topic, sizeof(f->dlq_topic), "%s", cfg_str(cf, "dlq.topic"));
    f->cd = cd;
    if (cat_open(&f->cat, max_items, model_items, e))
        goto fail;
    if (*file) {
        if (cat_load_file(f->cat, file, &ok, &bad, NULL, NULL, e))
            goto fail;
        f->cnt.file_ok = ok;
        f->cnt.file_bad = bad;
    }
    if (ro) {
        struct rc_opts o = {.host = ro->host, .port = ro->port, .username = ro->username,
                            .password = ro->password, .timeout_ms = ro->timeout_ms};
        const char *p = ro->prefix ? ro->prefix : "";
        snprintf(f->key, sizeof(f->key), "%.256scatalog", p);
        snprintf(f->key_imps, sizeof(f->key_imps), "%.256scatalog:imps", p);
        snprintf(f->key_clicks, sizeof(f->key_clicks), "%.256scatalog:clicks", p);
        if (rc_open(&f->rc, &o, e))
            goto fail;
        if (redis_ok(f, &re)) {
            redis_hash(f, f->key, load_record);
            redis_hash(f, f->key_imps, load_imps);
            redis_hash(f, f->key_clicks, load_clicks);
        } else {
            f->cnt.redis_errors++;
            log_warn("catalogue: redis not read (the file and the topic only): %s", re.msg);
        }
    }
    if (*topic && cd && open_topic(f, cf, topic, e))
        goto fail;
    log_info("catalogue: %zu items (%zu from %s, %zu bad lines; %llu from redis), ids below "
             "%lld, %lld new past the model's %lld%s%s",
             cat_count(f->cat), ok, *file ? file : "no file", bad,
             (unsigned long long)f->cnt.redis_loaded, (long long)max_items,
             (long long)cat_count_unseen(f->cat), (long long)model_items,
             *topic && cd ? "; updates from topic " : "", cd ? topic : "");
    *out = f;
    return ERR_OK;
fail:
    cfeed_close(f);
    return e->code;
}

void cfeed_close(struct cfeed *f)
{
    struct err e = {0};

    if (!f)
        return;
    if (f->kq)
        kq_close(f->kq, 2000, &e);
    rc_close(f->rc);
    cat_close(f->cat);
    buf_free(&f->json);
    buf_free(&f->dlq);
    free(f);
}

struct catalog *cfeed_catalog(const struct cfeed *f)
{
    return f ? f->cat : NULL;
}

const struct cfeed_counts *cfeed_counts(const struct cfeed *f)
{
    return &f->cnt;
}

/* ---- the topic ---- */

static void apply(struct cfeed *f, const struct kq_msg *m)
{
    struct err e = {0};

    if (codec_to_json(f->cd, m->payload, m->len, &f->json, &e) ||
        cat_parse_json((const char *)f->json.data, f->json.len, &f->it, &e) ||
        cat_upsert(f->cat, &f->it, &e)) {
        struct err de = {0};
        f->cnt.topic_bad++;
        /* dead-lettered (logged there) with the field named: the record is
         * kept for whoever fixes the source, the item keeps its old record */
        if (pipe_dead_letter(f->kq, f->cd, &f->dlq, f->dlq_topic, "clickstream", m, &e, &de)) {
            f->cnt.dlq_errors++;
            log_error("catalogue: %s[%d]@%lld refused (%s), dead letter not sent: %s",
                      m->topic, (int)m->partition, (long long)m->offset, e.msg, de.msg);
        }
        return;
    }
    f->cnt.topic_ok++;
    if (f->rc)
        redis_store(f, &f->it);
}

size_t cfeed_poll(struct cfeed *f, size_t max)
{
    size_t n = 0;

    while (f && f->kq && n < max) {
        struct kq_msg *m = NULL;
        struct err e = {0};
        if (kq_poll(f->kq, 0, &m, &e)) {
            log_warn("catalogue topic: %s", e.msg);
            break;
        }
        if (!m)
            break;
        if (m->payload) /* a tombstone (NULL) of the compacted topic: kept as it was */
            apply(f, m);
        kq_ack(f->kq, &m->pos, KQ_ACK_ALL);
        kq_msg_release(m);
        n++;
    }
    return n;
}

/* ---- new items' counts ---- */

void cfeed_flush(struct cfeed *f)
{
    struct err e = {0};
    struct rc_sigpipe g;
    size_t n;

    if (!f || !f->rc)
        return;
    n = cat_pending(f->cat, f->ids, f->imps, f->clicks, FLUSH_MAX);
    if (!n || !redis_ok(f, &e)) {
        if (n)
            f->cnt.redis_errors++; /* these additions stay local */
        return;
    }
    rc_sigpipe_block(&g);
    for (size_t i = 0; i < n; i++) {
        redisAppendCommand(rc_ctx(f->rc), "HINCRBY %s %lld %u", f->key_imps,
                           (long long)f->ids[i], f->imps[i]);
        redisAppendCommand(rc_ctx(f->rc), "HINCRBY %s %lld %u", f->key_clicks,
                           (long long)f->ids[i], f->clicks[i]);
    }
    for (size_t i = 0; i < n; i++) {
        redisReply *r[2] = {NULL, NULL};
        for (int j = 0; j < 2; j++)
            if (redisGetReply(rc_ctx(f->rc), (void **)&r[j]) != REDIS_OK)
                r[j] = NULL;
        if (!r[0] || !r[1] || r[0]->type != REDIS_REPLY_INTEGER ||
            r[1]->type != REDIS_REPLY_INTEGER) {
            redis_failed(f, "HINCRBY", r[0] && r[0]->type == REDIS_REPLY_ERROR ? r[0] : r[1]);
            for (int j = 0; j < 2; j++)
                if (r[j])
                    freeReplyObject(r[j]);
            if (!r[0] || !r[1])
                break; /* the connection is gone: the rest of the replies too */
            continue;
        }
        cat_set_counts(f->cat, f->ids[i], (uint32_t)r[0]->integer, (uint32_t)r[1]->integer);
        freeReplyObject(r[0]);
        freeReplyObject(r[1]);
    }
    rc_sigpipe_restore(&g);
}

void cfeed_log_counts(const struct cfeed *f)
{
    if (!f)
        return;
    log_info("catalogue: %zu items; topic %llu records, %llu refused; %llu redis errors",
             cat_count(cfeed_catalog(f)), (unsigned long long)cfeed_counts(f)->topic_ok,
             (unsigned long long)cfeed_counts(f)->topic_bad,
             (unsigned long long)cfeed_counts(f)->redis_errors);
}

int cfeed_open_cstep(struct cfeed **out, const struct cfg *cf, const struct state_redis_opts *ro,
                     struct codec *cd, struct cstep *cs, struct err *e)
{
    int64_t items = sess_model_items(cstep_model(cs));

    if (cfeed_open(out, cf, ro, cd, cstep_catalog_ids(cf, items), items, e))
        return e->code;
    return cstep_set_catalog(cs, cfeed_catalog(*out), e);
}
