/*
 * The vault (include/agora/vault.h): per-subject data keys wrapped by a master
 * key, AES-256-GCM through OpenSSL's EVP interface.
 *
 * Why files and not events: a data key must be destroyable, and an append-only
 * log cannot forget; so the key store is a small durable directory where each
 * data key is one file, written to a temporary name, fsynced and renamed (a
 * crash leaves the old file or the new one, never half of one). Erasure writes
 * the tombstone er-<subject> first (durable), then overwrites, syncs and
 * unlinks dk-<subject>: a crash in between leaves a tombstone and a key that the
 * next erase (or open of the subject) removes; no key is made for a tombstoned
 * subject again.
 *
 * Master keys: a process knows up to two (master.key, and master.key.next during
 * a rotation), each with a key id (kid = the first 8 bytes of SHA-256 over a
 * label and the key: it names the key without revealing it). Every wrapped data
 * key records the kid that wrapped it. Rotation (another process, while this one
 * serves): under the exclusive lock it writes master.key.next; from then on a
 * server making a key (under the shared lock) wraps with the next key, and one
 * meeting a data key wrapped by an unknown kid re-reads the master files. Then
 * every data key is re-wrapped (unlocked: a reader sees the old file or the new
 * one, and knows both keys), master.kid is set to the new kid and master.key.next
 * renamed over master.key.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agora/vault.h"

#define KEY_LEN     32
#define KID_LEN     8
#define NONCE_LEN   12
#define TAG_LEN     16
#define MAGIC       "AGDK1"
#define MAGIC_LEN   6 /* with its NUL */
#define DK_FILE_LEN (MAGIC_LEN + KID_LEN + NONCE_LEN + KEY_LEN + TAG_LEN)
#define SUBJECT_MAX 64
#define BUCKETS     4096
#define INDEX_FILE  "index.key"
#define INDEX_AAD   "$index" /* no subject has a '$': never confused with a data key */

struct master {
    bool set;
    unsigned char key[KEY_LEN];
    unsigned char kid[KID_LEN];
};

struct dk {
    struct dk *next; /* hash chain */
    char subject[SUBJECT_MAX + 1];
    unsigned char key[KEY_LEN];
};

struct ag_vault {
    char *dir;
    bool file_mode;            /* master keys from files (else the caller's) */
    pthread_mutex_t lock;      /* masters and the cache */
    struct master cur;         /* master.key or the caller's */
    struct master next;        /* master.key.next, during a rotation */
    struct dk **buckets;       /* unwrapped data keys by subject */
    unsigned char ix[KEY_LEN]; /* the index key (index.key), set at open */
    EVP_MAC *hmac;             /* HMAC, fetched once */
};

/* ---- small helpers ---- */

static void wipe(void *p, size_t n)
{
    OPENSSL_cleanse(p, n);
}

static bool subject_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > SUBJECT_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* 64 hex digits (surrounding white space allowed) into a key. */
static int parse_key(const char *hex, unsigned char key[KEY_LEN])
{
    while (*hex == ' ' || *hex == '\t' || *hex == '\n' || *hex == '\r') hex++;
    for (size_t i = 0; i < KEY_LEN; i++) {
        int hi = hexval(hex[2 * i]), lo = hi < 0 ? -1 : hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return AG_EINVAL;
        key[i] = (unsigned char)(hi << 4 | lo);
    }
    for (const char *p = hex + 2 * KEY_LEN; *p; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') return AG_EINVAL;
    return 0;
}

static void to_hex(const unsigned char *b, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[b[i] >> 4];
        out[2 * i + 1] = d[b[i] & 15];
    }
    out[2 * n] = '\0';
}

static void make_kid(struct master *m)
{
    static const char label[] = "agora master key id v1";
    unsigned char md[32];
    unsigned int mdn = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) && EVP_DigestUpdate(c, label, sizeof label) &&
        EVP_DigestUpdate(c, m->key, KEY_LEN) && EVP_DigestFinal_ex(c, md, &mdn))
        memcpy(m->kid, md, KID_LEN);
    EVP_MD_CTX_free(c);
    m->set = true;
}

static int master_from_hex(const char *hex, struct master *m)
{
    memset(m, 0, sizeof *m);
    if (parse_key(hex, m->key)) return AG_EINVAL;
    make_kid(m);
    return 0;
}

static void path_of(const char *dir, const char *name, const char *subject, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s%s", dir, name, subject ? subject : "");
}

