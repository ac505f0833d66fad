/*
 * Stream tables: the on-disk part of the stream index, in the manner of an LSM
 * tree. The in-memory index (index.c, the "memtable") holds the streams touched
 * recently; when it outgrows its share of `index_memory` the writer writes it out
 * as one immutable table sorted by (name hash, name) and empties it. A table
 * holds, per stream, everything the memtable held: event count, latest snapshot
 * location and every event's {loc, id-hash}. A stream's newest record wins: a
 * stream read back from a table into the memtable (to append to it) is written
 * whole into the next table, so no lookup ever combines two records.
 *
 * FILE  index-<20-digit id>.sst, written as .tmp, fdatasynced, renamed, dir fsynced
 *   0   "AGORAST1" u32 version (2; 1 is still read) u32 0
 *   16  blocks, back to back. A block: u32 payload bytes, u32 records, payload,
 *       u64 XXH3 of the block's first 8 bytes and payload. Records of one hash
 *       never straddle two blocks; a block is ~4 KiB unless one record is bigger.
 *       count 0 is a tombstone: a stream a scavenge deleted, hiding its records in
 *       older tables (scavenge.c). A record, version 2 (~45 bytes for a stream of
 *       3 events named <category>-<uuid>, against ~100 in version 1):
 *         varint body bytes, then the body:
 *         name     varint (prefix length << 2 | kind), the prefix (up to and with
 *                  the first '-'; empty when none), then the rest: kind 1 a
 *                  lowercase UUID as 16 bytes; kind 2 lowercase hex of even length
 *                  as varint n + n bytes; kind 0 varint n + n bytes as they are.
 *                  One name has one encoding, so a lookup compares encoded bytes.
 *         varint count, varint snap_loc + 1 (0: no snapshot)
 *         count x {varint zigzag(loc - previous loc, the first from 0), u32 idh}
 *       The hash is not stored: a reader computes it (XXH3 of the name) when it
 *       needs the order. Version 1: u64 hash, u16 name_len, u32 count, u64
 *       snap_loc, name, count x {u64 loc, u32 idh}.
 *   F   the summary: per block {u64 first hash, u64 offset, u32 bytes, u32 0},
 *       then the bloom filter (u64 words, 10 bits a stream, 7 probes)
 *   end-64 trailer: u64 F, u64 blocks, u64 bloom words, u64 streams, 3 x u64 0,
 *       u64 XXH3 of [F, end-8) — the table's identity, named in index.ckpt
 *
 * The summary and the bloom filter live in memory (~1.6 bytes a stream); a lookup
 * asks the bloom filter, then reads and checks one block: one disk read a table
 * at most, and tables are few (merge.c keeps them so). Tables are derived data:
 * only those index.ckpt names are trusted, a missing or corrupt one makes open
 * rebuild the index from the log.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/log/internal.h"

#define TB_MAGIC      "AGORAST1"
#define TB_HDR        16
#define TB_TRAILER    64
#define TB_BLOCK      4096
#define TB_BLOCK_HDR  8
#define TB_REC_HDR    22
#define TB_SUM_ENTRY  24
#define TB_BLOOM_BITS 10
#define TB_PROBES     7
#define TB_VERSION    2   /* written; version 1 tables are read as they are */
#define TB_NAME_ENC   520 /* most bytes an encoded name takes */

uint32_t ag__ltb_write_version = TB_VERSION;

void ag__ltb_name(char out[48], uint64_t id, bool tmp)
{
    snprintf(out, 48, "index-%020llu.sst%s", (unsigned long long)id, tmp ? ".tmp" : "");
}

void ag__ltb_free(struct ltable *t)
{
    if (!t) return;
    if (t->fd >= 0) close(t->fd);
    ag_free(t->sum);
    ag_free(t->bloom);
    ag_free(t);
}

/* ---- bloom filter ---- */

