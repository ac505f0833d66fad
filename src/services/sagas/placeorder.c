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
 * The four participant actions and their compensations also come asynchronous
 * (`action_async`, `compensate_async`): a saga worker starts the command and
 * moves on, and the participant's events commit in one multi-stream append with
 * the step's StepSucceeded or CompensationSucceeded (see the section below); the
 * two-stream steps through svc_exec2_async, so that append holds the stock item
 * or account, the reservation or payment, and the saga's record.
 * PlaceOrder's check is a read answered at once (its StepSucceeded is the
 * engine's own append). ConfirmOrder's compensation (a read that may answer
 * AG_EEXISTS) stays synchronous.
 *
 * Fault injection: AGORA_FAULT_<STEP>="rate[,latency_ms[,compensation_rate]]",
 * e.g. AGORA_FAULT_PROCESSPAYMENT=0.3 fails 30% of payment attempts.
 */
#include <ctype.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/internal.h"

void svc_view_order(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    const struct ag_order *o = state;
    struct svc_order_view *v = ud;
    v->exists = o->exists;
    v->status = o->status;
    snprintf(v->customer_id, sizeof v->customer_id, "%s", o->customer_id);
    v->n = o->nlines < 100 ? o->nlines : 100;
    memcpy(v->lines, o->lines, v->n * sizeof *v->lines);
    v->total = o->total;
    v->address = o->shipping_address;
}

static int load_order(struct svc_env *p, const json_t *data, struct svc_order_view *v,
                      const char **id, struct ag_err *err)
{
    *id = json_string_value(json_object_get(data, "orderId"));
    if (!*id) return ag_err_set(err, AG_EINVAL, "saga data has no orderId");
    memset(v, 0, sizeof *v);
    return svc_read(p, &svc_order_type, *id, svc_view_order, v, err);
}

static void view_account_id(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    snprintf(ud, AG_DOM_ID_MAX, "%s", ((const struct ag_customer *)state)->account_id);
}

int svc_account_of(struct svc_env *p, const char *customer_id, char out[AG_DOM_ID_MAX],
                   struct ag_err *err)
{
    out[0] = '\0';
    return svc_read(p, &svc_customer_type, customer_id, view_account_id, out, err);
}

/* ---- decide adapters ---- */

SVC_DECIDE2(reservation_hold)
SVC_DECIDE2(reservation_release)
SVC_DECIDE2(payment_charge)
SVC_DECIDE2(payment_refund)
SVC_DECIDE(shipment_arrange)
SVC_DECIDE(shipment_cancel)
SVC_DECIDE(order_confirm)
SVC_DECIDE(order_cancel)

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
    struct svc_order_view v;
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

static int release_lines(struct svc_env *p, const char *order_id, const struct svc_order_view *v,
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
    struct svc_order_view v;
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
    struct svc_order_view v;
    const char *id;
    int rc = load_order(ud, data, &v, &id, err);
    return rc ? rc : release_lines(ud, id, &v, v.n, reason, meta, err);
}

/* The order and its customer's account, for the payment step and its undo. */
static int order_account(void *ud, const json_t *data, struct svc_order_view *v, const char **id,
                         char account[AG_DOM_ID_MAX], struct ag_err *err)
{
    int rc = load_order(ud, data, v, id, err);
    return rc ? rc : svc_account_of(ud, v->customer_id, account, err);
}

static int charge(void *ud, const json_t *data, const char *key, const char *reason,
                  struct ag_err *err)
{
    AG_UNUSED(reason);
    char meta[256];
    step_meta(key, meta);
    struct svc_order_view v;
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
    struct svc_order_view v;
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
    struct svc_order_view v;
    const char *id;
    int rc = load_order(ud, data, &v, &id, err);
    if (rc) return rc;
    char ship_id[AG_UUID_STRLEN + 1], track[32];
    svc_new_id(ship_id, "shipments", id);
    tracking_number(id, track);
    struct ag_shipment_arrange a = {ship_id, id, &v.address, track, v.customer_id};
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
    struct svc_order_view v;
    const char *id;
    int rc = load_order(ud, data, &v, &id, err);
    if (rc) return rc;
    if (v.status == AG_ORDER_CONFIRMED || v.status == AG_ORDER_SHIPPED)
        return ag_err_set(err, AG_EEXISTS, "order %s is already %s", id,
                          ag_order_status_name(v.status));
    return 0;
}

