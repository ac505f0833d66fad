/*
 * JWT verification with the algorithm pinned per key.
 *
 * libjwt's jwt_decode verifies with whatever algorithm the token's header
 * names, which is how alg-confusion attacks work (an RS256 public key used as an
 * HS256 secret; "alg":"none"). So the header and payload are decoded here first:
 * "none" and unknown algorithms are refused, the issuer is found by the iss
 * claim, the key by kid (or the issuer's keys without kid), and only a key whose
 * configured alg equals the header's alg is handed to libjwt for the signature.
 * Claims (exp, nbf, iss, aud, sub, roles, scope) are checked here against the
 * injected clock with the configured skew. Every token must carry exp; while
 * jwt.maxTokenLifetime applies (default 24h) it must carry iat too, exp - iat
 * must not exceed the maximum, and iat must not lie in the future (beyond the
 * skew), so a stolen long-lived token cannot be replayed for ever.
 *
 * Every failure reason is distinct for logs and tests (enum gw_jwt_fail); the
 * client only ever sees "invalid token".
 *
 * JWKS files: keys of kty "oct" (k), "RSA" (n, e) and "EC" P-256/384/521 (x, y)
 * with an "alg" are turned into secrets or PEM public keys (OpenSSL 3
 * EVP_PKEY_fromdata) at load.
 */
#include <jansson.h>
#include <jwt.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <string.h>

#include "gateway/internal.h"

#define MAX_TOKEN 8192

static const struct {
    const char *name;
    jwt_alg_t lib;
} algs[GW_ALG_N] = {
    [GW_HS256] = {"HS256", JWT_ALG_HS256}, [GW_HS384] = {"HS384", JWT_ALG_HS384},
    [GW_HS512] = {"HS512", JWT_ALG_HS512}, [GW_RS256] = {"RS256", JWT_ALG_RS256},
    [GW_RS384] = {"RS384", JWT_ALG_RS384}, [GW_RS512] = {"RS512", JWT_ALG_RS512},
    [GW_ES256] = {"ES256", JWT_ALG_ES256}, [GW_ES384] = {"ES384", JWT_ALG_ES384},
    [GW_ES512] = {"ES512", JWT_ALG_ES512},
};

int ag__gw_alg_parse(const char *s, enum gw_alg *out)
{
    for (int i = 0; i < GW_ALG_N; i++)
        if (!strcmp(s, algs[i].name)) return *out = (enum gw_alg)i, 0;
    return AG_EINVAL;
}

const char *ag__gw_alg_name(enum gw_alg a)
{
    return a < GW_ALG_N ? algs[a].name : "?";
}

const char *ag__gw_jwt_fail_name(enum gw_jwt_fail f)
{
    static const char *const n[] = {
        "ok",     "malformed", "algorithm", "no key", "signature", "expired", "not yet valid",
        "issuer", "audience",  "claims",    "no exp", "no iat",    "lifetime"};
    return f <= GW_JWT_LIFETIME ? n[f] : "?";
}

const char *ag__gw_jwt_fail_public(enum gw_jwt_fail f)
{
    switch (f) {
    case GW_JWT_NO_EXP:
        return "the token has no exp claim";
    case GW_JWT_NO_IAT:
        return "the token has no iat claim (needed to check its lifetime)";
    case GW_JWT_LIFETIME:
        return "the token's lifetime (exp - iat) exceeds the maximum (jwt.maxTokenLifetime)";
    default:
        return NULL;
    }
}

/* ---- base64url ---- */

static int b64v(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-' || c == '+') return 62;
    if (c == '_' || c == '/') return 63;
    return -1;
}

/* Decode base64url (no padding) into out (size >= n*3/4+1); returns length or -1. */
static long b64url_decode(const char *s, size_t n, unsigned char *out)
{
    while (n && s[n - 1] == '=') n--;
    if (n % 4 == 1) return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64v((unsigned char)s[i]);
        if (v < 0) return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    out[o] = 0;
    return (long)o;
}

