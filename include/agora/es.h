/*
 * The event-sourcing kernel: aggregate repository, projections and the inbox.
 *
 * Repository. An aggregate type (`struct ag_es_type`) says how to fold events into
 * a state. `ag_es_execute` loads a stream's state (latest snapshot + the events
 * after it; kept in a bounded in-memory cache and caught up from the store on each
 * use), runs the caller's decide function, appends the new events with the exact
 * expected version, and on a concurrency conflict reloads, re-decides and retries
 * (bounded) before reporting AG_ECONFLICT. A snapshot is saved every N events.
 * Commands on one stream are serialised in-process (a lock per cached aggregate),
 * so conflicts only come from other processes. Blocking: call it from worker
 * threads (the libuv threadpool), never from a loop thread.
 *
 * Projections. A projection is a named read model, one database of the read-model
 * port (include/agora/readmodel.h; SQLite: `<data>/readmodels/<name>.db`): a
 * schema, and an apply function that turns one event into rows. The runner
 * subscribes to `$all` from the projection's checkpoint and writes each page of
 * rows and the new checkpoint in one transaction (exactly-once projection). Its
 * lag (events and seconds) is exposed.
 *
 * Inbox. `ag_es_inbox_seen` records an event id per consumer in the projection's
 * database, inside the same transaction, so an at-least-once consumer acts once.
 *
 * Ownership: handles from the _new and _start functions are freed with the matching
 * _free and _stop functions.
 */
#ifndef AGORA_ES_H
#define AGORA_ES_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "agora/readmodel.h"
#include "agora/store.h"

/* ---- aggregates ---- */

struct ag_es_type {
    const char *name;  /* the stream prefix ("order": streams "order-<id>"), logs, metrics */
    size_t state_size; /* bytes of the state struct */
    void (*init)(void *state);
    void (*free)(void *state);
    int (*evolve)(void *state, const char *type, const json_t *data);
    json_t *(*snapshot)(const void *state); /* new reference */
    int (*restore)(void *state, const json_t *snap);
    /* Optional: heap bytes the state holds beyond state_size (the aggregate cache's
     * byte budget counts them); NULL counts state_size only. */
    size_t (*bytes)(const void *state);
};

/* New events a decide function produces: type (static string) + data (owned). */
struct ag_es_new {
    const char *type;
    json_t *data;
};
struct ag_es_batch {
    struct ag_es_new *v;
    size_t n, cap;
};
AG_EXTERN int ag_es_batch_push(struct ag_es_batch *b, const char *type, json_t *data /* stolen */);
AG_EXTERN void ag_es_batch_free(struct ag_es_batch *b);

/* Decide: look at `state` (at `version`, -1 = new stream) and push events to `out`.
 * Return 0 (no events = nothing to do) or an AG_E* code with `err` filled. */
typedef int (*ag_es_decide_fn)(const void *state, int64_t version, void *ud,
                               struct ag_es_batch *out, struct ag_err *err);
/* Read the state after a command (under the aggregate's lock). */
typedef void (*ag_es_view_fn)(const void *state, int64_t version, void *ud);

struct ag_es_repo_config {
    struct ag_store *store;  /* borrowed */
    uint32_t snapshot_every; /* 0 → 100 */
    uint32_t max_retries;    /* on conflict; 0 → 5 */
    size_t cache_capacity;   /* at most this many aggregates cached; 0 → 100000 */
    size_t cache_bytes;      /* cache budget: entries' estimated bytes; 0 → 64 MiB */
};

/* What the aggregate cache holds now (for metrics). */
struct ag_es_repo_stats {
    size_t entries;     /* cached aggregates */
    size_t bytes;       /* their estimated bytes (entry, name, state, ag_es_type.bytes) */
    size_t budget;      /* cache_bytes in effect */
    uint64_t evictions; /* since creation */
};
struct ag_es_repo;

AG_EXTERN int ag_es_repo_new(const struct ag_es_repo_config *cfg, struct ag_es_repo **out);
AG_EXTERN void ag_es_repo_free(struct ag_es_repo *r);
AG_EXTERN void ag_es_repo_stats(struct ag_es_repo *r, struct ag_es_repo_stats *out);

struct ag_es_result {
    int64_t version;   /* the stream's version after the command */
    size_t appended;   /* events appended (0 for a no-op) */
    uint64_t position; /* global position of the last appended event */
};

/* A command against `stream` of type `type`: `decide` (with `ud`) sees the state
 * and pushes the new events; `metadata` (JSON object text or NULL) is stored with
 * every new event; `view` (optional) sees the state after the command, under the
 * aggregate's lock. */
