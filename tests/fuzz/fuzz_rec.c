/* libFuzzer target: a feature spec's record read by position (codec_rec,
 * common/codec/codec_rec.c) against avro-c alone. Every input is the body
 * of one record: codec_rec must accept, reject and decode exactly as
 * avro-c does (tests/fuzz/rec_diff.h says what "exactly" allows).
 * tests/test_rec_diff.c replays tests/fuzz/corpus/rec in make test. */
#include <stdint.h>
#include <stdlib.h>

#include "rec_diff.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct rec_diff d;
static int opened;

static void cleanup(void)
{
    rec_diff_close(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!opened) {
        if (rec_diff_open(&d, "schemas")) {
            fprintf(stderr, "%s\n", d.why);
            abort(); /* run from the repository root */
        }
        opened = 1;
        atexit(cleanup);
    }
    if (rec_diff_check(&d, data, size)) {
        fprintf(stderr, "codec_rec and avro-c disagree: %s\n", d.why);
        abort();
    }
    return 0;
}
