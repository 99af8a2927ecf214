/* streamml alerts: follow the monitoring topic.
 *
 * Each AlertEvent (schemas/alert_event.avsc) becomes one readable line
 * (coloured on a terminal), or its JSON with --json; --exec CMD runs CMD
 * once per alert with the alert's JSON on its stdin (a curl webhook, a pager,
 * a chat hook). Records are decoded by the codec (writer schema by id), then
 * read as JSON with jansson.
 */
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cmds.h"
#include "codec.h"
#include "kafka.h"
#include "metrics.h"
#include "monitor.h"
#include "suggest.h"

static volatile sig_atomic_t g_run = 1;

static void on_signal(int sig)
{
    (void)sig;
    g_run = 0;
}

struct alerts_args {
    struct cli cli;
    const char *topic, *severity, *worker, *type, *exec, *group;
    int json, from_beginning, exit_at_end, color;
    long count;
};

static void alerts_usage(FILE *out)
{
    fprintf(out,
            "usage: streamml alerts [options]\n\n"
            "Follows the monitoring topic (monitor.topic, default \"monitoring\") and prints\n"
            "one line per alert: time, severity, worker, model, check, feature, observed\n"
            "value against its threshold, and the transition (OK -> WARNING, ... ,\n"
            "RESOLVED). Colour when stdout is a terminal (not with NO_COLOR set).\n\n"
            "  -t, --topic T          topic (default: monitor.topic)\n"
            "      --severity LIST    only these severities: INFO (= RESOLVED), WARNING,\n"
            "                         CRITICAL, comma-separated\n"
            "      --worker LIST      only alerts from these workers\n"
            "      --type LIST        only these checks: data_drift, missing_rate,\n"
            "                         score_psi, score_mean, latency_p99, error_rate, auc,\n"
            "                         fairness, model_reload\n"
            "      --json             print each alert as one JSON object per line\n"
            "      --exec CMD         run CMD (with /bin/sh) for each alert, its JSON on\n"
            "                         stdin, e.g. --exec 'curl -s -d @- http://hook'\n"
            "  -g, --group G          join consumer group G and commit past each alert\n"
            "                         once handled (default: read with assign(), never\n"
            "                         commit)\n"
            "  -f, --from-beginning   start at the oldest alert (default: new ones only;\n"
            "                         with -g: -X auto.offset.reset=earliest instead)\n"
            "  -e, --exit             exit when the topic is read to its end (not with -g)\n"
            "  -n, --count N          exit after N alerts shown\n"
            "  -c, --config FILE, -X key=value, -b, --bootstrap HOSTS, --log-level L\n\n"
            "With metrics.port set (-X metrics.port=9464) it serves /healthz, /readyz\n"
            "and /metrics (streamml_alerts_total, process_*) as the workers do.\n\n"
            "Exit codes: 0 ok; 1 Kafka failed, or a --exec command failed (each failure\n"
            "is reported on stderr; later alerts are still handled); 2 usage.\n");
}

static int check_list(const char *opt, const char *list, const char *const *known)
{
    for (const char *p = list; *p;) {
        size_t k = strcspn(p, ","), i = 0;
        while (known[i] && !(strlen(known[i]) == k && strncmp(known[i], p, k) == 0))
            i++;
        if (!known[i]) {
            char word[64];
            const char *best;
            snprintf(word, sizeof(word), "%.*s", (int)k, p);
            best = sug_closest(word, known, i);
            fprintf(stderr, "error: %s: unknown value \"%s\"%s%s%s\n", opt, word,
                    best ? "; did you mean " : "", best ? best : "", best ? "?" : "");
            return EXIT_USAGE;
        }
        p += k + (p[k] == ',');
    }
    return EXIT_OK;
}

