/* `agora cluster` without processes: the --contexts layout (groups, counts,
 * MIN..MAX slots, every context served), cluster.json written and read back (and
 * its errors: the line of a syntax error, the name of a bad field), the gateway
 * configuration it generates (valid, every cluster on the discovery registry, with
 * mTLS unless plaintext), the certificates (made, kept, renewed near expiry), the
 * URIs and status.json. The cli sources are compiled in (cli is the binary, not a library). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agora/gateway.h"
#include "cli/cluster_conf.c"
#include "cli/cluster_gateway.c"
#include "cli/cluster_proc.c"
#include "cli/cluster_scale.c"
#include "cli/cluster_tls.c"
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

/* the text of DIR/certs/<name>.pem */
static char *pem_text(const struct cl_cluster *c, const char *name)
{
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/certs/%s.pem", c->dir, name);
    FILE *f = fopen(p, "r");
    cr_assert(f, "%s", p);
    char *t = calloc(1, 8192);
    cr_assert(t);
    size_t n = fread(t, 1, 8191, f);
    fclose(f);
    cr_assert(n > 0);
    return t;
}

static mode_t mode_of(const struct cl_cluster *c, const char *rel)
{
    char p[PATH_MAX + 64];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", c->dir, rel);
    cr_assert_eq(stat(p, &st), 0, "%s", p);
    return st.st_mode & 0777;
}

Test(cluster, gateway_yaml_every_cluster_on_discovery_with_mtls)
{
    struct cl_cluster *c = new_cluster();
    struct ag_err err;
    cr_assert_eq(cl_layout(c, "customers+catalog+ordering+sagas=1..2,inventory+payments+shipping=2",
                           1, &err),
                 0);
    uint16_t port = 20000;
    for (size_t i = 0; i < c->n; i++) c->m[i].port = port++;
    c->tls = true;
    cr_assert_eq(cl_certs_prepare(c, &err), 0, "%s", err.msg);
    char *yaml = cl_gateway_yaml(c);
    cr_assert(yaml);
    struct ag_gateway_options o = {.config_yaml = yaml};
    cr_assert_eq(ag_gateway_config_check(&o, &err), 0, "%s\n%s", err.msg, yaml);
    char pg[PATH_MAX + 64], want[3 * PATH_MAX];
    cl_pg_uri(c, pg, sizeof pg);
    snprintf(want, sizeof want,
             "  - host: ordering\n    discovery: {registry: \"%s\", context: \"ordering\"}\n"
             "    trafficPolicy:\n",
             pg);
    cr_assert(strstr(yaml, want), "ordering from the registry\n%s", yaml);
    snprintf(want, sizeof want,
             "  - host: ops\n    discovery: {registry: \"%s\", context: \"*\"}\n", pg);
    cr_assert(strstr(yaml, want), "ops: any member\n%s", yaml);
    cr_assert(!strstr(yaml, "endpoints:"), "no static endpoint list\n%s", yaml);
    snprintf(want, sizeof want,
             "      tls: {mode: MUTUAL, caCertificates: \"%s/certs/ca.pem\", clientCertificate: "
             "\"%s/certs/gateway.pem\", privateKey: \"%s/certs/gateway.key\"}\n",
             c->dir, c->dir, c->dir);
    size_t n = 0;
    for (const char *at = strstr(yaml, want); at; at = strstr(at + 1, want)) n++;
    cr_assert_eq(n, 8, "every cluster (7 contexts and ops) on mTLS: %zu\n%s", n, yaml);
    cr_assert(strstr(yaml, "secret: \"0123456789abcdef0123456789abcdef\""), "agora run's issuer");
    ag_free(yaml);
    c->tls = false; /* --insecure-plaintext */
    yaml = cl_gateway_yaml(c);
    o.config_yaml = yaml;
    cr_assert_eq(ag_gateway_config_check(&o, &err), 0, "%s\n%s", err.msg, yaml);
    cr_assert(!strstr(yaml, "tls:"), "plaintext: no tls\n%s", yaml);
    ag_free(yaml);
    cl_certs_close(c);
    drop(c);
}

