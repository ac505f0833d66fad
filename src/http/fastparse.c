/*
 * A fast path in front of http-parser for the common, well-formed message head.
 *
 * http-parser calls back per piece of every token and walks a large state
 * machine per byte; for a proxied request (the client's request with its JWT,
 * then the upstream's answer) that was ~9,200 instructions, a third of the
 * gateway's cost. Most messages are plain: a known method, an origin-form
 * target, HTTP/1.1, token names, printable values, CRLF line ends, framing by
 * Content-Length. This scanner takes exactly those, in one tight pass, and
 * records offsets; everything else it declines, and the caller hands the same
 * bytes, untouched, to http-parser, which decides as before.
 *
 * Safety rests on declining, never on judging: the scanner accepts only a
 * subset of what http-parser accepts, with the same meaning. It declines
 *   - a head not complete in the buffer (and one longer than 80 KB, http-parser's
 *     own limit), a line not ended by CRLF (bare CR or LF), a line starting with
 *     SP or HTAB (obs-fold), a name with a non-tchar byte or whitespace before
 *     the colon, a value with a control byte, DEL or a byte >= 0x80, a value that
 *     is empty or ends in whitespace (http-parser's handling of those differs in
 *     corners the slow path already knows);
 *   - any header whose name starts with Transfer-Encoding, Upgrade, Expect or
 *     Proxy-Connection (http-parser matches its framing names by prefix), a
 *     Connection header other than exactly "keep-alive" (or "close" in
 *     responses), a name that starts with Connection or Content-Length and is
 *     longer, a second Content-Length, a Content-Length that is not 1-15
 *     digits (so CL+TE, duplicate CL, signs, lists never pass here);
 *   - requests: a method other than GET HEAD POST PUT DELETE PATCH OPTIONS, a
 *     target not starting with '/' or with a byte outside 0x21-0x7E, a version
 *     other than HTTP/1.1;
 *   - responses: a version other than HTTP/1.1, a status outside 200-599 or
 *     204/304 (no body by rule), no Content-Length.
 * The server also leaves to http-parser a request without Host, one over the
 * header or body limit, one whose body is not all in the buffer, and every
 * request after one without keep-alive (conn.c); the client, a response that is
 * streamed, to HEAD, or not exactly the bytes read (client.c).
 * The differential test (tests/unit/http/test_fastparse.c) and the fuzz
 * harness fuzz/http_fastparse.c check that whatever is taken here, http-parser
 * takes too, with the same method, target, headers, framing and keep-alive.
 */
#include <string.h>

#include "http/internal.h"

#define FP_MAX_HEAD ((size_t)80 * 1024) /* http-parser's HTTP_MAX_HEADER_SIZE */

/* A value byte taken here: printable ASCII, SP and HTAB. */
static inline bool value_byte(unsigned char c)
{
    return (unsigned char)(c - 0x20) < 0x5f || c == '\t';
}

/* Whether the name starts with lit (lower case), ignoring case. */
static bool name_starts(const char *b, const struct ag__hdr *h, const char *lit, size_t len)
{
    return h->name_len >= len && strncasecmp(b + h->name, lit, len) == 0;
}

static bool value_is(const char *b, const struct ag__hdr *h, const char *lit, size_t len)
{
    return h->value_len == len && strncasecmp(b + h->value, lit, len) == 0;
}

static bool content_length(const char *b, const struct ag__hdr *h, struct ag__fp *m)
{
    if (h->name_len != 14 || m->content_length >= 0 || h->value_len > 15) return false;
    int64_t v = 0;
    for (uint32_t i = 0; i < h->value_len; i++) {
        unsigned d = (unsigned char)b[h->value + i] - '0';
        if (d > 9) return false;
        v = v * 10 + d;
    }
    m->content_length = v;
    return true;
}

/* Classify one header for framing; false: decline the message. http-parser
 * recognises its framing headers by prefix (a name like "Transfer-Encodingx"
 * is taken as Transfer-Encoding), so a name that merely starts with one is
 * declined too, leaving the verdict to it. */
