/*
 * The StockItem aggregate: the units of one product on hand and reserved.
 *
 * Events: StockAdded {productId, quantity}; StockReserved {orderId, quantity};
 * StockReleased {orderId, quantity, reason}.
 * StockShipped {orderId, quantity}: reserved units left with the order (on hand and
 * reserved both go down; the reservation is over).
 *
 * Invariants: 0 ≤ reserved ≤ on_hand; reserved = Σ active reservations; one active
 * reservation per order — reserving again for the same order is a no-op, and
 * releasing an order with no active reservation is a no-op, so a retried saga step
 * or compensation never double-counts. Only active reservations are kept (a hash
 * map, O(1) lookups), so the state stays proportional to orders in flight; a
 * reserve that arrives after its release creates a new reservation, and callers
 * deduplicate late commands with their idempotency keys.
 *
 * Since issue 19 the reservation of each order lives in its own stream
 * (reservation-<orderId>, reservation.c) and the stock item keeps only counters:
 * StockHeld / StockFreed {orderId, quantity} move `reserved`, StockDispatched
 * {orderId, quantity} moves `reserved` and `on_hand`, each appended together
 * with the order's reservation event. Their quantities are applied as recorded,
 * so the state stays the same size whatever the number of orders. The map above
 * is only filled by StockReserved (logs written before the reservation streams),
 * and drains as those orders are released or shipped.
 *
 * The snapshot is {"exists", "productId", "onHand", "reserved",
 * "reservations": {orderId: quantity}}; restore checks Σ reservations ≤ reserved
 * ≤ onHand.
 */
#include <string.h>

#include "domain/internal.h"

void ag_stock_init(void *state)
{
    struct ag_stock *s = state;
    memset(s, 0, sizeof *s);
    ag__idmap_init(&s->reservations);
}

void ag_stock_free(void *state)
{
    struct ag_stock *s = state;
    ag__idmap_free(&s->reservations);
    ag_stock_init(s);
}

size_t ag_stock_bytes(const void *state)
{
    const struct ag_stock *s = state;
    return ag_dom_idmap_bytes(&s->reservations);
}

int64_t ag_stock_available(const struct ag_stock *st)
{
    return st->on_hand - st->reserved;
}

int64_t ag_stock_reservation(const struct ag_stock *st, const char *order_id)
{
    const struct ag_dom_idmap_slot *s = ag__idmap_get(&st->reservations, order_id);
    return s ? s->value : 0;
}

size_t ag_stock_reservation_count(const struct ag_stock *st)
{
    return st->reservations.n;
}

/* ---- evolve ---- */

static int on_added(struct ag_stock *s, const json_t *d)
{
    int64_t q;
    if (ag__dom_get_str(d, "productId", s->product_id, sizeof s->product_id) ||
        ag__dom_get_i64(d, "quantity", &q) || q <= 0 ||
        __builtin_add_overflow(s->on_hand, q, &s->on_hand))
        return AG_EINVAL;
    s->exists = true;
    return 0;
}

static int on_reserved(struct ag_stock *s, const json_t *d)
{
    char oid[AG_DOM_ID_MAX];
    int64_t q;
    if (ag__dom_get_str(d, "orderId", oid, sizeof oid) || ag__dom_get_i64(d, "quantity", &q) ||
        q <= 0)
        return AG_EINVAL;
    const struct ag_dom_idmap_slot *old = ag__idmap_get(&s->reservations, oid);
    if (old) /* a recorded duplicate replaces, never double-counts */
        s->reserved -= old->value;
    int rc = ag__idmap_put(&s->reservations, oid, q, false);
    if (rc == 0) s->reserved += q;
    return rc;
}

static int on_released(struct ag_stock *s, const json_t *d)
{
    char oid[AG_DOM_ID_MAX];
    if (ag__dom_get_str(d, "orderId", oid, sizeof oid)) return AG_EINVAL;
    const struct ag_dom_idmap_slot *r = ag__idmap_get(&s->reservations, oid);
    if (r) {
        s->reserved -= r->value;
        ag__idmap_del(&s->reservations, oid);
    }
    return 0;
}

