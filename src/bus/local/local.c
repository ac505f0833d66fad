/*
 * The in-process bus (`local:`), durable through the event store.
 *
 * Streams it keeps in the store (the store's durability is the bus's):
 *   _bus-messages          every published message, in publish order: event type =
 *                          the bus subject, data = the CloudEvent JSON, event id =
 *                          a UUID derived from the CloudEvent id (the original
 *                          event keeps its own id: ids stay unique in the store).
 *                          A message's sequence is its stream version + 1.
 *   _bus-consumer-<name>   the consumer's ack floor: ConsumerCheckpoint {"next":
 *                          version}, appended when the floor moved, at most once
 *                          per fetch (acks not yet recorded are redelivered after a
 *                          restart: at-least-once, like any broker).
 *   _bus-dlq               DeadLettered {the dead-letter record}.
 *
 * Dedup: every message id is kept in an in-memory set (filled from
 * _bus-messages at open), so the dedup window is the whole stream.
 *
 * A consumer keeps a window of slots for the versions [floor, floor + WINDOW):
 * delivery count, state (fresh, in flight until an ack-wait deadline, waiting
 * after a nak until a due time, done) and the last error. The floor advances over
 * done slots. Times come from the injected clock (monotonic), so backoff and ack
 * waits are tested without sleeping; a fetch with a timeout waits on a condition
 * variable signalled by publishes, in real time.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "agora/store.h"
#include "bus/internal.h"

#define MSGS   "_bus-messages"
#define DLQ    "_bus-dlq"
#define WINDOW 4096
#define PAGE   512

enum slot_state { FRESH, IN_FLIGHT, WAITING, DONE };

struct slot {
    uint8_t state;       /* enum slot_state */
    uint32_t deliveries; /* so far */
    uint64_t due_ns;     /* IN_FLIGHT: ack-wait deadline; WAITING: redeliver at (mono) */
    char *error;         /* last error from a nak, or NULL */
};

struct lbus {
    struct ag_bus base;
    struct ag_store *store;
    pthread_mutex_t lock;
    pthread_cond_t published_cv; /* a publish stored something (monotonic waits) */
    struct ag_uuid *ids;         /* open-addressing set of message ids (store ids) */
    size_t cap, count;
    uint64_t published, duplicates;
};

struct lconsumer {
    struct ag_bus_consumer base;
    struct lbus *lb;
    pthread_mutex_t lock;
    int64_t floor;     /* version of the first message not done */
    int64_t persisted; /* the floor as last recorded in the checkpoint stream */
    size_t inflight;   /* slots IN_FLIGHT */
    struct slot win[WINDOW];
    char stream[AG_BUS_CONSUMER_MAX + 32];
};

struct ldelivery {
    struct ag_bus_delivery d;
    int64_t version;
    void *mem;  /* the parsed CloudEvent's strings */
    char *body; /* the CloudEvent JSON */
};

static uint64_t mono(const struct lbus *lb)
{
    return ag_clock_mono(lb->base.opts.clock);
}

/* ---- dedup set ---- */

static void msg_uuid(const char *id, struct ag_uuid *out)
{
    uint64_t a = ag_xxh3_seed(id, strlen(id), 0x627573), b = ag_xxh3_seed(id, strlen(id), 0x6d7367);
    memcpy(out->b, &a, 8);
    memcpy(out->b + 8, &b, 8);
    out->b[6] = (uint8_t)((out->b[6] & 0x0f) | 0x80); /* version 8: custom */
    out->b[8] = (uint8_t)((out->b[8] & 0x3f) | 0x80);
}

static bool is_zero(const struct ag_uuid *u)
{
    static const struct ag_uuid z;
    return memcmp(u, &z, sizeof z) == 0;
}

/* true if present; else inserts it when `add`. */
static bool set_has(struct lbus *lb, const struct ag_uuid *id, bool add)
{
    if (lb->count * 2 >= lb->cap) {
        size_t ncap = lb->cap ? lb->cap * 2 : 1024;
        struct ag_uuid *n = ag_calloc(ncap, sizeof *n), *old = lb->ids;
        if (!n) return false;
        for (size_t i = 0; i < lb->cap; i++) {
            if (is_zero(&old[i])) continue;
            uint64_t h;
            memcpy(&h, old[i].b, 8);
            size_t j = h & (ncap - 1);
            while (!is_zero(&n[j])) j = (j + 1) & (ncap - 1);
            n[j] = old[i];
        }
        ag_free(old);
        lb->ids = n;
        lb->cap = ncap;
    }
    uint64_t h;
    memcpy(&h, id->b, 8);
    for (size_t j = h & (lb->cap - 1);; j = (j + 1) & (lb->cap - 1)) {
        if (is_zero(&lb->ids[j])) {
            if (add) lb->ids[j] = *id, lb->count++;
            return false;
        }
        if (memcmp(&lb->ids[j], id, sizeof *id) == 0) return true;
    }
}

