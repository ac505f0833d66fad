/*
 * agora HTTP: an HTTP/1.1 server and client on libuv, a router with middleware,
 * JSON and RFC 9457 problem+json helpers. Parsing is http-parser's; this module
 * owns connection state, limits, ordering and timeouts.
 *
 * Server. N worker threads, each with its own uv loop and its own listening socket
 * bound to the same address with SO_REUSEPORT (the kernel spreads connections).
 * A connection belongs to one worker for its life; so does each request on it.
 * Keep-alive and pipelining are supported; responses leave in request order even
 * when handlers answer out of order.
 *
 * Handlers. A handler runs on the connection's loop thread and either answers at
 * once (ag_http_respond*) or keeps the request and answers later from the same
 * loop (a uv_async or a store completion on that loop); ag_http_req_loop tells
 * which loop. The request object stays valid until it has been answered, even if
 * the client went away meanwhile (the answer is then dropped). A handler that
 * returns a negative AG_E* code without answering gets a problem+json response
 * mapped from the code; every 4xx/5xx without a body gets a problem+json body.
 *
 * Ownership. The router is owned by the caller and must outlive the servers using
 * it; routes and middleware are registered before the server starts. Strings
 * returned by ag_http_req_* are borrowed and live as long as the request.
 *
 * Client. An upstream is a connection pool to one host:port (or one Unix socket,
 * host "unix:/abs/path") on one loop. Requests
 * complete through a callback on that loop with either a response or a distinct
 * error: AG_ECONNECT (could not connect), AG_ERESET (connection closed or reset
 * before the response completed), AG_EPROTOCOL (malformed response),
 * AG_EPOOL_TIMEOUT (no pooled connection became free in time), AG_ETIMEDOUT (the
 * request's deadline passed), AG_ETOOBIG (response body over the limit).
 */
#ifndef AGORA_HTTP_H
#define AGORA_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "agora/base.h"
#include "agora/obs.h"

struct ag_http_server;
struct ag_http_router;
struct ag_http_req;
struct ag_http_upstream;
struct ag_http_upstream_stream;

/* ---- router and middleware ---- */

/* Returns 0 once it has answered or will answer later; a negative AG_E* code
 * without answering makes the server answer with the mapped problem+json. */
typedef int (*ag_http_handler_fn)(struct ag_http_req *req, void *ud);

struct ag_http_middleware {
    const char *name; /* for logs; borrowed, static */
    /* Before the handler, in registration order. Return 0 to continue, 1 after
     * answering (stops the chain), or a negative AG_E* code (mapped answer). */
    int (*on_request)(struct ag_http_req *req, void *ud);
    /* When the answer is final but not yet written, in reverse order: may read the
     * status and add headers. */
    void (*on_response)(struct ag_http_req *req, void *ud);
    void *ud; /* borrowed user data */
};

/* What the built-in middleware does (ag_http_router_observe). */
struct ag_http_observe {
    struct ag_obs_registry *metrics; /* RED metrics per route + GET /metrics; NULL = none */
    struct ag_obs_health *health;    /* checks for /health/live|ready; NULL = no checks */
    bool request_id;                 /* keep a valid X-Request-ID or create one; echo it */
    bool trace;                      /* parse or create traceparent; echo the server span */
    bool access_log;                 /* one JSON line per request via the base logger */
    bool ops_routes;                 /* mount GET /metrics, /health/live, /health/ready */
    /* With `trace` and spans on (ag_span_setup): record one server span per request,
     * named "<span_server> METHOD route" (NULL: "http"). */
    const char *span_server;
    /* Who may read /metrics: called first; non-zero when it refused (and answered).
     * NULL = anyone (a server reachable only by trusted peers). */
    int (*metrics_guard)(struct ag_http_req *req, void *ud);
    void *metrics_guard_ud;
};

