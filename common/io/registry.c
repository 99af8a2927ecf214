/* common/io/registry.c: Schema Registry client over libcurl and jansson. */
#include "registry.h"
#include "log.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CACHE_MAX 4096 /* distinct ids kept; more is a misbehaving producer */
#define BACKOFF_CAP_MS 5000
#define CT_REGISTRY "application/vnd.schemaregistry.v1+json"

struct cached {
    int32_t id;
    char *schema;
};

/* A subject's fixed version, once resolved (its schema is in the id cache). */
struct subject_version {
    char *subject;
    int version;
    int32_t id;
};
#define VERSIONS_MAX 64

struct reg {
    char *urls; /* as configured, for messages */
    char *url[REG_MAX_URLS];
    int nurl;
    char *user, *password, *ca, *cert, *key;
    int verify, timeout_ms, retries, backoff_ms;
    CURL *h;
    char *resp; /* body of the last answer, NUL-terminated */
    size_t resp_len;
    bool resp_over;
    struct cached *cache;
    size_t ncache;
    struct subject_version ver[VERSIONS_MAX];
    int nver;
    struct reg_stats st;
};

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static char *dup_or_null(const char *s)
{
    return s && *s ? strdup(s) : NULL;
}

/* One base URL: http(s)://host[:port][/path], no credentials in it. */
static int add_url(struct reg *r, const char *s, size_t n, struct err *e)
{
    const char *auth_end;

    while (n && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '/'))
        n--;
    if (n == 0)
        return err_set(e, ERR_CONFIG, "schema.registry.url: empty entry");
    if (strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0)
        return err_set(e, ERR_CONFIG, "schema.registry.url: \"%.*s\" is not http(s)://", (int)n, s);
    auth_end = memchr(s + 8, '/', n - 8);
    if (memchr(s, '@', auth_end ? (size_t)(auth_end - s) : n))
        return err_set(e, ERR_CONFIG,
                       "schema.registry.url: credentials in the URL are refused (they would "
                       "be logged); use schema.registry.user and schema.registry.password");
    if (r->nurl == REG_MAX_URLS)
        return err_set(e, ERR_CONFIG, "schema.registry.url: more than %d URLs", REG_MAX_URLS);
    if (!(r->url[r->nurl] = strndup(s, n)))
        return err_set(e, ERR_NOMEM, "registry: out of memory");
    r->nurl++;
    return ERR_OK;
}

static int parse_urls(struct reg *r, const char *urls, struct err *e)
{
    const char *p = urls;

    if (!urls || !*urls)
        return err_set(e, ERR_CONFIG, "schema.registry.url is empty");
    for (;;) {
        size_t n = strcspn(p, ",");
        if (add_url(r, p, n, e))
            return e->code;
        if (!p[n])
            return ERR_OK;
        p += n + 1;
    }
}

struct reg *reg_open(const struct reg_opts *o, struct err *e)
{
    static bool global_done;
    struct reg *r = calloc(1, sizeof(*r));

    if (!r) {
        err_set(e, ERR_NOMEM, "registry: out of memory");
        return NULL;
    }
    if (!global_done) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        global_done = true;
    }
    r->verify = o->verify;
    r->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 5000;
    r->retries = o->retries >= 0 ? o->retries : 0;
    r->backoff_ms = o->backoff_ms > 0 ? o->backoff_ms : 100;
    if (parse_urls(r, o->urls, e))
        goto out_close;
    if (!(r->urls = strdup(o->urls))) {
        err_set(e, ERR_NOMEM, "registry: out of memory");
        goto out_close;
    }
    r->user = dup_or_null(o->user);
    r->password = dup_or_null(o->password);
    r->ca = dup_or_null(o->ca_file);
    r->cert = dup_or_null(o->cert_file);
    r->key = dup_or_null(o->key_file);
    if (!r->user && r->password) {
        err_set(e, ERR_CONFIG, "schema.registry.password is set but schema.registry.user is not");
        goto out_close;
    }
    if (!(r->h = curl_easy_init())) {
        err_set(e, ERR_NOMEM, "registry: curl_easy_init failed");
        goto out_close;
    }
    return r;
