/*
 * Multi-stream appends over shards.
 *
 * All parts on one shard: that shard's atomic append, nothing more. Parts on
 * several shards (a saga step: stock-<product> + reservation-<order> + the
 * saga's record; jump hash puts the product and the order apart) make a
 * cross-shard unit, written so that a crash never leaves half of it:
 *   1. every part's expected version is checked on its shard (a mismatch is
 *      AG_ECONFLICT, nothing written);
 *   2. the parts of the other shards, with their event ids (assigned here when
 *      nil), are encoded as one intent event, and the coordinator shard c (part
 *      0's) appends its own parts plus that intent to `_xshard-<c>` in ONE atomic
 *      append: from here the unit is durable;
 *   3. each other shard appends its parts (one atomic append per shard).
 * A crash between 2 and 3 is completed at the next open (ag__shard_xs_recover):
 * the intents after `_xshard-<c>`'s snapshot are re-appended, which the member
 * answers from its idempotency check (same ids) when they are there already;
 * then the snapshot moves to the last intent (also at a clean close).
 *
 * What a cross-shard unit does not give: readers may see the coordinator's parts
 * a moment before the others' (atomic durability, not atomic visibility); a unit
 * retried after it succeeded may answer AG_ECONFLICT, not the first result (step 1
 * sees the streams moved, unless its parts have exact expected versions and
 * event ids: then each repeated part is found where it was written and answered
 * by its shard's idempotency); and a writer in another process racing step 3 on the
 * same stream (only possible on PostgreSQL members) leaves it incomplete, which
 * is logged as store.shard_unit_incomplete, as is a part whose ids were used
 * with other content (AG_EIDEMPOTENCY from its shard after the coordinator
 * committed). In one process the repository runs
 * one writer per aggregate, so step 1 still holds at step 3.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "store/shard/internal.h"

/* ---- the intent ---- */

static int encode_part(struct ag_buf *b, size_t shard, const struct ag_append_part *p)
{
    int rc = ag_buf_printf(b, "{\"shard\":%zu,\"expected\":%lld,\"stream\":", shard,
                           (long long)p->expected_version);
    rc = rc ? rc : ag_buf_json_str(b, p->stream, p->stream_len);
    rc = rc ? rc : ag_buf_puts(b, ",\"events\":[");
    for (size_t i = 0; i < p->count && !rc; i++) {
        const struct ag_event_data *e = &p->events[i];
        char id[AG_UUID_STRLEN + 1];
        ag_uuid_format(&e->id, id);
        rc = ag_buf_printf(b, "%s{\"id\":\"%s\",\"type\":", i ? "," : "", id);
        rc = rc ? rc : ag_buf_json_str(b, e->type, e->type_len);
        rc = rc ? rc : ag_buf_puts(b, ",\"data\":"); /* the exact bytes, as a string */
        rc = rc ? rc : ag_buf_json_str(b, e->data ? e->data : "", e->data ? e->data_len : 0);
        rc = rc ? rc : ag_buf_puts(b, ",\"metadata\":");
        rc = rc ? rc
                : ag_buf_json_str(b, e->metadata ? e->metadata : "",
                                  e->metadata ? e->metadata_len : 0);
        rc = rc ? rc : ag_buf_putc(b, '}');
    }
    return rc ? rc : ag_buf_puts(b, "]}");
}

/* ---- the unit ---- */

struct unit {
    struct shard_store *ss;
    const struct ag_append_part *in;
    size_t n;
    size_t shard[AG_STORE_MULTI_MAX];
    struct ag_append_part parts[AG_STORE_MULTI_MAX]; /* the input, with ids */
    struct ag_event_data *ev;                        /* their events (copies) */
    struct ag_buf intent;
    struct ag_event_data intent_ev;
    char xs_stream[32];
};

static int unit_ids(struct unit *u)
{
    size_t total = 0;
    for (size_t i = 0; i < u->n; i++) total += u->in[i].count;
    if (!(u->ev = ag_malloc(total * sizeof *u->ev))) return AG_ENOMEM;
    const struct ag_store_options *o = &u->ss->base.opts;
    size_t at = 0;
    for (size_t i = 0; i < u->n; i++) {
        u->parts[i] = u->in[i];
        u->parts[i].events = u->ev + at;
        for (size_t j = 0; j < u->in[i].count; j++, at++) {
            u->ev[at] = u->in[i].events[j];
            if (ag_uuid_is_nil(&u->ev[at].id))
                ag_uuid_v7(&u->ev[at].id, o->clock ? o->clock : ag_clock_system(),
                           o->rng ? o->rng : ag_rng_system());
        }
    }
    return 0;
}

