/*
 * PricingService: what an order costs a given customer.
 *
 * Stacking rule (also in domain.h and docs/domain.md):
 *   subtotal = Σ quantity × unit price, all lines in one currency;
 *   percent  = premium 10% + Σ percentage promotions, capped at 50%,
 *              applied once to the subtotal, rounded half-up on minor units;
 *   fixed    = Σ fixed-amount promotions, subtracted after the percentages;
 *   discount = min(subtotal, percent + fixed); total = subtotal - discount ≥ 0.
 * Percentages add rather than compound so the result does not depend on the order
 * promotions are listed in, and the cap keeps stacked codes from giving goods away.
 *
 * Also here, being a service over two aggregates: transfers between accounts, which
 * decide a MoneyWithdrawn for one account and a MoneyDeposited for the other, all or
 * nothing. (Making the two appends atomic is the caller's job: a saga or a
 * transaction in the store.)
 */
#include <string.h>

#include "domain/internal.h"

static int subtotal_of(const struct ag_price_line *lines, size_t n, struct ag_money *sub,
                       struct ag_err *err)
{
    int rc;
    if (n == 0) return ag_err_set(err, AG_EDOMAIN, "cannot price an empty order");
    if (!ag_currency_valid(lines[0].unit_price.currency))
        return ag_err_set(err, AG_EINVAL, "line 0: currency must be a 3-letter ISO 4217 code");
    *sub = ag_money_zero(lines[0].unit_price.currency);
    for (size_t i = 0; i < n; i++) {
        struct ag_money line;
        if (lines[i].quantity <= 0)
            return ag_err_set(err, AG_EINVAL, "line %zu (product %s): quantity must be positive", i,
                              lines[i].product_id);
        if (lines[i].unit_price.amount < 0)
            return ag_err_set(err, AG_EINVAL,
                              "line %zu (product %s): unit price must not be negative", i,
                              lines[i].product_id);
        if (strcmp(lines[i].unit_price.currency, sub->currency) != 0)
            return ag_err_set(err, AG_EDOMAIN, "mixed currencies: line %zu is in %s, line 0 in %s",
                              i, lines[i].unit_price.currency, sub->currency);
        if ((rc = ag_money_mul(&lines[i].unit_price, lines[i].quantity, &line, err)) ||
            (rc = ag_money_add(sub, &line, sub, err)))
            return rc;
    }
    return 0;
}

/* Sum of percentage (capped) and fixed promotions. */
static int promo_sums(bool premium, const struct ag_promotion *promos, size_t npromos, int64_t *bp,
                      int64_t *fixed, struct ag_err *err)
{
    *bp = premium ? AG_PRICING_PREMIUM_BP : 0;
    *fixed = 0;
    for (size_t i = 0; i < npromos; i++) {
        const struct ag_promotion *p = &promos[i];
        if (p->kind == AG_PROMO_PERCENT && p->value >= 0 && p->value <= 10000)
            *bp += p->value;
        else if (p->kind == AG_PROMO_FIXED && p->value >= 0) {
            if (__builtin_add_overflow(*fixed, p->value, fixed))
                return ag_err_set(err, AG_EINVAL, "fixed promotions overflow");
        } else
            return ag_err_set(err, AG_EINVAL, "promotion %.31s: value %lld out of range", p->code,
                              (long long)p->value);
    }
    *bp = AG_MIN(*bp, AG_PRICING_MAX_PERCENT_BP);
    return 0;
}

int ag_pricing_quote(const struct ag_price_line *lines, size_t n, bool premium,
                     const struct ag_promotion *promos, size_t npromos, struct ag_price_quote *out,
                     struct ag_err *err)
{
    struct ag_money sub, pct;
    int64_t bp, fixed, discount;
    int rc;
    if ((rc = subtotal_of(lines, n, &sub, err)) ||
        (rc = promo_sums(premium, promos, npromos, &bp, &fixed, err)))
        return rc;
    if (ag_money_percent(&sub, bp, &pct)) return ag_err_set(err, AG_EINVAL, "discount overflow");
    if (__builtin_add_overflow(pct.amount, fixed, &discount) || discount > sub.amount)
        discount = sub.amount;
    out->subtotal = sub;
    out->discount = sub;
    out->discount.amount = discount;
    out->total = sub;
    out->total.amount = sub.amount - discount;
    return 0;
}

/* ---- transfers between accounts ---- */

static int transfer_check(const struct ag_account *from, const struct ag_account *to,
                          const struct ag_money *amount, struct ag_err *err)
{
    char b[48], r[48];
    struct ag_money sum;
    if (!from->exists || !to->exists)
        return ag_err_set(err, AG_EDOMAIN, "both accounts of a transfer must exist");
    if (from == to || strcmp(from->id, to->id) == 0)
        return ag_err_set(err, AG_EDOMAIN, "cannot transfer from account %s to itself", from->id);
    if (from->closed || to->closed)
        return ag_err_set(err, AG_EDOMAIN, "account %s is closed",
                          from->closed ? from->id : to->id);
    if (strcmp(amount->currency, from->balance.currency) ||
        strcmp(amount->currency, to->balance.currency))
        return ag_err_set(err, AG_EDOMAIN,
                          "transfer currency %.3s must match both accounts (%s, %s)",
                          amount->currency, from->balance.currency, to->balance.currency);
    if (amount->amount <= 0)
        return ag_err_set(err, AG_EINVAL, "amount must be positive (got %lld)",
                          (long long)amount->amount);
    if (from->balance.amount < amount->amount)
        return ag_err_set(err, AG_EDOMAIN, "insufficient funds: balance %s, requested %s",
                          ag_money_format(&from->balance, b), ag_money_format(amount, r));
    if (ag_money_add(&to->balance, amount, &sum, NULL))
        return ag_err_set(err, AG_EINVAL, "balance of account %s would overflow", to->id);
    return 0;
}

/* {amount, balance, at, <peer_key>: peer} with balance = bal. */
static json_t *leg(const struct ag_money *amount, const struct ag_money *bal, int64_t now_ms,
                   const char *peer_key, const char *peer)
{
    return json_pack("{s:o,s:o,s:I,s:s}", "amount", ag_money_to_json(amount), "balance",
                     ag_money_to_json(bal), "at", (json_int_t)now_ms, peer_key, peer);
}

int ag_account_transfer(const struct ag_account *from, const struct ag_account *to,
                        const struct ag_money *amount, int64_t now_ms,
                        struct ag_dom_events *out_from, struct ag_dom_events *out_to,
                        struct ag_err *err)
{
    struct ag_money fbal, tbal;
    int rc = transfer_check(from, to, amount, err);
    if (rc) return rc;
    ag_money_sub(&from->balance, amount, &fbal, NULL);
    ag_money_add(&to->balance, amount, &tbal, NULL);
    json_t *w = leg(amount, &fbal, now_ms, "toAccountId", to->id);
    json_t *d = leg(amount, &tbal, now_ms, "fromAccountId", from->id);
    if (!w || !d) {
        json_decref(w);
        json_decref(d);
        return ag_err_set(err, AG_ENOMEM, "out of memory building a transfer");
    }
    if ((rc = ag__dom_emit(out_from, AG_EV_MONEY_WITHDRAWN, w, err))) {
        json_decref(d);
        return rc;
    }
    if ((rc = ag__dom_emit(out_to, AG_EV_MONEY_DEPOSITED, d, err))) {
        out_from->n--; /* undo: all or nothing */
        json_decref(out_from->v[out_from->n].data);
        return rc;
    }
    return 0;
}
