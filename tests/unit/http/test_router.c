/* Router registration rules, status mapping and header validation. */
#include <criterion/criterion.h>
#include <string.h>

#include "agora/http.h"

static int noop(struct ag_http_req *req, void *ud)
{
    (void)req, (void)ud;
    return 0;
}

Test(router, registration_rules)
{
    struct ag_http_router *r;
    cr_assert_eq(ag_http_router_new(&r), 0);
    cr_assert_eq(ag_http_route(r, "GET", "/a/{id}", noop, NULL), 0);
    cr_assert_eq(ag_http_route(r, "GET", "/a/{id}", noop, NULL), AG_EEXISTS);
    cr_assert_eq(ag_http_route(r, "POST", "/a/{id}", noop, NULL), 0);
    cr_assert_eq(ag_http_route(r, "GET", "/a/{x}/b/{y}", noop, NULL), 0);
    cr_assert_eq(ag_http_route(r, "GET", "no-slash", noop, NULL), AG_EINVAL);
    cr_assert_eq(ag_http_route(r, "GET", "/a//b", noop, NULL), AG_EINVAL);
    cr_assert_eq(ag_http_route(r, "GET", "/a/", noop, NULL), AG_EINVAL);
    cr_assert_eq(ag_http_route(r, "GET", "/a/{}", noop, NULL), AG_EINVAL);
    cr_assert_eq(ag_http_route(r, "GET", "/a/b{c}", noop, NULL), AG_EINVAL);
    cr_assert_eq(ag_http_route(r, "GET", "/", noop, NULL), 0);
    ag_http_router_free(r);
}

Test(router, status_mapping)
{
    cr_assert_eq(ag_http_status_for(AG_EINVAL), 400);
    cr_assert_eq(ag_http_status_for(AG_EJSON), 400);
    cr_assert_eq(ag_http_status_for(AG_ENOTFOUND), 404);
    cr_assert_eq(ag_http_status_for(AG_ECONFLICT), 409);
    cr_assert_eq(ag_http_status_for(AG_EDOMAIN), 422);
    cr_assert_eq(ag_http_status_for(AG_ERATE_LIMITED), 429);
    cr_assert_eq(ag_http_status_for(AG_ECIRCUIT_OPEN), 503);
    cr_assert_eq(ag_http_status_for(AG_ETIMEDOUT), 504);
    cr_assert_eq(ag_http_status_for(AG_ECONNECT), 502);
    cr_assert_eq(ag_http_status_for(AG_ENOMEM), 500);
    cr_assert_str_eq(ag_http_reason(431), "Request Header Fields Too Large");
}

Test(router, problem_errors_builder)
{
    json_t *errors = NULL;
    cr_assert_eq(ag_http_problem_error_add(&errors, "/a", "bad"), 0);
    cr_assert_eq(ag_http_problem_error_add(&errors, "/b/0", "worse"), 0);
    cr_assert_eq(json_array_size(errors), 2);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(errors, 1), "pointer")),
                     "/b/0");
    json_decref(errors);
}
