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

static int apply(struct ag_rm *db, const struct ag_event *ev, const json_t *d, void *ud)
{
    AG_UNUSED(ud);
    char id[128], type[64];
    if (ag_es_stream_id(&svc_product_type, ev->stream, ev->stream_len, id, sizeof id))
        return 0; /* not one of ours (the type owns its prefix) */
    snprintf(type, sizeof type, "%.*s", (int)ev->type_len, ev->type);
    json_t *price = json_object_get(d, "price");
    const char *sql =
        strcmp(type, AG_EV_PRODUCT_ADDED) == 0
            ? "INSERT INTO products VALUES(?1, ?2, ?3, ?4, ?5, 1) ON CONFLICT(id) DO UPDATE"
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
    return ag_rm_exec(db, sql, args, 5, NULL);
}

void svc_catalog_projection(struct ag_projection *out)
{
    *out = (struct ag_projection){
        .name = "products", .schema = schema, .types = types, .apply = apply};
}
