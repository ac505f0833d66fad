/*
 * The in-process LRU + TTL cache bounded in bytes (include/agora/cache.h).
 *
 * A chained hash table (power-of-two buckets, doubled when entries outnumber
 * them) over entries that also sit on one recency list, most recent at the head.
 * An entry is one allocation: header, key, value and a NUL. Its cost against the
 * budget is that allocation plus its share of the bucket array, so the budget
 * bounds the real memory. Every operation holds the one mutex; copies in and out
 * keep values from being freed under a reader.
 *
 * Expiry is lazy: an expired entry found by a lookup is removed then (and counted
 * as expired and missed); eviction from the tail takes expired and live entries
 * alike.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "agora/cache.h"
#include "agora/obs.h"

struct ent {
    struct ent *next; /* bucket chain */
    struct ent *prev_lru, *next_lru;
    uint64_t hash, meta, expires; /* expires: monotonic ns, 0 = never */
    size_t klen, vlen, cost;
    char data[]; /* key, value, NUL */
};

struct ag_lru {
    pthread_mutex_t lock;
    struct ent **buckets;
    size_t nbuckets, entries, bytes, max_bytes;
    struct ent *head, *tail; /* most / least recently used */
    uint64_t ttl_ns;
    const struct ag_clock *clock;
    _Atomic uint64_t gen;
    struct ag_lru_stats st;
    struct ag_obs_series *m_hit, *m_miss, *m_evict, *m_bytes, *m_entries;
};

#define ENT_OVERHEAD (sizeof(struct ent) + 1 + 2 * sizeof(void *))

static struct ag_obs_series *series(struct ag_obs_registry *r, enum ag_obs_type t, const char *name,
                                    const char *help, const char *cache)
{
    static const char *const labels[] = {"cache"};
    struct ag_obs_family *f;
    struct ag_obs_series *s = NULL;
    if (ag_obs_family_define(r, &(struct ag_obs_family_spec){t, name, help, 1, labels, NULL, 0},
                             &f) == 0)
        ag_obs_series_get(f, (const char *const[]){cache}, &s);
    return s;
}

static void lru_metrics(struct ag_lru *c, struct ag_obs_registry *r, const char *name)
{
    if (!r) return;
    c->m_hit = series(r, AG_OBS_COUNTER, "agora_cache_hits_total", "Cache lookups answered.", name);
    c->m_miss = series(r, AG_OBS_COUNTER, "agora_cache_misses_total",
                       "Cache lookups that went to the source.", name);
    c->m_evict = series(r, AG_OBS_COUNTER, "agora_cache_evictions_total",
                        "Entries evicted to stay within the byte budget.", name);
    c->m_bytes = series(r, AG_OBS_GAUGE, "agora_cache_bytes", "Bytes the cache holds.", name);
    c->m_entries = series(r, AG_OBS_GAUGE, "agora_cache_entries", "Entries the cache holds.", name);
}

int ag_lru_new(const struct ag_lru_config *cfg, struct ag_lru **out)
{
    struct ag_lru *c = ag_calloc(1, sizeof *c);
    if (!c) return AG_ENOMEM;
    c->nbuckets = 64;
    c->buckets = ag_calloc(c->nbuckets, sizeof(struct ent *));
    if (!c->buckets) {
        ag_free(c);
        return AG_ENOMEM;
    }
    pthread_mutex_init(&c->lock, NULL);
    c->max_bytes = cfg->max_bytes ? cfg->max_bytes : 8u << 20;
    c->ttl_ns = cfg->ttl_ms * 1000000ull;
    c->clock = cfg->clock ? cfg->clock : ag_clock_system();
    c->bytes = c->nbuckets * sizeof(struct ent *);
    atomic_init(&c->gen, 1);
    lru_metrics(c, cfg->metrics, cfg->name ? cfg->name : "lru");
    *out = c;
    return 0;
}

void ag_lru_free(struct ag_lru *c)
{
    if (!c) return;
    for (struct ent *e = c->head, *n; e; e = n) {
        n = e->next_lru;
        ag_free(e);
    }
    ag_free(c->buckets);
    pthread_mutex_destroy(&c->lock);
    ag_free(c);
}

uint64_t ag_lru_gen(struct ag_lru *c)
{
    return atomic_load(&c->gen);
}

static void lru_unlink(struct ag_lru *c, struct ent *e)
{
    if (e->prev_lru)
        e->prev_lru->next_lru = e->next_lru;
    else
        c->head = e->next_lru;
    if (e->next_lru)
        e->next_lru->prev_lru = e->prev_lru;
    else
        c->tail = e->prev_lru;
    e->prev_lru = e->next_lru = NULL;
}

static void lru_push_head(struct ag_lru *c, struct ent *e)
{
    e->prev_lru = NULL;
    e->next_lru = c->head;
    if (c->head) c->head->prev_lru = e;
    c->head = e;
    if (!c->tail) c->tail = e;
}

/* The slot pointing at the entry for (hash, key), or at the chain's NULL end. */
static struct ent **find(struct ag_lru *c, uint64_t h, const void *key, size_t klen)
{
    struct ent **pp = &c->buckets[h & (c->nbuckets - 1)];
    while (*pp && !((*pp)->hash == h && (*pp)->klen == klen && !memcmp((*pp)->data, key, klen)))
        pp = &(*pp)->next;
    return pp;
}

static void remove_ent(struct ag_lru *c, struct ent *e)
{
    struct ent **pp = find(c, e->hash, e->data, e->klen);
    if (*pp == e) *pp = e->next;
    lru_unlink(c, e);
    c->entries--;
    c->bytes -= e->cost;
    ag_free(e);
}

