/*
 * Draft orders: the seeds' "only a Draft order changes", over HTTP.
 *
 *   POST   /api/v1/orders {"draft": true, customerId?, items?, currency?}
 *            → 201, OrderCreated + ItemAdded… (status "draft")
 *   POST   /api/v1/orders/{id}/items {productId, quantity}   → 200, ItemAdded
 *   DELETE /api/v1/orders/{id}/items/{productId}             → 200, ItemRemoved
 *   POST   /api/v1/orders/{id}/place {shippingAddress | shippingAddressId,
 *            promotionCodes?}                                → 202, OrderPlaced
 *
 * All are the order's owner's (or an admin's); another customer's order is 404.
 * A line's unit price is the product's price when it was added (ItemAdded
 * carries it), so a price change later does not move a draft's total; adding
 * more of a product whose price has changed since is a 409 (remove it, add it
 * again). A change to an order that is no longer a draft is 409.
 *
 * Placing appends OrderPlaced to the draft's stream — the same event one-step
 * placement appends after its OrderCreated and ItemAdded — so the saga starter
 * (sagas/placeorder.c) starts the PlaceOrder saga exactly as for a one-step
 * order. The quote is priced from the draft's lines (tier discount and
 * promotions as in one step); the domain checks it still prices exactly those
 * lines, so an item added concurrently makes the placement a 409, never a
 * wrongly priced order.
 */
#include <stdio.h>
#include <string.h>

#include "services/ordering/ordering.h"

/* ---- the draft as the aggregate has it ---- */

struct draft {
    bool exists;
    enum ag_order_status status;
    char customer_id[AG_DOM_ID_MAX];
    char currency[4];
    struct ag_price_line lines[ORD_MAX_ITEMS];
    size_t n;
    json_t *json; /* OUT when wanted (want_json): the order as JSON */
    bool want_json;
};

static json_t *line_json(const struct ag_price_line *l)
{
    struct ag_money sub;
    if (ag_money_mul(&l->unit_price, l->quantity, &sub, NULL)) sub = l->unit_price;
    return json_pack("{s:s, s:I, s:o, s:o}", "productId", l->product_id, "quantity",
                     (json_int_t)l->quantity, "unitPrice", ag_money_to_json(&l->unit_price),
                     "subtotal", ag_money_to_json(&sub));
}

static json_t *order_json(const struct ag_order *o)
{
    json_t *items = json_array();
    for (size_t i = 0; items && i < o->nlines; i++)
        json_array_append_new(items, line_json(&o->lines[i]));
    return json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:o}", "id", o->id, "customerId",
                     o->customer_id, "status", ag_order_status_name(o->status), "items", items,
                     "subtotal", ag_money_to_json(&o->subtotal), "discount",
                     ag_money_to_json(&o->discount), "total", ag_money_to_json(&o->total));
}

static void view_draft(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    const struct ag_order *o = state;
    struct draft *d = ud;
    d->exists = o->exists;
    d->status = o->status;
    snprintf(d->customer_id, sizeof d->customer_id, "%s", o->customer_id);
    snprintf(d->currency, sizeof d->currency, "%s", o->currency);
    d->n = o->nlines < ORD_MAX_ITEMS ? o->nlines : ORD_MAX_ITEMS;
    if (d->n) memcpy(d->lines, o->lines, d->n * sizeof *d->lines);
    if (d->want_json) {
        json_decref(d->json);
        d->json = order_json(o);
    }
}

static const struct ag_price_line *draft_line(const struct draft *d, const char *pid)
{
    for (size_t i = 0; i < d->n; i++)
        if (strcmp(d->lines[i].product_id, pid) == 0) return &d->lines[i];
    return NULL;
}

/* The caller's draft `id` into d: 0, or 1 after answering (404, or 409 when it
 * is no longer a draft: `what` says what was refused). */
static int load_draft(struct svc_job *j, struct draft *d, const char *what)
{
    if (!svc_owns_order(j, j->param))
        return svc_problem(j, 404, "Order not found", "no order with id %s", j->param), 1;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = svc_read(j->env, &svc_order_type, j->param, view_draft, d, &err);
    if (rc) return svc_error(j, rc, &err), 1;
    if (d->status != AG_ORDER_DRAFT)
        return svc_problem(j, 409, "Order is not a draft", "order %s is %s: %s", j->param,
                           ag_order_status_name(d->status), what),
               1;
    return 0;
}

