/* common/reasons.h: reason texts shipped with a model (prefix reasons_).
 *
 * A JSON file next to the model (models/credit_gbdt.reasons.json):
 *   {"format": "streamml-reasons", "reasons": {"<feature>": "<text>", ...}}
 * mapping the model's features to the texts an adverse-action notice shows.
 * A feature without a text is shown by its name; a text for a feature the
 * model does not have is an error (a table made for another model). Read
 * only after open.
 */
#ifndef STREAMML_REASONS_H
#define STREAMML_REASONS_H

#include <stddef.h>

#include "err.h"
#include "gbdt.h"

#define REASONS_MAX_TEXT 96 /* bytes of a text, NUL included */

struct reasons;

/* Loads path for model g (features by name). path NULL or "": every text is
 * the feature's name. ERR_CONFIG naming the file and the culprit (not JSON,
 * wrong format, unknown feature, text not a string or too long). */
struct reasons *reasons_open(const char *path, const struct gbdt *g, struct err *e);
void reasons_close(struct reasons *r); /* NULL-safe */
/* Text of model feature i (its name, or "f<i>" without names). */
const char *reasons_text(const struct reasons *r, size_t i);

#endif
