/* Private declarations of the embedded log (see the design comment in log.c). */
#ifndef AGORA_STORE_LOG_INTERNAL_H
#define AGORA_STORE_LOG_INTERNAL_H

#include <pthread.h>
#include <semaphore.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "agora/store.h"
#include "agora/store_log.h"
#include "store/internal.h"

/* ---- record format (encoded and decoded only by record.c) ---- */

#define LOG_REC_HDR          64 /* fixed header bytes */
#define LOG_REC_TRAILER      8  /* XXH3 checksum */
#define LOG_REC_MIN          (LOG_REC_HDR + LOG_REC_TRAILER)
#define LOG_REC_ALIGN        8
#define LOG_SEG_HDR          64
#define LOG_SEG_MAGIC        "AGORALG1"
#define LOG_FORMAT_VERSION   3u /* 3: compact records (record.c, FORMAT 3) */
#define LOG_FORMAT_V2        2u /* still read: records may be compressed (LOG_REC_F_COMPRESSED) */
#define LOG_FORMAT_V1        1u /* still read: no compressed records */
#define LOG_REC_F_COMPRESSED 1u /* flags bit 0: type|metadata|data are one zstd frame */
#define LOG_ZRAW_MAX         (64u << 20) /* raw body bytes a compressed record may expand to */
#define LOG_SPARSE_EVERY     32          /* one sparse-index entry per this many positions */
#define LOG_ANY_DEDUP_WINDOW 10000       /* events scanned for an ANY re-append */

/* LOG_KIND_BATCH: the header of a multi-stream batch (log.c, RECORD). */
enum log_kind { LOG_KIND_EVENT = 1, LOG_KIND_SNAPSHOT = 2, LOG_KIND_BATCH = 3 };

/* A decoded record header; pointers borrow from the bytes decoded. */
struct log_rec {
    uint32_t size;     /* total bytes, multiple of 8 */
    uint8_t kind;      /* enum log_kind */
    uint64_t position; /* global position (events) */
    int64_t version;   /* stream version */
    struct ag_uuid id;
    uint64_t time_ns;
    uint32_t batch_left; /* events after this one in its batch */
    const char *stream;
    uint16_t stream_len;
    const char *type;
    uint16_t type_len;
    const char *meta;
    uint32_t meta_len;
    const char *data;
    uint32_t data_len;
    /* compressed records (flags bit 0): the zstd frame holding type|meta|data (whose
     * raw lengths the fields above give; type/meta/data are NULL until expanded with
     * ag__log_rec_body) and the dictionary it was compressed with (0 = none) */
    const uint8_t *zbody;
    uint32_t zbody_len;
    uint16_t dict;
    /* format-3 records whose name is stored compactly: `stream` points here */
    char name_buf[AG_STORE_STREAM_MAX];
};

/* Bytes a record with these field sizes occupies. */
size_t ag__log_rec_size(size_t stream_len, size_t type_len, size_t meta_len, size_t data_len);
/* Bytes of a compressed record: stream name, then a zstd frame of `zbody_len`. */
size_t ag__log_rec_size_z(size_t stream_len, size_t zbody_len);
/* Encode a record at `p` (which has ag__log_rec_size bytes, or ag__log_rec_size_z
 * when r->zbody is set: then the frame is written instead of type|meta|data, whose
 * raw lengths the header keeps); checksum left zero. */
void ag__log_rec_encode(uint8_t *p, const struct log_rec *r);
/* Bytes of a multi-stream batch header record. */
#define LOG_BATCH_REC_SIZE LOG_REC_MIN
/* Encode and seal a multi-stream batch header at `p` (LOG_BATCH_REC_SIZE bytes):
 * `events` event records of `streams` streams follow it, the first at `position`. */
void ag__log_batch_encode(uint8_t *p, uint32_t events, uint32_t streams, uint64_t position,
                          uint64_t time_ns);
/* The same in a segment of format `fmt`; returns its bytes (<= LOG_BATCH_REC_SIZE). */
size_t ag__log_batch_encode_fmt(uint8_t *p, uint32_t fmt, uint32_t events, uint32_t streams,
                                uint64_t position, uint64_t time_ns);
/* Format 3 (compact records): is the record at `p` one (its first byte says so)? */
static inline bool ag__log_rec_is3(const uint8_t *p)
{
    return p[0] & 1;
}
/* Is an intact format-3 record at `p` (fields checked before the checksum)? */
bool ag__log_rec3_intact(const uint8_t *p, size_t avail);
/* Most bytes the format-3 form of a record can take beyond its in-memory form. */
#define LOG_REC3_SLACK 8
/* Encode `r` (position, version and time set; zbody or raw body) as a sealed
 * format-3 record at `p` (ag__log_rec_size(_z) + LOG_REC3_SLACK bytes of room);
 * returns its bytes. */
