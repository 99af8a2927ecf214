/* streamml features: feature specs (common/streams/fspec.h).
 *
 *   streamml features check SPEC [--model FILE]
 *
 * Compiles the spec exactly as the worker, featurize and replay do, and
 * prints what they would run: the plan, the state layout and its bytes per
 * entity, the output names. With --model, matches the model's feature names
 * to the spec's outputs as the worker does at load.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds.h"
#include "fspec.h"
#include "gbdt.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: streamml features check SPEC [--model FILE] [--quiet]\n\n"
            "Checks a feature spec (YAML, see common/streams/FEATURES.md) and prints its compiled\n"
            "plan: the input fields it reads, one line per operation, the per-entity\n"
            "state layout with its bytes (in memory and at most encoded) and the ordered\n"
            "output names. The worker takes a spec with -X features.spec=SPEC (or the\n"
            "config key features.spec); `streamml featurize --spec SPEC` and replay read\n"
            "the same file.\n\n"
            "  --model FILE   an XGBoost JSON model: its feature names must be the spec's\n"
            "                 outputs (missing and extra names are listed)\n"
            "  --quiet        print only the summary line\n\n"
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

int cmd_features(int argc, char **argv)
{
    const char *spec = NULL, *model = NULL;
    int quiet = 0, rc = EXIT_OK;
    struct err e = {0};
    struct fspec *p;

    if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        usage(stdout);
        return EXIT_OK;
    }
    if (argc < 3 || strcmp(argv[1], "check") != 0) {
        usage(stderr);
        return EXIT_USAGE;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--model") == 0 && i + 1 < argc)
            model = argv[++i];
        else if (strcmp(argv[i], "--quiet") == 0)
            quiet = 1;
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return EXIT_OK;
        } else if (argv[i][0] != '-' && !spec)
            spec = argv[i];
        else {
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (!spec) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!(p = fspec_open(spec, &e))) {
        fprintf(stderr, "%s\n", e.msg);
        return EXIT_USAGE;
    }
    if (quiet)
        printf("%s: valid, %s, %zu features, %zu state bytes per entity (at most %zu encoded)\n",
               spec, fspec_name(p), fspec_dim(p), 8 + fspec_state_words(p) * 8,
               fspec_state_max_bytes(p));
    else
        fspec_print(p, stdout);
    if (model)
        rc = check_model(p, model);
    fspec_close(p);
    return rc;
}