/* A new router; caller frees with ag_http_router_free after every server using it. */
AG_EXTERN int ag_http_router_new(struct ag_http_router **out);
AG_EXTERN void ag_http_router_free(struct ag_http_router *r);
/* Route `method` (upper case, e.g. "GET") + `pattern` to `fn`. A pattern is
 * "/"-separated segments; "{name}" matches one non-empty segment and binds it as
 * a parameter. Literal segments win over parameters. AG_EEXISTS when the same
 * method and pattern are already routed, AG_EINVAL for a bad pattern. Strings are
 * copied. GET routes also answer HEAD (without a body) unless HEAD is routed. */
AG_EXTERN int ag_http_route(struct ag_http_router *r, const char *method, const char *pattern,
                            ag_http_handler_fn fn, void *ud);
/* Append a middleware (the struct is copied, its name and ud are borrowed). */
AG_EXTERN int ag_http_router_use(struct ag_http_router *r, const struct ag_http_middleware *mw);
/* Enable the built-in middleware (request id, traceparent, metrics, access log) and
 * ops routes. They run before (on_request) and after (on_response) the user's
 * middleware. Call once, before serving; `o` is copied, its pointers borrowed. */
AG_EXTERN int ag_http_router_observe(struct ag_http_router *r, const struct ag_http_observe *o);

/* ---- TLS (OpenSSL 3; src/http/tls.c) ---- */

struct ag_tls_cert {
    const char *cert_file; /* PEM certificate chain */
    const char *key_file;  /* PEM private key */
};

struct ag_tls_server_config {
    const struct ag_tls_cert *certs; /* the first is the default; SNI picks the first whose
                                        names match the name the client asks for */
    size_t ncerts;                   /* at least one */
    const char *client_ca_file;      /* mTLS: PEM CAs; every client must present a certificate
                                        that chains to one (else the handshake is refused);
                                        NULL = no client certificates asked */
};

/* Server certificates for ag_http_server_config.tls: TLS 1.2 and 1.3 only, ECDHE with
 * AES-GCM or ChaCha20-Poly1305, ALPN http/1.1. AG_ECONFIG naming the file when a
 * certificate or key cannot be loaded or they do not match. Thread-safe. The files
 * of the first pair and client_ca_file are also watched: a new connection reloads
 * them (as ag_tls_server_reload) when one changed on disk, looking at most once a
 * second; files that do not load leave the running certificates. */
struct ag_tls_server;
AG_EXTERN int ag_tls_server_new(const struct ag_tls_server_config *cfg, struct ag_tls_server **out,
                                struct ag_err *err);
/* Re-read the same files (certificates renewed on disk): new handshakes use them,
 * handshakes in progress and open connections are untouched. On error the
 * running certificates stay. */
AG_EXTERN int ag_tls_server_reload(struct ag_tls_server *t, struct ag_err *err);
/* Successful reloads so far. */
AG_EXTERN uint64_t ag_tls_server_reloads(const struct ag_tls_server *t);
AG_EXTERN void ag_tls_server_free(struct ag_tls_server *t);

struct ag_tls_client_config {
    const char *ca_file;     /* PEM CAs to verify the upstream; NULL = the system store */
    const char *cert_file;   /* present this certificate (mTLS); NULL = none */
    const char *key_file;    /* its key */
    const char *server_name; /* name (SNI + check) or IP address to verify; NULL = the host */
    bool insecure;           /* do not verify the upstream (tests only) */
};

/* Client TLS for ag_http_upstream_config.tls: verifies the chain and the name.
 * Thread-safe; the paths are copied. Like a server, it re-reads its files when one
 * changed on disk (checked by a new connection, at most once a second). */
struct ag_tls_client;
AG_EXTERN int ag_tls_client_new(const struct ag_tls_client_config *cfg, struct ag_tls_client **out,
                                struct ag_err *err);
/* Re-read the same files (a renewed client certificate or CA): new connections use
 * them, open ones keep theirs. On error the running context stays. */
AG_EXTERN int ag_tls_client_reload(struct ag_tls_client *t, struct ag_err *err);
/* Successful reloads so far (explicit or on a file change). */
AG_EXTERN uint64_t ag_tls_client_reloads(const struct ag_tls_client *t);
AG_EXTERN void ag_tls_client_free(struct ag_tls_client *t);

