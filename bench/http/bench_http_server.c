/* The agora side of bench/http/run.sh: GET /hello answers {"message":"hello"}
 * (the body nginx returns in the same run), with the RED metrics middleware on.
 *
 *   bench_http_server --port N --workers W
 *
 * Prints "PORT <n>" once listening; drains and exits on SIGTERM/SIGINT. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/http.h"

static const char body[] = "{\"message\":\"hello\"}";

static int hello(struct ag_http_req *req, void *ud)
{
    (void)ud;
    return ag_http_respond(req, 200, "application/json", body, sizeof body - 1);
}

static int arg(int argc, char **argv, const char *name, int dflt)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return atoi(argv[i + 1]);
    return dflt;
}

int main(int argc, char **argv)
{
    struct ag_http_router *r;
    struct ag_obs_registry *reg;
    if (ag_http_router_new(&r) || ag_obs_registry_new(&reg)) return 1;
    ag_http_route(r, "GET", "/hello", hello, NULL);
    struct ag_http_observe o = {.metrics = reg, .ops_routes = true};
    ag_http_router_observe(r, &o);
    struct ag_http_server_config cfg = {.port = (uint16_t)arg(argc, argv, "--port", 0),
                                        .workers = arg(argc, argv, "--workers", 1),
                                        .max_connections = 20000,
                                        /* wrk is one peer with hundreds of connections */
                                        .max_conns_per_peer = 20000};
    struct ag_http_server *s;
    struct ag_err err;
    if (ag_http_server_new(&cfg, r, &s) || ag_http_server_start(s, &err)) {
        fprintf(stderr, "bench_http_server: %s\n", err.msg);
        return 1;
    }
    printf("PORT %u\n", ag_http_server_port(s));
    fflush(stdout);
    ag_http_server_run_until_signal(s, 1000);
    ag_http_server_free(s);
    ag_http_router_free(r);
    ag_obs_registry_free(reg);
    return 0;
}
