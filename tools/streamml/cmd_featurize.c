/* streamml featurize: events -> feature CSV (training data).
 *
 * No feature is computed here: each event goes through feat_txn_validate,
 * feat_txn_build and feat_state_update with its user's state kept in the
 * memory state backend, exactly as the worker does with Redis. Events are
 * processed in event-time order so a training row sees the same history a
 * live prediction would have seen.
 *
 * <avro.h> is included only to read object container files (--format avro):
 * each record is re-encoded and decoded by codec_decode_txn, so field
 * mapping and checks stay in codec.c.
 */
#include <avro.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmds.h"
#include "codec.h"
#include "features.h"
#include "state.h"

#define LINE_MAX_BYTES (1024 * 1024)

struct fz_args {
    const char *input, *output, *schemas;
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
            "                          [--skip-invalid] [--schemas DIR]\n\n"
            "Turns transaction events into the feature CSV used for training, with the\n"
            "code the worker runs: feat_txn_validate, feat_txn_build and feat_state_update\n"
            "(common/features.c), per-user state in the memory state backend. Events are\n"
            "sorted by event time (ties keep input order, a stable sort) and each row's\n"
            "features come from its user's state as it stood before that event.\n\n"
            "  -i, --input FILE     events; - or absent = stdin\n"
            "  -f, --format FMT     jsonl (default): one JSON object per line, as for\n"
            "                       `streamml produce`; avro: an Avro object container file\n"
            "                       written with schemas/transaction_event.avsc\n"
            "  -o, --output FILE    CSV destination; - or absent = stdout\n"
            "      --schemas DIR    schema directory for --format avro\n"
            "                       (default $STREAMML_SCHEMAS_DIR, else schemas)\n"
            "      --no-header      omit the header line\n"
            "      --skip-invalid   exit 0 even if some events were invalid\n"
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
            FEAT_TXN_DIM, FEAT_TXN_VERSION);
}

