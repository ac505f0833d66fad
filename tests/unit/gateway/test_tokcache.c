/* The verified-token cache (src/gateway/tokcache.c): a hit needs the same token
 * (not just its hash), the same configuration generation and now < exp; an
 * expired token is never served from it, even inside the clock skew that
 * verification allows; a reload after a key was revoked (or a JWKS rotation)
 * makes every cached token miss, and verification against the new keys refuses
 * a token signed with the revoked one. */
#include <criterion/criterion.h>
#include <jwt.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/internal.h"

#define NOW 1800000000ull

static struct gw_principal principal(const char *sub, uint64_t exp)
{
    struct gw_principal p;
    memset(&p, 0x5a, sizeof p); /* garbage past the used parts */
    snprintf(p.sub, sizeof p.sub, "%s", sub);
    p.nroles = 2;
    snprintf(p.roles[0], sizeof p.roles[0], "customer");
    snprintf(p.roles[1], sizeof p.roles[1], "admin");
    p.nscopes = 1;
    snprintf(p.scopes[0], sizeof p.scopes[0], "orders:read");
    snprintf(p.roles_csv, sizeof p.roles_csv, "customer,admin");
    p.exp = exp;
    return p;
}

static struct gw_tokcache *cache(size_t slots)
{
    struct gw_tokcache *c = NULL;
    cr_assert_eq(ag__gw_tokcache_new(slots, &c), 0);
    return c;
}

Test(gateway_tokcache, a_hit_copies_the_identity)
{
    struct gw_tokcache *c = cache(256);
    const char *tok = "aaa.bbb.ccc";
    struct gw_principal in = principal("alice", NOW + 60), out;
    cr_assert_not(ag__gw_tokcache_get(c, tok, strlen(tok), 1, NOW, &out), "empty cache");
    ag__gw_tokcache_put(c, tok, strlen(tok), 1, &in);
    memset(&out, 0x33, sizeof out);
    cr_assert(ag__gw_tokcache_get(c, tok, strlen(tok), 1, NOW, &out));
    cr_assert_str_eq(out.sub, "alice");
    cr_assert_eq(out.nroles, 2);
    cr_assert_str_eq(out.roles[0], "customer");
    cr_assert_str_eq(out.roles[1], "admin");
    cr_assert_eq(out.nscopes, 1);
    cr_assert_str_eq(out.scopes[0], "orders:read");
    cr_assert_str_eq(out.roles_csv, "customer,admin");
    cr_assert_eq(out.exp, NOW + 60);
    ag__gw_tokcache_free(c);
}

Test(gateway_tokcache, an_expired_token_is_not_served)
{
    struct gw_tokcache *c = cache(256);
    const char *tok = "aaa.bbb.ccc";
    struct gw_principal in = principal("alice", NOW + 60), out;
    ag__gw_tokcache_put(c, tok, strlen(tok), 1, &in);
    cr_assert(ag__gw_tokcache_get(c, tok, strlen(tok), 1, NOW + 59, &out));
    cr_assert_not(ag__gw_tokcache_get(c, tok, strlen(tok), 1, NOW + 60, &out), "at exp");
    /* verification would still accept it within clockSkew: the cache does not */
    cr_assert_not(ag__gw_tokcache_get(c, tok, strlen(tok), 1, NOW + 61, &out), "past exp");
    ag__gw_tokcache_free(c);
}

Test(gateway_tokcache, another_generation_misses)
{
    struct gw_tokcache *c = cache(256);
    const char *tok = "aaa.bbb.ccc";
    struct gw_principal in = principal("alice", NOW + 60), out;
    ag__gw_tokcache_put(c, tok, strlen(tok), 1, &in);
    cr_assert_not(ag__gw_tokcache_get(c, tok, strlen(tok), 2, NOW, &out), "after a reload");
    ag__gw_tokcache_put(c, tok, strlen(tok), 2, &in); /* verified again under the new keys */
    cr_assert(ag__gw_tokcache_get(c, tok, strlen(tok), 2, NOW, &out));
    cr_assert_not(ag__gw_tokcache_get(c, tok, strlen(tok), 1, NOW, &out));
    ag__gw_tokcache_free(c);
}

