#include "image.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

#include "out.h"

#define REF_MAX 2048
#define HOST_MAX 256
#define PNG_CHUNK_MAX (8u << 20) /* ancillary chunks (iCCP, zTXt) cannot grow past this */

static const char *const reason_names[IMG_NREASONS] = {
    "ok",      "too_small",        "corrupt",     "truncated",   "missing",
    "unsupported_type", "too_large", "forbidden", "fetch_failed"};

const char *img_reason_name(enum img_reason r)
{
    return (unsigned)r < IMG_NREASONS ? reason_names[r] : "unknown";
}

struct img_loader {
    struct img_opts o;
    char root[PATH_MAX];           /* realpath of the root, "" = files refused */
    char hosts[IMG_MAX_HOSTS][HOST_MAX];
    int nhosts;
    CURL *curl;
    uint8_t *data;                 /* encoded bytes of the current reference */
    size_t len, cap;
    png_bytep *rows;               /* PNG row pointers, reused */
    size_t nrows;
    int http_too_large, http_forbidden_addr;
    char http_addr[INET6_ADDRSTRLEN];
};

/* Sets *why and the error together, so no path returns one without the other. */
static int fail(enum img_reason *why, enum img_reason r, struct err *e, int code, const char *fmt,
                ...) __attribute__((format(printf, 5, 6)));

static int fail(enum img_reason *why, enum img_reason r, struct err *e, int code, const char *fmt,
                ...)
{
    va_list ap;
    char msg[sizeof(e->msg)];

    *why = r;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return err_set(e, code, "%s: %s", img_reason_name(r), msg);
}

void img_init(struct img *im)
{
    memset(im, 0, sizeof(*im));
}

void img_free(struct img *im)
{
    if (!im)
        return;
    free(im->rgb);
    img_init(im);
}

/* ---- loader ---- */

static void apply_defaults(struct img_opts *o)
{
    if (o->timeout_ms <= 0)
        o->timeout_ms = 10000;
    if (!o->max_bytes)
        o->max_bytes = 20u << 20;
    if (!o->max_pixels)
        o->max_pixels = 50000000;
    if (o->max_scans <= 0)
        o->max_scans = 64;
    if (o->jpeg_max_memory <= 0)
        o->jpeg_max_memory = 256L << 20;
}

static int parse_hosts(struct img_loader *l, const char *list, struct err *e)
{
    const char *p = list ? list : "";

    while (*p) {
        size_t n;
        p += strspn(p, " \t,");
        n = strcspn(p, ",");
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (!n)
            break;
        if (l->nhosts == IMG_MAX_HOSTS || n >= HOST_MAX)
            return err_set(e, ERR_CONFIG, "images.allow_hosts: more than %d hosts or a name "
                           "over %d characters", IMG_MAX_HOSTS, HOST_MAX - 1);
        memcpy(l->hosts[l->nhosts], p, n);
        l->hosts[l->nhosts++][n] = '\0';
        p += n;
    }
    return ERR_OK;
}

int img_loader_open(struct img_loader **out, const struct img_opts *o, struct err *e)
{
    struct img_loader *l = calloc(1, sizeof(*l));

    *out = NULL;
    if (!l)
        return err_set(e, ERR_NOMEM, "image loader: out of memory");
    l->o = *o;
    apply_defaults(&l->o);
    l->o.root = NULL; /* not kept: only its resolved form is used */
    if (o->root && *o->root && !realpath(o->root, l->root)) {
        err_set(e, ERR_CONFIG, "images.root %s: %s", o->root, strerror(errno));
        goto out_free;
    }
    if (parse_hosts(l, o->allow_hosts, e))
        goto out_free;
    l->o.allow_hosts = NULL;
    if (l->nhosts) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) || !(l->curl = curl_easy_init())) {
            err_set(e, ERR_NOMEM, "image loader: libcurl initialisation failed");
            goto out_free;
        }
    }
    *out = l;
    return ERR_OK;
out_free:
    img_loader_close(l);
    return e->code;
}

void img_loader_close(struct img_loader *l)
{
    if (!l)
        return;
    if (l->curl) {
        curl_easy_cleanup(l->curl);
        curl_global_cleanup();
    }
    free(l->data);
    free(l->rows);
    free(l);
}

static int reserve(struct img_loader *l, size_t n)
{
    uint8_t *p;

    if (n <= l->cap)
        return ERR_OK;
    p = realloc(l->data, n);
    if (!p)
        return ERR_NOMEM;
    l->data = p;
    l->cap = n;
    return ERR_OK;
}

/* ---- files under the root ---- */

static int has_dotdot(const char *p)
{
    while (*p) {
        size_t n = strcspn(p, "/");
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return 1;
        p += n;
        p += strspn(p, "/");
    }
    return 0;
}

