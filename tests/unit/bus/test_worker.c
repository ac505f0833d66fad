/* The bus worker on the local adapter: the inbox (a redelivered message is
 * acknowledged and skipped; the effect and the inbox record commit together),
 * sequenced dead letters (a failing message is parked, later messages of its
 * aggregate wait behind it, other aggregates flow), replay after the fault is
 * fixed releases the line in order, drop, and the lot survives a reopen; lanes
 * handle aggregates at once, each in order, and unwanted messages are acked
 * without the handler. The handler's faults are switched by the test; time is a
 * fake clock. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/bus_worker.h"
#include "agora/store_log.h"

static char dir[64];
static struct ag_store *store;
static struct ag_bus *bus;
static struct ag_fake_clock fc;

/* The handler: appends "Handled" to stream handled-<subject> with the inbox
 * record, unless the message's id is listed as failing. */
struct effects {
    char failing[8][64];
    size_t nfailing;
    int fail_code;
    size_t calls;
    char order[64][64]; /* ids handled, in order */
    size_t n;
};

static int handler(void *ud, const struct ag_bus_delivery *d, struct ag_err *err)
{
    struct effects *fx = ud;
    fx->calls++;
    for (size_t i = 0; i < fx->nfailing; i++)
        if (strcmp(fx->failing[i], d->msg.id) == 0)
            return ag_err_set(err, fx->fail_code, "cannot handle %s", d->msg.id);
    char stream[128];
    snprintf(stream, sizeof stream, "handled-%s", d->msg.subject ? d->msg.subject : "none");
    struct ag_event_data ev = {.type = "Handled", .type_len = 7, .data = "{}", .data_len = 2};
    struct ag_append_part part = {stream, strlen(stream), AG_STORE_ANY, &ev, 1};
    int rc = ag_bus_inbox_append(store, "w", d->msg.id, &part, 1, err);
    if (rc == 0 && fx->n < 64) snprintf(fx->order[fx->n++], 64, "%s", d->msg.id);
    return rc < 0 ? rc : 0;
}

static struct effects fx;

