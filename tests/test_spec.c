/* tests/test_spec.c: feature specs (common/streams/fspec.h): the refusals a user
 * meets (each one line naming file:line), the operators and aggregates on
 * hand-computed values through the generic row binding, and what happens to
 * stored state when a spec changes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "features.h"
#include "fspec.h"
#include "cfg.h"
#include "txn.h"

#define T0 1699963200000LL /* 2023-11-14T12:00:00Z: on a 5-min, hour and day boundary */
#define MIN_MS 60000LL

static const char *const schema =
    "{\"type\": \"record\", \"name\": \"Acct\", \"fields\": ["
    "{\"name\": \"account\", \"type\": \"string\"},"
    "{\"name\": \"ts\", \"type\": {\"type\": \"long\", \"logicalType\": \"timestamp-millis\"}},"
    "{\"name\": \"balance\", \"type\": [\"null\", \"double\"]},"
    "{\"name\": \"limit\", \"type\": [\"null\", \"double\"]},"
    "{\"name\": \"flagged\", \"type\": [\"null\", \"boolean\"]},"
    "{\"name\": \"region\", \"type\": [\"null\", \"string\"]}]}";

#define HEAD "name: acct-v1\ninput: {schema: acct.avsc, key: account, time: ts}\nfeatures:\n"

static struct fspec *open_text(const char *text, struct err *e)
{
    return fspec_open_text(text, strlen(text), "acct.yaml", NULL, schema, e);
}

/* The spec is refused; the message starts with file:line and holds want. */
static void refused(const char *text, int line, const char *want)
{
    struct err e = {0};
    struct fspec *p = open_text(text, &e);
    char prefix[32];

    if (p) {
        fspec_close(p);
        fail_msg("accepted, expected \"%s\" at line %d", want, line);
    }
    snprintf(prefix, sizeof(prefix), "acct.yaml:%d: ", line);
    if (e.code != ERR_CONFIG || strncmp(e.msg, prefix, strlen(prefix)) != 0 ||
        !strstr(e.msg, want) || strchr(e.msg, '\n'))
        fail_msg("got \"%s\", expected one line \"%s...%s...\"", e.msg, prefix, want);
}

static void test_bad_specs_are_refused_naming_the_line(void **state)
{
    (void)state;
    /* unknown field */
    refused(HEAD "  - {name: ratio, expr: balance / limt}\n", 4, "\"limt\"");
    /* type mismatch: a string field in arithmetic, a number mapped to codes */
    refused(HEAD "  - {name: a, expr: balance}\n  - {name: b, expr: region * 2}\n", 5,
            "type mismatch");
    refused(HEAD "  - name: c\n    codes: {field: balance, map: [x]}\n", 4, "type mismatch");
    /* a cycle between features */
    refused(HEAD "  - {name: a, expr: b + 1}\n  - {name: b, expr: a * 2}\n", 4,
            "cycle between features: a -> b -> a");
    /* a window shorter than its bucket */
    refused(HEAD "  - {name: n, agg: count, window: 5m, bucket: 1h}\n", 4,
            "window (300000 ms) shorter than its bucket (3600000 ms)");
    /* a duplicate name */
    refused(HEAD "  - {name: a, expr: balance}\n  - {name: a, expr: limit}\n", 5,
            "duplicate feature name \"a\" (first at line 4)");
    /* a typo in a key, an unknown aggregate, a bad duration, bad YAML */
    refused(HEAD "  - {name: a, exrp: balance}\n", 4, "unknown key");
    refused(HEAD "  - {name: a, agg: median, of: balance, window: 1h, bucket: 5m}\n", 4,
            "not an aggregate");
    refused(HEAD "  - {name: a, agg: sum, of: balance, window: 1y, bucket: 5m}\n", 4, "unit");
    refused(HEAD "  - {name: a, expr: (balance}\n", 4, "expected ')'");
    refused(HEAD "  - {name: a, expr: balance\n", 5, "YAML");
    refused("name: x\ninput: {schema: a.avsc, key: nokey, time: ts}\nfeatures:\n"
            "  - {name: a, expr: balance}\n",
            2, "input.key: unknown field \"nokey\"");
    refused("name: x\ninput: {schema: a.avsc, key: account, time: balance}\nfeatures:\n"
            "  - {name: a, expr: balance}\n",
            2, "must be a long");
    refused(HEAD "  - {name: a, expr: balance}\noutput: [a, b]\n", 5, "unknown feature \"b\"");
}