static int under_root(const struct img_loader *l, const char *path)
{
    size_t n = strlen(l->root);

    if (strcmp(l->root, "/") == 0)
        return 1;
    return strncmp(path, l->root, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* %XX escapes of a file:// URI path; a NUL byte or a bad escape is refused. */
static int percent_decode(const char *s, char *out, size_t cap)
{
    size_t o = 0;

    for (; *s; s++) {
        int c = (unsigned char)*s;
        if (c == '%') {
            char hex[3] = {s[1], s[1] ? s[2] : 0, 0}, *end;
            long v = strtol(hex, &end, 16);
            if (!hex[0] || !hex[1] || *end || v == 0 || !isxdigit((unsigned char)hex[0]))
                return -1;
            c = (int)v;
            s += 2;
        }
        if (o + 1 >= cap)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return 0;
}

static enum img_reason errno_reason(int err)
{
    if (err == ENOENT || err == ENOTDIR)
        return IMG_MISSING;
    if (err == EACCES || err == ELOOP || err == EPERM)
        return IMG_FORBIDDEN;
    return IMG_FETCH_FAILED;
}

static int read_fd(struct img_loader *l, int fd, const char *ref, enum img_reason *why,
                   struct err *e)
{
    struct stat st;
    size_t got = 0;

    if (fstat(fd, &st))
        return fail(why, IMG_FETCH_FAILED, e, ERR_IO, "%s: %s", ref, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return fail(why, IMG_UNSUPPORTED_TYPE, e, ERR_INVALID, "%s: not a regular file", ref);
    if ((uint64_t)st.st_size > l->o.max_bytes)
        return fail(why, IMG_TOO_LARGE, e, ERR_INVALID, "%s: %lld bytes exceed the %zu-byte limit",
                    ref, (long long)st.st_size, l->o.max_bytes);
    if (reserve(l, (size_t)st.st_size + 1))
        return fail(why, IMG_TOO_LARGE, e, ERR_NOMEM, "%s: out of memory", ref);
    /* Read one byte more than the size: a file growing under us is caught. */
    while (got <= (size_t)st.st_size) {
        ssize_t r = read(fd, l->data + got, (size_t)st.st_size + 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return fail(why, IMG_FETCH_FAILED, e, ERR_IO, "%s: %s", ref, strerror(errno));
        if (r == 0)
            break;
        got += (size_t)r;
    }
    if (got != (size_t)st.st_size)
        return fail(why, IMG_FETCH_FAILED, e, ERR_IO, "%s: size changed while reading", ref);
    l->len = got;
    return ERR_OK;
}

static int load_file(struct img_loader *l, const char *path, const char *ref,
                     enum img_reason *why, struct err *e)
{
    char full[PATH_MAX], real[PATH_MAX];
    int fd, rc;

    if (!l->root[0])
        return fail(why, IMG_FORBIDDEN, e, ERR_INVALID, "%s: file references are disabled "
                    "(images.root is not set)", ref);
    if (!*path)
        return fail(why, IMG_MISSING, e, ERR_INVALID, "empty image reference");
    if (has_dotdot(path))
        return fail(why, IMG_FORBIDDEN, e, ERR_INVALID, "%s: \"..\" is not allowed", ref);
    if (path[0] == '/')
        rc = snprintf(full, sizeof(full), "%s", path);
    else
        rc = snprintf(full, sizeof(full), "%s/%s", l->root, path);
    if (rc < 0 || (size_t)rc >= sizeof(full))
        return fail(why, IMG_FORBIDDEN, e, ERR_INVALID, "%s: path too long", ref);
    if (!realpath(full, real))
        return fail(why, errno_reason(errno), e, ERR_INVALID, "%s: %s", ref, strerror(errno));
    /* After realpath: a symlink pointing out of the root is caught here. */
    if (!under_root(l, real))
        return fail(why, IMG_FORBIDDEN, e, ERR_INVALID, "%s: resolves outside images.root", ref);
    /* O_NONBLOCK: open(2) of a FIFO without a writer blocks forever (a
     * poison pill for the partition); read_fd refuses anything but a regular
     * file by fstat before the first read. Regular files ignore O_NONBLOCK. */
    fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return fail(why, errno_reason(errno), e, ERR_IO, "%s: %s", ref, strerror(errno));
    rc = read_fd(l, fd, ref, why, e);
    close(fd);
    return rc;
}

static int load_file_uri(struct img_loader *l, const char *ref, enum img_reason *why,
                         struct err *e)
{
    const char *p = ref + 7; /* after "file://" */
    char path[PATH_MAX];

    if (strncasecmp(p, "localhost/", 10) == 0)
        p += 9;
    if (*p != '/')
        return fail(why, IMG_FORBIDDEN, e, ERR_INVALID, "%s: file URIs name no host but "
                    "localhost", ref);
    if (percent_decode(p, path, sizeof(path)))
        return fail(why, IMG_FORBIDDEN, e, ERR_INVALID, "%s: bad %%-escape or too long", ref);
    return load_file(l, path, ref, why, e);
}

/* ---- http(s) to allow-listed hosts ---- */

static int host_allowed(const struct img_loader *l, const char *host)
{
    for (int i = 0; i < l->nhosts; i++)
        if (strcasecmp(l->hosts[i], host) == 0)
            return 1;
    return 0;
}

static int v4_special(uint32_t a)
{
    return (a >> 24) == 0 || (a >> 24) == 10 || (a >> 24) == 127 || (a >> 16) == 0xa9fe ||
           (a >> 20) == 0xac1 || (a >> 16) == 0xc0a8 || (a >> 22) == (100u << 2 | 1) ||
           (a >> 28) >= 0xe;
}

/* Loopback, link-local (cloud metadata), private, unspecified, multicast. */
static int addr_special(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return v4_special(ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr));
    if (sa->sa_family == AF_INET6) {
        const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        int zero = 1;
        if (memcmp(b, mapped, 12) == 0)
            return v4_special((uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 |
                              (uint32_t)b[14] << 8 | b[15]);
        for (int i = 0; i < 15; i++)
            zero &= b[i] == 0;
        return zero || (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) || (b[0] & 0xfe) == 0xfc ||
               b[0] == 0xff;
    }
    return 1;
}

/* Every connection goes through here, after DNS: an allow-listed name that
 * resolves to an internal address is refused unless the address itself is
 * allow-listed (DNS rebinding, metadata endpoints). */
static curl_socket_t open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct img_loader *l = arg;
    const void *in = a->addr.sa_family == AF_INET6
                         ? (const void *)&((struct sockaddr_in6 *)&a->addr)->sin6_addr
                         : (const void *)&((struct sockaddr_in *)&a->addr)->sin_addr;

    (void)purpose;
    if (!inet_ntop(a->addr.sa_family, in, l->http_addr, sizeof(l->http_addr)))
        snprintf(l->http_addr, sizeof(l->http_addr), "?");
    if (addr_special(&a->addr) && !host_allowed(l, l->http_addr)) {
        l->http_forbidden_addr = 1;
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype, a->protocol);
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct img_loader *l = arg;

    n *= size;
    if (l->len + n > l->o.max_bytes || reserve(l, l->len + n)) {
        l->http_too_large = 1;
        return 0; /* aborts the transfer */
    }
    memcpy(l->data + l->len, p, n);
    l->len += n;
    return n;
}

static int url_host(const char *ref, char *host, size_t cap)
{
    CURLU *u = curl_url();
    char *h = NULL;
    int rc = -1;

    if (u && !curl_url_set(u, CURLUPART_URL, ref, 0) &&
        !curl_url_get(u, CURLUPART_HOST, &h, 0) && strlen(h) < cap) {
        snprintf(host, cap, "%s", h);
        rc = 0;
    }
    curl_free(h);
    curl_url_cleanup(u);
    return rc;
}

static void http_setup(struct img_loader *l, const char *ref)
{
    CURL *c = l->curl;

    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, ref);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_PROXY, ""); /* the address checks need direct connections */
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, l->o.timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, l->o.timeout_ms);
    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)l->o.max_bytes);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, l);
    curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, l);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "streamml-images/" STREAMML_VERSION);
}

