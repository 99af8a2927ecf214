/* common/base/out.h: a command's output file (prefix out_).
 *
 * Every command that writes an output (replay, featurize, report, profile,
 * baseline, predict --output, consume --avro-file, CAM overlays, the broker's
 * bootstrap file) opens it here, so that what happens to the path is the same
 * everywhere and nothing outside the project is harmed:
 *   - "-" is stdout, written directly;
 *   - a path that does not exist, or a regular file, is written as
 *     PATH.partial and renamed over PATH by out_commit, so a half-written
 *     output never looks whole (out_abort, or a failed commit, removes it);
 *   - anything else that exists (a character or block device such as
 *     /dev/null, a FIFO, a socket) is opened and written directly: it is
 *     never truncated, removed, renamed over or replaced;
 *   - a symbolic link is followed only to something that is not a regular
 *     file (/dev/stdout -> /proc/self/fd/1); a link to a regular file, or a
 *     dangling one, is refused naming its target: replacing the link or
 *     writing its target silently are both surprises;
 *   - every write error (ENOSPC included, stdout too: ferror is checked) is
 *     an ERR_IO naming the output.
 */
#ifndef STREAMML_OUT_H
#define STREAMML_OUT_H

#include <stdio.h>

#include "err.h"

struct out;

/* Opens path for writing ("-" = stdout). binary: "wb" semantics (same on
 * Linux; kept for readers). ERR_CONFIG when the path cannot be an output
 * (a directory, a symlink to a regular file, an existing PATH.partial that
 * is not a regular file), ERR_IO when it cannot be opened. */
int out_open(struct out **o, const char *path, struct err *e);
/* The stream to write; valid until out_commit / out_abort. */
FILE *out_file(struct out *o);
/* The name to show the user: the path as given, or "stdout". */
const char *out_name(const struct out *o);
/* Whether out_commit will rename a .partial into place (a regular file). */
int out_is_atomic(const struct out *o);
/* Flushes, checks for any write error, closes and (regular files) renames
 * PATH.partial over PATH. On error the partial file is removed and e names
 * the output. Frees o in every case (NULL-safe: ERR_OK). */
int out_commit(struct out *o, struct err *e);
/* Discards the output: closes and removes PATH.partial (a device or FIFO is
 * left as it is). Frees o (NULL-safe). Returns 1 if a partial file was
 * removed, else 0. */
int out_abort(struct out *o);
/* stdout only: flush and ferror check at the end of a command that prints
 * its result there. ERR_IO naming "stdout" on a write error. */
int out_stdout_check(struct err *e);

#endif
