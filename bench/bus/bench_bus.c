/*
 * bench_bus: the outbox relay onto NATS JetStream, against a bare libnats
 * publisher in the same run (bench/bus/run.sh starts the broker).
 *
 *   bus.publish  impl=raw    js_PublishAsync of N CloudEvent-sized messages with
 *                            unique Nats-Msg-Ids, then wait for every ack: the
 *                            ceiling of a publisher on this broker;
 *                impl=agora  N integration events already in the log (OrderConfirmed,
 *                            fsync'd store), the relay started: time until it has
 *                            published and checkpointed them all (reading $all,
 *                            mapping, CloudEvents JSON, dedup ids, acks, checkpoints);
 *                            ratio = agora / raw.
 *   bus.e2e      impl=agora  store → consumer latency: events appended one at a time
 *                            at a steady rate while the relay runs live, received by a
 *                            durable pull consumer through the port; latency = receive
 *                            time − the event's commit time in the log (the CloudEvent
 *                            `time`, wall clock, same host), p50/p99.
 *
 * Usage: bench_bus NATS_URL [EVENTS] [E2E_EVENTS] [ROUNDS]  (defaults 20000, 2000, 3):
 * ROUNDS alternating raw/relay rounds (the order swapped each round), a ratio per
 * round and their median. BENCH_BUS_ONLY=relay|raw runs one side only (no ratio,
 * no e2e): for a profiler or callgrind (`--separate-threads=yes`) on that side.
 * One JSON object per line on stdout.
 */
#include <jansson.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agora/bus.h"
#include "agora/relay.h"
#include "agora/store_log.h"
#include "services/internal.h"

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* CPU time of this process (every thread: the publisher's and libnats's), ns. */
static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int raw_publish(const char *url, int n, int round)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    if (natsConnection_ConnectTo(&nc, url) != NATS_OK || natsConnection_JetStream(&js, nc, NULL))
        return fprintf(stderr, "bench_bus: cannot connect to %s\n", url), 1;
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subj[] = {"rawbench.>"};
    sc.Name = "RAWBENCH";
    sc.Subjects = subj;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    js_AddStream(NULL, js, &sc, NULL, NULL);
    char body[420];
    memset(body, 'x', sizeof body - 1);
    body[sizeof body - 1] = 0;
    uint64_t t0 = mono_ns(), c0 = cpu_ns();
    for (int i = 0; i < n; i++) {
        char id[40];
        snprintf(id, sizeof id, "raw-%d-%llu", i, (unsigned long long)t0);
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = id;
        if (js_PublishAsync(js, "rawbench.OrderConfirmed", body, (int)strlen(body), &po) != NATS_OK)
            return fprintf(stderr, "bench_bus: raw publish failed\n"), 1;
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 60000;
    js_PublishAsyncComplete(js, &po);
    double s = (double)(mono_ns() - t0) / 1e9, cpu = (double)(cpu_ns() - c0) / 1e3 / n;
    printf("{\"bench\":\"bus.publish\",\"impl\":\"raw\",\"params\":{\"events\":%d,\"round\":%d},"
           "\"ops_per_s\":%.0f,\"client_cpu_us_per_event\":%.2f}\n",
           n, round, n / s, cpu);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return (int)(n / s);
}

static int append_confirmed(struct ag_store *st, int i, const char *tag)
{
    char stream[80], data[96];
    snprintf(stream, sizeof stream, "order-%s-%08d", tag, i);
    snprintf(data, sizeof data, "{\"trackingNumber\":\"%llu\"}", (unsigned long long)mono_ns());
    struct ag_event_data ev = {
        .type = "OrderConfirmed", .type_len = 14, .data = data, .data_len = strlen(data)};
    return ag_store_append(st, stream, strlen(stream), AG_STORE_ANY, &ev, 1, NULL, NULL);
}

/* N more events in the log (appended in batches), then the relay from its
 * checkpoint: events/s. */
