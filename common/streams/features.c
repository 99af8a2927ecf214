/* common/streams/features.c: the transactions entry points of the feature module.
 *
 * What is computed is not here: it is the active feature spec (the built-in
 * models/txn-v1.yaml, or features.spec), compiled once by common/streams/fspec.c.
 * This file binds that plan to struct txn_event, validates events, and
 * keeps the hash of a vector. Pure functions given the plan: the worker,
 * `streamml featurize` and replays get bit-identical vectors.
 */
#include "features.h"
#include "evtime.h"

#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fspec_builtin.h" /* generated from models/txn-v1.yaml and its schema */
#include "log.h"
#include "registry.h"

/* 2000-01-01T00:00:00Z and 2100-01-01T00:00:00Z in ms. */
#define TIME_MIN_MS 946684800000LL
#define TIME_MAX_MS 4102444800000LL

#define MONEY_MAX 1e12
#define COUNT_MAX 1e6
#define MONTHS_MAX 1560.0 /* 130 years */

/* ---- the plan ---- */

/* TransactionEvent's fields (schemas/transaction_event.avsc) in struct
 * txn_event: how a plan reads them, matched by name once at load. */
#define NUM(f) {#f, FSPEC_F64, offsetof(struct txn_event, f), 0}
#define STR(f) {#f, FSPEC_STR, offsetof(struct txn_event, f), sizeof(((struct txn_event *)0)->f)}
static const struct fspec_binding txn_binding[] = {
    STR(event_id),
    STR(user_id),
    {"event_time", FSPEC_I64, offsetof(struct txn_event, event_time_ms), 0},
    NUM(amount),
    NUM(income),
    NUM(expenses),
    NUM(assets),
    NUM(debt),
    NUM(price),
    NUM(term_months),
    NUM(seniority_years),
    NUM(age),
    STR(home),
    STR(marital),
    STR(job),
    {"past_records", FSPEC_TRI, offsetof(struct txn_event, past_records), 0},
    NUM(credit_limit),
    NUM(credit_used),
    NUM(payments_on_time),
    NUM(payments_late),
    NUM(inquiries_6m),
    NUM(accounts_open),
    NUM(accounts_opened_12m),
    NUM(bankruptcies),
    NUM(collections),
    NUM(oldest_account_months),
    NUM(avg_account_age_months),
};
#undef NUM
#undef STR

static struct fspec *builtin, *active;
static int active_rec; /* the active plan reads its own record (ev->rec) */
static int frozen;     /* a worker serves the active plan (feat_txn_freeze) */
static pthread_once_t builtin_once = PTHREAD_ONCE_INIT;

static int bind_txn(struct fspec *p, struct err *e)
{
    if (fspec_bind(p, txn_binding, sizeof(txn_binding) / sizeof(txn_binding[0]), e))
        return e->code;
    return ERR_OK;
}

/* A spec on TransactionEvent reads struct txn_event by offset; one on any
 * other record reads the row its events carry (ev->rec). */
static int is_txn_schema(const struct fspec *p)
{
    return strcmp(fspec_record_name(p), "TransactionEvent") == 0;
}

/* The built-in spec is part of the binary: failing to compile it is a build
 * defect (tests/test_spec.c), not an input error. */
static void builtin_open(void)
{
    struct err e = {0};

    struct fspec *p = fspec_open_text(txn_v1_yaml, sizeof(txn_v1_yaml) - 1,
                                      "models/txn-v1.yaml (built in)", NULL, txn_v1_avsc, &e);

    if (!p || bind_txn(p, &e)) {
        fprintf(stderr, "streamml: built-in feature spec: %s\n", e.msg);
        abort();
    }
    __atomic_store_n(&builtin, p, __ATOMIC_RELEASE);
}

const struct fspec *feat_txn_spec(void)
{
    const struct fspec *b;

    if (active)
        return active;
    /* per event: skip pthread_once once the built-in plan is published */
    if ((b = __atomic_load_n(&builtin, __ATOMIC_ACQUIRE)))
        return b;
    pthread_once(&builtin_once, builtin_open);
    return builtin;
}

/* A replaced plan is never freed: a thread may still be reading it (a
 * model reload opens scorers while events are scored). One per change, kept
 * reachable in this list (LeakSanitizer reported them lost under make
 * sanitize, test_spec exiting 1); a full list keeps the plan active. */
