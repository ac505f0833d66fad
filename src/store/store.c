/*
 * The event store port: validation shared by every adapter, dispatch through the
 * adapter's ops table, subscriptions (built on read + wait_head, so every adapter
 * gets them for free), the libuv binding for async appends, and the JSON form of
 * an event used by the CLI and the HTTP layer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "store/internal.h"

/* ---- validation ---- */

static bool has_control(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) return true;
    }
    return false;
}

int ag_store_check_stream(const char *stream, size_t len, struct ag_err *err)
{
    if (!stream || len == 0) return ag_err_set(err, AG_EINVAL, "stream name is empty");
    if (len > AG_STORE_STREAM_MAX)
        return ag_err_set(err, AG_EINVAL, "stream name is %zu bytes; the limit is %d", len,
                          AG_STORE_STREAM_MAX);
    if (!ag_utf8_valid(stream, len))
        return ag_err_set(err, AG_EINVAL, "stream name is not valid UTF-8");
    if (has_control(stream, len))
        return ag_err_set(err, AG_EINVAL, "stream name contains a control character");
    if (stream[0] == '$')
        return ag_err_set(err, AG_EINVAL, "stream names starting with '$' are reserved ('%.*s')",
                          (int)len, stream);
    return 0;
}

static int check_json(const char *what, size_t index, const char *p, size_t n, bool object,
                      struct ag_err *err)
{
    char msg[160];
    if (ag_json_check(p, n, object, msg, sizeof msg) == 0) return 0;
    if (object && strncmp(msg, "must be a JSON object", 21) == 0)
        return ag_err_set(err, AG_EJSON, "event %zu: %s must be a JSON object", index, what);
    return ag_err_set(err, AG_EJSON, "event %zu: %s is not valid JSON: %s", index, what, msg);
}

int ag_store_check_event(const struct ag_store *s, size_t index, const struct ag_event_data *ev,
                         struct ag_err *err)
{
    if (!ev->type || ev->type_len == 0)
        return ag_err_set(err, AG_EINVAL, "event %zu: type is empty", index);
    if (ev->type_len > AG_STORE_TYPE_MAX)
        return ag_err_set(err, AG_EINVAL, "event %zu: type is %zu bytes; the limit is %d", index,
                          ev->type_len, AG_STORE_TYPE_MAX);
    if (!ag_utf8_valid(ev->type, ev->type_len) || has_control(ev->type, ev->type_len))
        return ag_err_set(err, AG_EINVAL,
                          "event %zu: type must be UTF-8 without control characters", index);
    size_t total = ev->type_len + ev->data_len + ev->metadata_len;
    size_t max =
        s && s->opts.max_event_bytes ? s->opts.max_event_bytes : AG_STORE_EVENT_MAX_DEFAULT;
    if (total > max)
        return ag_err_set(err, AG_ETOOBIG, "event %zu: %zu bytes; the limit is %zu", index, total,
                          max);
    int rc = 0;
    if (ev->data_len) rc = check_json("data", index, ev->data, ev->data_len, false, err);
    if (!rc && ev->metadata_len)
        rc = check_json("metadata", index, ev->metadata, ev->metadata_len, true, err);
    return rc;
}

static int check_append(const struct ag_store *s, const char *stream, size_t stream_len,
                        int64_t expected, const struct ag_event_data *ev, size_t n,
                        struct ag_err *err)
{
    int rc = ag_store_check_stream(stream, stream_len, err);
    if (rc) return rc;
    if (expected < 0 && expected != AG_STORE_ANY && expected != AG_STORE_NO_STREAM &&
        expected != AG_STORE_STREAM_EXISTS)
        return ag_err_set(err, AG_EINVAL, "invalid expected version %lld", (long long)expected);
    if (n == 0 || !ev) return ag_err_set(err, AG_EINVAL, "no events to append");
    if (n > AG_STORE_BATCH_MAX)
        return ag_err_set(err, AG_ETOOBIG, "%zu events in one append; the limit is %d", n,
                          AG_STORE_BATCH_MAX);
    for (size_t i = 0; i < n && !rc; i++) rc = ag_store_check_event(s, i, &ev[i], err);
    for (size_t i = 0; i < n && !rc; i++)
        for (size_t j = i + 1; j < n && !ag_uuid_is_nil(&ev[i].id); j++)
            if (memcmp(ev[i].id.b, ev[j].id.b, 16) == 0)
                rc = ag_err_set(err, AG_EINVAL, "events %zu and %zu have the same id", i, j);
    return rc;
}

