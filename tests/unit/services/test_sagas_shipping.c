/* The sagas, shipping, audit and ops handlers (src/services/sagas/,
 * src/services/shipping/api.c, src/services/audit.c, src/services/platform.c): a
 * PlaceOrder saga is readable by its order's owner, dispatching is an admin's and
 * only for a confirmed order, the audit names every event's actor, and the admin
 * views refuse everyone else. */
#include <criterion/criterion.h>
#include <string.h>

#include "svc_test.h"

TestSuite(sagas, .init = t_start, .fini = t_stop, .timeout = 60);
TestSuite(shipping, .init = t_start, .fini = t_stop, .timeout = 60);
TestSuite(audit, .init = t_start, .fini = t_stop, .timeout = 60);

/* alice, funded, orders product 1; the saga has ended. */
static void funded_order(char order[40], char saga[40], char status[32])
{
    char acc[40], prod[40];
    t_register(ALICE, "alice@test.example", NULL, acc);
    t_deposit(ALICE, acc, 100000);
    t_product(1, prod);
    t_order(ALICE, prod, 1, order, saga);
    t_saga_wait(saga, status);
}

Test(sagas, a_saga_is_its_order_owners)
{
    char order[40], saga[40], st[32], path[128];
    funded_order(order, saga, st);
    cr_assert_str_eq(st, "completed");
    snprintf(path, sizeof path, "/api/v1/sagas/%s", saga);
    struct t_resp r;
    cr_assert_eq(t_call(&r, "GET", path, ALICE, NULL, NULL), 200, "%s", r.text);
    cr_expect_str_eq(t_str(&r, "id"), saga);
    cr_expect_str_eq(t_str(&r, "type"), "PlaceOrder");
    json_t *steps = json_object_get(r.body, "steps");
    cr_expect_gt(json_array_size(steps), 0, "%s", r.text);
    size_t i;
    json_t *s;
    json_array_foreach(steps, i, s) cr_expect_str_eq(
        json_string_value(json_object_get(s, "status")), "succeeded", "%s", r.text);
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", path, BOB, NULL, NULL), 404, "not bob's");
    cr_expect_str_eq(t_str(&r, "title"), "Saga not found");
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", path, ANON, NULL, NULL), 401);
    t_free(&r);
    cr_expect_eq(
        t_call(&r, "GET", "/api/v1/sagas/0190a1b2-0000-7000-8000-000000000000", ADMIN, NULL, NULL),
        404);
    t_free(&r);
    snprintf(path, sizeof path, "/api/v1/orders/%s", order);
    cr_assert_eq(t_call(&r, "GET", path, ALICE, NULL, NULL), 200);
    cr_expect_str_eq(t_str(&r, "status"), "confirmed");
    cr_expect_str_eq(t_str(&r, "sagaId"), saga);
    t_free(&r);
}

Test(sagas, an_unpaid_order_is_compensated)
{
    char prod[40], order[40], saga[40], st[32], path[128];
    t_register(ALICE, "alice@test.example", NULL, NULL); /* a wallet with 0.00 */
    t_product(5, prod);
    t_order(ALICE, prod, 1, order, saga);
    cr_assert_str_eq(t_saga_wait(saga, st), "compensated");
    t_catch_up();
    snprintf(path, sizeof path, "/api/v1/orders/%s", order);
    struct t_resp r;
    cr_assert_eq(t_call(&r, "GET", path, ALICE, NULL, NULL), 200);
    cr_expect_str_eq(t_str(&r, "status"), "cancelled");
    cr_expect_neq(t_str(&r, "cancellationReason")[0], '\0', "%s", r.text);
    t_free(&r);
    snprintf(path, sizeof path, "/api/v1/inventory/%s", prod);
    cr_assert_eq(t_call(&r, "GET", path, ANON, NULL, NULL), 200);
    cr_expect_eq(json_integer_value(json_object_get(r.body, "reserved")), 0, "released: %s",
                 r.text);
    t_free(&r);
    snprintf(path, sizeof path, "/api/v1/orders/%s/cancel", order);
    cr_expect_eq(t_call(&r, "POST", path, ALICE, "{}", NULL), 202, "cancelling again is a no-op");
    t_free(&r);
}

