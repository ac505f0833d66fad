/*
 * The registry of instances and the resolver (include/agora/discovery.h).
 *
 * One thread per handle wakes every interval: heartbeat (an upsert of this
 * member's row, so a row deleted by someone else comes back), read every member
 * with its heartbeat's age (the database computes it: one clock), delete rows
 * gone for 10 TTLs, keep the list as the snapshot for /admin/cluster, and set the
 * endpoints of every watched cluster to the live members serving its context.
 *
 * Locks. `lock` guards the snapshot and the watch list; the apply step runs
 * under it, so ag_disc_unwatch returning means the resolver is done with the
 * cluster. The database handle belongs to whichever thread polls (the thread, or
 * a caller of ag_disc_refresh before the thread starts / tests): `db_lock`.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agora/discovery.h"
#include "agora/readmodel.h"

#define MAX_MEMBERS 256

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS members ("
    " id TEXT PRIMARY KEY, contexts TEXT NOT NULL, address TEXT NOT NULL,"
    " pid BIGINT NOT NULL, started_at BIGINT NOT NULL, heartbeat_at BIGINT NOT NULL,"
    " in_flight BIGINT NOT NULL DEFAULT 0, loop_util BIGINT)";

#define NOW_MS "(extract(epoch from clock_timestamp()) * 1000)::bigint"

static const char upsert_sql[] =
    "INSERT INTO members (id, contexts, address, pid, started_at, heartbeat_at, in_flight,"
    " loop_util) VALUES (?1, ?2, ?3, ?4, " NOW_MS ", " NOW_MS ", ?5, ?6)"
    " ON CONFLICT (id) DO UPDATE SET heartbeat_at = " NOW_MS ", in_flight = ?5, loop_util = ?6,"
    " contexts = ?2, address = ?3, pid = ?4";

static const char select_sql[] =
    "SELECT id, contexts, address, pid, " NOW_MS " - started_at, " NOW_MS " - heartbeat_at,"
    " in_flight, loop_util FROM members ORDER BY id";

static const char gc_sql[] = "DELETE FROM members WHERE heartbeat_at < " NOW_MS " - ?1";
static const char delete_sql[] = "DELETE FROM members WHERE id = ?1";

struct member {
    char id[AG_DISC_ID_MAX];
    char contexts[160];
    char address[AG_HTTP_HOST_MAX + 8];
    int64_t pid;
    int64_t age_ms;       /* since it started */
    int64_t heartbeat_ms; /* since its last heartbeat */
    int64_t in_flight;
    int64_t loop_util; /* -1 = unknown */
};

struct watch {
    char context[32];
    struct ag_mesh_cluster *c; /* borrowed */
    struct watch *next;
};

struct ag_disc {
    char *registry;           /* owned copy of the URI */
    struct ag_disc_self self; /* strings point at the copies below */
    bool has_self;
    char id[AG_DISC_ID_MAX];
    char *contexts, *address; /* owned */
    uint32_t interval_ms, ttl_ms;
    pthread_mutex_t db_lock; /* the handle below */
    struct ag_rm *db;        /* rm_registry */
    pthread_mutex_t lock;    /* snapshot and watches */
    struct member *members;  /* snapshot (MAX_MEMBERS) */
    size_t nmembers;
    bool polled;        /* a snapshot exists */
    uint64_t polled_ns; /* mono time of the last good poll */
    char error[256];    /* the last poll's failure, "" when it worked */
    struct watch *watches;
    pthread_t thread;
    bool started;
    pthread_mutex_t stop_lock;
    pthread_cond_t stop_cond;
    bool stop;
};

/* ---- helpers ---- */

static uint64_t mono_ns(void)
{
    return ag_clock_mono(ag_clock_system());
}

static bool serves(const char *contexts, const char *ctx)
{
    if (strcmp(ctx, "*") == 0) return true; /* any member */
    size_t n = strlen(ctx);
    for (const char *p = contexts; *p;) {
        while (*p == ' ') p++;
        size_t l = strcspn(p, " ");
        if ((l == n && strncmp(p, ctx, n) == 0) || (l == 3 && strncmp(p, "all", 3) == 0))
            return true;
        p += l;
    }
    return false;
}

static char *dup_or_empty(const char *s)
{
    return ag_strdup(s ? s : "");
}

/* ---- polling ---- */

