/* The Order aggregate: every command's events and evolution, every rule with its
 * message, the idempotent no-ops, snapshots, and the seeds' rebuild test. */
#include "unit/domain/dom_test.h"

static struct ag_order o;

static void setup(void)
{
    dt_begin(&ag_order_aggregate, &o);
}

TestSuite(order, .init = setup, .fini = dt_end);

static struct ag_price_quote quote_now(bool premium)
{
    struct ag_price_quote q;
    struct ag_err err = {0};
    cr_assert_eq(ag_pricing_quote(o.lines, o.nlines, premium, NULL, 0, &q, &err), 0, "%s", err.msg);
    return q;
}

/* A draft with 2 × p1 at 10.00 and 1 × p2 at 5.00. */
static void draft(void)
{
    cr_assert_eq(dt_ok(D(ag_order_create, {"o1", "c1", "USD"})), 1);
    dt_ok(D(ag_order_add_item, {"p1", 2, USD(1000)}));
    dt_ok(D(ag_order_add_item, {"p2", 1, USD(500)}));
}

static void placed(void)
{
    draft();
    cr_assert_eq(dt_ok(D(ag_order_place, {&ADDR, quote_now(false), "s1"})), 1);
}

Test(order, seeds_rebuild_from_events)
{
    /* OrderCreated, ItemAdded, ItemAdded, OrderPlaced → 2 items, pending */
    cr_assert_eq(
        dt_apply("OrderCreated", "{\"orderId\":\"o1\",\"customerId\":\"c1\",\"currency\":\"USD\"}"),
        0);
    cr_assert_eq(dt_apply("ItemAdded", "{\"productId\":\"p1\",\"quantity\":2,\"unitPrice\":{"
                                       "\"amount\":1000,\"currency\":\"USD\"}}"),
                 0);
    cr_assert_eq(dt_apply("ItemAdded", "{\"productId\":\"p2\",\"quantity\":1,\"unitPrice\":{"
                                       "\"amount\":500,\"currency\":\"USD\"}}"),
                 0);
    cr_assert_eq(dt_apply("OrderPlaced",
                          "{\"shippingAddress\":{\"street\":\"1 Main St\",\"city\":\"Springfield\","
                          "\"state\":\"IL\",\"zipCode\":\"62701\",\"country\":\"US\"},"
                          "\"subtotal\":{\"amount\":2500,\"currency\":\"USD\"},"
                          "\"discount\":{\"amount\":0,\"currency\":\"USD\"},"
                          "\"total\":{\"amount\":2500,\"currency\":\"USD\"},\"sagaId\":\"s1\"}"),
                 0);
    cr_assert_eq(o.nlines, 2);
    cr_assert_eq(o.status, AG_ORDER_PENDING);
    cr_assert_str_eq(ag_order_status_name(o.status), "pending");
    cr_assert_eq(o.total.amount, 2500);
    cr_assert(o.has_address);
    cr_assert_str_eq(o.shipping_address.zip_code, "62701");
    cr_assert_str_eq(o.saga_id, "s1");
}

Test(order, create_event_and_state)
{
    cr_assert_eq(dt_ok(D(ag_order_create, {"o1", "c1", "USD"})), 1);
    json_t *d = dt_ev(0, "OrderCreated");
    cr_assert_str_eq(jstr(d, "orderId"), "o1");
    cr_assert_str_eq(jstr(d, "customerId"), "c1");
    cr_assert_str_eq(jstr(d, "currency"), "USD");
    cr_assert(o.exists);
    cr_assert_eq(o.status, AG_ORDER_DRAFT);
    cr_assert_str_eq(o.customer_id, "c1");
    cr_assert_str_eq(o.total.currency, "USD");
    dt_fail(D(ag_order_create, {"o1", "c1", "USD"}), AG_EDOMAIN, "order o1 already exists");
}

