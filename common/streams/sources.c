/* src_: candidate sources by name and quota (common/streams/sources.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sources.h"

#define RECENT_MAX 16 /* categories looked at per click */
#define NEW_SCAN 4096 /* newest items looked at for the boost (CAT_NEW_MAX) */

struct src_ctx {
    struct src_spec sp;
    struct src_opts o;
    int64_t *buf[REC_NSOURCES]; /* per source, quota ids */
    float *sim;                 /* content: the kept similarities */
    int64_t *newest;            /* NEW_SCAN ids */
    int64_t *boosted;
};

static int add_entry(struct src_spec *sp, const char *name, long q, struct err *e)
{
    int s = rec_source_by_name(name);

    if (s < 0 || s == REC_EXPLORE || s == REC_EXPLORE_NEW)
        return err_set(e, ERR_CONFIG,
                       "clickstream.sources: unknown source \"%s\" (gru, covisit, popular, "
                       "category, region, cart, new, content)",
                       name);
    if (q < 1 || q > REC_MAX_POOL)
        return err_set(e, ERR_CONFIG, "clickstream.sources: %s:%ld: the quota must be 1..%d",
                       name, q, REC_MAX_POOL);
    for (int i = 0; i < sp->n; i++)
        if (sp->src[i] == (enum rec_source)s)
            return err_set(e, ERR_CONFIG, "clickstream.sources: %s listed twice", name);
    sp->src[sp->n] = (enum rec_source)s;
    sp->quota[sp->n++] = (int)q;
    sp->pool += (int)q;
    if (sp->pool > REC_MAX_POOL)
        return err_set(e, ERR_CONFIG,
                       "clickstream.sources: the quotas sum to more than %d candidates",
                       REC_MAX_POOL);
    return ERR_OK;
}

int src_parse(const char *spec, int candidates, int k, struct src_spec *out, struct err *e)
{
    const char *p = spec;

    memset(out, 0, sizeof(*out));
    if (!spec || !*spec) {
        out->legacy = 1;
        if (add_entry(out, "gru", candidates, e) || add_entry(out, "covisit", k, e) ||
            add_entry(out, "popular", k, e))
            return e->code;
        return ERR_OK;
    }
    while (*p) {
        char name[32], *end;
        size_t len = strcspn(p, ":,");
        long q;
        if (len == 0 || len >= sizeof(name) || p[len] != ':')
            return err_set(e, ERR_CONFIG,
                           "clickstream.sources \"%s\": expected name:quota[,name:quota...] "
                           "near \"%.20s\"",
                           spec, p);
        memcpy(name, p, len);
        name[len] = '\0';
        q = strtol(p + len + 1, &end, 10);
        if (end == p + len + 1 || (*end && *end != ','))
            return err_set(e, ERR_CONFIG, "clickstream.sources: %s: the quota is not a number",
                           name);
        if (add_entry(out, name, q, e))
            return e->code;
        p = *end ? end + 1 : end;
    }
    return ERR_OK;
}

int src_quota(const struct src_spec *sp, enum rec_source s)
{
    for (int i = 0; i < sp->n; i++)
        if (sp->src[i] == s)
            return sp->quota[i];
    return 0;
}

int src_open(struct src_ctx **out, const struct src_spec *sp, const struct src_opts *o,
             struct err *e)
{
    struct src_ctx *x = calloc(1, sizeof(*x));
    int ok = x != NULL;

    *out = NULL;
    if (x) {
        x->sp = *sp;
        x->o = *o;
        x->newest = calloc(NEW_SCAN, sizeof(int64_t));
        x->boosted = calloc(NEW_SCAN, sizeof(int64_t));
        x->sim = calloc((size_t)src_quota(sp, REC_CONTENT) + 1, sizeof(float));
        ok = x->newest && x->boosted && x->sim;
        for (int i = 0; i < sp->n && ok; i++)
            ok = (x->buf[sp->src[i]] = calloc((size_t)sp->quota[i], sizeof(int64_t))) != NULL;
    }
    if (!ok) {
        src_close(x);
        return err_set(e, ERR_NOMEM, "out of memory for the candidate sources");
    }
    *out = x;
    return ERR_OK;
}

void src_close(struct src_ctx *x)
{
    if (!x)
        return;
    for (int i = 0; i < REC_NSOURCES; i++)
        free(x->buf[i]);
    free(x->sim);
    free(x->newest);
    free(x->boosted);
    free(x);
}

/* The categories of the last `recent` items, most recent first, then up to
 * q items of each in turn (most clicked first). */
