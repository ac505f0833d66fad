/* JWT verification (src/gateway/jwt.c) claim by claim, on tokens built here with
 * libjwt: issuer and audience, key selection by kid with the algorithm pinned per
 * key, exp/nbf against the skew, and the identity the services will trust — sub,
 * roles (array, space-separated string, a configured claim) and scopes — where a
 * value that could smuggle a second role into x-user-roles is refused. */
#include <criterion/criterion.h>
#include <jwt.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/internal.h"

#define K1  "unit-test-secret-0123456789abcdefgh"
#define K2  "another-secret-0123456789abcdefghij"
#define NOW 1800000000L

static struct ag_fake_clock fc;
static struct gw_conf *conf;

static const char yaml[] = "jwt:\n"
                           "  clockSkew: 30s\n"
                           "  maxTokenLifetime: 0s\n"
                           "  rolesClaim: %s\n"
                           "  issuers:\n"
                           "    - issuer: https://id.example\n"
                           "      audiences: [agora, shop]\n"
                           "      keys:\n"
                           "        - {kid: k1, alg: HS256, secret: \"" K1 "\"}\n"
                           "        - {kid: k2, alg: HS512, secret: \"" K2 "\"}\n"
                           "    - issuer: open\n"
                           "      keys: [{alg: HS256, secret: \"" K2 "\"}]\n";

static void load(const char *roles_claim)
{
    char text[2048];
    snprintf(text, sizeof text, yaml, roles_claim);
    ag_fake_clock_init(&fc, 0);
    struct gw_compile_env env = {&fc.clock, NULL, NULL, "jwt.yaml"};
    struct ag_err err;
    cr_assert_eq(ag__gw_conf_compile(text, strlen(text), &env, &conf, &err), 0, "%s", err.msg);
}

static void setup(void)
{
    load("roles");
}

static void teardown(void)
{
    ag__gw_conf_unref(conf);
}

TestSuite(gateway_jwt_claims, .init = setup, .fini = teardown);

/* A token over `claims` (JSON), signed with (alg, secret), kid optional. */
static char *sign(const char *claims, jwt_alg_t alg, const char *secret, const char *kid)
{
    jwt_t *jwt = NULL;
    cr_assert_eq(jwt_new(&jwt), 0);
    cr_assert_eq(jwt_add_grants_json(jwt, claims), 0, "%s", claims);
    cr_assert_eq(jwt_set_alg(jwt, alg, (const unsigned char *)secret, (int)strlen(secret)), 0);
    if (kid) jwt_add_header(jwt, "kid", kid);
    char *t = jwt_encode_str(jwt);
    jwt_free(jwt);
    cr_assert_not_null(t);
    return t;
}

static enum gw_jwt_fail verify(const char *claims, jwt_alg_t alg, const char *secret,
                               const char *kid, struct gw_principal *p)
{
    char *t = sign(claims, alg, secret, kid);
    enum gw_jwt_fail f = ag__gw_jwt_verify(&conf->jwt, t, strlen(t), NOW, p);
    free(t);
    return f;
}

/* A k1 token with the standard claims plus `extra` (",\"k\":v..." or ""). */
static enum gw_jwt_fail with(const char *extra, struct gw_principal *p)
{
    char claims[1024];
    snprintf(claims, sizeof claims,
             "{\"iss\":\"https://id.example\",\"aud\":\"agora\",\"sub\":\"alice\",\"exp\":%ld%s}",
             NOW + 60, extra);
    return verify(claims, JWT_ALG_HS256, K1, "k1", p);
}

Test(gateway_jwt_claims, roles_from_an_array_or_a_string)
{
    struct gw_principal p;
    cr_assert_eq(with(",\"roles\":[\"customer\",\"admin\"]", &p), GW_JWT_OK);
    cr_expect_str_eq(p.sub, "alice");
    cr_expect_eq(p.nroles, 2);
    cr_expect_str_eq(p.roles_csv, "customer,admin");
    cr_expect_eq(p.exp, (uint64_t)NOW + 60);
    cr_assert_eq(with(",\"roles\":\"customer  admin\"", &p), GW_JWT_OK);
    cr_expect_eq(p.nroles, 2, "space-separated");
    cr_expect_str_eq(p.roles_csv, "customer,admin");
    cr_assert_eq(with("", &p), GW_JWT_OK);
    cr_expect_eq(p.nroles, 0);
    cr_expect_str_eq(p.roles_csv, "");
    cr_assert_eq(with(",\"roles\":[\"a\",7,null,\"b\"]", &p), GW_JWT_OK);
    cr_expect_str_eq(p.roles_csv, "a,b", "non-strings are ignored");
}

