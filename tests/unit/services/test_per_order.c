/* Issue 19 through the platform: a PlaceOrder saga leaves the order's charge in
 * payment-<orderId> and its reservation in reservation-<orderId>, each written in
 * the same append as the account's or stock item's counter event; the read
 * models (balance, reserved) follow the compact events; dispatch ships the
 * reservation once; the participants' events name the saga as their actor. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "services/internal.h"
#include "svc_test.h"

TestSuite(per_order, .init = t_start, .fini = t_stop, .timeout = 60);

/* The types of a stream's events, space-separated, into out. */
static void types_of(const char *prefix, const char *id, char *out, size_t cap)
{
    char stream[128];
    snprintf(stream, sizeof stream, "%s-%s", prefix, id);
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_stream(t_plat->env.store, stream, strlen(stream), 0, AG_READ_FORWARD,
                                      100, &p, NULL),
                 0);
    size_t n = 0;
    out[0] = 0;
    for (size_t i = 0; i < p.count; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s%.*s", i ? " " : "", (int)p.events[i].type_len,
                              p.events[i].type);
    ag_event_page_free(&p);
}

/* The last event of a stream: its type into `type`, its data parsed (owned). */
static json_t *last_of(const char *prefix, const char *id, char type[64])
{
    char stream[128];
    snprintf(stream, sizeof stream, "%s-%s", prefix, id);
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_stream(t_plat->env.store, stream, strlen(stream), -1,
                                      AG_READ_BACKWARD, 1, &p, NULL),
                 0);
    cr_assert_eq(p.count, 1, "%s has events", stream);
    snprintf(type, 64, "%.*s", (int)p.events[0].type_len, p.events[0].type);
    json_t *d = json_loadb(p.events[0].data, p.events[0].data_len, 0, NULL);
    ag_event_page_free(&p);
    return d;
}

/* The event of type `type` in $all and its neighbours, as "stream/type" words
 * (stream names cut at their '-'), then "one commit" when the three carry the
 * same commit time (one write batch of the log: a later append cannot share it
 * with an earlier one that it waited for). */
static void around(const char *type, char *out, size_t cap)
{
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_all(t_plat->env.store, 0, AG_READ_FORWARD, 1000, &p, NULL), 0);
    size_t i = 0;
    while (i < p.count && !(p.events[i].type_len == strlen(type) &&
                            memcmp(p.events[i].type, type, p.events[i].type_len) == 0))
        i++;
    cr_assert(i > 0 && i + 1 < p.count, "%s is in $all with neighbours", type);
    size_t n = 0;
    out[0] = 0;
    for (size_t k = i - 1; k <= i + 1; k++) {
        const struct ag_event *e = &p.events[k];
        const char *dash = memchr(e->stream, '-', e->stream_len);
        int slen = dash ? (int)(dash - e->stream) : (int)e->stream_len;
        n += (size_t)snprintf(out + n, cap - n, "%s%.*s/%.*s", k == i - 1 ? "" : " ", slen,
                              e->stream, (int)e->type_len, e->type);
    }
    if (p.events[i - 1].time_ns == p.events[i].time_ns &&
        p.events[i].time_ns == p.events[i + 1].time_ns)
        snprintf(out + n, cap - n, " one commit");
    ag_event_page_free(&p);
}

static long long stock_field(const char *prod, const char *field)
{
    char path[128];
    snprintf(path, sizeof path, "/api/v1/inventory/%s", prod);
    struct t_resp r;
    cr_assert_eq(t_call(&r, "GET", path, ANON, NULL, NULL), 200, "%s", r.text);
    long long v = json_integer_value(json_object_get(r.body, field));
    t_free(&r);
    return v;
}

