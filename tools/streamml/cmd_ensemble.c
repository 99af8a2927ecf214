/* streamml ensemble: image files graded by a model set (common/models/ensemble.h),
 * one line each with the ensemble's probabilities, grade and agreement and
 * each member's own grade: a way to see what a set does before a worker
 * serves it. */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "cmds.h"
#include "ensemble.h"
#include "image.h"

static void ensemble_usage(FILE *out)
{
    fprintf(out,
            "usage: streamml ensemble --models A.onnx[:W],B.onnx[:W],... IMAGE...\n\n"
            "Grades each IMAGE (a path) with a model set: every member with its own input size\n"
            "and normalisation (ONNX shape and metadata), its softmax, then the mean weighted\n"
            "by W (default 1, normalised). One line per image: the probabilities, the grade\n"
            "(argmax), the agreement (weight of the members whose own grade is that grade) and\n"
            "each member's grade. Members must have one float input [N, 3, H, W] and logits\n"
            "[N, 5] first; every member is smoke-run on zeros before any image.\n\n"
            "  -m, --models SPEC   the set, comma-separated, optional :WEIGHT (at most %d)\n\n"
            "Exit codes: 0 ok; 1 an image that does not load; 2 usage or a bad set (the\n"
            "entry or member named).\n",
            ENS_MAX_MEMBERS);
}

int cmd_ensemble(int argc, char **argv)
{
    static const struct option lo[] = {{"models", required_argument, NULL, 'm'},
                                       {"help", no_argument, NULL, 'h'},
                                       {"version", no_argument, NULL, 'V'},
                                       {NULL, 0, NULL, 0}};
    struct ens_opts o = {.batch = 1};
    struct img_opts io = {.root = "/"};
    struct img_loader *l = NULL;
    struct ens *s = NULL;
    struct err e = {0};
    struct img im;
    int opt, rc = EXIT_OK;

    while ((opt = getopt_long(argc, argv, "m:hV", lo, NULL)) != -1) {
        switch (opt) {
        case 'm': o.models = optarg; break;
        case 'h': ensemble_usage(stdout); return EXIT_OK;
        case 'V': cli_version(stdout); return EXIT_OK;
        default: ensemble_usage(stderr); return EXIT_USAGE;
        }
    }
    if (!o.models || optind == argc) {
        fprintf(stderr, "error: --models and at least one IMAGE are required "
                        "(see streamml ensemble --help)\n");
        return EXIT_USAGE;
    }
    if (ens_open(&s, &o, &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        return e.code == ERR_NOMEM ? EXIT_RUNTIME : EXIT_USAGE;
    }
    if (img_loader_open(&l, &io, &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        ens_close(s);
        return EXIT_RUNTIME;
    }
    img_init(&im);
    for (int i = optind; i < argc; i++) {
        char abs[PATH_MAX];
        double mp[ENS_MAX_MEMBERS * ENS_GRADES];
        const struct img *ims[1] = {&im};
        struct ens_result r;
        enum img_reason why;

        err_clear(&e);
        if (!realpath(argv[i], abs) || img_load(l, abs, &im, &why, &e) ||
            ens_run(s, ims, 1, &r, mp, &e)) {
            printf("%s: ungradable %s\n", argv[i], e.msg[0] ? e.msg : "missing");
            rc = EXIT_RUNTIME;
            continue;
        }
        printf("%s: grade %d agreement %.2f p=[%.3f %.3f %.3f %.3f %.3f] members", argv[i],
               r.grade, r.agreement, r.probs[0], r.probs[1], r.probs[2], r.probs[3],
               r.probs[4]);
        for (size_t m = 0; m < ens_size(s); m++) {
            const double *p = mp + m * ENS_GRADES;
            int g = 0;
            for (int k = 1; k < ENS_GRADES; k++)
                g = p[k] > p[g] ? k : g;
            printf(" %d", g);
        }
        printf("\n");
    }
    img_free(&im);
    img_loader_close(l);
    ens_close(s);
    return rc;
}
