/*
 * The projection runner. One thread per projection, each with its own read-model
 * database (the port of include/agora/readmodel.h; SQLite: `<dir>/<name>.db`, WAL)
 * and its own subscription to `$all`. A page of
 * events is applied and the checkpoint advanced in one transaction, so after a
 * crash a projection resumes exactly where its last committed page ended: every
 * event is projected exactly once.
 *
 * A page that fails for a reason that can pass — the read model's full disk, I/O
 * error or lock (the port's AG_EUNAVAILABLE), the store not taking writes (AG_EUNAVAILABLE, e.g.
 * sagas that could not be started), a timeout, memory — is rolled back
 * and retried from the checkpoint with backoff (100 ms doubling to 5 s), with one
 * warning when it starts and one info line when it recovers. Any other error
 * (malformed data, a bug) does not stop the projection: the page is rolled back
 * and applied again carefully, each event in its own savepoint, and the event that
 * fails is *parked* (a row of ag_parked with its error, in the page's
 * transaction); later events of the same stream are parked behind it as
 * "waiting" without being applied, other streams flow. The streams held back
 * are kept in memory (loaded from ag_parked at start). ag_projector_replay applies
 * a parked event again (after the fault was fixed) and then the ones waiting
 * behind it, in order, until one fails (it becomes the new head); ag_projector_drop
 * resolves one without applying it (a head releases its line the same way). Both
 * run on the runner's thread, between pages, in one transaction. Only a failure
 * of the careful pass itself (or of a flush) stops the projection: it is then
 * reported as failed.
 *
 * Tables every projection database has:
 *   ag_checkpoint(name TEXT PRIMARY KEY, position INTEGER)  next position to read
 *                                                          (the port's checkpoint)
 *   ag_inbox(consumer TEXT, event_id BLOB, PRIMARY KEY(consumer, event_id))
 *   ag_parked(position INTEGER PRIMARY KEY, stream, type, error, waiting 0|1,
 *             state 'parked'|'replayed'|'dropped')   the dead-letter list
 *
 * A read model on a server (PostgreSQL) that goes away: the page fails with
 * AG_EUNAVAILABLE and is retried as above, from the checkpoint stored in the read
 * model when it can be read again (a COMMIT whose answer was lost may have
 * landed); an idle projection pings its database every second. Either way the
 * projection is "unreachable" (ag_projector_stats) until the database answers,
 * which readiness reports.
 *
 * Damaged read models. A read model is derived data, so damage is repaired, never
 * served: at start every database is verified (the port's read-write open: SQLite's
 * `PRAGMA quick_check`); a damaged one is set aside (`<name>.db.corrupt-<time>`,
 * kept, never deleted) and the projection replays the log into a new one. At run
 * time an AG_ECORRUPT from the projection's own writes, or reported by a query
 * (ag_projector_report_damage), does the same on the runner's thread. From
 * the set-aside until the new file has caught up with the log's head as it was
 * then, ag_projector_usable() says false (queries answer 503), and each set-aside
 * bumps the read model's generation so query handles on the old file are reopened.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agora/es.h"

#define PAGE 512

struct runner {
    struct ag_projector *owner;
    const struct ag_projection *proj;
    struct ag_rm *db; /* read-write */
    pthread_t thread;
    bool started;
    bool unsaved;   /* runner's own: pages skipped (no event wanted) since the cursor was stored */
    bool last_full; /* runner's own: the last page was full (behind: read on at once) */
    /* guarded by owner->lock */
    pthread_cond_t moved;       /* this runner's checkpoint advanced (or it failed, or stop) */
    uint64_t checkpoint;        /* events before `cur` in all (= the position, one shard) */
    struct ag_store_cursor cur; /* next position per shard of the store */
    uint64_t applied;
    double lag_seconds;
    bool failed;
    char error[512];
    bool damaged;        /* damage reported; the runner sets the file aside */
    char damage[256];    /* what was seen, for the log */
    bool rebuilding;     /* replaying into a new file: not usable for queries */
    bool leader;         /* proj->lease or proj->off: holds the lease, applies pages */
    uint64_t target;     /* rebuilt once checkpoint >= target (the head at set-aside) */
    uint64_t generation; /* bumped on each set-aside: query handles reopen */
    bool unreachable;    /* its database did not answer the last page or ping */
    char why[512];       /* what it said */
    double pinged;       /* when an idle runner last pinged it (now_s) */
    uint64_t parked;     /* events parked (unresolved), as last counted */
    /* a replay or drop asked by another thread (guarded by owner->lock) */
    bool req, req_drop, req_done;
    uint64_t req_pos;
    int req_rc;
    size_t req_released;
    char req_err[512];
    /* the runner thread's own: streams with parked events */
    char **held;
    size_t nheld;
    size_t page_parks; /* events parked by the page being applied */
    /* proj->lease or proj->off: when a standby last asked for the lease (now_s) */
    double lease_asked;
    /* the runner thread's own: pacing and skipped pages (see pace, take_page) */
    double unsaved_since;  /* now_s of the first page skipped since the cursor was stored */
    uint64_t last_page_ns; /* mono_ns when the last page was done with */
    uint64_t pace_ns;      /* the least time between two pages (see pace) */
};

struct ag_projector {
    struct ag_store *store;
    pthread_mutex_t lock;
    pthread_cond_t moved; /* a replay/drop request was answered, a runner failed, stop */
    bool stopping;
    size_t n;
    struct runner *r;
    char dir[1024];         /* the read models' URI */
    uint64_t batch_ns;      /* the least time between two pages' transactions (see pace) */
    uint64_t background_ns; /* the same for a background projection */
};

/* What every projection database has besides the port's ag_checkpoint. */
static const char base_schema[] =
    "CREATE TABLE IF NOT EXISTS ag_inbox(consumer TEXT NOT NULL, event_id BLOB NOT NULL,"
    " PRIMARY KEY(consumer, event_id)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS ag_parked(position INTEGER PRIMARY KEY, stream TEXT NOT NULL,"
    " type TEXT NOT NULL, error TEXT NOT NULL, waiting INTEGER NOT NULL,"
    " state TEXT NOT NULL DEFAULT 'parked');";

/* A read model is derived data: when it is damaged, keep it aside (nothing is
 * deleted) and let the projection rebuild it from the log. */
static bool set_aside(const char *uri, const char *name, const char *why)
{
    char where[1100], aside[1100];
    ag_rm_locate(uri, name, where, sizeof where);
    if (ag_rm_set_aside(uri, name, aside, sizeof aside, NULL)) return false;
    AG_WARN("projection.corrupt_rebuilding", AG_LS("file", where), AG_LS("kept_as", aside),
            AG_LS("error", why));
    return true;
}