static int load_ids(struct lbus *lb, struct ag_err *err)
{
    for (int64_t from = 0;;) {
        struct ag_event_page pg;
        int rc = ag_store_read_stream(lb->store, MSGS, strlen(MSGS), from, AG_READ_FORWARD, 4096,
                                      &pg, err);
        if (rc == AG_ENOTFOUND) return 0;
        if (rc) return rc;
        for (size_t i = 0; i < pg.count; i++) set_has(lb, &pg.events[i].id, true);
        bool end = pg.end || pg.count == 0;
        from = pg.next_version;
        ag_event_page_free(&pg);
        if (end) return 0;
    }
}

/* ---- publish ---- */

static int lpublish(struct ag_bus *b, const struct ag_bus_msg *msgs, size_t n, int timeout_ms,
                    struct ag_err *err)
{
    AG_UNUSED(timeout_ms);
    struct lbus *lb = (struct lbus *)b;
    struct ag_event_data *ev = ag_calloc(n, sizeof *ev);
    struct ag_buf *bodies = ag_calloc(n, sizeof *bodies);
    if (!ev || !bodies) {
        ag_free(ev);
        ag_free(bodies);
        return ag_err_set(err, AG_ENOMEM, "out of memory");
    }
    int rc = 0;
    size_t k = 0;
    pthread_mutex_lock(&lb->lock);
    for (size_t i = 0; i < n && !rc; i++) {
        struct ag_uuid id;
        msg_uuid(msgs[i].id, &id);
        bool dup = set_has(lb, &id, false);
        for (size_t j = 0; j < k && !dup; j++) dup = memcmp(&ev[j].id, &id, sizeof id) == 0;
        if (dup) {
            lb->duplicates++;
            continue;
        }
        ag_buf_init(&bodies[k]);
        if (ag_bus_cloudevent_json(&msgs[i], &bodies[k])) {
            rc = ag_err_set(err, AG_ENOMEM, "out of memory");
            break;
        }
        ev[k] = (struct ag_event_data){.id = id,
                                       .type = msgs[i].topic,
                                       .type_len = strlen(msgs[i].topic),
                                       .data = bodies[k].data,
                                       .data_len = bodies[k].len};
        k++;
    }
    if (!rc && k)
        rc = ag_store_append(lb->store, MSGS, strlen(MSGS), AG_STORE_ANY, ev, k, NULL, err);
    if (!rc) {
        for (size_t j = 0; j < k; j++) set_has(lb, &ev[j].id, true);
        lb->published += n;
        if (k) pthread_cond_broadcast(&lb->published_cv);
    }
    pthread_mutex_unlock(&lb->lock);
    for (size_t j = 0; j < k; j++) ag_buf_free(&bodies[j]);
    ag_free(bodies);
    ag_free(ev);
    return rc;
}

/* ---- consumers ---- */

static int record_floor(struct lconsumer *c, struct ag_err *err)
{
    if (c->floor == c->persisted) return 0;
    char data[64];
    snprintf(data, sizeof data, "{\"next\":%lld}", (long long)c->floor);
    struct ag_event_data ev = {
        .type = "ConsumerCheckpoint", .type_len = 18, .data = data, .data_len = strlen(data)};
    int rc = ag_store_append(c->lb->store, c->stream, strlen(c->stream), AG_STORE_ANY, &ev, 1, NULL,
                             err);
    if (!rc) c->persisted = c->floor;
    return rc;
}

static int64_t load_floor(struct lbus *lb, const char *stream)
{
    struct ag_event_page pg;
    if (ag_store_read_stream(lb->store, stream, strlen(stream), -1, AG_READ_BACKWARD, 1, &pg, NULL))
        return 0;
    int64_t next = 0;
    if (pg.count) {
        json_t *d = json_loadb(pg.events[0].data, pg.events[0].data_len, 0, NULL);
        next = json_integer_value(json_object_get(d, "next"));
        json_decref(d);
    }
    ag_event_page_free(&pg);
    return next;
}

