/* common/streams/fspec.c: checks a parsed spec, compiles it into a flat plan and
 * runs it (vector, state update, state codec). See fspec.h and
 * common/streams/FEATURES.md for the semantics; the order of floating-point
 * operations here is part of the contract (bit-identical vectors online
 * and offline), so do not reorder sums or fold expressions.
 */
#include "fspec.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fspec_int.h"

/* ---- checks and compilation ---- */

struct cc {
    struct fspec *p;
    struct err *e;
    int *mark; /* per feature: 0 new, 1 in progress, 2 compiled */
    int *path, npath;
};

static int cfail(struct cc *c, int line, const char *fmt, const char *a, const char *b)
{
    char msg[320];

    snprintf(msg, sizeof(msg), fmt, a, b);
    return err_set(c->e, ERR_CONFIG, "%s:%d: %s", c->p->a.file, line, msg);
}

static int field_of(const struct fspec *p, const char *name)
{
    for (int i = 0; i < p->a.nfield; i++)
        if (strcmp(p->a.fields[i].name, name) == 0)
            return i;
    return -1;
}

static int feat_of(const struct fspec *p, const char *name)
{
    for (int i = 0; i < p->a.nfeat; i++)
        if (strcmp(p->a.feats[i].name, name) == 0)
            return i;
    return -1;
}

static int new_reg(struct cc *c, int line)
{
    if (c->p->nreg >= REG_MAX)
        return cfail(c, line, "the plan needs more than %s registers%s", "1024", ""), -1;
    return c->p->nreg++;
}

/* The register holding numeric field f, loaded once per event. */
static int field_reg(struct cc *c, int f, int line)
{
    struct fspec *p = c->p;

    if (p->field_reg[f] < 0) {
        int r = new_reg(c, line);
        if (r < 0)
            return -1;
        p->field_reg[f] = r;
        p->loads[p->nload++] = (struct load){.field = f, .reg = r};
    }
    return p->field_reg[f];
}

static int emit(struct cc *c, struct ins in, int line)
{
    struct fspec *p = c->p;

    if (p->nins >= FS_NODE_MAX + FS_FEAT_MAX)
        return cfail(c, line, "the plan has too many operations%s%s", "", "");
    p->ins[p->nins++] = in;
    return ERR_OK;
}

static int compile_feat(struct cc *c, int i);

/* A numeric input field, for an expression or an aggregate's `of`. */
static int numeric_field(struct cc *c, const char *name, const struct fs_feat *f, int *reg)
{
    int fi = field_of(c->p, name);

    if (fi < 0)
        return -2;
    if (c->p->a.fields[fi].is_string)
        return cfail(c, f->line, "type mismatch: %s uses string field \"%s\" as a number (map it "
                     "with codes)", f->name, name);
    if ((*reg = field_reg(c, fi, f->line)) < 0)
        return ERR_CONFIG;
    return ERR_OK;
}

static int compile_node(struct cc *c, const struct fs_feat *f, int n, int *reg)
{
    const struct fs_node *nd = &c->p->a.nodes[n];
    int ra = 0, rb = 0, rc = 0, fi, rcode; /* register 0: unused operand */

    if (nd->op == OP_CONST) {
        for (int i = 0; i < c->p->nconst; i++)
            if (memcmp(&c->p->const_k[i], &nd->k, sizeof(double)) == 0) {
                *reg = c->p->const_reg[i];
                return ERR_OK;
            }
        if ((*reg = new_reg(c, f->line)) < 0)
            return ERR_CONFIG;
        c->p->const_reg[c->p->nconst] = *reg;
        c->p->const_k[c->p->nconst++] = nd->k;
        return ERR_OK;
    }
    if (nd->op == OP_FIELD) {
        /* Input fields first: a passthrough feature may share its field's name. */
        rcode = numeric_field(c, nd->name, f, reg);
        if (rcode != -2)
            return rcode;
        if ((fi = feat_of(c->p, nd->name)) < 0)
            return cfail(c, f->line, "unknown field or feature \"%s\" in %s", nd->name, f->name);
        if (compile_feat(c, fi))
            return ERR_CONFIG;
        *reg = c->p->feat_reg[fi];
        return ERR_OK;
    }
    if ((nd->a >= 0 && compile_node(c, f, nd->a, &ra)) ||
        (nd->b >= 0 && compile_node(c, f, nd->b, &rb)) ||
        (nd->c >= 0 && compile_node(c, f, nd->c, &rc)))
        return ERR_CONFIG;
    /* the same operation on the same registers: computed once */
    for (int i = 0; i < c->p->nins; i++) {
        const struct ins *in = &c->p->ins[i];
        if (in->op == nd->op && in->a == ra && in->b == rb && in->c == rc) {
            *reg = in->dst;
            return ERR_OK;
        }
    }
    if ((*reg = new_reg(c, f->line)) < 0)
        return ERR_CONFIG;
    return emit(c, (struct ins){.op = nd->op, .dst = *reg, .a = ra, .b = rb, .c = rc}, f->line);
}

