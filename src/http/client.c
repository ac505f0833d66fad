/*
 * The HTTP/1.1 client: a connection pool to one upstream on one loop.
 *
 * Requests. A submitted request is serialized at once (so the caller's buffers
 * are free on return) and either given to an idle connection, to a new
 * connection when fewer than max_connections are open, or queued (at most
 * max_pending). One request at a time per connection (no client pipelining:
 * a failed pipelined request cannot be retried safely). Idle connections are
 * a stack (most recently used first, like nginx's keep-alive cache): taking
 * one costs no walk over the busy ones, and the least used go idle long
 * enough for the idle timeout to close them.
 *
 * Deadlines. A request's deadline runs from submit. While queued, the pool timer
 * watches min(deadline, pool timeout): the first to pass fails the request with
 * AG_ETIMEDOUT or AG_EPOOL_TIMEOUT. On a connection, the connection's timer
 * watches the connect timeout (AG_ECONNECT), the deadline (AG_ETIMEDOUT) and,
 * when idle, the idle timeout (the connection is closed). It is re-armed only
 * for a deadline earlier than the one it is armed for; firing early, it finds
 * the state's deadline (conn_deadline) not passed and arms that instead.
 *
 * Failures. Connect errors are AG_ECONNECT; EOF or reset before the response is
 * complete is AG_ERESET; a malformed response is AG_EPROTOCOL; an oversized body
 * AG_ETOOBIG. A reused keep-alive connection that the upstream closed just as we
 * sent (EOF before any response byte) is retried once on a fresh connection for
 * idempotent methods: that race is normal with keep-alive, not an upstream fault.
 *
 * Writes. A request is written with uv_try_write first; only what the socket
 * does not take at once goes through a uv_write_t (a uv_write that completes
 * still costs a pending-phase callback and an epoll_ctl re-arm per request).
 * A connection is reused only after that write callback has run, never
 * merely because the response is complete: the uv_write_t (and the request's
 * bytes) belong to libuv until then. libuv runs write callbacks in the next loop
 * iteration's pending phase, but one poll phase can read the answer to a write
 * made in the same phase: when epoll returns a full batch (1024 events, e.g. a
 * loop resuming after a long stall with thousands of ready sockets) libuv polls
 * again at once before running pending callbacks. Reusing the connection then
 * re-submitted the uv_write_t still linked in the stream's completed-write
 * queue, which corrupted that queue and made libuv free() a garbage pointer
 * (the crash after a 20 s SIGSTOP under load).
 *
 * Transport. TCP to a numeric address, or a Unix-domain socket when the host is
 * "unix:/abs/path" (uv_pipe_connect; Host: localhost); everything above the
 * socket (pooling, deadlines, retries) is the same. With cfg.tls a connection
 * carries a TLS session (tls.c): the request is encrypted into the session's
 * wire buffer (held until the handshake completes) and written from tls_out;
 * reads are decrypted before the response parser. The handshake runs inside the
 * request's deadline; a refused certificate is AG_ECONNECT.
 *
 * Lifetime. Connections and the pool are freed only in libuv close callbacks;
 * the pool goes once its timer and every connection are closed.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http/internal.h"

struct creq {
    struct creq *next;         /* wait queue */
    struct ag_buf wire;        /* serialized request */
    ag_http_client_cb cb;      /* completion */
    void *ud;                  /* borrowed */
    uint64_t deadline_ms;      /* loop time when AG_ETIMEDOUT */
    uint64_t pool_deadline_ms; /* loop time when AG_EPOOL_TIMEOUT (while queued) */
    bool idempotent;           /* safe to retry on a stale connection */
    bool head;                 /* HEAD: no response body */
    int attempts;              /* sends so far */
    /* streamed answer (ag_http_client_req.stream_type) */
    char stream_type[64];                              /* "" = never stream */
    uint32_t stream_idle_ms;                           /* idle deadline once streaming */
    int (*on_data)(const char *, size_t, int, void *); /* body pieces, then the end */
    void *stream_ud;                                   /* its user data */
    bool streaming;                                    /* the headers said: stream */
    bool started;                                      /* the completion ran */
    bool cancelled;                                    /* on_data asked to stop */
};

enum cstate { CS_CONNECTING, CS_BUSY, CS_IDLE, CS_CLOSING };

struct cconn {
    struct ag_http_upstream *u; /* owner */
    struct cconn *next;         /* pool list */
    struct cconn *idle_next;    /* the pool's idle stack (while CS_IDLE) */
    union {
        uv_tcp_t tcp;             /* TCP */
        uv_pipe_t pipe;           /* Unix-domain socket */
        uv_stream_t stream;       /* either, as a stream */
        uv_handle_t handle;       /* either, as a handle */
    } sock;                       /* the connection's socket */
    uv_connect_t creq;            /* connect request */
    uv_timer_t timer;             /* connect / deadline / idle */
    uv_write_t wreq;              /* write in flight */
    http_parser parser;           /* response parser */
    enum cstate state;            /* where the connection is */
    struct creq *req;             /* request in flight */
    uint32_t served;              /* requests completed on this connection */
    bool reused;                  /* req was sent on a connection that served before */
    bool got_bytes;               /* response bytes seen for req */
    bool complete;                /* response complete */
    bool keep;                    /* response allows keep-alive */
    int fail;                     /* error chosen in a parser callback */
    int status;                   /* response status */
    struct ag_buf hdrs;           /* name NUL value NUL ... */
    size_t nhdrs;                 /* headers in hdrs */
    bool in_value;                /* last header callback was a value */
    struct ag_buf body;           /* response body */
    int open_handles;             /* tcp + timer */
    uint64_t armed_ms;            /* loop time the timer fires (0: not armed) */
    uint64_t idle_deadline_ms;    /* CS_IDLE: loop time the connection closes */
    uint64_t connect_deadline_ms; /* CS_CONNECTING: loop time the connect fails */
    bool writing;                 /* wreq queued: its callback has not run yet */
    struct ag__tls *tls;          /* TLS session (cfg.tls); NULL = plain */
    struct ag_buf tls_out;        /* ciphertext being written through wreq */
    struct ag_buf plain;          /* plaintext of one TLS read */
};

