/*
 * The shard router: the store port over N member stores (`shards:URI,URI,...`).
 *
 * Routing. A stream's shard is a pure function of its name, so reads, snapshots
 * and appends of a stream all go to one member: the pinned shard of its key when
 * an added shard pinned it (layout.c), else jump(XXH3(key), N) where the key is
 * the aggregate id, the name after its first '-' (a name without one is hashed
 * whole). `_xshard-<k>` (the cross-shard intents of xs.c) is on shard k.
 *
 * Positions. A member's position p on shard k is (k << 48) | p for callers
 * (store.h: ag_store_pos_*), so positions stay unique and a consumer can tell a
 * shard's order; $all is ordered and gapless per shard only. ag_store_read_all
 * reads shard 0 to its end, then shard 1, ... (a full one-off scan; backward the
 * reverse); live $all consumers use a cursor (store.c) built on read_shard and
 * wait_shards here.
 *
 * Waking subscribers. One watcher thread per member blocks in the member's
 * wait_head and, when its head moves, records the head and broadcasts `moved`:
 * wait_head / wait_shards wait on that, so an append through any path (async
 * ones complete in the member's own threads; on PostgreSQL another process's)
 * wakes a subscriber at once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/shard/internal.h"

#define WATCH_MS 100 /* a watcher's wait slice: how fast close stops it */

static struct shard_store *ss_of(struct ag_store *s)
{
    return (struct shard_store *)s;
}

/* ---- routing ---- */

uint32_t ag__shard_jump(uint64_t key, uint32_t n)
{
    int64_t b = -1, j = 0;
    while (j < (int64_t)n) {
        b = j;
        key = key * 2862933555777941757ULL + 1;
        j = (int64_t)((double)(b + 1) * ((double)(1LL << 31) / (double)((key >> 33) + 1)));
    }
    return (uint32_t)b;
}

uint64_t ag__shard_key_hash(const char *stream, size_t len)
{
    const char *dash = memchr(stream, '-', len);
    if (dash && (size_t)(dash - stream) + 1 < len) {
        size_t skip = (size_t)(dash - stream) + 1;
        return ag_xxh3(stream + skip, len - skip);
    }
    return ag_xxh3(stream, len);
}

static bool xs_stream(const char *stream, size_t len, size_t *shard)
{
    size_t p = sizeof SHARD_XS_PREFIX - 1;
    if (len <= p || len > p + 3 || memcmp(stream, SHARD_XS_PREFIX, p) != 0) return false;
    size_t k = 0;
    for (size_t i = p; i < len; i++) {
        if (stream[i] < '0' || stream[i] > '9') return false;
        k = k * 10 + (size_t)(stream[i] - '0');
    }
    *shard = k;
    return true;
}

size_t ag__shard_route(const struct shard_store *ss, const char *stream, size_t len)
{
    size_t k;
    if (xs_stream(stream, len, &k) && k < ss->n) return k;
    uint64_t h = ag__shard_key_hash(stream, len);
    uint32_t pinned;
    if (ss->pins.count && ag__shard_pin_get(&ss->pins, h, &pinned) == 0 && pinned < ss->n)
        return pinned;
    return ag__shard_jump(h, (uint32_t)ss->n);
}

size_t ag_store_shard_of(struct ag_store *s, const char *stream, size_t len)
{
    if (!s->ops->shards || s->ops->shards(s) <= 1) return 0;
    return ag__shard_route(ss_of(s), stream, len);
}

/* ---- pins ---- */

static uint64_t pin_key(uint64_t h)
{
    return h ? h : 1;
}

int ag__shard_pin_get(const struct shard_pins *p, uint64_t h, uint32_t *shard)
{
    if (!p->cap) return AG_ENOTFOUND;
    h = pin_key(h);
    for (size_t i = h & (p->cap - 1);; i = (i + 1) & (p->cap - 1)) {
        if (!p->keys[i]) return AG_ENOTFOUND;
        if (p->keys[i] == h) {
            *shard = p->shard[i];
            return 0;
        }
    }
}