static bool bloom_probe(const uint64_t *bloom, uint64_t words, uint64_t h, bool set)
{
    uint64_t bits = words * 64, a = h, b = (h >> 33 | h << 31) | 1;
    for (int i = 0; i < TB_PROBES; i++, a += b) {
        uint64_t bit = a % bits;
        if (set)
            ((uint64_t *)bloom)[bit / 64] |= 1ull << (bit % 64);
        else if (!(bloom[bit / 64] & 1ull << (bit % 64)))
            return false;
    }
    return true;
}

/* ---- records ---- */

static int rec_cmp(uint64_t ha, const char *na, size_t la, uint64_t hb, const char *nb, size_t lb)
{
    if (ha != hb) return ha < hb ? -1 : 1;
    int c = memcmp(na, nb, la < lb ? la : lb);
    return c ? c : la == lb ? 0 : la < lb ? -1 : 1;
}

/* Decode the version-1 record at p (avail bytes). false when it does not fit. */
static bool rec_decode1(const uint8_t *p, size_t avail, struct ltb_rec *r)
{
    if (avail < TB_REC_HDR) return false;
    r->hash = ag__le64(p);
    uint16_t nl;
    memcpy(&nl, p + 8, 2);
    r->name_len = nl;
    r->count = ag__le32(p + 10);
    r->snap_loc = ag__le64(p + 14);
    size_t bytes = TB_REC_HDR + nl + (size_t)r->count * sizeof(struct lentry);
    if (nl == 0 || bytes > avail) return false;
    r->name = (const char *)p + TB_REC_HDR;
    r->entries = p + TB_REC_HDR + nl;
    r->bytes = bytes;
    return true;
}

/* ---- compact names and records (version 2) ---- */

/* The one encoding of `name` at `o` (TB_NAME_ENC bytes of room); its bytes. */
static size_t name_encode(const char *name, size_t len, uint8_t *o)
{
    const char *dash = memchr(name, '-', len);
    size_t plen = dash ? (size_t)(dash - name) + 1 : 0, rlen = len - plen;
    const char *rest = name + plen;
    uint8_t bin[AG_STORE_STREAM_MAX / 2 + 1];
    unsigned kind = ag__log_uuid_pack(rest, rlen, bin)  ? 1
                    : ag__log_hex_pack(rest, rlen, bin) ? 2
                                                        : 0;
    size_t n = ag__log_varint_put(o, (uint64_t)plen << 2 | kind);
    memcpy(o + n, name, plen);
    n += plen;
    if (kind == 1) {
        memcpy(o + n, bin, 16);
        return n + 16;
    }
    size_t blen = kind == 2 ? rlen / 2 : rlen;
    n += ag__log_varint_put(o + n, blen);
    memcpy(o + n, kind == 2 ? (const void *)bin : (const void *)rest, blen);
    return n + blen;
}

/* Decode the name at p into out (AG_STORE_STREAM_MAX bytes); its encoded bytes,
 * 0 when malformed. */
static size_t name_decode(const uint8_t *p, const uint8_t *end, char *out, uint16_t *len)
{
    uint64_t h, blen = 16;
    size_t n = ag__log_varint_get(p, end, &h);
    if (!n || (h & 3) == 3 || (h >> 2) > AG_STORE_STREAM_MAX ||
        (h >> 2) > (uint64_t)(end - p - (ptrdiff_t)n))
        return 0;
    size_t plen = (size_t)(h >> 2);
    unsigned kind = (unsigned)(h & 3);
    memcpy(out, p + n, plen);
    n += plen;
    if (kind != 1) {
        size_t m = ag__log_varint_get(p + n, end, &blen);
        if (!m) return 0;
        n += m;
    }
    if (blen > AG_STORE_STREAM_MAX || blen > (uint64_t)(end - p - (ptrdiff_t)n)) return 0;
    size_t tlen = kind == 1 ? 36 : kind == 2 ? 2 * (size_t)blen : (size_t)blen;
    if (plen + tlen == 0 || plen + tlen > AG_STORE_STREAM_MAX) return 0;
    if (kind == 1)
        ag__log_uuid_unpack(p + n, out + plen);
    else if (kind == 2)
        ag__log_hex_unpack(p + n, (size_t)blen, out + plen);
    else
        memcpy(out + plen, p + n, (size_t)blen);
    *len = (uint16_t)(plen + tlen);
    return n + (size_t)blen;
}

