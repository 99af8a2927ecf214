/* streamml featurize: events -> feature CSV (training data).
 *
 * No feature is computed here: each event goes through feat_txn_validate,
 * feat_txn_build and feat_state_update with its user's state kept in the
 * memory state backend, exactly as the worker does with Redis. Events are
 * processed in event-time order so a training row sees the same history a
 * live prediction would have seen.
 *
 * Object container files (--format avro) are read with codec_file_*, so
 * field mapping and checks stay in codec.c.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cmds.h"
#include "codec.h"
#include "features.h"
#include "featurize_spec.h"
#include "out.h"
#include "registry.h"
#include "replay.h"
#include "state.h"

#define LINE_MAX_BYTES (1024 * 1024)

struct fz_args {
    struct cli cli;
    const char *input, *output, *schemas, *spec;
    const char *topic, *from, *to; /* --topic: a topic range (common/offline/replay.c) */
    int avro, header, skip_invalid;
};

/* An event kept for sorting: seq is its input position (the tie-breaker). */
struct row {
    struct txn_event ev;
    size_t seq;
};

struct rows {
    struct row *v;
    size_t n, cap;
    long invalid;
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: streamml featurize [-i FILE|-] [-f jsonl|avro] [-o FILE|-] [--no-header]\n"
            "                          [--skip-invalid] [--schemas DIR] [--spec SPEC]\n\n"
            "Turns transaction events into the feature CSV used for training, with the\n"
            "code the worker runs: feat_txn_validate, feat_txn_build and feat_state_update\n"
            "(common/streams/features.c), per-user state in the memory state backend. Events are\n"
            "sorted by event time (ties keep input order, a stable sort) and each row's\n"
            "features come from its user's state as it stood before that event.\n\n"
            "  -i, --input FILE     events; - or absent = stdin\n"
            "  -f, --format FMT     jsonl (default): one JSON object per line, as for\n"
            "                       `streamml produce`; avro: an Avro object container file\n"
            "                       written with schemas/transaction_event.avsc\n"
            "  -o, --output FILE    CSV destination; - or absent = stdout\n"
            "      --schemas DIR    schema directory for --format avro\n"
            "                       (default $STREAMML_SCHEMAS_DIR, else schemas)\n"
            "      --spec SPEC      the feature spec (YAML, common/streams/FEATURES.md) instead of\n"
            "                       the built-in models/txn-v1.yaml; the worker takes the\n"
            "                       same file with -X features.spec=SPEC. A spec on\n"
            "                       another schema reads JSON lines keyed by its field\n"
            "                       names and writes KEY,TIME,<its outputs>[,label]; a\n"
            "                       spec naming a Schema Registry subject reads it from\n"
            "                       schema.registry.url (-X or -c) and says its schema id\n"
            "      --no-header      omit the header line\n"
            "      --skip-invalid   exit 0 even if some events were invalid\n"
            "  -t, --topic T        read a topic range instead of a file, exactly as\n"
            "                       `streamml replay` does (assign() only, partitions\n"
            "                       merged by event time, arrival order kept inside a\n"
            "                       partition: the rows equal the live worker's vectors)\n"
            "      --from T, --to T the range: ISO-8601, ms or offset:N (see replay)\n"
            "  -c FILE, -X k=v, -b HOSTS, --log-level L   with --topic: Kafka settings\n"
            "  -h, --help           this text\n"
            "  -V, --version        versions of streamml and its libraries\n\n"
            "Output: header event_id,user_id,event_time,<the %d %s feature names>,label,\n"
            "then one row per valid event in event-time order. event_time is in ms since\n"
            "the epoch; features are printed with %%.9g; a missing feature (NaN) or an\n"
            "unknown label is an empty cell; ids holding a comma or quote are quoted.\n\n"
            "Invalid events (bad JSON, unknown field, failed validation) are reported on\n"
            "stderr as \"line N: reason\" (\"record N\" for avro), counted and skipped.\n"
            "The whole input is held in memory for the sort.\n\n"
            "Exit codes: 0 ok; 1 some events were invalid (unless --skip-invalid), or\n"
            "a read/write failure; 2 usage.\n",
            FEAT_TXN_DIM, feat_txn_version());
}

