/*
 * The proxy handler: one request through the gateway.
 *
 *   route -> body limit -> fault abort -> authenticate -> authorise -> rate limit
 *   -> idempotency -> fault delay -> forward (mesh call) -> answer
 *
 * Each refusal is a problem+json answer made here; the upstream answer is
 * passed through with hop-by-hop headers removed. Forwarded requests carry the
 * client's headers minus hop-by-hop ones and minus every identity header the
 * client might forge (x-user-id, x-user-roles, x-forwarded-*), plus the
 * verified identity, X-Forwarded-For/Proto/Host, X-Request-ID and a child
 * traceparent.
 *
 * HTTP caching (routes with cache.maxAge): an anonymous GET (no Authorization,
 * no verified identity) is answered from the gateway's response cache (keyed by
 * route, path and query; bounded in bytes; entries live maxAge) when it holds a
 * fresh 200, else forwarded and its 200 stored, with `Cache-Control: public,
 * max-age=N`. Every 200 of such a route carries a strong ETag (the upstream's, or
 * the body's XXH3) and If-None-Match with a matching tag answers 304. A request
 * with a token is never served from nor stored in the cache: its answer may be
 * the caller's own.
 *
 * The per-request state (struct pctx) is heap-allocated because a fault delay
 * needs a timer whose memory must outlive uv_close; everything else it points
 * at lives in the request's arena, valid until the answer. It is ~6 KB (the
 * identity, the forwarded header array): the loop recycles a few
 * (ag__gw_loop_pctx_get/put) rather than calloc and free one per request, and
 * only its first part is zeroed (pctx_new).
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "gateway/internal.h"

#define MAX_FWD_HEADERS 110

struct pctx {
    /* zeroed for every request (pctx_new) */
    struct ag_gateway *gw;
    struct gw_loop *loop;
    void *conf_token; /* ag__gw_loop_release */
    struct gw_conf *conf;
    const struct gw_route *route;
    size_t prefix_len; /* of the route's matched uri prefix (rewrite) */
    struct ag_http_req *req;
    bool authed;              /* who is valid */
    const char *idem_key;     /* reserved idempotency key, or NULL */
    struct ag_mesh_call call; /* the forward */
    bool timer_used;
    bool streaming; /* the answer is a stream passed through as it arrives */
    bool ended;     /* ... and its downstream end was written (client gone, drain) */
    bool released;  /* pctx_done is running for the stream: ignore its upstream's end */
    struct ag_http_upstream_stream *up; /* the upstream stream while it runs */
    /* written before being read: left over from the recycled state (pctx_new
     * resets the counts and first bytes that are read before being written) */
    struct ag_span span;     /* the forward's client span (kind 0: inactive, tracing off) */
    char idem_user[160];     /* the idempotency key's user part */
    uv_timer_t timer;        /* fault delay */
    struct gw_principal who; /* valid when authed */
    struct ag_http_header hdrs[MAX_FWD_HEADERS];
};

/* Whether header name n is `lit` (lower case), ignoring case: the first letter
 * first, so most names cost no call. */
#define AG__GW_NAME_IS(n, lit) (((n)[0] | 0x20) == (lit)[0] && strcasecmp((n), (lit)) == 0)

static bool hop_by_hop(const char *n, const char *connection)
{
#define NAME(s)                                                                                    \
    {                                                                                              \
        s, sizeof s - 1                                                                            \
    }
    static const struct {
        const char *s;
        size_t len;
    } names[] = {NAME("connection"),
                 NAME("keep-alive"),
                 NAME("proxy-connection"),
                 NAME("te"),
                 NAME("trailer"),
                 NAME("transfer-encoding"),
                 NAME("upgrade"),
                 NAME("proxy-authenticate"),
                 NAME("proxy-authorization"),
                 NAME("content-length"),
                 NAME("host"),
                 NAME("date")};
#undef NAME
    size_t nl = strlen(n);
    for (size_t i = 0; i < AG_ARRAY_SIZE(names); i++) /* length first: most differ */
        if (nl == names[i].len && !strcasecmp(n, names[i].s)) return true;
    if (connection) { /* headers named by Connection are hop-by-hop too */
        for (const char *p = connection; *p;) {
            while (*p == ' ' || *p == ',') p++;
            size_t l = strcspn(p, " ,");
            if (l == nl && !strncasecmp(p, n, l)) return true;
            p += l;
        }
    }
    return false;
}

static bool identity_header(const char *n)
{
    char c0 = (char)(*n | 0x20); /* every name below starts with x, t or f */
    if (c0 != 'x' && c0 != 't' && c0 != 'f') return false;
    return !strcasecmp(n, "x-user-id") || !strcasecmp(n, "x-user-roles") ||
           !strcasecmp(n, "x-user-sig") || !strncasecmp(n, "x-forwarded-", 12) ||
           !strcasecmp(n, "x-request-id") || !strcasecmp(n, "traceparent") ||
           !strcasecmp(n, "forwarded");
}