/* The body of a version-2 record (after its name) into r. 0, AG_ECORRUPT, AG_ENOMEM. */
static int rec_body2(const uint8_t *q, const uint8_t *end, struct ltb_rec *r, struct ag_buf *ents)
{
    uint64_t count, snap1, prev = 0;
    size_t m = ag__log_varint_get(q, end, &count);
    if (!m || count > (uint64_t)(end - q) / 5) return AG_ECORRUPT;
    q += m;
    if (!(m = ag__log_varint_get(q, end, &snap1))) return AG_ECORRUPT;
    q += m;
    ag_buf_reset(ents);
    if (ag_buf_reserve(ents, (size_t)count * sizeof(struct lentry))) return AG_ENOMEM;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t z;
        if (!(m = ag__log_varint_get(q, end, &z)) || end - q < (ptrdiff_t)(m + 4))
            return AG_ECORRUPT;
        struct lentry e = {.loc = prev + ((z >> 1) ^ (0 - (z & 1))), .idh = ag__le32(q + m)};
        memcpy(ents->data + ents->len, &e, sizeof e);
        ents->len += sizeof e;
        prev = e.loc;
        q += m + 4;
    }
    if (q != end) return AG_ECORRUPT;
    r->count = (uint32_t)count;
    r->snap_loc = snap1 - 1;
    r->entries = (const uint8_t *)ents->data;
    return 0;
}

/* Decode the version-2 record at p (avail bytes): its name into name_buf, its
 * entries into ents. 0, AG_ECORRUPT, AG_ENOMEM. */
static int rec_decode2(const uint8_t *p, size_t avail, struct ltb_rec *r, char *name_buf,
                       struct ag_buf *ents)
{
    uint64_t body;
    size_t n = ag__log_varint_get(p, p + avail, &body);
    if (!n || body > avail - n) return AG_ECORRUPT;
    const uint8_t *q = p + n, *end = q + body;
    uint16_t nl;
    size_t m = name_decode(q, end, name_buf, &nl);
    if (!m) return AG_ECORRUPT;
    int rc = rec_body2(q + m, end, r, ents);
    if (rc) return rc;
    r->name = name_buf;
    r->name_len = nl;
    r->hash = ag_xxh3(name_buf, nl);
    r->bytes = n + (size_t)body;
    return 0;
}

/* Append the version-1 form of r to b (tests of reading old tables). */
static int rec_encode1(struct ag_buf *b, const struct ltb_rec *r)
{
    uint8_t hdr[TB_REC_HDR];
    uint16_t nl = r->name_len;
    ag__put64(hdr, r->hash);
    memcpy(hdr + 8, &nl, 2);
    ag__put32(hdr + 10, r->count);
    ag__put64(hdr + 14, r->snap_loc);
    return ag_buf_append(b, hdr, TB_REC_HDR) || ag_buf_append(b, r->name, nl) ||
                   ag_buf_append(b, r->entries, (size_t)r->count * sizeof(struct lentry))
               ? AG_ENOMEM
               : 0;
}

/* Append the version-2 form of r to b. 0 or AG_ENOMEM. */
static int rec_encode2(struct ag_buf *b, const struct ltb_rec *r)
{
    uint8_t body[TB_NAME_ENC + 32], t[16];
    size_t n = name_encode(r->name, r->name_len, body);
    n += ag__log_varint_put(body + n, r->count);
    n += ag__log_varint_put(body + n, r->snap_loc + 1);
    size_t total = n;
    uint64_t prev = 0;
    for (uint32_t i = 0; i < r->count; i++) {
        struct lentry e;
        memcpy(&e, r->entries + (size_t)i * sizeof e, sizeof e);
        uint64_t d = e.loc - prev;
        total += ag__log_varint_put(t, d << 1 ^ (uint64_t)((int64_t)d >> 63)) + 4;
        prev = e.loc;
    }
    size_t h = ag__log_varint_put(t, total);
    if (ag_buf_append(b, t, h) || ag_buf_append(b, body, n)) return AG_ENOMEM;
    prev = 0;
    for (uint32_t i = 0; i < r->count; i++) {
        struct lentry e;
        memcpy(&e, r->entries + (size_t)i * sizeof e, sizeof e);
        uint64_t d = e.loc - prev;
        size_t k = ag__log_varint_put(t, d << 1 ^ (uint64_t)((int64_t)d >> 63));
        ag__put32(t + k, e.idh);
        if (ag_buf_append(b, t, k + 4)) return AG_ENOMEM;
        prev = e.loc;
    }
    return 0;
}

