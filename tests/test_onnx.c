/* ONNX runtime (common/onnx*.c) and .npy files (common/models/npy.c).
 *
 * Parity: models exported from torch by tests/fixtures/make_onnx_fixtures.py
 * (a conv net covering every Conv variant and the shape ops, an
 * EfficientNet-style net, GRU session models) run on torch's inputs; the
 * max abs error relative to the output scale must be <= 1e-4.
 * Refusals: unsupported ops, GRU linear_before_reset=0, bad files and bad
 * inputs are refused with the culprit named, never run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "npy.h"
#include "onnx.h"
#include "stack.h"

#define FIX "tests/fixtures/onnx/"
#define TOL 1e-4

static void load_ok(struct onnx_model **m, const char *name)
{
    struct err e = {0};
    char path[256];

    snprintf(path, sizeof(path), FIX "%s.onnx", name);
    if (onnx_open(m, path, &e) != 0)
        fail_msg("%s: %s", path, e.msg);
}

static void read_npy(struct onnx_tensor *t, const char *name, const char *part)
{
    struct err e = {0};
    char path[256];

    snprintf(path, sizeof(path), FIX "%s_%s.npy", name, part);
    if (npy_read(path, t, &e) != 0)
        fail_msg("%s: %s", path, e.msg);
}

/* max |got - want| / max(1, max |want|) */
static double rel_err(const struct onnx_tensor *got, const struct onnx_tensor *want)
{
    const float *g = got->data, *w = want->data;
    double scale = 1.0, worst = 0.0;
    size_t n = onnx_numel(want);

    assert_int_equal(got->ndim, want->ndim);
    for (int i = 0; i < want->ndim; i++)
        assert_int_equal(got->dims[i], want->dims[i]);
    for (size_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(w[i]));
    for (size_t i = 0; i < n; i++)
        worst = fmax(worst, fabs((double)g[i] - w[i]));
    return worst / scale;
}

/* Runs fixture name on its inputs and compares every output with torch's. */
static void check_parity_threads(const char *name, size_t n_in, size_t n_out, int threads)
{
    struct onnx_model *m;
    struct onnx_tensor in[4], out[4], want;
    struct err e = {0};
    char part[16];

    load_ok(&m, name);
    onnx_set_threads(m, threads);
    assert_int_equal(onnx_num_inputs(m), n_in);
    assert_int_equal(onnx_num_outputs(m), n_out);
    for (size_t i = 0; i < n_in; i++) {
        snprintf(part, sizeof(part), "in%zu", i);
        read_npy(&in[i], name, part);
    }
    for (int rep = 0; rep < 2; rep++) { /* the second run reuses every buffer */
        if (onnx_run(m, in, n_in, out, n_out, &e) != 0)
            fail_msg("%s: %s", name, e.msg);
        for (size_t i = 0; i < n_out; i++) {
            snprintf(part, sizeof(part), "out%zu", i);
            read_npy(&want, name, part);
            double err = rel_err(&out[i], &want);
            print_message("%s output %zu: max rel error %.3g\n", name, i, err);
            assert_true(err <= TOL);
            npy_free(&want);
        }
    }
    for (size_t i = 0; i < n_in; i++)
        npy_free(&in[i]);
    onnx_close(m);
}

static void expect_refused(const char *path, int code, const char *w1, const char *w2);

static void check_parity(const char *name, size_t n_in, size_t n_out)
{
    check_parity_threads(name, n_in, n_out, 1);
}

/* Depthwise planes and activations split over 3 threads: same answers. */
static void test_threaded_runs_match_torch(void **state)
{
    (void)state;
    check_parity_threads("effnet_tiny", 1, 1, 3);
    check_parity_threads("conv_net", 1, 2, 3);
}

static void test_conv_net_matches_torch(void **state)
{
    (void)state;
    check_parity("conv_net", 1, 2);
}

static void test_effnet_tiny_matches_torch(void **state)
{
    (void)state;
    check_parity("effnet_tiny", 1, 1);
}

static void test_gru_session_matches_torch(void **state)
{
    (void)state;
    check_parity("gru_session", 2, 2);
}