static int http_result(struct img_loader *l, CURLcode cc, const char *ref, enum img_reason *why,
                       struct err *e)
{
    long status = 0;

    if (l->http_forbidden_addr)
        return fail(why, IMG_FORBIDDEN, e, ERR_INVALID, "%s: address %s is internal and not "
                    "allow-listed", ref, l->http_addr);
    if (l->http_too_large || cc == CURLE_FILESIZE_EXCEEDED)
        return fail(why, IMG_TOO_LARGE, e, ERR_INVALID, "%s: body exceeds the %zu-byte limit",
                    ref, l->o.max_bytes);
    if (cc == CURLE_OPERATION_TIMEDOUT)
        return fail(why, IMG_FETCH_FAILED, e, ERR_TIMEOUT, "%s: timed out after %ld ms", ref,
                    l->o.timeout_ms);
    if (cc != CURLE_OK)
        return fail(why, IMG_FETCH_FAILED, e, ERR_IO, "%s: %s", ref, curl_easy_strerror(cc));
    curl_easy_getinfo(l->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status == 404 || status == 410)
        return fail(why, IMG_MISSING, e, ERR_NOTFOUND, "%s: HTTP %ld", ref, status);
    if (status < 200 || status > 299)
        return fail(why, IMG_FETCH_FAILED, e, ERR_IO, "%s: HTTP %ld%s", ref, status,
                    status >= 300 && status < 400 ? " (redirects are not followed)" : "");
    return ERR_OK;
}

static int load_http(struct img_loader *l, const char *ref, enum img_reason *why, struct err *e)
{
    char host[HOST_MAX];

    if (url_host(ref, host, sizeof(host)))
        return fail(why, IMG_FORBIDDEN, e, ERR_INVALID, "%s: not a valid URL", ref);
    if (!l->curl || !host_allowed(l, host))
        return fail(why, IMG_FORBIDDEN, e, ERR_INVALID, "%s: host %s is not in "
                    "images.allow_hosts", ref, host);
    l->len = 0;
    l->http_too_large = l->http_forbidden_addr = 0;
    http_setup(l, ref);
    return http_result(l, curl_easy_perform(l->curl), ref, why, e);
}

