/* rec_: candidates, MMR re-ranking and epsilon-greedy exploration
 * (declared in session.h, with the model they rank for). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "session.h"

struct rec_ctx {
    const struct sess_model *m;
    struct rec_opts o;
    uint64_t rng;
    uint32_t gen;       /* marks below equal to gen are current */
    uint32_t *excluded; /* per catalog item: in the session */
    uint32_t *taken;    /* per catalog item: a candidate, or shown */
    int64_t cand[REC_MAX_CANDIDATES + 2 * REC_MAX_K];
    float rel[REC_MAX_CANDIDATES + 2 * REC_MAX_K];
    float score[REC_MAX_CANDIDATES + 2 * REC_MAX_K];
    enum rec_source src[REC_MAX_CANDIDATES + 2 * REC_MAX_K];
    float maxsim[REC_MAX_CANDIDATES + 2 * REC_MAX_K];
    unsigned char used[REC_MAX_CANDIDATES + 2 * REC_MAX_K];
    size_t n;
};

const char *rec_source_name(enum rec_source s)
{
    static const char *const names[REC_NSOURCES] = {"gru", "covisit", "popular", "explore"};
    return (unsigned)s < REC_NSOURCES ? names[s] : "?";
}

int rec_ctx_open(struct rec_ctx **out, const struct sess_model *m, const struct rec_opts *o,
                 uint64_t seed, struct err *e)
{
    struct rec_ctx *c;
    size_t items = (size_t)sess_model_items(m);

    *out = NULL;
    if (o->k < 1 || o->k > REC_MAX_K)
        return err_set(e, ERR_CONFIG, "clickstream.k %d: must be 1..%d", o->k, REC_MAX_K);
    if (o->candidates < 1 || o->candidates > REC_MAX_CANDIDATES)
        return err_set(e, ERR_CONFIG, "clickstream.candidates %d: must be 1..%d", o->candidates,
                       REC_MAX_CANDIDATES);
    if (!(o->lambda_diversity >= 0 && o->lambda_diversity <= 1))
        return err_set(e, ERR_CONFIG, "clickstream.lambda_diversity %g: must be in [0, 1]",
                       o->lambda_diversity);
    if (!(o->epsilon >= 0 && o->epsilon <= 1))
        return err_set(e, ERR_CONFIG, "clickstream.epsilon %g: must be in [0, 1]", o->epsilon);
    c = calloc(1, sizeof(*c));
    if (!c || !(c->excluded = calloc(items, sizeof(uint32_t))) ||
        !(c->taken = calloc(items, sizeof(uint32_t)))) {
        rec_ctx_close(c);
        return err_set(e, ERR_NOMEM, "out of memory for ranking scratch");
    }
    c->m = m;
    c->o = *o;
    c->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
    *out = c;
    return ERR_OK;
}

void rec_ctx_close(struct rec_ctx *c)
{
    if (!c)
        return;
    free(c->excluded);
    free(c->taken);
    free(c);
}

/* xorshift64*: reproducible, and good enough to pick slots and items. */
static uint64_t next_u64(struct rec_ctx *c)
{
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    return c->rng * 0x2545f4914f6cdd1dull;
}

static double next_unit(struct rec_ctx *c)
{
    return (double)(next_u64(c) >> 11) / 9007199254740992.0;
}

/* A new generation clears every mark at once; on wrap-around, really clear. */
static void new_generation(struct rec_ctx *c)
{
    if (++c->gen == 0) {
        size_t items = (size_t)sess_model_items(c->m);
        memset(c->excluded, 0, items * sizeof(uint32_t));
        memset(c->taken, 0, items * sizeof(uint32_t));
        c->gen = 1;
    }
    c->n = 0;
}

static int usable(const struct rec_ctx *c, int64_t it)
{
    return it >= 0 && it < sess_model_items(c->m) && c->excluded[it] != c->gen &&
           c->taken[it] != c->gen;
}

static void add(struct rec_ctx *c, int64_t it, float rel, float score, enum rec_source s)
{
    c->taken[it] = c->gen;
    c->cand[c->n] = it;
    c->rel[c->n] = rel;
    c->score[c->n] = score;
    c->src[c->n] = s;
    c->n++;
}