out_close:
    reg_close(r);
    return NULL;
}

struct reg *reg_open_cfg(const struct cfg *c, struct err *e)
{
    struct reg_opts o = {.urls = cfg_str(c, "schema.registry.url"),
                         .user = cfg_str(c, "schema.registry.user"),
                         .password = cfg_str(c, "schema.registry.password"),
                         .ca_file = cfg_str(c, "schema.registry.ssl.ca.location"),
                         .cert_file = cfg_str(c, "schema.registry.ssl.certificate.location"),
                         .key_file = cfg_str(c, "schema.registry.ssl.key.location"),
                         .verify = (int)cfg_int(c, "schema.registry.ssl.verify"),
                         .timeout_ms = (int)cfg_int(c, "schema.registry.timeout_ms"),
                         .retries = (int)cfg_int(c, "schema.registry.retries"),
                         .backoff_ms = (int)cfg_int(c, "schema.registry.retry_backoff_ms")};

    err_clear(e);
    if (!*o.urls)
        return NULL;
    return reg_open(&o, e);
}

void reg_close(struct reg *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->nurl; i++)
        free(r->url[i]);
    for (int i = 0; i < r->nver; i++)
        free(r->ver[i].subject);
    free(r->urls);
    for (size_t i = 0; i < r->ncache; i++)
        free(r->cache[i].schema);
    free(r->cache);
    if (r->h)
        curl_easy_cleanup(r->h);
    if (r->password)
        memset(r->password, 0, strlen(r->password));
    free(r->user);
    free(r->password);
    free(r->ca);
    free(r->cert);
    free(r->key);
    free(r->resp);
    free(r);
}

const char *reg_urls(const struct reg *r)
{
    return r->urls;
}

void reg_get_stats(const struct reg *r, struct reg_stats *s)
{
    *s = r->st;
}

int reg_subject(const char *topic, char *out, size_t cap, struct err *e)
{
    int n = snprintf(out, cap, "%s-value", topic);

    if (!*topic || n < 0 || (size_t)n >= cap)
        return err_set(e, ERR_CONFIG, "registry subject for topic \"%s\" is empty or too long",
                       topic);
    return ERR_OK;
}

/* ---- HTTP ---- */

/* Bounded body: past REG_MAX_RESPONSE the transfer is aborted. */
static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct reg *r = ud;
    size_t len = size * n;
    char *q;

    if (len > REG_MAX_RESPONSE - r->resp_len) {
        r->resp_over = true;
        return 0;
    }
    q = realloc(r->resp, r->resp_len + len + 1);
    if (!q)
        return 0;
    memcpy(q + r->resp_len, p, len);
    r->resp = q;
    r->resp_len += len;
    r->resp[r->resp_len] = '\0';
    return len;
}

static void set_common(struct reg *r, const char *url, struct curl_slist *hdr)
{
    CURL *h = r->h;

    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)r->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)r->timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    if (r->user) {
        curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(h, CURLOPT_USERNAME, r->user);
        curl_easy_setopt(h, CURLOPT_PASSWORD, r->password ? r->password : "");
    }
    if (r->ca)
        curl_easy_setopt(h, CURLOPT_CAINFO, r->ca);
    if (r->cert)
        curl_easy_setopt(h, CURLOPT_SSLCERT, r->cert);
    if (r->key)
        curl_easy_setopt(h, CURLOPT_SSLKEY, r->key);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, r->verify ? 1L : 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, r->verify ? 2L : 0L);
}

/* Failures that another attempt will not cure: a certificate that does not
 * verify, TLS files that cannot be used, a URL curl cannot use. */
static bool definite(CURLcode cc)
{
    switch (cc) {
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_NOT_BUILT_IN:
        return true;
    default:
        return false;
    }
}

/* One request to one URL. 1 = transient failure (retry), 0 = an answer in
 * *status (any status), <0 = a definite local error. */
