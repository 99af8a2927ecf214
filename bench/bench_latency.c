/* End-to-end latency at a fixed offered load: event produced -> its
 * prediction consumed, through the broker and a running worker.
 * A figure, not a test.
 *
 *   bench_latency BOOTSTRAP RATE SECONDS [USERS]
 *
 * Produces RATE events/s for SECONDS (paced against the clock, not against
 * the answers, so a slow worker shows as latency, not as a lower rate) and
 * reads predictions.transactions at the same time in a second thread. Each
 * event id carries its index; its due time is kept per index. Prints one
 * line: offered and achieved rate, p50/p99/p99.9/max latency in ms, and
 * how many predictions were missing when the wait ended; its own CPU time
 * goes to stderr.
 *
 * It must not take the cores it measures (issue 19): the sender wakes once
 * per tick (TICK_US, default 1,000 us; clock_nanosleep to an absolute
 * time, timer slack 1 us) and produces every event due by then in one
 * burst, then serves its producer once. Each event's latency is measured
 * from its due time (start + index / RATE), not from its send: the tick's
 * wait (up to TICK_US) counts against the pipeline, never for it. TICK_US=0
 * wakes once per event as the generator did before (still measured from the
 * due time). The reader blocks in its consumer's poll, which returns as a
 * prediction arrives, and finds the event id in the Avro bytes (no JSON
 * decode).
 * SPIN=1 brings back the generator of before (one thread polling both
 * sides without a wait), for comparisons. LINGER_MS (default 0): its
 * producer's linger.ms (a fraction of a millisecond is allowed). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"
#include "kafka.h"
#include "log.h"

#define TOPIC_IN "transactions"
#define TOPIC_OUT "predictions.transactions"
#define DRAIN_S 10 /* wait for late predictions after the last send */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void make_event(struct txn_event *ev, long i, int users)
{
    static int pid; /* getpid is a system call: once */

    event_txn_init(ev);
    pid = pid ? pid : (int)getpid();
    snprintf(ev->event_id, sizeof(ev->event_id), "L%d-%ld", pid, i);
    snprintf(ev->user_id, sizeof(ev->user_id), "u%ld", (i * 7919) % users);
    ev->event_time_ms = 1700000000000LL + i * 10;
    ev->amount = 500 + (double)(i % 2000);
    ev->income = 80 + (double)(i % 200);
    ev->expenses = 40 + (double)(i % 50);
    ev->term_months = 12 + 12 * (double)(i % 5);
    ev->age = 20 + (double)(i % 50);
    snprintf(ev->home, sizeof(ev->home), "rent");
}

/* Index of the event a prediction answers, from its JSON form; -1 if none. */
static long pred_index(struct codec *cd, const struct kq_msg *m, struct buf *js)
{
    struct err e = {0};
    char tag[40];
    const char *p;
    int n = snprintf(tag, sizeof(tag), "\"event_id\":\"L%d-", (int)getpid());

    /* Another run's events (a group replaying its topic) carry another pid. */
    buf_reset(js);
    if (codec_to_json(cd, m->payload, m->len, js, &e))
        return -1;
    p = strstr((const char *)js->data, tag);
    return p ? strtol(p + n, NULL, 10) : -1;
}

/* Index of the event a prediction answers, from its Avro bytes: the
 * event id "L<pid>-<index>" is a string there, after its length (a zigzag
 * varint of one byte at this size); -1 if none. */
static long pred_index_raw(const struct kq_msg *m)
{
    static char tag[40]; /* once: getpid and snprintf per message showed in a profile */
    static int n;
    const unsigned char *p;

    if (!n)
        n = snprintf(tag, sizeof(tag), "L%d-", (int)getpid());
    p = memmem(m->payload, m->len, tag, (size_t)n);
    const unsigned char *end = (const unsigned char *)m->payload + m->len;
    long idx = 0;
    size_t len;

    if (!p || p == m->payload || (p[-1] & 0x81) || (len = p[-1] >> 1) <= (size_t)n ||
        len > (size_t)(end - p) || len - (size_t)n > 18)
        return -1;
    for (size_t k = (size_t)n; k < len; k++) {
        if (p[k] < '0' || p[k] > '9')
            return -1;
        idx = idx * 10 + (p[k] - '0');
    }
    return idx;
}

