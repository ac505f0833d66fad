/* The fast path in front of http-parser (fastparse.c), tested against
 * http-parser itself. Requests: the same bytes fed to one connection with the
 * fast path on and to one with it off (conn.no_fast) must give byte-identical
 * output (each request is echoed back whole by a middleware: method, target,
 * every header, body) — over the well-formed requests the fast path takes and
 * over hundreds of thousands of mutations of them (bare CR/LF, obs-fold,
 * CL+TE, duplicate and signed Content-Length, control bytes, truncations).
 * Responses: whatever ag__fp_response takes, http-parser parses to the same
 * status, headers, body length and keep-alive. Plus the security cases by name:
 * each must be declined by the fast path and refused by the server. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/internal.h"

/* ---- requests: differential over the connection ---- */

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

static struct ag_http_router *router;
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static void setup(void)
{
    const char *seed = getenv("AG_FASTPARSE_SEED"); /* another run of the mutations */
    if (seed && *seed) rng ^= strtoull(seed, NULL, 10) * 0x2545f4914f6cdd1dull;
    cr_assert_eq(ag_http_router_new(&router), 0);
    struct ag_http_middleware mw = {.name = "dump", .on_request = dump};
    cr_assert_eq(ag_http_router_use(router, &mw), 0);
}

static void teardown(void)
{
    ag_http_router_free(router);
}

/* What the server writes for `in`, Date lines removed; *closed: it closed. */
static void serve(const char *in, size_t n, bool fast, struct ag_buf *out, bool *closed)
{
    struct ag_http_server_config cfg = {.max_header_bytes = 1024, .max_body_bytes = 64};
    struct ag__http_memconn *m;
    cr_assert_eq(ag__http_memconn_new(router, &cfg, &m), 0);
    m->conn.no_fast = !fast;
    ag__http_memconn_feed(m, in, n);
    *closed = m->closed;
    ag_buf_reset(out);
    const char *p = m->output.data ? m->output.data : "";
    const char *end = p + m->output.len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl + 1 : end;
        if (strncmp(p, "Date: ", 6) != 0) ag_buf_append(out, p, (size_t)(e - p));
        p = e;
    }
    ag__http_memconn_free(m);
}

static void same_both_ways(const char *in, size_t n)
{
    struct ag_buf a, b;
    ag_buf_init(&a);
    ag_buf_init(&b);
    bool ca, cb;
    serve(in, n, true, &a, &ca);
    serve(in, n, false, &b, &cb);
    cr_assert(a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0) && ca == cb,
              "input:\n%.*s\nfast:\n%s\nhttp-parser:\n%s", (int)n, in, a.data ? a.data : "",
              b.data ? b.data : "");
    ag_buf_free(&a);
    ag_buf_free(&b);
}

static bool fast_takes(const char *in)
{
    struct ag__hdr h[AG__HTTP_MAX_HEADERS];
    struct ag__fp m;
    return ag__fp_request(in, strlen(in), &m, h, AG__HTTP_MAX_HEADERS) && m.host;
}

