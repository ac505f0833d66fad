/* The ordering context's handlers (src/services/ordering/api.c): placing an order
 * for the caller's own customer (202 with the order and saga ids), reading and
 * listing only one's own orders, cancelling, field errors with JSON pointers, and
 * an Idempotency-Key that places an order once. */
#include <criterion/criterion.h>
#include <string.h>

#include "svc_test.h"

TestSuite(ordering, .init = t_start, .fini = t_stop, .timeout = 60);

#define ADDR                                                                                       \
    "\"shippingAddress\":{\"street\":\"1 Main St\",\"city\":\"Springfield\",\"state\":\"IL\","     \
    "\"zipCode\":\"62701\",\"country\":\"US\"}"

Test(ordering, place_read_and_own)
{
    char cid[40], acc[40], prod[40], path[128];
    t_register(ALICE, "alice@test.example", cid, acc);
    t_deposit(ALICE, acc, 100000);
    t_product(1, prod);
    char body[512];
    snprintf(body, sizeof body, "{\"items\":[{\"productId\":\"%s\",\"quantity\":2}]," ADDR "}",
             prod);
    struct t_resp r;
    cr_assert_eq(t_call(&r, "POST", "/api/v1/orders", ALICE, body, NULL), 202, "%s", r.text);
    char order[40];
    snprintf(order, sizeof order, "%s", t_str(&r, "orderId"));
    cr_expect(svc_uuid_ok(order));
    cr_expect(svc_uuid_ok(t_str(&r, "sagaId")));
    cr_expect_str_eq(t_str(&r, "status"), "pending");
    snprintf(path, sizeof path, "/api/v1/orders/%s", order);
    cr_expect_str_eq(t_header(&r, "Location"), path);
    t_free(&r);

    cr_assert_eq(t_call(&r, "GET", path, ALICE, NULL, NULL), 200, "%s", r.text);
    cr_expect_str_eq(t_str(&r, "customerId"), cid, "taken from the caller");
    json_t *total = json_object_get(r.body, "total");
    cr_expect_eq(json_integer_value(json_object_get(total, "amount")), 2 * 2999,
                 "standard tier: no discount: %s", r.text);
    cr_expect_eq(json_array_size(json_object_get(r.body, "items")), 1);
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", path, BOB, NULL, NULL), 404, "someone else's order");
    cr_expect_str_eq(t_str(&r, "title"), "Order not found");
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", path, ADMIN, NULL, NULL), 200);
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", path, ANON, NULL, NULL), 401);
    t_free(&r);
}

Test(ordering, lists_show_only_the_callers_orders)
{
    char acid[40], aacc[40], bcid[40], bacc[40], prod[40], ao[40], bo[40];
    t_register(ALICE, "alice@test.example", acid, aacc);
    t_register(BOB, "bob@test.example", bcid, bacc);
    t_product(4, prod);
    t_order(ALICE, prod, 1, ao, NULL);
    t_order(BOB, prod, 1, bo, NULL);
    t_catch_up();
    struct t_resp r;
    cr_assert_eq(t_call(&r, "GET", "/api/v1/orders", ALICE, NULL, NULL), 200, "%s", r.text);
    json_t *items = json_object_get(r.body, "items");
    cr_expect_eq(json_array_size(items), 1, "%s", r.text);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(items, 0), "id")), ao);
    t_free(&r);
    char path[160];
    snprintf(path, sizeof path, "/api/v1/orders?customerId=%s", bcid);
    cr_assert_eq(t_call(&r, "GET", path, ALICE, NULL, NULL), 200);
    cr_expect_eq(json_array_size(json_object_get(r.body, "items")), 0,
                 "bob's customerId from alice: an empty list");
    t_free(&r);
    cr_assert_eq(t_call(&r, "GET", path, ADMIN, NULL, NULL), 200);
    items = json_object_get(r.body, "items");
    cr_expect_eq(json_array_size(items), 1, "an admin filters by customer");
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(items, 0), "id")), bo);
    t_free(&r);
    cr_assert_eq(t_call(&r, "GET", "/api/v1/orders", ADMIN, NULL, NULL), 200);
    cr_expect_eq(json_array_size(json_object_get(r.body, "items")), 2, "an admin sees all");
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", "/api/v1/orders?status=lost", ALICE, NULL, NULL), 400);
    cr_expect(t_has_pointer(&r, "/status"), "%s", r.text);
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", "/api/v1/orders", ANON, NULL, NULL), 401);
    t_free(&r);
}

