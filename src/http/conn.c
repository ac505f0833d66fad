/*
 * The HTTP/1.1 connection state machine, independent of sockets.
 *
 * Input. Bytes are fed to http-parser. Header callbacks copy the request line and
 * headers into req->raw (offsets, so the buffer may grow); on_headers_complete
 * enforces the smuggling rules (one Content-Length, never with Transfer-Encoding,
 * only "chunked" as a transfer coding, Host on 1.1) and the limits; on_body
 * appends the decoded body. on_message_complete pauses the parser, so the request
 * is dispatched outside parser callbacks and the rest of the input is parsed after.
 *
 * Order. Requests sit in a FIFO (head..tail) from the first byte until their
 * answer is written. An answer for the head goes straight to conn->out; one for a
 * later request waits in req->out until everything before it is answered
 * (ag__http_conn_advance). At most lim.max_pipeline requests are queued: past
 * that, input is held in conn->inbuf and reading stops (backpressure).
 *
 * Errors. A request the parser refuses is answered (400, 408, 413, 431...) in
 * order, with "Connection: close", and nothing after it is read.
 *
 * Timers. One deadline at a time, recomputed after every event (conn_rearm): the
 * current request's header or body deadline while one is being read, else the
 * idle deadline when nothing is queued, else none (a handler is working). The
 * timer is re-armed only when the deadline comes earlier than the time it is
 * armed for: a timer that fires early finds no deadline passed and arms the
 * real one, so a keep-alive connection costs no timer work per request.
 *
 * Parked requests. A handler may keep a request for long and ask to hear when
 * waiting is pointless (ag_http_req_on_abort): EOF from the client, the
 * connection closed, or a drain run its callback, which answers.
 *
 * Streamed answers (stream.c). A request in AG__RS_STREAMING stays at its place
 * in the queue while its body is written piece by piece: into conn->out when it
 * is the head, else into req->out until it becomes the head (advance moves it).
 * Its heartbeat deadline is the connection's timer while it is the head; abort
 * callbacks reach it like a parked request.
 *
 * Lifetime. The transport holds one reference and every live request one more;
 * io->release runs when the last goes, after the transport is closed.
 */
#include <string.h>
#include <strings.h>

#include "http/internal.h"

static const http_parser_settings parser_settings;

void ag__http_limits_from(const struct ag_http_server_config *cfg, struct ag__http_limits *out)
{
    static const struct ag_http_server_config none;
    if (!cfg) cfg = &none;
    out->max_header_bytes = cfg->max_header_bytes ? cfg->max_header_bytes : 16 * 1024;
    out->max_body_bytes = cfg->max_body_bytes ? cfg->max_body_bytes : 1024 * 1024;
    out->header_timeout_ms = cfg->header_timeout_ms ? cfg->header_timeout_ms : 10000;
    out->body_timeout_ms = cfg->body_timeout_ms ? cfg->body_timeout_ms : 30000;
    out->idle_timeout_ms = cfg->idle_timeout_ms ? cfg->idle_timeout_ms : 60000;
    out->first_byte_timeout_ms = cfg->first_byte_timeout_ms ? cfg->first_byte_timeout_ms : 5000;
    out->max_pipeline = cfg->max_pipeline ? cfg->max_pipeline : 32;
    out->max_stream_unsent = cfg->max_stream_unsent ? cfg->max_stream_unsent : 256 * 1024;
    out->sse_heartbeat_ms = cfg->sse_heartbeat_ms ? cfg->sse_heartbeat_ms : 15000;
}

void ag__http_conn_init(struct ag__http_conn *c, struct ag__http_ctx *ctx,
                        const struct ag__http_io *io)
{
    memset(c, 0, sizeof *c);
    c->io = io;
    c->ctx = ctx;
    c->refs = 1;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    ag_buf_init(&c->out);
    ag_buf_init(&c->inbuf);
    /* A new connection gets the first-byte timeout to start its first request;
     * from that byte on, the header timeout bounds the request line and headers. */
    c->idle_deadline_ms = io->now_ms(c) + ctx->lim.first_byte_timeout_ms;
}

bool ag__http_conn_idle(const struct ag__http_conn *c)
{
    return !c->head && !c->cur;
}

void ag__http_conn_unref(struct ag__http_conn *c)
{
    if (--c->refs > 0) return;
    ag_buf_free(&c->out);
    ag_buf_free(&c->inbuf);
    c->io->release(c);
}

