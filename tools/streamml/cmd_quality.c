/* streamml quality: training images -> image quality limits (and the
 * quality values' monitoring baseline).
 *
 * The limits are what the images step refuses below (common/streams/imgq.h):
 * computed from the values of good training photographs with margins, by
 * the same code the worker measures live images with. --monitor writes the
 * distributions of the values (q_sharpness, q_mean, ...) in the monitoring
 * baseline format, so that they drift-alert like features.
 */
#include <dirent.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"
#include "cmds.h"
#include "image.h"
#include "imgq.h"
#include "monitor.h"

#define MAX_IMAGES 100000

struct q_args {
    const char *images, *output, *monitor, *model, *limits;
    int values;
    char **check; /* --limits: the images to check */
    int ncheck;
};

static void quality_usage(FILE *out)
{
    fprintf(out,
            "usage: streamml quality --images DIR --output LIMITS.json [--monitor BASELINE.json]\n"
            "                        [--model NAME] [--values]\n"
            "       streamml quality --limits LIMITS.json IMAGE...\n\n"
            "Measures every .png/.jpg/.jpeg in DIR (good training photographs, at least 10)\n"
            "with the images worker's quality checks and writes the limits below which it\n"
            "publishes a prediction as ungradable with reason low_quality:<check>:\n"
            "  sharpness    variance of the Laplacian        >= 0.5 x 1st percentile\n"
            "  exposure     mean luma of the field            0.5 x 1st pct .. halfway from\n"
            "               the 99th pct to 255; dark (< 25) and clipped (> 250) fractions\n"
            "               <= their 99th percentile + 0.2 (checks dark and bright)\n"
            "  contrast     standard deviation of luma       >= 0.5 x 1st percentile\n"
            "  field        visible part of the circular field >= 0.85 x 1st percentile\n"
            "With --limits, checks each IMAGE (a path) against the limits instead: one line\n"
            "per image, 'ok' or 'ungradable low_quality:<check>' with the failing value and\n"
            "all the values; exit 1 if any image is refused or does not decode.\n\n"
            "  -d, --images DIR      training images (required)\n"
            "  -o, --output FILE     limits JSON to write (required)\n"
            "  -m, --monitor FILE    also write the values' distributions as a monitoring\n"
            "                        baseline (features q_sharpness, q_mean, q_dark_frac,\n"
            "                        q_bright_frac, q_contrast, q_field)\n"
            "      --model NAME      model named in that baseline (default: images-quality)\n"
            "      --values          print each image's values (one line each)\n"
            "  -l, --limits FILE     check the IMAGE arguments against these limits\n\n"
            "Exit codes: 0 ok; 1 a read or write error; 2 usage, an image that does not\n"
            "decode (named), or too few images.\n");
}

