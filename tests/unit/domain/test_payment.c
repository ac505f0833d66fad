/* The per-order Payment beside the Account (issue 19): a charge and its refund
 * change both, each once; the account's state stays the same size whatever the
 * number of orders; logs from before the payment streams still replay and their
 * charges are still recognised. */
#include "unit/domain/dom_test.h"

static struct ag_account acct;
static struct ag_payment pay;
static struct ag_dom_events ea, ep;
static struct ag_err err;

static void setup(void)
{
    dt_begin(&ag_account_aggregate, &acct);
    ag_payment_init(&pay);
    ag_dom_events_init(&ea);
    ag_dom_events_init(&ep);
    cr_assert_eq(dt_ok(D(ag_account_open, {"a1", "c1", "USD", 1000})), 1);
    cr_assert_eq(dt_ok(D(ag_account_deposit, {USD(10000), 2000})), 1);
}

static void teardown(void)
{
    ag_dom_events_free(&ea);
    ag_dom_events_free(&ep);
    ag_payment_free(&pay);
    dt_end();
}

TestSuite(payment, .init = setup, .fini = teardown);

/* Evolve both states with what the latest decision emitted; returns the events. */
static size_t apply_both(int rc)
{
    cr_assert_eq(rc, 0, "decide failed: %s", err.msg);
    for (size_t i = 0; i < ea.n; i++)
        cr_assert_eq(ag_account_evolve(&acct, ea.v[i].type, ea.v[i].data), 0);
    for (size_t i = 0; i < ep.n; i++)
        cr_assert_eq(ag_payment_evolve(&pay, ep.v[i].type, ep.v[i].data), 0);
    return ea.n + ep.n;
}

static int charge(const char *order, int64_t amount, int64_t now)
{
    ag_dom_events_free(&ea);
    ag_dom_events_free(&ep);
    ag_err_clear(&err);
    struct ag_payment_charge c = {order, USD(amount), now};
    return ag_payment_charge(&acct, &pay, &c, &ea, &ep, &err);
}

static int refund(const char *order, int64_t now)
{
    ag_dom_events_free(&ea);
    ag_dom_events_free(&ep);
    ag_err_clear(&err);
    struct ag_payment_refund r = {order, now};
    return ag_payment_refund(&acct, &pay, &r, &ea, &ep, &err);
}

Test(payment, charge_changes_both_once)
{
    cr_assert_eq(apply_both(charge("o1", 2500, 3000)), 2);
    cr_assert_str_eq(ea.v[0].type, "AccountCharged");
    cr_assert_eq(jint(ea.v[0].data, "amount", NULL), 2500);
    cr_assert_str_eq(jstr(ea.v[0].data, "orderId"), "o1");
    cr_assert_eq(jint(ea.v[0].data, "at", NULL), 3000);
    cr_assert_null(json_object_get(ea.v[0].data, "balance"), "no balance: evolve recomputes it");
    cr_assert_str_eq(ep.v[0].type, "ChargeCaptured");
    cr_assert_str_eq(jstr(ep.v[0].data, "accountId"), "a1");
    cr_assert_eq(acct.balance.amount, 7500);
    cr_assert_eq(acct.tx_count, 2);
    cr_assert_eq(acct.last_activity_ms, 3000);
    cr_assert(pay.exists && !pay.refunded);
    cr_assert_eq(pay.amount.amount, 2500);
    /* twice: no events, whatever the amount */
    cr_assert_eq(apply_both(charge("o1", 2500, 4000)), 0);
    cr_assert_eq(apply_both(charge("o1", 100, 4000)), 0);
    cr_assert_eq(acct.balance.amount, 7500);
}

Test(payment, refund_once_and_never_charge_again)
{
    apply_both(charge("o1", 2500, 3000));
    cr_assert_eq(apply_both(refund("o1", 4000)), 2);
    cr_assert_str_eq(ea.v[0].type, "AccountRefunded");
    cr_assert_eq(jint(ea.v[0].data, "amount", NULL), 2500);
    cr_assert_str_eq(ep.v[0].type, "ChargeRefunded");
    cr_assert_eq(acct.balance.amount, 10000);
    cr_assert(pay.refunded);
    cr_assert_eq(apply_both(refund("o1", 5000)), 0, "refund twice: no events");
    cr_assert_eq(apply_both(charge("o1", 2500, 6000)), 0, "a late charge after the refund");
    cr_assert_eq(acct.balance.amount, 10000);
    cr_assert_eq(acct.tx_count, 3);
}

Test(payment, refund_without_charge_is_a_no_op)
{
    cr_assert_eq(apply_both(refund("o9", 4000)), 0);
    cr_assert_eq(acct.balance.amount, 10000);
}

Test(payment, account_rules_apply)
{
    int rc = charge("o1", 20000, 3000);
    cr_assert_eq(rc, AG_EDOMAIN);
    cr_assert(strstr(err.msg, "insufficient funds: balance 100.00 USD, requested 200.00 USD"), "%s",
              err.msg);
    cr_assert_eq(ea.n + ep.n, 0);
    ag_dom_events_free(&ea);
    struct ag_payment_charge c = {"o1", EUR(100), 1};
    cr_assert_eq(ag_payment_charge(&acct, &pay, &c, &ea, &ep, &err), AG_EDOMAIN);
    cr_assert_eq(charge("", 100, 1), AG_EINVAL);
    cr_assert_eq(charge("o1", 0, 1), AG_EINVAL);
    cr_assert_eq(ea.n + ep.n, 0);
}

