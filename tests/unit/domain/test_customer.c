/* Customer and Product: register/add, tier and price changes, addresses,
 * discontinuation, every rule with its message, snapshots. */
#include "unit/domain/dom_test.h"

static struct ag_customer c;
static struct ag_product p;

static void setup_c(void)
{
    dt_begin(&ag_customer_aggregate, &c);
}

TestSuite(customer, .init = setup_c, .fini = dt_end);

static void registered(bool premium)
{
    cr_assert_eq(dt_ok(D(ag_customer_register, {"c1", "ada@example.com", "Ada", premium, "a1"})),
                 1);
}

Test(customer, register_event_and_state)
{
    registered(true);
    json_t *d = dt_ev(0, "CustomerRegistered");
    cr_assert_str_eq(jstr(d, "customerId"), "c1");
    cr_assert_str_eq(jstr(d, "email"), "ada@example.com");
    cr_assert_str_eq(jstr(d, "name"), "Ada");
    cr_assert_str_eq(jstr(d, "tier"), "premium");
    cr_assert_str_eq(jstr(d, "accountId"), "a1");
    cr_assert(c.exists);
    cr_assert(c.premium);
    cr_assert_str_eq(c.account_id, "a1");
    dt_fail(D(ag_customer_register, {"c1", "b@example.com", "B", false, "a2"}), AG_EDOMAIN,
            "customer c1 is already registered");
}

Test(customer, register_validation)
{
    const char *bad[] = {"",
                         "ada",
                         "@example.com",
                         "ada@example",
                         "ada@@example.com",
                         "a@b@example.com",
                         "ada@.com",
                         "ada@example.",
                         "a da@example.com",
                         NULL};
    for (int i = 0; bad[i]; i++)
        dt_fail(D(ag_customer_register, {"c1", bad[i], "Ada", false, "a1"}), AG_EINVAL,
                "invalid email");
    dt_fail(D(ag_customer_register, {"c1", NULL, "Ada", false, "a1"}), AG_EINVAL, "invalid email");
    char longmail[300];
    memset(longmail, 'a', 250);
    strcpy(longmail + 250, "@b.co"); /* 255 bytes */
    dt_fail(D(ag_customer_register, {"c1", longmail, "Ada", false, "a1"}), AG_EINVAL,
            "at most 254 bytes");
    cr_assert_eq(dt_ok(D(ag_customer_register, {"c1", "a@b.c", "A", false, "a1"})), 1);
    dt_end();
    dt_begin(&ag_customer_aggregate, &c);
    dt_fail(D(ag_customer_register, {"c1", "ada@example.com", "", false, "a1"}), AG_EINVAL,
            "name must not be empty");
    dt_fail(D(ag_customer_register, {"c1", "ada@example.com", NULL, false, "a1"}), AG_EINVAL,
            "name must not be empty");
    dt_fail(D(ag_customer_register, {"", "ada@example.com", "Ada", false, "a1"}), AG_EINVAL,
            "customer id");
    dt_fail(D(ag_customer_register, {"c1", "ada@example.com", "Ada", false, NULL}), AG_EINVAL,
            "account id");
    dt_fail(D(ag_customer_register, {"c1", "ada@example.com", "\xff\xfe", false, "a1"}), AG_EINVAL,
            "UTF-8");
}

Test(customer, change_tier)
{
    dt_fail(D(ag_customer_change_tier, {true}), AG_EDOMAIN, "customer is not registered");
    registered(false);
    cr_assert_str_eq(jstr(dt_ev(0, "CustomerRegistered"), "tier"), "standard");
    cr_assert_eq(dt_ok(D(ag_customer_change_tier, {false})), 0, "same tier: no events");
    cr_assert_eq(dt_ok(D(ag_customer_change_tier, {true})), 1);
    cr_assert_str_eq(jstr(dt_ev(0, "CustomerTierChanged"), "tier"), "premium");
    cr_assert(c.premium);
    dt_ok(D(ag_customer_change_tier, {false}));
    cr_assert_not(c.premium);
    cr_assert_str_eq(ag_customer_tier_name(true), "premium");
}