Test(gateway_tokcache, the_whole_token_is_compared_and_a_slot_holds_one)
{
    struct gw_tokcache *c = cache(1); /* every token maps to the one slot */
    const char *a = "aaa.bbb.ccc", *b = "aaa.bbb.ccd", *longer = "aaa.bbb.cccc";
    struct gw_principal pa = principal("alice", NOW + 60), pb = principal("bob", NOW + 60), out;
    ag__gw_tokcache_put(c, a, strlen(a), 1, &pa);
    cr_assert_not(ag__gw_tokcache_get(c, b, strlen(b), 1, NOW, &out));
    cr_assert_not(ag__gw_tokcache_get(c, longer, strlen(longer), 1, NOW, &out));
    cr_assert_not(ag__gw_tokcache_get(c, a, strlen(a) - 1, 1, NOW, &out), "a prefix");
    ag__gw_tokcache_put(c, b, strlen(b), 1, &pb); /* evicts a */
    cr_assert_not(ag__gw_tokcache_get(c, a, strlen(a), 1, NOW, &out));
    cr_assert(ag__gw_tokcache_get(c, b, strlen(b), 1, NOW, &out));
    cr_assert_str_eq(out.sub, "bob");
    ag__gw_tokcache_put(c, longer, strlen(longer), 1, &pa); /* another length: a new copy */
    cr_assert(ag__gw_tokcache_get(c, longer, strlen(longer), 1, NOW, &out));
    cr_assert_str_eq(out.sub, "alice");
    ag__gw_tokcache_free(c);
}

/* ---- key revocation: what ag__gw_authenticate does, step by step ---- */

#define K1 "unit-test-secret-0123456789abcdefgh"
#define K2 "another-secret-0123456789abcdefghij"

static struct gw_conf *compile(const char *keys, struct ag_fake_clock *fc)
{
    char text[1024];
    snprintf(text, sizeof text,
             "jwt:\n  maxTokenLifetime: 0s\n  issuers:\n    - issuer: https://id.example\n"
             "      keys:\n%s",
             keys);
    struct gw_compile_env env = {&fc->clock, NULL, NULL, "jwt.yaml"};
    struct gw_conf *conf = NULL;
    struct ag_err err;
    cr_assert_eq(ag__gw_conf_compile(text, strlen(text), &env, &conf, &err), 0, "%s", err.msg);
    return conf;
}

static char *sign_k1(void)
{
    jwt_t *jwt = NULL;
    char claims[200];
    snprintf(
        claims, sizeof claims,
        "{\"iss\":\"https://id.example\",\"sub\":\"alice\",\"exp\":%llu,\"roles\":[\"customer\"]}",
        (unsigned long long)(NOW + 3600));
    cr_assert_eq(jwt_new(&jwt), 0);
    cr_assert_eq(jwt_add_grants_json(jwt, claims), 0);
    cr_assert_eq(jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)K1, (int)strlen(K1)), 0);
    jwt_add_header(jwt, "kid", "k1");
    char *t = jwt_encode_str(jwt);
    jwt_free(jwt);
    cr_assert_not_null(t);
    return t;
}

/* Verify through the cache as the gateway does for generation `gen`. */
static bool authenticate(struct gw_tokcache *c, const struct gw_conf *conf, uint64_t gen,
                         const char *tok, bool *from_cache)
{
    struct gw_principal p;
    *from_cache = ag__gw_tokcache_get(c, tok, strlen(tok), gen, NOW, &p);
    if (*from_cache) return true;
    if (ag__gw_jwt_verify(&conf->jwt, tok, strlen(tok), NOW, &p) != GW_JWT_OK) return false;
    ag__gw_tokcache_put(c, tok, strlen(tok), gen, &p);
    return true;
}

Test(gateway_tokcache, a_revoked_key_is_not_believed_after_the_reload)
{
    struct ag_fake_clock fc;
    ag_fake_clock_init(&fc, 0);
    struct gw_conf *v1 = compile("        - {kid: k1, alg: HS256, secret: \"" K1 "\"}\n"
                                 "        - {kid: k2, alg: HS256, secret: \"" K2 "\"}\n",
                                 &fc);
    struct gw_conf *v2 = compile("        - {kid: k2, alg: HS256, secret: \"" K2 "\"}\n", &fc);
    struct gw_tokcache *c = cache(256);
    char *tok = sign_k1();
    bool cached;
    cr_assert(authenticate(c, v1, 1, tok, &cached));
    cr_assert_not(cached, "verified the first time");
    cr_assert(authenticate(c, v1, 1, tok, &cached));
    cr_assert(cached, "then served from the cache");
    /* k1 revoked (a reload, or the JWKS fetcher after a rotation): generation 2 */
    cr_assert_not(authenticate(c, v2, 2, tok, &cached), "a token of the revoked key passed");
    cr_assert_not(cached);
    cr_assert_not(authenticate(c, v2, 2, tok, &cached), "and stays refused");
    free(tok);
    ag__gw_tokcache_free(c);
    ag__gw_conf_unref(v1);
    ag__gw_conf_unref(v2);
}

Test(gateway_tokcache, principal_copy_terminates_and_bounds)
{
    struct gw_principal in = principal("carol", NOW), out;
    in.nroles = GW_MAX_ROLES + 5; /* never past the arrays */
    in.nscopes = 0;
    memset(&out, 0x33, sizeof out);
    ag__gw_principal_copy(&out, &in);
    cr_assert_eq(out.nroles, GW_MAX_ROLES);
    cr_assert_eq(out.nscopes, 0);
    cr_assert_str_eq(out.sub, "carol");
    cr_assert_str_eq(out.roles_csv, "customer,admin");
}