int ag_store_parse_expected(const char *s, int64_t *out)
{
    if (strcmp(s, "any") == 0) return *out = AG_STORE_ANY, 0;
    if (strcmp(s, "no-stream") == 0) return *out = AG_STORE_NO_STREAM, 0;
    if (strcmp(s, "exists") == 0) return *out = AG_STORE_STREAM_EXISTS, 0;
    int64_t v;
    if (ag_parse_i64(s, &v) || v < 0) return AG_EINVAL;
    *out = v;
    return 0;
}

/* ---- spans ----
 *
 * Each append is a span "store.append" (streams, events, bytes, the first
 * stream), a child of the calling thread's current span (ag_span_set_current: a
 * saga step) or else of the span the first of its events' metadata that names one
 * names in "traceparent" (a service request). An append that belongs to no trace makes
 * no span. */

static bool span_parent(const struct ag_event_data *ev, size_t n, struct ag_obs_trace *out)
{
    static const char key[] = "\"traceparent\":\"";
    if (ag_span_current(out)) return true;
    /* the first event that names one: a command's events before its last may
     * store a marker for "the next event's metadata" (src/es/meta.c) */
    for (size_t i = 0; i < n; i++) {
        const char *m = ev[i].metadata;
        if (!m || ev[i].metadata_len < sizeof key) continue;
        const char *p = memmem(m, ev[i].metadata_len, key, sizeof key - 1);
        if (!p) continue;
        p += sizeof key - 1;
        if ((size_t)(m + ev[i].metadata_len - p) < AG_OBS_TRACEPARENT_LEN) return false;
        return ag_obs_trace_parse(p, AG_OBS_TRACEPARENT_LEN, out) == 0;
    }
    return false;
}

static void span_count(struct ag__store_span *sp, const struct ag_event_data *ev, size_t n)
{
    sp->streams++;
    sp->events += (uint32_t)n;
    for (size_t i = 0; i < n; i++) sp->bytes += ev[i].data_len + ev[i].metadata_len;
}

/* Start the span of an append to one stream, or of a multi-stream one (`parts`). */
static void span_start(struct ag__store_span *sp, const struct ag_event_data *ev, size_t n,
                       const struct ag_append_part *parts, size_t nparts)
{
    memset(sp, 0, sizeof *sp);
    if (!ag_span_enabled()) return;
    if (parts ? !nparts || !span_parent(parts[0].events, parts[0].count, &sp->parent)
              : !span_parent(ev, n, &sp->parent))
        return;
    if (parts)
        for (size_t i = 0; i < nparts; i++) span_count(sp, parts[i].events, parts[i].count);
    else
        span_count(sp, ev, n);
    sp->t0 = ag_span_now();
}

static void span_finish(const struct ag__store_span *st, const char *stream, size_t stream_len,
                        int rc)
{
    if (!st->t0) return;
    struct ag_span sp;
    ag_span_begin(&sp, "store.append", AG_SPAN_INTERNAL, &st->parent);
    sp.start_ns = st->t0;
    char name[AG_SPAN_STR_MAX];
    snprintf(name, sizeof name, "%.*s", (int)stream_len, stream ? stream : "");
    ag_span_attr_str(&sp, "store.stream", name);
    ag_span_attr_int(&sp, "store.streams", st->streams);
    ag_span_attr_int(&sp, "store.events", st->events);
    ag_span_attr_int(&sp, "store.bytes", (int64_t)st->bytes);
    if (rc) {
        ag_span_attr_str(&sp, "error", ag_strerror(rc));
        sp.status = AG_SPAN_ERROR;
    }
    ag_span_end(&sp);
}

