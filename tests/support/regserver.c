/* tests/support/regserver.c: the test Schema Registry (see regserver.h). */
#include "regserver.h"
#include "stack.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ENTRIES 256
#define MAX_BODY (1024 * 1024)
#define CT "application/vnd.schemaregistry.v1+json"

struct entry {
    int id, version;
    char subject[256];
    json_t *schema; /* parsed, for equality */
    char *text;
};

struct test_registry {
    struct MHD_Daemon *d;
    int port;
    char url[64];
    char *user, *password;
    char *tls_cert, *tls_key; /* PEM; NULL: plain HTTP */
    pthread_mutex_t mu;
    struct entry e[MAX_ENTRIES];
    int n, next_id;
    int failing, rejecting;
    unsigned requests;
};

struct upload {
    char *data;
    size_t len;
    int too_big;
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    struct MHD_Response *r;
    enum MHD_Result rc;

    json_decref(body);
    if (!text)
        return MHD_NO;
    r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", CT);
    rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result fail(struct MHD_Connection *c, unsigned status, int code, const char *msg)
{
    return reply(c, status, json_pack("{s:i,s:s}", "error_code", code, "message", msg));
}

/* Caller holds mu. Same schema anywhere: its id; else a new one. */
static int id_of(struct test_registry *r, json_t *schema)
{
    for (int i = 0; i < r->n; i++)
        if (json_equal(r->e[i].schema, schema))
            return r->e[i].id;
    return r->next_id++;
}

static struct entry *find(struct test_registry *r, const char *subject, json_t *schema)
{
    for (int i = 0; i < r->n; i++)
        if (strcmp(r->e[i].subject, subject) == 0 && json_equal(r->e[i].schema, schema))
            return &r->e[i];
    return NULL;
}

/* Caller holds mu. The entry for schema under subject, added if new. */
static struct entry *add(struct test_registry *r, const char *subject, const char *text)
{
    json_t *schema = json_loads(text, 0, NULL);
    struct entry *e;
    int version = 1;

    if (!schema)
        return NULL;
    if ((e = find(r, subject, schema)) || r->n == MAX_ENTRIES) {
        json_decref(schema);
        return e;
    }
    for (int i = 0; i < r->n; i++)
        if (strcmp(r->e[i].subject, subject) == 0)
            version++;
    e = &r->e[r->n];
    e->id = id_of(r, schema);
    e->version = version;
    snprintf(e->subject, sizeof(e->subject), "%s", subject);
    e->schema = schema;
    e->text = strdup(text);
    r->n++;
    return e;
}

static enum MHD_Result get_by_id(struct test_registry *r, struct MHD_Connection *c, const char *arg)
{
    char *end;
    long id = strtol(arg, &end, 10);

    if (*end || end == arg)
        return fail(c, 404, 404, "HTTP 404 Not Found");
    for (int i = 0; i < r->n; i++)
        if (r->e[i].id == id)
            return reply(c, 200, json_pack("{s:s}", "schema", r->e[i].text));
    return fail(c, 404, 40403, "Schema not found");
}

static enum MHD_Result list_subjects(struct test_registry *r, struct MHD_Connection *c)
{
    json_t *a = json_array();

