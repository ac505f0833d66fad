/*
 * The Account aggregate (payments): a customer's wallet.
 *
 * Events (every one carries `at`, the Unix ms time of the command, which evolve
 * copies to last_activity_ms):
 *   AccountOpened {accountId, customerId, currency, at}
 *   MoneyDeposited {amount, balance, at, fromAccountId?}
 *   MoneyWithdrawn {amount, balance, at, toAccountId?}
 *   PaymentCaptured {orderId, amount, balance, at}
 *   PaymentRefunded {orderId, amount, balance, at}
 *   AccountClosed {at}
 *   AccountCharged {orderId, amount, at} / AccountRefunded {orderId, amount, at}:
 *     a charge or refund whose record per order is the Payment aggregate
 *     (payment-<orderId>, payment.c); amount in minor units of the account's
 *     currency. These add nothing to the state but the balance.
 * `balance` is the balance after the event, for read models; evolve recomputes it
 * from `amount` and never trusts it.
 *
 * Invariants: balance ≥ 0 (no overdraft); one currency; a charge per order is
 * captured once and refunded at most once. The state stays the same size
 * whatever the number of orders: charges are recorded per order in the payment
 * streams. Only PaymentCaptured/PaymentRefunded (logs written before them) fill
 * the `charges` map, kept after refunding so a late duplicate charge of such an
 * order is still recognised; no deposits, withdrawals or charges
 * once closed; closing needs a zero balance. A refund is allowed on a closed
 * account: a compensation must always be able to return money.
 * tx_count counts deposits, withdrawals, captures and refunds.
 */
#include <string.h>

#include "domain/internal.h"

void ag_account_init(void *state)
{
    struct ag_account *a = state;
    memset(a, 0, sizeof *a);
    ag__idmap_init(&a->charges);
}

void ag_account_free(void *state)
{
    struct ag_account *a = state;
    ag__idmap_free(&a->charges);
    ag_account_init(a);
}

size_t ag_account_bytes(const void *state)
{
    const struct ag_account *a = state;
    return ag_dom_idmap_bytes(&a->charges);
}

const char *ag_account_status_name(const struct ag_account *st)
{
    return st->closed ? "closed" : "open";
}

int64_t ag_account_charged(const struct ag_account *st, const char *order_id, bool *refunded)
{
    const struct ag_dom_idmap_slot *s = ag__idmap_get(&st->charges, order_id);
    if (refunded) *refunded = s && s->flag;
    return s ? s->value : 0;
}

/* ---- evolve ---- */

static int on_opened(struct ag_account *a, const json_t *d)
{
    char cur[4];
    if (ag__dom_get_str(d, "accountId", a->id, sizeof a->id) ||
        ag__dom_get_str(d, "customerId", a->customer_id, sizeof a->customer_id) ||
        ag__dom_get_str(d, "currency", cur, sizeof cur) || !ag_currency_valid(cur))
        return AG_EINVAL;
    a->balance = ag_money_zero(cur);
    a->exists = true;
    return 0;
}

/* Apply ±amount (sign -1 or +1) and count a transaction. */
static int apply_amount(struct ag_account *a, const json_t *d, int sign)
{
    struct ag_money m;
    if (ag__dom_get_money(d, "amount", &m) || m.amount <= 0) return AG_EINVAL;
    if ((sign > 0 ? ag_money_add : ag_money_sub)(&a->balance, &m, &a->balance, NULL))
        return AG_EINVAL;
    a->tx_count++;
    return 0;
}

static int on_charge(struct ag_account *a, const json_t *d, bool refund)
{
    char oid[AG_DOM_ID_MAX];
    struct ag_money m;
    int rc;
    if (ag__dom_get_str(d, "orderId", oid, sizeof oid) || ag__dom_get_money(d, "amount", &m))
        return AG_EINVAL;
    if ((rc = ag__idmap_put(&a->charges, oid, m.amount, refund))) return rc;
    return apply_amount(a, d, refund ? +1 : -1);
}