struct ag_es_cmd {
    const struct ag_es_type *type;
    const char *stream;
    ag_es_decide_fn decide;
    void *ud;
    const char *metadata;
    ag_es_view_fn view;
    void *view_ud;
};
AG_EXTERN int ag_es_execute(struct ag_es_repo *r, const struct ag_es_cmd *cmd,
                            struct ag_es_result *res, struct ag_err *err);
/* ag_es_execute with parts of other streams (each with its expected version)
 * committed in ONE multi-stream append with the command's events, or alone when
 * the command decides nothing; rc 0 <=> they are durable. A conflict on one of
 * them fails the command with AG_ECONFLICT, without retry (it is not the
 * aggregate's); a command that fails (AG_EEXISTS...) appends nothing. `extra` is
 * borrowed for the call; nextra < AG_STORE_MULTI_MAX. */
AG_EXTERN int ag_es_execute_extra(struct ag_es_repo *r, const struct ag_es_cmd *cmd,
                                  const struct ag_append_part *extra, size_t nextra,
                                  struct ag_es_result *res, struct ag_err *err);
/* Asynchronous commands. `done` gets the outcome exactly once: `rc` 0 or an AG_E*
 * code with `err`, `res` as for ag_es_execute. */
typedef void (*ag_es_done_fn)(void *ud, int rc, const struct ag_es_result *res,
                              const struct ag_err *err);
struct ag_es_async {
    struct ag_store_loop *loop; /* where the append completes */
    /* Optional parts of other streams (each with its expected version) committed
     * in ONE multi-stream append with the command's events, or alone when the
     * command decides nothing; rc 0 <=> they are durable. A conflict on one of
     * them fails the command with AG_ECONFLICT, without retry (it is not the
     * aggregate's). Needs ag_store_append_multi_async (AG_EUNSUPPORTED without). */
    const struct ag_append_part *extra;
    size_t nextra; /* at most AG_STORE_MULTI_MAX - 1 */
    ag_es_done_fn done;
    void *ud;
};
/* ag_es_execute without blocking on the append: load (cached), decide, submit
 * with ag_store_append_async / _multi_async; a conflict reloads, re-decides and
 * resubmits (bounded, as the sync path). `cmd`'s strings, `decide`'s `ud` and
 * `a->extra` are borrowed until `done`. `done` runs on `a->loop`'s thread after an
 * append; on the calling thread, before this returns, when nothing reached the
 * store (a decide error, a no-op without extras, the store refusing the
 * request); or on the thread of a synchronous command that led the aggregate's
 * batch. It must not run a synchronous command on the same aggregate. Returns 0,
 * or AG_ENOMEM / AG_EINVAL before anything was queued (then no `done`). */
AG_EXTERN int ag_es_execute_async(struct ag_es_repo *r, const struct ag_es_cmd *cmd,
                                  const struct ag_es_async *a);
/* "<type name>-<id>" into out (cap bytes); AG_ETOOBIG when it does not fit. */
AG_EXTERN int ag_es_stream(const struct ag_es_type *t, const char *id, char *out, size_t cap);
/* The id of `stream` when it is a stream of type `t` ("order-<id>"), into out;
 * AG_EINVAL when it is not one (another prefix) or the id does not fit. */
AG_EXTERN int ag_es_stream_id(const struct ag_es_type *t, const char *stream, size_t len, char *out,
                              size_t cap);
/* Read the current state (caught up from the store) without a command.
 * AG_ENOTFOUND when the stream has no events. */
AG_EXTERN int ag_es_read(struct ag_es_repo *r, const struct ag_es_type *t, const char *stream,
                         ag_es_view_fn view, void *ud, struct ag_err *err);

/* A command over several aggregates, committed as one multi-stream append
 * (ag_store_append_multi): every part's events or none, each part appended with
 * the exact version its state was decided at. Use it when one decision must
 * change two aggregates together (a charge: the account's balance and the
 * order's payment). The repository takes the aggregates' leadership in stream
 * name order (commands on one of them wait meanwhile), catches each state up,
 * calls `decide` with the states, appends, and on a conflict re-decides on fresh
 * states (bounded, as ag_es_execute). Only parts that get events are checked:
 * a decision that relies on a part's state must write to it. */
#define AG_ES_MULTI_MAX 8
struct ag_es_part {
    const struct ag_es_type *type;
    const char *stream;
};
/* states[i] / versions[i] (-1: no stream) belong to parts[i]; push part i's
 * events into outs[i]. Return 0 (no events anywhere = nothing to do) or an error. */
