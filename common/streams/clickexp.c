/* cx_: experiments and outcomes of the clickstream (common/streams/clickexp.h). */
#include "clickexp.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "abtest.h"
#include "clickout.h"
#include "codec.h"
#include "log.h"

struct cx {
    struct ab *ab; /* NULL: no experiment */
    int by_session;
    double lambda[AB_MAX_VARIANTS], epsilon[AB_MAX_VARIANTS];
    char ranker[AB_MAX_VARIANTS][256]; /* ranker=PATH ("": clickstream.ranker, "-": none) */
    char model[AB_MAX_VARIANTS][256];  /* model=PATH, the arm's own GRU ("": clickstream.model) */
    char shadow_topic[256];
    struct cout *co; /* NULL: outcomes off */
    struct state *st;
    char topic[256];
    size_t cap;
    struct buf val; /* one encoded record */
    struct cout_click *in;
    size_t *idx, *first_c, *first;
    struct click_outcome *outs;
    int64_t kill_after, joins; /* clickstream.test_kill_after_outcomes */
    struct cx_counts cnt;
};

/* One "name:key=value[:key=value...]" item of clickstream.arms. */
static int parse_arm(struct cx *x, const char *item, size_t len, struct err *e)
{
    const char *colon = memchr(item, ':', len), *end = item + len;
    size_t a;

    for (a = 0; a < ab_num_variants(x->ab); a++)
        if (colon && strlen(ab_variant_name(x->ab, a)) == (size_t)(colon - item) &&
            !strncmp(ab_variant_name(x->ab, a), item, (size_t)(colon - item)))
            break;
    if (!colon || a == ab_num_variants(x->ab))
        return err_set(e, ERR_CONFIG,
                       "clickstream.arms: \"%.*s\": expected name:key=value... with a variant "
                       "of experiment.variants",
                       (int)len, item);
    for (const char *p = colon + 1; p < end;) {
        const char *q = memchr(p, ':', (size_t)(end - p)), *eq;
        char key[32], num[256], *stop;
        double v;
        q = q ? q : end;
        eq = memchr(p, '=', (size_t)(q - p));
        if (!eq || eq - p >= (long)sizeof(key) || q - eq - 1 <= 0 ||
            q - eq - 1 >= (long)sizeof(num))
            return err_set(e, ERR_CONFIG, "clickstream.arms: \"%.*s\": expected key=value",
                           (int)(q - p), p);
        snprintf(key, sizeof(key), "%.*s", (int)(eq - p), p);
        snprintf(num, sizeof(num), "%.*s", (int)(q - eq - 1), eq + 1);
        if (!strcmp(key, "ranker") || !strcmp(key, "model")) { /* paths, checked when opened */
            char *dst = !strcmp(key, "ranker") ? x->ranker[a] : x->model[a];
            snprintf(dst, sizeof(x->ranker[a]), "%s", num);
            p = q + (q < end);
            continue;
        }
        errno = 0;
        v = strtod(num, &stop);
        if (*stop || errno || !(v >= 0 && v <= 1))
            return err_set(e, ERR_CONFIG, "clickstream.arms: %s %s=%s: expected a number in [0, 1]",
                           ab_variant_name(x->ab, a), key, num);
        if (!strcmp(key, "epsilon"))
            x->epsilon[a] = v;
        else if (!strcmp(key, "lambda_diversity"))
            x->lambda[a] = v;
        else
            return err_set(e, ERR_CONFIG,
                           "clickstream.arms: %s: unknown setting \"%s\" (epsilon, "
                           "lambda_diversity, ranker, model)",
                           ab_variant_name(x->ab, a), key);
        p = q + (q < end);
    }
    return ERR_OK;
}