struct ag_http_upstream {
    uv_loop_t *loop;                    /* borrowed */
    struct ag_http_upstream_config cfg; /* resolved copy; host -> host_copy */
    char host_copy[AG_HTTP_HOST_MAX];   /* numeric address or "unix:/path" */
    char host_header[80];               /* "host:port", "localhost" on a Unix socket */
    const char *unix_path;              /* into host_copy; NULL = TCP */
    struct sockaddr_storage addr;       /* resolved address */
    struct cconn *conns;                /* open connections */
    uint32_t nconns;                    /* in the list */
    struct cconn *idle;                 /* idle connections, most recently used first */
    struct creq *wq_head;               /* waiting requests, oldest first */
    struct creq *wq_tail;               /* newest */
    uint32_t nwaiting;                  /* in the queue */
    uv_timer_t pool_timer;              /* queue deadlines */
    bool closing;                       /* ag_http_upstream_close called */
    int open_handles;                   /* pool_timer + connections */
    uint64_t connects;                  /* statistics */
    uint64_t reused;                    /* statistics */
};

static const http_parser_settings resp_settings;
static void service_queue(struct ag_http_upstream *u);
static void conn_start(struct cconn *c, struct creq *r);

/* ---- requests ---- */

static void creq_finish(struct creq *r, int rc, const struct ag_http_client_resp *resp)
{
    if (!r->started)
        r->cb(rc, resp, r->ud);
    else if (!r->cancelled) /* a stream: its end */
        r->on_data(NULL, 0, rc ? rc : 0, r->stream_ud);
    ag_buf_free(&r->wire);
    ag_free(r);
}

static bool token_ok(const char *s)
{
    if (!s || !*s) return false;
    for (; *s; s++)
        if (!ag__http_tchar((unsigned char)*s)) return false;
    return true;
}

static bool value_ok(const char *s)
{
    return s && !strpbrk(s, "\r\n");
}

static bool path_ok(const char *s)
{
    if (!s || s[0] != '/') return false;
    for (; *s; s++)
        if ((unsigned char)*s <= 32 || (unsigned char)*s == 127) return false;
    return true;
}

/* Copy s to *o and move *o past it (the room was reserved). */
static void put(char **o, const char *s, size_t n)
{
    memcpy(*o, s, n);
    *o += n;
}

/* "name: value\r\n" at *o (serialize reserved the room). */
static void put_header_n(char **o, const char *name, size_t nl, const char *value, size_t vl)
{
    put(o, name, nl);
    put(o, ": ", 2);
    put(o, value, vl);
    put(o, "\r\n", 2);
}

static void put_header(char **o, const char *name, const char *value)
{
    put_header_n(o, name, strlen(name), value, strlen(value));
}

/* The lengths of one request header's name and value (validate measures them). */
struct hlen {
    size_t name, value;
};

/* The request on the wire. Sized first (validate measured the headers: hl,
 * *need) and reserved once, then copied in without formatting or per-piece
 * buffer calls (the proxy's hot path). */
static int serialize(struct ag_http_upstream *u, const struct ag_http_client_req *q,
                     const struct hlen *hl, size_t need, struct ag_buf *w)
{
    bool has_body = q->body_len || strcmp(q->method, "POST") == 0 ||
                    strcmp(q->method, "PUT") == 0 || strcmp(q->method, "PATCH") == 0;
    size_t ml = strlen(q->method), pl = strlen(q->path);
    need += ml + pl + strlen(u->host_header) + 64 +
            (q->request_id ? strlen(q->request_id) + 16 : 0) + strlen(q->traceparent) + 16 +
            q->body_len;
    int rc = ag_buf_reserve(w, need);
    if (rc) return rc;
    char *o = w->data + w->len;
    put(&o, q->method, ml);
    put(&o, " ", 1);
    put(&o, q->path, pl);
    put(&o, " HTTP/1.1\r\n", 11);
    put_header(&o, "Host", u->host_header);
    for (size_t i = 0; i < q->nheaders; i++)
        put_header_n(&o, q->headers[i].name, hl[i].name, q->headers[i].value, hl[i].value);
    if (q->request_id) put_header(&o, "X-Request-ID", q->request_id);
    if (q->traceparent[0]) put_header(&o, "traceparent", q->traceparent);
    if (has_body) {
        char len[24], *p = len + sizeof len;
        size_t v = q->body_len;
        *--p = '\0';
        do *--p = (char)('0' + v % 10);
        while ((v /= 10) != 0);
        put_header(&o, "Content-Length", p);
    }
    put(&o, "\r\n", 2);
    if (q->body_len) put(&o, q->body, q->body_len);
    w->len = (size_t)(o - w->data);
    w->data[w->len] = '\0';
    return 0;
}

