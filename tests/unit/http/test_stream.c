/* Streamed answers and Server-Sent Events over the memory transport: the SSE
 * formatter (multi-line data, CRLF, refused fields), chunked framing and its end,
 * HTTP/1.0 close-delimited streams, heartbeats on the fake clock, a client that
 * never reads being dropped at the unsent cap (its memory released, the producer
 * told through its abort callback, agora_sse_dropped_total counted), and a drain
 * ending a stream. */
#include <criterion/criterion.h>
#include <string.h>

#include "http/internal.h"

static struct ag_http_router *router;
static struct ag__http_memconn *m;
static struct ag_obs_registry *reg;
static struct ag_http_req *streaming; /* the request GET /sse keeps */
static int aborted;                   /* abort callbacks run */

static void on_abort(struct ag_http_req *req, void *ud)
{
    (void)ud;
    aborted++;
    ag_http_stream_end(req);
    streaming = NULL;
}

static int sse_handler(struct ag_http_req *req, void *ud)
{
    (void)ud;
    cr_assert_eq(ag_http_sse_begin(req), 0);
    cr_assert_eq(ag_http_req_on_abort(req, on_abort, NULL), 0);
    cr_assert_eq(ag_http_sse_send(req, "1", "status", "{\"a\":1}"), 0);
    streaming = req;
    return 0;
}

static int text_handler(struct ag_http_req *req, void *ud)
{
    (void)ud;
    return ag_http_respond(req, 200, "text/plain", "hi", 2);
}

static void setup_with(const struct ag_http_server_config *cfg)
{
    cr_assert_eq(ag_http_router_new(&router), 0);
    cr_assert_eq(ag_obs_registry_new(&reg), 0);
    struct ag_http_observe o = {.metrics = reg};
    cr_assert_eq(ag_http_router_observe(router, &o), 0);
    cr_assert_eq(ag_http_route(router, "GET", "/sse", sse_handler, NULL), 0);
    cr_assert_eq(ag_http_route(router, "GET", "/text", text_handler, NULL), 0);
    cr_assert_eq(ag__http_memconn_new(router, cfg, &m), 0);
    streaming = NULL;
    aborted = 0;
}

static void setup(void)
{
    static const struct ag_http_server_config cfg = {.max_stream_unsent = 4096,
                                                     .sse_heartbeat_ms = 1000};
    setup_with(&cfg);
}

static void teardown(void)
{
    ag__http_memconn_free(m);
    ag_http_router_free(router);
    ag_obs_registry_free(reg);
}

static void feed(const char *s)
{
    ag__http_memconn_feed(m, s, strlen(s));
}

static const char *out(void)
{
    return m->output.data ? m->output.data : "";
}

static double metric(const char *name)
{
    struct ag_buf b;
    ag_buf_init(&b);
    cr_assert_eq(ag_obs_registry_render(reg, &b), 0);
    double v = -1;
    for (const char *p = b.data; p && (p = strstr(p, name)); p += strlen(name))
        if ((p == b.data || p[-1] == '\n') && p[strlen(name)] == ' ')
            v = strtod(p + strlen(name), NULL);
    ag_buf_free(&b);
    return v;
}

static char *fmt(const char *id, const char *event, const char *data)
{
    static char text[512];
    struct ag_buf b;
    ag_buf_init(&b);
    int rc = ag_http_sse_format(&b, id, event, data, data ? strlen(data) : 0);
    snprintf(text, sizeof text, "%s", rc ? "<EINVAL>" : b.data);
    ag_buf_free(&b);
    return text;
}

Test(sse_format, fields_and_lines)
{
    cr_assert_str_eq(fmt("7", "status", "{\"a\":1}"), "id: 7\nevent: status\ndata: {\"a\":1}\n\n");
    cr_assert_str_eq(fmt(NULL, NULL, "x"), "data: x\n\n");
    cr_assert_str_eq(fmt(NULL, NULL, "a\nb\r\nc\rd"), "data: a\ndata: b\ndata: c\ndata: d\n\n");
    cr_assert_str_eq(fmt(NULL, NULL, "a\n"), "data: a\ndata: \n\n", "a trailing newline is kept");
    cr_assert_str_eq(fmt(NULL, "e", ""), "event: e\ndata: \n\n");
    cr_assert_str_eq(fmt("1\n2", NULL, "x"), "<EINVAL>", "an id cannot hold a line break");
    cr_assert_str_eq(fmt(NULL, "a\rb", "x"), "<EINVAL>", "nor an event name");
}

