/*
 * The sagas' endpoints: GET /api/v1/sagas/{id} (the owner of the order the saga
 * places, or an admin) and GET /admin/sagas?status= (admin), from the sagas read
 * model that src/saga/projection.c maintains; and POST /admin/sagas/{id}/retry
 * (admin), which re-opens a saga that ended `failed` (a compensation kept
 * failing): the engine records SagaRetried and a saga worker re-runs the
 * compensations that failed, each with its idempotency key, so one that had in
 * fact taken effect is a no-op. The answer is 202 with {"id","status":"running"}
 * once SagaRetried is durable; the outcome (`compensated`, or `failed` again)
 * shows at GET /api/v1/sagas/{id}. 404 for an unknown saga, 409 for one that is
 * not failed (running, completed, compensated) or that another retry re-opened
 * first, and for a choreographed flow (--saga-mode choreography: a sagas row but
 * no engine saga; its reactions retry on the bus).
 */
#include <stdio.h>
#include <string.h>

#include "services/internal.h"

static json_t *saga_row(const struct ag_rm_row *st)
{
    json_t *s = json_pack("{s:o, s:s, s:s, s:s?, s:s?, s:o}", "id", svc_id_json(st, 0), "type",
                          svc_col(st, 1), "status", svc_col(st, 2), "currentStep", svc_col(st, 3),
                          "reason", svc_col(st, 4), "updatedAt", svc_time_json(st, 6));
    json_object_set_new(s, "steps", ag_saga_steps_json(svc_col(st, 5)));
    return s;
}

static json_t *one_col(const struct ag_rm_row *st)
{
    char b[AG_RM_ID_MAX];
    const char *v = ag_rm_id(st, 0, b); /* an id, or a status (text) */
    return json_string(v ? v : "");
}

/* The saga belongs to the customer of the order it places. */
static bool owns_saga(struct svc_job *j)
{
    if (j->who.admin) return true;
    const char *mine = svc_caller_customer(j);
    if (!mine) return false;
    const char *args[] = {j->param, mine};
    static const char sql[] = "SELECT id FROM orders WHERE saga_id=?1 AND customer_id=?2";
    const unsigned ids = SVC_ID(0) | SVC_ID(1);
    json_t *rows = svc_rm_query_ids(j->env, RM_ORDERS, sql, args, 2, ids, one_col);
    if (rows && !json_array_size(rows) && svc_stream_exists(j->env, "saga", j->param)) {
        svc_rm_catch_up_rm(j->env, RM_ORDERS);
        json_decref(rows);
        rows = svc_rm_query_ids(j->env, RM_ORDERS, sql, args, 2, ids, one_col);
    }
    bool mine_too = json_array_size(rows) > 0;
    json_decref(rows);
    return mine_too;
}

static int get_saga(struct svc_job *j)
{
    static const struct svc_one one = {
        RM_SAGAS,
        "SELECT id, type, status, current_step, reason, steps, updated_at FROM sagas WHERE id=?1",
        saga_row,
        "saga",
        "Saga not found",
        "no saga with id",
        SVC_ID(0)};
    if (!owns_saga(j)) return svc_problem(j, 404, "Saga not found", "no saga with id %s", j->param);
    return svc_get_one(j, &one, j->param, NULL);
}

/* GET /admin/sagas?status=failed */
static int list_sagas(struct svc_job *j)
{
    int limit;
    svc_limit(j, j->q[1], &limit);
    if (svc_fields_failed(j, 400)) return 0;
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit + 1);
    const char *args[] = {j->q[0], j->q[2] ? j->q[2] : "", lim};
    /* a status other than completed: the partial index sagas_open (the literal
     * `status <> 'completed'` is what lets the planner use it) */
    bool open = j->q[0] && strcmp(j->q[0], "completed") != 0;
    json_t *rows = svc_rm_query_ids(
        j->env, RM_SAGAS,
        open ? "SELECT id, type, status, current_step, reason, steps, updated_at FROM sagas"
               " WHERE status=?1 AND status <> 'completed' AND id > ?2 ORDER BY id LIMIT ?3"
             : "SELECT id, type, status, current_step, reason, steps, updated_at FROM sagas"
               " WHERE (?1 IS NULL OR status=?1) AND id > ?2 ORDER BY id LIMIT ?3",
        args, 3, SVC_ID(1), saga_row);
    if (!rows) return AG_EIO;
    return svc_ok(j, 200, svc_page(rows, limit));
}

static int retry(struct svc_job *j)
{
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_saga_retry(j->env->sagas, j->param, &err);
    if (rc == AG_ENOTFOUND) { /* a choreographed flow has a row but no engine saga */
        const char *args[] = {j->param};
        json_t *rows = svc_rm_query_ids(j->env, RM_SAGAS, "SELECT status FROM sagas WHERE id=?1",
                                        args, 1, SVC_ID(0), one_col);
        bool chor = json_array_size(rows) > 0;
        json_decref(rows);
        if (chor)
            return svc_problem(j, 409, "Saga cannot be retried",
                               "saga %s is choreographed: its reactions retry on the bus, and a "
                               "compensation that kept failing is undone by hand",
                               j->param);
        return svc_problem(j, 404, "Saga not found", "no saga with id %s", j->param);
    }
    if (rc == AG_EREJECTED || rc == AG_ECONFLICT)
        return svc_problem(j, 409, "Saga cannot be retried", "%s", err.msg);
    if (rc) return svc_error(j, rc, &err);
    snprintf(j->location, sizeof j->location, "/api/v1/sagas/%s", j->param);
    return svc_ok(j, 202, json_pack("{s:s, s:s}", "id", j->param, "status", "running"));
}

static const struct svc_route routes[] = {
    {"GET", "/api/v1/sagas/{id}", SVC_OWNER, get_saga, "id", "saga", {NULL}},
    {"GET", "/admin/sagas", SVC_ADMIN, list_sagas, NULL, NULL, {"status", "limit", "cursor"}},
    {"POST", "/admin/sagas/{id}/retry", SVC_ADMIN, retry, "id", "saga", {NULL}},
};

const struct svc_context svc_sagas_context = {"sagas", routes, sizeof routes / sizeof routes[0],
                                              NULL, RM_SAGAS};
