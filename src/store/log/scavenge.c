/*
 * Retention and scavenging: removing deleted events from sealed segments while
 * the store serves.
 *
 * WHAT IS DELETED (the plan, computed once per scavenge under the read lock)
 *   - tombstones: every StreamTruncated {"stream", "before"} in `$retention`
 *     deletes that stream's events with version < before (the largest before wins);
 *   - retention rules (ag_log_retention): an `idempotency-` stream whose last event
 *     is older than the idempotency TTL, a `saga-` stream whose last event is
 *     SagaCompleted or SagaCompensated and older than the saga retention, is
 *     deleted up to its last event; so is a stream named with the released prefix
 *     whose last event has the released type, at any age (a released claim).
 *   Only events in sealed segments (all but the last) are removed: a stream's
 *   `before` is cut to its first event in the last segment. A stream that gets a
 *   new event after the plan keeps it (only versions < before go).
 *
 * REWRITING A SEGMENT (this thread)
 *   The records are copied in order to `seg-<n>.log.scavenge` without the deleted
 *   events and without snapshots of versions < before. A batch keeps its kept
 *   events in order; their batch_left is renumbered (and the checksum resealed)
 *   and a multi-stream header is rewritten with the kept events and streams, or
 *   left out with all of its events. Positions, versions, ids and times stay. The
 *   header carries LOG_SEG_SCAVENGED, which tells recovery (scan.c) that positions
 *   and versions may skip forward. The file is fdatasynced, then handed over.
 *
 * PUTTING IT IN (the writer thread, between groups: ag__log_swap_run)
 *   First every stream with a record in the old file is brought from the on-disk
 *   tables into the memtable (lsm.c), so that the re-pointing below happens there
 *   and the tables' records, which name old locations, are shadowed from then on.
 *   Then, holding ckpt_lock (no checkpoint saved meanwhile, the merger's included),
 *   index.ckpt is removed (its locations name the old file), the new file is
 *   renamed over the old and the directory fsynced, mapped, and under the write
 *   lock every index entry that pointed into the old file is re-pointed (kept) or
 *   set to LOC_NONE (deleted), snapshots and sparse slots likewise; a stream left
 *   with no event leaves the index, or, while tables exist, stays as a tombstone
 *   (no events) that hides the tables' record and goes to the next table. Then a
 *   flush (over the cap) or a checkpoint names the new file at once. Readers copy records out under
 * the read lock, so the old mapping is unmapped right after.
 *
 * CRASH SAFETY
 *   Each segment is replaced by one rename of a complete, synced file: after a
 *   crash every segment is either the old one or the new one, and the old
 *   checkpoint is already gone, so open rebuilds the index by a full scan (every
 *   table too: none is named by a checkpoint) until the one saved after the swap. A
 *   leftover `.scavenge` file is removed by the next scavenge. Nothing that was not
 *   deleted is ever missing from both files.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "store/log/internal.h"

#define RETENTION_STREAM "$retention"
#define TOMBSTONE_TYPE   "StreamTruncated"

int ag_store_log_truncate(struct ag_store *s, const char *stream, size_t stream_len, int64_t before,
                          struct ag_err *err)
{
    int rc = ag_store_check_stream(stream, stream_len, err);
    if (rc) return rc;
    if (strcmp(s->ops->name, "log") != 0)
        return ag_err_set(err, AG_EINVAL, "tombstones need the embedded log store");
    if (before < 0) {
        int64_t v = -1;
        ag_store_stream_version(s, stream, stream_len, &v);
        before = v + 1;
    }
    json_t *j =
        json_pack("{s:s%, s:I}", "stream", stream, stream_len, "before", (json_int_t)before);
    char *data = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!data) return ag_err_set(err, AG_ENOMEM, "out of memory");
    struct ag_event_data ev = {.type = TOMBSTONE_TYPE,
                               .type_len = sizeof TOMBSTONE_TYPE - 1,
                               .data = data,
                               .data_len = strlen(data)};
    /* past the port's check: '$' names are reserved to the store, which this is */
    rc = s->ops->append(s, RETENTION_STREAM, sizeof RETENTION_STREAM - 1, AG_STORE_ANY, &ev, 1,
                        NULL, err);
    free(data);
    return rc;
}

