/*
 * The libuv transport: worker threads, listening sockets, accepted connections.
 *
 * Workers. ag_http_server_start creates one listening socket per worker, all bound
 * to the same address with SO_REUSEPORT (the first bind picks the port when 0 was
 * asked), wraps each in a uv_tcp_t on the worker's own loop and starts the
 * worker's thread. Nothing is shared between workers but the router (read-only
 * while serving) and the metrics registry (sharded atomics).
 *
 * Unix sockets. With unix_path the server makes one listening AF_UNIX socket
 * itself (probe with connect: refuse a live listener, unlink only a stale socket
 * file; bind, chmod 0600, then listen, so no client gets in through a wider
 * umask) and each worker wraps its own dup() of it in a uv_pipe_t: all workers
 * accept from the one queue. Connections are then uv_pipe_t with peer "unix".
 *
 * Connections. A struct uvconn embeds the connection state machine, its socket
 * and its timer. Reads land in one per-worker buffer and are parsed at once (what
 * the parser cannot take yet is copied by conn.c). Writes: conn->out is swapped
 * into uvconn->wbuf and written with uv_try_write, falling back to uv_write for
 * the rest; answers produced meanwhile accumulate in conn->out. The uvconn is
 * freed when both handles are closed and no request still refers to it.
 *
 * Per peer. Every accepted connection is counted against its client's IP address
 * in a table shared by the workers (peers.c); over max_conns_per_peer it is
 * closed at once, before anything is read, and counted in
 * agora_http_connections_refused_total{reason="per_peer"}. So one client holding
 * thousands of idle sockets cannot take the workers' admission budget from the
 * rest. A new connection has first_byte_timeout_ms to send its first byte, then
 * header_timeout_ms for the whole request line and headers.
 *
 * Backpressure. Each worker admits max_connections / workers connections; at the
 * limit the connection callback returns without uv_accept, which makes libuv stop
 * watching the listening socket until we accept again, so further clients wait
 * in the kernel backlog instead of being accepted and dropped.
 *
 * TLS. With cfg.tls every connection gets a TLS session (tls.c) under the state
 * machine: ciphertext read is decrypted into the worker's plaintext buffer and
 * fed; conn->out is encrypted at flush time and the records are written like
 * plain bytes. The state machine never knows. Answers carry HSTS.
 *
 * Drain. ag_http_server_drain sets a flag and wakes every worker (uv_async). A
 * worker closes its listener, drains every connection, and arms a timer that
 * force-closes what is left; its loop ends when the last handle is closed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "http/internal.h"

struct worker;

struct uvconn {
    struct ag__http_conn conn; /* the state machine (first: container_of is a cast) */
    union {
        uv_tcp_t tcp;       /* TCP */
        uv_pipe_t pipe;     /* Unix-domain socket (unix_path) */
        uv_stream_t stream; /* either, as a stream */
        uv_handle_t handle; /* either, as a handle */
    } sock;                 /* the connection's socket */
    uv_timer_t timer;       /* header/body/idle deadline */
    uv_write_t wreq;        /* the write in flight */
    uv_shutdown_t sreq;     /* lingering close: our FIN */
    struct ag_buf wbuf;     /* bytes being written */
    struct worker *w;       /* owner */
    struct uvconn *prev;    /* worker's list */
    struct uvconn *next;    /* worker's list */
    int open_handles;       /* tcp + timer not yet closed */
    bool writing;           /* wreq in flight */
    bool closing;           /* uv_close called */
    bool lingering;         /* FIN sent, discarding input until EOF or timeout */
    bool peer_counted;      /* counted in srv->peers under peer_key */
    uint8_t peer_key[16];   /* the client's address (peers.c key) */
    struct ag__tls *tls;    /* TLS session under the connection; NULL = plain */
};