static json_t *decode_json_part(const char *s, size_t n)
{
    unsigned char buf[MAX_TOKEN];
    long len = b64url_decode(s, n, buf);
    if (len < 0) return NULL;
    json_t *j = json_loadb((const char *)buf, (size_t)len, JSON_REJECT_DUPLICATES, NULL);
    if (j && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* ---- key selection ---- */

static const struct gw_issuer *find_issuer(const struct gw_jwt *j, const char *iss)
{
    for (size_t i = 0; iss && i < j->nissuers; i++)
        if (!strcmp(j->issuers[i].iss, iss)) return &j->issuers[i];
    return NULL;
}

/* The key for (kid, alg): a kid must match exactly; without kid, keys without one. */
static enum gw_jwt_fail find_key(const struct gw_issuer *is, const char *kid, enum gw_alg alg,
                                 const struct gw_key **out)
{
    bool kid_seen = false;
    for (size_t i = 0; i < is->nkeys; i++) {
        const struct gw_key *k = &is->keys[i];
        if (kid ? (!k->kid || strcmp(k->kid, kid)) : k->kid != NULL) continue;
        kid_seen = true;
        if (k->alg == alg && k->key) return *out = k, GW_JWT_OK;
    }
    if (!kid) { /* a token without kid may still use a single keyed issuer's key */
        for (size_t i = 0; i < is->nkeys; i++)
            if (is->keys[i].alg == alg && is->keys[i].key) return *out = &is->keys[i], GW_JWT_OK;
    }
    return kid_seen ? GW_JWT_ALG : GW_JWT_NO_KEY;
}

static enum gw_jwt_fail check_signature(const struct gw_key *k, const char *token, size_t len)
{
    char buf[MAX_TOKEN + 1];
    memcpy(buf, token, len);
    buf[len] = '\0';
    jwt_t *jwt = NULL;
    int rc = jwt_decode(&jwt, buf, k->key, (int)k->key_len);
    enum gw_jwt_fail f =
        rc == 0 && jwt && jwt_get_alg(jwt) == algs[k->alg].lib ? GW_JWT_OK : GW_JWT_SIGNATURE;
    if (jwt) jwt_free(jwt);
    return f;
}

/* ---- claims ---- */

static bool aud_ok(const struct gw_issuer *is, json_t *aud)
{
    if (!is->naud) return true;
    for (size_t a = 0; a < is->naud; a++) {
        if (json_is_string(aud) && !strcmp(json_string_value(aud), is->aud[a])) return true;
        size_t i;
        json_t *v;
        json_array_foreach(aud, i, v) if (json_is_string(v) &&
                                          !strcmp(json_string_value(v), is->aud[a])) return true;
    }
    return false;
}

/* Collect strings from an array or a space-separated string. */
static size_t collect(json_t *v, char (*out)[64], size_t max)
{
    size_t n = 0;
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) if (json_is_string(e) && n < max && json_string_length(e) < 64)
            snprintf(out[n++], 64, "%s", json_string_value(e));
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        while (*s && n < max) {
            size_t l = strcspn(s, " ");
            if (l && l < 64) snprintf(out[n++], 64, "%.*s", (int)l, s);
            s += l;
            while (*s == ' ') s++;
        }
    }
    return n;
}

static bool valid_header_value(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f || *s == ',') return false;
    return true;
}

static enum gw_jwt_fail check_claims(const struct gw_jwt *j, const struct gw_issuer *is, json_t *pl,
                                     uint64_t now, struct gw_principal *p)
{
    json_t *exp = json_object_get(pl, "exp"), *nbf = json_object_get(pl, "nbf"),
           *iat = json_object_get(pl, "iat"), *sub = json_object_get(pl, "sub");
    if (!exp) return GW_JWT_NO_EXP;
    if (!json_is_integer(exp) || (nbf && !json_is_integer(nbf)) || (iat && !json_is_integer(iat)) ||
        !json_is_string(sub))
        return GW_JWT_CLAIMS;
    if ((uint64_t)json_integer_value(exp) + j->skew_s <= now || json_integer_value(exp) < 0)
        return GW_JWT_EXPIRED;
    if (nbf && (int64_t)now + (int64_t)j->skew_s < json_integer_value(nbf)) return GW_JWT_NOT_YET;
    if (j->max_lifetime_s) {
        if (!iat) return GW_JWT_NO_IAT;
        json_int_t e = json_integer_value(exp), i = json_integer_value(iat);
        if ((int64_t)now + (int64_t)j->skew_s < i) return GW_JWT_NOT_YET; /* issued later */
        if (e - i > (json_int_t)j->max_lifetime_s) return GW_JWT_LIFETIME;
    }
    if (!aud_ok(is, json_object_get(pl, "aud"))) return GW_JWT_AUDIENCE;
    const char *s = json_string_value(sub);
    if (!*s || strlen(s) >= sizeof p->sub || !valid_header_value(s)) return GW_JWT_CLAIMS;
    snprintf(p->sub, sizeof p->sub, "%s", s);
    p->exp = (uint64_t)json_integer_value(exp);
    p->nroles = collect(json_object_get(pl, j->roles_claim ? j->roles_claim : "roles"), p->roles,
                        GW_MAX_ROLES);
    json_t *sc = json_object_get(pl, "scope");
    p->nscopes = collect(sc ? sc : json_object_get(pl, "scp"), p->scopes, GW_MAX_ROLES);
    size_t o = 0;
    p->roles_csv[0] = '\0';
    for (size_t i = 0; i < p->nroles; i++) {
        if (!valid_header_value(p->roles[i])) return GW_JWT_CLAIMS;
        /* the mesh's own role (the orchestrator's calls between instances, signed
         * with the mesh key): never passed on from a token */
        if (strcmp(p->roles[i], "service") == 0) continue;
        o += (size_t)snprintf(p->roles_csv + o, sizeof p->roles_csv - o, "%s%s", o ? "," : "",
                              p->roles[i]);
    }
    return GW_JWT_OK;
}

