/* cat_: the item catalogue (common/streams/catalog.h). */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "log.h"

#define CAT_HASH 8192 /* name slots: twice the most names of either kind */

struct names {
    int n, max;
    char (*name)[CAT_CATEGORY_MAX];
    int slot[CAT_HASH]; /* index + 1, 0 empty */
};

struct chain {
    int64_t *next, *prev; /* per item; -1 none */
    int64_t *head;        /* per name */
    int64_t (*top)[CAT_TOP];
    int *n_top;
};

struct catalog {
    int64_t max, model_items;
    size_t count;
    int64_t unseen_held;
    unsigned char *present;
    int16_t *cat, *reg;
    int64_t *created;
    double *price;
    uint32_t *clicks, *imps, *nclicks;
    uint32_t *pend_imps, *pend_clicks; /* not yet in Redis */
    int64_t *dirty;                    /* ids with pending additions */
    size_t n_dirty;
    int dim;     /* embedding size, 0 until the first record with one */
    float *emb;  /* max x dim, allocated with the first embedding */
    float *unit; /* max x dim: emb / |emb| (zeros for a zero vector): the content
                    source's cosines are then one float dot product each */
    unsigned char *has_emb;
    struct names cats, regs;
    struct chain cc, rc;
    int64_t newest[CAT_NEW_MAX]; /* by created time, newest first */
    int n_newest;
    int64_t *unseen; /* ids >= model_items with an embedding */
    int64_t *unseen_pos;
    size_t n_unseen;
};

static int chain_alloc(struct chain *ch, int64_t max, int names)
{
    ch->next = malloc((size_t)max * sizeof(int64_t));
    ch->prev = malloc((size_t)max * sizeof(int64_t));
    ch->head = malloc((size_t)names * sizeof(int64_t));
    ch->top = calloc((size_t)names, sizeof(*ch->top));
    ch->n_top = calloc((size_t)names, sizeof(int));
    if (!ch->next || !ch->prev || !ch->head || !ch->top || !ch->n_top)
        return -1;
    for (int64_t i = 0; i < max; i++)
        ch->next[i] = ch->prev[i] = -1;
    for (int i = 0; i < names; i++)
        ch->head[i] = -1;
    return 0;
}

static void chain_free(struct chain *ch)
{
    free(ch->next);
    free(ch->prev);
    free(ch->head);
    free(ch->top);
    free(ch->n_top);
}

int cat_open(struct catalog **out, int64_t max_items, int64_t model_items, struct err *e)
{
    struct catalog *c;
    size_t m = (size_t)max_items;

    *out = NULL;
    if (max_items < 1 || max_items > ((int64_t)1 << 31))
        return err_set(e, ERR_CONFIG, "clickstream.catalog_max_items %lld: must be 1..2^31",
                       (long long)max_items);
    if (!(c = calloc(1, sizeof(*c))))
        return err_set(e, ERR_NOMEM, "out of memory for the catalogue");
    c->max = max_items;
    c->model_items = model_items;
    c->present = calloc(m, 1);
    c->has_emb = calloc(m, 1);
    c->cat = malloc(m * sizeof(int16_t));
    c->reg = malloc(m * sizeof(int16_t));
    c->created = calloc(m, sizeof(int64_t));
    c->price = calloc(m, sizeof(double));
    c->clicks = calloc(m, sizeof(uint32_t));
    c->imps = calloc(m, sizeof(uint32_t));
    c->nclicks = calloc(m, sizeof(uint32_t));
    c->pend_imps = calloc(m, sizeof(uint32_t));
    c->pend_clicks = calloc(m, sizeof(uint32_t));
    c->dirty = calloc(m, sizeof(int64_t));
    c->unseen = malloc(m * sizeof(int64_t));
    c->unseen_pos = malloc(m * sizeof(int64_t));
    c->cats.max = CAT_MAX_CATEGORIES;
    c->regs.max = CAT_MAX_REGIONS;
    c->cats.name = calloc(CAT_MAX_CATEGORIES, sizeof(*c->cats.name));
    c->regs.name = calloc(CAT_MAX_REGIONS, sizeof(*c->regs.name));
    if (!c->present || !c->has_emb || !c->cat || !c->reg || !c->created || !c->price ||
        !c->clicks || !c->imps || !c->nclicks || !c->pend_imps || !c->pend_clicks || !c->dirty ||
        !c->unseen || !c->unseen_pos || !c->cats.name ||
        !c->regs.name || chain_alloc(&c->cc, max_items, CAT_MAX_CATEGORIES) ||
        chain_alloc(&c->rc, max_items, CAT_MAX_REGIONS)) {
        cat_close(c);
        return err_set(e, ERR_NOMEM, "out of memory for a catalogue of %lld items",
                       (long long)max_items);
    }
    for (size_t i = 0; i < m; i++) {
        c->cat[i] = c->reg[i] = -1;
        c->unseen_pos[i] = -1;
    }
    *out = c;
    return ERR_OK;
}