static bool expired(const struct ag_lru *c, const struct ent *e)
{
    return e->expires && ag_clock_mono(c->clock) >= e->expires;
}

int ag_lru_get(struct ag_lru *c, const void *key, size_t klen, char **val, size_t *vlen,
               uint64_t *meta)
{
    uint64_t h = ag_xxh3(key, klen);
    int rc = AG_ENOTFOUND;
    pthread_mutex_lock(&c->lock);
    struct ent *e = *find(c, h, key, klen);
    if (e && expired(c, e)) {
        remove_ent(c, e);
        c->st.expired++;
        e = NULL;
    }
    if (e) {
        *val = ag_malloc(e->vlen + 1);
        if (*val) {
            memcpy(*val, e->data + e->klen, e->vlen + 1);
            *vlen = e->vlen;
            if (meta) *meta = e->meta;
            lru_unlink(c, e);
            lru_push_head(c, e);
            rc = 0;
        } else {
            rc = AG_ENOMEM;
        }
    }
    if (rc == 0)
        c->st.hits++;
    else
        c->st.misses++;
    pthread_mutex_unlock(&c->lock);
    if (rc == 0 && c->m_hit) ag_obs_counter_inc(c->m_hit);
    if (rc && c->m_miss) ag_obs_counter_inc(c->m_miss);
    return rc;
}

/* Double the bucket array (best effort: a failed allocation keeps chains longer). */
static void grow(struct ag_lru *c)
{
    size_t n = c->nbuckets * 2;
    struct ent **b = ag_calloc(n, sizeof(struct ent *));
    if (!b) return;
    for (size_t i = 0; i < c->nbuckets; i++)
        for (struct ent *e = c->buckets[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    ag_free(c->buckets);
    c->bytes += (n - c->nbuckets) * sizeof(struct ent *);
    c->buckets = b;
    c->nbuckets = n;
}

/* Evict from the tail until `need` more bytes fit; the number evicted. */
static uint64_t make_room(struct ag_lru *c, size_t need)
{
    uint64_t n = 0;
    while (c->tail && c->bytes + need > c->max_bytes) {
        struct ent *e = c->tail;
        if (expired(c, e))
            c->st.expired++;
        else
            c->st.evictions++, n++;
        remove_ent(c, e);
    }
    return n;
}

int ag_lru_put(struct ag_lru *c, const struct ag_lru_item *it, uint64_t gen)
{
    size_t cost = ENT_OVERHEAD + it->klen + it->vlen;
    if (cost > c->max_bytes / 2) return AG_ETOOBIG; /* one entry never takes most of it */
    struct ent *e = ag_malloc(sizeof *e + it->klen + it->vlen + 1);
    if (!e) return AG_ENOMEM;
    memset(e, 0, sizeof *e);
    e->hash = ag_xxh3(it->key, it->klen);
    e->klen = it->klen;
    e->vlen = it->vlen;
    e->meta = it->meta;
    e->cost = cost;
    memcpy(e->data, it->key, it->klen);
    if (it->vlen) memcpy(e->data + it->klen, it->val, it->vlen);
    e->data[it->klen + it->vlen] = '\0';
    pthread_mutex_lock(&c->lock);
    if (atomic_load(&c->gen) != gen) { /* an invalidation ran since the read: stale */
        c->st.refused++;
        pthread_mutex_unlock(&c->lock);
        ag_free(e);
        return AG_ECONFLICT;
    }
    e->expires = c->ttl_ns ? ag_clock_mono(c->clock) + c->ttl_ns : 0;
    struct ent *old = *find(c, e->hash, it->key, it->klen);
    if (old) remove_ent(c, old);
    uint64_t evicted = make_room(c, cost);
    struct ent **slot = &c->buckets[e->hash & (c->nbuckets - 1)];
    e->next = *slot;
    *slot = e;
    lru_push_head(c, e);
    c->entries++;
    c->bytes += cost;
    if (c->entries > c->nbuckets && c->bytes + c->nbuckets * sizeof(void *) <= c->max_bytes)
        grow(c);
    pthread_mutex_unlock(&c->lock);
    if (evicted && c->m_evict) ag_obs_counter_add(c->m_evict, evicted);
    return 0;
}

void ag_lru_del(struct ag_lru *c, const void *key, size_t klen)
{
    uint64_t h = ag_xxh3(key, klen);
    pthread_mutex_lock(&c->lock);
    atomic_fetch_add(&c->gen, 1);
    struct ent *e = *find(c, h, key, klen);
    if (e) remove_ent(c, e);
    pthread_mutex_unlock(&c->lock);
}

void ag_lru_clear(struct ag_lru *c)
{
    pthread_mutex_lock(&c->lock);
    atomic_fetch_add(&c->gen, 1);
    while (c->head) remove_ent(c, c->head);
    pthread_mutex_unlock(&c->lock);
}

void ag_lru_stats(struct ag_lru *c, struct ag_lru_stats *out)
{
    pthread_mutex_lock(&c->lock);
    *out = c->st;
    out->entries = c->entries;
    out->bytes = c->bytes;
    pthread_mutex_unlock(&c->lock);
}

void ag_lru_publish(struct ag_lru *c)
{
    struct ag_lru_stats s;
    ag_lru_stats(c, &s);
    if (c->m_bytes) ag_obs_gauge_set(c->m_bytes, (double)s.bytes);
    if (c->m_entries) ag_obs_gauge_set(c->m_entries, (double)s.entries);
}
