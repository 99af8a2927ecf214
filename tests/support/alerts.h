/* tests/support/alerts.h: the alert events on the monitoring topic, as the
 * integration tests of the monitored workers read them (`streamml alerts
 * --json`, from the oldest to the end). */
#ifndef STREAMML_TEST_ALERTS_H
#define STREAMML_TEST_ALERTS_H

#include <jansson.h>

#define TEST_ALERTS_MAX 256

struct test_alerts {
    json_t *a[TEST_ALERTS_MAX];
    int n;
};

/* Reads every alert of the cluster at bootstrap into out (printing one
 * "# alert ..." line each); path is the scratch file for the JSON lines.
 * Fails the test if the command fails. */
void test_alerts_read(const char *bootstrap, const char *path, struct test_alerts *out);
void test_alerts_free(struct test_alerts *a);

/* Field k of an alert as a string ("" when absent). */
const char *test_alert_field(json_t *j, const char *k);
/* Index of the first alert of type (and feature, unless NULL) moving to
 * status `to`, at or after index from; -1 when none. */
int test_alert_find(const struct test_alerts *a, int from, const char *type, const char *feature,
                    const char *to);

#endif