static int compile_codes(struct cc *c, const struct fs_feat *f, int *reg)
{
    struct fspec *p = c->p;
    int fi = field_of(p, f->field);
    struct codes *cd = &p->codes[p->ncodes];

    if (fi < 0)
        return cfail(c, f->line, "unknown field \"%s\" in %s.codes", f->field, f->name);
    if (!p->a.fields[fi].is_string)
        return cfail(c, f->line, "type mismatch: %s.codes needs a string field, \"%s\" is not",
                     f->name, f->field);
    *cd = (struct codes){.field = fi, .ncats = f->ncats, .cats = f->cats, .code = f->codes,
                         .unknown = f->unknown, .missing = f->missing};
    if ((*reg = new_reg(c, f->line)) < 0)
        return ERR_CONFIG;
    return emit(c, (struct ins){.op = OP_CODES, .dst = *reg, .aux = p->ncodes++}, f->line);
}

static int agg_flags(int agg)
{
    switch (agg) {
    case AG_SUM:
        return C_SUM;
    case AG_MEAN:
        return C_SUM | C_N;
    case AG_STD:
        return C_SUM | C_N | C_SQ;
    case AG_MIN:
        return C_MIN;
    case AG_MAX:
        return C_MAX;
    default:
        return 0;
    }
}

/* The ring for (bucket width, bucket count), created on first use. */
static struct ring *ring_for(struct cc *c, const struct fs_feat *f)
{
    struct fspec *p = c->p;
    int n = (int)(f->window_ms / f->bucket_ms);

    for (int i = 0; i < p->nring; i++)
        if (p->rings[i].width == f->bucket_ms && p->rings[i].n == n)
            return &p->rings[i];
    if (p->nring == RING_MAX) {
        cfail(c, f->line, "%s: more than 16 different windows%s", f->name, "");
        return NULL;
    }
    p->rings[p->nring] = (struct ring){.width = f->bucket_ms, .n = n, .r_count = -1};
    return &p->rings[p->nring++];
}

static int compile_window(struct cc *c, const struct fs_feat *f, int rv, int *reg)
{
    struct ring *r;
    struct col *col = NULL;
    int fl = agg_flags(f->agg);
    char w[40], b[40];

    if (!f->window_ms || !f->bucket_ms)
        return cfail(c, f->line, "%s: %s needs window and bucket", f->name, fs_agg_name(f->agg));
    snprintf(w, sizeof(w), "%lld ms", (long long)f->window_ms);
    snprintf(b, sizeof(b), "%lld ms", (long long)f->bucket_ms);
    if (f->window_ms < f->bucket_ms)
        return cfail(c, f->line, "window (%s) shorter than its bucket (%s)", w, b);
    if (f->window_ms % f->bucket_ms || f->window_ms / f->bucket_ms > 255)
        return cfail(c, f->line, "window (%s) must be 1 to 255 whole buckets (%s)", w, b);
    if (!(r = ring_for(c, f)))
        return ERR_CONFIG;
    if (f->agg == AG_COUNT) {
        if (r->r_count < 0 && (r->r_count = new_reg(c, f->line)) < 0)
            return ERR_CONFIG;
        *reg = r->r_count;
        return ERR_OK;
    }
    for (int i = 0; i < r->ncols; i++)
        if (r->cols[i].reg_v == rv)
            col = &r->cols[i];
    if (!col) {
        if (r->ncols == COL_MAX)
            return cfail(c, f->line, "%s: more than 16 fields in one window%s", f->name, "");
        col = &r->cols[r->ncols++];
        *col = (struct col){.field = field_of(c->p, f->of), .reg_v = rv, .r_sum = -1, .r_n = -1,
                            .r_sq = -1, .r_min = -1, .r_max = -1};
    }
    col->flags |= fl;
    if ((fl & C_SUM) && col->r_sum < 0 && (col->r_sum = new_reg(c, f->line)) < 0)
        return ERR_CONFIG;
    if ((fl & C_N) && col->r_n < 0 && (col->r_n = new_reg(c, f->line)) < 0)
        return ERR_CONFIG;
    if ((fl & C_SQ) && col->r_sq < 0 && (col->r_sq = new_reg(c, f->line)) < 0)
        return ERR_CONFIG;
    if ((fl & C_MIN) && col->r_min < 0 && (col->r_min = new_reg(c, f->line)) < 0)
        return ERR_CONFIG;
    if ((fl & C_MAX) && col->r_max < 0 && (col->r_max = new_reg(c, f->line)) < 0)
        return ERR_CONFIG;
    if (f->agg == AG_SUM || f->agg == AG_MIN || f->agg == AG_MAX) {
        *reg = f->agg == AG_SUM ? col->r_sum : f->agg == AG_MIN ? col->r_min : col->r_max;
        return ERR_OK;
    }
    if ((*reg = new_reg(c, f->line)) < 0)
        return ERR_CONFIG;
    if (f->agg == AG_MEAN)
        return emit(c, (struct ins){.op = OP_MEAN2, .dst = *reg, .a = col->r_sum, .b = col->r_n},
                    f->line);
    return emit(c,
                (struct ins){.op = OP_STD3, .dst = *reg, .a = col->r_n, .b = col->r_sum,
                             .c = col->r_sq},
                f->line);
}