/* ---- prices ---- */

static void view_price(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    const struct ag_product *pr = state;
    struct ag_price_line *l = ud;
    l->unit_price = pr->active ? pr->price : (struct ag_money){-1, ""};
}

/* Price line `l` from the catalog in `currency` ("" = any); a 422 field error
 * at `ptr` when the product is discontinued or priced in another currency. */
static void price_line(struct svc_job *j, struct ag_price_line *l, const char *currency,
                       const char *ptr)
{
    svc_read(j->env, &svc_product_type, l->product_id, view_price, l, NULL);
    if (l->unit_price.amount < 0)
        svc_field_error(j, ptr, "product %s is discontinued", l->product_id);
    else if (currency[0] && strcmp(currency, l->unit_price.currency) != 0)
        svc_field_error(j, ptr, "product %s is priced in %s, the order is in %s", l->product_id,
                        l->unit_price.currency, currency);
}

/* ---- POST /api/v1/orders {"draft": true} ---- */

struct create {
    const char *order_id, *customer_id, *currency;
    struct ag_price_line lines[ORD_MAX_ITEMS];
    size_t n;
    json_t *json; /* OUT: the draft */
};

static int step(struct ag_order *o, struct ag_es_batch *out, int rc, struct ag_dom_events *evs)
{
    for (size_t i = 0; i < evs->n && !rc; i++) {
        rc = ag_order_evolve(o, evs->v[i].type, evs->v[i].data);
        if (!rc) rc = ag_es_batch_push(out, evs->v[i].type, json_incref(evs->v[i].data));
    }
    ag_dom_events_free(evs);
    return rc;
}

static int decide_create(const void *state, int64_t version, void *ud, struct ag_es_batch *out,
                         struct ag_err *err)
{
    AG_UNUSED(state);
    struct create *c = ud;
    if (version >= 0) return ag_err_set(err, AG_EEXISTS, "order %s already exists", c->order_id);
    struct ag_order o;
    ag_order_init(&o);
    struct ag_dom_events evs;
    ag_dom_events_init(&evs);
    struct ag_order_create oc = {c->order_id, c->customer_id, c->currency};
    int rc = step(&o, out, ag_order_create(&o, &oc, &evs, err), &evs);
    for (size_t i = 0; i < c->n && !rc; i++) {
        struct ag_order_add_item a = {c->lines[i].product_id, c->lines[i].quantity,
                                      c->lines[i].unit_price};
        rc = step(&o, out, ag_order_add_item(&o, &a, &evs, err), &evs);
    }
    if (!rc) {
        json_decref(c->json); /* a retried decide */
        c->json = order_json(&o);
    }
    ag_order_free(&o);
    return rc;
}

static void parse_create(struct svc_job *j, struct create *c)
{
    static const char *const fields[] = {"draft", "customerId", "items", "currency", NULL};
    svc_body_object(j, fields);
    c->customer_id = ord_parse_customer(j);
    c->n = ord_parse_items(j, false, c->lines);
    json_t *cur = json_object_get(j->body, "currency");
    c->currency = json_string_value(cur);
    if (cur && (!c->currency || !ag_currency_valid(c->currency)))
        svc_field_error(j, "/currency", "currency must be a 3-letter ISO 4217 code");
}

static void create_draft(struct svc_job *j, struct create *c)
{
    char order_id[AG_UUID_STRLEN + 1], stream[128];
    svc_job_id(j, "orders", order_id);
    c->order_id = order_id;
    svc_stream(stream, sizeof stream, "order", order_id);
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_es_execute(j->env->repo,
                           &(struct ag_es_cmd){&svc_order_type, stream, decide_create, c, j->meta},
                           NULL, &err);
    if (rc) {
        svc_error(j, rc, &err);
    } else {
        snprintf(j->location, sizeof j->location, "/api/v1/orders/%s", order_id);
        svc_ok(j, 201, c->json), c->json = NULL;
    }
}

