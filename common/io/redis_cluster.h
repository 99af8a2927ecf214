/* common/io/redis_cluster.h: Redis Cluster routing (prefix rcl_), ours because
 * hiredis 0.14 has none and Debian ships no cluster library.
 *
 * redis.nodes=host:port,... (the seeds) selects cluster mode. The slot map
 * comes from CLUSTER SLOTS (asked of any reachable node); a key goes to the
 * master of its hash slot (CRC16/XMODEM of the key, or of its first
 * non-empty {hash tag}, mod 16384). There is one struct rc (redis_conn.h:
 * connect, AUTH, timeouts, reconnect) per master, so a caller pipelines per
 * node: it appends each command to rcl_node(slot)'s connection, then reads
 * each node's replies in the order it sent them.
 *
 * Redirections: MOVED <slot> <host:port> updates that slot at once and marks
 * the whole map stale (a topology change seldom moves one slot): the next
 * rcl_node refreshes it from CLUSTER SLOTS. ASK <slot> <host:port> is for
 * one command during a migration: rcl_command sends ASKING then the command
 * to the named node. A connection lost marks the map stale as well (a
 * failover promotes a replica elsewhere). Not thread-safe: one rcl per
 * thread, as for rc.
 */
#ifndef STREAMML_REDIS_CLUSTER_H
#define STREAMML_REDIS_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct rc;
struct rc_opts;
struct rcl;
struct redisReply;

#define RCL_SLOTS 16384
#define RCL_NODES_MAX 64

/* The hash slot of a key (honours {hash tags} as Redis does). */
unsigned rcl_keyslot(const char *key, size_t len);
/* A short hash tag that lands on slot s (no braces): "{" tag "}" in a key
 * puts the key on s. Built once, on first use (about 2 ms). */
const char *rcl_slot_tag(unsigned slot);

/* The process's configured redis.nodes (cli_apply records it), NULL when
 * none: users whose options name no nodes take it. */
void rcl_set_default_nodes(const char *nodes);
const char *rcl_default_nodes(void);

/* nodes: "host:port,host:port"; o: credentials and timeout of every node
 * (its host and port are ignored). ERR_CONFIG on a bad list. Connects
 * lazily (rcl_refresh or the first rcl_node). */
int rcl_open(struct rcl **out, const char *nodes, const struct rc_opts *o, struct err *e);
void rcl_close(struct rcl *c); /* NULL-safe */

/* Reloads the slot map from CLUSTER SLOTS of the first node that answers
 * (known masters first, then the seeds). ERR_RETRY when none answers or the
 * map does not cover every slot yet. */
int rcl_refresh(struct rcl *c, struct err *e);
/* The connected master of slot (the map refreshed first when stale). */
int rcl_node(struct rcl *c, unsigned slot, struct rc **out, struct err *e);
/* Index of slot's master in the map (0..rcl_n_nodes), -1 when unknown;
 * rcl_rc gives its connection (not necessarily connected). */
int rcl_node_index(const struct rcl *c, unsigned slot);
size_t rcl_n_nodes(const struct rcl *c);
struct rc *rcl_rc(struct rcl *c, size_t idx);
/* Marks the map stale (the next rcl_node refreshes it). */
void rcl_invalidate(struct rcl *c);

/* An error reply: 1 for MOVED (the slot's entry updated, the map stale), 2
 * for ASK (ask_host and *ask_port filled), 0 otherwise. */
int rcl_redirect(struct rcl *c, const char *msg, char *ask_host, size_t cap, int *ask_port);

/* One command for the key's slot, MOVED and ASK followed (at most 5 hops),
 * TRYAGAIN retried shortly. *out: a reply that is not an error. A server's
 * error reply is returned with its code (rc_reply_code). */
int rcl_command(struct rcl *c, const char *key, size_t keylen, int argc, const char **argv,
                const size_t *argvlen, struct redisReply **out, struct err *e);
/* The same on the connection of slot's master, for callers that already
 * hold the slot (a multi-key script whose keys share it). */
int rcl_command_slot(struct rcl *c, unsigned slot, int argc, const char **argv,
                     const size_t *argvlen, struct redisReply **out, struct err *e);

/* n single-key commands pipelined per master: cmd fills argv (at most
 * RCL_ARGS_MAX; argv[1] is the key) for command i and returns argc; reply
 * gets each command's reply, an error reply included, in the order i. A
 * command redirected (MOVED, ASK) or refused with TRYAGAIN is sent again on
 * its own once every pipeline is read. *done: the replies delivered. On a
 * lost connection every master's connection is closed (none is left out of
 * step) and ERR_RETRY returned. */
#define RCL_ARGS_MAX 8
typedef int (*rcl_cmd_fn)(void *ctx, size_t i, const char **argv, size_t *argvlen);
typedef void (*rcl_reply_fn)(void *ctx, size_t i, const struct redisReply *r);
int rcl_pipeline(struct rcl *c, size_t n, rcl_cmd_fn cmd, rcl_reply_fn reply, void *ctx,
                 size_t *done, struct err *e);

#endif