static int open_experiment(struct cx *x, const struct cfg *cf, struct err *e)
{
    const char *unit = cfg_str(cf, "clickstream.experiment_unit");
    const char *arms = cfg_str(cf, "clickstream.arms");

    if (strcmp(unit, "user") && strcmp(unit, "session"))
        return err_set(e, ERR_CONFIG, "clickstream.experiment_unit \"%s\": expected user or session",
                       unit);
    x->by_session = !strcmp(unit, "session");
    if (!(x->ab = ab_open_cfg(cf, e)))
        return e->code;
    for (size_t a = 0; a < ab_num_variants(x->ab); a++) {
        const char *m = ab_variant_model(x->ab, a);
        /* a variant's model is its arm's GRU (clickstream.arms model= says the same) */
        if (strcmp(m, "-") && strcmp(m, cfg_str(cf, "clickstream.model")))
            snprintf(x->model[a], sizeof(x->model[a]), "%s", m);
        x->lambda[a] = cfg_double(cf, "clickstream.lambda_diversity");
        x->epsilon[a] = cfg_double(cf, "clickstream.epsilon");
    }
    for (const char *p = arms; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len && parse_arm(x, p, len, e))
            return e->code;
        p += len + (comma != NULL);
    }
    snprintf(x->shadow_topic, sizeof(x->shadow_topic), "%s",
             cfg_str(cf, "experiment.shadow_topic"));
    log_info("experiment %s (%s, sticky per %s): %zu arms", ab_id(x->ab),
             ab_mode(x->ab) == AB_SHADOW ? "shadow" : "split", unit, ab_num_variants(x->ab));
    for (size_t a = 0; a < ab_num_variants(x->ab); a++)
        log_info("  arm %s: share %.3f, GRU %s, lambda_diversity %.2f, epsilon %.3f, ranker %s",
                 ab_variant_name(x->ab, a), ab_variant_share(x->ab, a),
                 x->model[a][0] ? x->model[a] : cfg_str(cf, "clickstream.model"), x->lambda[a],
                 x->epsilon[a],
                 x->ranker[a][0] ? x->ranker[a]
                                 : *cfg_str(cf, "clickstream.ranker") ? cfg_str(cf, "clickstream.ranker")
                                                                       : "-");
    return ERR_OK;
}

static int open_outcomes(struct cx *x, const struct cfg *cf, const struct state_redis_opts *ro,
                         struct err *e)
{
    struct cout_opts o;

    if (!ro)
        return err_set(e, ERR_CONFIG,
                       "clickstream.outcomes_topic %s: outcomes are joined in Redis "
                       "(state.backend=redis)",
                       x->topic);
    o = (struct cout_opts){.host = ro->host,
                           .port = ro->port,
                           .username = ro->username,
                           .password = ro->password,
                           .prefix = ro->prefix,
                           .horizon_ms = cfg_int(cf, "clickstream.outcome_horizon_s") * 1000,
                           .keep_recs = (int)cfg_int(cf, "clickstream.outcome_recs"),
                           .timeout_ms = ro->timeout_ms};
    x->in = calloc(x->cap, sizeof(*x->in));
    x->idx = calloc(x->cap, sizeof(*x->idx));
    x->first_c = calloc(x->cap + 1, sizeof(*x->first_c));
    x->first = calloc(x->cap + 1, sizeof(*x->first));
    x->outs = calloc(2 * x->cap, sizeof(*x->outs));
    if (!x->in || !x->idx || !x->first_c || !x->first || !x->outs)
        return err_set(e, ERR_NOMEM, "out of memory for outcomes of %zu clicks", x->cap);
    if (cout_open(&x->co, &o, e))
        return e->code;
    log_info("outcomes to %s: horizon %lld s, %d recommendations remembered per session",
             x->topic, (long long)cfg_int(cf, "clickstream.outcome_horizon_s"), o.keep_recs);
    return ERR_OK;
}

int cx_open(struct cx **out, const struct cfg *cf, const struct state_redis_opts *ro,
            struct state *st, size_t cap, struct err *e)
{
    struct cx *x = calloc(1, sizeof(*x));

