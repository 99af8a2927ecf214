#include "cfg.h"
#include "log.h"
#include "suggest.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum ktype { K_STR, K_INT, K_DBL, K_SECRET };

struct key_def {
    const char *name;
    enum ktype type;
    double min, max;
    const char *def;
    const char *help;
};

/* The one table of streamml's own keys. Defaults come from the issues'
 * seed figures; ranges refuse values that can only be mistakes. */
static const struct key_def keys[] = {
    {"input.topic", K_STR, 0, 0, "transactions", "topic the worker consumes"},
    {"output.topic", K_STR, 0, 0, "predictions.transactions", "topic predictions go to"},
    {"dlq.topic", K_STR, 0, 0, "transactions.dlq", "dead-letter topic for bad input"},
    {"schemas.dir", K_STR, 0, 0, "schemas", "directory with *.avsc and the ids file"},
    {"state.backend", K_STR, 0, 0, "redis", "redis | memory"},
    {"state.retry_budget_ms", K_INT, 0, 600000, "2000",
     "time spent retrying Redis before scoring degraded"},
    {"state.dedup_horizon_ms", K_INT, 1, 31536000000, "2592000000",
     "an event id already applied to the user within this much event time is a duplicate "
     "(default: the longest window, 30 d; at most 32 ids per user)"},
    {"state.lost_flag_ms", K_INT, 0, 31536000000, "0",
     "after a state store loss is detected, predictions are flagged this long "
     "(0: until `streamml config ack-state-loss`)"},
    {"state.cache_entries", K_INT, 0, 10000000, "20000",
     "users whose state the owner of their partition keeps in memory between batches, "
     "encoded (128 bytes to 2 KB each) "
     "(docs/delivery.md, partition-owned state; Redis only); 0: read every batch's users from Redis"},
    {"state.layout", K_INT, 2, 3, "3",
     "Redis layout of the users' state in a new store: 2, a string per user; 3, users as fields "
     "of hash buckets (docs/delivery.md); a store keeps the layout it was created with"},
    {"state.buckets", K_INT, 1, 65536, "8", "hash buckets of a new layout-3 store (fewer: fewer Redis commands per batch)"},
    {"state.pending_max", K_INT, 1, 10000000, "100000",
     "events kept for state re-apply while Redis is down (then consumption pauses)"},
    {"redis.host", K_STR, 0, 0, "127.0.0.1", "Redis host"},
    {"redis.port", K_INT, 1, 65535, "6379", "Redis port"},
    {"redis.nodes", K_STR, 0, 0, "",
     "Redis Cluster seeds host:port,...; set: cluster mode (redis.host/port unused)"},
    {"redis.password", K_SECRET, 0, 0, "", "Redis AUTH password (env or file only)"},
    {"redis.password_file", K_STR, 0, 0, "", "file holding the Redis password"},
    {"redis.username", K_STR, 0, 0, "", "Redis ACL user (AUTH user password); empty: default"},
    {"redis.prefix", K_STR, 0, 0, "", "prefix of every Redis key"},
    {"redis.ttl_s", K_INT, 0, 31536000, "3024000", "expiry of a user's state (35 days)"},
    {"redis.timeout_ms", K_INT, 1, 600000, "1000", "Redis connect/command timeout"},
    {"redis.require_at_start", K_INT, 0, 1, "0",
     "1: exit (code 1) when Redis is unreachable at start; 0: start degraded"},
    {"features.spec", K_STR, 0, 0, "",
     "feature spec YAML (docs/features.md), on TransactionEvent or its own record schema "
     "(the worker then reads that record); empty: the built-in models/txn-v1.yaml"},
    {"model.gbdt", K_STR, 0, 0, "models/credit_gbdt.json", "XGBoost JSON model"},
    {"model.scorecard", K_STR, 0, 0, "models/credit_scorecard.json",
     "scorecard JSON; empty: none (a plain probability model: no points, no reason codes)"},
    {"model.name", K_STR, 0, 0, "credit-risk", "model name on predictions"},
    {"model.version", K_STR, 0, 0, "1", "model version on predictions"},
    {"model.reasons", K_STR, 0, 0, "auto",
     "reason texts of the gbdt's features (auto: <model>.reasons.json next to the gbdt model "
     "when there is one; empty: feature names)"},
    {"explain.decisions", K_STR, 0, 0, "review,decline",
     "decisions explained by the deciding gbdt (TreeSHAP reason codes): comma-separated "
     "approve/review/decline, or none"},
    {"decision.review_threshold", K_DBL, 0, 1, "0.3",
     "P(bad) at or above which a case is sent to review"},
    {"decision.decline_threshold", K_DBL, 0, 1, "0.6", "P(bad) at or above which it is declined"},
    /* 10,000 at most: the batch arrays scale with it (about 3.3 kB a message
     * with distinct users, 330 MB at 100,000); larger batches gain nothing. */
    {"worker.batch_size", K_INT, 1, 10000, "1000", "messages taken per loop turn (<= 10000)"},
    {"worker.max_future_skew_ms", K_INT, 0, 31536000000, "3600000",
     "events dated more than this ahead of the wall clock are dead-lettered (event_in_future)"},
    {"worker.poll_ms", K_INT, 1, 60000, "100", "consumer poll timeout"},
    {"worker.max_inflight", K_INT, 1, 10000000, "100000",
     "unacknowledged messages before polling pauses"},
    {"worker.shutdown_timeout_ms", K_INT, 100, 600000, "10000",
     "drain deadline on SIGTERM (keep below the pod's grace period)"},
    {"worker.commit_interval_ms", K_INT, 0, 600000, "200",
     "commit stored offsets (async) at most this often as they advance (0 = auto-commit only)"},
    {"worker.stage_times", K_STR, 0, 0, "",
     "write per-stage time histograms of the loop to this file at exit (latency diagnosis)"},
    {"worker.max_messages", K_INT, 0, 1e15, "0", "stop after this many messages (0 = never)"},
    {"worker.idle_exit_ms", K_INT, 0, 86400000, "0", "exit after this long without input (0 = never)"},
    /* monitoring (issue 4): thresholds are the seed figures */
    {"monitor.baseline", K_STR, 0, 0, "", "baseline JSON from streamml profile (empty = monitoring off)"},
    {"monitor.topic", K_STR, 0, 0, "monitoring", "topic alert events go to"},
    {"monitor.window.events", K_INT, 1, 100000000, "10000", "events in the rolling window"},
    {"monitor.window.ms", K_INT, 1, 86400000, "300000", "time span of the rolling window"},
    {"monitor.window.slices", K_INT, 1, 100, "5", "slices of the window (it slides by one slice)"},
    {"monitor.window.min_events", K_INT, 1, 100000000, "500", "fewer events in a window: no evaluation"},
    {"monitor.psi.warning", K_DBL, 0, 100, "0.1", "feature PSI above which data drift is WARNING"},
    {"monitor.psi.critical", K_DBL, 0, 100, "0.2", "feature PSI above which data drift is CRITICAL"},
    {"monitor.score_psi.warning", K_DBL, 0, 100, "0.1", "score PSI: WARNING"},
    {"monitor.score_psi.critical", K_DBL, 0, 100, "0.2", "score PSI: CRITICAL"},
    {"monitor.score_mean.warning", K_DBL, 0, 100, "0.1", "relative change of the mean score: WARNING"},
    {"monitor.score_mean.critical", K_DBL, 0, 100, "0.15", "relative change of the mean score: CRITICAL"},
    {"monitor.missing.warning", K_DBL, 0, 1, "0.1", "missing rate above the baseline's: WARNING"},
    {"monitor.latency_p99.warning_ms", K_DBL, 0, 3600000, "100", "p99 processing latency: WARNING"},
    {"monitor.latency_p99.critical_ms", K_DBL, 0, 3600000, "500", "p99 processing latency: CRITICAL"},
    {"monitor.error_rate.warning", K_DBL, 0, 1, "0.01", "(dead-lettered + degraded) / all: WARNING"},
    {"monitor.error_rate.critical", K_DBL, 0, 1, "0.05", "(dead-lettered + degraded) / all: CRITICAL"},
    {"monitor.auc.warning", K_DBL, 0, 1, "0.05", "relative AUC drop below the baseline's: WARNING"},
    {"monitor.auc.critical", K_DBL, 0, 1, "0.1", "relative AUC drop below the baseline's: CRITICAL"},
    {"monitor.auc.window", K_INT, 1, 10000000, "5000", "labelled predictions in the rolling AUC"},
    {"monitor.auc.min_labels", K_INT, 1, 10000000, "500", "labels needed before AUC is checked"},
    {"monitor.hysteresis", K_DBL, 0, 0.99, "0.1", "a level is left only below threshold x (1 - this)"},
    {"monitor.fairness.feature", K_STR, 0, 0, "", "category-code feature defining groups (e.g. marital_code; empty = off)"},
    {"monitor.fairness.field", K_STR, 0, 0, "", "TransactionEvent field whose value defines groups (e.g. home; or set .feature; empty = off)"},
    {"monitor.fairness.warning", K_DBL, 0, 1, "0.8", "disparate impact (min/max approval rate) below which: WARNING"},
    {"monitor.fairness.min_group", K_INT, 1, 100000000, "30", "events a group needs in the window to count"},
    {"monitor.fairness.label_field", K_STR, 0, 0, "", "LabelEvent field naming the groups of TPR/FPR (e.g. group; empty = the decision's group)"},
    {"monitor.fairness.max_tpr_gap", K_DBL, 0, 1, "0.1", "TPR gap between groups (highest - lowest, labelled) above which: WARNING"},
    {"monitor.fairness.max_fpr_gap", K_DBL, 0, 1, "0.1", "FPR gap between groups (highest - lowest, labelled) above which: WARNING"},
    {"monitor.labels.topic", K_STR, 0, 0, "", "labels topic joined for the rolling AUC (empty = off)"},
    {"monitor.labels.group", K_STR, 0, 0, "", "consumer group of the labels (default <group.id>-labels)"},
    {"monitor.labels.ttl_s", K_INT, 1, 31536000, "604800", "label horizon: a prediction waits this long in Redis"},
    {"metrics.port", K_INT, 0, 65535, "0", "Prometheus /metrics, /healthz, /readyz port (0 = off)"},
    /* Confluent-compatible Schema Registry (common/io/registry.h); empty url =
     * schema ids from the local schemas/ids file. */
    {"schema.registry.url", K_STR, 0, 0, "",
     "registry base URL(s), comma-separated (empty: local schemas/ids)"},
    {"schema.registry.user", K_STR, 0, 0, "", "registry basic-auth user"},
    {"schema.registry.password", K_SECRET, 0, 0, "",
     "registry basic-auth password (env or file only)"},
    {"schema.registry.password_file", K_STR, 0, 0, "", "file holding the registry password"},
    {"schema.registry.ssl.ca.location", K_STR, 0, 0, "", "CA bundle for the registry's TLS"},
    {"schema.registry.ssl.certificate.location", K_STR, 0, 0, "",
     "client certificate (PEM) for mutual TLS"},
    {"schema.registry.ssl.key.location", K_STR, 0, 0, "", "client key (PEM) for mutual TLS"},
    {"schema.registry.ssl.verify", K_INT, 0, 1, "1", "verify the registry's certificate"},
    {"schema.registry.timeout_ms", K_INT, 1, 600000, "5000", "one registry request's timeout"},
    {"schema.registry.retries", K_INT, 0, 100, "3",
     "retries of a failed registry request (connection error, 5xx, 429)"},
    {"schema.registry.retry_backoff_ms", K_INT, 1, 60000, "100",
     "first back-off between registry retries (doubles, capped at 5 s)"},
    {"schema.registry.auto_register", K_INT, 0, 1, "1",
     "register output schemas under <topic>-value (0: look them up only)"},
    /* images worker (workers/images) */
    {"images.model", K_STR, 0, 0, "models/images/fundus_cnn.onnx",
     "ONNX model: outputs logits [N,5] (and a feature map [N,C,h,w] for CAMs)"},
    {"images.root", K_STR, 0, 0, "", "directory image paths are confined to (empty: none)"},
    {"images.allow_hosts", K_STR, 0, 0, "", "comma-separated hosts http(s) images may come from"},
    {"images.http_timeout_ms", K_INT, 1, 600000, "5000", "whole-transfer timeout of a fetch"},
    {"images.max_bytes", K_INT, 1, 1073741824, "20971520", "encoded image size limit"},
    {"images.max_pixels", K_INT, 1, 1e10, "50000000", "width x height limit (bombs)"},
    {"images.min_side", K_INT, 0, 100000, "64", "smaller images are ungradable: too_small"},
    {"images.max_scans", K_INT, 1, 100000, "64", "progressive JPEG scan limit"},
    {"images.jpeg_max_memory", K_INT, 1048576, 1e10, "268435456", "libjpeg decoder memory limit"},
    {"images.batch", K_INT, 1, 256, "8", "images per forward pass (when messages are waiting)"},
    {"images.take", K_INT, 1, 1024, "8",
     "messages the images worker takes per step when waiting; above images.batch the decode "
     "thread prepares the next forward pass while one runs"},
    {"images.referable_threshold", K_DBL, -1, 1, "-1",
     "P(grade >= 2) above which an image is referable; -1: the model's metadata"},
    {"images.cam_dir", K_STR, 0, 0, "",
     "directory of the CAM overlay PNGs of referable images, at the photograph's size "
     "(empty: none written)"},
    {"images.quality", K_STR, 0, 0, "models/images/quality.json",
     "image quality limits (streamml quality); failing images are ungradable: "
     "low_quality:<check> (empty: no checks)"},
    {"images.cam_features", K_STR, 0, 0, "",
     "one-output models: the value holding the last feature map (default: metadata)"},
    {"images.decode_thread", K_INT, 0, 1, "1",
     "1: images are loaded, decoded and preprocessed on a thread beside the forward passes"},
    {"images.models", K_STR, 0, 0, "",
     "model set a.onnx[:w],b.onnx[:w],... graded as one (weighted mean of the probabilities; "
     "empty: images.model alone)"},
    {"images.cam_model", K_STR, 0, 0, "",
     "member of images.models the CAM comes from (its path or file name; empty: the first)"},
    {"images.quality_baseline", K_STR, 0, 0, "",
     "quality values' monitoring baseline (streamml quality --monitor): PSI alerts on "
     "monitor.topic (empty: off)"},
    /* clickstream worker (workers/clickstream) */
    {"clickstream.model", K_STR, 0, 0, "models/clickstream/gru4rec.onnx",
     "GRU4Rec ONNX model (models/clickstream/train.py)"},
    {"clickstream.ranker", K_STR, 0, 0, "",
     "second-stage ONNX ranker of (session, candidate) pairs before MMR (empty: none; "
     "models/clickstream/ranker.onnx, docs/clickstream.md)"},
    {"clickstream.ranker_candidates", K_INT, 0, 5000, "100",
     "candidates per click the ranker re-scores, the most relevant by the GRU (0: the whole pool)"},
    {"clickstream.ranker_batch", K_INT, 1, 1000000, "8192",
     "(session, candidate) pairs per ranker run (at least one click's)"},
    {"clickstream.k", K_INT, 1, 64, "10", "items shown per click"},
    {"clickstream.candidates", K_INT, 1, 5000, "50",
     "top GRU scores re-ranked by MMR (the gru quota when clickstream.sources is empty)"},
    {"clickstream.sources", K_STR, 0, 0, "",
     "candidate sources by quota, name:quota,... of gru, covisit, popular, category, region, "
     "cart, new, content (docs/clickstream.md; empty: gru:<candidates>,covisit:<k>,popular:<k>)"},
    {"clickstream.mmr_candidates", K_INT, 0, 5000, "100",
     "with clickstream.sources: the most relevant candidates MMR re-ranks (0: all)"},
    {"clickstream.recent_items", K_INT, 1, 16, "3",
     "the category source: categories of the session's last this many items"},
    {"clickstream.catalog", K_STR, 0, 0, "", "item catalogue file, JSON lines or CSV (empty: none)"},
    {"clickstream.catalog_topic", K_STR, 0, 0, "",
     "compacted topic of catalogue records (schemas/catalog_item.avsc; empty: none)"},
    {"clickstream.catalog_max_items", K_INT, 0, 100000000, "0",
     "catalogue item ids are below this (0: twice the model's items)"},
    {"clickstream.new_item_age_s", K_INT, 0, 31536000, "604800",
     "catalogue items younger than this are new arrivals (and boosted)"},
    {"clickstream.new_item_epsilon", K_DBL, 0, 1, "0.1",
     "boosted exploration: share of each shown slot drawn from the boosted new items"},
    {"clickstream.new_item_impressions", K_INT, 0, 1e9, "1000",
     "a new item's boost ends after this many impressions (0: no boost)"},
    {"clickstream.lambda_diversity", K_DBL, 0, 1, "0.5",
     "MMR's weight of the diversity term: 0 = relevance only, 1 = diversity only"},
    {"clickstream.mmr_similarity", K_STR, 0, 0, "cosine",
     "MMR's item similarity: cosine | dot (product of the item embeddings)"},
    {"clickstream.ctr_horizon_s", K_INT, 1, 31536000, "1800",
     "a later click of the session on a shown item within this is a click-through"},
    {"clickstream.epsilon", K_DBL, 0, 1, "0.05", "exploration probability per shown slot"},
    {"clickstream.history", K_INT, 1, 64, "20", "last items kept per session (excluded from results)"},
    {"clickstream.session_ttl_s", K_INT, 1, 31536000, "1800", "session state expiry after inactivity"},
    {"clickstream.score_batch", K_INT, 1, 1024, "1024", "sessions scored together (one exact or IVF pass)"},
    {"clickstream.covisit", K_INT, 0, 1, "1", "1: co-visitation and trending counts in Redis"},
    {"clickstream.covisit_ttl_s", K_INT, 0, 31536000, "604800", "expiry of an item's co-visitation set"},
    {"clickstream.trending_half_life_s", K_DBL, 1, 1e9, "3600", "half life of trending counts"},
    {"clickstream.seed", K_INT, 0, 1e15, "0", "exploration seed (0: from the clock)"},
    {"clickstream.blas_threads", K_INT, 1, 16, "1", "OpenBLAS threads of the worker's sgemm"},
    {"clickstream.test_kill_between_writes", K_INT, 0, 1e15, "0",
     "tests only: SIGKILL itself after the counts of this many batches, before their states (0 = off)"},
    {"clickstream.search", K_STR, 0, 0, "ivf",
     "candidate search: exact (every item scored) | ivf (IVF index, common/models/ann.h)"},
    {"clickstream.ivf_lists", K_INT, 0, 65536, "0", "IVF clusters (0: sqrt of the catalog's items)"},
    {"clickstream.ivf_probe", K_INT, 1, 65536, "64", "IVF clusters probed per click"},
    {"clickstream.outcomes_topic", K_STR, 0, 0, "",
     "outcome records (impressions, click-throughs, carts, purchases) go here (empty: no outcomes)"},
    {"clickstream.outcome_horizon_s", K_INT, 1, 31536000, "1800",
     "a session's event on a shown item within this of the recommendation is its outcome"},
    {"clickstream.outcome_recs", K_INT, 1, 1000, "20",
     "recommendations remembered per session for the outcome join"},
    {"clickstream.experiment_unit", K_STR, 0, 0, "user",
     "experiment assignment by user (session id when anonymous) | session"},
    {"clickstream.arms", K_STR, 0, 0, "",
     "name:epsilon=E:lambda_diversity=L:ranker=PATH:model=PATH,... ranking and GRU of each experiment arm (others: the defaults)"},
    {"clickstream.test_kill_after_outcomes", K_INT, 0, 1e15, "0",
     "tests only: SIGKILL itself after the outcome join of this many non-empty batches, before publishing (0 = off)"},
    /* champion/challenger (common/streams/abtest.h) */
    {"experiment.id", K_STR, 0, 0, "", "experiment name on predictions (empty = no experiment)"},
    {"experiment.salt", K_STR, 0, 0, "", "assignment hash salt (empty = experiment.id)"},
    {"experiment.mode", K_STR, 0, 0, "split", "split | shadow (first variant served, others logged)"},
    {"experiment.variants", K_STR, 0, 0, "", "name:model_file:share,... (first = champion)"},
    {"experiment.baselines", K_STR, 0, 0, "",
     "name:baseline_file,... per-variant monitoring baselines (others: monitor.baseline)"},
    {"experiment.shadow_topic", K_STR, 0, 0, "predictions.transactions.shadow",
     "topic the challengers' predictions go to in shadow mode"},
    {"model.watch_ms", K_INT, 0, 86400000, "0",
     "poll the config and model files' mtime this often and reload on change (0 = SIGHUP only)"},
    {"log.level", K_STR, 0, 0, "info", "debug | info | warn | error"},
    {"log.format", K_STR, 0, 0, "auto", "auto | json | text"},
};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