static int heartbeat(struct ag_disc *d, struct ag_err *err)
{
    struct ag_disc_load load = {0, -1};
    if (d->self.load) d->self.load(d->self.load_ud, &load);
    struct ag_rm_arg args[] = {
        AG_RM_TEXT(d->id),         AG_RM_TEXT(d->contexts),
        AG_RM_TEXT(d->address),    AG_RM_INT(getpid()),
        AG_RM_INT(load.in_flight), load.loop_util < 0 ? AG_RM_NULL : AG_RM_INT(load.loop_util)};
    return ag_rm_exec(d->db, upsert_sql, args, AG_ARRAY_SIZE(args), err);
}

struct readout {
    struct member *m;
    size_t n;
};

static int member_row(const struct ag_rm_row *row, void *ud)
{
    struct readout *r = ud;
    if (r->n >= MAX_MEMBERS) return 1;
    struct member *m = &r->m[r->n++];
    const char *s;
    snprintf(m->id, sizeof m->id, "%s", (s = ag_rm_text(row, 0)) ? s : "");
    snprintf(m->contexts, sizeof m->contexts, "%s", (s = ag_rm_text(row, 1)) ? s : "");
    snprintf(m->address, sizeof m->address, "%s", (s = ag_rm_text(row, 2)) ? s : "");
    m->pid = ag_rm_int64(row, 3);
    m->age_ms = ag_rm_int64(row, 4);
    m->heartbeat_ms = ag_rm_int64(row, 5);
    m->in_flight = ag_rm_int64(row, 6);
    m->loop_util = ag_rm_is_null(row, 7) ? -1 : ag_rm_int64(row, 7);
    return 0;
}

/* The live members serving `ctx` as endpoints (hosts point into `hosts`). */
static size_t endpoints_of(const struct ag_disc *d, const char *ctx,
                           struct ag_mesh_endpoint_config *eps, char hosts[][AG_HTTP_HOST_MAX])
{
    size_t n = 0;
    for (size_t i = 0; i < d->nmembers && n < AG_MESH_MAX_ENDPOINTS; i++) {
        const struct member *m = &d->members[i];
        if (m->heartbeat_ms > (int64_t)d->ttl_ms || !serves(m->contexts, ctx)) continue;
        uint16_t port = 0;
        if (ag_hostport_parse(m->address, AG_HOSTPORT_NUMERIC, hosts[n], AG_HTTP_HOST_MAX, &port,
                              NULL))
            continue; /* the mesh dials numeric addresses only */
        eps[n] = (struct ag_mesh_endpoint_config){.host = hosts[n], .port = port};
        n++;
    }
    return n;
}

/* Set every watched cluster from the snapshot (lock held). */
static void apply_locked(struct ag_disc *d)
{
    static _Thread_local struct ag_mesh_endpoint_config eps[AG_MESH_MAX_ENDPOINTS];
    static _Thread_local char hosts[AG_MESH_MAX_ENDPOINTS][AG_HTTP_HOST_MAX];
    for (struct watch *w = d->watches; w; w = w->next) {
        size_t n = endpoints_of(d, w->context, eps, hosts);
        struct ag_err err;
        ag_err_clear(&err);
        if (ag_mesh_cluster_set_endpoints(w->c, eps, n, NULL, &err))
            AG_WARN("discovery.apply_failed", AG_LS("context", w->context),
                    AG_LS("error", err.msg));
    }
}

static int poll_db(struct ag_disc *d, struct readout *r, struct ag_err *err)
{
    int rc = 0;
    pthread_mutex_lock(&d->db_lock);
    if (d->has_self) rc = heartbeat(d, err);
    struct ag_rm_arg gc = AG_RM_INT((int64_t)d->ttl_ms * 10);
    if (!rc) rc = ag_rm_exec(d->db, gc_sql, &gc, 1, err);
    if (!rc) rc = ag_rm_query(d->db, select_sql, NULL, 0, member_row, r, err);
    pthread_mutex_unlock(&d->db_lock);
    return rc;
}

int ag_disc_refresh(struct ag_disc *d, struct ag_err *err)
{
    struct readout r = {ag_calloc(MAX_MEMBERS, sizeof *r.m), 0};
    if (!r.m) return ag_err_set(err, AG_ENOMEM, "out of memory");
    int rc = poll_db(d, &r, err);
    pthread_mutex_lock(&d->lock);
    if (rc) {
        snprintf(d->error, sizeof d->error, "%.200s", err ? err->msg : ag_strerror(rc));
        ag_free(r.m); /* keep the last snapshot and the endpoints as they are */
    } else {
        d->error[0] = '\0';
        ag_free(d->members);
        d->members = r.m;
        d->nmembers = r.n;
        d->polled = true;
        d->polled_ns = mono_ns();
        apply_locked(d);
    }
    pthread_mutex_unlock(&d->lock);
    return rc;
}

