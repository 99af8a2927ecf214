#include "mockbroker.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdlib.h>
#include <string.h>

struct mockbroker {
    rd_kafka_t *rk;                 /* required by the mock for bookkeeping */
    rd_kafka_mock_cluster_t *mc;
};

struct mockbroker *mockbroker_open(int n_brokers, struct err *e)
{
    char es[256];
    struct mockbroker *b = calloc(1, sizeof(*b));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *dbg = getenv("STREAMML_BROKER_DEBUG");

    if (!b) {
        rd_kafka_conf_destroy(conf);
        err_set(e, ERR_NOMEM, "broker: out of memory");
        return NULL;
    }
    rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
    /* Diagnosing the mock's group coordinator (when it answers what):
     * STREAMML_BROKER_DEBUG=mock,protocol logs its decisions on stderr. */
    if (dbg && *dbg &&
        (rd_kafka_conf_set(conf, "log_level", "7", NULL, 0) != RD_KAFKA_CONF_OK ||
         rd_kafka_conf_set(conf, "debug", dbg, es, sizeof(es)) != RD_KAFKA_CONF_OK)) {
        rd_kafka_conf_destroy(conf);
        free(b);
        err_set(e, ERR_CONFIG, "broker: STREAMML_BROKER_DEBUG: %s", es);
        return NULL;
    }
    b->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, es, sizeof(es));
    if (!b->rk) {
        rd_kafka_conf_destroy(conf);
        err_set(e, ERR_IO, "broker: %s", es);
        free(b);
        return NULL;
    }
    b->mc = rd_kafka_mock_cluster_new(b->rk, n_brokers);
    if (!b->mc) {
        err_set(e, ERR_IO, "broker: could not start %d mock broker(s)", n_brokers);
        mockbroker_close(b);
        return NULL;
    }
    return b;
}

void mockbroker_close(struct mockbroker *b)
{
    if (!b)
        return;
    if (b->mc)
        rd_kafka_mock_cluster_destroy(b->mc);
    if (b->rk)
        rd_kafka_destroy(b->rk);
    free(b);
}

const char *mockbroker_bootstraps(const struct mockbroker *b)
{
    return rd_kafka_mock_cluster_bootstraps(b->mc);
}

static int create_one(struct mockbroker *b, char *item, struct err *e)
{
    char *colon = strrchr(item, ':'), *end;
    long parts = 1;
    rd_kafka_resp_err_t err;

    if (colon) {
        *colon = '\0';
        errno = 0;
        parts = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || *end || errno || parts < 1 || parts > 1000)
            return err_set(e, ERR_CONFIG, "broker: topic %s: bad partition count \"%s\"", item,
                           colon + 1);
    }
    if (!*item || strlen(item) > 249)
        return err_set(e, ERR_CONFIG, "broker: bad topic name \"%s\"", item);
    err = rd_kafka_mock_topic_create(b->mc, item, (int)parts, 1);
    if (err)
        return err_set(e, ERR_IO, "broker: create topic %s: %s", item, rd_kafka_err2str(err));
    return ERR_OK;
}

int mockbroker_create_topics(struct mockbroker *b, const char *spec, struct err *e)
{
    char *copy = strdup(spec), *save = NULL;
    int rc = ERR_OK;

    if (!copy)
        return err_set(e, ERR_NOMEM, "broker: out of memory");
    for (char *it = strtok_r(copy, ",", &save); it && !rc; it = strtok_r(NULL, ",", &save))
        rc = create_one(b, it, e);
    free(copy);
    return rc;
}

/* The Kafka API keys a test may want to fail (protocol numbers). */
static const struct {
    const char *name;
    int16_t key;
} apis[] = {{"Produce", 0},       {"Fetch", 1},           {"ListOffsets", 2},
            {"Metadata", 3},      {"OffsetCommit", 8},    {"OffsetFetch", 9},
            {"FindCoordinator", 10}, {"JoinGroup", 11},   {"Heartbeat", 12},
            {"LeaveGroup", 13},   {"SyncGroup", 14},      {"InitProducerId", 22},
            {"AddPartitionsToTxn", 24}, {"AddOffsetsToTxn", 25}, {"EndTxn", 26},
            {"TxnOffsetCommit", 28}};

static int api_key(const char *name, int16_t *key)
{
    for (size_t i = 0; i < sizeof(apis) / sizeof(apis[0]); i++)
        if (strcmp(apis[i].name, name) == 0) {
            *key = apis[i].key;
            return 0;
        }
    return -1;
}

/* A Kafka error by name, from librdkafka's own table. */
static int error_code(const char *name, rd_kafka_resp_err_t *code)
{
    const struct rd_kafka_err_desc *d;
    size_t n;

    rd_kafka_get_err_descs(&d, &n);
    for (size_t i = 0; i < n; i++)
        if (d[i].name && d[i].code > 0 && strcmp(d[i].name, name) == 0) {
            *code = d[i].code;
            return 0;
        }
    return -1;
}

int mockbroker_push_errors(struct mockbroker *b, const char *api, int count, const char *error,
                           struct err *e)
{
    rd_kafka_resp_err_t errs[64], code;
    int16_t key;

    if (api_key(api, &key))
        return err_set(e, ERR_CONFIG, "broker: unknown API \"%s\" (e.g. Produce, Fetch, "
                                      "OffsetCommit)", api);
    if (error_code(error, &code))
        return err_set(e, ERR_CONFIG, "broker: unknown Kafka error \"%s\" (e.g. "
                                      "NOT_LEADER_FOR_PARTITION)", error);
    if (count < 1 || count > 64)
        return err_set(e, ERR_CONFIG, "broker: error count %d not in 1..64", count);
    for (int i = 0; i < count; i++)
        errs[i] = code;
    rd_kafka_mock_push_request_errors_array(b->mc, key, (size_t)count, errs);
    return ERR_OK;
}

int mockbroker_command(struct mockbroker *b, const char *line, struct err *e)
{
    char verb[16], api[32], error[64];
    int id, count, n = 0;

    if (sscanf(line, "%15s %n", verb, &n) != 1)
        return err_set(e, ERR_CONFIG, "broker control: empty command");
    if ((strcmp(verb, "down") == 0 || strcmp(verb, "up") == 0) &&
        sscanf(line + n, "%d", &id) == 1)
        return mockbroker_set_down(b, id, verb[0] == 'd', e);
    if (strcmp(verb, "errors") == 0 &&
        sscanf(line + n, "%31s %d %63s", api, &count, error) == 3)
        return mockbroker_push_errors(b, api, count, error, e);
    return err_set(e, ERR_CONFIG,
                   "broker control: \"%.64s\": expected \"down ID\", \"up ID\" or "
                   "\"errors API COUNT ERROR\"",
                   line);
}

int mockbroker_set_down(struct mockbroker *b, int broker_id, int down, struct err *e)
{
    rd_kafka_resp_err_t err = down ? rd_kafka_mock_broker_set_down(b->mc, broker_id)
                                   : rd_kafka_mock_broker_set_up(b->mc, broker_id);
    if (err)
        return err_set(e, ERR_IO, "broker %d: %s", broker_id, rd_kafka_err2str(err));
    return ERR_OK;
}
