/* common/state/state_args.c: the argument vector of the put script's chunks
 * (struct put_args, state_redis_priv.h), grown once and reused, so a batch
 * allocates nothing once the largest chunk was seen. Split out of
 * state_redis.c. */
#include "state_backend.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "state_redis_priv.h"

int state_args_reserve(struct put_args *a, size_t nargv, size_t nstrs, size_t nputs)
{
    if (nargv > a->cap_argv) {
        const char **v = realloc(a->argv, nargv * sizeof(*v));
        size_t *l = v ? realloc(a->argvlen, nargv * sizeof(*l)) : NULL;
        if (v)
            a->argv = v;
        if (!l)
            return ERR_NOMEM;
        a->argvlen = l;
        a->cap_argv = nargv;
    }
    if (nstrs > a->cap_strs) {
        char *p = realloc(a->strs, nstrs);
        if (!p)
            return ERR_NOMEM;
        a->strs = p;
        a->cap_strs = nstrs;
    }
    if (nputs > a->cap_puts) {
        int32_t *sp = realloc(a->slot_part, nputs * sizeof(*sp));
        int *sl = sp ? realloc(a->slot, nputs * sizeof(*sl)) : NULL;
        if (sp)
            a->slot_part = sp;
        if (!sl)
            return ERR_NOMEM;
        a->slot = sl;
        a->cap_puts = nputs;
    }
    return ERR_OK;
}

void state_args_free(struct put_args *a)
{
    free(a->argv);
    free(a->argvlen);
    free(a->strs);
    free(a->slot_part);
    free(a->slot);
}

/* Appends a string the argument vector points to (room was reserved). */
const char *state_args_str(struct put_args *a, size_t *len, const char *fmt, ...)
{
    char *at = a->strs + a->used;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(at, a->cap_strs - a->used, fmt, ap);
    va_end(ap);
    *len = (size_t)n;
    a->used += (size_t)n + 1;
    return at;
}

/* Appends the decimal form of v (the per-put numbers: snprintf costs more
 * than the rest of a put's arguments together). */
const char *state_args_int(struct put_args *a, size_t *len, long long v)
{
    char *at = a->strs + a->used;

    *len = state_put_ll(at, v);
    at[*len] = '\0';
    a->used += *len + 1;
    return at;
}
