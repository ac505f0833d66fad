/*
 * The Order aggregate.
 *
 * Lifecycle: draft → pending (OrderPlaced; the PlaceOrder saga runs) → confirmed
 * → shipped → delivered, or draft/pending → cancelled. Only a draft changes its lines.
 *
 * Events: OrderCreated {orderId, customerId, currency}; ItemAdded {productId,
 * quantity, unitPrice}; ItemRemoved {productId}; OrderPlaced {shippingAddress,
 * shippingAddressId?, subtotal, discount, total, sagaId} (shippingAddressId: the
 * customer's saved address the shipping address was taken from, when it was); OrderConfirmed
 * {trackingNumber}; OrderCancelled {reason}; OrderShipped {shippedAt}; OrderDelivered
 * {deliveredAt}.
 *
 * State: one line per product (adding a product again adds to its quantity at the
 * same unit price), kept in the order first added; `subtotal` tracks Σ lines while
 * the order is a draft and OrderPlaced fixes subtotal, discount and total from the
 * pricing quote, which place checks against the lines (the quote must price exactly
 * these lines and total = subtotal - discount).
 *
 * The snapshot is {"exists", "orderId", "customerId", "currency", "status",
 * "lines", "shippingAddress"?, "subtotal", "discount", "total",
 * "cancellationReason", "trackingNumber", "sagaId"}.
 */
#include <string.h>

#include "domain/internal.h"

static const char *const status_names[] = {"draft",   "pending",   "confirmed",
                                           "shipped", "cancelled", "delivered"};

const char *ag_order_status_name(enum ag_order_status s)
{
    return (unsigned)s < AG_ARRAY_SIZE(status_names) ? status_names[s] : "unknown";
}

int ag_order_status_parse(const char *name, enum ag_order_status *out)
{
    for (size_t i = 0; name && i < AG_ARRAY_SIZE(status_names); i++)
        if (strcmp(name, status_names[i]) == 0) {
            *out = (enum ag_order_status)i;
            return 0;
        }
    return AG_EINVAL;
}

void ag_order_init(void *state)
{
    memset(state, 0, sizeof(struct ag_order));
}

void ag_order_free(void *state)
{
    struct ag_order *o = state;
    ag_free(o->lines);
    ag_order_init(o);
}

size_t ag_order_bytes(const void *state)
{
    const struct ag_order *o = state;
    return ag_dom_heap_block(o->cap * sizeof *o->lines);
}

static struct ag_price_line *find_line(const struct ag_order *o, const char *product_id)
{
    for (size_t i = 0; product_id && i < o->nlines; i++)
        if (strcmp(o->lines[i].product_id, product_id) == 0) return &o->lines[i];
    return NULL;
}

const struct ag_price_line *ag_order_line(const struct ag_order *st, const char *product_id)
{
    return find_line(st, product_id);
}

/* Σ quantity × unit price in the order's currency; AG_EINVAL on overflow. */
static int lines_subtotal(const struct ag_order *o, struct ag_money *sub)
{
    *sub = ag_money_zero(o->currency);
    for (size_t i = 0; i < o->nlines; i++) {
        struct ag_money line;
        if (ag_money_mul(&o->lines[i].unit_price, o->lines[i].quantity, &line, NULL) ||
            ag_money_add(sub, &line, sub, NULL))
            return AG_EINVAL;
    }
    return 0;
}

/* ---- evolve ---- */

static int on_created(struct ag_order *o, const json_t *d)
{
    if (ag__dom_get_str(d, "orderId", o->id, sizeof o->id) ||
        ag__dom_get_str(d, "customerId", o->customer_id, sizeof o->customer_id) ||
        ag__dom_get_str(d, "currency", o->currency, sizeof o->currency) ||
        !ag_currency_valid(o->currency))
        return AG_EINVAL;
    o->exists = true;
    o->status = AG_ORDER_DRAFT;
    o->subtotal = o->discount = o->total = ag_money_zero(o->currency);
    return 0;
}

static int append_line(struct ag_order *o, const struct ag_price_line *l)
{
    if (o->nlines == o->cap) {
        size_t ncap = o->cap ? o->cap * 2 : 4;
        struct ag_price_line *v = ag_realloc(o->lines, ncap * sizeof *v);
        if (!v) return AG_ENOMEM;
        o->lines = v;
        o->cap = ncap;
    }
    o->lines[o->nlines++] = *l;
    return 0;
}

