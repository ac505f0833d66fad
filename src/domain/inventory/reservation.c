/*
 * The Reservation aggregate (reservation-<orderId>): the stock one order holds,
 * a line per product, beside the StockItem counters, so that a popular
 * product's state does not grow with the orders waiting for dispatch.
 *
 * Events: ReservationMade {productId, quantity}; ReservationReleased {productId,
 * reason}; ReservationShipped {productId}. Each is appended in one multi-stream
 * append with the stock item's counter event (StockHeld / StockFreed /
 * StockDispatched {orderId, quantity}; StockFreed also carries the reason, as the
 * published StockReleased does) at both streams' exact expected
 * versions, so the counters and the lines never disagree, after a crash or
 * under racing saga runs.
 *
 * Line states: held (quantity > 0), released (0) and shipped (-1). Holding again
 * a held or shipped line is a no-op; a released line can be held again (a
 * retried reservation step gives back what it took, then takes it anew, exactly
 * as before); releasing or shipping a line that is not held is a no-op. So the
 * stock's `reserved` is exactly Σ held lines over all orders.
 *
 * The stock rules and messages (quantity, insufficient stock, an order that
 * already holds an old-model reservation in the stock item's map) are
 * ag_stock_reserve's, checked by calling it; old reservations are released and
 * shipped with the old events.
 */
#include <string.h>

#include "domain/internal.h"

void ag_reservation_init(void *state)
{
    struct ag_reservation *r = state;
    memset(r, 0, sizeof *r);
    ag__idmap_init(&r->lines);
}

void ag_reservation_free(void *state)
{
    struct ag_reservation *r = state;
    ag__idmap_free(&r->lines);
    ag_reservation_init(r);
}

size_t ag_reservation_bytes(const void *state)
{
    const struct ag_reservation *r = state;
    return ag_dom_idmap_bytes(&r->lines);
}

int64_t ag_reservation_line(const struct ag_reservation *r, const char *product_id)
{
    const struct ag_dom_idmap_slot *s = ag__idmap_get(&r->lines, product_id);
    return s ? s->value : AG_RESERVATION_RELEASED;
}

int ag_reservation_evolve(void *state, const char *type, const json_t *data)
{
    struct ag_reservation *r = state;
    char pid[AG_DOM_ID_MAX];
    int64_t v;
    if (strcmp(type, AG_EV_RESERVATION_MADE) == 0) {
        if (ag__dom_get_i64(data, "quantity", &v) || v <= 0) return AG_EINVAL;
    } else if (strcmp(type, AG_EV_RESERVATION_RELEASED) == 0) {
        v = AG_RESERVATION_RELEASED;
    } else if (strcmp(type, AG_EV_RESERVATION_SHIPPED) == 0) {
        v = AG_RESERVATION_SHIPPED;
    } else {
        return 0;
    }
    if (ag__dom_get_str(data, "productId", pid, sizeof pid)) return AG_EINVAL;
    r->exists = true;
    return ag__idmap_put(&r->lines, pid, v, false);
}

json_t *ag_reservation_snapshot(const void *state)
{
    const struct ag_reservation *r = state;
    if (!r->exists) return json_pack("{s:b}", "exists", 0);
    json_t *lines = json_object();
    for (size_t i = 0; lines && i < r->lines.cap; i++) {
        const struct ag_dom_idmap_slot *s = &r->lines.slots[i];
        if (s->key[0] && json_object_set_new(lines, s->key, json_integer(s->value))) {
            json_decref(lines);
            lines = NULL;
        }
    }
    return json_pack("{s:b,s:o}", "exists", 1, "lines", lines);
}

int ag_reservation_restore(void *state, const json_t *snap)
{
    struct ag_reservation *r = state;
    json_t *lines = json_object_get(snap, "lines"), *v;
    const char *pid;
    bool exists;
    int rc = 0;
    ag_reservation_free(r);
    if (ag__dom_get_bool(snap, "exists", &exists)) return AG_EINVAL;
    if (!exists) return 0;
    if (!json_is_object(lines)) return AG_EINVAL;
    json_object_foreach(lines, pid, v)
    {
        if (!json_is_integer(v) || json_integer_value(v) < AG_RESERVATION_SHIPPED) rc = AG_EINVAL;
        if (!rc) rc = ag__idmap_put(&r->lines, pid, json_integer_value(v), false);
        if (rc) break;
    }
    if (rc)
        ag_reservation_free(r);
    else
        r->exists = true;
    return rc;
}