Test(sse_stream, chunked_events_and_end, .init = setup, .fini = teardown)
{
    feed("GET /sse HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert_not_null(streaming);
    cr_assert_not_null(strstr(out(), "HTTP/1.1 200 OK\r\n"));
    cr_assert_not_null(strstr(out(), "Transfer-Encoding: chunked\r\n"));
    cr_assert_not_null(strstr(out(), "Content-Type: text/event-stream\r\n"));
    cr_assert_not_null(strstr(out(), "Cache-Control: no-cache\r\n"));
    cr_assert_null(strstr(out(), "Content-Length"));
    const char *ev = "id: 1\nevent: status\ndata: {\"a\":1}\n\n";
    char chunk[128];
    snprintf(chunk, sizeof chunk, "\r\n\r\n%zx\r\n%s\r\n", strlen(ev), ev);
    cr_assert_not_null(strstr(out(), chunk), "the event is one chunk right after the headers");
    cr_assert_eq(metric("agora_sse_streams"), 1);
    cr_assert_eq(ag_http_resp_header(streaming, "X-Late", "1"), AG_EINVAL, "headers are sent");
    cr_assert_eq(ag_http_respond(streaming, 200, NULL, NULL, 0), AG_EINVAL);
    ag_http_stream_end(streaming);
    streaming = NULL;
    size_t n = m->output.len;
    cr_assert(n >= 5 && memcmp(out() + n - 5, "0\r\n\r\n", 5) == 0, "the last chunk ends it");
    cr_assert_eq(metric("agora_sse_streams"), 0);
    cr_assert_not(m->closed, "keep-alive after a chunked stream");
    feed("GET /text HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert_not_null(strstr(out() + n, "HTTP/1.1 200 OK"), "the next request is answered");
}

Test(sse_stream, pipelined_after_stream_waits, .init = setup, .fini = teardown)
{
    feed("GET /sse HTTP/1.1\r\nHost: x\r\n\r\nGET /text HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert_null(strstr(out(), "\r\n\r\nhi"), "the answer behind a stream waits for its end");
    ag_http_stream_end(streaming);
    streaming = NULL;
    const char *end = strstr(out(), "0\r\n\r\n");
    cr_assert_not_null(end);
    cr_assert_not_null(strstr(end, "HTTP/1.1 200 OK"), "then it follows, in order");
}

Test(sse_stream, http10_close_delimited, .init = setup, .fini = teardown)
{
    feed("GET /sse HTTP/1.0\r\n\r\n");
    cr_assert_null(strstr(out(), "Transfer-Encoding"));
    cr_assert_not_null(strstr(out(), "Connection: close\r\n"));
    cr_assert_not_null(strstr(out(), "\r\n\r\nid: 1\nevent: status\n"),
                       "raw bytes, no chunk sizes");
    ag_http_stream_end(streaming);
    streaming = NULL;
    cr_assert(m->closed, "the close ends an HTTP/1.0 stream");
}

Test(sse_stream, heartbeat_after_silence, .init = setup, .fini = teardown)
{
    feed("GET /sse HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert_null(strstr(out(), ": ping"));
    ag__http_memconn_advance(m, 999);
    cr_assert_null(strstr(out(), ": ping"), "not before the interval");
    ag__http_memconn_advance(m, 2);
    cr_assert_not_null(strstr(out(), "8\r\n: ping\n\n\r\n"),
                       "a comment chunk after 1 s of silence");
    ag__http_memconn_advance(m, 500);
    cr_assert_eq(ag_http_sse_send(streaming, "2", "status", "x"), 0);
    size_t n = m->output.len;
    ag__http_memconn_advance(m, 900);
    cr_assert_eq(m->output.len, n, "an event moves the next ping");
    ag__http_memconn_advance(m, 200);
    cr_assert_not_null(strstr(out() + n, ": ping"));
    cr_assert_not(m->closed, "the idle timeout does not cut a stream");
    ag_http_stream_end(streaming);
}

Test(sse_stream, slow_client_dropped, .init = setup, .fini = teardown)
{
    feed("GET /sse HTTP/1.1\r\nHost: x\r\n\r\n");
    m->stalled = true; /* the client stops reading: bytes stay unsent */
    char data[1000];
    memset(data, 'x', sizeof data - 1);
    data[sizeof data - 1] = '\0';
    int rc = 0, sent = 0;
    while (rc == 0 && sent < 100) {
        rc = ag_http_sse_send(streaming, NULL, NULL, data);
        sent++;
    }
    cr_assert_eq(rc, AG_ECLOSED, "a write over the cap reports the client gone");
    cr_assert(sent <= 5, "dropped at the 4 KiB cap, not after %d events", sent);
    cr_assert(m->closed, "the connection is closed");
    cr_assert_eq(aborted, 1, "the producer was told (and ended the stream)");
    cr_assert_null(streaming);
    cr_assert_eq(m->conn.out.cap, 0, "the unsent bytes were freed");
    cr_assert_eq(metric("agora_sse_dropped_total"), 1);
    cr_assert_eq(metric("agora_sse_streams"), 0);
}

Test(sse_stream, drain_ends_stream, .init = setup, .fini = teardown)
{
    feed("GET /sse HTTP/1.1\r\nHost: x\r\n\r\n");
    ag__http_conn_drain(&m->conn);
    cr_assert_eq(aborted, 1, "a drain tells the producer");
    cr_assert(m->closed, "and the connection closes after the stream's end");
    size_t n = m->output.len;
    cr_assert(n >= 5 && memcmp(out() + n - 5, "0\r\n\r\n", 5) == 0, "a clean end");
}

Test(sse_stream, client_eof_tells_producer, .init = setup, .fini = teardown)
{
    feed("GET /sse HTTP/1.1\r\nHost: x\r\n\r\n");
    ag__http_conn_eof(&m->conn);
    cr_assert_eq(aborted, 1);
    cr_assert_null(streaming);
}
