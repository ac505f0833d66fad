/*
 * The orders read model (readmodels/orders.db): one row per order with its lines,
 * totals, shipping address, status and saga, indexed by customer (the owner's
 * lists and the saga owner check).
 *
 * Compact on purpose (issue 19, ~1 KB of read models per order): `items` is
 * [[productId, quantity, unit price], ...] (the currency is the row's, a line's
 * subtotal is quantity × unit price: order_row in api.c gives the API's objects
 * back); created_at/updated_at are the events' times in Unix nanoseconds
 * (INTEGER), formatted RFC 3339 when read. No index on status: the list query
 * walks the primary key in id order (the page cursor) and filters, which is what
 * SQLite chose even when there was one. A rowid table (issue 19): rows are
 * appended in the order the orders are created, so the updates of recent orders
 * (items, placed, confirmed, shipped) hit the pages at the table's tail instead of
 * a random leaf each (the order id is random: a hash of the idempotency key); the
 * id is the primary key's unique index. Read models made `WITHOUT ROWID` are
 * converted in place at open (prev_schema, migrate). The shipping address is stored here
 * only (the shipments read model reads it from this table), sealed for the
 * order's customer, without the "pii1:<customer id>:" the row's customer_id
 * already says (svc_pii_column_pack / svc_pii_open_column), and stored as bytes
 * (0x01 and the envelope's base64 decoded: svc_pii_column_bytes, read back by
 * svc_pii_open_cell). Ids (id, customer_id, saga_id) are 16-byte BLOBs
 * (ag_rm_id_arg / ag_rm_id: 20 bytes less each, in the row and in the index).
 *
 * Its ud is the platform's environment (NULL for an offline rebuild): every
 * order an event touches is marked in its waiter registry (wait.c), and GETs
 * parked on it are woken once the page has committed; OrderConfirmed and
 * OrderCancelled end the order's admission (admission.c: its slot is freed and
 * agora_order_confirm_seconds observes it).
 */
#include <stdio.h>
#include <string.h>

#include "services/internal.h"

#define ORDERS_COLUMNS                                                                             \
    "(id BLOB PRIMARY KEY, customer_id BLOB NOT NULL,"                                             \
    " status TEXT NOT NULL, currency TEXT NOT NULL, subtotal INTEGER NOT NULL DEFAULT 0,"          \
    " discount INTEGER NOT NULL DEFAULT 0, total INTEGER NOT NULL DEFAULT 0,"                      \
    " items TEXT NOT NULL DEFAULT '[]', shipping_address BLOB, cancellation_reason TEXT,"          \
    " tracking_number TEXT, saga_id BLOB, created_at INTEGER NOT NULL,"                            \
    " updated_at INTEGER NOT NULL)"
#define ORDERS_INDEX "CREATE INDEX IF NOT EXISTS orders_customer ON orders(customer_id, id);"

static const char schema[] = "CREATE TABLE IF NOT EXISTS orders" ORDERS_COLUMNS ";" ORDERS_INDEX;

/* The schema before issue 19's rowid tables, and its conversion: the rows copied
 * in the order they were created, so the table is in time order from then on. */
static const char prev_schema[] =
    "CREATE TABLE IF NOT EXISTS orders" ORDERS_COLUMNS " WITHOUT ROWID;" ORDERS_INDEX;
static const char migrate[] = "CREATE TABLE orders_v2" ORDERS_COLUMNS ";"
                              "INSERT INTO orders_v2 SELECT * FROM orders ORDER BY created_at;"
                              "DROP TABLE orders;"
                              "ALTER TABLE orders_v2 RENAME TO orders;";

static const char *const types[] = {
    AG_EV_ORDER_CREATED, AG_EV_ITEM_ADDED,      AG_EV_ITEM_REMOVED,
    AG_EV_ORDER_PLACED,  AG_EV_ORDER_CONFIRMED, AG_EV_ORDER_CANCELLED,
    AG_EV_ORDER_SHIPPED, AG_EV_ORDER_DELIVERED, NULL};

struct items_row {
    json_t *items;
    char *cur; /* char[4] */
};

static int items_row(const struct ag_rm_row *r, void *ud)
{
    struct items_row *o = ud;
    o->items = json_loads(ag_rm_text(r, 0), 0, NULL);
    snprintf(o->cur, 4, "%s", ag_rm_text(r, 1));
    return 1;
}

