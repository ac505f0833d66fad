/*
 * Streamed answers and Server-Sent Events.
 *
 * Framing. ag_http_stream_begin serializes the status line and headers with
 * "Transfer-Encoding: chunked" (HTTP/1.1) or with no length and "Connection:
 * close" (HTTP/1.0: the close ends the body); each write becomes one chunk and
 * ag_http_stream_end writes the last chunk. The request stays in the
 * connection's queue in AG__RS_STREAMING, holding the answer's reference, until
 * the end; answers to requests pipelined behind it wait their turn (conn.c).
 *
 * Backpressure. The bytes a stream has written and the client has not taken
 * (req->out while it is not the head; conn->out plus what the transport holds
 * while it is) are checked after every write against lim.max_stream_unsent. Over
 * it the client is dropped at once: the buffers are freed, the connection is
 * closed, agora_sse_dropped_total counts it, and the producer hears it through
 * its abort callback (the close runs it) and ends the stream. Nothing a slow
 * client does can make the server hold more than the cap per stream.
 *
 * Heartbeats. An SSE stream (ag_http_sse_begin) that is the head of its
 * connection arms the connection timer for its heartbeat deadline; when it
 * passes without an event, ": ping" goes out. The deadline moves with every
 * write, so a busy stream sends no pings.
 */
#include <string.h>

#include "http/internal.h"

static struct ag__observe *observer(struct ag__http_conn *c)
{
    return c->ctx->router ? ag__http_router_observer(c->ctx->router) : NULL;
}

size_t ag__http_stream_unsent(struct ag_http_req *req)
{
    struct ag__http_conn *c = req->conn;
    size_t n = req->out.len;
    if (req == c->head) n += c->out.len + (c->io->pending ? c->io->pending(c) : 0);
    return n;
}

size_t ag_http_stream_unsent(struct ag_http_req *req)
{
    return req && req->state == AG__RS_STREAMING && !req->conn->closed ? ag__http_stream_unsent(req)
                                                                       : 0;
}

/* Close the connection of a stream whose client cannot keep up. */
static void drop(struct ag_http_req *req)
{
    struct ag__http_conn *c = req->conn;
    if (req->dropped) return;
    req->dropped = req->close_after = true;
    ag__http_observe_sse(observer(c), 0, true);
    ag_buf_free(&req->out);
    ag_buf_free(&c->out);
    if (c->closed) return;
    c->closing = true;
    c->io->read(c, false);
    c->io->close(c); /* conn_closed runs the abort callbacks (now or from the loop) */
}

bool ag__http_stream_check(struct ag_http_req *req)
{
    struct ag__http_conn *c = req->conn;
    if (c->closed) return true;
    if (ag__http_stream_unsent(req) <= c->ctx->lim.max_stream_unsent) return false;
    drop(req);
    return true;
}

int ag_http_stream_begin(struct ag_http_req *req, int status, const char *content_type)
{
    if (!req || req->status || req->state != AG__RS_DISPATCHED) return AG_EINVAL;
    struct ag__http_conn *c = req->conn;
    if (status < 200 || status > 599) status = 500;
    req->status = status;
    req->streaming = true;
    req->chunked = !req->http10;
    ag__http_run_on_response(req);
    req->state = AG__RS_STREAMING;
    req->hb_deadline_ms = c->io->now_ms(c) + c->ctx->lim.sse_heartbeat_ms;
    if (req->sse) ag__http_observe_sse(observer(c), 1, false);
    if (c->closed) return 0;
    struct ag_buf *dst = (req == c->head) ? &c->out : &req->out;
    size_t mark = dst->len;
    if (ag__http_serialize(req, content_type, NULL, 0, dst) != 0) {
        dst->len = mark;
        drop(req);
        return 0;
    }
    if (!c->in_feed) ag__http_conn_advance(c);
    return 0;
}

/* Append one chunk (or the raw bytes on HTTP/1.0) to where the stream's bytes go. */
static int put_chunk(struct ag_http_req *req, const void *data, size_t len)
{
    struct ag__http_conn *c = req->conn;
    struct ag_buf *dst = (req == c->head) ? &c->out : &req->out;
    int rc = 0;
    if (req->chunked) rc = ag_buf_printf(dst, "%zx\r\n", len);
    if (!rc) rc = ag_buf_append(dst, data, len);
    if (!rc && req->chunked) rc = ag_buf_append(dst, "\r\n", 2);
    return rc;
}

