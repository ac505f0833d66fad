/*
 * The PostgreSQL event store adapter (`postgresql:` / `postgres:` store URIs).
 *
 * The URI is a libpq connection URI plus agora's own query parameters, which are
 * taken out before libpq sees it:
 *   pool_size=N                            connections for appends and reads (1..64, default 4)
 *   statement_timeout=T                    per statement (PostgreSQL units, default 30s)
 *   idle_in_transaction_session_timeout=T  (default 10s; bounds how long a stuck
 *                                          transaction can hold $all back)
 *   append_timeout=T                       how long an append that committed waits for its
 *                                          $all position (ms, or 30s; default 30s): a
 *                                          transaction older than it anywhere on the
 *                                          cluster holds it back; then AG_ETIMEDOUT
 *                                          although it committed (retry: same ids)
 *   schema=NAME                            where the tables live (default agora)
 * e.g. postgresql://agora@db.internal/shop?pool_size=8&statement_timeout=5s.
 *
 * Positions are dense and in $all order like the embedded log's: a sequencer numbers
 * committed events in (tx_id, global_position) order, only below the oldest
 * transaction still running (xid8 + pg_snapshot_xmin), so a late commit is never
 * skipped. See docs/internals/store.md.
 */
#ifndef AGORA_STORE_PG_H
#define AGORA_STORE_PG_H

#include "agora/store.h"

/* The schema version this binary writes and understands. */
#define AG_STORE_PG_SCHEMA_VERSION 5

/* Open the store at `uri` (postgresql://... or postgres://...): connects, applies
 * the migrations that are safe at start and refuses a database whose schema is
 * newer than this binary (AG_EUNSUPPORTED). A server that cannot be reached is
 * AG_EUNAVAILABLE with libpq's message. */
AG_EXTERN int ag_store_pg_open(const char *uri, const struct ag_store_options *opts,
                               struct ag_store **out, struct ag_err *err);

/* Bring the schema at `uri` to AG_STORE_PG_SCHEMA_VERSION (`agora store migrate`).
 * *from / *to (may be NULL) receive the version before and after. */
AG_EXTERN int ag_store_pg_migrate(const char *uri, int *from, int *to, struct ag_err *err);

#endif
