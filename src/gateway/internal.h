/*
 * Private declarations of the gateway: the raw YAML document (schema.c), the
 * compiled configuration snapshot (config.c), JWT verification (jwt.c), route
 * matching (match.c), the idempotency store (idem.c), the proxy handler
 * (proxy.c), the BFF (bff.c), admin endpoints (admin.c) and the lifecycle with
 * per-loop state (gateway.c).
 */
#ifndef AGORA_GATEWAY_INTERNAL_H
#define AGORA_GATEWAY_INTERNAL_H

#include <cyaml/cyaml.h>
#include <pthread.h>
#include <regex.h>
#include <stdatomic.h>

#include "agora/discovery.h"
#include "agora/cache.h"
#include "agora/gateway.h"
#include "agora/http.h"
#include "agora/mesh.h"
#include "agora/resil.h"

/* ---- the raw document (libcyaml fills these) ---- */

struct y_labels {
    char *version, *zone, *track, *app;
};
struct y_endpoint {
    char *address;
    struct y_labels *labels;
};
struct y_subset {
    char *name;
    struct y_labels *labels;
};
struct y_tcp {
    unsigned maxConnections;
    char *connectTimeout;
};
struct y_httppool {
    unsigned http1MaxPendingRequests, maxRequestsPerConnection;
    char *idleTimeout;
};
struct y_pool {
    struct y_tcp *tcp;
    struct y_httppool *http;
};
struct y_hash {
    char *httpHeaderName;
    bool useUser;
};
struct y_lb {
    char *simple;
    struct y_hash *consistentHash;
};
struct y_outlier {
    unsigned consecutive5xxErrors, consecutiveGatewayErrors, maxEjectionPercent;
    char *interval, *baseEjectionTime, *maxEjectionTime;
    int minHealthPercent;
};
struct y_hc {
    char *path, *interval, *timeout;
    unsigned healthyThreshold, unhealthyThreshold;
};
struct y_cb {
    unsigned consecutiveErrors;
    char *openTime;
};
struct y_budget {
    float ratio;
    unsigned minRetriesPerSecond;
};
struct y_upstls { /* Istio ClientTLSSettings */
    char *mode;   /* DISABLE, SIMPLE (verify the upstream), MUTUAL (and present ours) */
    char *caCertificates, *clientCertificate, *privateKey, *sni;
    bool insecureSkipVerify;
};
struct y_tp {
    struct y_upstls *tls;
    struct y_pool *connectionPool;
    struct y_lb *loadBalancer;
    struct y_outlier *outlierDetection;
    struct y_hc *healthCheck;
    struct y_cb *circuitBreaker;
    struct y_budget *retryBudget;
};
struct y_discovery {
    char *registry, *context; /* postgresql:// URI; the context its members serve */
};
struct y_dr {
    char *name, *host;
    struct y_endpoint *endpoints;
    unsigned endpoints_count;
    struct y_discovery *discovery; /* instead of endpoints (issue 14) */
    struct y_tp *trafficPolicy;
    struct y_subset *subsets;
    unsigned subsets_count;
};
struct y_strmatch {
    char *exact, *prefix, *regex, *pattern;
};
struct y_hdrmatch {
    char *name, *exact, *prefix, *regex;
    bool present;
};
struct y_match {
    struct y_strmatch *uri, *method;
    struct y_hdrmatch *headers;
    unsigned headers_count;
};
struct y_dest {
    char *host, *subset;
};
struct y_rdest {
    struct y_dest *destination;
    int weight;
};
struct y_retries {
    unsigned attempts;
    char *perTryTimeout, *retryOn, *backoff;
};
struct y_pct {
    float value;
};
struct y_delay {
    struct y_pct *percentage;
    char *fixedDelay;
};
struct y_abort {
    struct y_pct *percentage;
    int httpStatus;
};
struct y_fault {
    struct y_delay *delay;
    struct y_abort *abort;
};
struct y_rewrite {
    char *uri;
};
struct y_auth {
    bool required;
    char **roles;
    unsigned roles_count;
    char **scopes;
    unsigned scopes_count;
};
struct y_rl {
    unsigned requests, burst, maxKeys;
    char *per, *key;
};
struct y_cache {
    char *maxAge; /* public GETs cached for this long (Cache-Control: public, max-age) */
};
struct y_http {
    struct y_cache *cache;
    char *name;
    struct y_match *match;
    unsigned match_count;
    struct y_rewrite *rewrite;
    struct y_rdest *route;
    unsigned route_count;
    struct y_retries *retries;
    char *timeout;
    struct y_fault *fault;
    struct y_auth *auth;
    struct y_rl *rateLimit;
    bool *idempotency;
    unsigned maxBodyBytes;
};
struct y_vs {
    char *name;
    char **hosts;
    unsigned hosts_count;
    struct y_http *http;
    unsigned http_count;
};
struct y_key {
    char *kid, *alg, *secret, *secretEnv, *publicKey, *publicKeyFile, *privateKeyFile;
};
struct y_issuer {
    char *issuer;
    char **audiences;
    unsigned audiences_count;
    struct y_key *keys;
    unsigned keys_count;
    char *jwksFile;
    char *jwksUri;     /* http://HOST:PORT/path (numeric host), fetched and cached */
    char *jwksRefresh; /* how often to fetch it again (default 5m) */
};
struct y_jwt {
    struct y_issuer *issuers;
    unsigned issuers_count;
    char *clockSkew, *rolesClaim;
    char *maxTokenLifetime; /* longest exp - iat accepted (default 24h; 0s: no limit) */
};
struct y_cert {
    char *cert, *key;
};
struct y_tls {
    struct y_cert *certificates;
    unsigned certificates_count;
    unsigned hstsMaxAge;
    char *httpRedirect; /* HOST:PORT serving 308 to https */
};
struct y_gw {
    struct y_tls *tls;
    char *listen, *idempotencyTtl, *firstByteTimeout;
    unsigned workers, maxBodyBytes, idempotencyMaxEntries, maxConnectionsPerPeer;
    bool accessLog;
    unsigned responseCacheBytes; /* the response cache's budget (default 16 MiB) */
};
struct y_bffcall {
    char *host, *path, *timeout;
};
struct y_bff {
    struct y_bffcall *customers, *catalog, *ordering;
};
struct y_root {
    struct y_gw *gateway;
    struct y_jwt *jwt;
    struct y_dr *destinationRules;
    unsigned destinationRules_count;
    struct y_vs *virtualServices;
    unsigned virtualServices_count;
    struct y_bff *bff;
};

