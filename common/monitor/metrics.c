#include "metrics.h"

#include <openssl/evp.h>

#include <jansson.h>
#include <dirent.h>
#include <math.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "fairness.h"
#include "log.h"

/* Prometheus' usual latency buckets, in seconds, plus +Inf. */
static const double lat_le[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,     10};
#define NLAT (sizeof(lat_le) / sizeof(lat_le[0]))

static const char *const counter_names[METRICS_NCOUNTERS][2] = {
    {"streamml_events_total", "Input messages taken by the worker"},
    {"streamml_predictions_total", "Predictions produced"},
    {"streamml_dead_letters_total", "Inputs sent to the dead-letter topic"},
    {"streamml_degraded_total", "Predictions scored degraded (state store unreachable)"},
    {"streamml_alerts_total", "Monitoring alert events published"},
    {"streamml_ungradable_total", "Images that could not be graded (images worker; reason on the prediction)"},
    {"streamml_explanations_total", "Predictions explained by the deciding model (TreeSHAP reason codes)"},
    {"streamml_explain_seconds_total", "Time spent explaining them"},
};

struct gauges {                     /* copied from the monitor, under lock */
    int have;
    size_t nfeat;
    char (*names)[MON_NAME_MAX];
    double *psi, *missing;
    double score_psi, score_mean, p99, error_rate, auc, di;
    size_t ngroups;                          /* fairness groups */
    char group[MON_GROUPS][FAIR_NAME];
    double group_approval[MON_GROUPS], group_di[MON_GROUPS];
    size_t nogroups;                         /* groups of the labelled outcomes */
    char ogroup[MON_GROUPS][FAIR_NAME];
    double group_tpr[MON_GROUPS], group_fpr[MON_GROUPS], tpr_gap, fpr_gap;
    int64_t windows;
    int degraded;
    int level[MON_NCHECKS];
};

struct metrics {
    struct MHD_Daemon *d;
    char *worker, *model, *model_version;
    char model_sha[2 * 32 + 1]; /* hex SHA-256 of the model file, as sha256sum prints */
    int64_t stale_ms;
    _Atomic uint64_t counter[METRICS_NCOUNTERS];
    _Atomic uint64_t lat[NLAT + 1];
    _Atomic uint64_t lat_sum_us;
    _Atomic int64_t lag;            /* -1 unknown */
    _Atomic int64_t beat_ms;
    _Atomic size_t assigned;
    _Atomic int redis_ok, model_ok;
    pthread_mutex_t lock;
    struct gauges g;
};

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void metrics_add(struct metrics *m, enum metrics_counter c, uint64_t n)
{
    if (m && (unsigned)c < METRICS_NCOUNTERS)
        atomic_fetch_add_explicit(&m->counter[c], n, memory_order_relaxed);
}

