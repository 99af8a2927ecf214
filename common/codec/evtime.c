#include "evtime.h"
#include "click_event.h"
#include "image_event.h"

#include <time.h>

static int64_t g_skew_ms = EVT_DEFAULT_SKEW_MS;

void evt_set_max_future_skew_ms(int64_t ms)
{
    g_skew_ms = ms < 0 ? EVT_DEFAULT_SKEW_MS : ms;
}

int64_t evt_max_future_skew_ms(void)
{
    return g_skew_ms;
}

int64_t evt_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int evt_check_at(int64_t t_ms, int64_t now_ms, int64_t max_skew_ms, struct err *e)
{
    if (t_ms < 0)
        return err_set(e, ERR_INVALID, "event_time: negative (%lld ms)", (long long)t_ms);
    /* t_ms - now_ms cannot overflow: both are >= 0. */
    if (t_ms - now_ms > max_skew_ms)
        return err_set(e, ERR_INVALID,
                       "event_time: event_in_future: %lld ms is %lld s ahead of the wall clock "
                       "(worker.max_future_skew_ms=%lld)",
                       (long long)t_ms, (long long)((t_ms - now_ms) / 1000),
                       (long long)max_skew_ms);
    return ERR_OK;
}

int evt_check(int64_t t_ms, struct err *e)
{
    return evt_check_at(t_ms, evt_now_ms(), g_skew_ms, e);
}

int evt_click_validate(const struct click_event *ev, struct err *e)
{
    return evt_check(ev->event_time_ms, e);
}

int evt_image_validate(const struct image_event *ev, struct err *e)
{
    return evt_check(ev->event_time_ms, e);
}
