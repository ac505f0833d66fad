/* The payments context's handlers (src/services/payments/api.c): a customer sees
 * and funds its own wallet only (someone else's is 404, lists are filtered); an
 * admin sees all; deposits are validated with JSON pointers and counted once per
 * Idempotency-Key. */
#include <criterion/criterion.h>
#include <string.h>

#include "svc_test.h"

TestSuite(payments, .init = t_start, .fini = t_stop, .timeout = 60);

static long long balance(const struct t_resp *r)
{
    return json_integer_value(json_object_get(json_object_get(r->body, "balance"), "amount"));
}

Test(payments, own_account_only)
{
    char acc[40], bacc[40], path[128];
    t_register(ALICE, "alice@test.example", NULL, acc);
    t_register(BOB, "bob@test.example", NULL, bacc);
    snprintf(path, sizeof path, "/api/v1/accounts/%s", acc);
    struct t_resp r;
    cr_assert_eq(t_call(&r, "GET", path, ALICE, NULL, NULL), 200, "%s", r.text);
    cr_expect_str_eq(t_str(&r, "id"), acc);
    cr_expect_eq(balance(&r), 0);
    cr_expect_str_eq(
        json_string_value(json_object_get(json_object_get(r.body, "balance"), "currency")), "USD");
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", path, BOB, NULL, NULL), 404, "someone else's");
    cr_expect_str_eq(t_str(&r, "title"), "Account not found");
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", path, ADMIN, NULL, NULL), 200);
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", path, ANON, NULL, NULL), 401);
    t_free(&r);
}

Test(payments, lists_are_filtered_to_the_caller)
{
    char acc[40];
    t_register(ALICE, "alice@test.example", NULL, acc);
    t_register(BOB, "bob@test.example", NULL, NULL);
    t_catch_up();
    struct t_resp r;
    cr_assert_eq(t_call(&r, "GET", "/api/v1/accounts", ALICE, NULL, NULL), 200, "%s", r.text);
    json_t *items = json_object_get(r.body, "items");
    cr_expect_eq(json_array_size(items), 1, "alice's only: %s", r.text);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(items, 0), "id")), acc);
    t_free(&r);
    cr_assert_eq(t_call(&r, "GET", "/api/v1/accounts?limit=100", ADMIN, NULL, NULL), 200);
    cr_expect_eq(json_array_size(json_object_get(r.body, "items")), 5, "3 seeded + alice + bob: %s",
                 r.text);
    t_free(&r);
    /* the seeded alice has 1000.00, bob 500.00, carol 10.00 */
    cr_assert_eq(t_call(&r, "GET", "/api/v1/accounts?minBalance=50000", ADMIN, NULL, NULL), 200);
    cr_expect_eq(json_array_size(json_object_get(r.body, "items")), 2, "%s", r.text);
    t_free(&r);
    cr_assert_eq(t_call(&r, "GET", "/api/v1/accounts?minBalance=50000", ALICE, NULL, NULL), 200);
    cr_expect_eq(json_array_size(json_object_get(r.body, "items")), 0, "filtered, then owned");
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", "/api/v1/accounts", "nobody|customer", NULL, NULL), 200);
    cr_expect_eq(json_array_size(json_object_get(r.body, "items")), 0,
                 "a principal without a customer sees nothing");
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", "/api/v1/accounts?minBalance=-1&limit=0", ADMIN, NULL, NULL),
                 400);
    cr_expect(t_has_pointer(&r, "/minBalance") && t_has_pointer(&r, "/limit"), "%s", r.text);
    t_free(&r);
}