Test(ordering, the_customer_must_be_the_callers)
{
    char bcid[40], prod[40];
    t_register(BOB, "bob@test.example", bcid, NULL);
    t_product(0, prod);
    char body[512];
    struct t_resp r;
    /* alice has no customer yet */
    snprintf(body, sizeof body, "{\"items\":[{\"productId\":\"%s\",\"quantity\":1}]," ADDR "}",
             prod);
    cr_expect_eq(t_call(&r, "POST", "/api/v1/orders", ALICE, body, NULL), 422, "%s", r.text);
    cr_expect(t_has_pointer(&r, "/customerId"), "%s", r.text);
    t_free(&r);
    /* bob's customer named by alice: unknown to her, like a missing one */
    t_register(ALICE, "alice@test.example", NULL, NULL);
    snprintf(body, sizeof body,
             "{\"customerId\":\"%s\",\"items\":[{\"productId\":\"%s\",\"quantity\":1}]," ADDR "}",
             bcid, prod);
    cr_expect_eq(t_call(&r, "POST", "/api/v1/orders", ALICE, body, NULL), 422, "%s", r.text);
    cr_expect(t_has_pointer(&r, "/customerId"), "%s", r.text);
    t_free(&r);
    /* an admin must name the customer */
    snprintf(body, sizeof body, "{\"items\":[{\"productId\":\"%s\",\"quantity\":1}]," ADDR "}",
             prod);
    cr_expect_eq(t_call(&r, "POST", "/api/v1/orders", ADMIN, body, NULL), 400, "%s", r.text);
    cr_expect(t_has_pointer(&r, "/customerId"), "%s", r.text);
    t_free(&r);
    snprintf(body, sizeof body,
             "{\"customerId\":\"%s\",\"items\":[{\"productId\":\"%s\",\"quantity\":1}]," ADDR "}",
             bcid, prod);
    cr_expect_eq(t_call(&r, "POST", "/api/v1/orders", ADMIN, body, NULL), 202,
                 "for bob, by an admin: %s", r.text);
    t_free(&r);
}

Test(ordering, validation_errors_name_each_field)
{
    char prod[40];
    t_register(ALICE, "alice@test.example", NULL, NULL);
    t_product(0, prod);
    struct t_resp r;
    cr_assert_eq(t_call(&r, "POST", "/api/v1/orders", ALICE, "{}", NULL), 400, "%s", r.text);
    cr_expect(t_has_pointer(&r, "/items") && t_has_pointer(&r, "/shippingAddress"), "%s", r.text);
    t_free(&r);
    char body[768];
    snprintf(body, sizeof body,
             "{\"items\":[{\"productId\":\"%s\",\"quantity\":0},{\"quantity\":1},"
             "{\"productId\":\"%s\",\"quantity\":10001}],"
             "\"shippingAddress\":{\"street\":\"x\",\"city\":\"y\",\"state\":\"z\","
             "\"zipCode\":\"1\",\"country\":\"usa\"}}",
             prod, prod);
    cr_assert_eq(t_call(&r, "POST", "/api/v1/orders", ALICE, body, NULL), 400, "%s", r.text);
    cr_expect(t_has_pointer(&r, "/items/0/quantity"), "%s", r.text);
    cr_expect(t_has_pointer(&r, "/items/1/productId"), "%s", r.text);
    cr_expect(t_has_pointer(&r, "/items/2/quantity"), "%s", r.text);
    cr_expect(t_has_pointer(&r, "/shippingAddress/country"), "%s", r.text);
    t_free(&r);
    snprintf(body, sizeof body,
             "{\"items\":[{\"productId\":\"0190a1b2-0000-7000-8000-000000000000\","
             "\"quantity\":1}]," ADDR "}");
    cr_expect_eq(t_call(&r, "POST", "/api/v1/orders", ALICE, body, NULL), 422, "%s", r.text);
    cr_expect(t_has_pointer(&r, "/items/0/productId"), "%s", r.text);
    t_free(&r);
    t_catch_up();
    cr_assert_eq(t_call(&r, "GET", "/api/v1/orders", ALICE, NULL, NULL), 200);
    cr_expect_eq(json_array_size(json_object_get(r.body, "items")), 0, "nothing was placed");
    t_free(&r);
}

/* Where the key's record sits in the log: true when its claim and answer follow
 * the last event of `stream` directly (one append with the order's events). */
