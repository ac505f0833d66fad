/* Account: open, deposit, withdraw, charge/refund once per order, close, the
 * overdraft message, `at` and tx_count, transfers, snapshots. */
#include "unit/domain/dom_test.h"

static struct ag_account a;

static void setup(void)
{
    dt_begin(&ag_account_aggregate, &a);
}

TestSuite(account, .init = setup, .fini = dt_end);

static void opened(int64_t deposit)
{
    cr_assert_eq(dt_ok(D(ag_account_open, {"a1", "c1", "USD", 1000})), 1);
    if (deposit) dt_ok(D(ag_account_deposit, {USD(deposit), 2000}));
}

Test(account, open)
{
    opened(0);
    json_t *d = dt_ev(0, "AccountOpened");
    cr_assert_str_eq(jstr(d, "accountId"), "a1");
    cr_assert_str_eq(jstr(d, "customerId"), "c1");
    cr_assert_str_eq(jstr(d, "currency"), "USD");
    cr_assert_eq(jint(d, "at", NULL), 1000);
    cr_assert(a.exists);
    cr_assert(ag_money_eq(&a.balance, &USD(0)));
    cr_assert_eq(a.last_activity_ms, 1000);
    cr_assert_eq(a.tx_count, 0);
    cr_assert_str_eq(ag_account_status_name(&a), "open");
    dt_fail(D(ag_account_open, {"a1", "c1", "USD", 1}), AG_EDOMAIN, "account a1 already exists");
}

Test(account, open_rules)
{
    dt_fail(D(ag_account_open, {"", "c1", "USD", 1}), AG_EINVAL, "account id");
    dt_fail(D(ag_account_open, {"a1", "", "USD", 1}), AG_EINVAL, "customer id");
    dt_fail(D(ag_account_open, {"a1", "c1", "US", 1}), AG_EINVAL, "currency");
    dt_fail(D(ag_account_deposit, {USD(1), 1}), AG_EDOMAIN, "account does not exist");
}

Test(account, deposit_and_withdraw)
{
    opened(5000);
    json_t *d = dt_ev(0, "MoneyDeposited");
    cr_assert_eq(jint(d, "amount", "amount"), 5000);
    cr_assert_eq(jint(d, "balance", "amount"), 5000);
    cr_assert_eq(jint(d, "at", NULL), 2000);
    cr_assert_eq(a.balance.amount, 5000);
    cr_assert_eq(a.tx_count, 1);
    cr_assert_eq(a.last_activity_ms, 2000);
    cr_assert_eq(dt_ok(D(ag_account_withdraw, {USD(1500), 3000})), 1);
    d = dt_ev(0, "MoneyWithdrawn");
    cr_assert_eq(jint(d, "amount", "amount"), 1500);
    cr_assert_eq(jint(d, "balance", "amount"), 3500);
    cr_assert_eq(a.balance.amount, 3500);
    cr_assert_eq(a.tx_count, 2);
    cr_assert_eq(a.last_activity_ms, 3000);
    dt_fail(D(ag_account_withdraw, {USD(3501), 4}), AG_EDOMAIN,
            "insufficient funds: balance 35.00 USD, requested 35.01 USD");
    cr_assert_eq(dt_ok(D(ag_account_withdraw, {USD(3500), 4000})), 1, "down to exactly zero");
    cr_assert_eq(a.balance.amount, 0);
}

Test(account, amount_rules)
{
    opened(100);
    dt_fail(D(ag_account_deposit, {USD(0), 1}), AG_EINVAL, "amount must be positive (got 0)");
    dt_fail(D(ag_account_deposit, {USD(-5), 1}), AG_EINVAL, "amount must be positive (got -5)");
    dt_fail(D(ag_account_deposit, {EUR(5), 1}), AG_EDOMAIN, "account a1 is in USD, not EUR");
    dt_fail(D(ag_account_withdraw, {EUR(5), 1}), AG_EDOMAIN, "account a1 is in USD, not EUR");
    dt_fail(D(ag_account_withdraw, {USD(0), 1}), AG_EINVAL, "amount must be positive");
    dt_fail(D(ag_account_deposit, {USD(INT64_MAX), 1}), AG_EINVAL, "overflow");
    dt_fail(D(ag_account_deposit, {((struct ag_money){5, "usd"}), 1}), AG_EINVAL, "currency");
}

