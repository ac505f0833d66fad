/*
 * The unique-email index of the customers context: claims named by a keyed MAC.
 *
 * A registration claims the stream `customer-email-<mac>` (svc_claim), where
 * <mac> is the first 16 bytes (128 bits, 32 hex digits) of HMAC-SHA256 under the
 * vault's index key (include/agora/vault.h) of "email:" + the lower-cased email.
 * The name says nothing to whoever holds the data directory without the master
 * key: a guessed email cannot be hashed and looked up, as it could when the name
 * was an unkeyed xxh3 (`customer-email-<16 hex>`, before this file).
 *
 * Erasure releases the claim (ClaimReleased, svc_release_claim) before the data
 * key goes: the erased person may register again with the same email, and the
 * claim names no customer any more. Its name stays in the log until a scavenge
 * deletes it: released claims (prefix customer-email-, last event ClaimReleased,
 * AG_EMAIL_CLAIM_PREFIX / AG_CLAIM_RELEASED) are a retention rule of the log's
 * scavenge (struct ag_log_retention), whatever their age; until then only a
 * master-key holder can link the name to an email.
 *
 * Migration (svc_email_index_migrate, once per data directory, at start before
 * the API serves): every old unkeyed claim is found by one pass over $all; for a
 * claim whose customer exists and is not erased, the email is read from the
 * customer (opened with its data key) and claimed under the keyed name; then the
 * old claim is released, whoever held it. A marker file in the vault directory
 * records that it ran, and the id of the index key the claims are made with: a
 * start whose vault holds another index key (index.key lost and made anew) is
 * refused, since every claim would be orphaned. Each step is idempotent, so a
 * crash mid-way is finished by the next start. Until the marker exists no request is served, so
 * lookups only ever use keyed names.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agora/vault.h"
#include "services/internal.h"

#define PREFIX     AG_EMAIL_CLAIM_PREFIX
#define PREFIX_LEN (sizeof PREFIX - 1)
#define OLD_LEN    (PREFIX_LEN + 16) /* customer-email-<xxh3 as 16 hex> */
#define MAC_BYTES  ((size_t)16)      /* of the 32: 128 bits in the name */

int svc_email_stream(const char *email, char out[SVC_EMAIL_STREAM_MAX], struct ag_err *err)
{
    struct ag_vault *v = svc_pii_vault();
    if (!v) return ag_err_set(err, AG_ECONFIG, "no vault for personal data");
    char low[262] = "email:";
    size_t n = strlen(email), k = 6;
    for (size_t i = 0; i < n && k < sizeof low - 1; i++)
        low[k++] = (char)tolower((unsigned char)email[i]);
    unsigned char mac[AG_VAULT_MAC_LEN];
    int rc = ag_vault_index_mac(v, low, k, mac, err);
    if (rc) return rc;
    memcpy(out, PREFIX, PREFIX_LEN);
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < MAC_BYTES; i++) {
        out[PREFIX_LEN + 2 * i] = d[mac[i] >> 4];
        out[PREFIX_LEN + 2 * i + 1] = d[mac[i] & 15];
    }
    out[PREFIX_LEN + 2 * MAC_BYTES] = '\0';
    return 0;
}

/* ---- migration of unkeyed claims ---- */

static bool old_name(const char *s, size_t n)
{
    if (n != OLD_LEN || memcmp(s, PREFIX, PREFIX_LEN) != 0) return false;
    for (size_t i = PREFIX_LEN; i < n; i++)
        if (!isxdigit((unsigned char)s[i])) return false;
    return true;
}

struct names {
    char (*v)[OLD_LEN + 1];
    size_t n, cap;
};

