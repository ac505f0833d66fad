/* Spans: the recent-span ring, its JSON, the current span, the OTLP exporter,
 * breaker gauges and collector removal. Criterion runs each test in its own
 * process, so the process-wide ring starts unset in every test. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agora/obs.h"

static char *trace_json(const struct ag_obs_trace *t, int *rc)
{
    struct ag_buf b;
    ag_buf_init(&b);
    *rc = ag_span_trace_json(t->trace_id, &b);
    char *s = strndup(b.data ? b.data : "", b.len);
    ag_buf_free(&b);
    return s;
}

static size_t count(const char *s, const char *needle)
{
    size_t n = 0;
    for (const char *p = s; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
    return n;
}

Test(span, off_until_setup)
{
    struct ag_span sp;
    cr_assert_not(ag_span_enabled());
    ag_span_begin(&sp, "x", AG_SPAN_INTERNAL, NULL);
    cr_assert_eq(sp.kind, 0, "inactive while tracing is off");
    ag_span_attr_str(&sp, "k", "v");
    ag_span_end(&sp); /* no-op */
    struct ag_span_stats st;
    ag_span_stats(&st);
    cr_assert_eq(st.recorded, 0);
    struct ag_obs_trace t;
    ag_obs_trace_new(&t, NULL);
    int rc;
    free(trace_json(&t, &rc));
    cr_assert_eq(rc, AG_ENOTFOUND);
}

Test(span, a_trace_as_a_tree_in_json)
{
    cr_assert_eq(ag_span_setup(&(struct ag_span_config){.capacity = 16}), 0);
    cr_assert_eq(ag_span_setup(&(struct ag_span_config){.capacity = 16}), AG_EEXISTS);
    struct ag_span root, child, other;
    ag_span_begin(&root, "gateway POST orders", AG_SPAN_SERVER, NULL);
    cr_assert_eq(root.kind, AG_SPAN_SERVER);
    ag_span_begin(&child, "store.append", AG_SPAN_INTERNAL, &root.ctx);
    cr_assert_eq(memcmp(child.ctx.trace_id, root.ctx.trace_id, 16), 0, "same trace");
    cr_assert_eq(memcmp(child.parent, root.ctx.span_id, 8), 0, "parent link");
    ag_span_attr_int(&child, "store.events", 3);
    ag_span_attr_str(&child, "store.stream", "order-\"1\"");
    child.status = AG_SPAN_ERROR;
    ag_span_end(&child);
    ag_span_end(&root);
    ag_span_begin(&other, "another trace", AG_SPAN_INTERNAL, NULL);
    ag_span_end(&other);

    int rc;
    char *s = trace_json(&root.ctx, &rc);
    cr_assert_eq(rc, 0);
    char tp[AG_OBS_TRACEPARENT_LEN + 1], want[128];
    ag_obs_trace_format(&root.ctx, tp);
    snprintf(want, sizeof want, "{\"traceId\":\"%.32s\",\"spans\":[", tp + 3);
    cr_assert(strncmp(s, want, strlen(want)) == 0, "%s", s);
    cr_assert_eq(count(s, "\"spanId\""), 2, "only this trace's spans: %s", s);
    cr_assert(strstr(s, "\"parentSpanId\":null"), "the root has no parent: %s", s);
    snprintf(want, sizeof want, "\"parentSpanId\":\"%.16s\"", tp + 36);
    cr_assert(strstr(s, want), "the child names its parent: %s", s);
    cr_assert(strstr(s, "\"attributes\":{\"store.events\":3,\"store.stream\":\"order-\\\"1\\\"\"}"),
              "%s", s);
    cr_assert(strstr(s, "\"kind\":\"server\"") && strstr(s, "\"status\":\"error\""), "%s", s);
    cr_assert(strstr(s, "\"startUnixNano\":\""), "nanoseconds as strings: %s", s);
    free(s);
}