/* Read a whole small file into buf (cap bytes): its length, or -errno. */
static ssize_t read_small(const char *path, void *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    ssize_t n = read(fd, buf, cap);
    int e = errno;
    close(fd);
    return n < 0 ? -e : n;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return AG_EIO;
    int rc = fsync(fd) ? AG_EIO : 0;
    close(fd);
    return rc;
}

/* Write `n` bytes to `path` durably and atomically (temporary + fsync + rename). */
static int write_atomic(const char *dir, const char *path, const void *b, size_t n)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return AG_EIO;
    bool ok = write(fd, b, n) == (ssize_t)n && fsync(fd) == 0;
    close(fd);
    if (!ok || rename(tmp, path)) {
        unlink(tmp);
        return AG_EIO;
    }
    return fsync_dir(dir);
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* flock on <dir>/lock: returns the fd (close to unlock) or -1. */
static int lock_dir(const char *dir, int how)
{
    char p[4200];
    path_of(dir, "lock", NULL, p, sizeof p);
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    while (flock(fd, how) && errno == EINTR) {
    }
    return fd;
}

/* ---- AES-256-GCM ---- */

static int gcm_seal(const unsigned char key[KEY_LEN], const unsigned char nonce[NONCE_LEN],
                    const void *aad, size_t aadn, const unsigned char *in, size_t n,
                    unsigned char *out, unsigned char tag[TAG_LEN])
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int len = 0;
    int ok =
        c && n <= (size_t)1 << 30 && EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, nonce) &&
        EVP_EncryptUpdate(c, NULL, &len, aad, (int)aadn) &&
        EVP_EncryptUpdate(c, out, &len, in, (int)n) && EVP_EncryptFinal_ex(c, out + len, &len) &&
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag);
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : AG_ECORRUPT;
}

/* Decrypt and authenticate; AG_ECORRUPT when the tag does not match. */
static int gcm_open(const unsigned char key[KEY_LEN], const unsigned char nonce[NONCE_LEN],
                    const void *aad, size_t aadn, const unsigned char *in, size_t n,
                    unsigned char *out, unsigned char tag[TAG_LEN])
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int len = 0;
    int ok = c && n <= (size_t)1 << 30 &&
             EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, nonce) &&
             EVP_DecryptUpdate(c, NULL, &len, aad, (int)aadn) &&
             EVP_DecryptUpdate(c, out, &len, in, (int)n) &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag) &&
             EVP_DecryptFinal_ex(c, out + len, &len) > 0;
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : AG_ECORRUPT;
}

/* ---- wrapped data keys ---- */

static void wrap(const struct master *m, const char *subject, const unsigned char key[KEY_LEN],
                 unsigned char f[DK_FILE_LEN])
{
    memcpy(f, MAGIC, MAGIC_LEN);
    memcpy(f + MAGIC_LEN, m->kid, KID_LEN);
    unsigned char *nonce = f + MAGIC_LEN + KID_LEN;
    RAND_bytes(nonce, NONCE_LEN);
    gcm_seal(m->key, nonce, subject, strlen(subject), key, KEY_LEN, nonce + NONCE_LEN,
             nonce + NONCE_LEN + KEY_LEN);
}

static int unwrap(const struct master *m, const char *subject, const unsigned char f[DK_FILE_LEN],
                  unsigned char key[KEY_LEN])
{
    const unsigned char *nonce = f + MAGIC_LEN + KID_LEN;
    unsigned char tag[TAG_LEN];
    memcpy(tag, nonce + NONCE_LEN + KEY_LEN, TAG_LEN);
    return gcm_open(m->key, nonce, subject, strlen(subject), nonce + NONCE_LEN, KEY_LEN, key, tag);
}

static const struct master *master_for(const struct ag_vault *v, const unsigned char *kid)
{
    if (v->cur.set && memcmp(v->cur.kid, kid, KID_LEN) == 0) return &v->cur;
    if (v->next.set && memcmp(v->next.kid, kid, KID_LEN) == 0) return &v->next;
    return NULL;
}

