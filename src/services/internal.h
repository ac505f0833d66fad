/* Private declarations shared by the bounded-context services (src/services). */
#ifndef AGORA_SERVICES_INTERNAL_H
#define AGORA_SERVICES_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <uv.h>

#include "agora/bus.h"
#include "agora/domain.h"
#include "agora/es.h"
#include "agora/http.h"
#include "agora/platform.h"
#include "agora/readmodel.h"
#include "agora/relay.h"
#include "agora/saga.h"

/* Read models, one database of the read-model port each (index into platform.rm[]). */
enum rm_id {
    RM_CUSTOMERS,
    RM_PRODUCTS,
    RM_ACCOUNTS,
    RM_STOCK,
    RM_ORDERS,
    RM_SHIPMENTS,
    RM_SAGAS,
    RM_COUNT
};

/* Who calls: the gateway's verified identity (x-user-id, x-user-roles), or
 * nobody. Without a gateway (`--no-gateway`) a caller without identity headers
 * is the local operator, an admin. */
struct svc_principal {
    char sub[128];      /* the JWT's sub; "" when anonymous */
    bool authenticated; /* a principal (any role) */
    bool admin;         /* role admin: may do everything */
    bool carrier;       /* role carrier: may report deliveries (SVC_CARRIER routes) */
    bool service;       /* another instance over the mesh (SVC_SERVICE routes): role
                           service, sub "service:...", signed with the mesh key */
};

/* Who may call a route (ARCHITECTURE §8). A new route is admin-only until decided. */
enum svc_access {
    SVC_ADMIN = 0, /* role admin */
    SVC_OWNER,     /* any principal; the handler lets it touch only its own resources */
    SVC_PUBLIC,    /* anyone, anonymous included */
    SVC_CARRIER,   /* role admin or role carrier (the delivery company's principal) */
    SVC_SERVICE,   /* another agora serve instance only (mesh-signed role service) */
};

struct svc_job;

/* One route of a context: the handler runs on the threadpool with the {param} and
 * the query parameters copied into the job. */
struct svc_route {
    const char *method, *path;
    enum svc_access access;
    int (*fn)(struct svc_job *j);
    const char *param;    /* the path parameter copied into j->param, or NULL */
    const char *noun;     /* what the parameter names, for 404s ("order") */
    const char *query[4]; /* query parameters copied into j->q (":name": path parameter name) */
    /* Optional, for a route whose body is not a plain JSON document (POST /mcp):
     * runs on the loop thread instead of the JSON body parse and copies what the
     * handler needs into j->ext; nonzero when it answered the request itself. */
    int (*prepare)(struct svc_job *j, struct ag_http_req *req);
    /* Optional: on the loop thread before the answer (headers); frees j->ext. */
    void (*finish)(struct svc_job *j, struct ag_http_req *req);
    /* Optional: on the loop thread after the handler ran, before `finish` and the
     * answer: nonzero when it kept the job (parked it, svc_wait_park), which is
     * then answered or run again later. */
    int (*park)(struct svc_job *j, struct ag_http_req *req);
};

#define SVC_MAX_CONTEXTS 16
#define SVC_SAGA_STEPS   5 /* PlaceOrder's steps */

struct svc_binding; /* a registered route (access.c) */

/* The read models' query handles, shared by the contexts: common.c queries them,
 * platform.c opens them and reopens one that a rebuild replaced. */
struct svc_readmodels {
    char *dir;                       /* <data>/readmodels */
    struct ag_rm *rm[RM_COUNT];      /* read-only query handles */
    pthread_rwlock_t lock[RM_COUNT]; /* queries read-lock; reopening write-locks */
    uint64_t gen[RM_COUNT];          /* the read model's generation rm[i] was opened on */
    bool locks_init;                 /* lock[] initialised */
    /* One more read-only handle per read model for reads that must see the last
     * commit (svc_rm_query_fresh), one query at a time: opened on first use. */
    struct ag_rm *fresh[RM_COUNT];
    uint64_t fresh_gen[RM_COUNT];
    pthread_mutex_t fresh_lock;
};

/* What a context's handlers — and the saga's steps and the seed — may use: the
 * log, the aggregates, the read models and their positions. Never the process
 * (its server, router, monitor or another context's policies). platform.c builds
 * one per context; a job carries its route's. */
struct svc_env {
    const char *name;               /* the context */
    struct ag_store *store;         /* the log: claims, idempotency records */
    struct ag_es_repo *repo;        /* aggregates */
    struct ag_projector *projector; /* read-model positions, damage reports */
    struct svc_readmodels *rms;     /* read-model queries */
    struct ag_saga_engine *sagas;   /* the sagas context's only (retry); else NULL */
    struct ag_cb *const *breakers;  /* the ops context's only: the saga steps' breakers */
    struct ag_obs_family *denied;   /* agora_authz_denied_total{reason} */
    bool behind_gateway;            /* identity from the gateway's x-user-* headers */
    const char *mesh_key;           /* ... signed with this (x-user-sig), or NULL: unsigned */
    const struct ag_clock *clock;   /* idempotency times; NULL = system */
    uint64_t idem_ttl_ms;           /* Idempotency-Key records expire after; 0 = 24 h */
    uint64_t saga_retention_ms;     /* ended sagas are scavenged after; 0 = 7 days */
    /* the mcp context's only: every context's environment (its tools run their
     * handlers), else NULL */
    struct svc_env *peers;
    size_t npeers;
    struct ag_bus *bus;              /* the message bus (--bus), or NULL */
    struct ag_relay *relay;          /* the outbox relay publishing to it, or NULL */
    struct svc_waiters *waiters;     /* parked blocking reads (wait.c), or NULL */
    struct svc_chor *chor;           /* choreography's bus workers (their dead letters), or NULL */
    struct ag_obs_registry *metrics; /* the process's registry (read by console_stats.c) */
    struct svc_logtail *logtail;     /* live tails of $all (logtail.c), or NULL */
    struct svc_admission *admission; /* orders in flight (admission.c), or NULL: unbounded */
    struct svc_cache *cache;         /* the read caches (readcache.c), or NULL: none */
    /* issue 14: the contexts served here (ag_platform_config.contexts; 0 = all), the
     * registry (GET /admin/cluster; &platform->disc, set once it runs) and the
     * orchestrator's calls to participants served elsewhere (sagas/remote.c) */
    unsigned contexts;
    struct ag_disc *const *disc;
    struct svc_remote *remote;
};

