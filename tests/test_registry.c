/* Schema Registry client (common/io/registry.c) against the test registry
 * (tests/support/regserver.c, a real HTTP server on 127.0.0.1), and schema
 * evolution in the codec: messages written with an older and a newer
 * producer schema decode to what Apache Avro's Python reader resolves them
 * to (fixtures by tests/fixtures/make_registry_fixtures.py), and to the same
 * features. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "codec.h"
#include "features.h"
#include "registry.h"
#include "regserver.h"
#include "stack.h"

#define EVO "tests/fixtures/evolution"
#define MAX_MSGS 200

struct msg {
    char writer[16];
    int32_t id;
    unsigned char b[4096];
    size_t n;
};

struct fx {
    struct test_registry *srv;
    struct reg *reg;
    struct codec *c;
    struct err e;
    struct buf out;
    char dir[64];
    struct msg *msgs;
    char **expected;
    int n;
};

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *p = NULL;
    long n;

    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (p = malloc((size_t)n + 1))) {
        if (fread(p, 1, (size_t)n, f) != (size_t)n) {
            free(p);
            p = NULL;
        } else {
            p[n] = '\0';
        }
    }
    fclose(f);
    return p;
}

static int hexval(int ch)
{
    return ch <= '9' ? ch - '0' : ch - 'a' + 10;
}

static int load_messages(struct fx *f)
{
    FILE *m = fopen(EVO "/messages.txt", "r"), *x = fopen(EVO "/expected.jsonl", "r");
    static char line[16384];
    int ok = m && x;

    f->msgs = calloc(MAX_MSGS, sizeof(*f->msgs));
    f->expected = calloc(MAX_MSGS, sizeof(char *));
    while (ok && f->n < MAX_MSGS && fgets(line, sizeof(line), m)) {
        struct msg *g = &f->msgs[f->n];
        char *hex;
        int id;
        if (sscanf(line, "%15s %d", g->writer, &id) != 2 || !(hex = strrchr(line, ' ')))
            return -1;
        g->id = id;
        for (hex++; hex[0] && hex[1] && hex[0] != '\n' && g->n < sizeof(g->b); hex += 2)
            g->b[g->n++] = (unsigned char)(hexval(hex[0]) << 4 | hexval(hex[1]));
        if (!fgets(line, sizeof(line), x))
            return -1;
        f->expected[f->n++] = strdup(line);
    }
    if (m)
        fclose(m);
    if (x)
        fclose(x);
    return ok && f->n > 0 ? 0 : -1;
}

/* A schemas directory: the shipped four plus the fixture writers. */
static int make_schema_dir(struct fx *f)
{
    char cmd[600];
    FILE *ids;

    snprintf(f->dir, sizeof(f->dir), "/tmp/streamml-reg-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(cmd, sizeof(cmd), "cp schemas/*.avsc " EVO "/*.avsc '%s'/", f->dir);
    if (system(cmd) != 0)
        return -1;
    snprintf(cmd, sizeof(cmd), "%s/ids", f->dir);
    if (!(ids = fopen(cmd, "w")))
        return -1;
    fprintf(ids, "1 transaction_event.avsc\n2 transaction_prediction.avsc\n3 dead_letter.avsc\n"
                 "4 alert_event.avsc\n5 transaction_event_v0.avsc\n6 transaction_event_v2.avsc\n"
                 "7 transaction_event_badtype.avsc\n8 transaction_event_noid.avsc\n"
                 "9 image_event.avsc\n10 image_prediction.avsc\n11 label_event.avsc\n"
                 "12 click_event.avsc\n13 click_prediction.avsc\n14 click_outcome.avsc\n"
                 "15 catalog_item.avsc\n");
    fclose(ids);
    return 0;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    if (!f || !(f->srv = test_registry_start(0, NULL, NULL)) || make_schema_dir(f) ||
        load_messages(f))
        return -1;
    buf_init(&f->out, 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char cmd[200];

    codec_close(f->c);
    reg_close(f->reg);
    test_registry_free(f->srv);
    buf_free(&f->out);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", f->dir);
    for (int i = 0; i < f->n; i++)
        free(f->expected[i]);
    free(f->expected);
    free(f->msgs);
    free(f);
    return 0;
}

static struct reg *client(struct fx *f, const char *urls, const char *user, const char *pw,
                          int retries)
{
    struct reg_opts o = {.urls = urls ? urls : test_registry_url(f->srv),
                         .user = user,
                         .password = pw,
                         .verify = 1,
                         .timeout_ms = 2000,
                         .retries = retries,
                         .backoff_ms = 10};

    f->reg = reg_open(&o, &f->e);
    if (!f->reg)
        fail_msg("reg_open: %s", f->e.msg);
    return f->reg;
}

static char *fixture(const char *name)
{
    char path[300];
    char *p;

    snprintf(path, sizeof(path), "%s/%s",
             strstr(name, "_v") || strstr(name, "_bad") || strstr(name, "_noid") ? EVO : "schemas",
             name);
    p = slurp(path);
    if (!p)
        fail_msg("cannot read %s", path);
    return p;
}

/* ---- the client ---- */

static void test_schema_by_id_is_fetched_once_then_cached(void **state)
{
    struct fx *f = *state;
    char *text = fixture("transaction_event_v0.avsc");
    int id = test_registry_add(f->srv, "transactions-value", text);
    const char *got;
    unsigned before;
    struct reg_stats st;

    client(f, NULL, NULL, NULL, 0);
    assert_true(id > 0);
    assert_int_equal(reg_schema_by_id(f->reg, id, &got, &f->e), ERR_OK);
    assert_string_equal(got, text);
    before = test_registry_requests(f->srv);
    assert_int_equal(reg_schema_by_id(f->reg, id, &got, &f->e), ERR_OK);
    assert_int_equal(test_registry_requests(f->srv), before);
    reg_get_stats(f->reg, &st);
    assert_int_equal(st.cache_hits, 1);
    free(text);
}

static void test_unknown_id_is_not_found(void **state)
{
    struct fx *f = *state;
    const char *got;

    client(f, NULL, NULL, NULL, 3);
    assert_int_equal(reg_schema_by_id(f->reg, 999, &got, &f->e), ERR_NOTFOUND);
    assert_non_null(strstr(f->e.msg, "schema id 999 not found"));
    assert_non_null(strstr(f->e.msg, "40403"));
    /* A definite answer is not retried. */
    assert_int_equal(test_registry_requests(f->srv), 1);
}

static void test_register_is_idempotent_and_lookup_finds_it(void **state)
{
    struct fx *f = *state;
    char *text = fixture("transaction_prediction.avsc");
    int32_t id1 = 0, id2 = 0, id3 = 0;

    client(f, NULL, NULL, NULL, 0);
    assert_int_equal(reg_schema_id(f->reg, "predictions.transactions-value", text, 0, &id1, &f->e),
                     ERR_NOTFOUND);
    assert_int_equal(reg_schema_id(f->reg, "predictions.transactions-value", text, 1, &id1, &f->e),
                     ERR_OK);
    assert_int_equal(reg_schema_id(f->reg, "predictions.transactions-value", text, 1, &id2, &f->e),
                     ERR_OK);
    assert_int_equal(reg_schema_id(f->reg, "predictions.transactions-value", text, 0, &id3, &f->e),
                     ERR_OK);
    assert_true(id1 > 0);
    assert_int_equal(id1, id2);
    assert_int_equal(id1, id3);
    free(text);
}

static void test_incompatible_registration_is_refused(void **state)
{
    struct fx *f = *state;
    char *text = fixture("transaction_prediction.avsc");
    int32_t id = 0;

    client(f, NULL, NULL, NULL, 3);
    test_registry_set_rejecting(f->srv, 1);
    assert_int_equal(reg_schema_id(f->reg, "p-value", text, 1, &id, &f->e), ERR_CONFIG);
    assert_non_null(strstr(f->e.msg, "incompatible"));
    assert_int_equal(test_registry_requests(f->srv), 1);
    free(text);
}

static void test_basic_auth_and_the_password_never_shows(void **state)
{
    struct fx *f = *state;
    struct test_registry *srv = test_registry_start(0, "svc", "s3cret-pw");
    char *text = fixture("transaction_event.avsc");
    int id = test_registry_add(srv, "transactions-value", text);
    const char *got;

    assert_non_null(srv);
    client(f, test_registry_url(srv), NULL, NULL, 0);
    assert_int_equal(reg_schema_by_id(f->reg, id, &got, &f->e), ERR_CONFIG);
    assert_non_null(strstr(f->e.msg, "HTTP 401"));
    reg_close(f->reg);
    client(f, test_registry_url(srv), "svc", "wrong-pw", 0);
    assert_int_equal(reg_schema_by_id(f->reg, id, &got, &f->e), ERR_CONFIG);
    assert_null(strstr(f->e.msg, "wrong-pw"));
    reg_close(f->reg);
    client(f, test_registry_url(srv), "svc", "s3cret-pw", 0);
    assert_int_equal(reg_schema_by_id(f->reg, id, &got, &f->e), ERR_OK);
    assert_string_equal(got, text);
    test_registry_free(srv);
    free(text);
}

static void test_registry_down_is_retried_then_retryable(void **state)
{
    struct fx *f = *state;
    const char *got;

    client(f, NULL, NULL, NULL, 2);
    test_registry_set_failing(f->srv, 1);
    assert_int_equal(reg_schema_by_id(f->reg, 1, &got, &f->e), ERR_RETRY);
    assert_non_null(strstr(f->e.msg, "HTTP 503"));
    assert_non_null(strstr(f->e.msg, "after 3 attempt(s)"));
    assert_int_equal(test_registry_requests(f->srv), 3);
    test_registry_stop_serving(f->srv);
    assert_int_equal(reg_schema_by_id(f->reg, 1, &got, &f->e), ERR_RETRY);
    assert_non_null(strstr(f->e.msg, "127.0.0.1"));
}

static void test_next_url_is_tried_when_one_is_down(void **state)
{
    struct fx *f = *state;
    char urls[200], *text = fixture("transaction_event.avsc");
    int id = test_registry_add(f->srv, "transactions-value", text);
    const char *got;

    snprintf(urls, sizeof(urls), "http://127.0.0.1:%d, %s/", test_free_port(),
             test_registry_url(f->srv));
    client(f, urls, NULL, NULL, 0);
    assert_int_equal(reg_schema_by_id(f->reg, id, &got, &f->e), ERR_OK);
    free(text);
}

static void test_bad_urls_are_config_errors(void **state)
{
    struct fx *f = *state;
    static const char *const bad[] = {"", "ftp://x", "http://user:pw@host:8081", " , "};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct reg_opts o = {.urls = bad[i], .timeout_ms = 100};
        struct reg *r = reg_open(&o, &f->e);
        assert_null(r);
        assert_int_equal(f->e.code, ERR_CONFIG);
        assert_null(strstr(f->e.msg, "pw@"));
    }
}

/* TLS: the registry's certificate verifies against the configured CA; with
 * the system's CAs it does not, which is a definite error, not retried. */
static void test_tls_verifies_against_the_configured_ca(void **state)
{
    struct fx *f = *state;
    struct test_registry *srv = test_registry_start_tls(0, "tests/fixtures/tls/server.pem",
                                                        "tests/fixtures/tls/server.key");
    char *text = fixture("transaction_event.avsc");
    int id;
    const char *got;
    struct reg_opts o = {.ca_file = "tests/fixtures/tls/ca.pem",
                         .verify = 1,
                         .timeout_ms = 2000,
                         .retries = 3,
                         .backoff_ms = 10};

    assert_non_null(srv);
    id = test_registry_add(srv, "transactions-value", text);
    o.urls = test_registry_url(srv);
    assert_int_equal(strncmp(o.urls, "https://", 8), 0);
    f->reg = reg_open(&o, &f->e);
    assert_non_null(f->reg);
    assert_int_equal(reg_schema_by_id(f->reg, id, &got, &f->e), ERR_OK);
    assert_string_equal(got, text);
    reg_close(f->reg);
    o.ca_file = NULL;
    f->reg = reg_open(&o, &f->e);
    assert_int_equal(reg_schema_by_id(f->reg, id, &got, &f->e), ERR_CONFIG);
    assert_null(strstr(f->e.msg, "attempt"));
    reg_close(f->reg);
    o.verify = 0;
    f->reg = reg_open(&o, &f->e);
    assert_int_equal(reg_schema_by_id(f->reg, id, &got, &f->e), ERR_OK);
    test_registry_free(srv);
    free(text);
}

/* Configuration: the password only from the environment or a file, never
 * -X; it reaches the registry (basic auth) and never `config show`. */
static void test_config_password_file_reaches_the_registry(void **state)
{
    struct fx *f = *state;
    struct test_registry *srv = test_registry_start(0, "svc", "pw-from-file");
    char *text = fixture("transaction_event.avsc"), pwfile[128], kv[300];
    int id = test_registry_add(srv, "transactions-value", text);
    struct cfg *c = cfg_new();
    const char *got;
    FILE *pf;
    char *dump = NULL;
    size_t dump_len = 0;

    assert_non_null(srv);
    assert_non_null(c);
    assert_null(reg_open_cfg(c, &f->e)); /* no url: no registry, no error */
    assert_int_equal(f->e.code, ERR_OK);
    assert_int_equal(cfg_set_arg(c, "schema.registry.password=x", &f->e), ERR_CONFIG);
    snprintf(pwfile, sizeof(pwfile), "%s/sr_pw", f->dir);
    assert_non_null(pf = fopen(pwfile, "w"));
    fputs("pw-from-file\n", pf);
    fclose(pf);
    snprintf(kv, sizeof(kv), "schema.registry.url=%s", test_registry_url(srv));
    assert_int_equal(cfg_set_arg(c, kv, &f->e), 0);
    assert_int_equal(cfg_set_arg(c, "schema.registry.user=svc", &f->e), 0);
    snprintf(kv, sizeof(kv), "schema.registry.password_file=%s", pwfile);
    assert_int_equal(cfg_set_arg(c, kv, &f->e), 0);
    assert_int_equal(cfg_finish(c, &f->e), 0);
    f->reg = reg_open_cfg(c, &f->e);
    assert_non_null(f->reg);
    assert_int_equal(reg_schema_by_id(f->reg, id, &got, &f->e), ERR_OK);
    FILE *out = open_memstream(&dump, &dump_len);
    cfg_dump(c, out);
    fclose(out);
    assert_null(strstr(dump, "pw-from-file"));
    free(dump);
    cfg_free(c);
    test_registry_free(srv);
    free(text);
}

/* ---- evolution in the codec ---- */

static void assert_same_event(const struct txn_event *a, const struct txn_event *b, int row)
{
    const double *da = &a->amount, *db = &b->amount;

    if (strcmp(a->event_id, b->event_id) || strcmp(a->user_id, b->user_id) ||
        a->event_time_ms != b->event_time_ms || strcmp(a->home, b->home) ||
        strcmp(a->marital, b->marital) || strcmp(a->job, b->job) ||
        a->past_records != b->past_records || a->label != b->label)
        fail_msg("row %d (%s): ids, categories, flags or label differ", row, a->event_id);
    /* amount .. age and credit_limit .. avg_account_age_months are runs of
     * consecutive doubles in struct txn_event. */
    for (int k = 0; &da[k] <= &a->age; k++)
        if (!(da[k] == db[k] || (isnan(da[k]) && isnan(db[k]))))
            fail_msg("row %d (%s): double %d: %.17g vs %.17g", row, a->event_id, k, da[k], db[k]);
    da = &a->credit_limit, db = &b->credit_limit;
    for (int k = 0; &da[k] <= &a->avg_account_age_months; k++)
        if (!(da[k] == db[k] || (isnan(da[k]) && isnan(db[k]))))
            fail_msg("row %d (%s): bureau double %d: %.17g vs %.17g", row, a->event_id, k, da[k],
                     db[k]);
}

static void features_of(const struct txn_event *ev, float *x)
{
    struct feat_state st;

    feat_state_init(&st);
    feat_txn_build(ev, &st, x);
}

static void check_against_python(struct fx *f, int32_t v0_id, int32_t v2_id)
{
    float x[3][FEAT_TXN_DIM];

    for (int i = 0; i < f->n; i++) {
        struct msg *g = &f->msgs[i];
        struct txn_event got, want;
        int32_t id = !strcmp(g->writer, "v0") ? v0_id : !strcmp(g->writer, "v2") ? v2_id : g->id;

        g->b[1] = (unsigned char)(id >> 24), g->b[2] = (unsigned char)(id >> 16);
        g->b[3] = (unsigned char)(id >> 8), g->b[4] = (unsigned char)id;
        if (codec_decode_txn(f->c, g->b, g->n, &got, &f->e))
            fail_msg("row %d (%s writer): %s", i, g->writer, f->e.msg);
        assert_int_equal(codec_txn_from_json(f->expected[i], strlen(f->expected[i]), &want, &f->e),
                         0);
        assert_same_event(&got, &want, i);
        /* Rows come as (reader, v0, v2) writings of one event. */
        features_of(&got, x[i % 3]);
        if (i % 3 == 2)
            for (int k = 0; k < FEAT_TXN_DIM; k++)
                if (memcmp(&x[0][k], &x[1][k], sizeof(float)) ||
                    memcmp(&x[0][k], &x[2][k], sizeof(float)))
                    fail_msg("event %s: feature %s differs across writers", got.event_id,
                             feat_txn_names()[k]);
    }
}

static void test_old_and_new_writers_decode_as_python_resolves(void **state)
{
    struct fx *f = *state;

    f->c = codec_open(f->dir, &f->e);
    if (!f->c)
        fail_msg("codec_open: %s", f->e.msg);
    check_against_python(f, 5, 6);
}

static void test_incompatible_writers_are_decode_errors(void **state)
{
    struct fx *f = *state;
    struct txn_event ev;
    static const char ev_json[] = "{\"event_id\":\"e1\",\"user_id\":\"u1\",\"event_time\":1,"
                                  "\"amount\":\"12.5\"}";
    static const char noid_json[] = "{\"event_id\":\"e1\",\"event_time\":1}";
    char key[64];

    f->c = codec_open(f->dir, &f->e);
    assert_non_null(f->c);
    assert_int_equal(codec_from_json_id(f->c, 7, ev_json, strlen(ev_json), "user_id", key,
                                        sizeof(key), &f->out, &f->e),
                     0);
    assert_string_equal(key, "u1");
    assert_int_equal(codec_decode_txn(f->c, f->out.data, f->out.len, &ev, &f->e), ERR_DECODE);
    if (!strstr(f->e.msg, "cannot be read"))
        fail_msg("%s", f->e.msg);
    assert_non_null(strstr(f->e.msg,
                           "writer schema id 7 (transaction_event_badtype.avsc) cannot be read as "
                           "transaction_event.avsc"));
    assert_non_null(strstr(f->e.msg, "field amount"));
    assert_string_equal(ev.event_id, "");
    /* As with Java's resolving decoder, only a message that uses the
     * unreadable branch fails: a null amount from the same writer reads. */
    static const char null_amount[] = "{\"event_id\":\"e2\",\"user_id\":\"u1\",\"event_time\":1}";
    assert_int_equal(
        codec_from_json_id(f->c, 7, null_amount, strlen(null_amount), NULL, key, 0, &f->out, &f->e),
        0);
    assert_int_equal(codec_decode_txn(f->c, f->out.data, f->out.len, &ev, &f->e), ERR_OK);
    assert_true(isnan(ev.amount));
    assert_int_equal(
        codec_from_json_id(f->c, 8, noid_json, strlen(noid_json), NULL, key, 0, &f->out, &f->e), 0);
    assert_int_equal(codec_decode_txn(f->c, f->out.data, f->out.len, &ev, &f->e), ERR_DECODE);
    assert_non_null(
        strstr(f->e.msg, "reader field user_id is not in the writer and has no default"));
}

static void test_prediction_is_not_read_as_an_event(void **state)
{
    struct fx *f = *state;
    struct txn_prediction p;
    struct txn_event ev;

    f->c = codec_open(f->dir, &f->e);
    assert_non_null(f->c);
    memset(&p, 0, sizeof(p));
    strcpy(p.event_id, "e1");
    strcpy(p.user_id, "u1");
    strcpy(p.decision, "approve");
    assert_int_equal(codec_encode_prediction(f->c, &p, &f->out, &f->e), 0);
    assert_int_equal(codec_decode_txn(f->c, f->out.data, f->out.len, &ev, &f->e), ERR_DECODE);
    assert_non_null(strstr(f->e.msg, "record TransactionPrediction is not TransactionEvent"));
}

/* ---- the codec with a registry ---- */

static void registry_codec(struct fx *f)
{
    client(f, NULL, NULL, NULL, 0);
    f->c = codec_open(f->dir, &f->e);
    assert_non_null(f->c);
    codec_use_registry(f->c, f->reg);
}

static void test_registry_writers_decode_as_python_resolves(void **state)
{
    struct fx *f = *state;
    char *v0 = fixture("transaction_event_v0.avsc"), *v2 = fixture("transaction_event_v2.avsc");
    char *rd = fixture("transaction_event.avsc");
    int id0 = test_registry_add(f->srv, "transactions-value", v0);
    int id2 = test_registry_add(f->srv, "transactions-value", v2);
    int idr = test_registry_add(f->srv, "transactions-value", rd);

    registry_codec(f);
    /* The reader rows' id becomes the registry's id of our own schema. */
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->msgs[i].writer, "reader"))
            f->msgs[i].id = idr;
    check_against_python(f, id0, id2);
    /* Three schemas fetched once each, however many messages. */
    assert_int_equal(test_registry_requests(f->srv), 3);
    free(v0);
    free(v2);
    free(rd);
}