static int compile_agg(struct cc *c, const struct fs_feat *f, int *reg)
{
    struct fspec *p = c->p;
    int needs_of = f->agg != AG_COUNT && f->agg != AG_SINCE, rv = -1, rc;
    int windowed = f->agg != AG_LAST && f->agg != AG_SINCE && f->agg != AG_ZSCORE;

    if (needs_of && !f->of[0])
        return cfail(c, f->line, "%s: %s needs `of: FIELD`", f->name, fs_agg_name(f->agg));
    if (!needs_of && f->of[0])
        return cfail(c, f->line, "%s: %s takes no `of`", f->name, fs_agg_name(f->agg));
    if (!windowed && (f->window_ms || f->bucket_ms))
        return cfail(c, f->line, "%s: %s takes no window or bucket", f->name, fs_agg_name(f->agg));
    if (needs_of) {
        rc = numeric_field(c, f->of, f, &rv);
        if (rc == -2)
            return cfail(c, f->line, "unknown field \"%s\" in %s.of (an input field)", f->of,
                         f->name);
        if (rc)
            return rc;
    }
    if (windowed)
        return compile_window(c, f, rv, reg);
    if ((*reg = new_reg(c, f->line)) < 0)
        return ERR_CONFIG;
    if (f->agg == AG_SINCE)
        return emit(c, (struct ins){.op = OP_SINCE, .dst = *reg}, f->line);
    if (f->agg == AG_ZSCORE) {
        int m = -1;
        for (int i = 0; i < p->nmom; i++)
            if (p->moms[i].reg_v == rv)
                m = i;
        if (m < 0) {
            m = p->nmom++;
            p->moms[m] = (struct mom){.field = field_of(p, f->of), .reg_v = rv};
        }
        return emit(c, (struct ins){.op = OP_ZSCORE, .dst = *reg, .a = rv, .aux = m}, f->line);
    }
    {
        int m = -1;
        for (int i = 0; i < p->nlast; i++)
            if (p->lasts[i].reg_v == rv)
                m = i;
        if (m < 0) {
            m = p->nlast++;
            p->lasts[m] = (struct mom){.field = field_of(p, f->of), .reg_v = rv};
        }
        return emit(c, (struct ins){.op = OP_LAST, .dst = *reg, .aux = m}, f->line);
    }
}

/* Depth-first: a feature's inputs are compiled before it; a feature met
 * again while in progress closes a cycle. */
