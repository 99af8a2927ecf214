/* libFuzzer target: the ONNX loader (protobuf-c unpack of ModelProto, then
 * the graph, shape and operator checks of onnx_open). */
#include <stdint.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "onnx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    struct err e = {0};
    struct onnx_model *m = NULL;
    int fd = fuzz_memfile(data, size, path, sizeof(path));

    if (fd < 0)
        return 0;
    if (onnx_open(&m, path, &e) == ERR_OK)
        onnx_close(m);
    close(fd);
    return 0;
}
