/*
 * The products read model (readmodels/products.db): one row per product with its
 * price, whether it is still sold, and how often it was viewed (the view counts
 * the read cache writes behind, src/services/readcache.c). Each change is handed
 * to the read cache, which drops the product after the commit.
 */
#include <stdio.h>
#include <string.h>

#include "services/internal.h"

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS products(id TEXT PRIMARY KEY, sku TEXT NOT NULL, name TEXT NOT "
    "NULL,"
    " price_amount INTEGER NOT NULL, price_currency TEXT NOT NULL, active INTEGER NOT NULL,"
    " views INTEGER NOT NULL DEFAULT 0);";

static const char *const types[] = {AG_EV_PRODUCT_ADDED, AG_EV_PRODUCT_PRICE_CHANGED,
                                    AG_EV_PRODUCT_DISCONTINUED, SVC_EV_PRODUCT_VIEWS, NULL};

/* ProductViewsCounted {"counts": {"<id>": n}} (stream catalog-views, readcache.c):
 * the views counted since the last flush, added up. */
static int apply_views(struct ag_rm *db, const json_t *d, void *ud)
{
    const char *id;
    json_t *n;
    json_object_foreach((json_t *)json_object_get(d, "counts"), id, n)
    {
        struct ag_rm_arg args[] = {AG_RM_TEXT(id), AG_RM_INT(json_integer_value(n))};
        int rc =
            ag_rm_exec(db, "UPDATE products SET views = views + ?2 WHERE id=?1", args, 2, NULL);
        if (rc) return rc;
        svc_cache_touch(ud, id);
    }
    return 0;
}

static int apply(struct ag_rm *db, const struct ag_event *ev, const json_t *d, void *ud)
{
    char id[128], type[64];
    if (ev->type_len == strlen(SVC_EV_PRODUCT_VIEWS) &&
        memcmp(ev->type, SVC_EV_PRODUCT_VIEWS, ev->type_len) == 0)
        return apply_views(db, d, ud);
    if (ag_es_stream_id(&svc_product_type, ev->stream, ev->stream_len, id, sizeof id))
        return 0; /* not one of ours (the type owns its prefix) */
    snprintf(type, sizeof type, "%.*s", (int)ev->type_len, ev->type);
    json_t *price = json_object_get(d, "price");
    const char *sql =
        strcmp(type, AG_EV_PRODUCT_ADDED) == 0
            ? "INSERT INTO products(id, sku, name, price_amount, price_currency, active)"
              " VALUES(?1, ?2, ?3, ?4, ?5, 1) ON CONFLICT(id) DO UPDATE"
              " SET sku=excluded.sku, name=excluded.name,"
              " price_amount=excluded.price_amount,"
              " price_currency=excluded.price_currency, active=1"
        : strcmp(type, AG_EV_PRODUCT_PRICE_CHANGED) == 0
            ? "UPDATE products SET price_amount=?4, price_currency=?5 WHERE id=?1"
            : "UPDATE products SET active=0 WHERE id=?1";
    /* one argument list for the three statements: each binds what it uses */
    struct ag_rm_arg args[] = {
        AG_RM_TEXT(id),
        AG_RM_TEXT(json_string_value(json_object_get(d, "sku"))),
        AG_RM_TEXT(json_string_value(json_object_get(d, "name"))),
        AG_RM_INT(json_integer_value(json_object_get(price, "amount"))),
        AG_RM_TEXT(json_string_value(json_object_get(price, "currency"))),
    };
    int rc = ag_rm_exec(db, sql, args, 5, NULL);
    if (!rc) svc_cache_touch(ud, id); /* the read cache drops it after the commit */
    return rc;
}

void svc_catalog_projection(struct ag_projection *out)
{
    *out = (struct ag_projection){
        .name = "products", .schema = schema, .types = types, .apply = apply};
}
