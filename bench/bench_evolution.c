/* Cost of schema resolution in codec_decode_txn, ns/message, median of 5
 * runs: messages written with our own schema (read directly) against the
 * same events written by an older and a newer producer schema (walked with
 * the writer's schema, then resolved into ours). A figure, not a test.
 * usage (from the repository root): bench_evolution [ROUNDS] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"

#define REPS 5
#define MAX_MSGS 200
#define EVO "tests/fixtures/evolution"

struct msg {
    char writer[16];
    unsigned char b[4096];
    size_t n;
};

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int hexval(int ch)
{
    return ch <= '9' ? ch - '0' : ch - 'a' + 10;
}

static int load(struct msg *m, int max)
{
    FILE *f = fopen(EVO "/messages.txt", "r");
    static char line[16384];
    int n = 0;

    if (!f)
        return -1;
    while (n < max && fgets(line, sizeof(line), f)) {
        char *hex = strrchr(line, ' ');
        if (!hex || sscanf(line, "%15s", m[n].writer) != 1)
            break;
        m[n].n = 0;
        for (hex++; hex[0] && hex[1] && hex[0] != '\n' && m[n].n < sizeof(m[n].b); hex += 2)
            m[n].b[m[n].n++] = (unsigned char)(hexval(hex[0]) << 4 | hexval(hex[1]));
        n++;
    }
    fclose(f);
    return n;
}

/* The shipped schemas plus the two producer versions (ids 5 and 6, as in
 * the fixture's framing). */
static int schema_dir(char *dir)
{
    char cmd[400];
    FILE *ids;

    if (!mkdtemp(dir))
        return -1;
    snprintf(cmd, sizeof(cmd), "cp schemas/*.avsc " EVO "/*.avsc '%s'/", dir);
    if (system(cmd) != 0)
        return -1;
    snprintf(cmd, sizeof(cmd), "%s/ids", dir);
    if (!(ids = fopen(cmd, "w")))
        return -1;
    fprintf(ids, "1 transaction_event.avsc\n2 transaction_prediction.avsc\n3 dead_letter.avsc\n"
                 "4 alert_event.avsc\n5 transaction_event_v0.avsc\n6 transaction_event_v2.avsc\n");
    fclose(ids);
    return 0;
}

static double run(struct codec *c, const struct msg *m, int n, const char *writer, int rounds,
                  long *count)
{
    struct txn_event ev;
    struct err e = {0};
    double t0 = now_ns();

    *count = 0;
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < n; i++) {
            if (strcmp(m[i].writer, writer) != 0)
                continue;
            if (codec_decode_txn(c, m[i].b, m[i].n, &ev, &e)) {
                fprintf(stderr, "decode (%s): %s\n", writer, e.msg);
                exit(1);
            }
            (*count)++;
        }
    }
    return (now_ns() - t0) / (double)*count;
}

int main(int argc, char **argv)
{
    static struct msg m[MAX_MSGS];
    static const char *const writers[] = {"reader", "v0", "v2"};
    static const char *const what[] = {"own schema (read directly)", "older producer (resolved)",
                                       "newer producer (resolved)"};
    char dir[] = "/tmp/streamml-bench-XXXXXX", cmd[100];
    int rounds = argc > 1 ? atoi(argv[1]) : 5000, n = load(m, MAX_MSGS);
    struct err e = {0};
    struct codec *c;

    if (n <= 0 || schema_dir(dir) || !(c = codec_open(dir, &e))) {
        fprintf(stderr, "bench_evolution: run from the repository root (%s)\n", e.msg);
        return 1;
    }
    printf("| writer schema | median ns/message | min | max |\n|---|---:|---:|---:|\n");
    for (int w = 0; w < 3; w++) {
        double ns[REPS];
        long count = 0;
        run(c, m, n, writers[w], 10, &count); /* warm: resolution is built on first use */
        for (int r = 0; r < REPS; r++)
            ns[r] = run(c, m, n, writers[w], rounds, &count);
        qsort(ns, REPS, sizeof(double), cmp);
        printf("| %-28s | %9.0f | %9.0f | %9.0f |\n", what[w], ns[REPS / 2], ns[0], ns[REPS - 1]);
    }
    codec_close(c);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
