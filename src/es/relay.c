/*
 * The outbox relay (include/agora/relay.h): one thread tails `$all` and publishes
 * the published language to the bus, checkpointing after the broker's acks.
 *
 * Invariant: `checkpoint` (durable, in `_relay-<name>`) never passes an event that
 * should be published and was not acknowledged. Pages go down the bus's pipe
 * (ag_bus_pipe_send) without waiting for the broker, each marked with the position
 * after it; the relay's position and checkpoint only follow the acknowledged
 * prefix the pipe reports (ag_bus_pipe_acked). A failed or lost publish resets the
 * pipe and publishes again from that prefix (the subscription is remade), and the
 * bus drops what the broker already had (dedup by event id), so a retry after an
 * ack that was lost publishes nothing twice.
 *
 * Latency: the thread sleeps in the store's wait_head (woken by the append), sends
 * at once, and never waits for an fsync: the checkpoint is written by a second
 * thread (the saver), which records the latest prefix it was given.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "agora/relay.h"

#define CHECKPOINT_MS 200 /* the checkpoint is written at most this often while busy */

struct ag_relay {
    struct ag_relay_config cfg;
    char stream[AG_STORE_STREAM_MAX + 1]; /* _relay-<name> */
    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t moved; /* position advanced, or stop asked (monotonic waits) */
    pthread_t saver;      /* writes the checkpoint, off the publish path */
    bool saver_started;
    pthread_cond_t save; /* save_want moved, or the saver is to finish */
    /* guarded by lock */
    bool stopping, saver_exit;
    uint64_t save_want; /* the acknowledged prefix to record (> checkpoint: to do) */
    uint64_t checkpoint, position, published, failures;
    uint64_t oldest_ns; /* commit time of the first unpublished event (0: none) */
    bool failing;
    char error[256];
};

static uint64_t load_checkpoint(struct ag_relay *r)
{
    struct ag_event_page pg;
    if (ag_store_read_stream(r->cfg.store, r->stream, strlen(r->stream), -1, AG_READ_BACKWARD, 1,
                             &pg, NULL))
        return 0;
    uint64_t next = 0;
    if (pg.count) {
        json_t *d = json_loadb(pg.events[0].data, pg.events[0].data_len, 0, NULL);
        next = (uint64_t)json_integer_value(json_object_get(d, "next"));
        json_decref(d);
    }
    ag_event_page_free(&pg);
    return next;
}

static int save_checkpoint(struct ag_relay *r, uint64_t next, struct ag_err *err)
{
    char data[64];
    snprintf(data, sizeof data, "{\"next\":%llu}", (unsigned long long)next);
    struct ag_event_data ev = {
        .type = "RelayCheckpoint", .type_len = 15, .data = data, .data_len = strlen(data)};
    return ag_store_append(r->cfg.store, r->stream, strlen(r->stream), AG_STORE_ANY, &ev, 1, NULL,
                           err);
}

static bool stopping(struct ag_relay *r)
{
    pthread_mutex_lock(&r->lock);
    bool s = r->stopping;
    pthread_mutex_unlock(&r->lock);
    return s;
}

/* The relay's own part of a message: id, time, traceparent (from the metadata). */
static void prefill(const struct ag_event *ev, struct ag_relay_msg *m)
{
    memset(m, 0, sizeof *m);
    ag_uuid_format(&ev->id, m->id);
    /* most events carry no trace context: parse the metadata only when it might */
    if (ev->metadata_len && memmem(ev->metadata, ev->metadata_len, "traceparent", 11)) {
        json_t *meta = json_loadb(ev->metadata, ev->metadata_len, 0, NULL);
        const char *tp = json_string_value(json_object_get(meta, "traceparent"));
        if (tp) snprintf(m->traceparent, sizeof m->traceparent, "%s", tp);
        json_decref(meta);
    }
    m->msg.time_ns = ev->time_ns;
}

static void link_msg(struct ag_relay_msg *m)
{
    m->msg.topic = m->topic;
    m->msg.id = m->id;
    m->msg.source = m->source;
    m->msg.type = m->type;
    m->msg.subject = m->subject[0] ? m->subject : NULL;
    m->msg.traceparent = m->traceparent[0] ? m->traceparent : NULL;
    m->msg.data = m->data;
    m->msg.data_len = m->data ? strlen(m->data) : 0;
}