void cat_close(struct catalog *c)
{
    if (!c)
        return;
    void *a[] = {c->present, c->has_emb, c->cat,    c->reg,       c->created,   c->price,
                 c->clicks,  c->imps,    c->nclicks, c->unseen, c->unseen_pos, c->cats.name,
                 c->regs.name, c->emb, c->unit, c->pend_imps, c->pend_clicks, c->dirty};
    for (size_t i = 0; i < sizeof(a) / sizeof(a[0]); i++)
        free(a[i]);
    chain_free(&c->cc);
    chain_free(&c->rc);
    free(c);
}

/* ---- names ---- */

static uint32_t hash(const char *s)
{
    uint32_t h = 2166136261u;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 16777619u;
    return h;
}

/* The name's number, interning it when add; -1 unknown (or full). */
static int name_id(struct names *n, const char *s, int add)
{
    uint32_t h = hash(s) % CAT_HASH;

    for (int probe = 0; probe < CAT_HASH; probe++, h = (h + 1) % CAT_HASH) {
        int v = n->slot[h];
        if (!v) {
            if (!add || n->n == n->max)
                return -1;
            snprintf(n->name[n->n], CAT_CATEGORY_MAX, "%s", s);
            n->slot[h] = ++n->n;
            return n->n - 1;
        }
        if (strcmp(n->name[v - 1], s) == 0)
            return v - 1;
    }
    return -1;
}

/* ---- chains and lists ---- */

static void chain_remove(struct chain *ch, int name, int64_t id)
{
    int64_t p = ch->prev[id], nx = ch->next[id];

    if (p >= 0)
        ch->next[p] = nx;
    else
        ch->head[name] = nx;
    if (nx >= 0)
        ch->prev[nx] = p;
    ch->next[id] = ch->prev[id] = -1;
    for (int i = 0; i < ch->n_top[name]; i++)
        if (ch->top[name][i] == id) {
            memmove(&ch->top[name][i], &ch->top[name][i + 1],
                    (size_t)(ch->n_top[name] - i - 1) * sizeof(int64_t));
            ch->n_top[name]--;
            break;
        }
}

static void chain_push(struct chain *ch, int name, int64_t id)
{
    ch->next[id] = ch->head[name];
    ch->prev[id] = -1;
    if (ch->head[name] >= 0)
        ch->prev[ch->head[name]] = id;
    ch->head[name] = id;
}

/* id gained a click: it moves up its list (kept sorted by clicks). */
static void top_offer(struct chain *ch, int name, int64_t id, const uint32_t *clicks)
{
    int64_t *t = ch->top[name];
    int n = ch->n_top[name], i;

    for (i = 0; i < n && t[i] != id; i++)
        ;
    if (i == n) {
        if (n == CAT_TOP && clicks[t[n - 1]] >= clicks[id])
            return;
        i = n < CAT_TOP ? n++ : n - 1;
        t[i] = id;
        ch->n_top[name] = n;
    }
    for (; i > 0 && clicks[t[i - 1]] < clicks[id]; i--) {
        t[i] = t[i - 1];
        t[i - 1] = id;
    }
}

