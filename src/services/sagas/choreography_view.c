/*
 * The choreographed PlaceOrder as the sagas read model sees it: the events the
 * reactions record (choreography.c) folded into the same `sagas` rows, in the
 * same shape as an orchestrated saga (steps PlaceOrder, ReserveInventory,
 * ProcessPayment, ArrangeShipment, ConfirmOrder, each pending, succeeded, failed,
 * compensated or compensation_failed), so GET /api/v1/sagas/{id} and
 * /admin/sagas answer alike in both modes.
 *
 * This projection replaces the saga projection in choreography mode and hands
 * saga-<id> events to it (sagas of an orchestrated run before the switch). The
 * saga id is the OrderPlaced's sagaId; `chor_orders` maps an order to it, since
 * the later events are keyed by order id (per-order streams). A step's
 * compensation after its failure leaves it "failed", as in orchestration. The
 * status: completed once the order is confirmed; failed when a compensation
 * failed; compensated when a step failed (or the order was cancelled) and no
 * step is left succeeded; running otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/internal.h"

static const char *const step_names[] = {"PlaceOrder", "ReserveInventory", "ProcessPayment",
                                         "ArrangeShipment", "ConfirmOrder"};
#define NSTEPS 5

static const char *const chor_types[] = {
    AG_SAGA_EV_STARTED,        AG_SAGA_EV_STEP_SUCCEEDED, AG_SAGA_EV_STEP_FAILED,
    AG_SAGA_EV_COMP_SUCCEEDED, AG_SAGA_EV_COMP_FAILED,    AG_SAGA_EV_COMPLETED,
    AG_SAGA_EV_COMPENSATED,    AG_SAGA_EV_FAILED,         AG_SAGA_EV_RETRIED,
    AG_EV_ORDER_PLACED,        AG_EV_ORDER_CONFIRMED,     AG_EV_ORDER_CANCELLED,
    "OrderConfirmationFailed", "OrderStockReserved",      "StockReservationFailed",
    "OrderStockReleased",      "OrderPaymentCaptured",    "PaymentFailed",
    "OrderPaymentRefunded",    AG_EV_SHIPMENT_ARRANGED,   "ShipmentFailed",
    AG_EV_SHIPMENT_CANCELLED,  "CompensationFailed",      NULL};

/* What an event says about a step. */
static const struct {
    const char *type;
    int step;
    const char *status;
} moves[] = {
    {"OrderStockReserved", 1, "succeeded"},
    {"StockReservationFailed", 1, "failed"},
    {"OrderStockReleased", 1, "compensated"},
    {"OrderPaymentCaptured", 2, "succeeded"},
    {"PaymentFailed", 2, "failed"},
    {"OrderPaymentRefunded", 2, "compensated"},
    {AG_EV_SHIPMENT_ARRANGED, 3, "succeeded"},
    {"ShipmentFailed", 3, "failed"},
    {AG_EV_SHIPMENT_CANCELLED, 3, "compensated"},
    {AG_EV_ORDER_CONFIRMED, 4, "succeeded"},
    {"OrderConfirmationFailed", 4, "failed"},
    {AG_EV_ORDER_CANCELLED, 0, "compensated"},
};

static struct ag_projection inner; /* the saga projection (one per process) */
static char schema[2048];

static int text_row(const struct ag_rm_row *row, void *ud)
{
    char b[AG_RM_ID_MAX];
    const char *t = ag_rm_id(row, 0, b);
    snprintf(ud, 256, "%s", t ? t : "");
    return 1;
}

static int steps_row(const struct ag_rm_row *row, void *ud)
{
    *(json_t **)ud = ag_saga_steps_json(ag_rm_text(row, 0));
    return 1;
}