struct ag_platform {
    struct ag_platform_config cfg;
    struct ag_vault *vault;       /* <data>/keys: the customers' data keys (pii.c) */
    struct svc_binding *bindings; /* registered routes, freed at stop */
    struct ag_store *store;
    struct ag_es_repo *repo;
    struct ag_projector *projector;
    struct ag_projection projs[RM_COUNT + 1]; /* + the saga starter */
    struct svc_readmodels rms;                /* the read models' query handles */
    struct svc_env env;                       /* the platform's own: seed, saga steps */
    struct svc_env envs[SVC_MAX_CONTEXTS];    /* one per context, in contexts[] order */
    struct ag_saga_engine *sagas;
    struct ag_saga_def saga_defs[1];
    struct ag_saga_step place_order_steps[SVC_SAGA_STEPS];
    struct ag_pipeline step_policy[SVC_SAGA_STEPS]; /* retry + breaker per saga step */
    struct ag_cb *breakers[SVC_SAGA_STEPS];         /* one per participant (step) */
    struct ag_http_router *router;
    struct ag_http_server *server;
    struct ag_obs_registry *metrics;
    struct ag_obs_health *health;
    /* the monitor thread: publishes projection lag, saga and store figures as metrics */
    pthread_t monitor;
    bool monitor_started;
    pthread_mutex_t monitor_lock;
    pthread_cond_t monitor_cond;
    bool monitor_stop;
    struct ag_bus *bus;              /* --bus: the message bus, or NULL (bus.c) */
    struct ag_relay *relay;          /* the outbox relay onto it */
    struct svc_chor *chor;           /* --saga-mode choreography: the reactions (choreography.c) */
    struct svc_waiters *waiters;     /* parked blocking reads of orders (wait.c) */
    struct svc_logtail *logtail;     /* GET /admin/log/stream's notifier (logtail.c) */
    struct svc_admission *admission; /* orders in flight (admission.c) */
    struct svc_cache *cache;         /* the read caches (readcache.c), or NULL */
    struct ag_rm *lease_rm;          /* cfg.shared: the relay's lease (rm_leases; bus.c) */
    struct ag_disc *disc;            /* cfg.advertise: this instance in the registry */
    struct svc_remote *remote;       /* participants reached over the mesh, or NULL */
    double lease_pinged;             /* when the relay's lease handle was last pinged */
};

/* ---- an order as the PlaceOrder steps need it (sagas/placeorder.c) ---- */

/* What the orchestrated steps and the choreographed reactions read of an order:
 * a copy taken under the repository's read, so it outlives the cached state. */
struct svc_order_view {
    bool exists;
    enum ag_order_status status;
    char customer_id[AG_DOM_ID_MAX];
    struct ag_price_line lines[100];
    size_t n;
    struct ag_money total;
    struct ag_address address;
};

/* ag_es_read's view callback filling a struct svc_order_view (ud). */
void svc_view_order(const void *state, int64_t version, void *ud);
/* The payment account of customer `customer_id` into `out` ("" when none). */
int svc_account_of(struct svc_env *p, const char *customer_id, char out[AG_DOM_ID_MAX],
                   struct ag_err *err);

/* ---- PlaceOrder as choreography (sagas/choreography.c, choreography_view.c) ---- */

struct svc_chor;
/* Open the four contexts' bus workers on p->bus and start their threads. */
int svc_chor_start(struct ag_platform *p, struct svc_chor **out, struct ag_err *err);
void svc_chor_stop(struct svc_chor *c);
/* The i-th bus worker (0..3: chor-inventory, -payments, -shipping, -ordering),
 * NULL past the last or when `c` is NULL: the dead letters' view (dlq.c). */
struct ag_bus_worker *svc_chor_worker(const struct svc_chor *c, size_t i);
/* Turn the saga projection `sagas` into one that also folds the choreographed
 * flow's events into the same rows. */
void svc_chor_projection(struct ag_projection *sagas);

/* ---- the bus: published language, relay, ops (bus.c) ---- */

/* Open cfg.bus_uri (if any) and start the relay. */
int svc_bus_start(struct ag_platform *p, struct ag_err *err);
/* The "bus" readiness check and the relay's metrics (after the registry exists). */
void svc_bus_observe(struct ag_platform *p);
void svc_bus_stop(struct ag_platform *p);
/* GET /admin/bus. */
int svc_bus_admin(struct svc_job *j);
/* Dead letters (src/services/dlq.c): GET /admin/dlq, POST /admin/dlq/{id}/replay,
 * DELETE /admin/dlq/{id}; an id is "<kind>:<list>:<n>" (svc_dlq_id_ok). */
int svc_dlq_list(struct svc_job *j);
int svc_dlq_replay(struct svc_job *j);
int svc_dlq_drop(struct svc_job *j);
bool svc_dlq_id_ok(const char *s);
struct ag_relay_msg;
/* The relay's mapping: domain event → integration event (an ag_relay_map_fn). */
int svc_published_language(void *ud, struct ag_store *s, const struct ag_event *ev,
                           struct ag_relay_msg *out);
/* The same data through the jansson tree only (the mapping's reference, for its
 * tests; events that need the store — OrderPlaced, the account's money — are not
 * for it): 1 and *data (ag_free), 0 not published, < 0 an AG_E* error. */
int svc_published_language_tree(const struct ag_event *ev, char **data);

/* Start/stop the metrics monitor (platform.c). */
int svc_monitor_start(struct ag_platform *p);
void svc_monitor_stop(struct ag_platform *p);

/* Aggregate types for the repository (from the domain's tables). */
extern const struct ag_es_type svc_customer_type, svc_product_type, svc_order_type, svc_stock_type,
    svc_account_type, svc_shipment_type;

/* ---- promotions (catalog/promotions.c) ---- */

extern const struct ag_es_type svc_promo_type;
#define SVC_MAX_PROMOS 5 /* codes per order */
/* The promotion id of `code` (a UUID derived from it). */
void svc_promo_id(const char *code, char out[AG_UUID_STRLEN + 1]);
struct svc_job;
/* POST /api/v1/promotions, GET /api/v1/promotions/{id} (admin). */
int svc_promo_create(struct svc_job *j);
int svc_promo_get(struct svc_job *j);
/* The order body's promotionCodes into codes[] (their count); bad ones recorded as
 * field errors (400). */