/* ---- dispatch ---- */

int ag_store_append(struct ag_store *s, const char *stream, size_t stream_len,
                    int64_t expected_version, const struct ag_event_data *events, size_t n,
                    struct ag_append_result *out, struct ag_err *err)
{
    int rc = check_append(s, stream, stream_len, expected_version, events, n, err);
    if (rc) return rc;
    struct ag__store_span sp;
    span_start(&sp, events, n, NULL, 0);
    rc = s->ops->append(s, stream, stream_len, expected_version, events, n, out, err);
    span_finish(&sp, stream, stream_len, rc);
    return rc;
}

static bool same_stream(const struct ag_append_part *a, const struct ag_append_part *b)
{
    return a->stream_len == b->stream_len && memcmp(a->stream, b->stream, a->stream_len) == 0;
}

/* Each part as check_append does, then what only a multi-stream append can get
 * wrong: too many parts or events, a stream twice, an event id in two parts. */
static int check_multi(const struct ag_store *s, const struct ag_append_part *parts, size_t nparts,
                       struct ag_err *err)
{
    if (nparts == 0 || !parts) return ag_err_set(err, AG_EINVAL, "no parts to append");
    if (nparts > AG_STORE_MULTI_MAX)
        return ag_err_set(err, AG_ETOOBIG, "%zu streams in one append; the limit is %d", nparts,
                          AG_STORE_MULTI_MAX);
    size_t total = 0;
    for (size_t i = 0; i < nparts; i++) {
        const struct ag_append_part *p = &parts[i];
        int rc = check_append(s, p->stream, p->stream_len, p->expected_version, p->events, p->count,
                              err);
        if (rc) {
            if (err) {
                char msg[sizeof err->msg];
                snprintf(msg, sizeof msg, "%s", err->msg);
                ag_err_set(err, rc, "part %zu: %s", i, msg);
            }
            return rc;
        }
        total += p->count;
    }
    if (total > AG_STORE_BATCH_MAX)
        return ag_err_set(err, AG_ETOOBIG, "%zu events in one append; the limit is %d", total,
                          AG_STORE_BATCH_MAX);
    for (size_t i = 0; i < nparts; i++)
        for (size_t j = i + 1; j < nparts; j++) {
            if (same_stream(&parts[i], &parts[j]))
                return ag_err_set(err, AG_EINVAL, "parts %zu and %zu both append to '%.*s'", i, j,
                                  (int)parts[i].stream_len, parts[i].stream);
            for (size_t a = 0; a < parts[i].count; a++) {
                const struct ag_uuid *id = &parts[i].events[a].id;
                for (size_t b = 0; b < parts[j].count && !ag_uuid_is_nil(id); b++)
                    if (memcmp(id->b, parts[j].events[b].id.b, 16) == 0)
                        return ag_err_set(err, AG_EINVAL,
                                          "event %zu of part %zu and event %zu of part %zu "
                                          "have the same id",
                                          a, i, b, j);
            }
        }
    return 0;
}

int ag_store_append_multi(struct ag_store *s, const struct ag_append_part *parts, size_t nparts,
                          struct ag_append_result *out, struct ag_err *err)
{
    if (!s->ops->append_multi)
        return ag_err_set(err, AG_EUNSUPPORTED,
                          "the '%s' store cannot append to several streams atomically",
                          s->ops->name);
    int rc = check_multi(s, parts, nparts, err);
    if (rc) return rc;
    struct ag__store_span sp;
    span_start(&sp, NULL, 0, parts, nparts);
    rc = s->ops->append_multi(s, parts, nparts, out, err);
    span_finish(&sp, parts[0].stream, parts[0].stream_len, rc);
    return rc;
}

