#include "ann.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ASSIGN_ROWS 1024 /* points per assignment sgemm */
#define DEFAULT_ITERS 10

struct ann {
    int64_t items;
    int hidden, lists, probe;
    float *cw;    /* lists x hidden: centroids, weight part */
    float *cb;    /* lists: centroids, bias part (-inf: empty cluster, never probed) */
    float *w;     /* items x hidden, grouped by cluster, ascending id within one */
    float *b;     /* items, same order */
    int64_t *id;  /* items, same order: the catalog id */
    int64_t *off; /* lists + 1: cluster l is rows off[l] .. off[l + 1] */
    int *nlead;   /* lists: the cluster's first nlead[l] rows are its leaders */
    int64_t nl;   /* leaders in all, copied contiguous: */
    float *lw, *lb;
    int64_t *lid;
    int *lcl; /* a leader's cluster */
    double build_ms;
};

struct ann_query {
    const struct ann *a;
    float *cs;               /* ANN_CHUNK x lists: centroid scores */
    struct sess_top *probes; /* ANN_CHUNK x probe (item = cluster) */
    int *nprobe;             /* ANN_CHUNK: probes kept (NaN scores are not) */
    int *end;                /* lists: end of cluster l's sessions in members */
    int *members;            /* ANN_CHUNK x probe: sessions grouped by cluster */
    float *hq;               /* ANN_CHUNK x hidden: the states of one cluster's sessions */
    float *block;            /* ANN_CHUNK x ANN_BLOCK: their scores */
    struct sess_top *buf;    /* chunk x 2k: per session, the items above its threshold */
    float *fs;               /* one session's buffer's scores, for its selection */
    size_t buf_cap;          /* entries of buf (ANN_CHUNK x 2 kmax) */
    int bn[ANN_CHUNK];       /* entries in each session's buffer */
    float thr[ANN_CHUNK];    /* each session's k-th best score so far: nothing below enters */
    int k;                   /* of the current call */
    struct ann_stats st;
};

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---- k-means over the augmented items [W_i, b_i] ---- */

struct kmeans {
    int64_t n; /* points */
    int d, lists;
    const float *x; /* n x d */
    float *c;       /* lists x d */
    float *cn;      /* lists: |c|^2 */
    float *g;       /* ASSIGN_ROWS x lists */
    double *sum;    /* lists x d */
    int64_t *cnt;   /* lists */
    uint64_t rng;
};

/* x (items x (H + 1)): row i is [W_i, b_i] whatever the model's layout. */
static float *augmented(const struct sess_model *m, int64_t n, int h)
{
    const float *w, *b;
    int out_in, d = h + 1;
    float *x = malloc((size_t)n * (size_t)d * sizeof(float));

    if (!x)
        return NULL;
    sess_model_output(m, &w, &b, &out_in);
    for (int64_t i = 0; i < n; i++) {
        float *r = x + i * d;
        for (int j = 0; j < h; j++)
            r[j] = out_in ? w[i * h + j] : w[(int64_t)j * n + i];
        r[h] = b[i];
    }
    return x;
}

/* a[i] = the nearest centroid of x's row i: argmin |c|^2 - 2 x.c (ties: lower). */
static void assign(struct kmeans *k, const float *x, int64_t n, int *a)
{
    for (int64_t r0 = 0; r0 < n; r0 += ASSIGN_ROWS) {
        int rows = (int)(n - r0 < ASSIGN_ROWS ? n - r0 : ASSIGN_ROWS);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, k->lists, k->d, 1.0f,
                    x + r0 * k->d, k->d, k->c, k->d, 0.0f, k->g, k->lists);
        for (int r = 0; r < rows; r++) {
            const float *g = k->g + (size_t)r * k->lists;
            int best = 0;
            float bd = k->cn[0] - 2.0f * g[0];
            for (int l = 1; l < k->lists; l++) {
                float dl = k->cn[l] - 2.0f * g[l];
                if (dl < bd) {
                    bd = dl;
                    best = l;
                }
            }
            a[r0 + r] = best;
        }
    }
}

