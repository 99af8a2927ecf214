/* tools/streamml/report_page.c: header, gates, score bands and PSI of `streamml
 * report`'s page (see report_page.h). */
#include "report_page.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void rpage_escape(FILE *o, const char *s)
{
    for (; *s; s++) {
        if (*s == '<')
            fputs("&lt;", o);
        else if (*s == '>')
            fputs("&gt;", o);
        else if (*s == '&')
            fputs("&amp;", o);
        else if (*s == '"')
            fputs("&quot;", o);
        else
            fputc(*s, o);
    }
}

/* ---- models and dates ---- */

void rpage_models_init(struct rpage_models *m)
{
    memset(m, 0, sizeof(*m));
    m->tmin = INT64_MAX;
    m->tmax = INT64_MIN;
}

void rpage_models_add(struct rpage_models *m, const char *name, const char *version, int64_t t_ms)
{
    size_t k = 0;

    name = name && *name ? name : "unknown model";
    version = version && *version ? version : "?";
    while (k < m->n && (strcmp(m->name[k], name) != 0 || strcmp(m->version[k], version) != 0))
        k++;
    if (k == m->n && m->n < RPAGE_MAX_MODELS) {
        snprintf(m->name[k], sizeof(m->name[k]), "%s", name);
        snprintf(m->version[k], sizeof(m->version[k]), "%s", version);
        m->n++;
    }
    if (k < m->n)
        m->count[k]++;
    else
        m->other++;
    if (t_ms >= 0) {
        m->tmin = t_ms < m->tmin ? t_ms : m->tmin;
        m->tmax = t_ms > m->tmax ? t_ms : m->tmax;
    }
}

static void utc(char *out, size_t cap, int64_t ms)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;

    if (!gmtime_r(&s, &tm) || !strftime(out, cap, "%Y-%m-%d %H:%M", &tm))
        snprintf(out, cap, "%lld ms", (long long)ms);
}

void rpage_header_html(FILE *o, const struct rpage_models *m)
{
    char a[32], b[32];

    fputs("<table class=\"head\" id=\"model\">\n<tr><th>model</th><td>", o);
    for (size_t k = 0; k < m->n; k++) {
        fputs(k ? "<br>" : "", o);
        fputs("<b>", o);
        rpage_escape(o, m->name[k]);
        fputs("</b> version <b>", o);
        rpage_escape(o, m->version[k]);
        fprintf(o, "</b> (%zu predictions)", m->count[k]);
    }
    if (m->other)
        fprintf(o, "<br>%zu predictions from further models", m->other);
    if (!m->n)
        fputs("not named in the predictions", o);
    fputs("</td></tr>\n<tr><th>event dates (UTC)</th><td id=\"dates\">", o);
    if (m->tmin <= m->tmax) {
        utc(a, sizeof(a), m->tmin);
        utc(b, sizeof(b), m->tmax);
        fprintf(o, "%s to %s", a, b);
    } else {
        fputs("no event_time in the predictions", o);
    }
    fputs("</td></tr>\n</table>\n", o);
}

/* ---- gates ---- */

void rpage_gates_html(FILE *o, const struct rpage_gate *g, size_t n)
{
    size_t failed = 0;

    for (size_t i = 0; i < n; i++)
        failed += !g[i].pass;
    fputs("<h2>Gates</h2>\n", o);
    if (!n) {
        fputs("<p>No gate given (--gate).</p>\n", o);
        return;
    }
    fprintf(o, "<p class=\"%s\">%zu of %zu gates passed%s</p>\n", failed ? "fail" : "pass",
            n - failed, n, failed ? ": the model does not pass" : "");
    fputs("<table id=\"gates\"><tr><th>gate</th><th>value</th><th>result</th></tr>\n", o);
    for (size_t i = 0; i < n; i++) {
        fputs("<tr><td>", o);
        rpage_escape(o, g[i].text);
        if (isnan(g[i].value))
            fputs("</td><td>n/a", o);
        else
            fprintf(o, "</td><td>%.6f", g[i].value);
        fprintf(o, "</td><td class=\"%s\">%s</td></tr>\n", g[i].pass ? "pass" : "fail",
                g[i].pass ? "pass" : "FAIL");
    }
    fputs("</table>\n", o);
}

/* ---- PSI ---- */

struct psi_row {
    const char *name;
    double v;
};

static int cmp_psi(const void *a, const void *b)
{
    double x = ((const struct psi_row *)a)->v, y = ((const struct psi_row *)b)->v;

    if (isnan(x) || isnan(y))
        return isnan(x) - isnan(y); /* NaN last */
    return x < y ? 1 : x > y ? -1 : 0;
}

