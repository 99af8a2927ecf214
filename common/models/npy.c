/* NumPy .npy reader and writer (common/models/npy.h). The header is a Python dict
 * literal, e.g. {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), };
 * only the three keys numpy writes are read, each with a bounded scan. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "npy.h"
#include "out.h"

/* Elements of t, or -1 past 2^40 (no .npy we accept is that large). */
static int64_t count(const struct onnx_tensor *t)
{
    int64_t n = 1;

    for (int i = 0; i < t->ndim; i++) {
        if (t->dims[i] < 0 || (t->dims[i] > 0 && n > (INT64_C(1) << 40) / t->dims[i]))
            return -1;
        n *= t->dims[i];
    }
    return n;
}

static const char magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

/* The value text after 'key': in h, or NULL. */
static const char *dict_value(const char *h, const char *key)
{
    char k[32];
    const char *p;

    snprintf(k, sizeof(k), "'%s'", key);
    p = strstr(h, k);
    if (!p)
        return NULL;
    p += strlen(k);
    p += strspn(p, " ");
    if (*p != ':')
        return NULL;
    p++;
    return p + strspn(p, " ");
}

static int parse_descr(const char *h, const char *path, enum onnx_dtype *dt, struct err *e)
{
    const char *v = dict_value(h, "descr");

    if (!v || (*v != '\'' && *v != '"'))
        return err_set(e, ERR_DECODE, "npy: %s: header has no 'descr'", path);
    if (strncmp(v + 1, "<f4", 3) == 0 && v[4] == v[0])
        *dt = ONNX_F32;
    else if (strncmp(v + 1, "<i8", 3) == 0 && v[4] == v[0])
        *dt = ONNX_I64;
    else if (strncmp(v + 1, "|b1", 3) == 0 && v[4] == v[0])
        *dt = ONNX_BOOL;
    else
        return err_set(e, ERR_CONFIG,
                       "npy: %s: dtype %.8s is not supported (float32 '<f4', int64 '<i8', bool "
                       "'|b1'; "
                       "use a.astype(np.float32))",
                       path, v);
    return ERR_OK;
}

static int parse_shape(const char *h, const char *path, struct onnx_tensor *t, struct err *e)
{
    const char *v = dict_value(h, "shape");
    char *end;

    if (!v || *v != '(')
        return err_set(e, ERR_DECODE, "npy: %s: header has no 'shape' tuple", path);
    v++;
    t->ndim = 0;
    for (;;) {
        long long d;
        v += strspn(v, " ");
        if (*v == ')')
            break;
        if (t->ndim == ONNX_MAX_DIMS)
            return err_set(e, ERR_CONFIG, "npy: %s: more than %d dims", path, ONNX_MAX_DIMS);
        errno = 0;
        d = strtoll(v, &end, 10);
        if (end == v || errno || d < 0)
            return err_set(e, ERR_DECODE, "npy: %s: bad dim in shape", path);
        t->dims[t->ndim++] = d;
        v = end + strspn(end, " ");
        if (*v == ',')
            v++;
        else if (*v != ')')
            return err_set(e, ERR_DECODE, "npy: %s: bad shape tuple", path);
    }
    return ERR_OK;
}

static int parse_header(const char *h, const char *path, struct onnx_tensor *t, struct err *e)
{
    const char *fo = dict_value(h, "fortran_order");

    if (!fo || strncmp(fo, "False", 5) != 0)
        return err_set(e, ERR_CONFIG,
                       "npy: %s: fortran_order must be False (use "
                       "np.ascontiguousarray)",
                       path);
    if (parse_descr(h, path, &t->dtype, e) || parse_shape(h, path, t, e))
        return e->code;
    return ERR_OK;
}

/* Reads the preamble and header; leaves f at the data. */
static int read_header(FILE *f, const char *path, struct onnx_tensor *t, long *data_off,
                       struct err *e)
{
    unsigned char pre[12];
    size_t hlen, lenbytes;
    char *h;
    int rc;