static int attempt(struct reg *r, int u, const char *path, const char *body, long *status,
                   struct curl_slist *hdr, struct err *e)
{
    char url[2048];
    CURLcode cc;

    if ((size_t)snprintf(url, sizeof(url), "%s%s", r->url[u], path) >= sizeof(url))
        return err_set(e, ERR_CONFIG, "registry URL %s%s too long", r->url[u], path);
    free(r->resp);
    r->resp = NULL;
    r->resp_len = 0;
    r->resp_over = false;
    set_common(r, url, hdr);
    if (body)
        curl_easy_setopt(r->h, CURLOPT_POSTFIELDS, body);
    r->st.requests++;
    cc = curl_easy_perform(r->h);
    if (r->resp_over)
        return err_set(e, ERR_DECODE, "registry %s: answer larger than %d bytes", url,
                       REG_MAX_RESPONSE);
    if (cc != CURLE_OK && definite(cc))
        return err_set(e, ERR_CONFIG, "registry %s: %s", url, curl_easy_strerror(cc));
    if (cc != CURLE_OK) {
        err_set(e, ERR_RETRY, "registry %s: %s", url, curl_easy_strerror(cc));
        return 1;
    }
    curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, status);
    if (*status >= 500 || *status == 429) {
        err_set(e, ERR_RETRY, "registry %s: HTTP %ld", url, *status);
        return 1;
    }
    return 0;
}

/* GET (body NULL) or POST path on each URL in turn, retried with back-off
 * while the failures are transient. ERR_OK with the answer's status. */
static int request(struct reg *r, const char *path, const char *body, long *status, struct err *e)
{
    struct curl_slist *hdr = NULL;
    int backoff = r->backoff_ms, rc = 1;

    hdr = curl_slist_append(hdr, "Accept: " CT_REGISTRY ", application/json");
    if (body && hdr)
        hdr = curl_slist_append(hdr, "Content-Type: " CT_REGISTRY);
    if (!hdr)
        return err_set(e, ERR_NOMEM, "registry: out of memory");
    for (int a = 0; a <= r->retries && rc == 1; a++) {
        if (a) {
            sleep_ms(backoff);
            backoff = backoff * 2 > BACKOFF_CAP_MS ? BACKOFF_CAP_MS : backoff * 2;
        }
        for (int u = 0; u < r->nurl && rc == 1; u++)
            rc = attempt(r, u, path, body, status, hdr, e);
    }
    curl_slist_free_all(hdr);
    if (rc == 1) {
        r->st.failures++;
        return err_wrap(e, "after %d attempt(s)", r->retries + 1);
    }
    return rc < 0 ? e->code : ERR_OK;
}

/* The registry's error body {"error_code": 40403, "message": "..."}. */
static void error_text(const struct reg *r, char *out, size_t cap)
{
    json_t *j = r->resp ? json_loadb(r->resp, r->resp_len, 0, NULL) : NULL;
    const char *msg = json_string_value(json_object_get(j, "message"));
    json_int_t code = json_integer_value(json_object_get(j, "error_code"));

    if (msg)
        snprintf(out, cap, "%s (error_code %lld)", msg, (long long)code);
    else
        snprintf(out, cap, "no error message");
    json_decref(j);
}

static int status_error(struct reg *r, long status, const char *what, struct err *e)
{
    char why[200];

    error_text(r, why, sizeof(why));
    if (status == 404)
        return err_set(e, ERR_NOTFOUND, "registry: %s not found: %s", what, why);
    if (status == 401 || status == 403)
        return err_set(e, ERR_CONFIG,
                       "registry: %s: HTTP %ld, check schema.registry.user/password: %s", what,
                       status, why);
    if (status == 409)
        return err_set(e, ERR_CONFIG, "registry: %s: incompatible with the subject's schemas: %s",
                       what, why);
    return err_set(e, ERR_CONFIG, "registry: %s: HTTP %ld: %s", what, status, why);
}

/* ---- cache ---- */