/* "scheme://" prefix, RFC 3986 scheme characters. */
static int has_scheme(const char *s)
{
    size_t n = 0;

    if (!isalpha((unsigned char)s[0]))
        return 0;
    while (isalnum((unsigned char)s[n]) || s[n] == '+' || s[n] == '-' || s[n] == '.')
        n++;
    return strncmp(s + n, "://", 3) == 0;
}

int img_load(struct img_loader *l, const char *ref, struct img *im, enum img_reason *why,
             struct err *e)
{
    int rc;

    *why = IMG_OK;
    if (strnlen(ref, REF_MAX) == REF_MAX)
        return fail(why, IMG_FORBIDDEN, e, ERR_INVALID, "reference longer than %d bytes",
                    REF_MAX - 1);
    if (strncasecmp(ref, "http://", 7) == 0 || strncasecmp(ref, "https://", 8) == 0)
        rc = load_http(l, ref, why, e);
    else if (strncasecmp(ref, "file://", 7) == 0)
        rc = load_file_uri(l, ref, why, e);
    else if (has_scheme(ref))
        rc = fail(why, IMG_FORBIDDEN, e, ERR_INVALID, "%.64s: scheme not allowed (file paths, "
                  "file://, http://, https://)", ref);
    else
        rc = load_file(l, ref, ref, why, e);
    if (rc)
        return rc;
    rc = img_decode(l, l->data, l->len, im, why, e);
    return rc ? err_wrap(e, "%.200s", ref) : ERR_OK;
}

/* ---- decoding ---- */

static int check_size(const struct img_loader *l, uint64_t w, uint64_t h, enum img_reason *why,
                      struct err *e)
{
    if (w == 0 || h == 0)
        return fail(why, IMG_CORRUPT, e, ERR_DECODE, "zero-sized image");
    if (w * h > l->o.max_pixels)
        return fail(why, IMG_TOO_LARGE, e, ERR_INVALID, "%llux%llu pixels exceed the limit of "
                    "%llu", (unsigned long long)w, (unsigned long long)h,
                    (unsigned long long)l->o.max_pixels);
    if ((int64_t)w < l->o.min_side || (int64_t)h < l->o.min_side)
        return fail(why, IMG_TOO_SMALL, e, ERR_INVALID, "%llux%llu is below the minimum side "
                    "of %d", (unsigned long long)w, (unsigned long long)h, l->o.min_side);
    return ERR_OK;
}

static int img_reserve(struct img *im, int w, int h)
{
    size_t n = (size_t)w * (size_t)h * 3;
    uint8_t *p;

    if (n > im->cap) {
        p = realloc(im->rgb, n);
        if (!p)
            return ERR_NOMEM;
        im->rgb = p;
        im->cap = n;
    }
    im->width = w;
    im->height = h;
    return ERR_OK;
}

/* libjpeg: errors longjmp back; warnings are remembered (a warning means
 * damaged data: we refuse to grade a partly grey image). */
struct jctx {
    struct jpeg_error_mgr pub;
    struct jpeg_progress_mgr progress;
    jmp_buf jb;
    int eof, warned, too_many_scans, max_scans;
    char msg[JMSG_LENGTH_MAX];
};

static void jpeg_on_error(j_common_ptr ci)
{
    struct jctx *j = (struct jctx *)ci->err;

    ci->err->format_message(ci, j->msg);
    longjmp(j->jb, 1);
}

static void jpeg_on_message(j_common_ptr ci, int level)
{
    struct jctx *j = (struct jctx *)ci->err;

    if (level >= 0)
        return; /* trace messages */
    if (ci->err->msg_code == JWRN_JPEG_EOF)
        j->eof = 1;
    if (!j->warned)
        ci->err->format_message(ci, j->msg);
    j->warned = 1;
    ci->err->num_warnings++;
}

/* A progressive JPEG can carry thousands of tiny scans, each costing a pass
 * over the whole coefficient buffer: cap them. */
static void jpeg_on_progress(j_common_ptr ci)
{
    struct jctx *j = (struct jctx *)ci->err;
    j_decompress_ptr d = (j_decompress_ptr)ci;

    if (ci->is_decompressor && d->input_scan_number > j->max_scans) {
        j->too_many_scans = 1;
        snprintf(j->msg, sizeof(j->msg), "more than %d progressive scans", j->max_scans);
        longjmp(j->jb, 1);
    }
}

static int jpeg_reason(const struct jctx *j, const struct jpeg_decompress_struct *d,
                       enum img_reason *why, struct err *e)
{
    if (j->too_many_scans || j->pub.msg_code == JERR_OUT_OF_MEMORY ||
        j->pub.msg_code == JERR_NO_BACKING_STORE)
        return fail(why, IMG_TOO_LARGE, e, ERR_INVALID, "JPEG: %s", j->too_many_scans ? j->msg
                    : "decoder memory limit (images.jpeg_max_memory) exceeded");
    (void)d;
    if (j->eof)
        return fail(why, IMG_TRUNCATED, e, ERR_DECODE, "JPEG: %s", j->msg);
    return fail(why, IMG_CORRUPT, e, ERR_DECODE, "JPEG: %s", j->msg);
}

