/* The router the HTTP unit tests drive: a few routes covering text, echo, path
 * parameters, errors, problem+json and a refused response header. */
#ifndef TESTS_HTTP_TESTROUTER_H
#define TESTS_HTTP_TESTROUTER_H

#include "agora/http.h"

/* A new router with the test routes; caller frees with ag_http_router_free. */
struct ag_http_router *test_router_new(void);
/* Requests answered later by test_router_answer_deferred (GET /later). */
extern struct ag_http_req *test_deferred[8];
extern int test_ndeferred;

#endif
