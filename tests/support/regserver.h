/* tests/support/regserver.h: a small Confluent-compatible Schema Registry
 * for tests (libmicrohttpd, 127.0.0.1, a free port), speaking the endpoints
 * streamml uses, with the registry's JSON bodies and error codes:
 *
 *   GET  /schemas/ids/{id}              {"schema": "..."}        | 404 40403
 *   POST /subjects/{subject}/versions   {"id": N}                | 422 42201, 409
 *   POST /subjects/{subject}            {"subject","id","version","schema"} | 404 40401/40403
 *   GET  /subjects                      ["a-value", ...]
 *   GET  /subjects/{subject}/versions/{v|latest}  {"subject","id","version","schema"}
 *                                       | 404 40401 (subject) / 40402 (version)
 *
 * Ids are global: the same schema (equal as JSON) under another subject
 * keeps its id, as in Confluent's registry. Basic auth when a user is given.
 * Requests are served on libmicrohttpd's own thread; the controls below
 * may be called from the test's thread.
 */
#ifndef STREAMML_TEST_REGSERVER_H
#define STREAMML_TEST_REGSERVER_H

struct test_registry;

/* port 0 = a free one (a given port lets a test restart it where clients
 * expect it); user NULL = no authentication. NULL on failure (stderr). */
struct test_registry *test_registry_start(int port, const char *user, const char *password);
/* The same over HTTPS with the given PEM certificate and key (no auth). */
struct test_registry *test_registry_start_tls(int port, const char *cert_pem, const char *key_pem);
/* Stops serving (clients then get "connection refused"); the schemas are
 * kept for test_registry_restart. */
void test_registry_stop_serving(struct test_registry *r);
int test_registry_restart(struct test_registry *r);
void test_registry_free(struct test_registry *r); /* NULL-safe; stops too */

/* "http://127.0.0.1:PORT" */
const char *test_registry_url(const struct test_registry *r);
/* Registers schema under subject as another producer would; its id, or -1
 * if the text is not JSON. */
int test_registry_add(struct test_registry *r, const char *subject, const char *schema);
/* 1: every request is answered 503 (up, but failing). */
void test_registry_set_failing(struct test_registry *r, int on);
/* 1: registrations are refused with 409 (incompatible). */
void test_registry_set_rejecting(struct test_registry *r, int on);
/* Requests received so far (failing ones included). */
unsigned test_registry_requests(struct test_registry *r);

#endif
