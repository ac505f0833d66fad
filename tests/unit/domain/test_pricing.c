/* PricingService: subtotal, premium 10%, percentage and fixed promotions, the
 * stacking rule (percentages add, capped at 50%, then fixed amounts, floor at
 * zero), rounding half-up, currency mixing and bad input. */
#include "unit/domain/dom_test.h"

static struct ag_price_line L(const char *pid, int64_t q, struct ag_money unit) {
    struct ag_price_line l = {{0}, q, unit};
    strcpy(l.product_id, pid);
    return l;
}

static struct ag_price_quote
quote(const struct ag_price_line *lines, size_t n, bool premium, const struct ag_promotion *p,
      size_t np)
{
    struct ag_price_quote q;
    struct ag_err err = {0};
    cr_assert_eq(ag_pricing_quote(lines, n, premium, p, np, &q, &err), 0, "%s", err.msg);
    cr_assert_eq(q.subtotal.amount - q.discount.amount, q.total.amount);
    cr_assert_str_eq(q.total.currency, q.subtotal.currency);
    cr_assert_str_eq(q.discount.currency, q.subtotal.currency);
    return q;
}

Test(pricing, subtotal_no_discount)
{
    struct ag_price_line l[] = {L("a", 2, USD(1999)), L("b", 1, USD(500))};
    struct ag_price_quote q = quote(l, 2, false, NULL, 0);
    cr_assert_eq(q.subtotal.amount, 4498);
    cr_assert_eq(q.discount.amount, 0);
    cr_assert_eq(q.total.amount, 4498);
    cr_assert_str_eq(q.total.currency, "USD");
}

Test(pricing, premium_ten_percent_rounded_half_up)
{
    struct ag_price_line l[] = {L("a", 1, USD(1999))};
    struct ag_price_quote q = quote(l, 1, true, NULL, 0);
    cr_assert_eq(q.discount.amount, 200); /* 199.9 */
    cr_assert_eq(q.total.amount, 1799);
    struct ag_price_line l2[] = {L("a", 1, USD(1005))};
    q = quote(l2, 1, true, NULL, 0);
    cr_assert_eq(q.discount.amount, 101); /* 100.5 → 101 */
    cr_assert_eq(q.total.amount, 904);
}

Test(pricing, percentages_add_before_rounding)
{
    struct ag_price_line l[] = {L("a", 1, USD(1999))};
    struct ag_promotion p[] = {{AG_PROMO_PERCENT, 1500, "SPRING15"}};
    struct ag_price_quote q = quote(l, 1, true, p, 1);
    cr_assert_eq(q.discount.amount, 500); /* 25% of 1999 = 499.75 */
    cr_assert_eq(q.total.amount, 1499);
}

Test(pricing, percentages_capped_at_fifty)
{
    struct ag_price_line l[] = {L("a", 4, USD(2500))};
    struct ag_promotion p[] = {{AG_PROMO_PERCENT, 3000, "A"}, {AG_PROMO_PERCENT, 3000, "B"}};
    struct ag_price_quote q = quote(l, 1, true, p, 2); /* 10 + 30 + 30 = 70% → 50% */
    cr_assert_eq(q.subtotal.amount, 10000);
    cr_assert_eq(q.discount.amount, 5000);
    cr_assert_eq(q.total.amount, 5000);
}

Test(pricing, fixed_after_percent)
{
    struct ag_price_line l[] = {L("a", 1, USD(10000))};
    struct ag_promotion p[] = {{AG_PROMO_FIXED, 500, "FIVE"}, {AG_PROMO_PERCENT, 1000, "TEN"}};
    struct ag_price_quote q = quote(l, 1, false, p, 2);
    cr_assert_eq(q.discount.amount, 1500); /* 10% of 100.00 = 10.00, then 5.00 */
    cr_assert_eq(q.total.amount, 8500);
    q = quote(l, 1, true, p, 2); /* 20% = 20.00, then 5.00 */
    cr_assert_eq(q.total.amount, 7500);
}

Test(pricing, total_never_below_zero)
{
    struct ag_price_line l[] = {L("a", 1, USD(300))};
    struct ag_promotion p[] = {{AG_PROMO_FIXED, 250, "X"}, {AG_PROMO_FIXED, 250, "Y"}};
    struct ag_price_quote q = quote(l, 1, true, p, 2);
    cr_assert_eq(q.discount.amount, 300);
    cr_assert_eq(q.total.amount, 0);
    struct ag_promotion big[] = {{AG_PROMO_FIXED, INT64_MAX, "MAX"}};
    q = quote(l, 1, true, big, 1);
    cr_assert_eq(q.total.amount, 0);
}

Test(pricing, promotion_order_does_not_matter)
{
    struct ag_price_line l[] = {L("a", 3, USD(3333))};
    struct ag_promotion p1[] = {
        {AG_PROMO_PERCENT, 700, "A"}, {AG_PROMO_FIXED, 99, "B"}, {AG_PROMO_PERCENT, 1300, "C"}};
    struct ag_promotion p2[] = {p1[2], p1[1], p1[0]};
    struct ag_price_quote a = quote(l, 1, false, p1, 3), b = quote(l, 1, false, p2, 3);
    cr_assert_eq(a.total.amount, b.total.amount);
    cr_assert_eq(a.discount.amount, 2000 + 99); /* 20% of 9999 = 1999.8 → 2000 */
}

Test(pricing, errors)
{
    struct ag_price_quote q;
    struct ag_err err = {0};
    struct ag_price_line mixed[] = {L("a", 1, USD(100)), L("b", 1, EUR(100))};
    cr_assert_eq(ag_pricing_quote(mixed, 2, false, NULL, 0, &q, &err), AG_EDOMAIN);
    cr_assert_str_eq(err.msg, "mixed currencies: line 1 is in EUR, line 0 in USD");
    cr_assert_eq(ag_pricing_quote(NULL, 0, false, NULL, 0, &q, &err), AG_EDOMAIN);
    cr_assert_str_eq(err.msg, "cannot price an empty order");
    struct ag_price_line zero[] = {L("a", 0, USD(100))};
    cr_assert_eq(ag_pricing_quote(zero, 1, false, NULL, 0, &q, &err), AG_EINVAL);
    cr_assert(strstr(err.msg, "quantity must be positive"));
    struct ag_price_line neg[] = {L("a", 1, USD(-1))};
    cr_assert_eq(ag_pricing_quote(neg, 1, false, NULL, 0, &q, &err), AG_EINVAL);
    struct ag_price_line ok[] = {L("a", 1, USD(100))};
    struct ag_promotion bad[] = {{AG_PROMO_PERCENT, 10001, "TOO"}};
    cr_assert_eq(ag_pricing_quote(ok, 1, false, bad, 1, &q, &err), AG_EINVAL);
    cr_assert(strstr(err.msg, "promotion TOO"), "%s", err.msg);
    struct ag_price_line huge[] = {L("a", INT64_MAX, USD(2))};
    cr_assert_eq(ag_pricing_quote(huge, 1, false, NULL, 0, &q, &err), AG_EINVAL);
    cr_assert(strstr(err.msg, "overflow"));
}