/* Check q; measure each header into hl[] and their wire bytes into *need (one
 * pass: serialize does not measure them again). */
static int validate(const struct ag_http_client_req *q, struct hlen *hl, size_t *need)
{
    if (!token_ok(q->method) || !path_ok(q->path) || (q->body_len && !q->body)) return AG_EINVAL;
    if (q->request_id && !ag_obs_request_id_valid(q->request_id, strlen(q->request_id)))
        return AG_EINVAL;
    if (!value_ok(q->traceparent)) return AG_EINVAL;
    *need = 0;
    for (size_t i = 0; i < q->nheaders; i++) {
        const char *n = q->headers[i].name, *v = q->headers[i].value;
        size_t nl = 0;
        if (!n || !v || !*n) return AG_EINVAL;
        for (; n[nl]; nl++)
            if (!ag__http_tchar((unsigned char)n[nl])) return AG_EINVAL;
        size_t vl = strcspn(v, "\r\n");
        if (v[vl]) return AG_EINVAL;
        if (AG__HTTP_NAME_IS(n, nl, "content-length") ||
            AG__HTTP_NAME_IS(n, nl, "transfer-encoding") || AG__HTTP_NAME_IS(n, nl, "host"))
            return AG_EINVAL;
        hl[i] = (struct hlen){nl, vl};
        *need += nl + vl + 4;
    }
    return 0;
}

/* ---- pool queue ---- */

static void queue_push(struct ag_http_upstream *u, struct creq *r, bool front)
{
    r->next = NULL;
    if (!u->wq_head)
        u->wq_head = u->wq_tail = r;
    else if (front)
        r->next = u->wq_head, u->wq_head = r;
    else
        u->wq_tail->next = r, u->wq_tail = r;
    u->nwaiting++;
}

static struct creq *queue_pop(struct ag_http_upstream *u)
{
    struct creq *r = u->wq_head;
    if (!r) return NULL;
    u->wq_head = r->next;
    if (!u->wq_head) u->wq_tail = NULL;
    u->nwaiting--;
    r->next = NULL;
    return r;
}

static void pool_timer_cb(uv_timer_t *t);

static void arm_pool_timer(struct ag_http_upstream *u)
{
    uint64_t next = 0;
    for (struct creq *r = u->wq_head; r; r = r->next) {
        uint64_t d = AG_MIN(r->deadline_ms, r->pool_deadline_ms);
        if (!next || d < next) next = d;
    }
    if (!next || u->closing) {
        uv_timer_stop(&u->pool_timer);
        return;
    }
    uint64_t now = uv_now(u->loop);
    uv_timer_start(&u->pool_timer, pool_timer_cb, next > now ? next - now : 0, 0);
}

static void pool_timer_cb(uv_timer_t *t)
{
    struct ag_http_upstream *u = t->data;
    uint64_t now = uv_now(u->loop);
    struct creq **pp = &u->wq_head, *expired = NULL;
    u->wq_tail = NULL;
    while (*pp) {
        struct creq *r = *pp;
        if (now >= r->deadline_ms || now >= r->pool_deadline_ms) {
            *pp = r->next;
            u->nwaiting--;
            r->next = expired;
            expired = r;
        } else {
            u->wq_tail = r;
            pp = &r->next;
        }
    }
    arm_pool_timer(u);
    while (expired) {
        struct creq *r = expired;
        expired = r->next;
        creq_finish(r, now >= r->deadline_ms ? AG_ETIMEDOUT : AG_EPOOL_TIMEOUT, NULL);
    }
}

/* ---- connections ---- */

static void maybe_free_upstream(struct ag_http_upstream *u)
{
    if (u->closing && u->open_handles == 0) ag_free(u);
}

static void conn_handle_closed(uv_handle_t *h)
{
    struct cconn *c = h->data;
    if (--c->open_handles > 0) return;
    struct ag_http_upstream *u = c->u;
    ag_buf_free(&c->hdrs);
    ag_buf_free(&c->body);
    ag__tls_free(c->tls);
    ag_buf_free(&c->tls_out);
    ag_buf_free(&c->plain);
    ag_free(c);
    u->open_handles--;
    maybe_free_upstream(u);
}

static void idle_remove(struct ag_http_upstream *u, struct cconn *c)
{
    for (struct cconn **pp = &u->idle; *pp; pp = &(*pp)->idle_next) {
        if (*pp == c) {
            *pp = c->idle_next;
            break;
        }
    }
    c->idle_next = NULL;
}

/* The most recently used idle connection whose last write has completed (see
 * Writes above), taken off the idle stack; NULL when none. */
static struct cconn *idle_pop(struct ag_http_upstream *u)
{
    struct cconn **pp = &u->idle;
    while (*pp && (*pp)->writing) pp = &(*pp)->idle_next;
    struct cconn *c = *pp;
    if (c) *pp = c->idle_next, c->idle_next = NULL;
    return c;
}