static int lconsumer_open(struct ag_bus *b, const struct ag_bus_consumer_config *cfg,
                          struct ag_bus_consumer **out, struct ag_err *err)
{
    struct lbus *lb = (struct lbus *)b;
    struct lconsumer *c = ag_calloc(1, sizeof *c);
    if (!c) return ag_err_set(err, AG_ENOMEM, "out of memory");
    c->lb = lb;
    snprintf(c->stream, sizeof c->stream, "_bus-consumer-%s", cfg->name);
    c->floor = c->persisted = load_floor(lb, c->stream);
    pthread_mutex_init(&c->lock, NULL);
    *out = &c->base;
    return 0;
}

static void advance(struct lconsumer *c)
{
    size_t k = 0;
    while (k < WINDOW && c->win[k].state == DONE) ag_free(c->win[k].error), k++;
    if (!k) return;
    memmove(c->win, c->win + k, (WINDOW - k) * sizeof c->win[0]);
    memset(c->win + WINDOW - k, 0, k * sizeof c->win[0]);
    c->floor += (int64_t)k;
}

static struct slot *slot_of(struct lconsumer *c, int64_t version)
{
    return version >= c->floor && version < c->floor + WINDOW ? &c->win[version - c->floor] : NULL;
}

static void set_done(struct lconsumer *c, struct slot *s)
{
    if (s->state == IN_FLIGHT && c->inflight) c->inflight--;
    s->state = DONE;
}

static int dead_letter(struct lconsumer *c, const struct ag_bus_delivery *d,
                       enum ag_bus_dl_reason why, const char *error, struct ag_err *err)
{
    struct ag_bus_dead_letter dl = {c->base.name, d, why, error,
                                    ag_clock_now(c->lb->base.opts.clock)};
    struct ag_buf b;
    ag_buf_init(&b);
    int rc = ag_bus_dead_letter_json(&dl, &b) ? ag_err_set(err, AG_ENOMEM, "out of memory") : 0;
    struct ag_event_data ev = {
        .type = "DeadLettered", .type_len = 12, .data = b.data, .data_len = b.len};
    if (!rc) rc = ag_store_append(c->lb->store, DLQ, strlen(DLQ), AG_STORE_ANY, &ev, 1, NULL, err);
    if (!rc)
        AG_WARN("bus.dead_lettered", AG_LS("consumer", c->base.name), AG_LS("id", d->msg.id),
                AG_LS("topic", d->msg.topic), AG_LU("deliveries", d->deliveries),
                AG_LS("error", error));
    ag_buf_free(&b);
    return rc;
}

static struct ldelivery *make_delivery(const struct ag_event *ev, uint32_t deliveries,
                                       uint32_t max_deliver)
{
    struct ldelivery *ld = ag_calloc(1, sizeof *ld);
    if (!ld || !(ld->body = ag_malloc(ev->data_len + 1))) return ag_free(ld), NULL;
    memcpy(ld->body, ev->data, ev->data_len);
    ld->body[ev->data_len] = 0;
    char topic[AG_BUS_SUBJECT_MAX + 1];
    snprintf(topic, sizeof topic, "%.*s", (int)ev->type_len, ev->type);
    if (ag_bus_cloudevent_parse(ld->body, ev->data_len, topic, &ld->d, &ld->mem, NULL)) {
        ag_free(ld->body);
        ag_free(ld);
        return NULL;
    }
    ld->version = ev->version;
    ld->d.deliveries = deliveries;
    ld->d.seq = (uint64_t)ev->version + 1;
    ld->d.last = deliveries >= max_deliver;
    ld->d.impl = ld;
    return ld;
}

/* An ack wait ran out: a failed delivery. Dead-letters at the last one. */
static bool expired(struct lconsumer *c, struct slot *s, const struct ag_event *ev)
{
    if (s->deliveries < c->base.cfg.max_deliver) return false;
    struct ldelivery *ld = make_delivery(ev, s->deliveries, c->base.cfg.max_deliver);
    if (ld) {
        const char *why = s->error ? s->error : "ack wait expired";
        dead_letter(c, &ld->d, AG_BUS_DL_MAX_DELIVER, why, NULL);
        c->base.bus->ops->delivery_free(&ld->d);
    }
    set_done(c, s);
    return true;
}

/* One pass over the window: deliver what is due. `*next_due` gets the earliest
 * time something else becomes due (UINT64_MAX: nothing pending). */
