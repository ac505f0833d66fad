/*
 * The log's single writer thread and the append paths that feed it.
 *
 * Callers encode their records (in their own thread, so encoding scales with the
 * callers) and queue a `struct lreq`. The writer drains the queue into a group:
 * for each request it checks the expected version against the durable index plus
 * what earlier requests of this group made pending (`lstore.pend`, cleared after
 * each group), answers idempotent re-appends from the log, assigns
 * versions and positions, seals the checksums and copies the records into the
 * group buffer. One pwrite + one fdatasync make the group durable; only then is
 * the index updated (readers never see undurable events) and the callers woken.
 * All memory the publish step needs is reserved while planning, so a durable
 * group can always be published.
 *
 * When a write fails the writer stops acknowledging and retries in the background
 * (WRITE FAILURES at the top of log.c): appends fail fast with AG_EUNAVAILABLE,
 * the writer wakes at each retry deadline even when nothing is queued, and the
 * state is published for ag_store_health under `health_lock`.
 */
#include <errno.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "store/log/internal.h"

/* ---- encoding (caller's thread) ---- */

static size_t encoded_size(size_t stream_len, const struct ag_event_data *ev, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t ml = ev[i].metadata_len ? ev[i].metadata_len : 2;
        size_t dl = ev[i].data_len ? ev[i].data_len : 2;
        total += ag__log_rec_size(stream_len, ev[i].type_len, ml, dl);
    }
    return total;
}

/* Append the records of `n` events of `stream` to `enc` (room reserved for their
 * raw form: a record is compressed only when that makes it shorter, dict.c). */
static void encode_into(struct lstore *ls, struct ag_buf *enc, const char *stream,
                        size_t stream_len, const struct ag_event_data *ev, size_t n)
{
    struct ag_buf z;
    ag_buf_init(&z);
    for (size_t i = 0; i < n; i++) {
        struct log_rec rec = {
            .kind = LOG_KIND_EVENT,
            .id = ev[i].id,
            .batch_left = (uint32_t)(n - 1 - i),
            .stream = stream,
            .stream_len = (uint16_t)stream_len,
            .type = ev[i].type,
            .type_len = (uint16_t)ev[i].type_len,
            .meta = ev[i].metadata_len ? ev[i].metadata : "{}",
            .meta_len = (uint32_t)(ev[i].metadata_len ? ev[i].metadata_len : 2),
            .data = ev[i].data_len ? ev[i].data : "{}",
            .data_len = (uint32_t)(ev[i].data_len ? ev[i].data_len : 2),
        };
        if (ag_uuid_is_nil(&rec.id)) ag_uuid_v7(&rec.id, ls->base.opts.clock, ls->base.opts.rng);
        rec.size =
            (uint32_t)ag__log_rec_size(rec.stream_len, rec.type_len, rec.meta_len, rec.data_len);
        if (ag__log_compress(ls, &rec, &z, &rec.dict)) {
            rec.zbody = (const uint8_t *)z.data;
            rec.zbody_len = (uint32_t)z.len;
            rec.size = (uint32_t)ag__log_rec_size_z(rec.stream_len, z.len);
        }
        ag__log_rec_encode((uint8_t *)enc->data + enc->len, &rec);
        enc->len += rec.size;
    }
    ag_buf_free(&z);
}

static int encode(struct lstore *ls, struct lreq *r, const struct ag_event_data *ev, size_t n)
{
    if (ag_buf_reserve(&r->enc, encoded_size(r->stream_len, ev, n))) return AG_ENOMEM;
    r->locs = ag_malloc(n * sizeof *r->locs);
    if (!r->locs) return AG_ENOMEM;
    encode_into(ls, &r->enc, r->stream, r->stream_len, ev, n);
    r->n = n;
    return 0;
}

static int enqueue(struct lstore *ls, struct lreq *r)
{
    pthread_mutex_lock(&ls->q_lock);
    if (ls->closing) {
        pthread_mutex_unlock(&ls->q_lock);
        return AG_ECLOSED;
    }
    r->next = NULL;
    if (ls->q_tail)
        ls->q_tail->next = r;
    else
        ls->q_head = r;
    ls->q_tail = r;
    pthread_cond_signal(&ls->q_cond);
    pthread_mutex_unlock(&ls->q_lock);
    return 0;
}

static void lreq_init(struct lreq *r, uint8_t kind, const char *stream, size_t len,
                      int64_t expected)
{
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->stream = stream;
    r->stream_len = len;
    r->hash = ag_xxh3(stream, len);
    r->expected = expected;
    ag_buf_init(&r->enc);
}

static void lreq_release(struct lreq *r)
{
    ag_buf_free(&r->enc);
    ag_free(r->locs);
    ag_free(r->parts); /* the views own nothing */
}

/* Queue `r` and wait for the writer's answer. */
static int run_sync(struct lstore *ls, struct lreq *r, struct ag_err *err)
{
    sem_t done;
    sem_init(&done, 0, 0);
    r->done = &done;
    int rc = enqueue(ls, r);
    if (rc) {
        ag_err_set(err, rc, "store is closing");
    } else {
        while (sem_wait(&done) != 0 && errno == EINTR) {
        }
        rc = r->status;
        if (rc && err) *err = r->err;
    }
    sem_destroy(&done);
    r->done = NULL; /* the semaphore lived in this frame */
    return rc;
}

