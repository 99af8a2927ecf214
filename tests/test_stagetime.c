/* worker.stage_times' histograms (common/base/stagetime.h): percentiles
 * within the bucket width, off means nothing recorded or written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stagetime.h"

/* The report's row for a stage: count, mean, p50, p90, p99, p99.9, max. */
static int row_of(const char *path, const char *stage, double v[7])
{
    char line[512];
    FILE *f = fopen(path, "r");
    int found = 0;

    assert_non_null(f);
    while (!found && fgets(line, sizeof(line), f)) {
        size_t n = strlen(stage);
        if (strncmp(line + 2, stage, n) == 0 && line[2 + n] == ' ' && line[3 + n] == '|')
            found = sscanf(line + 4 + n, " %lf | %lf | %lf | %lf | %lf | %lf | %lf", &v[0], &v[1],
                           &v[2], &v[3], &v[4], &v[5], &v[6]) == 7;
    }
    fclose(f);
    return found;
}

static void within(double got, double want, double rel)
{
    if (got < want * (1 - rel) || got > want * (1 + rel))
        fail_msg("%.1f not within %.0f%% of %.1f", got, rel * 100, want);
}

static void test_percentiles(void **st)
{
    char path[] = "/tmp/streamml-stt-XXXXXX";
    double v[7];
    int fd = mkstemp(path);

    (void)st;
    assert_true(fd >= 0);
    close(fd);
    stt_enable(path);
    assert_true(stt_enabled());
    /* 1..100000 us once each: p50 50,000, p90 90,000, p99 99,000 */
    for (int64_t x = 1; x <= 100000; x++)
        stt_add(STT_READ, x);
    for (int64_t x = 0; x < 8; x++) /* small values are exact */
        stt_add(STT_BATCH_N, x);
    stt_add(STT_WAIT, -5); /* a clock step: counted as 0 */
    assert_int_equal(stt_report(), 0);
    assert_true(row_of(path, "  of which: state read round trip", v));
    assert_int_equal((int)v[0], 100000);
    within(v[1], 50000.5, 0.001);
    within(v[2], 50000, 0.09);
    within(v[3], 90000, 0.09);
    within(v[4], 99000, 0.09);
    assert_int_equal((int)v[6], 100000);
    assert_true(row_of(path, "batch size (messages)", v));
    assert_int_equal((int)v[0], 8);
    assert_int_equal((int)v[2], 4); /* the 5th of 0..7 */
    assert_int_equal((int)v[6], 7);
    assert_true(row_of(path, "wait (poll, to the first message)", v));
    assert_int_equal((int)v[6], 0);
    assert_false(row_of(path, "decode", v)); /* nothing recorded: no row */
    unlink(path);
}

static void test_off(void **st)
{
    char path[] = "/tmp/streamml-stt-XXXXXX";
    int fd = mkstemp(path);

    (void)st;
    assert_true(fd >= 0);
    close(fd);
    unlink(path);
    stt_enable("");
    assert_false(stt_enabled());
    stt_add(STT_READ, 10);
    assert_int_equal(stt_report(), 0);
    assert_int_equal(access(path, F_OK), -1);
    /* an unwritable path: -1 and a logged line, no crash */
    stt_enable("/nonexistent-dir/x/stages.md");
    stt_add(STT_READ, 10);
    assert_int_equal(stt_report(), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_percentiles),
                                       cmocka_unit_test(test_off)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
