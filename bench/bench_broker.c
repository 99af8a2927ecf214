/* Broker alone: the transactions worker's Kafka traffic without its work,
 * i.e. the ceiling the broker and librdkafka put on a worker. A figure, not
 * a test.
 *
 *   bench_broker BOOTSTRAP N [TOPIC_IN] [TOPIC_OUT]
 *
 * Joins a consumer group on TOPIC_IN (default transactions) through the
 * same kq wrapper and settings as the worker, and for each message
 * produces its bytes unchanged (same key, same payload) to TOPIC_OUT
 * (default bench.passthrough), acknowledging the input once delivered, as
 * the worker does. Batches of up to 1000 messages per loop turn. Stops
 * after N deliveries. Events/s counts from the first message polled to the
 * N-th produce call, the span bench/limits.sh measures for the worker (from
 * its first prediction's timestamp to its last); CPU is this process's
 * user+sys over the same span (librdkafka threads included). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "kafka.h"
#include "log.h"

#define BATCH 1000

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* One loop turn: up to BATCH messages passed through. Returns how many were
 * taken, or -1 on a fatal error. */
static long turn(struct kq *q, const char *out, int timeout_ms, struct err *e)
{
    struct kq_msg *m;
    long n = 0;

    while (n < BATCH && kq_poll(q, n ? 0 : timeout_ms, &m, e) == ERR_OK && m) {
        if (kq_produce(q, out, m->key, m->key_len, m->payload, m->len, &m->pos, e))
            return -1;
        kq_ack(q, &m->pos, KQ_ACK_STATE); /* no state here: only delivery is awaited */
        kq_msg_release(m);
        n++;
    }
    if (e->code == ERR_FATAL || kq_serve(q, 0, e) == ERR_FATAL)
        return -1;
    return n;
}

int main(int argc, char **argv)
{
    struct err e = {0};
    struct kq_stats st = {0};
    const char *in, *out;
    double t0 = 0, c0 = 0, t1 = 0, c1 = 0, deadline;
    long n, done = 0;

    if (argc < 3) {
        fprintf(stderr, "usage: bench_broker BOOTSTRAP N [TOPIC_IN] [TOPIC_OUT]\n");
        return 2;
    }
    log_init(LOG_LVL_ERROR, 0, "bench");
    n = atol(argv[2]);
    in = argc > 3 ? argv[3] : "transactions";
    out = argc > 4 ? argv[4] : "bench.passthrough";
    if (n <= 0) {
        fprintf(stderr, "bench_broker: N must be positive\n");
        return 2;
    }
    struct cfg_kv kv[1] = {{"bootstrap.servers", argv[1], "argv"}};
    struct kq_opts o = {.group_id = "bench-broker", .topics = &in, .n_topics = 1, .props = kv,
                        .n_props = 1, .client_id = "bench-broker"};
    struct kq *q = kq_open(&o, &e);
    if (!q) {
        fprintf(stderr, "bench_broker: %s\n", e.msg);
        return 1;
    }
    deadline = now_s() + 120; /* a stack that never delivers must not hang make bench */
    while (st.delivered < (uint64_t)n && now_s() < deadline) {
        long k = turn(q, out, 100, &e);
        if (k < 0) {
            fprintf(stderr, "bench_broker: %s\n", e.msg);
            return 1;
        }
        if (k && t0 == 0) {
            t0 = now_s();
            c0 = cpu_s();
        }
        done += k;
        if (done >= n && t1 == 0) {
            t1 = now_s();
            c1 = cpu_s();
        }
        kq_get_stats(q, &st);
    }
    if (st.delivered < (uint64_t)n) {
        fprintf(stderr, "bench_broker: only %llu of %ld delivered in 120 s\n",
                (unsigned long long)st.delivered, n);
        return 1;
    }
    printf("broker alone: %ld events passed through: %.0f events/s, CPU %.2f us/event "
           "(%.0f events/s to the last delivery)\n",
           n, (double)n / (t1 - t0), (c1 - c0) / (double)n * 1e6, (double)n / (now_s() - t0));
    kq_close(q, 5000, NULL);
    return 0;
}