static int placed(struct ag_rm *db, const char *order, const json_t *d, const char *ts)
{
    const char *saga = json_string_value(json_object_get(d, "sagaId"));
    if (!saga) return 0;
    json_t *steps = json_array();
    for (int i = 0; i < NSTEPS; i++)
        json_array_append_new(steps, json_pack("{s:s, s:s}", "name", step_names[i], "status",
                                               i == 0 ? "succeeded" : "pending"));
    char *text = ag_saga_steps_text(steps);
    json_decref(steps);
    uint8_t ob[16], sb[16];
    struct ag_rm_arg m[] = {ag_rm_id_arg(order, ob), ag_rm_id_arg(saga, sb)};
    int rc = ag_rm_exec(db,
                        "INSERT INTO chor_orders(order_id, saga_id) VALUES(?1, ?2)"
                        " ON CONFLICT DO NOTHING",
                        m, 2, NULL);
    struct ag_rm_arg a[] = {m[1], AG_RM_TEXT(step_names[1]), AG_RM_TEXT(text), AG_RM_TEXT(ts)};
    if (!rc)
        rc = ag_rm_exec(db,
                        "INSERT INTO sagas(id, type, status, current_step, steps, started_at,"
                        " updated_at) VALUES(?1, 'PlaceOrder', 'running', ?2, ?3, ?4, ?4)"
                        " ON CONFLICT DO NOTHING",
                        a, 4, NULL);
    free(text);
    return rc;
}

static const char *status_of(json_t *s)
{
    return json_string_value(json_object_get(s, "status")) ?: "pending";
}

/* The saga's status, current step and reason from its steps. */
static void summarise(json_t *steps, const char **status, const char **current, struct ag_buf *why)
{
    bool comp_failed = false, left = false;
    *current = NULL;
    const char *first_error = NULL;
    for (int i = 0; i < NSTEPS; i++) {
        json_t *s = json_array_get(steps, (size_t)i);
        const char *st = status_of(s);
        if (!*current && strcmp(st, "succeeded") != 0) *current = step_names[i];
        if (strcmp(st, "failed") == 0) {
            if (!first_error) first_error = json_string_value(json_object_get(s, "error"));
        }
        if (strcmp(st, "compensation_failed") == 0) comp_failed = true;
        if (strcmp(st, "succeeded") == 0 && i > 0) left = true;
    }
    bool cancelled = strcmp(status_of(json_array_get(steps, 0)), "succeeded") != 0;
    if (first_error) ag_buf_puts(why, first_error);
    if (comp_failed) {
        *status = "failed";
        ag_buf_puts(why, first_error ? "; compensation failed: " : "compensation failed: ");
        for (int i = 0, k = 0; i < NSTEPS; i++) {
            json_t *s = json_array_get(steps, (size_t)i);
            if (strcmp(status_of(s), "compensation_failed") != 0) continue;
            ag_buf_printf(why, "%s%s (%s)", k++ ? ", " : "", step_names[i],
                          json_string_value(json_object_get(s, "compensationError")) ?: "failed");
        }
    } else if (strcmp(status_of(json_array_get(steps, 4)), "succeeded") == 0) {
        *status = "completed", *current = NULL;
    } else if (cancelled && !left) { /* a failure (or a cancel) and all undone */
        *status = "compensated";
    } else {
        *status = "running";
    }
}

/* An id bound as an argument (ag_rm_id_arg) with the bytes it borrows. */
struct id_arg {
    uint8_t b[16];
    struct ag_rm_arg a;
};

/* The saga of choreographed order `order` into saga ("" when none). */
static int chor_saga_of(struct ag_rm *db, const char *order, char saga[256])
{
    struct id_arg o;
    o.a = ag_rm_id_arg(order, o.b);
    return ag_rm_query(db, "SELECT saga_id FROM chor_orders WHERE order_id=?1", &o.a, 1, text_row,
                       saga, NULL);
}

