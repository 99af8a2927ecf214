/* libFuzzer target: a feature spec's record read by position (codec_rec,
 * common/codec/codec_rec.c) against avro-c alone. Every input is the body
 * of one record: codec_rec must accept, reject and decode exactly as
 * avro-c does (tests/fuzz/rec_diff.h says what "exactly" allows).
 * tests/test_rec_diff.c replays tests/fuzz/corpus/rec in make test. */
#include <stdint.h>
#include <stdlib.h>

#include "rec_diff.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The reference, avro-c alone, leaks what it allocated when a read fails
 * half-way (a string or bytes whose length runs past the input: avro-c
 * 1.11's read_string returns without freeing). The codec never lets avro-c
 * see such bytes (its walk refuses them first), so only the reference
 * leaks: what avro-c allocates during the reference's decode and still
 * holds after its value is freed is freed here (tracked by the allocator
 * below), so memory stays flat over millions of inputs. */
#define TRACK_MAX 65536 /* open addressing; a decode of < 64 kB holds fewer */

#define TOMB ((void *)1) /* a removed entry: lookups go past it */

static void *tracked[TRACK_MAX];
static size_t used[TRACK_MAX], nused; /* slots filled since ref_begin */
static int tracking;

static size_t slot_of(const void *p)
{
    return (size_t)(((uintptr_t)p >> 4) * 11400714819323198485ull >> 48) % TRACK_MAX;
}

static void track_add(void *p)
{
    size_t i = slot_of(p);

    for (size_t k = 0; k < TRACK_MAX; k++, i = (i + 1) % TRACK_MAX) {
        if (tracked[i] == NULL || tracked[i] == TOMB) {
            if (tracked[i] == NULL && nused < TRACK_MAX)
                used[nused++] = i;
            tracked[i] = p;
            return;
        }
    }
}

static void track_del(void *p)
{
    size_t i = slot_of(p);

    for (size_t k = 0; k < TRACK_MAX && tracked[i] != NULL; k++, i = (i + 1) % TRACK_MAX) {
        if (tracked[i] == p) {
            tracked[i] = TOMB;
            return;
        }
    }
}

static void ref_begin(void)
{
    tracking = 1;
}

static void ref_end(void)
{
    tracking = 0;
    for (size_t k = 0; k < nused; k++) {
        if (tracked[used[k]] != TOMB)
            free(tracked[used[k]]);
        tracked[used[k]] = NULL;
    }
    nused = 0;
}

/* avro-c alone trusts an array or map block count: it sizes the array for
 * it before reading an item (a count of 2^40 asks for terabytes and times
 * out). The codec's walk refuses a count beyond the bytes left, so only
 * the reference asks: avro-c's allocations are capped here (NULL past
 * 1 MB, a read error for avro-c: the refusal it is). Inputs are < 64 kB. */
#define AVRO_ALLOC_CAP (1u << 20)

static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    void *q;

    (void)ud, (void)osize;
    if (tracking && ptr)
        track_del(ptr);
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    q = nsize > AVRO_ALLOC_CAP ? NULL : realloc(ptr, nsize);
    if (tracking && (q || ptr))
        track_add(q ? q : ptr); /* a failed realloc keeps ptr */
    return q;
}

static struct rec_diff d;
static int opened;

static void cleanup(void)
{
    rec_diff_close(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!opened) {
        avro_set_allocator(capped_alloc, NULL);
        if (rec_diff_open(&d, "schemas")) {
            fprintf(stderr, "%s\n", d.why);
            abort(); /* run from the repository root */
        }
        d.ref_begin = ref_begin;
        d.ref_end = ref_end;
        opened = 1;
        atexit(cleanup);
    }
    if (rec_diff_check(&d, data, size)) {
        fprintf(stderr, "codec_rec and avro-c disagree: %s\n", d.why);
        abort();
    }
    return 0;
}
