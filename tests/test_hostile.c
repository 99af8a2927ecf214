/* tests/test_hostile.c: a table of poison messages.
 *
 * Each row is a message a hostile or broken producer could send. Part 1
 * runs the worker's decode path (codec_decode_txn + feat_txn_validate, as
 * decode_batch does) in-process: the error must name the culprit, and the
 * CPU time per message (CLOCK_THREAD_CPUTIME_ID) must stay <= 50 ms.
 * Part 2 sends every row, interleaved with good events, through a real
 * worker on the embedded stack: one dead letter per row, with the same
 * reason, and a prediction for every good event (the worker carries on).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cfg.h"
#include "codec.h"
#include "event.h"
#include "features.h"
#include "kafka.h"
#include "stack.h"

#define AMOUNT_MARK 1234.5 /* a bit pattern found again in the encoding */
#define CPU_BUDGET_MS 50.0
#define N_GOOD 200

struct msg {
    unsigned char *d;
    size_t n;
};

static struct codec *g_cd;

static void good_event(struct txn_event *ev, int i)
{
    event_txn_init(ev);
    snprintf(ev->event_id, sizeof(ev->event_id), "g%05d", i);
    snprintf(ev->user_id, sizeof(ev->user_id), "u%03d", i % 50);
    ev->event_time_ms = 1700000000000LL + i * 1000LL;
    ev->amount = AMOUNT_MARK;
    ev->income = 120;
    ev->age = 33;
}

static struct msg encode(const struct txn_event *ev)
{
    struct buf b;
    struct err e = {0};
    struct msg m;

    buf_init(&b, 0);
    assert_int_equal(codec_encode_txn(g_cd, ev, &b, &e), ERR_OK);
    m.d = malloc(b.len);
    assert_non_null(m.d);
    memcpy(m.d, b.data, b.len);
    m.n = b.len;
    buf_free(&b);
    return m;
}

/* A good event whose amount's 8 bytes are replaced by v on the wire. */
static struct msg with_amount_bits(double v)
{
    struct txn_event ev;
    double mark = AMOUNT_MARK;
    struct msg m;
    unsigned char *p;

    good_event(&ev, 0);
    m = encode(&ev);
    p = memmem(m.d, m.n, &mark, sizeof(mark));
    assert_non_null(p);
    memcpy(p, &v, sizeof(v));
    return m;
}

static struct msg raw(size_t n)
{
    struct msg m = {calloc(1, n), n};

    assert_non_null(m.d);
    return m;
}

/* Header (magic 0, schema id 1) then an event_id string that declares
 * len bytes and has have of them. */
static struct msg string_decl(uint64_t len, size_t have)
{
    struct msg m = raw(5 + 10 + have);
    uint64_t u = len << 1; /* zigzag of a positive length */
    size_t at = 5;

    m.d[4] = 1;
    do {
        m.d[at++] = (unsigned char)((u & 0x7f) | (u >= 0x80 ? 0x80 : 0));
        u >>= 7;
    } while (u);
    memset(m.d + at, 'x', have);
    m.n = at + have;
    return m;
}

static struct msg long_id(size_t len)
{
    return string_decl(len, len);
}

static struct msg m_truncated(void)
{
    struct txn_event ev;
    struct msg m;

    good_event(&ev, 0);
    m = encode(&ev);
    m.n -= 9;
    return m;
}

static struct msg m_magic(void)
{
    struct txn_event ev;
    struct msg m;

    good_event(&ev, 0);
    m = encode(&ev);
    m.d[0] = 7;
    return m;
}

static struct msg m_unknown_id(void)
{
    struct txn_event ev;
    struct msg m;

    good_event(&ev, 0);
    m = encode(&ev);
    m.d[3] = 0x12; /* schema id 0x1201 */
    return m;
}

/* A string that declares 2^40 bytes and carries 3. */
static struct msg m_huge_length(void)
{
    return string_decl(1ULL << 40, 3);
}

