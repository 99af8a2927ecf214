/* tests/support/rusers.c: see rusers.h. */
#include "rusers.h"

#include <stdio.h>
#include <string.h>

/* Calls fn for each key matching pattern; the sum of what it returns. */
static long scan_keys(redisContext *c, const char *pattern,
                      long (*fn)(redisContext *c, const char *key))
{
    char cursor[32] = "0";
    long n = 0;

    do {
        redisReply *r = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            if (r)
                freeReplyObject(r);
            return -1;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements && n >= 0; i++) {
            long k = fn(c, r->element[1]->element[i]->str);
            n = k < 0 ? -1 : n + k;
        }
        freeReplyObject(r);
    } while (n >= 0 && strcmp(cursor, "0") != 0);
    return n;
}

static long one(redisContext *c, const char *key)
{
    (void)c;
    (void)key;
    return 1;
}

static long fields(redisContext *c, const char *key)
{
    redisReply *r = redisCommand(c, "HLEN %s", key);
    long n = r && r->type == REDIS_REPLY_INTEGER ? (long)r->integer : -1;

    if (r)
        freeReplyObject(r);
    return n;
}

long test_redis_users(redisContext *c, const char *prefix)
{
    char pat[256];
    long keys, buckets;

    snprintf(pat, sizeof(pat), "%su:*", prefix);
    keys = scan_keys(c, pat, one);
    snprintf(pat, sizeof(pat), "%sub:*", prefix);
    buckets = scan_keys(c, pat, fields);
    return keys < 0 || buckets < 0 ? -1 : keys + buckets;
}
