#include "txn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "codec.h"
#include "gbdt.h"
#include "labels.h"
#include "metrics.h"
#include "monitor.h"
#include "reasons.h"
#include "scorecard.h"
#include "treeshap.h"

struct txn_scorer {
    struct gbdt *gb;
    struct card *card;
    int *gmap, *cmap; /* model feature i -> txn-v1 vector index */
    float *xg, *xc;   /* scratch rows in each model's order */
    float *xgb;       /* txn_score_batch: rows in the gbdt's order */
    double *prob;
    uint64_t *hash;   /* txn_score_batch: the rows' feature hashes */
    size_t batch_cap;
    double review, decline;
    char name[64], version[32];
    /* Explanations from the deciding gbdt for the decisions in explain */
    struct treeshap *shap;
    struct treeshap_ws *ws;
    struct reasons *texts;
    double *phi;
    unsigned explain; /* bit d: explain decision d */
    uint64_t explained, explain_ns;
    struct metrics *metrics;
};

static const char *const decisions[3] = {"approve", "review", "decline"};

const char *txn_decision_name(int d)
{
    return d >= 0 && d < 3 ? decisions[d] : "?";
}

int txn_decision_index(const char *name)
{
    for (int d = 1; d < 3; d++)
        if (strcmp(name, decisions[d]) == 0)
            return d;
    return 0;
}

int txn_step(const struct txn_event *ev, int32_t partition, int64_t offset, struct feat_state *s,
             int32_t *s_partition, int64_t *s_offset, float *x)
{
    feat_txn_build(ev, s, x);
    if (*s_partition == partition && *s_offset >= offset)
        return 0; /* already in the stored state */
    /* Per partition and per event id (issue 23 case 5): a user whose events
     * come from several partitions, or an event produced twice. */
    if (feat_state_seen(s, partition, offset, ev))
        return 0;
    feat_state_update(s, ev, s);
    feat_state_mark(s, partition, offset, ev);
    *s_partition = partition;
    *s_offset = offset;
    return 1;
}

int txn_state_load(struct feat_state *s, int32_t *s_partition, int64_t *s_offset,
                   const unsigned char *blob, size_t len, int32_t partition, int64_t offset,
                   struct err *e)
{
    /* A blob is decoded into a cleared state (fspec_state_decode clears it
     * first): 2.7 kB cleared once per user and batch, not twice. */
    if (!len)
        feat_state_init(s);
    *s_partition = len ? partition : -1;
    *s_offset = len ? offset : -1;
    if (len && feat_state_decode(s, blob, len, e)) {
        /* Replaced, not propagated: the caller counts and logs it. */
        feat_state_init(s);
        *s_partition = -1;
        *s_offset = -1;
        return e->code;
    }
    return ERR_OK;
}

/* Model feature names -> indices into the spec's vector; by position when
 * the model has no names (then its width must equal the vector's). Every
 * name the spec lacks is listed, with the outputs the model leaves out. */
static int map_features(const char *what, size_t n, const char *(*name)(const void *, size_t),
                        const void *model, int *map, struct err *e)
{
    const struct fspec *p = feat_txn_spec();
    char missing[400] = "", unused[400] = "";
    size_t nm_at = 0, un_at = 0;

    for (size_t i = 0; i < n; i++) {
        const char *nm = name(model, i);
        int idx = nm ? fspec_index(p, nm) : (int)i;
        if (!nm && n != fspec_dim(p))
            return err_set(e, ERR_CONFIG, "%s: model has %zu unnamed features, %s has %zu", what,
                           n, fspec_name(p), fspec_dim(p));
        if (idx < 0 && nm_at < sizeof(missing))
            nm_at += (size_t)snprintf(missing + nm_at, sizeof(missing) - nm_at, "%s\"%s\"",
                                      nm_at ? ", " : "", nm);
        map[i] = idx;
    }
    if (!missing[0])
        return ERR_OK;
    for (size_t k = 0; k < fspec_dim(p); k++) {
        int used = 0;
        for (size_t i = 0; i < n && !used; i++)
            used = map[i] == (int)k;
        if (!used && un_at < sizeof(unused))
            un_at += (size_t)snprintf(unused + un_at, sizeof(unused) - un_at, "%s\"%s\"",
                                      un_at ? ", " : "", fspec_names(p)[k]);
    }
    return err_set(e, ERR_CONFIG,
                   "%s: feature names do not match spec %s: missing from the spec: %s; in the "
                   "spec, not the model: %s",
                   what, fspec_name(p), missing, unused[0] ? unused : "none");
}

