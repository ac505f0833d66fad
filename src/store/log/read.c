/*
 * Reads of the embedded log. The index (under a read lock) says where records
 * are; the records are copied out of the segments' read-only mappings into the
 * caller's page, so a page stays valid whatever the store does next. Records were
 * verified when written or recovered, so reads trust their sizes and skip the
 * checksum.
 */
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store/log/internal.h"

int ag__log_rec_checked(const struct lstore *ls, uint64_t loc, const uint8_t **out,
                        struct ag_err *err)
{
    size_t si = (size_t)(loc_seg(loc) - ls->segs[0].segno);
    uint64_t off = loc_off(loc);
    const struct lseg *sg = si < ls->nsegs ? &ls->segs[si] : NULL;
    struct log_rec r;
    const char *why = "record outside its segment";
    if (sg && off < sg->end && ag__log_rec_decode(sg->map + off, sg->end - off, &r, &why) == 0) {
        *out = sg->map + off;
        return 0;
    }
    return ag_err_set(err, AG_ECORRUPT,
                      "%s/seg-%020llu.log: offset %llu: %s (the file changed after it was "
                      "written; run 'agora store verify')",
                      ls->dir, (unsigned long long)loc_seg(loc), (unsigned long long)off, why);
}

/* Build a page from `n` record pointers (copies the records, expanding compressed
 * ones to their raw form, so the page's events point into one block). */
static int page_build(const struct lstore *ls, const uint8_t *const *recs, size_t n,
                      struct ag_event_page *out, struct ag_err *err)
{
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) bytes += ag__log_rec_raw_size(recs[i]);
    uint8_t *mem = ag_malloc(n * sizeof(struct ag_event) + bytes);
    if (!mem) return ag_err_set(err, AG_ENOMEM, "out of memory");
    struct ag_event *ev = (struct ag_event *)mem;
    uint8_t *cp = mem + n * sizeof(struct ag_event);
    struct ag_buf scratch;
    ag_buf_init(&scratch);
    for (size_t i = 0; i < n; i++) {
        const char *why;
        int rc = ag__log_rec_expand_cached(ls, recs[i], cp, &scratch, &why);
        if (rc) {
            struct log_rec f;
            ag__log_rec_fields(recs[i], &f);
            ag_buf_free(&scratch);
            ag_free(mem);
            return ag_err_set(err, rc,
                              "stream '%.*s' position %llu (dictionary %u): %s (run 'agora store "
                              "verify')",
                              (int)f.stream_len, f.stream, (unsigned long long)f.position,
                              (unsigned)f.dict, why);
        }
        uint32_t size = ag__log_rec_len(cp);
        struct log_rec r;
        ag__log_rec_fields(cp, &r); /* verified when written or recovered */
        ev[i] = (struct ag_event){
            .stream = r.stream,
            .stream_len = r.stream_len,
            .version = r.version,
            .position = r.position,
            .id = r.id,
            .type = r.type,
            .type_len = r.type_len,
            .time_ns = r.time_ns,
            .data = r.data,
            .data_len = r.data_len,
            .metadata = r.meta,
            .metadata_len = r.meta_len,
            .stored_bytes = ag__log_rec_len(recs[i]),
        };
        cp += size;
    }
    ag_buf_free(&scratch);
    out->events = n ? ev : NULL;
    out->count = n;
    out->mem = mem;
    return 0;
}

/* An error reading the on-disk stream index, as a reader reports it. */
static int index_err(struct ag_err *err, int rc, const char *stream, size_t stream_len)
{
    if (rc == AG_ENOMEM) return ag_err_set(err, rc, "out of memory");
    return ag_err_set(err, AG_EUNAVAILABLE,
                      "stream '%.*s': the on-disk stream index cannot be read (restart to "
                      "rebuild it from the log)",
                      (int)stream_len, stream);
}