#define RETIRED_MAX 256
static const struct fspec *retired[RETIRED_MAX];
static size_t n_retired;

static int retire_active(struct err *e)
{
    if (!active)
        return ERR_OK;
    if (n_retired == RETIRED_MAX)
        return err_set(e, ERR_CONFIG,
                       "features: %d feature specs replaced in one process: restart it",
                       RETIRED_MAX);
    retired[n_retired++] = active;
    return ERR_OK;
}

void feat_txn_freeze(int on)
{
    frozen = on;
}

/* A serving worker's plan stays until a restart: its batch rows, stored
 * states and the scorers' feature maps were made for it. A reload naming
 * the same spec unchanged goes on; a changed one is refused naming what
 * changed and what a restart does to stored state. The plan compiled to
 * compare is freed here. */
static int refuse_change(const char *path, struct fspec *p, struct err *e)
{
    const struct fspec *cur = feat_txn_spec();
    int same_plan = p && fspec_hash(p) == fspec_hash(cur);
    int same_layout = p && fspec_layout_hash(p) == fspec_layout_hash(cur);

    fspec_close(p);
    if (same_plan)
        return ERR_OK;
    return err_set(e, ERR_CONFIG,
                   "features.spec %s: not the spec being served (%s): a worker serves one spec "
                   "until restarted; after a restart stored state %s",
                   *path ? path : "(built-in txn-v1)", fspec_name(cur),
                   same_layout ? "is read as before (same state layout)"
                               : "of another state layout is refused and those entities start "
                                 "afresh");
}

static int use_spec(const char *path, struct reg *r, struct err *e)
{
    static char active_path[1024];
    struct fspec *p;
    int rec;

    if (frozen && (!path || !*path))
        return active ? refuse_change("", NULL, e) : ERR_OK;
    if (!path || !*path) {
        if (retire_active(e))
            return e->code;
        active = NULL;
        active_rec = 0;
        active_path[0] = '\0';
        return ERR_OK;
    }
    if (active && !frozen && strcmp(path, active_path) == 0)
        return ERR_OK; /* already compiled: scorers of one worker share it */
    if (!(p = fspec_open_reg(path, r, e)))
        return e->code;
    rec = !is_txn_schema(p);
    if (!rec && *fspec_event_id_field(p) && strcmp(fspec_event_id_field(p), "event_id") != 0) {
        err_set(e, ERR_CONFIG, "%s: input.event_id %s: a TransactionEvent's id is its event_id "
                "field", path, fspec_event_id_field(p));
        fspec_close(p);
        return e->code;
    }
    if (rec ? fspec_bind_row(p, e) : bind_txn(p, e)) {
        fspec_close(p);
        return e->code;
    }
    if (frozen)
        return refuse_change(path, p, e);
    if (retire_active(e)) {
        fspec_close(p);
        return e->code;
    }
    active = p;
    active_rec = rec;
    snprintf(active_path, sizeof(active_path), "%s", path);
    return ERR_OK;
}

int feat_txn_use(const char *path, struct err *e)
{
    return use_spec(path, NULL, e);
}

/* One registry handle for the process's specs, kept across reloads: a
 * fixed version resolved once is not asked again (registry.h). */
static struct reg *spec_reg;
static char spec_reg_url[1024];

static int spec_registry(const struct cfg *cf, struct reg **r, struct err *e)
{
    const char *url = cfg_str(cf, "schema.registry.url");

    *r = NULL;
    if (!*url)
        return ERR_OK;
    if (spec_reg && strcmp(url, spec_reg_url) == 0) {
        *r = spec_reg;
        return ERR_OK;
    }
    reg_close(spec_reg);
    spec_reg = NULL;
    if (!(spec_reg = reg_open_cfg(cf, e)))
        return e->code ? e->code : err_set(e, ERR_CONFIG, "schema.registry.url is empty");
    snprintf(spec_reg_url, sizeof(spec_reg_url), "%s", url);
    *r = spec_reg;
    return ERR_OK;
}

