/*
 * The event store port.
 *
 * A store holds streams of events. Each recorded event has a 16-byte id (UUIDv7),
 * a type, a JSON payload ("data"), JSON metadata, its stream version (0-based,
 * gapless per stream) and a global position (0-based, gapless across the store,
 * in commit order). Callers see only this header; adapters (the embedded log in
 * `store_log.h`, PostgreSQL later) fill a `struct ag_store_ops` table and are
 * opened by URI through ag_store_open; `cli/` chooses the URI (`agora run --store`).
 *
 * Semantics every adapter keeps:
 * - append is atomic for the batch and durable when acknowledged;
 * - a multi-stream append (optional: AG_EUNSUPPORTED without it) checks every
 *   part's expected version first and then commits all parts as one unit: after a
 *   crash either every part is there or none, and $all holds them consecutively;
 * - an expected-version mismatch is AG_ECONFLICT with the actual version in
 *   `err->aux` (-1 when the stream does not exist);
 * - re-appending the same event ids to the same stream returns the original
 *   result and stores nothing; the same id with other content is AG_EIDEMPOTENCY;
 * - reads only ever see acknowledged (durable) events;
 * - subscriptions deliver `$all` in commit (= position) order, catch-up then live,
 *   and never hold up writers: a subscriber pulls, it is never pushed to;
 * - when the medium stops taking writes (a full disk, an I/O error, a file system
 *   turned read-only) appends fail fast with AG_EUNAVAILABLE (retryable: nothing of
 *   that append was acknowledged) while reads of everything durable keep working;
 *   the adapter retries in the background and takes appends again by itself once
 *   writes work. ag_store_health says which state the store is in.
 *
 * Memory: inputs are borrowed for the duration of a call (for the async append,
 * until its callback runs). Results (`struct ag_event_page`, snapshots) are owned
 * by the caller and freed with the matching *_free function.
 */
#ifndef AGORA_STORE_H
#define AGORA_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agora/base.h"
#include "agora/obs.h"

struct uv_loop_s;

/* Expected-version sentinels; any value >= 0 is an exact version. */
#define AG_STORE_ANY           (-2) /* no check */
#define AG_STORE_NO_STREAM     (-1) /* the stream must not exist */
#define AG_STORE_STREAM_EXISTS (-4) /* the stream must exist (any version) */

#define AG_STORE_STREAM_MAX        255  /* bytes of a stream name */
#define AG_STORE_TYPE_MAX          255  /* bytes of an event type */
#define AG_STORE_BATCH_MAX         4096 /* events in one append */
#define AG_STORE_EVENT_MAX_DEFAULT (1u << 20)
#define AG_STORE_MULTI_MAX         64 /* streams (parts) in one multi-stream append */

/* An event to append. Everything is borrowed. */
struct ag_event_data {
    struct ag_uuid id; /* nil → the store assigns a UUIDv7 */
    const char *type;  /* required, 1..255 bytes of UTF-8, no control characters */
    size_t type_len;
    const char *data; /* JSON text (any JSON value); NULL/0 → "{}" */
    size_t data_len;
    const char *metadata; /* JSON object text; NULL/0 → "{}" */
    size_t metadata_len;
};

/* A recorded event. Pointers borrow from the page (or snapshot) that holds it. */
struct ag_event {
    const char *stream;
    size_t stream_len;
    int64_t version;   /* 0-based, gapless within the stream */
    uint64_t position; /* 0-based, gapless across the store, commit order */
    struct ag_uuid id;
    const char *type;
    size_t type_len;
    uint64_t time_ns; /* commit time, Unix ns */
    const char *data;
    size_t data_len;
    const char *metadata;
    size_t metadata_len;
    uint32_t stored_bytes; /* embedded log: bytes its record takes on disk (compressed or
                              not); 0 when the adapter does not say */
};