int ag__gw_problem(struct ag_http_req *req, int status, const char *detail)
{
    return ag_http_respond_problem(req, status, NULL, NULL, detail, NULL);
}

/* ---- finishing ---- */

static void metrics(const struct pctx *p, int status)
{
    const struct gw_route *r = p->route;
    if (!r || !r->m_dur) return;
    int cls = status >= 100 && status < 600 ? status / 100 : 0;
    ag_obs_counter_inc(r->m_req[cls]);
    double secs = (double)(ag_clock_mono(ag_clock_system()) - ag_http_req_start_ns(p->req)) / 1e9;
    ag_obs_histogram_observe(r->m_dur, secs);
}

static void pctx_closed(uv_handle_t *h)
{
    ag_free(h->data);
}

static struct pctx *pctx_new(struct gw_loop *l)
{
    struct pctx *p = ag__gw_loop_pctx_get(l, sizeof *p);
    if (!p) return NULL;
    memset(p, 0, offsetof(struct pctx, span));
    p->span.kind = 0;
    p->who.sub[0] = p->who.roles_csv[0] = '\0';
    p->who.nroles = p->who.nscopes = 0;
    p->loop = l;
    return p;
}

/* Release everything but the answer (already sent or about to be). */
static void pctx_done(struct pctx *p)
{
    /* Release first: closing the loop's pools (at stop) ends a stream in flight,
     * whose callback still reads p (p->released). The loop itself is freed only
     * in a later close callback. */
    ag__gw_loop_release(p->loop, p->conf_token);
    if (p->timer_used) /* its memory lives until the close callback: not recycled */
        uv_close((uv_handle_t *)&p->timer, pctx_closed);
    else
        ag__gw_loop_pctx_put(p->loop, p);
}

static void idem_abandon(struct pctx *p)
{
    if (p->idem_key) ag__gw_idem_finish(p->gw->idem, p->idem_key, p->idem_user, NULL);
    p->idem_key = NULL;
}

/* Refuse with a problem and finish. */
static int refuse(struct pctx *p, int status, const char *detail)
{
    metrics(p, status);
    idem_abandon(p);
    ag__gw_problem(p->req, status, detail);
    pctx_done(p);
    return 0;
}

static int status_for(int rc)
{
    switch (rc) {
    case AG_ETIMEDOUT:
        return 504;
    case AG_ECIRCUIT_OPEN:
    case AG_EBULKHEAD_FULL:
    case AG_EPOOL_TIMEOUT:
    case AG_EUPSTREAM:
    case AG_ECANCELED:
    case AG_ECLOSED:
        return 503;
    default:
        return 502;
    }
}

static const char *detail_for(int rc)
{
    switch (rc) {
    case AG_ETIMEDOUT:
        return "the upstream did not answer in time";
    case AG_ECIRCUIT_OPEN:
        return "the upstream's circuit breaker is open";
    case AG_EUPSTREAM:
        return "no healthy upstream endpoint";
    case AG_EBULKHEAD_FULL:
    case AG_EPOOL_TIMEOUT:
        return "the upstream connection pool is full";
    case AG_ECONNECT:
        return "could not connect to the upstream";
    case AG_ERESET:
        return "the upstream closed the connection";
    default:
        return "the upstream failed";
    }
}

/* Store the answer for idempotent replay (copies what it needs). */
static void idem_store(struct pctx *p, const struct ag_http_client_resp *r, const char *ctype,
                       struct ag_buf *hdrs)
{
    struct gw_idem_resp s = {.status = r->status};
    s.body = ag_malloc(r->body_len + 1);
    s.headers = hdrs->data ? ag_strdup(hdrs->data) : NULL;
    s.content_type = ctype ? ag_strdup(ctype) : NULL;
    if (s.body) memcpy(s.body, r->body, r->body_len), s.body[r->body_len] = 0;
    s.body_len = r->body_len;
    if (!s.body) {
        ag__gw_idem_resp_free(&s);
        idem_abandon(p);
        return;
    }
    ag__gw_idem_finish(p->gw->idem, p->idem_key, p->idem_user, &s);
    p->idem_key = NULL;
}

/* ---- streamed answers (Server-Sent Events) ----
 *
 * An upstream answer of type text/event-stream is passed through as it
 * arrives: the headers when they come (ag_http_stream_begin), each piece of
 * body as one chunk. The route's timeout stops at the headers; from then on
 * the client's idle timeout (STREAM_IDLE_MS, three heartbeats) ends a silent
 * stream. The downstream side has the server's unsent-bytes cap: a client that
 * falls behind is dropped, like one that goes away; either (or a drain) ends
 * the downstream stream and cancels the upstream one at once (its connection
 * is closed, so the service sees its client go). The pctx lives until both
 * sides ended. */
