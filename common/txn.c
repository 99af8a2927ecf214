#include "txn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gbdt.h"
#include "scorecard.h"

struct txn_scorer {
    struct gbdt *gb;
    struct card *card;
    int *gmap, *cmap; /* model feature i -> txn-v1 vector index */
    float *xg, *xc;   /* scratch rows in each model's order */
    float *xgb;       /* txn_score_batch: rows in the gbdt's order */
    double *prob;
    size_t batch_cap;
    double review, decline;
    char name[64], version[32];
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
    if (feat_txn_use(cfg_str(cf, "features.spec"), e) || !(s->gb = gbdt_open(gbdt, e)) ||
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
    if (open_models(s, cf, gbdt, e)) {
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

/* Everything but the trees: p from x and the gbdt's probability. */
static int fill(struct txn_scorer *s, const float *x, double probability, struct txn_prediction *p)
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
    /* Reason codes explain adverse decisions only. */
    p->n_reasons = d ? r.n_reasons : 0;
    for (int k = 0; k < p->n_reasons; k++)
        copy(p->reasons[k], sizeof(p->reasons[k]), r.reasons[k]);
    hex64(p->feature_hash, feat_hash(x, FEAT_TXN_DIM));
    return d;
}

int txn_score(struct txn_scorer *s, const float *x, struct txn_prediction *p)
{
    for (size_t j = 0; j < gbdt_num_features(s->gb); j++)
        s->xg[j] = x[s->gmap[j]];
    return fill(s, x, gbdt_predict(s->gb, s->xg), p);
}

int txn_score_batch(struct txn_scorer *s, const float *x, size_t n, struct txn_prediction *p,
                    uint64_t decisions_out[3])
{
    size_t nf = gbdt_num_features(s->gb);

    if (n > s->batch_cap) {
        float *xgb = realloc(s->xgb, n * (nf ? nf : 1) * sizeof(float));
        double *prob = xgb ? realloc(s->prob, n * sizeof(double)) : NULL;
        if (xgb)
            s->xgb = xgb;
        if (prob)
            s->prob = prob;
        if (!xgb || !prob)
            return ERR_NOMEM;
        s->batch_cap = n;
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < nf; j++)
            s->xgb[i * nf + j] = x[i * FEAT_TXN_DIM + (size_t)s->gmap[j]];
    gbdt_predict_batch(s->gb, s->xgb, n, s->prob);
    for (size_t i = 0; i < n; i++)
        decisions_out[fill(s, x + i * FEAT_TXN_DIM, s->prob[i], &p[i])]++;
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
