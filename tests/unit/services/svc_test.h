/*
 * A harness for the services' handler tests: one platform per test (Criterion
 * runs each test in its own process) over a real embedded store in a temporary
 * directory, seeded with the demo catalog, behind a (pretend) gateway, so the
 * caller's identity is the x-user-id / x-user-roles headers.
 *
 * Requests go through the platform's own router over the memory transport
 * (src/http/memconn.c): no socket is opened by a test request. The handlers run on
 * the libuv threadpool and answer from the loop that queued them, so each request
 * gets a memory connection whose context names the test's own loop, and the test
 * runs that loop until the answer is written. (ag_platform_start also starts its
 * HTTP server, on a Unix socket inside the temporary directory; no test connects
 * to it.)
 */
#ifndef AGORA_TESTS_SVC_TEST_H
#define AGORA_TESTS_SVC_TEST_H

#include <jansson.h>
#include <stdbool.h>

#include "services/internal.h"

/* Callers: "sub|roles", or NULL for anonymous. */
#define ANON  NULL
#define ALICE "alice|customer"
#define BOB   "bob|customer"
#define ADMIN "root|admin"

struct t_resp {
    int status;
    char head[4096]; /* status line and headers */
    json_t *body;    /* parsed JSON body, or NULL */
    char text[8192]; /* the body as text (truncated) */
};

extern struct ag_platform *t_plat;

/* Start / stop the platform (the suite's .init / .fini). */
void t_start(void);
void t_stop(void);

/* Send one request as `who` with an optional JSON body and extra header lines
 * ("Name: value\r\n"...). Fills *r (free with t_free). Returns r->status. */
int t_call(struct t_resp *r, const char *method, const char *path, const char *who,
           const char *body, const char *headers);
void t_free(struct t_resp *r);
/* The value of response header `name` ("" when absent; a static buffer). */
const char *t_header(const struct t_resp *r, const char *name);
/* True when the problem's errors[] has an entry with this pointer. */
bool t_has_pointer(const struct t_resp *r, const char *pointer);
/* String member `key` of the body ("" when absent). */
const char *t_str(const struct t_resp *r, const char *key);

/* Scenario helpers (assert on failure). */
/* Register `who`'s own customer with this email; its id and account id into out. */
void t_register(const char *who, const char *email, char id[40], char account[40]);
void t_deposit(const char *who, const char *account, long long cents);
/* The id of the n-th seeded product (catalog order). */
void t_product(int n, char id[40]);
/* Place an order of one product as `who` (customerId from the caller); ids out. */
void t_order(const char *who, const char *product, int qty, char order[40], char saga[40]);
/* Wait (bounded, 20 s) until saga `id` is in a terminal state; returns it. */
const char *t_saga_wait(const char *saga, char status[32]);
/* Wait until the read models include every event written so far. */
void t_catch_up(void);

#endif
