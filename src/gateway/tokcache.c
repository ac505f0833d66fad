/*
 * The verified-token cache: one per worker loop (no locks), so a client that
 * sends the same bearer token on every request pays the signature check once.
 *
 * Shape. A fixed number of slots, direct-mapped by the token's XXH3 (bounded:
 * a new token evicts the one in its slot). A slot holds an owned copy of the
 * token (a hit compares the whole token, never the hash alone), the identity
 * verification produced, and the configuration generation it was verified
 * under.
 *
 * Invariants.
 *   - Expiry: a cached identity is served only while now < exp. Verification
 *     itself accepts up to exp + clockSkew; the cache is never more lenient.
 *   - Keys: a reload (SIGHUP, or the JWKS fetcher after a rotation or a
 *     revoked key) bumps the generation; an entry of another generation is a
 *     miss, so a token is verified again against the new keys before it is
 *     believed.
 *   - Copies: an identity is copied by its used parts only (sub, nroles roles,
 *     nscopes scopes, roles_csv), not the whole fixed-size struct (~3 KB), so a
 *     hit costs about a hundred bytes of copying.
 */
#include <string.h>

#include "gateway/internal.h"

struct tslot {
    uint64_t hash;           /* of the token; 0 = empty */
    char *token;             /* owned copy */
    size_t len;              /* its length */
    uint64_t gen;            /* configuration generation it was verified under */
    struct gw_principal who; /* verified identity */
};

struct gw_tokcache {
    size_t nslots;
    struct tslot slots[];
};

int ag__gw_tokcache_new(size_t nslots, struct gw_tokcache **out)
{
    if (!nslots) return AG_EINVAL;
    struct gw_tokcache *c = ag_calloc(1, sizeof *c + nslots * sizeof c->slots[0]);
    if (!c) return AG_ENOMEM;
    c->nslots = nslots;
    *out = c;
    return 0;
}

void ag__gw_tokcache_free(struct gw_tokcache *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->nslots; i++) ag_free(c->slots[i].token);
    ag_free(c);
}

void ag__gw_principal_copy(struct gw_principal *dst, const struct gw_principal *src)
{
    size_t n = strnlen(src->sub, sizeof src->sub - 1);
    memcpy(dst->sub, src->sub, n);
    dst->sub[n] = '\0';
    dst->nroles = src->nroles < GW_MAX_ROLES ? src->nroles : GW_MAX_ROLES;
    memcpy(dst->roles, src->roles, dst->nroles * sizeof dst->roles[0]);
    dst->nscopes = src->nscopes < GW_MAX_ROLES ? src->nscopes : GW_MAX_ROLES;
    memcpy(dst->scopes, src->scopes, dst->nscopes * sizeof dst->scopes[0]);
    n = strnlen(src->roles_csv, sizeof src->roles_csv - 1);
    memcpy(dst->roles_csv, src->roles_csv, n);
    dst->roles_csv[n] = '\0';
    dst->exp = src->exp;
}

static uint64_t token_hash(const char *tok, size_t len)
{
    return ag_xxh3(tok, len) | 1; /* never 0: 0 marks an empty slot */
}

bool ag__gw_tokcache_get(struct gw_tokcache *c, const char *tok, size_t len, uint64_t gen,
                         uint64_t now_s, struct gw_principal *p)
{
    uint64_t h = token_hash(tok, len);
    const struct tslot *e = &c->slots[h % c->nslots];
    if (e->hash != h || e->gen != gen || e->len != len || memcmp(e->token, tok, len) != 0 ||
        e->who.exp <= now_s)
        return false;
    ag__gw_principal_copy(p, &e->who);
    return true;
}

void ag__gw_tokcache_put(struct gw_tokcache *c, const char *tok, size_t len, uint64_t gen,
                         const struct gw_principal *p)
{
    uint64_t h = token_hash(tok, len);
    struct tslot *e = &c->slots[h % c->nslots];
    if (e->len != len || !e->token) { /* a token of the same length reuses the copy */
        char *copy = ag_malloc(len ? len : 1);
        if (!copy) return;
        ag_free(e->token);
        e->token = copy;
    }
    memcpy(e->token, tok, len);
    e->hash = h;
    e->len = len;
    e->gen = gen;
    ag__gw_principal_copy(&e->who, p);
}
