/* streamml produce / consume: poke at a running system (kcat has no Avro). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "catalog.h"
#include "cli.h"
#include "cmds.h"
#include "codec.h"
#include "kafka.h"
#include "log.h"
#include "out.h"
#include "pipeline.h"
#include "registry.h"

#define LINE_MAX_BYTES (1024 * 1024)

static volatile sig_atomic_t g_run = 1;

static void on_signal(int sig)
{
    (void)sig;
    g_run = 0;
}

static const char *const schema_names[CODEC_NSCHEMAS] = {
    "transaction_event", "transaction_prediction", "dead_letter", "alert_event",
    "image_event", "image_prediction", "label_event",
    "click_event", "click_prediction", "click_outcome", "catalog_item"};

static int schema_by_name(const char *name)
{
    for (int i = 0; i < CODEC_NSCHEMAS; i++)
        if (strcmp(name, schema_names[i]) == 0)
            return i;
    return -1;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct produce_args {
    struct cli cli;
    const char *topic, *input, *registry;
    int schema, raw;
    int32_t schema_id;  /* --schema-id: encode with this writer schema */
    const char *schema_file, *key; /* --schema-file, --key */
    double rate;
    long timeout_ms;    /* --timeout: delivery deadline (message.timeout.ms) */
    long sent, bad;     /* filled by produce_stream */
};

