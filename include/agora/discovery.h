/*
 * agora discovery: the registry of `agora serve` instances and the resolver that
 * keeps mesh clusters' endpoints current from it (issue 14, service discovery).
 *
 * The registry is a table in PostgreSQL — the read models' database, schema
 * rm_registry (made when missing), table `members`: id, contexts (names separated
 * by spaces), address (HOST:PORT others reach it at), pid, started_at and
 * heartbeat_at (ms since the epoch, by the database's clock, so hosts' clocks do
 * not matter), in_flight (HTTP requests being handled) and loop_util (per mille of
 * the time the member's loops were busy, NULL when it does not know). A member
 * (struct ag_disc_config.self) registers at start, updates its heartbeat and load
 * every interval and deletes its row when it stops cleanly; a member whose
 * heartbeat is older than the TTL counts as gone, and rows gone for 10 TTLs are
 * deleted by whoever polls.
 *
 * The resolver (every instance, and `agora gateway` when a destinationRule says
 * `discovery:`) reads the members every interval and sets each watched cluster's
 * endpoints (ag_mesh_cluster_set_endpoints: added, and removed ones drained) to
 * the addresses of the live members serving the watched context. When the
 * registry cannot be read, the endpoints stay as they were (outlier detection and
 * health checks still judge them). One thread does both, with its own database
 * connection.
 *
 * Ownership: ag_disc_start returns an owned handle (ag_disc_stop); watched
 * clusters are borrowed until ag_disc_unwatch or ag_disc_stop returns.
 */
#ifndef AGORA_DISCOVERY_H
#define AGORA_DISCOVERY_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "agora/base.h"
#include "agora/mesh.h"

#define AG_DISC_ID_MAX 64 /* a member id with its NUL */

/* A member's own load, as it reports it with each heartbeat. */
struct ag_disc_load {
    int64_t in_flight; /* requests being handled */
    int32_t loop_util; /* per mille of time busy; < 0 = unknown */
};

/* This process as a member (NULL in ag_disc_config: resolve only). */
struct ag_disc_self {
    const char *id;       /* NULL = "<hostname>-<pid>-<random>" */
    const char *contexts; /* served contexts, separated by spaces ("customers catalog") */
    const char *address;  /* HOST:PORT the others call it at */
    /* Fill the load for the next heartbeat (called on the registry's thread). */
    void (*load)(void *ud, struct ag_disc_load *out);
    void *load_ud;
};

struct ag_disc_config {
    const char *registry;            /* postgresql:// URI (ag_rm_open); copied */
    const struct ag_disc_self *self; /* copied; NULL = resolver only */
    uint32_t interval_ms;            /* heartbeat and poll; 0 = 1000 */
    uint32_t ttl_ms;                 /* heartbeat age that counts as gone; 0 = 5000 */
};

struct ag_disc;

/* Open the registry (creating its table), register self if any, read the members
 * once and start the thread. AG_EINVAL (not PostgreSQL), AG_EUNAVAILABLE (the
 * database does not answer), AG_EIO. */
AG_EXTERN int ag_disc_start(const struct ag_disc_config *cfg, struct ag_disc **out /* OUT */,
                            struct ag_err *err);
/* Keep cluster `c` (dynamic) at the live members serving `context` ("*": every
 * live member); applied at once from the last poll. AG_ENOMEM. */
AG_EXTERN int ag_disc_watch(struct ag_disc *d, const char *context, struct ag_mesh_cluster *c);
/* Stop updating `c`; once this returns the resolver does not touch it. */
AG_EXTERN void ag_disc_unwatch(struct ag_disc *d, struct ag_mesh_cluster *c);
/* Poll now (heartbeat, read, apply) on the caller's thread: tests and start. */
AG_EXTERN int ag_disc_refresh(struct ag_disc *d, struct ag_err *err);
/* The members as last read, for GET /admin/cluster: {registry, ttlMs, polledAgoMs,
 * error?, members: [{id, contexts, address, pid, startedAt, heartbeatAgeMs,
 * healthy, self, load: {inFlight, loopUtilisation}}]}. New reference. */
AG_EXTERN json_t *ag_disc_members_json(struct ag_disc *d);
/* This member's id ("" without self; borrowed). */
AG_EXTERN const char *ag_disc_member_id(const struct ag_disc *d);
/* Stop the thread, delete this member's row (a clean stop) and free. */
AG_EXTERN void ag_disc_stop(struct ag_disc *d);

#endif
