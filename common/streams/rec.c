/* rec_: candidates, MMR re-ranking and epsilon-greedy exploration
 * (declared in session.h, with the model they rank for). The candidate
 * sources are merged here (union by item id, each candidate recording every
 * source that proposed it); what each source proposes is the caller's
 * (common/streams/sources.h). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "session.h"

struct rec_ctx {
    const struct sess_model *m;
    struct rec_opts o;
    uint64_t rng;
    int64_t ids;        /* ids ranked: 0..ids-1 (the model's items, then new ones) */
    int64_t items;      /* the model's items: the ones with scores and embeddings */
    size_t cap;         /* candidates of one union, with room for the fill */
    const struct rec_input *in; /* of the current rec_rank */
    uint32_t gen;       /* marks below equal to gen are current */
    uint32_t *excluded; /* per id: in the session */
    uint32_t *taken;    /* per id: a candidate, or shown */
    int32_t *slot;      /* per id, while taken: its candidate slot */
    int64_t *cand;      /* per candidate slot (cap of each, sized at open) */
    float *rel, *score, *maxsim;
    enum rec_source *src;
    unsigned *mask;
    unsigned char *used;
    int64_t *heap;
    struct sess_top *tops; /* cap: the GRU's usable items, for their selection */
    float *fs;             /* cap floats: sess_top_keep's and MMR's scratch */
    float *rows;           /* MMR: its candidates' embedding rows, gathered */
    int dim;               /* of an embedding row */
    size_t n;
};

const char *rec_source_name(enum rec_source s)
{
    static const char *const names[REC_NSOURCES] = {
        "gru", "covisit", "popular", "explore", "category",
        "region", "cart", "new", "content", "explore_new"};
    return (unsigned)s < REC_NSOURCES ? names[s] : "?";
}

int rec_source_by_name(const char *name)
{
    if (strcmp(name, "covis") == 0)
        return REC_COVISIT;
    if (strcmp(name, "trending") == 0)
        return REC_POPULAR;
    for (int s = 0; s < REC_NSOURCES; s++)
        if (strcmp(name, rec_source_name((enum rec_source)s)) == 0)
            return s;
    return -1;
}

int rec_ctx_open(struct rec_ctx **out, const struct sess_model *m, const struct rec_opts *o,
                 uint64_t seed, struct err *e)
{
    struct rec_ctx *c;
    int64_t items = sess_model_items(m), ids = o->ids > items ? o->ids : items;
    size_t pool = o->pool ? (size_t)o->pool : (size_t)o->candidates + 2 * (size_t)o->k, cap, rows;
    int dim;

    *out = NULL;
    if (o->pool < 0 || o->pool > REC_MAX_POOL)
        return err_set(e, ERR_CONFIG, "clickstream.sources: a pool of %d candidates, at most %d",
                       o->pool, REC_MAX_POOL);
    if (!(o->new_epsilon >= 0 && o->new_epsilon <= 1))
        return err_set(e, ERR_CONFIG, "clickstream.new_item_epsilon %g: must be in [0, 1]",
                       o->new_epsilon);
    if (o->k < 1 || o->k > REC_MAX_K)
        return err_set(e, ERR_CONFIG, "clickstream.k %d: must be 1..%d", o->k, REC_MAX_K);
    if (o->candidates < (o->pool ? 0 : 1) || o->candidates > REC_MAX_CANDIDATES)
        return err_set(e, ERR_CONFIG, "clickstream.candidates %d: must be 1..%d", o->candidates,
                       REC_MAX_CANDIDATES);
    if (!(o->lambda_diversity >= 0 && o->lambda_diversity <= 1))
        return err_set(e, ERR_CONFIG, "clickstream.lambda_diversity %g: must be in [0, 1]",
                       o->lambda_diversity);
    if (!(o->epsilon >= 0 && o->epsilon <= 1))
        return err_set(e, ERR_CONFIG, "clickstream.epsilon %g: must be in [0, 1]", o->epsilon);
    cap = pool + 2 * REC_MAX_K; /* the fill of a tiny catalogue */
    rows = o->mmr_pool > 0 && (size_t)o->mmr_pool < cap ? (size_t)o->mmr_pool : cap;
    dim = (int)(sess_model_embedding(m, 1) - sess_model_embedding(m, 0));
    c = calloc(1, sizeof(*c));
    if (!c || !(c->excluded = calloc((size_t)ids, sizeof(uint32_t))) ||
        !(c->taken = calloc((size_t)ids, sizeof(uint32_t))) ||
        !(c->slot = calloc((size_t)ids, sizeof(int32_t))) ||
        !(c->cand = calloc(cap, sizeof(int64_t))) || !(c->rel = calloc(cap, sizeof(float))) ||
        !(c->score = calloc(cap, sizeof(float))) || !(c->maxsim = calloc(cap, sizeof(float))) ||
        !(c->src = calloc(cap, sizeof(*c->src))) || !(c->mask = calloc(cap, sizeof(unsigned))) ||
        !(c->used = calloc(cap, 1)) || !(c->heap = calloc(cap, sizeof(int64_t))) ||
        !(c->tops = calloc(cap, sizeof(*c->tops))) || !(c->fs = calloc(cap, sizeof(float))) ||
        !(c->rows = calloc(rows * (size_t)dim, sizeof(float)))) {
        rec_ctx_close(c);
        return err_set(e, ERR_NOMEM, "out of memory for ranking scratch");
    }
    c->ids = ids;
    c->items = items;
    c->cap = cap;
    c->dim = dim;
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
    void *a[] = {c->excluded, c->taken, c->slot, c->cand, c->rel,  c->score, c->maxsim,
                 c->src,      c->mask,  c->used, c->heap, c->tops, c->fs,    c->rows};
    for (size_t i = 0; i < sizeof(a) / sizeof(a[0]); i++)
        free(a[i]);
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
        memset(c->excluded, 0, (size_t)c->ids * sizeof(uint32_t));
        memset(c->taken, 0, (size_t)c->ids * sizeof(uint32_t));
        c->gen = 1;
    }
    c->n = 0;
}