size_t ag__log_rec3_encode(uint8_t *p, const struct log_rec *r);
/* Copy the record at `p` to `dst` (room: its size + LOG_REC3_SLACK) with another
 * batch_left, in its own format, sealed; returns the copy's bytes (scavenge). */
size_t ag__log_rec_rebatch(const uint8_t *p, uint32_t batch_left, uint8_t *dst);
/* Varints (LEB128) shared by the record and checkpoint encodings. */
size_t ag__log_varint_put(uint8_t *p, uint64_t v);
/* Bytes read (0: runs past `end` or longer than 10 bytes). */
size_t ag__log_varint_get(const uint8_t *p, const uint8_t *end, uint64_t *v);
/* A lowercase UUID in text (36 chars) to 16 bytes; false when `s` is not one
 * (ckpt.c; the record encoding shares it). */
bool ag__log_uuid_pack(const char *s, size_t n, uint8_t out[16]);
void ag__log_uuid_unpack(const uint8_t in[16], char out[36]);
/* Lowercase hex of even length (n chars, n > 0) to n/2 bytes; false when `s` is
 * not that. Unpack writes 2n chars for n bytes. */
bool ag__log_hex_pack(const char *s, size_t n, uint8_t *out);
void ag__log_hex_unpack(const uint8_t *in, size_t n, char *out);
/* Patch the batch_left field of an encoded, not yet sealed record. */
void ag__log_rec_set_batch_left(uint8_t *p, uint32_t batch_left);
/* Patch position/version/time into an encoded record and seal its checksum. */
void ag__log_rec_seal(uint8_t *p, uint64_t position, int64_t version, uint64_t time_ns);
/* Decode the record at `p` with `avail` readable bytes. 0, or AG_ECORRUPT with a
 * static reason in *why. */
int ag__log_rec_decode(const uint8_t *p, size_t avail, struct log_rec *r, const char **why);
/* Decode a record already known to be intact (verified when written or recovered,
 * or one this process encoded and has not sealed yet): no size or checksum check. */
void ag__log_rec_fields(const uint8_t *p, struct log_rec *r);
/* Single fields of an encoded record, without decoding the rest. */
uint32_t ag__log_rec_len(const uint8_t *p); /* whole record bytes: the next one starts there */
uint8_t ag__log_rec_kind(const uint8_t *p); /* enum log_kind */
void ag__log_rec_id(const uint8_t *p, struct ag_uuid *out);
void ag__log_seg_header(uint8_t out[LOG_SEG_HDR], uint64_t segno, uint64_t base_position,
                        uint64_t now_ns);
int ag__log_seg_header_check(const uint8_t *p, size_t avail, uint64_t segno, const char **why);
/* Format version of a (checked) segment header: LOG_FORMAT_V1, _V2 or LOG_FORMAT_VERSION. */
uint32_t ag__log_seg_format(const uint8_t *hdr);
/* Position of the first event of the segment whose (checked) header is `hdr`. */
uint64_t ag__log_seg_base_position(const uint8_t *hdr);
/* Segment header flags (bytes 40..43). LOG_SEG_SCAVENGED: a scavenge rewrote the
 * segment without deleted events, so positions and stream versions may skip. */
#define LOG_SEG_SCAVENGED 1u
uint32_t ag__log_seg_flags(const uint8_t *hdr);
void ag__log_seg_header_flags(uint8_t out[LOG_SEG_HDR], uint64_t segno, uint64_t base_position,
                              uint64_t now_ns, uint32_t flags);
/* The same for a segment of format `fmt` (a scavenge keeps its segment's format). */
void ag__log_seg_header_fmt(uint8_t out[LOG_SEG_HDR], uint64_t segno, uint64_t base_position,
                            uint64_t now_ns, uint32_t flags, uint32_t fmt);

static inline uint32_t ag__le32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline uint64_t ag__le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
static inline void ag__put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}
static inline void ag__put64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

/* ---- locations ---- */

/* A record's place: segment number in the high 24 bits, byte offset in the low 40. */
#define LOC_OFF_BITS 40
static inline uint64_t loc_make(uint64_t seg, uint64_t off)
{
    return seg << LOC_OFF_BITS | off;
}
/* An index entry whose event a scavenge removed (a truncated stream's prefix). */
#define LOC_NONE UINT64_MAX
static inline uint64_t loc_seg(uint64_t loc)
{
    return loc >> LOC_OFF_BITS;
}
static inline uint64_t loc_off(uint64_t loc)
{
    return loc & ((1ull << LOC_OFF_BITS) - 1);
}

/* ---- the stream index ---- */

/* One event of a stream: where it is and a hash of its id (for re-append checks). */
struct __attribute__((packed)) lentry {
    uint64_t loc;
    uint32_t idh;
};

