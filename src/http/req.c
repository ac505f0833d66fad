/*
 * Request objects: allocation from the loop's pool of finished requests
 * (ag__http_ctx.free_reqs: the next request on any connection reuses the last
 * one's buffers and arena chunk while they are still in cache; with hundreds of
 * keep-alive connections a per-connection spare kept hundreds of cold copies),
 * reference counting, the per-request arena, and the read accessors handlers use.
 *
 * References. The connection's queue holds one from the first byte until the
 * answer is written; dispatch holds one while middleware and the handler run;
 * an unanswered dispatched request holds one until ag_http_respond. The request
 * holds one reference on its connection.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http/internal.h"

/* ---- arena ---- */

#define ARENA_CHUNK 2048 /* a chunk's size unless one allocation needs more */

void *ag__arena_alloc(struct ag__arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct ag__arena_chunk *ch = a->head;
    if (!ch || ch->cap - ch->used < n) {
        size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;
        ch = ag_malloc(sizeof *ch + cap);
        if (!ch) return NULL;
        ch->next = a->head;
        ch->used = 0;
        ch->cap = cap;
        a->head = ch;
    }
    void *p = ch->data + ch->used;
    ch->used += n;
    return p;
}

char *ag__arena_strndup(struct ag__arena *a, const char *s, size_t n)
{
    char *p = ag__arena_alloc(a, n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void ag__arena_reset(struct ag__arena *a)
{
    struct ag__arena_chunk *keep = NULL;
    while (a->head) {
        struct ag__arena_chunk *n = a->head->next;
        if (!keep && a->head->cap == ARENA_CHUNK) {
            keep = a->head;
        } else {
            ag_free(a->head);
        }
        a->head = n;
    }
    if (keep) keep->next = NULL, keep->used = 0;
    a->head = keep;
}

void ag__arena_free(struct ag__arena *a)
{
    while (a->head) {
        struct ag__arena_chunk *n = a->head->next;
        ag_free(a->head);
        a->head = n;
    }
}

/* ---- lifetime ---- */

static void req_destroy(struct ag_http_req *req)
{
    ag_buf_free(&req->raw);
    ag_buf_free(&req->body);
    ag_buf_free(&req->resp_hdrs);
    ag_buf_free(&req->out);
    ag_free(req->hdrs);
    ag__arena_free(&req->arena);
    ag_free(req);
}

/* Clear a finished request for reuse, keeping its buffers' memory. */
static void req_reset(struct ag_http_req *req)
{
    struct ag_buf raw = req->raw, body = req->body, rh = req->resp_hdrs, out = req->out;
    struct ag__hdr *hdrs = req->hdrs;
    size_t hdrs_cap = req->hdrs_cap;
    ag__arena_reset(&req->arena); /* keeps one chunk: no malloc per request */
    struct ag__arena arena = req->arena;
    memset(req, 0, sizeof *req);
    ag_buf_reset(&raw), ag_buf_reset(&body), ag_buf_reset(&rh), ag_buf_reset(&out);
    req->raw = raw, req->body = body, req->resp_hdrs = rh, req->out = out;
    req->hdrs = hdrs;
    req->hdrs_cap = hdrs_cap;
    req->arena = arena;
}

int ag_http_req_on_abort(struct ag_http_req *req, void (*cb)(struct ag_http_req *req, void *ud),
                         void *ud)
{
    if (!req || (req->state != AG__RS_DISPATCHED && req->state != AG__RS_STREAMING))
        return AG_EINVAL;
    req->abort_cb = NULL;
    req->abort_ud = NULL;
    if (cb && (req->conn->closed || req->conn->draining)) return AG_ECLOSED;
    req->abort_cb = cb;
    req->abort_ud = ud;
    return 0;
}

void ag__http_ctx_release(struct ag__http_ctx *ctx)
{
    while (ctx->free_reqs) {
        struct ag_http_req *req = ctx->free_reqs;
        ctx->free_reqs = req->next;
        req_destroy(req);
    }
    ctx->nfree = 0;
}

struct ag_http_req *ag__http_req_new(struct ag__http_conn *c)
{
    struct ag__http_ctx *ctx = c->ctx;
    struct ag_http_req *req = ctx->free_reqs;
    if (req) {
        ctx->free_reqs = req->next;
        ctx->nfree--;
        req->next = NULL;
    } else if (!(req = ag_calloc(1, sizeof *req))) {
        return NULL;
    }
    req->conn = c;
    req->refs = 1;
    req->state = AG__RS_HEADERS;
    req->query = "";
    c->refs++;
    return req;
}

void ag__http_req_unref(struct ag_http_req *req)
{
    if (--req->refs > 0) return;
    struct ag__http_conn *c = req->conn;
    if (!c) {
        req_destroy(req);
        return;
    }
    struct ag__http_ctx *ctx = c->ctx;
    if (ctx->nfree < ctx->free_cap && req->raw.cap < (size_t)64 * 1024 &&
        req->body.cap < (size_t)64 * 1024) {
        req_reset(req);
        req->next = ctx->free_reqs;
        ctx->free_reqs = req;
        ctx->nfree++;
    } else {
        req_destroy(req);
    }
    ag__http_conn_unref(c);
}

/* ---- accessors ---- */

const char *ag_http_req_method(const struct ag_http_req *req)
{
    return req->method ? req->method : "";
}
const char *ag_http_req_path(const struct ag_http_req *req)
{
    return req->path ? req->path : "/";
}
const char *ag_http_req_query(const struct ag_http_req *req)
{
    return req->query;
}
size_t ag_http_req_header_count(const struct ag_http_req *req)
{
    return req->nhdrs;
}
const char *ag_http_req_route(const struct ag_http_req *req)
{
    return req->routed ? ag__http_route_pattern(req->route) : NULL;
}
const char *ag_http_req_id(const struct ag_http_req *req)
{
    return req->id[0] ? req->id : NULL;
}
const struct ag_obs_trace *ag_http_req_trace(const struct ag_http_req *req)
{
    return req->has_trace ? &req->trace : NULL;
}
void ag_http_req_span_name(struct ag_http_req *req, const char *name)
{
    snprintf(req->span_name, sizeof req->span_name, "%s", name);
}
uv_loop_t *ag_http_req_loop(const struct ag_http_req *req)
{
    return req->conn->ctx->loop;
}
uint64_t ag_http_req_start_ns(const struct ag_http_req *req)
{
    return req->start_ns;
}
void ag_http_req_set_data(struct ag_http_req *req, void *data)
{
    req->data = data;
}
void *ag_http_req_data(const struct ag_http_req *req)
{
    return req->data;
}
void *ag_http_req_alloc(struct ag_http_req *req, size_t n)
{
    return ag__arena_alloc(&req->arena, n);
}

const char *ag_http_req_header(const struct ag_http_req *req, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < req->nhdrs; i++) /* lengths first: most names differ in length */
        if (req->hdrs[i].name_len == n && strcasecmp(req->raw.data + req->hdrs[i].name, name) == 0)
            return req->raw.data + req->hdrs[i].value;
    return NULL;
}

void ag_http_req_header_at(const struct ag_http_req *req, size_t i, const char **name,
                           const char **value)
{
    *name = i < req->nhdrs ? req->raw.data + req->hdrs[i].name : NULL;
    *value = i < req->nhdrs ? req->raw.data + req->hdrs[i].value : NULL;
}

const char *ag_http_req_body(const struct ag_http_req *req, size_t *len)
{
    if (len) *len = req->body.len;
    return req->body.data ? req->body.data : "";
}

const char *ag_http_req_param(const struct ag_http_req *req, const char *name)
{
    for (size_t i = 0; i < req->nparams; i++)
        if (strcmp(req->params[i].name, name) == 0) return req->params[i].value;
    return NULL;
}

static int hexv(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decode s[0..n) into the arena ('+' as space when `plus`). */
static char *decode(struct ag__arena *a, const char *s, size_t n, bool plus)
{
    char *o = ag__arena_alloc(a, n + 1), *p = o;
    if (!o) return NULL;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hexv(s[i + 1])) >= 0 && (lo = hexv(s[i + 2])) >= 0) {
            *p++ = (char)(hi << 4 | lo);
            i += 2;
        } else {
            *p++ = (plus && s[i] == '+') ? ' ' : s[i];
        }
    }
    *p = '\0';
    return o;
}