static const char *cache_get(struct reg *r, int32_t id)
{
    for (size_t i = 0; i < r->ncache; i++)
        if (r->cache[i].id == id)
            return r->cache[i].schema;
    return NULL;
}

static int cache_put(struct reg *r, int32_t id, const char *schema, const char **out, struct err *e)
{
    struct cached *c;
    char *s;

    if ((*out = cache_get(r, id)))
        return ERR_OK;
    if (r->ncache == CACHE_MAX)
        return err_set(e, ERR_DECODE, "registry: more than %d distinct schema ids seen", CACHE_MAX);
    c = realloc(r->cache, (r->ncache + 1) * sizeof(*c));
    if (!c)
        return err_set(e, ERR_NOMEM, "registry: out of memory");
    r->cache = c;
    if (!(s = strdup(schema)))
        return err_set(e, ERR_NOMEM, "registry: out of memory");
    c[r->ncache++] = (struct cached){id, s};
    *out = s;
    return ERR_OK;
}

/* ---- API ---- */

/* Refuses what we cannot decode: non-Avro schemas and references. */
static int check_avro(json_t *j, int32_t id, struct err *e)
{
    const char *type = json_string_value(json_object_get(j, "schemaType"));
    json_t *refs = json_object_get(j, "references");

    if (type && strcmp(type, "AVRO") != 0)
        return err_set(e, ERR_DECODE, "schema id %d is %s, not Avro", (int)id, type);
    if (json_array_size(refs) > 0)
        return err_set(e, ERR_DECODE,
                       "schema id %d uses schema references, which are not supported", (int)id);
    return ERR_OK;
}

int reg_schema_by_id(struct reg *r, int32_t id, const char **schema, struct err *e)
{
    char path[64], what[64];
    const char *text;
    long status = 0;
    json_t *j;
    int rc;

    if ((*schema = cache_get(r, id))) {
        r->st.cache_hits++;
        return ERR_OK;
    }
    snprintf(path, sizeof(path), "/schemas/ids/%d", (int)id);
    snprintf(what, sizeof(what), "schema id %d", (int)id);
    if (request(r, path, NULL, &status, e))
        return e->code;
    if (status != 200)
        return status_error(r, status, what, e);
    if (!(j = json_loadb(r->resp ? r->resp : "", r->resp_len, 0, NULL)))
        return err_set(e, ERR_DECODE, "registry: %s: answer is not JSON", what);
    text = json_string_value(json_object_get(j, "schema"));
    if (!text)
        rc = err_set(e, ERR_DECODE, "registry: %s: answer has no \"schema\" string", what);
    else if (!(rc = check_avro(j, id, e)))
        rc = cache_put(r, id, text, schema, e);
    json_decref(j);
    return rc;
}

/* The subject, percent-encoded for the path. */
static int subject_path(struct reg *r, const char *subject, int register_new, char *out, size_t cap,
                        struct err *e)
{
    char *esc = curl_easy_escape(r->h, subject, 0);
    int n;

    if (!esc)
        return err_set(e, ERR_NOMEM, "registry: out of memory");
    n = snprintf(out, cap, "/subjects/%s%s", esc, register_new ? "/versions" : "");
    curl_free(esc);
    if (n < 0 || (size_t)n >= cap)
        return err_set(e, ERR_CONFIG, "registry: subject %s too long", subject);
    return ERR_OK;
}

static int post_schema(struct reg *r, const char *path, const char *schema, long *status,
                       struct err *e)
{
    json_t *body = json_pack("{s:s}", "schema", schema);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    int rc;

    json_decref(body);
    if (!text)
        return err_set(e, ERR_NOMEM, "registry: out of memory");
    rc = request(r, path, text, status, e);
    free(text);
    return rc;
}