struct lstream {
    uint64_t hash;     /* XXH3 of the name */
    uint64_t snap_loc; /* latest snapshot record, UINT64_MAX when none */
    uint32_t count;    /* durable events (last version = count - 1) */
    uint32_t cap;      /* entries allocated; 1 = the inline entry */
    union {
        struct lentry one;   /* cap == 1 */
        struct lentry *many; /* cap > 1 */
    } e;
    uint16_t name_len;
    char name[]; /* not NUL-terminated */
};
/* A stream's allocation: the header up to the name, then the name (no padding). */
#define LSTREAM_BYTES(len) (offsetof(struct lstream, name) + (len))

/* Writer only: versions made pending by the group being planned, per stream. */
struct lpend {
    struct lstream *st; /* NULL = free slot */
    int64_t version;    /* the stream's version after this group's accepted batches */
};

static inline struct lentry *lstream_entries(struct lstream *s)
{
    return s->cap <= 1 ? &s->e.one : s->e.many;
}

struct lindex {
    struct lstream **slots; /* open addressing, linear probing, power-of-two size */
    size_t mask;            /* slots - 1 */
    size_t count;           /* streams */
    size_t live;            /* streams with at least one durable event */
    size_t bytes;           /* approximate memory held */
};

int ag__lindex_init(struct lindex *ix, size_t hint);
void ag__lindex_free(struct lindex *ix);
struct lstream *ag__lindex_find(const struct lindex *ix, const char *name, size_t len, uint64_t h);
/* Insert a new, empty stream (must not exist). NULL on ENOMEM. */
struct lstream *ag__lindex_add(struct lindex *ix, const char *name, size_t len, uint64_t h);
/* Insert a stream allocated as ag__lindex_add does (a table's copy, sst.c), taking
 * ownership; AG_ENOMEM leaves the index unchanged and `s` with the caller. */
int ag__lindex_adopt(struct lindex *ix, struct lstream *s);
/* Make room for `extra` more entries. */
int ag__lindex_reserve(struct lindex *ix, struct lstream *s, size_t extra);
/* Take a stream out of the index and free it (scavenge: every event deleted). */
void ag__lindex_remove(struct lindex *ix, struct lstream *s);

/* ---- the on-disk part of the stream index (sst.c, lsm.c) ---- */

struct lstore;

#define LOG_INDEX_MEMORY_DEFAULT (64ull << 20)
#define LOG_INDEX_MEMORY_MIN     (1ull << 20)
#define LOG_TB_MERGE_AT          4    /* tables before a background merge */
#define LOG_TB_MIN_STREAMS       1024 /* no flush of a memtable with fewer streams */

/* One block of a table, as the in-memory summary knows it. */
struct ltb_sum {
    uint64_t first_hash; /* hash of its first record */
    uint64_t off;        /* file offset */
    uint32_t len;        /* bytes, checksum included */
};

/* An open, immutable stream table (sst.c). */
struct ltable {
    uint64_t id;       /* number in the file name */
    uint64_t file_sum; /* XXH3 of its footer: its identity in index.ckpt */
    int fd;
    uint64_t file_bytes;
    uint64_t streams; /* records */
    struct ltb_sum *sum;
    size_t nblocks;
    uint64_t *bloom;
    uint64_t bloom_words;
    size_t mem;       /* bytes this table holds in memory */
    uint32_t version; /* record format: 1 fixed-width, 2 compact (sst.c) */
};

/* A stream record of a table or the memtable; pointers borrow. */
struct ltb_rec {
    uint64_t hash;
    const char *name;
    uint16_t name_len;
    uint32_t count;
    uint64_t snap_loc;
    const uint8_t *entries; /* count x struct lentry, maybe unaligned */
    size_t bytes;           /* encoded size (tables) */
};

/* A sorted source of records: a table (t) or a sorted array of memtable streams. */
struct ltb_it {
    const struct ltable *t;
    size_t block; /* next block to read */
    struct ag_buf buf;
    const uint8_t *p; /* next record in buf */
    uint32_t left;    /* records left in buf */
    struct lstream *const *mem;
    size_t mi, mn;
    struct ltb_rec cur;
    bool valid; /* cur holds a record */
    /* A compact (version 2) record decoded: cur.name and cur.entries point here. */
    char name_buf[AG_STORE_STREAM_MAX];
    struct ag_buf ents;
};

/* The record format tables are written in: 2; tests set 1 to make old tables. */
extern uint32_t ag__ltb_write_version;
void ag__ltb_name(char out[48], uint64_t id, bool tmp);
int ag__ltb_open(struct lstore *ls, uint64_t id, uint64_t sum, struct ltable **out);
void ag__ltb_free(struct ltable *t);
/* Look a stream up in one table: 0 with *out an owned heap copy (free with
 * ag__lstream_free), AG_ENOTFOUND, AG_ECORRUPT (a block's checksum), AG_EIO, AG_ENOMEM. */
