/* common/codec/codec_int.h: internal: only codec*.c include it. The codec
 * module's limits, compiled schemas, slots and the struct codec itself,
 * shared by the files codec.c was split into. Not for other modules. */
#ifndef STREAMML_CODEC_INT_H
#define STREAMML_CODEC_INT_H

#include "codec.h"

#include <avro.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HDR 5          /* magic byte + 4-byte schema id */
#define MAX_SLOTS 16   /* schemas listed in ids */
#define PROG_NODES 512 /* nodes and record fields/union branches per schema */
#define PROG_DEPTH 32  /* nesting; deeper (or recursive) schemas are refused */
#define SCHEMA_FILE_MAX (256 * 1024)
#define MAX_WRITERS 256 /* writer schemas fetched from a registry */

enum vkind {
    VK_NULL,
    VK_BOOLEAN,
    VK_INT,
    VK_LONG,
    VK_FLOAT,
    VK_DOUBLE,
    VK_STRING,
    VK_BYTES,
    VK_FIXED,
    VK_ENUM,
    VK_RECORD,
    VK_UNION,
    VK_ARRAY,
    VK_MAP
};

struct vnode {
    enum vkind kind;
    int64_t n;            /* fields, branches, symbols; fixed: size */
    int first;            /* record/union: first entry in kid[]; array/map: item node */
    avro_schema_t schema; /* borrowed from the slot's schema */
};

/* A schema flattened into an array, walked without touching avro-c. */
struct vprog {
    struct vnode node[PROG_NODES];
    int kid[PROG_NODES];           /* node of each record field / union branch */
    const char *fname[PROG_NODES]; /* record field names (NULL for branches) */
    json_t *dflt[PROG_NODES];      /* record field defaults (borrowed), NULL if none */
    int nnode, nkid;
};

/* Where each struct txn_event field sits in a transaction_event schema;
 * index -1: the writer lacks the field, so it takes its default (missing). */
struct txn_slot {
    int index;
    bool nullable;
    int null_branch, value_branch;
};

enum { TXN_NFIELDS = 28 };

/* A writer schema resolved into our transaction_event reader schema. avro-c
 * 1.11's resolver refuses reader fields the writer lacks (it has no
 * defaults), so the reader is first projected onto the writer's fields; the
 * fields left out take their (null) default, i.e. stay missing. */
struct resolved {
    bool incompatible;
    char why[200];
    bool identical;     /* writer == reader: read directly */
    char partial[160];  /* fields with a writer union branch we cannot read */
    avro_schema_t proj; /* reader restricted to the writer's fields */
    avro_value_iface_t *proj_iface, *rw_iface;
    avro_value_t proj_value, rw_value;
    bool has_proj_value, has_rw_value;
    struct txn_slot txn[TXN_NFIELDS];
};

struct slot {
    int32_t id;    /* 0: none yet (registry mode, unregistered) */
    char file[64]; /* file name, or "registry schema N" */
    char *text;    /* the schema as given (registering) */
    avro_schema_t schema;
    json_t *doc; /* the .avsc as JSON: avro-c drops defaults */
    avro_value_iface_t *iface;
    avro_value_t value; /* reused for every message of this schema */
    bool has_value;
    struct vprog *prog;
    struct resolved *res; /* into the txn reader, made on first use */
    /* codec_plan.c: plans compiled on first use; state 0 not yet, 1 the
     * plan runs, -1 avro-c does (said once in a log line). */
    struct txn_plan *tplan;
    struct enc_plan *eplan;
    int tplan_state, eplan_state;
};

struct codec {
    struct slot slot[MAX_SLOTS];
    int nslots;
    struct reg *reg;              /* borrowed; NULL: ids from schemas/ids */
    struct slot *wr[MAX_WRITERS]; /* fetched from the registry, by id */
    int nwr;
    int known[CODEC_NSCHEMAS]; /* slot index of each well-known schema */
    avro_reader_t reader;
    avro_writer_t writer;
    struct txn_slot txn[TXN_NFIELDS];
    struct buf scratch; /* bytes decoded from JSON strings */
    enum codec_plan_mode plan_mode;
};

