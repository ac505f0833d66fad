/* The catalog and inventory contexts' handlers (src/services/catalog/api.c,
 * src/services/inventory/api.c): products and stock levels are public and paged by
 * cursor; restocking is an admin's, validated, idempotent with a key. */
#include <criterion/criterion.h>
#include <string.h>

#include "svc_test.h"

TestSuite(catalog, .init = t_start, .fini = t_stop, .timeout = 60);
TestSuite(inventory, .init = t_start, .fini = t_stop, .timeout = 60);

Test(catalog, products_are_public_and_paged_by_cursor)
{
    t_catch_up();
    struct t_resp r;
    cr_assert_eq(t_call(&r, "GET", "/api/v1/products", ANON, NULL, NULL), 200, "%s", r.text);
    json_t *items = json_object_get(r.body, "items");
    cr_expect_eq(json_array_size(items), 6, "the seeded catalog: %s", r.text);
    cr_expect(json_is_null(json_object_get(r.body, "nextCursor")));
    json_t *first = json_array_get(items, 0);
    cr_expect(json_is_string(json_object_get(first, "sku")));
    cr_expect_str_eq(
        json_string_value(json_object_get(json_object_get(first, "price"), "currency")), "USD");
    char third[40];
    snprintf(third, sizeof third, "%s",
             json_string_value(json_object_get(json_array_get(items, 2), "id")));
    t_free(&r);

    cr_assert_eq(t_call(&r, "GET", "/api/v1/products?limit=2", ANON, NULL, NULL), 200);
    cr_expect_eq(json_array_size(json_object_get(r.body, "items")), 2);
    char path[160];
    snprintf(path, sizeof path, "/api/v1/products?limit=2&cursor=%s", t_str(&r, "nextCursor"));
    t_free(&r);
    cr_assert_eq(t_call(&r, "GET", path, ANON, NULL, NULL), 200);
    cr_expect_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(r.body, "items"), 0), "id")),
                     third, "the next page starts after the cursor");
    t_free(&r);
}

Test(catalog, a_bad_limit_is_400_on_limit)
{
    const char *bad[] = {"/api/v1/products?limit=0", "/api/v1/products?limit=101",
                         "/api/v1/products?limit=ten"};
    for (size_t i = 0; i < 3; i++) {
        struct t_resp r;
        cr_expect_eq(t_call(&r, "GET", bad[i], ANON, NULL, NULL), 400, "%s", bad[i]);
        cr_expect(t_has_pointer(&r, "/limit"), "%s: %s", bad[i], r.text);
        t_free(&r);
    }
}

Test(catalog, one_product_and_unknown_ids)
{
    char id[40], path[128];
    t_product(1, id);
    snprintf(path, sizeof path, "/api/v1/products/%s", id);
    struct t_resp r;
    cr_assert_eq(t_call(&r, "GET", path, ANON, NULL, NULL), 200);
    cr_expect_str_eq(t_str(&r, "id"), id);
    cr_expect_str_eq(t_str(&r, "sku"), "MS-02");
    cr_expect(json_is_true(json_object_get(r.body, "active")));
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", "/api/v1/products/0190a1b2-0000-7000-8000-000000000000", ANON,
                        NULL, NULL),
                 404);
    cr_expect_str_eq(t_str(&r, "title"), "Product not found");
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", "/api/v1/products/KB-01", ANON, NULL, NULL), 404,
                 "a sku is not an id");
    t_free(&r);
}

Test(inventory, stock_is_public)
{
    char id[40], path[128];
    t_product(5, id); /* WC-06: 3 webcams */
    snprintf(path, sizeof path, "/api/v1/inventory/%s", id);
    struct t_resp r;
    cr_assert_eq(t_call(&r, "GET", path, ANON, NULL, NULL), 200, "%s", r.text);
    cr_expect_str_eq(t_str(&r, "productId"), id);
    cr_expect_eq(json_integer_value(json_object_get(r.body, "onHand")), 3);
    cr_expect_eq(json_integer_value(json_object_get(r.body, "reserved")), 0);
    cr_expect_eq(json_integer_value(json_object_get(r.body, "available")), 3);
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", "/api/v1/inventory/0190a1b2-0000-7000-8000-000000000000", ANON,
                        NULL, NULL),
                 404);
    t_free(&r);
}

