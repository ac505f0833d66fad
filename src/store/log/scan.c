/*
 * The recovery scan: walks a segment's records in order, checks each one
 * (checksum, size, kind) and the log's invariants across records (positions
 * gapless, versions gapless per stream, a batch's records consecutive and
 * complete, a multi-stream batch's events all present in as many streams as its
 * header says, each stream once), and adds every complete batch to the index —
 * a multi-stream batch only once its last event is read, so a torn one adds
 * nothing. In a log a scavenge has rewritten (`gaps_ok`), positions may skip
 * forward between batches and between the parts of a multi-stream batch, and a
 * stream's first event met may be past its count (its earlier events were
 * deleted); within a part versions and positions stay gapless. Zeros from a record boundary to the
 * end (outside a batch) end the scan cleanly: they are the preallocated rest of the segment. It
 * stops at the first record that breaks a rule and reports where; the caller (log.c) applies the
 * recovery rule. In verify_only mode it re-checks records the index already holds
 * (the writer's tail check after a write failure) without touching the index.
 */
#include "store/log/internal.h"

int ag__log_index_event(struct lstore *ls, const char *stream, size_t stream_len, uint64_t loc,
                        uint64_t position, uint32_t idh)
{
    return ag__log_index_event_at(ls, stream, stream_len, loc, position, -1, idh);
}

int ag__log_index_event_at(struct lstore *ls, const char *stream, size_t stream_len, uint64_t loc,
                           uint64_t position, int64_t version, uint32_t idh)
{
    uint64_t h = ag_xxh3(stream, stream_len);
    struct lstream *st;
    int frc = ag__lidx_fault(ls, stream, stream_len, h, &st, false);
    if (frc) return frc == AG_ENOMEM ? frc : AG_EIO; /* a table, not the log */
    if (!st && !(st = ag__lindex_add(&ls->ix, stream, stream_len, h))) return AG_ENOMEM;
    size_t skip = version > (int64_t)st->count ? (size_t)(version - (int64_t)st->count) : 0;
    if (ag__lindex_reserve(&ls->ix, st, 1 + skip)) return AG_ENOMEM;
    /* every slot whose position this event is the first at or after (a scavenged
     * log has gaps; a gapless one fills exactly position / LOG_SPARSE_EVERY) */
    if ((uint64_t)ls->sparse_len * LOG_SPARSE_EVERY <= position) {
        size_t k = position / LOG_SPARSE_EVERY;
        if (k >= ls->sparse_cap) {
            size_t cap = ls->sparse_cap ? ls->sparse_cap * 2 : 1024;
            while (cap <= k) cap *= 2;
            uint64_t *sp = ag_realloc(ls->sparse, cap * sizeof *sp);
            if (!sp) return AG_ENOMEM;
            ls->sparse = sp;
            ls->sparse_cap = cap;
        }
        while (ls->sparse_len <= k) ls->sparse[ls->sparse_len++] = loc;
    }
    struct lentry *e = lstream_entries(st);
    if (skip && st->count == 0) ls->ix.live++;
    for (; skip; skip--) e[st->count++] = (struct lentry){.loc = LOC_NONE, .idh = 0};
    e[st->count].loc = loc;
    e[st->count].idh = idh;
    if (st->count++ == 0) ls->ix.live++;
    return 0;
}

static int bad(struct log_scan *sc, uint64_t off, const char *why)
{
    sc->bad_off = off;
    sc->why = why;
    return AG_ECORRUPT;
}

static int batch_push(struct log_scan *sc, uint64_t loc, const struct log_rec *r)
{
    if (sc->batch_n == sc->batch_cap) {
        size_t cap = sc->batch_cap ? sc->batch_cap * 2 : 16;
        struct log_scan_ent *b = ag_realloc(sc->batch, cap * sizeof *b);
        if (!b) return AG_ENOMEM;
        sc->batch = b;
        sc->batch_cap = cap;
    }
    sc->batch[sc->batch_n++] = (struct log_scan_ent){.loc = loc,
                                                     .position = r->position,
                                                     .version = r->version,
                                                     .idh = ag__id_hash(&r->id),
                                                     .stream_len = r->stream_len,
                                                     .stream_off = sc->batch_stream};
    return 0;
}

/* A complete batch (single- or multi-stream) goes into the index at once. */
static int batch_apply(struct log_scan *sc)
{
    for (size_t i = 0; i < sc->batch_n && !sc->verify_only; i++) {
        const struct log_scan_ent *e = &sc->batch[i];
        int rc = ag__log_index_event_at(sc->ls, sc->names.data + e->stream_off, e->stream_len,
                                        e->loc, e->position, e->version, e->idh);
        if (rc) return rc;
    }
    if (sc->batch_n) sc->next_position = sc->batch[sc->batch_n - 1].position + 1;
    sc->events += sc->batch_n;
    if (!sc->verify_only && sc->batch_n)
        (void)ag__lidx_maybe_flush(sc->ls, false, NULL); /* a failure keeps it in memory, logged */
    sc->batch_n = 0;
    sc->names.len = 0;
    sc->batch_left = 0;
    sc->batch_multi = false;
    return 0;
}