static void *thread_main(void *arg)
{
    struct ag_disc *d = arg;
    bool warned = false;
    pthread_mutex_lock(&d->stop_lock);
    while (!d->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += d->interval_ms / 1000;
        ts.tv_nsec += (long)(d->interval_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&d->stop_cond, &d->stop_lock, &ts);
        if (d->stop) break;
        pthread_mutex_unlock(&d->stop_lock);
        struct ag_err err;
        ag_err_clear(&err);
        int rc = ag_disc_refresh(d, &err);
        if (rc && !warned)
            AG_WARN("discovery.poll_failed", AG_LS("error", ag_err_msg(&err, rc)));
        else if (!rc && warned)
            AG_INFO("discovery.poll_ok", AG_LS("registry", "rm_registry.members"));
        warned = rc != 0;
        pthread_mutex_lock(&d->stop_lock);
    }
    pthread_mutex_unlock(&d->stop_lock);
    return NULL;
}

/* ---- the handle ---- */

static void default_id(char out[AG_DISC_ID_MAX])
{
    char host[32] = "host";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    uint64_t r = ag_rng_next(ag_rng_system());
    snprintf(out, AG_DISC_ID_MAX, "%s-%ld-%06llx", host, (long)getpid(),
             (unsigned long long)(r & 0xffffff));
}

static int copy_config(struct ag_disc *d, const struct ag_disc_config *cfg, struct ag_err *err)
{
    d->interval_ms = cfg->interval_ms ? cfg->interval_ms : 1000;
    d->ttl_ms = cfg->ttl_ms ? cfg->ttl_ms : 5000;
    if (!(d->registry = ag_strdup(cfg->registry)))
        return ag_err_set(err, AG_ENOMEM, "out of memory");
    if (!cfg->self) return 0;
    d->has_self = true;
    d->self = *cfg->self;
    if (cfg->self->id)
        snprintf(d->id, sizeof d->id, "%s", cfg->self->id);
    else
        default_id(d->id);
    d->contexts = dup_or_empty(cfg->self->contexts);
    d->address = dup_or_empty(cfg->self->address);
    if (!d->contexts || !d->address) return ag_err_set(err, AG_ENOMEM, "out of memory");
    return 0;
}

static void disc_free(struct ag_disc *d)
{
    ag_rm_close(d->db);
    while (d->watches) {
        struct watch *w = d->watches;
        d->watches = w->next;
        ag_free(w);
    }
    pthread_mutex_destroy(&d->db_lock);
    pthread_mutex_destroy(&d->lock);
    pthread_mutex_destroy(&d->stop_lock);
    pthread_cond_destroy(&d->stop_cond);
    ag_free(d->members);
    ag_free(d->registry);
    ag_free(d->contexts);
    ag_free(d->address);
    ag_free(d);
}

static int open_db(struct ag_disc *d, struct ag_err *err)
{
    if (!d->registry || strncmp(d->registry, "postgresql://", 13) != 0)
        return ag_err_set(err, AG_EINVAL,
                          "the registry is a PostgreSQL database (postgresql://...), not '%s'",
                          d->registry ? d->registry : "");
    int rc = 0;
    /* instances starting together race to create the schema: a loser tries again */
    for (int attempt = 0; attempt < 5; attempt++) {
        if (attempt) nanosleep(&(struct timespec){0, 200000000L}, NULL);
        ag_rm_close(d->db);
        d->db = NULL;
        rc = ag_rm_open(d->registry, "registry", AG_RM_READWRITE, &d->db, err);
        if (!rc) rc = ag_rm_script(d->db, schema_sql, err);
        if (!rc) break;
    }
    return rc;
}

