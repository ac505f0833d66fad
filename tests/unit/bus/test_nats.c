/* The NATS JetStream adapter against a real `nats-server -js` that each test
 * starts (loopback, a free port, a temporary store directory) and kills: dedup by
 * Nats-Msg-Id, CloudEvents through a durable pull consumer, nak → redelivery,
 * max-deliver and terminate → dead-letter records with their error, a broker that
 * is down → AG_EUNAVAILABLE at once and an unhealthy bus; a bus worker's poison
 * message parked with its error, its aggregate's next message waiting behind it,
 * another aggregate flowing, and a replay after the fault is fixed. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agora/bus.h"
#include "agora/bus_worker.h"
#include "agora/store_log.h"

static char dir[64], url[64];
static pid_t server;
static struct ag_bus *bus;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static void start_server(int port)
{
    char p[16], sd[96];
    snprintf(p, sizeof p, "%d", port);
    snprintf(sd, sizeof sd, "%s/js", dir);
    server = fork();
    cr_assert_neq(server, -1);
    if (server == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        freopen("/dev/null", "w", stderr);
        execlp("nats-server", "nats-server", "-js", "-a", "127.0.0.1", "-p", p, "-sd", sd, NULL);
        _exit(127);
    }
}

static void wait_connected(void)
{
    for (int i = 0; i < 100; i++) {
        struct ag_bus_health h;
        ag_bus_health(bus, &h);
        if (h.connected) return;
        sleep_ms(50);
    }
    cr_assert_fail("the bus never connected to %s", url);
}

static void setup(void)
{
    strcpy(dir, "/tmp/agora-nats-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", free_port());
    start_server(atoi(strrchr(url, ':') + 1));
    struct ag_err err;
    cr_assert_eq(ag_bus_open(url, NULL, &bus, &err), 0, "%s", err.msg);
    wait_connected();
}

static void teardown(void)
{
    ag_bus_close(bus);
    if (server > 0) {
        kill(server, SIGKILL);
        waitpid(server, NULL, 0);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(nats, .init = setup, .fini = teardown, .timeout = 60);

static void publish(const char *id, const char *topic)
{
    struct ag_bus_msg m = {.topic = topic,
                           .id = id,
                           .source = "/agora/ordering",
                           .type = topic,
                           .subject = "order-1",
                           .data = "{\"orderId\":\"o1\"}",
                           .data_len = 16};
    struct ag_err err;
    cr_assert_eq(ag_bus_publish(bus, &m, 1, 5000, &err), 0, "%s", err.msg);
}

static struct ag_bus_consumer *consumer(const char *name, uint32_t max_deliver)
{
    struct ag_bus_consumer_config cfg = {
        .name = name, .filter = "agora.ordering.>", .max_deliver = max_deliver};
    struct ag_bus_consumer *c;
    struct ag_err err;
    cr_assert_eq(ag_bus_consumer_open(bus, &cfg, &c, &err), 0, "%s", err.msg);
    return c;
}

static struct ag_bus_delivery *one(struct ag_bus_consumer *c, int timeout_ms)
{
    struct ag_bus_delivery **ds;
    size_t n;
    struct ag_err err;
    cr_assert_eq(ag_bus_fetch(c, 1, timeout_ms, &ds, &n, &err), 0, "%s", err.msg);
    if (!n) return NULL;
    struct ag_bus_delivery *d = ds[0];
    ag_free(ds);
    return d;
}

Test(nats, dedup_and_cloudevents)
{
    publish("0190f0f0-0000-7000-8000-000000000001", "agora.ordering.OrderPlaced");
    publish("0190f0f0-0000-7000-8000-000000000001", "agora.ordering.OrderPlaced");
    publish("0190f0f0-0000-7000-8000-000000000002", "agora.ordering.OrderConfirmed");
    struct ag_bus_health h;
    ag_bus_health(bus, &h);
    cr_assert_eq(h.published, 3);
    cr_assert_eq(h.duplicates, 1, "the broker dropped the republished id");
    struct ag_bus_consumer *c = consumer("dedup", 3);
    struct ag_bus_delivery *d = one(c, 2000);
    cr_assert_str_eq(d->msg.id, "0190f0f0-0000-7000-8000-000000000001");
    cr_assert_str_eq(d->msg.topic, "agora.ordering.OrderPlaced");
    cr_assert_str_eq(d->msg.subject, "order-1");
    cr_assert_eq(d->seq, 1);
    cr_assert_eq(ag_bus_ack(c, d, NULL), 0);
    ag_bus_delivery_free(c, d);
    d = one(c, 2000);
    cr_assert_str_eq(d->msg.id, "0190f0f0-0000-7000-8000-000000000002");
    cr_assert_eq(d->seq, 2, "no second copy of the first");
    cr_assert_eq(ag_bus_ack(c, d, NULL), 0);
    ag_bus_delivery_free(c, d);
    cr_assert_null(one(c, 300));
    ag_bus_consumer_close(c);
}

/* A fetch takes what the consumer has in one call (the follow-up pull sized by the
 * first message's NumPending), and a caught-up consumer gets a lone message alone. */