static bool version_ok(int64_t expected, int64_t v)
{
    if (expected == AG_STORE_ANY) return true;
    if (expected == AG_STORE_NO_STREAM) return v == -1;
    if (expected == AG_STORE_STREAM_EXISTS) return v >= 0;
    return v == expected;
}

/* Whether part `p` was written already (a retried unit): its first event is where
 * the expected version put it, with the same id. */
static bool part_written(struct ag_store *m, const struct ag_append_part *p, bool caller_ids)
{
    if (!caller_ids || p->expected_version < AG_STORE_NO_STREAM) return false;
    int64_t at = p->expected_version == AG_STORE_NO_STREAM ? 0 : p->expected_version + 1;
    struct ag_event_page pg;
    if (m->ops->read_stream(m, p->stream, p->stream_len, at, AG_READ_FORWARD, 1, &pg, NULL))
        return false;
    bool same = pg.count == 1 && pg.events[0].version == at &&
                memcmp(pg.events[0].id.b, p->events[0].id.b, 16) == 0;
    ag_event_page_free(&pg);
    return same;
}

static int unit_check(struct unit *u, struct ag_err *err)
{
    for (size_t i = 0; i < u->n; i++) {
        const struct ag_append_part *p = &u->parts[i];
        if (p->expected_version == AG_STORE_ANY) continue;
        struct ag_store *m = u->ss->sh[u->shard[i]];
        int64_t v = -1;
        int rc = m->ops->stream_version(m, p->stream, p->stream_len, &v);
        if (rc == AG_ENOTFOUND) v = -1, rc = 0;
        if (rc)
            return ag_err_set(err, rc, "stream '%.*s': %s", (int)p->stream_len, p->stream,
                              ag_strerror(rc));
        if (version_ok(p->expected_version, v) ||
            part_written(m, p, !ag_uuid_is_nil(&u->in[i].events[0].id)))
            continue; /* a repeated part is answered by its shard's idempotency */
        ag_err_set(err, AG_ECONFLICT, "stream '%.*s' is at version %lld, not the expected %lld",
                   (int)p->stream_len, p->stream, (long long)v, (long long)p->expected_version);
        if (err) err->aux = v;
        return AG_ECONFLICT;
    }
    return 0;
}

static int unit_intent(struct unit *u, size_t c, struct ag_err *err)
{
    ag_buf_init(&u->intent);
    int rc = ag_buf_puts(&u->intent, "{\"parts\":[");
    bool first = true;
    for (size_t i = 0; i < u->n && !rc; i++) {
        if (u->shard[i] == c) continue;
        if (!first) rc = ag_buf_putc(&u->intent, ',');
        first = false;
        rc = rc ? rc : encode_part(&u->intent, u->shard[i], &u->parts[i]);
    }
    rc = rc ? rc : ag_buf_puts(&u->intent, "]}");
    if (rc) return ag_err_set(err, rc, "out of memory encoding a cross-shard unit");
    size_t max = u->ss->base.opts.max_event_bytes ? u->ss->base.opts.max_event_bytes
                                                  : AG_STORE_EVENT_MAX_DEFAULT;
    if (u->intent.len + 32 > max)
        return ag_err_set(err, AG_ETOOBIG,
                          "a multi-stream append over shards is %zu bytes; the limit is %zu",
                          u->intent.len, max);
    /* its id follows part 0's first event's, so a retried unit repeats it */
    struct ag_uuid id = u->parts[0].events[0].id;
    for (size_t i = 0; i < 16; i++) id.b[i] ^= 0x5a;
    u->intent_ev = (struct ag_event_data){.id = id,
                                          .type = "CrossShardUnit",
                                          .type_len = 14,
                                          .data = u->intent.data,
                                          .data_len = u->intent.len};
    snprintf(u->xs_stream, sizeof u->xs_stream, SHARD_XS_PREFIX "%zu", c);
    return 0;
}

/* Append the parts of `u` that are on shard k (plus `extra`, the intent) as one
 * atomic append; results into out[] by part index. */
