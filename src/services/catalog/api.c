/*
 * The catalog context's API: products, public, listed from the products read
 * model (projection.c) with cursor pagination (the cursor is the last id of the page; ids are
 * UUIDv7, so id order is creation order).
 */
#include <stdio.h>
#include <string.h>

#include "services/internal.h"

static json_t *product_row(const struct ag_rm_row *st)
{
    json_t *price = json_pack("{s:I, s:s}", "amount", (json_int_t)ag_rm_int64(st, 3), "currency",
                              ag_rm_text(st, 4));
    return json_pack("{s:s, s:s, s:s, s:o, s:b}", "id", ag_rm_text(st, 0), "sku", ag_rm_text(st, 1),
                     "name", ag_rm_text(st, 2), "price", price, "active", (int)ag_rm_int64(st, 5));
}

static int list(struct svc_job *j)
{
    int limit;
    if (svc_limit(j, j->q[0], &limit)) return svc_fields_failed(j, 400), 0;
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit + 1);
    const char *args[] = {j->q[1] ? j->q[1] : "", lim};
    json_t *rows =
        svc_rm_query(j->env, RM_PRODUCTS,
                     "SELECT id, sku, name, price_amount, price_currency, active FROM products"
                     " WHERE id > ? ORDER BY id LIMIT ?",
                     args, 2, product_row);
    if (!rows) return AG_EIO;
    j->rm_position = ag_projector_position(j->env->projector);
    return svc_ok(j, 200, svc_page(rows, limit));
}

static int get(struct svc_job *j)
{
    const char *args[] = {j->param};
    json_t *rows =
        svc_rm_query(j->env, RM_PRODUCTS,
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

const struct svc_context svc_catalog_context = {"catalog", routes, sizeof routes / sizeof routes[0],
                                                svc_catalog_projection, RM_PRODUCTS};