static int quality_args(int argc, char **argv, struct q_args *a)
{
    static const struct option lo[] = {
        {"images", required_argument, NULL, 'd'},  {"output", required_argument, NULL, 'o'},
        {"monitor", required_argument, NULL, 'm'}, {"model", required_argument, NULL, 1000},
        {"values", no_argument, NULL, 1001},       {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},       {"limits", required_argument, NULL, 'l'},
        {NULL, 0, NULL, 0}};
    int opt;

    while ((opt = getopt_long(argc, argv, "d:o:m:l:hV", lo, NULL)) != -1) {
        switch (opt) {
        case 'd': a->images = optarg; break;
        case 'o': a->output = optarg; break;
        case 'm': a->monitor = optarg; break;
        case 1000: a->model = optarg; break;
        case 1001: a->values = 1; break;
        case 'l': a->limits = optarg; break;
        case 'h': quality_usage(stdout); return -1;
        case 'V': cli_version(stdout); return -1;
        default: quality_usage(stderr); return EXIT_USAGE;
        }
    }
    if (a->limits) {
        if (optind == argc || a->images || a->output || a->monitor) {
            fprintf(stderr, "error: --limits takes IMAGE arguments and no --images, --output "
                            "or --monitor (see streamml quality --help)\n");
            return EXIT_USAGE;
        }
        a->check = argv + optind;
        a->ncheck = argc - optind;
        return EXIT_OK;
    }
    if (optind < argc || !a->images || !a->output) {
        fprintf(stderr, "error: %s (see streamml quality --help)\n",
                optind < argc ? "unexpected argument" : "--images and --output are required");
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

static int is_image(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot && (strcasecmp(dot, ".png") == 0 || strcasecmp(dot, ".jpg") == 0 ||
                   strcasecmp(dot, ".jpeg") == 0);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted image names of dir (so --values lists them in a stable order). */
static char **list_images(const char *dir, size_t *n)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char **names = NULL;
    size_t cap = 0;

    *n = 0;
    if (!d)
        return NULL;
    while ((de = readdir(d)) && *n < MAX_IMAGES) {
        if (de->d_name[0] == '.' || !is_image(de->d_name))
            continue;
        if (*n == cap) {
            char **nn = realloc(names, (cap = cap ? 2 * cap : 64) * sizeof(*names));
            if (!nn)
                break;
            names = nn;
        }
        if (!(names[*n] = strdup(de->d_name)))
            break;
        ++*n;
    }
    closedir(d);
    if (names)
        qsort(names, *n, sizeof(*names), cmp_str);
    return names;
}

static int write_monitor(const struct imgq_values *v, size_t n, const struct q_args *a,
                         struct err *e)
{
    const char *const *names = imgq_value_names();
    struct mon_baseline *b = mon_baseline_new("imgq-1", a->model ? a->model : "images-quality");
    double *col = malloc(n * sizeof(*col));
    int rc = ERR_OK;

    if (!b || !col) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int k = 0; k < IMGQ_NVALUES && !rc; k++) {
        struct mon_dist d;

        for (size_t i = 0; i < n; i++) {
            double x[IMGQ_NVALUES];
            imgq_values_array(&v[i], x);
            col[i] = x[k];
        }
        rc = mon_dist_compute(col, n, &d, e);
        if (!rc)
            rc = mon_baseline_add(b, names[k], &d, e);
    }
    if (!rc)
        rc = mon_baseline_save(b, a->monitor, e);
out:
    free(col);
    mon_baseline_free(b);
    return rc;
}

/* --limits: each image judged, one line each. */
static int check_images(const struct q_args *a)
{
    struct img_opts o = {.root = "/"};
    struct img_loader *l = NULL;
    struct imgq *q = NULL;
    struct imgq_limits lim;
    struct img im;
    struct err e = {0};
    int rc = EXIT_OK;

    if (imgq_limits_load(&lim, a->limits, &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        return EXIT_USAGE;
    }
    if (img_loader_open(&l, &o, &e) || imgq_open(&q, &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        img_loader_close(l);
        return EXIT_RUNTIME;
    }
    img_init(&im);
    for (int i = 0; i < a->ncheck; i++) {
        char abs[4096], detail[512];
        struct imgq_values v;
        enum img_reason why;
        enum imgq_check c;

        if (!realpath(a->check[i], abs) || img_load(l, abs, &im, &why, &e) ||
            imgq_measure(q, &im, &v, &e)) {
            printf("%s: ungradable %s\n", a->check[i],
                   e.msg[0] ? e.msg : "missing");
            err_clear(&e);
            rc = EXIT_RUNTIME;
            continue;
        }
        c = imgq_judge(&lim, &v);
        imgq_detail(&lim, &v, c, detail, sizeof(detail));
        if (c == IMGQ_OK) {
            printf("%s: ok (%s)\n", a->check[i], detail);
        } else {
            printf("%s: ungradable low_quality:%s (%s)\n", a->check[i], imgq_check_name(c),
                   detail);
            rc = EXIT_RUNTIME;
        }
    }
    img_free(&im);
    imgq_close(q);
    img_loader_close(l);
    return rc;
}

int cmd_quality(int argc, char **argv)
{
    struct q_args a = {0};
    struct err e = {0};
    struct img_opts o = {0};
    struct img_loader *l = NULL;
    struct imgq *q = NULL;
    struct imgq_values *v = NULL;
    struct imgq_limits lim;
    struct img im;
    char **names;
    size_t n = 0;
    int rc = quality_args(argc, argv, &a);

    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if (a.limits)
        return check_images(&a);
    if (!(names = list_images(a.images, &n)) || n == 0) {
        fprintf(stderr, "error: %s: no readable directory with .png/.jpg images\n", a.images);
        free(names);
        return EXIT_USAGE;
    }
    img_init(&im);
    o.root = a.images;
    rc = EXIT_RUNTIME;
    if (img_loader_open(&l, &o, &e) || imgq_open(&q, &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        goto out;
    }
    if (!(v = calloc(n, sizeof(*v)))) {
        fprintf(stderr, "error: out of memory for %zu images\n", n);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        enum img_reason why;

        if (img_load(l, names[i], &im, &why, &e) || imgq_measure(q, &im, &v[i], &e)) {
            fprintf(stderr, "error: %s/%s: %s\n", a.images, names[i], e.msg);
            rc = e.code == ERR_NOMEM || e.code == ERR_IO ? EXIT_RUNTIME : EXIT_USAGE;
            goto out;
        }
        if (a.values)
            printf("%s sharpness=%.3f mean=%.3f dark_frac=%.4f bright_frac=%.4f "
                   "contrast=%.3f field=%.4f\n",
                   names[i], v[i].sharpness, v[i].mean, v[i].dark_frac, v[i].bright_frac,
                   v[i].contrast, v[i].field);
    }
    if (imgq_limits_from(v, n, &lim, &e)) {
        fprintf(stderr, "error: %s: %s\n", a.images, e.msg);
        rc = EXIT_USAGE;
        goto out;
    }
    if (imgq_limits_save(&lim, n, a.output, &e) || (a.monitor && write_monitor(v, n, &a, &e))) {
        fprintf(stderr, "error: %s\n", e.msg);
        goto out;
    }
    printf("quality limits of %zu image(s) written to %s: sharpness >= %.2f, mean %.1f..%.1f, "
           "dark <= %.3f, clipped <= %.3f, contrast >= %.2f, field >= %.3f\n",
           n, a.output, lim.min_sharpness, lim.min_mean, lim.max_mean, lim.max_dark_frac,
           lim.max_bright_frac, lim.min_contrast, lim.min_field);
    if (a.monitor)
        printf("monitoring baseline of the quality values written to %s\n", a.monitor);
    rc = EXIT_OK;
out:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(v);
    img_free(&im);
    imgq_close(q);
    img_loader_close(l);
    return rc;
}
