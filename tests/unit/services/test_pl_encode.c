/*
 * The published language's encoder (src/services/bus.c): the relay writes an
 * integration event's data straight from the stored JSON text, and these tests
 * hold it to the jansson tree path it replaced, byte for byte, for every event
 * type of docs/events.md the mapping publishes from one event (OrderPlaced and the
 * account's money read the store: the services' own tests cover them), over
 * stored payloads as they come (compact, spaced, reordered, with members not
 * published), strings with escapes and raw UTF-8, reals, nested values, null, and
 * then the whole CloudEvent with and without a traceparent.
 *
 * No platform, no store: the events are built here.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "agora/relay.h"
#include "services/internal.h"

struct pl_case {
    const char *stream, *type;
};

/* Every type the mapping publishes from the event alone, on its stream. */
static const struct pl_case types[] = {
    {"order-o1", "OrderConfirmed"},
    {"order-o1", "OrderCancelled"},
    {"order-o1", "OrderShipped"},
    {"stock-p1", "StockReserved"},
    {"stock-p1", "StockReleased"},
    {"stock-p1", "StockHeld"},
    {"stock-p1", "StockFreed"},
    {"account-a1", "PaymentCaptured"},
    {"account-a1", "PaymentRefunded"},
    {"shipment-o1", "ShipmentArranged"},
    {"shipment-o1", "ShipmentCancelled"},
    {"shipment-o1", "ShipmentDispatched"},
    {"reservation-o1", "OrderStockReserved"},
    {"reservation-o1", "StockReservationFailed"},
    {"reservation-o1", "OrderStockReleased"},
    {"payment-o1", "OrderPaymentCaptured"},
    {"payment-o1", "PaymentFailed"},
    {"payment-o1", "OrderPaymentRefunded"},
    {"shipment-o1", "ShipmentFailed"},
    {"product-p1", "ProductAdded"},
    {"product-p1", "ProductPriceChanged"},
    {"product-p1", "ProductDiscontinued"},
};

/* Stored payloads: every documented member name at once (each type publishes its
 * own subset), in the shapes a store may hold. */
static const char *const payloads[] = {
    "{}",
    "{\"orderId\":\"o-1\",\"quantity\":2,\"reason\":\"payment declined\",\"trackingNumber\":"
    "\"TRK1\",\"shippedAt\":\"2026-11-30T06:00:00Z\",\"shipmentId\":\"s-1\",\"dispatchedAt\":"
    "\"2026-11-30T07:00:00Z\",\"accountId\":\"a-1\",\"amount\":1999,\"sku\":\"SKU-1\",\"name\":"
    "\"Mug\",\"price\":1250,\"items\":[{\"quantity\":1,\"productId\":\"p-1\"}]}",
    /* spaced, reordered, with members that are never published */
    "{ \"email\" : \"alice@example.com\",\n\t\"quantity\" : 3 , \"orderId\":\"o-2\",\r\n"
    "\"customerName\":\"Alice\", \"reason\" : \"out of stock\", \"amount\" : -17 }",
    /* escapes, raw UTF-8, a slash, control characters */
    "{\"reason\":\"a \\\"quoted\\\" \\\\ reason\\n\\ton two lines\",\"orderId\":\"caf\xc3\xa9 "
    "\xe2\x82\xac \xf0\x9f\x98\x80\",\"trackingNumber\":\"\\u00e9\\u20ac\\ud83d\\ude00 \\/\","
    "\"name\":\"\\u0001\\u001f\\b\\f\\r\",\"sku\":\"a/b\"}",
    /* numbers as dump_sorted may not write them as stored: reals, -0, exponents */
    "{\"quantity\":1.5,\"amount\":-0,\"price\":1e3,\"shippedAt\":0,\"orderId\":-12345678901234,"
    "\"shipmentId\":123456789012345678,\"dispatchedAt\":1234567890123456789}",
    /* nested values, unsorted inside; null and booleans */
    "{\"items\":[{\"unitPrice\":100,\"productId\":\"p-2\",\"quantity\":2},[],{},[1,[2,{\"b\":1,"
    "\"a\":[true,false,null]}]]],\"price\":{\"currency\":\"EUR\",\"amount\":1250},\"reason\":null,"
    "\"orderId\":true,\"quantity\":false,\"amount\":{\"amount\":5,\"currency\":\"USD\"}}",
    /* not an object */
    "[1,2,3]",
    "\"a string\"",
};

static void check_one(const char *stream, const char *type, const char *data)
{
    struct ag_event ev = {.stream = stream,
                          .stream_len = strlen(stream),
                          .type = type,
                          .type_len = strlen(type),
                          .data = data,
                          .data_len = strlen(data),
                          .time_ns = 1796018400123456000ull};
    struct ag_relay_msg m = {0};
    char *tree = NULL;
    int want = svc_published_language_tree(&ev, &tree);
    int got = svc_published_language(NULL, NULL, &ev, &m);
    cr_assert_eq(got, want, "%s %s: %d, the tree path %d", type, data, got, want);
    if (got == 1) {
        cr_assert_str_eq(m.data, tree, "%s on %s", type, data);
        json_t *j = json_loads(m.data, 0, NULL); /* and it is the sorted, compact JSON */
        char *d = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
        cr_expect_str_eq(m.data, d, "%s on %s: jansson writes it so", type, data);
        ag_free(d);
        json_decref(j);
    }
    ag_free(m.data);
    ag_free(tree);
}

