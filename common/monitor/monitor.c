#include "monitor_int.h"

#include "log.h"
#include "fairness.h" /* the report's arithmetic, shared */

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *mon_level_name(enum mon_level l)
{
    static const char *const n[] = {"OK", "WARNING", "CRITICAL"};
    return (unsigned)l < 3 ? n[l] : "?";
}

const char *mon_check_name(enum mon_check c)
{
    static const char *const n[MON_NCHECKS] = {"data_drift",  "missing_rate", "score_psi",
                                               "score_mean",  "latency_p99",  "error_rate",
                                               "auc",         "fairness",
                                               "fairness_tpr", "fairness_fpr"};
    return (unsigned)c < MON_NCHECKS ? n[c] : "?";
}

/* ---- distributions, PSI, AUC ---- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* numpy's default ("linear") quantile of sorted v[0..n), n > 0. */
static double quantile(const double *v, size_t n, double q)
{
    double pos = q * (double)(n - 1), t;
    size_t lo = (size_t)floor(pos);

    if (lo + 1 >= n)
        return v[n - 1];
    t = pos - (double)lo;
    /* numpy's _lerp: the form that is exact at the nearer end. */
    return t >= 0.5 ? v[lo + 1] - (v[lo + 1] - v[lo]) * (1 - t) : v[lo] + (v[lo + 1] - v[lo]) * t;
}

