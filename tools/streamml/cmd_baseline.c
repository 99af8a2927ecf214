/* streamml baseline: reference predictions of the clickstream or images
 * worker (JSON lines) -> monitoring baseline JSON.
 *
 * Those workers have no feature table to profile: their monitor watches a
 * few values of each prediction (common/predmon.h: unknown-item and
 * cold-start rates, the share of each source, the top score; the grade and
 * P(referable)). The baseline holds their distributions over a reference
 * run, computed by the same code the worker's monitor uses
 * (pmon_*_vector, mon_dist_compute).
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cmds.h"
#include "predmon.h"

struct bl_args {
    const char *kind, *input, *output, *model;
};

static void baseline_usage(FILE *out)
{
    fprintf(out,
            "usage: streamml baseline --kind clickstream|images --input PREDICTIONS.jsonl\n"
            "                         --output BASELINE.json [--model NAME]\n\n"
            "Writes the monitoring baseline of the clickstream or images worker from its\n"
            "predictions on a reference stream, as `streamml consume -f` prints them (run the\n"
            "worker on a reference topic with its own group, then consume its output topic).\n"
            "clickstream: known_item and warm_session (their missing rates are the unknown-item\n"
            "and cold-start rates), share_gru/covisit/popular/explore, and the top item's score;\n"
            "images: grade and expected_grade (missing when ungradable), and P(grade >= 2).\n"
            "Point the worker's monitor.baseline at the file.\n\n"
            "  -k, --kind KIND    clickstream or images (required)\n"
            "  -i, --input FILE   predictions, one JSON object per line (required; - = stdin)\n"
            "  -o, --output FILE  baseline JSON to write (required)\n"
            "      --model NAME   model named in the baseline (default: the kind)\n\n"
            "Exit codes: 0 ok; 1 a read or write error; 2 usage, or a line that is not such\n"
            "a prediction (named by line number).\n");
}

static int baseline_args(int argc, char **argv, struct bl_args *a)
{
    static const struct option lo[] = {
        {"kind", required_argument, NULL, 'k'},   {"input", required_argument, NULL, 'i'},
        {"output", required_argument, NULL, 'o'}, {"model", required_argument, NULL, 1000},
        {"help", no_argument, NULL, 'h'},         {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0}};
    int opt;

    while ((opt = getopt_long(argc, argv, "k:i:o:hV", lo, NULL)) != -1) {
        switch (opt) {
        case 'k': a->kind = optarg; break;
        case 'i': a->input = optarg; break;
        case 'o': a->output = optarg; break;
        case 1000: a->model = optarg; break;
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
    if (pmon_kind_parse(a->kind) < 0) {
        fprintf(stderr, "error: --kind %s: expected clickstream or images\n", a->kind);
        return EXIT_USAGE;
    }
    return EXIT_OK;
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
    k = (enum pmon_kind)pmon_kind_parse(a.kind);
    in = strcmp(a.input, "-") == 0 ? stdin : fopen(a.input, "r");
    if (!in) {
        fprintf(stderr, "error: %s: cannot open\n", a.input);
        return EXIT_RUNTIME;
    }
    b = pmon_baseline_read(k, in, a.input, a.model ? a.model : a.kind, &rows, &e);
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