Test(span, the_ring_keeps_the_newest)
{
    cr_assert_eq(ag_span_setup(&(struct ag_span_config){.capacity = 3}), 0); /* rounds up to 4 */
    struct ag_obs_trace t;
    ag_obs_trace_new(&t, NULL);
    for (int i = 0; i < 10; i++) {
        struct ag_span sp;
        char name[16];
        snprintf(name, sizeof name, "s%d", i);
        ag_span_begin(&sp, name, AG_SPAN_INTERNAL, &t);
        ag_span_end(&sp);
    }
    int rc;
    char *s = trace_json(&t, &rc);
    cr_assert_eq(rc, 0);
    cr_assert_eq(count(s, "\"spanId\""), 4, "%s", s);
    cr_assert(strstr(s, "\"s6\"") && strstr(s, "\"s9\"") && !strstr(s, "\"s5\""), "%s", s);
    free(s);
    struct ag_span_stats st;
    ag_span_stats(&st);
    cr_assert_eq(st.recorded, 10);
    cr_assert_eq(st.dropped, 0, "nothing is dropped without an exporter");
}

Test(span, names_and_attributes_are_bounded)
{
    cr_assert_eq(ag_span_setup(&(struct ag_span_config){.capacity = 8}), 0);
    struct ag_span sp;
    char big[200];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    ag_span_begin(&sp, big, AG_SPAN_INTERNAL, NULL);
    cr_assert_eq(strlen(sp.name), AG_SPAN_NAME_MAX - 1);
    for (int i = 0; i < AG_SPAN_MAX_ATTRS + 3; i++) ag_span_attr_str(&sp, "k", big);
    cr_assert_eq(sp.nattrs, AG_SPAN_MAX_ATTRS);
    cr_assert_eq(strlen(sp.attrs[0].s), AG_SPAN_STR_MAX - 1);
}

Test(span, current_is_per_thread)
{
    struct ag_obs_trace t, got;
    ag_obs_trace_new(&t, NULL);
    cr_assert_not(ag_span_current(&got));
    ag_span_set_current(&t);
    cr_assert(ag_span_current(&got));
    cr_assert_eq(memcmp(&got, &t, sizeof t), 0);
    ag_span_set_current(NULL);
    cr_assert_not(ag_span_current(&got));
}

Test(span, bad_endpoints_are_refused)
{
    cr_assert_eq(
        ag_span_setup(&(struct ag_span_config){.capacity = 8, .otlp_endpoint = "https://x"}),
        AG_EINVAL);
    cr_assert_eq(ag_span_setup(&(struct ag_span_config){.capacity = 8, .otlp_endpoint = "http://"}),
                 AG_EINVAL);
}

/* ---- the exporter against a one-shot receiver ---- */

struct receiver {
    int fd;
    char req[65536];
    size_t len;
};

static void *receive(void *arg)
{
    struct receiver *r = arg;
    int c = accept(r->fd, NULL, NULL);
    if (c < 0) return NULL;
    for (;;) { /* until the body is in: headers, then Content-Length bytes */
        ssize_t n = recv(c, r->req + r->len, sizeof r->req - 1 - r->len, 0);
        if (n <= 0) break;
        r->len += (size_t)n;
        r->req[r->len] = '\0';
        char *end = strstr(r->req, "\r\n\r\n");
        const char *cl = strcasestr(r->req, "content-length:");
        if (end && cl && r->len >= (size_t)(end + 4 - r->req) + strtoul(cl + 15, NULL, 10)) break;
    }
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    ssize_t w = send(c, ok, sizeof ok - 1, 0);
    (void)w;
    close(c);
    return NULL;
}