static const char *const bases[] = {
    "GET /api/bench?x=1&y=%20 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAuthorization: Bearer "
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.sig\r\nAccept: */*\r\n\r\n",
    "POST /orders HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: "
    "11\r\n\r\n{\"a\":[1,2]}",
    "PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
    "DELETE /y#frag HTTP/1.1\r\nhost:b\r\nX-A:\tv  w\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "HEAD /h HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /after HTTP/1.1\r\nHost: "
    "a\r\n\r\n",
    "OPTIONS /o HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "PATCH /p HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi",
};

static const char *const lines[] = {
    "Content-Length: 3\r\n",
    "Content-Length: +3\r\n",
    "Content-Length: 1, 1\r\n",
    "Content-Length:  3 \r\n",
    "Transfer-Encoding: chunked\r\n",
    "Transfer-Encoding: gzip, chunked\r\n",
    " folded\r\n",
    "\tfolded\r\n",
    "Host: b\r\n",
    "Connection: close\r\n",
    "Connection: Keep-Alive\r\n",
    "Connection: upgrade\r\n",
    "Upgrade: h2c\r\n",
    "Expect: 100-continue\r\n",
    "Proxy-Connection: close\r\n",
    "X-Empty:\r\n",
    "Bad Name: x\r\n",
    "X-Bare: a\rb\r\n",
    "X-Lf: a\nb\r\n",
    "\r\n",
};

static const char interesting[] = "\r\n \t:\0\x7f\x80\xff"
                                  "aA09,/?#-+;=\"";

static uint32_t next(uint32_t n)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

/* One to four random edits of `base` into `out`. */
static void mutate(const char *base, struct ag_buf *out)
{
    ag_buf_reset(out);
    ag_buf_puts(out, base);
    for (uint32_t k = 0, edits = 1 + next(4); k < edits; k++) {
        size_t len = out->len, at = next((uint32_t)len + 1);
        char tmp[8192];
        if (len + 64 > sizeof tmp) break;
        memcpy(tmp, out->data, len);
        size_t n = 0;
        switch (next(5)) {
        case 0: /* replace a byte */
            if (at < len) tmp[at] = interesting[next(sizeof interesting - 1)];
            n = len;
            break;
        case 1: /* insert a byte */
            memmove(tmp + at + 1, tmp + at, len - at);
            tmp[at] = interesting[next(sizeof interesting - 1)];
            n = len + 1;
            break;
        case 2: /* delete a byte */
            if (at < len) memmove(tmp + at, tmp + at + 1, len - at - 1);
            n = at < len ? len - 1 : len;
            break;
        case 3: { /* insert a header line after a line end */
            const char *nl = memchr(tmp + at, '\n', len - at);
            size_t pos = nl ? (size_t)(nl - tmp) + 1 : len;
            const char *l = lines[next(AG_ARRAY_SIZE(lines))];
            size_t ll = strlen(l);
            memmove(tmp + pos + ll, tmp + pos, len - pos);
            memcpy(tmp + pos, l, ll);
            n = len + ll;
            break;
        }
        default: /* truncate */
            n = at;
            break;
        }
        ag_buf_reset(out);
        ag_buf_append(out, tmp, n);
    }
}

TestSuite(fastparse, .init = setup, .fini = teardown);

Test(fastparse, takes_the_plain_requests)
{
    cr_assert(fast_takes(bases[0]));
    cr_assert(fast_takes(bases[1]));
    cr_assert(fast_takes(bases[2]));
    for (size_t i = 0; i < AG_ARRAY_SIZE(bases); i++) same_both_ways(bases[i], strlen(bases[i]));
}

/* Each must be declined by the fast path and answered as http-parser does. */
Test(fastparse, declines_what_smuggling_needs)
{
    static const char *const bad[] = {
        "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
        "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: -3\r\n\r\nabc",
        "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc",
        "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a\rX-A: b\r\n\r\n",
        "GET /a HTTP/1.1\nHost: a\n\n",
        "GET /a HTTP/1.1\r\nHost: a\r\nX-A: b\nX-B: c\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost : a\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a\r\nX-A: b\x01\r\n\r\n",
        "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET http://a/b HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /a HTTP/1.1\r\n\r\n",
        "GET /a HTTP/2.0\r\nHost: a\r\n\r\n",
    };
    for (size_t i = 0; i < AG_ARRAY_SIZE(bad); i++) {
        cr_assert_not(fast_takes(bad[i]), "took: %s", bad[i]);
        same_both_ways(bad[i], strlen(bad[i]));
    }
    /* an overlong head is left to http-parser, which answers 431 */
    struct ag_buf big;
    ag_buf_init(&big);
    ag_buf_puts(&big, "GET /a HTTP/1.1\r\nHost: a\r\nX-Big: ");
    for (int i = 0; i < 2000; i++) ag_buf_putc(&big, 'x');
    ag_buf_puts(&big, "\r\n\r\n");
    same_both_ways(big.data, big.len);
    struct ag_buf o;
    ag_buf_init(&o);
    bool closed;
    serve(big.data, big.len, true, &o, &closed);
    cr_assert(strstr(o.data, " 431 "), "%s", o.data);
    ag_buf_free(&o);
    ag_buf_free(&big);
}

Test(fastparse, mutations_answer_the_same_both_ways, .timeout = 300)
{
    struct ag_buf b;
    ag_buf_init(&b);
    int taken = 0;
    for (int i = 0; i < 60000; i++) {
        mutate(bases[next(AG_ARRAY_SIZE(bases))], &b);
        same_both_ways(b.data ? b.data : "", b.len);
        taken += b.data && fast_takes(b.data);
    }
    ag_buf_free(&b);
    cr_assert_gt(taken, 3000, "the mutations must exercise the fast path (took %d)", taken);
}

/* ---- responses: differential against http-parser's callbacks ---- */

struct seen {
    struct ag_buf hdrs; /* name NUL value NUL ... */
    bool in_value;
    size_t nhdrs;
    size_t body;
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
    ag_buf_append(&s->hdrs, at, n);
    return 0;
}

static int r_value(http_parser *p, const char *at, size_t n)
{
    struct seen *s = p->data;
    if (!s->in_value) ag_buf_putc(&s->hdrs, '\0');
    s->in_value = true;
    ag_buf_append(&s->hdrs, at, n);
    return 0;
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

static void response_agrees(const char *in, size_t n)
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
    cr_assert(s.done && p.status_code == m.status && s.body == (size_t)m.content_length &&
                  s.nhdrs == m.nhdrs && http_should_keep_alive(&p) == !m.close,
              "fast path and http-parser differ on:\n%.*s", (int)n, in);
    const char *q = s.hdrs.data;
    for (size_t i = 0; i < m.nhdrs; i++) {
        cr_assert(strlen(q) == h[i].name_len && !memcmp(q, in + h[i].name, h[i].name_len));
        q += strlen(q) + 1;
        cr_assert(strlen(q) == h[i].value_len && !memcmp(q, in + h[i].value, h[i].value_len),
                  "value %zu of:\n%.*s", i, (int)n, in);
        q += strlen(q) + 1;
    }
    ag_buf_free(&s.hdrs);
}

Test(fastparse, responses_agree_with_http_parser, .timeout = 300)
{
    static const char *const rbases[] = {
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        "HTTP/1.1 201 \r\nX-A: b c\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nabc",
    };
    static const char *const not_taken[] = {
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na",
        "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 100 Continue\r\n\r\n",
        "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\n\r\n",
    };
    struct ag__hdr h[32];
    struct ag__fp m;
    for (size_t i = 0; i < AG_ARRAY_SIZE(rbases); i++)
        cr_assert(ag__fp_response(rbases[i], strlen(rbases[i]), &m, h, 32), "%s", rbases[i]);
    for (size_t i = 0; i < AG_ARRAY_SIZE(not_taken); i++)
        cr_assert_not(ag__fp_response(not_taken[i], strlen(not_taken[i]), &m, h, 32), "%s",
                      not_taken[i]);
    struct ag_buf b;
    ag_buf_init(&b);
    for (int i = 0; i < 100000; i++) {
        mutate(rbases[next(AG_ARRAY_SIZE(rbases))], &b);
        response_agrees(b.data ? b.data : "", b.len);
    }
    ag_buf_free(&b);
}
