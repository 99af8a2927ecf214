/* A GRU per experiment arm (clickstream.arms=b:model=PATH,
 * cstep_arm_models): two arms with two GRU models give each arm's sessions
 * its own model's recommendations (checked against that model run alone);
 * a shadow arm's GRU never reaches the serving arm's state; a session whose
 * arm changes has its state recomputed by the new arm's GRU; a bad arm
 * model is refused naming the arm and the file. The second GRU is the
 * committed one with its GRU bias and output bias reversed (same items and
 * hidden size, other states and scores). The worker's reload of one arm's
 * GRU is in tests/test_click_reload.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "clickexp.h"
#include "clickstep.h"
#include "session.h"
#include "state.h"

#define MODEL "models/clickstream/gru4rec.onnx"
#define RANKER "models/clickstream/ranker.onnx"
#define NOW_MS 1767225600000LL

static const int64_t SESSION[] = {1885, 155, 3000, 4380, 17, 242}; /* known items */
#define NCLICKS (sizeof(SESSION) / sizeof(SESSION[0]))

static char dir[64], model_b[128];

/* The float tensor `name`'s raw data in buf reversed (ONNX protobuf: the
 * name, field 8, precedes raw_data, field 9). */
static void reverse_tensor(unsigned char *buf, size_t n, const char *name)
{
    unsigned char pat[64];
    size_t len = strlen(name), at, bytes = 0, shift = 0;
    unsigned char *p;

    pat[0] = 0x42;
    pat[1] = (unsigned char)len;
    memcpy(pat + 2, name, len);
    pat[2 + len] = 0x4a;
    assert_non_null(p = memmem(buf, n, pat, len + 3));
    at = (size_t)(p - buf) + len + 3;
    do { /* the varint length */
        bytes |= (size_t)(buf[at] & 0x7f) << shift;
        shift += 7;
    } while (buf[at++] & 0x80);
    assert_true(at + bytes <= n && bytes % 4 == 0);
    for (size_t i = 0, j = bytes / 4 - 1; i < j; i++, j--) {
        unsigned char t[4];
        memcpy(t, buf + at + 4 * i, 4);
        memcpy(buf + at + 4 * i, buf + at + 4 * j, 4);
        memcpy(buf + at + 4 * j, t, 4);
    }
}

static int setup(void **st)
{
    FILE *f = fopen(MODEL, "rb");
    unsigned char *buf;
    long n;

    (void)st;
    snprintf(dir, sizeof(dir), "/tmp/streamml-clickarms-XXXXXX");
    if (!f || !mkdtemp(dir) || fseek(f, 0, SEEK_END) || (n = ftell(f)) <= 0)
        return -1;
    rewind(f);
    if (!(buf = malloc((size_t)n)) || fread(buf, 1, (size_t)n, f) != (size_t)n)
        return -1;
    fclose(f);
    reverse_tensor(buf, (size_t)n, "gru.B");
    reverse_tensor(buf, (size_t)n, "out.bias");
    snprintf(model_b, sizeof(model_b), "%s/gru_b.onnx", dir);
    if (!(f = fopen(model_b, "wb")) || fwrite(buf, 1, (size_t)n, f) != (size_t)n || fclose(f))
        return -1;
    free(buf);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    unlink(model_b);
    rmdir(dir);
    return 0;
}

struct env {
    struct cfg *cf;
    struct state *st;
    struct cstep *cs;
    struct cx *cx;
    long clicks;
};

/* A step on `model` with the given settings; the arms' error code. */
static int open_env(struct env *v, const char *model, const char *const *args, size_t n,
                    struct err *e)
{
    const char *base[] = {"clickstream.epsilon=0", "clickstream.seed=7", "clickstream.search=exact",
                          "clickstream.lambda_diversity=0"};
    char kv[256];

    memset(v, 0, sizeof(*v));
    memset(e, 0, sizeof(*e));
    assert_non_null(v->cf = cfg_new());
    snprintf(kv, sizeof(kv), "clickstream.model=%s", model);
    assert_int_equal(cfg_set_arg(v->cf, kv, e), ERR_OK);
    for (size_t i = 0; i < sizeof(base) / sizeof(base[0]); i++)
        assert_int_equal(cfg_set_arg(v->cf, base[i], e), ERR_OK);
    for (size_t i = 0; i < n; i++)
        if (cfg_set_arg(v->cf, args[i], e))
            fail_msg("%s: %s", args[i], e->msg);
    assert_int_equal(cfg_finish(v->cf, e), ERR_OK);
    assert_non_null(v->st = state_open_memory());
    if (cstep_open(&v->cs, v->cf, 8, v->st, NULL, e))
        fail_msg("cstep_open: %s", e->msg);
    if (cx_open(&v->cx, v->cf, NULL, NULL, 8, e))
        fail_msg("cx_open: %s", e->msg);
    return cx_arms(v->cx, v->cs, e);
}