/* Read and check block `b` of `t` into buf. 0 or AG_ECORRUPT/AG_EIO/AG_ENOMEM. */
static int block_read(const struct ltable *t, size_t b, struct ag_buf *buf)
{
    const struct ltb_sum *s = &t->sum[b];
    ag_buf_reset(buf);
    if (ag_buf_reserve(buf, s->len)) return AG_ENOMEM;
    size_t got = 0;
    while (got < s->len) {
        ssize_t n = pread(t->fd, buf->data + got, s->len - got, (off_t)(s->off + got));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return n == 0 ? AG_ECORRUPT : AG_EIO;
        got += (size_t)n;
    }
    buf->len = got;
    const uint8_t *p = (const uint8_t *)buf->data;
    if (got < TB_BLOCK_HDR + 8 || ag__le32(p) != got - TB_BLOCK_HDR - 8 ||
        ag__le64(p + got - 8) != ag_xxh3(p, got - 8))
        return AG_ECORRUPT;
    return 0;
}

/* A heap copy of a record in the memtable's shape (cap == count, inline if <= 1). */
struct lstream *ag__lstream_copy(const struct ltb_rec *r)
{
    size_t sz = LSTREAM_BYTES(r->name_len);
    struct lstream *st = ag_malloc(sz < sizeof *st ? sizeof *st : sz);
    if (!st) return NULL;
    memset(st, 0, offsetof(struct lstream, name));
    st->hash = r->hash;
    st->snap_loc = r->snap_loc;
    st->count = r->count;
    st->cap = r->count <= 1 ? 1 : r->count;
    st->name_len = r->name_len;
    memcpy(st->name, r->name, r->name_len);
    if (st->cap > 1 && !(st->e.many = ag_malloc((size_t)r->count * sizeof(struct lentry)))) {
        ag_free(st);
        return NULL;
    }
    memcpy(lstream_entries(st), r->entries, (size_t)r->count * sizeof(struct lentry));
    return st;
}

void ag__lstream_free(struct lstream *st)
{
    if (!st) return;
    if (st->cap > 1) ag_free(st->e.many);
    ag_free(st);
}

/* Find `name` in the version-1 block payload [p, end) (sorted by hash). */
static int get1(const uint8_t *p, const uint8_t *end, const char *name, size_t len, uint64_t h,
                struct lstream **out)
{
    struct ltb_rec r;
    for (; p < end; p += r.bytes) {
        if (!rec_decode1(p, (size_t)(end - p), &r)) return AG_ECORRUPT;
        if (r.hash > h) break;
        if (r.hash == h && r.name_len == len && memcmp(r.name, name, len) == 0)
            return (*out = ag__lstream_copy(&r)) ? 0 : AG_ENOMEM;
    }
    return AG_ENOTFOUND;
}

/* Find `name` in the version-2 block payload [p, end): its encoded name against
 * each record's, skipping records by their length; only the match is decoded. */
static int get2(const uint8_t *p, const uint8_t *end, const char *name, size_t len,
                struct lstream **out)
{
    uint8_t enc[TB_NAME_ENC];
    size_t elen = name_encode(name, len, enc);
    while (p < end) {
        uint64_t body;
        size_t n = ag__log_varint_get(p, end, &body);
        if (!n || body > (uint64_t)(end - p) - n) return AG_ECORRUPT;
        if (body >= elen && memcmp(p + n, enc, elen) == 0) {
            struct ltb_rec r;
            char nb[AG_STORE_STREAM_MAX];
            struct ag_buf ents;
            ag_buf_init(&ents);
            int rc = rec_decode2(p, (size_t)(end - p), &r, nb, &ents);
            if (!rc && !(*out = ag__lstream_copy(&r))) rc = AG_ENOMEM;
            ag_buf_free(&ents);
            return rc;
        }
        p += n + body;
    }
    return AG_ENOTFOUND;
}

