/*
 * Wiring of the whole platform for one process (`agora run`): the store, the
 * repository, the saga engine, the projections (read models + the saga starter),
 * the HTTP router with every context's routes and the ops endpoints, and a small
 * monitor thread that publishes projection lag and saga counts as metrics.
 *
 * Start order matters: the saga engine before the projections (the saga starter
 * projection starts sagas), the projections before HTTP (queries need them).
 * Stop order is the reverse.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "agora/discovery.h"
#include "agora/store.h"
#include "agora/store_log.h"
#include "agora/vault.h"
#include "services/internal.h"

const char *const svc_rm_names[RM_COUNT] = {"customers", "products",  "accounts", "stock",
                                            "orders",    "shipments", "sagas"};

const char *const *ag_platform_projection_names(void)
{
    static const char *const names[] = {"customers", "products", "accounts",     "stock", "orders",
                                        "shipments", "sagas",    "saga_starter", NULL};
    return names;
}

/* ---- ops endpoints ---- */

static int projections(struct svc_job *j)
{
    const struct svc_env *p = j->env;
    json_t *items = json_array();
    for (size_t i = 0; i < ag_projector_count(p->projector); i++) {
        struct ag_projection_stats s;
        ag_projector_stats(p->projector, i, &s);
        json_array_append_new(
            items,
            json_pack("{s:s, s:I, s:I, s:I, s:f, s:I, s:s, s:s?, s:I}", "name", s.name,
                      "checkpoint", (json_int_t)s.checkpoint, "head", (json_int_t)s.head,
                      "lagEvents", (json_int_t)s.lag_events, "lagSeconds", s.lag_seconds, "applied",
                      (json_int_t)s.applied, "status", s.failed ? "failed" : "running", "error",
                      s.failed ? s.error : NULL, "parked", (json_int_t)s.parked));
        /* a rebuild (POST /admin/projections/{name}/rebuild, or damage) in progress:
         * its progress is checkpoint against head */
        if (!s.failed && !ag_projector_usable(p->projector, i, NULL))
            json_object_set_new(json_array_get(items, json_array_size(items) - 1), "status",
                                json_string("rebuilding"));
        else if (!s.failed && s.standby) /* another process holds its lease (agora serve) */
            json_object_set_new(json_array_get(items, json_array_size(items) - 1), "status",
                                json_string("standby"));
    }
    return svc_ok(j, 200, json_pack("{s:o}", "items", items));
}

/* The saga steps' breakers (the gateway's upstream breakers are its
 * /admin/circuit-breakers). */
static int breakers(struct svc_job *j)
{
    const struct svc_env *p = j->env;
    json_t *items = json_array();
    for (size_t i = 0; i < SVC_SAGA_STEPS && p->breakers; i++) {
        struct ag_cb_stats st;
        ag_cb_stats(p->breakers[i], &st);
        json_array_append_new(items, json_pack("{s:s, s:s, s:i, s:I, s:I}", "name",
                                               ag_cb_name(p->breakers[i]), "state",
                                               ag_cb_state_name(st.state), "consecutiveFailures",
                                               (int)st.consecutive_failures, "windowCalls",
                                               (json_int_t)st.window_calls, "windowFailures",
                                               (json_int_t)st.window_failures));
    }
    return svc_ok(j, 200, json_pack("{s:o}", "items", items));
}

static void scavenge_progress(void *ud, uint64_t segno, const struct ag_log_scavenge_report *r)
{
    AG_UNUSED(ud);
    AG_INFO("store.scavenge_segment", AG_LI("segment", (long long)segno),
            AG_LI("kept", (long long)r->events_kept),
            AG_LI("dropped", (long long)r->events_dropped),
            AG_LI("bytesReclaimed", (long long)(r->bytes_before - r->bytes_after)));
}

/* Scavenge the log now (retention: the idempotency TTL and the saga retention);
 * answers when it is done with its report. */
