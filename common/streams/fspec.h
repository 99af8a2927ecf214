/* common/streams/fspec.h: declared features, compiled once (prefix fspec_).
 *
 * A feature spec (YAML, docs: common/streams/FEATURES.md) names an input record
 * (an Avro .avsc), its entity key and event time, row features (arithmetic,
 * ratios, comparisons, clip/log, category codes) and per-entity aggregates
 * over event-time windows, and the output vector's order and name.
 *
 * fspec_open parses and checks it once and compiles a flat plan: input
 * loads by byte offset, register-to-register operations, one scan per
 * window ring. Nothing is parsed or looked up by name per event. The state
 * layout is derived from the aggregates; its 32-bit layout hash is written
 * in every encoded state, and a state written under another layout is
 * refused (ERR_DECODE), never misread: the caller starts that entity
 * afresh. A spec that changes only row features keeps its stored state.
 *
 * Evaluation is pure (no I/O, clock or globals): the worker, featurize and
 * replays get the same bits from the same events and states.
 */
#ifndef STREAMML_FSPEC_H
#define STREAMML_FSPEC_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "err.h"

/* State words per entity (8 bytes each) and encoded bytes: a spec whose
 * aggregates need more is refused at load. */
#define FSPEC_STATE_WORDS 256
#define FSPEC_STATE_MAX 4096
#define FSPEC_OUT_MAX 512    /* output features */
#define FSPEC_NAME_MAX 64    /* feature and field names, bytes with the NUL */
#define FSPEC_FILE_MAX (1 << 20)

union fspec_word {
    int64_t i;
    uint64_t u;
    double d;
};

/* Delivery bookkeeping kept with the entity's state (written with it in one
 * atomic write): per input partition the highest offset applied, and the
 * hashes of the event ids applied recently. common/streams/features.c fills them;
 * the plan never reads them. */
#define FSPEC_PARTS_MAX 8
#define FSPEC_IDS_MAX 32

struct fspec_pos {
    int32_t partition;
    int64_t offset;
};

struct fspec_seen {
    uint64_t id_hash;
    int64_t time_ms;
};

/* One entity's state. Plain data: copy it, keep arrays of it. */
struct fspec_state {
    int64_t last_event_ms; /* newest event time applied; 0 = none (it never moves back) */
    union fspec_word w[FSPEC_STATE_WORDS];
    int n_parts; /* least recently applied first */
    struct fspec_pos parts[FSPEC_PARTS_MAX];
    int n_ids; /* oldest first */
    struct fspec_seen ids[FSPEC_IDS_MAX];
};

/* How one input field is read from the caller's record (by byte offset). */
enum fspec_kind {
    FSPEC_F64,     /* double, NaN = missing */
    FSPEC_TRI,     /* int: 1 true, 0 false, anything else missing (boolean fields) */
    FSPEC_I64,     /* int64_t (the event time) */
    FSPEC_STR      /* char[cap], "" = missing */
};

struct fspec_binding {
    const char *field;
    enum fspec_kind kind;
    size_t off, cap; /* cap: bytes of a FSPEC_STR array */
};

struct fspec;

/* Reads and compiles a spec; the schema path inside is relative to the
 * spec's directory. NULL with one line naming file:line and the field in e
 * (ERR_CONFIG), ERR_IO when the file cannot be read. */
struct fspec *fspec_open(const char *path, struct err *e);
/* The same from text (name for messages; dir for a relative schema path,
 * NULL = the current one; schema_json, when not NULL, is the .avsc text
 * itself, as for the spec built into the binary). */
struct fspec *fspec_open_text(const char *text, size_t len, const char *name, const char *dir,
                              const char *schema_json, struct err *e);
/* The same for a spec whose input names a Schema Registry subject
 * (input.subject, input.version: a number or latest) instead of an .avsc:
 * the schema is read from r (common/io/registry.h) here, once. r NULL: such
 * a spec is refused (ERR_CONFIG, "no schema registry configured"); a
 * subject or version the registry lacks, or a registry that cannot be
 * reached, is one ERR_CONFIG line naming the spec's line, the subject and
 * the registry's URL. A spec on a file ignores r. */
struct reg;
struct fspec *fspec_open_reg(const char *path, struct reg *r, struct err *e);
void fspec_close(struct fspec *p); /* NULL-safe */

