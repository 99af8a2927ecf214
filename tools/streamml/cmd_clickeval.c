/* streamml click-eval: offline quality of the clickstream model by replaying
 * a topic of clicks (issue 6): Recall@K and MRR@K of the next click, GRU vs
 * popularity.
 *
 * Reads every partition of the topic with assign() from the oldest record to
 * the end (never a consumer group, never a commit), in arrival order within
 * a partition, so each session (keyed by session id: one partition) is seen
 * in order. Per click, the session's hidden state advances by one GRU step
 * (cstep_advance, common/clickstep.h: the worker's code) and its best K items are kept; when
 * the session's next click arrives, its rank in that list is scored. The
 * baseline is the model's popularity list (metadata "popular"). Ranking is
 * over the whole catalog, as models/clickstream/train.py measures it (no
 * exclusion, no MMR, no exploration): the model's quality, not the policy's.
 * Unknown items do not advance the state; a next click on an unknown item
 * is a miss for both.
 *
 * --search ivf (or clickstream.search=ivf) also ranks through the worker's
 * IVF index (common/ann.h, built from clickstream.ivf_lists/ivf_probe) and
 * reports its figures ("gru_ivf") next to the exact ones, with the mean
 * overlap of the two top-K lists: what approximate search costs in quality.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ann.h"
#include "cli.h"
#include "clickstep.h"
#include "cmds.h"
#include "codec.h"
#include "kafka.h"
#include "log.h"
#include "pipeline.h"
#include "registry.h"
#include "session.h"

#define K_MAX 100

static volatile sig_atomic_t g_run = 1;

static void on_signal(int sig)
{
    (void)sig;
    g_run = 0;
}

struct args {
    struct cli cli;
    const char *topic, *model, *search;
    int k;
    long max_sessions;
};

/* One session: its state and its best K items after its last click. */
struct sess {
    char *id;
    int has_h, has_top;
    float *h;
    int64_t top[K_MAX];
    int64_t top_ivf[K_MAX]; /* --search ivf */
};

/* Open addressing over session ids; grows by doubling. */
struct table {
    struct sess *s;
    size_t n, cap;
};

struct totals {
    long clicks, evaluated, undecodable, unknown, lists;
    double hits, rr, phits, prr, ihits, irr, overlap;
};

/* What one click is ranked with. */
struct eval {
    const struct sess_model *m;
    struct ann *ann; /* NULL: exact only */
    struct ann_query *q;
    const int64_t *pop;
    size_t npop;
    int k;
    float *scratch, *block;
    struct sess_top *top;
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: streamml click-eval --topic T [options]\n\n"
            "Offline quality of the clickstream model: replays every click of topic T\n"
            "(from the oldest record to the end, assign() only: no group, no commit),\n"
            "advances each session's GRU state one click at a time with the worker's code,\n"
            "and scores the rank of each session's next click among the model's best K\n"
            "items, against the model's popularity list. Prints one JSON object.\n\n"
            "  -t, --topic T          topic of click events (default: input.topic)\n"
            "  -m, --model FILE       GRU4Rec ONNX model (default: clickstream.model)\n"
            "  -k N                   cut-off K (default 20, at most %d)\n"
            "  --search exact|ivf     ivf: also rank through the worker's IVF index\n"
            "                         (clickstream.ivf_lists, ivf_probe) and report both\n"
            "                         (default: clickstream.search)\n"
            "  --max-sessions N       refuse more distinct sessions (default 1000000)\n"
            "  -c, --config FILE, -X key=value, -b, --bootstrap HOSTS, --log-level L\n\n"
            "Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.\n",
            K_MAX);
}

