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
 * Client contexts verify the server (CA file, or the system store) unless told
 * not to, check its name or IP address, and can present a certificate (mTLS).
 */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

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

/* ---- server contexts ---- */

struct tls_set {
    _Atomic int refs; /* the server + one per connection */
    SSL_CTX **ctx;    /* one per certificate; [0] is the default */
    size_t n;         /* contexts */
};

struct ag_tls_server {
    pthread_mutex_t lock;      /* guards set */
    struct tls_set *set;       /* current contexts */
    struct ag_tls_cert *certs; /* copied paths */
    size_t ncerts;             /* pairs */
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

static int set_build(const struct ag_tls_cert *certs, size_t n, struct tls_set **out,
                     struct ag_err *err)
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
    if (!rc) rc = set_build(t->certs, t->ncerts, &t->set, err);
    if (rc) {
        ag_tls_server_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int ag_tls_server_reload(struct ag_tls_server *t, struct ag_err *err)
{
    struct tls_set *s;
    int rc = set_build(t->certs, t->ncerts, &s, err);
    if (rc) return rc;
    pthread_mutex_lock(&t->lock);
    struct tls_set *old = t->set;
    t->set = s;
    pthread_mutex_unlock(&t->lock);
    set_unref(old);
    atomic_fetch_add(&t->reloads, 1);
    return 0;
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
    pthread_mutex_destroy(&t->lock);
    ag_free(t);
}

/* ---- client contexts ---- */

struct ag_tls_client {
    SSL_CTX *ctx;          /* shared by every connection */
    char server_name[256]; /* name or IP checked and sent as SNI ("" = the host) */
    bool verify;           /* check the chain and the name */
};

int ag_tls_client_new(const struct ag_tls_client_config *cfg, struct ag_tls_client **out,
                      struct ag_err *err)
{
    static const struct ag_tls_client_config none;
    if (!cfg) cfg = &none;
    struct ag_tls_client *t = ag_calloc(1, sizeof *t);
    if (!t) return ag_err_set(err, AG_ENOMEM, "out of memory");
    t->verify = !cfg->insecure;
    snprintf(t->server_name, sizeof t->server_name, "%s", cfg->server_name ? cfg->server_name : "");
    char why[256];
    int rc = 0;
    if (!(t->ctx = SSL_CTX_new(TLS_client_method())))
        rc = ag_err_set(err, AG_ENOMEM, "SSL_CTX_new failed");
    else if (common_ctx(t->ctx))
        rc = ag_err_set(err, AG_ECONFIG, "OpenSSL refuses the TLS protocol settings");
    if (!rc && t->verify) {
        SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
        if (cfg->ca_file ? SSL_CTX_load_verify_locations(t->ctx, cfg->ca_file, NULL) != 1
                         : SSL_CTX_set_default_verify_paths(t->ctx) != 1)
            rc = ag_err_set(err, AG_ECONFIG, "TLS CA file %s: cannot load it: %s",
                            cfg->ca_file ? cfg->ca_file : "(system store)",
                            ssl_reason(why, sizeof why));
    }
    if (!rc && (cfg->cert_file || cfg->key_file)) {
        if (!cfg->cert_file || !cfg->key_file)
            rc = ag_err_set(err, AG_EINVAL, "a client certificate needs both a cert and a key");
        else
            rc = load_pair(t->ctx, cfg->cert_file, cfg->key_file, err);
    }
    if (!rc) SSL_CTX_set_alpn_protos(t->ctx, alpn_http11, sizeof alpn_http11 - 1);
    if (rc) {
        ag_tls_client_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void ag_tls_client_free(struct ag_tls_client *t)
{
    if (!t) return;
    SSL_CTX_free(t->ctx);
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
    int rc = engine_new(cli->ctx, out);
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
