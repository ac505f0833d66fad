/*
 * TLS for the server and the upstream client, as a layer under the connection.
 *
 * Engine. A struct ag__tls is one SSL object between two memory BIOs: the
 * transport puts the ciphertext it read into the read BIO (ag__tls_read, which
 * hands back the plaintext), the connection's plaintext goes in through
 * ag__tls_write, and what OpenSSL produced for the wire (handshake messages,
 * records, alerts) waits in t->wire for the transport to write. Nothing here
 * touches a socket or blocks: the libuv loop drives it, one call per read and
 * per flush. Plaintext written before the handshake is done is kept in
 * t->pending and encrypted as soon as the handshake completes.
 *
 * Server contexts. One SSL_CTX per certificate/key pair, all in a refcounted
 * set; the first is the default, and the SNI callback moves a handshake to the
 * first certificate whose names (X509_check_host) match the server name asked.
 * Every context: TLS 1.2 and 1.3 only, ECDHE with AES-GCM or ChaCha20-Poly1305,
 * no renegotiation, no compression, ALPN "http/1.1" only (a client offering
 * ALPN without it gets no_application_protocol).
 *
 * Reload. ag_tls_server_reload builds a new set from the same files and swaps
 * it in under a mutex; a connection takes a reference on the set it started
 * with, so handshakes in progress finish with the old certificates and
 * established connections are never touched. A bad file leaves the old set.
 *
 * Client certificates (mTLS). With client_ca_file a server context asks every
 * client for a certificate and refuses the handshake without one that chains to
 * those CAs (expired, another CA's, self-signed: all refused).
 *
 * Client contexts verify the server (CA file, or the system store) unless told
 * not to, check its name or IP address, and can present a certificate (mTLS).
 * The SSL_CTX sits under a mutex: ag_tls_client_reload swaps in one built from
 * the same files; a connection's SSL holds its own reference on the context it
 * started with, so open connections keep working with the old certificate.
 *
 * Rotation by file. Both sides also re-read their files when one of them
 * changed on disk (device, inode, size or mtime differ): a new connection
 * looks at most once a second (one stat per file, by whichever thread wins the
 * slot). Renaming new files into place is enough; a check that catches the
 * certificate and the key half-replaced fails to load them, keeps the running
 * ones and tries again a second later.
 */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "http/internal.h"

#define CIPHERS_TLS12                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define CIPHERS_TLS13 "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

static const unsigned char alpn_http11[] = "\x08http/1.1";

/* The newest OpenSSL error as text ("" when none), clearing the queue. */
static const char *ssl_reason(char *buf, size_t n)
{
    unsigned long e = ERR_peek_error(); /* the first: the root cause */
    buf[0] = 0;
    if (e) ERR_error_string_n(e, buf, n);
    ERR_clear_error();
    return buf;
}

/* ---- file watch: rotation without a signal ---- */

#define WATCH_FILES    3
#define WATCH_EVERY_NS 1000000000LL

struct stamp {
    dev_t dev;       /* device */
    ino_t ino;       /* inode: a file renamed into place is another one */
    off_t size;      /* bytes */
    int64_t mtim_ns; /* modification time */
};

struct watch {
    const char *files[WATCH_FILES]; /* borrowed from the owner; NULL = unused */
    struct stamp seen[WATCH_FILES]; /* as loaded last (guarded by the owner's lock) */
    _Atomic int64_t next_ns;        /* monotonic time of the next look */
};

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The files' stamps now, into st[] (a missing file: all zero). */
static void watch_stat(const struct watch *w, struct stamp st[WATCH_FILES])
{
    memset(st, 0, WATCH_FILES * sizeof *st);
    for (int i = 0; i < WATCH_FILES; i++) {
        struct stat sb;
        if (!w->files[i] || stat(w->files[i], &sb) != 0) continue;
        st[i] = (struct stamp){sb.st_dev, sb.st_ino, sb.st_size,
                               (int64_t)sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec};
    }
}

/* True when this caller won the once-a-second slot and a file differs from what
 * was loaded; the new stamps are in now[] (commit them after a good reload). */
