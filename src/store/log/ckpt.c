/*
 * The index checkpoint: the in-memory index written to `index.ckpt` so that open
 * scans only the log written after it. Written atomically (temp file, fsync,
 * rename, fsync of the directory) by the writer thread on segment roll and on
 * close. Any doubt on load (checksum, a segment shorter than the checkpoint says)
 * and the checkpoint is ignored: the log is the truth, the index is derived.
 *
 * It holds only the in-memory part of the stream index (the memtable, and a frozen
 * memtable the flusher has not swapped into a table yet, lsm.c) and names
 * the on-disk tables (sst.c) that hold the rest, in order, each with the checksum
 * of its footer: a table is trusted only while a checkpoint names it. Saved
 * under ckpt_lock and the read side of ix_lock, so the writer and the merger
 * (lsm.c) may both save, and what is saved is one consistent state.
 *
 * Layout (little-endian):
 *   "AGORAIX3" u32 version u32 dictionaries | u64 nsegs | u64 head | u64 nstreams | u64 nsparse
 *   | u64 ntables | u64 live streams
 *   nsegs   × { u64 segno, u64 end }
 *   ntables × { u64 id, u64 footer checksum }
 *   nstreams× { name, varint count, varint snap_loc + 1 (0: none),
 *               count × {varint zigzag(loc - previous loc), u32 idh} }
 *   nsparse × u64 loc
 *   u64 XXH3 of everything before
 * A name is varint (prefix id << 2 | kind), then — when the prefix id is the
 * number of prefixes seen so far — the new prefix (varint length, bytes), then the
 * rest by kind: 0 raw (varint length, bytes), 1 a lowercase canonical UUID (16
 * bytes), 2 lowercase hex of even length (varint bytes, bytes). The prefix is the
 * name up to its first '-' included (or empty: id 0, always known), so
 * "order-<uuid>" costs 18 bytes instead of 42. Locations of a stream grow, so
 * their deltas are short; LOC_NONE or any other value still round-trips (the
 * arithmetic wraps). A stream costs ~40 bytes instead of ~95 (issue 19).
 * "AGORAIX2" files (fixed-width: u16 name_len, name, u32 count, u64 snap_loc,
 * count × {u64 loc, u32 idh}) are still read; the next save writes AGORAIX3.
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

#define CKPT_MAGIC    "AGORAIX3"
#define CKPT_MAGIC_V2 "AGORAIX2"
#define CKPT_NAME     "index.ckpt"
#define MAX_PREFIXES  4096 /* distinct name prefixes remembered; more are raw */
#define MAX_PREFIX    64

static int put(struct ag_buf *b, const void *p, size_t n)
{
    return ag_buf_append(b, p, n);
}
static int put64(struct ag_buf *b, uint64_t v)
{
    return put(b, &v, 8);
}

/* ---- compact encoding (varints, names) ---- */

static int put_varint(struct ag_buf *b, uint64_t v)
{
    uint8_t t[10];
    return put(b, t, ag__log_varint_put(t, v));
}

static uint64_t zigzag(uint64_t delta)
{
    return (delta << 1) ^ (uint64_t)((int64_t)delta >> 63);
}

static uint64_t unzigzag(uint64_t z)
{
    return (z >> 1) ^ (0 - (z & 1));
}

/* The name prefixes seen so far, in order of first use (id 0: the empty one). */
struct prefixes {
    size_t n;
    uint8_t len[MAX_PREFIXES];
    char text[MAX_PREFIXES][MAX_PREFIX];
};

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static bool is_lower_hex(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (hexval(p[i]) < 0) return false;
    return true;
}

static bool is_uuid(const char *p, size_t n)
{
    if (n != 36 || p[8] != '-' || p[13] != '-' || p[18] != '-' || p[23] != '-') return false;
    return is_lower_hex(p, 8) && is_lower_hex(p + 9, 4) && is_lower_hex(p + 14, 4) &&
           is_lower_hex(p + 19, 4) && is_lower_hex(p + 24, 12);
}

/* `n` hex digits (even) to n/2 bytes. */
static void unhex(const char *p, size_t n, uint8_t *out)
{
    for (size_t i = 0; i + 1 < n; i += 2)
        out[i / 2] = (uint8_t)(hexval(p[i]) << 4 | hexval(p[i + 1]));
}

static void tohex(const uint8_t *p, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) out[2 * i] = d[p[i] >> 4], out[2 * i + 1] = d[p[i] & 15];
}

bool ag__log_hex_pack(const char *s, size_t n, uint8_t *out)
{
    if (n == 0 || n % 2 || !is_lower_hex(s, n)) return false;
    unhex(s, n, out);
    return true;
}

void ag__log_hex_unpack(const uint8_t *in, size_t n, char *out)
{
    tohex(in, n, out);
}

bool ag__log_uuid_pack(const char *s, size_t n, uint8_t out[16])
{
    if (!is_uuid(s, n)) return false;
    char h[32];
    memcpy(h, s, 8), memcpy(h + 8, s + 9, 4), memcpy(h + 12, s + 14, 4);
    memcpy(h + 16, s + 19, 4), memcpy(h + 20, s + 24, 12);
    unhex(h, 32, out);
    return true;
}