static int pins_grow(struct shard_pins *p)
{
    size_t cap = p->cap ? p->cap * 2 : 1024;
    struct shard_pins n = {ag_calloc(cap, sizeof *n.keys), ag_calloc(cap, 1), cap, 0};
    if (!n.keys || !n.shard) {
        ag__shard_pins_free(&n);
        return AG_ENOMEM;
    }
    for (size_t i = 0; i < p->cap; i++)
        if (p->keys[i]) ag__shard_pin_put(&n, p->keys[i], p->shard[i]);
    ag__shard_pins_free(p);
    *p = n;
    return 0;
}

int ag__shard_pin_put(struct shard_pins *p, uint64_t h, uint32_t shard)
{
    if ((p->count + 1) * 2 > p->cap && pins_grow(p)) return AG_ENOMEM;
    h = pin_key(h);
    size_t i = h & (p->cap - 1);
    while (p->keys[i] && p->keys[i] != h) i = (i + 1) & (p->cap - 1);
    if (!p->keys[i]) p->count++;
    p->keys[i] = h;
    p->shard[i] = (uint8_t)shard;
    return 0;
}

void ag__shard_pins_free(struct shard_pins *p)
{
    ag_free(p->keys);
    ag_free(p->shard);
    memset(p, 0, sizeof *p);
}

/* ---- positions ---- */

void ag__shard_encode_page(struct ag_event_page *pg, size_t shard)
{
    for (size_t i = 0; i < pg->count; i++)
        pg->events[i].position = ag_store_pos_make(shard, pg->events[i].position);
}

void ag__shard_encode_result(struct ag_append_result *r, size_t shard)
{
    r->first_position = ag_store_pos_make(shard, r->first_position);
    r->last_position = ag_store_pos_make(shard, r->last_position);
}

/* ---- single-stream operations: the stream's shard ---- */

static struct ag_store *member(struct ag_store *s, const char *stream, size_t len, size_t *k)
{
    struct shard_store *ss = ss_of(s);
    *k = ag__shard_route(ss, stream, len);
    return ss->sh[*k];
}

static int sh_append(struct ag_store *s, const char *stream, size_t stream_len, int64_t expected,
                     const struct ag_event_data *ev, size_t n, struct ag_append_result *out,
                     struct ag_err *err)
{
    size_t k;
    struct ag_store *m = member(s, stream, stream_len, &k);
    struct ag_append_result r;
    int rc = ag__shard_layout_ensure(ss_of(s), err);
    if (!rc) rc = m->ops->append(m, stream, stream_len, expected, ev, n, &r, err);
    if (!rc && out) {
        *out = r;
        ag__shard_encode_result(out, k);
    }
    return rc;
}

static int sh_append_async(struct ag_store *s, struct ag_append_req *req)
{
    size_t k;
    struct ag_store *m = member(s, req->stream, req->stream_len, &k);
    int rc = ag__shard_layout_ensure(ss_of(s), &req->err);
    if (rc) return rc;
    req->pos_base = ag_store_pos_make(k, 0);
    return m->ops->append_async(m, req);
}

static int sh_read_stream(struct ag_store *s, const char *stream, size_t stream_len, int64_t from,
                          enum ag_read_dir dir, size_t max, struct ag_event_page *out,
                          struct ag_err *err)
{
    size_t k;
    struct ag_store *m = member(s, stream, stream_len, &k);
    int rc = m->ops->read_stream(m, stream, stream_len, from, dir, max, out, err);
    if (!rc) ag__shard_encode_page(out, k);
    return rc;
}

static int sh_stream_version(struct ag_store *s, const char *stream, size_t stream_len,
                             int64_t *version)
{
    size_t k;
    struct ag_store *m = member(s, stream, stream_len, &k);
    return m->ops->stream_version(m, stream, stream_len, version);
}

static int sh_save_snapshot(struct ag_store *s, const char *stream, size_t stream_len,
                            int64_t version, const void *state, size_t state_len,
                            struct ag_err *err)
{
    size_t k;
    struct ag_store *m = member(s, stream, stream_len, &k);
    return m->ops->save_snapshot(m, stream, stream_len, version, state, state_len, err);
}

