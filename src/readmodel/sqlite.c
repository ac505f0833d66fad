/*
 * The SQLite adapter of the read-model port: read model `name` at `sqlite:<dir>` is
 * the file `<dir>/<name>.db`.
 *
 * Connections. Read-write: SQLITE_OPEN_NOMUTEX (one thread), WAL journal,
 * synchronous=NORMAL (a read model is derived data: a power cut may lose the last
 * pages, never corrupt the file, and the checkpoint goes back with them).
 * Read-only: SQLITE_OPEN_FULLMUTEX, so one handle serves every query thread. Both
 * wait up to 5 s on a lock (busy timeout).
 *
 * Damage. Opening read-write runs `PRAGMA quick_check(1)` first; a file that is
 * not a database or fails the check is AG_ECORRUPT (nothing is changed), and
 * `set_aside` renames it `<name>.db.corrupt-<time>` (kept, never deleted; its -wal
 * and -shm go, their frames belong to it). Any statement's SQLITE_CORRUPT or
 * SQLITE_NOTADB is AG_ECORRUPT; SQLITE_FULL, IOERR, BUSY, LOCKED and CANTOPEN are
 * AG_EUNAVAILABLE (they can pass); the rest AG_EIO, always with sqlite3_errmsg.
 *
 * Statement cache. Prepared statements are kept per handle in a small open-
 * addressed table keyed by the SQL text (hash + strcmp), reset and unbound after
 * each call. A statement in use (a query whose row callback runs the same SQL, or
 * another thread on a shared read-only handle) is not shared: the second caller
 * takes another cached copy of the same SQL, or prepares one into a free slot
 * (so N query threads end up with N copies, instead of preparing a one-off per
 * call); only a full table means a one-off statement, finalized after the call.
 * BEGIN IMMEDIATE and COMMIT are cached statements too. Parameters are bound SQLITE_STATIC: they
 * are borrowed for the call and unbound before it returns.
 */
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "readmodel/internal.h"

#define SLOTS 128 /* statements cached per handle; more are prepared per call */

struct slot {
    uint64_t hash;    /* of sql */
    char *sql;        /* owned copy; NULL: free slot */
    sqlite3_stmt *st; /* prepared */
    bool busy;        /* handed out to a call */
};

struct sq {
    struct ag_rm base; /* must be first */
    sqlite3 *db;
    pthread_mutex_t lock; /* the slots */
    struct slot slots[SLOTS];
    char path[1024]; /* for messages */
};

struct sq_row {
    struct ag_rm_row base; /* must be first */
    sqlite3_stmt *st;
};

static bool is_damage(int rc)
{
    int c = rc & 0xff;
    return c == SQLITE_CORRUPT || c == SQLITE_NOTADB;
}

static int map_code(int rc)
{
    int c = rc & 0xff;
    if (is_damage(rc)) return AG_ECORRUPT;
    if (c == SQLITE_FULL || c == SQLITE_IOERR || c == SQLITE_BUSY || c == SQLITE_LOCKED ||
        c == SQLITE_CANTOPEN)
        return AG_EUNAVAILABLE;
    return AG_EIO;
}

static int failed(struct sq *s, int rc, struct ag_err *err)
{
    return ag__rm_outcome(&s->base, map_code(rc), sqlite3_errmsg(s->db), err);
}

static int done(struct sq *s)
{
    if (s->base.mode == AG_RM_READWRITE && s->base.last_code)
        ag__rm_outcome(&s->base, 0, NULL, NULL);
    return 0;
}

/* ---- the statement cache ---- */

/* A prepared statement for `sql` into *st; *slot is its cache slot or -1 (a
 * one-off: finalize it after use). Returns an SQLite code. */