static int jpeg_header(struct img_loader *l, struct jpeg_decompress_struct *d, struct img *im,
                       enum img_reason *why, struct err *e)
{
    if (check_size(l, d->image_width, d->image_height, why, e))
        return e->code;
    if (d->jpeg_color_space != JCS_GRAYSCALE && d->jpeg_color_space != JCS_YCbCr &&
        d->jpeg_color_space != JCS_RGB)
        return fail(why, IMG_UNSUPPORTED_TYPE, e, ERR_INVALID, "JPEG: colour space %d (CMYK/"
                    "YCCK) is not supported", (int)d->jpeg_color_space);
    d->out_color_space = JCS_RGB;
    if (img_reserve(im, (int)d->image_width, (int)d->image_height))
        return fail(why, IMG_TOO_LARGE, e, ERR_NOMEM, "JPEG: out of memory for %ux%u",
                    d->image_width, d->image_height);
    return ERR_OK;
}

static int decode_jpeg(struct img_loader *l, const uint8_t *p, size_t len, struct img *im,
                       enum img_reason *why, struct err *e)
{
    struct jpeg_decompress_struct d;
    struct jctx j;
    volatile int rc = ERR_OK;

    memset(&j, 0, sizeof(j));
    d.err = jpeg_std_error(&j.pub);
    j.pub.error_exit = jpeg_on_error;
    j.pub.emit_message = jpeg_on_message;
    j.max_scans = l->o.max_scans;
    j.progress.progress_monitor = jpeg_on_progress;
    if (setjmp(j.jb)) {
        rc = jpeg_reason(&j, &d, why, e);
        jpeg_destroy_decompress(&d);
        return rc;
    }
    jpeg_create_decompress(&d);
    d.mem->max_memory_to_use = l->o.jpeg_max_memory;
    d.progress = &j.progress;
    jpeg_mem_src(&d, p, (unsigned long)len);
    jpeg_read_header(&d, TRUE);
    if (jpeg_header(l, &d, im, why, e)) {
        jpeg_destroy_decompress(&d);
        return e->code;
    }
    jpeg_start_decompress(&d);
    while (d.output_scanline < d.output_height) {
        JSAMPROW row = im->rgb + (size_t)d.output_scanline * d.output_width * 3;
        jpeg_read_scanlines(&d, &row, 1);
    }
    jpeg_finish_decompress(&d);
    if (j.warned)
        rc = j.eof ? fail(why, IMG_TRUNCATED, e, ERR_DECODE, "JPEG: %s", j.msg)
                   : fail(why, IMG_CORRUPT, e, ERR_DECODE, "JPEG: %s", j.msg);
    jpeg_destroy_decompress(&d);
    return rc;
}

/* libpng: memory source, errors longjmp to our own buffer. */
struct pctx {
    const uint8_t *p;
    size_t len, pos;
    int truncated;
    char msg[200];
    char warning[200];  /* the first: libpng reports a user-limit hit as one */
    jmp_buf jb;
};

static void png_on_error(png_structp png, png_const_charp msg)
{
    struct pctx *c = png_get_error_ptr(png);

    snprintf(c->msg, sizeof(c->msg), "%s", msg);
    longjmp(c->jb, 1);
}

/* Benign (e.g. an odd iCCP profile): the pixels are fine; kept for the
 * error message in case an error follows. */
static void png_on_warning(png_structp png, png_const_charp msg)
{
    struct pctx *c = png_get_error_ptr(png);

    if (!c->warning[0])
        snprintf(c->warning, sizeof(c->warning), "%s", msg);
}

static void png_w_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

static void png_read_mem(png_structp png, png_bytep out, png_size_t n)
{
    struct pctx *c = png_get_io_ptr(png);

    if (c->len - c->pos < n) {
        c->truncated = 1;
        png_error(png, "data ends early");
    }
    memcpy(out, c->p + c->pos, n);
    c->pos += n;
}

/* To 8-bit RGB: palette expanded (tRNS ignored, as PIL's convert("RGB")),
 * gray replicated, alpha dropped, 16-bit -> high byte. */
static void png_transforms(png_structp png, png_infop info)
{
    int type = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);

    if (type == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (type == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16)
        png_set_strip_16(png);
    /* Expanding a palette also turns tRNS into alpha: dropped here too. */
    if ((type & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS))
        png_set_strip_alpha(png);
    if (type == PNG_COLOR_TYPE_GRAY || type == PNG_COLOR_TYPE_GRAY_ALPHA)
        png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
}