Test(payment, refund_goes_to_the_account_charged)
{
    apply_both(charge("o1", 2500, 3000));
    struct ag_account other;
    ag_account_init(&other);
    other.exists = true;
    strcpy(other.id, "a2");
    other.balance = USD(0);
    ag_dom_events_free(&ea);
    ag_dom_events_free(&ep);
    struct ag_payment_refund r = {"o1", 1};
    cr_assert_eq(ag_payment_refund(&other, &pay, &r, &ea, &ep, &err), AG_EDOMAIN);
    cr_assert(strstr(err.msg, "taken from account a1, not a2"), "%s", err.msg);
    cr_assert_eq(ea.n + ep.n, 0);
    ag_account_free(&other);
}

Test(payment, account_state_does_not_grow_with_orders)
{
    json_t *s0 = ag_account_snapshot(&acct);
    for (int i = 0; i < 1000; i++) {
        char oid[16];
        snprintf(oid, sizeof oid, "o%d", i);
        ag_payment_free(&pay); /* each order has its own payment */
        apply_both(charge(oid, 1, 3000 + i));
        if (i % 2) apply_both(refund(oid, 3000 + i));
    }
    cr_assert_eq(acct.charges.n, 0, "the account keeps no charge");
    cr_assert_eq(acct.balance.amount, 10000 - 500);
    cr_assert_eq(acct.tx_count, 1 + 1500);
    json_t *s1 = ag_account_snapshot(&acct);
    char *t0 = json_dumps(s0, JSON_COMPACT), *t1 = json_dumps(s1, JSON_COMPACT);
    cr_assert_lt(strlen(t1), strlen(t0) + 8, "snapshot %s grew from %s", t1, t0);
    free(t0), free(t1);
    json_decref(s0), json_decref(s1);
}

/* A log written before the payment streams: PaymentCaptured/PaymentRefunded with
 * the balance. It replays to the same balance, and the decisions still know its
 * charges: no second charge, and a refund without a payment stream is the old
 * model's. */
Test(payment, old_log_replays_and_is_respected)
{
    cr_assert_eq(dt_apply("PaymentCaptured", "{\"orderId\":\"old1\",\"amount\":{\"amount\":300,"
                                             "\"currency\":\"USD\"},\"balance\":{\"amount\":9700,"
                                             "\"currency\":\"USD\"},\"at\":5}"),
                 0);
    cr_assert_eq(dt_apply("PaymentCaptured", "{\"orderId\":\"old2\",\"amount\":{\"amount\":200,"
                                             "\"currency\":\"USD\"},\"balance\":{\"amount\":9500,"
                                             "\"currency\":\"USD\"},\"at\":6}"),
                 0);
    cr_assert_eq(dt_apply("PaymentRefunded", "{\"orderId\":\"old2\",\"amount\":{\"amount\":200,"
                                             "\"currency\":\"USD\"},\"balance\":{\"amount\":9700,"
                                             "\"currency\":\"USD\"},\"at\":7}"),
                 0);
    cr_assert_eq(acct.balance.amount, 9700);
    cr_assert_eq(apply_both(charge("old1", 300, 8)), 0, "charged before: not again");
    cr_assert_eq(apply_both(charge("old2", 200, 8)), 0, "charged and refunded before");
    cr_assert_eq(apply_both(refund("old2", 9)), 0, "refunded before: not again");
    cr_assert_eq(apply_both(refund("old1", 9)), 1, "the old model's refund");
    cr_assert_str_eq(ea.v[0].type, "PaymentRefunded");
    cr_assert_eq(acct.balance.amount, 10000);
    cr_assert_eq(apply_both(refund("old1", 10)), 0);
    struct ag_account copy;
    dt_roundtrip(&copy);
    cr_assert_eq(copy.balance.amount, 10000);
    cr_assert_eq(ag_account_charged(&copy, "old1", NULL), 300);
    ag_account_free(&copy);
}

Test(payment, snapshot_roundtrip_and_bad_events)
{
    apply_both(charge("o1", 2500, 3000));
    apply_both(refund("o1", 4000));
    json_t *s = ag_payment_snapshot(&pay);
    struct ag_payment copy;
    cr_assert_eq(ag_payment_restore(&copy, s), 0);
    cr_assert(copy.exists && copy.refunded);
    cr_assert_str_eq(copy.account_id, "a1");
    cr_assert(ag_money_eq(&copy.amount, &USD(2500)));
    json_decref(s);
    json_t *bad = json_pack("{s:s,s:I}", "accountId", "a1", "amount", (json_int_t)-1);
    cr_assert_eq(ag_payment_evolve(&copy, "ChargeCaptured", bad), AG_EINVAL);
    json_decref(bad);
    bad = json_pack("{s:s,s:I}", "orderId", "o1", "amount", (json_int_t)0);
    cr_assert_eq(ag_account_evolve(&acct, "AccountCharged", bad), AG_EINVAL, "needs at and amount");
    json_decref(bad);
}