int ag__ltb_get(const struct ltable *t, const char *name, size_t len, uint64_t h,
                struct lstream **out);
void ag__lstream_free(struct lstream *st);
/* A heap copy of a record in the memtable's shape (NULL on ENOMEM). */
struct lstream *ag__lstream_copy(const struct ltb_rec *r);
int ag__ltb_it_next(struct ltb_it *it);
void ag__ltb_it_free(struct ltb_it *it);
int ag__ltb_merge_step(struct ltb_it *its, size_t n, struct ltb_it **out);
/* How a table is written: `stop` (may be NULL) abandons the write when it becomes
 * true; `keep_tombstones` keeps records of streams with no events (a scavenge's
 * deletions, which must shadow older tables) — false only when nothing older than
 * the sources exists (no tables at a flush, a merge that includes the oldest). */
struct ltb_wopts {
    const bool *stop;
    bool keep_tombstones;
};
int ag__ltb_write(struct lstore *ls, uint64_t id, struct ltb_it *its, size_t n, uint64_t streams,
                  const struct ltb_wopts *o, struct ltable **out, struct ag_err *err);

static inline uint32_t ag__id_hash(const struct ag_uuid *id)
{
    return (uint32_t)ag_xxh3(id->b, 16);
}

/* ---- segments ---- */

struct lseg {
    uint64_t segno;         /* number in the file name */
    uint64_t base_position; /* position of its first event */
    int fd;
    const uint8_t *map; /* read-only mapping of `map_len` bytes */
    size_t map_len;
    uint64_t end; /* bytes of intact, durable records (incl. header) */
};

/* ---- compression dictionaries (dict.c) ---- */

#define LOG_DICT_MAX 1024 /* dictionary ids 1..LOG_DICT_MAX */

struct ldict;
struct ldicts {
    struct ldict *v[LOG_DICT_MAX]; /* by id - 1; set once (release), freed at close */
    uint16_t n;                    /* highest id loaded or trained (trainer, open) */
    uint16_t cur;                  /* atomic: the id new records are compressed with (0: none) */
    bool off;                      /* AGORA_STORE_COMPRESS=0: records stored raw */
    uint64_t raw, comp;            /* atomic: body bytes in / out since the last check */
    double base_ratio;             /* trainer: the first window's ratio with `cur` */
    uint64_t train_at;             /* log bytes before the first dictionary */
    uint64_t failed_at_head;       /* trainer: no retry before the log grows */
    pthread_t th;
    bool started, quit;
    pthread_mutex_t lock;
    pthread_cond_t cond;
};

/* ---- the store ---- */

/* An append or snapshot request inside the log. */
struct lreq {
    struct lreq *next;
    uint8_t kind; /* enum log_kind */
    const char *stream;
    size_t stream_len;
    uint64_t hash;
    int64_t expected;
    size_t n;                           /* records in enc */
    const struct ag_event_data *events; /* borrowed: for re-append comparison */
    struct ag_buf enc;                  /* the encoded records, checksums unsealed */
    uint64_t *locs;                     /* OUT (writer): where each record landed */
    struct lstream *st;                 /* writer: the stream, once planned */
    bool accepted;                      /* writer: goes into this group's write */
    bool dedup;                         /* writer: answered from an earlier identical append */
    int status;
    struct ag_append_result res;
    struct ag_err err;
    sem_t *done;                /* sync callers wait here */
    struct ag_append_req *areq; /* async request, or NULL */
    /* kind LOG_KIND_BATCH (a multi-stream append): one view per part, each an event
     * request whose enc borrows its records from this request's enc and whose locs
     * borrow from locs + 1 (locs[0]: the batch header record) */
    struct lreq *parts;
    size_t nparts;
    struct ag_append_multi_req *mreq; /* async multi-stream request (areq = &mreq->req) */
};

struct lstore {
    struct ag_store base;
    char *dir;
    int dir_fd;
    int lock_fd; /* -1 when read-only */
    bool read_only;

    pthread_rwlock_t ix_lock; /* guards index, sparse, segs array and ends */
    struct lindex ix;
    uint64_t *sparse; /* loc of position k*LOG_SPARSE_EVERY */
    size_t sparse_len, sparse_cap;
    struct lseg *segs;
    size_t nsegs, segs_cap;
    uint64_t head; /* next position = events durable */

    /* writer */
    pthread_t writer;
    bool writer_started;
    pthread_mutex_t q_lock;
    pthread_cond_t q_cond;
    struct lreq *q_head, *q_tail;
    bool closing;
    struct lpend *pend; /* open addressing on the stream pointer; power-of-two size */
    size_t pend_cap, pend_n;
    struct ag_buf group;   /* bytes of the group being written */
    uint64_t ckpt_end_seg; /* segment the last checkpoint covers */

