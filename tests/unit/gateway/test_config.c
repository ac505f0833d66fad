/* Gateway configuration compile, JWT verification and the route limiter, with
 * an injected clock: line-numbered errors, alg pinning, claims, the GCRA limiter
 * admitting exactly rate x time + burst, the idempotency store. */
#include <criterion/criterion.h>
#include <jwt.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/internal.h"

#define SEC    1000000000ull
#define SECRET "unit-test-secret-0123456789abcdefgh"

static struct ag_fake_clock fc;

static const char base_yaml[] =
    "jwt:\n"
    "  clockSkew: 10s\n"
    "  issuers:\n"
    "    - issuer: unit\n"
    "      audiences: [agora]\n"
    "      keys: [{kid: k, alg: HS256, secret: \"" SECRET "\"}]\n"
    "destinationRules:\n"
    "  - host: svc\n"
    "    endpoints: [{address: 127.0.0.1:9}]\n"
    "virtualServices:\n"
    "  - name: t\n"
    "    http:\n"
    "      - name: limited\n"
    "        match: [{uri: {pattern: \"/orders/{id}/**\"}, method: {exact: GET}}]\n"
    "        route: [{destination: {host: svc}}]\n"
    "        rateLimit: {requests: 10, per: 1s, burst: 5, key: ip}\n"
    "      - name: rest\n"
    "        route: [{destination: {host: svc}}]\n";

static int compile(const char *yaml, struct gw_conf **c, struct ag_err *err)
{
    ag_fake_clock_init(&fc, 1800000000ull * SEC);
    struct gw_compile_env env = {&fc.clock, NULL, NULL, "test.yaml"};
    return ag__gw_conf_compile(yaml, strlen(yaml), &env, c, err);
}

Test(gateway_config, compiles_and_matches)
{
    struct gw_conf *c;
    struct ag_err err;
    cr_assert_eq(compile(base_yaml, &c, &err), 0, "%s", err.msg);
    cr_expect_eq(c->nroutes, 2);
    cr_expect(ag__gw_pattern_match("/orders/{id}/**", "/orders/42/items/1"));
    cr_expect(ag__gw_pattern_match("/orders/{id}/**", "/orders/42"));
    cr_expect_not(ag__gw_pattern_match("/orders/{id}/**", "/orders"));
    ag__gw_conf_unref(c);
}

Test(gateway_config, errors_name_file_line_and_path)
{
    static const char bad[] = "destinationRules:\n"
                              "  - host: svc\n"
                              "    endpoints: [{address: 127.0.0.1:9}]\n"
                              "virtualServices:\n"
                              "  - http:\n"
                              "      - route:\n"
                              "          - destination: {host: svc}\n"
                              "            weight: 60\n"
                              "          - destination: {host: nope}\n";
    struct gw_conf *c;
    struct ag_err err;
    cr_assert_eq(compile(bad, &c, &err), AG_ECONFIG);
    cr_expect(strstr(err.msg, "test.yaml:9: virtualServices[0].http[0].route[1].destination.host"),
              "%s", err.msg);
    cr_expect(strstr(err.msg, "nope"), "%s", err.msg);
    static const char typo[] = "destinationRules:\n  - host: svc\n    endpointz: []\n";
    cr_assert_eq(compile(typo, &c, &err), AG_ECONFIG);
    cr_expect(strstr(err.msg, "endpointz"), "unknown key named: %s", err.msg);
    static const char dur[] =
        "destinationRules:\n  - host: svc\n    endpoints: [{address: 127.0.0.1:9}]\n"
        "    trafficPolicy:\n      outlierDetection:\n        baseEjectionTime: soon\n";
    cr_assert_eq(compile(dur, &c, &err), AG_ECONFIG);
    cr_expect(strstr(err.msg, "test.yaml:6:"), "%s", err.msg);
}

