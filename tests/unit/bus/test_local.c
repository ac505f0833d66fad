/* The local bus adapter (in-process, durable through the store) and the port's
 * CloudEvents helpers: publish + dedup, ack, nak with delay and backoff,
 * redelivery after the ack wait, terminate and max-deliver → dead letter,
 * durable positions across reopen. Time is a fake clock: no test sleeps. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/bus.h"
#include "agora/store_log.h"

static char dir[64];
static struct ag_store *store;
static struct ag_bus *bus;
static struct ag_fake_clock fc;

static void open_bus(void)
{
    struct ag_bus_options o = {.store = store, .clock = &fc.clock};
    struct ag_err err;
    cr_assert_eq(ag_bus_open("local:", &o, &bus, &err), 0, "%s", err.msg);
}

static void setup(void)
{
    strcpy(dir, "/tmp/agora-bus-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    struct ag_store_options o = {.no_sync = true};
    cr_assert_eq(ag_store_log_open(dir, &o, &store, NULL), 0);
    ag_fake_clock_init(&fc, 1700000000ull * 1000000000ull);
    open_bus();
}

static void teardown(void)
{
    ag_bus_close(bus);
    ag_store_close(store);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(local, .init = setup, .fini = teardown);

static struct ag_bus_msg msg(const char *id, const char *topic)
{
    return (struct ag_bus_msg){.topic = topic,
                               .id = id,
                               .source = "/agora/ordering",
                               .type = topic,
                               .subject = "order-1",
                               .time_ns = 1700000000ull * 1000000000ull,
                               .traceparent =
                                   "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                               .data = "{\"orderId\":\"o1\"}",
                               .data_len = 16};
}

static void publish(const char *id, const char *topic)
{
    struct ag_bus_msg m = msg(id, topic);
    struct ag_err err;
    cr_assert_eq(ag_bus_publish(bus, &m, 1, 1000, &err), 0, "%s", err.msg);
}

static struct ag_bus_consumer *consumer(const char *name, uint32_t max_deliver)
{
    struct ag_bus_consumer_config cfg = {.name = name,
                                         .filter = "agora.ordering.>",
                                         .max_deliver = max_deliver,
                                         .ack_wait_ms = 1000,
                                         .backoff_ms = {100, 400},
                                         .nbackoff = 2};
    struct ag_bus_consumer *c;
    struct ag_err err;
    cr_assert_eq(ag_bus_consumer_open(bus, &cfg, &c, &err), 0, "%s", err.msg);
    return c;
}

/* Fetch (no wait) and return the single delivery, or NULL when none is due. */
static struct ag_bus_delivery *one(struct ag_bus_consumer *c)
{
    struct ag_bus_delivery **ds;
    size_t n;
    struct ag_err err;
    cr_assert_eq(ag_bus_fetch(c, 1, 0, &ds, &n, &err), 0, "%s", err.msg);
    if (!n) return NULL;
    struct ag_bus_delivery *d = ds[0];
    ag_free(ds);
    return d;
}

Test(local, cloudevent_shape_and_dedup)
{
    publish("0190f0f0-0000-7000-8000-000000000001", "agora.ordering.OrderPlaced");
    publish("0190f0f0-0000-7000-8000-000000000001", "agora.ordering.OrderPlaced"); /* dup */
    struct ag_bus_health h;
    ag_bus_health(bus, &h);
    cr_assert_eq(h.published, 2);
    cr_assert_eq(h.duplicates, 1);
    struct ag_bus_consumer *c = consumer("shape", 3);
    struct ag_bus_delivery *d = one(c);
    cr_assert_not_null(d);
    json_t *ce = json_loadb(d->body, d->body_len, 0, NULL);
    cr_assert_not_null(ce);
    cr_assert_str_eq(json_string_value(json_object_get(ce, "specversion")), "1.0");
    cr_assert_str_eq(json_string_value(json_object_get(ce, "id")),
                     "0190f0f0-0000-7000-8000-000000000001");
    cr_assert_str_eq(json_string_value(json_object_get(ce, "datacontenttype")), "application/json");
    cr_assert_str_eq(json_string_value(json_object_get(ce, "time")), "2023-11-14T22:13:20.000000Z");
    cr_assert_str_eq(json_string_value(json_object_get(ce, "subject")), "order-1");
    cr_assert_not_null(json_object_get(ce, "traceparent"));
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(ce, "data"), "orderId")),
                     "o1");
    json_decref(ce);
    cr_assert_str_eq(d->msg.topic, "agora.ordering.OrderPlaced");
    cr_assert_eq(d->deliveries, 1);
    cr_assert_eq(ag_bus_ack(c, d, NULL), 0);
    ag_bus_delivery_free(c, d);
    cr_assert_null(one(c), "the duplicate was not stored");
    ag_bus_consumer_close(c);
}