typedef int (*ag_es_decide_multi_fn)(void *const *states, const int64_t *versions, void *ud,
                                     struct ag_es_batch *outs, struct ag_err *err);
struct ag_es_multi_cmd {
    const struct ag_es_part *parts; /* distinct streams, 1..AG_ES_MULTI_MAX */
    size_t nparts;
    ag_es_decide_multi_fn decide;
    void *ud;
    const char *metadata; /* stored with every new event, or NULL */
};
/* res (optional): appended = events over all parts, position = the last one's,
 * version = parts[0]'s stream version. Not on a store loop's thread (it waits for
 * the aggregates' leadership). */
AG_EXTERN int ag_es_execute_multi(struct ag_es_repo *r, const struct ag_es_multi_cmd *cmd,
                                  struct ag_es_result *res, struct ag_err *err);
/* ag_es_execute_multi with parts of other streams (each with its expected
 * version) committed in the SAME multi-stream append as the aggregates' events,
 * or alone when nothing is decided; rc 0 <=> all of it is durable. A conflict on
 * an extra part fails the command with AG_ECONFLICT, without retry (it is not
 * the aggregates'): the caller re-reads what it based that part on. `extra` is
 * borrowed for the call; nparts + nextra <= AG_STORE_MULTI_MAX. */
AG_EXTERN int ag_es_execute_multi_extra(struct ag_es_repo *r, const struct ag_es_multi_cmd *cmd,
                                        const struct ag_append_part *extra, size_t nextra,
                                        struct ag_es_result *res, struct ag_err *err);
/* ag_es_execute_multi without blocking, as ag_es_execute_async is to
 * ag_es_execute: an aggregate led by another command is waited for in its queue
 * (the command goes on in the thread that lets it go), the append is submitted
 * with ag_store_append_multi_async, together with `a->extra` (a saga's step
 * record: the aggregates' events and the extra parts commit in one unit, or the
 * extra parts alone when nothing is decided). A conflict on an aggregate
 * re-decides (bounded); on an extra part it fails with AG_ECONFLICT. `cmd->parts`
 * (types and stream names), `cmd->ud`, `cmd->metadata` and `a->extra` are
 * borrowed until `done`, which runs exactly once, after the aggregates are let
 * go: on `a->loop`'s thread after an append, else on the thread that decided
 * (the caller's, or the one that handed over the lead). nparts + nextra <=
 * AG_STORE_MULTI_MAX. Returns 0, or AG_EINVAL / AG_ENOMEM before anything was
 * queued (then no `done`). */
AG_EXTERN int ag_es_execute_multi_async(struct ag_es_repo *r, const struct ag_es_multi_cmd *cmd,
                                        const struct ag_es_async *a);

/* ---- event schema versions and upcasters (src/es/upcast.c) ---- */

/* Every event type has a schema version: 1 unless the table below says more.
 * The repository writes an event whose type's current version is above 1 with
 * "schemaVersion": N in its metadata (absent = 1, so every event written before
 * versioning is version 1). On read — the repository's fold, the projections'
 * apply, ag_es_event_data for anyone else (the relay's mapping) — an older event
 * is passed through its type's upcasters, version by version, so every reader
 * sees the current shape only. An event newer than this binary knows is an
 * error (AG_EINVAL), never silently misread. */
struct ag_es_upcaster {
    const char *type; /* the event type */
    int from;         /* the version it reads; the data it leaves is version from + 1 */
    /* Rewrite `data` (a JSON object, owned by the caller) in place; `ev` is the
     * stored event (its id, stream, time are there to derive from). 0 or AG_E*. */
    int (*fn)(json_t *data, const struct ag_event *ev);
};
struct ag_es_schema {
    const char *type; /* the event type */
    int version;      /* its current version (types not listed are at 1) */
};
struct ag_es_schemas {
    const struct ag_es_schema *current;
    size_t ncurrent;
    const struct ag_es_upcaster *upcasters;
    size_t nupcasters;
};
/* Install the process's table (borrowed; static storage). Set once at start,
 * before any repository, projection or relay reads; NULL uninstalls. */
AG_EXTERN void ag_es_schemas_set(const struct ag_es_schemas *s);
/* The current version of event type `type` (`len` bytes): 1 when not listed. */
AG_EXTERN int ag_es_schema_version(const char *type, size_t len);
/* True when `type` has upcasters: ag_es_event_data may then rewrite its payload
 * (without, the payload is the stored JSON as it is). */
