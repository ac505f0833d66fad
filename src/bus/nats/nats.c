/*
 * The NATS JetStream bus (`nats://HOST:PORT`), through libnats (nats.c).
 *
 * Broker objects (created when missing, on the first use after every (re)connect):
 *   stream AGORA      subjects "agora.>", file storage, duplicate window
 *                     opts->dedup_window_ms: a publish carries Nats-Msg-Id = the
 *                     CloudEvent id, so the broker drops a republished message;
 *   stream AGORA_DLQ  subjects "dlq.>" (dead-letter records this adapter publishes
 *                     when a consumer naks the last allowed delivery or
 *                     terminates one) and the JetStream MAX_DELIVERIES advisories
 *                     of AGORA's consumers (the last ack wait ran out: the
 *                     consumer never answered, so the adapter could not);
 *   consumers         durable pull consumers, explicit ack, AckWait, MaxDeliver,
 *                     BackOff from struct ag_bus_consumer_config.
 * One events stream for every context rather than one per context: a JetStream
 * consumer reads one stream, and a consumer that follows several contexts (the
 * choreography reacts to ordering, inventory, payments and shipping) must see
 * them in one order; a consumer of one context filters by subject instead. A dead
 * letter from the advisory is read back as {"reason":"max_deliver","error":"ack
 * wait expired","advisory":{... "stream_seq" ...}} (the original stays in AGORA).
 *
 * Connection: libnats connects in the background when the broker is down at open
 * (RetryOnFailedConnect) and reconnects forever after a loss. While it is not
 * connected, publish fails fast with AG_EUNAVAILABLE (nothing is buffered: the
 * caller — the relay — keeps its checkpoint and publishes again later), and
 * health() says why. Publishes of a call are pipelined (async publish) and the
 * call waits for every ack; a timeout takes the unacknowledged messages back from
 * libnats so none is sent later behind the caller's back.
 *
 * The pipe (ag_bus_pipe_*, the relay's): messages are sent without waiting and
 * kept, in send order, in a ring of AG_BUS_PIPE_WINDOW slots. It takes the PubAcks
 * itself rather than through libnats's JetStream async publish (its pending hash
 * table, per-message reply inbox and timers, a full JSON parse of every PubAck):
 * a pipe message is a core publish with its headers (Content-Type, Nats-Msg-Id =
 * the event id: the broker's dedup) and reply subject "<inbox>.<send number>" on
 * one wildcard subscription of the adapter, so an ack finds its slot in O(1) by
 * that number, and its check is a scan: {"error":..} or an empty status message
 * (no responders) fails the slot, anything else acknowledges it. The ack of a
 * slot a reset dropped finds no slot (send numbers only grow) and is ignored. The
 * synchronous publish keeps libnats's async publish (and a timeout in it takes
 * back only its own messages). The acknowledged prefix is popped and its last
 * mark reported; a failed ack is sticky until reset, and a slot whose ack is
 * older than the caller's `lost_ms` is reported lost (a disconnect may swallow
 * acks). The ack handler wakes a waiter only when what it waits for happened (a
 * free quarter of the ring, everything acknowledged, a failure), not per ack.
 *
 * Latency: libnats's flusher thread waits 1 ms for more before it writes a
 * publish, so a small pipe send (a relay caught up with the log) is written in
 * the caller's thread (flush_now); a large one is left to libnats's buffering.
 * A fetch asks for more than the first message only when that message's
 * NumPending says the consumer has more: a caught-up consumer does not wait for a
 * second (flusher-delayed) pull before it returns what it got.
 */
#include <errno.h>
#include <nats/nats.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus/internal.h"

/* libnats frees a message on its garbage-collector thread and wakes that thread
 * when it sleeps: destroyed one by one as they come, every message (sent or ack)
 * cost a futex wake and a context switch; destroyed GC_BURST at a time, one. */
#define GC_BURST 256

struct nbus {
    struct ag_bus base;
    natsOptions *nopts;
    natsConnection *nc;
    jsCtx *js;
    pthread_mutex_t lock; /* serialises publishes and stream setup */
    bool streams_ok;      /* the streams exist (since the last connect) */
    char dlq[80];         /* the DLQ stream's name */
    int replicas;         /* the streams' replicas (URI ?replicas=N; default 1) */
    /* guarded by `acks` */
    pthread_mutex_t acks;
    pthread_cond_t acked;   /* an ack (or failure) of the current publish came */
    size_t waiting, failed; /* of the current publish */
    char fail_msg[200];
    uint64_t published, duplicates, reconnects;
    char last_error[200]; /* the last setup/publish error, for health */
    bool closed;          /* libnats called its last callback (ClosedCB); under `acks` */
    /* the pipe (ag_bus_pipe_*), guarded by `acks`: its messages in flight, in send
     * order, in a ring of AG_BUS_PIPE_WINDOW slots */
    struct pipe_slot *ring;
    uint64_t ring_abs; /* the send number of the ring's first slot (slot of send number
                          q: ring[q % AG_BUS_PIPE_WINDOW]); only grows */
    size_t ring_count;
    struct ag_bus_pipe_stat pst; /* inflight = ring_count */
    bool pipe_failed;
    char pipe_msg[200];
    size_t pipe_want;   /* a waiter wants ring_count <= this (SIZE_MAX: none waits) */
    struct ag_buf body; /* the CloudEvent being sent; under `lock` */
    bool sent_async;    /* libnats has had an async publish (its pending list exists:
                           asking for it before crashes libnats 3.4); under `lock` */
    /* the pipe's ack inbox: a pipe message's reply subject is ack_prefix + its send
     * number; ack_sub (ack_prefix + "*") receives the broker's PubAcks */
    natsSubscription *ack_sub; /* created under `lock` */
    char ack_prefix[64];
    bool ack_sub_done; /* its handler returned for the last time; under `acks` */
    /* messages to destroy in a burst (gc_burst): sent ones under `lock`, acks
     * under `acks` */
    natsMsg *sent_gc[GC_BURST], *ack_gc[GC_BURST];
    size_t nsent_gc, nack_gc;
};

