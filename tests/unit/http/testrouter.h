/* The router the HTTP unit tests drive: a few routes covering text, echo, path
 * parameters, errors, problem+json and a refused response header; and a server of
 * it started and stopped for the client and TLS tests. */
#ifndef TESTS_HTTP_TESTROUTER_H
#define TESTS_HTTP_TESTROUTER_H

#include "agora/http.h"

/* A new router with the test routes; caller frees with ag_http_router_free. */
struct ag_http_router *test_router_new(void);
/* The test router (into *router) behind a server configured as cfg (workers, tls,
 * timeouts...), started on its own threads (into *server), and the client's loop
 * initialized. Asserts. */
void test_server_start(struct ag_http_server_config cfg, struct ag_http_router **router,
                       struct ag_http_server **server, uv_loop_t *loop);
/* Runs loop until nothing is left on it (closed handles finish) and closes it;
 * drains, waits for and frees *server if there is one, frees *router; both NULL
 * after. */
void test_server_stop(struct ag_http_router **router, struct ag_http_server **server,
                      uv_loop_t *loop);
/* Requests answered later by test_router_answer_deferred (GET /later). */
extern struct ag_http_req *test_deferred[8];
extern int test_ndeferred;

#endif
