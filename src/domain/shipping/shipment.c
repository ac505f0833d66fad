/*
 * The Shipment aggregate: one per order.
 *
 * Events: ShipmentArranged {shipmentId, orderId, address, trackingNumber,
 * customerId?} (the customer whose data key seals the address, see
 * src/services/pii.c);
 * ShipmentCancelled {reason}; ShipmentDispatched {dispatchedAt}; ShipmentDelivered
 * {deliveredAt}.
 *
 * Lifecycle: arranged → dispatched → delivered, or arranged → cancelled. Arranging again for
 * the same order, cancelling a cancelled shipment and dispatching a dispatched one
 * are no-ops (saga retries), and so is delivering a delivered one; a dispatched shipment cannot be
 * cancelled and a cancelled one cannot be dispatched.
 *
 * The snapshot is the ShipmentArranged shape plus "exists", "status" and
 * "cancelReason".
 */
#include <string.h>

#include "domain/internal.h"

static const char *const status_names[] = {"arranged", "cancelled", "dispatched", "delivered"};

const char *ag_shipment_status_name(enum ag_shipment_status s)
{
    return (unsigned)s < AG_ARRAY_SIZE(status_names) ? status_names[s] : "unknown";
}

void ag_shipment_init(void *state)
{
    memset(state, 0, sizeof(struct ag_shipment));
}

void ag_shipment_free(void *state)
{
    ag_shipment_init(state);
}

/* ---- evolve ---- */

static int on_arranged(struct ag_shipment *s, const json_t *d)
{
    if (ag__dom_get_str(d, "shipmentId", s->id, sizeof s->id) ||
        ag__dom_get_str(d, "orderId", s->order_id, sizeof s->order_id) ||
        ag__dom_get_str(d, "trackingNumber", s->tracking_number, sizeof s->tracking_number) ||
        ag__dom_get_str_opt(d, "customerId", s->customer_id, sizeof s->customer_id) ||
        ag__dom_get_address(d, "address", &s->address))
        return AG_EINVAL;
    s->exists = true;
    s->status = AG_SHIPMENT_ARRANGED;
    return 0;
}

int ag_shipment_evolve(void *state, const char *type, const json_t *data)
{
    struct ag_shipment *s = state;
    if (strcmp(type, AG_EV_SHIPMENT_ARRANGED) == 0) return on_arranged(s, data);
    if (strcmp(type, AG_EV_SHIPMENT_CANCELLED) == 0) {
        if (ag__dom_get_str_opt(data, "reason", s->cancel_reason, sizeof s->cancel_reason))
            return AG_EINVAL;
        s->status = AG_SHIPMENT_CANCELLED;
    } else if (strcmp(type, AG_EV_SHIPMENT_DISPATCHED) == 0) {
        s->status = AG_SHIPMENT_DISPATCHED;
    } else if (strcmp(type, AG_EV_SHIPMENT_DELIVERED) == 0) {
        s->status = AG_SHIPMENT_DELIVERED;
    }
    return 0;
}

/* ---- snapshot ---- */

json_t *ag_shipment_snapshot(const void *state)
{
    const struct ag_shipment *s = state;
    if (!s->exists) return json_pack("{s:b}", "exists", 0);
    return json_pack("{s:b,s:s,s:s,s:s,s:o,s:s,s:s,s:s}", "exists", 1, "shipmentId", s->id,
                     "orderId", s->order_id, "trackingNumber", s->tracking_number, "address",
                     ag_address_to_json(&s->address), "status", ag_shipment_status_name(s->status),
                     "cancelReason", s->cancel_reason, "customerId", s->customer_id);
}

static int parse_status(const char *name, enum ag_shipment_status *out)
{
    for (size_t i = 0; name && i < AG_ARRAY_SIZE(status_names); i++)
        if (strcmp(name, status_names[i]) == 0) {
            *out = (enum ag_shipment_status)i;
            return 0;
        }
    return AG_EINVAL;
}

int ag_shipment_restore(void *state, const json_t *snap)
{
    struct ag_shipment *s = state;
    bool exists;
    ag_shipment_free(s);
    if (ag__dom_get_bool(snap, "exists", &exists)) return AG_EINVAL;
    if (!exists) return 0;
    if (on_arranged(s, snap) ||
        parse_status(json_string_value(json_object_get(snap, "status")), &s->status) ||
        ag__dom_get_str_opt(snap, "cancelReason", s->cancel_reason, sizeof s->cancel_reason)) {
        ag_shipment_init(s);
        return AG_EINVAL;
    }
    return 0;
}