/* ---- queue ---- */

static void queue_push(struct ag__http_conn *c, struct ag_http_req *req)
{
    req->queued = true;
    if (c->tail)
        c->tail->next = req;
    else
        c->head = req;
    c->tail = req;
    c->queued++;
}

static struct ag_http_req *queue_pop(struct ag__http_conn *c)
{
    struct ag_http_req *req = c->head;
    c->head = req->next;
    if (!c->head) c->tail = NULL;
    req->next = NULL;
    req->queued = false;
    c->queued--;
    return req;
}

/* ---- timers ---- */

static void conn_rearm(struct ag__http_conn *c)
{
    uint64_t dl = 0;
    if (c->closed) return;
    if (c->closing)
        dl = c->close_after_flush ? c->idle_deadline_ms : 0;
    else if (c->cur)
        dl = c->cur->deadline_ms;
    else if (!c->head)
        dl = c->idle_deadline_ms;
    else if (c->head->state == AG__RS_STREAMING && c->head->sse)
        dl = c->head->hb_deadline_ms; /* the next heartbeat of a streamed answer */
    /* Lazy: a timer already armed for an earlier time is left alone (a
     * keep-alive connection moves its idle deadline on every answer, and
     * re-arming per request is wasted work); when it fires,
     * ag__http_conn_timeout checks the real deadlines against the clock and
     * arms the next one. No deadline (a handler is working) leaves it too. */
    if (dl == 0 || (c->armed_ms && c->armed_ms <= dl)) return;
    c->armed_ms = dl;
    uint64_t now = c->io->now_ms(c);
    c->io->set_timer(c, dl == 0 ? 0 : (dl > now ? dl - now : 1));
}

static void conn_close(struct ag__http_conn *c)
{
    if (c->closed) return;
    c->closing = true;
    c->io->close(c);
}

void ag__http_conn_timeout(struct ag__http_conn *c)
{
    uint64_t now = c->io->now_ms(c);
    c->armed_ms = 0;
    if (c->closed) return;
    if (c->cur && now >= c->cur->deadline_ms && !c->closing) {
        ag__http_conn_fail(c, 408, "the request was not received in time");
    } else if (!c->cur && !c->head && now >= c->idle_deadline_ms) {
        conn_close(c);
        return;
    } else if (c->closing && c->close_after_flush && now >= c->idle_deadline_ms) {
        conn_close(c); /* the client does not read its answer */
        return;
    } else if (c->head && c->head->state == AG__RS_STREAMING && !c->closing) {
        ag__http_stream_timeout(c->head, now); /* may drop the client */
        if (c->closed) return;
    }
    conn_rearm(c);
}

/* ---- answers in order ---- */

void ag__http_conn_advance(struct ag__http_conn *c)
{
    bool popped = false;
    while (c->head && c->head->state == AG__RS_DONE) {
        struct ag_http_req *req = queue_pop(c);
        bool close = req->close_after;
        popped = true;
        if (req->out.len && !c->closed && ag_buf_append(&c->out, req->out.data, req->out.len) != 0)
            close = true;
        ag__http_req_unref(req);
        if (close) {
            c->closing = c->close_after_flush = true;
            break;
        }
    }
    struct ag_http_req *st = c->head;
    if (st && st->state == AG__RS_STREAMING && st->out.len && !c->closed) {
        /* a streamed answer that just became the head: its bytes so far go out now */
        if (ag_buf_append(&c->out, st->out.data, st->out.len) == 0) ag_buf_reset(&st->out);
        if (ag__http_stream_check(st)) return;
    }
    if (c->draining && ag__http_conn_idle(c)) c->closing = c->close_after_flush = true;
    /* The idle clock (or, when closing, the time the client gets to read its
     * last answer) starts when the queue empties. */
    if (popped && (ag__http_conn_idle(c) || c->close_after_flush))
        c->idle_deadline_ms = c->io->now_ms(c) + c->ctx->lim.idle_timeout_ms;
    if (c->closed) return;
    if (c->paused && !c->closing && c->queued < c->ctx->lim.max_pipeline && !c->in_feed) {
        struct ag_buf held = c->inbuf;
        ag_buf_init(&c->inbuf);
        c->paused = false;
        ag__http_conn_feed(c, held.data, held.len);
        ag_buf_free(&held);
        if (!c->paused && !c->closing) c->io->read(c, true);
        return; /* feed flushed and re-armed */
    }
    conn_rearm(c);
    c->io->flush(c);
}