    /* the tail the writer re-verifies after a write failure (writer thread; set at open) */
    uint64_t tail_off; /* last segment: offset of its last complete batch or snapshot */
    uint64_t tail_pos; /* position of the first event at or after tail_off */

    /* write failures (see WRITE FAILURES in log.c) */
    bool unavail;            /* writer: appends refused until a recovery attempt succeeds */
    uint64_t retry_at_ns;    /* writer: monotonic time of the next recovery attempt */
    uint64_t retry_delay_ns; /* writer: current backoff */
    uint64_t retry_min_ns, retry_max_ns;
    pthread_mutex_t health_lock;   /* guards `health` (never held across I/O) */
    struct ag_store_health health; /* published copy; retry_in_ms computed on read */

    /* I/O fault injection (io.c); `faults_armed` is read without the lock */
    pthread_mutex_t fault_lock;
    bool faults_armed;
    struct log_fault_state {
        struct ag_log_fault f;
        uint64_t seen; /* calls of this kind since armed */
    } faults[2];

    /* preallocation (prealloc.c); guarded by pa_lock */
    pthread_t pa_thread;
    bool pa_started;
    pthread_mutex_t pa_lock;
    pthread_cond_t pa_cond;
    int pa_fd;                         /* the filler's own descriptor on the last segment */
    uint64_t pa_filled;                /* bytes the last segment's file holds (zeros or records) */
    uint64_t pa_hi;                    /* end of what the writer has written or is writing */
    uint64_t pa_busy_from, pa_busy_to; /* the range the filler is writing (to = 0: none) */
    uint64_t pa_skip_below;            /* low free space: no filling until pa_hi gets here */
    bool pa_filling, pa_paused, pa_stopped, pa_quit;

    /* the on-disk stream index (lsm.c); tables[] changes under the write side of ix_lock */
    struct ltable **tables; /* oldest first; a stream's newest record wins */
    size_t ntables, tables_cap;
    uint64_t tb_next_id;   /* number of the next table file */
    uint64_t index_memory; /* cap on the index's memory (opts.index_memory or default) */
    bool tb_enabled;       /* tables are written (writable, not verify) */
    bool tb_corrupt;       /* a table failed its check: drop index.ckpt at close */
    bool tb_written;       /* open wrote tables the checkpoint does not name yet */
    uint64_t tb_retry_at;  /* after a failed flush: memtable bytes before the next try */
    uint64_t tb_flushes, tb_merges;
    pthread_mutex_t ckpt_lock; /* one checkpoint save at a time (writer, merger) */
    pthread_t mg_thread;
    bool mg_started, mg_quit, mg_kick;
    pthread_mutex_t mg_lock;
    pthread_cond_t mg_cond;
    pthread_mutex_t mg_run; /* a merge, from picking its run to freeing the old tables */
    /* the frozen memtable (lsm.c): the writer swaps a full memtable in here (write side
     * of ix_lock) and the flusher thread writes it into a table, then empties it (write
     * side again); slots NULL: none. Lookups search it between ix and the tables. */
    struct lindex frozen;
    pthread_t fl_thread;
    bool fl_started;
    bool fl_pending;        /* mg_lock: a frozen memtable waits for (or is in) its table */
    bool fl_failed;         /* mg_lock: the last write of it failed; retried as ix grows */
    pthread_cond_t fl_cond; /* mg_lock: the flusher's work and its end */
    uint64_t fl_waits;      /* writer: groups that waited for a flush (back-pressure) */
    uint64_t fl_wait_ns;    /* writer: time they waited */

    /* head waiters (subscriptions) */
    pthread_mutex_t head_lock;
    pthread_cond_t head_cond;

    /* counters */
    uint64_t appends, commits;

    struct ldicts dicts;    /* compression dictionaries (dict.c) */
    struct lrcache *rcache; /* decoded-record cache (rcache.c); NULL: off */

    /* scavenge (scavenge.c) */
    uint32_t write_format;     /* format of new segments: 3 (tests: AGORA_STORE_FORMAT=2) */
    bool gaps_ok;              /* a segment was scavenged: positions and versions may skip (scan) */
    pthread_mutex_t scav_lock; /* one scavenge at a time */
    struct lswap *swap;        /* q_lock: a rewritten segment for the writer to put in */
};

/* A segment rewritten by a scavenge, for the writer thread to rename over the
 * old one and map, updating the index (scavenge.c). */
struct lswap {
    size_t si;    /* index in segs */
    char tmp[64]; /* its file name in the directory */
    int status;
    struct ag_err err;
    sem_t done;
};
/* Writer thread, between groups: put a rewritten segment in (scavenge.c). */
void ag__log_swap_run(struct lstore *ls, struct lswap *sw);