int mon_bin(const double *edges, int nedges, double x)
{
    int lo = 0, hi = nedges;

    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (edges[mid] <= x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Moves the finite values to the front; returns their count. */
static int split_missing(double *v, size_t n, size_t *finite, struct err *e)
{
    size_t m = 0;

    for (size_t i = 0; i < n; i++) {
        if (isinf(v[i]))
            return err_set(e, ERR_INVALID, "value %zu is infinite", i);
        if (!isnan(v[i]))
            v[m++] = v[i];
    }
    for (size_t i = m; i < n; i++)
        v[i] = NAN;
    *finite = m;
    return ERR_OK;
}

static void decile_edges(const double *v, size_t m, struct mon_dist *d)
{
    d->nedges = 0;
    for (int k = 1; k < MON_BINS; k++) {
        double q = quantile(v, m, (double)k / MON_BINS);
        if (d->nedges == 0 || q > d->edges[d->nedges - 1])
            d->edges[d->nedges++] = q;
    }
}

int mon_dist_compute(double *v, size_t n, struct mon_dist *d, struct err *e)
{
    size_t m = 0, cnt[MON_BINS] = {0};
    double sum = 0, ss = 0;

    memset(d, 0, sizeof(*d));
    if (split_missing(v, n, &m, e))
        return e->code;
    d->count = m;
    d->missing = n - m;
    d->missing_rate = n ? (double)(n - m) / (double)n : NAN;
    d->mean = d->std = d->min = d->max = NAN;
    if (m == 0)
        return ERR_OK;
    qsort(v, m, sizeof(double), cmp_double);
    decile_edges(v, m, d);
    for (size_t i = 0; i < m; i++) {
        cnt[mon_bin(d->edges, d->nedges, v[i])]++;
        sum += v[i];
    }
    d->mean = sum / (double)m;
    for (size_t i = 0; i < m; i++)
        ss += (v[i] - d->mean) * (v[i] - d->mean);
    d->std = sqrt(ss / (double)m);
    d->min = v[0];
    d->max = v[m - 1];
    for (int k = 0; k <= d->nedges; k++)
        d->prop[k] = (double)cnt[k] / (double)m;
    return ERR_OK;
}

double mon_psi(const double *expected, const double *actual, size_t n)
{
    double psi = 0;

    for (size_t i = 0; i < n; i++) {
        double a = actual[i] < MON_PSI_EPS ? MON_PSI_EPS : actual[i];
        double x = expected[i] < MON_PSI_EPS ? MON_PSI_EPS : expected[i];
        psi += (a - x) * log(a / x);
    }
    return psi;
}

struct scored {
    double s;
    int y;
};

static int cmp_scored(const void *a, const void *b)
{
    return cmp_double(&((const struct scored *)a)->s, &((const struct scored *)b)->s);
}

/* Mann-Whitney: AUC = (rank sum of positives - P(P+1)/2) / (P N), tied
 * scores sharing their average rank. */
static double auc_sorted(const struct scored *p, size_t n)
{
    double rank_pos = 0, npos = 0, nneg;
    size_t i = 0;

    while (i < n) {
        size_t j = i, pos = 0;
        while (j < n && p[j].s == p[i].s)
            pos += (size_t)(p[j++].y == 1);
        rank_pos += (double)pos * ((double)(i + 1) + (double)j) / 2.0;
        npos += (double)pos;
        i = j;
    }
    nneg = (double)n - npos;
    if (npos == 0 || nneg == 0)
        return NAN;
    return (rank_pos - npos * (npos + 1) / 2.0) / (npos * nneg);
}

double mon_auc(const double *score, const int *label, size_t n)
{
    struct scored *p = malloc((n ? n : 1) * sizeof(*p));
    size_t m = 0;
    double auc;

    if (!p)
        return NAN;
    for (size_t i = 0; i < n; i++)
        if (!isnan(score[i]) && (label[i] == 0 || label[i] == 1))
            p[m++] = (struct scored){score[i], label[i]};
    qsort(p, m, sizeof(*p), cmp_scored);
    auc = auc_sorted(p, m);
    free(p);
    return auc;
}

/* ---- latency histogram ---- */

int mon_lat_bucket(int64_t us)
{
    int ex, idx;

    if (us < 16)
        return us < 0 ? 0 : (int)us;
    ex = 63 - __builtin_clzll((unsigned long long)us);
    idx = 16 + (ex - 4) * 8 + (int)((us >> (ex - 3)) & 7);
    return idx < MON_LAT_BUCKETS ? idx : MON_LAT_BUCKETS - 1;
}

int64_t mon_lat_upper_us(int b)
{
    int ex, sub;

    if (b < 16)
        return b;
    ex = (b - 16) / 8 + 4;
    sub = (b - 16) % 8;
    return ((int64_t)(9 + sub) << (ex - 3)) - 1;
}

int64_t mon_lat_quantile(const uint32_t *h, double q)
{
    uint64_t total = 0, cum = 0, rank;

    for (int b = 0; b < MON_LAT_BUCKETS; b++)
        total += h[b];
    if (total == 0)
        return 0;
    rank = (uint64_t)ceil(q * (double)total);
    if (rank < 1)
        rank = 1;
    for (int b = 0; b < MON_LAT_BUCKETS; b++) {
        cum += h[b];
        if (cum >= rank)
            return mon_lat_upper_us(b);
    }
    return mon_lat_upper_us(MON_LAT_BUCKETS - 1);
}

/* ---- the rolling monitor ---- */

void mon_opts_from_cfg(const struct cfg *c, struct mon_opts *o)
{
    o->window_events = cfg_int(c, "monitor.window.events");
    o->window_ms = cfg_int(c, "monitor.window.ms");
    o->slices = (int)cfg_int(c, "monitor.window.slices");
    o->min_events = cfg_int(c, "monitor.window.min_events");
    o->psi_warn = cfg_double(c, "monitor.psi.warning");
    o->psi_crit = cfg_double(c, "monitor.psi.critical");
    o->score_psi_warn = cfg_double(c, "monitor.score_psi.warning");
    o->score_psi_crit = cfg_double(c, "monitor.score_psi.critical");
    o->score_mean_warn = cfg_double(c, "monitor.score_mean.warning");
    o->score_mean_crit = cfg_double(c, "monitor.score_mean.critical");
    o->missing_warn = cfg_double(c, "monitor.missing.warning");
    o->latency_warn_s = cfg_double(c, "monitor.latency_p99.warning_ms") / 1000.0;
    o->latency_crit_s = cfg_double(c, "monitor.latency_p99.critical_ms") / 1000.0;
    o->error_warn = cfg_double(c, "monitor.error_rate.warning");
    o->error_crit = cfg_double(c, "monitor.error_rate.critical");
    o->auc_warn = cfg_double(c, "monitor.auc.warning");
    o->auc_crit = cfg_double(c, "monitor.auc.critical");
    o->auc_window = cfg_int(c, "monitor.auc.window");
    o->auc_min_labels = cfg_int(c, "monitor.auc.min_labels");
    o->hysteresis = cfg_double(c, "monitor.hysteresis");
    o->fair_feature = cfg_str(c, "monitor.fairness.feature");
    o->fair_field = cfg_str(c, "monitor.fairness.field");
    o->fair_warn = cfg_double(c, "monitor.fairness.warning");
    o->fair_min_group = cfg_int(c, "monitor.fairness.min_group");
    o->fair_label_field = cfg_str(c, "monitor.fairness.label_field");
    o->fair_tpr_gap = cfg_double(c, "monitor.fairness.max_tpr_gap");
    o->fair_fpr_gap = cfg_double(c, "monitor.fairness.max_fpr_gap");
}

struct slice {
    int64_t start_ms, end_ms;
    uint32_t n, npred, dead, degraded, nscore;
    double score_sum;
    uint32_t *bins;                 /* nf x MON_BINS */
    uint32_t *miss;                 /* nf */
    uint32_t sbins[MON_BINS];
    uint32_t lat[MON_LAT_BUCKETS];
    uint32_t grp_n[MON_GROUPS], grp_ok[MON_GROUPS];
};

struct check {
    enum mon_level level;
    double observed;                /* NaN until evaluated */
};

/* What one evaluation measured for one check: value is compared with
 * warn/crit; observed and its thresholds are what an alert reports. */
struct reading {
    double value, warn, crit;
    double observed, warn_obs, crit_obs, baseline;
};

struct mon {
    struct mon_opts o;
    struct mon_baseline *b;
    size_t nf;
    int *idx;                       /* baseline feature -> vector index */
    double *edges;                  /* nf x (MON_BINS - 1), compact copy */
    int *nedges;
    struct slice *ring, agg;
    int nslices, cur;
    int fair_idx;                   /* vector index of the group feature, -1 off */
    int fair_on;                    /* a fairness check: by feature or by field */
    int ngroups, groups_full_logged;
    char grp_name[MON_GROUPS][FAIR_NAME];              /* "rent" */
    char grp_label[MON_GROUPS][MON_NAME_MAX + FAIR_NAME]; /* "home=rent": alerts' feature */
    double grp_approval[MON_GROUPS], grp_di[MON_GROUPS];  /* last evaluation */
    struct fair *fair;              /* the evaluation's groups (common/monitor/fairness.h) */
    struct fair_outcomes *out;      /* labelled decisions per slice and group */
    struct fair *ofair;             /* their last evaluation: TPR, FPR per group */
    int out_full_logged;
    char gap_label[2][MON_NAME_MAX + FAIR_NAME]; /* "home=rent": the TPR, FPR alerts' group */
    int64_t slice_events, slice_ms;
    struct check *psi, *miss;       /* per feature */
    struct check chk[MON_NCHECKS];  /* model-wide checks */
    struct mon_alert *alerts;
    size_t nalerts, cap_alerts, dropped;
    struct scored *labels, *lab_tmp;
    size_t nlab, lab_next, lab_cap;
    int64_t windows, win_start, win_end, win_events;
    int status_logged;              /* last overall status logged (1 DEGRADED) */
    size_t labels_new;              /* labels observed since the last evaluation */
    int64_t last_eval_ms;
};

static int slice_alloc(struct slice *s, size_t nf)
{
    s->bins = calloc(nf * MON_BINS + 1, sizeof(uint32_t));
    s->miss = calloc(nf + 1, sizeof(uint32_t));
    return s->bins && s->miss ? ERR_OK : ERR_NOMEM;
}

static void slice_reset(struct slice *s, size_t nf, int64_t now_ms)
{
    uint32_t *bins = s->bins, *miss = s->miss;

    memset(bins, 0, nf * MON_BINS * sizeof(uint32_t));
    memset(miss, 0, nf * sizeof(uint32_t));
    memset(s, 0, sizeof(*s));
    s->bins = bins;
    s->miss = miss;
    s->start_ms = s->end_ms = now_ms;
}

static void slice_free(struct slice *s)
{
    free(s->bins);
    free(s->miss);
}

static int map_names(struct mon *m, const char *const *names, size_t n, struct err *e)
{
    for (size_t f = 0; f < m->nf; f++) {
        const struct mon_dist *d = &m->b->feat[f].d;
        size_t j = 0;
        while (j < n && strcmp(names[j], m->b->feat[f].name) != 0)
            j++;
        if (j == n)
            return err_set(e, ERR_CONFIG, "baseline feature \"%s\" is not computed by this worker",
                           m->b->feat[f].name);
        m->idx[f] = (int)j;
        m->nedges[f] = d->nedges;
        memcpy(m->edges + f * (MON_BINS - 1), d->edges, sizeof(d->edges));
        m->b->names[f] = m->b->feat[f].name;
    }
    return ERR_OK;
}

static int map_group(struct mon *m, const char *const *names, size_t n, struct err *e)
{
    const char *field = m->o.fair_field && *m->o.fair_field ? m->o.fair_field : NULL;

    m->fair_idx = -1;
    for (int k = 0; k < MON_GROUPS; k++)
        m->grp_approval[k] = m->grp_di[k] = NAN;
    if (field && m->o.fair_feature && *m->o.fair_feature)
        return err_set(e, ERR_CONFIG, "config: monitor.fairness.field=%s and "
                       "monitor.fairness.feature=%s: set one of them", field, m->o.fair_feature);
    m->fair_on = field != NULL || *mon_label_field(m);
    if (!m->fair_on && (!m->o.fair_feature || !*m->o.fair_feature))
        return ERR_OK;
    if (!(m->fair = calloc(1, sizeof(*m->fair))) || !(m->ofair = calloc(1, sizeof(*m->ofair))) ||
        !(m->out = fair_outcomes_open(m->nslices)))
        return err_set(e, ERR_NOMEM, "out of memory");
    if (m->fair_on && !(m->o.fair_feature && *m->o.fair_feature))
        return ERR_OK;
    m->fair_on = 1;
    for (size_t j = 0; j < n; j++)
        if (strcmp(names[j], m->o.fair_feature) == 0)
            m->fair_idx = (int)j;
    if (m->fair_idx < 0)
        return err_set(e, ERR_CONFIG, "config: monitor.fairness.feature=%s is not a feature of "
                       "this worker", m->o.fair_feature);
    return ERR_OK;
}

static int mon_alloc(struct mon *m)
{
    size_t nf = m->nf;

    m->idx = calloc(nf + 1, sizeof(int));
    m->nedges = calloc(nf + 1, sizeof(int));
    m->edges = calloc(nf * (MON_BINS - 1) + 1, sizeof(double));
    m->b->names = calloc(nf + 1, sizeof(char *));
    m->psi = calloc(nf + 1, sizeof(struct check));
    m->miss = calloc(nf + 1, sizeof(struct check));
    m->cap_alerts = 2 * (2 * nf + MON_NCHECKS);
    m->alerts = calloc(m->cap_alerts, sizeof(struct mon_alert));
    m->lab_cap = (size_t)m->o.auc_window;
    m->labels = calloc(m->lab_cap + 1, sizeof(struct scored));
    m->lab_tmp = calloc(m->lab_cap + 1, sizeof(struct scored));
    m->ring = calloc((size_t)m->nslices, sizeof(struct slice));
    if (!m->idx || !m->nedges || !m->edges || !m->b->names || !m->psi || !m->miss ||
        !m->alerts || !m->labels || !m->lab_tmp || !m->ring || slice_alloc(&m->agg, nf))
        return ERR_NOMEM;
    for (int i = 0; i < m->nslices; i++)
        if (slice_alloc(&m->ring[i], nf))
            return ERR_NOMEM;
    return ERR_OK;
}

static int check_opts(const struct mon_opts *o, struct err *e)
{
    if (o->slices < 1 || o->window_events < o->slices || o->window_ms < o->slices)
        return err_set(e, ERR_CONFIG, "monitor.window: %lld events / %lld ms in %d slices",
                       (long long)o->window_events, (long long)o->window_ms, o->slices);
    const struct {
        const char *key, *unit;
        double warn, crit;
    } pairs[] = {{"psi", "", o->psi_warn, o->psi_crit},
                 {"score_psi", "", o->score_psi_warn, o->score_psi_crit},
                 {"score_mean", "", o->score_mean_warn, o->score_mean_crit},
                 {"latency_p99", "_ms", o->latency_warn_s * 1e3, o->latency_crit_s * 1e3},
                 {"error_rate", "", o->error_warn, o->error_crit},
                 {"auc", "", o->auc_warn, o->auc_crit}};

    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++)
        if (pairs[i].warn > pairs[i].crit)
            return err_set(e, ERR_CONFIG, "config: monitor.%s.warning%s=%g is above "
                           "monitor.%s.critical%s=%g", pairs[i].key, pairs[i].unit,
                           pairs[i].warn, pairs[i].key, pairs[i].unit, pairs[i].crit);
    if (o->auc_window < 1)
        return err_set(e, ERR_CONFIG, "monitor.auc.window must be >= 1");
    return ERR_OK;
}

struct mon *mon_open(const struct mon_opts *o, struct mon_baseline *b,
                     const char *const *names, size_t n, struct err *e)
{
    struct mon *m;

    if (check_opts(o, e)) {
        mon_baseline_free(b);
        return NULL;
    }
    if (!(m = calloc(1, sizeof(*m)))) {
        mon_baseline_free(b);
        err_set(e, ERR_NOMEM, "out of memory");
        return NULL;
    }
    m->o = *o;
    m->b = b;
    m->nf = b->n;
    m->nslices = o->slices;
    m->slice_events = (o->window_events + o->slices - 1) / o->slices;
    m->slice_ms = o->window_ms / o->slices;
    if (mon_alloc(m)) {
        err_set(e, ERR_NOMEM, "out of memory for a monitor of %zu features", m->nf);
        goto fail;
    }
    if (map_names(m, names, n, e) || map_group(m, names, n, e))
        goto fail;
    for (size_t f = 0; f < m->nf; f++)
        m->psi[f].observed = m->miss[f].observed = NAN;
    for (int c = 0; c < MON_NCHECKS; c++)
        m->chk[c].observed = NAN;
    m->cur = -1; /* the first tick or observation opens a slice */
    return m;
fail:
    mon_close(m);
    return NULL;
}

void mon_close(struct mon *m)
{
    if (!m)
        return;
    for (int i = 0; m->ring && i < m->nslices; i++)
        slice_free(&m->ring[i]);
    slice_free(&m->agg);
    free(m->ring);
    free(m->idx);
    free(m->nedges);
    free(m->edges);
    free(m->psi);
    free(m->miss);
    free(m->alerts);
    free(m->labels);
    free(m->lab_tmp);
    free(m->fair);
    free(m->ofair);
    fair_outcomes_close(m->out);
    mon_baseline_free(m->b);
    free(m);
}

size_t mon_num_features(const struct mon *m)
{
    return m->nf;
}

static struct slice *open_slice(struct mon *m, int64_t now_ms)
{
    if (m->cur < 0) {
        m->cur = 0;
        slice_reset(&m->ring[0], m->nf, now_ms);
    }
    return &m->ring[m->cur];
}

void mon_observe(struct mon *m, const float *x, double score, int64_t latency_us, int degraded,
                 int64_t now_ms)
{
    struct slice *s = open_slice(m, now_ms);
    uint32_t *bins = s->bins;
    const double *edges = m->edges;
    const struct mon_dist *sd = &m->b->score;

    s->n++;
    s->npred++;
    s->degraded += degraded != 0;
    s->end_ms = now_ms;
    for (size_t f = 0; f < m->nf; f++, bins += MON_BINS, edges += MON_BINS - 1) {
        double v = x[m->idx[f]];
        if (isnan(v))
            s->miss[f]++;
        else
            bins[mon_bin(edges, m->nedges[f], v)]++;
    }
    if (m->b->has_score && isfinite(score)) {
        s->sbins[mon_bin(sd->edges, sd->nedges, score)]++;
        s->score_sum += score;
        s->nscore++;
    }
    s->lat[mon_lat_bucket(latency_us)]++;
}

void mon_observe_dead(struct mon *m, int64_t now_ms)
{
    struct slice *s = open_slice(m, now_ms);

    s->n++;
    s->dead++;
    s->end_ms = now_ms;
}

int mon_fair_by_field(const struct mon *m)
{
    return m->fair_on && m->fair_idx < 0;
}

/* Slot of a group, added when new; -1 when MON_GROUPS are taken. */
static int group_slot(struct mon *m, const char *group)
{
    const char *what = m->fair_idx >= 0 ? m->o.fair_feature : m->o.fair_field;

    for (int k = 0; k < m->ngroups; k++)
        if (strncmp(m->grp_name[k], group, FAIR_NAME - 1) == 0)
            return k;
    if (m->ngroups == MON_GROUPS) {
        if (!m->groups_full_logged++)
            log_warn("monitor: fairness group %s=%.40s is one more than %d: not counted (nor "
                     "any further new group)", what, group, MON_GROUPS);
        return -1;
    }
    snprintf(m->grp_name[m->ngroups], FAIR_NAME, "%s", group);
    snprintf(m->grp_label[m->ngroups], sizeof(m->grp_label[0]), "%s=%.*s", what,
             FAIR_NAME - 1, group);
    return m->ngroups++;
}

const char *mon_fair_group(const struct mon *m, const float *x, const char *group, char *buf,
                           size_t cap)
{
    if (!m->fair_on)
        return NULL;
    if (m->fair_idx >= 0) {
        float g = x[m->fair_idx];
        if (!(g >= 0 && g < MON_GROUPS) || g != floorf(g))
            return NULL;
        snprintf(buf, cap, "%d", (int)g);
        return buf;
    }
    return group;
}

const char *mon_label_field(const struct mon *m)
{
    return m->o.fair_label_field ? m->o.fair_label_field : "";
}

void mon_observe_decision(struct mon *m, const float *x, const char *group, int approved)
{
    char code[16];
    struct slice *s;
    int k;

    if (!m->fair_on || m->cur < 0)
        return;
    group = mon_fair_group(m, x, group, code, sizeof(code));
    if (!group || (k = group_slot(m, group)) < 0)
        return;
    s = &m->ring[m->cur];
    s->grp_n[k]++;
    s->grp_ok[k] += approved != 0;
}

void mon_observe_label(struct mon *m, double score, int label)
{
    if (!isfinite(score) || (label != 0 && label != 1))
        return;
    m->labels_new++;
    m->labels[m->lab_next] = (struct scored){score, label};
    m->lab_next = (m->lab_next + 1) % m->lab_cap;
    if (m->nlab < m->lab_cap)
        m->nlab++;
}

void mon_observe_outcome(struct mon *m, const char *group, int approved, int label)
{
    if (!m->out || !group)
        return;
    if (fair_outcomes_add(m->out, m->cur < 0 ? 0 : m->cur, group, approved, label) &&
        !m->out_full_logged++)
        log_warn("monitor: fairness outcome group %.40s is one more than %d: not counted (nor "
                 "any further new group)", group, FAIR_OUT_GROUPS);
}

/* ---- evaluation ---- */

static void aggregate(struct mon *m)
{
    struct slice *a = &m->agg;

    slice_reset(a, m->nf, 0);
    a->start_ms = INT64_MAX;
    for (int i = 0; i < m->nslices; i++) {
        const struct slice *s = &m->ring[i];
        if (s->n == 0)
            continue;
        a->start_ms = s->start_ms < a->start_ms ? s->start_ms : a->start_ms;
        a->end_ms = s->end_ms > a->end_ms ? s->end_ms : a->end_ms;
        a->n += s->n;
        a->npred += s->npred;
        a->dead += s->dead;
        a->degraded += s->degraded;
        a->nscore += s->nscore;
        a->score_sum += s->score_sum;
        for (size_t k = 0; k < m->nf * MON_BINS; k++)
            a->bins[k] += s->bins[k];
        for (size_t f = 0; f < m->nf; f++)
            a->miss[f] += s->miss[f];
        for (int k = 0; k < MON_BINS; k++)
            a->sbins[k] += s->sbins[k];
        for (int k = 0; k < MON_LAT_BUCKETS; k++)
            a->lat[k] += s->lat[k];
        for (int k = 0; k < MON_GROUPS; k++) {
            a->grp_n[k] += s->grp_n[k];
            a->grp_ok[k] += s->grp_ok[k];
        }
    }
}

/* The new level of a check at value v. Going down a level needs v to clear
 * that level's threshold by the hysteresis fraction; NaN changes nothing. */
static enum mon_level decide(enum mon_level cur, double v, double warn, double crit, double h)
{
    enum mon_level raw;

    if (isnan(v))
        return cur;
    raw = v > crit ? MON_CRITICAL : v > warn ? MON_WARNING : MON_OK;
    if (raw >= cur)
        return raw;
    if (cur == MON_CRITICAL && v > crit * (1 - h))
        return MON_CRITICAL;
    if (v > warn * (1 - h))
        return MON_WARNING;
    return MON_OK;
}

static void push_alert(struct mon *m, enum mon_check kind, const char *feature,
                       enum mon_level from, enum mon_level to, const struct reading *r)
{
    struct mon_alert *a;
    enum mon_level top = from > to ? from : to;

    if (m->nalerts == m->cap_alerts) {
        m->dropped++; /* the caller did not clear: keep the oldest */
        return;
    }
    a = &m->alerts[m->nalerts++];
    *a = (struct mon_alert){.check = kind, .feature = feature, .from = from, .to = to,
                            .observed = r->observed,
                            /* the threshold crossed; RESOLVED: back under warning */
                            .threshold = to != MON_OK && top == MON_CRITICAL ? r->crit_obs
                                                                              : r->warn_obs,
                            .baseline = r->baseline, .window_start_ms = m->win_start,
                            .window_end_ms = m->win_end, .window_events = m->win_events};
}

static void apply(struct mon *m, struct check *c, enum mon_check kind, const char *feature,
                  const struct reading *r)
{
    enum mon_level to = decide(c->level, r->value, r->warn, r->crit, m->o.hysteresis);

    if (!isnan(r->value))
        c->observed = r->observed;
    if (to != c->level)
        push_alert(m, kind, feature, c->level, to, r);
    c->level = to;
}

/* Plain reading: the value is what is reported. */
static struct reading plain(double v, double warn, double crit, double baseline)
{
    return (struct reading){v, warn, crit, v, warn, crit, baseline};
}

static double window_psi(const uint32_t *bins, const struct mon_dist *d)
{
    double a[MON_BINS];
    uint64_t tot = 0;

    for (int k = 0; k <= d->nedges; k++)
        tot += bins[k];
    if (tot == 0 || d->count == 0)
        return NAN;
    for (int k = 0; k <= d->nedges; k++)
        a[k] = (double)bins[k] / (double)tot;
    return mon_psi(d->prop, a, (size_t)d->nedges + 1);
}

static void eval_features(struct mon *m)
{
    const struct mon_opts *o = &m->o;

    for (size_t f = 0; f < m->nf; f++) {
        const struct mon_dist *d = &m->b->feat[f].d;
        const char *name = m->b->feat[f].name;
        double psi = window_psi(m->agg.bins + f * MON_BINS, d);
        double rate = m->agg.npred ? (double)m->agg.miss[f] / m->agg.npred : NAN;
        struct reading r = plain(psi, o->psi_warn, o->psi_crit, NAN);

        apply(m, &m->psi[f], MON_DATA_DRIFT, name, &r);
        /* Missing: the rate above the training rate; no critical level. */
        r = (struct reading){rate - d->missing_rate, o->missing_warn, INFINITY, rate,
                             d->missing_rate + o->missing_warn, INFINITY, d->missing_rate};
        apply(m, &m->miss[f], MON_MISSING, name, &r);
    }
}

static void eval_score(struct mon *m)
{
    const struct mon_opts *o = &m->o;
    const struct mon_dist *d = &m->b->score;
    double mean, rel, sign;
    struct reading r;

    if (!m->b->has_score || m->agg.nscore == 0)
        return;
    r = plain(window_psi(m->agg.sbins, d), o->score_psi_warn, o->score_psi_crit, NAN);
    apply(m, &m->chk[MON_SCORE_PSI], MON_SCORE_PSI, NULL, &r);
    if (!(d->mean > 0))
        return;
    mean = m->agg.score_sum / m->agg.nscore;
    rel = fabs(mean - d->mean) / d->mean;
    sign = mean >= d->mean ? 1 : -1;
    r = (struct reading){rel, o->score_mean_warn, o->score_mean_crit, mean,
                         d->mean * (1 + sign * o->score_mean_warn),
                         d->mean * (1 + sign * o->score_mean_crit), d->mean};
    apply(m, &m->chk[MON_SCORE_MEAN], MON_SCORE_MEAN, NULL, &r);
}

static void eval_health(struct mon *m)
{
    const struct mon_opts *o = &m->o;
    double p99 = m->agg.npred ? (double)mon_lat_quantile(m->agg.lat, 0.99) / 1e6 : NAN;
    double err = (double)(m->agg.dead + m->agg.degraded) / (double)m->agg.n;
    struct reading r = plain(p99, o->latency_warn_s, o->latency_crit_s, NAN);

    apply(m, &m->chk[MON_LATENCY], MON_LATENCY, NULL, &r);
    r = plain(err, o->error_warn, o->error_crit, NAN);
    apply(m, &m->chk[MON_ERROR_RATE], MON_ERROR_RATE, NULL, &r);
}

static void eval_auc(struct mon *m)
{
    const struct mon_opts *o = &m->o;
    double base = m->b->auc, auc;
    struct reading r;

    if (!(base > 0) || m->nlab < (size_t)o->auc_min_labels)
        return;
    memcpy(m->lab_tmp, m->labels, m->nlab * sizeof(struct scored));
    qsort(m->lab_tmp, m->nlab, sizeof(struct scored), cmp_scored);
    auc = auc_sorted(m->lab_tmp, m->nlab);
    r = (struct reading){(base - auc) / base, o->auc_warn, o->auc_crit, auc,
                         base * (1 - o->auc_warn), base * (1 - o->auc_crit), base};
    apply(m, &m->chk[MON_AUC], MON_AUC, NULL, &r);
}

/* Disparate impact: lowest approval rate over the highest, among groups
 * with enough events (fair_finish_min, the report's arithmetic); lower is
 * worse, so the check runs on 1 - ratio. The alert names the group with
 * the lowest rate. */
static void eval_fairness(struct mon *m)
{
    struct fair *f = m->fair;
    struct err e = {0};
    double ratio;
    struct reading r;

    if (!m->fair_on)
        return;
    fair_init(f);
    for (int k = 0; k < m->ngroups; k++) /* group k is f->g[k] (k < FAIR_MAX_GROUPS) */
        if (fair_add_counts(f, m->grp_name[k], m->agg.grp_n[k], m->agg.grp_ok[k], &e))
            return;
    fair_finish_min(f, m->o.fair_min_group > 0 ? (size_t)m->o.fair_min_group : 1);
    for (int k = 0; k < m->ngroups; k++) {
        m->grp_approval[k] = f->g[k].approval;
        m->grp_di[k] = f->g[k].disparate_impact;
    }
    ratio = fair_disparate_impact(f);
    if (isnan(ratio))
        return;
    r = (struct reading){1 - ratio, 1 - m->o.fair_warn, INFINITY, ratio, m->o.fair_warn,
                         INFINITY, NAN};
    apply(m, &m->chk[MON_FAIRNESS], MON_FAIRNESS, m->grp_label[f->worst], &r);
}

/* TPR and FPR per group of the labelled decisions in the window; the
 * gaps (highest - lowest, fair_gap) against monitor.fairness.max_tpr_gap /
 * max_fpr_gap, WARNING only. The TPR alert names the group with the lowest
 * TPR (its bad outcomes missed most), the FPR alert the one with the
 * highest FPR (its good applicants flagged most). */
static void eval_outcomes(struct mon *m)
{
    const char *what = *mon_label_field(m) ? mon_label_field(m)
                       : m->fair_idx >= 0  ? m->o.fair_feature
                                           : m->o.fair_field;
    size_t min_n = m->o.fair_min_group > 0 ? (size_t)m->o.fair_min_group : 1;

    if (!m->out)
        return;
    fair_outcomes_sum(m->out, m->ofair);
    for (int fpr = 0; fpr < 2; fpr++) {
        size_t lo, hi;
        double gap = fair_gap(m->ofair, fpr, min_n, &lo, &hi), bound;
        struct reading r;

        if (isnan(gap))
            continue;
        bound = fpr ? m->o.fair_fpr_gap : m->o.fair_tpr_gap;
        snprintf(m->gap_label[fpr], sizeof(m->gap_label[fpr]), "%s=%s", what,
                 m->ofair->g[fpr ? hi : lo].name);
        r = plain(gap, bound, INFINITY, NAN);
        apply(m, &m->chk[fpr ? MON_FPR_GAP : MON_TPR_GAP], fpr ? MON_FPR_GAP : MON_TPR_GAP,
              m->gap_label[fpr], &r);
    }
}

static void evaluate(struct mon *m, int64_t now_ms)
{
    m->labels_new = 0;
    m->last_eval_ms = now_ms;
    aggregate(m);
    if (m->agg.n == 0 || (int64_t)m->agg.n < m->o.min_events)
        return;
    m->windows++;
    m->win_start = m->agg.start_ms;
    m->win_end = m->agg.end_ms;
    m->win_events = m->agg.n;
    eval_features(m);
    eval_score(m);
    eval_health(m);
    eval_auc(m);
    eval_fairness(m);
    eval_outcomes(m);
}

size_t mon_tick(struct mon *m, int64_t now_ms)
{
    struct slice *s = open_slice(m, now_ms);

    if (s->n == 0) {
        /* An idle slice does not age: the window keeps its last data. But
         * labels arrive after their predictions: they are evaluated on
         * their own, at most once per slice time. */
        s->start_ms = s->end_ms = now_ms;
        if (m->labels_new && now_ms - m->last_eval_ms >= m->slice_ms) {
            m->labels_new = 0;
            m->last_eval_ms = now_ms;
            m->win_start = m->win_end;
            m->win_end = now_ms;
            eval_auc(m);
            eval_outcomes(m);
        }
        return m->nalerts;
    }
    if ((int64_t)s->n < m->slice_events && now_ms - s->start_ms < m->slice_ms)
        return m->nalerts;
    s->end_ms = now_ms > s->end_ms ? now_ms : s->end_ms;
    evaluate(m, now_ms);
    m->cur = (m->cur + 1) % m->nslices;
    slice_reset(&m->ring[m->cur], m->nf, now_ms);
    if (m->out)
        fair_outcomes_clear(m->out, m->cur);
    return m->nalerts;
}

const struct mon_alert *mon_alerts(const struct mon *m, size_t *n)
{
    *n = m->nalerts;
    return m->alerts;
}

void mon_alerts_clear(struct mon *m)
{
    m->nalerts = 0;
}

enum mon_level mon_level_of(const struct mon *m, enum mon_check c, size_t feature)
{
    if (c == MON_DATA_DRIFT || c == MON_MISSING) {
        if (feature >= m->nf)
            return MON_OK;
        return c == MON_DATA_DRIFT ? m->psi[feature].level : m->miss[feature].level;
    }
    return (unsigned)c < MON_NCHECKS ? m->chk[c].level : MON_OK;
}

static int worst(const struct check *c, size_t n)
{
    int w = MON_OK;

    for (size_t i = 0; i < n; i++)
        w = (int)c[i].level > w ? (int)c[i].level : w;
    return w;
}

int mon_degraded(const struct mon *m)
{
    return worst(m->psi, m->nf) == MON_CRITICAL || worst(m->miss, m->nf) == MON_CRITICAL ||
           worst(m->chk, MON_NCHECKS) == MON_CRITICAL;
}

void mon_snapshot(const struct mon *m, struct mon_snapshot *s)
{
    size_t n = s->nfeat < m->nf ? s->nfeat : m->nf;

    for (size_t f = 0; f < n; f++) {
        s->psi[f] = m->psi[f].observed;
        s->missing[f] = m->miss[f].observed;
    }
    s->nfeat = n;
    s->names = m->b->names;
    s->score_psi = m->chk[MON_SCORE_PSI].observed;
    s->score_mean = m->chk[MON_SCORE_MEAN].observed;
    s->latency_p99_s = m->chk[MON_LATENCY].observed;
    s->error_rate = m->chk[MON_ERROR_RATE].observed;
    s->auc = m->chk[MON_AUC].observed;
    s->disparate_impact = m->chk[MON_FAIRNESS].observed;
    s->ngroups = (size_t)m->ngroups;
    for (int k = 0; k < m->ngroups; k++) {
        s->group[k] = m->grp_name[k];
        s->group_approval[k] = m->grp_approval[k];
        s->group_di[k] = m->grp_di[k];
    }
    s->nogroups = m->ofair ? m->ofair->n_groups : 0;
    s->nogroups = s->nogroups < MON_GROUPS ? s->nogroups : MON_GROUPS;
    for (size_t k = 0; k < s->nogroups; k++) {
        s->ogroup[k] = m->ofair->g[k].name;
        s->group_tpr[k] = m->ofair->g[k].tpr;
        s->group_fpr[k] = m->ofair->g[k].fpr;
    }
    s->tpr_gap = m->chk[MON_TPR_GAP].observed;
    s->fpr_gap = m->chk[MON_FPR_GAP].observed;
    s->windows = m->windows;
    s->window_events = m->win_events;
    s->degraded = mon_degraded(m);
    for (int c = 0; c < MON_NCHECKS; c++)
        s->level[c] = (int)m->chk[c].level;
    s->level[MON_DATA_DRIFT] = worst(m->psi, m->nf);
    s->level[MON_MISSING] = worst(m->miss, m->nf);
}

/* ---- alert -> JSON ---- */

/* The schema's observed/threshold are plain doubles: never NaN/inf here
 * (a NaN reading changes no level), kept safe all the same. */
static json_t *finite_real(double x)
{
    return json_real(isfinite(x) ? x : 0.0);
}

static void alert_message(const struct mon_alert *a, char *out, size_t cap)
{
    const char *what = a->check == MON_FAIRNESS  ? "fairness (disparate impact)"
                       : a->check == MON_TPR_GAP ? "fairness (TPR gap between groups)"
                       : a->check == MON_FPR_GAP ? "fairness (FPR gap between groups)"
                                                 : mon_check_name(a->check);

    if (a->to == MON_OK)
        snprintf(out, cap, "%s%s%s resolved: %.4g (threshold %.4g)", what,
                 a->feature ? " on " : "", a->feature ? a->feature : "", a->observed,
                 a->threshold);
    else
        snprintf(out, cap, "%s%s%s %s: %.4g (threshold %.4g)", what, a->feature ? " on " : "",
                 a->feature ? a->feature : "", mon_level_name(a->to), a->observed,
                 a->threshold);
}

int mon_alert_json(const struct mon_alert *a, const char *worker, const char *model,
                   const char *model_version, int64_t emitted_ms, char *out, size_t cap,
                   struct err *e)
{
    char msg[256];
    json_t *o = json_object();
    size_t n;

    if (!o)
        return err_set(e, ERR_NOMEM, "out of memory");
    alert_message(a, msg, sizeof(msg));
    json_object_set_new(o, "alert_type", json_string(mon_check_name(a->check)));
    json_object_set_new(o, "severity",
                        json_string(a->to == MON_OK ? "INFO" : mon_level_name(a->to)));
    json_object_set_new(o, "status_from", json_string(mon_level_name(a->from)));
    json_object_set_new(o, "status_to", json_string(mon_level_name(a->to)));
    json_object_set_new(o, "transition", json_string(a->to == MON_OK ? "RESOLVED"
                                                                    : mon_level_name(a->to)));
    json_object_set_new(o, "worker", json_string(worker));
    json_object_set_new(o, "model", json_string(model));
    json_object_set_new(o, "model_version", json_string(model_version));
    json_object_set_new(o, "feature", a->feature ? json_string(a->feature) : json_null());
    json_object_set_new(o, "observed", finite_real(a->observed));
    json_object_set_new(o, "threshold", finite_real(a->threshold));
    json_object_set_new(o, "baseline", isfinite(a->baseline) ? json_real(a->baseline)
                                                              : json_null());
    json_object_set_new(o, "window_start", json_integer(a->window_start_ms));
    json_object_set_new(o, "window_end", json_integer(a->window_end_ms));
    json_object_set_new(o, "window_events", json_integer(a->window_events));
    json_object_set_new(o, "emitted_at", json_integer(emitted_ms));
    json_object_set_new(o, "message", json_string(msg));
    n = json_dumpb(o, out, cap - 1, JSON_COMPACT | JSON_REAL_PRECISION(10));
    json_decref(o);
    if (n == 0 || n >= cap - 1)
        return err_set(e, ERR_NOMEM, "alert JSON exceeds %zu bytes", cap);
    out[n] = '\0';
    return ERR_OK;
}

/* ---- worker glue ---- */

struct mon *mon_open_cfg(const struct cfg *c, const char *const *names, size_t n,
                         struct err *e)
{
    return mon_open_path(c, cfg_str(c, "monitor.baseline"), names, n, e);
}

struct mon *mon_open_path(const struct cfg *c, const char *path, const char *const *names,
                          size_t n, struct err *e)
{
    struct mon_baseline *b;
    struct mon_opts o;
    struct mon *m;

    err_clear(e);
    if (!*path)
        return NULL;
    mon_opts_from_cfg(c, &o);
    if (check_opts(&o, e))
        return NULL;
    if (!(b = mon_baseline_load(path, e))) {
        err_wrap(e, "monitor.baseline");
        return NULL;
    }
    if (!(m = mon_open(&o, b, names, n, e))) {
        err_wrap(e, "monitor.baseline %s", path);
        return NULL;
    }
    log_info("monitoring %zu features against %s: window %lld events / %lld ms in %d slices",
             m->nf, path, (long long)o.window_events, (long long)o.window_ms, o.slices);
    return m;
}

int mon_event_json(const struct mon_ident *id, const char *type, const char *severity,
                   const char *message, int64_t now_ms, char *out, size_t cap, struct err *e)
{
    const char *to = strcmp(severity, "INFO") == 0 ? "OK" : severity;
    json_t *o = json_object();
    char *json;
    size_t len;

    if (!o)
        return err_set(e, ERR_NOMEM, "out of memory");
    json_object_set_new(o, "alert_type", json_string(type));
    json_object_set_new(o, "severity", json_string(severity));
    json_object_set_new(o, "status_from", json_string("OK"));
    json_object_set_new(o, "status_to", json_string(to));
    json_object_set_new(o, "transition", json_string(to));
    json_object_set_new(o, "worker", json_string(id->worker));
    json_object_set_new(o, "model", json_string(id->model));
    json_object_set_new(o, "model_version", json_string(id->model_version));
    json_object_set_new(o, "feature", json_null());
    json_object_set_new(o, "observed", json_real(0));
    json_object_set_new(o, "threshold", json_real(0));
    json_object_set_new(o, "baseline", json_null());
    json_object_set_new(o, "window_start", json_integer(now_ms));
    json_object_set_new(o, "window_end", json_integer(now_ms));
    json_object_set_new(o, "window_events", json_null());
    json_object_set_new(o, "emitted_at", json_integer(now_ms));
    json_object_set_new(o, "message", json_string(message));
    json = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!json)
        return err_set(e, ERR_NOMEM, "alert JSON: out of memory (or invalid UTF-8 in message)");
    len = strlen(json);
    if (len >= cap) {
        free(json);
        return err_set(e, ERR_NOMEM, "alert JSON: %zu bytes do not fit %zu", len, cap);
    }
    memcpy(out, json, len + 1);
    free(json);
    return ERR_OK;
}

size_t mon_tick_alerts(struct mon *m, const struct mon_ident *id, int64_t now_ms,
                       int (*emit)(void *opaque, const char *json, struct err *e), void *opaque)
{
    size_t n, sent = 0;
    const struct mon_alert *a;
    struct err e = {0};

    if (!mon_tick(m, now_ms))
        return 0;
    a = mon_alerts(m, &n);
    for (size_t i = 0; i < n; i++) {
        char msg[256], json[2048];
        alert_message(&a[i], msg, sizeof(msg));
        if (a[i].to == MON_OK)
            log_info("alert: %s", msg);
        else
            log_warn("alert: %s", msg);
        if (mon_alert_json(&a[i], id->worker, id->model, id->model_version, now_ms, json,
                           sizeof(json), &e) ||
            emit(opaque, json, &e))
            log_error("alert not sent to %s: %s", id->topic, e.msg);
        else
            sent++;
    }
    mon_alerts_clear(m);
    if (mon_degraded(m) != m->status_logged) {
        m->status_logged = mon_degraded(m);
        log_warn("worker status: %s", m->status_logged ? "DEGRADED" : "HEALTHY");
    }
    return sent;
}