int ag__log_append(struct ag_store *s, const char *stream, size_t stream_len, int64_t expected,
                   const struct ag_event_data *ev, size_t n, struct ag_append_result *out,
                   struct ag_err *err)
{
    struct lstore *ls = (struct lstore *)s;
    if (ls->read_only) return ag_err_set(err, AG_EINVAL, "store is open read-only");
    struct lreq r;
    lreq_init(&r, LOG_KIND_EVENT, stream, stream_len, expected);
    r.events = ev;
    int rc = encode(ls, &r, ev, n);
    if (rc)
        ag_err_set(err, rc, "out of memory encoding %zu events", n);
    else
        rc = run_sync(ls, &r, err);
    if (!rc && out) *out = r.res;
    lreq_release(&r);
    return rc;
}

int ag__log_append_async(struct ag_store *s, struct ag_append_req *req)
{
    struct lstore *ls = (struct lstore *)s;
    if (ls->read_only) return AG_EINVAL;
    struct lreq *r = ag_malloc(sizeof *r);
    if (!r) return AG_ENOMEM;
    lreq_init(r, LOG_KIND_EVENT, req->stream, req->stream_len, req->expected_version);
    r->events = req->events;
    r->areq = req;
    int rc = encode(ls, r, req->events, req->count);
    if (!rc) rc = enqueue(ls, r);
    if (rc) {
        lreq_release(r);
        ag_free(r);
    }
    return rc;
}

/* A multi-stream append: the parts' records back to back in r->enc (the writer
 * adds the batch header and fixes batch_left once it knows which parts repeat an
 * earlier append), one view request per part. */
static int encode_multi(struct lstore *ls, struct lreq *r, const struct ag_append_part *parts,
                        size_t nparts)
{
    size_t total = 0, n = 0;
    for (size_t i = 0; i < nparts; i++) {
        total += encoded_size(parts[i].stream_len, parts[i].events, parts[i].count);
        n += parts[i].count;
    }
    if (ag_buf_reserve(&r->enc, total) || !(r->locs = ag_malloc((n + 1) * sizeof *r->locs)) ||
        !(r->parts = ag_calloc(nparts, sizeof *r->parts)))
        return AG_ENOMEM;
    uint64_t *locs = r->locs + 1;
    for (size_t i = 0; i < nparts; i++) {
        const struct ag_append_part *a = &parts[i];
        struct lreq *p = &r->parts[i];
        size_t at = r->enc.len;
        lreq_init(p, LOG_KIND_EVENT, a->stream, a->stream_len, a->expected_version);
        encode_into(ls, &r->enc, a->stream, a->stream_len, a->events, a->count);
        p->events = a->events;
        p->n = a->count;
        p->locs = locs;
        p->enc.len = r->enc.len - at; /* enc.data is set once r->enc stops moving */
        p->enc.cap = at;              /* (its offset, until then) */
        locs += a->count;
    }
    for (size_t i = 0; i < nparts; i++) {
        r->parts[i].enc.data = r->enc.data + r->parts[i].enc.cap;
        r->parts[i].enc.cap = r->parts[i].enc.len;
    }
    r->nparts = nparts;
    r->n = n;
    return 0;
}

int ag__log_append_multi(struct ag_store *s, const struct ag_append_part *parts, size_t nparts,
                         struct ag_append_result *out, struct ag_err *err)
{
    struct lstore *ls = (struct lstore *)s;
    if (ls->read_only) return ag_err_set(err, AG_EINVAL, "store is open read-only");
    struct lreq r;
    lreq_init(&r, LOG_KIND_BATCH, parts[0].stream, parts[0].stream_len, AG_STORE_ANY);
    int rc = encode_multi(ls, &r, parts, nparts);
    if (rc)
        ag_err_set(err, rc, "out of memory encoding a %zu-stream append", nparts);
    else
        rc = run_sync(ls, &r, err);
    for (size_t i = 0; !rc && out && i < nparts; i++) out[i] = r.parts[i].res;
    lreq_release(&r);
    return rc;
}

int ag__log_append_multi_async(struct ag_store *s, struct ag_append_multi_req *mreq)
{
    struct lstore *ls = (struct lstore *)s;
    if (ls->read_only) return AG_EINVAL;
    struct lreq *r = ag_malloc(sizeof *r);
    if (!r) return AG_ENOMEM;
    lreq_init(r, LOG_KIND_BATCH, mreq->parts[0].stream, mreq->parts[0].stream_len, AG_STORE_ANY);
    r->areq = &mreq->req;
    r->mreq = mreq;
    int rc = encode_multi(ls, r, mreq->parts, mreq->nparts);
    if (!rc) rc = enqueue(ls, r);
    if (rc) {
        lreq_release(r);
        ag_free(r);
    }
    return rc;
}

int ag__log_save_snapshot(struct ag_store *s, const char *stream, size_t stream_len,
                          int64_t version, const void *state, size_t state_len, struct ag_err *err)
{
    struct lstore *ls = (struct lstore *)s;
    if (ls->read_only) return ag_err_set(err, AG_EINVAL, "store is open read-only");
    struct lreq r;
    lreq_init(&r, LOG_KIND_SNAPSHOT, stream, stream_len, version);
    struct log_rec rec = {
        .kind = LOG_KIND_SNAPSHOT,
        .version = version,
        .stream = stream,
        .stream_len = (uint16_t)stream_len,
        .data = state,
        .data_len = (uint32_t)state_len,
    };
    rec.size = (uint32_t)ag__log_rec_size(stream_len, 0, 0, state_len);
    int rc = ag_buf_reserve(&r.enc, rec.size);
    if (!rc && !(r.locs = ag_malloc(sizeof *r.locs))) rc = AG_ENOMEM;
    if (rc) {
        lreq_release(&r);
        return ag_err_set(err, rc, "out of memory encoding a snapshot");
    }
    ag__log_rec_encode((uint8_t *)r.enc.data, &rec);
    r.enc.len = rec.size;
    r.n = 1;
    rc = run_sync(ls, &r, err);
    lreq_release(&r);
    return rc;
}