/* A page of events returned by a read. Owned by the caller: ag_event_page_free. */
struct ag_event_page {
    struct ag_event *events; /* `count` events */
    size_t count;
    bool end;               /* true when the read reached the end (no more now) */
    int64_t next_version;   /* stream reads: version to pass to continue */
    uint64_t next_position; /* $all reads: position to pass to continue */
    void *mem;              /* adapter-owned backing memory */
};
AG_EXTERN void ag_event_page_free(struct ag_event_page *page);

struct ag_append_result {
    int64_t first_version;   /* version of the first event of the batch */
    int64_t last_version;    /* version of the last (= the stream's new version) */
    uint64_t first_position; /* position of the first event */
    uint64_t last_position;  /* position of the last event */
};

/* One stream's part of a multi-stream append. Everything is borrowed. */
struct ag_append_part {
    const char *stream;
    size_t stream_len;
    int64_t expected_version; /* AG_STORE_ANY / _NO_STREAM / _STREAM_EXISTS / exact */
    const struct ag_event_data *events;
    size_t count; /* >= 1 */
};

enum ag_read_dir { AG_READ_FORWARD, AG_READ_BACKWARD };

/* A stored snapshot. Owned by the caller: ag_snapshot_free. */
struct ag_snapshot {
    int64_t version; /* stream version the state includes */
    char *state;     /* the state bytes (opaque to the store; usually JSON) */
    size_t state_len;
};
AG_EXTERN void ag_snapshot_free(struct ag_snapshot *snap);

struct ag_store_stats {
    uint64_t events;              /* events in the store (= next position) */
    uint64_t streams;             /* streams with at least one event */
    uint64_t bytes;               /* bytes of log on disk */
    uint64_t segments;            /* segment files */
    uint64_t appends;             /* append calls acknowledged since open */
    uint64_t commits;             /* group commits (fdatasync calls) since open */
    uint64_t index_bytes;         /* approximate memory of the in-memory index */
    uint64_t index_tables;        /* on-disk index tables (log) */
    uint64_t index_entries;       /* stream records in them, a stream counted once per table */
    uint64_t index_table_bytes;   /* their bytes on disk */
    uint64_t index_mem_streams;   /* streams in the in-memory part */
    uint64_t index_flushes;       /* in-memory part written out as a table, since open */
    uint64_t index_merges;        /* background merges of tables, since open */
    uint64_t index_flush_waits;   /* commits held because the previous memtable was still being
                                     written (back-pressure), since open */
    uint64_t index_flush_wait_ns; /* time they were held */
};

/* Whether the store takes writes, for readiness checks, metrics and Retry-After. */
struct ag_store_health {
    bool writable;        /* appends are being acknowledged */
    int error;            /* AG_EUNAVAILABLE while writes fail, else 0 */
    int os_error;         /* errno of the last failed write (ENOSPC, EIO, EROFS...), 0 if none */
    char message[256];    /* what failed, e.g. "No space left on device" ("" when writable) */
    uint64_t since_ns;    /* when writes started failing (store clock, Unix ns); 0 when writable */
    uint64_t retries;     /* recovery attempts so far in this outage */
    uint64_t retry_in_ms; /* until the next recovery attempt (0 when writable) */
    uint64_t failures;    /* failed write/fdatasync/truncate calls since open (a counter) */
    uint64_t outages;     /* times writes started failing since open */
};

struct ag_store_options {
    size_t max_event_bytes;       /* data + metadata + type per event; 0 → 1 MiB */
    uint64_t segment_bytes;       /* segment roll size; 0 → 256 MiB */
    bool read_only;               /* open without the writer lock (inspection) */
    bool repair;                  /* truncate at the first bad record instead of refusing */
    bool no_sync;                 /* skip fdatasync (benchmarks/tests only: NOT durable) */
    const struct ag_clock *clock; /* NULL → system clock */
    const struct ag_rng *rng;     /* NULL → system RNG */
    uint64_t retry_min_ns;        /* first retry after a write failure; 0 → 100 ms */
    uint64_t retry_max_ns;        /* retry backoff cap (doubling); 0 → 5 s */
    uint64_t index_memory;        /* log: cap on the stream index's memory; 0 → 64 MiB */
    /* log: a histogram observing each group commit's write + fdatasync in seconds
     * (agora_store_commit_seconds); borrowed, must outlive the store; NULL = none */
    struct ag_obs_series *commit_seconds;
};

