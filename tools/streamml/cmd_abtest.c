/* streamml abtest: an experiment's predictions joined with outcomes by
 * event id -> per variant: predictions, outcomes, mean outcome, lift and
 * Welch's t-test (p-value, confidence interval of the difference) against
 * the control variant, and the AUC of the variant's probabilities.
 *
 * Predictions are JSON lines as `streamml consume -t predictions.transactions`
 * prints them (event_id, probability, experiment_id, variant); outcomes
 * are CSV (event_id and an outcome or label column) or JSON lines, or the
 * label field of the transaction events on a topic. The statistics are
 * common/streams/abtest.c's (checked against scipy in tests/test_abtest.c).
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "abtest.h"
#include "abtest_click.h"
#include "backtest.h"
#include "cli.h"
#include "cmds.h"
#include "codec.h"
#include "kafka.h"
#include "outcomes.h"
#include "pipeline.h"
#include "registry.h"
#include "topic_json.h"

#define LINE_MAX_BYTES (1024 * 1024)
#define MIN_OUTCOMES 30

struct ab_args {
    struct cli cli;
    const char *preds, *preds_topic, *outcomes, *labels_topic, *experiment, *control;
    const char *orecs, *orecs_topic; /* clickstream outcome records */
    double conf;
    int json;
};

/* One variant's joined rows. */
struct group {
    char name[AB_NAME_MAX];
    size_t preds, n, cap;
    double *y, *p;
};

struct groups {
    struct group g[AB_MAX_VARIANTS];
    size_t n;
    long dup, other, unjoined;
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: streamml abtest (-p PREDICTIONS | --predictions-topic T)\n"
            "                       (-l OUTCOMES | --labels-topic T)\n"
            "                       [--experiment ID] [--control NAME] [--confidence C]\n"
            "                       [--json] [common options]\n"
            "       streamml abtest (--outcome-records F | --outcomes-topic T) [--experiment ID]\n"
            "                       [--control NAME] [--confidence C] [--json]\n\n"
            "Per variant of a champion/challenger experiment: predictions, outcomes,\n"
            "mean outcome, lift over the control, Welch's t-test p-value and the\n"
            "confidence interval of the difference of means, AUC of the variant's\n"
            "probabilities against the outcomes (0/1 outcomes only). A variant (or a\n"
            "control) with fewer than %d outcomes is INSUFFICIENT_DATA: no test.\n\n"
            "  -p, --predictions F  JSON lines of predictions (streamml consume output)\n"
            "      --predictions-topic T  the prediction records on T (whole topic,\n"
            "                       assign() only, never commits)\n"
            "  -l, --outcomes F     CSV with event_id and outcome (or label) columns, or\n"
            "                       JSON lines {\"event_id\":..,\"outcome\":..}\n"
            "      --labels-topic T the label field of the transaction events on T\n"
            "      --experiment ID  only this experiment's predictions (default: the\n"
            "                       first experiment_id seen)\n"
            "      --control NAME   control variant (default: the first variant seen)\n"
            "      --confidence C   level of the interval (default 0.95)\n"
            "      --json           one JSON object instead of the table\n"
            "      --outcome-records F  the clickstream's outcome records (JSON lines as\n"
            "                       streamml consume -t clickstream.outcomes -f prints\n"
            "                       them): per arm users, impressions, CTR, add-to-cart\n"
            "                       rate, conversion (purchases per impression) and\n"
            "                       revenue per user, with delta-method intervals over\n"
            "                       users; a duplicate outcome_id counts once\n"
            "      --outcomes-topic T  the same from the records on T (assign(), no commit)\n"
            "  -c, --config FILE, -X key=value, -b, --bootstrap HOSTS, --log-level L\n\n"
            "Exit codes: 0 ok, 1 unreadable input, 2 usage.\n",
            MIN_OUTCOMES);
}