/* Map the page's events and send those of the published language down the bus's
 * pipe, marked with `next` (the position after the page). */
static int publish_page(struct ag_relay *r, const struct ag_event_page *pg, uint64_t next,
                        struct ag_err *err)
{
    struct ag_relay_msg *rm = ag_calloc(pg->count ? pg->count : 1, sizeof *rm);
    struct ag_bus_msg *msgs = ag_calloc(pg->count ? pg->count : 1, sizeof *msgs);
    if (!rm || !msgs) {
        ag_free(rm);
        ag_free(msgs);
        return ag_err_set(err, AG_ENOMEM, "out of memory");
    }
    int rc = 0;
    size_t n = 0;
    for (size_t i = 0; !rc && i < pg->count; i++) {
        const struct ag_event *ev = &pg->events[i];
        if (ev->stream_len && ev->stream[0] == '_') continue;
        prefill(ev, &rm[n]);
        int m = r->cfg.map(r->cfg.ud, r->cfg.store, ev, &rm[n]);
        if (m < 0) {
            rc = ag_err_set(err, m, "mapping event %llu (%.*s): %s",
                            (unsigned long long)ev->position, (int)ev->type_len, ev->type,
                            ag_strerror(m));
        } else if (m > 0) {
            link_msg(&rm[n]);
            msgs[n] = rm[n].msg;
            n++;
        } else {
            ag_free(rm[n].data);
        }
    }
    if (!rc) rc = ag_bus_pipe_send(r->cfg.bus, msgs, n, next, r->cfg.publish_timeout_ms, err);
    for (size_t i = 0; i < n; i++) ag_free(rm[i].data);
    ag_free(rm);
    ag_free(msgs);
    return rc;
}

static void note(struct ag_relay *r, uint64_t next, size_t published, bool durable)
{
    pthread_mutex_lock(&r->lock);
    r->position = next;
    if (durable) r->checkpoint = next;
    r->published += published;
    r->oldest_ns = 0;
    if (r->failing) AG_INFO("relay.recovered", AG_LS("relay", r->cfg.name));
    r->failing = false;
    r->error[0] = 0;
    pthread_cond_broadcast(&r->moved);
    pthread_mutex_unlock(&r->lock);
}

/* The saver thread: records the latest acknowledged prefix it is given (a newer
 * one given meanwhile replaces it), so the relay never waits for the fsync. */