struct ag_store;
struct ag_store_sub;
struct ag_store_loop;

typedef void (*ag_append_cb)(void *ud, int status, const struct ag_append_result *res,
                             const struct ag_err *err);

/* Private: an append's span while it is in flight (src/store/store.c). */
struct ag__store_span {
    struct ag_obs_trace parent; /* the span the append belongs to */
    uint64_t t0;                /* start, Unix ns; 0 = no span */
    uint32_t streams, events;   /* what is appended */
    uint64_t bytes;             /* payload + metadata bytes */
};

/* An asynchronous append, owned by the caller and untouched by it until `cb` runs
 * on the loop the request was submitted to (like a uv_fs_t). */
struct ag_append_req {
    const char *stream;
    size_t stream_len;
    int64_t expected_version;
    const struct ag_event_data *events;
    size_t count;
    ag_append_cb cb;
    void *ud;
    /* private, filled by the store */
    struct ag_append_result result;
    struct ag_err err;
    int status;
    struct ag_append_req *next_done;
    struct ag_store_loop *loop;
    struct ag__store_span span;
    uint64_t pos_base;                    /* a shard's position bits, added on completion */
    struct ag_append_result *pos_results; /* and to these `pos_n` results (multi) */
    size_t pos_n;
};

/* An asynchronous multi-stream append (see ag_store_append_multi), owned by the
 * caller and untouched by it until `cb` runs, like struct ag_append_req. */
struct ag_append_multi_req {
    const struct ag_append_part *parts;
    size_t nparts;
    struct ag_append_result *results; /* NULL, or `nparts` slots filled before `cb` on success */
    ag_append_cb cb;                  /* `res`: the first part's result */
    void *ud;
    struct ag_append_req req; /* private, filled by the store */
};

/* The operations an adapter provides. Validation of names, sizes and JSON is done
 * by the port before an adapter sees the call. */
struct ag_store_ops {
    const char *name;
    int (*append)(struct ag_store *s, const char *stream, size_t stream_len, int64_t expected,
                  const struct ag_event_data *ev, size_t n, struct ag_append_result *out,
                  struct ag_err *err);
    int (*append_async)(struct ag_store *s, struct ag_append_req *req);
    /* Optional (NULL: ag_store_append_multi says AG_EUNSUPPORTED). `out` has
     * `nparts` slots, or is NULL. */
    int (*append_multi)(struct ag_store *s, const struct ag_append_part *parts, size_t nparts,
                        struct ag_append_result *out, struct ag_err *err);
    /* Optional (NULL: ag_store_append_multi_async says AG_EUNSUPPORTED). Finishes
     * with ag__store_loop_complete(&req->req) after filling req->results. */
    int (*append_multi_async)(struct ag_store *s, struct ag_append_multi_req *req);
    int (*read_stream)(struct ag_store *s, const char *stream, size_t stream_len, int64_t from,
                       enum ag_read_dir dir, size_t max, struct ag_event_page *out,
                       struct ag_err *err);
    int (*read_all)(struct ag_store *s, uint64_t from, enum ag_read_dir dir, size_t max,
                    struct ag_event_page *out, struct ag_err *err);
    int (*stream_version)(struct ag_store *s, const char *stream, size_t stream_len,
                          int64_t *version);
    /* Calls `cb` for each stream (name, last version) until it returns non-zero. */
    int (*list_streams)(struct ag_store *s,
                        int (*cb)(void *ud, const char *name, size_t len, int64_t version),
                        void *ud);
    /* Block until head > `after` (returns 0), timeout (AG_ETIMEDOUT) or close (AG_ECLOSED). */
    int (*wait_head)(struct ag_store *s, uint64_t after, int timeout_ms);
    int (*save_snapshot)(struct ag_store *s, const char *stream, size_t stream_len, int64_t version,
                         const void *state, size_t state_len, struct ag_err *err);
    int (*load_snapshot)(struct ag_store *s, const char *stream, size_t stream_len,
                         struct ag_snapshot *out, struct ag_err *err);
    int (*stats)(struct ag_store *s, struct ag_store_stats *out);
    void (*close)(struct ag_store *s);
    /* Optional (NULL: always writable). Must not block on I/O. */
    int (*health)(struct ag_store *s, struct ag_store_health *out);
    /* Optional, a store spread over shards (src/store/shard; NULL: one shard). */
    size_t (*shards)(struct ag_store *s);
    /* Forward read of shard `shard`'s own $all from its local position `from`:
     * events carry encoded positions, next_position is local. */
    int (*read_shard)(struct ag_store *s, size_t shard, uint64_t from, size_t max,
                      struct ag_event_page *out, struct ag_err *err);
    /* Block until some shard k's head > after[k] (0), timeout or close. */
    int (*wait_shards)(struct ag_store *s, const uint64_t *after, size_t n, int timeout_ms);
};

