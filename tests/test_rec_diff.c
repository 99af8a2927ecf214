/* tests/test_rec_diff.c: codec_rec (a feature spec's record read by
 * position) against avro-c alone (tests/fuzz/rec_diff.h): the corpus of
 * the differential fuzz target tests/fuzz/fuzz_rec.c replayed (seeds by
 * tests/fuzz/make_rec_corpus.py, plus what `make fuzz` kept), and the
 * cases at the edge of the rules, built here byte by byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <string.h>

#include "fuzz/rec_diff.h"

static struct rec_diff d;

static int setup(void **state)
{
    (void)state;
    if (rec_diff_open(&d, "schemas")) {
        fprintf(stderr, "%s\n", d.why);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    rec_diff_close(&d);
    return 0;
}

static size_t read_file(const char *path, unsigned char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    size_t n;

    assert_non_null(f);
    n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

static void test_the_corpus_decodes_as_avro_c_reads_it(void **state)
{
    static unsigned char buf[1 << 16];
    const char *dir = "tests/fuzz/corpus/rec";
    DIR *dp = opendir(dir);
    struct dirent *de;
    long n = 0;

    (void)state;
    assert_non_null(dp);
    while ((de = readdir(dp))) {
        char path[512];
        size_t len;
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        len = read_file(path, buf, sizeof(buf));
        if (rec_diff_check(&d, buf, len))
            fail_msg("%s: %s", path, d.why);
        n++;
    }
    closedir(dp);
    assert_true(n >= 5);
    assert_true(d.both_ok >= 5); /* the seeds are records both read */
}

/* The seed record 0 of make_rec_corpus.py with one byte changed or cut. */
static void test_every_cut_and_flip_of_a_record_agrees(void **state)
{
    static unsigned char rec[1 << 12], m[1 << 12];
    size_t n = read_file("tests/fuzz/corpus/rec/seed_0_eb66f3a9", rec, sizeof(rec));

    (void)state;
    assert_true(n > 40);
    for (size_t cut = 0; cut <= n; cut++)
        if (rec_diff_check(&d, rec, cut))
            fail_msg("cut at %zu: %s", cut, d.why);
    for (size_t i = 0; i < n; i++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(m, rec, n);
            m[i] ^= (unsigned char)(1u << bit);
            if (rec_diff_check(&d, m, n))
                fail_msg("byte %zu bit %d: %s", i, bit, d.why);
        }
    }
    /* trailing bytes after a whole record: both refuse */
    memcpy(m, rec, n);
    m[n] = 0;
    assert_int_equal(rec_diff_check(&d, m, n + 1), 0);
}

/* The differential check's first findings: avro-c 1.11 reads a boolean
 * byte of 3 (true) and an enum index of -2 (unchecked, out of bounds for
 * avro_schema_enum_get); the codec refuses both, naming the field, so such
 * a record is dead-lettered instead of scored on garbage. */
static void test_what_avro_c_reads_wrongly_the_codec_refuses(void **state)
{
    static unsigned char m[1 << 12];
    size_t n = read_file("tests/fuzz/corpus/rec/seed_0_eb66f3a9", m, sizeof(m));
    struct codec_val out[REC_DIFF_NF];
    struct err e = {0};
    long stricter = d.stricter;

    (void)state;
    assert_int_equal(m[28], 1); /* flag: [boolean, null] branch 0, true */
    m[28] = 3;
    assert_int_equal(rec_diff_check(&d, m, n), 0);
    memcpy(d.msg + 5, m, n);
    assert_int_equal(codec_rec_decode(d.rec, d.msg, n + 5, out, &e), ERR_DECODE);
    assert_non_null(strstr(e.msg, "boolean byte 3"));
    assert_non_null(strstr(e.msg, "(field flag)"));
    m[28] = 1;
    assert_int_equal(m[38], 2); /* kind: symbol 1, zig-zag 2 */
    m[38] = 3;                  /* -2 */
    assert_int_equal(rec_diff_check(&d, m, n), 0);
    memcpy(d.msg + 5, m, n);
    assert_int_equal(codec_rec_decode(d.rec, d.msg, n + 5, out, &e), ERR_DECODE);
    assert_non_null(strstr(e.msg, "enum index -2 out of range"));
    assert_int_equal(d.stricter, stricter + 2); /* and avro-c read both */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_corpus_decodes_as_avro_c_reads_it),
        cmocka_unit_test(test_every_cut_and_flip_of_a_record_agrees),
        cmocka_unit_test(test_what_avro_c_reads_wrongly_the_codec_refuses),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
