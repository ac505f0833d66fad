/* The per-order Reservation beside the StockItem counters (issue 19): a line is
 * held once, released once, shipped once; the stock's counters stay exact; its
 * state does not grow with the orders; logs from before still replay and their
 * reservations are released and shipped the old way. */
#include "unit/domain/dom_test.h"

static struct ag_stock stock;
static struct ag_reservation res[4]; /* orders o0..o3 */
static struct ag_dom_events es, er;
static struct ag_err err;

static void setup(void)
{
    dt_begin(&ag_stock_aggregate, &stock);
    for (int i = 0; i < 4; i++) ag_reservation_init(&res[i]);
    ag_dom_events_init(&es);
    ag_dom_events_init(&er);
    cr_assert_eq(dt_ok(D(ag_stock_add, {"p1", 10})), 1);
}

static void teardown(void)
{
    ag_dom_events_free(&es);
    ag_dom_events_free(&er);
    for (int i = 0; i < 4; i++) ag_reservation_free(&res[i]);
    dt_end();
}

TestSuite(reservation, .init = setup, .fini = teardown);

static void fresh(void)
{
    ag_dom_events_free(&es);
    ag_dom_events_free(&er);
    ag_err_clear(&err);
}

static size_t apply_both(int rc, struct ag_reservation *r)
{
    cr_assert_eq(rc, 0, "decide failed: %s", err.msg);
    for (size_t i = 0; i < es.n; i++)
        cr_assert_eq(ag_stock_evolve(&stock, es.v[i].type, es.v[i].data), 0);
    for (size_t i = 0; i < er.n; i++)
        cr_assert_eq(ag_reservation_evolve(r, er.v[i].type, er.v[i].data), 0);
    return es.n + er.n;
}

static const char *oid(int i)
{
    static const char *const ids[] = {"o0", "o1", "o2", "o3"};
    return ids[i];
}

static int hold(int o, int64_t q)
{
    fresh();
    struct ag_reservation_hold h = {oid(o), "p1", q};
    return ag_reservation_hold(&stock, &res[o], &h, &es, &er, &err);
}

static size_t held(int o, int64_t q)
{
    return apply_both(hold(o, q), &res[o]);
}

static size_t released(int o)
{
    fresh();
    struct ag_reservation_release r = {oid(o), "p1", NULL};
    return apply_both(ag_reservation_release(&stock, &res[o], &r, &es, &er, &err), &res[o]);
}

static size_t shipped(int o)
{
    fresh();
    struct ag_reservation_ship s = {oid(o), "p1"};
    return apply_both(ag_reservation_ship(&stock, &res[o], &s, &es, &er, &err), &res[o]);
}

Test(reservation, hold_once)
{
    cr_assert_eq(held(0, 3), 2);
    cr_assert_str_eq(es.v[0].type, "StockHeld");
    cr_assert_str_eq(jstr(es.v[0].data, "orderId"), "o0");
    cr_assert_eq(jint(es.v[0].data, "quantity", NULL), 3);
    cr_assert_str_eq(er.v[0].type, "ReservationMade");
    cr_assert_str_eq(jstr(er.v[0].data, "productId"), "p1");
    cr_assert_eq(stock.reserved, 3);
    cr_assert_eq(ag_reservation_line(&res[0], "p1"), 3);
    cr_assert_eq(held(0, 3), 0, "twice: no events");
    cr_assert_eq(held(0, 5), 0, "whatever the quantity");
    cr_assert_eq(stock.reserved, 3);
}

Test(reservation, released_once)
{
    held(0, 3);
    cr_assert_eq(released(0), 2);
    cr_assert_str_eq(es.v[0].type, "StockFreed");
    cr_assert_eq(jint(es.v[0].data, "quantity", NULL), 3);
    cr_assert_str_eq(er.v[0].type, "ReservationReleased");
    cr_assert_str_eq(jstr(er.v[0].data, "reason"), "released");
    cr_assert_eq(stock.reserved, 0);
    cr_assert_eq(released(0), 0, "released twice: no events");
    cr_assert_eq(released(1), 0, "never held: no events");
    cr_assert_eq(stock.reserved, 0);
    /* a retried reservation step takes it anew */
    cr_assert_eq(held(0, 4), 2);
    cr_assert_eq(stock.reserved, 4);
}

Test(reservation, shipped_once_and_for_good)
{
    held(0, 3);
    cr_assert_eq(shipped(0), 2);
    cr_assert_str_eq(es.v[0].type, "StockDispatched");
    cr_assert_str_eq(er.v[0].type, "ReservationShipped");
    cr_assert_eq(stock.on_hand, 7);
    cr_assert_eq(stock.reserved, 0);
    cr_assert_eq(shipped(0), 0);
    cr_assert_eq(released(0), 0);
    cr_assert_eq(held(0, 3), 0, "a shipped line is not held again");
    cr_assert_eq(stock.on_hand, 7);
    cr_assert_eq(stock.reserved, 0);
}