static int alerts_opt(struct alerts_args *a, int opt, const char *arg)
{
    static const char *const sev[] = {"INFO", "WARNING", "CRITICAL", NULL};
    /* Every window check the monitor names, and the events outside a window
     * (mon_publish_event: a model reloaded or refused). */
    static const char *types[MON_NCHECKS + 2];
    char *end;

    for (int c = 0; c < MON_NCHECKS; c++)
        types[c] = mon_check_name((enum mon_check)c);
    types[MON_NCHECKS] = "model_reload";

    switch (opt) {
    case 't': a->topic = arg; return EXIT_OK;
    case 'g': a->group = arg; return EXIT_OK;
    case 'f': a->from_beginning = 1; return EXIT_OK;
    case 'e': a->exit_at_end = 1; return EXIT_OK;
    case 1001: a->severity = arg; return check_list("--severity", arg, sev);
    case 1002: a->worker = arg; return EXIT_OK;
    case 1003: a->type = arg; return check_list("--type", arg, types);
    case 1004: a->json = 1; return EXIT_OK;
    case 1005: a->exec = arg; return EXIT_OK;
    case 'n':
        a->count = strtol(arg, &end, 10);
        if (*end || a->count < 1) {
            fprintf(stderr, "error: --count %s: expected a positive integer\n", arg);
            return EXIT_USAGE;
        }
        return EXIT_OK;
    case 'h': alerts_usage(stdout); return -1;
    case 'V': cli_version(stdout); return -1;
    default: cli_usage_error("streamml alerts", NULL, NULL); return EXIT_USAGE;
    }
}