/* ---- the plan: stream name -> before ---- */

struct pent {
    uint64_t hash; /* 0 = free */
    char *name;
    uint16_t len;
    int64_t before;
};
struct plan {
    struct pent *v;
    size_t mask, n;
};

static struct pent *plan_find(const struct plan *p, const char *name, size_t len, uint64_t h)
{
    h |= 1;
    for (size_t i = h & p->mask;; i = (i + 1) & p->mask) {
        struct pent *e = &p->v[i];
        if (!e->hash || (e->hash == h && e->len == len && memcmp(e->name, name, len) == 0))
            return e;
    }
}

static int plan_put(struct plan *p, const char *name, size_t len, int64_t before)
{
    if ((p->n + 1) * 2 > p->mask + 1) {
        struct plan q = {ag_calloc((p->mask + 1) * 2, sizeof *q.v), (p->mask + 1) * 2 - 1, 0};
        if (!q.v) return AG_ENOMEM;
        for (size_t i = 0; i <= p->mask; i++)
            if (p->v[i].hash) *plan_find(&q, p->v[i].name, p->v[i].len, p->v[i].hash) = p->v[i];
        q.n = p->n;
        ag_free(p->v);
        *p = q;
    }
    uint64_t h = ag_xxh3(name, len);
    struct pent *e = plan_find(p, name, len, h);
    if (e->hash) {
        if (before > e->before) e->before = before;
        return 0;
    }
    if (!(e->name = ag_malloc(len))) return AG_ENOMEM;
    memcpy(e->name, name, len);
    e->hash = h | 1;
    e->len = (uint16_t)len;
    e->before = before;
    p->n++;
    return 0;
}

static int64_t plan_before(const struct plan *p, const char *name, size_t len)
{
    if (!p->n) return 0;
    const struct pent *e = plan_find(p, name, len, ag_xxh3(name, len));
    return e->hash ? e->before : 0;
}

static void plan_free(struct plan *p)
{
    for (size_t i = 0; p->v && i <= p->mask; i++) ag_free(p->v[i].name);
    ag_free(p->v);
}

static bool has_prefix(const struct ltb_rec *s, const char *pfx)
{
    size_t n = strlen(pfx);
    return s->name_len > n && memcmp(s->name, pfx, n) == 0;
}

/* A stream record (memtable or table: entries maybe unaligned) entry's location. */
static uint64_t rec_loc(const struct ltb_rec *s, uint32_t v)
{
    struct lentry e;
    memcpy(&e, s->entries + (size_t)v * sizeof e, sizeof e);
    return e.loc;
}

static struct ltb_rec rec_of(struct lstream *st)
{
    return (struct ltb_rec){.hash = st->hash,
                            .name = st->name,
                            .name_len = st->name_len,
                            .count = st->count,
                            .snap_loc = st->snap_loc,
                            .entries = (const uint8_t *)lstream_entries(st)};
}

static bool type_is(const struct log_rec *r, const char *t)
{
    return r->type_len == strlen(t) && memcmp(r->type, t, r->type_len) == 0;
}

/* versions of `s` in sealed segments (entries before the first in the last one) */
static int64_t sealed_prefix(const struct lstore *ls, const struct ltb_rec *s, int64_t before)
{
    uint64_t last = ls->segs[ls->nsegs - 1].segno;
    int64_t v = 0;
    for (uint64_t loc; v < before && v < (int64_t)s->count; v++)
        if ((loc = rec_loc(s, (uint32_t)v)) != LOC_NONE && loc_seg(loc) >= last) break;
    return v;
}

struct rule_ctx {
    struct lstore *ls;
    const struct ag_log_retention *ret;
    uint64_t now;
    struct plan *p;
    bool locked; /* ag__lidx_each_online holds the read lock for us */
};

enum rule_kind { RULE_IDEM, RULE_SAGA, RULE_RELEASED };