int ag_store_read_stream(struct ag_store *s, const char *stream, size_t stream_len, int64_t from,
                         enum ag_read_dir dir, size_t max, struct ag_event_page *out,
                         struct ag_err *err)
{
    int rc = ag_store_check_stream(stream, stream_len, err);
    if (rc) return rc;
    return s->ops->read_stream(s, stream, stream_len, from, dir, max, out, err);
}

int ag_store_read_all(struct ag_store *s, uint64_t from, enum ag_read_dir dir, size_t max,
                      struct ag_event_page *out, struct ag_err *err)
{
    return s->ops->read_all(s, from, dir, max, out, err);
}

int ag_store_stream_version(struct ag_store *s, const char *stream, size_t stream_len,
                            int64_t *version)
{
    return s->ops->stream_version(s, stream, stream_len, version);
}

int ag_store_list_streams(struct ag_store *s,
                          int (*cb)(void *ud, const char *name, size_t len, int64_t version),
                          void *ud)
{
    return s->ops->list_streams(s, cb, ud);
}

int ag_store_save_snapshot(struct ag_store *s, const char *stream, size_t stream_len,
                           int64_t version, const void *state, size_t state_len, struct ag_err *err)
{
    int rc = ag_store_check_stream(stream, stream_len, err);
    if (rc) return rc;
    if (version < 0) return ag_err_set(err, AG_EINVAL, "snapshot version must be >= 0");
    if (state_len > 64u << 20) return ag_err_set(err, AG_ETOOBIG, "snapshot larger than 64 MiB");
    return s->ops->save_snapshot(s, stream, stream_len, version, state, state_len, err);
}

int ag_store_load_snapshot(struct ag_store *s, const char *stream, size_t stream_len,
                           struct ag_snapshot *out, struct ag_err *err)
{
    int rc = ag_store_check_stream(stream, stream_len, err);
    if (rc) return rc;
    return s->ops->load_snapshot(s, stream, stream_len, out, err);
}

int ag_store_stats(struct ag_store *s, struct ag_store_stats *out)
{
    return s->ops->stats(s, out);
}

int ag_store_health(struct ag_store *s, struct ag_store_health *out)
{
    memset(out, 0, sizeof *out);
    if (s->ops->health) return s->ops->health(s, out);
    out->writable = true;
    return 0;
}

void ag_store_close(struct ag_store *s)
{
    if (s) s->ops->close(s);
}

void ag_event_page_free(struct ag_event_page *page)
{
    if (!page) return;
    ag_free(page->mem);
    memset(page, 0, sizeof *page);
}

void ag_snapshot_free(struct ag_snapshot *snap)
{
    if (!snap) return;
    ag_free(snap->state);
    memset(snap, 0, sizeof *snap);
}

/* ---- sharded stores: cursors ---- */

size_t ag_store_shards(struct ag_store *s)
{
    return s->ops->shards ? s->ops->shards(s) : 1;
}

void ag_store_cursor_init(struct ag_store *s, struct ag_store_cursor *c)
{
    memset(c, 0, sizeof *c);
    c->n = (uint32_t)ag_store_shards(s);
}

void ag_store_cursor_head(struct ag_store *s, struct ag_store_cursor *c)
{
    ag_store_cursor_init(s, c);
    if (c->n == 1 || !s->ops->read_shard) {
        struct ag_store_stats st = {0};
        s->ops->stats(s, &st);
        c->next[0] = st.events;
        return;
    }
    for (uint32_t k = 0; k < c->n; k++) {
        struct ag_event_page pg;
        if (s->ops->read_shard(s, k, UINT64_MAX, 0, &pg, NULL) == 0) {
            c->next[k] = pg.next_position;
            ag_event_page_free(&pg);
        }
    }
}

bool ag_store_cursor_covers(const struct ag_store_cursor *c, uint64_t position)
{
    uint32_t k = ag_store_pos_shard(position);
    return k < c->n && c->next[k] > ag_store_pos_local(position);
}

