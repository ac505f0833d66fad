/*
 * The ordering context's API: placing, reading, listing and cancelling orders
 * (the caller's own, or any for an admin); the orders read model is in
 * projection.c, the PlaceOrder saga in sagas/:
 *
 *   PlaceOrder → ReserveInventory → ProcessPayment → ArrangeShipment → ConfirmOrder
 *   (compensations: cancel order ← release stock ← refund ← cancel shipment)
 *
 * POST /api/v1/orders prices the order (PricingService: premium 10% off) and
 * appends OrderCreated, ItemAdded…, OrderPlaced in one atomic append, then answers
 * 202 with the order and saga ids. The saga is started by a projection that reacts
 * to OrderPlaced (the "saga starter"), so an order placed just before a crash
 * still gets its saga after the restart. Every step is idempotent per order: the
 * StockItem keys reservations by order, the Account keys charges by order, and a
 * shipment's stream is named after its order.
 *
 * The shipping address is given inline (shippingAddress) or as one of the
 * customer's saved addresses (shippingAddressId, customers/api.c): the saved
 * address is copied into OrderPlaced (sealed, like an inline one) together with
 * its id, so the saga's shipment uses the address as it was when the order was
 * placed. Draft orders (create, add/remove items, place) are in drafts.c.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "services/ordering/ordering.h"

#define MAX_ITEMS ORD_MAX_ITEMS
#define MAX_QTY   ORD_MAX_QTY

/* ---- placing an order ---- */

struct place {
    const char *order_id, *customer_id, *saga_id;
    struct ag_price_line lines[MAX_ITEMS];
    size_t n;
    struct ord_ship ship; /* where it ships */
    struct ord_customer cust;
    struct ag_price_quote quote;
    char codes[SVC_MAX_PROMOS][AG_PROMO_CODE_MAX]; /* promotionCodes, checked */
    size_t ncodes;
    struct ag_promotion promos[SVC_MAX_PROMOS]; /* their pricing terms */
};

/* Recycled, like the saga's participant calls: ~7 KB each (100 lines and the
 * promotions), and glibc consolidates its fast bins before every allocation of
 * that size (issue 11). */
enum { PLACE_KEEP = 16 };
static pthread_mutex_t place_mu = PTHREAD_MUTEX_INITIALIZER;
static struct place *place_spare[PLACE_KEEP];
static size_t place_nspare;

static struct place *place_alloc(void)
{
    pthread_mutex_lock(&place_mu);
    struct place *pl = place_nspare ? place_spare[--place_nspare] : NULL;
    pthread_mutex_unlock(&place_mu);
    if (!pl && !(pl = ag_malloc(sizeof *pl))) return NULL;
    memset(pl, 0, sizeof *pl);
    return pl;
}

static void place_free(struct place *pl)
{
    pthread_mutex_lock(&place_mu);
    if (place_nspare < PLACE_KEEP) {
        place_spare[place_nspare++] = pl;
        pl = NULL;
    }
    pthread_mutex_unlock(&place_mu);
    ag_free(pl);
}

static int step_dom(struct ag_order *o, struct ag_dom_events *all, int rc,
                    struct ag_dom_events *evs)
{
    for (size_t i = 0; i < evs->n && !rc; i++) {
        rc = ag_order_evolve(o, evs->v[i].type, evs->v[i].data);
        if (!rc) rc = ag_dom_events_push(all, evs->v[i].type, json_incref(evs->v[i].data));
    }
    ag_dom_events_free(evs);
    return rc;
}

static int decide_place(const void *state, int64_t version, void *ud, struct ag_es_batch *out,
                        struct ag_err *err)
{
    AG_UNUSED(state);
    struct place *pl = ud;
    if (version >= 0) return ag_err_set(err, AG_EEXISTS, "order %s already exists", pl->order_id);
    struct ag_order o;
    memset(&o, 0, sizeof o);
    ag_order_init(&o);
    struct ag_dom_events all, evs;
    ag_dom_events_init(&all);
    ag_dom_events_init(&evs);
    struct ag_order_create c = {pl->order_id, pl->customer_id, pl->lines[0].unit_price.currency};
    int rc = step_dom(&o, &all, ag_order_create(&o, &c, &evs, err), &evs);
    for (size_t i = 0; i < pl->n && !rc; i++) {
        struct ag_order_add_item a = {pl->lines[i].product_id, pl->lines[i].quantity,
                                      pl->lines[i].unit_price};
        rc = step_dom(&o, &all, ag_order_add_item(&o, &a, &evs, err), &evs);
    }
    struct ag_order_place p = {&pl->ship.address, pl->quote, pl->saga_id, pl->ship.address_id};
    if (!rc) rc = step_dom(&o, &all, ag_order_place(&o, &p, &evs, err), &evs);
    size_t from = out->n;
    for (size_t i = 0; i < all.n && !rc; i++) {
        rc = ag_es_batch_push(out, all.v[i].type, all.v[i].data);
        all.v[i].data = NULL;
    }
    if (!rc) rc = svc_pii_seal_events(&svc_order_type, NULL, out, from, err); /* the address */
    ag_dom_events_free(&all);
    ag_dom_events_free(&evs);
    ag_order_free(&o);
    return rc;
}

