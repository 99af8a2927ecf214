/* libFuzzer target: the XGBoost JSON model loader (jansson parse, then the
 * tree and parameter checks of gbdt_open). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gbdt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    struct err e = {0};

    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    gbdt_close(gbdt_open_string(text, &e));
    free(text);
    return 0;
}
