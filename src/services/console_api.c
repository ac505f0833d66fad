/*
 * The operator console's reads of the log and its one write (admin only; the
 * console itself is served by the gateway, src/gateway/console.c):
 *   GET  /admin/stats                         one snapshot of the overview (console_stats.c)
 *   GET  /admin/log?after=&limit=             $all after a position (the live tail's
 *                                             polling fallback); without `after` the
 *                                             last `limit` events
 *   GET  /admin/streams?prefix=&limit=        stream names (with a prefix) and versions
 *   GET  /admin/streams/{name}?from=&limit=   one stream's events from a version
 *   POST /admin/projections/{name}/rebuild    rebuild a read model in the background
 *
 * Events answer as {"position","stream","type","version","time","data"} — the
 * shape of the log's SSE messages, so one renderer serves both. `data` is the
 * event's JSON as stored: personal fields stay sealed (pii.c).
 *
 * Rebuild. The projector already knows how to replace a read model while
 * running: a damaged one is set aside and the log replayed into a new file in
 * the background (ag_projector_report_damage, src/es/projector.c); an operator's
 * rebuild takes that path. Queries of that read model answer 503 until the new
 * file has caught up; the progress is the projection's checkpoint against the
 * head in /admin/projections ("status": "rebuilding"). The saga starter is not a
 * read model and is refused (409).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/internal.h"

#define LOG_LIMIT_DEFAULT 50
#define LOG_LIMIT_MAX     500
#define LIST_SCAN_MAX     1000000 /* streams looked at for one prefix listing */

/* ?name as an integer in [lo, hi], `def` when absent; -1 (field error) otherwise. */
static int64_t int_param(struct svc_job *j, const char *v, const char *name, int64_t def,
                         int64_t lo, int64_t hi)
{
    int64_t x;
    if (!v) return def;
    if (ag_parse_i64(v, &x) || x < lo || x > hi) {
        svc_field_error(j, name, "%s must be an integer from %lld to %lld", name + 1, (long long)lo,
                        (long long)hi);
        return -1;
    }
    return x;
}

json_t *svc_event_json(const struct ag_event *e)
{
    char when[40];
    ag_time_rfc3339(e->time_ns, when);
    json_t *data = json_loadb(e->data, e->data_len, JSON_DECODE_ANY, NULL);
    return json_pack("{s:I, s:s%, s:s%, s:I, s:s, s:o}", "position", (json_int_t)e->position,
                     "stream", e->stream, e->stream_len, "type", e->type, e->type_len, "version",
                     (json_int_t)e->version, "time", when, "data", data ? data : json_null());
}

static json_t *page_json(const struct ag_event_page *pg, bool reverse)
{
    json_t *a = json_array();
    for (size_t i = 0; i < pg->count; i++)
        json_array_append_new(a, svc_event_json(&pg->events[reverse ? pg->count - 1 - i : i]));
    return a;
}

/* GET /admin/log?after=&limit= */
static int log_get(struct svc_job *j)
{
    int64_t limit = int_param(j, j->q[1], "/limit", LOG_LIMIT_DEFAULT, 1, LOG_LIMIT_MAX);
    int64_t after = int_param(j, j->q[0], "/after", -2, -1, INT64_MAX - 1);
    if (svc_fields_failed(j, 400)) return 0;
    struct ag_event_page pg = {0};
    struct ag_err err;
    ag_err_clear(&err);
    bool tail = after == -2;
    int rc = tail ? ag_store_read_all(j->env->store, UINT64_MAX, AG_READ_BACKWARD, (size_t)limit,
                                      &pg, &err)
                  : ag_store_read_all(j->env->store, (uint64_t)(after + 1), AG_READ_FORWARD,
                                      (size_t)limit, &pg, &err);
    if (rc) return svc_error(j, rc, &err);
    json_t *items = page_json(&pg, tail);
    json_int_t last =
        pg.count ? (json_int_t)pg.events[tail ? 0 : pg.count - 1].position : (json_int_t)after;
    ag_event_page_free(&pg);
    return svc_ok(j, 200, json_pack("{s:o, s:I}", "items", items, "last", last));
}

struct list_ctx {
    const char *prefix;
    size_t plen, limit, seen;
    json_t *items;
};

