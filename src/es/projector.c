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
 *
 * Damaged read models. A read model is derived data, so damage is repaired, never
 * served: at start every database gets `PRAGMA quick_check`; a file that is not a
 * database or fails the check is renamed `<name>.db.corrupt-<time>` (kept, never
 * deleted) and the projection replays the log into a new file. At run time an
 * SQLITE_CORRUPT/SQLITE_NOTADB from the projection's own writes, or reported by a
 * query (ag_projector_report_damage), does the same on the runner's thread. From
 * the set-aside until the new file has caught up with the log's head as it was
 * then, ag_projector_usable() says false (queries answer 503), and each set-aside
 * bumps the read model's generation so query handles on the old file are reopened.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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
    bool damaged;        /* damage reported; the runner sets the file aside */
    char damage[256];    /* what was seen, for the log */
    bool rebuilding;     /* replaying into a new file: not usable for queries */
    uint64_t target;     /* rebuilt once checkpoint >= target (the head at set-aside) */
    uint64_t generation; /* bumped on each set-aside: query handles reopen */
};

struct ag_projector {
    struct ag_store *store;
    pthread_mutex_t lock;
    pthread_cond_t moved; /* a checkpoint advanced */
    bool stopping;
    size_t n;
    struct runner *r;
    char dir[1024]; /* the read-model directory */
};