static size_t fetch_acked(struct ag_bus_consumer *c, size_t max, int timeout_ms, uint64_t *first)
{
    struct ag_bus_delivery **ds;
    size_t n;
    struct ag_err err;
    cr_assert_eq(ag_bus_fetch(c, max, timeout_ms, &ds, &n, &err), 0, "%s", err.msg);
    for (size_t i = 0; i < n; i++) {
        if (i == 0 && first) *first = ds[i]->seq;
        cr_assert_eq(ag_bus_ack(c, ds[i], NULL), 0);
        ag_bus_delivery_free(c, ds[i]);
    }
    ag_free(ds);
    return n;
}

Test(nats, fetch_takes_the_backlog_in_one_call_and_a_lone_message_alone)
{
    char id[40];
    for (int i = 1; i <= 5; i++) {
        snprintf(id, sizeof id, "0190f0f0-0000-7000-8000-%012d", i);
        publish(id, "agora.ordering.OrderPlaced");
    }
    struct ag_bus_consumer *c = consumer("batch", 3);
    uint64_t first = 0;
    cr_assert_eq(fetch_acked(c, 64, 2000, &first), 5, "the backlog in one fetch");
    cr_assert_eq(first, 1);
    cr_assert_eq(fetch_acked(c, 64, 200, NULL), 0);
    publish("0190f0f0-0000-7000-8000-000000000006", "agora.ordering.OrderPlaced");
    cr_assert_eq(fetch_acked(c, 64, 2000, &first), 1);
    cr_assert_eq(first, 6);
    ag_bus_consumer_close(c);
}

static json_t *dead_letters(size_t want)
{
    for (int i = 0; i < 50; i++) {
        struct ag_buf b;
        ag_buf_init(&b);
        uint64_t next;
        cr_assert_eq(ag_bus_dlq_read(bus, 1, 10, &b, &next, NULL), 0);
        json_t *a = json_loadb(b.data, b.len, 0, NULL);
        ag_buf_free(&b);
        if (json_array_size(a) >= want) return a;
        json_decref(a);
        sleep_ms(50);
    }
    cr_assert_fail("fewer than %zu dead letters", want);
    return NULL;
}

static json_t *by_reason(json_t *a, const char *reason)
{
    for (size_t i = 0; i < json_array_size(a); i++)
        if (strcmp(json_string_value(json_object_get(json_array_get(a, i), "reason")), reason) == 0)
            return json_array_get(a, i);
    cr_assert_fail("no dead letter with reason %s", reason);
    return NULL;
}

Test(nats, nak_redelivers_then_dead_letters)
{
    publish("0190f0f0-0000-7000-8000-000000000001", "agora.ordering.OrderPlaced");
    publish("0190f0f0-0000-7000-8000-000000000002", "agora.ordering.OrderConfirmed");
    struct ag_bus_consumer *c = consumer("poison", 2);
    struct ag_bus_delivery *d = one(c, 2000);
    cr_assert_eq(d->seq, 1);
    cr_assert_eq(d->deliveries, 1);
    cr_assert_not(d->last);
    cr_assert_eq(ag_bus_nak(c, d, 0, "boom 1", NULL), 0);
    ag_bus_delivery_free(c, d);
    /* the redelivery of 1 and the first delivery of 2, in either order */
    bool parked = false, termed = false;
    for (int i = 0; i < 10 && !(parked && termed); i++) {
        if (!(d = one(c, 1000))) continue;
        if (d->seq == 1) {
            cr_assert_eq(d->deliveries, 2);
            cr_assert(d->last);
            cr_assert_eq(ag_bus_nak(c, d, 0, "boom 2", NULL), 0); /* the last: parked */
            parked = true;
        } else {
            cr_assert_eq(d->seq, 2);
            cr_assert_eq(ag_bus_term(c, d, "cannot parse", NULL), 0);
            termed = true;
        }
        ag_bus_delivery_free(c, d);
    }
    cr_assert(parked && termed);
    cr_assert_null(one(c, 500), "neither comes back");
    json_t *a = dead_letters(2);
    json_t *x = by_reason(a, "max_deliver"), *y = by_reason(a, "terminated");
    cr_assert_str_eq(json_string_value(json_object_get(x, "error")), "boom 2");
    cr_assert_eq(json_integer_value(json_object_get(x, "deliveries")), 2);
    cr_assert_str_eq(json_string_value(json_object_get(x, "aggregate")), "order-1");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(x, "event"), "id")),
                     "0190f0f0-0000-7000-8000-000000000001");
    cr_assert_str_eq(json_string_value(json_object_get(y, "error")), "cannot parse");
    json_decref(a);
    ag_bus_consumer_close(c);
}