static int refresh_totals(struct ag_order *o)
{
    if (lines_subtotal(o, &o->subtotal)) return AG_EINVAL;
    o->discount = ag_money_zero(o->currency);
    o->total = o->subtotal;
    return 0;
}

static int on_item_added(struct ag_order *o, const json_t *d)
{
    struct ag_price_line l;
    memset(&l, 0, sizeof l);
    if (ag__dom_get_str(d, "productId", l.product_id, sizeof l.product_id) ||
        ag__dom_get_i64(d, "quantity", &l.quantity) ||
        ag__dom_get_money(d, "unitPrice", &l.unit_price) || l.quantity <= 0)
        return AG_EINVAL;
    struct ag_price_line *cur = find_line(o, l.product_id);
    int rc;
    if (cur) {
        if (__builtin_add_overflow(cur->quantity, l.quantity, &cur->quantity)) return AG_EINVAL;
    } else if ((rc = append_line(o, &l))) {
        return rc;
    }
    return refresh_totals(o);
}

static int on_item_removed(struct ag_order *o, const json_t *d)
{
    char pid[AG_DOM_ID_MAX];
    if (ag__dom_get_str(d, "productId", pid, sizeof pid)) return AG_EINVAL;
    struct ag_price_line *l = find_line(o, pid);
    if (l) {
        size_t i = (size_t)(l - o->lines);
        memmove(l, l + 1, (o->nlines - i - 1) * sizeof *l);
        o->nlines--;
    }
    return refresh_totals(o);
}

static int on_placed(struct ag_order *o, const json_t *d)
{
    if (ag__dom_get_address(d, "shippingAddress", &o->shipping_address) ||
        ag__dom_get_money(d, "subtotal", &o->subtotal) ||
        ag__dom_get_money(d, "discount", &o->discount) ||
        ag__dom_get_money(d, "total", &o->total) ||
        ag__dom_get_str_opt(d, "sagaId", o->saga_id, sizeof o->saga_id) ||
        ag__dom_get_str_opt(d, "shippingAddressId", o->shipping_address_id,
                            sizeof o->shipping_address_id))
        return AG_EINVAL;
    o->has_address = true;
    o->status = AG_ORDER_PENDING;
    return 0;
}

static int on_status(struct ag_order *o, enum ag_order_status s, const json_t *d, const char *key,
                     char *dst, size_t cap)
{
    if (key && ag__dom_get_str_opt(d, key, dst, cap)) return AG_EINVAL;
    o->status = s;
    return 0;
}

int ag_order_evolve(void *state, const char *type, const json_t *data)
{
    struct ag_order *o = state;
    if (strcmp(type, AG_EV_ORDER_CREATED) == 0) return on_created(o, data);
    if (strcmp(type, AG_EV_ITEM_ADDED) == 0) return on_item_added(o, data);
    if (strcmp(type, AG_EV_ITEM_REMOVED) == 0) return on_item_removed(o, data);
    if (strcmp(type, AG_EV_ORDER_PLACED) == 0) return on_placed(o, data);
    if (strcmp(type, AG_EV_ORDER_CONFIRMED) == 0)
        return on_status(o, AG_ORDER_CONFIRMED, data, "trackingNumber", o->tracking_number,
                         sizeof o->tracking_number);
    if (strcmp(type, AG_EV_ORDER_CANCELLED) == 0)
        return on_status(o, AG_ORDER_CANCELLED, data, "reason", o->cancellation_reason,
                         sizeof o->cancellation_reason);
    if (strcmp(type, AG_EV_ORDER_SHIPPED) == 0)
        return on_status(o, AG_ORDER_SHIPPED, data, NULL, NULL, 0);
    if (strcmp(type, AG_EV_ORDER_DELIVERED) == 0)
        return on_status(o, AG_ORDER_DELIVERED, data, NULL, NULL, 0);
    return 0;
}

/* ---- snapshot ---- */

static json_t *line_json(const struct ag_price_line *l)
{
    return json_pack("{s:s,s:I,s:o}", "productId", l->product_id, "quantity",
                     (json_int_t)l->quantity, "unitPrice", ag_money_to_json(&l->unit_price));
}