/* Re-read master.key and master.key.next (file mode; under v->lock). */
static void reload_masters(struct ag_vault *v)
{
    char p[4200], hex[256];
    if (!v->file_mode) return;
    path_of(v->dir, "master.key", NULL, p, sizeof p);
    ssize_t n = read_small(p, hex, sizeof hex - 1);
    struct master m;
    if (n > 0 && (hex[n] = '\0', master_from_hex(hex, &m) == 0)) v->cur = m;
    path_of(v->dir, "master.key.next", NULL, p, sizeof p);
    n = read_small(p, hex, sizeof hex - 1);
    if (n > 0 && (hex[n] = '\0', master_from_hex(hex, &m) == 0))
        v->next = m;
    else
        memset(&v->next, 0, sizeof v->next);
    wipe(hex, sizeof hex);
    wipe(&m, sizeof m);
}

/* ---- the cache ---- */

static size_t bucket_of(const char *subject)
{
    size_t h = 5381;
    for (const char *p = subject; *p; p++) h = h * 33 + (unsigned char)*p;
    return h % BUCKETS;
}

static struct dk *cache_find(struct ag_vault *v, const char *subject)
{
    for (struct dk *d = v->buckets[bucket_of(subject)]; d; d = d->next)
        if (strcmp(d->subject, subject) == 0) return d;
    return NULL;
}

static int cache_put(struct ag_vault *v, const char *subject, const unsigned char key[KEY_LEN])
{
    struct dk *d = ag_calloc(1, sizeof *d);
    if (!d) return AG_ENOMEM;
    snprintf(d->subject, sizeof d->subject, "%s", subject);
    memcpy(d->key, key, KEY_LEN);
    size_t b = bucket_of(subject);
    d->next = v->buckets[b];
    v->buckets[b] = d;
    return 0;
}

static void cache_drop(struct ag_vault *v, const char *subject)
{
    for (struct dk **pp = &v->buckets[bucket_of(subject)]; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->subject, subject) == 0) {
            struct dk *d = *pp;
            *pp = d->next;
            wipe(d, sizeof *d);
            ag_free(d);
            return;
        }
}

/* Load subject's key from its file into key (under v->lock). AG_ENOTFOUND when
 * there is none. */
static int load_key(struct ag_vault *v, const char *subject, unsigned char key[KEY_LEN],
                    struct ag_err *err)
{
    char p[4200];
    unsigned char f[DK_FILE_LEN + 1];
    path_of(v->dir, "dk-", subject, p, sizeof p);
    ssize_t n = read_small(p, f, sizeof f);
    if (n == -ENOENT) return AG_ENOTFOUND;
    if (n != DK_FILE_LEN || memcmp(f, MAGIC, MAGIC_LEN) != 0)
        return ag_err_set(err, AG_ECORRUPT, "data key file %s is damaged", p);
    const struct master *m = master_for(v, f + MAGIC_LEN);
    if (!m) { /* a rotation under way in another process: learn its key */
        reload_masters(v);
        m = master_for(v, f + MAGIC_LEN);
    }
    if (!m)
        return ag_err_set(err, AG_ECONFIG, "data key %s is wrapped by an unknown master key", p);
    if (unwrap(m, subject, f, key))
        return ag_err_set(err, AG_ECORRUPT, "data key %s does not authenticate", p);
    return 0;
}

/* Make and store a new key for subject (under v->lock). */
static int make_key(struct ag_vault *v, const char *subject, unsigned char key[KEY_LEN],
                    struct ag_err *err)
{
    char p[4200];
    int lk = lock_dir(v->dir, LOCK_SH);
    if (lk < 0) return ag_err_set(err, AG_EIO, "cannot lock the vault in %s", v->dir);
    reload_masters(v); /* a rotation wraps new keys with its next key */
    const struct master *m = v->next.set ? &v->next : &v->cur;
    path_of(v->dir, "er-", subject, p, sizeof p);
    int rc = 0;
    if (exists(p)) {
        rc = ag_err_set(err, AG_EDOMAIN, "subject %s was erased", subject);
    } else if (RAND_bytes(key, KEY_LEN) != 1) {
        rc = ag_err_set(err, AG_EIO, "no randomness for a data key");
    } else {
        unsigned char f[DK_FILE_LEN];
        wrap(m, subject, key, f);
        path_of(v->dir, "dk-", subject, p, sizeof p);
        if (write_atomic(v->dir, p, f, sizeof f))
            rc = ag_err_set(err, AG_EIO, "cannot write data key %s: %s", p, strerror(errno));
    }
    close(lk);
    return rc;
}