int svc_promos_parse(struct svc_job *j, char codes[][AG_PROMO_CODE_MAX], size_t max);
/* Each code usable now for an order in `currency` (else a field error naming it at
 * /promotionCodes/<i>: unknown, not valid yet, expired, exhausted, currency, not
 * stackable); their pricing terms into out[]. The number refused (-1: no memory). */
int svc_promos_check(struct svc_job *j, char codes[][AG_PROMO_CODE_MAX], size_t n,
                     const char *currency, struct ag_promotion *out);
/* Redeem every code for `order_id`; nonzero after answering (422 when a code ran out
 * meanwhile). */
int svc_promos_redeem(struct svc_job *j, char codes[][AG_PROMO_CODE_MAX], size_t n,
                      const char *order_id, const char *currency);

/* ---- work off the loop ---- */

/* A request handled on the libuv threadpool. Everything the work needs is copied
 * from the request on the loop thread before it is queued; the work never touches
 * the request. */
struct svc_job {
    uv_work_t work;
    struct ag_http_req *req;
    struct svc_env *env; /* its context's environment */
    int (*fn)(struct svc_job *j);
    struct svc_principal who; /* the caller */
    char cid[40];             /* the caller's customer id, once resolved ("" none) */
    bool cid_known;           /* cid resolved */
    json_t *body;             /* parsed request body or NULL */
    char param[128];          /* the route's {id} parameter, if any */
    const char *q[4];         /* selected query parameters (copied) */
    char idem_key[256];       /* Idempotency-Key header, "" when none */
    bool idem_claimed;        /* svc_idem_begin claimed the key for this request */
    bool idem_deferred;   /* no record yet: it commits with the command (svc_idem_begin_defer) */
    int64_t idem_version; /* the version of that claim in the key's stream */
    char meta[512];       /* event metadata JSON (actor, request id, traceparent) */
    /* answer */
    int status;   /* HTTP status */
    json_t *resp; /* JSON body (success) */
    bool problem; /* answer with problem+json */
    char title[64];
    char detail[512];
    json_t *errors;       /* problem errors[] or NULL */
    char location[256];   /* Location header, "" for none */
    char replayed;        /* answered from the idempotency record */
    uint64_t rm_position; /* projection position the answer reflects (with rm_read) */
    bool rm_read;         /* the answer came from a read model: X-Projection-Position */
    void *ext;            /* the route's own state (svc_route.prepare), or NULL */
    /* personal data in the answer: the customer whose data key seals the members
     * `pii_fields` (NULL-terminated) of the body in its idempotency record */
    char pii_subject[40];
    const char *const *pii_fields;
    void (*finish)(struct svc_job *j, struct ag_http_req *req); /* svc_route.finish */
    int (*park)(struct svc_job *j, struct ag_http_req *req);    /* svc_route.park */
    char etag[80];                                              /* ETag header ("" none) */
    char pref_applied[32]; /* Preference-Applied header ("" none) */
    bool wait_woken;       /* run again because its key changed (wait.c): read fresh */
    bool streamed;         /* answered as a stream: `finish` ended it, nothing to respond */
    bool rm_fresh;         /* svc_get_one reads past the last commit (a cache fill) */
    char *raw;             /* a JSON body as bytes (the read caches' answers), or NULL */
    size_t raw_len;
};

/* ---- read caches (readcache.c) ----
 *
 * Cache-aside for the catalog's and the customers' reads: an in-process LRU + TTL
 * per kind (src/cache), or Redis for the catalog when the platform runs with
 * --cache redis://...; invalidated by the projections after they commit. See
 * readcache.c for why a cached answer never claims a newer position than its data. */
struct svc_cache;
enum svc_cache_kind {
    SVC_CACHE_PRODUCT,  /* GET /products/{id}: "p:<id>" */
    SVC_CACHE_LIST,     /* GET /products: "l:<limit>:<cursor>" */
    SVC_CACHE_CUSTOMER, /* GET /customers/{id}, /me: "c:<id>" (in-process only) */
    SVC_CACHE_STOCK,    /* GET /inventory/{id}: "s:<id>" (Redis only: write-through) */
    SVC_CACHE_KINDS
};
/* One read through the cache (svc_cache_lookup fills it, svc_cache_fill uses it). */
struct svc_cache_read {
    struct svc_cache *c;
    enum svc_cache_kind kind;
    char key[192];
    bool on;         /* this read may be answered from and stored into the cache */
    bool fresh;      /* read the source past the last commit (svc_rm_query_fresh) */
    uint64_t gen;    /* the cache's generation before the source was read */
    uint64_t pos;    /* the projection position before the source was read */
    long long epoch; /* Redis lists: the list epoch seen before the read */
};
/* 1 when the job was answered from the cache (raw body, ETag, position); 0 to read
 * the source into j->resp and then call svc_cache_fill. */
int svc_cache_lookup(struct svc_job *j, enum svc_cache_kind kind, const char *key,
                     struct svc_cache_read *r);
/* After the source read (j->resp, status 200): answer with its bytes and a strong
 * ETag, the position taken before the read, and store it (a no-op for others). */
void svc_cache_fill(struct svc_job *j, struct svc_cache_read *r);
/* A query of the source for this read: fresh when the answer will be cached. */
typedef json_t *(*svc_row_fn)(const struct ag_rm_row *r); /* as below (C11 allows repeating) */
json_t *svc_cache_query(struct svc_job *j, const struct svc_cache_read *r, enum rm_id rm,
                        const char *sql, const char *const *args, size_t nargs, svc_row_fn row);
/* svc_get_one through the cache of `kind` (key "<prefix><id>"); only when the
 * caller may see any owner's resource or `owner` is `id` itself. */
struct svc_one;
int svc_cache_get_one(struct svc_job *j, enum svc_cache_kind kind, const struct svc_one *one,
                      const char *id, const char *owner);
/* The route hooks of a cached GET: `prepare` answers an in-process hit on the loop
 * thread at once, else keeps If-None-Match; `finish` answers 304 when it matches. */
