/* Labels joined to predictions: a second, small Redis user beside
 * state_redis.c (its connection from redis_conn.c; on a Redis Cluster,
 * redis.nodes, its keys routed and pipelined per master by redis_cluster.c):
 * plain SET/GETDEL keys, none of the state's Lua, plus a consumer of the
 * labels topic through kq_ and codec_. */
#include "labels.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "event.h"
#include "kafka.h"
#include "log.h"
#include "redis_cluster.h"
#include "redis_conn.h"

#define QUEUE_MAX 1000000   /* predictions waiting for labels_flush */
#define KEY_MAX 512

#define GROUP_MAX 64 /* a group's text, as FAIR_NAME */

struct queued {
    char id[EV_ID_MAX];
    double score;
    int approved;          /* -1: no decision remembered */
    char group[GROUP_MAX]; /* the decision's fairness group, "" if none */
};

struct labels {
    struct kq *q;
    struct codec *cd;
    struct rc *rc;  /* one server */
    struct rcl *cl; /* or a cluster (redis.nodes): keys routed one by one */
    char *prefix, *model;
    char *label_field; /* "" or the LabelEvent field naming outcome groups */
    int ttl_s;
    struct queued *queue;
    size_t nq, capq;
    struct buf json;
    struct labels_stats st;
    int down_logged;
};

/* ---- connection: common/io/redis_conn.h (connect, ACL user, SIGPIPE) ---- */

static int lost(struct labels *l, const char *what, struct err *e)
{
    return rc_lost(l->rc, what, e);
}

/* On a cluster the connections are rcl_pipeline's. */
static int connect_redis(struct labels *l, struct err *e)
{
    return l->cl ? ERR_OK : rc_connect(l->rc, e);
}

static size_t key_of(const struct labels *l, const char *id, char *key)
{
    int n = snprintf(key, KEY_MAX, "%spending:%s:%s", l->prefix, l->model, id);
    return n < KEY_MAX ? (size_t)n : KEY_MAX - 1;
}

/* ---- predictions waiting for their labels ---- */

void labels_remember(struct labels *l, const char *event_id, double score)
{
    labels_remember_decision(l, event_id, score, NULL, -1);
}

void labels_remember_decision(struct labels *l, const char *event_id, double score,
                              const char *group, int approved)
{
    if (l->nq == l->capq) {
        size_t cap = l->capq ? 2 * l->capq : 4096;
        struct queued *q = cap <= QUEUE_MAX ? realloc(l->queue, cap * sizeof(*q)) : NULL;
        if (!q) {
            l->st.lost++;
            return;
        }
        l->queue = q;
        l->capq = cap;
    }
    snprintf(l->queue[l->nq].id, EV_ID_MAX, "%s", event_id);
    snprintf(l->queue[l->nq].group, GROUP_MAX, "%s", group ? group : "");
    l->queue[l->nq].approved = approved < 0 ? -1 : approved != 0;
    l->queue[l->nq++].score = score;
    l->st.remembered++;
}

/* ---- Redis Cluster: the same commands, pipelined per master ---- */

struct cl_ctx {
    struct labels *l;
    const struct got *g;
    struct mon *m;
    char key[KEY_MAX], val[40 + GROUP_MAX], ttl[16];
    size_t joined, failed;
};

static size_t key_of(const struct labels *l, const char *id, char *key);

/* A pending prediction's value: "score", or "score approved group" when
 * its decision is remembered (the group last: it may hold spaces). */
static void value_of(const struct queued *q, char *val, size_t cap)
{
    if (q->approved < 0)
        snprintf(val, cap, "%.17g", q->score);
    else
        snprintf(val, cap, "%.17g %d %s", q->score, q->approved, q->group);
}

static int cl_set_cmd(void *ctx, size_t i, const char **argv, size_t *argvlen)
{
    struct cl_ctx *x = ctx;

    argv[0] = "SET";
    argv[1] = x->key;
    argvlen[1] = key_of(x->l, x->l->queue[i].id, x->key);
    value_of(&x->l->queue[i], x->val, sizeof(x->val));
    snprintf(x->ttl, sizeof(x->ttl), "%d", x->l->ttl_s);
    argv[2] = x->val;
    argv[3] = "EX";
    argv[4] = x->ttl;
    for (int k = 0; k < 5; k++)
        if (k != 1)
            argvlen[k] = strlen(argv[k]);
    return 5;
}

