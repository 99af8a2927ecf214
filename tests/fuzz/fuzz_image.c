/* libFuzzer target: the image decode path (JPEG via libjpeg-turbo, PNG via
 * libpng, chosen by magic bytes) with the worker's limits, scaled down so a
 * run stays fast: 4 M pixels, 16 scans, 64 MiB for libjpeg. */
#include <stdint.h>
#include <stdlib.h>

#include "image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct img_loader *l;
static struct img im;

/* At exit, so that LeakSanitizer sees only what an image leaks. */
static void cleanup(void)
{
    img_loader_close(l);
    img_free(&im);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct img_opts o = {.max_pixels = 4u << 20, .max_scans = 16, .jpeg_max_memory = 64L << 20};
    enum img_reason why;
    struct err e = {0};

    if (!l) {
        if (img_loader_open(&l, &o, &e))
            abort();
        img_init(&im);
        atexit(cleanup);
    }
    (void)img_decode(l, data, size, &im, &why, &e);
    return 0;
}
