/* Online/offline parity of the second example (models/grunfeld): the
 * transactions worker serving a spec on its own record (FirmYear, keyed by
 * firm, years 1935-1954) through the embedded broker and a real Redis,
 * against `streamml replay` and `streamml featurize --spec` on the same
 * events. Features bit-equal (the worker's published feature_hash is the
 * hash of featurize's and replay's vectors; replay's vector equals
 * featurize's bit for bit); scores equal to replay's and within 1e-6 of
 * `streamml predict` and of xgboost's own (tests/fixtures/grunfeld,
 * tests/fixtures/make_grunfeld_fixtures.py). One bad event of that schema
 * (an empty firm) is dead-lettered naming the field, and refused offline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "features.h"
#include "stack.h"

#define N_EVENTS 220 /* 11 firms x 20 years */
#define DIM 13
#define FIX "tests/fixtures/grunfeld/"
#define SPEC "models/grunfeld/grunfeld-v1.yaml"
#define TOPICS "grunfeld:3,predictions.grunfeld:3,grunfeld.dlq:1"

struct pred {
    int seen, has_x;
    double probability;
    char hash[17];
    float x[DIM];
};

struct env {
    struct test_redis redis;
    struct test_broker broker;
    char dir[128], events[200], redis_port[32];
    char ids[N_EVENTS][80]; /* "<firm>@<year_start>" of each fixture line */
    double xgb[N_EVENTS];   /* xgboost's probability, by event */
    struct pred worker[N_EVENTS], replay[N_EVENTS], featurize[N_EVENTS];
    double predict[N_EVENTS];
};

static char *path(struct env *v, const char *name)
{
    static char buf[4][300];
    static int k;
    char *p = buf[k++ % 4];

    snprintf(p, 300, "%s/%s", v->dir, name);
    return p;
}

static int event_no(const struct env *v, const char *id)
{
    for (int i = 0; id && i < N_EVENTS; i++)
        if (strcmp(v->ids[i], id) == 0)
            return i;
    return -1;
}

/* The fixture's events, then one whose entity key is empty. */
static void write_events(struct env *v)
{
    FILE *in = fopen(FIX "events.jsonl", "r"), *out = fopen(v->events, "w");
    char *line = NULL;
    size_t cap = 0;
    int n = 0;

    assert_non_null(in);
    assert_non_null(out);
    while (getline(&line, &cap, in) > 0) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        assert_non_null(j);
        assert_true(n < N_EVENTS);
        snprintf(v->ids[n++], sizeof(v->ids[0]), "%s@%lld",
                 json_string_value(json_object_get(j, "firm")),
                 (long long)json_integer_value(json_object_get(j, "year_start")));
        json_decref(j);
        fputs(line, out);
    }
    assert_int_equal(n, N_EVENTS);
    fputs("{\"firm\": \"\", \"year_start\": -568080000000, \"invest\": 1.0, \"value\": 2.0, "
          "\"capital\": 3.0}\n",
          out);
    free(line);
    fclose(in);
    fclose(out);
}

static int setup(void **st)
{
    struct env *v = calloc(1, sizeof(*v));

    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-specw-XXXXXX");
    if (!mkdtemp(v->dir) || test_redis_start(&v->redis) || test_broker_start(&v->broker, TOPICS))
        return -1;
    snprintf(v->events, sizeof(v->events), "%s/events.jsonl", v->dir);
    snprintf(v->redis_port, sizeof(v->redis_port), "redis.port=%d", v->redis.port);
    *st = v;
    return 0;
}

static int teardown(void **st)
{
    struct env *v = *st;
    char cmd[200];

    test_broker_stop(&v->broker);
    test_redis_stop(&v->redis);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", v->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", v->dir);
    free(v);
    return 0;
}

static float to_float(json_t *x)
{
    char s[64];

    if (json_is_null(x))
        return NAN;
    snprintf(s, sizeof(s), "%.17g", json_number_value(x)); /* %.9g floats round-trip */
    return strtof(s, NULL);
}