Test(nats, broker_down_fails_fast_and_recovers)
{
    kill(server, SIGKILL);
    waitpid(server, NULL, 0);
    server = 0;
    sleep_ms(200);
    struct ag_bus_health h;
    ag_bus_health(bus, &h);
    cr_assert_not(h.connected);
    cr_assert_neq(h.message[0], 0);
    struct ag_bus_msg m = {.topic = "agora.ordering.OrderPlaced",
                           .id = "0190f0f0-0000-7000-8000-000000000001",
                           .source = "/agora/ordering",
                           .type = "agora.ordering.OrderPlaced"};
    struct ag_err err;
    cr_assert_eq(ag_bus_publish(bus, &m, 1, 5000, &err), AG_EUNAVAILABLE);
    cr_assert_eq(ag_bus_pipe_send(bus, &m, 1, 1, 5000, &err), AG_EUNAVAILABLE);
    ag_bus_pipe_reset(bus); /* nothing was ever sent (libnats 3.4 has no pending list yet) */
    start_server(atoi(strrchr(url, ':') + 1)); /* same port, same store */
    wait_connected();
    publish("0190f0f0-0000-7000-8000-000000000001", "agora.ordering.OrderPlaced");
    ag_bus_health(bus, &h);
    cr_assert_geq(h.reconnects, 1);
}

Test(nats, unanswered_last_delivery_is_captured_from_the_advisory)
{
    publish("0190f0f0-0000-7000-8000-000000000001", "agora.ordering.OrderPlaced");
    struct ag_bus_consumer_config cfg = {
        .name = "crashy", .filter = "agora.ordering.>", .max_deliver = 1, .ack_wait_ms = 500};
    struct ag_bus_consumer *c;
    struct ag_err err;
    cr_assert_eq(ag_bus_consumer_open(bus, &cfg, &c, &err), 0, "%s", err.msg);
    struct ag_bus_delivery *d = one(c, 2000);
    cr_assert(d->last);
    ag_bus_delivery_free(c, d); /* the consumer "crashed": no answer */
    cr_assert_null(one(c, 1500), "max_deliver 1: never again");
    json_t *a = dead_letters(1);
    json_t *x = json_array_get(a, 0);
    cr_assert_str_eq(json_string_value(json_object_get(x, "reason")), "max_deliver");
    cr_assert_str_eq(json_string_value(json_object_get(x, "error")), "ack wait expired");
    json_t *adv = json_object_get(x, "advisory");
    cr_assert_str_eq(json_string_value(json_object_get(adv, "consumer")), "crashy");
    cr_assert_eq(json_integer_value(json_object_get(adv, "stream_seq")), 1);
    json_decref(a);
    ag_bus_consumer_close(c);
}

/* ---- a bus worker on JetStream ---- */

struct nfx {
    bool fixed;
    char order[16][32];
    size_t n;
};

static int nhandler(void *ud, const struct ag_bus_delivery *d, struct ag_err *err)
{
    struct nfx *fx = ud;
    if (!fx->fixed && strcmp(d->msg.id, "p1") == 0)
        return ag_err_set(err, AG_EUNAVAILABLE, "downstream refuses %s", d->msg.id);
    if (fx->n < 16) snprintf(fx->order[fx->n++], 32, "%s", d->msg.id);
    return 0;
}

static void publish_to(const char *id, const char *aggregate)
{
    struct ag_bus_msg m = {.topic = "agora.ordering.OrderPlaced",
                           .id = id,
                           .source = "/agora/ordering",
                           .type = "agora.ordering.OrderPlaced",
                           .subject = aggregate,
                           .data = "{}",
                           .data_len = 2};
    struct ag_err err;
    cr_assert_eq(ag_bus_publish(bus, &m, 1, 5000, &err), 0, "%s", err.msg);
}

