/* tests/faults/fault_run.c: the randomised fault run (issue 23, `make
 * faults`; not part of `make test`, which stays fast).
 *
 * FAULT_EVENTS events (default 100,000) over 1,000 users are produced at a
 * steady FAULT_RATE (default 2,000/s) through one transactions worker and a
 * real redis-server (AOF, appendfsync always) while a schedule drawn from
 * FAULT_SEED (default: the clock; printed first, so a failure can be
 * replayed) injects, every 2-5 s:
 *   pause      DEBUG SLEEP 1-3 s (the server stalls)
 *   cpause     CLIENT PAUSE 1-3 s
 *   kill       SIGKILL, restarted 1-3 s later with its data (AOF)
 *   empty      SIGKILL, restarted 1-3 s later empty (at most FAULT_EMPTY
 *              times, default 1): before the kill, writes are paused (CLIENT
 *              PAUSE WRITE) and every user's state read, so what the wipe
 *              takes is known exactly: that is detected loss (case 6), not
 *              silent loss, and the worker must log the loss
 *   oom        CONFIG SET maxmemory 1mb (noeviction) for 1-4 s
 *   clientkill CLIENT KILL TYPE normal
 * Then every event must have a prediction, and every user's Welford count
 * in Redis must equal its events with an amount less what the wipes took.
 * Prints the seed, the faults, lost, double-applied and detected-loss
 * counts; fails on any silent loss or double application.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "features.h"
#include "stack.h"
#include "state.h"
#include "txn_group.h"

#define USERS TG_USERS

struct run {
    struct tg_env *v;
    pid_t redis;
    int port;
    char rdir[128];
    unsigned seed, seed0;
    time_t t0;
    int n_events, rate, max_empty, n_empty;
    long snap_total[USERS]; /* Welford counts taken by the wipes */
    int faults[6];
};

static const char *const fault_names[6] = {"pause", "cpause", "kill", "empty", "oom",
                                           "clientkill"};

static int env_int(const char *name, int def)
{
    const char *s = getenv(name);

    return s && *s ? atoi(s) : def;
}

static void write_events(struct tg_env *v)
{
    FILE *f = fopen(v->events, "w");
    int64_t t = 1700000000000LL;

    assert_non_null(f);
    for (int i = 0; i < v->n_events; i++) {
        int u = (int)((i * 7919L) % USERS);
        t += 1000 + (i % 13) * 1000;
        fprintf(f, "{\"event_id\":\"e%06d\",\"user_id\":\"u%04d\",\"event_time\":%lld", i, u,
                (long long)t);
        if (i % 10 != 7) {
            fprintf(f, ",\"amount\":%d", 300 + (i * 41) % 2500);
            v->want_amounts[u]++;
        }
        fprintf(f, ",\"income\":%d,\"expenses\":%d,\"term_months\":%d,\"age\":%d}\n",
                90 + i % 150, 40 + i % 50, 12 + 12 * (i % 5), 21 + i % 45);
    }
    fclose(f);
}