static int compile_feat(struct cc *c, int i)
{
    const struct fs_feat *f = &c->p->a.feats[i];
    int reg = -1, rc;

    if (c->mark[i] == 2)
        return ERR_OK;
    if (c->mark[i] == 1) {
        char path[400] = "";
        size_t at = 0;
        int from = 0;
        while (from < c->npath && c->path[from] != i)
            from++;
        for (int k = from; k < c->npath && at < sizeof(path); k++)
            at += (size_t)snprintf(path + at, sizeof(path) - at, "%s -> ",
                                   c->p->a.feats[c->path[k]].name);
        return cfail(c, f->line, "cycle between features: %s%s", path, f->name);
    }
    c->mark[i] = 1;
    c->path[c->npath++] = i;
    if (f->kind == FK_EXPR)
        rc = compile_node(c, f, f->root, &reg);
    else if (f->kind == FK_CODES)
        rc = compile_codes(c, f, &reg);
    else
        rc = compile_agg(c, f, &reg);
    c->npath--;
    if (rc)
        return rc;
    c->p->feat_reg[i] = reg;
    c->mark[i] = 2;
    return ERR_OK;
}

static int check_names(struct cc *c)
{
    struct fspec *p = c->p;
    const struct fs_ast *a = &p->a;
    char ln[16];
    int fi;

    for (int i = 0; i < a->nfeat; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(a->feats[i].name, a->feats[j].name) == 0) {
                snprintf(ln, sizeof(ln), "%d", a->feats[j].line);
                return cfail(c, a->feats[i].line, "duplicate feature name \"%s\" (first at line %s)",
                             a->feats[i].name, ln);
            }
    if (field_of(p, a->key) < 0)
        return cfail(c, a->key_line, "input.key: unknown field \"%s\" in %s", a->key, a->schema);
    if ((fi = field_of(p, a->time)) < 0)
        return cfail(c, a->time_line, "input.time: unknown field \"%s\" in %s", a->time,
                     a->schema);
    if (!a->fields[fi].is_long)
        return cfail(c, a->time_line, "type mismatch: input.time \"%s\" must be a long "
                     "(timestamp-millis)%s", a->time, "");
    if (a->event_id[0] && (fi = field_of(p, a->event_id)) < 0)
        return cfail(c, a->event_id_line, "input.event_id: unknown field \"%s\" in %s",
                     a->event_id, a->schema);
    if (a->event_id[0] && !a->fields[fi].is_string && !a->fields[fi].is_long)
        return cfail(c, a->event_id_line, "type mismatch: input.event_id \"%s\" must be a "
                     "string or a long%s", a->event_id, "");
    for (int i = 0; i < a->nout; i++) {
        if (feat_of(p, a->out[i]) < 0)
            return cfail(c, a->out_line[i], "output: unknown feature \"%s\"%s", a->out[i], "");
        for (int j = 0; j < i; j++)
            if (strcmp(a->out[i], a->out[j]) == 0)
                return cfail(c, a->out_line[i], "output: duplicate name \"%s\"%s", a->out[i], "");
    }
    return ERR_OK;
}

/* Words per ring bucket: id and count, then the columns in flag order. */
static void lay_out(struct fspec *p)
{
    int w = 0;

    for (int i = 0; i < p->nmom; i++, w += 3)
        p->moms[i].word0 = w;
    for (int i = 0; i < p->nlast; i++, w += 2)
        p->lasts[i].word0 = w;
    p->max_bytes = 1 + 4 + 10 + (size_t)p->nmom * 26 + (size_t)p->nlast * 9 + FS_TRAILER_MAX;
    for (int r = 0; r < p->nring; r++) {
        struct ring *g = &p->rings[r];
        int s = 2;
        for (int k = 0; k < g->ncols; k++) {
            g->cols[k].nw = __builtin_popcount((unsigned)g->cols[k].flags);
            s += g->cols[k].nw;
        }
        g->stride = s;
        g->word0 = w;
        g->inv_width = 1.0 / (double)g->width;
        g->inv_n = 1.0 / (double)g->n;
        w += g->n * s;
        p->max_bytes += 1 + (size_t)g->n * (10 + 5 + 8 * (size_t)(s - 2));
    }
    p->words = w;
}