static int parse_args(int argc, char **argv, struct fz_args *a)
{
    static const struct option lo[] = {{"input", required_argument, NULL, 'i'},
                                       {"format", required_argument, NULL, 'f'},
                                       {"output", required_argument, NULL, 'o'},
                                       {"schemas", required_argument, NULL, 1000},
                                       {"no-header", no_argument, NULL, 1001},
                                       {"skip-invalid", no_argument, NULL, 1002},
                                       {"help", no_argument, NULL, 'h'},
                                       {"version", no_argument, NULL, 'V'},
                                       {NULL, 0, NULL, 0}};
    int opt;

    while ((opt = getopt_long(argc, argv, "i:f:o:hV", lo, NULL)) != -1) {
        switch (opt) {
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
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "error: unexpected argument \"%s\" (use --input)\n", argv[optind]);
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

/* The reader schema: records must have been written with exactly it. */
static avro_schema_t load_txn_schema(const char *dir)
{
    char path[4096], *text;
    FILE *f;
    size_t n;
    avro_schema_t s = NULL;

    snprintf(path, sizeof(path), "%s/transaction_event.avsc", dir);
    if (!(f = fopen(path, "rb")))
        return NULL;
    text = malloc(256 * 1024);
    n = text ? fread(text, 1, 256 * 1024, f) : 0;
    fclose(f);
    if (text && avro_schema_from_json_length(text, n, &s))
        s = NULL;
    free(text);
    return s;
}

/* Reusable buffers for re-encoding container-file records. */
struct reencode {
    unsigned char *msg; /* CODEC_MAX_MESSAGE bytes */
    avro_writer_t w;
};

/* One container-file record -> framed Avro -> codec_decode_txn, so the
 * same checks apply as to a Kafka message. */
static int record_to_event(struct codec *cd, struct reencode *re, avro_value_t *v,
                           struct txn_event *ev, struct err *e)
{
    int32_t id = codec_schema_id(cd, CODEC_TXN_EVENT);
    size_t size;

    if (avro_value_sizeof(v, &size))
        return err_set(e, ERR_DECODE, "%s", avro_strerror());
    if (size > CODEC_MAX_MESSAGE - 5)
        return err_set(e, ERR_DECODE, "record of %zu bytes exceeds the %d-byte limit", size,
                       CODEC_MAX_MESSAGE);
    re->msg[0] = 0;
    for (int i = 0; i < 4; i++)
        re->msg[1 + i] = (unsigned char)((uint32_t)id >> (24 - 8 * i));
    avro_writer_memory_set_dest(re->w, (const char *)re->msg + 5, (int64_t)size);
    if (avro_value_write(re->w, v))
        return err_set(e, ERR_DECODE, "%s", avro_strerror());
    return codec_decode_txn(cd, re->msg, size + 5, ev, e);
}

static int read_records(avro_file_reader_t fr, struct codec *cd, struct reencode *re,
                        struct rows *r, struct err *e)
{
    avro_schema_t ws = avro_file_reader_get_writer_schema(fr); /* a new reference */
    avro_value_iface_t *iface = avro_generic_class_from_schema(ws);
    avro_value_t v;
    struct txn_event ev;
    struct err re_err = {0};
    long n = 0;
    int rc = ERR_OK, more = 0;

    avro_schema_decref(ws);
    if (!iface || avro_generic_value_new(iface, &v)) {
        if (iface)
            avro_value_iface_decref(iface);
        return err_set(e, ERR_NOMEM, "avro: %s", avro_strerror());
    }
    while (rc == ERR_OK && (more = avro_file_reader_read_value(fr, &v)) == 0) {
        n++;
        rc = accept_event(r, &ev, record_to_event(cd, re, &v, &ev, &re_err), &re_err, "record", n);
    }
    if (rc == ERR_OK && more != EOF)
        rc = err_set(e, ERR_IO, "record %ld: %s", n + 1, avro_strerror());
    avro_value_decref(&v);
    avro_value_iface_decref(iface);
    return rc;
}

/* Opens the container file and checks it was written with our schema. */
static int open_container(const struct fz_args *a, avro_file_reader_t *fr, struct err *e)
{
    const char *path = a->input && strcmp(a->input, "-") != 0 ? a->input : NULL;
    const char *name = path ? path : "stdin";
    FILE *fp = path ? fopen(path, "rb") : stdin;
    avro_schema_t want, ws;
    int rc = ERR_OK;

    *fr = NULL;
    if (!fp)
        return err_set(e, ERR_CONFIG, "%s: %s", path, strerror(errno));
    if (avro_file_reader_fp(fp, name, fp != stdin, fr)) {
        *fr = NULL;
        return err_set(e, ERR_CONFIG, "%s: not an Avro container file: %s", name, avro_strerror());
    }
    if (!(want = load_txn_schema(a->schemas)))
        return err_set(e, ERR_CONFIG, "%s/transaction_event.avsc: cannot load", a->schemas);
    ws = avro_file_reader_get_writer_schema(*fr);
    if (!avro_schema_equal(ws, want))
        rc = err_set(e, ERR_CONFIG,
                     "%s: written with another schema than %s/"
                     "transaction_event.avsc",
                     name, a->schemas);
    avro_schema_decref(ws);
    avro_schema_decref(want);
    return rc;
}

static int read_avro(const struct fz_args *a, struct rows *r, struct err *e)
{
    struct codec *cd = codec_open(a->schemas, e);
    struct reencode re = {NULL, NULL};
    avro_file_reader_t fr = NULL;
    static const char empty[1];
    int rc;

    if (!cd)
        return e->code;
    re.msg = malloc(CODEC_MAX_MESSAGE);
    re.w = avro_writer_memory(empty, 0);
    if (!re.msg || !re.w)
        rc = err_set(e, ERR_NOMEM, "out of memory");
    else if ((rc = open_container(a, &fr, e)) == ERR_OK)
        rc = read_records(fr, cd, &re, r, e);
    if (fr)
        avro_file_reader_close(fr);
    if (re.w)
        avro_writer_free(re.w);
    free(re.msg);
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
    for (size_t i = 0; i < r->n && rc == ERR_OK; i++) {
        rc = featurize_one(st, blob, &r->v[i].ev, (int64_t)i, x, e);
        if (rc == ERR_OK)
            write_row(out, &r->v[i].ev, x);
        else
            err_wrap(e, "event %s", r->v[i].ev.event_id);
    }
    state_close(st);
    free(blob);
    return rc;
}

static int run(const struct fz_args *a, FILE *in, FILE *out)
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
        rc = err_set(&e, ERR_IO, "%s: %s", a->output ? a->output : "stdout", strerror(errno));
    free(r.v);
    if (rc) {
        fprintf(stderr, "error: %s\n", e.msg);
        return rc == ERR_CONFIG ? EXIT_USAGE : EXIT_RUNTIME;
    }
    fprintf(stderr, "featurize: %zu row(s), %ld invalid event(s) skipped\n", r.n, r.invalid);
    return r.invalid && !a->skip_invalid ? EXIT_RUNTIME : EXIT_OK;
}

static FILE *open_or_std(const char *path, const char *mode, FILE *std)
{
    if (!path || strcmp(path, "-") == 0)
        return std;
    return fopen(path, mode);
}

int cmd_featurize(int argc, char **argv)
{
    const char *env = getenv("STREAMML_SCHEMAS_DIR");
    struct fz_args a = {.header = 1, .schemas = env && *env ? env : "schemas"};
    FILE *in = NULL, *out = NULL;
    int rc = parse_args(argc, argv, &a);

    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if (!a.avro && !(in = open_or_std(a.input, "r", stdin))) {
        fprintf(stderr, "error: %s: %s\n", a.input, strerror(errno));
        return EXIT_USAGE;
    }
    if (!(out = open_or_std(a.output, "w", stdout))) {
        fprintf(stderr, "error: %s: %s\n", a.output, strerror(errno));
        rc = EXIT_USAGE;
    } else {
        rc = run(&a, in, out);
    }
    if (in && in != stdin)
        fclose(in);
    if (out && out != stdout && fclose(out) && rc == EXIT_OK) {
        fprintf(stderr, "error: %s: %s\n", a.output, strerror(errno));
        rc = EXIT_RUNTIME;
    }
    return rc;
}
