/* The registry and resolver (src/discovery) on a throwaway PostgreSQL
 * (tests/lib/pgtmp.sh): a member registers and is resolved into a watched
 * cluster, a member whose heartbeat is older than the TTL is listed unhealthy and
 * resolved out, a clean stop deregisters, "*" takes every live member, and a
 * registry that is not PostgreSQL is refused. Polls are driven by
 * ag_disc_refresh (the threads' interval is long), so nothing waits on time. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "agora/discovery.h"
#include "agora/readmodel.h"

static const char *uri(void)
{
    const char *u = getenv("AGORA_TEST_PG_URI");
    if (!u) cr_skip_test("AGORA_TEST_PG_URI is not set (run through tests/lib/pgtmp.sh)");
    return u;
}

static struct ag_disc *member(const char *id, const char *contexts, const char *address)
{
    struct ag_disc_self self = {.id = id, .contexts = contexts, .address = address};
    struct ag_disc_config cfg = {.registry = uri(), .self = &self, .interval_ms = 3600000};
    struct ag_disc *d;
    struct ag_err err;
    cr_assert_eq(ag_disc_start(&cfg, &d, &err), 0, "%s", err.msg);
    return d;
}

static struct ag_mesh_cluster *dynamic(const char *name)
{
    struct ag_mesh_cluster_config cc = {.name = name, .dynamic = true};
    struct ag_mesh_cluster *c;
    struct ag_err err;
    cr_assert_eq(ag_mesh_cluster_new(&cc, &c, &err), 0, "%s", err.msg);
    return c;
}

static json_t *find(json_t *members, const char *id)
{
    size_t i;
    json_t *m;
    json_array_foreach(members, i, m) if (strcmp(json_string_value(json_object_get(m, "id")), id) ==
                                          0) return m;
    return NULL;
}

Test(registry, register_resolve_expire_deregister)
{
    struct ag_disc *a = member("unit-a", "inventory payments", "127.0.0.1:9101");
    struct ag_disc *b = member("unit-b", "ordering", "127.0.0.1:9102");
    struct ag_disc_config rc = {.registry = uri(), .interval_ms = 3600000};
    struct ag_disc *r;
    struct ag_err err;
    cr_assert_eq(ag_disc_start(&rc, &r, &err), 0, "%s", err.msg);
    struct ag_mesh_cluster *inv = dynamic("inventory"), *any = dynamic("ops");
    cr_assert_eq(ag_disc_watch(r, "inventory", inv), 0);
    cr_assert_eq(ag_disc_watch(r, "*", any), 0);
    cr_assert_eq(ag_mesh_cluster_size(inv), 1);
    cr_assert_eq(ag_mesh_cluster_size(any), 2);
    size_t idx;
    cr_assert_eq(ag_mesh_cluster_pick(inv, -1, 0, 0, &idx), 0);
    cr_assert_eq(ag_mesh_cluster_endpoint(inv, idx)->port, 9101);

    json_t *j = ag_disc_members_json(a);
    json_t *ma = find(json_object_get(j, "members"), "unit-a");
    cr_assert(ma);
    cr_assert(json_is_true(json_object_get(ma, "healthy")));
    cr_assert(json_is_true(json_object_get(ma, "self")));
    cr_assert_str_eq(json_string_value(json_object_get(ma, "address")), "127.0.0.1:9101");
    cr_assert_eq(json_array_size(json_object_get(ma, "contexts")), 2);
    json_decref(j);

    /* a member that stopped heartbeating (its process killed): older than the TTL */
    struct ag_rm *db;
    cr_assert_eq(ag_rm_open(uri(), "registry", AG_RM_READWRITE, &db, &err), 0, "%s", err.msg);
    cr_assert_eq(ag_rm_exec(db,
                            "INSERT INTO members (id, contexts, address, pid, started_at,"
                            " heartbeat_at) VALUES ('unit-dead', 'inventory', '127.0.0.1:9103', 1,"
                            " 0, (extract(epoch from clock_timestamp()) * 1000)::bigint - 6000)",
                            NULL, 0, &err),
                 0, "%s", err.msg);
    cr_assert_eq(ag_disc_refresh(r, &err), 0, "%s", err.msg);
    cr_assert_eq(ag_mesh_cluster_size(inv), 1, "a stale member is not resolved");
    j = ag_disc_members_json(r);
    json_t *dead = find(json_object_get(j, "members"), "unit-dead");
    cr_assert(dead);
    cr_assert(json_is_false(json_object_get(dead, "healthy")));
    json_decref(j);
    ag_rm_close(db);

    /* a clean stop deregisters */
    ag_disc_stop(a);
    cr_assert_eq(ag_disc_refresh(r, &err), 0, "%s", err.msg);
    cr_assert_eq(ag_mesh_cluster_size(inv), 0);
    cr_assert_eq(ag_mesh_cluster_size(any), 1);
    j = ag_disc_members_json(r);
    cr_assert_null(find(json_object_get(j, "members"), "unit-a"));
    json_decref(j);
    ag_disc_unwatch(r, inv);
    ag_disc_unwatch(r, any);
    ag_disc_stop(r);
    ag_disc_stop(b);
    ag_mesh_cluster_free(inv);
    ag_mesh_cluster_free(any);
}

Test(registry, needs_postgresql)
{
    struct ag_disc_config cfg = {.registry = "sqlite:/tmp/x"};
    struct ag_disc *d;
    struct ag_err err;
    cr_assert_eq(ag_disc_start(&cfg, &d, &err), AG_EINVAL);
    cr_assert(strstr(err.msg, "PostgreSQL"), "%s", err.msg);
}
