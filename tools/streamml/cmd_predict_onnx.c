/* streamml predict / model inspect for ONNX models (common/models/onnx.h): NumPy
 * .npy files in and out, so anyone can check a model against PyTorch with
 * the runtime the workers use.
 *
 *   streamml predict --model m.onnx --input x.npy [--input h0.npy]
 *                    --output y.npy [--output hn.npy]
 *
 * --input/--output are taken in model order, or bound by name with
 * NAME=FILE. An output without a file is summarised on stdout.
 *
 *   streamml predict --model fundus.onnx --image a.png [--image b.jpg]
 *
 * grades image files with the images worker's own step (common/streams/grader.h:
 * model checks, load, preprocess, softmax, grade, referable, CAM) and
 * prints one JSON line per image.
 */
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cam.h"
#include "cli.h"
#include "cmds.h"
#include "grader.h"
#include "npy.h"
#include "onnx.h"
#include "out.h"

#define MAX_IO 16
#define MAX_IMAGES 64

int cmd_is_onnx(const char *path)
{
    size_t n = path ? strlen(path) : 0;

    return n > 5 && strcmp(path + n - 5, ".onnx") == 0;
}

/* The --model/-m value in argv (before getopt runs), or NULL. */
const char *cmd_model_arg(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "--model") == 0 || strcmp(argv[i], "-m") == 0) && i + 1 < argc)
            return argv[i + 1];
        if (strncmp(argv[i], "--model=", 8) == 0)
            return argv[i] + 8;
        if (strncmp(argv[i], "-m", 2) == 0 && argv[i][2])
            return argv[i] + 2;
    }
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: streamml predict --model FILE.onnx --input X.npy [--input ...]\n"
            "                        [--output Y.npy ...] [--threads N]\n"
            "       streamml predict --model FILE.onnx --input X.npy --gradcam K\n"
            "                        --output CAM.npy\n"
            "       streamml predict --model FILE.onnx --image IMG [--image ...]\n"
            "                        [--cam-dir DIR]\n\n"
            "Runs an ONNX model (opset 13..17, as torch.onnx.export writes it) on NumPy\n"
            "arrays with the workers' runtime. Arrays are .npy files (np.save) of\n"
            "float32 or int64 in C order.\n\n"
            "  -m, --model FILE      the .onnx model (required)\n"
            "  -i, --input FILE      one per model input, in model order; or NAME=FILE\n"
            "  -o, --output FILE     where to write outputs, in model order; or NAME=FILE.\n"
            "                        Outputs without a file are summarised on stdout\n"
            "                        (shape, min, max, mean)\n"
            "      --image IMG       grade a JPEG or PNG file with the images worker's\n"
            "                        step (the model's geometry, normalisation, CAM and\n"
            "                        referable_threshold metadata; Grad-CAM or CAM of\n"
            "                        referable images); one JSON line per\n"
            "                        image: status, reason, grade, probabilities,\n"
            "                        expected_grade, referable, referable_probability\n"
            "                        (up to %d images, one forward pass)\n"
            "      --cam-dir DIR     with --image: write the CAM overlay PNG of each\n"
            "                        referable image there (the photograph's size, a\n"
            "                        colour legend, the grade and P on the picture)\n"
            "  -t, --threads N       threads for the runtime and OpenBLAS (default: 1 for\n"
            "                        the runtime, OpenBLAS's own choice for BLAS)\n"
            "      --gradcam K       Grad-CAM maps of class K instead of the outputs, for a\n"
            "                        CNN whose head after its last feature map is\n"
            "                        GlobalAveragePool then Gemm/MatMul/Add/Relu/Dropout:\n"
            "                        float32 (N, h, w) at feature-map resolution into the\n"
            "                        one --output; relu, minus min, / (max + 1e-8)\n"
            "  -h, --help            this text\n"
            "  -V, --version         versions\n\n"
            "`streamml model inspect FILE.onnx` lists inputs, outputs and ops.\n\n"
            "Exit codes: 0 ok; 1 the model failed on these inputs or a write failed,\n"
            "or an image was ungradable; 2 usage, unreadable or unsupported model, bad\n"
            ".npy file.\n",
            MAX_IMAGES);
}

