/*
 * The cluster CA and its member certificates (include/agora/certs.h), with
 * OpenSSL's C API only.
 *
 * The CA: an EC P-256 key and a self-signed X.509 v3 certificate, CN "agora
 * cluster CA", basicConstraints critical CA:TRUE pathlen:0 (it signs members,
 * never another CA), keyUsage critical keyCertSign + cRLSign, a subject key id.
 * A member: a fresh P-256 key per issue (a rotation replaces the key too), CN =
 * its name, basicConstraints critical CA:FALSE, keyUsage critical
 * digitalSignature, extendedKeyUsage serverAuth + clientAuth, the SANs asked
 * (checked here character by character, so nothing the caller passes can add
 * another kind of name), the CA's key id as authority key id, a random 127-bit
 * serial, SHA-256 signatures.
 *
 * Files: the PEM goes to "<path>.tmp<pid>" created O_EXCL with the final mode,
 * is flushed and fsynced, then renamed over the path: a reader sees the old file
 * or the new one. ca.key is read back and checked against ca.pem before any
 * issue, so a wrong key is refused instead of issuing a certificate nobody trusts.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agora/certs.h"

#define PATH_LEN 4096

static const char *ossl_reason(char *buf, size_t n)
{
    unsigned long e = ERR_peek_error();
    buf[0] = 0;
    if (e) ERR_error_string_n(e, buf, n);
    ERR_clear_error();
    return buf[0] ? buf : "no detail";
}

static int path_in(char *out, const char *dir, const char *stem, const char *ext)
{
    return (size_t)snprintf(out, PATH_LEN, "%s/%s%s", dir, stem, ext) >= PATH_LEN ? AG_EINVAL : 0;
}

/* ---- files ---- */

typedef int (*pem_writer)(FILE *f, void *obj);

static int write_key(FILE *f, void *k)
{
    return PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
}

static int write_cert(FILE *f, void *x)
{
    return PEM_write_X509(f, x);
}

/* Write obj as PEM to path (mode) through a temporary file renamed into place. */
static int write_pem(const char *path, mode_t mode, pem_writer w, void *obj, struct ag_err *err)
{
    char tmp[PATH_LEN + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) return ag_err_set(err, AG_EIO, "%s: %s", tmp, strerror(errno));
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        unlink(tmp);
        return ag_err_set(err, AG_EIO, "%s: %s", tmp, strerror(errno));
    }
    bool ok = w(f, obj) == 1 && fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        ERR_clear_error();
        return ag_err_set(err, AG_EIO, "%s: cannot write it: %s", path, strerror(e));
    }
    return 0;
}

static int read_cert(const char *path, X509 **out, struct ag_err *err)
{
    char why[256];
    FILE *f = fopen(path, "r");
    if (!f) return ag_err_set(err, AG_ECONFIG, "%s: cannot read it: %s", path, strerror(errno));
    *out = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (!*out)
        return ag_err_set(err, AG_ECONFIG, "%s: not a PEM certificate: %s", path,
                          ossl_reason(why, sizeof why));
    return 0;
}

static int read_key(const char *path, EVP_PKEY **out, struct ag_err *err)
{
    char why[256];
    FILE *f = fopen(path, "r");
    if (!f) return ag_err_set(err, AG_ECONFIG, "%s: cannot read it: %s", path, strerror(errno));
    *out = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!*out)
        return ag_err_set(err, AG_ECONFIG, "%s: not a PEM private key: %s", path,
                          ossl_reason(why, sizeof why));
    return 0;
}

/* ---- building certificates ---- */

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    int ok = e && X509_add_ext(x, e, -1) == 1;
    X509_EXTENSION_free(e);
    return ok ? 0 : -1;
}

/* A random positive serial of 127 bits. */
static int set_serial(X509 *x)
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof b) != 1) return -1;
    b[0] &= 0x7f;
    b[0] |= 0x40; /* no leading zero octet: always 16 bytes */
    BIGNUM *bn = BN_bin2bn(b, sizeof b, NULL);
    int ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    BN_free(bn);
    return ok ? 0 : -1;
}