/* An item of the model, or (past the model's) of the catalogue. */
static int exists(const struct rec_ctx *c, int64_t it)
{
    return it >= 0 && it < c->ids &&
           (it < c->items || (c->in && c->in->present && c->in->present[it]));
}

static int usable(const struct rec_ctx *c, int64_t it)
{
    return exists(c, it) && c->excluded[it] != c->gen && c->taken[it] != c->gen;
}

static void add(struct rec_ctx *c, int64_t it, float rel, float score, enum rec_source s)
{
    c->taken[it] = c->gen;
    c->slot[it] = (int32_t)c->n;
    c->cand[c->n] = it;
    c->rel[c->n] = rel;
    c->score[c->n] = score;
    c->src[c->n] = s;
    c->mask[c->n] = 1u << s;
    c->n++;
}

/* The top `want` scores among usable items: a min-heap of candidate slots. */
static void top_scores(struct rec_ctx *c, const float *scores, int want)
{
    int64_t items = sess_model_items(c->m);
    int64_t *heap = c->heap;
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

/* The GRU score of any item of the model: from the full scores, or one dot
 * product; NaN for an item the model has no row for (new). */
static float score_of(const struct rec_ctx *c, const struct rec_input *in, int64_t it)
{
    if (it >= c->items)
        return NAN;
    return in->scores ? in->scores[it] : sess_score_one(c->m, in->h, it);
}

/* The GRU scores of slots [from, c->n) (relevance = score), the rows of
 * one source's items at once (sess_score_many). */
static void score_slots(struct rec_ctx *c, const struct rec_input *in, size_t from)
{
    if (in->scores) {
        for (size_t i = from; i < c->n; i++)
            c->rel[i] = c->score[i] = score_of(c, in, c->cand[i]);
        return;
    }
    sess_score_many(c->m, in->h, c->cand + from, c->n - from, c->score + from);
    memcpy(c->rel + from, c->score + from, (c->n - from) * sizeof(float));
}

/* Up to quota usable items of a list, best first; an item already proposed
 * records this source too. Cart items may be in the session. */
static void from_list(struct rec_ctx *c, const struct rec_input *in, const struct rec_list *l)
{
    int w = warm(in), q = l->quota;
    size_t from = c->n;

    for (size_t i = 0, j = 0; i < l->n && c->n < c->cap && (int)j < q; i++) {
        int64_t it = l->items[i];
        float rel;
        if (!exists(c, it) || (c->excluded[it] == c->gen && l->source != REC_CART))
            continue;
        if (c->taken[it] == c->gen) {
            c->mask[c->slot[it]] |= 1u << l->source;
            continue;
        }
        rel = 1.0f - (float)j++ / (float)q; /* cold: the list's order; warm: scored below */
        add(c, it, rel, rel, l->source);
    }
    if (w)
        score_slots(c, in, from);
}

static void candidates(struct rec_ctx *c, const struct rec_input *in)
{
    int k = c->o.k, w = warm(in);
    size_t cap = c->cap;
    int64_t items = sess_model_items(c->m);

    if (in->scores) {
        top_scores(c, in->scores, c->o.candidates);
    } else if (w) { /* the session's items are skipped, then the best `candidates` */
        int nt = 0;
        for (size_t i = 0; i < in->n_top && (size_t)nt < c->cap; i++)
            if (usable(c, in->top[i].item))
                c->tops[nt++] = in->top[i];
        if (nt > c->o.candidates) /* the same set as the first of a sorted list */
            sess_top_keep(c->tops, &nt, c->o.candidates, c->fs);
        for (int i = 0; i < nt; i++)
            add(c, c->tops[i].item, c->tops[i].score, c->tops[i].score, REC_GRU);
    }
    if (in->n_lists) {
        for (size_t l = 0; l < in->n_lists; l++)
            from_list(c, in, &in->lists[l]);
        return; /* the sources decide: no fill */
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
    for (int64_t it = 0; it < items && c->n < (size_t)k && c->n < cap; it++)
        if (usable(c, it)) {
            float s = w ? score_of(c, in, it) : 0.0f;
            add(c, it, s, s, REC_POPULAR);
        }
}

/* New items have no GRU score: they rank as the least relevant candidate
 * (they are reached through the boosted exploration, rec_opts.new_epsilon). */
static void unscored(struct rec_ctx *c)
{
    float lo = INFINITY;

    for (size_t i = 0; i < c->n; i++)
        if (c->rel[i] == c->rel[i] && c->rel[i] < lo)
            lo = c->rel[i];
    for (size_t i = 0; i < c->n; i++)
        if (c->rel[i] != c->rel[i])
            c->rel[i] = lo < INFINITY ? lo : 0.0f;
}

/* Keeps the mmr_pool most relevant candidates: MMR costs k passes over
 * what it re-ranks, a pool of thousands would not fit the throughput
 * target (bench/results.md). The float selection of the GRU's top
 * (sess_topk's order: slot numbers as the ids, so ties keep the earlier
 * slot), then the kept slots moved down in their order. */
static void keep_best(struct rec_ctx *c, size_t want)
{
    int n = (int)c->n, m = 0;

    if (!want || c->n <= want)
        return;
    for (int i = 0; i < n; i++)
        c->tops[i] = (struct sess_top){i, c->rel[i]};
    sess_top_keep(c->tops, &n, (int)want, c->fs);
    memset(c->used, 0, c->n);
    for (int i = 0; i < n; i++)
        c->used[c->tops[i].item] = 1;
    for (size_t i = 0; i < c->n; i++) {
        if (!c->used[i]) {
            c->taken[c->cand[i]] = 0; /* back in the exploration pool */
            continue;
        }
        c->cand[m] = c->cand[i], c->rel[m] = c->rel[i], c->score[m] = c->score[i];
        c->src[m] = c->src[i], c->mask[m] = c->mask[i];
        c->slot[c->cand[m]] = m;
        m++;
    }
    c->n = want;
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

/* The rows MMR compares (cosine: the unit rows; dot: the rows as trained,
 * unbounded: a long embedding weighs more), gathered once per click so
 * that each pick's similarities to every candidate are one sgemv, instead
 * of one sdot call per pair (MMR's similarities were the largest cost of
 * ranking, bench/results.md). A new item (no embedding of the model's) is
 * a zero row: similarity 0. */
static void gather_rows(struct rec_ctx *c)
{
    size_t rb = (size_t)c->dim * sizeof(float);

    for (size_t i = 0; i < c->n; i++) {
        float *r = c->rows + i * (size_t)c->dim;
        if (c->cand[i] >= c->items)
            memset(r, 0, rb);
        else
            memcpy(r,
                   c->o.mmr_dot ? sess_model_embedding(c->m, c->cand[i])
                                : sess_model_unit_embedding(c->m, c->cand[i]),
                   rb);
    }
}

/* Greedy MMR (Carbonell and Goldstein), with the seed's lambda_diversity as
 * the weight of the diversity term: argmax (1 - lambda) * rel - lambda *
 * max sim(selected). Ties go to the more relevant item, so lambda 1 (pure
 * diversity) still starts from the most relevant one. */
static size_t mmr(struct rec_ctx *c, struct rec_item *out)
{
    double lam = c->o.lambda_diversity;
    int dim = c->dim;
    size_t n = 0;

    memset(c->used, 0, c->n);
    for (size_t i = 0; i < c->n; i++)
        c->maxsim[i] = 0.0f;
    if (c->o.k > 1 && c->n > 1)
        gather_rows(c);
    while (n < (size_t)c->o.k && n < c->n) {
        size_t best = c->n;
        double bv = -INFINITY;
        for (size_t i = 0; i < c->n; i++) {
            double v = (1.0 - lam) * c->rel[i] - (n ? lam * c->maxsim[i] : 0.0);
            if (!c->used[i] && (v > bv || (v == bv && best < c->n && c->rel[i] > c->rel[best])))
                bv = v, best = i;
        }
        c->used[best] = 1;
        out[n++] =
            (struct rec_item){c->cand[best], c->score[best], c->src[best], 1.0, c->mask[best]};
        if (n == (size_t)c->o.k || n == c->n)
            break; /* no further pick: no similarities needed */
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)c->n, dim, 1.0f, c->rows, dim,
                    c->rows + best * (size_t)dim, 1, 0.0f, c->fs, 1);
        for (size_t i = 0; i < c->n; i++)
            if (!c->used[i])
                c->maxsim[i] = n == 1 || c->fs[i] > c->maxsim[i] ? c->fs[i] : c->maxsim[i];
    }
    return n;
}

/* Uniform over the pool (usable items that are not shown yet): rejection
 * sampling, then an exact scan when the pool is a small part of the ids. */
static int64_t draw(struct rec_ctx *c, int64_t pool)
{
    int64_t r;

    for (int t = 0; t < 32; t++) {
        int64_t it = (int64_t)(next_u64(c) % (uint64_t)c->ids);
        if (usable(c, it))
            return it;
    }
    r = (int64_t)(next_u64(c) % (uint64_t)pool);
    for (int64_t it = 0; it < c->ids; it++)
        if (usable(c, it) && r-- == 0)
            return it;
    return -1;
}

/* Boosted new items still usable (not in the session, not shown). */
static size_t boosted_left(const struct rec_ctx *c, const struct rec_input *in)
{
    size_t nb = 0;

    for (size_t i = 0; i < in->n_boosted; i++)
        nb += usable(c, in->boosted[i]);
    return nb;
}

static int is_boosted(const struct rec_ctx *c, const struct rec_input *in, int64_t it)
{
    for (size_t i = 0; i < in->n_boosted; i++)
        if (in->boosted[i] == it)
            return usable(c, it);
    return 0;
}

static int64_t draw_boosted(struct rec_ctx *c, const struct rec_input *in, size_t nb)
{
    size_t r = (size_t)(next_u64(c) % (uint64_t)nb);

    for (size_t i = 0; i < in->n_boosted; i++)
        if (usable(c, in->boosted[i]) && r-- == 0)
            return in->boosted[i];
    return -1;
}

/* Per slot: with probability b (new_epsilon, when a boosted new item is
 * left) the item is drawn uniformly from the boosted new items; else with
 * probability epsilon uniformly from the pool (every usable item not shown);
 * else the MMR item stays. Propensities are conditional on earlier slots:
 * (1 - b)(1 - epsilon) for the MMR item, b / |boosted| + (1 - b) epsilon /
 * |pool| for a drawn boosted item (it is in the pool too), (1 - b) epsilon
 * / |pool| for another drawn one. */
static void explore(struct rec_ctx *c, const struct rec_input *in, struct rec_item *out, size_t n,
                    int64_t pool)
{
    double eps = c->o.epsilon, beps = c->o.new_epsilon;

    for (size_t i = 0; i < c->n; i++)
        c->taken[c->cand[i]] = 0; /* only the shown list is out of the pool */
    size_t nb;

    for (size_t i = 0; i < n; i++)
        c->taken[out[i].item] = c->gen;
    nb = beps > 0 ? boosted_left(c, in) : 0; /* less one per boosted item drawn below */
    for (size_t s = 0; s < n; s++) {
        double b = nb ? beps : 0.0, e = pool > 0 ? eps : 0.0, u;
        int was_boosted;
        int64_t it = -1;
        enum rec_source src = REC_EXPLORE;
        out[s].propensity = (1.0 - b) * (1.0 - e);
        if (b <= 0 && e <= 0) {
            out[s].propensity = 1.0;
            continue;
        }
        u = next_unit(c);
        if (u < b) {
            it = draw_boosted(c, in, nb);
            src = REC_EXPLORE_NEW;
        } else if (u < b + (1.0 - b) * e) {
            it = draw(c, pool);
        }
        if (it < 0)
            continue;
        /* a boosted item could have come from either draw */
        was_boosted = src == REC_EXPLORE_NEW || (b > 0 && is_boosted(c, in, it));
        c->taken[it] = c->gen;
        out[s] = (struct rec_item){it, 0.0f, src,
                                   (1.0 - b) * e / (double)pool +
                                       (was_boosted ? b / (double)nb : 0.0),
                                   1u << src};
        nb -= (size_t)was_boosted;
        pool--;
    }
}

/* Marks the session's items; returns how many of them exist. */
static int64_t mark_excluded(struct rec_ctx *c, const struct rec_input *in)
{
    int64_t n_excluded = 0;

    for (size_t i = 0; i < in->n_exclude; i++) {
        int64_t it = in->exclude[i];
        if (exists(c, it) && c->excluded[it] != c->gen) {
            c->excluded[it] = c->gen;
            n_excluded++;
        }
    }
    return n_excluded;
}

/* From the candidates of c: MMR over the mmr_pool most relevant, then
 * exploration. */
static void finish(struct rec_ctx *c, const struct rec_input *in, int64_t n_excluded,
                   struct rec_item *out, size_t *n)
{
    int64_t pool;

    keep_best(c, (size_t)c->o.mmr_pool);
    normalise_rel(c);
    *n = mmr(c, out);
    /* the pool: every item (the model's and the catalogue's new ones) that
     * is neither in the session nor shown (a cart item may be both) */
    pool = c->items + (in->present ? in->n_present : 0) - n_excluded;
    for (size_t i = 0; i < *n; i++)
        pool -= c->excluded[out[i].item] != c->gen;
    explore(c, in, out, *n, pool);
    for (size_t i = 0; i < *n; i++) {
        if ((out[i].source == REC_EXPLORE || out[i].source == REC_EXPLORE_NEW) && warm(in))
            out[i].score = score_of(c, in, out[i].item);
        if (out[i].score != out[i].score)
            out[i].score = 0.0f; /* a new item: no GRU score */
    }
}

void rec_rank(struct rec_ctx *c, const struct rec_input *in, struct rec_item *out, size_t *n)
{
    int64_t n_excluded;

    c->in = in;
    new_generation(c);
    n_excluded = mark_excluded(c, in);
    candidates(c, in);
    unscored(c);
    finish(c, in, n_excluded, out, n);
    c->in = NULL;
}

size_t rec_ctx_pool_cap(const struct rec_ctx *c)
{
    return c->cap;
}

size_t rec_pool_build(struct rec_ctx *c, const struct rec_input *in, size_t keep,
                      struct rec_cand *pool, size_t cap)
{
    c->in = in;
    new_generation(c);
    mark_excluded(c, in);
    candidates(c, in);
    unscored(c);
    keep_best(c, keep);
    keep = c->n < cap ? c->n : cap;
    for (size_t i = 0; i < keep; i++)
        pool[i] = (struct rec_cand){c->cand[i], c->rel[i], c->score[i], c->src[i], c->mask[i]};
    c->in = NULL;
    return keep;
}

void rec_rank_pool(struct rec_ctx *c, const struct rec_input *in, const struct rec_cand *pool,
                   size_t n_pool, struct rec_item *out, size_t *n)
{
    int64_t n_excluded;

    c->in = in;
    new_generation(c);
    n_excluded = mark_excluded(c, in);
    for (size_t i = 0; i < n_pool && c->n < c->cap; i++) {
        if (!exists(c, pool[i].item) || c->taken[pool[i].item] == c->gen)
            continue; /* cannot happen: a pool of rec_pool_build */
        add(c, pool[i].item, pool[i].rel, pool[i].score, pool[i].src);
        c->mask[c->n - 1] = pool[i].mask;
    }
    finish(c, in, n_excluded, out, n);
    c->in = NULL;
}