/* ---- server ---- */

struct ag_http_server_config {
    const char *host;               /* numeric IPv4/IPv6 address; NULL = "127.0.0.1" */
    const char *unix_path;          /* absolute path: listen on this Unix-domain socket, mode 0600,
                                       instead of TCP (host/port ignored; peer "unix"); NULL = TCP */
    uint16_t port;                  /* 0 = an ephemeral port (see ag_http_server_port) */
    int workers;                    /* worker loops; 0 = number of CPUs */
    size_t max_header_bytes;        /* request line + headers; 0 = 16 KiB (else 431) */
    size_t max_body_bytes;          /* decoded body; 0 = 1 MiB (else 413) */
    uint32_t header_timeout_ms;     /* first byte to end of headers; 0 = 10 s (else 408) */
    uint32_t first_byte_timeout_ms; /* accept to the first byte; 0 = 5 s (else closed) */
    uint32_t body_timeout_ms;       /* end of headers to end of body; 0 = 30 s (else 408) */
    uint32_t idle_timeout_ms;       /* keep-alive idle before closing; 0 = 60 s */
    uint32_t max_connections;       /* over all workers; 0 = 10000; more wait in the backlog */
    uint32_t max_conns_per_peer;    /* open per client IP address over all workers; 0 = 256;
                                       more are closed at accept */
    uint32_t max_pipeline;          /* requests queued per connection; 0 = 32 */
    int backlog;                    /* listen(2) backlog; 0 = 1024 */
    struct ag_tls_server *tls;      /* serve HTTPS with these certificates (borrowed, outlives
                                       the server); NULL = plain HTTP */
    uint32_t hsts_max_age;          /* with tls: Strict-Transport-Security max-age in seconds;
                                       0 = one year */
    size_t max_stream_unsent;       /* streamed answers: bytes written but not yet taken by the
                                       client; over it the client is dropped; 0 = 256 KiB */
    uint32_t sse_heartbeat_ms;      /* SSE streams: ": ping" after this much silence; 0 = 15 s */
};

/* A server for `router` (borrowed). Not listening until ag_http_server_start.
 * Caller frees with ag_http_server_free after ag_http_server_wait (which also
 * unlinks the Unix socket file it created). AG_EINVAL for a unix_path that is not
 * absolute or longer than 107 bytes. */
AG_EXTERN int ag_http_server_new(const struct ag_http_server_config *cfg,
                                 struct ag_http_router *router, struct ag_http_server **out);
/* Bind (AG_EIO with the reason in `err` when the address is taken) and start the
 * worker threads. On a Unix socket: AG_EIO when a process answers on unix_path
 * or the path is not a socket; a stale socket file nobody answers on is replaced. */
AG_EXTERN int ag_http_server_start(struct ag_http_server *s, struct ag_err *err);
/* The bound port (useful with port 0); 0 on a Unix socket. */
AG_EXTERN uint16_t ag_http_server_port(const struct ag_http_server *s);
/* 0 when nobody listens on host:port (port 0: always), else AG_EIO saying so. Servers
 * check this themselves; a program may call it first to fail before doing work. */
AG_EXTERN int ag_http_listen_check(const char *host, uint16_t port, struct ag_err *err);
/* Start a graceful drain (thread-safe, returns at once): stop accepting, report
 * not ready, close idle connections, answer in-flight requests with
 * "Connection: close", and force-close what is left after `timeout_ms`. */
AG_EXTERN void ag_http_server_drain(struct ag_http_server *s, uint32_t timeout_ms);
AG_EXTERN bool ag_http_server_draining(const struct ag_http_server *s);
/* Wait until every worker has finished (after a drain). */
AG_EXTERN int ag_http_server_wait(struct ag_http_server *s);
AG_EXTERN void ag_http_server_free(struct ag_http_server *s);
/* Block the calling thread until SIGINT or SIGTERM, then drain with `drain_ms`
 * and wait. The helper a CLI's main calls after ag_http_server_start. Meanwhile
 * with TLS, SIGHUP re-reads the server's certificates (ag_tls_server_reload). */