static inline uint64_t ag__log_head(const struct lstore *ls)
{
    return __atomic_load_n(&ls->head, __ATOMIC_ACQUIRE);
}
static inline void ag__log_set_head(struct lstore *ls, uint64_t v)
{
    __atomic_store_n(&ls->head, v, __ATOMIC_RELEASE);
}
/* The bytes of the record at `loc` (segments are mapped for the store's life). */
static inline const uint8_t *ag__log_rec_at(const struct lstore *ls, uint64_t loc)
{
    return ls->segs[loc_seg(loc) - ls->segs[0].segno].map + loc_off(loc);
}

/* The record at `loc` after checking that it lies inside its segment's durable
 * bytes and that its checksum holds: 0, or AG_ECORRUPT naming the file and offset
 * (the disk changed under a record the index trusts). */
int ag__log_rec_checked(const struct lstore *ls, uint64_t loc, const uint8_t **out,
                        struct ag_err *err);

/* io.c: every write/fdatasync/truncate of a segment, through the fault hook.
 * Each returns 0 or -errno. io_sync skips the real call under opts.no_sync (an
 * injected fault still fires). */
int ag__log_io_pwrite(struct lstore *ls, int fd, const void *p, size_t n, uint64_t off);
int ag__log_io_sync(struct lstore *ls, int fd);
int ag__log_io_truncate(struct lstore *ls, int fd, uint64_t len);
/* Arm faults from AGORA_STORE_FAULT (open). */
void ag__log_io_faults_from_env(struct lstore *ls);

/* log.c */
/* Writer thread, after a write failure: cut the last segment back to its last
 * synced byte and re-verify its tail with the recovery scan. 0, AG_EUNAVAILABLE
 * (the cut failed; err names the errno in aux), or AG_ECORRUPT. */
int ag__log_tail_restore(struct lstore *ls, struct ag_err *err);
/* Open and map an existing segment and add it to the store (caller holds the lock). */
int ag__log_seg_attach(struct lstore *ls, uint64_t segno, struct ag_err *err);
int ag__log_seg_create(struct lstore *ls, uint64_t segno, uint64_t base_position,
                       struct ag_err *err);

/* prealloc.c: the filler thread (not started read-only or under no_sync) */
int ag__log_pa_start(struct lstore *ls); /* open, after recovery */
void ag__log_pa_stop(struct lstore *ls); /* idempotent */
/* Writer: the group about to be written ends at `end`; waits only if the filler
 * is writing zeros where the group goes. */
void ag__log_pa_before_write(struct lstore *ls, uint64_t end);
/* Writer: stop filling while the tail is cut (a write outage). */
void ag__log_pa_pause(struct lstore *ls);
/* Writer: fill the last segment again from its current size (after a roll, or
 * when an outage ends). */
void ag__log_pa_reset(struct lstore *ls);

/* writer.c */
void *ag__log_writer_main(void *arg);
int ag__log_append(struct ag_store *s, const char *stream, size_t stream_len, int64_t expected,
                   const struct ag_event_data *ev, size_t n, struct ag_append_result *out,
                   struct ag_err *err);
int ag__log_append_async(struct ag_store *s, struct ag_append_req *req);
int ag__log_append_multi(struct ag_store *s, const struct ag_append_part *parts, size_t nparts,
                         struct ag_append_result *out, struct ag_err *err);
int ag__log_append_multi_async(struct ag_store *s, struct ag_append_multi_req *req);
int ag__log_save_snapshot(struct ag_store *s, const char *stream, size_t stream_len,
                          int64_t version, const void *state, size_t state_len, struct ag_err *err);
int ag__log_health(struct ag_store *s, struct ag_store_health *out);

/* dict.c */
/* Open: load and check every dict-*.zd (a corrupt or missing one: AG_ECORRUPT). */
int ag__log_dicts_load(struct lstore *ls, struct ag_err *err);
void ag__log_dicts_free(struct lstore *ls);
/* The trainer thread (writable stores); stop is idempotent. */
int ag__log_dict_start(struct lstore *ls);
void ag__log_dict_stop(struct lstore *ls);
/* Train a dictionary from the newest records now, write it durably and make it
 * the one new records use (the trainer; tests). */
int ag__log_dict_train(struct lstore *ls, struct ag_err *err);
/* True when records naming dictionary `id` can be read (0: no dictionary). */
bool ag__log_dict_present(const struct lstore *ls, uint16_t id);
/* Appending thread: compress r's type|meta|data with the current dictionary into
 * `out`: 1 (out holds the frame, *dict its dictionary) when that saves bytes, 0
 * when the record is to be stored raw. */
int ag__log_compress(struct lstore *ls, const struct log_rec *r, struct ag_buf *out,
                     uint16_t *dict);