Test(gateway_config, connection_limits)
{
    static const char yaml[] = "gateway: {maxConnectionsPerPeer: 64, firstByteTimeout: 1500ms}\n"
                               "destinationRules:\n  - host: svc\n"
                               "    endpoints: [{address: 127.0.0.1:9}]\n";
    struct gw_conf *c;
    struct ag_err err;
    cr_assert_eq(compile(yaml, &c, &err), 0, "%s", err.msg);
    cr_expect_eq(c->max_per_peer, 64);
    cr_expect_eq(c->first_byte_ms, 1500);
    ag__gw_conf_unref(c);
    cr_assert_eq(compile(base_yaml, &c, &err), 0, "%s", err.msg);
    cr_expect_eq(c->max_per_peer, 0, "absent: the server's default (256)");
    cr_expect_eq(c->first_byte_ms, 0, "absent: the server's default (5 s)");
    ag__gw_conf_unref(c);
    static const char bad[] = "gateway:\n  firstByteTimeout: soon\n";
    cr_assert_eq(compile(bad, &c, &err), AG_ECONFIG);
    cr_expect(strstr(err.msg, "test.yaml:2: gateway.firstByteTimeout"), "%s", err.msg);
    static const char zero[] = "gateway:\n  firstByteTimeout: 0s\n";
    cr_assert_eq(compile(zero, &c, &err), AG_ECONFIG);
}

Test(gateway_config, tls_section)
{
    static const char yaml[] = "gateway:\n"
                               "  tls:\n"
                               "    certificates:\n"
                               "      - {cert: /c/a.pem, key: /c/a.key}\n"
                               "      - {cert: /c/b.pem, key: /c/b.key}\n"
                               "    hstsMaxAge: 600\n"
                               "    httpRedirect: 127.0.0.1:8081\n";
    struct gw_conf *c;
    struct ag_err err;
    cr_assert_eq(compile(yaml, &c, &err), 0, "%s", err.msg);
    cr_expect_eq(c->ntls, 2);
    cr_expect_str_eq(c->tls[1].cert, "/c/b.pem");
    cr_expect_str_eq(c->tls[1].key, "/c/b.key");
    cr_expect_eq(c->hsts_max_age, 600);
    cr_expect_str_eq(c->http_redirect, "127.0.0.1:8081");
    ag__gw_conf_unref(c);
    static const char nokey[] = "gateway:\n  tls:\n    certificates: [{cert: /c/a.pem}]\n";
    cr_assert_eq(compile(nokey, &c, &err), AG_ECONFIG);
    cr_expect(strstr(err.msg, "gateway.tls.certificates"), "%s", err.msg);
    static const char badaddr[] = "gateway:\n  tls:\n    httpRedirect: example.com:80\n";
    cr_assert_eq(compile(badaddr, &c, &err), AG_ECONFIG);
    cr_expect(strstr(err.msg, "gateway.tls.httpRedirect"), "%s", err.msg);
}

Test(gateway_config, limiter_admits_rate_times_time_plus_burst)
{
    struct gw_conf *c;
    struct ag_err err;
    cr_assert_eq(compile(base_yaml, &c, &err), 0, "%s", err.msg);
    struct ag_ratelimit *rl = c->routes[0].limiter;
    cr_assert(rl);
    /* offer 100 requests per second for 3 s (one every 10 ms, t = 0 .. 3 s) from one client */
    int admitted = 0;
    for (int i = 0; i <= 300; i++) {
        if (ag_ratelimit_acquire(rl, "ip:10.0.0.1", 11, 1, NULL) == 0) admitted++;
        ag_fake_clock_advance(&fc, 10000000);
    }
    /* exactly rate x time + burst: 10/s x 3 s + 5 */
    cr_expect_eq(admitted, 10 * 3 + 5, "admitted %d", admitted);
    cr_expect_eq(ag_ratelimit_acquire(rl, "ip:10.0.0.2", 11, 1, NULL), 0, "keys are independent");
    ag__gw_conf_unref(c);
}

static char *mint(struct gw_conf *c, const char *sub, uint64_t now, uint64_t ttl)
{
    const char *roles[] = {"admin"};
    struct ag_gateway_token_request r = {.sub = sub, .roles = roles, .nroles = 1, .ttl_s = ttl};
    char *tok = NULL;
    struct ag_err err;
    cr_assert_eq(ag__gw_jwt_mint(&c->jwt, &r, now, &tok, &err), 0, "%s", err.msg);
    return tok;
}