json_t *ag_order_snapshot(const void *state)
{
    const struct ag_order *o = state;
    if (!o->exists) return json_pack("{s:b}", "exists", 0);
    json_t *lines = json_array();
    for (size_t i = 0; lines && i < o->nlines; i++)
        if (json_array_append_new(lines, line_json(&o->lines[i]))) {
            json_decref(lines);
            lines = NULL;
        }
    json_t *s = json_pack("{s:b,s:s,s:s,s:s,s:s,s:o,s:o,s:o,s:o,s:s,s:s,s:s}", "exists", 1,
                          "orderId", o->id, "customerId", o->customer_id, "currency", o->currency,
                          "status", ag_order_status_name(o->status), "lines", lines, "subtotal",
                          ag_money_to_json(&o->subtotal), "discount",
                          ag_money_to_json(&o->discount), "total", ag_money_to_json(&o->total),
                          "cancellationReason", o->cancellation_reason, "trackingNumber",
                          o->tracking_number, "sagaId", o->saga_id);
    if (s && o->shipping_address_id[0] &&
        json_object_set_new(s, "shippingAddressId", json_string(o->shipping_address_id))) {
        json_decref(s);
        return NULL;
    }
    if (s && o->has_address &&
        json_object_set_new(s, "shippingAddress", ag_address_to_json(&o->shipping_address))) {
        json_decref(s);
        return NULL;
    }
    return s;
}

static int restore_body(struct ag_order *o, const json_t *snap)
{
    json_t *lines = json_object_get(snap, "lines");
    const char *status = json_string_value(json_object_get(snap, "status"));
    int rc;
    if (on_created(o, snap) || !json_is_array(lines) || ag_order_status_parse(status, &o->status))
        return AG_EINVAL;
    for (size_t i = 0; i < json_array_size(lines); i++)
        if ((rc = on_item_added(o, json_array_get(lines, i)))) return rc;
    if (ag__dom_get_money(snap, "subtotal", &o->subtotal) ||
        ag__dom_get_money(snap, "discount", &o->discount) ||
        ag__dom_get_money(snap, "total", &o->total) ||
        ag__dom_get_str_opt(snap, "cancellationReason", o->cancellation_reason,
                            sizeof o->cancellation_reason) ||
        ag__dom_get_str_opt(snap, "trackingNumber", o->tracking_number,
                            sizeof o->tracking_number) ||
        ag__dom_get_str_opt(snap, "sagaId", o->saga_id, sizeof o->saga_id) ||
        ag__dom_get_str_opt(snap, "shippingAddressId", o->shipping_address_id,
                            sizeof o->shipping_address_id))
        return AG_EINVAL;
    if (json_object_get(snap, "shippingAddress")) {
        if (ag__dom_get_address(snap, "shippingAddress", &o->shipping_address)) return AG_EINVAL;
        o->has_address = true;
    }
    return 0;
}

int ag_order_restore(void *state, const json_t *snap)
{
    struct ag_order *o = state;
    bool exists;
    ag_order_free(o);
    if (ag__dom_get_bool(snap, "exists", &exists)) return AG_EINVAL;
    if (!exists) return 0;
    int rc = restore_body(o, snap);
    if (rc) ag_order_free(o);
    return rc;
}

/* ---- decide ---- */

int ag_order_create(const struct ag_order *st, const struct ag_order_create *cmd,
                    struct ag_dom_events *out, struct ag_err *err)
{
    char id[AG_DOM_ID_MAX], cid[AG_DOM_ID_MAX];
    int rc;
    if (st->exists) return ag_err_set(err, AG_EDOMAIN, "order %s already exists", st->id);
    if ((rc = ag__dom_need(id, sizeof id, cmd->id, "order id", err)) ||
        (rc = ag__dom_need(cid, sizeof cid, cmd->customer_id, "customer id", err)))
        return rc;
    if (!ag_currency_valid(cmd->currency))
        return ag_err_set(err, AG_EINVAL, "currency must be a 3-letter ISO 4217 code");
    json_t *d =
        json_pack("{s:s,s:s,s:s}", "orderId", id, "customerId", cid, "currency", cmd->currency);
    return ag__dom_emit(out, AG_EV_ORDER_CREATED, d, err);
}

static int need_order(const struct ag_order *st, struct ag_err *err)
{
    if (!st->exists) return ag_err_set(err, AG_EDOMAIN, "order does not exist");
    return 0;
}

static int need_draft(const struct ag_order *st, struct ag_err *err)
{
    int rc = need_order(st, err);
    if (rc == 0 && st->status != AG_ORDER_DRAFT)
        rc = ag_err_set(err, AG_EDOMAIN, "order %s is %s: only a draft order can change", st->id,
                        ag_order_status_name(st->status));
    return rc;
}