Test(order, create_rejects_bad_input)
{
    dt_fail(D(ag_order_create, {"", "c1", "USD"}), AG_EINVAL, "order id must be");
    dt_fail(D(ag_order_create, {"o1", NULL, "USD"}), AG_EINVAL, "customer id must be");
    dt_fail(D(ag_order_create, {"o1", "c1", "dollars"}), AG_EINVAL, "currency");
    dt_fail(D(ag_order_create, {"0123456789012345678901234567890123456789", "c1", "USD"}),
            AG_EINVAL, "at most 39 bytes");
}

Test(order, add_items_merge_same_product)
{
    draft();
    json_t *d = dt_ev(0, "ItemAdded");
    cr_assert_str_eq(jstr(d, "productId"), "p2");
    cr_assert_eq(jint(d, "quantity", NULL), 1);
    cr_assert_eq(jint(d, "unitPrice", "amount"), 500);
    dt_ok(D(ag_order_add_item, {"p1", 3, USD(1000)}));
    cr_assert_eq(o.nlines, 2);
    cr_assert_eq(ag_order_line(&o, "p1")->quantity, 5);
    cr_assert_eq(o.subtotal.amount, 5500);
    cr_assert_eq(o.total.amount, 5500);
    cr_assert_null(ag_order_line(&o, "p3"));
}

Test(order, add_item_rules)
{
    dt_fail(D(ag_order_add_item, {"p1", 1, USD(1)}), AG_EDOMAIN, "order does not exist");
    draft();
    dt_fail(D(ag_order_add_item, {"p1", 0, USD(1000)}), AG_EINVAL,
            "quantity must be positive (got 0)");
    dt_fail(D(ag_order_add_item, {"p1", -2, USD(1000)}), AG_EINVAL,
            "quantity must be positive (got -2)");
    dt_fail(D(ag_order_add_item, {"p3", 1, USD(-1)}), AG_EINVAL, "unit price must not be negative");
    dt_fail(D(ag_order_add_item, {"p3", 1, EUR(100)}), AG_EDOMAIN,
            "order o1 is in USD, the item is priced in EUR");
    dt_fail(D(ag_order_add_item, {"p1", 1, USD(999)}), AG_EDOMAIN,
            "product p1 is already in order o1 at 1000 USD");
    dt_fail(D(ag_order_add_item, {"p1", INT64_MAX, USD(1000)}), AG_EINVAL, "quantity overflow");
    dt_fail(D(ag_order_add_item, {NULL, 1, USD(1)}), AG_EINVAL, "product id must be");
}

Test(order, remove_item)
{
    draft();
    cr_assert_eq(dt_ok(D(ag_order_remove_item, {"p1"})), 1);
    cr_assert_str_eq(jstr(dt_ev(0, "ItemRemoved"), "productId"), "p1");
    cr_assert_eq(o.nlines, 1);
    cr_assert_str_eq(o.lines[0].product_id, "p2");
    cr_assert_eq(o.subtotal.amount, 500);
    cr_assert_eq(dt_ok(D(ag_order_remove_item, {"p1"})), 0, "absent product: no events");
    cr_assert_eq(dt_ok(D(ag_order_remove_item, {"p2"})), 1);
    cr_assert_eq(o.nlines, 0);
    cr_assert_eq(o.subtotal.amount, 0);
}

Test(order, place_event_and_state)
{
    placed();
    json_t *d = dt_ev(0, "OrderPlaced");
    cr_assert_eq(jint(d, "subtotal", "amount"), 2500);
    cr_assert_eq(jint(d, "discount", "amount"), 0);
    cr_assert_eq(jint(d, "total", "amount"), 2500);
    cr_assert_str_eq(jstr(json_object_get(d, "shippingAddress"), "zipCode"), "62701");
    cr_assert_str_eq(jstr(d, "sagaId"), "s1");
    cr_assert_eq(o.status, AG_ORDER_PENDING);
    cr_assert(ag_address_eq(&o.shipping_address, &ADDR));
}