static int alerts_parse(int argc, char **argv, struct alerts_args *a)
{
    static const struct option lo[] = {
        {"topic", required_argument, NULL, 't'},     {"group", required_argument, NULL, 'g'},
        {"from-beginning", no_argument, NULL, 'f'},  {"exit", no_argument, NULL, 'e'},
        {"count", required_argument, NULL, 'n'},     {"severity", required_argument, NULL, 1001},
        {"worker", required_argument, NULL, 1002},   {"type", required_argument, NULL, 1003},
        {"json", no_argument, NULL, 1004},           {"exec", required_argument, NULL, 1005},
        CLI_LONGOPTS,                                {NULL, 0, NULL, 0}};
    int opt, r;

    while ((opt = getopt_long(argc, argv, CLI_SHORTOPTS "t:g:fen:", lo, NULL)) != -1) {
        if ((r = cli_opt(&a->cli, opt, optarg)) != 0) {
            if (r < 0)
                return EXIT_USAGE;
            continue;
        }
        if (opt == '?') {
            cli_usage_error("streamml alerts", lo, argv);
            return EXIT_USAGE;
        }
        if ((r = alerts_opt(a, opt, optarg)) != EXIT_OK)
            return r;
    }
    if (optind < argc) {
        fprintf(stderr, "error: unexpected argument \"%s\"\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (a->group && a->exit_at_end) {
        fprintf(stderr, "error: --exit needs assign() reading: not with --group\n");
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

/* ---- one alert ---- */

static int in_list(const char *list, const char *s)
{
    size_t n = strlen(s);

    if (!list)
        return 1;
    for (const char *p = list; *p;) {
        size_t k = strcspn(p, ",");
        if (k == n && strncmp(p, s, n) == 0)
            return 1;
        p += k + (p[k] == ',');
    }
    return 0;
}

static const char *str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static int wanted(const struct alerts_args *a, json_t *o)
{
    return in_list(a->severity, str(o, "severity")) && in_list(a->worker, str(o, "worker")) &&
           in_list(a->type, str(o, "alert_type"));
}

static void print_line(const struct alerts_args *a, json_t *o)
{
    json_int_t ms = json_integer_value(json_object_get(o, "emitted_at"));
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    char when[32];
    int resolved = strcmp(str(o, "status_to"), "OK") == 0;
    const char *sev = resolved ? "RESOLVED" : str(o, "severity");
    const char *col = !a->color ? "" : resolved ? "\033[32m"
                                  : strcmp(sev, "CRITICAL") == 0 ? "\033[1;31m"
                                                                 : "\033[33m";
    json_t *base = json_object_get(o, "baseline");
    double obs = json_real_value(json_object_get(o, "observed"));
    double thr = json_real_value(json_object_get(o, "threshold"));
    /* The relation as it stands (AUC and a falling mean alert downwards). */
    const char *rel = obs > thr ? ">" : obs < thr ? "<" : "=";

    gmtime_r(&t, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    printf("%s %s%-8s%s %s %s v%s %s%s%s: %.4g %s %.4g", when, col, sev, a->color ? "\033[0m" : "",
           str(o, "worker"), str(o, "model"), str(o, "model_version"), str(o, "alert_type"),
           json_is_string(json_object_get(o, "feature")) ? " " : "", str(o, "feature"),
           obs, rel, thr);
    if (json_is_number(base))
        printf(" (baseline %.4g)", json_number_value(base));
    printf(" [%s -> %s]\n", str(o, "status_from"), str(o, "status_to"));
}

/* Runs cmd with json on its stdin; 0 when it exits 0. */
static int run_exec(const char *cmd, const char *json)
{
    FILE *p;
    int st;

    fflush(stdout);
    if (!(p = popen(cmd, "w"))) {
        perror("error: --exec");
        return -1;
    }
    fprintf(p, "%s\n", json);
    st = pclose(p);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "error: --exec \"%s\" failed (status %d)\n", cmd,
                st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        return -1;
    }
    return 0;
}

/* Shows one decoded record if it passes the filters: 1 shown, 0 filtered,
 * -1 not an alert, -2 shown but --exec failed. */
static int handle(const struct alerts_args *a, const char *text)
{
    json_error_t je;
    json_t *o = json_loads(text, 0, &je);
    int rc = 1;

    if (!o || !json_is_string(json_object_get(o, "alert_type"))) {
        json_decref(o);
        return -1;
    }
    if (!wanted(a, o)) {
        json_decref(o);
        return 0;
    }
    if (a->json)
        printf("%s\n", text);
    else
        print_line(a, o);
    if (a->exec && run_exec(a->exec, text))
        rc = -2;
    json_decref(o);
    fflush(stdout);
    return rc;
}

static int alerts_loop(struct kq *q, struct codec *cd, const struct alerts_args *a,
                       struct metrics *mx)
{
    struct buf json;
    struct err e = {0};
    long n = 0;
    int rc = EXIT_OK;

    buf_init(&json, 1024 * 1024);
    while (g_run && (!a->count || n < a->count) && !(a->exit_at_end && kq_at_end(q))) {
        struct kq_msg *m;
        int h;
        /* /healthz beats with this loop; ready once the topic is being read
         * (no Redis, no model: those count as present). */
        metrics_worker_tick(mx, NULL, 1, 1, 1);
        if (kq_poll(q, 200, &m, &e) || kq_serve(q, 0, &e)) {
            fprintf(stderr, "error: %s\n", e.msg);
            rc = EXIT_RUNTIME;
            break;
        }
        if (!m)
            continue;
        h = codec_to_json(cd, m->payload, m->len, &json, &e) ? -1
                                                             : handle(a, (const char *)json.data);
        if (h == -1)
            fprintf(stderr, "%s [%d] @ %lld: not an alert event, skipped\n", m->topic,
                    (int)m->partition, (long long)m->offset);
        n += h == 1 || h == -2;
        if (h == 1 || h == -2)
            metrics_add(mx, METRICS_ALERTS, 1);
        rc = h == -2 ? EXIT_RUNTIME : rc;
        if (a->group)
            kq_ack(q, &m->pos, KQ_ACK_ALL);
        kq_msg_release(m);
    }
    buf_free(&json);
    return rc;
}

int cmd_alerts(int argc, char **argv)
{
    struct alerts_args a = {0};
    struct err e = {0};
    struct codec *cd = NULL;
    struct kq *q = NULL;
    struct metrics *mx = NULL;
    struct cfg *cf;
    int rc = alerts_parse(argc, argv, &a);
    size_t np;
    const char *topic, *nc = getenv("NO_COLOR");

    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if (!(cf = cli_load(&a.cli, "alerts")))
        return EXIT_USAGE;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN); /* a --exec command that exits early */
    a.color = isatty(STDOUT_FILENO) && !(nc && *nc);
    topic = a.topic ? a.topic : cfg_str(cf, "monitor.topic");
    struct kq_opts ko = {.group_id = a.group, .topics = &topic, .n_topics = 1,
                         .assign_all = !a.group, .from_beginning = a.from_beginning,
                         .client_id = "streamml-alerts"};
    ko.props = cfg_kafka(cf, &np);
    ko.n_props = np;
    /* metrics.port: /healthz, /readyz and /metrics, as the workers serve them,
     * so a Deployment can probe it and Prometheus can scrape it. */
    struct metrics_opts mo = {.port = (int)cfg_int(cf, "metrics.port"), .worker = "alerts",
                              .model = "", .model_version = "", .stale_ms = 30000};
    if (!(cd = codec_open(cfg_str(cf, "schemas.dir"), &e)) || !(q = kq_open(&ko, &e)) ||
        (!(mx = metrics_open(&mo, &e)) && e.code)) {
        fprintf(stderr, "error: %s\n", e.msg);
        rc = e.code == ERR_CONFIG ? EXIT_USAGE : EXIT_RUNTIME;
    } else {
        rc = alerts_loop(q, cd, &a, mx);
    }
    metrics_close(mx);
    kq_close(q, a.group ? 5000 : 0, NULL);
    codec_close(cd);
    cfg_free(cf);
    return rc;
}