static int list_one(void *ud, const char *name, size_t len, int64_t version)
{
    struct list_ctx *c = ud;
    if (++c->seen > LIST_SCAN_MAX) return 1;
    if (len < c->plen || memcmp(name, c->prefix, c->plen) != 0) return 0;
    json_array_append_new(
        c->items, json_pack("{s:s%, s:I}", "name", name, len, "version", (json_int_t)version));
    return json_array_size(c->items) >= c->limit ? 1 : 0;
}

/* GET /admin/streams?prefix=&limit= */
static int streams_list(struct svc_job *j)
{
    int64_t limit = int_param(j, j->q[1], "/limit", LOG_LIMIT_DEFAULT, 1, LOG_LIMIT_MAX);
    if (svc_fields_failed(j, 400)) return 0;
    struct list_ctx c = {j->q[0] ? j->q[0] : "", 0, (size_t)limit, 0, json_array()};
    c.plen = strlen(c.prefix);
    int rc = ag_store_list_streams(j->env->store, list_one, &c);
    if (rc < 0 || rc > 1) {
        json_decref(c.items);
        return svc_error(j, rc < 0 ? AG_EIO : rc, NULL);
    }
    return svc_ok(j, 200, json_pack("{s:o, s:b}", "items", c.items, "truncated", rc == 1));
}

/* GET /admin/streams/{name}?from=&limit= */
static int stream_get(struct svc_job *j)
{
    int64_t from = int_param(j, j->q[0], "/from", 0, 0, INT64_MAX - 1);
    int64_t limit = int_param(j, j->q[1], "/limit", LOG_LIMIT_DEFAULT, 1, LOG_LIMIT_MAX);
    if (svc_fields_failed(j, 400)) return 0;
    struct ag_event_page pg = {0};
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_store_read_stream(j->env->store, j->param, strlen(j->param), from, AG_READ_FORWARD,
                                  (size_t)limit, &pg, &err);
    if (rc == AG_ENOTFOUND) return svc_problem(j, 404, "Not found", "no stream %.160s", j->param);
    if (rc) return svc_error(j, rc, &err);
    json_t *items = page_json(&pg, false);
    json_t *next = pg.end ? json_null() : json_integer((json_int_t)pg.next_version);
    ag_event_page_free(&pg);
    return svc_ok(
        j, 200,
        json_pack("{s:s, s:o, s:o}", "stream", j->param, "items", items, "nextVersion", next));
}

/* POST /admin/projections/{name}/rebuild */
static int rebuild(struct svc_job *j)
{
    struct ag_projector *pr = j->env->projector;
    for (size_t i = 0; pr && i < ag_projector_count(pr); i++) {
        struct ag_projection_stats s;
        ag_projector_stats(pr, i, &s);
        if (strcmp(s.name, j->param) != 0) continue;
        if (strcmp(s.name, "saga_starter") == 0)
            return svc_problem(j, 409, "Not a read model",
                               "saga_starter starts sagas; it has no read model to rebuild");
        if (!ag_projector_usable(pr, i, NULL))
            return svc_problem(j, 409, "Rebuilding", "%s is being rebuilt already", s.name);
        ag_projector_report_damage(pr, i, "rebuild requested by an operator");
        AG_INFO("projection.rebuild_requested", AG_LS("projection", s.name),
                AG_LS("sub", j->who.sub));
        return svc_ok(j, 202,
                      json_pack("{s:s, s:s, s:I}", "name", s.name, "status", "rebuilding", "head",
                                (json_int_t)s.head));
    }
    return svc_problem(j, 404, "Not found", "no projection named %.100s", j->param);
}

bool svc_name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (!n || n > 120) return false; /* j->param holds 127 */
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return false;
    return true;
}

static const struct svc_route routes[] = {
    {"GET", "/admin/stats", SVC_ADMIN, svc_console_stats_get, NULL, NULL, {NULL}},
    {"GET", "/admin/log", SVC_ADMIN, log_get, NULL, NULL, {"after", "limit"}},
    {"GET", "/admin/streams", SVC_ADMIN, streams_list, NULL, NULL, {"prefix", "limit"}},
    {"GET", "/admin/streams/{name}", SVC_ADMIN, stream_get, "name", "stream", {"from", "limit"}},
    {"POST", "/admin/projections/{name}/rebuild", SVC_ADMIN, rebuild, "name", "projection", {NULL}},
};

const struct svc_context svc_console_context = {"console", routes, AG_ARRAY_SIZE(routes), NULL,
                                                RM_COUNT};
