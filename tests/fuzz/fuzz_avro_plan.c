/* libFuzzer target: the Avro plans (common/codec/codec_plan.c) against avro-c.
 * Every input is decoded as a framed transaction event by both (the plan
 * must accept, reject and decode exactly as avro-c), and read as a
 * transaction prediction that both encode (byte for byte the same).
 * tests/test_avro_plan.c replays tests/fuzz/corpus/avro_plan in make test. */
#include <stdint.h>
#include <stdlib.h>

#include "plan_diff.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct plan_diff pd;
static int opened;

static void cleanup(void)
{
    plan_diff_close(&pd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!opened) {
        if (plan_diff_open(&pd)) {
            fprintf(stderr, "%s\n", pd.why);
            abort(); /* run from the repository root */
        }
        opened = 1;
        atexit(cleanup);
    }
    if (plan_diff_decode(&pd, data, size, NULL) || plan_diff_encode(&pd, data, size)) {
        fprintf(stderr, "plan and avro-c disagree: %s\n", pd.why);
        abort();
    }
    return 0;
}
