/* Mesh clusters: balancing, subsets, outlier ejection and its return, max
 * ejection percent, panic mode, retry-on parsing. Time is a fake clock. */
#include <criterion/criterion.h>
#include <string.h>

#include "agora/mesh.h"

#define SEC 1000000000ull

static struct ag_fake_clock fc;
static struct ag_xoshiro rng;

static struct ag_mesh_cluster *make(size_t n, enum ag_mesh_lb lb, uint32_t c5xx, uint32_t pct,
                                    uint32_t panic)
{
    ag_fake_clock_init(&fc, 1700000000ull * SEC);
    ag_xoshiro_seed(&rng, 42);
    struct ag_mesh_cluster_config cfg = {
        .name = "svc", .nendpoints = n, .lb = lb, .clock = &fc.clock, .rng = &rng.rng};
    static char ports[AG_MESH_MAX_ENDPOINTS];
    for (size_t i = 0; i < n; i++) {
        cfg.endpoints[i].host = "127.0.0.1";
        cfg.endpoints[i].port = (uint16_t)(9000 + i);
        cfg.endpoints[i].labels[0] = i == n - 1 ? "version=v2" : "version=v1";
        cfg.endpoints[i].nlabels = 1;
        (void)ports;
    }
    cfg.subsets[0] =
        (struct ag_mesh_subset_config){.name = "v1", .labels = {"version=v1"}, .nlabels = 1};
    cfg.subsets[1] =
        (struct ag_mesh_subset_config){.name = "v2", .labels = {"version=v2"}, .nlabels = 1};
    cfg.nsubsets = 2;
    cfg.outlier = (struct ag_mesh_outlier_config){.consecutive_5xx = c5xx,
                                                  .interval_ns = 10 * SEC,
                                                  .base_ejection_ns = 30 * SEC,
                                                  .max_ejection_ns = 300 * SEC,
                                                  .max_ejection_pct = pct,
                                                  .panic_threshold_pct = panic};
    struct ag_mesh_cluster *c;
    struct ag_err err;
    cr_assert_eq(ag_mesh_cluster_new(&cfg, &c, &err), 0, "%s", err.msg);
    return c;
}

static void fail_n(struct ag_mesh_cluster *c, size_t idx, int n, int status)
{
    for (int i = 0; i < n; i++) {
        ag_mesh_cluster_begin(c, idx);
        ag_mesh_cluster_end(c, idx, 0, status);
    }
}

Test(mesh, round_robin_even_and_subsets)
{
    struct ag_mesh_cluster *c = make(4, AG_MESH_LB_ROUND_ROBIN, 0, 10, 0);
    int hits[4] = {0};
    for (int i = 0; i < 300; i++) {
        size_t idx;
        cr_assert_eq(ag_mesh_cluster_pick(c, 0, 0, 0, &idx), 0);
        hits[idx]++;
    }
    cr_expect_eq(hits[0], 100);
    cr_expect_eq(hits[1], 100);
    cr_expect_eq(hits[2], 100);
    cr_expect_eq(hits[3], 0, "v2 endpoint is not in subset v1");
    size_t idx;
    cr_assert_eq(ag_mesh_cluster_pick(c, ag_mesh_cluster_subset(c, "v2"), 0, 0, &idx), 0);
    cr_expect_eq(idx, 3);
    cr_expect_eq(ag_mesh_cluster_subset(c, "nope"), -1);
    ag_mesh_cluster_free(c);
}

Test(mesh, avoid_prefers_untried)
{
    struct ag_mesh_cluster *c = make(3, AG_MESH_LB_RANDOM, 0, 10, 0);
    for (int i = 0; i < 50; i++) {
        size_t idx;
        cr_assert_eq(ag_mesh_cluster_pick(c, -1, 0, 0x3, &idx), 0);
        cr_expect_eq(idx, 2);
    }
    ag_mesh_cluster_free(c);
}

Test(mesh, five_xx_ejects_then_returns)
{
    struct ag_mesh_cluster *c = make(3, AG_MESH_LB_ROUND_ROBIN, 5, 50, 0);
    fail_n(c, 1, 4, 500);
    cr_expect_not(ag_mesh_cluster_ejected(c, 1), "4 < 5 consecutive");
    fail_n(c, 1, 1, 200); /* a success resets the streak */
    fail_n(c, 1, 4, 503);
    cr_expect_not(ag_mesh_cluster_ejected(c, 1));
    fail_n(c, 1, 1, 503);
    cr_expect(ag_mesh_cluster_ejected(c, 1), "5 consecutive 5xx eject");
    for (int i = 0; i < 100; i++) {
        size_t idx;
        cr_assert_eq(ag_mesh_cluster_pick(c, -1, 0, 0, &idx), 0);
        cr_expect_neq(idx, 1, "an ejected endpoint is never picked");
    }
    ag_fake_clock_advance(&fc, 30 * SEC - 1);
    cr_expect(ag_mesh_cluster_ejected(c, 1));
    ag_fake_clock_advance(&fc, 1);
    cr_expect_not(ag_mesh_cluster_ejected(c, 1), "back after base ejection time");
    /* second ejection right away lasts twice as long */
    fail_n(c, 1, 5, 500);
    ag_fake_clock_advance(&fc, 59 * SEC);
    cr_expect(ag_mesh_cluster_ejected(c, 1), "base x 2");
    ag_fake_clock_advance(&fc, 1 * SEC);
    cr_expect_not(ag_mesh_cluster_ejected(c, 1));
    /* after a long healthy period the multiplier decays back to 1 */
    ag_fake_clock_advance(&fc, 100 * SEC);
    fail_n(c, 1, 5, 500);
    ag_fake_clock_advance(&fc, 30 * SEC);
    cr_expect_not(ag_mesh_cluster_ejected(c, 1), "decayed multiplier");
    ag_mesh_cluster_free(c);
}