static void psi_tr(FILE *o, const char *name, double v)
{
    const char *cls = isnan(v)              ? "psi-na"
                      : v >= RPAGE_PSI_CRIT ? "psi-crit"
                      : v >= RPAGE_PSI_WARN ? "psi-warn"
                                            : "psi-ok";
    const char *what = isnan(v)              ? "not measured"
                       : v >= RPAGE_PSI_CRIT ? "significant shift"
                       : v >= RPAGE_PSI_WARN ? "moderate shift"
                                             : "stable";

    fprintf(o, "<tr class=\"%s\"><td>", cls);
    rpage_escape(o, name);
    if (isnan(v))
        fprintf(o, "</td><td>n/a</td><td>%s</td></tr>\n", what);
    else
        fprintf(o, "</td><td>%.6f</td><td>%s</td></tr>\n", v, what);
}

void rpage_psi_html(FILE *o, const char *const *names, const double *psi, size_t n,
                    double score_psi, size_t rows)
{
    struct psi_row *r = calloc(n + 1, sizeof(*r));

    fprintf(o,
            "<h2>Population stability (PSI) against the training baseline</h2>\n<p>%zu rows "
            "with features. Below %.1f stable, %.1f to %.1f moderate shift, %.1f and above "
            "significant shift; largest first.</p>\n<table id=\"psi\"><tr><th>feature</th>"
            "<th>PSI</th><th>reading</th></tr>\n",
            rows, RPAGE_PSI_WARN, RPAGE_PSI_WARN, RPAGE_PSI_CRIT, RPAGE_PSI_CRIT);
    psi_tr(o, "(model score)", score_psi);
    if (r) {
        for (size_t i = 0; i < n; i++)
            r[i] = (struct psi_row){names[i], psi[i]};
        qsort(r, n, sizeof(*r), cmp_psi);
        for (size_t i = 0; i < n; i++)
            psi_tr(o, r[i].name, r[i].v);
    }
    fputs("</table>\n", o);
    free(r);
}

/* ---- score bands ---- */

static void points_bands(const int *pts, const int *y, size_t n, struct rpage_bands *b)
{
    int lo = pts[0], hi = pts[0], w = RPAGE_POINTS_WIDTH;

    for (size_t i = 1; i < n; i++) {
        lo = pts[i] < lo ? pts[i] : lo;
        hi = pts[i] > hi ? pts[i] : hi;
    }
    lo = lo / w * w;
    while ((hi - lo) / w + 1 > RPAGE_MAX_BANDS)
        w *= 2;
    b->width = w;
    b->nb = (size_t)((hi - lo) / w + 1);
    for (size_t k = 0; k < b->nb; k++) {
        b->b[k].lo = lo + (double)k * w;
        b->b[k].hi = b->b[k].lo + w;
    }
    for (size_t i = 0; i < n; i++) {
        size_t k = (size_t)((pts[i] - lo) / w);
        b->b[k].n++;
        b->b[k].bad += y[i] != 0;
    }
}

static void prob_bands(const double *p, const int *y, size_t n, struct rpage_bands *b)
{
    b->nb = 10;
    for (size_t k = 0; k < 10; k++) { /* riskiest first: [0.9, 1] is band 0 */
        b->b[k].lo = (9 - (double)k) / 10;
        b->b[k].hi = (10 - (double)k) / 10;
    }
    for (size_t i = 0; i < n; i++) {
        int d = (int)(p[i] * 10);
        size_t k = (size_t)(9 - (d > 9 ? 9 : d < 0 ? 0 : d));
        b->b[k].n++;
        b->b[k].bad += y[i] != 0;
    }
}

void rpage_bands_compute(const double *p, const int *pts, const int *y, size_t n,
                         struct rpage_bands *b)
{
    memset(b, 0, sizeof(*b));
    b->points = n > 0;
    for (size_t i = 0; i < n; i++)
        b->points &= pts[i] > 0;
    b->n = n;
    for (size_t i = 0; i < n; i++)
        b->bad += y[i] != 0;
    if (b->points)
        points_bands(pts, y, n, b);
    else if (n)
        prob_bands(p, y, n, b);
}

static double share(size_t a, size_t b)
{
    return b ? (double)a / (double)b : NAN;
}

static void band_label(char *out, size_t cap, const struct rpage_bands *b, size_t k)
{
    if (b->points)
        snprintf(out, cap, "%.0f-%.0f", b->b[k].lo, b->b[k].hi - 1);
    else
        snprintf(out, cap, "%.1f-%.1f", b->b[k].lo, b->b[k].hi);
}

static void pct(FILE *o, double v)
{
    if (isnan(v))
        fputs("<td>-</td>", o);
    else
        fprintf(o, "<td>%.2f%%</td>", 100 * v);
}

