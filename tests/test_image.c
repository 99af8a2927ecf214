/* Image loading, decoding and preprocessing (common/codec/image.c).
 *
 * Decoding: every fixture made by tests/fixtures/make_image_fixtures.py
 * decodes to exactly the pixels PIL's convert("RGB") gives (16-bit: the high
 * byte), or fails with the reason the manifest names.
 * Preprocessing: torchvision Resize(antialias=True) + Normalize on the
 * photographs of Debian's python3-sklearn: max abs difference <= 1e-4 (in
 * normalised units; the observed figure is printed).
 * Confinement: "..", symlink escapes, paths outside the root, other schemes.
 * HTTP: a tiny server on 127.0.0.1 started here (allow-listed explicitly).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "image.h"

#define FIX "tests/fixtures/images"
#define PREPROCESS_TOL 1e-4
#define SKLEARN_IMAGES "/usr/lib/python3/dist-packages/sklearn/datasets/images"

static void *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    long n;
    void *p;

    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    p = malloc((size_t)n + 1);
    assert_non_null(p);
    *len = fread(p, 1, (size_t)n, f);
    fclose(f);
    return p;
}

static struct img_loader *open_loader(const struct img_opts *o)
{
    struct img_loader *l = NULL;
    struct err e = {0};

    if (img_loader_open(&l, o, &e))
        fail_msg("img_loader_open: %s", e.msg);
    return l;
}

static enum img_reason load(struct img_loader *l, const char *ref, struct img *im)
{
    struct err e = {0};
    enum img_reason why = IMG_OK;
    int rc = img_load(l, ref, im, &why, &e);

    assert_int_equal(rc != ERR_OK, why != IMG_OK);
    if (rc)
        assert_non_null(strstr(e.msg, img_reason_name(why))); /* message says why */
    return why;
}

static void assert_reason(struct img_loader *l, const char *ref, enum img_reason want)
{
    struct img im;
    enum img_reason got;

    img_init(&im);
    got = load(l, ref, &im);
    if (got != want)
        fail_msg("%s: reason %s, expected %s", ref, img_reason_name(got), img_reason_name(want));
    img_free(&im);
}

/* ---- decoding ---- */

static enum img_reason reason_by_name(const char *s)
{
    for (int r = 0; r < IMG_NREASONS; r++)
        if (strcmp(img_reason_name((enum img_reason)r), s) == 0)
            return (enum img_reason)r;
    fail_msg("unknown reason %s", s);
    return IMG_NREASONS;
}

static void check_pixels(const char *name, const struct img *im, int w, int h, int tol)
{
    char path[512];
    size_t len = 0;
    uint8_t *want;
    int worst = 0;

    assert_int_equal(im->width, w);
    assert_int_equal(im->height, h);
    snprintf(path, sizeof(path), FIX "/%s.rgb", name);
    want = slurp(path, &len);
    assert_non_null(want);
    assert_int_equal(len, (size_t)w * h * 3);
    for (size_t i = 0; i < len; i++) {
        int d = abs((int)im->rgb[i] - (int)want[i]);
        worst = d > worst ? d : worst;
    }
    if (worst > tol)
        fail_msg("%s: pixels differ from PIL's by up to %d", name, worst);
    free(want);
}

static void test_every_fixture_decodes_like_pil_or_fails_with_its_reason(void **st)
{
    struct img_opts o = {.root = FIX, .min_side = 16};
    struct img_loader *l = open_loader(&o);
    FILE *f = fopen(FIX "/manifest.txt", "r");
    char name[128], reason[32];
    int w, h, tol, n = 0;
    struct img im;

    (void)st;
    assert_non_null(f);
    img_init(&im);
    while (fscanf(f, "%127s %d %d %31s %d", name, &w, &h, reason, &tol) == 5) {
        enum img_reason want = reason_by_name(reason), got = load(l, name, &im);
        if (got != want)
            fail_msg("%s: reason %s, expected %s", name, img_reason_name(got), reason);
        if (want == IMG_OK)
            check_pixels(name, &im, w, h, tol);
        n++;
    }
    assert_true(n >= 20);
    fclose(f);
    img_free(&im);
    img_loader_close(l);
}

