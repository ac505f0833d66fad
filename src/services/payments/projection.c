/*
 * The accounts read model (readmodels/accounts.db): balance, status and activity
 * per wallet account, indexed by balance for "balance ≥ X" queries. Events that
 * carry the balance after them set it; AccountCharged / AccountRefunded (which
 * carry only the amount) move it.
 */
#include <stdio.h>
#include <string.h>

#include "services/internal.h"

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS accounts(id TEXT PRIMARY KEY, customer_id TEXT NOT NULL,"
    " balance INTEGER NOT NULL, currency TEXT NOT NULL, status TEXT NOT NULL,"
    " tx_count INTEGER NOT NULL, last_activity TEXT);"
    "CREATE INDEX IF NOT EXISTS accounts_balance ON accounts(balance);";

static const char *const types[] = {
    AG_EV_ACCOUNT_OPENED,   AG_EV_MONEY_DEPOSITED,  AG_EV_MONEY_WITHDRAWN,
    AG_EV_PAYMENT_CAPTURED, AG_EV_PAYMENT_REFUNDED, AG_EV_ACCOUNT_CLOSED,
    AG_EV_ACCOUNT_CHARGED,  AG_EV_ACCOUNT_REFUNDED, NULL};

static bool is_type(const struct ag_event *ev, const char *t)
{
    return ev->type_len == strlen(t) && memcmp(ev->type, t, ev->type_len) == 0;
}

static int apply(struct ag_rm *db, const struct ag_event *ev, const json_t *d, void *ud)
{
    AG_UNUSED(ud);
    char id[128], ts[32];
    if (ag_es_stream_id(&svc_account_type, ev->stream, ev->stream_len, id, sizeof id))
        return 0; /* not one of ours (the type owns its prefix) */
    json_int_t at = json_integer_value(json_object_get(d, "at"));
    ag_time_rfc3339((uint64_t)at * 1000000ull, ts);
    bool opened = is_type(ev, AG_EV_ACCOUNT_OPENED), closed = is_type(ev, AG_EV_ACCOUNT_CLOSED);
    int sign = is_type(ev, AG_EV_ACCOUNT_CHARGED)    ? -1
               : is_type(ev, AG_EV_ACCOUNT_REFUNDED) ? 1
                                                     : 0;
    const char *sql =
        opened   ? "INSERT INTO accounts VALUES(?1, ?2, 0, ?3, 'open', 0, NULL) ON CONFLICT(id) DO"
                   " UPDATE SET customer_id=excluded.customer_id, balance=0,"
                   " currency=excluded.currency, status='open', tx_count=0, last_activity=NULL"
        : closed ? "UPDATE accounts SET status='closed' WHERE id=?1"
        : sign   ? "UPDATE accounts SET balance=balance+?4, tx_count=tx_count+1, last_activity=?5"
                   " WHERE id=?1"
                 : "UPDATE accounts SET balance=?4, tx_count=tx_count+1, last_activity=?5"
                   " WHERE id=?1";
    json_int_t bal =
        sign ? sign * json_integer_value(json_object_get(d, "amount"))
             : json_integer_value(json_object_get(json_object_get(d, "balance"), "amount"));
    /* one argument list for the three statements: each binds what it uses */
    struct ag_rm_arg args[] = {
        AG_RM_TEXT(id),
        AG_RM_TEXT(json_string_value(json_object_get(d, "customerId"))),
        AG_RM_TEXT(json_string_value(json_object_get(d, "currency"))),
        AG_RM_INT(bal),
        AG_RM_TEXT(ts),
    };
    return ag_rm_exec(db, sql, args, 5, NULL);
}

void svc_payments_projection(struct ag_projection *out)
{
    *out = (struct ag_projection){
        .name = "accounts", .schema = schema, .types = types, .apply = apply};
}
