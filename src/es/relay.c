/*
 * The outbox relay (include/agora/relay.h): one thread tails `$all` and publishes
 * the published language to the bus, checkpointing after the broker's acks.
 *
 * Invariant: `checkpoint` (durable, in `_relay-<name>`) never passes an event that
 * should be published and was not acknowledged. Pages go down the bus's pipe
 * (ag_bus_pipe_send) without waiting for the broker. A position on a sharded store
 * is a cursor (one next position per shard), too wide for the pipe's one-number
 * mark, so every page with messages gets a sequence number as its mark and an
 * entry (mark → the cursor after the page) in the relay's in-flight ring; a page
 * with nothing to publish sends nothing and moves the newest entry's cursor (it is
 * reached when that entry is), or the acknowledged cursor itself when nothing is
 * in flight. As the pipe reports its acknowledged prefix (ag_bus_pipe_acked), the
 * entries up to that mark are popped and the last one's cursor becomes `acked`:
 * the only cursor the position and the checkpoint ever follow. A failed or lost
 * publish resets the pipe, drops the ring and publishes again from `acked` (the
 * subscription is remade); the bus drops what the broker already had (dedup by
 * event id), so a retry after an ack that was lost publishes nothing twice.
 *
 * Lease (cfg.lease, `agora serve`): losing it resets the pipe (what is in flight
 * is taken back, never sent later), drops the ring and any checkpoint not yet
 * written (waiting for one being written), and stands by; taking it loads the
 * stored checkpoint, which the previous holder may have moved.
 *
 * Latency: the thread sleeps in the store's wait_head (woken by the append), sends
 * at once, and never waits for an fsync: the checkpoint is written by a second
 * thread (the saver), which records the latest acknowledged cursor it was given.
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
    pthread_t saver;      /* writes the checkpoint, off the publish path */
    bool saver_started;
    pthread_cond_t save; /* a save was asked or ended, or the saver is to finish */
    /* guarded by lock */
    bool stopping, saver_exit;
    bool save_pending;               /* save_cur is to be recorded */
    bool saving;                     /* the saver is writing one */
    uint64_t save_epoch;             /* bumped when pending saves are dropped (lease lost) */
    struct ag_store_cursor save_cur; /* the acknowledged cursor to record */
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

/* The metadata's top-level "traceparent" into tp (left "" when absent) without a
 * tree (the store keeps checked JSON; every event of a command carries it): true
 * when found so, false when the text needs the parser (escapes, too long). */
static bool traceparent_of(const char *meta, size_t len, char *tp, size_t size)
{
    static const char *const key[] = {"traceparent"};
    struct ag_json_span v;
    if (ag_json_members(meta, len, key, 1, &v)) return false;
    if (!v.p) return true;
    if (v.kind != AG_JSON_STRING || v.escapes || v.n - 2 >= size) return v.kind != AG_JSON_STRING;
    memcpy(tp, v.p + 1, v.n - 2);
    tp[v.n - 2] = 0;
    return true;
}

/* The relay's own part of a message before the mapping: id and time. */
static void prefill(const struct ag_event *ev, struct ag_relay_msg *m)
{
    /* not the whole struct (nearly 1 KB per event): the strings the mapping may
     * leave unset, and the message */
    m->msg = (struct ag_bus_msg){0};
    m->topic[0] = m->source[0] = m->type[0] = m->subject[0] = m->traceparent[0] = 0;
    m->data = NULL;
    m->data_checked = false;
    ag_uuid_format(&ev->id, m->id);
    m->msg.time_ns = ev->time_ns;
}

/* After the mapping, for a message it publishes and left without one: the
 * traceparent of the event's metadata (the next event's when it stores a marker
 * for it: es/meta.c, looked up in `pg`). Events not published never have their
 * metadata looked at. */
static void trace(struct ag_relay *r, const struct ag_event_page *pg, const struct ag_event *ev,
                  struct ag_relay_msg *m)
{
    json_t *meta = NULL;
    if (ag_es_meta_is_next(ev))
        meta =
            ag_es_event_meta(r->cfg.store, ev, ev + 1, pg->count - (size_t)(ev + 1 - pg->events));
    else if (ev->metadata_len && memmem(ev->metadata, ev->metadata_len, "traceparent", 11) &&
             !traceparent_of(ev->metadata, ev->metadata_len, m->traceparent, sizeof m->traceparent))
        meta = json_loadb(ev->metadata, ev->metadata_len, 0, NULL);
    const char *tp = json_string_value(json_object_get(meta, "traceparent"));
    if (tp) snprintf(m->traceparent, sizeof m->traceparent, "%s", tp);
    json_decref(meta);
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
    m->msg.data_checked = m->data_checked;
}