/* ---- planning (writer thread) ---- */

/* ---- pending versions of the group being planned ---- */

static size_t pend_slot(const struct lstore *ls, const struct lstream *st)
{
    size_t mask = ls->pend_cap - 1, i = (size_t)(st->hash * 0x9E3779B97F4A7C15ull >> 20) & mask;
    while (ls->pend[i].st && ls->pend[i].st != st) i = (i + 1) & mask;
    return i;
}

static const struct lpend *pend_get(const struct lstore *ls, const struct lstream *st)
{
    if (!ls->pend_n) return NULL;
    const struct lpend *p = &ls->pend[pend_slot(ls, st)];
    return p->st ? p : NULL;
}

/* Room for `extra` more streams, so that the next pend_set calls cannot fail. */
static int pend_grow(struct lstore *ls, size_t extra)
{
    if ((ls->pend_n + extra) * 2 > ls->pend_cap) {
        size_t cap = ls->pend_cap ? ls->pend_cap * 2 : 64;
        while ((ls->pend_n + extra) * 2 > cap) cap *= 2;
        struct lpend *old = ls->pend;
        size_t old_cap = ls->pend_cap;
        if (!(ls->pend = ag_calloc(cap, sizeof *ls->pend))) {
            ls->pend = old;
            return AG_ENOMEM;
        }
        ls->pend_cap = cap;
        for (size_t i = 0; i < old_cap; i++)
            if (old[i].st) ls->pend[pend_slot(ls, old[i].st)] = old[i];
        ag_free(old);
    }
    return 0;
}

static int pend_set(struct lstore *ls, struct lstream *st, int64_t version)
{
    if (pend_grow(ls, 1)) return AG_ENOMEM;
    struct lpend *p = &ls->pend[pend_slot(ls, st)];
    if (!p->st) ls->pend_n++;
    *p = (struct lpend){st, version};
    return 0;
}

static void pend_clear(struct lstore *ls)
{
    if (ls->pend_n) memset(ls->pend, 0, ls->pend_cap * sizeof *ls->pend);
    ls->pend_n = 0;
}

static int64_t current_version(const struct lstore *ls, const struct lstream *st)
{
    if (!st) return -1;
    const struct lpend *p = pend_get(ls, st);
    return p ? p->version : (int64_t)st->count - 1;
}

static bool expected_ok(int64_t expected, int64_t cur)
{
    switch (expected) {
    case AG_STORE_ANY:
        return true;
    case AG_STORE_NO_STREAM:
        return cur == -1;
    case AG_STORE_STREAM_EXISTS:
        return cur >= 0;
    default:
        return expected == cur;
    }
}

static void expected_str(int64_t e, char out[32])
{
    switch (e) {
    case AG_STORE_ANY:
        snprintf(out, 32, "any");
        break;
    case AG_STORE_NO_STREAM:
        snprintf(out, 32, "no-stream");
        break;
    case AG_STORE_STREAM_EXISTS:
        snprintf(out, 32, "exists");
        break;
    default:
        snprintf(out, 32, "%lld", (long long)e);
        break;
    }
}

/* Same content? Compares type, metadata and data of a stored record with an
 * encoded one. */
static bool same_content(const struct log_rec *a, const struct log_rec *b)
{
    return a->type_len == b->type_len && a->meta_len == b->meta_len && a->data_len == b->data_len &&
           memcmp(a->type, b->type, a->type_len) == 0 &&
           memcmp(a->meta, b->meta, a->meta_len) == 0 && memcmp(a->data, b->data, a->data_len) == 0;
}

/* The same for two intact records, either of them maybe compressed. */
static bool same_content_of(const struct lstore *ls, const uint8_t *a, const uint8_t *b)
{
    struct log_rec ra, rb;
    struct ag_buf sa, sb;
    ag_buf_init(&sa);
    ag_buf_init(&sb);
    const char *why;
    bool same = ag__log_rec_body(ls, a, &ra, &sa, &why) == 0 &&
                ag__log_rec_body(ls, b, &rb, &sb, &why) == 0 && same_content(&ra, &rb);
    ag_buf_free(&sa);
    ag_buf_free(&sb);
    return same;
}

static int64_t find_first_id(const struct lstore *ls, struct lstream *st, const struct lreq *r,
                             const struct ag_uuid *id)
{
    int64_t c = st->count;
    if (r->expected >= 0) return r->expected + 1 < c ? r->expected + 1 : -1;
    if (r->expected == AG_STORE_NO_STREAM) return 0;
    uint32_t h = ag__id_hash(id);
    struct lentry *e = lstream_entries(st);
    int64_t stop = c > LOG_ANY_DEDUP_WINDOW ? c - LOG_ANY_DEDUP_WINDOW : 0;
    for (int64_t i = c - 1; i >= stop; i--) {
        const uint8_t *p;
        struct ag_uuid stored;
        if (e[i].idh != h || ag__log_rec_checked(ls, e[i].loc, &p, NULL) != 0) continue;
        ag__log_rec_id(p, &stored);
        if (memcmp(stored.b, id->b, 16) == 0) return i;
    }
    return -1;
}