static int png_rows(struct img_loader *l, png_structp png, png_infop info, struct img *im,
                    enum img_reason *why, struct err *e)
{
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);

    if (check_size(l, w, h, why, e))
        return e->code;
    png_transforms(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 3)
        return fail(why, IMG_UNSUPPORTED_TYPE, e, ERR_INVALID, "PNG: unexpected row layout");
    if (img_reserve(im, (int)w, (int)h))
        return fail(why, IMG_TOO_LARGE, e, ERR_NOMEM, "PNG: out of memory for %ux%u", w, h);
    if (h > l->nrows) {
        png_bytep *r = realloc(l->rows, h * sizeof(*r));
        if (!r)
            return fail(why, IMG_TOO_LARGE, e, ERR_NOMEM, "PNG: out of memory for %u rows", h);
        l->rows = r;
        l->nrows = h;
    }
    for (png_uint_32 y = 0; y < h; y++)
        l->rows[y] = im->rgb + (size_t)y * w * 3;
    return ERR_OK;
}

static int decode_png(struct img_loader *l, const uint8_t *p, size_t len, struct img *im,
                      enum img_reason *why, struct err *e)
{
    struct pctx c = {.p = p, .len = len};
    png_structp png;
    png_infop info = NULL;
    png_uint_32 side;
    volatile int rc = ERR_OK;

    png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &c, png_on_error, png_on_warning);
    if (!png || !(info = png_create_info_struct(png))) {
        png_destroy_read_struct(&png, NULL, NULL);
        return fail(why, IMG_FETCH_FAILED, e, ERR_NOMEM, "PNG: out of memory");
    }
    if (setjmp(c.jb)) {
        png_destroy_read_struct(&png, &info, NULL);
        if (strstr(c.warning, "user limit") || strstr(c.msg, "user limit") ||
            strstr(c.msg, "memory"))
            return fail(why, IMG_TOO_LARGE, e, ERR_INVALID, "PNG: %s (%s)", c.msg,
                        c.warning[0] ? c.warning : "limit");
        return fail(why, c.truncated ? IMG_TRUNCATED : IMG_CORRUPT, e, ERR_DECODE, "PNG: %s",
                    c.msg);
    }
    png_set_read_fn(png, &c, png_read_mem);
    /* No side can be longer than the pixel cap allows; the product is
     * checked after the header. */
    side = l->o.max_pixels < 0x7fffffff ? (png_uint_32)l->o.max_pixels : 0x7fffffff;
    png_set_user_limits(png, side, side);
    png_set_chunk_malloc_max(png, PNG_CHUNK_MAX);
    png_read_info(png, info);
    if (png_rows(l, png, info, im, why, e) == ERR_OK) {
        png_read_image(png, l->rows);
        png_read_end(png, NULL);
    } else {
        rc = e->code;
    }
    png_destroy_read_struct(&png, &info, NULL);
    return rc;
}

static const uint8_t jpeg_magic[3] = {0xff, 0xd8, 0xff};
static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

static int prefix_of(const uint8_t *p, size_t len, const uint8_t *magic, size_t n)
{
    return memcmp(p, magic, len < n ? len : n) == 0;
}

int img_decode(struct img_loader *l, const void *data, size_t len, struct img *im,
               enum img_reason *why, struct err *e)
{
    const uint8_t *p = data;

    *why = IMG_OK;
    if (len == 0)
        return fail(why, IMG_CORRUPT, e, ERR_DECODE, "empty file");
    if (len > l->o.max_bytes)
        return fail(why, IMG_TOO_LARGE, e, ERR_INVALID, "%zu bytes exceed the %zu-byte limit",
                    len, l->o.max_bytes);
    if (len >= sizeof(jpeg_magic) && prefix_of(p, len, jpeg_magic, sizeof(jpeg_magic)))
        return decode_jpeg(l, p, len, im, why, e);
    if (len >= sizeof(png_magic) && prefix_of(p, len, png_magic, sizeof(png_magic)))
        return decode_png(l, p, len, im, why, e);
    if (prefix_of(p, len, jpeg_magic, sizeof(jpeg_magic)) ||
        prefix_of(p, len, png_magic, sizeof(png_magic)))
        return fail(why, IMG_TRUNCATED, e, ERR_DECODE, "%zu bytes: ends inside the signature",
                    len);
    return fail(why, IMG_UNSUPPORTED_TYPE, e, ERR_INVALID, "not JPEG or PNG (starts %02x %02x "
                "%02x %02x)", p[0], len > 1 ? p[1] : 0, len > 2 ? p[2] : 0, len > 3 ? p[3] : 0);
}

/* ---- preprocessing: PIL's / torchvision's antialiased bilinear ---- */

/* Per output index: first input index, count, then ksize weights. Stored
 * as floats (indices are far below 2^24). */
struct coeffs {
    float *c;
    int ksize;
};

static int kernel_size(int in, int out)
{
    float scale = (float)in / (float)out;
    float support = scale >= 1.0f ? scale : 1.0f;

    return (int)ceilf(support) * 2 + 1;
}

static float triangle(float x)
{
    x = fabsf(x);
    return x < 1.0f ? 1.0f - x : 0.0f;
}

