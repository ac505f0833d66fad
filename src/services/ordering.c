/*
 * The ordering context: placing, reading, listing and cancelling orders, the
 * orders read model, and the PlaceOrder saga:
 *
 *   PlaceOrder → ReserveInventory → ProcessPayment → ArrangeShipment → ConfirmOrder
 *   (compensations: cancel order ← release stock ← refund ← cancel shipment)
 *
 * POST /api/v1/orders prices the order (PricingService: premium 10% off) and
 * appends OrderCreated, ItemAdded…, OrderPlaced in one atomic append, then answers
 * 202 with the order and saga ids. The saga is started by a projection that reacts
 * to OrderPlaced (the "saga starter"), so an order placed just before a crash
 * still gets its saga after the restart. Every step is idempotent per order: the
 * StockItem keys reservations by order, the Account keys charges by order, and a
 * shipment's stream is named after its order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/internal.h"

#define MAX_ITEMS 100
#define MAX_QTY   10000

/* ---- placing an order ---- */

struct place {
    const char *order_id, *customer_id, *saga_id;
    struct ag_price_line lines[MAX_ITEMS];
    size_t n;
    bool premium;
    struct ag_address address;
    struct ag_price_quote quote;
    char account_id[AG_DOM_ID_MAX]; /* the customer's wallet, which must exist */
};

static int step_dom(struct ag_order *o, struct ag_dom_events *all, int rc,
                    struct ag_dom_events *evs)
{
    for (size_t i = 0; i < evs->n && !rc; i++) {
        rc = ag_order_evolve(o, evs->v[i].type, evs->v[i].data);
        if (!rc) rc = ag_dom_events_push(all, evs->v[i].type, json_incref(evs->v[i].data));
    }
    ag_dom_events_free(evs);
    return rc;
}

static int decide_place(const void *state, int64_t version, void *ud, struct ag_es_batch *out,
                        struct ag_err *err)
{
    AG_UNUSED(state);
    struct place *pl = ud;
    if (version >= 0) return ag_err_set(err, AG_EEXISTS, "order %s already exists", pl->order_id);
    struct ag_order o;
    memset(&o, 0, sizeof o);
    ag_order_init(&o);
    struct ag_dom_events all, evs;
    ag_dom_events_init(&all);
    ag_dom_events_init(&evs);
    struct ag_order_create c = {pl->order_id, pl->customer_id, pl->lines[0].unit_price.currency};
    int rc = step_dom(&o, &all, ag_order_create(&o, &c, &evs, err), &evs);
    for (size_t i = 0; i < pl->n && !rc; i++) {
        struct ag_order_add_item a = {pl->lines[i].product_id, pl->lines[i].quantity,
                                      pl->lines[i].unit_price};
        rc = step_dom(&o, &all, ag_order_add_item(&o, &a, &evs, err), &evs);
    }
    struct ag_order_place p = {&pl->address, pl->quote, pl->saga_id};
    if (!rc) rc = step_dom(&o, &all, ag_order_place(&o, &p, &evs, err), &evs);
    for (size_t i = 0; i < all.n && !rc; i++) {
        rc = ag_es_batch_push(out, all.v[i].type, all.v[i].data);
        all.v[i].data = NULL;
    }
    ag_dom_events_free(&all);
    ag_dom_events_free(&evs);
    ag_order_free(&o);
    return rc;
}

static void view_customer(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    const struct ag_customer *c = state;
    struct place *pl = ud;
    pl->premium = c->premium;
    snprintf(pl->account_id, sizeof pl->account_id, "%s", c->account_id);
}

static void view_product(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    const struct ag_product *pr = state;
    struct ag_price_line *l = ud;
    l->unit_price = pr->active ? pr->price : (struct ag_money){-1, ""};
}

