/*
 * The outbox relay (include/agora/relay.h): one thread tails `$all` and publishes
 * the published language to the bus, checkpointing after the broker's acks.
 *
 * Invariant: `checkpoint` (durable, in `_relay-<name>`) never passes an event that
 * should be published and was not acknowledged. Every page is published whole or
 * retried whole from the page's first position (the subscription is remade), and
 * the bus drops what the broker already had (dedup by event id), so a retry after
 * an ack that was lost publishes nothing twice.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "agora/es.h"
#include "agora/relay.h"

#define CHECKPOINT_MS 200 /* the checkpoint is written at most this often while busy */

struct ag_relay {
    struct ag_relay_config cfg;
    char stream[AG_STORE_STREAM_MAX + 1]; /* _relay-<name> */
    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t moved; /* position advanced, or stop asked (monotonic waits) */
    /* guarded by lock */
    bool stopping;
    uint64_t checkpoint, position, published, failures;
    struct ag_store_cursor start; /* where the thread starts (its checkpoint per shard) */
    uint64_t oldest_ns;           /* commit time of the first unpublished event (0: none) */
    bool failing;
    bool standby; /* cfg.lease not held */
    char error[256];
};

/* {"next":N} (one shard), or with "cursor":"n0,n1,..." on a sharded store
 * ("next" is then the cursor's sum). */
static uint64_t load_checkpoint(struct ag_relay *r)
{
    ag_store_cursor_init(r->cfg.store, &r->start);
    struct ag_event_page pg;
    if (ag_store_read_stream(r->cfg.store, r->stream, strlen(r->stream), -1, AG_READ_BACKWARD, 1,
                             &pg, NULL))
        return 0;
    uint64_t next = 0;
    if (pg.count) {
        json_t *d = json_loadb(pg.events[0].data, pg.events[0].data_len, 0, NULL);
        next = (uint64_t)json_integer_value(json_object_get(d, "next"));
        const char *cur = json_string_value(json_object_get(d, "cursor"));
        struct ag_store_cursor c;
        if (cur && ag_store_cursor_parse(cur, &c) == 0)
            for (uint32_t k = 0; k < c.n && k < r->start.n; k++) r->start.next[k] = c.next[k];
        else
            r->start.next[0] = next;
        json_decref(d);
    }
    ag_event_page_free(&pg);
    return next;
}

