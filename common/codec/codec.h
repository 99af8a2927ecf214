/* common/codec/codec.h: Avro with Confluent framing (prefix codec_).
 *
 * Wire format: byte 0 = 0 (magic), bytes 1-4 = big-endian schema id, then
 * the Avro binary body. Schema ids come from the local schemas/ directory
 * (schemas/ids: "<id> <file.avsc>" per line), or from a Schema Registry
 * (codec_use_registry, below). The bounded walk uses the writer's schema. Decoding checks the message
 * size and every length/count prefix against hard limits before allocating,
 * so a hostile message costs bounded time and memory.
 *
 * A handle holds reusable Avro values and buffers: one handle per thread.
 */
#ifndef STREAMML_CODEC_H
#define STREAMML_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "event.h"
#include "image_event.h"
#include "click_event.h"

#define CODEC_MAX_MESSAGE (1024 * 1024)  /* larger messages are refused */

/* Growable output buffer with a hard limit (like curl's dynbuf). */
struct buf {
    unsigned char *data;
    size_t len;
    size_t cap;
    size_t max;       /* 0 = CODEC_MAX_MESSAGE */
};
void buf_init(struct buf *b, size_t max);
void buf_free(struct buf *b);
void buf_reset(struct buf *b);
int buf_append(struct buf *b, const void *p, size_t n); /* ERR_NOMEM past max */

/* Well-known schemas (file names in schemas/). */
enum codec_schema {
    CODEC_TXN_EVENT = 0,       /* transaction_event.avsc */
    CODEC_TXN_PREDICTION,      /* transaction_prediction.avsc */
    CODEC_DEAD_LETTER,         /* dead_letter.avsc */
    CODEC_ALERT,               /* alert_event.avsc */
    CODEC_IMAGE_EVENT,         /* image_event.avsc */
    CODEC_IMAGE_PREDICTION,    /* image_prediction.avsc */
    CODEC_LABEL,               /* label_event.avsc (monitoring: labels topic) */
    CODEC_CLICK_EVENT,         /* click_event.avsc */
    CODEC_CLICK_PREDICTION,    /* click_prediction.avsc */
    CODEC_CLICK_OUTCOME,       /* click_outcome.avsc */
    CODEC_CATALOG_ITEM,        /* catalog_item.avsc (common/streams/catalog.h; read as JSON) */
    CODEC_NSCHEMAS
};

struct codec;

/* How transaction events are decoded and predictions encoded: by a plan
 * compiled from the schema (common/codec/codec_plan.c; the default), avro-c for
 * what a plan does not compile and for every error message; OFF: avro-c
 * only; ONLY (tests): a message the plan refuses is an error ("plan refused
 * the message") of the class avro-c would give, not retried by avro-c. */
enum codec_plan_mode { CODEC_PLAN_ON = 0, CODEC_PLAN_OFF, CODEC_PLAN_ONLY };
void codec_set_plan(struct codec *c, enum codec_plan_mode mode);

/* Loads every schema listed in <schema_dir>/ids. NULL with the file named
 * in *e on failure. */
struct codec *codec_open(const char *schema_dir, struct err *e);
void codec_close(struct codec *c); /* NULL-safe */

int32_t codec_schema_id(const struct codec *c, enum codec_schema which);

/* Framed Avro -> event. ERR_DECODE with the byte/field named on bad input
 * ("magic byte 1: producer uses header schema ids", "unknown schema id 7",
 * "truncated at byte 12"). */
int codec_decode_txn(struct codec *c, const void *msg, size_t len, struct txn_event *ev,
                     struct err *e);
int codec_encode_txn(struct codec *c, const struct txn_event *ev, struct buf *out,
                     struct err *e);
int codec_encode_prediction(struct codec *c, const struct txn_prediction *p, struct buf *out,
                            struct err *e);
int codec_encode_dlq(struct codec *c, const struct dlq_record *r, struct buf *out,
                     struct err *e);

/* Images (schemas/image_event.avsc, image_prediction.avsc). Decoding refuses
 * strings longer than the struct's fields and an empty uri (ERR_DECODE
 * naming the field); encoding refuses out-of-range counts. */
int codec_decode_image_event(struct codec *c, const void *msg, size_t len,
                             struct image_event *ev, struct err *e);
int codec_encode_image_event(struct codec *c, const struct image_event *ev, struct buf *out,
                             struct err *e);