static void view_customer(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    const struct ag_customer *c = state;
    struct ord_customer *oc = ud;
    oc->premium = c->premium;
    snprintf(oc->account_id, sizeof oc->account_id, "%s", c->account_id);
    int i = oc->ship->address_id[0] ? ag_customer_address_index(c, oc->ship->address_id) : -1;
    oc->address_found = i >= 0;
    if (i >= 0) oc->ship->address = c->addresses[i]; /* opened: evolve sees plain values */
}

void ord_read_customer(struct svc_job *j, const char *id, struct ord_customer *c)
{
    svc_read(j->env, &svc_customer_type, id, view_customer, c, NULL);
    if (!c->account_id[0] || !svc_stream_exists(j->env, "account", c->account_id))
        svc_field_error(j, "/customerId", "customer %s has no payment account", id);
    if (c->ship->address_id[0] && !c->address_found)
        svc_field_error(j, "/shippingAddressId", "customer %s has no address %s", id,
                        c->ship->address_id);
}

void ord_parse_ship(struct svc_job *j, struct ord_ship *s)
{
    json_t *addr = json_object_get(j->body, "shippingAddress");
    json_t *aid = json_object_get(j->body, "shippingAddressId");
    struct ag_err err;
    ag_err_clear(&err);
    if (addr && aid) {
        svc_field_error(j, "/shippingAddressId",
                        "give either shippingAddress or shippingAddressId, not both");
    } else if (aid) {
        const char *id = json_string_value(aid);
        if (!id || !svc_uuid_ok(id))
            svc_field_error(j, "/shippingAddressId", "shippingAddressId must be an address id");
        else
            snprintf(s->address_id, sizeof s->address_id, "%s", id);
    } else if (!addr) {
        svc_field_error(j, "/shippingAddress",
                        "shippingAddress (or shippingAddressId, a saved address) is required");
    } else if (ag_address_from_json(addr, &s->address, "/shippingAddress", &err)) {
        const char *colon = strstr(err.msg, ": ");
        char ptr[96];
        snprintf(ptr, sizeof ptr, "%.*s", colon ? (int)(colon - err.msg) : 16,
                 colon ? err.msg : "/shippingAddress");
        svc_field_error(j, ptr, "%s", colon ? colon + 2 : err.msg);
    }
}

static void view_product(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    const struct ag_product *pr = state;
    struct ag_price_line *l = ud;
    l->unit_price = pr->active ? pr->price : (struct ag_money){-1, ""};
}

const char *ord_parse_customer(struct svc_job *j)
{
    json_t *cid = json_object_get(j->body, "customerId");
    const char *id = json_string_value(cid);
    if (!cid && !j->who.admin) /* taken from the caller */
        id = svc_caller_customer(j);
    if (!id && cid)
        svc_field_error(j, "/customerId", "customerId must be a string");
    else if (!id && j->who.admin)
        svc_field_error(j, "/customerId", "customerId is required");
    else if (!id)
        svc_field_error(j, "/customerId",
                        "unknown customer: register one first (POST /api/v1/customers)");
    else if (!svc_uuid_ok(id) || !svc_owns(j, id) || !svc_stream_exists(j->env, "customer", id))
        svc_field_error(j, "/customerId", "unknown customer %s", id);
    else
        return id;
    return NULL;
}

