#include "abtest.h"

#include <errno.h>
#include <math.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "features.h"
#include "log.h"
#include "txn.h"

struct ab_variant {
    char name[AB_NAME_MAX];
    char model[AB_PATH_MAX];
    char baseline[AB_PATH_MAX]; /* "" = monitor.baseline */
    double share, cum;          /* cum: share_0 + ... + share_i, the last one 1 */
};

struct ab {
    char id[AB_ID_MAX];
    char salt[AB_SALT_MAX];
    enum ab_mode mode;
    size_t n;
    struct ab_variant v[AB_MAX_VARIANTS];
};

/* ---- assignment ---- */

uint64_t ab_hash(const char *salt, const char *id)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    char small[AB_SALT_MAX + 1 + 2 * EV_ID_MAX], *buf = small;
    size_t ns = strlen(salt), ni = strlen(id);
    uint64_t h = 0;

    /* One buffer for the one-shot SHA256() (the streaming calls are
     * deprecated in OpenSSL 3); ids are short, so no allocation unless a
     * caller passes something unusual. */
    if (ns + 1 + ni > sizeof(small) && !(buf = malloc(ns + 1 + ni)))
        return 0;
    memcpy(buf, salt, ns);
    buf[ns] = ':';
    memcpy(buf + ns + 1, id, ni);
    SHA256((const unsigned char *)buf, ns + 1 + ni, md);
    if (buf != small)
        free(buf);
    for (int i = 0; i < 8; i++)
        h = h << 8 | md[i];
    return h;
}

double ab_unit(const char *salt, const char *id)
{
    /* 53 bits: exactly representable, so Python's (h >> 11) / 2**53 is
     * the same double (h / 2**64 would round up to 1.0 near the top). */
    return (double)(ab_hash(salt, id) >> 11) / 9007199254740992.0;
}

static int valid_name(const char *s, size_t n)
{
    if (n == 0 || n >= AB_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(s[i] == '-' || s[i] == '_' || s[i] == '.' || (s[i] >= '0' && s[i] <= '9') ||
              (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')))
            return 0;
    return 1;
}

/* One "name:model_file:share" item (the file may hold ':', the name and
 * the share may not). */
static int parse_variant(struct ab *a, const char *item, size_t len, struct err *e)
{
    struct ab_variant *v = &a->v[a->n];
    const char *c1 = memchr(item, ':', len), *c2 = item + len;
    char share[64], *end;

    while (c2 > item && c2[-1] != ':')
        c2--;
    if (!c1 || c2 - 1 <= c1)
        return err_set(e, ERR_CONFIG, "experiment.variants: \"%.*s\" is not name:model_file:share",
                       (int)len, item);
    if (!valid_name(item, (size_t)(c1 - item)))
        return err_set(e, ERR_CONFIG,
                       "experiment.variants: variant name \"%.*s\" must be 1..%d of [A-Za-z0-9._-]",
                       (int)(c1 - item), item, AB_NAME_MAX - 1);
    memcpy(v->name, item, (size_t)(c1 - item));
    v->name[c1 - item] = '\0';
    if ((size_t)(c2 - 1 - (c1 + 1)) >= AB_PATH_MAX)
        return err_set(e, ERR_CONFIG, "experiment.variants: %s: model path too long", v->name);
    snprintf(v->model, sizeof(v->model), "%.*s", (int)(c2 - 1 - (c1 + 1)), c1 + 1);
    snprintf(share, sizeof(share), "%.*s", (int)(item + len - c2), c2);
    errno = 0;
    v->share = strtod(share, &end);
    if (!*share || *end || errno || !(v->share >= 0 && v->share <= 1))
        return err_set(e, ERR_CONFIG, "experiment.variants: %s: share \"%s\" is not in [0, 1]",
                       v->name, share);
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i].name, v->name) == 0)
            return err_set(e, ERR_CONFIG, "experiment.variants: variant %s named twice", v->name);
    a->n++;
    return ERR_OK;
}

