/* common/fairness.c: fairness by outcome (see fairness.h). */
#include "fairness.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void fair_init(struct fair *f)
{
    memset(f, 0, sizeof(*f));
}

int fair_add(struct fair *f, const char *group, int approved, int label, struct err *e)
{
    struct fair_group *g = NULL;

    for (size_t i = 0; i < f->n_groups && !g; i++)
        if (strncmp(f->g[i].name, group, FAIR_NAME - 1) == 0)
            g = &f->g[i];
    if (!g) {
        if (f->n_groups == FAIR_MAX_GROUPS)
            return err_set(e, ERR_INVALID,
                           "fairness: group \"%.40s\" is one more than %d (a field with "
                           "too many values to compare)",
                           group, FAIR_MAX_GROUPS);
        g = &f->g[f->n_groups++];
        snprintf(g->name, sizeof(g->name), "%s", group);
    }
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

void fair_finish(struct fair *f)
{
    double top = 0;

    for (size_t i = 0; i < f->n_groups; i++) {
        struct fair_group *g = &f->g[i];
        g->approval = ratio(g->approved, g->n);
        g->tpr = ratio(g->bad_flagged, g->bad);
        g->fpr = ratio(g->good_flagged, g->good);
        top = g->approval > top ? g->approval : top;
    }
    f->worst = 0;
    for (size_t i = 0; i < f->n_groups; i++) {
        f->g[i].disparate_impact = top > 0 ? f->g[i].approval / top : NAN;
        if (f->g[i].disparate_impact < f->g[f->worst].disparate_impact)
            f->worst = i;
    }
}

int fair_violates(const struct fair *f)
{
    for (size_t i = 0; i < f->n_groups; i++)
        if (f->g[i].disparate_impact < FAIR_RULE)
            return 1;
    return 0;
}
