/* Shipment: arrange once per order, cancel and dispatch with their no-ops and
 * refusals, snapshots; and the aggregate table the kernel calls through. */
#include "unit/domain/dom_test.h"

static struct ag_shipment sh;

static void setup(void)
{
    dt_begin(&ag_shipment_aggregate, &sh);
}

TestSuite(shipment, .init = setup, .fini = dt_end);

static void arranged(void)
{
    cr_assert_eq(dt_ok(D(ag_shipment_arrange, {"sh1", "o1", &ADDR, "TRK-1"})), 1);
}

Test(shipment, arrange)
{
    arranged();
    json_t *d = dt_ev(0, "ShipmentArranged");
    cr_assert_str_eq(jstr(d, "shipmentId"), "sh1");
    cr_assert_str_eq(jstr(d, "orderId"), "o1");
    cr_assert_str_eq(jstr(d, "trackingNumber"), "TRK-1");
    cr_assert_str_eq(jstr(json_object_get(d, "address"), "country"), "US");
    cr_assert(sh.exists);
    cr_assert_eq(sh.status, AG_SHIPMENT_ARRANGED);
    cr_assert(ag_address_eq(&sh.address, &ADDR));
    cr_assert_eq(dt_ok(D(ag_shipment_arrange, {"sh2", "o1", &ADDR, "TRK-2"})), 0,
                 "same order again: no events");
    cr_assert_str_eq(sh.tracking_number, "TRK-1");
    dt_fail(D(ag_shipment_arrange, {"sh1", "o2", &ADDR, "TRK-3"}), AG_EDOMAIN,
            "shipment sh1 is already arranged for order o1");
}

Test(shipment, arrange_rules)
{
    dt_fail(D(ag_shipment_arrange, {"", "o1", &ADDR, "T"}), AG_EINVAL, "shipment id");
    dt_fail(D(ag_shipment_arrange, {"sh1", NULL, &ADDR, "T"}), AG_EINVAL, "order id");
    dt_fail(D(ag_shipment_arrange, {"sh1", "o1", &ADDR, ""}), AG_EINVAL, "tracking number");
    dt_fail(D(ag_shipment_arrange, {"sh1", "o1", NULL, "T"}), AG_EINVAL,
            "a shipment needs an address");
    struct ag_address bad = ADDR;
    memset(bad.street, 'x', sizeof bad.street); /* not NUL-terminated */
    dt_fail(D(ag_shipment_arrange, {"sh1", "o1", &bad, "T"}), AG_EINVAL, "/address/street");
}

Test(shipment, cancel)
{
    dt_fail(D(ag_shipment_cancel, {"x"}), AG_EDOMAIN, "shipment does not exist");
    arranged();
    cr_assert_eq(dt_ok(D(ag_shipment_cancel, {"payment failed"})), 1);
    cr_assert_str_eq(jstr(dt_ev(0, "ShipmentCancelled"), "reason"), "payment failed");
    cr_assert_eq(sh.status, AG_SHIPMENT_CANCELLED);
    cr_assert_str_eq(sh.cancel_reason, "payment failed");
    cr_assert_eq(dt_ok(D(ag_shipment_cancel, {"again"})), 0, "idempotent");
    dt_fail(D(ag_shipment_dispatch, {1}), AG_EDOMAIN,
            "cannot dispatch shipment sh1: it was cancelled");
}

Test(shipment, dispatch)
{
    dt_fail(D(ag_shipment_dispatch, {1}), AG_EDOMAIN, "shipment does not exist");
    arranged();
    cr_assert_eq(dt_ok(D(ag_shipment_dispatch, {1234})), 1);
    cr_assert_eq(jint(dt_ev(0, "ShipmentDispatched"), "dispatchedAt", NULL), 1234);
    cr_assert_eq(sh.status, AG_SHIPMENT_DISPATCHED);
    cr_assert_eq(dt_ok(D(ag_shipment_dispatch, {5})), 0, "idempotent");
    dt_fail(D(ag_shipment_cancel, {NULL}), AG_EDOMAIN,
            "cannot cancel shipment sh1: already dispatched");
    cr_assert_str_eq(ag_shipment_status_name(sh.status), "dispatched");
}

Test(shipment, deliver)
{
    dt_fail(D(ag_shipment_deliver, {1}), AG_EDOMAIN, "shipment does not exist");
    arranged();
    dt_fail(D(ag_shipment_deliver, {1}), AG_EDOMAIN,
            "cannot deliver shipment sh1: it is arranged, not dispatched");
    dt_ok(D(ag_shipment_dispatch, {1}));
    cr_assert_eq(dt_ok(D(ag_shipment_deliver, {4321})), 1);
    cr_assert_eq(jint(dt_ev(0, "ShipmentDelivered"), "deliveredAt", NULL), 4321);
    cr_assert_eq(sh.status, AG_SHIPMENT_DELIVERED);
    cr_assert_str_eq(ag_shipment_status_name(sh.status), "delivered");
    cr_assert_eq(dt_ok(D(ag_shipment_deliver, {5})), 0, "idempotent");
    cr_assert_eq(dt_ok(D(ag_shipment_dispatch, {5})), 0, "delivered implies dispatched");
    dt_fail(D(ag_shipment_cancel, {NULL}), AG_EDOMAIN,
            "cannot cancel shipment sh1: already delivered");
    struct ag_shipment copy;
    dt_roundtrip(&copy);
    cr_assert_eq(copy.status, AG_SHIPMENT_DELIVERED);
}

Test(shipment, snapshot_round_trips)
{
    struct ag_shipment copy;
    dt_roundtrip(&copy);
    cr_assert_not(copy.exists);
    arranged();
    dt_ok(D(ag_shipment_cancel, {NULL}));
    dt_roundtrip(&copy);
    cr_assert_eq(copy.status, AG_SHIPMENT_CANCELLED);
    cr_assert_str_eq(copy.cancel_reason, "cancelled");
    cr_assert_str_eq(copy.order_id, "o1");
    ag_shipment_free(&copy);
}

Test(shipment, evolve_malformed)
{
    cr_assert_eq(dt_apply("ShipmentArranged",
                          "{\"shipmentId\":\"s\",\"orderId\":\"o\",\"trackingNumber\":\"t\"}"),
                 AG_EINVAL);
    cr_assert_eq(dt_apply("ShipmentCancelled", "{\"reason\":1}"), AG_EINVAL);
    cr_assert_eq(dt_apply("Other", "{}"), 0);
}

/* ---- the aggregate table ---- */

Test(aggregates, table_drives_every_aggregate_generically)
{
    const struct ag_dom_aggregate *all[] = {&ag_customer_aggregate, &ag_product_aggregate,
                                            &ag_order_aggregate,    &ag_stock_aggregate,
                                            &ag_account_aggregate,  &ag_shipment_aggregate};
    const char *names[] = {"Customer", "Product", "Order", "StockItem", "Account", "Shipment"};
    for (size_t i = 0; i < AG_ARRAY_SIZE(all); i++) {
        cr_assert_str_eq(all[i]->name, names[i]);
        void *st = malloc(all[i]->state_size);
        all[i]->init(st);
        cr_assert_eq(all[i]->evolve(st, "NoSuchEvent", NULL), 0);
        json_t *snap = all[i]->snapshot(st);
        cr_assert(json_is_false(json_object_get(snap, "exists")));
        cr_assert_eq(all[i]->restore(st, snap), 0);
        json_decref(snap);
        all[i]->free(st);
        free(st);
    }
}
