/* common/codec/codec_file.c: Avro object container files (codec_file_).
 * Split out of codec.c; codec_int.h holds what the codec*.c files share. */
#include "codec_int.h"

#include "out.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- object container files (codec_file_) ---- */

struct codec_file {
    struct codec *c;
    FILE *fp;        /* reader: owned by avro-c, kept for progress */
    int64_t size;    /* reader: bytes, -1 unknown (stdin) */
    avro_file_reader_t rd;
    avro_file_writer_t wr;
    struct out *out; /* writer: common/base/out.h (renamed into place on close) */
    avro_value_iface_t *iface; /* reader: values of the writer schema */
    avro_value_t value;
    bool has_value;
    long n;
    enum codec_schema which; /* CODEC_TXN_EVENT, CODEC_CLICK_EVENT or CODEC_IMAGE_EVENT */
    char path[256];
};

static struct codec_file *file_new(struct codec *c, const char *path, struct err *e)
{
    struct codec_file *f = calloc(1, sizeof(*f));

    if (!f) {
        err_set(e, ERR_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    f->c = c;
    snprintf(f->path, sizeof(f->path), "%s", path);
    return f;
}

/* The event schemas a container file may hold. */
static int file_schema_ok(enum codec_schema which, const char *path, struct err *e)
{
    if (which == CODEC_TXN_EVENT || which == CODEC_CLICK_EVENT || which == CODEC_IMAGE_EVENT)
        return ERR_OK;
    return err_set(e, ERR_CONFIG,
                   "%s: container files hold transaction, click or image events only", path);
}

struct codec_file *codec_file_open_read(struct codec *c, const char *path, struct err *e)
{
    return codec_file_open_read_as(c, path, CODEC_TXN_EVENT, e);
}

struct codec_file *codec_file_open_read_as(struct codec *c, const char *path,
                                           enum codec_schema which, struct err *e)
{
    struct slot *s = &c->slot[c->known[which]];
    bool std = strcmp(path, "-") == 0;
    struct codec_file *f =
        file_schema_ok(which, path, e) ? NULL : file_new(c, std ? "stdin" : path, e);
    FILE *fp;
    avro_schema_t ws;
    int same;

    if (!f)
        return NULL;
    f->which = which;
    if (!(fp = std ? stdin : fopen(path, "rb"))) {
        err_set(e, ERR_CONFIG, "%s: %s", path, strerror(errno));
        goto fail;
    }
    /* The container magic checked first: avro-c leaks on its own failure
     * path for non-Avro input (stdin cannot be rewound: left to avro-c). */
    if (!std) {
        unsigned char magic[4] = {0};
        size_t got = fread(magic, 1, sizeof(magic), fp);
        if (got != 4 || memcmp(magic, "Obj\x01", 4) != 0 || fseek(fp, 0, SEEK_SET) != 0) {
            fclose(fp);
            err_set(e, ERR_CONFIG, "%s: not an Avro container file (no \"Obj\\1\" magic)",
                    f->path);
            goto fail;
        }
    }
    f->fp = fp;
    f->size = -1;
    if (!std) {
        struct stat sb;
        if (fstat(fileno(fp), &sb) == 0 && S_ISREG(sb.st_mode))
            f->size = (int64_t)sb.st_size;
    }
    if (avro_file_reader_fp(fp, f->path, !std, &f->rd)) {
        f->rd = NULL;
        err_set(e, ERR_CONFIG, "%s: not an Avro container file: %s", f->path, avro_strerror());
        goto fail;
    }
    ws = avro_file_reader_get_writer_schema(f->rd); /* a new reference */
    same = avro_schema_equal(ws, s->schema);
    avro_schema_decref(ws);
    /* Same schema: our field indices hold for the file's records. */
    if (!same) {
        err_set(e, ERR_CONFIG, "%s: written with another schema than %s", f->path, s->file);
        goto fail;
    }
    if (avro_generic_value_new(s->iface, &f->value)) {
        err_set(e, ERR_NOMEM, "%s: %s", f->path, avro_strerror());
        goto fail;
    }
    f->has_value = true;
    return f;
fail:
    codec_file_close(f, NULL);
    return NULL;
}

/* Reads the next record of a file opened for `which` into f->value: 1 when
 * one was read, 0 at the end, -1 with `e` filled. */
static int read_next(struct codec_file *f, enum codec_schema which, const char *what,
                     struct err *e)
{
    int rc;

    if (!f->rd || f->which != which)
        return err_set(e, ERR_CONFIG, "%s: not open for reading %s", f->path, what);
    rc = avro_file_reader_read_value(f->rd, &f->value);
    if (rc == EOF)
        return 0;
    f->n++;
    if (rc)
        return err_set(e, ERR_IO, "%s: record %ld: %s", f->path, f->n, avro_strerror());
    return 1;
}

int codec_file_read_txn(struct codec_file *f, struct txn_event *ev, struct err *e)
{
    int rc;

    event_txn_init(ev);
    if ((rc = read_next(f, CODEC_TXN_EVENT, "transactions", e)) <= 0)
        return rc;
    /* Files are written with exactly our schema (checked at open): the
     * reader's own field map applies. */
    if (extract_txn(f->c->txn, &f->value, ev, e)) {
        event_txn_init(ev);
        return err_wrap(e, "%s: record %ld", f->path, f->n);
    }
    return 1;
}

int codec_file_read_click(struct codec_file *f, struct click_event *ev, struct err *e)
{
    int rc;

    memset(ev, 0, sizeof(*ev));
    if ((rc = read_next(f, CODEC_CLICK_EVENT, "clicks", e)) <= 0)
        return rc;
    if (get_click(&f->value, ev, e))
        return err_wrap(e, "%s: record %ld", f->path, f->n);
    return 1;
}

int codec_file_read_image_event(struct codec_file *f, struct image_event *ev, struct err *e)
{
    int rc;

    memset(ev, 0, sizeof(*ev));
    if ((rc = read_next(f, CODEC_IMAGE_EVENT, "image events", e)) <= 0)
        return rc;
    if (get_image(&f->value, ev, e))
        return err_wrap(e, "%s: record %ld", f->path, f->n);
    return 1;
}

struct codec_file *codec_file_open_write(struct codec *c, const char *path, struct err *e)
{
    return codec_file_open_write_as(c, path, CODEC_TXN_EVENT, e);
}

struct codec_file *codec_file_open_write_as(struct codec *c, const char *path,
                                            enum codec_schema which, struct err *e)
{
    struct slot *s = &c->slot[c->known[which]];
    struct codec_file *f = file_schema_ok(which, path, e) ? NULL : file_new(c, path, e);

    if (!f)
        return NULL;
    f->which = which;
    /* Never remove the path first (it may be /dev/null): common/base/out.h writes a
     * file as PATH.partial renamed on close, and a device or FIFO directly;
     * avro-c writes to that stream. */
    if (out_open(&f->out, path, e)) {
        codec_file_close(f, NULL);
        return NULL;
    }
    if (avro_file_writer_create_with_codec_fp(out_file(f->out), path, 0, s->schema, &f->wr,
                                              "deflate", 0)) {
        f->wr = NULL;
        err_set(e, ERR_CONFIG, "%s: cannot create: %s", path, avro_strerror());
        codec_file_close(f, NULL);
        return NULL;
    }
    return f;
}
/* avro-c says "Cannot write file block"; the stream's errno says why. */
static const char *write_cause(const struct codec_file *f)
{
    if (f->out && ferror(out_file(f->out)) && errno)
        return strerror(errno);
    return avro_strerror();
}

/* Appends the value of f's schema slot, filled by the caller. */
static int file_append(struct codec_file *f, struct err *e)
{
    if (avro_file_writer_append_value(f->wr, &f->c->slot[f->c->known[f->which]].value))
        return err_set(e, ERR_IO, "%s: record %ld: %s", f->path, f->n + 1, write_cause(f));
    f->n++;
    return ERR_OK;
}

int codec_file_write_txn(struct codec_file *f, const struct txn_event *ev, struct err *e)
{
    if (!f->wr || f->which != CODEC_TXN_EVENT)
        return err_set(e, ERR_CONFIG, "%s: not open for writing transactions", f->path);
    return fill_txn(f->c, ev, e) ? e->code : file_append(f, e);
}

int codec_file_write_click(struct codec_file *f, const struct click_event *ev, struct err *e)
{
    if (!f->wr || f->which != CODEC_CLICK_EVENT)
        return err_set(e, ERR_CONFIG, "%s: not open for writing clicks", f->path);
    return fill_click(f->c, ev, e) ? e->code : file_append(f, e);
}

int codec_file_write_image_event(struct codec_file *f, const struct image_event *ev, struct err *e)
{
    if (!f->wr || f->which != CODEC_IMAGE_EVENT)
        return err_set(e, ERR_CONFIG, "%s: not open for writing image events", f->path);
    return fill_image(f->c, ev, e) ? e->code : file_append(f, e);
}

long codec_file_records(const struct codec_file *f)
{
    return f ? f->n : 0;
}

int codec_file_progress(const struct codec_file *f, int64_t *done, int64_t *total)
{
    long pos = f && f->rd && f->size >= 0 ? ftell(f->fp) : -1;

    if (pos < 0)
        return -1;
    *done = pos;
    *total = f->size;
    return 0;
}

int codec_file_close(struct codec_file *f, struct err *e)
{
    int rc = ERR_OK;

    if (!f)
        return ERR_OK;
    if (f->wr && avro_file_writer_close(f->wr))
        rc = err_set(e, ERR_IO, "%s: %s", f->path, write_cause(f));
    if (f->out && (rc != ERR_OK || !f->wr))
        out_abort(f->out);
    else if (f->out)
        rc = out_commit(f->out, e);
    if (f->rd)
        avro_file_reader_close(f->rd);
    if (f->has_value)
        avro_value_decref(&f->value);
    free(f);
    return rc;
}
