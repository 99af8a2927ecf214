/* streamml-images: grading of image references, with class-activation maps.
 *
 *   images --poll--> decode (Avro) --bad--> images.dlq
 *      |                |
 *      |      load (root / allow-listed http) + decode (JPEG, PNG)
 *      |                |        \--ungradable (too_small, corrupt, ...)--+
 *      |      preprocess (antialiased resize, normalise)                  |
 *      |                |                                                 |
 *      |      forward pass (ONNX), up to images.batch images at once      |
 *      |                |                                                 |
 *      |      softmax, grade, expected grade, referable, CAM (+ PNG)      |
 *      |                |                                                 v
 *      +--- offset stored <-- delivery report <-- predictions.images <----+
 *
 * Every decodable event gets exactly one prediction: status ok, or
 * ungradable with the reason (counted as an error), so a bad image never
 * stalls its partition. Undecodable messages go to the dead-letter topic.
 * There is no per-entity state: an offset is stored once the message's
 * prediction (or dead letter) is delivered. metrics.port serves /metrics,
 * /healthz and /readyz; with monitor.baseline set, the grade distribution,
 * P(referable), latency and the error rate (dead letters + ungradable) are
 * watched and alerts go to monitor.topic (common/predmon.h).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "codec.h"
#include "grader.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "monitor.h"
#include "pipeline.h"
#include "predmon.h"

#define WORKER "images"
#define MODEL_ERROR IMG_NREASONS /* counter slot past the image reasons */

static volatile sig_atomic_t g_run = 1;

static void on_signal(int sig)
{
    (void)sig;
    g_run = 0;
}

struct counters {
    uint64_t messages, ok, ungradable, dead, referable;
    uint64_t reasons[IMG_NREASONS + 1];
};

struct worker {
    struct cfg *cf;
    struct kq *q;
    struct codec *cd;
    struct grader *gr; /* model, loader, batch tensor: common/grader.h */
    const char *out_topic, *dlq_topic;
    size_t cap; /* images per forward pass */
    struct kq_msg **msgs;
    struct image_prediction *preds;
    unsigned char *dead;
    int64_t *t_in;
    struct buf out, dlq;
    struct counters n;
    struct metrics *mx; /* NULL: metrics.port 0 */
    struct mon *mon;    /* NULL: monitor.baseline empty (monitoring off) */
    struct mon_ident mid;
};

/* ---- set-up ---- */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: streamml-images [-c FILE] [-X key=value ...] [-b HOSTS]\n\n"
            "Consumes input.topic (default images) in the consumer group kafka.group.id\n"
            "(default streamml-images). Each image event's uri is loaded (a path under\n"
            "images.root, file://, or http(s) from images.allow_hosts), decoded and graded\n"
            "by images.model (ONNX); predictions go to output.topic (default\n"
            "predictions.images), with a class-activation map PNG under images.cam_dir.\n"
            "Images that cannot be graded get status ungradable and the reason;\n"
            "undecodable messages go to dlq.topic (default images.dlq).\n"
            "SIGTERM/SIGINT: finish in-flight work, commit, leave the group, exit 0.\n"
            "Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.\n\n");
    cfg_help(out);
}

/* The shared keys' defaults are the transactions worker's. */
static int images_defaults(struct cfg *cf, struct err *e)
{
    static const char *const kv[][2] = {{"input.topic", "images"},
                                        {"output.topic", "predictions.images"},
                                        {"dlq.topic", "images.dlq"}};

    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
        if (strcmp(cfg_origin(cf, kv[i][0]), "default") == 0 &&
            cfg_set(cf, kv[i][0], kv[i][1], "default", e))
            return e->code;
    return ERR_OK;
}

static int open_grader(struct worker *w, struct err *e)
{
    struct grader_opts o;
    size_t c;

    grader_opts_from_cfg(w->cf, &o);
    if (!(w->gr = grader_open(&o, e)))
        return e->code;
    c = w->cap = grader_batch(w->gr);
    w->msgs = calloc(c, sizeof(*w->msgs));
    w->preds = calloc(c, sizeof(*w->preds));
    w->dead = calloc(c, 1);
    w->t_in = calloc(c, sizeof(int64_t));
    buf_init(&w->out, 0);
    buf_init(&w->dlq, 2 * CODEC_MAX_MESSAGE); /* the original message plus metadata */
    if (!w->msgs || !w->preds || !w->dead || !w->t_in)
        return err_set(e, ERR_NOMEM, "out of memory for a batch of %zu", c);
    return ERR_OK;
}

static const char *group_id(const struct cfg *cf)
{
    return cli_group_id(cf, "streamml-images");
}

