/* common/offline/replay.h: bounded, ordered re-reads of history (prefix rp_).
 *
 * What `streamml replay` and `streamml featurize --topic` run:
 *
 *   - a topic range, per partition, with assign() only (never a consumer
 *     group, never a commit): bounds are timestamps (offsets found with
 *     rd_kafka_offsets_for_times) or offsets, resolved once at open, and
 *     the read stops by itself at each partition's end offset;
 *   - or Avro object container files (codec_file_*);
 *   - a k-way merge of the partitions (files) by event time, ties broken by
 *     (partition or file index, offset or record index), so the output order
 *     is a function of the input alone. Inside a partition nothing is
 *     re-ordered: a user's state advances in arrival (offset) order exactly
 *     as in the live worker, and an out-of-order event follows the one late
 *     policy of feat_state_update (common/streams/txn.h, common/streams/FEATURES.md);
 *   - the worker's step (txn_step, txn_score) per record, with state in any
 *     state backend (memory by default; Redis under a run-specific prefix,
 *     dropped afterwards with rp_redis_drop_prefix).
 *
 * The input also merges image events (RP_IMAGES, rp_input_*_of); their step
 * is the images worker's, common/streams/grader.h, run by `streamml replay --stream
 * images` (no state).
 */
#ifndef STREAMML_REPLAY_H
#define STREAMML_REPLAY_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "click_event.h"
#include "codec.h"
#include "err.h"
#include "event.h"
#include "features.h"
#include "image_event.h"
#include "state.h"
#include "txn.h"

/* One end of a range. */
enum rp_bound_kind { RP_EDGE = 0, RP_TIME, RP_OFFSET };
struct rp_bound {
    enum rp_bound_kind kind; /* RP_EDGE: the partition's start (from) or end (to) */
    int64_t v;               /* ms since the epoch, or an offset */
};

/* "2024-03-01T12:00:00Z", "2024-03-01T12:00:00.250+02:00", "2024-03-01"
 * (UTC midnight), "1709294400000" (ms) or "offset:N". ERR_CONFIG naming s. */
int rp_parse_bound(const char *s, struct rp_bound *b, struct err *e);

/* A partition's resolved range: offsets [start, end). */
struct rp_part {
    int32_t partition;
    int64_t low, high; /* watermarks when resolved */
    int64_t start, end;
};

struct rp_topic;

/* Resolves the range of every partition of topic (or of the nparts listed
 * in only), then assigns them at their start offsets. props: librdkafka
 * passthrough (cfg_kafka). dry_run: resolve only, assign nothing. NULL with
 * the culprit in *e (unknown topic or partition, broker unreachable). */
struct rp_topic *rp_topic_open(const struct cfg_kv *props, size_t nprops, const char *topic,
                               const struct rp_bound *from, const struct rp_bound *to,
                               const int32_t *only, size_t nonly, int dry_run, struct err *e);
void rp_topic_close(struct rp_topic *t); /* NULL-safe */
size_t rp_topic_parts(const struct rp_topic *t, const struct rp_part **parts);
/* Events in the range (sum of end - start). */
int64_t rp_topic_total(const struct rp_topic *t);

/* What the input's records are: transaction events (decoded and
 * validated into ev), click events (decoded into click) or image events
 * (decoded into img). */
enum rp_stream { RP_TRANSACTIONS = 0, RP_CLICKSTREAM, RP_IMAGES };

/* A record of the merged input. rc != ERR_OK: it did not decode or
 * validate (why in err); ev is then all-missing but for what decoded. */
struct rp_rec {
    struct txn_event ev;
    struct click_event click; /* RP_CLICKSTREAM */
    struct image_event img;   /* RP_IMAGES (all zero when it did not decode) */
    int rc;
    struct err err;
    const char *source; /* topic name or file path */
    int32_t partition;  /* topic partition, or file index */
    int64_t offset;     /* topic offset, or record index in the file */
    int64_t timestamp_ms;
};

struct rp_input;

/* The merged records of a topic range (t is owned by the input from now
 * on) or of container files. */
struct rp_input *rp_input_topic(struct codec *cd, struct rp_topic *t, struct err *e);
struct rp_input *rp_input_files(struct codec *cd, const char *const *paths, size_t n,
                                struct err *e);
/* The same for any stream (the two above are RP_TRANSACTIONS); files of
 * click events are written with schemas/click_event.avsc, of image events
 * with schemas/image_event.avsc. Every stream merges by its event time. */
struct rp_input *rp_input_topic_of(struct codec *cd, struct rp_topic *t, enum rp_stream s,
                                   struct err *e);
struct rp_input *rp_input_files_of(struct codec *cd, const char *const *paths, size_t n,
                                   enum rp_stream s, struct err *e);
/* Next record in (event time, partition/file, offset) order: 1 with *out
 * valid until the next call, 0 at the end of every partition (file), or an
 * error (a broker or file failure: the run cannot be complete). Records
 * that do not decode have no event time: they come out as soon as they are
 * at the head of their partition. */
int rp_input_next(struct rp_input *in, const struct rp_rec **out, struct err *e);
void rp_input_close(struct rp_input *in); /* NULL-safe */
/* Files: the share of their bytes read so far (0..1), or -1 when unknown
 * (a topic: count events against rp_topic_total instead; stdin). */
double rp_input_fraction(const struct rp_input *in);

struct rp_engine;

/* st: the state backend (borrowed), or NULL for engine-owned in-memory
 * state (kept decoded: no encode/decode per event, about 1.7 KB per user);
 * sc: models (borrowed), or NULL for features only. */
struct rp_engine *rp_engine_open(struct state *st, struct txn_scorer *sc, struct err *e);
void rp_engine_close(struct rp_engine *g); /* NULL-safe */
/* The worker's step for one valid record: the user's state read, x built
 * and the state advanced (txn_step, position = the record's partition and
 * offset), written back; then, with models, p scored (txn_prediction_init
 * + txn_score). Returns 1 applied, 0 already in the state (a duplicate),
 * or an error (state backend). */
int rp_engine_step(struct rp_engine *g, const struct rp_rec *r, float *x, struct txn_prediction *p,
                   struct err *e);

/* Deletes every Redis key under prefix (SCAN + UNLINK); the count in
 * *deleted. For Redis-backed runs under a run-specific prefix. */
int rp_redis_drop_prefix(const struct state_redis_opts *o, long *deleted, struct err *e);

#endif
