/* tests/support/stack.h: the embedded stack for integration tests.
 *
 * Starts real processes on free loopback ports in a temporary directory:
 * redis-server, and `streamml broker` (librdkafka's mock cluster). Each
 * *_start returns 0 or -1 (with a message on stderr); *_stop kills and reaps
 * the process and removes its directory. No mocks of Redis or Kafka.
 */
#ifndef STREAMML_TEST_STACK_H
#define STREAMML_TEST_STACK_H

#include <stdint.h>
#include <sys/types.h>

struct test_redis {
    pid_t pid;
    int port;
    char dir[256];
};

struct test_broker {
    pid_t pid;
    char bootstrap[256];
    char dir[256];
};

/* Starts redis-server (no persistence) and waits until it answers PING. */
int test_redis_start(struct test_redis *r);
/* The same, on port (0 = a free one; a given port lets a test restart a
 * server where its clients expect it), with extra redis-server arguments
 * (NULL-terminated, NULL = none; e.g. {"--requirepass", "pw", NULL}). A
 * server that answers NOAUTH counts as up. */
int test_redis_start_opts(struct test_redis *r, int port, const char *const *extra);
void test_redis_stop(struct test_redis *r);

/* Starts `$STREAMML_BUILD/streamml broker --topics <topics>` and waits for its
 * bootstrap address. topics: "name:partitions,name:partitions". */
int test_broker_start(struct test_broker *b, const char *topics);
void test_broker_stop(struct test_broker *b);

/* Path of a built binary ("streamml", "streamml-transactions") under
 * $STREAMML_BUILD (default "build"); static buffer. */
const char *test_bin(const char *name);
/* A free TCP port on 127.0.0.1 (bind to port 0, read it back, close). */
int test_free_port(void);
/* Sleeps ms milliseconds. */
void test_sleep_ms(int ms);
/* Spawns argv (output appended to log, NULL = inherit) and waits for it:
 * its exit code, 128 + signal when killed, -1 when it could not run. */
int test_run_wait(char *const argv[], const char *log);
/* A shell command from a printf format (at most 4 KiB): system()'s status. */
int test_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Sum of the end offsets of topic's partitions on the broker at bootstrap;
 * -1 (with a message on stderr) when the broker cannot be asked. */
int64_t test_topic_size(const char *bootstrap, const char *topic);
/* Polls test_topic_size every 100 ms until it reaches want: 0, or -1 at
 * timeout_ms (the count reached is printed on stderr). */
int test_wait_topic(const char *bootstrap, const char *topic, int64_t want, int timeout_ms);
/* Spawns argv with stdout/stderr appended to log_path (NULL = inherit); the
 * child is killed if the test process dies first (PR_SET_PDEATHSIG). */
pid_t test_spawn(char *const argv[], const char *log_path);
/* Sends sig and waits up to timeout_ms; SIGKILL after that. Returns exit
 * status as from waitpid, or -1. */
int test_stop_pid(pid_t pid, int sig, int timeout_ms);

#endif