#define CFG_VAL_MAX 1024
#define CFG_MAX_KAFKA 256

struct cfg {
    char *val[NKEYS];
    char *origin[NKEYS];
    struct cfg_kv kafka[CFG_MAX_KAFKA];
    size_t nkafka;
};

static int key_index(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* "; did you mean KEY?" for a name close to one of ours, else "". */
static const char *key_hint(const char *name, char *buf, size_t cap)
{
    static const char *names[NKEYS];
    const char *best;

    for (size_t i = 0; i < NKEYS; i++)
        names[i] = keys[i].name;
    best = sug_closest(name, names, NKEYS);
    if (!best)
        return "";
    snprintf(buf, cap, "; did you mean %s?", best);
    return buf;
}

/* A bare name in a file or after -X is a librdkafka property unless it is in
 * one of our namespaces (redis., model., ...) and close to one of our keys:
 * then it is our key mistyped (-X redis.prot=1), not kafka.redis.prot. */
static int looks_like_ours(const char *name)
{
    char hint[160];
    size_t ns = strcspn(name, ".");

    if (!name[ns])
        return 0;
    for (size_t i = 0; i < NKEYS; i++)
        if (strncmp(keys[i].name, name, ns) == 0 && keys[i].name[ns] == '.')
            return *key_hint(name, hint, sizeof(hint)) != '\0';
    return 0;
}

static int replace(char **slot, const char *s)
{
    char *d = strdup(s);

    if (!d)
        return ERR_NOMEM;
    free(*slot);
    *slot = d;
    return ERR_OK;
}

struct cfg *cfg_new(void)
{
    struct cfg *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    for (size_t i = 0; i < NKEYS; i++) {
        if (replace(&c->val[i], keys[i].def) || replace(&c->origin[i], "default")) {
            cfg_free(c);
            return NULL;
        }
    }
    return c;
}

void cfg_free(struct cfg *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < NKEYS; i++) {
        free(c->val[i]);
        free(c->origin[i]);
    }
    for (size_t i = 0; i < c->nkafka; i++) {
        free((char *)c->kafka[i].key);
        free((char *)c->kafka[i].value);
        free((char *)c->kafka[i].origin);
    }
    free(c);
}