static bool record_follows(const char *stream)
{
    bool found = false, end = false;
    char prev[160] = "";
    for (uint64_t pos = 0; !found && !end;) {
        struct ag_event_page pg;
        cr_assert_eq(ag_store_read_all(t_plat->store, pos, AG_READ_FORWARD, 500, &pg, NULL), 0);
        for (size_t i = 0; i < pg.count && !found; i++) {
            const struct ag_event *e = &pg.events[i];
            if (e->type_len == 21 && memcmp(e->type, "IdempotencyKeyClaimed", 21) == 0) {
                found = true;
                cr_expect_str_eq(prev, stream, "the claim follows the order's events");
                cr_assert_lt(i + 1, pg.count);
                cr_expect_eq(pg.events[i + 1].type_len, 18, "then the answer");
                cr_expect_eq(pg.events[i + 1].stream_len, e->stream_len);
            }
            snprintf(prev, sizeof prev, "%.*s", (int)e->stream_len, e->stream);
        }
        end = pg.end || pg.count == 0;
        pos = pg.next_position;
        ag_event_page_free(&pg);
    }
    return found;
}

Test(ordering, an_idempotency_key_places_one_order)
{
    char prod[40];
    t_register(ALICE, "alice@test.example", NULL, NULL);
    t_product(0, prod);
    char body[512];
    snprintf(body, sizeof body, "{\"items\":[{\"productId\":\"%s\",\"quantity\":1}]," ADDR "}",
             prod);
    const char *key = "Idempotency-Key: order-1\r\n";
    struct t_resp r;
    cr_assert_eq(t_call(&r, "POST", "/api/v1/orders", ALICE, body, key), 202, "%s", r.text);
    char order[40], stream[64];
    snprintf(order, sizeof order, "%s", t_str(&r, "orderId"));
    cr_expect_str_eq(t_header(&r, "Idempotent-Replayed"), "");
    t_free(&r);
    /* the key's record committed with the order (one append, issue 19) */
    snprintf(stream, sizeof stream, "order-%s", order);
    cr_expect(record_follows(stream), "the key has a record");
    cr_assert_eq(t_call(&r, "POST", "/api/v1/orders", ALICE, body, key), 202, "%s", r.text);
    cr_expect_str_eq(t_str(&r, "orderId"), order);
    cr_expect_str_eq(t_header(&r, "Idempotent-Replayed"), "true");
    t_free(&r);
    char other[512];
    snprintf(other, sizeof other, "{\"items\":[{\"productId\":\"%s\",\"quantity\":2}]," ADDR "}",
             prod);
    cr_assert_eq(t_call(&r, "POST", "/api/v1/orders", ALICE, other, key), 422, "%s", r.text);
    t_free(&r);
    t_catch_up();
    cr_assert_eq(t_call(&r, "GET", "/api/v1/orders", ALICE, NULL, NULL), 200);
    cr_expect_eq(json_array_size(json_object_get(r.body, "items")), 1, "one order: %s", r.text);
    t_free(&r);
}

Test(ordering, cancel_is_the_owners_and_only_while_pending)
{
    char acc[40], prod[40], order[40], saga[40], path[160], st[32];
    t_register(ALICE, "alice@test.example", NULL, acc);
    t_deposit(ALICE, acc, 100000);
    t_product(1, prod);
    t_order(ALICE, prod, 1, order, saga);
    snprintf(path, sizeof path, "/api/v1/orders/%s/cancel", order);
    struct t_resp r;
    cr_expect_eq(t_call(&r, "POST", path, BOB, "{}", NULL), 404, "not bob's");
    t_free(&r);
    cr_expect_eq(t_call(&r, "POST", path, ALICE, "{\"reason\":7}", NULL), 400);
    cr_expect(t_has_pointer(&r, "/reason"), "%s", r.text);
    t_free(&r);
    cr_assert_str_eq(t_saga_wait(saga, st), "completed");
    cr_expect_eq(t_call(&r, "POST", path, ALICE, "{\"reason\":\"changed my mind\"}", NULL), 409,
                 "a confirmed order: %s", r.text);
    cr_expect_str_eq(t_str(&r, "title"), "Order cannot be cancelled");
    t_free(&r);
    cr_expect_eq(t_call(&r, "POST", "/api/v1/orders/0190a1b2-0000-7000-8000-000000000000/cancel",
                        ADMIN, "{}", NULL),
                 404);
    t_free(&r);
}
