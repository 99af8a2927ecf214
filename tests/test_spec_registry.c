/* A feature spec whose input names a Schema Registry subject instead of an
 * .avsc (input.subject, input.version): resolved at load through the
 * registry client (GET /subjects/S/versions/V) against the test registry
 * (tests/support/regserver.c, real HTTP on 127.0.0.1). The spec compiles
 * from the registered schema exactly as from the file; a pinned version is
 * read once and kept; "latest" follows new versions; a missing subject, a
 * registry that cannot be reached, or no registry at all is one line
 * naming the spec's line, the subject and the URL. `streamml features
 * check` and `streamml featurize --spec` take the registry from -X and say
 * which schema id they use; featurize's rows equal those of the file spec. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fspec.h"
#include "registry.h"
#include "regserver.h"
#include "stack.h"

#define AVSC "models/grunfeld/firm_year.avsc"
#define SPEC "models/grunfeld/grunfeld-v1.yaml"
#define EVENTS "tests/fixtures/grunfeld/events.jsonl"

struct env {
    struct test_registry *tr;
    struct reg *r;
    char dir[64], url_arg[128];
    int id1, id2; /* FirmYear as version 1; with a "sector" field, version 2 */
};

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *s = calloc(1, 1 << 20);
    size_t n;

    assert_non_null(f);
    assert_non_null(s);
    n = fread(s, 1, (1 << 20) - 1, f);
    s[n] = '\0';
    fclose(f);
    return s;
}

/* The Grunfeld spec with its input line replaced; its path (static). */
static const char *write_spec(struct env *v, const char *file, const char *input)
{
    static char path[200];
    char *text = slurp(SPEC), *at = strstr(text, "  schema: firm_year.avsc\n");
    FILE *f;

    assert_non_null(at);
    snprintf(path, sizeof(path), "%s/%s", v->dir, file);
    f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "%.*s%s%s", (int)(at - text), text, input,
            at + strlen("  schema: firm_year.avsc\n"));
    fclose(f);
    free(text);
    return path;
}

static struct reg *open_reg(const char *url)
{
    struct reg_opts o = {.urls = url, .verify = 1, .timeout_ms = 2000, .retries = 0};
    struct err e = {0};
    struct reg *r = reg_open(&o, &e);

    assert_non_null(r);
    return r;
}

static int setup(void **st)
{
    struct env *v = calloc(1, sizeof(*v));
    char *avsc = slurp(AVSC), *v2 = slurp(AVSC), *at;

    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-specreg-XXXXXX");
    if (!mkdtemp(v->dir) || !(v->tr = test_registry_start(0, NULL, NULL)))
        return -1;
    /* version 2 adds an optional field before the label */
    at = strstr(v2, "    {\"name\": \"label\"");
    if (!at)
        return -1;
    snprintf(at, (1 << 20) - (size_t)(at - v2),
             "    {\"name\": \"sector\", \"type\": [\"null\", \"string\"], \"default\": null},\n%s",
             strstr(avsc, "    {\"name\": \"label\""));
    v->id1 = test_registry_add(v->tr, "grunfeld-value", avsc);
    v->id2 = test_registry_add(v->tr, "grunfeld-value", v2);
    free(avsc);
    free(v2);
    if (v->id1 < 1 || v->id2 < 1 || v->id1 == v->id2)
        return -1;
    v->r = open_reg(test_registry_url(v->tr));
    snprintf(v->url_arg, sizeof(v->url_arg), "schema.registry.url=%s", test_registry_url(v->tr));
    *st = v;
    return 0;
}

static int teardown(void **st)
{
    struct env *v = *st;

    reg_close(v->r);
    test_registry_free(v->tr);
    test_sh("rm -rf '%s'", v->dir);
    free(v);
    return 0;
}