int svc_cache_prepare_product(struct svc_job *j, struct ag_http_req *req);
int svc_cache_prepare_list(struct svc_job *j, struct ag_http_req *req);
void svc_cache_finish(struct svc_job *j, struct ag_http_req *req);
/* Drop entry `id` of `kind` now (a customer's erasure: before the event is projected). */
void svc_cache_forget(struct svc_cache *c, enum svc_cache_kind kind, const char *id);
/* Count a view of product `id` (write-behind: aggregated, flushed to the log). */
void svc_cache_view(struct svc_cache *c, const char *id);
/* A projection's runner, inside its transaction: entry `id` of `kind` changes. */
void svc_cache_touch(void *ud, const char *id);
/* Build the caches from the platform's configuration (none: *out NULL), wire the
 * projections' hooks (before the projector starts), start the view flusher. */
int svc_cache_start(struct ag_platform *p, struct ag_err *err);
/* The read models are open: write-through may read them (until then it deletes). */
void svc_cache_ready(struct ag_platform *p);
void svc_cache_stop(struct ag_platform *p);
#define SVC_EV_PRODUCT_VIEWS "ProductViewsCounted" /* {"counts": {"<productId>": n}} */

/* ---- live tail of the log (logtail.c) ---- */

struct svc_logtail;
/* Start the notifier thread (a live subscription to $all that wakes open tails). */
int svc_logtail_start(struct ag_store *store, struct svc_logtail **out);
/* Stop it: after the HTTP server is gone (no tail left), before the store closes. */
void svc_logtail_stop(struct svc_logtail *t);

/* ---- admission control of saga-starting commands (admission.c) ---- */

/* Orders in flight (accepted, not yet confirmed or cancelled) are bounded by an
 * AIMD limit on the confirm latency under a ceiling; over it the command is
 * answered 503 with Retry-After before anything is done. */
struct svc_admission;
#define SVC_ADMISSION_DEFAULT   256  /* the ceiling: ~900 orders/s x ~280 ms */
#define SVC_ADMISSION_TARGET_MS 500  /* the confirm latency (p90) the limit aims at */
#define SVC_ADMISSION_QUEUE_MS  1000 /* how long a command may wait for a slot */
struct svc_admission_config {
    uint32_t max_in_flight;      /* the ceiling; 0 = SVC_ADMISSION_DEFAULT */
    uint64_t target_ms;          /* confirm latency target; 0 = a static limit */
    uint64_t queue_ms;           /* a command waits this long for a slot; 0 = 503 at once */
    struct svc_waiters *waiters; /* where waiting commands park (NULL: no queue) */
    struct ag_obs_registry *metrics;
};
int svc_admission_new(const struct svc_admission_config *cfg, struct svc_admission **out);
void svc_admission_free(struct svc_admission *a);
/* Take a slot (any thread): false when the limit is reached. */
bool svc_admission_enter(struct svc_admission *a);
/* Give back a slot taken by svc_admission_enter (the command did not place an order). */
void svc_admission_leave(struct svc_admission *a);
/* The slot becomes order `id`'s, accepted now. */
void svc_admission_track(struct svc_admission *a, const char *id);
/* The orders projection applied the order's OrderConfirmed (true) or OrderCancelled. */
void svc_admission_done(struct svc_admission *a, const char *id, bool confirmed);
uint32_t svc_admission_limit(struct svc_admission *a);
/* Route hooks (svc_route.prepare / .finish / .park) of the saga-starting
 * commands: parse the body, take a slot (or, over the limit, wait for one up to
 * the queue time, else answer 503); give back a slot the handler did not use. */
int svc_admission_prepare(struct svc_job *j, struct ag_http_req *req);
void svc_admission_finish(struct svc_job *j, struct ag_http_req *req);
int svc_admission_attach(struct svc_job *j); /* no request: MCP tools */
int svc_admission_park(struct svc_job *j, struct ag_http_req *req);
/* First thing in the handler: true when the job is still waiting for a slot
 * and has been answered 503 (its park hook then parks it until a slot frees). */
bool svc_admission_check(struct svc_job *j);
/* In the handler, once the order is accepted (202): the job's slot is the order's. */
void svc_admission_placed(struct svc_job *j, const char *order_id);

/* ---- blocking reads (wait.c) ---- */

/* Requests parked until a keyed resource changes (`Prefer: wait=N` with
 * If-None-Match). Keys are resource ids; the one notifier thread (the
 * resource's projection) marks keys as it applies events and wakes their
 * waiters once its transaction committed. */
struct svc_waiters;
#define SVC_WAIT_MAX_S      30   /* the longest wait a request gets */
#define SVC_WAITERS_DEFAULT 1024 /* parked requests at once, over all loops */
int svc_waiters_new(uint32_t max, struct svc_waiters **out);
void svc_waiters_free(struct svc_waiters *w);
/* The change sequence of `key` (any thread): read it before reading the resource,
 * hand it to svc_wait_park, which re-runs the job at once when it moved. */
uint64_t svc_waiters_seq(struct svc_waiters *w, const char *key);
/* The notifier thread: `key` changed in the transaction being applied. */
void svc_waiters_mark(struct svc_waiters *w, const char *key);
/* The notifier thread, after the commit (an ag_projection.committed): wake the
 * marked keys' waiters. */
void svc_waiters_committed(void *w);
/* Any thread: bump `key`'s sequence and wake at most n of its waiters, oldest first. */
void svc_waiters_wake(struct svc_waiters *w, const char *key, uint32_t n);
/* Parked requests now (tests, metrics). */
uint32_t svc_waiters_count(struct svc_waiters *w);
/* Park job `j` (already answered 304 by its handler) on its loop until `key`
 * changes (the job runs again: *seq is refreshed first), monotonic `deadline_ns`
 * passes, the client goes away or the server drains (answered as it is). 0 when
 * it kept the job; AG_EBULKHEAD_FULL over the limit, AG_ECLOSED when the client
 * is gone, AG_ENOMEM: the caller answers. */
int svc_wait_park(struct svc_waiters *w, struct svc_job *j, struct ag_http_req *req,
                  const char *key, uint64_t *seq, uint64_t deadline_ns);
/* Answer a job from the loop thread (what the threadpool's completion does). */
void svc_job_answer(struct svc_job *j);
/* Run a job's handler again on the threadpool (its answer reset first). */
int svc_job_requeue(struct svc_job *j);

/* Run a job's handler on this thread and map a bare error code to its answer
 * (what the threadpool does for a queued job; an MCP tool runs a route's handler
 * this way with its own job). */
