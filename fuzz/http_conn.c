/* libFuzzer harness: arbitrary bytes into one HTTP connection's state machine
 * (the code the socket server runs), over the memory transport. The input is
 * split into reads at 0xFF bytes, the fake clock advances between reads (so the
 * header/body/idle timeouts fire), and a few deferred requests are answered at
 * the end, exercising out-of-order answers. Any crash, leak or sanitizer report
 * is a bug. */
#include <stdint.h>
#include <string.h>

#include "http/internal.h"

static struct ag_http_req *deferred[4];
static int ndeferred;

static int hello(struct ag_http_req *req, void *ud)
{
    (void)ud;
    return ag_http_respond(req, 200, "text/plain", "hello", 5);
}

static int echo(struct ag_http_req *req, void *ud)
{
    (void)ud;
    size_t n;
    const char *b = ag_http_req_body(req, &n);
    return ag_http_respond(req, 200, NULL, b, n);
}

static int param(struct ag_http_req *req, void *ud)
{
    (void)ud;
    const char *q = ag_http_req_query_param(req, "q");
    return ag_http_respond_json(
        req, 200, json_pack("{s:s, s:s?}", "id", ag_http_req_param(req, "id"), "q", q));
}

static int later(struct ag_http_req *req, void *ud)
{
    (void)ud;
    if (ndeferred == 4) return AG_EAGAIN;
    deferred[ndeferred++] = req;
    return 0;
}

static int json_in(struct ag_http_req *req, void *ud)
{
    (void)ud;
    json_t *j;
    int rc = ag_http_req_json(req, &j, NULL);
    if (rc) return rc;
    return ag_http_respond_json(req, 201, j);
}

static struct ag_http_router *make_router(void)
{
    struct ag_http_router *r;
    if (ag_http_router_new(&r)) return NULL;
    ag_http_route(r, "GET", "/hello", hello, NULL);
    ag_http_route(r, "POST", "/echo", echo, NULL);
    ag_http_route(r, "GET", "/orders/{id}", param, NULL);
    ag_http_route(r, "GET", "/later", later, NULL);
    ag_http_route(r, "POST", "/json", json_in, NULL);
    struct ag_http_observe o = {.request_id = true, .trace = true};
    ag_http_router_observe(r, &o);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct ag_http_router *router;
    if (!router) router = make_router();
    struct ag_http_server_config cfg = {.max_header_bytes = 2048,
                                        .max_body_bytes = 4096,
                                        .max_pipeline = 4,
                                        .header_timeout_ms = 50,
                                        .body_timeout_ms = 50,
                                        .idle_timeout_ms = 100};
    struct ag__http_memconn *m;
    if (ag__http_memconn_new(router, &cfg, &m)) return 0;
    ndeferred = 0;
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *cut = memchr(p, 0xff, (size_t)(end - p));
        size_t n = cut ? (size_t)(cut - p) : (size_t)(end - p);
        ag__http_memconn_feed(m, p, n);
        ag__http_memconn_advance(m, 20);
        p += n + (cut ? 1 : 0);
    }
    /* Answer newest first; an answer can unblock held input that defers more. */
    while (ndeferred > 0) {
        struct ag_http_req *req = deferred[--ndeferred];
        ag_http_respond(req, 200, "text/plain", "late", 4);
    }
    ag__http_memconn_advance(m, 1000);
    ag__http_memconn_free(m);
    return 0;
}