static int scavenge(struct svc_job *j)
{
    const struct svc_env *p = j->env;
    struct ag_log_retention ret = {
        .idempotency_ns = (p->idem_ttl_ms ? p->idem_ttl_ms : SVC_IDEM_TTL_DEFAULT_MS) * 1000000ull,
        .saga_ns = (p->saga_retention_ms ? p->saga_retention_ms : SVC_SAGA_RETENTION_DEFAULT_MS) *
                   1000000ull,
        .released_prefix = AG_EMAIL_CLAIM_PREFIX,
        .released_type = AG_CLAIM_RELEASED};
    struct ag_log_scavenge_report r;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_store_log_scavenge(p->store, &ret, scavenge_progress, NULL, &r, &err);
    if (rc == AG_EAGAIN) return svc_problem(j, 409, "Scavenge running", "%s", err.msg);
    if (rc == AG_EINVAL) return svc_problem(j, 400, "Cannot scavenge", "%s", err.msg);
    if (rc) return rc;
    AG_INFO("store.scavenged", AG_LI("segments", (long long)r.segments),
            AG_LI("rewritten", (long long)r.rewritten), AG_LI("kept", (long long)r.events_kept),
            AG_LI("dropped", (long long)r.events_dropped),
            AG_LI("bytesReclaimed", (long long)(r.bytes_before - r.bytes_after)));
    return svc_ok(j, 200,
                  json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "segments",
                            (json_int_t)r.segments, "rewritten", (json_int_t)r.rewritten,
                            "eventsKept", (json_int_t)r.events_kept, "eventsDropped",
                            (json_int_t)r.events_dropped, "streamsDeleted",
                            (json_int_t)r.streams_deleted, "bytesBefore",
                            (json_int_t)r.bytes_before, "bytesAfter", (json_int_t)r.bytes_after,
                            "bytesReclaimed", (json_int_t)(r.bytes_before - r.bytes_after)));
}

/* GET /admin/cluster: the registry's members (issue 14; agora serve --advertise). */
static int cluster_members(struct svc_job *j)
{
    struct ag_disc *d = j->env->disc ? *j->env->disc : NULL;
    if (!d)
        return svc_problem(j, 404, "No registry",
                           "this instance is not in a registry (agora serve registers itself)");
    return svc_ok(j, 200, ag_disc_members_json(d));
}

static const struct svc_route routes[] = {
    {"GET", "/admin/projections", SVC_ADMIN, projections, NULL, NULL, {NULL}},
    {"GET", "/admin/saga-breakers", SVC_ADMIN, breakers, NULL, NULL, {NULL}},
    {"POST", "/admin/store/scavenge", SVC_ADMIN, scavenge, NULL, NULL, {NULL}},
    {"GET", "/admin/bus", SVC_ADMIN, svc_bus_admin, NULL, NULL, {NULL}},
    {"GET", "/admin/dlq", SVC_ADMIN, svc_dlq_list, NULL, NULL, {NULL}},
    {"POST", "/admin/dlq/{id}/replay", SVC_ADMIN, svc_dlq_replay, "id", "dead letter", {NULL}},
    {"DELETE", "/admin/dlq/{id}", SVC_ADMIN, svc_dlq_drop, "id", "dead letter", {NULL}},
    {"GET", "/admin/cluster", SVC_ADMIN, cluster_members, NULL, NULL, {NULL}},
};

static const struct svc_context ops_context = {"ops", routes, sizeof routes / sizeof routes[0],
                                               NULL, RM_COUNT};

/* Every context of the platform: its routes, and its read model's projection. */
static const struct svc_context *const contexts[] = {
    &svc_customers_context, &svc_catalog_context,    &svc_payments_context, &svc_inventory_context,
    &svc_ordering_context,  &svc_shipping_context,   &svc_sagas_context,    &svc_audit_context,
    &ops_context,           &svc_mcp_context,        &svc_console_context,  &svc_traces_context,
    &svc_logtail_context,   &svc_statstream_context, &svc_internal_context};
_Static_assert(AG_ARRAY_SIZE(contexts) <= SVC_MAX_CONTEXTS, "raise SVC_MAX_CONTEXTS");

/* ---- which contexts this process serves (`agora serve`) ---- */

const char *const *ag_platform_context_names(void)
{
    static const char *const names[] = {"customers", "catalog",  "ordering", "inventory",
                                        "payments",  "shipping", "sagas",    NULL};
    return names;
}

unsigned ag_platform_context_bit(const char *name)
{
    const char *const *n = ag_platform_context_names();
    for (unsigned i = 0; n[i]; i++)
        if (strcmp(n[i], name) == 0) return 1u << i;
    return 0;
}

/* Whether context `c` is served here: every one when the mask is 0, and the
 * platform's own (ops, audit, console...) always. */
static bool served(const struct ag_platform *p, const struct svc_context *c)
{
    unsigned bit = ag_platform_context_bit(c->name);
    return !p->cfg.contexts || !bit || (p->cfg.contexts & bit);
}