static double relay_publish(struct ag_store *st, struct ag_bus *bus, int n, int round,
                            double *cpu_us)
{
    struct ag_event_data *ev = ag_calloc(1000, sizeof *ev);
    char(*streams)[64] = ag_calloc(1000, 64);
    for (int i = 0; i < n;) {
        int k = 0;
        for (; k < 1000 && i < n; k++, i++) {
            ev[k] = (struct ag_event_data){.type = "OrderConfirmed",
                                           .type_len = 14,
                                           .data = "{\"trackingNumber\":\"TRK\"}",
                                           .data_len = 24};
        }
        snprintf(streams[0], 64, "order-bench%d-%08d", round, i);
        ag_store_append(st, streams[0], strlen(streams[0]), AG_STORE_ANY, ev, (size_t)k, NULL,
                        NULL);
    }
    ag_free(streams);
    ag_free(ev);
    struct ag_store_stats ss;
    ag_store_stats(st, &ss);
    struct ag_relay_config rc = {
        .store = st, .bus = bus, .name = "bench", .map = svc_published_language};
    struct ag_relay *r;
    uint64_t t0 = mono_ns(), c0 = cpu_ns();
    if (ag_relay_start(&rc, &r, NULL)) return 0;
    int w = ag_relay_wait(r, ss.events, 120000);
    double s = (double)(mono_ns() - t0) / 1e9;
    *cpu_us = (double)(cpu_ns() - c0) / 1e3 / n;
    ag_relay_stop(r);
    return w ? 0 : n / s;
}