void ag__log_uuid_unpack(const uint8_t in[16], char out[36])
{
    char h[32], *o = out;
    tohex(in, 16, h);
    memcpy(o, h, 8), o[8] = '-', memcpy(o + 9, h + 8, 4), o[13] = '-';
    memcpy(o + 14, h + 12, 4), o[18] = '-', memcpy(o + 19, h + 16, 4), o[23] = '-';
    memcpy(o + 24, h + 20, 12);
}

/* Id of the prefix `p` (length n), adding it when new; *fresh says so. MAX_PREFIXES
 * when the table is full (the caller writes the name with the empty prefix). */
static size_t prefix_id(struct prefixes *px, const char *p, size_t n, bool *fresh)
{
    *fresh = false;
    if (n == 0) return 0;
    if (px->n == 0) px->n = 1; /* id 0: the empty prefix */
    for (size_t i = 1; i < px->n; i++)
        if (px->len[i] == n && memcmp(px->text[i], p, n) == 0) return i;
    if (px->n == MAX_PREFIXES) return MAX_PREFIXES;
    px->len[px->n] = (uint8_t)n;
    memcpy(px->text[px->n], p, n);
    *fresh = true;
    return px->n++;
}

static int put_name(struct ag_buf *b, struct prefixes *px, const char *name, size_t len)
{
    const char *dash = memchr(name, '-', len < MAX_PREFIX ? len : MAX_PREFIX);
    size_t plen = dash ? (size_t)(dash - name) + 1 : 0;
    bool fresh;
    size_t id = prefix_id(px, name, plen, &fresh);
    if (id == MAX_PREFIXES) id = 0, plen = 0;
    const char *rest = name + plen;
    size_t rlen = len - plen;
    uint8_t bin[AG_STORE_STREAM_MAX / 2 + 1];
    unsigned kind = ag__log_uuid_pack(rest, rlen, bin)                  ? 1
                    : rlen && rlen % 2 == 0 && is_lower_hex(rest, rlen) ? 2
                                                                        : 0;
    int rc = put_varint(b, (uint64_t)id << 2 | kind);
    if (!rc && fresh) rc = put_varint(b, plen) || put(b, name, plen);
    if (rc) return rc;
    if (kind == 1) return put(b, bin, 16);
    if (kind == 2) {
        unhex(rest, rlen, bin);
        return put_varint(b, rlen / 2) || put(b, bin, rlen / 2);
    }
    return put_varint(b, rlen) || put(b, rest, rlen);
}

static int put_stream(struct ag_buf *b, struct prefixes *px, struct lstream *st)
{
    int rc = put_name(b, px, st->name, st->name_len) || put_varint(b, st->count) ||
             put_varint(b, st->snap_loc + 1);
    const struct lentry *e = lstream_entries(st);
    uint64_t prev = 0;
    for (uint32_t i = 0; !rc && i < st->count; i++) {
        uint64_t loc;
        uint32_t idh;
        memcpy(&loc, &e[i].loc, 8), memcpy(&idh, &e[i].idh, 4);
        rc = put_varint(b, zigzag(loc - prev)) || put(b, &idh, 4);
        prev = loc;
    }
    return rc;
}

/* A stream of the frozen memtable the active one does not shadow. */
static bool frozen_only(const struct lstore *ls, const struct lstream *st)
{
    return st && !ag__lindex_find(&ls->ix, st->name, st->name_len, st->hash);
}