Test(per_order, an_order_leaves_its_payment_and_reservation_in_its_own_streams)
{
    char acc[40], prod[40], order[40], saga[40], st[32], types[256], t[64], path[160];
    t_register(ALICE, "alice@test.example", NULL, acc);
    t_deposit(ALICE, acc, 100000);
    t_product(1, prod);
    t_catch_up();
    long long on_hand = stock_field(prod, "onHand"), reserved = stock_field(prod, "reserved");
    t_order(ALICE, prod, 2, order, saga);
    t_saga_wait(saga, st);
    cr_assert_str_eq(st, "completed");

    types_of("payment", order, types, sizeof types);
    cr_expect_str_eq(types, "ChargeCaptured");
    json_t *d = last_of("payment", order, t);
    cr_expect_str_eq(json_string_value(json_object_get(d, "accountId")), acc);
    long long total = json_integer_value(json_object_get(d, "amount"));
    cr_expect_gt(total, 0);
    json_decref(d);
    d = last_of("account", acc, t);
    cr_expect_str_eq(t, "AccountCharged");
    cr_expect_str_eq(json_string_value(json_object_get(d, "orderId")), order);
    cr_expect_eq(json_integer_value(json_object_get(d, "amount")), total);
    json_decref(d);
    types_of("reservation", order, types, sizeof types);
    cr_expect_str_eq(types, "ReservationMade");
    d = last_of("stock", prod, t);
    cr_expect_str_eq(t, "StockHeld");
    cr_expect_eq(json_integer_value(json_object_get(d, "quantity")), 2);
    json_decref(d);
    /* the asynchronous steps: the counter's event, the order's, then the saga's
     * record, in one commit (svc_exec2_async with the record as its extra part;
     * the unit's atomicity is tested in tests/unit/es/test_multi_async.c) */
    char unit[256];
    around("ReservationMade", unit, sizeof unit);
    cr_expect_str_eq(unit,
                     "stock/StockHeld reservation/ReservationMade saga/StepSucceeded one commit");
    around("ChargeCaptured", unit, sizeof unit);
    cr_expect_str_eq(unit,
                     "account/AccountCharged payment/ChargeCaptured saga/StepSucceeded one commit");

    t_catch_up();
    snprintf(path, sizeof path, "/api/v1/accounts/%s", acc);
    struct t_resp r;
    cr_assert_eq(t_call(&r, "GET", path, ALICE, NULL, NULL), 200);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(r.body, "balance"), "amount")),
                 100000 - total, "the read model moved by the amount: %s", r.text);
    cr_expect_eq(json_integer_value(json_object_get(r.body, "transactionCount")), 2);
    t_free(&r);
    cr_expect_eq(stock_field(prod, "reserved"), reserved + 2);

    snprintf(path, sizeof path, "/api/v1/shipments/%s/dispatch", order);
    for (int i = 0; i < 2; i++) { /* the second is a no-op */
        cr_assert_eq(t_call(&r, "POST", path, ADMIN, NULL, NULL), 202, "%s", r.text);
        t_free(&r);
    }
    types_of("reservation", order, types, sizeof types);
    cr_expect_str_eq(types, "ReservationMade ReservationShipped");
    d = last_of("stock", prod, t);
    cr_expect_str_eq(t, "StockDispatched");
    json_decref(d);
    t_catch_up();
    cr_expect_eq(stock_field(prod, "onHand"), on_hand - 2);
    cr_expect_eq(stock_field(prod, "reserved"), reserved);

    /* the participants' events name the saga (short actor form) */
    char q[200];
    snprintf(q, sizeof q, "/admin/audit?stream=payment-%s", order);
    cr_assert_eq(t_call(&r, "GET", q, ADMIN, NULL, NULL), 200);
    json_t *it = json_array_get(json_object_get(r.body, "items"), 0);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(it, "actor"), "sub")),
                     "saga:PlaceOrder", "%s", r.text);
    t_free(&r);
}

Test(per_order, an_unpaid_order_gives_its_stock_back_once)
{
    char acc[40], prod[40], order[40], saga[40], st[32], types[256];
    t_register(ALICE, "alice@test.example", NULL, acc);
    t_deposit(ALICE, acc, 1);
    t_product(1, prod);
    t_catch_up();
    long long reserved = stock_field(prod, "reserved");
    t_order(ALICE, prod, 3, order, saga);
    t_saga_wait(saga, st);
    cr_assert_str_eq(st, "compensated");
    types_of("reservation", order, types, sizeof types);
    cr_expect_str_eq(types, "ReservationMade ReservationReleased");
    char stream[128];
    snprintf(stream, sizeof stream, "payment-%s", order);
    int64_t v;
    ag_store_stream_version(t_plat->env.store, stream, strlen(stream), &v);
    cr_expect_eq(v, -1, "nothing was charged");
    t_catch_up();
    cr_expect_eq(stock_field(prod, "reserved"), reserved);
}