static int append_on(struct unit *u, size_t k, const struct ag_append_part *extra,
                     struct ag_append_result *out, struct ag_err *err)
{
    struct ag_append_part p[AG_STORE_MULTI_MAX + 1] = {0};
    size_t idx[AG_STORE_MULTI_MAX + 1], np = 0;
    for (size_t i = 0; i < u->n; i++)
        if (u->shard[i] == k) idx[np] = i, p[np++] = u->parts[i];
    if (extra) idx[np] = SIZE_MAX, p[np++] = *extra;
    struct ag_append_result res[AG_STORE_MULTI_MAX + 1];
    struct ag_store *m = u->ss->sh[k];
    int rc = m->ops->append_multi(m, p, np, res, err);
    for (size_t i = 0; !rc && out && i < np; i++)
        if (idx[i] != SIZE_MAX) {
            out[idx[i]] = res[i];
            ag__shard_encode_result(&out[idx[i]], k);
        }
    return rc;
}

static int unit_commit(struct unit *u, struct ag_append_result *out, struct ag_err *err)
{
    size_t c = u->shard[0];
    int rc = unit_ids(u);
    if (rc) return ag_err_set(err, rc, "out of memory");
    if ((rc = unit_check(u, err)) || (rc = unit_intent(u, c, err))) return rc;
    struct ag_append_part xp = {u->xs_stream, strlen(u->xs_stream), AG_STORE_ANY, &u->intent_ev, 1};
    struct shard_store *ss = u->ss;
    pthread_mutex_lock(&ss->lock);
    ss->xs_inflight++;
    pthread_mutex_unlock(&ss->lock);
    rc = append_on(u, c, &xp, out, err);
    bool done[AG_STORE_SHARDS_MAX] = {0};
    done[c] = true;
    for (size_t i = 0; i < u->n && !rc; i++) {
        size_t k = u->shard[i];
        if (done[k]) continue;
        done[k] = true;
        if ((rc = append_on(u, k, NULL, out, err)))
            AG_ERROR("store.shard_unit_incomplete", AG_LS("stream", u->parts[i].stream),
                     AG_LU("shard", k), AG_LS("error", err ? err->msg : ag_strerror(rc)),
                     AG_LS("note", "completed at the next open"));
    }
    pthread_mutex_lock(&ss->lock);
    ss->xs_inflight--;
    if (!rc) ss->xs_units++;
    pthread_mutex_unlock(&ss->lock);
    return rc;
}

int ag__shard_append_multi(struct ag_store *s, const struct ag_append_part *parts, size_t nparts,
                           struct ag_append_result *out, struct ag_err *err)
{
    struct shard_store *ss = (struct shard_store *)s;
    struct unit u = {.ss = ss, .in = parts, .n = nparts};
    bool one = true;
    for (size_t i = 0; i < nparts; i++) {
        u.shard[i] = ag__shard_route(ss, parts[i].stream, parts[i].stream_len);
        one = one && u.shard[i] == u.shard[0];
    }
    struct ag_store *m = ss->sh[u.shard[0]];
    int lrc = ag__shard_layout_ensure(ss, err);
    if (lrc) return lrc;
    if (!m->ops->append_multi)
        return ag_err_set(err, AG_EUNSUPPORTED,
                          "the '%s' store cannot append to several streams atomically",
                          m->ops->name);
    if (one) {
        int rc = m->ops->append_multi(m, parts, nparts, out, err);
        for (size_t i = 0; !rc && out && i < nparts; i++)
            ag__shard_encode_result(&out[i], u.shard[0]);
        return rc;
    }
    int rc = unit_commit(&u, out, err);
    ag_free(u.ev);
    ag_buf_free(&u.intent);
    return rc;
}

/* ---- asynchronous: one shard is its member's; a unit runs on a worker ---- */

