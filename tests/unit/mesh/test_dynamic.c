/* Dynamic clusters (service discovery): endpoints added and removed while calls
 * run — a removed endpoint gets no new pick while its tries in flight finish,
 * its slot is reused only after the grace period with nothing in flight, the
 * hash ring follows the live set. Time is a fake clock. */
#include <criterion/criterion.h>
#include <string.h>

#include "agora/mesh.h"

#define SEC 1000000000ull

static struct ag_fake_clock fc;
static struct ag_xoshiro rng;

static struct ag_mesh_cluster *make_dynamic(enum ag_mesh_lb lb)
{
    ag_fake_clock_init(&fc, 1700000000ull * SEC);
    ag_xoshiro_seed(&rng, 7);
    struct ag_mesh_cluster_config cfg = {
        .name = "dyn", .dynamic = true, .lb = lb, .clock = &fc.clock, .rng = &rng.rng};
    struct ag_mesh_cluster *c;
    struct ag_err err;
    cr_assert_eq(ag_mesh_cluster_new(&cfg, &c, &err), 0, "%s", err.msg);
    return c;
}

static int set_ports(struct ag_mesh_cluster *c, const uint16_t *ports, size_t n, bool *changed)
{
    struct ag_mesh_endpoint_config eps[AG_MESH_MAX_ENDPOINTS];
    memset(eps, 0, sizeof eps);
    for (size_t i = 0; i < n; i++) eps[i] = (struct ag_mesh_endpoint_config){"127.0.0.1", ports[i]};
    struct ag_err err;
    return ag_mesh_cluster_set_endpoints(c, eps, n, changed, &err);
}

static uint16_t pick_port(struct ag_mesh_cluster *c)
{
    size_t idx;
    cr_assert_eq(ag_mesh_cluster_pick(c, -1, 0, 0, &idx), 0);
    return ag_mesh_cluster_endpoint(c, idx)->port;
}

Test(mesh_dynamic, starts_empty_then_follows_the_set)
{
    struct ag_mesh_cluster *c = make_dynamic(AG_MESH_LB_ROUND_ROBIN);
    size_t idx;
    cr_assert_eq(ag_mesh_cluster_pick(c, -1, 0, 0, &idx), AG_EUPSTREAM);
    bool changed = false;
    cr_assert_eq(set_ports(c, (uint16_t[]){9001, 9002}, 2, &changed), 0);
    cr_assert(changed);
    cr_assert_eq(ag_mesh_cluster_size(c), 2);
    int seen[2] = {0};
    for (int i = 0; i < 10; i++) seen[pick_port(c) - 9001]++;
    cr_assert(seen[0] == 5 && seen[1] == 5);
    /* the same set again: nothing changes */
    cr_assert_eq(set_ports(c, (uint16_t[]){9002, 9001}, 2, &changed), 0);
    cr_assert_not(changed);
    /* 9001 removed, 9003 added */
    cr_assert_eq(set_ports(c, (uint16_t[]){9002, 9003}, 2, &changed), 0);
    cr_assert(changed);
    for (int i = 0; i < 20; i++) cr_assert_neq(pick_port(c), 9001);
    cr_assert_eq(ag_mesh_cluster_size(c), 2);
    /* everything gone: no pick */
    cr_assert_eq(set_ports(c, NULL, 0, &changed), 0);
    cr_assert_eq(ag_mesh_cluster_pick(c, -1, 0, 0, &idx), AG_EUPSTREAM);
    ag_mesh_cluster_free(c);
}

