/*
 * agora gateway: the API gateway in front of the services. It routes by a YAML
 * configuration in the vocabulary of Istio's VirtualService and DestinationRule
 * (see docs/gateway.md), verifies JWTs and authorises by roles and scopes, rate
 * limits per route and client, stores and replays Idempotency-Key answers, adds
 * X-Request-ID / traceparent / X-Forwarded-*, strips hop-by-hop headers, and
 * forwards through the mesh (include/agora/mesh.h): load balancing, outlier
 * detection, health checks, breakers, retries and timeouts. It also serves the
 * BFF endpoints /bff/web/home and /bff/mobile/home, /admin/upstreams,
 * /admin/circuit-breakers, /admin/cluster, /metrics and /health/{live,ready}.
 *
 * Configuration is an immutable snapshot: a reload compiles a new one and swaps
 * it in; requests in flight finish on the snapshot they started with, open
 * connections (both sides) are kept. A configuration that does not compile is
 * refused with "file:line: path: reason" and the running one stays.
 *
 * Threads. ag_gateway_start returns with the server's worker threads running
 * plus one health-check thread. ag_gateway_reload and ag_gateway_stop may be
 * called from any thread (not concurrently with each other's stop).
 *
 * Ownership: the gateway is owned by the caller and freed by ag_gateway_stop;
 * options are copied; the metrics registry, when given, is borrowed.
 */
#ifndef AGORA_GATEWAY_H
#define AGORA_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agora/base.h"
#include "agora/http.h"
#include "agora/obs.h"

struct ag_gateway;

struct ag_gateway_options {
    const char *config_path;         /* YAML file (re-read on reload), or NULL ... */
    const char *config_yaml;         /* ... the YAML text itself (copied) */
    const char *listen;              /* "HOST:PORT"; NULL = gateway.listen, else 127.0.0.1:8080 */
    int workers;                     /* worker loops; 0 = gateway.workers, else CPUs */
    struct ag_obs_registry *metrics; /* borrowed; NULL = the gateway owns one */
    const struct ag_clock *clock;    /* JWT times, limiters, ejections; NULL = system */
    /* More readiness checks for /health/ready, run beside the gateway's own (agora
     * run: the in-process platform's event store); borrowed: must outlive the gateway. */
    const struct ag_gateway_ready_check *ready_checks;
    size_t nready_checks;
    /* HTTPS: certificate/key pairs (the first is the default, SNI picks among them;
     * borrowed for the start only). NULL = gateway.tls.certificates, none = plain HTTP.
     * SIGHUP (ag_gateway_reload) re-reads the same files. */
    const struct ag_tls_cert *tls_certs;
    size_t ntls_certs;
    const char *http_redirect; /* "HOST:PORT": plain HTTP there answers 308 to https;
                                  NULL = gateway.tls.httpRedirect, else none */
    /* The operator console's one-time codes live in <console_dir>/console-codes
     * (agora run: the data directory); NULL = no codes (POST /admin/console/session
     * answers 401). Borrowed: must outlive the gateway. */
    const char *console_dir;
    /* The mesh key (AGORA_MESH_KEY, at least AG_MESH_KEY_MIN characters): every
     * forwarded request that carries identity headers carries x-user-sig too
     * (include/agora/http.h), which `agora serve` instances require. NULL = none.
     * Borrowed: must outlive the gateway. */
    const char *mesh_key;
    /* `agora cluster up`'s DIR/status.json: GET /admin/cluster (admin) answers it
     * (src/gateway/admin.c); NULL = not a cluster's gateway (404). Borrowed. */
    const char *cluster_status;
};

struct ag_gateway_ready_check {
    const char *name;   /* copied; names the check in the /health/ready body */
    ag_obs_check_fn fn; /* must not block (see include/agora/obs.h) */
    void *ud;
};

/* Compile the configuration, bind and start serving. AG_ECONFIG with
 * "file:line: ..." in `err` for a bad configuration, AG_EIO when the address is
 * taken. On success *out is owned (ag_gateway_stop). */
