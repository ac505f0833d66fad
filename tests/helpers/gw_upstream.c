/* An upstream for the gateway tests (tests/integration/gateway_*.sh).
 *
 *   gw_upstream --name NAME [--port N] [--workers N]
 *
 * Prints "PORT <n>" once listening. Every path answers 200 with JSON naming this
 * upstream, the method, the path as received and the identity/forwarding headers
 * it got; except: "?status=N" answers N; "?sleep=MS" answers after MS; POST
 * /admin/fail turns every answer (and GET /healthz) into 503 until POST
 * /admin/recover; POST /admin/fail-writes turns the answers to every method but
 * GET/HEAD into 503 problem+json marked `X-Agora-Error: service` (the services'
 * own error, e.g. a full store) until POST /admin/recover. A counter of requests
 * served is at GET /admin/count. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/http.h"

static const char *name = "upstream";
static atomic_bool failing;
static atomic_bool failing_writes;
static atomic_ulong served;

struct later {
    uv_timer_t t;
    struct ag_http_req *req;
    json_t *body;
};

static void later_closed(uv_handle_t *h)
{
    free(h->data);
}

static void later_fire(uv_timer_t *t)
{
    struct later *l = t->data;
    ag_http_respond_json(l->req, 200, l->body);
    uv_close((uv_handle_t *)t, later_closed);
}

static json_t *describe(struct ag_http_req *req)
{
    static const char *const hs[] = {"x-user-id",         "x-user-roles", "x-forwarded-for",
                                     "x-forwarded-proto", "x-request-id", "traceparent",
                                     "authorization",     "x-canary",     "connection"};
    json_t *h = json_object();
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) {
        const char *v = ag_http_req_header(req, hs[i]);
        if (v) json_object_set_new(h, hs[i], json_string(v));
    }
    const char *q = ag_http_req_query(req);
    char full[2048];
    snprintf(full, sizeof full, "%s%s%s", ag_http_req_path(req), *q ? "?" : "", q);
    size_t blen;
    ag_http_req_body(req, &blen);
    return json_pack("{s:s, s:s, s:s, s:o, s:I, s:I}", "upstream", name, "method",
                     ag_http_req_method(req), "path", full, "headers", h, "bodyBytes",
                     (json_int_t)blen, "n", (json_int_t)atomic_load(&served));
}

static int any(struct ag_http_req *req, void *ud)
{
    (void)ud;
    atomic_fetch_add(&served, 1);
    if (atomic_load(&failing))
        return ag_http_respond_problem(req, 503, NULL, NULL, "failing on command", NULL);
    const char *m = ag_http_req_method(req);
    if (atomic_load(&failing_writes) && strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0) {
        ag_http_resp_header(req, "X-Agora-Error", "service");
        return ag_http_respond_problem(req, 503, NULL, NULL, "the store is full", NULL);
    }
    const char *st = ag_http_req_query_param(req, "status");
    if (st) return ag_http_respond_json(req, atoi(st), describe(req));
    const char *sl = ag_http_req_query_param(req, "sleep");
    if (sl) {
        struct later *l = calloc(1, sizeof *l);
        l->req = req;
        l->body = describe(req);
        uv_timer_init(ag_http_req_loop(req), &l->t);
        l->t.data = l;
        uv_timer_start(&l->t, later_fire, (uint64_t)atoi(sl), 0);
        return 0;
    }
    return ag_http_respond_json(req, 200, describe(req));
}

static int fail(struct ag_http_req *req, void *ud)
{
    atomic_store(&failing, ud != NULL);
    atomic_store(&failing_writes, false);
    return ag_http_respond(req, 204, NULL, NULL, 0);
}

static int fail_writes(struct ag_http_req *req, void *ud)
{
    (void)ud;
    atomic_store(&failing_writes, true);
    return ag_http_respond(req, 204, NULL, NULL, 0);
}

static int count(struct ag_http_req *req, void *ud)
{
    (void)ud;
    return ag_http_respond_json(req, 200,
                                json_pack("{s:I}", "served", (json_int_t)atomic_load(&served)));
}

static int healthz(struct ag_http_req *req, void *ud)
{
    (void)ud;
    return ag_http_respond(req, atomic_load(&failing) ? 503 : 200, "text/plain", "ok", 2);
}

int main(int argc, char **argv)
{
    int port = 0, workers = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--name"))
            name = argv[i + 1];
        else if (!strcmp(argv[i], "--port"))
            port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--workers"))
            workers = atoi(argv[i + 1]);
    }
    struct ag_http_router *r;
    ag_http_router_new(&r);
    static const char *const methods[] = {"GET", "POST", "PUT", "DELETE", "PATCH"};
    const char *pats[] = {
        "/", "/{a}", "/{a}/{b}", "/{a}/{b}/{c}", "/{a}/{b}/{c}/{d}", "/{a}/{b}/{c}/{d}/{e}"};
    for (size_t m = 0; m < 5; m++)
        for (size_t p = 0; p < 6; p++) ag_http_route(r, methods[m], pats[p], any, NULL);
    ag_http_route(r, "POST", "/admin/fail", fail, (void *)1);
    ag_http_route(r, "POST", "/admin/recover", fail, NULL);
    ag_http_route(r, "POST", "/admin/fail-writes", fail_writes, NULL);
    ag_http_route(r, "GET", "/admin/count", count, NULL);
    ag_http_route(r, "GET", "/healthz", healthz, NULL);
    struct ag_http_server_config cfg = {.port = (uint16_t)port, .workers = workers};
    struct ag_http_server *s;
    struct ag_err err;
    if (ag_http_server_new(&cfg, r, &s) || ag_http_server_start(s, &err)) {
        fprintf(stderr, "gw_upstream: cannot start: %s\n", err.msg);
        return 1;
    }
    printf("PORT %u\n", ag_http_server_port(s));
    fflush(stdout);
    ag_http_server_run_until_signal(s, 1000);
    ag_http_server_free(s);
    ag_http_router_free(r);
    return 0;
}
