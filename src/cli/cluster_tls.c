/*
 * `agora cluster`: mTLS between the members (issue 14, README "Running
 * distributed"). The cluster's CA lives in DIR/certs (0700; include/agora/certs.h
 * makes it: ca.pem, ca.key 0600), made at the first start and kept. Every member
 * that speaks HTTP to another gets a certificate of its own there, NAME.pem and
 * NAME.key (0600): each instance (its name, `+` written `_`; it serves with it and
 * calls the other instances with it: the orchestrator's steps over the mesh) with
 * the address it listens on, 127.0.0.1, as its subjectAltName; the gateway (a
 * client of the instances) and the supervisor (a client: the health checks and
 * the /metrics scrapes of the instances).
 *
 * Lifetime. A member certificate lives AG_CERTS_DAYS (30 days). At every start
 * and every CL_CERT_CHECK_MS while the cluster runs, each one is checked against
 * the CA as it will be CL_CERT_RENEW_DAYS from now: missing, not valid (another
 * CA, damaged, its key not its own) or expiring by then, it is issued again (a
 * new key too) and the supervisor logs why (cluster.cert_issued). The files are
 * renamed into place (the key, then the certificate);
 * `agora serve` and `agora gateway` look at them at most once a second on a new
 * connection and re-read them when they changed, so a renewal needs no restart
 * and open connections keep the certificate they started with.
 *
 * The supervisor's client. A blocking TLS 1.2+ handshake on the health check's
 * socket (500 ms send and receive timeouts), presenting supervisor.pem, verifying
 * the instance's chain against ca.pem and that it names 127.0.0.1. The context
 * is made again when the supervisor's own certificate is renewed.
 */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <fcntl.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "agora/certs.h"
#include "cli/cluster.h"

#define CERTS_DIR "certs"
#define LOOPBACK  "127.0.0.1"
#define RENEW_S   ((int64_t)CL_CERT_RENEW_DAYS * 86400)

/* the file stem of member m: its name with characters certificates' names do not
 * take written `_`; too long a name is "instance-PORT" */
static void stem(const struct cl_member *m, char out[AG_CERTS_NAME_MAX])
{
    size_t n = strlen(m->name);
    if (n >= AG_CERTS_NAME_MAX) {
        snprintf(out, AG_CERTS_NAME_MAX, "instance-%u", m->port);
        return;
    }
    for (size_t i = 0; i <= n; i++) {
        char ch = m->name[i];
        bool ok = !ch || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
        out[i] = ch;
        if (!ok) out[i] = '_';
    }
}

static bool certs_path(const struct cl_cluster *c, const char *name, const char *ext, char *out,
                       size_t n)
{
    return snprintf(out, n, "%s/" CERTS_DIR "/%s.%s", c->dir, name, ext) < (int)n;
}

bool cl_cert_path(const struct cl_cluster *c, const struct cl_member *m, const char *ext, char *out,
                  size_t n)
{
    char s[AG_CERTS_NAME_MAX];
    if (m && m->role == CL_GATEWAY)
        snprintf(s, sizeof s, "gateway");
    else if (m)
        stem(m, s);
    else
        snprintf(s, sizeof s, "ca");
    return certs_path(c, s, ext, out, n);
}

/* ---- issuing ---- */

/* the certificate in pem and the key in key belong together (a pair renamed into
 * place one file at a time, or written by two issuers at once, may not) */
static bool pair_matches(const char *pem, const char *key)
{
    FILE *f = fopen(pem, "re");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f) fclose(f);
    f = fopen(key, "re");
    EVP_PKEY *k = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f) fclose(f);
    bool ok = x && k && X509_check_private_key(x, k) == 1;
    X509_free(x);
    EVP_PKEY_free(k);
    ERR_clear_error();
    return ok;
}

/* Why NAME needs a new certificate, or NULL when it is good for RENEW_S more. */
static const char *why_issue(const struct cl_cluster *c, const char *name, char *why, size_t n)
{
    char ca[PATH_MAX], pem[PATH_MAX], key[PATH_MAX];
    struct ag_err e;
    if (!certs_path(c, "ca", "pem", ca, sizeof ca) ||
        !certs_path(c, name, "pem", pem, sizeof pem) ||
        !certs_path(c, name, "key", key, sizeof key))
        return NULL;
    if (access(pem, F_OK) != 0 || access(key, F_OK) != 0) return "none yet";
    int64_t now = (int64_t)(cl_now_ms() / 1000u);
    if (ag_certs_verify(ca, pem, now, NULL, 0, &e)) {
        snprintf(why, n, "not valid now: %s", e.msg);
        return why;
    }
    if (ag_certs_verify(ca, pem, now + RENEW_S, NULL, 0, &e)) {
        snprintf(why, n, "expires within %d days (%s)", CL_CERT_RENEW_DAYS, e.msg);
        return why;
    }
    return pair_matches(pem, key) ? NULL : "its key does not match it";
}

