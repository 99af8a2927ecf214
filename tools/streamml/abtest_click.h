/* tools/streamml/abtest_click.h: `streamml abtest` on clickstream outcome records. */
#ifndef STREAMML_ABTEST_CLICK_H
#define STREAMML_ABTEST_CLICK_H

#include "cfg.h"

/* Per arm of the outcome records in path (JSON lines) or on topic: users,
 * impressions, CTR, add-to-cart rate, conversion, revenue per user with
 * delta-method intervals; a table or --json. Returns the exit code. */
int abtest_click(const char *path, const char *topic, const struct cfg *cf,
                 const char *experiment, const char *control, double conf, int json);

#endif