    *out = NULL;
    if (!x)
        return err_set(e, ERR_NOMEM, "out of memory");
    x->st = st;
    x->cap = cap ? cap : 1;
    buf_init(&x->val, 0);
    x->kill_after = cfg_int(cf, "clickstream.test_kill_after_outcomes");
    snprintf(x->topic, sizeof(x->topic), "%s", cfg_str(cf, "clickstream.outcomes_topic"));
    if ((*cfg_str(cf, "experiment.id") && open_experiment(x, cf, e)) ||
        (x->topic[0] && open_outcomes(x, cf, ro, e))) {
        cx_close(x);
        return e->code;
    }
    *out = x;
    return ERR_OK;
}

void cx_close(struct cx *x)
{
    if (!x)
        return;
    ab_close(x->ab);
    cout_close(x->co);
    free(x->in);
    free(x->idx);
    free(x->first_c);
    free(x->first);
    free(x->outs);
    buf_free(&x->val);
    free(x);
}

int cx_arms(const struct cx *x, struct cstep *cs, struct err *e)
{
    const char *rankers[AB_MAX_VARIANTS], *models[AB_MAX_VARIANTS], *names[AB_MAX_VARIANTS];

    if (!x->ab)
        return ERR_OK;
    for (size_t a = 0; a < ab_num_variants(x->ab); a++) {
        rankers[a] = x->ranker[a];
        models[a] = x->model[a];
        names[a] = ab_variant_name(x->ab, a);
    }
    if (cstep_arms(cs, ab_num_variants(x->ab), x->lambda, x->epsilon, cx_shadow_from(x), e) ||
        cstep_arm_models(cs, ab_num_variants(x->ab), models, names, e))
        return e->code;
    return cstep_arm_rankers(cs, ab_num_variants(x->ab), rankers, e);
}

static const char *unit_of(const struct cx *x, const struct click_event *ev)
{
    return !x->by_session && ev->has_user && ev->user_id[0] ? ev->user_id : ev->session_id;
}

int cx_assign(const struct cx *x, const struct click_event *ev)
{
    return x->ab ? (int)ab_assign(x->ab, unit_of(x, ev)) : 0;
}

void cx_label(const struct cx *x, int arm, struct click_prediction *p)
{
    if (!x->ab)
        return;
    snprintf(p->experiment_id, sizeof(p->experiment_id), "%s", ab_id(x->ab));
    snprintf(p->variant, sizeof(p->variant), "%s", ab_variant_name(x->ab, (size_t)arm));
}

size_t cx_num_arms(const struct cx *x)
{
    return x->ab ? ab_num_variants(x->ab) : 0;
}

size_t cx_shadow_from(const struct cx *x)
{
    return x->ab && ab_mode(x->ab) == AB_SHADOW ? 1 : cx_num_arms(x);
}

const char *cx_arm_name(const struct cx *x, size_t a)
{
    return x->ab && a < ab_num_variants(x->ab) ? ab_variant_name(x->ab, a) : "";
}

const char *cx_shadow_topic(const struct cx *x)
{
    return cx_shadow_from(x) < cx_num_arms(x) ? x->shadow_topic : NULL;
}

const char *cx_outcomes_topic(const struct cx *x)
{
    return x->co ? x->topic : NULL;
}

const struct cx_counts *cx_counts(const struct cx *x)
{
    return &x->cnt;
}

/* The outcomes of the batch's clicks: x->outs, click i's at
 * [x->first[i], x->first[i + 1]). */
