/*
 * agora mesh: upstream clusters for a proxyless service mesh, in the vocabulary of
 * Istio's DestinationRule — endpoints with labels and subsets, load balancing,
 * outlier detection, active health checks, a circuit breaker and a retry budget
 * per cluster — and an asynchronous call that runs one request against a cluster
 * with retries, per-try timeouts and a route timeout covering them.
 *
 * Cluster (struct ag_mesh_cluster). Shared, thread-safe state: every worker loop
 * picks endpoints from it and reports outcomes to it (atomics; a mutex only to
 * eject). Load balancing: round robin, least request (power of two choices on
 * the in-flight count), random, or consistent hash (a ring of 128 virtual nodes
 * per endpoint, keyed by the caller's hash — a header or the user).
 *
 * Outlier detection (passive). Per endpoint: N consecutive 5xx (or N consecutive
 * gateway failures: 502/503/504, connect failure, reset, timeout) eject it for
 * base_ejection × n, capped by max_ejection, where n counts ejections and decays
 * by one per healthy `interval`. At most max_ejection_pct of the endpoints are
 * ejected at once (at least one when the percentage allows any). When fewer than
 * panic_threshold_pct of a subset's endpoints are healthy, the balancer ignores
 * health and spreads over all of them (Envoy's panic mode), so a cluster never
 * turns itself off entirely.
 *
 * Errors of the upstream's own making. A 5xx answer carrying the header
 * `X-Agora-Error: service` (AG_MESH_SERVICE_ERROR_HEADER) says the service is up
 * and answered on purpose (its store is full, a read model is rebuilding): it is
 * not an upstream failure, for outlier detection nor for the cluster's breaker,
 * so a write outage cannot turn into a read outage. Connection failures, resets,
 * timeouts and 5xx answers without the header still count.
 *
 * Active health checks (struct ag_mesh_health). A thread with its own loop sends
 * GET <path> to every endpoint every interval; unhealthy_threshold consecutive
 * failures mark it down, healthy_threshold consecutive 2xx mark it up again.
 *
 * Calls (struct ag_mesh_pools, ag_mesh_call_start). Connection pools are per
 * event loop (one per endpoint per loop), so a call never leaves its loop. A
 * call takes one circuit-breaker permit, then tries endpoints (avoiding those
 * already tried when it can) until an answer is not retryable, the attempts or
 * the retry budget run out, or the route deadline passes. Each try's deadline is
 * min(per-try timeout, what is left of the route timeout).
 *
 * Time and randomness are injected (clock, rng) so ejection, decay and balancing
 * are tested without sleeping. Ownership: *_new returns an owned object freed
 * with the matching *_free / *_close; configs are copied; strings copied.
 */
#ifndef AGORA_MESH_H
#define AGORA_MESH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "agora/base.h"
#include "agora/http.h"
#include "agora/resil.h"

#define AG_MESH_MAX_ENDPOINTS 64 /* per cluster */
#define AG_MESH_MAX_LABELS    8  /* per endpoint or subset */
#define AG_MESH_MAX_SUBSETS   16 /* per cluster */

enum ag_mesh_lb {
    AG_MESH_LB_ROUND_ROBIN,   /* next endpoint in turn */
    AG_MESH_LB_LEAST_REQUEST, /* the less busy of two random endpoints (P2C) */
    AG_MESH_LB_RANDOM,        /* uniform */
    AG_MESH_LB_HASH,          /* consistent hash on the caller's key */
};

struct ag_mesh_endpoint_config {
    const char *host; /* numeric IPv4/IPv6 address, or "unix:/abs/path" (port ignored) */
    uint16_t port;    /* TCP port */
    const char *labels[AG_MESH_MAX_LABELS]; /* "key=value" strings (e.g. "version=v1") */
    size_t nlabels;                         /* labels in use */
};

struct ag_mesh_subset_config {
    const char *name;                       /* "v1", "canary", ... */
    const char *labels[AG_MESH_MAX_LABELS]; /* an endpoint belongs when it has all of them */
    size_t nlabels;
};

struct ag_mesh_outlier_config {
    uint32_t consecutive_5xx;     /* eject after this many 5xx in a row; 0 = off */
    uint32_t consecutive_gateway; /* eject after this many gateway failures in a row; 0 = off */
    uint64_t interval_ns;         /* ejection multiplier decay period (default 10 s) */
    uint64_t base_ejection_ns;    /* first ejection length (default 30 s) */
    uint64_t max_ejection_ns;     /* cap (default 300 s) */
    uint32_t max_ejection_pct;    /* at most this share ejected at once (default 10) */
    uint32_t panic_threshold_pct; /* below this share healthy: ignore health; 0 = off (gateway
                                     default 50) */
};