/* Validate the body into `pl`, recording every bad field. */
static void parse_order(struct svc_job *j, struct place *pl)
{
    json_t *b = j->body;
    json_t *cid = json_object_get(b, "customerId");
    pl->customer_id = json_string_value(cid);
    if (!cid && !j->who.admin) /* taken from the caller */
        pl->customer_id = svc_caller_customer(j);
    if (!pl->customer_id && cid)
        svc_field_error(j, "/customerId", "customerId must be a string");
    else if (!pl->customer_id && j->who.admin)
        svc_field_error(j, "/customerId", "customerId is required");
    else if (!pl->customer_id)
        svc_field_error(j, "/customerId",
                        "unknown customer: register one first (POST /api/v1/customers)");
    else if (!svc_uuid_ok(pl->customer_id) || !svc_owns(j, pl->customer_id) ||
             !svc_stream_exists(j->p, "customer", pl->customer_id))
        svc_field_error(j, "/customerId", "unknown customer %s", pl->customer_id);
    json_t *items = json_object_get(b, "items");
    if (!json_is_array(items) || json_array_size(items) == 0)
        svc_field_error(j, "/items", "items must be a non-empty array");
    else if (json_array_size(items) > MAX_ITEMS)
        svc_field_error(j, "/items", "at most %d items per order", MAX_ITEMS);
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it)
    {
        if (i >= MAX_ITEMS) break;
        char ptr[64];
        const char *pid = json_string_value(json_object_get(it, "productId"));
        json_t *q = json_object_get(it, "quantity");
        snprintf(ptr, sizeof ptr, "/items/%zu/productId", i);
        if (!pid)
            svc_field_error(j, ptr, "productId is required and must be a string");
        else if (strlen(pid) >= AG_DOM_ID_MAX || !svc_stream_exists(j->p, "product", pid))
            svc_field_error(j, ptr, "unknown product %s", pid);
        snprintf(ptr, sizeof ptr, "/items/%zu/quantity", i);
        if (!json_is_integer(q))
            svc_field_error(j, ptr, "quantity is required and must be an integer");
        else if (json_integer_value(q) <= 0)
            svc_field_error(j, ptr, "quantity must be greater than zero");
        else if (json_integer_value(q) > MAX_QTY)
            svc_field_error(j, ptr, "quantity must be at most %d", MAX_QTY);
        if (pid && strlen(pid) < AG_DOM_ID_MAX && json_is_integer(q)) {
            snprintf(pl->lines[pl->n].product_id, AG_DOM_ID_MAX, "%s", pid);
            pl->lines[pl->n++].quantity = json_integer_value(q);
        }
    }
    json_t *addr = json_object_get(b, "shippingAddress");
    struct ag_err err;
    ag_err_clear(&err);
    if (!addr)
        svc_field_error(j, "/shippingAddress", "shippingAddress is required");
    else if (ag_address_from_json(addr, &pl->address, "/shippingAddress", &err)) {
        const char *colon = strstr(err.msg, ": ");
        char ptr[96];
        snprintf(ptr, sizeof ptr, "%.*s", colon ? (int)(colon - err.msg) : 16,
                 colon ? err.msg : "/shippingAddress");
        svc_field_error(j, ptr, "%s", colon ? colon + 2 : err.msg);
    }
}

/* Prices from the catalog, tier from the customer, then the quote. */
static int price_order(struct svc_job *j, struct place *pl)
{
    char stream[128];
    struct ag_err err;
    ag_err_clear(&err);
    svc_stream(stream, sizeof stream, "customer", pl->customer_id);
    svc_read(j->p, &svc_customer_type, stream, view_customer, pl, NULL);
    if (!pl->account_id[0] || !svc_stream_exists(j->p, "account", pl->account_id))
        svc_field_error(j, "/customerId", "customer %s has no payment account", pl->customer_id);
    for (size_t i = 0; i < pl->n; i++) {
        svc_stream(stream, sizeof stream, "product", pl->lines[i].product_id);
        svc_read(j->p, &svc_product_type, stream, view_product, &pl->lines[i], NULL);
        if (pl->lines[i].unit_price.amount < 0) {
            char ptr[64];
            snprintf(ptr, sizeof ptr, "/items/%zu/productId", i);
            svc_field_error(j, ptr, "product %s is discontinued", pl->lines[i].product_id);
        }
    }
    if (svc_fields_failed(j, 422)) return 1;
    int rc = ag_pricing_quote(pl->lines, pl->n, pl->premium, NULL, 0, &pl->quote, &err);
    if (rc) return svc_error(j, rc, &err), 1;
    return 0;
}

