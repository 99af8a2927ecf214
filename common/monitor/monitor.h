/* common/monitor/monitor.h: model and worker monitoring (prefix mon_).
 *
 * A baseline (written by `streamml profile` from the training feature CSV
 * and the model) holds, per feature, decile bin edges and the training
 * proportions in each bin, mean/std/min/max and the missing rate; the same
 * for the model's score; and the training AUC when labels were present.
 *
 * A worker feeds every prediction (its feature vector, score, latency and
 * whether it was degraded) and every dead letter into a rolling window and
 * compares the window with the baseline:
 *   data_drift    PSI per feature over the baseline bins
 *   missing_rate  per feature, rate above the baseline's own missing rate
 *   score_psi     PSI of the score;  score_mean  relative change of its mean
 *   latency_p99   from a fixed-memory log-linear histogram
 *   error_rate    (dead-lettered + degraded) / all events
 *   auc           rolling AUC of labelled predictions, drop vs baseline AUC
 *   fairness      with a group configured (monitor.fairness.field: a field of
 *                 the worker's event, or monitor.fairness.feature: a category
 *                 code of its vector): approval rate per group and the
 *                 disparate impact ratio min/max, through common/monitor/fairness.h
 *                 as `streamml report` computes it
 *   fairness_tpr  with labels joined (mon_observe_outcome): the gap between
 *   fairness_fpr  the groups' highest and lowest TPR, FPR of the adverse
 *                 decision over the window (fair_gap); the group from the
 *                 decision's (as above) or a field of the label record
 *                 (monitor.fairness.label_field)
 * Each check has a level (OK, WARNING, CRITICAL); an alert is produced only
 * when a level changes (no storm of repeated alerts), RESOLVED when it goes
 * back to OK. Leaving a level needs the value to fall below its threshold
 * by the hysteresis fraction, so a value hovering at a threshold does not
 * flap.
 *
 * The window is a ring of slices (monitor.window.slices): a slice closes
 * when it holds window.events / slices events or is window.ms / slices old,
 * and every close evaluates the checks over the last `slices` slices. So a
 * window covers about window.events events or window.ms, and slides by one
 * slice. Memory is fixed at open time.
 *
 * PSI = sum over bins of (a - e) * ln(a / e), with a, e the window's and the
 * baseline's proportions; a proportion below MON_PSI_EPS (an empty bin) is
 * replaced by MON_PSI_EPS so the sum stays finite.
 *
 * A struct mon is used by one thread (the worker's); the metrics endpoint
 * reads copies made with mon_snapshot.
 */
#ifndef STREAMML_MONITOR_H
#define STREAMML_MONITOR_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "err.h"

#define MON_BINS 10                 /* deciles: at most 10 bins, 9 edges */
#define MON_PSI_EPS 1e-4            /* floor of a proportion in PSI (empty bins) */
#define MON_NAME_MAX 64
#define MON_MAX_FEATURES 1024
#define MON_BASELINE_MAX (16 * 1024 * 1024) /* bytes of a baseline file */

enum mon_level { MON_OK = 0, MON_WARNING = 1, MON_CRITICAL = 2 };

/* "OK", "WARNING", "CRITICAL". */
const char *mon_level_name(enum mon_level l);

/* ---- distributions, PSI, AUC (pure) ---- */

/* Summary of one variable: finite values binned at their deciles. */
struct mon_dist {
    int nedges;                     /* distinct decile edges, 0..MON_BINS-1 */
    double edges[MON_BINS - 1];     /* bin k = [edges[k-1], edges[k]) */
    double prop[MON_BINS];          /* proportions of the nedges+1 bins */
    double mean, std, min, max;     /* of the finite values; NaN if none */
    double missing_rate;            /* NaN share of all values */
    size_t count, missing;
};

/* v[0..n) with NaN = missing -> d. Edges are numpy's default (linear)
 * quantiles at 10%..90%, duplicates removed; std is the population std
 * (numpy ddof=0). v is reordered. ERR_INVALID when a value is +-inf (named
 * by index). */
int mon_dist_compute(double *v, size_t n, struct mon_dist *d, struct err *e);
/* Bin of x: the number of edges <= x (so x < edges[0] is bin 0). */
int mon_bin(const double *edges, int nedges, double x);
/* PSI of observed proportions a against expected e over n bins. */
double mon_psi(const double *expected, const double *actual, size_t n);
/* ROC AUC of scores against 0/1 labels (ties get half credit, as
 * sklearn's roc_auc_score); NaN when one class is absent. */
double mon_auc(const double *score, const int *label, size_t n);

/* ---- baseline file ---- */

struct mon_baseline;

/* Empty baseline to fill (profile). NULL on ENOMEM. */
struct mon_baseline *mon_baseline_new(const char *feature_version, const char *model);
/* Adds a feature (name unique, < MON_NAME_MAX bytes). */
int mon_baseline_add(struct mon_baseline *b, const char *name, const struct mon_dist *d,
                     struct err *e);