/* One pipelined message: acked (or failed) by on_pipe_ack, found by its send
 * number (the last token of the ack's subject), popped in order once acked. */
enum slot_state { SLOT_SENT, SLOT_ACKED, SLOT_FAILED };
struct pipe_slot {
    uint64_t seq;     /* its send number (ring_abs + its index when pushed) */
    bool msg;         /* false: a mark without a message (an empty send) */
    uint64_t mark;    /* the call's mark, on its last slot */
    uint64_t sent_ms; /* monotonic */
    uint8_t state;    /* enum slot_state */
    bool marks;       /* the call's last slot */
};

struct nconsumer {
    struct ag_bus_consumer base;
    struct nbus *nb;
    natsSubscription *sub;
};

struct ndelivery {
    struct ag_bus_delivery d;
    natsMsg *msg;
    void *mem;
};

static const char *nstatus(natsStatus s)
{
    return natsStatus_GetText(s);
}

static int fail(struct ag_err *err, int code, natsStatus s, jsErrCode je, const char *what)
{
    return ag_err_set(err, code, "nats: %s: %s%s%d", what, nstatus(s),
                      je ? " jetstream error " : "", je ? (int)je : 0);
}

/* ---- connection and streams ---- */

static void on_reconnected(natsConnection *nc, void *ud)
{
    AG_UNUSED(nc);
    struct nbus *nb = ud;
    pthread_mutex_lock(&nb->acks);
    nb->reconnects++;
    pthread_mutex_unlock(&nb->acks);
    AG_INFO("bus.reconnected", AG_LS("uri", nb->base.uri));
}

/* The first connection, when the broker was down at open. */
static void on_connected(natsConnection *nc, void *ud)
{
    AG_UNUSED(nc);
    AG_INFO("bus.connected", AG_LS("uri", ((struct nbus *)ud)->base.uri));
}

/* The last callback libnats makes for a connection: after it, nb may be freed. */
static void on_closed(natsConnection *nc, void *ud)
{
    AG_UNUSED(nc);
    struct nbus *nb = ud;
    pthread_mutex_lock(&nb->acks);
    nb->closed = true;
    pthread_cond_broadcast(&nb->acked);
    pthread_mutex_unlock(&nb->acks);
}

static void on_disconnected(natsConnection *nc, void *ud)
{
    AG_UNUSED(nc);
    struct nbus *nb = ud;
    __atomic_store_n(&nb->streams_ok, false, __ATOMIC_RELAXED);
    AG_WARN("bus.disconnected", AG_LS("uri", nb->base.uri));
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct pipe_slot *slot_at(struct nbus *nb, size_t k)
{
    return &nb->ring[(nb->ring_abs + k) % AG_BUS_PIPE_WINDOW];
}

/* Pop the acknowledged prefix; wake a waiter that got what it wants. Under `acks`. */
static void pipe_advance(struct nbus *nb)
{
    while (nb->ring_count && slot_at(nb, 0)->state == SLOT_ACKED) {
        struct pipe_slot *s = slot_at(nb, 0);
        if (s->msg) nb->pst.acked++;
        if (s->marks) nb->pst.mark = s->mark, nb->pst.marked = true;
        nb->ring_abs++;
        nb->ring_count--;
    }
    if (nb->pipe_want != SIZE_MAX && (nb->pipe_failed || nb->ring_count <= nb->pipe_want))
        pthread_cond_broadcast(&nb->acked);
}

static bool has(const char *data, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (data[i] == needle[0] && memcmp(data + i, needle, n) == 0) return true;
    return false;
}

/* Destroy a burst of messages (libnats's GC thread is woken about once). */
static void gc_burst(natsMsg **msgs, size_t *n)
{
    for (size_t i = 0; i < *n; i++) natsMsg_Destroy(msgs[i]);
    *n = 0;
}

/* A PubAck on the pipe's inbox (its subject ends in the message's send number):
 * {"stream":..,"seq":N[,"duplicate": true]} acknowledges; {"error":{..}} or an empty
 * message (the status "no responders": no stream takes the subject) fails it. A
 * number outside the ring is an ack of a message a reset gave up: ignored. */
static void on_pipe_ack(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *ud)
{
    AG_UNUSED(nc), AG_UNUSED(sub);
    struct nbus *nb = ud;
    const char *subj = natsMsg_GetSubject(msg), *dot = strrchr(subj, '.');
    uint64_t q = dot ? strtoull(dot + 1, NULL, 10) : 0;
    const char *data = natsMsg_GetData(msg);
    size_t len = data ? (size_t)natsMsg_GetDataLength(msg) : 0;
    bool ok = len > 0 && data[0] == '{' && !has(data, len, "\"error\"");
    pthread_mutex_lock(&nb->acks);
    struct pipe_slot *s = q - nb->ring_abs < nb->ring_count ? slot_at(nb, q - nb->ring_abs) : NULL;
    if (s && s->seq == q && s->msg && s->state == SLOT_SENT) {
        s->state = ok ? SLOT_ACKED : SLOT_FAILED;
        if (ok)
            nb->published++, nb->duplicates += has(data, len, "\"duplicate\""); /* only when true */
        if (!ok && !nb->pipe_failed && len) /* the error ack, as the broker wrote it */
            snprintf(nb->pipe_msg, sizeof nb->pipe_msg, "%.*s", (int)(len < 190 ? len : 190), data);
        else if (!ok && !nb->pipe_failed)
            snprintf(nb->pipe_msg, sizeof nb->pipe_msg, "no responders (no stream takes it)");
        nb->pipe_failed |= !ok;
        pipe_advance(nb);
    }
    /* kept for a burst; the burst goes when full or the pipe is idle */
    natsMsg *burst[GC_BURST];
    size_t nburst = 0;
    nb->ack_gc[nb->nack_gc++] = msg;
    if (nb->nack_gc == GC_BURST || !nb->ring_count) {
        nburst = nb->nack_gc;
        memcpy(burst, nb->ack_gc, nburst * sizeof(natsMsg *));
        nb->nack_gc = 0;
    }
    pthread_mutex_unlock(&nb->acks);
    gc_burst(burst, &nburst);
}

static void on_ack_sub_done(void *ud)
{
    struct nbus *nb = ud;
    pthread_mutex_lock(&nb->acks);
    nb->ack_sub_done = true;
    pthread_cond_broadcast(&nb->acked);
    pthread_mutex_unlock(&nb->acks);
}

static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *ud)
{
    AG_UNUSED(js);
    struct nbus *nb = ud;
    char why[200] = "";
    bool ok = !pae && pa;
    if (!ok)
        snprintf(why, sizeof why, "%s (%d)",
                 pae && pae->ErrText ? pae->ErrText
                 : pae               ? nstatus(pae->Err)
                                     : "no ack",
                 pae ? (int)pae->ErrCode : 0);
    pthread_mutex_lock(&nb->acks);
    if (ok) {
        nb->published++;
        if (pa->Duplicate) nb->duplicates++;
    }
    if (nb->waiting) { /* a synchronous publish (the pipe's acks come to on_pipe_ack) */
        if (!ok) nb->failed++, snprintf(nb->fail_msg, sizeof nb->fail_msg, "%s", why);
        nb->waiting--;
        if (!nb->waiting || !ok) pthread_cond_broadcast(&nb->acked);
    }
    pthread_mutex_unlock(&nb->acks);
    natsMsg_Destroy(msg);
}