static int step_event(struct ag_rm *db, const char *order, const char *type, const json_t *d,
                      const char *ts)
{
    int idx = -1;
    const char *to = NULL;
    for (size_t i = 0; i < AG_ARRAY_SIZE(moves) && idx < 0; i++)
        if (strcmp(moves[i].type, type) == 0) idx = moves[i].step, to = moves[i].status;
    const char *comp_error = NULL;
    if (strcmp(type, "CompensationFailed") == 0) {
        const char *name = json_string_value(json_object_get(d, "step"));
        for (int i = 0; name && i < NSTEPS; i++)
            if (strcmp(step_names[i], name) == 0) idx = i;
        to = "compensation_failed";
        comp_error = json_string_value(json_object_get(d, "error")) ?: "failed";
    }
    if (idx < 0) return 0;
    char saga[256] = "";
    int rc = chor_saga_of(db, order, saga);
    if (rc || !saga[0]) return rc; /* not a choreographed order */
    json_t *steps = NULL;
    struct id_arg sa;
    sa.a = ag_rm_id_arg(saga, sa.b);
    rc = ag_rm_query(db, "SELECT steps FROM sagas WHERE id=?1", &sa.a, 1, steps_row, &steps, NULL);
    if (rc || !steps) return rc;
    json_t *s = json_array_get(steps, (size_t)idx);
    const char *was = status_of(s);
    /* a failed step stays failed once undone; a failed compensation stays so */
    bool keep = (strcmp(to, "compensated") == 0 && strcmp(was, "failed") == 0) ||
                strcmp(was, "compensation_failed") == 0;
    if (!keep) json_object_set_new(s, "status", json_string(to));
    const char *reason = json_string_value(json_object_get(d, "reason"));
    if (strcmp(to, "failed") == 0 && reason) json_object_set_new(s, "error", json_string(reason));
    if (comp_error) json_object_set_new(s, "compensationError", json_string(comp_error));
    const char *status, *current;
    struct ag_buf why;
    ag_buf_init(&why);
    summarise(steps, &status, &current, &why);
    char *text = ag_saga_steps_text(steps);
    struct ag_rm_arg args[] = {AG_RM_TEXT(text),    AG_RM_TEXT(status),
                               AG_RM_TEXT(current), AG_RM_TEXT(why.len ? why.data : NULL),
                               AG_RM_TEXT(ts),      sa.a};
    rc = ag_rm_exec(db,
                    "UPDATE sagas SET steps=?1, status=?2, current_step=?3,"
                    " reason=COALESCE(?4, reason), updated_at=?5 WHERE id=?6",
                    args, 6, NULL);
    free(text);
    ag_buf_free(&why);
    json_decref(steps);
    return rc;
}

static int apply(struct ag_rm *db, const struct ag_event *ev, const json_t *d, void *ud)
{
    AG_UNUSED(ud);
    if (ev->stream_len > 5 && memcmp(ev->stream, "saga-", 5) == 0)
        return inner.apply(db, ev, d, inner.ud);
    static const char *const prefixes[] = {"order-", "reservation-", "payment-", "shipment-"};
    const char *order = NULL;
    size_t olen = 0;
    for (size_t i = 0; i < AG_ARRAY_SIZE(prefixes) && !order; i++) {
        size_t pl = strlen(prefixes[i]);
        if (ev->stream_len > pl && memcmp(ev->stream, prefixes[i], pl) == 0)
            order = ev->stream + pl, olen = ev->stream_len - pl;
    }
    if (!order || olen >= 128) return 0;
    char id[128], type[64], ts[32];
    snprintf(id, sizeof id, "%.*s", (int)olen, order);
    snprintf(type, sizeof type, "%.*s", (int)ev->type_len, ev->type);
    snprintf(ts, sizeof ts, "%llu",
             (unsigned long long)ev->time_ns); /* Unix ns, as the sagas fold */
    if (strcmp(type, AG_EV_ORDER_PLACED) == 0 && memcmp(ev->stream, "order-", 6) == 0)
        return placed(db, id, d, ts);
    return step_event(db, id, type, d, ts);
}

void svc_chor_projection(struct ag_projection *sagas)
{
    inner = *sagas;
    snprintf(schema, sizeof schema,
             "%s CREATE TABLE IF NOT EXISTS chor_orders(order_id BLOB PRIMARY KEY,"
             " saga_id BLOB NOT NULL);",
             inner.schema ? inner.schema : "");
    sagas->schema = schema;
    sagas->types = chor_types;
    sagas->apply = apply;
    sagas->ud = NULL;
}