int reg_schema_id(struct reg *r, const char *subject, const char *schema, int register_new,
                  int32_t *id, struct err *e)
{
    char path[1024], what[600];
    const char *cached;
    long status = 0;
    json_int_t v;
    json_t *j;

    snprintf(what, sizeof(what), "subject %s", subject);
    if (subject_path(r, subject, register_new, path, sizeof(path), e) ||
        post_schema(r, path, schema, &status, e))
        return e->code;
    if (status != 200)
        return status_error(r, status, what, e);
    j = json_loadb(r->resp ? r->resp : "", r->resp_len, 0, NULL);
    v = json_integer_value(json_object_get(j, "id"));
    json_decref(j);
    if (v < 1 || v > INT32_MAX)
        return err_set(e, ERR_DECODE, "registry: %s: answer has no valid \"id\"", what);
    *id = (int32_t)v;
    log_info("registry: %s is schema id %d", what, (int)*id);
    /* Our own records decode without asking again. */
    return cache_put(r, *id, schema, &cached, e);
}

/* ---- a subject's schema by version ---- */

static const struct subject_version *version_get(const struct reg *r, const char *subject,
                                                 int version)
{
    for (int i = 0; i < r->nver; i++)
        if (r->ver[i].version == version && strcmp(r->ver[i].subject, subject) == 0)
            return &r->ver[i];
    return NULL;
}

/* Keeps a fixed version's id; a full table only costs a request later. */
static void version_put(struct reg *r, const char *subject, int version, int32_t id)
{
    char *s;

    if (r->nver == VERSIONS_MAX || version_get(r, subject, version) || !(s = strdup(subject)))
        return;
    r->ver[r->nver++] = (struct subject_version){s, version, id};
}

/* {"subject", "id", "version", "schema"[, "schemaType", "references"]} */
static int read_version(struct reg *r, const char *what, int32_t *id, int *version_out,
                        const char **schema, struct err *e)
{
    json_t *j = json_loadb(r->resp ? r->resp : "", r->resp_len, 0, NULL);
    json_int_t v = json_integer_value(json_object_get(j, "id"));
    json_int_t ver = json_integer_value(json_object_get(j, "version"));
    const char *text = json_string_value(json_object_get(j, "schema"));
    int rc;

    if (!j)
        return err_set(e, ERR_DECODE, "registry: %s: answer is not JSON", what);
    if (v < 1 || v > INT32_MAX || ver < 1 || ver > INT32_MAX || !text)
        rc = err_set(e, ERR_DECODE, "registry: %s: answer lacks a valid id, version or schema",
                     what);
    else if (!(rc = check_avro(j, (int32_t)v, e)))
        rc = cache_put(r, (int32_t)v, text, schema, e);
    json_decref(j);
    if (rc)
        return rc;
    *id = (int32_t)v;
    *version_out = (int)ver;
    return ERR_OK;
}

int reg_subject_version(struct reg *r, const char *subject, int version, int32_t *id,
                        int *version_out, const char **schema, struct err *e)
{
    const struct subject_version *sv = version > 0 ? version_get(r, subject, version) : NULL;
    char path[1024], what[600], vtext[16];
    long status = 0;
    int rc;

    if (sv && (*schema = cache_get(r, sv->id))) {
        r->st.cache_hits++;
        *id = sv->id;
        *version_out = sv->version;
        return ERR_OK;
    }
    if (version > 0)
        snprintf(vtext, sizeof(vtext), "%d", version);
    else
        snprintf(vtext, sizeof(vtext), "latest");
    snprintf(what, sizeof(what), "subject %s version %s", subject, vtext);
    if (subject_path(r, subject, 1, path, sizeof(path), e))
        return e->code;
    if (strlen(path) + 1 + strlen(vtext) >= sizeof(path))
        return err_set(e, ERR_CONFIG, "registry: subject %s too long", subject);
    strcat(path, "/");
    strcat(path, vtext);
    if (request(r, path, NULL, &status, e))
        return e->code;
    if (status != 200)
        return status_error(r, status, what, e);
    if ((rc = read_version(r, what, id, version_out, schema, e)))
        return rc;
    if (version > 0 && *version_out != version)
        return err_set(e, ERR_DECODE, "registry: %s: answered version %d", what, *version_out);
    version_put(r, subject, *version_out, *id);
    return ERR_OK;
}