static const char *gb_name(const void *m, size_t i)
{
    return gbdt_feature_name(m, i);
}

static const char *card_fname(const void *m, size_t i)
{
    return card_feature_name(m, i);
}

static int open_models(struct txn_scorer *s, const struct cfg *cf, const char *gbdt,
                       struct err *e)
{
    const char *card = cfg_str(cf, "model.scorecard");
    size_t nc;

    /* The spec first: the models' names are matched to its outputs. */
    if (feat_txn_use_cfg(cf, cfg_str(cf, "features.spec"), e) || !(s->gb = gbdt_open(gbdt, e)) ||
        (card && *card && !(s->card = card_open(card, e))))
        return e->code;
    nc = s->card ? card_num_features(s->card) : 0;
    s->gmap = calloc(gbdt_num_features(s->gb) + 1, sizeof(int));
    s->cmap = calloc(nc + 1, sizeof(int));
    s->xg = calloc(gbdt_num_features(s->gb) + 1, sizeof(float));
    s->xc = calloc(nc + 1, sizeof(float));
    if (!s->gmap || !s->cmap || !s->xg || !s->xc)
        return err_set(e, ERR_NOMEM, "out of memory");
    if (map_features("model.gbdt", gbdt_num_features(s->gb), gb_name, s->gb, s->gmap, e) ||
        (s->card &&
         map_features("model.scorecard", nc, card_fname, s->card, s->cmap, e)))
        return e->code;
    return ERR_OK;
}

/* explain.decisions -> bit mask; ERR_CONFIG naming the bad word. */
static int parse_explain(const char *list, unsigned *mask, struct err *e)
{
    char word[16];

    *mask = 0;
    if (strcmp(list, "none") == 0)
        return ERR_OK;
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ",");
        int d = -1;
        snprintf(word, sizeof(word), "%.*s", (int)(n < sizeof(word) ? n : sizeof(word) - 1), p);
        for (int k = 0; k < 3; k++)
            if (n == strlen(decisions[k]) && strcmp(word, decisions[k]) == 0)
                d = k;
        if (d < 0)
            return err_set(e, ERR_CONFIG,
                           "config: explain.decisions: \"%.*s\" is not approve, review, decline "
                           "or none",
                           (int)n, p);
        *mask |= 1u << d;
        p += n + (p[n] == ',');
    }
    return ERR_OK;
}

/* model.reasons: "auto" = <gbdt without .json>.reasons.json when it exists. */
static const char *reasons_path(const struct cfg *cf, const char *gbdt, char *buf, size_t cap)
{
    const char *v = cfg_str(cf, "model.reasons");
    size_t n = strlen(gbdt);
    struct stat st;

    if (strcmp(v, "auto") != 0)
        return v;
    if (n > 5 && strcmp(gbdt + n - 5, ".json") == 0)
        n -= 5;
    snprintf(buf, cap, "%.*s.reasons.json", (int)n, gbdt);
    return stat(buf, &st) == 0 ? buf : "";
}

static int open_explainer(struct txn_scorer *s, const struct cfg *cf, const char *gbdt,
                          struct err *e)
{
    char buf[4096];

    if (parse_explain(cfg_str(cf, "explain.decisions"), &s->explain, e))
        return e->code;
    if (!s->explain)
        return ERR_OK;
    s->shap = treeshap_open(s->gb, e);
    if (!s->shap) {
        char why[sizeof(e->msg)];
        snprintf(why, sizeof(why), "%s", e->msg);
        return err_set(e, e->code, "%s: %s; explain.decisions=none serves it without reason codes",
                       gbdt, why);
    }
    s->ws = treeshap_ws_open(s->shap);
    s->phi = calloc(treeshap_num_values(s->shap), sizeof(double));
    if (!s->ws || !s->phi)
        return err_set(e, ERR_NOMEM, "out of memory");
    s->texts = reasons_open(reasons_path(cf, gbdt, buf, sizeof(buf)), s->gb, e);
    return s->texts ? ERR_OK : e->code;
}

struct txn_scorer *txn_scorer_open(const struct cfg *cf, struct err *e)
{
    return txn_scorer_open_gbdt(cf, cfg_str(cf, "model.gbdt"), e);
}

struct txn_scorer *txn_scorer_open_gbdt(const struct cfg *cf, const char *gbdt, struct err *e)
{
    struct txn_scorer *s = calloc(1, sizeof(*s));