/* Plain decimal only: strtod alone would take "0x10", "1e3" for an integer,
 * "010", "inf" and leading blanks, each a likely typo that silently means
 * something else. Integers: -?[0-9]+ without a leading zero; doubles: the
 * same with an optional fraction and exponent. */
static int plain_decimal(const char *v, int integer)
{
    const char *p = v, *digits;

    if (*p == '-')
        p++;
    if (p[0] == '0' && isdigit((unsigned char)p[1]))
        return 0;
    digits = p;
    while (isdigit((unsigned char)*p))
        p++;
    if (integer)
        return p > digits && *p == '\0';
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p) && p - 1 == digits)
            return 0;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (p == digits)
        return 0;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!isdigit((unsigned char)*p))
            return 0;
        while (isdigit((unsigned char)*p))
            p++;
    }
    return *p == '\0';
}

/* Bounded numeric check: the whole string must be a number within range. */
static int check_number(const struct key_def *k, const char *v, const char *origin,
                        struct err *e)
{
    char *end;
    double d;

    if (!plain_decimal(v, k->type == K_INT))
        return err_set(e, ERR_CONFIG, "config: %s=\"%s\" is not a number (plain decimal %s expected) (%s)",
                       k->name, v, k->type == K_INT ? "integer" : "number", origin);
    errno = 0;
    d = strtod(v, &end);
    if (end == v || *end || errno || !isfinite(d))
        return err_set(e, ERR_CONFIG, "config: %s=\"%s\" is not a number (%s)", k->name, v,
                       origin);
    if (d < k->min || d > k->max)
        return err_set(e, ERR_CONFIG, "config: %s=%s out of range [%g, %g] (%s)", k->name, v,
                       k->min, k->max, origin);
    return ERR_OK;
}