Test(payments, deposits_by_the_owner_or_an_admin)
{
    char acc[40], path[128];
    t_register(ALICE, "alice@test.example", NULL, acc);
    snprintf(path, sizeof path, "/api/v1/accounts/%s/deposits", acc);
    const char *body = "{\"amount\":{\"amount\":2500,\"currency\":\"USD\"}}";
    struct t_resp r;
    cr_assert_eq(t_call(&r, "POST", path, ALICE, body, NULL), 200, "%s", r.text);
    cr_expect_eq(balance(&r), 2500);
    cr_expect_eq(json_integer_value(json_object_get(r.body, "transactionCount")), 1);
    t_free(&r);
    cr_assert_eq(t_call(&r, "POST", path, ADMIN, body, NULL), 200, "%s", r.text);
    cr_expect_eq(balance(&r), 5000);
    t_free(&r);
    cr_expect_eq(t_call(&r, "POST", path, BOB, body, NULL), 404, "not bob's to fund");
    t_free(&r);
    cr_expect_eq(t_call(&r, "POST", path, ANON, body, NULL), 401);
    t_free(&r);
    cr_expect_eq(t_call(&r, "POST",
                        "/api/v1/accounts/0190a1b2-0000-7000-8000-000000000000/deposits", ADMIN,
                        body, NULL),
                 404);
    t_free(&r);
    t_catch_up();
    snprintf(path, sizeof path, "/api/v1/accounts/%s", acc);
    cr_assert_eq(t_call(&r, "GET", path, ALICE, NULL, NULL), 200);
    cr_expect_eq(balance(&r), 5000, "bob's attempt changed nothing");
    t_free(&r);
}

Test(payments, deposit_validation_names_the_field)
{
    char acc[40], path[128];
    t_register(ALICE, "alice@test.example", NULL, acc);
    snprintf(path, sizeof path, "/api/v1/accounts/%s/deposits", acc);
    struct {
        const char *body, *pointer;
        int status;
    } cases[] = {
        {"{}", "/amount", 400},
        {"{\"amount\":{\"amount\":0,\"currency\":\"USD\"}}", "/amount/amount", 400},
        {"{\"amount\":{\"amount\":-5,\"currency\":\"USD\"}}", "/amount/amount", 400},
        {"{\"amount\":{\"amount\":5}}", "/amount/currency", 400},
        {"{\"amount\":{\"amount\":5,\"currency\":\"EUR\"}}", "/amount/currency", 422},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct t_resp r;
        cr_expect_eq(t_call(&r, "POST", path, ALICE, cases[i].body, NULL), cases[i].status,
                     "%s: %s", cases[i].body, r.text);
        cr_expect(t_has_pointer(&r, cases[i].pointer), "%s wants %s: %s", cases[i].body,
                  cases[i].pointer, r.text);
        t_free(&r);
    }
}

Test(payments, a_deposit_with_a_key_counts_once)
{
    char acc[40], path[128];
    t_register(ALICE, "alice@test.example", NULL, acc);
    snprintf(path, sizeof path, "/api/v1/accounts/%s/deposits", acc);
    const char *body = "{\"amount\":{\"amount\":700,\"currency\":\"USD\"}}";
    const char *key = "Idempotency-Key: dep-1\r\n";
    struct t_resp r;
    cr_assert_eq(t_call(&r, "POST", path, ALICE, body, key), 200, "%s", r.text);
    cr_expect_eq(balance(&r), 700);
    t_free(&r);
    cr_assert_eq(t_call(&r, "POST", path, ALICE, body, key), 200, "%s", r.text);
    cr_expect_eq(balance(&r), 700, "the first answer again");
    cr_expect_str_eq(t_header(&r, "Idempotent-Replayed"), "true");
    t_free(&r);
    cr_expect_eq(
        t_call(&r, "POST", path, ALICE, "{\"amount\":{\"amount\":701,\"currency\":\"USD\"}}", key),
        422, "the key with another amount");
    t_free(&r);
    t_catch_up();
    snprintf(path, sizeof path, "/api/v1/accounts/%s", acc);
    cr_assert_eq(t_call(&r, "GET", path, ALICE, NULL, NULL), 200);
    cr_expect_eq(balance(&r), 700, "counted once");
    t_free(&r);
}