static void newest_remove(struct catalog *c, int64_t id)
{
    for (int i = 0; i < c->n_newest; i++)
        if (c->newest[i] == id) {
            memmove(&c->newest[i], &c->newest[i + 1],
                    (size_t)(c->n_newest - i - 1) * sizeof(int64_t));
            c->n_newest--;
            return;
        }
}

static void newest_add(struct catalog *c, int64_t id)
{
    int64_t t = c->created[id];
    int i = c->n_newest;

    if (i == CAT_NEW_MAX) {
        if (c->created[c->newest[i - 1]] >= t)
            return;
        i--;
    } else {
        c->n_newest++;
    }
    for (; i > 0 && c->created[c->newest[i - 1]] < t; i--)
        c->newest[i] = c->newest[i - 1];
    c->newest[i] = id;
}

static void unseen_set(struct catalog *c, int64_t id, int on)
{
    int64_t p = c->unseen_pos[id];

    if (on && p < 0) {
        c->unseen_pos[id] = (int64_t)c->n_unseen;
        c->unseen[c->n_unseen++] = id;
    } else if (!on && p >= 0) {
        int64_t last = c->unseen[--c->n_unseen];
        c->unseen[p] = last;
        c->unseen_pos[last] = p;
        c->unseen_pos[id] = -1;
    }
}

/* ---- upsert ---- */

static int check(struct catalog *c, const struct cat_item *it, struct err *e)
{
    if (it->id < 0 || it->id >= c->max)
        return err_set(e, ERR_DECODE, "catalogue item %lld: field id out of range 0..%lld",
                       (long long)it->id, (long long)c->max - 1);
    if (!isfinite(it->price) || it->price < 0)
        return err_set(e, ERR_DECODE, "catalogue item %lld: field price %g: must be finite, >= 0",
                       (long long)it->id, it->price);
    if (it->created_ms <= 0)
        return err_set(e, ERR_DECODE, "catalogue item %lld: field created %lld: must be > 0",
                       (long long)it->id, (long long)it->created_ms);
    if (it->n_emb < 0 || it->n_emb > CAT_MAX_DIM || (it->n_emb && c->dim && it->n_emb != c->dim))
        return err_set(e, ERR_DECODE,
                       "catalogue item %lld: field embedding has %d values, the catalogue's "
                       "have %d",
                       (long long)it->id, it->n_emb, c->dim);
    for (int j = 0; j < it->n_emb; j++)
        if (!isfinite(it->emb[j]))
            return err_set(e, ERR_DECODE, "catalogue item %lld: field embedding[%d] not finite",
                           (long long)it->id, j);
    if (memchr(it->category, 0, CAT_CATEGORY_MAX) == NULL ||
        memchr(it->region, 0, CAT_REGION_MAX) == NULL)
        return err_set(e, ERR_DECODE, "catalogue item %lld: field category or region too long",
                       (long long)it->id);
    /* names go back to JSON as they are (the Redis copy, cat_to_json) */
    for (const char *p = it->category; *p; p++)
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
            return err_set(e, ERR_DECODE,
                           "catalogue item %lld: field category: a quote, backslash or control "
                           "character",
                           (long long)it->id);
    for (const char *p = it->region; *p; p++)
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
            return err_set(e, ERR_DECODE,
                           "catalogue item %lld: field region: a quote, backslash or control "
                           "character",
                           (long long)it->id);
    return ERR_OK;
}