static bool watch_due(struct watch *w, pthread_mutex_t *lock, struct stamp now[WATCH_FILES])
{
    int64_t t = mono_ns(), next = atomic_load_explicit(&w->next_ns, memory_order_relaxed);
    if (t < next || !atomic_compare_exchange_strong(&w->next_ns, &next, t + WATCH_EVERY_NS))
        return false;
    watch_stat(w, now);
    pthread_mutex_lock(lock);
    bool changed = memcmp(now, w->seen, sizeof w->seen) != 0;
    pthread_mutex_unlock(lock);
    return changed;
}

static void watch_init(struct watch *w, const char *a, const char *b, const char *c)
{
    w->files[0] = a;
    w->files[1] = b;
    w->files[2] = c;
    watch_stat(w, w->seen);
    atomic_init(&w->next_ns, mono_ns() + WATCH_EVERY_NS);
}

/* ---- server contexts ---- */

struct tls_set {
    _Atomic int refs; /* the server + one per connection */
    SSL_CTX **ctx;    /* one per certificate; [0] is the default */
    size_t n;         /* contexts */
};

struct ag_tls_server {
    pthread_mutex_t lock;      /* guards set and watch.seen */
    struct tls_set *set;       /* current contexts */
    struct ag_tls_cert *certs; /* copied paths */
    size_t ncerts;             /* pairs */
    char *client_ca;           /* require client certificates from these CAs; NULL = none */
    struct watch watch;        /* the default pair and client_ca */
    _Atomic uint64_t reloads;  /* successful reloads */
    _Atomic uint64_t failures; /* handshakes that failed */
};

static void set_unref(struct tls_set *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) > 1) return;
    for (size_t i = 0; i < s->n; i++) SSL_CTX_free(s->ctx[i]);
    ag_free(s->ctx);
    ag_free(s);
}

static int sni_cb(SSL *ssl, int *al, void *arg)
{
    AG_UNUSED(al);
    struct tls_set *s = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name || s->n < 2) return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i < s->n; i++) {
        X509 *x = SSL_CTX_get0_certificate(s->ctx[i]);
        if (x && X509_check_host(x, name, 0, 0, NULL) == 1) {
            if (i) SSL_set_SSL_CTX(ssl, s->ctx[i]);
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_OK; /* the default certificate */
}

static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    AG_UNUSED(ssl);
    AG_UNUSED(arg);
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, alpn_http11, sizeof alpn_http11 - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static int common_ctx(SSL_CTX *ctx)
{
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    return SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 &&
                   SSL_CTX_set_cipher_list(ctx, CIPHERS_TLS12) == 1 &&
                   SSL_CTX_set_ciphersuites(ctx, CIPHERS_TLS13) == 1
               ? 0
               : -1;
}

/* Load a certificate chain and its key into ctx; the error names the file. */
static int load_pair(SSL_CTX *ctx, const char *cert, const char *key, struct ag_err *err)
{
    char why[256];
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
        return ag_err_set(err, AG_ECONFIG, "TLS certificate %s: cannot load it: %s", cert,
                          ssl_reason(why, sizeof why));
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
            ERR_clear_error();
            return ag_err_set(err, AG_ECONFIG, "TLS key %s does not match the certificate %s", key,
                              cert);
        }
        return ag_err_set(err, AG_ECONFIG, "TLS key %s: cannot load it: %s", key,
                          ssl_reason(why, sizeof why));
    }
    if (SSL_CTX_check_private_key(ctx) != 1)
        return ag_err_set(err, AG_ECONFIG, "TLS key %s does not match the certificate %s", key,
                          cert);
    return 0;
}

/* Ask every client for a certificate and accept only one from the CAs in ca. */
static int require_client_certs(SSL_CTX *ctx, const char *ca, struct ag_err *err)
{
    char why[256];
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
    if (!names || SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
        sk_X509_NAME_pop_free(names, X509_NAME_free);
        return ag_err_set(err, AG_ECONFIG, "TLS client CA file %s: cannot load it: %s", ca,
                          ssl_reason(why, sizeof why));
    }
    SSL_CTX_set_client_CA_list(ctx, names); /* takes names */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    return 0;
}

