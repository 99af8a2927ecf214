/* tests/test_fuzz_regress.c: inputs `make fuzz` found crashing, kept as
 * regression tests (tests/fuzz/regress/) so the normal test run replays
 * them without clang: each must now fail cleanly with a precise reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "onnx.h"
#include "onnx_ops.h"

/* A Conv whose W input name is "" (omitted): the kernel dereferenced a
 * NULL tensor while folding constants at load (UBSan). */
static void test_onnx_conv_with_empty_required_input(void **st)
{
    struct onnx_model *m = NULL;
    struct err e = {0};

    (void)st;
    assert_int_equal(onnx_open(&m, "tests/fuzz/regress/onnx_conv_empty_w.onnx", &e), ERR_CONFIG);
    assert_null(m);
    /* Refused, whichever of its faults the loader meets first: the empty
     * required input, or the NaN weight the same fuzz input carries. */
    assert_true((strstr(e.msg, "required input") && strstr(e.msg, "is empty")) ||
                strstr(e.msg, "is NaN"));
}

/* A NaN weight reached the fast exp of Sigmoid: converting NaN to int is
 * undefined (UBSan); NaN must come out as NaN. */
static void test_sigmoid_of_nan_is_nan(void **st)
{
    (void)st;
    assert_true(isnan(onnx_sigmoid(NAN)));
    assert_true(fabsf(onnx_sigmoid(0.0f) - 0.5f) < 1e-6f);
    assert_true(onnx_sigmoid(-1000.0f) < 1e-30f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_onnx_conv_with_empty_required_input),
        cmocka_unit_test(test_sigmoid_of_nan_is_nan),
    };
    return cmocka_run_group_tests_name("fuzz_regress", tests, NULL, NULL);
}