static int open_kafka(struct worker *w, struct err *e)
{
    const char *topic = cfg_str(w->cf, "input.topic");
    size_t np;
    struct kq_opts ko = {.group_id = group_id(w->cf), .topics = &topic, .n_topics = 1,
                         .client_id = "streamml-images"};

    ko.props = cfg_kafka(w->cf, &np);
    ko.commit_interval_ms = (int)cfg_int(w->cf, "worker.commit_interval_ms");
    ko.n_props = np;
    ko.stats_cb = w->mx ? metrics_kafka_stats : NULL; /* consumer lag */
    ko.stats_opaque = w->mx;
    w->q = kq_open(&ko, e);
    if (!w->q)
        return e->code;
    log_info("consuming %s as group %s -> %s (dead letters: %s), up to %zu images per pass",
             topic, ko.group_id, w->out_topic, w->dlq_topic, w->cap);
    return ERR_OK;
}

/* /metrics, /healthz, /readyz on metrics.port; the monitor's values
 * (common/predmon.h: grade, expected grade, P(referable)) against
 * monitor.baseline, alerts to monitor.topic. */
static int open_observability(struct worker *w, struct err *e)
{
    const char *name = grader_model_name(w->gr), *version = grader_model_version(w->gr);
    struct metrics_opts mo = {(int)cfg_int(w->cf, "metrics.port"), WORKER, name, version, 0,
                              cfg_str(w->cf, "images.model")};

    if (!(w->mx = metrics_open(&mo, e)) && e->code)
        return e->code;
    w->mid = (struct mon_ident){WORKER, name, version, cfg_str(w->cf, "monitor.topic")};
    w->mon = mon_open_cfg(w->cf, pmon_names(PMON_IMAGES, &(size_t){0}), PMON_IMAGE_DIM, e);
    return !w->mon && e->code ? e->code : ERR_OK;
}

static int worker_open(struct worker *w, struct err *e)
{
    w->out_topic = cfg_str(w->cf, "output.topic");
    w->dlq_topic = cfg_str(w->cf, "dlq.topic");
    w->cd = codec_open(cfg_str(w->cf, "schemas.dir"), e);
    if (!w->cd || open_grader(w, e) ||
        open_observability(w, e) || open_kafka(w, e))
        return e->code;
    return ERR_OK;
}

static void worker_close(struct worker *w)
{
    void *arrays[] = {w->msgs, w->preds, w->dead, w->t_in};

    for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++)
        free(arrays[i]);
    buf_free(&w->out);
    buf_free(&w->dlq);
    grader_close(w->gr);
    mon_close(w->mon);
    metrics_close(w->mx);
    codec_close(w->cd);
}

/* ---- one batch: load, preprocess ---- */

static void dead_letter(struct worker *w, size_t i, const struct err *why)
{
    struct err e = {0};

    w->dead[i] = 1;
    w->n.dead++;
    metrics_add(w->mx, METRICS_DEAD_LETTERS, 1);
    if (w->mon)
        mon_observe_dead(w->mon, pipe_wall_ms());
    if (pipe_dead_letter(w->q, w->cd, &w->dlq, w->dlq_topic, WORKER, w->msgs[i], why, &e))
        log_error("dead letter not sent (offset will not be committed): %s", e.msg);
}

/* Decoded events get a prediction slot; good images a row of the tensor. */
static void prepare(struct worker *w, size_t i)
{
    const struct kq_msg *m = w->msgs[i];
    struct image_event ev;
    struct err e = {0};

    w->t_in[i] = pipe_now_us();
    w->dead[i] = 0;
    if (codec_decode_image_event(w->cd, m->payload, m->len, &ev, &e)) {
        dead_letter(w, i, &e);
        return;
    }
    grader_add(w->gr, i, &ev, m->topic, m->partition, m->offset, &w->preds[i]);
}

static void count(struct worker *w, const struct image_prediction *p)
{
    if (p->ok) {
        w->n.ok++;
        w->n.referable += p->referable;
        return;
    }
    w->n.ungradable++;
    w->n.reasons[grader_reason_index(p)]++; /* IMG_NREASONS: model_error */
}

/* Metrics and the monitor's view of one prediction; an ungradable image
 * counts as an error (mon_observe's degraded flag). */
static void observe(struct worker *w, const struct image_prediction *p)
{
    float x[PMON_IMAGE_DIM];
    double score;

    metrics_add(w->mx, METRICS_PREDICTIONS, 1);
    metrics_add(w->mx, METRICS_UNGRADABLE, !p->ok);
    metrics_observe_latency(w->mx, p->latency_us);
    if (!w->mon)
        return;
    pmon_image_vector(p, x, &score);
    mon_observe(w->mon, x, score, p->latency_us, !p->ok, pipe_wall_ms());
}

static void emit(struct worker *w, size_t i)
{
    const struct kq_msg *m = w->msgs[i];
    struct image_prediction *p = &w->preds[i];
    struct err e = {0};

    p->latency_us = pipe_now_us() - w->t_in[i];
    if (codec_encode_image_prediction(w->cd, p, &w->out, &e) ||
        kq_produce(w->q, w->out_topic, p->patient_id, strlen(p->patient_id), w->out.data,
                   w->out.len, &m->pos, &e)) {
        log_error("prediction for %s not sent (offset will not be committed): %s", p->image_id,
                  e.msg);
        return;
    }
    count(w, p);
    observe(w, p);
    kq_ack(w->q, &m->pos, KQ_ACK_STATE); /* no state to apply */
}