/* Every adapter's handle starts with this. */
struct ag_store {
    const struct ag_store_ops *ops;
    struct ag_store_options opts; /* as given, defaults filled in */
};

/* ---- sharded stores ----
 *
 * A `shards:` store (src/store/shard, README "Sharding") keeps one $all per shard.
 * A position carries its shard in the top 16 bits and the shard's own position
 * below, so positions are unique but $all is gapless and ordered only per shard;
 * a one-shard store's positions are the plain ones. ag_store_read_all over shards
 * reads shard 0 to its end, then shard 1, ... (backward: the reverse): a complete
 * one-off scan. A live $all subscription keeps a cursor, one next position per
 * shard: ag_store_subscribe_cursor / ag_store_sub_cursor. */
#define AG_STORE_SHARD_SHIFT 48
#define AG_STORE_SHARDS_MAX  64
#define AG_STORE_LOCAL_MASK  ((UINT64_C(1) << AG_STORE_SHARD_SHIFT) - 1)

static inline uint32_t ag_store_pos_shard(uint64_t pos)
{
    return (uint32_t)(pos >> AG_STORE_SHARD_SHIFT);
}
static inline uint64_t ag_store_pos_local(uint64_t pos)
{
    return pos & AG_STORE_LOCAL_MASK;
}
static inline uint64_t ag_store_pos_make(size_t shard, uint64_t local)
{
    return ((uint64_t)shard << AG_STORE_SHARD_SHIFT) | (local & AG_STORE_LOCAL_MASK);
}

/* Where a $all consumer is: the next local position of each of `n` shards. */
struct ag_store_cursor {
    uint32_t n;
    uint64_t next[AG_STORE_SHARDS_MAX];
};

/* Number of shards (1 for an unsharded store). */
AG_EXTERN size_t ag_store_shards(struct ag_store *s);
/* A cursor at the start of every shard (n = the store's shards). */
AG_EXTERN void ag_store_cursor_init(struct ag_store *s, struct ag_store_cursor *c);
/* A cursor at every shard's head now (what a consumer has to reach). */
AG_EXTERN void ag_store_cursor_head(struct ag_store *s, struct ag_store_cursor *c);
/* Whether the event at `position` is before the cursor (consumed). */
AG_EXTERN bool ag_store_cursor_covers(const struct ag_store_cursor *c, uint64_t position);
/* Events before the cursor in all (for lag figures). */
AG_EXTERN uint64_t ag_store_cursor_sum(const struct ag_store_cursor *c);
/* "12" or "12,40,7": the text form consumers persist; parse accepts fewer shards
 * than the store has (the others start at 0: a shard added later). */