enum gw_jwt_fail ag__gw_jwt_verify(const struct gw_jwt *j, const char *token, size_t len,
                                   uint64_t now_s, struct gw_principal *p)
{
    memset(p, 0, sizeof *p);
    const char *d1 = len < MAX_TOKEN ? memchr(token, '.', len) : NULL;
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
    if (!d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token))) return GW_JWT_MALFORMED;
    json_t *hdr = decode_json_part(token, (size_t)(d1 - token));
    json_t *pl = decode_json_part(d1 + 1, (size_t)(d2 - d1 - 1));
    enum gw_jwt_fail f = GW_JWT_MALFORMED;
    enum gw_alg alg;
    const char *a = json_string_value(json_object_get(hdr, "alg"));
    const char *kid = json_string_value(json_object_get(hdr, "kid"));
    const struct gw_issuer *is;
    const struct gw_key *key = NULL;
    if (!hdr || !pl) goto out;
    f = GW_JWT_ALG;
    if (!a || ag__gw_alg_parse(a, &alg)) goto out; /* "none" and unknown algorithms */
    f = GW_JWT_SIGNATURE;
    if (d2 + 1 == token + len) goto out; /* no signature at all */
    f = GW_JWT_ISSUER;
    if (!(is = find_issuer(j, json_string_value(json_object_get(pl, "iss"))))) goto out;
    if ((f = find_key(is, kid, alg, &key)) != GW_JWT_OK) goto out;
    if ((f = check_signature(key, token, len)) != GW_JWT_OK) goto out;
    f = check_claims(j, is, pl, now_s, p);
out:
    json_decref(hdr);
    json_decref(pl);
    return f;
}

/* ---- minting ---- */

static int mint_claims(jwt_t *jwt, const struct gw_issuer *is,
                       const struct ag_gateway_token_request *r, uint64_t now)
{
    uint64_t ttl = r->ttl_s ? r->ttl_s : 3600;
    int rc = jwt_add_grant(jwt, "iss", is->iss) || jwt_add_grant(jwt, "sub", r->sub) ||
             (is->naud && jwt_add_grant(jwt, "aud", is->aud[0])) ||
             jwt_add_grant_int(jwt, "iat", (long)now) || jwt_add_grant_int(jwt, "nbf", (long)now) ||
             jwt_add_grant_int(jwt, "exp", (long)(now + ttl)) ||
             (r->scope && jwt_add_grant(jwt, "scope", r->scope));
    if (rc) return AG_EINVAL;
    json_t *roles = json_array();
    for (size_t i = 0; i < r->nroles; i++) json_array_append_new(roles, json_string(r->roles[i]));
    json_t *o = json_pack("{s:o}", "roles", roles);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    rc = s ? jwt_add_grants_json(jwt, s) : AG_ENOMEM;
    free(s);
    return rc ? AG_EINVAL : 0;
}