Test(account, charge_once_refund_once)
{
    opened(5000);
    cr_assert_eq(dt_ok(D(ag_account_charge, {"o1", USD(2000), 5000})), 1);
    json_t *d = dt_ev(0, "PaymentCaptured");
    cr_assert_str_eq(jstr(d, "orderId"), "o1");
    cr_assert_eq(jint(d, "amount", "amount"), 2000);
    cr_assert_eq(jint(d, "balance", "amount"), 3000);
    cr_assert_eq(jint(d, "at", NULL), 5000);
    cr_assert_eq(a.balance.amount, 3000);
    cr_assert_eq(ag_account_charged(&a, "o1", NULL), 2000);
    cr_assert_eq(dt_ok(D(ag_account_charge, {"o1", USD(2000), 6000})), 0,
                 "charged twice: no events");
    cr_assert_eq(a.balance.amount, 3000);

    cr_assert_eq(dt_ok(D(ag_account_refund, {"o1", 7000})), 1);
    d = dt_ev(0, "PaymentRefunded");
    cr_assert_str_eq(jstr(d, "orderId"), "o1");
    cr_assert_eq(jint(d, "amount", "amount"), 2000);
    cr_assert_eq(jint(d, "balance", "amount"), 5000);
    cr_assert_eq(a.balance.amount, 5000);
    bool refunded = false;
    cr_assert_eq(ag_account_charged(&a, "o1", &refunded), 2000);
    cr_assert(refunded);
    cr_assert_eq(dt_ok(D(ag_account_refund, {"o1", 8000})), 0, "refunded twice: no events");
    cr_assert_eq(dt_ok(D(ag_account_refund, {"o9", 8000})), 0, "never charged: no events");
    cr_assert_eq(dt_ok(D(ag_account_charge, {"o1", USD(2000), 9000})), 0,
                 "a late duplicate charge after the refund: no events");
    cr_assert_eq(a.balance.amount, 5000);
    cr_assert_eq(a.tx_count, 3); /* deposit, capture, refund */
    cr_assert_eq(a.last_activity_ms, 7000);
}

Test(account, charge_declined_is_an_error_not_an_event)
{
    opened(1000);
    dt_fail(D(ag_account_charge, {"o1", USD(2599), 1}), AG_EDOMAIN,
            "insufficient funds: balance 10.00 USD, requested 25.99 USD");
    cr_assert_eq(ag_account_charged(&a, "o1", NULL), 0);
    dt_fail(D(ag_account_charge, {"", USD(1), 1}), AG_EINVAL, "order id");
    dt_fail(D(ag_account_charge, {"o1", EUR(1), 1}), AG_EDOMAIN, "not EUR");
}

Test(account, close)
{
    opened(100);
    dt_fail(D(ag_account_close, {1}), AG_EDOMAIN,
            "cannot close account a1 with a positive balance (1.00 USD)");
    dt_ok(D(ag_account_charge, {"o1", USD(100), 2}));
    cr_assert_eq(dt_ok(D(ag_account_close, {3})), 1);
    cr_assert_eq(jint(dt_ev(0, "AccountClosed"), "at", NULL), 3);
    cr_assert(a.closed);
    cr_assert_str_eq(ag_account_status_name(&a), "closed");
    cr_assert_eq(dt_ok(D(ag_account_close, {4})), 0, "idempotent");
    dt_fail(D(ag_account_deposit, {USD(1), 5}), AG_EDOMAIN, "account a1 is closed");
    dt_fail(D(ag_account_withdraw, {USD(1), 5}), AG_EDOMAIN, "account a1 is closed");
    dt_fail(D(ag_account_charge, {"o2", USD(1), 5}), AG_EDOMAIN, "account a1 is closed");
    cr_assert_eq(dt_ok(D(ag_account_refund, {"o1", 6})), 1, "a compensation can still refund");
    cr_assert_eq(a.balance.amount, 100);
}

