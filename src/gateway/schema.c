/*
 * The gateway's YAML schema for libcyaml: the raw document as loaded, before
 * compilation (config.c). Keys follow Istio's VirtualService and DestinationRule
 * (camelCase, same nesting) where Istio has a word for the thing; agora's own
 * additions (jwt, auth, rateLimit, idempotency, healthCheck, circuitBreaker, bff)
 * use the same style. Unknown keys are errors, so a typo is refused, not ignored.
 * Every field is optional here; config.c checks what is required and says where.
 */
#include "gateway/internal.h"

#define OPT             (CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL)
#define STR(k, s, m)    CYAML_FIELD_STRING_PTR(k, OPT, s, m, 0, CYAML_UNLIMITED)
#define UINT(k, s, m)   CYAML_FIELD_UINT(k, CYAML_FLAG_OPTIONAL, s, m)
#define INT(k, s, m)    CYAML_FIELD_INT(k, CYAML_FLAG_OPTIONAL, s, m)
#define BOOL(k, s, m)   CYAML_FIELD_BOOL(k, CYAML_FLAG_OPTIONAL, s, m)
#define FLOAT(k, s, m)  CYAML_FIELD_FLOAT(k, CYAML_FLAG_OPTIONAL, s, m)
#define MAP(k, s, m, f) CYAML_FIELD_MAPPING_PTR(k, OPT, s, m, f)
#define SEQ(k, s, m, e) CYAML_FIELD_SEQUENCE(k, OPT, s, m, &e, 0, CYAML_UNLIMITED)
#define ENTRY(t, f)                                                                                \
    {                                                                                              \
        CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, t, f)                                              \
    }

static const cyaml_schema_value_t string_entry = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 0, CYAML_UNLIMITED)};

/* ---- DestinationRule ---- */

static const cyaml_schema_field_t labels_fields[] = {
    STR("version", struct y_labels, version), STR("zone", struct y_labels, zone),
    STR("track", struct y_labels, track), STR("app", struct y_labels, app), CYAML_FIELD_END};
static const cyaml_schema_field_t endpoint_fields[] = {
    STR("address", struct y_endpoint, address),
    MAP("labels", struct y_endpoint, labels, labels_fields), CYAML_FIELD_END};
static const cyaml_schema_value_t endpoint_entry = ENTRY(struct y_endpoint, endpoint_fields);
static const cyaml_schema_field_t subset_fields[] = {
    STR("name", struct y_subset, name), MAP("labels", struct y_subset, labels, labels_fields),
    CYAML_FIELD_END};
static const cyaml_schema_value_t subset_entry = ENTRY(struct y_subset, subset_fields);
static const cyaml_schema_field_t tcp_fields[] = {
    UINT("maxConnections", struct y_tcp, maxConnections),
    STR("connectTimeout", struct y_tcp, connectTimeout), CYAML_FIELD_END};
static const cyaml_schema_field_t httppool_fields[] = {
    UINT("http1MaxPendingRequests", struct y_httppool, http1MaxPendingRequests),
    UINT("maxRequestsPerConnection", struct y_httppool, maxRequestsPerConnection),
    STR("idleTimeout", struct y_httppool, idleTimeout), CYAML_FIELD_END};
static const cyaml_schema_field_t pool_fields[] = {
    MAP("tcp", struct y_pool, tcp, tcp_fields), MAP("http", struct y_pool, http, httppool_fields),
    CYAML_FIELD_END};
static const cyaml_schema_field_t hash_fields[] = {
    STR("httpHeaderName", struct y_hash, httpHeaderName), BOOL("useUser", struct y_hash, useUser),
    CYAML_FIELD_END};
static const cyaml_schema_field_t lb_fields[] = {
    STR("simple", struct y_lb, simple),
    MAP("consistentHash", struct y_lb, consistentHash, hash_fields), CYAML_FIELD_END};
