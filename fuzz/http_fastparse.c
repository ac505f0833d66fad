/* libFuzzer harness, differential: the fast path in front of http-parser
 * (src/http/fastparse.c) against http-parser alone. The input is fed whole to
 * one connection with the fast path on and to one with it off (conn.no_fast);
 * a middleware echoes every request back whole (method, target, each header,
 * body), and the two outputs must be byte-identical (Date lines aside). The
 * same bytes as an upstream response: whatever ag__fp_response takes,
 * http-parser must parse to the same status, headers, body length and
 * keep-alive. Any difference aborts (a finding), as does any sanitizer report. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/internal.h"

static int dump(struct ag_http_req *req, void *ud)
{
    (void)ud;
    struct ag_buf b;
    ag_buf_init(&b);
    ag_buf_printf(&b, "%s|%s|%s\n", ag_http_req_method(req), ag_http_req_path(req),
                  ag_http_req_query(req));
    for (size_t i = 0;; i++) {
        const char *n, *v;
        ag_http_req_header_at(req, i, &n, &v);
        if (!n) break;
        ag_buf_printf(&b, "[%s]=[%s]\n", n, v);
    }
    size_t len;
    const char *body = ag_http_req_body(req, &len);
    ag_buf_printf(&b, "body %zu:", len);
    ag_buf_append(&b, body, len);
    int rc = ag_http_respond(req, 200, "text/plain", b.data, b.len);
    ag_buf_free(&b);
    return rc ? rc : 1;
}

static void serve(struct ag_http_router *r, const char *in, size_t n, bool fast, struct ag_buf *out)
{
    struct ag_http_server_config cfg = {.max_header_bytes = 1024, .max_body_bytes = 256};
    struct ag__http_memconn *m;
    if (ag__http_memconn_new(r, &cfg, &m)) abort();
    m->conn.no_fast = !fast;
    ag__http_memconn_feed(m, in, n);
    ag_buf_reset(out);
    ag_buf_putc(out, m->closed ? 'C' : 'O');
    const char *p = m->output.data ? m->output.data : "", *end = p + m->output.len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl + 1 : end;
        if (strncmp(p, "Date: ", 6) != 0) ag_buf_append(out, p, (size_t)(e - p));
        p = e;
    }
    ag__http_memconn_free(m);
}

struct seen {
    struct ag_buf hdrs; /* name NUL value NUL ... */
    bool in_value;
    size_t nhdrs, body;
    bool done;
};

static int r_field(http_parser *p, const char *at, size_t n)
{
    struct seen *s = p->data;
    if (s->in_value || !s->nhdrs) {
        if (s->nhdrs) ag_buf_putc(&s->hdrs, '\0');
        s->nhdrs++;
        s->in_value = false;
    }
    return ag_buf_append(&s->hdrs, at, n) ? -1 : 0;
}

static int r_value(http_parser *p, const char *at, size_t n)
{
    struct seen *s = p->data;
    if (!s->in_value) ag_buf_putc(&s->hdrs, '\0');
    s->in_value = true;
    return ag_buf_append(&s->hdrs, at, n) ? -1 : 0;
}

static int r_body(http_parser *p, const char *at, size_t n)
{
    (void)at;
    ((struct seen *)p->data)->body += n;
    return 0;
}

static int r_done(http_parser *p)
{
    ((struct seen *)p->data)->done = true;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings rs = {
    .on_header_field = r_field,
    .on_header_value = r_value,
    .on_body = r_body,
    .on_message_complete = r_done,
};

static void response(const char *in, size_t n)
{
    struct ag__hdr h[32];
    struct ag__fp m;
    if (!ag__fp_response(in, n, &m, h, 32) || (size_t)m.content_length != n - m.head_len) return;
    http_parser p;
    http_parser_init(&p, HTTP_RESPONSE);
    struct seen s = {0};
    ag_buf_init(&s.hdrs);
    p.data = &s;
    http_parser_execute(&p, &rs, in, n);
    if (!s.done || p.status_code != m.status || s.body != (size_t)m.content_length ||
        s.nhdrs != m.nhdrs || http_should_keep_alive(&p) != !m.close)
        abort();
    const char *q = s.hdrs.data;
    for (size_t i = 0; i < m.nhdrs; i++) {
        if (strlen(q) != h[i].name_len || memcmp(q, in + h[i].name, h[i].name_len)) abort();
        q += strlen(q) + 1;
        if (strlen(q) != h[i].value_len || memcmp(q, in + h[i].value, h[i].value_len)) abort();
        q += strlen(q) + 1;
    }
    ag_buf_free(&s.hdrs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct ag_http_router *router;
    if (!router) {
        struct ag_http_middleware mw = {.name = "dump", .on_request = dump};
        if (ag_http_router_new(&router) || ag_http_router_use(router, &mw)) abort();
    }
    const char *in = (const char *)data;
    struct ag_buf a, b;
    ag_buf_init(&a);
    ag_buf_init(&b);
    serve(router, in, size, true, &a);
    serve(router, in, size, false, &b);
    if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0) abort();
    ag_buf_free(&a);
    ag_buf_free(&b);
    response(in, size);
    return 0;
}