static int parse_variants(struct ab *a, const char *spec, struct err *e)
{
    double cum = 0;

    for (const char *p = spec; *p;) {
        size_t len = strcspn(p, ",");
        while (len && (*p == ' ' || *p == '\t'))
            p++, len--;
        if (a->n == AB_MAX_VARIANTS)
            return err_set(e, ERR_CONFIG, "experiment.variants: more than %d variants",
                           AB_MAX_VARIANTS);
        if (parse_variant(a, p, len, e))
            return e->code;
        p += len;
        if (*p == ',')
            p++;
    }
    if (a->n == 0)
        return err_set(e, ERR_CONFIG, "experiment.variants: empty (name:model_file:share,...)");
    for (size_t i = 0; i < a->n; i++)
        a->v[i].cum = cum += a->v[i].share;
    if (fabs(cum - 1) > 1e-6)
        return err_set(e, ERR_CONFIG, "experiment.variants: shares sum to %.9g, not 1", cum);
    a->v[a->n - 1].cum = 1; /* u < 1 always lands in a variant */
    return ERR_OK;
}

struct ab *ab_open_spec(const char *id, const char *salt, const char *mode, const char *variants,
                        struct err *e)
{
    struct ab *a = calloc(1, sizeof(*a));

    if (!a) {
        err_set(e, ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (!*id || strlen(id) >= AB_ID_MAX)
        err_set(e, ERR_CONFIG, "experiment.id: must be 1..%d bytes", AB_ID_MAX - 1);
    else if (strlen(salt) >= AB_SALT_MAX)
        err_set(e, ERR_CONFIG, "experiment.salt: longer than %d bytes", AB_SALT_MAX - 1);
    else if (strcmp(mode, "split") != 0 && strcmp(mode, "shadow") != 0)
        err_set(e, ERR_CONFIG, "experiment.mode: \"%s\" is not split or shadow", mode);
    else if (parse_variants(a, variants, e) == ERR_OK) {
        snprintf(a->id, sizeof(a->id), "%s", id);
        snprintf(a->salt, sizeof(a->salt), "%s", *salt ? salt : id);
        a->mode = strcmp(mode, "shadow") == 0 ? AB_SHADOW : AB_SPLIT;
        return a;
    }
    free(a);
    return NULL;
}

/* One "name:baseline_file" item of experiment.baselines. */
static int parse_baseline(struct ab *a, const char *item, size_t len, struct err *e)
{
    const char *colon = memchr(item, ':', len);
    size_t nl = colon ? (size_t)(colon - item) : 0;

    if (!colon || colon + 1 == item + len)
        return err_set(e, ERR_CONFIG, "experiment.baselines: \"%.*s\" is not name:baseline_file",
                       (int)len, item);
    for (size_t i = 0; i < a->n; i++) {
        if (strlen(a->v[i].name) != nl || memcmp(a->v[i].name, item, nl) != 0)
            continue;
        if (len - nl - 1 >= AB_PATH_MAX)
            return err_set(e, ERR_CONFIG, "experiment.baselines: %s: path too long", a->v[i].name);
        snprintf(a->v[i].baseline, AB_PATH_MAX, "%.*s", (int)(len - nl - 1), colon + 1);
        return ERR_OK;
    }
    return err_set(e, ERR_CONFIG,
                   "experiment.baselines: \"%.*s\" is no variant of "
                   "experiment.variants",
                   (int)nl, item);
}

int ab_set_baselines(struct ab *a, const char *spec, struct err *e)
{
    for (const char *p = spec; *p;) {
        size_t len = strcspn(p, ",");
        while (len && (*p == ' ' || *p == '\t'))
            p++, len--;
        if (parse_baseline(a, p, len, e))
            return e->code;
        p += len;
        if (*p == ',')
            p++;
    }
    return ERR_OK;
}

struct ab *ab_open_cfg(const struct cfg *c, struct err *e)
{
    struct ab *a;

    err_clear(e);
    if (!*cfg_str(c, "experiment.id"))
        return NULL;
    a = ab_open_spec(cfg_str(c, "experiment.id"), cfg_str(c, "experiment.salt"),
                     cfg_str(c, "experiment.mode"), cfg_str(c, "experiment.variants"), e);
    if (a && ab_set_baselines(a, cfg_str(c, "experiment.baselines"), e)) {
        ab_close(a);
        return NULL;
    }
    return a;
}

void ab_close(struct ab *a)
{
    free(a);
}

const char *ab_id(const struct ab *a)
{
    return a->id;
}

const char *ab_salt(const struct ab *a)
{
    return a->salt;
}

enum ab_mode ab_mode(const struct ab *a)
{
    return a->mode;
}

size_t ab_num_variants(const struct ab *a)
{
    return a->n;
}

const char *ab_variant_name(const struct ab *a, size_t i)
{
    return a->v[i].name;
}

const char *ab_variant_model(const struct ab *a, size_t i)
{
    return a->v[i].model;
}

double ab_variant_share(const struct ab *a, size_t i)
{
    return a->v[i].share;
}

const char *ab_variant_baseline(const struct ab *a, size_t i)
{
    return a->v[i].baseline;
}

size_t ab_assign_split(const struct ab *a, const char *id)
{
    double u = ab_unit(a->salt, id);

    for (size_t i = 0; i < a->n; i++)
        if (u < a->v[i].cum)
            return i;
    return a->n - 1; /* not reached: the last cum is 1 */
}

size_t ab_assign(const struct ab *a, const char *id)
{
    return a->mode == AB_SHADOW ? 0 : ab_assign_split(a, id);
}

/* ---- statistics ---- */

/* Continued fraction of I_x(a,b) (modified Lentz; DLMF 8.17.22), good for
 * x < (a + 1) / (a + b + 2). */
static double betacf(double a, double b, double x)
{
    const double tiny = 1e-300, eps = 1e-16;
    double c = 1, d = 1 - (a + b) * x / (a + 1), h;

    d = fabs(d) < tiny ? tiny : d;
    d = 1 / d;
    h = d;
    for (int m = 1; m <= 10000; m++) {
        double m2 = 2.0 * m;
        double num = m * (b - m) * x / ((a + m2 - 1) * (a + m2));
        for (int k = 0; k < 2; k++) {
            d = 1 + num * d;
            d = fabs(d) < tiny ? tiny : d;
            c = 1 + num / c;
            c = fabs(c) < tiny ? tiny : c;
            d = 1 / d;
            h *= d * c;
            num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1));
        }
        if (fabs(d * c - 1) < eps)
            break;
    }
    return h;
}