static void frame(struct msg *g, int32_t id)
{
    g->b[1] = (unsigned char)(id >> 24), g->b[2] = (unsigned char)(id >> 16);
    g->b[3] = (unsigned char)(id >> 8), g->b[4] = (unsigned char)id;
}

static void test_registry_down_cached_ids_keep_working(void **state)
{
    struct fx *f = *state;
    char *v0 = fixture("transaction_event_v0.avsc"), *v2 = fixture("transaction_event_v2.avsc");
    int id0 = test_registry_add(f->srv, "transactions-value", v0);
    int id2 = test_registry_add(f->srv, "transactions-value", v2);
    struct msg *m0 = &f->msgs[1], *m2 = &f->msgs[2];
    struct txn_event ev;

    assert_string_equal(m0->writer, "v0");
    assert_string_equal(m2->writer, "v2");
    frame(m0, id0);
    frame(m2, id2);
    registry_codec(f);
    assert_int_equal(codec_decode_txn(f->c, m0->b, m0->n, &ev, &f->e), ERR_OK);
    test_registry_stop_serving(f->srv);
    /* Cached: still decodes. Not cached: retryable, never a decode error. */
    assert_int_equal(codec_decode_txn(f->c, m0->b, m0->n, &ev, &f->e), ERR_OK);
    assert_string_equal(ev.event_id, "ev000");
    assert_int_equal(codec_decode_txn(f->c, m2->b, m2->n, &ev, &f->e), ERR_RETRY);
    assert_non_null(strstr(f->e.msg, "schema id"));
    assert_int_equal(test_registry_restart(f->srv), 0);
    assert_int_equal(codec_decode_txn(f->c, m2->b, m2->n, &ev, &f->e), ERR_OK);
    assert_string_equal(ev.event_id, "ev000");
    free(v0);
    free(v2);
}