struct run {
    struct kq *prod, *cons;
    struct codec *cd;
    double *sent, *lat;
    double *recv;        /* arrival times, written by the reader thread only */
    long n, got;
    atomic_int stop;     /* the reader's last wait is over */
    struct buf out, js;
};

static void take_predictions(struct run *r, int timeout_ms)
{
    struct err e = {0};
    struct kq_msg *m;

    while (kq_poll(r->cons, timeout_ms, &m, &e) == ERR_OK && m) {
        long i = pred_index(r->cd, m, &r->js);
        if (i >= 0 && i < r->n && r->lat[i] < 0) {
            r->lat[i] = now_s() - r->sent[i];
            r->got++;
        }
        kq_msg_release(m);
        timeout_ms = 0;
    }
}

/* The reader thread: arrival time per index until told to stop. */
static void *reader(void *arg)
{
    struct run *r = arg;
    struct err e = {0};
    struct kq_msg *m;

    while (!atomic_load(&r->stop)) {
        if (kq_poll(r->cons, 50, &m, &e) != ERR_OK || !m)
            continue;
        long i = pred_index_raw(m);
        if (i >= 0 && i < r->n && r->recv[i] < 0) {
            r->recv[i] = now_s();
            r->got++;
        }
        kq_msg_release(m);
    }
    return NULL;
}

static int send_one(struct run *r, long i, int users, double due, struct err *e)
{
    struct txn_event ev;

    make_event(&ev, i, users);
    buf_reset(&r->out);
    if (codec_encode_txn(r->cd, &ev, &r->out, e))
        return e->code;
    r->sent[i] = due;
    return kq_produce(r->prod, TOPIC_IN, ev.user_id, strlen(ev.user_id), r->out.data, r->out.len,
                      NULL, e);
}

/* Event i's due time, the start plus i / RATE; what its latency is
 * measured from (the tick's wait counts against the pipeline). */
static double due_s(double base, long i, double rate)
{
    return base + (double)i / rate;
}

/* Paced by ticks (TICK_US, default 1,000 us; 0 = a wake-up per event, as
 * before): at each tick every event already due is encoded and produced in
 * one burst, and its latency counts from its due time, not from the send. */
static int offer_paced(struct run *r, double rate, int users, struct err *e)
{
    struct timespec t0, due;
    const char *tk = getenv("TICK_US");
    double base, tick = (tk ? atof(tk) : 1000.0) / 1e6, next;
    long i = 0;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    base = (double)t0.tv_sec + (double)t0.tv_nsec / 1e9;
    for (next = base; i < r->n;) {
        /* the later of the next tick and the next event's due time */
        double d = due_s(base, i, rate) > next ? due_s(base, i, rate) : next;
        due.tv_sec = (time_t)d;
        due.tv_nsec = (long)((d - (double)due.tv_sec) * 1e9);
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL) != 0)
            ;
        double now = now_s();
        for (; i < r->n && due_s(base, i, rate) <= now; i++)
            if (send_one(r, i, users, due_s(base, i, rate), e))
                return e->code;
        kq_serve(r->prod, 0, e);
        next = now + tick;
    }
    return ERR_OK;
}

/* Extra client settings from the environment, "k=v,k=v" (GEN_PRODUCER,
 * GEN_CONSUMER), after the fixed ones: for experiments on the measuring
 * side (e.g. GEN_PRODUCER=enable.idempotence=false). Up to 8; the strings
 * are kept for the process's life. */
#define EXTRA_MAX 8
static size_t env_props(const char *var, struct cfg_kv *kv, size_t n)
{
    const char *v = getenv(var);
    char *s, *tok, *save = NULL;

    if (!v || !*v || !(s = strdup(v)))
        return n;
    for (tok = strtok_r(s, ",", &save); tok && n < 3 + EXTRA_MAX; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq)
            continue;
        *eq = '\0';
        kv[n++] = (struct cfg_kv){tok, eq + 1, var};
    }
    return n;
}

