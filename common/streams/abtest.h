/* common/streams/abtest.h: champion/challenger experiments (prefix ab_).
 *
 * An experiment names variants, each with its own model file and a share
 * of the traffic, and an experiment salt. Configuration (common/base/cfg.h):
 *
 *   experiment.id        name carried by every prediction ("" = no experiment)
 *   experiment.salt      mixed into the assignment hash (default: the id)
 *   experiment.mode      split  (each user is served by its assigned variant)
 *                        shadow (the first variant, the champion, is served;
 *                        every other variant is scored too and its prediction
 *                        logged to experiment.shadow_topic)
 *   experiment.variants  name:model_file:share,... (first = champion/control);
 *                        shares are fractions summing to 1 (+-1e-6)
 *   experiment.baselines name:baseline_file,... monitoring baselines of
 *                        variants (the others: monitor.baseline)
 *
 * Sticky assignment, the same on every machine, restart and language:
 *
 *   h = first 8 bytes, big-endian, of SHA-256(salt ":" id)   (UTF-8 bytes)
 *   u = (h >> 11) / 2^53                                      (exact, in [0,1))
 *   variant = the first i with u < share_0 + ... + share_i    (sums in order,
 *             in doubles; the last cumulative share is 1)
 *
 * which Python reproduces with
 *   (int.from_bytes(hashlib.sha256(f"{salt}:{uid}".encode()).digest()[:8], "big") >> 11) / 2**53
 *
 * Also here: the statistics `streamml abtest` reports (Welch's t-test and
 * the Student t distribution through the regularized incomplete beta
 * function, checked against scipy), and the serving side used by the
 * transactions worker (one txn scorer per variant, smoke-checked before it
 * may serve, swapped whole on a reload).
 *
 * All of it is used by one thread; nothing here keeps global state.
 */
#ifndef STREAMML_ABTEST_H
#define STREAMML_ABTEST_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "err.h"
#include "event.h"

#define AB_MAX_VARIANTS 8
#define AB_NAME_MAX 32 /* a variant name, with its NUL */
#define AB_ID_MAX 64   /* experiment id, with its NUL */
#define AB_SALT_MAX 256
#define AB_PATH_MAX 512

enum ab_mode { AB_SPLIT = 0, AB_SHADOW = 1 };

/* ---- assignment (pure) ---- */

/* First 8 bytes (big-endian) of SHA-256 of salt ":" id. */
uint64_t ab_hash(const char *salt, const char *id);
/* ab_hash mapped to [0, 1): (h >> 11) / 2^53. */
double ab_unit(const char *salt, const char *id);

struct ab;

/* An experiment from its parts; variants as in experiment.variants. NULL
 * with the culprit in *e (ERR_CONFIG): bad name, duplicate, share not in
 * [0,1], shares not summing to 1, too many variants, empty model file. */
struct ab *ab_open_spec(const char *id, const char *salt, const char *mode, const char *variants,
                        struct err *e);
/* The experiment of a configuration; experiment.id empty: NULL with
 * e->code == ERR_OK (no experiment). */
struct ab *ab_open_cfg(const struct cfg *c, struct err *e);
void ab_close(struct ab *a); /* NULL-safe */

const char *ab_id(const struct ab *a);
const char *ab_salt(const struct ab *a);
enum ab_mode ab_mode(const struct ab *a);
size_t ab_num_variants(const struct ab *a);
const char *ab_variant_name(const struct ab *a, size_t i);
const char *ab_variant_model(const struct ab *a, size_t i);
double ab_variant_share(const struct ab *a, size_t i);
/* Variant i's monitoring baseline file, "" for monitor.baseline. */
const char *ab_variant_baseline(const struct ab *a, size_t i);
/* experiment.baselines ("name:file,...") into a; ERR_CONFIG naming an
 * unknown variant or a malformed item. */
int ab_set_baselines(struct ab *a, const char *spec, struct err *e);
/* Index of the variant that serves id (split: by the hash; shadow: 0). */
size_t ab_assign(const struct ab *a, const char *id);
/* Index of the split assignment whatever the mode. */
size_t ab_assign_split(const struct ab *a, const char *id);

/* ---- statistics (pure) ---- */

/* Regularized incomplete beta I_x(a, b), a, b > 0, x in [0, 1]: Lentz's
 * continued fraction (DLMF 8.17.22), evaluated at x or, through
 * I_x(a,b) = 1 - I_{1-x}(b,a), where it converges fast. NaN outside the
 * domain. */
double ab_betainc(double a, double b, double x);
/* Student t CDF with df > 0 degrees of freedom (df may be fractional):
 * P(T <= t) = 1 - I_{df/(df+t^2)}(df/2, 1/2) / 2 for t >= 0, symmetric. */
