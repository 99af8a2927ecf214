/* tests/support/txn_v1_ref.h: the pre-spec hard-coded txn-v1 module, the
 * reference the spec-driven one must match bit for bit. */
#ifndef STREAMML_TXN_V1_REF_H
#define STREAMML_TXN_V1_REF_H

#include <stdint.h>

#include "event.h"

#define REF_TXN_VERSION "txn-v1"
#define REF_TXN_DIM 37
#define REF_CAT_UNKNOWN 0
#define REF_W1H_BUCKETS 12
#define REF_W24H_BUCKETS 24
#define REF_W30D_BUCKETS 30

struct ref_bucket {
    int64_t id;
    uint32_t count;
    double sum;
};

struct ref_state {
    int64_t last_event_ms;
    uint64_t n_amounts;
    double mean_amount;
    double m2_amount;
    struct ref_bucket w1h[REF_W1H_BUCKETS];
    struct ref_bucket w24h[REF_W24H_BUCKETS];
    struct ref_bucket w30d[REF_W30D_BUCKETS];
};

const char *const *ref_txn_names(void);
int ref_txn_index(const char *name);
void ref_state_init(struct ref_state *s);
void ref_txn_build(const struct txn_event *ev, const struct ref_state *prior, float *x);
void ref_state_update(const struct ref_state *prior, const struct txn_event *ev,
                      struct ref_state *next);

#endif