int codec_encode_image_prediction(struct codec *c, const struct image_prediction *p,
                                  struct buf *out, struct err *e);
int codec_decode_image_prediction(struct codec *c, const void *msg, size_t len,
                                  struct image_prediction *p, struct err *e);

/* Clickstream (schemas/click_event.avsc, click_prediction.avsc). Decoding
 * refuses over-long strings, empty event/session ids and an unknown
 * event_type (ERR_DECODE naming the field); encoding refuses n_items out of
 * [0, CLICK_SHOWN_MAX]. */
int codec_decode_click_event(struct codec *c, const void *msg, size_t len,
                             struct click_event *ev, struct err *e);
int codec_encode_click_event(struct codec *c, const struct click_event *ev, struct buf *out,
                             struct err *e);
int codec_encode_click_prediction(struct codec *c, const struct click_prediction *p,
                                  struct buf *out, struct err *e);
int codec_decode_click_prediction(struct codec *c, const void *msg, size_t len,
                                  struct click_prediction *p, struct err *e);
/* Outcome records (schemas/click_outcome.avsc). */
int codec_encode_click_outcome(struct codec *c, const struct click_outcome *o, struct buf *out,
                               struct err *e);
int codec_decode_click_outcome(struct codec *c, const void *msg, size_t len,
                               struct click_outcome *o, struct err *e);

/* A TransactionEvent field by schema name (for a field picked in the
 * configuration, e.g. monitor.fairness.field): its index, or -1. */
int codec_txn_field(const char *name);
/* Field idx of ev as text in out[0..cap): strings as they are, numbers
 * "%g", booleans "true"/"false"; "" when missing. */
void codec_txn_field_text(const struct txn_event *ev, int idx, char *out, size_t cap);

/* One JSON object (a line of `streamml produce` input) -> event. Unknown
 * keys are an error; null or absent optional fields are missing. */
int codec_txn_from_json(const char *json, size_t len, struct txn_event *ev, struct err *e);

/* Generic: any framed message whose schema id is known -> one JSON line
 * (no newline) in out, NUL-terminated. For `streamml consume`. */
int codec_to_json(struct codec *c, const void *msg, size_t len, struct buf *out,
                  struct err *e);
/* Generic: JSON object -> framed Avro under the given schema. For
 * `streamml produce --schema`. */
int codec_from_json(struct codec *c, enum codec_schema which, const char *json, size_t len,
                    struct buf *out, struct err *e);

/* Avro object container files of transaction events (what Kafka Connect's
 * S3/HDFS sinks archive, and what `streamml consume --avro-file` writes).
 * Files must be written with exactly schemas/transaction_event.avsc; a
 * record's values go through the same field mapping as a Kafka message.
 * One handle per file; it borrows the codec, which must outlive it. */
struct codec_file;

/* path "-" = stdin. NULL with the file named in *e: unreadable, not a
 * container file, or written with another schema (ERR_CONFIG). */
struct codec_file *codec_file_open_read(struct codec *c, const char *path, struct err *e);
/* Next record into ev: 1 read, 0 end of file; ERR_DECODE naming the record
 * number when its values do not map (the next call goes on), ERR_IO when a
 * block is corrupt or truncated (stop: nothing after it is trusted). */
int codec_file_read_txn(struct codec_file *f, struct txn_event *ev, struct err *e);
/* A new file (truncated), deflate-compressed blocks. */
struct codec_file *codec_file_open_write(struct codec *c, const char *path, struct err *e);
int codec_file_write_txn(struct codec_file *f, const struct txn_event *ev, struct err *e);
/* The same for a file of which's records: CODEC_TXN_EVENT (the three
 * above), CODEC_CLICK_EVENT (schemas/click_event.avsc) or CODEC_IMAGE_EVENT
 * (schemas/image_event.avsc), each read and written with its pair below
 * (same return values as the transaction pair); ERR_CONFIG for any other
 * schema, and for a read or write of another kind of event than the file's. */
struct codec_file *codec_file_open_read_as(struct codec *c, const char *path,
                                           enum codec_schema which, struct err *e);
struct codec_file *codec_file_open_write_as(struct codec *c, const char *path,
                                            enum codec_schema which, struct err *e);