static void test_progressive_jpeg_over_the_scan_cap_is_too_large(void **st)
{
    struct img_opts o = {.root = FIX, .max_scans = 2};
    struct img_loader *l = open_loader(&o);

    (void)st;
    assert_reason(l, "progressive.jpg", IMG_TOO_LARGE);
    assert_reason(l, "rgb.jpg", IMG_OK); /* baseline JPEG: one scan */
    img_loader_close(l);
}

static void test_jpeg_decoder_memory_limit_is_too_large(void **st)
{
    struct img_opts o = {.root = FIX, .jpeg_max_memory = 2000};
    struct img_loader *l = open_loader(&o);

    (void)st;
    /* Progressive decoding buffers all coefficients: over 2000 bytes here. */
    assert_reason(l, "progressive_big.jpg", IMG_TOO_LARGE);
    img_loader_close(l);
}

static void test_pixel_cap_refuses_before_decoding(void **st)
{
    struct img_opts o = {.root = FIX, .max_pixels = 32 * 24 - 1};
    struct img_loader *l = open_loader(&o);

    (void)st;
    assert_reason(l, "rgb.png", IMG_TOO_LARGE);
    assert_reason(l, "rgb.jpg", IMG_TOO_LARGE);
    img_loader_close(l);
    /* a side longer than the whole cap: libpng's own user limit trips first */
    o.max_pixels = 20;
    l = open_loader(&o);
    assert_reason(l, "rgb.png", IMG_TOO_LARGE);
    assert_reason(l, "rgb.jpg", IMG_TOO_LARGE);
    img_loader_close(l);
}

static void test_byte_limit_refuses_large_files(void **st)
{
    struct img_opts o = {.root = FIX, .max_bytes = 500};
    struct img_loader *l = open_loader(&o);

    (void)st;
    assert_reason(l, "rgb.jpg", IMG_TOO_LARGE); /* 915 bytes */
    assert_reason(l, "rgb.png", IMG_OK);        /* 184 bytes */
    img_loader_close(l);
}

static void test_same_buffers_reused_across_sizes(void **st)
{
    struct img_opts o = {.root = FIX};
    struct img_loader *l = open_loader(&o);
    struct img im;

    (void)st;
    img_init(&im);
    assert_int_equal(load(l, "tiny.png", &im), IMG_OK);
    assert_int_equal(im.width, 8);
    assert_int_equal(load(l, "corrupt.png", &im), IMG_CORRUPT);
    assert_int_equal(load(l, "rgb16.png", &im), IMG_OK);
    check_pixels("rgb16.png", &im, 32, 24, 0);
    img_free(&im);
    img_loader_close(l);
}

/* ---- confinement ---- */

struct tree {
    char dir[64], root[128], outside[160];
};

/* dir/root/{ok.png, sub/ok.png, in -> ok.png, out -> ../outside.png}, dir/outside.png */
static void make_tree(struct tree *t)
{
    char path[300], cmd[600];

    snprintf(t->dir, sizeof(t->dir), "/tmp/streamml-img-XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->root, sizeof(t->root), "%s/root", t->dir);
    snprintf(t->outside, sizeof(t->outside), "%s/outside.png", t->dir);
    snprintf(cmd, sizeof(cmd), "mkdir -p %s/sub && cp " FIX "/rgb.png %s/ok.png && cp " FIX
             "/rgb.png %s/sub/ok.png && cp " FIX "/rgb.png %s", t->root, t->root, t->root,
             t->outside);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof(path), "%s/in", t->root);
    assert_int_equal(symlink("ok.png", path), 0);
    snprintf(path, sizeof(path), "%s/out", t->root);
    assert_int_equal(symlink("../outside.png", path), 0);
    snprintf(path, sizeof(path), "%s/abs_out", t->root);
    assert_int_equal(symlink(t->outside, path), 0);
}

