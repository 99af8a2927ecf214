#include "stack.h"

#include "kafka.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

const char *test_bin(const char *name)
{
    static char path[512];
    const char *b = getenv("STREAMML_BUILD");

    snprintf(path, sizeof(path), "%s/%s", b && *b ? b : "build", name);
    return path;
}

int test_free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

    if (fd < 0)
        return -1;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

pid_t test_spawn(char *const argv[], const char *log_path)
{
    pid_t pid = fork();

    if (pid != 0)
        return pid;
    /* Whatever a test spawns dies with the test binary, even when a failed
     * assertion skips the test's own clean-up (no orphaned workers). */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (log_path) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
    }
    execvp(argv[0], argv);
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

int test_stop_pid(pid_t pid, int sig, int timeout_ms)
{
    int status;

    if (pid <= 0)
        return -1;
    kill(pid, sig);
    for (int waited = 0; waited < timeout_ms; waited += 10) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0)
            return -1;
        sleep_ms(10);
    }
    kill(pid, SIGKILL);
    if (waitpid(pid, &status, 0) == pid)
        return status;
    return -1;
}

static int redis_ping(int port)
{
    struct sockaddr_in a;
    char reply[16] = {0};
    int fd = socket(AF_INET, SOCK_STREAM, 0), ok = 0;

    if (fd < 0)
        return 0;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        write(fd, "PING\r\n", 6) == 6 && read(fd, reply, sizeof(reply) - 1) > 0)
        ok = strncmp(reply, "+PONG", 5) == 0 || strncmp(reply, "-NOAUTH", 7) == 0;
    close(fd);
    return ok;
}

int test_redis_start(struct test_redis *r)
{
    return test_redis_start_opts(r, 0, NULL);
}

int test_redis_start_opts(struct test_redis *r, int port_num, const char *const *extra)
{
    char port[16], log[300];
    char *argv[32] = {"redis-server", "--port",      port,     "--bind", "127.0.0.1",
                      "--dir",        r->dir,        "--save", "",       "--appendonly",
                      "no",           "--daemonize", "no"};
    int argc = 13;

    memset(r, 0, sizeof(*r));
    snprintf(r->dir, sizeof(r->dir), "/tmp/streamml-redis-XXXXXX");
    if (!mkdtemp(r->dir))
        return -1;
    r->port = port_num > 0 ? port_num : test_free_port();
    snprintf(port, sizeof(port), "%d", r->port);
    snprintf(log, sizeof(log), "%s/redis.log", r->dir);
    for (int i = 0; extra && extra[i] && argc < 31; i++)
        argv[argc++] = (char *)extra[i];
    argv[argc] = NULL;
    r->pid = test_spawn(argv, log);
    for (int i = 0; i < 500; i++) {
        if (redis_ping(r->port))
            return 0;
        if (waitpid(r->pid, NULL, WNOHANG) == r->pid)
            break;
        sleep_ms(10);
    }
    fprintf(stderr, "redis-server did not start on port %d (see %s)\n", r->port, log);
    r->pid = 0;
    return -1;
}

static void remove_dir(const char *dir)
{
    char cmd[400];

    if (!dir[0] || strncmp(dir, "/tmp/streamml-", 14) != 0)
        return;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

void test_redis_stop(struct test_redis *r)
{
    if (r->pid > 0)
        test_stop_pid(r->pid, SIGTERM, 3000);
    r->pid = 0;
    remove_dir(r->dir);
}

int test_broker_start(struct test_broker *b, const char *topics)
{
    char file[300], log[300];

    memset(b, 0, sizeof(*b));
    snprintf(b->dir, sizeof(b->dir), "/tmp/streamml-broker-XXXXXX");
    if (!mkdtemp(b->dir))
        return -1;
    snprintf(file, sizeof(file), "%s/bootstrap", b->dir);
    snprintf(log, sizeof(log), "%s/broker.log", b->dir);
    char *argv[] = {(char *)test_bin("streamml"), "broker", "--topics", (char *)topics,
                    "--bootstrap-file", file, NULL};
    b->pid = test_spawn(argv, log);
    for (int i = 0; i < 1000; i++) {
        FILE *f = fopen(file, "r");
        if (f) {
            int ok = fgets(b->bootstrap, sizeof(b->bootstrap), f) != NULL;
            fclose(f);
            b->bootstrap[strcspn(b->bootstrap, "\r\n")] = '\0';
            if (ok && b->bootstrap[0])
                return 0;
        }
        if (waitpid(b->pid, NULL, WNOHANG) == b->pid)
            break;
        sleep_ms(10);
    }
    fprintf(stderr, "streamml broker did not start (see %s)\n", log);
    b->pid = 0;
    return -1;
}

void test_broker_stop(struct test_broker *b)
{
    if (b->pid > 0)
        test_stop_pid(b->pid, SIGTERM, 5000);
    b->pid = 0;
    remove_dir(b->dir);
}

void test_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int test_run_wait(char *const argv[], const char *log)
{
    int status;
    pid_t pid = test_spawn(argv, log);

    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int64_t test_topic_size(const char *bootstrap, const char *topic)
{
    struct err e = {0};
    struct cfg_kv kv = {"bootstrap.servers", bootstrap, "test"};
    struct kq_opts o = {.props = &kv, .n_props = 1, .client_id = "test"};
    struct kq *q = kq_open(&o, &e);
    int64_t n;

    if (!q) {
        fprintf(stderr, "test_topic_size: %s\n", e.msg);
        return -1;
    }
    n = kq_topic_size(q, topic, 5000, &e);
    if (n < 0)
        fprintf(stderr, "test_topic_size %s: %s\n", topic, e.msg);
    kq_close(q, 0, NULL);
    return n;
}

int test_wait_topic(const char *bootstrap, const char *topic, int64_t want, int timeout_ms)
{
    int64_t n = -1;

    for (int waited = 0; waited < timeout_ms; waited += 100) {
        if ((n = test_topic_size(bootstrap, topic)) >= want)
            return 0;
        test_sleep_ms(100);
    }
    fprintf(stderr, "%s: %lld records, wanted %lld\n", topic, (long long)n, (long long)want);
    return -1;
}

int test_sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}