extern const cyaml_schema_value_t ag__gw_schema;

/* ---- YAML positions (yamlpos.c): "a.b[2].c" -> line ---- */

struct ag__yamlpos;
/* Index the document's node paths; NULL when the text does not parse (cyaml
 * reports that error itself). */
struct ag__yamlpos *ag__yamlpos_new(const char *text, size_t len);
/* Line (1-based) of `path`, or of its nearest indexed ancestor; 0 when unknown. */
unsigned ag__yamlpos_line(const struct ag__yamlpos *p, const char *path);
void ag__yamlpos_free(struct ag__yamlpos *p);

/* ---- JWT (jwt.c) ---- */

#define GW_MAX_ROLES 16

enum gw_alg {
    GW_HS256,
    GW_HS384,
    GW_HS512,
    GW_RS256,
    GW_RS384,
    GW_RS512,
    GW_ES256,
    GW_ES384,
    GW_ES512,
    GW_ALG_N
};

struct gw_key {
    char *kid;          /* NULL = matches a token without kid */
    enum gw_alg alg;    /* pinned: a token must name exactly this alg */
    unsigned char *key; /* secret bytes or PEM public key (owned) */
    size_t key_len;
    char *sign_pem; /* PEM private key for minting (RS/ES), or NULL */
    size_t sign_pem_len;
};

struct gw_issuer {
    char *iss;                /* exact match of the iss claim */
    char *jwks_uri;           /* keys also come from this URL (NULL: none) */
    uint64_t jwks_refresh_ns; /* how often the fetcher fetches it */
    char **aud;               /* accepted audiences (any one in the token's aud) */
    size_t naud;
    struct gw_key *keys;
    size_t nkeys;
};

struct gw_jwt {
    struct gw_issuer *issuers;
    size_t nissuers;
    uint64_t skew_s;         /* clock skew allowed on exp/nbf/iat */
    uint64_t max_lifetime_s; /* longest exp - iat accepted; 0 = no limit */
    char *roles_claim;       /* "roles" */
};

/* The verified identity of a request. */
struct gw_principal {
    char sub[128];                /* sub claim */
    char roles[GW_MAX_ROLES][64]; /* roles claim (array or space-separated string) */
    size_t nroles;
    char scopes[GW_MAX_ROLES][64]; /* scope / scp claim */
    size_t nscopes;
    char roles_csv[GW_MAX_ROLES * 65]; /* for x-user-roles */
    uint64_t exp;                      /* expiry (Unix s) */
};