/* The top `want` scores among usable items: a min-heap of candidate slots. */
static void top_scores(struct rec_ctx *c, const float *scores, int want)
{
    int64_t items = sess_model_items(c->m);
    int64_t heap[REC_MAX_CANDIDATES];
    int hn = 0;

    for (int64_t it = 0; it < items; it++) {
        float s = scores[it];
        int i;
        if (c->excluded[it] == c->gen || !(s == s))
            continue; /* NaN scores never rank */
        if (hn == want && s <= scores[heap[0]])
            continue;
        if (hn < want) {
            i = hn++;
        } else {
            i = 0; /* replace the root, sift down */
            for (;;) {
                int l = 2 * i + 1, r = l + 1, m = i;
                float v = s;
                if (l < hn && scores[heap[l]] < v)
                    m = l, v = scores[heap[l]];
                if (r < hn && scores[heap[r]] < v)
                    m = r;
                if (m == i)
                    break;
                heap[i] = heap[m];
                i = m;
            }
            heap[i] = it;
            continue;
        }
        while (i > 0 && scores[heap[(i - 1) / 2]] > s) { /* sift up */
            heap[i] = heap[(i - 1) / 2];
            i = (i - 1) / 2;
        }
        heap[i] = it;
    }
    for (int i = 0; i < hn; i++)
        add(c, heap[i], scores[heap[i]], scores[heap[i]], REC_GRU);
}

static int warm(const struct rec_input *in)
{
    return in->scores || (in->top && in->h);
}

/* The GRU score of any item: from the full scores, or one dot product. */
static float score_of(const struct rec_ctx *c, const struct rec_input *in, int64_t it)
{
    return in->scores ? in->scores[it] : sess_score_one(c->m, in->h, it);
}

static void candidates(struct rec_ctx *c, const struct rec_input *in)
{
    int k = c->o.k, w = warm(in);
    size_t cap = REC_MAX_CANDIDATES + 2 * (size_t)REC_MAX_K;
    int64_t items = sess_model_items(c->m);

    if (in->scores) {
        top_scores(c, in->scores, c->o.candidates);
    } else if (w) { /* best first: the session's items are skipped here */
        for (size_t i = 0; i < in->n_top && c->n < (size_t)c->o.candidates; i++)
            if (usable(c, in->top[i].item))
                add(c, in->top[i].item, in->top[i].score, in->top[i].score, REC_GRU);
    }
    /* up to k usable items from each list, best first */
    for (size_t i = 0, j = 0; i < in->n_covisit && c->n < cap && (int)j < k; i++)
        if (usable(c, in->covisit[i])) {
            float rel = 1.0f - (float)j++ / (float)k;
            float s = w ? score_of(c, in, in->covisit[i]) : rel;
            add(c, in->covisit[i], s, s, REC_COVISIT);
        }
    for (size_t i = 0, j = 0; i < in->n_popular && c->n < cap && (int)j < k; i++)
        if (usable(c, in->popular[i])) {
            float rel = 1.0f - (float)j++ / (float)k;
            float s = w ? score_of(c, in, in->popular[i]) : rel;
            add(c, in->popular[i], s, s, REC_POPULAR);
        }
    /* A tiny catalog or no popular list: any item not in the session. */
    for (int64_t it = 0; it < items && c->n < (size_t)k; it++)
        if (usable(c, it)) {
            float s = w ? score_of(c, in, it) : 0.0f;
            add(c, it, s, s, REC_POPULAR);
        }
}

/* Relevance to [0, 1] so lambda weighs it against the similarity. */
static void normalise_rel(struct rec_ctx *c)
{
    float lo = INFINITY, hi = -INFINITY;

    for (size_t i = 0; i < c->n; i++) {
        lo = c->rel[i] < lo ? c->rel[i] : lo;
        hi = c->rel[i] > hi ? c->rel[i] : hi;
    }
    for (size_t i = 0; i < c->n; i++)
        c->rel[i] = hi > lo ? (c->rel[i] - lo) / (hi - lo) : 1.0f;
}

/* BLAS: the plain loop is one serial chain of adds, and MMR's cosines were
 * the largest cost of ranking (bench/results.md). Cosine: the unit rows;
 * dot: the rows as trained (unbounded: a long embedding weighs more). */
static float similarity(const struct rec_ctx *c, int64_t a, int64_t b, int dim)
{
    if (c->o.mmr_dot)
        return cblas_sdot(dim, sess_model_embedding(c->m, a), 1, sess_model_embedding(c->m, b),
                          1);
    return cblas_sdot(dim, sess_model_unit_embedding(c->m, a), 1,
                      sess_model_unit_embedding(c->m, b), 1);
}

