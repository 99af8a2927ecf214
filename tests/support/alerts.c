/* tests/support/alerts.c: see alerts.h. */
#include "alerts.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "stack.h"

const char *test_alert_field(json_t *j, const char *k)
{
    const char *s = json_string_value(json_object_get(j, k));

    return s ? s : "";
}

void test_alerts_read(const char *bootstrap, const char *path, struct test_alerts *out)
{
    char line[4096];
    char *argv[] = {(char *)test_bin("streamml"),
                    "alerts",
                    "-b",
                    (char *)bootstrap,
                    "--json",
                    "-f",
                    "-e",
                    "--log-level",
                    "error",
                    NULL};
    FILE *f;

    unlink(path);
    assert_int_equal(test_run_wait(argv, path), 0);
    f = fopen(path, "r");
    assert_non_null(f);
    out->n = 0;
    while (out->n < TEST_ALERTS_MAX && fgets(line, sizeof(line), f)) {
        json_t *j = line[0] == '{' ? json_loads(line, 0, NULL) : NULL;
        if (j) {
            printf("# alert %s %s %s -> %s\n", test_alert_field(j, "alert_type"),
                   test_alert_field(j, "feature"), test_alert_field(j, "status_from"),
                   test_alert_field(j, "status_to"));
            out->a[out->n++] = j;
        }
    }
    fclose(f);
}

void test_alerts_free(struct test_alerts *a)
{
    for (int i = 0; i < a->n; i++)
        json_decref(a->a[i]);
    a->n = 0;
}

int test_alert_find(const struct test_alerts *a, int from, const char *type, const char *feature,
                    const char *to)
{
    for (int i = from < 0 ? 0 : from; i < a->n; i++)
        if (strcmp(test_alert_field(a->a[i], "alert_type"), type) == 0 &&
            (!feature || strcmp(test_alert_field(a->a[i], "feature"), feature) == 0) &&
            strcmp(test_alert_field(a->a[i], "status_to"), to) == 0)
            return i;
    return -1;
}
