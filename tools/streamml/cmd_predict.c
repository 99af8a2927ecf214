/* streamml predict / model inspect: offline scoring with the workers' own
 * runtime (common/gbdt.c, common/scorecard.c), so a model can be checked on
 * a CSV before it is deployed.
 *
 * Input is a CSV with a header (RFC 4180 quoting, as `streamml featurize`
 * writes it). Columns are matched to the model's features by name, or by
 * position when an XGBoost model has no feature_names; columns on the
 * --ignore list are skipped. Cells are parsed with strtod and checked to the
 * end; an empty cell is a missing value (NaN).
 */
#include <errno.h>
#include <float.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmds.h"
#include "gbdt.h"
#include "scorecard.h"
#include "treeshap.h"

#define MAX_COLS 4096
#define MAX_RECORD (1024 * 1024) /* bytes in one CSV record */
#define BATCH 256                /* rows per gbdt_predict_batch call */
#define SNIFF_BYTES (64 * 1024)  /* where a scorecard's "format" is looked for */

static const char default_ignore[] = "event_id,user_id,event_time,label";

/* Exactly one of g, c is set. */
struct model {
    struct gbdt *g;
    struct card *c;
};

struct csv {
    FILE *in;
    const char *name; /* for messages */
    char *rec, *line; /* the record; the physical line being read */
    size_t rec_cap, line_cap;
    long line_no; /* line where the current record starts */
    long next_line;
    char *cols[MAX_COLS];
    int n;
};

/* Column plan: col_feat[k] = model feature of CSV column k, or -1 (ignored). */
struct plan {
    int col_feat[MAX_COLS];
    char *names[MAX_COLS]; /* header names, for messages */
    int ncols;
    int ignore_extra; /* skip every column that is not a model feature */
};

static size_t model_nfeat(const struct model *m)
{
    return m->g ? gbdt_num_features(m->g) : card_num_features(m->c);
}

static const char *model_fname(const struct model *m, size_t i)
{
    return m->g ? gbdt_feature_name(m->g, i) : card_feature_name(m->c, i);
}

/* True when text holds "format" : "streamml-scorecard" (any spacing). */
static int says_scorecard(const char *text)
{
    for (const char *p = strstr(text, "\"format\""); p; p = strstr(p + 1, "\"format\"")) {
        const char *q = p + strlen("\"format\"");
        q += strspn(q, " \t\r\n");
        if (*q != ':')
            continue;
        q++;
        q += strspn(q, " \t\r\n");
        if (strncmp(q, "\"streamml-scorecard\"", 20) == 0)
            return 1;
    }
    return 0;
}

/* A scorecard says so in its "format" (looked for in the first SNIFF_BYTES);
 * anything else goes to the XGBoost loader, which names what is wrong
 * (UBJSON, objective, ...). */
static int model_open(struct model *m, const char *path, struct err *e)
{
    char *head = malloc(SNIFF_BYTES + 1);
    size_t n;
    int card;
    FILE *f = fopen(path, "rb");

    if (!f || !head) {
        free(head);
        if (f)
            fclose(f);
        return err_set(e, ERR_CONFIG, "%s: %s", path, f ? "out of memory" : strerror(errno));
    }
    n = fread(head, 1, SNIFF_BYTES, f);
    fclose(f);
    head[n] = '\0';
    card = says_scorecard(head);
    free(head);
    if (card)
        m->c = card_open(path, e);
    else
        m->g = gbdt_open(path, e);
    return m->g || m->c ? ERR_OK : e->code;
}

static void model_close(struct model *m)
{
    gbdt_close(m->g);
    card_close(m->c);
}

/* Appends s (n bytes and its NUL) to the record at len. */
static int append(struct csv *c, size_t len, const char *s, size_t n)
{
    if (len + n + 1 > MAX_RECORD)
        return -1;
    if (len + n + 1 > c->rec_cap) {
        size_t cap = c->rec_cap ? c->rec_cap : 4096;
        char *p;
        while (cap < len + n + 1)
            cap *= 2;
        p = realloc(c->rec, cap);
        if (!p)
            return -1;
        c->rec = p;
        c->rec_cap = cap;
    }
    memcpy(c->rec + len, s, n + 1);
    return 0;
}