int ag__gw_jwt_mint(const struct gw_jwt *j, const struct ag_gateway_token_request *req,
                    uint64_t now_s, char **out, struct ag_err *err)
{
    const struct gw_issuer *is = req->issuer   ? find_issuer(j, req->issuer)
                                 : j->nissuers ? &j->issuers[0]
                                               : NULL;
    if (!is)
        return ag_err_set(err, AG_ECONFIG, "no jwt issuer %s%s in the configuration",
                          req->issuer ? "named " : "", req->issuer ? req->issuer : "");
    const struct gw_key *k = NULL;
    for (size_t i = 0; i < is->nkeys && !k; i++)
        if (is->keys[i].alg <= GW_HS512 || is->keys[i].sign_pem) k = &is->keys[i];
    if (!k)
        return ag_err_set(err, AG_ECONFIG,
                          "issuer %s has no key that can sign (a secret or privateKeyFile)",
                          is->iss);
    if (j->max_lifetime_s && req->ttl_s > j->max_lifetime_s)
        return ag_err_set(
            err, AG_EINVAL,
            "a lifetime of %llu s exceeds the gateway's jwt.maxTokenLifetime (%llu s):"
            " such a token would be refused",
            (unsigned long long)req->ttl_s, (unsigned long long)j->max_lifetime_s);
    jwt_t *jwt = NULL;
    if (jwt_new(&jwt)) return ag_err_set(err, AG_ENOMEM, "out of memory");
    const unsigned char *key = k->alg <= GW_HS512 ? k->key : (const unsigned char *)k->sign_pem;
    size_t klen = k->alg <= GW_HS512 ? k->key_len : k->sign_pem_len;
    int rc = jwt_set_alg(jwt, algs[k->alg].lib, key, (int)klen) ? AG_EINVAL : 0;
    if (!rc && k->kid && jwt_add_header(jwt, "kid", k->kid)) rc = AG_EINVAL;
    if (!rc) rc = mint_claims(jwt, is, req, now_s);
    char *tok = rc ? NULL : jwt_encode_str(jwt);
    jwt_free(jwt);
    if (!tok) return ag_err_set(err, AG_EINVAL, "cannot sign the token with %s", algs[k->alg].name);
    *out = ag_strdup(tok);
    free(tok);
    return *out ? 0 : ag_err_set(err, AG_ENOMEM, "out of memory");
}

/* ---- JWKS ---- */

static BIGNUM *jwk_bn(json_t *k, const char *name)
{
    const char *s = json_string_value(json_object_get(k, name));
    unsigned char buf[1024];
    long n = s && strlen(s) < 1300 ? b64url_decode(s, strlen(s), buf) : -1;
    return n > 0 ? BN_bin2bn(buf, (int)n, NULL) : NULL;
}

/* Build an EVP_PKEY from RSA (n, e) or EC (crv, x, y) JWK members. */
static EVP_PKEY *jwk_pkey(json_t *k, const char *kty)
{
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pk = NULL;
    BIGNUM *a = NULL, *b = NULL;
    unsigned char pt[1 + 2 * 66];
    const char *name = "RSA";
    int ok = bld != NULL;
    if (ok && !strcmp(kty, "RSA")) {
        a = jwk_bn(k, "n"), b = jwk_bn(k, "e");
        ok = a && b && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, a) &&
             OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, b);
    } else if (ok) {
        const char *crv = json_string_value(json_object_get(k, "crv"));
        const char *group = !crv                    ? NULL
                            : !strcmp(crv, "P-256") ? "prime256v1"
                            : !strcmp(crv, "P-384") ? "secp384r1"
                            : !strcmp(crv, "P-521") ? "secp521r1"
                                                    : NULL;
        size_t fl = !crv ? 0 : !strcmp(crv, "P-256") ? 32 : !strcmp(crv, "P-384") ? 48 : 66;
        const char *xs = json_string_value(json_object_get(k, "x")),
                   *ys = json_string_value(json_object_get(k, "y"));
        unsigned char xb[100], yb[100];
        long xl = xs && strlen(xs) < 120 ? b64url_decode(xs, strlen(xs), xb) : -1;
        long yl = ys && strlen(ys) < 120 ? b64url_decode(ys, strlen(ys), yb) : -1;
        ok = group && xl == (long)fl && yl == (long)fl;
        if (ok) {
            pt[0] = 4;
            memcpy(pt + 1, xb, fl);
            memcpy(pt + 1 + fl, yb, fl);
            name = "EC";
            ok = OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) &&
                 OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, 1 + 2 * fl);
        }
    }
    OSSL_PARAM *params = ok ? OSSL_PARAM_BLD_to_param(bld) : NULL;
    EVP_PKEY_CTX *ctx = params ? EVP_PKEY_CTX_new_from_name(NULL, name, NULL) : NULL;
    if (ctx && EVP_PKEY_fromdata_init(ctx) > 0)
        EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(a);
    BN_free(b);
    return pk;
}

static int pkey_pem(EVP_PKEY *pk, struct gw_key *gk)
{
    BIO *bio = BIO_new(BIO_s_mem());
    int rc = AG_EINVAL;
    char *data;
    if (bio && PEM_write_bio_PUBKEY(bio, pk)) {
        long n = BIO_get_mem_data(bio, &data);
        if (n > 0 && (gk->key = ag_malloc((size_t)n + 1))) {
            memcpy(gk->key, data, (size_t)n);
            gk->key[n] = 0;
            gk->key_len = (size_t)n;
            rc = 0;
        }
    }
    BIO_free(bio);
    return rc;
}