/* -r URL is -X schema.registry.url=URL (kcat's -r). */
static int apply_registry_arg(struct cfg *cf, const char *url)
{
    struct err e = {0};

    if (!url)
        return EXIT_OK;
    if (cfg_set(cf, "schema.registry.url", url, "-r", &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

static void produce_usage(FILE *out)
{
    fprintf(out,
            "usage: streamml produce --topic T [options] < events.jsonl\n\n"
            "Reads JSON objects, one per line, encodes them as Avro (Confluent framing,\n"
            "schema ids from schemas/ids, or from the Schema Registry when\n"
            "schema.registry.url is set: the schema is then registered under\n"
            "<topic>-value) and produces them. Transaction events are keyed by user_id\n"
            "so one user's events stay in one partition.\n\n"
            "  -t, --topic T        destination topic (default: input.topic)\n"
            "  -s, --schema NAME    transaction_event (default) | transaction_prediction |\n"
            "                       dead_letter | alert_event | image_event |\n"
            "                       image_prediction | label_event | click_event (keyed\n"
            "                       by session_id) | click_prediction (image events are\n"
            "                       keyed by patient_id) | catalog_item\n"
            "  -i, --input FILE     read FILE instead of stdin\n"
            "  -r, --registry URL   Schema Registry (= -X schema.registry.url=URL)\n"
            "  --schema-id N        encode with the writer schema of id N as it is (from\n"
            "                       the registry or schemas/ids), keyed by user_id if any\n"
            "  --schema-file FILE   encode with this .avsc (e.g. a feature spec's input:\n"
            "                       its id is derived from the schema, or registered\n"
            "                       under <topic>-value with a registry)\n"
            "  --key FIELD          with --schema-id/--schema-file: key records by this\n"
            "                       string field (default user_id; a spec's entity key)\n"
            "  --raw                send each line's bytes as they are (to test dead letters)\n"
            "  --rate N             at most N records per second\n"
            "  --timeout MS         give up on records not delivered after MS (default\n"
            "                       10000; sets message.timeout.ms unless -X sets it)\n"
            "  -c, --config FILE, -X key=value, -b, --bootstrap HOSTS, --log-level L\n\n"
            "A line that does not encode is reported with its number and skipped;\n"
            "the exit code is then 1. The summary counts what the broker acknowledged;\n"
            "an unreachable broker is one line naming it. Exit codes: 0 ok, 1 bad lines\n"
            "or delivery failure, 2 usage/config.\n");
}

static int produce_parse(int argc, char **argv, struct produce_args *a)
{
    static const struct option lo[] = {{"topic", required_argument, NULL, 't'},
                                       {"schema", required_argument, NULL, 's'},
                                       {"input", required_argument, NULL, 'i'},
                                       {"raw", no_argument, NULL, 1001},
                                       {"rate", required_argument, NULL, 1002},
                                       {"registry", required_argument, NULL, 'r'},
                                       {"schema-id", required_argument, NULL, 1003},
                                       {"timeout", required_argument, NULL, 1004},
                                       {"schema-file", required_argument, NULL, 1005},
                                       {"key", required_argument, NULL, 1006},
                                       CLI_LONGOPTS,
                                       {NULL, 0, NULL, 0}};
    int opt, r;
    char *end;

    while ((opt = getopt_long(argc, argv, CLI_SHORTOPTS "t:s:i:r:", lo, NULL)) != -1) {
        if ((r = cli_opt(&a->cli, opt, optarg)) != 0) {
            if (r < 0)
                return EXIT_USAGE;
            continue;
        }
        switch (opt) {
        case 't': a->topic = optarg; break;
        case 'i': a->input = optarg; break;
        case 'r': a->registry = optarg; break;
        case 1001: a->raw = 1; break;
        case 1005: a->schema_file = optarg; break;
        case 1006: a->key = optarg; break;
        case 1003: {
            long id = strtol(optarg, &end, 10);
            if (*end || end == optarg || id < 1 || id > INT32_MAX) {
                fprintf(stderr, "error: --schema-id %s: expected an id >= 1\n", optarg);
                return EXIT_USAGE;
            }
            a->schema_id = (int32_t)id;
            break;
        }
        case 's':
            if ((a->schema = schema_by_name(optarg)) < 0) {
                fprintf(stderr, "error: --schema %s: unknown schema\n", optarg);
                return EXIT_USAGE;
            }
            break;
        case 1004:
            a->timeout_ms = strtol(optarg, &end, 10);
            if (*end || end == optarg || a->timeout_ms < 1 || a->timeout_ms > 86400000) {
                fprintf(stderr, "error: --timeout %s: expected milliseconds >= 1\n", optarg);
                return EXIT_USAGE;
            }
            break;
        case 1002:
            a->rate = strtod(optarg, &end);
            if (*end || a->rate <= 0) {
                fprintf(stderr, "error: --rate %s: expected a positive number\n", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'h': produce_usage(stdout); return -1;
        case 'V': cli_version(stdout); return -1;
        default: cli_usage_error("streamml produce", lo, argv); return EXIT_USAGE;
        }
    }
    return EXIT_OK;
}

/* Encodes one line into out and returns the key (user id for events). */
static int encode_line(struct codec *cd, const struct produce_args *a, const char *line,
                       size_t len, struct buf *out, char *key, struct err *e)
{
    struct txn_event ev;

    buf_reset(out);
    key[0] = '\0';
    if (a->raw)
        return buf_append(out, line, len) ? err_set(e, ERR_NOMEM, "line too long") : ERR_OK;
    if (a->schema_id)
        return codec_from_json_id(cd, a->schema_id, line, len, a->key ? a->key : "user_id", key,
                                  EV_ID_MAX, out, e);
    if (a->schema == CODEC_IMAGE_EVENT) { /* keyed by patient: one writer per patient */
        struct image_event iev;
        if (codec_from_json(cd, CODEC_IMAGE_EVENT, line, len, out, e) ||
            codec_decode_image_event(cd, out->data, out->len, &iev, e))
            return e->code;
        memcpy(key, iev.patient_id, EV_ID_MAX);
        return ERR_OK;
    }
    if (a->schema == CODEC_CLICK_EVENT) { /* keyed by session: one writer per session */
        struct click_event cev;
        if (codec_from_json(cd, CODEC_CLICK_EVENT, line, len, out, e) ||
            codec_decode_click_event(cd, out->data, out->len, &cev, e))
            return e->code;
        if (strlen(cev.session_id) >= EV_ID_MAX)
            return err_set(e, ERR_DECODE, "session_id longer than %d bytes", EV_ID_MAX - 1);
        memcpy(key, cev.session_id, strlen(cev.session_id) + 1);
        return ERR_OK;
    }
    if (a->schema == CODEC_CATALOG_ITEM) { /* keyed by item id: the topic is compacted */
        struct cat_item *it = malloc(sizeof(*it));
        int rc = !it ? err_set(e, ERR_NOMEM, "out of memory")
                     : cat_parse_json(line, len, it, e) ||
                           codec_from_json(cd, CODEC_CATALOG_ITEM, line, len, out, e);
        if (!rc)
            snprintf(key, EV_ID_MAX, "%lld", (long long)it->id);
        free(it);
        return rc ? e->code : ERR_OK;
    }
    if (a->schema != CODEC_TXN_EVENT)
        return codec_from_json(cd, (enum codec_schema)a->schema, line, len, out, e);
    if (codec_txn_from_json(line, len, &ev, e))
        return e->code;
    memcpy(key, ev.user_id, EV_ID_MAX);
    return codec_encode_txn(cd, &ev, out, e);
}

static void pace(const struct produce_args *a, double t0, long n)
{
    if (a->rate <= 0)
        return;
    double ahead = (double)n / a->rate - (now_s() - t0);
    if (ahead > 0) {
        struct timespec ts = {(time_t)ahead, (long)((ahead - (double)(time_t)ahead) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

static int produce_stream(struct kq *q, struct codec *cd, struct produce_args *a,
                          const char *topic, FILE *in)
{
    char *line = NULL, key[EV_ID_MAX];
    size_t cap = 0;
    ssize_t len;
    long lineno = 0, sent = 0, bad = 0;
    struct buf out;
    struct err e = {0};
    double t0 = now_s();

    buf_init(&out, 0);
    while (g_run && (len = getline(&line, &cap, in)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0)
            continue;
        if (encode_line(cd, a, line, (size_t)len, &out, key, &e) ||
            kq_produce(q, topic, key, strlen(key), out.data, out.len, NULL, &e)) {
            fprintf(stderr, "line %ld: %s\n", lineno, e.msg);
            bad++;
            if (e.code == ERR_FATAL)
                break;
            continue;
        }
        sent++;
        kq_serve(q, 0, &e);
        pace(a, t0, sent);
    }
    free(line);
    buf_free(&out);
    a->sent = sent;
    a->bad = bad;
    return bad ? EXIT_RUNTIME : EXIT_OK;
}

/* bootstrap.servers as configured, for messages. */
static const char *bootstrap(const struct cfg *cf)
{
    size_t n;
    const struct cfg_kv *kv = cfg_kafka(cf, &n);

    for (size_t i = 0; i < n; i++)
        if (strcmp(kv[i].key, "bootstrap.servers") == 0)
            return kv[i].value;
    return "the broker (bootstrap.servers unset)";
}

/* --schema-file: the schema loaded (and registered under <topic>-value
 * with a registry); records are then framed with its id. */
static int add_schema_file(struct codec *cd, const struct cfg *cf, struct produce_args *a,
                           const char *topic, struct err *e)
{
    char *text = NULL, subject[512];
    size_t cap = 0, len;
    FILE *f = fopen(a->schema_file, "r");
    int rc;

    if (!f)
        return err_set(e, ERR_CONFIG, "--schema-file %s: %s", a->schema_file, strerror(errno));
    len = (size_t)getdelim(&text, &cap, '\0', f);
    fclose(f);
    if (len == (size_t)-1) {
        free(text);
        return err_set(e, ERR_CONFIG, "--schema-file %s: empty", a->schema_file);
    }
    rc = codec_add_schema(cd, text, len, a->schema_file, &a->schema_id, e);
    free(text);
    if (rc || !*cfg_str(cf, "schema.registry.url"))
        return rc;
    snprintf(subject, sizeof(subject), "%s-value", topic);
    return codec_register_id(cd, a->schema_id, subject, 1, &a->schema_id, e);
}

int cmd_produce(int argc, char **argv)
{
    struct produce_args a = {.schema = CODEC_TXN_EVENT, .timeout_ms = 10000};
    struct err e = {0};
    struct kq *q = NULL;
    struct codec *cd = NULL;
    struct reg *reg = NULL;
    struct cfg *cf;
    FILE *in = stdin;
    int rc = produce_parse(argc, argv, &a);
    size_t np;
    const char *topic;
    enum codec_schema which;

    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if (!(cf = cli_load(&a.cli, "produce")))
        return EXIT_USAGE;
    if (apply_registry_arg(cf, a.registry)) {
        cfg_free(cf);
        return EXIT_USAGE;
    }
    {
        /* An unreachable broker: the records fail after --timeout, not after
         * librdkafka's default of 5 minutes (unless -X message.timeout.ms). */
        size_t nk;
        const struct cfg_kv *kv = cfg_kafka(cf, &nk);
        char ms[32];
        int given = 0;
        for (size_t i = 0; i < nk; i++)
            given |= strcmp(kv[i].key, "message.timeout.ms") == 0;
        snprintf(ms, sizeof(ms), "%ld", a.timeout_ms);
        if (!given && cfg_set(cf, "kafka.message.timeout.ms", ms, "--timeout", &e)) {
            fprintf(stderr, "error: %s\n", e.msg);
            cfg_free(cf);
            return EXIT_USAGE;
        }
    }
    topic = a.topic ? a.topic : cfg_str(cf, "input.topic");
    which = (enum codec_schema)a.schema;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    struct kq_opts ko = {.props = cfg_kafka(cf, &np), .client_id = "streamml-produce"};
    ko.n_props = np;
    if (a.input && !(in = fopen(a.input, "r"))) {
        fprintf(stderr, "error: %s: %s\n", a.input, strerror(errno));
        rc = EXIT_USAGE;
    } else if (!(cd = pipe_codec_open(cf, &reg, &which, &topic,
                                      a.schema_id || a.raw || a.schema_file ? 0 : 1, &e)) ||
               (a.schema_file && add_schema_file(cd, cf, &a, topic, &e)) || !(q = kq_open(&ko, &e))) {
        fprintf(stderr, "error: %s\n", e.msg);
        rc = e.code == ERR_CONFIG ? EXIT_USAGE : EXIT_RUNTIME;
    } else {
        struct kq_stats ks;
        rc = produce_stream(q, cd, &a, topic, in);
        /* Count what the broker acknowledged, not what was handed to the
         * client: wait for every delivery report (message.timeout.ms bounds
         * it), then one summary line. */
        for (;;) {
            kq_get_stats(q, &ks);
            if (ks.delivered + ks.delivery_failed >= ks.produced || !g_run)
                break;
            kq_serve(q, 100, &e);
        }
        fprintf(stderr, "produced %llu of %ld record(s) to %s (acknowledged by the broker), "
                        "%ld bad line(s)\n",
                (unsigned long long)ks.delivered, a.sent, topic, a.bad);
        if (ks.delivered < ks.produced) {
            fprintf(stderr, "error: %llu record(s) not delivered to %s within %ld ms: is the "
                            "broker reachable? (--timeout)\n",
                    (unsigned long long)(ks.produced - ks.delivered), bootstrap(cf),
                    a.timeout_ms);
            rc = EXIT_RUNTIME;
        }
        err_clear(&e);
        if (kq_close(q, ks.delivered < ks.produced ? 2000 : 30000, &e) && rc == EXIT_OK) {
            fprintf(stderr, "error: %s\n", e.msg);
            rc = EXIT_RUNTIME;
        }
        q = NULL;
    }
    if (in && in != stdin)
        fclose(in);
    kq_close(q, 0, NULL);
    codec_close(cd);
    reg_close(reg);
    cfg_free(cf);
    return rc;
}

struct consume_args {
    struct cli cli;
    const char *topic, *avro_file, *registry;
    int from_beginning, exit_at_end, meta;
    long count;
};

static void consume_usage(FILE *out)
{
    fprintf(out,
            "usage: streamml consume --topic T [options]\n\n"
            "Prints a topic's Avro records (Confluent framing) as JSON lines, decoded\n"
            "with the writer schema named by each record's schema id (from schemas/ids,\n"
            "or from the Schema Registry when schema.registry.url is set). Reads every\n"
            "partition with assign(): never joins or commits to a consumer group.\n\n"
            "  -t, --topic T          topic to read (default: output.topic)\n"
            "  -f, --from-beginning   start at the oldest record (default: only new ones)\n"
            "  -e, --exit             exit when every partition is read to its end\n"
            "  -n, --count N          exit after N records\n"
            "  --meta                 wrap each record: {topic,partition,offset,timestamp,key,value}\n"
            "  --avro-file FILE       write transaction events to an Avro object container\n"
            "                         file instead of JSON lines (input of `streamml replay\n"
            "                         --avro-file` and `featurize -f avro`); other records\n"
            "                         are reported as undecodable\n"
            "  -r, --registry URL     Schema Registry (= -X schema.registry.url=URL)\n"
            "  -c, --config FILE, -X key=value, -b, --bootstrap HOSTS, --log-level L\n\n"
            "Undecodable records are reported on stderr with partition@offset.\n");
}

static int consume_parse(int argc, char **argv, struct consume_args *a)
{
    static const struct option lo[] = {{"topic", required_argument, NULL, 't'},
                                       {"from-beginning", no_argument, NULL, 'f'},
                                       {"exit", no_argument, NULL, 'e'},
                                       {"count", required_argument, NULL, 'n'},
                                       {"meta", no_argument, NULL, 1001},
                                       {"avro-file", required_argument, NULL, 1003},
                                       {"registry", required_argument, NULL, 'r'},
                                       CLI_LONGOPTS,
                                       {NULL, 0, NULL, 0}};
    int opt, r;
    char *end;

    while ((opt = getopt_long(argc, argv, CLI_SHORTOPTS "t:fen:r:", lo, NULL)) != -1) {
        if ((r = cli_opt(&a->cli, opt, optarg)) != 0) {
            if (r < 0)
                return EXIT_USAGE;
            continue;
        }
        switch (opt) {
        case 't': a->topic = optarg; break;
        case 'f': a->from_beginning = 1; break;
        case 'r': a->registry = optarg; break;
        case 'e': a->exit_at_end = 1; break;
        case 1001: a->meta = 1; break;
        case 1003: a->avro_file = optarg; break;
        case 'n':
            a->count = strtol(optarg, &end, 10);
            if (*end || a->count < 1) {
                fprintf(stderr, "error: --count %s: expected a positive integer\n", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'h': consume_usage(stdout); return -1;
        case 'V': cli_version(stdout); return -1;
        default: cli_usage_error("streamml consume", lo, argv); return EXIT_USAGE;
        }
    }
    return EXIT_OK;
}

static void print_record(const struct consume_args *a, const struct kq_msg *m,
                         const struct buf *json)
{
    if (!a->meta) {
        printf("%s\n", (const char *)json->data);
        return;
    }
    printf("{\"topic\":\"%s\",\"partition\":%d,\"offset\":%lld,\"timestamp\":%lld,"
           "\"key\":\"", m->topic, (int)m->partition, (long long)m->offset,
           (long long)m->timestamp_ms);
    for (size_t i = 0; i < m->key_len; i++) {
        unsigned char ch = ((const unsigned char *)m->key)[i];
        if (ch == '"' || ch == '\\' || ch < 0x20 || ch > 0x7e)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    printf("\",\"value\":%s}\n", (const char *)json->data);
}

/* --avro-file: the record as a transaction event appended to the file. */
static int archive_record(struct codec *cd, struct codec_file *f, const struct kq_msg *m,
                          struct err *e)
{
    struct txn_event ev;

    if (codec_decode_txn(cd, m->payload, m->len, &ev, e))
        return e->code;
    return codec_file_write_txn(f, &ev, e);
}

static int consume_loop(struct kq *q, struct codec *cd, const struct consume_args *a,
                        struct codec_file *f)
{
    struct buf json;
    struct err e = {0};
    long n = 0, bad = 0;
    int rc = EXIT_OK;

    buf_init(&json, 16 * 1024 * 1024);
    while (g_run && (!a->count || n < a->count) && !(a->exit_at_end && kq_at_end(q))) {
        struct kq_msg *m;
        if (kq_poll(q, 200, &m, &e)) {
            fprintf(stderr, "error: %s\n", e.msg);
            rc = EXIT_RUNTIME;
            break;
        }
        if (!m)
            continue;
        if (f ? archive_record(cd, f, m, &e) : codec_to_json(cd, m->payload, m->len, &json, &e)) {
            if (e.code == ERR_IO) { /* the archive cannot be written: stop, exit 1 */
                fprintf(stderr, "error: %s\n", e.msg);
                kq_msg_release(m);
                rc = EXIT_RUNTIME;
                break;
            }
            fprintf(stderr, "%s [%d] @ %lld: %s\n", m->topic, (int)m->partition,
                    (long long)m->offset, e.msg);
            bad++;
        } else {
            if (!f)
                print_record(a, m, &json);
            n++;
        }
        kq_msg_release(m);
    }
    buf_free(&json);
    if (out_stdout_check(&e)) { /* a full disk or closed pipe is not a success */
        fprintf(stderr, "error: %s\n", e.msg);
        rc = EXIT_RUNTIME;
    }
    fprintf(stderr, "consumed %ld record(s), %ld undecodable\n", n, bad);
    return rc;
}

int cmd_consume(int argc, char **argv)
{
    struct consume_args a = {0};
    struct err e = {0};
    struct codec *cd = NULL;
    struct codec_file *f = NULL;
    struct reg *reg = NULL;
    struct kq *q = NULL;
    struct cfg *cf;
    int rc = consume_parse(argc, argv, &a);
    size_t np;

    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if (!(cf = cli_load(&a.cli, "consume")))
        return EXIT_USAGE;
    if (apply_registry_arg(cf, a.registry)) {
        cfg_free(cf);
        return EXIT_USAGE;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    const char *topic = a.topic ? a.topic : cfg_str(cf, "output.topic");
    struct kq_opts ko = {.topics = &topic, .n_topics = 1, .assign_all = 1,
                         .from_beginning = a.from_beginning, .client_id = "streamml-consume"};
    ko.props = cfg_kafka(cf, &np);
    ko.n_props = np;
    if (!(cd = pipe_codec_open(cf, &reg, NULL, NULL, 0, &e)) || !(q = kq_open(&ko, &e))) {
        fprintf(stderr, "error: %s\n", e.msg);
        rc = e.code == ERR_CONFIG ? EXIT_USAGE : EXIT_RUNTIME;
    } else if (a.avro_file && !(f = codec_file_open_write(cd, a.avro_file, &e))) {
        fprintf(stderr, "error: %s\n", e.msg);
        rc = EXIT_USAGE;
    } else {
        rc = consume_loop(q, cd, &a, f);
        if (codec_file_close(f, &e)) {
            fprintf(stderr, "error: %s\n", e.msg);
            rc = EXIT_RUNTIME;
        }
    }
    kq_close(q, 0, NULL);
    codec_close(cd);
    reg_close(reg);
    cfg_free(cf);
    return rc;
}
