/* common/streams/sources.h: candidate sources by name and quota (prefix src_).
 *
 * clickstream.sources is a comma-separated list of name:quota, in the order
 * the sources fill the pool (the first to propose an item is its "source";
 * every source that proposed it is recorded, rec_item.sources):
 *
 *   gru:800,covisit:400,category:300,popular:200,region:200,cart:50,new:100,content:200
 *
 *   gru       the best GRU scores (exact or IVF, clickstream.search)
 *   covisit   items co-visited with the session's last item (alias covis)
 *   popular   trending items, then the model's popular ones (alias trending)
 *   category  the most clicked items of the categories of the session's
 *             last clickstream.recent_items items (catalogue)
 *   region    the most clicked items of the session's region (the region of
 *             its last item that has one; catalogue)
 *   cart      the session's cart: items of cart events not purchased since,
 *             newest first (they may be shown although in the session)
 *   new       new arrivals: catalogue items younger than
 *             clickstream.new_item_age_s, newest first
 *   content   catalogue items the GRU has never seen (no row in the model)
 *             nearest by cosine of their catalogue embeddings to the
 *             session's last item that has an embedding
 *
 * A source may appear once; quotas are 1..REC_MAX_POOL and sum to at most
 * REC_MAX_POOL. Empty: the first release's set, gru:<candidates>,
 * covisit:<k>, popular:<k>. Each source's buffers are sized once here, at
 * open: nothing is allocated per click.
 */
#ifndef STREAMML_SOURCES_H
#define STREAMML_SOURCES_H

#include <stddef.h>
#include <stdint.h>

#include "catalog.h"
#include "err.h"
#include "session.h"

struct src_spec {
    int n;
    enum rec_source src[REC_NSOURCES];
    int quota[REC_NSOURCES];
    int pool;   /* sum of the quotas */
    int legacy; /* 1: from the empty spec */
};

/* ERR_CONFIG naming the entry (unknown name, bad or zero quota, repeated
 * name, a pool past REC_MAX_POOL). */
int src_parse(const char *spec, int candidates, int k, struct src_spec *out, struct err *e);
/* The quota of s in the spec, 0 when it is not listed. */
int src_quota(const struct src_spec *sp, enum rec_source s);

/* What the sources know of one click's session. */
struct src_session {
    const int64_t *hist; /* the session's items, oldest first */
    int n_hist;
    const int64_t *cart; /* cart items, oldest first */
    int n_cart;
    int64_t now_ms;            /* the click's event time */
    const int64_t *covisit;    /* co-visited with the last item, best first */
    size_t n_covisit;
    const int64_t *popular;    /* trending then the model's popular items */
    size_t n_popular;
};

struct src_opts {
    int recent;            /* last items whose categories count (clickstream.recent_items) */
    int64_t new_age_ms;    /* clickstream.new_item_age_s */
    uint32_t new_max_imps; /* clickstream.new_item_impressions: the boost ends */
};

struct src_ctx;
int src_open(struct src_ctx **out, const struct src_spec *sp, const struct src_opts *o,
             struct err *e);
void src_close(struct src_ctx *x); /* NULL-safe */

/* The lists of one click, in the spec's order, into lists (REC_NSOURCES
 * entries); the GRU is not among them (rec_rank's top). cat may be NULL
 * (the catalogue's sources are then empty). Valid until the next call. */
size_t src_lists(struct src_ctx *x, const struct catalog *cat, const struct src_session *s,
                 struct rec_list *lists);
/* New items still in their boost period at now_ms (younger than the age,
 * fewer impressions than the limit), newest first; valid until the next call. */
size_t src_boosted(struct src_ctx *x, const struct catalog *cat, int64_t now_ms,
                   const int64_t **out);
/* 1 if item is new at now_ms (its impressions and clicks are counted). */
int src_is_new(const struct src_ctx *x, const struct catalog *cat, int64_t item, int64_t now_ms);

#endif