#define STREAM_IDLE_MS 45000

static void stream_stop(struct ag_http_req *req, void *ud)
{
    struct pctx *p = ud;
    AG_UNUSED(req);
    if (p->ended) return;
    p->ended = true;
    ag_http_stream_end(p->req);
    if (p->up) { /* the client went away or the server drains: stop the upstream now */
        ag_http_upstream_stream_cancel(p->up);
        p->up = NULL;
        p->released = true;
        pctx_done(p);
    }
}

static int on_stream_data(const char *data, size_t len, int rc, void *ud)
{
    struct pctx *p = ud;
    if (p->released) return -1; /* releasing the loop closed the pool: we are ending already */
    if (data && !p->ended && ag_http_stream_write(p->req, data, len) == 0) return 0;
    p->up = NULL;    /* ended upstream, or about to be stopped by our answer */
    if (!p->ended) { /* the end upstream, or the client is gone */
        ag_http_req_on_abort(p->req, NULL, NULL);
        stream_stop(p->req, p);
    }
    AG_UNUSED(rc);
    p->released = true;
    pctx_done(p);
    return data ? -1 : 0; /* stop the upstream: nobody reads it any more */
}

static void stream_begin(struct pctx *p, const struct ag_http_client_resp *r, const char *ctype)
{
    metrics(p, r->status);
    p->streaming = true;
    p->up = r->stream;
    if (ag_http_stream_begin(p->req, r->status, ctype) != 0 ||
        ag_http_req_on_abort(p->req, stream_stop, p) != 0)
        stream_stop(p->req, p);
}

static int cache_upstream(struct pctx *p, const struct ag_http_client_resp *r, const char *ctype,
                          const struct ag_buf *saved);

static void on_upstream(const struct ag_mesh_result *res, void *ud)
{
    struct pctx *p = ud;
    struct ag_http_req *req = p->req;
    if (p->span.kind) {
        ag_span_attr_int(&p->span, "mesh.tries", res->tries);
        if (res->resp) ag_span_attr_int(&p->span, "http.response.status_code", res->resp->status);
        p->span.status =
            res->rc || !res->resp || res->resp->status >= 500 ? AG_SPAN_ERROR : AG_SPAN_UNSET;
        ag_span_end(&p->span);
    }
    if (res->rc) {
        refuse(p, status_for(res->rc), detail_for(res->rc));
        return;
    }
    const struct ag_http_client_resp *r = res->resp;
    const char *ctype = NULL, *conn = NULL;
    for (size_t i = 0; i < r->nheaders; i++)
        if (AG__GW_NAME_IS(r->headers[i].name, "connection")) conn = r->headers[i].value;
    struct ag_buf saved;
    ag_buf_init(&saved);
    for (size_t i = 0; i < r->nheaders; i++) {
        const char *n = r->headers[i].name, *v = r->headers[i].value;
        if (AG__GW_NAME_IS(n, "content-type")) ctype = v;
        /* the gateway answers with its own X-Request-ID and traceparent (its span),
         * and HSTS only from its own listener (an mTLS instance sends one too) */
        else if (!hop_by_hop(n, conn) && !AG__GW_NAME_IS(n, "x-request-id") &&
                 !AG__GW_NAME_IS(n, "traceparent") &&
                 !AG__GW_NAME_IS(n, "strict-transport-security")) {
            ag_http_resp_header(req, n, v);
            bool keep = p->idem_key || (p->route->cache_max_age_s && !AG__GW_NAME_IS(n, "etag"));
            if (keep) ag_buf_printf(&saved, "%s: %s\n", n, v);
        }
    }
    if (r->streaming) {
        ag_buf_free(&saved);
        stream_begin(p, r, ctype);
        return;
    }
    if (!p->idem_key && cache_upstream(p, r, ctype, &saved)) {
        ag_buf_free(&saved);
        return;
    }
    /* a 5xx is not the request's final answer: free the key for a retry */
    if (p->idem_key && r->status >= 500) idem_abandon(p);
    if (p->idem_key) idem_store(p, r, ctype, &saved);
    ag_buf_free(&saved);
    metrics(p, r->status);
    ag_http_respond(req, r->status, ctype, r->body, r->body_len);
    pctx_done(p);
}

/* ---- HTTP caching ---- */

/* An anonymous GET of a route with cache.maxAge: may be answered from, and stored
 * into, the response cache. */
static bool cacheable(const struct pctx *p)
{
    return p->route->cache_max_age_s && p->gw->resp_cache && !p->authed &&
           !ag_http_req_header(p->req, "authorization") &&
           strcmp(ag_http_req_method(p->req), "GET") == 0;
}