static void test_gru_bidirectional_two_layers_matches_torch(void **state)
{
    (void)state;
    check_parity("gru_bidir2", 2, 2);
}

/* Greater, Less, Equal (on shapes), Not, Where, bool casts: torch's
 * expand(n, -1), torch.where, masked_fill and a mask from a bool. */
static void test_comparisons_and_where_match_torch(void **state)
{
    (void)state;
    check_parity("masked", 1, 1);
    expect_refused(FIX "bool_add.onnx", ERR_INVALID, "add_bools", "float32 or both int64");
}

/* Slice with INT64_MAX steps and reversed, Concat of 10, Reshape 0/-1. */
static void test_shape_op_edges_match_numpy(void **state)
{
    (void)state;
    check_parity("edge_ops", 1, 3);
    expect_refused(FIX "bad_reshape.onnx", ERR_INVALID, "bad_reshape", "shape[0]");
}

/* Batch 1 (a dynamic dim other than the export's) gives row 0 of batch 2. */
static void test_dynamic_batch_gives_same_rows(void **state)
{
    struct onnx_model *m;
    struct onnx_tensor in, one, out, want;
    struct err e = {0};
    (void)state;

    load_ok(&m, "effnet_tiny");
    read_npy(&in, "effnet_tiny", "in0");
    read_npy(&want, "effnet_tiny", "out0");
    one = in;
    one.dims[0] = 1;
    assert_int_equal(onnx_run(m, &one, 1, &out, 1, &e), 0);
    assert_int_equal(out.dims[0], 1);
    assert_int_equal(out.dims[1], 5);
    for (int k = 0; k < 5; k++)
        assert_true(fabs(((float *)out.data)[k] - ((float *)want.data)[k]) <= TOL);
    npy_free(&in);
    npy_free(&want);
    onnx_close(m);
}

/* The last conv activations kept for class-activation maps: averaging them
 * and applying fc.weight/fc.bias gives the logits back. */
static void test_kept_value_gives_cam_inputs(void **state)
{
    static const char *const keep[] = {"/head/head.2/Mul_output_0"};
    const struct onnx_tensor *feat, *w, *b;
    struct onnx_model *m;
    struct onnx_tensor in, out;
    struct err e = {0};
    (void)state;

    assert_int_equal(onnx_open_keep(&m, FIX "effnet_tiny.onnx", keep, 1, &e), 0);
    read_npy(&in, "effnet_tiny", "in0");
    assert_int_equal(onnx_run(m, &in, 1, &out, 1, &e), 0);
    feat = onnx_value(m, keep[0]);
    w = onnx_initializer(m, "fc.weight");
    b = onnx_initializer(m, "fc.bias");
    assert_non_null(feat);
    assert_int_equal(feat->ndim, 4);
    assert_int_equal(feat->dims[0], 2);
    assert_int_equal(feat->dims[1], 64);
    assert_int_equal(feat->dims[2], 8);
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 5; k++) {
            double z = ((const float *)b->data)[k];
            for (int c = 0; c < 64; c++) {
                double mean = 0;
                for (int p = 0; p < 64; p++)
                    mean += ((const float *)feat->data)[(i * 64 + c) * 64 + p] / 64.0;
                z += mean * ((const float *)w->data)[k * 64 + c];
            }
            assert_true(fabs(z - ((const float *)out.data)[i * 5 + k]) < 1e-5);
        }
    assert_null(onnx_value(m, "/head/head.0/Conv_output_0")); /* not kept: fused away */
    onnx_close(m);
    assert_int_equal(
        onnx_open_keep(&m, FIX "effnet_tiny.onnx", (const char *const[]){"nope"}, 1, &e),
        ERR_CONFIG);
    assert_non_null(strstr(e.msg, "nope"));
    npy_free(&in);
}

