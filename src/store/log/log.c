/*
 * The embedded event log.
 *
 * FILES (in the data directory)
 *   seg-<20-digit number>.log   append-only segments, numbered from 0, rolled at
 *                               `segment_bytes` (256 MiB); a batch never spans two
 *   index.ckpt                  the index checkpoint (ckpt.c): derived, disposable
 *   index-<20-digit id>.sst     on-disk stream index tables (sst.c, lsm.c): derived;
 *                               only those index.ckpt names are used, others deleted
 *   dict-<5-digit id>.zd        record compression dictionaries (dict.c): immutable,
 *                               never deleted, durable before any record names one
 *   LOCK                        flock(2)ed by the one writer process; holds its pid
 *   seg-<n>.log.tmp             a segment being created (header written, then renamed);
 *                               a leftover one is ignored
 *   A segment file may be longer than its records: zeros follow them, written ahead
 *   of the writer (PREALLOCATION below).
 *
 * SEGMENT HEADER (64 bytes, little-endian)
 *   0  "AGORALG1"   8  u32 format version (3: compact records, see FORMAT 3 at
 *   the top of record.c; 2 = fixed-header records, some compressed; 1 = written
 *   before compressed records existed; 1 and 2 still read, a segment holds records
 *   of its own format only)   12 u32 header size (64)
 *   16 u64 position of the segment's first event   24 u64 segment number
 *   32 u64 creation time (Unix ns)   40 u32 flags (1 = scavenged: rewritten without
 *   deleted events, see scavenge.c)   44..55 zero   56 u64 XXH3-64 of bytes 0..55
 *
 * RECORD, formats 1 and 2 (8-byte aligned, little-endian; records follow the
 * header back to back; also the in-memory form callers encode and reads expand
 * every record to; format 3 keeps the same fields, compactly: record.c)
 *   0  u32 size         whole record incl. padding and checksum (multiple of 8)
 *   4  u8  kind         1 = event, 2 = snapshot, 3 = multi-stream batch header
 *   5  u8  flags        bit 0: body compressed; bits 1..3: padding bytes (compressed)
 *   6  u16 stream_len   1..255
 *   8  u64 position     global position (events; 0 for snapshots)
 *   16 u64 version      stream version (snapshot: the version its state includes)
 *   24 16B event id     UUID (zero for snapshots)
 *   40 u64 time         commit time, Unix ns
 *   48 u32 batch_left   events after this one in the same append (0 = last)
 *   52 u16 type_len     54 u16 dictionary id (compressed; else zero)
 *   56 u32 meta_len     60 u32 data_len
 *   64 stream | type | metadata | data | zero padding
 *   size-8 u64 XXH3-64 of bytes [0, size-8)
 *   A compressed event record (format 2 segments; flags bit 0) holds, after the
 *   stream name, one magicless zstd frame of type|metadata|data compressed with
 *   dictionary `dictionary id` (dict.c); the three lengths are the raw ones and the
 *   frame's length is size - 64 - stream_len - padding - 8. Snapshots, batch
 *   headers and records that would not shrink stay raw. The checksum covers the
 *   stored bytes; a frame that does not decode to the raw lengths is corruption
 *   (reads fail naming it, verify reports it).
 *
 * BATCHES
 *   A single-stream append is a run of event records of one stream whose
 *   batch_left counts down to 0. A multi-stream append (ag_store_append_multi) is
 *   a batch header record followed by its parts' event records back to back, one
 *   stream after the other (each stream once), with batch_left counting down
 *   across the WHOLE unit to 0 on its last event. The header (kind 3, 72 bytes,
 *   stream/type/metadata/data empty) carries batch_left = events that follow (>= 1),
 *   position = the first of them, version = streams (1..events), time = the
 *   commit time. Within a part, versions are gapless from the stream's version;
 *   positions are gapless across the unit. Recovery applies a unit only at its
 *   last event, so a torn unit is cut whole at its header.
 *   Compatibility: logs written before kind 3 existed (format version 1, which
 *   this still is) read unchanged — nothing else changed. An older agora that
 *   meets a header refuses to open ("unknown record kind" with intact records
 *   after it) rather than misreading the unit, so a log that has had a
 *   multi-stream append cannot be opened by an older version: do not downgrade
 *   (an older `agora store verify --repair` would cut the log at the first unit).
 *
 * WRITING
 *   Callers encode records in their own thread and queue the request. One writer
 *   thread takes everything queued, checks expected versions against the index
 *   (plus what earlier requests of the same group made pending), assigns versions,
 *   positions and the commit time, seals checksums, writes the whole group with
 *   one pwrite and one fdatasync (group commit), then publishes the new events to
 *   the index under a write lock and wakes the callers. Nothing is visible to a
 *   reader before it is durable.
 *
 * PREALLOCATION (prealloc.c)
 *   A filler thread zero-fills the last segment up to 16 MiB ahead of the writer
 *   (never past segment_bytes), with its own writes and fdatasyncs, so a group's
 *   fdatasync finds the file's size and blocks already durable and flushes only
 *   data. It is best effort: an error (ENOSPC included) stops it without failing
 *   any append; it restarts with the next segment or when an outage ends, and is
 *   paused during one. Off under no_sync and read-only.
 *
 * WRITE FAILURES (ENOSPC, EIO, EROFS on pwrite, fdatasync, ftruncate or a roll)
 *   The last segment's `end` is its last synced byte: everything after it belongs
 *   to appends that were never acknowledged. When a group's pwrite or fdatasync
 *   fails, every append of that group fails with AG_EUNAVAILABLE and nothing of it
 *   is published: those appends are NOT re-written from memory (their callers get
 *   a retryable error at once instead of hanging for the length of the outage, and
 *   a retry with the same event ids is idempotent). After a failed fdatasync the
 *   page cache may hold those bytes, marked clean, that will never reach the disk,
 *   so they are cut even when they look intact: the store never keeps a byte it
 *   could not sync. The store then stops acknowledging: every append fails fast
 *   with AG_EUNAVAILABLE while reads of everything durable go on. The writer
 *   retries in the background, 100 ms doubling to 5 s; an attempt
 *     1. cuts the last segment back to `end` (ftruncate + fdatasync: the same cut
 *        recovery at open does) — the tail of the failed write goes;
 *     2. probes: writes 64 KiB of zeros after `end`, fdatasyncs, cuts again;
 *     3. re-verifies the tail with the recovery scan, from the last complete batch
 *        to `end` (checksums, sizes, positions up to the head, batch complete).
 *   When all three succeed appends are taken again. One error line is logged when
 *   writes start failing and one info line when they recover. A crash at any step
 *   leaves at most zeros or unacknowledged records after `end`, which recovery at
 *   open treats as a torn tail (or, if intact, as appends whose outcome their
 *   callers never learned — the same as a crash before the acknowledgement).
 *   ag_store_health reports the state.
 *
 * RECOVERY RULE (open)
 *   Load index.ckpt if it is intact and no segment is shorter than it says; else
 *   start from an empty index. Scan every record after the checkpoint in order,
 *   checking checksum, size, kind, gapless positions, gapless versions per stream
 *   and batch completeness (a multi-stream unit: all its events, in as many
 *   streams as its header says). Zeros from a record boundary to the end of a
 *   segment (outside a batch) are a clean end: preallocated space, kept and
 *   written over. At the first record that fails:
 *   - in the last segment, with no intact record anywhere after it: a torn tail
 *     (a crash mid-write). Cut the segment at the end of the last complete batch
 *     (an incomplete batch goes with it: appends are atomic), log a warning, open.
 *   - anywhere else (an earlier segment, or intact records follow it): corruption
 *     in the middle of the log. Refuse to open, naming the file and the offset.
 *     `agora store verify --repair` cuts there, keeping the cut bytes in a
 *     `.corrupt-<time>` file beside the segment; nothing is deleted.
 *   A read-only open never cuts: it stops reading at the tail.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store/log/internal.h"

static const struct ag_store_ops log_ops;

/* ---- segments ---- */