bool ord_parse_item(struct svc_job *j, const json_t *it, const char *at, struct ag_price_line *out)
{
    char ptr[64];
    const char *pid = json_string_value(json_object_get(it, "productId"));
    json_t *q = json_object_get(it, "quantity");
    snprintf(ptr, sizeof ptr, "%s/productId", at);
    if (!pid)
        svc_field_error(j, ptr, "productId is required and must be a string");
    else if (strlen(pid) >= AG_DOM_ID_MAX || !svc_stream_exists(j->env, "product", pid))
        svc_field_error(j, ptr, "unknown product %s", pid);
    snprintf(ptr, sizeof ptr, "%s/quantity", at);
    if (!json_is_integer(q))
        svc_field_error(j, ptr, "quantity is required and must be an integer");
    else if (json_integer_value(q) <= 0)
        svc_field_error(j, ptr, "quantity must be greater than zero");
    else if (json_integer_value(q) > MAX_QTY)
        svc_field_error(j, ptr, "quantity must be at most %d", MAX_QTY);
    if (!pid || strlen(pid) >= AG_DOM_ID_MAX || !json_is_integer(q)) return false;
    snprintf(out->product_id, AG_DOM_ID_MAX, "%s", pid);
    out->quantity = json_integer_value(q);
    return true;
}

size_t ord_parse_items(struct svc_job *j, bool required, struct ag_price_line *lines)
{
    json_t *items = json_object_get(j->body, "items");
    if (!items && !required) return 0;
    if (!json_is_array(items) || (required && json_array_size(items) == 0))
        svc_field_error(j, "/items", "items must be a%s array", required ? " non-empty" : "n");
    else if (json_array_size(items) > MAX_ITEMS)
        svc_field_error(j, "/items", "at most %d items per order", MAX_ITEMS);
    size_t i, n = 0;
    json_t *it;
    json_array_foreach(items, i, it)
    {
        if (i >= MAX_ITEMS) break;
        char at[32];
        snprintf(at, sizeof at, "/items/%zu", i);
        if (ord_parse_item(j, it, at, &lines[n])) n++;
    }
    return n;
}

/* Validate the body into `pl`, recording every bad field. */
static void parse_order(struct svc_job *j, struct place *pl)
{
    static const char *const fields[] = {
        "customerId", "items", "shippingAddress", "shippingAddressId", "promotionCodes",
        "draft",      NULL};
    svc_body_object(j, fields);
    pl->ncodes = (size_t)svc_promos_parse(j, pl->codes, SVC_MAX_PROMOS);
    pl->customer_id = ord_parse_customer(j);
    pl->n = ord_parse_items(j, true, pl->lines);
    ord_parse_ship(j, &pl->ship);
}

/* Prices from the catalog, tier from the customer, then the quote. */
static int price_order(struct svc_job *j, struct place *pl)
{
    struct ag_err err;
    ag_err_clear(&err);
    pl->cust.ship = &pl->ship;
    ord_read_customer(j, pl->customer_id, &pl->cust);
    for (size_t i = 0; i < pl->n; i++) {
        svc_read(j->env, &svc_product_type, pl->lines[i].product_id, view_product, &pl->lines[i],
                 NULL);
        if (pl->lines[i].unit_price.amount < 0) {
            char ptr[64];
            snprintf(ptr, sizeof ptr, "/items/%zu/productId", i);
            svc_field_error(j, ptr, "product %s is discontinued", pl->lines[i].product_id);
        }
    }
    if (!json_array_size(j->errors) &&
        svc_promos_check(j, pl->codes, pl->ncodes, pl->lines[0].unit_price.currency, pl->promos) <
            0)
        return svc_error(j, AG_ENOMEM, NULL), 1;
    if (svc_fields_failed(j, 422)) return 1;
    int rc = ag_pricing_quote(pl->lines, pl->n, pl->cust.premium, pl->promos, pl->ncodes,
                              &pl->quote, &err);
    if (rc) return svc_error(j, rc, &err), 1;
    return 0;
}

static json_t *placed_json(const char *order_id, const char *saga_id)
{
    return json_pack("{s:s, s:s, s:s}", "orderId", order_id, "sagaId", saga_id, "status",
                     "pending");
}

/* The order's events and its key's record in one append (svc_idem_begin_defer):
 * 0 when that committed and j holds the 202, else nothing was written and the
 * caller goes the usual way (j's answer is left to it). */
static int place_with_record(struct svc_job *j, const struct ag_es_cmd *cmd, const char *order_id,
                             const char *saga_id)
{
    snprintf(j->location, sizeof j->location, "/api/v1/orders/%s", order_id);
    svc_ok(j, 202, placed_json(order_id, saga_id)); /* the answer the record replays */
    struct svc_idem_rec rec;
    int rc = svc_idem_rec_make(j, "orders", &rec);
    if (!rc) rc = ag_es_execute_extra(j->env->repo, cmd, &rec.part, 1, NULL, NULL);
    svc_idem_rec_free(&rec);
    if (!rc) {
        j->idem_deferred = false;
        return 0;
    }
    j->location[0] = '\0';
    svc_ok(j, 0, NULL);
    return rc;
}

