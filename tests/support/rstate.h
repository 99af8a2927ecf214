/* tests/support/rstate.h: a Redis state store under test (common/state),
 * the helpers the layout tests share: open a handle, send a raw command,
 * put one blob, assert what one entity reads back (prefix test_). */
#ifndef STREAMML_TEST_RSTATE_H
#define STREAMML_TEST_RSTATE_H

#include <stdint.h>

#include <hiredis/hiredis.h>

#include "stack.h"
#include "state.h"

/* A handle on 127.0.0.1:port (timeout 2 s); layout and buckets as
 * state_redis_opts (0: the library's defaults). NULL with *e on failure. */
struct state *test_rstate_open(int port, const char *prefix, int ttl_s, int layout, int buckets,
                               struct err *e);
/* A command's reply as a string ("(nil)", the integer, or the error),
 * valid until the next call. */
const char *test_rstate_q(redisContext *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* One put without bases: its applied code (0, 1, 2, 3) or the error. */
int test_rstate_put1(struct state *s, const char *ent, const char *blob, int32_t p, int64_t o,
                     struct err *e);
/* ent reads back as want, stored at (p, o). */
void test_rstate_assert_blob(struct state *s, const char *ent, const char *want, int32_t p,
                             int64_t o);

/* A test group's redis-server and a connection to it (cmocka group setup
 * and teardown): 0, or -1 when either failed. */
int test_rstate_start(struct test_redis *r, redisContext **c);
void test_rstate_stop(struct test_redis *r, redisContext *c);

#endif