static json_t *load_items(struct ag_rm *db, const char *id, const char **currency_out, char *cur)
{
    struct items_row o = {NULL, cur};
    uint8_t idb[16];
    struct ag_rm_arg arg = ag_rm_id_arg(id, idb);
    ag_rm_query(db, "SELECT items, currency FROM orders WHERE id=?1", &arg, 1, items_row, &o, NULL);
    if (o.items) *currency_out = cur;
    return o.items;
}

/* ItemAdded / ItemRemoved: rewrite the lines [[productId, quantity, unit], ...]
 * and the running subtotal. */
static int apply_item(struct ag_rm *db, const char *id, const json_t *d, bool add, const char *ts)
{
    const char *currency = NULL;
    char cur[4];
    json_t *items = load_items(db, id, &currency, cur);
    if (!items) return 0;
    const char *pid = json_string_value(json_object_get(d, "productId"));
    json_int_t q = json_integer_value(json_object_get(d, "quantity"));
    json_int_t unit =
        json_integer_value(json_object_get(json_object_get(d, "unitPrice"), "amount"));
    size_t i;
    json_t *it;
    bool found = false;
    json_array_foreach(items, i, it)
    {
        if (!pid || strcmp(json_string_value(json_array_get(it, 0)) ?: "", pid) != 0) continue;
        found = true;
        if (!add) {
            json_array_remove(items, i);
            break;
        }
        q += json_integer_value(json_array_get(it, 1));
        json_array_set_new(it, 1, json_integer(q));
        json_array_set_new(it, 2, json_integer(unit));
    }
    if (add && !found) json_array_append_new(items, json_pack("[s, I, I]", pid ?: "", q, unit));
    json_int_t sub = 0;
    json_array_foreach(items, i, it) sub +=
        json_integer_value(json_array_get(it, 1)) * json_integer_value(json_array_get(it, 2));
    char *text = json_dumps(items, JSON_COMPACT);
    char subs[32];
    snprintf(subs, sizeof subs, "%lld", (long long)sub);
    int rc = svc_sql_run_ids(
        db, "UPDATE orders SET items=?2, subtotal=?3, total=?3, updated_at=?5 WHERE id=?1",
        SVC_ID(0), id, text, subs, NULL, ts);
    free(text);
    json_decref(items);
    return rc;
}

static int customer_row(const struct ag_rm_row *r, void *ud)
{
    char buf[AG_RM_ID_MAX];
    snprintf(ud, AG_DOM_ID_MAX, "%s", ag_rm_id(r, 0, buf) ?: "");
    return 1;
}

/* The order's customer (the subject its address is sealed for), "" when unknown. */
static const char *load_customer(struct ag_rm *db, const char *id, char out[AG_DOM_ID_MAX])
{
    uint8_t idb[16];
    struct ag_rm_arg arg = ag_rm_id_arg(id, idb);
    out[0] = 0;
    ag_rm_query(db, "SELECT customer_id FROM orders WHERE id=?1", &arg, 1, customer_row, out, NULL);
    return out;
}

static int apply_placed(struct ag_rm *db, const char *id, const json_t *d, const char *ts)
{
    char sub[32], disc[32], tot[32], cust[AG_DOM_ID_MAX];
    snprintf(
        sub, sizeof sub, "%lld",
        (long long)json_integer_value(json_object_get(json_object_get(d, "subtotal"), "amount")));
    snprintf(
        disc, sizeof disc, "%lld",
        (long long)json_integer_value(json_object_get(json_object_get(d, "discount"), "amount")));
    snprintf(tot, sizeof tot, "%lld",
             (long long)json_integer_value(json_object_get(json_object_get(d, "total"), "amount")));
    char *text = json_dumps(json_object_get(d, "shippingAddress"), JSON_COMPACT | JSON_ENCODE_ANY);
    char *addr = svc_pii_column_pack(text, load_customer(db, id, cust));
    free(text);
    size_t an = 0;
    uint8_t *abytes = svc_pii_column_bytes(addr, &an); /* stored as a BLOB when it can be */
    uint8_t idb[16], sagab[16];
    struct ag_rm_arg v[] = {ag_rm_id_arg(id, idb),
                            AG_RM_TEXT(sub),
                            AG_RM_TEXT(disc),
                            AG_RM_TEXT(tot),
                            abytes ? AG_RM_BLOB(abytes, an) : AG_RM_TEXT(addr),
                            ag_rm_id_arg(json_string_value(json_object_get(d, "sagaId")), sagab),
                            AG_RM_TEXT(ts)};
    int rc = ag_rm_exec(db,
                        "UPDATE orders SET status='pending', subtotal=?2, discount=?3, total=?4,"
                        " shipping_address=?5, saga_id=?6, updated_at=?7 WHERE id=?1",
                        v, 7, NULL);
    ag_free(abytes);
    ag_free(addr);
    return rc;
}