/* A plan on struct fspec_row for one record at a time. */
struct rows {
    struct fspec *p;
    struct fspec_row r;
    struct fspec_state s;
    float x[16];
};

static void rows_open(struct rows *t, const char *text)
{
    struct err e = {0};

    memset(t, 0, sizeof(*t));
    t->p = open_text(text, &e);
    if (!t->p)
        fail_msg("%s", e.msg);
    assert_int_equal(fspec_bind_row(t->p, &e), ERR_OK);
    assert_int_equal(fspec_row_init(t->p, &t->r), ERR_OK);
    fspec_state_init(&t->s);
}

static void rows_close(struct rows *t)
{
    fspec_row_free(&t->r);
    fspec_close(t->p);
}

/* Scores (time, balance) against the state before it, then applies it. */
static void step(struct rows *t, int64_t ts, double balance, const char *region)
{
    fspec_row_clear(t->p, &t->r);
    t->r.time_ms = ts;
    t->r.num[fspec_field_index(t->p, "balance")] = balance;
    snprintf(t->r.str + (size_t)fspec_field_index(t->p, "region") * FSPEC_NAME_MAX,
             FSPEC_NAME_MAX, "%s", region);
    fspec_build(t->p, &t->r, &t->s, t->x);
    fspec_update(t->p, &t->r, &t->s, &t->s);
}

static float out(const struct rows *t, const char *name)
{
    int i = fspec_index(t->p, name);

    if (i < 0)
        fail_msg("no output %s", name);
    return t->x[i];
}

static void test_row_operators_and_missing_values(void **state)
{
    struct rows t;

    (void)state;
    rows_open(&t, HEAD "  - {name: plus_one, expr: balance / (limit + 1)}\n"
                       "  - {name: nan_div, expr: balance / limit}\n"
                       "  - {name: big, expr: balance > 100}\n"
                       "  - {name: clipped, expr: \"clip(balance, 0, 50)\"}\n"
                       "  - {name: logged, expr: log(balance)}\n"
                       "  - {name: filled, expr: \"coalesce(limit, -1)\"}\n"
                       "  - name: region_code\n"
                       "    codes: {field: region, map: {north: 10, south: 20}, unknown: -1}\n");
    fspec_row_clear(t.p, &t.r);
    t.r.time_ms = T0;
    t.r.num[fspec_field_index(t.p, "balance")] = 200;
    t.r.num[fspec_field_index(t.p, "limit")] = 0;
    strcpy(t.r.str + (size_t)fspec_field_index(t.p, "region") * FSPEC_NAME_MAX, "South");
    fspec_build(t.p, &t.r, &t.s, t.x);
    assert_true(out(&t, "plus_one") == 200.0f); /* 200 / (0 + 1) */
    assert_true(isnan(out(&t, "nan_div")));     /* a zero denominator: NaN, not Inf */
    assert_true(out(&t, "big") == 1.0f);
    assert_true(out(&t, "clipped") == 50.0f);
    assert_true(out(&t, "logged") == (float)log(200.0));
    assert_true(out(&t, "filled") == 0.0f);
    assert_true(out(&t, "region_code") == 20.0f); /* case-insensitive */
    fspec_row_clear(t.p, &t.r); /* everything missing */
    t.r.time_ms = T0;
    strcpy(t.r.str + (size_t)fspec_field_index(t.p, "region") * FSPEC_NAME_MAX, "east");
    fspec_build(t.p, &t.r, &t.s, t.x);
    assert_true(isnan(out(&t, "plus_one")));
    assert_true(isnan(out(&t, "big"))); /* a missing input never becomes 0 */
    assert_true(isnan(out(&t, "clipped")));
    assert_true(out(&t, "filled") == -1.0f);
    assert_true(out(&t, "region_code") == -1.0f);
    rows_close(&t);
}

