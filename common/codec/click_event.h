/* common/codec/click_event.h: the records of the clickstream pipeline.
 *
 * Plain caller-owned structs with fixed-size fields, like event.h and
 * image_event.h: decoding fills one in place with no allocation per
 * message; strings longer than a field are refused, never cut.
 */
#ifndef STREAMML_CLICK_EVENT_H
#define STREAMML_CLICK_EVENT_H

#include <stdbool.h>
#include <stdint.h>

#define CLICK_ID_MAX 128   /* event/session/user ids */
#define CLICK_SHOWN_MAX 64 /* items per prediction */

enum click_type { CLICK_VIEW = 0, CLICK_CART, CLICK_PURCHASE };

/* One click (schemas/click_event.avsc). */
struct click_event {
    char event_id[CLICK_ID_MAX];
    char session_id[CLICK_ID_MAX];
    char user_id[CLICK_ID_MAX]; /* "" when has_user is false */
    bool has_user;
    int64_t item_id;
    enum click_type type;
    int64_t event_time_ms;
    double price; /* unit price paid (purchases: revenue); 0 unknown */
};

struct click_shown {
    int64_t item_id;
    double score;
    char source[16]; /* rec_source_name() */
    double propensity;
};

/* The items to show after one click (schemas/click_prediction.avsc). */
struct click_prediction {
    char session_id[CLICK_ID_MAX];
    char event_id[CLICK_ID_MAX];
    int64_t event_time_ms;
    int n_items;
    struct click_shown items[CLICK_SHOWN_MAX];
    bool cold_start, unknown_item, degraded;
    int64_t session_clicks;
    char model_name[64];
    char model_version[32];
    int64_t latency_us;
    char src_topic[128];
    int32_t src_partition;
    int64_t src_offset;
    char experiment_id[64]; /* "" without an experiment */
    char variant[32];       /* the arm that ranked it */
};

/* What became of a published recommendation (schemas/click_outcome.avsc). */
enum click_outcome_type { OUT_IMPRESSION = 0, OUT_CLICK, OUT_CART, OUT_PURCHASE };

struct click_outcome {
    char outcome_id[CLICK_ID_MAX + 160]; /* <src_topic>:<partition>:<offset>:<type> */
    enum click_outcome_type type;
    char experiment_id[64];
    char variant[32];
    char unit_id[CLICK_ID_MAX];
    char session_id[CLICK_ID_MAX];
    char rec_event_id[CLICK_ID_MAX];
    int64_t rec_time_ms;
    char event_id[CLICK_ID_MAX];
    int64_t event_time_ms;
    int64_t item_id; /* -1: impression */
    int32_t position;
    double propensity;
    int32_t n_items;
    double revenue;
    char src_topic[128];
    int32_t src_partition;
    int64_t src_offset;
};

const char *click_outcome_type_name(enum click_outcome_type t); /* "impression", ... */

const char *click_type_name(enum click_type t); /* "view", "cart", "purchase" */

#endif