double ab_betainc(double a, double b, double x)
{
    double lf;

    if (!(a > 0 && b > 0 && x >= 0 && x <= 1))
        return NAN;
    if (x == 0 || x == 1)
        return x;
    /* x^a (1-x)^b / (a B(a,b)), in logs so large a, b do not overflow. */
    lf = lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) + b * log1p(-x);
    if (x < (a + 1) / (a + b + 2))
        return exp(lf) * betacf(a, b, x) / a;
    return 1 - exp(lf) * betacf(b, a, 1 - x) / b;
}

double ab_t_cdf(double t, double df)
{
    double tail;

    if (isnan(t) || !(df > 0))
        return NAN;
    if (isinf(t))
        return t > 0 ? 1 : 0;
    /* P(|T| > |t|) = I_{df/(df+t^2)}(df/2, 1/2); for tiny t that x rounds
     * to 1, and the complementary form keeps the precision. */
    if (t * t < df)
        tail = 1 - ab_betainc(0.5, df / 2, t * t / (df + t * t));
    else
        tail = ab_betainc(df / 2, 0.5, df / (df + t * t));
    return t >= 0 ? 1 - tail / 2 : tail / 2;
}

double ab_t_ppf(double q, double df)
{
    double lo = -1, hi = 1;

    if (!(q > 0 && q < 1) || !(df > 0))
        return NAN;
    /* The lower tail is computed with full relative precision; near 1 the
     * CDF is not, so the upper half comes by symmetry. */
    if (q > 0.5)
        return -ab_t_ppf(1 - q, df);
    while (ab_t_cdf(lo, df) > q)
        lo *= 2;
    while (ab_t_cdf(hi, df) < q)
        hi *= 2;
    for (int i = 0; i < 300 && hi - lo > 1e-15 * fabs(lo); i++) {
        double mid = (lo + hi) / 2;
        if (ab_t_cdf(mid, df) < q)
            lo = mid;
        else
            hi = mid;
    }
    return (lo + hi) / 2;
}