static void remove_tree(struct tree *t)
{
    char cmd[200];

    snprintf(cmd, sizeof(cmd), "rm -rf %s", t->dir);
    assert_int_equal(system(cmd), 0);
}

static void test_paths_are_confined_to_the_root(void **st)
{
    struct tree t;
    struct img_loader *l;
    char ref[400];

    (void)st;
    make_tree(&t);
    l = open_loader(&(struct img_opts){.root = t.root});
    assert_reason(l, "ok.png", IMG_OK);
    assert_reason(l, "sub/ok.png", IMG_OK);
    assert_reason(l, "in", IMG_OK);                 /* symlink inside the root */
    assert_reason(l, "out", IMG_FORBIDDEN);         /* relative symlink escape */
    assert_reason(l, "abs_out", IMG_FORBIDDEN);     /* absolute symlink escape */
    assert_reason(l, "../outside.png", IMG_FORBIDDEN);
    assert_reason(l, "sub/../ok.png", IMG_FORBIDDEN); /* no "..", even staying inside */
    assert_reason(l, t.outside, IMG_FORBIDDEN);
    assert_reason(l, "/etc/passwd", IMG_FORBIDDEN);
    assert_reason(l, "nope.png", IMG_MISSING);
    assert_reason(l, "sub", IMG_UNSUPPORTED_TYPE);  /* a directory */
    assert_reason(l, "", IMG_MISSING);
    snprintf(ref, sizeof(ref), "%s/sub/ok.png", t.root);
    assert_reason(l, ref, IMG_OK);                  /* absolute, inside */
    img_loader_close(l);
    remove_tree(&t);
}

/* Issue 23 case 2: open(2) of a FIFO blocked forever before the type check.
 * The load runs in a child so that a regression fails instead of hanging. */
static void test_fifo_is_refused_without_blocking(void **st)
{
    struct tree t;
    char path[400];
    pid_t pid;
    int status = 0, waited_ms = 0;

    (void)st;
    make_tree(&t);
    snprintf(path, sizeof(path), "%s/pipe.png", t.root);
    assert_int_equal(mkfifo(path, 0600), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct img_loader *l = open_loader(&(struct img_opts){.root = t.root});
        struct img im;
        struct err e = {0};
        enum img_reason why = IMG_OK;

        alarm(20);
        img_init(&im);
        img_load(l, "pipe.png", &im, &why, &e);
        _exit(why == IMG_UNSUPPORTED_TYPE && strstr(e.msg, "not a regular file") ? 0 : 1);
    }
    while (waitpid(pid, &status, WNOHANG) == 0 && waited_ms < 3000) {
        usleep(10000);
        waited_ms += 10;
    }
    if (waited_ms >= 3000) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        remove_tree(&t);
        fail_msg("loading a FIFO under images.root blocked for 3 s");
    }
    remove_tree(&t);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_file_uris_and_other_schemes(void **st)
{
    struct tree t;
    struct img_loader *l;
    char ref[400];

    (void)st;
    make_tree(&t);
    l = open_loader(&(struct img_opts){.root = t.root});
    snprintf(ref, sizeof(ref), "file://%s/sub/ok.png", t.root);
    assert_reason(l, ref, IMG_OK);
    snprintf(ref, sizeof(ref), "file://localhost%s/ok.png", t.root);
    assert_reason(l, ref, IMG_OK);
    snprintf(ref, sizeof(ref), "file://%s/%%6Fk.png", t.root); /* %6F = 'o' */
    assert_reason(l, ref, IMG_OK);
    snprintf(ref, sizeof(ref), "file://%s/%%2E%%2E/outside.png", t.root); /* encoded ".." */
    assert_reason(l, ref, IMG_FORBIDDEN);
    snprintf(ref, sizeof(ref), "file://%s/ok.png%%00.jpg", t.root);
    assert_reason(l, ref, IMG_FORBIDDEN);
    snprintf(ref, sizeof(ref), "file://%s", t.outside);
    assert_reason(l, ref, IMG_FORBIDDEN);
    assert_reason(l, "file://otherhost/etc/passwd", IMG_FORBIDDEN);
    assert_reason(l, "ftp://example.com/a.png", IMG_FORBIDDEN);
    assert_reason(l, "gopher://127.0.0.1:6379/_FLUSHALL", IMG_FORBIDDEN);
    img_loader_close(l);
    remove_tree(&t);
}

