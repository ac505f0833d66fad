/*
 * Private declarations of the HTTP module: the connection state machine
 * (conn.c), requests and responses (req.c, respond.c), the router (router.c),
 * the built-in middleware (observe.c), and the libuv transport (server.c).
 *
 * The connection state machine knows nothing about sockets: bytes go in through
 * ag__http_conn_feed, answers come out in conn->out, and the transport is a table
 * of callbacks (struct ag__http_io). The server plugs libuv into it; the fuzz
 * harness and the data-driven tests plug in a memory transport.
 */
#ifndef AGORA_HTTP_INTERNAL_H
#define AGORA_HTTP_INTERNAL_H

#include <http_parser.h>
#include <stdatomic.h>
#include <strings.h>

#include "agora/http.h"

#define AG__HTTP_MAX_PARAMS  8   /* path parameters per route */
#define AG__HTTP_MAX_HEADERS 100 /* request headers (else 431) */

/* ---- tokens ---- */

/* An RFC 9110 tchar (header names, methods): ALPHA, DIGIT and !#$%&'*+-.^_`|~ —
 * one table lookup instead of a strchr per character. */
static inline bool ag__http_tchar(unsigned char c)
{
    static const uint64_t set[2] = {0x03ff6cfa00000000ull, 0x57ffffffc7fffffeull};
    return c < 128 && (set[c >> 6] >> (c & 63) & 1);
}

/* Whether the header name a (alen bytes) is `lit` (a string literal), ignoring
 * ASCII case: lengths first, so most names cost no comparison at all. */
#define AG__HTTP_NAME_IS(a, alen, lit)                                                             \
    ((alen) == sizeof(lit) - 1 && strncasecmp((a), (lit), sizeof(lit) - 1) == 0)

/* ---- arena: bump allocation freed with the request ---- */

struct ag__arena_chunk {
    struct ag__arena_chunk *next; /* older chunk */
    size_t used;                  /* bytes handed out */
    size_t cap;                   /* bytes in data */
    char data[];                  /* the memory */
};

struct ag__arena {
    struct ag__arena_chunk *head; /* newest chunk; NULL when empty */
};

void *ag__arena_alloc(struct ag__arena *a, size_t n);
char *ag__arena_strndup(struct ag__arena *a, const char *s, size_t n);
void ag__arena_free(struct ag__arena *a);
/* Empty the arena for the next request, keeping one default-sized chunk. */
void ag__arena_reset(struct ag__arena *a);

/* ---- limits and per-loop context ---- */

struct ag__http_limits {
    size_t max_header_bytes;        /* request line + headers */
    size_t max_body_bytes;          /* decoded body */
    uint32_t header_timeout_ms;     /* first byte to end of headers */
    uint32_t body_timeout_ms;       /* end of headers to end of body */
    uint32_t idle_timeout_ms;       /* keep-alive idle */
    uint32_t first_byte_timeout_ms; /* accept to the first byte of the first request */
    uint32_t max_pipeline;          /* queued requests per connection */
    size_t max_stream_unsent;  /* streamed answers: unsent bytes before the client is dropped */
    uint32_t sse_heartbeat_ms; /* SSE streams: ": ping" after this much silence */
};

/* Resolve zeros in a server config to the defaults. */
void ag__http_limits_from(const struct ag_http_server_config *cfg,
                          struct ag__http_limits *out /* OUT */);

/* What every connection of one loop shares. */
struct ag__http_ctx {
    struct ag_http_router *router; /* borrowed */
    struct ag__http_limits lim;    /* resolved limits */
    uv_loop_t *loop;               /* NULL for memory transports */
    struct ag_http_server *server; /* NULL for memory transports */
    const char *hsts;              /* "Strict-Transport-Security: ...\r\n" over TLS, else NULL */
    long date_sec;                 /* second the cached Date line is for */
    char date[48];                 /* "Date: ...\r\n" */
    /* Finished requests kept for the next one on ANY connection of this loop
     * (LIFO, linked by `next`): the request, its buffers and arena chunk stay hot
     * in cache however many connections take turns, instead of one idle set per
     * connection. At most free_cap (0: none, every request is freed). */
    struct ag_http_req *free_reqs;
    uint32_t nfree;
    uint32_t free_cap;
};

