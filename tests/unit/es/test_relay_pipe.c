/* The pipelined relay on a sharded store: a fake pipelined bus (wrapping the
 * local one, which plays the broker and its dedup) keeps pages in flight and acks
 * them a page at a time, so the relay's ring of (mark → cursor) is exercised.
 * Across a pipe reset (the broker lost after some acks, half of what was in
 * flight having reached it) every event of both shards is relayed exactly once,
 * in stream order, and the stored checkpoint is a cursor; a lost lease takes back
 * what is in flight, and the next holder publishes it from the checkpoint. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agora/es.h"
#include "relay_fixture.h"

/* the events (two shards), and the local "broker" over a store of its own */
static struct relay_fx fx;

/* ---- the fake pipe ---- */

struct fmsg {
    struct ag_bus_msg m;
    char *strs[7];
    uint64_t mark; /* 0: not the last message of its pipe_send */
};

static struct {
    pthread_mutex_t lock;
    struct fmsg *q; /* in flight, oldest first */
    size_t n, cap;
    uint64_t acked, mark, total_acked;
    bool marked, failed, hold;
    long fail_after; /* lose the broker once this many messages were acked (< 0: never) */
    int resets;
} fp = {.lock = PTHREAD_MUTEX_INITIALIZER};

static char *dup0(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void fmsg_free(struct fmsg *f)
{
    for (int i = 0; i < 7; i++) free(f->strs[i]);
}

/* The broker got q[0] (acked or not): into the local bus, which drops twins. */
static void deliver_first(bool ack)
{
    struct fmsg *f = &fp.q[0];
    cr_assert_eq(ag_bus_publish(fx.bus, &f->m, 1, 5000, NULL), 0);
    if (ack) {
        fp.acked++;
        fp.total_acked++;
        if (f->mark) fp.mark = f->mark, fp.marked = true;
    }
    fmsg_free(f);
    memmove(fp.q, fp.q + 1, --fp.n * sizeof *fp.q);
}

static int fake_send(struct ag_bus *b, const struct ag_bus_msg *msgs, size_t n, uint64_t mark,
                     int timeout_ms, struct ag_err *err)
{
    AG_UNUSED(b);
    AG_UNUSED(timeout_ms);
    pthread_mutex_lock(&fp.lock);
    int rc = 0;
    if (fp.failed) {
        rc = ag_err_set(err, AG_EUNAVAILABLE, "broker lost (test)");
    } else if (!n && !fp.n) {
        fp.mark = mark, fp.marked = true;
    } else if (!n) {
        fp.q[fp.n - 1].mark = mark;
    } else {
        if (fp.n + n > fp.cap) {
            fp.cap = (fp.n + n) * 2;
            fp.q = realloc(fp.q, fp.cap * sizeof *fp.q);
        }
        for (size_t i = 0; i < n; i++) {
            struct fmsg *f = &fp.q[fp.n++];
            memset(f, 0, sizeof *f);
            f->m = msgs[i];
            const char *src[7] = {msgs[i].topic, msgs[i].id,      msgs[i].source,
                                  msgs[i].type,  msgs[i].subject, msgs[i].traceparent,
                                  msgs[i].data};
            for (int k = 0; k < 7; k++) f->strs[k] = dup0(src[k]);
            f->m.topic = f->strs[0], f->m.id = f->strs[1], f->m.source = f->strs[2];
            f->m.type = f->strs[3], f->m.subject = f->strs[4], f->m.traceparent = f->strs[5];
            f->m.data = f->strs[6];
        }
        fp.q[fp.n - 1].mark = mark;
    }
    pthread_mutex_unlock(&fp.lock);
    return rc;
}

/* Acks the oldest page in flight (wait_ms 0) or everything (wait_ms > 0); when
 * fail_after is reached, half of what is left reaches the broker unacked and the
 * pipe fails until reset. */
static int fake_acked(struct ag_bus *b, int wait_ms, int lost_ms, struct ag_bus_pipe_stat *out,
                      struct ag_err *err)
{
    AG_UNUSED(b);
    AG_UNUSED(lost_ms);
    pthread_mutex_lock(&fp.lock);
    bool hold = fp.hold;
    while (!hold && !fp.failed && fp.n) {
        bool last = fp.q[0].mark != 0;
        deliver_first(true);
        if (fp.fail_after >= 0 && fp.total_acked >= (uint64_t)fp.fail_after) {
            fp.fail_after = -1;
            fp.failed = true;
            for (size_t half = fp.n / 2; half; half--) deliver_first(false);
        }
        if (last && !wait_ms) break;
    }
    *out = (struct ag_bus_pipe_stat){
        .mark = fp.mark, .marked = fp.marked, .acked = fp.acked, .inflight = fp.n};
    int rc = fp.failed ? ag_err_set(err, AG_EUNAVAILABLE, "broker lost (test)") : 0;
    pthread_mutex_unlock(&fp.lock);
    if (hold && wait_ms) usleep(10000); /* as a real pipe waiting for acks */
    return rc;
}

static void fake_reset(struct ag_bus *b)
{
    AG_UNUSED(b);
    pthread_mutex_lock(&fp.lock);
    for (size_t i = 0; i < fp.n; i++) fmsg_free(&fp.q[i]);
    fp.n = 0;
    fp.acked = fp.mark = 0;
    fp.marked = fp.failed = false;
    fp.resets++;
    pthread_mutex_unlock(&fp.lock);
}

static struct ag_bus_ops fake_ops;
static struct ag_bus fake;

static void psetup(void)
{
    relay_fx_open(&fx, "relaypipe", 2, true);
    cr_assert_eq(ag_store_shards(fx.store), 2);
    fake_ops = *fx.bus->ops;
    fake_ops.pipe_send = fake_send;
    fake_ops.pipe_acked = fake_acked;
    fake_ops.pipe_reset = fake_reset;
    fake = (struct ag_bus){.ops = &fake_ops};
    fake_reset(&fake);
    fp.resets = 0;
    fp.total_acked = 0;
    fp.fail_after = -1;
    fp.hold = false;
}

static void pteardown(void)
{
    fake_reset(&fake);
    free(fp.q);
    fp.q = NULL;
    fp.cap = 0;
    relay_fx_close(&fx);
}

TestSuite(relay_pipe, .init = psetup, .fini = pteardown, .timeout = 60);

/* Each of base..base+count-1 exactly once, and 2k before 2k+1 (one stream's two
 * events; the shards' events interleave). */
static void assert_once_in_order(const int *ns, size_t got, int base, int count)
{
    cr_assert_eq(got, (size_t)count, "each once: got %zu of %d", got, count);
    int at[256];
    for (int i = 0; i < count; i++) at[i] = -1;
    for (size_t i = 0; i < got; i++) {
        int k = ns[i] - base;
        cr_assert(k >= 0 && k < count && at[k] < 0, "twice or unknown: %d", ns[i]);
        at[k] = (int)i;
    }
    for (int k = 0; k + 1 < count; k += 2) cr_assert_lt(at[k], at[k + 1], "stream order of %d", k);
}

/* The stored checkpoint (the relay's last RelayCheckpoint), NULL if none. */
static json_t *stored_checkpoint(void)
{
    struct ag_event_page pg;
    cr_assert_eq(
        ag_store_read_stream(fx.store, "_relay-outbox", 13, -1, AG_READ_BACKWARD, 1, &pg, NULL), 0);
    json_t *d = pg.count ? json_loadb(pg.events[0].data, pg.events[0].data_len, 0, NULL) : NULL;
    ag_event_page_free(&pg);
    return d;
}

Test(relay_pipe, two_shards_relayed_exactly_once_across_a_pipe_reset)
{
    char stream[32];
    for (int i = 0; i < 40; i++) {
        snprintf(stream, sizeof stream, "parcel-%d", i);
        relay_fx_append(&fx, stream, "Shipped", 2 * i);
        relay_fx_append(&fx, stream, "Weighed", 1000 + i); /* private */
        relay_fx_append(&fx, stream, "Shipped", 2 * i + 1);
    }
    size_t all = 0, on1 = 0; /* both shards hold some */
    for (uint64_t from = 0;;) {
        struct ag_event_page pg;
        cr_assert_eq(ag_store_read_all(fx.store, from, AG_READ_FORWARD, 1000, &pg, NULL), 0);
        size_t n = pg.count;
        for (size_t i = 0; i < n; i++) {
            const struct ag_event *ev = &pg.events[i];
            if (ev->stream[0] == '_') continue; /* the router's own */
            all++;
            on1 += ag_store_pos_shard(ev->position) == 1;
        }
        if (n) from = pg.events[n - 1].position + 1;
        ag_event_page_free(&pg);
        if (!n) break;
    }
    cr_assert_eq(all, 120);
    cr_assert(on1 > 0 && on1 < all, "%zu of 120 on shard 1", on1);
    fp.fail_after = 37; /* mid-page, with pages in flight behind it */
    struct ag_relay_config cfg = {.store = fx.store, .bus = &fake, .map = relay_fx_map, .batch = 5};
    struct ag_relay *r;
    cr_assert_eq(ag_relay_start(&cfg, &r, NULL), 0);
    cr_assert_eq(ag_relay_wait(r, relay_fx_head(&fx), 20000), 0);
    struct ag_relay_stats st;
    ag_relay_stats(r, &st);
    cr_assert_geq(st.failures, 1);
    cr_assert_not(st.failing);
    cr_assert_geq(fp.resets, 1);
    ag_relay_stop(r); /* records the checkpoint */
    int ns[256];
    assert_once_in_order(ns, relay_fx_drain(&fx, "c1", ns, 256), 0, 80);
    struct ag_bus_health h;
    ag_bus_health(fx.bus, &h);
    cr_assert_gt(h.duplicates, 0, "the republished half was dropped by dedup");
    json_t *cp = stored_checkpoint();
    cr_assert_not_null(cp);
    const char *cur = json_string_value(json_object_get(cp, "cursor"));
    cr_assert_not_null(cur, "a sharded store's checkpoint is a cursor");
    struct ag_store_cursor c;
    cr_assert_eq(ag_store_cursor_parse(cur, &c), 0);
    cr_assert_eq(c.n, 2);
    cr_assert(c.next[0] > 0 && c.next[1] > 0);
    json_decref(cp);
    /* restarted: resumes from the cursor, publishes only what is new */
    relay_fx_append(&fx, "parcel-new", "Shipped", 80);
    cr_assert_eq(ag_relay_start(&cfg, &r, NULL), 0);
    cr_assert_eq(ag_relay_wait(r, relay_fx_head(&fx), 20000), 0);
    ag_relay_stats(r, &st);
    cr_assert_eq(st.published, 1, "only the new event");
    ag_relay_stop(r);
    cr_assert_eq(relay_fx_drain(&fx, "c1", ns, 256), 1);
    cr_assert_eq(ns[0], 80);
}

/* ---- the lease ---- */

static const char *_Atomic holder; /* who holds the lease (NULL: nobody) */

static int lease(void *ud, bool *held, bool *taken)
{
    *held = holder == ud;
    *taken = false;
    return 0;
}

static size_t inflight(void)
{
    pthread_mutex_lock(&fp.lock);
    size_t n = fp.n;
    pthread_mutex_unlock(&fp.lock);
    return n;
}

/* Poll `cond` every 10 ms for up to 10 s. */
#define EVENTUALLY(cond)                                                                           \
    do {                                                                                           \
        int tries_ = 1000;                                                                         \
        while (!(cond) && --tries_) usleep(10000);                                                 \
        cr_assert(cond, "never: %s", #cond);                                                       \
    } while (0)

static bool standing_by(struct ag_relay *r)
{
    struct ag_relay_stats st;
    ag_relay_stats(r, &st);
    return st.standby;
}

Test(relay_pipe, a_lost_lease_takes_back_what_is_in_flight)
{
    static const char a[] = "A", b[] = "B";
    char stream[32];
    for (int i = 0; i < 5; i++) {
        snprintf(stream, sizeof stream, "parcel-%d", i);
        relay_fx_append(&fx, stream, "Shipped", 2 * i);
        relay_fx_append(&fx, stream, "Shipped", 2 * i + 1);
    }
    holder = a;
    struct ag_relay_config cfg = {.store = fx.store,
                                  .bus = &fake,
                                  .map = relay_fx_map,
                                  .batch = 4,
                                  .lease = lease,
                                  .lease_ud = (void *)a};
    struct ag_relay *ra;
    cr_assert_eq(ag_relay_start(&cfg, &ra, NULL), 0);
    cr_assert_eq(ag_relay_wait(ra, relay_fx_head(&fx), 20000), 0);
    /* the broker stops acking; ten more go in flight */
    pthread_mutex_lock(&fp.lock);
    fp.hold = true;
    pthread_mutex_unlock(&fp.lock);
    for (int i = 5; i < 10; i++) {
        snprintf(stream, sizeof stream, "parcel-%d", i);
        relay_fx_append(&fx, stream, "Shipped", 2 * i);
        relay_fx_append(&fx, stream, "Shipped", 2 * i + 1);
    }
    EVENTUALLY(inflight() == 10);
    holder = NULL;
    EVENTUALLY(standing_by(ra));
    cr_assert_eq(inflight(), 0, "the pipe was reset: nothing of it is sent later");
    struct ag_relay_stats st;
    ag_relay_stats(ra, &st);
    cr_assert_eq(st.lag_events, 0, "standby: no lag reported");
    pthread_mutex_lock(&fp.lock);
    fp.hold = false;
    pthread_mutex_unlock(&fp.lock);
    ag_relay_stop(ra);
    int ns[256];
    assert_once_in_order(ns, relay_fx_drain(&fx, "c2", ns, 256), 0, 10); /* only what was acked */
    /* the next holder starts from the stored checkpoint and publishes the rest */
    holder = b;
    cfg.lease_ud = (void *)b;
    struct ag_relay *rb;
    cr_assert_eq(ag_relay_start(&cfg, &rb, NULL), 0);
    cr_assert_eq(ag_relay_wait(rb, relay_fx_head(&fx), 20000), 0);
    ag_relay_stats(rb, &st);
    cr_assert_not(st.standby);
    ag_relay_stop(rb);
    assert_once_in_order(ns, relay_fx_drain(&fx, "c2", ns, 256), 10,
                         10); /* the ten taken back, once */
}

/* The CloudEvent's traceparent is the event's metadata's (top-level member, read
 * without a parser when plain, with one when escaped), the next event's when the
 * metadata is the marker for it, and none when absent, nested or not a string;
 * one too long for the message is cut to 63 bytes. */
Test(relay_pipe, the_traceparent_comes_from_the_metadata)
{
    static const char *const metas[] = {
        "{\"requestId\":\"r-1\",\"traceparent\":\"00-aaaa-01\"}",
        "{ \"traceparent\" : \"00-\\u0062\\u0062-01\", \"actor\":\"x\\\"y\" }",
        AG_ES_META_NEXT,
        "{\"traceparent\":\"00-cccc-01\"}", /* event 3 (private): event 2's */
        NULL,
        "{\"x\":{\"traceparent\":\"nested\"},\"y\":[\"traceparent\"]}",
        "{\"traceparent\":5}",
        "{\"traceparent\":\"00-0123456789abcdef0123456789abcdef-0123456789abcdef-01-and-more-"
        "than-63-bytes\"}", /* the parser's, cut as before */
    };
    static const char *const want[] = {
        "00-aaaa-01", "00-bb-01",
        "00-cccc-01", NULL,
        "",           "",
        "",           "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01-and-mor"};
    struct ag_event_data evs[8];
    char data[8][24];
    for (int i = 0; i < 8; i++) {
        snprintf(data[i], sizeof data[i], "{\"n\":%d}", i);
        const char *type = i == 3 ? "Weighed" : "Shipped";
        evs[i] = (struct ag_event_data){.type = type,
                                        .type_len = strlen(type),
                                        .data = data[i],
                                        .data_len = strlen(data[i]),
                                        .metadata = metas[i],
                                        .metadata_len = metas[i] ? strlen(metas[i]) : 0};
    }
    cr_assert_eq(ag_store_append(fx.store, "parcel-t", 8, AG_STORE_ANY, evs, 8, NULL, NULL), 0);
    struct ag_relay_config cfg = {.store = fx.store, .bus = &fake, .map = relay_fx_map};
    struct ag_relay *r;
    cr_assert_eq(ag_relay_start(&cfg, &r, NULL), 0);
    cr_assert_eq(ag_relay_wait(r, relay_fx_head(&fx), 20000), 0);
    ag_relay_stop(r);
    struct ag_bus_consumer_config cc = {.name = "tp"};
    struct ag_bus_consumer *c;
    cr_assert_eq(ag_bus_consumer_open(fx.bus, &cc, &c, NULL), 0);
    struct ag_bus_delivery **ds;
    size_t n;
    cr_assert_eq(ag_bus_fetch(c, 64, 0, &ds, &n, NULL), 0);
    cr_assert_eq(n, 7, "the private event is not published");
    for (size_t i = 0; i < n; i++) {
        int k = atoi(strstr(ds[i]->msg.data, "\"n\":") + 4);
        const char *tp = ds[i]->msg.traceparent ? ds[i]->msg.traceparent : "";
        cr_expect_str_eq(tp, want[k], "event %d", k);
        ag_bus_ack(c, ds[i], NULL);
        ag_bus_delivery_free(c, ds[i]);
    }
    ag_free(ds);
    ag_bus_consumer_close(c);
}
