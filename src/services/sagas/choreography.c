/*
 * PlaceOrder as choreography (`agora run --saga-mode choreography`): no
 * orchestrator; four contexts react to each other's integration events on the
 * bus (docs/events.md), each through its own durable consumer and bus worker
 * (include/agora/bus_worker.h: inbox, sequenced dead letters):
 *
 *   inventory  OrderPlaced            reserve every line → OrderStockReserved,
 *                                     or StockReservationFailed (lines given back)
 *              PaymentFailed, ShipmentFailed, OrderCancelled
 *                                     release → OrderStockReleased
 *   payments   OrderStockReserved     charge → OrderPaymentCaptured, or PaymentFailed
 *              ShipmentFailed, OrderCancelled
 *                                     refund → OrderPaymentRefunded
 *   shipping   OrderPaymentCaptured   arrange → ShipmentArranged, or ShipmentFailed
 *              OrderCancelled         cancel → ShipmentCancelled
 *   ordering   ShipmentArranged       confirm → OrderConfirmed (or, when it
 *                                     cannot: OrderConfirmationFailed + OrderCancelled)
 *              StockReservationFailed, PaymentFailed, ShipmentFailed
 *                                     cancel → OrderCancelled
 *
 * The effects are the orchestrated steps' domain commands on the same streams
 * (stock-<productId> + reservation-<orderId>, account-<id> + payment-<orderId>,
 * shipment-<orderId>, order-<orderId>), so the invariants hold the same way: a
 * reservation or a charge per order is made or undone once. A reaction's outcome
 * event goes on the context's per-order stream, and the reaction's last append
 * holds its effect, that outcome and the inbox record
 * `_inbox-<consumer>-<message id>` (expected not to exist: decided on, so a
 * redelivered message finds it and appends nothing). A reservation of several
 * lines holds them one append each first (each a no-op when done already), then
 * records the outcome with the inbox; a crash in between redelivers and finishes.
 * The outcome events are published by the outbox relay (src/services/bus.c), and
 * that is how the next context hears of them.
 *
 * A compensation runs when the per-order stream shows the effect and not yet its
 * undoing, so the two triggers of one (PaymentFailed and the OrderCancelled that
 * follows) undo once. A compensation that keeps failing (injected: 3 tries)
 * records CompensationFailed {step, error} on its stream and logs
 * saga.compensation_failed at error level; the flow then shows `failed`.
 *
 * The saga view: the sagas read model (GET /api/v1/sagas/{id}, /admin/sagas)
 * folds these events into the same rows and step shape as the orchestrated saga
 * (steps PlaceOrder .. ConfirmOrder; succeeded, failed, compensated,
 * compensation_failed), keyed by the OrderPlaced's sagaId; saga-<id> events (an
 * orchestrated saga from before a switch) are folded as before.
 *
 * Faults: AGORA_FAULT_<STEP> as in orchestration (placeorder.c): a reaction's
 * action fails when 3 tries in a row draw a failure (the engine's 3 attempts), a
 * compensation likewise with the compensation rate; latency before the action.
 * PlaceOrder itself is the HTTP command here: its fault only affects its
 * compensation (cancelling the order).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "agora/bus_worker.h"
#include "services/internal.h"

enum { S_PLACE, S_RESERVE, S_PAY, S_SHIP, S_CONFIRM };
enum { C_INVENTORY, C_PAYMENTS, C_SHIPPING, C_ORDERING, C_COUNT };

/* Orders each context handles at once (bus worker lanes): a reaction waits for its
 * store append (group commit), so one at a time would make the flow as slow as
 * that wait; the repository serialises reactions on a shared aggregate (stock,
 * account), and an order's messages stay in order in their lane. */
#define CHOR_LANES 16

static const char *const consumer_names[C_COUNT] = {"chor-inventory", "chor-payments",
                                                    "chor-shipping", "chor-ordering"};