static int create(struct svc_job *j)
{
    if (svc_admission_check(j)) return 0; /* no slot yet: 503, or parked until one frees */
    if (!json_is_object(j->body))
        return svc_problem(j, 400, "Invalid request", "the body must be a JSON object");
    json_t *draft = json_object_get(j->body, "draft");
    if (draft && !json_is_boolean(draft))
        return svc_field_error(j, "/draft", "draft must be a boolean"), svc_fields_failed(j, 400);
    if (json_is_true(draft)) return ord_draft_create(j);
    struct place *pl = place_alloc();
    if (!pl) return AG_ENOMEM;
    parse_order(j, pl);
    const char *first = json_string_value(json_object_get(json_array_get(j->errors, 0), "detail"));
    int done = svc_fields_failed(j, first && strstr(first, "unknown") ? 422 : 400);
    /* the order's ids derive from the key: without promotions to redeem first, the
     * key's record can commit with the order's events (one append, not three) */
    if (!done) done = svc_idem_begin_defer(j, "orders", pl->ncodes == 0);
    if (!done && !price_order(j, pl)) {
        char order_id[AG_UUID_STRLEN + 1], saga_id[AG_UUID_STRLEN + 1], stream[128];
        svc_job_id(j, "orders", order_id);
        svc_job_id(j, "sagas", saga_id);
        pl->order_id = order_id;
        pl->saga_id = saga_id;
        svc_stream(stream, sizeof stream, "order", order_id);
        struct ag_err err;
        ag_err_clear(&err);
        const struct ag_es_cmd cmd = {&svc_order_type, stream, decide_place, pl, j->meta};
        if (j->idem_deferred && place_with_record(j, &cmd, order_id, saga_id) == 0) {
            svc_admission_placed(j, order_id); /* in flight until confirmed or cancelled */
            place_free(pl);
            return 0;
        }
        if (j->idem_deferred) { /* nothing committed: claim the key now, as usual */
            j->idem_deferred = false;
            if (svc_idem_begin(j, "orders")) { /* answered from its record (or 409/422) */
                place_free(pl);
                return 0;
            }
        }
        if (svc_promos_redeem(j, pl->codes, pl->ncodes, order_id,
                              pl->lines[0].unit_price.currency)) {
            svc_idem_end(j, "orders");
            place_free(pl);
            return 0;
        }
        int rc = ag_es_execute(j->env->repo, &cmd, NULL, &err);
        if (rc && rc != AG_EEXISTS) {
            svc_error(j, rc, &err);
        } else {
            snprintf(j->location, sizeof j->location, "/api/v1/orders/%s", order_id);
            svc_admission_placed(j, order_id); /* in flight until confirmed or cancelled */
            svc_ok(j, 202, placed_json(order_id, saga_id));
        }
        svc_idem_end(j, "orders");
    } else if (!done) {
        svc_idem_settle(j, "orders");
    }
    place_free(pl);
    return 0;
}

/* ---- reading orders ---- */

#define ORDER_COLS                                                                                 \
    "SELECT id, customer_id, status, currency, subtotal, discount, total, items,"                  \
    " shipping_address, cancellation_reason, tracking_number, saga_id, created_at, updated_at"     \
    " FROM orders"

/* The read model's lines [[productId, quantity, unit price], ...] as the API's. */
static json_t *items_json(const char *text, const char *cur)
{
    json_t *rows = json_loads(text ?: "[]", 0, NULL), *out = json_array(), *it;
    size_t i;
    json_array_foreach(rows, i, it)
    {
        json_int_t q = json_integer_value(json_array_get(it, 1));
        json_int_t unit = json_integer_value(json_array_get(it, 2));
        json_array_append_new(out, json_pack("{s:s, s:I, s:o, s:o}", "productId",
                                             json_string_value(json_array_get(it, 0)) ?: "",
                                             "quantity", q, "unitPrice", svc_money_json(unit, cur),
                                             "subtotal", svc_money_json(q * unit, cur)));
    }
    json_decref(rows);
    return out;
}