/* Free the requests kept for reuse (when the loop's connections are gone). */
void ag__http_ctx_release(struct ag__http_ctx *ctx);

/* ---- requests ---- */

/* A header as offsets into req->raw (stable while raw grows). */
struct ag__hdr {
    uint32_t name;      /* offset of the NUL-terminated name */
    uint32_t name_len;  /* bytes of name */
    uint32_t value;     /* offset of the NUL-terminated value */
    uint32_t value_len; /* bytes of value */
};

/* ---- the fast path in front of http-parser (fastparse.c) ---- */

/* A message head the fast path took: offsets into the scanned buffer. */
struct ag__fp {
    size_t head_len;        /* bytes through the blank line */
    int method;             /* requests: enum http_method */
    uint32_t url, url_len;  /* requests: the target */
    int status;             /* responses: the status */
    size_t nhdrs;           /* headers recorded in the caller's array */
    int64_t content_length; /* -1: none */
    bool host;              /* a Host header */
    bool close;             /* responses: Connection: close */
};

/* Scan a request (response) head at b[0..n) into *m and h[0..cap): true when
 * the fast path takes it, false when http-parser must (declined, or not all
 * there yet). Reads b only. */
bool ag__fp_request(const char *b, size_t n, struct ag__fp *m /* OUT */,
                    struct ag__hdr *h /* OUT */, size_t cap);
bool ag__fp_response(const char *b, size_t n, struct ag__fp *m /* OUT */,
                     struct ag__hdr *h /* OUT */, size_t cap);

struct ag__param {
    const char *name;  /* borrowed from the route */
    const char *value; /* decoded copy in the arena */
};

enum ag__req_state {
    AG__RS_HEADERS,    /* reading the request line and headers */
    AG__RS_BODY,       /* reading the body */
    AG__RS_DISPATCHED, /* handed to the router, waiting for an answer */
    AG__RS_STREAMING,  /* answer headers sent, body streamed (ag_http_stream_*) */
    AG__RS_DONE,       /* answered; bytes are in req->out or conn->out */
};

struct ag__route;
struct ag__http_conn;

struct ag_http_req {
    struct ag__http_conn *conn; /* owner; the request holds a reference */
    struct ag_http_req *next;   /* next request on the connection, in order */
    int refs;                   /* queue + dispatch references */
    enum ag__req_state state;   /* where the request is */
    bool queued;                /* still in the connection's queue */

    /* parsing */
    struct ag_buf raw;       /* url NUL, then name NUL value NUL ... */
    uint32_t url_len;        /* bytes of url at raw[0] */
    bool url_done;           /* url terminated */
    bool in_value;           /* last header callback was a value */
    const char *value_end;   /* end of the last value piece (fold detection) */
    struct ag__hdr *hdrs;    /* headers (owned array) */
    size_t nhdrs;            /* headers in use */
    size_t hdrs_cap;         /* headers allocated */
    size_t header_bytes;     /* request line + header bytes seen */
    int n_content_length;    /* Content-Length headers seen */
    int n_transfer_encoding; /* Transfer-Encoding headers seen */
    struct ag_buf body;      /* decoded body */
    const char *method;      /* static method name */
    char *path;              /* into raw */
    char *query;             /* into raw, or "" */
    bool keep_alive;         /* per http_should_keep_alive */
    bool head;               /* HEAD: no body in the answer */
    bool http10;             /* HTTP/1.0 request */
    uint64_t start_ns;       /* monotonic ns of the first byte */
    uint64_t deadline_ms;    /* header or body deadline (transport ms) */