struct reactor {
    struct svc_chor *chor;
    int which;
    struct ag_bus_worker *w;
    pthread_t th;
    bool started;
    uint64_t rng; /* faults: xorshift state (atomic: the worker's lanes share it) */
};

struct svc_chor {
    struct ag_platform *p;
    struct svc_env *env;
    struct reactor r[C_COUNT];
    atomic_bool stop;
};

/* ---- the inbox as a part of a multi-aggregate command ---- */

static void inbox_init(void *s)
{
    AG_UNUSED(s);
}
static int inbox_evolve(void *s, const char *type, const json_t *data)
{
    AG_UNUSED(s), AG_UNUSED(type), AG_UNUSED(data);
    return 0;
}
static json_t *inbox_snapshot(const void *s)
{
    AG_UNUSED(s);
    return json_object();
}
static int inbox_restore(void *s, const json_t *snap)
{
    AG_UNUSED(s), AG_UNUSED(snap);
    return 0;
}
static const struct ag_es_type inbox_type = {
    "_inbox", 1, inbox_init, inbox_init, inbox_evolve, inbox_snapshot, inbox_restore};

/* One reaction's append: a domain command over one or two aggregates (or none),
 * outcome events on part `out`, and the inbox record, decided together. */
struct rx_cmd {
    const struct ag_es_type *ta, *tb; /* tb NULL: one aggregate */
    const char *ida, *idb;
    svc_dom_fn fn1;  /* over a */
    svc_dom2_fn fn2; /* over a and b (fn1 NULL) */
    const void *cmd;
    int out;             /* 0: a, 1: b */
    const char *type[2]; /* outcome events (NULL: none) */
    json_t *data[2];     /* borrowed */
};

struct rx_run {
    const struct rx_cmd *c;
    size_t nparts;
};

static int move(struct ag_dom_events *evs, struct ag_es_batch *out)
{
    int rc = 0;
    for (size_t i = 0; i < evs->n && !rc; i++) {
        rc = ag_es_batch_push(out, evs->v[i].type, evs->v[i].data);
        evs->v[i].data = NULL;
    }
    return rc;
}

static int rx_decide(void *const *states, const int64_t *versions, void *ud,
                     struct ag_es_batch *outs, struct ag_err *err)
{
    struct rx_run *r = ud;
    const struct rx_cmd *c = r->c;
    size_t inbox = r->nparts - 1;
    if (versions[inbox] >= 0) return 0; /* handled before: nothing again */
    struct ag_dom_events a, b;
    ag_dom_events_init(&a);
    ag_dom_events_init(&b);
    int rc = 0;
    if (c->fn2)
        rc = c->fn2(states[0], states[1], c->cmd, &a, &b, err);
    else if (c->fn1)
        rc = c->fn1(states[0], c->cmd, &a, err);
    if (!rc) rc = move(&a, &outs[0]);
    if (!rc && inbox > 1) rc = move(&b, &outs[1]);
    ag_dom_events_free(&a);
    ag_dom_events_free(&b);
    const struct ag_es_type *types[2] = {c->ta, c->tb};
    for (size_t i = 0; i < inbox && i < 2 && !rc; i++)
        rc = svc_pii_seal_events(types[i], versions[i] >= 0 ? states[i] : NULL, &outs[i], 0, err);
    for (int i = 0; i < 2 && !rc; i++)
        if (c->type[i])
            rc = ag_es_batch_push(&outs[c->out], c->type[i], json_deep_copy(c->data[i]));
    if (!rc) rc = ag_es_batch_push(&outs[inbox], "MessageHandled", json_object());
    if (rc == AG_ENOMEM && !err->msg[0]) ag_err_set(err, AG_ENOMEM, "out of memory");
    return rc;
}