/* ---- decide ---- */

int ag_shipment_arrange(const struct ag_shipment *st, const struct ag_shipment_arrange *cmd,
                        struct ag_dom_events *out, struct ag_err *err)
{
    struct ag_shipment s;
    int rc;
    if (st->exists) {
        if (cmd->order_id && strcmp(cmd->order_id, st->order_id) == 0) return 0;
        return ag_err_set(err, AG_EDOMAIN, "shipment %s is already arranged for order %s", st->id,
                          st->order_id);
    }
    if ((rc = ag__dom_need(s.id, sizeof s.id, cmd->id, "shipment id", err)) ||
        (rc = ag__dom_need(s.order_id, sizeof s.order_id, cmd->order_id, "order id", err)) ||
        (rc = ag__dom_need(s.tracking_number, sizeof s.tracking_number, cmd->tracking_number,
                           "tracking number", err)))
        return rc;
    if (!cmd->address) return ag_err_set(err, AG_EINVAL, "a shipment needs an address");
    if ((rc = ag__dom_address_check(cmd->address, "/address", err))) return rc;
    json_t *d = json_pack("{s:s,s:s,s:o,s:s}", "shipmentId", s.id, "orderId", s.order_id, "address",
                          ag_address_to_json(cmd->address), "trackingNumber", s.tracking_number);
    if (d && cmd->customer_id && cmd->customer_id[0] &&
        json_object_set_new(d, "customerId", json_string(cmd->customer_id))) {
        json_decref(d);
        d = NULL;
    }
    return ag__dom_emit(out, AG_EV_SHIPMENT_ARRANGED, d, err);
}

int ag_shipment_cancel(const struct ag_shipment *st, const struct ag_shipment_cancel *cmd,
                       struct ag_dom_events *out, struct ag_err *err)
{
    char reason[256];
    if (!st->exists) return ag_err_set(err, AG_EDOMAIN, "shipment does not exist");
    if (st->status == AG_SHIPMENT_CANCELLED) return 0;
    if (st->status == AG_SHIPMENT_DISPATCHED || st->status == AG_SHIPMENT_DELIVERED)
        return ag_err_set(err, AG_EDOMAIN, "cannot cancel shipment %s: already %s", st->id,
                          ag_shipment_status_name(st->status));
    ag__dom_reason(reason, sizeof reason, cmd ? cmd->reason : NULL, "cancelled");
    return ag__dom_emit(out, AG_EV_SHIPMENT_CANCELLED, json_pack("{s:s}", "reason", reason), err);
}

int ag_shipment_dispatch(const struct ag_shipment *st, const struct ag_shipment_dispatch *cmd,
                         struct ag_dom_events *out, struct ag_err *err)
{
    if (!st->exists) return ag_err_set(err, AG_EDOMAIN, "shipment does not exist");
    if (st->status == AG_SHIPMENT_DISPATCHED || st->status == AG_SHIPMENT_DELIVERED) return 0;
    if (st->status == AG_SHIPMENT_CANCELLED)
        return ag_err_set(err, AG_EDOMAIN, "cannot dispatch shipment %s: it was cancelled", st->id);
    json_t *d = json_pack("{s:I}", "dispatchedAt", (json_int_t)(cmd ? cmd->now_ms : 0));
    return ag__dom_emit(out, AG_EV_SHIPMENT_DISPATCHED, d, err);
}

int ag_shipment_deliver(const struct ag_shipment *st, const struct ag_shipment_deliver *cmd,
                        struct ag_dom_events *out, struct ag_err *err)
{
    if (!st->exists) return ag_err_set(err, AG_EDOMAIN, "shipment does not exist");
    if (st->status == AG_SHIPMENT_DELIVERED) return 0;
    if (st->status != AG_SHIPMENT_DISPATCHED)
        return ag_err_set(err, AG_EDOMAIN, "cannot deliver shipment %s: it is %s, not dispatched",
                          st->id, ag_shipment_status_name(st->status));
    json_t *d = json_pack("{s:I}", "deliveredAt", (json_int_t)(cmd ? cmd->now_ms : 0));
    return ag__dom_emit(out, AG_EV_SHIPMENT_DELIVERED, d, err);
}

const struct ag_dom_aggregate ag_shipment_aggregate = {
    "Shipment",         sizeof(struct ag_shipment), ag_shipment_init,    ag_shipment_free,
    ag_shipment_evolve, ag_shipment_snapshot,       ag_shipment_restore,
};