int cat_upsert(struct catalog *c, const struct cat_item *it, struct err *e)
{
    int64_t id = it->id;
    int ci = -1, ri = -1;

    if (check(c, it, e))
        return e->code;
    if (it->category[0] && (ci = name_id(&c->cats, it->category, 1)) < 0)
        return err_set(e, ERR_DECODE,
                       "catalogue item %lld: field category \"%s\": more than %d categories",
                       (long long)id, it->category, CAT_MAX_CATEGORIES);
    if (it->region[0] && (ri = name_id(&c->regs, it->region, 1)) < 0)
        return err_set(e, ERR_DECODE,
                       "catalogue item %lld: field region \"%s\": more than %d regions",
                       (long long)id, it->region, CAT_MAX_REGIONS);
    if (it->n_emb && !c->emb) { /* the first embedding sets the size, once */
        if (!(c->emb = calloc((size_t)c->max * (size_t)it->n_emb, sizeof(float))) ||
            !(c->unit = calloc((size_t)c->max * (size_t)it->n_emb, sizeof(float)))) {
            free(c->emb);
            c->emb = NULL;
            return err_set(e, ERR_NOMEM, "out of memory for the catalogue's embeddings");
        }
        c->dim = it->n_emb;
    }
    if (c->present[id]) { /* a replaced record leaves its old lists */
        if (c->cat[id] >= 0)
            chain_remove(&c->cc, c->cat[id], id);
        if (c->reg[id] >= 0)
            chain_remove(&c->rc, c->reg[id], id);
        newest_remove(c, id);
    } else {
        c->present[id] = 1;
        c->count++;
        c->unseen_held += id >= c->model_items;
    }
    c->cat[id] = (int16_t)ci;
    c->reg[id] = (int16_t)ri;
    c->created[id] = it->created_ms;
    c->price[id] = it->price;
    if (ci >= 0)
        chain_push(&c->cc, ci, id);
    if (ri >= 0)
        chain_push(&c->rc, ri, id);
    newest_add(c, id);
    c->has_emb[id] = it->n_emb > 0;
    if (it->n_emb) {
        float *u = c->unit + (size_t)id * (size_t)c->dim;
        double n2 = 0;
        memcpy(c->emb + (size_t)id * (size_t)c->dim, it->emb, (size_t)c->dim * sizeof(float));
        for (int j = 0; j < c->dim; j++)
            n2 += (double)it->emb[j] * it->emb[j];
        for (int j = 0; j < c->dim; j++)
            u[j] = n2 > 0 ? (float)(it->emb[j] / sqrt(n2)) : 0.0f;
    }
    unseen_set(c, id, id >= c->model_items && it->n_emb > 0);
    return ERR_OK;
}

/* ---- reads ---- */

int64_t cat_max_items(const struct catalog *c)
{
    return c->max;
}

int64_t cat_model_items(const struct catalog *c)
{
    return c->model_items;
}

size_t cat_count(const struct catalog *c)
{
    return c->count;
}

int64_t cat_count_unseen(const struct catalog *c)
{
    return c->unseen_held;
}

const unsigned char *cat_present(const struct catalog *c)
{
    return c->present;
}

int cat_has(const struct catalog *c, int64_t id)
{
    return id >= 0 && id < c->max && c->present[id];
}

int cat_category(const struct catalog *c, int64_t id)
{
    return cat_has(c, id) ? c->cat[id] : -1;
}

int cat_region(const struct catalog *c, int64_t id)
{
    return cat_has(c, id) ? c->reg[id] : -1;
}

int64_t cat_created_ms(const struct catalog *c, int64_t id)
{
    return cat_has(c, id) ? c->created[id] : 0;
}

double cat_price(const struct catalog *c, int64_t id)
{
    return cat_has(c, id) ? c->price[id] : NAN;
}

const float *cat_embedding(const struct catalog *c, int64_t id, int *dim)
{
    *dim = c->dim;
    return cat_has(c, id) && c->has_emb[id] ? c->emb + (size_t)id * (size_t)c->dim : NULL;
}

const float *cat_unit_embedding(const struct catalog *c, int64_t id, int *dim)
{
    *dim = c->dim;
    return cat_has(c, id) && c->has_emb[id] ? c->unit + (size_t)id * (size_t)c->dim : NULL;
}

static size_t listed(const struct chain *ch, const uint32_t *clicks, int name, int names,
                     int64_t *out, size_t cap)
{
    size_t n = 0;

    if (name < 0 || name >= names)
        return 0;
    for (int i = 0; i < ch->n_top[name] && n < cap; i++)
        out[n++] = ch->top[name][i];
    /* then the chain, skipping the ones above: a top list is short */
    for (int64_t id = ch->head[name]; id >= 0 && n < cap; id = ch->next[id]) {
        int dup = 0; /* an item never clicked is not in the top list */
        for (int i = 0; clicks[id] && i < ch->n_top[name] && !dup; i++)
            dup = ch->top[name][i] == id;
        if (!dup)
            out[n++] = id;
    }
    return n;
}