static json_t *placed_json(const char *order_id, const char *saga_id)
{
    return json_pack("{s:s, s:s, s:s}", "orderId", order_id, "sagaId", saga_id, "status",
                     "pending");
}

static int create(struct svc_job *j)
{
    if (!json_is_object(j->body))
        return svc_problem(j, 400, "Invalid request", "the body must be a JSON object");
    struct place *pl = ag_calloc(1, sizeof *pl);
    if (!pl) return AG_ENOMEM;
    parse_order(j, pl);
    const char *first = json_string_value(json_object_get(json_array_get(j->errors, 0), "detail"));
    int done = svc_fields_failed(j, first && strstr(first, "unknown") ? 422 : 400);
    if (!done) done = svc_idem_begin(j, "orders");
    if (!done && !price_order(j, pl)) {
        char order_id[AG_UUID_STRLEN + 1], saga_id[AG_UUID_STRLEN + 1], stream[128];
        svc_job_id(j, "orders", order_id);
        svc_job_id(j, "sagas", saga_id);
        pl->order_id = order_id;
        pl->saga_id = saga_id;
        svc_stream(stream, sizeof stream, "order", order_id);
        struct ag_err err;
        ag_err_clear(&err);
        int rc = ag_es_execute(j->p->repo, &svc_order_type, stream, decide_place, pl, j->meta, NULL,
                               NULL, NULL, &err);
        if (rc && rc != AG_EEXISTS) {
            svc_error(j, rc, &err);
        } else {
            snprintf(j->location, sizeof j->location, "/api/v1/orders/%s", order_id);
            svc_ok(j, 202, placed_json(order_id, saga_id));
        }
        svc_idem_end(j, "orders");
    } else if (!done) {
        svc_idem_end(j, "orders");
    }
    ag_free(pl);
    return 0;
}

/* ---- reading orders ---- */

#define ORDER_COLS                                                                                 \
    "SELECT id, customer_id, status, currency, subtotal, discount, total, items,"                  \
    " shipping_address, cancellation_reason, tracking_number, saga_id, created_at, updated_at"     \
    " FROM orders"

static json_t *money(json_int_t amount, const char *currency)
{
    return json_pack("{s:I, s:s}", "amount", amount, "currency", currency);
}

static const char *col(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i);
}

static json_t *order_row(sqlite3_stmt *st)
{
    const char *cur = col(st, 3);
    json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:s?, s:s?, s:s?}", "id", col(st, 0),
                          "customerId", col(st, 1), "status", col(st, 2), "subtotal",
                          money(sqlite3_column_int64(st, 4), cur), "discount",
                          money(sqlite3_column_int64(st, 5), cur), "total",
                          money(sqlite3_column_int64(st, 6), cur), "sagaId", col(st, 11),
                          "createdAt", col(st, 12), "updatedAt", col(st, 13));
    json_object_set_new(o, "items", json_loads(col(st, 7), 0, NULL) ?: json_array());
    json_t *addr = col(st, 8) ? json_loads(col(st, 8), 0, NULL) : NULL;
    if (addr) json_object_set_new(o, "shippingAddress", addr);
    if (col(st, 9)) json_object_set_new(o, "cancellationReason", json_string(col(st, 9)));
    if (col(st, 10)) json_object_set_new(o, "trackingNumber", json_string(col(st, 10)));
    return o;
}

static int get(struct svc_job *j)
{
    static const struct svc_one one = {
        RM_ORDERS,         ORDER_COLS " WHERE id=?1 AND (?2 IS NULL OR customer_id=?2)",
        order_row,         "order",
        "Order not found", "no order with id"};
    return svc_get_one(j, &one, j->param, svc_owner_filter(j));
}