/* Decode an intact record with its body: type/meta/data point into the mapping,
 * or into `scratch` for a compressed record. 0, AG_ECORRUPT (*why: a missing
 * dictionary or a frame that does not decode), AG_ENOMEM. */
int ag__log_rec_body(const struct lstore *ls, const uint8_t *p, struct log_rec *r,
                     struct ag_buf *scratch, const char **why);
/* Bytes of the intact record at `p` once expanded (its raw, uncompressed form). */
size_t ag__log_rec_raw_size(const uint8_t *p);
/* Write the raw form of the record at `p` to `dst` (ag__log_rec_raw_size bytes),
 * sealed: what ag__log_rec_fields reads type/meta/data from. */
int ag__log_rec_expand(const struct lstore *ls, const uint8_t *p, uint8_t *dst,
                       struct ag_buf *scratch, const char **why);

/* ---- the decoded-record cache (rcache.c) ---- */

struct lrcache;
/* Make the cache (not for a read-only store, nor with AGORA_STORE_READ_CACHE=0). */
void ag__log_rc_open(struct lstore *ls);
void ag__log_rc_close(struct lstore *ls);
/* Lookups that found / did not find their record, since open. */
void ag__log_rc_counts(const struct lstore *ls, uint64_t *hits, uint64_t *misses);
/* ag__log_rec_expand, answered from the cache when it holds the record's expanded
 * form (compressed records near the head), which it then stores. */
int ag__log_rec_expand_cached(const struct lstore *ls, const uint8_t *p, uint8_t *dst,
                              struct ag_buf *scratch, const char **why);

/* read.c */
int ag__log_read_stream(struct ag_store *s, const char *stream, size_t stream_len, int64_t from,
                        enum ag_read_dir dir, size_t max, struct ag_event_page *out,
                        struct ag_err *err);
int ag__log_read_all(struct ag_store *s, uint64_t from, enum ag_read_dir dir, size_t max,
                     struct ag_event_page *out, struct ag_err *err);
int ag__log_stream_version(struct ag_store *s, const char *stream, size_t stream_len,
                           int64_t *version);
int ag__log_list_streams(struct ag_store *s,
                         int (*cb)(void *ud, const char *name, size_t len, int64_t version),
                         void *ud);
int ag__log_wait_head(struct ag_store *s, uint64_t after, int timeout_ms);
int ag__log_load_snapshot(struct ag_store *s, const char *stream, size_t stream_len,
                          struct ag_snapshot *out, struct ag_err *err);
int ag__log_stats(struct ag_store *s, struct ag_store_stats *out);
/* Read-only stores: pick up records another process appended since. */
int ag__log_refresh(struct lstore *ls);

/* checkpoint (ckpt.c) */
int ag__log_ckpt_save(struct lstore *ls, struct ag_err *err);
/* Delete index.ckpt (the next open rebuilds the index from the log). */
void ag__log_ckpt_drop(struct lstore *ls);
/* Loads the checkpoint if present and consistent with the segments; sets *loaded.
 * On return the index is either loaded (with `*seg`/`*off` where it ends) or empty. */
int ag__log_ckpt_load(struct lstore *ls, bool *loaded, uint64_t *seg, uint64_t *off);

/* lsm.c: the stream index across the memtable and the tables */
/* Find a stream (caller holds ix_lock, either side, or is the writer). *out is
 * the memtable's stream, or an owned copy read from a table (*owned true; release
 * with ag__lidx_release), or NULL when the stream does not exist. 0, AG_ECORRUPT
 * (a table failed its check; the next open rebuilds the index), AG_EIO, AG_ENOMEM. */
int ag__lidx_find(struct lstore *ls, const char *name, size_t len, uint64_t h, struct lstream **out,
                  bool *owned);
void ag__lidx_release(struct lstream *st, bool owned);
/* Writer or open: the stream in the memtable, brought in from a table if it is
 * only there (*out NULL: no such stream). `lock`: take ix_lock (the writer);
 * false when the caller holds its write side or no other thread runs. */
int ag__lidx_fault(struct lstore *ls, const char *name, size_t len, uint64_t h,
                   struct lstream **out, bool lock);
/* Writer, between groups (no lstream pointer held anywhere): write the memtable
 * out as a table when it is over its budget. `save_ckpt`: name it in index.ckpt. */
int ag__lidx_maybe_flush(struct lstore *ls, bool save_ckpt, struct ag_err *err);
/* The writer, between groups: over the cap, freeze the memtable for the flusher
 * thread and start an empty one; waits only while the previous frozen one is still
 * being written (counted in fl_waits). Without a flusher, flushes at once. */
void ag__lidx_maybe_freeze(struct lstore *ls);
/* Wait until no frozen memtable is pending (the writer, before a scavenge's swap);
 * a failed flush is retried here on the caller's thread. 0 or an AG_E* code. */
