/* Value objects: Money arithmetic, overflow, currency mixing, rounding, JSON with
 * pointer-named errors; Address parsing; the event list. */
#include "unit/domain/dom_test.h"

Test(money, add_sub_mul)
{
    struct ag_money r;
    struct ag_err err = {0};
    cr_assert_eq(ag_money_add(&USD(150), &USD(250), &r, &err), 0);
    cr_assert_eq(r.amount, 400);
    cr_assert_str_eq(r.currency, "USD");
    cr_assert_eq(ag_money_sub(&USD(150), &USD(250), &r, &err), 0);
    cr_assert_eq(r.amount, -100);
    cr_assert_eq(ag_money_mul(&USD(1999), 3, &r, &err), 0);
    cr_assert_eq(r.amount, 5997);
    cr_assert_lt(ag_money_cmp(&USD(1), &USD(2)), 0);
    cr_assert_eq(ag_money_cmp(&USD(2), &USD(2)), 0);
    cr_assert_gt(ag_money_cmp(&USD(3), &USD(2)), 0);
    cr_assert(ag_money_eq(&USD(3), &USD(3)));
    cr_assert_not(ag_money_eq(&USD(3), &EUR(3)));
}

Test(money, currency_mixing_is_a_domain_error)
{
    struct ag_money r = USD(7);
    struct ag_err err = {0};
    cr_assert_eq(ag_money_add(&USD(1), &EUR(1), &r, &err), AG_EDOMAIN);
    cr_assert_str_eq(err.msg, "currency mismatch: USD and EUR");
    cr_assert_eq(ag_money_sub(&USD(1), &EUR(1), &r, &err), AG_EDOMAIN);
    cr_assert_eq(r.amount, 7, "out untouched on error");
}

Test(money, overflow)
{
    struct ag_money r;
    struct ag_err err = {0};
    cr_assert_eq(ag_money_add(&USD(INT64_MAX), &USD(1), &r, &err), AG_EINVAL);
    cr_assert(strstr(err.msg, "overflow"));
    cr_assert_eq(ag_money_sub(&USD(INT64_MIN), &USD(1), &r, &err), AG_EINVAL);
    cr_assert_eq(ag_money_mul(&USD(INT64_MAX / 2 + 1), 2, &r, &err), AG_EINVAL);
    cr_assert_eq(ag_money_mul(&USD(INT64_MAX), 1, &r, NULL), 0);
    cr_assert_eq(ag_money_percent(&USD(INT64_MAX), 20000, &r), AG_EINVAL);
    cr_assert_eq(ag_money_percent(&USD(INT64_MAX), 10000, &r), 0);
    cr_assert_eq(r.amount, INT64_MAX);
}

Test(money, percent_rounds_half_up)
{
    struct ag_money r;
    cr_assert_eq(ag_money_percent(&USD(1999), 1000, &r), 0);
    cr_assert_eq(r.amount, 200); /* 199.9 */
    ag_money_percent(&USD(5), 1000, &r);
    cr_assert_eq(r.amount, 1); /* 0.5 → 1 */
    ag_money_percent(&USD(4), 1000, &r);
    cr_assert_eq(r.amount, 0); /* 0.4 → 0 */
    ag_money_percent(&USD(1999), 2500, &r);
    cr_assert_eq(r.amount, 500); /* 499.75 */
    ag_money_percent(&USD(10), 1250, &r);
    cr_assert_eq(r.amount, 1); /* 1.25 */
    ag_money_percent(&USD(-5), 1000, &r);
    cr_assert_eq(r.amount, -1); /* symmetric */
    cr_assert_str_eq(r.currency, "USD");
}

Test(money, json_round_trip_and_errors)
{
    struct ag_money m;
    struct ag_err err = {0};
    json_t *j = json_loads("{\"amount\": 1999, \"currency\": \"USD\"}", 0, NULL);
    cr_assert_eq(ag_money_from_json(j, &m, "/price", &err), 0);
    cr_assert_eq(m.amount, 1999);
    cr_assert_str_eq(m.currency, "USD");
    json_t *back = ag_money_to_json(&m);
    cr_assert(json_equal(j, back));
    json_decref(back);
    json_decref(j);

    j = json_loads("{\"amount\": \"12\", \"currency\": \"USD\"}", 0, NULL);
    cr_assert_eq(ag_money_from_json(j, &m, "/amount", &err), AG_EINVAL);
    cr_assert_str_eq(err.msg, "/amount/amount: must be an integer");
    json_decref(j);
    j = json_loads("{\"amount\": 12, \"currency\": \"usd\"}", 0, NULL);
    cr_assert_eq(ag_money_from_json(j, &m, "/price", &err), AG_EINVAL);
    cr_assert_str_eq(err.msg, "/price/currency: must be a 3-letter ISO 4217 code");
    json_decref(j);
    j = json_loads("{\"amount\": 12.5, \"currency\": \"USD\"}", 0, NULL);
    cr_assert_eq(ag_money_from_json(j, &m, "/price", &err), AG_EINVAL);
    json_decref(j);
    j = json_string("12");
    cr_assert_eq(ag_money_from_json(j, &m, "/price", &err), AG_EINVAL);
    cr_assert_str_eq(err.msg, "/price: must be an object");
    json_decref(j);
    cr_assert_eq(ag_money_from_json(NULL, &m, NULL, &err), AG_EINVAL);
    cr_assert_str_eq(err.msg, ": must be an object");
}

