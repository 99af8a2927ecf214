#include "out.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum out_kind { OUT_STDOUT, OUT_DIRECT, OUT_ATOMIC };

struct out {
    enum out_kind kind;
    FILE *f;
    int fd;        /* under f (not stdout) */
    int werr;      /* errno of the first failed write, 0: none */
    char *path;    /* as given */
    char *partial; /* OUT_ATOMIC: PATH.partial, renamed on commit */
};

static void out_free(struct out *o)
{
    free(o->path);
    free(o->partial);
    free(o);
}

/* f writes through these so that the errno of a failed write is kept:
 * stdio only keeps a flag, and a later fflush with an empty buffer
 * succeeds, which turned "No space left on device" into "I/O error". */
static ssize_t ck_write(void *cookie, const char *buf, size_t n)
{
    struct out *o = cookie;
    size_t done = 0;

    while (done < n) {
        ssize_t w = write(o->fd, buf + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (!o->werr)
                o->werr = w < 0 ? errno : EIO;
            return done ? (ssize_t)done : -1;
        }
        done += (size_t)w;
    }
    return (ssize_t)done;
}

static int ck_close(void *cookie)
{
    return close(((struct out *)cookie)->fd);
}

/* The stream over fd (owned from now on, closed with the stream). */
static FILE *stream_of(struct out *o, int fd)
{
    static const cookie_io_functions_t fns = {.write = ck_write, .close = ck_close};

    o->fd = fd;
    return fopencookie(o, "w", fns);
}

static const char *kind_word(mode_t m)
{
    return S_ISCHR(m) ? "character device" : S_ISBLK(m) ? "block device"
         : S_ISFIFO(m) ? "FIFO" : S_ISSOCK(m) ? "socket" : S_ISDIR(m) ? "directory"
         : "special file";
}

/* Opens a device, FIFO or a link to one as it is: no O_CREAT, no O_TRUNC,
 * so nothing about the node itself changes. */
static int open_direct(struct out *o, struct err *e)
{
    struct stat st;
    int fd = open(o->path, O_WRONLY | O_NOCTTY | O_CLOEXEC);

    if (fd < 0)
        return err_set(e, ERR_IO, "%s: cannot open for writing: %s", o->path, strerror(errno));
    /* It was not a regular file a moment ago; if it is now, someone swapped
     * it, and writing in place would not be atomic: refuse. */
    if (fstat(fd, &st) || S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) {
        close(fd);
        return err_set(e, ERR_CONFIG, "%s: changed while being opened", o->path);
    }
    if (!(o->f = stream_of(o, fd))) {
        close(fd);
        return err_set(e, ERR_NOMEM, "%s: %s", o->path, strerror(errno));
    }
    o->kind = OUT_DIRECT;
    return ERR_OK;
}

static int open_atomic(struct out *o, struct err *e)
{
    size_t n = strlen(o->path) + sizeof(".partial");
    struct stat st;
    int fd;

    if (!(o->partial = malloc(n)))
        return err_set(e, ERR_NOMEM, "out of memory");
    snprintf(o->partial, n, "%s.partial", o->path);
    /* A stale PATH.partial from an interrupted run is overwritten, but only
     * if it is a regular file: it is renamed later, and a device or link
     * there must never be moved over PATH. */
    if (lstat(o->partial, &st) == 0 && !S_ISREG(st.st_mode))
        return err_set(e, ERR_CONFIG, "%s exists and is a %s, not a regular file: remove it",
                       o->partial, S_ISLNK(st.st_mode) ? "symbolic link" : kind_word(st.st_mode));
    fd = open(o->partial, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd < 0)
        return err_set(e, ERR_IO, "%s: cannot create: %s", o->partial, strerror(errno));
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(e, ERR_CONFIG, "%s: not a regular file", o->partial);
    }
    if (!(o->f = stream_of(o, fd))) {
        close(fd);
        unlink(o->partial);
        return err_set(e, ERR_NOMEM, "%s: %s", o->partial, strerror(errno));
    }
    o->kind = OUT_ATOMIC;
    return ERR_OK;
}

