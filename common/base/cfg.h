/* common/base/cfg.h: configuration (prefix cfg_).
 *
 * One table of known keys (name, type, range, default, help). Sources, in
 * increasing precedence: built-in defaults < properties file < environment
 * < command line (-X key=value). Keys under `kafka.` (and, in a file, any
 * key the table does not know, so Java client .properties files work as
 * they are) pass through to librdkafka untouched, as kcat does; librdkafka
 * itself validates them and its error names the file and line.
 *
 * Environment: STREAMML_<KEY> with '.' -> '_' upper-cased (STREAMML_REDIS_HOST),
 * and STREAMML_KAFKA__<PROP> with '_' -> '.' lower-cased for kafka props.
 * Secrets (redis.password, kafka *.password, ssl keys) are refused on the
 * command line, may come from a `*_file` key, and are masked in every dump.
 *
 * Read once at start-up, then used read-only: not thread-safe while loading.
 */
#ifndef STREAMML_CFG_H
#define STREAMML_CFG_H

#include <stdio.h>

#include "err.h"

struct cfg;

struct cfg_kv {
    const char *key;     /* librdkafka property name (without "kafka.") */
    const char *value;
    const char *origin;  /* "default", "file.conf:3", "env STREAMML_...", "-X" */
};

struct cfg *cfg_new(void);           /* defaults loaded; NULL on ENOMEM */
void cfg_free(struct cfg *c);        /* NULL-safe */

/* key=value or key: value lines, '#'/'!' comments, blank lines. ERR_CONFIG
 * naming file:line on a malformed line or a bad value for a known key. */
int cfg_load_file(struct cfg *c, const char *path, struct err *e);
int cfg_load_env(struct cfg *c, struct err *e);
/* One "key=value" from the command line (-X). */
int cfg_set_arg(struct cfg *c, const char *kv, struct err *e);
/* Sets a key with an origin; validates type and range of known keys. */
int cfg_set(struct cfg *c, const char *key, const char *value, const char *origin,
            struct err *e);
/* Resolves *_file keys (secrets read from files) and cross-key checks. */
int cfg_finish(struct cfg *c, struct err *e);

/* Standard loading for a command: --config FILE or $STREAMML_CONFIG, then the
 * environment, then the -X arguments collected by the caller. */
int cfg_load_standard(struct cfg *c, const char *config_path, char **xargs, int nx,
                      struct err *e);

const char *cfg_str(const struct cfg *c, const char *key);      /* "" if unset */
long long cfg_int(const struct cfg *c, const char *key);
double cfg_double(const struct cfg *c, const char *key);
const char *cfg_origin(const struct cfg *c, const char *key);

/* The kafka passthrough properties; the array lives as long as c. */
const struct cfg_kv *cfg_kafka(const struct cfg *c, size_t *n);

/* Prints every key with its value (secrets masked) and origin. */
void cfg_dump(const struct cfg *c, FILE *out);
/* Prints the table (key, default, range, help) for --help. */
void cfg_help(FILE *out);

#endif