Test(gateway_jwt_claims, a_role_cannot_smuggle_another)
{
    struct gw_principal p;
    cr_expect_eq(with(",\"roles\":[\"customer,admin\"]", &p), GW_JWT_CLAIMS,
                 "a comma would read as two roles in x-user-roles");
    cr_expect_eq(with(",\"roles\":[\"customer\\r\\nx-user-id: root\"]", &p), GW_JWT_CLAIMS,
                 "no control characters in a header value");
    cr_expect_eq(with(",\"roles\":[\"admin\\u007f\"]", &p), GW_JWT_CLAIMS, "nor DEL");
}

Test(gateway_jwt_claims, at_most_16_roles_of_63_bytes)
{
    struct gw_principal p;
    char extra[2048] = ",\"roles\":[";
    for (int i = 0; i < 20; i++)
        snprintf(extra + strlen(extra), sizeof extra - strlen(extra), "%s\"r%d\"", i ? "," : "", i);
    strcat(extra, "]");
    cr_assert_eq(with(extra, &p), GW_JWT_OK);
    cr_expect_eq(p.nroles, GW_MAX_ROLES);
    char longrole[128];
    memset(longrole, 'x', 64);
    longrole[64] = '\0';
    snprintf(extra, sizeof extra, ",\"roles\":[\"%s\",\"admin\"]", longrole);
    cr_assert_eq(with(extra, &p), GW_JWT_OK);
    cr_expect_str_eq(p.roles_csv, "admin", "a 64-byte role is dropped, not truncated");
}

Test(gateway_jwt_claims, a_configured_roles_claim)
{
    teardown();
    load("realm_roles");
    struct gw_principal p;
    cr_assert_eq(with(",\"roles\":[\"admin\"],\"realm_roles\":[\"customer\"]", &p), GW_JWT_OK);
    cr_expect_str_eq(p.roles_csv, "customer", "only the configured claim counts");
}

Test(gateway_jwt_claims, scopes_from_scope_or_scp)
{
    struct gw_principal p;
    cr_assert_eq(with(",\"scope\":\"orders:read orders:write\"", &p), GW_JWT_OK);
    cr_expect_eq(p.nscopes, 2);
    cr_expect_str_eq(p.scopes[1], "orders:write");
    cr_assert_eq(with(",\"scp\":[\"a\",\"b\",\"c\"]", &p), GW_JWT_OK);
    cr_expect_eq(p.nscopes, 3, "scp (an array) when there is no scope");
    cr_assert_eq(with(",\"scope\":\"x\",\"scp\":[\"a\",\"b\"]", &p), GW_JWT_OK);
    cr_expect_eq(p.nscopes, 1, "scope wins");
}