/* The saga starter's lease taken: the unfinished sagas are this process's now. */
static void sagas_owned(void *ud)
{
    struct ag_platform *p = ud;
    if (p->sagas && !p->cfg.choreography) ag_saga_engine_resume(p->sagas);
}

/* cfg.shared: every projection under a lease; those of contexts served elsewhere
 * only followed (off). The saga starter goes with the sagas context. */
static void share_projections(struct ag_platform *p)
{
    if (!p->cfg.shared && !p->cfg.contexts) return;
    for (int rm = 0; rm <= RM_COUNT; rm++) {
        const char *owner = rm == RM_COUNT ? "sagas" : NULL;
        for (size_t i = 0; i < AG_ARRAY_SIZE(contexts) && !owner; i++)
            if (contexts[i]->rm == (enum rm_id)rm && ag_platform_context_bit(contexts[i]->name))
                owner = contexts[i]->name;
        unsigned bit = owner ? ag_platform_context_bit(owner) : 0;
        p->projs[rm].lease = p->cfg.shared;
        p->projs[rm].off = p->cfg.contexts && bit && !(p->cfg.contexts & bit);
    }
    p->projs[RM_COUNT].leased = sagas_owned;
}

static void fill_projections(struct ag_platform *p)
{
    svc_event_schemas_install(); /* before anything reads the log (schemas.c) */
    for (size_t i = 0; i < AG_ARRAY_SIZE(contexts); i++)
        if (contexts[i]->projection) contexts[i]->projection(&p->projs[contexts[i]->rm]);
    p->projs[RM_ORDERS].ud = &p->env; /* its waiters (wait.c) and admission (admission.c) */
    ag_saga_projection(p->saga_defs, 1, &p->projs[RM_SAGAS]);
    if (p->cfg.choreography) svc_chor_projection(&p->projs[RM_SAGAS]);
    svc_saga_starter_projection(p, &p->projs[RM_COUNT]);
    /* Only the orders (polls wait on them; admission) and the saga starter are
     * on an order's path: the others take the background pace (projector.c). */
    for (int rm = 0; rm < RM_COUNT; rm++) p->projs[rm].background = rm != RM_ORDERS;
    share_projections(p);
}

int ag_platform_projections_ready(void *ud, struct ag_buf *detail)
{
    struct ag_platform *p = ud;
    for (size_t i = 0; i < ag_projector_count(p->projector); i++) {
        struct ag_projection_stats s;
        ag_projector_stats(p->projector, i, &s);
        if (s.failed) {
            ag_buf_printf(detail, "projection %s failed: %s", s.name, s.error);
            return AG_EFAILED;
        }
        if (s.unreachable) {
            ag_buf_printf(detail, "projection %s cannot reach its read model: %s", s.name, s.error);
            return AG_EUNAVAILABLE;
        }
    }
    ag_buf_puts(detail, "every projection running");
    return 0;
}

/* ---- the event store's write health: readiness and metrics ---- */

int ag_platform_store_ready(void *ud, struct ag_buf *detail)
{
    struct ag_platform *p = ud;
    struct ag_store_health h;
    ag_store_health(p->store, &h);
    if (h.writable) return ag_buf_puts(detail, "writable"), 0;
    char since[32];
    ag_time_rfc3339(h.since_ns, since);
    ag_buf_printf(
        detail, "the event store cannot write: %s; since %s, %llu retries, next in %llu ms",
        h.message, since, (unsigned long long)h.retries, (unsigned long long)h.retry_in_ms);
    return AG_EUNAVAILABLE;
}

static struct ag_obs_series *store_series(struct ag_obs_registry *r, enum ag_obs_type t,
                                          const char *name, const char *help)
{
    struct ag_obs_family *f;
    struct ag_obs_series *s = NULL;
    if (r && ag_obs_family_define(r, &(struct ag_obs_family_spec){t, name, help}, &f) == 0)
        ag_obs_series_get(f, NULL, &s);
    return s;
}

/* Runs before every /metrics render (collectors are serialised). */
static void store_collect(void *ud)
{
    struct ag_platform *p = ud;
    struct ag_store_health h;
    ag_store_health(p->store, &h);
    struct ag_obs_series *w =
        store_series(p->metrics, AG_OBS_GAUGE, "agora_store_writable",
                     "1 while the event store acknowledges appends, 0 while its writes fail.");
    struct ag_obs_series *f =
        store_series(p->metrics, AG_OBS_COUNTER, "agora_store_write_failures_total",
                     "Failed write, fdatasync and truncate calls of the event store.");
    if (w) ag_obs_gauge_set(w, h.writable ? 1 : 0);
    uint64_t seen = f ? ag_obs_counter_value(f) : 0;
    if (f && h.failures > seen) ag_obs_counter_add(f, h.failures - seen);
}

