/*
 * GET /admin/audit?actor=&stream=&after=&limit= — who did what, read from the log.
 *
 * Every event's metadata names its actor (sub and roles), the request id and the
 * trace (common.c copies them from the request). A saga's events store theirs
 * once, on SagaStarted: ag_saga_event_meta_read gives each its whole metadata; a
 * command's events on one stream store it on the last (src/es/meta.c):
 * ag_es_event_meta finds it among the page's next events. The audit view scans
 * `$all` forward from the cursor `after` (a global position, exclusive), keeps the events that
 * match the filters, and stops at `limit` matches or after a bounded number of scanned events, so
 * one request never walks an unbounded log: `nextCursor` is where the next page starts, null once
 * the end of the log was reached.
 */
#include <stdio.h>
#include <string.h>

#include "agora/saga.h"
#include "services/internal.h"

#define SCAN_BUDGET 20000 /* events looked at per request */

struct audit_query {
    const char *actor, *stream;
    uint64_t from;
    int limit;
};

static bool matches(const struct audit_query *q, const struct ag_event *ev, json_t *meta)
{
    if (q->stream &&
        (strlen(q->stream) != ev->stream_len || memcmp(q->stream, ev->stream, ev->stream_len) != 0))
        return false;
    const char *sub = json_string_value(json_object_get(json_object_get(meta, "actor"), "sub"));
    return !q->actor || (sub && strcmp(sub, q->actor) == 0);
}

static json_t *item(const struct ag_event *ev, json_t *meta)
{
    char ts[32];
    ag_time_rfc3339(ev->time_ns, ts);
    json_t *actor = json_object_get(meta, "actor");
    if (json_is_string(actor))
        actor = json_pack("{s:O, s:[]}", "sub", actor, "roles");
    else
        actor = json_is_object(actor) ? json_incref(actor) : json_null();
    return json_pack("{s:I, s:s%, s:s%, s:s, s:o, s:O?, s:O?}", "position",
                     (json_int_t)ev->position, "stream", ev->stream, ev->stream_len, "type",
                     ev->type, ev->type_len, "time", ts, "actor", actor, "requestId",
                     json_object_get(meta, "requestId"), "traceparent",
                     json_object_get(meta, "traceparent"));
}

/* The whole metadata of the page's event `i` (NULL when unreadable): a saga's
 * completed from its stream, a command's stored once per stream resolved from
 * the events after it in the page (or the store). */
static json_t *meta_of(struct ag_store *s, const struct ag_event_page *pg, size_t i)
{
    const struct ag_event *ev = &pg->events[i];
    if (ag_es_meta_is_next(ev))
        return ag_es_event_meta(s, ev, pg->events + i + 1, pg->count - i - 1);
    json_t *m = NULL;
    return ag_saga_event_meta_read(s, ev, &m, NULL) ? NULL : m;
}

/* Scan from q->from into items; *next is the cursor to continue from, or 0 at the end. */
static int scan(struct svc_env *p, const struct audit_query *q, json_t *items, uint64_t *next)
{
    uint64_t pos = q->from;
    size_t scanned = 0;
    *next = 0;
    while (json_array_size(items) < (size_t)q->limit && scanned < SCAN_BUDGET) {
        struct ag_event_page pg;
        int rc = ag_store_read_all(p->store, pos, AG_READ_FORWARD, 512, &pg, NULL);
        if (rc) return rc;
        size_t i = 0;
        for (; i < pg.count && json_array_size(items) < (size_t)q->limit; i++) {
            const struct ag_event *ev = &pg.events[i];
            json_t *meta = meta_of(p->store, &pg, i);
            if (matches(q, ev, meta)) json_array_append_new(items, item(ev, meta));
            json_decref(meta);
            pos = ev->position + 1;
        }
        scanned += i;
        bool end = pg.end && i == pg.count;
        bool empty = pg.count == 0;
        ag_event_page_free(&pg);
        if (end || empty) return 0;
    }
    *next = pos;
    return 0;
}

static int audit(struct svc_job *j)
{
    struct audit_query q = {.actor = j->q[0], .stream = j->q[1]};
    uint64_t after = 0;
    if (j->q[2] && ag_parse_u64(j->q[2], &after))
        svc_field_error(j, "/after", "after must be a log position (a non-negative integer)");
    svc_limit(j, j->q[3], &q.limit);
    if (svc_fields_failed(j, 400)) return 0;
    q.from = j->q[2] ? after + 1 : 0;
    json_t *items = json_array();
    uint64_t next;
    int rc = scan(j->env, &q, items, &next);
    if (rc) return json_decref(items), rc;
    char cur[32];
    snprintf(cur, sizeof cur, "%llu", (unsigned long long)(next ? next - 1 : 0));
    return svc_ok(j, 200,
                  json_pack("{s:o, s:o}", "items", items, "nextCursor",
                            next ? json_string(cur) : json_null()));
}

static const struct svc_route routes[] = {
    {"GET", "/admin/audit", SVC_ADMIN, audit, NULL, NULL, {"actor", "stream", "after", "limit"}},
};

const struct svc_context svc_audit_context = {"audit", routes, sizeof routes / sizeof routes[0],
                                              NULL, RM_COUNT};
