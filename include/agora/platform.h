/*
 * The commerce platform in one process: every bounded context (customers,
 * catalog, ordering, inventory, payments, shipping) over one event store, their
 * read models, the PlaceOrder saga and the HTTP API of ARCHITECTURE §6.1. This is
 * what `agora run` starts; tests start it in-process on an ephemeral port.
 */
#ifndef AGORA_PLATFORM_H
#define AGORA_PLATFORM_H

#include <stdbool.h>
#include <stdint.h>

#include "agora/base.h"

struct ag_tls_server;
struct ag_tls_client;

/* The customers' unique-email claim streams and the event that releases one
 * (erasure, migration): a scavenge deletes released claims, so their names leave
 * the log (struct ag_log_retention's released_prefix and released_type). */
#define AG_EMAIL_CLAIM_PREFIX "customer-email-"
#define AG_CLAIM_RELEASED     "ClaimReleased"

struct ag_platform_config {
    const char *data_dir;  /* readmodels/ (created) and, by default, the event log; required */
    const char *store_uri; /* the event store (ag_store_open); NULL = "file:<data_dir>" */
    /* The read models (ag_rm_open): NULL = the SQLite files in <data_dir>/readmodels;
     * "postgresql://..." = a schema per read model in that database. */
    const char *readmodels_uri;
    /* How long start waits for a database that does not answer yet (the read
     * models' and a PostgreSQL event store's; retrying with backoff) before it gives
     * up; 0 = 60 s. `agora run`: env AGORA_DB_WAIT (or AGORA_READMODELS_WAIT). */
    unsigned readmodels_wait_s;
    const char *host;      /* listen address; NULL = 127.0.0.1 */
    uint16_t port;         /* 0 = ephemeral */
    int workers;           /* HTTP worker loops; 0 = cores */
    bool seed;             /* demo catalog, stock and funded customers on first start */
    bool no_sync;          /* store without fdatasync (tests only: not durable) */
    unsigned saga_threads; /* 0 = cores, at least 4 (steps are async); env AGORA_SAGA_THREADS */
    uint64_t index_memory; /* log store: cap on the stream index's memory; 0 = 64 MiB */
    size_t cache_bytes;    /* aggregate cache budget in bytes; 0 = the repository's default */
    /* Identity comes from a gateway in front (x-user-id, x-user-roles); a request
     * without it is anonymous. false (no gateway): a request without identity
     * headers acts as the local operator, an admin — bind loopback only. */
    bool behind_gateway;
    /* Listen on this Unix socket (created 0600) instead of host:port. */
    const char *unix_path;
    /* Idempotency-Key records expire after this (0 = 24 h); env AGORA_IDEMPOTENCY_TTL. */
    uint64_t idempotency_ttl_ms;
    /* Ended sagas are removed by a scavenge after this (0 = 7 days); env AGORA_SAGA_RETENTION. */
    uint64_t saga_retention_ms;
    /* The message bus the outbox relay publishes the published language to
     * (ag_bus_open: "local:" or "nats://HOST:PORT"); NULL = no bus, no relay. */
    const char *bus_uri;
    /* How PlaceOrder runs: false = orchestrated by the saga engine (default);
     * true = choreographed, as reactions of the contexts over the bus (with no
     * bus_uri, the local: bus). `agora run --saga-mode`, env AGORA_SAGA_MODE. */
    bool choreography;
    /* Blocking reads (GET an order with Prefer: wait=N) parked at once; more are
     * answered 503 with Retry-After. 0 = 1024; env AGORA_MAX_WAITERS. */
    uint32_t max_waiters;
    /* Admission control (issue 11): orders in flight (placed, not yet confirmed or
     * cancelled) at most; more POST /api/v1/orders (and .../place) are answered
     * 503 with Retry-After. The ceiling of an AIMD limit that keeps the confirm
     * latency's p90 under admission_target_ms. 0 = 256; `agora run
     * --max-sagas-in-flight`, env AGORA_MAX_SAGAS_IN_FLIGHT. */
    uint32_t max_sagas_in_flight;
    /* The confirm latency target in ms: 0 = 500, < 0 = no adaptation (the
     * ceiling is a static limit); `--admission-target`, env AGORA_ADMISSION_TARGET. */
    int64_t admission_target_ms;
    /* How long such a command waits for a slot before the 503 (parked, no
     * thread): 0 = 1000 ms, < 0 = refused at once; `--admission-queue`, env
     * AGORA_ADMISSION_QUEUE. */
    int64_t admission_queue_ms;
    /* The read caches (src/services/readcache.c): NULL or "local" = in-process LRU
     * caches, "off" = none, "redis://HOST:PORT[/DB]" = Redis for the catalog (the
     * cache shared by every instance; stock written through, views written
     * behind). `agora run --cache`, env AGORA_CACHE. */
    const char *read_cache;
    size_t read_cache_bytes;    /* per in-process cache; 0 = 16 MiB; env AGORA_CACHE_BYTES */
    uint64_t read_cache_ttl_ms; /* entries live at most this; 0 = 60 s; env AGORA_CACHE_TTL */
    uint64_t views_flush_ms;    /* product views flushed to the log; 0 = 5 s */
    /* `agora serve` (issue 14): the business contexts served here, a mask of
     * ag_platform_context_bit()s; 0 = all. Only their routes are registered, their
     * read models projected (the others are followed: standby) and, in
     * choreography, their bus reactions run; the ops routes are always there. */
    unsigned contexts;
    /* Several processes share the store, the read models and the bus: every
     * projection and the outbox relay run under a lease on the read models'
     * database (one process at a time; another takes over within about a second
     * when the holder dies), and the saga engine resumes unfinished sagas only
     * when this process takes the saga starter's lease (the sagas are then its
     * own). Needs PostgreSQL read models to mean anything (SQLite: always held). */
    bool shared;
    /* The mesh key (`agora serve`: AGORA_MESH_KEY, required there): identity
     * headers count only with the gateway's valid x-user-sig made with it
     * (include/agora/http.h); without one the caller is anonymous. NULL = the
     * headers are believed as they come (agora run: a 0600 Unix socket). */
    const char *mesh_key;
    /* Service discovery (issue 14, `agora serve --advertise`): register this
     * instance at HOST:PORT in the registry (rm_registry.members in the read
     * models' PostgreSQL database, include/agora/discovery.h), heartbeat every
     * second, deregister at stop; with the sagas context, the PlaceOrder steps of
     * contexts not served here become calls through the mesh to instances found
     * there. NULL = no registry ("" = the listen address). */
    const char *advertise;
    /* mTLS (`agora serve --tls-cert/--tls-key/--tls-ca`): serve HTTPS with these
     * certificates, requiring a client certificate from the cluster CA (borrowed,
     * outlives the platform; SIGHUP and changed files reload it). NULL = plain HTTP. */
    struct ag_tls_server *tls;
    /* The client side for calls to other instances (the mesh's upstream pools,
     * ag_http_upstream_config.tls): presents this member's certificate and verifies
     * theirs against the cluster CA (borrowed). NULL = plain HTTP. */
    struct ag_tls_client *mesh_tls;
};