static int sh_load_snapshot(struct ag_store *s, const char *stream, size_t stream_len,
                            struct ag_snapshot *out, struct ag_err *err)
{
    size_t k;
    struct ag_store *m = member(s, stream, stream_len, &k);
    return m->ops->load_snapshot(m, stream, stream_len, out, err);
}

/* ---- $all ---- */

/* Forward from (shard, local): that shard from `local`, then the next shards from
 * their start, until one has events. */
static int read_all_forward(struct shard_store *ss, uint64_t from, size_t max,
                            struct ag_event_page *out, struct ag_err *err)
{
    size_t k = ag_store_pos_shard(from);
    uint64_t local = ag_store_pos_local(from);
    if (k >= ss->n) k = ss->n - 1, local = AG_STORE_LOCAL_MASK;
    for (;; k++, local = 0) {
        struct ag_store *m = ss->sh[k];
        int rc = m->ops->read_all(m, local, AG_READ_FORWARD, max, out, err);
        if (rc) return rc;
        ag__shard_encode_page(out, k);
        bool last = k + 1 == ss->n;
        if (out->count || last) {
            if (out->end && !last) {
                out->end = false;
                out->next_position = ag_store_pos_make(k + 1, 0);
            } else {
                out->next_position = ag_store_pos_make(k, out->next_position);
            }
            return 0;
        }
        ag_event_page_free(out);
    }
}

/* Backward: shard k from `local` (the mask: its end) down to its start, then the
 * shards before it from their ends. */
static int read_all_backward(struct shard_store *ss, uint64_t from, size_t max,
                             struct ag_event_page *out, struct ag_err *err)
{
    size_t k = ag_store_pos_shard(from);
    uint64_t local = ag_store_pos_local(from);
    if (k >= ss->n) k = ss->n - 1, local = AG_STORE_LOCAL_MASK;
    for (;; k--, local = AG_STORE_LOCAL_MASK) {
        struct ag_store *m = ss->sh[k];
        uint64_t at = local == AG_STORE_LOCAL_MASK ? UINT64_MAX : local;
        int rc = m->ops->read_all(m, at, AG_READ_BACKWARD, max, out, err);
        if (rc) return rc;
        ag__shard_encode_page(out, k);
        if (out->count || k == 0) {
            if (out->end && k > 0) {
                out->end = false;
                out->next_position = ag_store_pos_make(k - 1, AG_STORE_LOCAL_MASK);
            } else {
                out->next_position = ag_store_pos_make(k, out->next_position);
            }
            return 0;
        }
        ag_event_page_free(out);
    }
}

static int sh_read_all(struct ag_store *s, uint64_t from, enum ag_read_dir dir, size_t max,
                       struct ag_event_page *out, struct ag_err *err)
{
    struct shard_store *ss = ss_of(s);
    return dir == AG_READ_FORWARD ? read_all_forward(ss, from, max, out, err)
                                  : read_all_backward(ss, from, max, out, err);
}

static size_t sh_shards(struct ag_store *s)
{
    return ss_of(s)->n;
}

static int sh_read_shard(struct ag_store *s, size_t shard, uint64_t from, size_t max,
                         struct ag_event_page *out, struct ag_err *err)
{
    struct shard_store *ss = ss_of(s);
    if (shard >= ss->n) return ag_err_set(err, AG_EINVAL, "no shard %zu", shard);
    struct ag_store *m = ss->sh[shard];
    if (from == UINT64_MAX) { /* where the shard ends now */
        struct ag_store_stats st = {0};
        int rc = m->ops->stats(m, &st);
        memset(out, 0, sizeof *out);
        out->end = true;
        out->next_position = st.events;
        return rc;
    }
    int rc = m->ops->read_all(m, from, AG_READ_FORWARD, max, out, err);
    if (!rc) ag__shard_encode_page(out, shard);
    return rc;
}

/* ---- waiting for new events ---- */

static void *watch_main(void *arg);

struct watch_arg {
    struct shard_store *ss;
    size_t k;
};

