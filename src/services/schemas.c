/*
 * The commerce events' schema versions and their upcasters (the kernel's
 * mechanism: src/es/upcast.c; the table of versions: docs/events.md).
 *
 * Every event type is at version 1 except those listed in `current`. When an
 * event's shape changes, its type's version goes up here and an upcaster from
 * the previous version is added below it; nothing in the log is rewritten. An
 * upcaster must be a pure function of the stored event (its data, id, stream,
 * position), so every reader — the repository, each projection, the relay,
 * before and after a restart — derives the same current shape.
 *
 * AddressAdded v1 {address} → v2 {addressId, address}: addresses got ids (an
 * order names its shipping address by id). A v1 address's id is the id of the
 * event that added it — unique, stable, and already a UUID.
 */
#include <string.h>

#include "services/internal.h"

static int address_added_v1(json_t *data, const struct ag_event *ev)
{
    if (json_object_get(data, "addressId")) return 0; /* tolerate a v2 body */
    char id[AG_UUID_STRLEN + 1];
    ag_uuid_format(&ev->id, id);
    return json_object_set_new(data, "addressId", json_string(id)) ? AG_ENOMEM : 0;
}

static const struct ag_es_schema current[] = {
    {AG_EV_ADDRESS_ADDED, 2},
};

static const struct ag_es_upcaster upcasters[] = {
    {AG_EV_ADDRESS_ADDED, 1, address_added_v1},
};

static const struct ag_es_schemas schemas = {current, AG_ARRAY_SIZE(current), upcasters,
                                             AG_ARRAY_SIZE(upcasters)};

void svc_event_schemas_install(void)
{
    ag_es_schemas_set(&schemas);
}