struct ag_mesh_health_config {
    const char *path;             /* GET path; NULL = no active health checks */
    uint64_t interval_ns;         /* between checks (default 5 s) */
    uint64_t timeout_ns;          /* per check (default 1 s) */
    uint32_t healthy_threshold;   /* successes to mark up (default 1) */
    uint32_t unhealthy_threshold; /* failures to mark down (default 2) */
};

struct ag_mesh_cluster_config {
    const char *name; /* copied */
    struct ag_mesh_endpoint_config endpoints[AG_MESH_MAX_ENDPOINTS];
    size_t nendpoints; /* 1..AG_MESH_MAX_ENDPOINTS (0.. when dynamic) */
    /* The endpoints change while calls run (service discovery: the registry's
     * resolver calls ag_mesh_cluster_set_endpoints): may start empty; no subsets. */
    bool dynamic;
    struct ag_mesh_subset_config subsets[AG_MESH_MAX_SUBSETS];
    size_t nsubsets;
    struct ag_http_upstream_config pool; /* limits per endpoint per loop (host/port ignored) */
    enum ag_mesh_lb lb;
    struct ag_mesh_outlier_config outlier;
    struct ag_mesh_health_config health;
    uint32_t cb_failures;      /* breaker: consecutive failed calls that open it; 0 = no breaker */
    uint64_t cb_open_ns;       /* how long it stays open (default 30 s) */
    double retry_budget_ratio; /* retries per call over 10 s (default 0.2) */
    uint32_t retry_budget_min; /* retries per second always allowed (default 10) */
    const struct ag_clock *clock; /* borrowed; NULL = system */
    const struct ag_rng *rng;     /* borrowed; NULL = system */
};

struct ag_mesh_cluster;

/* Create a cluster (owned; ag_mesh_cluster_free). AG_EINVAL/AG_ECONFIG with `err`
 * naming the bad field. */
AG_EXTERN int ag_mesh_cluster_new(const struct ag_mesh_cluster_config *cfg,
                                  struct ag_mesh_cluster **out /* OUT */, struct ag_err *err);
/* Frees the cluster; no call, pool or health checker may still use it. */
AG_EXTERN void ag_mesh_cluster_free(struct ag_mesh_cluster *c);
AG_EXTERN const char *ag_mesh_cluster_name(const struct ag_mesh_cluster *c); /* borrowed */
/* Index of subset `name`, or -1. */
AG_EXTERN int ag_mesh_cluster_subset(const struct ag_mesh_cluster *c, const char *name);
AG_EXTERN size_t ag_mesh_cluster_size(const struct ag_mesh_cluster *c);

/* Replace a dynamic cluster's endpoints with `eps` (matched by host and port):
 * new ones are added (a free slot of the fixed array), missing ones removed —
 * drained: no new try picks them, the tries in flight on them finish. A removed
 * slot is reused only after 30 s without a try in flight. `*changed` (OUT,
 * optional): whether anything was added or removed. AG_EINVAL (not dynamic, a
 * bad address) or AG_ETOOBIG (no free slot: the rest are still applied). */
AG_EXTERN int ag_mesh_cluster_set_endpoints(struct ag_mesh_cluster *c,
                                            const struct ag_mesh_endpoint_config *eps, size_t n,
                                            bool *changed, struct ag_err *err);

/* Pick an endpoint of `subset` (-1 = every endpoint) by the cluster's policy.
 * `hash` is the key for AG_MESH_LB_HASH; endpoints whose bit is set in `avoid`
 * (indexes < 64) are skipped while another is available. 0 with *idx, or
 * AG_EUPSTREAM when the subset is empty. */
AG_EXTERN int ag_mesh_cluster_pick(struct ag_mesh_cluster *c, int subset, uint64_t hash,
                                   uint64_t avoid, size_t *idx /* OUT */);
/* The endpoint's address (borrowed). */
AG_EXTERN const struct ag_mesh_endpoint_config *
ag_mesh_cluster_endpoint(const struct ag_mesh_cluster *c, size_t idx);
#define AG_MESH_SERVICE_ERROR_HEADER "X-Agora-Error"
#define AG_MESH_SERVICE_ERROR_VALUE  "service"
/* True when `resp` is a 5xx the service made on purpose (see the top). */
AG_EXTERN bool ag_mesh_service_error(const struct ag_http_client_resp *resp);

/* Report one try on endpoint `idx`: rc 0 with the HTTP `status`, or a negative
 * client error (AG_ECONNECT, AG_ERESET, AG_ETIMEDOUT, ...). Drives outlier
 * detection. ag_mesh_cluster_begin/end bracket a try (least-request counts). */