/* Reads one record into c->rec, lines joined while a quoted field is open
 * (a field may hold a line break). 1 ok, 0 end, -1 too long, -2 open quote. */
static int read_record(struct csv *c)
{
    size_t len = 0;
    int quoted = 0;
    ssize_t n;

    c->line_no = c->next_line;
    while ((n = getline(&c->line, &c->line_cap, c->in)) >= 0) {
        c->next_line++;
        if (append(c, len, c->line, (size_t)n))
            return -1;
        for (ssize_t i = 0; i < n; i++)
            quoted ^= c->line[i] == '"';
        len += (size_t)n;
        if (!quoted)
            return 1;
    }
    return len ? -2 : 0;
}

/* Splits c->rec in place into c->cols: RFC 4180, "" inside quotes is ". */
static int split_record(struct csv *c)
{
    char *r = c->rec, *w;
    size_t n = strlen(r);
    int more;

    if (n && r[n - 1] == '\n')
        r[--n] = '\0';
    if (n && r[n - 1] == '\r')
        r[--n] = '\0';
    for (c->n = 0;; r++) {
        if (c->n == MAX_COLS)
            return -1;
        c->cols[c->n++] = w = r;
        if (*r == '"') {
            for (r++; *r != '"' || r[1] == '"'; r++) {
                if (!*r)
                    return -1;
                r += *r == '"'; /* "" -> " */
                *w++ = *r;
            }
            r++; /* the closing quote */
        } else {
            for (; *r && *r != ','; r++)
                *w++ = *r;
        }
        if (*r && *r != ',')
            return -1; /* text after a closing quote */
        more = *r == ',';
        *w = '\0';
        if (!more)
            return 0;
    }
}

/* Reads and splits the next record: 1 ok, 0 end of input, -1 error
 * (printed). */
static int next_record(struct csv *c)
{
    int rc = read_record(c);

    if (rc == -1)
        fprintf(stderr, "error: %s line %ld: record longer than %d bytes\n", c->name, c->line_no,
                MAX_RECORD);
    if (rc == -2)
        fprintf(stderr, "error: %s line %ld: unterminated quoted field\n", c->name, c->line_no);
    if (rc <= 0)
        return rc < 0 ? -1 : 0;
    if (split_record(c)) {
        fprintf(stderr, "error: %s line %ld: bad quoting or more than %d columns\n", c->name,
                c->line_no, MAX_COLS);
        return -1;
    }
    return 1;
}

/* name is on the comma-separated list (an empty list holds nothing). */
static int in_list(const char *list, const char *name)
{
    size_t n = strlen(name);

    for (const char *p = list; *p; p += strcspn(p, ",") + (p[strcspn(p, ",")] == ',')) {
        if (strncmp(p, name, n) == 0 && (p[n] == ',' || p[n] == '\0'))
            return 1;
    }
    return 0;
}

static int find_feature(const struct model *m, const char *name)
{
    size_t nf = model_nfeat(m);

    for (size_t i = 0; i < nf; i++)
        if (strcmp(model_fname(m, i), name) == 0)
            return (int)i;
    return -1;
}

/* Column k of a by-name plan: a model feature, ignored, or an error. */
static int plan_column(const struct model *m, const struct csv *c, const char *ignore, int k,
                       int *col_of, struct plan *p)
{
    int f = find_feature(m, c->cols[k]);

    p->col_feat[k] = f;
    if (f < 0 && !p->ignore_extra && !in_list(ignore, c->cols[k])) {
        fprintf(stderr,
                "error: %s column %d \"%s\" is not a model feature (drop it, add it "
                "to --ignore, or use --ignore-extra)\n",
                c->name, k + 1, c->cols[k]);
        return -1;
    }
    if (f >= 0 && col_of[f]) {
        fprintf(stderr, "error: %s: column \"%s\" appears twice\n", c->name, c->cols[k]);
        return -1;
    }
    if (f >= 0)
        col_of[f] = k + 1;
    return 0;
}

/* By name: each column a model feature (or ignored), each feature a column.
 * Model features take precedence over the ignore list. */
static int plan_named(const struct model *m, const struct csv *c, const char *ignore,
                      struct plan *p)
{
    size_t nf = model_nfeat(m);
    int *col_of = calloc(nf, sizeof(int)), rc = 0; /* 1 + column; 0 = none yet */