/* ---- asynchronous actions and compensations: without blocking a worker ----
 *
 * Each does what its synchronous twin above does, through svc_exec_async, and
 * hands the step's success record (ag_saga_call_record) to its last command, so
 * the participant's events and StepSucceeded commit in one multi-stream append.
 * A failure is only reported: the engine then runs the synchronous action, which
 * finds what this attempt did by order id (a reservation made before a later line
 * failed is released there: all or nothing). */

struct acall {
    struct ag_saga_call *call;
    struct svc_env *p;
    const char *id;                /* the order id (in the saga's data, alive until done) */
    size_t line;                   /* reserve, release: the next line */
    void (*more)(struct acall *x); /* reserve, release: run the next line */
    bool with_record;              /* the last command carries the step's record */
    union {
        struct ag_reservation_hold reserve;
        struct ag_payment_charge charge;
        struct ag_shipment_arrange arrange;
        struct ag_order_confirm confirm;
        struct ag_reservation_release release;
        struct ag_payment_refund refund;
        struct ag_order_cancel cancel;
        struct ag_shipment_cancel unarrange;
    } cmd;
    const char *reason; /* release: the saga's (alive until done) */
    char account[AG_DOM_ID_MAX];
    char ship_id[AG_UUID_STRLEN + 1];
    char track[32];
    char meta[256];
    struct svc_order_view v; /* last: not cleared on reuse (load_order fills it) */
};

/* Calls are recycled: each is ~7 KB (the order view, 100 lines), and glibc
 * consolidates its fast bins before every allocation of that size — 2-3% of
 * the server's CPU under an order load (issue 11). A few are kept, under a
 * lock taken once per call and per finish. */
enum { ACALL_KEEP = 64 };
static pthread_mutex_t acall_mu = PTHREAD_MUTEX_INITIALIZER;
static struct acall *acall_spare[ACALL_KEEP];
static size_t acall_nspare;

static struct acall *acall_alloc(void)
{
    pthread_mutex_lock(&acall_mu);
    struct acall *x = acall_nspare ? acall_spare[--acall_nspare] : NULL;
    pthread_mutex_unlock(&acall_mu);
    if (!x && !(x = ag_malloc(sizeof *x))) return NULL;
    memset(x, 0, offsetof(struct acall, v));
    return x;
}

static void acall_release(struct acall *x)
{
    pthread_mutex_lock(&acall_mu);
    if (acall_nspare < ACALL_KEEP) {
        acall_spare[acall_nspare++] = x;
        x = NULL;
    }
    pthread_mutex_unlock(&acall_mu);
    ag_free(x);
}

static void acall_finish(struct acall *x, int rc, const struct ag_err *err)
{
    ag_saga_call_done(x->call, rc, err, rc == 0 && x->with_record);
    acall_release(x);
}

static struct acall *acall_new(void *ud, const char *key, struct ag_saga_call *call)
{
    struct acall *x = acall_alloc();
    if (!x) {
        struct ag_err err;
        ag_saga_call_done(call, ag_err_set(&err, AG_ENOMEM, "out of memory"), &err, false);
        return NULL;
    }
    x->call = call;
    x->p = ud;
    step_meta(key, x->meta);
    return x;
}

static void acall_cmd_done(void *ud, int rc, const struct ag_err *err)
{
    struct acall *x = ud;
    if (!rc && x->more && x->line < x->v.n) {
        x->more(x);
        return;
    }
    acall_finish(x, rc, err);
}

/* Run `c` asynchronously; the last command of the step carries its record. */
static void acall_exec(struct acall *x, const struct svc_cmd *c, bool last)
{
    const struct ag_append_part *rec = last ? ag_saga_call_record(x->call) : NULL;
    x->with_record = rec != NULL;
    struct svc_async a = {ag_saga_call_loop(x->call), rec, acall_cmd_done, x};
    int rc = svc_exec_async(x->p, c, &a);
    if (rc) {
        struct ag_err err;
        acall_finish(x, ag_err_set(&err, rc, "%s", ag_strerror(rc)), &err);
    }
}

/* Run the two-aggregate command `c` asynchronously (svc_exec2_async): both
 * aggregates' events, and the step's record when `last`, in one append. */
static void acall_exec2(struct acall *x, const struct svc_cmd2 *c, bool last)
{
    const struct ag_append_part *rec = last ? ag_saga_call_record(x->call) : NULL;
    x->with_record = rec != NULL;
    struct svc_async a = {ag_saga_call_loop(x->call), rec, acall_cmd_done, x};
    int rc = svc_exec2_async(x->p, c, &a);
    if (rc) {
        struct ag_err err;
        acall_finish(x, ag_err_set(&err, rc, "%s", ag_strerror(rc)), &err);
    }
}

