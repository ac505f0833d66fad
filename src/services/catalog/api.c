/*
 * The catalog context's API: products, public, listed from the products read
 * model (projection.c) with cursor pagination (the cursor is the last id of the page; ids are
 * UUIDv7, so id order is creation order); and the catalog's administration (admin):
 * add a product, change its price, discontinue it. A discontinued product stays
 * readable (active false) and cannot be ordered (ordering answers 422 pointing at
 * the item).
 *
 * Reads go through the read cache (src/services/readcache.c): a hit answers the
 * bytes stored, with a strong ETag (If-None-Match answers 304); a product read
 * counts a view, flushed to the log in batches (the `views` field).
 *
 * Unique SKU: adding claims the stream `product-sku-<hash>` (svc_claim_prepare,
 * as emails are claimed) in the same multi-stream append as ProductAdded, so two
 * products never share a SKU and a fault never leaves a claim without its
 * product; a claim left so by an older binary is taken over after its lease.
 */
#include <stdio.h>
#include <string.h>

#include "services/internal.h"

static json_t *product_row(const struct ag_rm_row *st)
{
    json_t *price = json_pack("{s:I, s:s}", "amount", (json_int_t)ag_rm_int64(st, 3), "currency",
                              ag_rm_text(st, 4));
    return json_pack("{s:s, s:s, s:s, s:o, s:b, s:I}", "id", ag_rm_text(st, 0), "sku",
                     ag_rm_text(st, 1), "name", ag_rm_text(st, 2), "price", price, "active",
                     (int)ag_rm_int64(st, 5), "views", (json_int_t)ag_rm_int64(st, 6));
}

#define PRODUCT_COLUMNS                                                                            \
    "SELECT id, sku, name, price_amount, price_currency, active, views FROM products"

/* GET /api/v1/products: a page, through the read cache (readcache.c). */
static int list(struct svc_job *j)
{
    int limit;
    if (svc_limit(j, j->q[0], &limit)) return svc_fields_failed(j, 400), 0;
    char lim[16], key[192];
    snprintf(lim, sizeof lim, "%d", limit + 1);
    snprintf(key, sizeof key, "l:%d:%.160s", limit, j->q[1] ? j->q[1] : "");
    struct svc_cache_read r;
    if (svc_cache_lookup(j, SVC_CACHE_LIST, key, &r)) return 0;
    const char *args[] = {j->q[1] ? j->q[1] : "", lim};
    uint64_t pos = ag_projector_position(j->env->projector); /* before the read: a lower bound */
    json_t *rows =
        svc_cache_query(j, &r, RM_PRODUCTS, PRODUCT_COLUMNS " WHERE id > ? ORDER BY id LIMIT ?",
                        args, 2, product_row);
    if (!rows) return AG_EIO;
    j->rm_position = pos;
    j->rm_read = true;
    svc_ok(j, 200, svc_page(rows, limit));
    svc_cache_fill(j, &r);
    return 0;
}

/* GET /api/v1/products/{id}: through the read cache; counts a view (write-behind). */
static int get(struct svc_job *j)
{
    char key[192];
    snprintf(key, sizeof key, "p:%s", j->param);
    struct svc_cache_read r;
    if (svc_cache_lookup(j, SVC_CACHE_PRODUCT, key, &r)) {
        svc_cache_view(j->env->cache, j->param);
        return 0;
    }
    const char *args[] = {j->param};
    uint64_t pos = ag_projector_position(j->env->projector);
    json_t *rows =
        svc_cache_query(j, &r, RM_PRODUCTS, PRODUCT_COLUMNS " WHERE id = ?", args, 1, product_row);
    if (!rows) return AG_EIO;
    if (!json_array_size(rows)) {
        json_decref(rows);
        return svc_problem(j, 404, "Product not found", "no product with id %s", j->param);
    }
    j->rm_position = pos;
    j->rm_read = true;
    svc_ok(j, 200, json_incref(json_array_get(rows, 0)));
    json_decref(rows);
    svc_cache_fill(j, &r);
    svc_cache_view(j->env->cache, j->param);
    return 0;
}

/* The product as the API shows it, from the aggregate (the answer of a write). */
static void view_product(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    const struct ag_product *p = state;
    json_decref(*(json_t **)ud);
    *(json_t **)ud = json_pack("{s:s, s:s, s:s, s:o, s:b}", "id", p->id, "sku", p->sku, "name",
                               p->name, "price", ag_money_to_json(&p->price), "active", p->active);
}

static int d_add(const void *st, const void *cmd, struct ag_dom_events *out, struct ag_err *err)
{
    return ag_product_add(st, cmd, out, err);
}

static int d_price(const void *st, const void *cmd, struct ag_dom_events *out, struct ag_err *err)
{
    return ag_product_change_price(st, cmd, out, err);
}

static int d_discontinue(const void *st, const void *cmd, struct ag_dom_events *out,
                         struct ag_err *err)
{
    return ag_product_discontinue(st, cmd, out, err);
}

static void sku_stream(const char *sku, char out[64])
{
    snprintf(out, 64, "product-sku-%016llx", (unsigned long long)ag_xxh3(sku, strlen(sku)));
}

/* Validate {sku, name, price}: every bad field recorded. */
static void parse_product(struct svc_job *j, const char **sku, const char **name,
                          struct ag_money *price)
{
    static const char *const fields[] = {"sku", "name", "price", NULL};
    svc_body_object(j, fields);
    json_t *b = j->body;
    *sku = json_string_value(json_object_get(b, "sku"));
    *name = json_string_value(json_object_get(b, "name"));
    if (!*sku || !**sku || strlen(*sku) > 63)
        svc_field_error(j, "/sku", "sku is required: a non-empty string of at most 63 bytes");
    if (!*name || !**name || strlen(*name) > 255)
        svc_field_error(j, "/name", "name is required: a non-empty string of at most 255 bytes");
    if (!svc_money_field(j, "price", true, price) && price->amount < 0)
        svc_field_error(j, "/price/amount", "a price must not be negative");
}

