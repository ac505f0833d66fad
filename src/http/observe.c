/*
 * The built-in middleware: request id, W3C trace context, RED metrics per route
 * and the access log, plus the ops routes /metrics, /health/live, /health/ready.
 *
 * Metrics per route are cached on the route: an array of series pointers indexed
 * by status code, filled on first use (registry lock once per route and status),
 * then read with one atomic load, so the hot path takes no lock.
 */
#include <stdio.h>
#include <string.h>

#include "http/internal.h"

struct route_metrics {
    struct ag_obs_series *_Atomic by_status[500]; /* requests_total per status 100..599 */
    struct ag_obs_series *_Atomic duration;       /* request_duration_seconds */
};

struct ag__observe {
    struct ag_http_observe cfg;      /* what is on */
    struct ag_obs_family *requests;  /* agora_http_requests_total */
    struct ag_obs_family *duration;  /* agora_http_request_duration_seconds */
    struct ag_obs_series *in_flight; /* agora_http_requests_in_flight */
    struct ag_obs_family *refused;   /* agora_http_connections_refused_total */
    struct ag_obs_series *sse_open;  /* agora_sse_streams */
    struct ag_obs_series *sse_drop;  /* agora_sse_dropped_total */
};

/* ---- metrics ---- */

static int define_metrics(struct ag__observe *ob)
{
    static const char *const red[] = {"method", "route", "status"};
    struct ag_obs_registry *reg = ob->cfg.metrics;
    struct ag_obs_family *fl;
    static const char *const why[] = {"reason"};
    static const struct ag_obs_family_spec
        requests = {AG_OBS_COUNTER, "agora_http_requests_total",
                    "HTTP requests answered, by method, route and status.", 3, red},
        duration = {AG_OBS_HISTOGRAM, "agora_http_request_duration_seconds",
                    "Time from the first byte of a request to "
                    "its answer, by method and route.",
                    2, red},
        in_flight = {AG_OBS_GAUGE, "agora_http_requests_in_flight", "HTTP requests being handled."},
        refused = {AG_OBS_COUNTER, "agora_http_connections_refused_total",
                   "Connections closed at accept, by reason "
                   "(per_peer: the peer address already has "
                   "max_conns_per_peer open).",
                   1, why};
    int rc = ag_obs_family_define(reg, &requests, &ob->requests);
    if (!rc) rc = ag_obs_family_define(reg, &duration, &ob->duration);
    if (!rc) rc = ag_obs_family_define(reg, &in_flight, &fl);
    if (!rc) rc = ag_obs_series_get(fl, NULL, &ob->in_flight);
    if (!rc) rc = ag_obs_family_define(reg, &refused, &ob->refused);
    static const struct ag_obs_family_spec
        sse_open = {AG_OBS_GAUGE, "agora_sse_streams",
                    "Server-Sent Event streams open (ag_http_sse_begin; the gateway passes streams "
                    "through uncounted)."},
        sse_drop = {AG_OBS_COUNTER, "agora_sse_dropped_total",
                    "Streaming clients dropped because they fell behind the unsent-bytes cap."};
    if (!rc) rc = ag_obs_family_define(reg, &sse_open, &fl);
    if (!rc) rc = ag_obs_series_get(fl, NULL, &ob->sse_open);
    if (!rc) rc = ag_obs_family_define(reg, &sse_drop, &fl);
    if (!rc) rc = ag_obs_series_get(fl, NULL, &ob->sse_drop);
    return rc;
}

static struct route_metrics *route_metrics(struct ag__route *rt)
{
    void *_Atomic *slot = ag__http_route_metrics_slot(rt);
    struct route_metrics *rm = atomic_load_explicit(slot, memory_order_acquire);
    if (rm) return rm;
    struct route_metrics *fresh = ag_calloc(1, sizeof *fresh);
    if (!fresh) return NULL;
    void *expected = NULL;
    if (atomic_compare_exchange_strong(slot, &expected, fresh)) return fresh;
    ag_free(fresh);
    return expected;
}