static json_t *order_row(const struct ag_rm_row *st)
{
    const char *cur = svc_col(st, 3);
    char idb[AG_RM_ID_MAX], custb[AG_RM_ID_MAX], sagab[AG_RM_ID_MAX];
    const char *cust = ag_rm_id(st, 1, custb);
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:o, s:o, s:o, s:s?, s:o, s:o}", "id", ag_rm_id(st, 0, idb), "customerId",
        cust, "status", svc_col(st, 2), "subtotal", svc_money_json(ag_rm_int64(st, 4), cur),
        "discount", svc_money_json(ag_rm_int64(st, 5), cur), "total",
        svc_money_json(ag_rm_int64(st, 6), cur), "sagaId", ag_rm_id(st, 11, sagab), "createdAt",
        svc_time_json(st, 12), "updatedAt", svc_time_json(st, 13));
    json_object_set_new(o, "items", items_json(svc_col(st, 7), cur));
    json_t *addr = svc_pii_open_cell(st, 8, cust, "shippingAddress");
    if (addr) json_object_set_new(o, "shippingAddress", addr);
    if (svc_col(st, 9)) json_object_set_new(o, "cancellationReason", json_string(svc_col(st, 9)));
    if (svc_col(st, 10)) json_object_set_new(o, "trackingNumber", json_string(svc_col(st, 10)));
    return o;
}

/* ---- reading one order; conditional and blocking reads (issue 11) ----
 *
 * The answer carries a strong ETag, "<status>-<hash>": the order's status and
 * the xxHash of its representation (json_hash: the JSON value walked in place,
 * no text dump), so it changes exactly when the body does. If-None-Match with a matching tag
 * answers 304. With `Prefer: wait=N` too (seconds, at most SVC_WAIT_MAX_S) a matching request is
 * parked (wait.c) until the orders projection commits a change of the order, then answers 200 with
 * the new state, or 304 with the same tag after N seconds; either way with `Preference-Applied:
 * wait=N`. Ownership is the plain GET's: someone else's order is 404 before anything could wait. */

struct order_wait {
    unsigned wait_s; /* Prefer: wait=N, capped; 0 = no wait */
    char inm[256];   /* If-None-Match as sent */
    uint64_t seq;    /* the order's change sequence before the handler read */
    bool parked;     /* parked once already */
};

/* The wait=N of a Prefer header (RFC 7240: comma-separated preferences, each
 * token[=value][;params]); 0 when absent or malformed. */
static unsigned prefer_wait(const char *h)
{
    for (const char *p = h; p && *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        if (strncasecmp(p, "wait", 4) == 0) {
            const char *q = p + 4;
            while (*q == ' ') q++;
            if (*q == '=') {
                q++;
                while (*q == ' ') q++;
                if (*q == '"') q++;
                unsigned long v = 0;
                int digits = 0;
                for (; *q >= '0' && *q <= '9' && digits < 9; q++, digits++)
                    v = v * 10 + (unsigned long)(*q - '0');
                if (digits) return v > SVC_WAIT_MAX_S ? SVC_WAIT_MAX_S : (unsigned)v;
            }
        }
        p = strchr(p, ',');
    }
    return 0;
}

/* xxHash of a JSON value, walked in place: members in their order (order_row
 * builds them in one order), each value tagged with its type, so two bodies
 * hash alike exactly when their JSON texts are equal. No text is dumped nor
 * keys sorted (this runs on every GET of an order, polls included). */
static uint64_t json_hash(const json_t *v, uint64_t h)
{
    char tag = (char)('0' + json_typeof(v));
    h = ag_xxh3_seed(&tag, 1, h);
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *m;
        json_object_foreach((json_t *)v, k, m)
        {
            h = ag_xxh3_seed(k, strlen(k) + 1, h);
            h = json_hash(m, h);
        }
        return ag_xxh3_seed("}", 1, h);
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *m;
        json_array_foreach(v, i, m) h = json_hash(m, h);
        return ag_xxh3_seed("]", 1, h);
    }
    case JSON_STRING:
        return ag_xxh3_seed(json_string_value(v), json_string_length(v) + 1, h);
    case JSON_INTEGER: {
        json_int_t x = json_integer_value(v);
        return ag_xxh3_seed(&x, sizeof x, h);
    }
    case JSON_REAL: {
        double x = json_real_value(v);
        return ag_xxh3_seed(&x, sizeof x, h);
    }
    default: /* true, false, null: the tag says it */
        return h;
    }
}

