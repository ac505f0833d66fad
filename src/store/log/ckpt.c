/*
 * The index checkpoint: the in-memory index written to `index.ckpt` so that open
 * scans only the log written after it. Written atomically (temp file, fsync,
 * rename, fsync of the directory) by the writer thread on segment roll and on
 * close. Any doubt on load (checksum, a segment shorter than the checkpoint says)
 * and the checkpoint is ignored: the log is the truth, the index is derived.
 *
 * It holds only the in-memory part of the stream index (the memtable) and names
 * the on-disk tables (sst.c) that hold the rest, in order, each with the checksum
 * of its footer: a table is trusted only while a checkpoint names it. Saved
 * under ckpt_lock and the read side of ix_lock, so the writer and the merger
 * (lsm.c) may both save, and what is saved is one consistent state.
 *
 * Layout (little-endian):
 *   "AGORAIX2" u32 version u32 dictionaries | u64 nsegs | u64 head | u64 nstreams | u64 nsparse
 *   | u64 ntables | u64 live streams
 *   nsegs   × { u64 segno, u64 end }
 *   ntables × { u64 id, u64 footer checksum }
 *   nstreams× { u16 name_len, name, u32 count, u64 snap_loc, count × {u64 loc, u32 idh} }
 *   nsparse × u64 loc
 *   u64 XXH3 of everything before
 * `dictionaries` is the number of compression dictionaries (dict.c) when it was
 * saved: fewer dict-*.zd files at open make the checkpoint inconsistent, so the
 * log is scanned and the scan names the record whose dictionary is missing.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/log/internal.h"

#define CKPT_MAGIC "AGORAIX2"
#define CKPT_NAME  "index.ckpt"

static int put(struct ag_buf *b, const void *p, size_t n)
{
    return ag_buf_append(b, p, n);
}
static int put64(struct ag_buf *b, uint64_t v)
{
    return put(b, &v, 8);
}

static int serialize(struct lstore *ls, struct ag_buf *b)
{
    uint32_t ver = LOG_FORMAT_VERSION, dicts = __atomic_load_n(&ls->dicts.n, __ATOMIC_RELAXED);
    int rc = put(b, CKPT_MAGIC, 8) || put(b, &ver, 4) || put(b, &dicts, 4) || put64(b, ls->nsegs) ||
             put64(b, ls->head) || put64(b, ls->ix.count) || put64(b, ls->sparse_len) ||
             put64(b, ls->ntables) || put64(b, ls->ix.live);
    for (size_t i = 0; !rc && i < ls->nsegs; i++)
        rc = put64(b, ls->segs[i].segno) || put64(b, ls->segs[i].end);
    for (size_t i = 0; !rc && i < ls->ntables; i++)
        rc = put64(b, ls->tables[i]->id) || put64(b, ls->tables[i]->file_sum);
    for (size_t i = 0; !rc && i <= ls->ix.mask; i++) {
        struct lstream *st = ls->ix.slots[i];
        if (!st) continue;
        uint16_t nl = st->name_len;
        rc = put(b, &nl, 2) || put(b, st->name, nl) || put(b, &st->count, 4) ||
             put64(b, st->snap_loc) ||
             put(b, lstream_entries(st), (size_t)st->count * sizeof(struct lentry));
    }
    if (!rc) rc = put(b, ls->sparse, ls->sparse_len * 8);
    if (!rc) rc = put64(b, ag_xxh3(b->data, b->len));
    return rc ? AG_ENOMEM : 0;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -errno;
        p += w, n -= (size_t)w;
    }
    return 0;
}

int ag__log_ckpt_save(struct lstore *ls, struct ag_err *err)
{
    struct ag_buf b;
    ag_buf_init(&b);
    pthread_mutex_lock(&ls->ckpt_lock);
    pthread_rwlock_rdlock(&ls->ix_lock);
    int rc = serialize(ls, &b);
    pthread_rwlock_unlock(&ls->ix_lock);
    if (rc) goto out_free_buf;
    int fd = openat(ls->dir_fd, CKPT_NAME ".tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = ag_err_set(err, AG_EIO, "%s/%s.tmp: %s", ls->dir, CKPT_NAME, strerror(errno));
        goto out_free_buf;
    }
    rc = write_all(fd, b.data, b.len);
    if (!rc && !ls->base.opts.no_sync && fdatasync(fd)) rc = -errno;
    close(fd);
    if (!rc && renameat(ls->dir_fd, CKPT_NAME ".tmp", ls->dir_fd, CKPT_NAME)) rc = -errno;
    if (!rc && !ls->base.opts.no_sync) fsync(ls->dir_fd);
    if (rc) rc = ag_err_set(err, AG_EIO, "%s/%s: %s", ls->dir, CKPT_NAME, strerror(-rc));
out_free_buf:
    pthread_mutex_unlock(&ls->ckpt_lock);
    ag_buf_free(&b);
    return rc;
}

void ag__log_ckpt_drop(struct lstore *ls)
{
    pthread_mutex_lock(&ls->ckpt_lock);
    unlinkat(ls->dir_fd, CKPT_NAME, 0);
    if (!ls->base.opts.no_sync) fsync(ls->dir_fd);
    pthread_mutex_unlock(&ls->ckpt_lock);
}

/* ---- load ---- */