AG_EXTERN int ag_http_server_run_until_signal(struct ag_http_server *s, uint32_t drain_ms);

/* ---- requests ---- */

AG_EXTERN const char *ag_http_req_method(const struct ag_http_req *req); /* "GET", ... */
/* The path without the query, as sent (not percent-decoded). */
AG_EXTERN const char *ag_http_req_path(const struct ag_http_req *req);
/* The raw query after '?', or "" when none. */
AG_EXTERN const char *ag_http_req_query(const struct ag_http_req *req);
/* The percent-decoded value of query parameter `name` into a new string the
 * request owns; NULL when absent. */
AG_EXTERN const char *ag_http_req_query_param(struct ag_http_req *req, const char *name);
/* First header named `name` (case-insensitive), or NULL. */
AG_EXTERN const char *ag_http_req_header(const struct ag_http_req *req, const char *name);
AG_EXTERN size_t ag_http_req_header_count(const struct ag_http_req *req);
AG_EXTERN void ag_http_req_header_at(const struct ag_http_req *req, size_t i,
                                     const char **name /* OUT */, const char **value /* OUT */);
/* The decoded body (chunked bodies are reassembled); *len may be 0. */
AG_EXTERN const char *ag_http_req_body(const struct ag_http_req *req, size_t *len /* OUT */);
/* A path parameter bound by the route pattern, percent-decoded; NULL when absent. */
AG_EXTERN const char *ag_http_req_param(const struct ag_http_req *req, const char *name);
/* The matched route pattern, or NULL when no route matched. */
AG_EXTERN const char *ag_http_req_route(const struct ag_http_req *req);
/* The request id (kept from X-Request-ID or created) when the request_id
 * middleware is on, else NULL. */
AG_EXTERN const char *ag_http_req_id(const struct ag_http_req *req);
/* The server span's trace context when the trace middleware is on, else NULL. */
AG_EXTERN const struct ag_obs_trace *ag_http_req_trace(const struct ag_http_req *req);
/* Name the request's server span (copied, cut to AG_SPAN_NAME_MAX - 1 bytes);
 * without it the span is "<span_server> METHOD route". */
AG_EXTERN void ag_http_req_span_name(struct ag_http_req *req, const char *name);
/* The loop the request lives on: answer from this loop only. */
AG_EXTERN uv_loop_t *ag_http_req_loop(const struct ag_http_req *req);
/* Monotonic ns when the request's first byte was parsed. */
AG_EXTERN uint64_t ag_http_req_start_ns(const struct ag_http_req *req);
/* User data carried from a middleware to a handler (borrowed). */
AG_EXTERN void ag_http_req_set_data(struct ag_http_req *req, void *data);
AG_EXTERN void *ag_http_req_data(const struct ag_http_req *req);
/* A handler that keeps a request unanswered for long (a blocking read parked
 * until something changes) asks to hear when waiting is pointless: `cb` runs
 * once, on the request's loop, when the client closed its side of the
 * connection or the connection closed, or the server began draining. `cb`
 * should answer at once (an answer to a closed connection is dropped). Answering
 * clears it; so does `cb` NULL. AG_ECLOSED (nothing registered) when that has
 * happened already: answer now. */
AG_EXTERN int ag_http_req_on_abort(struct ag_http_req *req,
                                   void (*cb)(struct ag_http_req *req, void *ud), void *ud);
/* Parse the body as JSON (object or array, duplicate keys rejected) into a new
 * reference the caller decrefs. AG_EJSON with the position in `err` when malformed. */
AG_EXTERN int ag_http_req_json(const struct ag_http_req *req, json_t **out, struct ag_err *err);
/* Arena allocation freed with the request (NULL on failure). */
AG_EXTERN void *ag_http_req_alloc(struct ag_http_req *req, size_t n);

/* ---- responses (on the request's loop, once per request) ---- */

