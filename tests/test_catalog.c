/* The item catalogue (common/streams/catalog.h), the candidate sources by
 * quota (common/streams/sources.h) and the new-item boost, through the
 * clickstream step (common/streams/clickstep.h) with in-memory state: each
 * source turned on alone shows its own items, a new item reaches sessions
 * within its boost period and stops being boosted after its impressions,
 * catalogue updates are seen by the next click, and bad records are refused
 * naming the field. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "catalog.h"
#include "catfeed.h"
#include "clickstep.h"
#include "codec.h"
#include "kafka.h"
#include "covis.h"
#include "sources.h"
#include "stack.h"
#include "state.h"

#define MODEL "models/clickstream/gru4rec.onnx"
#define DAY_MS 86400000LL
#define NOW_MS 1800000000000LL /* the clicks' event time */
#define N_NEW 20
#define DIM 4

struct env {
    struct cfg *cf;
    struct state *st;
    struct cstep *cs;
    struct catalog *cat;
    struct cov *cov;
    int64_t items; /* the model's */
    long clicks;   /* offsets */
};

/* Model items: category c<id % 10>, region r<id % 3>, listed a year ago,
 * an embedding e(id). New items (ids past the model's): category c5,
 * region r0, listed an hour ago. */
static void item(struct cat_item *it, int64_t id, int64_t items)
{
    memset(it, 0, sizeof(*it));
    it->id = id;
    snprintf(it->category, sizeof(it->category), "c%d", id < items ? (int)(id % 10) : 5);
    snprintf(it->region, sizeof(it->region), "r%d", id < items ? (int)(id % 3) : 0);
    it->price = 9.5;
    it->created_ms = id < items ? NOW_MS - 365 * DAY_MS : NOW_MS - 3600000;
    it->n_emb = DIM;
    for (int j = 0; j < DIM; j++) /* new item i points like model item 15 the more, the lower i */
        it->emb[j] = id < items ? (float)sin((double)(id * (j + 1)))
                                : (float)sin((double)(15 * (j + 1))) +
                                      0.05f * (float)(id - items) * (float)(j == 0);
}

static void open_env(struct env *v, const char *sources, double new_eps, int max_imps,
                     struct cov *cov)
{
    struct err e = {0};
    char kv[512];
    const char *args[] = {"clickstream.model=" MODEL, "clickstream.epsilon=0",
                          "clickstream.seed=7", "clickstream.search=exact",
                          "clickstream.lambda_diversity=0"};

    memset(v, 0, sizeof(*v));
    assert_non_null(v->cf = cfg_new());
    for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); i++)
        assert_int_equal(cfg_set_arg(v->cf, args[i], &e), ERR_OK);
    snprintf(kv, sizeof(kv), "clickstream.sources=%s", sources);
    assert_int_equal(cfg_set_arg(v->cf, kv, &e), ERR_OK);
    snprintf(kv, sizeof(kv), "clickstream.new_item_epsilon=%g", new_eps);
    assert_int_equal(cfg_set_arg(v->cf, kv, &e), ERR_OK);
    snprintf(kv, sizeof(kv), "clickstream.new_item_impressions=%d", max_imps);
    assert_int_equal(cfg_set_arg(v->cf, kv, &e), ERR_OK);
    assert_int_equal(cfg_finish(v->cf, &e), ERR_OK);
    assert_non_null(v->st = state_open_memory());
    v->cov = cov;
    if (cstep_open(&v->cs, v->cf, 8, v->st, cov, &e))
        fail_msg("cstep_open: %s", e.msg);
    v->items = sess_model_items(cstep_model(v->cs));
    assert_int_equal(cat_open(&v->cat, cstep_catalog_ids(v->cf, v->items), v->items, &e), ERR_OK);
    for (int64_t id = 0; id < v->items + N_NEW; id++) {
        struct cat_item it;
        item(&it, id, v->items);
        assert_int_equal(cat_upsert(v->cat, &it, &e), ERR_OK);
    }
    assert_int_equal(cstep_set_catalog(v->cs, v->cat, &e), ERR_OK);
}

static void close_env(struct env *v)
{
    cstep_close(v->cs);
    cat_close(v->cat);
    state_close(v->st);
    cfg_free(v->cf);
}