void svc_job_run(struct svc_job *j);

/* ---- routes and who may call them (access.c) ---- */

/* Queue route `r`'s handler for `req` on the threadpool, as `who`. */
int svc_job_start(struct svc_env *env, struct ag_http_req *req, const struct svc_route *r,
                  const struct svc_principal *who);
/* Register a context's routes; each checks its access before its handler runs. */
int svc_routes(struct ag_platform *p, struct svc_env *env, const struct svc_route *routes,
               size_t n);
void svc_routes_free(struct ag_platform *p);
/* The caller's customer id (bound to its sub at registration), or NULL. */
const char *svc_caller_customer(struct svc_job *j);
/* True when the caller may act on customer `customer_id`: an admin, or its owner. */
bool svc_owns(struct svc_job *j, const char *customer_id);
/* The customer id a read must be filtered to: NULL for an admin (no filter), the
 * caller's customer id, or "" (matches nothing) for a principal without one. */
const char *svc_owner_filter(struct svc_job *j);
/* True when order `order_id` exists and the caller may act on it (ordering/api.c). */
bool svc_owns_order(struct svc_job *j, const char *order_id);
/* Answer 401/403 (logged and counted) unless the caller is an admin; 1 if refused. */
int svc_require_admin(struct svc_job *j);
/* The customer bound to `sub` into out (AG_ENOTFOUND when none). */
int svc_principal_customer(struct svc_env *p, const char *sub, char out[40]);
/* A UUID in its canonical 36-character form (every id agora mints). */
bool svc_uuid_ok(const char *s);
/* Claim `stream` for `owner_id` (unique emails, one customer per principal). A
 * claim whose owner never got its `owner_prefix` stream (a crash in between) is
 * taken over once it is older than a lease. AG_EEXISTS with the holder in
 * `holder` when another owner has it. */
int svc_claim(struct svc_env *p, const char *stream, const char *owner_id, const char *owner_prefix,
              char holder[40], struct ag_err *err);
/* A claim to commit as one part of a multi-stream append with its owner's
 * events (svc_claim_prepare). The part points into the struct: do not copy it. */
struct svc_claim_part {
    char stream[96];
    char data[160];
    struct ag_event_data ev;
    struct ag_append_part part; /* the claim event at the expected version */
    bool held;                  /* already owner_id's: nothing to append */
};
/* Decide how `owner_id` takes claim `stream` now, by svc_claim's rules, without
 * writing: 0 with out->part (expected "no stream", or the version of a released
 * or abandoned claim being taken over) or with out->held; AG_EEXISTS with the
 * holder in `holder` (optional) when a live other owner has it; AG_EIO when it
 * cannot be read. A conflict on the part when appended means the claim moved
 * meanwhile: prepare again (bounded). */
int svc_claim_prepare(struct svc_env *p, const char *stream, const char *owner_id,
                      const char *owner_prefix, char holder[40], struct svc_claim_part *out,
                      struct ag_err *err);
/* svc_claim_prepare for the binding of principal `sub` to customer `id` (one
 * customer per principal): AG_EEXISTS with the bound id in `existing` when `sub`
 * already has another customer. */
int svc_bind_principal_prepare(struct svc_env *p, const char *sub, const char *id,
                               char existing[40], struct svc_claim_part *out, struct ag_err *err);
/* The event that ends a claim: the claimed value is free again. */
#define SVC_CLAIM_RELEASED AG_CLAIM_RELEASED
/* Release `owner_id`'s claim on `stream` (ClaimReleased, which has no owner): a
 * later svc_claim takes it. 0 also when the claim is absent or someone else's. */
int svc_release_claim(struct svc_env *p, const char *stream, const char *owner_id,
                      struct ag_err *err);
/* The unique-email claim stream of `email` (customers/email.c): a keyed MAC of
 * the lower-cased email under the vault's index key. */
#define SVC_EMAIL_STREAM_MAX 64
int svc_email_stream(const char *email, char out[SVC_EMAIL_STREAM_MAX], struct ag_err *err);
/* Customer `id`'s email, opened, into email ("" when the customer does not exist
 * or was erased). */
int svc_customer_email(struct svc_env *p, const char *id, char email[256], struct ag_err *err);
/* Re-key the unkeyed email claims of an older data directory once (`marker`, a
 * file, records that it ran): *found unkeyed claims, *rekeyed of them claimed
 * again under their keyed name; every unkeyed claim is released. */
int svc_email_index_migrate(struct svc_env *p, const char *marker, size_t *found, size_t *rekeyed,
                            struct ag_err *err);