static struct msg m_nan(void)
{
    return with_amount_bits(NAN);
}
static struct msg m_inf(void)
{
    return with_amount_bits(INFINITY);
}
static struct msg m_huge_value(void)
{
    return with_amount_bits(1e300);
}
static struct msg m_negative(void)
{
    return with_amount_bits(-250);
}

static struct msg m_empty_user(void)
{
    struct txn_event ev;

    good_event(&ev, 0);
    ev.user_id[0] = '\0';
    return encode(&ev);
}

static struct msg m_empty_event_id(void)
{
    struct txn_event ev;

    good_event(&ev, 0);
    ev.event_id[0] = '\0';
    return encode(&ev);
}

static struct msg m_future(void)
{
    struct txn_event ev;

    good_event(&ev, 0);
    ev.event_time_ms = 7258118400000LL; /* 2200-01-01 */
    return encode(&ev);
}

static struct msg m_ancient(void)
{
    struct txn_event ev;

    good_event(&ev, 0);
    ev.event_time_ms = -2208988800000LL; /* 1900-01-01 */
    return encode(&ev);
}

/* A whole good event whose event_id is 900 KB (under the message limit). */
static struct msg m_string_900k(void)
{
    struct txn_event ev;
    struct msg good, id = long_id(900 * 1024), m;
    size_t tail_at = 5 + 1 + 6; /* framing, length byte, "g00000" */

    good_event(&ev, 0);
    good = encode(&ev);
    assert_int_equal(good.d[5], 12); /* zigzag 6 */
    m = raw(id.n + good.n - tail_at);
    memcpy(m.d, id.d, id.n);
    memcpy(m.d + id.n, good.d + tail_at, good.n - tail_at);
    free(id.d);
    free(good.d);
    return m;
}

static struct msg m_string_10m(void)
{
    return long_id(10 * 1024 * 1024);
}

static struct msg m_empty(void)
{
    return raw(0);
}

struct row {
    const char *name;
    struct msg (*make)(void);
    const char *want; /* substring of the reason */
    int wire;         /* 1: also sent through the broker in part 2 */
};

static const struct row rows[] = {
    {"empty message", m_empty, "empty message", 1},
    {"truncated", m_truncated, "truncated at byte", 1},
    {"wrong magic byte", m_magic, "magic byte 7", 1},
    {"unknown schema id", m_unknown_id, "unknown schema id 4609", 1},
    {"huge length prefix", m_huge_length, "exceeds remaining", 1},
    {"NaN amount", m_nan, "amount: NaN", 1},
    {"Inf amount", m_inf, "amount: not finite", 1},
    {"1e300 amount", m_huge_value, "amount: out of range", 1},
    {"negative amount", m_negative, "amount: negative", 1},
    {"empty user_id", m_empty_user, "user_id: empty", 1},
    {"empty event_id", m_empty_event_id, "event_id: empty", 1},
    {"future timestamp (2200)", m_future, "event_time: outside", 1},
    {"ancient timestamp (1900)", m_ancient, "event_time: outside", 1},
    {"900 KB string", m_string_900k, "exceeds the 63-byte limit", 1},
    /* Past message.max.bytes: the producer refuses it, so in-process only. */
    {"10 MB string", m_string_10m, "exceeds the 1048576-byte limit", 0},
};
#define N_ROWS (sizeof(rows) / sizeof(rows[0]))

static double thread_cpu_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int group_setup(void **st)
{
    struct err e = {0};

    (void)st;
    g_cd = codec_open("schemas", &e);
    if (!g_cd)
        fprintf(stderr, "codec_open: %s\n", e.msg);
    return g_cd ? 0 : -1;
}

static int group_teardown(void **st)
{
    (void)st;
    codec_close(g_cd);
    return 0;
}

/* The worker's decode path; returns the error code, reason in *e. */
static int decode_like_worker(const struct msg *m, struct err *e)
{
    static struct txn_event ev;
    int rc = codec_decode_txn(g_cd, m->d, m->n, &ev, e);

    return rc ? rc : feat_txn_validate(&ev, e);
}