static void order_etag(const json_t *o, char out[80])
{
    snprintf(out, 80, "\"%.16s-%016llx\"", json_string_value(json_object_get(o, "status")) ?: "",
             (unsigned long long)json_hash(o, 0));
}

static int get_prepare(struct svc_job *j, struct ag_http_req *req)
{
    const char *inm = ag_http_req_header(req, "If-None-Match");
    if (!inm) return 0;
    struct order_wait *w = ag_calloc(1, sizeof *w);
    if (!w) return AG_ENOMEM;
    snprintf(w->inm, sizeof w->inm, "%s", inm);
    w->wait_s = prefer_wait(ag_http_req_header(req, "Prefer"));
    w->seq = svc_waiters_seq(j->env->waiters, j->param);
    j->ext = w;
    return 0;
}

static void get_finish(struct svc_job *j, struct ag_http_req *req)
{
    AG_UNUSED(req);
    ag_free(j->ext);
    j->ext = NULL;
}

/* Read the order into the job's answer (200 or 404); past the last commit when woken.
 * The owner filter compares customer_id first: PostgreSQL types a placeholder where
 * it first sees it, and customer_id is bytea (an admin's NULL filter included). */
static int read_order(struct svc_job *j)
{
    static const struct svc_one one = {RM_ORDERS,
                                       ORDER_COLS " WHERE id=?1 AND (customer_id=?2 OR ?2 IS NULL)",
                                       order_row,
                                       "order",
                                       "Order not found",
                                       "no order with id",
                                       SVC_ID(0) | SVC_ID(1)};
    int rc;
    if (j->wait_woken) { /* woken by the commit of a change: read past it */
        const char *args[] = {j->param, svc_owner_filter(j)};
        json_t *rows = svc_rm_query_fresh_ids(j->env, one.rm, one.sql, args, 2, one.ids, one.row);
        if (!rows) return AG_EIO;
        if (json_array_size(rows)) {
            j->rm_position = ag_projector_position(j->env->projector);
            j->rm_read = true;
            svc_ok(j, 200, json_incref(json_array_get(rows, 0)));
        } else {
            svc_problem(j, 404, one.title, "%s %s", one.missing, j->param);
        }
        json_decref(rows);
        rc = 0;
    } else {
        rc = svc_get_one(j, &one, j->param, svc_owner_filter(j));
    }
    return rc;
}

static int get(struct svc_job *j)
{
    int rc = read_order(j);
    if (rc || j->status != 200 || !j->resp) return rc;
    order_etag(j->resp, j->etag);
    struct order_wait *w = j->ext;
    if (w && w->wait_s && !j->wait_woken && svc_inm_matches(w->inm, j->etag)) {
        /* about to park: make sure of it on a snapshot past every commit so far
         * (the shared handle's may be older than the change sequence read) */
        j->wait_woken = true;
        json_decref(j->resp);
        j->resp = NULL;
        j->status = 0;
        return get(j);
    }
    if (w && svc_inm_matches(w->inm, j->etag)) { /* not modified */
        json_decref(j->resp);
        j->resp = NULL;
        j->status = 304;
    }
    return 0;
}

/* After the handler, on the loop: park a 304 that asked to wait. */
static int get_park(struct svc_job *j, struct ag_http_req *req)
{
    struct order_wait *w = j->ext;
    if (!w || !w->wait_s || (j->status != 200 && j->status != 304)) return 0;
    snprintf(j->pref_applied, sizeof j->pref_applied, "wait=%u", w->wait_s);
    if (j->status != 304) return 0;
    uint64_t deadline = ag_http_req_start_ns(req) + (uint64_t)w->wait_s * 1000000000ull;
    if (ag_clock_mono(ag_clock_system()) >= deadline) return 0; /* waited enough: 304 */
    int rc = svc_wait_park(j->env->waiters, j, req, j->param, &w->seq, deadline);
    if (rc == 0) {
        w->parked = true;
        return 1;
    }
    if (rc == AG_EBULKHEAD_FULL && !w->parked) {
        j->pref_applied[0] = '\0';
        j->etag[0] = '\0';
        svc_problem(j, 503, "Too many waiting requests",
                    "at most the configured number of requests may wait at once; retry"
                    " shortly, or without Prefer: wait");
    }
    return 0; /* answered as it stands */
}