Test(mesh_dynamic, removed_endpoint_drains_and_its_slot_waits)
{
    struct ag_mesh_cluster *c = make_dynamic(AG_MESH_LB_LEAST_REQUEST);
    cr_assert_eq(set_ports(c, (uint16_t[]){9001}, 1, NULL), 0);
    size_t idx;
    cr_assert_eq(ag_mesh_cluster_pick(c, -1, 0, 0, &idx), 0);
    ag_mesh_cluster_begin(c, idx); /* a try in flight on 9001 */
    cr_assert_eq(set_ports(c, (uint16_t[]){9002}, 1, NULL), 0);
    /* the try still has its endpoint's address; 9002 took another slot */
    cr_assert_eq(ag_mesh_cluster_endpoint(c, idx)->port, 9001);
    for (int i = 0; i < 10; i++) cr_assert_eq(pick_port(c), 9002);
    json_t *j = ag_mesh_cluster_json(c);
    cr_assert_eq(json_array_size(json_object_get(j, "endpoints")), 2); /* 9002 + draining 9001 */
    json_decref(j);
    ag_mesh_cluster_end(c, idx, 0, 200); /* the try finishes */
    j = ag_mesh_cluster_json(c);
    cr_assert_eq(json_array_size(json_object_get(j, "endpoints")), 1);
    json_decref(j);
    /* within the grace period a new endpoint does not take the drained slot */
    cr_assert_eq(set_ports(c, (uint16_t[]){9002, 9003}, 2, NULL), 0);
    size_t i3;
    for (int k = 0; k < 50; k++) {
        cr_assert_eq(ag_mesh_cluster_pick(c, -1, 0, 0, &i3), 0);
        cr_assert_neq(i3, idx);
    }
    /* after it, a new one may */
    ag_fake_clock_advance(&fc, 31 * SEC);
    cr_assert_eq(set_ports(c, (uint16_t[]){9002, 9003, 9004}, 3, NULL), 0);
    cr_assert_eq(ag_mesh_cluster_endpoint(c, idx)->port, 9004);
    ag_mesh_cluster_free(c);
}

Test(mesh_dynamic, hash_ring_follows_members)
{
    struct ag_mesh_cluster *c = make_dynamic(AG_MESH_LB_HASH);
    cr_assert_eq(set_ports(c, (uint16_t[]){9001, 9002, 9003}, 3, NULL), 0);
    uint16_t before[64];
    for (uint64_t k = 0; k < 64; k++) {
        size_t idx;
        cr_assert_eq(ag_mesh_cluster_pick(c, -1, k * 0x9e3779b97f4a7c15ull, 0, &idx), 0);
        before[k] = ag_mesh_cluster_endpoint(c, idx)->port;
    }
    cr_assert_eq(set_ports(c, (uint16_t[]){9001, 9003}, 2, NULL), 0);
    for (uint64_t k = 0; k < 64; k++) {
        size_t idx;
        cr_assert_eq(ag_mesh_cluster_pick(c, -1, k * 0x9e3779b97f4a7c15ull, 0, &idx), 0);
        uint16_t now = ag_mesh_cluster_endpoint(c, idx)->port;
        cr_assert_neq(now, 9002);
        if (before[k] != 9002) cr_assert_eq(now, before[k]); /* only 9002's keys moved */
    }
    ag_mesh_cluster_free(c);
}

Test(mesh_dynamic, static_cluster_refuses_set_and_dynamic_refuses_subsets)
{
    ag_fake_clock_init(&fc, 1700000000ull * SEC);
    struct ag_mesh_cluster_config cfg = {.name = "s", .nendpoints = 1, .clock = &fc.clock};
    cfg.endpoints[0] = (struct ag_mesh_endpoint_config){"127.0.0.1", 9000};
    struct ag_mesh_cluster *c;
    struct ag_err err;
    cr_assert_eq(ag_mesh_cluster_new(&cfg, &c, &err), 0);
    cr_assert_eq(set_ports(c, (uint16_t[]){9001}, 1, NULL), AG_EINVAL);
    ag_mesh_cluster_free(c);
    struct ag_mesh_cluster_config d = {.name = "d", .dynamic = true, .nsubsets = 1};
    d.subsets[0] = (struct ag_mesh_subset_config){.name = "v1", .labels = {"v=1"}, .nlabels = 1};
    cr_assert_eq(ag_mesh_cluster_new(&d, &c, &err), AG_EINVAL);
}