static void test_without_a_root_files_are_refused(void **st)
{
    struct img_loader *l = open_loader(&(struct img_opts){0});

    (void)st;
    assert_reason(l, FIX "/rgb.png", IMG_FORBIDDEN);
    img_loader_close(l);
}

static void test_bad_options_name_the_key(void **st)
{
    struct img_loader *l = NULL;
    struct err e = {0};
    struct img_opts o = {.root = "/nonexistent/streamml-root"};

    (void)st;
    assert_int_equal(img_loader_open(&l, &o, &e), ERR_CONFIG);
    assert_null(l);
    assert_non_null(strstr(e.msg, "images.root"));
    o = (struct img_opts){.allow_hosts = "a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q"};
    assert_int_equal(img_loader_open(&l, &o, &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "images.allow_hosts"));
}

/* ---- preprocessing vs torchvision ---- */

static int parse3(const char *s, float v[3])
{
    return sscanf(s, "%f,%f,%f", &v[0], &v[1], &v[2]) == 3 ? 0 : -1;
}

static uint64_t fnv1a64(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

static void check_photo(struct img_loader *photos, struct img_loader *fix, const char *line)
{
    char path[512], hash[32], mean[64], std[64], ref[64];
    int w, h, ow, oh;
    double want_mean, want_max, got_mean = 0, got_max = 0, worst = 0;
    struct img im;
    struct img_norm n;
    struct err e = {0};
    float *out, *scratch;

    assert_int_equal(sscanf(line, "%511s %31s %d %d %d %d %63s %63s %63s %lf %lf", path, hash,
                            &w, &h, &ow, &oh, mean, std, ref, &want_mean, &want_max), 11);
    img_init(&im);
    assert_int_equal(load(path[0] == '/' ? photos : fix, path, &im), IMG_OK);
    assert_int_equal(im.width, w);
    assert_int_equal(im.height, h);
    assert_int_equal(fnv1a64(im.rgb, (size_t)w * h * 3), strtoull(hash, NULL, 16));
    n.width = ow;
    n.height = oh;
    assert_int_equal(parse3(mean, n.mean) | parse3(std, n.std), 0);
    out = calloc((size_t)3 * ow * oh, sizeof(float));
    scratch = calloc(img_preprocess_scratch(&im, &n), sizeof(float));
    assert_int_equal(img_preprocess(&im, &n, out, scratch, &e), ERR_OK);
    for (size_t i = 0; i < (size_t)3 * ow * oh; i++) {
        got_mean += out[i];
        got_max = fabs(out[i]) > got_max ? fabs(out[i]) : got_max;
    }
    got_mean /= 3.0 * ow * oh;
    assert_true(fabs(got_mean - want_mean) < 1e-5 && fabs(got_max - want_max) < PREPROCESS_TOL);
    if (strcmp(ref, "-") != 0) {
        char rp[600];
        size_t len = 0;
        float *want;
        snprintf(rp, sizeof(rp), FIX "/%s", ref);
        want = slurp(rp, &len);
        assert_non_null(want);
        assert_int_equal(len, (size_t)3 * ow * oh * sizeof(float));
        for (size_t i = 0; i < (size_t)3 * ow * oh; i++)
            worst = fmax(worst, fabs((double)out[i] - want[i]));
        free(want);
        printf("# %s -> %dx%d: max |streamml - torchvision| = %.2e\n", path, ow, oh, worst);
        assert_true(worst <= PREPROCESS_TOL);
    }
    free(out);
    free(scratch);
    img_free(&im);
}

static void test_preprocessing_matches_torchvision_on_photographs(void **st)
{
    /* Photographs by absolute path, the small image relative to FIX. */
    struct img_loader *l = open_loader(&(struct img_opts){.root = SKLEARN_IMAGES});
    struct img_loader *fix = open_loader(&(struct img_opts){.root = FIX});
    FILE *f = fopen(FIX "/photos.txt", "r");
    char line[1024];
    int n = 0;

    (void)st;
    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        check_photo(l, fix, line);
        n++;
    }
    assert_int_equal(n, 4);
    fclose(f);
    img_loader_close(l);
    img_loader_close(fix);
}

