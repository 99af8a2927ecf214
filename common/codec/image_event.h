/* common/codec/image_event.h: the records of the images pipeline.
 *
 * Plain caller-owned structs with fixed-size fields, like event.h: decoding
 * fills one in place with no allocation per message; strings longer than a
 * field are refused, never cut.
 */
#ifndef STREAMML_IMAGE_EVENT_H
#define STREAMML_IMAGE_EVENT_H

#include <stdbool.h>
#include <stdint.h>

#define IMGEV_ID_MAX 64     /* image/patient ids */
#define IMGEV_URI_MAX 1024  /* image references */
#define IMGEV_GRADES 5      /* grades 0..4 */
#define IMGEV_CAM_MAX 256   /* cells of the coarse CAM grid (16 x 16) */

/* One image to grade (schemas/image_event.avsc). */
struct image_event {
    char image_id[IMGEV_ID_MAX];
    char patient_id[IMGEV_ID_MAX];
    char uri[IMGEV_URI_MAX];
    int64_t event_time_ms;
};

/* One graded image (schemas/image_prediction.avsc). */
struct image_prediction {
    char image_id[IMGEV_ID_MAX];
    char patient_id[IMGEV_ID_MAX];
    int64_t event_time_ms;
    bool ok;                          /* status ok, else ungradable */
    char reason[24];                  /* img_reason_name() or model_error; "" when ok */
    char detail[256];                 /* the error naming the culprit; "" when ok */
    int n_probabilities;              /* IMGEV_GRADES when ok, 0 when ungradable */
    double probabilities[IMGEV_GRADES];
    int32_t grade;                    /* -1 when ungradable */
    double expected_grade;            /* sum k * p_k; -1 when ungradable */
    bool referable;
    double referable_probability;     /* P(grade >= 2); -1 when ungradable */
    double referable_threshold;
    double agreement;                 /* model set members agreeing with grade; -1 ungradable */
    char model_name[64];
    char model_version[32];
    int64_t latency_us;
    char cam_path[512];               /* "" if none */
    int32_t cam_height, cam_width;    /* 0 x 0 if none */
    float cam_grid[IMGEV_CAM_MAX];
    char src_topic[128];
    int32_t src_partition;
    int64_t src_offset;
};

#endif