static int jwk_key(json_t *k, struct gw_key *gk, struct ag_err *err)
{
    const char *kty = json_string_value(json_object_get(k, "kty"));
    const char *alg = json_string_value(json_object_get(k, "alg"));
    const char *kid = json_string_value(json_object_get(k, "kid"));
    if (!kty || !alg || ag__gw_alg_parse(alg, &gk->alg))
        return ag_err_set(err, AG_EINVAL,
                          "a JWKS key needs kty and a supported alg (alg is pinned per key)");
    if (kid && !(gk->kid = ag_strdup(kid))) return AG_ENOMEM;
    bool hmac = gk->alg <= GW_HS512, rsa = gk->alg <= GW_RS512 && !hmac;
    if (!strcmp(kty, "oct") && hmac) {
        const char *s = json_string_value(json_object_get(k, "k"));
        size_t n = s ? strlen(s) : 0;
        if (!n) return ag_err_set(err, AG_EINVAL, "oct key without k");
        if (!(gk->key = ag_malloc(n))) return ag_err_set(err, AG_ENOMEM, "out of memory");
        long l = b64url_decode(s, n, gk->key);
        if (l < 32) return ag_err_set(err, AG_EINVAL, "oct key shorter than 32 bytes");
        gk->key_len = (size_t)l;
        return 0;
    }
    if ((!strcmp(kty, "RSA") && rsa) || (!strcmp(kty, "EC") && !hmac && !rsa)) {
        EVP_PKEY *pk = jwk_pkey(k, kty);
        int rc = pk ? pkey_pem(pk, gk) : AG_EINVAL;
        EVP_PKEY_free(pk);
        return rc ? ag_err_set(err, AG_EINVAL, "bad %s key%s%s", kty, kid ? " " : "",
                               kid ? kid : "")
                  : 0;
    }
    return ag_err_set(err, AG_EINVAL, "kty %s does not fit alg %s", kty, alg);
}

static int jwks_keys(struct gw_issuer *iss, json_t *doc, const char *path, struct ag_err *err);

int ag__gw_jwks_load(struct gw_issuer *iss, const char *path, struct ag_err *err)
{
    json_error_t je;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!doc)
        return ag_err_set(err, AG_EINVAL, "cannot load JWKS %s: %s (line %d)", path, je.text,
                          je.line);
    return jwks_keys(iss, doc, path, err);
}

int ag__gw_jwks_add(struct gw_issuer *iss, const char *text, const char *what, struct ag_err *err)
{
    json_error_t je;
    json_t *doc = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    /* jansson reports a failed allocation as json_error_out_of_memory, or with no
     * message at all when its lexer could not even start */
    if (!doc && (json_error_code(&je) == json_error_out_of_memory || !je.text[0]))
        return ag_err_set(err, AG_ENOMEM, "JWKS %s: out of memory", what);
    if (!doc) return ag_err_set(err, AG_EINVAL, "JWKS %s: %s (line %d)", what, je.text, je.line);
    return jwks_keys(iss, doc, what, err);
}

/* Adds the keys of `doc` (consumed) to `iss`. */
static int jwks_keys(struct gw_issuer *iss, json_t *doc, const char *path, struct ag_err *err)
{
    json_t *keys = json_object_get(doc, "keys");
    int rc =
        json_is_array(keys) ? 0 : ag_err_set(err, AG_EINVAL, "JWKS %s has no keys array", path);
    size_t n = json_array_size(keys);
    struct gw_key *nk = rc ? NULL : ag_realloc(iss->keys, (iss->nkeys + n + 1) * sizeof *nk);
    if (!rc && !nk) rc = ag_err_set(err, AG_ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < n; i++) {
        iss->keys = nk;
        memset(&nk[iss->nkeys], 0, sizeof *nk);
        rc = jwk_key(json_array_get(keys, i), &nk[iss->nkeys], err);
        iss->nkeys++;
    }
    if (nk) iss->keys = nk;
    json_decref(doc);
    return rc;
}

void ag__gw_jwt_free(struct gw_jwt *j)
{
    for (size_t i = 0; i < j->nissuers; i++) {
        struct gw_issuer *is = &j->issuers[i];
        for (size_t k = 0; k < is->nkeys; k++) {
            ag_free(is->keys[k].kid);
            ag_free(is->keys[k].key);
            ag_free(is->keys[k].sign_pem);
        }
        ag_free(is->keys);
        for (size_t a = 0; a < is->naud; a++) ag_free(is->aud[a]);
        ag_free(is->aud);
        ag_free(is->iss);
        ag_free(is->jwks_uri);
    }
    ag_free(j->issuers);
    ag_free(j->roles_claim);
}
