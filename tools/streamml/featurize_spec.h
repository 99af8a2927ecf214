/* tools/streamml/featurize_spec.h: featurize for specs on any schema. */
#ifndef STREAMML_FEATURIZE_SPEC_H
#define STREAMML_FEATURIZE_SPEC_H

#include <stdio.h>

/* JSON lines (keys = the spec schema's field names) from in -> CSV on out:
 * key, time, the spec's outputs, then label's value when label is not NULL
 * (NULL: the field "label" when the schema has one). Invalid lines are
 * reported on stderr and counted in *invalid. 0 ok, 1 runtime, 2 spec. */
struct reg;
/* r: the registry of a spec naming input.subject (NULL: none). */
int featurize_spec(const char *spec, struct reg *r, FILE *in, FILE *out, const char *label,
                   int header, long *invalid);

#endif
