/* common/streams/txn_input.h: the transactions stream's input (prefix txi_).
 *
 * With the built-in txn-v1, or any spec on TransactionEvent, a message is a
 * TransactionEvent (codec_decode_txn, feat_txn_validate). With a spec on
 * another record (features.spec naming its own .avsc), a message is that
 * record: its fields are matched to the schema once at open
 * (codec_rec_open: positions, no name lookups per event) and each event
 * fills a row the plan reads (ev->rec), the entity key (ev->user_id), the
 * event time and the event id: the spec's input.event_id field (a string,
 * or a long in decimal; null, empty or too long is refused, and later
 * refusals name the id), else "<key>@<time ms>" (two events of one entity
 * at the same millisecond are then one event, for the dedup of
 * common/streams/features.h).
 *
 * Bad events of the spec's schema are refused naming the field: the key
 * null, empty or longer than EV_ID_MAX - 1 bytes, the time null, before
 * year 1 or beyond the event-time skew (common/codec/evtime.h; times
 * before 1970 are valid), a number +/-Inf, a string
 * longer than FSPEC_NAME_MAX - 1 bytes. NaN is missing, as a null is.
 */
#ifndef STREAMML_TXN_INPUT_H
#define STREAMML_TXN_INPUT_H

#include <stddef.h>

#include "codec.h"
#include "err.h"
#include "event.h"

struct txi;

/* For the active spec (feat_txn_spec: call it after the spec is loaded),
 * events of a batch of at most cap; the spec's schema is added to the
 * codec c (codec_add_schema), which must outlive the handle. */
struct txi *txi_open(struct codec *c, size_t cap, struct err *e);
void txi_close(struct txi *t); /* NULL-safe */
/* Framed Avro -> ev, batch slot i (< cap: ev->rec points into the
 * handle until slot i is decoded again). ERR_DECODE/ERR_INVALID naming the
 * field, ERR_RETRY as codec_decode_txn. */
int txi_decode(struct txi *t, size_t i, const void *msg, size_t len, struct txn_event *ev,
               struct err *e);
/* The schema id the spec's records are framed with (0: TransactionEvent). */
int32_t txi_schema_id(const struct txi *t);

#endif
