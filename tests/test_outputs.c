/* tests/test_outputs.c: every command that writes an output leaves devices,
 * FIFOs and symlinks as they are (issue 22).
 *
 * `streamml replay -o /dev/null` as root used to write /dev/null.partial and
 * rename it over the device; `consume --avro-file` removed the path first;
 * `replay -o -` into a full disk exited 0. Each command that takes an output
 * (replay, featurize, report, profile, baseline, predict --output, consume
 * --avro-file, the broker's bootstrap file, CAM overlays through
 * img_write_png) is run here against, in a temporary directory:
 *   - a character device made with mknod (1,3: a null device), as root only:
 *     exit 0, still a character device, no PATH.partial left;
 *   - a FIFO with a reader: exit 0, the bytes arrive, still a FIFO;
 *   - a full device (1,7: like /dev/full): exit 1, the output named;
 *   - a symlink to a regular file: refused (exit 2), link and target intact;
 * and `-o -` with stdout on the full device: exit 1 naming stdout.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "image.h"
#include "out.h"
#include "stack.h"

struct fx {
    char dir[128];
    struct test_broker b;
    char sm[512]; /* the streamml binary */
    char feats[256], preds[256], labels[256], avro[256];
};

static struct fx g;

/* Runs a shell command line (stdout and stderr to dir/log): its exit code. */
static int sh(const char *fmt, ...)
{
    char cmd[4096], full[4400];
    va_list ap;
    int rc;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    snprintf(full, sizeof(full), "( %s ) >%s/log 2>&1", cmd, g.dir);
    rc = system(full);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
}

/* Like sh, with the command's own stdout kept as given in the line. */
static int sh_raw(const char *fmt, ...)
{
    char cmd[4096], full[4400];
    va_list ap;
    int rc;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    snprintf(full, sizeof(full), "( %s ) 2>%s/log", cmd, g.dir);
    rc = system(full);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
}