static const char *conn_problem(int status, const char *detail, struct ag_buf *b)
{
    ag_buf_reset(b);
    ag_buf_printf(b, "{\"type\":\"about:blank\",\"title\":\"%s\",\"status\":%d,\"detail\":",
                  ag_http_reason(status), status);
    ag_buf_json_str(b, detail, strlen(detail));
    ag_buf_putc(b, '}');
    return b->data;
}

void ag__http_conn_fail(struct ag__http_conn *c, int status, const char *detail)
{
    struct ag_http_req *req = c->cur;
    c->cur = NULL;
    if (!req) {
        req = ag__http_req_new(c);
        if (!req) {
            conn_close(c);
            return;
        }
        queue_push(c, req);
    }
    c->closing = true;
    c->io->read(c, false);
    req->close_after = true;
    req->status = status;
    req->keep_alive = false;
    req->head = false;
    struct ag_buf body;
    ag_buf_init(&body);
    conn_problem(status, detail, &body);
    struct ag_buf *dst = (req == c->head) ? &c->out : &req->out;
    if (!body.data ||
        ag__http_serialize(req, "application/problem+json", body.data, body.len, dst) != 0)
        req->out.len = 0;
    ag_buf_free(&body);
    req->state = AG__RS_DONE;
    if (!c->in_feed) ag__http_conn_advance(c);
}

/* ---- parser callbacks ---- */

static struct ag_http_req *cb_req(http_parser *p)
{
    return ((struct ag__http_conn *)p->data)->cur;
}

static int fail_cb(http_parser *p, int status)
{
    ((struct ag__http_conn *)p->data)->fail_status = status;
    return -1;
}

static int fail_why(http_parser *p, int status, const char *detail)
{
    ((struct ag__http_conn *)p->data)->fail_detail = detail;
    return fail_cb(p, status);
}

/* http-parser (built non-strict) lets spaces into header names: refuse them. */
static bool is_token(const char *s)
{
    if (!*s) return false;
    for (; *s; s++)
        if (!ag__http_tchar((unsigned char)*s)) return false;
    return true;
}

static int grow_header_bytes(http_parser *p, struct ag_http_req *req, size_t n)
{
    struct ag__http_conn *c = p->data;
    req->header_bytes += n;
    return req->header_bytes > c->ctx->lim.max_header_bytes ? fail_cb(p, 431) : 0;
}

static int on_message_begin(http_parser *p)
{
    struct ag__http_conn *c = p->data;
    struct ag_http_req *req = ag__http_req_new(c);
    if (!req) return fail_cb(p, 503);
    queue_push(c, req);
    c->cur = req;
    req->start_ns = ag_clock_mono(ag_clock_system());
    req->deadline_ms = c->io->now_ms(c) + c->ctx->lim.header_timeout_ms;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct ag_http_req *req = cb_req(p);
    if (grow_header_bytes(p, req, n)) return -1;
    req->url_len += (uint32_t)n;
    return ag_buf_append(&req->raw, at, n) ? fail_cb(p, 503) : 0;
}

/* Terminate the url once, before the first header. */
static int end_url(struct ag_http_req *req)
{
    if (req->url_done) return 0;
    req->url_done = true;
    return ag_buf_putc(&req->raw, '\0');
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct ag_http_req *req = cb_req(p);
    if (!req || req->state != AG__RS_HEADERS) return 0; /* trailers are ignored */
    if (grow_header_bytes(p, req, n + 4) || end_url(req)) return -1;
    if (req->in_value || req->nhdrs == 0) {
        if (req->nhdrs && ag_buf_putc(&req->raw, '\0')) return fail_cb(p, 503);
        if (req->nhdrs == AG__HTTP_MAX_HEADERS) return fail_cb(p, 431);
        if (req->nhdrs == req->hdrs_cap) {
            size_t cap = req->hdrs_cap ? req->hdrs_cap * 2 : 16;
            struct ag__hdr *h = ag_realloc(req->hdrs, cap * sizeof *h);
            if (!h) return fail_cb(p, 503);
            req->hdrs = h;
            req->hdrs_cap = cap;
        }
        req->hdrs[req->nhdrs++] = (struct ag__hdr){(uint32_t)req->raw.len, 0, 0, 0};
        req->in_value = false;
    }
    req->hdrs[req->nhdrs - 1].name_len += (uint32_t)n;
    return ag_buf_append(&req->raw, at, n) ? fail_cb(p, 503) : 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct ag_http_req *req = cb_req(p);
    if (!req || req->state != AG__RS_HEADERS) return 0;
    if (grow_header_bytes(p, req, n)) return -1;
    struct ag__hdr *h = &req->hdrs[req->nhdrs - 1];
    struct ag__http_conn *c = p->data;
    /* A continuation not adjacent to the previous piece (and not the start of a
     * new read) means http-parser swallowed an obs-fold line break: refuse it. */
    bool adjacent = at == req->value_end || (req->value_end == NULL && at == c->feed_start);
    if (req->in_value && !adjacent) return fail_why(p, 400, "obsolete line folding in a header");
    req->value_end = (at + n == c->feed_end) ? NULL : at + n; /* NULL: continues in the next read */
    if (!req->in_value) {
        if (ag_buf_putc(&req->raw, '\0')) return fail_cb(p, 503);
        h->value = (uint32_t)req->raw.len;
        req->in_value = true;
    }
    h->value_len += (uint32_t)n;
    return ag_buf_append(&req->raw, at, n) ? fail_cb(p, 503) : 0;
}

