/*
 * Answers: response headers (validated: no response splitting), serialization of
 * the status line, Date, Content-Length, Connection and body, the JSON and RFC
 * 9457 problem+json helpers, and the AG_E* -> status mapping.
 *
 * The server owns the framing headers (Content-Length, Transfer-Encoding,
 * Connection, Date): a handler cannot set them, so its answer is always framed by
 * the real body length. Every 4xx/5xx without a body gets a problem+json body.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "http/internal.h"

/* ---- status codes ---- */

const char *ag_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 428:
        return "Precondition Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

int ag_http_status_for(int code)
{
    switch (code) {
    case AG_EINVAL:
    case AG_EJSON:
        return 400;
    case AG_ENOTFOUND:
        return 404;
    case AG_ECONFLICT:
    case AG_EEXISTS:
        return 409;
    case AG_EIDEMPOTENCY:
    case AG_EDOMAIN:
        return 422;
    case AG_ETOOBIG:
        return 413;
    case AG_ERATE_LIMITED:
        return 429;
    case AG_ECIRCUIT_OPEN:
    case AG_EBULKHEAD_FULL:
    case AG_EPOOL_TIMEOUT:
    case AG_EUNAVAILABLE:
        return 503;
    case AG_ETIMEDOUT:
        return 504;
    case AG_ECONNECT:
    case AG_ERESET:
    case AG_EPROTOCOL:
    case AG_EUPSTREAM:
        return 502;
    case AG_EUNSUPPORTED:
        return 501;
    default:
        return 500;
    }
}

/* ---- headers ---- */

static bool server_owned(const char *name, size_t nl)
{
    return AG__HTTP_NAME_IS(name, nl, "content-length") ||
           AG__HTTP_NAME_IS(name, nl, "transfer-encoding") ||
           AG__HTTP_NAME_IS(name, nl, "connection") || AG__HTTP_NAME_IS(name, nl, "date");
}

int ag_http_resp_header(struct ag_http_req *req, const char *name, const char *value)
{
    if (!req || !name || !value || !*name || req->state == AG__RS_DONE ||
        req->state == AG__RS_STREAMING)
        return AG_EINVAL;
    size_t nl = 0, vl = strcspn(value, "\r\n");
    for (; name[nl]; nl++)
        if (!ag__http_tchar((unsigned char)name[nl])) return AG_EINVAL;
    if (value[vl] || server_owned(name, nl)) return AG_EINVAL;
    struct ag_buf *b = &req->resp_hdrs;
    int rc = ag_buf_reserve(b, nl + vl + 4);
    if (rc) return rc;
    char *o = b->data + b->len; /* one reserve, then plain copies */
    memcpy(o, name, nl), o += nl;
    *o++ = ':';
    *o++ = ' ';
    memcpy(o, value, vl), o += vl;
    memcpy(o, "\r\n", 3); /* CR LF and the NUL the buffer keeps */
    b->len += nl + vl + 4;
    return 0;
}

int ag_http_resp_status(const struct ag_http_req *req)
{
    return req->status;
}

/* ---- serialization ---- */

