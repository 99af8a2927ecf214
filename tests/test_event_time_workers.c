/* Issue 23 cases 3 and 4 through the worker binaries of the click and image
 * streams (the transactions stream's is in test_hostile.c): an event dated
 * past worker.max_future_skew_ms ahead of the wall clock, or negative, is
 * dead-lettered with the reason by streamml-clickstream and streamml-images
 * (separate processes on the embedded stack), and the good events around it
 * are answered. The decoders' checks are unit-tested in test_image_codec.c;
 * this proves the runtime routes their refusal to the dead-letter topic
 * instead of scoring, and that the configured skew reaches the worker.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "click_event.h"
#include "codec.h"
#include "image_event.h"
#include "kafka.h"
#include "stack.h"

#define HOUR_MS 3600000LL
#define SAMPLE "models/images/samples/fundus_00_g0.png"

struct env {
    struct test_broker broker;
    struct test_redis redis;
    char dir[64];
    int has_redis;
};

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int env_open(struct env *v, const char *topics, int redis)
{
    memset(v, 0, sizeof(*v));
    snprintf(v->dir, sizeof(v->dir), "/tmp/streamml-evtime-XXXXXX");
    if (!mkdtemp(v->dir))
        return -1;
    if (redis && test_redis_start(&v->redis))
        return -1;
    v->has_redis = redis;
    return test_broker_start(&v->broker, topics);
}

static void env_close(struct env *v)
{
    test_broker_stop(&v->broker);
    if (v->has_redis)
        test_redis_stop(&v->redis);
    if (test_sh("rm -rf '%s'", v->dir))
        fprintf(stderr, "could not remove %s\n", v->dir);
}

/* The events go on the topic as a producer that does not check times
 * would send them (streamml produce refuses them as the worker does):
 * encoded by the codec, produced with the Kafka module. */
struct out {
    struct kq *q;
    struct codec *cd;
    struct buf b;
};

static void out_open(struct out *o, struct env *v)
{
    static struct cfg_kv kv[1];
    struct kq_opts ko = {.props = kv, .n_props = 1, .client_id = "test-evtime"};
    struct err e = {0};

    kv[0] = (struct cfg_kv){"bootstrap.servers", v->broker.bootstrap, "test"};
    o->q = kq_open(&ko, &e);
    o->cd = codec_open("schemas", &e);
    if (!o->q || !o->cd)
        fail_msg("%s", e.msg);
    buf_init(&o->b, 0);
}

static void out_send(struct out *o, const char *topic, const char *key)
{
    struct err e = {0};

    if (kq_produce(o->q, topic, key, strlen(key), o->b.data, o->b.len, NULL, &e))
        fail_msg("produce: %s", e.msg);
}

static void out_close(struct out *o)
{
    struct err e = {0};

    assert_int_equal(kq_close(o->q, 10000, &e), ERR_OK);
    codec_close(o->cd);
    buf_free(&o->b);
}

/* The dead letters of topic as JSON lines in the test's folder. */
static void consume(struct env *v, const char *topic, const char *path)
{
    char *argv[] = {(char *)test_bin("streamml"),
                    "consume",
                    "-b",
                    v->broker.bootstrap,
                    "-t",
                    (char *)topic,
                    "-f",
                    "-e",
                    "--log-level",
                    "error",
                    NULL};
    assert_int_equal(test_run_wait(argv, path), 0);
}

/* Lines of path holding every one of the needles. */
static int lines_with(const char *path, const char *a, const char *b)
{
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    FILE *f = fopen(path, "r");

    assert_non_null(f);
    while (getline(&line, &cap, f) > 0)
        n += strstr(line, a) && strstr(line, b);
    free(line);
    fclose(f);
    return n;
}

/* Waits for want predictions and want_dlq dead letters, stops the worker
 * (exit 0), and checks each refused id's dead letter names its reason. */
static void expect_run(struct env *v, pid_t w, const char *log, const char *stream, int want,
                       int want_dlq)
{
    char pred[64], dlq[64], path[200];
    int rc;

    snprintf(pred, sizeof(pred), "predictions.%s", stream);
    snprintf(dlq, sizeof(dlq), "%s.dlq", stream);
    assert_true(w > 0);
    if (test_wait_topic(v->broker.bootstrap, pred, want, 60000) ||
        test_wait_topic(v->broker.bootstrap, dlq, want_dlq, 10000)) {
        test_sh("tail -5 %s >&2", log);
        fail_msg("%s: no %d predictions and %d dead letters within 70 s", stream, want, want_dlq);
    }
    rc = test_stop_pid(w, SIGTERM, 15000);
    if (!WIFEXITED(rc) || WEXITSTATUS(rc) != 0) {
        test_sh("tail -5 %s >&2", log);
        fail_msg("%s worker: status %d", stream, rc);
    }
    assert_int_equal(test_topic_size(v->broker.bootstrap, pred), want);
    assert_int_equal(test_topic_size(v->broker.bootstrap, dlq), want_dlq);
    snprintf(path, sizeof(path), "%s/dlq.jsonl", v->dir);
    consume(v, dlq, path);
    /* the reason names the rule and the setting in force, and the record
     * carries the original bytes (the id inside the payload) */
    assert_int_equal(lines_with(path, "event_in_future", "worker.max_future_skew_ms=7200000"), 1);
    assert_int_equal(lines_with(path, "event_time", "negative"), 1);
    printf("# %s worker: %d good events -> %d predictions; dated +3 h and -1 -> %d dead "
           "letters with their reasons\n",
           stream, want, want, want_dlq);
}