static uint64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The CloudEvent's time (the event's commit time in the store, µs precision). */
static uint64_t ce_time_ns(const char *body)
{
    json_t *ce = json_loads(body, 0, NULL);
    const char *t = json_string_value(json_object_get(ce, "time"));
    struct tm tm = {0};
    unsigned us = 0;
    uint64_t ns = 0;
    if (t && sscanf(t, "%d-%d-%dT%d:%d:%d.%uZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                    &tm.tm_min, &tm.tm_sec, &us) == 7) {
        tm.tm_year -= 1900;
        tm.tm_mon -= 1;
        ns = (uint64_t)timegm(&tm) * 1000000000ull + (uint64_t)us * 1000ull;
    }
    json_decref(ce);
    return ns;
}

/* Per event i of the live phase (wall clock, ns; 0: not seen): its commit time in
 * the log (the CloudEvent time), when its append returned (durable: after the
 * store's fdatasync), when a plain NATS subscriber on the subject saw it (the
 * relay published it, before JetStream's ack), when the durable consumer got it. */
struct e2e_stage {
    uint64_t commit, durable, broker, consumer;
};

struct e2e {
    struct ag_bus *bus;
    int n, got;
    uint64_t *lat;
    int drained; /* the backlog of the publish phase is consumed (atomic) */
    struct e2e_stage *st;
};

/* The live event's index from its CloudEvent data ({"orderId":"e2e-NNNNNNNN",...}). */
static int e2e_index(const char *data, int n)
{
    const char *p = data ? strstr(data, "\"e2e-") : NULL;
    int i = p ? atoi(p + 5) : -1;
    return i >= 0 && i < n ? i : -1;
}

/* The plain subscriber (its own connection): when the broker routed each message. */
static void on_core(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *ud)
{
    (void)nc, (void)sub;
    struct e2e *e = ud;
    int i = e2e_index(natsMsg_GetData(msg), e->n);
    if (i >= 0 && !e->st[i].broker) __atomic_store_n(&e->st[i].broker, wall_ns(), __ATOMIC_RELAXED);
    natsMsg_Destroy(msg);
}

static void *consume(void *arg)
{
    struct e2e *e = arg;
    struct ag_bus_consumer_config cfg = {.name = "bench-e2e", .filter = "agora.ordering.>"};
    struct ag_bus_consumer *c;
    if (ag_bus_consumer_open(e->bus, &cfg, &c, NULL)) return NULL;
    uint64_t until = mono_ns() + 60000000000ull;
    while (e->got < e->n && mono_ns() < until) {
        struct ag_bus_delivery **ds;
        size_t n;
        if (ag_bus_fetch(c, 64, 200, &ds, &n, NULL)) continue;
        if (!n) __atomic_store_n(&e->drained, 1, __ATOMIC_RELEASE);
        for (size_t i = 0; i < n; i++) {
            json_t *d = json_loads(ds[i]->msg.data, 0, NULL);
            const char *tn = json_string_value(json_object_get(d, "trackingNumber"));
            const char *oid = json_string_value(json_object_get(d, "orderId"));
            if (tn && oid && strncmp(oid, "e2e-", 4) == 0 && e->got < e->n) {
                uint64_t now = wall_ns(), t = ce_time_ns(ds[i]->body);
                int k = e2e_index(ds[i]->msg.data, e->n);
                if (k >= 0) e->st[k].commit = t, e->st[k].consumer = now;
                e->lat[e->got++] = now - t;
            }
            json_decref(d);
            ag_bus_ack(c, ds[i], NULL);
            ag_bus_delivery_free(c, ds[i]);
        }
        ag_free(ds);
    }
    ag_bus_consumer_close(c);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* p50 and p99 (µs) of the n values v (sorted in place) as "name":{"p50":..,"p99":..}. */
static void stage_json(const char *name, uint64_t *v, int n, const char *sep)
{
    qsort(v, (size_t)n, sizeof *v, cmp_u64);
    printf("\"%s\":{\"p50\":%.0f,\"p99\":%.0f}%s", name, n ? (double)v[n / 2] / 1e3 : 0,
           n ? (double)v[(size_t)(n * 0.99)] / 1e3 : 0, sep);
}

/* The latency split by stage, over the events every stage saw: commit → durable
 * (the store's group commit: fdatasync), durable → broker (the relay woken, read,
 * mapped, published), broker → consumer (JetStream stored it, the pull delivered). */
static void e2e_stages(const struct e2e *e)
{
    uint64_t *v = ag_calloc((size_t)e->n * 3, sizeof *v);
    int m = 0;
    for (int i = 0; v && i < e->n; i++) {
        struct e2e_stage s = e->st[i];
        s.broker = __atomic_load_n(&e->st[i].broker, __ATOMIC_RELAXED);
        if (!s.commit || !s.durable || !s.broker || !s.consumer) continue;
        /* the appender may record `durable` after the relay already published (it
         * was not scheduled): a stage that ends before it starts counts as 0 */
        v[m] = s.durable > s.commit ? s.durable - s.commit : 0;
        v[e->n + m] = s.broker > s.durable ? s.broker - s.durable : 0;
        v[2 * e->n + m] = s.consumer > s.broker ? s.consumer - s.broker : 0;
        m++;
    }
    printf("{\"bench\":\"bus.e2e.stages\",\"impl\":\"agora\",\"params\":{\"events\":%d},"
           "\"complete\":%d,\"us\":{",
           e->n, m);
    if (v) {
        stage_json("commit_to_durable", v, m, ",");
        stage_json("durable_to_broker", v + e->n, m, ",");
        stage_json("broker_to_consumer", v + 2 * e->n, m, "");
    }
    printf("}}\n");
    ag_free(v);
}

static void e2e_latency(const char *url, struct ag_store *st, struct ag_bus *bus, int n)
{
    struct ag_relay_config rc = {
        .store = st, .bus = bus, .name = "bench", .map = svc_published_language};
    struct ag_relay *r;
    if (ag_relay_start(&rc, &r, NULL)) return;
    struct e2e e = {bus, n,
                    0,   ag_calloc((size_t)n, sizeof(uint64_t)),
                    0,   ag_calloc((size_t)n, sizeof(struct e2e_stage))};
    natsConnection *nc = NULL;
    natsSubscription *sub = NULL;
    if (natsConnection_ConnectTo(&nc, url) == NATS_OK)
        natsConnection_Subscribe(&sub, nc, "agora.ordering.>", on_core, &e);
    pthread_t t;
    pthread_create(&t, NULL, consume, &e);
    while (!__atomic_load_n(&e.drained, __ATOMIC_ACQUIRE)) { /* measure live events only */
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    struct timespec gap = {0, 2000000}; /* 500 events/s */
    for (int i = 0; i < n; i++) {
        append_confirmed(st, i, "e2e");
        e.st[i].durable = wall_ns();
        nanosleep(&gap, NULL);
    }
    pthread_join(t, NULL);
    ag_relay_stop(r);
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(nc);
    qsort(e.lat, (size_t)e.got, sizeof *e.lat, cmp_u64);
    if (e.got)
        printf("{\"bench\":\"bus.e2e\",\"impl\":\"agora\",\"params\":{\"events\":%d,\"rate\":500},"
               "\"received\":%d,\"p50_us\":%.0f,\"p99_us\":%.0f}\n",
               n, e.got, (double)e.lat[e.got / 2] / 1e3,
               (double)e.lat[(size_t)(e.got * 0.99)] / 1e3);
    e2e_stages(&e);
    ag_free(e.st);
    ag_free(e.lat);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ROUNDS rounds of (raw, relay), the order swapped every round so a load change on
 * a shared machine hits both alike; one ratio per round, then their median. */
static void publish_rounds(const char *url, struct ag_store *st, struct ag_bus *bus, int n,
                           int rounds)
{
    double ratio[16];
    const char *only = getenv("BENCH_BUS_ONLY");
    for (int k = 0; only && k < rounds; k++) {
        double cpu = 0, rel = strcmp(only, "raw") ? relay_publish(st, bus, n, k, &cpu) : 0;
        if (strcmp(only, "raw") == 0)
            raw_publish(url, n, k);
        else
            printf("{\"bench\":\"bus.publish\",\"impl\":\"agora\",\"params\":{\"events\":%d,"
                   "\"round\":%d},\"ops_per_s\":%.0f,\"client_cpu_us_per_event\":%.2f}\n",
                   n, k, rel, cpu);
    }
    if (only) return;
    for (int k = 0; k < rounds; k++) {
        int raw = 0;
        double rel, cpu = 0;
        if (k % 2 == 0) raw = raw_publish(url, n, k);
        rel = relay_publish(st, bus, n, k, &cpu);
        if (k % 2 == 1) raw = raw_publish(url, n, k);
        ratio[k] = raw > 0 ? rel / raw : 0;
        printf("{\"bench\":\"bus.publish\",\"impl\":\"agora\",\"params\":{\"events\":%d,"
               "\"round\":%d},\"ops_per_s\":%.0f,\"client_cpu_us_per_event\":%.2f,\"ratio_vs_raw\":"
               "%.2f}\n",
               n, k, rel, cpu, ratio[k]);
        fflush(stdout);
    }
    qsort(ratio, (size_t)rounds, sizeof *ratio, cmp_double);
    printf("{\"bench\":\"bus.publish\",\"impl\":\"ratio\",\"params\":{\"events\":%d,\"rounds\":%"
           "d},\"median_ratio_vs_raw\":%.2f,\"min\":%.2f,\"max\":%.2f}\n",
           n, rounds, ratio[rounds / 2], ratio[0], ratio[rounds - 1]);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return fprintf(stderr, "usage: bench_bus NATS_URL [EVENTS] [E2E_EVENTS] [ROUNDS]\n"), 2;
    int n = argc > 2 ? atoi(argv[2]) : 20000, n2 = argc > 3 ? atoi(argv[3]) : 2000;
    int rounds = argc > 4 ? atoi(argv[4]) : 3;
    if (rounds < 1 || rounds > 16) rounds = 3;
    ag_log_set_level(AG_LOG_ERROR);
    char dir[] = "/tmp/agora-bench-bus-XXXXXX";
    struct ag_store *st;
    struct ag_bus *bus;
    if (!mkdtemp(dir) || ag_store_log_open(dir, NULL, &st, NULL)) return 1;
    if (ag_bus_open(argv[1], NULL, &bus, NULL)) return 1;
    for (int i = 0; i < 50; i++) { /* the connection comes up in the background */
        struct ag_bus_health h;
        ag_bus_health(bus, &h);
        if (h.connected) break;
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
    if (n > 0) publish_rounds(argv[1], st, bus, n, rounds); /* EVENTS=0: the latency only */
    if (!getenv("BENCH_BUS_ONLY")) e2e_latency(argv[1], st, bus, n2);
    ag_bus_close(bus);
    ag_store_close(st);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : 1;
}
