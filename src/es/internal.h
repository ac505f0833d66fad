/* Private declarations shared by the event-sourcing kernel's files (src/es). */
#ifndef AGORA_ES_INTERNAL_H
#define AGORA_ES_INTERNAL_H

/* The metadata to store with a new event of `type`: `meta` (JSON object text or
 * NULL) with "schemaVersion" added, as a new string (free with free(): jansson's
 * allocator), or NULL when the type is at version 1 (store `meta` as it is) —
 * or on out of memory: check ag_es_schema_version(type) > 1 to tell. */
char *ag__es_meta_for(const char *meta, const char *type);

struct ag_event_data;
/* Of `n` events appended to one stream in order, store AG_ES_META_NEXT in place
 * of each one's metadata that is byte-for-byte the next one's (meta.c). */
void ag__es_meta_share(struct ag_event_data *ev, size_t n);

#endif
