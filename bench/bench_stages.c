/* Per-stage cost of the transactions pipeline, ns/event, median of 5 runs.
 * A figure, not a test.  usage: bench_stages MODEL500.json [N]
 * Time is this thread's CPU time: the same as wall time on an idle core,
 * and not inflated by the time slices other processes take from the 2
 * shared cores (every stage here runs on this one thread). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "features.h"
#include "gbdt.h"
#include "scorecard.h"

#define REPS 5
#define USERS 1000

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report(const char *stage, double *ns)
{
    qsort(ns, REPS, sizeof(double), cmp);
    printf("| %-42s | %9.0f | %9.0f | %9.0f |\n", stage, ns[REPS / 2], ns[0], ns[REPS - 1]);
}

/* Tree scoring with the handle's kernel level, per row then batched.
 * The default level goes under the stage names bench/run.sh reads, the
 * others as "gbdt per row, <level> level". */
static double bench_gbdt(const struct gbdt *g, const float *x, int n, double *probs, int is_default)
{
    char stage[64];
    double ns[REPS], sink = 0;
    const char *isa = gbdt_isa_name(gbdt_isa(g));

    for (int k = 0; k < REPS; k++) {
        double t = now_ns();
        for (int i = 0; i < n; i++)
            sink += gbdt_predict(g, x + (size_t)i * FEAT_TXN_DIM);
        ns[k] = (now_ns() - t) / n;
    }
    if (is_default)
        snprintf(stage, sizeof(stage), "gbdt, 500 trees depth 6, per row (%s)", isa);
    else
        snprintf(stage, sizeof(stage), "gbdt per row, %s level", isa);
    report(stage, ns);
    for (int k = 0; k < REPS; k++) {
        double t = now_ns();
        gbdt_predict_batch(g, x, (size_t)n, probs);
        ns[k] = (now_ns() - t) / n;
        sink += probs[n / 2];
    }
    if (is_default)
        snprintf(stage, sizeof(stage), "gbdt, 500 trees depth 6, batched (%s)", isa);
    else
        snprintf(stage, sizeof(stage), "gbdt batched, %s level", isa);
    report(stage, ns);
    return sink;
}

/* The default (best) level first, then each lower level the CPU has. */
static int bench_gbdt_levels(struct gbdt *g, const float *x, int n, double *probs, double *sink)
{
    enum gbdt_isa best = gbdt_isa_best(g);
    struct err e = {0};

    *sink += bench_gbdt(g, x, n, probs, 1);
    for (int isa = (int)best - 1; isa >= GBDT_ISA_SCALAR; isa--) {
        if (gbdt_set_isa(g, (enum gbdt_isa)isa, &e)) {
            fprintf(stderr, "bench_stages: %s\n", e.msg);
            return -1;
        }
        *sink += bench_gbdt(g, x, n, probs, 0);
    }
    return gbdt_set_isa(g, best, &e);
}

static void make_event(struct txn_event *ev, int i)
{
    event_txn_init(ev);
    snprintf(ev->event_id, sizeof(ev->event_id), "e%d", i);
    snprintf(ev->user_id, sizeof(ev->user_id), "u%d", i % USERS);
    ev->event_time_ms = 1700000000000LL + (int64_t)i * 1000;
    ev->amount = 500 + i % 2000;
    ev->income = 80 + i % 200;
    ev->expenses = 40 + i % 50;
    ev->term_months = 12 + 12 * (i % 5);
    ev->age = 20 + i % 50;
    if (i % 3)
        ev->debt = i % 3000;
    if (i % 5 == 0) {
        ev->credit_limit = 5000;
        ev->credit_used = i % 5000;
    }
    snprintf(ev->home, sizeof(ev->home), "rent");
    ev->past_records = i % 9 == 0;
}

