#include "cli.h"

#include <stdarg.h>
#include <string.h>

#include "evtime.h"
#include "features.h"
#include "kafka.h"
#include "log.h"
#include "redis_cluster.h"
#include "redis_conn.h"
#include "suggest.h"

int cli_opt(struct cli *c, int opt, const char *arg)
{
    switch (opt) {
    case 'c':
        c->config_path = arg;
        return 1;
    case 'b':
        snprintf(c->bootstrap_arg, sizeof(c->bootstrap_arg), "bootstrap.servers=%s", arg);
        arg = c->bootstrap_arg;
        /* fall through */
    case 'X':
        if (c->nx == CLI_MAX_X) {
            fprintf(stderr, "error: more than %d -X options\n", CLI_MAX_X);
            return -1;
        }
        c->xargs[c->nx++] = (char *)arg;
        return 1;
    case 1000:
        c->log_level = arg;
        return 1;
    default:
        return 0;
    }
}

static void setup_log(const struct cfg *cf, const char *override, const char *component)
{
    const char *fmt = cfg_str(cf, "log.format");
    int lvl = log_level_parse(override ? override : cfg_str(cf, "log.level"));
    int mode = strcmp(fmt, "json") == 0 ? 1 : strcmp(fmt, "text") == 0 ? 0 : -1;

    log_init(lvl < 0 ? LOG_LVL_INFO : (enum log_level)lvl, mode, component);
}

void cli_apply(const struct cfg *cf)
{
    evt_set_max_future_skew_ms(cfg_int(cf, "worker.max_future_skew_ms"));
    rc_set_default_username(cfg_str(cf, "redis.username"));
    rcl_set_default_nodes(cfg_str(cf, "redis.nodes"));
    feat_set_dedup_horizon_ms(cfg_int(cf, "state.dedup_horizon_ms"));
}

struct cfg *cli_load(struct cli *c, const char *component)
{
    struct err e = {0};
    struct cfg *cf = cfg_new();

    if (!cf) {
        fprintf(stderr, "error: out of memory\n");
        return NULL;
    }
    if (c->log_level && log_level_parse(c->log_level) < 0) {
        fprintf(stderr, "error: --log-level %s: expected debug|info|warn|error\n", c->log_level);
        cfg_free(cf);
        return NULL;
    }
    if (cfg_load_standard(cf, c->config_path, c->xargs, c->nx, &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        cfg_free(cf);
        return NULL;
    }
    cli_apply(cf);
    setup_log(cf, c->log_level, component);
    return cf;
}

void cli_usage_error(const char *cmd, const struct option *lo, char **argv)
{
    const char *names[128], *bad = argv && optind > 0 ? argv[optind - 1] : NULL, *best = NULL;
    char word[128];
    size_t n = 0;

    if (bad && strncmp(bad, "--", 2) == 0 && !optopt) {
        snprintf(word, sizeof(word), "%.*s", (int)strcspn(bad + 2, "="), bad + 2);
        for (; lo && lo[n].name && n < 128; n++)
            names[n] = lo[n].name;
        best = sug_closest(word, names, n);
    }
    if (best)
        fprintf(stderr, "did you mean --%s? see %s --help\n", best, cmd);
    else
        fprintf(stderr, "see %s --help\n", cmd);
}

void cli_usage_msg(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    fputs("error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nsee %s --help\n", cmd);
}

void cli_version(FILE *out)
{
    fprintf(out, "streamml %s (librdkafka %s, avro-c 1.11, xgboost JSON 1.x-3.x, "
                 "feature set txn-v1)\n", STREAMML_VERSION, kq_version());
}

int cli_parse(struct cli *c, int argc, char **argv, void (*usage)(FILE *out))
{
    static const struct option lo[] = {CLI_LONGOPTS, {NULL, 0, NULL, 0}};
    int opt, r;

    while ((opt = getopt_long(argc, argv, CLI_SHORTOPTS, lo, NULL)) != -1) {
        if ((r = cli_opt(c, opt, optarg)) < 0)
            return 2;
        if (r == 0 && opt == 'V') {
            cli_version(stdout);
            return 0;
        }
        if (r == 0 && opt == 'h') {
            usage(stdout);
            return 0;
        }
        if (r == 0) { /* one line, not the whole help */
            cli_usage_error(argv[0], lo, argv);
            return 2;
        }
    }
    return -1;
}

const char *cli_group_id(const struct cfg *cf, const char *dflt)
{
    size_t n;
    const struct cfg_kv *kv = cfg_kafka(cf, &n);

    for (size_t i = 0; i < n; i++)
        if (strcmp(kv[i].key, "group.id") == 0)
            return kv[i].value;
    return dflt;
}