struct worker {
    struct ag_http_server *srv; /* owner */
    uv_loop_t loop;             /* this worker's loop */
    union {
        uv_tcp_t tcp;        /* its SO_REUSEPORT socket */
        uv_pipe_t pipe;      /* its dup() of the one Unix listening socket */
        uv_stream_t stream;  /* either */
        uv_handle_t handle;  /* either */
    } listener;              /* where this worker accepts */
    uv_async_t wake;         /* drain requests */
    uv_timer_t drain_timer;  /* force-close at the end of a drain */
    uv_thread_t thread;      /* runs the loop */
    struct ag__http_ctx ctx; /* shared by its connections */
    struct uvconn *conns;    /* open connections */
    uint32_t nconns;         /* connections in the list */
    uint32_t max_conns;      /* admission limit */
    bool accept_waiting;     /* a connection waits for uv_accept */
    bool draining;           /* drain started on this loop */
    bool listener_open;      /* listener not closed yet */
    bool loop_ready;         /* loop initialised */
    bool thread_started;     /* thread created */
    struct ag_buf plain;     /* TLS: plaintext of one read, fed at once */
    char rbuf[64 * 1024];    /* read buffer */
};

struct ag_http_server {
    struct ag_http_server_config cfg; /* copy; host points at host_copy */
    char host_copy[64];               /* numeric address */
    char unix_copy[108];              /* cfg.unix_path's copy ("" = TCP) */
    bool unix_bound;                  /* we created the socket file: unlink it at free */
    struct ag_http_router *router;    /* borrowed */
    struct ag__http_limits lim;       /* resolved */
    struct worker *workers;           /* array of nworkers */
    int nworkers;                     /* worker count */
    uint16_t port;                    /* bound port */
    _Atomic bool draining;            /* drain requested */
    _Atomic uint32_t drain_ms;        /* force-close delay */
    bool started;                     /* threads running */
    struct ag__peers *peers;          /* open connections per client address */
    uint32_t per_peer_cap;            /* max_conns_per_peer resolved */
    struct ag_obs_series *refused;    /* refused{reason="per_peer"}; NULL = no metrics */
    char hsts[96];                    /* the HSTS header line over TLS */
};

bool ag__http_ctx_draining(const struct ag__http_ctx *ctx)
{
    return ctx->server && atomic_load(&ctx->server->draining);
}

bool ag_http_server_draining(const struct ag_http_server *s)
{
    return atomic_load(&s->draining);
}
uint16_t ag_http_server_port(const struct ag_http_server *s)
{
    return s->port;
}

/* ---- connection transport ---- */

static struct uvconn *uc_of(struct ag__http_conn *c)
{
    return (struct uvconn *)c;
}

static void accept_one(struct worker *w);

static void uc_handle_closed(uv_handle_t *h)
{
    struct uvconn *uc = h->data;
    if (--uc->open_handles > 0) return;
    struct worker *w = uc->w;
    if (uc->prev)
        uc->prev->next = uc->next;
    else
        w->conns = uc->next;
    if (uc->next) uc->next->prev = uc->prev;
    uc->prev = uc->next = NULL;
    w->nconns--;
    if (uc->peer_counted) ag__peers_release(w->srv->peers, uc->peer_key);
    uc->peer_counted = false;
    ag__http_conn_closed(&uc->conn); /* may release uc */
    if (w->accept_waiting && !w->draining && w->nconns < w->max_conns) accept_one(w);
    if (w->draining && w->nconns == 0) {
        uv_close((uv_handle_t *)&w->drain_timer, NULL);
        uv_close((uv_handle_t *)&w->wake, NULL);
    }
}

static void uc_close(struct ag__http_conn *c)
{
    struct uvconn *uc = uc_of(c);
    if (uc->closing) return;
    uc->closing = true;
    c->closing = true;
    uv_close(&uc->sock.handle, uc_handle_closed);
    uv_close((uv_handle_t *)&uc->timer, uc_handle_closed);
}

static void uc_flush(struct ag__http_conn *c);
static void uc_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void uc_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void linger_timeout(uv_timer_t *t)
{
    uc_close(&((struct uvconn *)t->data)->conn);
}

static void linger_shutdown_cb(uv_shutdown_t *req, int status)
{
    struct uvconn *uc = req->data;
    if (status < 0) uc_close(&uc->conn);
    ag__http_conn_unref(&uc->conn); /* the shutdown's reference */
}

/* Lingering close (as nginx does): after the last answer, send FIN and keep
 * reading and discarding for a while, so a client still sending its body gets
 * our answer instead of a reset that could destroy it. */