void metrics_observe_latency(struct metrics *m, int64_t us)
{
    size_t b = 0;
    double s = (double)us / 1e6;

    if (!m)
        return;
    while (b < NLAT && s > lat_le[b])
        b++;
    atomic_fetch_add_explicit(&m->lat[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->lat_sum_us, (uint64_t)(us > 0 ? us : 0), memory_order_relaxed);
}

/* ---- gauges from the worker thread ---- */

static int gauges_size(struct gauges *g, size_t n)
{
    if (g->names && g->nfeat == n)
        return ERR_OK;
    free(g->names);
    free(g->psi);
    free(g->missing);
    g->names = calloc(n + 1, MON_NAME_MAX);
    g->psi = calloc(n + 1, sizeof(double));
    g->missing = calloc(n + 1, sizeof(double));
    g->nfeat = n;
    return g->names && g->psi && g->missing ? ERR_OK : ERR_NOMEM;
}

static void copy_snapshot(struct gauges *g, const struct mon_snapshot *s)
{
    for (size_t f = 0; f < s->nfeat; f++)
        snprintf(g->names[f], MON_NAME_MAX, "%s", s->names[f]);
    g->score_psi = s->score_psi;
    g->score_mean = s->score_mean;
    g->p99 = s->latency_p99_s;
    g->error_rate = s->error_rate;
    g->auc = s->auc;
    g->di = s->disparate_impact;
    g->ngroups = s->ngroups < MON_GROUPS ? s->ngroups : MON_GROUPS;
    for (size_t k = 0; k < g->ngroups; k++) {
        snprintf(g->group[k], sizeof(g->group[k]), "%s", s->group[k]);
        g->group_approval[k] = s->group_approval[k];
        g->group_di[k] = s->group_di[k];
    }
    g->nogroups = s->nogroups < MON_GROUPS ? s->nogroups : MON_GROUPS;
    for (size_t k = 0; k < g->nogroups; k++) {
        snprintf(g->ogroup[k], sizeof(g->ogroup[k]), "%s", s->ogroup[k]);
        g->group_tpr[k] = s->group_tpr[k];
        g->group_fpr[k] = s->group_fpr[k];
    }
    g->tpr_gap = s->tpr_gap;
    g->fpr_gap = s->fpr_gap;
    g->windows = s->windows;
    g->degraded = s->degraded;
    memcpy(g->level, s->level, sizeof(g->level));
    g->have = 1;
}

void metrics_worker_tick(struct metrics *m, const struct mon *mon, size_t assigned_partitions,
                         int redis_ok, int model_loaded)
{
    if (!m)
        return;
    atomic_store(&m->beat_ms, mono_ms());
    atomic_store(&m->assigned, assigned_partitions);
    atomic_store(&m->redis_ok, redis_ok);
    atomic_store(&m->model_ok, model_loaded);
    if (!mon)
        return;
    pthread_mutex_lock(&m->lock);
    if (gauges_size(&m->g, mon_num_features(mon)) == ERR_OK) {
        struct mon_snapshot s = {.nfeat = m->g.nfeat, .psi = m->g.psi, .missing = m->g.missing};
        mon_snapshot(mon, &s);
        copy_snapshot(&m->g, &s);
    }
    pthread_mutex_unlock(&m->lock);
}

/* Sum of consumer_lag over every partition librdkafka reports for the
 * consumer (the internal partition -1 and unknown lags, -1, left out). */
void metrics_kafka_stats(const char *json, size_t len, void *metrics)
{
    struct metrics *m = metrics;
    json_t *root = json_loadb(json, len, 0, NULL), *topic, *part;
    const char *tn, *pn;
    int64_t lag = 0;
    int seen = 0;

    if (!root)
        return;
    json_object_foreach(json_object_get(root, "topics"), tn, topic) {
        json_object_foreach(json_object_get(topic, "partitions"), pn, part) {
            json_int_t l = json_integer_value(json_object_get(part, "consumer_lag"));
            if (strcmp(pn, "-1") == 0 || !json_is_integer(json_object_get(part, "consumer_lag")) ||
                l < 0)
                continue;
            lag += l;
            seen = 1;
        }
    }
    json_decref(root);
    atomic_store(&m->lag, seen ? lag : -1);
}

/* ---- rendering ---- */

static void head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void put_value(FILE *f, double v)
{
    if (isnan(v))
        fputs(" NaN\n", f);
    else
        fprintf(f, " %.17g\n", v);
}

/* Label value escaping of the text format: \\, \", \n. */
static void put_label(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            fputc('\\', f);
        if (*s == '\n')
            fputs("\\n", f);
        else
            fputc(*s, f);
    }
}

static _Atomic uint64_t g_state_lost;
static _Atomic int g_state_lost_flag;

void metrics_note_state_lost(void)
{
    atomic_fetch_add(&g_state_lost, 1);
}

void metrics_set_state_lost_flag(int on)
{
    atomic_store(&g_state_lost_flag, on ? 1 : 0);
}

static void render_counters(struct metrics *m, FILE *f)
{
    uint64_t cum = 0;

    head(f, "streamml_state_lost_total", "counter",
         "Times the state store was found empty after holding data (restart without persistence)");
    fprintf(f, "streamml_state_lost_total %llu\n", (unsigned long long)atomic_load(&g_state_lost));
    head(f, "streamml_state_lost_unacknowledged", "gauge",
         "1 while a state loss is not acknowledged (predictions flagged)");
    fprintf(f, "streamml_state_lost_unacknowledged %d\n", atomic_load(&g_state_lost_flag));

    for (int c = 0; c < METRICS_NCOUNTERS; c++) {
        head(f, counter_names[c][0], "counter", counter_names[c][1]);
        if (c == METRICS_EXPLAIN_NS) /* added in ns, shown in the base unit */
            fprintf(f, "%s %.9f\n", counter_names[c][0],
                    (double)atomic_load(&m->counter[c]) / 1e9);
        else
            fprintf(f, "%s %llu\n", counter_names[c][0],
                    (unsigned long long)atomic_load(&m->counter[c]));
    }
    head(f, "streamml_processing_latency_seconds", "histogram",
         "Poll to produce, inside the worker");
    for (size_t b = 0; b <= NLAT; b++) {
        cum += atomic_load(&m->lat[b]);
        if (b < NLAT)
            fprintf(f, "streamml_processing_latency_seconds_bucket{le=\"%g\"} %llu\n", lat_le[b],
                    (unsigned long long)cum);
        else
            fprintf(f, "streamml_processing_latency_seconds_bucket{le=\"+Inf\"} %llu\n",
                    (unsigned long long)cum);
    }
    fprintf(f, "streamml_processing_latency_seconds_sum %.9g\n",
            (double)atomic_load(&m->lat_sum_us) / 1e6);
    fprintf(f, "streamml_processing_latency_seconds_count %llu\n", (unsigned long long)cum);
}