int ord_draft_create(struct svc_job *j)
{
    struct create *c = ag_calloc(1, sizeof *c);
    if (!c) return AG_ENOMEM;
    parse_create(j, c);
    const char *first = json_string_value(json_object_get(json_array_get(j->errors, 0), "detail"));
    if (!svc_fields_failed(j, first && strstr(first, "unknown") ? 422 : 400)) {
        for (size_t i = 0; i < c->n; i++) {
            char ptr[48];
            snprintf(ptr, sizeof ptr, "/items/%zu/productId", i);
            price_line(j, &c->lines[i], c->currency ? c->currency : "", ptr);
            if (!c->currency && c->lines[i].unit_price.amount >= 0)
                c->currency = c->lines[i].unit_price.currency;
        }
        if (!c->currency) c->currency = "USD";
        if (!svc_fields_failed(j, 422) && !svc_idem_begin(j, "orders")) {
            create_draft(j, c);
            svc_idem_end(j, "orders");
        }
    }
    json_decref(c->json);
    ag_free(c);
    return 0;
}

/* ---- items ---- */

static int dom_add(const void *st, const void *cmd, struct ag_dom_events *out, struct ag_err *err)
{
    return ag_order_add_item(st, cmd, out, err);
}

static int dom_remove(const void *st, const void *cmd, struct ag_dom_events *out,
                      struct ag_err *err)
{
    return ag_order_remove_item(st, cmd, out, err);
}

/* Run an item command on the draft and answer 200 with the draft after it. */
static int change(struct svc_job *j, svc_dom_fn fn, const void *cmd, struct draft *d)
{
    struct ag_err err;
    ag_err_clear(&err);
    d->want_json = true;
    int rc = svc_exec(j->env,
                      &(struct svc_cmd){&svc_order_type, j->param, fn, cmd, j->meta, view_draft, d},
                      &err);
    if (rc == AG_EDOMAIN) return svc_problem(j, 409, "Order cannot change", "%s", err.msg);
    if (rc) return svc_error(j, rc, &err);
    svc_ok(j, 200, d->json);
    d->json = NULL;
    return 0;
}

/* POST /api/v1/orders/{id}/items {productId, quantity}. */
int ord_draft_add_item(struct svc_job *j)
{
    static const char *const fields[] = {"productId", "quantity", NULL};
    struct draft *d = ag_calloc(1, sizeof *d);
    if (!d) return AG_ENOMEM;
    struct ag_price_line l;
    memset(&l, 0, sizeof l);
    svc_body_object(j, fields);
    bool ok = ord_parse_item(j, j->body, "", &l);
    const char *first = json_string_value(json_object_get(json_array_get(j->errors, 0), "detail"));
    if (svc_fields_failed(j, first && strstr(first, "unknown") ? 422 : 400) || !ok ||
        load_draft(j, d, "only a draft order changes"))
        goto out;
    price_line(j, &l, d->currency, "/productId");
    if (d->n >= ORD_MAX_ITEMS && !draft_line(d, l.product_id))
        svc_field_error(j, "/productId", "at most %d items per order", ORD_MAX_ITEMS);
    if (svc_fields_failed(j, 422)) goto out;
    struct ag_order_add_item a = {l.product_id, l.quantity, l.unit_price};
    change(j, dom_add, &a, d);
out:
    json_decref(d->json);
    ag_free(d);
    return 0;
}

/* DELETE /api/v1/orders/{id}/items/{productId}. */
int ord_draft_remove_item(struct svc_job *j)
{
    const char *pid = j->q[0];
    struct draft *d = ag_calloc(1, sizeof *d);
    if (!d) return AG_ENOMEM;
    if (load_draft(j, d, "only a draft order changes")) goto out;
    if (!pid || !draft_line(d, pid)) {
        svc_problem(j, 404, "Item not found", "order %s has no item %.64s", j->param,
                    pid ? pid : "");
        goto out;
    }
    struct ag_order_remove_item r = {pid};
    change(j, dom_remove, &r, d);
out:
    json_decref(d->json);
    ag_free(d);
    return 0;
}

/* ---- POST /api/v1/orders/{id}/place ---- */