static int list(struct svc_job *j)
{
    int limit;
    svc_limit(j, j->q[2], &limit);
    enum ag_order_status s;
    if (j->q[1] && ag_order_status_parse(j->q[1], &s))
        svc_field_error(j, "/status",
                        "status must be one of draft, pending, confirmed, shipped, cancelled");
    if (svc_fields_failed(j, 400)) return 0;
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit + 1);
    /* a customer lists its own orders only (another customerId: an empty list) */
    const char *args[] = {j->q[0], j->q[1], j->q[3] ? j->q[3] : "", lim, svc_owner_filter(j)};
    json_t *rows = svc_rm_query(j->p, RM_ORDERS,
                                ORDER_COLS " WHERE (?1 IS NULL OR customer_id=?1) AND (?2 IS NULL"
                                           " OR status=?2) AND (?5 IS NULL OR customer_id=?5)"
                                           " AND id > ?3 ORDER BY id LIMIT ?4",
                                args, 5, order_row);
    if (!rows) return AG_EIO;
    j->rm_position = ag_projector_position(j->p->projector);
    return svc_ok(j, 200, svc_page(rows, limit));
}

static void view_order_owner(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    const struct ag_order *o = state;
    snprintf(ud, AG_DOM_ID_MAX, "%s", o->exists ? o->customer_id : "");
}

bool svc_owns_order(struct svc_job *j, const char *order_id)
{
    char stream[128], owner[AG_DOM_ID_MAX] = "";
    if (!svc_stream_exists(j->p, "order", order_id)) return false;
    svc_stream(stream, sizeof stream, "order", order_id);
    svc_read(j->p, &svc_order_type, stream, view_order_owner, owner, NULL);
    return owner[0] && svc_owns(j, owner);
}

static int dom_cancel(const void *st, const void *cmd, struct ag_dom_events *out,
                      struct ag_err *err)
{
    const struct ag_order *o = st;
    if (!o->exists) return ag_err_set(err, AG_ENOTFOUND, "order not found");
    return ag_order_cancel(st, cmd, out, err);
}

static int cancel(struct svc_job *j)
{
    const char *reason = json_string_value(json_object_get(j->body, "reason"));
    if (j->body && !json_is_object(j->body))
        return svc_problem(j, 400, "Invalid request", "the body must be a JSON object");
    if (json_object_get(j->body, "reason") && !reason)
        svc_field_error(j, "/reason", "reason must be a string");
    if (svc_fields_failed(j, 400)) return 0;
    if (!svc_owns_order(j, j->param))
        return svc_problem(j, 404, "Order not found", "no order with id %s", j->param);
    char stream[128];
    svc_stream(stream, sizeof stream, "order", j->param);
    struct ag_order_cancel c = {reason ? reason : "cancelled by the customer"};
    struct ag_err err;
    ag_err_clear(&err);
    int rc =
        svc_exec(j->p, &svc_order_type, stream, dom_cancel, &c, j->meta, NULL, NULL, NULL, &err);
    if (rc == AG_EDOMAIN) return svc_problem(j, 409, "Order cannot be cancelled", "%s", err.msg);
    if (rc) return svc_error(j, rc, &err);
    return svc_ok(j, 202, json_pack("{s:s, s:s}", "orderId", j->param, "status", "cancelled"));
}

static json_t *saga_row(sqlite3_stmt *st)
{
    json_t *s = json_pack("{s:s, s:s, s:s, s:s?, s:s?, s:s?}", "id", col(st, 0), "type", col(st, 1),
                          "status", col(st, 2), "currentStep", col(st, 3), "reason", col(st, 4),
                          "updatedAt", col(st, 6));
    json_object_set_new(s, "steps", json_loads(col(st, 5), 0, NULL) ?: json_array());
    return s;
}

static json_t *one_col(sqlite3_stmt *st)
{
    return json_string(col(st, 0) ? col(st, 0) : "");
}

