/*
 * The catalog context: products and their read model, listed with cursor
 * pagination (the cursor is the last id of the page; ids are UUIDv7, so id order
 * is creation order).
 */
#include <stdio.h>
#include <string.h>

#include "services/internal.h"

static json_t *product_row(sqlite3_stmt *st)
{
    json_t *price = json_pack("{s:I, s:s}", "amount", (json_int_t)sqlite3_column_int64(st, 3),
                              "currency", (const char *)sqlite3_column_text(st, 4));
    return json_pack("{s:s, s:s, s:s, s:o, s:b}", "id", (const char *)sqlite3_column_text(st, 0),
                     "sku", (const char *)sqlite3_column_text(st, 1), "name",
                     (const char *)sqlite3_column_text(st, 2), "price", price, "active",
                     sqlite3_column_int(st, 5));
}

static int list(struct svc_job *j)
{
    int limit;
    if (svc_limit(j, j->q[0], &limit)) return svc_fields_failed(j, 400), 0;
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit + 1);
    const char *args[] = {j->q[1] ? j->q[1] : "", lim};
    json_t *rows =
        svc_rm_query(j->p, RM_PRODUCTS,
                     "SELECT id, sku, name, price_amount, price_currency, active FROM products"
                     " WHERE id > ? ORDER BY id LIMIT ?",
                     args, 2, product_row);
    if (!rows) return AG_EIO;
    j->rm_position = ag_projector_position(j->p->projector);
    return svc_ok(j, 200, svc_page(rows, limit));
}

static int get(struct svc_job *j)
{
    const char *args[] = {j->param};
    json_t *rows =
        svc_rm_query(j->p, RM_PRODUCTS,
                     "SELECT id, sku, name, price_amount, price_currency, active FROM products"
                     " WHERE id = ?",
                     args, 1, product_row);
    if (!rows) return AG_EIO;
    if (!json_array_size(rows)) {
        json_decref(rows);
        return svc_problem(j, 404, "Product not found", "no product with id %s", j->param);
    }
    svc_ok(j, 200, json_incref(json_array_get(rows, 0)));
    json_decref(rows);
    return 0;
}

static const struct svc_route routes[] = {
    {"GET", "/api/v1/products", SVC_PUBLIC, list, NULL, NULL, {"limit", "cursor"}},
    {"GET", "/api/v1/products/{id}", SVC_PUBLIC, get, "id", "product", {NULL}},
};

void svc_catalog_routes(struct ag_platform *p)
{
    svc_routes(p, routes, sizeof routes / sizeof routes[0]);
}

/* ---- projection ---- */

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