static void cache_key(const struct pctx *p, struct ag_buf *k)
{
    const char *q = ag_http_req_query(p->req);
    ag_buf_printf(k, "%s\n%s%s%s", p->route->name, ag_http_req_path(p->req), *q ? "?" : "", q);
}

/* RFC 9110 §13.1.2: any listed tag (weak comparison) equal to ours, or "*". */
static bool inm_matches(const char *inm, const char *etag)
{
    size_t el = strlen(etag);
    for (const char *s = inm; s && *s;) {
        while (*s == ' ' || *s == '\t' || *s == ',') s++;
        if (*s == '*') return true;
        if (strncmp(s, "W/", 2) == 0) s += 2;
        const char *end = *s == '"' ? strchr(s + 1, '"') : NULL;
        if (!end) return false;
        if ((size_t)(end + 1 - s) == el && memcmp(s, etag, el) == 0) return true;
        s = end + 1;
    }
    return false;
}

/* Answer 200 (or 304 for a matching If-None-Match) with `etag` and the route's
 * Cache-Control; the other headers are set already. */
static void answer_cached(struct pctx *p, const char *ctype, const char *etag, const char *body,
                          size_t len)
{
    if (p->route->cache_max_age_s && cacheable(p)) {
        char cc[48];
        snprintf(cc, sizeof cc, "public, max-age=%u", p->route->cache_max_age_s);
        ag_http_resp_header(p->req, "Cache-Control", cc);
    }
    bool same = etag && inm_matches(ag_http_req_header(p->req, "if-none-match"), etag);
    metrics(p, same ? 304 : 200);
    ag_http_respond(p->req, same ? 304 : 200, same ? NULL : ctype, same ? NULL : body,
                    same ? 0 : len);
    pctx_done(p);
}

/* A stored answer: "<expires mono ns>" in meta; value = header lines ("Name: value\n",
 * the first "content-type", the second "etag"), an empty line, the body. 1 answered. */
static int cache_answer(struct pctx *p)
{
    if (!cacheable(p)) return 0;
    struct ag_buf k;
    ag_buf_init(&k);
    cache_key(p, &k);
    char *v = NULL;
    size_t n = 0;
    uint64_t expires = 0, now = ag_clock_mono(p->gw->clock ? p->gw->clock : ag_clock_system());
    int rc = k.data ? ag_lru_get(p->gw->resp_cache, k.data, k.len, &v, &n, &expires) : AG_ENOMEM;
    if (!rc && expires <= now) { /* stale: forget it, ask the upstream */
        ag_lru_del(p->gw->resp_cache, k.data, k.len);
        rc = AG_ENOTFOUND;
    }
    ag_buf_free(&k);
    char *sep = rc ? NULL : strstr(v, "\n\n");
    if (!sep) {
        ag_free(v);
        return 0;
    }
    *sep = '\0';
    const char *ctype = NULL, *etag = NULL;
    for (char *line = v, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        char *colon = strstr(line, ": ");
        if (!colon) continue;
        *colon = '\0';
        if (!strcasecmp(line, "content-type"))
            ctype = colon + 2;
        else if (!strcasecmp(line, "etag"))
            etag = colon + 2, ag_http_resp_header(p->req, line, etag);
        else
            ag_http_resp_header(p->req, line, colon + 2);
    }
    char age[24];
    uint64_t life = (uint64_t)p->route->cache_max_age_s * 1000000000ull, left = expires - now;
    snprintf(age, sizeof age, "%llu",
             (unsigned long long)((life > left ? life - left : 0) / 1000000000ull));
    ag_http_resp_header(p->req, "Age", age);
    answer_cached(p, ctype, etag, sep + 2, n - (size_t)(sep + 2 - v));
    ag_free(v);
    return 1;
}

/* Keep a 200 for later anonymous GETs (not when the upstream said private or
 * no-store, or set a cookie). `saved` holds its passed-through header lines. */
static void cache_store(struct pctx *p, const struct ag_http_client_resp *r, const char *ctype,
                        const char *etag, const struct ag_buf *saved)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        const char *n = r->headers[i].name, *v = r->headers[i].value;
        if (!strcasecmp(n, "set-cookie") || (!strcasecmp(n, "cache-control") && v &&
                                             (strstr(v, "private") || strstr(v, "no-store"))))
            return;
    }
    struct ag_buf k, v;
    ag_buf_init(&k);
    ag_buf_init(&v);
    cache_key(p, &k);
    ag_buf_printf(&v, "content-type: %s\netag: %s\n", ctype ? ctype : "application/json", etag);
    if (saved->len) ag_buf_append(&v, saved->data, saved->len);
    ag_buf_puts(&v, "\n");
    ag_buf_append(&v, r->body, r->body_len);
    uint64_t now = ag_clock_mono(p->gw->clock ? p->gw->clock : ag_clock_system());
    uint64_t expires = now + (uint64_t)p->route->cache_max_age_s * 1000000000ull;
    if (k.data && v.data) {
        struct ag_lru_item it = {k.data, k.len, v.data, v.len, expires};
        ag_lru_put(p->gw->resp_cache, &it, ag_lru_gen(p->gw->resp_cache));
    }
    ag_buf_free(&k);
    ag_buf_free(&v);
}