/* The saga belongs to the customer of the order it places. */
static bool owns_saga(struct svc_job *j)
{
    if (j->who.admin) return true;
    const char *mine = svc_caller_customer(j);
    if (!mine) return false;
    const char *args[] = {j->param, mine};
    static const char sql[] = "SELECT id FROM orders WHERE saga_id=?1 AND customer_id=?2";
    json_t *rows = svc_rm_query(j->p, RM_ORDERS, sql, args, 2, one_col);
    if (rows && !json_array_size(rows) && svc_stream_exists(j->p, "saga", j->param)) {
        svc_rm_catch_up(j->p);
        json_decref(rows);
        rows = svc_rm_query(j->p, RM_ORDERS, sql, args, 2, one_col);
    }
    bool mine_too = json_array_size(rows) > 0;
    json_decref(rows);
    return mine_too;
}

static int get_saga(struct svc_job *j)
{
    static const struct svc_one one = {
        RM_SAGAS,
        "SELECT id, type, status, current_step, reason, steps, updated_at FROM sagas WHERE id=?1",
        saga_row,
        "saga",
        "Saga not found",
        "no saga with id"};
    if (!owns_saga(j)) return svc_problem(j, 404, "Saga not found", "no saga with id %s", j->param);
    return svc_get_one(j, &one, j->param, NULL);
}

/* GET /admin/sagas?status=failed */
static int list_sagas(struct svc_job *j)
{
    int limit;
    svc_limit(j, j->q[1], &limit);
    if (svc_fields_failed(j, 400)) return 0;
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit + 1);
    const char *args[] = {j->q[0], j->q[2] ? j->q[2] : "", lim};
    json_t *rows =
        svc_rm_query(j->p, RM_SAGAS,
                     "SELECT id, type, status, current_step, reason, steps, updated_at FROM sagas"
                     " WHERE (?1 IS NULL OR status=?1) AND id > ?2 ORDER BY id LIMIT ?3",
                     args, 3, saga_row);
    if (!rows) return AG_EIO;
    return svc_ok(j, 200, svc_page(rows, limit));
}

static const struct svc_route routes[] = {
    {"POST", "/api/v1/orders", SVC_OWNER, create, NULL, NULL, {NULL}},
    {"GET",
     "/api/v1/orders",
     SVC_OWNER,
     list,
     NULL,
     NULL,
     {"customerId", "status", "limit", "cursor"}},
    {"GET", "/api/v1/orders/{id}", SVC_OWNER, get, "id", "order", {NULL}},
    {"POST", "/api/v1/orders/{id}/cancel", SVC_OWNER, cancel, "id", "order", {NULL}},
    {"GET", "/api/v1/sagas/{id}", SVC_OWNER, get_saga, "id", "saga", {NULL}},
    {"GET", "/admin/sagas", SVC_ADMIN, list_sagas, NULL, NULL, {"status", "limit", "cursor"}},
};

void svc_ordering_routes(struct ag_platform *p)
{
    svc_routes(p, routes, sizeof routes / sizeof routes[0]);
}

/* ---- the orders read model ---- */

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS orders(id TEXT PRIMARY KEY, customer_id TEXT NOT NULL,"
    " status TEXT NOT NULL, currency TEXT NOT NULL, subtotal INTEGER NOT NULL DEFAULT 0,"
    " discount INTEGER NOT NULL DEFAULT 0, total INTEGER NOT NULL DEFAULT 0,"
    " items TEXT NOT NULL DEFAULT '[]', shipping_address TEXT, cancellation_reason TEXT,"
    " tracking_number TEXT, saga_id TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS orders_customer ON orders(customer_id, id);"
    "CREATE INDEX IF NOT EXISTS orders_status ON orders(status, id);";

static const char *const types[] = {
    AG_EV_ORDER_CREATED,   AG_EV_ITEM_ADDED,      AG_EV_ITEM_REMOVED,  AG_EV_ORDER_PLACED,
    AG_EV_ORDER_CONFIRMED, AG_EV_ORDER_CANCELLED, AG_EV_ORDER_SHIPPED, NULL};

static int run_sql(sqlite3 *db, const char *sql, const char *id, const char *a, const char *b,
                   const char *c, const char *ts)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return AG_EIO;
    const char *v[] = {id, a, b, c, ts};
    for (int i = 0; i < 5 && i < sqlite3_bind_parameter_count(st); i++)
        sqlite3_bind_text(st, i + 1, v[i], -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : AG_EIO;
    sqlite3_finalize(st);
    return rc;
}

static json_t *load_items(sqlite3 *db, const char *id, const char **currency_out, char *cur)
{
    sqlite3_stmt *st;
    json_t *items = NULL;
    if (sqlite3_prepare_v2(db, "SELECT items, currency FROM orders WHERE id=?", -1, &st, NULL) !=
        SQLITE_OK)
        return NULL;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        items = json_loads((const char *)sqlite3_column_text(st, 0), 0, NULL);
        snprintf(cur, 4, "%s", (const char *)sqlite3_column_text(st, 1));
        *currency_out = cur;
    }
    sqlite3_finalize(st);
    return items;
}