/* Answer helpers (on the worker thread, fill the job). */
int svc_ok(struct svc_job *j, int status, json_t *body);
int svc_problem(struct svc_job *j, int status, const char *title, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Map an AG_E* code + message to a problem. */
int svc_error(struct svc_job *j, int code, const struct ag_err *err);
/* Field validation: collect {pointer, detail} entries. */
void svc_field_error(struct svc_job *j, const char *pointer, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Record a field error for the body when it is not an object (pointer "") or for
 * each member not in `allowed` (NULL-terminated; pointer "/<name>"); the count of
 * errors recorded. A missing body passes (no fields). */
int svc_body_object(struct svc_job *j, const char *const *allowed);
/* Body member `name` as Money into out: 0; 1 after recording a field error (its
 * pointer names the bad part: "/price/currency"); -1 when absent and optional. */
int svc_money_field(struct svc_job *j, const char *name, bool required, struct ag_money *out);
/* Answer 400 (or `status`) with the collected field errors; 0 when there are none. */
int svc_fields_failed(struct svc_job *j, int status);

/* ---- commands ---- */

/* Run a domain decide function as a repository command. `decide` has the shape of
 * the domain's functions: (state, cmd, out, err). */
typedef int (*svc_dom_fn)(const void *state, const void *cmd, struct ag_dom_events *out,
                          struct ag_err *err);
/* A command on one aggregate: `decide` (the domain's function) runs on the state of
 * the aggregate `id` of `type` (its stream is "<type prefix>-<id>"); the new events
 * carry `meta`; `view` (optional) sees the state after the command. */
struct svc_cmd {
    const struct ag_es_type *type;
    const char *id;
    svc_dom_fn decide;
    const void *cmd;
    const char *meta;
    ag_es_view_fn view;
    void *view_ud;
};
int svc_exec(struct svc_env *p, const struct svc_cmd *c, struct ag_err *err);
/* svc_exec with `nextra` parts of other streams (a claim: svc_claim_prepare)
 * committed in the same multi-stream append (ag_es_execute_extra). */
int svc_exec_extra(struct svc_env *p, const struct svc_cmd *c, const struct ag_append_part *extra,
                   size_t nextra, struct ag_err *err);
/* svc_exec without blocking on the append (ag_es_execute_async): `c->cmd` and
 * `c->view_ud` are borrowed until `done`, the rest is copied. `extra` (NULL: none)
 * is one part of another stream committed with the command's events (a saga's
 * step record). 0 (then `done` runs exactly once, maybe before this returns) or
 * an error (no `done`). */
typedef void (*svc_done_fn)(void *ud, int rc, const struct ag_err *err);
struct svc_async {
    struct ag_store_loop *loop;
    const struct ag_append_part *extra;
    svc_done_fn done;
    void *ud;
};
int svc_exec_async(struct svc_env *p, const struct svc_cmd *c, const struct svc_async *a);
/* A domain decision over two aggregates (pair.c): (state a, state b, cmd, out a,
 * out b, err), the shape of ag_payment_charge and ag_reservation_hold. */
typedef int (*svc_dom2_fn)(const void *a, const void *b, const void *cmd,
                           struct ag_dom_events *out_a, struct ag_dom_events *out_b,
                           struct ag_err *err);
/* Adapters from a domain function with typed arguments (ag_<fn>) to svc_dom_fn /
 * svc_dom2_fn: SVC_DECIDE(fn) and SVC_DECIDE2(fn) define a static d_<fn>. One
 * definition serves the orchestrated steps and the choreographed reactions. */
#define SVC_DECIDE(fn)                                                                             \
    static int d_##fn(const void *st, const void *cmd, struct ag_dom_events *out,                  \
                      struct ag_err *err)                                                          \
    {                                                                                              \
        return ag_##fn(st, cmd, out, err);                                                         \
    }
#define SVC_DECIDE2(fn)                                                                            \
    static int d_##fn(const void *a, const void *b, const void *cmd, struct ag_dom_events *out_a,  \
                      struct ag_dom_events *out_b, struct ag_err *err)                             \
    {                                                                                              \
        return ag_##fn(a, b, cmd, out_a, out_b, err);                                              \
    }
/* A command over aggregate `id_a` of `type_a` and `id_b` of `type_b`, whose new
 * events are appended together in one multi-stream append (ag_es_execute_multi). */
struct svc_cmd2 {
    const struct ag_es_type *type_a;
    const char *id_a;
    const struct ag_es_type *type_b;
    const char *id_b;
    svc_dom2_fn decide;
    const void *cmd;
    const char *meta;
};
int svc_exec2(struct svc_env *p, const struct svc_cmd2 *c, struct ag_err *err);
/* svc_exec2 without blocking (ag_es_execute_multi_async), as svc_exec_async is
 * to svc_exec: `c->cmd` is borrowed until `done`, the rest is copied; `a->extra`
 * commits in the same multi-stream append as both aggregates' events. */
int svc_exec2_async(struct svc_env *p, const struct svc_cmd2 *c, const struct svc_async *a);
/* The per-order aggregates beside Account and StockItem (pair.c). */
extern const struct ag_es_type svc_payment_type, svc_reservation_type;
/* The current state of aggregate `id` of type `t` through `view` (AG_ENOTFOUND when
 * it has no events). */
int svc_read(struct svc_env *p, const struct ag_es_type *t, const char *id, ag_es_view_fn view,
             void *ud, struct ag_err *err);
/* "<prefix>-<id>" into out. */
void svc_stream(char *out, size_t n, const char *prefix, const char *id);
/* A new UUIDv7 string, or (with a key) a UUID derived from `scope` + `key`. */
void svc_new_id(char out[AG_UUID_STRLEN + 1], const char *scope, const char *key);
/* svc_new_id for a job: with its Idempotency-Key, the id is derived from the
 * scope, the caller's principal and the key (keys are per principal). */
void svc_job_id(struct svc_job *j, const char *scope, char out[AG_UUID_STRLEN + 1]);
int64_t svc_now_ms(void);
bool svc_stream_exists(struct svc_env *p, const char *prefix, const char *id);

/* ---- idempotency keys on creating POSTs ---- */

/* Returns 1 when the job was answered from an earlier identical request (or
 * refused: key reused with another body, or still in progress), 0 to go on. */
int svc_idem_begin(struct svc_job *j, const char *scope);
/* The stream of the job's key in `scope`: per principal, so the same key from two
 * principals names two records. */
void svc_idem_stream(const struct svc_job *j, const char *scope, char out[64]);
/* Record the job's answer for its key (after the work); after a 5xx, or a 409 from
 * a lost concurrency race, release the key instead so a retry proceeds as new. */
void svc_idem_end(struct svc_job *j, const char *scope);
/* svc_idem_begin, except that with `defer` and no record of the key yet nothing
 * is appended: j->idem_deferred, and the record is to commit with the command
 * (see common.c "the key's record committed with the command"). Only for a
 * command that is idempotent by itself (ids from svc_job_id). */
int svc_idem_begin_defer(struct svc_job *j, const char *scope, bool defer);
/* A deferred key's record for the answer j holds now (set it first): claim and
 * answer, one part of the command's multi-stream append, expected "no stream".
 * Free with svc_idem_rec_free. */
struct svc_idem_rec {
    char stream[64];
    char claim[96];
    char *answer;
    struct ag_event_data ev[2];
    struct ag_append_part part;
};
int svc_idem_rec_make(struct svc_job *j, const char *scope, struct svc_idem_rec *out);
void svc_idem_rec_free(struct svc_idem_rec *r);
/* After the work, whatever happened: a deferred key whose record did not commit
 * with the command is claimed now and then recorded (or released) as
 * svc_idem_end does; else svc_idem_end. Clears j->idem_deferred. */
void svc_idem_settle(struct svc_job *j, const char *scope);
/* Wall-clock Unix ms of the environment's clock (the system's when none). */
int64_t svc_env_now_ms(const struct svc_env *env);
#define SVC_IDEM_TTL_DEFAULT_MS       (24ull * 3600 * 1000)
#define SVC_SAGA_RETENTION_DEFAULT_MS (7ull * 24 * 3600 * 1000)