double ab_t_cdf(double t, double df);
/* Its inverse: q in (0, 1) -> t (bisection on ab_t_cdf to 1e-12). */
double ab_t_ppf(double q, double df);

/* Welch's unequal-variance t-test of b's mean against a's (the same as
 * scipy.stats.ttest_ind(b, a, equal_var=False)): t, Welch-Satterthwaite df,
 * two-sided p, and the confidence interval of mean(b) - mean(a) at level
 * conf: diff +- t_ppf((1 + conf) / 2, df) * se. ERR_INVALID when a group
 * has fewer than 2 values or both variances are 0. */
struct ab_welch {
    double mean_a, mean_b, diff, se, t, df, p, lo, hi;
};
int ab_welch_test(const double *a, size_t na, const double *b, size_t nb, double conf,
                  struct ab_welch *out, struct err *e);

/* A ratio metric over randomisation units (users): value = sum x / sum n
 * (CTR: click-throughs over impressions per user; revenue per user: n = 1
 * each), its standard error by the delta method with the units as the
 * independent draws (Var(R) ~ (s_x^2 - 2 R s_xn + R^2 s_n^2) / (N nbar^2),
 * sample (co)variances over the N units), and the interval value +-
 * t_ppf((1 + conf) / 2, N - 1) * se. ERR_INVALID when N < 2 or sum n is 0. */
struct ab_ratio {
    double value, se, lo, hi;
    size_t units;
};
int ab_ratio_delta(const double *x, const double *n, size_t units, double conf,
                   struct ab_ratio *out, struct err *e);

/* ---- serving (the transactions worker) ---- */

struct ab_serving;

/* The experiment of c (or none: one scorer from model.gbdt, served with
 * empty experiment id and variant) with a txn scorer per variant, each
 * smoke-checked (ab_smoke). NULL with the culprit in *e. Nothing of c is
 * kept: c may be freed after. */
struct ab_serving *ab_serving_open(const struct cfg *c, struct err *e);
void ab_serving_close(struct ab_serving *s); /* NULL-safe */
struct metrics;
/* Every variant's explanations count in m (txn_scorer_set_metrics); the
 * worker calls it once after metrics_open. m NULL: not counted. */
void ab_serving_set_metrics(struct ab_serving *s, struct metrics *m);

/* The experiment (NULL: none). */
const struct ab *ab_serving_experiment(const struct ab_serving *s);
/* Variants served (1 without an experiment) and variant i's name ("" without). */
size_t ab_serving_num_variants(const struct ab_serving *s);
const char *ab_serving_variant(const struct ab_serving *s, size_t i);
const char *ab_serving_version(const struct ab_serving *s);
/* Variant i's baseline file ("" = monitor.baseline). */
const char *ab_serving_baseline(const struct ab_serving *s, size_t i);
/* Logs the models served (the experiment and its variants, if any). */
void ab_serving_log(const struct ab_serving *s, const struct cfg *c);
/* Files the serving set was loaded from (for a file watch): n <= cap
 * paths written, returns how many there are. */
size_t ab_serving_files(const struct ab_serving *s, const char **paths, size_t cap);

/* Scores x for user_id with its assigned variant into p (p's model part,
 * experiment_id and variant). Returns the decision (0..2); *variant =
 * the variant index (for per-variant monitoring). */
int ab_serving_score(struct ab_serving *s, const char *user_id, const float *x,
                     struct txn_prediction *p, size_t *variant);
/* ab_serving_score for n rows x[n][feat_txn_dim()] into p[0..n) (ids already
 * set: p[i].user_id picks the variant), variant[i] for each. Without an
 * experiment the trees are walked a block of rows at a time
 * (txn_score_batch, equal to txn_score bit for bit); with one, row by row.
 * The decision of row i is txn_decision_index(p[i].decision). */
void ab_serving_score_batch(struct ab_serving *s, const float *x, size_t n,
                            struct txn_prediction *p, size_t *variant);
/* Shadow mode: the number of challengers scored beside the champion (0 in
 * split mode) and challenger k's prediction (k in 1..n), p's ids kept. */
size_t ab_serving_shadows(const struct ab_serving *s);
void ab_serving_score_shadow(struct ab_serving *s, size_t k, const float *x,
                             struct txn_prediction *p);

/* A stamp of the files' mtimes (ns) and sizes (a missing file counts too):
 * a changed stamp means a file changed. */
uint64_t ab_files_stamp(const char *const *paths, size_t n);

/* Smoke check of a scorer: a few fixed feature rows (all missing, all
 * zero, and rows built from synthetic events by the feature module) must
 * score finite probabilities in [0, 1]. (Feature names are matched to the
 * feature set when the scorer opens.) ERR_INVALID naming the row. */
struct txn_scorer;
int ab_smoke(struct txn_scorer *sc, const char *what, struct err *e);

#endif
