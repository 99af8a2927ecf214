/* streamml features: feature specs (common/streams/fspec.h).
 *
 *   streamml features check SPEC [--model FILE] [--quiet] [-c FILE] [-X k=v]
 *
 * Compiles the spec exactly as the worker, featurize and replay do, and
 * prints what they would run: the plan, the state layout and its bytes per
 * entity, the output names. With --model, matches the model's feature names
 * to the spec's outputs as the worker does at load.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <getopt.h>

#include "cli.h"
#include "cmds.h"
#include "fspec.h"
#include "gbdt.h"
#include "registry.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: streamml features check SPEC [--model FILE] [--quiet] [-c FILE] [-X k=v]\n\n"
            "Checks a feature spec (YAML, see common/streams/FEATURES.md) and prints its compiled\n"
            "plan: the input fields it reads, one line per operation, the per-entity\n"
            "state layout with its bytes (in memory and at most encoded) and the ordered\n"
            "output names. The worker takes a spec with -X features.spec=SPEC (or the\n"
            "config key features.spec); `streamml featurize --spec SPEC` and replay read\n"
            "the same file.\n\n"
            "  --model FILE   an XGBoost JSON model: its feature names must be the spec's\n"
            "                 outputs (missing and extra names are listed)\n"
            "  --quiet        print only the summary line\n"
            "  -c FILE, -X schema.registry.url=URL\n"
            "                 the Schema Registry of a spec whose input names a subject\n"
            "                 (input.subject, input.version): its schema is read from\n"
            "                 there and the schema id printed\n\n"
            "An error names the file, the line and the field, e.g.\n"
            "  models/x.yaml:12: unknown field or feature \"incme\" in debt_to_income\n\n"
            "Exit codes: 0 valid; 1 the model does not match; 2 usage or an invalid spec.\n");
}

/* Model names against the spec's outputs: every one missing or extra. */
static int check_model(const struct fspec *p, const char *path)
{
    struct err e = {0};
    struct gbdt *g = gbdt_open(path, &e);
    size_t n, missing = 0, extra = 0;

    if (!g) {
        fprintf(stderr, "streamml features: %s\n", e.msg);
        return EXIT_USAGE;
    }
    n = gbdt_num_features(g);
    for (size_t i = 0; i < n; i++) {
        const char *nm = gbdt_feature_name(g, i);
        if (!nm && n != fspec_dim(p)) {
            fprintf(stderr, "streamml features: %s has %zu unnamed features, %s has %zu\n", path,
                    n, fspec_name(p), fspec_dim(p));
            gbdt_close(g);
            return EXIT_RUNTIME;
        }
        if (nm && fspec_index(p, nm) < 0) {
            fprintf(stderr, "%s \"%s\"", extra++ ? "," : "extra (in the model, not the spec):",
                    nm);
        }
    }
    if (extra)
        fprintf(stderr, "\n");
    for (size_t k = 0; k < fspec_dim(p); k++) {
        int found = 0;
        for (size_t i = 0; i < n && !found; i++)
            found = gbdt_feature_name(g, i) && strcmp(gbdt_feature_name(g, i), fspec_names(p)[k]) == 0;
        if (!found && gbdt_feature_name(g, 0))
            fprintf(stderr, "%s \"%s\"", missing++ ? "," : "missing (in the spec, not the model):",
                    fspec_names(p)[k]);
    }
    if (missing)
        fprintf(stderr, "\n");
    printf("model %s: %zu features, %s\n", path, n,
           extra ? "does not match the spec" : missing ? "uses a subset of the spec's outputs"
                                                       : "matches the spec's outputs");
    gbdt_close(g);
    return extra ? EXIT_RUNTIME : EXIT_OK;
}

static int parse_args(int argc, char **argv, struct cli *cl, const char **spec,
                      const char **model, int *quiet)
{
    static const struct option lo[] = {{"model", required_argument, NULL, 'm'},
                                       {"quiet", no_argument, NULL, 'q'}, CLI_LONGOPTS,
                                       {NULL, 0, NULL, 0}};
    int opt, r;

    if (argc < 2 || strcmp(argv[1], "check") != 0) {
        if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
            usage(stdout);
            return EXIT_OK;
        }
        usage(stderr);
        return EXIT_USAGE;
    }
    optind = 2;
    while ((opt = getopt_long(argc, argv, CLI_SHORTOPTS "m:q", lo, NULL)) != -1) {
        if ((r = cli_opt(cl, opt, optarg)) != 0) {
            if (r < 0)
                return EXIT_USAGE;
            continue;
        }
        if (opt == 'm') {
            *model = optarg;
        } else if (opt == 'q') {
            *quiet = 1;
        } else if (opt == 'h') {
            usage(stdout);
            return EXIT_OK;
        } else if (opt == 'V') {
            cli_version(stdout);
            return EXIT_OK;
        } else {
            cli_usage_error("streamml features", lo, argv);
            return EXIT_USAGE;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return EXIT_USAGE;
    }
    *spec = argv[optind];
    return -1;
}

int cmd_features(int argc, char **argv)
{
    const char *spec = NULL, *model = NULL;
    int quiet = 0, rc;
    struct cli cl = {0};
    struct err e = {0};
    struct fspec *p = NULL;
    struct cfg *cf;
    struct reg *r = NULL;

    if ((rc = parse_args(argc, argv, &cl, &spec, &model, &quiet)) >= 0)
        return rc;
    /* The configuration only for a spec naming a registry subject. */
    if (!(cf = cli_load(&cl, "features")))
        return EXIT_USAGE;
    r = reg_open_cfg(cf, &e);
    if (!e.code)
        p = fspec_open_reg(spec, r, &e);
    if (!p) {
        fprintf(stderr, "%s\n", e.msg);
        reg_close(r);
        cfg_free(cf);
        return EXIT_USAGE;
    }
    if (quiet)
        printf("%s: valid, %s, %zu features, %zu state bytes per entity (at most %zu encoded)%s%s\n",
               spec, fspec_name(p), fspec_dim(p), 8 + fspec_state_words(p) * 8,
               fspec_state_max_bytes(p), fspec_schema_id(p) ? ", input schema " : "",
               fspec_schema_id(p) ? fspec_schema_source(p) : "");
    else
        fspec_print(p, stdout);
    rc = model ? check_model(p, model) : EXIT_OK;
    fspec_close(p);
    reg_close(r);
    cfg_free(cf);
    return rc;
}
