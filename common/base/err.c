#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int err_set(struct err *e, int code, const char *fmt, ...)
{
    va_list ap;

    if (!e)
        return code;
    e->code = code;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    return code;
}

int err_wrap(struct err *e, const char *fmt, ...)
{
    char prefix[128], old[sizeof(e->msg)];
    va_list ap;

    if (!e)
        return ERR_OK;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof(old));
    snprintf(e->msg, sizeof(e->msg), "%s: %s", prefix, old);
    return e->code;
}

void err_clear(struct err *e)
{
    if (!e)
        return;
    e->code = ERR_OK;
    e->msg[0] = '\0';
}

const char *err_name(int code)
{
    switch (code) {
    case ERR_OK: return "ok";
    case ERR_NOMEM: return "nomem";
    case ERR_IO: return "io";
    case ERR_TIMEOUT: return "timeout";
    case ERR_DECODE: return "decode";
    case ERR_CONFIG: return "config";
    case ERR_NOTFOUND: return "notfound";
    case ERR_RETRY: return "retry";
    case ERR_INVALID: return "invalid";
    case ERR_FATAL: return "fatal";
    default: return "unknown";
    }
}