/* Binds the plan's input fields to a record layout: every field the plan
 * reads must be in b (matched by name, once, here) with a kind its schema
 * type allows. ERR_CONFIG naming the field otherwise. */
int fspec_bind(struct fspec *p, const struct fspec_binding *b, size_t n, struct err *e);

/* A binding onto struct fspec_row (below), for records read generically. */
struct fspec_row {
    int64_t time_ms;
    double *num; /* [fspec_num_fields]: NaN = missing */
    char *str;   /* [fspec_num_fields][FSPEC_NAME_MAX]: "" = missing */
};
int fspec_bind_row(struct fspec *p, struct err *e);
/* Allocates num/str for p's fields (all missing); fspec_row_free frees them. */
int fspec_row_init(const struct fspec *p, struct fspec_row *r);
void fspec_row_clear(const struct fspec *p, struct fspec_row *r); /* all missing */
void fspec_row_free(struct fspec_row *r);

/* The spec's input fields (schema order) and their Avro types. */
size_t fspec_num_fields(const struct fspec *p);
const char *fspec_field_name(const struct fspec *p, size_t i);
int fspec_field_is_string(const struct fspec *p, size_t i);
int fspec_field_index(const struct fspec *p, const char *name);
const char *fspec_key_field(const struct fspec *p);
/* The input schema's file as opened ("" for the built-in spec's) and its
 * record name (e.g. "TransactionEvent"). */
const char *fspec_schema_path(const struct fspec *p);
const char *fspec_record_name(const struct fspec *p);
/* The input schema as read at open (compact JSON): what a decoder of the
 * spec's records loads, so that both read the same schema. */
const char *fspec_schema_text(const struct fspec *p);
/* Where it came from, for logs: the .avsc path, or "subject S version N
 * (schema id I) at URL"; "" for the built-in spec. */
const char *fspec_schema_source(const struct fspec *p);
/* The registry's id of the schema (input.subject), 0 for a file. */
int32_t fspec_schema_id(const struct fspec *p);
const char *fspec_time_field(const struct fspec *p);
/* input.event_id: the field holding each event's id (a string or a long),
 * "" when the spec names none (the id is then <key>@<time ms>). */
const char *fspec_event_id_field(const struct fspec *p);

const char *fspec_name(const struct fspec *p); /* the vector's name/version, e.g. txn-v1 */
size_t fspec_dim(const struct fspec *p);
const char *const *fspec_names(const struct fspec *p); /* dim names, then NULL */
int fspec_index(const struct fspec *p, const char *name); /* output index or -1 */
uint64_t fspec_hash(const struct fspec *p);      /* of the compiled plan */
uint32_t fspec_layout_hash(const struct fspec *p); /* of the state layout */
size_t fspec_state_words(const struct fspec *p);
size_t fspec_state_max_bytes(const struct fspec *p);
/* The compiled plan, state layout and output names, for `features check`. */
void fspec_print(const struct fspec *p, FILE *out);

/* x[dim] for the record rec (bound layout) given the entity's prior state. */
void fspec_build(const struct fspec *p, const void *rec, const struct fspec_state *prior, float *x);
/* next = prior with rec applied (they may alias). Late events: see FEATURES.md. */
void fspec_update(const struct fspec *p, const void *rec, const struct fspec_state *prior,
                  struct fspec_state *next);
void fspec_state_init(struct fspec_state *s);

/* Versioned little-endian encoding carrying the layout hash, then the
 * delivery bookkeeping; bytes written or ERR_NOMEM when cap is too small. */
int fspec_state_encode(const struct fspec *p, const struct fspec_state *s, unsigned char *buf,
                       size_t cap);
/* ERR_DECODE with the reason: another version or layout hash, a wrong
 * length, two buckets in one slot, non-finite values. */
int fspec_state_decode(const struct fspec *p, struct fspec_state *s, const unsigned char *buf,
                       size_t len, struct err *e);
/* Moments (count, mean, sum of squared deviations) the state holds for the
 * z-scores of field; ERR_NOTFOUND when the spec keeps none for it. */
int fspec_state_moments(const struct fspec *p, const struct fspec_state *s, const char *field,
                        uint64_t *n, double *mean, double *m2);

#endif
