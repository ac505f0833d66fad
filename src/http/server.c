/*
 * The libuv transport: worker threads, listening sockets, accepted connections.
 *
 * Workers. ag_http_server_start creates one listening socket per worker, all bound
 * to the same address with SO_REUSEPORT (the first bind picks the port when 0 was
 * asked), wraps each in a uv_tcp_t on the worker's own loop and starts the
 * worker's thread. Nothing is shared between workers but the router (read-only
 * while serving) and the metrics registry (sharded atomics).
 *
 * Connections. A struct uvconn embeds the connection state machine, its socket
 * and its timer. Reads land in one per-worker buffer and are parsed at once (what
 * the parser cannot take yet is copied by conn.c). Writes: conn->out is swapped
 * into uvconn->wbuf and written with uv_try_write, falling back to uv_write for
 * the rest; answers produced meanwhile accumulate in conn->out. The uvconn is
 * freed when both handles are closed and no request still refers to it.
 *
 * Backpressure. Each worker admits max_connections / workers connections; at the
 * limit the connection callback returns without uv_accept, which makes libuv stop
 * watching the listening socket until we accept again, so further clients wait
 * in the kernel backlog instead of being accepted and dropped.
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
#include <sys/socket.h>
#include <unistd.h>

#include "http/internal.h"

struct worker;

struct uvconn {
    struct ag__http_conn conn; /* the state machine (first: container_of is a cast) */
    uv_tcp_t tcp;              /* the socket */
    uv_timer_t timer;          /* header/body/idle deadline */
    uv_write_t wreq;           /* the write in flight */
    uv_shutdown_t sreq;        /* lingering close: our FIN */
    struct ag_buf wbuf;        /* bytes being written */
    struct worker *w;          /* owner */
    struct uvconn *prev;       /* worker's list */
    struct uvconn *next;       /* worker's list */
    int open_handles;          /* tcp + timer not yet closed */
    bool writing;              /* wreq in flight */
    bool closing;              /* uv_close called */
    bool lingering;            /* FIN sent, discarding input until EOF or timeout */
};

struct worker {
    struct ag_http_server *srv; /* owner */
    uv_loop_t loop;             /* this worker's loop */
    uv_tcp_t listener;          /* its SO_REUSEPORT socket */
    uv_async_t wake;            /* drain requests */
    uv_timer_t drain_timer;     /* force-close at the end of a drain */
    uv_thread_t thread;         /* runs the loop */
    struct ag__http_ctx ctx;    /* shared by its connections */
    struct uvconn *conns;       /* open connections */
    uint32_t nconns;            /* connections in the list */
    uint32_t max_conns;         /* admission limit */
    bool accept_waiting;        /* a connection waits for uv_accept */
    bool draining;              /* drain started on this loop */
    bool listener_open;         /* listener not closed yet */
    bool loop_ready;            /* loop initialised */
    bool thread_started;        /* thread created */
    char rbuf[64 * 1024];       /* read buffer */
};

struct ag_http_server {
    struct ag_http_server_config cfg; /* copy; host points at host_copy */
    char host_copy[64];               /* numeric address */
    struct ag_http_router *router;    /* borrowed */
    struct ag__http_limits lim;       /* resolved */
    struct worker *workers;           /* array of nworkers */
    int nworkers;                     /* worker count */
    uint16_t port;                    /* bound port */
    _Atomic bool draining;            /* drain requested */
    _Atomic uint32_t drain_ms;        /* force-close delay */
    bool started;                     /* threads running */
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
    uv_close((uv_handle_t *)&uc->tcp, uc_handle_closed);
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
    if (uv_shutdown(&uc->sreq, (uv_stream_t *)&uc->tcp, linger_shutdown_cb) != 0) {
        uc_close(c);
        return;
    }
    c->refs++;
    uv_read_start((uv_stream_t *)&uc->tcp, uc_alloc, uc_read_cb);
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

static void uc_flush(struct ag__http_conn *c)
{
    struct uvconn *uc = uc_of(c);
    if (uc->writing || uc->closing) return;
    if (c->out.len == 0) {
        if (c->close_after_flush) uc_linger(c);
        return;
    }
    struct ag_buf tmp = uc->wbuf;
    uc->wbuf = c->out;
    c->out = tmp;
    uv_buf_t b = uv_buf_init(uc->wbuf.data, (unsigned)uc->wbuf.len);
    int n = uv_try_write((uv_stream_t *)&uc->tcp, &b, 1);
    if (n == (int)b.len) {
        ag_buf_reset(&uc->wbuf);
        if (c->out.len || c->close_after_flush) uc_flush(c);
        return;
    }
    if (n < 0 && n != UV_EAGAIN) {
        uc_close(c);
        return;
    }
    if (n > 0) b = uv_buf_init(b.base + n, b.len - (unsigned)n);
    uc->wreq.data = uc;
    if (uv_write(&uc->wreq, (uv_stream_t *)&uc->tcp, &b, 1, uc_write_cb) != 0) {
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

static void uc_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct uvconn *uc = s->data;
    if (uc->lingering) {
        if (n < 0) uc_close(&uc->conn);
        return;
    }
    if (n > 0)
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
        uv_read_start((uv_stream_t *)&uc->tcp, uc_alloc, uc_read_cb);
    else
        uv_read_stop((uv_stream_t *)&uc->tcp);
}

static uint64_t uc_now(struct ag__http_conn *c)
{
    return uv_now(&uc_of(c)->w->loop);
}

static void uc_release(struct ag__http_conn *c)
{
    struct uvconn *uc = uc_of(c);
    ag_buf_free(&uc->wbuf);
    ag_free(uc);
}

static const struct ag__http_io uv_io = {
    .flush = uc_flush,
    .close = uc_close,
    .set_timer = uc_set_timer,
    .read = uc_read,
    .now_ms = uc_now,
    .release = uc_release,
};

/* ---- accepting ---- */

static void format_peer(struct uvconn *uc)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&uc->tcp, (struct sockaddr *)&ss, &len) == 0) {
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
}