/* agora_breaker_open{scope="saga"}: the saga steps' breakers. */
static void breakers_collect(void *ud)
{
    struct ag_platform *p = ud;
    for (size_t i = 0; i < SVC_SAGA_STEPS; i++)
        if (p->breakers[i])
            ag_obs_breaker_state(p->metrics, "saga", ag_cb_name(p->breakers[i]),
                                 (int)ag_cb_state(p->breakers[i]));
}

static void store_health_register(struct ag_platform *p)
{
    ag_obs_health_add(p->health, AG_OBS_READY, "store", ag_platform_store_ready, p);
    ag_obs_registry_collector(p->metrics, store_collect, p);
    ag_obs_registry_collector(p->metrics, breakers_collect, p);
}

/* ---- start / stop ---- */

static int open_read_models(struct ag_platform *p, struct ag_err *err)
{
    for (int i = 0; i < RM_COUNT; i++) pthread_rwlock_init(&p->rms.lock[i], NULL);
    pthread_mutex_init(&p->rms.fresh_lock, NULL);
    p->rms.locks_init = true;
    for (int i = 0; i < RM_COUNT; i++) {
        char where[1100];
        ag_rm_locate(p->rms.dir, svc_rm_names[i], where, sizeof where);
        if (ag_rm_open(p->rms.dir, svc_rm_names[i], AG_RM_READONLY, &p->rms.rm[i], NULL))
            return ag_err_set(err, AG_EIO, "%s: cannot open for queries", where);
    }
    return 0;
}

/* Close every query handle, before the projections' writers: the last connection
 * to close a WAL database checkpoints it and removes its -wal and -shm files, and a
 * read-only connection cannot, so the writer must be the last. */
static void close_read_models(struct ag_platform *p)
{
    for (int i = 0; i < RM_COUNT; i++) {
        ag_rm_close(p->rms.rm[i]);
        p->rms.rm[i] = NULL;
        ag_rm_close(p->rms.fresh[i]);
        p->rms.fresh[i] = NULL;
        if (p->rms.locks_init) pthread_rwlock_destroy(&p->rms.lock[i]);
    }
    if (p->rms.locks_init) pthread_mutex_destroy(&p->rms.fresh_lock);
    p->rms.locks_init = false;
}

static int start_http(struct ag_platform *p, struct ag_err *err)
{
    int rc = ag_http_router_new(&p->router);
    if (!rc && !p->metrics) rc = ag_obs_registry_new(&p->metrics);
    if (!rc) rc = ag_obs_health_new(&p->health);
    if (rc) return ag_err_set(err, rc, "out of memory");
    ag_obs_health_add(p->health, AG_OBS_READY, "projections", ag_platform_projections_ready, p);
    static const char *const reason[] = {"reason"};
    struct ag_obs_family_spec denied = {AG_OBS_COUNTER, "agora_authz_denied_total",
                                        "Requests refused by authorization, by reason", 1, reason};
    ag_obs_family_define(p->metrics, &denied, &p->env.denied);
    store_health_register(p);
    svc_bus_observe(p);
    struct ag_http_observe o = {.metrics = p->metrics,
                                .health = p->health,
                                .request_id = true,
                                .trace = true,
                                .span_server = "services",
                                .access_log = getenv("AGORA_ACCESS_LOG") != NULL,
                                .ops_routes = true};
    ag_http_router_observe(p->router, &o);
    for (size_t i = 0; i < AG_ARRAY_SIZE(contexts) && !rc; i++) {
        p->envs[i] = p->env; /* the shared parts; only the sagas context drives sagas */
        p->envs[i].name = contexts[i]->name;
        p->envs[i].sagas = contexts[i] == &svc_sagas_context ? p->sagas : NULL;
        p->envs[i].breakers = contexts[i] == &ops_context ? p->breakers : NULL;
        p->envs[i].metrics = p->metrics;       /* the console's stats read it */
        if (contexts[i] == &svc_mcp_context) { /* its tools call the other contexts */
            p->envs[i].peers = p->envs;
            p->envs[i].npeers = AG_ARRAY_SIZE(contexts);
        }
        if (served(p, contexts[i]))
            rc = svc_routes(p, &p->envs[i], contexts[i]->routes, contexts[i]->nroutes);
    }
    if (rc) return ag_err_set(err, rc, "cannot register the routes");
    struct ag_http_server_config hc = {.host = p->cfg.host,
                                       .port = p->cfg.port,
                                       .workers = p->cfg.workers,
                                       .unix_path = p->cfg.unix_path,
                                       .tls = p->cfg.tls};
    rc = ag_http_server_new(&hc, p->router, &p->server);
    if (rc) return ag_err_set(err, rc, "cannot create the HTTP server");
    return ag_http_server_start(p->server, err);
}