static void uc_linger(struct ag__http_conn *c)
{
    struct uvconn *uc = uc_of(c);
    if (uc->lingering || uc->closing) return;
    uc->lingering = true;
    uc->sreq.data = uc;
    if (uv_shutdown(&uc->sreq, &uc->sock.stream, linger_shutdown_cb) != 0) {
        uc_close(c);
        return;
    }
    c->refs++;
    uv_read_start(&uc->sock.stream, uc_alloc, uc_read_cb);
    uv_timer_start(&uc->timer, linger_timeout, AG_MIN(c->ctx->lim.idle_timeout_ms, 2000), 0);
}

static void uc_write_cb(uv_write_t *wr, int status)
{
    struct uvconn *uc = wr->data;
    uc->writing = false;
    ag_buf_reset(&uc->wbuf);
    if (status < 0) {
        uc_close(&uc->conn);
    } else if (!uc->closing) {
        uc_flush(&uc->conn);
    }
    ag__http_conn_unref(&uc->conn); /* the write's reference */
}

/* The bytes to put on the socket: conn->out itself, or over TLS the records it
 * became (plus handshake messages and, once the last answer is in, close_notify).
 * NULL when TLS cannot take them. */
static struct ag_buf *uc_wire(struct uvconn *uc)
{
    struct ag__http_conn *c = &uc->conn;
    if (!uc->tls) return &c->out;
    if (c->out.len) {
        if (ag__tls_write(uc->tls, c->out.data, c->out.len) != 0) return NULL;
        ag_buf_reset(&c->out);
    }
    if (c->close_after_flush) ag__tls_shutdown(uc->tls);
    return ag__tls_wire(uc->tls);
}

static void uc_flush(struct ag__http_conn *c)
{
    struct uvconn *uc = uc_of(c);
    if (uc->writing || uc->closing) return;
    struct ag_buf *src = uc_wire(uc);
    if (!src) {
        uc_close(c);
        return;
    }
    if (src->len == 0) {
        if (c->close_after_flush) uc_linger(c);
        return;
    }
    struct ag_buf tmp = uc->wbuf;
    uc->wbuf = *src;
    *src = tmp;
    uv_buf_t b = uv_buf_init(uc->wbuf.data, (unsigned)uc->wbuf.len);
    int n = uv_try_write(&uc->sock.stream, &b, 1);
    if (n == (int)b.len) {
        ag_buf_reset(&uc->wbuf);
        if (c->out.len || src->len || c->close_after_flush) uc_flush(c);
        return;
    }
    if (n < 0 && n != UV_EAGAIN) {
        uc_close(c);
        return;
    }
    if (n > 0) b = uv_buf_init(b.base + n, b.len - (unsigned)n);
    uc->wreq.data = uc;
    if (uv_write(&uc->wreq, &uc->sock.stream, &b, 1, uc_write_cb) != 0) {
        uc_close(c);
        return;
    }
    uc->writing = true;
    c->refs++;
}

static void uc_timer_cb(uv_timer_t *t)
{
    ag__http_conn_timeout(&((struct uvconn *)t->data)->conn);
}

static void uc_set_timer(struct ag__http_conn *c, uint64_t ms)
{
    struct uvconn *uc = uc_of(c);
    if (uc->closing || uc->lingering) return;
    if (ms)
        uv_timer_start(&uc->timer, uc_timer_cb, ms, 0);
    else
        uv_timer_stop(&uc->timer);
}

static void uc_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    AG_UNUSED(hint);
    struct uvconn *uc = h->data;
    *buf = uv_buf_init(uc->w->rbuf, sizeof uc->w->rbuf);
}

/* Ciphertext in: decrypt, feed the plaintext, write what the handshake owes. A
 * failed handshake (an old protocol, no shared cipher, a bad record) writes the
 * alert, then closes. */