static int save_checkpoint(struct ag_relay *r, const struct ag_store_cursor *next,
                           struct ag_err *err)
{
    char data[64 + 24 * AG_STORE_SHARDS_MAX], cur[24 * AG_STORE_SHARDS_MAX];
    ag_store_cursor_format(next, cur, sizeof cur);
    if (next->n > 1)
        snprintf(data, sizeof data, "{\"next\":%llu,\"cursor\":\"%s\"}",
                 (unsigned long long)ag_store_cursor_sum(next), cur);
    else
        snprintf(data, sizeof data, "{\"next\":%llu}", (unsigned long long)next->next[0]);
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

/* The relay's own part of a message: id, time, traceparent (from the metadata,
 * the next event's when it stores a marker for it: es/meta.c, looked up in `pg`). */
static void prefill(struct ag_relay *r, const struct ag_event_page *pg, const struct ag_event *ev,
                    struct ag_relay_msg *m)
{
    memset(m, 0, sizeof *m);
    ag_uuid_format(&ev->id, m->id);
    json_t *meta =
        ag_es_meta_is_next(ev)
            ? ag_es_event_meta(r->cfg.store, ev, ev + 1, pg->count - (size_t)(ev + 1 - pg->events))
            : json_loadb(ev->metadata, ev->metadata_len, 0, NULL);
    const char *tp = json_string_value(json_object_get(meta, "traceparent"));
    if (tp) snprintf(m->traceparent, sizeof m->traceparent, "%s", tp);
    json_decref(meta);
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

/* Map the page's events and publish those of the published language. */
static int publish_page(struct ag_relay *r, const struct ag_event_page *pg, size_t *npub,
                        struct ag_err *err)
{
    struct ag_relay_msg *rm = ag_calloc(pg->count ? pg->count : 1, sizeof *rm);
    struct ag_bus_msg *msgs = ag_calloc(pg->count ? pg->count : 1, sizeof *msgs);
    *npub = 0;
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
        prefill(r, pg, ev, &rm[n]);
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
    if (!rc && n) rc = ag_bus_publish(r->cfg.bus, msgs, n, r->cfg.publish_timeout_ms, err);
    for (size_t i = 0; i < n; i++) ag_free(rm[i].data);
    ag_free(rm);
    ag_free(msgs);
    *npub = n;
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

static void note_saved(struct ag_relay *r, uint64_t checkpoint)
{
    pthread_mutex_lock(&r->lock);
    r->checkpoint = checkpoint;
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

static void set_standby(struct ag_relay *r, bool standby)
{
    pthread_mutex_lock(&r->lock);
    if (r->standby != standby)
        AG_INFO(standby ? "relay.standby" : "relay.lease_taken", AG_LS("relay", r->cfg.name));
    r->standby = standby;
    pthread_mutex_unlock(&r->lock);
}

/* cfg.lease: true when the relay may publish now. Taken anew: *from and *acked
 * start again from the checkpoint in the store (the subscription is remade). */
static bool leased(struct ag_relay *r, struct ag_store_sub **sub, struct ag_store_cursor *from,
                   struct ag_store_cursor *acked, uint64_t *unsaved)
{
    if (!r->cfg.lease) return true;
    bool held = false, taken = false;
    if (r->cfg.lease(r->cfg.lease_ud, &held, &taken) || !held) {
        ag_store_sub_free(*sub);
        *sub = NULL;
        *unsaved = 0; /* the next holder publishes them again; the broker drops twins */
        set_standby(r, true);
        return false;
    }
    pthread_mutex_lock(&r->lock);
    bool was_standby = r->standby;
    pthread_mutex_unlock(&r->lock);
    if (taken || was_standby) {
        uint64_t next = load_checkpoint(r); /* also sets r->start, the cursor */
        *from = *acked = r->start;
        pthread_mutex_lock(&r->lock);
        r->checkpoint = r->position = next;
        pthread_mutex_unlock(&r->lock);
        ag_store_sub_free(*sub);
        *sub = NULL;
        set_standby(r, false);
    }
    return true;
}

static void *relay_main(void *arg)
{
    struct ag_relay *r = arg;
    struct ag_store_sub *sub = NULL;
    struct ag_err err;
    uint64_t backoff = 0;
    struct ag_store_cursor from = r->start, acked = from, cur;
    uint64_t unsaved = 0, saved_at = 0; /* acknowledged, not yet recorded */
    while (!stopping(r)) {
        ag_err_clear(&err);
        if (!leased(r, &sub, &from, &acked, &unsaved)) {
            if (!pause_ms(r, 1000)) break;
            continue;
        }
        if (!sub && ag_store_subscribe_cursor(r->cfg.store, &from, &sub, &err)) {
            failed(r, &err, 0);
            if (!pause_ms(r, 1000)) break;
            continue;
        }
        struct ag_event_page pg;
        int rc = ag_store_sub_next(sub, r->cfg.batch, 100, &pg, &err);
        if (rc == AG_ECLOSED) break;
        size_t npub = 0;
        uint64_t next = ag_store_sub_checkpoint(sub);
        ag_store_sub_cursor(sub, &cur);
        if (rc == AG_ETIMEDOUT) { /* idle: record what was acknowledged */
            if (unsaved && save_checkpoint(r, &acked, &err) == 0)
                note_saved(r, ag_store_cursor_sum(&acked)), unsaved = 0;
            continue;
        }
        if (!rc) {
            uint64_t oldest = pg.count ? pg.events[0].time_ns : 0;
            rc = publish_page(r, &pg, &npub, &err);
            if (rc) failed(r, &err, oldest);
            ag_event_page_free(&pg);
        }
        if (!rc) {
            note(r, next, npub, false);
            from = cur;
            backoff = 0;
            if (npub) acked = cur, unsaved += npub;
            /* the checkpoint is written at most every CHECKPOINT_MS while busy (and
             * when idle): a crash republishes at most that much, which the broker's
             * dedup window drops */
            if (unsaved && mono_ms() - saved_at >= CHECKPOINT_MS &&
                save_checkpoint(r, &acked, &err) == 0) {
                note_saved(r, ag_store_cursor_sum(&acked));
                unsaved = 0;
                saved_at = mono_ms();
            }
            continue;
        }
        /* publish again from the page's start (the broker drops what it had) */
        ag_store_sub_free(sub);
        sub = NULL;
        backoff = backoff ? (backoff * 2 > 5000 ? 5000 : backoff * 2) : 100;
        if (!pause_ms(r, backoff)) break;
    }
    if (unsaved && !r->standby && save_checkpoint(r, &acked, &err) == 0)
        note_saved(r, ag_store_cursor_sum(&acked));
    ag_store_sub_free(sub);
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
    r->checkpoint = r->position = load_checkpoint(r);
    r->standby = r->cfg.lease != NULL; /* until the lease is taken */
    if (pthread_create(&r->thread, NULL, relay_main, r) != 0) {
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
                                   .failing = r->failing,
                                   .standby = r->standby};
    out->lag_events = st.events > r->position && !r->standby ? st.events - r->position : 0;
    uint64_t oldest = r->oldest_ns;
    snprintf(out->error, sizeof out->error, "%s", r->error);
    pthread_mutex_unlock(&r->lock);
    struct ag_event_page pg; /* the first event not handled yet: its age */
    if (!oldest && out->lag_events && ag_store_shards(r->cfg.store) == 1 &&
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
    if (r->started) pthread_join(r->thread, NULL);
    pthread_cond_destroy(&r->moved);
    pthread_mutex_destroy(&r->lock);
    ag_free(r);
}