static void seg_name(uint64_t segno, char out[40])
{
    snprintf(out, 40, "seg-%020llu.log", (unsigned long long)segno);
}

static size_t page_round(uint64_t n)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    return (size_t)((n + pg - 1) / pg * pg);
}

static int seg_map(struct lseg *sg, uint64_t want)
{
    sg->map_len = page_round(want < 4096 ? 4096 : want);
    void *m = mmap(NULL, sg->map_len, PROT_READ, MAP_SHARED, sg->fd, 0);
    if (m == MAP_FAILED) return -errno;
    sg->map = m;
    return 0;
}

static int segs_push(struct lstore *ls, const struct lseg *sg)
{
    if (ls->nsegs == ls->segs_cap) {
        size_t cap = ls->segs_cap ? ls->segs_cap * 2 : 8;
        struct lseg *s = ag_realloc(ls->segs, cap * sizeof *s);
        if (!s) return AG_ENOMEM;
        ls->segs = s;
        ls->segs_cap = cap;
    }
    ls->segs[ls->nsegs++] = *sg;
    return 0;
}

static uint64_t seg_bytes(const struct lstore *ls)
{
    return ls->base.opts.segment_bytes;
}

/* Open an existing segment file and map it (big enough to grow if it is the last). */
static int seg_open(struct lstore *ls, uint64_t segno, struct lseg *sg, struct ag_err *err)
{
    char name[40];
    seg_name(segno, name);
    memset(sg, 0, sizeof *sg);
    sg->segno = segno;
    sg->fd = openat(ls->dir_fd, name, (ls->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (sg->fd < 0) return ag_err_set(err, AG_EIO, "%s/%s: %s", ls->dir, name, strerror(errno));
    struct stat st;
    int rc = fstat(sg->fd, &st) ? -errno : 0;
    uint64_t size = rc ? 0 : (uint64_t)st.st_size;
    if (!rc) rc = seg_map(sg, size > seg_bytes(ls) ? size : seg_bytes(ls));
    if (rc) {
        close(sg->fd);
        return ag_err_set(err, AG_EIO, "%s/%s: %s", ls->dir, name, strerror(-rc));
    }
    const char *why;
    if (ag__log_seg_header_check(sg->map, size, segno, &why)) {
        munmap((void *)sg->map, sg->map_len);
        close(sg->fd);
        return ag_err_set(err, AG_ECORRUPT, "%s/%s: offset 0: %s", ls->dir, name, why);
    }
    sg->base_position = ag__log_seg_base_position(sg->map);
    if (ag__log_seg_flags(sg->map) & LOG_SEG_SCAVENGED) ls->gaps_ok = true;
    sg->end = LOG_SEG_HDR;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Find seg-*.log files, sorted by number; *out is owned by the caller. */
static int list_segments(struct lstore *ls, uint64_t **out, size_t *n)
{
    DIR *d = fdopendir(dup(ls->dir_fd));
    if (!d) return -errno;
    size_t cap = 16;
    uint64_t *v = ag_malloc(cap * sizeof *v);
    *n = 0;
    struct dirent *de;
    while (v && (de = readdir(d))) {
        unsigned long long no;
        char tail[8];
        if (sscanf(de->d_name, "seg-%20llu.%7s", &no, tail) != 2 || strcmp(tail, "log") != 0 ||
            strlen(de->d_name) != 28)
            continue;
        if (*n == cap) {
            uint64_t *nv = ag_realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) ag_free(v);
            v = nv;
            if (!v) break;
        }
        v[(*n)++] = no;
    }
    closedir(d);
    if (!v) return AG_ENOMEM;
    qsort(v, *n, sizeof *v, cmp_u64);
    *out = v;
    return 0;
}

static int segs_load(struct lstore *ls, struct ag_err *err)
{
    uint64_t *nums = NULL;
    size_t n = 0;
    int rc = list_segments(ls, &nums, &n);
    if (rc)
        return ag_err_set(err, rc == AG_ENOMEM ? rc : AG_EIO, "%s: cannot list: %s", ls->dir,
                          ag_strerror(rc));
    for (size_t i = 0; i < n && !rc; i++) {
        if (i > 0 && nums[i] != nums[i - 1] + 1) {
            rc = ag_err_set(err, AG_ECORRUPT, "%s: segment %llu is missing (found %llu after it)",
                            ls->dir, (unsigned long long)nums[i - 1] + 1,
                            (unsigned long long)nums[i]);
            break;
        }
        struct lseg sg;
        rc = seg_open(ls, nums[i], &sg, err);
        if (!rc && (rc = segs_push(ls, &sg))) {
            munmap((void *)sg.map, sg.map_len);
            close(sg.fd);
        }
    }
    ag_free(nums);
    return rc;
}

int ag__log_seg_attach(struct lstore *ls, uint64_t segno, struct ag_err *err)
{
    struct lseg sg;
    int rc = seg_open(ls, segno, &sg, err);
    if (rc) return rc;
    if ((rc = segs_push(ls, &sg))) {
        munmap((void *)sg.map, sg.map_len);
        close(sg.fd);
    }
    return rc;
}

static int fsync_dir(struct lstore *ls)
{
    return ls->base.opts.no_sync || fsync(ls->dir_fd) == 0 ? 0 : -errno;
}

int ag__log_seg_create(struct lstore *ls, uint64_t segno, uint64_t base_position,
                       struct ag_err *err)
{
    char name[40], tmp[48];
    uint8_t hdr[LOG_SEG_HDR];
    seg_name(segno, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", name);
    struct lseg sg = {.segno = segno, .base_position = base_position, .end = LOG_SEG_HDR};
    /* the header is written under a temporary name and renamed into place, so a crash
     * mid-creation never leaves a segment without its header (open would refuse it) */
    sg.fd = openat(ls->dir_fd, tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (sg.fd < 0) return ag_err_set(err, AG_EIO, "%s/%s: %s", ls->dir, tmp, strerror(errno));
    ag__log_seg_header_fmt(hdr, segno, base_position, ag_clock_now(ls->base.opts.clock), 0,
                           ls->write_format);
    int rc = ag__log_io_pwrite(ls, sg.fd, hdr, sizeof hdr, 0);
    if (!rc) rc = ag__log_io_sync(ls, sg.fd);
    if (!rc && renameat(ls->dir_fd, tmp, ls->dir_fd, name) != 0) rc = -errno;
    if (!rc) rc = fsync_dir(ls);
    if (!rc) rc = seg_map(&sg, seg_bytes(ls));
    if (rc) {
        close(sg.fd);
        unlinkat(ls->dir_fd, tmp, 0);
        ag_err_set(err, AG_EIO, "%s/%s: %s", ls->dir, name, strerror(-rc));
        if (err) err->aux = -rc; /* the errno, for the writer's health report */
        return AG_EIO;
    }
    pthread_rwlock_wrlock(&ls->ix_lock);
    rc = segs_push(ls, &sg);
    pthread_rwlock_unlock(&ls->ix_lock);
    if (rc) {
        munmap((void *)sg.map, sg.map_len);
        close(sg.fd);
    }
    return rc;
}

/* ---- recovery ---- */

static int keep_cut_bytes(struct lstore *ls, struct lseg *sg, uint64_t from, uint64_t to)
{
    char name[40], keep[96];
    seg_name(sg->segno, name);
    snprintf(keep, sizeof keep, "%s.corrupt-%lld", name, (long long)time(NULL));
    int fd = openat(ls->dir_fd, keep, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -errno;
    int rc = 0;
    if (to > from && write(fd, sg->map + from, to - from) != (ssize_t)(to - from)) rc = -EIO;
    if (!rc && fsync(fd)) rc = -errno;
    close(fd);
    if (!rc) AG_WARN("store.repair_kept", AG_LS("file", keep), AG_LU("bytes", to - from));
    return rc;
}

/* Move segments after index `i` aside (verify --repair after mid-log corruption). */
static int drop_later_segments(struct lstore *ls, size_t i)
{
    for (size_t k = ls->nsegs; k-- > i + 1;) {
        struct lseg *sg = &ls->segs[k];
        char name[40], keep[96];
        seg_name(sg->segno, name);
        snprintf(keep, sizeof keep, "%s.corrupt-%lld", name, (long long)time(NULL));
        munmap((void *)sg->map, sg->map_len);
        close(sg->fd);
        if (renameat(ls->dir_fd, name, ls->dir_fd, keep)) return -errno;
        AG_WARN("store.repair_moved_segment", AG_LS("file", name), AG_LS("to", keep));
    }
    ls->nsegs = i + 1;
    return 0;
}

/* Cut a segment file at `cut` and make the cut durable: 0 or -errno. Recovery at
 * open and the writer after a failed write both cut tails with this. */
static int truncate_seg(struct lstore *ls, struct lseg *sg, uint64_t cut)
{
    int rc = ag__log_io_truncate(ls, sg->fd, cut);
    return rc ? rc : ag__log_io_sync(ls, sg->fd);
}

static int cut_tail(struct lstore *ls, size_t i, uint64_t cut, uint64_t size, bool keep)
{
    struct lseg *sg = &ls->segs[i];
    int rc = keep ? keep_cut_bytes(ls, sg, cut, size) : 0;
    if (!rc) rc = truncate_seg(ls, sg, cut);
    if (!rc && i + 1 < ls->nsegs) rc = drop_later_segments(ls, i);
    if (!rc) unlinkat(ls->dir_fd, "index.ckpt", 0);
    return rc;
}

struct recover_ctx {
    bool repair; /* cut at any bad record (verify --repair / opts.repair) */
    struct ag_log_verify_report *report;
};

static uint64_t file_size(int fd)
{
    struct stat st;
    return fstat(fd, &st) ? 0 : (uint64_t)st.st_size;
}

/* Apply the recovery rule to a bad record found by the scan in segment i. */
static int on_bad_record(struct lstore *ls, size_t i, struct log_scan *sc, uint64_t size,
                         const struct recover_ctx *rc_ctx, struct ag_err *err)
{
    struct lseg *sg = &ls->segs[i];
    bool last = i + 1 == ls->nsegs;
    bool torn = last && (sc->incomplete || !ag__log_intact_after(sg->map, sc->bad_off, size));
    char name[40];
    seg_name(sg->segno, name);
    if (rc_ctx->report && !rc_ctx->report->problem[0])
        snprintf(rc_ctx->report->problem, sizeof rc_ctx->report->problem,
                 "%s/%s: offset %llu: %s%s", ls->dir, name, (unsigned long long)sc->bad_off,
                 sc->why, torn ? " (torn tail)" : "");
    if (!torn && !rc_ctx->repair)
        return ag_err_set(err, AG_ECORRUPT,
                          "%s/%s: bad record at offset %llu (%s), and intact records follow it: "
                          "this is not a torn tail. Run 'agora store verify --repair' to cut the "
                          "log there (the cut bytes are kept beside the segment).",
                          ls->dir, name, (unsigned long long)sc->bad_off, sc->why);
    sg->end = sc->good_end;
    if (ls->read_only) return 1; /* stop reading here, touch nothing */
    AG_WARN(torn ? "store.torn_tail_truncated" : "store.repair_cut", AG_LS("file", name),
            AG_LU("offset", sc->good_end), AG_LU("bytes", size - sc->good_end),
            AG_LS("why", sc->why));
    int rc = cut_tail(ls, i, sc->good_end, size, !torn || rc_ctx->repair);
    if (rc)
        return ag_err_set(err, AG_EIO, "%s/%s: cannot truncate: %s", ls->dir, name, strerror(-rc));
    if (rc_ctx->report) rc_ctx->report->repaired = true;
    return 1;
}

/* Where the writer's tail check starts (see WRITE FAILURES): the last complete
 * batch the scan met in the last segment, else where the scan began. */
static void note_tail(struct lstore *ls, size_t i, const struct log_scan *sc, uint64_t from,
                      uint64_t from_pos)
{
    if (i + 1 != ls->nsegs) return;
    bool in = sc->have_last && sc->last_off < ls->segs[i].end;
    ls->tail_off = in ? sc->last_off : from;
    ls->tail_pos = in ? sc->last_pos : from_pos;
}

/* After the scan: a compressed record whose dictionary file is missing, or (verify)
 * whose frame does not decode, is an error naming the record — never a cut. */
static int scan_dict_check(struct lstore *ls, const struct log_scan *sc,
                           const struct recover_ctx *rctx, struct ag_err *err)
{
    char msg[320];
    if (sc->dict_missing)
        snprintf(msg, sizeof msg,
                 "%s/seg-%020llu.log: offset %llu: record compressed with dictionary %u, but "
                 "%s/dict-%05u.zd is missing (restore it from a backup)",
                 ls->dir, (unsigned long long)loc_seg(sc->dict_missing_loc),
                 (unsigned long long)loc_off(sc->dict_missing_loc), (unsigned)sc->dict_missing,
                 ls->dir, (unsigned)sc->dict_missing);
    else if (sc->body_bad)
        snprintf(msg, sizeof msg, "%s/seg-%020llu.log: offset %llu: %s", ls->dir,
                 (unsigned long long)loc_seg(sc->body_bad_loc),
                 (unsigned long long)loc_off(sc->body_bad_loc), sc->body_bad);
    else
        return 0;
    if (rctx->report) {
        if (!rctx->report->problem[0])
            snprintf(rctx->report->problem, sizeof rctx->report->problem, "%s", msg);
        return 0;
    }
    return ag_err_set(err, AG_ECORRUPT, "%s", msg);
}

static int recover(struct lstore *ls, size_t from_seg, uint64_t from_off,
                   const struct recover_ctx *rctx, struct ag_err *err)
{
    struct log_scan sc = {.ls = ls, .next_position = ls->head, .check_bodies = rctx->report};
    int rc = 0;
    ls->tail_off = LOG_SEG_HDR; /* unless note_tail finds better: the last segment is empty */
    ls->tail_pos = UINT64_MAX;
    for (size_t i = from_seg; i < ls->nsegs; i++) {
        struct lseg *sg = &ls->segs[i];
        uint64_t off = i == from_seg ? from_off : LOG_SEG_HDR;
        uint64_t size = file_size(sg->fd);
        if (size > sg->map_len) size = sg->map_len;
        if (off == LOG_SEG_HDR && ls->gaps_ok && sg->base_position > sc.next_position)
            sc.next_position = sg->base_position; /* the end of the previous one was deleted */
        if (off == LOG_SEG_HDR && sg->base_position != sc.next_position) {
            sc.bad_off = 0,
            sc.why = "segment's first position does not follow the previous segment";
            sc.good_end = LOG_SEG_HDR;
            rc = on_bad_record(ls, i, &sc, size, rctx, err);
        } else {
            uint64_t pos = sc.next_position;
            rc = ag__log_scan(&sc, sg, sg->map, off, size);
            if (rc == AG_ECORRUPT)
                rc = on_bad_record(ls, i, &sc, size, rctx, err);
            else
                sg->end = sc.good_end;
            note_tail(ls, i, &sc, off, pos);
        }
        if (rctx->report) rctx->report->bytes += sg->end;
        if (rc) break;
    }
    if (rctx->report) {
        rctx->report->segments = ls->nsegs;
        rctx->report->records = sc.records;
        rctx->report->events = sc.events;
    }
    ag__log_set_head(ls, sc.next_position);
    if (ls->tail_pos == UINT64_MAX) ls->tail_pos = sc.next_position;
    if (rc >= 0) {
        int drc = scan_dict_check(ls, &sc, rctx, err);
        if (drc) rc = drc;
    }
    ag__log_scan_free(&sc);
    return rc < 0 ? rc : 0;
}

/* ---- the tail after a write failure ---- */

int ag__log_tail_restore(struct lstore *ls, struct ag_err *err)
{
    struct lseg *sg = &ls->segs[ls->nsegs - 1];
    char name[40];
    seg_name(sg->segno, name);
    struct stat st;
    if (fstat(sg->fd, &st) != 0) {
        ag_err_set(err, AG_EUNAVAILABLE, "%s/%s: %s", ls->dir, name, strerror(errno));
        if (err) err->aux = errno;
        return AG_EUNAVAILABLE;
    }
    if ((uint64_t)st.st_size != sg->end) {
        int rc = truncate_seg(ls, sg, sg->end);
        if (rc) {
            ag_err_set(err, AG_EUNAVAILABLE, "%s/%s: cannot cut the unwritten tail at %llu: %s",
                       ls->dir, name, (unsigned long long)sg->end, strerror(-rc));
            if (err) err->aux = -rc;
            return AG_EUNAVAILABLE;
        }
        /* debug: the outage itself was logged once, by the writer */
        AG_DEBUG("store.unacknowledged_tail_cut", AG_LS("file", name), AG_LU("offset", sg->end),
                 AG_LU("bytes", (uint64_t)st.st_size - sg->end));
    }
    /* re-verify: the recovery scan, checking what the index already holds */
    struct log_scan sc = {.ls = ls, .verify_only = true, .next_position = ls->tail_pos};
    int rc = ag__log_scan(&sc, sg, sg->map, ls->tail_off, sg->end);
    if (rc == 0 && (sc.good_end != sg->end || sc.next_position != ag__log_head(ls))) {
        sc.bad_off = sc.good_end;
        sc.why = "the log's tail does not end at the store's head";
        rc = AG_ECORRUPT;
    }
    if (rc)
        ag_err_set(err, rc, "%s/%s: tail check failed at offset %llu: %s", ls->dir, name,
                   (unsigned long long)sc.bad_off, sc.why ? sc.why : ag_strerror(rc));
    ag__log_scan_free(&sc);
    return rc;
}

/* ---- open / close ---- */

static int take_lock(struct lstore *ls, struct ag_err *err)
{
    ls->lock_fd = openat(ls->dir_fd, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (ls->lock_fd < 0) return ag_err_set(err, AG_EIO, "%s/LOCK: %s", ls->dir, strerror(errno));
    if (flock(ls->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = {0};
        ssize_t n = pread(ls->lock_fd, pid, sizeof pid - 1, 0);
        while (n > 0 && (pid[n - 1] == '\n' || pid[n - 1] == ' ')) pid[--n] = 0;
        close(ls->lock_fd);
        ls->lock_fd = -1;
        return ag_err_set(err, AG_ELOCKED,
                          "%s is in use by another agora process (pid %s); stop it first, or use a "
                          "read-only command",
                          ls->dir, n > 0 ? pid : "unknown");
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(ls->lock_fd, 0) == 0 &&
        pwrite(ls->lock_fd, pid, (size_t)n, 0) < 0) { /* advisory */
    }
    return 0;
}

static void store_free(struct lstore *ls)
{
    ag__log_dict_stop(ls);
    ag__log_pa_stop(ls);
    for (size_t i = 0; i < ls->nsegs; i++) {
        munmap((void *)ls->segs[i].map, ls->segs[i].map_len);
        close(ls->segs[i].fd);
    }
    ag_free(ls->segs);
    ag__lidx_merger_stop(ls);
    ag__lidx_close_tables(ls);
    ag__lindex_free(&ls->ix);
    ag__lindex_free(&ls->frozen);
    ag_free(ls->sparse);
    ag_buf_free(&ls->group);
    ag_free(ls->pend);
    if (ls->lock_fd >= 0) close(ls->lock_fd); /* releases the flock */
    if (ls->dir_fd >= 0) close(ls->dir_fd);
    pthread_rwlock_destroy(&ls->ix_lock);
    pthread_mutex_destroy(&ls->q_lock);
    pthread_cond_destroy(&ls->q_cond);
    pthread_mutex_destroy(&ls->head_lock);
    pthread_cond_destroy(&ls->head_cond);
    pthread_mutex_destroy(&ls->health_lock);
    pthread_mutex_destroy(&ls->fault_lock);
    pthread_mutex_destroy(&ls->scav_lock);
    pthread_mutex_destroy(&ls->pa_lock);
    pthread_cond_destroy(&ls->pa_cond);
    pthread_mutex_destroy(&ls->ckpt_lock);
    pthread_mutex_destroy(&ls->mg_lock);
    pthread_mutex_destroy(&ls->mg_run);
    pthread_cond_destroy(&ls->mg_cond);
    pthread_cond_destroy(&ls->fl_cond);
    ag__log_dicts_free(ls);
    ag__log_rc_close(ls);
    ag_free(ls->dir);
    ag_free(ls);
}

static int store_alloc(const char *dir, const struct ag_store_options *opts, struct lstore **out,
                       struct ag_err *err)
{
    struct lstore *ls = ag_calloc(1, sizeof *ls);
    if (!ls) return ag_err_set(err, AG_ENOMEM, "out of memory opening %s", dir);
    ls->base.ops = &log_ops;
    if (opts) ls->base.opts = *opts;
    struct ag_store_options *o = &ls->base.opts;
    if (!o->max_event_bytes) o->max_event_bytes = AG_STORE_EVENT_MAX_DEFAULT;
    /* tests: AGORA_STORE_FORMAT=2 writes the previous format (an older log to open) */
    const char *wf = getenv("AGORA_STORE_FORMAT");
    ls->write_format = wf && strcmp(wf, "2") == 0 ? LOG_FORMAT_V2 : LOG_FORMAT_VERSION;
    const char *sb = getenv("AGORA_STORE_SEGMENT_BYTES"); /* tests and benchmarks */
    if (!o->segment_bytes && sb) o->segment_bytes = strtoull(sb, NULL, 10);
    if (!o->segment_bytes) o->segment_bytes = 256ull << 20;
    if (o->segment_bytes < (4u << 20) + LOG_SEG_HDR) o->segment_bytes = (4u << 20) + LOG_SEG_HDR;
    if (!o->clock) o->clock = ag_clock_system();
    if (!o->rng) o->rng = ag_rng_system();
    ls->read_only = o->read_only;
    ls->dir_fd = ls->lock_fd = ls->pa_fd = -1;
    ls->retry_min_ns = o->retry_min_ns ? o->retry_min_ns : 100000000ull;
    ls->retry_max_ns = o->retry_max_ns ? o->retry_max_ns : 5000000000ull;
    if (ls->retry_max_ns < ls->retry_min_ns) ls->retry_max_ns = ls->retry_min_ns;
    ls->health.writable = !ls->read_only;
    ls->tail_off = LOG_SEG_HDR;
    pthread_rwlock_init(&ls->ix_lock, NULL);
    pthread_mutex_init(&ls->q_lock, NULL);
    pthread_mutex_init(&ls->head_lock, NULL);
    pthread_mutex_init(&ls->health_lock, NULL);
    pthread_mutex_init(&ls->fault_lock, NULL);
    pthread_mutex_init(&ls->scav_lock, NULL);
    pthread_mutex_init(&ls->pa_lock, NULL);
    pthread_cond_init(&ls->pa_cond, NULL);
    pthread_mutex_init(&ls->ckpt_lock, NULL);
    pthread_mutex_init(&ls->mg_lock, NULL);
    pthread_mutex_init(&ls->mg_run, NULL);
    pthread_cond_init(&ls->mg_cond, NULL);
    pthread_cond_init(&ls->fl_cond, NULL);
    ls->index_memory = o->index_memory ? o->index_memory : LOG_INDEX_MEMORY_DEFAULT;
    if (ls->index_memory < LOG_INDEX_MEMORY_MIN) ls->index_memory = LOG_INDEX_MEMORY_MIN;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ls->head_cond, &ca);
    pthread_cond_init(&ls->q_cond, &ca); /* the writer's timed waits for retries */
    pthread_condattr_destroy(&ca);
    ag_buf_init(&ls->group);
    *out = ls;
    if (!(ls->dir = ag_strdup(dir)) || ag__lindex_init(&ls->ix, 0))
        return ag_err_set(err, AG_ENOMEM, "out of memory opening %s", dir);
    return 0;
}

static int open_dir(struct lstore *ls, struct ag_err *err)
{
    if (!ls->read_only && mkdir(ls->dir, 0755) != 0 && errno != EEXIST)
        return ag_err_set(err, AG_EIO, "%s: cannot create: %s", ls->dir, strerror(errno));
    ls->dir_fd = open(ls->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (ls->dir_fd < 0)
        return ag_err_set(err, errno == ENOENT ? AG_ENOTFOUND : AG_EIO, "%s: %s", ls->dir,
                          strerror(errno));
    return ls->read_only ? 0 : take_lock(ls, err);
}

/* The last segment was written by an older agora (format 1 or 2) and the writer
 * is about to append compact (format-3) records. An empty one gets a format-3
 * header (one 64-byte write, synced before any append); one holding records stays
 * as it is and a new format-3 segment starts after it, so each segment holds
 * records of one format and an older agora refuses the log (unknown format
 * version) instead of misreading it. */
static int seg_upgrade(struct lstore *ls, struct lseg *sg, struct ag_err *err)
{
    if (ag__log_seg_format(sg->map) >= ls->write_format) return 0;
    if (sg->end > LOG_SEG_HDR) {
        int rc = ag__log_seg_create(ls, sg->segno + 1, ag__log_head(ls), err);
        ls->tail_off = LOG_SEG_HDR; /* the writer's tail check: the new, empty segment */
        ls->tail_pos = ag__log_head(ls);
        return rc;
    }
    uint8_t hdr[LOG_SEG_HDR];
    ag__log_seg_header_fmt(hdr, sg->segno, ag__log_seg_base_position(sg->map),
                           ag__le64(sg->map + 32), ag__log_seg_flags(sg->map), ls->write_format);
    int rc = ag__log_io_pwrite(ls, sg->fd, hdr, LOG_SEG_HDR, 0);
    if (!rc) rc = ag__log_io_sync(ls, sg->fd);
    if (rc)
        return ag_err_set(err, AG_EIO, "%s/seg-%020llu.log: cannot upgrade its header: %s", ls->dir,
                          (unsigned long long)sg->segno, strerror(-rc));
    return 0;
}

static int log_open(const char *dir, const struct ag_store_options *opts, bool use_ckpt,
                    const struct recover_ctx *rctx, struct lstore **out, struct ag_err *err)
{
    struct lstore *ls = NULL;
    int rc = store_alloc(dir, opts, &ls, err);
    if (!rc) rc = open_dir(ls, err);
    if (!rc) ag__log_io_faults_from_env(ls);
    if (!rc) ag__log_rc_open(ls);
    if (!rc) rc = ag__log_dicts_load(ls, err);
    if (!rc) rc = segs_load(ls, err);
    if (!rc && ls->nsegs == 0 && !ls->read_only) rc = ag__log_seg_create(ls, 0, 0, err);
    bool loaded = false;
    uint64_t seg = 0, off = LOG_SEG_HDR;
    if (!rc && use_ckpt && ls->nsegs) rc = ag__log_ckpt_load(ls, &loaded, &seg, &off);
    if (ls) ls->tb_enabled = !ls->read_only && !rctx->report; /* verify: all in memory */
    if (!rc && ls->tb_enabled) ag__lidx_remove_orphans(ls);
    if (!rc && ls->nsegs) rc = recover(ls, (size_t)seg, off, rctx, err);
    if (rc && ls && ls->tb_corrupt && use_ckpt) { /* a table failed during the scan: rebuild */
        store_free(ls);
        ag_err_clear(err);
        AG_WARN("store.index_rebuilt", AG_LS("dir", dir),
                AG_LS("reason", "an index table failed its check during open"),
                AG_LS("action", "rebuilding the stream index from the log"));
        return log_open(dir, opts, false, rctx, out, err);
    }
    if (!rc && !ls->read_only && !rctx->report && ls->nsegs)
        rc = seg_upgrade(ls, &ls->segs[ls->nsegs - 1], err);
    if (!rc && !rctx->report && ag__log_dict_start(ls))
        rc = ag_err_set(err, AG_ENOMEM, "cannot start the dictionary trainer thread");
    if (!rc && ls->tb_written && ag__log_ckpt_save(ls, err)) rc = AG_EIO;
    if (!rc && ag__lidx_merger_start(ls))
        rc = ag_err_set(err, AG_ENOMEM, "cannot start the index merger thread");
    /* verify (--repair) only checks or cuts: no filler */
    if (!rc && !rctx->report && ag__log_pa_start(ls))
        rc = ag_err_set(err, AG_ENOMEM, "cannot start the preallocation thread");
    if (!rc && !ls->read_only) {
        if (pthread_create(&ls->writer, NULL, ag__log_writer_main, ls) != 0)
            rc = ag_err_set(err, AG_ENOMEM, "cannot start the writer thread");
        else
            ls->writer_started = true;
    }
    if (rc) {
        if (rc == AG_ENOMEM && err && !err->msg[0])
            ag_err_set(err, rc, "out of memory opening %s", dir);
        if (ls) store_free(ls);
        return rc;
    }
    AG_DEBUG("store.opened", AG_LS("dir", dir), AG_LU("events", ag__log_head(ls)),
             AG_LU("streams", ls->ix.count), AG_LB("checkpoint", loaded));
    *out = ls;
    return 0;
}

int ag_store_log_open(const char *dir, const struct ag_store_options *opts, struct ag_store **out,
                      struct ag_err *err)
{
    struct recover_ctx rctx = {.repair = opts && opts->repair};
    struct lstore *ls;
    int rc = log_open(dir, opts, true, &rctx, &ls, err);
    if (!rc) *out = &ls->base;
    return rc;
}

int ag_store_log_verify(const char *dir, bool repair, struct ag_log_verify_report *report,
                        struct ag_err *err)
{
    memset(report, 0, sizeof *report);
    struct recover_ctx rctx = {.repair = repair, .report = report};
    struct ag_store_options o = {.read_only = !repair};
    struct lstore *ls;
    struct ag_err e2;
    ag_err_clear(&e2);
    int rc = log_open(dir, &o, false, &rctx, &ls, &e2);
    if (rc == AG_ECORRUPT) {
        report->ok = false;
        if (!report->problem[0]) snprintf(report->problem, sizeof report->problem, "%s", e2.msg);
        return 0;
    }
    if (rc) {
        if (err) *err = e2;
        return rc;
    }
    report->ok = report->problem[0] == 0;
    ag_store_close(&ls->base);
    return 0;
}

static void log_close(struct ag_store *s)
{
    struct lstore *ls = (struct lstore *)s;
    if (ls->writer_started) {
        pthread_mutex_lock(&ls->q_lock);
        ls->closing = true;
        pthread_cond_signal(&ls->q_cond);
        pthread_mutex_unlock(&ls->q_lock);
        pthread_join(ls->writer, NULL);
    }
    ag__log_dict_stop(ls);
    ag__log_pa_stop(ls);
    pthread_mutex_lock(&ls->head_lock);
    ls->closing = true;
    pthread_cond_broadcast(&ls->head_cond);
    pthread_mutex_unlock(&ls->head_lock);
    struct ag_err err;
    ag_err_clear(&err);
    /* closing mid-outage: one last try to drop the unacknowledged tail */
    if (ls->unavail && ag__log_tail_restore(ls, &err) == 0) ls->unavail = false;
    ag__lidx_merger_stop(ls);
    if (!ls->read_only && ls->tb_corrupt)
        ag__log_ckpt_drop(ls); /* a table failed its check: the next open rebuilds */
    else if (!ls->read_only && !ls->unavail && ag__log_ckpt_save(ls, &err))
        AG_WARN("store.checkpoint_failed", AG_LS("error", err.msg));
    store_free(ls);
}

static const struct ag_store_ops log_ops = {
    .name = "log",
    .append = ag__log_append,
    .append_async = ag__log_append_async,
    .append_multi = ag__log_append_multi,
    .append_multi_async = ag__log_append_multi_async,
    .read_stream = ag__log_read_stream,
    .read_all = ag__log_read_all,
    .stream_version = ag__log_stream_version,
    .list_streams = ag__log_list_streams,
    .wait_head = ag__log_wait_head,
    .save_snapshot = ag__log_save_snapshot,
    .load_snapshot = ag__log_load_snapshot,
    .stats = ag__log_stats,
    .close = log_close,
    .health = ag__log_health,
};