    /* routing and middleware */
    struct ag__route *route;                        /* matched route, the router's
                                                       "unmatched" pseudo-route, or NULL */
    bool routed;                                    /* a real route matched */
    struct ag__param params[AG__HTTP_MAX_PARAMS];   /* bound parameters */
    size_t nparams;                                 /* params in use */
    bool mw_started;                                /* on_request chain ran */
    char id[AG_OBS_REQUEST_ID_MAX + 1];             /* request id, "" when off */
    struct ag_obs_trace trace;                      /* server span */
    bool has_trace;                                 /* trace valid */
    uint8_t trace_parent[8];                        /* the caller's span id, or zeros */
    char span_name[AG_SPAN_NAME_MAX];               /* ag_http_req_span_name, or "" */
    void *data;                                     /* user data */
    struct ag__arena arena;                         /* freed with the request */
    void (*abort_cb)(struct ag_http_req *, void *); /* ag_http_req_on_abort, or NULL */
    void *abort_ud;                                 /* its user data */

    /* answer */
    int status;              /* 0 until answered */
    bool close_after;        /* close the connection after this answer */
    struct ag_buf resp_hdrs; /* "Name: value\r\n"... added by handlers */
    struct ag_buf out;       /* serialized answer when not at the head */
    size_t resp_body_len;    /* bytes of the body (for logs) */

    /* streamed answer (stream.c) */
    bool streaming;          /* ag_http_stream_begin called */
    bool chunked;            /* body framed with chunked encoding (else close-delimited) */
    bool sse;                /* text/event-stream: heartbeats, SSE metrics */
    bool dropped;            /* the client fell behind and was dropped */
    uint64_t hb_deadline_ms; /* when the next heartbeat is due (transport ms) */
};

/* ---- connections ---- */

struct ag__http_io {
    void (*flush)(struct ag__http_conn *c);                  /* write c->out (and close if asked) */
    void (*close)(struct ag__http_conn *c);                  /* close the transport now */
    void (*set_timer)(struct ag__http_conn *c, uint64_t ms); /* fire after ms; 0 stops */
    void (*read)(struct ag__http_conn *c, bool on);          /* pause/resume reading */
    uint64_t (*now_ms)(struct ag__http_conn *c);             /* transport clock */
    void (*release)(struct ag__http_conn *c);                /* last reference gone */
    size_t (*pending)(struct ag__http_conn *c); /* bytes handed to the socket, not yet written;
                                                   NULL = none */
};

struct ag__http_conn {
    const struct ag__http_io *io; /* transport */
    struct ag__http_ctx *ctx;     /* shared per loop */
    http_parser parser;           /* http-parser state */
    int refs;                     /* transport + one per live request */
    struct ag_http_req *head;     /* oldest queued request */
    struct ag_http_req *tail;     /* newest queued request */
    struct ag_http_req *cur;      /* request being parsed, or NULL */
    struct ag_http_req *ready;    /* parsed, to dispatch after the parser pauses */
    size_t queued;                /* requests in the queue */
    struct ag_buf out;            /* bytes ready for the transport */
    struct ag_buf inbuf;          /* input held back while the pipeline is full */
    uint64_t idle_deadline_ms;    /* when an idle connection closes */
    uint64_t armed_ms;            /* deadline the timer is armed for (0 = none) */
    int fail_status;              /* status chosen by a callback that failed */
    const char *fail_detail;      /* static detail for that status, or NULL */
    const char *feed_start;       /* start of the buffer being parsed */
    const char *feed_end;         /* end of the buffer being parsed */
    int in_feed;                  /* >0 while feeding (no re-entrant feed) */
    bool paused;                  /* input held back (pipeline full) */
    bool closing;                 /* no more input is read or parsed */
    bool close_after_flush;       /* close once out is written */
    bool closed;                  /* transport closed */
    bool draining;                /* server drain: finish what is queued, then close */
    bool no_fast;                 /* a request without keep-alive was read: http-parser only */
    char peer[64];                /* "ip:port" of the client */
};

void ag__http_conn_init(struct ag__http_conn *c, struct ag__http_ctx *ctx,
                        const struct ag__http_io *io);
/* Feed bytes read from the client. */
void ag__http_conn_feed(struct ag__http_conn *c, const char *data, size_t n);
/* The client closed its side (EOF). */
void ag__http_conn_eof(struct ag__http_conn *c);
/* The timer armed through io->set_timer fired. */
void ag__http_conn_timeout(struct ag__http_conn *c);
/* The transport is closed: drop what cannot be answered any more; releases the
 * transport's reference. */
