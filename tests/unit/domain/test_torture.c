/* Allocation failure: the Nth ag_malloc (and every later one) fails while an
 * aggregate decides, evolves and restores. jansson allocates through ag_malloc as
 * well, so the JSON the aggregates build fails too. Every call must return 0 or
 * AG_ENOMEM, never crash, and (under ASan) never leak; N grows until the scenario
 * completes. */
#include <stdio.h>

#include "unit/domain/dom_test.h"

/* Decide with fn, then evolve; 0 or the first error. */
#define STEP(agg, st, fn, ...)                                                                     \
    do {                                                                                           \
        rc = fn(st, &(struct fn)__VA_ARGS__, &ev, NULL);                                           \
        for (size_t i_ = 0; rc == 0 && i_ < ev.n; i_++)                                            \
            rc = (agg)->evolve(st, ev.v[i_].type, ev.v[i_].data);                                  \
        ag_dom_events_free(&ev);                                                                   \
        if (rc) goto out;                                                                          \
    } while (0)

static int order_scenario(struct ag_order *o)
{
    struct ag_dom_events ev;
    char pid[16];
    int rc;
    ag_dom_events_init(&ev);
    STEP(&ag_order_aggregate, o, ag_order_create, {"o1", "c1", "USD"});
    for (int i = 0; i < 9; i++) {
        snprintf(pid, sizeof pid, "p%d", i);
        STEP(&ag_order_aggregate, o, ag_order_add_item, {pid, 1, USD(100)});
    }
    json_t *snap = ag_order_snapshot(o);
    struct ag_order copy;
    ag_order_init(&copy);
    rc = snap ? ag_order_restore(&copy, snap) : AG_ENOMEM;
    json_decref(snap);
    ag_order_free(&copy);
out:
    ag_dom_events_free(&ev);
    return rc;
}

static int stock_scenario(struct ag_stock *s)
{
    struct ag_dom_events ev;
    char oid[16];
    int rc;
    ag_dom_events_init(&ev);
    STEP(&ag_stock_aggregate, s, ag_stock_add, {"p1", 1000});
    for (int i = 0; i < 40; i++) {
        snprintf(oid, sizeof oid, "o%d", i);
        STEP(&ag_stock_aggregate, s, ag_stock_reserve, {oid, 1});
    }
    STEP(&ag_stock_aggregate, s, ag_stock_release, {"o3", NULL});
    json_t *snap = ag_stock_snapshot(s);
    struct ag_stock copy;
    ag_stock_init(&copy);
    rc = snap ? ag_stock_restore(&copy, snap) : AG_ENOMEM;
    json_decref(snap);
    ag_stock_free(&copy);
out:
    ag_dom_events_free(&ev);
    return rc;
}

Test(torture, order_under_failing_allocations)
{
    int ok = 0;
    for (long n = 1; n < 5000 && !ok; n++) {
        struct ag_order o;
        ag_order_init(&o);
        ag_alloc_fail_at(n);
        int rc = order_scenario(&o);
        ag_alloc_fail_at(0);
        cr_assert(rc == 0 || rc == AG_ENOMEM, "n=%ld rc=%s", n, ag_errname(rc));
        ok += rc == 0;
        ag_order_free(&o);
    }
    cr_assert_gt(ok, 0, "the scenario completes once allocations suffice");
}

Test(torture, stock_under_failing_allocations)
{
    int ok = 0;
    for (long n = 1; n < 5000 && !ok; n++) {
        struct ag_stock s;
        ag_stock_init(&s);
        ag_alloc_fail_at(n);
        int rc = stock_scenario(&s);
        ag_alloc_fail_at(0);
        cr_assert(rc == 0 || rc == AG_ENOMEM, "n=%ld rc=%s", n, ag_errname(rc));
        ok += rc == 0;
        if (rc == AG_ENOMEM) cr_assert_leq(s.reserved, s.on_hand);
        ag_stock_free(&s);
    }
    cr_assert_gt(ok, 0);
}