static void test_accessors_report_the_graph(void **state)
{
    struct onnx_model *m;
    int nd;
    int64_t dims[8];
    const struct onnx_tensor *w;
    (void)state;

    load_ok(&m, "effnet_tiny");
    assert_string_equal(onnx_input_name(m, 0), "image");
    assert_string_equal(onnx_output_name(m, 0), "logits");
    assert_null(onnx_input_name(m, 1));
    assert_int_equal(onnx_input_shape(m, 0, &nd, dims), 0);
    assert_int_equal(nd, 4);
    assert_int_equal(dims[0], -1);
    assert_int_equal(dims[1], 3);
    assert_int_equal(dims[3], 64);
    assert_int_equal(onnx_input_shape(m, 1, &nd, dims), ERR_NOTFOUND);
    assert_string_equal(onnx_metadata(m, "input_size"), "64");
    assert_string_equal(onnx_metadata(m, "std"), "0.229,0.224,0.225");
    assert_null(onnx_metadata(m, "nope"));
    w = onnx_initializer(m, "fc.weight");
    assert_non_null(w);
    assert_int_equal(w->ndim, 2);
    assert_int_equal(w->dims[0], 5);
    assert_int_equal(w->dims[1], 64);
    assert_null(onnx_initializer(m, "no.such.weight"));
    assert_int_equal(onnx_opset(m), 17);
    assert_true(strncmp(onnx_producer(m), "pytorch", 7) == 0);
    onnx_close(m);
    onnx_close(NULL);
}

static void expect_refused(const char *path, int code, const char *w1, const char *w2)
{
    struct onnx_model *m = (void *)1;
    struct err e = {0};

    assert_int_equal(onnx_open(&m, path, &e), code);
    assert_null(m);
    print_message("%s -> %s\n", path, e.msg);
    if (w1 && !strstr(e.msg, w1))
        fail_msg("'%s' not in: %s", w1, e.msg);
    if (w2 && !strstr(e.msg, w2))
        fail_msg("'%s' not in: %s", w2, e.msg);
}

static void test_unsupported_op_refused_with_its_name(void **state)
{
    (void)state;
    expect_refused(FIX "unsupported_op.onnx", ERR_CONFIG, "Einsum", "mystery");
}

static void test_gru_linear_before_reset_0_refused(void **state)
{
    (void)state;
    expect_refused(FIX "gru_lbr0.onnx", ERR_CONFIG, "linear_before_reset=0", "rnn");
    /* absent means 0 in the ONNX spec */
    expect_refused(FIX "gru_lbr_missing.onnx", ERR_CONFIG, "linear_before_reset=0", "rnn");
}

static void test_bad_graphs_refused(void **state)
{
    (void)state;
    expect_refused(FIX "opset12.onnx", ERR_CONFIG, "opset 12", NULL);
    expect_refused(FIX "bad_initializer.onnx", ERR_CONFIG, "'k'", "12 bytes of data for 4");
    expect_refused(FIX "undefined_input.onnx", ERR_CONFIG, "nowhere", "add");
    expect_refused(FIX "huge_dims.onnx", ERR_CONFIG, "'k'", "elements");
    expect_refused(FIX "shape_mismatch.onnx", ERR_INVALID, "mm", "inner dims");
}

/* Writes len bytes of data to a temporary file; returns its path. */
static void write_tmp(char *path, const void *data, size_t len)
{
    FILE *f;

    strcpy(path, "/tmp/test_onnx_XXXXXX");
    close(mkstemp(path));
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    void *buf;

    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    rewind(f);
    buf = malloc(*len);
    assert_int_equal(fread(buf, 1, *len, f), *len);
    fclose(f);
    return buf;
}

static void test_truncated_files_refused(void **state)
{
    size_t len;
    char *buf = slurp(FIX "effnet_tiny.onnx", &len);
    char path[64];
    (void)state;

    /* Cut at many points: every one is refused, none crashes. */
    for (size_t cut = 1; cut < len; cut += len / 23) {
        struct onnx_model *m = NULL;
        struct err e = {0};
        write_tmp(path, buf, cut);
        assert_true(onnx_open(&m, path, &e) < 0);
        assert_null(m);
        assert_true(e.msg[0] != '\0');
        unlink(path);
    }
    free(buf);
}

/* Random byte changes anywhere in a valid model: every load either fails
 * with a message or gives a model that runs (or refuses its input) cleanly;
 * under ASan/UBSan this is a small fuzzer. */
