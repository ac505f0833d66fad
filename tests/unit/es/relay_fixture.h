/* Shared by the outbox relay tests (test_relay.c, test_relay_pipe.c): a temporary
 * directory holding the event store the relay reads and a local bus (the
 * "broker", whose dedup drops twins) over that store or over a store of its own;
 * appending "{"n":N}" events, the store's head, draining what a consumer gets, and
 * the mapping that publishes "Shipped" events. relay_fixture.c is linked into the
 * folder's one test executable (every .c of tests/unit/<module>/) and defines no test. */
#ifndef AG_TEST_ES_RELAY_FIXTURE_H
#define AG_TEST_ES_RELAY_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agora/relay.h"

struct relay_fx {
    char dir[64];               /* /tmp/agora-<name>-XXXXXX, removed by relay_fx_close */
    struct ag_store *store;     /* the events the relay reads */
    struct ag_store *bus_store; /* the bus's own store (<dir>/broker); NULL: it uses `store` */
    struct ag_bus *bus;         /* local: */
};

/* Creates fx->dir and opens the event store there (no_sync): with shards 0 the
 * log store in <dir> itself, else a sharded store of that many log stores
 * (shards:file:<dir>/s0,file:<dir>/s1,...); then a local bus over it, or, with
 * own_bus_store, over a log store of its own in <dir>/broker. Asserts. */
void relay_fx_open(struct relay_fx *fx, const char *name, unsigned shards, bool own_bus_store);
/* Closes the bus and the stores and removes the directory. */
void relay_fx_close(struct relay_fx *fx);

/* Appends one event `type` with data {"n":n} to `stream` (any version). */
void relay_fx_append(const struct relay_fx *fx, const char *stream, const char *type, int n);
/* How many events the store holds. */
uint64_t relay_fx_head(const struct relay_fx *fx);
/* Every message the consumer `name` gets now, acked: their data's "n" in order in
 * ns[0..cap) (-1 where there is none); returns how many there were. */
size_t relay_fx_drain(const struct relay_fx *fx, const char *name, int *ns, size_t cap);

/* The mapping (ag_relay_map_fn): "Shipped" events are the published language
 * (topic and type agora.shipping.Shipped, source /agora/shipping, the event's
 * data); the subject is the stream, less the prefix `ud` (a string, or NULL) where
 * the stream starts with it. Other events are private. */
int relay_fx_map(void *ud, struct ag_store *s, const struct ag_event *ev, struct ag_relay_msg *out);

#endif