static int set_build(const struct ag_tls_cert *certs, size_t n, const char *client_ca,
                     struct tls_set **out, struct ag_err *err)
{
    struct tls_set *s = ag_calloc(1, sizeof *s);
    if (!s || !(s->ctx = ag_calloc(n, sizeof *s->ctx))) {
        ag_free(s);
        return ag_err_set(err, AG_ENOMEM, "out of memory");
    }
    atomic_init(&s->refs, 1);
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
        if (!ctx) {
            rc = ag_err_set(err, AG_ENOMEM, "SSL_CTX_new failed");
            break;
        }
        s->ctx[s->n++] = ctx;
        if (common_ctx(ctx))
            rc = ag_err_set(err, AG_ECONFIG, "OpenSSL refuses the TLS protocol settings");
        if (!rc) rc = load_pair(ctx, certs[i].cert_file, certs[i].key_file, err);
        if (!rc && client_ca) rc = require_client_certs(ctx, client_ca, err);
        if (rc) break;
        SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"agora", 5);
        SSL_CTX_set_tlsext_servername_callback(ctx, sni_cb);
        SSL_CTX_set_tlsext_servername_arg(ctx, s);
        SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
    }
    if (rc) {
        set_unref(s);
        return rc;
    }
    *out = s;
    return 0;
}