Test(order, place_with_premium_discount)
{
    draft();
    dt_ok(D(ag_order_place, {&ADDR, quote_now(true), "s1"}));
    cr_assert_eq(o.subtotal.amount, 2500);
    cr_assert_eq(o.discount.amount, 250);
    cr_assert_eq(o.total.amount, 2250);
}

Test(order, place_rules)
{
    cr_assert_eq(dt_ok(D(ag_order_create, {"o1", "c1", "USD"})), 1);
    struct ag_price_quote q = {USD(0), USD(0), USD(0)};
    dt_fail(D(ag_order_place, {&ADDR, q, "s1"}), AG_EDOMAIN, "cannot place an empty order");
    dt_ok(D(ag_order_add_item, {"p1", 2, USD(1000)}));
    q = quote_now(false);
    dt_fail(D(ag_order_place, {NULL, q, "s1"}), AG_EDOMAIN, "a shipping address is required");
    struct ag_address bad = ADDR;
    bad.city[0] = '\0';
    dt_fail(D(ag_order_place, {&bad, q, "s1"}), AG_EINVAL, "/shippingAddress/city:");
    dt_fail(D(ag_order_place, {&ADDR, q, ""}), AG_EINVAL, "saga id");
    struct ag_price_quote wrong = {USD(1999), USD(0), USD(1999)};
    dt_fail(D(ag_order_place, {&ADDR, wrong, "s1"}), AG_EDOMAIN,
            "quote subtotal 1999 does not match the order lines (2000 USD)");
    wrong = (struct ag_price_quote){USD(2000), USD(100), USD(2000)};
    dt_fail(D(ag_order_place, {&ADDR, wrong, "s1"}), AG_EDOMAIN, "must equal subtotal - discount");
    wrong = (struct ag_price_quote){USD(2000), USD(-100), USD(2100)};
    dt_fail(D(ag_order_place, {&ADDR, wrong, "s1"}), AG_EDOMAIN, "between 0 and the subtotal");
    wrong = (struct ag_price_quote){EUR(2000), EUR(0), EUR(2000)};
    dt_fail(D(ag_order_place, {&ADDR, wrong, "s1"}), AG_EDOMAIN, "quote currency");
    dt_ok(D(ag_order_place, {&ADDR, q, "s1"}));
    dt_fail(D(ag_order_place, {&ADDR, q, "s1"}), AG_EDOMAIN,
            "order o1 is pending: only a draft order can change");
    dt_fail(D(ag_order_add_item, {"p9", 1, USD(1)}), AG_EDOMAIN, "only a draft order can change");
    dt_fail(D(ag_order_remove_item, {"p1"}), AG_EDOMAIN, "only a draft order can change");
}

Test(order, confirm_and_ship)
{
    draft();
    dt_fail(D(ag_order_confirm, {"T1"}), AG_EDOMAIN, "cannot confirm a draft order");
    dt_fail(D(ag_order_ship, {1}), AG_EDOMAIN, "cannot ship a draft order");
    dt_ok(D(ag_order_place, {&ADDR, quote_now(false), "s1"}));
    dt_fail(D(ag_order_ship, {1}), AG_EDOMAIN, "cannot ship a pending order");
    cr_assert_eq(dt_ok(D(ag_order_confirm, {"TRK-1"})), 1);
    cr_assert_str_eq(jstr(dt_ev(0, "OrderConfirmed"), "trackingNumber"), "TRK-1");
    cr_assert_eq(o.status, AG_ORDER_CONFIRMED);
    cr_assert_str_eq(o.tracking_number, "TRK-1");
    cr_assert_eq(dt_ok(D(ag_order_confirm, {"TRK-2"})), 0, "idempotent");
    cr_assert_str_eq(o.tracking_number, "TRK-1");
    cr_assert_eq(dt_ok(D(ag_order_ship, {1700000000000})), 1);
    cr_assert_eq(jint(dt_ev(0, "OrderShipped"), "shippedAt", NULL), 1700000000000);
    cr_assert_eq(o.status, AG_ORDER_SHIPPED);
    cr_assert_eq(dt_ok(D(ag_order_ship, {2})), 0, "idempotent");
    cr_assert_eq(dt_ok(D(ag_order_confirm, {"TRK-1"})), 0, "shipped implies confirmed");
    dt_fail(D(ag_order_cancel, {"late"}), AG_EDOMAIN, "cannot cancel a shipped order");
}