uint64_t ag_store_cursor_sum(const struct ag_store_cursor *c)
{
    uint64_t sum = 0;
    for (uint32_t k = 0; k < c->n; k++) sum += c->next[k];
    return sum;
}

void ag_store_cursor_format(const struct ag_store_cursor *c, char *out, size_t n)
{
    size_t at = 0;
    out[0] = 0;
    for (uint32_t k = 0; k < c->n && at < n; k++) {
        int w = snprintf(out + at, n - at, "%s%llu", k ? "," : "", (unsigned long long)c->next[k]);
        if (w < 0) break;
        at += (size_t)w;
    }
}

int ag_store_cursor_parse(const char *text, struct ag_store_cursor *c)
{
    memset(c, 0, sizeof *c);
    const char *p = text;
    while (*p) {
        if (c->n == AG_STORE_SHARDS_MAX) return AG_EINVAL;
        char *end;
        unsigned long long v = strtoull(p, &end, 10);
        if (end == p || (*end && *end != ',')) return AG_EINVAL;
        c->next[c->n++] = v;
        p = *end ? end + 1 : end;
    }
    return c->n ? 0 : AG_EINVAL;
}

/* ---- subscriptions ---- */

struct ag_store_sub {
    struct ag_store *store;
    char *stream; /* NULL: $all */
    size_t stream_len;
    uint64_t next;              /* next position ($all) or version (stream) */
    bool sharded;               /* $all of a sharded store: `cur` instead of `next` */
    uint32_t turn;              /* shard to read first next time (fairness) */
    struct ag_store_cursor cur; /* sharded: next local position per shard */
};

static int sub_new(struct ag_store *s, const char *stream, size_t stream_len,
                   struct ag_store_sub **out, struct ag_err *err)
{
    if (stream) {
        int rc = ag_store_check_stream(stream, stream_len, err);
        if (rc) return rc;
    }
    struct ag_store_sub *sub = ag_calloc(1, sizeof *sub);
    if (!sub || (stream && !(sub->stream = ag_strndup(stream, stream_len)))) {
        ag_free(sub);
        return ag_err_set(err, AG_ENOMEM, "out of memory");
    }
    sub->store = s;
    sub->stream_len = stream_len;
    sub->sharded = !stream && s->ops->read_shard && ag_store_shards(s) > 1;
    *out = sub;
    return 0;
}

int ag_store_subscribe_cursor(struct ag_store *s, const struct ag_store_cursor *from,
                              struct ag_store_sub **out, struct ag_err *err)
{
    int rc = sub_new(s, NULL, 0, out, err);
    if (rc) return rc;
    struct ag_store_sub *sub = *out;
    ag_store_cursor_init(s, &sub->cur);
    for (uint32_t k = 0; from && k < from->n && k < sub->cur.n; k++)
        sub->cur.next[k] = from->next[k];
    if (!sub->sharded) sub->next = sub->cur.next[0];
    return 0;
}

int ag_store_subscribe(struct ag_store *s, const char *stream, size_t stream_len, uint64_t from,
                       struct ag_store_sub **out, struct ag_err *err)
{
    int rc = sub_new(s, stream, stream_len, out, err);
    if (rc) return rc;
    struct ag_store_sub *sub = *out;
    sub->next = from;
    if (sub->sharded) { /* 0: every shard from its start; else from now */
        if (from)
            ag_store_cursor_head(s, &sub->cur);
        else
            ag_store_cursor_init(s, &sub->cur);
    }
    return 0;
}

static int sub_read(struct ag_store_sub *sub, size_t max, struct ag_event_page *out,
                    struct ag_err *err)
{
    if (!sub->stream)
        return sub->store->ops->read_all(sub->store, sub->next, AG_READ_FORWARD, max, out, err);
    int rc = sub->store->ops->read_stream(sub->store, sub->stream, sub->stream_len,
                                          (int64_t)sub->next, AG_READ_FORWARD, max, out, err);
    if (rc == AG_ENOTFOUND) {
        ag_err_clear(err);
        memset(out, 0, sizeof *out);
        return 0;
    }
    return rc;
}