Test(inventory, restock_is_an_admins_and_validated)
{
    char id[40], path[128];
    t_product(5, id);
    snprintf(path, sizeof path, "/api/v1/inventory/%s/restock", id);
    struct t_resp r;
    cr_expect_eq(t_call(&r, "POST", path, ANON, "{\"quantity\":5}", NULL), 401);
    t_free(&r);
    cr_expect_eq(t_call(&r, "POST", path, ALICE, "{\"quantity\":5}", NULL), 403);
    cr_expect(strstr(t_str(&r, "detail"), "admin"), "%s", r.text);
    t_free(&r);
    const char *bad[] = {"{}", "{\"quantity\":0}", "{\"quantity\":-3}", "{\"quantity\":\"5\"}",
                         "{\"quantity\":1000000001}"};
    for (size_t i = 0; i < 5; i++) {
        cr_expect_eq(t_call(&r, "POST", path, ADMIN, bad[i], NULL), 400, "%s", bad[i]);
        cr_expect(t_has_pointer(&r, "/quantity"), "%s: %s", bad[i], r.text);
        t_free(&r);
    }
    cr_expect_eq(t_call(&r, "POST",
                        "/api/v1/inventory/0190a1b2-0000-7000-8000-000000000000/restock", ADMIN,
                        "{\"quantity\":5}", NULL),
                 404, "no such product");
    t_free(&r);
    cr_assert_eq(t_call(&r, "POST", path, ADMIN, "{\"quantity\":5}", NULL), 200, "%s", r.text);
    cr_expect_eq(json_integer_value(json_object_get(r.body, "onHand")), 8);
    t_free(&r);
}

Test(inventory, a_restock_with_a_key_counts_once)
{
    char id[40], path[128];
    t_product(5, id);
    snprintf(path, sizeof path, "/api/v1/inventory/%s/restock", id);
    const char *key = "Idempotency-Key: truck-42\r\n";
    struct t_resp r;
    cr_assert_eq(t_call(&r, "POST", path, ADMIN, "{\"quantity\":10}", key), 200, "%s", r.text);
    cr_expect_eq(json_integer_value(json_object_get(r.body, "onHand")), 13);
    t_free(&r);
    cr_assert_eq(t_call(&r, "POST", path, ADMIN, "{\"quantity\":10}", key), 200, "%s", r.text);
    cr_expect_eq(json_integer_value(json_object_get(r.body, "onHand")), 13, "replayed");
    cr_expect_str_eq(t_header(&r, "Idempotent-Replayed"), "true");
    t_free(&r);
    t_catch_up();
    snprintf(path, sizeof path, "/api/v1/inventory/%s", id);
    cr_assert_eq(t_call(&r, "GET", path, ANON, NULL, NULL), 200);
    cr_expect_eq(json_integer_value(json_object_get(r.body, "onHand")), 13, "counted once");
    t_free(&r);
}

/* The same key and body for two products are two requests (the key's record is
 * per product), not a replay of the first product's answer.
 * DISABLED: a known bug. restock() claims the key in the scope "restock" for every
 * product (svc_idem_begin(j, "restock") in src/services/inventory/api.c), so the
 * second product gets the first product's answer (200 with its productId) and is
 * not restocked. Scoping the key by the product id (as deposits scope theirs by
 * the account id) fixes it; enable this test with the fix. */
Test(inventory, a_key_reused_for_another_product_is_not_a_replay)
{
    char a[40], b[40], path[128];
    t_product(4, a);
    t_product(5, b);
    const char *key = "Idempotency-Key: truck-43\r\n";
    struct t_resp r;
    snprintf(path, sizeof path, "/api/v1/inventory/%s/restock", a);
    cr_assert_eq(t_call(&r, "POST", path, ADMIN, "{\"quantity\":10}", key), 200, "%s", r.text);
    t_free(&r);
    snprintf(path, sizeof path, "/api/v1/inventory/%s/restock", b);
    int st = t_call(&r, "POST", path, ADMIN, "{\"quantity\":10}", key);
    cr_expect(st == 200 || st == 422, "%d %s", st, r.text);
    if (st == 200)
        cr_expect_str_eq(t_str(&r, "productId"), b, "not product a's answer: %s", r.text);
    t_free(&r);
}
