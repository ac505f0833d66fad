/*
 * The PlaceOrder saga's steps. Each participant call is a repository command on
 * the participant's aggregate, keyed by the order id, so a step re-run after a
 * crash finds its own earlier effect and does nothing:
 *   ReserveInventory  stock-<productId> + reservation-<orderId>
 *                     StockHeld + ReservationMade per line (released on failure)
 *   ProcessPayment    account-<id> + payment-<orderId>
 *                     AccountCharged + ChargeCaptured (refunded)
 *   ArrangeShipment   shipment-<orderId>  one shipment per order (cancelled)
 *   ConfirmOrder      order-<id>          OrderConfirmed
 * The first step, PlaceOrder, checks the order is still pending; its compensation
 * cancels the order with the failure as the reason. The two-stream steps append
 * both streams in one multi-stream append (svc_exec2), so the account's and the
 * stock item's states stay counters, whatever the number of orders.
 *
 * Fault injection: AGORA_FAULT_<STEP>="rate[,latency_ms[,compensation_rate]]",
 * e.g. AGORA_FAULT_PROCESSPAYMENT=0.3 fails 30% of payment attempts.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/internal.h"

struct order_view {
    bool exists;
    enum ag_order_status status;
    char customer_id[AG_DOM_ID_MAX];
    struct ag_price_line lines[100];
    size_t n;
    struct ag_money total;
    struct ag_address address;
};

static void view_order(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    const struct ag_order *o = state;
    struct order_view *v = ud;
    v->exists = o->exists;
    v->status = o->status;
    snprintf(v->customer_id, sizeof v->customer_id, "%s", o->customer_id);
    v->n = o->nlines < 100 ? o->nlines : 100;
    memcpy(v->lines, o->lines, v->n * sizeof *v->lines);
    v->total = o->total;
    v->address = o->shipping_address;
}

static int load_order(struct svc_env *p, const json_t *data, struct order_view *v, const char **id,
                      struct ag_err *err)
{
    *id = json_string_value(json_object_get(data, "orderId"));
    if (!*id) return ag_err_set(err, AG_EINVAL, "saga data has no orderId");
    memset(v, 0, sizeof *v);
    return svc_read(p, &svc_order_type, *id, view_order, v, err);
}

static void view_account_id(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    snprintf(ud, AG_DOM_ID_MAX, "%s", ((const struct ag_customer *)state)->account_id);
}

static int account_of(struct svc_env *p, const char *customer_id, char out[AG_DOM_ID_MAX],
                      struct ag_err *err)
{
    out[0] = '\0';
    return svc_read(p, &svc_customer_type, customer_id, view_account_id, out, err);
}

/* ---- decide adapters ---- */

#define DOM(fn, T)                                                                                 \
    static int d_##fn(const void *st, const void *cmd, struct ag_dom_events *out,                  \
                      struct ag_err *err)                                                          \
    {                                                                                              \
        return ag_##fn(st, cmd, out, err);                                                         \
    }
#define DOM2(fn)                                                                                   \
    static int d_##fn(const void *a, const void *b, const void *cmd, struct ag_dom_events *out_a,  \
                      struct ag_dom_events *out_b, struct ag_err *err)                             \
    {                                                                                              \
        return ag_##fn(a, b, cmd, out_a, out_b, err);                                              \
    }
DOM2(reservation_hold)
DOM2(reservation_release)
DOM2(payment_charge)
DOM2(payment_refund)
DOM(shipment_arrange, ag_shipment)
DOM(shipment_cancel, ag_shipment)
DOM(order_confirm, ag_order)
DOM(order_cancel, ag_order)

/* ---- steps ---- */

/* The metadata of a step's events: the actor is the saga, a system principal
 * named by its subject alone (the short form `"actor": "<sub>"`, which the audit
 * view reads as {sub, roles: []}: 30 bytes less on each of an order's ~8
 * participant events); the cause is the step whose idempotency key is `key`
 * (<sagaId>:<step>). */
static void step_meta(const char *key, char out[256])
{
    snprintf(out, 256, "{\"actor\":\"saga:PlaceOrder\",\"causationId\":\"%.180s\"}",
             key ? key : "");
}