Test(order, deliver_only_after_ship)
{
    placed();
    dt_fail(D(ag_order_deliver, {1}), AG_EDOMAIN, "cannot deliver a pending order");
    dt_ok(D(ag_order_confirm, {"TRK-1"}));
    dt_fail(D(ag_order_deliver, {1}), AG_EDOMAIN, "cannot deliver a confirmed order");
    dt_ok(D(ag_order_ship, {1}));
    cr_assert_eq(dt_ok(D(ag_order_deliver, {1700000000001})), 1);
    cr_assert_eq(jint(dt_ev(0, "OrderDelivered"), "deliveredAt", NULL), 1700000000001);
    cr_assert_eq(o.status, AG_ORDER_DELIVERED);
    cr_assert_str_eq(ag_order_status_name(o.status), "delivered");
    cr_assert_eq(dt_ok(D(ag_order_deliver, {2})), 0, "idempotent");
    cr_assert_eq(dt_ok(D(ag_order_ship, {2})), 0, "delivered implies shipped");
    cr_assert_eq(dt_ok(D(ag_order_confirm, {"TRK-1"})), 0, "delivered implies confirmed");
    dt_fail(D(ag_order_cancel, {"late"}), AG_EDOMAIN, "cannot cancel a delivered order");
    enum ag_order_status st;
    cr_assert_eq(ag_order_status_parse("delivered", &st), 0);
    cr_assert_eq(st, AG_ORDER_DELIVERED);
}

Test(order, cancel_from_draft_and_pending)
{
    draft();
    cr_assert_eq(dt_ok(D(ag_order_cancel, {NULL})), 1);
    cr_assert_str_eq(jstr(dt_ev(0, "OrderCancelled"), "reason"), "cancelled");
    cr_assert_eq(o.status, AG_ORDER_CANCELLED);
    cr_assert_eq(dt_ok(D(ag_order_cancel, {"again"})), 0, "idempotent");
    cr_assert_str_eq(o.cancellation_reason, "cancelled");
    dt_fail(D(ag_order_confirm, {"T"}), AG_EDOMAIN, "cannot confirm a cancelled order");
    dt_fail(D(ag_order_add_item, {"p1", 1, USD(1000)}), AG_EDOMAIN, "order o1 is cancelled");

    dt_end();
    dt_begin(&ag_order_aggregate, &o);
    placed();
    cr_assert_eq(
        dt_ok(D(ag_order_cancel, {"insufficient funds: balance 5.00 USD, requested 25.00 USD"})),
        1);
    cr_assert_str_eq(o.cancellation_reason,
                     "insufficient funds: balance 5.00 USD, requested 25.00 USD");
}

Test(order, cannot_cancel_confirmed)
{
    placed();
    dt_ok(D(ag_order_confirm, {NULL}));
    cr_assert_str_eq(o.tracking_number, "");
    dt_fail(D(ag_order_cancel, {"x"}), AG_EDOMAIN, "cannot cancel a confirmed order");
}

Test(order, long_reason_is_cut_on_a_character)
{
    char reason[400];
    draft();
    memset(reason, 'a', 254);
    strcpy(reason + 254, "\xc3\xa9tail"); /* 'é' straddles byte 255 */
    dt_ok(D(ag_order_cancel, {reason}));
    cr_assert_eq(strlen(o.cancellation_reason), 254);
}

Test(order, status_names)
{
    enum ag_order_status s;
    const char *names[] = {"draft", "pending", "confirmed", "shipped", "cancelled"};
    for (int i = 0; i < 5; i++) {
        cr_assert_str_eq(ag_order_status_name((enum ag_order_status)i), names[i]);
        cr_assert_eq(ag_order_status_parse(names[i], &s), 0);
        cr_assert_eq((int)s, i);
    }
    cr_assert_str_eq(ag_order_status_name((enum ag_order_status)42), "unknown");
    cr_assert_eq(ag_order_status_parse("submitted", &s), AG_EINVAL);
}