struct bind {
    const char *name; /* NAME= part, or NULL for positional */
    const char *file;
};

struct args {
    const char *model, *cam_dir;
    struct bind in[MAX_IO], out[MAX_IO];
    int n_in, n_out, threads;
    int gradcam; /* class, or -1 */
    const char *images[MAX_IMAGES];
    int n_images;
};

static int add_bind(struct bind *b, int *n, char *arg, const char *what)
{
    char *eq = strchr(arg, '=');

    if (*n == MAX_IO) {
        fprintf(stderr, "error: more than %d --%s\n", MAX_IO, what);
        return -1;
    }
    b[*n].name = NULL;
    b[*n].file = arg;
    if (eq && eq != arg && !memchr(arg, '/', (size_t)(eq - arg))) {
        /* NAME=FILE, unless the '=' is part of a path like dir/a=b.npy */
        *eq = '\0';
        b[*n].name = arg;
        b[*n].file = eq + 1;
    }
    (*n)++;
    return 0;
}

static int parse_args(int argc, char **argv, struct args *a)
{
    static const struct option lo[] = {{"model", required_argument, NULL, 'm'},
                                       {"input", required_argument, NULL, 'i'},
                                       {"output", required_argument, NULL, 'o'},
                                       {"threads", required_argument, NULL, 't'},
                                       {"gradcam", required_argument, NULL, 1000},
                                       {"image", required_argument, NULL, 1001},
                                       {"cam-dir", required_argument, NULL, 1002},
                                       {"help", no_argument, NULL, 'h'},
                                       {"version", no_argument, NULL, 'V'},
                                       {NULL, 0, NULL, 0}};
    int opt;
    char *end;

    while ((opt = getopt_long(argc, argv, "m:i:o:t:hV", lo, NULL)) != -1) {
        if (opt == 'm') {
            a->model = optarg;
        } else if (opt == 1001) {
            if (a->n_images == MAX_IMAGES) {
                fprintf(stderr, "error: more than %d --image\n", MAX_IMAGES);
                return EXIT_USAGE;
            }
            a->images[a->n_images++] = optarg;
        } else if (opt == 1002) {
            a->cam_dir = optarg;
        } else if (opt == 'i' || opt == 'o') {
            if (opt == 'i' ? add_bind(a->in, &a->n_in, optarg, "input")
                           : add_bind(a->out, &a->n_out, optarg, "output"))
                return EXIT_USAGE;
        } else if (opt == 1000) {
            a->gradcam = (int)strtol(optarg, &end, 10);
            if (*end || !*optarg || a->gradcam < 0 || a->gradcam > 100000) {
                fprintf(stderr, "error: --gradcam %s: a class index expected\n", optarg);
                return EXIT_USAGE;
            }
        } else if (opt == 't') {
            a->threads = (int)strtol(optarg, &end, 10);
            if (*end || a->threads < 1 || a->threads > 256) {
                fprintf(stderr, "error: --threads %s: 1..256 expected\n", optarg);
                return EXIT_USAGE;
            }
        } else if (opt == 'h' || opt == 'V') {
            if (opt == 'h')
                usage(stdout);
            else
                cli_version(stdout);
            return -1;
        } else {
            cli_usage_error("streamml predict", lo, argv);
            return EXIT_USAGE;
        }
    }
    if (a->n_images && (a->n_in || a->n_out)) {
        fprintf(stderr, "error: --image grades image files: --input/--output are for arrays\n");
        return EXIT_USAGE;
    }
    if (a->n_images && a->gradcam >= 0) {
        fprintf(stderr, "error: --gradcam maps arrays (--input): with --image, --cam-dir "
                        "writes the CAM overlays\n");
        return EXIT_USAGE;
    }
    if (a->cam_dir && !a->n_images) {
        fprintf(stderr, "error: --cam-dir goes with --image\n");
        return EXIT_USAGE;
    }
    if (optind < argc || !a->model) {
        fprintf(stderr, "error: %s (see streamml predict --help)\n",
                a->model ? "unexpected argument" : "--model FILE is required");
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

/* Index of name among the model's inputs (is_out = 0) or outputs. */
static int find_io(const struct onnx_model *m, const char *name, int is_out)
{
    size_t n = is_out ? onnx_num_outputs(m) : onnx_num_inputs(m);

    for (size_t i = 0; i < n; i++)
        if (strcmp(is_out ? onnx_output_name(m, i) : onnx_input_name(m, i), name) == 0)
            return (int)i;
    return -1;
}

/* slot[k] = the bind for model input/output k, or NULL. */
static int resolve(const struct onnx_model *m, const struct bind *b, int nb, int is_out,
                   const struct bind **slot)
{
    size_t n = is_out ? onnx_num_outputs(m) : onnx_num_inputs(m);
    const char *what = is_out ? "output" : "input";

    if ((size_t)nb > n) {
        fprintf(stderr, "error: %d --%s given, the model has %zu\n", nb, what, n);
        return -1;
    }
    for (int i = 0; i < nb; i++) {
        int k = b[i].name ? find_io(m, b[i].name, is_out) : i;
        if (k < 0 || slot[k]) {
            fprintf(stderr, "error: --%s %s=%s: %s\n", what, b[i].name, b[i].file,
                    k < 0 ? "the model has no such name" : "given twice");
            return -1;
        }
        slot[k] = &b[i];
    }
    return 0;
}

static int read_inputs(const struct onnx_model *m, const struct bind **slot, struct onnx_tensor *in)
{
    for (size_t i = 0; i < onnx_num_inputs(m); i++) {
        struct err e = {0};
        if (!slot[i]) {
            fprintf(stderr, "error: no --input for model input '%s'\n", onnx_input_name(m, i));
            return -1;
        }
        if (npy_read(slot[i]->file, &in[i], &e)) {
            fprintf(stderr, "error: input '%s': %s\n", onnx_input_name(m, i), e.msg);
            return -1;
        }
    }
    return 0;
}

static const char *dtype_name(enum onnx_dtype dt)
{
    return dt == ONNX_F32 ? "float32" : dt == ONNX_I64 ? "int64" : "bool";
}

static void summarise(const char *name, const struct onnx_tensor *t)
{
    size_t n = onnx_numel(t);
    double lo = INFINITY, hi = -INFINITY, sum = 0;

    printf("%s: %s [", name, dtype_name(t->dtype));
    for (int d = 0; d < t->ndim; d++)
        printf("%s%lld", d ? ", " : "", (long long)t->dims[d]);
    for (size_t i = 0; i < n; i++) {
        double v = t->dtype == ONNX_F32    ? ((const float *)t->data)[i]
                   : t->dtype == ONNX_BOOL ? ((const uint8_t *)t->data)[i]
                                           : (double)((const int64_t *)t->data)[i];
        lo = fmin(lo, v);
        hi = fmax(hi, v);
        sum += v;
    }
    printf("] min %.9g max %.9g mean %.9g\n", n ? lo : 0.0, n ? hi : 0.0,
           n ? sum / (double)n : 0.0);
}

static int write_outputs(const struct onnx_model *m, const struct bind **slot,
                         const struct onnx_tensor *out)
{
    for (size_t i = 0; i < onnx_num_outputs(m); i++) {
        struct err e = {0};
        if (!slot[i]) {
            summarise(onnx_output_name(m, i), &out[i]);
        } else if (npy_write(slot[i]->file, &out[i], &e)) {
            fprintf(stderr, "error: output '%s': %s\n", onnx_output_name(m, i), e.msg);
            return e.code == ERR_CONFIG ? EXIT_USAGE : EXIT_RUNTIME;
        }
    }
    return EXIT_OK;
}

static int predict(struct onnx_model *m, const struct args *a)
{
    const struct bind *islot[MAX_IO] = {0}, *oslot[MAX_IO] = {0};
    struct onnx_tensor in[MAX_IO] = {{0}}, out[MAX_IO];
    struct err e = {0};
    int rc = EXIT_USAGE;

    if (onnx_num_inputs(m) > MAX_IO || onnx_num_outputs(m) > MAX_IO) {
        fprintf(stderr, "error: more than %d model inputs or outputs\n", MAX_IO);
        return EXIT_USAGE;
    }
    if (resolve(m, a->in, a->n_in, 0, islot) || resolve(m, a->out, a->n_out, 1, oslot) ||
        read_inputs(m, islot, in))
        goto out;
    rc = EXIT_RUNTIME;
    if (onnx_run(m, in, onnx_num_inputs(m), out, onnx_num_outputs(m), &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        goto out;
    }
    rc = write_outputs(m, oslot, out);
out:
    for (size_t i = 0; i < MAX_IO; i++)
        npy_free(&in[i]);
    return rc;
}

/* Opens the model with its last feature map kept; the head in layers. */
static int open_gradcam(struct onnx_model **m, const char *path, struct cam_layer *layers,
                        size_t *n_layers, int *channels, struct err *e)
{
    char feature[256];
    const char *f, *keep[1] = {feature};

    if (onnx_open(m, path, e))
        return e->code;
    if (onnx_gradcam_head(*m, &f, layers, CAM_MAX_LAYERS, n_layers, channels, e)) {
        onnx_close(*m);
        *m = NULL;
        return e->code;
    }
    snprintf(feature, sizeof(feature), "%s", f);
    onnx_close(*m);
    if (onnx_open_keep(m, path, keep, 1, e))
        return e->code;
    /* reopened: the layers must point into this model's constants */
    return onnx_gradcam_head(*m, &f, layers, CAM_MAX_LAYERS, n_layers, channels, e);
}

/* Runs m on the inputs and writes the (N, h, w) maps of class a->gradcam. */
static int gradcam(struct onnx_model *m, const struct args *a, const struct cam_layer *layers,
                   size_t n_layers, int channels, const char *feature)
{
    const struct bind *islot[MAX_IO] = {0};
    struct onnx_tensor in[MAX_IO] = {{0}}, out[1], maps = {.dtype = ONNX_F32, .ndim = 3};
    const struct onnx_tensor *fm;
    struct err e = {0};
    float *scratch = NULL;
    int rc = EXIT_USAGE;

    if (resolve(m, a->in, a->n_in, 0, islot) || read_inputs(m, islot, in))
        goto out;
    rc = EXIT_RUNTIME;
    if (onnx_run(m, in, onnx_num_inputs(m), out, 1, &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        goto out;
    }
    fm = onnx_value(m, feature);
    if (!fm || fm->ndim != 4 || fm->dims[1] != channels) {
        fprintf(stderr, "error: gradcam: feature map %s is not (N, %d, h, w)\n", feature, channels);
        goto out;
    }
    maps.dims[0] = fm->dims[0];
    maps.dims[1] = fm->dims[2];
    maps.dims[2] = fm->dims[3];
    maps.data = malloc(onnx_numel(&maps) * sizeof(float) + 1);
    scratch = malloc(cam_gradcam_scratch(layers, n_layers, channels) * sizeof(float));
    if (!maps.data || !scratch) {
        fprintf(stderr, "error: out of memory\n");
        goto out;
    }
    for (int64_t i = 0; i < fm->dims[0]; i++) {
        size_t cells = (size_t)(fm->dims[2] * fm->dims[3]);
        if (cam_gradcam(layers, n_layers, channels, (const float *)fm->data + i * channels * cells,
                        (int)fm->dims[2], (int)fm->dims[3], a->gradcam,
                        (float *)maps.data + i * cells, scratch, &e)) {
            fprintf(stderr, "error: sample %lld: %s\n", (long long)i, e.msg);
            goto out;
        }
    }
    if (npy_write(a->out[0].file, &maps, &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        goto out;
    }
    rc = EXIT_OK;
out:
    free(scratch);
    free(maps.data);
    for (size_t i = 0; i < MAX_IO; i++)
        npy_free(&in[i]);
    return rc;
}

static int cmd_gradcam(const struct args *a)
{
    struct cam_layer layers[CAM_MAX_LAYERS];
    struct onnx_model *m = NULL;
    struct err e = {0};
    size_t n_layers;
    int channels, rc;
    const char *feature;

    if (a->n_out != 1) {
        fprintf(stderr, "error: --gradcam writes one --output FILE.npy\n");
        return EXIT_USAGE;
    }
    if (open_gradcam(&m, a->model, layers, &n_layers, &channels, &e) ||
        onnx_gradcam_head(m, &feature, layers, CAM_MAX_LAYERS, &n_layers, &channels, &e)) {
        fprintf(stderr, "error: %s: %s\n", a->model, e.msg);
        onnx_close(m);
        return EXIT_USAGE;
    }
    if (a->threads)
        onnx_set_threads(m, a->threads);
    rc = gradcam(m, a, layers, n_layers, channels, feature);
    onnx_close(m);
    return rc;
}

/* ---- --image: the images worker's step on files ---- */

static void print_image(const struct image_prediction *p)
{
    json_t *o = json_object(), *pr = json_array();
    char *line;

    for (int k = 0; k < p->n_probabilities; k++)
        json_array_append_new(pr, json_real(p->probabilities[k]));
    json_object_set_new(o, "image", json_string(p->src_topic));
    json_object_set_new(o, "status", json_string(p->ok ? "ok" : "ungradable"));
    json_object_set_new(o, "reason", json_string(p->reason));
    json_object_set_new(o, "detail", json_string(p->detail));
    json_object_set_new(o, "grade", json_integer(p->grade));
    json_object_set_new(o, "probabilities", pr);
    json_object_set_new(o, "expected_grade", json_real(p->expected_grade));
    json_object_set_new(o, "referable", json_boolean(p->referable));
    json_object_set_new(o, "referable_probability", json_real(p->referable_probability));
    json_object_set_new(o, "referable_threshold", json_real(p->referable_threshold));
    json_object_set_new(o, "agreement", json_real(p->agreement));
    json_object_set_new(o, "model_name", json_string(p->model_name));
    json_object_set_new(o, "model_version", json_string(p->model_version));
    json_object_set_new(o, "cam_path", json_string(p->cam_path));
    line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    if (line)
        printf("%s\n", line);
    free(line);
    json_decref(o);
}

/* The images.* defaults of the worker (limits, threshold from the model's
 * metadata). Files are named on the command line: no root to confine them
 * to, so each is made absolute and read under "/". */
static int grade_images(const struct args *a)
{
    struct cfg *cf = cfg_new();
    struct grader_opts o;
    struct image_prediction p[MAX_IMAGES];
    char abs[MAX_IMAGES][PATH_MAX];
    struct grader *g = NULL;
    struct err e = {0};
    int bad = 0;

    if (!cf) {
        fprintf(stderr, "error: out of memory\n");
        return EXIT_RUNTIME;
    }
    grader_opts_from_cfg(cf, &o);
    o.model = a->model;
    o.cam_dir = a->cam_dir;
    o.batch = (size_t)a->n_images;
    o.load.root = "/";
    o.load.allow_hosts = "";
    g = grader_open(&o, &e);
    cfg_free(cf); /* o's strings are no longer read after the open */
    if (!g) {
        fprintf(stderr, "error: %s\n", e.msg);
        return EXIT_USAGE;
    }
    grader_begin(g);
    for (int i = 0; i < a->n_images; i++) {
        struct image_event ev;
        memset(&ev, 0, sizeof(ev));
        if (!realpath(a->images[i], abs[i]))
            snprintf(abs[i], sizeof(abs[i]), "%s", a->images[i]); /* missing: said below */
        snprintf(ev.image_id, sizeof(ev.image_id), "image%d", i);
        snprintf(ev.uri, sizeof(ev.uri), "%s", abs[i]);
        grader_add(g, (size_t)i, &ev, a->images[i], 0, i, &p[i]);
    }
    grader_run(g, p, (size_t)a->n_images);
    for (int i = 0; i < a->n_images; i++) {
        print_image(&p[i]);
        bad += !p[i].ok;
    }
    grader_close(g);
    return bad ? EXIT_RUNTIME : EXIT_OK;
}

int cmd_predict_onnx(int argc, char **argv)
{
    struct args a = {.gradcam = -1};
    struct onnx_model *m;
    struct err e = {0};
    int rc = parse_args(argc, argv, &a);

    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if (a.gradcam >= 0)
        return cmd_gradcam(&a);
    if (a.n_images) {
        rc = grade_images(&a);
        return fflush(stdout) != 0 && !rc ? EXIT_RUNTIME : rc;
    }
    if (onnx_open(&m, a.model, &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        return EXIT_USAGE;
    }
    if (a.threads)
        onnx_set_threads(m, a.threads);
    rc = predict(m, &a);
    if (out_stdout_check(&e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        rc = rc ? rc : EXIT_RUNTIME;
    }
    onnx_close(m);
    return rc;
}

static void print_op_counts(const struct onnx_model *m)
{
    size_t n = onnx_num_nodes(m);
    const char *seen[256];
    size_t ns = 0;

    printf("nodes: %zu\nops:\n", n);
    for (size_t i = 0; i < n; i++) {
        const char *op = onnx_node_op(m, i);
        size_t k = 0, cnt = 0;
        while (k < ns && strcmp(seen[k], op) != 0)
            k++;
        if (k < ns || ns == 256)
            continue;
        seen[ns++] = op;
        for (size_t j = i; j < n; j++)
            cnt += strcmp(onnx_node_op(m, j), op) == 0;
        printf("  %-20s %zu\n", op, cnt);
    }
}

int cmd_model_inspect_onnx(const char *path)
{
    struct onnx_model *m;
    struct err e = {0};
    int nd;
    int64_t dims[8];

    if (onnx_open(&m, path, &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        return EXIT_USAGE;
    }
    printf("file: %s\nformat: onnx\nproducer: %s\nopset: %lld\ninputs:\n", path, onnx_producer(m),
           (long long)onnx_opset(m));
    for (size_t i = 0; i < onnx_num_inputs(m); i++) {
        onnx_input_shape(m, i, &nd, dims);
        printf("  %s: %s [", onnx_input_name(m, i), dtype_name(onnx_input_dtype(m, i)));
        for (int d = 0; d < nd; d++) {
            if (dims[d] < 0)
                printf("%s?", d ? ", " : "");
            else
                printf("%s%lld", d ? ", " : "", (long long)dims[d]);
        }
        printf("]\n");
    }
    printf("outputs:\n");
    for (size_t i = 0; i < onnx_num_outputs(m); i++)
        printf("  %s\n", onnx_output_name(m, i));
    print_op_counts(m);
    if (onnx_num_metadata(m))
        printf("metadata:\n");
    for (size_t i = 0; i < onnx_num_metadata(m); i++)
        printf("  %s: %s\n", onnx_metadata_key(m, i), onnx_metadata(m, onnx_metadata_key(m, i)));
    onnx_close(m);
    return EXIT_OK;
}
