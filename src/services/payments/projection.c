/*
 * The accounts read model (readmodels/accounts.db): balance, status and activity
 * per wallet account, indexed by balance for "balance ≥ X" queries.
 */
#include <stdio.h>
#include <string.h>

#include "services/internal.h"

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS accounts(id TEXT PRIMARY KEY, customer_id TEXT NOT NULL,"
    " balance INTEGER NOT NULL, currency TEXT NOT NULL, status TEXT NOT NULL,"
    " tx_count INTEGER NOT NULL, last_activity TEXT);"
    "CREATE INDEX IF NOT EXISTS accounts_balance ON accounts(balance);";

static const char *const types[] = {AG_EV_ACCOUNT_OPENED,
                                    AG_EV_MONEY_DEPOSITED,
                                    AG_EV_MONEY_WITHDRAWN,
                                    AG_EV_PAYMENT_CAPTURED,
                                    AG_EV_PAYMENT_REFUNDED,
                                    AG_EV_ACCOUNT_CLOSED,
                                    NULL};

static int apply(sqlite3 *db, const struct ag_event *ev, const json_t *d, void *ud)
{
    AG_UNUSED(ud);
    char id[128], ts[32];
    snprintf(id, sizeof id, "%.*s", (int)ev->stream_len - 8, ev->stream + 8); /* "account-" */
    json_int_t at = json_integer_value(json_object_get(d, "at"));
    ag_time_rfc3339((uint64_t)at * 1000000ull, ts);
    bool opened = ev->type_len == strlen(AG_EV_ACCOUNT_OPENED) &&
                  memcmp(ev->type, AG_EV_ACCOUNT_OPENED, ev->type_len) == 0;
    bool closed = ev->type_len == strlen(AG_EV_ACCOUNT_CLOSED) &&
                  memcmp(ev->type, AG_EV_ACCOUNT_CLOSED, ev->type_len) == 0;
    const char *sql =
        opened   ? "INSERT OR REPLACE INTO accounts VALUES(?1, ?2, 0, ?3, 'open', 0, NULL)"
        : closed ? "UPDATE accounts SET status='closed' WHERE id=?1"
                 : "UPDATE accounts SET balance=?4, tx_count=tx_count+1, last_activity=?5"
                   " WHERE id=?1";
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return AG_EIO;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    int n = sqlite3_bind_parameter_count(st);
    if (n >= 3) {
        sqlite3_bind_text(st, 2, json_string_value(json_object_get(d, "customerId")), -1,
                          SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, json_string_value(json_object_get(d, "currency")), -1,
                          SQLITE_TRANSIENT);
    }
    if (n >= 5) {
        sqlite3_bind_int64(
            st, 4, json_integer_value(json_object_get(json_object_get(d, "balance"), "amount")));
        sqlite3_bind_text(st, 5, ts, -1, SQLITE_TRANSIENT);
    }
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : AG_EIO;
    sqlite3_finalize(st);
    return rc;
}

void svc_payments_projection(struct ag_projection *out)
{
    *out = (struct ag_projection){
        .name = "accounts", .schema = schema, .types = types, .apply = apply};
}