void ag__http_conn_closed(struct ag__http_conn *c);
/* Begin a graceful drain of this connection. */
void ag__http_conn_drain(struct ag__http_conn *c);
/* True when nothing is queued or being parsed. */
bool ag__http_conn_idle(const struct ag__http_conn *c);
void ag__http_conn_unref(struct ag__http_conn *c);

/* ---- requests and answers ---- */

struct ag_http_req *ag__http_req_new(struct ag__http_conn *c);
void ag__http_req_unref(struct ag_http_req *req);
/* Percent-decode s[0..n) into the request's arena; NULL on allocation failure. */
char *ag__http_decode(struct ag_http_req *req, const char *s, size_t n);
/* Serialize the answer (status, headers, body) into `out`. */
int ag__http_serialize(struct ag_http_req *req, const char *content_type, const void *body,
                       size_t len, struct ag_buf *out);
/* Queue bookkeeping after `req` was answered: move finished answers to conn->out
 * in order and flush. */
void ag__http_conn_advance(struct ag__http_conn *c);
/* Answer a request the parser refused (no middleware, closes the connection). */
void ag__http_conn_fail(struct ag__http_conn *c, int status, const char *detail);

/* ---- streamed answers (stream.c) ---- */

/* Bytes of `req`'s streamed answer not yet written to the client. */
size_t ag__http_stream_unsent(struct ag_http_req *req);
/* Drop the client of a streamed answer that fell behind the unsent cap (closes
 * the connection, counts agora_sse_dropped_total); true when it did. */
bool ag__http_stream_check(struct ag_http_req *req);
/* The connection timer fired for a streaming head: send a heartbeat if due. */
void ag__http_stream_timeout(struct ag_http_req *req, uint64_t now_ms);

/* ---- router ---- */

/* Route and run middleware + handler for a fully read request. */
void ag__http_dispatch(struct ag_http_req *req);
/* Run the on_response chain (once). */
void ag__http_run_on_response(struct ag_http_req *req);
/* The built-in middleware on the router (observe.c). */
struct ag__observe;
int ag__http_observe_init(struct ag_http_router *r, const struct ag_http_observe *o,
                          struct ag__observe **out);
void ag__http_observe_free(struct ag__observe *ob);
void ag__http_observe_request(struct ag__observe *ob, struct ag_http_req *req);
void ag__http_observe_response(struct ag__observe *ob, struct ag_http_req *req);

/* SSE stream gauge (+1 / -1) and the drop counter of a router's built-in
 * middleware (no-op without metrics). */
void ag__http_observe_sse(struct ag__observe *ob, int streams_delta, bool dropped);

/* The built-in middleware state of a router, or NULL. */
struct ag__observe *ag__http_router_observer(struct ag_http_router *r);
/* The route's pattern. */
const char *ag__http_route_pattern(const struct ag__route *rt);
/* The route's method ("ANY" for the unmatched pseudo-route). */
const char *ag__http_route_method(const struct ag__route *rt);
/* Per-route metrics cache slot: observe.c fills it, the router frees it. */
void *_Atomic *ag__http_route_metrics_slot(struct ag__route *rt);

/* ---- memory transport (tests and fuzzing) ---- */

struct ag__http_memconn {
    struct ag__http_conn conn; /* the state machine */
    struct ag__http_ctx ctx;   /* its context */
    struct ag_buf output;      /* everything the server wrote */
    uint64_t now_ms;           /* fake clock */
    uint64_t timer_at_ms;      /* armed timer (0 = none) */
    unsigned timer_arms;       /* times the timer was (re)armed */
    bool closed;               /* io->close was called */
    bool reading;              /* reading enabled */
    bool stalled;              /* a client that does not read: flush leaves conn.out alone */
};

/* A connection over memory for `router` (borrowed) with `cfg` limits (NULL =
 * defaults). Caller frees with ag__http_memconn_free. */