/* The business contexts `agora serve` can serve, NULL-terminated: customers,
 * catalog, ordering, inventory, payments, shipping, sagas. */
AG_EXTERN const char *const *ag_platform_context_names(void);
/* The ag_platform_config.contexts bit of context `name`; 0 when there is none. */
AG_EXTERN unsigned ag_platform_context_bit(const char *name);

struct ag_platform;

/* Open the store, start projections, the saga engine (resuming unfinished sagas)
 * and the HTTP server. Owned; stop with ag_platform_stop. */
AG_EXTERN int ag_platform_start(const struct ag_platform_config *cfg, struct ag_platform **out,
                                struct ag_err *err);
AG_EXTERN uint16_t ag_platform_port(const struct ag_platform *p);
/* The Unix socket the services listen on ("" when on TCP). */
AG_EXTERN const char *ag_platform_socket(const struct ag_platform *p);
/* The platform's metrics registry (borrowed; e.g. for a gateway in front to render
 * with its own at /metrics). */
struct ag_obs_registry;
AG_EXTERN struct ag_obs_registry *ag_platform_metrics(struct ag_platform *p);
/* The readiness check of the platform's event store (an ag_obs_check_fn; `p` is
 * the platform): down with the reason while the store cannot write. For a gateway
 * in front to report at its /health/ready. */
struct ag_buf;
AG_EXTERN int ag_platform_store_ready(void *p, struct ag_buf *detail);
/* The readiness check of the read models: down, naming it, when a projection
 * has failed or its read model's database cannot be reached (an ag_obs_check_fn,
 * for the gateway in front too). */
AG_EXTERN int ag_platform_projections_ready(void *p, struct ag_buf *detail);
/* The readiness check of the bus (an ag_obs_check_fn): down while the broker is
 * unreachable (the relay keeps its checkpoint and resumes); up without a bus. */
AG_EXTERN int ag_platform_bus_ready(void *p, struct ag_buf *detail);
/* Serve until SIGINT/SIGTERM, then drain. */
AG_EXTERN int ag_platform_run_until_signal(struct ag_platform *p);
/* Drain HTTP, stop sagas (unfinished ones resume next start), projections, store. */
AG_EXTERN void ag_platform_stop(struct ag_platform *p);

/* The Model Context Protocol without HTTP (`agora mcp` over stdio): handle one
 * JSON-RPC message (`msg`, `len` bytes) as principal `sub` (an admin when
 * `admin`; NULL: anonymous) with the same tools, handlers and ownership rules as
 * POST /mcp. *reply is the answer (owned, ag_free), or NULL when none is due (a
 * notification). May block on the store: call it off any event loop. */
AG_EXTERN int ag_platform_mcp(struct ag_platform *p, const char *sub, bool admin, const char *msg,
                              size_t len, char **reply /* OUT */);

/* Rebuild the read model `name` from position 0 (the platform must not be running
 * on `data_dir`). Prints progress through `progress` when not NULL. */
AG_EXTERN int ag_platform_rebuild_projection(const char *data_dir, const char *name,
                                             void (*progress)(void *ud, uint64_t done,
                                                              uint64_t total),
                                             void *ud, struct ag_err *err);
/* The same for read models at `readmodels_uri` (ag_rm_open; NULL: the SQLite
 * files under `data_dir`): the read model is dropped (PostgreSQL: its schema) and
 * made again from the log of `data_dir`. */
AG_EXTERN int ag_platform_rebuild_projection_at(
    const char *data_dir, const char *readmodels_uri, const char *name,
    void (*progress)(void *ud, uint64_t done, uint64_t total), void *ud, struct ag_err *err);
/* Names of the read models, NULL-terminated. */
AG_EXTERN const char *const *ag_platform_projection_names(void);

#endif
