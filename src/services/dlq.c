/*
 * The dead letters' ops view: GET /admin/dlq, POST /admin/dlq/{id}/replay,
 * DELETE /admin/dlq/{id} (admin only), and `agora dlq` which calls them over
 * DIR/services.sock.
 *
 * Dead letters live where their consumer is: a projection's parked events in its
 * read model (ag_projector_parked, src/es/projector.c), a bus worker's parked
 * messages in the store (include/agora/bus_worker.h). An id here names the list
 * and the entry: `projection:<name>:<position>` or `bus:<consumer>:<n>`, so a
 * replay or drop goes to the one consumer that can handle it. The bus workers
 * are choreography's four (`--saga-mode choreography`: chor-inventory,
 * chor-payments, chor-shipping, chor-ordering, svc_chor_worker); without it a
 * `bus:` id answers 404. The list holds the projections' entries first, then
 * the workers', each in its list's order; a bus entry's `seq` is its number in
 * its consumer's lot and `behind` (a waiting one's head) is a full id too.
 *
 * Answers: 404 for an unknown id, 409 when the entry is resolved already, waits
 * behind another (replay the head), or still fails (its new error in the
 * detail); 200 {"id","released"} otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/bus_worker.h"
#include "services/internal.h"

bool svc_dlq_id_ok(const char *s)
{
    const char *c1 = s ? strchr(s, ':') : NULL, *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (!c2 || c2 == c1 + 1 || !c2[1] || strlen(s) > 120) return false;
    for (const char *p = c2 + 1; *p; p++)
        if (*p < '0' || *p > '9') return false;
    return true;
}

/* What an id names: a projection's entry (`*proj`) or a bus worker's (`*w`). */
struct target {
    size_t proj;
    struct ag_bus_worker *w; /* NULL: a projection */
    uint64_t n;              /* the position, or the parked message's number */
};

/* Split an id; false when it names nothing this server has. */
static bool parse(const struct svc_env *p, const char *id, struct target *t)
{
    bool bus = strncmp(id ? id : "", "bus:", 4) == 0;
    if (!svc_dlq_id_ok(id) || (!bus && strncmp(id, "projection:", 11) != 0)) return false;
    const char *name = id + (bus ? 4 : 11), *c = strchr(name, ':');
    size_t len = (size_t)(c - name);
    t->n = strtoull(c + 1, NULL, 10);
    t->w = NULL;
    for (size_t i = 0; bus && svc_chor_worker(p->chor, i); i++) {
        const char *wn = ag_bus_worker_name(svc_chor_worker(p->chor, i));
        if (strlen(wn) == len && memcmp(wn, name, len) == 0) {
            t->w = svc_chor_worker(p->chor, i);
            return true;
        }
    }
    for (size_t i = 0; !bus && p->projector && i < ag_projector_count(p->projector); i++) {
        struct ag_projection_stats s;
        ag_projector_stats(p->projector, i, &s);
        if (strlen(s.name) == len && memcmp(s.name, name, len) == 0) {
            t->proj = i;
            return true;
        }
    }
    return false;
}

/* Append worker `w`'s unresolved parked messages to `items` with dead-letter ids. */
static int list_bus(struct ag_bus_worker *w, json_t *items, struct ag_err *err)
{
    struct ag_buf b;
    ag_buf_init(&b);
    int rc = ag_bus_worker_list(w, &b, err);
    json_t *a = rc ? NULL : json_loadb(b.data, b.len, 0, NULL);
    ag_buf_free(&b);
    if (!rc && !json_is_array(a)) rc = ag_err_set(err, AG_EJSON, "a worker's list is not JSON");
    const char *name = ag_bus_worker_name(w);
    size_t k;
    json_t *e;
    json_array_foreach(a, k, e)
    {
        char id[160];
        json_int_t n = json_integer_value(json_object_get(e, "id"));
        snprintf(id, sizeof id, "bus:%s:%lld", name, (long long)n);
        json_object_set_new(e, "seq", json_integer(n));
        json_object_set_new(e, "id", json_string(id));
        json_object_set_new(e, "kind", json_string("bus"));
        json_t *behind = json_object_get(e, "behind");
        if (json_is_integer(behind)) {
            snprintf(id, sizeof id, "bus:%s:%lld", name, (long long)json_integer_value(behind));
            json_object_set_new(e, "behind", json_string(id));
        }
        json_array_append(items, e);
    }
    json_decref(a);
    return rc;
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
    for (size_t i = 0; svc_chor_worker(p->chor, i); i++) {
        struct ag_err err;
        ag_err_clear(&err);
        if (list_bus(svc_chor_worker(p->chor, i), items, &err)) {
            json_decref(items);
            return svc_error(j, AG_EIO, &err);
        }
    }
    return svc_ok(j, 200, json_pack("{s:o}", "items", items));
}

static int resolve(struct svc_job *j, bool drop)
{
    const struct svc_env *p = j->env;
    struct target t = {0};
    if (!parse(p, j->param, &t))
        return svc_problem(j, 404, "Not found", "no dead letter %.120s", j->param);
    struct ag_err err;
    ag_err_clear(&err);
    size_t released = 0;
    int rc;
    if (t.w)
        rc = drop ? ag_bus_worker_drop(t.w, t.n, &released, &err)
                  : ag_bus_worker_replay(t.w, t.n, &released, &err);
    else
        rc = drop ? ag_projector_drop(p->projector, t.proj, t.n, &released, &err)
                  : ag_projector_replay(p->projector, t.proj, t.n, &released, &err);
    /* a bus handler's own code comes back when it still fails: whatever it is, 409 */
    if (rc && t.w && strncmp(err.msg, "still failing", 13) == 0)
        return svc_problem(j, 409, "Conflict", "%s", err.msg);
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