static int place_check(void *ud, const json_t *data, const char *key, const char *reason,
                       struct ag_err *err)
{
    AG_UNUSED(key), AG_UNUSED(reason);
    struct order_view v;
    const char *id;
    int rc = load_order(ud, data, &v, &id, err);
    if (rc) return rc;
    /* confirmed: this saga confirmed it before a crash lost its step records, and it
     * is re-running steps that will all find their effects in place */
    if (v.status != AG_ORDER_PENDING && v.status != AG_ORDER_CONFIRMED)
        return ag_err_set(err, AG_EDOMAIN, "order %s is %s", id, ag_order_status_name(v.status));
    return 0;
}

static int place_undo(void *ud, const json_t *data, const char *key, const char *reason,
                      struct ag_err *err)
{
    char meta[256];
    step_meta(key, meta);
    const char *id = json_string_value(json_object_get(data, "orderId"));
    struct ag_order_cancel c = {reason};
    return svc_exec(
        ud, &(struct svc_cmd){&svc_order_type, id ? id : "", d_order_cancel, &c, meta, NULL, NULL},
        err);
}

static int release_lines(struct svc_env *p, const char *order_id, const struct order_view *v,
                         size_t upto, const char *reason, const char *meta, struct ag_err *err)
{
    int rc = 0;
    for (size_t i = 0; i < upto; i++) {
        struct ag_reservation_release r = {order_id, v->lines[i].product_id, reason};
        int r1 = svc_exec2(p,
                           &(struct svc_cmd2){&svc_stock_type, v->lines[i].product_id,
                                              &svc_reservation_type, order_id,
                                              d_reservation_release, &r, meta},
                           err);
        if (r1 && !rc) rc = r1;
    }
    return rc;
}

static int reserve(void *ud, const json_t *data, const char *key, const char *reason,
                   struct ag_err *err)
{
    AG_UNUSED(reason);
    char meta[256];
    step_meta(key, meta);
    struct order_view v;
    const char *id;
    int rc = load_order(ud, data, &v, &id, err);
    for (size_t i = 0; i < v.n && !rc; i++) {
        struct ag_reservation_hold r = {id, v.lines[i].product_id, v.lines[i].quantity};
        rc = svc_exec2(ud,
                       &(struct svc_cmd2){&svc_stock_type, v.lines[i].product_id,
                                          &svc_reservation_type, id, d_reservation_hold, &r, meta},
                       err);
        if (rc) { /* all or nothing: give back what this step took */
            struct ag_err e2;
            release_lines(ud, id, &v, i, "reservation incomplete", meta, &e2);
        }
    }
    return rc;
}

static int release(void *ud, const json_t *data, const char *key, const char *reason,
                   struct ag_err *err)
{
    char meta[256];
    step_meta(key, meta);
    struct order_view v;
    const char *id;
    int rc = load_order(ud, data, &v, &id, err);
    return rc ? rc : release_lines(ud, id, &v, v.n, reason, meta, err);
}

/* The order and its customer's account, for the payment step and its undo. */
static int order_account(void *ud, const json_t *data, struct order_view *v, const char **id,
                         char account[AG_DOM_ID_MAX], struct ag_err *err)
{
    int rc = load_order(ud, data, v, id, err);
    return rc ? rc : account_of(ud, v->customer_id, account, err);
}

static int charge(void *ud, const json_t *data, const char *key, const char *reason,
                  struct ag_err *err)
{
    AG_UNUSED(reason);
    char meta[256];
    step_meta(key, meta);
    struct order_view v;
    const char *id;
    char account[AG_DOM_ID_MAX];
    int rc = order_account(ud, data, &v, &id, account, err);
    if (rc || v.total.amount == 0) return rc;
    struct ag_payment_charge c = {id, v.total, svc_now_ms()};
    return svc_exec2(ud,
                     &(struct svc_cmd2){&svc_account_type, account, &svc_payment_type, id,
                                        d_payment_charge, &c, meta},
                     err);
}