static int check_item(const struct ag_order *st, const struct ag_order_add_item *cmd,
                      struct ag_err *err)
{
    if (cmd->quantity <= 0)
        return ag_err_set(err, AG_EINVAL, "quantity must be positive (got %lld)",
                          (long long)cmd->quantity);
    if (cmd->unit_price.amount < 0)
        return ag_err_set(err, AG_EINVAL, "unit price must not be negative");
    if (strcmp(cmd->unit_price.currency, st->currency) != 0)
        return ag_err_set(err, AG_EDOMAIN, "order %s is in %s, the item is priced in %.3s", st->id,
                          st->currency, cmd->unit_price.currency);
    const struct ag_price_line *cur = find_line(st, cmd->product_id);
    int64_t sum;
    if (cur && cur->unit_price.amount != cmd->unit_price.amount)
        return ag_err_set(err, AG_EDOMAIN, "product %s is already in order %s at %lld %s",
                          cur->product_id, st->id, (long long)cur->unit_price.amount, st->currency);
    if (cur && __builtin_add_overflow(cur->quantity, cmd->quantity, &sum))
        return ag_err_set(err, AG_EINVAL, "quantity overflow");
    return 0;
}

int ag_order_add_item(const struct ag_order *st, const struct ag_order_add_item *cmd,
                      struct ag_dom_events *out, struct ag_err *err)
{
    char pid[AG_DOM_ID_MAX];
    int rc;
    if ((rc = need_draft(st, err)) ||
        (rc = ag__dom_need(pid, sizeof pid, cmd->product_id, "product id", err)) ||
        (rc = check_item(st, cmd, err)))
        return rc;
    json_t *d = json_pack("{s:s,s:I,s:o}", "productId", pid, "quantity", (json_int_t)cmd->quantity,
                          "unitPrice", ag_money_to_json(&cmd->unit_price));
    return ag__dom_emit(out, AG_EV_ITEM_ADDED, d, err);
}

int ag_order_remove_item(const struct ag_order *st, const struct ag_order_remove_item *cmd,
                         struct ag_dom_events *out, struct ag_err *err)
{
    int rc = need_draft(st, err);
    if (rc || !find_line(st, cmd->product_id)) return rc;
    return ag__dom_emit(out, AG_EV_ITEM_REMOVED, json_pack("{s:s}", "productId", cmd->product_id),
                        err);
}

/* The quote must price exactly these lines, in the order's currency. */
static int check_quote(const struct ag_order *st, const struct ag_price_quote *q,
                       struct ag_err *err)
{
    struct ag_money sub, total;
    if (lines_subtotal(st, &sub))
        return ag_err_set(err, AG_EINVAL, "order %s: subtotal overflows", st->id);
    if (strcmp(q->subtotal.currency, st->currency) || strcmp(q->discount.currency, st->currency) ||
        strcmp(q->total.currency, st->currency))
        return ag_err_set(err, AG_EDOMAIN, "quote currency does not match order currency %s",
                          st->currency);
    if (q->subtotal.amount != sub.amount)
        return ag_err_set(err, AG_EDOMAIN,
                          "quote subtotal %lld does not match the order lines (%lld %s)",
                          (long long)q->subtotal.amount, (long long)sub.amount, st->currency);
    if (q->discount.amount < 0 || q->discount.amount > sub.amount)
        return ag_err_set(err, AG_EDOMAIN,
                          "quote discount %lld must be between 0 and the subtotal %lld",
                          (long long)q->discount.amount, (long long)sub.amount);
    if (ag_money_sub(&sub, &q->discount, &total, NULL) || total.amount != q->total.amount)
        return ag_err_set(err, AG_EDOMAIN, "quote total %lld must equal subtotal - discount (%lld)",
                          (long long)q->total.amount, (long long)total.amount);
    return 0;
}

