#include "rcluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

void test_rcluster_cli(int port, const char *args, char *out, size_t cap)
{
    char cmd[600];
    FILE *p;

    snprintf(cmd, sizeof(cmd), "redis-cli -p %d %s 2>&1", port, args);
    out[0] = '\0';
    p = popen(cmd, "r");
    if (!p)
        return;
    if (!fgets(out, (int)cap, p))
        out[0] = '\0';
    out[strcspn(out, "\n")] = '\0';
    while (fgetc(p) != EOF)
        ;
    pclose(p);
}

int test_rcluster_index(const struct test_rcluster *c, int port)
{
    for (int i = 0; i < RCLUSTER_NODES; i++)
        if (c->node[i].pid > 0 && c->node[i].port == port)
            return i;
    return -1;
}

int test_rcluster_start(struct test_rcluster *c)
{
    char cmd[1024], bus[16];
    const char *extra[] = {"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                           "--cluster-node-timeout", "1000", "--cluster-port", bus,
                           "--cluster-replica-validity-factor", "0", NULL};
    size_t at;
    int rc;

    memset(c, 0, sizeof(*c));
    at = (size_t)snprintf(cmd, sizeof(cmd), "redis-cli --cluster create");
    for (int i = 0; i < RCLUSTER_NODES; i++) {
        snprintf(bus, sizeof(bus), "%d", test_free_port());
        if (test_redis_start_opts(&c->node[i], 0, extra)) {
            test_rcluster_stop(c);
            return -1;
        }
        at += (size_t)snprintf(cmd + at, sizeof(cmd) - at, " 127.0.0.1:%d", c->node[i].port);
        snprintf(c->nodes + strlen(c->nodes), sizeof(c->nodes) - strlen(c->nodes), "%s127.0.0.1:%d",
                 i ? "," : "", c->node[i].port);
    }
    snprintf(cmd + at, sizeof(cmd) - at, " --cluster-replicas 1 --cluster-yes >%s/create.log 2>&1",
             c->node[0].dir);
    rc = system(cmd);
    if (rc != 0 || test_rcluster_wait_ok(c, 30000)) {
        fprintf(stderr, "redis cluster did not form (see %s/create.log)\n", c->node[0].dir);
        test_rcluster_stop(c);
        return -1;
    }
    return 0;
}

void test_rcluster_stop(struct test_rcluster *c)
{
    for (int i = 0; i < RCLUSTER_NODES; i++)
        if (c->node[i].port)
            test_redis_stop(&c->node[i]);
}

int test_rcluster_wait_ok(const struct test_rcluster *c, int timeout_ms)
{
    char out[256];

    for (int waited = 0; waited < timeout_ms; waited += 100) {
        int ok = 1;
        for (int i = 0; i < RCLUSTER_NODES && ok; i++) {
            if (c->node[i].pid <= 0)
                continue;
            test_rcluster_cli(c->node[i].port, "CLUSTER INFO", out, sizeof(out));
            ok = strstr(out, "cluster_state:ok") != NULL;
        }
        /* every slot's master alive */
        for (unsigned s = 0; s < 16384 && ok; s += 5461)
            ok = test_rcluster_index(c, test_rcluster_master_of(c, s)) >= 0;
        if (ok)
            return 0;
        test_sleep_ms(100);
    }
    return -1;
}

/* From CLUSTER NODES: "<id> <ip:port@bus> <flags> <master> <ping> <pong>
 * <epoch> <link> <slot ranges...>", a master's line naming the slot. */
int test_rcluster_master_of(const struct test_rcluster *c, unsigned slot)
{
    char cmd[200], line[4096];
    int port = 0;

    for (int i = 0; i < RCLUSTER_NODES && !port; i++) {
        FILE *p;
        if (c->node[i].pid <= 0)
            continue;
        snprintf(cmd, sizeof(cmd), "redis-cli -p %d CLUSTER NODES 2>/dev/null", c->node[i].port);
        if (!(p = popen(cmd, "r")))
            continue;
        while (fgets(line, sizeof(line), p)) {
            char *tok[64], *save = NULL;
            int nt = 0;
            for (char *t = strtok_r(line, " \n", &save); t && nt < 64;
                 t = strtok_r(NULL, " \n", &save))
                tok[nt++] = t;
            if (nt < 9 || !strstr(tok[2], "master") || strstr(tok[2], "fail"))
                continue;
            for (int k = 8; k < nt && !port; k++) {
                char *dash;
                long lo, hi;
                if (tok[k][0] == '[')
                    continue; /* a migration in progress */
                lo = strtol(tok[k], &dash, 10);
                hi = *dash == '-' ? strtol(dash + 1, NULL, 10) : lo;
                if (lo <= (long)slot && (long)slot <= hi)
                    port = atoi(strchr(tok[1], ':') + 1);
            }
        }
        pclose(p);
    }
    return port;
}

int test_rcluster_move_slot(const struct test_rcluster *c, unsigned slot, int to_port, int batch,
                            int pause_ms)
{
    char args[400], out[256], from_id[64], to_id[64];
    int from = test_rcluster_master_of(c, slot), ok;

    if (!from || from == to_port)
        return -1;
    test_rcluster_cli(from, "CLUSTER MYID", from_id, sizeof(from_id));
    test_rcluster_cli(to_port, "CLUSTER MYID", to_id, sizeof(to_id));
    snprintf(args, sizeof(args), "CLUSTER SETSLOT %u IMPORTING %s", slot, from_id);
    test_rcluster_cli(to_port, args, out, sizeof(out));
    if (strcmp(out, "OK"))
        return -1;
    snprintf(args, sizeof(args), "CLUSTER SETSLOT %u MIGRATING %s", slot, to_id);
    test_rcluster_cli(from, args, out, sizeof(out));
    if (strcmp(out, "OK"))
        return -1;
    for (;;) {
        char cmd[600], key[600];
        FILE *p;
        size_t at;
        int n = 0;
        snprintf(cmd, sizeof(cmd), "redis-cli -p %d CLUSTER GETKEYSINSLOT %u %d", from, slot,
                 batch);
        p = popen(cmd, "r");
        if (!p)
            return -1;
        at = (size_t)snprintf(args, sizeof(args), "MIGRATE 127.0.0.1 %d \"\" 0 5000 KEYS",
                              to_port);
        while (fgets(key, sizeof(key), p)) {
            key[strcspn(key, "\n")] = '\0';
            if (!*key || at + strlen(key) + 4 >= sizeof(args))
                continue;
            at += (size_t)snprintf(args + at, sizeof(args) - at, " '%s'", key);
            n++;
        }
        pclose(p);
        if (!n)
            break;
        test_rcluster_cli(from, args, out, sizeof(out));
        test_sleep_ms(pause_ms);
    }
    snprintf(args, sizeof(args), "CLUSTER SETSLOT %u NODE %s", slot, to_id);
    test_rcluster_cli(to_port, args, out, sizeof(out));
    ok = strcmp(out, "OK") == 0;
    test_rcluster_cli(from, args, out, sizeof(out));
    for (int i = 0; i < RCLUSTER_NODES; i++) /* replicas and the third master learn it too */
        if (c->node[i].pid > 0 && c->node[i].port != from && c->node[i].port != to_port)
            test_rcluster_cli(c->node[i].port, args, out, sizeof(out));
    return ok ? 0 : -1;
}
