/* common/codec.h: Avro with Confluent framing (prefix codec_).
 *
 * Wire format: byte 0 = 0 (magic), bytes 1-4 = big-endian schema id, then
 * the Avro binary body. Schema ids come from the local schemas/ directory
 * (schemas/ids: "<id> <file.avsc>" per line). Decoding checks the message
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
    CODEC_LABEL,               /* label_event.avsc (monitoring: labels topic) */
    CODEC_NSCHEMAS
};

struct codec;

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

#endif
