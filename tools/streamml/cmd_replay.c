/* streamml replay: a backtest of history through the worker's own code.
 *
 * Input: a topic range (assign() only, bounds by time or offset, stops at
 * the range end) or Avro object container files; k-way merge by event time
 * (common/offline/replay.c). Each record goes through the worker's step (txn_step,
 * txn_score in common/streams/txn.c) with isolated state: the memory backend, or
 * Redis under a run-specific prefix that is deleted afterwards. Output:
 * predictions as JSON lines or CSV, and/or Avro on a backtest topic. The
 * output holds nothing that depends on the clock or the run, so the same
 * input and models give byte-identical files.
 *
 * Two threads: the main one reads, merges and runs the stateful step
 * (features, state) in order; a scoring thread takes batches in the same
 * order, scores (txn_score: pure per event) and writes. One scorer and
 * in-order batches keep the output order, hence the bytes, unchanged.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "catfeed.h"
#include "cli.h"
#include "clickstep.h"
#include "cmds.h"
#include "codec.h"
#include "grader.h"
#include "kafka.h"
#include "log.h"
#include "out.h"
#include "pipeline.h"
#include "registry.h"
#include "replay.h"

#define MAX_FILES 256
#define MAX_PARTS 1024
#define SHOW_INVALID 20
#define BATCH 1024

static volatile sig_atomic_t g_run = 1;

static void on_signal(int sig)
{
    (void)sig;
    g_run = 0;
}

struct rp_args {
    struct cli cli;
    const char *topic, *from, *to, *output, *out_topic, *run_id, *cam_dir;
    const char *files[MAX_FILES];
    size_t nfiles;
    int32_t parts[MAX_PARTS];
    size_t nparts;
    int csv, features, dry_run, skip_invalid, redis, quiet;
    enum rp_stream stream; /* --stream */
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: streamml replay [-t TOPIC [--from T] [--to T] [--partitions LIST]]\n"
            "                       [--avro-file FILE ...] [-o FILE] [--format jsonl|csv]\n"
            "                       [--features] [--output-topic T] [--state memory|redis]\n"
            "                       [--dry-run] [--skip-invalid] [-q] [--stream S]\n"
            "                       [--cam-dir DIR] [common options]\n\n"
            "Replays history through a worker's own step and writes its predictions.\n"
            "  --stream transactions  (default) features with per-user state, gbdt +\n"
            "                       scorecard, decision\n"
            "  --stream clickstream   the clickstream worker's step (common/streams/clickstep.h):\n"
            "                       session states, GRU candidates, exclusion, MMR,\n"
            "                       exploration, in batches of worker.batch_size; JSON\n"
            "                       lines as `streamml consume` prints the worker's\n"
            "                       (latency_us 0). With clickstream.epsilon=0 and no\n"
            "                       co-visitation (--state memory, or clickstream.covisit=0)\n"
            "                       the items, order and scores are the worker's; with\n"
            "                       --state redis the co-visitation/trending counts are\n"
            "                       the run's own (under its prefix). --avro-file: files of\n"
            "                       click events (schemas/click_event.avsc). No CSV, no\n"
            "                       --features. The model's offline quality (Recall@K,\n"
            "                       MRR@K) is `streamml click-eval`.\n"
            "  --stream images        the images worker's step (common/streams/grader.h: load,\n"
            "                       preprocess, images.model, softmax, grade, referable\n"
            "                       flag, CAM grid of referable images) in batches of\n"
            "                       images.batch; JSON lines\n"
            "                       of the worker's prediction record (the fields\n"
            "                       `streamml consume` shows for predictions.images), with\n"
            "                       latency_us 0 and no CAM overlay unless --cam-dir DIR is\n"
            "                       given. --avro-file: files of image events\n"
            "                       (schemas/image_event.avsc). Default topic: images.\n\n"
            "Input (one of):\n"
            "  -t, --topic T        a topic range (default input.topic), read with assign()\n"
            "                       only: never joins a consumer group, never commits\n"
            "      --from T         start: ISO-8601 (2024-03-01T12:00:00Z, 2024-03-01),\n"
            "                       ms since the epoch, or offset:N (per partition);\n"
            "                       times are turned into offsets with offsetsForTimes.\n"
            "                       Default: each partition's oldest record\n"
            "      --to T           end, exclusive, same forms. Default: each partition's\n"
            "                       end when the replay starts (it stops there by itself)\n"
            "      --partitions L   only these partitions (0,3,5)\n"
            "      --avro-file F    an Avro object container file of the stream's events\n"
            "                       (`streamml consume --avro-file`, Kafka Connect sinks);\n"
            "                       repeat for several files (merged like partitions)\n\n"
            "Order: partitions (files) are merged by event time, ties by partition (file\n"
            "index) then offset (record index); inside a partition nothing is re-ordered,\n"
            "so each user's state advances in arrival order exactly as in the live worker\n"
            "and late events follow the worker's late policy (common/streams/FEATURES.md).\n\n"
            "Output:\n"
            "  -o, --output FILE    predictions file; - = stdout (default, unless only\n"
            "                       --output-topic is given). Written as FILE.partial and\n"
            "                       renamed when the replay completes; removed if it fails\n"
            "                       (a device or FIFO is written directly; a symlink to a\n"
            "                       regular file is refused; any write error: exit 1)\n"
            "      --format F       jsonl (default; csv when FILE ends in .csv) or csv\n"
            "      --features       add the %d %s features (%%.9g: exact for float32;\n"
            "                       null / empty when missing)\n"
            "      --output-topic T also produce the predictions (Avro) to topic T\n"
            "      --stream S       transactions (default), clickstream or images\n"
            "      --cam-dir DIR    images: write the CAM overlay PNGs of referable images\n"
            "                       there (default: none)\n\n"
            "State:\n"
            "      --state memory   (default) in-process, gone at exit (about 1.7 KB per\n"
            "                       user)\n"
            "      --state redis    redis.* settings, keys under <redis.prefix>replay:<run>:\n"
            "                       deleted when the replay ends; never production keys\n"
            "      --run-id ID      the <run> part (default: pid and start time)\n\n"
            "      --dry-run        print the resolved offset range of each partition, exit\n"
            "      --skip-invalid   exit 0 even if some records did not decode or validate\n"
            "  -q, --quiet          no progress line even on a terminal\n"
            "  -c, --config FILE, -X key=value, -b, --bootstrap HOSTS, --log-level L\n\n"
            "Progress (events, events/s, ETA) is shown on stderr when it is a terminal;\n"
            "a one-line summary ends every run. Invalid records are reported on stderr\n"
            "(the first %d) with partition and offset, counted and left out.\n"
            "Exit codes: 0 ok; 1 invalid records (unless --skip-invalid) or a read,\n"
            "write or state failure; 2 usage or configuration.\n",
            FEAT_TXN_DIM, feat_txn_version(), SHOW_INVALID);
}