/* One click of session sid on item (type t) and its prediction. */
static void click(struct env *v, const char *sid, int64_t it, enum click_type t,
                  struct click_prediction *p)
{
    struct click_event ev = {0};
    struct cstep_click in;

    snprintf(ev.event_id, sizeof(ev.event_id), "e%ld", v->clicks);
    snprintf(ev.session_id, sizeof(ev.session_id), "%s", sid);
    ev.item_id = it;
    ev.type = t;
    ev.event_time_ms = NOW_MS + v->clicks;
    in = (struct cstep_click){&ev, "clickstream", 0, v->clicks++, 0};
    assert_int_equal(cstep_batch(v->cs, 1, &in, p), 0);
    cstep_store(v->cs);
}

/* The session of every source test: a view of item 5, item 15 into the cart. */
static void session(struct env *v, struct click_prediction *p)
{
    click(v, "s", 5, CLICK_VIEW, p);
    click(v, "s", 15, CLICK_CART, p);
}

static void assert_all_from(const struct click_prediction *p, const char *src)
{
    assert_true(p->n_items > 0);
    for (int i = 0; i < p->n_items; i++)
        if (strcmp(p->items[i].source, src) != 0)
            fail_msg("item %d (%lld): source %s, expected %s", i,
                     (long long)p->items[i].item_id, p->items[i].source, src);
}

static void test_gru_alone(void **st)
{
    struct env v;
    static struct click_prediction p;

    (void)st;
    open_env(&v, "gru:100", 0, 0, NULL);
    session(&v, &p);
    assert_all_from(&p, "gru");
    assert_int_equal(p.n_items, 10);
    close_env(&v);
}

static void test_category_alone(void **st)
{
    struct env v;
    static struct click_prediction p;

    (void)st;
    open_env(&v, "category:100", 0, 0, NULL);
    session(&v, &p);
    assert_all_from(&p, "category");
    for (int i = 0; i < p.n_items; i++) /* items 5 and 15: category c5 */
        assert_int_equal(cat_category(v.cat, p.items[i].item_id), cat_category(v.cat, 5));
    close_env(&v);
}

static void test_region_alone(void **st)
{
    struct env v;
    static struct click_prediction p;

    (void)st;
    open_env(&v, "region:100", 0, 0, NULL);
    session(&v, &p);
    assert_all_from(&p, "region");
    for (int i = 0; i < p.n_items; i++) /* the last item, 15: region r0 */
        assert_int_equal(cat_region(v.cat, p.items[i].item_id), cat_region(v.cat, 15));
    close_env(&v);
}

static void test_popular_alone(void **st)
{
    struct env v;
    static struct click_prediction p;
    size_t np;
    const int64_t *pop;

    (void)st;
    open_env(&v, "popular:100", 0, 0, NULL);
    pop = sess_model_popular(cstep_model(v.cs), &np);
    assert_true(np > 0);
    session(&v, &p);
    assert_all_from(&p, "popular");
    for (int i = 0; i < p.n_items; i++) {
        int found = 0;
        for (size_t j = 0; j < np && !found; j++)
            found = pop[j] == p.items[i].item_id;
        assert_true(found);
    }
    close_env(&v);
}

/* The cart's item is shown although the session holds it; a purchase
 * takes it out of the cart. */
static void test_cart_alone(void **st)
{
    struct env v;
    static struct click_prediction p;

    (void)st;
    open_env(&v, "cart:50", 0, 0, NULL);
    session(&v, &p);
    assert_all_from(&p, "cart");
    assert_int_equal(p.n_items, 1);
    assert_int_equal(p.items[0].item_id, 15);
    click(&v, "s", 15, CLICK_PURCHASE, &p);
    assert_int_equal(p.n_items, 0);
    close_env(&v);
}

static void test_new_alone(void **st)
{
    struct env v;
    static struct click_prediction p;

    (void)st;
    open_env(&v, "new:100", 0, 0, NULL);
    session(&v, &p);
    assert_all_from(&p, "new");
    assert_int_equal(p.n_items, 10);
    for (int i = 0; i < p.n_items; i++)
        assert_true(p.items[i].item_id >= v.items && p.items[i].item_id < v.items + N_NEW);
    close_env(&v);
}

/* Content neighbours: the new items, nearest first to item 15's embedding
 * (new item i is nearer the lower i). */