/* The integration event the relay would publish for the last event of type `type`
 * in $all: its CloudEvent type into `ce_type`, its data parsed (owned). */
static json_t *published(const char *type, char ce_type[300])
{
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_all(t_plat->env.store, 0, AG_READ_FORWARD, 1000, &p, NULL), 0);
    const struct ag_event *ev = NULL;
    for (size_t i = 0; i < p.count; i++)
        if (p.events[i].type_len == strlen(type) &&
            memcmp(p.events[i].type, type, p.events[i].type_len) == 0)
            ev = &p.events[i];
    cr_assert_not_null(ev, "%s is in $all", type);
    struct ag_relay_msg m = {0};
    cr_assert_eq(svc_published_language(NULL, t_plat->env.store, ev, &m), 1, "%s is published",
                 type);
    snprintf(ce_type, 300, "%s", m.type);
    json_t *d = json_loads(m.data, 0, NULL);
    ag_free(m.data);
    ag_event_page_free(&p);
    cr_assert_not_null(d);
    return d;
}

static const char *str(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k)) ?: "";
}

/* docs/events.md: StockReserved, PaymentCaptured, StockReleased and PaymentRefunded
 * are published from the per-order model's StockHeld, AccountCharged, StockFreed and
 * AccountRefunded, with their documented fields. */
Test(per_order, the_per_order_events_publish_the_documented_integration_events)
{
    char acc[40], prod[40], order[40], saga[40], st[32], t[300];
    t_register(ALICE, "alice@test.example", NULL, acc);
    t_deposit(ALICE, acc, 100000);
    t_product(1, prod);
    t_order(ALICE, prod, 2, order, saga);
    t_saga_wait(saga, st);
    cr_assert_str_eq(st, "completed");

    json_t *d = published("StockHeld", t);
    cr_expect_str_eq(t, "agora.inventory.StockReserved");
    cr_expect_str_eq(str(d, "productId"), prod);
    cr_expect_str_eq(str(d, "orderId"), order);
    cr_expect_eq(json_integer_value(json_object_get(d, "quantity")), 2);
    cr_expect_eq(json_object_size(d), 3, "exactly the documented fields");
    json_decref(d);
    d = published("AccountCharged", t);
    cr_expect_str_eq(t, "agora.payments.PaymentCaptured");
    cr_expect_str_eq(str(d, "accountId"), acc);
    cr_expect_str_eq(str(d, "orderId"), order);
    json_t *amount = json_object_get(d, "amount");
    cr_expect_gt(json_integer_value(json_object_get(amount, "amount")), 0);
    cr_expect_eq(strlen(str(amount, "currency")), 3, "a currency code");
    cr_expect_eq(json_object_size(d), 3);
    json_decref(d);

    /* a refund (as a compensation writes it), on the same account */
    char stream[64], data[160];
    snprintf(stream, sizeof stream, "account-%s", acc);
    snprintf(data, sizeof data, "{\"orderId\":\"%s\",\"amount\":1999,\"at\":1}", order);
    struct ag_event ev = {.stream = stream,
                          .stream_len = strlen(stream),
                          .type = "AccountRefunded",
                          .type_len = 15,
                          .data = data,
                          .data_len = strlen(data)};
    struct ag_relay_msg m = {0};
    cr_assert_eq(svc_published_language(NULL, t_plat->env.store, &ev, &m), 1);
    cr_expect_str_eq(m.type, "agora.payments.PaymentRefunded");
    d = json_loads(m.data, 0, NULL);
    ag_free(m.data);
    cr_expect_str_eq(str(d, "accountId"), acc);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(d, "amount"), "amount")), 1999);
    cr_expect_eq(strlen(str(json_object_get(d, "amount"), "currency")), 3);
    json_decref(d);

    /* an unpaid order gives its stock back: StockFreed → StockReleased, with a reason */
    char poor[40];
    t_register(BOB, "bob@test.example", NULL, poor);
    t_order(BOB, prod, 1, order, saga);
    t_saga_wait(saga, st);
    cr_assert_str_eq(st, "compensated");
    d = published("StockFreed", t);
    cr_expect_str_eq(t, "agora.inventory.StockReleased");
    cr_expect_str_eq(str(d, "orderId"), order);
    cr_expect_neq(str(d, "reason")[0], 0, "a reason");
    json_decref(d);
}