Test(customer, addresses)
{
    registered(false);
    cr_assert_eq(dt_ok(D(ag_customer_add_address, {"addr-1", &ADDR})), 1);
    cr_assert_str_eq(jstr(json_object_get(dt_ev(0, "AddressAdded"), "address"), "city"),
                     "Springfield");
    cr_assert_eq(c.naddresses, 1);
    cr_assert_str_eq(jstr(dt_ev(0, "AddressAdded"), "addressId"), "addr-1");
    cr_assert_eq(ag_customer_address_index(&c, "addr-1"), 0);
    cr_assert_eq(ag_customer_address_index(&c, "addr-2"), -1);
    cr_assert_eq(dt_ok(D(ag_customer_add_address, {"addr-1", &ADDR})), 0, "duplicate: no events");
    dt_fail(D(ag_customer_add_address, {NULL, &ADDR2}), AG_EINVAL, "address id");
    struct ag_address a = ADDR;
    for (int i = 1; i < AG_CUSTOMER_MAX_ADDRESSES; i++) {
        snprintf(a.street, sizeof a.street, "%d Main St", i + 1);
        cr_assert_eq(dt_ok(D(ag_customer_add_address, {"addr-1", &a})), 1);
    }
    cr_assert_eq(c.naddresses, 8);
    dt_fail(D(ag_customer_add_address, {"addr-1", &ADDR2}), AG_EDOMAIN,
            "customer c1 already has the maximum of 8 addresses");
    struct ag_address bad = ADDR2;
    strcpy(bad.country, "u");
    dt_fail(D(ag_customer_add_address, {"addr-1", &bad}), AG_EINVAL, "/address/country");
    dt_fail(D(ag_customer_add_address, {"addr-1", NULL}), AG_EINVAL, "address is required");
    cr_assert_eq(dt_apply("AddressAdded", "{\"address\":{\"street\":\"s\",\"city\":\"c\",\"state\":"
                                          "\"s\",\"zipCode\":\"z\",\"country\":\"US\"}}"),
                 AG_EINVAL, "a ninth address cannot be applied");
}

Test(customer, snapshot_round_trips)
{
    struct ag_customer copy;
    dt_roundtrip(&copy);
    cr_assert_not(copy.exists);
    registered(true);
    dt_ok(D(ag_customer_add_address, {"addr-1", &ADDR}));
    dt_ok(D(ag_customer_add_address, {"addr-1", &ADDR2}));
    dt_roundtrip(&copy);
    cr_assert(copy.exists);
    cr_assert(copy.premium);
    cr_assert_str_eq(copy.email, "ada@example.com");
    cr_assert_eq(copy.naddresses, 2);
    cr_assert(ag_address_eq(&copy.addresses[1], &ADDR2));
    cr_assert_str_eq(copy.address_ids[1], "addr-1");
    ag_customer_free(&copy);
}

Test(customer, evolve_malformed)
{
    cr_assert_eq(
        dt_apply("CustomerRegistered",
                 "{\"customerId\":\"c\",\"email\":\"e@x.y\",\"name\":\"n\",\"tier\":\"gold\"}"),
        AG_EINVAL);
    cr_assert_eq(dt_apply("CustomerTierChanged", "{}"), AG_EINVAL);
    cr_assert_eq(dt_apply("Whatever", "{}"), 0);
}

/* ---- Product ---- */

static void setup_p(void)
{
    dt_begin(&ag_product_aggregate, &p);
}

TestSuite(product, .init = setup_p, .fini = dt_end);

Test(product, add_event_and_state)
{
    cr_assert_eq(dt_ok(D(ag_product_add, {"p1", "SKU-1", "Kettle", USD(2999)})), 1);
    json_t *d = dt_ev(0, "ProductAdded");
    cr_assert_str_eq(jstr(d, "productId"), "p1");
    cr_assert_str_eq(jstr(d, "sku"), "SKU-1");
    cr_assert_str_eq(jstr(d, "name"), "Kettle");
    cr_assert_eq(jint(d, "price", "amount"), 2999);
    cr_assert(p.exists && p.active);
    cr_assert_eq(p.price.amount, 2999);
    dt_fail(D(ag_product_add, {"p1", "SKU-1", "Kettle", USD(1)}), AG_EDOMAIN,
            "product p1 already exists");
}

Test(product, add_rules)
{
    dt_fail(D(ag_product_add, {"p1", "", "Kettle", USD(1)}), AG_EINVAL, "sku must be");
    dt_fail(D(ag_product_add, {"p1", "S", "", USD(1)}), AG_EINVAL, "name must be");
    dt_fail(D(ag_product_add, {"p1", "S", "K", USD(-1)}), AG_EINVAL,
            "price must not be negative (got -1)");
    dt_fail(D(ag_product_add, {"p1", "S", "K", ((struct ag_money){1, "us"})}), AG_EINVAL,
            "currency");
    cr_assert_eq(dt_ok(D(ag_product_add, {"p1", "S", "Free sample", USD(0)})), 1,
                 "price 0 is allowed");
}