/* (read lock held) */
static int rule_locked(struct rule_ctx *cx, const struct ltb_rec *s, enum rule_kind kind)
{
    struct lstore *ls = cx->ls;
    const struct ag_log_retention *ret = cx->ret;
    uint64_t now = cx->now;
    struct plan *p = cx->p;
    uint64_t loc = rec_loc(s, s->count - 1);
    if (loc == LOC_NONE) return 0;
    struct log_rec r;
    const char *why;
    struct ag_buf body;
    ag_buf_init(&body);
    bool ok = ag__log_rec_body(ls, ag__log_rec_at(ls, loc), &r, &body, &why) == 0;
    uint64_t age = now > r.time_ns ? now - r.time_ns : 0;
    bool gone = ok && (kind == RULE_IDEM   ? age >= ret->idempotency_ns
                       : kind == RULE_SAGA ? age >= ret->saga_ns && (type_is(&r, "SagaCompleted") ||
                                                                     type_is(&r, "SagaCompensated"))
                                           : type_is(&r, ret->released_type));
    ag_buf_free(&body);
    if (!gone) return 0;
    int64_t before = sealed_prefix(ls, s, (int64_t)s->count);
    return before ? plan_put(p, s->name, s->name_len, before) : 0;
}

/* The retention rules for one stream of the memtable or a table: the lock is
 * taken (unless held) only for a stream the rules name, to read its last event. */
static int rule(void *ud, const struct ltb_rec *s)
{
    struct rule_ctx *cx = ud;
    const struct ag_log_retention *ret = cx->ret;
    enum rule_kind kind;
    if (ret->idempotency_ns && has_prefix(s, "idempotency-"))
        kind = RULE_IDEM;
    else if (ret->saga_ns && has_prefix(s, "saga-"))
        kind = RULE_SAGA;
    else if (ret->released_prefix && ret->released_type && has_prefix(s, ret->released_prefix))
        kind = RULE_RELEASED;
    else
        return 0;
    if (!s->count) return 0;
    if (cx->locked) return rule_locked(cx, s, kind);
    pthread_rwlock_rdlock(&cx->ls->ix_lock); /* the segments (a roll may move the array) */
    int rc = rule_locked(cx, s, kind);
    pthread_rwlock_unlock(&cx->ls->ix_lock);
    return rc;
}

static int plan_tombstones(struct lstore *ls, struct plan *p)
{
    const char *rs = RETENTION_STREAM;
    struct lstream *t;
    bool town;
    int rc = ag__lidx_find(ls, rs, strlen(rs), ag_xxh3(rs, strlen(rs)), &t, &town);
    for (uint32_t v = 0; !rc && t && v < t->count; v++) {
        uint64_t loc = lstream_entries(t)[v].loc;
        if (loc == LOC_NONE) continue;
        struct log_rec r;
        const char *why;
        struct ag_buf body;
        ag_buf_init(&body);
        json_t *j = ag__log_rec_body(ls, ag__log_rec_at(ls, loc), &r, &body, &why) == 0
                        ? json_loadb(r.data, r.data_len, 0, NULL)
                        : NULL;
        ag_buf_free(&body);
        const char *name = json_string_value(json_object_get(j, "stream"));
        size_t len = name ? json_string_length(json_object_get(j, "stream")) : 0;
        int64_t before = json_integer_value(json_object_get(j, "before"));
        struct lstream *s = NULL;
        bool own = false;
        if (name) rc = ag__lidx_find(ls, name, len, ag_xxh3(name, len), &s, &own);
        if (!rc && s && before > 0) {
            struct ltb_rec sr = rec_of(s);
            before = sealed_prefix(ls, &sr, before);
            if (before) rc = plan_put(p, name, len, before);
        }
        ag__lidx_release(s, own);
        json_decref(j);
    }
    ag__lidx_release(t, town);
    return rc;
}

