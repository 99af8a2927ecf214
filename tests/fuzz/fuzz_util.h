/* tests/fuzz/fuzz_util.h: helpers shared by the libFuzzer targets.
 *
 * Loaders that take a path (config, ONNX) are fed through an anonymous
 * in-memory file (memfd), reached as /proc/self/fd/N: no disk I/O per run.
 */
#ifndef STREAMML_FUZZ_UTIL_H
#define STREAMML_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

/* Writes data to a fresh memfd; path receives its /proc name. -1 on error. */
static inline int fuzz_memfile(const uint8_t *data, size_t size, char *path, size_t cap)
{
    int fd = memfd_create("fuzz", 0);
    size_t off = 0;

    if (fd < 0)
        return -1;
    while (off < size) {
        ssize_t n = write(fd, data + off, size - off);
        if (n <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)n;
    }
    snprintf(path, cap, "/proc/self/fd/%d", fd);
    return fd;
}

#endif
