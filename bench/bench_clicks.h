/* bench/bench_clicks.h: the synthetic clicks the in-process clickstream
 * benchmarks share (bench_ranker, bench_sources): header-only, as each C
 * file of bench/ is a program of its own. */
#ifndef STREAMML_BENCH_CLICKS_H
#define STREAMML_BENCH_CLICKS_H

#include <stdint.h>
#include <stdio.h>

#include "click_event.h"
#include "clickstep.h"

/* Clicks done..done+n of a run into ev/in: 2000 sessions interleaved, items
 * skewed to the popular ones (the square of a uniform draw of 1000, modulo
 * items), 5% cart events, 100 ms apart, partition 0 at offsets from
 * first_offset. *x: the xorshift state, advanced (the same seed gives every
 * configuration the same clicks). */
static inline void bench_clicks(struct click_event *ev, struct cstep_click *in, int n, long done,
                                int64_t items, int64_t first_offset, uint64_t *x)
{
    for (int i = 0; i < n; i++) {
        long c = done + i;
        *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
        snprintf(ev[i].event_id, sizeof(ev[i].event_id), "c%ld", c);
        snprintf(ev[i].session_id, sizeof(ev[i].session_id), "s%ld", (c * 7919) % 2000);
        ev[i].item_id = (int64_t)((*x % 1000) * (*x % 1000) % (uint64_t)items);
        ev[i].type = *x % 20 == 0 ? CLICK_CART : CLICK_VIEW;
        ev[i].event_time_ms = 1767225600000LL + c * 100;
        in[i] = (struct cstep_click){&ev[i], "clickstream", 0, first_offset + i, 0};
    }
}

#endif