static void test_mutated_models_never_crash(void **state)
{
    size_t len;
    unsigned char *orig = slurp(FIX "conv_net.onnx", &len), *buf = malloc(len);
    struct onnx_tensor in, out[2];
    unsigned s = 7;
    char path[64];
    int loaded = 0;
    (void)state;

    read_npy(&in, "conv_net", "in0");
    for (int iter = 0; iter < 150; iter++) {
        struct onnx_model *m = NULL;
        struct err e = {0};
        memcpy(buf, orig, len);
        for (int k = 0; k < 1 + iter % 4; k++) {
            s = s * 1103515245u + 12345u;
            buf[(s >> 8) % len] = (unsigned char)(s >> 24);
        }
        write_tmp(path, buf, len);
        if (onnx_open(&m, path, &e) == 0) {
            loaded++;
            if (onnx_run(m, &in, 1, out, 2, &e) != 0)
                assert_true(e.msg[0] != '\0');
            onnx_close(m);
        } else {
            assert_true(e.msg[0] != '\0');
            assert_null(m);
        }
        unlink(path);
    }
    print_message("mutated models: %d of 150 loaded\n", loaded);
    npy_free(&in);
    free(buf);
    free(orig);
}

/* The clickstream worker runs the session GRU one event at a time with the
 * hidden state carried between events: stepping T=1 with hn fed back as h0
 * gives the same logits and final state as the whole sequence at once. */
static void test_gru_stepwise_equals_whole_sequence(void **state)
{
    struct onnx_model *m;
    struct onnx_tensor items, h0, out[2], want_y, want_h, step[2];
    struct err e = {0};
    float h[3 * 32];
    int64_t it[3];
    (void)state;

    load_ok(&m, "gru_session");
    read_npy(&items, "gru_session", "in0"); /* [3, 7] */
    read_npy(&h0, "gru_session", "in1");    /* [1, 3, 32] */
    read_npy(&want_y, "gru_session", "out0");
    read_npy(&want_h, "gru_session", "out1");
    memcpy(h, h0.data, sizeof(h));
    step[0] = (struct onnx_tensor){ONNX_I64, 2, {3, 1}, it};
    step[1] = (struct onnx_tensor){ONNX_F32, 3, {1, 3, 32}, h};
    for (int t = 0; t < 7; t++) {
        for (int b = 0; b < 3; b++)
            it[b] = ((int64_t *)items.data)[b * 7 + t];
        assert_int_equal(onnx_run(m, step, 2, out, 2, &e), 0);
        assert_int_equal(out[0].dims[1], 1);
        for (int b = 0; b < 3; b++)
            for (int k = 0; k < 100; k++)
                assert_true(fabs(((float *)out[0].data)[b * 100 + k] -
                                 ((float *)want_y.data)[(b * 7 + t) * 100 + k]) <= TOL);
        memcpy(h, out[1].data, sizeof(h)); /* the state a worker would store */
    }
    for (int k = 0; k < 3 * 32; k++)
        assert_true(fabs(h[k] - ((float *)want_h.data)[k]) <= TOL);
    npy_free(&items);
    npy_free(&h0);
    npy_free(&want_y);
    npy_free(&want_h);
    onnx_close(m);
}

static void test_garbage_and_missing_files_refused(void **state)
{
    char garbage[4096], path[64];
    unsigned s = 12345;
    (void)state;

    for (size_t i = 0; i < sizeof(garbage); i++) {
        s = s * 1103515245u + 12345u;
        garbage[i] = (char)(s >> 16);
    }
    write_tmp(path, garbage, sizeof(garbage));
    expect_refused(path, ERR_DECODE, path, NULL);
    unlink(path);
    write_tmp(path, "", 0);
    expect_refused(path, ERR_CONFIG, "0 bytes", NULL);
    unlink(path);
    expect_refused(FIX "no_such_model.onnx", ERR_IO, "no_such_model", NULL);
}

