/*
 * Caches (src/cache): an in-process LRU + TTL cache bounded in bytes (lru.c), and
 * a Redis client for the cache shared by every instance (redis.c).
 *
 * The LRU. Keys and values are byte strings copied in and out; each value carries
 * a 64-bit `meta` (the services keep the projection position the value was read
 * at). Lookups and stores take one mutex. An entry lives until it is the least
 * recently used one when the byte budget is full (an eviction), its TTL passes
 * (an expiry), or it is deleted.
 *
 * Cache-aside without stale fills. A reader that misses takes the cache's
 * generation (ag_lru_gen) BEFORE it reads the source, and hands it to ag_lru_put;
 * every delete or clear moves the generation, so a value read before a change
 * whose invalidation ran since is refused (AG_ECONFLICT) instead of cached. With
 * invalidation after the source committed, a cached value is never older than
 * any change whose invalidation finished before the lookup.
 *
 * Metrics: agora_cache_hits_total, agora_cache_misses_total,
 * agora_cache_evictions_total{cache} and the gauges agora_cache_bytes,
 * agora_cache_entries{cache} when a registry is given.
 *
 * Redis. `ag_redis` keeps a small pool of synchronous hiredis connections, each
 * used by one thread at a time, with a connect and a command timeout: callers
 * are worker threads (the services' threadpool, the projections), never an event
 * loop. A circuit breaker around it turns an outage into fast misses
 * (AG_EUNAVAILABLE) so callers fall back to the database. Keys whose delete or
 * write could not reach Redis are remembered and deleted first when it answers
 * again (write-through and invalidation never leave an older value behind).
 */
#ifndef AGORA_CACHE_H
#define AGORA_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agora/base.h"

struct ag_obs_registry;

/* ---- the in-process LRU ---- */

struct ag_lru;

struct ag_lru_config {
    const char *name;                /* the `cache` label ("products") */
    size_t max_bytes;                /* keys + values + per-entry overhead; 0: 8 MiB */
    uint64_t ttl_ms;                 /* 0: entries never expire */
    const struct ag_clock *clock;    /* NULL: the system's */
    struct ag_obs_registry *metrics; /* NULL: no metrics */
};

struct ag_lru_stats {
    uint64_t hits, misses, evictions, expired, refused; /* refused: a stale fill */
    uint64_t entries, bytes;
};

AG_EXTERN int ag_lru_new(const struct ag_lru_config *cfg, struct ag_lru **out);
AG_EXTERN void ag_lru_free(struct ag_lru *c);
/* The generation to take before reading the source on a miss. */
AG_EXTERN uint64_t ag_lru_gen(struct ag_lru *c);
/* A copy of the value (ag_malloc'd, NUL-terminated beyond *vlen) and its meta: 0,
 * or AG_ENOTFOUND (a miss: absent or expired), AG_ENOMEM. */
AG_EXTERN int ag_lru_get(struct ag_lru *c, const void *key, size_t klen, char **val, size_t *vlen,
                         uint64_t *meta);
/* Store a copy (replacing the key's value): 0, AG_ECONFLICT when the generation
 * moved since `gen` (nothing stored), AG_ETOOBIG when one entry exceeds the budget,
 * AG_ENOMEM. Evicts least recently used entries to fit. */
struct ag_lru_item {
    const void *key;
    size_t klen;
    const void *val;
    size_t vlen;
    uint64_t meta;
};
AG_EXTERN int ag_lru_put(struct ag_lru *c, const struct ag_lru_item *it, uint64_t gen);
/* Delete the key (if present) and move the generation. */
AG_EXTERN void ag_lru_del(struct ag_lru *c, const void *key, size_t klen);
/* Delete every entry and move the generation. */
AG_EXTERN void ag_lru_clear(struct ag_lru *c);
AG_EXTERN void ag_lru_stats(struct ag_lru *c, struct ag_lru_stats *out);
/* Publish the byte and entry gauges (call from a metrics collector). */
AG_EXTERN void ag_lru_publish(struct ag_lru *c);

/* ---- Redis ---- */

struct ag_redis;

struct ag_redis_config {
    const char *uri;                 /* redis://HOST:PORT[/DB] */
    uint32_t timeout_ms;             /* connect and per-command; 0: 50 ms */
    uint32_t pool;                   /* connections; 0: 8 */
    uint64_t open_ms;                /* breaker open time after an outage; 0: 1000 */
    struct ag_obs_registry *metrics; /* agora_cache_redis_errors_total, breaker state */
};

AG_EXTERN int ag_redis_new(const struct ag_redis_config *cfg, struct ag_redis **out,
                           struct ag_err *err);
AG_EXTERN void ag_redis_free(struct ag_redis *r);
/* GET: 0 with the value (ag_malloc'd, NUL-terminated), AG_ENOTFOUND, or
 * AG_EUNAVAILABLE (down, timed out, breaker open). */
AG_EXTERN int ag_redis_get(struct ag_redis *r, const char *key, char **val, size_t *vlen);
/* SET with an expiry (0: none); `nx`: only when absent (a fill must not overwrite a
 * newer write-through value). 0, or AG_EUNAVAILABLE (the key is remembered and
 * deleted when Redis answers again). */
AG_EXTERN int ag_redis_set(struct ag_redis *r, const char *key, const char *val, size_t vlen,
                           uint64_t ttl_ms, bool nx);
/* DEL: 0, or AG_EUNAVAILABLE (remembered, deleted on recovery). */
AG_EXTERN int ag_redis_del(struct ag_redis *r, const char *key);
/* INCR key: 0, or AG_EUNAVAILABLE (then every agora:c: key is deleted when Redis
 * answers again: a lost epoch bump must not let older values match). */
AG_EXTERN int ag_redis_incr(struct ag_redis *r, const char *key);
/* MGET k1 k2: each value (ag_malloc'd, NUL-terminated) or NULL when absent. 0, or
 * AG_EUNAVAILABLE. */
AG_EXTERN int ag_redis_get2(struct ag_redis *r, const char *k1, const char *k2, char **v1,
                            char **v2, size_t *len2);
/* Delete every agora:c: key before the next call goes through (an invalidation
 * too large to name its keys). */
AG_EXTERN void ag_redis_forget_all(struct ag_redis *r);
/* HINCRBY hash field n: 0, or AG_EUNAVAILABLE (the increment is lost). */
AG_EXTERN int ag_redis_hincr(struct ag_redis *r, const char *hash, const char *field, int64_t n);
/* Take the whole hash atomically (RENAME to a private name, HGETALL, DEL): calls
 * fn(field, value) per member. 0 (an absent hash: no calls), AG_EUNAVAILABLE. */
AG_EXTERN int ag_redis_take_hash(struct ag_redis *r, const char *hash,
                                 void (*fn)(void *ud, const char *field, int64_t value), void *ud);
/* 1 while the breaker lets calls through (closed or probing). */
AG_EXTERN bool ag_redis_up(struct ag_redis *r);
/* The breaker's state (enum ag_cb_state as int), for ag_obs_breaker_state. */
AG_EXTERN int ag_redis_state(struct ag_redis *r);

#endif