/* A page from the first shard, from `turn` on, that has events (each shard its
 * own order; shards take turns so a busy one cannot starve the others). */
static int sub_next_sharded(struct ag_store_sub *sub, size_t max, int timeout_ms,
                            struct ag_event_page *out, struct ag_err *err)
{
    struct ag_store *s = sub->store;
    for (;;) {
        for (uint32_t i = 0; i < sub->cur.n; i++) {
            uint32_t k = (sub->turn + i) % sub->cur.n;
            int rc = s->ops->read_shard(s, k, sub->cur.next[k], max, out, err);
            if (rc) return rc;
            if (out->count) {
                sub->cur.next[k] = out->next_position;
                sub->turn = (k + 1) % sub->cur.n;
                sub->next = ag_store_cursor_sum(&sub->cur);
                return 0;
            }
            ag_event_page_free(out);
        }
        int rc = s->ops->wait_shards(s, sub->cur.next, sub->cur.n, timeout_ms);
        if (rc) return ag_err_set(err, rc, rc == AG_ETIMEDOUT ? "no new events" : "store closed");
    }
}

int ag_store_sub_next(struct ag_store_sub *sub, size_t max, int timeout_ms,
                      struct ag_event_page *out, struct ag_err *err)
{
    if (sub->sharded) return sub_next_sharded(sub, max, timeout_ms, out, err);
    for (;;) {
        struct ag_store_stats st = {0};
        if (sub->stream) sub->store->ops->stats(sub->store, &st); /* head before the read */
        int rc = sub_read(sub, max, out, err);
        if (rc) return rc;
        if (out->count) {
            sub->next = sub->stream ? (uint64_t)out->next_version : out->next_position;
            return 0;
        }
        ag_event_page_free(out);
        uint64_t after = sub->stream ? st.events : sub->next;
        rc = sub->store->ops->wait_head(sub->store, after, timeout_ms);
        if (rc) return ag_err_set(err, rc, rc == AG_ETIMEDOUT ? "no new events" : "store closed");
    }
}

uint64_t ag_store_sub_checkpoint(const struct ag_store_sub *sub)
{
    return sub->next;
}

void ag_store_sub_cursor(const struct ag_store_sub *sub, struct ag_store_cursor *out)
{
    if (sub->sharded) {
        *out = sub->cur;
        return;
    }
    memset(out, 0, sizeof *out);
    out->n = 1;
    out->next[0] = sub->next;
}

void ag_store_sub_free(struct ag_store_sub *sub)
{
    if (!sub) return;
    ag_free(sub->stream);
    ag_free(sub);
}

/* ---- async appends on a libuv loop ---- */

static void on_async(uv_async_t *a)
{
    struct ag_store_loop *l = a->data;
    pthread_mutex_lock(&l->lock);
    struct ag_append_req *r = l->head;
    l->head = l->tail = NULL;
    pthread_mutex_unlock(&l->lock);
    while (r) {
        struct ag_append_req *next = r->next_done;
        span_finish(&r->span, r->stream, r->stream_len, r->status);
        r->cb(r->ud, r->status, r->status ? NULL : &r->result, r->status ? &r->err : NULL);
        r = next;
    }
}

int ag_store_loop_init(struct ag_store *s, struct uv_loop_s *loop, struct ag_store_loop **out)
{
    struct ag_store_loop *l = ag_calloc(1, sizeof *l);
    uv_async_t *a = ag_malloc(sizeof *a);
    if (!l || !a || uv_async_init(loop, a, on_async) != 0) {
        ag_free(l);
        ag_free(a);
        return AG_ENOMEM;
    }
    a->data = l;
    l->async = a;
    l->store = s;
    pthread_mutex_init(&l->lock, NULL);
    *out = l;
    return 0;
}

static void on_loop_closed(uv_handle_t *h)
{
    struct ag_store_loop *l = h->data;
    pthread_mutex_destroy(&l->lock);
    ag_free(h);
    ag_free(l);
}