static void reserve_next(struct acall *x)
{
    const struct ag_price_line *l = &x->v.lines[x->line++];
    x->cmd.reserve = (struct ag_reservation_hold){x->id, l->product_id, l->quantity};
    acall_exec2(x,
                &(struct svc_cmd2){&svc_stock_type, l->product_id, &svc_reservation_type, x->id,
                                   d_reservation_hold, &x->cmd.reserve, x->meta},
                x->line == x->v.n);
}

static void reserve_async(void *ud, const json_t *data, const char *key, const char *reason,
                          struct ag_saga_call *call)
{
    AG_UNUSED(reason);
    struct acall *x = acall_new(ud, key, call);
    if (!x) return;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = load_order(ud, data, &x->v, &x->id, &err);
    if (rc || x->v.n == 0) {
        acall_finish(x, rc, &err);
        return;
    }
    x->more = reserve_next;
    reserve_next(x);
}

static void charge_async(void *ud, const json_t *data, const char *key, const char *reason,
                         struct ag_saga_call *call)
{
    AG_UNUSED(reason);
    struct acall *x = acall_new(ud, key, call);
    if (!x) return;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = order_account(ud, data, &x->v, &x->id, x->account, &err);
    if (rc || x->v.total.amount == 0) {
        acall_finish(x, rc, &err);
        return;
    }
    x->cmd.charge = (struct ag_payment_charge){x->id, x->v.total, svc_now_ms()};
    acall_exec2(x,
                &(struct svc_cmd2){&svc_account_type, x->account, &svc_payment_type, x->id,
                                   d_payment_charge, &x->cmd.charge, x->meta},
                true);
}

static void arrange_async(void *ud, const json_t *data, const char *key, const char *reason,
                          struct ag_saga_call *call)
{
    AG_UNUSED(reason);
    struct acall *x = acall_new(ud, key, call);
    if (!x) return;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = load_order(ud, data, &x->v, &x->id, &err);
    if (rc) {
        acall_finish(x, rc, &err);
        return;
    }
    svc_new_id(x->ship_id, "shipments", x->id);
    tracking_number(x->id, x->track);
    x->cmd.arrange =
        (struct ag_shipment_arrange){x->ship_id, x->id, &x->v.address, x->track, x->v.customer_id};
    acall_exec(x,
               &(struct svc_cmd){&svc_shipment_type, x->id, d_shipment_arrange, &x->cmd.arrange,
                                 x->meta, NULL, NULL},
               true);
}

/* PlaceOrder's check: a local read, answered before returning (its record is
 * the engine's own append: there is no participant event to commit with it). */
static void place_check_async(void *ud, const json_t *data, const char *key, const char *reason,
                              struct ag_saga_call *call)
{
    struct ag_err err;
    ag_err_clear(&err);
    int rc = place_check(ud, data, key, reason, &err);
    ag_saga_call_done(call, rc, rc ? &err : NULL, false);
}

static void confirm_async(void *ud, const json_t *data, const char *key, const char *reason,
                          struct ag_saga_call *call)
{
    AG_UNUSED(reason);
    struct acall *x = acall_new(ud, key, call);
    if (!x) return;
    x->id = json_string_value(json_object_get(data, "orderId"));
    if (!x->id) x->id = "";
    tracking_number(x->id, x->track);
    x->cmd.confirm = (struct ag_order_confirm){x->track};
    acall_exec(x,
               &(struct svc_cmd){&svc_order_type, x->id, d_order_confirm, &x->cmd.confirm, x->meta,
                                 NULL, NULL},
               true);
}

/* The compensations, the same way (their reason is the saga's, alive until done). */

static void release_next(struct acall *x)
{
    const struct ag_price_line *l = &x->v.lines[x->line++];
    x->cmd.release = (struct ag_reservation_release){x->id, l->product_id, x->reason};
    acall_exec2(x,
                &(struct svc_cmd2){&svc_stock_type, l->product_id, &svc_reservation_type, x->id,
                                   d_reservation_release, &x->cmd.release, x->meta},
                x->line == x->v.n);
}

static void release_async(void *ud, const json_t *data, const char *key, const char *reason,
                          struct ag_saga_call *call)
{
    struct acall *x = acall_new(ud, key, call);
    if (!x) return;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = load_order(ud, data, &x->v, &x->id, &err);
    if (rc || x->v.n == 0) {
        acall_finish(x, rc, &err);
        return;
    }
    x->reason = reason;
    x->more = release_next;
    release_next(x);
}