static int is_secret_kafka(const char *prop)
{
    return strstr(prop, "password") || strstr(prop, "secret") ||
           strcmp(prop, "ssl.key.pem") == 0 || strstr(prop, "sasl.oauthbearer.config");
}

static int set_kafka(struct cfg *c, const char *prop, const char *v, const char *origin,
                     struct err *e)
{
    size_t i;

    for (i = 0; i < c->nkafka; i++)
        if (strcmp(c->kafka[i].key, prop) == 0)
            break;
    if (i == CFG_MAX_KAFKA)
        return err_set(e, ERR_CONFIG, "config: more than %d kafka properties (%s)",
                       CFG_MAX_KAFKA, origin);
    if (i == c->nkafka) {
        c->kafka[i].key = strdup(prop);
        c->kafka[i].value = NULL;
        c->kafka[i].origin = NULL;
        if (!c->kafka[i].key)
            return err_set(e, ERR_NOMEM, "config: out of memory");
        c->nkafka++;
    }
    if (replace((char **)&c->kafka[i].value, v) || replace((char **)&c->kafka[i].origin, origin))
        return err_set(e, ERR_NOMEM, "config: out of memory");
    return ERR_OK;
}

/* A key that was renamed with its meaning changed: refused with the new
 * spelling, never guessed (an old file would silently flip its weight). */
