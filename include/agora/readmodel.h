/*
 * The read-model port: a thin SQL interface to one read-model database, so the
 * projections and the queries never see the engine behind it.
 *
 * A read model is opened by URI and name through a registry of adapters chosen by
 * the URI's scheme: `sqlite:<dir>` (or a bare directory) is the SQLite file
 * `<dir>/<name>.db` (src/readmodel/sqlite.c); `postgresql://...` (a libpq URI) is
 * the schema `rm_<name>` of that database (src/readmodel/pg.c). A handle is read-write (the one
 * projection that owns the database: schema, rows, checkpoint) or read-only (the
 * queries).
 *
 * SQL. Statements use numbered placeholders `?1`, `?2`... (SQLite's own; an adapter
 * for another engine translates them, e.g. to `$1`). Parameters are typed values
 * (`struct ag_rm_arg`: text, 64-bit integer, blob or NULL) bound for the call and
 * borrowed only during it; arguments past the statement's highest placeholder are
 * ignored, so one argument list can serve several variants of a statement.
 * Adapters cache prepared statements by SQL text, so passing the same text again
 * costs no new parse.
 *
 * Rows. `ag_rm_query` calls `row` once per result row; the row's columns are read
 * with the accessors below, and the values (strings) they return are valid only
 * until the callback returns. The callback returns 0 to go on, a positive value to
 * stop early (the query then returns 0), or a negative AG_E* code to stop with that
 * code.
 *
 * Transactions and checkpoints. `ag_rm_begin` takes the write lock (SQLite BEGIN
 * IMMEDIATE); the projection's checkpoint (`ag_rm_checkpoint_set`, the table
 * `ag_checkpoint(name, position)` every read-write database has) is written inside
 * the same transaction as the rows it covers, so a crash loses both or neither:
 * exactly-once projection. Inside a transaction an adapter may send `ag_rm_exec`
 * statements ahead without waiting for them (PostgreSQL's pipeline): a failing
 * one is then reported by the next call of that transaction that is not such an
 * exec (a query, the checkpoint, the commit at the latest), and by every call
 * after it until the rollback. A caller that rolls back on any failure, as the
 * projector does, sees no difference.
 *
 * Errors (every call returns 0 or one of these, with the engine's message in err):
 *   AG_ECORRUPT      the database is damaged (SQLite CORRUPT / NOTADB): set it aside
 *                    and rebuild it, never serve it
 *   AG_EUNAVAILABLE  a failure that can pass: disk full, I/O error, busy or locked,
 *                    cannot open the file; retry later
 *   AG_EIO           anything else (bad SQL, a constraint), with the engine's message
 * Opening read-write verifies the database first (SQLite: PRAGMA quick_check) and
 * reports damage as AG_ECORRUPT; `ag_rm_set_aside` then keeps the damaged database
 * under another name so a new one can be built.
 *
 * Threads. A read-write handle belongs to one thread at a time. A read-only handle
 * may be shared by threads (calls are serialised by the adapter as needed).
 * Ownership: `ag_rm_open` returns a handle the caller frees with `ag_rm_close`.
 */
#ifndef AGORA_READMODEL_H
#define AGORA_READMODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agora/error.h"

struct ag_rm;     /* one read-model database */
struct ag_rm_row; /* the current row of a query, during its callback */

enum ag_rm_mode {
    AG_RM_READWRITE, /* the projection's handle: creates the database, writes */
    AG_RM_READONLY,  /* a query handle: never writes; shareable between threads */
};

/* ---- parameters ---- */

enum ag_rm_kind { AG_RM_KIND_NULL, AG_RM_KIND_TEXT, AG_RM_KIND_INT64, AG_RM_KIND_BLOB };

struct ag_rm_arg {
    enum ag_rm_kind kind;
    const char *p; /* TEXT: NUL-terminated string (NULL binds NULL); BLOB: the bytes */
    size_t len;    /* BLOB: bytes at p */
    int64_t i;     /* INT64 */
};