static void conn_close(struct cconn *c)
{
    if (c->state == CS_CLOSING) return;
    struct ag_http_upstream *u = c->u;
    if (c->state == CS_IDLE) idle_remove(u, c);
    for (struct cconn **pp = &u->conns; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            u->nconns--;
            break;
        }
    }
    c->state = CS_CLOSING;
    uv_close(&c->sock.handle, conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

/* Fail (or retry) the request in flight and close the connection. */
static void conn_fail(struct cconn *c, int rc)
{
    struct creq *r = c->req;
    struct ag_http_upstream *u = c->u;
    c->req = NULL;
    conn_close(c);
    if (!r) return;
    bool stale = rc == AG_ERESET && c->reused && !c->got_bytes && r->idempotent && r->attempts < 2;
    if (stale && !u->closing && uv_now(u->loop) < r->deadline_ms) {
        queue_push(u, r, true);
        service_queue(u);
        return;
    }
    creq_finish(r, rc, NULL);
    if (!u->closing) service_queue(u);
}

static void arm_conn_timer(struct cconn *c, uint64_t at);

/* The deadline that matters in the connection's state (0: none). */
static uint64_t conn_deadline(const struct cconn *c)
{
    switch (c->state) {
    case CS_IDLE:
        return c->idle_deadline_ms;
    case CS_CONNECTING:
        return c->req ? AG_MIN(c->req->deadline_ms, c->connect_deadline_ms)
                      : c->connect_deadline_ms;
    case CS_BUSY:
        return c->req ? c->req->deadline_ms : 0;
    default:
        return 0;
    }
}

static void conn_timer_cb(uv_timer_t *t)
{
    struct cconn *c = t->data;
    uint64_t now = uv_now(c->u->loop), dl = conn_deadline(c);
    c->armed_ms = 0;
    if (dl && now < dl) { /* armed for an earlier deadline that has moved on */
        arm_conn_timer(c, dl);
        return;
    }
    if (c->state == CS_IDLE) {
        conn_close(c);
        return;
    }
    bool connect_timeout = c->state == CS_CONNECTING && (!c->req || now < c->req->deadline_ms);
    conn_fail(c, connect_timeout ? AG_ECONNECT : AG_ETIMEDOUT);
}

/* Make sure the timer fires by `at`. Lazy: a timer already armed for an
 * earlier time stays (it re-checks when it fires), so a busy keep-alive
 * connection costs no timer work per request. */
static void arm_conn_timer(struct cconn *c, uint64_t at)
{
    if (c->armed_ms && c->armed_ms <= at) return;
    uint64_t now = uv_now(c->u->loop);
    c->armed_ms = at;
    uv_timer_start(&c->timer, conn_timer_cb, at > now ? at - now : 0, 0);
}

static void reset_response(struct cconn *c)
{
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    ag_buf_reset(&c->hdrs);
    ag_buf_reset(&c->body);
    c->nhdrs = 0;
    c->in_value = false;
    c->got_bytes = c->complete = c->keep = false;
    c->fail = 0;
    c->status = 0;
}

/* The response headers as an array: `few` when they fit, else allocated (NULL
 * when that fails); the caller frees one that is not `few`. */
static struct ag_http_header *headers_of(struct cconn *c, struct ag_http_header *few, size_t nfew)
{
    struct ag_http_header *hv = c->nhdrs <= nfew ? few : ag_calloc(c->nhdrs, sizeof *hv);
    if (!hv) return NULL;
    const char *p = c->hdrs.data;
    for (size_t i = 0; i < c->nhdrs; i++) {
        hv[i].name = p;
        p += strlen(p) + 1;
        hv[i].value = p;
        p += strlen(p) + 1;
    }
    return hv;
}

/* A streamed answer: run the completion at the headers, then hand on the body
 * read so far. false when the stream stopped (cancelled, closed, failed). */
static bool stream_pass(struct cconn *c)
{
    struct creq *r = c->req;
    if (!r->started) {
        struct ag_http_header few[32];
        struct ag_http_header *hv = headers_of(c, few, AG_ARRAY_SIZE(few));
        if (!hv) {
            conn_fail(c, AG_ENOMEM);
            return false;
        }
        struct ag_http_client_resp resp = {
            c->status, hv, c->nhdrs, "", 0, true, (struct ag_http_upstream_stream *)c};
        r->started = true;
        r->cb(0, &resp, r->ud);
        if (hv != few) ag_free(hv);
        if (c->state != CS_BUSY || c->req != r) return false;
    }
    if (c->body.len) {
        int stop = r->on_data(c->body.data, c->body.len, 0, r->stream_ud);
        ag_buf_reset(&c->body);
        if (c->state != CS_BUSY || c->req != r) return false;
        if (stop) {
            r->cancelled = true;
            conn_fail(c, AG_ECANCELED);
            return false;
        }
    }
    r->deadline_ms = uv_now(c->u->loop) + r->stream_idle_ms; /* idle, from now on */
    arm_conn_timer(c, r->deadline_ms);
    return true;
}

/* Deliver the complete response (`given` by the fast path, else the parsed
 * one), then reuse or close the connection. */
static void conn_deliver(struct cconn *c, const struct ag_http_client_resp *given)
{
    struct ag_http_upstream *u = c->u;
    struct creq *r = c->req;
    if (!r) return;
    c->req = NULL;
    c->served++;
    struct ag_http_header few[32]; /* most answers: no allocation */
    struct ag_http_header *hv = r->started || given ? few : headers_of(c, few, AG_ARRAY_SIZE(few));
    if (!hv) {
        creq_finish(r, AG_ENOMEM, NULL);
        conn_close(c);
        if (!u->closing) service_queue(u);
        return;
    }
    struct ag_http_client_resp resp = {c->status, hv, c->nhdrs, c->body.data ? c->body.data : "",
                                       c->body.len};
    bool keep =
        c->keep && (!u->cfg.max_requests_per_conn || c->served < u->cfg.max_requests_per_conn);
    /* Answered before the whole request left (an early answer to a large body):
     * libuv still reads r->wire, freed below, so the connection cannot live on. */
    if (c->writing && uv_stream_get_write_queue_size(&c->sock.stream) > 0) keep = false;
    creq_finish(r, 0, given ? given : &resp);
    if (hv != few) ag_free(hv);
    if (c->state == CS_CLOSING) return; /* the callback closed the pool */
    if (!keep || u->closing) {
        conn_close(c);
    } else {
        c->state = CS_IDLE;
        c->idle_next = u->idle;
        u->idle = c;
        reset_response(c);
        c->idle_deadline_ms = uv_now(u->loop) + u->cfg.idle_timeout_ms;
        arm_conn_timer(c, c->idle_deadline_ms);
    }
    if (!u->closing) service_queue(u);
}

/* One read buffer per thread: a read is parsed (headers and body copied out) in
 * its callback, before the loop can read anything else. */
static _Thread_local char conn_rbuf[64 * 1024];

static void conn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    AG_UNUSED(h);
    AG_UNUSED(hint);
    *b = uv_buf_init(conn_rbuf, sizeof conn_rbuf);
}