/* ---- read models ---- */

/* Reopen read model `rm`'s query handle (the file was replaced by a rebuild). */
int svc_rm_reopen(struct svc_env *p, enum rm_id rm);
/* The read models' names, by enum rm_id (their files: <dir>/<name>.db). */
extern const char *const svc_rm_names[RM_COUNT];
/* Wait (bounded) until the read models include everything up to the store's head:
 * used when a just-written resource is not in the read model yet. */
void svc_rm_catch_up(struct svc_env *p);
/* The same for read model `rm` alone (its projection's runner: the one a read
 * missed a just-written row in), woken by that projection's progress only. */
void svc_rm_catch_up_rm(struct svc_env *p, enum rm_id rm);
/* A row of a read-model query as JSON (a new reference). */
typedef json_t *(*svc_row_fn)(const struct ag_rm_row *r);
/* svc_rm_query on a snapshot that includes every commit made before the call: the
 * shared handle's snapshot lasts while any query thread has a statement open on
 * it, so a read right after a commit can miss it there. Serialised (one handle):
 * for reads woken by a commit (wait.c), not for every read. */
json_t *svc_rm_query_fresh(struct svc_env *p, enum rm_id rm, const char *sql,
                           const char *const *args, size_t nargs, svc_row_fn row);
/* Bind text parameters (NULL binds NULL) and run a query returning one JSON value
 * per row through `row`; NULL when the query failed (damage is reported to the
 * projector and the job answers 503). */
json_t *svc_rm_query(struct svc_env *p, enum rm_id rm, const char *sql, const char *const *args,
                     size_t nargs, svc_row_fn row);
/* The same, with the arguments whose bit is set in `ids` (bit i: args[i]) bound as
 * ids (ag_rm_id_arg: a UUID as its 16-byte BLOB), for the id columns (issue 19). */
json_t *svc_rm_query_ids(struct svc_env *p, enum rm_id rm, const char *sql, const char *const *args,
                         size_t nargs, unsigned ids, svc_row_fn row);
json_t *svc_rm_query_fresh_ids(struct svc_env *p, enum rm_id rm, const char *sql,
                               const char *const *args, size_t nargs, unsigned ids, svc_row_fn row);
#define SVC_ID(i) (1u << (i)) /* an `ids` bit: argument i is an id */
/* How to read one resource by id from a read model. `sql` has two parameters: the
 * id, and the owner filter (NULL: any owner), e.g. "... WHERE id=?1 AND (?2 IS NULL
 * OR customer_id=?2)". */
struct svc_one {
    enum rm_id rm;
    const char *sql;
    svc_row_fn row;
    const char *prefix;  /* the resource's stream prefix ("order") */
    const char *title;   /* 404 title */
    const char *missing; /* 404 detail: "<missing> <id>" */
    unsigned ids;        /* which of the two parameters are ids (SVC_ID(0)...) */
};
/* GET one resource `id` (owned by `owner`, NULL for any). When the row is not there
 * but the stream `<prefix>-<id>` exists (just written), waits for the read model
 * first. Someone else's resource is 404, exactly like a missing one. */
int svc_get_one(struct svc_job *j, const struct svc_one *one, const char *id, const char *owner);
/* A list answer {items, nextCursor} from `rows` (stolen) fetched with LIMIT limit+1:
 * the extra row, if any, says there is a next page, which starts after the last id. */
json_t *svc_page(json_t *rows, int limit);
/* Parse ?limit (default 20, 1..100). AG_EINVAL with a field error otherwise. */
int svc_limit(struct svc_job *j, const char *s, int *out);

/* Money as JSON {amount, currency}. */
json_t *svc_money_json(json_int_t amount, const char *currency);
/* Column i of a row as text (NULL for NULL). */
const char *svc_col(const struct ag_rm_row *r, int i);
/* A read model's time column (Unix nanoseconds, INTEGER) as an RFC 3339 string;
 * JSON null when the column is NULL. */
json_t *svc_time_json(const struct ag_rm_row *r, int i);
/* Id column `i` (ag_rm_id: a 16-byte BLOB as its UUID text) as a JSON string, null
 * for NULL. */
json_t *svc_id_json(const struct ag_rm_row *r, int i);
/* Run `sql` on a projection's read model with up to five text parameters (?1 id,
 * ?2..?4 a, b, c, ?5 ts; as many as the statement has). Returns the port's code. */
int svc_sql_run(struct ag_rm *db, const char *sql, const char *id, const char *a, const char *b,
                const char *c, const char *ts);
/* The same with the parameters whose bit is set in `ids` (SVC_ID(0) is ?1) bound as
 * ids (ag_rm_id_arg). */
int svc_sql_run_ids(struct ag_rm *db, const char *sql, unsigned ids, const char *id, const char *a,
                    const char *b, const char *c, const char *ts);

/* ---- the contexts ---- */

/* A bounded context: its routes (with their access) and its read model. Each
 * context's api.c exports one; platform.c iterates the table of them. */
struct svc_context {
    const char *name;
    const struct svc_route *routes;
    size_t nroutes;
    void (*projection)(struct ag_projection *out); /* its read model's; NULL: none */
    enum rm_id rm;                                 /* that read model */
};
/* The operator console's reads (console_api.c): /admin/stats, /admin/log,
 * /admin/streams, and rebuilding a projection. */
extern const struct svc_context svc_console_context;
/* One JSON snapshot of the console's overview numbers (console_stats.c): orders/s,
 * confirm latency percentiles, saga outcomes, projection lag, store size. A new
 * reference (NULL: no memory). Any thread; the stats SSE route reuses it. */
json_t *svc_console_stats(struct svc_env *env);
int svc_console_stats_get(struct svc_job *j);
/* An event as the console and the log's SSE messages show it: {"position",
 * "stream","type","version","time","data"}. */
struct ag_event;
json_t *svc_event_json(const struct ag_event *e);
/* A path parameter naming a stream or a projection: 1..120 bytes, no control
 * characters (dispatch checks it instead of the UUID shape). */
bool svc_name_ok(const char *s);
extern const struct svc_context svc_customers_context, svc_catalog_context, svc_payments_context,
    svc_inventory_context, svc_ordering_context, svc_shipping_context, svc_sagas_context,
    svc_audit_context, svc_mcp_context, svc_traces_context;