static void test_content_alone(void **st)
{
    struct env v;
    static struct click_prediction p;

    (void)st;
    open_env(&v, "content:5", 0, 0, NULL);
    session(&v, &p);
    assert_all_from(&p, "content");
    assert_int_equal(p.n_items, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(p.items[i].item_id, v.items + i);
    close_env(&v);
}

static void test_covisit_alone(void **st)
{
    struct env v;
    static struct click_prediction p;
    struct test_redis r;
    struct cov *cov;
    struct cov_opts o = {.port = 0, .half_life_s = 3600, .timeout_ms = 2000};
    struct cov_click cl[3] = {{15, 40, NOW_MS, 0, -1, 0},
                              {15, 41, NOW_MS, 0, -1, 0},
                              {41, 15, NOW_MS, 0, -1, 0}};
    struct err e = {0};

    (void)st;
    if (test_redis_start(&r))
        fail_msg("redis-server did not start");
    o.port = r.port;
    assert_int_equal(cov_open(&cov, &o, &e), ERR_OK);
    assert_int_equal(cov_update(cov, 3, cl, NULL, &e), ERR_OK);
    open_env(&v, "covisit:50", 0, 0, cov);
    session(&v, &p);
    assert_all_from(&p, "covisit");
    assert_int_equal(p.n_items, 2);
    assert_int_equal(p.items[0].item_id, 41); /* two visits with 15, then 40 */
    assert_int_equal(p.items[1].item_id, 40);
    close_env(&v);
    cov_close(cov);
    test_redis_stop(&r);
}

/* Every source together: the union records each item's sources once. */
static void test_union_dedups(void **st)
{
    struct env v;
    static struct click_prediction p;

    (void)st;
    open_env(&v, "gru:800,category:300,popular:200,region:200,cart:50,new:100,content:200", 0, 0,
             NULL);
    session(&v, &p);
    assert_int_equal(p.n_items, 10);
    for (int i = 0; i < p.n_items; i++)
        for (int j = 0; j < i; j++)
            assert_true(p.items[i].item_id != p.items[j].item_id);
    close_env(&v);
}

/* A new item listed an hour ago reaches sessions within its boost period
 * through the boosted exploration (with its propensity) until its
 * impressions run out; past its age it is not boosted either. */
static void test_new_item_boost(void **st)
{
    struct env v;
    static struct click_prediction p;
    int first = 0, late = 0;
    char sid[16];

    (void)st;
    open_env(&v, "gru:200,covisit:50", 0.5, 3, NULL);
    for (int s = 0; s < 40; s++) {
        snprintf(sid, sizeof(sid), "b%d", s);
        click(&v, sid, 5 + s, CLICK_VIEW, &p);
        for (int i = 0; i < p.n_items; i++)
            if (strcmp(p.items[i].source, "explore_new") == 0) {
                assert_true(p.items[i].item_id >= v.items);
                assert_true(p.items[i].propensity > 0 && p.items[i].propensity <= 0.5);
                if (s < 2)
                    first++;
                else if (s >= 30)
                    late++;
            } else {
                assert_true(p.items[i].item_id < v.items); /* no other way in */
            }
    }
    /* half of the first clicks' slots, none once every boost is spent (20
     * new items x 3 impressions: 60 slots, about 12 clicks) */
    assert_true(first >= 4);
    assert_int_equal(late, 0);
    for (int64_t id = v.items; id < v.items + N_NEW; id++)
        assert_int_equal(cat_impressions(v.cat, id), 3);
    assert_int_equal(cstep_counts(v.cs)->new_shown, 3 * N_NEW);
    /* boosts back, but the items are older than new_item_age_s (7 days) */
    for (int64_t id = v.items; id < v.items + N_NEW; id++)
        cat_set_counts(v.cat, id, 0, 0);
    v.clicks += 8 * DAY_MS;
    click(&v, "late", 7, CLICK_VIEW, &p);
    for (int i = 0; i < p.n_items; i++)
        assert_true(strcmp(p.items[i].source, "explore_new") != 0);
    close_env(&v);
}

/* An upsert is seen by the next click: an item moved to another category
 * comes out of the category source; an item listed now is a new arrival. */
static void test_live_update(void **st)
{
    struct env v;
    static struct click_prediction p;
    struct cat_item it;
    struct err e = {0};
    int64_t fresh;
    int seen = 0;

    (void)st;
    open_env(&v, "new:5", 0, 0, NULL);
    session(&v, &p);
    fresh = v.items + N_NEW; /* not in the catalogue yet */
    for (int i = 0; i < p.n_items; i++)
        assert_true(p.items[i].item_id != fresh);
    item(&it, fresh, v.items);
    it.created_ms = NOW_MS; /* the newest */
    assert_int_equal(cat_upsert(v.cat, &it, &e), ERR_OK);
    click(&v, "s", 25, CLICK_VIEW, &p);
    for (int i = 0; i < p.n_items; i++)
        seen += p.items[i].item_id == fresh;
    assert_int_equal(seen, 1);
    assert_int_equal(p.items[0].item_id, fresh);
    close_env(&v);
}

/* Bad records: refused whole with the field named, the table unchanged. */
static void test_bad_records(void **st)
{
    struct catalog *c;
    struct cat_item it;
    struct err e = {0};
    const char *bad[][2] = {
        {"{\"id\":-3,\"price\":1,\"created\":5}", "field id"},
        {"{\"id\":3,\"price\":\"x\",\"created\":5}", "field price"},
        {"{\"id\":3,\"price\":1}", "field created"},
        {"{\"id\":3,\"price\":1,\"created\":5,\"embedding\":[1,\"a\"]}", "field embedding"},
        {"{\"id\":3,\"price\":1,\"created\":5,\"colour\":\"red\"}", "unknown field colour"},
        {"{\"id\":3,\"price\":1,\"created\":5,\"category\":\"0123456789012345678901234567890123456"
         "78901234567890123456789012345\"}",
         "field category"},
    };

    (void)st;
    assert_int_equal(cat_open(&c, 100, 50, &e), ERR_OK);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&e, 0, sizeof(e));
        assert_int_equal(cat_parse_json(bad[i][0], strlen(bad[i][0]), &it, &e), ERR_DECODE);
        if (!strstr(e.msg, bad[i][1]))
            fail_msg("%s: \"%s\" does not name %s", bad[i][0], e.msg, bad[i][1]);
    }
    /* parsed but refused by the table: out of range, embedding size */
    const char *big = "{\"id\":100,\"price\":1,\"created\":5}";
    assert_int_equal(cat_parse_json(big, strlen(big), &it, &e), 0);
    assert_int_equal(cat_upsert(c, &it, &e), ERR_DECODE);
    assert_non_null(strstr(e.msg, "field id"));
    const char *two = "{\"id\":7,\"price\":1,\"created\":5,\"embedding\":[1,2]}";
    assert_int_equal(cat_parse_json(two, strlen(two), &it, &e), ERR_OK);
    assert_int_equal(cat_upsert(c, &it, &e), ERR_OK);
    const char *three = "{\"id\":7,\"price\":2,\"created\":6,\"embedding\":[1,2,3]}";
    assert_int_equal(cat_parse_json(three, strlen(three), &it, &e), ERR_OK);
    assert_int_equal(cat_upsert(c, &it, &e), ERR_DECODE);
    assert_non_null(strstr(e.msg, "field embedding"));
    assert_true(cat_price(c, 7) == 1.0); /* the earlier record stays */
    assert_int_equal(cat_count(c), 1);
    cat_close(c);
}