    if (!col_of)
        return -1;
    for (int k = 0; k < c->n && !rc; k++)
        rc = plan_column(m, c, ignore, k, col_of, p);
    for (size_t i = 0; i < nf && !rc; i++) {
        if (col_of[i])
            continue;
        fprintf(stderr, "error: model feature \"%s\" has no column in %s\n", model_fname(m, i),
                c->name);
        rc = -1;
    }
    free(col_of);
    return rc;
}

/* By position (XGBoost model without feature_names): the columns not on
 * the ignore list are features 0, 1, ... in order. */
static int plan_positional(const struct model *m, const struct csv *c, const char *ignore,
                           struct plan *p)
{
    size_t nf = model_nfeat(m), used = 0;

    for (int k = 0; k < c->n; k++)
        p->col_feat[k] = in_list(ignore, c->cols[k]) ? -1 : (int)used++;
    if (used == nf)
        return 0;
    fprintf(stderr,
            "error: the model has %zu features without names (matched by position); "
            "%s has %zu columns not on --ignore\n",
            nf, c->name, used);
    return -1;
}

static int read_header(const struct model *m, struct csv *c, const char *ignore, struct plan *p)
{
    int rc = next_record(c);

    if (rc == 0)
        fprintf(stderr, "error: %s is empty (a header line is expected)\n", c->name);
    if (rc <= 0)
        return -1;
    p->ncols = c->n;
    for (int k = 0; k < c->n; k++) {
        p->names[k] = strdup(c->cols[k]);
        if (!p->names[k]) {
            fprintf(stderr, "error: out of memory\n");
            return -1;
        }
    }
    return model_fname(m, 0) ? plan_named(m, c, ignore, p) : plan_positional(m, c, ignore, p);
}

static int parse_cell(const char *s, float *out)
{
    char *end;
    double d;

    if (!*s) {
        *out = NAN;
        return 0;
    }
    errno = 0; /* ERANGE on underflow is fine: the value is ~0 */
    d = strtod(s, &end);
    if (end == s || *end || !isfinite(d) || fabs(d) > FLT_MAX)
        return -1;
    *out = (float)d;
    return 0;
}

/* One record into x (model feature order); the error names line and column. */
static int parse_row(const struct csv *c, const struct plan *p, float *x)
{
    if (c->n != p->ncols) {
        fprintf(stderr, "error: %s line %ld: %d columns, the header has %d\n", c->name, c->line_no,
                c->n, p->ncols);
        return -1;
    }
    for (int k = 0; k < c->n; k++) {
        if (p->col_feat[k] < 0 || !parse_cell(c->cols[k], &x[p->col_feat[k]]))
            continue;
        fprintf(stderr, "error: %s line %ld, column %d (%s): \"%.40s\" is not a number\n", c->name,
                c->line_no, k + 1, p->names[k], c->cols[k]);
        return -1;
    }
    return 0;
}

/* RFC 4180 quoting for a field that needs it. */
static void put_field(const char *s, FILE *out)
{
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, out);
        return;
    }
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', out);
        fputc(*s, out);
    }
    fputc('"', out);
}

static void print_card_row(const struct card *card, const float *x)
{
    struct card_result r;
    char reasons[CARD_MAX_REASONS * 130] = "";
    size_t len = 0;

    card_score(card, x, &r);
    for (int k = 0; k < r.n_reasons && len < sizeof(reasons); k++)
        len += (size_t)snprintf(reasons + len, sizeof(reasons) - len, "%s%.127s", k ? ";" : "",
                                r.reasons[k]);
    printf("%d,%.9g,", r.score, r.probability);
    put_field(reasons, stdout);
    putchar('\n');
}

/* --contribs: header of the model's feature names (f0, f1, ... without
 * names), then bias. */
static void print_contrib_header(const struct gbdt *g)
{
    char pos[32];

    for (size_t i = 0; i < gbdt_num_features(g); i++) {
        const char *nm = gbdt_feature_name(g, i);
        snprintf(pos, sizeof(pos), "f%zu", i);
        put_field(nm ? nm : pos, stdout);
        putchar(',');
    }
    printf("bias\n");
}

