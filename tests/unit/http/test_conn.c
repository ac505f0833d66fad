/* Connection behaviour over the memory transport: handlers answering later and
 * out of order, timeouts with a fake clock, pipeline backpressure, the built-in
 * middleware and allocation failures. */
#include <criterion/criterion.h>
#include <string.h>

#include "http/internal.h"
#include "testrouter.h"

static struct ag_http_router *router;
static struct ag__http_memconn *m;

static void setup_with(const struct ag_http_server_config *cfg)
{
    router = test_router_new();
    cr_assert_not_null(router);
    cr_assert_eq(ag__http_memconn_new(router, cfg, &m), 0);
}

static void teardown(void)
{
    ag__http_memconn_free(m);
    ag_http_router_free(router);
}

static void feed(const char *s)
{
    ag__http_memconn_feed(m, s, strlen(s));
}
static const char *out(void)
{
    return m->output.data ? m->output.data : "";
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

Test(conn, async_answers_leave_in_request_order)
{
    setup_with(NULL);
    feed("GET /later/1 HTTP/1.1\r\nHost: x\r\n\r\n"
         "GET /later/2 HTTP/1.1\r\nHost: x\r\n\r\n"
         "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert_eq(test_ndeferred, 2);
    cr_assert_eq(m->output.len, 0, "nothing may leave before the first answer");
    cr_assert_eq(ag_http_respond(test_deferred[1], 200, "text/plain", "two", 3), 0);
    cr_assert_eq(m->output.len, 0);
    cr_assert_eq(ag_http_respond(test_deferred[0], 200, "text/plain", "one", 3), 0);
    const char *o = out();
    const char *one = strstr(o, "one"), *two = strstr(o, "two"), *hello = strstr(o, "hello");
    cr_assert(one && two && hello && one < two && two < hello, "order: %s", o);
    cr_assert_not(m->closed);
    teardown();
}

Test(conn, answer_after_client_left_is_dropped)
{
    setup_with(NULL);
    feed("GET /later/1 HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert_eq(test_ndeferred, 1);
    struct ag_http_req *req = test_deferred[0];
    ag__http_conn_eof(&m->conn);
    cr_assert_not(m->closed, "an answer is still owed");
    cr_assert_eq(ag_http_respond(req, 200, "text/plain", "late", 4), 0);
    cr_assert(strstr(out(), "late"));
    cr_assert(m->closed);
    teardown();
}

Test(conn, handler_can_answer_after_transport_closed)
{
    setup_with(NULL);
    feed("GET /later/1 HTTP/1.1\r\nHost: x\r\n\r\n");
    struct ag_http_req *req = test_deferred[0];
    m->conn.io->close(&m->conn); /* abrupt disconnect */
    cr_assert(m->closed);
    cr_assert_eq(ag_http_respond(req, 200, "text/plain", "gone", 4), 0);
    cr_assert_null(strstr(out(), "gone"));
    teardown(); /* ASan checks the request was freed exactly once */
}

Test(conn, answering_twice_is_refused)
{
    setup_with(NULL);
    feed("GET /later/1 HTTP/1.1\r\nHost: x\r\n\r\nGET /later/2 HTTP/1.1\r\nHost: x\r\n\r\n");
    struct ag_http_req *req = test_deferred[1];
    cr_assert_eq(ag_http_respond(req, 204, NULL, NULL, 0), 0);
    cr_assert_eq(ag_http_respond(req, 200, NULL, NULL, 0), AG_EINVAL);
    ag_http_respond(test_deferred[0], 200, NULL, NULL, 0);
    cr_assert_eq(count(out(), "HTTP/1.1 "), 2);
    cr_assert(strstr(out(), "HTTP/1.1 204 No Content\r\n"));
    teardown();
}

Test(conn, slowloris_headers_get_408_and_close)
{
    struct ag_http_server_config cfg = {.header_timeout_ms = 200};
    setup_with(&cfg);
    feed("GET /hello HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 10; i++) {
        feed("X-Slow: 1\r\n"); /* trickling does not extend the deadline */
        ag__http_memconn_advance(m, 19);
    }
    cr_assert_eq(m->output.len, 0);
    ag__http_memconn_advance(m, 20);
    cr_assert(strstr(out(), "HTTP/1.1 408 Request Timeout\r\n"), "%s", out());
    cr_assert(strstr(out(), "Connection: close\r\n"));
    cr_assert(m->closed);
    teardown();
}

Test(conn, slow_body_gets_408)
{
    struct ag_http_server_config cfg = {.body_timeout_ms = 200};
    setup_with(&cfg);
    feed("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
    ag__http_memconn_advance(m, 199);
    cr_assert_eq(m->output.len, 0);
    ag__http_memconn_advance(m, 1);
    cr_assert(strstr(out(), "408"));
    cr_assert(m->closed);
    teardown();
}

Test(conn, idle_keep_alive_closes_silently)
{
    struct ag_http_server_config cfg = {.idle_timeout_ms = 200};
    setup_with(&cfg);
    feed("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    size_t len = m->output.len;
    ag__http_memconn_advance(m, 150);
    cr_assert_not(m->closed);
    ag__http_memconn_advance(m, 60);
    cr_assert(m->closed);
    cr_assert_eq(m->output.len, len, "no answer for an idle close");
    teardown();
}

Test(conn, keep_alive_requests_do_not_rearm_the_timer_and_idle_still_counts_from_the_last)
{
    struct ag_http_server_config cfg = {.idle_timeout_ms = 200, .first_byte_timeout_ms = 100};
    setup_with(&cfg);
    for (int i = 0; i < 50; i++) { /* 50 requests, 10 ms apart: 500 ms > both timeouts */
        feed("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
        ag__http_memconn_advance(m, 10);
        cr_assert_not(m->closed, "request %d: the connection is busy, not idle", i);
    }
    cr_assert_eq(count(out(), "HTTP/1.1 200"), 50);
    /* armed for the first byte, then re-armed only when a stale deadline fired */
    cr_assert_leq(m->timer_arms, 6, "timer armed %u times for 50 requests", m->timer_arms);
    ag__http_memconn_advance(m, 185); /* 195 ms after the last answer */
    cr_assert_not(m->closed);
    ag__http_memconn_advance(m, 10);
    cr_assert(m->closed, "idle timeout counts from the last answer");
    teardown();
}

Test(conn, silent_new_connection_is_closed_after_first_byte_timeout)
{
    struct ag_http_server_config cfg = {
        .first_byte_timeout_ms = 100, .header_timeout_ms = 1000, .idle_timeout_ms = 100000};
    setup_with(&cfg);
    /* the memory transport arms its timer lazily: poke it with an empty feed */
    ag__http_memconn_feed(m, "", 0);
    ag__http_memconn_advance(m, 99);
    cr_assert_not(m->closed);
    ag__http_memconn_advance(m, 2);
    cr_assert(m->closed, "no byte within the first-byte timeout");
    cr_assert_eq(m->output.len, 0);
    teardown();
}

Test(conn, first_byte_timeout_defaults_to_5s)
{
    setup_with(NULL);
    ag__http_memconn_feed(m, "", 0);
    ag__http_memconn_advance(m, 4999);
    cr_assert_not(m->closed);
    ag__http_memconn_advance(m, 2);
    cr_assert(m->closed);
    teardown();
}

Test(conn, header_timeout_runs_from_the_first_byte)
{
    struct ag_http_server_config cfg = {.first_byte_timeout_ms = 100, .header_timeout_ms = 300};
    setup_with(&cfg);
    ag__http_memconn_feed(m, "", 0);
    ag__http_memconn_advance(m, 90);
    feed("GET /hello HTTP/1.1\r\nX-Slow: "); /* from now on the header timeout applies */
    for (int i = 0; i < 29; i++) {           /* a slowloris: a byte every 10 ms */
        ag__http_memconn_advance(m, 10);
        feed("a");
    }
    cr_assert_not(m->closed, "290 ms into the header: not cut yet");
    ag__http_memconn_advance(m, 11);
    cr_assert(strstr(out(), "HTTP/1.1 408 "), "cut by the header timeout, not by each byte");
    cr_assert(m->closed);
    teardown();
}

Test(conn, pipeline_limit_holds_input_back)
{
    struct ag_http_server_config cfg = {.max_pipeline = 2};
    setup_with(&cfg);
    feed("GET /later/1 HTTP/1.1\r\nHost: x\r\n\r\n"
         "GET /later/2 HTTP/1.1\r\nHost: x\r\n\r\n"
         "GET /later/3 HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert_eq(test_ndeferred, 2);
    cr_assert_not(m->reading, "reading stops at the pipeline limit");
    ag_http_respond(test_deferred[0], 200, NULL, "a", 1);
    cr_assert_eq(test_ndeferred, 3, "held input is parsed once there is room");
    cr_assert(m->reading);
    ag_http_respond(test_deferred[1], 200, NULL, "b", 1);
    ag_http_respond(test_deferred[2], 200, NULL, "c", 1);
    cr_assert_eq(count(out(), "HTTP/1.1 200"), 3);
    teardown();
}

Test(conn, body_over_limit_while_streaming_chunks)
{
    struct ag_http_server_config cfg = {.max_body_bytes = 8};
    setup_with(&cfg);
    feed("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
         "chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n");
    cr_assert(strstr(out(), "HTTP/1.1 413 "));
    cr_assert(m->closed);
    teardown();
}

Test(conn, drain_closes_after_queued_answers)
{
    setup_with(NULL);
    feed("GET /later/1 HTTP/1.1\r\nHost: x\r\n\r\n");
    ag__http_conn_drain(&m->conn);
    cr_assert_not(m->closed);
    feed("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"); /* not read any more */
    ag_http_respond(test_deferred[0], 200, NULL, "x", 1);
    cr_assert(strstr(out(), "Connection: close\r\n"));
    cr_assert_eq(count(out(), "HTTP/1.1 "), 1);
    cr_assert(m->closed);
    teardown();
}

Test(conn, error_status_without_body_gets_problem_json)
{
    setup_with(NULL);
    feed("GET /later/1 HTTP/1.1\r\nHost: x\r\n\r\n");
    ag_http_respond(test_deferred[0], 500, NULL, NULL, 0);
    cr_assert(strstr(out(), "Content-Type: application/problem+json\r\n"));
    cr_assert(strstr(out(), "\"status\":500"));
    teardown();
}

static int count_mw(struct ag_http_req *req, void *ud)
{
    (void)req;
    (*(int *)ud)++;
    return 0;
}

static void add_header_mw(struct ag_http_req *req, void *ud)
{
    (void)ud;
    ag_http_resp_header(req, "X-Seen", ag_http_req_route(req) ? ag_http_req_route(req) : "none");
}

static int deny_mw(struct ag_http_req *req, void *ud)
{
    (void)ud;
    if (!ag_http_req_header(req, "authorization")) {
        ag_http_respond_problem(req, 401, NULL, NULL, "credentials required", NULL);
        return 1;
    }
    return 0;
}

Test(conn, middleware_chain_runs_in_order_and_can_stop)
{
    setup_with(NULL);
    int seen = 0;
    struct ag_http_middleware a = {"count", count_mw, add_header_mw, &seen};
    struct ag_http_middleware b = {"auth", deny_mw, NULL, NULL};
    ag_http_router_use(router, &a);
    ag_http_router_use(router, &b);
    feed("GET /orders/1 HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert(strstr(out(), "HTTP/1.1 401 "));
    cr_assert(strstr(out(), "X-Seen: /orders/{id}\r\n"));
    feed("GET /orders/1 HTTP/1.1\r\nHost: x\r\nAuthorization: yes\r\n\r\n");
    cr_assert(strstr(out(), "HTTP/1.1 200 "));
    cr_assert_eq(seen, 2);
    teardown();
}

Test(conn, observe_keeps_request_id_and_continues_trace)
{
    setup_with(NULL);
    struct ag_obs_registry *reg;
    ag_obs_registry_new(&reg);
    struct ag_http_observe o = {
        .metrics = reg, .request_id = true, .trace = true, .ops_routes = true};
    cr_assert_eq(ag_http_router_observe(router, &o), 0);
    feed("GET /hello HTTP/1.1\r\nHost: x\r\nX-Request-ID: abc-123\r\n"
         "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n");
    cr_assert(strstr(out(), "X-Request-ID: abc-123\r\n"), "%s", out());
    cr_assert(strstr(out(), "traceparent: 00-0af7651916cd43dd8448eb211c80319c-"));
    cr_assert_null(strstr(out(), "b7ad6b7169203331-01\r\n"), "the server span gets its own id");
    feed("GET /hello HTTP/1.1\r\nHost: x\r\nX-Request-ID: bad id with spaces\r\n\r\n");
    cr_assert_null(strstr(out(), "bad id"));
    cr_assert_eq(count(out(), "X-Request-ID: "), 2);
    feed("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert(
        strstr(out(),
               "agora_http_requests_total{method=\"GET\",route=\"/hello\",status=\"200\"} 2\n"),
        "%s", out());
    cr_assert(strstr(
        out(), "agora_http_request_duration_seconds_count{method=\"GET\",route=\"/hello\"} 2\n"));
    cr_assert(strstr(out(), "agora_http_requests_in_flight 1\n"), "the scrape itself is in flight");
    teardown();
    ag_obs_registry_free(reg);
}

static int failing_check(void *ud, struct ag_buf *detail)
{
    (void)ud;
    ag_buf_puts(detail, "store closed");
    return AG_ECLOSED;
}

static int ok_check(void *ud, struct ag_buf *detail)
{
    (void)ud, (void)detail;
    return 0;
}

Test(conn, health_endpoints_list_checks)
{
    setup_with(NULL);
    struct ag_obs_health *h;
    ag_obs_health_new(&h);
    ag_obs_health_add(h, AG_OBS_LIVE, "loop", ok_check, NULL);
    ag_obs_health_add(h, AG_OBS_READY, "store", failing_check, NULL);
    struct ag_http_observe o = {.health = h, .ops_routes = true};
    ag_http_router_observe(router, &o);
    feed("GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert(strstr(out(), "HTTP/1.1 200 OK"));
    cr_assert(
        strstr(out(), "{\"status\":\"up\",\"checks\":[{\"name\":\"loop\",\"status\":\"up\"}]}"),
        "%s", out());
    ag_buf_reset(&m->output);
    feed("GET /health/ready HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert(strstr(out(), "HTTP/1.1 503 "));
    cr_assert(strstr(out(),
                     "{\"status\":\"down\",\"checks\":[{\"name\":\"store\",\"status\":\"down\","
                     "\"detail\":\"store closed\"}]}"),
              "%s", out());
    teardown();
    ag_obs_health_free(h);
}

Test(conn, allocation_failures_never_crash_or_leak)
{
    const char *input =
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello"
        "GET /orders/9 HTTP/1.1\r\nHost: x\r\n\r\nGET /problem HTTP/1.1\r\nHost: x\r\n\r\n";
    for (long n = 1; n < 200; n++) {
        router = test_router_new();
        if (ag__http_memconn_new(router, NULL, &m) == 0) {
            ag_alloc_fail_at(n);
            feed(input);
            ag_alloc_fail_at(0);
            ag__http_memconn_free(m);
        }
        ag_http_router_free(router);
    }
}

/* ---- parked requests (ag_http_req_on_abort, issue 11) ---- */

static int aborts;
static void abort_with_304(struct ag_http_req *req, void *ud)
{
    AG_UNUSED(ud);
    aborts++;
    ag_http_respond(req, 304, NULL, NULL, 0);
}

Test(conn, client_eof_aborts_a_parked_request_which_answers_at_once)
{
    setup_with(NULL);
    aborts = 0;
    feed("GET /later/1 HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert_eq(ag_http_req_on_abort(test_deferred[0], abort_with_304, NULL), 0);
    ag__http_conn_eof(&m->conn);
    cr_assert_eq(aborts, 1);
    cr_assert(strstr(out(), "HTTP/1.1 304 "), "%s", out());
    cr_assert(m->closed, "answered what was owed, then closed");
    teardown();
}

Test(conn, transport_close_aborts_parked_requests_in_a_pipeline)
{
    setup_with(NULL);
    aborts = 0;
    feed("GET /later/1 HTTP/1.1\r\nHost: x\r\n\r\nGET /later/2 HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert_eq(test_ndeferred, 2);
    cr_assert_eq(ag_http_req_on_abort(test_deferred[0], abort_with_304, NULL), 0);
    cr_assert_eq(ag_http_req_on_abort(test_deferred[1], abort_with_304, NULL), 0);
    m->conn.io->close(&m->conn); /* abrupt disconnect: both answered (dropped), none leaks */
    cr_assert_eq(aborts, 2);
    teardown();
}

Test(conn, drain_aborts_parked_requests_and_answering_clears_the_callback)
{
    setup_with(NULL);
    aborts = 0;
    feed("GET /later/1 HTTP/1.1\r\nHost: x\r\n\r\nGET /later/2 HTTP/1.1\r\nHost: x\r\n\r\n");
    struct ag_http_req *a = test_deferred[0], *b = test_deferred[1];
    cr_assert_eq(ag_http_req_on_abort(a, abort_with_304, NULL), 0);
    cr_assert_eq(ag_http_req_on_abort(b, abort_with_304, NULL), 0);
    cr_assert_eq(ag_http_respond(b, 200, "text/plain", "b", 1), 0); /* clears b's */
    ag__http_conn_drain(&m->conn);
    cr_assert_eq(aborts, 1, "only the request still parked");
    cr_assert(strstr(out(), "HTTP/1.1 304 "), "%s", out());
    cr_assert(m->closed);
    teardown();
}

Test(conn, parking_after_the_client_left_is_refused)
{
    setup_with(NULL);
    aborts = 0;
    feed("GET /later/1 HTTP/1.1\r\nHost: x\r\n\r\n");
    struct ag_http_req *req = test_deferred[0];
    ag__http_conn_eof(&m->conn);
    cr_assert_eq(ag_http_req_on_abort(req, abort_with_304, NULL), AG_ECLOSED);
    cr_assert_eq(aborts, 0);
    cr_assert_eq(ag_http_respond(req, 304, NULL, NULL, 0), 0);
    teardown();
}