static void close_env(struct env *v)
{
    cx_close(v->cx);
    cstep_close(v->cs);
    state_close(v->st);
    cfg_free(v->cf);
}

/* Click c of SESSION in sessions sid[0..ns) (arms arms[j]), one batch;
 * p[j]: session j's prediction. */
static void click(struct env *v, size_t c, size_t ns, const char *const *sid, const int *arms,
                  struct click_prediction *p)
{
    struct click_event ev[4];
    struct cstep_click in[4];

    memset(ev, 0, sizeof(ev));
    for (size_t j = 0; j < ns; j++) {
        snprintf(ev[j].event_id, sizeof(ev[j].event_id), "e%ld", v->clicks);
        snprintf(ev[j].session_id, sizeof(ev[j].session_id), "%s", sid[j]);
        ev[j].item_id = SESSION[c];
        ev[j].type = CLICK_VIEW;
        ev[j].event_time_ms = NOW_MS + v->clicks;
        in[j] = (struct cstep_click){&ev[j], "clickstream", 0, v->clicks++, arms[j]};
    }
    assert_int_equal(cstep_batch(v->cs, ns, in, p), 0);
    cstep_store(v->cs);
}

static int same_items(const struct click_prediction *a, const struct click_prediction *b)
{
    if (a->n_items != b->n_items || !a->n_items)
        return 0;
    for (int j = 0; j < a->n_items; j++)
        if (a->items[j].item_id != b->items[j].item_id)
            return 0;
    return 1;
}

/* Each click's items of `model` alone (no experiment) over SESSION. */
static void alone(const char *model, struct click_prediction *p)
{
    struct env v;
    struct err e;
    const char *sid[] = {"solo"};
    const int arm0[] = {0};

    assert_int_equal(open_env(&v, model, NULL, 0, &e), ERR_OK);
    for (size_t c = 0; c < NCLICKS; c++)
        click(&v, c, 1, sid, arm0, &p[c]);
    close_env(&v);
}

/* pa, pb: each click's items of MODEL and of model_b alone; then v, a step
 * on MODEL whose arm b has model_b for its GRU, with the settings
 * args[0..n). */
static void open_arms(struct env *v, const char *const *args, size_t n, struct click_prediction *pa,
                      struct click_prediction *pb)
{
    char arms[256];
    const char *all[8];
    struct err e;

    assert_true(n < 8);
    alone(MODEL, pa);
    alone(model_b, pb);
    snprintf(arms, sizeof(arms), "clickstream.arms=b:model=%s", model_b);
    memcpy(all, args, n * sizeof(*args));
    all[n] = arms;
    if (open_env(v, MODEL, all, n + 1, &e))
        fail_msg("arms: %s", e.msg);
}

/* Split: arm a on clickstream.model, arm b on its own GRU; both arms'
 * sessions in every batch get what their model alone gives, click by
 * click (the states of the two GRUs kept apart). */
static void test_two_arms_two_grus(void **st)
{
    char arms[256];
    const char *args[] = {"experiment.id=exp-gru", "experiment.variants=a:-:0.5,b:-:0.5"};
    const char *sid[] = {"sa", "sb"};
    const int both[] = {0, 1};
    struct click_prediction pa[NCLICKS], pb[NCLICKS], p[2];
    const char *files[8];
    struct env v;
    struct err e;
    int differ = 0;

    (void)st;
    open_arms(&v, args, 2, pa, pb);
    for (size_t c = 0; c < NCLICKS; c++)
        differ += !same_items(&pa[c], &pb[c]);
    assert_true(differ >= (int)NCLICKS - 1); /* the second GRU ranks otherwise */
    for (size_t c = 0; c < NCLICKS; c++) {
        click(&v, c, 2, sid, both, p);
        if (!same_items(&p[0], &pa[c]) || !same_items(&p[1], &pb[c]))
            fail_msg("click %zu: an arm's items differ from its GRU's alone", c);
    }
    assert_int_equal(cstep_counts(v.cs)->reassigned, 0);
    assert_int_equal(cstep_files(v.cs, files, 8), 2); /* a reload watches both GRUs */
    assert_string_equal(files[0], MODEL);
    assert_string_equal(files[1], model_b);
    assert_int_equal(cstep_smoke(v.cs, &e), ERR_OK);
    close_env(&v);

    /* the variant's model in experiment.variants says the same */
    snprintf(arms, sizeof(arms), "experiment.variants=a:-:0.5,b:%s:0.5", model_b);
    args[1] = arms;
    if (open_env(&v, MODEL, args, 2, &e))
        fail_msg("variants: %s", e.msg);
    for (size_t c = 0; c < NCLICKS; c++) {
        click(&v, c, 2, sid, both, p);
        assert_true(same_items(&p[1], &pb[c]));
    }
    close_env(&v);
}