Test(gateway_jwt, verify_and_refuse)
{
    struct gw_conf *c;
    struct ag_err err;
    cr_assert_eq(compile(base_yaml, &c, &err), 0, "%s", err.msg);
    uint64_t now = 1800000000;
    char *tok = mint(c, "alice", now, 60);
    struct gw_principal p;
    cr_expect_eq(ag__gw_jwt_verify(&c->jwt, tok, strlen(tok), now, &p), GW_JWT_OK);
    cr_expect_str_eq(p.sub, "alice");
    cr_expect_str_eq(p.roles_csv, "admin");
    cr_expect_eq(ag__gw_jwt_verify(&c->jwt, tok, strlen(tok), now + 60 + 9, &p), GW_JWT_OK,
                 "within skew");
    cr_expect_eq(ag__gw_jwt_verify(&c->jwt, tok, strlen(tok), now + 60 + 10, &p), GW_JWT_EXPIRED);
    cr_expect_eq(ag__gw_jwt_verify(&c->jwt, tok, strlen(tok), now - 11, &p), GW_JWT_NOT_YET);
    tok[strlen(tok) - 2] ^= 1; /* flip a signature bit */
    cr_expect_eq(ag__gw_jwt_verify(&c->jwt, tok, strlen(tok), now, &p), GW_JWT_SIGNATURE);
    ag_free(tok);
    /* alg none with an otherwise valid payload */
    const char *none =
        "eyJhbGciOiJub25lIn0.eyJpc3MiOiJ1bml0Iiwic3ViIjoiYSIsImV4cCI6OTk5OTk5OTk5OX0.";
    cr_expect_eq(ag__gw_jwt_verify(&c->jwt, none, strlen(none), now, &p), GW_JWT_ALG);
    /* HS384 header against a key pinned to HS256 */
    const char *hs384 = "eyJhbGciOiJIUzM4NCIsImtpZCI6ImsifQ."
                        "eyJpc3MiOiJ1bml0Iiwic3ViIjoiYSIsImV4cCI6OTk5OTk5OTk5OX0.AAAA";
    cr_expect_eq(ag__gw_jwt_verify(&c->jwt, hs384, strlen(hs384), now, &p), GW_JWT_ALG);
    cr_expect_eq(ag__gw_jwt_verify(&c->jwt, "a.b", 3, now, &p), GW_JWT_MALFORMED);
    cr_expect_eq(ag__gw_jwt_verify(&c->jwt, "a.b.c.d", 7, now, &p), GW_JWT_MALFORMED);
    ag__gw_conf_unref(c);
}

Test(gateway_idem, replay_conflict_and_release)
{
    struct gw_idem *s;
    ag_fake_clock_init(&fc, 0);
    cr_assert_eq(ag__gw_idem_new(2, 10 * SEC, &fc.clock, &s), 0);
    struct gw_idem_resp r = {0};
    cr_expect_eq(ag__gw_idem_begin(s, "k", "u", 1, &r), GW_IDEM_NEW);
    cr_expect_eq(ag__gw_idem_begin(s, "k", "u", 1, &r), GW_IDEM_IN_PROGRESS);
    cr_expect_eq(ag__gw_idem_begin(s, "k", "other-user", 1, &r), GW_IDEM_NEW, "keys are per user");
    struct gw_idem_resp st = {.status = 201, .body = ag_strdup("{}"), .body_len = 2};
    ag__gw_idem_finish(s, "k", "u", &st);
    cr_expect_eq(ag__gw_idem_begin(s, "k", "u", 1, &r), GW_IDEM_DONE);
    cr_expect_eq(r.status, 201);
    cr_expect_str_eq(r.body, "{}");
    ag__gw_idem_resp_free(&r);
    cr_expect_eq(ag__gw_idem_begin(s, "k", "u", 2, &r), GW_IDEM_MISMATCH);
    struct gw_idem_resp err5 = {.status = 503, .body = ag_strdup("x"), .body_len = 1};
    ag__gw_idem_finish(s, "k", "other-user", &err5);
    cr_expect_eq(ag__gw_idem_begin(s, "k", "other-user", 1, &r), GW_IDEM_NEW,
                 "a 5xx answer is not stored");
    ag_fake_clock_advance(&fc, 11 * SEC);
    cr_expect_eq(ag__gw_idem_begin(s, "k", "u", 1, &r), GW_IDEM_NEW, "expired after the TTL");
    cr_expect_leq(ag__gw_idem_size(s), 2, "bounded");
    ag__gw_idem_free(s);
}