static int open_store(struct ag_platform *p, struct ag_err *err)
{
    struct ag_store_options o = {
        .no_sync = p->cfg.no_sync,
        .index_memory = p->cfg.index_memory,
        .commit_seconds = /* no registry in `agora projections rebuild` */
        store_series(p->metrics, AG_OBS_HISTOGRAM, "agora_store_commit_seconds",
                     "Group commits of the event log: write + fdatasync, in seconds.")};
    char uri[4096];
    if (!p->cfg.store_uri &&
        (size_t)snprintf(uri, sizeof uri, "file:%s", p->cfg.data_dir) >= sizeof uri)
        return ag_err_set(err, AG_EINVAL, "the data directory's path is too long");
    int rc = ag_store_open(p->cfg.store_uri ? p->cfg.store_uri : uri, &o, &p->store, err);
    if (rc) return rc;
    struct ag_es_repo_config rc_cfg = {.store = p->store, .cache_bytes = p->cfg.cache_bytes};
    if (ag_es_repo_new(&rc_cfg, &p->repo)) return ag_err_set(err, AG_ENOMEM, "out of memory");
    const char *rmu = p->cfg.readmodels_uri;
    size_t n = rmu ? strlen(rmu) + 1 : strlen(p->cfg.data_dir) + 16;
    if (!(p->rms.dir = ag_malloc(n))) return ag_err_set(err, AG_ENOMEM, "out of memory");
    if (rmu)
        snprintf(p->rms.dir, n, "%s", rmu);
    else
        snprintf(p->rms.dir, n, "%s/readmodels", p->cfg.data_dir);
    p->env = (struct svc_env){.name = "platform",
                              .store = p->store,
                              .repo = p->repo,
                              .rms = &p->rms,
                              .behind_gateway = p->cfg.behind_gateway,
                              .mesh_key = p->cfg.mesh_key,
                              .idem_ttl_ms = p->cfg.idempotency_ttl_ms,
                              .saga_retention_ms = p->cfg.saga_retention_ms};
    return 0;
}

/* Saga workers: the actions of the PlaceOrder saga are asynchronous (a worker
 * starts them and moves on), so a worker per core suffices; at least 4 for the
 * synchronous moves (checks, compensations, a failed action's retries). */
static unsigned saga_threads_default(void)
{
    unsigned n = uv_available_parallelism();
    return n > 4 ? n : 4;
}

/* Short saga moves on the recorder thread (issue 11) when the store's reads are
 * local (the log); AGORA_SAGA_INLINE=0 turns it off, e.g. to measure it. */
static bool saga_inline(const struct ag_store *s)
{
    const char *v = getenv("AGORA_SAGA_INLINE");
    if (v && strcmp(v, "0") == 0) return false;
    return s && strcmp(s->ops->name, "log") == 0;
}

/* A database that does not answer at start (a PostgreSQL still starting: the
 * event store's or the read models') is waited for, with backoff from 250 ms
 * doubling to 5 s, for cfg.readmodels_wait_s (the one wait setting of both,
 * AGORA_DB_WAIT), each attempt logged as `<what>.unreachable` with why. */