static int emb_dim(const struct rec_ctx *c)
{
    /* unit rows are contiguous: the distance between two rows is the dim */
    return (int)(sess_model_unit_embedding(c->m, 1) - sess_model_unit_embedding(c->m, 0));
}

/* Greedy MMR (Carbonell and Goldstein), with the seed's lambda_diversity as
 * the weight of the diversity term: argmax (1 - lambda) * rel - lambda *
 * max sim(selected). Ties go to the more relevant item, so lambda 1 (pure
 * diversity) still starts from the most relevant one. */
static size_t mmr(struct rec_ctx *c, struct rec_item *out)
{
    double lam = c->o.lambda_diversity;
    int dim = emb_dim(c);
    size_t n = 0;

    memset(c->used, 0, c->n);
    for (size_t i = 0; i < c->n; i++)
        c->maxsim[i] = 0.0f;
    while (n < (size_t)c->o.k && n < c->n) {
        size_t best = c->n;
        double bv = -INFINITY;
        for (size_t i = 0; i < c->n; i++) {
            double v = (1.0 - lam) * c->rel[i] - (n ? lam * c->maxsim[i] : 0.0);
            if (!c->used[i] && (v > bv || (v == bv && best < c->n && c->rel[i] > c->rel[best])))
                bv = v, best = i;
        }
        c->used[best] = 1;
        out[n++] = (struct rec_item){c->cand[best], c->score[best], c->src[best], 1.0};
        for (size_t i = 0; i < c->n; i++)
            if (!c->used[i]) {
                float s = similarity(c, c->cand[i], c->cand[best], dim);
                c->maxsim[i] = n == 1 || s > c->maxsim[i] ? s : c->maxsim[i];
            }
    }
    return n;
}

/* Uniform over the pool (usable items that are not shown yet): rejection
 * sampling, then an exact scan when the pool is a small part of the catalog. */
static int64_t draw(struct rec_ctx *c, int64_t pool)
{
    int64_t items = sess_model_items(c->m), r;

    for (int t = 0; t < 32; t++) {
        int64_t it = (int64_t)(next_u64(c) % (uint64_t)items);
        if (usable(c, it))
            return it;
    }
    r = (int64_t)(next_u64(c) % (uint64_t)pool);
    for (int64_t it = 0; it < items; it++)
        if (usable(c, it) && r-- == 0)
            return it;
    return -1;
}

/* Per slot: with probability epsilon the MMR item is replaced by one drawn
 * uniformly from the pool. Propensities are conditional on earlier slots:
 * 1 - epsilon for the MMR item (1 if the pool is empty), epsilon / |pool|
 * for a drawn one. */
static void explore(struct rec_ctx *c, struct rec_item *out, size_t n, int64_t n_excluded)
{
    int64_t pool;
    double eps = c->o.epsilon;

    for (size_t i = 0; i < c->n; i++)
        c->taken[c->cand[i]] = 0; /* only the shown list is out of the pool */
    for (size_t i = 0; i < n; i++)
        c->taken[out[i].item] = c->gen;
    pool = sess_model_items(c->m) - n_excluded - (int64_t)n;
    for (size_t s = 0; s < n; s++) {
        int64_t it;
        if (pool <= 0 || eps <= 0) {
            out[s].propensity = 1.0;
            continue;
        }
        out[s].propensity = 1.0 - eps;
        if (next_unit(c) >= eps || (it = draw(c, pool)) < 0)
            continue;
        c->taken[it] = c->gen;
        out[s] = (struct rec_item){it, 0.0f, REC_EXPLORE, eps / (double)pool};
        pool--;
    }
}

void rec_rank(struct rec_ctx *c, const struct rec_input *in, struct rec_item *out, size_t *n)
{
    int64_t items = sess_model_items(c->m), n_excluded = 0;

    new_generation(c);
    for (size_t i = 0; i < in->n_exclude; i++) {
        int64_t it = in->exclude[i];
        if (it >= 0 && it < items && c->excluded[it] != c->gen) {
            c->excluded[it] = c->gen;
            n_excluded++;
        }
    }
    candidates(c, in);
    normalise_rel(c);
    *n = mmr(c, out);
    explore(c, out, *n, n_excluded);
    for (size_t i = 0; i < *n; i++)
        if (out[i].source == REC_EXPLORE && warm(in))
            out[i].score = score_of(c, in, out[i].item);
}
