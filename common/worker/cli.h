/* common/worker/cli.h: options every command shares (prefix cli_); at the top
 * layer because loading a command's configuration also sets the process-wide
 * settings the lower layers read (cli_apply).
 *
 *   -c, --config FILE       properties file (else $STREAMML_CONFIG)
 *   -X key=value            config key or librdkafka property (repeatable)
 *   -b, --bootstrap HOSTS   shortcut for -X bootstrap.servers=HOSTS
 *   --log-level LEVEL       debug|info|warn|error
 *   -h, --help / -V, --version
 */
#ifndef STREAMML_CLI_H
#define STREAMML_CLI_H

#include <getopt.h>
#include <stdio.h>

#include "cfg.h"

#define CLI_MAX_X 128

struct cli {
    const char *config_path;
    char *xargs[CLI_MAX_X];
    int nx;
    char bootstrap_arg[1100];
    const char *log_level;
};

/* getopt_long entries for the shared options; commands append their own. */
#define CLI_SHORTOPTS "c:X:b:hV"
#define CLI_LONGOPTS                                                                     \
    {"config", required_argument, NULL, 'c'}, {"bootstrap", required_argument, NULL, 'b'}, \
        {"log-level", required_argument, NULL, 1000}, {"help", no_argument, NULL, 'h'},   \
        {"version", no_argument, NULL, 'V'}

/* Handles a shared option: 1 handled, 0 not a shared option, -1 bad usage
 * (message printed). 'h' and 'V' are left to the command (return 0). */
int cli_opt(struct cli *c, int opt, const char *arg);
/* Loads the configuration (defaults < file < env < -X), applies its
 * process-wide settings (cli_apply) and sets up logging. NULL after printing
 * a one-line error (exit code 2 is the caller's). */
struct cfg *cli_load(struct cli *c, const char *component);
/* The settings every module of the process reads rather than being handed:
 * the event-time skew (evtime.h), the Redis ACL user (redis_conn.h), the
 * cluster seeds (redis_cluster.h), the dedup horizon (features.h). */
void cli_apply(const struct cfg *cf);
/* The whole command line of a command that takes only the shared options
 * (the workers): -1 to go on, else the exit code (0 after --help or
 * --version, 2 on bad usage); usage(out) prints the command's help. */
int cli_parse(struct cli *c, int argc, char **argv, void (*usage)(FILE *out));
/* After getopt_long returned '?' (it printed what was wrong): one more line,
 * a did-you-mean among lo's long options and where the help is, instead of
 * the whole help text. cmd: "streamml replay", "streamml-transactions". */
void cli_usage_error(const char *cmd, const struct option *lo, char **argv);
/* A usage error of a command's own: "error: <msg>" and the same pointer to
 * --help, one line each. */
void cli_usage_msg(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The consumer group: the configured librdkafka group.id, else dflt. */
const char *cli_group_id(const struct cfg *cf, const char *dflt);
/* Prints the version line: streamml, librdkafka, avro-c, formats. */
void cli_version(FILE *out);

#endif