/* Push the counter event onto the stock and the line event onto the reservation. */
static int emit_pair(struct ag_dom_events *out_stock, const char *stock_type, json_t *sd,
                     struct ag_dom_events *out_res, const char *res_type, json_t *rd,
                     struct ag_err *err)
{
    int rc = ag__dom_emit(out_stock, stock_type, sd, err);
    if (rc) {
        json_decref(rd);
        return rc;
    }
    return ag__dom_emit(out_res, res_type, rd, err);
}

int ag_reservation_hold(const struct ag_stock *stock, const struct ag_reservation *res,
                        const struct ag_reservation_hold *cmd, struct ag_dom_events *out_stock,
                        struct ag_dom_events *out_res, struct ag_err *err)
{
    char pid[AG_DOM_ID_MAX];
    int rc;
    if ((rc = ag__dom_need(pid, sizeof pid, cmd->product_id, "product id", err))) return rc;
    if (ag_reservation_line(res, pid) != AG_RESERVATION_RELEASED) return 0;
    struct ag_dom_events probe;
    ag_dom_events_init(&probe);
    struct ag_stock_reserve r = {cmd->order_id, cmd->quantity, pid};
    rc = ag_stock_reserve(stock, &r, &probe, err);
    size_t n = probe.n;
    ag_dom_events_free(&probe);
    if (rc || n == 0) return rc;
    return emit_pair(
        out_stock, AG_EV_STOCK_HELD,
        json_pack("{s:s,s:I}", "orderId", cmd->order_id, "quantity", (json_int_t)cmd->quantity),
        out_res, AG_EV_RESERVATION_MADE,
        json_pack("{s:s,s:I}", "productId", pid, "quantity", (json_int_t)cmd->quantity), err);
}

int ag_reservation_release(const struct ag_stock *stock, const struct ag_reservation *res,
                           const struct ag_reservation_release *cmd,
                           struct ag_dom_events *out_stock, struct ag_dom_events *out_res,
                           struct ag_err *err)
{
    const char *pid = cmd->product_id ? cmd->product_id : "";
    int64_t held = ag_reservation_line(res, pid);
    if (held <= 0) { /* an old-model reservation, or nothing held */
        struct ag_stock_release r = {cmd->order_id, cmd->reason};
        return ag_stock_release(stock, &r, out_stock, err);
    }
    char reason[256];
    ag__dom_reason(reason, sizeof reason, cmd->reason, "released");
    return emit_pair(out_stock, AG_EV_STOCK_FREED,
                     json_pack("{s:s,s:I,s:s}", "orderId", cmd->order_id, "quantity",
                               (json_int_t)held, "reason", reason),
                     out_res, AG_EV_RESERVATION_RELEASED,
                     json_pack("{s:s,s:s}", "productId", pid, "reason", reason), err);
}

int ag_reservation_ship(const struct ag_stock *stock, const struct ag_reservation *res,
                        const struct ag_reservation_ship *cmd, struct ag_dom_events *out_stock,
                        struct ag_dom_events *out_res, struct ag_err *err)
{
    const char *pid = cmd->product_id ? cmd->product_id : "";
    int64_t held = ag_reservation_line(res, pid);
    if (held <= 0) {
        struct ag_stock_ship s = {cmd->order_id};
        return ag_stock_ship(stock, &s, out_stock, err);
    }
    return emit_pair(out_stock, AG_EV_STOCK_DISPATCHED,
                     json_pack("{s:s,s:I}", "orderId", cmd->order_id, "quantity", (json_int_t)held),
                     out_res, AG_EV_RESERVATION_SHIPPED, json_pack("{s:s}", "productId", pid), err);
}

const struct ag_dom_aggregate ag_reservation_aggregate = {
    "Reservation",          sizeof(struct ag_reservation), ag_reservation_init,
    ag_reservation_free,    ag_reservation_evolve,         ag_reservation_snapshot,
    ag_reservation_restore,
};