int ag__ltb_get(const struct ltable *t, const char *name, size_t len, uint64_t h,
                struct lstream **out)
{
    *out = NULL;
    if (!t->nblocks || !bloom_probe(t->bloom, t->bloom_words, h, false)) return AG_ENOTFOUND;
    size_t lo = 0, hi = t->nblocks; /* last block whose first hash <= h */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->sum[mid].first_hash <= h)
            lo = mid;
        else
            hi = mid;
    }
    if (t->sum[lo].first_hash > h) return AG_ENOTFOUND;
    struct ag_buf buf;
    ag_buf_init(&buf);
    int rc = block_read(t, lo, &buf);
    const uint8_t *p = (const uint8_t *)buf.data + TB_BLOCK_HDR;
    const uint8_t *end = (const uint8_t *)buf.data + buf.len - 8;
    if (!rc) rc = t->version == 1 ? get1(p, end, name, len, h, out) : get2(p, end, name, len, out);
    ag_buf_free(&buf);
    return rc;
}

/* ---- iterating (merges, listing) ---- */

int ag__ltb_it_next(struct ltb_it *it)
{
    it->valid = false;
    if (it->mem) {
        if (it->mi >= it->mn) return 0;
        const struct lstream *st = it->mem[it->mi++];
        it->cur =
            (struct ltb_rec){.hash = st->hash,
                             .name = st->name,
                             .name_len = st->name_len,
                             .count = st->count,
                             .snap_loc = st->snap_loc,
                             .entries = (const uint8_t *)lstream_entries((struct lstream *)st)};
        it->valid = true;
        return 0;
    }
    while (it->left == 0) {
        if (it->block >= it->t->nblocks) return 0;
        int rc = block_read(it->t, it->block++, &it->buf);
        if (rc) return rc;
        it->p = (const uint8_t *)it->buf.data + TB_BLOCK_HDR;
        it->left = ag__le32((const uint8_t *)it->buf.data + 4);
    }
    const uint8_t *end = (const uint8_t *)it->buf.data + it->buf.len - 8;
    size_t avail = (size_t)(end - it->p);
    if (it->t->version == 1) {
        if (!rec_decode1(it->p, avail, &it->cur)) return AG_ECORRUPT;
    } else {
        int rc = rec_decode2(it->p, avail, &it->cur, it->name_buf, &it->ents);
        if (rc) return rc;
    }
    it->p += it->cur.bytes;
    it->left--;
    it->valid = true;
    return 0;
}

void ag__ltb_it_free(struct ltb_it *it)
{
    ag_buf_free(&it->buf);
    ag_buf_free(&it->ents);
}

/* Of n iterators (newest first, each positioned), the one holding the smallest
 * key; the others holding that key are advanced past it (older records lose). */
int ag__ltb_merge_step(struct ltb_it *its, size_t n, struct ltb_it **out)
{
    struct ltb_it *best = NULL;
    for (size_t i = 0; i < n; i++) {
        struct ltb_it *it = &its[i];
        if (!it->valid) continue;
        if (!best || rec_cmp(it->cur.hash, it->cur.name, it->cur.name_len, best->cur.hash,
                             best->cur.name, best->cur.name_len) < 0)
            best = it;
    }
    *out = best;
    for (size_t i = 0; best && i < n; i++) {
        struct ltb_it *it = &its[i];
        if (it == best || !it->valid) continue;
        if (rec_cmp(it->cur.hash, it->cur.name, it->cur.name_len, best->cur.hash, best->cur.name,
                    best->cur.name_len) == 0) {
            int rc = ag__ltb_it_next(it);
            if (rc) return rc;
        }
    }
    return 0;
}

/* ---- writing ---- */