static int parse_args(int argc, char **argv, struct fz_args *a)
{
    static const struct option lo[] = {{"input", required_argument, NULL, 'i'},
                                       {"format", required_argument, NULL, 'f'},
                                       {"output", required_argument, NULL, 'o'},
                                       {"schemas", required_argument, NULL, 1000},
                                       {"no-header", no_argument, NULL, 1001},
                                       {"skip-invalid", no_argument, NULL, 1002},
                                       {"topic", required_argument, NULL, 't'},
                                       {"from", required_argument, NULL, 1003},
                                       {"to", required_argument, NULL, 1004},
                                       {"spec", required_argument, NULL, 1005},
                                       CLI_LONGOPTS,
                                       {NULL, 0, NULL, 0}};
    int opt, r;

    while ((opt = getopt_long(argc, argv, CLI_SHORTOPTS "i:f:o:t:", lo, NULL)) != -1) {
        if ((r = cli_opt(&a->cli, opt, optarg)) != 0) {
            if (r < 0)
                return EXIT_USAGE;
            continue;
        }
        switch (opt) {
        case 't':
            a->topic = optarg;
            break;
        case 1003:
            a->from = optarg;
            break;
        case 1004:
            a->to = optarg;
            break;
        case 1005:
            a->spec = optarg;
            break;
        case 'i':
            a->input = optarg;
            break;
        case 'o':
            a->output = optarg;
            break;
        case 1000:
            a->schemas = optarg;
            break;
        case 1001:
            a->header = 0;
            break;
        case 1002:
            a->skip_invalid = 1;
            break;
        case 'f':
            if (strcmp(optarg, "jsonl") != 0 && strcmp(optarg, "avro") != 0) {
                fprintf(stderr, "error: --format %s: expected jsonl or avro\n", optarg);
                return EXIT_USAGE;
            }
            a->avro = strcmp(optarg, "avro") == 0;
            break;
        case 'h':
            usage(stdout);
            return -1;
        case 'V':
            cli_version(stdout);
            return -1;
        default:
            cli_usage_error("streamml featurize", lo, argv);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "error: unexpected argument \"%s\" (use --input)\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (a->topic && (a->input || a->avro)) {
        fprintf(stderr, "error: --topic reads a topic: --input and --format apply to files\n");
        return EXIT_USAGE;
    }
    if (!a->topic && (a->from || a->to)) {
        fprintf(stderr, "error: --from and --to need --topic\n");
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

static int rows_push(struct rows *r, const struct txn_event *ev)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 1024;
        struct row *v = realloc(r->v, cap * sizeof(*v));
        if (!v)
            return ERR_NOMEM;
        r->v = v;
        r->cap = cap;
    }
    r->v[r->n].ev = *ev;
    r->v[r->n].seq = r->n;
    r->n++;
    return ERR_OK;
}

/* Validates a decoded event (or reports the decode error) and keeps it. */
static int accept_event(struct rows *r, const struct txn_event *ev, int decode_rc, struct err *e,
                        const char *unit, long where)
{
    if (decode_rc == ERR_OK && feat_txn_validate(ev, e) == ERR_OK)
        return rows_push(r, ev);
    fprintf(stderr, "%s %ld: %s\n", unit, where, e->msg);
    r->invalid++;
    err_clear(e);
    return ERR_OK;
}

static int read_jsonl(FILE *in, struct rows *r)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    struct txn_event ev;
    struct err e = {0};
    int rc = ERR_OK;

    while (rc == ERR_OK && (len = getline(&line, &cap, in)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0)
            continue;
        if (len > LINE_MAX_BYTES) {
            err_set(&e, ERR_DECODE, "line longer than %d bytes", LINE_MAX_BYTES);
            rc = accept_event(r, &ev, ERR_DECODE, &e, "line", lineno);
            continue;
        }
        rc = accept_event(r, &ev, codec_txn_from_json(line, (size_t)len, &ev, &e), &e, "line",
                          lineno);
    }
    free(line);
    if (rc == ERR_OK && ferror(in))
        rc = ERR_IO;
    return rc;
}

/* ---- --format avro ---- */