/* Add a response header. AG_EINVAL when the name is not an HTTP token or the
 * value holds CR, LF or NUL (no response splitting); both are copied. The server
 * sets Date, Content-Length and Connection itself. */
AG_EXTERN int ag_http_resp_header(struct ag_http_req *req, const char *name, const char *value);
/* The status of the answer (0 until answered); for on_response middleware. */
AG_EXTERN int ag_http_resp_status(const struct ag_http_req *req);
/* Answer with `status` and a body (copied; NULL/0 for none). AG_EINVAL when the
 * request was already answered. The request must not be used afterwards. */
AG_EXTERN int ag_http_respond(struct ag_http_req *req, int status, const char *content_type,
                              const void *body, size_t len);
/* Answer with a JSON body; takes the reference to `body` (NULL answers 500). */
AG_EXTERN int ag_http_respond_json(struct ag_http_req *req, int status, json_t *body);
/* Answer with an RFC 9457 application/problem+json body {type, title, status,
 * detail, instance?, errors?}. NULL type = "about:blank", NULL title = the reason
 * phrase, NULL detail omitted. Takes the reference to `errors` (may be NULL). */
AG_EXTERN int ag_http_respond_problem(struct ag_http_req *req, int status, const char *type,
                                      const char *title, const char *detail, json_t *errors);
/* Append {"pointer": pointer, "detail": detail} to *errors (created when NULL). */
AG_EXTERN int ag_http_problem_error_add(json_t **errors, const char *pointer, const char *detail);
/* Answer with the problem for an AG_E* code (ag_http_status_for) and `detail`
 * (NULL = ag_strerror(code)). */
AG_EXTERN int ag_http_respond_error(struct ag_http_req *req, int code, const char *detail);
/* The HTTP status an AG_E* code maps to: EINVAL/EJSON 400, ENOTFOUND 404,
 * ECONFLICT/EEXISTS 409, EIDEMPOTENCY 422, EDOMAIN 422, ETOOBIG 413, ERATE_LIMITED
 * 429, ECIRCUIT_OPEN/EBULKHEAD_FULL/EPOOL_TIMEOUT 503, ETIMEDOUT 504,
 * ECONNECT/ERESET/EPROTOCOL/EUPSTREAM 502, EUNSUPPORTED 501, anything else 500. */
AG_EXTERN int ag_http_status_for(int code);
/* The reason phrase for a status ("Not Found"), "Unknown" when unlisted. */
AG_EXTERN const char *ag_http_reason(int status);

/* ---- streamed answers (src/http/stream.c; on the request's loop) ----
 *
 * A handler answers with a body of unknown length written piece by piece:
 * chunked transfer coding on HTTP/1.1, close-delimited on HTTP/1.0. The client
 * may fall behind: bytes written but not yet taken by the socket are capped
 * (ag_http_server_config.max_stream_unsent, 256 KiB); a write over the cap drops
 * the client (connection closed, agora_sse_dropped_total) and frees what was
 * queued. The producer hears of a dropped or vanished client and of a drain
 * through ag_http_req_on_abort (may run from inside ag_http_stream_write: the
 * write then returns AG_ECLOSED) and must then call ag_http_stream_end. */

/* Send the status line and headers (those added with ag_http_resp_header, the
 * framing ones by the server); the on_response middleware runs now. AG_EINVAL
 * when the request was answered or is streaming already. */
AG_EXTERN int ag_http_stream_begin(struct ag_http_req *req, int status, const char *content_type);
/* Queue `len` bytes of body. AG_ECLOSED when the client is gone (closed, dropped
 * now or before): stop producing and end the stream. */
AG_EXTERN int ag_http_stream_write(struct ag_http_req *req, const void *data, size_t len);
/* Finish the body (the last chunk); the request must not be used afterwards.
 * Always call it once after a successful begin, even when the client is gone. */
AG_EXTERN int ag_http_stream_end(struct ag_http_req *req);
/* Bytes written to the stream that the client has not taken yet. */
AG_EXTERN size_t ag_http_stream_unsent(struct ag_http_req *req);