static void render_features(const struct gauges *g, FILE *f)
{
    head(f, "streamml_feature_psi", "gauge", "PSI of the feature over the last window");
    for (size_t i = 0; i < g->nfeat; i++) {
        fputs("streamml_feature_psi{feature=\"", f);
        put_label(f, g->names[i]);
        fputs("\"}", f);
        put_value(f, g->psi[i]);
    }
    head(f, "streamml_feature_missing_rate", "gauge", "Missing rate of the feature, last window");
    for (size_t i = 0; i < g->nfeat; i++) {
        fputs("streamml_feature_missing_rate{feature=\"", f);
        put_label(f, g->names[i]);
        fputs("\"}", f);
        put_value(f, g->missing[i]);
    }
}

static void gauge(FILE *f, const char *name, const char *help, double v)
{
    head(f, name, "gauge", help);
    fputs(name, f);
    put_value(f, v);
}

/* Per fairness group (a bounded set: MON_GROUPS values of one field, never
 * users or keys). */
static void render_groups(const struct gauges *g, FILE *f)
{
    if (!g->ngroups)
        return;
    head(f, "streamml_fairness_approval_rate", "gauge", "Approval rate of the group, last window");
    for (size_t k = 0; k < g->ngroups; k++) {
        fputs("streamml_fairness_approval_rate{group=\"", f);
        put_label(f, g->group[k]);
        fputs("\"}", f);
        put_value(f, g->group_approval[k]);
    }
    head(f, "streamml_fairness_disparate_impact", "gauge", "Approval rate of the group over the "
         "highest group's, last window (NaN: under monitor.fairness.min_group)");
    for (size_t k = 0; k < g->ngroups; k++) {
        fputs("streamml_fairness_disparate_impact{group=\"", f);
        put_label(f, g->group[k]);
        fputs("\"}", f);
        put_value(f, g->group_di[k]);
    }
}

/* One gauge per outcome group (labelled decisions in the window). */
static void render_rates(FILE *f, const char *name, const char *help, size_t n,
                         const char (*group)[FAIR_NAME], const double *v)
{
    if (!n)
        return;
    head(f, name, "gauge", help);
    for (size_t k = 0; k < n; k++) {
        fprintf(f, "%s{group=\"", name);
        put_label(f, group[k]);
        fputs("\"}", f);
        put_value(f, v[k]);
    }
}

static void render_outcomes(const struct gauges *g, FILE *f)
{
    render_rates(f, "streamml_fairness_tpr", "P(not approved | labelled bad) of the group, "
                 "window (NaN: no bad label)", g->nogroups, g->ogroup, g->group_tpr);
    render_rates(f, "streamml_fairness_fpr", "P(not approved | labelled good) of the group, "
                 "window (NaN: no good label)", g->nogroups, g->ogroup, g->group_fpr);
    gauge(f, "streamml_fairness_tpr_gap", "Highest minus lowest group TPR (NaN: under two "
          "groups with monitor.fairness.min_group bad labels)", g->tpr_gap);
    gauge(f, "streamml_fairness_fpr_gap", "Highest minus lowest group FPR (NaN: under two "
          "groups with monitor.fairness.min_group good labels)", g->fpr_gap);
}

static void render_monitor(const struct gauges *g, FILE *f)
{
    render_features(g, f);
    gauge(f, "streamml_score_psi", "PSI of the model score, last window", g->score_psi);
    gauge(f, "streamml_score_mean", "Mean model score, last window", g->score_mean);
    gauge(f, "streamml_window_latency_p99_seconds", "p99 processing latency, last window",
          g->p99);
    gauge(f, "streamml_error_rate", "(dead-lettered + degraded) / all, last window",
          g->error_rate);
    gauge(f, "streamml_rolling_auc", "AUC of labelled predictions (NaN: not enough labels)",
          g->auc);
    gauge(f, "streamml_disparate_impact", "Lowest over highest approval rate of the fairness "
          "groups (NaN: no fairness check)", g->di);
    render_groups(g, f);
    render_outcomes(g, f);
    head(f, "streamml_monitor_windows_total", "counter", "Monitoring windows evaluated");
    fprintf(f, "streamml_monitor_windows_total %.17g\n", (double)g->windows);
    head(f, "streamml_monitor_check_level", "gauge", "Worst level per check: 0 OK, 1 WARNING, "
                                                     "2 CRITICAL");
    for (int c = 0; c < MON_NCHECKS; c++)
        fprintf(f, "streamml_monitor_check_level{check=\"%s\"} %d\n",
                mon_check_name((enum mon_check)c), g->level[c]);
}