/* ---- an order's status changes as Server-Sent Events (issue 18) ----
 *
 * GET /api/v1/orders/{id}/events reads the order as GET does (same owner
 * filter: 404 for someone else's order, as a plain problem answer) and, when it
 * exists, turns the answer into a text/event-stream: one `status` event with
 * the order's JSON now, then one per status change, each woken by the orders
 * projection's commit exactly like a blocking GET (wait.c: the job parks on the
 * order's key with no thread and no polling, and runs its read again when the
 * order changed). The stream ends after a final state (delivered or
 * cancelled: nothing follows them), after SSE_MAX_S (the client reconnects with
 * Last-Event-ID), when the client goes away or the server drains.
 *
 * Event ids. The id is the status's place in the order's life (draft 1,
 * pending 2, confirmed 3, shipped 4, delivered 5, cancelled 6): every allowed
 * transition raises it, so an event is sent only when the id grows and a client
 * that reconnects with Last-Event-ID gets no repeat, and the order's newest
 * status if it changed meanwhile. (The read model row keeps neither the
 * order's stream version nor a projection position per row, and the version in
 * the log may be ahead of the row being read.) */
#define SSE_MAX_S 300 /* a stream lasts at most this long; the client reconnects */

struct order_stream {
    uint64_t seq;    /* the order's change sequence before the handler read */
    unsigned sent;   /* the last status id sent (or Last-Event-ID) */
    bool streaming;  /* the answer is a stream */
    uint64_t end_ns; /* monotonic end of the stream */
};

static unsigned status_id(const char *s)
{
    static const char *const names[] = {"draft",   "pending",   "confirmed",
                                        "shipped", "delivered", "cancelled"};
    for (unsigned i = 0; s && i < AG_ARRAY_SIZE(names); i++)
        if (strcmp(s, names[i]) == 0) return i + 1;
    return 0;
}

static int events_prepare(struct svc_job *j, struct ag_http_req *req)
{
    struct order_stream *w = ag_calloc(1, sizeof *w);
    if (!w) return AG_ENOMEM;
    const char *last = ag_http_req_header(req, "Last-Event-ID");
    char *end = NULL;
    unsigned long v = last ? strtoul(last, &end, 10) : 0;
    w->sent = (last && end != last && !*end && v <= 6) ? (unsigned)v : 0;
    w->seq = svc_waiters_seq(j->env->waiters, j->param);
    w->end_ns = ag_clock_mono(ag_clock_system()) + (uint64_t)SSE_MAX_S * 1000000000ull;
    j->ext = w;
    return 0;
}

static void events_finish(struct svc_job *j, struct ag_http_req *req)
{
    struct order_stream *w = j->ext;
    if (w && w->streaming) ag_http_stream_end(req);
    ag_free(w);
    j->ext = NULL;
}

static int events(struct svc_job *j)
{
    return read_order(j);
}

/* On the loop after each read: send what changed, then park until the next change. */
static int events_park(struct svc_job *j, struct ag_http_req *req)
{
    struct order_stream *w = j->ext;
    if (j->status != 200 || !j->resp) return 0; /* 404...: a plain answer, or the stream ends */
    if (!w->streaming) {
        if (ag_http_sse_begin(req) != 0) return 0;
        w->streaming = j->streamed = true;
        if (!strcmp(ag_http_req_method(req), "HEAD")) return 0; /* the headers only */
    }
    const char *status = json_string_value(json_object_get(j->resp, "status"));
    unsigned id = status_id(status);
    if (id > w->sent) {
        char *data = json_dumps(j->resp, JSON_COMPACT);
        char ids[16];
        snprintf(ids, sizeof ids, "%u", id);
        int rc = data ? ag_http_sse_send(req, ids, "status", data) : AG_ENOMEM;
        free(data);
        if (rc) return 0; /* the client is gone: end */
        w->sent = id;
    }
    if (id >= 5) return 0; /* delivered or cancelled: a final state, end it */
    if (ag_clock_mono(ag_clock_system()) >= w->end_ns) return 0;
    return svc_wait_park(j->env->waiters, j, req, j->param, &w->seq, w->end_ns) == 0;
}

