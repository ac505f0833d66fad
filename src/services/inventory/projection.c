/*
 * The stock read model (readmodels/stock.db): on hand and reserved per product.
 * StockHeld / StockFreed / StockDispatched count like StockReserved /
 * StockReleased / StockShipped (the events of logs written before issue 19).
 */
#include <stdio.h>
#include <string.h>

#include "services/internal.h"

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS stock(product_id TEXT PRIMARY KEY, on_hand INTEGER NOT NULL,"
    " reserved INTEGER NOT NULL);";

static const char *const types[] = {
    AG_EV_STOCK_ADDED, AG_EV_STOCK_RESERVED, AG_EV_STOCK_RELEASED,   AG_EV_STOCK_SHIPPED,
    AG_EV_STOCK_HELD,  AG_EV_STOCK_FREED,    AG_EV_STOCK_DISPATCHED, NULL};

static int apply(struct ag_rm *db, const struct ag_event *ev, const json_t *d, void *ud)
{
    char id[128], type[64];
    if (ag_es_stream_id(&svc_stock_type, ev->stream, ev->stream_len, id, sizeof id))
        return 0; /* not one of ours (the type owns its prefix) */
    snprintf(type, sizeof type, "%.*s", (int)ev->type_len, ev->type);
    json_int_t q = json_integer_value(json_object_get(d, "quantity"));
    const char *sql =
        strcmp(type, AG_EV_STOCK_ADDED) == 0
            ? "INSERT INTO stock VALUES(?1, ?2, 0) ON CONFLICT(product_id) DO UPDATE"
              " SET on_hand = stock.on_hand + excluded.on_hand"
        : strcmp(type, AG_EV_STOCK_RESERVED) == 0 || strcmp(type, AG_EV_STOCK_HELD) == 0
            ? "UPDATE stock SET reserved = reserved + ?2 WHERE product_id=?1"
        : strcmp(type, AG_EV_STOCK_SHIPPED) == 0 || strcmp(type, AG_EV_STOCK_DISPATCHED) == 0
            ? "UPDATE stock SET reserved = reserved - ?2, on_hand = on_hand - ?2 "
              "WHERE product_id=?1"
            : "UPDATE stock SET reserved = reserved - ?2 WHERE product_id=?1";
    struct ag_rm_arg args[] = {AG_RM_TEXT(id), AG_RM_INT(q)};
    int rc = ag_rm_exec(db, sql, args, 2, NULL);
    if (!rc) svc_cache_touch(ud, id); /* written through to Redis after the commit */
    return rc;
}

void svc_inventory_projection(struct ag_projection *out)
{
    *out =
        (struct ag_projection){.name = "stock", .schema = schema, .types = types, .apply = apply};
}