int ag_order_place(const struct ag_order *st, const struct ag_order_place *cmd,
                   struct ag_dom_events *out, struct ag_err *err)
{
    char saga[AG_DOM_ID_MAX];
    int rc;
    if ((rc = need_draft(st, err))) return rc;
    if (st->nlines == 0) return ag_err_set(err, AG_EDOMAIN, "cannot place an empty order");
    if (!cmd->shipping_address)
        return ag_err_set(err, AG_EDOMAIN, "a shipping address is required to place an order");
    if ((rc = ag__dom_address_check(cmd->shipping_address, "/shippingAddress", err)) ||
        (rc = ag__dom_need(saga, sizeof saga, cmd->saga_id, "saga id", err)) ||
        (rc = check_quote(st, &cmd->quote, err)))
        return rc;
    json_t *d = json_pack("{s:o,s:o,s:o,s:o,s:s}", "shippingAddress",
                          ag_address_to_json(cmd->shipping_address), "subtotal",
                          ag_money_to_json(&cmd->quote.subtotal), "discount",
                          ag_money_to_json(&cmd->quote.discount), "total",
                          ag_money_to_json(&cmd->quote.total), "sagaId", saga);
    if (d && cmd->shipping_address_id && cmd->shipping_address_id[0] &&
        json_object_set_new(d, "shippingAddressId", json_string(cmd->shipping_address_id))) {
        json_decref(d);
        d = NULL;
    }
    return ag__dom_emit(out, AG_EV_ORDER_PLACED, d, err);
}

int ag_order_confirm(const struct ag_order *st, const struct ag_order_confirm *cmd,
                     struct ag_dom_events *out, struct ag_err *err)
{
    char tn[64];
    int rc = need_order(st, err);
    if (rc || st->status == AG_ORDER_CONFIRMED || st->status == AG_ORDER_SHIPPED ||
        st->status == AG_ORDER_DELIVERED)
        return rc;
    if (st->status != AG_ORDER_PENDING)
        return ag_err_set(err, AG_EDOMAIN, "cannot confirm a %s order",
                          ag_order_status_name(st->status));
    tn[0] = '\0';
    if (cmd->tracking_number && cmd->tracking_number[0] &&
        (rc = ag__dom_need(tn, sizeof tn, cmd->tracking_number, "tracking number", err)))
        return rc;
    return ag__dom_emit(out, AG_EV_ORDER_CONFIRMED, json_pack("{s:s}", "trackingNumber", tn), err);
}

int ag_order_cancel(const struct ag_order *st, const struct ag_order_cancel *cmd,
                    struct ag_dom_events *out, struct ag_err *err)
{
    char reason[256];
    int rc = need_order(st, err);
    if (rc || st->status == AG_ORDER_CANCELLED) return rc;
    if (st->status != AG_ORDER_DRAFT && st->status != AG_ORDER_PENDING)
        return ag_err_set(err, AG_EDOMAIN, "cannot cancel a %s order",
                          ag_order_status_name(st->status));
    ag__dom_reason(reason, sizeof reason, cmd ? cmd->reason : NULL, "cancelled");
    return ag__dom_emit(out, AG_EV_ORDER_CANCELLED, json_pack("{s:s}", "reason", reason), err);
}

int ag_order_ship(const struct ag_order *st, const struct ag_order_ship *cmd,
                  struct ag_dom_events *out, struct ag_err *err)
{
    int rc = need_order(st, err);
    if (rc || st->status == AG_ORDER_SHIPPED || st->status == AG_ORDER_DELIVERED) return rc;
    if (st->status != AG_ORDER_CONFIRMED)
        return ag_err_set(err, AG_EDOMAIN, "cannot ship a %s order",
                          ag_order_status_name(st->status));
    json_t *d = json_pack("{s:I}", "shippedAt", (json_int_t)(cmd ? cmd->now_ms : 0));
    return ag__dom_emit(out, AG_EV_ORDER_SHIPPED, d, err);
}

int ag_order_deliver(const struct ag_order *st, const struct ag_order_deliver *cmd,
                     struct ag_dom_events *out, struct ag_err *err)
{
    int rc = need_order(st, err);
    if (rc || st->status == AG_ORDER_DELIVERED) return rc;
    if (st->status != AG_ORDER_SHIPPED)
        return ag_err_set(err, AG_EDOMAIN, "cannot deliver a %s order",
                          ag_order_status_name(st->status));
    json_t *d = json_pack("{s:I}", "deliveredAt", (json_int_t)(cmd ? cmd->now_ms : 0));
    return ag__dom_emit(out, AG_EV_ORDER_DELIVERED, d, err);
}

const struct ag_dom_aggregate ag_order_aggregate = {
    "Order",         sizeof(struct ag_order), ag_order_init,    ag_order_free,
    ag_order_evolve, ag_order_snapshot,       ag_order_restore,
};