/* 1: `r` repeats an append already in the log (r->res filled); 0: it does not;
 * AG_EIDEMPOTENCY: its ids are in the log with other content. */
static int dedup(struct lstore *ls, struct lreq *r, struct lstream *st)
{
    struct log_rec old;
    struct ag_uuid first;
    const char *why;
    const uint8_t *p = (const uint8_t *)r->enc.data;
    ag__log_rec_id(p, &first);
    int64_t idx = find_first_id(ls, st, r, &first);
    if (idx < 0) return 0;
    struct lentry *e = lstream_entries(st);
    for (size_t k = 0; k < r->n; k++, p += ag__log_rec_len(p)) {
        struct log_rec mine;
        const uint8_t *stored = NULL;
        bool have = idx + (int64_t)k < (int64_t)st->count &&
                    ag__log_rec_checked(ls, e[idx + k].loc, &stored, NULL) == 0 &&
                    ag__log_rec_decode(stored, ag__log_rec_len(stored), &old, &why) == 0;
        ag__log_rec_fields(p, &mine); /* our own record: not sealed yet (no checksum) */
        bool same_id = have && memcmp(old.id.b, mine.id.b, 16) == 0;
        if (!same_id)
            return k == 0 ? 0
                          : ag_err_set(&r->err, AG_EIDEMPOTENCY,
                                       "stream '%.*s': event %zu of the batch differs "
                                       "from the append it repeats",
                                       (int)r->stream_len, r->stream, k);
        if (!same_content_of(ls, stored, p)) {
            char ids[AG_UUID_STRLEN + 1];
            ag_uuid_format(&old.id, ids);
            return ag_err_set(&r->err, AG_EIDEMPOTENCY,
                              "event id %s is already in stream '%.*s' with different content", ids,
                              (int)r->stream_len, r->stream);
        }
        if (k == 0) r->res.first_position = old.position;
        r->res.last_position = old.position;
    }
    r->res.first_version = idx;
    r->res.last_version = idx + (int64_t)r->n - 1;
    return 1;
}

static int reserve(struct lstore *ls, struct lreq *r, struct lstream **stp, int64_t cur,
                   uint64_t last_pos)
{
    int rc = 0;
    pthread_rwlock_wrlock(&ls->ix_lock);
    struct lstream *st = *stp;
    if (!st && !(st = ag__lindex_add(&ls->ix, r->stream, r->stream_len, r->hash))) rc = AG_ENOMEM;
    if (!rc && r->kind == LOG_KIND_EVENT)
        rc = ag__lindex_reserve(&ls->ix, st, (size_t)(cur + 1 - (int64_t)st->count) + r->n);
    size_t need = (size_t)(last_pos / LOG_SPARSE_EVERY) + 1;
    if (!rc && need > ls->sparse_cap) {
        size_t cap = ls->sparse_cap ? ls->sparse_cap : 1024;
        while (cap < need) cap *= 2;
        uint64_t *sp = ag_realloc(ls->sparse, cap * sizeof *sp);
        if (sp)
            ls->sparse = sp, ls->sparse_cap = cap;
        else
            rc = AG_ENOMEM;
    }
    pthread_rwlock_unlock(&ls->ix_lock);
    *stp = st;
    return rc;
}

/* Add `r`'s records to the group in the compact form (format 3): callers encode
 * the in-memory form (fixed header), the writer writes each record's fields once
 * it knows its position, version and time. */
static int place3(struct lstore *ls, struct lreq *r, uint64_t pos0, int64_t ver0, uint64_t now)
{
    const struct lseg *sg = &ls->segs[ls->nsegs - 1];
    if (ag_buf_reserve(&ls->group, r->enc.len + r->n * LOG_REC3_SLACK)) return AG_ENOMEM;
    const uint8_t *p = (const uint8_t *)r->enc.data;
    for (size_t k = 0; k < r->n; k++, p += ag__log_rec_len(p)) {
        struct log_rec rec;
        ag__log_rec_fields(p, &rec);
        bool ev = r->kind == LOG_KIND_EVENT;
        rec.position = ev ? pos0 + k : 0;
        rec.version = ev ? ver0 + (int64_t)k : r->expected;
        rec.time_ns = now;
        r->locs[k] = loc_make(sg->segno, sg->end + ls->group.len);
        ls->group.len += ag__log_rec3_encode((uint8_t *)ls->group.data + ls->group.len, &rec);
    }
    return 0;
}

static uint32_t tail_format(const struct lstore *ls)
{
    return ag__log_seg_format(ls->segs[ls->nsegs - 1].map);
}

/* Seal `r`'s records and add them to the group. */
static int place(struct lstore *ls, struct lreq *r, uint64_t pos0, int64_t ver0, uint64_t now)
{
    if (tail_format(ls) >= LOG_FORMAT_VERSION) return place3(ls, r, pos0, ver0, now);
    const struct lseg *sg = &ls->segs[ls->nsegs - 1];
    uint8_t *p = (uint8_t *)r->enc.data;
    for (size_t k = 0; k < r->n; k++) {
        uint32_t size = ag__log_rec_len(p);
        uint64_t off = sg->end + ls->group.len + (uint64_t)(p - (uint8_t *)r->enc.data);
        if (r->kind == LOG_KIND_EVENT)
            ag__log_rec_seal(p, pos0 + k, ver0 + (int64_t)k, now);
        else
            ag__log_rec_seal(p, 0, r->expected, now);
        r->locs[k] = loc_make(sg->segno, off);
        p += size;
    }
    return ag_buf_append(&ls->group, r->enc.data, r->enc.len);
}

