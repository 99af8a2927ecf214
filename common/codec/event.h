/* common/codec/event.h: the records that flow through the transactions pipeline.
 *
 * Plain caller-owned structs with fixed-size fields: decoding fills one in
 * place, with no allocation per message. Missing numeric inputs are NaN,
 * missing strings are "" (never 0: a missing debt is not a zero debt).
 */
#ifndef STREAMML_EVENT_H
#define STREAMML_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EV_ID_MAX 64    /* event/user ids: longer ones are refused, not cut */
#define EV_CAT_MAX 16   /* categorical values: home, marital, job */

/* One credit application / account event (schemas/transaction_event.avsc). */
struct txn_event {
    char event_id[EV_ID_MAX];
    char user_id[EV_ID_MAX];
    int64_t event_time_ms;      /* event time, ms since the Unix epoch */

    /* Application (credit_data.csv columns). */
    double amount;              /* loan amount */
    double income;              /* monthly income */
    double expenses;            /* monthly expenses */
    double assets;
    double debt;
    double price;               /* price of the financed good */
    double term_months;
    double seniority_years;     /* years with the current employer */
    double age;
    char home[EV_CAT_MAX];      /* rent|owner|parents|priv|ignore|other */
    char marital[EV_CAT_MAX];   /* single|married|widow|separated|divorced */
    char job[EV_CAT_MAX];       /* fixed|freelance|partime|others */
    int past_records;           /* 1 yes, 0 no, -1 missing */

    /* Credit bureau / account fields (often absent in application data). */
    double credit_limit;
    double credit_used;
    double payments_on_time;
    double payments_late;
    double inquiries_6m;
    double accounts_open;
    double accounts_opened_12m;
    double bankruptcies;
    double collections;
    double oldest_account_months;
    double avg_account_age_months;

    int label;                  /* 1 bad, 0 good, -1 unknown (training data only) */

    /* A feature spec on another record schema (common/streams/txn_input.h):
     * the record the plan reads (its struct fspec_row); NULL: this struct.
     * Then only event_id, user_id (the entity key) and event_time_ms above
     * are set. */
    const void *rec;
};

/* Sets every field to "missing" (NaN, "", -1) and zeroes the ids. */
void event_txn_init(struct txn_event *ev);

#define PRED_REASONS 4

/* One scored event (schemas/transaction_prediction.avsc). */
struct txn_prediction {
    char event_id[EV_ID_MAX];
    char user_id[EV_ID_MAX];
    int64_t event_time_ms;
    char model_name[64];
    char model_version[32];
    char feature_version[16];
    double probability;         /* gbdt P(bad) */
    int32_t score;              /* scorecard points, 300..850 */
    double score_probability;   /* scorecard P(bad) */
    char decision[16];          /* approve|review|decline */
    int n_reasons;
    char reasons[PRED_REASONS][96];     /* the deciding gbdt's reason texts, worst first */
    char reason_features[PRED_REASONS][48]; /* their features */
    double reason_values[PRED_REASONS]; /* their TreeSHAP values (log-odds towards bad) */
    int n_card_reasons;                 /* the scorecard's reason codes, labelled as its own */
    char card_reasons[PRED_REASONS][48];
    char feature_hash[17];      /* 16 hex digits of a 64-bit hash of the vector */
    bool degraded;              /* state could not be read: scored on partial state */
    bool redelivered;           /* the state already held this event (at-least-once) */
    int64_t latency_us;         /* poll -> produce, inside this worker */
    char src_topic[128];
    int32_t src_partition;
    int64_t src_offset;
    char experiment_id[64];     /* "" outside an experiment (common/streams/abtest.h) */
    char variant[32];           /* the variant that scored it, "" outside one */
};

/* A message the worker could not process (schemas/dead_letter.avsc). */
struct dlq_record {
    const char *reason;         /* human-readable, names the culprit */
    const char *error_code;     /* err_name() of the code */
    const char *worker;
    const char *src_topic;
    int32_t src_partition;
    int64_t src_offset;
    int64_t src_timestamp_ms;
    const void *key;
    size_t key_len;
    const void *payload;        /* the original bytes, untouched, or their */
    size_t payload_len;         /* first payload_len when truncated:       */
    size_t payload_size;        /* the original size (0 = payload_len)     */
    size_t key_size;            /* the original key size (0 = key_len)     */
    int64_t failed_at_ms;
};

#endif