/* The subject's key into key; made when `create`. */
static int get_key(struct ag_vault *v, const char *subject, bool create, unsigned char key[KEY_LEN],
                   struct ag_err *err)
{
    if (!subject_ok(subject)) return ag_err_set(err, AG_EINVAL, "invalid data key subject");
    pthread_mutex_lock(&v->lock);
    struct dk *d = cache_find(v, subject);
    int rc = 0;
    if (d) {
        memcpy(key, d->key, KEY_LEN);
    } else {
        rc = load_key(v, subject, key, err);
        if (rc == AG_ENOTFOUND && create) rc = make_key(v, subject, key, err);
        if (rc == AG_ENOTFOUND) ag_err_set(err, rc, "the data key of %s is gone", subject);
        if (!rc) rc = cache_put(v, subject, key);
    }
    pthread_mutex_unlock(&v->lock);
    return rc;
}

/* ---- envelopes ---- */

bool ag_vault_is_envelope(const char *s, size_t n)
{
    size_t pn = sizeof AG_VAULT_PREFIX - 1;
    return s && n > pn && memcmp(s, AG_VAULT_PREFIX, pn) == 0;
}

int ag_vault_seal(struct ag_vault *v, const char *subject, const void *pt, size_t n, char **out,
                  struct ag_err *err)
{
    unsigned char key[KEY_LEN];
    int rc = get_key(v, subject, true, key, err);
    if (rc) return rc;
    size_t rawn = NONCE_LEN + n + TAG_LEN, sn = strlen(subject);
    unsigned char *raw = ag_malloc(rawn);
    char *s = raw ? ag_malloc(sizeof AG_VAULT_PREFIX + sn + 1 + 4 * ((rawn + 2) / 3) + 1) : NULL;
    if (!s) {
        rc = ag_err_set(err, AG_ENOMEM, "out of memory");
        goto out_free;
    }
    RAND_bytes(raw, NONCE_LEN);
    if ((rc = gcm_seal(key, raw, subject, sn, pt, n, raw + NONCE_LEN, raw + NONCE_LEN + n))) {
        ag_err_set(err, rc, "encryption failed");
        goto out_free;
    }
    int k = sprintf(s, "%s%s:", AG_VAULT_PREFIX, subject);
    EVP_EncodeBlock((unsigned char *)s + k, raw, (int)rawn);
    *out = s;
    s = NULL;
out_free:
    wipe(key, sizeof key);
    ag_free(raw);
    ag_free(s);
    return rc;
}

int ag_vault_unseal(struct ag_vault *v, const char *env, size_t n, char **out, size_t *outn,
                    struct ag_err *err)
{
    size_t pn = sizeof AG_VAULT_PREFIX - 1;
    const char *subj = env + pn,
               *colon = ag_vault_is_envelope(env, n) ? memchr(subj, ':', n - pn) : NULL;
    if (!colon || colon == subj || colon - subj > SUBJECT_MAX)
        return ag_err_set(err, AG_ECORRUPT, "not an envelope");
    char subject[SUBJECT_MAX + 1];
    memcpy(subject, subj, (size_t)(colon - subj));
    subject[colon - subj] = '\0';
    const char *b64 = colon + 1;
    size_t bn = n - (size_t)(b64 - env);
    if (bn % 4 || bn < 4 * ((NONCE_LEN + TAG_LEN + 2) / 3))
        return ag_err_set(err, AG_ECORRUPT, "envelope of %s is damaged", subject);
    unsigned char key[KEY_LEN];
    int rc = get_key(v, subject, false, key, err);
    if (rc) return rc;
    unsigned char *raw = ag_malloc(bn / 4 * 3 + 1);
    char *pt = raw ? ag_malloc(bn / 4 * 3 + 1) : NULL;
    int rawn = pt ? EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)bn) : -1;
    if (rawn >= 0) rawn -= (b64[bn - 1] == '=') + (b64[bn - 2] == '=');
    if (rawn < NONCE_LEN + TAG_LEN) {
        rc = ag_err_set(err, pt ? AG_ECORRUPT : AG_ENOMEM, "envelope of %s is damaged", subject);
        goto out_free;
    }
    size_t ctn = (size_t)rawn - NONCE_LEN - TAG_LEN;
    if (gcm_open(key, raw, subject, strlen(subject), raw + NONCE_LEN, ctn, (unsigned char *)pt,
                 raw + NONCE_LEN + ctn)) {
        rc = ag_err_set(err, AG_ECORRUPT, "envelope of %s does not authenticate", subject);
        goto out_free;
    }
    pt[ctn] = '\0';
    *out = pt;
    *outn = ctn;
    pt = NULL;