Test(pl_encode, every_type_and_payload_encodes_as_the_tree_path)
{
    for (size_t t = 0; t < sizeof types / sizeof *types; t++)
        for (size_t p = 0; p < sizeof payloads / sizeof *payloads; p++)
            check_one(types[t].stream, types[t].type, payloads[p]);
}

Test(pl_encode, the_aggregate_id_and_the_default_reason)
{
    /* an id that needs escaping, one with UTF-8 (json_stringn's check: the tree's) */
    check_one("order-a\"b\\c", "OrderConfirmed", "{\"trackingNumber\":\"T\"}");
    check_one("order-\xc3\xa9t\xc3\xa9", "OrderConfirmed", "{\"trackingNumber\":\"T\"}");
    check_one("order-\x01", "OrderCancelled", "{\"reason\":\"r\"}");
    /* StockFreed → StockReleased: a reason when the stored one has none */
    check_one("stock-p9", "StockFreed", "{\"orderId\":\"o\",\"quantity\":1}");
    check_one("stock-p9", "StockFreed", "{\"orderId\":\"o\",\"quantity\":1,\"reason\":\"x\"}");
    struct ag_event ev = {.stream = "stock-p9",
                          .stream_len = 8,
                          .type = "StockFreed",
                          .type_len = 10,
                          .data = "{\"quantity\":1,\"orderId\":\"o\"}",
                          .data_len = 28};
    struct ag_relay_msg m = {0};
    cr_assert_eq(svc_published_language(NULL, NULL, &ev, &m), 1);
    cr_expect_str_eq(m.data, "{\"orderId\":\"o\",\"productId\":\"p9\",\"quantity\":1,\"reason\":"
                             "\"released\"}");
    cr_expect_str_eq(m.type, "agora.inventory.StockReleased");
    cr_expect_str_eq(m.subject, "p9");
    ag_free(m.data);
}

Test(pl_encode, not_the_published_language)
{
    check_one("order-o1", "OrderCreated", "{\"customerId\":\"c\"}"); /* not published */
    check_one("orders-o1", "OrderConfirmed", "{}");                  /* another stream */
    check_one("order-", "OrderConfirmed", "{}");                     /* no id */
    check_one("order", "OrderConfirmed", "{}");
    check_one("order-o1", "OrderConfirmedX", "{}");
    check_one("order-o1", "OrderConfirme", "{}");
}

/* The message as the bus writes it: one CloudEvent, its data the mapping's. */
static char *cloudevent(const struct ag_event *ev, const char *traceparent)
{
    struct ag_relay_msg m = {0};
    cr_assert_eq(svc_published_language(NULL, NULL, ev, &m), 1);
    struct ag_bus_msg msg = {.topic = m.topic,
                             .id = "0194f3a0-0000-7000-8000-000000000001",
                             .source = m.source,
                             .type = m.type,
                             .subject = m.subject,
                             .time_ns = ev->time_ns,
                             .traceparent = traceparent,
                             .data = m.data,
                             .data_len = strlen(m.data)};
    struct ag_buf b;
    ag_buf_init(&b);
    cr_assert_eq(ag_bus_cloudevent_json(&msg, &b), 0);
    ag_free(m.data);
    return ag_buf_steal(&b, NULL);
}

/* The same CloudEvent through jansson (its members in this order). */
static char *cloudevent_tree(const struct ag_event *ev, const char *traceparent)
{
    char *data = NULL;
    cr_assert_eq(svc_published_language_tree(ev, &data), 1);
    struct ag_relay_msg m = {0};
    cr_assert_eq(svc_published_language(NULL, NULL, ev, &m), 1);
    json_t *ce =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "specversion", "1.0", "id",
                  "0194f3a0-0000-7000-8000-000000000001", "source", m.source, "type", m.type,
                  "subject", m.subject, "time", "2026-11-30T06:00:00.123456Z" /* time_ns */,
                  "datacontenttype", "application/json");
    if (traceparent) json_object_set_new(ce, "traceparent", json_string(traceparent));
    json_object_set_new(ce, "data", json_loads(data, 0, NULL));
    char *out = json_dumps(ce, JSON_COMPACT);
    json_decref(ce);
    ag_free(data);
    ag_free(m.data);
    return out;
}

Test(pl_encode, the_cloudevent_with_and_without_a_traceparent)
{
    const char *tps[] = {NULL, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"};
    for (size_t t = 0; t < sizeof types / sizeof *types; t++)
        for (size_t k = 0; k < 2; k++) {
            const char *data = payloads[1];
            struct ag_event ev = {.stream = types[t].stream,
                                  .stream_len = strlen(types[t].stream),
                                  .type = types[t].type,
                                  .type_len = strlen(types[t].type),
                                  .data = data,
                                  .data_len = strlen(data),
                                  .time_ns = 1796018400123456000ull};
            char *ours = cloudevent(&ev, tps[k]), *ref = cloudevent_tree(&ev, tps[k]);
            cr_expect_str_eq(ours, ref, "%s, traceparent %s", types[t].type,
                             tps[k] ? "present" : "absent");
            ag_free(ours);
            ag_free(ref); /* jansson allocates through ag_malloc */
        }
}