struct tb_writer {
    int fd;
    bool write_behind;   /* pace the writeback (not under no_sync) */
    uint64_t off;        /* bytes written */
    uint64_t flushed;    /* bytes handed to write(2) */
    uint64_t behind;     /* bytes whose writeback was started */
    uint64_t waited;     /* bytes whose writeback is done */
    struct ag_buf out;   /* pending bytes (flushed at 1 MiB) */
    struct ag_buf block; /* the block being filled (header space included) */
    uint32_t block_recs;
    uint64_t block_first; /* first hash of the block being filled */
    uint64_t last_hash;
    struct ltb_sum *sum;
    size_t nsum, sum_cap;
    uint64_t *bloom;
    uint64_t bloom_words;
    uint64_t streams;
    uint32_t version; /* record format written */
};

/* Write-behind: after each 1 MiB written, wait for the writeback of the chunk
 * before it and start the writeback of this one. A merge of a large index then
 * never holds more than ~2 MiB of dirty pages, and its final fdatasync is short:
 * the group commits of the event log (another file on the same disk) do not queue
 * behind hundreds of MiB of table data flushed at once, which is what made order
 * latency jump to seconds once the tables grew past ~100 MiB (issue 19). */
static void w_behind(struct tb_writer *w)
{
    if (!w->write_behind) return;
    if (w->behind > w->waited)
        (void)sync_file_range(w->fd, (off_t)w->waited, (off_t)(w->behind - w->waited),
                              SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                  SYNC_FILE_RANGE_WAIT_AFTER);
    w->waited = w->behind;
    (void)sync_file_range(w->fd, (off_t)w->behind, (off_t)(w->flushed - w->behind),
                          SYNC_FILE_RANGE_WRITE);
    w->behind = w->flushed;
}