static void test_registry_unknown_id_is_a_decode_error(void **state)
{
    struct fx *f = *state;
    struct msg *g = &f->msgs[0];
    struct txn_event ev;

    registry_codec(f);
    frame(g, 4242);
    assert_int_equal(codec_decode_txn(f->c, g->b, g->n, &ev, &f->e), ERR_DECODE);
    assert_non_null(strstr(f->e.msg, "schema id 4242"));
    assert_non_null(strstr(f->e.msg, "not found"));
}

static void test_outputs_are_framed_with_registered_ids(void **state)
{
    struct fx *f = *state;
    struct txn_prediction p;
    struct codec *reader;
    struct buf json;
    int32_t id;

    registry_codec(f);
    assert_int_equal(codec_schema_id(f->c, CODEC_TXN_PREDICTION), 0);
    memset(&p, 0, sizeof(p));
    strcpy(p.event_id, "e1");
    strcpy(p.decision, "approve");
    /* Not registered yet: refused rather than framed with a local id. */
    assert_int_equal(codec_encode_prediction(f->c, &p, &f->out, &f->e), ERR_CONFIG);
    assert_int_equal(
        codec_register(f->c, CODEC_TXN_PREDICTION, "predictions.transactions", 1, &f->e), 0);
    id = codec_schema_id(f->c, CODEC_TXN_PREDICTION);
    assert_true(id > 0);
    assert_int_equal(codec_encode_prediction(f->c, &p, &f->out, &f->e), 0);
    assert_int_equal(f->out.data[4], id & 0xff);
    /* Another process (streamml consume) resolves the id through the registry. */
    reader = codec_open("schemas", &f->e);
    assert_non_null(reader);
    struct reg_opts o = {.urls = test_registry_url(f->srv), .timeout_ms = 2000};
    struct reg *r2 = reg_open(&o, &f->e);
    codec_use_registry(reader, r2);
    buf_init(&json, 0);
    assert_int_equal(codec_to_json(reader, f->out.data, f->out.len, &json, &f->e), 0);
    assert_non_null(strstr((char *)json.data, "\"event_id\":\"e1\""));
    buf_free(&json);
    codec_close(reader);
    reg_close(r2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_schema_by_id_is_fetched_once_then_cached, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unknown_id_is_not_found, setup, teardown),
        cmocka_unit_test_setup_teardown(test_register_is_idempotent_and_lookup_finds_it, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_incompatible_registration_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_basic_auth_and_the_password_never_shows, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_registry_down_is_retried_then_retryable, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_next_url_is_tried_when_one_is_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_urls_are_config_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_password_file_reaches_the_registry, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_tls_verifies_against_the_configured_ca, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_old_and_new_writers_decode_as_python_resolves, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_incompatible_writers_are_decode_errors, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_prediction_is_not_read_as_an_event, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_writers_decode_as_python_resolves, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_registry_down_cached_ids_keep_working, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_registry_unknown_id_is_a_decode_error, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_outputs_are_framed_with_registered_ids, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