static void conn_write_cb(uv_write_t *w, int status);

/* Write the ciphertext TLS has produced (handshake, records); one uv_write at a
 * time, the write callback sends what piled up meanwhile. */
static int conn_tls_flush(struct cconn *c)
{
    struct ag_buf *w = ag__tls_wire(c->tls);
    if (c->writing || !w->len) return 0;
    struct ag_buf tmp = c->tls_out;
    c->tls_out = *w;
    *w = tmp;
    ag_buf_reset(w);
    uv_buf_t b = uv_buf_init(c->tls_out.data, (unsigned)c->tls_out.len);
    int n = uv_try_write(&c->sock.stream, &b, 1);
    if (n == (int)b.len) {
        ag_buf_reset(&c->tls_out);
        return 0;
    }
    if (n < 0 && n != UV_EAGAIN) return n;
    if (n > 0) b = uv_buf_init(b.base + n, b.len - (unsigned)n);
    c->wreq.data = c;
    int rc = uv_write(&c->wreq, &c->sock.stream, &b, 1, conn_write_cb);
    if (!rc) c->writing = true;
    return rc;
}

static void conn_input(struct cconn *c, ssize_t n, char *base, size_t cap);

static void conn_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct cconn *c = s->data;
    if (!c->tls || n <= 0) {
        conn_input(c, n, buf->base, buf->len);
        return;
    }
    /* TLS: decrypt, hand the plaintext on, send what the handshake owes. A failed
     * handshake or verification before any answer is a connect failure. */
    ag_buf_reset(&c->plain);
    int rc = ag__tls_read(c->tls, buf->base, (size_t)n, &c->plain);
    if (c->plain.len) conn_input(c, (ssize_t)c->plain.len, c->plain.data, c->plain.cap);
    if (c->state == CS_CLOSING) return;
    if (rc == AG_ECLOSED)
        conn_input(c, UV_EOF, NULL, 0);
    else if (rc)
        conn_fail(c, c->got_bytes || ag__tls_ready(c->tls) ? AG_ERESET : AG_ECONNECT);
    else if (conn_tls_flush(c) != 0)
        conn_fail(c, AG_ERESET);
}

/* Whether a response to r is streamed (on_rheaders_complete's rule): a 2xx
 * whose Content-Type starts with the stream type the request asked for. */
static bool streams(const struct creq *r, int status, const char *b, const struct ag__hdr *h,
                    size_t n)
{
    if (!r->stream_type[0] || status < 200 || status >= 300) return false;
    size_t tl = strlen(r->stream_type);
    for (size_t i = 0; i < n; i++)
        if (h[i].name_len == 12 && !strncasecmp(b + h[i].name, "content-type", 12) &&
            h[i].value_len >= tl && !strncasecmp(b + h[i].value, r->stream_type, tl))
            return true;
    return false;
}

/* The fast path (fastparse.c): a whole response in this one read, framed by
 * Content-Length, to a request that is not HEAD, and not streamed. Its
 * headers and body are handed on from the read buffer itself, with NULs
 * written over each colon and CR and after the body (cap > n leaves room),
 * valid during the completion like the parsed ones. false: http-parser parses
 * the read (declined, incomplete, more than the response, too big). */
