/* common/streams/grader.h: the images stream's step, image event -> graded
 * prediction (prefix grader_).
 *
 * What the images worker, `streamml replay --stream images` and `streamml
 * predict --image` run, so that they grade alike:
 *
 *   - the model set-up: an ONNX CNN, or a set of them graded as one
 *     (images.models, common/models/ensemble.h: each member with its own
 *     geometry, probabilities averaged with weights, the members'
 *     agreement; the CAM from the member images.cam_model names); each
 *     member has one float input [N, 3, H, W]
 *     (geometry and normalisation from the shape and the metadata
 *     input_size/mean/std), logits [N, 5], and for class-activation maps
 *     the last feature map (a second output, or an intermediate value named
 *     by cam_features and kept by the runtime) with the final Linear weight
 *     named by the metadata's cam_weight, or else the head after the last
 *     GlobalAveragePool read from the graph (one Linear: plain CAM; a deeper
 *     chain such as the seed's: Grad-CAM); one trial run on zeros checks
 *     the output shapes before any input;
 *   - per image: load (root / allow-listed http), decode, preprocess into a
 *     row of the batch tensor, or ungradable with the reason;
 *   - per batch: one forward pass, softmax in double, grade, expected
 *     grade, P(grade >= 2) against the referable threshold, and for a
 *     referable image the CAM or Grad-CAM grid and optionally its overlay
 *     PNG at the decoded photograph's size (overlay.h; each row's decoded
 *     photograph is kept, buffers swapped, until the pass that draws it:
 *     at most images.batch photographs, with or without the decode thread).
 *
 * Throughput: with decode_thread, grader_add only queues the image (copying
 * the event and topic) and grader_run hands the queue to the grader's own
 * decode thread, which loads, checks and preprocesses the images in order
 * while the caller's thread runs forward passes over the rows ready so far
 * (pipelined batches: decoding overlaps inference). With more slots than
 * rows per pass (the worker takes images.take messages, passes are of
 * images.batch), the thread decodes the next pass's images while this one
 * runs, so the forward passes rarely wait. Predictions are the same either
 * way; p is filled only by grader_run.
 *
 * Two batches in flight (opts.sets = 2, the images worker): slots and rows
 * are twice batch, set k owning slots [k * batch, (k + 1) * batch).
 * grader_begin_set / grader_add / grader_start hand set k's images to the
 * decode thread at once, and grader_run_set later runs its passes: while
 * it runs set 1's passes, the thread goes on with set 0's next images, so
 * the decoding of one take overlaps the inference of the take before
 * (docs/images.md).
 *
 * A grader is used by one thread at a time (its decode thread aside).
 */
#ifndef STREAMML_GRADER_H
#define STREAMML_GRADER_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "err.h"
#include "image.h"
#include "image_event.h"
#include "imgq.h"

struct grader_opts {
    const char *model;        /* the .onnx file (when models is empty) */
    const char *models;       /* a set "a.onnx[:w],b.onnx[:w]"; ""/NULL: model alone */
    const char *cam_model;    /* the member CAMs come from; ""/NULL: the first */
    const char *cam_features; /* a one-output model's feature map; ""/NULL: metadata's */
    double threshold;         /* referable above P(grade >= 2); < 0: metadata's, else 0.5 */
    const char *cam_dir;      /* CAM overlay PNGs written here; ""/NULL: none */
    size_t batch;             /* slots (images added between grader_begin and _run), >= 1 */
    size_t pass;              /* rows per forward pass at most; 0: batch */
    struct img_opts load;     /* image loading limits */
    const char *quality;      /* imgq limits JSON; ""/NULL: no quality checks */
    int decode_thread;        /* 1: load/decode/preprocess beside the forward passes */
    size_t sets;              /* batches in flight: 2 (pipelined) or 1 (0: 1) */
};

/* The images.* keys of cf (images.model, images.models, images.cam_model,
 * images.cam_features,
 * images.referable_threshold, images.cam_dir, images.batch (batch and
 * pass), images.quality, the loader's limits). The strings are cf's: it
 * must outlive the options. */
