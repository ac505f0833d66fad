/* Honest sizes for the aggregate cache (issue 19): the aggregates that hold heap
 * (Order's lines, StockItem's and Account's maps, Reservation's lines) report it,
 * counted as malloc sizes blocks; the order-id map starts small, and shrinks and
 * frees its table as entries go, so a burst does not keep its high-water size. */
#include <stdio.h>

#include "unit/domain/dom_test.h"

Test(sizes, heap_block_counts_malloc_overhead)
{
    cr_assert_eq(ag_dom_heap_block(0), 0);
    cr_assert_eq(ag_dom_heap_block(1), 32);
    cr_assert_eq(ag_dom_heap_block(24), 32);
    cr_assert_eq(ag_dom_heap_block(25), 48);
    cr_assert_eq(ag_dom_heap_block(1000), 1008);
}

Test(sizes, order_counts_its_lines)
{
    struct ag_order o;
    dt_begin(&ag_order_aggregate, &o);
    cr_assert_eq(ag_order_bytes(&o), 0);
    dt_ok(D(ag_order_create, {"o1", "c1", "USD"}));
    cr_assert_eq(ag_order_bytes(&o), 0, "no lines, no heap");
    char pid[16];
    for (int i = 0; i < 9; i++) {
        snprintf(pid, sizeof pid, "p%d", i);
        dt_ok(D(ag_order_add_item, {pid, 1, USD(100)}));
    }
    cr_assert_eq(o.nlines, 9);
    cr_assert_eq(ag_order_bytes(&o), ag_dom_heap_block(o.cap * sizeof *o.lines));
    cr_assert_geq(ag_order_bytes(&o), 9 * sizeof *o.lines);
    dt_end();
}

Test(sizes, reservation_of_one_line_is_small)
{
    struct ag_reservation r;
    ag_reservation_init(&r);
    cr_assert_eq(ag_reservation_bytes(&r), 0);
    json_t *d = json_pack("{s:s,s:i}", "productId", "p1", "quantity", 2);
    cr_assert_eq(ag_reservation_evolve(&r, AG_EV_RESERVATION_MADE, d), 0);
    json_decref(d);
    /* 4 slots, not 16: a line or two per order, thousands of orders cached */
    cr_assert_leq(ag_reservation_bytes(&r),
                  ag_dom_heap_block(4 * sizeof(struct ag_dom_idmap_slot)));
    cr_assert_gt(ag_reservation_bytes(&r), 0);
    ag_reservation_free(&r);
}

Test(sizes, stock_map_grows_then_shrinks_and_frees)
{
    struct ag_stock s;
    char oid[40];
    dt_begin(&ag_stock_aggregate, &s);
    dt_ok(D(ag_stock_add, {"p1", 1000000}));
    cr_assert_eq(ag_stock_bytes(&s), 0);
    for (int i = 0; i < 2000; i++) {
        snprintf(oid, sizeof oid, "order-%d", i);
        dt_ok(D(ag_stock_reserve, {oid, 1, NULL}));
    }
    size_t big = ag_stock_bytes(&s);
    cr_assert_geq(big, 2000 * sizeof(struct ag_dom_idmap_slot), "counts every slot: %zu", big);
    for (int i = 0; i < 1990; i++) {
        snprintf(oid, sizeof oid, "order-%d", i);
        dt_ok(D(ag_stock_release, {oid, NULL}));
    }
    cr_assert_eq(ag_stock_reservation_count(&s), 10);
    cr_assert_leq(ag_stock_bytes(&s), big / 64, "shrunk: %zu of %zu", ag_stock_bytes(&s), big);
    for (int i = 1990; i < 2000; i++) { /* the survivors are still found after the shrinks */
        snprintf(oid, sizeof oid, "order-%d", i);
        cr_assert_eq(ag_stock_reservation(&s, oid), 1, "%s", oid);
    }
    for (int i = 1990; i < 2000; i++) {
        snprintf(oid, sizeof oid, "order-%d", i);
        dt_ok(D(ag_stock_release, {oid, NULL}));
    }
    cr_assert_eq(ag_stock_bytes(&s), 0, "an empty map holds no table");
    cr_assert_eq(s.reserved, 0);
    dt_ok(D(ag_stock_reserve, {"again", 3, NULL})); /* and it works after being freed */
    cr_assert_eq(ag_stock_reservation(&s, "again"), 3);
    dt_end();
}