static bool fast_response(struct cconn *c, char *b, size_t n, size_t cap)
{
    struct creq *r = c->req;
    struct ag__hdr h[32];
    struct ag__fp m;
    if (!r || r->head || cap <= n || !ag__fp_response(b, n, &m, h, AG_ARRAY_SIZE(h)) ||
        (uint64_t)m.content_length != n - m.head_len ||
        (uint64_t)m.content_length > c->u->cfg.max_response_bytes ||
        streams(r, m.status, b, h, m.nhdrs))
        return false;
    struct ag_http_header hv[AG_ARRAY_SIZE(h)];
    for (size_t i = 0; i < m.nhdrs; i++) {
        b[h[i].name + h[i].name_len] = '\0';
        b[h[i].value + h[i].value_len] = '\0';
        hv[i] = (struct ag_http_header){b + h[i].name, b + h[i].value};
    }
    b[n] = '\0';
    c->got_bytes = c->complete = true;
    c->status = m.status;
    c->keep = !m.close;
    struct ag_http_client_resp resp = {m.status, hv, m.nhdrs, b + m.head_len, n - m.head_len};
    conn_deliver(c, &resp);
    return true;
}

static void conn_input(struct cconn *c, ssize_t n, char *base, size_t cap)
{
    if (c->state == CS_IDLE && n != 0) {
        conn_close(c); /* EOF, error or unsolicited bytes on an idle connection */
    } else if (c->state == CS_BUSY && n > 0) {
        if (!c->got_bytes && fast_response(c, base, (size_t)n, cap)) return;
        c->got_bytes = true;
        size_t used = http_parser_execute(&c->parser, &resp_settings, base, (size_t)n);
        if (c->req && c->req->streaming && !c->fail && !stream_pass(c)) return;
        if (c->complete)
            conn_deliver(c, NULL);
        else if (c->fail || HTTP_PARSER_ERRNO(&c->parser) != HPE_OK || used != (size_t)n)
            conn_fail(c, c->fail ? c->fail : AG_EPROTOCOL);
    } else if (c->state == CS_BUSY && n < 0) {
        if (n == UV_EOF && c->got_bytes) http_parser_execute(&c->parser, &resp_settings, NULL, 0);
        if (c->complete)
            conn_deliver(c, NULL);
        else
            conn_fail(c, AG_ERESET);
    }
}

static void conn_write_cb(uv_write_t *w, int status)
{
    struct cconn *c = w->data;
    c->writing = false;
    if (c->tls) {
        ag_buf_reset(&c->tls_out);
        if (status >= 0 && c->state != CS_CLOSING && conn_tls_flush(c) != 0) status = UV_EPIPE;
    }
    if (status < 0 && c->state == CS_BUSY) {
        conn_fail(c, AG_ERESET);
    } else if (c->state == CS_IDLE && c->u->wq_head && !c->u->closing) {
        service_queue(c->u); /* the connection has become reusable */
    }
}

static void conn_send(struct cconn *c)
{
    struct creq *r = c->req;
    c->state = CS_BUSY;
    r->attempts++;
    reset_response(c);
    c->got_bytes = false;
    arm_conn_timer(c, r->deadline_ms);
    if (c->tls) { /* encrypted into the session's wire buffer (held until the handshake ends) */
        int rc = ag__tls_write(c->tls, r->wire.data, r->wire.len) ? UV_ENOMEM : conn_tls_flush(c);
        if (!rc) rc = uv_read_start(&c->sock.stream, conn_alloc, conn_read_cb);
        if (rc && rc != UV_EALREADY) conn_fail(c, AG_ERESET);
        return;
    }
    uv_buf_t b = uv_buf_init(r->wire.data, (unsigned)r->wire.len);
    /* Try the write ourselves first: when the socket takes it all (nearly always)
     * no uv_write_t is queued, so no write callback and no epoll_ctl re-arm. */
    int n = uv_try_write(&c->sock.stream, &b, 1);
    int rc = n < 0 && n != UV_EAGAIN ? n : 0;
    if (!rc && n != (int)b.len) {
        if (n > 0) b = uv_buf_init(b.base + n, b.len - (unsigned)n);
        c->wreq.data = c;
        rc = uv_write(&c->wreq, &c->sock.stream, &b, 1, conn_write_cb);
        if (!rc) c->writing = true;
    }
    if (!rc) rc = uv_read_start(&c->sock.stream, conn_alloc, conn_read_cb);
    if (rc && rc != UV_EALREADY) conn_fail(c, AG_ERESET);
}

static void conn_connect_cb(uv_connect_t *cr, int status)
{
    struct cconn *c = cr->data;
    if (c->state == CS_CLOSING) return;
    if (status < 0) {
        conn_fail(c, AG_ECONNECT);
        return;
    }
    if (!c->u->unix_path) uv_tcp_nodelay(&c->sock.tcp, 1);
    if (c->u->cfg.tls && ag__tls_client_conn(c->u->cfg.tls, c->u->host_copy, &c->tls) != 0) {
        conn_fail(c, AG_ECONNECT);
        return;
    }
    conn_send(c);
}