static int on_shipped(struct ag_stock *s, const json_t *d)
{
    char oid[AG_DOM_ID_MAX];
    if (ag__dom_get_str(d, "orderId", oid, sizeof oid)) return AG_EINVAL;
    const struct ag_dom_idmap_slot *r = ag__idmap_get(&s->reservations, oid);
    if (r) {
        s->reserved -= r->value;
        s->on_hand -= r->value;
        ag__idmap_del(&s->reservations, oid);
    }
    return 0;
}

/* StockHeld (+1), StockFreed (-1), StockDispatched (-1, and on hand too). */
static int on_counted(struct ag_stock *s, const json_t *d, int sign, bool leaves)
{
    char oid[AG_DOM_ID_MAX];
    int64_t q, r, h = s->on_hand;
    if (ag__dom_get_str(d, "orderId", oid, sizeof oid) || ag__dom_get_i64(d, "quantity", &q) ||
        q <= 0 || __builtin_add_overflow(s->reserved, sign * q, &r) || r < 0 ||
        (leaves && __builtin_sub_overflow(h, q, &h)))
        return AG_EINVAL;
    s->reserved = r;
    s->on_hand = h;
    return 0;
}

int ag_stock_evolve(void *state, const char *type, const json_t *data)
{
    struct ag_stock *s = state;
    if (strcmp(type, AG_EV_STOCK_HELD) == 0) return on_counted(s, data, +1, false);
    if (strcmp(type, AG_EV_STOCK_FREED) == 0) return on_counted(s, data, -1, false);
    if (strcmp(type, AG_EV_STOCK_DISPATCHED) == 0) return on_counted(s, data, -1, true);
    if (strcmp(type, AG_EV_STOCK_ADDED) == 0) return on_added(s, data);
    if (strcmp(type, AG_EV_STOCK_RESERVED) == 0) return on_reserved(s, data);
    if (strcmp(type, AG_EV_STOCK_RELEASED) == 0) return on_released(s, data);
    if (strcmp(type, AG_EV_STOCK_SHIPPED) == 0) return on_shipped(s, data);
    return 0;
}

/* ---- snapshot ---- */

json_t *ag_stock_snapshot(const void *state)
{
    const struct ag_stock *s = state;
    if (!s->exists) return json_pack("{s:b}", "exists", 0);
    json_t *res = json_object();
    for (size_t i = 0; res && i < s->reservations.cap; i++) {
        const struct ag_dom_idmap_slot *r = &s->reservations.slots[i];
        if (r->key[0] && json_object_set_new(res, r->key, json_integer(r->value))) {
            json_decref(res);
            res = NULL;
        }
    }
    return json_pack("{s:b,s:s,s:I,s:I,s:o}", "exists", 1, "productId", s->product_id, "onHand",
                     (json_int_t)s->on_hand, "reserved", (json_int_t)s->reserved, "reservations",
                     res);
}

static int restore_body(struct ag_stock *s, const json_t *snap)
{
    json_t *res = json_object_get(snap, "reservations"), *v;
    const char *oid;
    int64_t reserved, legacy = 0;
    if (ag__dom_get_str(snap, "productId", s->product_id, sizeof s->product_id) ||
        ag__dom_get_i64(snap, "onHand", &s->on_hand) ||
        ag__dom_get_i64(snap, "reserved", &reserved) || !json_is_object(res))
        return AG_EINVAL;
    json_object_foreach(res, oid, v)
    {
        int rc;
        if (!json_is_integer(v) || json_integer_value(v) <= 0) return AG_EINVAL;
        if ((rc = ag__idmap_put(&s->reservations, oid, json_integer_value(v), false))) return rc;
        if (__builtin_add_overflow(legacy, json_integer_value(v), &legacy)) return AG_EINVAL;
    }
    if (legacy > reserved || reserved > s->on_hand || s->on_hand < 0) return AG_EINVAL;
    s->reserved = reserved;
    s->exists = true;
    return 0;
}