/* Clicks: 3 good (one 1 h 50 min ahead, inside a skew of 2 h set with -X),
 * one 3 h ahead, one at -1 (issue 23 case 3: a click of 9999-12-31 or -1
 * reached trending). */
static void test_click_worker_dead_letters_future_and_negative_times(void **st)
{
    struct env v;
    char log[200], rport[64];
    long long t = now_ms();
    struct out o;
    pid_t w;

    (void)st;
    assert_int_equal(env_open(&v, "clickstream:2,predictions.clickstream:2,clickstream.dlq:1", 1),
                     0);
    const long long times[] = {t - 60000, t, t + 110 * 60000LL, t + 3 * HOUR_MS, -1};
    out_open(&o, &v);
    for (int i = 0; i < 5; i++) {
        struct click_event ev = {
            .has_user = false, .item_id = 10 + i, .type = CLICK_VIEW, .event_time_ms = times[i]};
        struct err e = {0};
        snprintf(ev.event_id, sizeof(ev.event_id), "e%d", i);
        snprintf(ev.session_id, sizeof(ev.session_id), "s1");
        o.b.len = 0;
        if (codec_encode_click_event(o.cd, &ev, &o.b, &e))
            fail_msg("encode: %s", e.msg);
        out_send(&o, "clickstream", "s1");
    }
    out_close(&o);
    snprintf(log, sizeof(log), "%s/worker.log", v.dir);
    snprintf(rport, sizeof(rport), "redis.port=%d", v.redis.port);
    char *argv[] = {(char *)test_bin("streamml-clickstream"),
                    "-b",
                    v.broker.bootstrap,
                    "-X",
                    rport,
                    "-X",
                    "worker.max_future_skew_ms=7200000",
                    "-X",
                    "worker.poll_ms=20",
                    "-X",
                    "group.id=evtime-clicks",
                    "--log-level",
                    "info",
                    NULL};
    w = test_spawn(argv, log);
    expect_run(&v, w, log, "clickstream", 3, 2);
    env_close(&v);
}

/* Images: the same good picture in every event, so only the time decides. */
static void test_image_worker_dead_letters_future_and_negative_times(void **st)
{
    struct env v;
    char log[200], root[200], cam[200], rootx[240], camx[240];
    long long t = now_ms();
    struct out o;
    pid_t w;

    (void)st;
    assert_int_equal(env_open(&v, "images:2,predictions.images:2,images.dlq:1", 0), 0);
    snprintf(root, sizeof(root), "%s/root", v.dir);
    snprintf(cam, sizeof(cam), "%s/cam", v.dir);
    assert_int_equal(test_sh("mkdir -p %s %s && cp " SAMPLE " %s/g.png", root, cam, root), 0);
    const long long times[] = {t - 60000, t, t + 110 * 60000LL, t + 3 * HOUR_MS, -1};
    out_open(&o, &v);
    for (int i = 0; i < 5; i++) {
        struct image_event ev = {.event_time_ms = times[i]};
        struct err e = {0};
        snprintf(ev.image_id, sizeof(ev.image_id), "i%d", i);
        snprintf(ev.patient_id, sizeof(ev.patient_id), "p1");
        snprintf(ev.uri, sizeof(ev.uri), "g.png");
        o.b.len = 0;
        if (codec_encode_image_event(o.cd, &ev, &o.b, &e))
            fail_msg("encode: %s", e.msg);
        out_send(&o, "images", "p1");
    }
    out_close(&o);
    snprintf(log, sizeof(log), "%s/worker.log", v.dir);
    snprintf(rootx, sizeof(rootx), "images.root=%s", root);
    snprintf(camx, sizeof(camx), "images.cam_dir=%s", cam);
    char *argv[] = {(char *)test_bin("streamml-images"),
                    "-b",
                    v.broker.bootstrap,
                    "-X",
                    rootx,
                    "-X",
                    camx,
                    "-X",
                    "worker.max_future_skew_ms=7200000",
                    "-X",
                    "images.min_side=16",
                    "-X",
                    "worker.poll_ms=20",
                    "-X",
                    "group.id=evtime-images",
                    "--log-level",
                    "info",
                    NULL};
    w = test_spawn(argv, log);
    expect_run(&v, w, log, "images", 3, 2);
    env_close(&v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_click_worker_dead_letters_future_and_negative_times),
        cmocka_unit_test(test_image_worker_dead_letters_future_and_negative_times),
    };
    return cmocka_run_group_tests_name("event_time_workers", tests, NULL, NULL);
}
