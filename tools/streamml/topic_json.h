/* tools/streamml/topic_json.h: every record of a topic, from the beginning to
 * its end (assigned, no group, nothing committed), decoded with its writer
 * schema (schemas/ids or the Schema Registry) into JSON (prefix tj_): what
 * the commands that read a whole topic (abtest's predictions and outcome
 * records) share. */
#ifndef STREAMML_TOPIC_JSON_H
#define STREAMML_TOPIC_JSON_H

#include <jansson.h>

#include "cfg.h"
#include "err.h"

/* One record; where is "topic [partition] @ offset". Non-zero stops. */
typedef int (*tj_each_fn)(void *opaque, json_t *rec, const char *where, struct err *e);

/* ERR_OK once the end of every partition is read; else the first error,
 * an undecodable record named by where. */
int tj_read_topic(const char *topic, const struct cfg *cf, const char *client_id,
                  tj_each_fn each, void *opaque, struct err *e);

#endif