size_t cat_in_category(const struct catalog *c, int cat, int64_t *out, size_t cap)
{
    return listed(&c->cc, c->clicks, cat, c->cats.n, out, cap);
}

size_t cat_in_region(const struct catalog *c, int reg, int64_t *out, size_t cap)
{
    return listed(&c->rc, c->clicks, reg, c->regs.n, out, cap);
}

size_t cat_newest(const struct catalog *c, int64_t since_ms, int64_t *out, size_t cap)
{
    size_t n = 0;

    for (int i = 0; i < c->n_newest && n < cap && c->created[c->newest[i]] >= since_ms; i++)
        out[n++] = c->newest[i];
    return n;
}

const int64_t *cat_unseen(const struct catalog *c, size_t *n)
{
    *n = c->n_unseen;
    return c->unseen;
}

void cat_click(struct catalog *c, int64_t id)
{
    if (!cat_has(c, id))
        return;
    if (c->clicks[id] < UINT32_MAX)
        c->clicks[id]++;
    if (c->cat[id] >= 0)
        top_offer(&c->cc, c->cat[id], id, c->clicks);
    if (c->reg[id] >= 0)
        top_offer(&c->rc, c->reg[id], id, c->clicks);
}

uint32_t cat_impressions(const struct catalog *c, int64_t id)
{
    return id >= 0 && id < c->max ? c->imps[id] : 0;
}

uint32_t cat_new_clicks(const struct catalog *c, int64_t id)
{
    return id >= 0 && id < c->max ? c->nclicks[id] : 0;
}

void cat_set_counts(struct catalog *c, int64_t id, uint32_t impressions, uint32_t clicks)
{
    if (id >= 0 && id < c->max) {
        c->imps[id] = impressions;
        c->nclicks[id] = clicks;
    }
}

void cat_count_new(struct catalog *c, int64_t id, uint32_t impressions, uint32_t clicks)
{
    if (id < 0 || id >= c->max || (!impressions && !clicks))
        return;
    if (!c->pend_imps[id] && !c->pend_clicks[id])
        c->dirty[c->n_dirty++] = id;
    c->imps[id] += impressions;
    c->nclicks[id] += clicks;
    c->pend_imps[id] += impressions;
    c->pend_clicks[id] += clicks;
}

size_t cat_pending(struct catalog *c, int64_t *ids, uint32_t *imps, uint32_t *clicks, size_t cap)
{
    size_t n = 0;

    while (c->n_dirty && n < cap) {
        int64_t id = c->dirty[--c->n_dirty];
        ids[n] = id;
        imps[n] = c->pend_imps[id];
        clicks[n++] = c->pend_clicks[id];
        c->pend_imps[id] = c->pend_clicks[id] = 0;
    }
    return n;
}

/* ---- parsing: a bounded reader of one flat JSON object ---- */

struct rd {
    const char *p, *end;
};

static void ws(struct rd *r)
{
    while (r->p < r->end && isspace((unsigned char)*r->p))
        r->p++;
}

static int lit(struct rd *r, char ch)
{
    ws(r);
    if (r->p < r->end && *r->p == ch) {
        r->p++;
        return 1;
    }
    return 0;
}

/* A JSON string into out (cap bytes with the NUL); -1 bad, -2 too long. */
static int jstring(struct rd *r, char *out, size_t cap)
{
    size_t n = 0;

    if (!lit(r, '"'))
        return -1;
    while (r->p < r->end && *r->p != '"') {
        char ch = *r->p++;
        if (ch == '\\') {
            if (r->p == r->end)
                return -1;
            ch = *r->p++;
            ch = ch == 'n' ? '\n' : ch == 't' ? '\t' : ch == 'r' ? '\r' : ch;
            if (ch == 'u' || ch == 'b' || ch == 'f')
                return -1; /* not in names we keep */
        }
        if (n + 1 >= cap)
            return -2;
        out[n++] = ch;
    }
    if (r->p == r->end)
        return -1;
    r->p++;
    out[n] = '\0';
    return 0;
}