/* AccountCharged / AccountRefunded: an integer amount in the account's currency. */
static int on_move(struct ag_account *a, const json_t *d, int sign)
{
    char oid[AG_DOM_ID_MAX];
    struct ag_money m = a->balance;
    if (!a->exists || ag__dom_get_str(d, "orderId", oid, sizeof oid) ||
        ag__dom_get_i64(d, "amount", &m.amount) || m.amount <= 0)
        return AG_EINVAL;
    if ((sign > 0 ? ag_money_add : ag_money_sub)(&a->balance, &m, &a->balance, NULL))
        return AG_EINVAL;
    a->tx_count++;
    return 0;
}

static int dispatch(struct ag_account *a, const char *type, const json_t *d)
{
    if (strcmp(type, AG_EV_ACCOUNT_CHARGED) == 0) return on_move(a, d, -1);
    if (strcmp(type, AG_EV_ACCOUNT_REFUNDED) == 0) return on_move(a, d, +1);
    if (strcmp(type, AG_EV_ACCOUNT_OPENED) == 0) return on_opened(a, d);
    if (strcmp(type, AG_EV_MONEY_DEPOSITED) == 0) return apply_amount(a, d, +1);
    if (strcmp(type, AG_EV_MONEY_WITHDRAWN) == 0) return apply_amount(a, d, -1);
    if (strcmp(type, AG_EV_PAYMENT_CAPTURED) == 0) return on_charge(a, d, false);
    if (strcmp(type, AG_EV_PAYMENT_REFUNDED) == 0) return on_charge(a, d, true);
    if (strcmp(type, AG_EV_ACCOUNT_CLOSED) == 0) a->closed = true;
    return 0;
}

static bool known_type(const char *type)
{
    static const char *const types[] = {AG_EV_ACCOUNT_OPENED,   AG_EV_MONEY_DEPOSITED,
                                        AG_EV_MONEY_WITHDRAWN,  AG_EV_PAYMENT_CAPTURED,
                                        AG_EV_PAYMENT_REFUNDED, AG_EV_ACCOUNT_CLOSED,
                                        AG_EV_ACCOUNT_CHARGED,  AG_EV_ACCOUNT_REFUNDED};
    for (size_t i = 0; i < AG_ARRAY_SIZE(types); i++)
        if (strcmp(type, types[i]) == 0) return true;
    return false;
}

int ag_account_evolve(void *state, const char *type, const json_t *data)
{
    struct ag_account *a = state;
    int64_t at;
    if (!known_type(type)) return 0;
    if (ag__dom_get_i64(data, "at", &at)) return AG_EINVAL;
    int rc = dispatch(a, type, data);
    if (rc == 0) a->last_activity_ms = at;
    return rc;
}

/* ---- snapshot ---- */

static json_t *charges_json(const struct ag_dom_idmap *m)
{
    json_t *o = json_object();
    for (size_t i = 0; o && i < m->cap; i++) {
        const struct ag_dom_idmap_slot *s = &m->slots[i];
        if (s->key[0] && json_object_set_new(o, s->key,
                                             json_pack("{s:I,s:b}", "amount", (json_int_t)s->value,
                                                       "refunded", s->flag))) {
            json_decref(o);
            o = NULL;
        }
    }
    return o;
}

json_t *ag_account_snapshot(const void *state)
{
    const struct ag_account *a = state;
    if (!a->exists) return json_pack("{s:b}", "exists", 0);
    return json_pack("{s:b,s:s,s:s,s:s,s:o,s:b,s:I,s:I,s:o}", "exists", 1, "accountId", a->id,
                     "customerId", a->customer_id, "currency", a->balance.currency, "balance",
                     ag_money_to_json(&a->balance), "closed", a->closed, "txCount",
                     (json_int_t)a->tx_count, "lastActivity", (json_int_t)a->last_activity_ms,
                     "charges", charges_json(&a->charges));
}

