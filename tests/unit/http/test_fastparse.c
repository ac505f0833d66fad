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

/* ---- requests: differential over the connection (src/http/fpdiff.c) ---- */

static struct ag_http_router *router;
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static void setup(void)
{
    const char *seed = getenv("AG_FASTPARSE_SEED"); /* another run of the mutations */
    if (seed && *seed) rng ^= strtoull(seed, NULL, 10) * 0x2545f4914f6cdd1dull;
    cr_assert_eq(ag_http_router_new(&router), 0);
    struct ag_http_middleware mw = {.name = "dump", .on_request = ag__http_echo_whole};
    cr_assert_eq(ag_http_router_use(router, &mw), 0);
}

static void teardown(void)
{
    ag_http_router_free(router);
}

static const struct ag_http_server_config cfg = {.max_header_bytes = 1024, .max_body_bytes = 64};

/* What the server writes for `in` with the fast path on ('C' closed or 'O', then
 * the output, Date lines removed); asserts it is what http-parser alone writes. */
static void same_both_ways_into(const char *in, size_t n, struct ag_buf *fast)
{
    struct ag_buf slow;
    ag_buf_init(&slow);
    int rc = ag__fp_request_differs(router, &cfg, in, n, fast, &slow);
    cr_assert(rc == 0, "input:\n%.*s\nfast:\n%s\nhttp-parser:\n%s", (int)n, in,
              fast->data ? fast->data : "", slow.data ? slow.data : "");
    ag_buf_free(&slow);
}

static void same_both_ways(const char *in, size_t n)
{
    struct ag_buf fast;
    ag_buf_init(&fast);
    same_both_ways_into(in, n, &fast);
    ag_buf_free(&fast);
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
    struct ag_buf o;
    ag_buf_init(&o);
    same_both_ways_into(big.data, big.len, &o);
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

static void response_agrees(const char *in, size_t n)
{
    cr_assert_not(ag__fp_response_differs(in, n), "fast path and http-parser differ on:\n%.*s",
                  (int)n, in);
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