char *ag__http_decode(struct ag_http_req *req, const char *s, size_t n)
{
    return decode(&req->arena, s, n, false);
}

const char *ag_http_req_query_param(struct ag_http_req *req, const char *name)
{
    size_t nlen = strlen(name);
    const char *q = req->query;
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        const char *eq = memchr(q, '=', len);
        size_t klen = eq ? (size_t)(eq - q) : len;
        if (klen == nlen && memcmp(q, name, nlen) == 0)
            return eq ? decode(&req->arena, eq + 1, len - klen - 1, true) : "";
        q += len + (amp ? 1 : 0);
    }
    return NULL;
}

int ag_http_req_json(const struct ag_http_req *req, json_t **out, struct ag_err *err)
{
    json_error_t je;
    json_t *j = json_loadb(req->body.data ? req->body.data : "", req->body.len,
                           JSON_REJECT_DUPLICATES, &je);
    /* jansson: json_error_out_of_memory, or no message when its lexer could not start */
    if (!j && (json_error_code(&je) == json_error_out_of_memory || !je.text[0]))
        return ag_err_set(err, AG_ENOMEM, "out of memory reading the JSON body");
    if (!j) return ag_err_set(err, AG_EJSON, "line %d column %d: %s", je.line, je.column, je.text);
    *out = j;
    return 0;
}