/* A 200 of a caching route: ETag (the upstream's or the body's), store when
 * anonymous, 304 when the client has it. 1 answered. */
static int cache_upstream(struct pctx *p, const struct ag_http_client_resp *r, const char *ctype,
                          const struct ag_buf *saved)
{
    if (!p->route->cache_max_age_s || r->status != 200 ||
        strcmp(ag_http_req_method(p->req), "GET") != 0)
        return 0;
    const char *up = NULL;
    for (size_t i = 0; i < r->nheaders && !up; i++)
        if (!strcasecmp(r->headers[i].name, "etag")) up = r->headers[i].value;
    char etag[40];
    if (up && up[0] == '"') { /* strong: passed through (set with the other headers) */
        snprintf(etag, sizeof etag, "%.38s", up);
    } else {
        snprintf(etag, sizeof etag, "\"%016llx\"",
                 (unsigned long long)ag_xxh3(r->body, r->body_len));
        ag_http_resp_header(p->req, "ETag", etag);
    }
    if (cacheable(p)) cache_store(p, r, ctype, etag, saved);
    answer_cached(p, ctype, etag, r->body, r->body_len);
    return 1;
}

/* ---- forwarding ---- */

static void add_hdr(struct pctx *p, size_t *n, const char *name, const char *value)
{
    if (*n < MAX_FWD_HEADERS && value) p->hdrs[(*n)++] = (struct ag_http_header){name, value};
}

static char *xff(struct pctx *p)
{
    const char *prev = ag_http_req_header(p->req, "x-forwarded-for");
    const char *peer = ag_http_req_peer(p->req);
    char ip[64] = "";
    if (peer) {
        size_t pl = strlen(peer);
        if (pl >= sizeof ip) pl = sizeof ip - 1;
        memcpy(ip, peer, pl);
        ip[pl] = '\0';
        char *c = strrchr(ip, ':');
        if (c) *c = '\0';
    }
    size_t pl = prev ? strlen(prev) : 0, il = strlen(ip);
    char *s = ag_http_req_alloc(p->req, pl + 2 + il + 1);
    if (!s) return NULL;
    char *o = s;
    if (prev) memcpy(o, prev, pl), memcpy(o + pl, ", ", 2), o += pl + 2;
    memcpy(o, ip, il + 1);
    return s;
}

/* x-user-sig for the identity headers on `method target`, when a mesh key is set. */
static const char *user_sig(struct pctx *p, const char *method, const char *target)
{
    const char *key = p->gw->opts.mesh_key;
    char *sig = key && target ? ag_http_req_alloc(p->req, AG_USER_SIG_MAX) : NULL;
    int64_t now = (int64_t)(ag_clock_now(p->gw->clock) / 1000000000u);
    if (sig && ag_http_user_sig(key, now, p->who.sub, p->who.roles_csv, method, target, sig))
        return NULL;
    return sig;
}

static size_t build_headers(struct pctx *p, const char *target)
{
    struct ag_http_req *req = p->req;
    const char *conn = ag_http_req_header(req, "connection");
    size_t n = 0;
    for (size_t i = 0; i < ag_http_req_header_count(req); i++) {
        const char *name, *value;
        ag_http_req_header_at(req, i, &name, &value);
        if (hop_by_hop(name, conn) || identity_header(name)) continue;
        if (!strcasecmp(name, "authorization") && p->authed)
            continue; /* verified: identity goes as x-user-* */
        add_hdr(p, &n, name, value);
    }
    add_hdr(p, &n, "X-Forwarded-For", xff(p));
    add_hdr(p, &n, "X-Forwarded-Proto", "http");
    add_hdr(p, &n, "X-Forwarded-Host", ag_http_req_header(req, "host"));
    if (p->authed) {
        add_hdr(p, &n, "x-user-id", p->who.sub);
        add_hdr(p, &n, "x-user-roles", p->who.roles_csv);
        add_hdr(p, &n, "x-user-sig", user_sig(p, ag_http_req_method(req), target));
    }
    return n;
}