/* Shadow: arm a (clickstream.model) serves, arm b ranks every click with
 * its own GRU. The served items are a's alone (b's state never stored nor
 * mixed into a's), the logged ones b's alone (its state recomputed from
 * the session's items). */
static void test_shadow_arm_state_apart(void **st)
{
    const char *args[] = {"experiment.id=exp-gru", "experiment.mode=shadow",
                          "experiment.variants=a:-:0.5,b:-:0.5"};
    const char *sid[] = {"sh"};
    const int arm0[] = {0};
    struct click_prediction pa[NCLICKS], pb[NCLICKS], p;
    static struct state_blob blob;
    struct sess_state ss;
    struct env v;
    struct err e;

    (void)st;
    open_arms(&v, args, 3, pa, pb);
    for (size_t c = 0; c < NCLICKS; c++) {
        const struct click_prediction *q;
        click(&v, c, 1, sid, arm0, &p);
        assert_true(same_items(&p, &pa[c]));
        assert_non_null(q = cstep_shadow(v.cs, 0, 1));
        if (!same_items(q, &pb[c]))
            fail_msg("click %zu: the shadow arm's items are not its GRU's", c);
    }
    /* the one stored state: the serving GRU's (owner 0) */
    memset(&blob, 0, sizeof(blob));
    const char *ids[] = {"sh"};
    assert_int_equal(state_get_many(v.st, 1, ids, &blob, &e), ERR_OK);
    assert_int_equal(sess_state_decode(&ss, blob.data, blob.len, 64, &e), ERR_OK);
    assert_int_equal(ss.owner, 0);
    assert_int_equal(ss.n_hist, (int)NCLICKS);
    close_env(&v);
}

/* A session served by arm b for three clicks, then by arm a (the split
 * changed): its state is recomputed by a's GRU from its stored items, so
 * a's next answers are what a alone gives over the whole session. */
static void test_reassigned_session_recomputed(void **st)
{
    const char *args[] = {"experiment.id=exp-gru", "experiment.variants=a:-:0.5,b:-:0.5"};
    const char *sid[] = {"sr"};
    const int arm0[] = {0}, arm1[] = {1};
    struct click_prediction pa[NCLICKS], pb[NCLICKS], p;
    struct env v;

    (void)st;
    open_arms(&v, args, 2, pa, pb);
    for (size_t c = 0; c < NCLICKS; c++) {
        click(&v, c, 1, sid, c < 3 ? arm1 : arm0, &p);
        assert_true(same_items(&p, c < 3 ? &pb[c] : &pa[c]));
    }
    assert_int_equal(cstep_counts(v.cs)->reassigned, 1);
    close_env(&v);
}

/* An arm's GRU that is missing, not a GRU, or of another shape is refused
 * naming the arm and the file. */
static void test_bad_arm_model_refused(void **st)
{
    const char *bad[] = {"tests/fixtures/no_such_gru.onnx", RANKER};
    char arms[256];
    const char *args[] = {"experiment.id=exp-gru", "experiment.variants=a:-:0.5,b:-:0.5", arms};
    struct env v;
    struct err e;

    (void)st;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(arms, sizeof(arms), "clickstream.arms=a:epsilon=0.1,b:model=%s", bad[i]);
        assert_int_not_equal(open_env(&v, MODEL, args, 3, &e), ERR_OK);
        if (!strstr(e.msg, "clickstream.arms: b: model=") || !strstr(e.msg, bad[i]))
            fail_msg("not naming the arm and file: %s", e.msg);
        close_env(&v);
    }
}

/* The state's owner tag round-trips in byte 6 (has_h | owner << 1); a
 * blob written before arms had GRUs (byte 6 = has_h) decodes as owner 0. */
static void test_state_owner_encoding(void **st)
{
    struct sess_state a, b;
    unsigned char buf[STATE_BLOB_MAX];
    struct err e = {0};
    size_t n;

    (void)st;
    sess_state_init(&a, 4);
    a.has_h = 1;
    a.owner = 93;
    a.h[0] = 0.5f;
    sess_state_push(&a, 42, 20);
    assert_true((n = sess_state_encode(&a, buf, sizeof(buf))) > 0);
    assert_int_equal(buf[6], 1 | 93 << 1);
    assert_int_equal(sess_state_decode(&b, buf, n, 4, &e), ERR_OK);
    assert_int_equal(b.owner, 93);
    assert_int_equal(b.has_h, 1);
    assert_float_equal(b.h[0], 0.5f, 0);
    buf[6] = 1; /* an older worker's state */
    assert_int_equal(sess_state_decode(&b, buf, n, 4, &e), ERR_OK);
    assert_int_equal(b.owner, 0);
    assert_int_equal(b.has_h, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_arms_two_grus),
        cmocka_unit_test(test_shadow_arm_state_apart),
        cmocka_unit_test(test_reassigned_session_recomputed),
        cmocka_unit_test(test_bad_arm_model_refused),
        cmocka_unit_test(test_state_owner_encoding),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