/* Predictions as JSON lines (consume, or replay -o) by event number. */
static long read_preds(struct env *v, const char *file, struct pred *out)
{
    char *line = NULL;
    size_t cap = 0;
    long n = 0;
    FILE *f = fopen(file, "r");

    assert_non_null(f);
    while (getline(&line, &cap, f) > 0) {
        json_error_t je;
        json_t *j, *xs;
        struct pred *p;
        int id;
        if (line[0] != '{')
            continue;
        j = json_loads(line, 0, &je);
        assert_non_null(j);
        id = event_no(v, json_string_value(json_object_get(j, "event_id")));
        if (id < 0)
            fail_msg("unknown event_id in %s: %s", file, line);
        p = &out[id];
        p->seen++;
        p->probability = json_number_value(json_object_get(j, "probability"));
        assert_string_equal(json_string_value(json_object_get(j, "feature_version")),
                            "grunfeld-v1");
        snprintf(p->hash, sizeof(p->hash), "%s",
                 json_string_value(json_object_get(j, "feature_hash")));
        if ((xs = json_object_get(j, "features"))) {
            assert_int_equal(json_array_size(xs), DIM);
            for (size_t k = 0; k < DIM; k++)
                p->x[k] = to_float(json_array_get(xs, k));
            p->has_x = 1;
        }
        json_decref(j);
        n++;
    }
    free(line);
    fclose(f);
    return n;
}

/* featurize --spec CSV (firm,year_start,<13 features>,label) and, in the
 * same row order, predict's probabilities and xgboost's. */
static long read_featurize(struct env *v, const char *csv, const char *probs)
{
    FILE *f = fopen(csv, "r"), *pf = fopen(probs, "r"), *xf = fopen(FIX "xgb_probabilities.txt", "r");
    char *line = NULL, id[120];
    size_t cap = 0;
    long n = 0;

    assert_non_null(f);
    assert_non_null(pf);
    assert_non_null(xf);
    assert_true(getline(&line, &cap, f) > 0); /* header */
    while (getline(&line, &cap, f) > 0) {
        char *p = strchr(line, ','), *comma;
        int i;
        assert_non_null(p);
        snprintf(id, sizeof(id), "%.*s@%lld", (int)(p - line), line, strtoll(p + 1, NULL, 10));
        i = event_no(v, id);
        if (i < 0)
            fail_msg("featurize row of an unknown event: %s", line);
        p = strchr(p + 1, ',') + 1;
        for (int k = 0; k < DIM; k++) {
            comma = strchr(p, ',');
            assert_non_null(comma);
            v->featurize[i].x[k] = comma == p ? NAN : strtof(p, NULL);
            p = comma + 1;
        }
        v->featurize[i].has_x = 1;
        v->featurize[i].seen++;
        assert_int_equal(fscanf(pf, "%lf", &v->predict[i]), 1);
        assert_int_equal(fscanf(xf, "%lf", &v->xgb[i]), 1);
        n++;
    }
    free(line);
    fclose(f);
    fclose(pf);
    fclose(xf);
    return n;
}

static int same_bits(const float *a, const float *b)
{
    for (int i = 0; i < DIM; i++) {
        if (isnan(a[i]) && isnan(b[i]))
            continue;
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0) {
            fprintf(stderr, "feature %d: %.9g vs %.9g\n", i, (double)a[i], (double)b[i]);
            return 0;
        }
    }
    return 1;
}

static void run_worker(struct env *v)
{
    char bin[300];
    char *argv[] = {bin, "-b", v->broker.bootstrap, "-X", v->redis_port, "-X", "group.id=specw",
                    "-X", "worker.poll_ms=20", "-X", "input.topic=grunfeld",
                    "-X", "output.topic=predictions.grunfeld", "-X", "dlq.topic=grunfeld.dlq",
                    "-X", "features.spec=" SPEC, "-X", "model.gbdt=" FIX "grunfeld_gbdt.json",
                    "-X", "model.scorecard=", "-X", "model.name=grunfeld", "--log-level", "warn",
                    NULL};
    pid_t pid;
    int waited = 0;

    snprintf(bin, sizeof(bin), "%s", test_bin("streamml-transactions")); /* static buffer */
    assert_int_equal(test_run_wait((char *[]){(char *)test_bin("streamml"), "produce", "-b",
                                              v->broker.bootstrap, "-t", "grunfeld",
                                              "--schema-file", "models/grunfeld/firm_year.avsc",
                                              "--key", "firm", "-i", v->events, "--log-level",
                                              "error", NULL},
                                   path(v, "produce.log")),
                     0); /* the bad event encodes: the worker refuses it */
    pid = test_spawn(argv, path(v, "worker.log"));
    assert_true(pid > 0);
    while ((test_topic_size(v->broker.bootstrap, "predictions.grunfeld") < N_EVENTS ||
            test_topic_size(v->broker.bootstrap, "grunfeld.dlq") < 1) &&
           waited < 40000) {
        test_sleep_ms(200);
        waited += 200;
    }
    if (test_stop_pid(pid, SIGTERM, 10000) != 0 || waited >= 40000) {
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "tail -5 '%s' >&2", path(v, "worker.log"));
        if (system(cmd) != 0)
            fprintf(stderr, "no worker log\n");
        fail_msg("the worker did not predict every event");
    }
}