static void accept_one(struct worker *w)
{
    w->accept_waiting = false;
    struct uvconn *uc = ag_calloc(1, sizeof *uc);
    if (!uc) {
        w->accept_waiting = true; /* retry when a connection closes */
        return;
    }
    uv_tcp_init(&w->loop, &uc->tcp);
    uv_timer_init(&w->loop, &uc->timer);
    uc->tcp.data = uc->timer.data = uc;
    uc->w = w;
    uc->open_handles = 2;
    ag__http_conn_init(&uc->conn, &w->ctx, &uv_io);
    uc->next = w->conns;
    if (w->conns) w->conns->prev = uc;
    w->conns = uc;
    w->nconns++;
    if (uv_accept((uv_stream_t *)&w->listener, (uv_stream_t *)&uc->tcp) != 0) {
        uc_close(&uc->conn);
        return;
    }
    uv_tcp_nodelay(&uc->tcp, 1);
    format_peer(uc);
    uc_set_timer(&uc->conn, w->ctx.lim.header_timeout_ms);
    uc->conn.armed_ms = uc->conn.idle_deadline_ms;
    uv_read_start((uv_stream_t *)&uc->tcp, uc_alloc, uc_read_cb);
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
        uv_close((uv_handle_t *)&w->listener, NULL);
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
    s->router = router;
    ag__http_limits_from(cfg, &s->lim);
    s->nworkers = cfg->workers > 0 ? cfg->workers : (int)uv_available_parallelism();
    if (s->nworkers < 1) s->nworkers = 1;
    s->workers = ag_calloc((size_t)s->nworkers, sizeof *s->workers);
    if (!s->workers) {
        ag_free(s);
        return AG_ENOMEM;
    }
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
    uint32_t maxc = s->cfg.max_connections ? s->cfg.max_connections : 10000;
    w->max_conns = (maxc + (uint32_t)s->nworkers - 1) / (uint32_t)s->nworkers;
    if (uv_loop_init(&w->loop) != 0) {
        close(fd);
        return ag_err_set(err, AG_EIO, "uv_loop_init failed");
    }
    w->loop_ready = true;
    uv_tcp_init(&w->loop, &w->listener);
    w->listener.data = w;
    w->listener_open = true;
    uv_async_init(&w->loop, &w->wake, wake_cb);
    w->wake.data = w;
    uv_timer_init(&w->loop, &w->drain_timer);
    w->drain_timer.data = w;
    int rc = uv_tcp_open(&w->listener, fd);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&w->listener, s->cfg.backlog ? s->cfg.backlog : 1024,
                       on_connection);
    if (rc != 0) return ag_err_set(err, AG_EIO, "listen: %s", uv_strerror(rc));
    return 0;
}

static void worker_main(void *arg)
{
    struct worker *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
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
    uint16_t port = s->cfg.port;
    int rc = probe_free(s->cfg.host, port, err);
    for (int i = 0; i < s->nworkers && !rc; i++) {
        int fd = -1;
        rc = bind_socket(s->cfg.host, port, err, &fd);
        if (!rc && i == 0) port = bound_port(fd);
        if (!rc) rc = worker_setup(s, &s->workers[i], fd, err);
    }
    if (rc) {
        for (int i = 0; i < s->nworkers; i++) worker_abandon(&s->workers[i]);
        return rc;
    }
    s->port = port;
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
    for (int i = 0; i < s->nworkers; i++) worker_abandon(&s->workers[i]);
    ag_free(s->workers);
    ag_free(s);
}

/* ---- signals ---- */

struct sigwait {
    struct ag_http_server *srv; /* the server to drain */
    uint32_t drain_ms;          /* drain timeout */
    uv_signal_t sigint;         /* SIGINT */
    uv_signal_t sigterm;        /* SIGTERM */
    uv_timer_t poll;            /* notices a drain started elsewhere */
};

static void sigwait_stop(struct sigwait *sw)
{
    uv_close((uv_handle_t *)&sw->sigint, NULL);
    uv_close((uv_handle_t *)&sw->sigterm, NULL);
    uv_close((uv_handle_t *)&sw->poll, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct sigwait *sw = h->data;
    AG_INFO("http server draining", AG_LI("signal", signum), AG_LU("drain_ms", sw->drain_ms));
    ag_http_server_drain(sw->srv, sw->drain_ms);
    sigwait_stop(sw);
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
    uv_timer_init(&loop, &sw.poll);
    sw.sigint.data = sw.sigterm.data = sw.poll.data = &sw;
    uv_signal_start(&sw.sigint, on_signal, SIGINT);
    uv_signal_start(&sw.sigterm, on_signal, SIGTERM);
    uv_timer_start(&sw.poll, on_poll, 100, 100);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return ag_http_server_wait(s);
}
