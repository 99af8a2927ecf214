/* streamml predict / model inspect: offline scoring with the worker's own
 * runtime, so a model can be checked before it is deployed. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmds.h"
#include "gbdt.h"
#include "scorecard.h"

#define MAX_COLS 4096

static const char *const default_ignore = "event_id,user_id,event_time,label";

struct model {
    struct gbdt *g;
    struct card *c;
};

static size_t model_nfeat(const struct model *m)
{
    return m->g ? gbdt_num_features(m->g) : card_num_features(m->c);
}

static const char *model_fname(const struct model *m, size_t i)
{
    return m->g ? gbdt_feature_name(m->g, i) : card_feature_name(m->c, i);
}

/* A scorecard says so in its "format"; anything else is read as XGBoost. */
static int model_open(struct model *m, const char *path, struct err *e)
{
    char head[4096] = {0};
    FILE *f = fopen(path, "rb");

    if (!f)
        return err_set(e, ERR_CONFIG, "model %s: %s", path, strerror(errno));
    if (fread(head, 1, sizeof(head) - 1, f) == 0)
        head[0] = '\0';
    fclose(f);
    if (strstr(head, "streamml-scorecard"))
        m->c = card_open(path, e);
    else
        m->g = gbdt_open(path, e);
    return m->g || m->c ? ERR_OK : e->code;
}

static int split(char *line, char **cols)
{
    int n = 0;

    line[strcspn(line, "\r\n")] = '\0';
    for (char *p = line;; p++) {
        cols[n++] = p;
        p += strcspn(p, ",");
        if (!*p || n == MAX_COLS)
            break;
        *p = '\0';
    }
    return n;
}