static void refund_async(void *ud, const json_t *data, const char *key, const char *reason,
                         struct ag_saga_call *call)
{
    AG_UNUSED(reason);
    struct acall *x = acall_new(ud, key, call);
    if (!x) return;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = order_account(ud, data, &x->v, &x->id, x->account, &err);
    if (rc) {
        acall_finish(x, rc, &err);
        return;
    }
    x->cmd.refund = (struct ag_payment_refund){x->id, svc_now_ms()};
    acall_exec2(x,
                &(struct svc_cmd2){&svc_account_type, x->account, &svc_payment_type, x->id,
                                   d_payment_refund, &x->cmd.refund, x->meta},
                true);
}

static void unarrange_async(void *ud, const json_t *data, const char *key, const char *reason,
                            struct ag_saga_call *call)
{
    struct acall *x = acall_new(ud, key, call);
    if (!x) return;
    x->id = json_string_value(json_object_get(data, "orderId"));
    if (!x->id) x->id = "";
    if (!svc_stream_exists(ud, "shipment", x->id)) {
        acall_finish(x, 0, NULL);
        return;
    }
    x->cmd.unarrange = (struct ag_shipment_cancel){reason};
    acall_exec(x,
               &(struct svc_cmd){&svc_shipment_type, x->id, d_shipment_cancel, &x->cmd.unarrange,
                                 x->meta, NULL, NULL},
               true);
}

static void place_undo_async(void *ud, const json_t *data, const char *key, const char *reason,
                             struct ag_saga_call *call)
{
    struct acall *x = acall_new(ud, key, call);
    if (!x) return;
    x->id = json_string_value(json_object_get(data, "orderId"));
    if (!x->id) x->id = "";
    x->cmd.cancel = (struct ag_order_cancel){reason};
    acall_exec(x,
               &(struct svc_cmd){&svc_order_type, x->id, d_order_cancel, &x->cmd.cancel, x->meta,
                                 NULL, NULL},
               true);
}

/* ---- participants in another instance (issue 14; sagas/remote.c) ---- */

/* The context owning each step (SVC_SAGA_STEPS, in order). */
static const char *const step_context[SVC_SAGA_STEPS] = {"ordering", "inventory", "payments",
                                                         "shipping", "ordering"};

static const struct ag_saga_step local_steps[SVC_SAGA_STEPS] = {
    {"PlaceOrder", place_check, place_undo, {0}, NULL, place_check_async, place_undo_async},
    {"ReserveInventory", reserve, release, {0}, NULL, reserve_async, release_async},
    {"ProcessPayment", charge, refund, {0}, NULL, charge_async, refund_async},
    {"ArrangeShipment", arrange, unarrange, {0}, NULL, arrange_async, unarrange_async},
    {"ConfirmOrder", confirm, unconfirm, {0}, NULL, confirm_async, NULL},
};

static int remote_sync(void *ud, size_t i, bool comp, const json_t *data, const char *key,
                       const char *reason, struct ag_err *err)
{
    struct svc_rstep s = {step_context[i], local_steps[i].name, comp, data, key, reason};
    return svc_remote_step(((struct svc_env *)ud)->remote, &s, err);
}

static void remote_async(void *ud, size_t i, bool comp, const json_t *data, const char *key,
                         const char *reason, struct ag_saga_call *call)
{
    struct svc_rstep s = {step_context[i], local_steps[i].name, comp, data, key, reason};
    svc_remote_step_async(((struct svc_env *)ud)->remote, &s, call);
}

#define REMOTE_STEP(i)                                                                             \
    static int r_act##i(void *ud, const json_t *d, const char *k, const char *why,                 \
                        struct ag_err *e)                                                          \
    {                                                                                              \
        return remote_sync(ud, i, false, d, k, why, e);                                            \
    }                                                                                              \
    static int r_comp##i(void *ud, const json_t *d, const char *k, const char *why,                \
                         struct ag_err *e)                                                         \
    {                                                                                              \
        return remote_sync(ud, i, true, d, k, why, e);                                             \
    }                                                                                              \
    static void r_act_async##i(void *ud, const json_t *d, const char *k, const char *why,          \
                               struct ag_saga_call *c)                                             \
    {                                                                                              \
        remote_async(ud, i, false, d, k, why, c);                                                  \
    }                                                                                              \
    static void r_comp_async##i(void *ud, const json_t *d, const char *k, const char *why,         \
                                struct ag_saga_call *c)                                            \
    {                                                                                              \
        remote_async(ud, i, true, d, k, why, c);                                                   \
    }
REMOTE_STEP(0)
REMOTE_STEP(1)
REMOTE_STEP(2)
REMOTE_STEP(3)
REMOTE_STEP(4)