struct rd {
    const uint8_t *p, *end;
};

static bool take(struct rd *r, void *out, size_t n)
{
    if ((size_t)(r->end - r->p) < n) return false;
    memcpy(out, r->p, n);
    r->p += n;
    return true;
}

static int read_file(int dir_fd, struct ag_buf *b)
{
    int fd = openat(dir_fd, CKPT_NAME, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return AG_ENOTFOUND;
    struct stat st;
    int rc = fstat(fd, &st) ? AG_EIO : ag_buf_reserve(b, (size_t)st.st_size);
    while (!rc && b->len < (size_t)st.st_size) {
        ssize_t n = read(fd, b->data + b->len, (size_t)st.st_size - b->len);
        if (n <= 0)
            rc = AG_EIO;
        else
            b->len += (size_t)n;
    }
    close(fd);
    return rc;
}

static bool load_segs(struct lstore *ls, struct rd *r, uint64_t nsegs)
{
    if (nsegs == 0 || nsegs > ls->nsegs) return false;
    for (uint64_t i = 0; i < nsegs; i++) {
        uint64_t segno, end;
        if (!take(r, &segno, 8) || !take(r, &end, 8)) return false;
        struct lseg *sg = &ls->segs[i];
        if (sg->segno != segno || end > sg->map_len || end < LOG_SEG_HDR) return false;
        struct stat st;
        if (fstat(sg->fd, &st) || (uint64_t)st.st_size < end) return false;
        sg->end = end;
    }
    return true;
}

static int load_streams(struct lstore *ls, struct rd *r, uint64_t nstreams)
{
    for (uint64_t i = 0; i < nstreams; i++) {
        uint16_t nl;
        uint32_t count;
        uint64_t snap;
        char name[AG_STORE_STREAM_MAX];
        if (!take(r, &nl, 2) || nl == 0 || nl > AG_STORE_STREAM_MAX || !take(r, name, nl) ||
            !take(r, &count, 4) || !take(r, &snap, 8))
            return 1;
        size_t bytes = (size_t)count * sizeof(struct lentry);
        if ((size_t)(r->end - r->p) < bytes) return 1;
        uint64_t h = ag_xxh3(name, nl);
        if (ag__lindex_find(&ls->ix, name, nl, h)) return 1;
        struct lstream *st = ag__lindex_add(&ls->ix, name, nl, h);
        if (!st || ag__lindex_reserve(&ls->ix, st, count)) return AG_ENOMEM;
        memcpy(lstream_entries(st), r->p, bytes);
        r->p += bytes;
        st->count = count;
        st->snap_loc = snap;
    }
    return 0;
}

static int load_sparse(struct lstore *ls, struct rd *r, uint64_t nsparse, uint64_t head)
{
    /* fewer when a scavenge deleted the last events before the head */
    if (nsparse > (head + LOG_SPARSE_EVERY - 1) / LOG_SPARSE_EVERY) return 1;
    if ((uint64_t)(r->end - r->p) != nsparse * 8) return 1;
    size_t cap = nsparse < 1024 ? 1024 : nsparse;
    ls->sparse = ag_malloc(cap * 8);
    if (!ls->sparse) return AG_ENOMEM;
    memcpy(ls->sparse, r->p, nsparse * 8);
    ls->sparse_len = nsparse;
    ls->sparse_cap = cap;
    return 0;
}

static int load_tables(struct lstore *ls, struct rd *r, uint64_t ntables)
{
    if (ntables > (uint64_t)(r->end - r->p) / 16) return 1;
    uint64_t *v = ag_malloc((ntables ? ntables : 1) * 16);
    if (!v) return AG_ENOMEM;
    for (uint64_t i = 0; i < ntables; i++) take(r, &v[i], 8), take(r, &v[ntables + i], 8);
    int rc = ag__lidx_open_tables(ls, v, v + ntables, (size_t)ntables);
    ag_free(v);
    return rc;
}

static int reset_index(struct lstore *ls)
{
    ag__lidx_close_tables(ls);
    ag__lindex_free(&ls->ix);
    int rc = ag__lindex_init(&ls->ix, 0);
    ag_free(ls->sparse);
    ls->sparse = NULL;
    ls->sparse_len = ls->sparse_cap = 0;
    for (size_t i = 0; i < ls->nsegs; i++) ls->segs[i].end = LOG_SEG_HDR;
    ls->head = 0;
    return rc;
}

int ag__log_ckpt_load(struct lstore *ls, bool *loaded, uint64_t *seg, uint64_t *off)
{
    *loaded = false;
    struct ag_buf b;
    ag_buf_init(&b);
    int rc = read_file(ls->dir_fd, &b);
    if (rc) goto out_free_buf;
    rc = 0;
    if (b.len < 72 + 8 || memcmp(b.data, CKPT_MAGIC, 8) != 0 ||
        ag__le64((uint8_t *)b.data + b.len - 8) != ag_xxh3(b.data, b.len - 8) ||
        ag__le32((uint8_t *)b.data + 12) > ls->dicts.n)
        goto out_ignore;
    struct rd r = {(const uint8_t *)b.data + 16, (const uint8_t *)b.data + b.len - 8};
    uint64_t nsegs = 0, head = 0, nstreams = 0, nsparse = 0, ntables = 0, live = 0;
    take(&r, &nsegs, 8), take(&r, &head, 8), take(&r, &nstreams, 8), take(&r, &nsparse, 8);
    take(&r, &ntables, 8), take(&r, &live, 8);
    size_t idx_hint = nstreams < (1u << 24) ? (size_t)nstreams : 0;
    ag__lindex_free(&ls->ix);
    if (ag__lindex_init(&ls->ix, idx_hint)) {
        rc = AG_ENOMEM;
        goto out_reset;
    }
    /* each loader: 0 ok, 1 inconsistent (ignore the checkpoint), AG_ENOMEM */
    if ((rc = load_segs(ls, &r, nsegs) ? 0 : 1) == 0) rc = load_tables(ls, &r, ntables);
    if (rc == 0) rc = load_streams(ls, &r, nstreams);
    if (rc == 0) rc = load_sparse(ls, &r, nsparse, head);
    if (rc == 1) {
        rc = 0;
        goto out_ignore;
    }
    if (rc) goto out_reset;
    ls->head = head;
    ls->ix.live = live;
    *seg = nsegs - 1;
    *off = ls->segs[nsegs - 1].end;
    *loaded = true;
    goto out_free_buf;
out_ignore:
    AG_WARN("store.checkpoint_ignored", AG_LS("dir", ls->dir),
            AG_LS("reason", "index checkpoint inconsistent with the log; rebuilding by scan"));
out_reset:
    if (reset_index(ls) && !rc) rc = AG_ENOMEM;
out_free_buf:
    ag_buf_free(&b);
    return rc == AG_ENOMEM ? rc : 0;
}
