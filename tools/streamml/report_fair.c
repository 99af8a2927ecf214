/* tools/streamml/report_fair.c: fairness by outcome in `streamml report`
 * (see report_fair.h). */
#include "report_fair.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "features.h"
#include "outcomes.h"

/* The group of one prediction line into name. */
static int group_of(json_t *o, const char *field, char *name, size_t cap)
{
    json_t *v = json_object_get(o, field), *fs = json_object_get(o, "features");
    int idx = feat_txn_index(field);

    if (!v && idx >= 0 && json_is_array(fs))
        v = json_array_get(fs, (size_t)idx);
    if (!v)
        return -1;
    if (json_is_string(v))
        snprintf(name, cap, "%s", json_string_value(v));
    else if (json_is_number(v))
        snprintf(name, cap, "%g", json_number_value(v));
    else if (json_is_null(v))
        snprintf(name, cap, "missing");
    else
        snprintf(name, cap, "%s", json_is_true(v) ? "true" : "false");
    return 0;
}

static int line_in(struct fair *f, struct oc_table *l, const char *field, const char *line,
                   const char *path, long no, struct err *e)
{
    json_error_t je;
    json_t *o = json_loads(line, 0, &je);
    const char *dec = json_string_value(json_object_get(o, "decision"));
    const char *id = json_string_value(json_object_get(o, "event_id"));
    char name[FAIR_NAME];
    int label = -1, rc;
    long k;

    if (!o || !dec || !id) {
        json_decref(o);
        return err_set(e, ERR_DECODE, "%s: line %ld: not a prediction with event_id and decision",
                       path, no);
    }
    if (group_of(o, field, name, sizeof(name))) {
        json_decref(o);
        return err_set(e, ERR_DECODE,
                       "%s: line %ld: no field \"%s\" (nor that feature in \"features\": "
                       "replay --features)",
                       path, no, field);
    }
    k = l ? oc_find(l, id) : -1;
    if (k >= 0 && oc_join(l, k)) { /* a redelivered duplicate: the first counts */
        json_decref(o);
        return ERR_OK;
    }
    if (k >= 0) {
        double v = oc_value(l, k);
        label = v == 1 ? 1 : v == 0 ? 0 : -1;
    }
    rc = fair_add(f, name, strcmp(dec, "approve") == 0, label, e);
    json_decref(o);
    return rc;
}

int report_fair_run(const char *preds, const char *labels, const char *labels_topic,
                    const struct cfg *cf, const char *field, struct fair *f, struct err *e)
{
    struct oc_table *l = NULL;
    FILE *in;
    char *line = NULL;
    size_t cap = 0;
    long no = 0;
    int rc = ERR_OK;

    fair_init(f);
    /* A table of its own: the report's was consumed by its join (oc_join). */
    if ((labels || labels_topic) &&
        (oc_open(&l, OC_LABEL, e) ||
         (labels ? oc_read_file(l, labels, e) : oc_read_topic(l, labels_topic, cf, e)))) {
        oc_close(l);
        return e->code;
    }
    in = fopen(preds, "r");
    if (!in)
        rc = err_set(e, ERR_IO, "%s: %s", preds, strerror(errno));
    while (rc == ERR_OK && getline(&line, &cap, in) >= 0) {
        no++;
        if (line[strspn(line, " \t\r\n")])
            rc = line_in(f, l, field, line, preds, no, e);
    }
    if (in)
        fclose(in);
    free(line);
    oc_close(l);
    if (rc == ERR_OK)
        fair_finish(f);
    return rc;
}

static void cell(FILE *o, double v)
{
    if (isnan(v))
        fputs("<td>-</td>", o);
    else
        fprintf(o, "<td>%.3f</td>", v);
}

void report_fair_html(FILE *o, const char *field, const struct fair *f)
{
    fputs("<h2>Fairness by outcome</h2>\n<p>Groups by ", o);
    for (const char *s = field; *s; s++)
        fputs(*s == '<' ? "&lt;" : *s == '&' ? "&amp;" : (char[2]){*s, 0}, o);
    fprintf(o,
            ". Adverse decision (review or decline) as the positive: TPR = P(not approved | "
            "bad), FPR = P(not approved | good). Disparate impact = approval rate / the "
            "highest; the 80%% rule fails below %.1f.</p>\n<table><tr><th>group</th>"
            "<th>n</th><th>approval</th><th>TPR</th><th>FPR</th><th>disparate impact</th>"
            "</tr>\n",
            FAIR_RULE);
    for (size_t i = 0; i < f->n_groups; i++) {
        const struct fair_group *g = &f->g[i];
        int bad = g->disparate_impact < FAIR_RULE;
        fputs("<tr><td>", o);
        for (const char *s = g->name; *s; s++)
            fputs(*s == '<' ? "&lt;" : *s == '&' ? "&amp;" : (char[2]){*s, 0}, o);
        fprintf(o, "</td><td>%zu</td>", g->n);
        cell(o, g->approval);
        cell(o, g->tpr);
        cell(o, g->fpr);
        fprintf(o,
                bad ? "<td style=\"color:#c0392b\">%.3f FAIL</td></tr>\n" : "<td>%.3f</td></tr>\n",
                g->disparate_impact);
    }
    fputs("</table>\n", o);
}

void report_fair_summary(const char *field, const struct fair *f)
{
    for (size_t i = 0; i < f->n_groups; i++) {
        const struct fair_group *g = &f->g[i];
        printf("fairness %s=%s: n %zu  approval %.6f  tpr %.6f  fpr %.6f  disparate_impact "
               "%.6f%s\n",
               field, g->name, g->n, g->approval, g->tpr, g->fpr, g->disparate_impact,
               g->disparate_impact < FAIR_RULE ? "  FAIL (80% rule)" : "");
    }
}