static int parse_parts(const char *s, struct rp_args *a)
{
    char *end;

    while (*s) {
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > INT32_MAX || (*end && *end != ',') || a->nparts == MAX_PARTS)
            return -1;
        a->parts[a->nparts++] = (int32_t)v;
        s = *end ? end + 1 : end;
    }
    return a->nparts ? 0 : -1;
}

static int parse_opt(int opt, const char *arg, struct rp_args *a)
{
    switch (opt) {
    case 't':
        a->topic = arg;
        break;
    case 'o':
        a->output = arg;
        break;
    case 'q':
        a->quiet = 1;
        break;
    case 1001:
        a->from = arg;
        break;
    case 1002:
        a->to = arg;
        break;
    case 1004:
        a->features = 1;
        break;
    case 1005:
        a->out_topic = arg;
        break;
    case 1007:
        a->run_id = arg;
        break;
    case 1008:
        a->dry_run = 1;
        break;
    case 1009:
        a->skip_invalid = 1;
        break;
    case 1010:
        if (a->nfiles == MAX_FILES) {
            fprintf(stderr, "error: more than %d --avro-file\n", MAX_FILES);
            return EXIT_USAGE;
        }
        a->files[a->nfiles++] = arg;
        break;
    case 1003:
        if (parse_parts(arg, a)) {
            fprintf(stderr, "error: --partitions %s: expected a list like 0,3,5\n", arg);
            return EXIT_USAGE;
        }
        break;
    case 1006:
        if (strcmp(arg, "memory") != 0 && strcmp(arg, "redis") != 0) {
            fprintf(stderr, "error: --state %s: expected memory or redis\n", arg);
            return EXIT_USAGE;
        }
        a->redis = strcmp(arg, "redis") == 0;
        break;
    case 1012:
        if (strcmp(arg, "transactions") != 0 && strcmp(arg, "clickstream") != 0 &&
            strcmp(arg, "images") != 0) {
            fprintf(stderr, "error: --stream %s: expected transactions, clickstream or images\n",
                    arg);
            return EXIT_USAGE;
        }
        a->stream = strcmp(arg, "clickstream") == 0 ? RP_CLICKSTREAM
                    : strcmp(arg, "images") == 0    ? RP_IMAGES
                                                    : RP_TRANSACTIONS;
        break;
    case 1013:
        a->cam_dir = arg;
        break;
    case 1011:
        if (strcmp(arg, "jsonl") != 0 && strcmp(arg, "csv") != 0) {
            fprintf(stderr, "error: --format %s: expected jsonl or csv\n", arg);
            return EXIT_USAGE;
        }
        a->csv = strcmp(arg, "csv") == 0 ? 1 : -1;
        break;
    default:
        cli_usage_error("streamml replay", NULL, NULL);
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

static int parse_args(int argc, char **argv, struct rp_args *a)
{
    static const struct option lo[] = {{"topic", required_argument, NULL, 't'},
                                       {"output", required_argument, NULL, 'o'},
                                       {"quiet", no_argument, NULL, 'q'},
                                       {"from", required_argument, NULL, 1001},
                                       {"to", required_argument, NULL, 1002},
                                       {"partitions", required_argument, NULL, 1003},
                                       {"features", no_argument, NULL, 1004},
                                       {"output-topic", required_argument, NULL, 1005},
                                       {"state", required_argument, NULL, 1006},
                                       {"run-id", required_argument, NULL, 1007},
                                       {"dry-run", no_argument, NULL, 1008},
                                       {"skip-invalid", no_argument, NULL, 1009},
                                       {"avro-file", required_argument, NULL, 1010},
                                       {"format", required_argument, NULL, 1011},
                                       {"stream", required_argument, NULL, 1012},
                                       {"cam-dir", required_argument, NULL, 1013},
                                       CLI_LONGOPTS,
                                       {NULL, 0, NULL, 0}};
    int opt, r;

    while ((opt = getopt_long(argc, argv, CLI_SHORTOPTS "t:o:q", lo, NULL)) != -1) {
        if ((r = cli_opt(&a->cli, opt, optarg)) != 0) {
            if (r < 0)
                return EXIT_USAGE;
            continue;
        }
        if (opt == 'h') {
            usage(stdout);
            return -1;
        }
        if (opt == 'V') {
            cli_version(stdout);
            return -1;
        }
        if (opt == '?') {
            cli_usage_error("streamml replay", lo, argv);
            return EXIT_USAGE;
        }
        if ((r = parse_opt(opt, optarg, a)))
            return r;
    }
    if (optind < argc) {
        fprintf(stderr, "error: unexpected argument \"%s\"\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (a->nfiles && (a->topic || a->from || a->to || a->nparts || a->dry_run)) {
        fprintf(stderr, "error: --avro-file replays files: --topic, --from, --to, "
                        "--partitions and --dry-run apply to topics\n");
        return EXIT_USAGE;
    }
    if (a->stream == RP_IMAGES && (a->csv == 1 || a->features || a->redis || a->run_id)) {
        fprintf(stderr, "error: --stream images writes JSON lines of the images worker's "
                        "predictions and keeps no state: --format csv, --features, --state "
                        "and --run-id apply to transactions\n");
        return EXIT_USAGE;
    }
    if (a->cam_dir && a->stream != RP_IMAGES) {
        fprintf(stderr, "error: --cam-dir applies to --stream images\n");
        return EXIT_USAGE;
    }
    if (!a->csv && a->stream != RP_IMAGES) {
        size_t n = a->output ? strlen(a->output) : 0;
        a->csv = n > 4 && strcmp(a->output + n - 4, ".csv") == 0;
    }
    a->csv = a->csv == 1;
    if (a->stream == RP_CLICKSTREAM && (a->csv || a->features)) {
        fprintf(stderr, "error: --stream clickstream writes JSON lines: --format csv and "
                        "--features apply to transactions\n");
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

/* ---- output ---- */

/* One output line, built in memory and written with one fwrite: stdio
 * calls per field were most of a prediction's cost. Fields are bounded
 * (ids 64, names 64, reasons 4 x 48, 37 features), so 8 KiB always fits;
 * put() still refuses to overflow. */
struct line {
    char b[8192];
    size_t n;
};

static void put(struct line *l, const char *s, size_t n)
{
    if (n > sizeof(l->b) - l->n)
        n = sizeof(l->b) - l->n;
    memcpy(l->b + l->n, s, n);
    l->n += n;
}

static void puts_(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

static void putc_(struct line *l, char c)
{
    put(l, &c, 1);
}

static void put_i64(struct line *l, long long v)
{
    char tmp[24];
    int i = 24;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;

    do {
        tmp[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        tmp[--i] = '-';
    put(l, tmp + i, (size_t)(24 - i));
}

/* %.17g: the exact double, so scores compare equal after a round trip. */
static void put_double(struct line *l, double d)
{
    char tmp[40];
    int n = snprintf(tmp, sizeof(tmp), "%.17g", d);

    put(l, tmp, (size_t)n);
}

/* %.9g: exact for a float32 (strtof gives the same bits back). */
static void put_float(struct line *l, float f)
{
    char tmp[40];
    int n = snprintf(tmp, sizeof(tmp), "%.9g", (double)f);

    put(l, tmp, (size_t)n);
}

static void json_str(struct line *l, const char *s)
{
    putc_(l, '"');
    while (*s) {
        size_t run = 0;
        /* Runs of plain characters are copied at once. */
        while (s[run] && s[run] != '"' && s[run] != '\\' && (unsigned char)s[run] >= 0x20)
            run++;
        put(l, s, run);
        s += run;
        if (!*s)
            break;
        if (*s == '"' || *s == '\\') {
            putc_(l, '\\');
            putc_(l, *s);
        } else {
            char tmp[8];
            snprintf(tmp, sizeof(tmp), "\\u%04x", (unsigned char)*s);
            puts_(l, tmp);
        }
        s++;
    }
    putc_(l, '"');
}

static void csv_str(struct line *l, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        puts_(l, s);
        return;
    }
    putc_(l, '"');
    for (; *s; s++) {
        if (*s == '"')
            putc_(l, '"');
        putc_(l, *s);
    }
    putc_(l, '"');
}

static void write_jsonl(struct line *l, const struct txn_prediction *p, const float *x)
{
    puts_(l, "{\"event_id\":");
    json_str(l, p->event_id);
    puts_(l, ",\"user_id\":");
    json_str(l, p->user_id);
    puts_(l, ",\"event_time\":");
    put_i64(l, p->event_time_ms);
    puts_(l, ",\"src_topic\":");
    json_str(l, p->src_topic);
    puts_(l, ",\"src_partition\":");
    put_i64(l, p->src_partition);
    puts_(l, ",\"src_offset\":");
    put_i64(l, p->src_offset);
    puts_(l, ",\"model_name\":");
    json_str(l, p->model_name);
    puts_(l, ",\"model_version\":");
    json_str(l, p->model_version);
    puts_(l, ",\"feature_version\":");
    json_str(l, p->feature_version);
    puts_(l, ",\"probability\":");
    put_double(l, p->probability);
    puts_(l, ",\"score\":");
    put_i64(l, p->score);
    puts_(l, ",\"score_probability\":");
    put_double(l, p->score_probability);
    puts_(l, ",\"decision\":");
    json_str(l, p->decision);
    puts_(l, ",\"reasons\":[");
    for (int k = 0; k < p->n_reasons; k++) {
        if (k)
            putc_(l, ',');
        json_str(l, p->reasons[k]);
    }
    puts_(l, "],\"reason_features\":[");
    for (int k = 0; k < p->n_reasons; k++) {
        if (k)
            putc_(l, ',');
        json_str(l, p->reason_features[k]);
    }
    puts_(l, "],\"reason_values\":[");
    for (int k = 0; k < p->n_reasons; k++) {
        if (k)
            putc_(l, ',');
        put_double(l, p->reason_values[k]);
    }
    puts_(l, "],\"scorecard_reasons\":[");
    for (int k = 0; k < p->n_card_reasons; k++) {
        if (k)
            putc_(l, ',');
        json_str(l, p->card_reasons[k]);
    }
    puts_(l, "],\"feature_hash\":");
    json_str(l, p->feature_hash);
    puts_(l, p->redelivered ? ",\"redelivered\":true" : ",\"redelivered\":false");
    if (x) {
        puts_(l, ",\"features\":[");
        for (size_t i = 0; i < feat_txn_dim(); i++) {
            if (i)
                putc_(l, ',');
            if (isnan(x[i]))
                puts_(l, "null");
            else
                put_float(l, x[i]);
        }
        putc_(l, ']');
    }
    puts_(l, "}\n");
}

static void write_csv_header(FILE *out, int features)
{
    const char *const *names = feat_txn_names();
    struct line l = {.n = 0};

    puts_(&l, "event_id,user_id,event_time,src_topic,src_partition,src_offset,model_name,"
              "model_version,probability,score,score_probability,decision,reasons,feature_hash");
    for (size_t i = 0; features && i < feat_txn_dim(); i++) {
        putc_(&l, ',');
        csv_str(&l, names[i]);
    }
    putc_(&l, '\n');
    fwrite(l.b, 1, l.n, out);
}

static void write_csv(struct line *l, const struct txn_prediction *p, const float *x)
{
    char reasons[PRED_REASONS * (sizeof(p->reasons[0]) + 1) + 1] = "";

    for (int k = 0; k < p->n_reasons; k++) {
        if (k)
            strcat(reasons, ";");
        strcat(reasons, p->reasons[k]);
    }
    csv_str(l, p->event_id);
    putc_(l, ',');
    csv_str(l, p->user_id);
    putc_(l, ',');
    put_i64(l, p->event_time_ms);
    putc_(l, ',');
    csv_str(l, p->src_topic);
    putc_(l, ',');
    put_i64(l, p->src_partition);
    putc_(l, ',');
    put_i64(l, p->src_offset);
    putc_(l, ',');
    csv_str(l, p->model_name);
    putc_(l, ',');
    csv_str(l, p->model_version);
    putc_(l, ',');
    put_double(l, p->probability);
    putc_(l, ',');
    put_i64(l, p->score);
    putc_(l, ',');
    put_double(l, p->score_probability);
    putc_(l, ',');
    puts_(l, p->decision);
    putc_(l, ',');
    csv_str(l, reasons);
    putc_(l, ',');
    puts_(l, p->feature_hash);
    for (size_t i = 0; x && i < feat_txn_dim(); i++) {
        putc_(l, ',');
        if (!isnan(x[i]))
            put_float(l, x[i]);
    }
    putc_(l, '\n');
}

/* ---- the run ---- */

/* A batch handed from the stateful step to the scoring thread. */
struct batch {
    size_t n;
    struct txn_prediction p[BATCH]; /* ids and source filled, scores not */
    float x[BATCH * FSPEC_OUT_MAX]; /* rows of feat_txn_dim(): any spec's width */
};

struct scorer {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct batch *b[2];
    int full[2], stop, started;
    int rc; /* first error of the scoring thread */
    struct err err;
};

struct run {
    const struct rp_args *a;
    struct scorer sco;
    struct cfg *cf;
    struct codec *cd;
    struct reg *reg; /* schema.registry.url: message ids resolved through it */
    struct state *st;
    struct txn_scorer *sc;
    struct rp_engine *eng;
    struct grader *gr;              /* --stream images */
    struct image_prediction *preds; /* a batch of grader_batch() */
    uint64_t graded, referable, ungradable;
    struct rp_input *in;
    const char *topic; /* the topic read (a stream's own default included) */
    struct kq *q; /* --output-topic */
    struct buf enc;
    FILE *out;
    struct out *o; /* common/base/out.h: PATH.partial renamed when complete, or direct */
    struct line line;
    struct state_redis_opts ro;
    char prefix[512];
    int64_t total; /* -1 unknown (files) */
    uint64_t n, invalid, dup, decisions[3];
    int64_t t0_us, last_show_us;
    int progress;
    /* --stream clickstream: the worker's step over batches of cap clicks */
    struct cstep *cs;
    struct cfeed *feed; /* clickstream.catalog; NULL: none */
    struct cov *cov;
    struct click_event *cev;
    struct cstep_click *cin;
    struct click_prediction *cp;
    size_t ccap, cn;
    struct buf json; /* a prediction as JSON (clickstream, images) */
};

static void show_progress(struct run *r, int final)
{
    double secs = (double)(pipe_now_us() - r->t0_us) / 1e6;
    double rate = secs > 0 ? (double)r->n / secs : 0;
    double frac = r->total > 0 ? (double)r->n / (double)r->total : rp_input_fraction(r->in);

    if (!r->progress)
        return;
    if (!final && pipe_now_us() - r->last_show_us < 250000)
        return;
    r->last_show_us = pipe_now_us();
    if (r->total >= 0)
        fprintf(stderr, "\rreplay: %llu/%lld events  %.0f events/s", (unsigned long long)r->n,
                (long long)r->total, rate);
    else
        fprintf(stderr, "\rreplay: %llu events  %.0f events/s", (unsigned long long)r->n, rate);
    /* ETA from events (topics) or bytes read (files). */
    if (frac > 0 && frac <= 1)
        fprintf(stderr, "  ETA %.0f s   ", secs * (1 - frac) / frac);
    else
        fputs("   ", stderr);
    if (final)
        fputc('\n', stderr);
}

static int print_dry_run(const struct rp_topic *t)
{
    const struct rp_part *p;
    size_t n = rp_topic_parts(t, &p);

    printf("partition  low  high  start  end  events\n");
    for (size_t i = 0; i < n; i++)
        printf("%d %lld %lld %lld %lld %lld\n", (int)p[i].partition, (long long)p[i].low,
               (long long)p[i].high, (long long)p[i].start, (long long)p[i].end,
               (long long)(p[i].end - p[i].start));
    printf("total %lld\n", (long long)rp_topic_total(t));
    return EXIT_OK;
}

static int open_state(struct run *r, struct err *e)
{
    const struct cfg *cf = r->cf;
    char run_id[64];

    int clicks = r->a->stream == RP_CLICKSTREAM;

    if (!r->a->redis) {
        if (!clicks)
            return ERR_OK; /* in memory: the engine's own, kept decoded (rp_engine_open) */
        r->st = state_open_memory(); /* the worker's state.backend=memory */
        return r->st ? ERR_OK : err_set(e, ERR_NOMEM, "out of memory");
    }
    if (r->a->run_id)
        snprintf(run_id, sizeof(run_id), "%s", r->a->run_id);
    else
        snprintf(run_id, sizeof(run_id), "%ld-%lld", (long)getpid(), (long long)pipe_wall_ms());
    snprintf(r->prefix, sizeof(r->prefix), "%sreplay:%s:", cfg_str(cf, "redis.prefix"), run_id);
    r->ro = (struct state_redis_opts){
        .host = cfg_str(cf, "redis.host"),
        .port = (int)cfg_int(cf, "redis.port"),
        .password = *cfg_str(cf, "redis.password") ? cfg_str(cf, "redis.password") : NULL,
        .prefix = r->prefix,
        .ttl_s = (int)cfg_int(cf, clicks ? "clickstream.session_ttl_s" : "redis.ttl_s"),
        .timeout_ms = (int)cfg_int(cf, "redis.timeout_ms"),
        .username = cfg_str(cf, "redis.username")};
    if (!(r->st = state_open_redis(&r->ro, e)))
        return e->code;
    return clicks ? cstep_cov_open(cf, &r->ro, &r->cov, e) : ERR_OK;
}

static int open_input(struct run *r, struct err *e)
{
    const struct rp_args *a = r->a;
    struct rp_bound from, to;
    struct rp_topic *t;
    size_t np;
    const struct cfg_kv *kv = cfg_kafka(r->cf, &np);
    const char *topic = a->topic ? a->topic : cfg_str(r->cf, "input.topic");

    /* the clickstream and images workers' default input topics */
    if (!a->topic && a->stream != RP_TRANSACTIONS &&
        strcmp(cfg_origin(r->cf, "input.topic"), "default") == 0)
        topic = a->stream == RP_CLICKSTREAM ? "clickstream" : "images";
    r->topic = topic;
    if (a->nfiles) {
        r->total = -1;
        r->in = rp_input_files_of(r->cd, a->files, a->nfiles, a->stream, e);
        return r->in ? ERR_OK : e->code;
    }
    if (rp_parse_bound(a->from, &from, e))
        return err_wrap(e, "--from");
    if (rp_parse_bound(a->to, &to, e))
        return err_wrap(e, "--to");
    t = rp_topic_open(kv, np, topic, &from, &to, a->parts, a->nparts, a->dry_run, e);
    if (!t)
        return e->code;
    if (a->dry_run) {
        print_dry_run(t);
        rp_topic_close(t);
        return ERR_OK;
    }
    r->total = rp_topic_total(t);
    r->in = rp_input_topic_of(r->cd, t, a->stream, e);
    return r->in ? ERR_OK : e->code;
}

static int open_output(struct run *r, struct err *e)
{
    const struct rp_args *a = r->a;
    size_t np;

    /* A failed or interrupted run never leaves a file that looks whole; a
     * device or FIFO is written as it is (common/base/out.h). */
    if (a->output || !a->out_topic) {
        if (out_open(&r->o, a->output ? a->output : "-", e))
            return e->code;
        r->out = out_file(r->o);
    }
    if (a->out_topic) {
        struct kq_opts ko = {.props = cfg_kafka(r->cf, &np), .client_id = "streamml-replay"};
        ko.n_props = np;
        if (!(r->q = kq_open(&ko, e)))
            return e->code;
    }
    /* Large writes: one system call per MiB, not per 4 KiB. */
    if (r->out && setvbuf(r->out, NULL, _IOFBF, 1 << 20))
        return err_set(e, ERR_NOMEM, "output buffer: out of memory");
    if (r->out && a->csv)
        write_csv_header(r->out, a->features);
    return ERR_OK;
}

/* Another stream's events read as this one's: the run wants its --stream
 * (or click-eval for the click model's quality). Said once, at the first. */
static void hint_stream(const struct rp_rec *rec)
{
    static int said;

    if (said)
        return;
    if (strstr(rec->err.msg, "(click_event.avsc)")) {
        said = 1;
        fprintf(stderr,
                "replay: %s holds click events: replay them with --stream clickstream "
                "(the worker's recommendations), or `streamml click-eval` for the model's "
                "Recall@K/MRR@K\n",
                rec->source);
    } else if (strstr(rec->err.msg, "(image_event.avsc)")) {
        said = 1;
        fprintf(stderr, "replay: %s holds image events: replay them with --stream images\n",
                rec->source);
    }
}

static void report_invalid(struct run *r, const struct rp_rec *rec)
{
    hint_stream(rec);
    if (++r->invalid <= SHOW_INVALID) {
        if (r->progress)
            fputc('\n', stderr);
        fprintf(stderr, "%s [%d] @ %lld: %s\n", rec->source, (int)rec->partition,
                (long long)rec->offset, rec->err.msg);
    }
}

static int emit(struct run *r, const struct txn_prediction *p, const float *x, struct err *e)
{
    if (r->out) {
        struct line *l = &r->line;
        l->n = 0;
        if (r->a->csv)
            write_csv(l, p, r->a->features ? x : NULL);
        else
            write_jsonl(l, p, r->a->features ? x : NULL);
        fwrite(l->b, 1, l->n, r->out);
    }
    if (r->q) {
        buf_reset(&r->enc);
        if (codec_encode_prediction(r->cd, p, &r->enc, e) ||
            kq_produce(r->q, r->a->out_topic, p->user_id, strlen(p->user_id), r->enc.data,
                       r->enc.len, NULL, e))
            return e->code;
        if (kq_serve(r->q, 0, e) == ERR_FATAL)
            return e->code;
    }
    return ERR_OK;
}

/* ---- scoring thread ---- */

static int score_batch(struct run *r, struct batch *b, struct err *e)
{
    if (txn_score_batch(r->sc, b->x, b->n, b->p, r->decisions))
        return err_set(e, ERR_NOMEM, "out of memory scoring a batch of %zu", b->n);
    for (size_t i = 0; i < b->n; i++)
        if (emit(r, &b->p[i], b->x + i * feat_txn_dim(), e))
            return e->code;
    return ERR_OK;
}

static void *scorer_main(void *arg)
{
    struct run *r = arg;
    struct scorer *s = &r->sco;
    int k = 0;

    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->full[k] && !s->stop)
            pthread_cond_wait(&s->cv, &s->mu);
        if (!s->full[k])
            break; /* stopped and drained */
        pthread_mutex_unlock(&s->mu);
        int rc = s->rc ? s->rc : score_batch(r, s->b[k], &s->err);
        pthread_mutex_lock(&s->mu);
        if (rc && !s->rc)
            s->rc = rc; /* later batches are dropped: the run fails */
        s->full[k] = 0;
        pthread_cond_broadcast(&s->cv);
        k ^= 1;
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static int scorer_start(struct run *r, struct err *e)
{
    struct scorer *s = &r->sco;

    s->b[0] = calloc(1, sizeof(struct batch));
    s->b[1] = calloc(1, sizeof(struct batch));
    if (!s->b[0] || !s->b[1])
        return err_set(e, ERR_NOMEM, "out of memory");
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (pthread_create(&s->th, NULL, scorer_main, r))
        return err_set(e, ERR_NOMEM, "cannot start the scoring thread");
    s->started = 1;
    return ERR_OK;
}

/* Hands batch k over; waits while the scorer still holds the other one. */
static int scorer_hand(struct run *r, int k)
{
    struct scorer *s = &r->sco;
    int rc;

    pthread_mutex_lock(&s->mu);
    s->full[k] = 1;
    pthread_cond_broadcast(&s->cv);
    while (s->full[k ^ 1])
        pthread_cond_wait(&s->cv, &s->mu);
    rc = s->rc;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int scorer_stop(struct run *r, struct err *e)
{
    struct scorer *s = &r->sco;

    if (s->started) {
        pthread_mutex_lock(&s->mu);
        s->stop = 1;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->th, NULL);
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        s->started = 0;
    }
    free(s->b[0]);
    free(s->b[1]);
    s->b[0] = s->b[1] = NULL;
    if (s->rc)
        *e = s->err;
    return s->rc;
}

/* ---- the stateful step, in merge order ---- */

static int replay_loop(struct run *r, struct err *e)
{
    const struct rp_rec *rec;
    struct batch *b;
    int rc, k = 0;

    if ((rc = scorer_start(r, e)))
        return rc;
    b = r->sco.b[0];
    while (g_run && (rc = rp_input_next(r->in, &rec, e)) == 1) {
        if (rec->rc != ERR_OK) {
            report_invalid(r, rec);
            continue;
        }
        if ((rc = rp_engine_step(r->eng, rec, b->x + b->n * feat_txn_dim(), NULL, e)) < 0)
            break;
        txn_prediction_init(&b->p[b->n], &rec->ev, rec->source, rec->partition, rec->offset);
        b->p[b->n].redelivered = rc == 0;
        r->dup += rc == 0;
        r->n++;
        if (++b->n == BATCH) {
            if (scorer_hand(r, k))
                break;
            k ^= 1;
            b = r->sco.b[k];
            b->n = 0;
        }
        if ((r->n & 1023) == 0)
            show_progress(r, 0);
    }
    if (rc >= 0 && b->n)
        scorer_hand(r, k);
    if (scorer_stop(r, e))
        return e->code;
    if (rc < 0)
        return rc;
    if (!g_run)
        return err_set(e, ERR_IO, "interrupted after %llu events: output incomplete",
                       (unsigned long long)r->n);
    return ERR_OK;
}

/* ---- --stream clickstream ---- */

/* One prediction as the worker's record: Avro to --output-topic, and the
 * same bytes as JSON (codec_to_json, what `streamml consume` prints). */
static int emit_click(struct run *r, const struct click_prediction *p, struct err *e)
{
    buf_reset(&r->enc);
    if (codec_encode_click_prediction(r->cd, p, &r->enc, e))
        return e->code;
    if (r->out) {
        if (codec_to_json(r->cd, r->enc.data, r->enc.len, &r->json, e))
            return e->code;
        fwrite(r->json.data, 1, r->json.len, r->out);
        fputc('\n', r->out);
    }
    if (r->q && (kq_produce(r->q, r->a->out_topic, p->session_id, strlen(p->session_id),
                            r->enc.data, r->enc.len, NULL, e) ||
                 kq_serve(r->q, 0, e) == ERR_FATAL))
        return e->code;
    return ERR_OK;
}

/* The batch of clicks through the worker's step. A state or count store
 * that fails makes the run incomplete: an error, not a degraded answer. */
static int click_batch(struct run *r, struct err *e)
{
    const struct cstep_counts *k = cstep_counts(r->cs);
    uint64_t fails = k->state_errors + k->cov_errors;

    if (!r->cn)
        return ERR_OK;
    if (cstep_batch(r->cs, r->cn, r->cin, r->cp))
        return err_set(e, ERR_IO, "session states not read (state backend): run incomplete");
    for (size_t i = 0; i < r->cn; i++)
        if (emit_click(r, &r->cp[i], e))
            return e->code;
    cstep_store(r->cs);
    if (k->state_errors + k->cov_errors != fails)
        return err_set(e, ERR_IO,
                       "session states or co-visitation counts not written: run "
                       "incomplete");
    r->cn = 0;
    return ERR_OK;
}

static int click_open(struct run *r, struct err *e)
{
    r->ccap = (size_t)cfg_int(r->cf, "worker.batch_size");
    r->cev = calloc(r->ccap, sizeof(*r->cev));
    r->cin = calloc(r->ccap, sizeof(*r->cin));
    r->cp = calloc(r->ccap, sizeof(*r->cp));
    if (!r->cev || !r->cin || !r->cp)
        return err_set(e, ERR_NOMEM, "out of memory for a batch of %zu", r->ccap);
    if (cstep_open(&r->cs, r->cf, r->ccap, r->st, r->cov, e))
        return e->code;
    /* the catalogue of clickstream.catalog (not its topic: a replay is repeatable) */
    if (cfeed_open(&r->feed, r->cf, NULL, NULL,
                   cstep_catalog_ids(r->cf, sess_model_items(cstep_model(r->cs))),
                   sess_model_items(cstep_model(r->cs)), e))
        return e->code;
    return cstep_set_catalog(r->cs, cfeed_catalog(r->feed), e);
}

static void click_close(struct run *r)
{
    cstep_close(r->cs);
    cfeed_close(r->feed);
    cov_close(r->cov);
    free(r->cev);
    free(r->cin);
    free(r->cp);
}

static int click_loop(struct run *r, struct err *e)
{
    const struct rp_rec *rec;
    int rc = 0; /* g_run may already be 0 */

    while (g_run && (rc = rp_input_next(r->in, &rec, e)) == 1) {
        if (rec->rc != ERR_OK) {
            report_invalid(r, rec);
            continue;
        }
        /* the record is valid until the next call: the batch keeps a copy */
        r->cev[r->cn] = rec->click;
        r->cin[r->cn] =
            (struct cstep_click){&r->cev[r->cn], rec->source, rec->partition, rec->offset, 0};
        r->n++;
        if (++r->cn == r->ccap && click_batch(r, e))
            return e->code;
        if ((r->n & 1023) == 0)
            show_progress(r, 0);
    }
    if (rc < 0)
        return rc;
    if (click_batch(r, e))
        return e->code;
    if (!g_run)
        return err_set(e, ERR_IO, "interrupted after %llu events: output incomplete",
                       (unsigned long long)r->n);
    return ERR_OK;
}

/* ---- images: the images worker's step (common/streams/grader.h) in batches ---- */

/* The prediction record as the worker publishes it, then as JSON (the
 * fields `streamml consume` shows for predictions.images) and/or Avro on
 * --output-topic. */
static int emit_image(struct run *r, const struct image_prediction *p, struct err *e)
{
    buf_reset(&r->enc);
    if (codec_encode_image_prediction(r->cd, p, &r->enc, e))
        return e->code;
    if (r->out) {
        buf_reset(&r->json);
        if (codec_to_json(r->cd, r->enc.data, r->enc.len, &r->json, e))
            return e->code;
        fwrite(r->json.data, 1, strlen((const char *)r->json.data), r->out);
        fputc('\n', r->out);
    }
    if (r->q && (kq_produce(r->q, r->a->out_topic, p->patient_id, strlen(p->patient_id),
                            r->enc.data, r->enc.len, NULL, e) ||
                 kq_serve(r->q, 0, e) == ERR_FATAL))
        return e->code;
    return ERR_OK;
}

static int grade_batch(struct run *r, size_t n, struct err *e)
{
    grader_run(r->gr, r->preds, n);
    for (size_t i = 0; i < n; i++) {
        const struct image_prediction *p = &r->preds[i];
        r->graded += p->ok;
        r->referable += p->ok && p->referable;
        r->ungradable += !p->ok;
        if (emit_image(r, p, e))
            return e->code;
    }
    grader_begin(r->gr);
    return ERR_OK;
}

static int replay_images(struct run *r, struct err *e)
{
    const struct rp_rec *rec;
    size_t n = 0, cap = grader_batch(r->gr);
    int rc = 0;

    grader_begin(r->gr);
    while (g_run && (rc = rp_input_next(r->in, &rec, e)) == 1) {
        if (rec->rc != ERR_OK) {
            report_invalid(r, rec);
            continue;
        }
        grader_add(r->gr, n, &rec->img, rec->source, rec->partition, rec->offset, &r->preds[n]);
        r->n++;
        if (++n == cap) {
            if (grade_batch(r, n, e))
                return e->code;
            n = 0;
        }
        show_progress(r, 0);
    }
    if (rc < 0)
        return rc;
    if (n && grade_batch(r, n, e))
        return e->code;
    if (!g_run)
        return err_set(e, ERR_IO, "interrupted after %llu events: output incomplete",
                       (unsigned long long)r->n);
    return ERR_OK;
}

static int open_grader(struct run *r, struct err *e)
{
    struct grader_opts o;

    grader_opts_from_cfg(r->cf, &o);
    o.cam_dir = r->a->cam_dir; /* a replay writes no overlay unless asked */
    if (!(r->gr = grader_open(&o, e)))
        return e->code;
    if (!(r->preds = calloc(grader_batch(r->gr), sizeof(*r->preds))))
        return err_set(e, ERR_NOMEM, "out of memory");
    return ERR_OK;
}

static void summary_images(struct run *r)
{
    double secs = (double)(pipe_now_us() - r->t0_us) / 1e6;

    show_progress(r, 1);
    fprintf(stderr,
            "replay: %llu image predictions in %.2f s (%.1f images/s): graded %llu (referable "
            "%llu), ungradable %llu; %llu invalid\n",
            (unsigned long long)r->n, secs, secs > 0 ? (double)r->n / secs : 0,
            (unsigned long long)r->graded, (unsigned long long)r->referable,
            (unsigned long long)r->ungradable, (unsigned long long)r->invalid);
}

static void summary(struct run *r)
{
    double secs = (double)(pipe_now_us() - r->t0_us) / 1e6;

    show_progress(r, 1);
    if (r->cs) {
        const struct cstep_counts *k = cstep_counts(r->cs);
        fprintf(stderr,
                "replay: %llu click predictions in %.2f s (%.0f events/s): %llu cold start, "
                "%llu unknown item, %llu redelivered, %llu explored; %llu invalid%s%s\n",
                (unsigned long long)r->n, secs, secs > 0 ? (double)r->n / secs : 0,
                (unsigned long long)k->cold, (unsigned long long)k->unknown,
                (unsigned long long)k->redelivered, (unsigned long long)k->explored,
                (unsigned long long)r->invalid, r->a->redis ? "; state prefix " : "",
                r->a->redis ? r->prefix : "");
        return;
    }
    fprintf(stderr,
            "replay: %llu predictions in %.2f s (%.0f events/s): approve %llu, review %llu, "
            "decline %llu; %llu invalid, %llu duplicates%s%s\n",
            (unsigned long long)r->n, secs, secs > 0 ? (double)r->n / secs : 0,
            (unsigned long long)r->decisions[0], (unsigned long long)r->decisions[1],
            (unsigned long long)r->decisions[2], (unsigned long long)r->invalid,
            (unsigned long long)r->dup, r->a->redis ? "; state prefix " : "",
            r->a->redis ? r->prefix : "");
}

/* With schema.registry.url, records framed with a registry's ids (a spec
 * naming input.subject, or any producer using the registry) decode as the
 * worker decodes them. */
static int open_codec(struct run *r, struct err *e)
{
    if (!(r->cd = codec_open(cfg_str(r->cf, "schemas.dir"), e)))
        return e->code;
    r->reg = reg_open_cfg(r->cf, e);
    if (!r->reg)
        return e->code;
    codec_use_registry(r->cd, r->reg);
    return ERR_OK;
}

static int run_open(struct run *r, struct err *e)
{
    /* The spec first: one on its own record decides how the input decodes. */
    if ((r->a->stream == RP_TRANSACTIONS && feat_txn_use_cfg(r->cf, cfg_str(r->cf, "features.spec"), e)) ||
        open_codec(r, e) || open_input(r, e))
        return e->code;
    if (r->a->dry_run)
        return ERR_OK;
    if (r->a->stream == RP_CLICKSTREAM)
        return open_state(r, e) || click_open(r, e) || open_output(r, e) ? e->code : ERR_OK;
    if (r->a->stream == RP_IMAGES)
        return open_grader(r, e) || open_output(r, e) ? e->code : ERR_OK;
    if (!(r->sc = txn_scorer_open(r->cf, e)) || open_state(r, e) ||
        !(r->eng = rp_engine_open(r->st, NULL, e)) || open_output(r, e))
        return e->code;
    return ERR_OK;
}

static int run_close(struct run *r, int rc, struct err *e)
{
    struct err ce = {0};
    long dropped = 0;

    rp_input_close(r->in);
    r->in = NULL;
    if (r->q && kq_close(r->q, 30000, &ce) && rc == ERR_OK)
        rc = err_set(e, ce.code, "--output-topic: %s", ce.msg);
    if (r->o && rc != ERR_OK) {
        if (out_abort(r->o))
            fprintf(stderr, "replay: incomplete output removed (%s.partial)\n", r->a->output);
    } else if (r->o) {
        rc = out_commit(r->o, e);
    }
    r->o = NULL;
    r->out = NULL;
    rp_engine_close(r->eng);
    click_close(r);
    state_close(r->st);
    if (r->a->redis && r->st) { /* the run's keys only: the prefix is its own */
        if (rp_redis_drop_prefix(&r->ro, &dropped, &ce))
            fprintf(stderr, "warning: keys under %s not deleted: %s\n", r->prefix, ce.msg);
        else
            log_info("deleted %ld Redis key(s) under %s", dropped, r->prefix);
    }
    txn_scorer_close(r->sc);
    grader_close(r->gr);
    free(r->preds);
    codec_close(r->cd);
    reg_close(r->reg);
    buf_free(&r->enc);
    buf_free(&r->json);
    return rc;
}

int cmd_replay(int argc, char **argv)
{
    struct rp_args a = {0};
    struct run r = {0};
    struct err e = {0};
    int rc = parse_args(argc, argv, &a);

    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if (!(r.cf = cli_load(&a.cli, "replay")))
        return EXIT_USAGE;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    r.a = &a;
    buf_init(&r.enc, 0);
    buf_init(&r.json, 0);
    r.progress = !a.quiet && isatty(STDERR_FILENO);
    r.t0_us = pipe_now_us();
    rc = run_open(&r, &e);
    if (rc == ERR_OK && !a.dry_run)
        rc = a.stream == RP_CLICKSTREAM ? click_loop(&r, &e)
             : a.stream == RP_IMAGES    ? replay_images(&r, &e)
                                        : replay_loop(&r, &e);
    /* Nothing read from a topic is a misspelt name, an empty topic or an
     * empty range: no backtest, so no success (and no empty output file). */
    if (rc == ERR_OK && !a.dry_run && !a.nfiles && g_run && r.n + r.invalid == 0)
        rc = err_set(&e, ERR_NOTFOUND,
                     "no events read from topic \"%s\"%s: a misspelt topic name, an empty "
                     "topic or an empty range (see streamml replay --dry-run)",
                     r.topic ? r.topic : "?",
                     a.from || a.to ? " in the range given" : "");
    if (!a.dry_run && r.cs)
        summary(&r); /* before run_close frees the step's counts */
    rc = run_close(&r, rc, &e);
    if (!a.dry_run && r.eng)
        summary(&r);
    else if (!a.dry_run && r.gr)
        summary_images(&r);
    cfg_free(r.cf);
    if (rc) {
        fprintf(stderr, "error: %s\n", e.msg);
        return rc == ERR_CONFIG ? EXIT_USAGE : EXIT_RUNTIME;
    }
    return r.invalid && !a.skip_invalid ? EXIT_RUNTIME : EXIT_OK;
}