void ag_store_loop_close(struct ag_store_loop *l)
{
    if (!l) return;
    /* a writer that completed the last request may still be inside its
     * uv_async_send (its callback already ran): wait for it, under the lock */
    pthread_mutex_lock(&l->lock);
    pthread_mutex_unlock(&l->lock);
    uv_close((uv_handle_t *)l->async, on_loop_closed);
}

void ag__store_loop_complete(struct ag_append_req *req)
{
    struct ag_store_loop *l = req->loop;
    req->next_done = NULL;
    if (req->pos_base && !req->status) { /* a shard's append: its positions as the router's */
        req->result.first_position += req->pos_base;
        req->result.last_position += req->pos_base;
        for (size_t i = 0; req->pos_results && i < req->pos_n; i++) {
            req->pos_results[i].first_position += req->pos_base;
            req->pos_results[i].last_position += req->pos_base;
        }
    }
    pthread_mutex_lock(&l->lock);
    if (l->tail)
        l->tail->next_done = req;
    else
        l->head = req;
    l->tail = req;
    uv_async_send(l->async); /* under the lock: ag_store_loop_close waits for it */
    pthread_mutex_unlock(&l->lock);
}

int ag_store_append_async(struct ag_store_loop *l, struct ag_append_req *req)
{
    req->loop = l;
    req->pos_base = 0;
    req->pos_results = NULL;
    ag_err_clear(&req->err);
    memset(&req->result, 0, sizeof req->result);
    req->status = check_append(l->store, req->stream, req->stream_len, req->expected_version,
                               req->events, req->count, &req->err);
    if (req->status) {
        req->span.t0 = 0;
        ag__store_loop_complete(req);
        return 0;
    }
    span_start(&req->span, req->events, req->count, NULL, 0);
    return l->store->ops->append_async(l->store, req);
}

int ag_store_append_multi_async(struct ag_store_loop *l, struct ag_append_multi_req *mreq)
{
    if (!l->store->ops->append_multi_async) return AG_EUNSUPPORTED;
    struct ag_append_req *req = &mreq->req;
    memset(req, 0, sizeof *req);
    req->cb = mreq->cb;
    req->ud = mreq->ud;
    req->loop = l;
    if (mreq->nparts && mreq->parts) {
        req->stream = mreq->parts[0].stream;
        req->stream_len = mreq->parts[0].stream_len;
    }
    req->status = check_multi(l->store, mreq->parts, mreq->nparts, &req->err);
    if (req->status) {
        ag__store_loop_complete(req);
        return 0;
    }
    span_start(&req->span, NULL, 0, mreq->parts, mreq->nparts);
    return l->store->ops->append_multi_async(l->store, mreq);
}

/* ---- JSON ---- */

int ag_event_to_json(const struct ag_event *ev, struct ag_buf *b)
{
    char id[AG_UUID_STRLEN + 1], ts[32];
    ag_uuid_format(&ev->id, id);
    ag_time_rfc3339(ev->time_ns, ts);
    int rc = ag_buf_puts(b, "{\"stream\":");
    rc = rc ? rc : ag_buf_json_str(b, ev->stream, ev->stream_len);
    rc = rc ? rc
            : ag_buf_printf(b, ",\"version\":%lld,\"position\":%llu,\"id\":\"%s\",\"type\":",
                            (long long)ev->version, (unsigned long long)ev->position, id);
    rc = rc ? rc : ag_buf_json_str(b, ev->type, ev->type_len);
    rc = rc ? rc : ag_buf_printf(b, ",\"time\":\"%s\",\"data\":", ts);
    rc = rc ? rc : ag_buf_append(b, ev->data, ev->data_len);
    rc = rc ? rc : ag_buf_puts(b, ",\"metadata\":");
    rc = rc ? rc : ag_buf_append(b, ev->metadata, ev->metadata_len);
    return rc ? rc : ag_buf_putc(b, '}');
}
