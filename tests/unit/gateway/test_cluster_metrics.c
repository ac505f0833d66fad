/* The agora_cluster_* series a cluster's gateway exports from the supervisor's
 * status.json (src/gateway/cluster_metrics.c): gauges follow the file; counters
 * follow the supervisor's counts and, when another supervisor (another pid) writes
 * the file, add its counts from 0 so they never go down; a file being written (not
 * JSON) leaves the last figures. The gateway is started on 127.0.0.1:0 with the
 * test's registry, which is rendered directly (no HTTP). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway/internal.h"

static const char yaml[] = "destinationRules:\n"
                           "  - host: svc\n"
                           "    endpoints: [{address: 127.0.0.1:9}]\n"
                           "virtualServices:\n"
                           "  - name: t\n"
                           "    http:\n"
                           "      - name: all\n"
                           "        route: [{destination: {host: svc}}]\n";

static void write_status(const char *path, int pid, int ups, int downs, int restarts)
{
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fprintf(f,
            "{\"state\": \"running\", \"supervisor\": {\"pid\": %d},\n"
            " \"groups\": [{\"name\": \"all\", \"instances\": 2, \"utilisation\": 0.75,"
            " \"scaleUps\": %d, \"scaleDowns\": %d}],\n"
            " \"members\": [{\"name\": \"all-1\", \"restarts\": %d},"
            " {\"name\": \"nats-1\", \"restarts\": 0}]}\n",
            pid, ups, downs, restarts);
    fclose(f);
}

/* the value of series `key` (name and labels) in the rendered registry, or -1 */
static double value(struct ag_obs_registry *r, const char *key)
{
    struct ag_buf b;
    ag_buf_init(&b);
    cr_assert_eq(ag_obs_registry_render(r, &b), 0);
    cr_assert_eq(ag_buf_putc(&b, 0), 0);
    double v = -1;
    size_t n = strlen(key);
    for (const char *at = strstr(b.data, key); at; at = strstr(at + 1, key))
        if ((at == b.data || at[-1] == '\n') && at[n] == ' ') v = strtod(at + n + 1, NULL);
    ag_buf_free(&b);
    return v;
}

#define UPS   "agora_cluster_scale_decisions_total{context=\"all\",direction=\"up\"}"
#define DOWNS "agora_cluster_scale_decisions_total{context=\"all\",direction=\"down\"}"
#define RESTA "agora_cluster_member_restarts_total{member=\"all-1\"}"

Test(gateway_cluster_metrics, follow_status_json_and_never_go_down)
{
    ag_log_set_level(AG_LOG_OFF);
    char path[] = "/tmp/agora-clm-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    write_status(path, 100, 2, 1, 3);
    struct ag_obs_registry *reg = NULL;
    cr_assert_eq(ag_obs_registry_new(&reg), 0);
    struct ag_gateway_options o = {.config_yaml = yaml,
                                   .listen = "127.0.0.1:0",
                                   .workers = 1,
                                   .metrics = reg,
                                   .cluster_status = path};
    struct ag_gateway *gw = NULL;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_gateway_start(&o, &gw, &err);
    cr_assert_eq(rc, 0, "%s", ag_err_msg(&err, rc));

    cr_expect_eq(value(reg, "agora_cluster_instances{context=\"all\"}"), 2);
    cr_expect_eq(value(reg, "agora_cluster_utilisation{context=\"all\"}"), 0.75);
    cr_expect_eq(value(reg, UPS), 2);
    cr_expect_eq(value(reg, DOWNS), 1);
    cr_expect_eq(value(reg, RESTA), 3);
    cr_expect_eq(value(reg, "agora_cluster_member_restarts_total{member=\"nats-1\"}"), 0);

    write_status(path, 100, 3, 1, 3); /* the same supervisor: one decision more */
    cr_expect_eq(value(reg, UPS), 3);
    cr_expect_eq(value(reg, DOWNS), 1);

    FILE *f = fopen(path, "w"); /* being written: the last figures stay */
    cr_assert(f);
    fputs("{\"state\": \"runn", f);
    fclose(f);
    cr_expect_eq(value(reg, UPS), 3);

    write_status(path, 200, 1, 0, 1); /* a new supervisor counts from 0: added */
    cr_expect_eq(value(reg, UPS), 4);
    cr_expect_eq(value(reg, DOWNS), 1);
    cr_expect_eq(value(reg, RESTA), 4);
    write_status(path, 200, 2, 1, 1);
    cr_expect_eq(value(reg, UPS), 5);
    cr_expect_eq(value(reg, DOWNS), 2);

    ag_gateway_stop(gw, 0);
    ag_obs_registry_free(reg);
    unlink(path);
}