int ag__log_read_stream(struct ag_store *s, const char *stream, size_t stream_len, int64_t from,
                        enum ag_read_dir dir, size_t max, struct ag_event_page *out,
                        struct ag_err *err)
{
    struct lstore *ls = (struct lstore *)s;
    if (ls->read_only) ag__log_refresh(ls);
    memset(out, 0, sizeof *out);
    const uint8_t **recs = max ? ag_malloc(max * sizeof *recs) : NULL;
    if (max && !recs) return ag_err_set(err, AG_ENOMEM, "out of memory");
    pthread_rwlock_rdlock(&ls->ix_lock);
    struct lstream *st;
    bool owned;
    int frc = ag__lidx_find(ls, stream, stream_len, ag_xxh3(stream, stream_len), &st, &owned);
    int64_t c = st ? st->count : 0;
    if (frc || c == 0) {
        ag__lidx_release(st, owned);
        pthread_rwlock_unlock(&ls->ix_lock);
        ag_free(recs);
        if (frc) return index_err(err, frc, stream, stream_len);
        return ag_err_set(err, AG_ENOTFOUND, "stream '%.*s' not found", (int)stream_len, stream);
    }
    struct lentry *e = lstream_entries(st);
    size_t n = 0;
    int rc = 0;
    int64_t v = from; /* entries a scavenge emptied (LOC_NONE) are skipped */
    if (dir == AG_READ_FORWARD) {
        if (v < 0) v = 0;
        for (; v < c && n < max && !rc; v++)
            if (e[v].loc != LOC_NONE) rc = ag__log_rec_checked(ls, e[v].loc, &recs[n++], err);
        out->next_version = v;
        out->end = v >= c;
    } else {
        if (v < 0 || v >= c) v = c - 1;
        for (; v >= 0 && n < max && !rc; v--)
            if (e[v].loc != LOC_NONE) rc = ag__log_rec_checked(ls, e[v].loc, &recs[n++], err);
        out->next_version = v;
        out->end = v < 0;
    }
    ag__lidx_release(st, owned);
    /* copied before unlocking: a scavenge may unmap a segment once it holds the lock */
    if (!rc) rc = page_build(ls, recs, n, out, err);
    pthread_rwlock_unlock(&ls->ix_lock);
    ag_free(recs);
    if (rc) memset(out, 0, sizeof *out);
    return rc;
}

/* Step from the record at (*si, *off) to the next event record (*out NULL at the
 * end). Each record is checked before its size is trusted. */
static int next_event(const struct lstore *ls, size_t *si, uint64_t *off, const uint8_t **out,
                      struct ag_err *err)
{
    for (;;) {
        while (*off >= ls->segs[*si].end) {
            if (*si + 1 >= ls->nsegs) return *out = NULL, 0;
            (*si)++;
            *off = LOG_SEG_HDR;
        }
        const uint8_t *p;
        int rc = ag__log_rec_checked(ls, loc_make(ls->segs[*si].segno, *off), &p, err);
        if (rc) return rc;
        *off += ag__log_rec_len(p);
        if (ag__log_rec_kind(p) == LOG_KIND_EVENT) return *out = p, 0;
    }
}

/* Collect pointers to up to `n` events with positions in [from, to] (caller holds
 * the read lock). A scavenged log has gaps: positions are read from the records,
 * and a sparse slot points at the first event at or after its position. */
static int collect(const struct lstore *ls, uint64_t from, uint64_t to, size_t n,
                   const uint8_t **recs, size_t *got, struct ag_err *err)
{
    uint64_t k = from / LOG_SPARSE_EVERY;
    *got = 0;
    if (k >= ls->sparse_len) return 0; /* no event at or after `from` */
    uint64_t loc = ls->sparse[k];
    size_t si = (size_t)(loc_seg(loc) - ls->segs[0].segno);
    uint64_t off = loc_off(loc);
    const uint8_t *p = NULL;
    while (*got < n) {
        int rc = next_event(ls, &si, &off, &p, err);
        if (rc || !p) return rc;
        struct log_rec r;
        ag__log_rec_fields(p, &r);
        if (r.position > to) return 0;
        if (r.position >= from) recs[(*got)++] = p;
    }
    return 0;
}