static void test_window_aggregates_on_hand_computed_values(void **state)
{
    struct rows t;

    (void)state;
    rows_open(&t, HEAD "  - {name: n, agg: count, window: 1h, bucket: 5m}\n"
                       "  - {name: total, agg: sum, of: balance, window: 1h, bucket: 5m}\n"
                       "  - {name: avg, agg: mean, of: balance, window: 1h, bucket: 5m}\n"
                       "  - {name: lo, agg: min, of: balance, window: 1h, bucket: 5m}\n"
                       "  - {name: hi, agg: max, of: balance, window: 1h, bucket: 5m}\n"
                       "  - {name: sd, agg: std, of: balance, window: 1h, bucket: 5m}\n"
                       "  - {name: prev, agg: last, of: balance}\n"
                       "  - {name: gap, agg: since_prev}\n"
                       "  - {name: z, agg: zscore, of: balance}\n");
    step(&t, T0, 10, "");
    assert_true(out(&t, "n") == 1 && out(&t, "total") == 10 && out(&t, "avg") == 10);
    assert_true(isnan(out(&t, "sd")) && isnan(out(&t, "prev")) && isnan(out(&t, "gap")));
    step(&t, T0 + 10 * MIN_MS, NAN, ""); /* counts, adds no value */
    assert_true(out(&t, "n") == 2 && out(&t, "total") == 10 && out(&t, "avg") == 10);
    assert_true(out(&t, "prev") == 10 && out(&t, "gap") == 600);
    step(&t, T0 + 20 * MIN_MS, 30, "");
    /* 10 and 30: mean 20, sample std sqrt(200), min 10, max 30 */
    assert_true(out(&t, "n") == 3 && out(&t, "total") == 40 && out(&t, "avg") == 20);
    assert_true(out(&t, "lo") == 10 && out(&t, "hi") == 30);
    assert_true(fabsf(out(&t, "sd") - (float)sqrt(200.0)) < 1e-4f);
    assert_true(isnan(out(&t, "z"))); /* one previous value: no spread yet */
    step(&t, T0 + 90 * MIN_MS, 50, ""); /* 70 min after the 20-min one: the window has moved */
    assert_true(out(&t, "n") == 1 && out(&t, "total") == 50 && out(&t, "lo") == 50);
    assert_true(out(&t, "prev") == 30);
    /* history 10, 30: mean 20, std sqrt(200): z = 30 / sqrt(200) */
    assert_true(fabsf(out(&t, "z") - (float)(30 / sqrt(200.0))) < 1e-5f);
    step(&t, T0 + 80 * MIN_MS, 1, ""); /* late: sees no future, is not "last" */
    assert_true(out(&t, "gap") == 0);
    step(&t, T0 + 91 * MIN_MS, 5, "");
    assert_true(out(&t, "prev") == 50);
    assert_true(out(&t, "n") == 3); /* 80 (late, inside the ring), 90, itself */
    rows_close(&t);
}

/* Event times before 1970 (yearly panels start in the 1930s): the first
 * event is "the previous one" for the second, and windows count right. */
static void test_event_times_before_1970(void **state)
{
    const int64_t y1935 = -1104537600000LL, year = 365LL * 86400000;
    struct rows t;
    unsigned char buf[FSPEC_STATE_MAX];
    struct fspec_state back;
    struct err e = {0};
    int n;

    (void)state;
    rows_open(&t, HEAD "  - {name: gap, agg: since_prev}\n"
                       "  - {name: n3, agg: count, window: 1095d, bucket: 365d}\n"
                       "  - {name: prev, agg: last, of: balance}\n");
    step(&t, y1935, 1, "");
    assert_true(isnan(out(&t, "gap")) && out(&t, "n3") == 1);
    step(&t, y1935 + year, 2, "");
    assert_true(out(&t, "gap") == (float)(year / 1000) && out(&t, "prev") == 1);
    assert_true(out(&t, "n3") == 2);
    step(&t, y1935 + 3 * year, 3, "");
    assert_true(out(&t, "n3") == 2 && out(&t, "prev") == 2); /* 1935 has left the window */
    n = fspec_state_encode(t.p, &t.s, buf, sizeof(buf));
    assert_true(n > 0);
    assert_int_equal(fspec_state_decode(t.p, &back, buf, (size_t)n, &e), ERR_OK);
    assert_memory_equal(&back, &t.s, 8 + fspec_state_words(t.p) * 8);
    rows_close(&t);
}

/* Stored state and a changed spec: other aggregates -> refused (the entity
 * starts afresh), only row features changed -> read as before. */