int ag_tls_server_new(const struct ag_tls_server_config *cfg, struct ag_tls_server **out,
                      struct ag_err *err)
{
    if (!cfg || !cfg->ncerts || !cfg->certs)
        return ag_err_set(err, AG_EINVAL, "TLS needs a certificate and a key");
    struct ag_tls_server *t = ag_calloc(1, sizeof *t);
    if (!t || !(t->certs = ag_calloc(cfg->ncerts, sizeof *t->certs))) {
        ag_free(t);
        return ag_err_set(err, AG_ENOMEM, "out of memory");
    }
    pthread_mutex_init(&t->lock, NULL);
    int rc = 0;
    for (size_t i = 0; i < cfg->ncerts && !rc; i++) {
        if (!cfg->certs[i].cert_file || !cfg->certs[i].key_file) {
            rc = ag_err_set(err, AG_EINVAL, "TLS certificate %zu needs both a cert and a key", i);
            break;
        }
        t->certs[i].cert_file = ag_strdup(cfg->certs[i].cert_file);
        t->certs[i].key_file = ag_strdup(cfg->certs[i].key_file);
        t->ncerts++;
        if (!t->certs[i].cert_file || !t->certs[i].key_file)
            rc = ag_err_set(err, AG_ENOMEM, "out of memory");
    }
    if (!rc && cfg->client_ca_file && !(t->client_ca = ag_strdup(cfg->client_ca_file)))
        rc = ag_err_set(err, AG_ENOMEM, "out of memory");
    if (!rc) {
        watch_init(&t->watch, t->certs[0].cert_file, t->certs[0].key_file, t->client_ca);
        rc = set_build(t->certs, t->ncerts, t->client_ca, &t->set, err);
    }
    if (rc) {
        ag_tls_server_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

/* Build from the files and swap in; `now` (the files' stamps before reading them,
 * or NULL to take them here) becomes what the watch compares against. */
static int server_reload(struct ag_tls_server *t, const struct stamp *now, struct ag_err *err)
{
    struct stamp st[WATCH_FILES];
    if (now)
        memcpy(st, now, sizeof st);
    else
        watch_stat(&t->watch, st);
    struct tls_set *s = NULL;
    int rc = set_build(t->certs, t->ncerts, t->client_ca, &s, err);
    if (rc) return rc;
    pthread_mutex_lock(&t->lock);
    struct tls_set *old = t->set;
    t->set = s;
    memcpy(t->watch.seen, st, sizeof t->watch.seen);
    pthread_mutex_unlock(&t->lock);
    set_unref(old);
    atomic_fetch_add(&t->reloads, 1);
    return 0;
}

int ag_tls_server_reload(struct ag_tls_server *t, struct ag_err *err)
{
    return server_reload(t, NULL, err);
}

/* A new connection: reload first when the files changed on disk. */
static void server_watch(struct ag_tls_server *t)
{
    struct stamp now[WATCH_FILES];
    if (!watch_due(&t->watch, &t->lock, now)) return;
    struct ag_err e;
    if (server_reload(t, now, &e))
        AG_WARN("tls: the changed certificate files do not load; the running ones stay",
                AG_LS("error", e.msg));
    else
        AG_INFO("tls: certificate files changed on disk: reloaded",
                AG_LS("cert", t->certs[0].cert_file));
}

uint64_t ag_tls_server_reloads(const struct ag_tls_server *t)
{
    return atomic_load(&t->reloads);
}

void ag_tls_server_free(struct ag_tls_server *t)
{
    if (!t) return;
    set_unref(t->set);
    for (size_t i = 0; i < t->ncerts; i++) {
        ag_free((char *)t->certs[i].cert_file);
        ag_free((char *)t->certs[i].key_file);
    }
    ag_free(t->certs);
    ag_free(t->client_ca);
    pthread_mutex_destroy(&t->lock);
    ag_free(t);
}

/* ---- client contexts ---- */

struct ag_tls_client {
    pthread_mutex_t lock;     /* guards ctx and watch.seen */
    SSL_CTX *ctx;             /* for new connections (each SSL holds its own reference) */
    char *ca_file;            /* copied paths; NULL = the system store / no certificate */
    char *cert_file;          /* presented (mTLS) */
    char *key_file;           /* its key */
    char server_name[256];    /* name or IP checked and sent as SNI ("" = the host) */
    bool verify;              /* check the chain and the name */
    struct watch watch;       /* the three files */
    _Atomic uint64_t reloads; /* successful reloads */
};

/* A client SSL_CTX from t's files. */
static int client_ctx_build(const struct ag_tls_client *t, SSL_CTX **out, struct ag_err *err)
{
    char why[256];
    int rc = 0;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) return ag_err_set(err, AG_ENOMEM, "SSL_CTX_new failed");
    if (common_ctx(ctx))
        rc = ag_err_set(err, AG_ECONFIG, "OpenSSL refuses the TLS protocol settings");
    if (!rc && t->verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (t->ca_file ? SSL_CTX_load_verify_locations(ctx, t->ca_file, NULL) != 1
                       : SSL_CTX_set_default_verify_paths(ctx) != 1)
            rc =
                ag_err_set(err, AG_ECONFIG, "TLS CA file %s: cannot load it: %s",
                           t->ca_file ? t->ca_file : "(system store)", ssl_reason(why, sizeof why));
    }
    if (!rc && t->cert_file) rc = load_pair(ctx, t->cert_file, t->key_file, err);
    if (!rc) SSL_CTX_set_alpn_protos(ctx, alpn_http11, sizeof alpn_http11 - 1);
    if (rc) {
        SSL_CTX_free(ctx);
        return rc;
    }
    *out = ctx;
    return 0;
}

static int dup_opt(const char *s, char **out)
{
    *out = NULL;
    return s && !(*out = ag_strdup(s)) ? AG_ENOMEM : 0;
}

int ag_tls_client_new(const struct ag_tls_client_config *cfg, struct ag_tls_client **out,
                      struct ag_err *err)
{
    static const struct ag_tls_client_config none;
    if (!cfg) cfg = &none;
    if (!cfg->cert_file != !cfg->key_file)
        return ag_err_set(err, AG_EINVAL, "a client certificate needs both a cert and a key");
    struct ag_tls_client *t = ag_calloc(1, sizeof *t);
    if (!t) return ag_err_set(err, AG_ENOMEM, "out of memory");
    pthread_mutex_init(&t->lock, NULL);
    t->verify = !cfg->insecure;
    snprintf(t->server_name, sizeof t->server_name, "%s", cfg->server_name ? cfg->server_name : "");
    int rc = dup_opt(cfg->ca_file, &t->ca_file) || dup_opt(cfg->cert_file, &t->cert_file) ||
                     dup_opt(cfg->key_file, &t->key_file)
                 ? ag_err_set(err, AG_ENOMEM, "out of memory")
                 : 0;
    if (!rc) {
        watch_init(&t->watch, t->verify ? t->ca_file : NULL, t->cert_file, t->key_file);
        rc = client_ctx_build(t, &t->ctx, err);
    }
    if (rc) {
        ag_tls_client_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

static int client_reload(struct ag_tls_client *t, const struct stamp *now, struct ag_err *err)
{
    struct stamp st[WATCH_FILES];
    if (now)
        memcpy(st, now, sizeof st);
    else
        watch_stat(&t->watch, st);
    SSL_CTX *ctx = NULL;
    int rc = client_ctx_build(t, &ctx, err);
    if (rc) return rc;
    pthread_mutex_lock(&t->lock);
    SSL_CTX *old = t->ctx;
    t->ctx = ctx;
    memcpy(t->watch.seen, st, sizeof t->watch.seen);
    pthread_mutex_unlock(&t->lock);
    SSL_CTX_free(old); /* connections made with it hold their own references */
    atomic_fetch_add(&t->reloads, 1);
    return 0;
}

int ag_tls_client_reload(struct ag_tls_client *t, struct ag_err *err)
{
    return client_reload(t, NULL, err);
}

uint64_t ag_tls_client_reloads(const struct ag_tls_client *t)
{
    return atomic_load(&t->reloads);
}

/* A new connection: reload first when the files changed on disk. */
static void client_watch(struct ag_tls_client *t)
{
    struct stamp now[WATCH_FILES];
    if (!watch_due(&t->watch, &t->lock, now)) return;
    struct ag_err e;
    if (client_reload(t, now, &e))
        AG_WARN("tls: the changed client certificate files do not load; the running ones stay",
                AG_LS("error", e.msg));
    else
        AG_INFO("tls: client certificate files changed on disk: reloaded",
                AG_LS("cert", t->cert_file ? t->cert_file : ""));
}

void ag_tls_client_free(struct ag_tls_client *t)
{
    if (!t) return;
    SSL_CTX_free(t->ctx);
    ag_free(t->ca_file);
    ag_free(t->cert_file);
    ag_free(t->key_file);
    pthread_mutex_destroy(&t->lock);
    ag_free(t);
}

/* ---- the engine ---- */

struct ag__tls {
    SSL *ssl;                  /* the session */
    BIO *rbio;                 /* network -> SSL (owned by ssl) */
    BIO *wbio;                 /* SSL -> network (owned by ssl) */
    struct tls_set *set;       /* server: the contexts it started with */
    struct ag_tls_server *srv; /* server: failure counter */
    struct ag_buf wire;        /* ciphertext for the transport */
    struct ag_buf pending;     /* plaintext written before the handshake completed */
    bool shut;                 /* close_notify queued */
};

static int engine_new(SSL_CTX *ctx, struct ag__tls **out)
{
    struct ag__tls *t = ag_calloc(1, sizeof *t);
    if (!t) return AG_ENOMEM;
    t->ssl = SSL_new(ctx);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->rbio || !t->wbio) {
        SSL_free(t->ssl);
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        ag_free(t);
        return AG_ENOMEM;
    }
    BIO_set_mem_eof_return(t->rbio, -1); /* empty = "want more", not EOF */
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    ag_buf_init(&t->wire);
    ag_buf_init(&t->pending);
    *out = t;
    return 0;
}

int ag__tls_server_conn(struct ag_tls_server *srv, struct ag__tls **out)
{
    server_watch(srv);
    pthread_mutex_lock(&srv->lock);
    struct tls_set *s = srv->set;
    atomic_fetch_add(&s->refs, 1);
    pthread_mutex_unlock(&srv->lock);
    int rc = engine_new(s->ctx[0], out);
    if (rc) {
        set_unref(s);
        return rc;
    }
    (*out)->set = s;
    (*out)->srv = srv;
    SSL_set_accept_state((*out)->ssl);
    return 0;
}

int ag__tls_client_conn(struct ag_tls_client *cli, const char *host, struct ag__tls **out)
{
    client_watch(cli);
    pthread_mutex_lock(&cli->lock);
    int rc = engine_new(cli->ctx, out); /* SSL_new takes a reference on the context */
    pthread_mutex_unlock(&cli->lock);
    if (rc) return rc;
    struct ag__tls *t = *out;
    const char *name = cli->server_name[0] ? cli->server_name : host;
    bool is_ip = strspn(name, "0123456789.") == strlen(name) || strchr(name, ':');
    if (!is_ip) SSL_set_tlsext_host_name(t->ssl, name);
    if (cli->verify) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(t->ssl);
        if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, name) != 1 : SSL_set1_host(t->ssl, name) != 1)
            rc = AG_EINVAL;
    }
    SSL_set_connect_state(t->ssl);
    if (!rc) SSL_do_handshake(t->ssl); /* the ClientHello, into wire */
    ERR_clear_error();
    if (rc) {
        ag__tls_free(t);
        return rc;
    }
    return ag__tls_collect(t);
}