/* Why a token was refused (logged; clients only ever see "invalid token"). */
enum gw_jwt_fail {
    GW_JWT_OK,
    GW_JWT_MALFORMED,
    GW_JWT_ALG,
    GW_JWT_NO_KEY,
    GW_JWT_SIGNATURE,
    GW_JWT_EXPIRED,
    GW_JWT_NOT_YET,
    GW_JWT_ISSUER,
    GW_JWT_AUDIENCE,
    GW_JWT_CLAIMS,
    GW_JWT_NO_EXP,   /* no exp claim: a token must expire */
    GW_JWT_NO_IAT,   /* no iat claim while a maximum lifetime applies */
    GW_JWT_LIFETIME, /* exp - iat exceeds jwt.maxTokenLifetime */
};
/* A reason safe to tell the client (NULL for the failures whose detail stays
 * "invalid token", so nothing about keys or signatures is revealed). */
const char *ag__gw_jwt_fail_public(enum gw_jwt_fail f);
const char *ag__gw_jwt_fail_name(enum gw_jwt_fail f);
int ag__gw_alg_parse(const char *s, enum gw_alg *out);
const char *ag__gw_alg_name(enum gw_alg a);
/* Verify a compact JWS; fills `p`. `now_s` is Unix seconds. */
enum gw_jwt_fail ag__gw_jwt_verify(const struct gw_jwt *j, const char *token, size_t len,
                                   uint64_t now_s, struct gw_principal *p /* OUT */);
/* Load a JWKS file's keys (kty oct/RSA/EC with alg) into `iss`. */
int ag__gw_jwks_load(struct gw_issuer *iss, const char *path, struct ag_err *err);
/* Add the keys of a JWKS document (text) to `iss`. */
int ag__gw_jwks_add(struct gw_issuer *iss, const char *text, const char *what, struct ag_err *err);

/* ---- JWKS over HTTP (jwks.c) ---- */

/* The last good JWKS document of each URL, per gateway (thread-safe). */
struct gw_jwks_cache;
struct gw_jwks_cache *ag__gw_jwks_cache_new(void); /* NULL on ENOMEM; owned */
void ag__gw_jwks_cache_free(struct gw_jwks_cache *c);
/* The last good document fetched from `uri` (owned copy; NULL when none yet or
 * `c` is NULL). */
char *ag__gw_jwks_cached(struct gw_jwks_cache *c, const char *uri);
/* Fetch `uri` now (blocking, 5 s) and cache it when it parses as a JWKS. 1 when the
 * cached document changed, 0 when unchanged, or an error (the cache keeps the last
 * good one). */
int ag__gw_jwks_refresh(struct gw_jwks_cache *c, const char *uri, struct ag_err *err);
/* The document for `uri`: the cached one, else fetched now (and cached in `c`;
 * with `c` NULL fetched and not kept). Owned; NULL when unreachable or invalid. */
char *ag__gw_jwks_get(struct gw_jwks_cache *c, const char *uri);
/* The fetcher thread: refreshes every issuer's jwksUri on its schedule and reloads
 * the gateway's configuration when keys changed. */
int ag__gw_jwks_start(struct ag_gateway *gw);
void ag__gw_jwks_stop(struct ag_gateway *gw);
void ag__gw_jwt_free(struct gw_jwt *j);
/* Mint (jwt.c): see ag_gateway_token. */
int ag__gw_jwt_mint(const struct gw_jwt *j, const struct ag_gateway_token_request *req,
                    uint64_t now_s, char **out, struct ag_err *err);

/* ---- the compiled configuration ---- */

enum gw_match_kind { GW_M_ANY, GW_M_EXACT, GW_M_PREFIX, GW_M_REGEX, GW_M_PATTERN, GW_M_PRESENT };

struct gw_strmatch {
    enum gw_match_kind kind;
    char *value;  /* exact / prefix / pattern text, or the header name for headers */
    char *hvalue; /* header matches: the value (exact/prefix) */
    regex_t re;   /* GW_M_REGEX (anchored) */
};

struct gw_match {
    struct gw_strmatch uri, method;
    struct gw_strmatch *headers;
    size_t nheaders;
};

struct gw_dest {
    struct ag_mesh_cluster *cluster; /* borrowed from the conf */
    int subset;                      /* -1 = all */
    uint32_t weight;                 /* share of total */
};