/* Server-Sent Events: begin a 200 text/event-stream answer with Cache-Control:
 * no-cache and X-Accel-Buffering: no; while it is open, a ": ping" comment goes
 * out after every sse_heartbeat_ms (15 s) without an event, so proxies keep it. */
AG_EXTERN int ag_http_sse_begin(struct ag_http_req *req);
/* Format one event into `out`: "id: ...", "event: ..." (each omitted when NULL)
 * and one "data: " line per line of `data` (split at LF, CRLF or CR), then an
 * empty line. AG_EINVAL when id or event holds CR, LF or NUL (or id is too long). */
AG_EXTERN int ag_http_sse_format(struct ag_buf *out, const char *id, const char *event,
                                 const char *data, size_t len);
/* Send one event on an SSE stream (ag_http_sse_format + ag_http_stream_write). */
AG_EXTERN int ag_http_sse_send(struct ag_http_req *req, const char *id, const char *event,
                               const char *data);

/* ---- client ---- */

/* The longest upstream host: "unix:" and a Unix socket path (sun_path). */
#define AG_HTTP_HOST_MAX 113

struct ag_http_upstream_config {
    const char *host;         /* numeric IPv4/IPv6 address (no DNS on the loop), or "unix:/abs/path"
                                 for a Unix-domain socket (port ignored) */
    uint16_t port;            /* TCP port */
    uint32_t max_connections; /* open connections; 0 = 8 */
    uint32_t max_pending;     /* requests waiting for a connection; 0 = 256 */
    uint32_t max_requests_per_conn; /* close after this many; 0 = unlimited */
    uint32_t connect_timeout_ms;    /* 0 = 2 s (AG_ECONNECT) */
    uint32_t pool_timeout_ms;       /* wait for a free connection; 0 = 1 s */
    uint32_t idle_timeout_ms;       /* keep an idle connection; 0 = 30 s */
    size_t max_response_bytes;      /* response body limit; 0 = 8 MiB (AG_ETOOBIG) */
    struct ag_tls_client *tls;      /* speak TLS to the upstream (borrowed, outlives the pool);
                                       NULL = plain. A failed handshake or verification is
                                       AG_ECONNECT */
};

struct ag_http_header {
    const char *name;  /* borrowed */
    const char *value; /* borrowed */
};

struct ag_http_client_req {
    const char *method;                           /* "GET", ...; borrowed */
    const char *path;                             /* origin-form with query; borrowed */
    const struct ag_http_header *headers;         /* extra headers; borrowed, copied at submit */
    size_t nheaders;                              /* entries in headers */
    const void *body;                             /* borrowed, copied at submit; NULL = none */
    size_t body_len;                              /* bytes of body */
    uint32_t timeout_ms;                          /* deadline from submit; 0 = 10 s */
    const char *request_id;                       /* sent as X-Request-ID when not NULL */
    char traceparent[AG_OBS_TRACEPARENT_LEN + 1]; /* sent when non-empty */
    /* Streamed answers. A 2xx answer whose Content-Type starts with stream_type
     * (e.g. "text/event-stream"; NULL = never) is delivered as it arrives: the
     * completion runs once the headers are in (resp->streaming, no body), then
     * on_data gets each piece of body and finally, once, (NULL, 0, rc): 0 at the
     * end of the body, else AG_ERESET, AG_ETIMEDOUT (no byte for stream_idle_ms,
     * which replaces the deadline from then on; 0 = 45 s), AG_ECANCELED. on_data
     * returning non-zero stops the stream: the connection is closed and on_data
     * is not called again. */
    const char *stream_type;
    uint32_t stream_idle_ms;
    int (*on_data)(const char *data, size_t len, int rc, void *ud);
    void *stream_ud;
};

struct ag_http_client_resp {
    int status;                             /* HTTP status */
    const struct ag_http_header *headers;   /* borrowed for the callback's duration */
    size_t nheaders;                        /* entries in headers */
    const char *body;                       /* decoded body, NUL-terminated; borrowed */
    size_t body_len;                        /* bytes of body */
    bool streaming;                         /* the body follows through on_data */
    struct ag_http_upstream_stream *stream; /* with streaming: the handle to cancel it */
};