int ag__tls_collect(struct ag__tls *t)
{
    size_t n = BIO_ctrl_pending(t->wbio);
    if (!n) return 0;
    if (ag_buf_reserve(&t->wire, n)) return AG_ENOMEM;
    int got = BIO_read(t->wbio, t->wire.data + t->wire.len, (int)n);
    if (got > 0) t->wire.len += (size_t)got;
    return 0;
}

struct ag_buf *ag__tls_wire(struct ag__tls *t)
{
    return &t->wire;
}

bool ag__tls_ready(const struct ag__tls *t)
{
    return SSL_is_init_finished(t->ssl);
}

static int encrypt(struct ag__tls *t, const char *p, size_t n)
{
    while (n) {
        int w = SSL_write(t->ssl, p, (int)AG_MIN(n, (size_t)1 << 30));
        if (w <= 0) {
            ERR_clear_error();
            return AG_EPROTOCOL;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int ag__tls_write(struct ag__tls *t, const char *p, size_t n)
{
    if (t->shut) return AG_ECLOSED;
    int rc = 0;
    if (!SSL_is_init_finished(t->ssl) || t->pending.len)
        rc = ag_buf_append(&t->pending, p, n);
    else
        rc = encrypt(t, p, n);
    return rc ? rc : ag__tls_collect(t);
}

int ag__tls_read(struct ag__tls *t, const char *data, size_t n, struct ag_buf *plain)
{
    if (n && BIO_write(t->rbio, data, (int)n) != (int)n) return AG_ENOMEM;
    int rc = 0;
    for (;;) {
        if (ag_buf_reserve(plain, 16384)) {
            rc = AG_ENOMEM;
            break;
        }
        int r = SSL_read(t->ssl, plain->data + plain->len, (int)(plain->cap - plain->len - 1));
        if (r > 0) {
            plain->len += (size_t)r;
            continue;
        }
        int e = SSL_get_error(t->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
        rc = e == SSL_ERROR_ZERO_RETURN ? AG_ECLOSED : AG_EPROTOCOL;
        if (rc == AG_EPROTOCOL) t->shut = true; /* no close_notify after a fatal error */
        if (rc == AG_EPROTOCOL && t->srv) atomic_fetch_add(&t->srv->failures, 1);
        ERR_clear_error();
        break;
    }
    if (plain->data) plain->data[plain->len] = 0;
    if (!rc && t->pending.len && SSL_is_init_finished(t->ssl)) {
        rc = encrypt(t, t->pending.data, t->pending.len);
        ag_buf_reset(&t->pending);
    }
    int crc = ag__tls_collect(t); /* handshake messages, tickets, alerts */
    return rc ? rc : crc;
}

void ag__tls_shutdown(struct ag__tls *t)
{
    if (t->shut) return;
    t->shut = true;
    if (SSL_is_init_finished(t->ssl)) SSL_shutdown(t->ssl);
    ERR_clear_error();
    ag__tls_collect(t);
}

const char *ag__tls_alpn(const struct ag__tls *t, char *buf, size_t n)
{
    const unsigned char *p;
    unsigned int len;
    SSL_get0_alpn_selected(t->ssl, &p, &len);
    snprintf(buf, n, "%.*s", (int)len, p ? (const char *)p : "");
    return buf;
}

void ag__tls_free(struct ag__tls *t)
{
    if (!t) return;
    SSL_free(t->ssl);
    set_unref(t->set);
    ag_buf_free(&t->wire);
    ag_buf_free(&t->pending);
    ag_free(t);
}
