/* common/base/err.h: error codes and a message that names the culprit.
 *
 * Every fallible function in streamml returns one of the ERR_* codes (0 on
 * success, negative otherwise) and, where it takes a struct err, fills its
 * message. Library errors are converted at the wrapper boundary.
 */
#ifndef STREAMML_ERR_H
#define STREAMML_ERR_H

enum {
    ERR_OK = 0,
    ERR_NOMEM = -1,
    ERR_IO = -2,
    ERR_TIMEOUT = -3,
    ERR_DECODE = -4,   /* input bytes are not what they claim to be */
    ERR_CONFIG = -5,   /* a user setting or file is wrong */
    ERR_NOTFOUND = -6,
    ERR_RETRY = -7,    /* transient: the same call may succeed later */
    ERR_INVALID = -8,  /* decoded, but the values are impossible */
    ERR_FATAL = -9     /* the process must stop (e.g. fenced, delivery lost) */
};

struct err {
    int code;
    char msg[256];
};

/* Sets e (NULL-safe) and returns code, so callers can `return err_set(...)`. */
int err_set(struct err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefixes the existing message with "what: " and keeps the code. */
int err_wrap(struct err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void err_clear(struct err *e);
/* Short constant name of a code ("decode", "config", ...). */
const char *err_name(int code);

#endif
