/* A small agora HTTP server for the integration tests (tests/integration/http*.sh).
 *
 *   http_test_server [--port N] [--workers N] [--header-timeout MS] [--body-timeout MS]
 *                    [--idle-timeout MS] [--max-conns N] [--max-body BYTES] [--access-log]
 *                    [--max-per-peer N] [--first-byte-timeout MS] [--unix PATH]
 *
 * Prints "PORT <n>" on stdout once listening (0 with --unix PATH: a Unix socket), serves until
 * SIGTERM/SIGINT, then drains (2 s) and exits 0. Routes: GET /hello, POST /echo, GET /orders/{id},
 * GET /slow?ms=N (answers later from a timer on the request's loop), GET /problem,
 * GET /drain (starts a drain), plus /metrics and /health/{live,ready}. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/http.h"

static struct ag_http_server *server;

static int hello(struct ag_http_req *req, void *ud)
{
    (void)ud;
    return ag_http_respond_json(req, 200, json_pack("{s:s}", "message", "hello"));
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
    const char *rid = ag_http_req_id(req);
    return ag_http_respond_json(
        req, 200, json_pack("{s:s, s:s?}", "id", ag_http_req_param(req, "id"), "requestId", rid));
}

struct slow {
    uv_timer_t timer;        /* fires once */
    struct ag_http_req *req; /* answered from the timer */
};

static void slow_closed(uv_handle_t *h)
{
    ag_free(h->data);
}

static void slow_fire(uv_timer_t *t)
{
    struct slow *s = t->data;
    ag_http_respond(s->req, 200, "text/plain", "slow", 4);
    uv_close((uv_handle_t *)&s->timer, slow_closed);
}

static int slow(struct ag_http_req *req, void *ud)
{
    (void)ud;
    const char *ms = ag_http_req_query_param(req, "ms");
    struct slow *s = ag_calloc(1, sizeof *s);
    if (!s) return AG_ENOMEM;
    s->req = req;
    uv_timer_init(ag_http_req_loop(req), &s->timer);
    s->timer.data = s;
    uv_timer_start(&s->timer, slow_fire, ms ? strtoull(ms, NULL, 10) : 100, 0);
    return 0;
}

static int problem(struct ag_http_req *req, void *ud)
{
    (void)ud;
    json_t *errors = NULL;
    ag_http_problem_error_add(&errors, "/items/0/quantity", "must be greater than 0");
    return ag_http_respond_problem(req, 422, "https://agora.dev/problems/validation",
                                   "Invalid request", "the order has invalid fields", errors);
}

static int drain(struct ag_http_req *req, void *ud)
{
    (void)ud;
    int rc = ag_http_respond(req, 202, "text/plain", "draining", 8);
    ag_http_server_drain(server, 2000);
    return rc;
}

static int loop_ok(void *ud, struct ag_buf *detail)
{
    (void)ud, (void)detail;
    return 0;
}

static uint32_t arg_u32(int argc, char **argv, const char *name, uint32_t dflt)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return (uint32_t)strtoul(argv[i + 1], NULL, 10);
    return dflt;
}

static const char *arg_str(int argc, char **argv, const char *name)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return NULL;
}

static bool arg_flag(int argc, char **argv, const char *name)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0) return true;
    return false;
}

int main(int argc, char **argv)
{
    struct ag_http_router *r;
    struct ag_obs_registry *reg;
    struct ag_obs_health *health;
    if (ag_http_router_new(&r) || ag_obs_registry_new(&reg) || ag_obs_health_new(&health)) return 1;
    ag_obs_health_add(health, AG_OBS_LIVE, "loop", loop_ok, NULL);
    ag_obs_health_add(health, AG_OBS_READY, "store", loop_ok, NULL);
    ag_http_route(r, "GET", "/hello", hello, NULL);
    ag_http_route(r, "POST", "/echo", echo, NULL);
    ag_http_route(r, "GET", "/orders/{id}", order, NULL);
    ag_http_route(r, "GET", "/slow", slow, NULL);
    ag_http_route(r, "GET", "/problem", problem, NULL);
    ag_http_route(r, "POST", "/drain", drain, NULL);
    struct ag_http_observe o = {reg, health, true, true, arg_flag(argc, argv, "--access-log"),
                                true};
    ag_http_router_observe(r, &o);
    struct ag_http_server_config cfg = {
        .port = (uint16_t)arg_u32(argc, argv, "--port", 0),
        .workers = (int)arg_u32(argc, argv, "--workers", 2),
        .header_timeout_ms = arg_u32(argc, argv, "--header-timeout", 0),
        .body_timeout_ms = arg_u32(argc, argv, "--body-timeout", 0),
        .idle_timeout_ms = arg_u32(argc, argv, "--idle-timeout", 0),
        .max_connections = arg_u32(argc, argv, "--max-conns", 0),
        .max_body_bytes = arg_u32(argc, argv, "--max-body", 0),
        .max_conns_per_peer = arg_u32(argc, argv, "--max-per-peer", 0),
        .first_byte_timeout_ms = arg_u32(argc, argv, "--first-byte-timeout", 0),
        .unix_path = arg_str(argc, argv, "--unix"),
    };
    struct ag_err err;
    if (ag_http_server_new(&cfg, r, &server) || ag_http_server_start(server, &err)) {
        fprintf(stderr, "cannot start: %s\n", err.msg);
        ag_http_server_free(server);
        return 1;
    }
    printf("PORT %u\n", ag_http_server_port(server));
    fflush(stdout);
    ag_http_server_run_until_signal(server, 2000);
    ag_http_server_free(server);
    ag_http_router_free(r);
    ag_obs_health_free(health);
    ag_obs_registry_free(reg);
    return 0;
}