static int scan(struct lconsumer *c, size_t max, struct ag_bus_delivery **out, size_t *n,
                uint64_t *next_due, struct ag_err *err)
{
    uint64_t now = mono(c->lb);
    *next_due = UINT64_MAX;
    int64_t from = c->floor;
    while (*n < max && from < c->floor + WINDOW && c->inflight < c->base.cfg.max_pending) {
        struct ag_event_page pg;
        int rc = ag_store_read_stream(c->lb->store, MSGS, strlen(MSGS), from, AG_READ_FORWARD, PAGE,
                                      &pg, err);
        if (rc == AG_ENOTFOUND) return 0;
        if (rc) return rc;
        for (size_t i = 0; i < pg.count && *n < max; i++) {
            const struct ag_event *ev = &pg.events[i];
            struct slot *s = slot_of(c, ev->version);
            if (!s || s->state == DONE) continue;
            char topic[AG_BUS_SUBJECT_MAX + 1];
            snprintf(topic, sizeof topic, "%.*s", (int)ev->type_len, ev->type);
            if (!ag_bus_subject_match(c->base.filter, topic)) {
                set_done(c, s);
                continue;
            }
            if (s->state != FRESH && s->due_ns > now) {
                if (s->due_ns < *next_due) *next_due = s->due_ns;
                continue;
            }
            if (s->state == IN_FLIGHT && expired(c, s, ev)) continue;
            if (s->state != IN_FLIGHT && c->inflight >= c->base.cfg.max_pending) break;
            struct ldelivery *ld = make_delivery(ev, s->deliveries + 1, c->base.cfg.max_deliver);
            if (!ld) { /* not a CloudEvent: poison, never deliverable */
                set_done(c, s);
                continue;
            }
            if (s->state != IN_FLIGHT) c->inflight++;
            s->deliveries++;
            s->state = IN_FLIGHT;
            s->due_ns = now + c->base.cfg.ack_wait_ms * 1000000ull;
            out[(*n)++] = &ld->d;
        }
        bool end = pg.end || pg.count == 0;
        from = pg.next_version;
        ag_event_page_free(&pg);
        if (end) break;
    }
    advance(c);
    return 0;
}

