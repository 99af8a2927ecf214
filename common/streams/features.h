/* common/streams/features.h: the shared feature module (prefix feat_).
 *
 * The one place where features are computed: the online worker, `streamml
 * featurize` (training data) and replays all call these functions, so train
 * and serve cannot disagree. Everything here is pure: no I/O, no clock, no
 * globals. (event, the user's prior state) -> (feature vector, next state).
 */
#ifndef STREAMML_FEATURES_H
#define STREAMML_FEATURES_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "event.h"
#include "fspec.h"

/* The feature set is data: models/txn-v1.yaml (built into the binary) or
 * the spec named by features.spec (feat_txn_use), compiled once by
 * common/streams/fspec.h. These entry points evaluate that plan on a struct
 * txn_event; vectors are bit-identical to the hard-coded txn-v1 module they
 * replace (tests/test_spec_parity.c). */
#define FEAT_TXN_VERSION "txn-v1" /* the built-in spec's name */
#define FEAT_TXN_DIM 37           /* vector width of the built-in txn-v1 */

/* Per-entity state: its layout is the active spec's (fspec.h). */
#define feat_state fspec_state

/* Upper bound of an encoded state, for caller-owned buffers. */
#define FEAT_STATE_MAX FSPEC_STATE_MAX

/* Idempotence (issue 23 case 5), kept in the state itself so that the
 * decision and the update are one atomic write: the highest offset applied
 * per input partition (FSPEC_PARTS_MAX, the least recently used one
 * replaced) and the event ids applied within the dedup horizon (default the
 * longest window, 30 d; at most FSPEC_IDS_MAX, oldest dropped first) as
 * 64-bit FNV-1a hashes with their event times: the fields n_parts, parts,
 * n_ids and ids of struct fspec_state, encoded after the aggregates. */
#define FEAT_PARTS_MAX FSPEC_PARTS_MAX
#define FEAT_IDS_MAX FSPEC_IDS_MAX
#define FEAT_DEDUP_HORIZON_MS 2592000000LL
#define feat_pos fspec_pos
#define feat_seen fspec_seen

/* 1 when the state already holds the event: its partition's applied offset
 * is >= offset, or its event id was applied within the dedup horizon. */
int feat_state_seen(const struct feat_state *s, int32_t partition, int64_t offset,
                    const struct txn_event *ev);
/* Records the event as applied (after feat_state_update). */
void feat_state_mark(struct feat_state *s, int32_t partition, int64_t offset,
                     const struct txn_event *ev);
/* The dedup horizon, process-wide (cli_apply sets state.dedup_horizon_ms). */
void feat_set_dedup_horizon_ms(int64_t ms);

/* Loads the spec at path, binds it to struct txn_event and makes it the
 * plan every feat_ and txn_ function below uses (process-wide: call it at
 * start-up, before threads). NULL or "" selects the built-in txn-v1.
 * A spec whose input record is TransactionEvent reads struct txn_event;
 * one on any other record reads the row each event carries in ev->rec
 * (common/streams/txn_input.h decodes it). Any output width.
 * ERR_CONFIG naming file:line, or a field missing from TransactionEvent. */
int feat_txn_use(const char *path, struct err *e);
/* The same with the config's Schema Registry (schema.registry.*) for a
 * spec naming input.subject: resolved here, at load (fspec_open_reg), and
 * logged with its schema id. path: features.spec, or featurize's --spec. */
struct cfg;
int feat_txn_use_cfg(const struct cfg *cf, const char *path, struct err *e);
/* From on = 1 (txi_open: a worker serves the plan), feat_txn_use keeps the
 * active plan: the same spec again (a reload) is ERR_OK; another or a
 * changed one is ERR_CONFIG naming it and what a restart does to stored
 * state (read as before, or refused when its state layout changed), and
 * the plan compiled to compare is freed. on = 0: tests. */
void feat_txn_freeze(int on);
/* 1 when the active spec reads its own record (events carry ev->rec). */
int feat_txn_reads_rec(void);
/* A copy of an event's row (ev->rec) that outlives its batch, freed with
 * free(); NULL when out of memory. */
void *feat_rec_dup(const void *rec);
/* The active spec's vector width (FEAT_TXN_DIM for txn-v1). */
size_t feat_txn_dim(void);
/* The active plan (the built-in one is compiled on first use). */
const struct fspec *feat_txn_spec(void);
/* Its name and version, e.g. "txn-v1", for predictions and baselines. */
const char *feat_txn_version(void);

/* Names of the feat_txn_dim() features, in vector order (static storage). */
const char *const *feat_txn_names(void);
/* Index of a feature by name, or -1. */
int feat_txn_index(const char *name);

/* Checks an event before anything is computed: required ids present, event
 * time plausible, no NaN/Inf where a value was given, no negative amounts or
 * counts, no absurd magnitudes. ERR_INVALID with the field named in e. */
int feat_txn_validate(const struct txn_event *ev, struct err *e);

void feat_state_init(struct feat_state *s);
/* Computes the vector x[feat_txn_dim()] for ev given the user's prior state
 * (the state before ev). Missing inputs give NaN. Pure (given the plan). */
void feat_txn_build(const struct txn_event *ev, const struct feat_state *prior, float *x);
/* next = prior with ev applied (prior and next may alias). Late events
 * (older than the last one) go to their bucket if it is still in the ring
 * (the late-event policy, common/streams/FEATURES.md). */
void feat_state_update(const struct feat_state *prior, const struct txn_event *ev,
                       struct feat_state *next);

/* fspec_state_encode with the active plan: versioned, carries the plan's
 * state-layout hash; bytes written or ERR_NOMEM if cap is too small. */
int feat_state_encode(const struct feat_state *s, unsigned char *buf, size_t cap);
/* ERR_DECODE (with the reason) on a wrong version, length or layout hash
 * (a state written under other aggregates is refused, never misread). */
int feat_state_decode(struct feat_state *s, const unsigned char *buf, size_t len, struct err *e);

/* Values the state holds for the z-scores of field (0 if none): for tests. */
uint64_t feat_state_count(const struct feat_state *s, const char *field);

/* 64-bit FNV-1a over the vector's bytes (every NaN and -0 canonicalised), for the
 * prediction's feature_hash: equal vectors give equal hashes. */
uint64_t feat_hash(const float *x, size_t n);
/* h[i] = feat_hash(row i, dim) for n rows of dim floats (row i at x + i * dim),
 * several rows at a time: the batch path's hashes. */
void feat_hash_rows(const float *x, size_t n, size_t dim, uint64_t *h);

#endif