static void uc_tls_in(struct uvconn *uc, const char *p, size_t n)
{
    struct ag_buf *plain = &uc->w->plain;
    ag_buf_reset(plain);
    int rc = ag__tls_read(uc->tls, p, n, plain);
    if (plain->len) ag__http_conn_feed(&uc->conn, plain->data, plain->len);
    if (uc->closing || uc->conn.closed) return;
    if (rc == AG_ECLOSED) {
        ag__http_conn_eof(&uc->conn);
    } else if (rc) {
        uc->conn.closing = uc->conn.close_after_flush = true;
        uv_read_stop(&uc->sock.stream);
        uc_flush(&uc->conn);
        return;
    }
    uc_flush(&uc->conn);
}

static void uc_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct uvconn *uc = s->data;
    if (uc->lingering) {
        if (n < 0) uc_close(&uc->conn);
        return;
    }
    if (n > 0 && uc->tls)
        uc_tls_in(uc, buf->base, (size_t)n);
    else if (n > 0)
        ag__http_conn_feed(&uc->conn, buf->base, (size_t)n);
    else if (n == UV_EOF)
        ag__http_conn_eof(&uc->conn);
    else if (n < 0)
        uc_close(&uc->conn);
}

static void uc_read(struct ag__http_conn *c, bool on)
{
    struct uvconn *uc = uc_of(c);
    if (uc->closing || uc->lingering) return;
    if (on)
        uv_read_start(&uc->sock.stream, uc_alloc, uc_read_cb);
    else
        uv_read_stop(&uc->sock.stream);
}

static uint64_t uc_now(struct ag__http_conn *c)
{
    return uv_now(&uc_of(c)->w->loop);
}

static size_t uc_pending(struct ag__http_conn *c)
{
    struct uvconn *uc = uc_of(c);
    size_t n = uc->writing ? uc->wbuf.len : 0;
    if (uc->tls) n += ag__tls_wire(uc->tls)->len;
    return n;
}

static void uc_release(struct ag__http_conn *c)
{
    struct uvconn *uc = uc_of(c);
    ag_buf_free(&uc->wbuf);
    ag__tls_free(uc->tls);
    ag_free(uc);
}

static const struct ag__http_io uv_io = {
    .flush = uc_flush,
    .pending = uc_pending,
    .close = uc_close,
    .set_timer = uc_set_timer,
    .read = uc_read,
    .now_ms = uc_now,
    .release = uc_release,
};

/* ---- accepting ---- */

/* The peer as "ip:port" into conn.peer, and its address into *ss (family
 * AF_UNSPEC when unknown). */
static void format_peer(struct uvconn *uc, struct sockaddr_storage *ss_out)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    ss.ss_family = AF_UNSPEC;
    *ss_out = ss;
    if (uc->w->srv->unix_copy[0]) {
        snprintf(uc->conn.peer, sizeof uc->conn.peer, "unix");
        return;
    }
    if (uv_tcp_getpeername(&uc->sock.tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            uv_ip4_name(a, ip, sizeof ip);
            port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            uv_ip6_name(a, ip, sizeof ip);
            port = ntohs(a->sin6_port);
        }
    }
    snprintf(uc->conn.peer, sizeof uc->conn.peer, "%s:%d", ip, port);
    *ss_out = ss;
}

/* Count the connection against its address; false when the address already has
 * max_conns_per_peer open (the connection is then to be closed at once). */
static bool admit_peer(struct uvconn *uc, const struct sockaddr_storage *ss)
{
    struct ag_http_server *s = uc->w->srv;
    if (!ag__peer_key((const struct sockaddr *)ss, uc->peer_key)) return true;
    int rc = ag__peers_acquire(s->peers, uc->peer_key, s->per_peer_cap);
    if (rc == AG_EAGAIN) {
        if (s->refused) ag_obs_counter_inc(s->refused);
        return false;
    }
    uc->peer_counted = rc == 0;
    return true;
}