static char *upstream_path(struct pctx *p, size_t prefix_len)
{
    const char *path = ag_http_req_path(p->req), *q = ag_http_req_query(p->req);
    const char *rw = p->route->rewrite;
    const char *rest = rw ? path + prefix_len : path;
    if (rw && rw[strlen(rw) - 1] == '/' && *rest == '/') rest++;
    size_t wl = rw ? strlen(rw) : 0, rl = strlen(rest), ql = strlen(q);
    char *s = ag_http_req_alloc(p->req, wl + rl + ql + 3);
    if (!s) return NULL;
    char *o = s;
    memcpy(o, rw ? rw : "", wl), o += wl;
    memcpy(o, rest, rl), o += rl;
    if (ql) *o++ = '?', memcpy(o, q, ql), o += ql;
    *o = '\0';
    return *s ? s : "/";
}

static const struct gw_dest *pick_dest(const struct gw_route *r, uint64_t rnd)
{
    uint64_t x = rnd % r->total_weight;
    for (size_t i = 0; i < r->ndests; i++) {
        if (x < r->dests[i].weight) return &r->dests[i];
        x -= r->dests[i].weight;
    }
    return &r->dests[r->ndests - 1];
}

static uint64_t hash_key(struct pctx *p, struct ag_mesh_cluster *c)
{
    for (size_t i = 0; i < p->conf->nclusters; i++) {
        if (p->conf->clusters[i] != c) continue;
        const char *h = p->conf->cluster_hash_hdr[i]
                            ? ag_http_req_header(p->req, p->conf->cluster_hash_hdr[i])
                            : NULL;
        if (!h) h = p->authed ? p->who.sub : ag_http_req_peer(p->req);
        return h ? ag_xxh3(h, strlen(h)) : 0;
    }
    return 0;
}

/* A blocking read (`Prefer: wait=N`, RFC 7240; the services park a GET of an
 * order up to N seconds, issue 11) must not be cut by the route's timeout: its
 * deadline, and each try's, becomes at least N s + GW_WAIT_SLACK_MS, up to
 * GW_WAIT_MAX_MS. Other requests keep the route's. */
#define GW_WAIT_SLACK_MS 5000
#define GW_WAIT_MAX_MS   40000

static uint32_t wait_ms(const struct ag_http_req *req)
{
    const char *h = ag_http_req_header(req, "Prefer");
    for (const char *p = h; p && *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        if (strncasecmp(p, "wait", 4) == 0) {
            const char *q = p + 4;
            while (*q == ' ') q++;
            if (*q++ == '=') {
                while (*q == ' ' || *q == '"') q++;
                uint64_t v = 0;
                int n = 0;
                for (; *q >= '0' && *q <= '9' && n < 9; q++, n++) v = v * 10 + (uint64_t)(*q - '0');
                if (!n || !v) return 0;
                v = v * 1000 + GW_WAIT_SLACK_MS;
                return (uint32_t)(v > GW_WAIT_MAX_MS ? GW_WAIT_MAX_MS : v);
            }
        }
        p = strchr(p, ',');
    }
    return 0;
}

static void forward(struct pctx *p)
{
    size_t prefix_len = p->prefix_len;
    struct ag_http_req *req = p->req;
    const struct gw_dest *d = pick_dest(p->route, ag_rng_next(ag_rng_system()));
    struct ag_mesh_call *c = &p->call;
    c->cluster = d->cluster;
    c->subset = d->subset;
    c->hash = hash_key(p, d->cluster);
    c->retry = p->route->retry;
    c->req.method = ag_http_req_method(req);
    c->req.path = upstream_path(p, prefix_len);
    c->req.headers = p->hdrs;
    c->req.nheaders = build_headers(p, c->req.path);
    c->req.body = ag_http_req_body(req, &c->req.body_len);
    c->req.timeout_ms = p->route->timeout_ms;
    uint32_t wait = strcmp(c->req.method, "GET") == 0 ? wait_ms(req) : 0;
    if (wait > c->req.timeout_ms) c->req.timeout_ms = wait;
    if (wait && c->retry.per_try_timeout_ms && wait > c->retry.per_try_timeout_ms)
        c->retry.per_try_timeout_ms = wait;
    ag_http_propagate(req, &c->req);
    if (ag_span_enabled() && ag_http_req_trace(req)) { /* the service's parent: this span */
        char name[AG_SPAN_NAME_MAX];
        snprintf(name, sizeof name, "call %s %s", ag_mesh_cluster_name(d->cluster), c->req.method);
        ag_span_begin(&p->span, name, AG_SPAN_CLIENT, ag_http_req_trace(req));
        ag_span_attr_str(&p->span, "peer.service", ag_mesh_cluster_name(d->cluster));
        ag_span_attr_str(&p->span, "gateway.route", p->route->name);
        ag_obs_trace_format(&p->span.ctx, c->req.traceparent);
    }
    if (!strcmp(c->req.method, "GET")) { /* SSE passes through as it arrives */
        c->req.stream_type = "text/event-stream";
        c->req.stream_idle_ms = STREAM_IDLE_MS;
        c->req.on_data = on_stream_data;
        c->req.stream_ud = p;
    }
    if (!c->req.path) {
        refuse(p, 500, "out of memory");
        return;
    }
    int rc = ag_mesh_call_start(ag__gw_loop_pools(p->loop), c, on_upstream, p);
    if (rc)
        refuse(p, rc == AG_EINVAL ? 400 : status_for(rc),
               rc == AG_EINVAL ? "the request cannot be forwarded" : detail_for(rc));
}

