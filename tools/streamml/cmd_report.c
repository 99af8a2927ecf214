/* streamml report: a backtest's predictions joined with labels -> one
 * self-contained HTML file (inline SVG: ROC, score distribution by label,
 * calibration) and a text summary; gates make CI fail a model.
 *
 * Every number comes from common/offline/backtest.c (checked against scikit-learn
 * and scipy in tests/test_report.c). Predictions are JSON lines as
 * `streamml replay` writes them; labels are CSV or JSON lines keyed by
 * event id, or the label field of transaction events on a topic.
 *
 * The images stream's predictions (`streamml consume` of
 * predictions.images, `streamml replay --stream images`) are read as they
 * are: keyed by image_id, graded ones scored by grade (QWK, confusion
 * matrix), their published referable flag (sensitivity, specificity) and
 * referable_probability (AUC, Brier, calibration); ungradable ones counted
 * by reason. Image reports carry no credit wording (no approval rates, no
 * good/bad).
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backtest.h"
#include "cli.h"
#include "cmds.h"
#include "codec.h"
#include "features.h"
#include "report_adv.h"
#include "report_fair.h"
#include "report_page.h"

/* PSI uses the monitoring module's baseline format and functions
 * (mon_baseline_load, mon_bin, mon_psi, written by `streamml profile`). */
#include "monitor.h"
#include "out.h"
#include "outcomes.h"

#define MAX_GATES 16
#define LINE_MAX_BYTES (1024 * 1024)
#define HIST_BINS 20
#define EXIT_GATE 3

struct gate {
    char metric[32], op[3], text[64];
    double value;
};

struct rep_args {
    struct cli cli;
    const char *preds, *labels, *labels_topic, *output, *baseline;
    const char *adv_train, *adv_live; /* adversarial validation (report_adv.c) */
    const char *fair_field;           /* fairness by outcome (report_fair.c) */
    const char *spec;                 /* --spec: the feature set of --baseline's names */
    struct gate gates[MAX_GATES];
    int ngates, referable;
};

/* PSI of the joined rows against the baseline. */
struct psi {
    struct mon_baseline *b;
    size_t nf;
    int idx[MON_MAX_FEATURES];  /* baseline feature -> txn-v1 index */
    uint64_t (*bins)[MON_BINS]; /* per baseline feature */
    uint64_t sbins[MON_BINS];
    double *value; /* PSI per baseline feature */
    double score, max;
    const char *max_name;
    size_t rows; /* joined rows that carried features */
};

#define MAX_REASONS 16

/* The joined rows. */
struct joined {
    double *p;
    int *y, *grade, *flag;      /* flag: images, the published referable flag */
    int *pts;                   /* scorecard points (0: none) */
    struct rpage_models models; /* model names, versions, event time range */
    size_t n, cap;
    int graded;
    int kind; /* 0 not known yet (no line read), 1 event predictions, 2 image predictions */
    long dup, unlabelled;
    long ungradable; /* images: labelled but ungradable, left out of the metrics */
    char reason[MAX_REASONS][24];
    long nreason[MAX_REASONS];
    size_t nreasons;
    struct psi *psi; /* NULL: no --baseline */
};

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: streamml report -p PREDICTIONS (-l LABELS | --labels-topic T) [-o FILE]\n"
        "                       [--gate METRIC>=X ...] [--referable N] [common options]\n\n"
        "Joins a backtest's predictions with labels by event id and writes one\n"
        "self-contained HTML report and a summary on stdout. The page: model name,\n"
        "version and event dates on top; the gates' results; metrics; score bands\n"
        "(count, bad rate, cumulative count and bad share; 50-point scorecard bands\n"
        "when the predictions carry points, else ten P(bad) bands) with their chart;\n"
        "ROC curve, score distribution by label, calibration plot; with --baseline,\n"
        "PSI sorted largest first, coloured at 0.1 and 0.2.\n\n"
        "  -p, --predictions F  JSON lines from `streamml replay` (event_id,\n"
        "                       probability; grade for graded outputs), or the images\n"
        "                       stream's predictions as they are (image_id, status,\n"
        "                       grade, referable, referable_probability: `streamml\n"
        "                       consume -t predictions.images`, `replay --stream\n"
        "                       images`); labels then give each image_id's true grade\n"
        "  -l, --labels F       CSV with event_id (or image_id) and label columns, or\n"
        "                       JSON lines {\"event_id\":..,\"label\":..}; label 1 bad, 0 good\n"
        "                       (a grade for graded outputs); empty or -1: unknown\n"
        "      --labels-topic T the label field of the transaction events on T\n"
        "                       (whole topic, assign() only)\n"
        "  -o, --output F       HTML file (default backtest.html)\n"
        "      --gate EXPR      auc, gini, ks, brier, qwk, sensitivity or specificity,\n"
        "                       then >=, >, <= or <, then a number: \"auc>=0.8\".\n"
        "                       Repeatable. A failed gate (or an undefined metric)\n"
        "                       exits 3\n"
        "      --referable N    graded outputs: grade >= N is referable (default 2)\n"
        "      --baseline F     PSI of every feature (predictions written with\n"
        "                       `replay --features`) and of the score against the\n"
        "                       model's training baseline (`streamml profile`); gates\n"
        "                       psi_score and psi_max (largest feature PSI)\n"
        "      --train-features F --live-features F\n"
        "                       adversarial validation: `streamml featurize` CSVs of\n"
        "                       the training rows and of the replayed or live-captured\n"
        "                       ones; a classifier separating them (stratified 5-fold)\n"
        "                       and its AUC, WARNING above 0.6, and the features that\n"
        "                       separate them most (tools/streamml/report_adv.c)\n"
        "      --fairness-field NAME\n"
        "                       fairness by outcome per group of NAME (a field of the\n"
        "                       predictions, or a txn-v1 feature of `replay --features`\n"
        "                       output): approval rate, TPR/FPR, disparate impact and\n"
        "                       the 80%% rule (tools/streamml/report_fair.c)\n"
        "      --spec SPEC      the feature spec of the predictions' features and of\n"
        "                       --baseline's names (default features.spec, else the\n"
        "                       built-in txn-v1); `streamml profile --spec` writes such\n"
        "                       baselines\n"
        "  -c, --config FILE, -X key=value, -b, --bootstrap HOSTS, --log-level L\n\n"
        "Metrics: AUC, Gini (2 AUC - 1), KS, Brier score, precision / recall /\n"
        "approval rate at decision.review_threshold and decision.decline_threshold;\n"
        "graded: quadratic weighted kappa, confusion matrix, sensitivity and\n"
        "specificity of the referable flag; PSI with --baseline (the monitoring\n"
        "baseline format, common/monitor/monitor.h, in builds that have it).\n"
        "Image predictions: QWK and confusion matrix of the grade, sensitivity and\n"
        "specificity of the published referable flag (truth: grade >= --referable),\n"
        "AUC and Brier score of referable_probability, ungradable images counted by\n"
        "reason and left out.\n"
        "Exit codes: 0 ok, 1 bad input or I/O, 2 usage, 3 a gate failed.\n");
}