static int rx_exec(struct reactor *x, const struct ag_bus_delivery *d, const struct rx_cmd *c,
                   struct ag_err *err)
{
    char sa[AG_STORE_STREAM_MAX + 1], sb[AG_STORE_STREAM_MAX + 1], si[AG_STORE_STREAM_MAX + 1];
    if (ag_es_stream(c->ta, c->ida, sa, sizeof sa) ||
        (c->tb && ag_es_stream(c->tb, c->idb, sb, sizeof sb)))
        return ag_err_set(err, AG_EINVAL, "id too long");
    int k = snprintf(si, sizeof si, "_inbox-%s-%s", consumer_names[x->which], d->msg.id);
    if (k < 0 || (size_t)k >= sizeof si) return ag_err_set(err, AG_EINVAL, "message id too long");
    struct ag_es_part parts[3] = {{c->ta, sa}, {c->tb, sb}, {&inbox_type, si}};
    size_t n = 2;
    if (c->tb)
        n = 3;
    else
        parts[1] = parts[2];
    char meta[300];
    snprintf(meta, sizeof meta, "{\"actor\":\"%s\",\"causationId\":\"%.200s\"}",
             consumer_names[x->which], d->msg.id);
    struct rx_run run = {c, n};
    struct ag_es_multi_cmd mc = {parts, n, rx_decide, &run, meta};
    return ag_es_execute_multi(x->chor->env->repo, &mc, NULL, err);
}

/* Outcome events alone on `t`-<orderId> (with the inbox record). */
static int rx_record(struct reactor *x, const struct ag_bus_delivery *d, const struct ag_es_type *t,
                     const char *order, const char *type, json_t *data, struct ag_err *err)
{
    struct rx_cmd c = {.ta = t, .ida = order, .type = {type}, .data = {data}};
    int rc = rx_exec(x, d, &c, err);
    json_decref(data);
    return rc;
}

/* ---- helpers ---- */

static bool stream_has(struct svc_env *p, const char *prefix, const char *id, const char *type)
{
    char s[AG_STORE_STREAM_MAX + 1];
    svc_stream(s, sizeof s, prefix, id);
    struct ag_event_page pg;
    if (ag_store_read_stream(p->store, s, strlen(s), 0, AG_READ_FORWARD, 4096, &pg, NULL))
        return false;
    bool found = false;
    for (size_t i = 0; i < pg.count && !found; i++)
        found = pg.events[i].type_len == strlen(type) &&
                memcmp(pg.events[i].type, type, pg.events[i].type_len) == 0;
    ag_event_page_free(&pg);
    return found;
}

static int load(struct svc_env *p, const char *order, struct svc_order_view *v, char *account,
                struct ag_err *err)
{
    memset(v, 0, sizeof *v);
    int rc = svc_read(p, &svc_order_type, order, svc_view_order, v, err);
    if (!rc && account) {
        account[0] = '\0';
        rc = svc_account_of(p, v->customer_id, account, err);
    }
    return rc;
}

