/* libFuzzer target: the Avro decoder path a worker runs on every message
 * (Confluent framing, the bounded pre-decode walk, avro-c, extraction, then
 * validation), and the generic Avro-to-JSON path of `streamml consume`. */
#include <stdint.h>
#include <stdlib.h>

#include "codec.h"
#include "event.h"
#include "features.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct codec *cd;
static struct buf json;

/* At exit, so that LeakSanitizer sees only what a message leaks. */
static void cleanup(void)
{
    codec_close(cd);
    buf_free(&json);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct txn_event ev;
    struct err e = {0};

    if (!cd) {
        cd = codec_open("schemas", &e);
        if (!cd)
            abort(); /* run from the repository root */
        buf_init(&json, 0);
        atexit(cleanup);
    }
    if (codec_decode_txn(cd, data, size, &ev, &e) == ERR_OK)
        (void)feat_txn_validate(&ev, &e);
    buf_reset(&json);
    (void)codec_to_json(cd, data, size, &json, &e);
    return 0;
}