static void accept_one(struct worker *w)
{
    w->accept_waiting = false;
    struct uvconn *uc = ag_calloc(1, sizeof *uc);
    if (!uc) {
        w->accept_waiting = true; /* retry when a connection closes */
        return;
    }
    bool is_unix = w->srv->unix_copy[0] != '\0';
    if (is_unix)
        uv_pipe_init(&w->loop, &uc->sock.pipe, 0);
    else
        uv_tcp_init(&w->loop, &uc->sock.tcp);
    uv_timer_init(&w->loop, &uc->timer);
    uc->sock.handle.data = uc->timer.data = uc;
    uc->w = w;
    uc->open_handles = 2;
    ag__http_conn_init(&uc->conn, &w->ctx, &uv_io);
    uc->next = w->conns;
    if (w->conns) w->conns->prev = uc;
    w->conns = uc;
    w->nconns++;
    if (uv_accept(&w->listener.stream, &uc->sock.stream) != 0) {
        uc_close(&uc->conn);
        return;
    }
    struct sockaddr_storage ss;
    format_peer(uc, &ss);
    if (!admit_peer(uc, &ss)) {
        uc_close(&uc->conn); /* over the per-peer cap: closed before reading a byte */
        return;
    }
    if (w->srv->cfg.tls && ag__tls_server_conn(w->srv->cfg.tls, &uc->tls) != 0) {
        uc_close(&uc->conn);
        return;
    }
    if (!is_unix) uv_tcp_nodelay(&uc->sock.tcp, 1);
    uc_set_timer(&uc->conn, w->ctx.lim.first_byte_timeout_ms);
    uc->conn.armed_ms = uc->conn.idle_deadline_ms;
    uv_read_start(&uc->sock.stream, uc_alloc, uc_read_cb);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct worker *w = server->data;
    if (status < 0 || w->draining) return;
    if (w->nconns >= w->max_conns) {
        w->accept_waiting = true; /* libuv stops polling until we accept */
        return;
    }
    accept_one(w);
}

/* ---- drain ---- */

static void drain_timer_cb(uv_timer_t *t)
{
    struct worker *w = t->data;
    for (struct uvconn *uc = w->conns, *n; uc; uc = n) {
        n = uc->next;
        uc_close(&uc->conn);
    }
}

static void wake_cb(uv_async_t *a)
{
    struct worker *w = a->data;
    if (w->draining || !atomic_load(&w->srv->draining)) return;
    w->draining = true;
    if (w->listener_open) {
        w->listener_open = false;
        uv_close(&w->listener.handle, NULL);
    }
    for (struct uvconn *uc = w->conns, *n; uc; uc = n) {
        n = uc->next;
        ag__http_conn_drain(&uc->conn);
    }
    if (w->nconns == 0) {
        uv_close((uv_handle_t *)&w->drain_timer, NULL);
        uv_close((uv_handle_t *)&w->wake, NULL);
        return;
    }
    uv_timer_start(&w->drain_timer, drain_timer_cb, atomic_load(&w->srv->drain_ms), 0);
}

void ag_http_server_drain(struct ag_http_server *s, uint32_t timeout_ms)
{
    atomic_store(&s->drain_ms, timeout_ms);
    if (atomic_exchange(&s->draining, true) || !s->started) return;
    for (int i = 0; i < s->nworkers; i++) uv_async_send(&s->workers[i].wake);
}

/* ---- lifecycle ---- */

int ag_http_server_new(const struct ag_http_server_config *cfg, struct ag_http_router *router,
                       struct ag_http_server **out)
{
    static const struct ag_http_server_config none;
    if (!router) return AG_EINVAL;
    if (!cfg) cfg = &none;
    struct ag_http_server *s = ag_calloc(1, sizeof *s);
    if (!s) return AG_ENOMEM;
    s->cfg = *cfg;
    snprintf(s->host_copy, sizeof s->host_copy, "%s", cfg->host ? cfg->host : "127.0.0.1");
    s->cfg.host = s->host_copy;
    if (cfg->unix_path) {
        if (cfg->unix_path[0] != '/' || strlen(cfg->unix_path) >= sizeof s->unix_copy) {
            ag_free(s);
            return AG_EINVAL;
        }
        snprintf(s->unix_copy, sizeof s->unix_copy, "%s", cfg->unix_path);
        s->cfg.unix_path = s->unix_copy;
    }
    s->router = router;
    ag__http_limits_from(cfg, &s->lim);
    s->nworkers = cfg->workers > 0 ? cfg->workers : (int)uv_available_parallelism();
    if (s->nworkers < 1) s->nworkers = 1;
    s->workers = ag_calloc((size_t)s->nworkers, sizeof *s->workers);
    if (!s->workers || ag__peers_new(&s->peers) != 0) {
        ag_free(s->workers);
        ag_free(s);
        return AG_ENOMEM;
    }
    s->per_peer_cap = cfg->max_conns_per_peer ? cfg->max_conns_per_peer : 256;
    snprintf(s->hsts, sizeof s->hsts, "Strict-Transport-Security: max-age=%u\r\n",
             cfg->hsts_max_age ? cfg->hsts_max_age : 31536000u);
    *out = s;
    return 0;
}

