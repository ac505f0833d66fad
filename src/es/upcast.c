/*
 * Event schema versions and upcasters (include/agora/es.h).
 *
 * Where the version lives: in the event's metadata, "schemaVersion": N, written
 * by the repository (ag__es_meta_for) only for types whose current version is
 * above 1. An event without it is version 1 — every event written before
 * versioning existed, and every event of a type that never changed shape — so
 * a type gets its first version number the day its shape first changes, and
 * the log never needs rewriting.
 *
 * Reading: ag_es_event_data parses the payload and, when the type has
 * upcasters, runs the chain from the stored version up to the current one (v1 →
 * v2 → ... each upcaster rewriting the object in place). Types without
 * upcasters take the fast path: no metadata is looked at. A stored version above
 * the current one (written by a newer agora) is refused: reading it with an
 * older shape's code would silently lose fields.
 *
 * The table is process-wide (like the vault of personal data): the services
 * install theirs before the repository, projections and relay start; this
 * module knows no event type itself.
 */
#include <stdlib.h>
#include <string.h>

#include "agora/es.h"
#include "es/internal.h"

#define META_KEY "schemaVersion"

static const struct ag_es_schemas *g_schemas; /* installed table, or NULL */

void ag_es_schemas_set(const struct ag_es_schemas *s)
{
    g_schemas = s;
}

static bool type_is(const char *name, const char *type, size_t len)
{
    return strlen(name) == len && memcmp(name, type, len) == 0;
}

int ag_es_schema_version(const char *type, size_t len)
{
    const struct ag_es_schemas *s = g_schemas;
    for (size_t i = 0; s && i < s->ncurrent; i++)
        if (type_is(s->current[i].type, type, len)) return s->current[i].version;
    return 1;
}

static bool has_upcasters(const char *type, size_t len)
{
    const struct ag_es_schemas *s = g_schemas;
    for (size_t i = 0; s && i < s->nupcasters; i++)
        if (type_is(s->upcasters[i].type, type, len)) return true;
    return false;
}

bool ag_es_has_upcasters(const char *type, size_t len)
{
    return has_upcasters(type, len);
}

int ag_es_event_version(const struct ag_event *ev)
{
    static const char key[] = "\"" META_KEY "\"";
    if (!ev->metadata || !ev->metadata_len ||
        !memmem(ev->metadata, ev->metadata_len, key, sizeof key - 1))
        return 1;
    json_t *m = json_loadb(ev->metadata, ev->metadata_len, 0, NULL);
    json_t *v = json_object_get(m, META_KEY);
    int version = json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) < 1000
                      ? (int)json_integer_value(v)
                      : 1;
    json_decref(m);
    return version;
}

static const struct ag_es_upcaster *upcaster(const char *type, size_t len, int from)
{
    const struct ag_es_schemas *s = g_schemas;
    for (size_t i = 0; s && i < s->nupcasters; i++)
        if (s->upcasters[i].from == from && type_is(s->upcasters[i].type, type, len))
            return &s->upcasters[i];
    return NULL;
}

/* Run `data` from version `from` up to `to`. */
static int upcast(json_t *data, const struct ag_event *ev, int from, int to, struct ag_err *err)
{
    for (int v = from; v < to; v++) {
        const struct ag_es_upcaster *u = upcaster(ev->type, ev->type_len, v);
        if (!u)
            return ag_err_set(err, AG_EINVAL, "%.*s: no upcaster from version %d",
                              (int)ev->type_len, ev->type, v);
        int rc = u->fn(data, ev);
        if (rc)
            return ag_err_set(err, rc, "%.*s: upcasting version %d: %s", (int)ev->type_len,
                              ev->type, v, ag_strerror(rc));
    }
    return 0;
}

json_t *ag_es_event_data(const struct ag_event *ev, struct ag_err *err)
{
    json_t *data = json_loadb(ev->data, ev->data_len, JSON_DECODE_ANY, NULL);
    if (!data) {
        ag_err_set(err, AG_EJSON, "%.*s at position %llu: payload is not JSON", (int)ev->type_len,
                   ev->type, (unsigned long long)ev->position);
        return NULL;
    }
    if (!has_upcasters(ev->type, ev->type_len)) return data;
    int cur = ag_es_schema_version(ev->type, ev->type_len), got = ag_es_event_version(ev);
    int rc = 0;
    if (got > cur)
        rc = ag_err_set(err, AG_EINVAL,
                        "%.*s at position %llu is schema version %d; this agora knows up to %d",
                        (int)ev->type_len, ev->type, (unsigned long long)ev->position, got, cur);
    else if (got < cur && !json_is_object(data))
        rc = ag_err_set(err, AG_EJSON, "%.*s: payload is not an object", (int)ev->type_len,
                        ev->type);
    else if (got < cur)
        rc = upcast(data, ev, got, cur, err);
    if (rc) {
        json_decref(data);
        return NULL;
    }
    return data;
}

char *ag__es_meta_for(const char *meta, const char *type)
{
    int v = ag_es_schema_version(type, strlen(type));
    if (v <= 1) return NULL;
    json_t *m = meta && meta[0] ? json_loads(meta, 0, NULL) : json_object();
    if (!json_is_object(m)) { /* not an object: keep it as it was, unversioned */
        json_decref(m);
        return NULL;
    }
    char *out = NULL;
    if (json_object_set_new(m, META_KEY, json_integer(v)) == 0) out = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    return out;
}
