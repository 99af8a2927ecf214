/* common/outcomes: labels and outcomes by event id from CSV and JSON lines,
 * with the rules each tool relies on (a corrected label replaces the old one;
 * two outcomes for one event are an error; errors name the file and line). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "outcomes.h"

static char g_path[64];

/* Writes text to a fresh temporary file, its name in g_path. */
static const char *file_of(const char *text)
{
    int fd;

    snprintf(g_path, sizeof(g_path), "/tmp/test_outcomes_XXXXXX");
    fd = mkstemp(g_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return g_path;
}

/* Reads text as kind; the table in *out (caller closes), the code returned. */
static int read_text(enum oc_kind kind, const char *text, struct oc_table **out, struct err *e)
{
    int rc;

    assert_int_equal(oc_open(out, kind, e), ERR_OK);
    rc = oc_read_file(*out, file_of(text), e);
    unlink(g_path);
    return rc;
}

static void test_labels_csv_skip_unknown_and_take_corrections(void **state)
{
    struct oc_table *t;
    struct err e = {0};
    (void)state;

    assert_int_equal(read_text(OC_LABEL,
                               "amount,event_id,label\n"
                               "1.5,a,1\n"
                               "2.0,b,0\n"
                               "3.0,c,-1\n"
                               "4.0,d,\n"
                               "\n"
                               "5.0,a,0\n",
                               &t, &e),
                     ERR_OK);
    assert_int_equal(oc_count(t), 2);                 /* c and d are not known yet */
    assert_true(oc_value(t, oc_find(t, "a")) == 0.0); /* corrected */
    assert_true(oc_value(t, oc_find(t, "b")) == 0.0);
    assert_int_equal(oc_find(t, "c"), -1);
    assert_int_equal(oc_find(t, "zz"), -1);
    oc_close(t);
}

static void test_labels_json_lines_and_their_errors(void **state)
{
    struct oc_table *t;
    struct err e = {0};
    (void)state;

    assert_int_equal(read_text(OC_LABEL,
                               "{\"event_id\":\"x\",\"label\":3}\n"
                               "{\"event_id\":\"y\",\"label\":null}\n"
                               "{\"event_id\":\"z\"}\n",
                               &t, &e),
                     ERR_OK);
    assert_int_equal(oc_count(t), 1);
    assert_true(oc_value(t, oc_find(t, "x")) == 3.0);
    oc_close(t);

    assert_int_equal(read_text(OC_LABEL, "{\"event_id\":\"x\",\"label\":0.5}\n", &t, &e),
                     ERR_DECODE);
    assert_non_null(strstr(e.msg, "line 1: needs event_id (string) and label (integer)"));
    oc_close(t);
    assert_int_equal(read_text(OC_LABEL, "event_id,label\nq,bad\n", &t, &e), ERR_DECODE);
    assert_non_null(strstr(e.msg, "line 2: label \"bad\" is not an integer"));
    oc_close(t);
    assert_int_equal(read_text(OC_LABEL, "event_id,outcome\nq,1\n", &t, &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "needs event_id and label columns"));
    oc_close(t);
}

static void test_outcomes_are_numbers_once_per_event(void **state)
{
    struct oc_table *t;
    struct err e = {0};
    (void)state;

    /* "label" serves when there is no "outcome" column. */
    assert_int_equal(read_text(OC_OUTCOME, "event_id,label\nu,12.25\nv,\nw,-3e2\n", &t, &e),
                     ERR_OK);
    assert_int_equal(oc_count(t), 2);
    assert_true(oc_value(t, oc_find(t, "u")) == 12.25);
    assert_true(oc_value(t, oc_find(t, "w")) == -300.0);
    oc_close(t);

    assert_int_equal(read_text(OC_OUTCOME, "event_id,outcome\nu,1\nu,0\n", &t, &e), ERR_DECODE);
    assert_non_null(strstr(e.msg, "line 3: event u has two outcomes"));
    oc_close(t);
    assert_int_equal(read_text(OC_OUTCOME, "event_id,outcome\nu,inf\n", &t, &e), ERR_DECODE);
    assert_non_null(strstr(e.msg, "outcome of u is not a finite number"));
    oc_close(t);
    assert_int_equal(read_text(OC_OUTCOME, "event_id,outcome\n\"u\",1\n", &t, &e), ERR_DECODE);
    assert_non_null(strstr(e.msg, "quoted CSV fields are not supported"));
    oc_close(t);
    assert_int_equal(read_text(OC_OUTCOME, "{\"event_id\":\"u\",\"outcome\":\"1\"}\n", &t, &e),
                     ERR_DECODE);
    assert_non_null(strstr(e.msg, "needs event_id (string) and outcome (number)"));
    oc_close(t);
}

static void test_join_marks_each_entry_once(void **state)
{
    struct oc_table *t;
    struct err e = {0};
    char text[64 * 3000 + 32], *p = text;
    (void)state;

    /* Enough rows to grow the table several times. */
    p += sprintf(p, "event_id,label\n");
    for (int i = 0; i < 3000; i++)
        p += sprintf(p, "ev-%d,%d\n", i, i % 2);
    assert_int_equal(read_text(OC_LABEL, text, &t, &e), ERR_OK);
    assert_int_equal(oc_count(t), 3000);
    assert_int_equal(oc_unjoined(t), 3000);
    for (int i = 0; i < 3000; i += 3) {
        char id[32];
        long k;
        snprintf(id, sizeof(id), "ev-%d", i);
        k = oc_find(t, id);
        assert_true(k >= 0);
        assert_true(oc_value(t, k) == (double)(i % 2));
        assert_int_equal(oc_join(t, k), 0);
        assert_int_equal(oc_join(t, k), 1); /* a redelivered prediction */
    }
    assert_int_equal(oc_unjoined(t), 2000);
    oc_close(t);
}

static void test_missing_file_is_a_config_error(void **state)
{
    struct oc_table *t;
    struct err e = {0};
    (void)state;

    assert_int_equal(oc_open(&t, OC_LABEL, &e), ERR_OK);
    assert_int_equal(oc_read_file(t, "/nonexistent/labels.csv", &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "/nonexistent/labels.csv"));
    oc_close(t);
    oc_close(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_labels_csv_skip_unknown_and_take_corrections),
        cmocka_unit_test(test_labels_json_lines_and_their_errors),
        cmocka_unit_test(test_outcomes_are_numbers_once_per_event),
        cmocka_unit_test(test_join_marks_each_entry_once),
        cmocka_unit_test(test_missing_file_is_a_config_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