int ag_disc_start(const struct ag_disc_config *cfg, struct ag_disc **out, struct ag_err *err)
{
    struct ag_disc *d = ag_calloc(1, sizeof *d);
    if (!d) return ag_err_set(err, AG_ENOMEM, "out of memory");
    pthread_mutex_init(&d->db_lock, NULL);
    pthread_mutex_init(&d->lock, NULL);
    pthread_mutex_init(&d->stop_lock, NULL);
    pthread_cond_init(&d->stop_cond, NULL);
    int rc = copy_config(d, cfg, err);
    if (!rc) rc = open_db(d, err);
    if (!rc) rc = ag_disc_refresh(d, err);
    if (!rc && pthread_create(&d->thread, NULL, thread_main, d))
        rc = ag_err_set(err, AG_EIO, "cannot start the registry thread");
    if (rc) {
        disc_free(d);
        return rc;
    }
    d->started = true;
    if (d->has_self)
        AG_INFO("discovery.registered", AG_LS("member", d->id), AG_LS("contexts", d->contexts),
                AG_LS("address", d->address));
    *out = d;
    return 0;
}

int ag_disc_watch(struct ag_disc *d, const char *context, struct ag_mesh_cluster *c)
{
    struct watch *w = ag_calloc(1, sizeof *w);
    if (!w) return AG_ENOMEM;
    snprintf(w->context, sizeof w->context, "%s", context);
    w->c = c;
    pthread_mutex_lock(&d->lock);
    w->next = d->watches;
    d->watches = w;
    if (d->polled) apply_locked(d);
    pthread_mutex_unlock(&d->lock);
    return 0;
}

void ag_disc_unwatch(struct ag_disc *d, struct ag_mesh_cluster *c)
{
    pthread_mutex_lock(&d->lock);
    for (struct watch **pw = &d->watches; *pw;) {
        struct watch *w = *pw;
        if (w->c == c) {
            *pw = w->next;
            ag_free(w);
        } else {
            pw = &w->next;
        }
    }
    pthread_mutex_unlock(&d->lock);
}

const char *ag_disc_member_id(const struct ag_disc *d)
{
    return d->id;
}

static json_t *member_json(const struct ag_disc *d, const struct member *m)
{
    json_t *ctx = json_array();
    for (const char *p = m->contexts; *p;) {
        while (*p == ' ') p++;
        size_t l = strcspn(p, " ");
        if (l) json_array_append_new(ctx, json_stringn(p, l));
        p += l;
    }
    json_t *load = json_pack("{s:I}", "inFlight", (json_int_t)m->in_flight);
    json_object_set_new(load, "loopUtilisation",
                        m->loop_util < 0 ? json_null() : json_real((double)m->loop_util / 1000));
    return json_pack("{s:s, s:o, s:s, s:I, s:I, s:I, s:b, s:b, s:o}", "id", m->id, "contexts", ctx,
                     "address", m->address, "pid", (json_int_t)m->pid, "upForMs",
                     (json_int_t)m->age_ms, "heartbeatAgeMs", (json_int_t)m->heartbeat_ms,
                     "healthy", m->heartbeat_ms <= (int64_t)d->ttl_ms, "self",
                     d->has_self && strcmp(m->id, d->id) == 0, "load", load);
}

json_t *ag_disc_members_json(struct ag_disc *d)
{
    json_t *arr = json_array();
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; i < d->nmembers; i++)
        json_array_append_new(arr, member_json(d, &d->members[i]));
    uint64_t ago = d->polled ? (mono_ns() - d->polled_ns) / 1000000 : 0;
    json_t *j = json_pack("{s:s, s:I, s:I, s:o}", "registry", "rm_registry.members", "ttlMs",
                          (json_int_t)d->ttl_ms, "polledAgoMs", (json_int_t)ago, "members", arr);
    if (d->error[0]) json_object_set_new(j, "error", json_string(d->error));
    if (d->has_self) json_object_set_new(j, "member", json_string(d->id));
    pthread_mutex_unlock(&d->lock);
    return j;
}

void ag_disc_stop(struct ag_disc *d)
{
    if (!d) return;
    if (d->started) {
        pthread_mutex_lock(&d->stop_lock);
        d->stop = true;
        pthread_cond_signal(&d->stop_cond);
        pthread_mutex_unlock(&d->stop_lock);
        pthread_join(d->thread, NULL);
    }
    if (d->has_self && d->db) {
        struct ag_rm_arg id = AG_RM_TEXT(d->id);
        struct ag_err err;
        ag_err_clear(&err);
        if (ag_rm_exec(d->db, delete_sql, &id, 1, &err))
            AG_WARN("discovery.deregister_failed", AG_LS("error", err.msg));
        else
            AG_INFO("discovery.deregistered", AG_LS("member", d->id));
    }
    disc_free(d);
}
