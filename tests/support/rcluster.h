/* tests/support/rcluster.h: a real Redis Cluster for tests: 3 masters with
 * one replica each (redis-server --cluster-enabled yes on kernel-chosen
 * loopback ports, bus ports too; redis-cli --cluster create
 * --cluster-replicas 1 --cluster-yes), node timeout 1 s so that a killed
 * master's replica is promoted within seconds. */
#ifndef STREAMML_TEST_RCLUSTER_H
#define STREAMML_TEST_RCLUSTER_H

#include "stack.h"

#define RCLUSTER_NODES 6

struct test_rcluster {
    struct test_redis node[RCLUSTER_NODES];
    char nodes[RCLUSTER_NODES * 24]; /* "127.0.0.1:p,..." (redis.nodes) */
};

/* Starts and joins the six servers; waits until every node says
 * cluster_state:ok. 0 or -1 (with a message on stderr). */
int test_rcluster_start(struct test_rcluster *c);
void test_rcluster_stop(struct test_rcluster *c);
/* `redis-cli -p port ARGS`: the first line of its output in out. */
void test_rcluster_cli(int port, const char *args, char *out, size_t cap);
/* The port of slot's master as a node sees it, 0 if unknown. */
int test_rcluster_master_of(const struct test_rcluster *c, unsigned slot);
/* Index of the node on port, -1 if none. */
int test_rcluster_index(const struct test_rcluster *c, int port);
/* Waits until every live node reports cluster_state:ok and slot's master
 * is live (after a kill: the replica promoted). 0, or -1 at timeout_ms. */
int test_rcluster_wait_ok(const struct test_rcluster *c, int timeout_ms);
/* Moves slot from its master to the master on to_port, key by key
 * (CLUSTER SETSLOT IMPORTING/MIGRATING, MIGRATE in batches of `batch` keys,
 * pause_ms between batches, then SETSLOT NODE on both): clients meanwhile
 * see ASK and TRYAGAIN. 0 or -1. */
int test_rcluster_move_slot(const struct test_rcluster *c, unsigned slot, int to_port, int batch,
                            int pause_ms);

#endif