enum gw_key_kind { GW_KEY_USER_OR_IP, GW_KEY_USER, GW_KEY_IP, GW_KEY_API_KEY, GW_KEY_HEADER };

struct gw_route {
    char *name;               /* for metrics and logs */
    struct gw_match *matches; /* any one matches; none = everything */
    size_t nmatches;
    char *rewrite; /* replaces the matched uri prefix; NULL = none */
    struct gw_dest *dests;
    size_t ndests;
    uint32_t total_weight;
    struct ag_mesh_retry retry;
    uint32_t timeout_ms;         /* covers retries */
    double delay_pct, abort_pct; /* fault injection, 0..100 */
    uint32_t delay_ms;
    int abort_status;
    bool auth_required; /* a valid token is needed */
    char **roles;       /* any one of these roles */
    size_t nroles;
    char **scopes; /* every one of these scopes */
    size_t nscopes;
    struct ag_ratelimit *limiter; /* NULL = no limit */
    struct ag_rate rate;          /* for the RateLimit headers */
    enum gw_key_kind key_kind;
    char *key_header;                /* GW_KEY_HEADER / GW_KEY_API_KEY: header name */
    bool idempotency;                /* Idempotency-Key handled on POST */
    size_t max_body;                 /* 0 = the gateway's */
    struct ag_obs_series *m_req[6];  /* requests by class 1xx..5xx (index 1..5), 0 = other */
    struct ag_obs_series *m_dur;     /* duration histogram */
    struct ag_obs_series *m_limited; /* agora_gateway_ratelimited_total: 429s of the rate limit */
    uint32_t cache_max_age_s;        /* cache.maxAge: anonymous GETs cached and public; 0 = no */
};

struct gw_bffcall {
    struct ag_mesh_cluster *cluster; /* NULL = call not configured */
    char *path;                      /* with {user} and {limit} */
    uint32_t timeout_ms;
};

struct gw_conf {
    _Atomic int refs;                  /* gateway's current + loops + health checker */
    uint64_t generation;               /* 1, 2, ... */
    struct ag_mesh_cluster **clusters; /* one per DestinationRule */
    char **cluster_hosts;              /* their host names */
    char **cluster_hash_hdr; /* consistent-hash header per cluster; NULL = the user (or IP) */
    size_t nclusters;
    /* discovery: per cluster the registry's context its endpoints come from (NULL:
     * static endpoints), the one registry URI (NULL: none) and, once the
     * configuration is applied, the gateway's resolver watching them (borrowed;
     * the last unref unwatches before freeing the clusters) */
    char **cluster_ctx;
    char *registry;
    struct ag_disc *disc;
    struct ag_tls_client **tls_clients; /* trafficPolicy.tls contexts the pools borrow */
    size_t ntls_clients;
    struct gw_route *routes; /* flattened, in order */
    size_t nroutes;
    struct gw_jwt jwt;        /* may have no issuers */
    struct gw_bffcall bff[3]; /* customers, catalog, ordering */
    char listen[80];          /* gateway.listen or "" */
    struct {
        char cert[512], key[512];
    } tls[8];               /* gateway.tls.certificates */
    size_t ntls;            /* pairs in tls */
    uint32_t hsts_max_age;  /* gateway.tls.hstsMaxAge; 0 = one year */
    char http_redirect[80]; /* gateway.tls.httpRedirect or "" */
    int workers;            /* gateway.workers */
    size_t max_body;        /* gateway.maxBodyBytes */
    uint32_t max_per_peer;  /* gateway.maxConnectionsPerPeer; 0 = the server's 256 */
    uint32_t first_byte_ms; /* gateway.firstByteTimeout; 0 = the server's 5 s */
    uint64_t idem_ttl_ns;   /* gateway.idempotencyTtl */
    uint32_t idem_max;      /* gateway.idempotencyMaxEntries */
    bool access_log;
    size_t resp_cache_bytes; /* gateway.responseCacheBytes */
};

struct gw_compile_env {
    const struct ag_clock *clock;
    const struct ag_rng *rng;
    struct ag_obs_registry *metrics;
    const char *source;         /* file name for messages */
    struct gw_jwks_cache *jwks; /* the gateway's JWKS cache; NULL: fetch, keep nothing */
};

/* Compile YAML text into a new snapshot (refs = 1). AG_ECONFIG with "file:line:
 * path: reason" in err. */