/* ---- token lifetime (jwt.maxTokenLifetime) ---- */

/* An HS256 token signed with the unit key; iat/exp/nbf < 0 are left out. */
static char *token_with(long iat, long exp)
{
    jwt_t *jwt = NULL;
    cr_assert_eq(jwt_new(&jwt), 0);
    cr_assert_eq(
        jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)SECRET, (int)strlen(SECRET)), 0);
    jwt_add_header(jwt, "kid", "k");
    jwt_add_grant(jwt, "iss", "unit");
    jwt_add_grant(jwt, "aud", "agora");
    jwt_add_grant(jwt, "sub", "alice");
    if (iat >= 0) jwt_add_grant_int(jwt, "iat", iat);
    if (exp >= 0) jwt_add_grant_int(jwt, "exp", exp);
    char *t = jwt_encode_str(jwt);
    jwt_free(jwt);
    cr_assert_not_null(t);
    return t;
}

static enum gw_jwt_fail verify_at(struct gw_conf *c, long iat, long exp, uint64_t now)
{
    char *t = token_with(iat, exp);
    struct gw_principal p;
    enum gw_jwt_fail f = ag__gw_jwt_verify(&c->jwt, t, strlen(t), now, &p);
    free(t);
    return f;
}

Test(gateway_jwt, lifetime_default_24h)
{
    struct gw_conf *c;
    struct ag_err err;
    cr_assert_eq(compile(base_yaml, &c, &err), 0, "%s", err.msg);
    cr_expect_eq(c->jwt.max_lifetime_s, 86400);
    long now = 1800000000;
    cr_expect_eq(verify_at(c, now, now + 86400, (uint64_t)now), GW_JWT_OK, "exactly 24h");
    cr_expect_eq(verify_at(c, now, now + 86401, (uint64_t)now), GW_JWT_LIFETIME);
    cr_expect_eq(verify_at(c, now - 86000, now + 86000, (uint64_t)now), GW_JWT_LIFETIME,
                 "a long token is refused even late in its life");
    cr_expect_eq(verify_at(c, now, -1, (uint64_t)now), GW_JWT_NO_EXP);
    cr_expect_eq(verify_at(c, -1, now + 60, (uint64_t)now), GW_JWT_NO_IAT);
    cr_expect_eq(verify_at(c, now + 3600, now + 7200, (uint64_t)now), GW_JWT_NOT_YET,
                 "iat in the future (beyond the skew) cannot stretch the lifetime");
    cr_expect_eq(verify_at(c, now + 5, now + 65, (uint64_t)now), GW_JWT_OK, "iat within skew");
    /* the client is told why */
    cr_expect_not_null(strstr(ag__gw_jwt_fail_public(GW_JWT_LIFETIME), "maxTokenLifetime"));
    cr_expect_not_null(strstr(ag__gw_jwt_fail_public(GW_JWT_NO_EXP), "exp"));
    cr_expect_not_null(strstr(ag__gw_jwt_fail_public(GW_JWT_NO_IAT), "iat"));
    cr_expect_null(ag__gw_jwt_fail_public(GW_JWT_SIGNATURE), "signature failures stay opaque");
    /* minting refuses what verifying would refuse */
    const char *roles[] = {"admin"};
    struct ag_gateway_token_request r = {.sub = "a", .roles = roles, .nroles = 1, .ttl_s = 86401};
    char *tok = NULL;
    cr_expect_eq(ag__gw_jwt_mint(&c->jwt, &r, (uint64_t)now, &tok, &err), AG_EINVAL);
    cr_expect_null(tok);
    r.ttl_s = 0; /* the default, 1h */
    cr_assert_eq(ag__gw_jwt_mint(&c->jwt, &r, (uint64_t)now, &tok, &err), 0, "%s", err.msg);
    struct gw_principal p;
    cr_expect_eq(ag__gw_jwt_verify(&c->jwt, tok, strlen(tok), (uint64_t)now, &p), GW_JWT_OK);
    ag_free(tok);
    ag__gw_conf_unref(c);
}

