/* common/monitor/fairness.c: fairness by outcome (see fairness.h). */
#include "fairness.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fair_init(struct fair *f)
{
    memset(f, 0, sizeof(*f));
}

/* The group named group, added when new; NULL past FAIR_MAX_GROUPS. */
static struct fair_group *group_of(struct fair *f, const char *group, struct err *e)
{
    struct fair_group *g;

    for (size_t i = 0; i < f->n_groups; i++)
        if (strncmp(f->g[i].name, group, FAIR_NAME - 1) == 0)
            return &f->g[i];
    if (f->n_groups == FAIR_MAX_GROUPS) {
        err_set(e, ERR_INVALID,
                "fairness: group \"%.40s\" is one more than %d (a field with "
                "too many values to compare)",
                group, FAIR_MAX_GROUPS);
        return NULL;
    }
    g = &f->g[f->n_groups++];
    snprintf(g->name, sizeof(g->name), "%s", group);
    return g;
}

int fair_add_counts(struct fair *f, const char *group, size_t n, size_t approved, struct err *e)
{
    struct fair_group *g = group_of(f, group, e);

    if (!g)
        return e->code;
    g->n += n;
    g->approved += approved;
    return ERR_OK;
}

int fair_add(struct fair *f, const char *group, int approved, int label, struct err *e)
{
    struct fair_group *g = group_of(f, group, e);

    if (!g)
        return e->code;
    g->n++;
    g->approved += approved != 0;
    if (label == 1) {
        g->bad++;
        g->bad_flagged += !approved;
    } else if (label == 0) {
        g->good++;
        g->good_flagged += !approved;
    }
    return ERR_OK;
}

static double ratio(size_t a, size_t b)
{
    return b ? (double)a / (double)b : NAN;
}

void fair_finish_min(struct fair *f, size_t min_n)
{
    double top = 0;

    min_n = min_n ? min_n : 1;
    f->eligible = 0;
    for (size_t i = 0; i < f->n_groups; i++) {
        struct fair_group *g = &f->g[i];
        g->approval = ratio(g->approved, g->n);
        g->tpr = ratio(g->bad_flagged, g->bad);
        g->fpr = ratio(g->good_flagged, g->good);
        if (g->n < min_n)
            continue;
        f->eligible++;
        top = g->approval > top ? g->approval : top;
    }
    f->worst = 0;
    for (size_t i = 0; i < f->n_groups; i++) {
        struct fair_group *g = &f->g[i];
        g->disparate_impact = top > 0 && g->n >= min_n ? g->approval / top : NAN;
        if (!isnan(g->disparate_impact) &&
            !(g->disparate_impact >= f->g[f->worst].disparate_impact))
            f->worst = i; /* also replaces a NaN first group */
    }
}

void fair_finish(struct fair *f)
{
    fair_finish_min(f, 1);
}

double fair_disparate_impact(const struct fair *f)
{
    if (f->eligible < 2 || f->n_groups == 0)
        return NAN;
    return f->g[f->worst].disparate_impact;
}

int fair_violates(const struct fair *f)
{
    for (size_t i = 0; i < f->n_groups; i++)
        if (f->g[i].disparate_impact < FAIR_RULE)
            return 1;
    return 0;
}

double fair_gap(const struct fair *f, int fpr, size_t min_n, size_t *lo, size_t *hi)
{
    size_t n = 0;

    *lo = *hi = 0;
    for (size_t i = 0; i < f->n_groups; i++) {
        const struct fair_group *g = &f->g[i];
        double r = fpr ? g->fpr : g->tpr;
        if ((fpr ? g->good : g->bad) < (min_n ? min_n : 1) || isnan(r))
            continue;
        if (n == 0 || r < (fpr ? f->g[*lo].fpr : f->g[*lo].tpr))
            *lo = i;
        if (n == 0 || r > (fpr ? f->g[*hi].fpr : f->g[*hi].tpr))
            *hi = i;
        n++;
    }
    if (n < 2)
        return NAN;
    return fpr ? f->g[*hi].fpr - f->g[*lo].fpr : f->g[*hi].tpr - f->g[*lo].tpr;
}

/* Per slice and group: labelled bad, bad not approved, good, good not
 * approved. */
struct fair_outcomes {
    int slices, n_groups;
    char name[FAIR_OUT_GROUPS][FAIR_NAME];
    uint32_t (*c)[FAIR_OUT_GROUPS][4];
};

struct fair_outcomes *fair_outcomes_open(int slices)
{
    struct fair_outcomes *o = calloc(1, sizeof(*o));

    if (!o || slices < 1 || !(o->c = calloc((size_t)slices, sizeof(*o->c)))) {
        free(o);
        return NULL;
    }
    o->slices = slices;
    return o;
}

void fair_outcomes_close(struct fair_outcomes *o)
{
    if (!o)
        return;
    free(o->c);
    free(o);
}

int fair_outcomes_add(struct fair_outcomes *o, int s, const char *group, int approved, int label)
{
    int k = 0;

    if (s < 0 || s >= o->slices || (label != 0 && label != 1))
        return 0;
    while (k < o->n_groups && strncmp(o->name[k], group, FAIR_NAME - 1) != 0)
        k++;
    if (k == FAIR_OUT_GROUPS)
        return 1;
    if (k == o->n_groups)
        snprintf(o->name[o->n_groups++], FAIR_NAME, "%s", group);
    o->c[s][k][label ? 0 : 2]++;
    o->c[s][k][label ? 1 : 3] += !approved;
    return 0;
}

void fair_outcomes_clear(struct fair_outcomes *o, int s)
{
    if (s >= 0 && s < o->slices)
        memset(o->c[s], 0, sizeof(o->c[s]));
}

void fair_outcomes_sum(const struct fair_outcomes *o, struct fair *f)
{
    fair_init(f);
    for (int k = 0; k < o->n_groups; k++) {
        struct fair_group *g = &f->g[f->n_groups++];
        snprintf(g->name, sizeof(g->name), "%s", o->name[k]);
        for (int s = 0; s < o->slices; s++) {
            g->bad += o->c[s][k][0];
            g->bad_flagged += o->c[s][k][1];
            g->good += o->c[s][k][2];
            g->good_flagged += o->c[s][k][3];
        }
        g->n = g->bad + g->good;
        g->approved = g->n - g->bad_flagged - g->good_flagged;
    }
    fair_finish(f);
}