/* GET /admin/log/stream (logtail.c) */
extern const struct svc_context svc_logtail_context;
/* GET /admin/stats/stream (statstream.c) */
extern const struct svc_context svc_statstream_context;

void svc_customers_projection(struct ag_projection *out);
void svc_catalog_projection(struct ag_projection *out);
void svc_payments_projection(struct ag_projection *out);
void svc_inventory_projection(struct ag_projection *out);
void svc_ordering_projection(struct ag_projection *out);
void svc_shipping_projection(struct ag_projection *out);
/* The projection that starts a PlaceOrder saga for every OrderPlaced. */
void svc_saga_starter_projection(struct ag_platform *p, struct ag_projection *out);
/* The PlaceOrder saga definition (steps, policy, faults from the environment). */
int svc_place_order_saga(struct ag_platform *p, struct ag_err *err);

/* ---- the orchestrator over the mesh (issue 14; sagas/remote.c) ---- */

/* One participant call: PlaceOrder's step `step` (its action, or its compensation)
 * at an instance serving `context`. Everything borrowed for the call. */
struct svc_rstep {
    const char *context; /* "inventory" */
    const char *step;    /* "ReserveInventory" */
    bool compensate;     /* the compensation instead of the action */
    const json_t *data;  /* the saga's data */
    const char *key;     /* the engine's idempotency key (<sagaId>:<step>[:compensate]) */
    const char *reason;  /* the failure compensated, or NULL */
};
struct svc_remote;
/* The participants' clusters (dynamic; one per context not served here) and the
 * thread whose loop runs their calls. */
int svc_remote_start(struct ag_platform *p, struct svc_remote **out, struct ag_err *err);
/* Keep the clusters at the registry's live members (ag_disc_watch). */
int svc_remote_watch(struct svc_remote *r, struct ag_disc *d);
/* Stop the thread (calls in flight end with AG_ECANCELED) and free. */
void svc_remote_stop(struct svc_remote *r);
/* Run the call and wait: 0, the participant's AG_E* answer, or AG_EUNAVAILABLE
 * when no instance answered (the engine then resumes the saga later). */
int svc_remote_step(struct svc_remote *r, const struct svc_rstep *s, struct ag_err *err);
/* The same without waiting: finishes `call` (ag_saga_call_done, not recorded). */
void svc_remote_step_async(struct svc_remote *r, const struct svc_rstep *s,
                           struct ag_saga_call *call);
/* Swap the steps owned by contexts not served here for remote ones (placeorder.c). */
void svc_place_order_remote(struct ag_platform *p);
/* POST /internal/v1/steps {context, step, key, data, compensate, reason}: a
 * participant runs a step for an orchestrator elsewhere (placeorder.c); SVC_SERVICE. */
extern const struct svc_context svc_internal_context;

/* ---- event schema versions (schemas.c) ---- */

/* Install the commerce events' versions and upcasters (ag_es_schemas_set). */
void svc_event_schemas_install(void);

/* ---- personal data (pii.c) ---- */

struct ag_vault;
/* The vault the platform opened: one per process (the aggregate types' evolve,
 * snapshot and restore have no context to carry it). NULL: none. */
void svc_pii_set_vault(struct ag_vault *v);
struct ag_vault *svc_pii_vault(void);
/* Seal member `field` of `obj` (any JSON value; absent or null: nothing) with
 * customer `subject`'s data key: replaced by an envelope string. AG_EDOMAIN when
 * the customer was erased. */
int svc_pii_seal_field(json_t *obj, const char *field, const char *subject, struct ag_err *err);
/* Open member `field` when it is an envelope: replaced by its value, or by the
 * field's "[erased]" placeholder when the key is gone. 1 opened, 0 not sealed. */
int svc_pii_open_field(json_t *obj, const char *field);
/* A read model's column for personal field `field` (an envelope, its JSON
 * encoding, or a plain JSON value) as the value to answer: new reference, NULL
 * for NULL. */
json_t *svc_pii_open_text(const char *text, const char *field);
/* A read-model column holding the JSON text of an envelope sealed for `subject`,
 * when the row names that subject anyway (issue 19: ~42 bytes a row): "~" and the
 * envelope without its "pii1:<subject>:" and quotes; any other text as it is.
 * ag_malloc'd (NULL for NULL). svc_pii_open_column reads either form back, given
 * the row's subject. */
char *svc_pii_column_pack(const char *text, const char *subject);
json_t *svc_pii_open_column(const char *column, const char *subject, const char *field);
/* A packed column ("~<base64>") as 0x01 and the base64's bytes, a BLOB (issue 19:
 * 3/4 of the text): ag_malloc'd, *n (OUT) bytes; NULL when `packed` is no such
 * text (store it as text then). svc_pii_open_cell reads column `col` of a row
 * either way (a BLOB encoded back to "~<base64>", text as svc_pii_open_column). */
uint8_t *svc_pii_column_bytes(const char *packed, size_t *n);
json_t *svc_pii_open_cell(const struct ag_rm_row *r, int col, const char *subject,
                          const char *field);
/* Seal the personal fields of the new events b->v[from..] of a command on an
 * aggregate of type `t` in `state` (before it; NULL for a new stream). */
int svc_pii_seal_events(const struct ag_es_type *t, const void *state, struct ag_es_batch *b,
                        size_t from, struct ag_err *err);

/* Demo data on first start. */
int svc_seed(struct svc_env *p, struct ag_err *err);

/* Commands used by the seed and by the saga. */
/* A registration (customers/api.c): customer `id`, bound to principal `sub`
 * (NULL or "": none), with its email claimed and its wallet account opened, all
 * in ONE multi-stream append (a fault leaves all of it or nothing). */
struct svc_registration {
    const char *id, *sub, *email, *name;
    bool premium;
    const char *meta;
};
/* The account id into account_id. AG_EEXISTS: `existing` names the customer the
 * principal has already (else the email is someone else's). */
int svc_register_customer(struct svc_env *p, const struct svc_registration *r, char account_id[40],
                          char existing[40], struct ag_err *err);
int svc_deposit(struct svc_env *p, const char *account_id, const struct ag_money *amount,
                const char *meta, struct ag_err *err);

/* If-None-Match (RFC 9110 §13.1.2, weak comparison) lists `etag` or "*". */
bool svc_inm_matches(const char *inm, const char *etag);

#endif