static int parse(int argc, char **argv, struct args *a)
{
    static const struct option lo[] = {{"topic", required_argument, NULL, 't'},
                                       {"model", required_argument, NULL, 'm'},
                                       {"max-sessions", required_argument, NULL, 1001},
                                       {"search", required_argument, NULL, 1002},
                                       CLI_LONGOPTS,
                                       {NULL, 0, NULL, 0}};
    int opt, r;
    char *end;

    a->k = 20;
    a->max_sessions = 1000000;
    while ((opt = getopt_long(argc, argv, CLI_SHORTOPTS "t:m:k:", lo, NULL)) != -1) {
        if ((r = cli_opt(&a->cli, opt, optarg)) != 0) {
            if (r < 0)
                return EXIT_USAGE;
            continue;
        }
        switch (opt) {
        case 't':
            a->topic = optarg;
            break;
        case 'm':
            a->model = optarg;
            break;
        case 'k':
            a->k = (int)strtol(optarg, &end, 10);
            if (*end || a->k < 1 || a->k > K_MAX) {
                fprintf(stderr, "error: -k %s: expected 1..%d\n", optarg, K_MAX);
                return EXIT_USAGE;
            }
            break;
        case 1001:
            a->max_sessions = strtol(optarg, &end, 10);
            if (*end || a->max_sessions < 1) {
                fprintf(stderr, "error: --max-sessions %s: expected a positive integer\n", optarg);
                return EXIT_USAGE;
            }
            break;
        case 1002:
            if (strcmp(optarg, "exact") && strcmp(optarg, "ivf")) {
                fprintf(stderr, "error: --search %s: expected exact or ivf\n", optarg);
                return EXIT_USAGE;
            }
            a->search = optarg;
            break;
        case 'h':
            usage(stdout);
            return -1;
        case 'V':
            cli_version(stdout);
            return -1;
        default:
            cli_usage_error("streamml click-eval", lo, argv);
            return EXIT_USAGE;
        }
    }
    /* input.topic defaults to the transactions topic: reading it as clicks
     * gave recall 0.0 and exit 0. The click topic must be named. */
    if (!a->topic) {
        cli_usage_msg("streamml click-eval", "give the click topic: -t TOPIC (e.g. -t clickstream)");
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int grow(struct table *t)
{
    size_t cap = t->cap ? 2 * t->cap : 1024;
    struct sess *s = calloc(cap, sizeof(*s));

    if (!s)
        return -1;
    for (size_t i = 0; i < t->cap; i++) {
        size_t j;
        if (!t->s[i].id)
            continue;
        for (j = hash(t->s[i].id) & (cap - 1); s[j].id; j = (j + 1) & (cap - 1))
            ;
        s[j] = t->s[i];
    }
    free(t->s);
    t->s = s;
    t->cap = cap;
    return 0;
}

/* The session's slot, created empty if new; NULL when out of memory. */
static struct sess *lookup(struct table *t, const char *id, int hidden)
{
    size_t j;

    if ((t->n + 1) * 2 > t->cap && grow(t))
        return NULL;
    for (j = hash(id) & (t->cap - 1); t->s[j].id; j = (j + 1) & (t->cap - 1))
        if (strcmp(t->s[j].id, id) == 0)
            return &t->s[j];
    t->s[j].id = strdup(id);
    t->s[j].h = calloc((size_t)hidden, sizeof(float));
    if (!t->s[j].id || !t->s[j].h)
        return NULL;
    t->n++;
    return &t->s[j];
}

static void table_free(struct table *t)
{
    for (size_t i = 0; i < t->cap; i++) {
        free(t->s[i].id);
        free(t->s[i].h);
    }
    free(t->s);
}

/* 1 / (rank + 1) of item in list[0..k), 0 if absent. */
static double reciprocal_rank(const int64_t *list, int k, int64_t item)
{
    for (int r = 0; r < k; r++)
        if (list[r] == item)
            return 1.0 / (r + 1);
    return 0;
}

static void score_lists(const struct eval *c, const struct sess *s, int64_t item, int known,
                        struct totals *n)
{
    double rr = known ? reciprocal_rank(s->top, c->k, item) : 0;

    n->evaluated++;
    n->hits += rr > 0;
    n->rr += rr;
    rr = known && c->ann ? reciprocal_rank(s->top_ivf, c->k, item) : 0;
    n->ihits += rr > 0;
    n->irr += rr;
    for (size_t r = 0; known && r < (size_t)c->k && r < c->npop; r++)
        if (c->pop[r] == item) {
            n->phits++;
            n->prr += 1.0 / (double)(r + 1);
            break;
        }
}

/* The session's best K items: exact, and through the IVF index. */
static void rank_session(const struct eval *c, struct sess *s, struct totals *n)
{
    int k = c->k, same = 0;

    if (!s->has_h) { /* no known item yet: the cold-start list */
        for (int r = 0; r < k; r++)
            s->top[r] = s->top_ivf[r] = (size_t)r < c->npop ? c->pop[r] : -1;
        return;
    }
    sess_topk(c->m, 1, s->h, k, c->top, c->block);
    for (int r = 0; r < k; r++)
        s->top[r] = c->top[r].item;
    if (!c->ann)
        return;
    if (ann_topk(c->ann, c->q, 1, s->h, k, c->top, NULL))
        return; /* cannot happen: the scratch is sized for K_MAX */
    for (int r = 0; r < k; r++) {
        s->top_ivf[r] = c->top[r].item;
        for (int j = 0; j < k; j++)
            same += s->top_ivf[r] >= 0 && s->top_ivf[r] == s->top[j];
    }
    n->overlap += (double)same / k;
    n->lists++;
}

/* Scores the previous lists of s against item, then advances s by item. */
static void click(const struct eval *c, struct sess *s, int64_t item, struct totals *n)
{
    int known = item >= 0 && item < sess_model_items(c->m);

    if (s->has_top)
        score_lists(c, s, item, known, n);
    if (!cstep_advance(c->m, item, s->h, &s->has_h, c->scratch))
        n->unknown++;
    rank_session(c, s, n);
    s->has_top = 1;
}

static int replay(struct kq *q, struct codec *cd, struct eval *c, const struct args *a,
                  struct totals *n)
{
    struct table t = {0};
    struct err e = {0};
    int hid = sess_model_hidden(c->m), rc = EXIT_OK;

    c->k = a->k;
    c->pop = sess_model_popular(c->m, &c->npop);
    c->scratch = malloc(6 * (size_t)hid * sizeof(float));
    c->block = malloc(SESS_BLOCK * sizeof(float));
    c->top = malloc(K_MAX * sizeof(*c->top));
    if (!c->scratch || !c->block || !c->top)
        rc = EXIT_RUNTIME;
    while (rc == EXIT_OK && g_run && !kq_at_end(q)) {
        struct kq_msg *msg;
        struct click_event ev;
        struct sess *s;
        if (kq_poll(q, 200, &msg, &e)) {
            fprintf(stderr, "error: %s\n", e.msg);
            rc = EXIT_RUNTIME;
            break;
        }
        if (!msg)
            continue;
        if (codec_decode_click_event(cd, msg->payload, msg->len, &ev, &e)) {
            fprintf(stderr, "%s [%d] @ %lld: %s\n", msg->topic, (int)msg->partition,
                    (long long)msg->offset, e.msg);
            n->undecodable++;
        } else if (!(s = lookup(&t, ev.session_id, hid))) {
            fprintf(stderr, "error: out of memory at %zu sessions\n", t.n);
            rc = EXIT_RUNTIME;
        } else if ((long)t.n > a->max_sessions) {
            fprintf(stderr, "error: more than %ld sessions (--max-sessions)\n", a->max_sessions);
            rc = EXIT_USAGE;
        } else {
            n->clicks++;
            click(c, s, ev.item_id, n);
        }
        kq_msg_release(msg);
    }
    if (!g_run)
        rc = EXIT_RUNTIME; /* interrupted: the figures would be partial */
    table_free(&t);
    free(c->scratch);
    free(c->block);
    free(c->top);
    return rc;
}

static void print_totals(const struct args *a, const struct eval *c, const struct totals *n)
{
    double d = n->evaluated ? (double)n->evaluated : 1.0;

    printf("{\"model\":\"%s\",\"model_version\":\"%s\",\"k\":%d,\"clicks\":%ld,"
           "\"evaluated\":%ld,\"unknown_items\":%ld,\"undecodable\":%ld,"
           "\"gru\":{\"recall\":%.10f,\"mrr\":%.10f},"
           "\"popularity\":{\"recall\":%.10f,\"mrr\":%.10f},\"search\":\"%s\"",
           sess_model_name(c->m), sess_model_version(c->m), a->k, n->clicks, n->evaluated,
           n->unknown, n->undecodable, n->hits / d, n->rr / d, n->phits / d, n->prr / d,
           c->ann ? "ivf" : "exact");
    if (c->ann)
        printf(",\"gru_ivf\":{\"recall\":%.10f,\"mrr\":%.10f},"
               "\"ivf\":{\"lists\":%d,\"probe\":%d,\"build_ms\":%.1f,\"overlap\":%.10f}",
               n->ihits / d, n->irr / d, ann_lists(c->ann), ann_probe(c->ann), ann_build_ms(c->ann),
               n->lists ? n->overlap / (double)n->lists : 0.0);
    printf("}\n");
}

int cmd_click_eval(int argc, char **argv)
{
    struct args a = {0};
    struct err e = {0};
    struct codec *cd = NULL;
    struct reg *reg = NULL;
    struct kq *q = NULL;
    struct sess_model *m = NULL;
    struct eval c = {0};
    struct totals n = {0};
    struct cfg *cf;
    size_t np;
    int rc = parse(argc, argv, &a);

    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if (!(cf = cli_load(&a.cli, "click-eval")))
        return EXIT_USAGE;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    const char *topic = a.topic ? a.topic : cfg_str(cf, "input.topic");
    struct kq_opts ko = {.topics = &topic,
                         .n_topics = 1,
                         .assign_all = 1,
                         .from_beginning = 1,
                         .client_id = "streamml-click-eval"};
    ko.props = cfg_kafka(cf, &np);
    ko.n_props = np;
    if (sess_model_open(&m, a.model ? a.model : cfg_str(cf, "clickstream.model"), &e) ||
        cstep_search_open(cf, a.search, m, K_MAX, &c.ann, &c.q, &e) ||
        !(cd = pipe_codec_open(cf, &reg, NULL, NULL, 0, &e)) || !(q = kq_open(&ko, &e))) {
        fprintf(stderr, "error: %s\n", e.msg);
        rc = e.code == ERR_CONFIG ? EXIT_USAGE : EXIT_RUNTIME;
    } else {
        c.m = m;
        if ((rc = replay(q, cd, &c, &a, &n)) == EXIT_OK) {
            print_totals(&a, &c, &n);
            fprintf(stderr, "replayed %ld click(s) of %s, %ld next clicks scored\n", n.clicks,
                    topic, n.evaluated);
        }
    }
    kq_close(q, 0, NULL);
    codec_close(cd);
    reg_close(reg);
    ann_query_close(c.q);
    ann_close(c.ann);
    sess_model_close(m);
    cfg_free(cf);
    return rc;
}