static int refund(void *ud, const json_t *data, const char *key, const char *reason,
                  struct ag_err *err)
{
    AG_UNUSED(reason);
    char meta[256];
    step_meta(key, meta);
    struct order_view v;
    const char *id;
    char account[AG_DOM_ID_MAX];
    int rc = order_account(ud, data, &v, &id, account, err);
    if (rc) return rc;
    struct ag_payment_refund r = {id, svc_now_ms()};
    return svc_exec2(ud,
                     &(struct svc_cmd2){&svc_account_type, account, &svc_payment_type, id,
                                        d_payment_refund, &r, meta},
                     err);
}

static void tracking_number(const char *order_id, char out[32])
{
    snprintf(out, 32, "AG%012llX", (unsigned long long)(ag_xxh3(order_id, strlen(order_id)) >> 16));
}

static int arrange(void *ud, const json_t *data, const char *key, const char *reason,
                   struct ag_err *err)
{
    AG_UNUSED(reason);
    char meta[256];
    step_meta(key, meta);
    struct order_view v;
    const char *id;
    int rc = load_order(ud, data, &v, &id, err);
    if (rc) return rc;
    char ship_id[AG_UUID_STRLEN + 1], track[32];
    svc_new_id(ship_id, "shipments", id);
    tracking_number(id, track);
    struct ag_shipment_arrange a = {ship_id, id, &v.address, track};
    return svc_exec(
        ud, &(struct svc_cmd){&svc_shipment_type, id, d_shipment_arrange, &a, meta, NULL, NULL},
        err);
}

static int unarrange(void *ud, const json_t *data, const char *key, const char *reason,
                     struct ag_err *err)
{
    char meta[256];
    step_meta(key, meta);
    const char *id = json_string_value(json_object_get(data, "orderId"));
    if (!svc_stream_exists(ud, "shipment", id ? id : "")) return 0;
    struct ag_shipment_cancel c = {reason};
    return svc_exec(ud,
                    &(struct svc_cmd){&svc_shipment_type, id ? id : "", d_shipment_cancel, &c, meta,
                                      NULL, NULL},
                    err);
}

static int confirm(void *ud, const json_t *data, const char *key, const char *reason,
                   struct ag_err *err)
{
    AG_UNUSED(reason);
    char meta[256];
    step_meta(key, meta);
    const char *id = json_string_value(json_object_get(data, "orderId"));
    char track[32];
    tracking_number(id ? id : "", track);
    struct ag_order_confirm c = {track};
    return svc_exec(
        ud, &(struct svc_cmd){&svc_order_type, id ? id : "", d_order_confirm, &c, meta, NULL, NULL},
        err);
}

/* ConfirmOrder is the pivot: a confirmed order is never cancelled. The engine
 * compensates a failed step too, since a crash can hide that it took effect; if
 * the order is confirmed after all, AG_EEXISTS makes the engine record the step as
 * succeeded instead of refunding a confirmed order (see src/saga/run.c). */
static int unconfirm(void *ud, const json_t *data, const char *key, const char *reason,
                     struct ag_err *err)
{
    AG_UNUSED(key), AG_UNUSED(reason);
    struct order_view v;
    const char *id;
    int rc = load_order(ud, data, &v, &id, err);
    if (rc) return rc;
    if (v.status == AG_ORDER_CONFIRMED || v.status == AG_ORDER_SHIPPED)
        return ag_err_set(err, AG_EEXISTS, "order %s is already %s", id,
                          ag_order_status_name(v.status));
    return 0;
}

/* ---- the definition ---- */

static void fault_from_env(struct ag_saga_step *st)
{
    char name[64] = "AGORA_FAULT_";
    size_t n = strlen(name);
    for (const char *c = st->name; *c && n < sizeof name - 1; c++)
        name[n++] = (char)toupper((unsigned char)*c);
    name[n] = 0;
    const char *v = getenv(name);
    if (!v) return;
    double rate = 0, comp = 0;
    unsigned lat = 0;
    if (sscanf(v, "%lf,%u,%lf", &rate, &lat, &comp) < 1 || rate < 0 || rate > 1 || comp < 0 ||
        comp > 1) {
        AG_WARN("saga.bad_fault_config", AG_LS("variable", name), AG_LS("value", v),
                AG_LS("expected", "rate[,latency_ms[,compensation_rate]] with rates in 0..1"));
        return;
    }
    st->fault = (struct ag_saga_fault){rate, lat, comp};
    AG_INFO("saga.fault_injection", AG_LS("step", st->name), AG_LD("errorRate", rate),
            AG_LU("latencyMs", lat), AG_LD("compensationErrorRate", comp));
}