Test(sagas, the_admin_views_and_retry)
{
    char order[40], saga[40], st[32], path[128];
    funded_order(order, saga, st);
    struct t_resp r;
    cr_expect_eq(t_call(&r, "GET", "/admin/sagas", ALICE, NULL, NULL), 403);
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", "/admin/sagas", ANON, NULL, NULL), 401);
    t_free(&r);
    cr_assert_eq(t_call(&r, "GET", "/admin/sagas?status=completed", ADMIN, NULL, NULL), 200);
    json_t *items = json_object_get(r.body, "items");
    cr_expect_eq(json_array_size(items), 1, "%s", r.text);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(items, 0), "id")), saga);
    t_free(&r);
    cr_assert_eq(t_call(&r, "GET", "/admin/sagas?status=failed", ADMIN, NULL, NULL), 200);
    cr_expect_eq(json_array_size(json_object_get(r.body, "items")), 0);
    t_free(&r);
    snprintf(path, sizeof path, "/admin/sagas/%s/retry", saga);
    cr_expect_eq(t_call(&r, "POST", path, ALICE, NULL, NULL), 403);
    t_free(&r);
    cr_expect_eq(t_call(&r, "POST", path, ADMIN, NULL, NULL), 409, "a completed saga: %s", r.text);
    cr_expect_str_eq(t_str(&r, "title"), "Saga cannot be retried");
    t_free(&r);
    cr_expect_eq(t_call(&r, "POST", "/admin/sagas/0190a1b2-0000-7000-8000-000000000000/retry",
                        ADMIN, NULL, NULL),
                 404);
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", "/admin/saga-breakers", ADMIN, NULL, NULL), 200);
    cr_expect_gt(json_array_size(json_object_get(r.body, "items")), 0);
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", "/admin/saga-breakers", BOB, NULL, NULL), 403);
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", "/admin/projections", ADMIN, NULL, NULL), 200);
    cr_expect_eq(json_array_size(json_object_get(r.body, "items")), 8, "%s", r.text);
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", "/admin/projections", BOB, NULL, NULL), 403);
    t_free(&r);
}

Test(shipping, a_shipment_is_its_order_owners)
{
    char order[40], saga[40], st[32], path[128];
    funded_order(order, saga, st);
    cr_assert_str_eq(st, "completed");
    snprintf(path, sizeof path, "/api/v1/shipments/%s", order);
    struct t_resp r;
    cr_assert_eq(t_call(&r, "GET", path, ALICE, NULL, NULL), 200, "%s", r.text);
    cr_expect_str_eq(t_str(&r, "orderId"), order);
    cr_expect(json_is_object(json_object_get(r.body, "address")), "%s", r.text);
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", path, BOB, NULL, NULL), 404, "not bob's");
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", path, ADMIN, NULL, NULL), 200);
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", path, ANON, NULL, NULL), 401);
    t_free(&r);
}

Test(shipping, dispatch_is_an_admins_for_a_confirmed_order)
{
    char order[40], saga[40], st[32], path[128];
    funded_order(order, saga, st);
    cr_assert_str_eq(st, "completed");
    snprintf(path, sizeof path, "/api/v1/shipments/%s/dispatch", order);
    struct t_resp r;
    cr_expect_eq(t_call(&r, "POST", path, ALICE, NULL, NULL), 403, "not the customer's");
    t_free(&r);
    cr_expect_eq(t_call(&r, "POST", path, ANON, NULL, NULL), 401);
    t_free(&r);
    cr_assert_eq(t_call(&r, "POST", path, ADMIN, NULL, NULL), 202, "%s", r.text);
    cr_expect_str_eq(t_str(&r, "orderStatus"), "shipped");
    t_free(&r);
    cr_assert_eq(t_call(&r, "POST", path, ADMIN, NULL, NULL), 202, "a retry is a no-op: %s",
                 r.text);
    t_free(&r);
    t_catch_up();
    snprintf(path, sizeof path, "/api/v1/orders/%s", order);
    cr_assert_eq(t_call(&r, "GET", path, ALICE, NULL, NULL), 200);
    cr_expect_str_eq(t_str(&r, "status"), "shipped");
    t_free(&r);
    snprintf(path, sizeof path, "/api/v1/shipments/%s", order);
    cr_assert_eq(t_call(&r, "GET", path, ALICE, NULL, NULL), 200);
    cr_expect_str_eq(t_str(&r, "status"), "dispatched", "%s", r.text);
    t_free(&r);
    cr_expect_eq(t_call(&r, "POST",
                        "/api/v1/shipments/0190a1b2-0000-7000-8000-000000000000/dispatch", ADMIN,
                        NULL, NULL),
                 404);
    t_free(&r);
}