AG_EXTERN bool ag_es_has_upcasters(const char *type, size_t len);
/* The version `ev` was written with: its metadata's schemaVersion, or 1. */
AG_EXTERN int ag_es_event_version(const struct ag_event *ev);
/* `ev`'s payload parsed and upcast to its type's current version: a new
 * reference, or NULL with `err` set (AG_EJSON unparsable, AG_EINVAL a version
 * this binary does not know, an upcaster's error). */
AG_EXTERN json_t *ag_es_event_data(const struct ag_event *ev, struct ag_err *err);

/* ---- metadata stored once per command and stream (src/es/meta.c) ---- */

/* The metadata an event stores when it is byte-for-byte the next event's of its
 * stream in the same append (the repository writes it; readers never see it
 * through ag_es_event_meta). */
#define AG_ES_META_NEXT "{\"sameAsNext\":1}"
/* True when `ev` stores the marker above. */
AG_EXTERN bool ag_es_meta_is_next(const struct ag_event *ev);
/* `ev`'s whole metadata as a JSON object (a new reference; {} when it has none
 * or it is not an object): the marker resolved to the metadata of the first later
 * event of the stream that stores its own, found among `near` (`nnear` events the
 * caller holds, e.g. the page `ev` came from; may be NULL) or read from `s`. */
AG_EXTERN json_t *ag_es_event_meta(struct ag_store *s, const struct ag_event *ev,
                                   const struct ag_event *near, size_t nnear);

/* ---- projections ---- */

/* Called for each event, inside the page's transaction, with the projection's
 * read-write read model. `data` is the parsed payload. Return 0, or an error to
 * roll back the page: the read model's damage (AG_ECORRUPT) rebuilds it, a failure
 * that can pass (AG_EUNAVAILABLE...) retries the page, anything else stops the
 * projection. */
typedef int (*ag_es_apply_fn)(struct ag_rm *rm, const struct ag_event *ev, const json_t *data,
                              void *ud);

struct ag_projection {
    const char *name;         /* file name and checkpoint key ("orders") */
    const char *schema;       /* SQL run at start (CREATE TABLE IF NOT EXISTS ...) */
    const char *const *types; /* event types it wants (NULL-terminated); NULL = all */
    ag_es_apply_fn apply;
    void *ud;
    /* Optional: called after a page's events were applied, before its checkpoint
     * is committed; an error rolls the page back. For side effects that must be
     * durable before the projection may move past the events (starting sagas). */
    int (*flush)(void *ud);
    /* Optional: called on the runner's thread after a transaction of this
     * projection committed (a page, a parked event replayed or dropped): its rows
     * are visible to queries now. For notifying readers waiting on a row. */
    void (*committed)(void *ud);
    /* Several processes over one read-model database (`agora serve`, issue 14):
     * the projection runs only while its runner holds the read model's lease
     * (ag_rm_lease "projection"), asked again every second while another process
     * holds it; meanwhile (standby) the runner follows the stored checkpoint every
     * 100 ms (stats, ag_projector_wait and `committed` see the holder's progress).
     * Taking the lease resumes from the stored checkpoint, so a holder that dies
     * (its connection with it) is replaced within about a second, and no page is
     * applied twice. */
    bool lease;
    /* Never run here (its context is served by other processes): only follow
     * the stored checkpoint, as a standby does. */
    bool off;
    /* Optional: called on the runner's thread when it takes the lease, before its
     * first page (the saga starter resumes the sagas it now owns). */
    void (*leased)(void *ud);
    /* No answer waits for this read model's lag (only later reads see it): its
     * pages are paced at AGORA_PROJECTION_BACKGROUND_MS (default 25 ms) instead of
     * AGORA_PROJECTION_BATCH_MS (10 ms), fewer transactions below full load. */
    bool background;
    /* Optional, with `migrate`: the schema this one replaced. A read model made by
     * it (its fingerprint in ag_schema) is converted in place by the SQL script
     * `migrate`, run in one transaction before `schema` (CREATE ... IF NOT EXISTS),
     * so an upgrade keeps the rows and the checkpoint instead of replaying the log
     * into a new file (which answers 503 until it has caught up). Any other schema,
     * or a migration that fails, is dropped and rebuilt from the log as before. */
    const char *prev_schema;
    const char *migrate;
};

struct ag_projector;