out_free:
    wipe(key, sizeof key);
    ag_free(raw);
    ag_free(pt);
    return rc;
}

/* ---- erasure ---- */

bool ag_vault_erased(struct ag_vault *v, const char *subject)
{
    char p[4200];
    if (!subject_ok(subject)) return false;
    path_of(v->dir, "er-", subject, p, sizeof p);
    return exists(p);
}

int ag_vault_erase(struct ag_vault *v, const char *subject, struct ag_err *err)
{
    char p[4200];
    if (!subject_ok(subject)) return ag_err_set(err, AG_EINVAL, "invalid data key subject");
    pthread_mutex_lock(&v->lock);
    cache_drop(v, subject);
    int lk = lock_dir(v->dir, LOCK_EX); /* not while a rotation re-wraps this key */
    path_of(v->dir, "er-", subject, p, sizeof p);
    int rc = lk < 0 ? AG_EIO : exists(p) ? 0 : write_atomic(v->dir, p, "", 0);
    if (rc) {
        if (lk >= 0) close(lk);
        pthread_mutex_unlock(&v->lock);
        return ag_err_set(err, rc, "cannot write tombstone %s", p);
    }
    path_of(v->dir, "dk-", subject, p, sizeof p);
    int fd = open(p, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) { /* overwrite in place before unlinking (best effort on COW filesystems) */
        unsigned char zero[DK_FILE_LEN] = {0};
        if (write(fd, zero, sizeof zero) < 0 || fsync(fd)) rc = AG_EIO;
        close(fd);
    }
    if (!rc && unlink(p) && errno != ENOENT) rc = AG_EIO;
    if (!rc) rc = fsync_dir(v->dir);
    close(lk);
    pthread_mutex_unlock(&v->lock);
    return rc ? ag_err_set(err, rc, "cannot destroy data key %s: %s", p, strerror(errno)) : 0;
}

/* ---- open ---- */

static bool has_data_keys(const char *dir)
{
    DIR *d = opendir(dir);
    bool any = false;
    for (struct dirent *e; d && !any && (e = readdir(d));)
        any = strncmp(e->d_name, "dk-", 3) == 0 || strncmp(e->d_name, "er-", 3) == 0 ||
              strcmp(e->d_name, INDEX_FILE) == 0;
    if (d) closedir(d);
    return any;
}

/* A new vault: a random master key in master.key (file mode) and master.kid. */
static int create_master(struct ag_vault *v, struct ag_err *err)
{
    char p[4200], hex[AG_VAULT_KEY_HEX + 2];
    if (RAND_bytes(v->cur.key, KEY_LEN) != 1) return ag_err_set(err, AG_EIO, "no randomness");
    make_kid(&v->cur);
    to_hex(v->cur.key, KEY_LEN, hex);
    hex[AG_VAULT_KEY_HEX] = '\n';
    hex[AG_VAULT_KEY_HEX + 1] = '\0';
    path_of(v->dir, "master.key", NULL, p, sizeof p);
    int rc = write_atomic(v->dir, p, hex, strlen(hex));
    wipe(hex, sizeof hex);
    return rc ? ag_err_set(err, rc, "cannot write %s: %s", p, strerror(errno)) : 0;
}

static int write_kid(const char *dir, const struct master *m)
{
    char p[4200], hex[2 * KID_LEN + 2];
    to_hex(m->kid, KID_LEN, hex);
    hex[2 * KID_LEN] = '\n';
    hex[2 * KID_LEN + 1] = '\0';
    path_of(dir, "master.kid", NULL, p, sizeof p);
    return write_atomic(dir, p, hex, strlen(hex));
}

/* master.kid must name a master key this process knows. */
static int check_kid(struct ag_vault *v, struct ag_err *err)
{
    char p[4200], hex[64], have[2 * KID_LEN + 1];
    path_of(v->dir, "master.kid", NULL, p, sizeof p);
    ssize_t n = read_small(p, hex, sizeof hex - 1);
    if (n == -ENOENT) return write_kid(v->dir, &v->cur);
    unsigned char kid[KID_LEN] = {0};
    bool ok = n >= 2 * KID_LEN;
    for (size_t i = 0; ok && i < KID_LEN; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        ok = hi >= 0 && lo >= 0;
        if (ok) kid[i] = (unsigned char)(hi << 4 | lo);
    }
    if (!ok) return ag_err_set(err, AG_ECORRUPT, "%s is damaged", p);
    if (master_for(v, kid)) return 0;
    to_hex(v->cur.kid, KID_LEN, have);
    return ag_err_set(err, AG_ECONFIG,
                      "the master key (key id %s) is not the one this vault's data keys are "
                      "wrapped with (key id %.16s, %s): refusing to start",
                      have, hex, p);
}