static void test_resizing_a_constant_image_keeps_it_constant(void **st)
{
    float src[2 * 37 * 23], dst[2 * 10 * 50], *scratch;

    (void)st;
    for (size_t i = 0; i < 37 * 23; i++) {
        src[i] = 0.25f;
        src[37 * 23 + i] = -3.0f;
    }
    scratch = calloc(img_resize_scratch(37, 23, 2, 10, 50), sizeof(float));
    img_resize_planes(src, 37, 23, 2, dst, 10, 50, scratch); /* down in x, up in y */
    for (size_t i = 0; i < 10 * 50; i++) {
        assert_float_equal(dst[i], 0.25f, 1e-6);
        assert_float_equal(dst[500 + i], -3.0f, 1e-5);
    }
    free(scratch);
}

static void test_norm_parse_reads_metadata_and_refuses_bad_values(void **st)
{
    struct img_norm n;
    struct err e = {0};

    (void)st;
    img_norm_default(&n, 224);
    assert_float_equal(n.mean[0], 0.485f, 1e-7);
    assert_float_equal(n.std[2], 0.225f, 1e-7);
    assert_int_equal(img_norm_parse(&n, "112", "0.5, 0.4,0.3", "0.2,0.2,0.1", &e), ERR_OK);
    assert_int_equal(n.width, 112);
    assert_int_equal(n.height, 112);
    assert_float_equal(n.mean[1], 0.4f, 1e-7);
    assert_float_equal(n.std[2], 0.1f, 1e-7);
    assert_int_equal(img_norm_parse(&n, "96x64", NULL, "", &e), ERR_OK);
    assert_int_equal(n.width, 96);
    assert_int_equal(n.height, 64);
    assert_float_equal(n.mean[1], 0.4f, 1e-7); /* kept */
    assert_int_equal(img_norm_parse(&n, "0", NULL, NULL, &e), ERR_CONFIG);
    assert_int_equal(img_norm_parse(&n, "224px", NULL, NULL, &e), ERR_CONFIG);
    assert_int_equal(img_norm_parse(&n, NULL, "0.5,0.5", NULL, &e), ERR_CONFIG);
    assert_int_equal(img_norm_parse(&n, NULL, "0.5,0.5,nan", NULL, &e), ERR_CONFIG);
    assert_int_equal(img_norm_parse(&n, NULL, NULL, "0.2,0,0.2", &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "std"));
    assert_int_equal(n.width, 96); /* a refused parse changes nothing */
}

static void test_png_written_reads_back_identically(void **st)
{
    char dir[] = "/tmp/streamml-imgw-XXXXXX", path[128];
    uint8_t px[5 * 3 * 3];
    struct img im;
    struct err e = {0};
    struct img_loader *l;

    (void)st;
    assert_non_null(mkdtemp(dir));
    for (size_t i = 0; i < sizeof(px); i++)
        px[i] = (uint8_t)(i * 37);
    snprintf(path, sizeof(path), "%s/o.png", dir);
    assert_int_equal(img_write_png(path, px, 5, 3, &e), ERR_OK);
    l = open_loader(&(struct img_opts){.root = dir});
    img_init(&im);
    assert_int_equal(load(l, "o.png", &im), IMG_OK);
    assert_int_equal(im.width, 5);
    assert_int_equal(im.height, 3);
    assert_memory_equal(im.rgb, px, sizeof(px));
    snprintf(path, sizeof(path), "%s/missing-dir/o.png", dir);
    assert_int_equal(img_write_png(path, px, 5, 3, &e), ERR_IO);
    img_free(&im);
    img_loader_close(l);
    snprintf(path, sizeof(path), "rm -rf %s", dir);
    assert_int_equal(system(path), 0);
}