static bool connected(struct nbus *nb)
{
    return natsConnection_Status(nb->nc) == NATS_CONN_STATUS_CONNECTED;
}

static int add_stream(struct nbus *nb, const char *name, const char **subjects, int n,
                      struct ag_err *err)
{
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = name;
    sc.Subjects = subjects;
    sc.SubjectsLen = n;
    sc.Storage = js_FileStorage;
    sc.Duplicates = (int64_t)nb->base.opts.dedup_window_ms * 1000000;
    sc.Replicas = nb->replicas;
    jsErrCode je = 0;
    jsStreamInfo *si = NULL;
    natsStatus s = js_AddStream(&si, nb->js, &sc, NULL, &je);
    jsStreamInfo_Destroy(si);
    if (s == NATS_OK || je == JSStreamNameExistErr) return 0;
    return fail(err, AG_EUNAVAILABLE, s, je, name);
}

/* Connected with the streams in place; AG_EUNAVAILABLE (with why) otherwise. */
static int ensure(struct nbus *nb, struct ag_err *err)
{
    if (!connected(nb))
        return ag_err_set(err, AG_EUNAVAILABLE, "nats: not connected to %s", nb->base.uri + 5);
    if (__atomic_load_n(&nb->streams_ok, __ATOMIC_RELAXED)) return 0;
    char adv[160];
    snprintf(adv, sizeof adv, "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.%s.*",
             nb->base.opts.stream);
    const char *ev[] = {"agora.>"}, *dl[] = {"dlq.>", adv};
    int rc = add_stream(nb, nb->base.opts.stream, ev, 1, err);
    if (!rc) rc = add_stream(nb, nb->dlq, dl, 2, err);
    if (!rc) __atomic_store_n(&nb->streams_ok, true, __ATOMIC_RELAXED);
    return rc;
}

/* ---- publish ---- */

/* Take back what libnats still holds of this publish (no ack came). */
static void drop_pending(struct nbus *nb)
{
    natsMsgList pending = {0};
    if (js_PublishAsyncGetPendingList(&pending, nb->js) == NATS_OK) natsMsgList_Destroy(&pending);
    pthread_mutex_lock(&nb->acks);
    nb->waiting = 0;
    pthread_mutex_unlock(&nb->acks);
}

/* The message of `m`: its CloudEvent in structured mode. */
static natsStatus make_msg(const struct ag_bus_msg *m, struct ag_buf *body, natsMsg **out)
{
    ag_buf_reset(body);
    if (ag_bus_cloudevent_json(m, body)) return NATS_NO_MEMORY;
    natsStatus s = natsMsg_Create(out, m->topic, NULL, body->data, (int)body->len);
    if (s == NATS_OK) s = natsMsgHeader_Set(*out, "Content-Type", "application/cloudevents+json");
    return s;
}

static int send_one(struct nbus *nb, const struct ag_bus_msg *m, struct ag_buf *body,
                    struct ag_err *err)
{
    natsMsg *msg = NULL;
    natsStatus s = make_msg(m, body, &msg);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = m->id;
    if (s == NATS_OK) s = js_PublishMsgAsync(nb->js, &msg, &po);
    natsMsg_Destroy(msg); /* NULL once libnats took it */
    return s == NATS_OK ? 0 : fail(err, AG_EUNAVAILABLE, s, 0, "publish");
}

