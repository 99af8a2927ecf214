/* streamml baseline: reference predictions of the clickstream or images
 * worker (JSON lines) -> monitoring baseline JSON.
 *
 * Those workers have no feature table to profile: their monitor watches a
 * few values of each prediction (common/monitor/predmon.h: unknown-item and
 * cold-start rates, the share of each source, the top score; the grade and
 * P(referable)). The baseline holds their distributions over a reference
 * run, computed by the same code the worker's monitor uses
 * (pmon_*_vector, mon_dist_compute).
 */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmds.h"
#include "features.h"
#include "monitor.h"
#include "predmon.h"

#define TXN_ROWS_MAX 5000000

struct bl_args {
    const char *kind, *input, *output, *model, *spec;
};

static void baseline_usage(FILE *out)
{
    fprintf(out,
            "usage: streamml baseline --kind clickstream|images|transactions\n"
            "                         --input PREDICTIONS.jsonl --output BASELINE.json\n"
            "                         [--model NAME] [--spec SPEC]\n\n"
            "Writes the monitoring baseline of the clickstream or images worker from its\n"
            "predictions on a reference stream, as `streamml consume -f` prints them (run the\n"
            "worker on a reference topic with its own group, then consume its output topic).\n"
            "clickstream: known_item and warm_session (their missing rates are the unknown-item\n"
            "and cold-start rates), share_gru/covisit/popular/explore, and the top item's score;\n"
            "images: grade and expected_grade (missing when ungradable), and P(grade >= 2);\n"
            "transactions: every feature of the spec (the predictions' \"features\" arrays,\n"
            "as `streamml replay --features` writes them) and the probability, the\n"
            "baseline `streamml profile` writes from a training CSV.\n"
            "Point the worker's monitor.baseline at the file.\n\n"
            "  -k, --kind KIND    clickstream, images or transactions (required)\n"
            "  -i, --input FILE   predictions, one JSON object per line (required; - = stdin)\n"
            "  -o, --output FILE  baseline JSON to write (required)\n"
            "      --model NAME   model named in the baseline (default: the kind)\n"
            "      --spec SPEC    transactions: the feature spec of the predictions (its\n"
            "                     names and version; default the built-in txn-v1)\n\n"
            "Exit codes: 0 ok; 1 a read or write error; 2 usage, or a line that is not such\n"
            "a prediction (named by line number).\n");
}