struct cert_spec {
    const char *cn;     /* subject CN */
    int64_t not_before; /* Unix seconds */
    uint32_t days;      /* validity */
    EVP_PKEY *pub;      /* the subject's key */
    X509 *issuer;       /* NULL = self-signed */
    EVP_PKEY *sign_key; /* the issuer's key (the subject's when self-signed) */
    const char *san;    /* "DNS:..,IP:.." or NULL */
};

static int set_subject(X509 *x, const struct cert_spec *s)
{
    X509_NAME *n = X509_get_subject_name(x);
    if (X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *)"agora", -1, -1,
                                   0) != 1 ||
        X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)s->cn, -1, -1,
                                   0) != 1)
        return -1;
    X509_NAME *in = s->issuer ? X509_get_subject_name(s->issuer) : n;
    return X509_set_issuer_name(x, in) == 1 ? 0 : -1;
}

static int set_validity(X509 *x, const struct cert_spec *s)
{
    time_t nb = (time_t)s->not_before;
    time_t na = (time_t)(s->not_before + (int64_t)s->days * 86400);
    return ASN1_TIME_set(X509_getm_notBefore(x), nb) && ASN1_TIME_set(X509_getm_notAfter(x), na)
               ? 0
               : -1;
}

static int set_exts(X509 *x, const struct cert_spec *s, bool ca)
{
    X509 *iss = s->issuer;
    int rc = add_ext(x, iss, NID_subject_key_identifier, "hash");
    if (!rc && iss) rc = add_ext(x, iss, NID_authority_key_identifier, "keyid:always");
    if (!rc)
        rc = add_ext(x, iss, NID_basic_constraints,
                     ca ? "critical,CA:TRUE,pathlen:0" : "critical,CA:FALSE");
    if (!rc)
        rc = add_ext(x, iss, NID_key_usage,
                     ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
    if (!rc && !ca) rc = add_ext(x, iss, NID_ext_key_usage, "serverAuth,clientAuth");
    if (!rc && s->san) rc = add_ext(x, iss, NID_subject_alt_name, s->san);
    return rc;
}

/* A signed certificate for s (CA when ca), or NULL with the reason in err. */
static X509 *build_cert(const struct cert_spec *s, bool ca, struct ag_err *err)
{
    char why[256];
    X509 *x = X509_new();
    bool ok = x && X509_set_version(x, 2) == 1 && set_serial(x) == 0 && set_subject(x, s) == 0 &&
              set_validity(x, s) == 0 && X509_set_pubkey(x, s->pub) == 1 &&
              set_exts(x, s, ca) == 0 && X509_sign(x, s->sign_key, EVP_sha256()) > 0;
    if (!ok) {
        ag_err_set(err, AG_EINVAL, "cannot build the certificate for %s: %s", s->cn,
                   ossl_reason(why, sizeof why));
        X509_free(x);
        return NULL;
    }
    return x;
}

static EVP_PKEY *new_key(struct ag_err *err)
{
    char why[256];
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (!k)
        ag_err_set(err, AG_ENOMEM, "cannot make an EC P-256 key: %s", ossl_reason(why, sizeof why));
    return k;
}

/* ---- the CA ---- */

struct ca {
    X509 *cert;
    EVP_PKEY *key;
    char cert_path[PATH_LEN];
    char key_path[PATH_LEN];
};

static void ca_free(struct ca *c)
{
    X509_free(c->cert);
    EVP_PKEY_free(c->key);
}

static int ca_paths(struct ca *c, const char *dir, struct ag_err *err)
{
    memset(c, 0, sizeof *c);
    if (!dir || !*dir) return ag_err_set(err, AG_EINVAL, "the CA needs a directory");
    if (path_in(c->cert_path, dir, "ca", ".pem") || path_in(c->key_path, dir, "ca", ".key"))
        return ag_err_set(err, AG_EINVAL, "%s: the path is too long", dir);
    return 0;
}

/* Load ca.pem and ca.key and check they make a CA together. */
static int ca_load(struct ca *c, struct ag_err *err)
{
    int rc = read_cert(c->cert_path, &c->cert, err);
    if (!rc) rc = read_key(c->key_path, &c->key, err);
    if (rc) return rc;
    if (X509_check_private_key(c->cert, c->key) != 1) {
        ERR_clear_error();
        return ag_err_set(err, AG_ECONFIG, "%s does not match the CA certificate %s (wrong key)",
                          c->key_path, c->cert_path);
    }
    if (X509_check_ca(c->cert) == 0)
        return ag_err_set(err, AG_ECONFIG, "%s is not a CA certificate", c->cert_path);
    return 0;
}

static int ca_create(struct ca *c, struct ag_err *err)
{
    if (!(c->key = new_key(err))) return AG_ENOMEM;
    struct cert_spec s = {.cn = "agora cluster CA",
                          .not_before = (int64_t)time(NULL) - AG_CERTS_SKEW_S,
                          .days = AG_CERTS_CA_DAYS,
                          .pub = c->key,
                          .sign_key = c->key};
    if (!(c->cert = build_cert(&s, true, err))) return AG_EINVAL;
    int rc = write_pem(c->key_path, 0600, write_key, c->key, err);
    if (!rc) rc = write_pem(c->cert_path, 0644, write_cert, c->cert, err);
    return rc;
}

int ag_certs_init(const char *dir, bool *created, struct ag_err *err)
{
    struct ca c;
    int rc = ca_paths(&c, dir, err);
    if (rc) return rc;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return ag_err_set(err, AG_EIO, "%s: %s", dir, strerror(errno));
    bool have_cert = access(c.cert_path, F_OK) == 0, have_key = access(c.key_path, F_OK) == 0;
    if (have_cert != have_key)
        return ag_err_set(err, AG_ECONFIG,
                          "%s is there without %s: restore it, or remove both "
                          "to make a new CA (every member then needs a new "
                          "certificate)",
                          have_cert ? c.cert_path : c.key_path,
                          have_cert ? c.key_path : c.cert_path);
    rc = have_cert ? ca_load(&c, err) : ca_create(&c, err);
    ca_free(&c);
    if (created) *created = !have_cert && !rc;
    return rc;
}

/* ---- members ---- */

static bool name_ok(const char *s, size_t max, const char *extra)
{
    size_t n = s ? strlen(s) : 0;
    if (!n || n > max || s[0] == '.' || s[0] == '-') return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool alnum =
            (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        if (!alnum && !strchr(extra, ch)) return false;
    }
    return true;
}

static int san_add(char *san, size_t n, const char *kind, const char *v)
{
    size_t len = strlen(san);
    return (size_t)snprintf(san + len, n - len, "%s%s:%s", len ? "," : "", kind, v) >= n - len ? -1
                                                                                               : 0;
}

/* The subjectAltName text, every entry checked. */
static int member_san(const struct ag_certs_member *m, char *san, size_t n, struct ag_err *err)
{
    san[0] = 0;
    if (m->nips + m->ndns > AG_CERTS_MAX_SANS)
        return ag_err_set(err, AG_EINVAL, "at most %d IP addresses and DNS names",
                          AG_CERTS_MAX_SANS);
    for (size_t i = 0; i < m->nips; i++) {
        unsigned char buf[16];
        const char *ip = m->ips[i];
        if (!ip || (inet_pton(AF_INET, ip, buf) != 1 && inet_pton(AF_INET6, ip, buf) != 1))
            return ag_err_set(err, AG_EINVAL, "'%s' is not an IP address", ip ? ip : "");
        if (san_add(san, n, "IP", ip)) return ag_err_set(err, AG_EINVAL, "too many names");
    }
    for (size_t i = 0; i < m->ndns; i++) {
        const char *d = m->dns[i];
        if (!name_ok(d, 253, ".-*") || (strchr(d, '*') && strncmp(d, "*.", 2) != 0))
            return ag_err_set(err, AG_EINVAL, "'%s' is not a DNS name", d ? d : "");
        if (san_add(san, n, "DNS", d)) return ag_err_set(err, AG_EINVAL, "too many names");
    }
    if (!m->nips && !m->ndns && san_add(san, n, "DNS", m->name))
        return ag_err_set(err, AG_EINVAL, "the name is too long");
    return 0;
}

static int member_paths(const char *ca_dir, const struct ag_certs_member *m, char *cert, char *key,
                        struct ag_err *err)
{
    if (!name_ok(m->name, AG_CERTS_NAME_MAX, "._-") || !strcmp(m->name, "ca"))
        return ag_err_set(err, AG_EINVAL,
                          "'%s' is not a member name: 1..%d of A-Z a-z 0-9 . _ -, not starting "
                          "with . or -, and not 'ca'",
                          m->name ? m->name : "", AG_CERTS_NAME_MAX);
    const char *dir = m->out_dir ? m->out_dir : ca_dir;
    if (path_in(cert, dir, m->name, ".pem") || path_in(key, dir, m->name, ".key"))
        return ag_err_set(err, AG_EINVAL, "%s: the path is too long", dir);
    return 0;
}

static int member_write(const struct ca *c, const struct ag_certs_member *m, const char *san,
                        const char *cert_path, const char *key_path, struct ag_err *err)
{
    EVP_PKEY *k = new_key(err);
    if (!k) return AG_ENOMEM;
    struct cert_spec s = {.cn = m->name,
                          .not_before =
                              m->not_before ? m->not_before : (int64_t)time(NULL) - AG_CERTS_SKEW_S,
                          .days = m->days ? m->days : AG_CERTS_DAYS,
                          .pub = k,
                          .issuer = c->cert,
                          .sign_key = c->key,
                          .san = san};
    X509 *x = build_cert(&s, false, err);
    int rc = x ? 0 : AG_EINVAL;
    /* the key first: between the two renames the pair does not match, which a
     * watching process refuses and retries (the old pair keeps serving) */
    if (!rc) rc = write_pem(key_path, 0600, write_key, k, err);
    if (!rc) rc = write_pem(cert_path, 0644, write_cert, x, err);
    X509_free(x);
    EVP_PKEY_free(k);
    return rc;
}

int ag_certs_issue(const char *ca_dir, const struct ag_certs_member *m, char *cert_out,
                   char *key_out, size_t n, struct ag_err *err)
{
    char cert_path[PATH_LEN], key_path[PATH_LEN], san[4096];
    if (!m) return ag_err_set(err, AG_EINVAL, "no member");
    struct ca c;
    int rc = ca_paths(&c, ca_dir, err);
    if (!rc) rc = member_paths(ca_dir, m, cert_path, key_path, err);
    if (!rc) rc = member_san(m, san, sizeof san, err);
    if (!rc && m->days > 36500) rc = ag_err_set(err, AG_EINVAL, "days: at most 36500");
    if (!rc) rc = ca_load(&c, err);
    if (!rc) rc = member_write(&c, m, san, cert_path, key_path, err);
    ca_free(&c);
    if (!rc && cert_out) snprintf(cert_out, n, "%s", cert_path);
    if (!rc && key_out) snprintf(key_out, n, "%s", key_path);
    return rc;
}

int ag_certs_verify(const char *ca_file, const char *cert_file, int64_t at, char *subject, size_t n,
                    struct ag_err *err)
{
    X509 *ca = NULL, *x = NULL;
    X509_STORE *st = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    int rc = !st || !ctx ? ag_err_set(err, AG_ENOMEM, "out of memory") : 0;
    if (!rc) rc = read_cert(ca_file, &ca, err);
    if (!rc) rc = read_cert(cert_file, &x, err);
    if (!rc && (X509_STORE_add_cert(st, ca) != 1 || X509_STORE_CTX_init(ctx, st, x, NULL) != 1))
        rc = ag_err_set(err, AG_ENOMEM, "out of memory");
    if (!rc) {
        if (at) X509_STORE_CTX_set_time(ctx, 0, (time_t)at);
        X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
        if (X509_verify_cert(ctx) != 1)
            rc = ag_err_set(err, AG_ECONFIG, "%s: not valid under %s: %s", cert_file, ca_file,
                            X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
    }
    if (!rc && subject) X509_NAME_oneline(X509_get_subject_name(x), subject, (int)n);
    ERR_clear_error();
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(st);
    X509_free(ca);
    X509_free(x);
    return rc;
}