static int npublish(struct ag_bus *b, const struct ag_bus_msg *msgs, size_t n, int timeout_ms,
                    struct ag_err *err)
{
    struct nbus *nb = (struct nbus *)b;
    pthread_mutex_lock(&nb->lock);
    int rc = ensure(nb, err);
    pthread_mutex_lock(&nb->acks);
    nb->waiting = n;
    nb->failed = 0;
    pthread_mutex_unlock(&nb->acks);
    size_t sent = 0;
    for (; !rc && sent < n; sent++) rc = send_one(nb, &msgs[sent], &nb->body, err);
    if (sent) nb->sent_async = true;
    struct timespec until;
    ag_deadline_mono_in_ms(&until, timeout_ms > 0 ? timeout_ms : 5000);
    pthread_mutex_lock(&nb->acks);
    if (!rc) {
        while (nb->waiting && pthread_cond_timedwait(&nb->acked, &nb->acks, &until) == 0) {
        }
        if (nb->failed)
            rc = ag_err_set(err, AG_EUNAVAILABLE, "nats: %zu of %zu publishes failed: %s",
                            nb->failed, n, nb->fail_msg);
        else if (nb->waiting)
            rc = ag_err_set(err, AG_ETIMEDOUT, "nats: %zu of %zu publishes not acknowledged",
                            nb->waiting, n);
    }
    bool leftover = sent > 0 && (nb->waiting > 0 || rc); /* libnats holds some */
    pthread_mutex_unlock(&nb->acks);
    if (leftover) drop_pending(nb);
    if (rc) snprintf(nb->last_error, sizeof nb->last_error, "%.190s", err ? err->msg : "");
    pthread_mutex_unlock(&nb->lock);
    return rc;
}

/* ---- pipelined publishing ---- */

/* A send of at most this many messages is written to the socket before the call
 * returns (flush_now); a larger one is left to libnats's buffer. */
#define PIPE_FLUSH_MAX 64

/* Write what libnats buffered now, in this thread. libnats hands a publish to its
 * flusher thread, which waits 1 ms for more before it writes: on a relay caught up
 * with the log (a page of one event) that millisecond was most of the store →
 * consumer latency. The only public in-place write is a flush (PING written with
 * the buffer, then PONG awaited): the wait is about one round trip, which the
 * relay spends waiting for the broker's ack anyway. Not for a large send: the
 * PONG would wait for the broker to store the whole page, and the relay could
 * not prepare the next one meanwhile. A timeout here loses nothing (the buffer
 * was written); the pipe's own ack timeouts judge the publishes. */
static void flush_now(struct nbus *nb)
{
    (void)natsConnection_FlushTimeout(nb->nc, 100);
}

/* Wait (up to `until`) for ring_count <= want or a failure. Under `acks`. */
static void pipe_wait(struct nbus *nb, size_t want, const struct timespec *until)
{
    nb->pipe_want = want;
    while (nb->ring_count > want && !nb->pipe_failed &&
           pthread_cond_timedwait(&nb->acked, &nb->acks, until) == 0) {
    }
    nb->pipe_want = SIZE_MAX;
}

/* Room in the ring for one more slot (waiting up to `until`), then claim it:
 * *q its send number. */
static int pipe_push(struct nbus *nb, bool msg, uint64_t mark, bool marks,
                     const struct timespec *until, uint64_t *q, struct ag_err *err)
{
    pthread_mutex_lock(&nb->acks);
    if (nb->ring_count == AG_BUS_PIPE_WINDOW)
        pipe_wait(nb, AG_BUS_PIPE_WINDOW - AG_BUS_PIPE_WINDOW / 4, until);
    int rc = 0;
    if (nb->pipe_failed)
        rc = ag_err_set(err, AG_EUNAVAILABLE, "nats: a publish failed: %s", nb->pipe_msg);
    else if (nb->ring_count == AG_BUS_PIPE_WINDOW)
        rc = ag_err_set(err, AG_ETIMEDOUT, "nats: %d publishes not acknowledged",
                        AG_BUS_PIPE_WINDOW);
    else if (!msg && !nb->ring_count)
        nb->pst.mark = mark, nb->pst.marked = true; /* nothing before it in flight */
    else {
        *q = nb->ring_abs + nb->ring_count;
        *slot_at(nb, nb->ring_count++) =
            (struct pipe_slot){*q, msg, mark, mono_ms(), msg ? SLOT_SENT : SLOT_ACKED, marks};
    }
    pthread_mutex_unlock(&nb->acks);
    return rc;
}

/* The pipe's ack inbox, subscribed once (libnats subscribes it again after a
 * reconnect, before it writes what it buffered). Under `lock`. */
static int ack_inbox(struct nbus *nb, struct ag_err *err)
{
    if (nb->ack_sub) return 0;
    natsInbox *ib = NULL;
    natsStatus s = natsInbox_Create(&ib);
    if (s != NATS_OK) return fail(err, AG_ENOMEM, s, 0, "inbox");
    char subj[80];
    snprintf(nb->ack_prefix, sizeof nb->ack_prefix, "%.50s.", (const char *)ib);
    snprintf(subj, sizeof subj, "%s*", nb->ack_prefix);
    natsInbox_Destroy(ib);
    s = natsConnection_Subscribe(&nb->ack_sub, nb->nc, subj, on_pipe_ack, nb);
    if (s == NATS_OK) s = natsSubscription_SetPendingLimits(nb->ack_sub, -1, -1);
    if (s == NATS_OK) s = natsSubscription_SetOnCompleteCB(nb->ack_sub, on_ack_sub_done, nb);
    if (s == NATS_OK) return 0;
    natsSubscription_Destroy(nb->ack_sub); /* no message can have come: nothing sent */
    nb->ack_sub = NULL;
    return fail(err, AG_EUNAVAILABLE, s, 0, "ack inbox");
}