/* Mean and unbiased variance (two passes: no cancellation). */
static void moments(const double *x, size_t n, double *mean, double *var)
{
    double s = 0, ss = 0;

    for (size_t i = 0; i < n; i++)
        s += x[i];
    *mean = s / (double)n;
    for (size_t i = 0; i < n; i++)
        ss += (x[i] - *mean) * (x[i] - *mean);
    *var = ss / (double)(n - 1);
}

int ab_welch_test(const double *a, size_t na, const double *b, size_t nb, double conf,
                  struct ab_welch *out, struct err *e)
{
    double va, vb, qa, qb, q;

    if (na < 2 || nb < 2)
        return err_set(e, ERR_INVALID, "welch: groups of %zu and %zu values (2 each needed)", na,
                       nb);
    if (!(conf > 0 && conf < 1))
        return err_set(e, ERR_INVALID, "welch: confidence %g not in (0, 1)", conf);
    moments(a, na, &out->mean_a, &va);
    moments(b, nb, &out->mean_b, &vb);
    qa = va / (double)na;
    qb = vb / (double)nb;
    if (!(qa + qb > 0) || !isfinite(qa + qb))
        return err_set(e, ERR_INVALID, "welch: no variance in either group");
    out->diff = out->mean_b - out->mean_a;
    out->se = sqrt(qa + qb);
    out->t = out->diff / out->se;
    out->df = (qa + qb) * (qa + qb) / (qa * qa / (double)(na - 1) + qb * qb / (double)(nb - 1));
    out->p = 2 * ab_t_cdf(-fabs(out->t), out->df);
    q = ab_t_ppf((1 + conf) / 2, out->df);
    out->lo = out->diff - q * out->se;
    out->hi = out->diff + q * out->se;
    return ERR_OK;
}

/* ---- file watch ---- */

uint64_t ab_files_stamp(const char *const *paths, size_t n)
{
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < n; i++) {
        struct stat st;
        uint64_t v[3] = {0, 0, 0};
        if (stat(paths[i], &st) == 0) {
            v[0] = (uint64_t)st.st_mtim.tv_sec;
            v[1] = (uint64_t)st.st_mtim.tv_nsec;
            v[2] = (uint64_t)st.st_size;
        }
        for (int k = 0; k < 3; k++)
            h = (h ^ v[k]) * 1099511628211ULL;
    }
    return h;
}

/* ---- smoke check ---- */

/* Two plausible applicants and one with extreme values, built into
 * vectors by the feature module (empty prior state). */
static void smoke_event(struct txn_event *ev, int k)
{
    static const double amount[] = {1000, 250, 1e9}, income[] = {130, 60, 0};
    static const double age[] = {30, 55, 99}, term[] = {60, 24, 360};

    event_txn_init(ev);
    snprintf(ev->event_id, sizeof(ev->event_id), "smoke-%d", k);
    snprintf(ev->user_id, sizeof(ev->user_id), "smoke-user-%d", k);
    ev->event_time_ms = 1700000000000LL;
    ev->amount = amount[k];
    ev->income = income[k];
    ev->expenses = 60;
    ev->assets = k == 2 ? 0 : 5000;
    ev->debt = k == 2 ? 1e9 : 0;
    ev->price = amount[k] * 1.2;
    ev->term_months = term[k];
    ev->seniority_years = k;
    ev->age = age[k];
    snprintf(ev->home, sizeof(ev->home), "%s", k ? "owner" : "rent");
    snprintf(ev->marital, sizeof(ev->marital), "married");
    snprintf(ev->job, sizeof(ev->job), "%s", k == 1 ? "freelance" : "fixed");
    ev->past_records = k == 2;
}

#define SMOKE_ROWS 5