static int make_plan(struct lstore *ls, const struct ag_log_retention *ret, struct plan *p)
{
    p->mask = 63;
    if (!(p->v = ag_calloc(64, sizeof *p->v))) return AG_ENOMEM;
    uint64_t now = ag_clock_now(ls->base.opts.clock);
    int rc = 0;
    pthread_rwlock_rdlock(&ls->ix_lock);
    bool sealed = ls->nsegs > 1;
    if (sealed) rc = plan_tombstones(ls, p);
    pthread_rwlock_unlock(&ls->ix_lock);
    /* the rules look at every stream, the on-disk tables' too, without holding the
     * lock over the tables' reads (appends go on) */
    struct rule_ctx cx = {ls, ret, now, p, false};
    if (!rc && sealed && (ret->idempotency_ns || ret->saga_ns || ret->released_prefix))
        rc = ag__lidx_each_online(ls, rule, &cx, &cx.locked);
    return rc;
}

/* ---- rewriting one segment ---- */

static void seg_file(uint64_t segno, const char *suffix, char out[64])
{
    snprintf(out, 64, "seg-%020llu.log%s", (unsigned long long)segno, suffix);
}

static bool drops(const struct plan *p, const struct log_rec *r)
{
    return r->version < plan_before(p, r->stream, r->stream_len);
}

struct wbuf {
    struct lstore *ls;
    int fd;
    uint64_t off;
    struct ag_buf b;
};