/* The file forms: JSON lines and CSV, bad lines skipped and counted. */
static void test_files(void **st)
{
    char dir[] = "/tmp/catalog.XXXXXX", path[256];
    struct catalog *c;
    struct err e = {0};
    size_t ok, bad;
    FILE *f;
    int dim;
    const float *u;

    (void)st;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/items.jsonl", dir);
    assert_non_null(f = fopen(path, "w"));
    fprintf(f, "{\"id\":1,\"category\":\"shoes\",\"region\":\"eu\",\"price\":19.9,\"created\":1700000000000,"
               "\"embedding\":[0.5,-1]}\n\n"
               "{\"id\":2,\"category\":\"shoes\",\"price\":-1,\"created\":1700000000000}\n"
               "{\"id\":3,\"category\":\"hats\",\"region\":\"us\",\"price\":5,\"created\":1700000000001,"
               "\"embedding\":null}\n");
    fclose(f);
    assert_int_equal(cat_open(&c, 100, 50, &e), ERR_OK);
    assert_int_equal(cat_load_file(c, path, &ok, &bad, NULL, NULL, &e), ERR_OK);
    assert_int_equal(ok, 2);
    assert_int_equal(bad, 1);
    assert_int_equal(cat_category(c, 1), 0);
    assert_int_equal(cat_category(c, 3), 1);
    assert_non_null(cat_embedding(c, 1, &dim));
    assert_int_equal(dim, 2);
    assert_null(cat_embedding(c, 3, &dim));
    /* the content source's copy: the same direction, length 1 */
    assert_non_null(u = cat_unit_embedding(c, 1, &dim));
    assert_float_equal(u[0], 0.5 / sqrt(1.25), 1e-6);
    assert_float_equal(u[1], -1 / sqrt(1.25), 1e-6);
    assert_null(cat_unit_embedding(c, 3, &dim));
    unlink(path);
    snprintf(path, sizeof(path), "%s/items.csv", dir);
    assert_non_null(f = fopen(path, "w"));
    fprintf(f, "id,category,region,price,created,embedding\n"
               "4,shoes,eu,3.5,1700000000002,0.1;0.2\n"
               "5,hats,us,abc,1700000000003,\n"
               "6,hats,us,1,1700000000004,\n");
    fclose(f);
    assert_int_equal(cat_load_file(c, path, &ok, &bad, NULL, NULL, &e), ERR_OK);
    assert_int_equal(ok, 2);
    assert_int_equal(bad, 1);
    assert_int_equal(cat_count(c), 4);
    assert_int_equal(cat_category(c, 4), cat_category(c, 1));
    unlink(path);
    rmdir(dir);
    assert_int_equal(cat_load_file(c, "/nonexistent/items.jsonl", &ok, &bad, NULL, NULL, &e),
                     ERR_CONFIG);
    cat_close(c);
}

