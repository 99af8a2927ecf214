/* common/streams/fspec_int.h: what fspec_parse.c (YAML, expressions, .avsc) hands
 * to fspec.c (checks, compilation, evaluation, state). Internal to fspec. */
#ifndef STREAMML_FSPEC_INT_H
#define STREAMML_FSPEC_INT_H

#include "fspec.h"

#define FS_FEAT_MAX 512
#define FS_NODE_MAX 8192
#define FS_FIELD_MAX 256
#define FS_CAT_MAX 256
#define FS_PATH_MAX 1024

/* Expression operators (also the plan's row operations). */
enum fs_op {
    OP_FIELD, /* parse only: a name, resolved to a field or a feature */
    OP_CONST,
    OP_ADD,
    OP_SUB,
    OP_MUL,
    OP_DIV,
    OP_NEG,
    OP_GT,
    OP_GE,
    OP_LT,
    OP_LE,
    OP_EQ,
    OP_NE,
    OP_LOG,
    OP_LOG1P,
    OP_ABS,
    OP_SQRT,
    OP_CLIP,
    OP_MIN,
    OP_MAX,
    OP_COALESCE,
    OP_ISMISSING,
    OP_COUNT_
};

enum fs_agg { AG_NONE, AG_COUNT, AG_SUM, AG_MEAN, AG_MIN, AG_MAX, AG_STD, AG_LAST, AG_SINCE,
              AG_ZSCORE };

enum fs_kind { FK_EXPR, FK_CODES, FK_AGG };

struct fs_node {
    int op;
    int a, b, c; /* operand nodes, -1 when unused */
    double k;
    char name[FSPEC_NAME_MAX];
};

struct fs_feat {
    char name[FSPEC_NAME_MAX];
    int line;
    int kind;
    int root; /* FK_EXPR */
    /* FK_CODES */
    char field[FSPEC_NAME_MAX];
    int ncats;
    char (*cats)[FSPEC_NAME_MAX];
    double *codes;
    double unknown, missing;
    /* FK_AGG */
    int agg;
    char of[FSPEC_NAME_MAX];
    int64_t window_ms, bucket_ms;
};

struct fs_field {
    char name[FSPEC_NAME_MAX];
    int is_string, is_long, is_bool;
};

struct fs_ast {
    char file[FS_PATH_MAX];
    char name[FSPEC_NAME_MAX];
    char schema[FS_PATH_MAX];
    int schema_line;
    char schema_path[FS_PATH_MAX * 2]; /* as opened ("" for a built-in schema text) */
    char subject[256];                 /* input.subject: the schema from a registry */
    int version, subject_line;         /* input.version: >= 1, 0 = latest */
    int32_t schema_id;                 /* the registry's id of it (0: a file) */
    int schema_version;                /* the version it resolved to */
    char schema_src[FS_PATH_MAX];      /* "subject S version N (schema id I) at URL" */
    char *schema_text;                 /* the schema read (compact JSON) */
    char record[FSPEC_NAME_MAX];       /* the record's name, e.g. TransactionEvent */
    char key[FSPEC_NAME_MAX], time[FSPEC_NAME_MAX];
    char event_id[FSPEC_NAME_MAX]; /* input.event_id: "" = <key>@<time ms> */
    int key_line, time_line, event_id_line;
    struct fs_feat *feats;
    int nfeat;
    struct fs_node *nodes;
    int nnode;
    char (*out)[FSPEC_NAME_MAX];
    int *out_line;
    int nout;
    struct fs_field fields[FS_FIELD_MAX];
    int nfield;
};

/* Parses YAML text into a (zeroed) ast, then reads its schema (dir for a
 * relative path; schema_json, when not NULL, is the schema itself).
 * ERR_CONFIG naming file:line and the field. */
struct reg;
/* r: the registry a spec naming input.subject reads it from (NULL: none,
 * and such a spec is refused). */
int fs_parse(struct fs_ast *a, const char *text, size_t len, const char *name, const char *dir,
             const char *schema_json, struct reg *r, struct err *e);
void fs_ast_free(struct fs_ast *a);

/* ---- the compiled plan (fspec.c builds it, fspec_state.c runs it) ---- */

#define REG_MAX 1024
#define RING_MAX 16
#define COL_MAX 16
#define FS_STATE_VERSION 3 /* 1, 2: the hard-coded txn-v1 module */
#define FS_TRAILER_MAX (2 + FSPEC_PARTS_MAX * 12 + FSPEC_IDS_MAX * 16)

/* Row operations beyond the expression operators. */
enum { OP_CODES = OP_COUNT_, OP_MEAN2, OP_STD3, OP_SINCE, OP_ZSCORE, OP_LAST };

/* Ring columns: what a bucket keeps per field. */
enum { C_SUM = 1, C_N = 2, C_SQ = 4, C_MIN = 8, C_MAX = 16 };

struct ins {
    int op, dst, a, b, c, aux;
};

struct load {
    int field, reg, kind;
    size_t off, cap;
};

struct col {
    int field, reg_v; /* the field and the register holding the event's value */
    int flags, nw;    /* columns kept, words per bucket */
    int r_sum, r_n, r_sq, r_min, r_max;
};

struct ring {
    double inv_width, inv_n; /* 1/width and 1/n: divisions by multiplication */
    int64_t width;
    int n, word0, stride, ncols, r_count;
    struct col cols[COL_MAX];
};

struct mom {
    int field, reg_v, word0;
};

struct codes {
    int field, ncats;
    size_t off, cap;
    char (*cats)[FSPEC_NAME_MAX];
    double *code, unknown, missing;
};

struct fspec {
    struct fs_ast a;
    int bound;
    size_t time_off;
    int nreg, nload, nins, nconst, nring, nmom, nlast, ncodes, words;
    struct load loads[FS_FIELD_MAX]; /* bound: the nf64 plain doubles first */
    int nf64, nagg_load;
    int agg_load[FS_FIELD_MAX]; /* loads the state update reads */
    int field_reg[FS_FIELD_MAX]; /* -1: not read */
    int const_reg[REG_MAX];
    double const_k[REG_MAX];
    struct ins *ins;
    struct ring rings[RING_MAX];
    struct mom moms[FS_FIELD_MAX], lasts[FS_FIELD_MAX];
    struct codes *codes;
    int feat_reg[FS_FEAT_MAX];
    int out_reg[FSPEC_OUT_MAX];
    int out_direct; /* out_reg[i] == 1 + i (renumber_outputs) */
    const char *names[FSPEC_OUT_MAX + 1];
    int dim;
    uint64_t hash;
    uint32_t layout_hash;
    size_t max_bytes;
    char *plan_text;
};

const char *fs_op_name(int op);
const char *fs_agg_name(int agg);

#endif