static int wflush(struct wbuf *w)
{
    if (!w->b.len) return 0;
    size_t done = 0;
    while (done < w->b.len) {
        ssize_t n = pwrite(w->fd, w->b.data + done, w->b.len - done, (off_t)(w->off + done));
        if (n < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        done += (size_t)n;
    }
    w->off += w->b.len;
    w->b.len = 0;
    return 0;
}

static int wput(struct wbuf *w, const void *p, size_t n)
{
    if (ag_buf_append(&w->b, p, n)) return -ENOMEM;
    return w->b.len >= (1u << 20) ? wflush(w) : 0;
}

/* Copy the batch [from, to) of `map` without its deleted events. */
static int copy_batch(struct wbuf *w, const struct plan *p, const uint8_t *map, uint64_t from,
                      uint64_t to, struct ag_log_scavenge_report *rep)
{
    struct log_rec hdr = {0}, r;
    bool multi = ag__log_rec_kind(map + from) == LOG_KIND_BATCH;
    if (multi) {
        ag__log_rec_fields(map + from, &hdr);
        from += ag__log_rec_len(map + from);
    }
    uint32_t kept = 0, streams = 0;
    char prev[AG_STORE_STREAM_MAX]; /* a copy: a format-3 name lives in `r` */
    size_t prev_len = 0;
    for (uint64_t o = from; o < to; o += ag__log_rec_len(map + o)) {
        ag__log_rec_fields(map + o, &r);
        if (drops(p, &r)) continue;
        if (!prev_len || prev_len != r.stream_len || memcmp(prev, r.stream, prev_len) != 0)
            streams++;
        memcpy(prev, r.stream, prev_len = r.stream_len);
        kept++;
    }
    uint32_t total = 0;
    for (uint64_t o = from; o < to; o += ag__log_rec_len(map + o)) total++;
    rep->events_kept += kept;
    rep->events_dropped += total - kept;
    if (!kept) return 0;
    int rc = 0;
    bool first = true;
    uint32_t left = kept;
    for (uint64_t o = from; o < to && !rc; o += ag__log_rec_len(map + o)) {
        ag__log_rec_fields(map + o, &r);
        if (drops(p, &r)) continue;
        if (first && multi) {
            uint8_t h[LOG_BATCH_REC_SIZE];
            size_t hn = ag__log_batch_encode_fmt(h, ag__log_seg_format(map), kept, streams,
                                                 r.position, hdr.time_ns);
            if ((rc = wput(w, h, hn))) break;
        }
        first = false;
        /* renumbered and resealed: a patched copy */
        uint8_t *cp = ag_malloc(r.size + LOG_REC3_SLACK);
        if (!cp) return -ENOMEM;
        size_t n = ag__log_rec_rebatch(map + o, --left, cp);
        rc = wput(w, cp, n);
        ag_free(cp);
    }
    return rc;
}

/* Does the segment hold anything the plan deletes? */
static bool seg_has_deleted(const struct lseg *sg, const struct plan *p)
{
    for (uint64_t o = LOG_SEG_HDR; o < sg->end; o += ag__log_rec_len(sg->map + o)) {
        struct log_rec r;
        ag__log_rec_fields(sg->map + o, &r);
        if (r.kind != LOG_KIND_BATCH && drops(p, &r)) return true;
    }
    return false;
}

static int rewrite(struct lstore *ls, const struct lseg *sg, const struct plan *p, const char *tmp,
                   struct ag_log_scavenge_report *rep, struct ag_err *err)
{
    struct wbuf w = {.ls = ls, .off = 0};
    w.fd = openat(ls->dir_fd, tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w.fd < 0) return ag_err_set(err, AG_EIO, "%s/%s: %s", ls->dir, tmp, strerror(errno));
    uint8_t hdr[LOG_SEG_HDR];
    ag__log_seg_header_fmt(hdr, sg->segno, sg->base_position, ag_clock_now(ls->base.opts.clock),
                           LOG_SEG_SCAVENGED, ag__log_seg_format(sg->map));
    int rc = wput(&w, hdr, sizeof hdr);
    uint64_t o = LOG_SEG_HDR;
    while (!rc && o < sg->end) {
        struct log_rec r;
        ag__log_rec_fields(sg->map + o, &r);
        if (r.kind == LOG_KIND_SNAPSHOT) { /* a snapshot of deleted versions goes with them */
            if (!drops(p, &r)) rc = wput(&w, sg->map + o, r.size);
            o += r.size;
            continue;
        }
        uint64_t end = o; /* the batch: to the event whose batch_left is 0 */
        if (r.kind == LOG_KIND_BATCH) end += r.size;
        for (;;) {
            struct log_rec e;
            ag__log_rec_fields(sg->map + end, &e);
            end += e.size;
            if (e.batch_left == 0) break;
        }
        rc = copy_batch(&w, p, sg->map, o, end, rep);
        o = end;
    }
    if (!rc) rc = wflush(&w);
    if (!rc && !ls->base.opts.no_sync && fdatasync(w.fd) != 0) rc = -errno;
    ag_buf_free(&w.b);
    close(w.fd);
    if (rc) {
        unlinkat(ls->dir_fd, tmp, 0);
        return ag_err_set(err, AG_EIO, "%s/%s: %s", ls->dir, tmp, strerror(-rc));
    }
    rep->bytes_after += w.off;
    return 0;
}

/* ---- the writer's part ---- */

/* The first kept event with position >= want in the new file (sorted), or `dflt`. */
static uint64_t first_at_or_after(const uint64_t *pos, const uint64_t *loc, size_t n, size_t *i,
                                  uint64_t want, uint64_t dflt)
{
    while (*i < n && pos[*i] < want) (*i)++;
    return *i < n ? loc[*i] : dflt;
}

/* Re-point the index from the old file to the new one (write lock held); the new
 * file's event locations, in position order, go to locs[0..*n). */
static void reindex(struct lstore *ls, struct lseg *old, const uint8_t *map, uint64_t len,
                    uint64_t *locs, size_t *n)
{
    uint64_t segno = old->segno;
    /* 1. every entry and snapshot that pointed into the old file: deleted, for now */
    for (uint64_t o = LOG_SEG_HDR; o < old->end; o += ag__log_rec_len(old->map + o)) {
        struct log_rec r;
        ag__log_rec_fields(old->map + o, &r);
        if (r.kind == LOG_KIND_BATCH) continue;
        struct lstream *st =
            ag__lindex_find(&ls->ix, r.stream, r.stream_len, ag_xxh3(r.stream, r.stream_len));
        if (!st) continue;
        if (r.kind == LOG_KIND_SNAPSHOT) {
            if (st->snap_loc == loc_make(segno, o)) st->snap_loc = LOC_NONE - 1; /* pending */
        } else if (r.version < (int64_t)st->count) {
            lstream_entries(st)[r.version] = (struct lentry){.loc = LOC_NONE, .idh = 0};
        }
    }
    /* 2. what the new file holds: re-pointed */
    *n = 0;
    for (uint64_t o = LOG_SEG_HDR; o < len; o += ag__log_rec_len(map + o)) {
        struct log_rec r;
        ag__log_rec_fields(map + o, &r);
        if (r.kind == LOG_KIND_BATCH) continue;
        struct lstream *st =
            ag__lindex_find(&ls->ix, r.stream, r.stream_len, ag_xxh3(r.stream, r.stream_len));
        if (!st) continue;
        if (r.kind == LOG_KIND_SNAPSHOT) {
            if (st->snap_loc == LOC_NONE - 1 || loc_seg(st->snap_loc) == segno)
                st->snap_loc = loc_make(segno, o); /* the latest in file order */
            continue;
        }
        lstream_entries(st)[r.version] =
            (struct lentry){.loc = loc_make(segno, o), .idh = ag__id_hash(&r.id)};
        locs[*n] = loc_make(segno, o);
        (*n)++;
    }
}

/* A stream every event of which is gone, kept in the memtable with no events: it
 * shadows the stream's records in the on-disk tables (a lookup stops at the first
 * record it finds), is written into the next table as such and dropped by a merge
 * that reaches the oldest table. Its entries are freed. */
static void tombstone(struct lindex *ix, struct lstream *st)
{
    if (st->cap > 1) {
        ix->bytes -= (size_t)(st->cap - 1) * sizeof(struct lentry);
        ag_free(st->e.many);
    }
    st->cap = 1;
    st->count = 0;
    st->e.one = (struct lentry){.loc = LOC_NONE, .idh = 0};
    st->snap_loc = UINT64_MAX;
    ix->live--;
}

static void fix_snapshots_and_streams(struct lstore *ls, const struct lseg *old,
                                      struct ag_log_scavenge_report *rep)
{
    for (uint64_t o = LOG_SEG_HDR; o < old->end; o += ag__log_rec_len(old->map + o)) {
        struct log_rec r;
        ag__log_rec_fields(old->map + o, &r);
        if (r.kind == LOG_KIND_BATCH) continue;
        struct lstream *st =
            ag__lindex_find(&ls->ix, r.stream, r.stream_len, ag_xxh3(r.stream, r.stream_len));
        if (!st || !st->count) continue; /* (a tombstone left by an earlier record) */
        if (st->snap_loc == LOC_NONE - 1) st->snap_loc = UINT64_MAX;
        const struct lentry *e = lstream_entries(st);
        uint32_t v = 0;
        while (v < st->count && e[v].loc == LOC_NONE) v++;
        if (v == st->count && st->snap_loc == UINT64_MAX) {
            if (ls->ntables)
                tombstone(&ls->ix, st); /* older tables may hold it: shadow them */
            else
                ag__lindex_remove(&ls->ix, st);
            rep->streams_deleted++;
        }
    }
}

/* Re-point the sparse slots that pointed into the segment (write lock held). */
static void fix_sparse(struct lstore *ls, size_t si, const uint8_t *map, const uint64_t *locs,
                       size_t n)
{
    uint64_t segno = ls->segs[si].segno;
    uint64_t dflt = loc_make(ls->segs[si + 1].segno, LOG_SEG_HDR);
    uint64_t *pos = ag_malloc((n ? n : 1) * sizeof *pos);
    if (!pos)
        n = 0, dflt = loc_make(segno, LOG_SEG_HDR); /* slower, still right: reads
                                                        walk from the file's start */
    for (size_t i = 0; i < n; i++) {
        struct log_rec r;
        ag__log_rec_fields(map + loc_off(locs[i]), &r);
        pos[i] = r.position;
    }
    uint64_t none = 0;                  /* first_at_or_after never reads it when n == 0 */
    size_t lo = 0, hi = ls->sparse_len; /* the first slot at or past this segment */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (loc_seg(ls->sparse[mid]) < segno)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t i = 0;
    for (size_t k = lo; k < ls->sparse_len && loc_seg(ls->sparse[k]) == segno; k++)
        ls->sparse[k] =
            first_at_or_after(pos ? pos : &none, locs, n, &i, (uint64_t)k * LOG_SPARSE_EVERY, dflt);
    ag_free(pos);
}

struct swap_ctx {
    struct lswap sw;
    struct ag_log_scavenge_report *rep;
};

/* Bring every stream with a record in the old file into the memtable (before
 * anything changes), so that re-pointing happens there: the stream's records in
 * the on-disk tables keep the old locations but are shadowed from now on. */
static int fault_streams(struct lstore *ls, const struct lseg *old)
{
    if (!ls->ntables) return 0; /* only the writer adds tables: none can appear */
    for (uint64_t o = LOG_SEG_HDR; o < old->end; o += ag__log_rec_len(old->map + o)) {
        struct log_rec r;
        ag__log_rec_fields(old->map + o, &r);
        if (r.kind == LOG_KIND_BATCH) continue;
        struct lstream *st;
        int rc =
            ag__lidx_fault(ls, r.stream, r.stream_len, ag_xxh3(r.stream, r.stream_len), &st, true);
        if (rc) return rc;
    }
    return 0;
}

void ag__log_swap_run(struct lstore *ls, struct lswap *sw)
{
    struct swap_ctx *cx = (struct swap_ctx *)sw;
    struct lseg *old = &ls->segs[sw->si];
    char name[64];
    seg_file(old->segno, "", name);
    sw->status = 0;
    /* a frozen memtable is written first: re-pointing changes only the active one */
    int drc = ag__lidx_drain(ls, &sw->err);
    if (drc) {
        sw->status = drc;
        return;
    }
    int frc = fault_streams(ls, old);
    if (frc) { /* nothing changed yet; the .scavenge file goes at the next scavenge */
        sw->status = ag_err_set(&sw->err, frc == AG_ENOMEM ? AG_ENOMEM : AG_EUNAVAILABLE,
                                frc == AG_ENOMEM ? "out of memory re-indexing %s/%s"
                                                 : "%s/%s: the on-disk stream index cannot be "
                                                   "read (restart to rebuild it from the log)",
                                ls->dir, name);
        return;
    }
    /* no checkpoint may be saved (the merger saves too) until the index names the new
     * file: the checkpoint names locations in the old one, so it goes first */
    pthread_mutex_lock(&ls->ckpt_lock);
    if (unlinkat(ls->dir_fd, "index.ckpt", 0) != 0 && errno != ENOENT) sw->status = -errno;
    if (!sw->status && renameat(ls->dir_fd, sw->tmp, ls->dir_fd, name) != 0) sw->status = -errno;
    if (!sw->status && !ls->base.opts.no_sync && fsync(ls->dir_fd) != 0) sw->status = -errno;
    int fd = sw->status ? -1 : openat(ls->dir_fd, name, O_RDONLY | O_CLOEXEC);
    struct stat st;
    void *map = MAP_FAILED;
    if (fd >= 0 && fstat(fd, &st) == 0 && st.st_size >= LOG_SEG_HDR)
        map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        int e = sw->status ? -sw->status : errno;
        if (fd >= 0) close(fd);
        pthread_mutex_unlock(&ls->ckpt_lock);
        sw->status = ag_err_set(&sw->err, AG_EIO, "%s/%s: %s (reopen the store)", ls->dir, name,
                                strerror(e));
        return;
    }
    uint64_t len = (uint64_t)st.st_size;
    size_t n = 0;
    for (uint64_t o = LOG_SEG_HDR; o < len; o += ag__log_rec_len((uint8_t *)map + o)) n++;
    uint64_t *locs = ag_malloc((n ? n : 1) * sizeof *locs);
    if (!locs) {
        munmap(map, (size_t)len);
        close(fd);
        pthread_mutex_unlock(&ls->ckpt_lock);
        sw->status = ag_err_set(&sw->err, AG_ENOMEM, "out of memory (reopen the store)");
        return;
    }
    pthread_rwlock_wrlock(&ls->ix_lock);
    reindex(ls, old, map, len, locs, &n);
    fix_sparse(ls, sw->si, map, locs, n);
    fix_snapshots_and_streams(ls, old, cx->rep);
    struct lseg was = *old;
    old->fd = fd;
    old->map = map;
    old->map_len = (size_t)len;
    old->end = len;
    ls->gaps_ok = true;
    pthread_rwlock_unlock(&ls->ix_lock);
    pthread_mutex_unlock(&ls->ckpt_lock);
    ag_free(locs);
    munmap((void *)was.map, was.map_len);
    close(was.fd);
    /* back under the cap at once (the faulting may have grown the memtable well past
     * it), and a checkpoint naming the new file: a crash from now on costs no full
     * rebuild of the index. A failure only leaves the rebuild to the next open. */
    if (ls->tb_enabled && !ls->unavail) {
        struct ag_err ferr;
        ag_err_clear(&ferr);
        uint64_t flushes = ls->tb_flushes;
        (void)ag__lidx_maybe_flush(ls, true, &ferr);
        if (ls->tb_flushes == flushes) (void)ag__log_ckpt_save(ls, &ferr);
    }
}