static int open_link(struct out *o, struct err *e)
{
    char target[PATH_MAX];
    ssize_t n = readlink(o->path, target, sizeof(target) - 1);
    struct stat st;

    target[n < 0 ? 0 : n] = '\0';
    if (stat(o->path, &st))
        return err_set(e, ERR_CONFIG,
                       "%s is a symbolic link to %s, which cannot be reached (%s): "
                       "give the output's real path", o->path, target, strerror(errno));
    if (S_ISREG(st.st_mode))
        return err_set(e, ERR_CONFIG,
                       "%s is a symbolic link to the regular file %s: refusing to replace the "
                       "link or write through it; give %s itself", o->path, target, target);
    if (S_ISDIR(st.st_mode))
        return err_set(e, ERR_CONFIG, "%s is a link to a directory (%s), not a file", o->path,
                       target);
    return open_direct(o, e); /* /dev/stdout, a link to a device or FIFO */
}

int out_open(struct out **out, const char *path, struct err *e)
{
    struct out *o;
    struct stat st;
    int rc;

    *out = NULL;
    if (!path || !*path)
        return err_set(e, ERR_CONFIG, "output: empty path");
    if (!(o = calloc(1, sizeof(*o))) || !(o->path = strdup(path))) {
        free(o);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    if (strcmp(path, "-") == 0) {
        o->kind = OUT_STDOUT;
        o->f = stdout;
        *out = o;
        return ERR_OK;
    }
    if (lstat(path, &st) != 0) {
        if (errno != ENOENT) {
            rc = err_set(e, ERR_IO, "%s: %s", path, strerror(errno));
            out_free(o);
            return rc;
        }
        rc = open_atomic(o, e);
    } else if (S_ISLNK(st.st_mode)) {
        rc = open_link(o, e);
    } else if (S_ISREG(st.st_mode)) {
        rc = open_atomic(o, e);
    } else if (S_ISDIR(st.st_mode)) {
        rc = err_set(e, ERR_CONFIG, "%s is a directory, not a file", path);
    } else {
        rc = open_direct(o, e);
    }
    if (rc) {
        out_free(o);
        return rc;
    }
    *out = o;
    return ERR_OK;
}

FILE *out_file(struct out *o)
{
    return o->f;
}

const char *out_name(const struct out *o)
{
    return o->kind == OUT_STDOUT ? "stdout" : o->path;
}

int out_is_atomic(const struct out *o)
{
    return o->kind == OUT_ATOMIC;
}

/* fflush + ferror, keeping the errno of the failed write (werr: that of
 * an earlier one, 0 unknown). */
static int flush_check(FILE *f, const char *name, int werr, struct err *e)
{
    int bad, saved;

    errno = 0;
    bad = fflush(f) != 0;
    saved = werr ? werr : errno;
    if (bad || ferror(f))
        return err_set(e, ERR_IO, "%s: write failed: %s", name,
                       saved ? strerror(saved) : "I/O error");
    return ERR_OK;
}

int out_stdout_check(struct err *e)
{
    return flush_check(stdout, "stdout", 0, e);
}

int out_commit(struct out *o, struct err *e)
{
    struct stat st;
    int rc;

    if (!o)
        return ERR_OK;
    rc = flush_check(o->f, out_name(o), o->kind == OUT_STDOUT ? 0 : o->werr, e);
    if (o->kind == OUT_STDOUT) {
        out_free(o);
        return rc;
    }
    if (fclose(o->f) != 0 && rc == ERR_OK)
        rc = err_set(e, ERR_IO, "%s: write failed: %s", out_name(o), strerror(errno));
    if (o->kind == OUT_ATOMIC) {
        /* PATH may have become something else while we wrote: only a
         * regular file (or nothing) is ever replaced. */
        if (rc == ERR_OK && lstat(o->path, &st) == 0 && !S_ISREG(st.st_mode))
            rc = err_set(e, ERR_CONFIG, "%s became a %s while being written: not replaced "
                         "(the output is lost)", o->path,
                         S_ISLNK(st.st_mode) ? "symbolic link" : kind_word(st.st_mode));
        if (rc == ERR_OK && rename(o->partial, o->path) != 0)
            rc = err_set(e, ERR_IO, "%s: rename from %s: %s", o->path, o->partial,
                         strerror(errno));
        if (rc != ERR_OK)
            unlink(o->partial);
    }
    out_free(o);
    return rc;
}

int out_abort(struct out *o)
{
    int removed = 0;

    if (!o)
        return 0;
    if (o->kind == OUT_STDOUT) {
        fflush(stdout);
    } else {
        fclose(o->f);
        if (o->kind == OUT_ATOMIC)
            removed = unlink(o->partial) == 0;
    }
    out_free(o);
    return removed;
}
