#include "pipeline.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "registry.h"

int64_t pipe_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t pipe_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int pipe_dead_letter(struct kq *q, struct codec *cd, struct buf *scratch, const char *dlq_topic,
                     const char *worker, const struct kq_msg *m, const struct err *why,
                     struct err *e)
{
    struct dlq_record r = {
        .reason = why->msg, .error_code = err_name(why->code), .worker = worker,
        .src_topic = m->topic, .src_partition = m->partition, .src_offset = m->offset,
        .src_timestamp_ms = m->timestamp_ms, .key = m->key, .key_len = m->key_len,
        .payload = m->payload, .payload_len = m->len, .failed_at_ms = pipe_wall_ms(),
        .payload_size = m->len, .key_size = m->key_len};

    if (r.payload_len > PIPE_DLQ_PAYLOAD_MAX)
        r.payload_len = PIPE_DLQ_PAYLOAD_MAX;
    if (r.key_len > PIPE_DLQ_KEY_MAX)
        r.key_len = PIPE_DLQ_KEY_MAX;
    log_warn("dead letter %s [%d] @ %lld: %s%s", m->topic, (int)m->partition,
             (long long)m->offset, why->msg,
             r.payload_len < m->len || r.key_len < m->key_len ? " (bytes truncated)" : "");
    buf_reset(scratch);
    if (codec_encode_dlq(cd, &r, scratch, e))
        return e->code;
    if (kq_produce(q, dlq_topic, r.key, r.key_len, scratch->data, scratch->len, &m->pos, e))
        return e->code;
    kq_ack(q, &m->pos, KQ_ACK_STATE);
    return ERR_OK;
}

static void backoff(int *delay_ms)
{
    struct timespec ts = {*delay_ms / 1000, (long)(*delay_ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
    *delay_ms = *delay_ms * 2 > 500 ? 500 : *delay_ms * 2;
}

int pipe_state_get(struct state *s, int budget_ms, size_t n, const char *const *ents,
                   struct state_blob *out, struct err *e)
{
    int64_t deadline = pipe_now_us() + (int64_t)budget_ms * 1000;
    int delay = 10, rc;

    while ((rc = state_get_many(s, n, ents, out, e)) == ERR_RETRY &&
           pipe_now_us() + delay * 1000 < deadline)
        backoff(&delay);
    return rc;
}

int pipe_state_put(struct state *s, int budget_ms, size_t n, const struct state_put *puts,
                   int *applied, struct err *e)
{
    int64_t deadline = pipe_now_us() + (int64_t)budget_ms * 1000;
    int delay = 10, rc;

    while ((rc = state_put_many(s, n, puts, applied, e)) == ERR_RETRY &&
           pipe_now_us() + delay * 1000 < deadline)
        backoff(&delay);
    return rc;
}

int pipe_entset_init(struct entset *s, size_t cap)
{
    memset(s, 0, sizeof(*s));
    s->cap = cap;
    s->nslots = 16;
    while (s->nslots < cap * 2)
        s->nslots *= 2;
    s->ids = calloc(cap, sizeof(*s->ids));
    s->slots = malloc(s->nslots * sizeof(*s->slots));
    if (!s->ids || !s->slots) {
        pipe_entset_free(s);
        return ERR_NOMEM;
    }
    pipe_entset_clear(s);
    return ERR_OK;
}

void pipe_entset_free(struct entset *s)
{
    free(s->ids);
    free(s->slots);
    memset(s, 0, sizeof(*s));
}

void pipe_entset_clear(struct entset *s)
{
    memset(s->slots, 0xff, s->nslots * sizeof(*s->slots));
    s->n = 0;
}

static uint64_t hash_str(const char *p)
{
    uint64_t h = 1469598103934665603ULL;

    for (; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return h;
}

int pipe_entset_add(struct entset *s, const char *id)
{
    size_t mask = s->nslots - 1, i = hash_str(id) & mask;

    for (; s->slots[i] >= 0; i = (i + 1) & mask)
        if (strcmp(s->ids[s->slots[i]], id) == 0)
            return s->slots[i];
    if (s->n == s->cap)
        return -1;
    s->ids[s->n] = id;
    s->slots[i] = (int)s->n;
    return (int)s->n++;
}

/* ---- partitions of a batch ---- */

size_t pipe_index_partitions(const void *recs, size_t n, struct pipe_part_ref ref, size_t max,
                             int32_t *part, int64_t *part_epoch, int *pidx, size_t *np)
{
    size_t i;

    *np = 0;
    for (i = 0; i < n; i++) {
        const char *r = (const char *)recs + i * ref.stride;
        int32_t partition;
        int64_t offset, epoch;
        size_t j = 0;
        memcpy(&partition, r + ref.partition, sizeof(partition));
        memcpy(&offset, r + ref.offset, sizeof(offset));
        memcpy(&epoch, r + ref.epoch, sizeof(epoch));
        pidx[i] = 0;
        if (offset < 0)
            continue;
        while (j < *np && part[j] != partition)
            j++;
        if (j == *np) {
            if (*np == max)
                break;
            part[j] = partition;
            part_epoch[j] = epoch;
            (*np)++;
        }
        pidx[i] = (int)j + 1;
    }
    return i;
}

/* ---- codec and Schema Registry ---- */

struct codec *pipe_codec_open(const struct cfg *cf, struct reg **reg,
                              const enum codec_schema *outs, const char *const *topics, size_t n,
                              struct err *e)
{
    struct codec *cd = codec_open(cfg_str(cf, "schemas.dir"), e);
    int reg_new = (int)cfg_int(cf, "schema.registry.auto_register");

    *reg = NULL;
    if (!cd)
        return NULL;
    *reg = reg_open_cfg(cf, e);
    if (!*reg && e->code)
        goto out_close;
    if (!*reg)
        return cd;
    codec_use_registry(cd, *reg);
    for (size_t i = 0; i < n; i++)
        if (codec_register(cd, outs[i], topics[i], reg_new, e))
            goto out_close;
    log_info("schema registry %s: message ids resolved through it", cfg_str(cf, "schema.registry.url"));
    return cd;
out_close:
    codec_close(cd);
    reg_close(*reg);
    *reg = NULL;
    return NULL;
}
