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
};

const char *click_type_name(enum click_type t); /* "view", "cart", "purchase" */

#endif