    for (int i = 0; i < r->n; i++) {
        int seen = 0;
        for (int j = 0; j < i; j++)
            seen |= strcmp(r->e[j].subject, r->e[i].subject) == 0;
        if (!seen)
            json_array_append_new(a, json_string(r->e[i].subject));
    }
    return reply(c, 200, a);
}

/* GET /subjects/{s}/versions/{v|latest}: 40401 no subject, 40402 no version. */
static enum MHD_Result get_version(struct test_registry *r, struct MHD_Connection *c,
                                   const char *rest)
{
    size_t n = strcspn(rest, "/");
    const char *v = rest + n;
    struct entry *best = NULL;
    long want = 0;
    char *end;
    int subject = 0;

    if (strncmp(v, "/versions/", 10) != 0 || n == 0)
        return fail(c, 404, 404, "HTTP 404 Not Found");
    v += 10;
    if (strcmp(v, "latest") != 0) {
        want = strtol(v, &end, 10);
        if (*end || end == v || want < 1)
            return fail(c, 422, 42202, "Invalid version");
    }
    for (int i = 0; i < r->n; i++) {
        struct entry *e = &r->e[i];
        if (strlen(e->subject) != n || strncmp(e->subject, rest, n) != 0)
            continue;
        subject = 1;
        if (want ? e->version == want : (!best || e->version > best->version))
            best = e;
    }
    if (!subject)
        return fail(c, 404, 40401, "Subject not found.");
    if (!best)
        return fail(c, 404, 40402, "Version not found.");
    return reply(c, 200, json_pack("{s:s,s:i,s:i,s:s}", "subject", best->subject, "id", best->id,
                                   "version", best->version, "schema", best->text));
}

/* POST /subjects/{s}/versions (register) or /subjects/{s} (look up). */
static enum MHD_Result post_subject(struct test_registry *r, struct MHD_Connection *c,
                                    const char *rest, const struct upload *u)
{
    char subject[256];
    size_t n = strcspn(rest, "/");
    int reg = strcmp(rest + n, "/versions") == 0;
    json_t *body = u->data ? json_loadb(u->data, u->len, 0, NULL) : NULL;
    const char *text = json_string_value(json_object_get(body, "schema"));
    json_t *schema = text ? json_loads(text, 0, NULL) : NULL;
    struct entry *e = NULL;
    enum MHD_Result rc;

    snprintf(subject, sizeof(subject), "%.*s", (int)n, rest);
    if ((rest[n] && !reg) || n == 0)
        rc = fail(c, 404, 404, "HTTP 404 Not Found");
    else if (!schema)
        rc = fail(c, 422, 42201, "Invalid schema");
    else if (!reg && !(e = find(r, subject, schema)))
        rc = fail(c, 404, 40403, "Schema not found");
    else if (!reg)
        rc = reply(c, 200,
                   json_pack("{s:s,s:i,s:i,s:s}", "subject", e->subject, "id", e->id, "version",
                             e->version, "schema", e->text));
    else if (r->rejecting)
        rc = fail(c, 409, 409, "Schema being registered is incompatible with an earlier schema");
    else if (!(e = add(r, subject, text)))
        rc = fail(c, 500, 50001, "registry full");
    else
        rc = reply(c, 200, json_pack("{s:i}", "id", e->id));
    json_decref(schema);
    json_decref(body);
    return rc;
}

static int authorized(struct test_registry *r, struct MHD_Connection *c)
{
    char *pass = NULL, *user;
    int ok;

    if (!r->user)
        return 1;
    user = MHD_basic_auth_get_username_password(c, &pass);
    ok = user && pass && strcmp(user, r->user) == 0 && strcmp(pass, r->password) == 0;
    MHD_free(user);
    MHD_free(pass);
    return ok;
}

static enum MHD_Result route(struct test_registry *r, struct MHD_Connection *c, const char *url,
                             const char *method, const struct upload *u)
{
    int get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;

    r->requests++;
    if (r->failing)
        return fail(c, 503, 50003, "Service Unavailable");
    if (!authorized(r, c))
        return fail(c, 401, 401, "Unauthorized");
    if (u->too_big)
        return fail(c, 413, 413, "Request too large");
    if (get && strncmp(url, "/schemas/ids/", 13) == 0)
        return get_by_id(r, c, url + 13);
    if (get && strcmp(url, "/subjects") == 0)
        return list_subjects(r, c);
    if (get && strncmp(url, "/subjects/", 10) == 0)
        return get_version(r, c, url + 10);
    if (post && strncmp(url, "/subjects/", 10) == 0)
        return post_subject(r, c, url + 10, u);
    return fail(c, 404, 404, "HTTP 404 Not Found");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    struct test_registry *r = cls;
    struct upload *u = *con_cls;
    enum MHD_Result rc;

    (void)version;
    if (!u) {
        if (!(u = calloc(1, sizeof(*u))))
            return MHD_NO;
        *con_cls = u;
        return MHD_YES;
    }
    if (*upload_size) {
        char *p =
            u->len + *upload_size <= MAX_BODY ? realloc(u->data, u->len + *upload_size) : NULL;
        if (p) {
            memcpy(p + u->len, upload_data, *upload_size);
            u->data = p;
            u->len += *upload_size;
        } else {
            u->too_big = 1;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    pthread_mutex_lock(&r->mu);
    rc = route(r, c, url, method, u);
    pthread_mutex_unlock(&r->mu);
    return rc;
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls,
                    enum MHD_RequestTerminationCode toe)
{
    struct upload *u = *con_cls;

    (void)cls, (void)c, (void)toe;
    if (u)
        free(u->data);
    free(u);
    *con_cls = NULL;
}

int test_registry_restart(struct test_registry *r)
{
    struct sockaddr_in a;

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)r->port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (r->tls_cert)
        r->d =
            MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_TLS, (uint16_t)r->port, NULL,
                             NULL, on_request, r, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&a,
                             MHD_OPTION_LISTENING_ADDRESS_REUSE, 1U, MHD_OPTION_HTTPS_MEM_KEY,
                             r->tls_key, MHD_OPTION_HTTPS_MEM_CERT, r->tls_cert,
                             MHD_OPTION_NOTIFY_COMPLETED, on_done, r, MHD_OPTION_END);
    else
        r->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG,
                                (uint16_t)r->port, NULL, NULL, on_request, r, MHD_OPTION_SOCK_ADDR,
                                (struct sockaddr *)&a, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1U,
                                MHD_OPTION_NOTIFY_COMPLETED, on_done, r, MHD_OPTION_END);
    if (!r->d) {
        fprintf(stderr, "test registry: cannot listen on 127.0.0.1:%d\n", r->port);
        return -1;
    }
    return 0;
}