AG_EXTERN void ag_store_cursor_format(const struct ag_store_cursor *c, char *out, size_t n);
AG_EXTERN int ag_store_cursor_parse(const char *text, struct ag_store_cursor *c);

/* A live $all subscription from `from` (NULL: the start of every shard). */
AG_EXTERN int ag_store_subscribe_cursor(struct ag_store *s, const struct ag_store_cursor *from,
                                        struct ag_store_sub **out, struct ag_err *err);
/* The subscription's checkpoint as a cursor ($all subscriptions). */
AG_EXTERN void ag_store_sub_cursor(const struct ag_store_sub *sub, struct ag_store_cursor *out);

/* ---- opening a store by URI ---- */

/* Open the store `uri` names with the adapter registered for its scheme:
 *   file:PATH, file://PATH or a bare PATH: the embedded log in directory PATH
 *   (see store_log.h; created if needed);
 *   shards:URI,URI,...: the streams spread over those stores (store_shard.h).
 * `opts` may be NULL. On success `*out` is owned: close with ag_store_close.
 * AG_EUNSUPPORTED for a scheme no adapter serves ("no store adapter for scheme
 * 'x' (known: file)"), AG_EINVAL for an empty URI, else the adapter's errors. */
AG_EXTERN int ag_store_open(const char *uri, const struct ag_store_options *opts,
                            struct ag_store **out, struct ag_err *err);

/* ---- the API callers use (validates, then calls the adapter) ---- */

/* Append `n` events atomically. Blocks until durable. On AG_ECONFLICT,
 * err->aux holds the stream's actual version (-1: no stream). */
AG_EXTERN int ag_store_append(struct ag_store *s, const char *stream, size_t stream_len,
                              int64_t expected_version, const struct ag_event_data *events,
                              size_t n, struct ag_append_result *out, struct ag_err *err);

/* Append to several streams as ONE atomic unit (one write, one fdatasync): every
 * part's expected version is checked first; a mismatch on any part fails the whole
 * call with AG_ECONFLICT (the message names the stream, err->aux holds its actual
 * version) and nothing is written. Each stream may appear in one part only; at most
 * AG_STORE_MULTI_MAX parts and AG_STORE_BATCH_MAX events in all. The parts' events
 * take consecutive positions in part order. Re-appending the same event ids is
 * idempotent per part, as for ag_store_append: a part that repeats an earlier
 * append gets that append's result and writes nothing, the others are written
 * (a whole retried unit therefore writes nothing). `out` (NULL, or `nparts`
 * results) receives each part's versions and positions. Blocks until durable.
 * AG_EUNSUPPORTED when the adapter cannot do it atomically. */
AG_EXTERN int ag_store_append_multi(struct ag_store *s, const struct ag_append_part *parts,
                                    size_t nparts, struct ag_append_result *out,
                                    struct ag_err *err);

/* Bind a libuv loop for async appends. Must be closed (ag_store_loop_close, on the
 * loop's thread, before the loop is closed and before the store is closed). */
AG_EXTERN int ag_store_loop_init(struct ag_store *s, struct uv_loop_s *loop,
                                 struct ag_store_loop **out);
AG_EXTERN void ag_store_loop_close(struct ag_store_loop *l);

/* Submit an async append; `req->cb` runs on `l`'s loop once it is durable or has
 * failed. Validation failures are reported through the callback too. Returns 0, or
 * an error if the request could not be queued at all (then no callback). */
AG_EXTERN int ag_store_append_async(struct ag_store_loop *l, struct ag_append_req *req);

/* The async twin of ag_store_append_multi: `req->cb` runs on `l`'s loop once the
 * unit is durable or has failed (validation failures too). Returns 0, or an error
 * if it could not be queued at all (then no callback): AG_EUNSUPPORTED when the
 * adapter has no atomic multi-stream append. */
AG_EXTERN int ag_store_append_multi_async(struct ag_store_loop *l, struct ag_append_multi_req *req);

/* Read up to `max` events of a stream starting at version `from` (inclusive), going
 * forward or backward (backward from -1 means "from the end"). A missing stream is
 * AG_ENOTFOUND. */