int ab_smoke(struct txn_scorer *sc, const char *what, struct err *e)
{
    static const char *const rows[SMOKE_ROWS] = {"all-missing", "all-zero", "applicant-1",
                                                 "applicant-2", "extreme"};
    float x[FSPEC_OUT_MAX];
    struct txn_prediction p;

    for (int r = 0; r < SMOKE_ROWS; r++) {
        if (r < 2) {
            for (size_t j = 0; j < feat_txn_dim(); j++)
                x[j] = r == 0 ? NAN : 0.0f;
        } else if (feat_txn_reads_rec()) {
            break; /* the applicants are TransactionEvents: another spec has none */
        } else {
            struct txn_event ev;
            struct feat_state st;
            smoke_event(&ev, r - 2);
            feat_state_init(&st);
            feat_txn_build(&ev, &st, x);
        }
        memset(&p, 0, sizeof(p));
        txn_score(sc, x, &p);
        if (!(p.probability >= 0 && p.probability <= 1) ||
            !(p.score_probability >= 0 && p.score_probability <= 1))
            return err_set(e, ERR_INVALID,
                           "%s: smoke check: row %s scores P(bad) %g (scorecard %g), "
                           "not a finite value in [0, 1]",
                           what, rows[r], p.probability, p.score_probability);
    }
    return ERR_OK;
}

int ab_ratio_delta(const double *x, const double *n, size_t units, double conf,
                   struct ab_ratio *out, struct err *e)
{
    double sx = 0, sn = 0, mx, mn, vxx = 0, vnn = 0, vxn = 0, r, v;

    memset(out, 0, sizeof(*out));
    out->units = units;
    for (size_t i = 0; i < units; i++) {
        sx += x[i];
        sn += n[i];
    }
    if (units < 2 || !(sn > 0))
        return err_set(e, ERR_INVALID, "ratio over %zu unit(s) with denominator %g: needs 2 "
                                       "units and a positive denominator",
                       units, sn);
    mx = sx / (double)units;
    mn = sn / (double)units;
    r = sx / sn;
    for (size_t i = 0; i < units; i++) { /* two passes: no cancellation of large sums */
        vxx += (x[i] - mx) * (x[i] - mx);
        vnn += (n[i] - mn) * (n[i] - mn);
        vxn += (x[i] - mx) * (n[i] - mn);
    }
    vxx /= (double)(units - 1);
    vnn /= (double)(units - 1);
    vxn /= (double)(units - 1);
    v = (vxx - 2 * r * vxn + r * r * vnn) / ((double)units * mn * mn);
    out->value = r;
    out->se = sqrt(v > 0 ? v : 0);
    v = ab_t_ppf((1 + conf) / 2, (double)(units - 1)) * out->se;
    out->lo = r - v;
    out->hi = r + v;
    return ERR_OK;
}

/* ---- serving ---- */

struct ab_serving {
    struct ab *ab; /* NULL: no experiment */
    size_t n;
    struct txn_scorer *sc[AB_MAX_VARIANTS];
    char version[32];
    char scorecard[AB_PATH_MAX], gbdt[AB_PATH_MAX]; /* gbdt: without an experiment */
};

void ab_serving_close(struct ab_serving *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        txn_scorer_close(s->sc[i]);
    ab_close(s->ab);
    free(s);
}

void ab_serving_set_metrics(struct ab_serving *s, struct metrics *m)
{
    for (size_t i = 0; i < s->n; i++)
        txn_scorer_set_metrics(s->sc[i], m);
}

static int open_scorer(struct ab_serving *s, const struct cfg *c, const char *gbdt,
                       const char *what, struct err *e)
{
    struct txn_scorer *sc = txn_scorer_open_gbdt(c, gbdt, e);

    if (!sc)
        return err_wrap(e, "%s", what);
    s->sc[s->n++] = sc;
    return ab_smoke(sc, what, e);
}

struct ab_serving *ab_serving_open(const struct cfg *c, struct err *e)
{
    struct ab_serving *s = calloc(1, sizeof(*s));
    char what[AB_NAME_MAX + 16];

    if (!s) {
        err_set(e, ERR_NOMEM, "out of memory");
        return NULL;
    }
    snprintf(s->version, sizeof(s->version), "%s", cfg_str(c, "model.version"));
    snprintf(s->scorecard, sizeof(s->scorecard), "%s", cfg_str(c, "model.scorecard"));
    snprintf(s->gbdt, sizeof(s->gbdt), "%s", cfg_str(c, "model.gbdt"));
    s->ab = ab_open_cfg(c, e);
    if (e->code)
        goto fail;
    if (!s->ab) {
        if (open_scorer(s, c, cfg_str(c, "model.gbdt"), "model.gbdt", e))
            goto fail;
        return s;
    }
    for (size_t i = 0; i < ab_num_variants(s->ab); i++) {
        snprintf(what, sizeof(what), "variant %s", ab_variant_name(s->ab, i));
        if (open_scorer(s, c, ab_variant_model(s->ab, i), what, e))
            goto fail;
    }
    return s;
fail:
    ab_serving_close(s);
    return NULL;
}