/* Hand a rewritten segment to the writer thread and wait. */
static int swap_in(struct lstore *ls, struct swap_ctx *cx, struct ag_err *err)
{
    sem_init(&cx->sw.done, 0, 0);
    pthread_mutex_lock(&ls->q_lock);
    ls->swap = &cx->sw;
    pthread_cond_signal(&ls->q_cond);
    pthread_mutex_unlock(&ls->q_lock);
    while (sem_wait(&cx->sw.done) != 0 && errno == EINTR) {
    }
    sem_destroy(&cx->sw.done);
    if (cx->sw.status && err) *err = cx->sw.err;
    return cx->sw.status ? AG_EIO : 0;
}

int ag_store_log_scavenge(struct ag_store *s, const struct ag_log_retention *ret,
                          void (*progress)(void *ud, uint64_t segno,
                                           const struct ag_log_scavenge_report *so_far),
                          void *ud, struct ag_log_scavenge_report *out, struct ag_err *err)
{
    struct ag_log_scavenge_report rep = {0};
    if (out) *out = rep;
    if (!s || strcmp(s->ops->name, "log") != 0)
        return ag_err_set(err, AG_EINVAL, "scavenge needs the embedded log store");
    struct lstore *ls = (struct lstore *)s;
    if (ls->read_only) return ag_err_set(err, AG_EINVAL, "scavenge needs a writable store");
    if (pthread_mutex_trylock(&ls->scav_lock) != 0)
        return ag_err_set(err, AG_EAGAIN, "a scavenge is already running");
    struct ag_log_retention none = {0};
    struct plan p = {0};
    int rc = make_plan(ls, ret ? ret : &none, &p);
    if (rc == AG_ENOMEM)
        ag_err_set(err, rc, "out of memory planning the scavenge");
    else if (rc)
        rc = ag_err_set(err, AG_EUNAVAILABLE,
                        "the on-disk stream index cannot be read (restart to rebuild it from "
                        "the log)");
    for (size_t i = 0; !rc; i++) {
        pthread_rwlock_rdlock(&ls->ix_lock);
        bool sealed = i + 1 < ls->nsegs; /* segs only grows at the end (roll) */
        struct lseg sg = sealed ? ls->segs[i] : (struct lseg){0};
        pthread_rwlock_unlock(&ls->ix_lock);
        if (!sealed) break;
        char tmp[64];
        seg_file(sg.segno, ".scavenge", tmp);
        unlinkat(ls->dir_fd, tmp, 0); /* a leftover of a crashed scavenge */
        rep.segments++;
        rep.bytes_before += sg.end;
        if (!p.n || !seg_has_deleted(&sg, &p)) {
            rep.bytes_after += sg.end;
            for (uint64_t o = LOG_SEG_HDR; o < sg.end; o += ag__log_rec_len(sg.map + o))
                rep.events_kept += ag__log_rec_kind(sg.map + o) == LOG_KIND_EVENT;
        } else {
            rc = rewrite(ls, &sg, &p, tmp, &rep, err);
            struct swap_ctx cx = {.sw = {.si = i}, .rep = &rep};
            snprintf(cx.sw.tmp, sizeof cx.sw.tmp, "%s", tmp);
            if (!rc) rc = swap_in(ls, &cx, err);
            if (!rc) rep.rewritten++;
        }
        if (progress) progress(ud, sg.segno, &rep);
    }
    plan_free(&p);
    pthread_mutex_unlock(&ls->scav_lock);
    if (out) *out = rep;
    return rc;
}