int ag__log_read_all(struct ag_store *s, uint64_t from, enum ag_read_dir dir, size_t max,
                     struct ag_event_page *out, struct ag_err *err)
{
    struct lstore *ls = (struct lstore *)s;
    if (ls->read_only) ag__log_refresh(ls);
    memset(out, 0, sizeof *out);
    const uint8_t **recs = max ? ag_malloc(max * sizeof *recs) : NULL;
    if (max && !recs) return ag_err_set(err, AG_ENOMEM, "out of memory");
    pthread_rwlock_rdlock(&ls->ix_lock);
    uint64_t head = ag__log_head(ls);
    uint64_t start;
    size_t want;
    if (dir == AG_READ_FORWARD) {
        start = from;
        want = from >= head ? 0 : (size_t)AG_MIN((uint64_t)max, head - from);
        out->next_position = from + want;
        out->end = out->next_position >= head;
    } else {
        uint64_t top = from >= head ? head - 1 : from; /* head == 0: want is 0 below */
        want = head == 0 ? 0 : (size_t)AG_MIN((uint64_t)max, top + 1);
        start = head == 0 ? 0 : top + 1 - want;
        out->next_position = start == 0 ? 0 : start - 1;
        out->end = start == 0;
    }
    size_t n = 0;
    uint64_t to = dir == AG_READ_FORWARD ? UINT64_MAX : start + want - 1;
    int rc = want ? collect(ls, start, to, want, recs, &n, err) : 0;
    if (rc) {
        pthread_rwlock_unlock(&ls->ix_lock);
        ag_free(recs);
        memset(out, 0, sizeof *out);
        return rc;
    }
    if (dir == AG_READ_FORWARD && n == want && n) { /* gaps: resume after the last one */
        struct log_rec last;
        ag__log_rec_fields(recs[n - 1], &last);
        out->next_position = last.position + 1;
        out->end = out->next_position >= head;
    } else if (dir == AG_READ_FORWARD) {
        out->next_position = head; /* fewer than asked: the log ends */
        out->end = true;
    }
    if (dir == AG_READ_BACKWARD)
        for (size_t i = 0; i < n / 2; i++) {
            const uint8_t *t = recs[i];
            recs[i] = recs[n - 1 - i];
            recs[n - 1 - i] = t;
        }
    rc = page_build(ls, recs, n, out, err); /* before unlocking: see read_stream */
    pthread_rwlock_unlock(&ls->ix_lock);
    ag_free(recs);
    if (rc) memset(out, 0, sizeof *out);
    return rc;
}

int ag__log_stream_version(struct ag_store *s, const char *stream, size_t stream_len,
                           int64_t *version)
{
    struct lstore *ls = (struct lstore *)s;
    if (ls->read_only) ag__log_refresh(ls);
    pthread_rwlock_rdlock(&ls->ix_lock);
    struct lstream *st;
    bool owned;
    int rc = ag__lidx_find(ls, stream, stream_len, ag_xxh3(stream, stream_len), &st, &owned);
    *version = st ? (int64_t)st->count - 1 : -1;
    ag__lidx_release(st, owned);
    pthread_rwlock_unlock(&ls->ix_lock);
    return rc == AG_ENOMEM ? rc : rc ? AG_EUNAVAILABLE : 0;
}

struct list_ctx {
    int (*cb)(void *ud, const char *name, size_t len, int64_t version);
    void *ud;
};

static int list_one(void *ud, const struct ltb_rec *r)
{
    struct list_ctx *c = ud;
    return c->cb(c->ud, r->name, r->name_len, (int64_t)r->count - 1);
}

int ag__log_list_streams(struct ag_store *s,
                         int (*cb)(void *ud, const char *name, size_t len, int64_t version),
                         void *ud)
{
    struct lstore *ls = (struct lstore *)s;
    if (ls->read_only) ag__log_refresh(ls);
    struct list_ctx c = {cb, ud};
    pthread_rwlock_rdlock(&ls->ix_lock);
    int rc = ag__lidx_each(ls, list_one, &c);
    pthread_rwlock_unlock(&ls->ix_lock);
    return rc;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int ag__log_wait_head(struct ag_store *s, uint64_t after, int timeout_ms)
{
    struct lstore *ls = (struct lstore *)s;
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : mono_ms() + (uint64_t)timeout_ms;
    if (ls->read_only) { /* another process writes: poll the files */
        for (;;) {
            ag__log_refresh(ls);
            if (ag__log_head(ls) > after) return 0;
            if (mono_ms() >= deadline) return AG_ETIMEDOUT;
            usleep(20000);
        }
    }
    int rc = 0;
    pthread_mutex_lock(&ls->head_lock);
    while (ag__log_head(ls) <= after && !ls->closing && rc == 0) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&ls->head_cond, &ls->head_lock);
            continue;
        }
        struct timespec ts = {(time_t)(deadline / 1000), (long)(deadline % 1000) * 1000000};
        if (pthread_cond_timedwait(&ls->head_cond, &ls->head_lock, &ts) == ETIMEDOUT)
            rc = ag__log_head(ls) > after ? 0 : AG_ETIMEDOUT;
    }
    if (rc == 0 && ag__log_head(ls) <= after) rc = AG_ECLOSED;
    pthread_mutex_unlock(&ls->head_lock);
    return rc;
}