static void test_changed_spec_never_misreads_old_state(void **state)
{
    const char *a = HEAD "  - {name: s, agg: sum, of: balance, window: 1h, bucket: 5m}\n"
                         "  - {name: r, expr: balance / 2}\n";
    const char *rows_only = HEAD "  - {name: s, agg: sum, of: balance, window: 1h, bucket: 5m}\n"
                                 "  - {name: r, expr: balance / 4}\n"
                                 "  - {name: extra, expr: balance + 1}\n";
    const char *wider = HEAD "  - {name: s, agg: sum, of: balance, window: 2h, bucket: 5m}\n"
                             "  - {name: r, expr: balance / 2}\n";
    struct rows t;
    struct fspec *p2;
    struct fspec_state back;
    unsigned char buf[FSPEC_STATE_MAX];
    struct err e = {0};
    int n;

    (void)state;
    rows_open(&t, a);
    step(&t, T0, 7, "");
    step(&t, T0 + MIN_MS, 8, "");
    n = fspec_state_encode(t.p, &t.s, buf, sizeof(buf));
    assert_true(n > 0);
    p2 = open_text(rows_only, &e);
    assert_non_null(p2);
    assert_int_equal(fspec_layout_hash(p2), fspec_layout_hash(t.p));
    assert_int_equal(fspec_state_decode(p2, &back, buf, (size_t)n, &e), ERR_OK);
    assert_memory_equal(&back, &t.s, 8 + fspec_state_words(t.p) * 8);
    fspec_close(p2);
    p2 = open_text(wider, &e);
    assert_non_null(p2);
    assert_true(fspec_layout_hash(p2) != fspec_layout_hash(t.p));
    assert_int_equal(fspec_state_decode(p2, &back, buf, (size_t)n, &e), ERR_DECODE);
    assert_non_null(strstr(e.msg, "state layout"));
    assert_int_equal(back.last_event_ms, 0); /* afresh, nothing half-read */
    fspec_close(p2);
    rows_close(&t);
}

/* The transactions entry points take another spec on the same schema
 * (struct txn_event), and one on another record (its rows), any width. */
static void test_feat_txn_use_binds_to_the_transaction_event(void **state)
{
    char dir[] = "/tmp/test_spec_XXXXXX", path[256];
    struct err e = {0};
    FILE *f;

    (void)state;
    assert_int_equal(feat_txn_use("models/txn-v1.yaml", &e), ERR_OK);
    assert_string_equal(feat_txn_version(), "txn-v1");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/acct.avsc", dir);
    f = fopen(path, "w");
    fputs(schema, f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/acct.yaml", dir);
    f = fopen(path, "w");
    fputs(HEAD "  - {name: a, expr: balance}\n", f);
    fclose(f);
    /* Another record: served from its own rows (txn_input.h), any width. */
    assert_int_equal(feat_txn_use(path, &e), ERR_OK);
    assert_int_equal(feat_txn_reads_rec(), 1);
    assert_int_equal(feat_txn_dim(), 1);
    assert_int_equal(feat_txn_use("models/txn-v1.yaml", &e), ERR_OK);
    assert_int_equal(feat_txn_reads_rec(), 0);
    assert_int_equal(feat_txn_dim(), FEAT_TXN_DIM);
    assert_int_equal(feat_txn_use("models/no-such.yaml", &e), ERR_IO);
    assert_string_equal(feat_txn_version(), "txn-v1"); /* the previous plan stays */
    assert_int_equal(feat_txn_use(NULL, &e), ERR_OK); /* back to the built-in */
    remove(path);
    snprintf(path, sizeof(path), "%s/acct.avsc", dir);
    remove(path);
    rmdir(dir);
}

/* features.spec in the worker's configuration: the models' names are
 * matched to the spec's outputs (a mismatch names what is missing and what
 * is left over); an empty model.scorecard is a plain probability model. */
static void test_scorer_matches_model_names_to_the_spec(void **state)
{
    char dir[] = "/tmp/test_spec_XXXXXX", path[256], line[512], cwd[200];
    struct cfg *c = cfg_new();
    struct err e = {0};
    struct txn_scorer *sc;
    struct txn_prediction pr;
    float x[FEAT_TXN_DIM] = {0};
    FILE *in, *out;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/renamed.yaml", dir);
    in = fopen("models/txn-v1.yaml", "r");
    out = fopen(path, "w");
    assert_non_null(in);
    assert_non_null(out);
    /* the schema path inside is relative to the spec: point it at ours */
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    while (fgets(line, sizeof(line), in)) {
        if (strstr(line, "schema: ../schemas/"))
            fprintf(out, "  schema: %s/schemas/transaction_event.avsc\n", cwd);
        else if (strstr(line, "{name: debt_to_income,"))
            fputs("  - {name: dti, expr: debt / income}\n", out);
        else
            fputs(line, out);
    }
    fclose(in);
    fclose(out);
    assert_int_equal(cfg_set(c, "features.spec", path, "test", &e), ERR_OK);
    assert_null(txn_scorer_open(c, &e));
    assert_int_equal(e.code, ERR_CONFIG);
    assert_non_null(strstr(e.msg, "missing from the spec: \"debt_to_income\""));
    assert_non_null(strstr(e.msg, "in the spec, not the model: \"dti\""));
    feat_txn_use(NULL, &e);
    /* the built-in spec, no scorecard: a plain probability model */
    assert_int_equal(cfg_set(c, "features.spec", "", "test", &e), ERR_OK);
    assert_int_equal(cfg_set(c, "model.scorecard", "", "test", &e), ERR_OK);
    assert_non_null(sc = txn_scorer_open(c, &e));
    memset(&pr, 0, sizeof(pr));
    for (int i = 0; i < FEAT_TXN_DIM; i++)
        x[i] = NAN;
    txn_score(sc, x, &pr);
    assert_true(pr.probability > 0 && pr.probability < 1);
    assert_int_equal(pr.score, 0);
    /* no scorecard, no scorecard reasons; reasons, for review/decline, come
     * from the gbdt that decided (issue 18) */
    assert_int_equal(pr.n_card_reasons, 0);
    assert_int_equal(pr.n_reasons > 0, strcmp(pr.decision, "approve") != 0);
    assert_string_equal(pr.feature_version, "txn-v1");
    txn_scorer_close(sc);
    cfg_free(c);
    remove(path);
    path[strlen(path) - strlen("/renamed.yaml")] = '\0';
    rmdir(path);
}

/* A serving worker's spec stays until restart (feat_txn_freeze): a reload
 * naming it unchanged goes on; a changed one is refused naming what a
 * restart does to stored state, and the running plan stays. */
static void write_spec(const char *path, const char *feats)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    fputs(HEAD, f);
    fputs(feats, f);
    fclose(f);
}