/* Centroids = means of their points; an empty one takes a random point
 * (reseeded) unless `final`, where it stays empty. */
static void update(struct kmeans *k, const float *x, int64_t n, const int *a, int final)
{
    int d = k->d;

    memset(k->sum, 0, (size_t)k->lists * d * sizeof(double));
    memset(k->cnt, 0, (size_t)k->lists * sizeof(int64_t));
    for (int64_t i = 0; i < n; i++) {
        double *s = k->sum + (size_t)a[i] * d;
        for (int j = 0; j < d; j++)
            s[j] += x[i * d + j];
        k->cnt[a[i]]++;
    }
    for (int l = 0; l < k->lists; l++) {
        float *c = k->c + (size_t)l * d;
        double nn = 0;
        if (!k->cnt[l] && !final)
            memcpy(c, x + (int64_t)(splitmix(&k->rng) % (uint64_t)n) * d, d * sizeof(float));
        for (int j = 0; k->cnt[l] && j < d; j++)
            c[j] = (float)(k->sum[(size_t)l * d + j] / (double)k->cnt[l]);
        for (int j = 0; j < d; j++)
            nn += (double)c[j] * c[j];
        k->cn[l] = (float)nn;
    }
}

/* A seeded sample of at most ANN_SAMPLE_PER_LIST points per list (a
 * partial Fisher-Yates shuffle); its first `lists` rows seed the centroids. */