static void test_sources_spec(void **st)
{
    struct src_spec sp;
    struct err e = {0};

    (void)st;
    assert_int_equal(src_parse("gru:800,covis:400,trending:100,new:100", 50, 10, &sp, &e), 0);
    assert_int_equal(sp.n, 4);
    assert_int_equal(sp.pool, 1400);
    assert_int_equal(src_quota(&sp, REC_COVISIT), 400);
    assert_int_equal(src_quota(&sp, REC_POPULAR), 100);
    assert_int_equal(src_parse("gru:800,bogus:3", 50, 10, &sp, &e), ERR_CONFIG);
    assert_non_null(strstr(e.msg, "bogus"));
    assert_int_equal(src_parse("gru:0", 50, 10, &sp, &e), ERR_CONFIG);
    assert_int_equal(src_parse("gru:4000,new:2000", 50, 10, &sp, &e), ERR_CONFIG);
    assert_int_equal(src_parse("gru:10,gru:10", 50, 10, &sp, &e), ERR_CONFIG);
    assert_int_equal(src_parse("gru", 50, 10, &sp, &e), ERR_CONFIG);
    assert_int_equal(src_parse("", 50, 10, &sp, &e), ERR_OK);
    assert_int_equal(sp.legacy, 1);
}

/* The compacted topic: records (and a bad one, named) reach the
 * catalogue while the worker runs, go to Redis, and a reopened feed has
 * them at once from Redis, before reading the topic; the new items'
 * counts go to Redis and come back as totals. */
static void produce(struct kq *q, struct codec *cd, const char *json)
{
    struct buf b;
    struct err e = {0};

    buf_init(&b, 0);
    if (codec_from_json(cd, CODEC_CATALOG_ITEM, json, strlen(json), &b, &e))
        fail_msg("%s: %s", json, e.msg);
    assert_int_equal(kq_produce(q, "catalog", "k", 1, b.data, b.len, NULL, &e), ERR_OK);
    buf_free(&b);
}