static int load_master(struct ag_vault *v, const char *master_hex, struct ag_err *err)
{
    char p[4200];
    if (master_hex) {
        if (master_from_hex(master_hex, &v->cur))
            return ag_err_set(err, AG_ECONFIG,
                              "AGORA_MASTER_KEY must be 64 hexadecimal digits (a 256-bit key)");
        return check_kid(v, err);
    }
    path_of(v->dir, "master.key", NULL, p, sizeof p);
    path_of(v->dir, "master.kid", NULL, p + 2100, 2100);
    if (!exists(p)) {
        if (exists(p + 2100) || has_data_keys(v->dir))
            return ag_err_set(err, AG_ECONFIG,
                              "%s is missing but the vault holds data keys: refusing to make a new "
                              "master key (restore the file or set AGORA_MASTER_KEY)",
                              p);
        int rc = create_master(v, err);
        return rc ? rc : write_kid(v->dir, &v->cur);
    }
    struct stat st;
    if (stat(p, &st) == 0 && (st.st_mode & 077))
        return ag_err_set(err, AG_ECONFIG, "%s must not be readable by others (chmod 600)", p);
    reload_masters(v);
    if (!v->cur.set)
        return ag_err_set(err, AG_ECONFIG, "%s must hold 64 hexadecimal digits (a 256-bit key)", p);
    return check_kid(v, err);
}

/* ---- the index key ---- */

/* Read index.key into v->ix: 0, AG_ENOTFOUND when there is none yet. */
static int read_index(struct ag_vault *v, struct ag_err *err)
{
    char p[4200];
    unsigned char f[DK_FILE_LEN + 1];
    path_of(v->dir, INDEX_FILE, NULL, p, sizeof p);
    ssize_t n = read_small(p, f, sizeof f);
    if (n == -ENOENT) return AG_ENOTFOUND;
    if (n != DK_FILE_LEN || memcmp(f, MAGIC, MAGIC_LEN) != 0)
        return ag_err_set(err, AG_ECORRUPT, "the index key file %s is damaged", p);
    const struct master *m = master_for(v, f + MAGIC_LEN);
    if (!m) { /* wrapped by a rotation's next key meanwhile */
        reload_masters(v);
        m = master_for(v, f + MAGIC_LEN);
    }
    if (!m)
        return ag_err_set(err, AG_ECONFIG, "the index key %s is wrapped by an unknown master key",
                          p);
    if (unwrap(m, INDEX_AAD, f, v->ix))
        return ag_err_set(err, AG_ECORRUPT, "the index key %s does not authenticate", p);
    return 0;
}

/* The index key: read, or made once for the vault (under the exclusive lock, so
 * two processes opening a vault at once agree on one key). */
static int load_index(struct ag_vault *v, struct ag_err *err)
{
    int rc = read_index(v, err);
    if (rc != AG_ENOTFOUND) return rc;
    int lk = lock_dir(v->dir, LOCK_EX);
    if (lk < 0) return ag_err_set(err, AG_EIO, "cannot lock the vault in %s", v->dir);
    rc = read_index(v, err); /* another process made it first */
    if (rc == AG_ENOTFOUND) {
        char p[4200];
        unsigned char f[DK_FILE_LEN];
        reload_masters(v); /* during a rotation: wrap with its next key */
        const struct master *m = v->next.set ? &v->next : &v->cur;
        path_of(v->dir, INDEX_FILE, NULL, p, sizeof p);
        if (RAND_bytes(v->ix, KEY_LEN) != 1) {
            rc = ag_err_set(err, AG_EIO, "no randomness for the index key");
        } else {
            wrap(m, INDEX_AAD, v->ix, f);
            rc = write_atomic(v->dir, p, f, sizeof f)
                     ? ag_err_set(err, AG_EIO, "cannot write %s: %s", p, strerror(errno))
                     : 0;
        }
    }
    close(lk);
    return rc;
}

