/* common/streams/pipeline.h: the pieces every worker's loop shares (prefix pipe_).
 *
 * Dead-lettering (the original bytes with the reason, never lost), Redis
 * calls under a retry budget with back-off, and a per-batch set of entities
 * so each is read and written once per batch (pipelined).
 */
#ifndef STREAMML_PIPELINE_H
#define STREAMML_PIPELINE_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "err.h"
#include "cfg.h"
#include "kafka.h"
#include "state.h"

/* Monotonic clock, microseconds. */
int64_t pipe_now_us(void);
/* Wall clock, milliseconds since the epoch. */
int64_t pipe_wall_ms(void);

/* Sends m to dlq_topic as a dead-letter record carrying why (e) and m's
 * bytes, topic, partition and offset; acknowledges m's state part (there is
 * none) so its offset is stored once the record is delivered.
 * A record must fit librdkafka's (and the broker's) default message.max.bytes
 * (1,000,000), or it could never be produced and the partition would stall:
 * a value over PIPE_DLQ_PAYLOAD_MAX keeps its first PIPE_DLQ_PAYLOAD_MAX
 * bytes, a key over PIPE_DLQ_KEY_MAX its first PIPE_DLQ_KEY_MAX, and the
 * record says the original sizes (the original stays at its offset). */
#define PIPE_DLQ_PAYLOAD_MAX (900 * 1000)
#define PIPE_DLQ_KEY_MAX (16 * 1024)
int pipe_dead_letter(struct kq *q, struct codec *cd, struct buf *scratch, const char *dlq_topic,
                     const char *worker, const struct kq_msg *m, const struct err *why,
                     struct err *e);

/* A state call retried with exponential back-off (10 ms doubling, capped at
 * 500 ms) while it returns ERR_RETRY and budget_ms is not spent. */
int pipe_state_get(struct state *s, int budget_ms, size_t n, const char *const *ents,
                   struct state_blob *out, struct err *e);
int pipe_state_put(struct state *s, int budget_ms, size_t n, const struct state_put *puts,
                   int *applied, struct err *e);

/* The codec a worker or tool uses: schemas from schemas.dir and, when
 * schema.registry.url is set, a registry client in *reg (close it after the
 * codec) through which message ids are resolved; each outs[i] is then
 * registered (schema.registry.auto_register=1) or looked up under
 * "<topics[i]>-value". NULL with the reason in *e. Without a registry *reg
 * is NULL and the ids are those of schemas/ids. */
struct reg;
struct codec *pipe_codec_open(const struct cfg *cf, struct reg **reg,
                              const enum codec_schema *outs, const char *const *topics, size_t n,
                              struct err *e);

/* Distinct entity ids of one batch, in first-seen order. Fixed capacity. */
struct entset {
    const char **ids;     /* borrowed from the caller's events */
    int *slots;           /* open addressing: index into ids, -1 empty */
    size_t n, cap, nslots;
};
int pipe_entset_init(struct entset *s, size_t cap);
void pipe_entset_free(struct entset *s);
void pipe_entset_clear(struct entset *s);
/* Index of id in the set, adding it if new; -1 when full. */
int pipe_entset_add(struct entset *s, const char *id);

/* The partitions of a batch of records for a script that is idempotent per
 * (partition, offset) and fenced per partition (covis.c's counts,
 * clickout.c's outcome join). Record i of recs (ref: where its int32_t
 * partition, int64_t offset and int64_t epoch lie) gets pidx[i], 1 + its
 * partition's slot in part[] (0: offset < 0, not deduplicated); a
 * partition's first record gives its epoch (part_epoch[]). Stops before
 * the record that would make max + 1 partitions; *np: the partitions.
 * Returns the records mapped (>= 1 when n >= 1 and max >= 1). */
struct pipe_part_ref {
    size_t stride, partition, offset, epoch;
};
#define PIPE_PART_REF(T)                                                                       \
    ((struct pipe_part_ref){sizeof(T), offsetof(T, partition), offsetof(T, offset),            \
                            offsetof(T, epoch)})
size_t pipe_index_partitions(const void *recs, size_t n, struct pipe_part_ref ref, size_t max,
                             int32_t *part, int64_t *part_epoch, int *pidx, size_t *np);

#endif