static bool note_header(const char *b, const struct ag__hdr *h, struct ag__fp *m, bool response)
{
    switch (b[h->name] | 0x20) { /* the first letter first: most names are none of these */
    case 'h':
        if (h->name_len == 4 && name_starts(b, h, "host", 4)) m->host = true;
        return true;
    case 'e':
        return !name_starts(b, h, "expect", 6);
    case 'u':
        return !name_starts(b, h, "upgrade", 7);
    case 'p':
        return !name_starts(b, h, "proxy-connection", 16);
    case 't':
        return !name_starts(b, h, "transfer-encoding", 17);
    case 'c':
        if (name_starts(b, h, "content-length", 14)) return content_length(b, h, m);
        if (!name_starts(b, h, "connection", 10)) return true;
        if (h->name_len != 10) return false;
        if (value_is(b, h, "keep-alive", 10)) return true;
        if (response && value_is(b, h, "close", 5)) {
            m->close = true;
            return true;
        }
        return false;
    default:
        return true;
    }
}

/* The header lines from b[i] through the blank line. */
static bool scan_headers(const char *b, size_t n, size_t i, struct ag__fp *m, struct ag__hdr *h,
                         size_t cap, bool response)
{
    const unsigned char *u = (const unsigned char *)b;
    for (;;) {
        if (i + 2 > n) return false;
        if (u[i] == '\r') {
            if (u[i + 1] != '\n') return false;
            m->head_len = i + 2;
            return m->head_len <= FP_MAX_HEAD;
        }
        size_t ns = i;
        while (i < n && ag__http_tchar(u[i])) i++;
        if (i == ns || i >= n || u[i] != ':' || m->nhdrs == cap) return false;
        size_t ne = i++;
        while (i < n && (u[i] == ' ' || u[i] == '\t')) i++;
        size_t vs = i;
        while (i < n && value_byte(u[i])) i++;
        if (i + 1 >= n || u[i] != '\r' || u[i + 1] != '\n') return false;
        if (i == vs || u[i - 1] == ' ' || u[i - 1] == '\t') return false;
        struct ag__hdr *hd = &h[m->nhdrs++];
        *hd = (struct ag__hdr){(uint32_t)ns, (uint32_t)(ne - ns), (uint32_t)vs, (uint32_t)(i - vs)};
        if (!note_header(b, hd, m, response)) return false;
        i += 2;
        if (i > FP_MAX_HEAD) return false;
    }
}

static void fp_init(struct ag__fp *m)
{
    memset(m, 0, sizeof *m);
    m->content_length = -1;
}

static const struct {
    const char *s;
    size_t len; /* with the space */
    int method;
} methods[] = {{"GET ", 4, HTTP_GET},        {"POST ", 5, HTTP_POST},     {"PUT ", 4, HTTP_PUT},
               {"HEAD ", 5, HTTP_HEAD},      {"DELETE ", 7, HTTP_DELETE}, {"PATCH ", 6, HTTP_PATCH},
               {"OPTIONS ", 8, HTTP_OPTIONS}};

bool ag__fp_request(const char *b, size_t n, struct ag__fp *m, struct ag__hdr *h, size_t cap)
{
    fp_init(m);
    size_t i = 0;
    for (size_t k = 0;; k++) {
        if (k == AG_ARRAY_SIZE(methods)) return false;
        if (n > methods[k].len && memcmp(b, methods[k].s, methods[k].len) == 0) {
            m->method = methods[k].method;
            i = methods[k].len;
            break;
        }
    }
    if (b[i] != '/') return false;
    m->url = (uint32_t)i;
    const unsigned char *u = (const unsigned char *)b;
    while (i < n && (unsigned char)(u[i] - 0x21) < 0x5e) i++;
    m->url_len = (uint32_t)(i - m->url);
    if (n - i < 11 || memcmp(b + i, " HTTP/1.1\r\n", 11) != 0) return false;
    return scan_headers(b, n, i + 11, m, h, cap, false);
}

bool ag__fp_response(const char *b, size_t n, struct ag__fp *m, struct ag__hdr *h, size_t cap)
{
    fp_init(m);
    if (n < 13 || memcmp(b, "HTTP/1.1 ", 9) != 0) return false;
    unsigned d0 = (unsigned char)b[9] - '0', d1 = (unsigned char)b[10] - '0',
             d2 = (unsigned char)b[11] - '0';
    if (d0 > 9 || d1 > 9 || d2 > 9 || b[12] != ' ') return false;
    m->status = (int)(d0 * 100 + d1 * 10 + d2);
    if (m->status < 200 || m->status > 599 || m->status == 204 || m->status == 304) return false;
    size_t i = 13;
    while (i < n && value_byte((unsigned char)b[i])) i++;
    if (i + 1 >= n || b[i] != '\r' || b[i + 1] != '\n') return false;
    if (!scan_headers(b, n, i + 2, m, h, cap, true)) return false;
    return m->content_length >= 0;
}