AG_EXTERN void ag_mesh_cluster_begin(struct ag_mesh_cluster *c, size_t idx);
AG_EXTERN void ag_mesh_cluster_end(struct ag_mesh_cluster *c, size_t idx, int rc, int status);
/* True when endpoint idx is currently ejected or marked down by health checks. */
AG_EXTERN bool ag_mesh_cluster_ejected(struct ag_mesh_cluster *c, size_t idx);
/* Set endpoint idx's active-health state (the health checker calls this). */
AG_EXTERN void ag_mesh_cluster_health_result(struct ag_mesh_cluster *c, size_t idx, bool ok);
/* The cluster's breaker (NULL when off) and retry budget (borrowed). */
AG_EXTERN struct ag_cb *ag_mesh_cluster_breaker(struct ag_mesh_cluster *c);
AG_EXTERN struct ag_retry_budget *ag_mesh_cluster_budget(struct ag_mesh_cluster *c);
/* A JSON description for /admin/upstreams: endpoints with health, ejections,
 * in-flight counts, the breaker state. New reference. */
AG_EXTERN json_t *ag_mesh_cluster_json(struct ag_mesh_cluster *c);

/* ---- calls ---- */

/* retry_on bits (Istio's retryOn names). */
enum ag_mesh_retry_on {
    AG_MESH_RETRY_5XX = 1 << 0,             /* "5xx": any 5xx or a gateway failure */
    AG_MESH_RETRY_GATEWAY_ERROR = 1 << 1,   /* "gateway-error": 502, 503, 504 */
    AG_MESH_RETRY_CONNECT_FAILURE = 1 << 2, /* "connect-failure" (also pool timeout) */
    AG_MESH_RETRY_RESET = 1 << 3,           /* "reset": connection reset before an answer */
    AG_MESH_RETRY_RETRIABLE_4XX = 1 << 4,   /* "retriable-4xx": 409 */
};
/* Parse "5xx,connect-failure,reset" into bits; AG_EINVAL naming an unknown token. */
AG_EXTERN int ag_mesh_retry_on_parse(const char *s, unsigned *bits /* OUT */, struct ag_err *err);

struct ag_mesh_retry {
    unsigned attempts;           /* retries after the first try (Istio's attempts); 0 = none */
    uint32_t per_try_timeout_ms; /* 0 = the route timeout */
    unsigned retry_on;           /* enum ag_mesh_retry_on bits */
    uint32_t backoff_ms;         /* base of the jittered exponential backoff (default 25) */
};

struct ag_mesh_call {
    struct ag_mesh_cluster *cluster; /* borrowed; must outlive the call */
    int subset;                      /* -1 = every endpoint */
    uint64_t hash;                   /* key for AG_MESH_LB_HASH */
    struct ag_http_client_req req;   /* borrowed until the callback; timeout_ms = route timeout */
    struct ag_mesh_retry retry;
};

struct ag_mesh_result {
    int rc; /* 0 with resp, else the last error (AG_ECIRCUIT_OPEN, ...) */
    const struct ag_http_client_resp *resp; /* borrowed for the callback; NULL when rc != 0 */
    unsigned tries;                         /* tries made */
    int endpoint;                           /* index of the last endpoint tried, -1 when none */
};
typedef void (*ag_mesh_cb)(const struct ag_mesh_result *res, void *ud);

struct ag_mesh_pools;
/* Connection pools on `loop` (borrowed), created on demand per endpoint. Use and
 * close them on that loop's thread only. */
AG_EXTERN int ag_mesh_pools_new(uv_loop_t *loop, struct ag_mesh_pools **out /* OUT */);
/* Cancel calls in flight (their callbacks run with AG_ECANCELED), close every
 * pool and free once libuv has closed their handles. */
AG_EXTERN void ag_mesh_pools_close(struct ag_mesh_pools *p);
/* Connections open over all pools (tests, admin). */
AG_EXTERN uint32_t ag_mesh_pools_open(const struct ag_mesh_pools *p);

/* Start a call; `cb` runs exactly once on the loop, never from inside this call.
 * 0, or AG_ENOMEM / AG_EINVAL (then cb is not called). */
AG_EXTERN int ag_mesh_call_start(struct ag_mesh_pools *p, const struct ag_mesh_call *call,
                                 ag_mesh_cb cb, void *ud);

/* ---- active health checks ---- */

struct ag_mesh_health;
/* Start a health-check thread. It checks the clusters set with
 * ag_mesh_health_set (none at first). Owned; ag_mesh_health_stop. */
AG_EXTERN int ag_mesh_health_start(struct ag_mesh_health **out /* OUT */, struct ag_err *err);
/* Replace the clusters checked (borrowed; thread-safe). Clusters passed before
 * must stay alive until this returns; the checker holds none afterwards once
 * the call returns, except through `retain`/`release`: when set, the checker
 * calls retain(ctx) before using the new set and release(ctx) when done with it. */
AG_EXTERN void ag_mesh_health_set(struct ag_mesh_health *h, struct ag_mesh_cluster *const *clusters,
                                  size_t n, void (*retain)(void *ctx), void (*release)(void *ctx),
                                  void *ctx);
/* Stop the thread, wait for it and free. */
AG_EXTERN void ag_mesh_health_stop(struct ag_mesh_health *h);

#endif