/* Split the url into path and query; origin-form only. */
static int split_url(struct ag_http_req *req)
{
    char *url = req->raw.data;
    if (req->url_len == 0 || url[0] != '/') return -1;
    char *q = memchr(url, '?', req->url_len);
    char *hash = memchr(url, '#', req->url_len);
    if (hash) *hash = '\0';
    req->path = url;
    req->query = "";
    if (q && (!hash || q < hash)) {
        *q = '\0';
        req->query = q + 1;
    }
    return 0;
}

/* Count framing headers and check Expect; 0, or the status to refuse with
 * (*why says why). */
static int check_framing(struct ag_http_req *req, bool *expect_continue, const char **why)
{
    bool host = false;
    *why = "conflicting or malformed message framing headers";
    for (size_t i = 0; i < req->nhdrs; i++) {
        const char *name = req->raw.data + req->hdrs[i].name;
        const char *value = req->raw.data + req->hdrs[i].value;
        size_t nl = req->hdrs[i].name_len;
        if (!is_token(name)) {
            *why = "invalid header name";
            return 400;
        }
        if (AG__HTTP_NAME_IS(name, nl, "content-length"))
            req->n_content_length++;
        else if (AG__HTTP_NAME_IS(name, nl, "transfer-encoding")) {
            req->n_transfer_encoding++;
            if (strcasecmp(value, "chunked") != 0) return 400;
        } else if (AG__HTTP_NAME_IS(name, nl, "host"))
            host = true;
        else if (AG__HTTP_NAME_IS(name, nl, "expect")) {
            *why = "only Expect: 100-continue is supported";
            if (strcasecmp(value, "100-continue") != 0) return 417;
            *expect_continue = true;
        }
    }
    if (req->n_content_length > 1 || req->n_transfer_encoding > 1) return 400;
    if (req->n_content_length && req->n_transfer_encoding) return 400;
    if (!host && !req->http10) {
        *why = "HTTP/1.1 requires a Host header";
        return 400;
    }
    return 0;
}