static json_t *text_row(const struct ag_rm_row *r)
{
    return json_string(ag_rm_text(r, 0) ?: "");
}

/* The shipping address is stored once, in the orders read model, sealed for the
 * order's customer without the envelope's "pii1:<customer id>:" (the row's
 * customer_id); the order and its shipment both answer it in clear. */
Test(per_order, the_address_is_stored_once_and_read_by_order_and_shipment)
{
    char acc[40], prod[40], order[40], saga[40], st[32], path[160];
    t_register(ALICE, "alice@test.example", NULL, acc);
    t_deposit(ALICE, acc, 100000);
    t_product(1, prod);
    t_order(ALICE, prod, 1, order, saga);
    t_saga_wait(saga, st);
    cr_assert_str_eq(st, "completed");
    t_catch_up();
    const char *args[] = {order};
    json_t *rows =
        svc_rm_query_ids(&t_plat->env, RM_ORDERS,
                         "SELECT typeof(shipping_address) || ':' ||"
                         " hex(substr(shipping_address, 1, 1)) || ':' ||"
                         " instr(shipping_address, CAST('pii1:' AS BLOB)) FROM orders WHERE id=?1",
                         args, 1, SVC_ID(0), text_row);
    const char *col = json_string_value(json_array_get(rows, 0));
    /* packed, and stored as bytes (issue 19): 0x01 then the envelope's base64 decoded */
    cr_assert(col && strcmp(col, "blob:01:0") == 0, "packed: %s", col ? col : "-");
    json_decref(rows);
    struct t_resp r;
    snprintf(path, sizeof path, "/api/v1/orders/%s", order);
    cr_assert_eq(t_call(&r, "GET", path, ALICE, NULL, NULL), 200, "%s", r.text);
    json_t *a1 = json_incref(json_object_get(r.body, "shippingAddress"));
    t_free(&r);
    snprintf(path, sizeof path, "/api/v1/shipments/%s", order);
    cr_assert_eq(t_call(&r, "GET", path, ALICE, NULL, NULL), 200, "%s", r.text);
    json_t *a2 = json_object_get(r.body, "address");
    cr_expect_str_eq(json_string_value(json_object_get(a1, "street")), "1 Main St");
    cr_expect(json_equal(a1, a2), "%s", r.text);
    t_free(&r);
    json_decref(a1);
}

/* The packed address as bytes: 0x01 and the base64 decoded, only when it encodes
 * back to the same text (every padding), else NULL (the text is stored). */
static void expect_bytes(const char *packed, const char *want, size_t want_n)
{
    size_t n = 0;
    uint8_t *b = svc_pii_column_bytes(packed, &n);
    if (!want) {
        cr_expect_null(b, "%s: kept as text", packed);
        ag_free(b);
        return;
    }
    cr_assert_not_null(b, "%s: packed", packed);
    cr_expect_eq(n, want_n + 1, "%s: %zu bytes", packed, n);
    cr_expect_eq(b[0], 0x01);
    cr_expect_eq(memcmp(b + 1, want, want_n), 0, "%s", packed);
    ag_free(b);
}

Test(per_order, a_packed_column_is_stored_as_its_bytes_only_when_they_encode_back)
{
    expect_bytes("~QUJD", "ABC", 3);
    expect_bytes("~QUI=", "AB", 2);
    expect_bytes("~QQ==", "A", 1);
    expect_bytes("~+/8=", "\xfb\xff", 2);
    expect_bytes("~QR==", NULL, 0); /* non-zero bits under the padding */
    expect_bytes("~QUJ", NULL, 0);  /* not a multiple of 4 */
    expect_bytes("~QU=D", NULL, 0); /* padding inside */
    expect_bytes("~QU*D", NULL, 0); /* not base64 */
    expect_bytes("~", NULL, 0);
    expect_bytes("{\"city\":\"Lyon\"}", NULL, 0); /* not packed */
    expect_bytes(NULL, NULL, 0);
}
