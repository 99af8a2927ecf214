/* tests/support/txn_group.h: a consumer group of transactions workers on the
 * embedded stack, for the fault tests (test_reliability, test_backpressure).
 *
 * TG_EVENTS deterministic events over TG_USERS users (every tenth without an
 * amount), a 6-partition topic, real redis-server and `streamml broker`;
 * workers of group "rel" with short group timeouts; predictions tallied per
 * event id; each user's Welford count in Redis checked against its events.
 * Uses cmocka's assertions: include it after <cmocka.h>.
 */
#ifndef STREAMML_TEST_TXN_GROUP_H
#define STREAMML_TEST_TXN_GROUP_H

#include <stddef.h>
#include <sys/types.h>

#include "rcluster.h"
#include "stack.h"

#define TG_EVENTS 20000
#define TG_USERS 1000
#define TG_TOPICS "transactions:6,predictions.transactions:6,transactions.dlq:2"

struct tg_env {
    struct test_redis redis;
    struct test_broker broker;
    char dir[128];
    char events[200];
    char redis_port[32 + sizeof(((struct test_rcluster *)0)->nodes)];
    struct test_rcluster *cluster; /* tg_setup_cluster: state on Redis Cluster */
    int want_amounts[TG_USERS]; /* per user: events with an amount */
    int n_events;               /* TG_EVENTS, or tg_setup_n's */
};

struct tg_tally {
    long records, missing, duplicates, worst; /* worst: most copies of one event */
};

/* cmocka group setup/teardown: the stack, the events file. */
int tg_setup(void **st);
int tg_teardown(void **st);
/* The same with n_events events (ids e000000..; at most 1,000,000) and the
 * given topics ("name:partitions,..."; the soak test needs more partitions
 * than TG_TOPICS: the mock cluster keeps about 5 MB per partition). */
int tg_setup_n(void **st, int n_events, const char *topics);
/* `streamml produce` of the events (rate: events/s, NULL = as fast as it can). */
/* The same stack with a Redis Cluster (3 masters, 3 replicas) for state:
 * workers get redis.nodes. */
int tg_setup_cluster(void **st);
pid_t tg_produce(struct tg_env *v, const char *rate);
void tg_log_path(const struct tg_env *v, const char *name, char *buf, size_t cap);
/* A worker of group "rel" (batch = worker.batch_size), logging to <dir>/<name>.log. */
pid_t tg_start_worker(struct tg_env *v, const char *name, const char *batch);
/* The same with extra -X key=value settings after the defaults (NULL-terminated,
 * at most 8; a later -X wins, e.g. "session.timeout.ms=1500"). */
pid_t tg_start_worker_x(struct tg_env *v, const char *name, const char *batch,
                        const char *const *extra);
/* Waits until the file holds needle count times: 0, or -1 at timeout_ms. */
int tg_wait_log(const char *path, const char *needle, int count, int timeout_ms);
/* Reads every prediction and counts copies per event id. */
struct tg_tally tg_read_predictions(struct tg_env *v);
/* Re-reads until no event is missing, or timeout_ms. */
struct tg_tally tg_wait_all_predicted(struct tg_env *v, int timeout_ms);
/* Users whose stored Welford count differs from their events with an amount. */
long tg_users_wrong(struct tg_env *v);

#endif