/* One pipe message: its slot first (its ack may come at once), then the message
 * — the CloudEvent, Content-Type and Nats-Msg-Id headers, reply = the inbox +
 * its send number — written by a core publish (no libnats JetStream bookkeeping:
 * the ring is the pending table). Under `lock`. */
static int pipe_one(struct nbus *nb, const struct ag_bus_msg *m, uint64_t mark, bool marks,
                    const struct timespec *until, struct ag_err *err)
{
    uint64_t q = 0;
    int rc = pipe_push(nb, true, mark, marks, until, &q, err);
    if (rc) return rc;
    char reply[96];
    snprintf(reply, sizeof reply, "%s%llu", nb->ack_prefix, (unsigned long long)q);
    natsMsg *msg = NULL;
    ag_buf_reset(&nb->body);
    natsStatus s = ag_bus_cloudevent_json(m, &nb->body)
                       ? NATS_NO_MEMORY
                       : natsMsg_Create(&msg, m->topic, reply, nb->body.data, (int)nb->body.len);
    if (s == NATS_OK) s = natsMsgHeader_Set(msg, "Content-Type", "application/cloudevents+json");
    if (s == NATS_OK) s = natsMsgHeader_Set(msg, "Nats-Msg-Id", m->id);
    if (s == NATS_OK) s = natsConnection_PublishMsg(nb->nc, msg);
    if (s == NATS_OK) {
        nb->sent_gc[nb->nsent_gc++] = msg;
        if (nb->nsent_gc == GC_BURST) gc_burst(nb->sent_gc, &nb->nsent_gc);
        return 0;
    }
    natsMsg_Destroy(msg);
    pthread_mutex_lock(&nb->acks); /* not sent: its slot is the last one */
    if (nb->ring_count && slot_at(nb, nb->ring_count - 1)->seq == q) nb->ring_count--;
    nb->pipe_failed = true;
    snprintf(nb->pipe_msg, sizeof nb->pipe_msg, "%s", nstatus(s));
    pthread_mutex_unlock(&nb->acks);
    return fail(err, AG_EUNAVAILABLE, s, 0, "publish");
}

static int npipe_send(struct ag_bus *b, const struct ag_bus_msg *msgs, size_t n, uint64_t mark,
                      int timeout_ms, struct ag_err *err)
{
    struct nbus *nb = (struct nbus *)b;
    struct timespec until;
    ag_deadline_mono_in_ms(&until, timeout_ms > 0 ? timeout_ms : 5000);
    pthread_mutex_lock(&nb->lock);
    int rc = ensure(nb, err);
    if (!rc) rc = ack_inbox(nb, err);
    for (size_t i = 0; !rc && i < n; i++)
        rc = pipe_one(nb, &msgs[i], mark, i + 1 == n, &until, err);
    uint64_t q = 0;
    if (!rc && n == 0) rc = pipe_push(nb, false, mark, true, &until, &q, err);
    if (!rc && n > 0 && n <= PIPE_FLUSH_MAX) flush_now(nb);
    gc_burst(nb->sent_gc, &nb->nsent_gc);
    if (rc) snprintf(nb->last_error, sizeof nb->last_error, "%.190s", err ? err->msg : "");
    pthread_mutex_unlock(&nb->lock);
    return rc;
}

static int npipe_acked(struct ag_bus *b, int wait_ms, int lost_ms, struct ag_bus_pipe_stat *out,
                       struct ag_err *err)
{
    struct nbus *nb = (struct nbus *)b;
    struct timespec until;
    ag_deadline_mono_in_ms(&until, wait_ms);
    pthread_mutex_lock(&nb->acks);
    if (wait_ms > 0) pipe_wait(nb, 0, &until);
    *out = nb->pst;
    out->inflight = nb->ring_count;
    uint64_t age = nb->ring_count ? mono_ms() - slot_at(nb, 0)->sent_ms : 0;
    int rc = 0;
    if (nb->pipe_failed)
        rc = ag_err_set(err, AG_EUNAVAILABLE, "nats: a publish failed: %s", nb->pipe_msg);
    else if (lost_ms > 0 && age > (uint64_t)lost_ms)
        rc = ag_err_set(err, AG_ETIMEDOUT, "nats: %zu publishes not acknowledged after %d ms",
                        nb->ring_count, lost_ms);
    pthread_mutex_unlock(&nb->acks);
    return rc;
}

static void npipe_reset(struct ag_bus *b)
{
    struct nbus *nb = (struct nbus *)b;
    pthread_mutex_lock(&nb->lock);
    natsMsgList pending = {0}; /* what libnats still holds is never sent now */
    if (nb->sent_async && js_PublishAsyncGetPendingList(&pending, nb->js) == NATS_OK)
        natsMsgList_Destroy(&pending);
    pthread_mutex_lock(&nb->acks);
    nb->ring_abs += nb->ring_count; /* a late ack of a dropped slot finds no slot */
    nb->ring_count = 0;
    memset(&nb->pst, 0, sizeof nb->pst);
    nb->pipe_failed = false;
    nb->waiting = 0;
    pthread_mutex_unlock(&nb->acks);
    pthread_mutex_unlock(&nb->lock);
}

/* ---- consumers ---- */