static double rnd(struct reactor *x) /* the worker's lanes draw at once: atomic */
{
    uint64_t old = __atomic_load_n(&x->rng, __ATOMIC_RELAXED), v;
    do {
        v = old;
        v ^= v << 13, v ^= v >> 7, v ^= v << 17;
    } while (
        !__atomic_compare_exchange_n(&x->rng, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return (double)(v >> 11) / 9007199254740992.0;
}

/* The injected fault of `step` (its action, or its compensation): 3 failed
 * tries in a row fail it, with the engine's message. */
static bool injected(struct reactor *x, int step, bool comp, char why[128])
{
    const struct ag_saga_step *st = &x->chor->p->place_order_steps[step];
    if (!comp && st->fault.latency_ms) {
        struct timespec ts = {st->fault.latency_ms / 1000,
                              (st->fault.latency_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    double rate = comp ? st->fault.comp_error_rate : st->fault.error_rate;
    if (rate <= 0) return false;
    for (int i = 0; i < 3; i++)
        if (rnd(x) >= rate) return false;
    snprintf(why, 128, "injected fault in %s%s", comp ? "compensation of " : "", st->name);
    return true;
}

static int comp_failed(struct reactor *x, const struct ag_bus_delivery *d,
                       const struct ag_es_type *t, const char *order, int step, const char *why,
                       struct ag_err *err)
{
    const char *name = x->chor->p->place_order_steps[step].name;
    AG_ERROR("saga.compensation_failed", AG_LS("order", order), AG_LS("step", name),
             AG_LS("error", why), AG_LS("mode", "choreography"));
    return rx_record(x, d, t, order, "CompensationFailed",
                     json_pack("{s:s, s:s, s:s}", "orderId", order, "step", name, "error", why),
                     err);
}

static bool business(int rc)
{
    return rc == AG_EDOMAIN || rc == AG_EINVAL || rc == AG_ENOTFOUND;
}

SVC_DECIDE2(reservation_hold)
SVC_DECIDE2(reservation_release)
SVC_DECIDE2(payment_charge)
SVC_DECIDE2(payment_refund)
SVC_DECIDE(shipment_arrange)
SVC_DECIDE(shipment_cancel)
SVC_DECIDE(order_confirm)
SVC_DECIDE(order_cancel)

static void tracking_number(const char *order_id, char out[32])
{
    snprintf(out, 32, "AG%012llX", (unsigned long long)(ag_xxh3(order_id, strlen(order_id)) >> 16));
}

/* ---- inventory ---- */

static int release_lines(struct reactor *x, const char *order, const struct svc_order_view *v,
                         size_t upto, const char *reason, struct ag_err *err)
{
    char meta[128];
    snprintf(meta, sizeof meta, "{\"actor\":\"%s\"}", consumer_names[x->which]);
    for (size_t i = 0; i < upto; i++) {
        struct ag_reservation_release r = {order, v->lines[i].product_id, reason};
        int rc = svc_exec2(x->chor->env,
                           &(struct svc_cmd2){&svc_stock_type, v->lines[i].product_id,
                                              &svc_reservation_type, order, d_reservation_release,
                                              &r, meta},
                           err);
        if (rc) return rc;
    }
    return 0;
}

static int reserve(struct reactor *x, const struct ag_bus_delivery *d, const char *order,
                   struct ag_err *err)
{
    struct svc_env *p = x->chor->env;
    struct svc_order_view v;
    int rc = load(p, order, &v, NULL, err);
    if (rc || v.status != AG_ORDER_PENDING) return rc; /* cancelled meanwhile: nothing to do */
    char why[128];
    if (injected(x, S_RESERVE, false, why))
        return rx_record(x, d, &svc_reservation_type, order, "StockReservationFailed",
                         json_pack("{s:s, s:s}", "orderId", order, "reason", why), err);
    char meta[128];
    snprintf(meta, sizeof meta, "{\"actor\":\"%s\"}", consumer_names[x->which]);
    json_t *items = json_array();
    for (size_t i = 0; i < v.n; i++) {
        struct ag_reservation_hold h = {order, v.lines[i].product_id, v.lines[i].quantity};
        rc = svc_exec2(p,
                       &(struct svc_cmd2){&svc_stock_type, v.lines[i].product_id,
                                          &svc_reservation_type, order, d_reservation_hold, &h,
                                          meta},
                       err);
        if (rc && business(rc)) { /* all or nothing: give back what was taken */
            char reason[sizeof err->msg];
            snprintf(reason, sizeof reason, "%s", err->msg);
            json_decref(items);
            rc = release_lines(x, order, &v, i, "reservation incomplete", err);
            return rc ? rc
                      : rx_record(x, d, &svc_reservation_type, order, "StockReservationFailed",
                                  json_pack("{s:s, s:s}", "orderId", order, "reason", reason), err);
        }
        if (rc) {
            json_decref(items);
            return rc; /* transient: redelivered; the lines held so far are no-ops then */
        }
        json_array_append_new(items, json_pack("{s:s, s:I}", "productId", v.lines[i].product_id,
                                               "quantity", (json_int_t)v.lines[i].quantity));
    }
    return rx_record(x, d, &svc_reservation_type, order, "OrderStockReserved",
                     json_pack("{s:s, s:o}", "orderId", order, "items", items), err);
}

static int release(struct reactor *x, const struct ag_bus_delivery *d, const char *order,
                   const char *reason, struct ag_err *err)
{
    struct svc_env *p = x->chor->env;
    if (!stream_has(p, "reservation", order, "OrderStockReserved") ||
        stream_has(p, "reservation", order, "OrderStockReleased") ||
        stream_has(p, "reservation", order, "CompensationFailed"))
        return 0;
    char why[128];
    if (injected(x, S_RESERVE, true, why))
        return comp_failed(x, d, &svc_reservation_type, order, S_RESERVE, why, err);
    struct svc_order_view v;
    int rc = load(p, order, &v, NULL, err);
    if (!rc) rc = release_lines(x, order, &v, v.n, reason, err);
    return rc ? rc
              : rx_record(x, d, &svc_reservation_type, order, "OrderStockReleased",
                          json_pack("{s:s, s:s}", "orderId", order, "reason", reason), err);
}

/* ---- payments ---- */

static int charge(struct reactor *x, const struct ag_bus_delivery *d, const char *order,
                  struct ag_err *err)
{
    struct svc_env *p = x->chor->env;
    struct svc_order_view v;
    char account[AG_DOM_ID_MAX];
    int rc = load(p, order, &v, account, err);
    if (rc || v.status != AG_ORDER_PENDING) return rc;
    char why[128];
    if (injected(x, S_PAY, false, why))
        return rx_record(x, d, &svc_payment_type, order, "PaymentFailed",
                         json_pack("{s:s, s:s}", "orderId", order, "reason", why), err);
    json_t *ok = json_pack("{s:s, s:s, s:o}", "orderId", order, "accountId", account, "amount",
                           ag_money_to_json(&v.total));
    if (v.total.amount == 0)
        return rx_record(x, d, &svc_payment_type, order, "OrderPaymentCaptured", ok, err);
    struct ag_payment_charge c = {order, v.total, svc_now_ms()};
    struct rx_cmd rc_cmd = {.ta = &svc_account_type,
                            .ida = account,
                            .tb = &svc_payment_type,
                            .idb = order,
                            .fn2 = d_payment_charge,
                            .cmd = &c,
                            .out = 1,
                            .type = {"OrderPaymentCaptured"},
                            .data = {ok}};
    rc = rx_exec(x, d, &rc_cmd, err);
    json_decref(ok);
    if (rc && business(rc)) {
        char reason[sizeof err->msg];
        snprintf(reason, sizeof reason, "%s", err->msg);
        return rx_record(x, d, &svc_payment_type, order, "PaymentFailed",
                         json_pack("{s:s, s:s}", "orderId", order, "reason", reason), err);
    }
    return rc;
}

static int refund(struct reactor *x, const struct ag_bus_delivery *d, const char *order,
                  struct ag_err *err)
{
    struct svc_env *p = x->chor->env;
    if (!stream_has(p, "payment", order, "OrderPaymentCaptured") ||
        stream_has(p, "payment", order, "OrderPaymentRefunded") ||
        stream_has(p, "payment", order, "CompensationFailed"))
        return 0;
    char why[128];
    if (injected(x, S_PAY, true, why))
        return comp_failed(x, d, &svc_payment_type, order, S_PAY, why, err);
    struct svc_order_view v;
    char account[AG_DOM_ID_MAX];
    int rc = load(p, order, &v, account, err);
    if (rc) return rc;
    json_t *ok = json_pack("{s:s, s:s, s:o}", "orderId", order, "accountId", account, "amount",
                           ag_money_to_json(&v.total));
    if (v.total.amount == 0)
        return rx_record(x, d, &svc_payment_type, order, "OrderPaymentRefunded", ok, err);
    struct ag_payment_refund r = {order, svc_now_ms()};
    struct rx_cmd c = {.ta = &svc_account_type,
                       .ida = account,
                       .tb = &svc_payment_type,
                       .idb = order,
                       .fn2 = d_payment_refund,
                       .cmd = &r,
                       .out = 1,
                       .type = {"OrderPaymentRefunded"},
                       .data = {ok}};
    rc = rx_exec(x, d, &c, err);
    json_decref(ok);
    return rc;
}

/* ---- shipping ---- */

static int arrange(struct reactor *x, const struct ag_bus_delivery *d, const char *order,
                   struct ag_err *err)
{
    struct svc_env *p = x->chor->env;
    struct svc_order_view v;
    int rc = load(p, order, &v, NULL, err);
    if (rc || v.status != AG_ORDER_PENDING) return rc;
    char why[128];
    if (injected(x, S_SHIP, false, why))
        return rx_record(x, d, &svc_shipment_type, order, "ShipmentFailed",
                         json_pack("{s:s, s:s}", "orderId", order, "reason", why), err);
    char ship_id[AG_UUID_STRLEN + 1], track[32];
    svc_new_id(ship_id, "shipments", order);
    tracking_number(order, track);
    struct ag_shipment_arrange a = {ship_id, order, &v.address, track, v.customer_id};
    struct rx_cmd c = {
        .ta = &svc_shipment_type, .ida = order, .fn1 = d_shipment_arrange, .cmd = &a};
    rc = rx_exec(x, d, &c, err);
    if (rc && business(rc)) {
        char reason[sizeof err->msg];
        snprintf(reason, sizeof reason, "%s", err->msg);
        return rx_record(x, d, &svc_shipment_type, order, "ShipmentFailed",
                         json_pack("{s:s, s:s}", "orderId", order, "reason", reason), err);
    }
    return rc;
}

static int unarrange(struct reactor *x, const struct ag_bus_delivery *d, const char *order,
                     const char *reason, struct ag_err *err)
{
    struct svc_env *p = x->chor->env;
    if (!stream_has(p, "shipment", order, AG_EV_SHIPMENT_ARRANGED) ||
        stream_has(p, "shipment", order, AG_EV_SHIPMENT_CANCELLED) ||
        stream_has(p, "shipment", order, "CompensationFailed"))
        return 0;
    char why[128];
    if (injected(x, S_SHIP, true, why))
        return comp_failed(x, d, &svc_shipment_type, order, S_SHIP, why, err);
    struct ag_shipment_cancel sc = {reason};
    struct rx_cmd c = {
        .ta = &svc_shipment_type, .ida = order, .fn1 = d_shipment_cancel, .cmd = &sc};
    return rx_exec(x, d, &c, err);
}

/* ---- ordering ---- */

static int cancel(struct reactor *x, const struct ag_bus_delivery *d, const char *order,
                  const char *reason, const char *why_type, struct ag_err *err)
{
    struct svc_env *p = x->chor->env;
    struct svc_order_view v;
    int rc = load(p, order, &v, NULL, err);
    if (rc || v.status != AG_ORDER_PENDING) return rc;
    json_t *fail = why_type ? json_pack("{s:s, s:s}", "orderId", order, "reason", reason) : NULL;
    char why[128];
    if (injected(x, S_PLACE, true, why)) { /* the order stays pending: the flow failed */
        const char *name = x->chor->p->place_order_steps[S_PLACE].name;
        AG_ERROR("saga.compensation_failed", AG_LS("order", order), AG_LS("step", name),
                 AG_LS("error", why), AG_LS("mode", "choreography"));
        json_t *cf = json_pack("{s:s, s:s, s:s}", "orderId", order, "step", name, "error", why);
        struct rx_cmd c = {.ta = &svc_order_type,
                           .ida = order,
                           .type = {"CompensationFailed", why_type},
                           .data = {cf, fail}};
        rc = rx_exec(x, d, &c, err);
        json_decref(cf);
        json_decref(fail);
        return rc;
    }
    struct ag_order_cancel oc = {reason};
    struct rx_cmd c = {.ta = &svc_order_type,
                       .ida = order,
                       .fn1 = d_order_cancel,
                       .cmd = &oc,
                       .type = {why_type},
                       .data = {fail}};
    rc = rx_exec(x, d, &c, err);
    json_decref(fail);
    return rc;
}

static int confirm(struct reactor *x, const struct ag_bus_delivery *d, const char *order,
                   struct ag_err *err)
{
    struct svc_env *p = x->chor->env;
    struct svc_order_view v;
    int rc = load(p, order, &v, NULL, err);
    if (rc || v.status != AG_ORDER_PENDING) return rc;
    char why[128];
    if (injected(x, S_CONFIRM, false, why))
        return cancel(x, d, order, why, "OrderConfirmationFailed", err);
    char track[32];
    tracking_number(order, track);
    struct ag_order_confirm oc = {track};
    struct rx_cmd c = {.ta = &svc_order_type, .ida = order, .fn1 = d_order_confirm, .cmd = &oc};
    rc = rx_exec(x, d, &c, err);
    if (rc && business(rc)) {
        char reason[sizeof err->msg];
        snprintf(reason, sizeof reason, "%s", err->msg);
        return cancel(x, d, order, reason, "OrderConfirmationFailed", err);
    }
    return rc;
}

/* ---- dispatch ---- */

static bool is(const char *type, const char *name)
{
    const char *dot = type ? strrchr(type, '.') : NULL;
    return dot && strcmp(dot + 1, name) == 0;
}

/* The integration events each context reacts to (handle() below): the others are
 * acknowledged without reading the inbox or parsing them. */
static const char *const reacts_to[C_COUNT][5] = {
    [C_INVENTORY] = {AG_EV_ORDER_PLACED, "PaymentFailed", "ShipmentFailed", AG_EV_ORDER_CANCELLED},
    [C_PAYMENTS] = {"OrderStockReserved", "ShipmentFailed", AG_EV_ORDER_CANCELLED},
    [C_SHIPPING] = {"OrderPaymentCaptured", AG_EV_ORDER_CANCELLED},
    [C_ORDERING] = {AG_EV_SHIPMENT_ARRANGED, "PaymentFailed", "ShipmentFailed",
                    "StockReservationFailed"},
};

static bool wants(void *ud, const struct ag_bus_delivery *d)
{
    const struct reactor *x = ud;
    for (size_t i = 0; i < AG_ARRAY_SIZE(reacts_to[0]) && reacts_to[x->which][i]; i++)
        if (is(d->msg.type, reacts_to[x->which][i])) return true;
    return false;
}

static int handle(void *ud, const struct ag_bus_delivery *d, struct ag_err *err)
{
    struct reactor *x = ud;
    const char *t = d->msg.type;
    json_t *data =
        json_loadb(d->msg.data ? d->msg.data : "{}", d->msg.data ? d->msg.data_len : 2, 0, NULL);
    const char *order = json_string_value(json_object_get(data, "orderId"));
    const char *reason = json_string_value(json_object_get(data, "reason"));
    if (!reason) reason = "cancelled";
    bool failure = is(t, "PaymentFailed") || is(t, "ShipmentFailed");
    int rc = 0;
    if (!order) {
        rc = 0; /* not about an order: not for us */
    } else if (x->which == C_INVENTORY) {
        if (is(t, AG_EV_ORDER_PLACED))
            rc = reserve(x, d, order, err);
        else if (failure || is(t, AG_EV_ORDER_CANCELLED))
            rc = release(x, d, order, reason, err);
    } else if (x->which == C_PAYMENTS) {
        if (is(t, "OrderStockReserved"))
            rc = charge(x, d, order, err);
        else if (is(t, "ShipmentFailed") || is(t, AG_EV_ORDER_CANCELLED))
            rc = refund(x, d, order, err);
    } else if (x->which == C_SHIPPING) {
        if (is(t, "OrderPaymentCaptured"))
            rc = arrange(x, d, order, err);
        else if (is(t, AG_EV_ORDER_CANCELLED))
            rc = unarrange(x, d, order, reason, err);
    } else {
        if (is(t, AG_EV_SHIPMENT_ARRANGED))
            rc = confirm(x, d, order, err);
        else if (failure || is(t, "StockReservationFailed"))
            rc = cancel(x, d, order, reason, NULL, err);
    }
    json_decref(data);
    return rc;
}

static void *reactor_main(void *arg)
{
    struct reactor *x = arg;
    ag_thread_name("ag-chor-react");
    while (!atomic_load(&x->chor->stop)) {
        struct ag_err err;
        ag_err_clear(&err);
        if (ag_bus_worker_poll(x->w, 64, 200, NULL, &err)) {
            struct timespec ts = {0, 100000000L};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

/* ---- life ---- */

int svc_chor_start(struct ag_platform *p, struct svc_chor **out, struct ag_err *err)
{
    *out = NULL;
    struct svc_chor *c = ag_calloc(1, sizeof *c);
    if (!c) return ag_err_set(err, AG_ENOMEM, "out of memory");
    c->p = p;
    c->env = &p->env;
    int rc = 0;
    /* agora serve: a context's reactions run where the context is served */
    static const char *const context_of[C_COUNT] = {"inventory", "payments", "shipping",
                                                    "ordering"};
    for (int i = 0; i < C_COUNT && !rc; i++) {
        struct reactor *x = &c->r[i];
        if (p->cfg.contexts && !(p->cfg.contexts & ag_platform_context_bit(context_of[i])))
            continue;
        x->chor = c;
        x->which = i;
        x->rng = 0x9E3779B97F4A7C15ull ^ ((uint64_t)time(NULL) << 8) ^ (uint64_t)(i + 1);
        struct ag_bus_worker_config wc = {.consumer = {.name = consumer_names[i],
                                                       .filter = "agora.>",
                                                       .max_deliver = 10,
                                                       .ack_wait_ms = 30000,
                                                       .backoff_ms = {50, 200, 500, 1000, 2000},
                                                       .nbackoff = 5},
                                          .store = p->store,
                                          .handler = handle,
                                          .ud = x,
                                          .lanes = CHOR_LANES,
                                          .wants = wants};
        rc = ag_bus_worker_open(p->bus, &wc, &x->w, err);
        if (!rc && pthread_create(&x->th, NULL, reactor_main, x) != 0)
            rc = ag_err_set(err, AG_ENOMEM, "cannot start a choreography thread");
        if (!rc) x->started = true;
    }
    if (rc) {
        svc_chor_stop(c);
        return rc;
    }
    AG_INFO("saga.choreography", AG_LS("bus", ag_bus_name(p->bus)));
    *out = c;
    return 0;
}

struct ag_bus_worker *svc_chor_worker(const struct svc_chor *c, size_t i)
{
    for (size_t k = 0; c && k < C_COUNT; k++) /* the i-th of those running here */
        if (c->r[k].w && i-- == 0) return c->r[k].w;
    return NULL;
}

void svc_chor_stop(struct svc_chor *c)
{
    if (!c) return;
    atomic_store(&c->stop, true);
    for (int i = 0; i < C_COUNT; i++) {
        if (c->r[i].started) pthread_join(c->r[i].th, NULL);
        ag_bus_worker_close(c->r[i].w);
    }
    ag_free(c);
}