static int in_list(const char *list, const char *name)
{
    size_t n = strlen(name);

    for (const char *p = list; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
        if (strncmp(p, name, n) == 0 && (p[n] == ',' || !p[n]))
            return 1;
    return 0;
}

/* col_of[i] = CSV column of model feature i. */
static int map_header(const struct model *m, char **cols, int n, const char *ignore,
                      int *col_of)
{
    size_t nf = model_nfeat(m);
    int named = model_fname(m, 0) != NULL;

    for (size_t i = 0; i < nf; i++) {
        col_of[i] = -1;
        for (int k = 0; k < n && named; k++)
            if (strcmp(cols[k], model_fname(m, i)) == 0)
                col_of[i] = k;
        if (!named)
            col_of[i] = (int)i < n ? (int)i : -1;
        if (col_of[i] < 0) {
            fprintf(stderr, "error: model feature \"%s\" has no column in the input\n",
                    named ? model_fname(m, i) : "(by position)");
            return -1;
        }
    }
    for (int k = 0; k < n && named; k++) {
        int used = in_list(ignore, cols[k]);
        for (size_t i = 0; i < nf && !used; i++)
            used = col_of[i] == k;
        if (!used) {
            fprintf(stderr, "error: column \"%s\" is not a model feature (use --ignore)\n",
                    cols[k]);
            return -1;
        }
    }
    return 0;
}

static int parse_cell(const char *s, float *out)
{
    char *end;
    double d;

    if (!*s) {
        *out = NAN;
        return 0;
    }
    errno = 0;
    d = strtod(s, &end);
    if (end == s || *end || errno == ERANGE)
        return -1;
    *out = (float)d;
    return 0;
}

static void print_score(const struct model *m, const float *x)
{
    struct card_result r;

    if (m->g) {
        printf("%.9g\n", gbdt_predict(m->g, x));
        return;
    }
    card_score(m->c, x, &r);
    printf("%d,%.9g,", r.score, r.probability);
    for (int k = 0; k < r.n_reasons; k++)
        printf("%s%s", k ? ";" : "", r.reasons[k]);
    printf("\n");
}

static int score_csv(const struct model *m, FILE *in, const char *ignore)
{
    static char *cols[MAX_COLS];
    char *line = NULL;
    size_t cap = 0, nf = model_nfeat(m);
    long lineno = 1;
    int *col_of = calloc(nf, sizeof(int)), n, rc = EXIT_OK;
    float *x = calloc(nf, sizeof(float));

    if (!col_of || !x || getline(&line, &cap, in) < 0 ||
        map_header(m, cols, split(line, cols), ignore, col_of)) {
        rc = EXIT_USAGE;
        goto out;
    }
    if (m->c)
        printf("score,probability,reasons\n");
    while (getline(&line, &cap, in) >= 0) {
        lineno++;
        n = split(line, cols);
        for (size_t i = 0; i < nf; i++) {
            if (col_of[i] >= n || parse_cell(cols[col_of[i]], &x[i])) {
                fprintf(stderr, "error: line %ld, column %d: not a number\n", lineno,
                        col_of[i] + 1);
                rc = EXIT_RUNTIME;
                goto out;
            }
        }
        print_score(m, x);
    }
out:
    free(line);
    free(col_of);
    free(x);
    return rc;
}

static void predict_usage(FILE *out)
{
    fprintf(out,
            "usage: streamml predict --model FILE [--input FILE.csv] [--ignore COLS]\n\n"
            "Scores a CSV with the workers' own runtime: one P(bad) per row on stdout\n"
            "(%%.9g) for an XGBoost binary:logistic JSON model, or score,probability,reasons\n"
            "for a streamml scorecard. Columns are matched to the model's feature_names by\n"
            "the header (by position when the model has none); a missing feature column or\n"
            "an unknown extra column is an error. An empty cell is a missing value.\n"
            "  --ignore COLS   columns to skip (default %s)\n", default_ignore);
}

int cmd_predict(int argc, char **argv)
{
    static const struct option lo[] = {{"model", required_argument, NULL, 'm'},
                                       {"input", required_argument, NULL, 'i'},
                                       {"ignore", required_argument, NULL, 'g'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    const char *model = NULL, *input = NULL, *ignore = default_ignore;
    struct model m = {0};
    struct err e = {0};
    FILE *in = stdin;
    int opt, rc;

    while ((opt = getopt_long(argc, argv, "m:i:h", lo, NULL)) != -1) {
        switch (opt) {
        case 'm': model = optarg; break;
        case 'i': input = optarg; break;
        case 'g': ignore = optarg; break;
        case 'h': predict_usage(stdout); return EXIT_OK;
        default: predict_usage(stderr); return EXIT_USAGE;
        }
    }
    if (!model) {
        predict_usage(stderr);
        return EXIT_USAGE;
    }
    if (model_open(&m, model, &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        return EXIT_USAGE;
    }
    if (input && strcmp(input, "-") && !(in = fopen(input, "r"))) {
        fprintf(stderr, "error: %s: %s\n", input, strerror(errno));
        rc = EXIT_USAGE;
    } else {
        rc = score_csv(&m, in, ignore);
    }
    if (in && in != stdin)
        fclose(in);
    gbdt_close(m.g);
    card_close(m.c);
    return rc;
}

int cmd_model(int argc, char **argv)
{
    struct model m = {0};
    struct err e = {0};

    if (argc != 3 || strcmp(argv[1], "inspect") != 0) {
        fprintf(stderr, "usage: streamml model inspect FILE\n");
        return argc == 2 && strcmp(argv[1], "--help") == 0 ? EXIT_OK : EXIT_USAGE;
    }
    if (model_open(&m, argv[2], &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        return EXIT_RUNTIME;
    }
    if (m.g)
        printf("format: xgboost-json\nobjective: binary:logistic\ntrees: %zu\nbase_score: %.9g\n"
               "features: %zu\n", gbdt_num_trees(m.g), gbdt_base_score(m.g),
               gbdt_num_features(m.g));
    else
        printf("format: streamml-scorecard\nname: %s\nversion: %s\nfeatures: %zu\n",
               card_name(m.c), card_version(m.c), card_num_features(m.c));
    for (size_t i = 0; i < model_nfeat(&m); i++)
        printf("  %zu %s\n", i, model_fname(&m, i) ? model_fname(&m, i) : "(unnamed)");
    gbdt_close(m.g);
    card_close(m.c);
    return EXIT_OK;
}