static char *read_pem(const char *path)
{
    FILE *f = fopen(path, "r");
    char *p = calloc(1, 65536);

    if (!f || !p || fread(p, 1, 65535, f) == 0) {
        fprintf(stderr, "test registry: cannot read %s\n", path);
        free(p);
        p = NULL;
    }
    if (f)
        fclose(f);
    return p;
}

struct test_registry *test_registry_start_tls(int port, const char *cert_pem, const char *key_pem)
{
    struct test_registry *r = calloc(1, sizeof(*r));

    if (!r)
        return NULL;
    pthread_mutex_init(&r->mu, NULL);
    r->next_id = 1;
    r->port = port > 0 ? port : test_free_port();
    snprintf(r->url, sizeof(r->url), "https://127.0.0.1:%d", r->port);
    if (!(r->tls_cert = read_pem(cert_pem)) || !(r->tls_key = read_pem(key_pem)) ||
        test_registry_restart(r)) {
        test_registry_free(r);
        return NULL;
    }
    return r;
}

struct test_registry *test_registry_start(int port, const char *user, const char *password)
{
    struct test_registry *r = calloc(1, sizeof(*r));

    if (!r)
        return NULL;
    pthread_mutex_init(&r->mu, NULL);
    r->next_id = 1;
    r->port = port > 0 ? port : test_free_port();
    snprintf(r->url, sizeof(r->url), "http://127.0.0.1:%d", r->port);
    if (user) {
        r->user = strdup(user);
        r->password = strdup(password ? password : "");
    }
    if (test_registry_restart(r)) {
        test_registry_free(r);
        return NULL;
    }
    return r;
}

void test_registry_stop_serving(struct test_registry *r)
{
    if (r->d)
        MHD_stop_daemon(r->d);
    r->d = NULL;
}

void test_registry_free(struct test_registry *r)
{
    if (!r)
        return;
    test_registry_stop_serving(r);
    for (int i = 0; i < r->n; i++) {
        json_decref(r->e[i].schema);
        free(r->e[i].text);
    }
    pthread_mutex_destroy(&r->mu);
    free(r->tls_cert);
    free(r->tls_key);
    free(r->user);
    free(r->password);
    free(r);
}

const char *test_registry_url(const struct test_registry *r)
{
    return r->url;
}

int test_registry_add(struct test_registry *r, const char *subject, const char *schema)
{
    struct entry *e;

    pthread_mutex_lock(&r->mu);
    e = add(r, subject, schema);
    pthread_mutex_unlock(&r->mu);
    return e ? e->id : -1;
}

void test_registry_set_failing(struct test_registry *r, int on)
{
    pthread_mutex_lock(&r->mu);
    r->failing = on;
    pthread_mutex_unlock(&r->mu);
}

void test_registry_set_rejecting(struct test_registry *r, int on)
{
    pthread_mutex_lock(&r->mu);
    r->rejecting = on;
    pthread_mutex_unlock(&r->mu);
}

unsigned test_registry_requests(struct test_registry *r)
{
    unsigned n;

    pthread_mutex_lock(&r->mu);
    n = r->requests;
    pthread_mutex_unlock(&r->mu);
    return n;
}