/* Mirrors aten's _compute_weights_aa (float arithmetic, same rounding). */
static void compute_coeffs(int in, int out, struct coeffs *k)
{
    float scale = (float)in / (float)out;
    float support = scale >= 1.0f ? scale : 1.0f;
    float invscale = scale >= 1.0f ? 1.0f / scale : 1.0f;

    k->ksize = kernel_size(in, out);
    for (int i = 0; i < out; i++) {
        float *c = k->c + (size_t)i * (size_t)(k->ksize + 2), *w = c + 2, total = 0.0f;
        float center = scale * (float)(i + 0.5);
        int64_t xmin = (int64_t)(center - support + 0.5f), xmax;
        if (xmin < 0)
            xmin = 0;
        xmax = (int64_t)(center + support + 0.5f);
        if (xmax > in)
            xmax = in;
        for (int64_t j = 0; j < xmax - xmin; j++) {
            w[j] = triangle((float)(((double)(j + xmin) - center + 0.5) * invscale));
            total += w[j];
        }
        for (int64_t j = 0; j < xmax - xmin; j++)
            w[j] = total != 0.0f ? w[j] / total : w[j];
        c[0] = (float)xmin;
        c[1] = (float)(xmax - xmin);
    }
}

static size_t coeff_floats(int in, int out)
{
    return (size_t)out * (size_t)(kernel_size(in, out) + 2);
}

/* Vertical pass on planar floats: src nch x src_h x w -> dst nch x dst_h x w. */
static void vpass(const float *src, int w, int src_h, int nch, float *dst, int dst_h,
                  const struct coeffs *k)
{
    for (int ch = 0; ch < nch; ch++) {
        const float *s = src + (size_t)ch * src_h * w;
        float *d = dst + (size_t)ch * dst_h * w;
        for (int y = 0; y < dst_h; y++) {
            const float *c = k->c + (size_t)y * (size_t)(k->ksize + 2);
            int y0 = (int)c[0], n = (int)c[1];
            float *restrict dr = d + (size_t)y * w;
            /* row by row so that the x loop vectorises; each output still
             * sums 0 + tap 0 + tap 1 ... in that order (no contraction in
             * ISO C mode), so the values are those of the per-pixel loop */
            for (int x = 0; x < w; x++)
                dr[x] = 0.0f;
            for (int j = 0; j < n; j++) {
                const float *restrict sr = s + (size_t)(y0 + j) * w;
                float cj = c[2 + j];
                for (int x = 0; x < w; x++)
                    dr[x] += sr[x] * cj;
            }
        }
    }
}

size_t img_resize_scratch(int src_w, int src_h, int nch, int dst_w, int dst_h)
{
    return coeff_floats(src_w, dst_w) + coeff_floats(src_h, dst_h) +
           (size_t)nch * (size_t)src_h * (size_t)dst_w;
}

void img_resize_planes(const float *src, int src_w, int src_h, int nch, float *dst, int dst_w,
                       int dst_h, float *scratch)
{
    struct coeffs kx = {.c = scratch}, ky;
    float *mid;

    ky.c = scratch + coeff_floats(src_w, dst_w);
    mid = ky.c + coeff_floats(src_h, dst_h);
    compute_coeffs(src_w, dst_w, &kx);
    compute_coeffs(src_h, dst_h, &ky);
    for (int ch = 0; ch < nch; ch++) {
        for (int y = 0; y < src_h; y++) {
            const float *s = src + ((size_t)ch * src_h + y) * src_w;
            float *d = mid + ((size_t)ch * src_h + y) * dst_w;
            for (int x = 0; x < dst_w; x++) {
                const float *c = kx.c + (size_t)x * (size_t)(kx.ksize + 2);
                float acc = 0.0f;
                for (int j = 0; j < (int)c[1]; j++)
                    acc += s[(int)c[0] + j] * c[2 + j];
                d[x] = acc;
            }
        }
    }
    vpass(mid, dst_w, src_h, nch, dst, dst_h, &ky);
}

size_t img_preprocess_scratch(const struct img *im, const struct img_norm *n)
{
    return coeff_floats(im->width, n->width) + coeff_floats(im->height, n->height) +
           (size_t)3 * (size_t)im->height * (size_t)n->width;
}

/* Horizontal pass straight from the 8-bit pixels: each sample becomes
 * x / 255 as torchvision's to_tensor does, then the same weighted sum. */
static void hpass_rgb(const struct img *im, float *mid, int dst_w, const struct coeffs *k)
{
    size_t plane = (size_t)im->height * dst_w;
    float v255[256]; /* the same x / 255.0f, without a division per tap */

    for (int i = 0; i < 256; i++)
        v255[i] = (float)i / 255.0f;

    for (int y = 0; y < im->height; y++) {
        const uint8_t *row = im->rgb + (size_t)y * im->width * 3;
        for (int x = 0; x < dst_w; x++) {
            const float *c = k->c + (size_t)x * (size_t)(k->ksize + 2);
            int x0 = (int)c[0], cnt = (int)c[1];
            float acc[3] = {0.0f, 0.0f, 0.0f};
            for (int j = 0; j < cnt; j++)
                for (int ch = 0; ch < 3; ch++)
                    acc[ch] += v255[row[(x0 + j) * 3 + ch]] * c[2 + j];
            for (int ch = 0; ch < 3; ch++)
                mid[ch * plane + (size_t)y * dst_w + x] = acc[ch];
        }
    }
}