static int renamed_key(const char *key, const char *value, const char *origin, struct err *e)
{
    char *end;
    double v;

    if (strcmp(key, "clickstream.mmr_lambda"))
        return ERR_OK;
    v = strtod(value, &end);
    if (*value && !*end && v >= 0 && v <= 1)
        return err_set(e, ERR_CONFIG,
                       "config: clickstream.mmr_lambda (relevance weight) was replaced by "
                       "clickstream.lambda_diversity, the diversity weight: write "
                       "clickstream.lambda_diversity=%g for mmr_lambda=%s (%s)",
                       1.0 - v, value, origin);
    return err_set(e, ERR_CONFIG,
                   "config: clickstream.mmr_lambda was replaced by "
                   "clickstream.lambda_diversity = 1 - mmr_lambda (%s)",
                   origin);
}

int cfg_set(struct cfg *c, const char *key, const char *value, const char *origin,
            struct err *e)
{
    int i;

    if (strlen(value) >= CFG_VAL_MAX)
        return err_set(e, ERR_CONFIG, "config: value of %s longer than %d bytes (%s)", key,
                       CFG_VAL_MAX, origin);
    if (strncmp(key, "kafka.", 6) == 0) {
        if (!key[6])
            return err_set(e, ERR_CONFIG, "config: empty kafka property name (%s)", origin);
        return set_kafka(c, key + 6, value, origin, e);
    }
    if (renamed_key(key, value, origin, e))
        return e->code;
    i = key_index(key);
    if (i < 0) {
        char hint[160];
        return err_set(e, ERR_CONFIG, "config: unknown key \"%s\" (%s)%s", key, origin,
                       key_hint(key, hint, sizeof(hint)));
    }
    if ((keys[i].type == K_INT || keys[i].type == K_DBL) &&
        check_number(&keys[i], value, origin, e))
        return e->code;
    if (replace(&c->val[i], value) || replace(&c->origin[i], origin))
        return err_set(e, ERR_NOMEM, "config: out of memory");
    return ERR_OK;
}