Test(order, evolve_rejects_malformed_and_ignores_unknown)
{
    cr_assert_eq(dt_apply("SomethingElse", "{}"), 0);
    cr_assert_eq(dt_apply("OrderCreated", "{\"orderId\":\"o1\"}"), AG_EINVAL);
    cr_assert_eq(
        dt_apply("OrderCreated", "{\"orderId\":\"o1\",\"customerId\":\"c\",\"currency\":\"usd\"}"),
        AG_EINVAL);
    cr_assert_eq(
        dt_apply("OrderCreated", "{\"orderId\":\"o1\",\"customerId\":\"c\",\"currency\":\"USD\"}"),
        0);
    cr_assert_eq(dt_apply("ItemAdded", "{\"productId\":\"p\",\"quantity\":\"2\",\"unitPrice\":{"
                                       "\"amount\":1,\"currency\":\"USD\"}}"),
                 AG_EINVAL);
    cr_assert_eq(dt_apply("ItemAdded", "{\"productId\":\"p\",\"quantity\":0,\"unitPrice\":{"
                                       "\"amount\":1,\"currency\":\"USD\"}}"),
                 AG_EINVAL);
    cr_assert_eq(dt_apply("ItemRemoved", "{}"), AG_EINVAL);
    cr_assert_eq(dt_apply("OrderPlaced", "{\"sagaId\":\"s\"}"), AG_EINVAL);
    cr_assert_eq(dt_apply("OrderConfirmed", "{\"trackingNumber\":5}"), AG_EINVAL);
}

Test(order, snapshot_round_trips)
{
    struct ag_order copy;
    dt_roundtrip(&copy); /* empty */
    cr_assert_not(copy.exists);
    ag_order_free(&copy);
    placed();
    dt_ok(D(ag_order_confirm, {"TRK-9"}));
    dt_roundtrip(&copy);
    cr_assert_eq(copy.nlines, 2);
    cr_assert_eq(copy.status, AG_ORDER_CONFIRMED);
    cr_assert_eq(ag_order_line(&copy, "p1")->quantity, 2);
    cr_assert_eq(copy.total.amount, 2500);
    cr_assert(ag_address_eq(&copy.shipping_address, &ADDR));
    cr_assert_str_eq(copy.saga_id, "s1");
    cr_assert_str_eq(copy.tracking_number, "TRK-9");
    /* the restored state keeps deciding like the original */
    struct ag_dom_events ev;
    ag_dom_events_init(&ev);
    cr_assert_eq(ag_order_ship(&copy, &(struct ag_order_ship){5}, &ev, NULL), 0);
    cr_assert_eq(ev.n, 1);
    ag_dom_events_free(&ev);
    ag_order_free(&copy);
}

Test(order, restore_rejects_garbage)
{
    json_t *j = json_loads("{\"exists\":true,\"orderId\":\"o\"}", 0, NULL);
    cr_assert_eq(ag_order_restore(&o, j), AG_EINVAL);
    cr_assert_not(o.exists);
    json_decref(j);
    cr_assert_eq(ag_order_restore(&o, NULL), AG_EINVAL);
}

Test(order, many_lines)
{
    char pid[16];
    cr_assert_eq(dt_ok(D(ag_order_create, {"o1", "c1", "USD"})), 1);
    for (int i = 0; i < 200; i++) {
        snprintf(pid, sizeof pid, "p%d", i);
        dt_ok(D(ag_order_add_item, {pid, 1, USD(i)}));
    }
    cr_assert_eq(o.nlines, 200);
    cr_assert_eq(o.subtotal.amount, 199 * 200 / 2);
    cr_assert_eq(ag_order_line(&o, "p150")->unit_price.amount, 150);
}