static void print_contribs(const struct treeshap *ts, struct treeshap_ws *w, const float *x,
                           double *phi)
{
    size_t n = treeshap_num_values(ts);

    treeshap_explain(ts, w, x, phi);
    for (size_t i = 0; i < n; i++)
        printf("%.9g%c", phi[i], i + 1 < n ? ',' : '\n');
}

/* --contribs: one row of TreeSHAP values per record. */
static int explain_rows(const struct model *m, struct csv *c, const struct plan *p)
{
    struct err e = {0};
    struct treeshap *ts = treeshap_open(m->g, &e);
    struct treeshap_ws *w = ts ? treeshap_ws_open(ts) : NULL;
    size_t nf = gbdt_num_features(m->g);
    float *x = malloc(nf * sizeof(float));
    double *phi = malloc((nf + 1) * sizeof(double));
    int rc = EXIT_RUNTIME;

    if (!ts)
        fprintf(stderr, "error: %s\n", e.msg);
    else if (!w || !x || !phi)
        fprintf(stderr, "error: out of memory\n");
    if (ts && w && x && phi) {
        print_contrib_header(m->g);
        while ((rc = next_record(c)) > 0 && (rc = parse_row(c, p, x)) == 0)
            print_contribs(ts, w, x, phi);
        rc = rc == 0 ? EXIT_OK : EXIT_RUNTIME;
    } else if (!ts) {
        rc = EXIT_USAGE;
    }
    free(x);
    free(phi);
    treeshap_ws_close(w);
    treeshap_close(ts);
    return rc;
}

static void flush_batch(const struct gbdt *g, const float *x, size_t n, double *p)
{
    gbdt_predict_batch(g, x, n, p);
    for (size_t i = 0; i < n; i++)
        printf("%.9g\n", p[i]);
}

/* Scores every record after the header. Rows before a bad one are
 * printed; then EXIT_RUNTIME. */
static int score_rows(const struct model *m, struct csv *c, const struct plan *p)
{
    size_t nf = model_nfeat(m), n = 0;
    float *x = malloc(BATCH * nf * sizeof(float));
    double prob[BATCH];
    int rc;

    if (!x) {
        fprintf(stderr, "error: out of memory\n");
        return EXIT_RUNTIME;
    }
    if (m->c)
        printf("score,probability,reasons\n");
    while ((rc = next_record(c)) > 0 && (rc = parse_row(c, p, x + n * nf)) == 0) {
        if (m->c) {
            print_card_row(m->c, x);
        } else if (++n == BATCH) {
            flush_batch(m->g, x, n, prob);
            n = 0;
        }
    }
    if (n)
        flush_batch(m->g, x, n, prob);
    free(x);
    return rc == 0 ? EXIT_OK : EXIT_RUNTIME;
}

static void predict_usage(FILE *out)
{
    fprintf(out,
            "usage: streamml predict --model FILE [--input FILE.csv|-] [--ignore COLS]\n"
            "                        [--contribs]\n\n"
            "Scores a CSV offline with the workers' own runtime. For an XGBoost\n"
            "binary:logistic JSON model: one P(bad) per row on stdout (%%.9g), no header.\n"
            "For a streamml scorecard (\"format\": \"streamml-scorecard\"): a header, then\n"
            "score,probability,reasons per row (reasons: up to %d features, worst first,\n"
            "separated by ';').\n\n"
            "The CSV needs a header line (RFC 4180 quoting, as `streamml featurize`\n"
            "writes it). Columns are matched to the model's feature names; an XGBoost model\n"
            "saved without feature_names takes the columns not on --ignore, in order. A\n"
            "model feature without a column, or a column that is neither a feature nor\n"
            "ignored, is an error (for a scorecard, which uses a few features by design,\n"
            "columns it does not use are skipped). An empty cell is a missing value;\n"
            "anything else must be a finite number.\n\n"
            "  -m, --model FILE     XGBoost JSON model or scorecard (required)\n"
            "  -i, --input FILE     CSV to score; - or absent = stdin\n"
            "      --ignore COLS    comma-separated columns to skip, used only when they are\n"
            "                       not model features (default: %s,\n"
            "                       the non-feature columns of `streamml featurize`;\n"
            "                       --ignore '' skips none)\n"
            "      --ignore-extra   skip every column that is not a model feature\n"
            "      --contribs       XGBoost models: exact TreeSHAP values instead of P(bad),\n"
            "                       those of xgboost's predict(pred_contribs=True): a header\n"
            "                       of the feature names then bias, one row per input row,\n"
            "                       in margin (log-odds) units; a row sums to the margin\n"
            "  -h, --help           this text\n"
            "  -V, --version        versions of streamml and its libraries\n\n"
            "For an ONNX model (FILE.onnx): NumPy tensors in and out,\n"
            "  streamml predict --model M.onnx --input X.npy --output Y.npy\n"
            "  streamml predict --model M.onnx --input X.npy --gradcam K --output CAM.npy\n"
            "(its options: streamml predict --model M.onnx --help).\n\n"
            "Exit codes: 0 ok; 1 a bad row (line and column named; the rows before it\n"
            "are printed) or a write error; 2 usage, unreadable or invalid model or\n"
            "input, header not matching the model.\n",
            CARD_MAX_REASONS, default_ignore);
}