static int start_watchers(struct shard_store *ss, struct ag_err *err)
{
    for (size_t k = 0; k < ss->n; k++) {
        struct ag_store_stats st = {0};
        ss->sh[k]->ops->stats(ss->sh[k], &st);
        ss->head[k] = st.events;
    }
    for (size_t k = 0; k < ss->n; k++) {
        struct watch_arg *a = ag_malloc(sizeof *a);
        if (!a) return ag_err_set(err, AG_ENOMEM, "out of memory");
        *a = (struct watch_arg){ss, k};
        if (pthread_create(&ss->watcher[k], NULL, watch_main, a) != 0) {
            ag_free(a);
            return ag_err_set(err, AG_ENOMEM, "cannot start a shard watcher thread");
        }
        ss->watching[k] = true;
    }
    return 0;
}

static void *watch_main(void *arg)
{
    struct watch_arg a = *(struct watch_arg *)arg;
    ag_free(arg);
    struct shard_store *ss = a.ss;
    struct ag_store *m = ss->sh[a.k];
    pthread_mutex_lock(&ss->lock);
    uint64_t seen = ss->head[a.k];
    while (!ss->closing) {
        pthread_mutex_unlock(&ss->lock);
        int rc = m->ops->wait_head(m, seen, WATCH_MS);
        struct ag_store_stats st = {0};
        if (rc == 0) m->ops->stats(m, &st);
        pthread_mutex_lock(&ss->lock);
        if (rc == AG_ECLOSED) break;
        if (rc == 0 && st.events > seen) {
            seen = ss->head[a.k] = st.events;
            pthread_cond_broadcast(&ss->moved);
        }
    }
    pthread_mutex_unlock(&ss->lock);
    return NULL;
}

static void stop_watchers(struct shard_store *ss)
{
    pthread_mutex_lock(&ss->lock);
    ss->closing = true;
    pthread_cond_broadcast(&ss->moved);
    pthread_mutex_unlock(&ss->lock);
    for (size_t k = 0; k < ss->n; k++)
        if (ss->watching[k]) pthread_join(ss->watcher[k], NULL);
}

/* Wait until `ready` says so (under the lock), a timeout or close. */
static int wait_until(struct shard_store *ss,
                      bool (*ready)(const struct shard_store *, const void *), const void *ud,
                      int timeout_ms)
{
    struct timespec ts;
    if (timeout_ms >= 0) ag_deadline_mono_in_ms(&ts, timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&ss->lock);
    while (!ready(ss, ud) && !rc) {
        if (ss->closing)
            rc = AG_ECLOSED;
        else if (timeout_ms < 0)
            pthread_cond_wait(&ss->moved, &ss->lock);
        else if (pthread_cond_timedwait(&ss->moved, &ss->lock, &ts) != 0)
            rc = ready(ss, ud) ? 0 : AG_ETIMEDOUT;
    }
    pthread_mutex_unlock(&ss->lock);
    return rc;
}

struct after_vec {
    const uint64_t *after;
    size_t n;
};

static bool any_past(const struct shard_store *ss, const void *ud)
{
    const struct after_vec *v = ud;
    for (size_t k = 0; k < v->n && k < ss->n; k++)
        if (ss->head[k] > v->after[k]) return true;
    return false;
}

static bool sum_past(const struct shard_store *ss, const void *ud)
{
    uint64_t sum = 0;
    for (size_t k = 0; k < ss->n; k++) sum += ss->head[k];
    return sum > *(const uint64_t *)ud;
}

static int sh_wait_shards(struct ag_store *s, const uint64_t *after, size_t n, int timeout_ms)
{
    struct after_vec v = {after, n};
    return wait_until(ss_of(s), any_past, &v, timeout_ms);
}

/* A scalar `after` is a count of events (a stream subscription's head check). */
static int sh_wait_head(struct ag_store *s, uint64_t after, int timeout_ms)
{
    return wait_until(ss_of(s), sum_past, &after, timeout_ms);
}

/* ---- the rest ---- */

static int sh_list_streams(struct ag_store *s,
                           int (*cb)(void *ud, const char *name, size_t len, int64_t version),
                           void *ud)
{
    struct shard_store *ss = ss_of(s);
    for (size_t k = 0; k < ss->n; k++) {
        int rc = ss->sh[k]->ops->list_streams(ss->sh[k], cb, ud);
        if (rc) return rc;
    }
    return 0;
}