static int wait_for_db(struct ag_platform *p, const char *what,
                       int (*attempt)(struct ag_platform *, struct ag_err *), struct ag_err *err)
{
    unsigned wait_s = p->cfg.readmodels_wait_s ? p->cfg.readmodels_wait_s : 60;
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long backoff_ms = 250;; backoff_ms = backoff_ms * 2 > 5000 ? 5000 : backoff_ms * 2) {
        int rc = attempt(p, err);
        if (rc != AG_EUNAVAILABLE) return rc;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double waited = (double)(now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9;
        if (waited + (double)backoff_ms / 1000 > wait_s)
            return ag_err_set(err, AG_EUNAVAILABLE, "the %s database did not answer in %u s: %s",
                              strcmp(what, "store") == 0 ? "event store's" : "read models'", wait_s,
                              err->msg);
        if (strcmp(what, "store") == 0)
            AG_WARN("store.unreachable", AG_LS("error", err->msg),
                    AG_LU("retry_in_ms", (unsigned long long)backoff_ms));
        else
            AG_WARN("readmodels.unreachable", AG_LS("error", err->msg),
                    AG_LU("retry_in_ms", (unsigned long long)backoff_ms));
        struct timespec ts = {backoff_ms / 1000, (backoff_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static int projections_attempt(struct ag_platform *p, struct ag_err *err)
{
    return ag_projector_start(p->store, p->rms.dir, p->projs, RM_COUNT + 1, &p->projector, err);
}

/* Start the projections, waiting for the read models' database (wait_for_db). */
static int start_projections(struct ag_platform *p, struct ag_err *err)
{
    return wait_for_db(p, "readmodels", projections_attempt, err);
}

/* The vault of personal data, first: a wrong or missing master key stops the
 * start before anything is read (never a new key over existing data keys). The
 * master key is AGORA_MASTER_KEY, or <data>/keys/master.key (made on first start). */
static int open_vault(struct ag_platform *p, struct ag_err *err)
{
    char dir[4096];
    if ((size_t)snprintf(dir, sizeof dir, "%s/keys", p->cfg.data_dir) >= sizeof dir)
        return ag_err_set(err, AG_EINVAL, "the data directory's path is too long");
    if (mkdir(p->cfg.data_dir, 0700) && errno != EEXIST)
        return ag_err_set(err, AG_EIO, "cannot create %s: %s", p->cfg.data_dir, strerror(errno));
    int rc = ag_vault_open(dir, getenv("AGORA_MASTER_KEY"), &p->vault, err);
    if (!rc) svc_pii_set_vault(p->vault);
    return rc;
}

/* Unkeyed email claims of an older data directory re-keyed, once, before the
 * API serves (customers/email.c); the marker sits with the index key. */
static int migrate_email_index(struct ag_platform *p, struct ag_err *err)
{
    char marker[4200];
    snprintf(marker, sizeof marker, "%s/keys/email-index", p->cfg.data_dir);
    size_t found = 0, rekeyed = 0;
    return svc_email_index_migrate(&p->env, marker, &found, &rekeyed, err);
}

/* ---- service discovery (issue 14) ---- */

/* With the sagas context, the registry and no participant context here: the
 * steps of the contexts served elsewhere go through the mesh (sagas/remote.c). */
static int remote_start(struct ag_platform *p, struct ag_err *err)
{
    p->env.contexts = p->cfg.contexts;
    p->env.disc = &p->disc;
    unsigned sagas = ag_platform_context_bit("sagas"), all = 0;
    for (const char *const *n = ag_platform_context_names(); *n; n++)
        all |= ag_platform_context_bit(*n);
    if (!p->cfg.advertise || !p->cfg.shared || p->cfg.choreography || !p->cfg.contexts ||
        !(p->cfg.contexts & sagas) || (p->cfg.contexts & all) == all)
        return 0;
    int rc = svc_remote_start(p, &p->remote, err);
    p->env.remote = p->remote;
    return rc;
}

/* This instance's load for its heartbeat: the HTTP requests in flight. */
static void member_load(void *ud, struct ag_disc_load *out)
{
    struct ag_platform *p = ud;
    struct ag_obs_family_spec spec = {AG_OBS_GAUGE, "agora_http_requests_in_flight",
                                      "HTTP requests being handled."};
    struct ag_obs_family *f = NULL;
    struct ag_obs_series *s = NULL;
    if (!ag_obs_family_define(p->metrics, &spec, &f) && !ag_obs_series_get(f, NULL, &s))
        out->in_flight = (int64_t)ag_obs_gauge_value(s);
    out->loop_util = -1; /* the server's loops do not report it (yet) */
}

static int registry_start(struct ag_platform *p, struct ag_err *err)
{
    if (!p->cfg.advertise) return 0;
    char addr[AG_HTTP_HOST_MAX + 8], names[128] = "";
    if (*p->cfg.advertise)
        snprintf(addr, sizeof addr, "%s", p->cfg.advertise);
    else
        snprintf(addr, sizeof addr, "%s:%u", p->cfg.host ? p->cfg.host : "127.0.0.1",
                 ag_platform_port(p));
    size_t len = 0;
    for (const char *const *n = ag_platform_context_names(); *n; n++)
        if ((!p->cfg.contexts || (p->cfg.contexts & ag_platform_context_bit(*n))) &&
            len < sizeof names)
            len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", len ? " " : "", *n);
    struct ag_disc_self self = {
        .contexts = names, .address = addr, .load = member_load, .load_ud = p};
    struct ag_disc_config dc = {.registry = p->cfg.readmodels_uri, .self = &self};
    int rc = ag_disc_start(&dc, &p->disc, err);
    if (!rc && p->remote) rc = svc_remote_watch(p->remote, p->disc);
    return rc;
}

int ag_platform_start(const struct ag_platform_config *cfg, struct ag_platform **out,
                      struct ag_err *err)
{
    struct ag_platform *p = ag_calloc(1, sizeof *p);
    if (!p) return ag_err_set(err, AG_ENOMEM, "out of memory");
    p->cfg = *cfg;
    if (cfg->choreography && !cfg->bus_uri) p->cfg.bus_uri = "local:";
    svc_event_schemas_install();
    /* the registry exists before the store (commit durations) and the saga engine
     * (step durations) */
    int rc = ag_obs_registry_new(&p->metrics) ? ag_err_set(err, AG_ENOMEM, "out of memory") : 0;
    if (!rc) rc = open_vault(p, err);
    if (!rc) rc = wait_for_db(p, "store", open_store, err);
    if (!rc) rc = remote_start(p, err);
    struct ag_store_stats st = {0};
    if (!rc) ag_store_stats(p->store, &st);
    if (!rc) rc = svc_place_order_saga(p, err);
    struct ag_saga_engine_config sc = {.store = p->store,
                                       .defs = p->saga_defs,
                                       .ndefs = 1,
                                       .threads = cfg->saga_threads ? cfg->saga_threads
                                                                    : saga_threads_default(),
                                       .metrics = p->metrics,
                                       /* shared: resumed when the starter's lease is taken */
                                       .defer_resume = cfg->shared,
                                       .inline_moves = saga_inline(p->store)};
    if (!rc) rc = ag_saga_engine_start(&sc, &p->sagas, err);
    if (!rc && svc_waiters_new(cfg->max_waiters, &p->waiters))
        rc = ag_err_set(err, AG_ENOMEM, "out of memory");
    p->env.waiters = p->waiters;
    struct svc_admission_config ac = {
        .max_in_flight = cfg->max_sagas_in_flight,
        .target_ms = cfg->admission_target_ms < 0   ? 0
                     : cfg->admission_target_ms > 0 ? (uint64_t)cfg->admission_target_ms
                                                    : SVC_ADMISSION_TARGET_MS,
        .queue_ms = cfg->admission_queue_ms < 0   ? 0
                    : cfg->admission_queue_ms > 0 ? (uint64_t)cfg->admission_queue_ms
                                                  : SVC_ADMISSION_QUEUE_MS,
        .waiters = p->waiters,
        .metrics = p->metrics};
    if (!rc && svc_admission_new(&ac, &p->admission))
        rc = ag_err_set(err, AG_ENOMEM, "out of memory");
    p->env.admission = p->admission;
    if (!rc && svc_logtail_start(p->store, &p->logtail))
        rc = ag_err_set(err, AG_ENOMEM, "cannot start the log tail thread");
    p->env.logtail = p->logtail;
    if (!rc) fill_projections(p);
    if (!rc) rc = svc_cache_start(p, err); /* hooks the projections: before they start */
    if (!rc) rc = start_projections(p, err);
    p->env.projector = p->projector;
    if (!rc) rc = open_read_models(p, err);
    if (!rc) svc_cache_ready(p);
    if (!rc) rc = migrate_email_index(p, err);
    if (!rc && cfg->seed && st.events == 0) rc = svc_seed(&p->env, err);
    if (!rc) rc = svc_bus_start(p, err);
    if (!rc && p->cfg.choreography) rc = svc_chor_start(p, &p->chor, err);
    p->env.chor = p->chor; /* before start_http copies the environment per context */
    if (!rc) rc = start_http(p, err);
    if (!rc) rc = registry_start(p, err);
    if (!rc && svc_monitor_start(p))
        rc = ag_err_set(err, AG_ENOMEM, "cannot start the monitor thread");
    if (rc) {
        ag_platform_stop(p);
        return rc;
    }
    *out = p;
    return 0;
}

uint16_t ag_platform_port(const struct ag_platform *p)
{
    return ag_http_server_port(p->server);
}

const char *ag_platform_socket(const struct ag_platform *p)
{
    return p->cfg.unix_path ? p->cfg.unix_path : "";
}

struct ag_obs_registry *ag_platform_metrics(struct ag_platform *p)
{
    return p->metrics;
}

int ag_platform_run_until_signal(struct ag_platform *p)
{
    return ag_http_server_run_until_signal(p->server, 5000);
}

void ag_platform_stop(struct ag_platform *p)
{
    if (!p) return;
    ag_disc_stop(p->disc); /* out of the registry first: no new calls come here */
    p->disc = NULL;
    svc_monitor_stop(p);
    if (p->server) {
        if (!ag_http_server_draining(p->server)) ag_http_server_drain(p->server, 2000);
        ag_http_server_wait(p->server);
        ag_http_server_free(p->server);
    }
    /* queries are over: their read-only handles close before the writers */
    close_read_models(p);
    /* projections first: the saga starter projection calls into the saga engine */
    ag_projector_stop(p->projector);
    svc_cache_stop(p); /* after the projections (its hooks), before the store (view counts) */
    svc_waiters_free(p->waiters);     /* no parked request is left: the server is gone */
    svc_admission_free(p->admission); /* the orders projection was its last user */
    svc_logtail_stop(p->logtail);     /* no tail is left either; before the store closes */
    ag_saga_engine_stop(p->sagas);
    svc_remote_stop(p->remote); /* after the engine: its steps used it */
    svc_chor_stop(p->chor);     /* its workers use the bus and the store */
    p->chor = NULL;
    svc_bus_stop(p); /* the relay reads the store: before it closes */
    ag_es_repo_free(p->repo);
    ag_store_close(p->store);
    for (int i = 0; i < SVC_SAGA_STEPS; i++) ag_cb_free(p->breakers[i]);
    ag_http_router_free(p->router);
    svc_routes_free(p);
    ag_obs_health_free(p->health);
    ag_obs_registry_free(p->metrics);
    ag_free(p->rms.dir);
    if (p->vault && svc_pii_vault() == p->vault) svc_pii_set_vault(NULL);
    ag_vault_close(p->vault);
    ag_free(p);
}

int ag_platform_rebuild_projection(const char *data_dir, const char *name,
                                   void (*progress)(void *ud, uint64_t done, uint64_t total),
                                   void *ud, struct ag_err *err)
{
    return ag_platform_rebuild_projection_at(data_dir, NULL, name, progress, ud, err);
}

int ag_platform_rebuild_projection_at(const char *data_dir, const char *readmodels_uri,
                                      const char *name,
                                      void (*progress)(void *ud, uint64_t done, uint64_t total),
                                      void *ud, struct ag_err *err)
{
    struct ag_platform tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.cfg.data_dir = data_dir;
    tmp.cfg.readmodels_uri = readmodels_uri;
    /* the sagas read model folds the choreographed flow too in that mode */
    const char *mode = getenv("AGORA_SAGA_MODE");
    tmp.cfg.choreography = mode && strcmp(mode, "choreography") == 0;
    /* the sagas read model needs the saga definitions (their step names) */
    int rc = svc_place_order_saga(&tmp, err);
    if (!rc) fill_projections(&tmp);
    const struct ag_projection *proj = NULL;
    for (int i = 0; i <= RM_COUNT && !rc; i++)
        if (strcmp(tmp.projs[i].name, name) == 0) proj = &tmp.projs[i];
    if (!rc && !proj) rc = ag_err_set(err, AG_ENOTFOUND, "no projection named '%s'", name);
    if (!rc && proj->apply == tmp.projs[RM_COUNT].apply)
        rc = ag_err_set(err, AG_EINVAL, "'%s' starts sagas; it is not a read model to rebuild",
                        name);
    if (!rc) rc = open_store(&tmp, err);
    if (!rc) rc = ag_projection_rebuild(tmp.store, tmp.rms.dir, proj, progress, ud, err);
    ag_es_repo_free(tmp.repo);
    ag_store_close(tmp.store);
    for (int i = 0; i < SVC_SAGA_STEPS; i++) ag_cb_free(tmp.breakers[i]);
    ag_free(tmp.rms.dir);
    return rc;
}