static void process_batch(struct worker *w, size_t n)
{
    grader_begin(w->gr);
    for (size_t i = 0; i < n; i++)
        prepare(w, i);
    grader_run(w->gr, w->preds, n);
    for (size_t i = 0; i < n; i++)
        if (!w->dead[i])
            emit(w, i);
}

/* ---- the loop ---- */

/* Waits for the first message only: the rest of a batch is what is already
 * waiting, so a lone image is graded at once. */
static size_t take_batch(struct worker *w, struct err *e)
{
    size_t n = 0;
    struct kq_msg *m;
    int timeout = (int)cfg_int(w->cf, "worker.poll_ms");

    while (n < w->cap) {
        if (kq_poll(w->q, n ? 0 : timeout, &m, e) || !m)
            break;
        w->msgs[n++] = m;
    }
    return n;
}

static void log_summary(struct worker *w, double secs)
{
    const struct counters *c = &w->n;
    const struct grader_counts *g = grader_counts(w->gr);

    log_info("summary: %llu messages in %.1f s: %llu graded (%llu referable), %llu ungradable "
             "(too_small %llu, corrupt %llu, truncated %llu, missing %llu, unsupported_type "
             "%llu, too_large %llu, forbidden %llu, fetch_failed %llu, model_error %llu), %llu "
             "dead-lettered; %llu forward passes (%.2f images each), %llu CAM overlays written, "
             "%llu failed",
             (unsigned long long)c->messages, secs, (unsigned long long)c->ok,
             (unsigned long long)c->referable, (unsigned long long)c->ungradable,
             (unsigned long long)c->reasons[IMG_TOO_SMALL],
             (unsigned long long)c->reasons[IMG_CORRUPT],
             (unsigned long long)c->reasons[IMG_TRUNCATED],
             (unsigned long long)c->reasons[IMG_MISSING],
             (unsigned long long)c->reasons[IMG_UNSUPPORTED_TYPE],
             (unsigned long long)c->reasons[IMG_TOO_LARGE],
             (unsigned long long)c->reasons[IMG_FORBIDDEN],
             (unsigned long long)c->reasons[IMG_FETCH_FAILED],
             (unsigned long long)c->reasons[MODEL_ERROR], (unsigned long long)c->dead,
             (unsigned long long)g->batches, g->batches ? (double)g->rows / g->batches : 0.0,
             (unsigned long long)g->cams_written, (unsigned long long)g->cam_errors);
}

static int run(struct worker *w)
{
    struct err e = {0};
    int64_t t0 = pipe_now_us(), last_input = t0;
    int64_t idle_us = cfg_int(w->cf, "worker.idle_exit_ms") * 1000;
    uint64_t max_msgs = (uint64_t)cfg_int(w->cf, "worker.max_messages");
    size_t max_inflight = (size_t)cfg_int(w->cf, "worker.max_inflight");

    while (g_run) {
        size_t n = 0;
        if (kq_inflight(w->q) < max_inflight)
            n = take_batch(w, &e);
        if (e.code == ERR_FATAL)
            break;
        if (n) {
            process_batch(w, n);
            for (size_t i = 0; i < n; i++)
                kq_msg_release(w->msgs[i]);
            w->n.messages += n;
            metrics_add(w->mx, METRICS_EVENTS, n);
            last_input = pipe_now_us();
        }
        if (w->mon)
            metrics_add(w->mx, METRICS_ALERTS,
                        mon_tick_publish(w->mon, w->q, w->cd, &w->mid, pipe_wall_ms()));
        metrics_worker_tick(w->mx, w->mon, kq_assigned(w->q), 1, 1); /* no Redis */
        if (kq_serve(w->q, n ? 0 : 10, &e) == ERR_FATAL)
            break;
        if ((max_msgs && w->n.messages >= max_msgs) ||
            (idle_us && pipe_now_us() - last_input > idle_us))
            break;
    }
    log_summary(w, (double)(pipe_now_us() - t0) / 1e6);
    if (e.code == ERR_FATAL) {
        log_error("stopping: %s", e.msg);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct cli cl = {0};
    struct worker w = {0};
    struct err e = {0};
    int rc = cli_parse(&cl, argc, argv, usage);

    if (rc >= 0)
        return rc;
    if (!(w.cf = cli_load(&cl, WORKER)))
        return 2;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (images_defaults(w.cf, &e) || worker_open(&w, &e)) {
        log_error("%s", e.msg);
        fprintf(stderr, "error: %s\n", e.msg);
        rc = e.code == ERR_CONFIG ? 2 : 1;
    } else {
        rc = run(&w);
        /* Drain: deliveries, then commit, leave the group. */
        if (kq_close(w.q, (int)cfg_int(w.cf, "worker.shutdown_timeout_ms"), &e)) {
            log_error("close: %s", e.msg);
            rc = rc ? rc : 1;
        }
        w.q = NULL;
    }
    kq_close(w.q, 0, NULL);
    worker_close(&w);
    cfg_free(w.cf);
    return rc;
}
