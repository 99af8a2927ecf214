/* common/suggest.h: "did you mean" for mistyped names (prefix sug_).
 *
 * Keys, subcommands and options are matched against the known names by
 * optimal-string-alignment distance (insertions, deletions, substitutions and
 * transpositions of neighbours each cost 1), case-insensitively.
 */
#ifndef STREAMML_SUGGEST_H
#define STREAMML_SUGGEST_H

#include <stddef.h>

/* Edit distance of a and b (each capped at 127 characters). */
int sug_distance(const char *a, const char *b);
/* The candidate closest to word, or NULL when none is close enough to be a
 * plausible typo: at most 1 edit for words of up to 4 characters, 2 up to 8,
 * 3 beyond. Ties go to the first candidate. */
const char *sug_closest(const char *word, const char *const *cands, size_t n);

#endif