struct walk {
    const unsigned char *p; /* the whole framed message: offsets are message bytes */
    size_t pos, end;
    const struct vprog *g;
    const char *field; /* innermost record field, for messages */
    struct err *e;
};

enum tkind { TK_ID, TK_TIME, TK_DOUBLE, TK_CAT, TK_BOOL, TK_LABEL };

struct txn_field {
    const char *name;
    enum tkind kind;
    size_t off, size;
};

#define PUT_STR(rec, p, m, e) put_str(rec, #m, (p)->m, sizeof((p)->m), e)
#define GET_STR(rec, p, m, e) get_str(rec, #m, (p)->m, sizeof((p)->m), e)

/* Helpers shared by the codec*.c files (were static in one codec.c). */

/* codec.c */
int buf_reserve(struct buf *b, size_t n);
int unframe(struct codec *c, const unsigned char *m, size_t len, struct slot **out, struct err *e);
int avro_fail(struct err *e, int code, const char *what);
int find_writer(struct codec *c, int32_t id, struct slot **out, struct err *e);
int frame_walk(struct codec *c, const void *msg, size_t len, struct slot **out, struct err *e);
int decode(struct codec *c, const void *msg, size_t len, struct slot **out, struct err *e);
int decode_as(struct codec *c, const void *msg, size_t len, const struct slot *want,
              struct slot **out, struct err *e);
int encode(struct codec *c, struct slot *s, struct buf *out, struct err *e);

/* codec_schema.c */
int compile(struct vprog *g, json_t *doc, avro_schema_t s, int depth, struct err *e);
int walk_node(struct walk *w, int node);
size_t codec_utf8_check(const unsigned char *s, size_t n);

/* codec_txn.c */
extern const struct txn_field txn_fields[TXN_NFIELDS];
const struct txn_field *txn_field_by_name(const char *name);
enum vkind txn_value_kind(enum tkind k);
int map_txn_schema(struct codec *c, struct err *e);
int copy_str(char *dst, size_t cap, const char *s, size_t len, const char *name, struct err *e);
int extract_txn(const struct txn_slot *txn, avro_value_t *rec, struct txn_event *ev, struct err *e);
int set_fixed_str(avro_value_t *v, const char *s, size_t cap, const char *name, struct err *e);
int fill_txn(struct codec *c, const struct txn_event *ev, struct err *e);

/* codec_pred.c */
int field(avro_value_t *rec, const char *name, avro_value_t *v, struct err *e);
int put_str(avro_value_t *rec, const char *name, const char *s, size_t cap, struct err *e);
int put_long(avro_value_t *rec, const char *name, int64_t x, struct err *e);
int put_int(avro_value_t *rec, const char *name, int32_t x, struct err *e);
int put_double(avro_value_t *rec, const char *name, double x, struct err *e);
int put_bool(avro_value_t *rec, const char *name, bool x, struct err *e);

/* codec_image.c */
int get_str(avro_value_t *rec, const char *name, char *dst, size_t cap, struct err *e);
int get_long(avro_value_t *rec, const char *name, int64_t *x, struct err *e);
int get_int(avro_value_t *rec, const char *name, int32_t *x, struct err *e);
int get_double(avro_value_t *rec, const char *name, double *x, struct err *e);
int get_bool(avro_value_t *rec, const char *name, bool *x, struct err *e);

/* codec_plan.c */
void plan_free(struct slot *s);
int plan_decode_txn(struct codec *c, struct slot *w, const void *msg, size_t len,
                    struct txn_event *ev, struct err *e, int *rc);
int plan_encode_prediction(struct codec *c, struct slot *s, const struct txn_prediction *p,
                           struct buf *out, struct err *e, int *rc);

/* codec_click.c: a click_event value <-> struct click_event (messages and files) */
int get_click(avro_value_t *v, struct click_event *ev, struct err *e);
int fill_click(struct codec *c, const struct click_event *ev, struct err *e);

/* codec_image.c: an image_event value <-> struct image_event (messages and files) */
int get_image(avro_value_t *v, struct image_event *ev, struct err *e);
int fill_image(struct codec *c, const struct image_event *ev, struct err *e);

#endif