static int scan_snapshot(struct log_scan *sc, const struct log_rec *r, uint64_t loc, uint64_t off)
{
    if (sc->batch_left) return bad(sc, off, "snapshot record inside an event batch");
    uint64_t h = ag_xxh3(r->stream, r->stream_len);
    struct lstream *st;
    bool owned = false;
    int rc;
    if (sc->verify_only) { /* the writer thread: the merger may be swapping tables */
        pthread_rwlock_rdlock(&sc->ls->ix_lock);
        rc = ag__lidx_find(sc->ls, r->stream, r->stream_len, h, &st, &owned);
        pthread_rwlock_unlock(&sc->ls->ix_lock);
    } else {
        rc = ag__lidx_fault(sc->ls, r->stream, r->stream_len, h, &st, false);
    }
    if (rc) return rc == AG_ENOMEM ? rc : AG_EIO; /* a table, not the log: tb_corrupt is set */
    bool ok = st && r->version < (int64_t)st->count;
    if (ok && !sc->verify_only) st->snap_loc = loc;
    ag__lidx_release(st, owned);
    return ok ? 0 : bad(sc, off, "snapshot of a version its stream does not have");
}

/* A multi-stream batch header opens a batch of r->batch_left events in
 * r->version streams; nothing of it is applied before its last event. */
static int scan_batch_header(struct log_scan *sc, const struct log_rec *r, uint64_t off)
{
    if (sc->batch_left) return bad(sc, off, "batch header inside an event batch");
    if (r->position != sc->next_position && !(sc->ls->gaps_ok && r->position > sc->next_position))
        return bad(sc, off, "global position out of sequence");
    sc->batch_multi = true;
    sc->batch_start_off = off;
    sc->batch_first_position = r->position;
    sc->batch_n = 0;
    sc->names.len = 0;
    sc->batch_parts = 0;
    sc->batch_parts_want = (uint32_t)r->version;
    sc->batch_left = r->batch_left;
    return 0;
}

static bool is_stream(const char *a, size_t alen, const char *b, size_t blen)
{
    return alen == blen && memcmp(a, b, alen) == 0;
}

/* The first event of a stream's part of the open batch. The index is applied only
 * at the batch's end, so a stream may not come back in a later part. */
static int part_start(struct log_scan *sc, const struct log_rec *r, uint64_t off)
{
    for (size_t i = 0; i < sc->batch_n; i++)
        if (is_stream(sc->names.data + sc->batch[i].stream_off, sc->batch[i].stream_len, r->stream,
                      r->stream_len))
            return bad(sc, off, "stream appears twice in one multi-stream batch");
    uint64_t h = ag_xxh3(r->stream, r->stream_len);
    struct lstream *st = NULL;
    if (!sc->verify_only) {
        int rc = ag__lidx_fault(sc->ls, r->stream, r->stream_len, h, &st, false);
        if (rc) return rc == AG_ENOMEM ? rc : AG_EIO; /* a table, not the log */
    }
    sc->batch_stream = sc->names.len;
    sc->batch_stream_len = r->stream_len;
    if (ag_buf_append(&sc->names, r->stream, r->stream_len)) return AG_ENOMEM;
    sc->batch_next_version = sc->verify_only ? r->version : st ? st->count : 0;
    /* a scavenged log may have lost the stream's earlier events: never go back */
    if (sc->ls->gaps_ok && r->version > sc->batch_next_version) sc->batch_next_version = r->version;
    sc->part_start = sc->batch_n;
    sc->batch_parts++;
    return 0;
}

static int scan_event(struct log_scan *sc, const struct log_rec *r, uint64_t loc, uint64_t off)
{
    int rc;
    if (sc->batch_left == 0) { /* a new single-stream batch starts */
        sc->batch_multi = false;
        sc->batch_start_off = off;
        sc->batch_first_position = sc->next_position;
        if (sc->ls->gaps_ok && r->position > sc->next_position)
            sc->batch_first_position = r->position; /* the events before it were deleted */
        sc->batch_n = 0;
        sc->names.len = 0;
        sc->batch_parts = 0;
        if ((rc = part_start(sc, r, off))) return rc;
    } else if (r->batch_left != sc->batch_left - 1) {
        return bad(sc, off, "event batch interrupted by another record");
    } else if (sc->batch_n == 0 ||
               !is_stream(r->stream, r->stream_len, sc->names.data + sc->batch_stream,
                          sc->batch_stream_len)) {
        if (!sc->batch_multi) return bad(sc, off, "event batch interrupted by another record");
        if ((rc = part_start(sc, r, off))) return rc;
    }
    uint64_t want_pos =
        sc->batch_n ? sc->batch[sc->batch_n - 1].position + 1 : sc->batch_first_position;
    if (r->position != want_pos && !(sc->ls->gaps_ok && sc->batch_multi &&
                                     sc->batch_n == sc->part_start && r->position > want_pos))
        return bad(sc, off, "global position out of sequence");
    if (r->version != sc->batch_next_version + (int64_t)(sc->batch_n - sc->part_start))
        return bad(sc, off, "stream version out of sequence");
    if ((rc = batch_push(sc, loc, r))) return rc;
    sc->batch_left = r->batch_left;
    if (r->batch_left) return 0;
    if (sc->batch_multi && sc->batch_parts != sc->batch_parts_want)
        return bad(sc, sc->batch_start_off,
                   "multi-stream batch holds another number of streams "
                   "than its header says");
    return batch_apply(sc);
}