static int w_flush(struct tb_writer *w)
{
    size_t done = 0;
    while (done < w->out.len) {
        ssize_t n = write(w->fd, w->out.data + done, w->out.len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return AG_EIO;
        done += (size_t)n;
    }
    w->flushed += done;
    ag_buf_reset(&w->out);
    w_behind(w);
    return 0;
}

static int w_put(struct tb_writer *w, const void *p, size_t n)
{
    if (ag_buf_append(&w->out, p, n)) return AG_ENOMEM;
    w->off += n;
    return w->out.len >= (1u << 20) ? w_flush(w) : 0;
}

static int w_end_block(struct tb_writer *w)
{
    if (!w->block_recs) return 0;
    uint8_t *p = (uint8_t *)w->block.data;
    ag__put32(p, (uint32_t)(w->block.len - TB_BLOCK_HDR));
    ag__put32(p + 4, w->block_recs);
    uint64_t sum = ag_xxh3(p, w->block.len);
    if (ag_buf_append(&w->block, &sum, 8)) return AG_ENOMEM;
    if (w->nsum == w->sum_cap) {
        size_t cap = w->sum_cap ? w->sum_cap * 2 : 256;
        struct ltb_sum *s = ag_realloc(w->sum, cap * sizeof *s);
        if (!s) return AG_ENOMEM;
        w->sum = s, w->sum_cap = cap;
    }
    w->sum[w->nsum++] = (struct ltb_sum){
        .first_hash = w->block_first, .off = w->off, .len = (uint32_t)w->block.len};
    int rc = w_put(w, w->block.data, w->block.len);
    ag_buf_reset(&w->block);
    w->block_recs = 0;
    return rc;
}

static int w_record(struct tb_writer *w, const struct ltb_rec *r)
{
    if (w->block.len >= TB_BLOCK && r->hash != w->last_hash) {
        int rc = w_end_block(w);
        if (rc) return rc;
    }
    static const uint8_t zero[TB_BLOCK_HDR];
    if (!w->block.len && ag_buf_append(&w->block, zero, TB_BLOCK_HDR)) return AG_ENOMEM;
    if (!w->block_recs) w->block_first = r->hash;
    if (w->version == 1 ? rec_encode1(&w->block, r) : rec_encode2(&w->block, r)) return AG_ENOMEM;
    w->block_recs++;
    w->last_hash = r->hash;
    w->streams++;
    bloom_probe(w->bloom, w->bloom_words, r->hash, true);
    return 0;
}

static int w_finish(struct tb_writer *w, uint64_t *sum_out)
{
    int rc = w_end_block(w);
    uint64_t foot = w->off;
    struct ag_buf f;
    ag_buf_init(&f);
    for (size_t i = 0; !rc && i < w->nsum; i++) {
        uint8_t e[TB_SUM_ENTRY] = {0};
        ag__put64(e, w->sum[i].first_hash);
        ag__put64(e + 8, w->sum[i].off);
        ag__put32(e + 16, w->sum[i].len);
        if (ag_buf_append(&f, e, sizeof e)) rc = AG_ENOMEM;
    }
    if (!rc && ag_buf_append(&f, w->bloom, w->bloom_words * 8)) rc = AG_ENOMEM;
    uint8_t tr[TB_TRAILER] = {0};
    ag__put64(tr, foot);
    ag__put64(tr + 8, w->nsum);
    ag__put64(tr + 16, w->bloom_words);
    ag__put64(tr + 24, w->streams);
    if (!rc && ag_buf_append(&f, tr, TB_TRAILER - 8)) rc = AG_ENOMEM;
    if (!rc) {
        *sum_out = ag_xxh3(f.data, f.len);
        rc = ag_buf_append(&f, sum_out, 8) ? AG_ENOMEM : w_put(w, f.data, f.len);
    }
    if (!rc) rc = w_flush(w);
    ag_buf_free(&f);
    return rc;
}

/* Write the merge of `its` (newest first, not yet positioned) as table `id`
 * (upper bound of `streams` records) and open it. Streams with no events
 * (tombstones) are kept only with o->keep_tombstones. 0, AG_EIO (errno in err),
 * AG_ECORRUPT (a source block), AG_ENOMEM; AG_ECLOSED when *o->stop became true. */
int ag__ltb_write(struct lstore *ls, uint64_t id, struct ltb_it *its, size_t n, uint64_t streams,
                  const struct ltb_wopts *o, struct ltable **out, struct ag_err *err)
{
    const bool *stop = o->stop;
    char tmp[48], name[48];
    ag__ltb_name(tmp, id, true);
    ag__ltb_name(name, id, false);
    struct tb_writer w = {.fd = -1,
                          .write_behind = !ls->base.opts.no_sync,
                          .version = ag__ltb_write_version == 1 ? 1 : TB_VERSION};
    ag_buf_init(&w.out);
    ag_buf_init(&w.block);
    w.bloom_words = (streams * TB_BLOOM_BITS + 63) / 64 + 1;
    int rc = (w.bloom = ag_calloc(w.bloom_words, 8)) ? 0 : AG_ENOMEM;
    if (!rc) {
        w.fd = openat(ls->dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (w.fd < 0) rc = AG_EIO;
    }
    uint8_t hdr[TB_HDR] = {0};
    memcpy(hdr, TB_MAGIC, 8);
    ag__put32(hdr + 8, w.version);
    if (!rc) rc = w_put(&w, hdr, sizeof hdr);
    for (size_t i = 0; !rc && i < n; i++) rc = ag__ltb_it_next(&its[i]);
    while (!rc) {
        struct ltb_it *best;
        if ((rc = ag__ltb_merge_step(its, n, &best)) || !best) break;
        if (stop && __atomic_load_n(stop, __ATOMIC_RELAXED)) rc = AG_ECLOSED;
        if (!rc && (best->cur.count || o->keep_tombstones)) rc = w_record(&w, &best->cur);
        if (!rc) rc = ag__ltb_it_next(best);
    }
    uint64_t sum = 0;
    if (!rc) rc = w_finish(&w, &sum);
    if (!rc && !ls->base.opts.no_sync && fdatasync(w.fd)) rc = AG_EIO;
    if (rc == AG_EIO) ag_err_set(err, rc, "%s/%s: %s", ls->dir, tmp, strerror(errno));
    if (w.fd >= 0) close(w.fd);
    if (!rc && renameat(ls->dir_fd, tmp, ls->dir_fd, name))
        rc = ag_err_set(err, AG_EIO, "%s/%s: %s", ls->dir, name, strerror(errno));
    if (!rc && !ls->base.opts.no_sync) fsync(ls->dir_fd);
    if (rc) unlinkat(ls->dir_fd, tmp, 0);
    ag_buf_free(&w.out);
    ag_buf_free(&w.block);
    ag_free(w.sum);
    ag_free(w.bloom);
    if (!rc && (rc = ag__ltb_open(ls, id, sum, out)))
        ag_err_set(err, rc, "%s/%s: cannot reopen the table just written", ls->dir, name);
    return rc;
}

/* ---- opening ---- */

static int read_at(int fd, void *p, size_t n, uint64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)p + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return AG_ECORRUPT;
        got += (size_t)r;
    }
    return 0;
}

