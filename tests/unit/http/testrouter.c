/* The router the HTTP unit tests drive (testrouter.h): text, echo, path
 * parameters, errors, problem+json, a refused response header, requests answered
 * later (from the test, or from a timer on the request's loop), headers echoed;
 * and the server around it that test_client.c, test_tls.c and test_certs.c start
 * and stop the same way. Linked into test_http; defines no test. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "testrouter.h"

struct ag_http_req *test_deferred[8];
int test_ndeferred;

static int hello(struct ag_http_req *req, void *ud)
{
    (void)ud;
    const char *name = ag_http_req_query_param(req, "name");
    if (name) {
        char buf[128];
        size_t n = (size_t)snprintf(buf, sizeof buf, "hello %s", name);
        return ag_http_respond(req, 200, "text/plain", buf, n);
    }
    return ag_http_respond(req, 200, "text/plain", "hello", 5);
}

static int echo(struct ag_http_req *req, void *ud)
{
    (void)ud;
    size_t n;
    const char *b = ag_http_req_body(req, &n);
    return ag_http_respond(req, 200, "application/octet-stream", b, n);
}

static int order(struct ag_http_req *req, void *ud)
{
    (void)ud;
    return ag_http_respond_json(req, 200, json_pack("{s:s}", "id", ag_http_req_param(req, "id")));
}

static int search(struct ag_http_req *req, void *ud)
{
    (void)ud;
    return ag_http_respond(req, 200, "text/plain", "search", 6);
}

static int fail(struct ag_http_req *req, void *ud)
{
    (void)req, (void)ud;
    return AG_ENOTFOUND;
}

static int bad_header(struct ag_http_req *req, void *ud)
{
    (void)ud;
    int rc = ag_http_resp_header(req, "X-Split", "a\r\nSet-Cookie: evil=1");
    int rc2 = ag_http_resp_header(req, "Content-Length", "0");
    const char *msg = rc == AG_EINVAL && rc2 == AG_EINVAL ? "refused" : "accepted";
    return ag_http_respond(req, 200, "text/plain", msg, strlen(msg));
}

static int problem(struct ag_http_req *req, void *ud)
{
    (void)ud;
    json_t *errors = NULL;
    ag_http_problem_error_add(&errors, "/items/0/quantity", "must be positive");
    return ag_http_respond_problem(req, 422, "https://agora.dev/problems/validation",
                                   "Invalid order", "one field is invalid", errors);
}

static int later(struct ag_http_req *req, void *ud)
{
    (void)ud;
    if (test_ndeferred == 8) return AG_EAGAIN;
    test_deferred[test_ndeferred++] = req;
    return 0;
}

struct sleeper {
    uv_timer_t timer;        /* fires once */
    struct ag_http_req *req; /* answered from the timer */
};

static void sleeper_closed(uv_handle_t *h)
{
    ag_free(h->data);
}

static void sleeper_fire(uv_timer_t *t)
{
    struct sleeper *s = t->data;
    ag_http_respond(s->req, 200, "text/plain", "slept", 5);
    uv_close((uv_handle_t *)&s->timer, sleeper_closed);
}

/* Answers later, from a timer on the request's own loop (needs a real loop). */
static int sleep_ms(struct ag_http_req *req, void *ud)
{
    (void)ud;
    struct sleeper *s = ag_calloc(1, sizeof *s);
    if (!s || !ag_http_req_loop(req)) {
        ag_free(s);
        return AG_EUNSUPPORTED;
    }
    s->req = req;
    uv_timer_init(ag_http_req_loop(req), &s->timer);
    s->timer.data = s;
    uv_timer_start(&s->timer, sleeper_fire, strtoull(ag_http_req_param(req, "ms"), NULL, 10), 0);
    return 0;
}

static int headers(struct ag_http_req *req, void *ud)
{
    (void)ud;
    return ag_http_respond_json(req, 200,
                                json_pack("{s:s?, s:s?, s:s?}", "requestId",
                                          ag_http_req_header(req, "x-request-id"), "traceparent",
                                          ag_http_req_header(req, "traceparent"), "custom",
                                          ag_http_req_header(req, "x-custom")));
}

struct ag_http_router *test_router_new(void)
{
    struct ag_http_router *r;
    if (ag_http_router_new(&r)) return NULL;
    ag_http_route(r, "GET", "/hello", hello, NULL);
    ag_http_route(r, "POST", "/echo", echo, NULL);
    ag_http_route(r, "GET", "/orders/{id}", order, NULL);
    ag_http_route(r, "PUT", "/orders/{id}", order, NULL);
    ag_http_route(r, "GET", "/orders/search", search, NULL);
    ag_http_route(r, "GET", "/fail", fail, NULL);
    ag_http_route(r, "GET", "/bad-header", bad_header, NULL);
    ag_http_route(r, "GET", "/problem", problem, NULL);
    ag_http_route(r, "GET", "/later/{n}", later, NULL);
    ag_http_route(r, "GET", "/sleep/{ms}", sleep_ms, NULL);
    ag_http_route(r, "GET", "/headers", headers, NULL);
    test_ndeferred = 0;
    return r;
}

void test_server_start(struct ag_http_server_config cfg, struct ag_http_router **router,
                       struct ag_http_server **server, uv_loop_t *loop)
{
    cr_assert_not_null(*router = test_router_new());
    cr_assert_eq(ag_http_server_new(&cfg, *router, server), 0);
    cr_assert_eq(ag_http_server_start(*server, NULL), 0);
    uv_loop_init(loop);
}

void test_server_stop(struct ag_http_router **router, struct ag_http_server **server,
                      uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    if (*server) {
        ag_http_server_drain(*server, 100);
        ag_http_server_wait(*server);
        ag_http_server_free(*server);
        *server = NULL;
    }
    ag_http_router_free(*router);
    *router = NULL;
}