static int serialize(struct lstore *ls, struct ag_buf *b)
{
    /* a frozen memtable not yet in a table is saved with the memtable (its table is
     * not named yet: a crash before the flush's checkpoint loses nothing) */
    size_t nstreams = ls->ix.count;
    for (size_t i = 0; ls->frozen.slots && i <= ls->frozen.mask; i++)
        nstreams += frozen_only(ls, ls->frozen.slots[i]);
    uint32_t ver = LOG_FORMAT_VERSION, dicts = __atomic_load_n(&ls->dicts.n, __ATOMIC_RELAXED);
    int rc = put(b, CKPT_MAGIC, 8) || put(b, &ver, 4) || put(b, &dicts, 4) || put64(b, ls->nsegs) ||
             put64(b, ls->head) || put64(b, nstreams) || put64(b, ls->sparse_len) ||
             put64(b, ls->ntables) || put64(b, ls->ix.live);
    for (size_t i = 0; !rc && i < ls->nsegs; i++)
        rc = put64(b, ls->segs[i].segno) || put64(b, ls->segs[i].end);
    for (size_t i = 0; !rc && i < ls->ntables; i++)
        rc = put64(b, ls->tables[i]->id) || put64(b, ls->tables[i]->file_sum);
    struct prefixes *px = rc ? NULL : ag_calloc(1, sizeof *px);
    if (!px) rc = 1;
    for (size_t i = 0; !rc && i <= ls->ix.mask; i++) {
        struct lstream *st = ls->ix.slots[i];
        if (st) rc = put_stream(b, px, st);
    }
    for (size_t i = 0; !rc && ls->frozen.slots && i <= ls->frozen.mask; i++)
        if (frozen_only(ls, ls->frozen.slots[i])) rc = put_stream(b, px, ls->frozen.slots[i]);
    ag_free(px);
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

static bool take_varint(struct rd *r, uint64_t *v)
{
    size_t n = ag__log_varint_get(r->p, r->end, v);
    r->p += n;
    return n != 0;
}

/* Decode a name (see the layout); false when it does not make sense. */
static bool take_name(struct rd *r, struct prefixes *px, char *name, size_t *len)
{
    uint64_t hdr, n;
    if (!take_varint(r, &hdr) || (hdr & 3) == 3 || (hdr >> 2) > MAX_PREFIXES) return false;
    size_t id = (size_t)(hdr >> 2), plen = 0;
    if (px->n == 0) px->n = 1;
    if (id == px->n) { /* a new prefix */
        if (id == MAX_PREFIXES || !take_varint(r, &n) || n == 0 || n > MAX_PREFIX ||
            !take(r, px->text[id], (size_t)n))
            return false;
        px->len[px->n++] = (uint8_t)n;
    } else if (id > px->n) {
        return false;
    }
    if (id) memcpy(name, px->text[id], plen = px->len[id]);
    unsigned kind = (unsigned)(hdr & 3);
    uint8_t bin[AG_STORE_STREAM_MAX];
    if (kind == 1) {
        if (plen + 36 > AG_STORE_STREAM_MAX || !take(r, bin, 16)) return false;
        ag__log_uuid_unpack(bin, name + plen);
        *len = plen + 36;
        return true;
    }
    if (!take_varint(r, &n) || n > AG_STORE_STREAM_MAX - plen ||
        (kind == 2 && 2 * n > AG_STORE_STREAM_MAX - plen))
        return false;
    if (kind == 2) {
        if (!take(r, bin, (size_t)n)) return false;
        tohex(bin, (size_t)n, name + plen);
        *len = plen + 2 * (size_t)n;
    } else {
        if (!take(r, name + plen, (size_t)n)) return false;
        *len = plen + (size_t)n;
    }
    return *len > 0;
}

/* One stream of an AGORAIX2 (fixed-width) or AGORAIX3 (compact) checkpoint. */
static int load_stream(struct lstore *ls, struct rd *r, struct prefixes *px)
{
    char name[AG_STORE_STREAM_MAX];
    size_t nl = 0;
    uint64_t count, snap;
    if (!px) {
        uint16_t nl16;
        uint32_t c32;
        if (!take(r, &nl16, 2) || nl16 == 0 || nl16 > AG_STORE_STREAM_MAX || !take(r, name, nl16) ||
            !take(r, &c32, 4) || !take(r, &snap, 8))
            return 1;
        nl = nl16, count = c32;
    } else {
        if (!take_name(r, px, name, &nl) || !take_varint(r, &count) || !take_varint(r, &snap))
            return 1;
        snap -= 1; /* 0 was "none": UINT64_MAX */
    }
    /* each entry takes at least 5 bytes (compact) or 12 (fixed) */
    if (count > UINT32_MAX || count > (uint64_t)(r->end - r->p) / (px ? 5 : 12)) return 1;
    uint64_t h = ag_xxh3(name, nl);
    if (ag__lindex_find(&ls->ix, name, nl, h)) return 1;
    struct lstream *st = ag__lindex_add(&ls->ix, name, nl, h);
    if (!st || ag__lindex_reserve(&ls->ix, st, (size_t)count)) return AG_ENOMEM;
    struct lentry *e = lstream_entries(st);
    if (!px) {
        memcpy(e, r->p, (size_t)count * sizeof *e);
        r->p += (size_t)count * sizeof *e;
    }
    uint64_t prev = 0;
    for (uint64_t i = 0; px && i < count; i++) {
        uint64_t z;
        uint32_t idh;
        if (!take_varint(r, &z) || !take(r, &idh, 4)) return 1;
        prev += unzigzag(z);
        memcpy(&e[i].loc, &prev, 8), memcpy(&e[i].idh, &idh, 4);
    }
    st->count = (uint32_t)count;
    st->snap_loc = snap;
    return 0;
}

static int load_streams(struct lstore *ls, struct rd *r, uint64_t nstreams, bool compact)
{
    struct prefixes *px = compact ? ag_calloc(1, sizeof *px) : NULL;
    if (compact && !px) return AG_ENOMEM;
    int rc = 0;
    for (uint64_t i = 0; i < nstreams && !rc; i++) rc = load_stream(ls, r, px);
    ag_free(px);
    return rc;
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
    bool compact = b.len >= 8 && memcmp(b.data, CKPT_MAGIC, 8) == 0;
    if (b.len < 72 + 8 || (!compact && memcmp(b.data, CKPT_MAGIC_V2, 8) != 0) ||
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
    if (rc == 0) rc = load_streams(ls, &r, nstreams, compact);
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
