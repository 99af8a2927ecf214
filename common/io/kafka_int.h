/* common/io/kafka_int.h: what kafka.c and kafka_close.c share (the handle's
 * layout); not for other modules, which use kafka.h. */
#ifndef STREAMML_KAFKA_INT_H
#define STREAMML_KAFKA_INT_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

#include "kafka.h"

#define KQ_MAX_TOPICS 16
#define KQ_UNTRACKED ((void *)UINTPTR_MAX)

/* In-flight input messages of one partition, in poll (= offset) order. */
struct track {
    int32_t topic_idx;
    int32_t partition;
    int64_t *offs;
    unsigned char *flags;
    size_t head, count, cap;   /* ring buffer */
    int64_t store_next;        /* offset to store (last done + 1), -1 none */
    int dirty;
};

struct kq {
    rd_kafka_t *cons;
    rd_kafka_t *prod;
    char *topics[KQ_MAX_TOPICS];
    size_t n_topics;
    struct track *tracks;
    size_t n_tracks, cap_tracks;
    size_t track_hint; /* the track found last: a batch comes in runs per partition */
    size_t inflight;
    int assign_all, from_beginning;
    size_t n_assigned, n_eof;
    int fatal;
    int paused;                /* kq_pause: every assigned partition paused */
    char fatal_msg[256];
    struct kq_stats st;
    void (*stats_cb)(const char *json, size_t len, void *opaque);
    void *stats_opaque;
    int (*on_assign)(const char *topic, int32_t partition, void *opaque);
    void (*on_revoke)(const char *topic, int32_t partition, void *opaque);
    void *assign_opaque;
    /* during on_assign: the group's committed offsets of the partitions
     * being assigned (NULL: unknown) */
    rd_kafka_topic_partition_list_t *assign_committed;
    int commit_interval_ms;    /* kq_opts.commit_interval_ms */
    int64_t last_commit_ms;
    int stored_uncommitted;    /* offsets stored since the last commit */
    size_t n_dirty;            /* tracks with an offset to store (kq_ack) */
    struct kq_box *boxes;      /* released message wrappers, reused by kq_poll */
    /* Producer topic handles by name, made on first use: producing by name
     * took, per record, a locked lookup of the topic, a reference and its
     * release inside librdkafka (rd_kafka_producev with RD_KAFKA_V_TOPIC). */
    struct {
        char *name;
        rd_kafka_topic_t *rkt;
    } ptopics[KQ_MAX_TOPICS];
    size_t n_ptopics;
};

/* A message wrapper, recycled through its handle's free list so that
 * kq_poll allocates only while the number of messages held grows. */
struct kq_box {
    struct kq_msg m; /* first: kq_msg_release casts back */
    struct kq *q;
    struct kq_box *next;
};

int64_t kq_mono_ms(void);                 /* CLOCK_MONOTONIC, ms */
void kq_store_offsets(struct kq *q);      /* every track's done offsets stored */
void kq_prod_topics_free(struct kq *q);   /* the producer's topic handles */

#endif