int ag__log_load_snapshot(struct ag_store *s, const char *stream, size_t stream_len,
                          struct ag_snapshot *out, struct ag_err *err)
{
    struct lstore *ls = (struct lstore *)s;
    memset(out, 0, sizeof *out);
    pthread_rwlock_rdlock(&ls->ix_lock);
    struct lstream *st;
    bool owned;
    int rc = ag__lidx_find(ls, stream, stream_len, ag_xxh3(stream, stream_len), &st, &owned);
    if (rc) {
        rc = index_err(err, rc, stream, stream_len);
    } else if (!st || st->snap_loc == UINT64_MAX) {
        rc =
            ag_err_set(err, AG_ENOTFOUND, "stream '%.*s' has no snapshot", (int)stream_len, stream);
    } else {
        struct log_rec r;
        const uint8_t *p = NULL;
        rc = ag__log_rec_checked(ls, st->snap_loc, &p, err);
        if (rc) goto out_unlock;
        ag__log_rec_fields(p, &r);
        out->version = r.version;
        out->state_len = r.data_len;
        out->state = ag_malloc(r.data_len + 1);
        if (!out->state)
            rc = ag_err_set(err, AG_ENOMEM, "out of memory");
        else
            memcpy(out->state, r.data, r.data_len), out->state[r.data_len] = 0;
    }
out_unlock:
    ag__lidx_release(st, owned);
    pthread_rwlock_unlock(&ls->ix_lock);
    return rc;
}

int ag__log_stats(struct ag_store *s, struct ag_store_stats *out)
{
    struct lstore *ls = (struct lstore *)s;
    if (ls->read_only) ag__log_refresh(ls);
    memset(out, 0, sizeof *out);
    pthread_rwlock_rdlock(&ls->ix_lock);
    out->events = ag__log_head(ls);
    out->streams = ls->ix.live;
    for (size_t i = 0; i < ls->nsegs; i++) out->bytes += ls->segs[i].end;
    out->segments = ls->nsegs;
    out->index_bytes = ls->ix.bytes + ls->frozen.bytes + ls->sparse_cap * sizeof(uint64_t) +
                       ag__lidx_table_mem(ls);
    out->index_tables = ls->ntables;
    out->index_mem_streams = ls->ix.count + ls->frozen.count;
    out->index_flush_waits = __atomic_load_n(&ls->fl_waits, __ATOMIC_RELAXED);
    out->index_flush_wait_ns = __atomic_load_n(&ls->fl_wait_ns, __ATOMIC_RELAXED);
    out->index_flushes = ls->tb_flushes;
    out->index_merges = ls->tb_merges;
    for (size_t i = 0; i < ls->ntables; i++) {
        out->index_entries += ls->tables[i]->streams;
        out->index_table_bytes += ls->tables[i]->file_bytes;
    }
    pthread_rwlock_unlock(&ls->ix_lock);
    out->appends = __atomic_load_n(&ls->appends, __ATOMIC_RELAXED);
    out->commits = __atomic_load_n(&ls->commits, __ATOMIC_RELAXED);
    return 0;
}

/* ---- read-only follow ---- */

static int open_next_segment(struct lstore *ls)
{
    char name[40];
    uint64_t segno = ls->segs[ls->nsegs - 1].segno + 1;
    snprintf(name, sizeof name, "seg-%020llu.log", (unsigned long long)segno);
    struct stat st;
    if (fstatat(ls->dir_fd, name, &st, 0) != 0) return AG_ENOTFOUND;
    return ag__log_seg_attach(ls, segno, NULL);
}

int ag__log_refresh(struct lstore *ls)
{
    if (!ls->nsegs) return 0;
    pthread_rwlock_wrlock(&ls->ix_lock);
    struct log_scan sc = {.ls = ls, .next_position = ag__log_head(ls)};
    int rc = 0;
    for (;;) {
        struct lseg *sg = &ls->segs[ls->nsegs - 1];
        struct stat st;
        uint64_t size = fstat(sg->fd, &st) ? 0 : (uint64_t)st.st_size;
        if (size > sg->map_len) size = sg->map_len;
        rc = ag__log_scan(&sc, sg, sg->map, sg->end, size);
        sg->end = sc.good_end;
        /* rc 0 with end < size: zeros follow (preallocated), this segment may be done */
        if (rc || open_next_segment(ls) != 0) break;
    }
    ag__log_set_head(ls, sc.next_position);
    ag__log_scan_free(&sc);
    pthread_rwlock_unlock(&ls->ix_lock);
    return 0;
}