static int restore_body(struct ag_account *a, const json_t *snap)
{
    json_t *charges = json_object_get(snap, "charges"), *v;
    const char *oid;
    int rc;
    if (on_opened(a, snap) || ag__dom_get_money(snap, "balance", &a->balance) ||
        ag__dom_get_bool(snap, "closed", &a->closed) ||
        ag__dom_get_i64(snap, "txCount", &a->tx_count) ||
        ag__dom_get_i64(snap, "lastActivity", &a->last_activity_ms) || !json_is_object(charges))
        return AG_EINVAL;
    json_object_foreach(charges, oid, v)
    {
        int64_t amount;
        bool refunded;
        if (ag__dom_get_i64(v, "amount", &amount) || ag__dom_get_bool(v, "refunded", &refunded))
            return AG_EINVAL;
        if ((rc = ag__idmap_put(&a->charges, oid, amount, refunded))) return rc;
    }
    return 0;
}

int ag_account_restore(void *state, const json_t *snap)
{
    struct ag_account *a = state;
    bool exists;
    ag_account_free(a);
    if (ag__dom_get_bool(snap, "exists", &exists)) return AG_EINVAL;
    if (!exists) return 0;
    int rc = restore_body(a, snap);
    if (rc) ag_account_free(a);
    return rc;
}

/* ---- decide ---- */

int ag_account_open(const struct ag_account *st, const struct ag_account_open *cmd,
                    struct ag_dom_events *out, struct ag_err *err)
{
    char id[AG_DOM_ID_MAX], cid[AG_DOM_ID_MAX];
    int rc;
    if (st->exists) return ag_err_set(err, AG_EDOMAIN, "account %s already exists", st->id);
    if ((rc = ag__dom_need(id, sizeof id, cmd->id, "account id", err)) ||
        (rc = ag__dom_need(cid, sizeof cid, cmd->customer_id, "customer id", err)))
        return rc;
    if (!ag_currency_valid(cmd->currency))
        return ag_err_set(err, AG_EINVAL, "currency must be a 3-letter ISO 4217 code");
    json_t *d = json_pack("{s:s,s:s,s:s,s:I}", "accountId", id, "customerId", cid, "currency",
                          cmd->currency, "at", (json_int_t)cmd->now_ms);
    return ag__dom_emit(out, AG_EV_ACCOUNT_OPENED, d, err);
}

static int need_account(const struct ag_account *st, struct ag_err *err)
{
    if (!st->exists) return ag_err_set(err, AG_EDOMAIN, "account does not exist");
    return 0;
}

/* The account is open and `m` is a positive amount in its currency. */
static int check_movement(const struct ag_account *st, const struct ag_money *m, struct ag_err *err)
{
    int rc = need_account(st, err);
    if (rc) return rc;
    if (st->closed) return ag_err_set(err, AG_EDOMAIN, "account %s is closed", st->id);
    if (!ag_currency_valid(m->currency))
        return ag_err_set(err, AG_EINVAL, "amount currency must be a 3-letter ISO 4217 code");
    if (strcmp(m->currency, st->balance.currency) != 0)
        return ag_err_set(err, AG_EDOMAIN, "account %s is in %s, not %s", st->id,
                          st->balance.currency, m->currency);
    if (m->amount <= 0)
        return ag_err_set(err, AG_EINVAL, "amount must be positive (got %lld)",
                          (long long)m->amount);
    return 0;
}

static int check_funds(const struct ag_account *st, const struct ag_money *m, struct ag_err *err)
{
    char b[48], r[48];
    if (st->balance.amount >= m->amount) return 0;
    ag_money_format(&st->balance, b);
    ag_money_format(m, r);
    return ag_err_set(err, AG_EDOMAIN, "insufficient funds: balance %s, requested %s", b, r);
}

/* {amount, balance, at} after applying ±amount; NULL on overflow or no memory. */
static json_t *movement(const struct ag_account *st, const struct ag_money *m, int sign,
                        int64_t now_ms)
{
    struct ag_money bal;
    if ((sign > 0 ? ag_money_add : ag_money_sub)(&st->balance, m, &bal, NULL)) return NULL;
    return json_pack("{s:o,s:o,s:I}", "amount", ag_money_to_json(m), "balance",
                     ag_money_to_json(&bal), "at", (json_int_t)now_ms);
}