static void consume(struct env *v, const char *topic, const char *out)
{
    char *argv[] = {(char *)test_bin("streamml"), "consume", "-b", v->broker.bootstrap, "-t",
                    (char *)topic, "-f", "-e", "--log-level", "error", NULL};

    assert_int_equal(test_run_wait(argv, out), 0);
}

static void test_worker_serves_the_grunfeld_spec_like_replay_and_featurize(void **st)
{
    struct env *v = *st;
    char csv[300], probs[300], rout[300], cmd[1200];
    char *replay[] = {(char *)test_bin("streamml"), "replay", "-b", v->broker.bootstrap, "-t",
                      "grunfeld", "-X", "features.spec=" SPEC, "-X",
                      "model.gbdt=" FIX "grunfeld_gbdt.json", "-X", "model.scorecard=",
                      "-X", "model.name=grunfeld", "--features", "--skip-invalid", "-q", "-o",
                      rout, "--log-level", "error", NULL};
    char *featurize[] = {(char *)test_bin("streamml"), "featurize", "--spec", SPEC, "-i",
                         v->events, "-o", csv, "--skip-invalid", NULL};
    char *dlq_line = NULL;
    size_t cap = 0;
    FILE *f;
    long checked = 0;

    snprintf(csv, sizeof(csv), "%s", path(v, "features.csv"));
    snprintf(probs, sizeof(probs), "%s", path(v, "predict.txt"));
    snprintf(rout, sizeof(rout), "%s", path(v, "replay.jsonl"));
    write_events(v);
    run_worker(v);
    consume(v, "predictions.grunfeld", path(v, "worker.jsonl"));
    consume(v, "grunfeld.dlq", path(v, "dlq.jsonl"));
    assert_int_equal(read_preds(v, path(v, "worker.jsonl"), v->worker), N_EVENTS);

    /* The bad event: dead-lettered, its reason naming the field. */
    f = fopen(path(v, "dlq.jsonl"), "r");
    assert_non_null(f);
    assert_true(getline(&dlq_line, &cap, f) > 0);
    fclose(f);
    if (!strstr(dlq_line, "firm: empty"))
        fail_msg("dead letter does not name the field: %s", dlq_line);
    free(dlq_line);

    assert_int_equal(test_run_wait(replay, path(v, "replay.log")), 0);
    assert_int_equal(read_preds(v, rout, v->replay), N_EVENTS);
    assert_int_equal(test_run_wait(featurize, path(v, "featurize.log")), 0);
    snprintf(cmd, sizeof(cmd), "'%s' predict --model " FIX "grunfeld_gbdt.json --input '%s' "
             "--ignore firm,year_start,label > '%s'", test_bin("streamml"), csv, probs);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(read_featurize(v, csv, probs), N_EVENTS);

    for (int i = 0; i < N_EVENTS; i++) {
        const struct pred *w = &v->worker[i], *r = &v->replay[i], *z = &v->featurize[i];
        char hash[17];
        assert_int_equal(w->seen, 1);
        assert_int_equal(r->seen, 1);
        assert_int_equal(z->seen, 1);
        assert_true(r->has_x);
        snprintf(hash, sizeof(hash), "%016llx", (unsigned long long)feat_hash(z->x, DIM));
        assert_string_equal(hash, w->hash);
        assert_string_equal(r->hash, w->hash);
        assert_true(same_bits(r->x, z->x));
        assert_true(r->probability == w->probability);
        if (!(fabs(w->probability - v->predict[i]) <= 1e-6) ||
            !(fabs(w->probability - v->xgb[i]) <= 1e-6))
            fail_msg("%s: worker %.9g, predict %.9g, xgboost %.9g", v->ids[i], w->probability,
                     v->predict[i], v->xgb[i]);
        checked++;
    }
    assert_int_equal(checked, N_EVENTS);
}

/* ---- profile, baseline and report on the spec's own schema ----
 * These read what the test above wrote in the group's directory (the
 * featurize CSV and replay's predictions with features): run in order. */

static json_t *load_json(const char *file)
{
    json_error_t je;
    json_t *j = json_load_file(file, 0, &je);

    if (!j)
        fail_msg("%s: %s", file, je.text);
    return j;
}