static const char base_schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS ag_checkpoint(name TEXT PRIMARY KEY, position INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS ag_inbox(consumer TEXT NOT NULL, event_id BLOB NOT NULL,"
    " PRIMARY KEY(consumer, event_id)) WITHOUT ROWID;";

static bool is_damage(int sqlite_code)
{
    int c = sqlite_code & 0xff;
    return c == SQLITE_CORRUPT || c == SQLITE_NOTADB;
}

/* A read model is derived data: when its file is damaged, keep it aside (nothing
 * is deleted) and let the projection rebuild it from the log. The WAL and shared
 * memory files of the old database go with it (their frames belong to it). */
static bool set_aside(const char *path, const char *why)
{
    char aside[1100];
    snprintf(aside, sizeof aside, "%s.corrupt-%lld", path, (long long)time(NULL));
    for (int n = 1; access(aside, F_OK) == 0 && n < 100; n++)
        snprintf(aside, sizeof aside, "%s.corrupt-%lld.%d", path, (long long)time(NULL), n);
    if (rename(path, aside) != 0) return false;
    for (const char *sfx = "-wal"; sfx; sfx = sfx[1] == 'w' ? "-shm" : NULL) {
        char side[1100];
        snprintf(side, sizeof side, "%s%s", path, sfx);
        remove(side);
    }
    AG_WARN("projection.corrupt_rebuilding", AG_LS("file", path), AG_LS("kept_as", aside),
            AG_LS("error", why));
    return true;
}

/* PRAGMA quick_check: NULL when the database is sound, else what is wrong (static). */
static const char *quick_check(sqlite3 *db, char *buf, size_t n)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA quick_check(1)", -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(st, 0);
        bool ok = t && strcmp(t, "ok") == 0;
        if (!ok) snprintf(buf, n, "quick_check: %s", t ? t : "?");
        sqlite3_finalize(st);
        return ok ? NULL : buf;
    }
    snprintf(buf, n, "quick_check: %s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return is_damage(rc) ? buf : NULL; /* SQLITE_BUSY and the like are not damage */
}

static int db_open_once(const char *path, const struct ag_projection *p, sqlite3 **db, bool *retry,
                        struct ag_err *err);

/* Open (or create) a projection's database; `set_aside_out` (optional) tells
 * whether a damaged file was set aside, i.e. the projection starts from zero. */
static int db_open(const char *dir, const struct ag_projection *p, sqlite3 **db,
                   bool *set_aside_out, struct ag_err *err)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.db", dir, p->name);
    bool retry = false;
    int rc = db_open_once(path, p, db, &retry, err);
    if (retry) rc = db_open_once(path, p, db, &retry, err);
    if (set_aside_out) *set_aside_out = retry;
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
    char *msg = NULL, why[300];
    const char *bad = quick_check(*db, why, sizeof why);
    if (bad) {
        int rc = ag_err_set(err, AG_ECORRUPT, "%s: %s", path, bad);
        sqlite3_close(*db);
        *db = NULL;
        *retry = !*retry && set_aside(path, bad);
        return rc;
    }
    if (sqlite3_exec(*db, base_schema, NULL, NULL, &msg) != SQLITE_OK ||
        (p->schema && sqlite3_exec(*db, p->schema, NULL, NULL, &msg) != SQLITE_OK)) {
        int rc = ag_err_set(err, AG_EIO, "%s: schema: %s", path, msg ? msg : "?");
        sqlite3_free(msg);
        bool damaged = is_damage(sqlite3_errcode(*db));
        snprintf(why, sizeof why, "%s", sqlite3_errmsg(*db));
        sqlite3_close(*db);
        *db = NULL;
        *retry = !*retry && damaged && set_aside(path, why);
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
        return is_damage(sqlite3_errcode(db)) ? AG_ECORRUPT : sql_outcome(db, rc, err);
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
        bool damaged = is_damage(sqlite3_errcode(db));
        if (!rc) rc = ag_err_set(err, AG_EIO, "commit: %s", sqlite3_errmsg(db));
        rc = damaged ? AG_ECORRUPT : sql_outcome(db, rc, err);
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
    if (r->rebuilding && next >= r->target) {
        r->rebuilding = false;
        AG_INFO("projection.rebuilt", AG_LS("projection", r->proj->name),
                AG_LU("events", (unsigned long long)next));
    }
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

/* The damage reported for `r` (by a query or by its own write), or NULL. */
static bool take_damage(struct runner *r, char *why, size_t n)
{
    pthread_mutex_lock(&r->owner->lock);
    bool d = r->damaged;
    if (d) snprintf(why, n, "%s", r->damage);
    pthread_mutex_unlock(&r->owner->lock);
    return d;
}

/* Set the damaged file aside, start a new one and replay the log into it from
 * position 0 (the subscription is replaced). */
static int rebuild_in_place(struct runner *r, struct ag_store_sub **sub, const char *why,
                            struct ag_err *err)
{
    struct ag_projector *o = r->owner;
    char path[1100];
    snprintf(path, sizeof path, "%s/%s.db", o->dir, r->proj->name);
    ag_es_db_close(r->db, r->proj->name);
    r->db = NULL;
    struct ag_store_stats st;
    ag_store_stats(o->store, &st);
    pthread_mutex_lock(&o->lock);
    r->rebuilding = true;
    r->target = st.events;
    r->generation++;
    r->checkpoint = 0;
    pthread_mutex_unlock(&o->lock);
    if (!set_aside(path, why)) return ag_err_set(err, AG_EIO, "%s: cannot set it aside", path);
    int rc = db_open(o->dir, r->proj, &r->db, NULL, err);
    if (rc) return rc;
    ag_store_sub_free(*sub);
    *sub = NULL;
    if ((rc = ag_store_subscribe(o->store, NULL, 0, 0, sub, err))) return rc;
    pthread_mutex_lock(&o->lock);
    r->damaged = false;
    pthread_mutex_unlock(&o->lock);
    return 0;
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
        char why[256];
        if (take_damage(r, why, sizeof why)) {
            if (rebuild_in_place(r, &sub, why, &err)) {
                fail(r, &err);
                break;
            }
            continue;
        }
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
        if (rc == AG_ECORRUPT) { /* the page was rolled back; replay it into a new file */
            ag_projector_report_damage(r->owner, (size_t)(r - r->owner->r), err.msg);
            continue;
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

void ag_projector_report_damage(struct ag_projector *o, size_t i, const char *why)
{
    if (!o || i >= o->n) return;
    pthread_mutex_lock(&o->lock);
    struct runner *r = &o->r[i];
    if (!r->damaged && !r->rebuilding) {
        r->damaged = true;
        snprintf(r->damage, sizeof r->damage, "%s", why ? why : "database disk image is malformed");
    }
    pthread_mutex_unlock(&o->lock);
}

bool ag_projector_usable(struct ag_projector *o, size_t i, uint64_t *generation)
{
    if (!o || i >= o->n) return false;
    pthread_mutex_lock(&o->lock);
    struct runner *r = &o->r[i];
    bool ok = !r->damaged && !r->rebuilding;
    if (generation) *generation = r->generation;
    pthread_mutex_unlock(&o->lock);
    return ok;
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
    snprintf(o->dir, sizeof o->dir, "%s", dir);
    pthread_mutex_init(&o->lock, NULL);
    ag_cond_init_mono(&o->moved); /* waits are durations: monotonic */
    struct ag_store_stats st;
    ag_store_stats(s, &st);
    for (size_t i = 0; i < n && !rc; i++) {
        struct runner *r = &o->r[i];
        r->owner = o;
        r->proj = &projs[i];
        bool fresh = false;
        if ((rc = db_open(dir, r->proj, &r->db, &fresh, err))) break;
        r->checkpoint = load_checkpoint(r->db, r->proj->name);
        r->rebuilding = fresh && st.events > 0; /* replaying the log into a new file */
        r->target = st.events;
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
        ag_es_db_close(o->r[i].db, o->r[i].proj->name);
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
    ag_deadline_mono_in_ms(&ts, timeout_ms);
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
    if ((rc = db_open(dir, proj, &db, NULL, err))) return rc;
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
    ag_es_db_close(db, proj->name);
    return rc;
}

void ag_es_db_close(sqlite3 *db, const char *what)
{
    if (!db) return;
    for (sqlite3_stmt *st; (st = sqlite3_next_stmt(db, NULL));) sqlite3_finalize(st);
    if (sqlite3_close(db) != SQLITE_OK) /* cannot happen with every statement finalized */
        AG_WARN("projection.close_failed", AG_LS("database", what),
                AG_LS("error", sqlite3_errmsg(db)));
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