static int log_has(const char *needle)
{
    char path[200], line[4096];
    FILE *f;
    int found = 0;

    snprintf(path, sizeof(path), "%s/log", g.dir);
    if (!(f = fopen(path, "r")))
        return 0;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

static void print_log(void)
{
    char cmd[256];

    snprintf(cmd, sizeof(cmd), "tail -5 %s/log >&2", g.dir);
    if (system(cmd)) {
        /* best effort */
    }
}

/* ---- the commands, each with OUT where its output goes ---- */

struct cmd {
    const char *name;
    char line[1024]; /* printf format with one %s: the output path */
    int stdout_ok;   /* takes "-" for stdout */
};

static struct cmd cmds[8];
static int ncmds;

static void add(const char *name, int stdout_ok, const char *fmt, ...)
{
    va_list ap;
    struct cmd *c = &cmds[ncmds++];

    c->name = name;
    c->stdout_ok = stdout_ok;
    va_start(ap, fmt);
    vsnprintf(c->line, sizeof(c->line), fmt, ap);
    va_end(ap);
}

static int setup(void **st)
{
    char events[300];

    (void)st;
    snprintf(g.dir, sizeof(g.dir), "/tmp/streamml-outputs-XXXXXX");
    if (!mkdtemp(g.dir))
        return -1;
    snprintf(g.sm, sizeof(g.sm), "%s", test_bin("streamml"));
    if (test_broker_start(&g.b, "transactions:2"))
        return -1;
    snprintf(events, sizeof(events), "%s/events.jsonl", g.dir);
    snprintf(g.feats, sizeof(g.feats), "%s/feats.csv", g.dir);
    snprintf(g.preds, sizeof(g.preds), "%s/preds.jsonl", g.dir);
    snprintf(g.labels, sizeof(g.labels), "%s/labels.csv", g.dir);
    snprintf(g.avro, sizeof(g.avro), "%s/in.avro", g.dir);
    /* Inputs, made once into regular files by the commands themselves. */
    if (sh("head -n 600 models/demo_events.jsonl > %s", events) ||
        sh("%s produce -b %s -i %s", g.sm, g.b.bootstrap, events) ||
        sh("%s consume -b %s -t transactions -f -e --avro-file %s", g.sm, g.b.bootstrap,
           g.avro) ||
        sh("%s featurize -i %s -o %s", g.sm, events, g.feats) ||
        sh("%s replay --avro-file %s -o %s", g.sm, g.avro, g.preds) ||
        sh("(echo event_id,label; /usr/bin/python3 -c 'import json,sys\n"
           "for l in open(sys.argv[1]): r=json.loads(l); print(\"%%s,%%d\" %% "
           "(r[\"event_id\"], r[\"label\"]))' %s) > %s", events, g.labels)) {
        print_log();
        return -1;
    }
    add("replay", 1, "%s replay --avro-file %s -o %%s", g.sm, g.avro);
    add("featurize", 1, "%s featurize -i %s -o %%s", g.sm, events);
    add("report", 0, "%s report -p %s -l %s -o %%s", g.sm, g.preds, g.labels);
    add("profile", 0, "%s profile --model models/credit_gbdt.json -i %s -o %%s", g.sm, g.feats);
    add("baseline", 0, "%s baseline --kind images -i tests/fixtures/predmon_images.jsonl -o %%s",
        g.sm);
    add("predict --output", 0,
        "%s predict --model tests/fixtures/onnx/conv_net.onnx "
        "--input tests/fixtures/onnx/conv_net_in0.npy --output %%s",
        g.sm);
    add("consume --avro-file", 0, "%s consume -b %s -t transactions -f -e --avro-file %%s", g.sm,
        g.b.bootstrap);
    return 0;
}

static int teardown(void **st)
{
    char cmd[300];

    (void)st;
    test_broker_stop(&g.b);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", g.dir); /* our own mkdtemp directory */
    return system(cmd) == 0 ? 0 : -1;
}

static int run_cmd(const struct cmd *c, const char *out)
{
    char line[1400];

    snprintf(line, sizeof(line), c->line, out);
    return sh("%s", line);
}

static int no_partial(const char *path)
{
    char p[300];
    struct stat st;

    snprintf(p, sizeof(p), "%s.partial", path);
    return lstat(p, &st) != 0;
}

/* ---- a character device ---- */

static void test_a_character_device_is_written_not_replaced(void **st)
{
    char dev[200];
    struct stat sb;

    (void)st;
    if (geteuid() != 0) {
        fprintf(stderr, "skipped: mknod needs root\n");
        skip();
    }
    snprintf(dev, sizeof(dev), "%s/null", g.dir);
    for (int i = 0; i < ncmds; i++) {
        assert_int_equal(mknod(dev, S_IFCHR | 0666, makedev(1, 3)), 0);
        int rc = run_cmd(&cmds[i], dev);
        if (rc != 0)
            print_log();
        fprintf(stderr, "%-20s -> character device: exit %d\n", cmds[i].name, rc);
        assert_int_equal(rc, 0);
        assert_int_equal(lstat(dev, &sb), 0);
        assert_true(S_ISCHR(sb.st_mode));
        assert_true(no_partial(dev));
        assert_int_equal(unlink(dev), 0);
    }
}

/* ---- a FIFO with a reader ---- */

struct reader {
    char path[200];
    long bytes;
    volatile int done;
    pthread_t th;
};

static void *read_all(void *arg)
{
    struct reader *r = arg;
    char buf[65536];
    ssize_t n;
    int fd = open(r->path, O_RDONLY);

    if (fd < 0)
        return NULL;
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        r->bytes += n;
    close(fd);
    r->done = 1;
    return NULL;
}

static void reader_start(struct reader *r)
{
    r->bytes = 0;
    r->done = 0;
    assert_int_equal(pthread_create(&r->th, NULL, read_all, r), 0);
}

/* Joins the reader, waiting up to wait_ms for the writer to finish; if it
 * never opened the FIFO, a writer open here releases the reader's open. */
static void reader_join(struct reader *r, int wait_ms)
{
    for (int t = 0; !r->done && t < wait_ms; t += 20)
        test_sleep_ms(20);
    if (!r->done) {
        int fd = open(r->path, O_WRONLY | O_NONBLOCK);
        if (fd >= 0)
            close(fd);
    }
    pthread_join(r->th, NULL);
}

static void test_a_fifo_is_written_directly(void **st)
{
    struct reader r;
    struct stat sb;

    (void)st;
    snprintf(r.path, sizeof(r.path), "%s/fifo", g.dir);
    assert_int_equal(mkfifo(r.path, 0600), 0);
    for (int i = 0; i < ncmds; i++) {
        reader_start(&r);
        int rc = run_cmd(&cmds[i], r.path);
        reader_join(&r, 1000);
        if (rc != 0)
            print_log();
        fprintf(stderr, "%-20s -> FIFO: exit %d, %ld bytes read\n", cmds[i].name, rc, r.bytes);
        assert_int_equal(rc, 0);
        assert_true(r.bytes > 0);
        assert_int_equal(lstat(r.path, &sb), 0);
        assert_true(S_ISFIFO(sb.st_mode));
        assert_true(no_partial(r.path));
    }
    unlink(r.path);
}

/* ---- write errors ---- */

static void test_a_full_device_is_exit_1_naming_the_output(void **st)
{
    char dev[200];
    struct stat sb;

    (void)st;
    if (geteuid() != 0) {
        fprintf(stderr, "skipped: mknod needs root\n");
        skip();
    }
    snprintf(dev, sizeof(dev), "%s/full", g.dir);
    assert_int_equal(mknod(dev, S_IFCHR | 0666, makedev(1, 7)), 0);
    for (int i = 0; i < ncmds; i++) {
        int rc = run_cmd(&cmds[i], dev);
        int named = log_has(dev) && log_has("No space left on device");
        fprintf(stderr, "%-20s -> full device: exit %d%s\n", cmds[i].name, rc,
                named ? "" : " (the output not named with ENOSPC)");
        if (rc != 1 || !named)
            print_log();
        assert_int_equal(rc, 1);
        assert_true(named);
        assert_int_equal(lstat(dev, &sb), 0);
        assert_true(S_ISCHR(sb.st_mode));
    }
    /* stdout into a full disk is no success either */
    for (int i = 0; i < ncmds; i++) {
        if (!cmds[i].stdout_ok)
            continue;
        char line[1400];
        snprintf(line, sizeof(line), cmds[i].line, "-");
        int rc = sh_raw("%s > %s", line, dev);
        fprintf(stderr, "%-20s -o - > full device: exit %d\n", cmds[i].name, rc);
        if (rc != 1)
            print_log();
        assert_int_equal(rc, 1);
        assert_true(log_has("stdout"));
    }
    {
        int rc = sh_raw("%s consume -b %s -t transactions -f -e > %s", g.sm, g.b.bootstrap, dev);
        fprintf(stderr, "%-20s > full device: exit %d\n", "consume", rc);
        assert_int_equal(rc, 1);
        assert_true(log_has("stdout"));
    }
    unlink(dev);
}

/* ---- symlinks ---- */

static void test_a_symlink_to_a_file_is_refused_and_left_alone(void **st)
{
    char target[200], link[200], buf[64] = "";
    struct stat sb;
    FILE *f;

    (void)st;
    snprintf(target, sizeof(target), "%s/precious.txt", g.dir);
    snprintf(link, sizeof(link), "%s/link.out", g.dir);
    f = fopen(target, "w");
    assert_non_null(f);
    fputs("keep me\n", f);
    fclose(f);
    assert_int_equal(symlink(target, link), 0);
    for (int i = 0; i < ncmds; i++) {
        int rc = run_cmd(&cmds[i], link);
        fprintf(stderr, "%-20s -> symlink to a file: exit %d\n", cmds[i].name, rc);
        if (rc != 2)
            print_log();
        assert_int_equal(rc, 2);
        assert_true(log_has("symbolic link"));
        assert_int_equal(lstat(link, &sb), 0);
        assert_true(S_ISLNK(sb.st_mode));
        f = fopen(target, "r");
        assert_non_null(f);
        assert_non_null(fgets(buf, sizeof(buf), f));
        fclose(f);
        assert_string_equal(buf, "keep me\n");
        assert_true(no_partial(link));
    }
    unlink(link);
    unlink(target);
}

/* ---- in-process writers: CAM overlays, out_ itself ---- */

static void test_cam_overlays_and_out_module(void **st)
{
    uint8_t rgb[16 * 16 * 3];
    char path[200];
    struct reader r;
    struct stat sb;
    struct err e = {0};
    struct out *o;

    (void)st;
    memset(rgb, 120, sizeof(rgb));
    snprintf(r.path, sizeof(r.path), "%s/cam.fifo", g.dir);
    assert_int_equal(mkfifo(r.path, 0600), 0);
    reader_start(&r);
    assert_int_equal(img_write_png(r.path, rgb, 16, 16, &e), ERR_OK);
    reader_join(&r, 1000);
    assert_true(r.bytes > 50);
    assert_int_equal(lstat(r.path, &sb), 0);
    assert_true(S_ISFIFO(sb.st_mode));
    unlink(r.path);
    if (geteuid() == 0) {
        snprintf(path, sizeof(path), "%s/cam.null", g.dir);
        assert_int_equal(mknod(path, S_IFCHR | 0666, makedev(1, 3)), 0);
        assert_int_equal(img_write_png(path, rgb, 16, 16, &e), ERR_OK);
        assert_int_equal(lstat(path, &sb), 0);
        assert_true(S_ISCHR(sb.st_mode));
        unlink(path);
        snprintf(path, sizeof(path), "%s/cam.full", g.dir);
        assert_int_equal(mknod(path, S_IFCHR | 0666, makedev(1, 7)), 0);
        assert_int_not_equal(img_write_png(path, rgb, 16, 16, &e), ERR_OK);
        assert_non_null(strstr(e.msg, path));
        unlink(path);
    }
    /* A regular file appears only when complete; an aborted one never. */
    snprintf(path, sizeof(path), "%s/plain.txt", g.dir);
    assert_int_equal(out_open(&o, path, &e), ERR_OK);
    assert_true(out_is_atomic(o));
    fputs("x\n", out_file(o));
    assert_int_not_equal(lstat(path, &sb), 0);
    assert_int_equal(out_commit(o, &e), ERR_OK);
    assert_int_equal(lstat(path, &sb), 0);
    assert_true(S_ISREG(sb.st_mode) && sb.st_size == 2);
    assert_int_equal(out_open(&o, path, &e), ERR_OK);
    fputs("half", out_file(o));
    assert_int_equal(out_abort(o), 1);
    assert_int_equal(lstat(path, &sb), 0);
    assert_true(sb.st_size == 2 && no_partial(path));
    /* A directory is not an output. */
    assert_int_equal(out_open(&o, g.dir, &e), ERR_CONFIG);
    unlink(path);
}

/* ---- the broker's bootstrap file ---- */

static void test_broker_bootstrap_file_into_a_fifo(void **st)
{
    struct reader r;
    struct stat sb;
    char *argv[6];
    pid_t pid;

    (void)st;
    snprintf(r.path, sizeof(r.path), "%s/bs.fifo", g.dir);
    assert_int_equal(mkfifo(r.path, 0600), 0);
    reader_start(&r);
    argv[0] = g.sm;
    argv[1] = "broker";
    argv[2] = "--bootstrap-file";
    argv[3] = r.path;
    argv[4] = NULL;
    pid = test_spawn(argv, NULL);
    assert_true(pid > 0);
    reader_join(&r, 20000); /* the broker writes it once it listens */
    test_stop_pid(pid, SIGTERM, 5000);
    assert_true(r.bytes > 8);
    assert_int_equal(lstat(r.path, &sb), 0);
    assert_true(S_ISFIFO(sb.st_mode));
    unlink(r.path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_character_device_is_written_not_replaced),
        cmocka_unit_test(test_a_fifo_is_written_directly),
        cmocka_unit_test(test_a_full_device_is_exit_1_naming_the_output),
        cmocka_unit_test(test_a_symlink_to_a_file_is_refused_and_left_alone),
        cmocka_unit_test(test_cam_overlays_and_out_module),
        cmocka_unit_test(test_broker_bootstrap_file_into_a_fifo),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