int img_preprocess(const struct img *im, const struct img_norm *n, float *out, float *scratch,
                   struct err *e)
{
    struct coeffs kx = {.c = scratch}, ky;
    float *mid;
    size_t plane = (size_t)n->width * n->height;

    if (!im->rgb || im->width <= 0 || im->height <= 0 || n->width <= 0 || n->height <= 0)
        return err_set(e, ERR_INVALID, "preprocess: empty image or target size");
    ky.c = scratch + coeff_floats(im->width, n->width);
    mid = ky.c + coeff_floats(im->height, n->height);
    compute_coeffs(im->width, n->width, &kx);
    compute_coeffs(im->height, n->height, &ky);
    hpass_rgb(im, mid, n->width, &kx);
    vpass(mid, n->width, im->height, 3, out, n->height, &ky);
    for (int ch = 0; ch < 3; ch++)
        for (size_t i = 0; i < plane; i++)
            out[ch * plane + i] = (out[ch * plane + i] - n->mean[ch]) / n->std[ch];
    return ERR_OK;
}

void img_norm_default(struct img_norm *n, int size)
{
    static const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};

    n->width = n->height = size;
    memcpy(n->mean, mean, sizeof(mean));
    memcpy(n->std, std, sizeof(std));
}

static int parse_floats3(const char *s, float v[3])
{
    const char *p = s;
    char *end;

    for (int i = 0; i < 3; i++) {
        errno = 0;
        double d = strtod(p, &end);
        if (end == p || errno || !isfinite(d) || fabs(d) > 1e6)
            return -1;
        v[i] = (float)d;
        p = end + strspn(end, " ");
        if (i < 2 && *p++ != ',')
            return -1;
    }
    return *p ? -1 : 0;
}

static int parse_side(const char *s, char **end, int *v)
{
    long x;

    errno = 0;
    x = strtol(s, end, 10);
    if (*end == s || errno || x < 1 || x > 4096)
        return -1;
    *v = (int)x;
    return 0;
}

int img_norm_parse(struct img_norm *n, const char *size, const char *mean, const char *std,
                   struct err *e)
{
    struct img_norm t = *n;
    char *end;

    if (size && *size) {
        if (parse_side(size, &end, &t.width))
            return err_set(e, ERR_CONFIG, "input_size \"%s\": expected N or WxH, 1..4096", size);
        t.height = t.width;
        if (*end == 'x' && parse_side(end + 1, &end, &t.height))
            return err_set(e, ERR_CONFIG, "input_size \"%s\": expected N or WxH, 1..4096", size);
        if (*end)
            return err_set(e, ERR_CONFIG, "input_size \"%s\": expected N or WxH", size);
    }
    if (mean && *mean && parse_floats3(mean, t.mean))
        return err_set(e, ERR_CONFIG, "mean \"%s\": expected three numbers r,g,b", mean);
    if (std && *std &&
        (parse_floats3(std, t.std) || !(t.std[0] > 0 && t.std[1] > 0 && t.std[2] > 0)))
        return err_set(e, ERR_CONFIG, "std \"%s\": expected three positive numbers r,g,b", std);
    *n = t;
    return ERR_OK;
}

/* ---- PNG output (CAM overlays) ---- */

struct wctx {
    jmp_buf jb;
    char msg[200];
};

static void png_w_error(png_structp png, png_const_charp msg)
{
    struct wctx *c = png_get_error_ptr(png);

    snprintf(c->msg, sizeof(c->msg), "%s", msg);
    longjmp(c->jb, 1);
}

static int write_rows(FILE *f, const uint8_t *rgb, int w, int h, struct wctx *c)
{
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, c, png_w_error,
                                              png_w_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;

    if (!info) {
        png_destroy_write_struct(&png, NULL);
        snprintf(c->msg, sizeof(c->msg), "out of memory");
        return -1;
    }
    if (setjmp(c->jb)) {
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(png, 3);
    png_write_info(png, info);
    for (int y = 0; y < h; y++)
        png_write_row(png, rgb + (size_t)y * w * 3);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    return 0;
}

int img_write_png(const char *path, const uint8_t *rgb, int width, int height, struct err *e)
{
    struct wctx c = {.msg = ""};
    struct out *o;

    if (width <= 0 || height <= 0)
        return err_set(e, ERR_INVALID, "%s: empty image", path);
    /* common/base/out.h: a file appears whole, a device or FIFO is written as it is,
     * a symlink to a file is refused. */
    if (out_open(&o, path, e))
        return e->code;
    if (write_rows(out_file(o), rgb, width, height, &c)) {
        out_abort(o);
        return err_set(e, ERR_IO, "%s: %s", path, c.msg);
    }
    return out_commit(o, e);
}