static struct ag_obs_series *series_for(struct ag__observe *ob, struct ag__route *rt, int status,
                                        struct ag_obs_series *_Atomic *slot,
                                        struct ag_obs_family *f)
{
    struct ag_obs_series *s = atomic_load_explicit(slot, memory_order_acquire);
    if (s) return s;
    char code[8];
    snprintf(code, sizeof code, "%d", status);
    const char *values[] = {ag__http_route_method(rt), ag__http_route_pattern(rt), code};
    if (ag_obs_series_get(f, values, &s) != 0) return NULL;
    atomic_store_explicit(slot, s, memory_order_release);
    AG_UNUSED(ob);
    return s;
}

static void record_metrics(struct ag__observe *ob, struct ag_http_req *req, double seconds)
{
    ag_obs_gauge_add(ob->in_flight, -1);
    struct route_metrics *rm = req->route ? route_metrics(req->route) : NULL;
    if (!rm || req->status < 100 || req->status > 599) return;
    struct ag_obs_series *s =
        series_for(ob, req->route, req->status, &rm->by_status[req->status - 100], ob->requests);
    ag_obs_counter_inc(s);
    s = series_for(ob, req->route, 0, &rm->duration, ob->duration);
    ag_obs_histogram_observe(s, seconds);
}

/* ---- middleware ---- */

void ag__http_observe_request(struct ag__observe *ob, struct ag_http_req *req)
{
    if (ob->cfg.request_id) {
        const char *h = ag_http_req_header(req, "x-request-id");
        if (h && ag_obs_request_id_valid(h, strlen(h)))
            memcpy(req->id, h, strlen(h) + 1);
        else
            ag_obs_request_id_new(req->id);
    }
    if (ob->cfg.trace) {
        const char *h = ag_http_req_header(req, "traceparent");
        struct ag_obs_trace parent;
        if (h && ag_obs_trace_parse(h, strlen(h), &parent) == 0) {
            ag_obs_trace_child(&parent, &req->trace, NULL);
            memcpy(req->trace_parent, parent.span_id, sizeof req->trace_parent);
        } else {
            ag_obs_trace_new(&req->trace, NULL);
        }
        req->has_trace = true;
    }
    if (ob->cfg.metrics) ag_obs_gauge_add(ob->in_flight, 1);
}

static void access_log(struct ag_http_req *req, double seconds)
{
    char tp[AG_OBS_TRACEPARENT_LEN + 1] = "";
    if (req->has_trace) ag_obs_trace_format(&req->trace, tp);
    const char *route = ag_http_req_route(req);
    AG_INFO("http request", AG_LS("method", req->method), AG_LS("path", req->path),
            AG_LS("route", route ? route : "unmatched"), AG_LI("status", req->status),
            AG_LD("duration_ms", seconds * 1000.0), AG_LU("bytes_in", req->body.len),
            AG_LU("bytes_out", req->resp_body_len),
            AG_LS("request_id", req->id[0] ? req->id : NULL),
            AG_LS("traceparent", tp[0] ? tp : NULL), AG_LS("peer", req->conn->peer));
}

/* The request's server span: its id is the one its traceparent answer names. */
static void server_span(struct ag__observe *ob, struct ag_http_req *req, uint64_t now_mono)
{
    static const uint8_t zero[8];
    const char *route = ag_http_req_route(req);
    struct ag_span sp;
    char name[AG_SPAN_NAME_MAX];
    if (!req->span_name[0])
        snprintf(name, sizeof name, "%s %s %s", ob->cfg.span_server ? ob->cfg.span_server : "http",
                 req->method, route ? route : "unmatched");
    bool root = memcmp(req->trace_parent, zero, sizeof zero) == 0;
    ag_span_begin_as(&sp, req->span_name[0] ? req->span_name : name, AG_SPAN_SERVER, &req->trace,
                     root ? NULL : req->trace_parent);
    sp.end_ns = sp.start_ns;
    sp.start_ns -= now_mono > req->start_ns ? now_mono - req->start_ns : 0;
    ag_span_attr_str(&sp, "http.request.method", req->method);
    if (route) ag_span_attr_str(&sp, "http.route", route);
    ag_span_attr_str(&sp, "url.path", req->path);
    ag_span_attr_int(&sp, "http.response.status_code", req->status);
    sp.status = req->status >= 500 ? AG_SPAN_ERROR : AG_SPAN_UNSET;
    ag_span_record(&sp);
}

