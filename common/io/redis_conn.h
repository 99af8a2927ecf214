/* common/io/redis_conn.h: one Redis connection (prefix rc_), used by every
 * Redis user (state_redis.c, covis.c, labels.c, replay.c).
 *
 * Owns what each user did its own way before (issue 16): connect with a
 * timeout, the same timeout on every command, AUTH with the ACL user and
 * password (Redis 6+ "AUTH user password"; the password alone for the
 * default user), the password re-read from redis.password_file at every
 * connect (a rotated secret is picked up by the next reconnect), SIGPIPE
 * safety, and reconnect: after rc_lost/rc_drop the next rc_connect opens a
 * fresh, authenticated connection (hiredis 0.14 does neither by itself).
 *
 * SIGPIPE: hiredis writes with write(2), which raises SIGPIPE on a socket
 * the server closed. A library must not change the process's handlers, so
 * (as libpq does) callers bracket each call with rc_sigpipe_block/restore:
 * the signal is blocked in this thread and one raised by the call is
 * consumed before the mask is restored. rc_connect does it by itself.
 *
 * Credentials: a user that is given no username (rc_opts.username NULL)
 * takes the process's configured redis.username, which cli_apply records
 * (rc_set_default_username), so that every Redis user of a worker logs in
 * as the configured ACL user whoever filled its options. Not thread-safe:
 * one rc per thread.
 *
 * hiredis stays included by the users that build pipelines and read reply
 * trees (state_redis.c, covis.c, labels.c, replay.c); none of them opens,
 * authenticates or frees a connection itself.
 */
#ifndef STREAMML_REDIS_CONN_H
#define STREAMML_REDIS_CONN_H

#include <signal.h>

#include "err.h"

struct cfg;
struct redisContext;
struct rc;

struct rc_opts {
    const char *host;          /* default 127.0.0.1 */
    int port;                  /* default 6379 */
    const char *username;      /* ACL user; NULL: the configured default, "" : none */
    const char *password;      /* NULL or "": no AUTH (unless password_file) */
    const char *password_file; /* read at each connect; wins over password */
    int timeout_ms;            /* connect and command timeout; <= 0: 1000 */
};

/* The options from the configuration's redis.* keys (strings live as long as c). */
void rc_opts_from_cfg(struct rc_opts *o, const struct cfg *c);
/* The ACL user for options without one (cli_apply calls it). */
void rc_set_default_username(const char *username);

/* Copies the options; does not connect. ERR_CONFIG on a bad option. */
int rc_open(struct rc **out, const struct rc_opts *o, struct err *e);
void rc_close(struct rc *c); /* NULL-safe */

/* Connected and authenticated (no-op when already). ERR_RETRY when the
 * server cannot be reached, ERR_CONFIG when it refuses the credentials. */
int rc_connect(struct rc *c, struct err *e);
/* The connect and command timeout from now on (the live connection's too;
 * it is dropped if that fails): a shutdown deadline bounds each wait. */
void rc_set_timeout(struct rc *c, int timeout_ms);
/* The live connection, NULL when disconnected. */
struct redisContext *rc_ctx(const struct rc *c);
/* Closes the connection (the next rc_connect reconnects). */
void rc_drop(struct rc *c);
/* The connection failed during `what`: ERR_RETRY naming host, port and the
 * cause ("timed out" for a timeout), and the connection dropped. */
int rc_lost(struct rc *c, const char *what, struct err *e);
/* The code of an error reply: ERR_RETRY for a server loading or busy
 * (LOADING, BUSY, TRYAGAIN, MASTERDOWN, CLUSTERDOWN), ERR_CONFIG for
 * NOAUTH / WRONGPASS / NOPERM, ERR_IO otherwise. */
int rc_reply_code(const char *msg);
const char *rc_host(const struct rc *c);
int rc_port(const struct rc *c);

struct rc_sigpipe {
    sigset_t old;
    int was_pending;
};
void rc_sigpipe_block(struct rc_sigpipe *g);
void rc_sigpipe_restore(struct rc_sigpipe *g);

#endif
