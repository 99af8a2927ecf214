#include "redis_conn.h"
#include "cfg.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define RC_SECRET_MAX 1024

struct rc {
    redisContext *c;
    char *host, *username, *password, *password_file;
    int port, timeout_ms;
};

static char *g_default_user;

void rc_set_default_username(const char *username)
{
    free(g_default_user);
    g_default_user = username && *username ? strdup(username) : NULL;
}

void rc_opts_from_cfg(struct rc_opts *o, const struct cfg *c)
{
    *o = (struct rc_opts){.host = cfg_str(c, "redis.host"),
                          .port = (int)cfg_int(c, "redis.port"),
                          .username = cfg_str(c, "redis.username"),
                          .password = cfg_str(c, "redis.password"),
                          .password_file = cfg_str(c, "redis.password_file"),
                          .timeout_ms = (int)cfg_int(c, "redis.timeout_ms")};
}

static int dup_to(char **dst, const char *s)
{
    *dst = NULL;
    if (!s || !*s)
        return 0;
    *dst = strdup(s);
    return *dst == NULL;
}

int rc_open(struct rc **out, const struct rc_opts *o, struct err *e)
{
    struct rc *c = calloc(1, sizeof(*c));
    int has_pw = (o->password && *o->password) || (o->password_file && *o->password_file);
    const char *user = o->username ? o->username : has_pw ? g_default_user : NULL;

    *out = NULL;
    if (!c)
        return err_set(e, ERR_NOMEM, "redis: out of memory");
    if (o->port < 0 || o->port > 65535) {
        free(c);
        return err_set(e, ERR_CONFIG, "redis: port %d out of range", o->port);
    }
    if (dup_to(&c->host, o->host && *o->host ? o->host : "127.0.0.1") ||
        dup_to(&c->username, user) || dup_to(&c->password, o->password) ||
        dup_to(&c->password_file, o->password_file)) {
        rc_close(c);
        return err_set(e, ERR_NOMEM, "redis: out of memory");
    }
    if (c->username && !c->password && !c->password_file) {
        err_set(e, ERR_CONFIG, "redis: username %s given without a password", c->username);
        rc_close(c);
        return ERR_CONFIG;
    }
    c->port = o->port ? o->port : 6379;
    c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 1000;
    *out = c;
    return ERR_OK;
}

void rc_close(struct rc *c)
{
    if (!c)
        return;
    rc_drop(c);
    free(c->host);
    free(c->username);
    if (c->password)
        memset(c->password, 0, strlen(c->password));
    free(c->password);
    free(c->password_file);
    free(c);
}

struct redisContext *rc_ctx(const struct rc *c)
{
    return c->c;
}

const char *rc_host(const struct rc *c)
{
    return c->host;
}

int rc_port(const struct rc *c)
{
    return c->port;
}

void rc_set_timeout(struct rc *c, int timeout_ms)
{
    struct timeval tv;

    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 1;
    tv = (struct timeval){c->timeout_ms / 1000, (c->timeout_ms % 1000) * 1000};
    if (c->c && redisSetTimeout(c->c, tv) != REDIS_OK)
        rc_drop(c);
}

void rc_drop(struct rc *c)
{
    if (c->c)
        redisFree(c->c);
    c->c = NULL;
}

int rc_lost(struct rc *c, const char *what, struct err *e)
{
    const char *why = c->c && c->c->errstr[0] ? c->c->errstr : "connection lost";

    if (c->c && c->c->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK))
        why = "timed out";
    err_set(e, ERR_RETRY, "redis %s (%s:%d): %s", what, c->host, c->port, why);
    rc_drop(c);
    return ERR_RETRY;
}

int rc_reply_code(const char *msg)
{
    static const char *const transient[] = {"LOADING",    "BUSY",        "TRYAGAIN",
                                            "MASTERDOWN", "CLUSTERDOWN", NULL};

    for (int i = 0; transient[i]; i++)
        if (strncmp(msg, transient[i], strlen(transient[i])) == 0)
            return ERR_RETRY;
    if (strncmp(msg, "NOAUTH", 6) == 0 || strncmp(msg, "WRONGPASS", 9) == 0 ||
        strncmp(msg, "NOPERM", 6) == 0)
        return ERR_CONFIG;
    return ERR_IO;
}

/* The password file's first line, read at every connect (rotation). */
static int read_password(const struct rc *c, char *buf, size_t cap, struct err *e)
{
    FILE *f = fopen(c->password_file, "r");
    size_t n;

    if (!f)
        return err_set(e, ERR_CONFIG, "redis: cannot open redis.password_file %s: %s",
                       c->password_file, strerror(errno));
    n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    return ERR_OK;
}

static int auth(struct rc *c, struct err *e)
{
    char secret[RC_SECRET_MAX];
    const char *pw = c->password;
    const char *argv[3];
    redisReply *r;
    int argc = 0, rc;

    if (c->password_file) {
        if ((rc = read_password(c, secret, sizeof(secret), e)))
            return rc;
        pw = secret;
    }
    if (!pw || !*pw)
        return ERR_OK;
    argv[argc++] = "AUTH";
    if (c->username)
        argv[argc++] = c->username;
    argv[argc++] = pw;
    r = redisCommandArgv(c->c, argc, argv, NULL);
    memset(secret, 0, sizeof(secret));
    if (!r)
        return rc_lost(c, c->username ? "AUTH (ACL user)" : "AUTH", e);
    if (r->type == REDIS_REPLY_ERROR) {
        rc = rc_reply_code(r->str);
        err_set(e, rc == ERR_RETRY ? ERR_RETRY : ERR_CONFIG, "redis AUTH%s%s (%s:%d): %s",
                c->username ? " as " : "", c->username ? c->username : "", c->host, c->port,
                r->str);
        freeReplyObject(r);
        rc_drop(c);
        return e ? e->code : ERR_CONFIG;
    }
    freeReplyObject(r);
    return ERR_OK;
}

int rc_connect(struct rc *c, struct err *e)
{
    struct timeval tv = {c->timeout_ms / 1000, (c->timeout_ms % 1000) * 1000};
    struct rc_sigpipe g;
    int rc;

    if (c->c)
        return ERR_OK;
    rc_sigpipe_block(&g);
    c->c = redisConnectWithTimeout(c->host, c->port, tv);
    if (!c->c || c->c->err) {
        err_set(e, ERR_RETRY, "redis connect %s:%d: %s", c->host, c->port,
                c->c ? c->c->errstr : "out of memory");
        rc_drop(c);
        rc = ERR_RETRY;
    } else if (redisSetTimeout(c->c, tv) != REDIS_OK) {
        rc = rc_lost(c, "SETTIMEOUT", e);
    } else {
        rc = auth(c, e);
    }
    rc_sigpipe_restore(&g);
    return rc;
}

/* ---- SIGPIPE ---- */

static int sigpipe_pending(void)
{
    sigset_t pend;

    return sigpending(&pend) == 0 && sigismember(&pend, SIGPIPE) == 1;
}

void rc_sigpipe_block(struct rc_sigpipe *g)
{
    sigset_t set;

    g->was_pending = sigpipe_pending();
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &g->old);
}

void rc_sigpipe_restore(struct rc_sigpipe *g)
{
    sigset_t set;
    struct timespec zero = {0, 0};

    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    if (!g->was_pending && sigpipe_pending())
        sigtimedwait(&set, NULL, &zero);
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}