void mon_baseline_set_score(struct mon_baseline *b, const struct mon_dist *d);
void mon_baseline_set_auc(struct mon_baseline *b, double auc, size_t rows);
/* Writes the baseline as JSON (jansson). */
int mon_baseline_save(const struct mon_baseline *b, const char *path, struct err *e);
/* Reads and validates a baseline file; the error names the file and the
 * JSON path of the culprit ("x.json: features[3].edges: not increasing"). */
struct mon_baseline *mon_baseline_load(const char *path, struct err *e);
/* The same from a NUL-terminated JSON text (tests); what names the source. */
struct mon_baseline *mon_baseline_parse(const char *json, const char *what, struct err *e);
void mon_baseline_free(struct mon_baseline *b); /* NULL-safe */

size_t mon_baseline_num_features(const struct mon_baseline *b);
const char *mon_baseline_feature(const struct mon_baseline *b, size_t i);
const struct mon_dist *mon_baseline_dist(const struct mon_baseline *b, size_t i);
const struct mon_dist *mon_baseline_score(const struct mon_baseline *b); /* NULL if none */
double mon_baseline_auc(const struct mon_baseline *b);                   /* NaN if none */
const char *mon_baseline_model(const struct mon_baseline *b);

/* ---- the rolling monitor ---- */

/* Thresholds and window, from the monitor.* configuration keys. */
struct mon_opts {
    int64_t window_events, window_ms, min_events;
    int slices;
    double psi_warn, psi_crit;
    double score_psi_warn, score_psi_crit;
    double score_mean_warn, score_mean_crit;   /* relative |change| of the mean */
    double missing_warn;                       /* rate above the baseline's */
    double latency_warn_s, latency_crit_s;     /* p99 */
    double error_warn, error_crit;
    double auc_warn, auc_crit;                 /* relative drop below baseline */
    int64_t auc_window, auc_min_labels;
    double hysteresis;
    const char *fair_feature;                  /* category-code feature of the vector */
    const char *fair_field;                    /* or groups named by the caller (an event
                                                  field's value); both NULL or "": off */
    double fair_warn;                          /* disparate impact below: WARNING */
    int64_t fair_min_group;                    /* events a group needs to count */
    const char *fair_label_field;              /* outcome groups from the label record */
    double fair_tpr_gap, fair_fpr_gap;         /* TPR / FPR gap above: WARNING */
};
void mon_opts_from_cfg(const struct cfg *c, struct mon_opts *o);

enum mon_check {
    MON_DATA_DRIFT = 0, MON_MISSING, MON_SCORE_PSI, MON_SCORE_MEAN, MON_LATENCY,
    MON_ERROR_RATE, MON_AUC, MON_FAIRNESS, MON_TPR_GAP, MON_FPR_GAP, MON_NCHECKS
};
/* "data_drift", "missing_rate", "score_psi", "score_mean", "latency_p99",
 * "error_rate", "auc", "fairness", "fairness_tpr", "fairness_fpr". */
const char *mon_check_name(enum mon_check c);

/* One level change. feature is NULL for model-wide checks. */
struct mon_alert {
    enum mon_check check;
    const char *feature;            /* lives as long as the monitor */
    enum mon_level from, to;        /* to == MON_OK: RESOLVED */
    double observed, threshold, baseline;  /* baseline NaN if none */
    int64_t window_start_ms, window_end_ms, window_events;
};

struct mon;

/* A monitor over a worker's feature vector whose names are names[0..n);
 * every baseline feature must be one of them (ERR_CONFIG naming it).
 * Takes ownership of b (freed by mon_close, also on failure). */
struct mon *mon_open(const struct mon_opts *o, struct mon_baseline *b,
                     const char *const *names, size_t n, struct err *e);
void mon_close(struct mon *m); /* NULL-safe */

/* One prediction: x in the worker's vector order (NaN = missing), the
 * score, processing latency, and whether it was scored degraded. */
void mon_observe(struct mon *m, const float *x, double score, int64_t latency_us, int degraded,
                 int64_t now_ms);
/* One dead-lettered input. */
void mon_observe_dead(struct mon *m, int64_t now_ms);
/* The decision made for x (the fairness check; a no-op without one):
 * approved or not, in the group given by x's fair_feature, a category code
 * 0..MON_GROUPS-1 (other values are not counted), or with fair_field, in
 * the group named group (the field's value as text; NULL: not counted).
 * The first MON_GROUPS distinct groups are counted; later ones are not
 * (logged once). */
#define MON_GROUPS 16
void mon_observe_decision(struct mon *m, const float *x, const char *group, int approved);
/* 1 when the fairness check groups by a caller-named group (fair_field). */
int mon_fair_by_field(const struct mon *m);
/* A label joined to its prediction's score (label 0/1). */
void mon_observe_label(struct mon *m, double score, int label);
/* The group text of a decision for x: group itself, or x's category code
 * with monitor.fairness.feature (written in buf[0..cap)); NULL when no
 * fairness check is on or x has no valid code. */
const char *mon_fair_group(const struct mon *m, const float *x, const char *group, char *buf,
                           size_t cap);
/* The label record's field naming the outcome groups (monitor.fairness.
 * label_field); "" when they are the decisions' groups. */
