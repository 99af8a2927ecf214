/* common/io/kafka_close.c: closing a kq handle within a deadline (drain the
 * producer, commit, leave the group, destroy), the blocking part on a
 * thread of its own. Split out of kafka.c; kafka_int.h holds what the two
 * files share. */
#include "kafka.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "kafka_int.h"

static int drain(struct kq *q, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 50) {
        if (q->prod)
            rd_kafka_poll(q->prod, 50);
        if (q->inflight == 0 && (!q->prod || rd_kafka_outq_len(q->prod) == 0))
            return ERR_OK;
    }
    return ERR_TIMEOUT;
}

/* The blocking end of a close (commit, leave the group, destroy), run on
 * its own thread so that kq_close can give up on it at its deadline:
 * rd_kafka_consumer_close waits for the coordinator however long it takes
 * when the broker died at the same moment. */
struct closer {
    struct kq *q;
    int commit, flush_ms;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const char *stage; /* what it is doing; NULL once done */
};

static void closer_stage(struct closer *c, const char *stage)
{
    pthread_mutex_lock(&c->mu);
    c->stage = stage;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void close_handles(struct closer *c)
{
    struct kq *q = c->q;

    if (q->cons) {
        closer_stage(c, "offset commit");
        kq_store_offsets(q);
        if (c->commit)
            rd_kafka_commit(q->cons, NULL, 0);
        closer_stage(c, "consumer close (leaving the group)");
        rd_kafka_consumer_close(q->cons);
        rd_kafka_destroy(q->cons);
        q->cons = NULL;
    }
    if (q->prod) {
        closer_stage(c, "producer flush");
        rd_kafka_flush(q->prod, c->flush_ms);
        kq_prod_topics_free(q); /* librdkafka wants its topic handles gone first */
        rd_kafka_destroy(q->prod);
        q->prod = NULL;
    }
}

static void *closer_main(void *arg)
{
    struct closer *c = arg;

    close_handles(c);
    closer_stage(c, NULL);
    return NULL;
}

/* What was given up on at a deadline: kept reachable (the thread still
 * uses it until the process exits), never freed. */
static struct closer *abandoned;

/* Runs close_handles with a deadline. ERR_TIMEOUT naming the stage that
 * did not finish; the thread and the handles are then left to the exit. */
static int close_bounded(struct closer *c, int64_t deadline_ms, struct err *e)
{
    pthread_t th;
    struct timespec ts;
    const char *stuck;

    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->stage = "starting";
    if (pthread_create(&th, NULL, closer_main, c) != 0) {
        close_handles(c); /* no thread: unbounded, as before */
        return ERR_OK;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)((deadline_ms - kq_mono_ms()) / 1000);
    ts.tv_nsec += (long)((deadline_ms - kq_mono_ms()) % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->mu);
    while (c->stage && pthread_cond_timedwait(&c->cv, &c->mu, &ts) == 0)
        ;
    stuck = c->stage;
    pthread_mutex_unlock(&c->mu);
    if (!stuck) {
        pthread_join(th, NULL);
        pthread_cond_destroy(&c->cv);
        pthread_mutex_destroy(&c->mu);
        return ERR_OK;
    }
    pthread_detach(th);
    abandoned = c;
    return err_set(e, ERR_TIMEOUT,
                   "kafka: shutdown deadline passed during %s (broker unreachable?): "
                   "offsets not committed will be re-delivered",
                   stuck);
}

static void kq_free(struct kq *q)
{
    for (struct kq_box *b = q->boxes, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    for (size_t i = 0; i < q->n_tracks; i++) {
        free(q->tracks[i].offs);
        free(q->tracks[i].flags);
    }
    free(q->tracks);
    for (size_t i = 0; i < q->n_topics; i++)
        free(q->topics[i]);
    free(q);
}

int kq_close(struct kq *q, int timeout_ms, struct err *e)
{
    struct closer *c;
    int64_t deadline;
    int rc = ERR_OK, crc;

    if (!q)
        return ERR_OK;
    deadline = kq_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    if (q->prod && timeout_ms > 0 && drain(q, timeout_ms))
        rc = err_set(e, ERR_TIMEOUT, "kafka: %zu message(s) unacknowledged at close: "
                     "they will be re-delivered", q->inflight);
    c = calloc(1, sizeof(*c));
    if (!c) {
        kq_free(q); /* leaks the handles rather than block unbounded */
        return err_set(e, ERR_NOMEM, "kafka: out of memory at close");
    }
    c->q = q;
    c->commit = !q->assign_all && timeout_ms > 0;
    c->flush_ms = timeout_ms > 0 ? timeout_ms : 0;
    if (timeout_ms <= 0) {
        close_handles(c); /* immediate close: no commit, nothing to wait for */
        crc = ERR_OK;
    } else {
        /* A drain that used the whole deadline still leaves the group a
         * moment to be left cleanly. */
        struct err ce = {0};
        crc = close_bounded(c, deadline > kq_mono_ms() + 500 ? deadline : kq_mono_ms() + 500, &ce);
        if (crc) /* q and c stay with the stuck thread */
            return err_set(e, crc, "%s%s", ce.msg,
                           rc ? " (after a drain that timed out: unacknowledged input too)" : "");
    }
    free(c);
    if (q->fatal && rc == ERR_OK)
        rc = err_set(e, ERR_FATAL, "kafka: %s", q->fatal_msg);
    kq_free(q);
    return rc;
}