static void cl_set_reply(void *ctx, size_t i, const redisReply *r)
{
    (void)i;
    ((struct cl_ctx *)ctx)->failed += r->type == REDIS_REPLY_ERROR;
}

static int cluster_sets(struct labels *l, struct err *e)
{
    struct cl_ctx x = {.l = l};
    size_t done;
    int rc = rcl_pipeline(l->cl, l->nq, cl_set_cmd, cl_set_reply, &x, &done, e);

    if (rc == ERR_OK && x.failed)
        rc = err_set(e, ERR_IO, "redis SET pending: %zu refused", x.failed);
    return rc;
}

static int pipeline_sets(struct labels *l, struct err *e)
{
    char key[KEY_MAX], val[40 + GROUP_MAX];
    redisReply *r;

    if (l->cl)
        return cluster_sets(l, e);
    for (size_t i = 0; i < l->nq; i++) {
        size_t kl = key_of(l, l->queue[i].id, key);
        value_of(&l->queue[i], val, sizeof(val));
        if (redisAppendCommand(rc_ctx(l->rc), "SET %b %b EX %d", key, kl, val, strlen(val),
                               l->ttl_s) !=
            REDIS_OK)
            return lost(l, "SET", e);
    }
    for (size_t i = 0; i < l->nq; i++) {
        if (redisGetReply(rc_ctx(l->rc), (void **)&r) != REDIS_OK)
            return lost(l, "SET", e);
        if (r->type == REDIS_REPLY_ERROR) {
            err_set(e, ERR_IO, "redis SET pending (%s:%d): %s", rc_host(l->rc), rc_port(l->rc),
                    r->str);
            freeReplyObject(r);
            rc_drop(l->rc);
            return ERR_IO;
        }
        freeReplyObject(r);
    }
    return ERR_OK;
}

int labels_flush(struct labels *l, struct err *e)
{
    struct err tmp = {0};
    struct rc_sigpipe old;
    int rc;

    if (!e)
        e = &tmp;
    if (!l || l->nq == 0)
        return ERR_OK;
    rc_sigpipe_block(&old);
    rc = connect_redis(l, e);
    if (rc == ERR_OK)
        rc = pipeline_sets(l, e);
    rc_sigpipe_restore(&old);
    if (rc) {
        l->st.lost += l->nq;
        if (!l->down_logged)
            log_error("labels: %zu pending prediction(s) not stored: %s", l->nq, e->msg);
        l->down_logged = 1;
    } else {
        l->down_logged = 0;
    }
    l->nq = 0;
    return rc;
}

/* ---- labels ---- */

struct got {
    char id[EV_ID_MAX];
    int label;
    char group[GROUP_MAX]; /* from the label record (label_field), "" if not */
};

/* A field's value as group text: a string, a number or a boolean, also
 * inside an Avro JSON union ({"string": "x"}); "missing" otherwise. */