static const char *date_line(struct ag__http_ctx *ctx)
{
    time_t now = time(NULL);
    if (now != ctx->date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(ctx->date, sizeof ctx->date, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        ctx->date_sec = now;
    }
    return ctx->date;
}

/* Append the decimal form of v. */
static void put_uint(struct ag_buf *b, size_t v)
{
    char tmp[24], *p = tmp + sizeof tmp;
    do *--p = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    ag_buf_append(b, p, (size_t)(tmp + sizeof tmp - p));
}

int ag__http_serialize(struct ag_http_req *req, const char *content_type, const void *body,
                       size_t len, struct ag_buf *out)
{
    struct ag__http_conn *c = req->conn;
    int status = req->status;
    /* a streamed answer to HTTP/1.0 has no chunked coding: its end is the close */
    bool close = req->close_after || !req->keep_alive || c->draining ||
                 (req->streaming && !req->chunked && !req->head);
    bool bodyless = status < 200 || status == 204 || status == 304;
    req->close_after = close;
    const char *reason = ag_http_reason(status);
    const char *date = date_line(c->ctx);
    size_t need = 192 + strlen(reason) + strlen(date) + req->resp_hdrs.len +
                  (content_type ? strlen(content_type) : 0);
    int rc = ag_buf_reserve(out, need + (req->head ? 0 : len));
    if (rc) return rc;
    char line[16] = "HTTP/1.1 000 "; /* status is 100..599 (ag_http_respond clamps it) */
    line[9] = (char)('0' + status / 100 % 10);
    line[10] = (char)('0' + status / 10 % 10);
    line[11] = (char)('0' + status % 10);
    ag_buf_append(out, line, 13);
    ag_buf_puts(out, reason);
    ag_buf_append(out, "\r\n", 2);
    ag_buf_puts(out, date);
    if (!bodyless) {
        if (req->streaming && req->chunked)
            ag_buf_append(out, "Transfer-Encoding: chunked\r\n", 28);
        else if (!req->streaming) {
            ag_buf_append(out, "Content-Length: ", 16);
            put_uint(out, len);
            ag_buf_append(out, "\r\n", 2);
        }
        if (content_type && *content_type) {
            ag_buf_append(out, "Content-Type: ", 14);
            ag_buf_puts(out, content_type);
            ag_buf_append(out, "\r\n", 2);
        }
    }
    if (req->resp_hdrs.len) ag_buf_append(out, req->resp_hdrs.data, req->resp_hdrs.len);
    if (c->ctx->hsts) ag_buf_puts(out, c->ctx->hsts);
    if (close)
        ag_buf_append(out, "Connection: close\r\n", 19);
    else if (req->http10)
        ag_buf_append(out, "Connection: keep-alive\r\n", 24);
    ag_buf_append(out, "\r\n", 2);
    if (!bodyless && !req->head && len) ag_buf_append(out, body, len);
    return 0;
}

/* ---- answering ---- */

static int problem_body(struct ag_buf *b, int status, const char *type, const char *title,
                        const char *detail)
{
    int rc = ag_buf_puts(b, "{\"type\":");
    if (!rc)
        rc = ag_buf_json_str(b, type ? type : "about:blank", strlen(type ? type : "about:blank"));
    if (!rc) rc = ag_buf_puts(b, ",\"title\":");
    if (!title) title = ag_http_reason(status);
    if (!rc) rc = ag_buf_json_str(b, title, strlen(title));
    if (!rc) rc = ag_buf_printf(b, ",\"status\":%d", status);
    if (!rc && detail) {
        rc = ag_buf_puts(b, ",\"detail\":");
        if (!rc) rc = ag_buf_json_str(b, detail, strlen(detail));
    }
    return rc;
}

static int finish(struct ag_http_req *req, const char *content_type, const void *body, size_t len)
{
    struct ag__http_conn *c = req->conn;
    req->abort_cb = NULL;
    req->resp_body_len = len;
    ag__http_run_on_response(req);
    if (!c->closed) {
        struct ag_buf *dst = (req == c->head) ? &c->out : &req->out;
        size_t mark = dst->len;
        if (ag__http_serialize(req, content_type, body, len, dst) != 0) {
            dst->len = mark; /* out of memory: close rather than send half an answer */
            req->close_after = true;
        }
    }
    req->state = AG__RS_DONE;
    if (!c->closed && !c->in_feed) ag__http_conn_advance(c);
    ag__http_req_unref(req); /* the answer's reference */
    return 0;
}

int ag_http_respond(struct ag_http_req *req, int status, const char *content_type, const void *body,
                    size_t len)
{
    if (!req || req->status || req->state != AG__RS_DISPATCHED) return AG_EINVAL;
    if (status < 200 || status > 599) status = 500;
    req->status = status;
    if (status < 400 || len > 0) return finish(req, content_type, body, len);
    struct ag_buf b;
    ag_buf_init(&b);
    int rc = problem_body(&b, status, NULL, NULL, NULL);
    if (!rc) rc = ag_buf_putc(&b, '}');
    finish(req, "application/problem+json", rc ? NULL : b.data, rc ? 0 : b.len);
    ag_buf_free(&b);
    return 0;
}

static int dump_cb(const char *buffer, size_t size, void *data)
{
    return ag_buf_append(data, buffer, size) ? -1 : 0;
}

int ag_http_respond_json(struct ag_http_req *req, int status, json_t *body)
{
    if (!req || req->status || req->state != AG__RS_DISPATCHED) {
        json_decref(body);
        return AG_EINVAL;
    }
    struct ag_buf b;
    ag_buf_init(&b);
    int rc = body ? json_dump_callback(body, dump_cb, &b, JSON_COMPACT | JSON_ENCODE_ANY) : -1;
    json_decref(body);
    if (rc != 0) {
        ag_buf_free(&b);
        return ag_http_respond_problem(req, 500, NULL, NULL, "the response could not be encoded",
                                       NULL);
    }
    rc = ag_http_respond(req, status, "application/json", b.data, b.len);
    ag_buf_free(&b);
    return rc;
}

int ag_http_respond_problem(struct ag_http_req *req, int status, const char *type,
                            const char *title, const char *detail, json_t *errors)
{
    if (!req || req->status || req->state != AG__RS_DISPATCHED) {
        json_decref(errors);
        return AG_EINVAL;
    }
    if (status < 400 || status > 599) status = 500;
    struct ag_buf b;
    ag_buf_init(&b);
    int rc = problem_body(&b, status, type, title, detail);
    if (!rc && req->path) {
        rc = ag_buf_puts(&b, ",\"instance\":");
        if (!rc) rc = ag_buf_json_str(&b, req->path, strlen(req->path));
    }
    if (!rc && errors) {
        rc = ag_buf_puts(&b, ",\"errors\":");
        if (!rc) rc = json_dump_callback(errors, dump_cb, &b, JSON_COMPACT) ? AG_ENOMEM : 0;
    }
    if (!rc) rc = ag_buf_putc(&b, '}');
    json_decref(errors);
    req->status = status;
    finish(req, "application/problem+json", rc ? NULL : b.data, rc ? 0 : b.len);
    ag_buf_free(&b);
    return 0;
}

int ag_http_problem_error_add(json_t **errors, const char *pointer, const char *detail)
{
    if (!errors || !pointer || !detail) return AG_EINVAL;
    if (!*errors && !(*errors = json_array())) return AG_ENOMEM;
    json_t *e = json_pack("{s:s, s:s}", "pointer", pointer, "detail", detail);
    if (!e || json_array_append_new(*errors, e)) return AG_ENOMEM;
    return 0;
}

int ag_http_respond_error(struct ag_http_req *req, int code, const char *detail)
{
    int status = ag_http_status_for(code);
    if (!detail) detail = ag_strerror(code);
    return ag_http_respond_problem(req, status, NULL, NULL, detail, NULL);
}