void ag__http_observe_response(struct ag__observe *ob, struct ag_http_req *req)
{
    if (req->id[0]) ag_http_resp_header(req, "X-Request-ID", req->id);
    if (req->has_trace) {
        char tp[AG_OBS_TRACEPARENT_LEN + 1];
        ag_obs_trace_format(&req->trace, tp);
        ag_http_resp_header(req, "traceparent", tp);
    }
    bool span = req->has_trace && ag_span_enabled();
    if (!ob->cfg.metrics && !ob->cfg.access_log && !span) return;
    uint64_t now = ag_clock_mono(ag_clock_system());
    if (span) server_span(ob, req, now);
    double seconds = (double)(now - req->start_ns) / 1e9;
    if (ob->cfg.metrics) record_metrics(ob, req, seconds);
    if (ob->cfg.access_log) access_log(req, seconds);
}

/* ---- ops routes ---- */

static int metrics_handler(struct ag_http_req *req, void *ud)
{
    struct ag__observe *ob = ud;
    if (ob->cfg.metrics_guard && ob->cfg.metrics_guard(req, ob->cfg.metrics_guard_ud)) return 0;
    struct ag_buf b;
    ag_buf_init(&b);
    int rc = ag_obs_registry_render(ob->cfg.metrics, &b);
    if (!rc) rc = ag_http_respond(req, 200, AG_OBS_PROM_CONTENT_TYPE, b.data, b.len);
    ag_buf_free(&b);
    return rc;
}

static int health(struct ag_http_req *req, struct ag__observe *ob, enum ag_obs_probe probe)
{
    struct ag_buf b;
    ag_buf_init(&b);
    bool up = false;
    int rc;
    if (probe == AG_OBS_READY && ag__http_ctx_draining(req->conn->ctx)) {
        rc = ag_buf_puts(
            &b, "{\"status\":\"down\",\"checks\":[{\"name\":\"server\",\"status\":\"down\","
                "\"detail\":\"draining\"}]}");
    } else {
        int res = ag_obs_health_render(ob->cfg.health, probe, &b);
        rc = res < 0 ? res : 0;
        up = res == 1;
    }
    if (!rc) rc = ag_http_resp_header(req, "Cache-Control", "no-store");
    if (!rc) rc = ag_http_respond(req, up ? 200 : 503, "application/json", b.data, b.len);
    ag_buf_free(&b);
    return rc;
}

static int live_handler(struct ag_http_req *req, void *ud)
{
    return health(req, ud, AG_OBS_LIVE);
}
static int ready_handler(struct ag_http_req *req, void *ud)
{
    return health(req, ud, AG_OBS_READY);
}

int ag__http_observe_init(struct ag_http_router *r, const struct ag_http_observe *o,
                          struct ag__observe **out)
{
    struct ag__observe *ob = ag_calloc(1, sizeof *ob);
    if (!ob) return AG_ENOMEM;
    ob->cfg = *o;
    int rc = o->metrics ? define_metrics(ob) : 0;
    if (!rc && o->ops_routes && o->metrics)
        rc = ag_http_route(r, "GET", "/metrics", metrics_handler, ob);
    if (!rc && o->ops_routes) rc = ag_http_route(r, "GET", "/health/live", live_handler, ob);
    if (!rc && o->ops_routes) rc = ag_http_route(r, "GET", "/health/ready", ready_handler, ob);
    *out = ob; /* kept even on failure: routes registered so far point at it */
    return rc;
}

struct ag_obs_series *ag__http_observe_refused(struct ag__observe *ob, const char *reason)
{
    struct ag_obs_series *s = NULL;
    const char *values[] = {reason};
    if (!ob || !ob->refused || ag_obs_series_get(ob->refused, values, &s) != 0) return NULL;
    return s;
}

void ag__http_observe_sse(struct ag__observe *ob, int streams_delta, bool dropped)
{
    if (!ob) return;
    if (streams_delta && ob->sse_open) ag_obs_gauge_add(ob->sse_open, streams_delta);
    if (dropped && ob->sse_drop) ag_obs_counter_inc(ob->sse_drop);
}

void ag__http_observe_free(struct ag__observe *ob)
{
    ag_free(ob);
}