static const cyaml_schema_field_t outlier_fields[] = {
    UINT("consecutive5xxErrors", struct y_outlier, consecutive5xxErrors),
    UINT("consecutiveGatewayErrors", struct y_outlier, consecutiveGatewayErrors),
    STR("interval", struct y_outlier, interval),
    STR("baseEjectionTime", struct y_outlier, baseEjectionTime),
    STR("maxEjectionTime", struct y_outlier, maxEjectionTime),
    UINT("maxEjectionPercent", struct y_outlier, maxEjectionPercent),
    INT("minHealthPercent", struct y_outlier, minHealthPercent),
    CYAML_FIELD_END};
static const cyaml_schema_field_t hc_fields[] = {
    STR("path", struct y_hc, path),
    STR("interval", struct y_hc, interval),
    STR("timeout", struct y_hc, timeout),
    UINT("healthyThreshold", struct y_hc, healthyThreshold),
    UINT("unhealthyThreshold", struct y_hc, unhealthyThreshold),
    CYAML_FIELD_END};
static const cyaml_schema_field_t cb_fields[] = {
    UINT("consecutiveErrors", struct y_cb, consecutiveErrors),
    STR("openTime", struct y_cb, openTime), CYAML_FIELD_END};
static const cyaml_schema_field_t budget_fields[] = {
    FLOAT("ratio", struct y_budget, ratio),
    UINT("minRetriesPerSecond", struct y_budget, minRetriesPerSecond), CYAML_FIELD_END};
static const cyaml_schema_field_t upstls_fields[] = {
    STR("mode", struct y_upstls, mode),
    STR("caCertificates", struct y_upstls, caCertificates),
    STR("clientCertificate", struct y_upstls, clientCertificate),
    STR("privateKey", struct y_upstls, privateKey),
    STR("sni", struct y_upstls, sni),
    BOOL("insecureSkipVerify", struct y_upstls, insecureSkipVerify),
    CYAML_FIELD_END};
static const cyaml_schema_field_t tp_fields[] = {
    MAP("tls", struct y_tp, tls, upstls_fields),
    MAP("connectionPool", struct y_tp, connectionPool, pool_fields),
    MAP("loadBalancer", struct y_tp, loadBalancer, lb_fields),
    MAP("outlierDetection", struct y_tp, outlierDetection, outlier_fields),
    MAP("healthCheck", struct y_tp, healthCheck, hc_fields),
    MAP("circuitBreaker", struct y_tp, circuitBreaker, cb_fields),
    MAP("retryBudget", struct y_tp, retryBudget, budget_fields),
    CYAML_FIELD_END};
static const cyaml_schema_field_t discovery_fields[] = {
    STR("registry", struct y_discovery, registry), STR("context", struct y_discovery, context),
    CYAML_FIELD_END};
static const cyaml_schema_field_t dr_fields[] = {
    STR("name", struct y_dr, name),
    STR("host", struct y_dr, host),
    SEQ("endpoints", struct y_dr, endpoints, endpoint_entry),
    MAP("discovery", struct y_dr, discovery, discovery_fields),
    MAP("trafficPolicy", struct y_dr, trafficPolicy, tp_fields),
    SEQ("subsets", struct y_dr, subsets, subset_entry),
    CYAML_FIELD_END};
static const cyaml_schema_value_t dr_entry = ENTRY(struct y_dr, dr_fields);

/* ---- VirtualService ---- */

static const cyaml_schema_field_t strmatch_fields[] = {
    STR("exact", struct y_strmatch, exact), STR("prefix", struct y_strmatch, prefix),
    STR("regex", struct y_strmatch, regex), STR("pattern", struct y_strmatch, pattern),
    CYAML_FIELD_END};
static const cyaml_schema_field_t hdrmatch_fields[] = {
    STR("name", struct y_hdrmatch, name),        STR("exact", struct y_hdrmatch, exact),
    STR("prefix", struct y_hdrmatch, prefix),    STR("regex", struct y_hdrmatch, regex),
    BOOL("present", struct y_hdrmatch, present), CYAML_FIELD_END};