static int join(struct cx *x, size_t n, const struct cstep_click *in,
                const struct click_prediction *preds, struct err *e)
{
    struct cout_result r = {0};
    size_t m = 0, j = 0;
    int rc;

    for (size_t i = 0; i < n; i++) {
        if (!in[i].ev)
            continue;
        x->in[m] = (struct cout_click){in[i].ev,
                                       preds[i].degraded ? NULL : &preds[i],
                                       unit_of(x, in[i].ev),
                                       in[i].topic,
                                       in[i].partition,
                                       in[i].offset,
                                       x->st ? state_epoch(x->st, in[i].partition) : 0};
        x->idx[m++] = i;
    }
    rc = cout_join(x->co, m, x->in, x->outs, x->first_c, &r, e);
    if (rc == ERR_RETRY) /* the handle reconnects once; the call is idempotent */
        rc = cout_join(x->co, m, x->in, x->outs, x->first_c, &r, e);
    if (rc)
        return rc;
    for (size_t i = 0; i <= n; i++) { /* click i's range: its compacted one, empty if skipped */
        while (j < m && x->idx[j] < i)
            j++;
        x->first[i] = x->first_c[j];
    }
    x->cnt.joined += r.applied;
    x->cnt.redelivered += r.redelivered;
    x->cnt.fenced += r.fenced;
    for (size_t k = 0; k < x->first_c[m]; k++) {
        uint64_t *c[] = {&x->cnt.impressions, &x->cnt.clicks, &x->cnt.carts, &x->cnt.purchases};
        *c[x->outs[k].type] += 1;
    }
    if (r.redelivered || r.fenced)
        log_info("outcomes: %zu redelivered click(s) already joined (their outcomes published "
                 "again, same ids), %zu fenced",
                 r.redelivered, r.fenced);
    if (x->kill_after && m && ++x->joins == x->kill_after)
        raise(SIGKILL); /* test hook: joined, outcome records not yet published */
    return ERR_OK;
}

int cx_publish(struct cx *x, struct codec *cd, size_t n, const struct cstep_click *in,
               const struct click_prediction *preds, cx_put_fn put, void *opaque)
{
    struct err e = {0};
    int joined;

    if (!x->co)
        return 0;
    n = n < x->cap ? n : x->cap;
    if (!(joined = join(x, n, in, preds, &e) == ERR_OK)) {
        x->cnt.errors++;
        log_error("outcomes of %zu click(s) not joined (lost): %s", n, e.msg);
    }
    for (size_t i = 0; i < n; i++) {
        size_t k = joined ? x->first[i] : 0, end = joined ? x->first[i + 1] : 0;
        int acked = 0;
        if (!in[i].ev)
            continue;
        for (; k < end && !acked; k++) {
            const struct click_outcome *o = &x->outs[k];
            buf_reset(&x->val);
            if (codec_encode_click_outcome(cd, o, &x->val, &e) ||
                put(opaque, x->topic, o->session_id, x->val.data, x->val.len, i,
                    k + 1 == end ? CX_ACKS : CX_UNTRACKED, &e)) {
                x->cnt.errors++;
                log_error("outcome %s not sent (lost): %s", o->outcome_id, e.msg);
                break;
            }
            acked = k + 1 == end;
        }
        if (!acked)
            put(opaque, NULL, NULL, NULL, 0, i, CX_ACK_NOW, &e);
    }
    return 1;
}

void cx_shadow(struct cx *x, struct codec *cd, const struct cstep *cs, size_t n,
               const struct cstep_click *in, cx_put_fn put, void *opaque)
{
    struct err e = {0};

    for (size_t a = cx_shadow_from(x); a < cx_num_arms(x); a++)
        for (size_t i = 0; i < n; i++) {
            const struct click_prediction *sp = in[i].ev ? cstep_shadow(cs, i, a) : NULL;
            struct click_prediction p;
            if (!sp)
                continue;
            p = *sp;
            cx_label(x, (int)a, &p);
            buf_reset(&x->val);
            if (codec_encode_click_prediction(cd, &p, &x->val, &e) ||
                put(opaque, x->shadow_topic, p.session_id, x->val.data, x->val.len, i,
                    CX_UNTRACKED, &e))
                log_warn("shadow prediction of %s not sent: %s", p.event_id, e.msg);
        }
}

void cx_log_counts(const struct cx *x)
{
    const struct cx_counts *o;

    if (!x || !cx_outcomes_topic(x))
        return;
    o = cx_counts(x);
    log_info("outcomes: %llu clicks joined (%llu impressions, %llu click-throughs, %llu "
             "carts, %llu purchases), %llu redelivered, %llu fenced, %llu join errors",
             (unsigned long long)o->joined, (unsigned long long)o->impressions,
             (unsigned long long)o->clicks, (unsigned long long)o->carts,
             (unsigned long long)o->purchases, (unsigned long long)o->redelivered,
             (unsigned long long)o->fenced, (unsigned long long)o->errors);
}
