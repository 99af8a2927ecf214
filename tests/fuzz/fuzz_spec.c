/* libFuzzer target: the feature spec parser and compiler (fspec_open_text,
 * as `streamml features check` and features.spec run them), then one
 * record through the compiled plan and its state through the codec. */
#include <stdint.h>
#include <string.h>

#include "fspec.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char schema[] =
    "{\"type\": \"record\", \"name\": \"Acct\", \"fields\": ["
    "{\"name\": \"account\", \"type\": \"string\"},"
    "{\"name\": \"ts\", \"type\": \"long\"},"
    "{\"name\": \"balance\", \"type\": [\"null\", \"double\"]},"
    "{\"name\": \"limit\", \"type\": [\"null\", \"double\"]},"
    "{\"name\": \"flagged\", \"type\": [\"null\", \"boolean\"]},"
    "{\"name\": \"region\", \"type\": [\"null\", \"string\"]}]}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct err e = {0};
    struct fspec *p = fspec_open_text((const char *)data, size, "fuzz.yaml", NULL, schema, &e);
    struct fspec_row r;
    static struct fspec_state s, back;
    float x[FSPEC_OUT_MAX];
    unsigned char buf[FSPEC_STATE_MAX];
    int n;

    if (!p)
        return 0;
    if (fspec_bind_row(p, &e) == ERR_OK && fspec_row_init(p, &r) == ERR_OK) {
        fspec_state_init(&s);
        for (int i = 0; i < 3; i++) {
            r.time_ms = 1700000000000LL + i * 400000LL - (i == 2) * 3600000LL;
            r.num[2] = i * 10.5;
            strcpy(r.str + 5 * FSPEC_NAME_MAX, i ? "north" : "");
            fspec_build(p, &r, &s, x);
            fspec_update(p, &r, &s, &s);
        }
        n = fspec_state_encode(p, &s, buf, sizeof(buf));
        if (n > 0)
            (void)fspec_state_decode(p, &back, buf, (size_t)n, &e);
        fspec_row_free(&r);
    }
    fspec_close(p);
    return 0;
}