static int nconsumer_open(struct ag_bus *b, const struct ag_bus_consumer_config *cfg,
                          struct ag_bus_consumer **out, struct ag_err *err)
{
    struct nbus *nb = (struct nbus *)b;
    pthread_mutex_lock(&nb->lock);
    int rc = ensure(nb, err);
    pthread_mutex_unlock(&nb->lock);
    if (rc) return rc;
    struct nconsumer *c = ag_calloc(1, sizeof *c);
    if (!c) return ag_err_set(err, AG_ENOMEM, "out of memory");
    int64_t backoff[AG_BUS_BACKOFF_MAX];
    for (size_t i = 0; i < cfg->nbackoff; i++) backoff[i] = (int64_t)cfg->backoff_ms[i] * 1000000;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = b->opts.stream;
    so.Config.Durable = cfg->name;
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.DeliverPolicy = js_DeliverAll;
    so.Config.AckWait = (int64_t)cfg->ack_wait_ms * 1000000;
    so.Config.MaxDeliver = (int64_t)cfg->max_deliver;
    so.Config.MaxAckPending = (int64_t)cfg->max_pending;
    /* BackOff must be shorter than MaxDeliver; it replaces AckWait per delivery */
    if (cfg->nbackoff > 1 && cfg->nbackoff < cfg->max_deliver) {
        so.Config.BackOff = backoff;
        so.Config.BackOffLen = (int)cfg->nbackoff;
    }
    jsErrCode je = 0;
    natsStatus s = js_PullSubscribe(&c->sub, nb->js, cfg->filter, cfg->name, NULL, &so, &je);
    if (s != NATS_OK) {
        ag_free(c);
        return fail(err, AG_EUNAVAILABLE, s, je, "pull subscribe");
    }
    c->nb = nb;
    *out = &c->base;
    return 0;
}

static struct ndelivery *wrap(natsMsg *msg, uint32_t max_deliver, uint64_t *pending)
{
    struct ndelivery *nd = ag_calloc(1, sizeof *nd);
    if (!nd) return NULL;
    jsMsgMetaData *md = NULL;
    if (natsMsg_GetMetaData(&md, msg) != NATS_OK ||
        ag_bus_cloudevent_parse(natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg),
                                natsMsg_GetSubject(msg), &nd->d, &nd->mem, NULL)) {
        jsMsgMetaData_Destroy(md);
        ag_free(nd);
        return NULL;
    }
    nd->d.deliveries = (uint32_t)md->NumDelivered;
    nd->d.seq = md->Sequence.Stream;
    nd->d.last = nd->d.deliveries >= max_deliver;
    *pending = md->NumPending;
    nd->d.impl = nd;
    nd->msg = msg;
    jsMsgMetaData_Destroy(md);
    return nd;
}

/* Wrap fetched messages (a non-CloudEvent is poison: terminated) and empty `list`;
 * *pending: how many more the consumer had after the last one (its metadata's
 * NumPending; left alone when no message could be read). */
static void take(struct ag_bus_consumer *bc, natsMsgList *list, struct ag_bus_delivery **out,
                 size_t *n, uint64_t *pending)
{
    for (int i = 0; i < list->Count; i++) {
        struct ndelivery *nd = wrap(list->Msgs[i], bc->cfg.max_deliver, pending);
        if (!nd) {
            natsMsg_Term(list->Msgs[i], NULL);
            natsMsg_Destroy(list->Msgs[i]);
        } else {
            out[(*n)++] = &nd->d;
        }
        list->Msgs[i] = NULL;
    }
    natsMsgList_Destroy(list);
    memset(list, 0, sizeof *list);
}

static int nfetch(struct ag_bus_consumer *bc, size_t max, int timeout_ms,
                  struct ag_bus_delivery **out, size_t *n, struct ag_err *err)
{
    struct nconsumer *c = (struct nconsumer *)bc;
    natsMsgList list = {0};
    jsErrCode je = 0;
    /* A long poll for one message returns as soon as it comes (a pull for a batch
     * waits for the whole batch or the timeout); then whatever else is ready, only
     * when the consumer has more (the message's NumPending): a caught-up consumer
     * never pays a second round trip before it sees the message it got. */
    natsStatus s = natsSubscription_Fetch(&list, c->sub, 1, timeout_ms > 0 ? timeout_ms : 1, &je);
    if (s == NATS_TIMEOUT) return 0;
    if (s != NATS_OK) return fail(err, AG_EUNAVAILABLE, s, je, "fetch");
    uint64_t pending = UINT64_MAX; /* unknown: ask */
    take(bc, &list, out, n, &pending);
    if (max > 1 && pending > 0) {
        jsFetchRequest fr;
        jsFetchRequest_Init(&fr);
        fr.Batch = pending < max - 1 ? (int)pending : (int)max - 1;
        fr.NoWait = true;
        fr.Expires = 1000000000;
        if (natsSubscription_FetchRequest(&list, c->sub, &fr) == NATS_OK)
            take(bc, &list, out, n, &pending);
    }
    return 0;
}

static int nack(struct ag_bus_consumer *bc, struct ag_bus_delivery *d, struct ag_err *err)
{
    AG_UNUSED(bc);
    natsStatus s = natsMsg_Ack(((struct ndelivery *)d->impl)->msg, NULL);
    return s == NATS_OK ? 0 : fail(err, AG_EUNAVAILABLE, s, 0, "ack");
}

/* Publish the dead-letter record (dedup id: consumer + message id + seq), then
 * terminate the original so JetStream stops redelivering it. */
