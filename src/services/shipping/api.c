/*
 * The shipping context's API: read a shipment (by its order), and dispatch it —
 * the warehouse handing the parcel to the carrier, which moves the order from
 * confirmed to shipped and takes its reserved units off the shelves. Dispatch runs
 * idempotent commands in order (shipment, each stock item, order), so a retry after
 * a crash between them completes the rest. Delivery — the carrier reporting the
 * parcel handed over — moves a dispatched shipment and its shipped order to
 * delivered the same way (shipment first, then order; both idempotent).
 */
#include <stdio.h>
#include <string.h>

#include "services/internal.h"

static json_t *shipment_row(const struct ag_rm_row *st)
{
    return json_pack("{s:o, s:o, s:s, s:s?, s:o}", "orderId", svc_id_json(st, 0), "id",
                     svc_id_json(st, 1), "status", ag_rm_text(st, 2), "trackingNumber",
                     ag_rm_text(st, 3), "updatedAt", svc_time_json(st, 4));
}

static json_t *address_row(const struct ag_rm_row *r)
{
    char cust[AG_RM_ID_MAX];
    json_t *a = svc_pii_open_cell(r, 0, ag_rm_id(r, 1, cust), "address"); /* sealed */
    return json_pack("{s:o?}", "a", a);
}

/* The address a shipment goes to is its order's shipping address (the saga arranges
 * it from the placed order, whose address no longer changes): the orders read
 * model keeps it, the shipments one does not store it again (issue 19). */
static void add_address(struct svc_env *env, json_t *shipment)
{
    const char *args[] = {json_string_value(json_object_get(shipment, "orderId"))};
    json_t *rows = svc_rm_query_ids(env, RM_ORDERS,
                                    "SELECT shipping_address, customer_id FROM orders WHERE id=?1",
                                    args, 1, SVC_ID(0), address_row);
    json_t *a = json_object_get(json_array_get(rows, 0), "a");
    if (a) json_object_set(shipment, "address", a);
    json_decref(rows);
}

/* The owner's (the order's customer's) or an admin's. */
static int get(struct svc_job *j)
{
    static const char sql[] =
        "SELECT order_id, id, status, tracking_number, updated_at FROM shipments WHERE order_id=?1";
    if (!svc_owns_order(j, j->param))
        return svc_problem(j, 404, "Shipment not found", "no shipment for order %s", j->param);
    const char *args[] = {j->param};
    json_t *rows = svc_rm_query_ids(j->env, RM_SHIPMENTS, sql, args, 1, SVC_ID(0), shipment_row);
    if (rows && !json_array_size(rows) && svc_stream_exists(j->env, "shipment", j->param)) {
        svc_rm_catch_up_rm(j->env, RM_SHIPMENTS); /* just written: wait for it */
        json_decref(rows);
        rows = svc_rm_query_ids(j->env, RM_SHIPMENTS, sql, args, 1, SVC_ID(0), shipment_row);
    }
    if (!rows) return AG_EIO;
    json_t *s = json_incref(json_array_get(rows, 0));
    json_decref(rows);
    if (!s) return svc_problem(j, 404, "Shipment not found", "no shipment for order %s", j->param);
    add_address(j->env, s);
    j->rm_position = ag_projector_position(j->env->projector);
    j->rm_read = true;
    return svc_ok(j, 200, s);
}

static int d_dispatch(const void *st, const void *cmd, struct ag_dom_events *out,
                      struct ag_err *err)
{
    return ag_shipment_dispatch(st, cmd, out, err);
}

static int d_ship(const void *st, const void *cmd, struct ag_dom_events *out, struct ag_err *err)
{
    return ag_order_ship(st, cmd, out, err);
}

struct order_lines {
    enum ag_order_status status;
    size_t n;
    char product[100][AG_DOM_ID_MAX];
};

static void view_order(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    const struct ag_order *o = state;
    struct order_lines *v = ud;
    v->status = o->status;
    v->n = o->nlines < 100 ? o->nlines : 100;
    for (size_t i = 0; i < v->n; i++) memcpy(v->product[i], o->lines[i].product_id, AG_DOM_ID_MAX);
}

static int d_stock_ship(const void *stock, const void *res, const void *cmd,
                        struct ag_dom_events *out_stock, struct ag_dom_events *out_res,
                        struct ag_err *err)
{
    return ag_reservation_ship(stock, res, cmd, out_stock, out_res, err);
}

/* The order's reserved units leave the warehouse (each stock item with the order's
 * reservation line, in one append; idempotently). */
static int ship_stock(struct svc_job *j, const struct order_lines *v, struct ag_err *err)
{
    int rc = 0;
    for (size_t i = 0; i < v->n && !rc; i++) {
        struct ag_reservation_ship s = {j->param, v->product[i]};
        rc = svc_exec2(j->env,
                       &(struct svc_cmd2){&svc_stock_type, v->product[i], &svc_reservation_type,
                                          j->param, d_stock_ship, &s, j->meta},
                       err);
    }
    return rc;
}