static int list(struct svc_job *j)
{
    int limit;
    svc_limit(j, j->q[2], &limit);
    enum ag_order_status s;
    if (j->q[1] && ag_order_status_parse(j->q[1], &s))
        svc_field_error(
            j, "/status",
            "status must be one of draft, pending, confirmed, shipped, delivered, cancelled");
    if (svc_fields_failed(j, 400)) return 0;
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit + 1);
    /* a customer lists its own orders only (another customerId: an empty list) */
    const char *args[] = {j->q[0], j->q[1], j->q[3] ? j->q[3] : "", lim, svc_owner_filter(j)};
    json_t *rows = svc_rm_query_ids(j->env, RM_ORDERS,
                                    ORDER_COLS " WHERE (customer_id=?1 OR ?1 IS NULL) AND (?2 IS"
                                               " NULL OR status=?2) AND (customer_id=?5 OR"
                                               " ?5 IS NULL) AND id > ?3 ORDER BY id LIMIT ?4",
                                    args, 5, SVC_ID(0) | SVC_ID(2) | SVC_ID(4), order_row);
    if (!rows) return AG_EIO;
    j->rm_position = ag_projector_position(j->env->projector);
    j->rm_read = true;
    return svc_ok(j, 200, svc_page(rows, limit));
}

static void view_order_owner(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    const struct ag_order *o = state;
    snprintf(ud, AG_DOM_ID_MAX, "%s", o->exists ? o->customer_id : "");
}

bool svc_owns_order(struct svc_job *j, const char *order_id)
{
    char owner[AG_DOM_ID_MAX] = "";
    if (!svc_stream_exists(j->env, "order", order_id)) return false;
    svc_read(j->env, &svc_order_type, order_id, view_order_owner, owner, NULL);
    return owner[0] && svc_owns(j, owner);
}

static int dom_cancel(const void *st, const void *cmd, struct ag_dom_events *out,
                      struct ag_err *err)
{
    const struct ag_order *o = st;
    if (!o->exists) return ag_err_set(err, AG_ENOTFOUND, "order not found");
    return ag_order_cancel(st, cmd, out, err);
}

static int cancel(struct svc_job *j)
{
    const char *reason = json_string_value(json_object_get(j->body, "reason"));
    if (j->body && !json_is_object(j->body))
        return svc_problem(j, 400, "Invalid request", "the body must be a JSON object");
    if (json_object_get(j->body, "reason") && !reason)
        svc_field_error(j, "/reason", "reason must be a string");
    if (svc_fields_failed(j, 400)) return 0;
    if (!svc_owns_order(j, j->param))
        return svc_problem(j, 404, "Order not found", "no order with id %s", j->param);
    struct ag_order_cancel c = {reason ? reason : "cancelled by the customer"};
    struct ag_err err;
    ag_err_clear(&err);
    int rc = svc_exec(
        j->env, &(struct svc_cmd){&svc_order_type, j->param, dom_cancel, &c, j->meta, NULL, NULL},
        &err);
    if (rc == AG_EDOMAIN) return svc_problem(j, 409, "Order cannot be cancelled", "%s", err.msg);
    if (rc) return svc_error(j, rc, &err);
    return svc_ok(j, 202, json_pack("{s:s, s:s}", "orderId", j->param, "status", "cancelled"));
}

static const struct svc_route routes[] = {
    {"POST",
     "/api/v1/orders",
     SVC_OWNER,
     create,
     NULL,
     NULL,
     {NULL},
     svc_admission_prepare,
     svc_admission_finish,
     svc_admission_park},
    {"GET",
     "/api/v1/orders",
     SVC_OWNER,
     list,
     NULL,
     NULL,
     {"customerId", "status", "limit", "cursor"}},
    {"GET",
     "/api/v1/orders/{id}",
     SVC_OWNER,
     get,
     "id",
     "order",
     {NULL},
     get_prepare,
     get_finish,
     get_park},
    {"GET",
     "/api/v1/orders/{id}/events",
     SVC_OWNER,
     events,
     "id",
     "order",
     {NULL},
     events_prepare,
     events_finish,
     events_park},
    {"POST", "/api/v1/orders/{id}/cancel", SVC_OWNER, cancel, "id", "order", {NULL}},
    {"POST", "/api/v1/orders/{id}/items", SVC_OWNER, ord_draft_add_item, "id", "order", {NULL}},
    {"DELETE",
     "/api/v1/orders/{id}/items/{productId}",
     SVC_OWNER,
     ord_draft_remove_item,
     "id",
     "order",
     {":productId"}},
    {"POST",
     "/api/v1/orders/{id}/place",
     SVC_OWNER,
     ord_draft_place,
     "id",
     "order",
     {NULL},
     svc_admission_prepare,
     svc_admission_finish,
     svc_admission_park},
};

const struct svc_context svc_ordering_context = {
    "ordering", routes, sizeof routes / sizeof routes[0], svc_ordering_projection, RM_ORDERS};
