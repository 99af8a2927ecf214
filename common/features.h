/* common/features.h: the shared feature module (prefix feat_).
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

#define FEAT_TXN_VERSION "txn-v1"
#define FEAT_TXN_DIM 37

/* Categorical codes (home_code, marital_code, job_code): the categories of
 * event.h numbered from 1 in their listed order (home: rent 1, owner 2,
 * parents 3, priv 4, ignore 5, other 6; marital: single 1, married 2,
 * widow 3, separated 4, divorced 5; job: fixed 1, freelance 2, partime 3,
 * others 4), compared case-insensitively. A value outside the list gets
 * FEAT_CAT_UNKNOWN; an empty (missing) one gives NaN. */
#define FEAT_CAT_UNKNOWN 0

/* Windowed aggregates are bucketed in event time: 1 h = 12 x 5 min,
 * 24 h = 24 x 1 h, 30 d = 30 x 1 d (bucket-aligned windows, UTC days). A
 * window holds the event's own bucket and the N-1 before it, and always
 * includes the event itself (count >= 1).
 *
 * Late events (event time < last_event_ms), per ring: the event is added to
 * its bucket when that bucket is still inside the ring's span, i.e. newer
 * than (bucket of last_event_ms) - N; older ones are left out of that ring's
 * windows (they still count in the amount moments). Its own features are
 * computed from the buckets at or before its time, so a late event never
 * sees events from its future. secs_since_prev is clamped at 0 for it, and
 * last_event_ms never moves back. See common/FEATURES.md. */
#define FEAT_W1H_BUCKETS 12
#define FEAT_W24H_BUCKETS 24
#define FEAT_W30D_BUCKETS 30

struct feat_bucket {
    int64_t id; /* floor(event_time_ms / bucket width); 0 = empty slot */
    uint32_t count;
    double sum; /* sum of amounts (missing amounts count, add 0) */
};

/* Idempotence (issue 23 case 5), kept in the state itself so that the
 * decision and the update are one atomic write: the highest offset applied
 * per input partition the user's events came from (FEAT_PARTS_MAX, the
 * least recently used one replaced), and the event ids applied within the
 * dedup horizon (default the longest window, 30 d; at most FEAT_IDS_MAX,
 * oldest dropped first) as 64-bit FNV-1a hashes with their event times.
 * Cost: at most 1 + 12 x 8 + 1 + 16 x 32 = 610 bytes more per user blob
 * (a user with k recent events: 14 + 16 k bytes). */
#define FEAT_PARTS_MAX 8
#define FEAT_IDS_MAX 32
#define FEAT_DEDUP_HORIZON_MS 2592000000LL

struct feat_pos {
    int32_t partition;
    int64_t offset;
};

struct feat_seen {
    uint64_t id_hash;
    int64_t time_ms;
};

/* Per-user streaming state. Plain data; serialised with feat_state_encode. */
struct feat_state {
    int64_t last_event_ms; /* 0 = no previous event */
    uint64_t n_amounts;    /* Welford moments of past amounts */
    double mean_amount;
    double m2_amount;
    struct feat_bucket w1h[FEAT_W1H_BUCKETS];
    struct feat_bucket w24h[FEAT_W24H_BUCKETS];
    struct feat_bucket w30d[FEAT_W30D_BUCKETS];
    int n_parts;                        /* least recently applied first */
    struct feat_pos parts[FEAT_PARTS_MAX];
    int n_ids;                          /* oldest first */
    struct feat_seen ids[FEAT_IDS_MAX];
};

/* Upper bound of an encoded state, for caller-owned buffers. */
#define FEAT_STATE_MAX 2048

/* 1 when the state already holds the event: its partition's applied offset
 * is >= offset, or its event id was applied within the dedup horizon. */
int feat_state_seen(const struct feat_state *s, int32_t partition, int64_t offset,
                    const struct txn_event *ev);
/* Records the event as applied (after feat_state_update). */
void feat_state_mark(struct feat_state *s, int32_t partition, int64_t offset,
                     const struct txn_event *ev);
/* The dedup horizon, process-wide (cfg_finish sets state.dedup_horizon_ms). */
void feat_set_dedup_horizon_ms(int64_t ms);

/* Names of the FEAT_TXN_DIM features, in vector order (static storage). */
const char *const *feat_txn_names(void);
/* Index of a feature by name, or -1. */
int feat_txn_index(const char *name);

/* Checks an event before anything is computed: required ids present, event
 * time plausible, no NaN/Inf where a value was given, no negative amounts or
 * counts, no absurd magnitudes. ERR_INVALID with the field named in e. */
int feat_txn_validate(const struct txn_event *ev, struct err *e);

void feat_state_init(struct feat_state *s);
/* Computes the vector x[FEAT_TXN_DIM] for ev given the user's prior state
 * (the state before ev). Missing inputs give NaN. Pure. */
void feat_txn_build(const struct txn_event *ev, const struct feat_state *prior, float *x);
/* next = prior with ev applied (prior and next may alias). Late events
 * (older than the last one) go to their bucket if it is still in the ring. */
void feat_state_update(const struct feat_state *prior, const struct txn_event *ev,
                       struct feat_state *next);

/* Versioned little-endian binary encoding; returns bytes written or
 * ERR_NOMEM if cap is too small. */
int feat_state_encode(const struct feat_state *s, unsigned char *buf, size_t cap);
/* ERR_DECODE (with the reason) on a wrong version or length. */
int feat_state_decode(struct feat_state *s, const unsigned char *buf, size_t len, struct err *e);

/* 64-bit FNV-1a over the vector's bytes (every NaN and -0 canonicalised), for the
 * prediction's feature_hash: equal vectors give equal hashes. */
uint64_t feat_hash(const float *x, size_t n);

#endif