static void test_topic_and_redis(void **st)
{
    struct test_redis r;
    struct test_broker b;
    struct cfg *cf;
    struct codec *cd;
    struct cfeed *f;
    struct kq *q;
    struct err e = {0};
    char kv[320];
    struct cfg_kv props[1];
    struct kq_opts po = {.props = props, .n_props = 1};
    struct state_redis_opts ro = {.timeout_ms = 2000, .prefix = "t:"};
    size_t got = 0;
    int dim;

    (void)st;
    if (test_redis_start(&r) || test_broker_start(&b, "catalog:2"))
        fail_msg("redis-server or the broker did not start");
    ro.port = r.port;
    assert_non_null(cf = cfg_new());
    snprintf(kv, sizeof(kv), "bootstrap.servers=%s", b.bootstrap);
    assert_int_equal(cfg_set_arg(cf, kv, &e), ERR_OK);
    assert_int_equal(cfg_set_arg(cf, "clickstream.catalog_topic=catalog", &e), ERR_OK);
    assert_int_equal(cfg_finish(cf, &e), ERR_OK);
    assert_non_null(cd = codec_open("schemas", &e));
    props[0] = (struct cfg_kv){"bootstrap.servers", b.bootstrap, "test"};
    assert_non_null(q = kq_open(&po, &e));
    produce(q, cd, "{\"id\":12,\"category\":\"shoes\",\"region\":\"eu\",\"price\":20,"
                   "\"created\":1700000000000,\"embedding\":[1,2,3]}");
    produce(q, cd, "{\"id\":900,\"category\":\"hats\",\"region\":\"eu\",\"price\":3,"
                   "\"created\":1700000000000,\"embedding\":null}"); /* id past max: refused */
    produce(q, cd, "{\"id\":13,\"category\":\"hats\",\"region\":\"us\",\"price\":3,"
                   "\"created\":1700000000001,\"embedding\":null}");
    assert_int_equal(kq_serve(q, 2000, &e), ERR_OK);
    assert_int_equal(cfeed_open(&f, cf, &ro, cd, 100, 10, &e), ERR_OK);
    assert_non_null(f);
    for (int t = 0; t < 100 && got < 3; t++) {
        got += cfeed_poll(f, 10);
        test_sleep_ms(50);
    }
    assert_int_equal(got, 3);
    assert_int_equal(cfeed_counts(f)->topic_ok, 2);
    assert_int_equal(cfeed_counts(f)->topic_bad, 1);
    assert_true(cat_has(cfeed_catalog(f), 12) && cat_has(cfeed_catalog(f), 13));
    assert_non_null(cat_embedding(cfeed_catalog(f), 12, &dim));
    assert_int_equal(dim, 3);
    /* a live update: 13 moves to shoes */
    produce(q, cd, "{\"id\":13,\"category\":\"shoes\",\"region\":\"us\",\"price\":4,"
                   "\"created\":1700000000001,\"embedding\":null}");
    assert_int_equal(kq_serve(q, 2000, &e), ERR_OK);
    for (int t = 0; t < 100 && !cfeed_poll(f, 10); t++)
        test_sleep_ms(50);
    assert_int_equal(cat_category(cfeed_catalog(f), 13), cat_category(cfeed_catalog(f), 12));
    cat_count_new(cfeed_catalog(f), 12, 5, 1);
    cfeed_flush(f);
    cfeed_close(f);
    /* restarted: the catalogue and the counts from Redis, no poll yet */
    assert_int_equal(cfeed_open(&f, cf, &ro, cd, 100, 10, &e), ERR_OK);
    assert_int_equal(cfeed_counts(f)->redis_loaded, 2);
    assert_int_equal(cat_category(cfeed_catalog(f), 13), cat_category(cfeed_catalog(f), 12));
    assert_true(cat_price(cfeed_catalog(f), 13) == 4.0);
    assert_int_equal(cat_impressions(cfeed_catalog(f), 12), 5);
    assert_int_equal(cat_new_clicks(cfeed_catalog(f), 12), 1);
    cat_count_new(cfeed_catalog(f), 12, 2, 0); /* another worker's counts add up */
    cfeed_flush(f);
    assert_int_equal(cat_impressions(cfeed_catalog(f), 12), 7);
    cfeed_close(f);
    kq_close(q, 2000, &e);
    codec_close(cd);
    cfg_free(cf);
    test_broker_stop(&b);
    test_redis_stop(&r);
}

/* A bad record on the catalogue topic is dead-lettered on dlq.topic, the
 * reason naming the field (a negative price), with the record's position;
 * the good record beside it is applied. */
