/*
 * The inventory context: stock levels per product (on hand, reserved, available)
 * and the stock read model. Reservations are made and released by the PlaceOrder
 * saga (ordering.c) through the StockItem aggregate.
 */
#include <stdio.h>
#include <string.h>

#include "services/internal.h"

static json_t *row(sqlite3_stmt *st)
{
    json_int_t on = sqlite3_column_int64(st, 1), res = sqlite3_column_int64(st, 2);
    return json_pack("{s:s, s:I, s:I, s:I}", "productId", (const char *)sqlite3_column_text(st, 0),
                     "onHand", on, "reserved", res, "available", on - res);
}

static int get(struct svc_job *j)
{
    static const struct svc_one one = {
        RM_STOCK,   "SELECT product_id, on_hand, reserved FROM stock WHERE product_id=?1",
        row,        "stock",
        "No stock", "no stock is recorded for product"};
    return svc_get_one(j, &one, j->param, NULL);
}

static int d_stock_add(const void *st, const void *cmd, struct ag_dom_events *out,
                       struct ag_err *err)
{
    return ag_stock_add(st, cmd, out, err);
}

static void view_stock(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    const struct ag_stock *s = state;
    json_decref(*(json_t **)ud);
    *(json_t **)ud = json_pack("{s:s, s:I, s:I, s:I}", "productId", s->product_id, "onHand",
                               (json_int_t)s->on_hand, "reserved", (json_int_t)s->reserved,
                               "available", (json_int_t)ag_stock_available(s));
}

/* POST /api/v1/inventory/{productId}/restock {"quantity": N}: goods arrived. */
static int restock(struct svc_job *j)
{
    if (!json_is_object(j->body))
        return svc_problem(j, 400, "Invalid request", "the body must be a JSON object");
    json_t *q = json_object_get(j->body, "quantity");
    if (!json_is_integer(q) || json_integer_value(q) <= 0 || json_integer_value(q) > 1000000000)
        svc_field_error(j, "/quantity", "quantity must be an integer from 1 to 1000000000");
    if (svc_fields_failed(j, 400)) return 0;
    if (!svc_stream_exists(j->p, "product", j->param))
        return svc_problem(j, 404, "Product not found", "no product with id %s", j->param);
    if (svc_idem_begin(j, "restock")) return 0;
    char stream[128];
    svc_stream(stream, sizeof stream, "stock", j->param);
    struct ag_stock_add a = {j->param, json_integer_value(q)};
    struct ag_err err;
    ag_err_clear(&err);
    json_t *view = NULL;
    int rc = svc_exec(j->p, &svc_stock_type, stream, d_stock_add, &a, j->meta, view_stock, &view,
                      NULL, &err);
    if (rc)
        svc_error(j, rc, &err);
    else
        svc_ok(j, 200, view), view = NULL;
    json_decref(view);
    svc_idem_end(j, "restock");
    return 0;
}

static const struct svc_route routes[] = {
    {"GET", "/api/v1/inventory/{productId}", SVC_PUBLIC, get, "productId", "product", {NULL}},
    {"POST",
     "/api/v1/inventory/{productId}/restock",
     SVC_ADMIN,
     restock,
     "productId",
     "product",
     {NULL}},
};

void svc_inventory_routes(struct ag_platform *p)
{
    svc_routes(p, routes, sizeof routes / sizeof routes[0]);
}

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS stock(product_id TEXT PRIMARY KEY, on_hand INTEGER NOT NULL,"
    " reserved INTEGER NOT NULL);";

static const char *const types[] = {AG_EV_STOCK_ADDED, AG_EV_STOCK_RESERVED, AG_EV_STOCK_RELEASED,
                                    AG_EV_STOCK_SHIPPED, NULL};

static int apply(sqlite3 *db, const struct ag_event *ev, const json_t *d, void *ud)
{
    AG_UNUSED(ud);
    char id[128], type[64];
    snprintf(id, sizeof id, "%.*s", (int)ev->stream_len - 6, ev->stream + 6); /* "stock-" */
    snprintf(type, sizeof type, "%.*s", (int)ev->type_len, ev->type);
    json_int_t q = json_integer_value(json_object_get(d, "quantity"));
    const char *sql = strcmp(type, AG_EV_STOCK_ADDED) == 0
                          ? "INSERT INTO stock VALUES(?1, ?2, 0) ON CONFLICT(product_id) DO UPDATE"
                            " SET on_hand = on_hand + ?2"
                      : strcmp(type, AG_EV_STOCK_RESERVED) == 0
                          ? "UPDATE stock SET reserved = reserved + ?2 WHERE product_id=?1"
                      : strcmp(type, AG_EV_STOCK_SHIPPED) == 0
                          ? "UPDATE stock SET reserved = reserved - ?2, on_hand = on_hand - ?2 "
                            "WHERE product_id=?1"
                          : "UPDATE stock SET reserved = reserved - ?2 WHERE product_id=?1";
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return AG_EIO;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, q);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : AG_EIO;
    sqlite3_finalize(st);
    return rc;
}

void svc_inventory_projection(struct ag_projection *out)
{
    *out =
        (struct ag_projection){.name = "stock", .schema = schema, .types = types, .apply = apply};
}