static int baseline_args(int argc, char **argv, struct bl_args *a)
{
    static const struct option lo[] = {
        {"kind", required_argument, NULL, 'k'},   {"input", required_argument, NULL, 'i'},
        {"output", required_argument, NULL, 'o'}, {"model", required_argument, NULL, 1000},
        {"spec", required_argument, NULL, 1001},
        {"help", no_argument, NULL, 'h'},         {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0}};
    int opt;

    while ((opt = getopt_long(argc, argv, "k:i:o:hV", lo, NULL)) != -1) {
        switch (opt) {
        case 'k': a->kind = optarg; break;
        case 'i': a->input = optarg; break;
        case 'o': a->output = optarg; break;
        case 1000: a->model = optarg; break;
        case 1001: a->spec = optarg; break;
        case 'h': baseline_usage(stdout); return -1;
        case 'V': cli_version(stdout); return -1;
        default: cli_usage_error("streamml baseline", lo, argv); return EXIT_USAGE;
        }
    }
    if (optind < argc || !a->kind || !a->input || !a->output) {
        fprintf(stderr, "error: %s (see streamml baseline --help)\n",
                optind < argc ? "unexpected argument"
                              : "--kind, --input and --output are required");
        return EXIT_USAGE;
    }
    if (pmon_kind_parse(a->kind) < 0 && strcmp(a->kind, "transactions") != 0) {
        fprintf(stderr, "error: --kind %s: expected clickstream, images or transactions\n",
                a->kind);
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

/* One prediction line: its features (x[dim]; null = missing) and score. */
static int txn_line(const char *line, size_t dim, double *x, double *score, struct err *e)
{
    json_error_t je;
    json_t *o = json_loads(line, 0, &je), *xs = json_object_get(o, "features");
    json_t *p = json_object_get(o, "probability");
    int rc = ERR_OK;

    if (!o)
        rc = err_set(e, ERR_CONFIG, "not JSON: %s", je.text);
    else if (!json_is_array(xs) || json_array_size(xs) != dim)
        rc = err_set(e, ERR_CONFIG, "no \"features\" array of %zu (replay --features)", dim);
    else if (!json_is_number(p))
        rc = err_set(e, ERR_CONFIG, "no \"probability\"");
    for (size_t k = 0; rc == ERR_OK && k < dim; k++) {
        json_t *v = json_array_get(xs, k);
        x[k] = json_is_number(v) ? json_number_value(v) : NAN;
    }
    if (rc == ERR_OK)
        *score = json_number_value(p);
    json_decref(o);
    return rc;
}

/* Columns: dim features then the score, rows appended (column-major). */
static int txn_columns(FILE *in, const char *path, size_t dim, double **cols, size_t *rows,
                       struct err *e)
{
    char *line = NULL;
    size_t cap = 0, n = 0, room = 0, no = 0;
    double *x = calloc(dim + 1, sizeof(double));
    int rc = x ? ERR_OK : err_set(e, ERR_NOMEM, "out of memory");

    while (rc == ERR_OK && getline(&line, &cap, in) > 0) {
        no++;
        if (strspn(line, " \t\r\n") == strlen(line))
            continue;
        if (txn_line(line, dim, x, &x[dim], e)) {
            rc = err_wrap(e, "%s: line %zu", path, no);
            break;
        }
        if (n == room) {
            room = room ? room * 2 : 1024;
            for (size_t k = 0; rc == ERR_OK && k <= dim; k++) {
                double *c = n < TXN_ROWS_MAX ? realloc(cols[k], room * sizeof(double)) : NULL;
                if (!c)
                    rc = err_set(e, ERR_NOMEM, "%s: out of memory at line %zu", path, no);
                else
                    cols[k] = c;
            }
        }
        for (size_t k = 0; rc == ERR_OK && k <= dim; k++)
            cols[k][n] = x[k];
        n += rc == ERR_OK;
    }
    free(line);
    free(x);
    *rows = n;
    if (rc == ERR_OK && n == 0)
        rc = err_set(e, ERR_CONFIG, "%s: no predictions", path);
    return rc;
}

/* The transactions baseline from reference predictions: the spec's
 * features and the probability, as profile computes them (mon_dist). */
static struct mon_baseline *txn_baseline(const struct bl_args *a, FILE *in, size_t *rows,
                                         struct err *e)
{
    size_t dim;
    double **cols;
    struct mon_baseline *b = NULL;
    struct mon_dist d;
    int rc;

    if (feat_txn_use(a->spec, e))
        return err_wrap(e, "--spec"), NULL;
    dim = feat_txn_dim();
    if (!(cols = calloc(dim + 1, sizeof(*cols)))) {
        err_set(e, ERR_NOMEM, "out of memory");
        return NULL;
    }
    rc = txn_columns(in, a->input, dim, cols, rows, e);
    if (rc == ERR_OK && !(b = mon_baseline_new(feat_txn_version(), a->model ? a->model : "")))
        rc = err_set(e, ERR_NOMEM, "out of memory");
    for (size_t k = 0; rc == ERR_OK && k < dim; k++)
        if (mon_dist_compute(cols[k], *rows, &d, e) ||
            mon_baseline_add(b, feat_txn_names()[k], &d, e))
            rc = err_wrap(e, "feature %s", feat_txn_names()[k]);
    if (rc == ERR_OK && !(rc = mon_dist_compute(cols[dim], *rows, &d, e))) {
        mon_baseline_set_score(b, &d);
        mon_baseline_set_auc(b, NAN, *rows);
    }
    for (size_t k = 0; k <= dim; k++)
        free(cols[k]);
    free(cols);
    if (rc) {
        mon_baseline_free(b);
        return NULL;
    }
    return b;
}

int cmd_baseline(int argc, char **argv)
{
    struct bl_args a = {0};
    struct err e = {0};
    struct mon_baseline *b;
    enum pmon_kind k;
    size_t rows;
    FILE *in;
    int rc = baseline_args(argc, argv, &a);

    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    in = strcmp(a.input, "-") == 0 ? stdin : fopen(a.input, "r");
    if (!in) {
        fprintf(stderr, "error: %s: cannot open\n", a.input);
        return EXIT_RUNTIME;
    }
    if (strcmp(a.kind, "transactions") == 0) {
        b = txn_baseline(&a, in, &rows, &e);
    } else {
        k = (enum pmon_kind)pmon_kind_parse(a.kind);
        b = pmon_baseline_read(k, in, a.input, a.model ? a.model : a.kind, &rows, &e);
    }
    if (in != stdin)
        fclose(in);
    if (!b) {
        fprintf(stderr, "error: %s\n", e.msg);
        return e.code == ERR_NOMEM ? EXIT_RUNTIME : EXIT_USAGE;
    }
    rc = mon_baseline_save(b, a.output, &e);
    mon_baseline_free(b);
    if (rc) {
        fprintf(stderr, "error: %s\n", e.msg);
        return rc == ERR_CONFIG ? EXIT_USAGE : EXIT_RUNTIME;
    }
    printf("baseline of %zu %s prediction(s) written to %s\n", rows, a.kind, a.output);
    return EXIT_OK;
}