Test(gateway_jwt_claims, sub_is_required_and_header_safe)
{
    struct gw_principal p;
    char claims[512];
    snprintf(claims, sizeof claims,
             "{\"iss\":\"https://id.example\",\"aud\":\"agora\",\"exp\":%ld}", NOW + 60);
    cr_expect_eq(verify(claims, JWT_ALG_HS256, K1, "k1", &p), GW_JWT_CLAIMS, "no sub");
    snprintf(claims, sizeof claims,
             "{\"iss\":\"https://id.example\",\"aud\":\"agora\",\"sub\":42,\"exp\":%ld}", NOW + 60);
    cr_expect_eq(verify(claims, JWT_ALG_HS256, K1, "k1", &p), GW_JWT_CLAIMS, "a numeric sub");
    snprintf(claims, sizeof claims,
             "{\"iss\":\"https://id.example\",\"aud\":\"agora\",\"sub\":\"\",\"exp\":%ld}",
             NOW + 60);
    cr_expect_eq(verify(claims, JWT_ALG_HS256, K1, "k1", &p), GW_JWT_CLAIMS, "an empty sub");
    snprintf(claims, sizeof claims,
             "{\"iss\":\"https://id.example\",\"aud\":\"agora\",\"sub\":\"a\\nb\",\"exp\":%ld}",
             NOW + 60);
    cr_expect_eq(verify(claims, JWT_ALG_HS256, K1, "k1", &p), GW_JWT_CLAIMS, "a newline");
    char big[300];
    memset(big, 's', 128);
    big[128] = '\0';
    snprintf(claims, sizeof claims,
             "{\"iss\":\"https://id.example\",\"aud\":\"agora\",\"sub\":\"%s\",\"exp\":%ld}", big,
             NOW + 60);
    cr_expect_eq(verify(claims, JWT_ALG_HS256, K1, "k1", &p), GW_JWT_CLAIMS, "128 bytes");
    cr_expect_eq(with(",\"nbf\":\"soon\"", &p), GW_JWT_CLAIMS, "a non-numeric nbf");
}

Test(gateway_jwt_claims, issuer_and_audience)
{
    struct gw_principal p;
    char claims[512];
    snprintf(claims, sizeof claims,
             "{\"iss\":\"https://evil.example\",\"aud\":\"agora\",\"sub\":\"a\",\"exp\":%ld}",
             NOW + 60);
    cr_expect_eq(verify(claims, JWT_ALG_HS256, K1, "k1", &p), GW_JWT_ISSUER);
    snprintf(claims, sizeof claims, "{\"aud\":\"agora\",\"sub\":\"a\",\"exp\":%ld}", NOW + 60);
    cr_expect_eq(verify(claims, JWT_ALG_HS256, K1, "k1", &p), GW_JWT_ISSUER, "no iss");
    snprintf(claims, sizeof claims,
             "{\"iss\":\"https://id.example\",\"aud\":\"billing\",\"sub\":\"a\",\"exp\":%ld}",
             NOW + 60);
    cr_expect_eq(verify(claims, JWT_ALG_HS256, K1, "k1", &p), GW_JWT_AUDIENCE);
    snprintf(claims, sizeof claims,
             "{\"iss\":\"https://id.example\",\"aud\":[\"billing\",\"shop\"],\"sub\":\"a\","
             "\"exp\":%ld}",
             NOW + 60);
    cr_expect_eq(verify(claims, JWT_ALG_HS256, K1, "k1", &p), GW_JWT_OK, "any one audience");
    snprintf(claims, sizeof claims, "{\"iss\":\"https://id.example\",\"sub\":\"a\",\"exp\":%ld}",
             NOW + 60);
    cr_expect_eq(verify(claims, JWT_ALG_HS256, K1, "k1", &p), GW_JWT_AUDIENCE, "no aud");
    snprintf(claims, sizeof claims, "{\"iss\":\"open\",\"sub\":\"a\",\"exp\":%ld}", NOW + 60);
    cr_expect_eq(verify(claims, JWT_ALG_HS256, K2, NULL, &p), GW_JWT_OK,
                 "an issuer without audiences takes any");
}

Test(gateway_jwt_claims, keys_by_kid_with_the_alg_pinned)
{
    struct gw_principal p;
    char claims[512];
    snprintf(claims, sizeof claims,
             "{\"iss\":\"https://id.example\",\"aud\":\"agora\",\"sub\":\"a\",\"exp\":%ld}",
             NOW + 60);
    cr_expect_eq(verify(claims, JWT_ALG_HS512, K2, "k2", &p), GW_JWT_OK);
    cr_expect_eq(verify(claims, JWT_ALG_HS256, K2, "k2", &p), GW_JWT_ALG, "k2 is pinned to HS512");
    cr_expect_eq(verify(claims, JWT_ALG_HS512, K1, "k1", &p), GW_JWT_ALG, "k1 is pinned to HS256");
    cr_expect_eq(verify(claims, JWT_ALG_HS256, K2, "k1", &p), GW_JWT_SIGNATURE,
                 "k1's name, another secret");
    cr_expect_eq(verify(claims, JWT_ALG_HS256, K1, "k9", &p), GW_JWT_NO_KEY);
    cr_expect_eq(verify(claims, JWT_ALG_HS384, K1, NULL, &p), GW_JWT_NO_KEY,
                 "no kid and no key of that alg");
    cr_expect_eq(verify(claims, JWT_ALG_HS256, K1, NULL, &p), GW_JWT_OK,
                 "no kid: the issuer's key of the token's alg");
}