static void redis_spawn(struct run *r)
{
    char port[16], log[200];
    char *argv[] = {"redis-server", "--port", port, "--bind", "127.0.0.1", "--dir", r->rdir,
                    "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                    "--enable-debug-command", "yes", "--daemonize", "no", NULL};

    snprintf(port, sizeof(port), "%d", r->port);
    snprintf(log, sizeof(log), "%s/redis.log", r->rdir);
    r->redis = test_spawn(argv, log);
    assert_true(r->redis > 0);
    for (int i = 0; i < 500; i++) {
        redisContext *c = redisConnect("127.0.0.1", r->port);
        redisReply *rep = c && !c->err ? redisCommand(c, "PING") : NULL;
        int ok = rep && rep->type == REDIS_REPLY_STATUS;
        if (rep)
            freeReplyObject(rep);
        if (c)
            redisFree(c);
        if (ok)
            return;
        test_sleep_ms(10);
    }
    fail_msg("redis-server did not restart on port %d", r->port);
}

static void redis_kill(struct run *r)
{
    kill(r->redis, SIGKILL);
    waitpid(r->redis, NULL, 0);
    r->redis = 0;
}

/* One command on a fresh connection (CLIENT KILL closes the old ones). */
static void cmd(struct run *r, const char *fmt, ...)
{
    redisContext *c = redisConnect("127.0.0.1", r->port);
    va_list ap;

    if (!c || c->err) {
        if (c)
            redisFree(c);
        return;
    }
    va_start(ap, fmt);
    freeReplyObject(redisvCommand(c, fmt, ap));
    va_end(ap);
    redisFree(c);
}

/* Welford counts of every user as stored now (0 for a user not stored). */
static void read_counts(int port, long *out)
{
    struct err e = {0};
    struct state_redis_opts ro = {.host = "127.0.0.1", .port = port, .timeout_ms = 5000};
    struct state *s = state_open_redis(&ro, &e);
    static struct state_blob blobs[USERS];
    static char ids[USERS][16];
    const char *ents[USERS];

    assert_non_null(s);
    for (int u = 0; u < USERS; u++) {
        snprintf(ids[u], sizeof(ids[u]), "u%04d", u);
        ents[u] = ids[u];
    }
    if (state_get_many(s, USERS, ents, blobs, &e))
        fail_msg("reading the state: %s", e.msg);
    for (int u = 0; u < USERS; u++) {
        struct feat_state fs;
        out[u] = blobs[u].len && feat_state_decode(&fs, blobs[u].data, blobs[u].len, &e) == 0
                     ? (long)feat_state_count(&fs, "amount")
                     : 0;
    }
    state_close(s);
}

static int draw(struct run *r, int lo, int hi)
{
    return lo + (int)(rand_r(&r->seed) % (unsigned)(hi - lo + 1));
}

static void inject(struct run *r, int kind, int ms)
{
    static long snap[USERS];
    char rm[300];

    r->faults[kind]++;
    printf("  t+%lds %s %d ms\n", (long)(time(NULL) - r->t0), fault_names[kind], ms);
    fflush(stdout);
    switch (kind) {
    case 0:
        cmd(r, "DEBUG SLEEP %.3f", ms / 1000.0);
        break;
    case 1:
        cmd(r, "CLIENT PAUSE %d", ms);
        test_sleep_ms(ms);
        break;
    case 2:
        redis_kill(r);
        test_sleep_ms(ms);
        redis_spawn(r);
        break;
    case 3:
        /* What the wipe takes, exactly: writes paused while it is read. */
        cmd(r, "CLIENT PAUSE 60000 WRITE");
        read_counts(r->port, snap);
        for (int u = 0; u < USERS; u++)
            r->snap_total[u] += snap[u];
        redis_kill(r);
        snprintf(rm, sizeof(rm), "rm -rf '%s/appendonlydir' '%s/dump.rdb'", r->rdir, r->rdir);
        assert_int_equal(system(rm), 0);
        test_sleep_ms(ms);
        redis_spawn(r);
        r->n_empty++;
        break;
    case 4:
        cmd(r, "CONFIG SET maxmemory 1mb");
        test_sleep_ms(ms);
        cmd(r, "CONFIG SET maxmemory 0");
        break;
    default:
        cmd(r, "CLIENT KILL TYPE normal");
        break;
    }
}

static int producer_running(pid_t p)
{
    return waitpid(p, NULL, WNOHANG) == 0;
}

static long count_in_log(const char *path, const char *needle)
{
    char line[4096];
    long n = 0;
    FILE *f = fopen(path, "r");

    while (f && fgets(line, sizeof(line), f))
        n += strstr(line, needle) != NULL;
    if (f)
        fclose(f);
    return n;
}

static void test_random_faults(void **st)
{
    struct run *r = *st;
    struct tg_env *v = r->v;
    static long got[USERS];
    const char *const extra[] = {"redis.timeout_ms=2000", "fetch.wait.max.ms=10",
                                 "state.retry_budget_ms=500", NULL};
    char rate[32], log[200];
    long lost = 0, doubled = 0, detected = 0, users_lost = 0, users_doubled = 0;
    pid_t prod, w;
    struct tg_tally t;
    time_t t0 = time(NULL);

    r->t0 = t0;
    snprintf(rate, sizeof(rate), "%d", r->rate);
    w = tg_start_worker_x(v, "w1", "500", extra);
    assert_true(w > 0);
    tg_log_path(v, "w1", log, sizeof(log));
    assert_int_equal(tg_wait_log(log, "rebalance: assigned", 1, 30000), 0);
    prod = tg_produce(v, rate);
    assert_true(prod > 0);
    test_sleep_ms(2000);
    while (producer_running(prod)) {
        int kind = draw(r, 0, 5);
        if (kind == 3 && r->n_empty >= r->max_empty)
            kind = 2;
        inject(r, kind, kind == 4 ? draw(r, 1000, 4000) : draw(r, 1000, 3000));
        test_sleep_ms(draw(r, 2000, 5000));
    }
    t = tg_wait_all_predicted(v, 120000);
    test_sleep_ms(3000); /* the last batch's state write */
    assert_int_equal(test_stop_pid(w, SIGTERM, 30000) >= 0, 1);
    read_counts(r->port, got);
    for (int u = 0; u < USERS; u++) {
        long want = v->want_amounts[u] - r->snap_total[u];
        detected += r->snap_total[u];
        if (got[u] < want)
            lost += want - got[u], users_lost++;
        if (got[u] > want)
            doubled += got[u] - want, users_doubled++;
    }
    printf("fault run: seed %u, %d events at %d/s, %lds; faults: pause %d, cpause %d, kill %d, "
           "empty %d, oom %d, clientkill %d\n",
           r->seed0, r->n_events, r->rate, (long)(time(NULL) - t0), r->faults[0], r->faults[1],
           r->faults[2], r->faults[3], r->faults[4], r->faults[5]);
    printf("fault run: predictions %ld records, %ld missing, %ld duplicates\n", t.records,
           t.missing, t.duplicates);
    printf("fault run: state: lost %ld event(s) over %ld user(s), double-applied %ld over %ld "
           "user(s); detected loss (restarted empty) %ld, loss logged by the worker %ld time(s)\n",
           lost, users_lost, doubled, users_doubled, detected,
           count_in_log(log, "lost its data"));
    fflush(stdout);
    assert_int_equal(t.missing, 0);
    assert_int_equal(lost, 0);
    assert_int_equal(doubled, 0);
    if (r->n_empty)
        assert_true(count_in_log(log, "lost its data") >= 1);
}

/* The mock cluster keeps about 5 MB per partition: 100,000 predictions,
 * those of review and decline carrying their reasons, overflow 6 partitions
 * (the oldest were gone when the run read them back: "missing"), so the
 * topics are spread like the soak test's. */
#define FAULT_TOPICS "transactions:24,predictions.transactions:24,transactions.dlq:2"

static int setup(void **st)
{
    struct run *r = calloc(1, sizeof(*r));
    struct tg_env *v = calloc(1, sizeof(*v));

    if (!r || !v)
        return -1;
    r->v = v;
    r->seed = r->seed0 = (unsigned)env_int("FAULT_SEED", (int)(time(NULL) % 1000000));
    r->n_events = env_int("FAULT_EVENTS", 100000);
    r->rate = env_int("FAULT_RATE", 2000);
    r->max_empty = env_int("FAULT_EMPTY", 1);
    printf("fault run: seed %u (FAULT_SEED=%u replays it), %d events at %d/s\n", r->seed0,
           r->seed0, r->n_events, r->rate);
    fflush(stdout);
    v->n_events = r->n_events > 1000000 ? 1000000 : r->n_events;
    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-faults-XXXXXX");
    snprintf(r->rdir, sizeof(r->rdir), "/tmp/streamml-faults-redis-XXXXXX");
    if (!mkdtemp(v->dir) || !mkdtemp(r->rdir) || test_broker_start(&v->broker, FAULT_TOPICS))
        return -1;
    r->port = test_free_port();
    redis_spawn(r);
    v->redis.port = r->port;
    snprintf(v->redis.dir, sizeof(v->redis.dir), "%s", r->rdir);
    snprintf(v->events, sizeof(v->events), "%s/events.jsonl", v->dir);
    snprintf(v->redis_port, sizeof(v->redis_port), "redis.port=%d", r->port);
    write_events(v);
    *st = r;
    return 0;
}

static int teardown(void **st)
{
    struct run *r = *st;
    char cmdline[400];

    if (r->redis > 0)
        redis_kill(r);
    test_broker_stop(&r->v->broker);
    snprintf(cmdline, sizeof(cmdline), "rm -rf '%s' '%s'", r->v->dir, r->rdir);
    if (getenv("STREAMML_KEEP_TEST_DIR"))
        fprintf(stderr, "kept %s\n", r->v->dir);
    else if (system(cmdline) != 0)
        fprintf(stderr, "could not remove %s\n", r->v->dir);
    free(r->v);
    free(r);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_random_faults)};

    return cmocka_run_group_tests(tests, setup, teardown);
}