static void test_bad_topic_record_dead_lettered(void **st)
{
    struct test_broker b;
    struct cfg *cf;
    struct codec *cd;
    struct cfeed *f;
    struct kq *q, *dq;
    struct err e = {0};
    char kv[320];
    struct cfg_kv props[1];
    struct kq_opts po = {.props = props, .n_props = 1};
    const char *dt[1] = {"catalog.dlq"};
    struct kq_opts dopts = {.topics = dt, .n_topics = 1, .assign_all = 1, .from_beginning = 1,
                            .props = props, .n_props = 1};
    struct kq_msg *m = NULL;
    struct buf j;
    size_t got = 0;

    (void)st;
    if (test_broker_start(&b, "catalog:1,catalog.dlq:1"))
        fail_msg("the broker did not start");
    assert_non_null(cf = cfg_new());
    snprintf(kv, sizeof(kv), "bootstrap.servers=%s", b.bootstrap);
    assert_int_equal(cfg_set_arg(cf, kv, &e), ERR_OK);
    assert_int_equal(cfg_set_arg(cf, "clickstream.catalog_topic=catalog", &e), ERR_OK);
    assert_int_equal(cfg_set_arg(cf, "dlq.topic=catalog.dlq", &e), ERR_OK);
    assert_int_equal(cfg_finish(cf, &e), ERR_OK);
    assert_non_null(cd = codec_open("schemas", &e));
    props[0] = (struct cfg_kv){"bootstrap.servers", b.bootstrap, "test"};
    assert_non_null(q = kq_open(&po, &e));
    produce(q, cd, "{\"id\":7,\"category\":\"hats\",\"region\":\"eu\",\"price\":-3,"
                   "\"created\":1700000000000,\"embedding\":null}");
    produce(q, cd, "{\"id\":8,\"category\":\"hats\",\"region\":\"eu\",\"price\":3,"
                   "\"created\":1700000000000,\"embedding\":null}");
    assert_int_equal(kq_serve(q, 2000, &e), ERR_OK);
    assert_int_equal(cfeed_open(&f, cf, NULL, cd, 100, 10, &e), ERR_OK);
    for (int t = 0; t < 100 && got < 2; t++) {
        got += cfeed_poll(f, 10);
        test_sleep_ms(50);
    }
    assert_int_equal(got, 2);
    assert_int_equal(cfeed_counts(f)->topic_bad, 1);
    assert_true(cat_has(cfeed_catalog(f), 8) && !cat_has(cfeed_catalog(f), 7));
    cfeed_close(f); /* its dead letters delivered */
    assert_non_null(dq = kq_open(&dopts, &e));
    for (int t = 0; t < 100 && !m; t++)
        assert_int_equal(kq_poll(dq, 100, &m, &e), ERR_OK);
    if (!m)
        fail_msg("no dead letter on catalog.dlq");
    buf_init(&j, 0);
    assert_int_equal(codec_to_json(cd, m->payload, m->len, &j, &e), ERR_OK);
    buf_append(&j, "", 1);
    assert_non_null(strstr((const char *)j.data, "field price"));
    assert_non_null(strstr((const char *)j.data, "\"worker\":\"clickstream\""));
    assert_non_null(strstr((const char *)j.data, "\"src_topic\":\"catalog\""));
    assert_non_null(strstr((const char *)j.data, "\"src_offset\":0"));
    buf_free(&j);
    kq_ack(dq, &m->pos, KQ_ACK_ALL);
    kq_msg_release(m);
    kq_close(dq, 2000, &e);
    kq_close(q, 2000, &e);
    codec_close(cd);
    cfg_free(cf);
    test_broker_stop(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gru_alone),      cmocka_unit_test(test_category_alone),
        cmocka_unit_test(test_region_alone),   cmocka_unit_test(test_popular_alone),
        cmocka_unit_test(test_cart_alone),     cmocka_unit_test(test_new_alone),
        cmocka_unit_test(test_content_alone),  cmocka_unit_test(test_covisit_alone),
        cmocka_unit_test(test_union_dedups),   cmocka_unit_test(test_new_item_boost),
        cmocka_unit_test(test_live_update),    cmocka_unit_test(test_bad_records),
        cmocka_unit_test(test_files),          cmocka_unit_test(test_sources_spec),
        cmocka_unit_test(test_topic_and_redis),
        cmocka_unit_test(test_bad_topic_record_dead_lettered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