static size_t parked_count(struct ag_bus_worker *w, json_t **out)
{
    struct ag_buf b;
    ag_buf_init(&b);
    cr_assert_eq(ag_bus_worker_list(w, &b, NULL), 0);
    json_t *a = json_loadb(b.data, b.len, 0, NULL);
    ag_buf_free(&b);
    size_t n = json_array_size(a);
    if (out)
        *out = a;
    else
        json_decref(a);
    return n;
}

Test(nats, poison_is_parked_its_aggregate_waits_and_replays_after_the_fix)
{
    char sdir[96];
    snprintf(sdir, sizeof sdir, "%s/store", dir);
    struct ag_store_options so = {.no_sync = true};
    struct ag_store *store;
    cr_assert_eq(ag_store_log_open(sdir, &so, &store, NULL), 0);
    struct nfx fx = {0};
    struct ag_bus_worker_config cfg = {.consumer = {.name = "wk",
                                                    .filter = "agora.ordering.>",
                                                    .max_deliver = 2,
                                                    .ack_wait_ms = 5000,
                                                    .backoff_ms = {50},
                                                    .nbackoff = 1},
                                       .store = store,
                                       .handler = nhandler,
                                       .ud = &fx};
    struct ag_bus_worker *w;
    struct ag_err err;
    cr_assert_eq(ag_bus_worker_open(bus, &cfg, &w, &err), 0, "%s", err.msg);
    publish_to("p1", "order-A");
    publish_to("p2", "order-A");
    publish_to("q1", "order-B");
    for (int i = 0; i < 100 && (parked_count(w, NULL) < 2 || fx.n < 1); i++)
        cr_assert_eq(ag_bus_worker_poll(w, 10, 200, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(fx.n, 1, "only the other aggregate went through");
    cr_assert_str_eq(fx.order[0], "q1");
    json_t *a;
    cr_assert_eq(parked_count(w, &a), 2);
    json_t *head = NULL, *waiting = NULL, *e;
    size_t k;
    json_array_foreach(a, k, e)
    {
        if (json_is_true(json_object_get(e, "waiting")))
            waiting = e;
        else
            head = e;
    }
    cr_assert(head && waiting);
    cr_assert_str_eq(json_string_value(json_object_get(head, "msgId")), "p1");
    cr_assert_str_eq(json_string_value(json_object_get(head, "error")), "downstream refuses p1");
    cr_assert_str_eq(json_string_value(json_object_get(waiting, "msgId")), "p2");
    uint64_t hid = (uint64_t)json_integer_value(json_object_get(head, "id"));
    json_decref(a);
    /* nothing is redelivered meanwhile: both were acked on the broker */
    cr_assert_eq(ag_bus_worker_poll(w, 10, 300, NULL, &err), 0);
    cr_assert_eq(fx.n, 1);

    size_t released = 0;
    cr_assert_eq(ag_bus_worker_replay(w, hid, &released, &err), AG_EUNAVAILABLE);
    fx.fixed = true;
    cr_assert_eq(ag_bus_worker_replay(w, hid, &released, &err), 0, "%s", err.msg);
    cr_assert_eq(released, 1);
    cr_assert_eq(fx.n, 3);
    cr_assert_str_eq(fx.order[1], "p1");
    cr_assert_str_eq(fx.order[2], "p2");
    cr_assert_eq(parked_count(w, NULL), 0);
    ag_bus_worker_close(w);
    ag_store_close(store);
}

/* The pipe: batches go out without waiting; the acknowledged prefix's mark and
 * count come back (an empty batch's mark once everything before it is acked); a
 * resend of the same ids is acknowledged as duplicates; with the broker gone the
 * pipe reports the failure or the lost acks, and a reset empties it. */
Test(nats, pipe_reports_the_acknowledged_prefix_and_fails_without_the_broker)
{
    static struct ag_bus_msg m[1500];
    static char ids[1500][40];
    for (int i = 0; i < 1500; i++) {
        snprintf(ids[i], sizeof ids[i], "0190f0f0-0000-7000-8000-%012d", i);
        m[i] = (struct ag_bus_msg){.topic = "agora.ordering.OrderPlaced",
                                   .id = ids[i],
                                   .source = "/agora/ordering",
                                   .type = "agora.ordering.OrderPlaced",
                                   .subject = "order-1",
                                   .data = "{\"orderId\":\"o1\"}",
                                   .data_len = 16};
    }
    struct ag_err err;
    cr_assert_eq(ag_bus_pipe_send(bus, m, 1000, 10, 5000, &err), 0, "%s", err.msg);
    cr_assert_eq(ag_bus_pipe_send(bus, m, 0, 11, 5000, &err), 0, "%s", err.msg);
    cr_assert_eq(ag_bus_pipe_send(bus, m + 1000, 500, 20, 5000, &err), 0, "%s", err.msg);
    struct ag_bus_pipe_stat ps;
    cr_assert_eq(ag_bus_pipe_acked(bus, 10000, 10000, &ps, &err), 0, "%s", err.msg);
    cr_assert(ps.marked);
    cr_assert_eq(ps.mark, 20);
    cr_assert_eq(ps.acked, 1500);
    cr_assert_eq(ps.inflight, 0);
    cr_assert_eq(ag_bus_pipe_send(bus, m, 100, 30, 5000, &err), 0, "%s", err.msg); /* again */
    cr_assert_eq(ag_bus_pipe_acked(bus, 10000, 10000, &ps, &err), 0, "%s", err.msg);
    cr_assert_eq(ps.mark, 30);
    struct ag_bus_health h;
    ag_bus_health(bus, &h);
    cr_assert_eq(h.published, 1600);
    cr_assert_eq(h.duplicates, 100, "the broker dropped the resend");
    kill(server, SIGKILL);
    waitpid(server, NULL, 0);
    server = 0;
    int rc = 0;
    for (int i = 0; i < 40 && !rc; i++) { /* sent into a dead connection, or refused */
        rc = ag_bus_pipe_send(bus, m + 1000, 10, 40, 1000, &err);
        if (!rc) rc = ag_bus_pipe_acked(bus, 100, 500, &ps, &err);
    }
    cr_assert(rc == AG_EUNAVAILABLE || rc == AG_ETIMEDOUT, "%d %s", rc, err.msg);
    cr_assert_eq(ps.mark, 30, "never past what was acknowledged");
    ag_bus_pipe_reset(bus);
    cr_assert_eq(ag_bus_pipe_acked(bus, 0, 0, &ps, &err), 0);
    cr_assert_eq(ps.inflight, 0);
    cr_assert_not(ps.marked);
}

/* A pipe message the broker refuses (no stream takes its subject: the broker
 * answers its reply subject with a "no responders" status, not a PubAck) fails
 * the pipe at once, its mark is never reported, the messages sent with it stay
 * unacknowledged; after a reset the pipe publishes again and is acknowledged. */
Test(nats, pipe_detects_a_refused_message_and_resumes_after_reset)
{
    struct ag_bus_msg m[3];
    const char *topics[] = {"agora.ordering.OrderPlaced", "nostream.ordering.OrderPlaced",
                            "agora.ordering.OrderPlaced"};
    const char *ids[] = {"0190f0f0-0000-7000-8000-00000000a001",
                         "0190f0f0-0000-7000-8000-00000000a002",
                         "0190f0f0-0000-7000-8000-00000000a003"};
    for (int i = 0; i < 3; i++)
        m[i] = (struct ag_bus_msg){.topic = topics[i],
                                   .id = ids[i],
                                   .source = "/agora/ordering",
                                   .type = "agora.ordering.OrderPlaced",
                                   .subject = "order-1",
                                   .data = "{\"orderId\":\"o1\"}",
                                   .data_len = 16};
    struct ag_err err;
    struct ag_bus_pipe_stat ps;
    cr_assert_eq(ag_bus_pipe_send(bus, m, 1, 5, 5000, &err), 0, "%s", err.msg);
    cr_assert_eq(ag_bus_pipe_send(bus, m + 1, 2, 6, 5000, &err), 0, "%s", err.msg);
    int rc = ag_bus_pipe_acked(bus, 5000, 0, &ps, &err);
    cr_assert_eq(rc, AG_EUNAVAILABLE, "the refused message is detected: %d %s", rc, err.msg);
    cr_assert_eq(ps.mark, 5, "never past the refused message");
    ag_bus_pipe_reset(bus);
    cr_assert_eq(ag_bus_pipe_send(bus, m + 2, 1, 7, 5000, &err), 0, "%s", err.msg);
    cr_assert_eq(ag_bus_pipe_acked(bus, 5000, 5000, &ps, &err), 0, "%s", err.msg);
    cr_assert_eq(ps.mark, 7);
    cr_assert_eq(ps.inflight, 0);
}