/* ItemAdded / ItemRemoved: rewrite the items array and the running subtotal. */
static int apply_item(sqlite3 *db, const char *id, const json_t *d, bool add, const char *ts)
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
        if (!pid || strcmp(json_string_value(json_object_get(it, "productId")) ?: "", pid) != 0)
            continue;
        found = true;
        if (!add) {
            json_array_remove(items, i);
            break;
        }
        q += json_integer_value(json_object_get(it, "quantity"));
        json_object_set_new(it, "quantity", json_integer(q));
        json_object_set_new(it, "subtotal", money(q * unit, currency));
    }
    if (add && !found)
        json_array_append_new(items, json_pack("{s:s, s:I, s:o, s:o}", "productId", pid, "quantity",
                                               q, "unitPrice", money(unit, currency), "subtotal",
                                               money(q * unit, currency)));
    json_int_t sub = 0;
    json_array_foreach(items, i, it) sub +=
        json_integer_value(json_object_get(json_object_get(it, "subtotal"), "amount"));
    char *text = json_dumps(items, JSON_COMPACT);
    char subs[32];
    snprintf(subs, sizeof subs, "%lld", (long long)sub);
    int rc =
        run_sql(db, "UPDATE orders SET items=?2, subtotal=?3, total=?3, updated_at=?5 WHERE id=?1",
                id, text, subs, NULL, ts);
    free(text);
    json_decref(items);
    return rc;
}