static const cyaml_schema_value_t hdrmatch_entry = ENTRY(struct y_hdrmatch, hdrmatch_fields);
static const cyaml_schema_field_t match_fields[] = {
    MAP("uri", struct y_match, uri, strmatch_fields),
    MAP("method", struct y_match, method, strmatch_fields),
    SEQ("headers", struct y_match, headers, hdrmatch_entry), CYAML_FIELD_END};
static const cyaml_schema_value_t match_entry = ENTRY(struct y_match, match_fields);
static const cyaml_schema_field_t dest_fields[] = {
    STR("host", struct y_dest, host), STR("subset", struct y_dest, subset), CYAML_FIELD_END};
static const cyaml_schema_field_t rdest_fields[] = {
    MAP("destination", struct y_rdest, destination, dest_fields),
    INT("weight", struct y_rdest, weight), CYAML_FIELD_END};
static const cyaml_schema_value_t rdest_entry = ENTRY(struct y_rdest, rdest_fields);
static const cyaml_schema_field_t retries_fields[] = {
    UINT("attempts", struct y_retries, attempts),
    STR("perTryTimeout", struct y_retries, perTryTimeout),
    STR("retryOn", struct y_retries, retryOn), STR("backoff", struct y_retries, backoff),
    CYAML_FIELD_END};
static const cyaml_schema_field_t pct_fields[] = {FLOAT("value", struct y_pct, value),
                                                  CYAML_FIELD_END};
static const cyaml_schema_field_t delay_fields[] = {
    MAP("percentage", struct y_delay, percentage, pct_fields),
    STR("fixedDelay", struct y_delay, fixedDelay), CYAML_FIELD_END};
static const cyaml_schema_field_t abort_fields[] = {
    MAP("percentage", struct y_abort, percentage, pct_fields),
    INT("httpStatus", struct y_abort, httpStatus), CYAML_FIELD_END};
static const cyaml_schema_field_t fault_fields[] = {
    MAP("delay", struct y_fault, delay, delay_fields),
    MAP("abort", struct y_fault, abort, abort_fields), CYAML_FIELD_END};
static const cyaml_schema_field_t rewrite_fields[] = {STR("uri", struct y_rewrite, uri),
                                                      CYAML_FIELD_END};
static const cyaml_schema_field_t auth_fields[] = {
    BOOL("required", struct y_auth, required), SEQ("roles", struct y_auth, roles, string_entry),
    SEQ("scopes", struct y_auth, scopes, string_entry), CYAML_FIELD_END};
static const cyaml_schema_field_t rl_fields[] = {
    UINT("requests", struct y_rl, requests), STR("per", struct y_rl, per),
    UINT("burst", struct y_rl, burst),       STR("key", struct y_rl, key),
    UINT("maxKeys", struct y_rl, maxKeys),   CYAML_FIELD_END};
static const cyaml_schema_field_t cache_fields[] = {STR("maxAge", struct y_cache, maxAge),
                                                    CYAML_FIELD_END};
static const cyaml_schema_field_t http_fields[] = {
    STR("name", struct y_http, name),
    MAP("cache", struct y_http, cache, cache_fields),
    SEQ("match", struct y_http, match, match_entry),
    MAP("rewrite", struct y_http, rewrite, rewrite_fields),
    SEQ("route", struct y_http, route, rdest_entry),
    MAP("retries", struct y_http, retries, retries_fields),
    STR("timeout", struct y_http, timeout),
    MAP("fault", struct y_http, fault, fault_fields),
    MAP("auth", struct y_http, auth, auth_fields),
    MAP("rateLimit", struct y_http, rateLimit, rl_fields),
    CYAML_FIELD_BOOL_PTR("idempotency", OPT, struct y_http, idempotency),
    UINT("maxBodyBytes", struct y_http, maxBodyBytes),
    CYAML_FIELD_END};
static const cyaml_schema_value_t http_entry = ENTRY(struct y_http, http_fields);
static const cyaml_schema_field_t vs_fields[] = {
    STR("name", struct y_vs, name), SEQ("hosts", struct y_vs, hosts, string_entry),
    SEQ("http", struct y_vs, http, http_entry), CYAML_FIELD_END};