static void test_reload_of_a_changed_spec_is_refused(void **state)
{
    char dir[] = "/tmp/test_spec_XXXXXX", avsc[256], path[256];
    struct err e = {0};
    FILE *f;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(avsc, sizeof(avsc), "%s/acct.avsc", dir);
    f = fopen(avsc, "w");
    fputs(schema, f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/acct.yaml", dir);
    write_spec(path, "  - {name: a, expr: balance}\n"
                     "  - {name: s, agg: sum, of: balance, window: 1d, bucket: 1h}\n");
    assert_int_equal(feat_txn_use(path, &e), ERR_OK);
    feat_txn_freeze(1);
    assert_int_equal(feat_txn_use(path, &e), ERR_OK); /* a reload, unchanged */
    write_spec(path, "  - {name: a, expr: balance * 2}\n"
                     "  - {name: s, agg: sum, of: balance, window: 1d, bucket: 1h}\n");
    assert_int_equal(feat_txn_use(path, &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "until restarted"));
    assert_non_null(strstr(e.msg, "read as before (same state layout)"));
    write_spec(path, "  - {name: a, expr: balance}\n"
                     "  - {name: s, agg: sum, of: balance, window: 2d, bucket: 1h}\n");
    assert_int_equal(feat_txn_use(path, &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "those entities start afresh"));
    assert_int_equal(feat_txn_use(NULL, &e), ERR_CONFIG); /* nor back to txn-v1 */
    assert_int_equal(feat_txn_use("models/txn-v1.yaml", &e), ERR_CONFIG);
    assert_string_equal(feat_txn_version(), "acct-v1"); /* still serving */
    assert_int_equal(feat_txn_dim(), 2);
    feat_txn_freeze(0);
    assert_int_equal(feat_txn_use(NULL, &e), ERR_OK);
    remove(path);
    remove(avsc);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_specs_are_refused_naming_the_line),
        cmocka_unit_test(test_row_operators_and_missing_values),
        cmocka_unit_test(test_window_aggregates_on_hand_computed_values),
        cmocka_unit_test(test_event_times_before_1970),
        cmocka_unit_test(test_changed_spec_never_misreads_old_state),
        cmocka_unit_test(test_feat_txn_use_binds_to_the_transaction_event),
        cmocka_unit_test(test_scorer_matches_model_names_to_the_spec),
        cmocka_unit_test(test_reload_of_a_changed_spec_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
