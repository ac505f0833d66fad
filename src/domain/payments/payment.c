/*
 * The Payment aggregate (payment-<orderId>): one order's charge, beside the
 * account it was taken from, so that no aggregate's state grows with the orders
 * it has seen.
 *
 * Events: ChargeCaptured {accountId, amount, currency} (amount in minor units);
 * ChargeRefunded {}. The order id is the stream's; the time is the store's.
 *
 * A charge or refund changes two aggregates at once: the account's balance
 * (AccountCharged / AccountRefunded {orderId, amount, at}, on account-<id>) and
 * this payment. ag_payment_charge and ag_payment_refund decide both from both
 * states; the caller appends the two lists in one multi-stream append with each
 * stream's exact expected version (ag_es_execute_multi), so after a crash either
 * both are recorded or neither, and two racing charges of one order cannot both
 * land (the second's expected version of payment-<orderId> is stale).
 *
 * Invariants: captured once (charging again, even after a refund, is a no-op);
 * refunded at most once and only to the account charged; the account's rules
 * (open, currency, no overdraft) are ag_account_charge's, checked by calling it.
 * Logs written before the payment streams keep their charges in the Account's
 * old charges map: a charge found there is not taken again, and a refund of an
 * order without a payment stream is the old model's refund.
 */
#include <string.h>

#include "domain/internal.h"

void ag_payment_init(void *state)
{
    memset(state, 0, sizeof(struct ag_payment));
}

void ag_payment_free(void *state)
{
    ag_payment_init(state);
}

static int on_captured(struct ag_payment *p, const json_t *d)
{
    char cur[4];
    if (ag__dom_get_str(d, "accountId", p->account_id, sizeof p->account_id) ||
        ag__dom_get_i64(d, "amount", &p->amount.amount) || p->amount.amount <= 0 ||
        ag__dom_get_str(d, "currency", cur, sizeof cur) || !ag_currency_valid(cur))
        return AG_EINVAL;
    memcpy(p->amount.currency, cur, sizeof cur);
    p->exists = true;
    return 0;
}

int ag_payment_evolve(void *state, const char *type, const json_t *data)
{
    struct ag_payment *p = state;
    if (strcmp(type, AG_EV_CHARGE_CAPTURED) == 0) return on_captured(p, data);
    if (strcmp(type, AG_EV_CHARGE_REFUNDED) == 0) p->refunded = true;
    return 0;
}

json_t *ag_payment_snapshot(const void *state)
{
    const struct ag_payment *p = state;
    if (!p->exists) return json_pack("{s:b}", "exists", 0);
    return json_pack("{s:b,s:s,s:I,s:s,s:b}", "exists", 1, "accountId", p->account_id, "amount",
                     (json_int_t)p->amount.amount, "currency", p->amount.currency, "refunded",
                     p->refunded);
}

int ag_payment_restore(void *state, const json_t *snap)
{
    struct ag_payment *p = state;
    bool exists;
    ag_payment_init(p);
    if (ag__dom_get_bool(snap, "exists", &exists)) return AG_EINVAL;
    if (!exists) return 0;
    if (on_captured(p, snap) || ag__dom_get_bool(snap, "refunded", &p->refunded)) {
        ag_payment_init(p);
        return AG_EINVAL;
    }
    return 0;
}

int ag_payment_charge(const struct ag_account *acct, const struct ag_payment *pay,
                      const struct ag_payment_charge *cmd, struct ag_dom_events *out_account,
                      struct ag_dom_events *out_payment, struct ag_err *err)
{
    if (pay->exists) return 0; /* one charge per order, even after its refund */
    /* the account's rules, its messages and its old charges map, in one place */
    struct ag_dom_events probe;
    ag_dom_events_init(&probe);
    struct ag_account_charge c = {cmd->order_id, cmd->amount, cmd->now_ms};
    int rc = ag_account_charge(acct, &c, &probe, err);
    size_t n = probe.n;
    ag_dom_events_free(&probe);
    if (rc || n == 0) return rc;
    json_t *a = json_pack("{s:s,s:I,s:I}", "orderId", cmd->order_id, "amount",
                          (json_int_t)cmd->amount.amount, "at", (json_int_t)cmd->now_ms);
    json_t *p = json_pack("{s:s,s:I,s:s}", "accountId", acct->id, "amount",
                          (json_int_t)cmd->amount.amount, "currency", acct->balance.currency);
    if ((rc = ag__dom_emit(out_account, AG_EV_ACCOUNT_CHARGED, a, err))) {
        json_decref(p);
        return rc;
    }
    return ag__dom_emit(out_payment, AG_EV_CHARGE_CAPTURED, p, err);
}

int ag_payment_refund(const struct ag_account *acct, const struct ag_payment *pay,
                      const struct ag_payment_refund *cmd, struct ag_dom_events *out_account,
                      struct ag_dom_events *out_payment, struct ag_err *err)
{
    if (!acct->exists) return ag_err_set(err, AG_EDOMAIN, "account does not exist");
    if (!pay->exists) { /* charged before the payment streams, or never charged */
        struct ag_account_refund r = {cmd->order_id, cmd->now_ms};
        return ag_account_refund(acct, &r, out_account, err);
    }
    if (pay->refunded) return 0;
    if (strcmp(pay->account_id, acct->id) != 0)
        return ag_err_set(err, AG_EDOMAIN,
                          "the payment of order %s was taken from account %s, not %s",
                          cmd->order_id, pay->account_id, acct->id);
    struct ag_money bal;
    if (ag_money_add(&acct->balance, &pay->amount, &bal, NULL))
        return ag_err_set(err, AG_EINVAL, "balance would overflow");
    json_t *a = json_pack("{s:s,s:I,s:I}", "orderId", cmd->order_id, "amount",
                          (json_int_t)pay->amount.amount, "at", (json_int_t)cmd->now_ms);
    int rc = ag__dom_emit(out_account, AG_EV_ACCOUNT_REFUNDED, a, err);
    return rc ? rc : ag__dom_emit(out_payment, AG_EV_CHARGE_REFUNDED, json_object(), err);
}

const struct ag_dom_aggregate ag_payment_aggregate = {
    "Payment",         sizeof(struct ag_payment), ag_payment_init,    ag_payment_free,
    ag_payment_evolve, ag_payment_snapshot,       ag_payment_restore,
};
