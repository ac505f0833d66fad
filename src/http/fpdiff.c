/*
 * The fast path (fastparse.c) checked against http-parser alone: the one
 * differential the unit tests (tests/unit/http/test_fastparse.c) and the fuzz
 * harness (fuzz/http_fastparse.c) both run, so the oracle they trust is the
 * same code. Requests go through the memory transport (memconn.c) twice, with
 * the fast path on and off, behind a middleware that echoes each request back
 * whole; responses are parsed by ag__fp_response and by http-parser's callbacks.
 * Nothing here is linked into the agora binary (only tests and fuzzing call it).
 */
#include <string.h>

#include "http/internal.h"

int ag__http_echo_whole(struct ag_http_req *req, void *ud)
{
    AG_UNUSED(ud);
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

/* What one memory connection writes for `in` (fast path on or off) into out:
 * 'C' (it closed) or 'O', then the output without its Date lines. */
static int transcript(struct ag_http_router *r, const struct ag_http_server_config *cfg,
                      const char *in, size_t n, bool fast, struct ag_buf *out)
{
    struct ag__http_memconn *m;
    int rc = ag__http_memconn_new(r, cfg, &m);
    if (rc) return rc;
    m->conn.no_fast = !fast;
    ag__http_memconn_feed(m, in, n);
    ag_buf_reset(out);
    ag_buf_putc(out, m->closed ? 'C' : 'O');
    const char *p = m->output.data ? m->output.data : "";
    const char *end = p + m->output.len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl + 1 : end;
        if (strncmp(p, "Date: ", 6) != 0) ag_buf_append(out, p, (size_t)(e - p));
        p = e;
    }
    ag__http_memconn_free(m);
    return 0;
}

int ag__fp_request_differs(struct ag_http_router *r, const struct ag_http_server_config *cfg,
                           const char *in, size_t n, struct ag_buf *fast, struct ag_buf *slow)
{
    int rc = transcript(r, cfg, in, n, true, fast);
    if (!rc) rc = transcript(r, cfg, in, n, false, slow);
    if (rc) return rc;
    return fast->len != slow->len || memcmp(fast->data, slow->data, fast->len) != 0;
}

/* ---- responses: http-parser's callbacks, recorded ---- */

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
    AG_UNUSED(at);
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

/* Each of the fast path's headers h[0..m->nhdrs) is the one http-parser saw. */
static bool same_headers(const struct seen *s, const char *in, const struct ag__fp *m,
                         const struct ag__hdr *h)
{
    const char *q = s->hdrs.data ? s->hdrs.data : "";
    for (size_t i = 0; i < m->nhdrs; i++) {
        if (strlen(q) != h[i].name_len || memcmp(q, in + h[i].name, h[i].name_len) != 0)
            return false;
        q += strlen(q) + 1;
        if (strlen(q) != h[i].value_len || memcmp(q, in + h[i].value, h[i].value_len) != 0)
            return false;
        q += strlen(q) + 1;
    }
    return true;
}

bool ag__fp_response_differs(const char *in, size_t n)
{
    struct ag__hdr h[32];
    struct ag__fp m;
    if (!ag__fp_response(in, n, &m, h, 32) || (size_t)m.content_length != n - m.head_len)
        return false;
    http_parser p;
    http_parser_init(&p, HTTP_RESPONSE);
    struct seen s = {0};
    ag_buf_init(&s.hdrs);
    p.data = &s;
    http_parser_execute(&p, &rs, in, n);
    bool same = s.done && p.status_code == m.status && s.body == (size_t)m.content_length &&
                s.nhdrs == m.nhdrs && http_should_keep_alive(&p) == !m.close &&
                same_headers(&s, in, &m, h);
    ag_buf_free(&s.hdrs);
    return !same;
}