static char *trim(char *s)
{
    char *end;

    while (isspace((unsigned char)*s))
        s++;
    end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

/* Java client keys librdkafka does not know: serializer classes (streamml
 * encodes Avro itself) are skipped; sasl.jaas.config's PLAIN/SCRAM login
 * module becomes sasl.username / sasl.password. Returns 0 (not such a key),
 * 1 (handled) or -1 (refused, e set). */
static int java_key(struct cfg *c, const char *k, const char *v, const char *origin,
                    struct err *e)
{
    static const char *const skipped[] = {"key.serializer", "value.serializer",
                                          "key.deserializer", "value.deserializer",
                                          "client.dns.lookup"};
    char user[256], pass[CFG_VAL_MAX];

    for (size_t i = 0; i < sizeof(skipped) / sizeof(skipped[0]); i++)
        if (strcmp(k, skipped[i]) == 0) {
            log_debug("config: %s (%s) is a Java client setting: not used", k, origin);
            return 1;
        }
    if (strcmp(k, "sasl.jaas.config") != 0)
        return 0;
    {
        const char *u = strstr(v, "username=\""), *p = strstr(v, "password=\"");
        size_t un, pn;
        if (!u || !p || (!strstr(v, "PlainLoginModule") && !strstr(v, "ScramLoginModule"))) {
            err_set(e, ERR_CONFIG,
                    "config: sasl.jaas.config (%s): only the PLAIN and SCRAM login modules "
                    "with username=\"...\" password=\"...\" can be read; give "
                    "sasl.username and sasl.password instead", origin);
            return -1;
        }
        u += 10;
        p += 10;
        un = strcspn(u, "\"");
        pn = strcspn(p, "\"");
        if (un >= sizeof(user) || pn >= sizeof(pass) || !u[un] || !p[pn]) {
            err_set(e, ERR_CONFIG, "config: sasl.jaas.config (%s): unterminated value", origin);
            return -1;
        }
        snprintf(user, sizeof(user), "%.*s", (int)un, u);
        snprintf(pass, sizeof(pass), "%.*s", (int)pn, p);
        if (set_kafka(c, "sasl.username", user, origin, e) ||
            set_kafka(c, "sasl.password", pass, origin, e))
            return -1;
        return 1;
    }
}

/* One properties line; unknown non-kafka keys in a file are librdkafka
 * properties (Java client files carry bootstrap.servers etc. bare). */
static int load_line(struct cfg *c, char *line, const char *origin, struct err *e)
{
    char *k = trim(line), *sep, *v;

    if (!*k || *k == '#' || *k == '!')
        return ERR_OK;
    sep = k + strcspn(k, "=:");
    if (!*sep)
        return err_set(e, ERR_CONFIG, "config: expected key=value (%s)", origin);
    *sep = '\0';
    v = trim(sep + 1);
    k = trim(k);
    if (!*k)
        return err_set(e, ERR_CONFIG, "config: empty key (%s)", origin);
    if (renamed_key(k, v, origin, e))
        return e->code;
    if (key_index(k) < 0 && strncmp(k, "kafka.", 6) != 0 && !looks_like_ours(k)) {
        int j = java_key(c, k, v, origin, e);
        if (j)
            return j > 0 ? ERR_OK : e->code;
        return set_kafka(c, k, v, origin, e);
    }
    return cfg_set(c, k, v, origin, e);
}

int cfg_load_file(struct cfg *c, const char *path, struct err *e)
{
    char origin[300];
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    FILE *f = fopen(path, "r");
    int lineno = 0, rc = ERR_OK;

    if (!f)
        return err_set(e, ERR_CONFIG, "config: cannot open %s: %s", path, strerror(errno));
    /* getline gives the true length, so a NUL byte is told apart from a
     * long line (fgets could not: the line would look unterminated). */
    while (rc == ERR_OK && (n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        snprintf(origin, sizeof(origin), "%s:%d", path, lineno);
        if (memchr(line, '\0', (size_t)n))
            rc = err_set(e, ERR_CONFIG, "config: NUL byte in line (%s)", origin);
        else if ((size_t)n >= CFG_VAL_MAX + 256)
            rc = err_set(e, ERR_CONFIG, "config: line too long (%s)", origin);
        else
            rc = load_line(c, line, origin, e);
    }
    free(line);
    fclose(f);
    return rc;
}

static void env_name(const char *key, char *out, size_t cap)
{
    size_t o = (size_t)snprintf(out, cap, "STREAMML_");

    for (; *key && o + 1 < cap; key++)
        out[o++] = *key == '.' ? '_' : (char)toupper((unsigned char)*key);
    out[o] = '\0';
}

static int load_env_kafka(struct cfg *c, struct err *e)
{
    extern char **environ;
    static const char pfx[] = "STREAMML_KAFKA__";

    for (char **ep = environ; *ep; ep++) {
        char prop[256], origin[300];
        const char *eq = strchr(*ep, '=');
        size_t n;

        if (strncmp(*ep, pfx, sizeof(pfx) - 1) != 0 || !eq)
            continue;
        n = (size_t)(eq - *ep) - (sizeof(pfx) - 1);
        if (n == 0 || n >= sizeof(prop))
            continue;
        for (size_t i = 0; i < n; i++) {
            char ch = (*ep)[sizeof(pfx) - 1 + i];
            prop[i] = ch == '_' ? '.' : (char)tolower((unsigned char)ch);
        }
        prop[n] = '\0';
        snprintf(origin, sizeof(origin), "env %.*s", (int)(eq - *ep), *ep);
        if (set_kafka(c, prop, eq + 1, origin, e))
            return e->code;
    }
    return ERR_OK;
}

/* STREAMML_* variables that are not configuration keys: the config file, the
 * tests' and the compose file's own (STREAMML_TEST_* as a prefix). */
static const char *const env_other[] = {"STREAMML_CONFIG", "STREAMML_BUILD",
                                        "STREAMML_BROKER_DEBUG", "STREAMML_KEEP_TEST_DIR",
                                        "STREAMML_IMAGE"};

/* A STREAMML_ variable that names no key is a typo, refused as on the command
 * line (STREAMML_REDIS_PROT would otherwise be silently ignored). */
static int check_env_names(struct err *e)
{
    extern char **environ;
    static char names[NKEYS][128];
    static const char *cands[NKEYS];

    for (size_t i = 0; i < NKEYS; i++) {
        env_name(keys[i].name, names[i], sizeof(names[i]));
        cands[i] = names[i];
    }
    for (char **ep = environ; *ep; ep++) {
        char var[128];
        size_t n = strcspn(*ep, "="), i;
        int known = 0;

        if (strncmp(*ep, "STREAMML_", 9) != 0 || strncmp(*ep, "STREAMML_KAFKA__", 16) == 0 ||
            strncmp(*ep, "STREAMML_TEST_", 14) == 0 || n >= sizeof(var))
            continue;
        memcpy(var, *ep, n);
        var[n] = '\0';
        for (i = 0; i < NKEYS && !known; i++)
            known = strcmp(var, names[i]) == 0;
        for (i = 0; i < sizeof(env_other) / sizeof(env_other[0]) && !known; i++)
            known = strcmp(var, env_other[i]) == 0;
        if (!known) {
            const char *best = sug_closest(var, cands, NKEYS);
            char hint[200] = "";
            for (i = 0; best && i < NKEYS; i++)
                if (cands[i] == best)
                    snprintf(hint, sizeof(hint), "; did you mean %s (%s)?", best, keys[i].name);
            return err_set(e, ERR_CONFIG,
                           "config: environment variable %s names no configuration key%s "
                           "(librdkafka properties: STREAMML_KAFKA__<PROP>)", var, hint);
        }
    }
    return ERR_OK;
}

int cfg_load_env(struct cfg *c, struct err *e)
{
    if (getenv("STREAMML_CLICKSTREAM_MMR_LAMBDA")) /* renamed: the conversion, not "unknown" */
        return renamed_key("clickstream.mmr_lambda", getenv("STREAMML_CLICKSTREAM_MMR_LAMBDA"),
                           "env STREAMML_CLICKSTREAM_MMR_LAMBDA", e);
    if (check_env_names(e))
        return e->code;
    for (size_t i = 0; i < NKEYS; i++) {
        char name[128], origin[160];
        const char *v;

        env_name(keys[i].name, name, sizeof(name));
        v = getenv(name);
        if (!v)
            continue;
        snprintf(origin, sizeof(origin), "env %s", name);
        if (cfg_set(c, keys[i].name, v, origin, e))
            return e->code;
    }
    return load_env_kafka(c, e);
}

int cfg_set_arg(struct cfg *c, const char *kv, struct err *e)
{
    char key[256];
    const char *eq = strchr(kv, '=');
    size_t n;
    int i;

    if (!eq || eq == kv)
        return err_set(e, ERR_CONFIG, "config: -X %s: expected key=value", kv);
    n = (size_t)(eq - kv);
    if (n >= sizeof(key))
        return err_set(e, ERR_CONFIG, "config: -X key too long");
    memcpy(key, kv, n);
    key[n] = '\0';
    i = key_index(key);
    if ((i >= 0 && keys[i].type == K_SECRET) ||
        (i < 0 && is_secret_kafka(strncmp(key, "kafka.", 6) == 0 ? key + 6 : key)))
        return err_set(e, ERR_CONFIG,
                       "config: -X %s: secrets are not accepted on the command line "
                       "(use the environment or a *_file key)", key);
    /* As in kcat, a bare -X property is a librdkafka property. */
    if (i < 0 && strncmp(key, "kafka.", 6) != 0 && !looks_like_ours(key))
        return set_kafka(c, key, eq + 1, "-X", e);
    return cfg_set(c, key, eq + 1, "-X", e);
}

static int read_secret_file(struct cfg *c, const char *path, const char *key, struct err *e)
{
    char buf[CFG_VAL_MAX], origin[300];
    FILE *f = fopen(path, "r");
    size_t n;

    if (!f)
        return err_set(e, ERR_CONFIG, "config: cannot open %s_file %s: %s", key, path,
                       strerror(errno));
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    snprintf(origin, sizeof(origin), "file %s", path);
    return cfg_set(c, key, buf, origin, e);
}

/* Default data paths (schemas/, models/...) are relative to the repository
 * or the image's working directory. Run from anywhere else, a default that is
 * not found there is looked for beside the program (the repository when it is
 * build/streamml, or build/sanitize/streamml and the like for a build variant
 * (make sanitize: `streamml produce` run from outside the repository found no
 * schemas), PREFIX/share/streamml when installed) and in the installed data
 * directory /usr/share/streamml. A path the user gave is left as given. */
static int find_data_paths(struct cfg *c, struct err *e)
{
    static const char *const data_keys[] = {"schemas.dir", "model.gbdt", "model.scorecard",
                                            "images.model", "clickstream.model"};
    char exe[4096], dirs[4][4200], cand[8400], origin[4300];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    int nd = 0;

    if (n > 0) {
        exe[n] = '\0';
        *strrchr(exe, '/') = '\0';
        snprintf(dirs[nd++], sizeof(dirs[0]), "%s/..", exe);
        snprintf(dirs[nd++], sizeof(dirs[0]), "%s/../share/streamml", exe);
        snprintf(dirs[nd++], sizeof(dirs[0]), "%s/../..", exe);
    }
    snprintf(dirs[nd++], sizeof(dirs[0]), "/usr/share/streamml");
    for (size_t k = 0; k < sizeof(data_keys) / sizeof(data_keys[0]); k++) {
        int i = key_index(data_keys[k]);
        const char *v = c->val[i];
        if (strcmp(c->origin[i], "default") != 0 || !*v || *v == '/' || access(v, F_OK) == 0)
            continue;
        for (int d = 0; d < nd; d++) {
            char *real;
            snprintf(cand, sizeof(cand), "%s/%s", dirs[d], v);
            if (access(cand, F_OK) != 0 || !(real = realpath(cand, NULL)))
                continue;
            snprintf(origin, sizeof(origin), "default, found under %.4000s", dirs[d]);
            if (replace(&c->val[i], real) || replace(&c->origin[i], origin)) {
                free(real);
                return err_set(e, ERR_NOMEM, "config: out of memory");
            }
            free(real);
            break;
        }
    }
    return ERR_OK;
}

int cfg_finish(struct cfg *c, struct err *e)
{
    const char *pf = cfg_str(c, "redis.password_file");
    const char *be = cfg_str(c, "state.backend");

    if (find_data_paths(c, e))
        return e->code;
    if (*pf && read_secret_file(c, pf, "redis.password", e))
        return e->code;
    if (*cfg_str(c, "schema.registry.password_file") &&
        read_secret_file(c, cfg_str(c, "schema.registry.password_file"),
                         "schema.registry.password", e))
        return e->code;
    if (strcmp(be, "redis") != 0 && strcmp(be, "memory") != 0)
        return err_set(e, ERR_CONFIG, "config: state.backend=\"%s\" must be redis or memory (%s)",
                       be, cfg_origin(c, "state.backend"));
    if (strcmp(cfg_str(c, "clickstream.search"), "exact") != 0 &&
        strcmp(cfg_str(c, "clickstream.search"), "ivf") != 0)
        return err_set(e, ERR_CONFIG, "config: clickstream.search=\"%s\" must be exact or ivf (%s)",
                       cfg_str(c, "clickstream.search"), cfg_origin(c, "clickstream.search"));
    if (log_level_parse(cfg_str(c, "log.level")) < 0)
        return err_set(e, ERR_CONFIG, "config: log.level=\"%s\" is not debug|info|warn|error (%s)",
                       cfg_str(c, "log.level"), cfg_origin(c, "log.level"));
    if (cfg_double(c, "decision.review_threshold") > cfg_double(c, "decision.decline_threshold"))
        return err_set(e, ERR_CONFIG,
                       "config: decision.review_threshold > decision.decline_threshold");
    return ERR_OK;
}

int cfg_load_standard(struct cfg *c, const char *config_path, char **xargs, int nx,
                      struct err *e)
{
    const char *path = config_path ? config_path : getenv("STREAMML_CONFIG");

    if (path && *path && cfg_load_file(c, path, e))
        return e->code;
    if (cfg_load_env(c, e))
        return e->code;
    for (int i = 0; i < nx; i++)
        if (cfg_set_arg(c, xargs[i], e))
            return e->code;
    return cfg_finish(c, e);
}

const char *cfg_str(const struct cfg *c, const char *key)
{
    int i = key_index(key);

    return i < 0 ? "" : c->val[i];
}

/* Values of numeric keys were range-checked when set. */
long long cfg_int(const struct cfg *c, const char *key)
{
    return strtoll(cfg_str(c, key), NULL, 10);
}

double cfg_double(const struct cfg *c, const char *key)
{
    return strtod(cfg_str(c, key), NULL);
}

const char *cfg_origin(const struct cfg *c, const char *key)
{
    int i = key_index(key);

    return i < 0 ? "" : c->origin[i];
}

const struct cfg_kv *cfg_kafka(const struct cfg *c, size_t *n)
{
    *n = c->nkafka;
    return c->kafka;
}

/* Copies v to out with the password of every scheme://user:pass@ masked,
 * so URLs with credentials (schema.registry.url) never reach a dump. */
static void mask_userinfo(const char *v, char *out, size_t cap)
{
    size_t o = 0;

    while (*v && o + 1 < cap) {
        const char *s = strstr(v, "://"), *at, *colon, *end;

        if (!s) {
            o += (size_t)snprintf(out + o, cap - o, "%s", v);
            break;
        }
        s += 3;
        end = s + strcspn(s, "/,? ");
        at = memchr(s, '@', (size_t)(end - s));
        colon = at ? memchr(s, ':', (size_t)(at - s)) : NULL;
        if (colon)
            o += (size_t)snprintf(out + o, cap - o, "%.*s********", (int)(colon + 1 - v), v);
        else
            o += (size_t)snprintf(out + o, cap - o, "%.*s", (int)(end - v), v);
        if (o >= cap)
            break;
        v = colon ? at : end;
    }
    out[o < cap ? o : cap - 1] = '\0';
}

void cfg_dump(const struct cfg *c, FILE *out)
{
    char shown[CFG_VAL_MAX + 16];

    for (size_t i = 0; i < NKEYS; i++) {
        int mask = keys[i].type == K_SECRET && c->val[i][0];
        mask_userinfo(c->val[i], shown, sizeof(shown));
        fprintf(out, "%-28s = %-28s # %s\n", keys[i].name, mask ? "********" : shown,
                c->origin[i]);
    }
    for (size_t i = 0; i < c->nkafka; i++) {
        char name[300];
        snprintf(name, sizeof(name), "kafka.%s", c->kafka[i].key);
        mask_userinfo(c->kafka[i].value, shown, sizeof(shown));
        fprintf(out, "%-28s = %-28s # %s\n", name,
                is_secret_kafka(c->kafka[i].key) ? "********" : shown, c->kafka[i].origin);
    }
}

void cfg_help(FILE *out)
{
    fprintf(out, "Configuration keys (defaults < --config FILE < STREAMML_* env < -X):\n");
    for (size_t i = 0; i < NKEYS; i++) {
        char name[128];
        env_name(keys[i].name, name, sizeof(name));
        fprintf(out, "  %-28s default \"%s\"  (%s)\n      %s\n", keys[i].name, keys[i].def,
                name, keys[i].help);
    }
    fprintf(out, "  kafka.<property>             any librdkafka property, passed through\n"
                 "      (env STREAMML_KAFKA__<PROP>, '_' for '.'; -X <property>=<value>)\n");
}