static void send_continue(struct ag__http_conn *c, struct ag_http_req *req)
{
    /* Only when no earlier answer is owed, so the 100 cannot jump the queue; a
     * client whose 100 was withheld sends its body after its own short wait. */
    if (c->head != req || c->out.len) return;
    if (ag_buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n") == 0) c->io->flush(c);
}

static int on_headers_complete(http_parser *p)
{
    struct ag__http_conn *c = p->data;
    struct ag_http_req *req = cb_req(p);
    if (end_url(req) || (req->nhdrs && ag_buf_putc(&req->raw, '\0'))) return fail_cb(p, 503);
    req->http10 = p->http_major == 1 && p->http_minor == 0;
    req->method = http_method_str(p->method);
    req->head = p->method == HTTP_HEAD;
    req->keep_alive = http_should_keep_alive(p);
    if (!req->keep_alive) c->no_fast = true; /* http-parser refuses what follows */
    if (p->http_major != 1 || p->http_minor > 1)
        return fail_why(p, 505, "only HTTP/1.0 and HTTP/1.1 are served");
    bool expect = false;
    const char *why;
    int status = check_framing(req, &expect, &why);
    if (status) return fail_why(p, status, why);
    if (split_url(req)) return fail_why(p, 400, "the request target must be an absolute path");
    if (req->n_content_length && p->content_length > c->ctx->lim.max_body_bytes)
        return fail_cb(p, 413);
    req->state = AG__RS_BODY;
    req->deadline_ms = c->io->now_ms(c) + c->ctx->lim.body_timeout_ms;
    if (expect && (req->n_content_length ? p->content_length > 0 : req->n_transfer_encoding > 0))
        send_continue(c, req);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct ag__http_conn *c = p->data;
    struct ag_http_req *req = cb_req(p);
    if (req->body.len + n > c->ctx->lim.max_body_bytes) return fail_cb(p, 413);
    return ag_buf_append(&req->body, at, n) ? fail_cb(p, 503) : 0;
}

static int on_message_complete(http_parser *p)
{
    struct ag__http_conn *c = p->data;
    struct ag_http_req *req = c->cur;
    c->cur = NULL;
    req->state = AG__RS_DISPATCHED;
    c->ready = req;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- feeding ---- */

static int status_for_parse_error(struct ag__http_conn *c, enum http_errno e)
{
    if (c->fail_status) return c->fail_status;
    return e == HPE_HEADER_OVERFLOW ? 431 : 400;
}

static const char *detail_for(struct ag__http_conn *c, int status, enum http_errno e)
{
    if (c->fail_detail) return c->fail_detail;
    switch (status) {
    case 413:
        return "the request body exceeds the limit";
    case 431:
        return "the request line and headers exceed the limit";
    case 503:
        return "the server is out of memory";
    default:
        return http_errno_description(e);
    }
}

static void dispatch_ready(struct ag__http_conn *c)
{
    struct ag_http_req *req = c->ready;
    c->ready = NULL;
    if (c->draining) req->close_after = true;
    ag__http_dispatch(req);
}

/* The fast path (fastparse.c): a whole request, head and body, at data[0..n)
 * that the scanner takes and the limits allow, made into a request and
 * dispatched exactly as the callbacks above would. The head is copied into
 * req->raw from the target on, with NULs written over the separators (the
 * space before the version, each colon, each CR), so the layout is the
 * callbacks' (offsets into raw). Returns the bytes taken; 0: http-parser
 * parses them (declined, incomplete, over a limit, out of memory). */
static size_t fast_request(struct ag__http_conn *c, const char *data, size_t n)
{
    struct ag__hdr h[AG__HTTP_MAX_HEADERS];
    struct ag__fp m;
    if (c->no_fast || !ag__fp_request(data, n, &m, h, AG_ARRAY_SIZE(h)) || !m.host) return 0;
    size_t body = m.content_length > 0 ? (size_t)m.content_length : 0;
    size_t hb = m.url_len; /* the header bytes as the callbacks count them */
    for (size_t i = 0; i < m.nhdrs; i++) hb += h[i].name_len + 4 + h[i].value_len;
    if (hb > c->ctx->lim.max_header_bytes || body > c->ctx->lim.max_body_bytes ||
        body > n - m.head_len)
        return 0;
    struct ag_http_req *req = ag__http_req_new(c);
    if (!req) return 0;
    size_t cap = req->hdrs_cap;
    if (cap < m.nhdrs) cap = m.nhdrs < 16 ? 16 : m.nhdrs;
    struct ag__hdr *hv = cap == req->hdrs_cap ? req->hdrs : ag_realloc(req->hdrs, cap * sizeof *hv);
    if (hv) req->hdrs = hv, req->hdrs_cap = cap;
    if (!hv || ag_buf_append(&req->raw, data + m.url, m.head_len - m.url) ||
        (body && ag_buf_append(&req->body, data + m.head_len, body))) {
        ag__http_req_unref(req);
        return 0;
    }
    char *raw = req->raw.data;
    raw[m.url_len] = '\0';
    for (size_t i = 0; i < m.nhdrs; i++) {
        struct ag__hdr *d = &req->hdrs[i];
        *d = (struct ag__hdr){h[i].name - m.url, h[i].name_len, h[i].value - m.url, h[i].value_len};
        raw[d->name + d->name_len] = '\0';
        raw[d->value + d->value_len] = '\0';
    }
    req->nhdrs = m.nhdrs;
    req->url_len = m.url_len;
    req->url_done = true;
    req->header_bytes = hb;
    req->n_content_length = m.content_length >= 0;
    req->method = http_method_str((enum http_method)m.method);
    req->head = m.method == HTTP_HEAD;
    req->keep_alive = true;
    split_url(req); /* cannot fail: the target starts with '/' */
    queue_push(c, req);
    req->start_ns = ag_clock_mono(ag_clock_system());
    req->state = AG__RS_DISPATCHED;
    c->ready = req;
    dispatch_ready(c);
    return m.head_len + body;
}

/* Parse as much of data as allowed; returns the bytes consumed. */
static size_t feed_some(struct ag__http_conn *c, const char *data, size_t n)
{
    size_t done = 0;
    while (done < n && !c->closing) {
        if (c->queued >= c->ctx->lim.max_pipeline && !c->cur) {
            c->paused = true;
            c->io->read(c, false);
            break;
        }
        if (!c->cur) {
            size_t took = fast_request(c, data + done, n - done);
            if (took) {
                done += took;
                continue;
            }
        }
        c->feed_start = data + done;
        c->feed_end = data + n;
        size_t used = http_parser_execute(&c->parser, &parser_settings, data + done, n - done);
        done += used;
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            if (c->ready) dispatch_ready(c);
            continue;
        }
        if (e != HPE_OK) {
            int status = status_for_parse_error(c, e);
            const char *detail = detail_for(c, status, e);
            c->fail_status = 0;
            c->fail_detail = NULL;
            ag__http_conn_fail(c, status, detail);
            return n;
        }
        if (used == 0) break;
    }
    return done;
}

void ag__http_conn_feed(struct ag__http_conn *c, const char *data, size_t n)
{
    if (c->closing || c->closed) return;
    if (c->paused) {
        if (ag_buf_append(&c->inbuf, data, n)) conn_close(c);
        return;
    }
    c->refs++;
    c->in_feed++;
    size_t used = feed_some(c, data, n);
    c->in_feed--;
    if (c->paused && used < n && ag_buf_append(&c->inbuf, data + used, n - used)) conn_close(c);
    ag__http_conn_advance(c);
    ag__http_conn_unref(c);
}

/* Tell every parked request (ag_http_req_on_abort) that waiting is over. Its
 * callback answers, which may pop the queue: start over after each one. */
static void abort_parked(struct ag__http_conn *c)
{
    c->refs++;
    c->in_feed++; /* answers are moved to conn->out by the caller's advance */
    for (bool again = true; again;) {
        again = false;
        for (struct ag_http_req *r = c->head; r; r = r->next) {
            bool live = r->state == AG__RS_DISPATCHED || r->state == AG__RS_STREAMING;
            if (!live || !r->abort_cb) continue;
            void (*cb)(struct ag_http_req *, void *) = r->abort_cb;
            r->abort_cb = NULL;
            cb(r, r->abort_ud);
            again = true;
            break;
        }
    }
    c->in_feed--;
    ag__http_conn_unref(c);
}

void ag__http_conn_eof(struct ag__http_conn *c)
{
    if (c->closed) return;
    abort_parked(c);
    /* A partial request is abandoned; answers still owed are written first. */
    c->closing = true;
    c->io->read(c, false);
    if (c->cur && c->cur->state != AG__RS_DISPATCHED) {
        struct ag_http_req *req = c->cur;
        c->cur = NULL;
        req->state = AG__RS_DONE;
        req->out.len = 0;
    }
    c->draining = true; /* answer what is owed, then close */
    if (!c->head) {
        conn_close(c);
        return;
    }
    ag__http_conn_advance(c);
}

void ag__http_conn_drain(struct ag__http_conn *c)
{
    if (c->closed || c->draining) return;
    c->draining = true;
    abort_parked(c);
    if (ag__http_conn_idle(c)) {
        conn_close(c);
        return;
    }
    /* Stop taking new requests; what is queued is answered, then we close. */
    c->closing = true;
    c->io->read(c, false);
    if (c->cur) {
        c->cur->state = AG__RS_DONE;
        c->cur->out.len = 0;
        c->cur = NULL;
    }
    ag__http_conn_advance(c);
}

void ag__http_conn_closed(struct ag__http_conn *c)
{
    c->closed = true;
    c->closing = true;
    c->cur = NULL;
    abort_parked(c);
    while (c->head) {
        struct ag_http_req *req = queue_pop(c);
        ag__http_req_unref(req); /* a dispatched one lives on until answered */
    }
    ag__http_conn_unref(c);
}