int feat_txn_use_cfg(const struct cfg *cf, const char *path, struct err *e)
{
    struct reg *r = NULL;

    if (*path && spec_registry(cf, &r, e))
        return err_wrap(e, "features.spec %s", path);
    if (use_spec(path, *path ? r : NULL, e))
        return e->code;
    if (*path && active && *fspec_schema_source(active))
        log_info("features.spec %s: %s, input schema %s", path, fspec_name(active),
                 fspec_schema_source(active));
    return ERR_OK;
}

int feat_txn_reads_rec(void)
{
    return active && active_rec;
}

size_t feat_txn_dim(void)
{
    return fspec_dim(feat_txn_spec());
}

/* One block: the row, then its numbers, then its strings. */
void *feat_rec_dup(const void *rec)
{
    const struct fspec_row *r = rec;
    size_t nf = fspec_num_fields(feat_txn_spec()), n = nf ? nf : 1;
    struct fspec_row *c = malloc(sizeof(*c) + n * sizeof(double) + n * FSPEC_NAME_MAX);

    if (!c)
        return NULL;
    c->time_ms = r->time_ms;
    c->num = (double *)(c + 1);
    c->str = (char *)(c->num + n);
    memcpy(c->num, r->num, nf * sizeof(double));
    memcpy(c->str, r->str, nf * FSPEC_NAME_MAX);
    return c;
}

const char *feat_txn_version(void)
{
    return fspec_name(feat_txn_spec());
}

const char *const *feat_txn_names(void)
{
    return fspec_names(feat_txn_spec());
}

int feat_txn_index(const char *name)
{
    return fspec_index(feat_txn_spec(), name);
}

void feat_state_init(struct feat_state *s)
{
    fspec_state_init(s);
}

void feat_txn_build(const struct txn_event *ev, const struct feat_state *prior, float *x)
{
    fspec_build(feat_txn_spec(), ev->rec ? ev->rec : (const void *)ev, prior, x);
}

void feat_state_update(const struct feat_state *prior, const struct txn_event *ev,
                       struct feat_state *next)
{
    fspec_update(feat_txn_spec(), ev->rec ? ev->rec : (const void *)ev, prior, next);
}

int feat_state_encode(const struct feat_state *s, unsigned char *buf, size_t cap)
{
    return fspec_state_encode(feat_txn_spec(), s, buf, cap);
}

int feat_state_decode(struct feat_state *s, const unsigned char *buf, size_t len, struct err *e)
{
    return fspec_state_decode(feat_txn_spec(), s, buf, len, e);
}

uint64_t feat_state_count(const struct feat_state *s, const char *field)
{
    uint64_t n = 0;
    double mean, m2;

    if (fspec_state_moments(feat_txn_spec(), s, field, &n, &mean, &m2))
        return 0;
    return n;
}

/* ---- validation ---- */

struct num_rule {
    const char *name;
    size_t off;
    double min, max;
};

#define RULE(field, lo, hi)                                                                        \
    {                                                                                              \
#field, offsetof(struct txn_event, field), lo, hi                                          \
    }

static const struct num_rule num_rules[] = {
    RULE(amount, 0, MONEY_MAX),
    RULE(income, 0, MONEY_MAX),
    RULE(expenses, 0, MONEY_MAX),
    RULE(assets, 0, MONEY_MAX),
    RULE(debt, 0, MONEY_MAX),
    RULE(price, 0, MONEY_MAX),
    RULE(term_months, 0, 600),
    RULE(seniority_years, 0, 100),
    RULE(age, 14, 130),
    RULE(credit_limit, 0, MONEY_MAX),
    RULE(credit_used, 0, MONEY_MAX),
    RULE(payments_on_time, 0, COUNT_MAX),
    RULE(payments_late, 0, COUNT_MAX),
    RULE(inquiries_6m, 0, COUNT_MAX),
    RULE(accounts_open, 0, COUNT_MAX),
    RULE(accounts_opened_12m, 0, COUNT_MAX),
    RULE(bankruptcies, 0, COUNT_MAX),
    RULE(collections, 0, COUNT_MAX),
    RULE(oldest_account_months, 0, MONTHS_MAX),
    RULE(avg_account_age_months, 0, MONTHS_MAX),
};