struct ag_projection_stats {
    const char *name;    /* borrowed */
    uint64_t checkpoint; /* next position it will read */
    uint64_t head;       /* events in the store */
    uint64_t lag_events; /* head - checkpoint */
    double lag_seconds;  /* age of the oldest unprojected event (0 when caught up) */
    uint64_t applied;    /* events applied since start */
    bool failed;         /* stopped on an error */
    bool unreachable;    /* its read model's database cannot be reached (it retries) */
    char error[512];     /* the error, when failed or unreachable */
    uint64_t parked;     /* events parked (unresolved) in its dead-letter list */
    bool standby;        /* lease or off: another process runs it now */
};

/* Start one thread per projection. `dir` is the read models' URI ("sqlite:<dir>", or
 * a directory, created).
 * `projs` is borrowed and must outlive the projector. */
AG_EXTERN int ag_projector_start(struct ag_store *s, const char *dir,
                                 const struct ag_projection *projs, size_t n,
                                 struct ag_projector **out, struct ag_err *err);
AG_EXTERN void ag_projector_stop(struct ag_projector *p);
AG_EXTERN size_t ag_projector_count(const struct ag_projector *p);
AG_EXTERN void ag_projector_stats(struct ag_projector *p, size_t i,
                                  struct ag_projection_stats *out);
/* Wait until every projection has consumed everything the store holds now
 * (every shard's head): a read-your-writes barrier that works on sharded stores.
 * AG_ETIMEDOUT after `timeout_ms`. */
AG_EXTERN int ag_projector_wait_head(struct ag_projector *o, int timeout_ms);
/* The same for projection `i` alone (the read model a read missed a row in). */
AG_EXTERN int ag_projector_wait_head_of(struct ag_projector *o, size_t i, int timeout_ms);
/* Wait until every projection has passed `position` (i.e. checkpoint > position)
 * or `timeout_ms` ran out (AG_ETIMEDOUT). */
AG_EXTERN int ag_projector_wait(struct ag_projector *p, uint64_t position, int timeout_ms);
/* Lowest checkpoint over all projections (what reads are consistent with). */
AG_EXTERN uint64_t ag_projector_position(struct ag_projector *p);

/* Parked events (src/es/projector.c). An event the projection fails on (not
 * the read model: that is retried or rebuilt) is parked with its error; later
 * events of its stream wait behind it; other streams flow. A parked event's id
 * is its position in $all.
 * ag_projector_parked appends to the JSON array `out` the parked events of
 * projection `i` ({"id","projection","stream","type","error","waiting","state"};
 * `all`: resolved ones too). Replay applies event `position` again and then the
 * ones waiting behind it, in order, until one fails; drop resolves it without
 * applying it (and releases the ones behind a head the same way). `*released`
 * (optional) counts the waiting events then applied. AG_ENOTFOUND (no such
 * parked event), AG_ECONFLICT (resolved already, or replaying one that waits
 * behind another), the apply's error when it still fails (it stays parked with
 * the new error), AG_ETIMEDOUT. Any thread; served by the runner between pages. */
AG_EXTERN int ag_projector_parked(struct ag_projector *p, size_t i, bool all, json_t *out,
                                  struct ag_err *err);
AG_EXTERN int ag_projector_replay(struct ag_projector *p, size_t i, uint64_t position,
                                  size_t *released, struct ag_err *err);
AG_EXTERN int ag_projector_drop(struct ag_projector *p, size_t i, uint64_t position,
                                size_t *released, struct ag_err *err);

/* Rebuild one projection from position 0 synchronously (the runner must not be
 * running on that directory). `progress` (optional) is called with done/total. */
AG_EXTERN int ag_projection_rebuild(struct ag_store *s, const char *dir,
                                    const struct ag_projection *proj,
                                    void (*progress)(void *ud, uint64_t done, uint64_t total),
                                    void *ud, struct ag_err *err);

/* Read models that are damaged (see src/es/projector.c): a query that got
 * AG_ECORRUPT from projection `i`'s read model reports it; the
 * runner sets the file aside and replays the log into a new one, in the
 * background. ag_projector_usable is false from the report until the new file
 * has caught up (answer 503 meanwhile); `generation` (OUT, optional) changes each
 * time the file is replaced, so a query handle opened on an older generation must
 * be reopened. */
AG_EXTERN void ag_projector_report_damage(struct ag_projector *p, size_t i, const char *why);
AG_EXTERN bool ag_projector_usable(struct ag_projector *p, size_t i, uint64_t *generation);

/* Inbox for idempotent consumers: returns 1 when `consumer` already saw `event_id`
 * (skip it), 0 when it is new (and now recorded), or an error. Use inside the
 * consumer's transaction. */
AG_EXTERN int ag_es_inbox_seen(struct ag_rm *rm, const char *consumer,
                               const struct ag_uuid *event_id);

#endif