static void test_bad_inputs_refused_at_run(void **state)
{
    struct onnx_model *m;
    struct onnx_tensor in[2], out[2];
    struct err e = {0};
    (void)state;

    load_ok(&m, "gru_session");
    read_npy(&in[0], "gru_session", "in0");
    read_npy(&in[1], "gru_session", "in1");
    assert_int_equal(onnx_run(m, in, 1, out, 2, &e), ERR_INVALID); /* one input missing */
    ((int64_t *)in[0].data)[3] = 100;                              /* item id past the table */
    assert_int_equal(onnx_run(m, in, 2, out, 2, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "index 100"));
    ((int64_t *)in[0].data)[3] = 1;
    ((float *)in[1].data)[5] = NAN;
    assert_int_equal(onnx_run(m, in, 2, out, 2, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "h0"));
    ((float *)in[1].data)[5] = 0.0f;
    in[1].dims[2] = 16; /* static hidden size is 32 */
    assert_int_equal(onnx_run(m, in, 2, out, 2, &e), ERR_INVALID);
    in[1].dims[2] = 32;
    in[0].dtype = ONNX_F32;
    assert_int_equal(onnx_run(m, in, 2, out, 2, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "items"));
    in[0].dtype = ONNX_I64;
    assert_int_equal(onnx_run(m, in, 2, out, 2, &e), 0); /* and it still runs */
    npy_free(&in[0]);
    npy_free(&in[1]);
    onnx_close(m);
}

static void test_npy_roundtrip(void **state)
{
    float f[6] = {1.5f, -2, 3, 4, 5, 6e10f};
    int64_t i[3] = {-1, 0, INT64_MAX};
    struct onnx_tensor a = {ONNX_F32, 2, {2, 3}, f}, b = {ONNX_I64, 1, {3}, i}, c = {0};
    struct onnx_tensor s = {ONNX_F32, 0, {0}, f}, got;
    struct err e = {0};
    char path[] = "/tmp/test_npy_XXXXXX";
    (void)state;

    close(mkstemp(path));
    assert_int_equal(npy_write(path, &a, &e), 0);
    assert_int_equal(npy_read(path, &got, &e), 0);
    assert_int_equal(got.dtype, ONNX_F32);
    assert_int_equal(got.ndim, 2);
    assert_int_equal(got.dims[1], 3);
    assert_memory_equal(got.data, f, sizeof(f));
    npy_free(&got);
    assert_int_equal(npy_write(path, &b, &e), 0);
    assert_int_equal(npy_read(path, &got, &e), 0);
    assert_int_equal(got.dtype, ONNX_I64);
    assert_memory_equal(got.data, i, sizeof(i));
    npy_free(&got);
    assert_int_equal(npy_write(path, &s, &e), 0); /* a scalar: shape () */
    assert_int_equal(npy_read(path, &got, &e), 0);
    assert_int_equal(got.ndim, 0);
    assert_true(((float *)got.data)[0] == 1.5f);
    npy_free(&got);
    {
        uint8_t bits[4] = {1, 0, 0, 1};
        struct onnx_tensor bt = {ONNX_BOOL, 2, {2, 2}, bits};
        assert_int_equal(npy_write(path, &bt, &e), 0);
        assert_int_equal(npy_read(path, &got, &e), 0);
        assert_int_equal(got.dtype, ONNX_BOOL);
        assert_memory_equal(got.data, bits, 4);
        npy_free(&got);
    }
    c.dtype = ONNX_F32;
    c.ndim = 2; /* shape (0, 0): empty */
    assert_int_equal(npy_write(path, &c, &e), 0);
    assert_int_equal(npy_read(path, &got, &e), 0);
    assert_int_equal(onnx_numel(&got), 0);
    npy_free(&got);
    unlink(path);
}

static void expect_npy_refused(const char *text, size_t len, int code, const char *want)
{
    struct onnx_tensor t;
    struct err e = {0};
    char path[64];

    write_tmp(path, text, len);
    assert_int_equal(npy_read(path, &t, &e), code);
    assert_null(t.data);
    if (!strstr(e.msg, want))
        fail_msg("'%s' not in: %s", want, e.msg);
    unlink(path);
}