Test(local, filter_and_ack_survive_reopen)
{
    publish("0190f0f0-0000-7000-8000-000000000001", "agora.ordering.OrderPlaced");
    publish("0190f0f0-0000-7000-8000-000000000002", "agora.payments.PaymentCaptured");
    publish("0190f0f0-0000-7000-8000-000000000003", "agora.ordering.OrderConfirmed");
    struct ag_bus_consumer *c = consumer("durable", 3);
    struct ag_bus_delivery *d = one(c);
    cr_assert_str_eq(d->msg.type, "agora.ordering.OrderPlaced");
    cr_assert_eq(ag_bus_ack(c, d, NULL), 0);
    ag_bus_delivery_free(c, d);
    ag_bus_consumer_close(c); /* records the ack floor in the store */
    ag_bus_close(bus);
    open_bus();
    c = consumer("durable", 3);
    d = one(c);
    cr_assert_not_null(d);
    cr_assert_str_eq(d->msg.type, "agora.ordering.OrderConfirmed", "filtered and resumed");
    cr_assert_eq(d->seq, 3);
    ag_bus_delivery_free(c, d);
    ag_bus_consumer_close(c);
    /* dedup survives a reopen too */
    publish("0190f0f0-0000-7000-8000-000000000001", "agora.ordering.OrderPlaced");
    struct ag_bus_health h;
    ag_bus_health(bus, &h);
    cr_assert_eq(h.duplicates, 1);
}

Test(local, nak_delay_and_backoff)
{
    publish("0190f0f0-0000-7000-8000-000000000001", "agora.ordering.OrderPlaced");
    struct ag_bus_consumer *c = consumer("nak", 5);
    struct ag_bus_delivery *d = one(c);
    cr_assert_eq(ag_bus_nak(c, d, 250, "busy", NULL), 0);
    ag_bus_delivery_free(c, d);
    cr_assert_null(one(c), "not before its delay");
    ag_fake_clock_advance(&fc, 249000000);
    cr_assert_null(one(c));
    ag_fake_clock_advance(&fc, 1000000);
    d = one(c);
    cr_assert_not_null(d, "redelivered after 250 ms");
    cr_assert_eq(d->deliveries, 2);
    cr_assert_eq(ag_bus_nak(c, d, -1, "still busy", NULL), 0); /* backoff[1] = 400 ms */
    ag_bus_delivery_free(c, d);
    ag_fake_clock_advance(&fc, 399000000);
    cr_assert_null(one(c));
    ag_fake_clock_advance(&fc, 1000000);
    d = one(c);
    cr_assert_eq(d->deliveries, 3);
    cr_assert_eq(ag_bus_ack(c, d, NULL), 0);
    ag_bus_delivery_free(c, d);
    ag_fake_clock_advance(&fc, 10000000000ull);
    cr_assert_null(one(c), "acked: never again");
    ag_bus_consumer_close(c);
}

Test(local, ack_wait_redelivers)
{
    publish("0190f0f0-0000-7000-8000-000000000001", "agora.ordering.OrderPlaced");
    struct ag_bus_consumer *c = consumer("slow", 5);
    struct ag_bus_delivery *d = one(c);
    ag_bus_delivery_free(c, d); /* no answer */
    cr_assert_null(one(c));
    ag_fake_clock_advance(&fc, 1000000000);
    d = one(c);
    cr_assert_not_null(d, "redelivered after the ack wait");
    cr_assert_eq(d->deliveries, 2);
    ag_bus_delivery_free(c, d);
    ag_bus_consumer_close(c);
}

static json_t *dead_letters(void)
{
    struct ag_buf b;
    ag_buf_init(&b);
    uint64_t next;
    cr_assert_eq(ag_bus_dlq_read(bus, 1, 10, &b, &next, NULL), 0);
    json_t *a = json_loadb(b.data, b.len, 0, NULL);
    ag_buf_free(&b);
    cr_assert(json_is_array(a));
    return a;
}

