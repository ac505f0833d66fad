/*
 * The shipments read model (readmodels/shipments.db): one row per order's
 * shipment (arranged, cancelled, dispatched, delivered) with its tracking number;
 * updated_at is the event's time in Unix nanoseconds (formatted when read).
 * Not the address: it is the order's shipping address, which the orders read
 * model keeps (api.c reads it there; issue 19 stores it once). A rowid table
 * (issue 19): rows in the order shipments are arranged, so later updates of recent
 * ones hit the table's tail (a `WITHOUT ROWID` read model is converted in place:
 * prev_schema, migrate); the order id is the primary key's unique index. Both ids
 * are 16-byte BLOBs (ag_rm_id_arg / ag_rm_id).
 */
#include <stdio.h>
#include <string.h>

#include "services/internal.h"

#define SHIP_COLUMNS                                                                               \
    "(order_id BLOB PRIMARY KEY, id BLOB NOT NULL,"                                                \
    " status TEXT NOT NULL, tracking_number TEXT, updated_at INTEGER NOT NULL)"

static const char ship_schema[] = "CREATE TABLE IF NOT EXISTS shipments" SHIP_COLUMNS ";";

/* The schema before issue 19's rowid tables, and its conversion (rows in the
 * order they were last updated). */
static const char ship_prev_schema[] =
    "CREATE TABLE IF NOT EXISTS shipments" SHIP_COLUMNS " WITHOUT ROWID;";
static const char ship_migrate[] = "CREATE TABLE shipments_v2" SHIP_COLUMNS ";"
                                   "INSERT INTO shipments_v2 SELECT * FROM shipments"
                                   " ORDER BY updated_at;"
                                   "DROP TABLE shipments;"
                                   "ALTER TABLE shipments_v2 RENAME TO shipments;";
static const char *const ship_types[] = {AG_EV_SHIPMENT_ARRANGED, AG_EV_SHIPMENT_CANCELLED,
                                         AG_EV_SHIPMENT_DISPATCHED, AG_EV_SHIPMENT_DELIVERED, NULL};

static int apply_shipment(struct ag_rm *db, const struct ag_event *ev, const json_t *d, void *ud)
{
    AG_UNUSED(ud);
    char order[128], type[64], ts[32];
    if (ag_es_stream_id(&svc_shipment_type, ev->stream, ev->stream_len, order, sizeof order))
        return 0; /* not one of ours (the type owns its prefix) */
    snprintf(type, sizeof type, "%.*s", (int)ev->type_len, ev->type);
    snprintf(ts, sizeof ts, "%llu", (unsigned long long)ev->time_ns); /* Unix ns, INTEGER */
    if (strcmp(type, AG_EV_SHIPMENT_ARRANGED) == 0)
        return svc_sql_run_ids(
            db,
            "INSERT INTO shipments VALUES(?1, ?2, 'arranged', ?3, ?5) ON CONFLICT(order_id) DO"
            " UPDATE SET id=excluded.id, status='arranged', "
            "tracking_number=excluded.tracking_number, updated_at=excluded.updated_at",
            SVC_ID(0) | SVC_ID(1), order, json_string_value(json_object_get(d, "shipmentId")),
            json_string_value(json_object_get(d, "trackingNumber")), NULL, ts);
    const char *status = strcmp(type, AG_EV_SHIPMENT_CANCELLED) == 0   ? "cancelled"
                         : strcmp(type, AG_EV_SHIPMENT_DELIVERED) == 0 ? "delivered"
                                                                       : "dispatched";
    return svc_sql_run_ids(db, "UPDATE shipments SET status=?2, updated_at=?5 WHERE order_id=?1",
                           SVC_ID(0), order, status, NULL, NULL, ts);
}

void svc_shipping_projection(struct ag_projection *out)
{
    *out = (struct ag_projection){.name = "shipments",
                                  .schema = ship_schema,
                                  .types = ship_types,
                                  .apply = apply_shipment,
                                  .prev_schema = ship_prev_schema,
                                  .migrate = ship_migrate};
}