/* The process_* metrics every Prometheus client library exports, from
 * /proc/self as the Go and Python clients read them. A file that cannot be
 * read leaves its metric out rather than reporting a made-up value. */
static void render_process(FILE *f)
{
    long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    unsigned long long ut = 0, st = 0, start = 0, vsize = 0;
    long long rss = 0;
    char buf[1024], *p;
    struct rlimit rl;
    FILE *in = fopen("/proc/self/stat", "r");
    size_t n = in ? fread(buf, 1, sizeof(buf) - 1, in) : 0;
    long fds = 0;
    DIR *d;

    if (in)
        fclose(in);
    buf[n] = '\0';
    /* Fields after the command name, which may hold spaces: from the last ')'. */
    if (n && (p = strrchr(buf, ')')) &&
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d "
                      "%*d %*d %llu %llu %lld", &ut, &st, &start, &vsize, &rss) == 5 && tck > 0) {
        struct timespec now, up;
        head(f, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in "
                                                        "seconds.");
        fprintf(f, "process_cpu_seconds_total %.17g\n", (double)(ut + st) / (double)tck);
        head(f, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
        fprintf(f, "process_virtual_memory_bytes %llu\n", vsize);
        head(f, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        fprintf(f, "process_resident_memory_bytes %lld\n", rss * page);
        /* start is in ticks since boot: now - uptime + start = wall time. */
        if (clock_gettime(CLOCK_REALTIME, &now) == 0 && clock_gettime(CLOCK_BOOTTIME, &up) == 0) {
            double boot = (double)now.tv_sec + now.tv_nsec / 1e9 - (double)up.tv_sec -
                          up.tv_nsec / 1e9;
            head(f, "process_start_time_seconds", "gauge", "Start time of the process since unix "
                                                           "epoch in seconds.");
            fprintf(f, "process_start_time_seconds %.3f\n", boot + (double)start / (double)tck);
        }
    }
    if ((d = opendir("/proc/self/fd"))) {
        struct dirent *de;
        while ((de = readdir(d)))
            fds += de->d_name[0] != '.';
        closedir(d);
        head(f, "process_open_fds", "gauge", "Number of open file descriptors.");
        fprintf(f, "process_open_fds %ld\n", fds - 1); /* less the one reading the dir */
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        head(f, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
        fprintf(f, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }
}

static void render(struct metrics *m, FILE *f)
{
    int64_t lag = atomic_load(&m->lag);

    head(f, "streamml_build_info", "gauge", "Build and model of this worker");
    fprintf(f, "streamml_build_info{version=\"%s\",worker=\"", STREAMML_VERSION);
    put_label(f, m->worker);
    fputs("\",model=\"", f);
    put_label(f, m->model);
    fputs("\",model_version=\"", f);
    put_label(f, m->model_version);
    fputs("\",model_sha=\"", f);
    put_label(f, m->model_sha);
    fputs("\"} 1\n", f);
    render_counters(m, f);
    gauge(f, "streamml_consumer_lag", "Messages behind the partition ends (librdkafka "
          "statistics; NaN until the first report)", lag < 0 ? NAN : (double)lag);
    gauge(f, "streamml_assigned_partitions", "Partitions assigned to this worker",
          (double)atomic_load(&m->assigned));
    pthread_mutex_lock(&m->lock);
    gauge(f, "streamml_monitor_status", "0 HEALTHY, 1 DEGRADED (a check is CRITICAL); NaN "
          "when monitoring is off", m->g.have ? m->g.degraded : NAN);
    if (m->g.have)
        render_monitor(&m->g, f);
    pthread_mutex_unlock(&m->lock);
    render_process(f);
}

int metrics_render(struct metrics *m, char **out, size_t *len, struct err *e)
{
    FILE *f = open_memstream(out, len);

    if (!f)
        return err_set(e, ERR_NOMEM, "metrics: out of memory");
    render(m, f);
    if (fclose(f) != 0) {
        free(*out);
        *out = NULL;
        return err_set(e, ERR_NOMEM, "metrics: out of memory");
    }
    return ERR_OK;
}

/* ---- HTTP ---- */

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, char *body, size_t len,
                             const char *type, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    enum MHD_Result rc;

    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result text(struct MHD_Connection *c, unsigned status, const char *msg)
{
    return reply(c, status, (char *)msg, strlen(msg), "text/plain; charset=utf-8",
                 MHD_RESPMEM_PERSISTENT);
}

static enum MHD_Result readyz(struct metrics *m, struct MHD_Connection *c)
{
    if (!atomic_load(&m->model_ok))
        return text(c, 503, "not ready: model not loaded\n");
    if (!atomic_load(&m->assigned))
        return text(c, 503, "not ready: no partition assigned\n");
    if (!atomic_load(&m->redis_ok))
        return text(c, 503, "not ready: state store (Redis) unreachable\n");
    return text(c, 200, "ready\n");
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **con_cls)
{
    struct metrics *m = cls;
    char *body;
    size_t len;

    (void)version, (void)upload, (void)upload_size, (void)con_cls;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return text(c, 405, "GET only\n");
    if (strcmp(url, "/metrics") == 0) {
        if (metrics_render(m, &body, &len, NULL))
            return text(c, 500, "out of memory\n");
        return reply(c, 200, body, len, "text/plain; version=0.0.4; charset=utf-8",
                     MHD_RESPMEM_MUST_FREE);
    }
    if (strcmp(url, "/healthz") == 0)
        return mono_ms() - atomic_load(&m->beat_ms) <= m->stale_ms
                   ? text(c, 200, "ok\n")
                   : text(c, 503, "worker loop stalled\n");
    if (strcmp(url, "/readyz") == 0)
        return readyz(m, c);
    return text(c, 404, "not found: /metrics, /healthz, /readyz\n");
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

/* Hex SHA-256 of a file (streamed, any size), "" when it cannot be read:
 * the label says which bytes are serving, never stops a worker. */
static void file_sha256(const char *path, char hex[2 * 32 + 1])
{
    unsigned char buf[65536], md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    FILE *f = fopen(path, "rb");
    size_t got;
    int ok = ctx && f && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);

    while (ok && (got = fread(buf, 1, sizeof(buf), f)) > 0)
        ok = EVP_DigestUpdate(ctx, buf, got);
    ok = ok && !ferror(f) && EVP_DigestFinal_ex(ctx, md, &n) && n == 32;
    hex[0] = '\0';
    for (unsigned int i = 0; ok && i < n; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    if (f)
        fclose(f);
    EVP_MD_CTX_free(ctx);
}

struct metrics *metrics_open(const struct metrics_opts *o, struct err *e)
{
    struct metrics *m;

    err_clear(e);
    if (o->port == 0)
        return NULL;
    if (!(m = calloc(1, sizeof(*m)))) {
        err_set(e, ERR_NOMEM, "metrics: out of memory");
        return NULL;
    }
    pthread_mutex_init(&m->lock, NULL);
    atomic_store(&m->lag, -1);
    atomic_store(&m->beat_ms, mono_ms());
    m->stale_ms = o->stale_ms > 0 ? o->stale_ms : 30000;
    m->worker = dup_or_empty(o->worker);
    m->model = dup_or_empty(o->model);
    m->model_version = dup_or_empty(o->model_version);
    if (o->model_file)
        file_sha256(o->model_file, m->model_sha);
    if (!m->worker || !m->model || !m->model_version) {
        err_set(e, ERR_NOMEM, "metrics: out of memory");
        goto fail;
    }
    m->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, (uint16_t)o->port, NULL, NULL,
                            handler, m, MHD_OPTION_CONNECTION_LIMIT, 64u,
                            MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    if (!m->d) {
        err_set(e, ERR_CONFIG, "metrics.port=%d: cannot listen (in use?)", o->port);
        goto fail;
    }
    log_info("metrics: http://0.0.0.0:%d/metrics, /healthz, /readyz", o->port);
    return m;
fail:
    metrics_close(m);
    return NULL;
}

void metrics_close(struct metrics *m)
{
    if (!m)
        return;
    if (m->d)
        MHD_stop_daemon(m->d);
    pthread_mutex_destroy(&m->lock);
    free(m->g.names);
    free(m->g.psi);
    free(m->g.missing);
    free(m->worker);
    free(m->model);
    free(m->model_version);
    free(m);
}
