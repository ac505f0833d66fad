/*
 * The projection runner. One thread per projection, each with its own SQLite
 * database (`<dir>/<name>.db`, WAL) and its own subscription to `$all`. A page of
 * events is applied and the checkpoint advanced in one transaction, so after a
 * crash a projection resumes exactly where its last committed page ended: every
 * event is projected exactly once.
 *
 * A page that fails for a reason that can pass — SQLite's full disk, I/O error or
 * lock under the read model, the store not taking writes (AG_EUNAVAILABLE, e.g.
 * sagas that could not be started), a timeout, memory — is rolled back
 * and retried from the checkpoint with backoff (100 ms doubling to 5 s), with one
 * warning when it starts and one info line when it recovers. Any other error
 * (malformed data, a bug) stops the projection: it is then reported as failed.
 *
 * Tables every projection database has:
 *   ag_checkpoint(name TEXT PRIMARY KEY, position INTEGER)  next position to read
 *   ag_inbox(consumer TEXT, event_id BLOB, PRIMARY KEY(consumer, event_id))
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "agora/es.h"

#define PAGE 512

struct runner {
    struct ag_projector *owner;
    const struct ag_projection *proj;
    sqlite3 *db;
    pthread_t thread;
    bool started;
    /* guarded by owner->lock */
    uint64_t checkpoint;
    uint64_t applied;
    double lag_seconds;
    bool failed;
    char error[512];
};

struct ag_projector {
    struct ag_store *store;
    pthread_mutex_t lock;
    pthread_cond_t moved; /* a checkpoint advanced */
    bool stopping;
    size_t n;
    struct runner *r;
};