/* ---- HTTP against a tiny local server ---- */

struct server {
    int fd, port;
    volatile int stop;
    pthread_t th;
    void *png;
    size_t png_len;
};

static void respond(struct server *s, int c, const char *path)
{
    char hdr[256];
    static const char big[4096];

    if (strcmp(path, "/rgb.png") == 0) {
        snprintf(hdr, sizeof(hdr), "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
                 "Content-Length: %zu\r\nConnection: close\r\n\r\n", s->png_len);
        (void)!write(c, hdr, strlen(hdr));
        (void)!write(c, s->png, s->png_len);
    } else if (strcmp(path, "/big") == 0) { /* no Content-Length: caught while streaming */
        snprintf(hdr, sizeof(hdr), "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        (void)!write(c, hdr, strlen(hdr));
        for (int i = 0; i < 64; i++)
            (void)!write(c, big, sizeof(big));
    } else if (strcmp(path, "/slow") == 0) {
        usleep(1500 * 1000);
    } else if (strcmp(path, "/redirect") == 0) {
        snprintf(hdr, sizeof(hdr), "HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/\r\n"
                 "Content-Length: 0\r\nConnection: close\r\n\r\n");
        (void)!write(c, hdr, strlen(hdr));
    } else if (strcmp(path, "/error") == 0) {
        snprintf(hdr, sizeof(hdr), "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n"
                 "Connection: close\r\n\r\n");
        (void)!write(c, hdr, strlen(hdr));
    } else {
        snprintf(hdr, sizeof(hdr), "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
                 "Connection: close\r\n\r\n");
        (void)!write(c, hdr, strlen(hdr));
    }
}

static void *serve(void *arg)
{
    struct server *s = arg;

    while (!s->stop) {
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        char req[2048], path[256] = "";
        ssize_t n;
        int c;
        if (poll(&p, 1, 50) <= 0)
            continue;
        c = accept(s->fd, NULL, NULL);
        if (c < 0)
            continue;
        n = read(c, req, sizeof(req) - 1);
        req[n > 0 ? n : 0] = '\0';
        if (sscanf(req, "GET %255s", path) == 1)
            respond(s, c, path);
        close(c);
    }
    return NULL;
}

static int server_setup(void **st)
{
    struct server *s = calloc(1, sizeof(*s));
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t alen = sizeof(a);

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&a, sizeof(a)) || listen(s->fd, 16) ||
        getsockname(s->fd, (struct sockaddr *)&a, &alen))
        return -1;
    s->port = ntohs(a.sin_port);
    s->png = slurp(FIX "/rgb.png", &s->png_len);
    if (!s->png || pthread_create(&s->th, NULL, serve, s))
        return -1;
    *st = s;
    return 0;
}

static int server_teardown(void **st)
{
    struct server *s = *st;

    s->stop = 1;
    pthread_join(s->th, NULL);
    close(s->fd);
    free(s->png);
    free(s);
    return 0;
}

static void url(char *out, size_t cap, const struct server *s, const char *host, const char *p)
{
    snprintf(out, cap, "http://%s:%d%s", host, s->port, p);
}