static int names_add(struct names *ns, const char *s)
{
    for (size_t i = ns->n; i-- > 0 && i + 8 >= ns->n;) /* a take-over right after its claim */
        if (strcmp(ns->v[i], s) == 0) return 0;
    if (ns->n == ns->cap) {
        size_t cap = ns->cap ? ns->cap * 2 : 64;
        void *nv = ag_realloc(ns->v, cap * sizeof *ns->v);
        if (!nv) return AG_ENOMEM;
        ns->v = nv;
        ns->cap = cap;
    }
    memcpy(ns->v[ns->n++], s, OLD_LEN + 1);
    return 0;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* Every unkeyed claim stream of the store, sorted, each once. */
static int find_old_claims(struct svc_env *p, struct names *ns, struct ag_err *err)
{
    uint64_t pos = 0;
    for (bool end = false; !end;) {
        struct ag_event_page pg;
        int rc = ag_store_read_all(p->store, pos, AG_READ_FORWARD, 4096, &pg, err);
        if (rc) return rc;
        for (size_t i = 0; !rc && i < pg.count; i++) {
            const struct ag_event *e = &pg.events[i];
            char name[OLD_LEN + 1];
            if (!old_name(e->stream, e->stream_len)) continue;
            memcpy(name, e->stream, OLD_LEN);
            name[OLD_LEN] = '\0';
            rc = names_add(ns, name);
        }
        end = pg.end || pg.count == 0;
        pos = pg.next_position;
        ag_event_page_free(&pg);
        if (rc) return ag_err_set(err, rc, "out of memory");
    }
    if (ns->n) qsort(ns->v, ns->n, sizeof *ns->v, cmp_name);
    size_t k = 0;
    for (size_t i = 0; i < ns->n; i++)
        if (!k || strcmp(ns->v[k - 1], ns->v[i]) != 0) memmove(ns->v[k++], ns->v[i], OLD_LEN + 1);
    ns->n = k;
    return 0;
}

/* The customer holding the claim `stream` (its last event) into owner ("" when
 * released). */
static int claim_owner(struct svc_env *p, const char *stream, char owner[40], struct ag_err *err)
{
    struct ag_event_page pg;
    owner[0] = '\0';
    int rc =
        ag_store_read_stream(p->store, stream, strlen(stream), -1, AG_READ_BACKWARD, 1, &pg, err);
    if (rc) return rc;
    if (pg.count) {
        json_t *d = json_loadb(pg.events[0].data, pg.events[0].data_len, 0, NULL);
        const char *o = json_string_value(json_object_get(d, "customerId"));
        snprintf(owner, 40, "%s", o ? o : "");
        json_decref(d);
    }
    ag_event_page_free(&pg);
    return 0;
}

static void view_email(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    const struct ag_customer *c = state;
    snprintf(ud, 256, "%s", c->exists && !c->erased ? c->email : "");
}

int svc_customer_email(struct svc_env *p, const char *id, char email[256], struct ag_err *err)
{
    email[0] = '\0';
    int rc = svc_read(p, &svc_customer_type, id, view_email, email, err);
    if (rc == AG_ENOTFOUND) return 0;
    if (!rc && strcmp(email, AG_CUSTOMER_ERASED) == 0) email[0] = '\0'; /* its key is gone */
    return rc;
}

/* One old claim: re-claimed under its keyed name (a live customer's), then
 * released. *rekeyed counts the former. */
static int migrate_one(struct svc_env *p, const char *old, size_t *rekeyed, struct ag_err *err)
{
    char owner[40], email[256], stream[SVC_EMAIL_STREAM_MAX];
    int rc = claim_owner(p, old, owner, err);
    if (rc || !owner[0]) return rc; /* released already */
    struct ag_vault *v = svc_pii_vault();
    if (!ag_vault_erased(v, owner) && (rc = svc_customer_email(p, owner, email, err)) == 0 &&
        email[0]) {
        if ((rc = svc_email_stream(email, stream, err))) return rc;
        rc = svc_claim(p, stream, owner, "customer", NULL, err);
        if (rc == AG_EEXISTS) { /* cannot happen with one claim per email: keep going */
            AG_WARN("customers.email_index.conflict", AG_LS("customer", owner));
            rc = 0;
        }
        if (!rc) (*rekeyed)++;
    }
    return rc ? rc : svc_release_claim(p, old, owner, err);
}

/* The index key's id: the MAC of a fixed label, 16 hex digits (names the key
 * without revealing it; the marker records it). */
static int index_kid(char out[17], struct ag_err *err)
{
    static const char label[] = "agora index key id v1";
    unsigned char mac[AG_VAULT_MAC_LEN];
    int rc = ag_vault_index_mac(svc_pii_vault(), label, sizeof label - 1, mac, err);
    for (size_t i = 0; !rc && i < 8; i++) snprintf(out + 2 * i, 3, "%02x", mac[i]);
    return rc;
}

static int write_marker(const char *path, const char *kid, size_t found, size_t rekeyed)
{
    char tmp[4200], text[160];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int n = snprintf(text, sizeof text,
                     "keyed email claims v1, index key %s: %zu unkeyed found, %zu re-keyed\n", kid,
                     found, rekeyed);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return AG_EIO;
    bool ok = write(fd, text, (size_t)n) == n && fsync(fd) == 0;
    close(fd);
    if (!ok || rename(tmp, path)) {
        unlink(tmp);
        return AG_EIO;
    }
    return 0;
}

/* The marker exists: it must name the index key the vault holds now, or every
 * keyed claim would be lost (uniqueness silently gone): a refusal to start. */
static int check_marker(const char *marker, const char *kid, struct ag_err *err)
{
    char text[256] = "";
    FILE *f = fopen(marker, "r");
    if (!f) return ag_err_set(err, AG_EIO, "cannot read %s: %s", marker, strerror(errno));
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    const char *at = strstr(text, "index key ");
    if (at && strncmp(at + 10, kid, 16) == 0) return 0;
    return ag_err_set(err, AG_ECONFIG,
                      "the vault's index key (id %s) is not the one the email claims were made "
                      "with (%s): restore keys/index.key from a backup, or every email could be "
                      "registered twice; refusing to start",
                      kid, marker);
}

int svc_email_index_migrate(struct svc_env *p, const char *marker, size_t *found, size_t *rekeyed,
                            struct ag_err *err)
{
    char kid[17];
    *found = *rekeyed = 0;
    int rc = index_kid(kid, err);
    if (rc) return rc;
    if (access(marker, F_OK) == 0) return check_marker(marker, kid, err);
    struct names ns = {0};
    rc = find_old_claims(p, &ns, err);
    for (size_t i = 0; !rc && i < ns.n; i++) rc = migrate_one(p, ns.v[i], rekeyed, err);
    *found = ns.n;
    ag_free(ns.v);
    if (!rc && write_marker(marker, kid, *found, *rekeyed))
        rc = ag_err_set(err, AG_EIO, "cannot write %s: %s", marker, strerror(errno));
    if (!rc && *found)
        AG_INFO("customers.email_index.migrated", AG_LU("unkeyed", (unsigned long long)*found),
                AG_LU("rekeyed", (unsigned long long)*rekeyed));
    return rc;
}
