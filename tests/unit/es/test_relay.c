/* The outbox relay: publishes only the mapped events, in log order, with the event
 * id as the message id; a bus that fails keeps the checkpoint and the relay
 * publishes the same events again (nothing lost); a restarted relay resumes from
 * its checkpoint and the bus's dedup keeps consumers from seeing a duplicate. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/relay.h"
#include "agora/store_log.h"

static char rdir[64];
static struct ag_store *rstore;
static struct ag_bus *local;

static void rsetup(void)
{
    strcpy(rdir, "/tmp/agora-relay-XXXXXX");
    cr_assert_not_null(mkdtemp(rdir));
    struct ag_store_options o = {.no_sync = true};
    cr_assert_eq(ag_store_log_open(rdir, &o, &rstore, NULL), 0);
    struct ag_bus_options bo = {.store = rstore};
    cr_assert_eq(ag_bus_open("local:", &bo, &local, NULL), 0);
}

static void rteardown(void)
{
    ag_bus_close(local);
    ag_store_close(rstore);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", rdir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(relay, .init = rsetup, .fini = rteardown, .timeout = 30);

/* "Shipped" events of "parcel-<id>" streams are the published language. */
static int map(void *ud, struct ag_store *s, const struct ag_event *ev, struct ag_relay_msg *out)
{
    AG_UNUSED(ud);
    AG_UNUSED(s);
    if (ev->type_len != 7 || memcmp(ev->type, "Shipped", 7) != 0) return 0;
    snprintf(out->topic, sizeof out->topic, "agora.shipping.Shipped");
    snprintf(out->type, sizeof out->type, "agora.shipping.Shipped");
    snprintf(out->source, sizeof out->source, "/agora/shipping");
    snprintf(out->subject, sizeof out->subject, "%.*s", (int)ev->stream_len - 7, ev->stream + 7);
    out->data = ag_malloc(ev->data_len + 1);
    memcpy(out->data, ev->data, ev->data_len);
    out->data[ev->data_len] = 0;
    return 1;
}

static void append(const char *stream, const char *type, int n)
{
    char data[32];
    snprintf(data, sizeof data, "{\"n\":%d}", n);
    struct ag_event_data ev = {
        .type = type, .type_len = strlen(type), .data = data, .data_len = strlen(data)};
    cr_assert_eq(ag_store_append(rstore, stream, strlen(stream), AG_STORE_ANY, &ev, 1, NULL, NULL),
                 0);
}

static uint64_t head(void)
{
    struct ag_store_stats st;
    ag_store_stats(rstore, &st);
    return st.events;
}

/* Every message the consumer `name` gets now: their data's "n", in order. */
static size_t drain(const char *name, int *ns, size_t cap)
{
    struct ag_bus_consumer_config cfg = {.name = name};
    struct ag_bus_consumer *c;
    cr_assert_eq(ag_bus_consumer_open(local, &cfg, &c, NULL), 0);
    size_t got = 0;
    for (;;) {
        struct ag_bus_delivery **ds;
        size_t n;
        cr_assert_eq(ag_bus_fetch(c, 64, 0, &ds, &n, NULL), 0);
        if (!n) break;
        for (size_t i = 0; i < n; i++) {
            const char *p = strstr(ds[i]->msg.data, "\"n\":");
            if (got < cap) ns[got] = p ? atoi(p + 4) : -1;
            got++;
            ag_bus_ack(c, ds[i], NULL);
            ag_bus_delivery_free(c, ds[i]);
        }
        ag_free(ds);
    }
    ag_bus_consumer_close(c);
    return got;
}

Test(relay, publishes_the_mapped_events_in_order)
{
    for (int i = 0; i < 10; i++) {
        append("parcel-a", "Shipped", i);
        append("parcel-a", "Weighed", 100 + i); /* private */
    }
    struct ag_relay_config cfg = {.store = rstore, .bus = local, .map = map};
    struct ag_relay *r;
    cr_assert_eq(ag_relay_start(&cfg, &r, NULL), 0);
    cr_assert_eq(ag_relay_wait(r, 20, 10000), 0);
    ag_relay_stop(r); /* records the checkpoint */
    int ns[32];
    cr_assert_eq(drain("c1", ns, 32), 10);
    for (int i = 0; i < 10; i++) cr_assert_eq(ns[i], i);
    /* restarted: resumes after the checkpoint, publishes only what is new */
    append("parcel-b", "Shipped", 10);
    cr_assert_eq(ag_relay_start(&cfg, &r, NULL), 0);
    cr_assert_eq(ag_relay_wait(r, head(), 10000), 0);
    struct ag_relay_stats st;
    ag_relay_stats(r, &st);
    cr_assert_eq(st.published, 1, "only the new event");
    ag_relay_stop(r);
    cr_assert_eq(drain("c1", ns, 32), 1);
    cr_assert_eq(ns[0], 10);
}

/* ---- a bus whose broker fails the first publishes (wraps the local bus) ---- */

static int fail_left;
static int flaky_publish(struct ag_bus *b, const struct ag_bus_msg *m, size_t n, int t,
                         struct ag_err *err)
{
    AG_UNUSED(b);
    if (__atomic_fetch_sub(&fail_left, 1, __ATOMIC_RELAXED) > 0) {
        /* half of them reached the broker before the "ack" was lost */
        ag_bus_publish(local, m, n / 2, t, NULL);
        return ag_err_set(err, AG_EUNAVAILABLE, "broker down (test)");
    }
    return ag_bus_publish(local, m, n, t, err);
}

Test(relay, a_failing_bus_loses_nothing_and_duplicates_nothing)
{
    static struct ag_bus_ops ops;
    ops = *local->ops;
    ops.publish = flaky_publish;
    struct ag_bus flaky = {.ops = &ops};
    fail_left = 3;
    for (int i = 0; i < 8; i++) append("parcel-c", "Shipped", i);
    struct ag_relay_config cfg = {.store = rstore, .bus = &flaky, .map = map};
    struct ag_relay *r;
    cr_assert_eq(ag_relay_start(&cfg, &r, NULL), 0);
    cr_assert_eq(ag_relay_wait(r, head(), 15000), 0, "caught up after the failures");
    struct ag_relay_stats st;
    ag_relay_stats(r, &st);
    cr_assert_eq(st.failures, 3);
    cr_assert_not(st.failing);
    ag_relay_stop(r);
    int ns[32];
    cr_assert_eq(drain("c2", ns, 32), 8, "each once");
    for (int i = 0; i < 8; i++) cr_assert_eq(ns[i], i);
    struct ag_bus_health h;
    ag_bus_health(local, &h);
    cr_assert_gt(h.duplicates, 0, "the republished half was dropped by dedup");
}