AG_EXTERN int ag_gateway_start(const struct ag_gateway_options *opts,
                               struct ag_gateway **out /* OUT */, struct ag_err *err);
/* Whether the gateway serves HTTPS. */
AG_EXTERN bool ag_gateway_https(const struct ag_gateway *gw);
/* The plain-HTTP redirect listener's port; 0 when there is none. */
AG_EXTERN uint16_t ag_gateway_redirect_port(const struct ag_gateway *gw);
/* The bound port (useful with port 0). */
AG_EXTERN uint16_t ag_gateway_port(const struct ag_gateway *gw);
/* Load a new configuration: `yaml` when not NULL, else the options' file again.
 * 0 when it took effect; AG_ECONFIG (err says where) and the old one stays. */
AG_EXTERN int ag_gateway_reload(struct ag_gateway *gw, const char *yaml, struct ag_err *err);
/* Configuration generation: 1 at start, +1 per successful reload. */
AG_EXTERN uint64_t ag_gateway_generation(const struct ag_gateway *gw);
/* Drain (answer what is in flight, up to drain_ms), stop every thread and free. */
AG_EXTERN void ag_gateway_stop(struct ag_gateway *gw, uint32_t drain_ms);
/* Block until SIGINT/SIGTERM (then stop with drain_ms... the caller still calls
 * ag_gateway_stop); reload on every SIGHUP, logging the outcome. */
AG_EXTERN int ag_gateway_run_until_signal(struct ag_gateway *gw);

/* Compile a configuration without serving (agora gateway --check). */
AG_EXTERN int ag_gateway_config_check(const struct ag_gateway_options *opts, struct ag_err *err);

/* ---- development tokens (agora token) ---- */

struct ag_gateway_token_request {
    const char *sub;          /* subject (user id); required */
    const char *const *roles; /* "roles" claim */
    size_t nroles;
    const char *scope;  /* "scope" claim (space-separated), NULL = none */
    uint64_t ttl_s;     /* lifetime; 0 = 3600 */
    const char *issuer; /* which configured issuer; NULL = the first */
};

/* Mint a token signed with the configured issuer's first key that can sign (a
 * secret for HS*, privateKeyFile for RS/ES), with iss, aud (the first audience),
 * sub, roles, iat, nbf, exp and kid. *token is owned (ag_free). */
AG_EXTERN int ag_gateway_token(const struct ag_gateway_options *opts,
                               const struct ag_gateway_token_request *req, char **token /* OUT */,
                               struct ag_err *err);

/* ---- the operator console's one-time sign-in (src/gateway/console.c) ---- */

#define AG_CONSOLE_CODE_TTL_S  300 /* a code printed by agora console-url */
#define AG_CONSOLE_TOKEN_TTL_S 900 /* the admin token it is exchanged for */

/* Make a single-use code valid for `ttl_s` (clock NULL = system): 64 hex digits
 * into `code`; only its SHA-256 is kept, as a file under <dir>/console-codes. */
AG_EXTERN int ag_gateway_console_code(const char *dir, uint64_t ttl_s, const struct ag_clock *clock,
                                      char code[65] /* OUT */, struct ag_err *err);
/* Use up `code`: 0 once; AG_ENOTFOUND when unknown or used already, AG_ETIMEDOUT
 * when it had expired (it is gone either way). */
AG_EXTERN int ag_gateway_console_redeem(const char *dir, const char *code,
                                        const struct ag_clock *clock, struct ag_err *err);

/* Verify `token` as the gateway with this configuration would (signature, alg,
 * issuer, audience, times): its sub and roles (comma-separated) into the out
 * params. AG_EINVAL naming the reason for a refused token, AG_ECONFIG for a bad
 * configuration. For `agora mcp --token` (no gateway in between). */
AG_EXTERN int ag_gateway_verify_token(const struct ag_gateway_options *opts, const char *token,
                                      char sub[128] /* OUT */, char roles[1100] /* OUT */,
                                      struct ag_err *err);

#endif