static const cyaml_schema_value_t vs_entry = ENTRY(struct y_vs, vs_fields);

/* ---- jwt, gateway, bff ---- */

static const cyaml_schema_field_t key_fields[] = {
    STR("kid", struct y_key, kid),
    STR("alg", struct y_key, alg),
    STR("secret", struct y_key, secret),
    STR("secretEnv", struct y_key, secretEnv),
    STR("publicKey", struct y_key, publicKey),
    STR("publicKeyFile", struct y_key, publicKeyFile),
    STR("privateKeyFile", struct y_key, privateKeyFile),
    CYAML_FIELD_END};
static const cyaml_schema_value_t key_entry = ENTRY(struct y_key, key_fields);
static const cyaml_schema_field_t issuer_fields[] = {
    STR("issuer", struct y_issuer, issuer),
    SEQ("audiences", struct y_issuer, audiences, string_entry),
    SEQ("keys", struct y_issuer, keys, key_entry),
    STR("jwksFile", struct y_issuer, jwksFile),
    STR("jwksUri", struct y_issuer, jwksUri),
    STR("jwksRefresh", struct y_issuer, jwksRefresh),
    CYAML_FIELD_END};
static const cyaml_schema_value_t issuer_entry = ENTRY(struct y_issuer, issuer_fields);
static const cyaml_schema_field_t jwt_fields[] = {
    SEQ("issuers", struct y_jwt, issuers, issuer_entry), STR("clockSkew", struct y_jwt, clockSkew),
    STR("rolesClaim", struct y_jwt, rolesClaim),
    STR("maxTokenLifetime", struct y_jwt, maxTokenLifetime), CYAML_FIELD_END};
static const cyaml_schema_field_t cert_fields[] = {STR("cert", struct y_cert, cert),
                                                   STR("key", struct y_cert, key), CYAML_FIELD_END};
static const cyaml_schema_value_t cert_entry = ENTRY(struct y_cert, cert_fields);
static const cyaml_schema_field_t tls_fields[] = {
    SEQ("certificates", struct y_tls, certificates, cert_entry),
    UINT("hstsMaxAge", struct y_tls, hstsMaxAge), STR("httpRedirect", struct y_tls, httpRedirect),
    CYAML_FIELD_END};
static const cyaml_schema_field_t gw_fields[] = {
    STR("listen", struct y_gw, listen),
    MAP("tls", struct y_gw, tls, tls_fields),
    UINT("workers", struct y_gw, workers),
    UINT("maxBodyBytes", struct y_gw, maxBodyBytes),
    UINT("maxConnectionsPerPeer", struct y_gw, maxConnectionsPerPeer),
    STR("firstByteTimeout", struct y_gw, firstByteTimeout),
    STR("idempotencyTtl", struct y_gw, idempotencyTtl),
    UINT("idempotencyMaxEntries", struct y_gw, idempotencyMaxEntries),
    BOOL("accessLog", struct y_gw, accessLog),
    UINT("responseCacheBytes", struct y_gw, responseCacheBytes),
    CYAML_FIELD_END};
static const cyaml_schema_field_t call_fields[] = {
    STR("host", struct y_bffcall, host), STR("path", struct y_bffcall, path),
    STR("timeout", struct y_bffcall, timeout), CYAML_FIELD_END};
static const cyaml_schema_field_t bff_fields[] = {
    MAP("customers", struct y_bff, customers, call_fields),
    MAP("catalog", struct y_bff, catalog, call_fields),
    MAP("ordering", struct y_bff, ordering, call_fields), CYAML_FIELD_END};

static const cyaml_schema_field_t root_fields[] = {
    MAP("gateway", struct y_root, gateway, gw_fields),
    MAP("jwt", struct y_root, jwt, jwt_fields),
    SEQ("destinationRules", struct y_root, destinationRules, dr_entry),
    SEQ("virtualServices", struct y_root, virtualServices, vs_entry),
    MAP("bff", struct y_root, bff, bff_fields),
    CYAML_FIELD_END};

const cyaml_schema_value_t ag__gw_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, struct y_root, root_fields)};