static int sh_stats(struct ag_store *s, struct ag_store_stats *out)
{
    struct shard_store *ss = ss_of(s);
    memset(out, 0, sizeof *out);
    for (size_t k = 0; k < ss->n; k++) {
        struct ag_store_stats st = {0};
        int rc = ss->sh[k]->ops->stats(ss->sh[k], &st);
        if (rc) return rc;
        out->events += st.events, out->streams += st.streams, out->bytes += st.bytes;
        out->segments += st.segments, out->appends += st.appends, out->commits += st.commits;
        out->index_bytes += st.index_bytes, out->index_tables += st.index_tables;
        out->index_entries += st.index_entries, out->index_table_bytes += st.index_table_bytes;
        out->index_mem_streams += st.index_mem_streams, out->index_flushes += st.index_flushes;
        out->index_merges += st.index_merges;
    }
    return 0;
}

/* Writable when every shard is; else the first that is not, its message named. */
static int sh_health(struct ag_store *s, struct ag_store_health *out)
{
    struct shard_store *ss = ss_of(s);
    memset(out, 0, sizeof *out);
    out->writable = true;
    for (size_t k = 0; k < ss->n; k++) {
        struct ag_store_health h;
        ag_store_health(ss->sh[k], &h);
        out->failures += h.failures;
        out->outages += h.outages;
        if (h.writable || !out->writable) continue;
        uint64_t failures = out->failures, outages = out->outages;
        *out = h;
        out->failures = failures, out->outages = outages;
        snprintf(out->message, sizeof out->message, "shard %zu: %.200s", k, h.message);
    }
    return 0;
}

static void shard_free(struct shard_store *ss)
{
    for (size_t k = 0; k < AG_STORE_SHARDS_MAX; k++) { /* a refused list may hold one more */
        ag_store_close(ss->sh[k]);
        ag_free(ss->uri[k]);
    }
    ag__shard_pins_free(&ss->pins);
    pthread_cond_destroy(&ss->moved);
    pthread_cond_destroy(&ss->xs_cond);
    pthread_mutex_destroy(&ss->lock);
    pthread_mutex_destroy(&ss->layout_lock);
    ag_free(ss);
}

static void sh_close(struct ag_store *s)
{
    struct shard_store *ss = ss_of(s);
    ag__shard_xs_stop(ss);
    stop_watchers(ss);
    if (!ss->base.opts.read_only) ag__shard_xs_settle(ss);
    shard_free(ss);
}

static const struct ag_store_ops shard_ops = {
    .name = "shards",
    .append = sh_append,
    .append_async = sh_append_async,
    .append_multi = ag__shard_append_multi,
    .append_multi_async = ag__shard_append_multi_async,
    .read_stream = sh_read_stream,
    .read_all = sh_read_all,
    .stream_version = sh_stream_version,
    .list_streams = sh_list_streams,
    .wait_head = sh_wait_head,
    .save_snapshot = sh_save_snapshot,
    .load_snapshot = sh_load_snapshot,
    .stats = sh_stats,
    .close = sh_close,
    .health = sh_health,
    .shards = sh_shards,
    .read_shard = sh_read_shard,
    .wait_shards = sh_wait_shards,
};

/* ---- opening ---- */

static size_t scheme_of(const char *uri, char *out, size_t n)
{
    const char *c = strchr(uri, ':');
    size_t len = c ? (size_t)(c - uri) : 0;
    if (!c || len < 2 || strchr(uri, '/') < c) len = 0; /* a bare path: the log */
    snprintf(out, n, "%.*s", (int)(len ? len : 4), len ? uri : "file");
    for (char *p = out; *p; p++)
        if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
    if (strcmp(out, "postgres") == 0) snprintf(out, n, "postgresql");
    return len;
}

