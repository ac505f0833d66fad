/*
 * The shard router (`shards:` store URIs): one store port over N stores.
 *
 *   shards:file:/d/s0,file:/d/s1
 *   shards:postgresql://h/db?schema=s0,postgresql://h/db?schema=s1
 *
 * Each member is any other store URI (all of one scheme; no '%2C'-free commas
 * inside a member). A stream lives on one shard: jump consistent hash of XXH3 of
 * its aggregate id, the part after the first '-' (`order-42` → `42`; a name
 * without '-' is hashed whole), unless the key is pinned by an added shard (see
 * ag_store_shard_add). Streams of one id (order-42, payment-42, reservation-42,
 * saga ids are order ids) are on one shard. A multi-stream append whose streams
 * are on one shard is that shard's atomic append; one that spans shards is a
 * cross-shard unit: its parts on the other shards are written first as an intent
 * event into `_xshard-<c>` together with the coordinator shard c's own parts (one
 * atomic append), then to their shards; a crash in between is completed on the
 * next open (idempotent re-append by event id). See README "Sharding".
 *
 * Positions carry the shard in the top bits (store.h: ag_store_pos_*); a $all
 * subscription keeps a cursor, one position per shard.
 */
#ifndef AGORA_STORE_SHARD_H
#define AGORA_STORE_SHARD_H

#include "agora/store.h"

/* Open the stores `list` names (what follows "shards:"): checks the list (not
 * empty, no duplicate, one scheme, at most AG_STORE_SHARDS_MAX) and each shard's
 * recorded layout (index and count; a new set of empty stores gets one). */
AG_EXTERN int ag_store_shard_open(const char *list, const struct ag_store_options *opts,
                                  struct ag_store **out, struct ag_err *err);

/* The shard index of `stream` in an open sharded store (0 for other stores). */
AG_EXTERN size_t ag_store_shard_of(struct ag_store *s, const char *stream, size_t len);

/* Add the store `new_uri` as shard N to the N-shard store `list` (offline: no
 * process may have it open). Every key that jump hash would move to the new
 * shard and that has a stream already is pinned to its current shard (the map
 * is kept in shard 0's layout), so no stream moves; new keys spread over N+1.
 * *pinned (may be NULL) receives the number of keys pinned by this call. */
AG_EXTERN int ag_store_shard_add(const char *list, const char *new_uri,
                                 const struct ag_store_options *opts, size_t *pinned,
                                 struct ag_err *err);

#endif