int ag__gw_conf_compile(const char *text, size_t len, const struct gw_compile_env *env,
                        struct gw_conf **out, struct ag_err *err);
void ag__gw_conf_ref(struct gw_conf *c);
void ag__gw_conf_unref(struct gw_conf *c);
/* Parse "250ms", "2s", "1.5s", "5m", "1h", "10us" into ns. */
int ag__gw_duration(const char *s, uint64_t *ns);

/* ---- matching (match.c) ---- */

/* The first route matching the request, or NULL; *prefix_len = matched uri prefix length. */
const struct gw_route *ag__gw_route_find(const struct gw_conf *c, const char *method,
                                         const char *path, const struct ag_http_req *req,
                                         size_t *prefix_len /* OUT */);
bool ag__gw_pattern_match(const char *pattern, const char *path);

/* ---- idempotency store (idem.c) ---- */

struct gw_idem;
enum gw_idem_state { GW_IDEM_NEW, GW_IDEM_IN_PROGRESS, GW_IDEM_DONE, GW_IDEM_MISMATCH };
struct gw_idem_resp {
    int status;
    char *headers; /* "Name: value\n" lines (owned) */
    char *body;    /* owned */
    size_t body_len;
    char *content_type; /* owned or NULL */
};
int ag__gw_idem_new(uint32_t max_entries, uint64_t ttl_ns, const struct ag_clock *clock,
                    struct gw_idem **out);
void ag__gw_idem_free(struct gw_idem *s);
/* Begin (key, user, request fingerprint): NEW reserves the key; DONE copies the
 * stored answer into *resp (caller frees with ag__gw_idem_resp_free);
 * IN_PROGRESS: a concurrent duplicate; MISMATCH: same key, different request. */
enum gw_idem_state ag__gw_idem_begin(struct gw_idem *s, const char *key, const char *user,
                                     uint64_t fingerprint, struct gw_idem_resp *resp /* OUT */);
/* Store the answer for a reserved key (takes ownership of resp's strings); a
 * 5xx answer releases the key instead so the client may retry. */
void ag__gw_idem_finish(struct gw_idem *s, const char *key, const char *user,
                        struct gw_idem_resp *resp);
void ag__gw_idem_resp_free(struct gw_idem_resp *r);
size_t ag__gw_idem_size(struct gw_idem *s);

/* ---- the gateway ---- */

struct gw_loop;

struct ag_gateway {
    struct ag_gateway_options opts; /* copy; strings below */
    char *config_path;              /* owned */
    char *config_yaml;              /* owned */
    pthread_mutex_t conf_lock;      /* guards conf (pointer swap + ref) */
    struct gw_conf *conf;           /* current snapshot */
    _Atomic uint64_t generation;    /* conf->generation, read lock-free */
    struct ag_http_router *router;
    struct ag_http_server *server;
    struct ag_tls_server *tls;              /* certificates when serving HTTPS */
    struct ag_http_router *redirect_router; /* plain HTTP -> 308 https */
    struct ag_http_server *redirect;        /* its server; NULL = none */
    uint16_t redirect_to;                   /* the HTTPS port it points at */
    struct ag_obs_registry *metrics;        /* borrowed or owned */
    bool own_metrics;
    /* agora_cluster_* on /metrics (cluster_metrics.c) */
    struct gw_cluster_metrics *cluster_metrics;
    struct ag_obs_family *denied;   /* agora_authz_denied_total{reason} */
    struct ag_obs_health *health;   /* readiness checks */
    struct ag_mesh_health *checker; /* active health checks */
    struct ag_disc *disc;           /* the registry's resolver (discovery:), or NULL */
    char disc_registry[512];        /* its URI */
    struct gw_idem *idem;           /* idempotency store */
    const struct ag_clock *clock;
    pthread_mutex_t loops_lock; /* guards loops[] growth */
    struct gw_loop *loops[256]; /* per worker loop state */
    _Atomic size_t nloops;
    _Atomic bool stopping;
    struct ag_obs_family *f_route_req, *f_route_dur, *f_up_req;
    struct gw_jwks_cache *jwks; /* the last good JWKS document per jwksUri (owned) */
    struct ag_lru *resp_cache;  /* public GET answers (proxy.c), sized at start */
    pthread_t jwks_thread;      /* the JWKS fetcher (when an issuer has a jwksUri) */
    bool jwks_started;
    pthread_mutex_t jwks_lock;
    pthread_cond_t jwks_cond;
    bool jwks_stop;
};