Test(local, max_deliver_dead_letters_with_error)
{
    publish("0190f0f0-0000-7000-8000-000000000001", "agora.ordering.OrderPlaced");
    publish("0190f0f0-0000-7000-8000-000000000002", "agora.ordering.OrderConfirmed");
    struct ag_bus_consumer *c = consumer("poison", 2);
    struct ag_bus_delivery *d = one(c);
    cr_assert_eq(d->seq, 1);
    cr_assert_not(d->last);
    cr_assert_eq(ag_bus_nak(c, d, 0, "boom 1", NULL), 0);
    ag_bus_delivery_free(c, d);
    d = one(c);
    cr_assert_eq(d->seq, 1);
    cr_assert(d->last, "the 2nd delivery is the last of max_deliver 2");
    cr_assert_eq(ag_bus_nak(c, d, 0, "boom 2", NULL), 0);
    ag_bus_delivery_free(c, d);
    d = one(c);
    cr_assert_eq(d->seq, 2, "the poison message is gone; the next flows");
    cr_assert_eq(ag_bus_term(c, d, "cannot parse", NULL), 0);
    ag_bus_delivery_free(c, d);
    cr_assert_null(one(c));
    json_t *a = dead_letters();
    cr_assert_eq(json_array_size(a), 2);
    json_t *x = json_array_get(a, 0), *y = json_array_get(a, 1);
    cr_assert_str_eq(json_string_value(json_object_get(x, "reason")), "max_deliver");
    cr_assert_str_eq(json_string_value(json_object_get(x, "error")), "boom 2");
    cr_assert_eq(json_integer_value(json_object_get(x, "deliveries")), 2);
    cr_assert_str_eq(json_string_value(json_object_get(x, "consumer")), "poison");
    cr_assert_str_eq(json_string_value(json_object_get(x, "aggregate")), "order-1");
    cr_assert_str_eq(json_string_value(json_object_get(x, "topic")), "agora.ordering.OrderPlaced");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(x, "event"), "id")),
                     "0190f0f0-0000-7000-8000-000000000001");
    cr_assert_str_eq(json_string_value(json_object_get(y, "reason")), "terminated");
    cr_assert_str_eq(json_string_value(json_object_get(y, "error")), "cannot parse");
    json_decref(a);
    ag_bus_consumer_close(c);
}

Test(local, ack_wait_at_last_delivery_dead_letters)
{
    publish("0190f0f0-0000-7000-8000-000000000001", "agora.ordering.OrderPlaced");
    struct ag_bus_consumer *c = consumer("crashy", 1);
    struct ag_bus_delivery *d = one(c);
    cr_assert(d->last);
    ag_bus_delivery_free(c, d); /* the consumer "crashed" */
    ag_fake_clock_advance(&fc, 1000000000);
    cr_assert_null(one(c));
    json_t *a = dead_letters();
    cr_assert_eq(json_array_size(a), 1);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(a, 0), "error")),
                     "ack wait expired");
    json_decref(a);
    ag_bus_consumer_close(c);
}

Test(local, bad_arguments)
{
    struct ag_err err;
    struct ag_bus_msg m = msg("x", "agora.bad subject");
    cr_assert_eq(ag_bus_publish(bus, &m, 1, 100, &err), AG_EINVAL);
    char long_topic[AG_BUS_SUBJECT_MAX + 2];
    memset(long_topic, 'a', sizeof long_topic - 1);
    long_topic[sizeof long_topic - 1] = 0;
    const char *bad[] = {"",    "a..b", ".a",    "a.",    "a.*",
                         "a.>", "a.b>", "a\x7f", "a.\tb", long_topic};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        m = msg("x", bad[i]);
        cr_assert_eq(ag_bus_publish(bus, &m, 1, 100, &err), AG_EINVAL, "topic #%zu", i);
        cr_assert(strstr(err.msg, i == 0 || i == 9 ? "bytes" : "bad bus subject"), "%s", err.msg);
    }
    long_topic[AG_BUS_SUBJECT_MAX] = 0; /* 255 bytes: the longest */
    m = msg("x", long_topic);
    cr_assert_eq(ag_bus_publish(bus, &m, 1, 100, &err), 0, "%s", err.msg);
    struct ag_bus_consumer_config cfg = {.name = "bad name"};
    struct ag_bus_consumer *c;
    cr_assert_eq(ag_bus_consumer_open(bus, &cfg, &c, &err), AG_EINVAL);
    struct ag_bus_consumer_config badf = {.name = "okname", .filter = "agora..x"};
    cr_assert_eq(ag_bus_consumer_open(bus, &badf, &c, &err), AG_EINVAL);
    struct ag_bus *b2;
    cr_assert_eq(ag_bus_open("kafka://x", NULL, &b2, &err), AG_EUNSUPPORTED);
    cr_assert_eq(ag_bus_open("nats:x", NULL, &b2, &err), AG_EINVAL);
    cr_assert(ag_bus_subject_match("agora.>", "agora.ordering.OrderPlaced"));
    cr_assert(ag_bus_subject_match("agora.*.OrderPlaced", "agora.ordering.OrderPlaced"));
    cr_assert_not(ag_bus_subject_match("agora.payments.>", "agora.ordering.OrderPlaced"));
    cr_assert_not(ag_bus_subject_match("agora.ordering", "agora.ordering.OrderPlaced"));
}
