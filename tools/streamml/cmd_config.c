/* streamml config show|check: what the merged configuration is, and whether
 * it works (Kafka, Redis and the model files reached within a timeout). */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "suggest.h"
#include "cmds.h"
#include "gbdt.h"
#include "kafka.h"
#include "scorecard.h"
#include "registry.h"
#include "state.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: streamml config show|check|ack-state-loss [-c FILE] [-X key=value ...]\n\n"
                 "  show    print every key, its value (secrets masked) and where it came from\n"
                 "  check   validate, then connect to Kafka, Redis and the schema registry\n"
                 "          (if schema.registry.url is set) and load the models; reports a\n"
                 "          state store loss not yet acknowledged\n"
                 "  ack-state-loss  acknowledge a detected state store loss (Redis restarted\n"
                 "          empty): removes <redis.prefix>state_lost, so predictions stop\n"
                 "          being flagged\n\n");
    cfg_help(out);
}

static int check_kafka(const struct cfg *cf)
{
    struct err e = {0};
    size_t np;
    struct kq_opts ko = {.props = cfg_kafka(cf, &np), .client_id = "streamml-config-check"};
    struct kq *q;
    int64_t n;

    ko.n_props = np;
    if (!(q = kq_open(&ko, &e))) {
        printf("kafka: FAIL %s\n", e.msg);
        return 1;
    }
    n = kq_topic_size(q, cfg_str(cf, "input.topic"), 5000, &e);
    if (n < 0)
        printf("kafka: FAIL %s\n", e.msg);
    else
        printf("kafka: ok (%s has %lld records)\n", cfg_str(cf, "input.topic"), (long long)n);
    kq_close(q, 0, NULL);
    return n < 0;
}

static int check_redis(const struct cfg *cf, int ack)
{
    struct err e = {0};
    struct state_redis_opts ro = {
        .host = cfg_str(cf, "redis.host"), .port = (int)cfg_int(cf, "redis.port"),
        .password = *cfg_str(cf, "redis.password") ? cfg_str(cf, "redis.password") : NULL,
        .prefix = cfg_str(cf, "redis.prefix"), .ttl_s = (int)cfg_int(cf, "redis.ttl_s"),
        .timeout_ms = (int)cfg_int(cf, "redis.timeout_ms"),
        .username = cfg_str(cf, "redis.username")};
    struct state *s;
    int bad;

    if (strcmp(cfg_str(cf, "state.backend"), "redis") != 0) {
        printf("redis: skipped (state.backend=%s)\n", cfg_str(cf, "state.backend"));
        return 0;
    }
    s = state_open_redis(&ro, &e);
    bad = !s || state_ping(s, &e);
    printf(bad ? "redis: FAIL %s\n" : "redis: ok%s\n", bad ? e.msg : "");
    if (!bad) {
        int lost = 0;
        bad = state_check_lost(s, 0, &lost, &e) || (ack && state_ack_lost(s, &e));
        if (bad)
            printf("redis: FAIL %s\n", e.msg);
        else if (ack)
            printf("redis: state loss acknowledged\n");
        else if (state_lost_flag(s))
            printf("redis: WARNING the state store lost its data and this is not acknowledged "
                   "(streamml config ack-state-loss)\n");
    }
    state_close(s);
    return bad;
}

/* Reachable, credentials accepted: a lookup of our input schema under
 * <input.topic>-value answers (found or not). */