/* Stacked bars (good, bad) per band in ascending score order. */
static void bands_chart(FILE *o, const struct rpage_bands *b)
{
    const double W = 640, H = 330, L = 64, R = 16, T = 40, B = 76;
    double bw = (W - L - R) / (double)b->nb, top = 0;
    char lab[32];

    for (size_t k = 0; k < b->nb; k++)
        top = (double)b->b[k].n > top ? (double)b->b[k].n : top;
    top = top > 0 ? top : 1;
    fprintf(o,
            "<svg width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" role=\"img\" "
            "font-family=\"sans-serif\">"
            "<title>%s</title>\n<text x=\"%.0f\" y=\"20\" font-size=\"15\" "
            "text-anchor=\"middle\">%s</text>\n",
            W, H, W, H, b->points ? "Score points distribution" : "P(bad) distribution", W / 2,
            b->points ? "Score points distribution" : "P(bad) distribution by band");
    fprintf(o,
            "<text x=\"14\" y=\"%.0f\" font-size=\"13\" text-anchor=\"middle\" "
            "transform=\"rotate(-90 14 %.0f)\">predictions</text>\n",
            T + (H - T - B) / 2, T + (H - T - B) / 2);
    for (int t = 0; t <= 4; t++) {
        double yv = T + (H - T - B) * (1 - t / 4.0);
        fprintf(o,
                "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                "<text x=\"%.0f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"end\">%.0f</text>\n",
                L, yv, W - R, yv, L - 6, yv + 4, top * t / 4);
    }
    for (size_t i = 0; i < b->nb; i++) {
        size_t k = b->points ? i : b->nb - 1 - i; /* ascending score */
        double hg = (H - T - B) * (double)(b->b[k].n - b->b[k].bad) / top;
        double hb = (H - T - B) * (double)b->b[k].bad / top, x = L + (double)i * bw;
        band_label(lab, sizeof(lab), b, k);
        fprintf(o,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#2e86c1\">"
                "<title>%s: %zu good</title></rect>\n<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
                "height=\"%.1f\" fill=\"#c0392b\"><title>%s: %zu bad</title></rect>\n"
                "<text x=\"%.1f\" y=\"%.0f\" font-size=\"11\" text-anchor=\"end\" "
                "transform=\"rotate(-40 %.1f %.0f)\">%s</text>\n",
                x + 2, H - B - hg - hb, bw - 4, hg, lab, b->b[k].n - b->b[k].bad, x + 2, H - B - hb,
                bw - 4, hb, lab, b->b[k].bad, x + bw / 2 + 4, H - B + 14, x + bw / 2 + 4,
                H - B + 14, lab);
    }
    fprintf(o,
            "<text x=\"%.0f\" y=\"%.0f\" font-size=\"13\" text-anchor=\"middle\">%s</text>"
            "<rect x=\"%.0f\" y=\"9\" width=\"12\" height=\"12\" fill=\"#2e86c1\"/><text "
            "x=\"%.0f\" y=\"19\" font-size=\"12\">good</text><rect x=\"%.0f\" y=\"9\" "
            "width=\"12\" height=\"12\" fill=\"#c0392b\"/><text x=\"%.0f\" y=\"19\" "
            "font-size=\"12\">bad</text></svg>\n",
            W / 2, H - 6, b->points ? "scorecard points" : "P(bad)", W - 140, W - 124, W - 80,
            W - 64);
}

void rpage_bands_html(FILE *o, const struct rpage_bands *b)
{
    size_t cn = 0, cb = 0;
    char lab[32];

    if (!b->nb)
        return;
    if (b->points)
        fprintf(o, "<h2>Score bands (scorecard points, %d-point bands, riskiest first)</h2>\n",
                b->width);
    else
        fputs("<h2>Score bands (P(bad), no scorecard deployed; riskiest first)</h2>\n", o);
    fputs("<table id=\"bands\"><tr><th>band</th><th>count</th><th>bad</th><th>bad rate</th>"
          "<th>cumulative count</th><th>cumulative %</th><th>cumulative bad share</th></tr>\n",
          o);
    for (size_t k = 0; k < b->nb; k++) {
        cn += b->b[k].n;
        cb += b->b[k].bad;
        band_label(lab, sizeof(lab), b, k);
        fprintf(o, "<tr><td>%s</td><td>%zu</td><td>%zu</td>", lab, b->b[k].n, b->b[k].bad);
        pct(o, share(b->b[k].bad, b->b[k].n));
        fprintf(o, "<td>%zu</td>", cn);
        pct(o, share(cn, b->n));
        pct(o, share(cb, b->bad));
        fputs("</tr>\n", o);
    }
    fprintf(o, "<tr class=\"total\"><td>all</td><td>%zu</td><td>%zu</td>", b->n, b->bad);
    pct(o, share(b->bad, b->n));
    fputs("<td></td><td></td><td></td></tr>\n</table>\n", o);
    bands_chart(o, b);
}

void rpage_bands_summary(const struct rpage_bands *b)
{
    size_t cn = 0, cb = 0;
    char lab[32];

    for (size_t k = 0; k < b->nb; k++) {
        cn += b->b[k].n;
        cb += b->b[k].bad;
        band_label(lab, sizeof(lab), b, k);
        printf("band %s %s: n %zu  bad %zu  bad_rate %.6f  cum_n %zu  cum_bad_share %.6f\n",
               b->points ? "points" : "p_bad", lab, b->b[k].n, b->b[k].bad,
               share(b->b[k].bad, b->b[k].n), cn, share(cb, b->bad));
    }
}