Test(reservation, stock_exact)
{
    cr_assert_eq(held(0, 4), 2);
    cr_assert_eq(held(1, 5), 2);
    int rc = hold(2, 2);
    cr_assert_eq(rc, AG_EDOMAIN);
    cr_assert(strstr(err.msg, "insufficient stock for product p1: requested 2, available 1"), "%s",
              err.msg);
    cr_assert_eq(es.n + er.n, 0);
    cr_assert_eq(held(2, 1), 2);
    cr_assert_eq(ag_stock_available(&stock), 0);
    released(1);
    shipped(0);
    held(3, 5);
    released(3);
    released(3);
    cr_assert_eq(stock.on_hand, 6);
    cr_assert_eq(stock.reserved, 1, "only o2's unit");
    int64_t sum = 0;
    for (int i = 0; i < 4; i++) sum += AG_MAX(ag_reservation_line(&res[i], "p1"), 0);
    cr_assert_eq(stock.reserved, sum, "reserved = Σ held lines");
    cr_assert_eq(hold(0, 0), 0, "o0 is shipped: no-op before any check");
    fresh();
    struct ag_reservation_hold h = {"o9", "p1", 0};
    struct ag_reservation r9;
    ag_reservation_init(&r9);
    cr_assert_eq(ag_reservation_hold(&stock, &r9, &h, &es, &er, &err), AG_EINVAL);
    ag_reservation_free(&r9);
}

Test(reservation, stock_state_does_not_grow_with_orders)
{
    cr_assert_eq(dt_ok(D(ag_stock_add, {"p1", 100000})), 1);
    for (int i = 0; i < 2000; i++) {
        char o[16];
        snprintf(o, sizeof o, "x%d", i);
        struct ag_reservation r;
        ag_reservation_init(&r);
        fresh();
        struct ag_reservation_hold h = {o, "p1", 2};
        apply_both(ag_reservation_hold(&stock, &r, &h, &es, &er, &err), &r);
        ag_reservation_free(&r);
    }
    cr_assert_eq(stock.reserved, 4000);
    cr_assert_eq(ag_stock_reservation_count(&stock), 0, "the stock item keeps counters only");
    json_t *s = ag_stock_snapshot(&stock);
    char *t = json_dumps(s, JSON_COMPACT);
    cr_assert_lt(strlen(t), 120, "%s", t);
    struct ag_stock copy;
    dt_roundtrip(&copy);
    cr_assert_eq(copy.reserved, 4000);
    ag_stock_free(&copy);
    free(t);
    json_decref(s);
}

/* A log written before the reservation streams replays to the same counters; an
 * order reserved then is not reserved again, and is released or shipped with the
 * old events. */
Test(reservation, old_log_replays_and_is_respected)
{
    cr_assert_eq(dt_apply("StockReserved", "{\"orderId\":\"o0\",\"quantity\":2}"), 0);
    cr_assert_eq(dt_apply("StockReserved", "{\"orderId\":\"o1\",\"quantity\":3}"), 0);
    cr_assert_eq(dt_apply("StockReleased", "{\"orderId\":\"o1\",\"quantity\":3,\"reason\":\"x\"}"),
                 0);
    cr_assert_eq(stock.reserved, 2);
    held(2, 4);
    cr_assert_eq(stock.reserved, 6);
    struct ag_stock copy;
    dt_roundtrip(&copy); /* legacy map + counters */
    cr_assert_eq(copy.reserved, 6);
    cr_assert_eq(ag_stock_reservation(&copy, "o0"), 2);
    ag_stock_free(&copy);
    cr_assert_eq(held(0, 2), 0, "reserved before: not again");
    cr_assert_eq(released(0), 1);
    cr_assert_str_eq(es.v[0].type, "StockReleased");
    cr_assert_eq(released(0), 0);
    cr_assert_eq(stock.reserved, 4);
    cr_assert_eq(dt_apply("StockReserved", "{\"orderId\":\"o3\",\"quantity\":1}"), 0);
    cr_assert_eq(shipped(3), 1);
    cr_assert_str_eq(es.v[0].type, "StockShipped");
    cr_assert_eq(stock.on_hand, 9);
    cr_assert_eq(stock.reserved, 4);
}

Test(reservation, snapshots_and_bad_events)
{
    held(0, 3);
    released(0);
    held(1, 2);
    shipped(1);
    for (int o = 0; o < 2; o++) {
        json_t *s = ag_reservation_snapshot(&res[o]);
        struct ag_reservation copy;
        ag_reservation_init(&copy);
        cr_assert_eq(ag_reservation_restore(&copy, s), 0);
        cr_assert_eq(ag_reservation_line(&copy, "p1"), ag_reservation_line(&res[o], "p1"));
        ag_reservation_free(&copy);
        json_decref(s);
    }
    cr_assert_eq(dt_apply("StockFreed", "{\"orderId\":\"o9\",\"quantity\":50}"), AG_EINVAL,
                 "reserved would go negative");
    cr_assert_eq(dt_apply("StockHeld", "{\"orderId\":\"o9\"}"), AG_EINVAL);
    json_t *bad = json_pack("{s:s}", "productId", "p1");
    cr_assert_eq(ag_reservation_evolve(&res[2], "ReservationMade", bad), AG_EINVAL);
    json_decref(bad);
    /* a stock snapshot whose reserved exceeds on hand is refused */
    json_t *snap = json_pack("{s:b,s:s,s:I,s:I,s:{}}", "exists", 1, "productId", "p1", "onHand",
                             (json_int_t)1, "reserved", (json_int_t)2, "reservations");
    struct ag_stock st2;
    ag_stock_init(&st2);
    cr_assert_eq(ag_stock_restore(&st2, snap), AG_EINVAL);
    ag_stock_free(&st2);
    json_decref(snap);
}