static int apply_placed(sqlite3 *db, const char *id, const json_t *d, const char *ts)
{
    char sub[32], disc[32], tot[32];
    snprintf(
        sub, sizeof sub, "%lld",
        (long long)json_integer_value(json_object_get(json_object_get(d, "subtotal"), "amount")));
    snprintf(
        disc, sizeof disc, "%lld",
        (long long)json_integer_value(json_object_get(json_object_get(d, "discount"), "amount")));
    snprintf(tot, sizeof tot, "%lld",
             (long long)json_integer_value(json_object_get(json_object_get(d, "total"), "amount")));
    char *addr = json_dumps(json_object_get(d, "shippingAddress"), JSON_COMPACT);
    sqlite3_stmt *st;
    int rc = AG_EIO;
    if (sqlite3_prepare_v2(db,
                           "UPDATE orders SET status='pending', subtotal=?2, discount=?3, total=?4,"
                           " shipping_address=?5, saga_id=?6, updated_at=?7 WHERE id=?1",
                           -1, &st, NULL) == SQLITE_OK) {
        const char *v[] = {
            id, sub, disc, tot, addr, json_string_value(json_object_get(d, "sagaId")), ts};
        for (int i = 0; i < 7; i++) sqlite3_bind_text(st, i + 1, v[i], -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(st) == SQLITE_DONE ? 0 : AG_EIO;
        sqlite3_finalize(st);
    }
    free(addr);
    return rc;
}

static int apply(sqlite3 *db, const struct ag_event *ev, const json_t *d, void *ud)
{
    AG_UNUSED(ud);
    char id[128], type[64], ts[32];
    snprintf(id, sizeof id, "%.*s", (int)ev->stream_len - 6, ev->stream + 6); /* "order-" */
    snprintf(type, sizeof type, "%.*s", (int)ev->type_len, ev->type);
    ag_time_rfc3339(ev->time_ns, ts);
    if (strcmp(type, AG_EV_ORDER_CREATED) == 0)
        return run_sql(db,
                       "INSERT OR IGNORE INTO orders(id, customer_id, status, currency, created_at,"
                       " updated_at) VALUES(?1, ?2, 'draft', ?3, ?5, ?5)",
                       id, json_string_value(json_object_get(d, "customerId")),
                       json_string_value(json_object_get(d, "currency")), NULL, ts);
    if (strcmp(type, AG_EV_ITEM_ADDED) == 0) return apply_item(db, id, d, true, ts);
    if (strcmp(type, AG_EV_ITEM_REMOVED) == 0) return apply_item(db, id, d, false, ts);
    if (strcmp(type, AG_EV_ORDER_PLACED) == 0) return apply_placed(db, id, d, ts);
    if (strcmp(type, AG_EV_ORDER_CONFIRMED) == 0)
        return run_sql(
            db,
            "UPDATE orders SET status='confirmed', tracking_number=?2, updated_at=?5 WHERE id=?1",
            id, json_string_value(json_object_get(d, "trackingNumber")), NULL, NULL, ts);
    if (strcmp(type, AG_EV_ORDER_CANCELLED) == 0)
        return run_sql(db,
                       "UPDATE orders SET status='cancelled', cancellation_reason=?2, "
                       "updated_at=?5 WHERE id=?1",
                       id, json_string_value(json_object_get(d, "reason")), NULL, NULL, ts);
    if (strcmp(type, AG_EV_ORDER_SHIPPED) == 0)
        return run_sql(db, "UPDATE orders SET status='shipped', updated_at=?5 WHERE id=?1", id,
                       NULL, NULL, NULL, ts);
    return 0;
}

void svc_ordering_projection(struct ag_projection *out)
{
    *out =
        (struct ag_projection){.name = "orders", .schema = schema, .types = types, .apply = apply};
}

/* ---- shipments read model ---- */

static const char ship_schema[] =
    "CREATE TABLE IF NOT EXISTS shipments(order_id TEXT PRIMARY KEY, id TEXT NOT NULL,"
    " status TEXT NOT NULL, tracking_number TEXT, address TEXT, updated_at TEXT NOT NULL);";
static const char *const ship_types[] = {AG_EV_SHIPMENT_ARRANGED, AG_EV_SHIPMENT_CANCELLED,
                                         AG_EV_SHIPMENT_DISPATCHED, NULL};

static int apply_shipment(sqlite3 *db, const struct ag_event *ev, const json_t *d, void *ud)
{
    AG_UNUSED(ud);
    char order[128], type[64], ts[32];
    snprintf(order, sizeof order, "%.*s", (int)ev->stream_len - 9,
             ev->stream + 9); /* "shipment-" */
    snprintf(type, sizeof type, "%.*s", (int)ev->type_len, ev->type);
    ag_time_rfc3339(ev->time_ns, ts);
    if (strcmp(type, AG_EV_SHIPMENT_ARRANGED) == 0) {
        char *addr = json_dumps(json_object_get(d, "address"), JSON_COMPACT);
        int rc =
            run_sql(db, "INSERT OR REPLACE INTO shipments VALUES(?1, ?2, 'arranged', ?3, ?4, ?5)",
                    order, json_string_value(json_object_get(d, "shipmentId")),
                    json_string_value(json_object_get(d, "trackingNumber")), addr, ts);
        free(addr);
        return rc;
    }
    const char *status = strcmp(type, AG_EV_SHIPMENT_CANCELLED) == 0 ? "cancelled" : "dispatched";
    return run_sql(db, "UPDATE shipments SET status=?2, updated_at=?5 WHERE order_id=?1", order,
                   status, NULL, NULL, ts);
}

void svc_shipping_projection(struct ag_projection *out)
{
    *out = (struct ag_projection){
        .name = "shipments", .schema = ship_schema, .types = ship_types, .apply = apply_shipment};
}
