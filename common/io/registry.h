/* common/io/registry.h: Confluent-compatible Schema Registry client (prefix reg_).
 *
 * Speaks the registry's REST API over libcurl (JSON via jansson):
 *   GET  /schemas/ids/{id}              writer schema of the id a message carries
 *   POST /subjects/{subject}/versions   register a schema, answer its id
 *   POST /subjects/{subject}            look a schema up, answer its id
 *   GET  /subjects/{subject}/versions/{v}   a subject's schema by version or "latest"
 * Subjects follow the TopicNameStrategy: "<topic>-value" (reg_subject).
 *
 * Schemas are cached by id for the life of the handle (an id never changes
 * meaning in a registry), so ids seen once keep working while the registry
 * is down. A request that fails transiently (connection refused, timeout,
 * HTTP 5xx or 429) is retried `retries` times with doubling back-off over
 * every URL given; after that the call returns ERR_RETRY: the caller decides
 * whether to wait (the worker does) or to give up. A definite answer
 * (404, 401, 409, 422) or a certificate that does not verify (ERR_CONFIG) is
 * never retried.
 *
 * The password is handed to libcurl only (CURLOPT_PASSWORD), never put in a
 * URL, an error message or a log line; URLs carrying user:password@ are
 * refused for the same reason.
 *
 * One thread uses a handle.
 */
#ifndef STREAMML_REGISTRY_H
#define STREAMML_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "err.h"

#define REG_MAX_URLS 8
#define REG_MAX_RESPONSE (1024 * 1024) /* larger answers are refused */

struct reg;

struct reg_opts {
    const char *urls;     /* "http://h1:8081,http://h2:8081" (required) */
    const char *user;     /* basic auth; NULL or "" = none */
    const char *password; /* with user */
    const char *ca_file;  /* TLS: CA bundle, client certificate and key (PEM) */
    const char *cert_file;
    const char *key_file;
    int verify;     /* 0: do not verify the server's certificate */
    int timeout_ms; /* one request, connection included */
    int retries;    /* extra attempts after a transient failure */
    int backoff_ms; /* first back-off; doubles, capped at 5 s */
};

/* New client, or NULL with the reason in *e (ERR_CONFIG for a bad URL).
 * Nothing is sent until the first call. Free with reg_close(). */
struct reg *reg_open(const struct reg_opts *o, struct err *e);
/* From the schema.registry.* keys. NULL with e->code == ERR_OK when
 * schema.registry.url is empty (no registry configured). */
struct reg *reg_open_cfg(const struct cfg *c, struct err *e);
void reg_close(struct reg *r); /* NULL-safe */

/* The schema text registered under id, from the cache or the registry.
 * *schema is owned by r and stays valid until reg_close. ERR_NOTFOUND:
 * the registry has no such id; ERR_RETRY: unreachable after the retries;
 * ERR_DECODE: not an Avro schema (PROTOBUF/JSON) or one with references. */
int reg_schema_by_id(struct reg *r, int32_t id, const char **schema, struct err *e);

/* The id of schema under subject: registered when register_new (POST
 * /subjects/S/versions, idempotent for a schema already there), else only
 * looked up (POST /subjects/S; ERR_NOTFOUND if absent). ERR_CONFIG when the
 * registry refuses it (409 incompatible, 422 invalid, 401/403). */
int reg_schema_id(struct reg *r, const char *subject, const char *schema, int register_new,
                  int32_t *id, struct err *e);

/* The schema registered under subject at version (>= 1; 0 = "latest"):
 * its id, its version number and its text (*schema owned by r, valid until
 * reg_close). A fixed version is asked once per handle (a version never
 * changes meaning); "latest" is asked every call. ERR_NOTFOUND: no such
 * subject or version; ERR_RETRY: unreachable after the retries;
 * ERR_DECODE: not an Avro schema, or one with references. */
int reg_subject_version(struct reg *r, const char *subject, int version, int32_t *id,
                        int *version_out, const char **schema, struct err *e);

/* The base URL(s) as configured, for messages (no credentials: refused). */
const char *reg_urls(const struct reg *r);

/* "<topic>-value" into out (TopicNameStrategy). ERR_CONFIG if it does not fit. */
int reg_subject(const char *topic, char *out, size_t cap, struct err *e);

struct reg_stats {
    uint64_t requests, failures, cache_hits;
};
void reg_get_stats(const struct reg *r, struct reg_stats *s);

#endif