    if (fread(pre, 1, 8, f) != 8 || memcmp(pre, magic, 6) != 0)
        return err_set(e, ERR_DECODE, "npy: %s: not a .npy file (bad magic)", path);
    if (pre[6] < 1 || pre[6] > 3)
        return err_set(e, ERR_DECODE, "npy: %s: format version %d.%d", path, pre[6], pre[7]);
    lenbytes = pre[6] == 1 ? 2 : 4;
    if (fread(pre + 8, 1, lenbytes, f) != lenbytes)
        return err_set(e, ERR_DECODE, "npy: %s: truncated header", path);
    hlen = (size_t)pre[8] | (size_t)pre[9] << 8;
    if (lenbytes == 4)
        hlen |= (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
    if (hlen > NPY_MAX_HEADER)
        return err_set(e, ERR_DECODE, "npy: %s: header of %zu bytes (at most %d)", path, hlen,
                       NPY_MAX_HEADER);
    h = malloc(hlen + 1);
    if (!h)
        return err_set(e, ERR_NOMEM, "npy: out of memory");
    if (fread(h, 1, hlen, f) != hlen) {
        free(h);
        return err_set(e, ERR_DECODE, "npy: %s: truncated header", path);
    }
    h[hlen] = '\0';
    rc = parse_header(h, path, t, e);
    free(h);
    *data_off = (long)(8 + lenbytes + hlen);
    return rc;
}

int npy_read(const char *path, struct onnx_tensor *t, struct err *e)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    long off = 0;
    size_t bytes;
    int64_t n;

    memset(t, 0, sizeof(*t));
    if (!f)
        return err_set(e, ERR_IO, "npy: %s: %s", path, strerror(errno));
    if (fstat(fileno(f), &st) != 0 || read_header(f, path, t, &off, e)) {
        fclose(f);
        return e->code ? e->code : err_set(e, ERR_IO, "npy: %s: stat failed", path);
    }
    n = count(t);
    bytes = (size_t)n * onnx_dtype_size(t->dtype);
    if (n < 0 || (uint64_t)st.st_size != (uint64_t)off + bytes) {
        fclose(f);
        return err_set(e, ERR_DECODE, "npy: %s: %lld data bytes, the shape needs %zu", path,
                       (long long)st.st_size - off, bytes);
    }
    t->data = malloc(bytes ? bytes : 1);
    if (!t->data || fread(t->data, 1, bytes, f) != bytes) {
        fclose(f);
        npy_free(t);
        return err_set(e, ERR_IO, "npy: %s: read failed", path);
    }
    fclose(f);
    return ERR_OK;
}

int npy_write(const char *path, const struct onnx_tensor *t, struct err *e)
{
    char h[512];
    int len = snprintf(h, sizeof(h), "{'descr': '%s', 'fortran_order': False, 'shape': (",
                       t->dtype == ONNX_I64    ? "<i8"
                       : t->dtype == ONNX_BOOL ? "|b1"
                                               : "<f4");
    size_t bytes = onnx_numel(t) * onnx_dtype_size(t->dtype);
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0};
    struct out *o;
    FILE *f;
    int ok;

    for (int i = 0; i < t->ndim; i++)
        len += snprintf(h + len, sizeof(h) - (size_t)len, "%lld%s", (long long)t->dims[i],
                        t->ndim == 1 || i + 1 < t->ndim ? ", " : "");
    len += snprintf(h + len, sizeof(h) - (size_t)len, "), }");
    /* numpy pads with spaces so that data starts on a 64-byte boundary */
    while ((10 + len + 1) % 64)
        h[len++] = ' ';
    h[len++] = '\n';
    pre[8] = (unsigned char)(len & 0xff);
    pre[9] = (unsigned char)(len >> 8);
    /* common/base/out.h: a file appears whole, a device or FIFO is written as it is. */
    if (out_open(&o, path, e))
        return err_wrap(e, "npy");
    f = out_file(o);
    ok = fwrite(pre, 1, 10, f) == 10 && fwrite(h, 1, (size_t)len, f) == (size_t)len &&
         (!bytes || fwrite(t->data, 1, bytes, f) == bytes);
    if (out_commit(o, e))
        return err_wrap(e, "npy");
    if (!ok)
        return err_set(e, ERR_IO, "npy: %s: write failed", path);
    return ERR_OK;
}

void npy_free(struct onnx_tensor *t)
{
    if (!t)
        return;
    free(t->data);
    t->data = NULL;
}