/* The baseline names the spec and holds exactly its outputs, in order. */
static void assert_spec_baseline(const char *file, long rows)
{
    json_t *b = load_json(file), *fs = json_object_get(b, "features");
    const char *const want[DIM] = {"invest", "invest_to_capital", "invest_to_value", "log_value",
                                   "high_capital_intensity", "invest_mean_3y", "invest_std_5y",
                                   "invest_max_5y", "invest_zscore", "years_seen_5y",
                                   "days_since_prev", "invest_growth", "value_growth"};

    assert_string_equal(json_string_value(json_object_get(b, "feature_version")), "grunfeld-v1");
    assert_int_equal(json_integer_value(json_object_get(b, "rows")), rows);
    assert_int_equal(json_array_size(fs), DIM);
    for (size_t k = 0; k < DIM; k++)
        assert_string_equal(json_string_value(json_object_get(json_array_get(fs, k), "name")),
                            want[k]);
    assert_non_null(json_object_get(b, "score"));
    json_decref(b);
}

static void test_profile_writes_the_baseline_of_the_spec(void **st)
{
    struct env *v = *st;
    char csv[300], out[300], bad[300], log[300];
    char *profile[] = {(char *)test_bin("streamml"), "profile", "--model",
                       FIX "grunfeld_gbdt.json", "--input", csv, "--output", out, "--spec", SPEC,
                       NULL};

    snprintf(csv, sizeof(csv), "%s", path(v, "features.csv"));
    snprintf(out, sizeof(out), "%s", path(v, "profile.json"));
    snprintf(log, sizeof(log), "%s", path(v, "profile.log"));
    assert_int_equal(test_run_wait(profile, log), 0);
    assert_spec_baseline(out, N_EVENTS);
    /* a column the spec does not output is named, not profiled */
    snprintf(bad, sizeof(bad), "%s", path(v, "bad.csv"));
    assert_int_equal(test_sh("sed '1s/invest_growth/growth/' '%s' > '%s'", csv, bad), 0);
    snprintf(csv, sizeof(csv), "%s", bad);
    assert_int_equal(test_run_wait(profile, log), 2);
    assert_int_equal(test_sh("grep -q 'column growth is not a feature of grunfeld-v1' '%s'", log),
                     0);
}

static void test_baseline_of_replayed_predictions_names_the_spec_features(void **st)
{
    struct env *v = *st;
    char in[300], out[300], log[300];
    char *baseline[] = {(char *)test_bin("streamml"), "baseline", "--kind", "transactions",
                        "--spec", SPEC, "-i", in, "-o", out, "--model", "grunfeld", NULL};

    snprintf(in, sizeof(in), "%s", path(v, "replay.jsonl"));
    snprintf(out, sizeof(out), "%s", path(v, "baseline.json"));
    snprintf(log, sizeof(log), "%s", path(v, "baseline.log"));
    assert_int_equal(test_run_wait(baseline, log), 0);
    assert_spec_baseline(out, N_EVENTS);
}

/* PSI of every spec feature against profile's baseline, no credit wording. */
static void test_report_on_the_spec_computes_feature_psi(void **st)
{
    struct env *v = *st;
    char preds[300], labels[300], base[300], html[300], log[300];
    char *report[] = {(char *)test_bin("streamml"), "report", "-p", preds, "-l", labels,
                      "--baseline", base, "--spec", SPEC, "-o", html, "--log-level", "warn",
                      NULL};

    snprintf(preds, sizeof(preds), "%s", path(v, "replay.jsonl"));
    snprintf(labels, sizeof(labels), "%s", path(v, "labels.csv"));
    snprintf(base, sizeof(base), "%s", path(v, "profile.json"));
    snprintf(html, sizeof(html), "%s", path(v, "report.html"));
    snprintf(log, sizeof(log), "%s", path(v, "report.log"));
    /* labels by event id (firm@year_start) from featurize's CSV */
    assert_int_equal(test_sh("awk -F, 'NR == 1 {print \"event_id,label\"} NR > 1 {print $1 "
                             "\"@\" $2 \",\" $NF}' '%s' > '%s'",
                             path(v, "features.csv"), labels),
                     0);
    assert_int_equal(test_run_wait(report, log), 0);
    assert_int_equal(test_sh("grep -q '^psi score .* 209 rows with features' '%s'", log), 0);
    assert_int_equal(test_sh("grep -q 'invest_zscore' '%s'", html), 0);
    assert_int_not_equal(test_sh("grep -qi 'approval' '%s'", html), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_worker_serves_the_grunfeld_spec_like_replay_and_featurize),
        cmocka_unit_test(test_profile_writes_the_baseline_of_the_spec),
        cmocka_unit_test(test_baseline_of_replayed_predictions_names_the_spec_features),
        cmocka_unit_test(test_report_on_the_spec_computes_feature_psi),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
