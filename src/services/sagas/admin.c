/*
 * Operator actions on sagas. POST /admin/sagas/{id}/retry re-opens a saga that
 * ended `failed` (a compensation kept failing): the engine records SagaRetried and
 * a saga worker re-runs the compensations that failed, each with its idempotency
 * key, so one that had in fact taken effect is a no-op. The answer is 202 with
 * {"id","status":"running"} once SagaRetried is durable; the outcome
 * (`compensated`, or `failed` again) shows at GET /api/v1/sagas/{id}. 404 for an
 * unknown saga, 409 for one that is not failed (running, completed, compensated)
 * or that another retry re-opened first.
 */
#include <stdio.h>
#include <string.h>

#include "services/internal.h"

static int retry(struct svc_job *j)
{
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_saga_retry(j->p->sagas, j->param, &err);
    if (rc == AG_ENOTFOUND)
        return svc_problem(j, 404, "Saga not found", "no saga with id %s", j->param);
    if (rc == AG_EREJECTED || rc == AG_ECONFLICT)
        return svc_problem(j, 409, "Saga cannot be retried", "%s", err.msg);
    if (rc) return svc_error(j, rc, &err);
    snprintf(j->location, sizeof j->location, "/api/v1/sagas/%s", j->param);
    return svc_ok(j, 202, json_pack("{s:s, s:s}", "id", j->param, "status", "running"));
}

static const struct svc_route routes[] = {
    {"POST", "/admin/sagas/{id}/retry", SVC_ADMIN, retry, "id", "saga", {NULL}},
};

void svc_saga_admin_routes(struct ag_platform *p)
{
    svc_routes(p, routes, sizeof routes / sizeof routes[0]);
}