int ag__shard_append_multi_async(struct ag_store *s, struct ag_append_multi_req *req)
{
    struct shard_store *ss = (struct shard_store *)s;
    size_t k0 = ag__shard_route(ss, req->parts[0].stream, req->parts[0].stream_len);
    bool one = true;
    for (size_t i = 1; i < req->nparts && one; i++)
        one = ag__shard_route(ss, req->parts[i].stream, req->parts[i].stream_len) == k0;
    struct ag_store *m = ss->sh[k0];
    int lrc = ag__shard_layout_ensure(ss, &req->req.err);
    if (lrc) return lrc;
    if (one) {
        if (!m->ops->append_multi_async) return AG_EUNSUPPORTED;
        req->req.pos_base = ag_store_pos_make(k0, 0);
        req->req.pos_results = req->results;
        req->req.pos_n = req->results ? req->nparts : 0;
        return m->ops->append_multi_async(m, req);
    }
    pthread_mutex_lock(&ss->lock);
    if (!ss->xs_started) {
        pthread_mutex_unlock(&ss->lock);
        return AG_EUNSUPPORTED;
    }
    req->req.next_done = NULL;
    if (ss->xs_tail)
        ss->xs_tail->req.next_done = &req->req;
    else
        ss->xs_head = req;
    ss->xs_tail = req;
    pthread_cond_signal(&ss->xs_cond);
    pthread_mutex_unlock(&ss->lock);
    return 0;
}

static struct ag_append_multi_req *mreq_of(struct ag_append_req *r)
{
    return r ? (struct ag_append_multi_req *)(void *)((char *)r -
                                                      offsetof(struct ag_append_multi_req, req))
             : NULL;
}

static void run_job(struct shard_store *ss, struct ag_append_multi_req *m)
{
    struct ag_append_result tmp[AG_STORE_MULTI_MAX];
    struct ag_append_result *res = m->results ? m->results : tmp;
    struct ag_append_req *r = &m->req;
    ag_err_clear(&r->err);
    r->status = ag__shard_append_multi(&ss->base, m->parts, m->nparts, res, &r->err);
    if (!r->status) r->result = res[0];
    r->pos_base = 0;
    ag__store_loop_complete(r);
}

static void *xs_main(void *arg)
{
    struct shard_store *ss = arg;
    pthread_mutex_lock(&ss->lock);
    for (;;) {
        while (!ss->xs_head && ss->xs_started) pthread_cond_wait(&ss->xs_cond, &ss->lock);
        if (!ss->xs_head) break; /* stopping, queue drained */
        struct ag_append_multi_req *m = ss->xs_head;
        ss->xs_head = mreq_of(m->req.next_done);
        if (!ss->xs_head) ss->xs_tail = NULL;
        pthread_mutex_unlock(&ss->lock);
        run_job(ss, m);
        pthread_mutex_lock(&ss->lock);
    }
    pthread_mutex_unlock(&ss->lock);
    return NULL;
}

int ag__shard_xs_start(struct shard_store *ss, struct ag_err *err)
{
    pthread_mutex_lock(&ss->lock);
    ss->xs_started = true;
    pthread_mutex_unlock(&ss->lock);
    for (size_t i = 0; i < SHARD_XS_WORKERS; i++) {
        if (pthread_create(&ss->xs_thread[i], NULL, xs_main, ss) != 0) {
            ag__shard_xs_stop(ss);
            return ag_err_set(err, AG_ENOMEM, "cannot start the cross-shard workers");
        }
        ss->xs_threads++;
    }
    return 0;
}

void ag__shard_xs_stop(struct shard_store *ss)
{
    pthread_mutex_lock(&ss->lock);
    ss->xs_started = false;
    pthread_cond_broadcast(&ss->xs_cond);
    pthread_mutex_unlock(&ss->lock);
    for (size_t i = 0; i < ss->xs_threads; i++) pthread_join(ss->xs_thread[i], NULL);
    ss->xs_threads = 0;
}

/* ---- recovery ---- */