/* Open a new connection for r. */
static void conn_start(struct cconn *c, struct creq *r)
{
    struct ag_http_upstream *u = c->u;
    c->req = r;
    c->reused = false;
    c->state = CS_CONNECTING;
    if (u->unix_path)
        uv_pipe_init(u->loop, &c->sock.pipe, 0);
    else
        uv_tcp_init(u->loop, &c->sock.tcp);
    uv_timer_init(u->loop, &c->timer);
    c->sock.handle.data = c->timer.data = c->creq.data = c;
    c->open_handles = 2;
    u->open_handles++;
    c->next = u->conns;
    u->conns = c;
    u->nconns++;
    u->connects++;
    c->connect_deadline_ms = uv_now(u->loop) + u->cfg.connect_timeout_ms;
    arm_conn_timer(c, AG_MIN(r->deadline_ms, c->connect_deadline_ms));
    if (u->unix_path) /* reports every error through the callback */
        uv_pipe_connect(&c->creq, &c->sock.pipe, u->unix_path, conn_connect_cb);
    else if (uv_tcp_connect(&c->creq, &c->sock.tcp, (struct sockaddr *)&u->addr, conn_connect_cb) !=
             0)
        conn_fail(c, AG_ECONNECT);
}

/* Give queued requests to idle connections or new ones while allowed. */
static void service_queue(struct ag_http_upstream *u)
{
    while (u->wq_head && !u->closing) {
        struct cconn *idle = idle_pop(u);
        if (idle) {
            idle->req = queue_pop(u);
            idle->reused = true;
            u->reused++;
            conn_send(idle);
            continue;
        }
        if (u->nconns >= u->cfg.max_connections) break;
        struct cconn *c = ag_calloc(1, sizeof *c);
        if (!c) break;
        c->u = u;
        conn_start(c, queue_pop(u));
    }
    arm_pool_timer(u);
}

/* ---- response parsing ---- */

static int on_status_done(http_parser *p)
{
    struct cconn *c = p->data;
    c->status = p->status_code;
    c->keep = http_should_keep_alive(p);
    return c->req && c->req->head ? 1 : 0; /* 1: no body follows */
}

static int on_hfield(http_parser *p, const char *at, size_t n)
{
    struct cconn *c = p->data;
    if (c->in_value || c->nhdrs == 0) {
        if (c->nhdrs && ag_buf_putc(&c->hdrs, '\0')) return -1;
        c->nhdrs++;
        c->in_value = false;
    }
    return ag_buf_append(&c->hdrs, at, n) ? -1 : 0;
}

static int on_hvalue(http_parser *p, const char *at, size_t n)
{
    struct cconn *c = p->data;
    if (!c->in_value) {
        if (ag_buf_putc(&c->hdrs, '\0')) return -1;
        c->in_value = true;
    }
    return ag_buf_append(&c->hdrs, at, n) ? -1 : 0;
}

static int on_rheaders_complete(http_parser *p)
{
    struct cconn *c = p->data;
    if (c->nhdrs && ag_buf_putc(&c->hdrs, '\0')) return -1;
    if (p->status_code < 200) { /* an interim 1xx: wait for the final answer */
        ag_buf_reset(&c->hdrs);
        c->nhdrs = 0;
        c->in_value = false;
        return 0;
    }
    int rc = on_status_done(p);
    struct creq *r = c->req;
    if (r && r->stream_type[0] && p->status_code >= 200 && p->status_code < 300 && !r->head) {
        const char *v = c->hdrs.data;
        for (size_t i = 0; i < c->nhdrs; i++) { /* name NUL value NUL ... */
            const char *val = v + strlen(v) + 1;
            if (!strcasecmp(v, "content-type") &&
                !strncasecmp(val, r->stream_type, strlen(r->stream_type)))
                r->streaming = true;
            v = val + strlen(val) + 1;
        }
    }
    return rc;
}

static int on_rbody(http_parser *p, const char *at, size_t n)
{
    struct cconn *c = p->data;
    if (c->body.len + n > c->u->cfg.max_response_bytes) {
        c->fail = AG_ETOOBIG;
        return -1;
    }
    return ag_buf_append(&c->body, at, n) ? -1 : 0;
}

static int on_rcomplete(http_parser *p)
{
    struct cconn *c = p->data;
    if (p->status_code < 200) {
        http_parser_init(p, HTTP_RESPONSE); /* the final response follows */
        p->data = c;
        return 0;
    }
    c->complete = true;
    http_parser_pause(p, 1); /* nothing after it belongs to us */
    return 0;
}

static const http_parser_settings resp_settings = {
    .on_header_field = on_hfield,
    .on_header_value = on_hvalue,
    .on_headers_complete = on_rheaders_complete,
    .on_body = on_rbody,
    .on_message_complete = on_rcomplete,
};

/* ---- public API ---- */