/* Zeros up to the end: the preallocated rest of a segment (prealloc.c), a clean end. */
static bool all_zero(const uint8_t *p, uint64_t n)
{
    static const uint8_t zeros[4096];
    for (uint64_t k; n; p += k, n -= k) {
        k = AG_MIN(n, (uint64_t)sizeof zeros);
        if (memcmp(p, zeros, (size_t)k) != 0) return false;
    }
    return true;
}

/* A compressed record's dictionary must be loaded (and with check_bodies, its
 * frame must decode): noted, not cut — the bytes are intact, a file is missing. */
static void check_body(struct log_scan *sc, const uint8_t *p, const struct log_rec *r, uint64_t loc)
{
    if (!ag__log_dict_present(sc->ls, r->dict)) {
        if (!sc->dict_missing) sc->dict_missing = r->dict, sc->dict_missing_loc = loc;
        return;
    }
    if (!sc->check_bodies || sc->body_bad) return;
    struct log_rec b;
    struct ag_buf scratch;
    const char *why;
    ag_buf_init(&scratch);
    if (ag__log_rec_body(sc->ls, p, &b, &scratch, &why)) sc->body_bad = why, sc->body_bad_loc = loc;
    ag_buf_free(&scratch);
}

int ag__log_scan(struct log_scan *sc, const struct lseg *seg, const uint8_t *map, uint64_t off,
                 uint64_t len)
{
    sc->good_end = off;
    sc->have_last = false;
    bool v3 = ag__log_seg_format(map) >= LOG_FORMAT_VERSION;
    while (off < len) {
        struct log_rec r;
        const char *why;
        if (ag__log_rec_decode(map + off, len - off, &r, &why)) {
            if (sc->batch_left == 0 && all_zero(map + off, len - off)) break; /* preallocated */
            return bad(sc, off, why);
        }
        if (ag__log_rec_is3(map + off) != v3)
            return bad(sc, off, "record of another format than its segment");
        uint64_t loc = loc_make(seg->segno, off);
        uint64_t pos = sc->next_position;
        if (r.zbody) check_body(sc, map + off, &r, loc);
        int rc = r.kind == LOG_KIND_SNAPSHOT ? scan_snapshot(sc, &r, loc, off)
                 : r.kind == LOG_KIND_BATCH  ? scan_batch_header(sc, &r, off)
                                             : scan_event(sc, &r, loc, off);
        if (rc) return rc;
        sc->records++;
        if (sc->batch_left == 0) {
            sc->have_last = true;
            sc->last_off = r.kind == LOG_KIND_SNAPSHOT ? off : sc->batch_start_off;
            sc->last_pos = r.kind == LOG_KIND_SNAPSHOT ? pos : sc->batch_first_position;
        }
        off += r.size;
        if (sc->batch_left == 0) sc->good_end = off;
    }
    if (sc->batch_left) {
        sc->incomplete = true;
        return bad(sc, sc->batch_start_off, "event batch incomplete at the end");
    }
    return 0;
}

bool ag__log_intact_after(const uint8_t *map, uint64_t off, uint64_t len)
{
    if (ag__log_seg_format(map) >= LOG_FORMAT_VERSION) { /* records at any byte offset */
        for (uint64_t o = off + 1; o < len; o++)
            if (ag__log_rec_is3(map + o) && ag__log_rec3_intact(map + o, len - o)) return true;
        return false;
    }
    for (uint64_t o = (off + LOG_REC_ALIGN) & ~(uint64_t)(LOG_REC_ALIGN - 1);
         o + LOG_REC_MIN <= len; o += LOG_REC_ALIGN) {
        struct log_rec r;
        const char *why;
        if (ag__log_rec_decode(map + o, len - o, &r, &why) == 0) return true;
    }
    return false;
}

void ag__log_scan_free(struct log_scan *sc)
{
    ag_free(sc->batch);
    ag_buf_free(&sc->names);
    sc->batch = NULL;
    sc->batch_cap = sc->batch_n = 0;
}
