/* common/streams/catalog.h: the shop's item catalogue (prefix cat_).
 *
 * An item record (schemas/catalog_item.avsc): id, category, region, price,
 * created time and an optional content embedding. The table is compact and
 * sized once at open: dense arrays indexed by item id (ids must be below
 * clickstream.catalog_max_items), category and region names interned to
 * small numbers (CAT_MAX_CATEGORIES, CAT_MAX_REGIONS), one fixed-size
 * embedding slot per item when the catalogue has embeddings. An upsert
 * never allocates: records arrive live (the compacted topic) while the
 * worker ranks from the same table.
 *
 * What the candidate sources read (common/streams/sources.h):
 *   - the items of a category or a region, most clicked first: per category
 *     and per region a short list of the most clicked items (counts of the
 *     clicks this process saw, cat_click), then the rest of the category's
 *     items, latest records first (an intrusive chain per category and per
 *     region);
 *   - new arrivals: the CAT_NEW_MAX newest items by created time;
 *   - the items the GRU has never seen (id >= the model's items) that have
 *     an embedding, for content neighbours.
 *
 * Where records come from: a file (JSON lines, or CSV with a header line;
 * cat_load_file), the compacted topic (Avro, decoded to the same JSON by the
 * caller: cat_parse_json), and Redis (common/streams/catfeed.h keeps every
 * accepted record there, so a restarted worker has the catalogue at once).
 * A bad record is refused whole with ERR_DECODE naming the field; the table
 * keeps the item's previous record.
 *
 * Not thread-safe: one worker thread reads and writes it.
 */
#ifndef STREAMML_CATALOG_H
#define STREAMML_CATALOG_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define CAT_CATEGORY_MAX 64 /* bytes with the NUL */
#define CAT_REGION_MAX 32
#define CAT_MAX_DIM 256
#define CAT_MAX_CATEGORIES 4096
#define CAT_MAX_REGIONS 256
#define CAT_TOP 64        /* most clicked items kept per category and region */
#define CAT_NEW_MAX 4096  /* newest items kept for new arrivals */
#define CAT_LINE_MAX 8192 /* longest record line of a file */

struct cat_item {
    int64_t id;
    char category[CAT_CATEGORY_MAX]; /* "" none */
    char region[CAT_REGION_MAX];     /* "" none */
    double price;
    int64_t created_ms;
    int n_emb; /* 0: no embedding */
    float emb[CAT_MAX_DIM];
};

struct catalog;

/* max_items: ids 0..max_items-1; model_items: ids below it are items the
 * GRU has rows for (the others are "never seen"). */
int cat_open(struct catalog **out, int64_t max_items, int64_t model_items, struct err *e);
void cat_close(struct catalog *c); /* NULL-safe */

/* One record, checked (id in range, finite price >= 0, created > 0, the
 * catalogue's embedding size, finite values, at most CAT_MAX_CATEGORIES /
 * CAT_MAX_REGIONS distinct names): ERR_DECODE naming the field, the table
 * unchanged. A known id is replaced (its category, region and age move). */
int cat_upsert(struct catalog *c, const struct cat_item *it, struct err *e);
/* A JSON object (a line of a file, or a topic record decoded to JSON):
 * keys id, category, region, price, created (epoch ms; created_ms is
 * accepted too), embedding (array of numbers, null or absent). Unknown keys
 * and bad values: ERR_DECODE naming the key. */
int cat_parse_json(const char *s, size_t len, struct cat_item *it, struct err *e);
/* One CSV data line under the header line hdr (the same column names; the
 * embedding as numbers separated by ';' or spaces, or empty). */
int cat_parse_csv(const char *hdr, const char *line, struct cat_item *it, struct err *e);
/* A file of records: JSON lines (first non-blank byte '{') or CSV with a
 * header line. Each bad line is logged with its number and field and
 * skipped (counted in *bad); a missing file is ERR_CONFIG. on_ok (may be
 * NULL) sees each accepted record (the Redis copy). */
int cat_load_file(struct catalog *c, const char *path, size_t *ok, size_t *bad,
                  void (*on_ok)(const struct cat_item *it, void *arg), void *arg, struct err *e);
/* The record as one JSON line (no newline) into buf; its length, 0 if cap
 * is too small. */
size_t cat_to_json(const struct cat_item *it, char *buf, size_t cap);

/* ---- reads ---- */
int64_t cat_max_items(const struct catalog *c);
int64_t cat_model_items(const struct catalog *c);
size_t cat_count(const struct catalog *c);         /* items held */
int64_t cat_count_unseen(const struct catalog *c); /* held, id >= model items */
/* Per id (0..max_items-1) 1 if held: the exploration pool's new items. */
const unsigned char *cat_present(const struct catalog *c);
int cat_has(const struct catalog *c, int64_t id);
int cat_category(const struct catalog *c, int64_t id); /* -1 none or unknown */
int cat_region(const struct catalog *c, int64_t id);
int64_t cat_created_ms(const struct catalog *c, int64_t id); /* 0 unknown */
double cat_price(const struct catalog *c, int64_t id);
const float *cat_embedding(const struct catalog *c, int64_t id, int *dim); /* NULL none */
/* The same embedding scaled to length 1 (all zeros for a zero vector): a
 * cosine is one dot product. */
const float *cat_unit_embedding(const struct catalog *c, int64_t id, int *dim);
/* The catalogue's items of category cat (region reg), most clicked first,
 * then latest records first: up to cap ids into out; returns how many. */
size_t cat_in_category(const struct catalog *c, int cat, int64_t *out, size_t cap);
size_t cat_in_region(const struct catalog *c, int reg, int64_t *out, size_t cap);
/* Items created at or after since_ms, newest first. */
size_t cat_newest(const struct catalog *c, int64_t since_ms, int64_t *out, size_t cap);
/* Held items never seen by the GRU with an embedding: their ids. */
const int64_t *cat_unseen(const struct catalog *c, size_t *n);

/* A click on a held item: its category's and region's most-clicked lists. */
void cat_click(struct catalog *c, int64_t id);

/* New-item boost counts (mirrored in Redis by catfeed): impressions and
 * clicks per item since it was listed. cat_count_new adds to them and
 * keeps the additions for cat_pending (the Redis increments). */
uint32_t cat_impressions(const struct catalog *c, int64_t id);
uint32_t cat_new_clicks(const struct catalog *c, int64_t id);
void cat_set_counts(struct catalog *c, int64_t id, uint32_t impressions, uint32_t clicks);
void cat_count_new(struct catalog *c, int64_t id, uint32_t impressions, uint32_t clicks);
/* Takes up to cap pending additions (ids and deltas); returns how many. */
size_t cat_pending(struct catalog *c, int64_t *ids, uint32_t *imps, uint32_t *clicks, size_t cap);

#endif