static struct gw_conf *with_lifetime(const char *life)
{
    char yaml[2048];
    snprintf(yaml, sizeof yaml, "jwt:\n  maxTokenLifetime: %s\n%s", life,
             strstr(base_yaml, "  clockSkew"));
    struct gw_conf *c;
    struct ag_err err;
    cr_assert_eq(compile(yaml, &c, &err), 0, "%s", err.msg);
    return c;
}

Test(gateway_jwt, lifetime_configured_and_off)
{
    long now = 1800000000;
    struct gw_conf *c = with_lifetime("1h");
    cr_expect_eq(verify_at(c, now, now + 3600, (uint64_t)now), GW_JWT_OK);
    cr_expect_eq(verify_at(c, now, now + 3601, (uint64_t)now), GW_JWT_LIFETIME);
    ag__gw_conf_unref(c);
    c = with_lifetime("0s"); /* no limit: iat optional, exp still required */
    cr_expect_eq(verify_at(c, -1, now + 400 * 86400, (uint64_t)now), GW_JWT_OK);
    cr_expect_eq(verify_at(c, now, -1, (uint64_t)now), GW_JWT_NO_EXP);
    ag__gw_conf_unref(c);
    char yaml[2048];
    snprintf(yaml, sizeof yaml, "jwt:\n  maxTokenLifetime: forever\n%s",
             strstr(base_yaml, "  clockSkew"));
    struct gw_conf *bad;
    struct ag_err err;
    cr_expect_eq(compile(yaml, &bad, &err), AG_ECONFIG);
    cr_expect_not_null(strstr(err.msg, "jwt.maxTokenLifetime"), "%s", err.msg);
}

/* discovery: instead of endpoints (issue 14): a dynamic cluster with its context;
 * bad input named by line and path. */
Test(gateway_config, discovery)
{
    static const char ok[] =
        "destinationRules:\n"
        "  - host: inventory\n"
        "    discovery: {registry: \"postgresql:///agora\", context: inventory}\n"
        "  - host: ops\n"
        "    discovery: {registry: \"postgresql:///agora\", context: \"*\"}\n"
        "virtualServices:\n"
        "  - http:\n"
        "      - route: [{destination: {host: inventory}}]\n";
    struct gw_conf *c;
    struct ag_err err;
    cr_assert_eq(compile(ok, &c, &err), 0, "%s", err.msg);
    cr_expect_str_eq(c->registry, "postgresql:///agora");
    cr_expect_str_eq(c->cluster_ctx[0], "inventory");
    cr_expect_str_eq(c->cluster_ctx[1], "*");
    cr_expect_eq(ag_mesh_cluster_size(c->clusters[0]), 0); /* filled by the resolver */
    ag__gw_conf_unref(c);
    static const char both[] =
        "destinationRules:\n"
        "  - host: svc\n"
        "    endpoints: [{address: 127.0.0.1:9}]\n"
        "    discovery: {registry: \"postgresql:///a\", context: inventory}\n";
    cr_assert_eq(compile(both, &c, &err), AG_ECONFIG);
    cr_expect(strstr(err.msg, "destinationRules[0].discovery"), "%s", err.msg);
    cr_expect(strstr(err.msg, "not both"), "%s", err.msg);
    static const char notpg[] = "destinationRules:\n"
                                "  - host: svc\n"
                                "    discovery: {registry: \"sqlite:/tmp\", context: inventory}\n";
    cr_assert_eq(compile(notpg, &c, &err), AG_ECONFIG);
    cr_expect(strstr(err.msg, "test.yaml:3: destinationRules[0].discovery.registry"), "%s",
              err.msg);
    static const char badctx[] =
        "destinationRules:\n"
        "  - host: svc\n"
        "    discovery: {registry: \"postgresql:///a\", context: \"In v\"}\n";
    cr_assert_eq(compile(badctx, &c, &err), AG_ECONFIG);
    cr_expect(strstr(err.msg, "discovery.context"), "%s", err.msg);
    static const char two[] = "destinationRules:\n"
                              "  - host: a\n"
                              "    discovery: {registry: \"postgresql:///a\", context: inventory}\n"
                              "  - host: b\n"
                              "    discovery: {registry: \"postgresql:///b\", context: payments}\n";
    cr_assert_eq(compile(two, &c, &err), AG_ECONFIG);
    cr_expect(strstr(err.msg, "one registry"), "%s", err.msg);
}