static int check_registry(const struct cfg *cf)
{
    char path[4096], subject[512], text[256 * 1024];
    struct err e = {0};
    struct reg *r = reg_open_cfg(cf, &e);
    int32_t id = 0;
    size_t n = 0;
    int rc;
    FILE *f;

    if (!r) {
        printf(e.code ? "schema registry: FAIL %s\n" : "schema registry: skipped (no "
                                                       "schema.registry.url: schemas/ids)\n",
               e.msg);
        return e.code != 0;
    }
    snprintf(path, sizeof(path), "%s/transaction_event.avsc", cfg_str(cf, "schemas.dir"));
    if ((f = fopen(path, "r"))) {
        n = fread(text, 1, sizeof(text) - 1, f);
        fclose(f);
    }
    text[n] = '\0';
    rc = reg_subject(cfg_str(cf, "input.topic"), subject, sizeof(subject), &e);
    if (!rc)
        rc = reg_schema_id(r, subject, text, 0, &id, &e);
    if (rc == ERR_OK)
        printf("schema registry: ok (%s is id %d under %s)\n", path, (int)id, subject);
    else if (rc == ERR_NOTFOUND)
        printf("schema registry: ok (reachable; %s is not registered under %s)\n", path, subject);
    else
        printf("schema registry: FAIL %s\n", e.msg);
    reg_close(r);
    return rc != ERR_OK && rc != ERR_NOTFOUND;
}

static int check_models(const struct cfg *cf)
{
    struct err e = {0};
    struct gbdt *g = gbdt_open(cfg_str(cf, "model.gbdt"), &e);
    struct card *c;
    int bad = 0;

    if (g)
        printf("model.gbdt: ok (%zu trees, %zu features)\n", gbdt_num_trees(g),
               gbdt_num_features(g));
    else
        printf("model.gbdt: FAIL %s\n", e.msg), bad = 1;
    c = card_open(cfg_str(cf, "model.scorecard"), &e);
    if (c)
        printf("model.scorecard: ok (%zu features)\n", card_num_features(c));
    else
        printf("model.scorecard: FAIL %s\n", e.msg), bad = 1;
    gbdt_close(g);
    card_close(c);
    return bad;
}

int cmd_config(int argc, char **argv)
{
    static const struct option lo[] = {CLI_LONGOPTS, {NULL, 0, NULL, 0}};
    struct cli cl = {0};
    struct cfg *cf;
    int opt, r, bad;

    while ((opt = getopt_long(argc, argv, CLI_SHORTOPTS, lo, NULL)) != -1) {
        if ((r = cli_opt(&cl, opt, optarg)) < 0)
            return EXIT_USAGE;
        if (r == 0) {
            if (opt == 'h')
                usage(stdout);
            else
                cli_usage_error("streamml config", lo, argv);
            return opt == 'h' ? EXIT_OK : EXIT_USAGE;
        }
    }
    if (optind >= argc || (strcmp(argv[optind], "show") && strcmp(argv[optind], "check") &&
                           strcmp(argv[optind], "ack-state-loss"))) {
        static const char *const subs[] = {"show", "check", "ack-state-loss"};
        const char *best = optind < argc ? sug_closest(argv[optind], subs, 3) : NULL;
        if (optind >= argc)
            cli_usage_msg("streamml config", "config needs show, check or ack-state-loss");
        else if (best)
            cli_usage_msg("streamml config", "unknown config command \"%s\"; did you mean %s?",
                          argv[optind], best);
        else
            cli_usage_msg("streamml config",
                          "unknown config command \"%s\": show, check or ack-state-loss",
                          argv[optind]);
        return EXIT_USAGE;
    }
    if (!(cf = cli_load(&cl, "config")))
        return EXIT_USAGE;
    if (strcmp(argv[optind], "show") == 0) {
        cfg_dump(cf, stdout);
        cfg_free(cf);
        return EXIT_OK;
    }
    {
        struct err e = {0};
        size_t np;
        const struct cfg_kv *kv = cfg_kafka(cf, &np);
        if (kq_check_props(kv, np, &e)) {
            fprintf(stderr, "error: %s\n", e.msg);
            cfg_free(cf);
            return EXIT_USAGE;
        }
    }
    if (strcmp(argv[optind], "ack-state-loss") == 0) {
        bad = check_redis(cf, 1);
        cfg_free(cf);
        return bad ? EXIT_RUNTIME : EXIT_OK;
    }
    printf("configuration: ok\n");
    bad = check_kafka(cf) | check_redis(cf, 0) | check_registry(cf) | check_models(cf);
    cfg_free(cf);
    return bad ? EXIT_RUNTIME : EXIT_OK;
}