static void test_each_poison_is_refused_cheaply(void **st)
{
    double worst = 0;
    const char *worst_row = "";
    struct rusage ru0, ru1;

    (void)st;
    getrusage(RUSAGE_SELF, &ru0);
    for (size_t i = 0; i < N_ROWS; i++) {
        struct msg m = rows[i].make();
        struct err e = {0};
        double t0 = thread_cpu_ms(), ms;
        int rc = decode_like_worker(&m, &e);

        ms = thread_cpu_ms() - t0;
        printf("# %-26s %7.3f ms CPU  %s: %s\n", rows[i].name, ms, err_name(rc), e.msg);
        if (rc == ERR_OK)
            fail_msg("%s: accepted", rows[i].name);
        if (!strstr(e.msg, rows[i].want))
            fail_msg("%s: reason \"%s\", want \"%s\"", rows[i].name, e.msg, rows[i].want);
        if (ms > worst) {
            worst = ms;
            worst_row = rows[i].name;
        }
        free(m.d);
    }
    getrusage(RUSAGE_SELF, &ru1);
    printf("# %zu poison messages: worst %.3f ms CPU (%s), budget %.0f ms; max RSS %ld -> %ld "
           "KiB\n",
           N_ROWS, worst, worst_row, CPU_BUDGET_MS, ru0.ru_maxrss, ru1.ru_maxrss);
    assert_true(worst <= CPU_BUDGET_MS);
}

/* ---- avro-c's array-of-null bomb ----
 *
 * Items of an array of null take no bytes, so a few bytes can declare 1e8
 * of them (avro-c 1.11 then spends seconds and GBs). Our own schemas have
 * no such array, but a writer schema may (a registry, an extra version in
 * schemas/ids): a writer version of the transaction event with such a
 * field first is added to a copy of schemas/. */

static size_t put_varint(unsigned char *d, int64_t v)
{
    uint64_t u = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    size_t n = 0;

    do {
        unsigned char c = u & 0x7f;
        u >>= 7;
        d[n++] = (unsigned char)(c | (u ? 0x80 : 0));
    } while (u);
    return n;
}

static struct codec *bomb_codec(const char *dir)
{
    char cmd[300], path[200];
    json_error_t je;
    json_t *s, *fields, *junk;
    struct err e = {0};
    FILE *f;

    snprintf(cmd, sizeof(cmd), "cp schemas/*.avsc schemas/ids '%s'/", dir);
    assert_int_equal(system(cmd), 0);
    s = json_load_file("schemas/transaction_event.avsc", 0, &je);
    assert_non_null(s);
    fields = json_object_get(s, "fields");
    junk =
        json_pack("{s:s, s:{s:s, s:s}}", "name", "junk", "type", "type", "array", "items", "null");
    assert_int_equal(json_array_insert_new(fields, 0, junk), 0);
    assert_int_equal(
        json_array_insert_new(fields, 1, json_pack("{s:s, s:s}", "name", "pad", "type", "string")),
        0);
    snprintf(path, sizeof(path), "%s/bomb_event.avsc", dir);
    assert_int_equal(json_dump_file(s, path, 0), 0);
    json_decref(s);
    snprintf(path, sizeof(path), "%s/ids", dir);
    f = fopen(path, "a");
    assert_non_null(f);
    fprintf(f, "77 bomb_event.avsc\n");
    fclose(f);
    struct codec *c = codec_open(dir, &e);
    if (!c)
        fail_msg("codec_open %s: %s", dir, e.msg);
    return c;
}

/* Framing (id 77), junk declaring n items, a pad string of pad bytes (the
 * writer-only fields), then a minimal event. */