/* A non-blocking listening socket on host:port with SO_REUSEPORT. */
static int bind_socket(const char *host, uint16_t port, struct ag_err *err, int *fd_out)
{
    struct sockaddr_storage ss;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)
        return ag_err_set(err, AG_EINVAL, "not a numeric address: %s", host);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return ag_err_set(err, AG_EIO, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    socklen_t len =
        ss.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    if (bind(fd, (struct sockaddr *)&ss, len) != 0) {
        int e = errno;
        close(fd);
        return ag_err_set(err, AG_EIO, "bind %s:%u: %s", host, port, strerror(e));
    }
    *fd_out = fd;
    return 0;
}

/* SO_REUSEPORT lets any process of the same user bind the port too, and then the
 * kernel splits connections between them without a word. Before our own sockets,
 * a plain bind (no SO_REUSEPORT) tells whether someone already listens there. */
static int probe_free(const char *host, uint16_t port, struct ag_err *err)
{
    struct sockaddr_storage ss;
    if (port == 0) return 0;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)
        return ag_err_set(err, AG_EINVAL, "not a numeric address: %s", host);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return ag_err_set(err, AG_EIO, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t len =
        ss.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    int rc = bind(fd, (struct sockaddr *)&ss, len) == 0 ? 0 : errno;
    close(fd);
    if (rc == EADDRINUSE)
        return ag_err_set(err, AG_EIO,
                          "bind %s:%u: address already in use (another process listens there)",
                          host, port);
    return rc ? ag_err_set(err, AG_EIO, "bind %s:%u: %s", host, port, strerror(rc)) : 0;
}

/* Whether a process listens on the Unix socket `path`: AG_EIO when one answers (or
 * the path is something else than a socket); a stale socket file nobody answers
 * on (left by a crash) is unlinked. */
static int unix_probe(const char *path, struct ag_err *err)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : ag_err_set(err, AG_EIO, "%s: %s", path, strerror(errno));
    if (!S_ISSOCK(st.st_mode))
        return ag_err_set(err, AG_EIO, "%s exists and is not a socket", path);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return ag_err_set(err, AG_EIO, "socket: %s", strerror(errno));
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 ? 0 : errno;
    close(fd);
    if (rc == 0 || rc == EAGAIN) /* EAGAIN: a listener whose backlog is full */
        return ag_err_set(err, AG_EIO, "%s: another process listens there", path);
    if (rc != ECONNREFUSED) return ag_err_set(err, AG_EIO, "%s: %s", path, strerror(rc));
    if (unlink(path) != 0 && errno != ENOENT)
        return ag_err_set(err, AG_EIO, "cannot remove the stale socket %s: %s", path,
                          strerror(errno));
    return 0;
}

/* The one listening Unix socket, mode 0600: only this user may connect. The mode
 * is set before listen(2), so nobody can connect through a wider umask meanwhile. */
static int bind_unix(const char *path, int backlog, struct ag_err *err, int *fd_out)
{
    int rc = unix_probe(path, err);
    if (rc) return rc;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return ag_err_set(err, AG_EIO, "socket: %s", strerror(errno));
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        close(fd);
        return ag_err_set(err, AG_EIO, "bind %s: %s", path, strerror(e));
    }
    if (chmod(path, 0600) != 0 || listen(fd, backlog) != 0) {
        int e = errno;
        close(fd);
        unlink(path);
        return ag_err_set(err, AG_EIO, "listen %s: %s", path, strerror(e));
    }
    *fd_out = fd;
    return 0;
}

static int worker_setup(struct ag_http_server *s, struct worker *w, int fd, struct ag_err *err);