const struct ab *ab_serving_experiment(const struct ab_serving *s)
{
    return s->ab;
}

size_t ab_serving_num_variants(const struct ab_serving *s)
{
    return s->n;
}

const char *ab_serving_variant(const struct ab_serving *s, size_t i)
{
    return s->ab ? ab_variant_name(s->ab, i) : "";
}

const char *ab_serving_baseline(const struct ab_serving *s, size_t i)
{
    return s->ab ? ab_variant_baseline(s->ab, i) : "";
}

const char *ab_serving_version(const struct ab_serving *s)
{
    return s->version;
}

size_t ab_serving_files(const struct ab_serving *s, const char **paths, size_t cap)
{
    size_t n = 0;

    if (n < cap)
        paths[n] = s->scorecard;
    n++;
    if (!s->ab && n < cap)
        paths[n] = s->gbdt;
    n += !s->ab;
    for (size_t i = 0; s->ab && i < ab_num_variants(s->ab); i++, n++)
        if (n < cap)
            paths[n] = ab_variant_model(s->ab, i);
    return n;
}

/* Per prediction: a bounded copy (snprintf's format parsing was ~1,000
 * instructions per event, issue 19). */
static void copy_label(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);

    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void label(const struct ab_serving *s, size_t i, struct txn_prediction *p)
{
    copy_label(p->experiment_id, sizeof(p->experiment_id), s->ab ? ab_id(s->ab) : "");
    copy_label(p->variant, sizeof(p->variant), ab_serving_variant(s, i));
}

int ab_serving_score(struct ab_serving *s, const char *user_id, const float *x,
                     struct txn_prediction *p, size_t *variant)
{
    size_t i = s->ab ? ab_assign(s->ab, user_id) : 0;
    int d = txn_score(s->sc[i], x, p);

    label(s, i, p);
    *variant = i;
    return d;
}

void ab_serving_score_batch(struct ab_serving *s, const float *x, size_t n,
                            struct txn_prediction *p, size_t *variant)
{
    uint64_t decisions[3] = {0, 0, 0};

    if (!s->ab && txn_score_batch(s->sc[0], x, n, p, decisions) == ERR_OK) {
        for (size_t i = 0; i < n; i++) {
            label(s, 0, &p[i]);
            variant[i] = 0;
        }
        return;
    }
    /* An experiment, or no memory for the batch's scratch rows. */
    for (size_t i = 0; i < n; i++)
        ab_serving_score(s, p[i].user_id, x + i * feat_txn_dim(), &p[i], &variant[i]);
}

size_t ab_serving_shadows(const struct ab_serving *s)
{
    return s->ab && ab_mode(s->ab) == AB_SHADOW ? s->n - 1 : 0;
}

void ab_serving_score_shadow(struct ab_serving *s, size_t k, const float *x,
                             struct txn_prediction *p)
{
    txn_score(s->sc[k], x, p);
    label(s, k, p);
}

/* The models served, for the log at start. */
void ab_serving_log(const struct ab_serving *s, const struct cfg *c)
{
    const struct ab *x = ab_serving_experiment(s);

    if (!x) {
        log_info("models: gbdt %s, scorecard %s, version %s", cfg_str(c, "model.gbdt"),
                 cfg_str(c, "model.scorecard"), ab_serving_version(s));
        return;
    }
    log_info("experiment %s (%s, salt \"%s\"), scorecard %s, version %s", ab_id(x),
             ab_mode(x) == AB_SHADOW ? "shadow" : "split", ab_salt(x),
             cfg_str(c, "model.scorecard"), ab_serving_version(s));
    for (size_t v = 0; v < ab_num_variants(x); v++)
        log_info("variant %s%s: gbdt %s, share %g", ab_variant_name(x, v), v ? "" : " (champion)",
                 ab_variant_model(x, v), ab_variant_share(x, v));
}