static int parse_gate(const char *s, struct gate *g)
{
    static const char *const metrics[] = {
        "auc", "gini", "ks", "brier", "qwk", "sensitivity", "specificity", "psi_score", "psi_max"};
    size_t n = strcspn(s, "<>=");
    const char *op = s + n;
    char *end;
    int known = 0;

    if (n == 0 || n >= sizeof(g->metric))
        return -1;
    memcpy(g->metric, s, n);
    g->metric[n] = '\0';
    for (size_t i = 0; i < sizeof(metrics) / sizeof(metrics[0]); i++)
        known |= strcmp(g->metric, metrics[i]) == 0;
    if (!known)
        return -1;
    if (strncmp(op, ">=", 2) == 0 || strncmp(op, "<=", 2) == 0) {
        memcpy(g->op, op, 2);
        g->op[2] = '\0';
        op += 2;
    } else if (*op == '>' || *op == '<') {
        g->op[0] = *op++;
        g->op[1] = '\0';
    } else {
        return -1;
    }
    g->value = strtod(op, &end);
    if (end == op || *end || !isfinite(g->value))
        return -1;
    snprintf(g->text, sizeof(g->text), "%s", s);
    return 0;
}

static int parse_args(int argc, char **argv, struct rep_args *a)
{
    static const struct option lo[] = {{"predictions", required_argument, NULL, 'p'},
                                       {"labels", required_argument, NULL, 'l'},
                                       {"output", required_argument, NULL, 'o'},
                                       {"labels-topic", required_argument, NULL, 1001},
                                       {"gate", required_argument, NULL, 1002},
                                       {"referable", required_argument, NULL, 1003},
                                       {"baseline", required_argument, NULL, 1004},
                                       {"train-features", required_argument, NULL, 1010},
                                       {"live-features", required_argument, NULL, 1011},
                                       {"fairness-field", required_argument, NULL, 1012},
                                       {"spec", required_argument, NULL, 1013},
                                       CLI_LONGOPTS,
                                       {NULL, 0, NULL, 0}};
    int opt, r;
    char *end;

    while ((opt = getopt_long(argc, argv, CLI_SHORTOPTS "p:l:o:", lo, NULL)) != -1) {
        if ((r = cli_opt(&a->cli, opt, optarg)) != 0) {
            if (r < 0)
                return EXIT_USAGE;
            continue;
        }
        switch (opt) {
        case 'p':
            a->preds = optarg;
            break;
        case 'l':
            a->labels = optarg;
            break;
        case 'o':
            a->output = optarg;
            break;
        case 1001:
            a->labels_topic = optarg;
            break;
        case 1002:
            if (a->ngates == MAX_GATES || parse_gate(optarg, &a->gates[a->ngates])) {
                fprintf(stderr,
                        "error: --gate %s: expected METRIC>=X with METRIC one of auc, "
                        "gini, ks, brier, qwk, sensitivity, specificity, psi_score, "
                        "psi_max (at most %d)\n",
                        optarg, MAX_GATES);
                return EXIT_USAGE;
            }
            a->ngates++;
            break;
        case 1003:
            a->referable = (int)strtol(optarg, &end, 10);
            if (*end || end == optarg) {
                fprintf(stderr, "error: --referable %s: expected an integer grade\n", optarg);
                return EXIT_USAGE;
            }
            break;
        case 1004:
            a->baseline = optarg;
            break;
        case 1010:
            a->adv_train = optarg;
            break;
        case 1011:
            a->adv_live = optarg;
            break;
        case 1012:
            a->fair_field = optarg;
            break;
        case 1013:
            a->spec = optarg;
            break;
        case 'h':
            usage(stdout);
            return -1;
        case 'V':
            cli_version(stdout);
            return -1;
        default:
            cli_usage_error("streamml report", lo, argv);
            return EXIT_USAGE;
        }
    }
    if (!a->preds || (!a->labels == !a->labels_topic)) {
        fprintf(stderr, "error: give --predictions and one of --labels, --labels-topic\n");
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

/* ---- PSI against the training baseline ---- */

static int psi_open(struct psi *ps, const char *path, struct err *e)
{
    if (!(ps->b = mon_baseline_load(path, e)))
        return e->code;
    ps->nf = mon_baseline_num_features(ps->b);
    for (size_t f = 0; f < ps->nf; f++) {
        const char *name = mon_baseline_feature(ps->b, f);
        if ((ps->idx[f] = feat_txn_index(name)) < 0)
            return err_set(e, ERR_CONFIG, "%s: feature \"%s\" is not in %s", path, name,
                           feat_txn_version());
    }
    ps->bins = calloc(ps->nf + 1, sizeof(*ps->bins));
    ps->value = calloc(ps->nf + 1, sizeof(double));
    if (!ps->bins || !ps->value)
        return err_set(e, ERR_NOMEM, "out of memory");
    return ERR_OK;
}

/* One joined row: its score, and its features when the line has them.
 * Missing values are left out, as the monitor does. */
static int psi_observe(struct psi *ps, json_t *o, double p, long no, const char *path,
                       struct err *e)
{
    const struct mon_dist *sd = mon_baseline_score(ps->b);
    json_t *xs = json_object_get(o, "features");

    if (sd)
        ps->sbins[mon_bin(sd->edges, sd->nedges, p)]++;
    if (!xs)
        return ERR_OK;
    if (!json_is_array(xs) || json_array_size(xs) != feat_txn_dim())
        return err_set(e, ERR_DECODE, "%s: line %ld: features must be an array of %zu", path, no,
                       feat_txn_dim());
    for (size_t f = 0; f < ps->nf; f++) {
        json_t *v = json_array_get(xs, (size_t)ps->idx[f]);
        const struct mon_dist *d = mon_baseline_dist(ps->b, f);
        if (json_is_number(v))
            ps->bins[f][mon_bin(d->edges, d->nedges, json_number_value(v))]++;
        else if (!json_is_null(v))
            return err_set(e, ERR_DECODE, "%s: line %ld: feature %s is not a number", path, no,
                           mon_baseline_feature(ps->b, f));
    }
    ps->rows++;
    return ERR_OK;
}

/* The monitor's window PSI, over the whole backtest. */
static double psi_of(const uint64_t *bins, const struct mon_dist *d)
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

static void psi_finish(struct psi *ps)
{
    const struct mon_dist *sd = mon_baseline_score(ps->b);

    ps->score = sd ? psi_of(ps->sbins, sd) : NAN;
    ps->max = NAN;
    for (size_t f = 0; f < ps->nf; f++) {
        ps->value[f] = ps->rows ? psi_of(ps->bins[f], mon_baseline_dist(ps->b, f)) : NAN;
        if (!isnan(ps->value[f]) && (isnan(ps->max) || ps->value[f] > ps->max)) {
            ps->max = ps->value[f];
            ps->max_name = mon_baseline_feature(ps->b, f);
        }
    }
}

static void psi_close(struct psi *ps)
{
    mon_baseline_free(ps->b);
    free(ps->bins);
    free(ps->value);
}

static size_t psi_count(const struct psi *ps)
{
    return ps->nf;
}

static const char *psi_name(const struct psi *ps, size_t f)
{
    return mon_baseline_feature(ps->b, f);
}

/* ---- predictions ---- */

static int joined_push(struct joined *j, double p, int y, int grade, int flag, int pts)
{
    if (j->n == j->cap) {
        size_t cap = j->cap ? j->cap * 2 : 4096;
        double *np = realloc(j->p, cap * sizeof(*np));
        int *ny = np ? realloc(j->y, cap * sizeof(*ny)) : NULL;
        int *ng = ny ? realloc(j->grade, cap * sizeof(*ng)) : NULL;
        int *nf = ng ? realloc(j->flag, cap * sizeof(*nf)) : NULL;
        int *ns = nf ? realloc(j->pts, cap * sizeof(*ns)) : NULL;
        if (np)
            j->p = np;
        if (ny)
            j->y = ny;
        if (ng)
            j->grade = ng;
        if (nf)
            j->flag = nf;
        if (ns)
            j->pts = ns;
        if (!ns)
            return ERR_NOMEM;
        j->cap = cap;
    }
    j->pts[j->n] = pts;
    j->p[j->n] = p;
    j->y[j->n] = y;
    j->grade[j->n] = grade;
    j->flag[j->n] = flag;
    j->n++;
    return ERR_OK;
}

static void count_reason(struct joined *j, const char *reason)
{
    size_t k = 0;

    j->ungradable++;
    while (k < j->nreasons && strcmp(j->reason[k], reason) != 0)
        k++;
    if (k == j->nreasons) {
        if (k == MAX_REASONS - 1)
            reason = "other"; /* the last slot takes the rest */
        else
            j->nreasons++;
        snprintf(j->reason[k], sizeof(j->reason[k]), "%s", reason);
    }
    j->nreason[k]++;
}

/* One image prediction as the images stream publishes it. Graded: the
 * grade, the published referable flag and P(referable); ungradable:
 * counted by reason (they have no grade to score). */
static int image_line(struct oc_table *l, struct joined *j, json_t *o, long no, const char *path,
                      struct err *e)
{
    json_t *id = json_object_get(o, "image_id"), *st = json_object_get(o, "status");
    json_t *gr = json_object_get(o, "grade"), *fl = json_object_get(o, "referable");
    json_t *rp = json_object_get(o, "referable_probability");
    int ok = json_is_string(st) && strcmp(json_string_value(st), "ok") == 0;
    double p = json_number_value(rp);
    long k;

    if (!json_is_string(id) || !json_is_string(st))
        return err_set(e, ERR_DECODE,
                       "%s: line %ld: an image prediction needs image_id and "
                       "status strings",
                       path, no);
    if (ok && (!json_is_integer(gr) || !json_is_boolean(fl) || !json_is_number(rp) ||
               !(p >= 0 && p <= 1)))
        return err_set(e, ERR_DECODE,
                       "%s: line %ld: a graded image needs an integer grade, "
                       "a boolean referable and referable_probability in [0, 1]",
                       path, no);
    if ((k = oc_find(l, json_string_value(id))) < 0) {
        j->unlabelled++;
        return ERR_OK;
    }
    if (oc_join(l, k)) {
        j->dup++; /* a redelivered duplicate: the first one counts */
        return ERR_OK;
    }
    rpage_models_add(&j->models, json_string_value(json_object_get(o, "model_name")),
                     json_string_value(json_object_get(o, "model_version")),
                     json_is_integer(json_object_get(o, "event_time"))
                         ? (int64_t)json_integer_value(json_object_get(o, "event_time"))
                         : -1);
    if (!ok) {
        json_t *why = json_object_get(o, "reason");
        count_reason(j, json_is_string(why) ? json_string_value(why) : "unknown");
        return ERR_OK;
    }
    j->graded = 1;
    if (joined_push(j, p, (int)oc_value(l, k), (int)json_integer_value(gr), json_is_true(fl), 0))
        return err_set(e, ERR_NOMEM, "out of memory");
    return ERR_OK;
}

static int pred_line(struct oc_table *l, struct joined *j, const char *line, size_t len, long no,
                     const char *path, struct err *e)
{
    json_error_t je;
    json_t *o = json_loadb(line, len, 0, &je), *id, *pr, *gr;
    long k;
    int rc = ERR_OK;
    double p = NAN;

    if (!o)
        return err_set(e, ERR_DECODE, "%s: line %ld: %s", path, no, je.text);
    k = json_object_get(o, "image_id") && !json_object_get(o, "event_id") ? 2 : 1;
    if (j->kind && j->kind != k) {
        json_decref(o);
        return err_set(e, ERR_DECODE, "%s: line %ld: an %s prediction among %s ones", path, no,
                       k == 2 ? "image" : "event", k == 2 ? "event" : "image");
    }
    j->kind = (int)k;
    if (k == 2) {
        if (j->psi)
            rc = err_set(e, ERR_CONFIG,
                         "--baseline: PSI of transaction features; image "
                         "predictions carry none");
        else
            rc = image_line(l, j, o, no, path, e);
        json_decref(o);
        return rc;
    }
    id = json_object_get(o, "event_id");
    pr = json_object_get(o, "probability");
    gr = json_object_get(o, "grade");
    if (pr)
        p = json_number_value(pr);
    if (!json_is_string(id))
        rc = err_set(e, ERR_DECODE, "%s: line %ld: no event_id string", path, no);
    else if (!json_is_number(pr) || !(p >= 0 && p <= 1))
        rc = err_set(e, ERR_DECODE, "%s: line %ld: probability must be a number in [0, 1]", path,
                     no);
    else if (gr && !json_is_integer(gr))
        rc = err_set(e, ERR_DECODE, "%s: line %ld: grade must be an integer", path, no);
    else if ((k = oc_find(l, json_string_value(id))) < 0)
        j->unlabelled++;
    else if (oc_join(l, k))
        j->dup++; /* a redelivered duplicate: the first one counts */
    else if (!gr && oc_value(l, k) != 0 && oc_value(l, k) != 1)
        rc = err_set(e, ERR_DECODE,
                     "label of %s is %d: binary labels are 0 or 1 (a graded "
                     "prediction carries a grade)",
                     json_string_value(id), (int)oc_value(l, k));
    else {
        json_t *sc = json_object_get(o, "score"), *t = json_object_get(o, "event_time");
        j->graded |= gr != NULL;
        rpage_models_add(&j->models, json_string_value(json_object_get(o, "model_name")),
                         json_string_value(json_object_get(o, "model_version")),
                         json_is_integer(t) ? (int64_t)json_integer_value(t) : -1);
        rc = joined_push(j, p, (int)oc_value(l, k), gr ? (int)json_integer_value(gr) : -1, -1,
                         json_is_integer(sc) ? (int)json_integer_value(sc) : 0);
        if (rc)
            err_set(e, ERR_NOMEM, "out of memory");
        else if (j->psi)
            rc = psi_observe(j->psi, o, p, no, path, e);
    }
    json_decref(o);
    return rc;
}

static int read_predictions(struct oc_table *l, struct joined *j, const char *path, struct err *e)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long no = 0;
    int rc = ERR_OK;

    if (!f)
        return err_set(e, ERR_CONFIG, "%s: %s", path, strerror(errno));
    while (rc == ERR_OK && (len = getline(&line, &cap, f)) >= 0) {
        no++;
        if (len > LINE_MAX_BYTES)
            rc = err_set(e, ERR_DECODE, "%s: line %ld longer than %d bytes", path, no,
                         LINE_MAX_BYTES);
        else if (len > 1)
            rc = pred_line(l, j, line, (size_t)len, no, path, e);
    }
    free(line);
    if (f != stdin)
        fclose(f);
    return rc;
}

/* ---- metrics ---- */

struct results {
    size_t n, pos;
    double auc, gini, ks, brier, qwk, sens, spec;
    struct bt_at at[2];
    double *fpr, *tpr;
    size_t nroc;
    double frac[10], mean[10];
    size_t cnt[10], ncal;
    size_t hist[2][HIST_BINS];
    int labels[BT_MAX_GRADES];
    size_t ngrades, confusion[BT_MAX_GRADES * BT_MAX_GRADES];
    struct rpage_bands bands; /* transactions: score bands (report_page.h) */
    struct rpage_gate gate[MAX_GATES];
    size_t ngate;
};

static int compute(struct joined *j, const struct cfg *cf, int referable, struct results *r,
                   struct err *e)
{
    int *y = j->y;

    memset(r, 0, sizeof(*r));
    r->n = j->n;
    r->qwk = r->sens = r->spec = NAN;
    if (j->n == 0)
        return err_set(e, ERR_INVALID, "no prediction has a label: nothing to report");
    if (j->graded) {
        /* Truth is a grade: the binary outcome is the referable flag. */
        y = malloc(j->n * sizeof(*y));
        if (!y)
            return err_set(e, ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < j->n; i++)
            y[i] = j->y[i] >= referable;
        r->qwk = bt_qwk(j->y, j->grade, j->n, e);
        if (bt_grades(j->y, j->grade, j->n, r->labels, &r->ngrades, e) ||
            bt_confusion(j->y, j->grade, j->n, r->labels, r->ngrades, r->confusion, e)) {
            free(y);
            return e->code;
        }
        if (j->kind == 2) /* the flag the stream published, not a grade cut */
            bt_referable(y, j->flag, j->n, 1, &r->sens, &r->spec);
        else
            bt_referable(j->y, j->grade, j->n, referable, &r->sens, &r->spec);
    }
    for (size_t i = 0; i < j->n; i++) {
        int b = (int)(j->p[i] * HIST_BINS);
        r->pos += y[i] != 0;
        r->hist[y[i] != 0][b >= HIST_BINS ? HIST_BINS - 1 : b]++;
    }
    r->auc = bt_auc(j->p, y, j->n);
    r->gini = 2 * r->auc - 1;
    r->ks = bt_ks(j->p, y, j->n);
    r->brier = bt_brier(j->p, y, j->n);
    if (j->kind != 2) { /* decision thresholds: the transactions stream's */
        bt_at(j->p, y, j->n, cfg_double(cf, "decision.review_threshold"), &r->at[0]);
        bt_at(j->p, y, j->n, cfg_double(cf, "decision.decline_threshold"), &r->at[1]);
    }
    r->fpr = calloc(j->n + 1, sizeof(double));
    r->tpr = calloc(j->n + 1, sizeof(double));
    if (!r->fpr || !r->tpr) {
        if (y != j->y)
            free(y);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    if (r->pos && r->pos < j->n)
        bt_roc(j->p, y, j->n, r->fpr, r->tpr, &r->nroc, e);
    bt_calibration(j->p, y, j->n, 10, r->frac, r->mean, r->cnt, &r->ncal, e);
    if (j->kind != 2 && !j->graded)
        rpage_bands_compute(j->p, j->pts, y, j->n, &r->bands);
    if (y != j->y)
        free(y);
    return ERR_OK;
}

static double metric(const struct results *r, const struct psi *ps, const char *name)
{
    if (strncmp(name, "psi_", 4) == 0)
        return !ps ? NAN : strcmp(name, "psi_score") == 0 ? ps->score : ps->max;
    return strcmp(name, "auc") == 0           ? r->auc
           : strcmp(name, "gini") == 0        ? r->gini
           : strcmp(name, "ks") == 0          ? r->ks
           : strcmp(name, "brier") == 0       ? r->brier
           : strcmp(name, "qwk") == 0         ? r->qwk
           : strcmp(name, "sensitivity") == 0 ? r->sens
                                              : r->spec;
}

static int gate_passes(const struct gate *g, double v)
{
    if (isnan(v))
        return 0; /* an undefined metric never passes */
    return strcmp(g->op, ">=") == 0   ? v >= g->value
           : strcmp(g->op, ">") == 0  ? v > g->value
           : strcmp(g->op, "<=") == 0 ? v <= g->value
                                      : v < g->value;
}

/* ---- HTML (self-contained: inline CSS and SVG, no scripts, no links) ---- */

/* Charts at a size read without zooming (480 x 360, 11-15 px text); the
 * page scales them down on narrow screens (max-width: 100%). */
#define W 480.0
#define H 360.0
#define PAD 52.0

static double sx(double v)
{
    return PAD + v * (W - 2 * PAD);
}

static double sy(double v)
{
    return H - PAD - v * (H - 2 * PAD);
}

static void svg_axes(FILE *o, const char *title, const char *xl, const char *yl)
{
    fprintf(o,
            "<svg width=\"%.0f\" height=\"%.0f\" "
            "viewBox=\"0 0 %.0f %.0f\" role=\"img\" font-family=\"sans-serif\">"
            "<title>%s</title>\n",
            W, H, W, H, title);
    fprintf(o,
            "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
            "stroke=\"#999\"/>\n",
            PAD, PAD, W - 2 * PAD, H - 2 * PAD);
    fprintf(o, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"15\" text-anchor=\"middle\">%s</text>\n",
            W / 2, PAD - 16, title);
    fprintf(o, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\" text-anchor=\"middle\">%s</text>\n",
            W / 2, H - 10, xl);
    fprintf(o,
            "<text x=\"14\" y=\"%.1f\" font-size=\"13\" text-anchor=\"middle\" "
            "transform=\"rotate(-90 14 %.1f)\">%s</text>\n",
            H / 2, H / 2, yl);
    for (int k = 0; k <= 4; k++) {
        double v = k / 4.0;
        fprintf(o,
                "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\">%.2g</text>"
                "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"end\">%.2g</text>\n",
                sx(v), H - PAD + 16, v, PAD - 5, sy(v) + 4, v);
    }
}

static void svg_diagonal(FILE *o)
{
    fprintf(o,
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#bbb\" "
            "stroke-dasharray=\"4 3\"/>\n",
            sx(0), sy(0), sx(1), sy(1));
}

static void svg_roc(FILE *o, const struct results *r)
{
    size_t step = r->nroc > 600 ? r->nroc / 600 + 1 : 1; /* bounded file size */

    svg_axes(o, "ROC curve", "false positive rate", "true positive rate");
    svg_diagonal(o);
    fprintf(o, "<polyline fill=\"none\" stroke=\"#c0392b\" stroke-width=\"2\" points=\"");
    for (size_t i = 0; i < r->nroc; i += step)
        fprintf(o, "%.1f,%.1f ", sx(r->fpr[i]), sy(r->tpr[i]));
    if (r->nroc)
        fprintf(o, "%.1f,%.1f", sx(r->fpr[r->nroc - 1]), sy(r->tpr[r->nroc - 1]));
    fprintf(o, "\"/></svg>\n");
}

/* What a report calls its score and classes: transactions (P(bad), good
 * and bad) or images (P(referable), referable or not). */
struct words {
    const char *score, *neg, *pos, *title;
};

static const struct words txn_words = {"P(bad)", "good", "bad", "Backtest report"};
static const struct words img_words = {"P(referable)", "not referable", "referable",
                                       "Image grading report"};

/* A spec on its own record: its label, with no credit wording. */
static const struct words spec_words = {"P(label = 1)", "label 0", "label 1", "Backtest report"};

static const struct words *words_of(const struct joined *j)
{
    if (j->kind == 2)
        return &img_words;
    return feat_txn_reads_rec() ? &spec_words : &txn_words;
}

static void svg_hist(FILE *o, const struct results *r, const struct words *w)
{
    size_t tot[2] = {r->n - r->pos, r->pos};
    double top = 0, bw = (W - 2 * PAD) / HIST_BINS;
    static const char *const colour[2] = {"#2e86c1", "#c0392b"};

    for (int c = 0; c < 2; c++)
        for (int b = 0; b < HIST_BINS; b++)
            if (tot[c] && (double)r->hist[c][b] / (double)tot[c] > top)
                top = (double)r->hist[c][b] / (double)tot[c];
    svg_axes(o, "Score distribution by label", w->score, "share of class (scaled)");
    for (int c = 0; c < 2; c++)
        for (int b = 0; b < HIST_BINS && tot[c] && top > 0; b++) {
            double h = (double)r->hist[c][b] / (double)tot[c] / top;
            fprintf(o,
                    "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\" "
                    "fill-opacity=\"0.45\"/>\n",
                    sx(0) + b * bw, sy(h), bw, sy(0) - sy(h), colour[c]);
        }
    fprintf(o,
            "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\" fill=\"%s\">%s (%zu)</text>"
            "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\" fill=\"%s\">%s (%zu)</text></svg>\n",
            sx(0.56), sy(0.92), colour[0], w->neg, tot[0], sx(0.56), sy(0.84), colour[1], w->pos,
            tot[1]);
}

static void svg_calibration(FILE *o, const struct results *r, const struct words *w)
{
    char xl[64], yl[64];

    snprintf(xl, sizeof(xl), "mean predicted %s", w->score);
    snprintf(yl, sizeof(yl), "observed share %s", w->pos);
    svg_axes(o, "Calibration", xl, yl);
    svg_diagonal(o);
    fprintf(o, "<polyline fill=\"none\" stroke=\"#27ae60\" stroke-width=\"2\" points=\"");
    for (size_t i = 0; i < r->ncal; i++)
        fprintf(o, "%.1f,%.1f ", sx(r->mean[i]), sy(r->frac[i]));
    fprintf(o, "\"/>\n");
    for (size_t i = 0; i < r->ncal; i++)
        fprintf(o,
                "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#27ae60\"><title>%zu rows"
                "</title></circle>\n",
                sx(r->mean[i]), sy(r->frac[i]), r->cnt[i]);
    fprintf(o, "</svg>\n");
}

static void html_row(FILE *o, const char *name, double v)
{
    fprintf(o, "<tr><td>%s</td><td>", name);
    if (isnan(v))
        fputs("n/a", o);
    else
        fprintf(o, "%.6f", v);
    fputs("</td></tr>\n", o);
}

static void html_confusion(FILE *o, const struct results *r)
{
    fputs("<h2>Confusion matrix (rows: truth, columns: predicted grade)</h2><table><tr><th></th>",
          o);
    for (size_t c = 0; c < r->ngrades; c++)
        fprintf(o, "<th>%d</th>", r->labels[c]);
    fputs("</tr>\n", o);
    for (size_t a = 0; a < r->ngrades; a++) {
        fprintf(o, "<tr><th>%d</th>", r->labels[a]);
        for (size_t c = 0; c < r->ngrades; c++)
            fprintf(o, "<td>%zu</td>", r->confusion[a * r->ngrades + c]);
        fputs("</tr>\n", o);
    }
    fputs("</table>\n", o);
}

/* Images: grading metrics only, with the ungradable images by reason. */
static void html_image_tables(FILE *o, const struct results *r, const struct joined *j,
                              int referable)
{
    fputs("<table><tr><th>metric</th><th>value</th></tr>\n", o);
    fprintf(o,
            "<tr><td>graded images joined</td><td>%zu (%zu referable: grade &gt;= %d)</td>"
            "</tr>\n",
            r->n, r->pos, referable);
    fprintf(o, "<tr><td>ungradable images (left out)</td><td>%ld", j->ungradable);
    for (size_t k = 0; k < j->nreasons; k++) {
        fprintf(o, "%s", k ? ", " : ": ");
        rpage_escape(o, j->reason[k]);
        fprintf(o, " %ld", j->nreason[k]);
    }
    fputs("</td></tr>\n", o);
    html_row(o, "quadratic weighted kappa", r->qwk);
    html_row(o, "sensitivity (published referable flag)", r->sens);
    html_row(o, "specificity (published referable flag)", r->spec);
    html_row(o, "AUC of P(referable)", r->auc);
    html_row(o, "Brier score of P(referable)", r->brier);
    fputs("</table>\n", o);
    html_confusion(o, r);
}

static void html_tables(FILE *o, const struct results *r, const struct joined *j)
{
    fputs("<table><tr><th>metric</th><th>value</th></tr>\n", o);
    fprintf(o, "<tr><td>events joined</td><td>%zu (%zu bad)</td></tr>\n", r->n, r->pos);
    html_row(o, "AUC", r->auc);
    html_row(o, "Gini (2 AUC - 1)", r->gini);
    html_row(o, "KS", r->ks);
    html_row(o, "Brier score", r->brier);
    for (int k = 0; k < 2; k++) {
        char name[64];
        snprintf(name, sizeof(name), "precision at %.3g", r->at[k].threshold);
        html_row(o, name, r->at[k].precision);
        snprintf(name, sizeof(name), "recall at %.3g", r->at[k].threshold);
        html_row(o, name, r->at[k].recall);
        snprintf(name, sizeof(name), "%s at %.3g",
                 feat_txn_reads_rec() ? "share below" : "approval rate", r->at[k].threshold);
        html_row(o, name, r->at[k].approval);
    }
    if (!j->psi) {
        fputs("<tr><td>PSI (features, score)</td><td>not computed: no --baseline</td></tr>\n", o);
    } else {
        html_row(o, "PSI of the score", j->psi->score);
        html_row(o, "largest feature PSI", j->psi->max);
    }
    if (j->graded) {
        html_row(o, "quadratic weighted kappa", r->qwk);
        html_row(o, "sensitivity (referable)", r->sens);
        html_row(o, "specificity (referable)", r->spec);
    }
    fputs("</table>\n", o);
    if (j->graded)
        html_confusion(o, r);
    rpage_bands_html(o, &r->bands);
}

/* PSI per feature, sorted and coloured (report_page.c). */
static void html_psi(FILE *o, const struct psi *ps)
{
    const char **names = calloc(psi_count(ps) + 1, sizeof(*names));

    if (!names)
        return;
    for (size_t f = 0; f < psi_count(ps); f++)
        names[f] = psi_name(ps, f);
    rpage_psi_html(o, names, ps->value, psi_count(ps), ps->score, ps->rows);
    free(names);
}

static int write_html(const char *path, const struct rep_args *a, const struct results *r,
                      const struct joined *j, const struct report_adv *adv, const struct fair *fair,
                      struct err *e)
{
    const struct words *w = words_of(j);
    struct out *ou;
    FILE *o;

    if (out_open(&ou, path, e))
        return e->code;
    o = out_file(ou);
    fprintf(o,
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>streamml %s"
            "</title>\n<style>body{font-family:sans-serif;margin:2em}table{border-collapse:"
            "collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
            "table.head th,table.head td{text-align:left}"
            "svg{margin:0 1.5em 1.5em 0;max-width:100%%;height:auto}"
            ".pass{color:#1e8449;font-weight:bold}.fail{color:#c0392b;font-weight:bold}"
            "tr.psi-ok td{background:#e9f7ef}tr.psi-warn td{background:#fef5e7}"
            "tr.psi-crit td{background:#fdedec;color:#922b21;font-weight:bold}"
            "tr.total td{font-weight:bold}</style></head><body>\n<h1>%s</h1>\n",
            w->title, w->title);
    rpage_header_html(o, &j->models);
    rpage_gates_html(o, r->gate, r->ngate);
    fputs("<h2>Data</h2>\n<p>Predictions: ", o);
    rpage_escape(o, a->preds);
    fputs("<br>Labels: ", o);
    rpage_escape(o, a->labels ? a->labels : a->labels_topic);
    fprintf(o, "<br>%zu joined, %ld duplicate prediction(s) ignored, %ld unlabelled</p>\n", r->n,
            j->dup, j->unlabelled);
    if (j->kind == 2)
        html_image_tables(o, r, j, a->referable);
    else
        html_tables(o, r, j);
    fputs("<div>\n", o);
    svg_roc(o, r);
    svg_hist(o, r, w);
    svg_calibration(o, r, w);
    fputs("</div>\n", o);
    if (j->psi)
        html_psi(o, j->psi);
    if (adv)
        report_adv_html(o, adv);
    if (fair)
        report_fair_html(o, a->fair_field, fair);
    fputs("</body></html>\n", o);
    return out_commit(ou, e);
}

/* ---- summary and gates ---- */

/* Every gate's value and result, for the page and the summary. */
static void eval_gates(const struct rep_args *a, struct results *r, const struct joined *j)
{
    r->ngate = 0;
    for (int g = 0; g < a->ngates; g++) {
        double v = metric(r, j->psi, a->gates[g].metric);
        r->gate[r->ngate++] =
            (struct rpage_gate){a->gates[g].text, v, gate_passes(&a->gates[g], v)};
    }
}

static int gates(const struct results *r)
{
    int failed = 0;

    for (size_t g = 0; g < r->ngate; g++) {
        printf("gate %s: %s (%.6f)\n", r->gate[g].text, r->gate[g].pass ? "pass" : "FAIL",
               r->gate[g].value);
        failed |= !r->gate[g].pass;
    }
    return failed;
}

static int summary_images(const struct rep_args *a, const struct results *r, const struct joined *j,
                          size_t nlabels, size_t label_only)
{
    printf("report: joined %zu graded image predictions with labels (%zu referable: grade >= "
           "%d); %ld ungradable",
           r->n, r->pos, a->referable, j->ungradable);
    for (size_t k = 0; k < j->nreasons; k++)
        printf("%s%s %ld", k ? ", " : " (", j->reason[k], j->nreason[k]);
    printf("%s; %ld duplicate, %ld unlabelled, %zu of %zu labels without prediction\n",
           j->nreasons ? ")" : "", j->dup, j->unlabelled, label_only, nlabels);
    printf("qwk %.6f  sensitivity %.6f  specificity %.6f (published referable flag)\n", r->qwk,
           r->sens, r->spec);
    printf("auc %.6f  brier %.6f (referable_probability)\n", r->auc, r->brier);
    printf("confusion (rows: truth, columns: predicted grade):\n");
    for (size_t c = 0; c < r->ngrades; c++)
        printf("%s%d", c ? " " : "    ", r->labels[c]);
    for (size_t t = 0; t < r->ngrades; t++) {
        printf("\n%d:", r->labels[t]);
        for (size_t c = 0; c < r->ngrades; c++)
            printf(" %zu", r->confusion[t * r->ngrades + c]);
    }
    printf("\n");
    return gates(r);
}

static int summary(const struct rep_args *a, const struct results *r, const struct joined *j,
                   size_t nlabels, size_t label_only)
{
    if (j->kind == 2)
        return summary_images(a, r, j, nlabels, label_only);
    printf("report: joined %zu predictions with labels (%zu bad); %ld duplicate, %ld "
           "unlabelled, %zu of %zu labels without prediction\n",
           r->n, r->pos, j->dup, j->unlabelled, label_only, nlabels);
    printf("auc %.6f  gini %.6f  ks %.6f  brier %.6f\n", r->auc, r->gini, r->ks, r->brier);
    for (int k = 0; k < 2; k++)
        printf("at %.3g: precision %.6f  recall %.6f  approval %.6f\n", r->at[k].threshold,
               r->at[k].precision, r->at[k].recall, r->at[k].approval);
    if (j->graded)
        printf("qwk %.6f  sensitivity %.6f  specificity %.6f (referable: grade >= %d)\n", r->qwk,
               r->sens, r->spec, a->referable);
    if (j->psi)
        printf("psi score %.12f  max feature %.12f (%s), %zu rows with features\n", j->psi->score,
               j->psi->max, j->psi->max_name ? j->psi->max_name : "-", j->psi->rows);
    else
        printf("psi: not computed (no --baseline)\n");
    rpage_bands_summary(&r->bands);
    return gates(r);
}

int cmd_report(int argc, char **argv)
{
    struct rep_args a = {.output = "backtest.html", .referable = 2};
    struct oc_table *l = NULL;
    struct joined j = {0};
    struct results r = {0};
    struct psi ps = {0};
    struct err e = {0};
    struct cfg *cf = NULL;
    struct report_adv adv = {0};
    static struct fair fair;
    size_t label_only = 0;
    int rc = parse_args(argc, argv, &a), failed = 0, with_adv;

    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    rpage_models_init(&j.models);
    with_adv = a.adv_train || a.adv_live;
    if (with_adv && !(a.adv_train && a.adv_live)) {
        fprintf(stderr, "error: --train-features and --live-features go together\n");
        return EXIT_USAGE;
    }
    if (!(cf = cli_load(&a.cli, "report")))
        return EXIT_USAGE;
    /* The feature set whose names the baseline and the features carry. */
    if (feat_txn_use_cfg(cf, a.spec ? a.spec : cfg_str(cf, "features.spec"), &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        cfg_free(cf);
        return EXIT_USAGE;
    }
    rc = oc_open(&l, OC_LABEL, &e);
    if (rc == ERR_OK)
        rc = a.labels ? oc_read_file(l, a.labels, &e) : oc_read_topic(l, a.labels_topic, cf, &e);
    if (rc == ERR_OK && a.baseline && (rc = psi_open(&ps, a.baseline, &e)) == ERR_OK)
        j.psi = &ps;
    if (rc == ERR_OK)
        rc = read_predictions(l, &j, a.preds, &e);
    if (rc == ERR_OK && j.psi)
        psi_finish(&ps);
    /* fairness compares credit decisions (approve/review/decline) by group;
     * the images stream publishes grades, so say so rather than a decode error */
    if (rc == ERR_OK && a.fair_field && j.kind == 2)
        rc = err_set(&e, ERR_CONFIG,
                     "--fairness-field %s: fairness by outcome needs credit decisions "
                     "(approve/review/decline); %s holds image predictions",
                     a.fair_field, a.preds);
    if (rc == ERR_OK && (rc = compute(&j, cf, a.referable, &r, &e)) == ERR_OK)
        eval_gates(&a, &r, &j);
    if (rc == ERR_OK && with_adv)
        rc = report_adv_run(a.adv_train, a.adv_live, &adv, &e);
    if (rc == ERR_OK && a.fair_field)
        rc = report_fair_run(a.preds, a.labels, a.labels_topic, cf, a.fair_field, &fair, &e);
    if (rc == ERR_OK)
        rc = write_html(a.output, &a, &r, &j, with_adv ? &adv : NULL, a.fair_field ? &fair : NULL,
                        &e);
    if (rc == ERR_OK) {
        label_only = oc_unjoined(l);
        failed = summary(&a, &r, &j, oc_count(l), label_only);
        if (with_adv)
            report_adv_summary(&adv);
        if (a.fair_field)
            report_fair_summary(a.fair_field, &fair);
        printf("wrote %s\n", a.output);
        rc = out_stdout_check(&e); /* the summary is an output too */
    }
    psi_close(&ps);
    report_adv_free(&adv);
    free(r.fpr);
    free(r.tpr);
    free(j.p);
    free(j.y);
    free(j.grade);
    free(j.flag);
    free(j.pts);
    oc_close(l);
    cfg_free(cf);
    if (rc) {
        fprintf(stderr, "error: %s\n", e.msg);
        return rc == ERR_CONFIG ? EXIT_USAGE : EXIT_RUNTIME;
    }
    return failed ? EXIT_GATE : EXIT_OK;
}