struct place_draft {
    struct draft d;
    struct ord_ship ship;
    struct ord_customer cust;
    char codes[SVC_MAX_PROMOS][AG_PROMO_CODE_MAX];
    size_t ncodes;
    struct ag_promotion promos[SVC_MAX_PROMOS];
    struct ag_price_quote quote;
    char saga_id[AG_UUID_STRLEN + 1];
};

static int dom_place(const void *st, const void *cmd, struct ag_dom_events *out, struct ag_err *err)
{
    return ag_order_place(st, cmd, out, err);
}

/* The body: 0, or 1 after answering 400. */
static int parse_place(struct svc_job *j, struct place_draft *p)
{
    static const char *const fields[] = {"shippingAddress", "shippingAddressId", "promotionCodes",
                                         NULL};
    if (!json_is_object(j->body))
        return svc_problem(j, 400, "Invalid request", "the body must be a JSON object"), 1;
    svc_body_object(j, fields);
    p->ncodes = (size_t)svc_promos_parse(j, p->codes, SVC_MAX_PROMOS);
    ord_parse_ship(j, &p->ship);
    return svc_fields_failed(j, 400);
}

/* Everything placing needs, checked: 0, or 1 after answering. */
static int check_place(struct svc_job *j, struct place_draft *p)
{
    if (load_draft(j, &p->d, "it was placed already")) return 1;
    if (p->d.n == 0)
        return svc_problem(j, 409, "Order cannot be placed",
                           "order %s has no items: add some first", j->param),
               1;
    p->cust.ship = &p->ship;
    ord_read_customer(j, p->d.customer_id, &p->cust);
    for (size_t i = 0; i < p->d.n; i++) {
        struct ag_price_line now = p->d.lines[i];
        price_line(j, &now, "", "");
        if (now.unit_price.amount < 0)
            return svc_problem(j, 409, "Order cannot be placed",
                               "product %s was discontinued: remove it from the draft",
                               now.product_id),
                   1;
    }
    if (!json_array_size(j->errors) &&
        svc_promos_check(j, p->codes, p->ncodes, p->d.currency, p->promos) < 0)
        return svc_error(j, AG_ENOMEM, NULL), 1;
    return svc_fields_failed(j, 422);
}

static void place(struct svc_job *j, struct place_draft *p)
{
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_pricing_quote(p->d.lines, p->d.n, p->cust.premium, p->promos, p->ncodes, &p->quote,
                              &err);
    if (rc) {
        svc_error(j, rc, &err);
        return;
    }
    char scope[160];
    snprintf(scope, sizeof scope, "sagas-%s", j->param); /* one key, one saga per order */
    svc_job_id(j, scope, p->saga_id);
    if (svc_promos_redeem(j, p->codes, p->ncodes, j->param, p->d.currency)) return;
    struct ag_order_place cmd = {&p->ship.address, p->quote, p->saga_id, p->ship.address_id};
    rc = svc_exec(
        j->env, &(struct svc_cmd){&svc_order_type, j->param, dom_place, &cmd, j->meta, NULL, NULL},
        &err);
    if (rc == AG_EDOMAIN) {
        svc_problem(j, 409, "Order cannot be placed", "%s", err.msg);
    } else if (rc) {
        svc_error(j, rc, &err);
    } else {
        snprintf(j->location, sizeof j->location, "/api/v1/orders/%s", j->param);
        svc_admission_placed(j, j->param); /* in flight until confirmed or cancelled */
        svc_ok(j, 202,
               json_pack("{s:s, s:s, s:s}", "orderId", j->param, "sagaId", p->saga_id, "status",
                         "pending"));
    }
}

int ord_draft_place(struct svc_job *j)
{
    if (svc_admission_check(j)) return 0; /* no slot yet: 503, or parked until one frees */
    struct place_draft *p = ag_calloc(1, sizeof *p);
    if (!p) return AG_ENOMEM;
    char scope[160];
    snprintf(scope, sizeof scope, "place-%s", j->param); /* a key is per order */
    if (!parse_place(j, p) && !svc_idem_begin(j, scope)) {
        if (!check_place(j, p)) place(j, p);
        svc_idem_end(j, scope);
    }
    json_decref(p->d.json);
    ag_free(p);
    return 0;
}
