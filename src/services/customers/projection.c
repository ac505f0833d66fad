/*
 * The customers read model (readmodels/customers.db): one row per customer, from
 * CustomerRegistered and CustomerTierChanged.
 */
#include <stdio.h>
#include <string.h>

#include "services/internal.h"

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS customers(id TEXT PRIMARY KEY, email TEXT NOT NULL, name TEXT NOT "
    "NULL,"
    " tier TEXT NOT NULL, account_id TEXT NOT NULL, registered_at TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS customers_email ON customers(email);";

static const char *const types[] = {AG_EV_CUSTOMER_REGISTERED, AG_EV_CUSTOMER_TIER_CHANGED, NULL};

static int apply(sqlite3 *db, const struct ag_event *ev, const json_t *d, void *ud)
{
    AG_UNUSED(ud);
    char ts[32], id[128];
    ag_time_rfc3339(ev->time_ns, ts);
    snprintf(id, sizeof id, "%.*s", (int)ev->stream_len - 9, ev->stream + 9); /* "customer-" */
    sqlite3_stmt *st;
    bool reg = ev->type_len == strlen(AG_EV_CUSTOMER_REGISTERED);
    const char *sql = reg ? "INSERT OR REPLACE INTO customers VALUES(?, ?, ?, ?, ?, ?)"
                          : "UPDATE customers SET tier=?2 WHERE id=?1";
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return AG_EIO;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    if (reg) {
        sqlite3_bind_text(st, 2, json_string_value(json_object_get(d, "email")), -1,
                          SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, json_string_value(json_object_get(d, "name")), -1,
                          SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 4, json_string_value(json_object_get(d, "tier")), -1,
                          SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 5, json_string_value(json_object_get(d, "accountId")), -1,
                          SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 6, ts, -1, SQLITE_TRANSIENT);
    } else {
        sqlite3_bind_text(st, 2, json_string_value(json_object_get(d, "tier")), -1,
                          SQLITE_TRANSIENT);
    }
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : AG_EIO;
    sqlite3_finalize(st);
    return rc;
}

void svc_customers_projection(struct ag_projection *out)
{
    *out = (struct ag_projection){
        .name = "customers", .schema = schema, .types = types, .apply = apply};
}