Test(shipping, a_cancelled_order_is_not_dispatched)
{
    char prod[40], order[40], saga[40], st[32], path[128];
    t_register(ALICE, "alice@test.example", NULL, NULL); /* cannot pay */
    t_product(5, prod);
    t_order(ALICE, prod, 1, order, saga);
    cr_assert_str_eq(t_saga_wait(saga, st), "compensated");
    snprintf(path, sizeof path, "/api/v1/shipments/%s/dispatch", order);
    struct t_resp r;
    cr_expect_eq(t_call(&r, "POST", path, ADMIN, NULL, NULL), 409, "%s", r.text);
    cr_expect_str_eq(t_str(&r, "title"), "Order cannot be shipped");
    t_free(&r);
}

Test(audit, events_name_their_actor)
{
    char acc[40];
    t_register(ALICE, "alice@test.example", NULL, acc);
    t_deposit(ADMIN, acc, 500);
    struct t_resp r;
    cr_expect_eq(t_call(&r, "GET", "/admin/audit", ALICE, NULL, NULL), 403);
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", "/admin/audit", ANON, NULL, NULL), 401);
    t_free(&r);
    cr_assert_eq(t_call(&r, "GET", "/admin/audit?actor=alice&limit=100", ADMIN, NULL, NULL), 200,
                 "%s", r.text);
    json_t *items = json_object_get(r.body, "items");
    cr_expect_geq(json_array_size(items), 2, "registered and opened: %s", r.text);
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it)
    {
        json_t *actor = json_object_get(it, "actor");
        cr_expect_str_eq(json_string_value(json_object_get(actor, "sub")), "alice");
        cr_expect_str_eq(json_string_value(json_array_get(json_object_get(actor, "roles"), 0)),
                         "customer");
        cr_expect(json_is_string(json_object_get(it, "requestId")), "%s", r.text);
        cr_expect(json_is_integer(json_object_get(it, "position")));
    }
    t_free(&r);
    char path[160];
    snprintf(path, sizeof path, "/admin/audit?stream=account-%s", acc);
    cr_assert_eq(t_call(&r, "GET", path, ADMIN, NULL, NULL), 200);
    items = json_object_get(r.body, "items");
    cr_expect_eq(json_array_size(items), 2, "opened by alice, funded by root: %s", r.text);
    cr_expect_str_eq(json_string_value(json_object_get(
                         json_object_get(json_array_get(items, 1), "actor"), "sub")),
                     "root");
    cr_expect(json_is_null(json_object_get(r.body, "nextCursor")), "the end of the log");
    t_free(&r);
}

Test(audit, pages_and_bad_cursors)
{
    struct t_resp r;
    cr_assert_eq(t_call(&r, "GET", "/admin/audit?limit=2", ADMIN, NULL, NULL), 200);
    cr_expect_eq(json_array_size(json_object_get(r.body, "items")), 2);
    const char *next = t_str(&r, "nextCursor");
    cr_assert_neq(next[0], '\0', "%s", r.text);
    long long second = json_integer_value(
        json_object_get(json_array_get(json_object_get(r.body, "items"), 1), "position"));
    char path[128];
    snprintf(path, sizeof path, "/admin/audit?limit=2&after=%s", next);
    t_free(&r);
    cr_assert_eq(t_call(&r, "GET", path, ADMIN, NULL, NULL), 200);
    cr_expect_gt(json_integer_value(json_object_get(
                     json_array_get(json_object_get(r.body, "items"), 0), "position")),
                 second, "the next page continues after the cursor");
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", "/admin/audit?after=-1&limit=500", ADMIN, NULL, NULL), 400);
    cr_expect(t_has_pointer(&r, "/after") && t_has_pointer(&r, "/limit"), "%s", r.text);
    t_free(&r);
}

/* A store outage is not the participant's failure: the steps' breakers stay closed
 * (the engine interrupts and resumes the saga instead of compensating it). */
Test(sagas, a_store_outage_does_not_open_the_steps_breakers)
{
    for (int step = 0; step < SVC_SAGA_STEPS; step++) {
        struct ag_cb *cb = t_plat->breakers[step];
        for (int i = 0; i < 100; i++) {
            struct ag_cb_permit permit;
            cr_assert_eq(ag_cb_allow(cb, &permit, NULL, NULL), 0);
            ag_cb_record(cb, &permit, AG_EUNAVAILABLE);
        }
        cr_assert_eq(ag_cb_state(cb), AG_CB_CLOSED, "step %d", step);
        for (int i = 0; i < 100; i++) { /* while a real failure still counts */
            struct ag_cb_permit permit;
            if (ag_cb_allow(cb, &permit, NULL, NULL)) break;
            ag_cb_record(cb, &permit, AG_EIO);
        }
        cr_assert_eq(ag_cb_state(cb), AG_CB_OPEN, "step %d", step);
    }
}