static int parse_args(int argc, char **argv, struct ab_args *a)
{
    static const struct option lo[] = {{"predictions", required_argument, NULL, 'p'},
                                       {"outcomes", required_argument, NULL, 'l'},
                                       {"labels-topic", required_argument, NULL, 1001},
                                       {"experiment", required_argument, NULL, 1002},
                                       {"control", required_argument, NULL, 1003},
                                       {"confidence", required_argument, NULL, 1004},
                                       {"json", no_argument, NULL, 1005},
                                       {"predictions-topic", required_argument, NULL, 1006},
                                       {"outcome-records", required_argument, NULL, 1007},
                                       {"outcomes-topic", required_argument, NULL, 1008},
                                       CLI_LONGOPTS,
                                       {NULL, 0, NULL, 0}};
    int opt, r;
    char *end;

    a->conf = 0.95;
    while ((opt = getopt_long(argc, argv, CLI_SHORTOPTS "p:l:", lo, NULL)) != -1) {
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
            a->outcomes = optarg;
            break;
        case 1001:
            a->labels_topic = optarg;
            break;
        case 1002:
            a->experiment = optarg;
            break;
        case 1003:
            a->control = optarg;
            break;
        case 1005:
            a->json = 1;
            break;
        case 1006:
            a->preds_topic = optarg;
            break;
        case 1007:
            a->orecs = optarg;
            break;
        case 1008:
            a->orecs_topic = optarg;
            break;
        case 1004:
            errno = 0;
            a->conf = strtod(optarg, &end);
            if (*end || errno || !(a->conf > 0 && a->conf < 1)) {
                fprintf(stderr, "error: --confidence %s: expected a number in (0, 1)\n", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'h':
            usage(stdout);
            return -1;
        case 'V':
            cli_version(stdout);
            return -1;
        default:
            cli_usage_error("streamml abtest", lo, argv);
            return EXIT_USAGE;
        }
    }
    if (a->orecs || a->orecs_topic) {
        if (!a->orecs == !a->orecs_topic || a->preds || a->preds_topic || a->outcomes ||
            a->labels_topic) {
            fprintf(stderr, "error: --outcome-records or --outcomes-topic, alone\n");
            return EXIT_USAGE;
        }
        return EXIT_OK;
    }
    if (!a->preds == !a->preds_topic || !a->outcomes == !a->labels_topic) {
        fprintf(stderr, "error: needs one of -p or --predictions-topic and one of -l or "
                        "--labels-topic\n");
        fprintf(stderr, "see streamml abtest --help\n");
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

/* ---- predictions ---- */

static int group_push(struct group *g, double y, double p)
{
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 1024;
        double *ny = realloc(g->y, cap * sizeof(*ny));
        double *np = ny ? realloc(g->p, cap * sizeof(*np)) : NULL;
        if (ny)
            g->y = ny;
        if (!np)
            return ERR_NOMEM;
        g->p = np;
        g->cap = cap;
    }
    g->y[g->n] = y;
    g->p[g->n++] = p;
    return ERR_OK;
}

static struct group *group_of(struct groups *gs, const char *name, const char *where, struct err *e)
{
    for (size_t i = 0; i < gs->n; i++)
        if (strcmp(gs->g[i].name, name) == 0)
            return &gs->g[i];
    if (gs->n == AB_MAX_VARIANTS || strlen(name) >= AB_NAME_MAX) {
        err_set(e, ERR_DECODE, "%s: variant \"%.40s\": more than %d variants or name too long",
                where, name, AB_MAX_VARIANTS);
        return NULL;
    }
    snprintf(gs->g[gs->n].name, AB_NAME_MAX, "%s", name);
    return &gs->g[gs->n++];
}

/* *experiment: the filter, set from the first prediction when NULL. */
static int pred_line(struct oc_table *o, struct groups *gs, json_t *j, char *experiment,
                     const char *where, struct err *e)
{
    json_t *id = json_object_get(j, "event_id"), *pr = json_object_get(j, "probability");
    json_t *ex = json_object_get(j, "experiment_id"), *va = json_object_get(j, "variant");
    double p = json_number_value(pr);
    struct group *g;
    long k;

    if (!json_is_string(id) || !json_is_string(ex) || !json_is_string(va) || !json_is_number(pr) ||
        !(p >= 0 && p <= 1))
        return err_set(e, ERR_DECODE,
                       "%s: needs event_id, experiment_id, variant (strings) "
                       "and probability (a number in [0, 1])",
                       where);
    if (!*experiment)
        snprintf(experiment, AB_ID_MAX, "%s", json_string_value(ex));
    if (strcmp(experiment, json_string_value(ex)) != 0) {
        gs->other++;
        return ERR_OK;
    }
    if (!(g = group_of(gs, json_string_value(va), where, e)))
        return e->code;
    k = oc_find(o, json_string_value(id));
    if (k >= 0 && oc_join(o, k)) {
        gs->dup++; /* a redelivered duplicate: the first one counts */
        return ERR_OK;
    }
    g->preds++;
    if (k < 0) {
        gs->unjoined++;
        return ERR_OK;
    }
    return group_push(g, oc_value(o, k), p) ? err_set(e, ERR_NOMEM, "out of memory") : ERR_OK;
}

static int read_predictions(struct oc_table *o, struct groups *gs, const char *path,
                            char *experiment, struct err *e)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    char *line = NULL, where[300];
    size_t cap = 0;
    ssize_t len;
    long no = 0;
    int rc = ERR_OK;

    if (!f)
        return err_set(e, ERR_CONFIG, "%s: %s", path, strerror(errno));
    while (rc == ERR_OK && (len = getline(&line, &cap, f)) >= 0) {
        json_error_t je;
        json_t *j;
        snprintf(where, sizeof(where), "%s: line %ld", path, ++no);
        if (len > LINE_MAX_BYTES) {
            rc = err_set(e, ERR_DECODE, "%s longer than %d bytes", where, LINE_MAX_BYTES);
            break;
        }
        if (len <= 1)
            continue;
        if (!(j = json_loadb(line, (size_t)len, 0, &je))) {
            rc = err_set(e, ERR_DECODE, "%s: %s", where, je.text);
            break;
        }
        rc = pred_line(o, gs, j, experiment, where, e);
        json_decref(j);
    }
    free(line);
    if (f != stdin)
        fclose(f);
    return rc;
}

struct pred_ctx {
    struct oc_table *o;
    struct groups *gs;
    char *experiment;
};

static int pred_record(void *opaque, json_t *j, const char *where, struct err *e)
{
    struct pred_ctx *c = opaque;

    return pred_line(c->o, c->gs, j, c->experiment, where, e);
}

/* Every prediction of topic (topic_json.h). */
static int read_prediction_topic(struct oc_table *o, struct groups *gs, const char *topic,
                                 const struct cfg *cf, char *experiment, struct err *e)
{
    struct pred_ctx c = {o, gs, experiment};

    return tj_read_topic(topic, cf, "streamml-abtest", pred_record, &c, e);
}

/* ---- results ---- */

struct row {
    const struct group *g;
    double mean, auc, lift;
    const char *status;
    struct ab_welch w;
};

static double mean_of(const double *y, size_t n)
{
    double s = 0;

    for (size_t i = 0; i < n; i++)
        s += y[i];
    return n ? s / (double)n : NAN;
}

/* AUC of the probabilities against 0/1 outcomes; NaN for other outcomes. */
static double auc_of(const struct group *g)
{
    int *lab = malloc((g->n + 1) * sizeof(*lab));
    double a = NAN;

    if (!lab)
        return NAN;
    for (size_t i = 0; i < g->n; i++) {
        if (g->y[i] != 0 && g->y[i] != 1)
            goto out;
        lab[i] = (int)g->y[i];
    }
    a = bt_auc(g->p, lab, g->n);
out:
    free(lab);
    return a;
}

static void compute(const struct group *ctl, const struct group *g, double conf, struct row *r)
{
    struct err e = {0};

    r->g = g;
    r->mean = mean_of(g->y, g->n);
    r->auc = auc_of(g);
    r->lift = (r->mean - mean_of(ctl->y, ctl->n)) / mean_of(ctl->y, ctl->n);
    if (g == ctl)
        r->status = "CONTROL";
    else if (g->n < MIN_OUTCOMES || ctl->n < MIN_OUTCOMES)
        r->status = "INSUFFICIENT_DATA";
    else if (ab_welch_test(ctl->y, ctl->n, g->y, g->n, conf, &r->w, &e))
        r->status = "NO_VARIANCE"; /* every outcome equal in both groups */
    else
        r->status = "OK";
}

static json_t *num(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static void print_json(const char *experiment, const char *control, const struct row *r, size_t n,
                       const struct groups *gs)
{
    json_t *o = json_object(), *arr = json_array();

    json_object_set_new(o, "experiment", json_string(experiment));
    json_object_set_new(o, "control", json_string(control));
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_object();
        json_object_set_new(v, "variant", json_string(r[i].g->name));
        json_object_set_new(v, "predictions", json_integer((json_int_t)r[i].g->preds));
        json_object_set_new(v, "outcomes", json_integer((json_int_t)r[i].g->n));
        json_object_set_new(v, "mean", num(r[i].mean));
        json_object_set_new(v, "auc", num(r[i].auc));
        json_object_set_new(v, "status", json_string(r[i].status));
        if (strcmp(r[i].status, "CONTROL") != 0)
            json_object_set_new(v, "lift", num(r[i].lift));
        if (strcmp(r[i].status, "OK") == 0) {
            json_object_set_new(v, "diff", num(r[i].w.diff));
            json_object_set_new(v, "t", num(r[i].w.t));
            json_object_set_new(v, "df", num(r[i].w.df));
            json_object_set_new(v, "p", num(r[i].w.p));
            json_object_set_new(v, "lo", num(r[i].w.lo));
            json_object_set_new(v, "hi", num(r[i].w.hi));
        }
        json_array_append_new(arr, v);
    }
    json_object_set_new(o, "variants", arr);
    json_object_set_new(o, "duplicates", json_integer(gs->dup));
    json_object_set_new(o, "without_outcome", json_integer(gs->unjoined));
    json_object_set_new(o, "other_experiments", json_integer(gs->other));
    json_dumpf(o, stdout, JSON_REAL_PRECISION(17));
    printf("\n");
    json_decref(o);
}

static void print_table(const char *experiment, const char *control, const struct row *r, size_t n,
                        const struct groups *gs, double conf)
{
    printf("experiment %s, control %s (%ld duplicate(s), %ld prediction(s) without outcome, "
           "%ld of other experiments skipped)\n",
           experiment, control, gs->dup, gs->unjoined, gs->other);
    printf("%-16s %9s %9s %9s %9s %9s %10s  %-23s %s\n", "variant", "preds", "outcomes", "mean",
           "lift", "auc", "p", "CI", "status");
    for (size_t i = 0; i < n; i++) {
        const struct row *x = &r[i];
        char ci[64] = "-", p[32] = "-";
        if (strcmp(x->status, "OK") == 0) {
            snprintf(ci, sizeof(ci), "[%+.4f, %+.4f]", x->w.lo, x->w.hi);
            snprintf(p, sizeof(p), "%.4g", x->w.p);
        }
        printf("%-16s %9zu %9zu %9.4f %+8.2f%% %9.4f %10s  %-23s %s\n", x->g->name, x->g->preds,
               x->g->n, x->mean, strcmp(x->status, "CONTROL") == 0 ? 0.0 : 100 * x->lift, x->auc, p,
               ci, x->status);
    }
    printf("CI: %.0f%% interval of mean(variant) - mean(control); p: Welch's t-test, "
           "two-sided\n",
           100 * conf);
}

static int report(const struct ab_args *a, struct groups *gs, const char *experiment)
{
    struct row r[AB_MAX_VARIANTS];
    const struct group *ctl = NULL;

    if (gs->n == 0) {
        fprintf(stderr, "error: %s: no predictions of experiment %s\n",
                a->preds ? a->preds : a->preds_topic, *experiment ? experiment : "(any)");
        return EXIT_RUNTIME;
    }
    for (size_t i = 0; i < gs->n; i++)
        if (!a->control || strcmp(gs->g[i].name, a->control) == 0) {
            ctl = &gs->g[i];
            break;
        }
    if (!ctl) {
        fprintf(stderr, "error: --control %s: no such variant in %s\n", a->control,
                a->preds ? a->preds : a->preds_topic);
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < gs->n; i++)
        compute(ctl, &gs->g[i], a->conf, &r[i]);
    if (a->json)
        print_json(experiment, ctl->name, r, gs->n, gs);
    else
        print_table(experiment, ctl->name, r, gs->n, gs, a->conf);
    return EXIT_OK;
}

int cmd_abtest(int argc, char **argv)
{
    struct ab_args a = {0};
    struct oc_table *o = NULL;
    struct groups gs = {0};
    struct err e = {0};
    struct cfg *cf;
    char experiment[AB_ID_MAX] = "";
    int rc = parse_args(argc, argv, &a);

    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if (!(cf = cli_load(&a.cli, "abtest")))
        return EXIT_USAGE;
    if (a.experiment)
        snprintf(experiment, sizeof(experiment), "%s", a.experiment);
    if (a.orecs || a.orecs_topic) {
        rc = abtest_click(a.orecs, a.orecs_topic, cf, a.experiment, a.control, a.conf, a.json);
        cfg_free(cf);
        return rc;
    }
    if (oc_open(&o, OC_OUTCOME, &e) ||
        (a.outcomes ? oc_read_file(o, a.outcomes, &e) : oc_read_topic(o, a.labels_topic, cf, &e)) ||
        (a.preds ? read_predictions(o, &gs, a.preds, experiment, &e)
                 : read_prediction_topic(o, &gs, a.preds_topic, cf, experiment, &e))) {
        fprintf(stderr, "error: %s\n", e.msg);
        rc = e.code == ERR_CONFIG ? EXIT_USAGE : EXIT_RUNTIME;
    } else {
        rc = report(&a, &gs, experiment);
    }
    for (size_t i = 0; i < gs.n; i++) {
        free(gs.g[i].y);
        free(gs.g[i].p);
    }
    oc_close(o);
    cfg_free(cf);
    return rc;
}