#define H(s) "\x93NUMPY\x01\x00" s
static void test_npy_bad_files_refused(void **state)
{
    static const char f64[] =
        H("\x39\x00{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }");
    static const char be[] = H("\x39\x00{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }");
    static const char fo[] = H("\x38\x00{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }");
    static const char shp[] =
        H("\x3b\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2,-1), }");
    static const char shortdata[] =
        H("\x39\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\1\2\3\4");
    static const char hugehdr[] = H("\xff\xff{");
    (void)state;

    expect_npy_refused("PK\3\4 not npy", 12, ERR_DECODE, "bad magic");
    expect_npy_refused(f64, sizeof(f64) - 1, ERR_CONFIG, "<f8");
    expect_npy_refused(be, sizeof(be) - 1, ERR_CONFIG, ">f4");
    expect_npy_refused(fo, sizeof(fo) - 1, ERR_CONFIG, "fortran_order");
    expect_npy_refused(shp, sizeof(shp) - 1, ERR_DECODE, "shape");
    expect_npy_refused(shortdata, sizeof(shortdata) - 1, ERR_DECODE, "the shape needs 8");
    expect_npy_refused(hugehdr, sizeof(hugehdr) - 1, ERR_DECODE, "truncated header");
}

/* exit status of a shell command line */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    int rc;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* streamml predict writes .npy files equal to torch's outputs; inputs bound
 * by name or position; errors give the documented exit codes. */
static void test_predict_command_writes_npy(void **state)
{
    char dir[] = "/tmp/test_onnx_cli_XXXXXX";
    struct onnx_tensor got, want;
    struct err e = {0};
    char path[256];
    (void)state;

    assert_non_null(mkdtemp(dir));
    assert_int_equal(sh("%s predict -m " FIX "gru_session.onnx -i " FIX "gru_session_in0.npy "
                        "--input h0=" FIX "gru_session_in1.npy -o %s/y.npy -o hn=%s/h.npy",
                        test_bin("streamml"), dir, dir),
                     0);
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof(path), "%s/%s.npy", dir, k ? "h" : "y");
        assert_int_equal(npy_read(path, &got, &e), 0);
        read_npy(&want, "gru_session", k ? "out1" : "out0");
        assert_true(rel_err(&got, &want) <= TOL);
        npy_free(&got);
        npy_free(&want);
        unlink(path);
    }
    /* unsupported model: 2; wrong input type: 1; unknown input name: 2 */
    assert_int_equal(
        sh("%s predict -m " FIX "unsupported_op.onnx -i x.npy 2>/dev/null", test_bin("streamml")),
        2);
    assert_int_equal(sh("%s predict -m " FIX "conv_net.onnx -i " FIX "gru_session_in0.npy "
                        "2>/dev/null",
                        test_bin("streamml")),
                     1);
    assert_int_equal(sh("%s predict -m " FIX "conv_net.onnx -i nope=" FIX "conv_net_in0.npy "
                        "2>/dev/null",
                        test_bin("streamml")),
                     2);
    assert_int_equal(
        sh("%s model inspect " FIX "effnet_tiny.onnx | grep -q 'Conv  *22'", test_bin("streamml")),
        0);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_net_matches_torch),
        cmocka_unit_test(test_effnet_tiny_matches_torch),
        cmocka_unit_test(test_gru_session_matches_torch),
        cmocka_unit_test(test_gru_bidirectional_two_layers_matches_torch),
        cmocka_unit_test(test_threaded_runs_match_torch),
        cmocka_unit_test(test_shape_op_edges_match_numpy),
        cmocka_unit_test(test_comparisons_and_where_match_torch),
        cmocka_unit_test(test_dynamic_batch_gives_same_rows),
        cmocka_unit_test(test_accessors_report_the_graph),
        cmocka_unit_test(test_kept_value_gives_cam_inputs),
        cmocka_unit_test(test_unsupported_op_refused_with_its_name),
        cmocka_unit_test(test_gru_linear_before_reset_0_refused),
        cmocka_unit_test(test_bad_graphs_refused),
        cmocka_unit_test(test_truncated_files_refused),
        cmocka_unit_test(test_garbage_and_missing_files_refused),
        cmocka_unit_test(test_mutated_models_never_crash),
        cmocka_unit_test(test_gru_stepwise_equals_whole_sequence),
        cmocka_unit_test(test_bad_inputs_refused_at_run),
        cmocka_unit_test(test_npy_roundtrip),
        cmocka_unit_test(test_npy_bad_files_refused),
        cmocka_unit_test(test_predict_command_writes_npy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
