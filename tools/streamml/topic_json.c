#include "topic_json.h"

#include <stdio.h>

#include "codec.h"
#include "kafka.h"
#include "pipeline.h"
#include "registry.h"

#define RECORD_MAX_JSON (1024 * 1024)

int tj_read_topic(const char *topic, const struct cfg *cf, const char *client_id,
                  tj_each_fn each, void *opaque, struct err *e)
{
    struct kq_opts ko = {.topics = &topic, .n_topics = 1, .assign_all = 1, .from_beginning = 1,
                         .client_id = client_id};
    struct codec *cd = NULL;
    struct reg *reg = NULL;
    struct kq *q = NULL;
    struct buf json;
    char where[300];
    size_t np;
    int rc = ERR_OK;

    ko.props = cfg_kafka(cf, &np);
    ko.n_props = np;
    buf_init(&json, RECORD_MAX_JSON);
    if (!(cd = pipe_codec_open(cf, &reg, NULL, NULL, 0, e)) || !(q = kq_open(&ko, e)))
        rc = e->code;
    while (rc == ERR_OK && !kq_at_end(q)) {
        struct kq_msg *m;
        json_t *j;
        if ((rc = kq_poll(q, 200, &m, e)) || !m)
            continue;
        snprintf(where, sizeof(where), "%s [%d] @ %lld", m->topic, (int)m->partition,
                 (long long)m->offset);
        if (codec_to_json(cd, m->payload, m->len, &json, e))
            rc = err_wrap(e, "%s", where);
        else if (!(j = json_loads((const char *)json.data, 0, NULL)))
            rc = err_set(e, ERR_DECODE, "%s: not a JSON record", where);
        else {
            rc = each(opaque, j, where, e);
            json_decref(j);
        }
        kq_msg_release(m);
    }
    kq_close(q, 0, NULL);
    codec_close(cd);
    reg_close(reg);
    buf_free(&json);
    return rc;
}