AG_EXTERN int ag_store_read_stream(struct ag_store *s, const char *stream, size_t stream_len,
                                   int64_t from, enum ag_read_dir dir, size_t max,
                                   struct ag_event_page *out, struct ag_err *err);

/* Read up to `max` events of `$all` from position `from` (inclusive). Backward
 * from UINT64_MAX means "from the end". */
AG_EXTERN int ag_store_read_all(struct ag_store *s, uint64_t from, enum ag_read_dir dir, size_t max,
                                struct ag_event_page *out, struct ag_err *err);

/* The stream's current version (-1 if it does not exist). */
AG_EXTERN int ag_store_stream_version(struct ag_store *s, const char *stream, size_t stream_len,
                                      int64_t *version);
AG_EXTERN int
ag_store_list_streams(struct ag_store *s,
                      int (*cb)(void *ud, const char *name, size_t len, int64_t version), void *ud);

/* Subscriptions to $all (stream = NULL) or to one stream: catch-up from `from`
 * (a position, or a version for a stream), then live. The subscriber pulls pages
 * with ag_store_sub_next; writers never wait for it. */
AG_EXTERN int ag_store_subscribe(struct ag_store *s, const char *stream, size_t stream_len,
                                 uint64_t from, struct ag_store_sub **out, struct ag_err *err);
/* Next page of up to `max` events; waits up to `timeout_ms` (-1: forever) for new
 * events when caught up. AG_ETIMEDOUT when none came; AG_ECLOSED after the store or
 * the subscription was closed. */
AG_EXTERN int ag_store_sub_next(struct ag_store_sub *sub, size_t max, int timeout_ms,
                                struct ag_event_page *out, struct ag_err *err);
/* Position (or version) the next page starts at: a subscriber's checkpoint. On a
 * sharded store an $all subscription's is the sum of its cursor (a count of
 * events consumed, for lag), and a scalar `from` other than 0 starts every shard
 * at its head (live from now): keep a cursor instead (ag_store_sub_cursor). */
AG_EXTERN uint64_t ag_store_sub_checkpoint(const struct ag_store_sub *sub);
AG_EXTERN void ag_store_sub_free(struct ag_store_sub *sub);

AG_EXTERN int ag_store_save_snapshot(struct ag_store *s, const char *stream, size_t stream_len,
                                     int64_t version, const void *state, size_t state_len,
                                     struct ag_err *err);
/* AG_ENOTFOUND when the stream has no snapshot. */
AG_EXTERN int ag_store_load_snapshot(struct ag_store *s, const char *stream, size_t stream_len,
                                     struct ag_snapshot *out, struct ag_err *err);

AG_EXTERN int ag_store_stats(struct ag_store *s, struct ag_store_stats *out);
/* The store's write health (*out filled; never blocks on I/O, cheap enough for a
 * readiness probe or every 503). An adapter without the operation reports writable. */
AG_EXTERN int ag_store_health(struct ag_store *s, struct ag_store_health *out);
/* Close the store: pending appends finish first. Subscriptions must be freed first. */
AG_EXTERN void ag_store_close(struct ag_store *s);

/* ---- validation (shared by adapters and the CLI) ---- */

/* Stream names: 1..255 bytes of UTF-8, no control characters. */
AG_EXTERN int ag_store_check_stream(const char *stream, size_t len, struct ag_err *err);
AG_EXTERN int ag_store_check_event(const struct ag_store *s, size_t index,
                                   const struct ag_event_data *ev, struct ag_err *err);
/* Parse "any", "no-stream", "exists" or a version number. */
AG_EXTERN int ag_store_parse_expected(const char *s, int64_t *out);
/* Append one event as a JSON object line (stream, version, position, id, type,
 * time, data, metadata) to `b`, without the newline. */
AG_EXTERN int ag_event_to_json(const struct ag_event *ev, struct ag_buf *b);

#endif