/* Every worker accepts from its own dup() of the one Unix listening socket. */
static int start_unix(struct ag_http_server *s, struct ag_err *err)
{
    int fd = -1;
    int rc = bind_unix(s->unix_copy, s->cfg.backlog ? s->cfg.backlog : 1024, err, &fd);
    if (rc) return rc;
    s->unix_bound = true;
    for (int i = 0; i < s->nworkers && !rc; i++) {
        int d = i == 0 ? fd : fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (d < 0)
            rc = ag_err_set(err, AG_EIO, "dup: %s", strerror(errno));
        else
            rc = worker_setup(s, &s->workers[i], d, err);
    }
    return rc; /* fd belongs to the first worker (closed with its loop) */
}

int ag_http_listen_check(const char *host, uint16_t port, struct ag_err *err)
{
    return probe_free(host ? host : "127.0.0.1", port, err);
}

static uint16_t bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) return 0;
    if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

static int worker_setup(struct ag_http_server *s, struct worker *w, int fd, struct ag_err *err)
{
    w->srv = s;
    w->ctx.router = s->router;
    w->ctx.lim = s->lim;
    w->ctx.loop = &w->loop;
    w->ctx.server = s;
    w->ctx.hsts = s->cfg.tls ? s->hsts : NULL;
    w->ctx.free_cap = 64; /* finished requests kept hot for the next on any connection */
    ag_buf_init(&w->plain);
    uint32_t maxc = s->cfg.max_connections ? s->cfg.max_connections : 10000;
    w->max_conns = (maxc + (uint32_t)s->nworkers - 1) / (uint32_t)s->nworkers;
    if (uv_loop_init(&w->loop) != 0) {
        close(fd);
        return ag_err_set(err, AG_EIO, "uv_loop_init failed");
    }
    w->loop_ready = true;
    if (s->unix_copy[0])
        uv_pipe_init(&w->loop, &w->listener.pipe, 0);
    else
        uv_tcp_init(&w->loop, &w->listener.tcp);
    w->listener.handle.data = w;
    w->listener_open = true;
    uv_async_init(&w->loop, &w->wake, wake_cb);
    w->wake.data = w;
    uv_timer_init(&w->loop, &w->drain_timer);
    w->drain_timer.data = w;
    int rc =
        s->unix_copy[0] ? uv_pipe_open(&w->listener.pipe, fd) : uv_tcp_open(&w->listener.tcp, fd);
    if (rc == 0)
        rc = uv_listen(&w->listener.stream, s->cfg.backlog ? s->cfg.backlog : 1024, on_connection);
    if (rc != 0) return ag_err_set(err, AG_EIO, "listen: %s", uv_strerror(rc));
    return 0;
}