static int jnumber(struct rd *r, double *v)
{
    char buf[64];
    size_t n = 0;
    char *end;

    ws(r);
    while (r->p < r->end && n < sizeof(buf) - 1 && strchr("+-0123456789.eE", *r->p))
        buf[n++] = *r->p++;
    buf[n] = '\0';
    if (!n)
        return -1;
    errno = 0;
    *v = strtod(buf, &end);
    return *end || errno == ERANGE ? -1 : 0;
}

static int jnull(struct rd *r)
{
    ws(r);
    if (r->end - r->p >= 4 && memcmp(r->p, "null", 4) == 0) {
        r->p += 4;
        return 1;
    }
    return 0;
}

/* Avro's JSON tags a union's value ({"array": [...]}, {"string": "x"}):
 * the tag is skipped, *tagged says whether a '}' must close it. */
static void untag(struct rd *r, int *tagged)
{
    const char *save = r->p;
    char tag[16];

    *tagged = 0;
    if (lit(r, '{') && jstring(r, tag, sizeof(tag)) == 0 && lit(r, ':')) {
        *tagged = 1;
        return;
    }
    r->p = save;
}

static int bad(struct err *e, const struct cat_item *it, const char *field, const char *why)
{
    if (it->id >= 0)
        return err_set(e, ERR_DECODE, "catalogue item %lld: field %s: %s", (long long)it->id,
                       field, why);
    return err_set(e, ERR_DECODE, "catalogue record: field %s: %s", field, why);
}

static int int_of(double v, int64_t *out)
{
    if (!(v == floor(v)) || fabs(v) > 9007199254740992.0)
        return -1;
    *out = (int64_t)v;
    return 0;
}

static int parse_embedding(struct rd *r, struct cat_item *it, struct err *e)
{
    it->n_emb = 0;
    if (!lit(r, '['))
        return bad(e, it, "embedding", "expected an array of numbers or null");
    if (lit(r, ']'))
        return ERR_OK;
    do {
        double v;
        if (it->n_emb == CAT_MAX_DIM)
            return bad(e, it, "embedding", "more than 256 values");
        if (jnumber(r, &v) || !isfinite(v) || fabs(v) > 3.4e38)
            return bad(e, it, "embedding", "a value is not a finite number");
        it->emb[it->n_emb++] = (float)v;
    } while (lit(r, ','));
    return lit(r, ']') ? ERR_OK : bad(e, it, "embedding", "unterminated array");
}