static void field_text(json_t *v, char *out, size_t cap)
{
    if (json_is_object(v) && json_object_size(v) == 1)
        v = json_object_iter_value(json_object_iter(v));
    if (json_is_string(v) && json_string_length(v) > 0)
        snprintf(out, cap, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(out, cap, "%lld", (long long)json_integer_value(v));
    else if (json_is_boolean(v))
        snprintf(out, cap, "%s", json_is_true(v) ? "true" : "false");
    else
        snprintf(out, cap, "missing");
}

/* A joined pair: the rolling AUC, and with a remembered decision and a
 * group (the label record's, else the decision's) the outcome counts. */
static void observe(struct labels *l, struct mon *m, const char *val, const struct got *g)
{
    char *end;
    double score = strtod(val, &end);
    const char *group;

    mon_observe_label(m, score, g->label);
    if (end[0] != ' ' || (end[1] != '0' && end[1] != '1') || end[2] != ' ')
        return; /* no decision remembered (an older value, or none asked) */
    group = *l->label_field ? g->group : end + 3;
    if (*group) /* "": the decision had no group */
        mon_observe_outcome(m, group, end[1] == '1', g->label);
}

/* One labels record -> (event id, label); -1 if it is not a valid label. */
static int read_label(struct labels *l, const struct kq_msg *m, struct got *g)
{
    struct err e = {0};
    json_t *o, *lab;
    const char *id;
    int rc = -1;

    if (codec_to_json(l->cd, m->payload, m->len, &l->json, &e)) {
        log_warn("labels: %s [%d] @ %lld: %s", m->topic, (int)m->partition,
                 (long long)m->offset, e.msg);
        return -1;
    }
    o = json_loads((const char *)l->json.data, 0, NULL);
    id = json_string_value(json_object_get(o, "event_id"));
    lab = json_object_get(o, "label");
    if (id && strlen(id) < EV_ID_MAX && json_is_integer(lab) &&
        (json_integer_value(lab) == 0 || json_integer_value(lab) == 1)) {
        snprintf(g->id, EV_ID_MAX, "%s", id);
        g->label = (int)json_integer_value(lab);
        g->group[0] = '\0';
        if (*l->label_field)
            field_text(json_object_get(o, l->label_field), g->group, sizeof(g->group));
        rc = 0;
    } else {
        log_warn("labels: %s [%d] @ %lld: not a label event (event_id + label 0/1)", m->topic,
                 (int)m->partition, (long long)m->offset);
    }
    json_decref(o);
    return rc;
}

static int cl_getdel_cmd(void *ctx, size_t i, const char **argv, size_t *argvlen)
{
    struct cl_ctx *x = ctx;

    argv[0] = "GETDEL";
    argvlen[0] = 6;
    argv[1] = x->key;
    argvlen[1] = key_of(x->l, x->g[i].id, x->key);
    return 2;
}

static void cl_getdel_reply(void *ctx, size_t i, const redisReply *r)
{
    struct cl_ctx *x = ctx;

    if (r->type == REDIS_REPLY_STRING) {
        observe(x->l, x->m, r->str, &x->g[i]);
        x->joined++;
    } else {
        x->l->st.unmatched++;
    }
}

/* GETDEL of each label's pending prediction, pipelined; feeds m. */
static size_t join(struct labels *l, const struct got *g, size_t n, struct mon *m)
{
    char key[KEY_MAX];
    struct err e = {0};
    struct rc_sigpipe old;
    size_t joined = 0, i, got = 0;
    redisReply *r;

    rc_sigpipe_block(&old);
    if (l->cl) {
        struct cl_ctx x = {.l = l, .g = g, .m = m};
        (void)rcl_pipeline(l->cl, n, cl_getdel_cmd, cl_getdel_reply, &x, &got, &e);
        joined = x.joined;
    } else if (connect_redis(l, &e) == ERR_OK) {
        for (i = 0; i < n; i++) {
            size_t kl = key_of(l, g[i].id, key);
            if (redisAppendCommand(rc_ctx(l->rc), "GETDEL %b", key, kl) != REDIS_OK)
                break;
        }
        for (; got < i && redisGetReply(rc_ctx(l->rc), (void **)&r) == REDIS_OK; got++) {
            if (r->type == REDIS_REPLY_STRING) {
                observe(l, m, r->str, &g[got]);
                joined++;
            } else {
                l->st.unmatched++;
            }
            freeReplyObject(r);
        }
        if (got < n)
            lost(l, "GETDEL", &e);
    }
    rc_sigpipe_restore(&old);
    l->st.lost += n - got;
    l->st.joined += joined;
    return joined;
}

size_t labels_poll(struct labels *l, struct mon *m, int timeout_ms, size_t max)
{
    struct got *g;
    struct err e = {0};
    size_t n = 0, joined;

    if (!l || !(g = malloc((max ? max : 1) * sizeof(*g))))
        return 0;
    while (n < max) {
        struct kq_msg *msg;
        if (kq_poll(l->q, n ? 0 : timeout_ms, &msg, &e) || !msg)
            break;
        l->st.labels++;
        if (read_label(l, msg, &g[n]) == 0)
            n++;
        else
            l->st.bad++;
        kq_ack(l->q, &msg->pos, KQ_ACK_ALL); /* monitoring data: never blocks commits */
        kq_msg_release(msg);
    }
    joined = n ? join(l, g, n, m) : 0;
    free(g);
    kq_serve(l->q, 0, &e);
    return joined;
}

void labels_get_stats(const struct labels *l, struct labels_stats *s)
{
    *s = l->st;
}

/* ---- open / close ---- */

/* The label field must be one of the reader schema's (the codec resolves
 * every writer schema into it, so no other field ever reaches us). */
static int check_label_field(const char *dir, const char *field, struct err *e)
{
    char path[512], names[256] = "";
    json_t *sc, *fs;
    size_t i, used = 0;
    int found = 0;

    snprintf(path, sizeof(path), "%s/label_event.avsc", dir);
    if (!(sc = json_load_file(path, 0, NULL)))
        return err_set(e, ERR_CONFIG, "labels: cannot read %s", path);
    fs = json_object_get(sc, "fields");
    for (i = 0; i < json_array_size(fs); i++) {
        const char *n = json_string_value(json_object_get(json_array_get(fs, i), "name"));
        found |= n && strcmp(n, field) == 0;
        if (n && used < sizeof(names))
            used += (size_t)snprintf(names + used, sizeof(names) - used, "%s%s", i ? ", " : "",
                                     n);
    }
    json_decref(sc);
    if (!found)
        return err_set(e, ERR_CONFIG, "config: monitor.fairness.label_field=%s is not a "
                       "LabelEvent field (%s: %s)", field, path, names);
    return ERR_OK;
}

struct labels *labels_open(const struct labels_opts *o, struct err *e)
{
    struct labels *l = calloc(1, sizeof(*l));
    struct kq_opts ko = {.group_id = o->group, .topics = &o->topic, .n_topics = 1,
                         .props = o->props, .n_props = o->n_props,
                         .client_id = "streamml-labels"};

    if (!l) {
        err_set(e, ERR_NOMEM, "labels: out of memory");
        return NULL;
    }
    struct rc_opts ro = {.host = o->redis.host, .port = o->redis.port,
                         .username = o->redis.username, .password = o->redis.password,
                         .timeout_ms = o->redis.timeout_ms};

    l->prefix = strdup(o->redis.prefix ? o->redis.prefix : "");
    l->model = strdup(o->model);
    l->label_field = strdup(o->label_field ? o->label_field : "");
    l->ttl_s = o->ttl_s;
    buf_init(&l->json, 64 * 1024);
    if (!l->prefix || !l->model || !l->label_field) {
        err_set(e, ERR_NOMEM, "labels: out of memory");
        goto fail;
    }
    if (*l->label_field && check_label_field(o->schemas_dir, l->label_field, e))
        goto fail;
    if (rcl_default_nodes() ? rcl_open(&l->cl, rcl_default_nodes(), &ro, e)
                            : rc_open(&l->rc, &ro, e))
        goto fail;
    if (!(l->cd = codec_open(o->schemas_dir, e)) || !(l->q = kq_open(&ko, e)))
        goto fail;
    log_info("labels: joining %s (group %s) to predictions kept %d s in Redis", o->topic,
             o->group, o->ttl_s);
    return l;
fail:
    labels_close(l);
    return NULL;
}

struct labels *labels_open_cfg(const struct cfg *c, const char *group_id, struct err *e)
{
    const char *topic = cfg_str(c, "monitor.labels.topic");
    char group[300];
    size_t np;
    struct labels_opts o = {
        .topic = topic, .group = group, .schemas_dir = cfg_str(c, "schemas.dir"),
        .model = cfg_str(c, "model.name"), .ttl_s = (int)cfg_int(c, "monitor.labels.ttl_s"),
        .label_field = cfg_str(c, "monitor.fairness.label_field"),
        .redis = {.host = cfg_str(c, "redis.host"), .port = (int)cfg_int(c, "redis.port"),
                  .password = *cfg_str(c, "redis.password") ? cfg_str(c, "redis.password") : NULL,
                  .username = cfg_str(c, "redis.username"),
                  .prefix = cfg_str(c, "redis.prefix"),
                  .timeout_ms = (int)cfg_int(c, "redis.timeout_ms")}};

    err_clear(e);
    if (!*topic)
        return NULL;
    if (*cfg_str(c, "monitor.labels.group"))
        snprintf(group, sizeof(group), "%s", cfg_str(c, "monitor.labels.group"));
    else
        snprintf(group, sizeof(group), "%s-labels", group_id);
    o.props = cfg_kafka(c, &np);
    o.n_props = np;
    return labels_open(&o, e);
}

void labels_close(struct labels *l)
{
    if (!l)
        return;
    log_info("labels: %llu read, %llu joined, %llu without a pending prediction, %llu "
             "malformed, %llu lost (Redis); %llu predictions kept",
             (unsigned long long)l->st.labels, (unsigned long long)l->st.joined,
             (unsigned long long)l->st.unmatched, (unsigned long long)l->st.bad,
             (unsigned long long)l->st.lost, (unsigned long long)l->st.remembered);
    kq_close(l->q, 2000, NULL);
    codec_close(l->cd);
    rc_close(l->rc);
    rcl_close(l->cl);
    buf_free(&l->json);
    free(l->queue);
    free(l->prefix);
    free(l->model);
    free(l->label_field);
    free(l);
}