/* The writer's view of a stream: the memtable's, brought in from a table if
 * needed. false (r->status set) when a table could not be read. */
static bool writer_find(struct lstore *ls, struct lreq *r, struct lstream **st, struct ag_err *err,
                        int *status)
{
    int rc = ag__lidx_fault(ls, r->stream, r->stream_len, r->hash, st, true);
    if (!rc) return true;
    *status = ag_err_set(err, rc == AG_ENOMEM ? AG_ENOMEM : AG_EUNAVAILABLE,
                         rc == AG_ENOMEM ? "out of memory looking up stream '%.*s'"
                                         : "stream '%.*s': the on-disk stream index cannot be "
                                           "read (restart to rebuild it from the log)",
                         (int)r->stream_len, r->stream);
    return false;
}

static void plan_snapshot(struct lstore *ls, struct lreq *r)
{
    struct lstream *st;
    if (!writer_find(ls, r, &st, &r->err, &r->status)) return;
    int64_t cur = current_version(ls, st);
    if (cur < 0) {
        r->status = ag_err_set(&r->err, AG_ENOTFOUND, "stream '%.*s' has no events to snapshot",
                               (int)r->stream_len, r->stream);
        return;
    }
    if (r->expected > cur) {
        r->status = ag_err_set(
            &r->err, AG_EINVAL, "snapshot version %lld is beyond stream '%.*s' (at %lld)",
            (long long)r->expected, (int)r->stream_len, r->stream, (long long)cur);
        return;
    }
    if (place(ls, r, 0, 0, ag_clock_now(ls->base.opts.clock))) {
        r->status = ag_err_set(&r->err, AG_ENOMEM, "out of memory");
        return;
    }
    r->st = st;
    r->accepted = true;
}

static int conflict(struct ag_err *err, const struct lreq *r, int64_t cur)
{
    char want[32];
    expected_str(r->expected, want);
    ag_err_set(err, AG_ECONFLICT, "stream '%.*s': expected version %s, but the stream is at %lld%s",
               (int)r->stream_len, r->stream, want, (long long)cur, cur < 0 ? " (no stream)" : "");
    err->aux = cur;
    return AG_ECONFLICT;
}

static void plan_events(struct lstore *ls, struct lreq *r, uint64_t *group_events)
{
    struct lstream *st;
    if (!writer_find(ls, r, &st, &r->err, &r->status)) return;
    int64_t cur = current_version(ls, st);
    bool ok = expected_ok(r->expected, cur);
    if (st && st->count &&
        (!ok || r->expected == AG_STORE_ANY || r->expected == AG_STORE_STREAM_EXISTS)) {
        int d = dedup(ls, r, st);
        if (d) {
            r->dedup = d == 1;
            r->status = d == 1 ? 0 : d;
            return;
        }
    }
    if (!ok) {
        r->status = conflict(&r->err, r, cur);
        return;
    }
    uint64_t pos0 = ag__log_head(ls) + *group_events;
    size_t glen = ls->group.len;
    /* pend_set last: a failure rolls back only the bytes this request added */
    if (reserve(ls, r, &st, cur, pos0 + r->n) ||
        place(ls, r, pos0, cur + 1, ag_clock_now(ls->base.opts.clock)) ||
        pend_set(ls, st, cur + (int64_t)r->n)) {
        ls->group.len = glen;
        r->status = ag_err_set(&r->err, AG_ENOMEM, "out of memory appending to '%.*s'",
                               (int)r->stream_len, r->stream);
        return;
    }
    r->st = st;
    r->accepted = true;
    r->res = (struct ag_append_result){cur + 1, cur + (int64_t)r->n, pos0, pos0 + r->n - 1};
    *group_events += r->n;
}

/* The batch header of a multi-stream unit, in the group (its location in r->locs[0]). */
static int add_unit_header(struct lstore *ls, struct lreq *r, size_t events, size_t streams,
                           uint64_t pos0, uint64_t now)
{
    const struct lseg *sg = &ls->segs[ls->nsegs - 1];
    uint8_t hdr[LOG_BATCH_REC_SIZE];
    size_t hn = ag__log_batch_encode_fmt(hdr, tail_format(ls), (uint32_t)events, (uint32_t)streams,
                                         pos0, now);
    r->locs[0] = loc_make(sg->segno, sg->end + ls->group.len);
    return pend_grow(ls, streams) || ag_buf_append(&ls->group, hdr, hn) ? AG_ENOMEM : 0;
}

/* Check every part of a multi-stream append (r->parts), answer the parts that
 * repeat an earlier append from the log, then place the rest behind one batch
 * header: all of them or, on a conflict or an error, none. */