void svc_place_order_remote(struct ag_platform *p)
{
    static const struct ag_saga_step remote[SVC_SAGA_STEPS] = {
        {NULL, r_act0, r_comp0, {0}, NULL, r_act_async0, r_comp_async0},
        {NULL, r_act1, r_comp1, {0}, NULL, r_act_async1, r_comp_async1},
        {NULL, r_act2, r_comp2, {0}, NULL, r_act_async2, r_comp_async2},
        {NULL, r_act3, r_comp3, {0}, NULL, r_act_async3, r_comp_async3},
        {NULL, r_act4, r_comp4, {0}, NULL, r_act_async4, r_comp_async4},
    };
    for (size_t i = 0; i < SVC_SAGA_STEPS; i++) {
        if (p->cfg.contexts & ag_platform_context_bit(step_context[i])) continue;
        struct ag_saga_step *st = &p->place_order_steps[i];
        st->action = remote[i].action;
        st->compensate = remote[i].compensate;
        st->action_async = remote[i].action_async;
        st->compensate_async = remote[i].compensate_async;
        AG_INFO("saga.remote_step", AG_LS("step", st->name), AG_LS("context", step_context[i]));
    }
}

/* POST /internal/v1/steps: run a step here for an orchestrator elsewhere. Answers
 * 200, or the step's AG_E* code in {"code", "detail"} (422; 503 when the store
 * cannot write or the context is not served here: another instance may). */
static int internal_step(struct svc_job *j)
{
    const char *ctx = json_string_value(json_object_get(j->body, "context"));
    const char *name = json_string_value(json_object_get(j->body, "step"));
    const char *key = json_string_value(json_object_get(j->body, "key"));
    const char *reason = json_string_value(json_object_get(j->body, "reason"));
    const json_t *data = json_object_get(j->body, "data");
    bool comp = json_is_true(json_object_get(j->body, "compensate"));
    size_t i = 0;
    while (i < SVC_SAGA_STEPS && !(name && strcmp(local_steps[i].name, name) == 0)) i++;
    if (!ctx || !key || !json_is_object(data) || i == SVC_SAGA_STEPS ||
        strcmp(step_context[i], ctx) != 0)
        return svc_problem(j, 400, "Invalid request",
                           "needs context, a PlaceOrder step of it, key and data");
    if (j->env->contexts && !(j->env->contexts & ag_platform_context_bit(ctx)))
        return svc_ok(j, 503,
                      json_pack("{s:i, s:s}", "code", AG_EUNAVAILABLE, "detail",
                                "this instance does not serve that context"));
    ag_saga_fn fn = comp ? local_steps[i].compensate : local_steps[i].action;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = fn ? fn(j->env, data, key, reason, &err) : 0;
    if (!rc) return svc_ok(j, 200, json_pack("{s:b}", "ok", true));
    return svc_ok(j, rc == AG_EUNAVAILABLE ? 503 : 422,
                  json_pack("{s:i, s:s, s:s}", "code", rc, "error", ag_errname(rc), "detail",
                            ag_err_msg(&err, rc)));
}

static const struct svc_route internal_routes[] = {
    {"POST", "/internal/v1/steps", SVC_SERVICE, internal_step, NULL, NULL, {NULL}},
};

const struct svc_context svc_internal_context = {"internal", internal_routes, 1, NULL, RM_COUNT};

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
    memcpy(p->place_order_steps, local_steps, sizeof local_steps);
    if (p->remote) svc_place_order_remote(p); /* participants served elsewhere */
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
    if (p->cfg.choreography) return 0; /* the contexts react on the bus (choreography.c) */
    const char *saga = json_string_value(json_object_get(d, "sagaId"));
    if (!saga || ev->stream_len <= 6) return 0;
    char order[128];
    if (ag_es_stream_id(&svc_order_type, ev->stream, ev->stream_len, order, sizeof order))
        return 0; /* not one of ours (the type owns its prefix) */
    json_t *data = json_pack("{s:s}", "orderId", order);
    struct ag_err err;
    ag_err_clear(&err);
    struct ag_event cause = *ev; /* its whole metadata: it may name the next event's */
    char *meta = NULL;
    if (ag_es_meta_is_next(ev)) {
        json_t *m = ag_es_event_meta(p->store, ev, NULL, 0);
        if ((meta = m ? json_dumps(m, JSON_COMPACT) : NULL))
            cause.metadata = meta, cause.metadata_len = strlen(meta);
        json_decref(m);
    }
    int rc = ag_saga_start_async(p->sagas, "PlaceOrder", saga, data, &cause, &err);
    free(meta);
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