/* POST /api/v1/shipments/{orderId}/dispatch */
static int dispatch(struct svc_job *j)
{
    struct ag_err err;
    ag_err_clear(&err);
    struct order_lines *v = ag_calloc(1, sizeof *v);
    if (!v) return AG_ENOMEM;
    if (!svc_stream_exists(j->env, "order", j->param)) {
        ag_free(v);
        return svc_problem(j, 404, "Order not found", "no order with id %s", j->param);
    }
    svc_read(j->env, &svc_order_type, j->param, view_order, v, NULL);
    if (v->status != AG_ORDER_CONFIRMED && v->status != AG_ORDER_SHIPPED) {
        svc_problem(j, 409, "Order cannot be shipped", "order %s is %s, not confirmed", j->param,
                    ag_order_status_name(v->status));
        ag_free(v);
        return 0;
    }
    struct ag_shipment_dispatch d = {svc_now_ms()};
    int rc = svc_exec(
        j->env,
        &(struct svc_cmd){&svc_shipment_type, j->param, d_dispatch, &d, j->meta, NULL, NULL}, &err);
    if (!rc) rc = ship_stock(j, v, &err);
    ag_free(v);
    struct ag_order_ship s = {svc_now_ms()};
    if (!rc)
        rc = svc_exec(j->env,
                      &(struct svc_cmd){&svc_order_type, j->param, d_ship, &s, j->meta, NULL, NULL},
                      &err);
    if (rc == AG_EDOMAIN)
        return svc_problem(j, 409, "Shipment cannot be dispatched", "%s", err.msg);
    if (rc) return svc_error(j, rc, &err);
    return svc_ok(j, 202,
                  json_pack("{s:s, s:s, s:s}", "orderId", j->param, "status", "dispatched",
                            "orderStatus", "shipped"));
}

static int d_deliver(const void *st, const void *cmd, struct ag_dom_events *out, struct ag_err *err)
{
    return ag_shipment_deliver(st, cmd, out, err);
}

static int d_order_deliver(const void *st, const void *cmd, struct ag_dom_events *out,
                           struct ag_err *err)
{
    return ag_order_deliver(st, cmd, out, err);
}

/* POST /api/v1/shipments/{orderId}/deliver (admin or carrier) */
static int deliver(struct svc_job *j)
{
    struct ag_err err;
    ag_err_clear(&err);
    static const char *const none[] = {NULL};
    if (svc_body_object(j, none)) return svc_fields_failed(j, 400), 0;
    struct order_lines *v = ag_calloc(1, sizeof *v);
    if (!v) return AG_ENOMEM;
    if (!svc_stream_exists(j->env, "order", j->param)) {
        ag_free(v);
        return svc_problem(j, 404, "Order not found", "no order with id %s", j->param);
    }
    svc_read(j->env, &svc_order_type, j->param, view_order, v, NULL);
    enum ag_order_status st = v->status;
    ag_free(v);
    if (st != AG_ORDER_SHIPPED && st != AG_ORDER_DELIVERED)
        return svc_problem(j, 409, "Order cannot be delivered", "order %s is %s, not shipped",
                           j->param, ag_order_status_name(st));
    struct ag_shipment_deliver d = {svc_now_ms()};
    int rc = svc_exec(
        j->env, &(struct svc_cmd){&svc_shipment_type, j->param, d_deliver, &d, j->meta, NULL, NULL},
        &err);
    struct ag_order_deliver od = {svc_now_ms()};
    if (!rc)
        rc = svc_exec(
            j->env,
            &(struct svc_cmd){&svc_order_type, j->param, d_order_deliver, &od, j->meta, NULL, NULL},
            &err);
    if (rc == AG_EDOMAIN) return svc_problem(j, 409, "Shipment cannot be delivered", "%s", err.msg);
    if (rc) return svc_error(j, rc, &err);
    return svc_ok(j, 202,
                  json_pack("{s:s, s:s, s:s}", "orderId", j->param, "status", "delivered",
                            "orderStatus", "delivered"));
}

static const struct svc_route routes[] = {
    {"GET", "/api/v1/shipments/{orderId}", SVC_OWNER, get, "orderId", "order", {NULL}},
    {"POST",
     "/api/v1/shipments/{orderId}/dispatch",
     SVC_ADMIN,
     dispatch,
     "orderId",
     "order",
     {NULL}},
    {"POST",
     "/api/v1/shipments/{orderId}/deliver",
     SVC_CARRIER,
     deliver,
     "orderId",
     "order",
     {NULL}},
};

const struct svc_context svc_shipping_context = {
    "shipping", routes, sizeof routes / sizeof routes[0], svc_shipping_projection, RM_SHIPMENTS};
