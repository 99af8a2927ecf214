/* bench_replay: writes the input of the replay benchmark.
 *
 *   bench_replay SCHEMAS_DIR N FILES OUT_PREFIX
 *
 * N synthetic transaction events for 50,000 users, split round-robin over
 * FILES Avro object container files (OUT_PREFIX0.avro, ...), each file in
 * increasing event time, so `streamml replay --avro-file ...` k-way merges
 * them. bench/run.sh times the replay itself. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

#define USERS 50000
#define MAX_FILES 64

int main(int argc, char **argv)
{
    struct codec_file *f[MAX_FILES];
    struct txn_event ev;
    struct err e = {0};
    struct codec *cd;
    long n, nf;
    int64_t t = 1700000000000LL;

    if (argc != 5 || (n = atol(argv[2])) <= 0 || (nf = atol(argv[3])) <= 0 || nf > MAX_FILES) {
        fprintf(stderr, "usage: bench_replay SCHEMAS_DIR N FILES(1..%d) OUT_PREFIX\n", MAX_FILES);
        return 2;
    }
    if (!(cd = codec_open(argv[1], &e))) {
        fprintf(stderr, "error: %s\n", e.msg);
        return 1;
    }
    for (long k = 0; k < nf; k++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s%ld.avro", argv[4], k);
        if (!(f[k] = codec_file_open_write(cd, path, &e))) {
            fprintf(stderr, "error: %s\n", e.msg);
            return 1;
        }
    }
    for (long i = 0; i < n; i++) {
        event_txn_init(&ev);
        t += 200 + (i % 7) * 100;
        snprintf(ev.event_id, sizeof(ev.event_id), "b%ld", i);
        snprintf(ev.user_id, sizeof(ev.user_id), "u%ld", (i * 7919) % USERS);
        ev.event_time_ms = t;
        ev.amount = 500 + (double)(i % 2000);
        ev.income = 80 + (double)(i % 200);
        ev.expenses = 40 + (double)(i % 50);
        ev.term_months = 12 + 12 * (double)(i % 5);
        ev.age = 20 + (double)(i % 50);
        ev.seniority_years = (double)(i % 20);
        snprintf(ev.home, sizeof(ev.home), "%s", i % 3 ? "rent" : "owner");
        snprintf(ev.job, sizeof(ev.job), "%s", i % 4 ? "fixed" : "freelance");
        ev.past_records = (int)(i % 9 == 0);
        if (codec_file_write_txn(f[i % nf], &ev, &e)) {
            fprintf(stderr, "error: %s\n", e.msg);
            return 1;
        }
    }
    for (long k = 0; k < nf; k++)
        if (codec_file_close(f[k], &e)) {
            fprintf(stderr, "error: %s\n", e.msg);
            return 1;
        }
    codec_close(cd);
    return 0;
}
