/*
 * Event metadata stored once per command and stream (issue 19, compact events).
 *
 * A command's events all get the command's metadata (actor, requestId,
 * traceparent: ~70 bytes each after compression). When a command appends
 * several events to one stream (POST /orders: OrderCreated, ItemAdded × n,
 * OrderPlaced), the repository stores that text on the last of them only; every
 * event before it whose metadata text is byte-for-byte the next event's stores
 * the marker AG_ES_META_NEXT instead (ag__es_meta_share). The marker points
 * forward, inside one append: the event it names is always written in the same
 * atomic append, and a truncation or scavenge that keeps an event keeps every
 * later event of its stream, so the pointer never dangles. Types whose metadata
 * carries a schemaVersion (above 1) are never shared: the version must stay on
 * the event itself (ag_es_event_version reads it without a store).
 *
 * Readers of metadata (the audit trail, `agora store read`, the relay's
 * CloudEvent traceparent, the trace of an order, the saga starter) call
 * ag_es_event_meta: the marker is replaced by the metadata of the first later
 * event of the stream that is not a marker — looked up first among the events
 * the caller already holds (a page of $all has the whole append), then read
 * from the store. Events written before keep their whole metadata and read
 * unchanged.
 */
#include <string.h>

#include "agora/es.h"
#include "es/internal.h"

#define CHAIN_MAX 64 /* markers followed before giving up (an append has fewer) */

static bool is_marker(const char *meta, size_t len)
{
    return len == sizeof AG_ES_META_NEXT - 1 && memcmp(meta, AG_ES_META_NEXT, len) == 0;
}

bool ag_es_meta_is_next(const struct ag_event *ev)
{
    return ev->metadata && is_marker(ev->metadata, ev->metadata_len);
}

void ag__es_meta_share(struct ag_event_data *ev, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++) {
        const struct ag_event_data *a = &ev[i], *b = &ev[i + 1];
        if (!a->metadata_len || a->metadata_len != b->metadata_len ||
            memcmp(a->metadata, b->metadata, a->metadata_len) != 0 ||
            ag_es_schema_version(a->type, a->type_len) > 1 ||
            is_marker(a->metadata, a->metadata_len))
            continue;
        ev[i].metadata = AG_ES_META_NEXT;
        ev[i].metadata_len = sizeof AG_ES_META_NEXT - 1;
    }
}

static bool same_stream(const struct ag_event *a, const struct ag_event *b)
{
    return a->stream_len == b->stream_len && memcmp(a->stream, b->stream, a->stream_len) == 0;
}

/* The event of `ev`'s stream at `version` among `near`, or NULL. */
static const struct ag_event *near_at(const struct ag_event *ev, int64_t version,
                                      const struct ag_event *near, size_t nnear)
{
    for (size_t i = 0; i < nnear; i++)
        if (near[i].version == version && same_stream(&near[i], ev)) return &near[i];
    return NULL;
}

static json_t *parse(const char *meta, size_t len)
{
    json_t *m = len ? json_loadb(meta, len, 0, NULL) : NULL;
    if (!json_is_object(m)) json_decref(m), m = json_object();
    return m;
}

/* Resolve from the store: the first later event of the stream that is no marker. */
static json_t *from_store(struct ag_store *s, const struct ag_event *ev)
{
    struct ag_event_page p = {0};
    if (!s || ag_store_read_stream(s, ev->stream, ev->stream_len, ev->version + 1, AG_READ_FORWARD,
                                   CHAIN_MAX, &p, NULL))
        return json_object();
    json_t *m = NULL;
    for (size_t i = 0; i < p.count && !m; i++)
        if (!ag_es_meta_is_next(&p.events[i]))
            m = parse(p.events[i].metadata, p.events[i].metadata_len);
    ag_event_page_free(&p);
    return m ? m : json_object();
}

json_t *ag_es_event_meta(struct ag_store *s, const struct ag_event *ev, const struct ag_event *near,
                         size_t nnear)
{
    const struct ag_event *at = ev;
    for (int hop = 0; ag_es_meta_is_next(at) && hop < CHAIN_MAX; hop++) {
        const struct ag_event *next = near_at(ev, at->version + 1, near, nnear);
        if (!next) return from_store(s, at);
        at = next;
    }
    return ag_es_meta_is_next(at) ? json_object() : parse(at->metadata, at->metadata_len);
}