int ag__http_memconn_new(struct ag_http_router *router, const struct ag_http_server_config *cfg,
                         struct ag__http_memconn **out);
void ag__http_memconn_feed(struct ag__http_memconn *m, const char *data, size_t n);
/* Advance the fake clock, firing the timer when due. */
void ag__http_memconn_advance(struct ag__http_memconn *m, uint64_t ms);
void ag__http_memconn_free(struct ag__http_memconn *m);

/* ---- the fast path against http-parser (fpdiff.c; tests and fuzzing) ---- */

/* Middleware that answers 200 text/plain echoing the request whole: method,
 * path, query, each header, body. */
int ag__http_echo_whole(struct ag_http_req *req, void *ud);
/* Feeds `in` to a memory connection of router r (cfg limits) with the fast path
 * on, and to one with it off; fast/slow get what each wrote ('C' closed or 'O',
 * then the output without Date lines). 1 when they differ, 0 when the same,
 * else an AG_E* code. */
int ag__fp_request_differs(struct ag_http_router *r, const struct ag_http_server_config *cfg,
                           const char *in, size_t n, struct ag_buf *fast /* OUT */,
                           struct ag_buf *slow /* OUT */);
/* True when ag__fp_response takes in[0..n) whole (head + Content-Length body)
 * and http-parser parses it to another status, header list, body length or
 * keep-alive. */
bool ag__fp_response_differs(const char *in, size_t n);

/* ---- open connections per peer address (peers.c) ---- */

#define AG__PEER_SHARDS 64

struct sockaddr;
struct ag__peers;
int ag__peers_new(struct ag__peers **out);
void ag__peers_free(struct ag__peers *p);
/* The table key of an AF_INET/AF_INET6 address; false for other families. */
bool ag__peer_key(const struct sockaddr *sa, uint8_t key[16] /* OUT */);
/* Count one more connection from key: 0 counted, 1 admitted uncounted (no memory;
 * do not release), AG_EAGAIN when `cap` connections are already open. */
int ag__peers_acquire(struct ag__peers *p, const uint8_t key[16], uint32_t cap);
void ag__peers_release(struct ag__peers *p, const uint8_t key[16]);
/* Open connections counted for key (tests). */
uint32_t ag__peers_count(struct ag__peers *p, const uint8_t key[16]);

/* The refused-connections counter of a router's built-in middleware for
 * `reason` ("per_peer"), or NULL when it has no metrics. */
struct ag_obs_series *ag__http_observe_refused(struct ag__observe *ob, const char *reason);

/* The server's draining flag as seen by the ops routes (NULL server = false). */
bool ag__http_ctx_draining(const struct ag__http_ctx *ctx);

/* ---- TLS engine (tls.c): an SSL object between memory BIOs ---- */

struct ag__tls;
/* A server-side session on the current certificates. */
int ag__tls_server_conn(struct ag_tls_server *srv, struct ag__tls **out);
/* A client-side session to `host` (numeric); the ClientHello is in the wire buffer. */
int ag__tls_client_conn(struct ag_tls_client *cli, const char *host, struct ag__tls **out);
/* Ciphertext read from the peer in; plaintext appended to `plain`. 0, AG_ECLOSED
 * (close_notify), AG_EPROTOCOL (handshake or record failure; an alert may be in
 * the wire buffer), AG_ENOMEM. */
int ag__tls_read(struct ag__tls *t, const char *data, size_t n, struct ag_buf *plain);
/* Plaintext to send (held until the handshake completes). */
int ag__tls_write(struct ag__tls *t, const char *p, size_t n);
/* Queue close_notify. */
void ag__tls_shutdown(struct ag__tls *t);
/* Ciphertext waiting for the transport; the caller takes bytes out of it. */
struct ag_buf *ag__tls_wire(struct ag__tls *t);
int ag__tls_collect(struct ag__tls *t);
bool ag__tls_ready(const struct ag__tls *t);
/* The ALPN protocol agreed ("" when none) into buf. */
const char *ag__tls_alpn(const struct ag__tls *t, char *buf, size_t n);
void ag__tls_free(struct ag__tls *t);

#endif