Test(account, many_charges)
{
    char oid[40];
    opened(1000000);
    for (int i = 0; i < 3000; i++) {
        snprintf(oid, sizeof oid, "o-%d", i);
        dt_ok(D(ag_account_charge, {oid, USD(10), i}));
    }
    for (int i = 0; i < 3000; i += 3) {
        snprintf(oid, sizeof oid, "o-%d", i);
        dt_ok(D(ag_account_refund, {oid, i}));
    }
    cr_assert_eq(a.balance.amount, 1000000 - 2000 * 10);
    cr_assert_eq(a.tx_count, 1 + 3000 + 1000);
    struct ag_account copy;
    dt_roundtrip(&copy);
    bool refunded;
    cr_assert_eq(ag_account_charged(&copy, "o-2997", &refunded), 10);
    cr_assert(refunded);
    cr_assert_eq(ag_account_charged(&copy, "o-2998", &refunded), 10);
    cr_assert_not(refunded);
    ag_account_free(&copy);
}

Test(account, snapshot_round_trips)
{
    struct ag_account copy;
    dt_roundtrip(&copy);
    cr_assert_not(copy.exists);
    opened(700);
    dt_ok(D(ag_account_charge, {"o1", USD(200), 99}));
    dt_roundtrip(&copy);
    cr_assert(ag_money_eq(&copy.balance, &USD(500)));
    cr_assert_eq(copy.tx_count, 2);
    cr_assert_eq(copy.last_activity_ms, 99);
    cr_assert_str_eq(copy.customer_id, "c1");
    cr_assert_eq(ag_account_charged(&copy, "o1", NULL), 200);
    ag_account_free(&copy);
}

Test(account, evolve_requires_at_and_valid_amounts)
{
    cr_assert_eq(dt_apply("AccountOpened",
                          "{\"accountId\":\"a\",\"customerId\":\"c\",\"currency\":\"USD\"}"),
                 AG_EINVAL);
    cr_assert_eq(
        dt_apply("AccountOpened",
                 "{\"accountId\":\"a\",\"customerId\":\"c\",\"currency\":\"USD\",\"at\":1}"),
        0);
    cr_assert_eq(
        dt_apply("MoneyDeposited", "{\"amount\":{\"amount\":5,\"currency\":\"EUR\"},\"at\":2}"),
        AG_EINVAL);
    cr_assert_eq(
        dt_apply("MoneyDeposited", "{\"amount\":{\"amount\":0,\"currency\":\"USD\"},\"at\":2}"),
        AG_EINVAL);
    cr_assert_eq(dt_apply("MoneyDeposited",
                          "{\"amount\":{\"amount\":5,\"currency\":\"USD\"},\"balance\":{"
                          "\"amount\":999,\"currency\":\"USD\"},\"at\":2}"),
                 0);
    cr_assert_eq(a.balance.amount, 5, "balance comes from amounts, not from the event's balance");
    cr_assert_eq(dt_apply("Unrelated", "{}"), 0);
}

/* ---- transfers ---- */

static void apply_events(struct ag_account *x, struct ag_dom_events *ev)
{
    for (size_t i = 0; i < ev->n; i++)
        cr_assert_eq(ag_account_evolve(x, ev->v[i].type, ev->v[i].data), 0);
    ag_dom_events_free(ev);
}

static void mk(struct ag_account *x, const char *id, const char *cur, int64_t deposit)
{
    struct ag_dom_events ev;
    ag_dom_events_init(&ev);
    ag_account_init(x);
    cr_assert_eq(ag_account_open(x, &(struct ag_account_open){id, "c", cur, 1}, &ev, NULL), 0);
    apply_events(x, &ev);
    if (deposit) {
        struct ag_money m = {deposit, {0}};
        memcpy(m.currency, cur, 4);
        cr_assert_eq(ag_account_deposit(x, &(struct ag_account_deposit){m, 2}, &ev, NULL), 0);
        apply_events(x, &ev);
    }
}

struct tx {
    struct ag_account from, to;  /* the two accounts */
    struct ag_dom_events ef, et; /* events decided for each */
    struct ag_err err;           /* the error, if any */
};

static void tx_init(struct tx *t, int64_t from_balance, const char *to_currency)
{
    memset(t, 0, sizeof *t);
    mk(&t->from, "a1", "USD", from_balance);
    mk(&t->to, "a2", to_currency, 0);
    ag_dom_events_init(&t->ef);
    ag_dom_events_init(&t->et);
}

static void tx_free(struct tx *t)
{
    ag_dom_events_free(&t->ef);
    ag_dom_events_free(&t->et);
    ag_account_free(&t->from);
    ag_account_free(&t->to);
}

