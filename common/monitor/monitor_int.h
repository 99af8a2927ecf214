/* common/monitor/monitor_int.h: the monitor module's internals, shared by its .c
 * files only (monitor.c, monitor_baseline.c). Not for other modules. */
#ifndef STREAMML_MONITOR_INT_H
#define STREAMML_MONITOR_INT_H

#include "monitor.h"

struct mon_feat {
    char name[MON_NAME_MAX];
    struct mon_dist d;
};

struct mon_baseline {
    char feature_version[32];
    char model[256];
    size_t n, rows;
    struct mon_feat *feat;
    const char **names;         /* built by mon_open, into feat[].name */
    int has_score;
    struct mon_dist score;
    double auc;                 /* NaN when training had no labels */
};

#endif