int cat_parse_json(const char *s, size_t len, struct cat_item *it, struct err *e)
{
    struct rd r = {s, s + len};
    int seen_id = 0, seen_created = 0, seen_price = 0;

    memset(it, 0, sizeof(*it));
    it->id = -1;
    if (!lit(&r, '{'))
        return err_set(e, ERR_DECODE, "catalogue record: not a JSON object");
    if (lit(&r, '}'))
        return bad(e, it, "id", "missing");
    do {
        char key[32];
        int tagged, rc = 0;
        double v = 0;
        if (jstring(&r, key, sizeof(key)) || !lit(&r, ':'))
            return err_set(e, ERR_DECODE, "catalogue record: bad or unknown key near byte %td",
                           r.p - s);
        if (jnull(&r))
            continue;
        untag(&r, &tagged);
        if (strcmp(key, "id") == 0) {
            if (jnumber(&r, &v) || int_of(v, &it->id) || it->id < 0) {
                it->id = -1;
                return bad(e, it, "id", "expected an integer >= 0");
            }
            seen_id = 1;
        } else if (strcmp(key, "category") == 0) {
            rc = jstring(&r, it->category, sizeof(it->category));
            if (rc)
                return bad(e, it, "category", rc == -2 ? "longer than 63 bytes" : "expected a string");
        } else if (strcmp(key, "region") == 0) {
            rc = jstring(&r, it->region, sizeof(it->region));
            if (rc)
                return bad(e, it, "region", rc == -2 ? "longer than 31 bytes" : "expected a string");
        } else if (strcmp(key, "price") == 0) {
            if (jnumber(&r, &v) || !isfinite(v))
                return bad(e, it, "price", "expected a finite number");
            it->price = v;
            seen_price = 1;
        } else if (strcmp(key, "created") == 0 || strcmp(key, "created_ms") == 0) {
            if (jnumber(&r, &v) || int_of(v, &it->created_ms))
                return bad(e, it, "created", "expected epoch milliseconds");
            seen_created = 1;
        } else if (strcmp(key, "embedding") == 0) {
            if (parse_embedding(&r, it, e))
                return e->code;
        } else {
            return err_set(e, ERR_DECODE, "catalogue record: unknown field %s", key);
        }
        if (tagged && !lit(&r, '}'))
            return bad(e, it, key, "bad union value");
    } while (lit(&r, ','));
    if (!lit(&r, '}'))
        return err_set(e, ERR_DECODE, "catalogue record: bad JSON near byte %td", r.p - s);
    ws(&r);
    if (r.p != r.end)
        return err_set(e, ERR_DECODE, "catalogue record: bytes after the object");
    if (!seen_id)
        return bad(e, it, "id", "missing");
    if (!seen_price)
        return bad(e, it, "price", "missing");
    if (!seen_created)
        return bad(e, it, "created", "missing");
    return ERR_OK;
}

/* The n-th comma-separated field of line into out (NUL-terminated). */
static int csv_field(const char *line, int n, char *out, size_t cap)
{
    const char *p = line, *q;
    size_t len;

    for (int i = 0; i < n; i++) {
        if (!(p = strchr(p, ',')))
            return -1;
        p++;
    }
    q = p + strcspn(p, ",\r\n");
    len = (size_t)(q - p);
    if (len >= cap)
        return -2;
    memcpy(out, p, len);
    out[len] = '\0';
    return 0;
}

static int csv_col(const char *hdr, const char *name)
{
    char f[64];

    for (int i = 0; csv_field(hdr, i, f, sizeof(f)) != -1; i++) {
        char *s = f;
        while (isspace((unsigned char)*s))
            s++;
        s[strcspn(s, " \t")] = '\0';
        if (strcmp(s, name) == 0)
            return i;
    }
    return -1;
}

static int csv_number(const char *s, double *v)
{
    char *end;

    errno = 0;
    *v = strtod(s, &end);
    while (isspace((unsigned char)*end))
        end++;
    return end == s || *end || errno == ERANGE || !isfinite(*v) ? -1 : 0;
}

int cat_parse_csv(const char *hdr, const char *line, struct cat_item *it, struct err *e)
{
    static const char *const cols[] = {"id", "category", "region", "price", "created",
                                       "embedding"};
    char f[CAT_LINE_MAX];
    double v;

    memset(it, 0, sizeof(*it));
    it->id = -1;
    for (int k = 0; k < 6; k++) {
        int col = csv_col(hdr, cols[k]), rc;
        if (col < 0 && k == 4)
            col = csv_col(hdr, "created_ms");
        if (col < 0) {
            if (k == 1 || k == 2 || k == 5)
                continue; /* optional columns */
            return err_set(e, ERR_DECODE, "catalogue CSV header: no column %s", cols[k]);
        }
        if ((rc = csv_field(line, col, f, sizeof(f))) != 0)
            return bad(e, it, cols[k], rc == -2 ? "too long" : "missing");
        switch (k) {
        case 0:
            if (csv_number(f, &v) || int_of(v, &it->id) || it->id < 0) {
                it->id = -1;
                return bad(e, it, "id", "expected an integer >= 0");
            }
            break;
        case 1:
        case 2:
            if (strlen(f) >= (k == 1 ? sizeof(it->category) : sizeof(it->region)))
                return bad(e, it, cols[k], "too long");
            strcpy(k == 1 ? it->category : it->region, f);
            break;
        case 3:
            if (csv_number(f, &it->price))
                return bad(e, it, "price", "expected a finite number");
            break;
        case 4:
            if (csv_number(f, &v) || int_of(v, &it->created_ms))
                return bad(e, it, "created", "expected epoch milliseconds");
            break;
        default:
            for (char *p = strtok(f, "; \t"); p; p = strtok(NULL, "; \t")) {
                if (it->n_emb == CAT_MAX_DIM)
                    return bad(e, it, "embedding", "more than 256 values");
                if (csv_number(p, &v) || fabs(v) > 3.4e38)
                    return bad(e, it, "embedding", "a value is not a finite number");
                it->emb[it->n_emb++] = (float)v;
            }
        }
    }
    return ERR_OK;
}

