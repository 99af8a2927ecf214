/* tests/support/rusers.h: users stored in a Redis state store, whatever its
 * layout (prefix test_). */
#ifndef STREAMML_TEST_RUSERS_H
#define STREAMML_TEST_RUSERS_H

#include <hiredis/hiredis.h>

/* Users under prefix: keys <prefix>u:* (layouts 1 and 2) plus the fields of
 * the buckets <prefix>ub:* (layout 3). -1 on a Redis error. */
long test_redis_users(redisContext *c, const char *prefix);

#endif