/* Completion: rc is 0 with `resp`, or a negative code (see the top) with resp NULL. */
typedef void (*ag_http_client_cb)(int rc, const struct ag_http_client_resp *resp, void *ud);

/* A pool to one upstream on `loop` (borrowed). Caller closes it with
 * ag_http_upstream_close. */
AG_EXTERN int ag_http_upstream_new(uv_loop_t *loop, const struct ag_http_upstream_config *cfg,
                                   struct ag_http_upstream **out);
/* Submit a request; `cb` runs later on the loop, exactly once. AG_EAGAIN at once
 * when max_pending requests already wait, AG_EINVAL for a bad method, path or
 * header (CR/LF), AG_ECLOSED after close. */
AG_EXTERN int ag_http_upstream_request(struct ag_http_upstream *u,
                                       const struct ag_http_client_req *r, ag_http_client_cb cb,
                                       void *ud);
/* Stop a streamed answer from the consumer's side (its client went away): the
 * connection is closed and on_data is not called again. Only between the
 * headers and the end (the handle is invalid once on_data saw the end). */
struct ag_http_upstream_stream;
AG_EXTERN void ag_http_upstream_stream_cancel(struct ag_http_upstream_stream *s);
/* Fail waiting and in-flight requests with AG_ECANCELED, close the connections and
 * free the pool once libuv has closed every handle. */
AG_EXTERN void ag_http_upstream_close(struct ag_http_upstream *u);
/* Pool statistics (tests, admin). */
struct ag_http_upstream_stats {
    uint32_t open;     /* open connections */
    uint32_t idle;     /* idle, reusable connections */
    uint32_t pending;  /* requests waiting for a connection */
    uint64_t connects; /* connections opened so far */
    uint64_t reused;   /* requests sent on a reused connection */
};
AG_EXTERN void ag_http_upstream_stats(const struct ag_http_upstream *u,
                                      struct ag_http_upstream_stats *out);
/* Fill `out`'s request_id and traceparent from a server request being served (a
 * child span of its trace), so calls made on its behalf carry them. */
AG_EXTERN void ag_http_propagate(const struct ag_http_req *in, struct ag_http_client_req *out);

/* ---- for the gateway ---- */

/* The client's address as "ip:port" (borrowed, lives as long as the request), or
 * NULL for memory transports. For X-Forwarded-For and per-IP rate limits. */
AG_EXTERN const char *ag_http_req_peer(const struct ag_http_req *req);

/* ---- the mesh key (src/http/usersig.c) ---- */

/* The gateway signs the identity headers it passes (x-user-id, x-user-roles)
 * with a key shared with the services (AGORA_MESH_KEY): x-user-sig is
 * "<unix seconds>.<hex HMAC-SHA256(key, ts\nsub\nroles\nMETHOD\ntarget)>",
 * target being the path with its query ("/a/b?x=1") as the service receives it. */
#define AG_MESH_KEY_MIN    32 /* characters of a mesh key at least */
#define AG_USER_SIG_MAX    96 /* room for an x-user-sig value with its NUL */
#define AG_USER_SIG_SKEW_S 60 /* a signature's time may be this far off now */
/* The x-user-sig value for these headers at `ts` into `out`: 0, AG_EINVAL (no
 * key), AG_ENOMEM or AG_EIO. NULL sub/roles/method/target sign as "". */
AG_EXTERN int ag_http_user_sig(const char *key, int64_t ts, const char *sub, const char *roles,
                               const char *method, const char *target,
                               char out[AG_USER_SIG_MAX] /* OUT */);
/* Whether `sig` is a valid x-user-sig for these headers, made within
 * AG_USER_SIG_SKEW_S seconds of `now` (Unix seconds); constant-time compare. */
AG_EXTERN bool ag_http_user_sig_ok(const char *key, const char *sig, int64_t now, const char *sub,
                                   const char *roles, const char *method, const char *target);

#endif
