/* common/codec/evtime.h: event-time admission (prefix evt_).
 *
 * Every stream refuses an event dated more than the maximum future skew
 * ahead of the wall clock (worker.max_future_skew_ms, default 1 h) and a
 * negative time: the event is dead-lettered with the reason, before any
 * state sees it. Why: one event far in the future freezes the velocity
 * windows of its user (last_event_ms never moves back) and moves the
 * trending origin past every later click (issue 23, cases 3 and 4).
 *
 * The skew is one process-wide setting: cli_apply applies the loaded
 * configuration (evt_set_max_future_skew_ms), so every check in the process
 * (feat_txn_validate, the click and image event checks below, which the
 * codec's decoders of those events also run, and covis's trending clamp)
 * uses the configured value. Not thread-safe while it is being set.
 */
#ifndef STREAMML_EVTIME_H
#define STREAMML_EVTIME_H

#include <stdint.h>

#include "err.h"

#define EVT_DEFAULT_SKEW_MS 3600000LL

struct click_event;
struct image_event;

void evt_set_max_future_skew_ms(int64_t ms); /* < 0: the default */
int64_t evt_max_future_skew_ms(void);
int64_t evt_now_ms(void); /* wall clock (CLOCK_REALTIME), ms */

/* ERR_INVALID naming the reason ("event_in_future" or "negative") when t_ms
 * is not admissible at now_ms with max_skew_ms; the pure form for tests. */
int evt_check_at(int64_t t_ms, int64_t now_ms, int64_t max_skew_ms, struct err *e);
/* The same at the wall clock with the process-wide skew. */
int evt_check(int64_t t_ms, struct err *e);

/* The event checks of the click and image streams (the transactions
 * stream's is feat_txn_validate): ERR_INVALID with the field and reason. */
int evt_click_validate(const struct click_event *ev, struct err *e);
int evt_image_validate(const struct image_event *ev, struct err *e);

#endif