static float *sample(struct kmeans *k, int64_t *ns)
{
    int64_t n = k->n, want = (int64_t)k->lists * ANN_SAMPLE_PER_LIST;
    int64_t *perm = malloc((size_t)n * sizeof(int64_t));
    float *s;

    *ns = want < n ? want : n;
    s = malloc((size_t)*ns * k->d * sizeof(float));
    if (!perm || !s) {
        free(perm);
        free(s);
        return NULL;
    }
    for (int64_t i = 0; i < n; i++)
        perm[i] = i;
    for (int64_t i = 0; i < *ns; i++) {
        int64_t j = i + (int64_t)(splitmix(&k->rng) % (uint64_t)(n - i)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        memcpy(s + i * k->d, k->x + perm[i] * k->d, (size_t)k->d * sizeof(float));
    }
    free(perm);
    return s;
}

/* a (n) = every item's cluster after iters rounds on the sample. */
static int kmeans_run(struct kmeans *k, int iters, int *a)
{
    int64_t ns;
    float *s = sample(k, &ns);
    int *sa = malloc((size_t)ns * sizeof(int));

    if (!s || !sa) {
        free(s);
        free(sa);
        return ERR_NOMEM;
    }
    for (int l = 0; l < k->lists; l++)
        memcpy(k->c + (size_t)l * k->d, s + (size_t)l * k->d, (size_t)k->d * sizeof(float));
    for (int l = 0; l < k->lists; l++)
        k->cn[l] = cblas_sdot(k->d, k->c + (size_t)l * k->d, 1, k->c + (size_t)l * k->d, 1);
    for (int it = 0; it < iters; it++) {
        assign(k, s, ns, sa);
        update(k, s, ns, sa, 0);
    }
    assign(k, k->x, k->n, a);
    update(k, k->x, k->n, a, 1); /* centroid . q = the mean score of its items */
    free(s);
    free(sa);
    return ERR_OK;
}

/* ---- the index ---- */

/* Items stored again grouped by cluster (counting sort: ascending id within). */
static int group(struct ann *a, const struct kmeans *k, const int *asg)
{
    int h = a->hidden, d = h + 1;
    int64_t *pos = calloc((size_t)a->lists + 1, sizeof(int64_t));

    if (!pos)
        return ERR_NOMEM;
    for (int l = 0; l < a->lists; l++)
        pos[l + 1] = pos[l] + k->cnt[l];
    memcpy(a->off, pos, ((size_t)a->lists + 1) * sizeof(int64_t));
    for (int64_t i = 0; i < a->items; i++) {
        int64_t r = pos[asg[i]]++;
        memcpy(a->w + r * h, k->x + i * d, (size_t)h * sizeof(float));
        a->b[r] = k->x[i * d + h];
        a->id[r] = i;
    }
    for (int l = 0; l < a->lists; l++) {
        memcpy(a->cw + (size_t)l * h, k->c + (size_t)l * d, (size_t)h * sizeof(float));
        a->cb[l] = k->cnt[l] ? k->c[(size_t)l * d + h] : -INFINITY;
    }
    free(pos);
    return ERR_OK;
}

static double row_norm2(const struct ann *a, int64_t r)
{
    double n = (double)a->b[r] * a->b[r];

    for (int j = 0; j < a->hidden; j++)
        n += (double)a->w[r * a->hidden + j] * a->w[r * a->hidden + j];
    return n;
}

static void swap_rows(struct ann *a, int64_t x, int64_t y, float *tmp)
{
    size_t hb = (size_t)a->hidden * sizeof(float);
    float b = a->b[x];
    int64_t id = a->id[x];

    memcpy(tmp, a->w + x * a->hidden, hb);
    memcpy(a->w + x * a->hidden, a->w + y * a->hidden, hb);
    memcpy(a->w + y * a->hidden, tmp, hb);
    a->b[x] = a->b[y];
    a->b[y] = b;
    a->id[x] = a->id[y];
    a->id[y] = id;
}

/* Each cluster's ANN_LEADERS longest rows ([W_i, b_i] norm) move to its
 * front and are copied contiguous: a mean centroid hides a cluster's
 * outliers, the items with the highest scores for the queries that point
 * their way; leaders are scored for every query. */
static int pick_leaders(struct ann *a)
{
    float tmp[SESS_MAX_HIDDEN];
    double *n2 = malloc((size_t)a->items * sizeof(double));

    if (!n2)
        return ERR_NOMEM;
    for (int64_t r = 0; r < a->items; r++)
        n2[r] = row_norm2(a, r);
    for (int l = 0; l < a->lists; l++) {
        int64_t o = a->off[l], sz = a->off[l + 1] - o;
        a->nlead[l] = (int)(sz < ANN_LEADERS ? sz : ANN_LEADERS);
        for (int j = 0; j < a->nlead[l]; j++) { /* selection: the j-th longest to o + j */
            int64_t best = o + j;
            double t;
            for (int64_t r = o + j + 1; r < o + sz; r++)
                best = n2[r] > n2[best] ? r : best;
            swap_rows(a, o + j, best, tmp);
            t = n2[o + j];
            n2[o + j] = n2[best];
            n2[best] = t;
        }
        a->nl += a->nlead[l];
    }
    free(n2);
    a->lw = malloc((size_t)a->nl * a->hidden * sizeof(float));
    a->lb = malloc((size_t)a->nl * sizeof(float));
    a->lid = malloc((size_t)a->nl * sizeof(int64_t));
    a->lcl = malloc((size_t)a->nl * sizeof(int));
    if (!a->lw || !a->lb || !a->lid || !a->lcl)
        return ERR_NOMEM;
    for (int l = 0, n = 0; l < a->lists; l++)
        for (int j = 0; j < a->nlead[l]; j++, n++) {
            int64_t r = a->off[l] + j;
            memcpy(a->lw + (size_t)n * a->hidden, a->w + r * a->hidden,
                   (size_t)a->hidden * sizeof(float));
            a->lb[n] = a->b[r];
            a->lid[n] = a->id[r];
            a->lcl[n] = l;
        }
    return ERR_OK;
}

static int check_opts(const struct ann_opts *o, int64_t items, int *lists, struct err *e)
{
    *lists = o->lists ? o->lists : (int)lround(sqrt((double)items));
    if (*lists < 1)
        *lists = 1;
    if (o->lists < 0 || *lists > ANN_MAX_LISTS || *lists > items)
        return err_set(e, ERR_CONFIG, "clickstream.ivf_lists %d: must be 0 (auto) or 1..%lld "
                       "(at most the catalog's items and %d)", o->lists,
                       (long long)(items < ANN_MAX_LISTS ? items : ANN_MAX_LISTS), ANN_MAX_LISTS);
    if (o->probe < 1)
        return err_set(e, ERR_CONFIG, "clickstream.ivf_probe %d: must be at least 1", o->probe);
    if (o->iters < 0 || o->iters > 1000)
        return err_set(e, ERR_CONFIG, "ann: k-means iterations %d: must be 0..1000", o->iters);
    return ERR_OK;
}

static int build(struct ann *a, const struct sess_model *m, const struct ann_opts *o)
{
    struct kmeans k = {.n = a->items, .d = a->hidden + 1, .lists = a->lists,
                       .rng = o->seed ? o->seed : 1};
    int *asg = malloc((size_t)a->items * sizeof(int));
    int rc = ERR_NOMEM;

    k.x = augmented(m, a->items, a->hidden);
    k.c = malloc((size_t)k.lists * k.d * sizeof(float));
    k.cn = malloc((size_t)k.lists * sizeof(float));
    k.g = malloc((size_t)ASSIGN_ROWS * k.lists * sizeof(float));
    k.sum = malloc((size_t)k.lists * k.d * sizeof(double));
    k.cnt = malloc((size_t)k.lists * sizeof(int64_t));
    if (asg && k.x && k.c && k.cn && k.g && k.sum && k.cnt &&
        kmeans_run(&k, o->iters ? o->iters : DEFAULT_ITERS, asg) == ERR_OK &&
        group(a, &k, asg) == ERR_OK)
        rc = pick_leaders(a);
    free((void *)k.x);
    free(k.c);
    free(k.cn);
    free(k.g);
    free(k.sum);
    free(k.cnt);
    free(asg);
    return rc;
}

int ann_open(struct ann **out, const struct sess_model *m, const struct ann_opts *o,
             struct err *e)
{
    double t0 = now_us();
    struct ann *a;
    int lists;

    *out = NULL;
    if (check_opts(o, sess_model_items(m), &lists, e))
        return e->code;
    a = calloc(1, sizeof(*a));
    if (!a)
        return err_set(e, ERR_NOMEM, "out of memory for the IVF index");
    a->items = sess_model_items(m);
    a->hidden = sess_model_hidden(m);
    a->lists = lists;
    a->probe = o->probe < lists ? o->probe : lists;
    a->cw = malloc((size_t)lists * a->hidden * sizeof(float));
    a->cb = malloc((size_t)lists * sizeof(float));
    a->w = malloc((size_t)a->items * a->hidden * sizeof(float));
    a->b = malloc((size_t)a->items * sizeof(float));
    a->id = malloc((size_t)a->items * sizeof(int64_t));
    a->off = malloc(((size_t)lists + 1) * sizeof(int64_t));
    a->nlead = calloc((size_t)lists, sizeof(int));
    if (!a->cw || !a->cb || !a->w || !a->b || !a->id || !a->off || !a->nlead || build(a, m, o)) {
        ann_close(a);
        return err_set(e, ERR_NOMEM, "out of memory for the IVF index (%d lists)", lists);
    }
    a->build_ms = (now_us() - t0) / 1e3;
    *out = a;
    return ERR_OK;
}

void ann_close(struct ann *a)
{
    if (!a)
        return;
    free(a->cw);
    free(a->cb);
    free(a->w);
    free(a->b);
    free(a->id);
    free(a->off);
    free(a->nlead);
    free(a->lw);
    free(a->lb);
    free(a->lid);
    free(a->lcl);
    free(a);
}

int ann_lists(const struct ann *a)
{
    return a->lists;
}
int ann_probe(const struct ann *a)
{
    return a->probe;
}
double ann_build_ms(const struct ann *a)
{
    return a->build_ms;
}

void ann_list_sizes(const struct ann *a, int64_t *smallest, int64_t *largest)
{
    *smallest = a->items;
    *largest = 0;
    for (int l = 0; l < a->lists; l++) {
        int64_t s = a->off[l + 1] - a->off[l];
        *smallest = s < *smallest ? s : *smallest;
        *largest = s > *largest ? s : *largest;
    }
}

/* ---- queries ---- */

int ann_query_open(struct ann_query **out, const struct ann *a, int kmax, struct err *e)
{
    struct ann_query *q = calloc(1, sizeof(*q));

    *out = NULL;
    if (!q)
        return err_set(e, ERR_NOMEM, "out of memory for IVF query scratch");
    q->buf_cap = (size_t)ANN_CHUNK * 2 * (size_t)(kmax > 0 ? kmax : 1);
    q->buf = malloc(q->buf_cap * sizeof(*q->buf));
    q->fs = malloc(q->buf_cap * sizeof(float)); /* one session's 2k, k up to buf_cap / 2 */
    q->a = a;
    q->cs = malloc((size_t)ANN_CHUNK * a->lists * sizeof(float));
    q->probes = malloc((size_t)ANN_CHUNK * a->probe * sizeof(*q->probes));
    q->nprobe = malloc(ANN_CHUNK * sizeof(int));
    q->end = malloc((size_t)a->lists * sizeof(int));
    q->members = malloc((size_t)ANN_CHUNK * a->probe * sizeof(int));
    q->hq = malloc((size_t)ANN_CHUNK * a->hidden * sizeof(float));
    q->block = malloc((size_t)ANN_CHUNK * ANN_BLOCK * sizeof(float));
    if (!q->cs || !q->probes || !q->nprobe || !q->end || !q->members || !q->hq || !q->block ||
        !q->buf || !q->fs) {
        ann_query_close(q);
        return err_set(e, ERR_NOMEM, "out of memory for IVF query scratch");
    }
    *out = q;
    return ERR_OK;
}

void ann_query_close(struct ann_query *q)
{
    if (!q)
        return;
    free(q->cs);
    free(q->probes);
    free(q->nprobe);
    free(q->end);
    free(q->members);
    free(q->hq);
    free(q->block);
    free(q->buf);
    free(q->fs);
    free(q);
}

const struct ann_stats *ann_query_stats(const struct ann_query *q)
{
    return &q->st;
}

void ann_query_reset_stats(struct ann_query *q)
{
    memset(&q->st, 0, sizeof(q->st));
}

/* Session i's scores sc[0..n) of the items id[0..n) into its buffer, the
 * ones at or above its threshold (the k-th best so far; NaN never ranks).
 * Without a branch on the score: every item is written past the buffer's
 * end, which moves only when the item passes. Whether a score near the
 * threshold passes is a coin flip the branch predictor lost about every
 * other time. A full buffer is cut back to the k best (sess_top_keep). */
#define TAKE_RUN 16 /* scores checked at once against the threshold */

static void take(struct ann_query *q, size_t i, const int64_t *id, const float *sc, int n)
{
    int bn = q->bn[i], full = 2 * q->k;
    struct sess_top *buf = q->buf + i * (size_t)full;
    float thr = q->thr[i];

    for (int c = 0; c < n;) {
        int end = n - c < TAKE_RUN ? n : c + TAKE_RUN;
        if (end - c == TAKE_RUN) {
            /* Once the threshold has risen, a run of 16 rarely holds one
             * that passes: one vector compare skips it, where the store of
             * every item cost as much as the sgemm that scored them
             * (bench/results.md). NaN never passes. */
            int any = 0;
            for (int j = 0; j < TAKE_RUN; j++)
                any |= sc[c + j] >= thr;
            if (!any) {
                c = end;
                continue;
            }
        }
        for (; c < end; c++) {
            float x = sc[c];
            buf[bn] = (struct sess_top){id[c], x};
            bn += x >= thr;
            if (bn == full) /* rare */
                thr = q->thr[i] = sess_top_keep(buf, &bn, q->k, q->fs);
        }
    }
    q->bn[i] = bn;
}

/* Every leader for every session: a candidate, and its cluster's probe
 * score is at least the leader's score. */
static void score_leaders(struct ann_query *q, size_t nb, const float *h)
{
    const struct ann *a = q->a;
    int L = a->lists;

    for (int64_t c0 = 0; c0 < a->nl; c0 += ANN_BLOCK) {
        int bw = (int)(a->nl - c0 < ANN_BLOCK ? a->nl - c0 : ANN_BLOCK);
        for (size_t i = 0; i < nb; i++)
            memcpy(q->block + i * bw, a->lb + c0, (size_t)bw * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, bw, a->hidden, 1.0f, h,
                    a->hidden, a->lw + c0 * a->hidden, a->hidden, 1.0f, q->block, bw);
        for (size_t i = 0; i < nb; i++) {
            const float *sc = q->block + i * bw;
            float *cs = q->cs + i * (size_t)L;
            for (int j = 0; j < bw; j++)
                if (sc[j] > cs[a->lcl[c0 + j]])
                    cs[a->lcl[c0 + j]] = sc[j];
            take(q, i, a->lid + c0, sc, bw);
        }
        q->st.scored += (uint64_t)nb * (uint64_t)bw;
    }
}

/* Every session's best `probe` clusters by centroid score, raised to the
 * best leader's (NaN: none). */
static void choose_probes(struct ann_query *q, size_t nb, const float *h)
{
    const struct ann *a = q->a;
    int L = a->lists, P = a->probe;

    for (size_t i = 0; i < nb; i++)
        memcpy(q->cs + i * (size_t)L, a->cb, (size_t)L * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, L, a->hidden, 1.0f, h,
                a->hidden, a->cw, a->hidden, 1.0f, q->cs, L);
    score_leaders(q, nb, h);
    for (size_t i = 0; i < nb; i++) {
        const float *cs = q->cs + i * (size_t)L;
        struct sess_top *hp = q->probes + i * (size_t)P;
        int n = 0;
        for (int l = 0; l < L; l++) {
            float s = cs[l];
            if (s != s || s == -INFINITY || (n == P && s < hp[0].score))
                continue; /* NaN, an empty cluster, or below the worst kept */
            sess_top_offer(hp, &n, P, (struct sess_top){l, s});
        }
        q->nprobe[i] = n;
    }
}

/* members[] = the sessions probing each cluster, cluster by cluster;
 * cluster l's are members[l ? end[l - 1] : 0 .. end[l]). */
static void group_sessions(struct ann_query *q, size_t nb)
{
    int L = q->a->lists, P = q->a->probe, at = 0;

    memset(q->end, 0, (size_t)L * sizeof(int));
    for (size_t i = 0; i < nb; i++)
        for (int p = 0; p < q->nprobe[i]; p++)
            q->end[q->probes[i * (size_t)P + p].item]++;
    for (int l = 0; l < L; l++) { /* end[l] = start of l, then advanced while filling */
        int c = q->end[l];
        q->end[l] = at;
        at += c;
    }
    for (size_t i = 0; i < nb; i++)
        for (int p = 0; p < q->nprobe[i]; p++)
            q->members[q->end[q->probes[i * (size_t)P + p].item]++] = (int)i;
}

/* The ms sessions of members[] against rows [r0, r0 + bw) of the index. */
static void score_rows(struct ann_query *q, const int *members, int ms, int64_t r0, int bw)
{
    const struct ann *a = q->a;
    double t0 = now_us(), t1;

    for (int j = 0; j < ms; j++)
        memcpy(q->block + (size_t)j * bw, a->b + r0, (size_t)bw * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ms, bw, a->hidden, 1.0f, q->hq,
                a->hidden, a->w + r0 * a->hidden, a->hidden, 1.0f, q->block, bw);
    t1 = now_us();
    for (int j = 0; j < ms; j++)
        take(q, (size_t)members[j], a->id + r0, q->block + (size_t)j * bw, bw);
    q->st.score_us += t1 - t0;
    q->st.select_us += now_us() - t1;
    q->st.scored += (uint64_t)ms * (uint64_t)bw;
}

static void scan_clusters(struct ann_query *q, const float *h)
{
    const struct ann *a = q->a;
    int H = a->hidden, from = 0;

    for (int l = 0; l < a->lists; l++) {
        const int *mem = q->members + from;
        int ms = q->end[l] - from;
        from = q->end[l];
        if (!ms || a->off[l] + a->nlead[l] == a->off[l + 1])
            continue; /* no session probes it, or only its leaders (scored already) */
        for (int j = 0; j < ms; j++) /* gathered: one sgemm for the cluster's sessions */
            memcpy(q->hq + (size_t)j * H, h + (size_t)mem[j] * H, (size_t)H * sizeof(float));
        for (int64_t r0 = a->off[l] + a->nlead[l]; r0 < a->off[l + 1]; r0 += ANN_BLOCK) {
            int64_t left = a->off[l + 1] - r0;
            score_rows(q, mem, ms, r0, (int)(left < ANN_BLOCK ? left : ANN_BLOCK));
        }
    }
}

static void topk_chunk(struct ann_query *q, size_t nb, const float *h, int k, int sorted,
                       struct sess_top *out)
{
    double t0 = now_us(), t1, t2, inner;

    q->k = k;
    for (size_t i = 0; i < nb; i++) {
        q->bn[i] = 0;
        q->thr[i] = -INFINITY;
    }
    choose_probes(q, nb, h);
    t1 = now_us();
    inner = q->st.score_us + q->st.select_us;
    group_sessions(q, nb);
    scan_clusters(q, h);
    t2 = now_us();
    /* score_rows timed its sgemm and heap offers; grouping and gathering
     * (the rest of t1..t2) count as scoring */
    inner = q->st.score_us + q->st.select_us - inner;
    q->st.score_us += (t2 - t1) - inner;
    for (size_t i = 0; i < nb; i++) {
        struct sess_top *buf = q->buf + i * 2 * (size_t)k;
        struct sess_top *o = out + i * (size_t)k;
        if (q->bn[i] > k)
            sess_top_keep(buf, &q->bn[i], k, q->fs);
        memcpy(o, buf, (size_t)q->bn[i] * sizeof(*buf));
        if (sorted)
            sess_top_finish(o, q->bn[i], k);
        for (int j = q->bn[i]; !sorted && j < k; j++)
            o[j] = (struct sess_top){-1, 0.0f};
    }
    q->st.centroid_us += t1 - t0;
    q->st.select_us += now_us() - t2;
    q->st.queries += nb;
}

static int topk(const struct ann *a, struct ann_query *q, size_t n, const float *h, int k,
                int sorted, struct sess_top *out, struct err *e)
{
    size_t chunk = k > 0 ? q->buf_cap / (2 * (size_t)k) : 0; /* sessions whose buffers fit */

    if (q->a != a || chunk == 0)
        return err_set(e, ERR_INVALID, "IVF top %d: the query scratch is for another index or "
                       "for at most %zu items", k, q->buf_cap / 2);
    chunk = chunk < ANN_CHUNK ? chunk : ANN_CHUNK;
    for (size_t d = 0; d < n; d += chunk) {
        size_t nb = n - d < chunk ? n - d : chunk;
        topk_chunk(q, nb, h + d * (size_t)a->hidden, k, sorted, out + d * (size_t)k);
    }
    return ERR_OK;
}

int ann_topk(const struct ann *a, struct ann_query *q, size_t n, const float *h, int k,
             struct sess_top *out, struct err *e)
{
    return topk(a, q, n, h, k, 1, out, e);
}

int ann_topk_unordered(const struct ann *a, struct ann_query *q, size_t n, const float *h, int k,
                       struct sess_top *out, struct err *e)
{
    return topk(a, q, n, h, k, 0, out, e);
}
