/* The outbox relay: publishes only the mapped events, in log order, with the event
 * id as the message id; a bus that fails keeps the checkpoint and the relay
 * publishes the same events again (nothing lost); a restarted relay resumes from
 * its checkpoint and the bus's dedup keeps consumers from seeing a duplicate. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay_fixture.h"

static struct relay_fx fx; /* the log store, and the local bus over it */

static void rsetup(void)
{
    relay_fx_open(&fx, "relay", 0, false);
}

static void rteardown(void)
{
    relay_fx_close(&fx);
}

TestSuite(relay, .init = rsetup, .fini = rteardown, .timeout = 30);

/* "Shipped" events of "parcel-<id>" streams are the published language (the
 * subject is the id). */
static char parcel[] = "parcel-";

Test(relay, publishes_the_mapped_events_in_order)
{
    for (int i = 0; i < 10; i++) {
        relay_fx_append(&fx, "parcel-a", "Shipped", i);
        relay_fx_append(&fx, "parcel-a", "Weighed", 100 + i); /* private */
    }
    struct ag_relay_config cfg = {
        .store = fx.store, .bus = fx.bus, .map = relay_fx_map, .ud = parcel};
    struct ag_relay *r;
    cr_assert_eq(ag_relay_start(&cfg, &r, NULL), 0);
    cr_assert_eq(ag_relay_wait(r, 20, 10000), 0);
    ag_relay_stop(r); /* records the checkpoint */
    int ns[32];
    cr_assert_eq(relay_fx_drain(&fx, "c1", ns, 32), 10);
    for (int i = 0; i < 10; i++) cr_assert_eq(ns[i], i);
    /* restarted: resumes after the checkpoint, publishes only what is new */
    relay_fx_append(&fx, "parcel-b", "Shipped", 10);
    cr_assert_eq(ag_relay_start(&cfg, &r, NULL), 0);
    cr_assert_eq(ag_relay_wait(r, relay_fx_head(&fx), 10000), 0);
    struct ag_relay_stats st;
    ag_relay_stats(r, &st);
    cr_assert_eq(st.published, 1, "only the new event");
    ag_relay_stop(r);
    cr_assert_eq(relay_fx_drain(&fx, "c1", ns, 32), 1);
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
        ag_bus_publish(fx.bus, m, n / 2, t, NULL);
        return ag_err_set(err, AG_EUNAVAILABLE, "broker down (test)");
    }
    return ag_bus_publish(fx.bus, m, n, t, err);
}

Test(relay, a_failing_bus_loses_nothing_and_duplicates_nothing)
{
    static struct ag_bus_ops ops;
    ops = *fx.bus->ops;
    ops.publish = flaky_publish;
    struct ag_bus flaky = {.ops = &ops};
    fail_left = 3;
    for (int i = 0; i < 8; i++) relay_fx_append(&fx, "parcel-c", "Shipped", i);
    struct ag_relay_config cfg = {
        .store = fx.store, .bus = &flaky, .map = relay_fx_map, .ud = parcel};
    struct ag_relay *r;
    cr_assert_eq(ag_relay_start(&cfg, &r, NULL), 0);
    cr_assert_eq(ag_relay_wait(r, relay_fx_head(&fx), 15000), 0, "caught up after the failures");
    struct ag_relay_stats st;
    ag_relay_stats(r, &st);
    cr_assert_eq(st.failures, 3);
    cr_assert_not(st.failing);
    ag_relay_stop(r);
    int ns[32];
    cr_assert_eq(relay_fx_drain(&fx, "c2", ns, 32), 8, "each once");
    for (int i = 0; i < 8; i++) cr_assert_eq(ns[i], i);
    struct ag_bus_health h;
    ag_bus_health(fx.bus, &h);
    cr_assert_gt(h.duplicates, 0, "the republished half was dropped by dedup");
}