/* NaN is how "missing" is stored, so it passes; Inf cannot be missing. */
static int check_num(const struct txn_event *ev, const struct num_rule *r, struct err *e)
{
    double v;

    memcpy(&v, (const char *)ev + r->off, sizeof(v));
    if (isnan(v))
        return ERR_OK;
    if (isinf(v))
        return err_set(e, ERR_INVALID, "%s: not finite (%g)", r->name, v);
    if (v < 0 && r->min >= 0)
        return err_set(e, ERR_INVALID, "%s: negative (%g)", r->name, v);
    if (v < r->min || v > r->max)
        return err_set(e, ERR_INVALID, "%s: out of range [%g, %g] (%g)", r->name, r->min, r->max,
                       v);
    return ERR_OK;
}

/* Fixed-size fields filled by a decoder must still be terminated strings. */
static int check_str(const char *s, size_t cap, const char *name, int required, struct err *e)
{
    if (!memchr(s, '\0', cap))
        return err_set(e, ERR_INVALID, "%s: not terminated within %zu bytes", name, cap);
    if (required && s[0] == '\0')
        return err_set(e, ERR_INVALID, "%s: empty", name);
    return ERR_OK;
}

static int check_strings(const struct txn_event *ev, struct err *e)
{
    if (check_str(ev->event_id, sizeof(ev->event_id), "event_id", 1, e) ||
        check_str(ev->user_id, sizeof(ev->user_id), "user_id", 1, e) ||
        check_str(ev->home, sizeof(ev->home), "home", 0, e) ||
        check_str(ev->marital, sizeof(ev->marital), "marital", 0, e) ||
        check_str(ev->job, sizeof(ev->job), "job", 0, e))
        return ERR_INVALID;
    return ERR_OK;
}

int feat_txn_validate(const struct txn_event *ev, struct err *e)
{
    int rc = check_strings(ev, e);

    if (rc)
        return rc;
    if (ev->event_time_ms < TIME_MIN_MS || ev->event_time_ms >= TIME_MAX_MS)
        return err_set(e, ERR_INVALID, "event_time: outside [2000-01-01, 2100-01-01) (%lld ms)",
                       (long long)ev->event_time_ms);
    /* A date far ahead would freeze the user's velocity windows. */
    if ((rc = evt_check(ev->event_time_ms, e)))
        return rc;
    for (size_t i = 0; i < sizeof(num_rules) / sizeof(num_rules[0]); i++) {
        rc = check_num(ev, &num_rules[i], e);
        if (rc)
            return rc;
    }
    if (ev->past_records < -1 || ev->past_records > 1)
        return err_set(e, ERR_INVALID, "past_records: not -1, 0 or 1 (%d)", ev->past_records);
    if (ev->label < -1 || ev->label > 1)
        return err_set(e, ERR_INVALID, "label: not -1, 0 or 1 (%d)", ev->label);
    return ERR_OK;
}

/* ---- idempotence: per-partition offsets and recent event ids ---- */

static int64_t g_horizon_ms = FEAT_DEDUP_HORIZON_MS;

void feat_set_dedup_horizon_ms(int64_t ms)
{
    g_horizon_ms = ms > 0 ? ms : FEAT_DEDUP_HORIZON_MS;
}

static uint64_t id_hash(const struct txn_event *ev)
{
    uint64_t h = 14695981039346656037ULL;
    size_t n = strnlen(ev->event_id, EV_ID_MAX);

    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)ev->event_id[i];
        h *= 1099511628211ULL;
    }
    return h ? h : 1;
}

int feat_state_seen(const struct feat_state *s, int32_t partition, int64_t offset,
                    const struct txn_event *ev)
{
    uint64_t h = id_hash(ev);

    for (int i = 0; i < s->n_parts; i++)
        if (s->parts[i].partition == partition && s->parts[i].offset >= offset)
            return 1;
    for (int i = 0; i < s->n_ids; i++)
        if (s->ids[i].id_hash == h &&
            s->ids[i].time_ms >= s->last_event_ms - g_horizon_ms)
            return 1;
    return 0;
}