Test(mesh, connect_failures_count_as_gateway_errors)
{
    struct ag_mesh_cluster *c = make(2, AG_MESH_LB_ROUND_ROBIN, 3, 50, 0);
    for (int i = 0; i < 3; i++) {
        ag_mesh_cluster_begin(c, 0);
        ag_mesh_cluster_end(c, 0, AG_ECONNECT, 0);
    }
    cr_expect(ag_mesh_cluster_ejected(c, 0));
    ag_mesh_cluster_free(c);
}

Test(mesh, max_ejection_percent)
{
    struct ag_mesh_cluster *c = make(4, AG_MESH_LB_ROUND_ROBIN, 1, 50, 0);
    for (size_t i = 0; i < 4; i++) fail_n(c, i, 1, 500);
    int ejected = 0;
    for (size_t i = 0; i < 4; i++) ejected += ag_mesh_cluster_ejected(c, i);
    cr_expect_eq(ejected, 2, "50%% of 4");
    ag_mesh_cluster_free(c);
}

Test(mesh, panic_spreads_over_all)
{
    struct ag_mesh_cluster *c = make(4, AG_MESH_LB_ROUND_ROBIN, 1, 100, 60);
    fail_n(c, 0, 1, 500);
    fail_n(c, 1, 1, 500);
    int hits[4] = {0};
    for (int i = 0; i < 400; i++) {
        size_t idx;
        cr_assert_eq(ag_mesh_cluster_pick(c, -1, 0, 0, &idx), 0);
        hits[idx]++;
    }
    cr_expect_gt(hits[0], 0, "50%% healthy < 60%% panic threshold: ejected ones are used too");
    ag_mesh_cluster_free(c);
    c = make(4, AG_MESH_LB_ROUND_ROBIN, 1, 100, 0);
    for (size_t i = 0; i < 4; i++) fail_n(c, i, 1, 500);
    size_t idx;
    cr_expect_eq(ag_mesh_cluster_pick(c, -1, 0, 0, &idx), AG_EUPSTREAM,
                 "no panic mode: nothing healthy");
    ag_mesh_cluster_free(c);
}

Test(mesh, consistent_hash_is_stable)
{
    struct ag_mesh_cluster *c = make(5, AG_MESH_LB_HASH, 1, 100, 0);
    size_t before[200];
    for (uint64_t k = 0; k < 200; k++)
        cr_assert_eq(ag_mesh_cluster_pick(c, -1, ag_xxh3(&k, sizeof k), 0, &before[k]), 0);
    for (uint64_t k = 0; k < 200; k++) {
        size_t idx;
        ag_mesh_cluster_pick(c, -1, ag_xxh3(&k, sizeof k), 0, &idx);
        cr_expect_eq(idx, before[k], "same key, same endpoint");
    }
    fail_n(c, 2, 1, 500);
    int moved = 0;
    for (uint64_t k = 0; k < 200; k++) {
        size_t idx;
        ag_mesh_cluster_pick(c, -1, ag_xxh3(&k, sizeof k), 0, &idx);
        cr_expect_neq(idx, 2);
        moved += idx != before[k];
        if (before[k] != 2) cr_expect_eq(idx, before[k], "only keys of the ejected endpoint move");
    }
    cr_expect_gt(moved, 0);
    ag_mesh_cluster_free(c);
}

Test(mesh, least_request_prefers_idle)
{
    struct ag_mesh_cluster *c = make(2, AG_MESH_LB_LEAST_REQUEST, 0, 10, 0);
    for (int i = 0; i < 10; i++) ag_mesh_cluster_begin(c, 0);
    int hits[2] = {0};
    for (int i = 0; i < 200; i++) {
        size_t idx;
        ag_mesh_cluster_pick(c, -1, 0, 0, &idx);
        hits[idx]++;
    }
    cr_expect_gt(hits[1], hits[0] * 2, "busy endpoint chosen only when both picks land on it");
    for (int i = 0; i < 10; i++) ag_mesh_cluster_end(c, 0, 0, 200);
    ag_mesh_cluster_free(c);
}

Test(mesh, retry_on_parse)
{
    unsigned bits;
    struct ag_err err;
    cr_assert_eq(ag_mesh_retry_on_parse("5xx, connect-failure,reset", &bits, &err), 0);
    cr_expect_eq(bits, AG_MESH_RETRY_5XX | AG_MESH_RETRY_CONNECT_FAILURE | AG_MESH_RETRY_RESET);
    cr_expect_eq(ag_mesh_retry_on_parse("5xx,bogus", &bits, &err), AG_EINVAL);
    cr_expect(strstr(err.msg, "bogus"));
}

Test(mesh, json_describes_endpoints)
{
    struct ag_mesh_cluster *c = make(2, AG_MESH_LB_ROUND_ROBIN, 1, 50, 0);
    fail_n(c, 0, 1, 502);
    json_t *j = ag_mesh_cluster_json(c);
    json_t *e0 = json_array_get(json_object_get(j, "endpoints"), 0);
    cr_expect(json_is_true(json_object_get(e0, "ejected")));
    cr_expect_str_eq(json_string_value(json_object_get(e0, "address")), "127.0.0.1:9000");
    cr_expect_eq(json_integer_value(json_object_get(e0, "ejections")), 1);
    json_decref(j);
    ag_mesh_cluster_free(c);
}