static size_t bomb(unsigned char *m, int64_t n, size_t pad)
{
    size_t at = 5;

    memset(m, 0, 5);
    m[4] = 77;
    at += put_varint(m + at, n);
    if (n)
        at += put_varint(m + at, 0); /* end of the array */
    at += put_varint(m + at, (int64_t)pad);
    memset(m + at, 'p', pad);
    at += pad;
    at += put_varint(m + at, 1);
    m[at++] = 'e';
    at += put_varint(m + at, 1);
    m[at++] = 'u';
    at += put_varint(m + at, 1700000000000LL);
    memset(m + at, 0, 25); /* every optional field null */
    return at + 25;
}

static void test_array_of_null_bomb_is_bounded(void **st)
{
    char dir[64] = "/tmp/streamml-bomb-XXXXXX", cmd[100];
    static unsigned char m[CODEC_MAX_MESSAGE];
    struct txn_event ev;
    struct err e = {0};
    struct codec *c;
    struct rusage ru0, ru1;
    double t0, ms_bomb, ms_legal;
    size_t n;
    int rc;

    (void)st;
    assert_non_null(mkdtemp(dir));
    c = bomb_codec(dir);
    getrusage(RUSAGE_SELF, &ru0);
    /* 1e8 items declared in a 14-byte body: refused before avro-c sees it. */
    n = bomb(m, 100000000, 0);
    t0 = thread_cpu_ms();
    rc = codec_decode_txn(c, m, n, &ev, &e);
    ms_bomb = thread_cpu_ms() - t0;
    assert_int_equal(rc, ERR_DECODE);
    assert_non_null(strstr(e.msg, "array block count 100000000 exceeds remaining"));
    assert_non_null(strstr(e.msg, "junk"));
    printf("# array-of-null bomb (%zu bytes, 1e8 items): %.3f ms CPU: %s\n", n, ms_bomb, e.msg);
    /* The most a message within the size limit can declare is legal Avro:
     * it must still cost little (avro-c skips a writer-only field). */
    n = bomb(m, 1000000, 1000000);
    assert_true(n <= CODEC_MAX_MESSAGE);
    t0 = thread_cpu_ms();
    rc = codec_decode_txn(c, m, n, &ev, &e);
    ms_legal = thread_cpu_ms() - t0;
    getrusage(RUSAGE_SELF, &ru1);
    printf("# 1e6 null items in a %zu-byte message (legal Avro): %s, %.3f ms CPU, max RSS %ld -> "
           "%ld KiB\n",
           n, rc ? e.msg : "decoded", ms_legal, ru0.ru_maxrss, ru1.ru_maxrss);
    assert_int_equal(rc, ERR_OK);
    assert_true(ms_bomb <= CPU_BUDGET_MS);
    assert_true(ms_legal <= CPU_BUDGET_MS);
    assert_true(ru1.ru_maxrss - ru0.ru_maxrss < 64 * 1024);
    codec_close(c);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* ---- part 2: through a real worker ---- */



static struct kq *producer(const char *bootstrap)
{
    static struct cfg_kv kv[2];
    struct err e = {0};
    struct kq_opts o = {.props = kv, .n_props = 2, .client_id = "test-hostile"};
    struct kq *q;

    kv[0] = (struct cfg_kv){"bootstrap.servers", bootstrap, "test"};
    kv[1] = (struct cfg_kv){"message.max.bytes", "1000000", "test"};
    q = kq_open(&o, &e);
    if (!q)
        fail_msg("kq_open: %s", e.msg);
    return q;
}

/* Reads a topic to JSON lines in path with `streamml consume`. */
static void consume(const char *bootstrap, const char *topic, const char *path)
{
    char *argv[] = {(char *)test_bin("streamml"),
                    "consume",
                    "-b",
                    (char *)bootstrap,
                    "-t",
                    (char *)topic,
                    "-f",
                    "-e",
                    "--log-level",
                    "error",
                    NULL};

    unlink(path);
    assert_int_equal(test_run_wait(argv, path), 0);
}

static long count_lines_with(const char *path, const char *needle)
{
    char *line = NULL;
    size_t cap = 0;
    long n = 0;
    FILE *f = fopen(path, "r");

    assert_non_null(f);
    while (getline(&line, &cap, f) > 0)
        n += strstr(line, needle) != NULL;
    free(line);
    fclose(f);
    return n;
}

static int64_t topic_size(struct kq *q, const char *topic)
{
    struct err e = {0};

    return kq_topic_size(q, topic, 5000, &e);
}

static void test_worker_dead_letters_each_and_carries_on(void **st)
{
    struct test_redis redis;
    struct test_broker broker;
    char dir[64] = "/tmp/streamml-hostile-XXXXXX", path[128], rport[32], cmd[128];
    struct err e = {0};
    struct kq *q;
    pid_t w;
    long n_bad = 0;

    (void)st;
    assert_non_null(mkdtemp(dir));
    assert_int_equal(test_redis_start(&redis), 0);
    assert_int_equal(
        test_broker_start(&broker, "transactions:2,predictions.transactions:2,transactions.dlq:1"),
        0);
    q = producer(broker.bootstrap);
    /* Good events around every poison message: the worker must carry on. */
    for (int i = 0, r = 0; i < N_GOOD; i++) {
        struct txn_event ev;
        struct msg m;
        good_event(&ev, i);
        m = encode(&ev);
        assert_int_equal(
            kq_produce(q, "transactions", ev.user_id, strlen(ev.user_id), m.d, m.n, NULL, &e),
            ERR_OK);
        free(m.d);
        while (i % 10 == 5 && r < (int)N_ROWS) {
            if (!rows[r].wire) {
                r++;
                continue;
            }
            m = rows[r++].make();
            assert_int_equal(kq_produce(q, "transactions", "u000", 4, m.d, m.n, NULL, &e), ERR_OK);
            free(m.d);
            n_bad++;
            break;
        }
    }
    assert_int_equal(kq_close(q, 10000, &e), ERR_OK);

    snprintf(rport, sizeof(rport), "redis.port=%d", redis.port);
    snprintf(path, sizeof(path), "%s/worker.log", dir);
    {
        char *argv[] = {(char *)test_bin("streamml-transactions"),
                        "-b",
                        broker.bootstrap,
                        "-X",
                        rport,
                        "-X",
                        "group.id=hostile",
                        "-X",
                        "worker.poll_ms=20",
                        "--log-level",
                        "warn",
                        NULL};
        w = test_spawn(argv, path);
    }
    q = producer(broker.bootstrap);
    for (int waited = 0; topic_size(q, "predictions.transactions") < N_GOOD ||
                         topic_size(q, "transactions.dlq") < n_bad;
         waited += 200) {
        assert_true(waited < 30000);
        test_sleep_ms(200);
    }
    assert_int_equal(topic_size(q, "predictions.transactions"), N_GOOD);
    assert_int_equal(topic_size(q, "transactions.dlq"), n_bad);
    kq_close(q, 0, NULL);
    assert_int_equal(WEXITSTATUS(test_stop_pid(w, SIGTERM, 15000)), 0);

    snprintf(path, sizeof(path), "%s/dlq.jsonl", dir);
    consume(broker.bootstrap, "transactions.dlq", path);
    for (size_t r = 0; r < N_ROWS; r++) {
        long n = rows[r].wire ? count_lines_with(path, rows[r].want) : 0;
        /* The two timestamp rows share their reason. */
        if (rows[r].wire && n < 1)
            fail_msg("%s: no dead letter with \"%s\"", rows[r].name, rows[r].want);
    }
    printf("# worker: %d good events + %ld poison messages -> %d predictions, %ld dead letters, "
           "each with its reason\n",
           N_GOOD, n_bad, N_GOOD, n_bad);
    test_broker_stop(&broker);
    test_redis_stop(&redis);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_poison_is_refused_cheaply),
        cmocka_unit_test(test_array_of_null_bomb_is_bounded),
        cmocka_unit_test(test_worker_dead_letters_each_and_carries_on),
    };
    return cmocka_run_group_tests_name("hostile", tests, group_setup, group_teardown);
}