/* The state of the loop `req` runs on (created on first use); NULL when
 * stopping or out of memory. */
struct gw_loop *ag__gw_loop_get(struct ag_gateway *gw, struct ag_http_req *req);
/* Take the loop's current snapshot for one request; release with ag__gw_loop_release.
 * NULL (nothing to release) when memory ran out before the loop had one. */
struct gw_conf *ag__gw_loop_acquire(struct gw_loop *l, void **token /* OUT */);
void ag__gw_loop_release(struct gw_loop *l, void *token);
struct ag_mesh_pools *ag__gw_loop_pools(struct gw_loop *l);
/* Ask the loop to close its pools once its requests are done (any thread). */
void ag__gw_loop_stop(struct gw_loop *l);
/* The proxy's per-request state, recycled on the loop: a spare one (its contents
 * left over: the caller initialises what it uses), else malloc(size); put back
 * (or freed when the loop keeps enough, or is closed) at the request's end. */
void *ag__gw_loop_pctx_get(struct gw_loop *l, size_t size);
void ag__gw_loop_pctx_put(struct gw_loop *l, void *p);

/* The verified-token cache (tokcache.c): `nslots` direct-mapped slots keyed by
 * the token's hash, holding a copy of the token. A get is a hit only for the same
 * token, verified under the same configuration generation `gen`, while now_s <
 * exp; it copies the identity into *p. No locks: one cache per loop. */
struct gw_tokcache;
int ag__gw_tokcache_new(size_t nslots, struct gw_tokcache **out);
void ag__gw_tokcache_free(struct gw_tokcache *c);
bool ag__gw_tokcache_get(struct gw_tokcache *c, const char *tok, size_t len, uint64_t gen,
                         uint64_t now_s, struct gw_principal *p /* OUT */);
void ag__gw_tokcache_put(struct gw_tokcache *c, const char *tok, size_t len, uint64_t gen,
                         const struct gw_principal *p);
/* Copy an identity by its used parts (sub, roles, scopes, roles_csv, exp). */
void ag__gw_principal_copy(struct gw_principal *dst, const struct gw_principal *src);

/* Handlers (proxy.c, bff.c, admin.c). */
int ag__gw_proxy(struct ag_http_req *req, void *ud);
int ag__gw_bff(struct ag_http_req *req, void *ud);
int ag__gw_admin_upstreams(struct ag_http_req *req, void *ud);
int ag__gw_admin_breakers(struct ag_http_req *req, void *ud);
int ag__gw_admin_config(struct ag_http_req *req, void *ud);
/* GET /admin/cluster, admin only: `agora cluster up`'s status file
 * (opts.cluster_status) and/or the discovery registry's members. */
int ag__gw_admin_cluster(struct ag_http_req *req, void *ud);
/* Authenticate the request against conf's issuers: 0 with *p (or no token and
 * *has = false), else answers 401 itself and returns 1. */
int ag__gw_authenticate(struct ag_gateway *gw, struct gw_loop *l, const struct gw_conf *conf,
                        struct ag_http_req *req, struct gw_principal *p, bool *has);
/* An `agora cluster up` gateway (opts.cluster_status): the agora_cluster_* series
 * on /metrics from the supervisor's status file (cluster_metrics.c). */
int ag__gw_cluster_metrics_start(struct ag_gateway *gw);
void ag__gw_cluster_metrics_stop(struct ag_gateway *gw);
/* Collector: agora_breaker_open{scope="gateway"} of every cluster's breaker. */
void ag__gw_breakers_collect(void *ud);
/* Admin endpoints and /metrics: 0 for an admin (or, with no jwt section, a
 * loopback peer); else answers 401/403, logs, counts and returns 1. */
int ag__gw_require_admin(struct ag_http_req *req, void *ud);
/* Count a refusal in agora_authz_denied_total{reason}. */
void ag__gw_count_denied(struct ag_gateway *gw, const char *reason);
/* Answer a problem+json with status, title, detail. */
int ag__gw_problem(struct ag_http_req *req, int status, const char *detail);
/* The operator console (console.c): its files (GET /console, /console/{file}) and
 * the one-time code exchange (POST /admin/console/session). */
int ag__gw_console_index(struct ag_http_req *req, void *ud);
int ag__gw_console_file(struct ag_http_req *req, void *ud);
int ag__gw_console_session(struct ag_http_req *req, void *ud);

#endif