int ag_vault_index_mac(struct ag_vault *v, const void *data, size_t n,
                       unsigned char out[AG_VAULT_MAC_LEN], struct ag_err *err)
{
    EVP_MAC_CTX *c = EVP_MAC_CTX_new(v->hmac);
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    size_t outn = 0;
    int ok = c && EVP_MAC_init(c, v->ix, KEY_LEN, params) && EVP_MAC_update(c, data, n) &&
             EVP_MAC_final(c, out, &outn, AG_VAULT_MAC_LEN) && outn == AG_VAULT_MAC_LEN;
    EVP_MAC_CTX_free(c);
    return ok ? 0 : ag_err_set(err, AG_EIO, "HMAC-SHA256 failed");
}

int ag_vault_open(const char *dir, const char *master_hex, struct ag_vault **out,
                  struct ag_err *err)
{
    if (mkdir(dir, 0700) && errno != EEXIST)
        return ag_err_set(err, AG_EIO, "cannot create %s: %s", dir, strerror(errno));
    struct ag_vault *v = ag_calloc(1, sizeof *v);
    if (!v) return ag_err_set(err, AG_ENOMEM, "out of memory");
    v->dir = ag_strdup(dir);
    v->buckets = ag_calloc(BUCKETS, sizeof *v->buckets);
    v->file_mode = master_hex == NULL;
    pthread_mutex_init(&v->lock, NULL);
    v->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    int rc = v->dir && v->buckets && v->hmac ? load_master(v, master_hex, err)
                                             : ag_err_set(err, AG_ENOMEM, "out of memory");
    if (!rc) rc = load_index(v, err);
    if (rc) {
        ag_vault_close(v);
        return rc;
    }
    *out = v;
    return 0;
}

void ag_vault_close(struct ag_vault *v)
{
    if (!v) return;
    for (size_t b = 0; v->buckets && b < BUCKETS; b++)
        while (v->buckets[b]) {
            struct dk *d = v->buckets[b];
            v->buckets[b] = d->next;
            wipe(d, sizeof *d);
            ag_free(d);
        }
    wipe(&v->cur, sizeof v->cur);
    wipe(&v->next, sizeof v->next);
    wipe(v->ix, sizeof v->ix);
    EVP_MAC_free(v->hmac);
    pthread_mutex_destroy(&v->lock);
    ag_free(v->buckets);
    ag_free(v->dir);
    ag_free(v);
}

/* ---- rotation ---- */

/* Re-wrap the key file `name` (AAD `subject`) from `old` to `nw`: a file already
 * under `nw` is left; *count grows by the files re-wrapped. */
static int rewrap_file(const char *dir, const char *name, const char *subject,
                       const struct master *old, const struct master *nw, size_t *count,
                       struct ag_err *err)
{
    char p[4200];
    unsigned char f[DK_FILE_LEN + 1], key[KEY_LEN];
    path_of(dir, name, NULL, p, sizeof p);
    ssize_t n = read_small(p, f, sizeof f);
    if (n == -ENOENT) return 0; /* erased meanwhile */
    if (n != DK_FILE_LEN || memcmp(f, MAGIC, MAGIC_LEN))
        return ag_err_set(err, AG_ECORRUPT, "data key file %s is damaged", p);
    if (memcmp(f + MAGIC_LEN, nw->kid, KID_LEN) == 0) return 0;
    if (memcmp(f + MAGIC_LEN, old->kid, KID_LEN) || unwrap(old, subject, f, key))
        return ag_err_set(err, AG_ECONFIG, "data key %s is not wrapped by the current master key",
                          p);
    wrap(nw, subject, key, f);
    wipe(key, sizeof key);
    if (write_atomic(dir, p, f, DK_FILE_LEN))
        return ag_err_set(err, AG_EIO, "cannot write %s: %s", p, strerror(errno));
    (*count)++;
    return 0;
}

/* Re-wrap one data key file (an erased subject's is left to its erasure). */
static int rewrap(const char *dir, const char *name, const struct master *old,
                  const struct master *nw, size_t *count, struct ag_err *err)
{
    char p[4200];
    path_of(dir, "er-", name + 3, p, sizeof p);
    if (exists(p)) return 0; /* erased */
    return rewrap_file(dir, name, name + 3, old, nw, count, err);
}