static void setup(void)
{
    strcpy(dir, "/tmp/agora-busw-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    struct ag_store_options o = {.no_sync = true};
    cr_assert_eq(ag_store_log_open(dir, &o, &store, NULL), 0);
    ag_fake_clock_init(&fc, 1700000000ull * 1000000000ull);
    struct ag_bus_options bo = {.store = store, .clock = &fc.clock};
    struct ag_err err;
    cr_assert_eq(ag_bus_open("local:", &bo, &bus, &err), 0, "%s", err.msg);
    memset(&fx, 0, sizeof fx);
    fx.fail_code = AG_EUNAVAILABLE;
}

static void teardown(void)
{
    ag_bus_close(bus);
    ag_store_close(store);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(worker, .init = setup, .fini = teardown);

static void publish(const char *id, const char *aggregate)
{
    struct ag_bus_msg m = {.topic = "agora.ordering.OrderPlaced",
                           .id = id,
                           .source = "/agora/ordering",
                           .type = "agora.ordering.OrderPlaced",
                           .subject = aggregate,
                           .data = "{}",
                           .data_len = 2};
    struct ag_err err;
    cr_assert_eq(ag_bus_publish(bus, &m, 1, 1000, &err), 0, "%s", err.msg);
}

static struct ag_bus_worker *worker(void)
{
    struct ag_bus_worker_config cfg = {.consumer = {.name = "w",
                                                    .max_deliver = 2,
                                                    .ack_wait_ms = 1000,
                                                    .backoff_ms = {100},
                                                    .nbackoff = 1},
                                       .store = store,
                                       .handler = handler,
                                       .ud = &fx};
    struct ag_bus_worker *w;
    struct ag_err err;
    cr_assert_eq(ag_bus_worker_open(bus, &cfg, &w, &err), 0, "%s", err.msg);
    return w;
}

/* Poll until nothing is due, moving the fake clock past the backoff each time. */
static void drain(struct ag_bus_worker *w)
{
    for (int i = 0; i < 10; i++) {
        struct ag_err err;
        cr_assert_eq(ag_bus_worker_poll(w, 100, 0, NULL, &err), 0, "%s", err.msg);
        ag_fake_clock_advance(&fc, 200ull * 1000000ull);
    }
}

static json_t *list(struct ag_bus_worker *w)
{
    struct ag_buf b;
    ag_buf_init(&b);
    struct ag_err err;
    cr_assert_eq(ag_bus_worker_list(w, &b, &err), 0, "%s", err.msg);
    json_t *a = json_loadb(b.data, b.len, 0, NULL);
    ag_buf_free(&b);
    cr_assert(json_is_array(a));
    return a;
}

static int64_t version_of(const char *stream)
{
    struct ag_event_page pg;
    if (ag_store_read_stream(store, stream, strlen(stream), -1, AG_READ_BACKWARD, 1, &pg, NULL))
        return -1;
    int64_t v = pg.count ? pg.events[0].version : -1;
    ag_event_page_free(&pg);
    return v;
}

static const char *str(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

Test(worker, inbox_skips_a_redelivered_message)
{
    struct ag_err err;
    struct ag_event_data ev = {.type = "Handled", .type_len = 7, .data = "{}", .data_len = 2};
    struct ag_append_part part = {"handled-x", 9, AG_STORE_ANY, &ev, 1};
    cr_assert_eq(ag_bus_inbox_seen(store, "w", "m1", &err), 0);
    cr_assert_eq(ag_bus_inbox_append(store, "w", "m1", &part, 1, &err), 0, "%s", err.msg);
    cr_assert_eq(ag_bus_inbox_seen(store, "w", "m1", &err), 1);
    /* the same message again: skipped, and the effect is not written twice */
    cr_assert_eq(ag_bus_inbox_append(store, "w", "m1", &part, 1, &err), 1);
    cr_assert_eq(version_of("handled-x"), 0);
    /* another consumer has its own inbox */
    cr_assert_eq(ag_bus_inbox_seen(store, "other", "m1", &err), 0);
    /* the effect's conflict writes no inbox record either (one unit) */
    struct ag_append_part bad = {"handled-x", 9, AG_STORE_NO_STREAM, &ev, 1};
    cr_assert_eq(ag_bus_inbox_append(store, "w", "m2", &bad, 1, &err), AG_ECONFLICT);
    cr_assert_eq(ag_bus_inbox_seen(store, "w", "m2", &err), 0);
    cr_assert_eq(ag_bus_inbox_append(store, "w", "", &part, 1, &err), AG_EINVAL);

    /* through a worker: the message was handled but its ack was lost (the consumer
     * restarts from its old floor): the redelivery is acked without a second effect */
    publish("m3", "order-1");
    struct ag_bus_worker *w = worker();
    drain(w);
    cr_assert_eq(fx.calls, 1);
    cr_assert_eq(version_of("handled-order-1"), 0);
    ag_bus_worker_close(w);
    struct ag_event_data cp = {
        .type = "ConsumerCheckpoint", .type_len = 18, .data = "{\"next\":0}", .data_len = 10};
    cr_assert_eq(ag_store_append(store, "_bus-consumer-w", 15, AG_STORE_ANY, &cp, 1, NULL, &err),
                 0);
    w = worker();
    drain(w);
    cr_assert_eq(fx.calls, 1, "the inbox skipped it before the handler");
    cr_assert_eq(version_of("handled-order-1"), 0);
    json_t *a = list(w);
    cr_assert_eq(json_array_size(a), 0);
    json_decref(a);
    ag_bus_worker_close(w);
}

/* a message that fails and then goes through on its redelivery: what queued up
 * behind it meanwhile follows in order, and nothing stays parked */
Test(worker, retried_message_then_its_followers_in_order)
{
    publish("a1", "order-A");
    publish("a2", "order-A");
    publish("b1", "order-B");
    strcpy(fx.failing[fx.nfailing++], "a1");
    struct ag_bus_worker *w = worker();
    struct ag_err err;
    cr_assert_eq(ag_bus_worker_poll(w, 100, 0, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(fx.n, 1);
    cr_assert_str_eq(fx.order[0], "b1");
    fx.nfailing = 0;
    drain(w);
    cr_assert_eq(fx.n, 3);
    cr_assert_str_eq(fx.order[1], "a1");
    cr_assert_str_eq(fx.order[2], "a2");
    json_t *a = list(w);
    cr_assert_eq(json_array_size(a), 0);
    json_decref(a);
    ag_bus_worker_close(w);
}

Test(worker, parked_message_holds_its_aggregate_others_flow)
{
    publish("a1", "order-A");
    publish("b1", "order-B");
    publish("a2", "order-A");
    publish("b2", "order-B");
    publish("a3", "order-A");
    strcpy(fx.failing[fx.nfailing++], "a1");
    struct ag_bus_worker *w = worker();
    drain(w);
    /* a1 failed twice (max_deliver 2) and was parked; a2, a3 wait; B flowed */
    cr_assert_eq(fx.n, 2);
    cr_assert_str_eq(fx.order[0], "b1");
    cr_assert_str_eq(fx.order[1], "b2");
    /* listed in parking order: a2 and a3 were parked (waiting) while a1 was being
     * retried, a1 when its last delivery failed */
    json_t *a = list(w);
    cr_assert_eq(json_array_size(a), 3);
    json_t *h = json_array_get(a, 2);
    cr_assert_str_eq(str(h, "msgId"), "a1");
    cr_assert_str_eq(str(h, "aggregate"), "order-A");
    cr_assert_str_eq(str(h, "error"), "cannot handle a1");
    cr_assert_eq(json_integer_value(json_object_get(h, "deliveries")), 2);
    cr_assert(json_is_false(json_object_get(h, "waiting")));
    json_int_t head = json_integer_value(json_object_get(h, "id"));
    for (size_t i = 0; i < 2; i++) {
        json_t *e = json_array_get(a, i);
        cr_assert(json_is_true(json_object_get(e, "waiting")));
        cr_assert_eq(json_integer_value(json_object_get(e, "behind")), head);
    }
    cr_assert_str_eq(str(json_array_get(a, 0), "msgId"), "a2");
    cr_assert_str_eq(str(json_array_get(a, 1), "msgId"), "a3");
    json_int_t a2 = json_integer_value(json_object_get(json_array_get(a, 0), "id"));
    json_decref(a);

    /* a later message of A waits too, even though the handler would take it */
    publish("a4", "order-A");
    publish("b3", "order-B");
    drain(w);
    cr_assert_str_eq(fx.order[2], "b3");
    cr_assert_eq(fx.n, 3);

    /* show: the CloudEvent is kept */
    struct ag_buf b;
    ag_buf_init(&b);
    struct ag_err err;
    cr_assert_eq(ag_bus_worker_show(w, (uint64_t)head, &b, &err), 0, "%s", err.msg);
    json_t *s = json_loadb(b.data, b.len, 0, NULL);
    cr_assert_str_eq(str(json_object_get(s, "event"), "id"), "a1");
    cr_assert_str_eq(str(json_object_get(s, "event"), "subject"), "order-A");
    cr_assert_str_eq(str(s, "state"), "parked");
    json_decref(s);
    ag_buf_free(&b);
    cr_assert_eq(ag_bus_worker_show(w, 999, &b, &err), AG_ENOTFOUND);

    /* replaying a waiting one would overtake the head */
    size_t released = 0;
    cr_assert_eq(ag_bus_worker_replay(w, (uint64_t)a2, &released, &err), AG_ECONFLICT);
    /* the fault is still there: still parked, with the new error */
    cr_assert_eq(ag_bus_worker_replay(w, (uint64_t)head, &released, &err), AG_EUNAVAILABLE);
    cr_assert_eq(fx.n, 3);
    ag_bus_worker_close(w);

    /* the lot survives a restart */
    w = worker();
    a = list(w);
    cr_assert_eq(json_array_size(a), 4);
    json_decref(a);

    /* the fault is fixed: the replay handles a1, then a2, a3, a4 in order */
    fx.nfailing = 0;
    cr_assert_eq(ag_bus_worker_replay(w, (uint64_t)head, &released, &err), 0, "%s", err.msg);
    cr_assert_eq(released, 3);
    cr_assert_eq(fx.n, 7);
    cr_assert_str_eq(fx.order[3], "a1");
    cr_assert_str_eq(fx.order[4], "a2");
    cr_assert_str_eq(fx.order[5], "a3");
    cr_assert_str_eq(fx.order[6], "a4");
    a = list(w);
    cr_assert_eq(json_array_size(a), 0);
    json_decref(a);
    cr_assert_eq(ag_bus_worker_replay(w, (uint64_t)head, &released, &err), AG_ECONFLICT);
    /* A flows again */
    publish("a5", "order-A");
    drain(w);
    cr_assert_str_eq(fx.order[7], "a5");
    cr_assert_eq(version_of("handled-order-A"), 4);
    ag_bus_worker_close(w);
}

Test(worker, poison_is_parked_at_once_and_release_stops_at_the_next_failure)
{
    fx.fail_code = AG_EJSON;
    strcpy(fx.failing[fx.nfailing++], "a1");
    strcpy(fx.failing[fx.nfailing++], "a3");
    publish("a1", "order-A");
    publish("a2", "order-A");
    publish("a3", "order-A");
    publish("a4", "order-A");
    struct ag_bus_worker *w = worker();
    struct ag_err err;
    cr_assert_eq(ag_bus_worker_poll(w, 100, 0, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(fx.calls, 1, "poison is not retried; the rest waits without a call");
    json_t *a = list(w);
    cr_assert_eq(json_array_size(a), 4);
    json_int_t a1 = json_integer_value(json_object_get(json_array_get(a, 0), "id"));
    json_int_t a3 = json_integer_value(json_object_get(json_array_get(a, 2), "id"));
    json_decref(a);

    /* drop the poison: a2 is released, a3 fails and becomes the head, a4 waits */
    size_t released = 0;
    cr_assert_eq(ag_bus_worker_drop(w, (uint64_t)a1, &released, &err), 0, "%s", err.msg);
    cr_assert_eq(released, 1);
    cr_assert_eq(fx.n, 1);
    cr_assert_str_eq(fx.order[0], "a2");
    a = list(w);
    cr_assert_eq(json_array_size(a), 2);
    json_t *h = json_array_get(a, 0);
    cr_assert_eq(json_integer_value(json_object_get(h, "id")), a3);
    cr_assert(json_is_false(json_object_get(h, "waiting")));
    cr_assert_str_eq(str(h, "error"), "cannot handle a3");
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(a, 1), "behind")), a3);
    json_decref(a);
    cr_assert_eq(ag_bus_worker_drop(w, (uint64_t)a1, &released, &err), AG_ECONFLICT);

    /* drop a3 too: a4 goes through */
    cr_assert_eq(ag_bus_worker_drop(w, (uint64_t)a3, &released, &err), 0, "%s", err.msg);
    cr_assert_eq(released, 1);
    cr_assert_str_eq(fx.order[1], "a4");
    a = list(w);
    cr_assert_eq(json_array_size(a), 0);
    json_decref(a);
    ag_bus_worker_close(w);
}

/* ---- lanes and `wants` ---- */

/* Records, per aggregate, the sequence numbers handled (the message id's number),
 * and how many handlers ran at once at most (under a mutex: lanes are threads). */
static pthread_mutex_t lane_mu = PTHREAD_MUTEX_INITIALIZER;
static int lane_seen[4][32], lane_n[4], lane_now, lane_max, lane_calls;

static int lane_handler(void *ud, const struct ag_bus_delivery *d, struct ag_err *err)
{
    AG_UNUSED(ud), AG_UNUSED(err);
    int agg = d->msg.subject[1] - '0', seq = atoi(strrchr(d->msg.id, '-') + 1);
    pthread_mutex_lock(&lane_mu);
    lane_calls++;
    if (++lane_now > lane_max) lane_max = lane_now;
    pthread_mutex_unlock(&lane_mu);
    struct timespec ts = {0, 2000000}; /* a store append's wait, for the overlap */
    nanosleep(&ts, NULL);
    pthread_mutex_lock(&lane_mu);
    lane_now--;
    if (lane_n[agg] < 32) lane_seen[agg][lane_n[agg]++] = seq;
    pthread_mutex_unlock(&lane_mu);
    return 0;
}

static bool lane_wants(void *ud, const struct ag_bus_delivery *d)
{
    AG_UNUSED(ud);
    return strstr(d->msg.id, "skip") == NULL;
}

Test(worker, lanes_run_aggregates_at_once_each_in_order_and_unwanted_are_acked)
{
    char id[64], agg[8];
    for (int i = 0; i < 40; i++) { /* 4 aggregates, 10 messages each, interleaved */
        snprintf(agg, sizeof agg, "a%d", i % 4);
        snprintf(id, sizeof id, "msg-%s-%s-%d", i % 10 == 9 ? "skip" : "keep", agg, i / 4);
        publish(id, agg);
    }
    struct ag_bus_worker_config cfg = {.consumer = {.name = "lanes", .max_deliver = 2},
                                       .store = store,
                                       .handler = lane_handler,
                                       .lanes = 4,
                                       .wants = lane_wants};
    struct ag_bus_worker *w;
    struct ag_err err;
    cr_assert_eq(ag_bus_worker_open(bus, &cfg, &w, &err), 0, "%s", err.msg);
    size_t handled = 0;
    for (int i = 0; i < 5 && handled < 40; i++)
        cr_assert_eq(ag_bus_worker_poll(w, 100, 0, &handled, &err), 0, "%s", err.msg);
    cr_assert_eq(handled, 40, "every message acknowledged (the unwanted too): %zu, %d calls",
                 handled, lane_calls);
    cr_assert_eq(lane_calls, 36, "the 4 unwanted ones never reached the handler");
    cr_assert_gt(lane_max, 1, "aggregates were handled at once");
    for (int a = 0; a < 4; a++) /* each aggregate's messages in publish order */
        for (int k = 1; k < lane_n[a]; k++) cr_assert_lt(lane_seen[a][k - 1], lane_seen[a][k]);
    ag_bus_worker_close(w);
}
