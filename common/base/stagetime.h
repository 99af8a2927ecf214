/* common/base/stagetime.h: per-stage time histograms of the worker's loop,
 * for finding what queues (issue 19: latency). Off by default
 * (worker.stage_times names the file the report goes to at exit): when
 * off, stt_add costs one branch and the callers read no clock (they time
 * with pipe_now_us).
 *
 * One set per process, used from the worker's main thread only. Values
 * are microseconds (or counts for STT_BATCH_N), kept in buckets of an
 * eighth of an octave: the percentiles are within 9% of the truth. */
#ifndef STREAMML_STAGETIME_H
#define STREAMML_STAGETIME_H

#include <stdint.h>

enum stt_stage {
    STT_WAIT,     /* batch: the poll's wait for its first message */
    STT_TAKE,     /* batch: taking the rest of what was there */
    STT_BATCH_N,  /* batch: messages taken (a count, not a time) */
    STT_CHECK,    /* batch: the state store's loss check (marker, flag) */
    STT_DECODE,   /* batch: decode */
    STT_PROCESS,  /* batch: the stream's step (state read, features, score) */
    STT_READ,     /* batch: state read round trip (cache misses) */
    STT_PUT_SEND, /* batch: state write sent (its reply is read in STT_STORE) */
    STT_EMIT,     /* batch: predictions encoded and handed to the producer */
    STT_STORE,    /* batch: the state write's reply read, offsets acknowledged */
    STT_TICK,     /* batch: monitors' tick, metrics, the reload check */
    STT_SERVE,    /* batch: the producer's delivery reports served */
    STT_TURN,     /* batch: the whole loop turn less the wait */
    STT_AGE_TAKE, /* event: record timestamp -> taken by the worker */
    STT_AGE_EMIT, /* event: record timestamp -> its prediction produced */
    STT_AGE_DONE, /* event: record timestamp -> its batch stored */
    STT_N
};

/* Starts recording; the report goes to path at stt_report. */
void stt_enable(const char *path);
int stt_enabled(void);
/* The wall clock in microseconds (event ages against record timestamps). */
int64_t stt_wall_us(void);
void stt_add(enum stt_stage s, int64_t v);
/* Writes the report (count, mean, p50, p90, p99, p99.9, max per stage);
 * nothing when not enabled. Returns 0, or -1 when the file cannot be
 * written (the reason is logged). */
int stt_report(void);

#endif