static void plan_multi(struct lstore *ls, struct lreq *r, uint64_t *group_events)
{
    int64_t cur[AG_STORE_MULTI_MAX];
    size_t events = 0, streams = 0;
    for (size_t i = 0; i < r->nparts; i++) {
        struct lreq *p = &r->parts[i];
        if (!writer_find(ls, p, &p->st, &r->err, &r->status)) return;
        cur[i] = current_version(ls, p->st);
        bool ok = expected_ok(p->expected, cur[i]);
        if (p->st && p->st->count &&
            (!ok || p->expected == AG_STORE_ANY || p->expected == AG_STORE_STREAM_EXISTS)) {
            int d = dedup(ls, p, p->st);
            if (d < 0) {
                r->err = p->err;
                r->status = d;
                return;
            }
            if ((p->dedup = d == 1)) continue;
        }
        if (!ok) {
            r->status = conflict(&r->err, p, cur[i]);
            return;
        }
        events += p->n, streams++;
    }
    if (!streams) { /* the whole unit repeats an earlier one */
        r->dedup = true;
        return;
    }
    uint64_t pos0 = ag__log_head(ls) + *group_events, pos = pos0;
    size_t glen = ls->group.len;
    uint64_t now = ag_clock_now(ls->base.opts.clock); /* one commit time for the unit */
    int rc = add_unit_header(ls, r, events, streams, pos0, now);
    uint32_t left = (uint32_t)events;
    for (size_t i = 0; i < r->nparts && !rc; i++) {
        struct lreq *p = &r->parts[i];
        if (p->dedup) continue;
        uint8_t *rec = (uint8_t *)p->enc.data;
        for (size_t k = 0; k < p->n; k++, rec += ag__log_rec_len(rec))
            ag__log_rec_set_batch_left(rec, --left);
        rc = reserve(ls, p, &p->st, cur[i], pos + p->n) || place(ls, p, pos, cur[i] + 1, now);
        p->res = (struct ag_append_result){cur[i] + 1, cur[i] + (int64_t)p->n, pos, pos + p->n - 1};
        pos += p->n;
    }
    if (rc) {
        ls->group.len = glen;
        r->status =
            ag_err_set(&r->err, AG_ENOMEM, "out of memory appending to %zu streams", r->nparts);
        return;
    }
    for (size_t i = 0; i < r->nparts; i++) /* room reserved: cannot fail */
        if (!r->parts[i].dedup) pend_set(ls, r->parts[i].st, r->parts[i].res.last_version);
    r->accepted = true;
    r->res.first_position = pos0; /* where the writer's tail check may start */
    *group_events += events;
}

/* ---- write failures (writer thread) ---- */

#define LOG_PROBE_BYTES (64u << 10) /* what a recovery attempt writes to test the disk */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Count a failed I/O call and schedule the next recovery attempt; the first
 * failure of an outage makes the store unavailable and logs the one error line. */
static void note_failure(struct lstore *ls, int os_err, const char *op, const char *detail)
{
    bool first = !ls->unavail;
    ag__log_pa_pause(ls); /* the tail is cut back to `end` from now on */
    ls->unavail = true;
    if (first)
        ls->retry_delay_ns = ls->retry_min_ns;
    else if ((ls->retry_delay_ns *= 2) > ls->retry_max_ns)
        ls->retry_delay_ns = ls->retry_max_ns;
    pthread_mutex_lock(&ls->health_lock);
    struct ag_store_health *h = &ls->health;
    ls->retry_at_ns = mono_ns() + ls->retry_delay_ns;
    h->failures++;
    if (first) {
        h->writable = false;
        h->error = AG_EUNAVAILABLE;
        h->since_ns = ag_clock_now(ls->base.opts.clock);
        h->retries = 0;
        h->outages++;
    }
    h->os_error = os_err;
    snprintf(h->message, sizeof h->message, "%s", strerror(os_err));
    pthread_mutex_unlock(&ls->health_lock);
    if (first)
        AG_ERROR("store.write_failed", AG_LS("dir", ls->dir), AG_LS("op", op),
                 AG_LS("error", strerror(os_err)), AG_LS("detail", detail ? detail : ""),
                 AG_LS("action", "appends refused; retrying in the background"));
}

/* Answer `r` with the retryable error; err.aux is a Retry-After hint in seconds. */
static void refuse(struct lstore *ls, struct lreq *r)
{
    uint64_t wait = ls->retry_at_ns > mono_ns() ? ls->retry_at_ns - mono_ns() : 0;
    r->status = ag_err_set(&r->err, AG_EUNAVAILABLE, "the event store cannot write: %s; retrying",
                           strerror(ls->health.os_error ? ls->health.os_error : EIO));
    r->err.aux = (long long)((wait + 999999999ull) / 1000000000ull);
    if (r->err.aux < 1) r->err.aux = 1;
}

/* Best effort, right after a failure: drop the bytes nobody was told are durable
 * now rather than at the next attempt. A failure only counts (the next attempt
 * cuts again). */
static void cut_now(struct lstore *ls)
{
    if (ag__log_tail_restore(ls, NULL) == 0) return;
    pthread_mutex_lock(&ls->health_lock);
    ls->health.failures++;
    pthread_mutex_unlock(&ls->health_lock);
}

static int probe(struct lstore *ls, struct ag_err *err)
{
    static const uint8_t zeros[LOG_PROBE_BYTES];
    struct lseg *sg = &ls->segs[ls->nsegs - 1];
    int rc = ag__log_io_pwrite(ls, sg->fd, zeros, sizeof zeros, sg->end);
    if (!rc) rc = ag__log_io_sync(ls, sg->fd);
    if (!rc) return 0;
    ag_err_set(err, AG_EUNAVAILABLE, "probe write after offset %llu: %s",
               (unsigned long long)sg->end, strerror(-rc));
    err->aux = -rc;
    return AG_EUNAVAILABLE;
}