int ag_account_deposit(const struct ag_account *st, const struct ag_account_deposit *cmd,
                       struct ag_dom_events *out, struct ag_err *err)
{
    struct ag_money bal;
    int rc;
    if ((rc = check_movement(st, &cmd->amount, err))) return rc;
    if (ag_money_add(&st->balance, &cmd->amount, &bal, NULL))
        return ag_err_set(err, AG_EINVAL, "balance would overflow");
    return ag__dom_emit(out, AG_EV_MONEY_DEPOSITED, movement(st, &cmd->amount, +1, cmd->now_ms),
                        err);
}

int ag_account_withdraw(const struct ag_account *st, const struct ag_account_withdraw *cmd,
                        struct ag_dom_events *out, struct ag_err *err)
{
    int rc;
    if ((rc = check_movement(st, &cmd->amount, err)) || (rc = check_funds(st, &cmd->amount, err)))
        return rc;
    return ag__dom_emit(out, AG_EV_MONEY_WITHDRAWN, movement(st, &cmd->amount, -1, cmd->now_ms),
                        err);
}

int ag_account_charge(const struct ag_account *st, const struct ag_account_charge *cmd,
                      struct ag_dom_events *out, struct ag_err *err)
{
    char oid[AG_DOM_ID_MAX];
    int rc;
    if ((rc = need_account(st, err)) ||
        (rc = ag__dom_need(oid, sizeof oid, cmd->order_id, "order id", err)))
        return rc;
    if (ag__idmap_get(&st->charges, oid)) return 0;
    if ((rc = check_movement(st, &cmd->amount, err)) || (rc = check_funds(st, &cmd->amount, err)))
        return rc;
    json_t *d = movement(st, &cmd->amount, -1, cmd->now_ms);
    if (d && json_object_set_new(d, "orderId", json_string(oid))) {
        json_decref(d);
        d = NULL;
    }
    return ag__dom_emit(out, AG_EV_PAYMENT_CAPTURED, d, err);
}

int ag_account_refund(const struct ag_account *st, const struct ag_account_refund *cmd,
                      struct ag_dom_events *out, struct ag_err *err)
{
    int rc = need_account(st, err);
    const struct ag_dom_idmap_slot *c = ag__idmap_get(&st->charges, cmd->order_id);
    if (rc || !c || c->flag) return rc;
    struct ag_money m = {c->value, {0}};
    memcpy(m.currency, st->balance.currency, 4);
    json_t *d = movement(st, &m, +1, cmd->now_ms);
    if (!d) return ag_err_set(err, AG_EINVAL, "balance would overflow");
    if (json_object_set_new(d, "orderId", json_string(c->key))) {
        json_decref(d);
        d = NULL;
    }
    return ag__dom_emit(out, AG_EV_PAYMENT_REFUNDED, d, err);
}

int ag_account_close(const struct ag_account *st, const struct ag_account_close *cmd,
                     struct ag_dom_events *out, struct ag_err *err)
{
    char b[48];
    int rc = need_account(st, err);
    if (rc || st->closed) return rc;
    if (st->balance.amount > 0) {
        ag_money_format(&st->balance, b);
        return ag_err_set(err, AG_EDOMAIN, "cannot close account %s with a positive balance (%s)",
                          st->id, b);
    }
    json_t *d = json_pack("{s:I}", "at", (json_int_t)(cmd ? cmd->now_ms : 0));
    return ag__dom_emit(out, AG_EV_ACCOUNT_CLOSED, d, err);
}

const struct ag_dom_aggregate ag_account_aggregate = {
    "Account",         sizeof(struct ag_account), ag_account_init,    ag_account_free,
    ag_account_evolve, ag_account_snapshot,       ag_account_restore,
};