int ag__lidx_drain(struct lstore *ls, struct ag_err *err);
/* Memory of the tables' summaries and bloom filters (ix_lock held). */
size_t ag__lidx_table_mem(const struct lstore *ls);
/* Open the tables index.ckpt names (oldest first): 0, 1 (one is missing or bad:
 * rebuild), AG_ENOMEM. */
int ag__lidx_open_tables(struct lstore *ls, const uint64_t *ids, const uint64_t *sums, size_t n);
void ag__lidx_close_tables(struct lstore *ls);
/* Delete table files the loaded state does not name (writable open). */
void ag__lidx_remove_orphans(struct lstore *ls);
/* The background merger (writable stores). */
int ag__lidx_merger_start(struct lstore *ls);
void ag__lidx_merger_stop(struct lstore *ls);
/* Every stream with events, each once, its newest record (ix_lock read held). */
int ag__lidx_each(struct lstore *ls, int (*cb)(void *ud, const struct ltb_rec *r), void *ud);
/* The same for a long walk, called with no lock: the memtable's streams are given
 * to `cb` under the read side of ix_lock (*locked true), then the tables' as they
 * were at that moment without it (*locked false; merges wait, appends go on),
 * leaving out names the memtable held. A snapshot: `cb` takes the lock itself to
 * read records. */
int ag__lidx_each_online(struct lstore *ls, int (*cb)(void *ud, const struct ltb_rec *r), void *ud,
                         bool *locked);

/* recovery scan (scan.c) */
/* An event of the batch being assembled by the scan. */
struct log_scan_ent {
    uint64_t loc;
    uint64_t position;
    int64_t version;
    uint32_t idh;
    uint16_t stream_len;
    size_t stream_off; /* its name in log_scan.names (a format-3 record's name is
                          decoded into a buffer, not borrowed from the segment) */
};
struct log_scan {
    struct lstore *ls;      /* the store (its index is filled unless verify_only) */
    bool verify_only;       /* re-check records the index already holds: versions and
                               positions are checked relative to the first batch met */
    uint64_t next_position; /* expected position of the next event */
    uint64_t records, events;
    /* the batch being assembled */
    uint64_t batch_start_off;
    uint32_t batch_left; /* records still expected in the open batch */
    size_t batch_n;
    struct log_scan_ent *batch; /* the open batch's events */
    size_t batch_cap;
    struct ag_buf names; /* the open batch's stream names, one per part */
    size_t batch_stream; /* the stream of the part being read: offset in names */
    size_t batch_stream_len;
    int64_t batch_next_version; /* version of the part's first event */
    uint64_t batch_first_position;
    bool batch_multi;          /* the open batch is a multi-stream one (opened by a header) */
    uint32_t batch_parts;      /* parts (streams) met in it so far */
    uint32_t batch_parts_want; /* parts its header announced */
    size_t part_start;         /* batch_n when the current part began */
    /* compressed records: the first whose dictionary is not loaded (the open
     * refuses), and with check_bodies (verify) the first whose frame does not decode */
    bool check_bodies;
    uint16_t dict_missing; /* 0: none met */
    uint64_t dict_missing_loc;
    const char *body_bad; /* NULL: none met */
    uint64_t body_bad_loc;
    /* result of a scan */
    uint64_t good_end; /* offset after the last complete batch */
    uint64_t bad_off;  /* offset of the first bad record (if any) */
    const char *why;   /* what was wrong there */
    bool incomplete;   /* the segment ended inside a batch (bad_off = its start) */
    bool have_last;    /* this call met a complete batch or snapshot: */
    uint64_t last_off; /*   where the last one starts */
    uint64_t last_pos; /*   position of the first event at or after it */
};
/* Scan `seg` from `off` to `len`: fill the index with complete batches. Returns 0
 * when clean to the end or to zeros that run to the end (good_end is where they
 * start), AG_ECORRUPT when a bad record was met (scan->bad_off), or
 * AG_ENOMEM. */
int ag__log_scan(struct log_scan *sc, const struct lseg *seg, const uint8_t *map, uint64_t off,
                 uint64_t len);
/* True when an intact record starts somewhere in [off, len). */
bool ag__log_intact_after(const uint8_t *map, uint64_t off, uint64_t len);
void ag__log_scan_free(struct log_scan *sc);
/* Apply one record to the index (used by the scan and the writer). */
int ag__log_index_event(struct lstore *ls, const char *stream, size_t stream_len, uint64_t loc,
                        uint64_t position, uint32_t idh);
/* The same at an explicit version: a version past the stream's count (its
 * earlier events were scavenged) leaves LOC_NONE entries before it. */
int ag__log_index_event_at(struct lstore *ls, const char *stream, size_t stream_len, uint64_t loc,
                           uint64_t position, int64_t version, uint32_t idh);

#endif