static void on_delay(uv_timer_t *t)
{
    forward(t->data);
}

/* ---- admission ---- */

/* The decimal form of v at o (no NUL); returns its end. */
static char *put_u64(char *o, uint64_t v)
{
    char tmp[24], *t = tmp + sizeof tmp;
    do *--t = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    size_t n = (size_t)(tmp + sizeof tmp - t);
    memcpy(o, t, n);
    return o + n;
}

/* 429 with Retry-After and the IETF RateLimit headers, or 0 to continue. */
static int rate_limit(struct pctx *p)
{
    const struct gw_route *r = p->route;
    if (!r->limiter) return 0;
    const char *key = NULL;
    char buf[200];
    if (r->key_kind == GW_KEY_HEADER || r->key_kind == GW_KEY_API_KEY)
        key = ag_http_req_header(p->req, r->key_header);
    else if (r->key_kind == GW_KEY_USER_OR_IP && p->authed)
        key = p->who.sub;
    if (!key) {
        const char *peer = ag_http_req_peer(p->req);
        snprintf(buf, sizeof buf, "ip:%s", peer ? peer : "local");
        char *c = strrchr(buf, ':');
        if (c && c > buf + 3) *c = '\0';
        key = buf;
    }
    uint64_t wait = 0;
    uint64_t window_s = (r->rate.period_ns + 999999999) / 1000000000;
    char policy[96], *o = policy; /* "route";q=<limit>;w=<window>, on every answer */
    memcpy(o, "\"route\";q=", 10);
    o = put_u64(o + 10, r->rate.limit);
    memcpy(o, ";w=", 3);
    *put_u64(o + 3, window_s ? window_s : 1) = '\0';
    ag_http_resp_header(p->req, "RateLimit-Policy", policy);
    if (ag_ratelimit_acquire(r->limiter, key, strlen(key), 1, &wait) == 0) return 0;
    char v[64];
    uint64_t secs = (wait + 999999999) / 1000000000;
    snprintf(v, sizeof v, "%llu", (unsigned long long)(secs ? secs : 1));
    ag_http_resp_header(p->req, "Retry-After", v);
    snprintf(v, sizeof v, "\"route\";r=0;t=%llu", (unsigned long long)(secs ? secs : 1));
    ag_http_resp_header(p->req, "RateLimit", v);
    ag_obs_counter_inc(r->m_limited);
    return refuse(p, 429, "rate limit exceeded"), 1;
}

static bool has_role(const struct gw_principal *w, const char *role)
{
    for (size_t i = 0; i < w->nroles; i++)
        if (!strcmp(w->roles[i], role)) return true;
    return false;
}

static bool has_scope(const struct gw_principal *w, const char *scope)
{
    for (size_t i = 0; i < w->nscopes; i++)
        if (!strcmp(w->scopes[i], scope)) return true;
    return false;
}

static int authorise(struct pctx *p)
{
    const struct gw_route *r = p->route;
    if (r->auth_required && !p->authed) {
        ag__gw_count_denied(p->gw, "anonymous");
        AG_WARN("authz.denied", AG_LS("sub", "anonymous"), AG_LS("route", r->name),
                AG_LS("path", ag_http_req_path(p->req)), AG_LS("reason", "anonymous"));
        ag_http_resp_header(p->req, "WWW-Authenticate", "Bearer");
        return refuse(p, 401, "a bearer token is required"), 1;
    }
    if (!r->nroles && !r->nscopes) return 0;
    bool ok = r->nroles == 0;
    for (size_t i = 0; i < r->nroles && !ok; i++) ok = has_role(&p->who, r->roles[i]);
    for (size_t i = 0; i < r->nscopes && ok; i++) ok = has_scope(&p->who, r->scopes[i]);
    if (ok) return 0;
    ag__gw_count_denied(p->gw, "missing_role");
    AG_WARN("authz.denied", AG_LS("sub", p->who.sub), AG_LS("route", r->name),
            AG_LS("path", ag_http_req_path(p->req)), AG_LS("reason", "missing_role"));
    return refuse(p, 403, "the token does not grant access to this resource"), 1;
}