Test(product, change_price)
{
    dt_fail(D(ag_product_change_price, {USD(1)}), AG_EDOMAIN, "product does not exist");
    dt_ok(D(ag_product_add, {"p1", "SKU-1", "Kettle", USD(2999)}));
    cr_assert_eq(dt_ok(D(ag_product_change_price, {USD(2499)})), 1);
    json_t *d = dt_ev(0, "ProductPriceChanged");
    cr_assert_eq(jint(d, "price", "amount"), 2499);
    cr_assert_eq(jint(d, "previousPrice", "amount"), 2999);
    cr_assert_eq(p.price.amount, 2499);
    cr_assert_eq(dt_ok(D(ag_product_change_price, {USD(2499)})), 0, "same price: no events");
    dt_fail(D(ag_product_change_price, {EUR(2000)}), AG_EDOMAIN,
            "product p1 is priced in USD, not EUR");
    dt_fail(D(ag_product_change_price, {USD(-5)}), AG_EINVAL, "price must not be negative");
}

Test(product, discontinue)
{
    dt_fail(D(ag_product_discontinue, {NULL}), AG_EDOMAIN, "product does not exist");
    dt_ok(D(ag_product_add, {"p1", "SKU-1", "Kettle", USD(2999)}));
    cr_assert_eq(dt_ok(D(ag_product_discontinue, {"recalled"})), 1);
    cr_assert_str_eq(jstr(dt_ev(0, "ProductDiscontinued"), "reason"), "recalled");
    cr_assert_not(p.active);
    cr_assert_eq(dt_ok(D(ag_product_discontinue, {NULL})), 0, "idempotent");
    dt_fail(D(ag_product_change_price, {USD(1)}), AG_EDOMAIN, "product p1 is discontinued");
}

Test(product, snapshot_round_trips)
{
    struct ag_product copy;
    dt_roundtrip(&copy);
    dt_ok(D(ag_product_add, {"p1", "SKU-1", "Kettle", USD(2999)}));
    dt_ok(D(ag_product_discontinue, {NULL}));
    cr_assert_null(json_object_get(dt_ev(0, "ProductDiscontinued"), "reason"));
    dt_roundtrip(&copy);
    cr_assert(copy.exists);
    cr_assert_not(copy.active);
    cr_assert_str_eq(copy.sku, "SKU-1");
    cr_assert(ag_money_eq(&copy.price, &USD(2999)));
    ag_product_free(&copy);
}

Test(product, evolve_malformed)
{
    cr_assert_eq(
        dt_apply("ProductAdded", "{\"productId\":\"p\",\"sku\":\"s\",\"name\":\"n\",\"price\":5}"),
        AG_EINVAL);
    cr_assert_eq(dt_apply("ProductPriceChanged", "{\"price\":{\"amount\":1}}"), AG_EINVAL);
}

Test(customer, erase_keeps_id_tier_account_and_forgets_the_rest)
{
    struct ag_customer copy;
    dt_fail(D0(ag_customer_erase), AG_EDOMAIN, "customer is not registered");
    registered(true);
    dt_ok(D(ag_customer_add_address, {"addr-1", &ADDR}));
    cr_assert_eq(dt_ok(D0(ag_customer_erase)), 1);
    json_t *d = dt_ev(0, "CustomerErased");
    cr_assert_str_eq(jstr(d, "customerId"), "c1");
    cr_assert_eq(json_object_size(d), 1, "no personal data in the event");
    cr_assert(c.erased);
    cr_assert_str_eq(c.email, AG_CUSTOMER_ERASED);
    cr_assert_str_eq(c.name, AG_CUSTOMER_ERASED);
    cr_assert_eq(c.naddresses, 0);
    cr_assert(c.premium);
    cr_assert_str_eq(c.account_id, "a1");
    cr_assert_eq(dt_ok(D0(ag_customer_erase)), 0, "erased already: no events");
    dt_fail(D(ag_customer_change_tier, {false}), AG_EDOMAIN, "was erased");
    dt_fail(D(ag_customer_add_address, {"addr-1", &ADDR2}), AG_EDOMAIN, "was erased");
    dt_roundtrip(&copy);
    cr_assert(copy.erased);
    cr_assert_str_eq(copy.email, AG_CUSTOMER_ERASED);
    ag_customer_free(&copy);
}