int cat_load_file(struct catalog *c, const char *path, size_t *ok, size_t *bad_n,
                  void (*on_ok)(const struct cat_item *it, void *arg), void *arg, struct err *e)
{
    FILE *f = fopen(path, "r");
    struct {
        char line[CAT_LINE_MAX], hdr[CAT_LINE_MAX];
        struct cat_item it;
    } *b;
    char *line, *hdr;
    struct cat_item *it;
    long no = 0;
    int csv = -1;

    *ok = *bad_n = 0;
    if (!f)
        return err_set(e, ERR_CONFIG, "clickstream.catalog %s: %s", path, strerror(errno));
    if (!(b = malloc(sizeof(*b)))) {
        fclose(f);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    line = b->line;
    hdr = b->hdr;
    it = &b->it;
    while (fgets(line, CAT_LINE_MAX, f)) {
        size_t len = strlen(line);
        const char *s = line;
        struct err le = {0};
        no++;
        if (len == CAT_LINE_MAX - 1 && line[len - 1] != '\n') {
            int ch;
            while ((ch = fgetc(f)) != EOF && ch != '\n')
                ;
            log_warn("%s:%ld: catalogue record longer than %d bytes, skipped", path, no,
                     CAT_LINE_MAX - 2);
            (*bad_n)++;
            continue;
        }
        while (*s && isspace((unsigned char)*s))
            s++;
        if (!*s || *s == '#')
            continue;
        if (csv < 0) {
            csv = *s != '{';
            if (csv) { /* the header line */
                snprintf(hdr, CAT_LINE_MAX, "%s", s);
                continue;
            }
        }
        if ((csv ? cat_parse_csv(hdr, s, it, &le) : cat_parse_json(s, strlen(s), it, &le)) ||
            cat_upsert(c, it, &le)) {
            log_warn("%s:%ld: %s (record skipped)", path, no, le.msg);
            (*bad_n)++;
            continue;
        }
        (*ok)++;
        if (on_ok)
            on_ok(it, arg);
    }
    free(b);
    fclose(f);
    return ERR_OK;
}

size_t cat_to_json(const struct cat_item *it, char *buf, size_t cap)
{
    size_t n;
    int w;

    /* names are written as they are: the parser refuses quotes and escapes
     * it cannot read back, so a stored record always parses */
    w = snprintf(buf, cap,
                 "{\"id\":%lld,\"category\":\"%s\",\"region\":\"%s\",\"price\":%.17g,"
                 "\"created\":%lld,\"embedding\":",
                 (long long)it->id, it->category, it->region, it->price,
                 (long long)it->created_ms);
    if (w < 0 || (size_t)w >= cap)
        return 0;
    n = (size_t)w;
    if (!it->n_emb) {
        w = snprintf(buf + n, cap - n, "null}");
    } else {
        for (int j = 0; j < it->n_emb; j++) {
            w = snprintf(buf + n, cap - n, "%c%.9g", j ? ',' : '[', (double)it->emb[j]);
            if (w < 0 || (size_t)w >= cap - n)
                return 0;
            n += (size_t)w;
        }
        w = snprintf(buf + n, cap - n, "]}");
    }
    if (w < 0 || (size_t)w >= cap - n)
        return 0;
    return n + (size_t)w;
}