static int park(struct nconsumer *c, struct ag_bus_delivery *d, enum ag_bus_dl_reason why,
                const char *error, struct ag_err *err)
{
    struct nbus *nb = c->nb;
    struct ag_bus_dead_letter dl = {c->base.name, d, why, error, ag_clock_now(nb->base.opts.clock)};
    struct ag_buf b;
    ag_buf_init(&b);
    if (ag_bus_dead_letter_json(&dl, &b)) return ag_err_set(err, AG_ENOMEM, "out of memory");
    char subj[AG_BUS_CONSUMER_MAX + 8], id[256];
    snprintf(subj, sizeof subj, "dlq.%s", c->base.name);
    snprintf(id, sizeof id, "%s:%llu", c->base.name, (unsigned long long)d->seq);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = id;
    jsErrCode je = 0;
    jsPubAck *pa = NULL;
    natsStatus s = js_Publish(&pa, nb->js, subj, b.data, (int)b.len, &po, &je);
    jsPubAck_Destroy(pa);
    ag_buf_free(&b);
    if (s != NATS_OK) return fail(err, AG_EUNAVAILABLE, s, je, "dead-letter publish");
    AG_WARN("bus.dead_lettered", AG_LS("consumer", c->base.name), AG_LS("id", d->msg.id),
            AG_LS("topic", d->msg.topic), AG_LU("deliveries", d->deliveries),
            AG_LS("error", error));
    s = natsMsg_Term(((struct ndelivery *)d->impl)->msg, NULL);
    return s == NATS_OK ? 0 : fail(err, AG_EUNAVAILABLE, s, 0, "term");
}

static int nnak(struct ag_bus_consumer *bc, struct ag_bus_delivery *d, int64_t delay_ms,
                const char *error, struct ag_err *err)
{
    struct nconsumer *c = (struct nconsumer *)bc;
    if (d->last) return park(c, d, AG_BUS_DL_MAX_DELIVER, error, err);
    natsStatus s = natsMsg_NakWithDelay(((struct ndelivery *)d->impl)->msg, delay_ms, NULL);
    return s == NATS_OK ? 0 : fail(err, AG_EUNAVAILABLE, s, 0, "nak");
}

static int nterm(struct ag_bus_consumer *bc, struct ag_bus_delivery *d, const char *error,
                 struct ag_err *err)
{
    return park((struct nconsumer *)bc, d, AG_BUS_DL_TERMINATED, error, err);
}

static void ndelivery_free(struct ag_bus_delivery *d)
{
    struct ndelivery *nd = d->impl;
    natsMsg_Destroy(nd->msg);
    ag_free(nd->mem);
    ag_free(nd);
}

static void nconsumer_close(struct ag_bus_consumer *bc)
{
    struct nconsumer *c = (struct nconsumer *)bc;
    natsSubscription_Unsubscribe(c->sub); /* the durable consumer stays on the broker */
    natsSubscription_Destroy(c->sub);
    ag_free(c);
}

/* ---- dead letters, health, close ---- */