static int apply(struct ag_rm *db, const struct ag_event *ev, const json_t *d, void *ud)
{
    char id[128], type[64], ts[32];
    if (ag_es_stream_id(&svc_order_type, ev->stream, ev->stream_len, id, sizeof id))
        return 0; /* not one of ours (the type owns its prefix) */
    snprintf(type, sizeof type, "%.*s", (int)ev->type_len, ev->type);
    snprintf(ts, sizeof ts, "%llu", (unsigned long long)ev->time_ns); /* INTEGER columns */
    struct svc_env *env = ud;
    svc_waiters_mark(env ? env->waiters : NULL, id); /* parked GETs wake after the commit */
    if (strcmp(type, AG_EV_ORDER_CREATED) == 0)
        return svc_sql_run_ids(
            db,
            "INSERT INTO orders(id, customer_id, status, currency, created_at,"
            " updated_at) VALUES(?1, ?2, 'draft', ?3, ?5, ?5) ON CONFLICT DO NOTHING",
            SVC_ID(0) | SVC_ID(1), id, json_string_value(json_object_get(d, "customerId")),
            json_string_value(json_object_get(d, "currency")), NULL, ts);
    if (strcmp(type, AG_EV_ITEM_ADDED) == 0) return apply_item(db, id, d, true, ts);
    if (strcmp(type, AG_EV_ITEM_REMOVED) == 0) return apply_item(db, id, d, false, ts);
    if (strcmp(type, AG_EV_ORDER_PLACED) == 0) return apply_placed(db, id, d, ts);
    bool confirmed = strcmp(type, AG_EV_ORDER_CONFIRMED) == 0;
    if (env && (confirmed || strcmp(type, AG_EV_ORDER_CANCELLED) == 0))
        svc_admission_done(env->admission, id, confirmed);
    if (confirmed)
        return svc_sql_run_ids(
            db,
            "UPDATE orders SET status='confirmed', tracking_number=?2, updated_at=?5 WHERE id=?1",
            SVC_ID(0), id, json_string_value(json_object_get(d, "trackingNumber")), NULL, NULL, ts);
    if (strcmp(type, AG_EV_ORDER_CANCELLED) == 0)
        return svc_sql_run_ids(db,
                               "UPDATE orders SET status='cancelled', cancellation_reason=?2, "
                               "updated_at=?5 WHERE id=?1",
                               SVC_ID(0), id, json_string_value(json_object_get(d, "reason")), NULL,
                               NULL, ts);
    if (strcmp(type, AG_EV_ORDER_SHIPPED) == 0)
        return svc_sql_run_ids(db, "UPDATE orders SET status='shipped', updated_at=?5 WHERE id=?1",
                               SVC_ID(0), id, NULL, NULL, NULL, ts);
    if (strcmp(type, AG_EV_ORDER_DELIVERED) == 0)
        return svc_sql_run_ids(db,
                               "UPDATE orders SET status='delivered', updated_at=?5 WHERE id=?1",
                               SVC_ID(0), id, NULL, NULL, NULL, ts);
    return 0;
}

static void committed(void *ud)
{
    struct svc_env *env = ud;
    if (env) svc_waiters_committed(env->waiters);
}

void svc_ordering_projection(struct ag_projection *out)
{
    *out = (struct ag_projection){.name = "orders",
                                  .schema = schema,
                                  .types = types,
                                  .apply = apply,
                                  .committed = committed,
                                  .prev_schema = prev_schema,
                                  .migrate = migrate};
}