#define AG_RM_TEXT(s) ((struct ag_rm_arg){.kind = AG_RM_KIND_TEXT, .p = (s)})
#define AG_RM_INT(v)  ((struct ag_rm_arg){.kind = AG_RM_KIND_INT64, .i = (int64_t)(v)})
#define AG_RM_NULL    ((struct ag_rm_arg){.kind = AG_RM_KIND_NULL})
#define AG_RM_BLOB(b, n)                                                                           \
    ((struct ag_rm_arg){.kind = AG_RM_KIND_BLOB, .p = (const char *)(b), .len = (n)})

/* ---- opening ---- */

/* Open read model `name` at `uri` ("sqlite:<dir>", or a directory). Read-write
 * creates what is missing (directory, database, ag_checkpoint) after verifying
 * what exists (AG_ECORRUPT when damaged). AG_EINVAL for an unknown scheme. */
AG_EXTERN int ag_rm_open(const char *uri, const char *name, enum ag_rm_mode mode,
                         struct ag_rm **out, struct ag_err *err);
/* Finalize what is cached and close (NULL is a no-op). Closing the last handle of
 * an SQLite database checkpoints its WAL and removes the -wal and -shm files. */
AG_EXTERN void ag_rm_close(struct ag_rm *rm);

/* Where read model `name` at `uri` lives, for logs ("<dir>/<name>.db"). */
AG_EXTERN void ag_rm_locate(const char *uri, const char *name, char *out, size_t n);
/* Keep the (damaged, closed) database aside under a new name (`kept_as`, OUT,
 * optional): for SQLite `<name>.db.corrupt-<time>`, its -wal and -shm removed.
 * Nothing is deleted. */
AG_EXTERN int ag_rm_set_aside(const char *uri, const char *name, char *kept_as, size_t n,
                              struct ag_err *err);
/* Delete read model `name` (to build it again from zero). Missing is not an error. */
AG_EXTERN int ag_rm_drop(const char *uri, const char *name, struct ag_err *err);
/* Verify the database (SQLite: PRAGMA quick_check(1)). 0 when sound or when the
 * check could not run for a reason that is not damage (busy); AG_ECORRUPT with
 * what is wrong otherwise. */
AG_EXTERN int ag_rm_check(struct ag_rm *rm, struct ag_err *err);
/* Can the database be reached now: 0, or AG_EUNAVAILABLE with why (a server that
 * went away; reconnects when it is back). Always 0 for SQLite files. For a
 * projection that is idle, to notice a lost server before its next page. */
AG_EXTERN int ag_rm_ping(struct ag_rm *rm, struct ag_err *err);

/* A lease on this read-write handle's database (issue 14: several `agora serve`
 * instances over one database, one of them doing a projection's or the relay's
 * work): *held (OUT) says whether this handle holds the lease `key` now, taking
 * it when free. PostgreSQL: a session advisory lock on hash(schema ':' key)
 * (pg_try_advisory_lock) on the handle's one connection, so it is released when
 * the holder closes or its connection dies, and a reconnection starts without it;
 * asking again while held costs no round trip (a lost connection is noticed by
 * the next statement or ag_rm_ping). *taken (OUT, optional) is true when this
 * call took it (it was not held before: anything read under an earlier hold may
 * be stale). One key per handle (another while one is held: AG_EINVAL). SQLite
 * (one process per file): always held, never taken. */
AG_EXTERN int ag_rm_lease(struct ag_rm *rm, const char *key, bool *held, bool *taken,
                          struct ag_err *err);

/* ---- statements ---- */

/* Run one statement (rows it returns are discarded). */
AG_EXTERN int ag_rm_exec(struct ag_rm *rm, const char *sql, const struct ag_rm_arg *args,
                         size_t nargs, struct ag_err *err);