Test(span, exports_otlp_json)
{
    struct receiver r = {.fd = socket(AF_INET, SOCK_STREAM, 0)};
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    cr_assert_eq(bind(r.fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(r.fd, 4), 0);
    getsockname(r.fd, (struct sockaddr *)&a, &al);
    pthread_t th;
    pthread_create(&th, NULL, receive, &r);
    char ep[64];
    snprintf(ep, sizeof ep, "http://127.0.0.1:%u/base/", ntohs(a.sin_port));
    struct ag_obs_registry *reg;
    ag_obs_registry_new(&reg);
    cr_assert_eq(ag_span_setup(&(struct ag_span_config){.capacity = 64,
                                                        .service_name = "svc",
                                                        .otlp_endpoint = ep,
                                                        .batch_spans = 2,
                                                        .metrics = reg}),
                 0);
    struct ag_span root, child;
    ag_span_begin(&root, "root", AG_SPAN_SERVER, NULL);
    ag_span_begin(&child, "child", AG_SPAN_CLIENT, &root.ctx);
    ag_span_attr_int(&child, "n", 7);
    ag_span_end(&child);
    ag_span_end(&root);
    pthread_join(th, NULL); /* a batch of 2 goes out at the next poll */
    close(r.fd);
    ag_span_shutdown();
    cr_assert(strncmp(r.req, "POST /base/v1/traces HTTP/1.1\r\n", 31) == 0, "%s", r.req);
    cr_assert(strcasestr(r.req, "content-type: application/json"), "%s", r.req);
    const char *body = strstr(r.req, "\r\n\r\n") + 4;
    cr_assert(strstr(body,
                     "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\","
                     "\"value\":{\"stringValue\":\"svc\"}}]},\"scopeSpans\":[{\"scope\""),
              "%s", body);
    char tp[AG_OBS_TRACEPARENT_LEN + 1], want[128];
    ag_obs_trace_format(&child.ctx, tp);
    snprintf(want, sizeof want, "{\"traceId\":\"%.32s\",\"spanId\":\"%.16s\",\"parentSpanId\":\"",
             tp + 3, tp + 36);
    cr_assert(strstr(body, want), "%s", body);
    cr_assert(strstr(body, "\"kind\":3,\"startTimeUnixNano\":\""), "%s", body);
    cr_assert(strstr(body, "{\"key\":\"n\",\"value\":{\"intValue\":\"7\"}}"), "%s", body);
    struct ag_span_stats st;
    ag_span_stats(&st);
    cr_assert_eq(st.exported, 2);
    struct ag_buf m;
    ag_buf_init(&m);
    ag_obs_registry_render(reg, &m);
    cr_assert(strstr(m.data, "agora_trace_spans_exported_total 2\n"), "%s", m.data);
    cr_assert(strstr(m.data, "agora_trace_spans_dropped_total 0\n"), "%s", m.data);
    ag_buf_free(&m);
    ag_obs_registry_collector_remove(reg, NULL, NULL); /* not there: no-op */
    ag_obs_registry_free(reg);
}

static int calls;
static void count_call(void *ud)
{
    (void)ud;
    calls++;
}

Test(metrics, breaker_gauge_and_collector_removal)
{
    struct ag_obs_registry *r;
    ag_obs_registry_new(&r);
    cr_assert_eq(ag_obs_registry_collector(r, count_call, &calls), 0);
    ag_obs_breaker_state(r, "saga", "ProcessPayment", 1);
    ag_obs_breaker_state(r, "gateway", "platform", 2);
    struct ag_buf b;
    ag_buf_init(&b);
    ag_obs_registry_render(r, &b);
    cr_assert_eq(calls, 1);
    cr_assert(strstr(b.data, "agora_breaker_open{scope=\"saga\",name=\"ProcessPayment\"} 1\n"),
              "%s", b.data);
    cr_assert(strstr(b.data, "agora_breaker_open{scope=\"gateway\",name=\"platform\"} 0.5\n"), "%s",
              b.data);
    ag_obs_registry_collector_remove(r, count_call, &calls);
    b.len = 0;
    ag_obs_registry_render(r, &b);
    cr_assert_eq(calls, 1, "removed: not called again");
    ag_buf_free(&b);
    ag_obs_registry_free(r);
}