Test(gateway_jwt_claims, exp_and_nbf_with_the_skew)
{
    struct gw_principal p;
    char claims[512];
    const char *fmt =
        "{\"iss\":\"https://id.example\",\"aud\":\"agora\",\"sub\":\"a\",\"exp\":%ld,\"nbf\":%ld}";
    snprintf(claims, sizeof claims, fmt, NOW - 29, NOW - 100);
    cr_expect_eq(verify(claims, JWT_ALG_HS256, K1, "k1", &p), GW_JWT_OK, "expired within skew");
    snprintf(claims, sizeof claims, fmt, NOW - 30, NOW - 100);
    cr_expect_eq(verify(claims, JWT_ALG_HS256, K1, "k1", &p), GW_JWT_EXPIRED);
    snprintf(claims, sizeof claims, fmt, NOW + 600, NOW + 30);
    cr_expect_eq(verify(claims, JWT_ALG_HS256, K1, "k1", &p), GW_JWT_OK, "nbf within skew");
    snprintf(claims, sizeof claims, fmt, NOW + 600, NOW + 31);
    cr_expect_eq(verify(claims, JWT_ALG_HS256, K1, "k1", &p), GW_JWT_NOT_YET);
    snprintf(claims, sizeof claims, fmt, -5L, NOW - 100);
    cr_expect_eq(verify(claims, JWT_ALG_HS256, K1, "k1", &p), GW_JWT_EXPIRED, "a negative exp");
    cr_expect_eq(verify("{\"iss\":\"open\",\"sub\":\"a\",\"exp\":\"tomorrow\"}", JWT_ALG_HS256, K2,
                        NULL, &p),
                 GW_JWT_CLAIMS, "a non-numeric exp");
}

Test(gateway_jwt_claims, malformed_tokens)
{
    struct gw_principal p;
    char *t = sign("{\"iss\":\"open\",\"sub\":\"a\",\"exp\":9999999999}", JWT_ALG_HS256, K2, NULL);
    cr_assert_eq(ag__gw_jwt_verify(&conf->jwt, t, strlen(t), NOW, &p), GW_JWT_OK);
    char *cut = strrchr(t, '.');
    cut[1] = '\0';
    cr_expect_eq(ag__gw_jwt_verify(&conf->jwt, t, strlen(t), NOW, &p), GW_JWT_SIGNATURE,
                 "no signature at all");
    free(t);
    const char *junk[] = {"", "...", "not-base64!.x.y", "e30.e30.x", "bnVsbA.bnVsbA.x"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        enum gw_jwt_fail f = ag__gw_jwt_verify(&conf->jwt, junk[i], strlen(junk[i]), NOW, &p);
        cr_expect(f == GW_JWT_MALFORMED || f == GW_JWT_ALG, "'%s' -> %s", junk[i],
                  ag__gw_jwt_fail_name(f));
        cr_expect_neq(f, GW_JWT_OK);
    }
    char *huge = malloc(9000);
    memset(huge, 'a', 8999);
    huge[8999] = '\0';
    huge[10] = huge[20] = '.';
    cr_expect_eq(ag__gw_jwt_verify(&conf->jwt, huge, 8999, NOW, &p), GW_JWT_MALFORMED,
                 "longer than 8 KiB");
    free(huge);
    cr_expect_null(ag__gw_jwt_fail_public(GW_JWT_ALG), "nothing about keys is told");
    cr_expect_null(ag__gw_jwt_fail_public(GW_JWT_NO_KEY));
}