static const char base_schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS ag_checkpoint(name TEXT PRIMARY KEY, position INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS ag_inbox(consumer TEXT NOT NULL, event_id BLOB NOT NULL,"
    " PRIMARY KEY(consumer, event_id)) WITHOUT ROWID;";

/* A read model is derived data: when its file is not a database any more, keep it
 * aside (nothing is deleted) and let the projection rebuild it from the log. */
static bool set_aside_if_corrupt(sqlite3 *db, const char *path)
{
    int code = sqlite3_errcode(db);
    if (code != SQLITE_NOTADB && code != SQLITE_CORRUPT) return false;
    char aside[1100];
    snprintf(aside, sizeof aside, "%s.corrupt-%lld", path, (long long)time(NULL));
    if (rename(path, aside) != 0) return false;
    for (const char *sfx = "-wal"; sfx; sfx = sfx[1] == 'w' ? "-shm" : NULL) {
        char side[1100];
        snprintf(side, sizeof side, "%s%s", path, sfx);
        remove(side);
    }
    AG_WARN("projection.corrupt_rebuilding", AG_LS("file", path), AG_LS("kept_as", aside),
            AG_LS("error", sqlite3_errmsg(db)));
    return true;
}

static int db_open_once(const char *path, const struct ag_projection *p, sqlite3 **db, bool *retry,
                        struct ag_err *err);

static int db_open(const char *dir, const struct ag_projection *p, sqlite3 **db, struct ag_err *err)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.db", dir, p->name);
    bool retry = false;
    int rc = db_open_once(path, p, db, &retry, err);
    if (rc && retry) rc = db_open_once(path, p, db, &retry, err);
    return rc;
}

static int db_open_once(const char *path, const struct ag_projection *p, sqlite3 **db, bool *retry,
                        struct ag_err *err)
{
    if (sqlite3_open_v2(path, db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        int rc = ag_err_set(err, AG_EIO, "%s: %s", path, *db ? sqlite3_errmsg(*db) : "cannot open");
        sqlite3_close(*db);
        *db = NULL;
        return rc;
    }
    sqlite3_busy_timeout(*db, 5000);
    char *msg = NULL;
    if (sqlite3_exec(*db, base_schema, NULL, NULL, &msg) != SQLITE_OK ||
        (p->schema && sqlite3_exec(*db, p->schema, NULL, NULL, &msg) != SQLITE_OK)) {
        int rc = ag_err_set(err, AG_EIO, "%s: schema: %s", path, msg ? msg : "?");
        sqlite3_free(msg);
        *retry = !*retry && set_aside_if_corrupt(*db, path);
        sqlite3_close(*db);
        *db = NULL;
        return rc;
    }
    return 0;
}

static uint64_t load_checkpoint(sqlite3 *db, const char *name)
{
    sqlite3_stmt *st;
    uint64_t pos = 0;
    if (sqlite3_prepare_v2(db, "SELECT position FROM ag_checkpoint WHERE name=?", -1, &st, NULL) !=
        SQLITE_OK)
        return 0;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) pos = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return pos;
}

static bool wanted(const struct ag_projection *p, const struct ag_event *ev)
{
    if (!p->types) return true;
    for (const char *const *t = p->types; *t; t++)
        if (strlen(*t) == ev->type_len && memcmp(*t, ev->type, ev->type_len) == 0) return true;
    return false;
}

/* An I/O failure of the read model that can pass (a full disk, an I/O error, a
 * lock) is AG_EUNAVAILABLE: the page is retried. Call before ROLLBACK. */
static int sql_outcome(sqlite3 *db, int rc, struct ag_err *err)
{
    int c = sqlite3_errcode(db) & 0xff;
    if (rc != AG_EIO || (c != SQLITE_FULL && c != SQLITE_IOERR && c != SQLITE_BUSY &&
                         c != SQLITE_LOCKED && c != SQLITE_CANTOPEN))
        return rc;
    if (err) err->code = AG_EUNAVAILABLE;
    return AG_EUNAVAILABLE;
}

/* Apply one page and move the checkpoint, in one transaction. */
static int apply_page(sqlite3 *db, const struct ag_projection *p, const struct ag_event_page *pg,
                      uint64_t next, struct ag_err *err)
{
    char *msg = NULL;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK) {
        int rc = ag_err_set(err, AG_EIO, "begin: %s", msg ? msg : "?");
        sqlite3_free(msg);
        return sql_outcome(db, rc, err);
    }
    int rc = 0;
    for (size_t i = 0; i < pg->count && !rc; i++) {
        const struct ag_event *ev = &pg->events[i];
        if (!wanted(p, ev)) continue;
        json_error_t je;
        json_t *data = json_loadb(ev->data, ev->data_len, JSON_DECODE_ANY, &je);
        rc = data ? p->apply(db, ev, data, p->ud) : AG_EJSON;
        if (rc)
            ag_err_set(err, rc, "position %llu (%.*s): %s%s%s", (unsigned long long)ev->position,
                       (int)ev->type_len, ev->type, ag_strerror(rc),
                       sqlite3_errcode(db) != SQLITE_OK ? "; sqlite: " : "",
                       sqlite3_errcode(db) != SQLITE_OK ? sqlite3_errmsg(db) : "");
        json_decref(data);
    }
    if (!rc && p->flush && (rc = p->flush(p->ud)))
        ag_err_set(err, rc, "flushing the page's side effects: %s", ag_strerror(rc));
    sqlite3_stmt *st = NULL;
    if (!rc && sqlite3_prepare_v2(db,
                                  "INSERT INTO ag_checkpoint(name, position) VALUES(?, ?) "
                                  "ON CONFLICT(name) DO UPDATE SET position=excluded.position",
                                  -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, p->name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)next);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = ag_err_set(err, AG_EIO, "checkpoint: %s", sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
    if (rc || sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        if (!rc) rc = ag_err_set(err, AG_EIO, "commit: %s", sqlite3_errmsg(db));
        rc = sql_outcome(db, rc, err);
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void publish(struct runner *r, uint64_t next, size_t applied, double lag)
{
    struct ag_projector *o = r->owner;
    pthread_mutex_lock(&o->lock);
    r->checkpoint = next;
    r->applied += applied;
    r->lag_seconds = lag;
    pthread_cond_broadcast(&o->moved);
    pthread_mutex_unlock(&o->lock);
}

static bool stopping(struct ag_projector *o)
{
    pthread_mutex_lock(&o->lock);
    bool s = o->stopping;
    pthread_mutex_unlock(&o->lock);
    return s;
}

static void fail(struct runner *r, const struct ag_err *err)
{
    pthread_mutex_lock(&r->owner->lock);
    r->failed = true;
    snprintf(r->error, sizeof r->error, "%s", err->msg);
    pthread_cond_broadcast(&r->owner->moved);
    pthread_mutex_unlock(&r->owner->lock);
    AG_ERROR("projection.failed", AG_LS("projection", r->proj->name), AG_LS("error", err->msg));
}

static bool transient(int rc)
{
    return rc == AG_EUNAVAILABLE || rc == AG_ETIMEDOUT || rc == AG_ENOMEM;
}

/* After a transient failure: wait (interruptibly) and read again from the last
 * committed checkpoint. False when stopping or the subscription cannot be made. */
static bool retry_page(struct runner *r, struct ag_store_sub **sub, uint64_t *backoff_ms,
                       struct ag_err *err)
{
    if (!*backoff_ms)
        AG_WARN("projection.retrying", AG_LS("projection", r->proj->name),
                AG_LS("error", err->msg));
    *backoff_ms = *backoff_ms ? (*backoff_ms * 2 > 5000 ? 5000 : *backoff_ms * 2) : 100;
    for (uint64_t t = 0; t < *backoff_ms; t += 50) {
        if (stopping(r->owner)) return false;
        struct timespec ts = {0, 50000000};
        nanosleep(&ts, NULL);
    }
    pthread_mutex_lock(&r->owner->lock);
    uint64_t from = r->checkpoint;
    pthread_mutex_unlock(&r->owner->lock);
    ag_store_sub_free(*sub);
    *sub = NULL;
    return ag_store_subscribe(r->owner->store, NULL, 0, from, sub, err) == 0;
}

static void *runner_main(void *arg)
{
    struct runner *r = arg;
    struct ag_store_sub *sub;
    struct ag_err err;
    uint64_t backoff_ms = 0; /* > 0 while retrying a failed page */
    ag_err_clear(&err);
    if (ag_store_subscribe(r->owner->store, NULL, 0, r->checkpoint, &sub, &err)) {
        fail(r, &err);
        return NULL;
    }
    while (!stopping(r->owner)) {
        struct ag_event_page pg;
        int rc = ag_store_sub_next(sub, PAGE, 200, &pg, &err);
        if (rc == AG_ETIMEDOUT) {
            publish(r, ag_store_sub_checkpoint(sub), 0, 0);
            continue;
        }
        if (rc == AG_ECLOSED) break;
        if (rc == 0) {
            double lag = pg.count ? now_s() - (double)pg.events[0].time_ns / 1e9 : 0;
            rc = apply_page(r->db, r->proj, &pg, ag_store_sub_checkpoint(sub), &err);
            if (!rc) publish(r, ag_store_sub_checkpoint(sub), pg.count, lag < 0 ? 0 : lag);
            ag_event_page_free(&pg);
        }
        if (rc && transient(rc)) {
            if (retry_page(r, &sub, &backoff_ms, &err)) continue;
            if (!sub && !stopping(r->owner)) fail(r, &err);
            break;
        }
        if (rc) {
            fail(r, &err);
            break;
        }
        if (backoff_ms) {
            AG_INFO("projection.recovered", AG_LS("projection", r->proj->name));
            backoff_ms = 0;
        }
    }
    ag_store_sub_free(sub);
    return NULL;
}

static int make_dir(const char *dir, struct ag_err *err)
{
    if (mkdir(dir, 0755) == 0 || errno == EEXIST) return 0;
    return ag_err_set(err, AG_EIO, "%s: %s", dir, strerror(errno));
}

int ag_projector_start(struct ag_store *s, const char *dir, const struct ag_projection *projs,
                       size_t n, struct ag_projector **out, struct ag_err *err)
{
    int rc = make_dir(dir, err);
    if (rc) return rc;
    struct ag_projector *o = ag_calloc(1, sizeof *o);
    if (!o || !(o->r = ag_calloc(n ? n : 1, sizeof *o->r))) {
        ag_free(o);
        return ag_err_set(err, AG_ENOMEM, "out of memory");
    }
    o->store = s;
    o->n = n;
    pthread_mutex_init(&o->lock, NULL);
    pthread_cond_init(&o->moved, NULL);
    for (size_t i = 0; i < n && !rc; i++) {
        struct runner *r = &o->r[i];
        r->owner = o;
        r->proj = &projs[i];
        if ((rc = db_open(dir, r->proj, &r->db, err))) break;
        r->checkpoint = load_checkpoint(r->db, r->proj->name);
    }
    for (size_t i = 0; i < n && !rc; i++) {
        if (pthread_create(&o->r[i].thread, NULL, runner_main, &o->r[i]) != 0)
            rc = ag_err_set(err, AG_ENOMEM, "cannot start projection thread");
        else
            o->r[i].started = true;
    }
    if (rc) {
        ag_projector_stop(o);
        return rc;
    }
    *out = o;
    return 0;
}

void ag_projector_stop(struct ag_projector *o)
{
    if (!o) return;
    pthread_mutex_lock(&o->lock);
    o->stopping = true;
    pthread_mutex_unlock(&o->lock);
    for (size_t i = 0; i < o->n; i++) {
        if (o->r[i].started) pthread_join(o->r[i].thread, NULL);
        sqlite3_close(o->r[i].db);
    }
    pthread_cond_destroy(&o->moved);
    pthread_mutex_destroy(&o->lock);
    ag_free(o->r);
    ag_free(o);
}

size_t ag_projector_count(const struct ag_projector *o)
{
    return o->n;
}

void ag_projector_stats(struct ag_projector *o, size_t i, struct ag_projection_stats *out)
{
    struct ag_store_stats st;
    ag_store_stats(o->store, &st);
    pthread_mutex_lock(&o->lock);
    struct runner *r = &o->r[i];
    *out = (struct ag_projection_stats){
        .name = r->proj->name,
        .checkpoint = r->checkpoint,
        .head = st.events,
        .lag_events = st.events > r->checkpoint ? st.events - r->checkpoint : 0,
        .lag_seconds = st.events > r->checkpoint ? r->lag_seconds : 0,
        .applied = r->applied,
        .failed = r->failed,
    };
    snprintf(out->error, sizeof out->error, "%s", r->error);
    pthread_mutex_unlock(&o->lock);
}

uint64_t ag_projector_position(struct ag_projector *o)
{
    pthread_mutex_lock(&o->lock);
    uint64_t min = UINT64_MAX;
    for (size_t i = 0; i < o->n; i++)
        if (o->r[i].checkpoint < min) min = o->r[i].checkpoint;
    pthread_mutex_unlock(&o->lock);
    return o->n ? min : 0;
}

int ag_projector_wait(struct ag_projector *o, uint64_t position, int timeout_ms)
{
    struct timespec ts;
    ag_deadline_in_ms(&ts, timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&o->lock);
    for (;;) {
        bool done = true;
        for (size_t i = 0; i < o->n; i++)
            if (o->r[i].checkpoint <= position && !o->r[i].failed) done = false;
        if (done) break;
        if (pthread_cond_timedwait(&o->moved, &o->lock, &ts) == ETIMEDOUT) {
            rc = AG_ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&o->lock);
    return rc;
}

int ag_projection_rebuild(struct ag_store *s, const char *dir, const struct ag_projection *proj,
                          void (*progress)(void *ud, uint64_t done, uint64_t total), void *ud,
                          struct ag_err *err)
{
    char path[1024];
    int rc = make_dir(dir, err);
    if (rc) return rc;
    const char *suffix[] = {".db", ".db-wal", ".db-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s%s", dir, proj->name, suffix[i]);
        remove(path);
    }
    sqlite3 *db;
    if ((rc = db_open(dir, proj, &db, err))) return rc;
    struct ag_store_stats st;
    ag_store_stats(s, &st);
    uint64_t from = 0;
    while (!rc) {
        struct ag_event_page pg;
        if ((rc = ag_store_read_all(s, from, AG_READ_FORWARD, 4096, &pg, err))) break;
        bool end = pg.end || pg.count == 0;
        rc = apply_page(db, proj, &pg, pg.next_position, err);
        from = pg.next_position;
        ag_event_page_free(&pg);
        if (progress) progress(ud, from, st.events > from ? st.events : from);
        if (end) break;
    }
    sqlite3_close(db);
    return rc;
}

int ag_projection_open_ro(const char *dir, const char *name, sqlite3 **out)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.db", dir, name);
    if (sqlite3_open_v2(path, out, SQLITE_OPEN_READONLY | SQLITE_OPEN_FULLMUTEX, NULL) !=
        SQLITE_OK) {
        sqlite3_close(*out);
        *out = NULL;
        return AG_EIO;
    }
    sqlite3_busy_timeout(*out, 5000);
    return 0;
}

int ag_es_inbox_seen(sqlite3 *db, const char *consumer, const struct ag_uuid *event_id)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO ag_inbox(consumer, event_id) VALUES(?, ?)",
                           -1, &st, NULL) != SQLITE_OK)
        return AG_EIO;
    sqlite3_bind_text(st, 1, consumer, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, event_id->b, 16, SQLITE_STATIC);
    int rc = sqlite3_step(st) == SQLITE_DONE ? (sqlite3_changes(db) == 0 ? 1 : 0) : AG_EIO;
    sqlite3_finalize(st);
    return rc;
}