void feat_state_mark(struct feat_state *s, int32_t partition, int64_t offset,
                     const struct txn_event *ev)
{
    int i, keep = 0;
    int64_t oldest = s->last_event_ms - g_horizon_ms;
    struct feat_pos pos = {partition, offset};

    /* the partition moves to the end (most recently applied) */
    for (i = 0; i < s->n_parts && s->parts[i].partition != partition; i++)
        ;
    if (i < s->n_parts) {
        if (s->parts[i].offset > offset)
            pos.offset = s->parts[i].offset;
        memmove(&s->parts[i], &s->parts[i + 1], (size_t)(s->n_parts - i - 1) * sizeof(pos));
        s->n_parts--;
    } else if (s->n_parts == FEAT_PARTS_MAX) {
        memmove(&s->parts[0], &s->parts[1], (size_t)(FEAT_PARTS_MAX - 1) * sizeof(pos));
        s->n_parts--;
    }
    s->parts[s->n_parts++] = pos;
    /* ids past the horizon leave; then the oldest when full */
    for (i = 0; i < s->n_ids; i++)
        if (s->ids[i].time_ms >= oldest)
            s->ids[keep++] = s->ids[i];
    s->n_ids = keep;
    if (s->n_ids == FEAT_IDS_MAX) {
        memmove(&s->ids[0], &s->ids[1], (size_t)(FEAT_IDS_MAX - 1) * sizeof(s->ids[0]));
        s->n_ids--;
    }
    s->ids[s->n_ids++] = (struct feat_seen){id_hash(ev), ev->event_time_ms};
}

/* ---- hash ---- */

/* A float's bits as hashed: every NaN (any sign or payload) alike, and -0
 * as +0 (they compare equal). */
static inline uint32_t hash_bits(float v)
{
    uint32_t bits;

    if (isnan(v))
        return 0x7fc00000u;
    if (v == 0)
        return 0;
    memcpy(&bits, &v, sizeof(bits));
    return bits;
}

/* FNV-1a 64 over the four little-endian bytes of bits: same hash on any host. */
static inline uint64_t fnv_word(uint64_t h, uint32_t bits)
{
    for (int j = 0; j < 4; j++) {
        h ^= (bits >> (8 * j)) & 0xffu;
        h *= 1099511628211ULL; /* FNV-1a 64 prime */
    }
    return h;
}

#define FNV_BASIS 14695981039346656037ULL /* FNV-1a 64 offset basis */

uint64_t feat_hash(const float *x, size_t n)
{
    uint64_t h = FNV_BASIS;

    for (size_t i = 0; i < n; i++)
        h = fnv_word(h, hash_bits(x[i]));
    return h;
}

/* The canonical bits of n floats as the bytes FNV-1a takes, little-endian. */
static void hash_bytes(const float *x, size_t n, unsigned char *b)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t v = hash_bits(x[i]);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        memcpy(b + 4 * i, &v, sizeof(v));
#else
        for (int j = 0; j < 4; j++)
            b[4 * i + (size_t)j] = (unsigned char)(v >> (8 * j));
#endif
    }
}

#define HASH_CHUNK 64 /* floats of a row turned into bytes at a time */

/* FNV-1a is one chain of multiplies, each waiting on the last (4 cycles a
 * byte); four rows' chains side by side keep the multiplier busy, and the
 * bytes are read from a buffer (one load each, not a shift and a mask):
 * the same hashes in about a third of the time per row (bench_stages). */
void feat_hash_rows(const float *x, size_t n, size_t dim, uint64_t *h)
{
    unsigned char b[4][4 * HASH_CHUNK];
    size_t i = 0;

    for (; i + 4 <= n; i += 4) {
        const float *r = x + i * dim;
        uint64_t h0 = FNV_BASIS, h1 = FNV_BASIS, h2 = FNV_BASIS, h3 = FNV_BASIS;
        for (size_t j0 = 0; j0 < dim; j0 += HASH_CHUNK) {
            size_t m = dim - j0 < HASH_CHUNK ? dim - j0 : HASH_CHUNK;
            for (int k = 0; k < 4; k++)
                hash_bytes(r + (size_t)k * dim + j0, m, b[k]);
            for (size_t q = 0; q < 4 * m; q++) {
                h0 = (h0 ^ b[0][q]) * 1099511628211ULL;
                h1 = (h1 ^ b[1][q]) * 1099511628211ULL;
                h2 = (h2 ^ b[2][q]) * 1099511628211ULL;
                h3 = (h3 ^ b[3][q]) * 1099511628211ULL;
            }
        }
        h[i] = h0;
        h[i + 1] = h1;
        h[i + 2] = h2;
        h[i + 3] = h3;
    }
    for (; i < n; i++)
        h[i] = feat_hash(x + i * dim, dim);
}