static int ndlq_read(struct ag_bus *b, uint64_t from, size_t max, struct ag_buf *out,
                     uint64_t *next, struct ag_err *err)
{
    struct nbus *nb = (struct nbus *)b;
    jsErrCode je = 0;
    jsStreamInfo *si = NULL;
    natsStatus s = js_GetStreamInfo(&si, nb->js, nb->dlq, NULL, &je);
    if (s != NATS_OK) return fail(err, AG_EUNAVAILABLE, s, je, "dead letters");
    uint64_t last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    ag_buf_putc(out, '[');
    size_t got = 0;
    for (*next = from; *next <= last && got < max; (*next)++) {
        natsMsg *m = NULL;
        s = js_GetMsg(&m, nb->js, nb->dlq, *next, NULL, &je);
        if (s != NATS_OK) continue; /* deleted */
        if (got++) ag_buf_putc(out, ',');
        if (strncmp(natsMsg_GetSubject(m), "dlq.", 4) == 0) /* a record of ours */
            ag_buf_append(out, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
        else { /* a MAX_DELIVERIES advisory: the consumer never answered */
            ag_buf_puts(out, "{\"reason\":\"max_deliver\",\"error\":\"ack wait expired\","
                             "\"advisory\":");
            ag_buf_append(out, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
            ag_buf_putc(out, '}');
        }
        natsMsg_Destroy(m);
    }
    return ag_buf_putc(out, ']') ? AG_ENOMEM : 0;
}

static void nhealth(struct ag_bus *b, struct ag_bus_health *out)
{
    struct nbus *nb = (struct nbus *)b;
    out->connected = connected(nb) && __atomic_load_n(&nb->streams_ok, __ATOMIC_RELAXED);
    pthread_mutex_lock(&nb->acks);
    out->published = nb->published;
    out->duplicates = nb->duplicates;
    out->reconnects = nb->reconnects;
    if (!connected(nb))
        snprintf(out->message, sizeof out->message, "not connected to %s", nb->base.uri + 5);
    else if (!out->connected)
        snprintf(out->message, sizeof out->message, "streams not ready: %s", nb->last_error);
    pthread_mutex_unlock(&nb->acks);
    if (connected(nb) && !out->connected) {          /* try now: the check is what readiness sees */
        if (pthread_mutex_trylock(&nb->lock) == 0) { /* never wait behind a publish */
            if (ensure(nb, NULL) == 0) out->connected = true, out->message[0] = 0;
            pthread_mutex_unlock(&nb->lock);
        }
    }
}

static void nclose(struct ag_bus *b)
{
    struct nbus *nb = (struct nbus *)b;
    if (nb->js) jsCtx_Destroy(nb->js);
    if (nb->ack_sub) natsSubscription_Unsubscribe(nb->ack_sub);
    if (nb->nc) {
        natsConnection_Close(nb->nc);
        /* libnats may still run a callback on its own thread (a disconnect racing the
         * close): wait for ClosedCB, its last, before freeing what they use */
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until); /* `acked` waits on the monotonic clock */
        until.tv_sec += 5;
        pthread_mutex_lock(&nb->acks);
        while (!nb->closed || (nb->ack_sub && !nb->ack_sub_done))
            if (pthread_cond_timedwait(&nb->acked, &nb->acks, &until) == ETIMEDOUT) break;
        pthread_mutex_unlock(&nb->acks);
        natsSubscription_Destroy(nb->ack_sub);
        gc_burst(nb->ack_gc, &nb->nack_gc);
        natsConnection_Destroy(nb->nc);
    }
    natsOptions_Destroy(nb->nopts);
    ag_buf_free(&nb->body);
    ag_free(nb->ring);
    pthread_cond_destroy(&nb->acked);
    pthread_mutex_destroy(&nb->acks);
    pthread_mutex_destroy(&nb->lock);
    ag_free(nb);
}

static const struct ag_bus_ops nats_ops = {
    .name = "nats",
    .publish = npublish,
    .consumer_open = nconsumer_open,
    .fetch = nfetch,
    .ack = nack,
    .nak = nnak,
    .term = nterm,
    .delivery_free = ndelivery_free,
    .consumer_close = nconsumer_close,
    .dlq_read = ndlq_read,
    .health = nhealth,
    .close = nclose,
    .pipe_send = npipe_send,
    .pipe_acked = npipe_acked,
    .pipe_reset = npipe_reset,
};

static int connect_nats(struct nbus *nb, const char *url, struct ag_err *err)
{
    /* "nats://h1:p1,h2:p2": a server list (SetURL with a list never connected in
     * the background with libnats 3.4; SetServers does) */
    char list[600], *servers[8], *save = NULL;
    int n = 0;
    snprintf(list, sizeof list, "%s", url + 7);
    for (char *t = strtok_r(list, ",", &save); t && n < 8; t = strtok_r(NULL, ",", &save)) {
        if (strncmp(t, "nats://", 7) == 0) t += 7;
        servers[n] = ag_malloc(strlen(t) + 8);
        if (servers[n]) sprintf(servers[n++], "nats://%s", t);
    }
    natsStatus s = natsOptions_Create(&nb->nopts);
    if (s == NATS_OK) s = natsOptions_SetServers(nb->nopts, (const char **)servers, n);
    for (int i = 0; i < n; i++) ag_free(servers[i]);
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(nb->nopts, -1);
    if (s == NATS_OK) s = natsOptions_SetReconnectWait(nb->nopts, 250);
    if (s == NATS_OK) s = natsOptions_SetTimeout(nb->nopts, 2000);
    if (s == NATS_OK) s = natsOptions_SetRetryOnFailedConnect(nb->nopts, true, on_connected, nb);
    /* (with a callback, libnats connects in the background instead of blocking) */
    if (s == NATS_OK) s = natsOptions_SetReconnectedCB(nb->nopts, on_reconnected, nb);
    if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(nb->nopts, on_disconnected, nb);
    if (s == NATS_OK) s = natsOptions_SetClosedCB(nb->nopts, on_closed, nb);
    if (s == NATS_OK) s = natsOptions_SetName(nb->nopts, "agora");
    if (s != NATS_OK) return fail(err, AG_EINVAL, s, 0, url);
    s = natsConnection_Connect(&nb->nc, nb->nopts);
    if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) return fail(err, AG_ECONNECT, s, 0, url);
    if (s == NATS_NOT_YET_CONNECTED)
        AG_WARN("bus.connecting", AG_LS("uri", url), AG_LS("state", "broker down; retrying"));
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 3000;
    jo.PublishAsync.AckHandler = on_ack;
    jo.PublishAsync.AckHandlerClosure = nb;
    jo.PublishAsync.MaxPending = 8192;
    s = natsConnection_JetStream(&nb->js, nb->nc, &jo);
    return s == NATS_OK ? 0 : fail(err, AG_EINVAL, s, 0, "jetstream context");
}

int ag__bus_nats_open(const char *rest, const struct ag_bus_options *opts, struct ag_bus **out,
                      struct ag_err *err)
{
    if (strncmp(rest, "//", 2) != 0 || !rest[2])
        return ag_err_set(err, AG_EINVAL, "a NATS bus URI is nats://HOST:PORT, not 'nats:%.80s'",
                          rest);
    struct nbus *nb = ag_calloc(1, sizeof *nb);
    if (!nb) return ag_err_set(err, AG_ENOMEM, "out of memory");
    nb->base.ops = &nats_ops;
    nb->base.opts = *opts;
    snprintf(nb->base.uri, sizeof nb->base.uri, "nats:%s", rest);
    snprintf(nb->dlq, sizeof nb->dlq, "%.60s_DLQ", opts->stream);
    pthread_mutex_init(&nb->lock, NULL);
    pthread_mutex_init(&nb->acks, NULL);
    ag_cond_init_mono(&nb->acked);
    ag_buf_init(&nb->body);
    nb->pipe_want = SIZE_MAX;
    nb->ring = ag_calloc(AG_BUS_PIPE_WINDOW, sizeof *nb->ring);
    if (!nb->ring) {
        nclose(&nb->base);
        return ag_err_set(err, AG_ENOMEM, "out of memory");
    }
    char url[600];
    snprintf(url, sizeof url, "nats:%s", rest);
    nb->replicas = 1;
    char *q = strchr(url, '?');
    if (q) { /* nats://h1:p1,h2:p2?replicas=3 */
        *q++ = 0;
        if (strncmp(q, "replicas=", 9) != 0 || (nb->replicas = atoi(q + 9)) < 1 ||
            nb->replicas > 5) {
            nclose(&nb->base);
            return ag_err_set(err, AG_EINVAL, "nats bus URI: the only option is ?replicas=1..5");
        }
    }
    int rc = connect_nats(nb, url, err);
    if (rc) {
        nclose(&nb->base);
        return rc;
    }
    *out = &nb->base;
    return 0;
}
