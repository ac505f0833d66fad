/*
 * The trace endpoints (admin), read from this process's recent-span buffer
 * (ag_span_trace_json, src/obs/span.c):
 *
 *   GET /admin/traces/{traceId}  every span of the trace still in the buffer;
 *   GET /admin/orders/{id}/trace the trace that placed the order: its id comes
 *                                from the traceparent in the metadata of the
 *                                order stream's first event (OrderPlaced).
 *
 * Both answer {"traceId","spans":[...]} (the operator console draws the waterfall
 * from it), or 404 when the buffer holds none of the trace's spans (tracing off,
 * the spans overwritten since, or another process served the request).
 */
#include <string.h>

#include "services/internal.h"

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* 32 lower-case hex digits into id[16]; false when `s` is not one. */
static bool trace_id_parse(const char *s, uint8_t id[16])
{
    if (strlen(s) != 32) return false;
    for (size_t i = 0; i < 16; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        id[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static int answer_trace(struct svc_job *j, const uint8_t id[16], const char *what)
{
    struct ag_buf b;
    ag_buf_init(&b);
    int rc = ag_span_trace_json(id, &b);
    json_t *body = rc ? NULL : json_loadb(b.data, b.len, 0, NULL);
    ag_buf_free(&b);
    if (rc == AG_ENOTFOUND)
        return svc_problem(j, 404, "Trace not found",
                           "no span of %s is in the recent-span buffer (AGORA_TRACE_BUFFER)", what);
    if (!body) return rc ? rc : AG_ENOMEM;
    return svc_ok(j, 200, body);
}

/* GET /admin/traces/{traceId} */
static int get_trace(struct svc_job *j)
{
    uint8_t id[16];
    const char *s = j->q[0] ? j->q[0] : "";
    if (!trace_id_parse(s, id))
        return svc_problem(j, 404, "Trace not found", "%.64s is not a trace id (32 hex digits)", s);
    return answer_trace(j, id, "this trace");
}

/* The trace id in the traceparent of the order stream's first event. */
static int order_trace_id(struct svc_job *j, uint8_t id[16])
{
    char stream[256];
    svc_stream(stream, sizeof stream, "order", j->param);
    if (ag_store_check_stream(stream, strlen(stream), NULL)) return AG_ENOTFOUND;
    struct ag_event_page page;
    int rc = ag_store_read_stream(j->env->store, stream, strlen(stream), 0, AG_READ_FORWARD, 8,
                                  &page, NULL);
    if (rc) return rc;
    rc = AG_ENOTFOUND;
    /* stored once per command: OrderCreated may name the next event's (es/meta.c) */
    json_t *meta = page.count
                       ? ag_es_event_meta(j->env->store, &page.events[0], page.events, page.count)
                       : NULL;
    const char *tp = json_string_value(json_object_get(meta, "traceparent"));
    struct ag_obs_trace t;
    if (tp && ag_obs_trace_parse(tp, strlen(tp), &t) == 0) {
        memcpy(id, t.trace_id, 16);
        rc = 0;
    }
    json_decref(meta);
    ag_event_page_free(&page);
    return rc;
}

/* GET /admin/orders/{id}/trace */
static int get_order_trace(struct svc_job *j)
{
    uint8_t id[16];
    int rc = order_trace_id(j, id);
    if (rc == AG_ENOTFOUND)
        return svc_problem(j, 404, "Trace not found", "no order %s, or its events name no trace",
                           j->param);
    if (rc) return svc_error(j, rc, NULL);
    return answer_trace(j, id, "the trace that placed this order");
}

static const struct svc_route routes[] = {
    /* not a UUID: the id goes to j->q[0] and get_trace checks its shape */
    {"GET", "/admin/traces/{traceId}", SVC_ADMIN, get_trace, NULL, NULL, {":traceId"}},
    {"GET", "/admin/orders/{id}/trace", SVC_ADMIN, get_order_trace, "id", "order", {NULL}},
};

const struct svc_context svc_traces_context = {"traces", routes, sizeof routes / sizeof routes[0],
                                               NULL, RM_COUNT};
