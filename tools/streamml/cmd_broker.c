/* streamml broker: the embedded Kafka broker for the demo and the tests. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "cmds.h"
#include "log.h"
#include "mockbroker.h"
#include "out.h"

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
            "  --bootstrap-file FILE  write \"host:port,...\" there (atomically)\n"
            "  --control FIFO         read fault-injection commands from this named pipe\n"
            "                         (created if absent), one per line: \"down ID\",\n"
            "                         \"up ID\", \"errors API COUNT ERROR\" (e.g. \"errors\n"
            "                         Produce 5 NOT_LEADER_FOR_PARTITION\"); each is logged\n\n"
            "Limits (librdkafka 2.0.2): about 5 MB kept per partition (older messages are\n"
            "dropped: give topics enough partitions), no transaction markers.\n");
}

/* common/out.h: a file is renamed into place, so readers never see half;
 * a device or FIFO is written as it is. */
static int write_file(const char *path, const char *text)
{
    struct err e = {0};
    struct out *o;

    if (out_open(&o, path, &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        return -1;
    }
    fprintf(out_file(o), "%s\n", text);
    if (out_commit(o, &e)) {
        fprintf(stderr, "error: %s\n", e.msg);
        return -1;
    }
    return 0;
}

/* ---- --control: fault injection for the reliability tests ----
 *
 * A named pipe read without blocking from the serving loop. The broker
 * holds a write end itself, so the pipe never reports end-of-file between
 * two writers. Lines are bounded; a longer one is refused whole. */

struct control {
    int rfd, wfd;
    char line[256];
    size_t len;
    int overlong;
};

static int control_open(struct control *c, const char *path)
{
    struct stat st;

    c->rfd = c->wfd = -1;
    if (mkfifo(path, 0600) != 0 && errno != EEXIST) {
        fprintf(stderr, "error: --control %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (stat(path, &st) != 0 || !S_ISFIFO(st.st_mode)) {
        fprintf(stderr, "error: --control %s: not a named pipe\n", path);
        return -1;
    }
    c->rfd = open(path, O_RDONLY | O_NONBLOCK);
    c->wfd = c->rfd >= 0 ? open(path, O_WRONLY | O_NONBLOCK) : -1;
    if (c->wfd < 0) {
        fprintf(stderr, "error: --control %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

static void control_close(struct control *c)
{
    if (c->rfd >= 0)
        close(c->rfd);
    if (c->wfd >= 0)
        close(c->wfd);
}

static void control_line(struct control *c, struct mockbroker *b)
{
    struct err e = {0};

    c->line[c->len] = '\0';
    if (c->overlong)
        log_error("control: line longer than %zu bytes refused", sizeof(c->line) - 1);
    else if (c->len && mockbroker_command(b, c->line, &e))
        log_error("control: %s", e.msg);
    else if (c->len)
        log_info("control: %s: ok", c->line);
    c->len = 0;
    c->overlong = 0;
}

static void control_poll(struct control *c, struct mockbroker *b)
{
    char buf[512];
    ssize_t n;

    while (c->rfd >= 0 && (n = read(c->rfd, buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\n')
                control_line(c, b);
            else if (c->len + 1 < sizeof(c->line))
                c->line[c->len++] = buf[i];
            else
                c->overlong = 1;
        }
    }
}

static int parse_args(int argc, char **argv, const char **topics, int *nb, const char **file,
                      const char **control)
{
    static const struct option lo[] = {{"topics", required_argument, NULL, 't'},
                                       {"brokers", required_argument, NULL, 'n'},
                                       {"bootstrap-file", required_argument, NULL, 'f'},
                                       {"control", required_argument, NULL, 'c'},
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
        } else if (opt == 'c') {
            *control = optarg;
        } else if (opt == 'h') {
            usage(stdout);
            return -1;
        } else {
            cli_usage_error("streamml broker", lo, argv);
            return EXIT_USAGE;
        }
    }
    return EXIT_OK;
}

int cmd_broker(int argc, char **argv)
{
    const char *topics = DEFAULT_TOPICS, *file = NULL, *control = NULL;
    int nb = 1, rc = parse_args(argc, argv, &topics, &nb, &file, &control);
    struct err e = {0};
    struct mockbroker *b;
    struct control ctl = {.rfd = -1, .wfd = -1};

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
    if (control && control_open(&ctl, control) != 0) {
        control_close(&ctl);
        mockbroker_close(b);
        return EXIT_USAGE;
    }
    printf("bootstrap: %s\ntopics: %s\n", mockbroker_bootstraps(b), topics);
    fflush(stdout);
    if (file && write_file(file, mockbroker_bootstraps(b)) != 0) {
        fprintf(stderr, "error: cannot write %s\n", file);
        mockbroker_close(b);
        return EXIT_RUNTIME;
    }
    while (g_run) {
        control_poll(&ctl, b);
        usleep(ctl.rfd >= 0 ? 20 * 1000 : 100 * 1000);
    }
    log_info("stopping");
    control_close(&ctl);
    mockbroker_close(b);
    return EXIT_OK;
}
