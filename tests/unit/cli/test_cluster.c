/* `agora cluster` without processes: the --contexts layout (groups, counts,
 * MIN..MAX slots, every context served), cluster.json written and read back (and
 * its errors: the line of a syntax error, the name of a bad field), the gateway
 * configuration it generates (valid, endpoints in rotation only), the URIs and
 * status.json. The cli sources are compiled in (cli is the binary, not a library). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agora/gateway.h"
#include "cli/cluster_conf.c"
#include "cli/cluster_gateway.c"
#include "cli/cluster_proc.c"
#include "cli/cluster_scale.c"
#include "cli/run_gateway.c"

int ag_cli_usage_error(const char *f, ...) /* run_gateway.c's, from main.c */
{
    (void)f;
    return 2;
}

static struct cl_cluster *new_cluster(void)
{
    struct cl_cluster *c = calloc(1, sizeof *c);
    cr_assert(c);
    char tmpl[] = "/tmp/agora-cl-unit-XXXXXX";
    cr_assert(mkdtemp(tmpl));
    snprintf(c->dir, sizeof c->dir, "%s", tmpl);
    snprintf(c->listen, sizeof c->listen, "127.0.0.1:18080");
    snprintf(c->jwt, sizeof c->jwt, "%s", "0123456789abcdef0123456789abcdef");
    return c;
}

static void drop(struct cl_cluster *c)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", c->dir);
    cr_assert_eq(system(cmd), 0);
    free(c);
}

static size_t count(const struct cl_cluster *c, enum cl_role r, bool parked)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n; i++) n += c->m[i].role == r && c->m[i].parked == parked;
    return n;
}

Test(cluster, default_layout_every_context_twice)
{
    struct cl_cluster *c = new_cluster();
    struct ag_err err;
    cr_assert_eq(
        cl_layout(c, "customers,catalog,ordering,inventory,payments,shipping,sagas", 2, &err), 0,
        "%s", err.msg);
    cr_assert_eq(count(c, CL_PG, false), 1);
    cr_assert_eq(count(c, CL_NATS, false), 3);
    cr_assert_eq(count(c, CL_INSTANCE, false), 14);
    cr_assert_eq(count(c, CL_GATEWAY, false), 1);
    cr_assert_str_eq(c->m[4].name, "customers-1");
    cr_assert(c->m[4].seed, "the first instance seeds");
    cr_assert_eq(c->m[4].deps, 0xfull, "after PostgreSQL and the NATS nodes");
    cr_assert_eq(c->m[5].deps, 1ull << 4, "the others after the first");
    cr_assert_eq(c->m[c->n - 1].deps, 1ull << 4, "the gateway after the first");
    drop(c);
}

Test(cluster, groups_counts_and_autoscaled_slots)
{
    struct cl_cluster *c = new_cluster();
    struct ag_err err;
    cr_assert_eq(
        cl_layout(c, "customers+catalog+ordering+sagas=1..3,inventory+payments+shipping", 2, &err),
        0, "%s", err.msg);
    cr_assert_eq(c->ng, 2);
    cr_assert_eq(c->g[0].min, 1);
    cr_assert_eq(c->g[0].max, 3);
    cr_assert_eq(c->g[1].min, 2);
    cr_assert_eq(count(c, CL_INSTANCE, false), 3, "1 + 2 running");
    cr_assert_eq(count(c, CL_INSTANCE, true), 2, "2 slots parked");
    cr_assert_str_eq(c->m[6].name, "customers+catalog+ordering+sagas-3");
    cr_assert(c->m[6].parked);
    cr_assert_eq(c->m[7].contexts, ag_platform_context_bit("inventory") |
                                       ag_platform_context_bit("payments") |
                                       ag_platform_context_bit("shipping"));
    cr_assert_eq(cl_layout(c, "all=1", 2, &err), 0, "%s", err.msg);
    cr_assert_eq(count(c, CL_INSTANCE, false), 1);
    drop(c);
}