/* A store outage (AG_EUNAVAILABLE: the disk is full or failing) says nothing about
 * the participant: the engine interrupts the saga and resumes it once the store
 * writes again, so it must not open the step's breaker (which would compensate
 * sagas retried within the open time). */
static enum ag_resil_outcome classify_step(void *ctx, int rc)
{
    return rc == AG_EUNAVAILABLE ? AG_RESIL_IGNORED : ag_cb_classify_default(ctx, rc);
}

int svc_place_order_saga(struct ag_platform *p, struct ag_err *err)
{
    static const struct ag_saga_step steps[SVC_SAGA_STEPS] = {
        {"PlaceOrder", place_check, place_undo, {0}, NULL},
        {"ReserveInventory", reserve, release, {0}, NULL},
        {"ProcessPayment", charge, refund, {0}, NULL},
        {"ArrangeShipment", arrange, unarrange, {0}, NULL},
        {"ConfirmOrder", confirm, unconfirm, {0}, NULL},
    };
    memcpy(p->place_order_steps, steps, sizeof steps);
    for (size_t i = 0; i < SVC_SAGA_STEPS; i++) {
        struct ag_saga_step *st = &p->place_order_steps[i];
        fault_from_env(st);
        struct ag_cb_config cb = {.name = st->name,
                                  .failure_threshold = 20,
                                  .classify = classify_step,
                                  .open_ns = 5000000000ull,
                                  .half_open_permits = 2};
        int rc = ag_cb_new(&cb, &p->breakers[i], err);
        if (rc) return rc;
        p->step_policy[i] = (struct ag_pipeline){
            .name = st->name,
            .breaker = p->breakers[i],
            .retry = {.max_attempts = 3,
                      .backoff = AG_BACKOFF_EXPONENTIAL,
                      .base_ns = 20000000ull,
                      .cap_ns = 500000000ull,
                      .jitter = AG_JITTER_FULL},
            .attempt_timeout_ns = 5000000000ull,
        };
        st->policy = &p->step_policy[i];
    }
    p->saga_defs[0] = (struct ag_saga_def){.type = "PlaceOrder",
                                           .steps = p->place_order_steps,
                                           .nsteps = SVC_SAGA_STEPS,
                                           .ud = &p->env};
    return 0;
}

/* ---- starting sagas from OrderPlaced ---- */

static int start_saga(struct ag_rm *db, const struct ag_event *ev, const json_t *d, void *ud)
{
    AG_UNUSED(db);
    struct ag_platform *p = ud;
    const char *saga = json_string_value(json_object_get(d, "sagaId"));
    if (!saga || ev->stream_len <= 6) return 0;
    char order[128];
    if (ag_es_stream_id(&svc_order_type, ev->stream, ev->stream_len, order, sizeof order))
        return 0; /* not one of ours (the type owns its prefix) */
    json_t *data = json_pack("{s:s}", "orderId", order);
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_saga_start_async(p->sagas, "PlaceOrder", saga, data, ev, &err);
    json_decref(data);
    if (rc) AG_ERROR("saga.start_failed", AG_LS("saga", saga), AG_LS("error", err.msg));
    return rc;
}

/* Before the starter's checkpoint moves past a page, its sagas must be durable. */
static int starts_durable(void *ud)
{
    struct ag_platform *p = ud;
    return ag_saga_wait_starts(p->sagas, 30000);
}

void svc_saga_starter_projection(struct ag_platform *p, struct ag_projection *out)
{
    static const char *const types[] = {AG_EV_ORDER_PLACED, NULL};
    *out = (struct ag_projection){.name = "saga_starter",
                                  .schema = NULL,
                                  .types = types,
                                  .apply = start_saga,
                                  .ud = p,
                                  .flush = starts_durable};
}