/* POST /api/v1/products (admin) {sku, name, price}: 201 + Location. */
static int add(struct svc_job *j)
{
    if (!j->body) return svc_problem(j, 400, "Invalid request", "the body must be a JSON object");
    const char *sku, *name;
    struct ag_money price;
    parse_product(j, &sku, &name, &price);
    if (svc_fields_failed(j, 400) || svc_idem_begin(j, "products")) return 0;
    char id[AG_UUID_STRLEN + 1], stream[64];
    svc_job_id(j, "products", id);
    sku_stream(sku, stream);
    struct ag_err err;
    ag_err_clear(&err);
    json_t *view = NULL;
    struct ag_product_add a = {id, sku, name, price};
    int rc = AG_ECONFLICT;
    for (int attempt = 0; attempt < 3 && rc == AG_ECONFLICT; attempt++) { /* claim moved: again */
        struct svc_claim_part claim;
        rc = svc_claim_prepare(j->env, stream, id, "product", NULL, &claim, &err);
        if (!rc)
            rc = svc_exec_extra(
                j->env,
                &(struct svc_cmd){&svc_product_type, id, d_add, &a, j->meta, view_product, &view},
                &claim.part, claim.held ? 0 : 1, &err);
    }
    if (rc == AG_EEXISTS) {
        svc_field_error(j, "/sku", "sku %s is already in the catalog", sku);
        svc_fields_failed(j, 409);
        snprintf(j->title, sizeof j->title, "SKU already in the catalog");
    } else if (rc) {
        svc_error(j, rc, &err);
    } else {
        snprintf(j->location, sizeof j->location, "/api/v1/products/%s", id);
        svc_ok(j, 201, view), view = NULL;
    }
    json_decref(view);
    svc_idem_end(j, "products");
    return 0;
}

/* Run `decide` on product j->param; answer 200 with the product, 404 for none,
 * 409 for a rule (`title`). */
static int product_cmd(struct svc_job *j, svc_dom_fn decide, const void *cmd, const char *title)
{
    if (!svc_stream_exists(j->env, "product", j->param))
        return svc_problem(j, 404, "Product not found", "no product with id %s", j->param);
    struct ag_err err;
    ag_err_clear(&err);
    json_t *view = NULL;
    int rc = svc_exec(
        j->env,
        &(struct svc_cmd){&svc_product_type, j->param, decide, cmd, j->meta, view_product, &view},
        &err);
    if (rc == AG_EDOMAIN)
        svc_problem(j, 409, title, "%s", err.msg);
    else if (rc)
        svc_error(j, rc, &err);
    else
        svc_ok(j, 200, view), view = NULL;
    json_decref(view);
    return 0;
}

/* POST /api/v1/products/{id}/price (admin) {price}: a discontinued product or another
 * currency is a 409; the same price changes nothing. */
static int change_price(struct svc_job *j)
{
    static const char *const fields[] = {"price", NULL};
    struct ag_product_change_price c;
    if (!j->body) svc_field_error(j, "", "the body must be a JSON object");
    svc_body_object(j, fields);
    if (!svc_money_field(j, "price", true, &c.price) && c.price.amount < 0)
        svc_field_error(j, "/price/amount", "a price must not be negative");
    if (svc_fields_failed(j, 400)) return 0;
    return product_cmd(j, d_price, &c, "Price cannot change");
}

/* POST /api/v1/products/{id}/discontinue (admin) {reason?}: no longer sold; again →
 * unchanged. */
static int discontinue(struct svc_job *j)
{
    static const char *const fields[] = {"reason", NULL};
    svc_body_object(j, fields);
    json_t *r = json_object_get(j->body, "reason");
    if (r && !json_is_null(r) && (!json_is_string(r) || strlen(json_string_value(r)) > 255))
        svc_field_error(j, "/reason", "reason must be a string of at most 255 bytes");
    if (svc_fields_failed(j, 400)) return 0;
    struct ag_product_discontinue d = {json_string_value(r)};
    return product_cmd(j, d_discontinue, &d, "Product cannot be discontinued");
}

static const struct svc_route routes[] = {
    {"GET",
     "/api/v1/products",
     SVC_PUBLIC,
     list,
     NULL,
     NULL,
     {"limit", "cursor"},
     svc_cache_prepare_list,
     svc_cache_finish},
    {"GET",
     "/api/v1/products/{id}",
     SVC_PUBLIC,
     get,
     "id",
     "product",
     {NULL},
     svc_cache_prepare_product,
     svc_cache_finish},
    {"POST", "/api/v1/products", SVC_ADMIN, add, NULL, NULL, {NULL}},
    {"POST", "/api/v1/products/{id}/price", SVC_ADMIN, change_price, "id", "product", {NULL}},
    {"POST", "/api/v1/products/{id}/discontinue", SVC_ADMIN, discontinue, "id", "product", {NULL}},
    {"POST", "/api/v1/promotions", SVC_ADMIN, svc_promo_create, NULL, NULL, {NULL}},
    {"GET", "/api/v1/promotions/{id}", SVC_ADMIN, svc_promo_get, "id", "promotion", {NULL}},
};

const struct svc_context svc_catalog_context = {"catalog", routes, sizeof routes / sizeof routes[0],
                                                svc_catalog_projection, RM_PRODUCTS};