Test(cluster, certificates_made_kept_and_renewed_near_expiry)
{
    struct cl_cluster *c = new_cluster();
    struct ag_err err;
    cr_assert_eq(
        cl_layout(c, "customers+catalog+ordering+sagas,inventory+payments+shipping", 1, &err), 0);
    for (size_t i = 0; i < c->n; i++) c->m[i].port = (uint16_t)(21000 + i);
    c->tls = true;
    cr_assert_eq(cl_certs_prepare(c, &err), 0, "%s", err.msg);
    cr_assert_eq(mode_of(c, "certs"), 0700);
    static const char *const names[] = {"ca", "supervisor", "gateway",
                                        "customers_catalog_ordering_sagas-1",
                                        "inventory_payments_shipping-1"};
    char *before[5], rel[128], ca[PATH_MAX + 64], pem[PATH_MAX + 64];
    snprintf(ca, sizeof ca, "%s/certs/ca.pem", c->dir);
    for (size_t i = 0; i < 5; i++) {
        snprintf(rel, sizeof rel, "certs/%s.key", names[i]);
        cr_assert_eq(mode_of(c, rel), 0600, "%s", rel);
        before[i] = pem_text(c, names[i]);
        snprintf(pem, sizeof pem, "%s/certs/%s.pem", c->dir, names[i]);
        if (i) /* a member's, not the CA's own */
            cr_assert_eq(ag_certs_verify(ca, pem, 0, NULL, 0, &err), 0, "%s: %s", names[i],
                         err.msg);
    }
    char path[PATH_MAX + 64];
    cr_assert(cl_cert_path(c, &c->m[4], "pem", path, sizeof path)); /* the first instance */
    snprintf(pem, sizeof pem, "%s/certs/customers_catalog_ordering_sagas-1.pem", c->dir);
    cr_assert_str_eq(path, pem);
    /* a second start keeps everything */
    cl_certs_close(c);
    cr_assert_eq(cl_certs_prepare(c, &err), 0, "%s", err.msg);
    for (size_t i = 0; i < 5; i++) {
        char *now = pem_text(c, names[i]);
        cr_assert_str_eq(now, before[i], "%s issued again at a restart", names[i]);
        free(now);
    }
    /* a member certificate expiring in 5 days is renewed at the next check */
    char dir[PATH_MAX + 64];
    snprintf(dir, sizeof dir, "%s/certs", c->dir);
    static const char *const ips[] = {"127.0.0.1"};
    struct ag_certs_member m = {
        .name = "inventory_payments_shipping-1", .ips = ips, .nips = 1, .days = 5};
    cr_assert_eq(ag_certs_issue(dir, &m, NULL, NULL, 0, &err), 0, "%s", err.msg);
    char *shortlived = pem_text(c, "inventory_payments_shipping-1");
    cl_certs_check(c, c->certs_checked_ms + 1); /* not due yet */
    char *same = pem_text(c, "inventory_payments_shipping-1");
    cr_assert_str_eq(same, shortlived);
    cl_certs_check(c, c->certs_checked_ms + CL_CERT_CHECK_MS);
    char *renewed = pem_text(c, "inventory_payments_shipping-1");
    cr_assert_str_neq(renewed, shortlived, "not renewed");
    snprintf(pem, sizeof pem, "%s/certs/inventory_payments_shipping-1.pem", c->dir);
    cr_assert_eq(ag_certs_verify(ca, pem, (int64_t)time(NULL) + 20 * 86400, NULL, 0, &err), 0,
                 "the renewed certificate is good for 20 days more: %s", err.msg);
    for (size_t i = 0; i < 5; i++) free(before[i]);
    free(shortlived);
    free(same);
    free(renewed);
    cl_certs_close(c);
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