/* Idempotency-Key on POST: replay, refuse a concurrent duplicate, or reserve. */
static int idempotency(struct pctx *p)
{
    const char *key = ag_http_req_header(p->req, "idempotency-key");
    if (!key || !p->route->idempotency || strcmp(ag_http_req_method(p->req), "POST")) return 0;
    if (!*key || strlen(key) > 255)
        return refuse(p, 400, "Idempotency-Key must be 1..255 characters"), 1;
    const char *peer = ag_http_req_peer(p->req);
    snprintf(p->idem_user, sizeof p->idem_user, "%s",
             p->authed ? p->who.sub
             : peer    ? peer
                       : "anonymous");
    char *port = p->authed ? NULL : strrchr(p->idem_user, ':');
    if (port) *port = '\0'; /* the client's IP, not its ephemeral port */
    size_t blen;
    const char *body = ag_http_req_body(p->req, &blen);
    uint64_t fp = ag_xxh3_seed(body, blen,
                               ag_xxh3(ag_http_req_path(p->req), strlen(ag_http_req_path(p->req))));
    struct gw_idem_resp r = {0};
    switch (ag__gw_idem_begin(p->gw->idem, key, p->idem_user, fp, &r)) {
    case GW_IDEM_NEW:
        p->idem_key = key;
        return 0;
    case GW_IDEM_IN_PROGRESS:
        return refuse(p, 409, "a request with this Idempotency-Key is still being processed"), 1;
    case GW_IDEM_MISMATCH:
        return refuse(p, 422, "this Idempotency-Key was used for a different request"), 1;
    case GW_IDEM_DONE:
        break;
    }
    for (char *line = r.headers, *nl; line && *line; line = nl + 1) {
        if (!(nl = strchr(line, '\n'))) break;
        *nl = '\0';
        char *colon = strstr(line, ": ");
        if (colon) *colon = '\0', ag_http_resp_header(p->req, line, colon + 2);
    }
    ag_http_resp_header(p->req, "Idempotent-Replayed", "true");
    metrics(p, r.status);
    ag_http_respond(p->req, r.status, r.content_type, r.body, r.body_len);
    ag__gw_idem_resp_free(&r);
    pctx_done(p);
    return 1;
}

static bool chance(double pct)
{
    return pct > 0 && (pct >= 100 || ag_rng_double(ag_rng_system()) * 100 < pct);
}

/* Route, admit, then forward (maybe after an injected delay). */
static int admit(struct pctx *p)
{
    size_t prefix_len, blen;
    struct ag_http_req *req = p->req;
    p->route = ag__gw_route_find(p->conf, ag_http_req_method(req), ag_http_req_path(req), req,
                                 &prefix_len);
    p->prefix_len = prefix_len;
    if (!p->route) return refuse(p, 404, "no route for this request");
    if (ag_span_enabled()) {
        char name[AG_SPAN_NAME_MAX];
        snprintf(name, sizeof name, "gateway %s %s", ag_http_req_method(req), p->route->name);
        ag_http_req_span_name(req, name);
    }
    ag_http_req_body(req, &blen);
    size_t max = p->route->max_body ? p->route->max_body : p->conf->max_body;
    if (blen > max) return refuse(p, 413, "the request body is too large");
    if (chance(p->route->abort_pct)) return refuse(p, p->route->abort_status, "fault injected");
    bool has = false;
    if (ag__gw_authenticate(p->gw, p->loop, p->conf, req, &p->who, &has)) {
        ag__gw_count_denied(p->gw, "invalid_token");
        metrics(p, 401);
        pctx_done(p);
        return 0;
    }
    p->authed = has;
    if (authorise(p) || rate_limit(p) || idempotency(p) || cache_answer(p)) return 0;
    if (chance(p->route->delay_pct) && p->route->delay_ms) {
        uv_timer_init(ag_http_req_loop(req), &p->timer);
        p->timer.data = p;
        p->timer_used = true;
        uv_timer_start(&p->timer, on_delay, p->route->delay_ms, 0);
        return 0;
    }
    forward(p);
    return 0;
}

int ag__gw_proxy(struct ag_http_req *req, void *ud)
{
    struct ag_gateway *gw = ud;
    struct gw_loop *l = ag__gw_loop_get(gw, req);
    if (!l) return ag__gw_problem(req, 503, "the gateway is shutting down");
    struct pctx *p = pctx_new(l);
    if (!p) return ag__gw_problem(req, 503, "out of memory");
    p->gw = gw;
    p->req = req;
    p->conf = ag__gw_loop_acquire(l, &p->conf_token);
    if (!p->conf) {
        ag__gw_loop_pctx_put(l, p);
        return ag__gw_problem(req, 503, "out of memory");
    }
    return admit(p);
}