static int open_run(struct run *r, const char *bootstrap, long n, struct err *e)
{
    /* READ_TOPIC=transactions: the reader takes the events themselves (no
     * worker needed): the generator, broker and fetch path alone. */
    static const char *out_topic;
    out_topic = getenv("READ_TOPIC") ? getenv("READ_TOPIC") : TOPIC_OUT;
    /* The measuring side must not add its own waits: no linger, and fetches
     * answered as soon as data is there. The mock cluster does not answer a
     * waiting Fetch when data arrives, so this consumer's fetch.wait.max.ms
     * (1 ms) is added to every measured latency, up to 1 ms. */
    const char *linger = getenv("LINGER_MS") ? getenv("LINGER_MS") : "0";
    static struct cfg_kv pkv[3 + EXTRA_MAX], ckv[3 + EXTRA_MAX];
    size_t np, nc;

    pkv[0] = (struct cfg_kv){"bootstrap.servers", bootstrap, "argv"};
    pkv[1] = (struct cfg_kv){"linger.ms", linger, "bench"};
    ckv[0] = (struct cfg_kv){"bootstrap.servers", bootstrap, "argv"};
    ckv[1] = (struct cfg_kv){"fetch.wait.max.ms", "1", "bench"};
    ckv[2] = (struct cfg_kv){"fetch.error.backoff.ms", "1", "bench"};
    np = env_props("GEN_PRODUCER", pkv, 2);
    nc = env_props("GEN_CONSUMER", ckv, 3);
    struct kq_opts po = {.props = pkv, .n_props = np, .client_id = "bench-latency"};
    struct kq_opts co = {.topics = &out_topic, .n_topics = 1, .assign_all = 1,
                         .from_beginning = 0, .props = ckv, .n_props = nc,
                         .client_id = "bench-latency"};

    r->n = n;
    r->sent = calloc((size_t)n, sizeof(double));
    r->lat = malloc((size_t)n * sizeof(double));
    r->recv = malloc((size_t)n * sizeof(double));
    if (!r->sent || !r->lat || !r->recv)
        return err_set(e, ERR_NOMEM, "out of memory");
    for (long i = 0; i < n; i++)
        r->lat[i] = r->recv[i] = -1;
    buf_init(&r->out, 0);
    buf_init(&r->js, 0);
    if (!(r->cd = codec_open("schemas", e)) || !(r->prod = kq_open(&po, e)) ||
        !(r->cons = kq_open(&co, e)))
        return e->code;
    return ERR_OK;
}

static int offer(struct run *r, double rate, int users, struct err *e)
{
    struct txn_event ev;
    double t0 = now_s();

    for (long i = 0; i < r->n; i++) {
        double due = t0 + (double)i / rate;
        while (now_s() < due) {
            take_predictions(r, 0);
            kq_serve(r->prod, 0, e);
        }
        make_event(&ev, i, users);
        buf_reset(&r->out);
        if (codec_encode_txn(r->cd, &ev, &r->out, e))
            return e->code;
        r->sent[i] = now_s();
        if (kq_produce(r->prod, TOPIC_IN, ev.user_id, strlen(ev.user_id), r->out.data,
                       r->out.len, NULL, e))
            return e->code;
        kq_serve(r->prod, 0, e);
    }
    return ERR_OK;
}

static int warm_up(struct run *r, int users, struct err *e)
{
    struct txn_event ev;
    struct kq_msg *m;

    make_event(&ev, 0, users);
    ev.event_id[0] = 'W';
    buf_reset(&r->out);
    if (codec_encode_txn(r->cd, &ev, &r->out, e) ||
        kq_produce(r->prod, TOPIC_IN, ev.user_id, strlen(ev.user_id), r->out.data, r->out.len,
                   NULL, e))
        return e->code;
    for (double end = now_s() + 5; now_s() < end;) {
        kq_serve(r->prod, 10, e);
        if (kq_poll(r->cons, 10, &m, e) == ERR_OK && m) {
            kq_msg_release(m);
            break;
        }
    }
    return ERR_OK;
}