static void test_a_pinned_version_compiles_like_the_file(void **st)
{
    struct env *v = *st;
    struct err e = {0};
    struct fspec *file = fspec_open(SPEC, &e), *reg;
    const char *path = write_spec(v, "v1.yaml", "  subject: grunfeld-value\n  version: 1\n");
    char want[64];

    assert_non_null(file);
    reg = fspec_open_reg(path, v->r, &e);
    if (!reg)
        fail_msg("%s", e.msg);
    assert_int_equal(fspec_schema_id(reg), v->id1);
    assert_int_equal(fspec_schema_id(file), 0);
    assert_string_equal(fspec_record_name(reg), "FirmYear");
    assert_int_equal(fspec_num_fields(reg), fspec_num_fields(file));
    assert_int_equal(fspec_field_index(reg, "sector"), -1);
    /* the same state layout (the plan's text names its input: not hashed equal) */
    assert_int_equal(fspec_layout_hash(reg), fspec_layout_hash(file));
    assert_int_equal(fspec_dim(reg), fspec_dim(file));
    snprintf(want, sizeof(want), "version 1 (schema id %d)", v->id1);
    assert_non_null(strstr(fspec_schema_source(reg), want));
    assert_non_null(strstr(fspec_schema_source(reg), test_registry_url(v->tr)));
    fspec_close(reg);
    fspec_close(file);
}

static void test_latest_follows_the_newest_version(void **st)
{
    struct env *v = *st;
    struct err e = {0};
    const char *path = write_spec(v, "latest.yaml", "  subject: grunfeld-value\n");
    struct fspec *p = fspec_open_reg(path, v->r, &e);

    if (!p)
        fail_msg("%s", e.msg);
    assert_int_equal(fspec_schema_id(p), v->id2);
    assert_true(fspec_field_index(p, "sector") >= 0);
    assert_non_null(strstr(fspec_schema_source(p), "version 2"));
    fspec_close(p);
}

/* A fixed version is read once per client; latest needs the registry. */
static void test_a_pinned_version_is_cached_and_a_dead_registry_is_one_line(void **st)
{
    struct env *v = *st;
    struct err e = {0};
    const char *pinned = write_spec(v, "v2.yaml", "  subject: grunfeld-value\n  version: 2\n");
    struct fspec *p = fspec_open_reg(pinned, v->r, &e);
    char line[300];

    if (!p)
        fail_msg("%s", e.msg);
    fspec_close(p);
    test_registry_stop_serving(v->tr);
    p = fspec_open_reg(pinned, v->r, &e);
    if (!p)
        fail_msg("pinned version not cached: %s", e.msg);
    assert_int_equal(fspec_schema_id(p), v->id2);
    fspec_close(p);

    pinned = write_spec(v, "down.yaml", "  subject: grunfeld-value\n");
    p = fspec_open_reg(pinned, v->r, &e);
    assert_int_equal(test_registry_restart(v->tr), 0);
    assert_null(p);
    assert_int_equal(e.code, ERR_CONFIG);
    assert_null(strchr(e.msg, '\n'));
    snprintf(line, sizeof(line), "%s:6: input.subject grunfeld-value version latest at %s", pinned,
             test_registry_url(v->tr));
    if (strncmp(e.msg, line, strlen(line)) != 0)
        fail_msg("not one line naming spec, subject and URL: %s", e.msg);
}

static void test_a_missing_subject_or_registry_is_refused_naming_them(void **st)
{
    struct env *v = *st;
    struct err e = {0};
    const char *path = write_spec(v, "nope.yaml", "  subject: nope-value\n  version: 3\n");
    struct fspec *p = fspec_open_reg(path, v->r, &e);
    char line[300];

    assert_null(p);
    assert_int_equal(e.code, ERR_CONFIG);
    snprintf(line, sizeof(line), "%s:6: input.subject nope-value version 3 at %s", path,
             test_registry_url(v->tr));
    if (strncmp(e.msg, line, strlen(line)) != 0 || !strstr(e.msg, "not found"))
        fail_msg("%s", e.msg);
    assert_null(fspec_open(path, &e));
    assert_non_null(strstr(e.msg, "nope.yaml:6: input.subject nope-value: no schema registry "
                                  "configured (set schema.registry.url)"));
    path = write_spec(v, "both.yaml", "  subject: grunfeld-value\n  schema: firm_year.avsc\n");
    assert_null(fspec_open_reg(path, v->r, &e));
    assert_non_null(strstr(e.msg, "both.yaml:6: input: schema (a file) or subject"));
    path = write_spec(v, "badver.yaml", "  subject: grunfeld-value\n  version: 0\n");
    assert_null(fspec_open_reg(path, v->r, &e));
    assert_non_null(strstr(e.msg, "badver.yaml:7: input.version: \"0\" is not a version"));
}

static int file_has(const char *path, const char *needle)
{
    char *s = slurp(path);
    int found = strstr(s, needle) != NULL;

    if (!found)
        fprintf(stderr, "%s lacks \"%s\":\n%s\n", path, needle, s);
    free(s);
    return found;
}