/* Split `list` into ss->uri[], checking what can be checked without opening. */
static int parse_list(struct shard_store *ss, const char *list, struct ag_err *err)
{
    if (!list || !*list)
        return ag_err_set(err, AG_EINVAL,
                          "store URI 'shards:' names no shard (shards:URI,URI,...)");
    char first[32] = "";
    for (const char *p = list;;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (len == 0)
            return ag_err_set(err, AG_EINVAL, "store URI 'shards:%s': shard %zu is empty", list,
                              ss->n);
        if (ss->n == AG_STORE_SHARDS_MAX)
            return ag_err_set(err, AG_EINVAL, "store URI 'shards:': more than %d shards",
                              AG_STORE_SHARDS_MAX);
        if (!(ss->uri[ss->n] = ag_strndup(p, len)))
            return ag_err_set(err, AG_ENOMEM, "out of memory");
        const char *u = ss->uri[ss->n];
        char sch[32];
        scheme_of(u, sch, sizeof sch);
        if (strcmp(sch, "shards") == 0)
            return ag_err_set(err, AG_EINVAL, "store URI 'shards:': a shard cannot be 'shards:'");
        if (ss->n == 0) snprintf(first, sizeof first, "%s", sch);
        if (strcmp(sch, first) != 0)
            return ag_err_set(err, AG_EINVAL,
                              "store URI 'shards:': shard %zu is '%s:' but shard 0 is '%s:' "
                              "(all shards must use one scheme)",
                              ss->n, sch, first);
        for (size_t j = 0; j < ss->n; j++)
            if (strcmp(ss->uri[j], u) == 0)
                return ag_err_set(err, AG_EINVAL,
                                  "store URI 'shards:': '%s' is both shard %zu and shard %zu", u, j,
                                  ss->n);
        ss->n++;
        if (!c) break;
        p = c + 1;
    }
    return 0;
}

static int open_members(struct shard_store *ss, const struct ag_store_options *opts,
                        struct ag_err *err)
{
    for (size_t k = 0; k < ss->n; k++) {
        int rc = ag_store_open(ss->uri[k], opts, &ss->sh[k], err);
        if (rc) {
            char msg[sizeof err->msg];
            snprintf(msg, sizeof msg, "%s", err ? err->msg : "");
            ag_err_set(err, rc, "shard %zu (%s): %s", k, ss->uri[k], msg);
            return rc;
        }
    }
    return 0;
}

static struct shard_store *shard_new(const struct ag_store_options *opts)
{
    struct shard_store *ss = ag_calloc(1, sizeof *ss);
    if (!ss) return NULL;
    ss->base.ops = &shard_ops;
    if (opts) ss->base.opts = *opts;
    pthread_mutex_init(&ss->lock, NULL);
    pthread_mutex_init(&ss->layout_lock, NULL);
    ag_cond_init_mono(&ss->moved);
    ag_cond_init_mono(&ss->xs_cond);
    return ss;
}

/* Open the members of `list` without layout checks or threads (add-shard). */
int ag__shard_open_raw(const char *list, const struct ag_store_options *opts,
                       struct shard_store **out, struct ag_err *err)
{
    struct shard_store *ss = shard_new(opts);
    if (!ss) return ag_err_set(err, AG_ENOMEM, "out of memory");
    int rc = parse_list(ss, list, err);
    if (!rc) rc = open_members(ss, opts, err);
    if (rc) {
        shard_free(ss);
        return rc;
    }
    *out = ss;
    return 0;
}

void ag__shard_close_raw(struct shard_store *ss)
{
    shard_free(ss);
}

int ag_store_shard_open(const char *list, const struct ag_store_options *opts,
                        struct ag_store **out, struct ag_err *err)
{
    struct shard_store *ss = NULL;
    int rc = ag__shard_open_raw(list, opts, &ss, err);
    if (rc || !ss) return rc ? rc : AG_ENOMEM;
    bool ro = opts && opts->read_only;
    if (!rc) rc = ag__shard_layout_load(ss, !ro, err);
    if (!rc && !ro) rc = ag__shard_xs_recover(ss, err);
    if (!rc) rc = start_watchers(ss, err);
    if (!rc && !ro) rc = ag__shard_xs_start(ss, err);
    if (rc) {
        sh_close(&ss->base);
        return rc;
    }
    *out = &ss->base;
    return 0;
}