static void *saver_main(void *arg)
{
    struct ag_relay *r = arg;
    pthread_mutex_lock(&r->lock);
    for (;;) {
        if (r->save_want > r->checkpoint) {
            uint64_t want = r->save_want;
            pthread_mutex_unlock(&r->lock);
            struct ag_err err;
            int rc = save_checkpoint(r, want, &err);
            pthread_mutex_lock(&r->lock);
            if (!rc && want > r->checkpoint) r->checkpoint = want;
            if (!rc) continue;
            if (r->saver_exit) break; /* given up: a restart republishes more (dedup) */
            struct timespec ts;
            ag_deadline_mono_in_ms(&ts, 100);
            pthread_cond_timedwait(&r->save, &r->lock, &ts);
            continue;
        }
        if (r->saver_exit) break;
        pthread_cond_wait(&r->save, &r->lock);
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

static void save_async(struct ag_relay *r, uint64_t next)
{
    pthread_mutex_lock(&r->lock);
    if (next > r->save_want) r->save_want = next;
    pthread_cond_signal(&r->save);
    pthread_mutex_unlock(&r->lock);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void failed(struct ag_relay *r, const struct ag_err *err, uint64_t oldest_ns)
{
    pthread_mutex_lock(&r->lock);
    if (!r->failing)
        AG_WARN("relay.retrying", AG_LS("relay", r->cfg.name), AG_LS("error", err->msg));
    r->failing = true;
    r->failures++;
    r->oldest_ns = oldest_ns;
    snprintf(r->error, sizeof r->error, "%.250s", err->msg);
    pthread_mutex_unlock(&r->lock);
}

/* Wait `ms` unless stopping; false when stopping. */
static bool pause_ms(struct ag_relay *r, uint64_t ms)
{
    struct timespec ts;
    ag_deadline_mono_in_ms(&ts, (long)ms);
    pthread_mutex_lock(&r->lock);
    while (!r->stopping && pthread_cond_timedwait(&r->moved, &r->lock, &ts) == 0) {
    }
    bool go = !r->stopping;
    pthread_mutex_unlock(&r->lock);
    return go;
}

/* The relay thread's own state. */
struct loop {
    struct ag_store_sub *sub;
    uint64_t from;     /* where `sub` reads from (after a failure: `acked`) */
    uint64_t acked;    /* the acknowledged prefix: everything below is handled */
    uint64_t seen;     /* the pipe's `acked` count already added to `published` */
    uint64_t unsaved;  /* messages acknowledged since the last checkpoint */
    uint64_t saved_at; /* when the last checkpoint was written (monotonic ms) */
};

/* Take what the broker acknowledged: the position moves; the checkpoint is written
 * at most every CHECKPOINT_MS while busy (and when idle): a crash republishes at
 * most that much, which the broker's dedup window drops. */
static void advance(struct ag_relay *r, struct loop *l, const struct ag_bus_pipe_stat *ps,
                    bool idle)
{
    uint64_t delta = ps->acked - l->seen;
    l->seen = ps->acked;
    l->unsaved += delta;
    if (ps->marked && ps->mark > l->acked) {
        l->acked = ps->mark;
        note(r, l->acked, delta, false);
    } else if (delta) {
        note(r, l->acked, delta, false);
    }
    if (l->unsaved && (idle || mono_ms() - l->saved_at >= CHECKPOINT_MS)) {
        save_async(r, l->acked);
        l->unsaved = 0;
        l->saved_at = mono_ms();
    }
}

/* One step: the acks so far, then the next page into the pipe; when nothing is
 * new, wait for the acks in flight or (with none) for the next event. */
static int step(struct ag_relay *r, struct loop *l, struct ag_err *err)
{
    struct ag_bus_pipe_stat ps;
    int lost = r->cfg.publish_timeout_ms;
    int rc = ag_bus_pipe_acked(r->cfg.bus, 0, lost, &ps, err);
    if (rc) return rc;
    advance(r, l, &ps, false);
    struct ag_event_page pg;
    rc = ag_store_sub_next(l->sub, r->cfg.batch, ps.inflight ? 0 : 100, &pg, err);
    if (rc == AG_ETIMEDOUT) { /* nothing new: the acks, or the idle checkpoint */
        ag_err_clear(err);
        rc = ps.inflight ? ag_bus_pipe_acked(r->cfg.bus, 100, lost, &ps, err) : 0;
        if (!rc) advance(r, l, &ps, ps.inflight == 0);
        return rc;
    }
    if (rc) return rc;
    rc = publish_page(r, &pg, ag_store_sub_checkpoint(l->sub), err);
    ag_event_page_free(&pg);
    return rc;
}

static void *relay_main(void *arg)
{
    struct ag_relay *r = arg;
    struct ag_err err;
    struct loop l = {.from = r->checkpoint, .acked = r->checkpoint};
    uint64_t backoff = 0;
    while (!stopping(r)) {
        ag_err_clear(&err);
        int rc = l.sub ? 0 : ag_store_subscribe(r->cfg.store, NULL, 0, l.from, &l.sub, &err);
        if (!rc) rc = step(r, &l, &err);
        if (rc == AG_ECLOSED) break;
        if (!rc) {
            backoff = 0;
            continue;
        }
        /* publish again from the acknowledged prefix (the broker drops what it had) */
        failed(r, &err, 0);
        ag_bus_pipe_reset(r->cfg.bus);
        l.seen = 0;
        ag_store_sub_free(l.sub);
        l.sub = NULL;
        l.from = l.acked;
        backoff = backoff ? (backoff * 2 > 5000 ? 5000 : backoff * 2) : 100;
        if (!pause_ms(r, backoff)) break;
    }
    struct ag_bus_pipe_stat ps; /* stopping: what is in flight, then the checkpoint */
    if (ag_bus_pipe_acked(r->cfg.bus, r->cfg.publish_timeout_ms, 0, &ps, &err) == 0)
        advance(r, &l, &ps, true);
    ag_bus_pipe_reset(r->cfg.bus);
    ag_store_sub_free(l.sub);
    return NULL;
}

int ag_relay_start(const struct ag_relay_config *cfg, struct ag_relay **out, struct ag_err *err)
{
    if (!cfg->store || !cfg->bus || !cfg->map)
        return ag_err_set(err, AG_EINVAL, "a relay needs a store, a bus and a mapping");
    struct ag_relay *r = ag_calloc(1, sizeof *r);
    if (!r) return ag_err_set(err, AG_ENOMEM, "out of memory");
    r->cfg = *cfg;
    if (!r->cfg.name) r->cfg.name = "outbox";
    if (!r->cfg.batch) r->cfg.batch = 4096;
    if (!r->cfg.publish_timeout_ms) r->cfg.publish_timeout_ms = 5000;
    snprintf(r->stream, sizeof r->stream, "_relay-%s", r->cfg.name);
    pthread_mutex_init(&r->lock, NULL);
    ag_cond_init_mono(&r->moved);
    ag_cond_init_mono(&r->save);
    r->checkpoint = r->position = r->save_want = load_checkpoint(r);
    r->saver_started = pthread_create(&r->saver, NULL, saver_main, r) == 0;
    if (!r->saver_started || pthread_create(&r->thread, NULL, relay_main, r) != 0) {
        ag_relay_stop(r);
        return ag_err_set(err, AG_ENOMEM, "cannot start the relay thread");
    }
    r->started = true;
    *out = r;
    return 0;
}

void ag_relay_stats(struct ag_relay *r, struct ag_relay_stats *out)
{
    struct ag_store_stats st;
    ag_store_stats(r->cfg.store, &st);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t now_ns = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
    pthread_mutex_lock(&r->lock);
    *out = (struct ag_relay_stats){.checkpoint = r->checkpoint,
                                   .position = r->position,
                                   .head = st.events,
                                   .published = r->published,
                                   .failures = r->failures,
                                   .failing = r->failing};
    out->lag_events = st.events > r->position ? st.events - r->position : 0;
    uint64_t oldest = r->oldest_ns;
    snprintf(out->error, sizeof out->error, "%s", r->error);
    pthread_mutex_unlock(&r->lock);
    struct ag_event_page pg; /* the first event not handled yet: its age */
    if (!oldest && out->lag_events &&
        ag_store_read_all(r->cfg.store, out->position, AG_READ_FORWARD, 1, &pg, NULL) == 0) {
        if (pg.count) oldest = pg.events[0].time_ns;
        ag_event_page_free(&pg);
    }
    if (oldest && now_ns > oldest) out->lag_seconds = (double)(now_ns - oldest) / 1e9;
}

int ag_relay_wait(struct ag_relay *r, uint64_t position, int timeout_ms)
{
    struct timespec ts;
    ag_deadline_mono_in_ms(&ts, timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&r->lock);
    while (r->position < position && rc == 0)
        if (pthread_cond_timedwait(&r->moved, &r->lock, &ts) != 0) rc = AG_ETIMEDOUT;
    pthread_mutex_unlock(&r->lock);
    return rc;
}

void ag_relay_stop(struct ag_relay *r)
{
    if (!r) return;
    pthread_mutex_lock(&r->lock);
    r->stopping = true;
    pthread_cond_broadcast(&r->moved);
    pthread_mutex_unlock(&r->lock);
    if (r->started) pthread_join(r->thread, NULL); /* its last word: save_want */
    pthread_mutex_lock(&r->lock);
    r->saver_exit = true; /* the saver records what is left, then ends */
    pthread_cond_signal(&r->save);
    pthread_mutex_unlock(&r->lock);
    if (r->saver_started) pthread_join(r->saver, NULL);
    pthread_cond_destroy(&r->save);
    pthread_cond_destroy(&r->moved);
    pthread_mutex_destroy(&r->lock);
    ag_free(r);
}
