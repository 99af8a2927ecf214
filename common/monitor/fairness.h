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
 *
 * Live outcomes (fair_outcomes_*): labels arrive after their decisions, so
 * the monitor counts each joined (decision, label) pair by group in a ring
 * of slices parallel to its window (the slice current when the label
 * arrives) and sums the ring into a struct fair for the TPR and FPR per
 * group. The gap of a rate is the highest group's minus the lowest's among
 * the groups with at least min_n labels of its class (bad for TPR, good for
 * FPR): equal opportunity (TPR) and the other half of equalized odds (FPR).
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

/* Highest minus lowest TPR (fpr = 0) or FPR (fpr = 1) over the groups with
 * at least min_n labelled bad (TPR) or good (FPR) decisions; *lo and *hi
 * the groups with the lowest and highest rate. NaN with fewer than two
 * such groups. Call after fair_finish*. */
double fair_gap(const struct fair *f, int fpr, size_t min_n, size_t *lo, size_t *hi);

#define FAIR_OUT_GROUPS 16 /* groups the live outcome counts keep */

struct fair_outcomes;

/* Counts for a ring of slices (>= 1); NULL when out of memory. */
struct fair_outcomes *fair_outcomes_open(int slices);
void fair_outcomes_close(struct fair_outcomes *o); /* NULL-safe */
/* One joined decision in slice s: group (truncated to FAIR_NAME - 1),
 * approved 0/1, label 1 bad, 0 good. 1 when the group is one more than
 * FAIR_OUT_GROUPS (not counted), else 0. */
int fair_outcomes_add(struct fair_outcomes *o, int s, const char *group, int approved, int label);
/* Empties slice s (it is reused for new data). */
void fair_outcomes_clear(struct fair_outcomes *o, int s);
/* The ring summed into f (groups in order of first appearance, none
 * dropped), finished: f->g[k].tpr, .fpr. */
void fair_outcomes_sum(const struct fair_outcomes *o, struct fair *f);

#endif