int main(int argc, char **argv)
{
    int n = argc > 2 ? atoi(argv[2]) : 200000;
    struct err e = {0};
    struct codec *cd = codec_open("schemas", &e);
    struct gbdt *g = argc > 1 ? gbdt_open(argv[1], &e) : NULL;
    struct card *c = card_open("models/credit_scorecard.json", &e);
    struct txn_event *evs = calloc((size_t)n, sizeof(*evs)), ev;
    struct feat_state *st = calloc(USERS, sizeof(*st));
    float *x = calloc((size_t)n * FEAT_TXN_DIM, sizeof(float));
    struct buf *msgs = calloc((size_t)n, sizeof(*msgs)), out;
    struct txn_prediction p;
    struct card_result r;
    double ns[REPS], *probs = calloc((size_t)n, sizeof(double));
    volatile double sink = 0;
    char idem_note[256] = "";

    if (!cd || !g || !c || !evs || !st || !x || !msgs || !probs) {
        fprintf(stderr, "bench_stages: %s\n", e.msg[0] ? e.msg : "out of memory");
        return 1;
    }
    if (gbdt_num_features(g) != FEAT_TXN_DIM) {
        fprintf(stderr, "bench_stages: model must have %d features\n", FEAT_TXN_DIM);
        return 1;
    }
    buf_init(&out, 0);
    for (int i = 0; i < n; i++) {
        make_event(&evs[i], i);
        buf_init(&msgs[i], 0);
        codec_encode_txn(cd, &evs[i], &msgs[i], &e);
    }
    memset(&p, 0, sizeof(p));
    /* The plan (common/codec/codec_plan.c, the default), then avro-c alone: the
     * reference it replaced, measured in the same run. */
    for (int plan = 1; plan >= 0; plan--) {
        codec_set_plan(cd, plan ? CODEC_PLAN_ON : CODEC_PLAN_OFF);
        for (int k = 0; k < REPS; k++) {
            double t = now_ns();
            for (int i = 0; i < n; i++)
                sink += codec_decode_txn(cd, msgs[i].data, msgs[i].len, &ev, &e);
            ns[k] = (now_ns() - t) / n;
        }
        report(plan ? "Avro decode (framed)" : "Avro decode (framed), avro-c reference", ns);
    }
    codec_set_plan(cd, CODEC_PLAN_ON);
    for (int k = 0; k < REPS; k++) {
        for (int u = 0; u < USERS; u++)
            feat_state_init(&st[u]);
        double t = now_ns();
        for (int i = 0; i < n; i++) {
            struct feat_state *s = &st[i % USERS];
            sink += feat_txn_validate(&evs[i], &e);
            feat_txn_build(&evs[i], s, x + (size_t)i * FEAT_TXN_DIM);
            feat_state_update(s, &evs[i], s);
        }
        ns[k] = (now_ns() - t) / n;
    }
    report("features (validate+build+update)", ns);
    /* Idempotence per user (issue 23 case 5): the check and the record of
     * each applied event in the user's state, on the states the loop above
     * left (USERS users, so each holds its FEAT_IDS_MAX most recent ids),
     * events spread over 4 partitions. Its Redis cost is the encoded
     * trailer below: the decision travels in the state blob, no round trip. */
    for (int k = 0; k < REPS; k++) {
        double t = now_ns();
        for (int i = 0; i < n; i++) {
            struct feat_state *s = &st[i % USERS];
            int64_t off = (int64_t)k * n + i;        /* new offsets each repetition */
            int32_t part = (int32_t)(i / USERS % 4); /* each user on all 4 */
            if (!feat_state_seen(s, part, off, &evs[i]))
                feat_state_mark(s, part, off, &evs[i]);
            else
                sink += 1;
        }
        ns[k] = (now_ns() - t) / n;
    }
    report("idempotence (seen + mark, 32 ids, 4 parts)", ns);
    {
        unsigned char blob[FEAT_STATE_MAX];
        struct feat_state bare = st[0];
        int full = feat_state_encode(&st[0], blob, sizeof(blob)), plain;
        bare.n_ids = 0;
        bare.n_parts = 0;
        plain = feat_state_encode(&bare, blob, sizeof(blob));
        snprintf(idem_note, sizeof(idem_note),
                 "Idempotence trailer per user in Redis: %d bytes encoded with %d ids and %d "
                 "partitions (state %d bytes without it, %d with it); no extra round trip.",
                 full - plain, st[0].n_ids, st[0].n_parts, plain, full);
    }
    double gsink = 0;
    if (bench_gbdt_levels(g, x, n, probs, &gsink))
        return 1;
    sink += gsink;
    for (int k = 0; k < REPS; k++) {
        float xc[64];
        double t = now_ns();
        for (int i = 0; i < n; i++) {
            for (size_t j = 0; j < card_num_features(c) && j < 64; j++)
                xc[j] =
                    x[(size_t)i * FEAT_TXN_DIM + (size_t)feat_txn_index(card_feature_name(c, j))];
            card_score(c, xc, &r);
            sink += r.points;
        }
        ns[k] = (now_ns() - t) / n;
    }
    report("scorecard (incl. name lookup)", ns);
    /* The prediction's feature_hash (FNV-1a over the vector): row by row,
     * then a batch's rows four side by side, as txn_score_batch does. */
    {
        uint64_t *hs = malloc((size_t)n * sizeof(*hs));
        if (!hs)
            return 1;
        for (int batched = 0; batched < 2; batched++) {
            for (int k = 0; k < REPS; k++) {
                double t = now_ns();
                if (batched)
                    feat_hash_rows(x, (size_t)n, FEAT_TXN_DIM, hs);
                else
                    for (int i = 0; i < n; i++)
                        hs[i] = feat_hash(x + (size_t)i * FEAT_TXN_DIM, FEAT_TXN_DIM);
                ns[k] = (now_ns() - t) / n;
                sink += (int)(hs[n - 1] & 1);
            }
            report(batched ? "feature hash, batch (feat_hash_rows)" : "feature hash, per row",
                   ns);
        }
        free(hs);
    }
    snprintf(p.model_name, sizeof(p.model_name), "credit-risk");
    for (int plan = 1; plan >= 0; plan--) {
        codec_set_plan(cd, plan ? CODEC_PLAN_ON : CODEC_PLAN_OFF);
        for (int k = 0; k < REPS; k++) {
            double t = now_ns();
            for (int i = 0; i < n; i++) {
                memcpy(p.event_id, evs[i].event_id, EV_ID_MAX);
                p.probability = probs[i];
                sink += codec_encode_prediction(cd, &p, &out, &e);
            }
            ns[k] = (now_ns() - t) / n;
        }
        report(plan ? "Avro encode prediction" : "Avro encode prediction, avro-c reference", ns);
    }
    printf("\n%s\n", idem_note);
    (void)sink;
    for (int i = 0; i < n; i++)
        buf_free(&msgs[i]);
    buf_free(&out);
    free(msgs);
    free(evs);
    free(st);
    free(x);
    free(probs);
    gbdt_close(g);
    card_close(c);
    codec_close(cd);
    return 0;
}
