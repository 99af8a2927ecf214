/* streamml broker: the embedded Kafka broker for the demo and the tests. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cmds.h"
#include "log.h"
#include "mockbroker.h"

#define DEFAULT_TOPICS                                                                   \
    "transactions:8,predictions.transactions:8,transactions.dlq:2,monitoring:1,labels:4"

static volatile sig_atomic_t g_run = 1;

static void on_signal(int sig)
{
    (void)sig;
    g_run = 0;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: streamml broker [--topics SPEC] [--brokers N] [--bootstrap-file FILE]\n\n"
            "Serves librdkafka's mock Kafka cluster on ephemeral loopback ports until\n"
            "SIGINT/SIGTERM, prints the bootstrap address and writes it to FILE.\n\n"
            "  --topics SPEC          name:partitions,... (default " DEFAULT_TOPICS ")\n"
            "  --brokers N            number of mock brokers (default 1)\n"
            "  --bootstrap-file FILE  write \"host:port,...\" there (atomically)\n\n"
            "Limits (librdkafka 2.0.2): about 5 MB kept per partition (older messages are\n"
            "dropped: give topics enough partitions), no transaction markers.\n");
}

/* Written to a temporary name then renamed, so readers never see half. */
static int write_file(const char *path, const char *text)
{
    char tmp[1024];
    FILE *f;

    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    f = fopen(tmp, "w");
    if (!f)
        return -1;
    fprintf(f, "%s\n", text);
    if (fclose(f) != 0)
        return -1;
    return rename(tmp, path);
}

static int parse_args(int argc, char **argv, const char **topics, int *nb, const char **file)
{
    static const struct option lo[] = {{"topics", required_argument, NULL, 't'},
                                       {"brokers", required_argument, NULL, 'n'},
                                       {"bootstrap-file", required_argument, NULL, 'f'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    int opt;
    char *end;

    while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        if (opt == 't') {
            *topics = optarg;
        } else if (opt == 'n') {
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 16) {
                fprintf(stderr, "error: --brokers %s: expected 1..16\n", optarg);
                return EXIT_USAGE;
            }
            *nb = (int)v;
        } else if (opt == 'f') {
            *file = optarg;
        } else if (opt == 'h') {
            usage(stdout);
            return -1;
        } else {
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    return EXIT_OK;
}

int cmd_broker(int argc, char **argv)
{
    const char *topics = DEFAULT_TOPICS, *file = NULL;
    int nb = 1, rc = parse_args(argc, argv, &topics, &nb, &file);
    struct err e = {0};
    struct mockbroker *b;

    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    log_init(LOG_LVL_INFO, -1, "broker");
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    b = mockbroker_open(nb, &e);
    if (!b || mockbroker_create_topics(b, topics, &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        mockbroker_close(b);
        return e.code == ERR_CONFIG ? EXIT_USAGE : EXIT_RUNTIME;
    }
    printf("bootstrap: %s\ntopics: %s\n", mockbroker_bootstraps(b), topics);
    fflush(stdout);
    if (file && write_file(file, mockbroker_bootstraps(b)) != 0) {
        fprintf(stderr, "error: cannot write %s\n", file);
        mockbroker_close(b);
        return EXIT_RUNTIME;
    }
    while (g_run)
        usleep(100 * 1000);
    log_info("stopping");
    mockbroker_close(b);
    return EXIT_OK;
}