static void test_http_from_an_allow_listed_host(void **st)
{
    struct server *s = *st;
    struct img_loader *l = open_loader(&(struct img_opts){.allow_hosts = "example.org, 127.0.0.1",
                                                          .timeout_ms = 500,
                                                          .max_bytes = 20000});
    char u[128];
    struct img im;

    img_init(&im);
    url(u, sizeof(u), s, "127.0.0.1", "/rgb.png");
    assert_int_equal(load(l, u, &im), IMG_OK);
    check_pixels("rgb.png", &im, 32, 24, 0);
    url(u, sizeof(u), s, "127.0.0.1", "/nothing.png");
    assert_reason(l, u, IMG_MISSING);
    url(u, sizeof(u), s, "127.0.0.1", "/error");
    assert_reason(l, u, IMG_FETCH_FAILED);
    url(u, sizeof(u), s, "127.0.0.1", "/redirect");
    assert_reason(l, u, IMG_FETCH_FAILED); /* redirects are not followed */
    url(u, sizeof(u), s, "127.0.0.1", "/big");
    assert_reason(l, u, IMG_TOO_LARGE);
    url(u, sizeof(u), s, "127.0.0.1", "/slow"); /* last: the server sleeps through it */
    assert_reason(l, u, IMG_FETCH_FAILED);      /* 500 ms timeout */
    img_free(&im);
    img_loader_close(l);
}

static void test_http_hosts_not_allow_listed_are_forbidden(void **st)
{
    struct server *s = *st;
    struct img_loader *l = open_loader(&(struct img_opts){.allow_hosts = "example.org",
                                                          .timeout_ms = 500});
    char u[128];

    url(u, sizeof(u), s, "127.0.0.1", "/rgb.png");
    assert_reason(l, u, IMG_FORBIDDEN);
    assert_reason(l, "http://169.254.169.254/latest/meta-data/", IMG_FORBIDDEN);
    assert_reason(l, "http://[::1]/x.png", IMG_FORBIDDEN);
    assert_reason(l, "https://example.org.evil.test/x.png", IMG_FORBIDDEN);
    assert_reason(l, "http://user@127.0.0.1/x.png", IMG_FORBIDDEN);
    img_loader_close(l);
}

static void test_allow_listed_name_resolving_to_loopback_is_forbidden(void **st)
{
    struct server *s = *st;
    struct img_loader *l = open_loader(&(struct img_opts){.allow_hosts = "localhost",
                                                          .timeout_ms = 500});
    char u[128];

    /* The name is allowed, but it resolves to 127.0.0.1, which is not. */
    url(u, sizeof(u), s, "localhost", "/rgb.png");
    assert_reason(l, u, IMG_FORBIDDEN);
    img_loader_close(l);
}

static void test_http_refused_when_no_host_is_allow_listed(void **st)
{
    struct server *s = *st;
    struct img_loader *l = open_loader(&(struct img_opts){.root = FIX});
    char u[128];

    url(u, sizeof(u), s, "127.0.0.1", "/rgb.png");
    assert_reason(l, u, IMG_FORBIDDEN);
    img_loader_close(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_fixture_decodes_like_pil_or_fails_with_its_reason),
        cmocka_unit_test(test_progressive_jpeg_over_the_scan_cap_is_too_large),
        cmocka_unit_test(test_jpeg_decoder_memory_limit_is_too_large),
        cmocka_unit_test(test_pixel_cap_refuses_before_decoding),
        cmocka_unit_test(test_byte_limit_refuses_large_files),
        cmocka_unit_test(test_same_buffers_reused_across_sizes),
        cmocka_unit_test(test_paths_are_confined_to_the_root),
        cmocka_unit_test(test_fifo_is_refused_without_blocking),
        cmocka_unit_test(test_file_uris_and_other_schemes),
        cmocka_unit_test(test_without_a_root_files_are_refused),
        cmocka_unit_test(test_bad_options_name_the_key),
        cmocka_unit_test(test_preprocessing_matches_torchvision_on_photographs),
        cmocka_unit_test(test_resizing_a_constant_image_keeps_it_constant),
        cmocka_unit_test(test_norm_parse_reads_metadata_and_refuses_bad_values),
        cmocka_unit_test(test_png_written_reads_back_identically),
        cmocka_unit_test_setup_teardown(test_http_from_an_allow_listed_host, server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_http_hosts_not_allow_listed_are_forbidden,
                                        server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_allow_listed_name_resolving_to_loopback_is_forbidden,
                                        server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_http_refused_when_no_host_is_allow_listed,
                                        server_setup, server_teardown),
    };

    signal(SIGPIPE, SIG_IGN); /* the server writes to clients that gave up */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