    if (!s) {
        err_set(e, ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (open_models(s, cf, gbdt, e) || open_explainer(s, cf, gbdt, e)) {
        txn_scorer_close(s);
        return NULL;
    }
    s->review = cfg_double(cf, "decision.review_threshold");
    s->decline = cfg_double(cf, "decision.decline_threshold");
    snprintf(s->name, sizeof(s->name), "%s", cfg_str(cf, "model.name"));
    snprintf(s->version, sizeof(s->version), "%s", cfg_str(cf, "model.version"));
    return s;
}

void txn_scorer_close(struct txn_scorer *s)
{
    if (!s)
        return;
    gbdt_close(s->gb);
    card_close(s->card);
    free(s->gmap);
    free(s->cmap);
    free(s->xg);
    free(s->xc);
    free(s->xgb);
    free(s->prob);
    free(s->hash);
    treeshap_ws_close(s->ws);
    treeshap_close(s->shap);
    reasons_close(s->texts);
    free(s->phi);
    free(s);
}

size_t txn_scorer_num_trees(const struct txn_scorer *s)
{
    return gbdt_num_trees(s->gb);
}

/* Bounded copy (truncates, always terminated): the hot path avoids
 * snprintf("%s"), which dominated the cost of a prediction. */
static void copy(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);

    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void hex64(char out[17], uint64_t h)
{
    static const char digits[] = "0123456789abcdef";

    for (int i = 15; i >= 0; i--, h >>= 4)
        out[i] = digits[h & 15];
    out[16] = '\0';
}

void txn_scorer_set_metrics(struct txn_scorer *s, struct metrics *m)
{
    s->metrics = m;
}

void txn_scorer_explain_stats(const struct txn_scorer *s, uint64_t *explained, uint64_t *ns)
{
    *explained = s->explained;
    *ns = s->explain_ns;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The PRED_REASONS largest positive TreeSHAP values of xg (the gbdt's
 * row), largest first: the features pushing this case towards bad. */
static void explain(struct txn_scorer *s, const float *xg, struct txn_prediction *p)
{
    size_t nf = gbdt_num_features(s->gb);
    uint64_t t0 = mono_ns(), dt;
    int top[PRED_REASONS], n = 0;

    treeshap_explain(s->shap, s->ws, xg, s->phi);
    for (size_t i = 0; i < nf; i++) {
        int at;
        if (!(s->phi[i] > 0))
            continue;
        for (at = n; at > 0 && s->phi[top[at - 1]] < s->phi[i]; at--)
            if (at < PRED_REASONS)
                top[at] = top[at - 1];
        if (at < PRED_REASONS)
            top[at] = (int)i;
        n += n < PRED_REASONS;
    }
    p->n_reasons = n;
    for (int k = 0; k < n; k++) {
        const char *nm = gbdt_feature_name(s->gb, (size_t)top[k]);
        copy(p->reasons[k], sizeof(p->reasons[k]), reasons_text(s->texts, (size_t)top[k]));
        copy(p->reason_features[k], sizeof(p->reason_features[k]), nm ? nm : p->reasons[k]);
        p->reason_values[k] = s->phi[top[k]];
    }
    dt = mono_ns() - t0;
    s->explained++;
    s->explain_ns += dt;
    if (s->metrics) {
        metrics_add(s->metrics, METRICS_EXPLANATIONS, 1);
        metrics_add(s->metrics, METRICS_EXPLAIN_NS, dt);
    }
}

/* Everything but the trees: p from x, the gbdt's row xg, its
 * probability and x's feature hash. */
static int fill(struct txn_scorer *s, const float *x, const float *xg, double probability,
                uint64_t hash, struct txn_prediction *p)
{
    struct card_result r;
    int d;

    copy(p->model_name, sizeof(p->model_name), s->name);
    copy(p->model_version, sizeof(p->model_version), s->version);
    copy(p->feature_version, sizeof(p->feature_version), feat_txn_version());
    p->probability = probability;
    if (s->card) {
        for (size_t j = 0; j < card_num_features(s->card); j++)
            s->xc[j] = x[s->cmap[j]];
        card_score(s->card, s->xc, &r);
    } else { /* a plain probability model: no points, no reason codes */
        memset(&r, 0, sizeof(r));
        r.probability = probability;
    }
    p->score = r.score;
    p->score_probability = r.probability;
    d = p->probability >= s->decline ? 2 : p->probability >= s->review ? 1 : 0;
    copy(p->decision, sizeof(p->decision), decisions[d]);
    /* The scorecard's reason codes, for adverse decisions, published as
     * its own; the reasons proper come from the gbdt, which decided. */
    p->n_card_reasons = d ? r.n_reasons : 0;
    for (int k = 0; k < p->n_card_reasons; k++)
        copy(p->card_reasons[k], sizeof(p->card_reasons[k]), r.reasons[k]);
    p->n_reasons = 0;
    if (s->explain & (1u << d))
        explain(s, xg, p);
    hex64(p->feature_hash, hash);
    return d;
}

int txn_score(struct txn_scorer *s, const float *x, struct txn_prediction *p)
{
    for (size_t j = 0; j < gbdt_num_features(s->gb); j++)
        s->xg[j] = x[s->gmap[j]];
    return fill(s, x, s->xg, gbdt_predict(s->gb, s->xg), feat_hash(x, feat_txn_dim()), p);
}

int txn_score_batch(struct txn_scorer *s, const float *x, size_t n, struct txn_prediction *p,
                    uint64_t decisions_out[3])
{
    size_t nf = gbdt_num_features(s->gb), dim = feat_txn_dim();

    if (n > s->batch_cap) {
        float *xgb = realloc(s->xgb, n * (nf ? nf : 1) * sizeof(float));
        double *prob = xgb ? realloc(s->prob, n * sizeof(double)) : NULL;
        uint64_t *hash = prob ? realloc(s->hash, n * sizeof(uint64_t)) : NULL;
        if (xgb)
            s->xgb = xgb;
        if (prob)
            s->prob = prob;
        if (hash)
            s->hash = hash;
        if (!xgb || !prob || !hash)
            return ERR_NOMEM;
        s->batch_cap = n;
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < nf; j++)
            s->xgb[i * nf + j] = x[i * dim + (size_t)s->gmap[j]];
    gbdt_predict_batch(s->gb, s->xgb, n, s->prob);
    feat_hash_rows(x, n, dim, s->hash);
    for (size_t i = 0; i < n; i++)
        decisions_out[fill(s, x + i * dim, s->xgb + i * nf, s->prob[i], s->hash[i], &p[i])]++;
    return ERR_OK;
}

void txn_prediction_init(struct txn_prediction *p, const struct txn_event *ev,
                         const char *src_topic, int32_t src_partition, int64_t src_offset)
{
    memset(p, 0, sizeof(*p));
    memcpy(p->event_id, ev->event_id, EV_ID_MAX);
    memcpy(p->user_id, ev->user_id, EV_ID_MAX);
    p->event_time_ms = ev->event_time_ms;
    copy(p->src_topic, sizeof(p->src_topic), src_topic ? src_topic : "");
    p->src_partition = src_partition;
    p->src_offset = src_offset;
}

int txn_fair_field(const struct cfg *cf, int *field, struct err *e)
{
    const char *name = cfg_str(cf, "monitor.fairness.field");

    *field = -1;
    if (!name || !*name)
        return ERR_OK;
    if ((*field = codec_txn_field(name)) < 0)
        return err_set(e, ERR_CONFIG,
                       "config: monitor.fairness.field=%s is not a TransactionEvent field "
                       "(schemas/transaction_event.avsc: e.g. home, marital, job, past_records)",
                       name);
    return ERR_OK;
}

const char *txn_fair_group(int field, const struct txn_event *ev, char *buf, size_t cap)
{
    if (field < 0)
        return NULL;
    codec_txn_field_text(ev, field, buf, cap);
    if (!buf[0])
        snprintf(buf, cap, "missing");
    return buf;
}

void txn_observe_decision(struct mon *m, int field, const struct txn_event *ev, const float *x,
                          const char *decision)
{
    char g[64];

    mon_observe_decision(m, x, txn_fair_group(field, ev, g, sizeof(g)),
                         strcmp(decision, "approve") == 0);
}

void txn_remember(struct labels *l, const struct mon *m, int field, const struct txn_event *ev,
                  const float *x, const char *event_id, double score, const char *decision)
{
    char g[64];
    const char *group = m ? mon_fair_group(m, x, txn_fair_group(field, ev, g, sizeof(g)), g,
                                           sizeof(g))
                          : NULL;

    labels_remember_decision(l, event_id, score, group, strcmp(decision, "approve") == 0);
}