Test(cluster, layout_errors_name_the_part)
{
    struct cl_cluster *c = new_cluster();
    struct ag_err err;
    static const struct {
        const char *spec, *says;
    } bad[] = {
        {"customers,billing", "'billing' is not a context"},
        {"customers+catalog+ordering+inventory+payments+sagas", "no group serves 'shipping'"},
        {"all=0", "after '=' a count"},
        {"all=3..2", "after '=' a count"},
        {"all=1..", "after '=' a count"},
        {"all=17", "after '=' a count"},
        {"", "empty"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ag_err_clear(&err);
        cr_assert_neq(cl_layout(c, bad[i].spec, 2, &err), 0, "'%s' accepted", bad[i].spec);
        cr_assert(strstr(err.msg, bad[i].says), "'%s': '%s' does not say '%s'", bad[i].spec,
                  err.msg, bad[i].says);
    }
    drop(c);
}

static void write_json(const struct cl_cluster *c, const char *text)
{
    cr_assert_eq(cl_write_file(c, "cluster.json", text, strlen(text)), 0);
}

Test(cluster, cluster_json_round_trip_and_errors)
{
    struct cl_cluster *c = new_cluster(), *d = calloc(1, sizeof *d);
    struct ag_err err;
    cr_assert_eq(cl_layout(c, "all=1..2", 1, &err), 0);
    cr_assert_eq(cl_pick_ports(c, &err), 0, "%s", err.msg);
    cr_assert_eq(cl_save(c, &err), 0, "%s", err.msg);
    snprintf(d->dir, sizeof d->dir, "%s", c->dir);
    cr_assert_eq(cl_load(d, &err), 0, "%s", err.msg);
    cr_assert_eq(d->n, c->n);
    for (size_t i = 0; i < c->n; i++) {
        cr_assert_str_eq(d->m[i].name, c->m[i].name);
        cr_assert_eq(d->m[i].port, c->m[i].port);
        cr_assert_eq(d->m[i].cport, c->m[i].cport);
        cr_assert_eq(d->m[i].mport, c->m[i].mport);
    }
    cr_assert_str_eq(d->listen, c->listen);
    cr_assert_eq(cl_ports_free(d, &err), 0, "%s", err.msg);

    write_json(c, "{\"agoraCluster\": 1,\n \"contexts\": \"all\",,\n}");
    cr_assert_eq(cl_load(d, &err), AG_ECONFIG);
    cr_assert(strstr(err.msg, "cluster.json:2:"), "%s", err.msg);
    write_json(c, "{\"agoraCluster\": 1, \"contexts\": \"all\", \"instances\": 1, \"nats\": "
                  "[{\"name\": \"nats-1\", \"port\": 1, \"clusterPort\": 2, \"monitorPort\": 3}, "
                  "{\"name\": \"nats-2\", \"port\": 4, \"clusterPort\": 5, \"monitorPort\": 6}, "
                  "{\"name\": \"nats-3\", \"port\": 7, \"clusterPort\": 8, \"monitorPort\": 0}], "
                  "\"members\": [{\"name\": \"all-1\", \"port\": 10}]}");
    cr_assert_eq(cl_load(d, &err), AG_ECONFIG);
    cr_assert(strstr(err.msg, "nats[2].monitorPort: a port number"), "%s", err.msg);
    write_json(c, "{\"agoraCluster\": 1, \"contexts\": \"all\", \"instances\": 1, \"nats\": [], "
                  "\"members\": []}");
    cr_assert_eq(cl_load(d, &err), AG_ECONFIG);
    cr_assert(strstr(err.msg, "nats: an array of 3 entries"), "%s", err.msg);
    write_json(c, "{\"agoraCluster\": 1, \"contexts\": \"bogus\", \"instances\": 1}");
    cr_assert_eq(cl_load(d, &err), AG_ECONFIG);
    cr_assert(strstr(err.msg, "contexts: --contexts: 'bogus' is not a context"), "%s", err.msg);
    free(d);
    drop(c);
}

Test(cluster, gateway_yaml_is_valid_and_lists_the_endpoints_in_rotation)
{
    struct cl_cluster *c = new_cluster();
    struct ag_err err;
    cr_assert_eq(cl_layout(c, "customers+catalog+ordering+sagas=1..2,inventory+payments+shipping=2",
                           1, &err),
                 0);
    uint16_t port = 20000;
    for (size_t i = 0; i < c->n; i++) c->m[i].port = port++;
    c->m[6].draining = true; /* inventory+payments+shipping-1 */
    char *yaml = cl_gateway_yaml(c);
    cr_assert(yaml);
    struct ag_gateway_options o = {.config_yaml = yaml};
    cr_assert_eq(ag_gateway_config_check(&o, &err), 0, "%s\n%s", err.msg, yaml);
    cr_assert(strstr(yaml,
                     "  - host: ordering\n    endpoints:\n      - {address: 127.0.0.1:20004}\n"
                     "    trafficPolicy"),
              "ordering: the first instance only (the second is parked)\n%s", yaml);
    cr_assert(!strstr(yaml, "127.0.0.1:20005"), "a parked slot is not an endpoint");
    cr_assert(!strstr(yaml, "127.0.0.1:20006"), "a draining instance is not an endpoint");
    cr_assert(strstr(yaml,
                     "  - host: shipping\n    endpoints:\n      - {address: 127.0.0.1:20007}\n"
                     "    trafficPolicy"),
              "shipping: the other instance\n%s", yaml);
    cr_assert(strstr(yaml, "secret: \"0123456789abcdef0123456789abcdef\""), "agora run's issuer");
    ag_free(yaml);
    drop(c);
}

Test(cluster, uris_and_status)
{
    struct cl_cluster *c = new_cluster();
    struct ag_err err;
    cr_assert_eq(cl_layout(c, "all", 1, &err), 0);
    for (size_t i = 0; i < c->n; i++) c->m[i].port = (uint16_t)(4000 + i);
    char bus[256], pg[PATH_MAX + 64], want[PATH_MAX + 64];
    cl_bus_uri(c, bus, sizeof bus);
    cr_assert_str_eq(bus, "nats://127.0.0.1:4001,127.0.0.1:4002,127.0.0.1:4003?replicas=3");
    cl_pg_uri(c, pg, sizeof pg);
    snprintf(want, sizeof want, "postgresql:///postgres?host=%s/pg&port=5432&user=postgres",
             c->dir);
    cr_assert_str_eq(pg, want);
    c->state = "running";
    c->m[4].pid = 4242;
    c->m[4].state = CL_UP;
    c->m[4].ready = true;
    c->m[4].restarts = 2;
    c->m[4].started_ms = 1000;
    snprintf(c->m[4].last_exit, sizeof c->m[4].last_exit, "signal 9");
    char *text = cl_status_json(c, 5000);
    json_t *j = json_loads(text, 0, NULL);
    cr_assert(j, "%s", text);
    json_t *m = json_array_get(json_object_get(j, "members"), 4);
    cr_assert_str_eq(json_string_value(json_object_get(m, "name")), "all-1");
    cr_assert_str_eq(json_string_value(json_object_get(m, "role")), "instance");
    cr_assert_eq(json_integer_value(json_object_get(m, "pid")), 4242);
    cr_assert_str_eq(json_string_value(json_object_get(m, "health")), "ready");
    cr_assert_eq(json_integer_value(json_object_get(m, "restarts")), 2);
    cr_assert_eq(json_integer_value(json_object_get(m, "uptimeMs")), 4000);
    cr_assert_str_eq(json_string_value(json_object_get(m, "lastExit")), "signal 9");
    cr_assert(
        json_is_null(json_object_get(json_array_get(json_object_get(j, "members"), 0), "pid")));
    cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "running");
    json_decref(j);
    ag_free(text);
    drop(c);
}
