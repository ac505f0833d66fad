/*
 * The mesh key's signature on the gateway's identity headers (x-user-sig).
 *
 * The services believe x-user-id / x-user-roles. Over `agora run`'s 0600 Unix
 * socket only the gateway can send them; an `agora serve` instance listens on
 * TCP, so there the gateway proves it sent them: with a key shared by the
 * gateway and the instances (AGORA_MESH_KEY, at least AG_MESH_KEY_MIN
 * characters) it adds
 *
 *     x-user-sig: <unix seconds>.<hex HMAC-SHA256(key, ts "\n" sub "\n" roles
 *                                                 "\n" METHOD "\n" target)>
 *
 * where target is the path with its query as the service receives it. The
 * method and target are covered so a signature seen once cannot be moved to
 * another request (a GET's to a DELETE), and the time bounds how long one can
 * be replayed on the same request (AG_USER_SIG_SKEW_S either side: the clocks of
 * the gateway and the instances need to agree that well). The verifier
 * recomputes the MAC and compares in constant time (CRYPTO_memcmp).
 */
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

#include "agora/http.h"

#define MAC_LEN ((size_t)32)

static int mac_hex(const char *key, int64_t ts, const char *sub, const char *roles,
                   const char *method, const char *target, char hex[2 * MAC_LEN + 1])
{
    const char *parts[] = {sub ? sub : "", roles ? roles : "", method ? method : "",
                           target ? target : ""};
    char tsbuf[24];
    int tl = snprintf(tsbuf, sizeof tsbuf, "%" PRId64, ts);
    size_t n = (size_t)tl;
    for (size_t i = 0; i < 4; i++) n += 1 + strlen(parts[i]);
    char *msg = ag_malloc(n + 1);
    if (!msg) return AG_ENOMEM;
    char *o = msg;
    memcpy(o, tsbuf, (size_t)tl), o += tl;
    for (size_t i = 0; i < 4; i++) {
        size_t l = strlen(parts[i]);
        *o++ = '\n';
        memcpy(o, parts[i], l), o += l;
    }
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int ml = 0;
    bool ok = HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)msg, n, mac, &ml) &&
              ml == MAC_LEN;
    ag_free(msg);
    if (!ok) return AG_EIO;
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < MAC_LEN; i++) {
        hex[2 * i] = digits[mac[i] >> 4];
        hex[2 * i + 1] = digits[mac[i] & 15];
    }
    hex[2 * MAC_LEN] = '\0';
    return 0;
}

int ag_http_user_sig(const char *key, int64_t ts, const char *sub, const char *roles,
                     const char *method, const char *target, char out[AG_USER_SIG_MAX])
{
    char hex[2 * MAC_LEN + 1];
    if (!key || !*key) return AG_EINVAL;
    int rc = mac_hex(key, ts, sub, roles, method, target, hex);
    if (rc) return rc;
    snprintf(out, AG_USER_SIG_MAX, "%" PRId64 ".%s", ts, hex);
    return 0;
}

bool ag_http_user_sig_ok(const char *key, const char *sig, int64_t now, const char *sub,
                         const char *roles, const char *method, const char *target)
{
    if (!key || !*key || !sig) return false;
    int64_t ts = 0;
    const char *p = sig;
    int digits = 0;
    for (; *p >= '0' && *p <= '9' && digits < 18; p++, digits++) ts = ts * 10 + (*p - '0');
    if (!digits || *p != '.' || strlen(p + 1) != 2 * MAC_LEN) return false;
    if (ts < now - AG_USER_SIG_SKEW_S || ts > now + AG_USER_SIG_SKEW_S) return false;
    char hex[2 * MAC_LEN + 1];
    if (mac_hex(key, ts, sub, roles, method, target, hex)) return false;
    return CRYPTO_memcmp(hex, p + 1, 2 * MAC_LEN) == 0;
}