static int rewrap_all(const char *dir, const struct master *old, const struct master *nw,
                      size_t *count, struct ag_err *err)
{
    DIR *d = opendir(dir);
    if (!d) return ag_err_set(err, AG_EIO, "cannot read %s: %s", dir, strerror(errno));
    int rc = 0;
    for (struct dirent *e; !rc && (e = readdir(d));) {
        if (strncmp(e->d_name, "dk-", 3) || !subject_ok(e->d_name + 3)) continue;
        int lk = lock_dir(dir, LOCK_EX); /* an erasure never races a re-wrap */
        rc = lk < 0 ? ag_err_set(err, AG_EIO, "cannot lock %s", dir)
                    : rewrap(dir, e->d_name, old, nw, count, err);
        if (lk >= 0) close(lk);
    }
    closedir(d);
    return rc;
}

/* The new master: the caller's, an interrupted rotation's, or a fresh one
 * written to master.key.next (under the exclusive lock). */
static int start_rotation(struct ag_vault *v, const char *new_hex, struct ag_err *err)
{
    if (new_hex) {
        if (master_from_hex(new_hex, &v->next))
            return ag_err_set(err, AG_ECONFIG, "the new master key must be 64 hexadecimal digits");
        return 0;
    }
    if (v->next.set) return 0; /* resume */
    char p[4200], hex[AG_VAULT_KEY_HEX + 2];
    if (RAND_bytes(v->next.key, KEY_LEN) != 1) return ag_err_set(err, AG_EIO, "no randomness");
    make_kid(&v->next);
    to_hex(v->next.key, KEY_LEN, hex);
    hex[AG_VAULT_KEY_HEX] = '\n';
    hex[AG_VAULT_KEY_HEX + 1] = '\0';
    path_of(v->dir, "master.key.next", NULL, p, sizeof p);
    int lk = lock_dir(v->dir, LOCK_EX);
    int rc = lk < 0 ? AG_EIO : write_atomic(v->dir, p, hex, strlen(hex));
    if (lk >= 0) close(lk);
    wipe(hex, sizeof hex);
    return rc ? ag_err_set(err, rc, "cannot write %s", p) : 0;
}

/* The new master becomes the master: master.kid first, then master.key. */
static int finish_rotation(struct ag_vault *v, struct ag_err *err)
{
    char p[4200], q[4200];
    int lk = lock_dir(v->dir, LOCK_EX);
    int rc = lk < 0 ? AG_EIO : write_kid(v->dir, &v->next);
    if (!rc && v->file_mode) {
        path_of(v->dir, "master.key.next", NULL, p, sizeof p);
        path_of(v->dir, "master.key", NULL, q, sizeof q);
        rc = rename(p, q) ? AG_EIO : fsync_dir(v->dir);
    }
    if (lk >= 0) close(lk);
    return rc ? ag_err_set(err, rc, "cannot switch master keys in %s", v->dir) : 0;
}

int ag_vault_rotate(const char *dir, const char *old_hex, const char *new_hex, size_t *count,
                    struct ag_err *err)
{
    struct ag_vault *v;
    *count = 0;
    if (!old_hex != !new_hex)
        return ag_err_set(err, AG_ECONFIG,
                          "with AGORA_MASTER_KEY, give the new key too (AGORA_NEW_MASTER_KEY)");
    char p[4200];
    path_of(dir, "master.kid", NULL, p, sizeof p);
    if (!exists(p)) /* never make a vault here: rotating nothing is a mistake */
        return ag_err_set(err, AG_ENOTFOUND, "no vault in %s (no master.kid)", dir);
    int rc = ag_vault_open(dir, old_hex, &v, err);
    if (rc) return rc;
    if ((rc = start_rotation(v, new_hex, err))) goto out_close;
    /* a resumed rotation: master.kid may already name the next key */
    if ((rc = rewrap_all(dir, &v->cur, &v->next, count, err))) goto out_close;
    size_t ix = 0; /* the index key too (not counted: it is no customer's) */
    int lk = lock_dir(dir, LOCK_EX);
    rc = lk < 0 ? ag_err_set(err, AG_EIO, "cannot lock %s", dir)
                : rewrap_file(dir, INDEX_FILE, INDEX_AAD, &v->cur, &v->next, &ix, err);
    if (lk >= 0) close(lk);
    if (!rc) rc = finish_rotation(v, err);
out_close:
    ag_vault_close(v);
    return rc;
}
