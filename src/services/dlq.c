/*
 * The dead letters' ops view: GET /admin/dlq, POST /admin/dlq/{id}/replay,
 * DELETE /admin/dlq/{id} (admin only), and `agora dlq` which calls them over
 * DIR/services.sock.
 *
 * Dead letters live where their consumer is: a projection's parked events in its
 * read model (ag_projector_parked, src/es/projector.c), a bus worker's parked
 * messages in the store (include/agora/bus_worker.h). An id here names the list
 * and the entry: `projection:<name>:<position>` or `bus:<consumer>:<n>`, so a
 * replay or drop goes to the one consumer that can handle it. The server runs no
 * bus worker yet (choreography, issue 13 item 5, will): `bus:` ids answer 404.
 *
 * Answers: 404 for an unknown id, 409 when the entry is resolved already, waits
 * behind another (replay the head), or still fails (its new error in the
 * detail); 200 {"id","released"} otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/internal.h"

bool svc_dlq_id_ok(const char *s)
{
    const char *c1 = s ? strchr(s, ':') : NULL, *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (!c2 || c2 == c1 + 1 || !c2[1] || strlen(s) > 120) return false;
    for (const char *p = c2 + 1; *p; p++)
        if (*p < '0' || *p > '9') return false;
    return true;
}

/* Split an id; false when it names nothing this server has. */
static bool parse(const struct svc_env *p, const char *id, size_t *proj, uint64_t *pos)
{
    if (!svc_dlq_id_ok(id) || strncmp(id, "projection:", 11) != 0) return false;
    const char *name = id + 11, *c = strchr(name, ':');
    *pos = strtoull(c + 1, NULL, 10);
    for (size_t i = 0; p->projector && i < ag_projector_count(p->projector); i++) {
        struct ag_projection_stats s;
        ag_projector_stats(p->projector, i, &s);
        if (strlen(s.name) == (size_t)(c - name) && memcmp(s.name, name, (size_t)(c - name)) == 0) {
            *proj = i;
            return true;
        }
    }
    return false;
}

int svc_dlq_list(struct svc_job *j)
{
    const struct svc_env *p = j->env;
    json_t *items = json_array();
    for (size_t i = 0; p->projector && i < ag_projector_count(p->projector); i++) {
        json_t *a = json_array();
        struct ag_err err;
        ag_err_clear(&err);
        if (ag_projector_parked(p->projector, i, false, a, &err)) {
            json_decref(a);
            json_decref(items);
            return svc_error(j, AG_EIO, &err);
        }
        size_t k;
        json_t *e;
        json_array_foreach(a, k, e)
        {
            char id[160];
            snprintf(id, sizeof id, "projection:%s:%lld",
                     json_string_value(json_object_get(e, "projection")),
                     (long long)json_integer_value(json_object_get(e, "id")));
            json_object_set_new(e, "position",
                                json_integer(json_integer_value(json_object_get(e, "id"))));
            json_object_set_new(e, "id", json_string(id));
            json_object_set_new(e, "kind", json_string("projection"));
            json_array_append(items, e);
        }
        json_decref(a);
    }
    return svc_ok(j, 200, json_pack("{s:o}", "items", items));
}

static int resolve(struct svc_job *j, bool drop)
{
    const struct svc_env *p = j->env;
    size_t proj;
    uint64_t pos;
    if (!parse(p, j->param, &proj, &pos))
        return svc_problem(j, 404, "Not found", "no dead letter %.120s", j->param);
    struct ag_err err;
    ag_err_clear(&err);
    size_t released = 0;
    int rc = drop ? ag_projector_drop(p->projector, proj, pos, &released, &err)
                  : ag_projector_replay(p->projector, proj, pos, &released, &err);
    if (rc == AG_ENOTFOUND) return svc_problem(j, 404, "Not found", "%s", err.msg);
    if (rc == AG_ETIMEDOUT || rc == AG_ECLOSED)
        return svc_problem(j, 503, "Unavailable", "%s", err.msg);
    if (rc) return svc_problem(j, 409, "Conflict", "%s", err.msg);
    AG_INFO(drop ? "dlq.dropped" : "dlq.replayed", AG_LS("id", j->param),
            AG_LU("released", released));
    return svc_ok(j, 200,
                  json_pack("{s:s, s:I}", "id", j->param, "released", (json_int_t)released));
}

int svc_dlq_replay(struct svc_job *j)
{
    return resolve(j, false);
}

int svc_dlq_drop(struct svc_job *j)
{
    return resolve(j, true);
}
