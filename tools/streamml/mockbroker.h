/* tools/streamml/mockbroker.h: the embedded Kafka broker (prefix mockbroker_).
 *
 * Wraps librdkafka's mock cluster (rdkafka_mock.h): real Kafka protocol on
 * loopback ports, consumer groups included, so workers talk to it exactly as
 * to a real cluster. Limits of librdkafka 2.0.2's mock: about 5 MB kept per
 * partition (older messages are dropped), no transaction markers. Fault
 * injection for the reliability tests lives here too.
 */
#ifndef STREAMML_MOCKBROKER_H
#define STREAMML_MOCKBROKER_H

#include "err.h"

struct mockbroker;

/* Starts n_brokers brokers on ephemeral loopback ports. */
struct mockbroker *mockbroker_open(int n_brokers, struct err *e);
void mockbroker_close(struct mockbroker *b); /* NULL-safe */

/* "host:port,host:port" to give clients as bootstrap.servers. */
const char *mockbroker_bootstraps(const struct mockbroker *b);

/* Creates topics from "name:partitions[,name:partitions...]". ERR_CONFIG
 * naming the bad item. */
int mockbroker_create_topics(struct mockbroker *b, const char *spec, struct err *e);

/* Fault injection: take broker id (1..n) down or up. */
int mockbroker_set_down(struct mockbroker *b, int broker_id, int down, struct err *e);

/* Fault injection: the next count requests of api (a Kafka API name:
 * "Produce", "Fetch", "OffsetCommit", "JoinGroup", "InitProducerId", ...)
 * from any client fail with error (a Kafka error name such as
 * "NOT_LEADER_FOR_PARTITION", without the RD_KAFKA_RESP_ERR_ prefix).
 * ERR_CONFIG naming an unknown API or error. */
int mockbroker_push_errors(struct mockbroker *b, const char *api, int count, const char *error,
                           struct err *e);

/* One control command, as `streamml broker --control FIFO` reads them:
 * "down ID", "up ID", "errors API COUNT ERROR". ERR_CONFIG naming what is
 * wrong with the line. */
int mockbroker_command(struct mockbroker *b, const char *line, struct err *e);

#endif