/* One recovery attempt: cut the unacknowledged tail, probe, cut the probe, and
 * re-verify the tail (ag__log_tail_restore). Appends resume only if all worked. */
static void try_recover(struct lstore *ls)
{
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag__log_tail_restore(ls, &err);
    if (!rc && (rc = probe(ls, &err))) cut_now(ls); /* no junk between tries */
    if (!rc) rc = ag__log_tail_restore(ls, &err);
    pthread_mutex_lock(&ls->health_lock);
    uint64_t retries = ++ls->health.retries, since = ls->health.since_ns;
    pthread_mutex_unlock(&ls->health_lock);
    if (rc) {
        int os_err = rc == AG_EUNAVAILABLE && err.aux > 0 ? (int)err.aux : EIO;
        note_failure(ls, os_err, "recovery", err.msg);
        AG_DEBUG("store.recovery_attempt_failed", AG_LS("error", err.msg),
                 AG_LU("retries", retries));
        return;
    }
    ls->unavail = false;
    ag__log_pa_reset(ls);
    pthread_mutex_lock(&ls->health_lock);
    struct ag_store_health *h = &ls->health;
    h->writable = true;
    h->error = h->os_error = 0;
    h->message[0] = 0;
    h->since_ns = 0;
    pthread_mutex_unlock(&ls->health_lock);
    uint64_t now = ag_clock_now(ls->base.opts.clock);
    AG_INFO("store.write_recovered", AG_LS("dir", ls->dir),
            AG_LU("outage_ms", now > since ? (now - since) / 1000000u : 0),
            AG_LU("retries", retries));
}

int ag__log_health(struct ag_store *s, struct ag_store_health *out)
{
    struct lstore *ls = (struct lstore *)s;
    pthread_mutex_lock(&ls->health_lock);
    *out = ls->health;
    uint64_t at = ls->retry_at_ns;
    pthread_mutex_unlock(&ls->health_lock);
    uint64_t now = mono_ns();
    out->retry_in_ms = !out->writable && at > now ? (at - now + 999999u) / 1000000u : 0;
    return 0;
}

/* ---- committing (writer thread) ---- */

/* 0, or -errno with *op naming the call that failed. */
static int write_group(struct lstore *ls, const char **op)
{
    struct lseg *sg = &ls->segs[ls->nsegs - 1];
    *op = "write";
    ag__log_pa_before_write(ls, sg->end + ls->group.len);
    int rc = ag__log_io_pwrite(ls, sg->fd, ls->group.data, ls->group.len, sg->end);
    if (rc) return rc;
    *op = "fdatasync";
    return ag__log_io_sync(ls, sg->fd);
}

/* The writer's tail check starts at the group's last batch from now on. */
static void note_tail(struct lstore *ls, struct lreq *from, struct lreq *stop)
{
    struct lreq *last = NULL;
    for (struct lreq *r = from; r != stop; r = r->next)
        if (r->accepted) last = r;
    if (!last) return;
    ls->tail_off = loc_off(last->locs[0]);
    ls->tail_pos = last->kind != LOG_KIND_SNAPSHOT ? last->res.first_position : ag__log_head(ls);
}

/* Add an accepted event request's records to the index (ix_lock held). */
static void publish_events(struct lstore *ls, struct lreq *r, uint64_t *pos)
{
    const uint8_t *p = (const uint8_t *)r->enc.data;
    struct lentry *e = lstream_entries(r->st);
    for (size_t k = 0; k < r->n; k++, (*pos)++, p += ag__log_rec_len(p)) {
        struct ag_uuid id;
        ag__log_rec_id(p, &id);
        e[r->st->count].loc = r->locs[k];
        e[r->st->count].idh = ag__id_hash(&id);
        if (r->st->count++ == 0) ls->ix.live++;
        /* every slot this event is the first at or after (after a scavenge the
         * log's last events before the head may be gone; else exactly *pos / 32) */
        while ((uint64_t)ls->sparse_len * LOG_SPARSE_EVERY <= *pos)
            ls->sparse[ls->sparse_len++] = r->locs[k];
    }
}

static void publish(struct lstore *ls, struct lreq *from, struct lreq *stop, uint64_t events)
{
    pthread_rwlock_wrlock(&ls->ix_lock);
    uint64_t pos = ag__log_head(ls);
    for (struct lreq *r = from; r != stop; r = r->next) {
        if (!r->accepted) continue;
        if (r->kind == LOG_KIND_SNAPSHOT)
            r->st->snap_loc = r->locs[0];
        else if (r->kind == LOG_KIND_EVENT)
            publish_events(ls, r, &pos);
        else
            for (size_t i = 0; i < r->nparts; i++)
                if (!r->parts[i].dedup) publish_events(ls, &r->parts[i], &pos);
    }
    ls->segs[ls->nsegs - 1].end += ls->group.len;
    ag__log_set_head(ls, ag__log_head(ls) + events);
    pthread_rwlock_unlock(&ls->ix_lock);
    pthread_mutex_lock(&ls->head_lock);
    pthread_cond_broadcast(&ls->head_cond);
    pthread_mutex_unlock(&ls->head_lock);
}

static void complete(struct lreq *r)
{
    struct ag_append_req *a = r->areq;
    if (!a) {
        sem_post(r->done); /* r lives on the caller's stack: untouched after this */
        return;
    }
    a->status = r->status;
    a->result = r->kind == LOG_KIND_BATCH ? r->parts[0].res : r->res;
    a->err = r->err;
    for (size_t i = 0; r->mreq && !r->status && r->mreq->results && i < r->nparts; i++)
        r->mreq->results[i] = r->parts[i].res;
    lreq_release(r);
    ag_free(r);
    ag__store_loop_complete(a);
}