/* Run one statement and call `row` for each result row (see the top comment). */
typedef int (*ag_rm_row_fn)(const struct ag_rm_row *row, void *ud);
AG_EXTERN int ag_rm_query(struct ag_rm *rm, const char *sql, const struct ag_rm_arg *args,
                          size_t nargs, ag_rm_row_fn row, void *ud, struct ag_err *err);
/* Run several statements without parameters (a schema). */
AG_EXTERN int ag_rm_script(struct ag_rm *rm, const char *sql, struct ag_err *err);

/* Column `col` (0-based) of the current row: text (NULL for SQL NULL; numbers as
 * their decimal text), a 64-bit integer (0 for NULL), whether it is NULL, and how
 * many columns the row has. */
AG_EXTERN const char *ag_rm_text(const struct ag_rm_row *row, int col);
AG_EXTERN int64_t ag_rm_int64(const struct ag_rm_row *row, int col);
AG_EXTERN bool ag_rm_is_null(const struct ag_rm_row *row, int col);
AG_EXTERN int ag_rm_ncols(const struct ag_rm_row *row);
/* Column `col` as bytes when it is a BLOB (PostgreSQL: bytea): copies up to `cap`
 * bytes to `buf`, sets *len (OUT) to its whole length and returns true; false
 * (nothing copied) for NULL, text or a number. */
AG_EXTERN bool ag_rm_blob(const struct ag_rm_row *row, int col, void *buf, size_t cap, size_t *len);

/* ---- ids ----
 * Ids (orders, customers, sagas, shipments: UUIDs) are stored as 16-byte BLOBs, not
 * as their 36 characters of text (issue 19: half the bytes, in the row and in
 * every index holding it). `ag_rm_id_arg` binds an id: a canonical lower-case UUID
 * as its 16 bytes (in `buf`, which must outlive the call), anything else as TEXT,
 * so an id that is not a UUID is still stored and found as it was given (and an
 * upper-case UUID, never stored, matches nothing, as before). `ag_rm_id` reads an
 * id column back: a 16-byte BLOB as the canonical text formatted in `out`, any
 * other value as ag_rm_text's (NULL for NULL). Ordering: SQLite sorts every TEXT
 * before every BLOB and blobs bytewise, which for UUIDs is their text order; a
 * page cursor bound with ag_rm_id_arg compares like with like. */
#define AG_RM_ID_MAX 37 /* a UUID's text and its NUL */
AG_EXTERN struct ag_rm_arg ag_rm_id_arg(const char *id, uint8_t buf[16]);
AG_EXTERN const char *ag_rm_id(const struct ag_rm_row *row, int col, char out[AG_RM_ID_MAX]);

/* ---- transactions and checkpoints ---- */

AG_EXTERN int ag_rm_begin(struct ag_rm *rm, struct ag_err *err);
AG_EXTERN int ag_rm_commit(struct ag_rm *rm, struct ag_err *err);
/* Undo the open transaction (a no-op without one). */
AG_EXTERN void ag_rm_rollback(struct ag_rm *rm);
/* The position stored for `name` (0 when none) into *pos (OUT). */
AG_EXTERN int ag_rm_checkpoint_get(struct ag_rm *rm, const char *name, uint64_t *pos,
                                   struct ag_err *err);
/* Store `pos` for `name`; call it inside the transaction of the rows it covers. */
AG_EXTERN int ag_rm_checkpoint_set(struct ag_rm *rm, const char *name, uint64_t pos,
                                   struct ag_err *err);

/* The outcome of the most recent call on a read-write handle: 0, or the AG_E* code
 * it failed with and the engine's message ("" when none). For a caller that gets
 * an error back from code it does not own (a projection's apply function) and must
 * know whether the database is damaged or busy. */
AG_EXTERN int ag_rm_last_error(const struct ag_rm *rm);
AG_EXTERN const char *ag_rm_last_message(const struct ag_rm *rm);

#endif