int codec_file_read_click(struct codec_file *f, struct click_event *ev, struct err *e);
int codec_file_write_click(struct codec_file *f, const struct click_event *ev, struct err *e);
int codec_file_read_image_event(struct codec_file *f, struct image_event *ev, struct err *e);
int codec_file_write_image_event(struct codec_file *f, const struct image_event *ev, struct err *e);
/* Records read or written so far. */
long codec_file_records(const struct codec_file *f);
/* Reader: bytes consumed so far (read ahead by avro-c's blocks) and the
 * file's size, for progress; -1 when unknown (stdin, pipes). */
int codec_file_progress(const struct codec_file *f, int64_t *done, int64_t *total);
/* Flushes (writer) and closes; NULL-safe. A write error at flush is
 * returned with the path named. */
int codec_file_close(struct codec_file *f, struct err *e);

/* ---- Schema Registry (common/io/registry.h) ----
 *
 * With a registry, the ids in messages are resolved by asking it (GET
 * /schemas/ids/{id}, cached by id) instead of schemas/ids, and our own
 * schemas are framed with the ids it assigns (codec_register). The local
 * files stay the reader schemas: a writer schema that differs is resolved
 * into ours (avro-c's resolved writer), so a producer that adds a field, or
 * drops an optional one, is still read; an incompatible one is ERR_DECODE
 * naming the field. Without a registry the same resolution applies to extra
 * versions listed in schemas/ids.
 *
 * Errors of codec_decode_txn/codec_to_json then also include ERR_RETRY: the
 * registry could not be asked (down, auth): the message is not at fault and
 * must not be dead-lettered; try again later. */
struct reg;
/* r is borrowed and must outlive c. Local ids are dropped until registered. */
void codec_use_registry(struct codec *c, struct reg *r);
/* Registers (register_new) or looks up `which` under "<topic>-value" and
 * frames it with that id from now on. */
int codec_register(struct codec *c, enum codec_schema which, const char *topic, int register_new,
                   struct err *e);
/* JSON -> framed Avro under the writer schema of id (schemas/ids or the
 * registry): `streamml produce --schema-id`, and tests of old writers.
 * key (key_cap bytes, may be 0) receives the string value of the object's
 * key_field (NULL: none), "" if absent. */
int codec_from_json_id(struct codec *c, int32_t id, const char *json, size_t len,
                       const char *key_field, char *key, size_t key_cap, struct buf *out,
                       struct err *e);


/* ---- a caller's record schema (a feature spec's input) ----
 *
 * Loaded as one more local schema. Without a registry its id is derived
 * from the schema itself (CODEC_USER_ID_BASE | 30 bits of a hash of its
 * compact JSON), so `streamml produce --schema-file` and the worker frame
 * and read it alike with nothing to configure; an equal schema already
 * loaded keeps its id. ERR_CONFIG naming name when it is not an Avro
 * record, or past MAX_SLOTS. */
#define CODEC_USER_ID_BASE 0x40000000
int codec_add_schema(struct codec *c, const char *text, size_t len, const char *name,
                     int32_t *id, struct err *e);
/* With a registry: the schema loaded under local_id registered (or only
 * looked up) under subject; *id is the registry's id, framed from now on. */
int codec_register_id(struct codec *c, int32_t local_id, const char *subject, int register_new,
                      int32_t *id, struct err *e);

/* Reading fields of such a record by position: the names are matched to
 * the schema's fields once, at open; a decode then reads each by index
 * (no name lookups per message). A writer must have the same schema (under
 * its local id or any registry id). */
enum codec_val_kind { CODEC_VAL_NUM, CODEC_VAL_LONG, CODEC_VAL_STR };
struct codec_val {
    int present;      /* 0: null (or absent) */
    double num;       /* numbers and booleans (1/0); NaN/Inf as written */
    int64_t i;        /* int and long fields, exactly */
    const char *str;  /* strings and enum symbols: borrowed until the next decode */
    size_t len;
};
struct codec_rec;
/* ERR_CONFIG naming the field: not in the schema, or of a type other than
 * a number, boolean, string or enum (or a [null, T] union of one). */
struct codec_rec *codec_rec_open(struct codec *c, int32_t id, const char *const *fields, size_t n,
                                 struct err *e);
void codec_rec_close(struct codec_rec *r); /* NULL-safe */
enum codec_val_kind codec_rec_kind(const struct codec_rec *r, size_t i);
/* out[n], in the order of fields. ERR_DECODE (bad bytes, another schema),
 * ERR_RETRY (registry unreachable), as codec_decode_txn. */
int codec_rec_decode(struct codec_rec *r, const void *msg, size_t len, struct codec_val *out,
                     struct err *e);

#endif