/* Write the group (requests from..stop), publish it and answer every request. */
static void commit(struct lstore *ls, struct lreq *from, struct lreq *stop, uint64_t events)
{
    int wrc = 0;
    if (ls->group.len) {
        const char *op;
        uint64_t t0 = ls->base.opts.commit_seconds ? mono_ns() : 0;
        wrc = write_group(ls, &op);
        if (t0)
            ag_obs_histogram_observe(ls->base.opts.commit_seconds, (double)(mono_ns() - t0) / 1e9);
        if (wrc) {
            note_failure(ls, -wrc, op, NULL);
            cut_now(ls); /* nothing of the group was acknowledged: drop it before saying so */
        } else {
            publish(ls, from, stop, events);
            note_tail(ls, from, stop);
            __atomic_add_fetch(&ls->commits, 1, __ATOMIC_RELAXED);
        }
    }
    for (struct lreq *r = from, *next; r != stop; r = next) {
        next = r->next;
        if (r->accepted && wrc)
            refuse(ls, r);
        else if (r->status == 0)
            __atomic_add_fetch(&ls->appends, 1, __ATOMIC_RELAXED);
        complete(r);
    }
    ag_buf_reset(&ls->group);
    pend_clear(ls);
    /* between groups no request holds a stream pointer: the memtable may be frozen
     * and go to disk on the flusher thread */
    if (!ls->unavail) ag__lidx_maybe_freeze(ls);
}

static void roll(struct lstore *ls)
{
    struct ag_err err;
    ag_err_clear(&err);
    uint64_t next = ls->segs[ls->nsegs - 1].segno + 1;
    if (ag__log_seg_create(ls, next, ag__log_head(ls), &err)) {
        note_failure(ls, err.aux > 0 ? (int)err.aux : EIO, "create segment", err.msg);
        return;
    }
    ls->tail_off = LOG_SEG_HDR;
    ls->tail_pos = ag__log_head(ls);
    ag__log_pa_reset(ls); /* the new segment */
    if (ag__log_ckpt_save(ls, &err)) AG_WARN("store.checkpoint_failed", AG_LS("error", err.msg));
}

static void run_group(struct lstore *ls, struct lreq *list)
{
    uint64_t max = ls->base.opts.segment_bytes - LOG_SEG_HDR;
    struct lreq *from = list;
    uint64_t events = 0;
    for (struct lreq *r = list; r; r = r->next) {
        if (ls->unavail) {
            refuse(ls, r);
            continue;
        }
        size_t bytes = r->enc.len + (r->kind == LOG_KIND_BATCH ? LOG_BATCH_REC_SIZE : 0);
        if (bytes + bytes / 8 > max) {
            r->status =
                ag_err_set(&r->err, AG_ETOOBIG, "batch of %zu bytes exceeds a segment", bytes);
            continue;
        }
        uint64_t end = ls->segs[ls->nsegs - 1].end;
        /* a compact record may take a few bytes more than its in-memory form (at
         * least 72 bytes): room for the larger of the two */
        if (end + ls->group.len + bytes + bytes / 8 > ls->base.opts.segment_bytes) {
            commit(ls, from, r, events);
            from = r, events = 0;
            if (!ls->unavail) roll(ls);
        }
        if (ls->unavail) {
            refuse(ls, r);
            continue;
        }
        if (r->kind == LOG_KIND_SNAPSHOT)
            plan_snapshot(ls, r);
        else if (r->kind == LOG_KIND_BATCH)
            plan_multi(ls, r, &events);
        else
            plan_events(ls, r, &events);
    }
    commit(ls, from, NULL, events);
}

static bool retry_due(const struct lstore *ls)
{
    return ls->unavail && mono_ns() >= ls->retry_at_ns;
}

/* Wait for work (q_lock held); while unavailable, only until the next retry. */
static void wait_work(struct lstore *ls)
{
    if (!ls->unavail) {
        pthread_cond_wait(&ls->q_cond, &ls->q_lock);
        return;
    }
    struct timespec ts = {(time_t)(ls->retry_at_ns / 1000000000ull),
                          (long)(ls->retry_at_ns % 1000000000ull)};
    pthread_cond_timedwait(&ls->q_cond, &ls->q_lock, &ts); /* q_cond runs on CLOCK_MONOTONIC */
}

void *ag__log_writer_main(void *arg)
{
    struct lstore *ls = arg;
    ag_thread_name("ag-store-writer");
    for (;;) {
        pthread_mutex_lock(&ls->q_lock);
        while (!ls->q_head && !ls->closing && !retry_due(ls) && !ls->swap) wait_work(ls);
        struct lreq *list = ls->q_head;
        bool closing = ls->closing;
        struct lswap *swap = ls->swap; /* a scavenged segment to put in (scavenge.c) */
        ls->q_head = ls->q_tail = NULL;
        ls->swap = NULL;
        pthread_mutex_unlock(&ls->q_lock);
        if (retry_due(ls)) try_recover(ls); /* before the queue: it may be writable again */
        if (swap) {
            ag__log_swap_run(ls, swap);
            sem_post(&swap->done);
        }
        if (list)
            run_group(ls, list);
        else if (closing)
            break;
    }
    return NULL;
}