static int acquire(struct sq *s, const char *sql, int *slot, sqlite3_stmt **st)
{
    size_t len = strlen(sql);
    uint64_t h = ag_xxh3(sql, len);
    int free_slot = -1;
    *slot = -1;
    pthread_mutex_lock(&s->lock);
    for (size_t k = 0; k < SLOTS; k++) {
        size_t i = (size_t)((h + k) % SLOTS);
        struct slot *e = &s->slots[i];
        if (!e->sql) {
            free_slot = (int)i;
            break;
        }
        if (e->hash == h && strcmp(e->sql, sql) == 0) {
            if (e->busy) continue; /* in use: another copy, or a new one in a free slot */
            e->busy = true;
            *slot = (int)i;
            *st = e->st;
            pthread_mutex_unlock(&s->lock);
            return SQLITE_OK;
        }
    }
    char *copy = NULL;
    if (free_slot >= 0 && (copy = ag_malloc(len + 1))) {
        memcpy(copy, sql, len + 1);
        s->slots[free_slot] = (struct slot){.hash = h, .sql = copy, .busy = true};
    }
    pthread_mutex_unlock(&s->lock);
    int rc = sqlite3_prepare_v2(s->db, sql, (int)len, st, NULL);
    if (!copy) return rc;
    pthread_mutex_lock(&s->lock);
    if (rc == SQLITE_OK) {
        s->slots[free_slot].st = *st;
        *slot = free_slot;
    } else { /* give the slot back */
        s->slots[free_slot] = (struct slot){0};
        ag_free(copy);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static void release(struct sq *s, int slot, sqlite3_stmt *st)
{
    if (slot < 0) {
        sqlite3_finalize(st);
        return;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    pthread_mutex_lock(&s->lock);
    s->slots[slot].busy = false;
    pthread_mutex_unlock(&s->lock);
}

static int bind(sqlite3_stmt *st, const struct ag_rm_arg *args, size_t nargs)
{
    int n = sqlite3_bind_parameter_count(st), rc = SQLITE_OK;
    for (int i = 0; i < n && (size_t)i < nargs && rc == SQLITE_OK; i++) {
        const struct ag_rm_arg *a = &args[i];
        if (a->kind == AG_RM_KIND_INT64)
            rc = sqlite3_bind_int64(st, i + 1, a->i);
        else if (a->kind == AG_RM_KIND_TEXT && a->p)
            rc = sqlite3_bind_text(st, i + 1, a->p, -1, SQLITE_STATIC);
        else if (a->kind == AG_RM_KIND_BLOB && a->p)
            rc = sqlite3_bind_blob(st, i + 1, a->p, (int)a->len, SQLITE_STATIC);
        else
            rc = sqlite3_bind_null(st, i + 1);
    }
    return rc;
}

/* ---- statements ---- */

static int sq_query(struct ag_rm *rm, const char *sql, const struct ag_rm_arg *args, size_t nargs,
                    ag_rm_row_fn row, void *ud, struct ag_err *err)
{
    struct sq *s = (struct sq *)rm;
    sqlite3_stmt *st;
    int slot;
    int rc = acquire(s, sql, &slot, &st);
    if (rc != SQLITE_OK) return failed(s, rc, err);
    rc = bind(st, args, nargs);
    struct sq_row r = {{&ag__rm_sqlite_ops}, st};
    int out = 0;
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!row) {
            rc = SQLITE_OK;
            continue;
        }
        int cb = row(&r.base, ud);
        if (cb) {
            out = cb < 0 ? cb : 0;
            rc = SQLITE_DONE;
            break;
        }
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_DONE)
        out = failed(s, rc, err);
    else if (!out)
        done(s);
    release(s, slot, st);
    return out;
}

static int sq_exec(struct ag_rm *rm, const char *sql, const struct ag_rm_arg *args, size_t nargs,
                   struct ag_err *err)
{
    return sq_query(rm, sql, args, nargs, NULL, NULL, err);
}

static int sq_script(struct ag_rm *rm, const char *sql, struct ag_err *err)
{
    struct sq *s = (struct sq *)rm;
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? done(s) : failed(s, rc, err);
}

static const char *sq_text(const struct ag_rm_row *row, int col)
{
    return (const char *)sqlite3_column_text(((const struct sq_row *)row)->st, col);
}

static int64_t sq_int64(const struct ag_rm_row *row, int col)
{
    return sqlite3_column_int64(((const struct sq_row *)row)->st, col);
}

static bool sq_is_null(const struct ag_rm_row *row, int col)
{
    return sqlite3_column_type(((const struct sq_row *)row)->st, col) == SQLITE_NULL;
}

static bool sq_blob(const struct ag_rm_row *row, int col, void *buf, size_t cap, size_t *len)
{
    sqlite3_stmt *st = ((const struct sq_row *)row)->st;
    if (sqlite3_column_type(st, col) != SQLITE_BLOB) return false;
    const void *b = sqlite3_column_blob(st, col);
    *len = (size_t)sqlite3_column_bytes(st, col);
    if (b) memcpy(buf, b, *len < cap ? *len : cap);
    return true;
}

static int sq_ncols(const struct ag_rm_row *row)
{
    return sqlite3_column_count(((const struct sq_row *)row)->st);
}

/* ---- transactions ---- */

/* BEGIN and COMMIT are cached statements like any other: sqlite3_exec would parse
 * them again for every page a projection applies. */
static int sq_begin(struct ag_rm *rm, struct ag_err *err)
{
    return sq_exec(rm, "BEGIN IMMEDIATE", NULL, 0, err);
}

static int sq_commit(struct ag_rm *rm, struct ag_err *err)
{
    return sq_exec(rm, "COMMIT", NULL, 0, err);
}

static void sq_rollback(struct ag_rm *rm)
{
    struct sq *s = (struct sq *)rm;
    if (!sqlite3_get_autocommit(s->db)) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

/* ---- damage ---- */

/* PRAGMA quick_check: 0 when the database is sound (or the check could not run for
 * a reason that is not damage, such as SQLITE_BUSY), else AG_ECORRUPT. */
static int sq_check(struct ag_rm *rm, struct ag_err *err)
{
    struct sq *s = (struct sq *)rm;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, "PRAGMA quick_check(1)", -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(st, 0);
        int out = t && strcmp(t, "ok") == 0
                      ? 0
                      : ag_err_set(err, AG_ECORRUPT, "quick_check: %s", t ? t : "?");
        sqlite3_finalize(st);
        return out;
    }
    int out =
        is_damage(rc) ? ag_err_set(err, AG_ECORRUPT, "quick_check: %s", sqlite3_errmsg(s->db)) : 0;
    sqlite3_finalize(st);
    return out;
}

static void sq_locate(const char *dir, const char *name, char *out, size_t n)
{
    snprintf(out, n, "%s/%s.db", dir, name);
}

static int sq_set_aside(const char *dir, const char *name, char *kept_as, size_t n,
                        struct ag_err *err)
{
    char path[1024], aside[1100];
    sq_locate(dir, name, path, sizeof path);
    snprintf(aside, sizeof aside, "%s.corrupt-%lld", path, (long long)time(NULL));
    for (int k = 1; access(aside, F_OK) == 0 && k < 100; k++)
        snprintf(aside, sizeof aside, "%s.corrupt-%lld.%d", path, (long long)time(NULL), k);
    if (rename(path, aside) != 0)
        return ag_err_set(err, AG_EIO, "%s: cannot set it aside: %s", path, strerror(errno));
    for (const char *sfx = "-wal"; sfx; sfx = sfx[1] == 'w' ? "-shm" : NULL) {
        char side[1100];
        snprintf(side, sizeof side, "%s%s", path, sfx);
        remove(side);
    }
    if (kept_as) snprintf(kept_as, n, "%s", aside);
    return 0;
}

static int sq_drop(const char *dir, const char *name, struct ag_err *err)
{
    AG_UNUSED(err);
    const char *suffix[] = {".db", ".db-wal", ".db-shm"};
    for (int i = 0; i < 3; i++) {
        char path[1100];
        snprintf(path, sizeof path, "%s/%s%s", dir, name, suffix[i]);
        remove(path);
    }
    return 0;
}

/* ---- open / close ---- */

static void sq_close(struct ag_rm *rm)
{
    struct sq *s = (struct sq *)rm;
    for (size_t i = 0; i < SLOTS; i++) ag_free(s->slots[i].sql);
    /* finalize every statement, cached or not, so the close cannot fail */
    for (sqlite3_stmt *st; s->db && (st = sqlite3_next_stmt(s->db, NULL));) sqlite3_finalize(st);
    if (sqlite3_close(s->db) != SQLITE_OK)
        AG_WARN("projection.close_failed", AG_LS("database", s->path),
                AG_LS("error", sqlite3_errmsg(s->db)));
    pthread_mutex_destroy(&s->lock);
    ag_free(s);
}

/* WAL, synchronous and the checkpoint table, after the check. The WAL is bounded:
 * SQLite checkpoints it (PASSIVE, on commit) once it holds 128 pages (512 KiB) and
 * truncates it to 64 KiB whenever it starts over, so a read model's -wal file
 * stays between 64 and ~600 KiB instead of 4 MiB and up (the default 1000 pages,
 * never truncated: issue 19's soak counted WAL files as much disk as the read
 * models themselves). */
static const char setup[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "PRAGMA wal_autocheckpoint=128;"
    "PRAGMA journal_size_limit=65536;"
    "CREATE TABLE IF NOT EXISTS ag_checkpoint(name TEXT PRIMARY KEY, position INTEGER NOT NULL);";

static int open_rw(struct sq *s, const char *dir, struct ag_err *err)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return ag_err_set(err, AG_EIO, "%s: %s", dir, strerror(errno));
    if (sqlite3_open_v2(s->path, &s->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK)
        return ag_err_set(err, AG_EIO, "%s: %s", s->path,
                          s->db ? sqlite3_errmsg(s->db) : "cannot open");
    sqlite3_busy_timeout(s->db, 5000);
    struct ag_err e;
    ag_err_clear(&e);
    if (sq_check(&s->base, &e)) return ag_err_set(err, AG_ECORRUPT, "%s: %s", s->path, e.msg);
    int rc = sqlite3_exec(s->db, setup, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return ag_err_set(err, is_damage(rc) ? AG_ECORRUPT : AG_EIO, "%s: schema: %s", s->path,
                          sqlite3_errmsg(s->db));
    return 0;
}

static int sq_open(const char *dir, const char *name, enum ag_rm_mode mode, struct ag_rm **out,
                   struct ag_err *err)
{
    struct sq *s = ag_calloc(1, sizeof *s);
    if (!s) return ag_err_set(err, AG_ENOMEM, "out of memory");
    pthread_mutex_init(&s->lock, NULL);
    s->base.mode = mode;
    sq_locate(dir, name, s->path, sizeof s->path);
    int rc = 0;
    if (mode == AG_RM_READWRITE) {
        rc = open_rw(s, dir, err);
    } else if (sqlite3_open_v2(s->path, &s->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_FULLMUTEX,
                               NULL) != SQLITE_OK) {
        rc = ag_err_set(err, AG_EIO, "%s: %s", s->path,
                        s->db ? sqlite3_errmsg(s->db) : "cannot open");
    } else {
        sqlite3_busy_timeout(s->db, 5000);
    }
    if (rc) {
        sq_close(&s->base);
        return rc;
    }
    *out = &s->base;
    return 0;
}

const struct ag_rm_ops ag__rm_sqlite_ops = {
    .scheme = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .locate = sq_locate,
    .set_aside = sq_set_aside,
    .drop = sq_drop,
    .check = sq_check,
    .exec = sq_exec,
    .query = sq_query,
    .script = sq_script,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .text = sq_text,
    .int64 = sq_int64,
    .is_null = sq_is_null,
    .ncols = sq_ncols,
    .blob = sq_blob,
};