/* The page's messages, reused from page to page (a page of 4096 events took 4 MB
 * of fresh, zeroed memory per page: page faults and munmap on every page). */
struct page_buf {
    struct ag_relay_msg *rm;
    struct ag_bus_msg *msgs;
    size_t cap;
};

static int page_buf_fit(struct page_buf *b, size_t n, struct ag_err *err)
{
    if (n <= b->cap) return 0;
    struct ag_relay_msg *rm = ag_realloc(b->rm, n * sizeof *rm);
    if (rm) b->rm = rm;
    struct ag_bus_msg *msgs = rm ? ag_realloc(b->msgs, n * sizeof *msgs) : NULL;
    if (msgs) b->msgs = msgs;
    if (!rm || !msgs) return ag_err_set(err, AG_ENOMEM, "out of memory");
    b->cap = n;
    return 0;
}

/* Map the page's events and send those of the published language (*n of them)
 * down the bus's pipe, marked with `mark`; nothing is sent when *n is 0. */
static int publish_page(struct ag_relay *r, struct page_buf *b, const struct ag_event_page *pg,
                        uint64_t mark, size_t *n, struct ag_err *err)
{
    *n = 0;
    int rc = page_buf_fit(b, pg->count ? pg->count : 1, err);
    if (rc) return rc;
    struct ag_relay_msg *rm = b->rm;
    struct ag_bus_msg *msgs = b->msgs;
    if (!rm || !msgs) return ag_err_set(err, AG_ENOMEM, "out of memory");
    size_t k = 0;
    for (size_t i = 0; !rc && i < pg->count; i++) {
        const struct ag_event *ev = &pg->events[i];
        if (ev->stream_len && ev->stream[0] == '_') continue;
        prefill(ev, &rm[k]);
        int m = r->cfg.map(r->cfg.ud, r->cfg.store, ev, &rm[k]);
        if (m < 0) {
            rc = ag_err_set(err, m, "mapping event %llu (%.*s): %s",
                            (unsigned long long)ev->position, (int)ev->type_len, ev->type,
                            ag_strerror(m));
        } else if (m > 0) {
            if (!rm[k].traceparent[0]) trace(r, pg, ev, &rm[k]);
            link_msg(&rm[k]);
            msgs[k] = rm[k].msg;
            k++;
        } else {
            ag_free(rm[k].data);
        }
    }
    if (!rc && k) rc = ag_bus_pipe_send(r->cfg.bus, msgs, k, mark, r->cfg.publish_timeout_ms, err);
    for (size_t i = 0; i < k; i++) ag_free(rm[i].data);
    *n = k;
    return rc;
}

/* The acknowledged prefix moved to `position` (a cursor's sum), `published` more
 * messages acknowledged. */
static void note(struct ag_relay *r, uint64_t position, uint64_t published)
{
    pthread_mutex_lock(&r->lock);
    r->position = position;
    r->published += published;
    r->oldest_ns = 0;
    if (r->failing) AG_INFO("relay.recovered", AG_LS("relay", r->cfg.name));
    r->failing = false;
    r->error[0] = 0;
    pthread_cond_broadcast(&r->moved);
    pthread_mutex_unlock(&r->lock);
}

/* The saver thread: records the latest acknowledged cursor it is given (a newer
 * one given meanwhile replaces it), so the relay never waits for the fsync. A
 * failed write is retried every 100 ms unless a newer cursor came or the pending
 * saves were dropped. */