static int db_open_once(const char *uri, const struct ag_projection *p, struct ag_rm **db,
                        bool *retry, bool *rebuilt, struct ag_err *err);

/* Open (or create) a projection's database; `set_aside_out` (optional) tells
 * whether the projection starts from zero: a damaged file was set aside, or one
 * made by another schema (a fingerprint that differs, see db_schema) dropped. */
static int db_open(const char *uri, const struct ag_projection *p, struct ag_rm **db,
                   bool *set_aside_out, struct ag_err *err)
{
    bool retry = false, rebuilt = false;
    int rc = db_open_once(uri, p, db, &retry, &rebuilt, err);
    if (retry) rc = db_open_once(uri, p, db, &retry, &rebuilt, err);
    if (set_aside_out) *set_aside_out = retry || rebuilt;
    return rc;
}

/* The fingerprint of a projection's tables: XXH3 of the SQL that makes them, in
 * hex, kept in ag_schema (its own table: ag_checkpoint holds positions only). */
static void fingerprint_of(const char *schema, char out[17])
{
    uint64_t h = ag_xxh3(base_schema, sizeof base_schema - 1);
    if (schema) h ^= ag_xxh3(schema, strlen(schema)) * 0x9E3779B97F4A7C15ull;
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

static void schema_fingerprint(const struct ag_projection *p, char out[17])
{
    fingerprint_of(p->schema, out);
}

static const char schema_table[] =
    "CREATE TABLE IF NOT EXISTS ag_schema(name TEXT PRIMARY KEY, fingerprint TEXT NOT NULL);";

static int fingerprint_row(const struct ag_rm_row *row, void *ud)
{
    snprintf(ud, 17, "%s", ag_rm_text(row, 0) ?: "");
    return 1;
}

/* 1: the database was made by this schema (or is new), 0: by another one (a
 * database with a checkpoint and no or another fingerprint), < 0: it did not say. */
static int schema_matches(struct ag_rm *db, const struct ag_projection *p, char have[17],
                          struct ag_err *err)
{
    char want[17];
    have[0] = 0;
    schema_fingerprint(p, want);
    uint64_t pos = 0;
    struct ag_rm_arg arg = AG_RM_TEXT(p->name);
    int rc = ag_rm_script(db, schema_table, err);
    if (!rc)
        rc = ag_rm_query(db, "SELECT fingerprint FROM ag_schema WHERE name=?1", &arg, 1,
                         fingerprint_row, have, err);
    if (!rc && !have[0]) rc = ag_rm_checkpoint_get(db, p->name, &pos, err);
    if (rc) return rc < 0 ? rc : -rc;
    if (have[0]) return strcmp(have, want) == 0;
    return pos == 0; /* empty: new, or made before fingerprints with nothing in it */
}

/* Create the tables and record their fingerprint. */
static int db_schema(struct ag_rm *db, const struct ag_projection *p, struct ag_err *err)
{
    char fp[17];
    schema_fingerprint(p, fp);
    struct ag_rm_arg args[] = {AG_RM_TEXT(p->name), AG_RM_TEXT(fp)};
    int rc = ag_rm_script(db, base_schema, err);
    if (!rc) rc = ag_rm_script(db, schema_table, err);
    if (!rc && p->schema) rc = ag_rm_script(db, p->schema, err);
    if (!rc)
        rc = ag_rm_exec(db,
                        "INSERT INTO ag_schema(name, fingerprint) VALUES(?1, ?2)"
                        " ON CONFLICT(name) DO UPDATE SET fingerprint=excluded.fingerprint",
                        args, 2, err);
    return rc;
}

static double now_s(void);

/* A read model made by p->prev_schema converted by p->migrate, then given the
 * new schema and fingerprint, in one transaction: 1 done, 0 not applicable
 * (another schema, or no migration), < 0 it failed (rolled back). */
static int db_migrate(struct ag_rm *db, const struct ag_projection *p, const char *have,
                      const char *where)
{
    char prev[17];
    if (!p->migrate || !p->prev_schema) return 0;
    fingerprint_of(p->prev_schema, prev);
    if (strcmp(have, prev) != 0) return 0;
    struct ag_err e;
    ag_err_clear(&e);
    double t0 = now_s();
    if (ag_rm_begin(db, &e) || ag_rm_script(db, p->migrate, &e) || db_schema(db, p, &e) ||
        ag_rm_commit(db, &e)) {
        ag_rm_rollback(db);
        AG_WARN("projection.migrate_failed", AG_LS("readmodel", where), AG_LS("error", e.msg));
        return -1;
    }
    AG_INFO("projection.migrated", AG_LS("readmodel", where), AG_LD("seconds", now_s() - t0));
    return 1;
}

static int db_open_once(const char *uri, const struct ag_projection *p, struct ag_rm **db,
                        bool *retry, bool *rebuilt, struct ag_err *err)
{
    struct ag_err e;
    ag_err_clear(&e);
    int rc = ag_rm_open(uri, p->name, AG_RM_READWRITE, db, &e);
    if (rc) { /* damage is found by the open's check (or its setup) */
        ag_err_set(err, rc, "%s", e.msg);
        *retry = !*retry && rc == AG_ECORRUPT && set_aside(uri, p->name, e.msg);
        return rc;
    }
    char have[17];
    int same = schema_matches(*db, p, have, &e);
    if (same == 0) {
        char at[1100];
        ag_rm_locate(uri, p->name, at, sizeof at);
        if (db_migrate(*db, p, have, at) > 0) return 0;
    }
    if (same == 0) { /* another schema: drop it, replay the log into a new one */
        ag_rm_close(*db);
        *db = NULL;
        *rebuilt = true;
        char where[1100];
        ag_rm_locate(uri, p->name, where, sizeof where);
        AG_INFO("projection.schema_changed_rebuilding", AG_LS("readmodel", where));
        if ((rc = ag_rm_drop(uri, p->name, err))) return rc;
        if ((rc = ag_rm_open(uri, p->name, AG_RM_READWRITE, db, err))) return rc;
        if (!(rc = db_schema(*db, p, err))) return 0;
        ag_rm_close(*db);
        *db = NULL;
        return rc;
    }
    if (same >= 0 && db_schema(*db, p, &e) == 0) return 0;
    char where[1100];
    ag_rm_locate(uri, p->name, where, sizeof where);
    rc = ag_err_set(err, AG_EIO, "%s: schema: %s", where, e.msg);
    bool damaged = e.code == AG_ECORRUPT;
    ag_rm_close(*db);
    *db = NULL;
    *retry = !*retry && damaged && set_aside(uri, p->name, e.msg);
    return rc;
}

/* The checkpoint of each shard: row `name` for shard 0 (the only one of an
 * unsharded store, as before), `name#k` for shard k (0 when missing: a shard
 * added since). */
static void load_cursor(struct ag_store *s, struct ag_rm *db, const char *name,
                        struct ag_store_cursor *c)
{
    ag_store_cursor_init(s, c);
    for (uint32_t k = 0; k < c->n; k++) {
        char key[160];
        snprintf(key, sizeof key, k ? "%s#%u" : "%s", name, k);
        uint64_t pos = 0;
        c->next[k] = ag_rm_checkpoint_get(db, key, &pos, NULL) ? 0 : pos;
    }
}

static int save_cursor(struct ag_rm *db, const char *name, const struct ag_store_cursor *c,
                       struct ag_err *err)
{
    int rc = 0;
    for (uint32_t k = 0; k < c->n && !rc; k++) {
        char key[160];
        snprintf(key, sizeof key, k ? "%s#%u" : "%s", name, k);
        rc = ag_rm_checkpoint_set(db, key, c->next[k], err);
    }
    return rc;
}

static bool wanted(const struct ag_projection *p, const struct ag_event *ev)
{
    if (!p->types) return true;
    for (const char *const *t = p->types; *t; t++)
        if (strlen(*t) == ev->type_len && memcmp(*t, ev->type, ev->type_len) == 0) return true;
    return false;
}

/* Whether any event of the page is one the projection applies. */
static bool page_wanted(const struct ag_projection *p, const struct ag_event_page *pg)
{
    for (size_t i = 0; i < pg->count; i++)
        if (wanted(p, &pg->events[i])) return true;
    return false;
}

/* After a failed page: the read model's own failure (the most recent call on it)
 * decides, exactly as when it came back from the port: damage is AG_ECORRUPT (set
 * the file aside), a failure that can pass (a full disk, an I/O error, a lock) is
 * AG_EUNAVAILABLE (retry the page). Call before the rollback. */
static int page_outcome(struct ag_rm *db, int rc, struct ag_err *err)
{
    int last = ag_rm_last_error(db);
    if (last == AG_ECORRUPT) return AG_ECORRUPT;
    if (last != AG_EUNAVAILABLE || (rc != AG_EIO && rc != AG_EUNAVAILABLE)) return rc;
    if (err) err->code = AG_EUNAVAILABLE;
    return AG_EUNAVAILABLE;
}

/* ---- parked events ---- */

static bool transient(int rc)
{
    return rc == AG_EUNAVAILABLE || rc == AG_ETIMEDOUT || rc == AG_ENOMEM;
}

/* A failure that parking the event can get past: not the read model's own. */
static bool parkable(struct ag_rm *db, int rc)
{
    int last = ag_rm_last_error(db);
    return rc && rc != AG_ECORRUPT && !transient(rc) && last != AG_ECORRUPT &&
           last != AG_EUNAVAILABLE;
}

static bool is_held(const struct runner *r, const struct ag_event *ev)
{
    for (size_t i = 0; r && i < r->nheld; i++)
        if (strlen(r->held[i]) == ev->stream_len &&
            memcmp(r->held[i], ev->stream, ev->stream_len) == 0)
            return true;
    return false;
}

static void held_clear(struct runner *r)
{
    for (size_t i = 0; i < r->nheld; i++) ag_free(r->held[i]);
    ag_free(r->held);
    r->held = NULL;
    r->nheld = 0;
}

static int hold(struct runner *r, const char *stream, size_t len)
{
    char **n = ag_realloc(r->held, (r->nheld + 1) * sizeof *n);
    if (!n) return AG_ENOMEM;
    r->held = n;
    if (!(n[r->nheld] = ag_malloc(len + 1))) return AG_ENOMEM;
    memcpy(n[r->nheld], stream, len);
    n[r->nheld++][len] = 0;
    return 0;
}

static int held_row(const struct ag_rm_row *row, void *ud)
{
    const char *st = ag_rm_text(row, 0);
    return st ? hold(ud, st, strlen(st)) : 0;
}

static int count_row(const struct ag_rm_row *row, void *ud)
{
    *(uint64_t *)ud = (uint64_t)ag_rm_int64(row, 0);
    return 0;
}

/* The held streams and the parked count, as the database has them. */
static void reload_held(struct runner *r)
{
    held_clear(r);
    uint64_t n = 0;
    ag_rm_query(r->db, "SELECT DISTINCT stream FROM ag_parked WHERE state = 'parked'", NULL, 0,
                held_row, r, NULL);
    ag_rm_query(r->db, "SELECT count(*) FROM ag_parked WHERE state = 'parked'", NULL, 0, count_row,
                &n, NULL);
    pthread_mutex_lock(&r->owner->lock);
    r->parked = n;
    pthread_mutex_unlock(&r->owner->lock);
}

static int park_row(struct ag_rm *db, const struct ag_event *ev, const char *error, bool waiting,
                    struct ag_err *err)
{
    char stream[AG_STORE_STREAM_MAX + 1], type[AG_STORE_TYPE_MAX + 1];
    snprintf(stream, sizeof stream, "%.*s", (int)ev->stream_len, ev->stream);
    snprintf(type, sizeof type, "%.*s", (int)ev->type_len, ev->type);
    struct ag_rm_arg a[] = {AG_RM_INT(ev->position), AG_RM_TEXT(stream), AG_RM_TEXT(type),
                            AG_RM_TEXT(error), AG_RM_INT(waiting)};
    struct ag_err e;
    if (ag_rm_exec(db,
                   "INSERT INTO ag_parked(position, stream, type, error, waiting, state)"
                   " VALUES(?1, ?2, ?3, ?4, ?5, 'parked') ON CONFLICT DO NOTHING",
                   a, 5, &e))
        return ag_err_set(err, AG_EIO, "parking position %llu: %s",
                          (unsigned long long)ev->position, e.msg);
    if (!waiting)
        AG_WARN("projection.parked", AG_LS("stream", stream), AG_LU("position", ev->position),
                AG_LS("error", error));
    return 0;
}

/* Apply one event in a savepoint: on failure its writes are undone, `err` says why. */
static int apply_one(struct ag_rm *db, const struct ag_projection *p, const struct ag_event *ev,
                     struct ag_err *err)
{
    struct ag_err e;
    if (ag_rm_script(db, "SAVEPOINT ag_event", &e))
        return ag_err_set(err, AG_EIO, "savepoint: %s", e.msg);
    struct ag_err ue;
    json_t *data = ag_es_event_data(ev, &ue); /* upcast to the current shape */
    int rc = data ? p->apply(db, ev, data, p->ud) : ue.code;
    json_decref(data);
    if (rc && !data)
        ag_err_set(err, rc, "%s", ue.msg);
    else if (rc)
        ag_err_set(err, rc, "position %llu (%.*s): %s%s%s", (unsigned long long)ev->position,
                   (int)ev->type_len, ev->type, ag_strerror(rc),
                   ag_rm_last_error(db) ? "; sqlite: " : "", ag_rm_last_message(db));
    if (rc) ag_rm_script(db, "ROLLBACK TO ag_event", NULL);
    ag_rm_script(db, "RELEASE ag_event", NULL);
    return rc;
}

/* Apply the page's events (and flush their side effects) inside the transaction.
 * With a runner, events of held streams are parked as waiting; `careful` applies
 * each event in a savepoint and parks the one that fails. */
static int apply_events(struct ag_rm *db, const struct ag_projection *p,
                        const struct ag_event_page *pg, struct runner *r, bool careful,
                        struct ag_err *err)
{
    int rc = 0;
    for (size_t i = 0; i < pg->count && !rc; i++) {
        const struct ag_event *ev = &pg->events[i];
        if (!wanted(p, ev)) continue;
        if (is_held(r, ev)) {
            rc = park_row(db, ev, "waiting behind a parked event of the same stream", true, err);
            r->page_parks++;
            continue;
        }
        if (careful) {
            rc = apply_one(db, p, ev, err);
            if (rc && parkable(db, rc) && (rc = park_row(db, ev, err->msg, false, err)) == 0) {
                rc = hold(r, ev->stream, ev->stream_len);
                r->page_parks++;
            }
            continue;
        }
        struct ag_err ue;
        json_t *data = ag_es_event_data(ev, &ue); /* upcast to the current shape */
        rc = data ? p->apply(db, ev, data, p->ud) : ue.code;
        if (rc && !data)
            ag_err_set(err, rc, "%s", ue.msg);
        else if (rc)
            ag_err_set(err, rc, "position %llu (%.*s): %s%s%s", (unsigned long long)ev->position,
                       (int)ev->type_len, ev->type, ag_strerror(rc),
                       ag_rm_last_error(db) ? "; sqlite: " : "", ag_rm_last_message(db));
        json_decref(data);
    }
    if (!rc && p->flush && (rc = p->flush(p->ud)))
        ag_err_set(err, rc, "flushing the page's side effects: %s", ag_strerror(rc));
    return rc;
}

/* Apply one page and move the checkpoint, in one transaction. */
static int apply_page_once(struct ag_rm *db, const struct ag_projection *p,
                           const struct ag_event_page *pg, const struct ag_store_cursor *next,
                           struct runner *r, bool careful, struct ag_err *err)
{
    struct ag_err e;
    ag_err_clear(&e);
    if (ag_rm_begin(db, &e)) {
        ag_err_set(err, AG_EIO, "begin: %s", e.msg);
        return page_outcome(db, AG_EIO, err);
    }
    int rc = apply_events(db, p, pg, r, careful, err);
    if (!rc && save_cursor(db, p->name, next, &e))
        rc = ag_err_set(err, AG_EIO, "checkpoint: %s", e.msg);
    if (rc || ag_rm_commit(db, &e)) {
        if (!rc) rc = ag_err_set(err, AG_EIO, "commit: %s", e.msg);
        rc = page_outcome(db, rc, err);
        ag_rm_rollback(db);
        return rc;
    }
    if (p->committed) p->committed(p->ud);
    return 0;
}

/* A page that fails on an event (not on the read model) is applied again
 * carefully, parking what fails (`r` NULL: no parking, as for a rebuild). */
static int apply_page(struct ag_rm *db, const struct ag_projection *p,
                      const struct ag_event_page *pg, const struct ag_store_cursor *next,
                      struct runner *r, struct ag_err *err)
{
    if (r) r->page_parks = 0;
    int rc = apply_page_once(db, p, pg, next, r, false, err);
    if (r && parkable(db, rc)) {
        r->page_parks = 0;
        rc = apply_page_once(db, p, pg, next, r, true, err);
    }
    if (r && r->page_parks) reload_held(r); /* the count, and the set if rolled back */
    return rc;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void publish(struct runner *r, const struct ag_store_cursor *cur, size_t applied, double lag)
{
    struct ag_projector *o = r->owner;
    uint64_t next = ag_store_cursor_sum(cur);
    pthread_mutex_lock(&o->lock);
    r->checkpoint = next;
    r->cur = *cur;
    r->applied += applied;
    r->lag_seconds = lag;
    if (r->rebuilding && next >= r->target) {
        r->rebuilding = false;
        AG_INFO("projection.rebuilt", AG_LS("projection", r->proj->name),
                AG_LU("events", (unsigned long long)next));
    }
    pthread_cond_broadcast(&r->moved); /* only this runner's waiters re-check */
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
    pthread_cond_broadcast(&r->moved);
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
    ag_rm_close(r->db);
    r->db = NULL;
    struct ag_store_stats st;
    ag_store_stats(o->store, &st);
    pthread_mutex_lock(&o->lock);
    r->rebuilding = true;
    r->target = st.events;
    r->generation++;
    r->checkpoint = 0;
    ag_store_cursor_init(o->store, &r->cur);
    pthread_mutex_unlock(&o->lock);
    if (!set_aside(o->dir, r->proj->name, why)) {
        char where[1100];
        ag_rm_locate(o->dir, r->proj->name, where, sizeof where);
        return ag_err_set(err, AG_EIO, "%s: cannot set it aside", where);
    }
    int rc = db_open(o->dir, r->proj, &r->db, NULL, err);
    if (rc) return rc;
    reload_held(r); /* the new file parks from scratch */
    ag_store_sub_free(*sub);
    *sub = NULL;
    if ((rc = ag_store_subscribe_cursor(o->store, NULL, sub, err))) return rc;
    pthread_mutex_lock(&o->lock);
    r->damaged = false;
    pthread_mutex_unlock(&o->lock);
    return 0;
}

/* Whether the read model answers (`err` NULL: it did), logged on each change. */
static void set_reachable(struct runner *r, const struct ag_err *err)
{
    pthread_mutex_lock(&r->owner->lock);
    bool was = r->unreachable;
    r->unreachable = err != NULL;
    if (err) snprintf(r->why, sizeof r->why, "%s", err->msg);
    pthread_mutex_unlock(&r->owner->lock);
    if (err && !was)
        AG_WARN("projection.readmodel_unreachable", AG_LS("projection", r->proj->name),
                AG_LS("error", err->msg));
    else if (!err && was)
        AG_INFO("projection.readmodel_reachable", AG_LS("projection", r->proj->name));
}

/* An idle runner asks its database, once a second, whether it is still there. */
static void ping_when_idle(struct runner *r)
{
    double now = now_s();
    if (now - r->pinged < 1.0) return;
    r->pinged = now;
    struct ag_err e;
    ag_err_clear(&e);
    set_reachable(r, ag_rm_ping(r->db, &e) ? &e : NULL);
}

/* After a transient failure: wait (interruptibly) and read again from the last
 * committed checkpoint (the stored one when the read model answers: a commit
 * whose answer was lost may have landed). False when stopping or the
 * subscription cannot be made. */
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
    uint64_t stored = 0;
    bool known = ag_rm_checkpoint_get(r->db, r->proj->name, &stored, NULL) == 0;
    struct ag_store_cursor from;
    if (known) load_cursor(r->owner->store, r->db, r->proj->name, &from);
    pthread_mutex_lock(&r->owner->lock);
    if (known) r->cur = from, r->checkpoint = ag_store_cursor_sum(&from);
    from = r->cur;
    pthread_mutex_unlock(&r->owner->lock);
    ag_store_sub_free(*sub);
    *sub = NULL;
    return ag_store_subscribe_cursor(r->owner->store, &from, sub, err) == 0;
}

/* ---- replay and drop (on the runner's thread) ---- */

struct parked_row {
    bool found;
    bool waiting;
    char stream[AG_STORE_STREAM_MAX + 1];
    char state[16];
};

static int parked_row_cb(const struct ag_rm_row *row, void *ud)
{
    struct parked_row *pr = ud;
    pr->found = true;
    snprintf(pr->stream, sizeof pr->stream, "%s", ag_rm_text(row, 0) ? ag_rm_text(row, 0) : "");
    pr->waiting = ag_rm_int64(row, 1) != 0;
    snprintf(pr->state, sizeof pr->state, "%s", ag_rm_text(row, 2) ? ag_rm_text(row, 2) : "");
    return 0;
}

struct positions {
    uint64_t *v;
    size_t n;
};

static int position_row(const struct ag_rm_row *row, void *ud)
{
    struct positions *ps = ud;
    uint64_t *n = ag_realloc(ps->v, (ps->n + 1) * sizeof *n);
    if (!n) return AG_ENOMEM;
    ps->v = n;
    ps->v[ps->n++] = (uint64_t)ag_rm_int64(row, 0);
    return 0;
}

/* Apply the event at `pos` again (in a savepoint). */
static int reapply(struct runner *r, uint64_t pos, struct ag_err *err)
{
    struct ag_event_page pg;
    int rc = ag_store_read_all(r->owner->store, pos, AG_READ_FORWARD, 1, &pg, err);
    if (rc) return rc;
    if (pg.count != 1 || pg.events[0].position != pos)
        rc = ag_err_set(err, AG_ENOTFOUND, "no event at position %llu", (unsigned long long)pos);
    else
        rc = apply_one(r->db, r->proj, &pg.events[0], err);
    ag_event_page_free(&pg);
    return rc;
}

static int set_state(struct ag_rm *db, uint64_t pos, const char *state, struct ag_err *err)
{
    struct ag_rm_arg a[] = {AG_RM_TEXT(state), AG_RM_INT(pos)};
    return ag_rm_exec(db, "UPDATE ag_parked SET state = ?1 WHERE position = ?2", a, 2, err);
}

static int set_failed(struct ag_rm *db, uint64_t pos, const char *error, struct ag_err *err)
{
    struct ag_rm_arg a[] = {AG_RM_TEXT(error), AG_RM_INT(pos)};
    return ag_rm_exec(db, "UPDATE ag_parked SET waiting = 0, error = ?1 WHERE position = ?2", a, 2,
                      err);
}

/* The head of `stream` was resolved: apply the waiting ones in order until one
 * fails (it becomes the head). */
static int release_stream(struct runner *r, const char *stream, size_t *released,
                          struct ag_err *err)
{
    struct positions ps = {0};
    struct ag_rm_arg a[] = {AG_RM_TEXT(stream)};
    int rc = ag_rm_query(r->db,
                         "SELECT position FROM ag_parked WHERE stream = ?1 AND state = 'parked'"
                         " ORDER BY position",
                         a, 1, position_row, &ps, err);
    for (size_t i = 0; !rc && i < ps.n; i++) {
        struct ag_err e;
        ag_err_clear(&e);
        if (reapply(r, ps.v[i], &e)) {
            rc = set_failed(r->db, ps.v[i], e.msg, err);
            break;
        }
        if (!(rc = set_state(r->db, ps.v[i], "replayed", err))) (*released)++;
    }
    ag_free(ps.v);
    return rc;
}

static int resolve_parked(struct runner *r, uint64_t pos, bool drop, size_t *released,
                          struct ag_err *err)
{
    struct ag_rm *db = r->db;
    struct parked_row pr = {0};
    struct ag_rm_arg a[] = {AG_RM_INT(pos)};
    int rc = ag_rm_begin(db, err);
    if (rc) return rc;
    rc = ag_rm_query(db, "SELECT stream, waiting, state FROM ag_parked WHERE position = ?1", a, 1,
                     parked_row_cb, &pr, err);
    if (!rc && !pr.found)
        rc = ag_err_set(err, AG_ENOTFOUND, "no parked event at position %llu",
                        (unsigned long long)pos);
    else if (!rc && strcmp(pr.state, "parked") != 0)
        rc = ag_err_set(err, AG_ECONFLICT, "the event at %llu is %s already",
                        (unsigned long long)pos, pr.state);
    else if (!rc && !drop && pr.waiting)
        rc = ag_err_set(err, AG_ECONFLICT,
                        "the event at %llu waits behind an earlier one of %s: replay that",
                        (unsigned long long)pos, pr.stream);
    bool failed_again = false;
    if (!rc && !drop && (rc = reapply(r, pos, err))) failed_again = true;
    if (!rc) rc = set_state(db, pos, drop ? "dropped" : "replayed", err);
    if (!rc && !pr.waiting) rc = release_stream(r, pr.stream, released, err);
    if (!rc && r->proj->flush && (rc = r->proj->flush(r->proj->ud)))
        ag_err_set(err, rc, "flushing side effects: %s", ag_strerror(rc));
    if (rc || ag_rm_commit(db, err)) {
        ag_rm_rollback(db);
        if (failed_again) { /* keep the new error */
            char why[sizeof err->msg];
            snprintf(why, sizeof why, "%s", err->msg);
            set_failed(db, pos, why, NULL);
            ag_err_set(err, rc, "still failing: %s", why);
        }
        reload_held(r);
        return rc ? rc : AG_EIO;
    }
    reload_held(r);
    if (r->proj->committed) r->proj->committed(r->proj->ud);
    return 0;
}

/* Serve a pending replay/drop request, if any. */
static void serve_request(struct runner *r)
{
    struct ag_projector *o = r->owner;
    pthread_mutex_lock(&o->lock);
    bool pending = r->req && !r->req_done;
    uint64_t pos = r->req_pos;
    bool drop = r->req_drop;
    pthread_mutex_unlock(&o->lock);
    if (!pending) return;
    struct ag_err err;
    ag_err_clear(&err);
    size_t released = 0;
    int rc = resolve_parked(r, pos, drop, &released, &err);
    pthread_mutex_lock(&o->lock);
    r->req_rc = rc;
    r->req_released = released;
    snprintf(r->req_err, sizeof r->req_err, "%s", err.msg);
    r->req_done = true;
    pthread_cond_broadcast(&o->moved);
    pthread_mutex_unlock(&o->lock);
}

/* ---- leases (several processes over one read-model database) ---- */

static void set_leader(struct runner *r, bool leader)
{
    pthread_mutex_lock(&r->owner->lock);
    r->leader = leader;
    pthread_mutex_unlock(&r->owner->lock);
}

/* A standby follows the checkpoint the holder stores, so waits and readers see
 * its progress; then naps 100 ms (interruptibly). */
static void follow(struct runner *r)
{
    uint64_t stored = 0;
    struct ag_err e;
    ag_err_clear(&e);
    if (ag_rm_checkpoint_get(r->db, r->proj->name, &stored, &e) == 0) {
        set_reachable(r, NULL);
        struct ag_store_cursor c; /* the holder's checkpoint of every shard */
        load_cursor(r->owner->store, r->db, r->proj->name, &c);
        pthread_mutex_lock(&r->owner->lock);
        bool moved = ag_store_cursor_sum(&c) > r->checkpoint;
        pthread_mutex_unlock(&r->owner->lock);
        if (moved) {
            publish(r, &c, 0, 0);
            if (r->proj->committed) r->proj->committed(r->proj->ud);
        }
    } else {
        set_reachable(r, &e);
    }
    for (int t = 0; t < 2 && !stopping(r->owner); t++) {
        struct timespec ts = {0, 50000000};
        nanosleep(&ts, NULL);
    }
}

/* Whether this runner may apply pages now (no lease needed, or it holds it).
 * Taking the lease resumes from the stored checkpoint (the subscription is
 * made again); a standby follows the holder and asks again every second. */
static bool may_run(struct runner *r, struct ag_store_sub **sub, struct ag_err *err)
{
    const struct ag_projection *p = r->proj;
    if (!p->lease && !p->off) return true;
    double now = now_s();
    bool held = false, taken = false;
    if (!p->off && (r->leader || now - r->lease_asked >= 1.0)) {
        r->lease_asked = now;
        struct ag_err e;
        ag_err_clear(&e);
        if (ag_rm_lease(r->db, "projection", &held, &taken, &e)) set_reachable(r, &e);
    }
    if (held && r->leader && !taken) return true;
    if (!held) {
        if (r->leader) AG_WARN("projection.lease_lost", AG_LS("projection", p->name));
        set_leader(r, false);
        follow(r);
        return false;
    }
    uint64_t stored = 0;
    if (ag_rm_checkpoint_get(r->db, p->name, &stored, err)) return false; /* asked again */
    struct ag_store_cursor c;
    load_cursor(r->owner->store, r->db, p->name, &c);
    pthread_mutex_lock(&r->owner->lock);
    r->cur = c;
    r->checkpoint = ag_store_cursor_sum(&c);
    pthread_mutex_unlock(&r->owner->lock);
    ag_store_sub_free(*sub);
    *sub = NULL;
    if (ag_store_subscribe_cursor(r->owner->store, &c, sub, err)) return false;
    reload_held(r); /* the holder before may have parked events */
    set_leader(r, true);
    AG_INFO("projection.lease_taken", AG_LS("projection", p->name),
            AG_LU("from", (unsigned long long)stored));
    if (p->leased) p->leased(p->ud);
    return true;
}

/* ---- fewer, larger transactions (issue 11) ----
 *
 * A page without any event the projection wants (the products projection during
 * an order rush) is not applied in a transaction of its own: the cursor moves in
 * memory (published, so waits see it) and is stored with the next page that is
 * applied, or within a second, or when the runner idles or stops. A crash in
 * between only makes the runner read those pages again, and skip them again:
 * exactly-once holds. Projections under a lease store every page, since a
 * standby follows the stored checkpoint.
 *
 * Pacing: a runner reads its next page no sooner than `batch_ns` (AGORA_
 * PROJECTION_BATCH_MS, default 10 ms) after the last one, unless that one was
 * full (it is behind). Under load each wake-up then takes the events of several
 * store commits in one transaction instead of one transaction (and one wake-up,
 * one COMMIT) per group commit; an idle runner still takes the first event at
 * once.
 *
 * Background projections (ag_projection.background: no answer waits for them)
 * are paced at AGORA_PROJECTION_BACKGROUND_MS (default 25 ms) instead. Below
 * full load a runner commits once per pace whatever the rate, so at a few
 * hundred orders a second (an open-loop load) these fixed per-transaction costs
 * (the wake-up, the log read, BEGIN/COMMIT, WAL frames, checkpoints) are most
 * of a projection's CPU per order (issue 19); the read models whose lag a
 * client sees (the orders a poll waits on, the saga starter) keep the short
 * pace. A full page is still read on at once.
 *
 * Waiting for a projection (ag_projector_wait*, the read-your-writes barrier of
 * a GET that missed a just-written row) waits on the runner's own condition
 * variable: a waiter is woken by the progress of the projections it waits for,
 * not by every page of all of them. */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void pace(struct runner *r)
{
    uint64_t w = r->pace_ns, now = mono_ns();
    if (!w || r->last_full || !r->last_page_ns || now - r->last_page_ns >= w) return;
    uint64_t ns = r->last_page_ns + w - now;
    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    nanosleep(&ts, NULL);
}

/* Whether the page can be skipped without a transaction (see above). */
static bool skippable(const struct runner *r, const struct ag_event_page *pg)
{
    return !r->proj->lease && !r->proj->off && !page_wanted(r->proj, pg);
}

/* Store the cursor moved by skipped pages (idle, stopping, or a second old). */
static void save_skipped(struct runner *r, const struct ag_store_cursor *cur)
{
    if (!r->unsaved) return;
    struct ag_err e;
    ag_err_clear(&e);
    if (ag_rm_begin(r->db, &e)) return;
    if (save_cursor(r->db, r->proj->name, cur, &e) || ag_rm_commit(r->db, &e)) {
        ag_rm_rollback(r->db);
        return;
    }
    r->unsaved = false;
}

/* Apply (or skip) page `pg` that moved the cursor to `cur`. */
static int take_page(struct runner *r, struct ag_event_page *pg, const struct ag_store_cursor *cur,
                     struct ag_err *err)
{
    double lag = pg->count ? now_s() - (double)pg->events[0].time_ns / 1e9 : 0;
    int rc = 0;
    r->last_full = pg->count >= PAGE;
    if (skippable(r, pg)) {
        if (!r->unsaved) r->unsaved_since = now_s();
        r->unsaved = true;
        if (now_s() - r->unsaved_since >= 1.0) save_skipped(r, cur);
    } else if (!(rc = apply_page(r->db, r->proj, pg, cur, r, err))) {
        r->unsaved = false; /* the page's transaction stored the cursor */
    }
    if (!rc) publish(r, cur, pg->count, lag < 0 ? 0 : lag);
    r->last_page_ns = mono_ns();
    ag_event_page_free(pg);
    return rc;
}

static void *runner_main(void *arg)
{
    struct runner *r = arg;
    ag_thread_name("ag-projector");
    struct ag_store_sub *sub;
    struct ag_err err;
    uint64_t backoff_ms = 0; /* > 0 while retrying a failed page */
    ag_err_clear(&err);
    pthread_mutex_lock(&r->owner->lock);
    struct ag_store_cursor cur = r->cur;
    pthread_mutex_unlock(&r->owner->lock);
    if (ag_store_subscribe_cursor(r->owner->store, &cur, &sub, &err)) {
        fail(r, &err);
        return NULL;
    }
    reload_held(r);
    while (!stopping(r->owner)) {
        if (!may_run(r, &sub, &err)) {
            if (!sub) { /* the subscription could not be made again */
                fail(r, &err);
                break;
            }
            continue;
        }
        serve_request(r);
        char why[256];
        if (take_damage(r, why, sizeof why)) {
            r->unsaved = false;
            if (rebuild_in_place(r, &sub, why, &err)) {
                fail(r, &err);
                break;
            }
            continue;
        }
        struct ag_event_page pg;
        pace(r);
        int rc = ag_store_sub_next(sub, PAGE, 200, &pg, &err);
        ag_store_sub_cursor(sub, &cur);
        if (rc == AG_ETIMEDOUT) {
            save_skipped(r, &cur);
            publish(r, &cur, 0, 0);
            ping_when_idle(r);
            continue;
        }
        if (rc == AG_ECLOSED) break;
        if (rc == 0) rc = take_page(r, &pg, &cur, &err);
        if (rc == AG_ECORRUPT) { /* the page was rolled back; replay it into a new file */
            ag_projector_report_damage(r->owner, (size_t)(r - r->owner->r), err.msg);
            continue;
        }
        if (rc && transient(rc)) {
            if (ag_rm_last_error(r->db) == AG_EUNAVAILABLE) set_reachable(r, &err);
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
        if (r->unreachable) set_reachable(r, NULL); /* read by this thread only */
    }
    if (r->db) save_skipped(r, &cur);
    ag_store_sub_free(sub);
    held_clear(r);
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

int ag_projector_start(struct ag_store *s, const char *dir, const struct ag_projection *projs,
                       size_t n, struct ag_projector **out, struct ag_err *err)
{
    int rc = 0;
    struct ag_projector *o = ag_calloc(1, sizeof *o);
    if (!o || !(o->r = ag_calloc(n ? n : 1, sizeof *o->r))) {
        ag_free(o);
        return ag_err_set(err, AG_ENOMEM, "out of memory");
    }
    o->store = s;
    o->n = n;
    snprintf(o->dir, sizeof o->dir, "%s", dir);
    const char *bm = getenv("AGORA_PROJECTION_BATCH_MS"); /* 0: a page per wake-up */
    o->batch_ns = (bm && *bm ? (uint64_t)strtoull(bm, NULL, 10) : 10) * 1000000ull;
    const char *bg = getenv("AGORA_PROJECTION_BACKGROUND_MS");
    o->background_ns = (bg && *bg ? (uint64_t)strtoull(bg, NULL, 10) : 25) * 1000000ull;
    pthread_mutex_init(&o->lock, NULL);
    ag_cond_init_mono(&o->moved); /* waits are durations: monotonic */
    for (size_t i = 0; i < n; i++) ag_cond_init_mono(&o->r[i].moved);
    struct ag_store_stats st;
    ag_store_stats(s, &st);
    for (size_t i = 0; i < n && !rc; i++) {
        struct runner *r = &o->r[i];
        r->owner = o;
        r->proj = &projs[i];
        r->pace_ns = r->proj->background ? o->background_ns : o->batch_ns;
        bool fresh = false;
        if ((rc = db_open(dir, r->proj, &r->db, &fresh, err))) break;
        load_cursor(s, r->db, r->proj->name, &r->cur);
        r->checkpoint = ag_store_cursor_sum(&r->cur);
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
    pthread_cond_broadcast(&o->moved); /* replay/drop requests give up */
    for (size_t i = 0; i < o->n; i++) pthread_cond_broadcast(&o->r[i].moved); /* waits too */
    pthread_mutex_unlock(&o->lock);
    for (size_t i = 0; i < o->n; i++) {
        if (o->r[i].started) pthread_join(o->r[i].thread, NULL);
        ag_rm_close(o->r[i].db);
    }
    for (size_t i = 0; i < o->n; i++) pthread_cond_destroy(&o->r[i].moved);
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
        .unreachable = r->unreachable && !r->failed,
        .parked = r->parked,
        .standby = (r->proj->lease || r->proj->off) && !r->leader,
    };
    snprintf(out->error, sizeof out->error, "%s", r->failed ? r->error : r->why);
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

/* Whether runner `r` has consumed everything up to `head` (every shard), or
 * `position` when `head` is NULL; a failed runner counts as done (lock held). */
static bool covers(const struct runner *r, const struct ag_store_cursor *head, uint64_t position)
{
    if (r->failed) return true;
    if (!head) return ag_store_cursor_covers(&r->cur, position);
    for (uint32_t k = 0; k < head->n; k++)
        if (r->cur.next[k] < head->next[k]) return false;
    return true;
}

/* Wait for runners [from, to) in turn, each on its own condition variable. */
static int wait_runners(struct ag_projector *o, size_t from, size_t to,
                        const struct ag_store_cursor *head, uint64_t position, int timeout_ms)
{
    struct timespec ts;
    ag_deadline_mono_in_ms(&ts, timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&o->lock);
    for (size_t i = from; i < to && !rc; i++)
        while (!covers(&o->r[i], head, position) && !o->stopping)
            if (pthread_cond_timedwait(&o->r[i].moved, &o->lock, &ts) == ETIMEDOUT) {
                rc = covers(&o->r[i], head, position) ? 0 : AG_ETIMEDOUT;
                break;
            }
    if (!rc && o->stopping) /* the rest will not move: done only if they are there */
        for (size_t i = from; i < to && !rc; i++)
            if (!covers(&o->r[i], head, position)) rc = AG_ETIMEDOUT;
    pthread_mutex_unlock(&o->lock);
    return rc;
}

int ag_projector_wait_head(struct ag_projector *o, int timeout_ms)
{
    struct ag_store_cursor head;
    ag_store_cursor_head(o->store, &head);
    return wait_runners(o, 0, o->n, &head, 0, timeout_ms);
}

int ag_projector_wait_head_of(struct ag_projector *o, size_t i, int timeout_ms)
{
    if (i >= o->n) return ag_projector_wait_head(o, timeout_ms);
    struct ag_store_cursor head;
    ag_store_cursor_head(o->store, &head);
    return wait_runners(o, i, i + 1, &head, 0, timeout_ms);
}

int ag_projector_wait(struct ag_projector *o, uint64_t position, int timeout_ms)
{
    return wait_runners(o, 0, o->n, NULL, position, timeout_ms);
}

static int request(struct ag_projector *o, size_t i, uint64_t pos, bool drop, size_t *released,
                   struct ag_err *err)
{
    if (released) *released = 0;
    if (!o || i >= o->n) return ag_err_set(err, AG_ENOTFOUND, "no such projection");
    struct runner *r = &o->r[i];
    struct timespec ts;
    ag_deadline_mono_in_ms(&ts, 30000);
    int rc = 0;
    pthread_mutex_lock(&o->lock);
    while (r->req && !o->stopping && !rc) /* one request at a time */
        if (pthread_cond_timedwait(&o->moved, &o->lock, &ts) == ETIMEDOUT) rc = AG_ETIMEDOUT;
    if (!rc && !r->failed && !o->stopping) {
        r->req = true;
        r->req_done = false;
        r->req_pos = pos;
        r->req_drop = drop;
        while (!r->req_done && !o->stopping && !r->failed && !rc)
            if (pthread_cond_timedwait(&o->moved, &o->lock, &ts) == ETIMEDOUT) rc = AG_ETIMEDOUT;
        if (r->req_done) {
            rc = r->req_rc;
            if (rc) ag_err_set(err, rc, "%s", r->req_err);
            if (released) *released = r->req_released;
        }
        r->req = false;
        pthread_cond_broadcast(&o->moved);
    } else if (!rc) {
        rc = AG_ECLOSED;
    }
    pthread_mutex_unlock(&o->lock);
    if (rc == AG_ETIMEDOUT) ag_err_set(err, rc, "the projection did not answer in time");
    if (rc == AG_ECLOSED) ag_err_set(err, rc, "the projection is not running");
    return rc;
}

int ag_projector_replay(struct ag_projector *o, size_t i, uint64_t position, size_t *released,
                        struct ag_err *err)
{
    return request(o, i, position, false, released, err);
}

int ag_projector_drop(struct ag_projector *o, size_t i, uint64_t position, size_t *released,
                      struct ag_err *err)
{
    return request(o, i, position, true, released, err);
}

struct list_ctx {
    json_t *a;
    const char *name;
};

static int list_row(const struct ag_rm_row *row, void *ud)
{
    struct list_ctx *c = ud;
    json_array_append_new(c->a, json_pack("{s:I, s:s, s:s?, s:s?, s:s?, s:b, s:s?}", "id",
                                          (json_int_t)ag_rm_int64(row, 0), "projection", c->name,
                                          "stream", ag_rm_text(row, 1), "type", ag_rm_text(row, 2),
                                          "error", ag_rm_text(row, 3), "waiting",
                                          ag_rm_int64(row, 4) != 0, "state", ag_rm_text(row, 5)));
    return 0;
}

int ag_projector_parked(struct ag_projector *o, size_t i, bool all, json_t *out, struct ag_err *err)
{
    if (!o || i >= o->n) return ag_err_set(err, AG_ENOTFOUND, "no such projection");
    struct ag_rm *db;
    int rc = ag_rm_open(o->dir, o->r[i].proj->name, AG_RM_READONLY, &db, err);
    if (rc) return rc;
    struct list_ctx c = {out, o->r[i].proj->name};
    rc = ag_rm_query(db,
                     all ? "SELECT position, stream, type, error, waiting, state FROM ag_parked"
                           " ORDER BY position"
                         : "SELECT position, stream, type, error, waiting, state FROM ag_parked"
                           " WHERE state = 'parked' ORDER BY position",
                     NULL, 0, list_row, &c, err);
    ag_rm_close(db);
    return rc;
}

int ag_projection_rebuild(struct ag_store *s, const char *dir, const struct ag_projection *proj,
                          void (*progress)(void *ud, uint64_t done, uint64_t total), void *ud,
                          struct ag_err *err)
{
    int rc = ag_rm_drop(dir, proj->name, err);
    struct ag_rm *db;
    if (rc || (rc = db_open(dir, proj, &db, NULL, err))) return rc;
    struct ag_store_stats st;
    ag_store_stats(s, &st);
    uint64_t from = 0;
    struct ag_store_cursor cur; /* the scan reads each shard in order */
    ag_store_cursor_init(s, &cur);
    while (!rc) {
        struct ag_event_page pg;
        if ((rc = ag_store_read_all(s, from, AG_READ_FORWARD, 4096, &pg, err))) break;
        bool end = pg.end || pg.count == 0;
        for (size_t i = 0; i < pg.count; i++) {
            uint32_t k = ag_store_pos_shard(pg.events[i].position);
            if (k < cur.n) cur.next[k] = ag_store_pos_local(pg.events[i].position) + 1;
        }
        rc = apply_page(db, proj, &pg, &cur, NULL, err);
        from = pg.next_position;
        ag_event_page_free(&pg);
        uint64_t done = ag_store_cursor_sum(&cur);
        if (progress) progress(ud, done, st.events > done ? st.events : done);
        if (end) break;
    }
    ag_rm_close(db);
    return rc;
}

static int seen_row(const struct ag_rm_row *row, void *ud)
{
    AG_UNUSED(row);
    *(bool *)ud = true;
    return 0;
}

int ag_es_inbox_seen(struct ag_rm *rm, const char *consumer, const struct ag_uuid *event_id)
{
    struct ag_rm_arg args[] = {AG_RM_TEXT(consumer), AG_RM_BLOB(event_id->b, 16)};
    bool inserted = false;
    int rc = ag_rm_query(rm,
                         "INSERT INTO ag_inbox(consumer, event_id) VALUES(?1, ?2)"
                         " ON CONFLICT DO NOTHING RETURNING 1",
                         args, 2, seen_row, &inserted, NULL);
    return rc ? AG_EIO : inserted ? 0 : 1;
}