const char *mon_label_field(const struct mon *m);
/* A joined label with the decision of its prediction (approved 0/1) and
 * its group (a decision's group, or the label record's field): counted
 * for the fairness_tpr / fairness_fpr checks in the current slice. The
 * first FAIR_OUT_GROUPS groups are counted (a later one is logged once);
 * a no-op without a fairness check or with group NULL. */
void mon_observe_outcome(struct mon *m, const char *group, int approved, int label);
/* Closes the current slice when it is full or old and evaluates the
 * window; call it on every loop turn. Returns the number of alerts now
 * pending (see mon_alerts). */
size_t mon_tick(struct mon *m, int64_t now_ms);
/* Alerts produced since the last mon_alerts_clear; valid until then. */
const struct mon_alert *mon_alerts(const struct mon *m, size_t *n);
void mon_alerts_clear(struct mon *m);

/* 1 while any check is CRITICAL (worker status DEGRADED), else 0 (HEALTHY). */
int mon_degraded(const struct mon *m);
enum mon_level mon_level_of(const struct mon *m, enum mon_check c, size_t feature);

/* Values of the last evaluation, for the metrics endpoint. psi and
 * missing have room for n features (mon_num_features). */
struct mon_snapshot {
    size_t nfeat;
    const char *const *names;       /* the baseline's names, live as the monitor */
    double *psi, *missing;          /* caller-owned, nfeat each */
    double score_psi, score_mean, latency_p99_s, error_rate, auc;
    double disparate_impact;        /* min/max approval rate over groups; NaN if none */
    size_t ngroups;                 /* fairness groups seen, <= MON_GROUPS */
    const char *group[MON_GROUPS];  /* their names, live as the monitor */
    double group_approval[MON_GROUPS]; /* last window; NaN: no decision in it */
    double group_di[MON_GROUPS];    /* approval / the highest; NaN: under min_group */
    size_t nogroups;                /* groups of the labelled outcomes, <= MON_GROUPS */
    const char *ogroup[MON_GROUPS]; /* their names, live as the monitor */
    double group_tpr[MON_GROUPS], group_fpr[MON_GROUPS]; /* window; NaN: no label */
    double tpr_gap, fpr_gap;        /* highest - lowest; NaN: under two groups */
    int64_t windows, window_events;
    int degraded;
    int level[MON_NCHECKS];         /* worst level per check */
};
size_t mon_num_features(const struct mon *m);
void mon_snapshot(const struct mon *m, struct mon_snapshot *s);

/* Latency histogram (fixed memory, log-linear: 8 sub-buckets per power of
 * two of microseconds, so a bucket is at most 12.5% wide). */
#define MON_LAT_BUCKETS 280
int mon_lat_bucket(int64_t us);
int64_t mon_lat_upper_us(int bucket);
/* Quantile q of a histogram: the upper bound of the bucket holding it
 * (never below the true value). 0 when empty. */
int64_t mon_lat_quantile(const uint32_t *h, double q);

/* Alert -> JSON object text (the fields of schemas/alert_event.avsc) in
 * out[0..cap). Returns ERR_NOMEM if it does not fit. */
int mon_alert_json(const struct mon_alert *a, const char *worker, const char *model,
                   const char *model_version, int64_t emitted_ms, char *out, size_t cap,
                   struct err *e);

/* ---- worker glue ---- */

/* Who alerts are from, and where they go. */
struct mon_ident {
    const char *worker, *model, *model_version, *topic;
};

/* Monitor from the configuration (monitor.* keys; the baseline named by
 * monitor.baseline). Monitoring off (monitor.baseline empty): NULL with
 * e->code == ERR_OK. Otherwise NULL with the reason on failure. */
struct mon *mon_open_cfg(const struct cfg *c, const char *const *names, size_t n,
                         struct err *e);
/* The same with the baseline file path instead of monitor.baseline (a
 * variant's own baseline, common/streams/abtest.h). */
struct mon *mon_open_path(const struct cfg *c, const char *path, const char *const *names,
                          size_t n, struct err *e);
/* mon_tick, then each pending alert is logged and handed to emit as an
 * AlertEvent JSON object (the fields of schemas/alert_event.avsc), for the
 * caller to encode (codec_from_json, CODEC_ALERT) and produce; the alerts
 * are cleared. A change of overall status (HEALTHY/DEGRADED) is logged.
 * Returns the number of alerts emit accepted (returned ERR_OK). The monitor
 * computes; the worker runtime publishes. */
size_t mon_tick_alerts(struct mon *m, const struct mon_ident *id, int64_t now_ms,
                       int (*emit)(void *opaque, const char *json, struct err *e), void *opaque);
/* An alert that is no window check (e.g. "model_reload": a new model
 * refused or loaded) as AlertEvent JSON in out[0..cap): alert_type type,
 * severity INFO, WARNING or CRITICAL, status_to = severity (OK for INFO),
 * message as given. ERR_NOMEM if it does not fit. */
int mon_event_json(const struct mon_ident *id, const char *type, const char *severity,
                   const char *message, int64_t now_ms, char *out, size_t cap, struct err *e);


#endif