static void *saver_main(void *arg)
{
    struct ag_relay *r = arg;
    pthread_mutex_lock(&r->lock);
    for (;;) {
        if (r->save_pending) {
            struct ag_store_cursor want = r->save_cur;
            uint64_t epoch = r->save_epoch;
            r->save_pending = false;
            r->saving = true;
            pthread_mutex_unlock(&r->lock);
            struct ag_err err;
            int rc = save_checkpoint(r, &want, &err);
            pthread_mutex_lock(&r->lock);
            r->saving = false;
            pthread_cond_broadcast(&r->save); /* a relay dropping the saves waits for this */
            if (!rc) {
                r->checkpoint = ag_store_cursor_sum(&want);
                continue;
            }
            if (r->saver_exit) break; /* given up: a restart republishes more (dedup) */
            if (!r->save_pending && r->save_epoch == epoch) {
                r->save_cur = want;
                r->save_pending = true;
            }
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

static void save_async(struct ag_relay *r, const struct ag_store_cursor *next)
{
    pthread_mutex_lock(&r->lock);
    r->save_cur = *next;
    r->save_pending = true;
    pthread_cond_broadcast(&r->save);
    pthread_mutex_unlock(&r->lock);
}

/* The lease is lost: no checkpoint of ours is written from now on (one being
 * written is waited for). */
static void save_drop(struct ag_relay *r)
{
    pthread_mutex_lock(&r->lock);
    r->save_pending = false;
    r->save_epoch++;
    while (r->saving) pthread_cond_wait(&r->save, &r->lock);
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

/* A page in flight: its mark in the pipe and the cursor after it. */
struct inflight {
    uint64_t mark;
    struct ag_store_cursor after;
};

/* The relay thread's own state. */
struct loop {
    struct ag_store_sub *sub;
    struct ag_store_cursor from;  /* where `sub` reads from (after a failure: `acked`) */
    struct ag_store_cursor acked; /* the acknowledged prefix: everything below is handled */
    struct inflight *ring;        /* pages in flight, oldest at ring[first] */
    size_t first, count, cap;
    uint64_t marks;       /* the last mark handed to the pipe */
    uint64_t seen;        /* the pipe's `acked` count already added to `published` */
    uint64_t unsaved;     /* messages acknowledged since the last checkpoint */
    uint64_t saved_at;    /* when the last checkpoint was asked for (monotonic ms) */
    struct page_buf page; /* publish_page's arrays */
};

static int ring_push(struct loop *l, uint64_t mark, const struct ag_store_cursor *after,
                     struct ag_err *err)
{
    if (l->first + l->count == l->cap) {
        if (l->first) {
            memmove(l->ring, l->ring + l->first, l->count * sizeof *l->ring);
            l->first = 0;
        } else {
            size_t cap = l->cap ? l->cap * 2 : 16;
            struct inflight *ring = ag_realloc(l->ring, cap * sizeof *ring);
            if (!ring) return ag_err_set(err, AG_ENOMEM, "out of memory");
            l->ring = ring;
            l->cap = cap;
        }
    }
    struct inflight *e = &l->ring[l->first + l->count++];
    e->mark = mark;
    e->after = *after;
    return 0;
}

/* Nothing in flight counts any more (a reset pipe, a lost lease). */
static void ring_drop(struct ag_relay *r, struct loop *l)
{
    ag_bus_pipe_reset(r->cfg.bus);
    l->first = l->count = 0;
    l->seen = 0;
    ag_store_sub_free(l->sub);
    l->sub = NULL;
    l->from = l->acked;
}

/* Take what the broker acknowledged: the entries up to the pipe's mark leave the
 * ring and the last one's cursor is the new acknowledged prefix; the checkpoint
 * is asked for at most every CHECKPOINT_MS while busy (and when idle): a crash
 * republishes at most that much, which the broker's dedup window drops. */
static void advance(struct ag_relay *r, struct loop *l, const struct ag_bus_pipe_stat *ps,
                    bool idle)
{
    uint64_t delta = ps->acked - l->seen;
    l->seen = ps->acked;
    l->unsaved += delta;
    bool moved = false;
    while (ps->marked && l->count && l->ring[l->first].mark <= ps->mark) {
        l->acked = l->ring[l->first].after;
        l->first++;
        l->count--;
        moved = true;
    }
    if (!l->count) l->first = 0;
    if (moved || delta) note(r, ag_store_cursor_sum(&l->acked), delta);
    if (l->unsaved && (idle || mono_ms() - l->saved_at >= CHECKPOINT_MS)) {
        save_async(r, &l->acked);
        l->unsaved = 0;
        l->saved_at = mono_ms();
    }
}

/* A page was sent (n messages, under mark `mark`) or had nothing to send: record
 * where it ends. */
static int sent(struct ag_relay *r, struct loop *l, uint64_t mark, size_t n, struct ag_err *err)
{
    struct ag_store_cursor after;
    ag_store_sub_cursor(l->sub, &after);
    l->from = after;
    if (n) return ring_push(l, mark, &after, err);
    if (l->count) { /* reached when the newest page in flight is */
        l->ring[l->first + l->count - 1].after = after;
    } else {
        l->acked = after;
        note(r, ag_store_cursor_sum(&after), 0);
    }
    return 0;
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
    size_t n = 0;
    uint64_t mark = l->marks + 1;
    rc = publish_page(r, &l->page, &pg, mark, &n, err);
    ag_event_page_free(&pg);
    if (!rc && n) l->marks = mark;
    return rc ? rc : sent(r, l, mark, n, err);
}

/* cfg.lease: true when the relay may publish now. Lost: what is in flight and
 * any checkpoint not yet written are dropped (the next holder publishes them
 * again; the broker drops twins). Taken anew: the relay starts again from the
 * checkpoint in the store. */
static bool leased(struct ag_relay *r, struct loop *l)
{
    if (!r->cfg.lease) return true;
    bool held = false, taken = false;
    pthread_mutex_lock(&r->lock);
    bool was_standby = r->standby;
    pthread_mutex_unlock(&r->lock);
    if (r->cfg.lease(r->cfg.lease_ud, &held, &taken) || !held) {
        if (!was_standby) {
            ring_drop(r, l);
            save_drop(r);
            l->unsaved = 0;
        }
        set_standby(r, true);
        return false;
    }
    if (taken || was_standby) {
        ring_drop(r, l);
        save_drop(r);
        l->unsaved = 0;
        uint64_t next = load_checkpoint(r); /* also sets r->start, the cursor */
        l->from = l->acked = r->start;
        pthread_mutex_lock(&r->lock);
        r->checkpoint = r->position = next;
        pthread_mutex_unlock(&r->lock);
        set_standby(r, false);
    }
    return true;
}

/* Stopping: what is in flight (unless standing by), then the last checkpoint. */
static void finish(struct ag_relay *r, struct loop *l)
{
    struct ag_err err;
    struct ag_bus_pipe_stat ps;
    pthread_mutex_lock(&r->lock);
    bool standby = r->standby;
    pthread_mutex_unlock(&r->lock);
    if (!standby && ag_bus_pipe_acked(r->cfg.bus, r->cfg.publish_timeout_ms, 0, &ps, &err) == 0)
        advance(r, l, &ps, true);
    ag_bus_pipe_reset(r->cfg.bus);
    ag_store_sub_free(l->sub);
    ag_free(l->ring);
    ag_free(l->page.rm);
    ag_free(l->page.msgs);
}

static void *relay_main(void *arg)
{
    struct ag_relay *r = arg;
    ag_thread_name("ag-relay");
    struct ag_err err;
    struct loop l = {.from = r->start, .acked = r->start};
    uint64_t backoff = 0;
    while (!stopping(r)) {
        ag_err_clear(&err);
        if (!leased(r, &l)) {
            if (!pause_ms(r, 1000)) break;
            continue;
        }
        int rc = l.sub ? 0 : ag_store_subscribe_cursor(r->cfg.store, &l.from, &l.sub, &err);
        if (!rc) rc = step(r, &l, &err);
        if (rc == AG_ECLOSED) break;
        if (!rc) {
            backoff = 0;
            continue;
        }
        /* publish again from the acknowledged prefix (the broker drops what it had) */
        failed(r, &err, 0);
        ring_drop(r, &l);
        backoff = backoff ? (backoff * 2 > 5000 ? 5000 : backoff * 2) : 100;
        if (!pause_ms(r, backoff)) break;
    }
    finish(r, &l);
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
    r->checkpoint = r->position = load_checkpoint(r);
    r->standby = r->cfg.lease != NULL; /* until the lease is taken */
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
    if (r->started) pthread_join(r->thread, NULL); /* its last word: save_cur */
    pthread_mutex_lock(&r->lock);
    r->saver_exit = true; /* the saver records what is left, then ends */
    pthread_cond_broadcast(&r->save);
    pthread_mutex_unlock(&r->lock);
    if (r->saver_started) pthread_join(r->saver, NULL);
    pthread_cond_destroy(&r->save);
    pthread_cond_destroy(&r->moved);
    pthread_mutex_destroy(&r->lock);
    ag_free(r);
}
