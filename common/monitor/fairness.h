/* common/monitor/fairness.h: fairness by outcome, per group (prefix fair_).
 *
 * Per group (a field of the event or label chosen by the user, e.g. a
 * housing status): how many were scored, the approval rate, and when labels
 * are known (1 bad, 0 good) the true and false positive rates of the
 * model's adverse decision (review or decline is positive): TPR = P(not
 * approved | bad), FPR = P(not approved | good). Disparate impact of a
 * group = its approval rate / the highest group approval rate; the 80%
 * rule fails below 0.8. Pure; one accumulator per report or monitor.
 *
 * The report (`streamml report --fairness-field`) and the live monitor
 * (monitor.fairness.*, common/monitor/monitor.c) both compute through this
 * file, so a group's approval rate and disparate impact mean the same in
 * both. The monitor leaves out groups with fewer than monitor.fairness.
 * min_group decisions in its window (fair_finish_min), so small samples
 * do not alert.
 */
#ifndef STREAMML_FAIRNESS_H
#define STREAMML_FAIRNESS_H

#include <stddef.h>

#include "err.h"

#define FAIR_MAX_GROUPS 64
#define FAIR_NAME 64
#define FAIR_RULE 0.8 /* the 80% rule */

struct fair_group {
    char name[FAIR_NAME];
    size_t n, approved;
    size_t bad, bad_flagged;   /* labelled bad; of them not approved */
    size_t good, good_flagged; /* labelled good; of them not approved */
    double approval, tpr, fpr; /* NaN when undefined (no rows, no labels) */
    double disparate_impact;   /* approval / the highest approval; NaN if that is 0,
                                  or when the group has fewer than min_n rows */
};

struct fair {
    struct fair_group g[FAIR_MAX_GROUPS];
    size_t n_groups;
    size_t worst;    /* group with the lowest disparate impact */
    size_t eligible; /* groups with at least min_n rows (fair_finish_min) */
};

void fair_init(struct fair *f);
/* One decision: group name (truncated to FAIR_NAME - 1), approved 0/1,
 * label 1 bad, 0 good, -1 unknown. ERR_INVALID past FAIR_MAX_GROUPS
 * groups (naming the group). */
int fair_add(struct fair *f, const char *group, int approved, int label, struct err *e);
/* n decisions of which approved were approvals, labels unknown (the live
 * monitor's window counts). Same errors as fair_add. */
int fair_add_counts(struct fair *f, const char *group, size_t n, size_t approved, struct err *e);
/* Rates and disparate impact of every group. */
void fair_finish(struct fair *f);
/* The same, where only groups with at least min_n rows count: the highest
 * approval rate is taken over them, and the others' disparate impact is
 * NaN. fair_finish is fair_finish_min(f, 1). */
void fair_finish_min(struct fair *f, size_t min_n);
/* Lowest over highest approval rate among the groups that count (the
 * disparate impact of f->worst); NaN with fewer than two such groups or
 * when no group has an approval. */
double fair_disparate_impact(const struct fair *f);
/* 1 when some group's disparate impact is below FAIR_RULE. */
int fair_violates(const struct fair *f);

#endif
