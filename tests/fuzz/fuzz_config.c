/* libFuzzer target: the configuration file parser (cfg_load_file, then the
 * checks of cfg_finish), as `--config FILE` runs them. */
#include <stdint.h>
#include <unistd.h>

#include "cfg.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    struct err e = {0};
    struct cfg *c = cfg_new();
    int fd = fuzz_memfile(data, size, path, sizeof(path));

    if (c && fd >= 0 && cfg_load_file(c, path, &e) == ERR_OK)
        (void)cfg_finish(c, &e);
    if (fd >= 0)
        close(fd);
    cfg_free(c);
    return 0;
}