static int tx_run(struct tx *t, const struct ag_account *from, const struct ag_account *to,
                  struct ag_money amount)
{
    return ag_account_transfer(from, to, &amount, 4242, &t->ef, &t->et, &t->err);
}

Test(transfer, moves_money_between_two_accounts)
{
    struct tx t;
    tx_init(&t, 1000, "USD");
    cr_assert_eq(tx_run(&t, &t.from, &t.to, USD(400)), 0, "%s", t.err.msg);
    cr_assert_eq(t.ef.n, 1);
    cr_assert_eq(t.et.n, 1);
    cr_assert_str_eq(t.ef.v[0].type, "MoneyWithdrawn");
    cr_assert_str_eq(t.et.v[0].type, "MoneyDeposited");
    cr_assert_str_eq(jstr(t.ef.v[0].data, "toAccountId"), "a2");
    cr_assert_str_eq(jstr(t.et.v[0].data, "fromAccountId"), "a1");
    cr_assert_eq(jint(t.ef.v[0].data, "balance", "amount"), 600);
    cr_assert_eq(jint(t.et.v[0].data, "balance", "amount"), 400);
    cr_assert_eq(jint(t.et.v[0].data, "at", NULL), 4242);
    apply_events(&t.from, &t.ef);
    apply_events(&t.to, &t.et);
    cr_assert_eq(t.from.balance.amount, 600);
    cr_assert_eq(t.to.balance.amount, 400);
    cr_assert_eq(t.from.balance.amount + t.to.balance.amount, 1000, "money is conserved");
    tx_free(&t);
}

Test(transfer, rules)
{
    struct tx t;
    tx_init(&t, 1000, "USD");
    cr_assert_eq(tx_run(&t, &t.from, &t.to, USD(1001)), AG_EDOMAIN);
    cr_assert_str_eq(t.err.msg, "insufficient funds: balance 10.00 USD, requested 10.01 USD");
    cr_assert_eq(tx_run(&t, &t.from, &t.from, USD(1)), AG_EDOMAIN);
    cr_assert_str_eq(t.err.msg, "cannot transfer from account a1 to itself");
    cr_assert_eq(tx_run(&t, &t.from, &t.to, USD(0)), AG_EINVAL);
    cr_assert_eq(tx_run(&t, &t.from, &t.to, EUR(1)), AG_EDOMAIN);
    cr_assert(strstr(t.err.msg, "transfer currency EUR must match"));
    cr_assert_eq(t.ef.n + t.et.n, 0, "all or nothing");
    tx_free(&t);

    tx_init(&t, 1000, "EUR");
    cr_assert_eq(tx_run(&t, &t.from, &t.to, USD(1)), AG_EDOMAIN);
    cr_assert(strstr(t.err.msg, "must match both accounts (USD, EUR)"), "%s", t.err.msg);
    tx_free(&t);

    tx_init(&t, 0, "USD");
    t.to.closed = true;
    cr_assert_eq(tx_run(&t, &t.from, &t.to, USD(1)), AG_EDOMAIN);
    cr_assert_str_eq(t.err.msg, "account a2 is closed");
    struct ag_account none;
    ag_account_init(&none);
    cr_assert_eq(tx_run(&t, &t.from, &none, USD(1)), AG_EDOMAIN);
    cr_assert(strstr(t.err.msg, "must exist"));
    tx_free(&t);
}

Test(transfer, failure_on_the_second_leg_undoes_the_first)
{
    struct tx t;
    tx_init(&t, 1000, "USD");
    /* the source list has room; the destination list is full, so its push must grow */
    ag_dom_events_push(&t.ef, "X", json_object());
    json_decref(t.ef.v[0].data);
    t.ef.n = 0;
    for (int i = 0; i < 4; i++) ag_dom_events_push(&t.et, "X", json_object());
    cr_assert_eq(t.et.n, t.et.cap);
    ag_alloc_fail_at(1);
    int rc = tx_run(&t, &t.from, &t.to, USD(1));
    ag_alloc_fail_at(0);
    cr_assert_eq(rc, AG_ENOMEM);
    cr_assert_eq(t.ef.n, 0, "the withdrawal was taken back");
    cr_assert_eq(t.et.n, 4);
    tx_free(&t);
}