static int lfetch(struct ag_bus_consumer *bc, size_t max, int timeout_ms,
                  struct ag_bus_delivery **out, size_t *n, struct ag_err *err)
{
    struct lconsumer *c = (struct lconsumer *)bc;
    struct lbus *lb = c->lb;
    struct timespec deadline;
    ag_deadline_mono_in_ms(&deadline, timeout_ms > 0 ? timeout_ms : 0);
    pthread_mutex_lock(&c->lock);
    int rc = record_floor(c, err);
    for (;;) {
        uint64_t next_due;
        if (rc || (rc = scan(c, max, out, n, &next_due, err)) || *n || timeout_ms <= 0) break;
        struct timespec now, until = deadline;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > deadline.tv_sec ||
            (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec))
            break;
        if (next_due != UINT64_MAX) { /* wake when the next redelivery is due */
            uint64_t in = next_due - mono(lb);
            uint64_t at = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec + in;
            if (next_due > mono(lb) &&
                at < (uint64_t)deadline.tv_sec * 1000000000ull + (uint64_t)deadline.tv_nsec)
                until = (struct timespec){(time_t)(at / 1000000000ull), (long)(at % 1000000000ull)};
        }
        pthread_mutex_unlock(&c->lock);
        pthread_mutex_lock(&lb->lock);
        pthread_cond_timedwait(&lb->published_cv, &lb->lock, &until);
        pthread_mutex_unlock(&lb->lock);
        pthread_mutex_lock(&c->lock);
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

static int lack(struct ag_bus_consumer *bc, struct ag_bus_delivery *d, struct ag_err *err)
{
    AG_UNUSED(err);
    struct lconsumer *c = (struct lconsumer *)bc;
    pthread_mutex_lock(&c->lock);
    struct slot *s = slot_of(c, ((struct ldelivery *)d->impl)->version);
    if (s) set_done(c, s);
    advance(c);
    pthread_mutex_unlock(&c->lock);
    return 0;
}

static int finish(struct lconsumer *c, struct ag_bus_delivery *d, enum ag_bus_dl_reason why,
                  const char *error, struct ag_err *err)
{
    struct slot *s = slot_of(c, ((struct ldelivery *)d->impl)->version);
    if (!s || s->state == DONE) return 0; /* answered already */
    int rc = dead_letter(c, d, why, error, err);
    if (!rc) set_done(c, s);
    advance(c);
    return rc;
}

static int lnak(struct ag_bus_consumer *bc, struct ag_bus_delivery *d, int64_t delay_ms,
                const char *error, struct ag_err *err)
{
    struct lconsumer *c = (struct lconsumer *)bc;
    pthread_mutex_lock(&c->lock);
    int rc = 0;
    struct slot *s = slot_of(c, ((struct ldelivery *)d->impl)->version);
    if (d->deliveries >= c->base.cfg.max_deliver) {
        rc = finish(c, d, AG_BUS_DL_MAX_DELIVER, error, err);
    } else if (s && s->state == IN_FLIGHT) {
        c->inflight--;
        s->state = WAITING;
        s->due_ns = mono(c->lb) + (uint64_t)delay_ms * 1000000ull;
        ag_free(s->error);
        s->error = ag_malloc(strlen(error) + 1);
        if (s->error) strcpy(s->error, error);
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

static int lterm(struct ag_bus_consumer *bc, struct ag_bus_delivery *d, const char *error,
                 struct ag_err *err)
{
    struct lconsumer *c = (struct lconsumer *)bc;
    pthread_mutex_lock(&c->lock);
    int rc = finish(c, d, AG_BUS_DL_TERMINATED, error, err);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

static void ldelivery_free(struct ag_bus_delivery *d)
{
    struct ldelivery *ld = d->impl;
    ag_free(ld->mem);
    ag_free(ld->body);
    ag_free(ld);
}

static void lconsumer_close(struct ag_bus_consumer *bc)
{
    struct lconsumer *c = (struct lconsumer *)bc;
    record_floor(c, NULL);
    for (size_t i = 0; i < WINDOW; i++) ag_free(c->win[i].error);
    pthread_mutex_destroy(&c->lock);
    ag_free(c);
}

/* ---- the rest ---- */

static int ldlq_read(struct ag_bus *b, uint64_t from, size_t max, struct ag_buf *out,
                     uint64_t *next, struct ag_err *err)
{
    struct lbus *lb = (struct lbus *)b;
    struct ag_event_page pg;
    *next = from;
    int rc = ag_store_read_stream(lb->store, DLQ, strlen(DLQ), (int64_t)from - 1, AG_READ_FORWARD,
                                  max, &pg, err);
    ag_buf_putc(out, '[');
    for (size_t i = 0; !rc && i < pg.count; i++) {
        if (i) ag_buf_putc(out, ',');
        ag_buf_append(out, pg.events[i].data, pg.events[i].data_len);
        *next = (uint64_t)pg.events[i].version + 2;
    }
    if (!rc) ag_event_page_free(&pg);
    return ag_buf_putc(out, ']') ? AG_ENOMEM : rc == AG_ENOTFOUND ? 0 : rc;
}

static void lhealth(struct ag_bus *b, struct ag_bus_health *out)
{
    struct lbus *lb = (struct lbus *)b;
    struct ag_store_health h;
    ag_store_health(lb->store, &h);
    out->connected = h.writable;
    if (!h.writable) snprintf(out->message, sizeof out->message, "the store: %.200s", h.message);
    pthread_mutex_lock(&lb->lock);
    out->published = lb->published;
    out->duplicates = lb->duplicates;
    pthread_mutex_unlock(&lb->lock);
}

static void lclose(struct ag_bus *b)
{
    struct lbus *lb = (struct lbus *)b;
    pthread_cond_destroy(&lb->published_cv);
    pthread_mutex_destroy(&lb->lock);
    ag_free(lb->ids);
    ag_free(lb);
}

static const struct ag_bus_ops local_ops = {
    .name = "local",
    .publish = lpublish,
    .consumer_open = lconsumer_open,
    .fetch = lfetch,
    .ack = lack,
    .nak = lnak,
    .term = lterm,
    .delivery_free = ldelivery_free,
    .consumer_close = lconsumer_close,
    .dlq_read = ldlq_read,
    .health = lhealth,
    .close = lclose,
};

int ag__bus_local_open(const char *rest, const struct ag_bus_options *opts, struct ag_bus **out,
                       struct ag_err *err)
{
    if (*rest) return ag_err_set(err, AG_EINVAL, "the local bus takes no address ('local:')");
    if (!opts->store) return ag_err_set(err, AG_EINVAL, "the local bus needs the event store");
    struct lbus *lb = ag_calloc(1, sizeof *lb);
    if (!lb) return ag_err_set(err, AG_ENOMEM, "out of memory");
    lb->base.ops = &local_ops;
    lb->base.opts = *opts;
    lb->store = opts->store;
    pthread_mutex_init(&lb->lock, NULL);
    ag_cond_init_mono(&lb->published_cv);
    int rc = load_ids(lb, err);
    if (rc) {
        lclose(&lb->base);
        return rc;
    }
    *out = &lb->base;
    return 0;
}