Test(money, currency_and_format)
{
    char b[48];
    cr_assert(ag_currency_valid("USD"));
    cr_assert_not(ag_currency_valid("US"));
    cr_assert_not(ag_currency_valid("USDX"));
    cr_assert_not(ag_currency_valid("Usd"));
    cr_assert_not(ag_currency_valid(NULL));
    cr_assert_str_eq(ag_money_format(&USD(1999), b), "19.99 USD");
    cr_assert_str_eq(ag_money_format(&USD(5), b), "0.05 USD");
    cr_assert_str_eq(ag_money_format(&USD(-150), b), "-1.50 USD");
    cr_assert_str_eq(ag_money_format(&((struct ag_money){500, "JPY"}), b), "500 JPY");
    cr_assert_str_eq(ag_money_format(&((struct ag_money){1250, "KWD"}), b), "1.250 KWD");
    cr_assert_str_eq(ag_money_format(&USD(INT64_MIN), b), "-92233720368547758.08 USD");
    struct ag_money z = ag_money_zero("EUR");
    cr_assert_eq(z.amount, 0);
    cr_assert_str_eq(z.currency, "EUR");
}

Test(address, parse_and_errors)
{
    struct ag_address a;
    struct ag_err err = {0};
    json_t *j = json_loads("{\"street\":\"1 Main St\",\"city\":\"Springfield\",\"state\":\"IL\","
                           "\"zipCode\":\"62701\",\"country\":\"US\"}",
                           0, NULL);
    cr_assert_eq(ag_address_from_json(j, &a, "/shippingAddress", &err), 0);
    cr_assert(ag_address_eq(&a, &ADDR));
    json_t *back = ag_address_to_json(&a);
    cr_assert(json_equal(j, back));
    json_decref(back);

    json_object_set_new(j, "zipCode", json_string(""));
    cr_assert_eq(ag_address_from_json(j, &a, "/shippingAddress", &err), AG_EINVAL);
    cr_assert_str_eq(err.msg,
                     "/shippingAddress/zipCode: must be a non-empty string of at most 15 bytes");
    json_object_set_new(j, "zipCode", json_string("12345678901234567"));
    cr_assert_eq(ag_address_from_json(j, &a, "/shippingAddress", &err), AG_EINVAL);
    cr_assert(strstr(err.msg, "/shippingAddress/zipCode"));
    json_object_set_new(j, "zipCode", json_string("62701"));
    json_object_del(j, "street");
    cr_assert_eq(ag_address_from_json(j, &a, "/shippingAddress", &err), AG_EINVAL);
    cr_assert(strstr(err.msg, "/shippingAddress/street: "));
    json_object_set_new(j, "street", json_integer(5));
    cr_assert_eq(ag_address_from_json(j, &a, "/a", &err), AG_EINVAL);
    cr_assert(strstr(err.msg, "/a/street: "));
    json_object_set_new(j, "street", json_string("x"));
    json_object_set_new(j, "country", json_string("usa"));
    cr_assert_eq(ag_address_from_json(j, &a, "/a", &err), AG_EINVAL);
    cr_assert(strstr(err.msg, "/a/country: "), "%s", err.msg);
    json_object_set_new(j, "country", json_string("us"));
    cr_assert_eq(ag_address_from_json(j, &a, "/a", &err), AG_EINVAL);
    cr_assert(strstr(err.msg, "/a/country: must be an ISO 3166-1 alpha-2 code"), "%s", err.msg);
    json_decref(j);
}

Test(events, push_grow_free)
{
    struct ag_dom_events e;
    ag_dom_events_init(&e);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(ag_dom_events_push(&e, "X", json_pack("{s:i}", "i", i)), 0);
    cr_assert_eq(e.n, 100);
    cr_assert_eq(jint(e.v[99].data, "i", NULL), 99);
    cr_assert_eq(ag_dom_events_push(&e, "X", NULL), AG_EINVAL);
    ag_dom_events_free(&e);
    cr_assert_eq(e.n, 0);
    cr_assert_null(e.v);
}

Test(events, push_failure_releases_data)
{
    struct ag_dom_events e;
    ag_dom_events_init(&e);
    json_t *data = json_object(); /* made first: jansson allocates through ag_malloc too */
    ag_alloc_fail_at(1);
    int rc = ag_dom_events_push(&e, "X", data); /* ASan would see a leak */
    ag_alloc_fail_at(0);
    cr_assert_eq(rc, AG_ENOMEM);
    cr_assert_eq(e.n, 0);
    ag_dom_events_free(&e);
}