/* Issue NAME when due; *issued says so. Instances name 127.0.0.1, clients their name. */
static int ensure(struct cl_cluster *c, const char *name, bool server, bool *issued,
                  struct ag_err *err)
{
    char why[sizeof err->msg + 64], dir[PATH_MAX];
    const char *reason = why_issue(c, name, why, sizeof why);
    *issued = false;
    if (!reason) return 0;
    static const char *const ips[] = {LOOPBACK};
    struct ag_certs_member mem = {.name = name, .ips = server ? ips : NULL, .nips = server ? 1 : 0};
    if (!cl_path(c, CERTS_DIR, dir, sizeof dir))
        return ag_err_set(err, AG_EINVAL, "%s: too long a path", c->dir);
    int rc = ag_certs_issue(dir, &mem, NULL, NULL, 0, err);
    if (rc) return rc;
    *issued = true;
    AG_INFO("cluster.cert_issued", AG_LS("member", name), AG_LS("reason", reason),
            AG_LU("days", AG_CERTS_DAYS));
    return 0;
}

static int client_ctx(struct cl_cluster *c, struct ag_err *err);

/* every member's certificate: issued when due */
static int ensure_all(struct cl_cluster *c, struct ag_err *err)
{
    bool issued = false, sup = false;
    int rc = ensure(c, "supervisor", false, &sup, err);
    for (size_t i = 0; i < c->n && !rc; i++) {
        struct cl_member *m = &c->m[i];
        if (m->role != CL_INSTANCE && m->role != CL_GATEWAY) continue;
        char s[AG_CERTS_NAME_MAX];
        if (m->role == CL_GATEWAY)
            snprintf(s, sizeof s, "gateway");
        else
            stem(m, s);
        rc = ensure(c, s, m->role == CL_INSTANCE, &issued, err);
    }
    if (!rc && (sup || !c->tls_ctx)) rc = client_ctx(c, err);
    return rc;
}

int cl_certs_prepare(struct cl_cluster *c, struct ag_err *err)
{
    char dir[PATH_MAX];
    bool created = false;
    if (!cl_path(c, CERTS_DIR, dir, sizeof dir))
        return ag_err_set(err, AG_EINVAL, "%s: too long a path", c->dir);
    int rc = ag_certs_init(dir, &created, err);
    if (rc) return rc;
    if (created) AG_INFO("cluster.ca_created", AG_LS("dir", dir), AG_LU("days", AG_CERTS_CA_DAYS));
    c->certs_checked_ms = cl_now_ms();
    return ensure_all(c, err);
}

void cl_certs_check(struct cl_cluster *c, uint64_t now_ms)
{
    if (!c->tls || now_ms - c->certs_checked_ms < CL_CERT_CHECK_MS) return;
    c->certs_checked_ms = now_ms;
    struct ag_err err;
    ag_err_clear(&err);
    if (ensure_all(c, &err))
        AG_WARN("cluster.cert_not_issued", AG_LS("error", err.msg)); /* again at the next check */
}

/* ---- the supervisor's client ---- */

static int client_ctx(struct cl_cluster *c, struct ag_err *err)
{
    char ca[PATH_MAX], pem[PATH_MAX], key[PATH_MAX];
    certs_path(c, "ca", "pem", ca, sizeof ca);
    certs_path(c, "supervisor", "pem", pem, sizeof pem);
    certs_path(c, "supervisor", "key", key, sizeof key);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    bool ok = ctx && SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) &&
              SSL_CTX_load_verify_locations(ctx, ca, NULL) == 1 &&
              SSL_CTX_use_certificate_chain_file(ctx, pem) == 1 &&
              SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) == 1 &&
              SSL_CTX_check_private_key(ctx) == 1;
    if (!ok) {
        char e[256];
        ERR_error_string_n(ERR_get_error(), e, sizeof e);
        SSL_CTX_free(ctx);
        return ag_err_set(err, AG_ECONFIG, "the supervisor's TLS client (%s): %s", pem, e);
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_free(c->tls_ctx);
    c->tls_ctx = ctx;
    return 0;
}

void cl_certs_close(struct cl_cluster *c)
{
    SSL_CTX_free(c->tls_ctx);
    c->tls_ctx = NULL;
}

/* blocking from here, each send and receive within 500 ms */
static bool blocking(int fd)
{
    struct timeval tv = {0, 500000};
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) == 0 &&
           setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0 &&
           setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0;
}

int cl_tls_get(const struct cl_cluster *c, const struct cl_member *m, const char *path,
               const char *headers, char *out, size_t cap)
{
    out[0] = 0;
    if (!c->tls_ctx) return 0;
    int fd = cl_dial(LOOPBACK, m->port), status = 0;
    if (fd < 0) return 0;
    SSL *ssl = blocking(fd) ? SSL_new(c->tls_ctx) : NULL;
    if (ssl && SSL_set_fd(ssl, fd) == 1 &&
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), LOOPBACK) == 1 &&
        SSL_connect(ssl) == 1) {
        status = cl_http_exchange(fd, ssl, LOOPBACK, path, headers, out, cap);
        SSL_shutdown(ssl);
    }
    ERR_clear_error(); /* a refused handshake leaves its reason in this thread's queue */
    SSL_free(ssl);
    close(fd);
    return status;
}
