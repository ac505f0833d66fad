/* Promotion: creation rules with their messages, the window, the usage limit, the
 * currency of a fixed amount, idempotent redemption per order, snapshots. */
#include "unit/domain/dom_test.h"

static struct ag_promo_code pr;

static void setup(void)
{
    dt_begin(&ag_promo_aggregate, &pr);
}

TestSuite(promotion, .init = setup, .fini = dt_end);

Test(promotion, create_and_rules)
{
    dt_fail(D(ag_promo_create, {"bad code", AG_PROMO_PERCENT, 1000, NULL, 0, 0, 0, true}),
            AG_EINVAL, "code: 1 to 31 characters");
    dt_fail(D(ag_promo_create, {"P", AG_PROMO_PERCENT, 10001, NULL, 0, 0, 0, true}), AG_EINVAL,
            "value: a percentage is 1 to 10000");
    dt_fail(D(ag_promo_create, {"P", AG_PROMO_FIXED, 500, "usd", 0, 0, 0, true}), AG_EINVAL,
            "currency: a fixed amount needs");
    dt_fail(D(ag_promo_create, {"P", AG_PROMO_PERCENT, 500, "USD", 0, 0, 0, true}), AG_EINVAL,
            "currency: only a fixed amount");
    dt_fail(D(ag_promo_create, {"P", AG_PROMO_PERCENT, 500, NULL, 10, 10, 0, true}), AG_EINVAL,
            "validUntil: must be after validFrom");
    cr_assert_eq(
        dt_ok(D(ag_promo_create, {"SAVE10", AG_PROMO_PERCENT, 1000, NULL, 100, 200, 2, false})), 1);
    json_t *d = dt_ev(0, "PromotionCreated");
    cr_assert_str_eq(jstr(d, "code"), "SAVE10");
    cr_assert_str_eq(jstr(d, "kind"), "percent");
    cr_assert_eq(jint(d, "usageLimit", NULL), 2);
    cr_assert_eq(pr.promo.value, 1000);
    cr_assert_not(pr.stackable);
    dt_fail(D(ag_promo_create, {"SAVE10", AG_PROMO_PERCENT, 1000, NULL, 0, 0, 0, true}), AG_EEXISTS,
            "promotion code SAVE10 already exists");
}

Test(promotion, window_limit_and_idempotent_redeem)
{
    dt_fail(D(ag_promo_redeem, {"o1", "USD", 150}), AG_ENOTFOUND, "unknown promotion code");
    dt_ok(D(ag_promo_create, {"SAVE10", AG_PROMO_PERCENT, 1000, NULL, 100, 200, 2, true}));
    dt_fail(D(ag_promo_redeem, {"o1", "USD", 99}), AG_EDOMAIN, "SAVE10 is not valid yet");
    dt_fail(D(ag_promo_redeem, {"o1", "USD", 200}), AG_EDOMAIN, "SAVE10 expired");
    cr_assert_eq(dt_ok(D(ag_promo_redeem, {"o1", "USD", 150})), 1);
    cr_assert_str_eq(jstr(dt_ev(0, "PromotionRedeemed"), "orderId"), "o1");
    cr_assert_eq(dt_ok(D(ag_promo_redeem, {"o1", "USD", 151})), 0,
                 "a retried order: no second use");
    cr_assert_eq(dt_ok(D(ag_promo_redeem, {"o2", "USD", 152})), 1);
    cr_assert_eq(pr.used, 2);
    dt_fail(D(ag_promo_redeem, {"o3", "USD", 153}), AG_EDOMAIN, "SAVE10 is exhausted (2 uses)");
    struct ag_promo_code copy;
    dt_roundtrip(&copy);
    cr_assert_eq(copy.used, 2);
    cr_assert_eq(copy.nrecent, 2);
}

Test(promotion, fixed_amount_currency)
{
    dt_ok(D(ag_promo_create, {"FIVE", AG_PROMO_FIXED, 500, "EUR", 0, 0, 0, true}));
    struct ag_err err = {0};
    cr_assert_eq(ag_promo_usable(&pr, "FIVE", "USD", 1, &err), AG_EDOMAIN);
    cr_assert(strstr(err.msg, "FIVE is in EUR, the order in USD"), "%s", err.msg);
    cr_assert_eq(ag_promo_usable(&pr, "FIVE", "EUR", 1, &err), 0);
    for (int i = 0; i < 12; i++) { /* the ring keeps the last 8 orders */
        char id[16];
        snprintf(id, sizeof id, "o%d", i);
        cr_assert_eq(dt_ok(D(ag_promo_redeem, {id, "EUR", 1})), 1);
    }
    cr_assert_eq(dt_ok(D(ag_promo_redeem, {"o11", "EUR", 1})), 0);
    cr_assert_eq(dt_ok(D(ag_promo_redeem, {"o0", "EUR", 1})), 1, "o0 fell out of the ring");
    struct ag_promo_code copy;
    dt_roundtrip(&copy);
    cr_assert_eq(copy.used, 13);
    cr_assert_str_eq(copy.currency, "EUR");
}
