/* common/models/ensemble.h: a set of image-grading ONNX models run as one
 * (prefix ens_).
 *
 * images.models = "a.onnx,b.onnx:2": members separated by commas, each with
 * an optional ":weight" (> 0; default 1; normalised to sum 1). Every member
 * is a CNN with one float input [N, 3, H, W] and logits [N, 5] first; each
 * has its own geometry and normalisation (shape and metadata input_size,
 * mean, std), so the decoded image is preprocessed for each member from the
 * same pixels.
 *
 * Per image: each member's softmax (double, max-shifted), then the weighted
 * mean of the probabilities; the grade is its argmax, and the agreement is
 * the weight of the members whose own argmax is that grade (1 = unanimous).
 * A one-member set is the plain model.
 *
 * Opening is all or nothing: every member parsed, opened and smoke-run on
 * zeros (output [1, 5], finite) before the set exists, so a reload that
 * fails on any member leaves the caller's current set untouched.
 *
 * The CAM member: images.cam_model names one member (its path as written,
 * or its file name); its outputs of the last run (the smoke run's after
 * opening) are readable with ens_member_output, and the feature map named by
 * cam_features (or its metadata's cam_features), or without cam_weight
 * metadata the value the graph's head pools (onnx_gradcam_head), is kept by
 * the runtime unless it is the second output, and read with
 * ens_member_features.
 *
 * Two ways to run: ens_run on decoded images, or, to preprocess each image
 * as it is decoded (the images step, common/streams/grader.h), ens_add per
 * image into a row of every member's batch tensor, then ens_forward over
 * rows [first, first + n). Rows of a forward pass in progress must not be
 * written meanwhile; other rows may be (by another thread).
 *
 * A set is used by one thread at a time.
 */
#ifndef STREAMML_ENSEMBLE_H
#define STREAMML_ENSEMBLE_H

#include <stddef.h>

#include "err.h"
#include "image.h"
#include "onnx.h"

#define ENS_MAX_MEMBERS 8
#define ENS_GRADES 5

struct ens_opts {
    const char *models;       /* "a.onnx,b.onnx:2" */
    const char *cam_member;   /* a member's path or file name; NULL/"": the first */
    const char *cam_features; /* the CAM member's kept feature map; NULL/"": metadata's */
    size_t batch;             /* images per run (rows), >= 1 */
};

struct ens_result {
    double probs[ENS_GRADES]; /* weighted mean of the members' probabilities */
    int grade;                /* argmax of probs */
    double agreement;         /* weight of the members whose argmax is grade */
};

struct ens;

/* ERR_CONFIG naming the entry or the member file and the problem. */
int ens_open(struct ens **out, const struct ens_opts *o, struct err *e);
void ens_close(struct ens *s); /* NULL-safe */

size_t ens_size(const struct ens *s);
size_t ens_batch(const struct ens *s);
const char *ens_member_path(const struct ens *s, size_t i);
double ens_member_weight(const struct ens *s, size_t i); /* normalised */
const struct img_norm *ens_member_norm(const struct ens *s, size_t i);
struct onnx_model *ens_member_model(const struct ens *s, size_t i);
size_t ens_cam_member(const struct ens *s);
/* Output k of member i's last run (NULL before a run or past its outputs). */
const struct onnx_tensor *ens_member_output(const struct ens *s, size_t i, size_t k);

/* Member i's batch tensor (batch x 3 x H x W, its own geometry). */
const float *ens_member_input(const struct ens *s, size_t i);
/* Member i's last feature map: the kept value, or its second output; NULL
 * when it has neither (no CAM) or before a run. */
const struct onnx_tensor *ens_member_features(const struct ens *s, size_t i);
/* The kept value's name of member i, "" if none. */
const char *ens_member_kept(const struct ens *s, size_t i);

/* Preprocesses im into row (< batch) of every member's batch tensor.
 * ERR_NOMEM, or img_preprocess's error. One ens_add at a time (the scratch
 * is the set's), but it may run beside an ens_forward on other rows. */
int ens_add(struct ens *s, size_t row, const struct img *im, struct err *e);
/* One forward pass per member over rows [first, first + n) (n >= 1):
 * out[0..n) as ens_run's, member_probs likewise. */
int ens_forward(struct ens *s, size_t first, size_t n, struct ens_result *out, double *member_probs,
                struct err *e);

/* Grades n (1..batch) decoded images. member_probs, if not NULL, gets each
 * member's probabilities: member_probs[(img * ens_size + member) * 5 + k].
 * ERR_INVALID for non-finite logits (naming the member), or a run error. */
int ens_run(struct ens *s, const struct img *const *ims, size_t n, struct ens_result *out,
            double *member_probs, struct err *e);

#endif