void grader_opts_from_cfg(const struct cfg *cf, struct grader_opts *o);

/* Counters since open. */
struct grader_counts {
    uint64_t batches, rows, cams_written, cam_errors;
    uint64_t largest; /* most rows in one forward pass */
};

struct grader;

/* Opens the model and the loader and checks the model (ERR_CONFIG naming
 * the file and the problem). NULL with the reason in *e. */
struct grader *grader_open(const struct grader_opts *o, struct err *e);
void grader_close(struct grader *g); /* NULL-safe */

/* Metadata model_name or "onnx"; "ensemble" for a set of several. */
const char *grader_model_name(const struct grader *g);
/* model_version or "unknown"; a set's joined by '+'. */
const char *grader_model_version(const struct grader *g);
/* The model files (one, or the set's members in order): what a reload
 * watches. */
size_t grader_members(const struct grader *g);
const char *grader_member_path(const struct grader *g, size_t i);
double grader_threshold(const struct grader *g);
size_t grader_batch(const struct grader *g);
int grader_has_cam(const struct grader *g);
const struct img_norm *grader_norm(const struct grader *g); /* the CAM member's */
const struct grader_counts *grader_counts(const struct grader *g);

/* A new batch: no slot has a row. */
void grader_begin(struct grader *g);
/* Slot i (< grader_batch; twice that with sets 2) of the batch (with a
 * decode thread: done in grader_run, ev and topic copied): p is initialised from ev and its
 * source (ids, event time, model, threshold, topic/partition/offset), then
 * the image is loaded, checked (imgq, when the options name quality limits)
 * and preprocessed into the batch tensor's next row, or p is left
 * ungradable with the reason (img_reason_name, or "low_quality:<check>"
 * with imgq_detail's text) and the detail. */
void grader_add(struct grader *g, size_t i, const struct image_event *ev, const char *topic,
                int32_t partition, int64_t offset, struct image_prediction *p);
/* Slot i's quality values (imgq_values_array order, the names of
 * imgq_value_names) as measured by the last grader_add, refused or not: 1,
 * or 0 when none were (not loaded, or no quality checks). Valid until the
 * next grader_begin. */
int grader_quality(const struct grader *g, size_t i, double v[IMGQ_NVALUES]);
/* Pipelined use (opts.sets 2): grader_begin_set(set) resets that set's
 * slots (waiting for its decoding to end if it was still in progress);
 * grader_add with slots of the set; grader_start hands its images to the
 * decode thread now (without one: they were done in grader_add);
 * grader_run_set runs its forward passes as its rows get ready and fills
 * the predictions grader_add was given. grader_begin, grader_run: set 0. */
void grader_begin_set(struct grader *g, int set);
void grader_start(struct grader *g, int set);
void grader_run_set(struct grader *g, int set);
/* Forward passes of at most pass rows over the rows added since
 * grader_begin; p[0..n) are the batch's slots (those never added are left
 * alone). A failed pass or non-finite logits leave the rows' predictions
 * ungradable (model_error). */
void grader_run(struct grader *g, struct image_prediction *p, size_t n);

/* Softmax (double, max-shifted) of IMGEV_GRADES logits into p: the
 * probabilities, grade, expected grade, P(grade >= 2) and the referable
 * flag. -1 (p untouched but for the count) if a logit is not finite. */
int grader_score(struct image_prediction *p, const float *logits, double threshold);
/* p ungradable: reason (an img_reason_name, "low_quality:<check>" or
 * "model_error"), detail. */
void grader_ungradable(struct image_prediction *p, const char *reason, const char *detail);
/* Counter slots of the ungradable reasons: the enum img_reason values, then
 * these two. */
#define GRADER_LOW_QUALITY IMG_NREASONS       /* "low_quality:<check>", any check */
#define GRADER_MODEL_ERROR (IMG_NREASONS + 1) /* "model_error" */
#define GRADER_NREASONS (IMG_NREASONS + 2)
/* Index of p's ungradable reason (< GRADER_NREASONS); -1 when p is graded. */
int grader_reason_index(const struct image_prediction *p);

#endif
