/* tools/streamml/report_page.h: the parts of `streamml report`'s page a credit
 * analyst reads first (prefix rpage_): which model, which version and which
 * dates the page is about; the gates; the score-band table and the
 * score distribution; PSI per feature sorted and coloured by threshold.
 *
 * Score bands: when a scorecard is deployed (every joined prediction has
 * points, score > 0), bands of RPAGE_POINTS_WIDTH points from the lowest
 * (riskiest) up; otherwise ten bands of P(bad), [0, 0.1) .. [0.9, 1],
 * from the highest (riskiest) down. Per band: count, bads, bad rate, and
 * from the riskiest band on the cumulative count (and its share of all)
 * and the cumulative share of all bads (the gains table's "bad share").
 *
 * PSI colours: below 0.1 stable, 0.1 to 0.2 moderate shift, 0.2 and above
 * significant shift (the monitor's monitor.psi.* defaults).
 */
#ifndef STREAMML_REPORT_PAGE_H
#define STREAMML_REPORT_PAGE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define RPAGE_MAX_MODELS 8
#define RPAGE_MAX_BANDS 32
#define RPAGE_POINTS_WIDTH 50
#define RPAGE_PSI_WARN 0.1
#define RPAGE_PSI_CRIT 0.2

/* Models and versions the joined predictions came from, and their event
 * time range. */
struct rpage_models {
    char name[RPAGE_MAX_MODELS][64], version[RPAGE_MAX_MODELS][32];
    size_t count[RPAGE_MAX_MODELS], n, other; /* other: rows past the table */
    int64_t tmin, tmax;                       /* ms; tmin > tmax: none seen */
};

/* s as HTML text or attribute value (< > & " escaped). */
void rpage_escape(FILE *o, const char *s);

void rpage_models_init(struct rpage_models *m);
/* One prediction: name/version may be NULL (unknown), t_ms < 0 unknown. */
void rpage_models_add(struct rpage_models *m, const char *name, const char *version, int64_t t_ms);
/* The page's header block: models with versions and counts, date range (UTC). */
void rpage_header_html(FILE *o, const struct rpage_models *m);

struct rpage_gate {
    const char *text;
    double value;
    int pass;
};
/* Gate table (id="gates"); a note when no gate was given. */
void rpage_gates_html(FILE *o, const struct rpage_gate *g, size_t n);

/* PSI table (id="psi"): features sorted by PSI, largest first (NaN last),
 * each row with class psi-ok, psi-warn or psi-crit; the score's PSI first. */
void rpage_psi_html(FILE *o, const char *const *names, const double *psi, size_t n,
                    double score_psi, size_t rows);

struct rpage_band {
    double lo, hi; /* points [lo, hi), or P(bad) [lo, hi) ([0.9, 1] for the last) */
    size_t n, bad;
};

struct rpage_bands {
    int points; /* 1: scorecard points, 0: P(bad) bands */
    int width;  /* points per band */
    size_t nb;  /* bands, riskiest first */
    struct rpage_band b[RPAGE_MAX_BANDS];
    size_t n, bad; /* totals */
};

/* Bands of the n joined rows: p (P(bad)), pts (points, <= 0: none), y
 * (1 bad, 0 good). */
void rpage_bands_compute(const double *p, const int *pts, const int *y, size_t n,
                         struct rpage_bands *b);
/* The table (id="bands") and the distribution chart (SVG). */
void rpage_bands_html(FILE *o, const struct rpage_bands *b);
/* One summary line per band on stdout. */
void rpage_bands_summary(const struct rpage_bands *b);

#endif