static void report(struct run *r, double rate, double secs)
{
    double *v = malloc((size_t)r->n * sizeof(double));
    long k = 0;

    for (long i = 0; i < r->n; i++)
        if (r->lat[i] >= 0)
            v[k++] = r->lat[i] * 1e3;
    qsort(v, (size_t)k, sizeof(double), cmp);
    if (k == 0) {
        printf("| %.0f | 0 | - | - | - | - | %ld |\n", rate, r->n);
    } else {
        printf("| %.0f | %.0f | %.2f | %.2f | %.2f | %.2f | %ld |\n", rate, (double)r->n / secs,
               v[k / 2], v[(size_t)((double)k * 0.99)], v[(size_t)((double)k * 0.999)],
               v[k - 1], r->n - k);
    }
    free(v);
}

int main(int argc, char **argv)
{
    struct run r = {0};
    struct err e = {0};
    double rate, secs, t0;
    int users, rc_offer, spin = getenv("SPIN") && atoi(getenv("SPIN"));
    pthread_t rd;
    struct rusage ru;

    if (argc < 4) {
        fprintf(stderr, "usage: bench_latency BOOTSTRAP RATE SECONDS [USERS]\n");
        return 2;
    }
    log_init(LOG_LVL_ERROR, 0, "bench");
    rate = atof(argv[2]);
    secs = atof(argv[3]);
    users = argc > 4 ? atoi(argv[4]) : 20000;
    if (rate <= 0 || secs <= 0 || users <= 0) {
        fprintf(stderr, "bench_latency: RATE, SECONDS and USERS must be positive\n");
        return 2;
    }
    if (open_run(&r, argv[1], (long)(rate * secs), &e)) {
        fprintf(stderr, "bench_latency: %s\n", e.msg);
        return 1;
    }
    /* Warm-up, not measured: the producer's metadata and idempotence
     * handshake, and the consumer's assignment, happen before the clock
     * starts (one event sent, its prediction awaited for up to 5 s). */
    if (warm_up(&r, users, &e)) {
        fprintf(stderr, "bench_latency: %s\n", e.msg);
        return 1;
    }
    t0 = now_s();
    if (spin) {
        if (offer(&r, rate, users, &e)) {
            fprintf(stderr, "bench_latency: %s\n", e.msg);
            return 1;
        }
        secs = now_s() - t0;
        for (double end = now_s() + DRAIN_S; r.got < r.n && now_s() < end;)
            take_predictions(&r, 100);
    } else {
        prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0); /* 1 us, not the default 50 */
        if (pthread_create(&rd, NULL, reader, &r)) {
            fprintf(stderr, "bench_latency: cannot start the reader thread\n");
            return 1;
        }
        rc_offer = offer_paced(&r, rate, users, &e);
        secs = now_s() - t0;
        for (double end = now_s() + DRAIN_S; !rc_offer && now_s() < end;) {
            long got = 0;
            for (long i = 0; i < r.n; i++)
                got += r.recv[i] >= 0;
            if (got == r.n)
                break;
            kq_serve(r.prod, 100, &e);
        }
        atomic_store(&r.stop, 1);
        pthread_join(rd, NULL);
        if (rc_offer) {
            fprintf(stderr, "bench_latency: %s\n", e.msg);
            return 1;
        }
        for (long i = 0; i < r.n; i++)
            r.lat[i] = r.recv[i] >= 0 ? r.recv[i] - r.sent[i] : -1;
    }
    report(&r, rate, secs);
    getrusage(RUSAGE_SELF, &ru);
    fprintf(stderr, "bench_latency: %s generator, own CPU %.2f s (user+sys) over %.1f s\n",
            spin ? "spinning" : "paced",
            (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6,
            now_s() - t0);
    kq_close(r.prod, 5000, NULL);
    kq_close(r.cons, 0, NULL);
    codec_close(r.cd);
    buf_free(&r.out);
    buf_free(&r.js);
    free(r.sent);
    free(r.lat);
    free(r.recv);
    return 0;
}