/* Re-append one recorded part (idempotent by its ids). */
static int replay_part(struct shard_store *ss, json_t *jp, struct ag_err *err)
{
    size_t k = (size_t)json_integer_value(json_object_get(jp, "shard"));
    json_t *jev = json_object_get(jp, "events");
    const char *stream = json_string_value(json_object_get(jp, "stream"));
    size_t n = json_array_size(jev);
    if (k >= ss->n || !stream || !n || n > AG_STORE_BATCH_MAX)
        return ag_err_set(err, AG_ECORRUPT, "a cross-shard intent is malformed");
    struct ag_event_data *ev = ag_calloc(n, sizeof *ev);
    if (!ev) return ag_err_set(err, AG_ENOMEM, "out of memory");
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        json_t *e = json_array_get(jev, i);
        const char *id = json_string_value(json_object_get(e, "id"));
        json_t *t = json_object_get(e, "type"), *d = json_object_get(e, "data"),
               *md = json_object_get(e, "metadata");
        if (!id || !json_is_string(t) || ag_uuid_parse(id, strlen(id), &ev[i].id)) {
            rc = ag_err_set(err, AG_ECORRUPT, "a cross-shard intent is malformed");
            break;
        }
        ev[i].type = json_string_value(t), ev[i].type_len = json_string_length(t);
        ev[i].data = json_string_length(d) ? json_string_value(d) : NULL;
        ev[i].data_len = json_string_length(d);
        ev[i].metadata = json_string_length(md) ? json_string_value(md) : NULL;
        ev[i].metadata_len = json_string_length(md);
    }
    struct ag_store *m = ss->sh[k];
    int64_t expected = (int64_t)json_integer_value(json_object_get(jp, "expected"));
    if (!rc) rc = m->ops->append(m, stream, strlen(stream), expected, ev, n, NULL, err);
    if (rc == AG_ECONFLICT) {
        AG_ERROR("store.shard_unit_incomplete", AG_LS("stream", stream), AG_LU("shard", k),
                 AG_LS("error", err ? err->msg : "conflict"));
        rc = 0;
    }
    ag_free(ev);
    return rc;
}

static int replay_intents(struct shard_store *ss, size_t c, const char *xs, int64_t from,
                          int64_t *last, struct ag_err *err)
{
    struct ag_store *m = ss->sh[c];
    for (;;) {
        struct ag_event_page pg;
        int rc = m->ops->read_stream(m, xs, strlen(xs), from, AG_READ_FORWARD, 256, &pg, err);
        if (rc == AG_ENOTFOUND) return 0;
        if (rc) return rc;
        for (size_t i = 0; i < pg.count && !rc; i++) {
            json_t *d = json_loadb(pg.events[i].data, pg.events[i].data_len, 0, NULL);
            json_t *parts = json_object_get(d, "parts");
            for (size_t j = 0; j < json_array_size(parts) && !rc; j++)
                rc = replay_part(ss, json_array_get(parts, j), err);
            json_decref(d);
            *last = pg.events[i].version;
        }
        bool end = pg.end || pg.count == 0;
        from = pg.next_version;
        ag_event_page_free(&pg);
        if (rc || end) return rc;
    }
}

int ag__shard_xs_recover(struct shard_store *ss, struct ag_err *err)
{
    for (size_t c = 0; c < ss->n; c++) {
        char xs[32];
        snprintf(xs, sizeof xs, SHARD_XS_PREFIX "%zu", c);
        struct ag_store *m = ss->sh[c];
        struct ag_snapshot snap;
        int64_t from = 0, last = -1;
        if (m->ops->load_snapshot(m, xs, strlen(xs), &snap, NULL) == 0) {
            from = snap.version + 1;
            ag_snapshot_free(&snap);
        }
        int rc = replay_intents(ss, c, xs, from, &last, err);
        if (rc) return rc;
        if (last >= 0 && m->ops->save_snapshot(m, xs, strlen(xs), last, "{}", 2, err))
            return AG_EIO;
        if (last >= from)
            AG_INFO("store.shard_units_checked", AG_LU("shard", c),
                    AG_LU("units", (unsigned long long)(last - from + 1)));
    }
    return 0;
}

/* At close: with no unit half-way, every intent so far is complete. */
void ag__shard_xs_settle(struct shard_store *ss)
{
    pthread_mutex_lock(&ss->lock);
    bool idle = ss->xs_inflight == 0;
    pthread_mutex_unlock(&ss->lock);
    for (size_t c = 0; idle && c < ss->n; c++) {
        char xs[32];
        snprintf(xs, sizeof xs, SHARD_XS_PREFIX "%zu", c);
        struct ag_store *m = ss->sh[c];
        int64_t v = -1;
        if (m->ops->stream_version(m, xs, strlen(xs), &v) || v < 0) continue;
        struct ag_snapshot snap;
        bool have = m->ops->load_snapshot(m, xs, strlen(xs), &snap, NULL) == 0;
        bool same = have && snap.version == v;
        if (have) ag_snapshot_free(&snap);
        if (!same) m->ops->save_snapshot(m, xs, strlen(xs), v, "{}", 2, NULL);
    }
}
