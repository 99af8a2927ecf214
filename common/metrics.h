/* common/metrics.h: Prometheus metrics and health endpoints (prefix metrics_).
 *
 * A libmicrohttpd server on metrics.port (0 = off) answers
 *   GET /metrics  Prometheus text format 0.0.4: streamml_* counters (_total),
 *                 the processing latency histogram (_seconds, le buckets),
 *                 monitor gauges (PSI per feature, missing rate, mean score,
 *                 error rate, rolling AUC, status), consumer lag from
 *                 librdkafka statistics, streamml_build_info;
 *   GET /healthz  200 while the worker loop has beaten within stale_ms;
 *   GET /readyz   200 when partitions are assigned, Redis is reachable and
 *                 the model is loaded, else 503 naming what is missing.
 *
 * Threads: the server answers on its own thread. Counters and the histogram
 * are atomics (any thread may add); gauges are copied in by the worker
 * thread under a mutex (metrics_set_monitor), so the HTTP thread never reads
 * the worker's live structures.
 */
#ifndef STREAMML_METRICS_H
#define STREAMML_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "monitor.h"

enum metrics_counter {
    METRICS_EVENTS = 0,        /* streamml_events_total: input messages */
    METRICS_PREDICTIONS,       /* streamml_predictions_total */
    METRICS_DEAD_LETTERS,      /* streamml_dead_letters_total */
    METRICS_DEGRADED,          /* streamml_degraded_total: predictions scored degraded */
    METRICS_ALERTS,            /* streamml_alerts_total: alert events published */
    METRICS_UNGRADABLE,        /* streamml_ungradable_total: images not gradable (images worker) */
    METRICS_EXPLANATIONS,      /* streamml_explanations_total: predictions explained (TreeSHAP) */
    METRICS_EXPLAIN_NS,        /* streamml_explain_seconds_total: their CPU cost, added in ns */
    METRICS_NCOUNTERS
};

struct metrics_opts {
    int port;                  /* 0: no server (metrics_open returns NULL, no error) */
    const char *worker, *model, *model_version;   /* streamml_build_info labels */
    int64_t stale_ms;          /* /healthz fails past this without a heartbeat */
    const char *model_file;    /* its SHA-256 is the model_sha label (NULL: "") */
};

struct metrics;

/* Starts the server. NULL with e->code == ERR_OK when o->port is 0; NULL
 * with the reason (port named) when it cannot listen. */
struct metrics *metrics_open(const struct metrics_opts *o, struct err *e);
void metrics_close(struct metrics *m); /* stops the server; NULL-safe */

/* Any thread. */
void metrics_add(struct metrics *m, enum metrics_counter c, uint64_t n);
void metrics_observe_latency(struct metrics *m, int64_t us);

/* Worker thread: heartbeat, readiness and a copy of the monitor's last
 * evaluation (mon may be NULL: monitoring off). */
void metrics_worker_tick(struct metrics *m, const struct mon *mon, size_t assigned_partitions,
                         int redis_ok, int model_loaded);
/* librdkafka statistics JSON -> consumer lag (sum over assigned partitions).
 * Has the signature of kq_opts.stats_cb (opaque = the struct metrics). */
void metrics_kafka_stats(const char *json, size_t len, void *metrics);

/* Process-wide figures that modules below the worker record themselves
 * (no handle to pass), rendered by every metrics server of the process:
 * streamml_state_lost_total (state store found empty after holding data,
 * common/state.h) and the gauge streamml_state_lost_unacknowledged (1 while
 * predictions are to be flagged). Any thread. */
void metrics_note_state_lost(void);
void metrics_set_state_lost_flag(int on);

/* The /metrics text, malloc'd into *out (caller frees). Any thread. */
int metrics_render(struct metrics *m, char **out, size_t *len, struct err *e);

#endif