static size_t by_category(struct src_ctx *x, const struct catalog *cat,
                          const struct src_session *s, int64_t *out, size_t q)
{
    int cats[RECENT_MAX], nc = 0;
    size_t n = 0;

    for (int i = s->n_hist - 1; i >= 0 && s->n_hist - i <= x->o.recent && nc < RECENT_MAX; i--) {
        int cc = cat_category(cat, s->hist[i]), dup = 0;
        for (int j = 0; j < nc && !dup; j++)
            dup = cats[j] == cc;
        if (cc >= 0 && !dup)
            cats[nc++] = cc;
    }
    /* the most recent category gets the larger share */
    for (int j = 0; j < nc && n < q; j++)
        n += cat_in_category(cat, cats[j], out + n, j + 1 < nc ? (q - n + 1) / 2 : q - n);
    return n;
}

static size_t by_region(const struct catalog *cat, const struct src_session *s, int64_t *out,
                        size_t q)
{
    for (int i = s->n_hist - 1; i >= 0; i--) {
        int r = cat_region(cat, s->hist[i]);
        if (r >= 0)
            return cat_in_region(cat, r, out, q);
    }
    return 0;
}

/* Unseen items nearest (cosine) to the last item with an embedding: a
 * sorted insert into the q best (the unseen are few: new items). The
 * catalogue keeps its embeddings unit-normalised too (cat_unit_embedding):
 * a cosine is one float dot product, where one norm and a division in
 * double per item were most of this source's time (a zero vector is
 * orthogonal to every other: cosine 0). */
static size_t by_content(struct src_ctx *x, const struct catalog *cat,
                         const struct src_session *s, int64_t *out, size_t q)
{
    const float *a = NULL;
    const int64_t *un;
    size_t nu, n = 0;
    int dim = 0;

    for (int i = s->n_hist - 1; i >= 0 && !a; i--)
        a = cat_unit_embedding(cat, s->hist[i], &dim);
    if (!a)
        return 0;
    un = cat_unseen(cat, &nu);
    for (size_t u = 0; u < nu; u++) {
        int d2;
        const float *b = cat_unit_embedding(cat, un[u], &d2);
        float s8[8] = {0}, sim;
        size_t k;
        int j = 0;
        for (; j + 8 <= dim; j += 8) /* eight sums: vectorised */
            for (int t = 0; t < 8; t++)
                s8[t] += a[j + t] * b[j + t];
        for (; j < dim; j++)
            s8[0] += a[j] * b[j];
        sim = ((s8[0] + s8[4]) + (s8[1] + s8[5])) + ((s8[2] + s8[6]) + (s8[3] + s8[7]));
        if (n == q && sim <= x->sim[n - 1])
            continue;
        k = n < q ? n++ : n - 1;
        for (; k > 0 && x->sim[k - 1] < sim; k--) {
            x->sim[k] = x->sim[k - 1];
            out[k] = out[k - 1];
        }
        x->sim[k] = sim;
        out[k] = un[u];
    }
    return n;
}

size_t src_lists(struct src_ctx *x, const struct catalog *cat, const struct src_session *s,
                 struct rec_list *lists)
{
    size_t nl = 0;

    for (int i = 0; i < x->sp.n; i++) {
        enum rec_source src = x->sp.src[i];
        size_t q = (size_t)x->sp.quota[i], n = 0;
        int64_t *b = x->buf[src];
        const int64_t *items = b;
        switch (src) {
        case REC_GRU:
            continue;
        case REC_COVISIT:
            items = s->covisit;
            n = s->n_covisit;
            break;
        case REC_POPULAR:
            items = s->popular;
            n = s->n_popular;
            break;
        case REC_CART: /* newest first */
            for (int j = s->n_cart - 1; j >= 0 && n < q; j--)
                b[n++] = s->cart[j];
            break;
        case REC_CATEGORY:
            n = cat ? by_category(x, cat, s, b, q) : 0;
            break;
        case REC_REGION:
            n = cat ? by_region(cat, s, b, q) : 0;
            break;
        case REC_NEW:
            n = cat ? cat_newest(cat, s->now_ms - x->o.new_age_ms, b, q) : 0;
            break;
        case REC_CONTENT:
            n = cat ? by_content(x, cat, s, b, q) : 0;
            break;
        default:
            break;
        }
        lists[nl++] = (struct rec_list){src, items, n, (int)q};
    }
    return nl;
}

size_t src_boosted(struct src_ctx *x, const struct catalog *cat, int64_t now_ms,
                   const int64_t **out)
{
    size_t n = 0, nn;

    *out = x->boosted;
    if (!cat || !x->o.new_max_imps)
        return 0;
    nn = cat_newest(cat, now_ms - x->o.new_age_ms, x->newest, NEW_SCAN);
    for (size_t i = 0; i < nn; i++)
        if (cat_impressions(cat, x->newest[i]) < x->o.new_max_imps)
            x->boosted[n++] = x->newest[i];
    return n;
}

int src_is_new(const struct src_ctx *x, const struct catalog *cat, int64_t item, int64_t now_ms)
{
    int64_t t = cat ? cat_created_ms(cat, item) : 0;

    return t > 0 && t >= now_ms - x->o.new_age_ms;
}