struct predict_args {
    const char *model, *input, *ignore;
    int ignore_extra, contribs;
};

/* EXIT_OK to go on, -1 when --help/--version were served, else EXIT_USAGE. */
static int predict_args(int argc, char **argv, struct predict_args *a)
{
    static const struct option lo[] = {{"model", required_argument, NULL, 'm'},
                                       {"input", required_argument, NULL, 'i'},
                                       {"ignore", required_argument, NULL, 1000},
                                       {"ignore-extra", no_argument, NULL, 1001},
                                       {"contribs", no_argument, NULL, 1002},
                                       {"help", no_argument, NULL, 'h'},
                                       {"version", no_argument, NULL, 'V'},
                                       {NULL, 0, NULL, 0}};
    int opt;

    while ((opt = getopt_long(argc, argv, "m:i:hV", lo, NULL)) != -1) {
        switch (opt) {
        case 'm':
            a->model = optarg;
            break;
        case 'i':
            a->input = optarg;
            break;
        case 1000:
            a->ignore = optarg;
            break;
        case 1001:
            a->ignore_extra = 1;
            break;
        case 1002:
            a->contribs = 1;
            break;
        case 'h':
            predict_usage(stdout);
            return -1;
        case 'V':
            cli_version(stdout);
            return -1;
        default:
            cli_usage_error("streamml predict", lo, argv);
            return EXIT_USAGE;
        }
    }
    if (optind < argc || !a->model) {
        fprintf(stderr, "error: %s (see streamml predict --help)\n",
                a->model ? "unexpected argument" : "--model FILE is required");
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

static void csv_close(struct csv *c, struct plan *p)
{
    if (c->in && c->in != stdin)
        fclose(c->in);
    free(c->rec);
    free(c->line);
    for (int k = 0; p && k < p->ncols; k++)
        free(p->names[k]);
    free(p);
}

int cmd_predict(int argc, char **argv)
{
    struct predict_args a = {NULL, NULL, default_ignore, 0, 0};
    struct model m = {0};
    struct csv c = {.in = stdin, .name = "stdin", .next_line = 1};
    struct plan *p = calloc(1, sizeof(*p));
    struct err e = {0};
    int rc;

    if (cmd_is_onnx(cmd_model_arg(argc, argv))) { /* NumPy in and out: cmd_predict_onnx.c */
        free(p);
        return cmd_predict_onnx(argc, argv);
    }
    rc = predict_args(argc, argv, &a);
    if (rc || !p) {
        free(p);
        return rc < 0 ? EXIT_OK : rc ? rc : EXIT_RUNTIME;
    }
    if (model_open(&m, a.model, &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        free(p);
        return EXIT_USAGE;
    }
    if (a.contribs && m.c) {
        fprintf(stderr, "error: --contribs explains XGBoost models; %s is a scorecard (its "
                        "points are its explanation)\n", a.model);
        model_close(&m);
        free(p);
        return EXIT_USAGE;
    }
    /* A scorecard uses a few of the features by design. */
    p->ignore_extra = a.ignore_extra || m.c != NULL;
    if (a.input && strcmp(a.input, "-") != 0) {
        c.name = a.input;
        c.in = fopen(a.input, "r");
    }
    if (!c.in)
        fprintf(stderr, "error: %s: %s\n", a.input, strerror(errno));
    if (!c.in || read_header(&m, &c, a.ignore, p))
        rc = EXIT_USAGE;
    else
        rc = a.contribs ? explain_rows(&m, &c, p) : score_rows(&m, &c, p);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "error: writing stdout: %s\n", strerror(errno));
        rc = rc ? rc : EXIT_RUNTIME;
    }
    csv_close(&c, p);
    model_close(&m);
    return rc;
}

static void inspect_gbdt(const struct gbdt *g)
{
    double bs = gbdt_base_score(g);

    printf("format: xgboost-json\nbooster: gbtree\nobjective: binary:logistic\n");
    printf("trees: %zu\nmax_depth: %zu\n", gbdt_num_trees(g), gbdt_max_depth(g));
    printf("base_score: %.9g (margin %.9g)\n", bs, log(bs / (1.0 - bs)));
    printf("features: %zu%s\n", gbdt_num_features(g),
           gbdt_feature_name(g, 0) ? "" : " (no feature_names: matched by position)");
    for (size_t i = 0; gbdt_feature_name(g, 0) && i < gbdt_num_features(g); i++)
        printf("  %zu %s\n", i, gbdt_feature_name(g, i));
}

static void inspect_card(const struct card *c)
{
    struct card_scaling s;
    const double *upper, *points;
    double missing, factor;

    card_get_scaling(c, &s);
    factor = s.pdo / log(2.0);
    printf("format: streamml-scorecard\nname: %s\nversion: %s\n", card_name(c), card_version(c));
    printf("scaling: pdo %g, %g points at odds %g:1 (factor %.6g, offset %.6g)\n", s.pdo, s.score0,
           s.odds0, factor, s.score0 - factor * log(s.odds0));
    printf("score: base_points %.6g + feature points, rounded, clipped to %g..%g\n", s.base_points,
           s.min_score, s.max_score);
    printf("features: %zu\n", card_num_features(c));
    for (size_t i = 0; i < card_num_features(c); i++) {
        size_t n = card_feature_bins(c, i, &upper, &points, &missing);
        printf("  %zu %s: missing %.6g", i, card_feature_name(c, i), missing);
        for (size_t b = 0; b < n; b++) {
            if (b + 1 < n)
                printf(" | x < %.6g: %.6g", upper[b], points[b]);
            else
                printf(" | rest: %.6g\n", points[b]);
        }
    }
}

static void model_usage(FILE *out)
{
    fprintf(out, "usage: streamml model inspect FILE\n\n"
                 "Loads a model with the workers' own loader (so every check they make is\n"
                 "made) and prints what it holds: for an XGBoost JSON model the objective,\n"
                 "trees, max depth, base_score and feature names; for a scorecard its\n"
                 "scaling, features and bins; for an ONNX model (*.onnx) its opset,\n"
                 "inputs, outputs, op counts and metadata.\n\n"
                 "Exit codes: 0 ok; 2 usage, or the file is not a valid model (reason on\n"
                 "stderr).\n");
}

int cmd_model(int argc, char **argv)
{
    static const struct option lo[] = {
        {"help", no_argument, NULL, 'h'}, {"version", no_argument, NULL, 'V'}, {NULL, 0, NULL, 0}};
    struct model m = {0};
    struct err e = {0};
    int opt;

    while ((opt = getopt_long(argc, argv, "hV", lo, NULL)) != -1) {
        if (opt == 'h') {
            model_usage(stdout);
            return EXIT_OK;
        }
        if (opt == 'V') {
            cli_version(stdout);
            return EXIT_OK;
        }
        cli_usage_error("streamml model", lo, argv);
        return EXIT_USAGE;
    }
    if (argc - optind != 2 || strcmp(argv[optind], "inspect") != 0) {
        cli_usage_msg("streamml model", "expected: streamml model inspect FILE");
        return EXIT_USAGE;
    }
    if (cmd_is_onnx(argv[optind + 1]))
        return cmd_model_inspect_onnx(argv[optind + 1]);
    if (model_open(&m, argv[optind + 1], &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        return EXIT_USAGE;
    }
    printf("file: %s\n", argv[optind + 1]);
    if (m.g)
        inspect_gbdt(m.g);
    else
        inspect_card(m.c);
    model_close(&m);
    return EXIT_OK;
}
