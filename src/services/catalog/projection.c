/*
 * The products read model (readmodels/products.db): one row per product with its
 * price and whether it is still sold.
 */
#include <stdio.h>
#include <string.h>

#include "services/internal.h"

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS products(id TEXT PRIMARY KEY, sku TEXT NOT NULL, name TEXT NOT "
    "NULL,"
    " price_amount INTEGER NOT NULL, price_currency TEXT NOT NULL, active INTEGER NOT NULL);";

static const char *const types[] = {AG_EV_PRODUCT_ADDED, AG_EV_PRODUCT_PRICE_CHANGED,
                                    AG_EV_PRODUCT_DISCONTINUED, NULL};

static int apply(sqlite3 *db, const struct ag_event *ev, const json_t *d, void *ud)
{
    AG_UNUSED(ud);
    char id[128], type[64];
    snprintf(id, sizeof id, "%.*s", (int)ev->stream_len - 8, ev->stream + 8); /* "product-" */
    snprintf(type, sizeof type, "%.*s", (int)ev->type_len, ev->type);
    json_t *price = json_object_get(d, "price");
    const char *sql = strcmp(type, AG_EV_PRODUCT_ADDED) == 0
                          ? "INSERT OR REPLACE INTO products VALUES(?1, ?2, ?3, ?4, ?5, 1)"
                      : strcmp(type, AG_EV_PRODUCT_PRICE_CHANGED) == 0
                          ? "UPDATE products SET price_amount=?4, price_currency=?5 WHERE id=?1"
                          : "UPDATE products SET active=0 WHERE id=?1";
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return AG_EIO;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    if (sqlite3_bind_parameter_count(st) >= 2)
        sqlite3_bind_text(st, 2, json_string_value(json_object_get(d, "sku")), -1,
                          SQLITE_TRANSIENT);
    if (sqlite3_bind_parameter_count(st) >= 3)
        sqlite3_bind_text(st, 3, json_string_value(json_object_get(d, "name")), -1,
                          SQLITE_TRANSIENT);
    if (sqlite3_bind_parameter_count(st) >= 4) {
        sqlite3_bind_int64(st, 4, json_integer_value(json_object_get(price, "amount")));
        sqlite3_bind_text(st, 5, json_string_value(json_object_get(price, "currency")), -1,
                          SQLITE_TRANSIENT);
    }
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : AG_EIO;
    sqlite3_finalize(st);
    return rc;
}

void svc_catalog_projection(struct ag_projection *out)
{
    *out = (struct ag_projection){
        .name = "products", .schema = schema, .types = types, .apply = apply};
}