static int read_avro(const struct fz_args *a, struct rows *r, struct err *e)
{
    struct codec *cd = codec_open(a->schemas, e);
    struct codec_file *f = NULL;
    struct txn_event ev;
    struct err rec_err = {0};
    int rc = ERR_OK, got;

    if (!cd)
        return e->code;
    if (!(f = codec_file_open_read(cd, a->input ? a->input : "-", e))) {
        codec_close(cd);
        return e->code;
    }
    /* A record that does not map is reported and skipped (ERR_DECODE); a
     * corrupt block ends the read (ERR_IO): nothing after it is trusted. */
    while (rc == ERR_OK && (got = codec_file_read_txn(f, &ev, &rec_err)) != 0) {
        if (got == ERR_IO)
            rc = err_set(e, ERR_IO, "%s", rec_err.msg);
        else
            rc = accept_event(r, &ev, got < 0 ? got : ERR_OK, &rec_err, "record",
                              codec_file_records(f));
    }
    codec_file_close(f, NULL);
    codec_close(cd);
    return rc;
}

/* ---- features and CSV ---- */

static int by_event_time(const void *pa, const void *pb)
{
    const struct row *a = pa, *b = pb;

    if (a->ev.event_time_ms != b->ev.event_time_ms)
        return a->ev.event_time_ms < b->ev.event_time_ms ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* The worker's step for one event: read state, build, update, write back
 * (partition 0, offset = position in event-time order). */
static int featurize_one(struct state *st, struct state_blob *blob, const struct txn_event *ev,
                         int64_t pos, float *x, struct err *e)
{
    const char *user = ev->user_id;
    struct feat_state s;
    unsigned char enc[FEAT_STATE_MAX];
    struct state_put put = {.entity = user, .data = enc, .partition = 0, .offset = pos};
    int n, applied;

    if (state_get_many(st, 1, &user, blob, e))
        return e->code;
    if (blob->len == 0)
        feat_state_init(&s);
    else if (feat_state_decode(&s, blob->data, blob->len, e))
        return e->code;
    feat_txn_build(ev, &s, x);
    feat_state_update(&s, ev, &s);
    n = feat_state_encode(&s, enc, sizeof(enc));
    if (n < 0)
        return err_set(e, ERR_NOMEM, "feature state of %s does not fit %d bytes", user,
                       FEAT_STATE_MAX);
    put.len = (size_t)n;
    return state_put_many(st, 1, &put, &applied, e);
}

/* RFC 4180: quote a field holding a comma, quote or line break. */
static void csv_text(FILE *out, const char *s)
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

static void write_header(FILE *out)
{
    const char *const *names = feat_txn_names();

    fputs("event_id,user_id,event_time", out);
    for (int i = 0; i < FEAT_TXN_DIM; i++) {
        fputc(',', out);
        csv_text(out, names[i]);
    }
    fputs(",label\n", out);
}

static void write_row(FILE *out, const struct txn_event *ev, const float *x)
{
    csv_text(out, ev->event_id);
    fputc(',', out);
    csv_text(out, ev->user_id);
    fprintf(out, ",%lld", (long long)ev->event_time_ms);
    for (int i = 0; i < FEAT_TXN_DIM; i++) {
        if (isnan(x[i]))
            fputc(',', out);
        else
            fprintf(out, ",%.9g", (double)x[i]);
    }
    if (ev->label == -1)
        fputs(",\n", out);
    else
        fprintf(out, ",%d\n", ev->label);
}

static int write_csv(struct rows *r, const struct fz_args *a, FILE *out, struct err *e)
{
    struct state *st = state_open_memory();
    struct state_blob *blob = malloc(sizeof(*blob)); /* 4 KiB: off the stack */
    float x[FEAT_TXN_DIM];
    int rc = ERR_OK;

    if (!st || !blob) {
        state_close(st);
        free(blob);
        return err_set(e, ERR_NOMEM, "memory state backend: out of memory");
    }
    qsort(r->v, r->n, sizeof(r->v[0]), by_event_time);
    if (a->header)
        write_header(out);
    /* On a terminal, progress on stderr (311k rows took 4 s in silence). */
    int tty = isatty(STDERR_FILENO);
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (size_t i = 0; i < r->n && rc == ERR_OK; i++) {
        if (tty && (i & 16383) == 0 && i) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            double s = (double)(now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9;
            fprintf(stderr, "\rfeaturize: %zu of %zu rows (%.0f%%), %.0f rows/s ", i, r->n,
                    100.0 * (double)i / (double)r->n, s > 0 ? (double)i / s : 0.0);
        }
        rc = featurize_one(st, blob, &r->v[i].ev, (int64_t)i, x, e);
        if (rc == ERR_OK)
            write_row(out, &r->v[i].ev, x);
        else
            err_wrap(e, "event %s", r->v[i].ev.event_id);
    }
    if (tty && r->n > 16384)
        fputs("\r\033[K", stderr); /* clear the progress line before the summary */
    state_close(st);
    free(blob);
    return rc;
}

/* ---- --topic ---- */

static int open_topic(const struct fz_args *a, const struct cfg *cf, struct codec *cd,
                      struct rp_input **in, struct err *e)
{
    struct rp_bound from, to;
    struct rp_topic *t;
    size_t np;
    const struct cfg_kv *kv = cfg_kafka(cf, &np);

    if (rp_parse_bound(a->from, &from, e))
        return err_wrap(e, "--from");
    if (rp_parse_bound(a->to, &to, e))
        return err_wrap(e, "--to");
    if (!(t = rp_topic_open(kv, np, a->topic, &from, &to, NULL, 0, 0, e)))
        return e->code;
    *in = rp_input_topic(cd, t, e);
    return *in ? ERR_OK : e->code;
}

/* The replay's input and step (no models): rows in merge order. */
static int topic_rows(struct rp_input *in, struct rp_engine *g, FILE *out, size_t *rows,
                      long *invalid, struct err *e)
{
    const struct rp_rec *rec;
    float x[FEAT_TXN_DIM];
    int rc;

    while ((rc = rp_input_next(in, &rec, e)) == 1) {
        if (rec->rc != ERR_OK) {
            fprintf(stderr, "%s [%d] @ %lld: %s\n", rec->source, (int)rec->partition,
                    (long long)rec->offset, rec->err.msg);
            (*invalid)++;
            continue;
        }
        if ((rc = rp_engine_step(g, rec, x, NULL, e)) < 0)
            return rc;
        write_row(out, &rec->ev, x);
        (*rows)++;
    }
    return rc;
}

static int run_topic(struct fz_args *a, FILE *out, int *complete)
{
    struct err e = {0};
    struct cfg *cf = cli_load(&a->cli, "featurize");
    struct codec *cd = NULL;
    struct rp_input *in = NULL;
    struct rp_engine *g = NULL;
    size_t rows = 0;
    long invalid = 0;
    int rc;

    if (!cf)
        return EXIT_USAGE;
    /* State in the engine (kept decoded), as `streamml replay` does. */
    if (!(cd = codec_open(a->schemas, &e)) || open_topic(a, cf, cd, &in, &e) ||
        !(g = rp_engine_open(NULL, NULL, &e))) {
        rc = e.code ? e.code : err_set(&e, ERR_NOMEM, "out of memory");
    } else {
        if (a->header)
            write_header(out);
        rc = topic_rows(in, g, out, &rows, &invalid, &e);
    }
    if (rc == ERR_OK && (fflush(out) || ferror(out)))
        rc = err_set(&e, ERR_IO, "%s: %s", a->output && strcmp(a->output, "-") ? a->output : "stdout", strerror(errno));
    rp_engine_close(g);
    rp_input_close(in);
    codec_close(cd);
    cfg_free(cf);
    if (rc) {
        fprintf(stderr, "error: %s\n", e.msg);
        return rc == ERR_CONFIG ? EXIT_USAGE : EXIT_RUNTIME;
    }
    fprintf(stderr, "featurize: %zu row(s), %ld invalid event(s) skipped\n", rows, invalid);
    *complete = 1;
    return invalid && !a->skip_invalid ? EXIT_RUNTIME : EXIT_OK;
}

static int run(const struct fz_args *a, FILE *in, FILE *out, int *complete)
{
    struct rows r = {0};
    struct err e = {0};
    int rc = a->avro ? read_avro(a, &r, &e) : read_jsonl(in, &r);

    if (rc == ERR_IO && !e.msg[0])
        err_set(&e, ERR_IO, "%s: read error", a->input ? a->input : "stdin");
    if (rc == ERR_NOMEM && !e.msg[0])
        err_set(&e, ERR_NOMEM, "out of memory holding %zu events", r.n);
    if (rc == ERR_OK)
        rc = write_csv(&r, a, out, &e);
    if (rc == ERR_OK && (fflush(out) || ferror(out)))
        rc = err_set(&e, ERR_IO, "%s: %s", a->output && strcmp(a->output, "-") ? a->output : "stdout", strerror(errno));
    free(r.v);
    if (rc) {
        fprintf(stderr, "error: %s\n", e.msg);
        return rc == ERR_CONFIG ? EXIT_USAGE : EXIT_RUNTIME;
    }
    fprintf(stderr, "featurize: %zu row(s), %ld invalid event(s) skipped\n", r.n, r.invalid);
    *complete = 1;
    return r.invalid && !a->skip_invalid ? EXIT_RUNTIME : EXIT_OK;
}

static FILE *open_or_std(const char *path, const char *mode, FILE *std)
{
    if (!path || strcmp(path, "-") == 0)
        return std;
    return fopen(path, mode);
}

static int run_generic(const struct fz_args *a, struct reg *r)
{
    FILE *in;
    struct out *out = NULL;
    struct err e = {0};
    long invalid = 0;
    int rc;

    if (a->topic || a->avro) {
        fprintf(stderr, "error: --spec on a schema other than TransactionEvent reads JSON lines\n");
        return EXIT_USAGE;
    }
    if (!(in = open_or_std(a->input, "r", stdin))) {
        fprintf(stderr, "error: %s: %s\n", a->input, strerror(errno));
        return EXIT_USAGE;
    }
    if (out_open(&out, a->output ? a->output : "-", &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        rc = e.code == ERR_CONFIG ? EXIT_USAGE : EXIT_RUNTIME;
    } else if ((rc = featurize_spec(a->spec, r, in, out_file(out), NULL, a->header, &invalid))) {
        out_abort(out);
    } else if (out_commit(out, &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        rc = EXIT_RUNTIME;
    }
    if (in != stdin)
        fclose(in);
    return rc ? rc : invalid && !a->skip_invalid ? EXIT_RUNTIME : EXIT_OK;
}

/* --spec, with the configuration's registry for a spec naming a subject:
 * -(exit code) when done here (another schema, or an error), 1 to go on
 * with TransactionEvent. */
static int use_spec(struct fz_args *a)
{
    struct err e = {0};
    struct cfg *cf = cli_load(&a->cli, "featurize");
    struct reg *r = cf ? reg_open_cfg(cf, &e) : NULL;
    struct fspec *p = cf && !e.code ? fspec_open_reg(a->spec, r, &e) : NULL;
    int rc = 1;

    if (!p) {
        if (cf)
            fprintf(stderr, "error: --spec: %s\n", e.msg);
        rc = -EXIT_USAGE;
    } else if (strcmp(fspec_record_name(p), "TransactionEvent") != 0) {
        rc = -run_generic(a, r);
    } else if (feat_txn_use_cfg(cf, a->spec, &e)) {
        fprintf(stderr, "error: --spec: %s\n", e.msg);
        rc = -EXIT_USAGE;
    }
    fspec_close(p);
    reg_close(r);
    cfg_free(cf);
    return rc;
}

int cmd_featurize(int argc, char **argv)
{
    const char *env = getenv("STREAMML_SCHEMAS_DIR");
    struct fz_args a = {.header = 1, .schemas = env && *env ? env : "schemas"};
    FILE *in = NULL;
    struct out *out = NULL;
    struct err e = {0};
    int complete = 0, rc = parse_args(argc, argv, &a);

    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if (a.spec) {
        /* A spec on another schema than TransactionEvent: the generic path. */
        if ((rc = use_spec(&a)) <= 0)
            return -rc;
    }
    if (!a.topic && !a.avro && !(in = open_or_std(a.input, "r", stdin))) {
        fprintf(stderr, "error: %s: %s\n", a.input, strerror(errno));
        return EXIT_USAGE;
    }
    /* A file appears whole or not at all; a device or FIFO is written as it
     * is (common/base/out.h). A run that read all its input keeps its rows even
     * when it exits 1 for invalid events, as before. */
    if (out_open(&out, a.output ? a.output : "-", &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        rc = e.code == ERR_CONFIG ? EXIT_USAGE : EXIT_RUNTIME;
    } else {
        rc = a.topic ? run_topic(&a, out_file(out), &complete)
                     : run(&a, in, out_file(out), &complete);
        if (!complete) {
            out_abort(out);
        } else if (out_commit(out, &e)) {
            fprintf(stderr, "error: %s\n", e.msg);
            rc = EXIT_RUNTIME;
        }
    }
    if (in && in != stdin)
        fclose(in);
    return rc;
}
