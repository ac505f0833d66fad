/*
 * The inventory context's API: stock levels per product (on hand, reserved,
 * available; public) from the stock read model (projection.c), and restocking
 * (admin). Reservations are made and released by the PlaceOrder saga
 * (sagas/placeorder.c) through the StockItem aggregate.
 */
#include <stdio.h>
#include <string.h>

#include "services/internal.h"

static json_t *row(const struct ag_rm_row *st)
{
    json_int_t on = ag_rm_int64(st, 1), res = ag_rm_int64(st, 2);
    return json_pack("{s:s, s:I, s:I, s:I}", "productId", ag_rm_text(st, 0), "onHand", on,
                     "reserved", res, "available", on - res);
}

static int get(struct svc_job *j)
{
    static const struct svc_one one = {
        RM_STOCK,   "SELECT product_id, on_hand, reserved FROM stock WHERE product_id=?1",
        row,        "stock",
        "No stock", "no stock is recorded for product"};
    return svc_cache_get_one(j, SVC_CACHE_STOCK, &one, j->param, NULL); /* Redis: written through */
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
    if (!svc_stream_exists(j->env, "product", j->param))
        return svc_problem(j, 404, "Product not found", "no product with id %s", j->param);
    if (svc_idem_begin(j, j->param)) return 0;
    struct ag_stock_add a = {j->param, json_integer_value(q)};
    struct ag_err err;
    ag_err_clear(&err);
    json_t *view = NULL;
    int rc = svc_exec(
        j->env,
        &(struct svc_cmd){&svc_stock_type, j->param, d_stock_add, &a, j->meta, view_stock, &view},
        &err);
    if (rc)
        svc_error(j, rc, &err);
    else
        svc_ok(j, 200, view), view = NULL;
    json_decref(view);
    svc_idem_end(j, j->param);
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

const struct svc_context svc_inventory_context = {
    "inventory", routes, sizeof routes / sizeof routes[0], svc_inventory_projection, RM_STOCK};