int ag_http_upstream_new(uv_loop_t *loop, const struct ag_http_upstream_config *cfg,
                         struct ag_http_upstream **out)
{
    if (!loop || !cfg || !cfg->host || strlen(cfg->host) >= AG_HTTP_HOST_MAX) return AG_EINVAL;
    struct ag_http_upstream *u = ag_calloc(1, sizeof *u);
    if (!u) return AG_ENOMEM;
    u->loop = loop;
    u->cfg = *cfg;
    snprintf(u->host_copy, sizeof u->host_copy, "%s", cfg->host);
    u->cfg.host = u->host_copy;
    if (strncmp(cfg->host, "unix:", 5) == 0) {
        u->unix_path = u->host_copy + 5;
        snprintf(u->host_header, sizeof u->host_header, "localhost");
        if (u->unix_path[0] != '/') {
            ag_free(u);
            return AG_EINVAL;
        }
    } else {
        bool v6 = strchr(cfg->host, ':') != NULL;
        snprintf(u->host_header, sizeof u->host_header, v6 ? "[%s]:%u" : "%s:%u", cfg->host,
                 cfg->port);
        if (uv_ip4_addr(cfg->host, cfg->port, (struct sockaddr_in *)&u->addr) != 0 &&
            uv_ip6_addr(cfg->host, cfg->port, (struct sockaddr_in6 *)&u->addr) != 0) {
            ag_free(u);
            return AG_EINVAL;
        }
    }
#define DEFAULT(f, v)                                                                              \
    if (!u->cfg.f) u->cfg.f = (v)
    DEFAULT(max_connections, 8);
    DEFAULT(max_pending, 256);
    DEFAULT(connect_timeout_ms, 2000);
    DEFAULT(pool_timeout_ms, 1000);
    DEFAULT(idle_timeout_ms, 30000);
    DEFAULT(max_response_bytes, 8 * 1024 * 1024);
#undef DEFAULT
    signal(SIGPIPE, SIG_IGN);
    uv_timer_init(loop, &u->pool_timer);
    u->pool_timer.data = u;
    u->open_handles = 1;
    *out = u;
    return 0;
}

static bool idempotent(const char *m)
{
    return !strcmp(m, "GET") || !strcmp(m, "HEAD") || !strcmp(m, "PUT") || !strcmp(m, "DELETE") ||
           !strcmp(m, "OPTIONS");
}

int ag_http_upstream_request(struct ag_http_upstream *u, const struct ag_http_client_req *q,
                             ag_http_client_cb cb, void *ud)
{
    if (!u || !q || !cb) return AG_EINVAL;
    if (u->closing) return AG_ECLOSED;
    struct hlen few[64]; /* most requests: no allocation */
    struct hlen *hl = q->nheaders <= AG_ARRAY_SIZE(few) ? few : ag_malloc(q->nheaders * sizeof *hl);
    if (!hl) return AG_ENOMEM;
    size_t need;
    int rc = validate(q, hl, &need);
    struct creq *r = NULL;
    if (!rc && u->nwaiting >= u->cfg.max_pending) rc = AG_EAGAIN;
    if (!rc && !(r = ag_calloc(1, sizeof *r))) rc = AG_ENOMEM;
    if (r) {
        ag_buf_init(&r->wire);
        rc = serialize(u, q, hl, need, &r->wire);
    }
    if (hl != few) ag_free(hl);
    if (rc) {
        if (r) ag_buf_free(&r->wire);
        ag_free(r);
        return rc;
    }
    uint64_t now = uv_now(u->loop);
    r->cb = cb;
    r->ud = ud;
    r->deadline_ms = now + (q->timeout_ms ? q->timeout_ms : 10000);
    r->pool_deadline_ms = now + u->cfg.pool_timeout_ms;
    r->idempotent = idempotent(q->method);
    r->head = strcmp(q->method, "HEAD") == 0;
    if (q->stream_type && q->on_data) {
        size_t tl = strnlen(q->stream_type, sizeof r->stream_type - 1);
        memcpy(r->stream_type, q->stream_type, tl);
        r->stream_type[tl] = '\0';
        r->stream_idle_ms = q->stream_idle_ms ? q->stream_idle_ms : 45000;
        r->on_data = q->on_data;
        r->stream_ud = q->stream_ud;
    }
    queue_push(u, r, false);
    service_queue(u);
    return 0;
}

void ag_http_upstream_stream_cancel(struct ag_http_upstream_stream *s)
{
    struct cconn *c = (struct cconn *)s;
    if (!c || c->state != CS_BUSY || !c->req || !c->req->streaming) return;
    c->req->cancelled = true;
    conn_fail(c, AG_ECANCELED);
}

static void pool_timer_closed(uv_handle_t *h)
{
    struct ag_http_upstream *u = h->data;
    u->open_handles--;
    maybe_free_upstream(u);
}

void ag_http_upstream_close(struct ag_http_upstream *u)
{
    if (!u || u->closing) return;
    u->closing = true;
    struct creq *r;
    while ((r = queue_pop(u))) creq_finish(r, AG_ECANCELED, NULL);
    while (u->conns) {
        struct cconn *c = u->conns;
        struct creq *inflight = c->req;
        c->req = NULL;
        conn_close(c);
        if (inflight) creq_finish(inflight, AG_ECANCELED, NULL);
    }
    uv_close((uv_handle_t *)&u->pool_timer, pool_timer_closed);
}

void ag_http_upstream_stats(const struct ag_http_upstream *u, struct ag_http_upstream_stats *out)
{
    memset(out, 0, sizeof *out);
    out->open = u->nconns;
    out->pending = u->nwaiting;
    out->connects = u->connects;
    out->reused = u->reused;
    for (const struct cconn *c = u->conns; c; c = c->next)
        if (c->state == CS_IDLE) out->idle++;
}

void ag_http_propagate(const struct ag_http_req *in, struct ag_http_client_req *out)
{
    out->request_id = ag_http_req_id(in);
    const struct ag_obs_trace *t = ag_http_req_trace(in);
    out->traceparent[0] = '\0';
    if (t) {
        struct ag_obs_trace child;
        ag_obs_trace_child(t, &child, NULL);
        ag_obs_trace_format(&child, out->traceparent);
    }
}