int ag_http_stream_write(struct ag_http_req *req, const void *data, size_t len)
{
    if (!req || req->state != AG__RS_STREAMING) return AG_EINVAL;
    struct ag__http_conn *c = req->conn;
    if (c->closed || req->dropped) return AG_ECLOSED;
    if (req->head || len == 0) return 0;
    req->refs++; /* the abort callback may end the stream from inside a drop */
    int rc = put_chunk(req, data, len);
    if (rc) {
        drop(req);
    } else if (!ag__http_stream_check(req)) {
        req->hb_deadline_ms = c->io->now_ms(c) + c->ctx->lim.sse_heartbeat_ms;
        if (req == c->head && !c->in_feed) c->io->flush(c);
    }
    bool gone = c->closed || req->dropped;
    ag__http_req_unref(req);
    return rc || gone ? AG_ECLOSED : 0;
}

int ag_http_stream_end(struct ag_http_req *req)
{
    if (!req || req->state != AG__RS_STREAMING) return AG_EINVAL;
    struct ag__http_conn *c = req->conn;
    req->abort_cb = NULL;
    if (!c->closed && req->chunked && !req->head) {
        struct ag_buf *dst = (req == c->head) ? &c->out : &req->out;
        if (ag_buf_append(dst, "0\r\n\r\n", 5) != 0) req->close_after = true;
    }
    req->state = AG__RS_DONE;
    if (req->sse) ag__http_observe_sse(observer(c), -1, false);
    if (!c->closed && !c->in_feed) ag__http_conn_advance(c);
    ag__http_req_unref(req); /* the answer's reference */
    return 0;
}

void ag__http_stream_timeout(struct ag_http_req *req, uint64_t now_ms)
{
    if (!req->sse || now_ms < req->hb_deadline_ms) return;
    static const char ping[] = ": ping\n\n";
    ag_http_stream_write(req, ping, sizeof ping - 1); /* moves the deadline */
}

/* ---- Server-Sent Events ---- */

int ag_http_sse_begin(struct ag_http_req *req)
{
    if (!req || req->status || req->state != AG__RS_DISPATCHED) return AG_EINVAL;
    int rc = ag_http_resp_header(req, "Cache-Control", "no-cache");
    if (!rc) rc = ag_http_resp_header(req, "X-Accel-Buffering", "no");
    if (rc) return rc;
    req->sse = true;
    return ag_http_stream_begin(req, 200, "text/event-stream");
}

static bool field_ok(const char *s)
{
    return !s || !strpbrk(s, "\r\n");
}

int ag_http_sse_format(struct ag_buf *out, const char *id, const char *event, const char *data,
                       size_t len)
{
    if (!out || !field_ok(id) || !field_ok(event) || (id && strlen(id) > 256)) return AG_EINVAL;
    int rc = 0;
    if (id) rc = ag_buf_printf(out, "id: %s\n", id);
    if (!rc && event) rc = ag_buf_printf(out, "event: %s\n", event);
    const char *p = data ? data : "", *end = p + (data ? len : 0);
    while (!rc) { /* one data line per line (an empty payload: one empty data line) */
        const char *eol = p;
        while (eol < end && *eol != '\n' && *eol != '\r') eol++;
        rc = ag_buf_append(out, "data: ", 6);
        if (!rc) rc = ag_buf_append(out, p, (size_t)(eol - p));
        if (!rc) rc = ag_buf_putc(out, '\n');
        if (eol == end) break;
        if (*eol == '\r' && eol + 1 < end && eol[1] == '\n') eol++;
        p = eol + 1;
    }
    if (!rc) rc = ag_buf_putc(out, '\n');
    return rc;
}

int ag_http_sse_send(struct ag_http_req *req, const char *id, const char *event, const char *data)
{
    if (!req || req->state != AG__RS_STREAMING) return AG_EINVAL;
    struct ag_buf b;
    ag_buf_init(&b);
    int rc = ag_http_sse_format(&b, id, event, data, data ? strlen(data) : 0);
    if (!rc) rc = ag_http_stream_write(req, b.data, b.len);
    ag_buf_free(&b);
    return rc;
}