static int load_footer(struct ltable *t, uint64_t size, uint64_t want_sum)
{
    uint8_t tr[TB_TRAILER];
    if (size < TB_HDR + TB_TRAILER || read_at(t->fd, tr, sizeof tr, size - TB_TRAILER))
        return AG_ECORRUPT;
    uint64_t foot = ag__le64(tr), nblocks = ag__le64(tr + 8), words = ag__le64(tr + 16);
    if (foot < TB_HDR || foot > size - TB_TRAILER || ag__le64(tr + 56) != want_sum ||
        nblocks > (size - foot) / TB_SUM_ENTRY || words > (size - foot) / 8 || words == 0 ||
        foot + nblocks * TB_SUM_ENTRY + words * 8 + TB_TRAILER != size)
        return AG_ECORRUPT;
    size_t flen = (size_t)(size - foot - 8);
    uint8_t *f = ag_malloc(flen);
    if (!f) return AG_ENOMEM;
    int rc = read_at(t->fd, f, flen, foot);
    if (!rc && ag_xxh3(f, flen) != want_sum) rc = AG_ECORRUPT;
    t->sum = rc ? NULL : ag_malloc((nblocks ? nblocks : 1) * sizeof *t->sum);
    t->bloom = rc ? NULL : ag_malloc(words * 8);
    if (!rc && (!t->sum || !t->bloom)) rc = AG_ENOMEM;
    for (size_t i = 0; !rc && i < nblocks; i++) {
        const uint8_t *e = f + i * TB_SUM_ENTRY;
        t->sum[i] = (struct ltb_sum){ag__le64(e), ag__le64(e + 8), ag__le32(e + 16)};
        if (t->sum[i].off < TB_HDR || t->sum[i].off + t->sum[i].len > foot) rc = AG_ECORRUPT;
    }
    if (!rc) {
        memcpy(t->bloom, f + nblocks * TB_SUM_ENTRY, words * 8);
        t->nblocks = (size_t)nblocks;
        t->bloom_words = words;
        t->streams = ag__le64(tr + 24);
        t->mem = sizeof *t + nblocks * sizeof *t->sum + words * 8;
    }
    ag_free(f);
    return rc;
}

int ag__ltb_open(struct lstore *ls, uint64_t id, uint64_t sum, struct ltable **out)
{
    char name[48];
    ag__ltb_name(name, id, false);
    struct ltable *t = ag_calloc(1, sizeof *t);
    if (!t) return AG_ENOMEM;
    t->id = id;
    t->file_sum = sum;
    t->fd = openat(ls->dir_fd, name, O_RDONLY | O_CLOEXEC);
    struct stat st;
    int rc = t->fd < 0 ? AG_ENOTFOUND : fstat(t->fd, &st) ? AG_EIO : 0;
    uint8_t magic[TB_HDR];
    if (!rc && (read_at(t->fd, magic, TB_HDR, 0) || memcmp(magic, TB_MAGIC, 8) != 0))
        rc = AG_ECORRUPT;
    if (!rc && (t->version = ag__le32(magic + 8)) != 1 && t->version != TB_VERSION)
        rc = AG_ECORRUPT;
    if (!rc) {
        t->file_bytes = (uint64_t)st.st_size;
        rc = load_footer(t, (uint64_t)st.st_size, sum);
    }
    if (rc) {
        ag__ltb_free(t);
        return rc;
    }
    *out = t;
    return 0;
}