static uint64_t fnv64(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static void describe(const struct fspec *p, FILE *out, int layout_only);

static int finish(struct cc *c)
{
    struct fspec *p = c->p;
    char *buf = NULL;
    size_t len = 0;
    FILE *m;

    lay_out(p);
    if (p->words > FSPEC_STATE_WORDS || p->max_bytes > FSPEC_STATE_MAX)
        return err_set(c->e, ERR_CONFIG,
                       "%s: the aggregates need %d state words and up to %zu bytes per entity, "
                       "at most %d and %d",
                       p->a.file, p->words, p->max_bytes, FSPEC_STATE_WORDS, FSPEC_STATE_MAX);
    if (!(m = open_memstream(&buf, &len)))
        return err_set(c->e, ERR_NOMEM, "out of memory");
    describe(p, m, 1);
    fflush(m);
    p->layout_hash = (uint32_t)fnv64(14695981039346656037ULL, buf, len);
    describe(p, m, 0);
    fclose(m);
    p->hash = fnv64(14695981039346656037ULL, buf, len);
    p->plan_text = buf;
    return ERR_OK;
}

/* Renumbers registers so that output i lives in register 1 + i: the vector
 * is then one conversion loop. Not when one register feeds two outputs. */
static void renumber_outputs(struct fspec *p)
{
    int map[REG_MAX], used[REG_MAX] = {0}, next = 1 + p->dim;

    for (int i = 0; i < p->dim; i++)
        if (used[p->out_reg[i]]++)
            return;
    map[0] = 0;
    for (int r = 1; r < p->nreg; r++)
        map[r] = -1;
    for (int i = 0; i < p->dim; i++)
        map[p->out_reg[i]] = 1 + i;
    for (int r = 1; r < p->nreg; r++)
        if (map[r] < 0)
            map[r] = next++;
#define MAP(x) ((x) = (x) >= 0 ? map[(x)] : (x))
    for (int i = 0; i < p->nload; i++)
        MAP(p->loads[i].reg);
    for (int i = 0; i < p->nconst; i++)
        MAP(p->const_reg[i]);
    for (int i = 0; i < p->nins; i++) {
        MAP(p->ins[i].dst);
        MAP(p->ins[i].a);
        MAP(p->ins[i].b);
        MAP(p->ins[i].c);
    }
    for (int g = 0; g < p->nring; g++) {
        MAP(p->rings[g].r_count);
        for (int k = 0; k < p->rings[g].ncols; k++) {
            struct col *c = &p->rings[g].cols[k];
            MAP(c->reg_v);
            MAP(c->r_sum);
            MAP(c->r_n);
            MAP(c->r_sq);
            MAP(c->r_min);
            MAP(c->r_max);
        }
    }
    for (int i = 0; i < p->nmom; i++)
        MAP(p->moms[i].reg_v);
    for (int i = 0; i < p->nlast; i++)
        MAP(p->lasts[i].reg_v);
    for (int i = 0; i < p->a.nfeat; i++)
        MAP(p->feat_reg[i]);
    for (int i = 0; i < FS_FIELD_MAX; i++)
        MAP(p->field_reg[i]);
    for (int i = 0; i < p->dim; i++)
        MAP(p->out_reg[i]);
#undef MAP
    p->out_direct = 1;
}

static int compile(struct fspec *p, struct err *e)
{
    struct fs_ast *a = &p->a;
    struct cc c = {.p = p, .e = e};
    int rc;

    for (int i = 0; i < FS_FIELD_MAX; i++)
        p->field_reg[i] = -1;
    p->nreg = 1; /* register 0 holds 0: the operand of an unused slot */
    c.mark = calloc((size_t)a->nfeat, sizeof(int));
    c.path = calloc((size_t)a->nfeat + 1, sizeof(int));
    p->ins = calloc(FS_NODE_MAX + FS_FEAT_MAX, sizeof(*p->ins));
    p->codes = calloc((size_t)a->nfeat, sizeof(*p->codes));
    if (!c.mark || !c.path || !p->ins || !p->codes) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((rc = check_names(&c)))
        goto out;
    for (int i = 0; i < a->nfeat; i++)
        if ((rc = compile_feat(&c, i)))
            goto out;
    p->dim = a->nout ? a->nout : a->nfeat;
    for (int i = 0; i < p->dim; i++) {
        int fi = a->nout ? feat_of(p, a->out[i]) : i;
        p->out_reg[i] = p->feat_reg[fi];
        p->names[i] = a->feats[fi].name;
    }
    p->names[p->dim] = NULL;
    renumber_outputs(p);
    rc = finish(&c);
out:
    free(c.mark);
    free(c.path);
    return rc;
}

static struct fspec *open_text(const char *text, size_t len, const char *name, const char *dir,
                               const char *schema_json, struct reg *r, struct err *e)
{
    struct fspec *p = calloc(1, sizeof(*p));

    if (!p) {
        err_set(e, ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (fs_parse(&p->a, text, len, name, dir, schema_json, r, e) || compile(p, e)) {
        fspec_close(p);
        return NULL;
    }
    return p;
}

struct fspec *fspec_open_text(const char *text, size_t len, const char *name, const char *dir,
                              const char *schema_json, struct err *e)
{
    return open_text(text, len, name, dir, schema_json, NULL, e);
}

struct fspec *fspec_open(const char *path, struct err *e)
{
    return fspec_open_reg(path, NULL, e);
}

struct fspec *fspec_open_reg(const char *path, struct reg *r, struct err *e)
{
    FILE *f = fopen(path, "rb");
    char *text, dir[FS_PATH_MAX];
    const char *slash = strrchr(path, '/');
    size_t n;
    struct fspec *p;

    if (!f) {
        err_set(e, ERR_IO, "%s: cannot open", path);
        return NULL;
    }
    if (!(text = malloc(FSPEC_FILE_MAX + 1))) {
        fclose(f);
        err_set(e, ERR_NOMEM, "out of memory");
        return NULL;
    }
    n = fread(text, 1, FSPEC_FILE_MAX + 1, f);
    fclose(f);
    snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
    p = open_text(text, n, path, dir, NULL, r, e);
    free(text);
    return p;
}

void fspec_close(struct fspec *p)
{
    if (!p)
        return;
    fs_ast_free(&p->a);
    free(p->ins);
    free(p->codes);
    free(p->plan_text);
    free(p);
}

/* ---- binding ---- */

static int kind_fits(const struct fs_field *f, enum fspec_kind k)
{
    if (f->is_string)
        return k == FSPEC_STR;
    if (f->is_bool)
        return k == FSPEC_TRI || k == FSPEC_F64;
    if (f->is_long)
        return k == FSPEC_I64 || k == FSPEC_F64;
    return k == FSPEC_F64;
}

static const struct fspec_binding *find_binding(const struct fspec_binding *b, size_t n,
                                                const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(b[i].field, name) == 0)
            return &b[i];
    return NULL;
}

/* Plain doubles first (one tight loop per event), and the registers the
 * state update reads listed apart, so that it loads nothing else. */
static void sort_loads(struct fspec *p)
{
    struct load tmp[FS_FIELD_MAX];
    int k = 0;

    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < p->nload; i++)
            if ((p->loads[i].kind == FSPEC_F64) == (pass == 0))
                tmp[k++] = p->loads[i];
    memcpy(p->loads, tmp, sizeof(tmp[0]) * (size_t)p->nload);
    p->nf64 = 0;
    while (p->nf64 < p->nload && p->loads[p->nf64].kind == FSPEC_F64)
        p->nf64++;
    p->nagg_load = 0;
    for (int i = 0; i < p->nload; i++) {
        int r = p->loads[i].reg, used = 0;
        for (int g = 0; g < p->nring; g++)
            for (int c = 0; c < p->rings[g].ncols; c++)
                used |= p->rings[g].cols[c].reg_v == r;
        for (int m = 0; m < p->nmom; m++)
            used |= p->moms[m].reg_v == r;
        for (int m = 0; m < p->nlast; m++)
            used |= p->lasts[m].reg_v == r;
        if (used)
            p->agg_load[p->nagg_load++] = i;
    }
}

int fspec_bind(struct fspec *p, const struct fspec_binding *b, size_t n, struct err *e)
{
    const struct fspec_binding *t = find_binding(b, n, p->a.time);

    if (!t || t->kind != FSPEC_I64)
        return err_set(e, ERR_CONFIG, "%s: input.time \"%s\" is not an int64 of this record",
                       p->a.file, p->a.time);
    p->time_off = t->off;
    for (int i = 0; i < p->nload; i++) {
        const struct fs_field *f = &p->a.fields[p->loads[i].field];
        const struct fspec_binding *x = find_binding(b, n, f->name);
        if (!x || !kind_fits(f, x->kind) || x->kind == FSPEC_STR)
            return err_set(e, ERR_CONFIG, "%s: field \"%s\" %s", p->a.file, f->name,
                           x ? "has another type in this record" : "is not in this record");
        p->loads[i].kind = x->kind;
        p->loads[i].off = x->off;
    }
    for (int i = 0; i < p->ncodes; i++) {
        const struct fs_field *f = &p->a.fields[p->codes[i].field];
        const struct fspec_binding *x = find_binding(b, n, f->name);
        if (!x || x->kind != FSPEC_STR || x->cap == 0)
            return err_set(e, ERR_CONFIG, "%s: string field \"%s\" %s", p->a.file, f->name,
                           x ? "has another type in this record" : "is not in this record");
        p->codes[i].off = x->off;
        p->codes[i].cap = x->cap;
    }
    sort_loads(p);
    p->bound = 1;
    return ERR_OK;
}

int fspec_row_init(const struct fspec *p, struct fspec_row *r)
{
    size_t n = (size_t)p->a.nfield ? (size_t)p->a.nfield : 1;

    r->num = calloc(n, sizeof(double));
    r->str = calloc(n, FSPEC_NAME_MAX);
    if (!r->num || !r->str) {
        fspec_row_free(r);
        return ERR_NOMEM;
    }
    fspec_row_clear(p, r);
    return ERR_OK;
}

void fspec_row_clear(const struct fspec *p, struct fspec_row *r)
{
    r->time_ms = 0;
    for (int i = 0; i < p->a.nfield; i++) {
        r->num[i] = NAN;
        r->str[(size_t)i * FSPEC_NAME_MAX] = '\0';
    }
}

void fspec_row_free(struct fspec_row *r)
{
    free(r->num);
    free(r->str);
    r->num = NULL;
    r->str = NULL;
}

/* A row's values live behind pointers: the plan reads them through a
 * per-row base, so the generic binding uses negative "offsets" resolved in
 * load_num/load_str below. Kept simple: bind_row marks the plan. */
int fspec_bind_row(struct fspec *p, struct err *e)
{
    (void)e;
    for (int i = 0; i < p->nload; i++) {
        p->loads[i].kind = -1; /* row: num[field] */
        p->loads[i].off = (size_t)p->loads[i].field;
    }
    for (int i = 0; i < p->ncodes; i++) {
        p->codes[i].off = (size_t)-1 - (size_t)p->codes[i].field; /* row: str[field] */
        p->codes[i].cap = FSPEC_NAME_MAX;
    }
    p->time_off = (size_t)-1;
    sort_loads(p); /* row loads are not FSPEC_F64: all take the general path */
    p->bound = 2;
    return ERR_OK;
}

/* ---- description: the layout (hashed into states) and the plan ---- */

static const char *fname(const struct fspec *p, int f)
{
    return p->a.fields[f].name;
}

static void describe(const struct fspec *p, FILE *out, int layout_only)
{
    static const char *const cn[] = {"sum", "n", "sumsq", "min", "max"};

    if (layout_only) {
        fprintf(out, "state: last_event_ms + %d words\n", p->words);
        for (int i = 0; i < p->nmom; i++)
            fprintf(out, "  w%d: moments of %s (n, mean, m2)\n", p->moms[i].word0,
                    fname(p, p->moms[i].field));
        for (int i = 0; i < p->nlast; i++)
            fprintf(out, "  w%d: last %s (present, value)\n", p->lasts[i].word0,
                    fname(p, p->lasts[i].field));
        for (int g = 0; g < p->nring; g++) {
            const struct ring *r = &p->rings[g];
            fprintf(out, "  w%d: ring %d: %d buckets of %lld ms, per bucket: id count", r->word0,
                    g, r->n, (long long)r->width);
            for (int k = 0; k < r->ncols; k++)
                for (int b = 0; b < 5; b++)
                    if (r->cols[k].flags & (1 << b))
                        fprintf(out, " %s(%s)", cn[b], fname(p, r->cols[k].field));
            fprintf(out, "\n");
        }
        return;
    }
    fprintf(out, "plan %s: input %s key %s time %s%s%s\n", p->a.name, p->a.schema, p->a.key,
            p->a.time, p->a.event_id[0] ? " event_id " : "", p->a.event_id);
    for (int i = 0; i < p->nload; i++)
        fprintf(out, "  r%d = field %s\n", p->loads[i].reg, fname(p, p->loads[i].field));
    for (int i = 0; i < p->nconst; i++)
        fprintf(out, "  r%d = %.17g\n", p->const_reg[i], p->const_k[i]);
    for (int g = 0; g < p->nring; g++) {
        const struct ring *r = &p->rings[g];
        fprintf(out, "  window ring %d:", g);
        if (r->r_count >= 0)
            fprintf(out, " r%d = count", r->r_count);
        for (int k = 0; k < r->ncols; k++) {
            const struct col *c = &r->cols[k];
            const int regs[5] = {c->r_sum, c->r_n, c->r_sq, c->r_min, c->r_max};
            for (int b = 0; b < 5; b++)
                if (c->flags & (1 << b))
                    fprintf(out, " r%d = %s(r%d)", regs[b], cn[b], c->reg_v);
        }
        fprintf(out, "\n");
    }
    for (int i = 0; i < p->nins; i++) {
        const struct ins *in = &p->ins[i];
        static const char *const extra[] = {"codes", "mean", "std", "since_prev", "zscore",
                                            "last"};
        fprintf(out, "  r%d = %s", in->dst,
                in->op < OP_COUNT_ ? fs_op_name(in->op) : extra[in->op - OP_COUNT_]);
        if (in->op == OP_CODES) {
            const struct codes *cd = &p->codes[in->aux];
            fprintf(out, "(%s:", fname(p, cd->field));
            for (int k = 0; k < cd->ncats; k++)
                fprintf(out, " %s=%.17g", cd->cats[k], cd->code[k]);
            fprintf(out, "; unknown %.17g, missing %.17g)\n", cd->unknown, cd->missing);
            continue;
        }
        if (in->op == OP_ZSCORE || in->op == OP_LAST)
            fprintf(out, "[%s]", fname(p, in->op == OP_LAST ? p->lasts[in->aux].field
                                                             : p->moms[in->aux].field));
        fprintf(out, "(");
        if (in->a > 0)
            fprintf(out, "r%d", in->a);
        if (in->b > 0)
            fprintf(out, ", r%d", in->b);
        if (in->c > 0)
            fprintf(out, ", r%d", in->c);
        fprintf(out, ")\n");
    }
    fprintf(out, "output %s (%d):\n", p->a.name, p->dim);
    for (int i = 0; i < p->dim; i++)
        fprintf(out, "  %d %s = r%d\n", i, p->names[i], p->out_reg[i]);
}

void fspec_print(const struct fspec *p, FILE *out)
{
    fprintf(out, "spec %s: %d features out, plan hash %016llx, state layout %08x\n", p->a.name,
            p->dim, (unsigned long long)p->hash, p->layout_hash);
    fprintf(out, "state per entity: %zu bytes in memory, at most %zu bytes encoded\n",
            sizeof(int64_t) + (size_t)p->words * 8, p->max_bytes);
    if (p->a.subject[0])
        fprintf(out, "input schema: %s\n", p->a.schema_src);
    fputs(p->plan_text, out);
}

/* ---- accessors ---- */

size_t fspec_num_fields(const struct fspec *p)
{
    return (size_t)p->a.nfield;
}

const char *fspec_field_name(const struct fspec *p, size_t i)
{
    return i < (size_t)p->a.nfield ? p->a.fields[i].name : NULL;
}

int fspec_field_is_string(const struct fspec *p, size_t i)
{
    return i < (size_t)p->a.nfield && p->a.fields[i].is_string;
}

int fspec_field_index(const struct fspec *p, const char *name)
{
    return field_of(p, name);
}

const char *fspec_key_field(const struct fspec *p)
{
    return p->a.key;
}

const char *fspec_schema_path(const struct fspec *p)
{
    return p->a.schema_path;
}

const char *fspec_schema_text(const struct fspec *p)
{
    return p->a.schema_text;
}

const char *fspec_schema_source(const struct fspec *p)
{
    return p->a.schema_src;
}

int32_t fspec_schema_id(const struct fspec *p)
{
    return p->a.schema_id;
}

const char *fspec_record_name(const struct fspec *p)
{
    return p->a.record;
}

const char *fspec_event_id_field(const struct fspec *p)
{
    return p->a.event_id;
}

const char *fspec_time_field(const struct fspec *p)
{
    return p->a.time;
}

const char *fspec_name(const struct fspec *p)
{
    return p->a.name;
}

size_t fspec_dim(const struct fspec *p)
{
    return (size_t)p->dim;
}

const char *const *fspec_names(const struct fspec *p)
{
    return p->names;
}

int fspec_index(const struct fspec *p, const char *name)
{
    for (int i = 0; name && i < p->dim; i++)
        if (strcmp(p->names[i], name) == 0)
            return i;
    return -1;
}

uint64_t fspec_hash(const struct fspec *p)
{
    return p->hash;
}

uint32_t fspec_layout_hash(const struct fspec *p)
{
    return p->layout_hash;
}

size_t fspec_state_words(const struct fspec *p)
{
    return (size_t)p->words;
}

size_t fspec_state_max_bytes(const struct fspec *p)
{
    return p->max_bytes;
}
