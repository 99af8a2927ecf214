/* tests/test_featurize.c: `streamml featurize` end to end.
 *
 * Runs $STREAMML_BUILD/streamml (default build/) on the hand-written
 * fixture tests/fixtures/featurize_events.jsonl (7 lines: 5 valid events for
 * 2 users given out of event-time order with one tie, a negative amount on
 * line 4, a non-JSON line 6) and checks the CSV against a replay of the same
 * events through the feature module in this process. Run from the repo root.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <avro.h>
#include <cmocka.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "codec.h"
#include "features.h"
#include "stack.h"

#define FIXTURE "tests/fixtures/featurize_events.jsonl"
#define NVALID 5

struct fx {
    char dir[64], out[128], err[128];
    char *csv, *log; /* output of the last run */
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    if (!f)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/streamml-featurize-XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    snprintf(f->out, sizeof(f->out), "%s/out.csv", f->dir);
    snprintf(f->err, sizeof(f->err), "%s/stderr", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char path[160];

    free(f->csv);
    free(f->log);
    unlink(f->out);
    unlink(f->err);
    snprintf(path, sizeof(path), "%s/events.avro", f->dir);
    unlink(path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "rb");
    char *p;
    long n;

    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    n = ftell(fp);
    rewind(fp);
    p = calloc(1, (size_t)n + 1);
    if (p && fread(p, 1, (size_t)n, fp) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(fp);
    return p;
}

/* Runs `streamml featurize ARGS -o out` with stderr to a file; returns the
 * exit code and loads both outputs into f. */
static int featurize(struct fx *f, const char *const *args)
{
    char *argv[16];
    int n = 0, status;
    pid_t pid;

    argv[n++] = (char *)test_bin("streamml");
    argv[n++] = "featurize";
    while (*args && n < 12)
        argv[n++] = (char *)*args++;
    argv[n++] = "-o";
    argv[n++] = f->out;
    argv[n] = NULL;
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (!freopen(f->err, "w", stderr))
            _exit(127);
        execv(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    free(f->csv);
    free(f->log);
    f->csv = slurp(f->out);
    f->log = slurp(f->err);
    assert_non_null(f->log);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Line i (0-based) of text, copied into out; -1 past the end. */
static int nth_line(const char *text, int i, char *out, size_t cap)
{
    const char *end;

    while (i-- > 0) {
        text = strchr(text, '\n');
        if (!text || !*++text)
            return -1;
    }
    end = strchr(text, '\n');
    if (!end || (size_t)(end - text) >= cap)
        return -1;
    memcpy(out, text, (size_t)(end - text));
    out[end - text] = '\0';
    return 0;
}

/* Cell j of a CSV line without quoted fields (the fixture has none). */
static void nth_cell(const char *line, int j, char *out, size_t cap)
{
    size_t n;

    while (j-- > 0) {
        line = strchr(line, ',');
        assert_non_null(line);
        line++;
    }
    n = strcspn(line, ",");
    assert_true(n < cap);
    memcpy(out, line, n);
    out[n] = '\0';
}

static int count_lines(const char *text)
{
    int n = 0;

    for (; *text; text++)
        n += *text == '\n';
    return n;
}

/* ---- the oracle: the fixture replayed through the feature module ---- */

struct replay {
    struct txn_event ev[NVALID];
    char row[NVALID][4096];
};

static int by_time(const void *pa, const void *pb)
{
    const struct txn_event *a = pa, *b = pb;

    if (a->event_time_ms != b->event_time_ms)
        return a->event_time_ms < b->event_time_ms ? -1 : 1;
    return 0;
}

static void load_valid_events(struct txn_event *ev)
{
    FILE *fp = fopen(FIXTURE, "r");
    char line[4096];
    struct err e = {0};
    int n = 0;

    assert_non_null(fp);
    while (fgets(line, sizeof(line), fp)) {
        if (codec_txn_from_json(line, strcspn(line, "\n"), &ev[n], &e) ||
            feat_txn_validate(&ev[n], &e))
            continue;
        assert_true(++n <= NVALID);
    }
    fclose(fp);
    assert_int_equal(n, NVALID);
}

/* Stable event-time sort (insertion sort keeps ties in input order). */
static void sort_stable(struct txn_event *ev, int n)
{
    for (int i = 1; i < n; i++) {
        struct txn_event k = ev[i];
        int j = i - 1;
        while (j >= 0 && by_time(&ev[j], &k) > 0) {
            ev[j + 1] = ev[j];
            j--;
        }
        ev[j + 1] = k;
    }
}

/* The row as cmd_featurize must print it (built in a local buffer: row and
 * ev live in the same struct, which -Wrestrict cannot see through). */
static void format_row(char *row, size_t cap, const struct txn_event *ev, const float *x)
{
    char tmp[4096];
    int n = snprintf(tmp, sizeof(tmp), "%s,%s,%lld", ev->event_id, ev->user_id,
                     (long long)ev->event_time_ms);

    for (int i = 0; i < FEAT_TXN_DIM; i++)
        n += isnan(x[i]) ? snprintf(tmp + n, sizeof(tmp) - (size_t)n, ",")
                         : snprintf(tmp + n, sizeof(tmp) - (size_t)n, ",%.9g", (double)x[i]);
    if (ev->label == -1)
        snprintf(tmp + n, sizeof(tmp) - (size_t)n, ",");
    else
        snprintf(tmp + n, sizeof(tmp) - (size_t)n, ",%d", ev->label);
    snprintf(row, cap, "%s", tmp);
}

static void replay(struct replay *r)
{
    struct feat_state st[NVALID];
    const char *user[NVALID];
    int nusers = 0;
    float x[FEAT_TXN_DIM];

    load_valid_events(r->ev);
    sort_stable(r->ev, NVALID);
    for (int i = 0; i < NVALID; i++) {
        int u = 0;
        while (u < nusers && strcmp(user[u], r->ev[i].user_id) != 0)
            u++;
        if (u == nusers) {
            user[nusers++] = r->ev[i].user_id;
            feat_state_init(&st[u]);
        }
        feat_txn_build(&r->ev[i], &st[u], x);
        feat_state_update(&st[u], &r->ev[i], &st[u]);
        format_row(r->row[i], sizeof(r->row[i]), &r->ev[i], x);
    }
}

/* ---- tests ---- */

static const char *const from_fixture[] = {"-i", FIXTURE, "--skip-invalid", NULL};

static void test_header_lists_ids_features_and_label(void **state)
{
    struct fx *f = *state;
    const char *const *names = feat_txn_names();
    char want[4096], got[4096];
    int n = snprintf(want, sizeof(want), "event_id,user_id,event_time");

    for (int i = 0; i < FEAT_TXN_DIM; i++)
        n += snprintf(want + n, sizeof(want) - (size_t)n, ",%s", names[i]);
    snprintf(want + n, sizeof(want) - (size_t)n, ",label");
    assert_int_equal(featurize(f, from_fixture), 0);
    assert_int_equal(nth_line(f->csv, 0, got, sizeof(got)), 0);
    assert_string_equal(got, want);
}

static void test_no_header_drops_only_the_header(void **state)
{
    struct fx *f = *state;
    const char *const args[] = {"-i", FIXTURE, "--skip-invalid", "--no-header", NULL};
    char line[4096];

    assert_int_equal(featurize(f, args), 0);
    assert_int_equal(count_lines(f->csv), NVALID);
    assert_int_equal(nth_line(f->csv, 0, line, sizeof(line)), 0);
    assert_memory_equal(line, "e1,", 3);
}

static void test_rows_follow_event_time_then_input_order(void **state)
{
    struct fx *f = *state;
    static const char *const order[NVALID] = {"e1", "e2", "e3", "e4", "e5"};
    char line[4096], id[64];

    assert_int_equal(featurize(f, from_fixture), 0);
    assert_int_equal(count_lines(f->csv), 1 + NVALID);
    for (int i = 0; i < NVALID; i++) {
        assert_int_equal(nth_line(f->csv, 1 + i, line, sizeof(line)), 0);
        nth_cell(line, 0, id, sizeof(id));
        assert_string_equal(id, order[i]); /* e3 and e4 tie: line 1 before line 5 */
    }
}

static void test_ratio_cell_is_the_feature_module_value(void **state)
{
    struct fx *f = *state;
    struct replay *r = calloc(1, sizeof(*r));
    int k = feat_txn_index("debt_to_income");
    char line[4096], got[64], want[64];

    assert_non_null(r);
    assert_true(k >= 0);
    replay(r);
    assert_int_equal(featurize(f, from_fixture), 0);
    /* e2 (row 2): u2's first event, debt 500 and income 200 both given */
    assert_int_equal(nth_line(f->csv, 2, line, sizeof(line)), 0);
    nth_cell(line, 3 + k, got, sizeof(got));
    nth_cell(r->row[1], 3 + k, want, sizeof(want));
    assert_true(got[0] != '\0');
    assert_string_equal(got, want);
    free(r);
}

static void test_missing_inputs_are_empty_cells(void **state)
{
    struct fx *f = *state;
    int k = feat_txn_index("debt_to_income");
    char line[4096], cell[64];

    assert_true(k >= 0);
    assert_int_equal(featurize(f, from_fixture), 0);
    /* e4 (row 4) has no debt, no income and no label */
    assert_int_equal(nth_line(f->csv, 4, line, sizeof(line)), 0);
    nth_cell(line, 3 + k, cell, sizeof(cell));
    assert_string_equal(cell, "");
    nth_cell(line, 3 + FEAT_TXN_DIM, cell, sizeof(cell));
    assert_string_equal(cell, "");
    assert_null(strstr(line, "nan"));
}

static void test_every_row_matches_a_replay_through_the_feature_module(void **state)
{
    struct fx *f = *state;
    struct replay *r = calloc(1, sizeof(*r));
    char line[4096];

    assert_non_null(r);
    replay(r);
    assert_int_equal(featurize(f, from_fixture), 0);
    for (int i = 0; i < NVALID; i++) {
        assert_int_equal(nth_line(f->csv, 1 + i, line, sizeof(line)), 0);
        assert_string_equal(line, r->row[i]);
    }
    free(r);
}

static void test_invalid_rows_are_named_counted_and_exit_1(void **state)
{
    struct fx *f = *state;
    const char *const args[] = {"-i", FIXTURE, NULL};

    assert_int_equal(featurize(f, args), 1);
    assert_non_null(strstr(f->log, "line 4: "));
    assert_non_null(strstr(f->log, "line 6: json: "));
    assert_non_null(strstr(f->log, "2 invalid"));
    assert_null(strstr(f->csv, "bad-neg"));
    assert_int_equal(count_lines(f->csv), 1 + NVALID); /* valid rows still written */
}

static void test_unknown_option_is_a_usage_error(void **state)
{
    struct fx *f = *state;
    const char *const args[] = {"--bogus", NULL};
    const char *const fmt[] = {"--format", "csv", NULL};

    assert_int_equal(featurize(f, args), 2);
    assert_int_equal(featurize(f, fmt), 2);
    assert_non_null(strstr(f->log, "--format csv"));
}

/* Writes the fixture's valid events to an Avro container file, in input
 * order, through codec_encode_txn and a generic reader. */
static void write_container(const char *path)
{
    struct txn_event ev[NVALID];
    struct err e = {0};
    struct codec *c = codec_open("schemas", &e);
    struct buf b;
    avro_schema_t s = NULL;
    avro_file_writer_t w;
    avro_value_iface_t *iface;
    avro_value_t v;
    avro_reader_t rd;
    char *text = slurp("schemas/transaction_event.avsc");

    assert_non_null(c);
    assert_non_null(text);
    assert_int_equal(avro_schema_from_json_length(text, strlen(text), &s), 0);
    iface = avro_generic_class_from_schema(s);
    assert_int_equal(avro_generic_value_new(iface, &v), 0);
    assert_int_equal(avro_file_writer_create(path, s, &w), 0);
    load_valid_events(ev);
    buf_init(&b, 0);
    for (int i = 0; i < NVALID; i++) {
        assert_int_equal(codec_encode_txn(c, &ev[i], &b, &e), 0);
        rd = avro_reader_memory((const char *)b.data + 5, (int64_t)b.len - 5);
        assert_int_equal(avro_value_read(rd, &v), 0);
        avro_reader_free(rd);
        assert_int_equal(avro_file_writer_append_value(w, &v), 0);
    }
    assert_int_equal(avro_file_writer_close(w), 0);
    buf_free(&b);
    avro_value_decref(&v);
    avro_value_iface_decref(iface);
    avro_schema_decref(s);
    codec_close(c);
    free(text);
}

static void test_avro_container_input_gives_the_same_csv(void **state)
{
    struct fx *f = *state;
    char path[160], *jsonl_csv;
    const char *args[] = {"--format", "avro", "-i", path, NULL};

    snprintf(path, sizeof(path), "%s/events.avro", f->dir);
    write_container(path);
    assert_int_equal(featurize(f, from_fixture), 0);
    jsonl_csv = f->csv;
    f->csv = NULL;
    assert_int_equal(featurize(f, args), 0);
    assert_non_null(f->csv);
    assert_string_equal(f->csv, jsonl_csv);
    free(jsonl_csv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_header_lists_ids_features_and_label, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_header_drops_only_the_header, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rows_follow_event_time_then_input_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_ratio_cell_is_the_feature_module_value, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_missing_inputs_are_empty_cells, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_row_matches_a_replay_through_the_feature_module,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_rows_are_named_counted_and_exit_1, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unknown_option_is_a_usage_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_avro_container_input_gives_the_same_csv, setup,
                                        teardown),
    };

    return cmocka_run_group_tests_name("featurize", tests, NULL, NULL);
}