int ag_stock_restore(void *state, const json_t *snap)
{
    struct ag_stock *s = state;
    bool exists;
    ag_stock_free(s);
    if (ag__dom_get_bool(snap, "exists", &exists)) return AG_EINVAL;
    if (!exists) return 0;
    int rc = restore_body(s, snap);
    if (rc) ag_stock_free(s);
    return rc;
}

/* ---- decide ---- */

int ag_stock_add(const struct ag_stock *st, const struct ag_stock_add *cmd,
                 struct ag_dom_events *out, struct ag_err *err)
{
    char pid[AG_DOM_ID_MAX];
    int64_t sum;
    int rc;
    if ((rc = ag__dom_need(pid, sizeof pid,
                           st->exists && !cmd->product_id ? st->product_id : cmd->product_id,
                           "product id", err)))
        return rc;
    if (st->exists && strcmp(pid, st->product_id) != 0)
        return ag_err_set(err, AG_EDOMAIN, "this stock item is product %s, not %s", st->product_id,
                          pid);
    if (cmd->quantity <= 0)
        return ag_err_set(err, AG_EINVAL, "quantity must be positive (got %lld)",
                          (long long)cmd->quantity);
    if (__builtin_add_overflow(st->on_hand, cmd->quantity, &sum))
        return ag_err_set(err, AG_EINVAL, "stock on hand would overflow");
    json_t *d = json_pack("{s:s,s:I}", "productId", pid, "quantity", (json_int_t)cmd->quantity);
    return ag__dom_emit(out, AG_EV_STOCK_ADDED, d, err);
}

int ag_stock_reserve(const struct ag_stock *st, const struct ag_stock_reserve *cmd,
                     struct ag_dom_events *out, struct ag_err *err)
{
    char oid[AG_DOM_ID_MAX];
    int rc;
    if ((rc = ag__dom_need(oid, sizeof oid, cmd->order_id, "order id", err))) return rc;
    if (cmd->quantity <= 0)
        return ag_err_set(err, AG_EINVAL, "quantity must be positive (got %lld)",
                          (long long)cmd->quantity);
    if (ag__idmap_get(&st->reservations, oid)) return 0;
    int64_t avail = ag_stock_available(st);
    if (avail < cmd->quantity) {
        const char *pid = st->exists ? st->product_id : cmd->product_id ? cmd->product_id : "?";
        return ag_err_set(err, AG_EDOMAIN,
                          "insufficient stock for product %.39s: requested %lld, available %lld",
                          pid, (long long)cmd->quantity, (long long)avail);
    }
    json_t *d = json_pack("{s:s,s:I}", "orderId", oid, "quantity", (json_int_t)cmd->quantity);
    return ag__dom_emit(out, AG_EV_STOCK_RESERVED, d, err);
}

int ag_stock_release(const struct ag_stock *st, const struct ag_stock_release *cmd,
                     struct ag_dom_events *out, struct ag_err *err)
{
    char reason[256];
    const struct ag_dom_idmap_slot *r = ag__idmap_get(&st->reservations, cmd->order_id);
    if (!r) return 0;
    ag__dom_reason(reason, sizeof reason, cmd->reason, "released");
    json_t *d = json_pack("{s:s,s:I,s:s}", "orderId", r->key, "quantity", (json_int_t)r->value,
                          "reason", reason);
    return ag__dom_emit(out, AG_EV_STOCK_RELEASED, d, err);
}

int ag_stock_ship(const struct ag_stock *st, const struct ag_stock_ship *cmd,
                  struct ag_dom_events *out, struct ag_err *err)
{
    const struct ag_dom_idmap_slot *r = ag__idmap_get(&st->reservations, cmd->order_id);
    if (!r) return 0;
    json_t *d = json_pack("{s:s,s:I}", "orderId", r->key, "quantity", (json_int_t)r->value);
    return ag__dom_emit(out, AG_EV_STOCK_SHIPPED, d, err);
}

const struct ag_dom_aggregate ag_stock_aggregate = {
    "StockItem",     sizeof(struct ag_stock), ag_stock_init,    ag_stock_free,
    ag_stock_evolve, ag_stock_snapshot,       ag_stock_restore,
};