static void test_check_and_featurize_say_the_schema_id_and_agree_with_the_file(void **st)
{
    struct env *v = *st;
    const char *path = write_spec(v, "tool.yaml", "  subject: grunfeld-value\n  version: 1\n");
    char spec[200], log[300], csv_reg[300], csv_file[300], want[64];
    char *check[] = {(char *)test_bin("streamml"), "features", "check", spec, "-X", v->url_arg,
                     "--quiet", NULL};
    char *fz_reg[] = {(char *)test_bin("streamml"), "featurize", "--spec", spec, "-X", v->url_arg,
                      "-i", EVENTS, "-o", csv_reg, NULL};
    char *fz_file[] = {(char *)test_bin("streamml"), "featurize", "--spec", SPEC, "-i", EVENTS,
                       "-o", csv_file, NULL};
    char *a, *b;

    snprintf(spec, sizeof(spec), "%s", path);
    snprintf(log, sizeof(log), "%s/check.log", v->dir);
    snprintf(want, sizeof(want), "(schema id %d)", v->id1);
    assert_int_equal(test_run_wait(check, log), 0);
    assert_true(file_has(log, want));
    snprintf(csv_reg, sizeof(csv_reg), "%s/reg.csv", v->dir);
    snprintf(csv_file, sizeof(csv_file), "%s/file.csv", v->dir);
    snprintf(log, sizeof(log), "%s/fz.log", v->dir);
    assert_int_equal(test_run_wait(fz_reg, log), 0);
    assert_true(file_has(log, want));
    assert_int_equal(test_run_wait(fz_file, log), 0);
    a = slurp(csv_reg);
    b = slurp(csv_file);
    assert_true(strlen(a) > 1000);
    assert_string_equal(a, b);
    free(a);
    free(b);
}

/* Records framed with the registry's id (`streamml produce -r`), replayed
 * through the subject spec: every event read and scored, the schema id said. */
static void test_replay_reads_records_of_the_subject(void **st)
{
    struct env *v = *st;
    struct test_broker b;
    const char *path = write_spec(v, "replay.yaml", "  subject: grunfeld-value\n  version: 1\n");
    char spec[220], log[300], out[300], want[64], url[128];
    char *produce[] = {(char *)test_bin("streamml"), "produce", "-b", b.bootstrap, "-t", "grunfeld",
                       "-r", url, "--schema-file", AVSC, "--key", "firm", "-i", EVENTS,
                       "--log-level", "error", NULL};
    char *replay[] = {(char *)test_bin("streamml"), "replay", "-b", b.bootstrap, "-t", "grunfeld",
                      "-X", spec, "-X", v->url_arg, "-X",
                      "model.gbdt=tests/fixtures/grunfeld/grunfeld_gbdt.json", "-X",
                      "model.scorecard=", "-X", "model.name=grunfeld", "--features", "-o", out,
                      NULL};
    char *text, *line;
    int n = 0;

    snprintf(spec, sizeof(spec), "features.spec=%s", path);
    snprintf(url, sizeof(url), "%s", test_registry_url(v->tr));
    snprintf(log, sizeof(log), "%s/replay.log", v->dir);
    snprintf(out, sizeof(out), "%s/replay.jsonl", v->dir);
    snprintf(want, sizeof(want), "(schema id %d)", v->id1);
    assert_int_equal(test_broker_start(&b, "grunfeld:2"), 0);
    if (test_run_wait(produce, log) != 0 || test_run_wait(replay, log) != 0) {
        test_broker_stop(&b);
        test_sh("tail -3 '%s' >&2", log);
        fail_msg("produce or replay failed");
    }
    test_broker_stop(&b);
    assert_true(file_has(log, want));
    text = slurp(out);
    for (line = strstr(text, "\"feature_version\":\"grunfeld-v1\""); line;
         line = strstr(line + 1, "\"feature_version\":\"grunfeld-v1\""))
        n++;
    assert_int_equal(n, 220);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_pinned_version_compiles_like_the_file),
        cmocka_unit_test(test_latest_follows_the_newest_version),
        cmocka_unit_test(test_a_pinned_version_is_cached_and_a_dead_registry_is_one_line),
        cmocka_unit_test(test_a_missing_subject_or_registry_is_refused_naming_them),
        cmocka_unit_test(test_check_and_featurize_say_the_schema_id_and_agree_with_the_file),
        cmocka_unit_test(test_replay_reads_records_of_the_subject),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