static void worker_main(void *arg)
{
    struct worker *w = arg;
    ag_thread_name("ag-http");
    uv_run(&w->loop, UV_RUN_DEFAULT);
    ag__http_ctx_release(&w->ctx);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    AG_UNUSED(arg);
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Close a loop that never ran (start failed) and release it. */
static void worker_abandon(struct worker *w)
{
    if (!w->loop_ready) return;
    uv_walk(&w->loop, close_walk, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_loop_close(&w->loop);
    w->loop_ready = false;
}

int ag_http_server_start(struct ag_http_server *s, struct ag_err *err)
{
    if (s->started) return ag_err_set(err, AG_EINVAL, "server already started");
    signal(SIGPIPE, SIG_IGN);
    s->refused = ag__http_observe_refused(ag__http_router_observer(s->router), "per_peer");
    uint16_t port = s->cfg.port;
    int rc = s->unix_copy[0] ? start_unix(s, err) : probe_free(s->cfg.host, port, err);
    for (int i = 0; i < s->nworkers && !rc && !s->unix_copy[0]; i++) {
        int fd = -1;
        rc = bind_socket(s->cfg.host, port, err, &fd);
        if (!rc && i == 0) port = bound_port(fd);
        if (!rc) rc = worker_setup(s, &s->workers[i], fd, err);
    }
    if (rc) {
        for (int i = 0; i < s->nworkers; i++) worker_abandon(&s->workers[i]);
        if (s->unix_bound) unlink(s->unix_copy);
        s->unix_bound = false;
        return rc;
    }
    s->port = s->unix_copy[0] ? 0 : port;
    s->started = true;
    for (int i = 0; i < s->nworkers; i++) {
        struct worker *w = &s->workers[i];
        if (uv_thread_create(&w->thread, worker_main, w) == 0) w->thread_started = true;
    }
    if (atomic_load(&s->draining)) ag_http_server_drain(s, atomic_load(&s->drain_ms));
    return 0;
}

int ag_http_server_wait(struct ag_http_server *s)
{
    for (int i = 0; i < s->nworkers; i++) {
        struct worker *w = &s->workers[i];
        if (!w->thread_started) continue;
        uv_thread_join(&w->thread);
        w->thread_started = false;
        uv_loop_close(&w->loop);
        w->loop_ready = false;
    }
    return 0;
}

void ag_http_server_free(struct ag_http_server *s)
{
    if (!s) return;
    if (s->started) {
        ag_http_server_drain(s, 0);
        ag_http_server_wait(s);
    }
    for (int i = 0; i < s->nworkers; i++) {
        worker_abandon(&s->workers[i]);
        ag__http_ctx_release(&s->workers[i].ctx); /* requests finished after the loop ended */
        ag_buf_free(&s->workers[i].plain);
    }
    if (s->unix_bound) unlink(s->unix_copy);
    ag__peers_free(s->peers);
    ag_free(s->workers);
    ag_free(s);
}

/* ---- signals ---- */

struct sigwait {
    struct ag_http_server *srv; /* the server to drain */
    uint32_t drain_ms;          /* drain timeout */
    uv_signal_t sigint;         /* SIGINT */
    uv_signal_t sigterm;        /* SIGTERM */
    uv_signal_t sighup;         /* SIGHUP: re-read the TLS certificates */
    uv_timer_t poll;            /* notices a drain started elsewhere */
};

static void sigwait_stop(struct sigwait *sw)
{
    uv_close((uv_handle_t *)&sw->sigint, NULL);
    uv_close((uv_handle_t *)&sw->sigterm, NULL);
    uv_close((uv_handle_t *)&sw->sighup, NULL);
    uv_close((uv_handle_t *)&sw->poll, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct sigwait *sw = h->data;
    AG_INFO("http server draining", AG_LI("signal", signum), AG_LU("drain_ms", sw->drain_ms));
    ag_http_server_drain(sw->srv, sw->drain_ms);
    sigwait_stop(sw);
}

static void on_sighup(uv_signal_t *h, int signum)
{
    AG_UNUSED(signum);
    struct sigwait *sw = h->data;
    struct ag_err err;
    if (ag_tls_server_reload(sw->srv->cfg.tls, &err))
        AG_WARN("SIGHUP: the certificates do not load; the running ones stay",
                AG_LS("error", err.msg));
    else
        AG_INFO("SIGHUP: certificates reloaded",
                AG_LU("reloads", ag_tls_server_reloads(sw->srv->cfg.tls)));
}

static void on_poll(uv_timer_t *t)
{
    struct sigwait *sw = t->data;
    if (ag_http_server_draining(sw->srv)) sigwait_stop(sw);
}

int ag_http_server_run_until_signal(struct ag_http_server *s, uint32_t drain_ms)
{
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) return AG_EIO;
    struct sigwait sw = {.srv = s, .drain_ms = drain_ms};
    uv_signal_init(&loop, &sw.sigint);
    uv_signal_init(&loop, &sw.sigterm);
    uv_signal_init(&loop, &sw.sighup);
    uv_timer_init(&loop, &sw.poll);
    sw.sigint.data = sw.sigterm.data = sw.sighup.data = sw.poll.data = &sw;
    uv_signal_start(&sw.sigint, on_signal, SIGINT);
    uv_signal_start(&sw.sigterm, on_signal, SIGTERM);
    if (s->cfg.tls) uv_signal_start(&sw.sighup, on_sighup, SIGHUP); /* else the default */
    uv_timer_start(&sw.poll, on_poll, 100, 100);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return ag_http_server_wait(s);
}
